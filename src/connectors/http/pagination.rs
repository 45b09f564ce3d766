//! Finding the next page in an answer: a `Link: <…>; rel="next"` header, or a value at a dotted path
//! of a JSON body (a token, a URL, the last record's id), read as a stream.

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::io::{Read, Seek};

/// The `rel="next"` target of one `Link` header value (RFC 8288), if it has one.
pub(super) fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if !rest.starts_with('<') {
            return None;
        }
        let end = rest.find('>')?;
        let target = &rest[1..end];
        rest = &rest[end + 1..];
        let mut is_next = false;
        // Parameters: `; name=value` or `; name="quoted value"`, up to the next `,` between links.
        while let Some(after) = rest.trim_start().strip_prefix(';') {
            let after = after.trim_start();
            let name_end = after.find(['=', ';', ',']).unwrap_or(after.len());
            let name = after[..name_end].trim();
            rest = &after[name_end..];
            let mut value = String::new();
            if let Some(v) = rest.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(quoted) = v.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut closed = quoted.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, escaped)) = chars.next() {
                                    value.push(escaped);
                                }
                            }
                            '"' => {
                                closed = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    rest = &quoted[closed..];
                } else {
                    let value_end = v.find([';', ',']).unwrap_or(v.len());
                    value = v[..value_end].trim().to_owned();
                    rest = &v[value_end..];
                }
            }
            if name.eq_ignore_ascii_case("rel") && value.split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next")) {
                is_next = true;
            }
        }
        if is_next {
            return Some(target.trim().to_owned());
        }
    }
}

/// The text at a dotted `path` (`meta.next`, `links.0.href`, `items.-1.id` for the last item) of a JSON document, read as a stream
/// (the rest of the document is skipped, not kept). `None` when the path is absent or null; numbers
/// come back as their text. Leaves `body` at its start.
pub(super) fn json_at_path<R: Read + Seek>(body: &mut R, path: &str) -> Result<Option<String>, String> {
    let segments: Vec<&str> = path.split('.').collect();
    let found = {
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(&mut *body));
        AtPath(&segments)
            .deserialize(&mut de)
            .map_err(|e| format!("the page is not JSON ({e})"))
    };
    body.rewind().map_err(|e| format!("cannot read back the page: {e}"))?;
    match found? {
        Found::Missing | Found::Null => Ok(None),
        Found::Text(t) => Ok(Some(t)),
        Found::Other(what) => Err(format!("{path:?} holds {what}, not a string")),
    }
}

pub(super) enum Found {
    Missing,
    Null,
    Text(String),
    Other(&'static str),
}

/// Walks `.0` of a dotted path into a JSON value, skipping everything else.
pub(super) struct AtPath<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for AtPath<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AtPath<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Found::Other("an object"));
        };
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if found.is_none() && key == *first {
                found = Some(map.next_value_seed(AtPath(rest))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.unwrap_or(Found::Missing))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Found::Other("an array"));
        };
        // `-1`: the last element (each is walked; the last one's value is kept).
        if *first == "-1" {
            let mut found = None;
            while let Some(f) = seq.next_element_seed(AtPath(rest))? {
                found = Some(f);
            }
            return Ok(found.unwrap_or(Found::Missing));
        }
        let index = first.parse::<usize>().ok();
        let mut found = None;
        let mut i = 0usize;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(AtPath(rest))? {
                    Some(f) => found = Some(f),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found.unwrap_or(Found::Missing))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_owned())
        } else {
            Found::Missing
        })
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Found, E> {
        Ok(if self.0.is_empty() { Found::Text(v) } else { Found::Missing })
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_string())
        } else {
            Found::Missing
        })
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_string())
        } else {
            Found::Missing
        })
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_string())
        } else {
            Found::Missing
        })
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Other("a boolean")
        } else {
            Found::Missing
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Found, E> {
        Ok(if self.0.is_empty() { Found::Null } else { Found::Missing })
    }
}
