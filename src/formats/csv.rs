//! CSV/TSV records, read and written with the `csv` crate. Columns are found by header name (trimmed;
//! exact match first, then ignoring case) or by 1-based position; every row keeps its raw fields so a
//! rejected row can be written back as it came.
use super::keep::{Keep, Unread};
use super::*;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

fn delimiter(spec: &FormatSpec) -> u8 {
    let default = if spec.kind == FormatKind::Tsv { b'\t' } else { b',' };
    spec.delimiter.and_then(|c| u8::try_from(c).ok()).unwrap_or(default)
}

fn quote(spec: &FormatSpec) -> u8 {
    spec.quote.and_then(|c| u8::try_from(c).ok()).unwrap_or(b'"')
}

/// Counts what the CSV parser reads: quotes, to tell a quote left open at the end of the file (the
/// parser silently closes it there) from a field that merely spans lines; and line breaks, as the
/// parser does not count CRLF lines. It keeps the bytes of the record being read, for the rejects.
struct Counted {
    inner: Keep,
    quote: u8,
    quotes: u64,
    bytes: u64,
    /// Offsets of the `\n`s read but not yet passed by a record.
    newlines: VecDeque<u64>,
    /// How many `\n`s records have passed.
    lines_passed: u64,
}

impl Counted {
    /// The 1-based line of byte `offset`, which must not be before the last offset asked about. A
    /// `\n` at `offset` itself counts as passed: after a CRLF the parser starts the next record there.
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.newlines.front().is_some_and(|&n| n <= offset) {
            self.newlines.pop_front();
            self.lines_passed += 1;
        }
        self.lines_passed + 1
    }
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, &b) in buf[..n].iter().enumerate() {
            if b == self.quote {
                self.quotes += 1;
            } else if b == b'\n' {
                self.newlines.push_back(self.bytes + i as u64);
            }
        }
        self.bytes += n as u64;
        Ok(n)
    }
}

pub struct CsvReader {
    rows: ::csv::Reader<Counted>,
    row: ::csv::ByteRecord,
    header: Option<Vec<String>>,
    /// 0-based column of each wanted field.
    columns: Vec<usize>,
    /// How many fields a row has (the header's, else the first row's); `None` with `format.flexible`.
    width: Option<usize>,
    file: String,
    record: u64,
    /// Where the record last read starts and ends in the input.
    span: (u64, u64),
    /// Reading stopped (the end, or a problem it cannot read past).
    done: bool,
}

impl CsvReader {
    pub fn new(
        spec: &FormatSpec,
        wanted: &[FieldRef],
        optional: &[FieldRef],
        input: Box<dyn Read + Send>,
        file: &str,
    ) -> Result<Self, FormatError> {
        let counted = Counted {
            inner: Keep::new(input),
            quote: quote(spec),
            quotes: 0,
            bytes: 0,
            newlines: VecDeque::new(),
            lines_passed: 0,
        };
        let rows = ::csv::ReaderBuilder::new()
            .delimiter(delimiter(spec))
            .quote(quote(spec))
            .has_headers(false)
            .flexible(true)
            .buffer_capacity(64 << 10)
            .from_reader(counted);
        let mut reader = CsvReader {
            rows,
            row: ::csv::ByteRecord::new(),
            header: None,
            columns: Vec::new(),
            width: None,
            file: file.to_string(),
            record: 0,
            span: (0, 0),
            done: false,
        };
        let flexible = spec.flexible == Some(true);
        if spec.header != Some(false) {
            match reader.rows.read_byte_record(&mut reader.row) {
                Ok(true) => {
                    let names: Result<Vec<String>, _> = reader
                        .row
                        .iter()
                        .map(|h| std::str::from_utf8(h).map(|h| h.trim().to_string()))
                        .collect();
                    let names = names.map_err(|e| {
                        Location::in_file(file, Some(1)).error(format!("the header is not valid UTF-8 (is format.encoding right?): {e}"))
                    })?;
                    reader.width = (!flexible).then_some(names.len());
                    reader.header = Some(names);
                    reader.span.1 = reader.rows.position().byte();
                }
                // An empty file has no records, whatever columns are wanted.
                Ok(false) => reader.done = true,
                Err(e) => return Err(reader.error(e)),
            }
        }
        if !reader.done {
            reader.columns = reader.find_columns(wanted, optional)?;
        }
        if flexible {
            reader.width = Some(usize::MAX);
        }
        Ok(reader)
    }

    fn find_columns(&self, wanted: &[FieldRef], optional: &[FieldRef]) -> Result<Vec<usize>, FormatError> {
        let here = Location::in_file(&self.file, Some(1));
        let mut missing = Vec::new();
        let mut columns = Vec::with_capacity(wanted.len());
        for w in wanted {
            match (w, &self.header) {
                (FieldRef::Position(0), _) => return Err(here.error("column positions start at 1, not 0")),
                (FieldRef::Position(p), _) => columns.push(p - 1),
                (FieldRef::Name(n), None) => {
                    return Err(here.error(format!(
                        "column {n:?}: the file has no header (format.header = false); give columns by position"
                    )))
                }
                (FieldRef::Name(n), Some(header)) => {
                    let n = n.trim();
                    let found = header.iter().position(|h| h == n).or_else(|| {
                        let lower = n.to_lowercase();
                        header.iter().position(|h| h.to_lowercase() == lower)
                    });
                    match found {
                        Some(i) => columns.push(i),
                        // An optional column that is absent reads as empty.
                        None if optional.contains(w) => columns.push(usize::MAX),
                        None => missing.push(format!("{n:?}")),
                    }
                }
            }
        }
        if let (false, Some(header)) = (missing.is_empty(), &self.header) {
            let have: Vec<String> = header.iter().map(|h| format!("{h:?}")).collect();
            return Err(here.error(format!(
                "no column {} in the header; the columns are {}",
                missing.join(", "),
                have.join(", ")
            )));
        }
        Ok(columns)
    }

    fn location(&self, line: Option<u64>) -> Location {
        Location {
            file: self.file.clone(),
            line,
            record: self.record,
            path: None,
        }
    }

    /// A problem the CSV parser met: it cannot go past it.
    fn error(&mut self, e: ::csv::Error) -> FormatError {
        let line = e.position().map(|p| self.rows.get_mut().line_at(p.byte()));
        let message = match e.kind() {
            ::csv::ErrorKind::Io(e) => format!("cannot read: {e}"),
            _ => e.to_string(),
        };
        self.location(line).error(message)
    }

    /// True when the row just read ran to the end of the file inside a quote.
    fn ends_in_open_quote(&self) -> bool {
        let counted = self.rows.get_ref();
        counted.quotes % 2 == 1
            && self.rows.position().byte() == counted.bytes
            && self
                .row
                .iter()
                .next_back()
                .is_some_and(|f| f.contains(&b'\n') || f.contains(&b'\r'))
    }

    /// Why the row just read cannot be taken for its number of fields, if it cannot.
    fn width_refusal(&self) -> Option<String> {
        match self.width {
            Some(w) if w != usize::MAX && self.row.len() != w => Some(format!(
                "the row has {} fields where the {} has {w} (a delimiter or quote out of place?); format.flexible = true reads such rows, missing fields as empty",
                self.row.len(),
                if self.header.is_some() { "header" } else { "first row" }
            )),
            _ => None,
        }
    }
}

impl RecordReader for CsvReader {
    fn next_record(&mut self) -> Option<Result<Record, FormatError>> {
        if self.done {
            return None;
        }
        // The record before the one about to be read is not asked for again.
        let start = self.span.1;
        self.rows.get_mut().inner.release(start);
        match self.rows.read_byte_record(&mut self.row) {
            Ok(false) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                self.record += 1;
                self.span = (start, start);
                Some(Err(self.error(e)))
            }
            Ok(true) => {
                self.record += 1;
                let first = self.row.position().map_or(start, |p| p.byte());
                self.span = (first, self.rows.position().byte());
                let line = self.rows.get_mut().line_at(first);
                let location = self.location(Some(line));
                if self.ends_in_open_quote() {
                    self.done = true;
                    return Some(Err(location.error("a quoted field in the row that starts here is never closed")));
                }
                if self.width.is_none() {
                    self.width = Some(self.row.len());
                }
                if let Some(why) = self.width_refusal() {
                    return Some(Err(location.refusal(why)));
                }
                // Checked as UTF-8 once, as the row's own memory; it comes back for the next row.
                let row = match ::csv::StringRecord::from_byte_record(std::mem::take(&mut self.row)) {
                    Ok(row) => row,
                    Err(e) => {
                        let why = format!(
                            "field {} is not valid UTF-8 (is format.encoding right?): a bad byte after its first {} bytes",
                            e.utf8_error().field() + 1,
                            e.utf8_error().valid_up_to()
                        );
                        self.row = e.into_byte_record();
                        return Some(Err(location.refusal(why)));
                    }
                };
                let values = self.columns.iter().map(|&i| row.get(i).and_then(non_empty)).collect();
                self.row = row.into_byte_record();
                Some(Ok(Record {
                    location,
                    values,
                    inexact: 0,
                }))
            }
        }
    }

    fn header(&self) -> Option<&[String]> {
        self.header.as_deref()
    }

    fn raw(&self) -> Option<&[u8]> {
        self.rows.get_ref().inner.between(self.span.0, self.span.1)
    }

    fn rest(&mut self, out: &mut dyn Write) -> std::io::Result<Unread> {
        let start = self.span.0;
        self.rows.get_mut().inner.rest(start, out)
    }
}

/// The output, shared by the CSV writer and the raw rows written beside it.
struct Shared<'w>(Rc<RefCell<Box<dyn Write + 'w>>>);

impl Write for Shared<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

pub struct CsvWriter<'w> {
    out: ::csv::Writer<Shared<'w>>,
    /// The same output as `out`'s, for raw rows.
    raw: Rc<RefCell<Box<dyn Write + 'w>>>,
    line_end: &'static [u8],
    /// The position in a row of each column.
    places: Vec<usize>,
    row: Vec<String>,
}

impl<'w> CsvWriter<'w> {
    pub fn new(
        spec: &FormatSpec,
        columns: &[FieldRef],
        header_row: Option<&[String]>,
        out: Box<dyn Write + 'w>,
    ) -> Result<Self, FormatError> {
        let terminator = match spec.line_ending {
            Some(LineEnding::Crlf) => ::csv::Terminator::CRLF,
            _ => ::csv::Terminator::Any(b'\n'),
        };
        let raw = Rc::new(RefCell::new(out));
        let mut out = ::csv::WriterBuilder::new()
            .delimiter(delimiter(spec))
            .quote(quote(spec))
            .terminator(terminator)
            .flexible(true)
            .from_writer(Shared(raw.clone()));
        let names: Vec<FieldRef> = columns.iter().map(FieldRef::without_parent).collect();
        let places = columns
            .iter()
            .zip(&names)
            .map(|(column, name)| {
                // Rejects keep the input's header: a column goes where the header names it, if it does.
                let in_header = |f: &FieldRef| header_row?.iter().rposition(|h| FieldRef::Name(h.trim().to_string()) == *f);
                match name {
                    FieldRef::Position(0) => Err(write_error("column positions start at 1, not 0")),
                    FieldRef::Position(p) => Ok(p - 1),
                    _ => Ok(in_header(column)
                        .or_else(|| in_header(name))
                        .or_else(|| names.iter().position(|n| n == name))
                        .expect("a name is among the names")),
                }
            })
            .collect::<Result<Vec<usize>, _>>()?;
        if spec.header != Some(false) {
            match header_row {
                Some(header) => out.write_record(header),
                None => out.write_record(names.iter().map(ToString::to_string)),
            }
            .map_err(write_error)?;
        }
        let width = header_row.map_or(columns.len(), <[String]>::len);
        let width = places.iter().map(|p| p + 1).fold(width, usize::max);
        Ok(CsvWriter {
            out,
            raw,
            line_end: if spec.line_ending == Some(LineEnding::Crlf) {
                b"\r\n"
            } else {
                b"\n"
            },
            places,
            row: vec![String::new(); width],
        })
    }
}

impl CsvWriter<'_> {
    /// Appends each value to its place in the row.
    fn fill(&mut self, values: OutValues<'_>) -> Result<(), FormatError> {
        for (column, value) in values.iter() {
            let place = self.places.get(column).ok_or_else(|| no_column(column, self.places.len()))?;
            value.push_to(&mut self.row[*place]);
        }
        Ok(())
    }
}

impl RecordWriter for CsvWriter<'_> {
    fn write(&mut self, record: &OutRecord) -> Result<(), FormatError> {
        let children = record.children();
        // A record without children is written as a row of its parent's values.
        let parent_only = (children.len() == 0).then(OutValues::default);
        for child in children.chain(parent_only) {
            self.row.iter_mut().for_each(String::clear);
            self.fill(record.parent())?;
            self.fill(child)?;
            self.out.write_record(&self.row).map_err(write_error)?;
        }
        Ok(())
    }

    fn write_raw(&mut self, raw: &[u8]) -> Result<(), FormatError> {
        self.out.flush().map_err(write_error)?;
        let mut out = self.raw.borrow_mut();
        out.write_all(raw).map_err(write_error)?;
        if !raw.ends_with(b"\n") {
            out.write_all(self.line_end).map_err(write_error)?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), FormatError> {
        self.out.flush().map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    const BENCH: &str = "phone,channel,consent,created_at,updated_at\n\
        +491510000000,call_recording,false,2025-08-16T05:47:27Z,2025-08-17T00:10:19Z\n\
        +491710007919,whatsapp,true,2024-12-15T03:07:14Z,2024-12-20T20:40:19Z\n";

    #[test]
    fn reads_the_benchmark_file() {
        let csv = spec(FormatKind::Csv);
        let records = read_all(&csv, &names(&["phone", "consent", "updated_at"]), BENCH).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[1].values, row(&["+491710007919", "true", "2024-12-20T20:40:19Z"]));
        assert_eq!(records[1].location.to_string(), "in.txt:3 (record 2)");
        let read = read_through(&csv, &["phone"], BENCH);
        assert_eq!(
            read.items[1].1.as_deref(),
            Some(&b"+491710007919,whatsapp,true,2024-12-15T03:07:14Z,2024-12-20T20:40:19Z\n"[..])
        );
    }

    #[test]
    fn matches_names_trimmed_then_ignoring_case() {
        let csv = spec(FormatKind::Csv);
        let text = " Phone ,phone,CHANNEL\n1,2,3\n";
        assert_eq!(values(&csv, &["phone", "Phone", "channel"], text), [row(&["2", "1", "3"])]);
    }

    #[test]
    fn missing_column_lists_the_columns() {
        let err = error(&spec(FormatKind::Csv), &["phone", "usage", "x"], BENCH);
        assert_eq!(
            err,
            "in.txt:1: no column \"usage\", \"x\" in the header; the columns are \"phone\", \"channel\", \
             \"consent\", \"created_at\", \"updated_at\""
        );
    }

    #[test]
    fn positions_without_header() {
        let mut csv = spec(FormatKind::Csv);
        csv.header = Some(false);
        let wanted = [FieldRef::Position(2), FieldRef::Position(9)];
        let records = read_all(&csv, &wanted, "a,b\r\nc,d\r\n").unwrap();
        assert_eq!(
            records.iter().map(|r| r.values.clone()).collect::<Vec<_>>(),
            [row(&["b", ""]), row(&["d", ""])]
        );
        assert_eq!(records[1].location.line, Some(2));
        assert!(read_all(&csv, &names(&["a"]), "a\n").unwrap_err().to_string().contains("no header"));
        assert!(read_all(&csv, &[FieldRef::Position(0)], "a\n")
            .unwrap_err()
            .to_string()
            .contains("start at 1"));
    }

    #[test]
    fn short_rows_empty_files_and_header_only() {
        let mut csv = spec(FormatKind::Csv);
        csv.flexible = Some(true);
        assert_eq!(values(&csv, &["a", "b"], "a,b\nx\n\n,y\n"), [row(&["x", ""]), row(&["", "y"])]);
        csv.flexible = None;
        assert!(values(&csv, &["a"], "").is_empty());
        assert!(values(&csv, &["a"], "a\r\n").is_empty());
        assert!(values(&csv, &["a"], "\u{feff}a\r\n").is_empty());
    }

    #[test]
    fn quoted_fields_and_crlf() {
        let csv = spec(FormatKind::Csv);
        let text = "a,b\r\n\"x,\"\"1\"\"\r\n2\",y\r\nz,w\r\n";
        let records = read_all(&csv, &names(&["a", "b"]), text).unwrap();
        assert_eq!(records[0].values, row(&["x,\"1\"\r\n2", "y"]));
        assert_eq!(records[1].values, row(&["z", "w"]));
        assert_eq!(records[1].location.line, Some(4));
    }

    #[test]
    fn rows_of_another_width_are_refused_by_themselves() {
        let read = read_through(&spec(FormatKind::Csv), &["a"], "a,b\n1,2\n3\n4,5,6\n7,8\n");
        assert_eq!(read.summary()[0], Ok("1".into()));
        let e = read.summary()[1].clone().unwrap_err();
        assert!(
            e.starts_with("in.txt:3 (record 2): the row has 1 fields where the header has 2"),
            "{e}"
        );
        assert!(read.summary()[2]
            .clone()
            .unwrap_err()
            .starts_with("in.txt:4 (record 3): the row has 3 fields"));
        assert_eq!(read.summary()[3], Ok("7".into()));
        assert_eq!(read.items[2].1.as_deref(), Some(&b"4,5,6\n"[..]));
        assert!(read.rest.is_none());
        // Without a header the first row sets the width.
        let mut csv = spec(FormatKind::Csv);
        csv.header = Some(false);
        let wanted = [FieldRef::Position(1)];
        let mut reader = open_reader(&csv, &wanted, &[], Box::new(std::io::Cursor::new(b"1,2\n3\n".to_vec())), "in.txt").unwrap();
        assert!(reader.next_record().unwrap().is_ok());
        assert!(reader.next_record().unwrap().is_err_and(|e| !e.fatal));
    }

    #[test]
    fn an_unclosed_quote_stops_reading_and_hands_over_the_rest() {
        let text = "a,b\n1,2\n\"3,4\n5,6\n7,8";
        let read = read_through(&spec(FormatKind::Csv), &["a"], text);
        assert_eq!(read.summary()[0], Ok("1".into()));
        assert_eq!(
            read.summary()[1],
            Err("in.txt:3 (record 2): a quoted field in the row that starts here is never closed".into())
        );
        let (rest, unread) = read.rest.unwrap();
        assert_eq!(rest, b"\"3,4\n5,6\n7,8");
        assert_eq!(unread, Unread { bytes: 12, lines: 3 });
    }

    #[test]
    fn a_row_that_is_not_utf8_is_refused_and_reading_goes_on() {
        let read = read_through(&spec(FormatKind::Csv), &["a"], b"a\nok\n\xE4\nnext\n".to_vec());
        let e = read.summary()[1].clone().unwrap_err();
        assert!(e.starts_with("in.txt:3 (record 2): field 1 is not valid UTF-8"), "{e}");
        assert_eq!(read.items[1].1.as_deref(), Some(&b"\xE4\n"[..]));
        assert_eq!(read.summary()[2], Ok("next".into()));
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert!(read_all(&spec(FormatKind::Csv), &names(&["a"]), garbage).is_err());
    }

    #[test]
    fn sinch_contact_pro_tsv_with_bom() {
        let tsv = spec(FormatKind::Tsv);
        let text = "\u{feff}Address\tUsage\tConsent\r\n+4915100\tWhatsApp\tTrue\r\n";
        assert_eq!(
            values(&tsv, &["Address", "Usage", "Consent", "Delete"][..3], text),
            [row(&["+4915100", "WhatsApp", "True"])]
        );
    }

    #[test]
    fn windows_1252_and_utf16() {
        let mut csv = spec(FormatKind::Csv);
        csv.encoding = Encoding::Windows1252;
        assert_eq!(values(&csv, &["n"], b"n\nM\xE4rz\n".to_vec()), [row(&["März"])]);
        csv.encoding = Encoding::Utf16;
        let bytes: Vec<u8> = "\u{feff}n\r\nä\r\n".encode_utf16().flat_map(u16::to_be_bytes).collect();
        assert_eq!(values(&csv, &["n"], bytes), [row(&["ä"])]);
    }

    #[test]
    fn ten_megabyte_line() {
        let long = "x".repeat(10 << 20);
        let got = values(&spec(FormatKind::Csv), &["a", "b"], format!("a,b\n{long},1\n"));
        assert_eq!(got[0][0].as_ref().map(String::len), Some(10 << 20));
    }

    #[test]
    fn writes_rows_and_raw_rows() {
        let mut csv = spec(FormatKind::Csv);
        csv.line_ending = Some(LineEnding::Crlf);
        let cols = names(&["phone", "consent"]);
        // Values come in any order; each goes to its column.
        let rec = out_record(&[], &[&[(1, OutValue::Bool(true)), (0, OutValue::Text("a,b"))]]);
        let mut out = Vec::new();
        let mut w = open_writer(&csv, &cols, None, Box::new(&mut out)).unwrap();
        w.write(&rec).unwrap();
        w.write_raw(b"x,\"y\",z\r\n").unwrap();
        w.write_raw(b"last").unwrap();
        w.write(&rec).unwrap();
        w.finish().unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "phone,consent\r\n\"a,b\",true\r\nx,\"y\",z\r\nlast\r\n\"a,b\",true\r\n"
        );
        let bad = out_record(&[], &[&[(2, OutValue::Int(1))]]);
        let mut w = open_writer(&csv, &cols, None, Box::new(std::io::sink())).unwrap();
        assert_eq!(
            w.write(&bad).unwrap_err().to_string(),
            "-: cannot write: a value for column 2, but the writer has 2 columns"
        );
    }

    #[test]
    fn rejects_keep_the_input_header() {
        let csv = spec(FormatKind::Csv);
        let header = ["Phone".to_string(), "Extra".to_string()];
        let mut out = Vec::new();
        let mut w = open_writer(&csv, &names(&["phone"]), Some(&header), Box::new(&mut out)).unwrap();
        w.write_raw(b"1,2\n").unwrap();
        w.finish().unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "Phone,Extra\n1,2\n");
    }
}
