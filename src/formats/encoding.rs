//! Text encodings: input is decoded to UTF-8 before any parsing, output is written as UTF-8 and
//! encoded on the way out. UTF-8 input passes through unchanged (a BOM is dropped), so invalid bytes
//! reach the parsers, which report them with their line; the other encodings replace invalid input
//! with U+FFFD and refuse, on output, characters they cannot represent.
use encoding_rs_io::DecodeReaderBytesBuilder;
use serde::Deserialize;
use std::io::{self, Read, Write};

/// A text encoding named in a format spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "windows-1252")]
    Windows1252,
    /// Byte order from the BOM; little-endian when there is none. Always written with a BOM.
    #[serde(rename = "utf-16")]
    Utf16,
    #[serde(rename = "utf-16le")]
    Utf16Le,
    #[serde(rename = "utf-16be")]
    Utf16Be,
}

impl Encoding {
    /// The name an XML declaration uses.
    pub fn xml_name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "UTF-8",
            Encoding::Windows1252 => "windows-1252",
            Encoding::Utf16 | Encoding::Utf16Le | Encoding::Utf16Be => "UTF-16",
        }
    }
}

/// Decodes `input` to UTF-8. A BOM, when present, is dropped and wins over the declared encoding.
pub fn decode(e: Encoding, input: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    let explicit = match e {
        Encoding::Utf8 => None,
        Encoding::Windows1252 => Some(encoding_rs::WINDOWS_1252),
        Encoding::Utf16 | Encoding::Utf16Le => Some(encoding_rs::UTF_16LE),
        Encoding::Utf16Be => Some(encoding_rs::UTF_16BE),
    };
    Box::new(
        DecodeReaderBytesBuilder::new()
            .encoding(explicit)
            .utf8_passthru(true)
            .strip_bom(true)
            .bom_override(true)
            .build(input),
    )
}

/// Wraps `out` so that the UTF-8 written to it is encoded as `e`, after a BOM when `bom` is set or the
/// encoding is `utf-16`.
pub fn encode<'w>(e: Encoding, bom: bool, out: Box<dyn Write + 'w>) -> Box<dyn Write + 'w> {
    let bom: &'static [u8] = match e {
        Encoding::Utf8 if bom => b"\xEF\xBB\xBF",
        Encoding::Utf16 | Encoding::Utf16Le if bom || e == Encoding::Utf16 => b"\xFF\xFE",
        Encoding::Utf16Be if bom => b"\xFE\xFF",
        _ => b"",
    };
    if e == Encoding::Utf8 && bom.is_empty() {
        return out;
    }
    Box::new(Encoder {
        e,
        bom,
        out,
        pending: Vec::new(),
        encoded: Vec::new(),
    })
}

/// Encodes whole characters as they arrive; a character split across writes waits in `pending`.
struct Encoder<'w> {
    e: Encoding,
    /// Still to be written before the first text.
    bom: &'static [u8],
    out: Box<dyn Write + 'w>,
    pending: Vec<u8>,
    encoded: Vec<u8>,
}

impl Encoder<'_> {
    fn encode_str(&mut self, s: &str) -> io::Result<()> {
        self.encoded.clear();
        match self.e {
            Encoding::Utf8 => self.encoded.extend_from_slice(s.as_bytes()),
            Encoding::Windows1252 => {
                let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(s);
                if unmappable {
                    let c = s.chars().find(|&c| encoding_rs::WINDOWS_1252.encode(c.encode_utf8(&mut [0; 4])).2);
                    let msg = format!("{:?} cannot be written in windows-1252", c.unwrap_or('\u{FFFD}'));
                    return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
                }
                self.encoded.extend_from_slice(&bytes);
            }
            Encoding::Utf16 | Encoding::Utf16Le => self.encoded.extend(s.encode_utf16().flat_map(u16::to_le_bytes)),
            Encoding::Utf16Be => self.encoded.extend(s.encode_utf16().flat_map(u16::to_be_bytes)),
        }
        self.out.write_all(&self.encoded)
    }
}

impl Write for Encoder<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.bom.is_empty() {
            self.out.write_all(self.bom)?;
            self.bom = b"";
        }
        // UTF-8 goes out as it is, even where it is not valid (a refused record's own bytes).
        if self.e == Encoding::Utf8 {
            self.out.write_all(buf)?;
            return Ok(buf.len());
        }
        self.pending.extend_from_slice(buf);
        let pending = std::mem::take(&mut self.pending);
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "text to write is not UTF-8")),
        };
        // Valid by construction: `valid` is where the UTF-8 check stopped.
        let text = std::str::from_utf8(&pending[..valid]).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.encode_str(text)?;
        self.pending = pending;
        self.pending.drain(..valid);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(e: Encoding, bytes: &[u8]) -> String {
        let mut s = String::new();
        decode(e, Box::new(io::Cursor::new(bytes.to_vec()))).read_to_string(&mut s).unwrap();
        s
    }

    fn encoded(e: Encoding, bom: bool, text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = encode(e, bom, Box::new(&mut out));
            // Byte by byte, so characters are split across writes.
            for b in text.as_bytes() {
                w.write_all(std::slice::from_ref(b)).unwrap();
            }
            w.flush().unwrap();
        }
        out
    }

    #[test]
    fn decodes_each_encoding() {
        assert_eq!(decoded(Encoding::Utf8, b"\xEF\xBB\xBFa\xC3\xA4"), "aä");
        assert_eq!(decoded(Encoding::Windows1252, b"a\xE4\x80"), "aä€");
        assert_eq!(decoded(Encoding::Utf16, b"\xFF\xFEa\0\xE4\0"), "aä");
        assert_eq!(decoded(Encoding::Utf16, b"\xFE\xFF\0a\0\xE4"), "aä");
        assert_eq!(decoded(Encoding::Utf16, b"a\0\xE4\0"), "aä");
        assert_eq!(decoded(Encoding::Utf16Be, b"\0a\0\xE4"), "aä");
        assert_eq!(decoded(Encoding::Utf16Le, b"\xFF\xFEa\0"), "a");
    }

    #[test]
    fn encodes_each_encoding() {
        assert_eq!(encoded(Encoding::Utf8, false, "ä"), "ä".as_bytes());
        assert_eq!(encoded(Encoding::Utf8, true, "ä"), b"\xEF\xBB\xBF\xC3\xA4");
        assert_eq!(encoded(Encoding::Windows1252, false, "aä€"), b"a\xE4\x80");
        assert_eq!(encoded(Encoding::Utf16, false, "aä"), b"\xFF\xFEa\0\xE4\0");
        assert_eq!(encoded(Encoding::Utf16Le, false, "a"), b"a\0");
        assert_eq!(encoded(Encoding::Utf16Be, true, "a😀"), b"\xFE\xFF\0a\xD8\x3D\xDE\x00");
    }

    #[test]
    fn refuses_what_windows_1252_cannot_write() {
        let mut out = Vec::new();
        let mut w = encode(Encoding::Windows1252, false, Box::new(&mut out));
        let err = w.write_all("a😀".as_bytes()).unwrap_err();
        assert!(err.to_string().contains("windows-1252"), "{err}");
    }
}
