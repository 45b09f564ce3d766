//! The bytes a reader has read but not yet passed: readers keep them so that a record can be written
//! to the rejects as it came (its raw bytes), and so that, where reading stops early, the unread rest
//! of the input (from the start of the record that broke) can be handed over whole.

use std::io::{self, Read, Write};

/// A reader that keeps what it reads from `from` on, until told it is no longer needed.
pub struct Keep {
    inner: Box<dyn Read + Send>,
    kept: Vec<u8>,
    /// The input offset of `kept[0]`.
    from: u64,
}

/// How much of an input was not read: bytes and lines (a last line without a line break counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unread {
    pub bytes: u64,
    pub lines: u64,
}

impl Keep {
    pub fn new(inner: Box<dyn Read + Send>) -> Self {
        Keep {
            inner,
            kept: Vec::new(),
            from: 0,
        }
    }

    /// Drops what comes before input offset `to`: no record before it is asked for again.
    pub fn release(&mut self, to: u64) {
        let n = to.saturating_sub(self.from).min(self.kept.len() as u64) as usize;
        // Dropping moves the rest to the front, so it is done once enough is dropped to pay for it.
        if n > 0 && (n >= 1 << 16 || n * 2 >= self.kept.len()) {
            self.kept.drain(..n);
            self.from += n as u64;
        }
    }

    /// The bytes from input offset `start` to `end`, when they are still kept.
    pub fn between(&self, start: u64, end: u64) -> Option<&[u8]> {
        let s = usize::try_from(start.checked_sub(self.from)?).ok()?;
        let e = usize::try_from(end.checked_sub(self.from)?).ok()?;
        self.kept.get(s..e)
    }

    /// Copies everything from input offset `start` to the end of the input into `out` (what a reader
    /// read ahead included), and says how much it was.
    pub fn rest(&mut self, start: u64, out: &mut dyn Write) -> io::Result<Unread> {
        let s = usize::try_from(start.saturating_sub(self.from))
            .unwrap_or(usize::MAX)
            .min(self.kept.len());
        let head = std::mem::take(&mut self.kept);
        copy_rest(&head[s..], &mut self.inner, out)
    }
}

/// Copies `head`, then everything `rest` still holds, into `out`, counting bytes and lines.
pub fn copy_rest(head: &[u8], rest: &mut dyn Read, out: &mut dyn Write) -> io::Result<Unread> {
    let mut unread = Unread::default();
    let mut last = b'\n';
    let mut take = |bytes: &[u8], out: &mut dyn Write| -> io::Result<()> {
        if let Some(&b) = bytes.last() {
            last = b;
        }
        unread.bytes += bytes.len() as u64;
        unread.lines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        out.write_all(bytes)
    };
    take(head, out)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        take(&buf[..n], out)?;
    }
    if last != b'\n' {
        unread.lines += 1;
    }
    Ok(unread)
}

impl Read for Keep {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_what_is_not_released_and_hands_over_the_rest() {
        let mut k = Keep::new(Box::new(io::Cursor::new(b"one\ntwo\nthree".to_vec())));
        let mut buf = [0u8; 6];
        k.read_exact(&mut buf).unwrap();
        assert_eq!(k.between(4, 6), Some(&b"tw"[..]));
        k.release(4);
        assert_eq!(k.between(0, 3), None);
        assert_eq!(k.between(4, 6), Some(&b"tw"[..]));
        let mut rest = Vec::new();
        assert_eq!(k.rest(4, &mut rest).unwrap(), Unread { bytes: 9, lines: 2 });
        assert_eq!(rest, b"two\nthree");
    }
}
