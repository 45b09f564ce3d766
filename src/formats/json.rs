//! JSON and NDJSON records. A JSON document is scanned byte by byte down `records` to the first array,
//! whose elements are then parsed one at a time with serde_json, so memory holds one element; arrays
//! below it (nested records) are expanded from the parsed element. NDJSON parses one line at a time.
use super::keep::{copy_rest, Unread};
use super::*;
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, BufWriter};

/// Splits a dotted path; empty or `.` is the value itself.
fn steps(path: &str) -> Vec<String> {
    match path {
        "" | "." => Vec::new(),
        p => p.split('.').map(str::to_string).collect(),
    }
}

/// One key more on a record's path, as messages write it: keys joined by dots, as `format.records`
/// names them (`data.customers`).
fn pointer_step(pointer: &str, step: &str) -> String {
    if pointer.is_empty() {
        step.to_string()
    } else {
        format!("{pointer}.{step}")
    }
}

/// An array element on a record's path, counted from 1 as records, lines and columns are
/// (`data.customers[3]`).
fn pointer_index(pointer: &str, index: usize) -> String {
    format!("{pointer}[{}]", index + 1)
}

/// The value at `path` below `v`; array elements by number.
fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, step| match v {
        Value::Object(m) => m.get(step),
        Value::Array(a) => a.get(step.parse::<usize>().ok()?),
        _ => None,
    })
}

/// A value as text: scalars as written, strings unquoted, an object or array as its JSON.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => non_empty(s),
        v => Some(v.to_string()),
    }
}

/// A found record: its value, the object holding the array it is in, and its path.
type Found<'a> = (&'a Value, Option<&'a Value>, String);

/// The records at `path` below `v`, walking every array met on the way.
fn expand<'a>(v: &'a Value, path: &[String], parent: Option<&'a Value>, pointer: String, out: &mut Vec<Found<'a>>) {
    match (v, path.split_first()) {
        (Value::Array(items), _) => {
            for (i, item) in items.iter().enumerate() {
                expand(item, path, parent, pointer_index(&pointer, i), out);
            }
        }
        (_, None) => out.push((v, parent, pointer)),
        (Value::Object(m), Some((step, rest))) => {
            if let Some(child) = m.get(step) {
                expand(child, rest, Some(v), pointer_step(&pointer, step), out);
            }
        }
        _ => {}
    }
}

/// Picks the wanted fields out of the records of each parsed unit (an array element or a line).
struct Picker {
    /// Per wanted field: whether it is read from the parent, and its path.
    fields: Vec<(bool, Vec<String>)>,
    file: String,
    record: u64,
}

impl Picker {
    fn new(wanted: &[FieldRef], file: &str) -> Result<Self, FormatError> {
        let fields =
            wanted
                .iter()
                .map(|w| match w.without_parent() {
                    FieldRef::Name(n) => Ok((w.is_parent(), steps(&n))),
                    FieldRef::Position(p) => Err(Location::in_file(file, None)
                        .error(format!("column {p}: JSON fields are named by their path, such as contact.phone"))),
                })
                .collect::<Result<_, _>>()?;
        Ok(Picker {
            fields,
            file: file.to_string(),
            record: 0,
        })
    }

    /// Where the next record is.
    fn location(&self, line: Option<u64>, path: String) -> Location {
        let path = (!path.is_empty()).then_some(path);
        Location {
            file: self.file.clone(),
            line,
            record: self.record + 1,
            path,
        }
    }

    /// Queues the records of a parsed unit; returns how many there were.
    fn pick(&mut self, unit: &Value, path: &[String], pointer: String, line: Option<u64>, out: &mut VecDeque<Record>) -> usize {
        let mut found = Vec::new();
        expand(unit, path, None, pointer, &mut found);
        let n = found.len();
        for (record, parent, pointer) in found {
            let location = self.location(line, pointer);
            self.record += 1;
            let mut inexact = 0u64;
            let values = self
                .fields
                .iter()
                .enumerate()
                .map(|(i, (from_parent, path))| {
                    let base = if *from_parent { parent? } else { record };
                    let v = lookup(base, path)?;
                    if matches!(v, Value::Number(n) if !n.is_u64()) && i < 64 {
                        inexact |= 1 << i;
                    }
                    text(v)
                })
                .collect();
            out.push_back(Record { location, values, inexact });
        }
        n
    }
}

/// Parses one unit that starts on `line`; errors give the line of the problem. A unit that does not
/// parse is refused on its own: its bounds are known, so reading goes on after it.
fn parse(bytes: &[u8], line: u64, at: Location) -> Result<Value, FormatError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let full = e.to_string();
        let what = full
            .strip_suffix(&format!(" at line {} column {}", e.line(), e.column()))
            .unwrap_or(&full);
        let line = line + e.line().saturating_sub(1) as u64;
        Location { line: Some(line), ..at }.refusal(format!("invalid JSON: {what} (column {})", e.column()))
    })
}

/// Walks a JSON document without holding it: whitespace, punctuation, and whole values as bytes.
struct Scanner {
    input: BufReader<Box<dyn Read + Send>>,
    line: u64,
}

impl Scanner {
    /// Skips whitespace, giving the next byte (not consumed), or `None` at the end.
    fn skip_ws(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf.iter().take_while(|b| b.is_ascii_whitespace()).count();
            self.line += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            if n < buf.len() {
                let next = buf[n];
                self.input.consume(n);
                return Ok(Some(next));
            }
            self.input.consume(n);
        }
    }

    /// Reads the value that starts here (after `skip_ws`), appending its bytes to `keep` when given.
    /// Only the nesting is checked; serde_json checks the rest of what is kept.
    fn value(&mut self, mut keep: Option<&mut Vec<u8>>) -> Result<(), String> {
        let first = self.skip_ws().map_err(|e| format!("cannot read: {e}"))?;
        let scalar = !matches!(first, Some(b'{' | b'[' | b'"'));
        let (mut depth, mut in_str, mut escaped, mut len) = (0usize, false, false, 0usize);
        loop {
            let buf = self.input.fill_buf().map_err(|e| format!("cannot read: {e}"))?;
            if buf.is_empty() {
                return match (scalar, len) {
                    (true, 1..) => Ok(()),
                    (true, 0) => Err("the file ends where a value should be (is it truncated?)".to_string()),
                    _ => Err("the file ends inside this value (is it truncated?)".to_string()),
                };
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if scalar {
                    if matches!(b, b',' | b']' | b'}' | b':') || b.is_ascii_whitespace() {
                        end = Some(i);
                        break;
                    }
                } else if in_str {
                    match b {
                        _ if escaped => escaped = false,
                        b'\\' => escaped = true,
                        b'"' => {
                            in_str = false;
                            if depth == 0 {
                                end = Some(i + 1);
                                break;
                            }
                        }
                        b'\n' => self.line += 1,
                        _ => {}
                    }
                } else {
                    match b {
                        b'"' => in_str = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                end = Some(i + 1);
                                break;
                            }
                        }
                        b'\n' => self.line += 1,
                        _ => {}
                    }
                }
            }
            let n = end.unwrap_or(buf.len());
            len += n;
            if let Some(k) = keep.as_deref_mut() {
                k.extend_from_slice(&buf[..n]);
            }
            self.input.consume(n);
            match (end, len) {
                (Some(_), 0) => return Err("expected a value".to_string()),
                (Some(_), _) => return Ok(()),
                _ => {}
            }
        }
    }
}

enum State {
    /// In the records array; `first` until an element was read.
    Array {
        first: bool,
    },
    /// The records path leads to one value: it is read whole.
    One,
    Done,
}

pub struct JsonReader {
    scan: Scanner,
    picker: Picker,
    /// The records path below the streamed array, and the path of that array.
    rest: Vec<String>,
    pointer: String,
    state: State,
    index: usize,
    element: Vec<u8>,
    /// Records the unit in `element` gave; its bytes are a record's raw form only when it gave one.
    unit_records: usize,
    /// After a fatal error: the bytes of the unit that broke, as far as they were read.
    broken: Vec<u8>,
    queue: VecDeque<Record>,
}

impl JsonReader {
    pub fn new(spec: &FormatSpec, wanted: &[FieldRef], input: Box<dyn Read + Send>, file: &str) -> Result<Self, FormatError> {
        let mut reader = JsonReader {
            scan: Scanner {
                input: BufReader::with_capacity(64 << 10, input),
                line: 1,
            },
            picker: Picker::new(wanted, file)?,
            rest: steps(spec.records.as_deref().unwrap_or("")),
            pointer: String::new(),
            state: State::Done,
            index: 0,
            element: Vec::new(),
            unit_records: 0,
            broken: Vec::new(),
            queue: VecDeque::new(),
        };
        reader.state = reader.descend().map_err(|m| reader.here().error(m))?;
        Ok(reader)
    }

    fn here(&self) -> Location {
        let path = match self.state {
            State::Array { .. } => pointer_index(&self.pointer, self.index),
            _ => self.pointer.clone(),
        };
        self.picker.location(Some(self.scan.line), path)
    }

    /// Walks down the records path to the first array (or the one value there).
    fn descend(&mut self) -> Result<State, String> {
        let io = |e: std::io::Error| format!("cannot read: {e}");
        loop {
            match self.scan.skip_ws().map_err(io)? {
                None if self.pointer.is_empty() => return Ok(State::Done),
                None => return Err("the file ends early (is it truncated?)".to_string()),
                Some(b'[') => {
                    self.scan.input.consume(1);
                    return Ok(State::Array { first: true });
                }
                Some(b'{') if !self.rest.is_empty() => {
                    self.scan.input.consume(1);
                    let step = self.rest.remove(0);
                    self.find_key(&step)?;
                    self.pointer = pointer_step(&self.pointer, &step);
                }
                Some(_) => return Ok(State::One),
            }
        }
    }

    /// Reads an object's members up to `key`, leaving the scanner at its value.
    fn find_key(&mut self, key: &str) -> Result<(), String> {
        let io = |e: std::io::Error| format!("cannot read: {e}");
        let mut name = Vec::new();
        loop {
            match self.scan.skip_ws().map_err(io)? {
                Some(b'"') => {}
                Some(b'}') => {
                    let at = if self.pointer.is_empty() {
                        "the top-level object"
                    } else {
                        &self.pointer
                    };
                    return Err(format!("no key {key:?} in {at} (see format.records)"));
                }
                None => return Err("the file ends early (is it truncated?)".to_string()),
                Some(b) => return Err(format!("expected a key, found {:?}", b as char)),
            }
            name.clear();
            self.scan.value(Some(&mut name))?;
            let name: String = serde_json::from_slice(&name).map_err(|e| format!("invalid key: {e}"))?;
            if self.scan.skip_ws().map_err(io)? != Some(b':') {
                return Err(format!("expected ':' after key {name:?}"));
            }
            self.scan.input.consume(1);
            if name == key {
                return Ok(());
            }
            self.scan.value(None)?;
            if self.scan.skip_ws().map_err(io)? == Some(b',') {
                self.scan.input.consume(1);
            }
        }
    }

    /// Reads the next unit of the array (or the one value) into the queue.
    fn advance(&mut self) -> Result<(), FormatError> {
        let io = |e: std::io::Error| format!("cannot read: {e}");
        match self.state {
            State::Done => return Ok(()),
            State::One => self.state = State::Done,
            State::Array { first } => {
                let next = self.scan.skip_ws().map_err(io).map_err(|m| self.here().error(m))?;
                match (first, next) {
                    (_, Some(b']')) => {
                        self.state = State::Done;
                        return Ok(());
                    }
                    (true, Some(_)) => self.state = State::Array { first: false },
                    (false, Some(b',')) => self.scan.input.consume(1),
                    (_, None) => return Err(self.here().error("the file ends inside the records array (is it truncated?)")),
                    (false, Some(b)) => {
                        return Err(self
                            .here()
                            .error(format!("expected ',' or ']' before this record, found {:?}", b as char)))
                    }
                }
            }
        }
        let ws = self.scan.skip_ws().map_err(io).map_err(|m| self.here().error(m))?;
        if ws.is_none() {
            return Err(self.here().error("the file ends where a record should be (is it truncated?)"));
        }
        let (line, at) = (self.scan.line, self.here());
        self.element.clear();
        self.unit_records = 1;
        if let Err(m) = self.scan.value(Some(&mut self.element)) {
            self.broken = std::mem::take(&mut self.element);
            return Err(at.error(m));
        }
        self.index += 1;
        let unit = match parse(&self.element, line, at.clone()) {
            Ok(unit) => unit,
            Err(e) => {
                // Refused on its own; it counts as a record.
                self.picker.record += 1;
                return Err(e);
            }
        };
        let pointer = at.path.unwrap_or_default();
        self.unit_records = self.picker.pick(&unit, &self.rest, pointer, Some(line), &mut self.queue);
        Ok(())
    }
}

impl RecordReader for JsonReader {
    fn next_record(&mut self) -> Option<Result<Record, FormatError>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if matches!(self.state, State::Done) {
                return None;
            }
            if let Err(e) = self.advance() {
                if e.fatal {
                    self.state = State::Done;
                }
                return Some(Err(e));
            }
        }
    }

    fn raw(&self) -> Option<&[u8]> {
        (self.unit_records == 1 && matches!(self.state, State::Array { .. })).then_some(self.element.as_slice())
    }

    fn rest(&mut self, out: &mut dyn Write) -> std::io::Result<Unread> {
        let head = std::mem::take(&mut self.broken);
        copy_rest(&head, &mut self.scan.input, out)
    }
}

pub struct NdjsonReader {
    input: BufReader<Box<dyn Read + Send>>,
    picker: Picker,
    path: Vec<String>,
    buf: Vec<u8>,
    /// Records the line in `buf` gave; it is a record's raw form only when it gave one.
    unit_records: usize,
    line: u64,
    queue: VecDeque<Record>,
    done: bool,
}

impl NdjsonReader {
    pub fn new(spec: &FormatSpec, wanted: &[FieldRef], input: Box<dyn Read + Send>, file: &str) -> Result<Self, FormatError> {
        Ok(NdjsonReader {
            input: BufReader::with_capacity(64 << 10, input),
            picker: Picker::new(wanted, file)?,
            path: steps(spec.records.as_deref().unwrap_or("")),
            buf: Vec::new(),
            unit_records: 0,
            line: 0,
            queue: VecDeque::new(),
            done: false,
        })
    }

    /// Reads lines up to the next one that is not blank and queues its records.
    fn advance(&mut self) -> Result<(), FormatError> {
        loop {
            self.buf.clear();
            let at = self.picker.location(Some(self.line + 1), String::new());
            let n = self
                .input
                .read_until(b'\n', &mut self.buf)
                .map_err(|e| at.clone().error(format!("cannot read: {e}")))?;
            if n == 0 {
                self.done = true;
                return Ok(());
            }
            self.line += 1;
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                self.unit_records = 1;
                let unit = parse(&self.buf, self.line, at).inspect_err(|_| self.picker.record += 1)?;
                self.unit_records = self.picker.pick(&unit, &self.path, String::new(), Some(self.line), &mut self.queue);
                return Ok(());
            }
        }
    }
}

impl RecordReader for NdjsonReader {
    fn next_record(&mut self) -> Option<Result<Record, FormatError>> {
        loop {
            if let Some(r) = self.queue.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.advance() {
                self.done |= e.fatal;
                return Some(Err(e));
            }
        }
    }

    fn raw(&self) -> Option<&[u8]> {
        (self.unit_records == 1).then_some(self.buf.as_slice())
    }

    fn rest(&mut self, out: &mut dyn Write) -> std::io::Result<Unread> {
        copy_rest(&[], &mut self.input, out)
    }
}

/// Where the values of a parent or a child go, worked out from the columns it carries as a serde_json
/// object would be built from their dotted paths: keys sorted, a later value at a key replacing the
/// earlier one (and a path through a key that holds a value replacing the value with an object).
#[derive(Debug)]
enum Node {
    /// The value with this index among the parent's or child's values.
    Value(usize),
    /// Each key, written as JSON with its colon (`"phone":`), and what it holds.
    Object(Vec<(String, Node)>),
    /// The array of the children, in a nested record's parent.
    Children,
}

/// A [`Node`] being built.
enum Tree {
    Value(usize),
    Object(BTreeMap<String, Tree>),
    Children,
}

impl Node {
    /// The object of `values`; `children` is the key of the children's array in a parent.
    fn of(paths: &[Vec<String>], values: OutValues<'_>, children: Option<&str>) -> Result<Node, FormatError> {
        let mut root = BTreeMap::new();
        for (i, column) in values.columns().enumerate() {
            let path = paths.get(column).ok_or_else(|| no_column(column, paths.len()))?;
            let Some((last, parents)) = path.split_last() else {
                continue;
            };
            let mut m = &mut root;
            for step in parents {
                let slot = m.entry(step.clone()).or_insert_with(|| Tree::Object(BTreeMap::new()));
                if !matches!(slot, Tree::Object(_)) {
                    *slot = Tree::Object(BTreeMap::new());
                }
                let Tree::Object(inner) = slot else {
                    unreachable!("made an object just above")
                };
                m = inner;
            }
            m.insert(last.clone(), Tree::Value(i));
        }
        if let Some(key) = children {
            root.insert(key.to_string(), Tree::Children);
        }
        Ok(Node::from(Tree::Object(root)))
    }

    /// Writes the node with `values`; `children` writes the children's array.
    fn write<W: Write>(
        &self,
        out: &mut W,
        values: OutValues<'_>,
        children: &mut dyn FnMut(&mut W) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        match self {
            Node::Value(i) => match values.get(*i).1 {
                OutValue::Text(s) => serde_json::to_writer(&mut *out, s).map_err(std::io::Error::from),
                OutValue::Bool(b) => out.write_all(if b { b"true" } else { b"false" }),
                OutValue::Int(n) => write!(out, "{n}"),
            },
            Node::Object(entries) => {
                out.write_all(b"{")?;
                for (n, (key, node)) in entries.iter().enumerate() {
                    if n > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(key.as_bytes())?;
                    node.write(out, values, children)?;
                }
                out.write_all(b"}")
            }
            Node::Children => children(out),
        }
    }
}

impl From<Tree> for Node {
    fn from(t: Tree) -> Node {
        match t {
            Tree::Value(i) => Node::Value(i),
            Tree::Children => Node::Children,
            Tree::Object(m) => Node::Object(
                m.into_iter()
                    .map(|(k, t)| (format!("{}:", json_string(&k)), Node::from(t)))
                    .collect(),
            ),
        }
    }
}

fn json_string(s: &str) -> String {
    Value::from(s).to_string()
}

/// How records are laid out on output: the records path, whether records are nested, and where each
/// column goes in an object.
struct Layout {
    path: Vec<String>,
    /// Decided by the first record: nested when it has parent fields.
    nested: Option<bool>,
    /// Whether any column is a parent's (`../`): what a raw record written first decides by.
    has_parents: bool,
    /// Each column's dotted path, without `../`.
    paths: Vec<Vec<String>>,
    parents: Layouts<Node>,
    children: Layouts<Node>,
}

impl Layout {
    fn new(spec: &FormatSpec, columns: &[FieldRef]) -> Self {
        Layout {
            path: steps(spec.records.as_deref().unwrap_or("")),
            nested: None,
            has_parents: columns.iter().any(FieldRef::is_parent),
            paths: columns.iter().map(|c| steps(&c.without_parent().to_string())).collect(),
            parents: Layouts::new(),
            children: Layouts::new(),
        }
    }

    /// Decides from the first record whether records are nested; true when it just did.
    fn decide(&mut self, r: &OutRecord) -> Result<bool, FormatError> {
        if self.nested.is_some() {
            return Ok(false);
        }
        let nested = !r.parent().is_empty();
        if nested && self.path.is_empty() {
            return Err(write_error(
                "records with parent fields need format.records to name the inner array, such as customers.consents",
            ));
        }
        self.nested = Some(nested);
        Ok(true)
    }

    /// The path of the outer array: the records path, less its last step when nested.
    fn outer(&self) -> &[String] {
        match self.nested {
            Some(true) => self.path.split_last().map_or(&[], |(_, outer)| outer),
            _ => &self.path,
        }
    }

    /// The objects opened around the outer array or a line (`{"data":{"consents":`), and how many.
    fn open_outer(&self) -> (String, usize) {
        let keys: String = self.outer().iter().map(|step| format!("{{{}:", json_string(step))).collect();
        (keys, self.outer().len())
    }

    /// Writes the units of one record: its children (flat), or one parent holding its children
    /// (nested); `before` is called before each, `after` written after each.
    fn write_units<W: Write>(
        &mut self,
        r: &OutRecord,
        out: &mut W,
        mut before: impl FnMut(&mut W) -> std::io::Result<()>,
        after: &[u8],
    ) -> Result<(), FormatError> {
        let nested = self.nested == Some(true);
        let Layout {
            path,
            paths,
            parents,
            children,
            ..
        } = self;
        if !nested {
            for child in r.children() {
                let node = children.get(child, || Node::of(paths, child, None))?;
                before(out).map_err(write_error)?;
                node.write(out, child, &mut |_| Ok(())).map_err(write_error)?;
                out.write_all(after).map_err(write_error)?;
            }
            return Ok(());
        }
        let inner = path.last().expect("decide refuses nested records without a records path");
        let parent = r.parent();
        let node = parents.get(parent, || Node::of(paths, parent, Some(inner)))?;
        // A child's layout is made while the parent is being written: a problem making it is kept here.
        let mut failed = None;
        let mut array = |out: &mut W| {
            out.write_all(b"[")?;
            for (n, child) in r.children().enumerate() {
                if n > 0 {
                    out.write_all(b",")?;
                }
                match children.get(child, || Node::of(paths, child, None)) {
                    Ok(node) => node.write(out, child, &mut |_| Ok(()))?,
                    Err(e) => return Err(std::io::Error::other(failed.insert(e).message.clone())),
                }
            }
            out.write_all(b"]")
        };
        before(out).map_err(write_error)?;
        let written = node.write(out, parent, &mut array);
        written.map_err(|e| failed.take().unwrap_or_else(|| write_error(e)))?;
        out.write_all(after).map_err(write_error)
    }
}

pub struct JsonWriter<'w> {
    out: BufWriter<Box<dyn Write + 'w>>,
    layout: Layout,
    written: usize,
}

impl<'w> JsonWriter<'w> {
    pub fn new(spec: &FormatSpec, columns: &[FieldRef], out: Box<dyn Write + 'w>) -> Result<Self, FormatError> {
        Ok(JsonWriter {
            out: BufWriter::new(out),
            layout: Layout::new(spec, columns),
            written: 0,
        })
    }

    /// Opens the objects on the outer path and the array.
    fn start(&mut self) -> Result<(), FormatError> {
        let (open, _) = self.layout.open_outer();
        self.out.write_all(open.as_bytes()).map_err(write_error)?;
        self.out.write_all(b"[").map_err(write_error)
    }
}

impl<'w> RecordWriter for JsonWriter<'w> {
    fn write(&mut self, record: &OutRecord) -> Result<(), FormatError> {
        if self.layout.decide(record)? {
            self.start()?;
        }
        let JsonWriter { out, layout, written } = self;
        let before = |out: &mut BufWriter<Box<dyn Write + 'w>>| {
            *written += 1;
            out.write_all(if *written == 1 { b"\n" } else { b",\n" })
        };
        layout.write_units(record, out, before, b"")
    }

    fn write_raw(&mut self, raw: &[u8]) -> Result<(), FormatError> {
        if self.layout.nested.is_none() {
            self.layout.nested = Some(self.layout.has_parents);
            self.start()?;
        }
        self.written += 1;
        self.out
            .write_all(if self.written == 1 { b"\n" } else { b",\n" })
            .and_then(|()| self.out.write_all(raw.trim_ascii()))
            .map_err(write_error)
    }

    fn finish(mut self: Box<Self>) -> Result<(), FormatError> {
        if self.layout.nested.is_none() {
            self.layout.nested = Some(false);
            self.start()?;
        }
        let close = "}".repeat(self.layout.outer().len());
        writeln!(self.out, "\n]{close}").map_err(write_error)?;
        self.out.flush().map_err(write_error)
    }
}

pub struct NdjsonWriter<'w> {
    out: BufWriter<Box<dyn Write + 'w>>,
    layout: Layout,
    /// What opens each line, and what closes it (with the line break).
    around: (String, Vec<u8>),
}

impl<'w> NdjsonWriter<'w> {
    pub fn new(spec: &FormatSpec, columns: &[FieldRef], out: Box<dyn Write + 'w>) -> Result<Self, FormatError> {
        Ok(NdjsonWriter {
            out: BufWriter::new(out),
            layout: Layout::new(spec, columns),
            around: (String::new(), Vec::new()),
        })
    }
}

impl RecordWriter for NdjsonWriter<'_> {
    fn write(&mut self, record: &OutRecord) -> Result<(), FormatError> {
        if self.layout.decide(record)? {
            let (open, n) = self.layout.open_outer();
            let mut close = vec![b'}'; n];
            close.push(b'\n');
            self.around = (open, close);
        }
        let NdjsonWriter { out, layout, around } = self;
        layout.write_units(record, out, |out| out.write_all(around.0.as_bytes()), &around.1)
    }

    fn write_raw(&mut self, raw: &[u8]) -> Result<(), FormatError> {
        self.out.write_all(raw).map_err(write_error)?;
        if !raw.ends_with(b"\n") {
            self.out.write_all(b"\n").map_err(write_error)?;
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

    fn json(records: &str) -> FormatSpec {
        let mut s = spec(FormatKind::Json);
        s.records = (!records.is_empty()).then(|| records.to_string());
        s
    }

    #[test]
    fn reads_the_benchmark_array() {
        let text = "[{\"phone\": \"+49151\", \"consent\": false, \"n\": 12, \"x\": null},\n {\"phone\": \"+49171\", \"consent\": true}]";
        let records = read_all(&json(""), &names(&["phone", "consent", "n", "x"]), text).unwrap();
        assert_eq!(records[0].values, row(&["+49151", "false", "12", ""]));
        assert_eq!(records[1].values, row(&["+49171", "true", "", ""]));
        assert_eq!(records[1].location.to_string(), "in.txt:2 (record 2, [2])");
    }

    #[test]
    fn records_path_nested_fields_and_parents() {
        let text = r#"{"meta": {"skip": [1, "]", {"a": "}"}]}, "data": {"customers": [
            {"phone": "1", "consents": [{"usage": "a", "c": {"v": true}}, {"usage": "b"}]},
            {"phone": "2", "consents": {"usage": "c", "c": [1]}},
            {"phone": "3"}
        ]}}"#;
        let records = read_all(&json("data.customers.consents"), &names(&["../phone", "usage", "c.v", "c"]), text).unwrap();
        let got: Vec<_> = records.iter().map(|r| r.values.clone()).collect();
        assert_eq!(
            got,
            [
                row(&["1", "a", "true", "{\"v\":true}"]),
                row(&["1", "b", "", ""]),
                row(&["2", "c", "", "[1]"])
            ]
        );
        assert_eq!(
            records[1].location.to_string(),
            "in.txt:2 (record 2, data.customers[1].consents[2])"
        );
        assert_eq!(records[2].location.line, Some(3));
    }

    #[test]
    fn a_single_object_is_one_record() {
        assert_eq!(values(&json("data"), &["a"], r#"{"data": {"a": "x"}}"#), [row(&["x"])]);
        assert_eq!(values(&json(""), &["a"], r#"{"a": 1}"#), [row(&["1"])]);
    }

    #[test]
    fn empty_input_and_empty_array() {
        assert!(values(&json(""), &["a"], "").is_empty());
        assert!(values(&json(""), &["a"], " [ ] ").is_empty());
        assert!(values(&json("data"), &["a"], "\u{feff}{\"data\": []}").is_empty());
    }

    #[test]
    fn broken_json_says_where() {
        let e = error(&json(""), &["a"], "[{\"a\": 1},\n{\"a\": 2},\n{\"a\": 3");
        assert_eq!(e, "in.txt:3 (record 3, [3]): the file ends inside this value (is it truncated?)");
        let e = error(&json(""), &["a"], "[{\"a\": 1}");
        assert_eq!(
            e,
            "in.txt:1 (record 2, [2]): the file ends inside the records array (is it truncated?)"
        );
        let e = error(&json(""), &["a"], "[{\"a\": 1}\n{\"a\": 2}]");
        assert!(e.starts_with("in.txt:2 (record 2, [2]): expected ',' or ']'"), "{e}");
        let e = error(&json(""), &["a"], "[{\"a\": 1},\n{\"a\":\n tru}]");
        assert_eq!(e, "in.txt:3 (record 2, [2]): invalid JSON: expected ident (column 5)");
        let e = error(&json("data.items"), &["a"], "{\"data\": {\"other\": []}}");
        assert_eq!(e, "in.txt:1 (record 1, data): no key \"items\" in data (see format.records)");
        let e = error(&json(""), &["a"], b"[{\"a\": \"\xE4\"}]".to_vec());
        assert!(e.contains("invalid JSON"), "{e}");
    }

    #[test]
    fn wrong_types_and_garbage() {
        // A scalar where records should be is one record without the fields; the mapping refuses it.
        assert_eq!(values(&json("data"), &["a"], r#"{"data": 5}"#), [row(&[""])]);
        assert_eq!(values(&json(""), &["a", "."], r#"[1, "x"]"#), [row(&["", "1"]), row(&["", "x"])]);
        let garbage: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert!(read_all(&json(""), &names(&["a"]), garbage.clone()).is_err());
        assert!(read_all(&spec(FormatKind::Ndjson), &names(&["a"]), garbage).is_err());
    }

    #[test]
    fn ndjson_lines_and_records_path() {
        let nd = spec(FormatKind::Ndjson);
        let text = "{\"a\": 1}\r\n\n  \n{\"a\": \"x\"}\n";
        let records = read_all(&nd, &names(&["a"]), text).unwrap();
        assert_eq!(records[1].values, row(&["x"]));
        assert_eq!(records[1].location.to_string(), "in.txt:4 (record 2)");
        let mut nested = spec(FormatKind::Ndjson);
        nested.records = Some("consents".into());
        let text = "{\"p\": 1, \"consents\": [{\"u\": \"a\"}, {\"u\": \"b\"}]}\n{\"p\": 2, \"consents\": []}\n";
        assert_eq!(values(&nested, &["../p", "u"], text), [row(&["1", "a"]), row(&["1", "b"])]);
        let e = error(&nd, &["a"], "{\"a\": 1}\n{\"a\": }\n");
        assert_eq!(e, "in.txt:2 (record 2): invalid JSON: expected value (column 7)");
    }

    #[test]
    fn each_combination_of_columns_is_laid_out_on_its_own() {
        // `contact` holding a value and `contact.phone` an object: the later value wins, as when
        // serde_json builds the object.
        let columns = names(&["contact.phone", "contact", "z"]);
        let (phone, contact) = ((0, OutValue::Text("+49")), (1, OutValue::Text("x")));
        let records = [
            out_record(&[], &[&[phone, contact]]),
            out_record(&[], &[&[phone, (2, OutValue::Int(1))]]),
            out_record(&[], &[&[contact, phone]]),
            out_record(&[], &[&[]]),
            out_record(&[], &[&[phone, contact]]),
        ];
        let out = write_all(&spec(FormatKind::Ndjson), &columns, &records);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"contact\":\"x\"}\n{\"contact\":{\"phone\":\"+49\"},\"z\":1}\n{\"contact\":{\"phone\":\"+49\"}}\n{}\n{\"contact\":\"x\"}\n"
        );
        let mut w = open_writer(&spec(FormatKind::Json), &columns, None, Box::new(std::io::sink())).unwrap();
        let e = w.write(&out_record(&[], &[&[(3, OutValue::Int(1))]])).unwrap_err();
        assert_eq!(e.to_string(), "-: cannot write: a value for column 3, but the writer has 3 columns");
        let mut w = open_writer(&json("a.b"), &names(&["../p", "u"]), None, Box::new(std::io::sink())).unwrap();
        let e = w
            .write(&out_record(&[(0, OutValue::Int(1))], &[&[(2, OutValue::Int(1))]]))
            .unwrap_err();
        assert_eq!(e.to_string(), "-: cannot write: a value for column 2, but the writer has 2 columns");
    }

    #[test]
    fn writes_nested_objects_and_layouts() {
        let columns = names(&["../phone", "usage", "c.v", "n"]);
        let children: [&[(usize, OutValue)]; 2] = [
            &[(1, OutValue::Text("a")), (2, OutValue::Bool(true))],
            &[(1, OutValue::Text("b")), (3, OutValue::Int(3))],
        ];
        let rec = out_record(&[(0, OutValue::Text("+49"))], &children);
        let out = write_all(&json("customers.consents"), &columns, std::slice::from_ref(&rec));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"customers\":[\n{\"consents\":[{\"c\":{\"v\":true},\"usage\":\"a\"},{\"n\":3,\"usage\":\"b\"}],\"phone\":\"+49\"}\n]}\n"
        );
        let flat = out_record(&[], &children);
        let out = write_all(&json("data.consents"), &columns, std::slice::from_ref(&flat));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"data\":{\"consents\":[\n{\"c\":{\"v\":true},\"usage\":\"a\"},\n{\"n\":3,\"usage\":\"b\"}\n]}}\n"
        );
        assert_eq!(String::from_utf8(write_all(&json(""), &[], &[])).unwrap(), "[\n]\n");
        let mut nd = spec(FormatKind::Ndjson);
        nd.records = Some("consents".into());
        let out = write_all(&nd, &columns, &[rec]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"consents\":[{\"c\":{\"v\":true},\"usage\":\"a\"},{\"n\":3,\"usage\":\"b\"}],\"phone\":\"+49\"}\n"
        );
    }
}
