//! Bytes <-> flat records. A reader turns a file (CSV/TSV, JSON, NDJSON, XML, in its text encoding)
//! into records whose wanted fields are picked out by name or path; a writer does the reverse.
//! Nothing here knows about consents: that is the `mapping` layer's job.

mod csv;
mod encoding;
mod json;
mod keep;
mod xml;

use serde::Deserialize;
use std::fmt;
use std::io::{Read, Write};

pub use encoding::{encode, Encoding};
pub use keep::Unread;

/// Which syntax a file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatKind {
    /// Delimited text: CSV, or TSV with `delimiter = "\t"`.
    Csv,
    Tsv,
    /// One JSON document; records in an array at `records` (or the top-level array).
    Json,
    /// One JSON value per line.
    Ndjson,
    /// XML; one record per element at `record`.
    Xml,
}

impl FormatKind {
    /// The media type of a body in this format.
    pub fn media_type(self) -> &'static str {
        match self {
            FormatKind::Csv => "text/csv",
            FormatKind::Tsv => "text/tab-separated-values",
            FormatKind::Json => "application/json",
            FormatKind::Ndjson => "application/x-ndjson",
            FormatKind::Xml => "application/xml",
        }
    }

    /// The usual file name extension.
    pub fn extension(self) -> &'static str {
        match self {
            FormatKind::Csv => "csv",
            FormatKind::Tsv => "tsv",
            FormatKind::Json => "json",
            FormatKind::Ndjson => "ndjson",
            FormatKind::Xml => "xml",
        }
    }
}

/// How a file is laid out: the `[format]` table of a mapping file. [`FormatSpec::problems`] checks it;
/// [`open_reader`] and [`open_writer`] refuse a spec with problems.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    /// `csv`, `tsv`, `json`, `ndjson` or `xml`.
    #[serde(rename = "type")]
    pub kind: FormatKind,
    /// Text encoding: `utf-8` (a BOM is skipped), `windows-1252`, `utf-16` (BOM decides byte order),
    /// `utf-16le`, `utf-16be`. Default `utf-8`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Write a byte-order mark on export. Default false (true is usual for UTF-16).
    #[serde(default)]
    pub bom: bool,
    /// CSV: the field delimiter, one character. Default `,` (`\t` for tsv).
    pub delimiter: Option<char>,
    /// CSV: the quote character. Default `"`.
    pub quote: Option<char>,
    /// CSV: whether the first line names the columns. Default true; when false, columns are numbered from 1.
    pub header: Option<bool>,
    /// CSV: rows may have fewer or more fields than the header (or, without one, the first row);
    /// missing fields read as empty. Default false: such a row is refused, as a delimiter or quote out
    /// of place makes them.
    pub flexible: Option<bool>,
    /// CSV: line ending written on export, `lf` or `crlf`. Reading accepts both. Default `lf`.
    pub line_ending: Option<LineEnding>,
    /// JSON/NDJSON: dotted path to the array of records, such as `items` or `data.consents`. Arrays met
    /// on the way are walked, so `customers.consents` reads every consent of every customer (fields of
    /// the customer are then `../name`). Empty or absent: the top-level array (JSON) or each line (NDJSON).
    pub records: Option<String>,
    /// XML: slash-separated element path of one record from the root, such as `consents/consent` or
    /// `subjects/subject/consent`. Namespace prefixes are ignored when matching.
    pub record: Option<String>,
}

impl FormatSpec {
    /// Every problem of the spec, each naming its key (`format.record: required for xml`).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let csv = matches!(self.kind, FormatKind::Csv | FormatKind::Tsv);
        let json = matches!(self.kind, FormatKind::Json | FormatKind::Ndjson);
        let xml = self.kind == FormatKind::Xml;
        for (key, c) in [("delimiter", self.delimiter), ("quote", self.quote)] {
            match c {
                Some(_) if !csv => p.push(format!("format.{key}: only for csv and tsv")),
                Some(c) if !c.is_ascii() || matches!(c, '\n' | '\r') => p.push(format!(
                    "format.{key}: must be one ASCII character other than a line break, not {c:?}"
                )),
                _ => {}
            }
        }
        let delimiter = self.delimiter.unwrap_or(if self.kind == FormatKind::Tsv { '\t' } else { ',' });
        if csv && delimiter == self.quote.unwrap_or('"') {
            p.push("format.quote: must differ from format.delimiter".to_string());
        }
        if !csv && self.header.is_some() {
            p.push("format.header: only for csv and tsv".to_string());
        }
        if !csv && self.flexible.is_some() {
            p.push("format.flexible: only for csv and tsv".to_string());
        }
        if !csv && self.line_ending.is_some() {
            p.push("format.line_ending: only for csv and tsv".to_string());
        }
        match &self.records {
            Some(_) if !json => p.push("format.records: only for json and ndjson (xml uses format.record)".to_string()),
            Some(r) if !r.is_empty() && r.split('.').any(str::is_empty) => {
                p.push(format!("format.records: {r:?} has an empty step; write keys as a.b.c"))
            }
            _ => {}
        }
        match &self.record {
            None if xml => p.push("format.record: required for xml, such as \"consents/consent\"".to_string()),
            Some(_) if !xml => p.push("format.record: only for xml (json uses format.records)".to_string()),
            Some(r) if xml && r.split('/').any(|s| s.is_empty() || s.starts_with('@') || s == "." || s == "..") => p.push(format!(
                "format.record: {r:?} must be element names separated by /, such as \"consents/consent\""
            )),
            _ => {}
        }
        if self.bom && self.encoding == Encoding::Windows1252 {
            p.push("format.bom: windows-1252 has no byte-order mark".to_string());
        }
        p
    }

    /// The spec's problems as one error, or nothing when it has none.
    fn check(&self, file: &str) -> Result<(), FormatError> {
        match self.problems() {
            p if p.is_empty() => Ok(()),
            p => Err(Location::in_file(file, None).error(format!("bad format spec: {}", p.join("; ")))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineEnding {
    Lf,
    Crlf,
}

/// Where a field's value is in a record.
/// - CSV: a column name (header) or a 1-based position.
/// - JSON: a dotted path inside the record (`contact.phone`).
/// - XML: a slash path inside the record element: `phone`, `contact/phone`, `@id`, `contact/@id`, or `.`
///   for the record element's own text.
///
/// A leading `../` reads from the parent of a nested record (JSON and XML).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FieldRef {
    Name(String),
    Position(usize),
}

impl FieldRef {
    /// True when the path starts with `../`.
    pub fn is_parent(&self) -> bool {
        matches!(self, FieldRef::Name(n) if n.starts_with("../"))
    }

    /// The path with a leading `../` removed.
    pub fn without_parent(&self) -> FieldRef {
        match self {
            FieldRef::Name(n) => FieldRef::Name(n.strip_prefix("../").unwrap_or(n).to_string()),
            p => p.clone(),
        }
    }
}

impl fmt::Display for FieldRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldRef::Name(n) => f.write_str(n),
            FieldRef::Position(p) => write!(f, "column {p}"),
        }
    }
}

/// Where a record was read: for messages that say where the problem is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    /// The file name as given (or `-`/`<request>`).
    pub file: String,
    /// 1-based line where the record starts, when the format has lines.
    pub line: Option<u64>,
    /// 1-based record number in the file; 0 when the place is not a record (a header), and then not shown.
    pub record: u64,
    /// JSON path (`data.consents[18]`) or XML path (`/consents/consent[18]`), when known; array
    /// elements are counted from 1, as records, lines, fields and columns are in every message.
    pub path: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        match (self.record, &self.path) {
            (0, None) => Ok(()),
            (0, Some(p)) => write!(f, " ({p})"),
            (r, None) => write!(f, " (record {r})"),
            (r, Some(p)) => write!(f, " (record {r}, {p})"),
        }
    }
}

impl Location {
    /// A place in `file` that is not a record (a header, the spec): record 0, not shown.
    pub fn in_file(file: &str, line: Option<u64>) -> Location {
        Location {
            file: file.to_string(),
            line,
            ..Location::default()
        }
    }

    /// A problem at this place that reading cannot go past.
    pub fn error(&self, message: impl Into<String>) -> FormatError {
        FormatError {
            location: self.clone(),
            message: message.into(),
            fatal: true,
        }
    }

    /// A record at this place that cannot be read; reading goes on with the next one.
    pub fn refusal(&self, message: impl Into<String>) -> FormatError {
        FormatError {
            fatal: false,
            ..self.error(message)
        }
    }
}

/// One record as read.
#[derive(Debug, Clone)]
pub struct Record {
    pub location: Location,
    /// One value per wanted field, in the order they were asked for; `None` when absent or empty (an
    /// empty CSV cell, an empty XML element, `""` or null in JSON). JSON scalars come as their text
    /// (`true`, `12`, `1.5`); a JSON object or array comes as its JSON text.
    pub values: Vec<Option<String>>,
    /// Bit `i` set: value `i` was a JSON number that is not a whole number written as one (a
    /// fraction, an exponent, a sign, or too large to be exact), so its text is not what was written.
    pub inexact: u64,
}

impl Record {
    /// Whether value `i` came from a JSON number other than a plain whole number.
    pub fn inexact(&self, i: usize) -> bool {
        i < 64 && (self.inexact >> i) & 1 == 1
    }
}

/// A problem with the file itself (syntax, encoding, I/O), or with the spec.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct FormatError {
    pub location: Location,
    pub message: String,
    /// Reading cannot go on past it: the rest of the input is not read ([`RecordReader::rest`]).
    /// When false, only the record at `location` is refused and reading goes on.
    pub fatal: bool,
}

/// A record to write. Each value names its column by its index in the `columns` a writer was opened
/// with, so a writer works out once where a column goes (CSV position, JSON or XML path), not per
/// record. Flat layouts have no parent values and one child; a nested layout (columns read with `../`)
/// writes one parent holding its children.
///
/// An export fills one `OutRecord` again for each record ([`OutRecord::clear`], then
/// [`OutRecord::push`] and [`OutRecord::start_child`]); its buffers are kept, so this allocates nothing
/// once they have grown to a record's size.
#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    /// The text of every value, back to back.
    text: String,
    parent: Vec<OutField>,
    /// The values of every child, back to back; child `i` ends at `ends[i]`.
    fields: Vec<OutField>,
    ends: Vec<usize>,
}

/// One value of an [`OutRecord`]: its column, and the value (text as a range of the record's text).
#[derive(Debug, Clone, Copy)]
struct OutField {
    column: usize,
    value: Stored,
}

#[derive(Debug, Clone, Copy)]
enum Stored {
    Text(usize, usize),
    Bool(bool),
    Int(i64),
}

/// Which part of a record a value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The parent of a nested record (columns read with `../`).
    Parent,
    /// The child being filled (see [`OutRecord::start_child`]).
    Child,
}

impl OutRecord {
    /// Empties the record, keeping its buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.parent.clear();
        self.fields.clear();
        self.ends.clear();
    }

    /// Starts the next child; values pushed to [`Part::Child`] after it belong to it.
    pub fn start_child(&mut self) {
        self.ends.push(self.fields.len());
    }

    /// Adds a value for `column` (pushing to a child starts one if none is).
    pub fn push(&mut self, part: Part, column: usize, value: OutValue<'_>) {
        let value = match value {
            OutValue::Text(t) => {
                let start = self.text.len();
                self.text.push_str(t);
                Stored::Text(start, self.text.len())
            }
            OutValue::Bool(b) => Stored::Bool(b),
            OutValue::Int(i) => Stored::Int(i),
        };
        self.add(part, OutField { column, value });
    }

    /// Adds a text value for `column` that `write` appends to the buffer it is given, so it needs no
    /// string of its own.
    pub fn push_text_with(&mut self, part: Part, column: usize, write: impl FnOnce(&mut String)) {
        let start = self.text.len();
        write(&mut self.text);
        let value = Stored::Text(start, self.text.len());
        self.add(part, OutField { column, value });
    }

    fn add(&mut self, part: Part, field: OutField) {
        match part {
            Part::Parent => self.parent.push(field),
            Part::Child => {
                self.fields.push(field);
                match self.ends.last_mut() {
                    Some(end) => *end = self.fields.len(),
                    None => self.ends.push(self.fields.len()),
                }
            }
        }
    }

    /// The parent's values (none in a flat layout).
    pub fn parent(&self) -> OutValues<'_> {
        OutValues {
            text: &self.text,
            fields: &self.parent,
        }
    }

    /// The children's values, child by child.
    pub fn children(&self) -> impl ExactSizeIterator<Item = OutValues<'_>> + '_ {
        self.ends.iter().enumerate().map(|(i, &end)| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            OutValues {
                text: &self.text,
                fields: &self.fields[start..end],
            }
        })
    }
}

/// The values of a parent or of one child: (column, value) pairs in the order they were pushed.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutValues<'r> {
    text: &'r str,
    fields: &'r [OutField],
}

impl<'r> OutValues<'r> {
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The `i`-th value.
    pub fn get(&self, i: usize) -> (usize, OutValue<'r>) {
        self.value(&self.fields[i])
    }

    pub fn iter(self) -> impl ExactSizeIterator<Item = (usize, OutValue<'r>)> {
        self.fields.iter().map(move |f| self.value(f))
    }

    fn value(&self, f: &OutField) -> (usize, OutValue<'r>) {
        let value = match f.value {
            Stored::Text(start, end) => OutValue::Text(&self.text[start..end]),
            Stored::Bool(b) => OutValue::Bool(b),
            Stored::Int(i) => OutValue::Int(i),
        };
        (f.column, value)
    }

    /// The columns, in order: what decides how a writer lays the values out.
    fn columns(self) -> impl ExactSizeIterator<Item = usize> + 'r {
        self.fields.iter().map(|f| f.column)
    }
}

/// How a writer lays out the values of a parent or a child, worked out per combination of columns:
/// the records of one export nearly always carry the same columns in the same order, so each
/// combination is worked out once.
struct Layouts<T> {
    made: Vec<(Vec<usize>, T)>,
}

impl<T> Layouts<T> {
    /// Combinations kept; past this many (a mapping with many optional columns) they are made afresh.
    const KEEP: usize = 64;

    fn new() -> Self {
        Layouts { made: Vec::new() }
    }

    /// The layout of `values`, made by `make` if their combination of columns is new.
    fn get(&mut self, values: OutValues<'_>, make: impl FnOnce() -> Result<T, FormatError>) -> Result<&T, FormatError> {
        let found = self
            .made
            .iter()
            .position(|(columns, _)| columns.iter().copied().eq(values.columns()));
        let i = match found {
            Some(i) => i,
            None => {
                let made = make()?;
                if self.made.len() >= Self::KEEP {
                    self.made.clear();
                }
                self.made.push((values.columns().collect(), made));
                self.made.len() - 1
            }
        };
        Ok(&self.made[i].1)
    }
}

/// A value to write: text, or a JSON boolean or number where the format has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutValue<'a> {
    Text(&'a str),
    Bool(bool),
    Int(i64),
}

impl OutValue<'_> {
    /// Appends the value as text (`true`, `12`).
    pub fn push_to(&self, out: &mut String) {
        match self {
            OutValue::Text(s) => out.push_str(s),
            OutValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            OutValue::Int(i) => {
                use std::fmt::Write as _;
                let _ = write!(out, "{i}");
            }
        }
    }

    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            OutValue::Text(s) => (*s).into(),
            OutValue::Bool(b) => (if *b { "true" } else { "false" }).into(),
            OutValue::Int(i) => i.to_string().into(),
        }
    }
}

/// A value as records carry it: empty text is absent.
fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// An I/O error while writing; writers have no input location, so `-` names the output.
fn write_error(e: impl fmt::Display) -> FormatError {
    Location::in_file("-", None).error(format!("cannot write: {e}"))
}

/// A record named a column the writer was not given: a bug in the caller, not in the data.
fn no_column(column: usize, columns: usize) -> FormatError {
    write_error(format!("a value for column {column}, but the writer has {columns} columns"))
}

/// Reads records one at a time; memory does not grow with the file.
pub trait RecordReader: Send {
    /// The next record, `None` at the end. An `Err` that is not [`FormatError::fatal`] refuses one
    /// record and reading goes on; after a fatal one the reader is done, and [`RecordReader::rest`]
    /// hands over what was not read.
    fn next_record(&mut self) -> Option<Result<Record, FormatError>>;
    /// CSV: the header row as read (for writing rejects back in the same shape).
    fn header(&self) -> Option<&[String]> {
        None
    }
    /// The record last read or refused as it was in the input, when the format keeps it (CSV rows,
    /// NDJSON lines, JSON array elements): what the rejects get, so nothing of it is lost.
    fn raw(&self) -> Option<&[u8]> {
        None
    }
    /// After a fatal error: copies the input from the start of the record that broke to its end into
    /// `out`, and says how much it was.
    fn rest(&mut self, out: &mut dyn Write) -> std::io::Result<Unread>;
}

/// Writes records; `finish` writes what closes the document (`]`, end tags) and flushes.
pub trait RecordWriter {
    fn write(&mut self, record: &OutRecord) -> Result<(), FormatError>;
    /// Writes a record's bytes as they were read (rejects): CSV rows, NDJSON lines, JSON elements.
    /// A line gets a line break if it has none.
    fn write_raw(&mut self, raw: &[u8]) -> Result<(), FormatError>;
    fn finish(self: Box<Self>) -> Result<(), FormatError>;
}

/// Opens a reader for `spec` that picks `wanted` out of each record. `file` names the input in messages.
/// A CSV header that lacks a wanted column is an error here, unless the column is in `optional`
/// (then its values are all `None`), before any record is read.
pub fn open_reader(
    spec: &FormatSpec,
    wanted: &[FieldRef],
    optional: &[FieldRef],
    input: Box<dyn Read + Send>,
    file: &str,
) -> Result<Box<dyn RecordReader>, FormatError> {
    spec.check(file)?;
    let input = encoding::decode(spec.encoding, input);
    match spec.kind {
        FormatKind::Csv | FormatKind::Tsv => Ok(Box::new(csv::CsvReader::new(spec, wanted, optional, input, file)?)),
        FormatKind::Json => Ok(Box::new(json::JsonReader::new(spec, wanted, input, file)?)),
        FormatKind::Ndjson => Ok(Box::new(json::NdjsonReader::new(spec, wanted, input, file)?)),
        FormatKind::Xml => Ok(Box::new(xml::XmlReader::new(spec, wanted, input, file)?)),
    }
}

/// Opens a writer for `spec`. `columns` are the fields a record may carry, as the mapping reads them
/// (parent fields with their `../`); a record's values name them by index. They are also the CSV header
/// (without the `../`); `header_row` replaces it when writing rejects of a CSV file with its own
/// header. Errors name the output `-`; the caller knows which file it is writing.
pub fn open_writer<'w>(
    spec: &FormatSpec,
    columns: &[FieldRef],
    header_row: Option<&[String]>,
    out: Box<dyn Write + 'w>,
) -> Result<Box<dyn RecordWriter + 'w>, FormatError> {
    spec.check("-")?;
    let out = encoding::encode(spec.encoding, spec.bom, out);
    match spec.kind {
        FormatKind::Csv | FormatKind::Tsv => Ok(Box::new(csv::CsvWriter::new(spec, columns, header_row, out)?)),
        FormatKind::Json => Ok(Box::new(json::JsonWriter::new(spec, columns, out)?)),
        FormatKind::Ndjson => Ok(Box::new(json::NdjsonWriter::new(spec, columns, out)?)),
        FormatKind::Xml => Ok(Box::new(xml::XmlWriter::new(spec, columns, out)?)),
    }
}

#[cfg(test)]
mod tests;
