//! Text encodings: decoding input to UTF-8 and encoding output.
use serde::Deserialize;
use std::io::{Read, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Encoding {
    #[default]
    #[serde(rename = "utf-8")]
    Utf8,
}

pub fn decode(_e: Encoding, input: Box<dyn Read + Send>) -> Box<dyn Read + Send> {
    input
}

pub fn encode<'w>(_e: Encoding, _bom: bool, out: Box<dyn Write + 'w>) -> Box<dyn Write + 'w> {
    out
}
