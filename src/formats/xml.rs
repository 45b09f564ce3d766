//! XML records, read with quick-xml: elements are matched by local name along the `record` path, and
//! each record element (or its parent, when `../` fields are wanted) is read into a small tree, so
//! memory holds one record. Element text is trimmed, except whitespace written as a character
//! reference (`&#32;`), which is how the writer keeps leading and trailing spaces.
use super::keep::{Keep, Unread};
use super::*;
use quick_xml::events::{BytesStart, Event};
use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter};

/// An element as read: local name, attributes, own text, child elements.
#[derive(Debug, Default)]
struct Elem {
    name: String,
    attrs: Vec<(String, String)>,
    text: String,
    children: Vec<Elem>,
    /// The line its start tag ends on.
    line: u64,
}

impl Elem {
    /// The value at `path` (`phone`, `contact/phone`, `@id`, `contact/@id`, `.`) below this element.
    fn find(&self, path: &[String]) -> Option<&str> {
        let Some((last, parents)) = path.split_last() else {
            return Some(&self.text);
        };
        let e = parents.iter().try_fold(self, |e, step| e.child(step))?;
        match last.strip_prefix('@') {
            Some(attr) => e.attrs.iter().find(|(k, _)| k == attr).map(|(_, v)| v.as_str()),
            None if last == "." => Some(&e.text),
            None => e.child(last).map(|c| c.text.as_str()),
        }
    }

    fn child(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// Splits a slash path; empty or `.` is the element itself.
fn steps(path: &str) -> Vec<String> {
    match path {
        "" | "." => Vec::new(),
        p => p.split('/').map(str::to_string).collect(),
    }
}

/// Counts the lines quick-xml has consumed, so records can say where they start.
struct Lines<R> {
    inner: R,
    line: u64,
}

impl<R: Read> Read for Lines<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for Lines<R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, n: usize) {
        if let Ok(buf) = self.inner.fill_buf() {
            self.line += buf[..n.min(buf.len())].iter().filter(|&&b| b == b'\n').count() as u64;
        }
        self.inner.consume(n);
    }
}

type Xml = quick_xml::Reader<Lines<BufReader<Keep>>>;

pub struct XmlReader {
    xml: Xml,
    /// The record path, and how much of it leads to the element read whole (the record, or its parent).
    path: Vec<String>,
    unit: usize,
    /// Local names of the open elements above the current position.
    stack: Vec<String>,
    /// 1-based index of the last element met at each level of `path`, for locations.
    counts: Vec<u64>,
    /// Per wanted field: whether it is read from the parent, and its path.
    fields: Vec<(bool, Vec<String>)>,
    file: String,
    record: u64,
    queue: VecDeque<Record>,
    done: bool,
    /// Where the input after the last record read whole starts: the rest from here is handed over
    /// when reading stops early.
    mark: u64,
}

impl XmlReader {
    pub fn new(spec: &FormatSpec, wanted: &[FieldRef], input: Box<dyn Read + Send>, file: &str) -> Result<Self, FormatError> {
        let path: Vec<String> = spec.record.as_deref().map(steps).unwrap_or_default();
        let fields = wanted
            .iter()
            .map(|w| match w.without_parent() {
                FieldRef::Name(n) => Ok((w.is_parent(), steps(&n))),
                FieldRef::Position(p) => Err(Location::in_file(file, None).error(format!(
                    "column {p}: XML fields are named by their path, such as contact/phone or @id"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let wants_parent = fields.iter().any(|(parent, _)| *parent);
        let unit = if wants_parent && path.len() > 1 {
            path.len() - 1
        } else {
            path.len()
        };
        let lines = Lines {
            inner: BufReader::with_capacity(64 << 10, Keep::new(input)),
            line: 1,
        };
        Ok(XmlReader {
            xml: quick_xml::Reader::from_reader(lines),
            counts: vec![0; path.len()],
            path,
            unit,
            stack: Vec::new(),
            fields,
            file: file.to_string(),
            record: 0,
            queue: VecDeque::new(),
            done: false,
            mark: 0,
        })
    }

    /// The XML path of the element at `level` of the record path, from the counts.
    fn xml_path(&self, level: usize) -> String {
        let mut p = String::new();
        for (i, name) in self.path[..=level].iter().enumerate() {
            match i {
                0 => p = format!("/{name}"),
                _ => p.push_str(&format!("/{name}[{}]", self.counts[i])),
            }
        }
        p
    }

    fn here(&self, message: impl Into<String>) -> FormatError {
        let level = self.stack.len().min(self.unit).saturating_sub(1);
        let path = (!self.path.is_empty()).then(|| self.xml_path(level));
        let line = Some(self.xml.get_ref().line);
        Location {
            file: self.file.clone(),
            line,
            record: self.record + 1,
            path,
        }
        .error(message)
    }

    fn xml_error(&self, e: quick_xml::Error) -> FormatError {
        self.here(format!("invalid XML: {e}"))
    }

    /// Counts an element met at the current level when it is on the record path; true when it is the
    /// element to read whole.
    fn on_path(&mut self, name: &str) -> bool {
        let level = self.stack.len();
        let on_path = level < self.path.len() && self.path[level] == name && self.stack.iter().zip(&self.path).all(|(a, b)| a == b);
        if on_path {
            self.counts[level] += 1;
            self.counts[level + 1..].iter_mut().for_each(|c| *c = 0);
        }
        on_path && level + 1 == self.unit
    }

    /// Reads events up to the next element to read whole, and queues its records.
    fn advance(&mut self) -> Result<(), FormatError> {
        self.mark = self.xml.buffer_position();
        self.xml.get_mut().inner.get_mut().release(self.mark);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let event = self.xml.read_event_into(&mut buf).map_err(|e| self.xml_error(e))?;
            match event {
                Event::Start(start) => {
                    let start = start.into_owned();
                    let name = local(start.local_name().as_ref());
                    if self.on_path(&name) {
                        self.stack.push(name);
                        let unit = self.read_elem(&start, true)?;
                        self.stack.pop();
                        self.queue_records(&unit);
                        return Ok(());
                    }
                    self.stack.push(name);
                }
                Event::Empty(start) => {
                    let start = start.into_owned();
                    if self.on_path(&local(start.local_name().as_ref())) {
                        let unit = self.read_elem(&start, false)?;
                        self.queue_records(&unit);
                        return Ok(());
                    }
                }
                Event::End(_) => {
                    self.stack.pop();
                }
                Event::Eof => {
                    self.done = true;
                    return match self.stack.last() {
                        Some(open) => Err(self.here(format!("the file ends inside <{open}> (is it truncated?)"))),
                        None => Ok(()),
                    };
                }
                _ => {}
            }
        }
    }

    /// Reads the element that `start` opens (up to its end tag when `open`) into a tree.
    fn read_elem(&mut self, start: &BytesStart, open: bool) -> Result<Elem, FormatError> {
        let mut elem = Elem {
            name: local(start.local_name().as_ref()),
            line: self.xml.get_ref().line,
            ..Elem::default()
        };
        for attr in start.attributes() {
            let attr = attr.map_err(|e| self.xml_error(e.into()))?;
            if attr.key.as_namespace_binding().is_none() {
                let value = attr.unescape_value().map_err(|e| self.xml_error(e))?;
                elem.attrs.push((local(attr.key.local_name().as_ref()), value.into_owned()));
            }
        }
        if !open {
            return Ok(elem);
        }
        let mut buf = Vec::new();
        loop {
            let event = self.xml.read_event_into(&mut buf).map_err(|e| self.xml_error(e))?;
            match event {
                Event::Start(s) => {
                    let s = s.into_owned();
                    elem.children.push(self.read_elem(&s, true)?);
                }
                Event::Empty(s) => {
                    let s = s.into_owned();
                    elem.children.push(self.read_elem(&s, false)?);
                }
                Event::Text(t) => {
                    let raw = std::str::from_utf8(&t).map_err(|e| self.here(format!("text is not valid UTF-8: {e}")))?;
                    let text = quick_xml::escape::unescape(raw.trim_matches(|c: char| c.is_ascii_whitespace()))
                        .map_err(|e| self.xml_error(e.into()))?;
                    elem.text.push_str(&text);
                }
                Event::CData(c) => {
                    let text = c.decode().map_err(|e| self.xml_error(e.into()))?;
                    elem.text.push_str(&text);
                }
                Event::End(_) => break,
                Event::Eof => {
                    let message = format!("the file ends inside <{}> (is it truncated?)", elem.name);
                    return Err(self.here(message));
                }
                _ => {}
            }
            buf.clear();
        }
        Ok(elem)
    }

    /// Queues the records of `unit`: itself, or its children on the record path when it is the parent.
    fn queue_records(&mut self, unit: &Elem) {
        let level = self.unit - 1;
        let base = self.xml_path(level);
        let found: Vec<(&Elem, Option<&Elem>, String)> = match self.path.get(self.unit) {
            None => vec![(unit, None, base)],
            Some(name) => unit
                .children
                .iter()
                .filter(|c| &c.name == name)
                .enumerate()
                .map(|(i, c)| (c, Some(unit), format!("{base}/{name}[{}]", i + 1)))
                .collect(),
        };
        for (elem, parent, path) in found {
            self.record += 1;
            let values = self
                .fields
                .iter()
                .map(|(from_parent, path)| {
                    let base = if *from_parent { parent? } else { elem };
                    base.find(path).and_then(non_empty)
                })
                .collect();
            let location = Location {
                file: self.file.clone(),
                line: Some(elem.line),
                record: self.record,
                path: Some(path),
            };
            self.queue.push_back(Record {
                location,
                values,
                inexact: 0,
            });
        }
    }
}

/// A name without its namespace prefix.
fn local(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

impl RecordReader for XmlReader {
    fn rest(&mut self, out: &mut dyn Write) -> std::io::Result<Unread> {
        let mark = self.mark;
        self.xml.get_mut().inner.get_mut().rest(mark, out)
    }

    fn next_record(&mut self) -> Option<Result<Record, FormatError>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.advance() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// Escapes text for XML. Line breaks and tabs in attributes, and whitespace at either end of
/// element text, become character references so that reading gives them back.
fn escape(s: &str, attr: bool) -> Cow<'_, str> {
    let keep = |i: usize, c: char| match c {
        '&' | '<' | '>' | '"' | '\'' | '\r' => false,
        '\n' | '\t' => !(attr || i == 0 || i + c.len_utf8() == s.len()),
        ' ' => attr || !(i == 0 || i + 1 == s.len()),
        _ => true,
    };
    // Most values have nothing to escape; bytes are quicker to look at than chars.
    let plain = s
        .bytes()
        .all(|b| !matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | b'\r' | b'\n' | b'\t'))
        && (attr || !(s.starts_with(' ') || s.ends_with(' ')));
    if plain || s.char_indices().all(|(i, c)| keep(i, c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for (i, c) in s.char_indices() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if keep(i, c) => out.push(c),
            c => out.push_str(&format!("&#{};", u32::from(c))),
        }
    }
    Cow::Owned(out)
}

/// Where the values of a parent or a child go, worked out from the columns it carries: the element
/// holding them at their paths (`phone`, `contact/phone`, `@id`, `contact/@id`, `.`). A path makes its
/// elements in the order the values come, below the first element of each name on the way.
#[derive(Debug, Default)]
struct Shape {
    name: String,
    /// Attribute names and the index of their value among the values.
    attrs: Vec<(String, usize)>,
    text: Option<usize>,
    children: Vec<Shape>,
}

impl Shape {
    fn of(name: &str, paths: &[Vec<String>], values: OutValues<'_>) -> Result<Shape, FormatError> {
        let mut root = Shape {
            name: name.to_string(),
            ..Shape::default()
        };
        for (i, column) in values.columns().enumerate() {
            let path = paths.get(column).ok_or_else(|| no_column(column, paths.len()))?;
            let Some((last, parents)) = path.split_last() else {
                root.text = Some(i);
                continue;
            };
            let mut e = &mut root;
            for step in parents {
                let i = match e.children.iter().position(|c| &c.name == step) {
                    Some(i) => i,
                    None => {
                        e.children.push(Shape {
                            name: step.clone(),
                            ..Shape::default()
                        });
                        e.children.len() - 1
                    }
                };
                e = &mut e.children[i];
            }
            match last.strip_prefix('@') {
                Some(attr) => e.attrs.push((attr.to_string(), i)),
                None if last == "." => e.text = Some(i),
                None => e.children.push(Shape {
                    name: last.clone(),
                    text: Some(i),
                    ..Shape::default()
                }),
            }
        }
        Ok(root)
    }

    fn text<'v>(&self, values: OutValues<'v>) -> Cow<'v, str> {
        match self.text.map(|i| values.get(i).1) {
            Some(OutValue::Text(s)) => Cow::Borrowed(s),
            Some(v) => Cow::Owned(v.as_text().into_owned()),
            None => Cow::Borrowed(""),
        }
    }

    /// Writes the start tag and attributes, without the closing `>`.
    fn open_tag(&self, out: &mut impl Write, values: OutValues<'_>) -> std::io::Result<()> {
        out.write_all(b"<")?;
        out.write_all(self.name.as_bytes())?;
        for (k, i) in &self.attrs {
            write!(out, " {k}=\"{}\"", escape(&values.get(*i).1.as_text(), true))?;
        }
        Ok(())
    }

    /// Writes a nested record's parent up to its children, a line each: its start tag with its own text,
    /// then its own elements.
    fn write_start(&self, out: &mut impl Write, values: OutValues<'_>) -> std::io::Result<()> {
        self.open_tag(out, values)?;
        writeln!(out, ">{}", escape(&self.text(values), false))?;
        for c in &self.children {
            c.write(out, values)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    fn write(&self, out: &mut impl Write, values: OutValues<'_>) -> std::io::Result<()> {
        self.open_tag(out, values)?;
        let text = self.text(values);
        if text.is_empty() && self.children.is_empty() {
            return out.write_all(b"/>");
        }
        out.write_all(b">")?;
        out.write_all(escape(&text, false).as_bytes())?;
        for c in &self.children {
            c.write(out, values)?;
        }
        out.write_all(b"</")?;
        out.write_all(self.name.as_bytes())?;
        out.write_all(b">")
    }
}

pub struct XmlWriter<'w> {
    out: BufWriter<Box<dyn Write + 'w>>,
    path: Vec<String>,
    /// Decided by the first record: nested when it has parent fields.
    nested: Option<bool>,
    /// Each column's slash path, without `../`.
    paths: Vec<Vec<String>>,
    parents: Layouts<Shape>,
    children: Layouts<Shape>,
}

impl<'w> XmlWriter<'w> {
    pub fn new(spec: &FormatSpec, columns: &[FieldRef], out: Box<dyn Write + 'w>) -> Result<Self, FormatError> {
        let mut out = BufWriter::new(out);
        writeln!(out, "<?xml version=\"1.0\" encoding=\"{}\"?>", spec.encoding.xml_name()).map_err(write_error)?;
        let path = spec.record.as_deref().map(steps).unwrap_or_default();
        Ok(XmlWriter {
            out,
            path,
            nested: None,
            paths: columns.iter().map(|c| steps(&c.without_parent().to_string())).collect(),
            parents: Layouts::new(),
            children: Layouts::new(),
        })
    }

    /// How many elements of the path are around the records (or around their parents, when nested).
    fn outer(&self) -> usize {
        let inner = if self.nested == Some(true) { 2 } else { 1 };
        self.path.len().saturating_sub(inner)
    }

    fn start(&mut self, nested: bool) -> std::io::Result<()> {
        self.nested = Some(nested && self.path.len() > 1);
        for name in &self.path[..self.outer()] {
            writeln!(self.out, "<{name}>")?;
        }
        Ok(())
    }

    fn write_record(&mut self, r: &OutRecord) -> Result<(), FormatError> {
        if self.nested.is_none() {
            self.start(!r.parent().is_empty()).map_err(write_error)?;
        }
        let XmlWriter {
            out,
            path,
            nested,
            paths,
            parents,
            children,
        } = self;
        let Some(name) = path.last() else {
            return Ok(());
        };
        let parent_name = (*nested == Some(true)).then(|| &path[path.len() - 2]);
        if let Some(parent_name) = parent_name {
            let values = r.parent();
            let parent = parents.get(values, || Shape::of(parent_name, paths, values))?;
            parent.write_start(out, values).map_err(write_error)?;
        }
        for values in r.children() {
            let child = children.get(values, || Shape::of(name, paths, values))?;
            child.write(out, values).map_err(write_error)?;
            out.write_all(b"\n").map_err(write_error)?;
        }
        if let Some(parent_name) = parent_name {
            writeln!(out, "</{parent_name}>").map_err(write_error)?;
        }
        Ok(())
    }
}

impl RecordWriter for XmlWriter<'_> {
    fn write(&mut self, record: &OutRecord) -> Result<(), FormatError> {
        self.write_record(record)
    }

    fn write_raw(&mut self, raw: &[u8]) -> Result<(), FormatError> {
        if self.nested.is_none() {
            self.start(false).map_err(write_error)?;
        }
        self.out.write_all(raw.trim_ascii()).map_err(write_error)?;
        self.out.write_all(b"\n").map_err(write_error)
    }

    fn finish(mut self: Box<Self>) -> Result<(), FormatError> {
        if self.nested.is_none() {
            self.start(false).map_err(write_error)?;
        }
        for name in self.path[..self.outer()].iter().rev() {
            writeln!(self.out, "</{name}>").map_err(write_error)?;
        }
        self.out.flush().map_err(write_error)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    fn xml(record: &str) -> FormatSpec {
        let mut s = spec(FormatKind::Xml);
        s.record = Some(record.to_string());
        s
    }

    const BENCH: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<consents>\n  \
        <consent><phone>+49151</phone><channel>call_recording</channel><value>false</value></consent>\n  \
        <consent><phone>+49171</phone><channel>whatsapp</channel><value>true</value></consent>\n</consents>\n";

    #[test]
    fn reads_the_benchmark_file() {
        let records = read_all(&xml("consents/consent"), &names(&["phone", "value", "missing"]), BENCH).unwrap();
        assert_eq!(records[1].values, row(&["+49171", "true", ""]));
        assert_eq!(records[1].location.to_string(), "in.txt:4 (record 2, /consents/consent[2])");
    }

    #[test]
    fn paths_attributes_namespaces_entities() {
        let text = r#"<n:root xmlns:n="urn:x"><n:c n:type="t&amp;1" xmlns="urn:y">
            <contact id="7"><phone> +49 &lt;1&gt; </phone></contact>
            <note><![CDATA[a <b> & c]]></note>  own &#32;text&#32;
        </n:c><c/></n:root>"#;
        let wanted = ["@type", "contact/@id", "contact/phone", "note", ".", "@xmlns"];
        let records = read_all(&xml("root/c"), &names(&wanted), text).unwrap();
        assert_eq!(records[0].values, row(&["t&1", "7", "+49 <1>", "a <b> & c", "own  text ", ""]));
        assert_eq!(records[1].values, row(&["", "", "", "", "", ""]));
        assert_eq!(records[1].location.path.as_deref(), Some("/root/c[2]"));
    }

    #[test]
    fn parent_fields_buffer_the_parent() {
        let text = "<subjects>\n<subject id=\"1\"><consent>a</consent>\n<consent>b</consent><phone>+49</phone></subject>\n\
                    <subject id=\"2\"/><subject id=\"3\"><consent>c</consent></subject></subjects>";
        let records = read_all(&xml("subjects/subject/consent"), &names(&["../@id", "../phone", "."]), text).unwrap();
        let got: Vec<_> = records.iter().map(|r| r.values.clone()).collect();
        assert_eq!(got, [row(&["1", "+49", "a"]), row(&["1", "+49", "b"]), row(&["3", "", "c"])]);
        assert_eq!(
            records[1].location.to_string(),
            "in.txt:3 (record 2, /subjects/subject[1]/consent[2])"
        );
        assert_eq!(records[2].location.path.as_deref(), Some("/subjects/subject[3]/consent[1]"));
        let without_parent = values(&xml("subjects/subject/consent"), &["."], text);
        assert_eq!(without_parent.len(), 3);
    }

    #[test]
    fn broken_xml_says_where() {
        let cut = BENCH.find("true</value></consent>\n</consents>").unwrap_or(0) + 2;
        let e = error(&xml("consents/consent"), &["phone"], &BENCH[..cut]);
        assert_eq!(
            e,
            "in.txt:4 (record 2, /consents/consent[2]): the file ends inside <value> (is it truncated?)"
        );
        let e = error(&xml("consents/consent"), &["phone"], &BENCH[..cut + 6]);
        assert!(e.starts_with("in.txt:4 (record 2, /consents/consent[2]): invalid XML"), "{e}");
        let e = error(
            &xml("consents/consent"),
            &["phone"],
            "<consents>\n<consent><phone>1</phone></consent>\n",
        );
        assert_eq!(
            e,
            "in.txt:3 (record 2, /consents): the file ends inside <consents> (is it truncated?)"
        );
        let e = error(
            &xml("consents/consent"),
            &["phone"],
            "<consents>\n<consent><phone>1</x></consent></consents>",
        );
        assert!(e.starts_with("in.txt:2 (record 1, /consents/consent[1]): invalid XML:"), "{e}");
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert!(read_all(&xml("a/b"), &names(&["c"]), garbage).is_err());
        assert!(values(&xml("a/b"), &["c"], "").is_empty());
    }

    #[test]
    fn each_combination_of_columns_is_laid_out_on_its_own() {
        // Elements are made in the order values come; an attribute goes on the first element of its name.
        let columns = names(&["info/@v", "info", "."]);
        let (v, info, text) = ((0, OutValue::Text("t")), (1, OutValue::Text("d")), (2, OutValue::Text("w")));
        let records = [
            out_record(&[], &[&[v, info, text]]),
            out_record(&[], &[&[info]]),
            out_record(&[], &[&[info, v]]),
            out_record(&[], &[&[]]),
            out_record(&[], &[&[v, info, text]]),
        ];
        let out = String::from_utf8(write_all(&xml("c"), &columns, &records)).unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<c>w<info v=\"t\"/><info>d</info></c>\n<c><info>d</info></c>\n\
             <c><info v=\"t\">d</info></c>\n<c/>\n<c>w<info v=\"t\"/><info>d</info></c>\n"
        );
    }

    #[test]
    fn writes_flat_and_nested() {
        let columns = names(&["../@id", "../phone", "usage", "@on"]);
        let rec = out_record(
            &[(0, OutValue::Int(7)), (1, OutValue::Text("+49"))],
            &[&[(2, OutValue::Text("a<&>")), (3, OutValue::Bool(true))]],
        );
        let out = String::from_utf8(write_all(&xml("subjects/subject/consent"), &columns, std::slice::from_ref(&rec))).unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<subjects>\n<subject id=\"7\">\n<phone>+49</phone>\n\
             <consent on=\"true\"><usage>a&lt;&amp;&gt;</usage></consent>\n</subject>\n</subjects>\n"
        );
        let columns = names(&["contact/phone", "contact/@id"]);
        let flat = out_record(&[], &[&[(0, OutValue::Text(" x\n")), (1, OutValue::Int(1))]]);
        let out = String::from_utf8(write_all(&xml("consents/consent"), &columns, &[flat])).unwrap();
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<consents>\n<consent><contact id=\"1\"><phone>&#32;x&#10;</phone></contact></consent>\n</consents>\n"
        );
    }
}
