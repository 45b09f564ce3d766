//! Helpers shared by the format tests, and the round-trip properties of every format.
pub use super::keep::Unread;
use super::*;

pub fn spec(kind: FormatKind) -> FormatSpec {
    FormatSpec {
        kind,
        encoding: Encoding::Utf8,
        bom: false,
        delimiter: None,
        quote: None,
        header: None,
        flexible: None,
        line_ending: None,
        records: None,
        record: None,
    }
}

pub fn names(names: &[&str]) -> Vec<FieldRef> {
    names.iter().map(|n| FieldRef::Name(n.to_string())).collect()
}

/// All records of `bytes`, or the first error (from opening or reading).
pub fn read_all(spec: &FormatSpec, wanted: &[FieldRef], bytes: impl Into<Vec<u8>>) -> Result<Vec<Record>, FormatError> {
    let mut reader = open_reader(spec, wanted, &[], Box::new(std::io::Cursor::new(bytes.into())), "in.txt")?;
    std::iter::from_fn(|| reader.next_record()).collect()
}

/// What reading `bytes` to its end gives: each record or refusal with its raw bytes (as the rejects
/// would get them), and after a fatal error the unread rest and how much it was.
/// A record or refusal, and its raw bytes.
pub type Item = (Result<Record, FormatError>, Option<Vec<u8>>);

pub struct ReadThrough {
    pub items: Vec<Item>,
    pub rest: Option<(Vec<u8>, Unread)>,
}

pub fn read_through(spec: &FormatSpec, wanted: &[&str], bytes: impl Into<Vec<u8>>) -> ReadThrough {
    let mut reader = open_reader(spec, &names(wanted), &[], Box::new(std::io::Cursor::new(bytes.into())), "in.txt").unwrap();
    let mut out = ReadThrough {
        items: Vec::new(),
        rest: None,
    };
    while let Some(item) = reader.next_record() {
        let fatal = item.as_ref().is_err_and(|e| e.fatal);
        out.items.push((item, reader.raw().map(<[u8]>::to_vec)));
        if fatal {
            let mut rest = Vec::new();
            let unread = reader.rest(&mut rest).unwrap();
            out.rest = Some((rest, unread));
            assert!(reader.next_record().is_none(), "nothing is read after a fatal error");
            break;
        }
    }
    out
}

impl ReadThrough {
    /// `Ok(first value)` or `Err(message)` per item.
    pub fn summary(&self) -> Vec<Result<String, String>> {
        self.items
            .iter()
            .map(|(r, _)| match r {
                Ok(r) => Ok(r.values[0].clone().unwrap_or_default()),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    }
}

/// The values of all records, panicking on any error.
pub fn values(spec: &FormatSpec, wanted: &[&str], bytes: impl Into<Vec<u8>>) -> Vec<Vec<Option<String>>> {
    match read_all(spec, &names(wanted), bytes) {
        Ok(records) => records.into_iter().map(|r| r.values).collect(),
        Err(e) => panic!("{e}"),
    }
}

/// The error message reading `bytes` gives, panicking when there is none.
pub fn error(spec: &FormatSpec, wanted: &[&str], bytes: impl Into<Vec<u8>>) -> String {
    match read_all(spec, &names(wanted), bytes) {
        Ok(r) => panic!("expected an error, got {r:?}"),
        Err(e) => e.to_string(),
    }
}

pub fn row(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| (!v.is_empty()).then(|| v.to_string())).collect()
}

/// A record to write: parent values and children's values, each value with its column's index.
pub fn out_record(parent: &[(usize, OutValue)], children: &[&[(usize, OutValue)]]) -> OutRecord {
    let mut r = OutRecord::default();
    for &(column, value) in parent {
        r.push(Part::Parent, column, value);
    }
    for child in children {
        r.start_child();
        for &(column, value) in *child {
            r.push(Part::Child, column, value);
        }
    }
    r
}

/// Writes `records` with `spec`, giving the bytes.
pub fn write_all(spec: &FormatSpec, columns: &[FieldRef], records: &[OutRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = open_writer(spec, columns, None, Box::new(&mut out)).expect("open writer");
    for r in records {
        w.write(r).expect("write");
    }
    w.finish().expect("finish");
    out
}

#[test]
fn spec_problems_name_their_keys() {
    let mut s = spec(FormatKind::Xml);
    s.delimiter = Some(';');
    s.records = Some("a".into());
    s.bom = true;
    s.encoding = Encoding::Windows1252;
    let p = s.problems();
    assert_eq!(
        p,
        [
            "format.delimiter: only for csv and tsv",
            "format.records: only for json and ndjson (xml uses format.record)",
            "format.record: required for xml, such as \"consents/consent\"",
            "format.bom: windows-1252 has no byte-order mark",
        ]
    );
    let mut s = spec(FormatKind::Csv);
    s.delimiter = Some('ä');
    s.quote = Some('ä');
    s.record = Some("a/b".into());
    assert_eq!(s.problems().len(), 4, "{:?}", s.problems());
    s.delimiter = Some('"');
    s.quote = None;
    assert_eq!(
        s.problems(),
        [
            "format.quote: must differ from format.delimiter",
            "format.record: only for xml (json uses format.records)"
        ]
    );
    let mut s = spec(FormatKind::Json);
    s.records = Some("data..x".into());
    assert_eq!(s.problems().len(), 1);
    assert!(spec(FormatKind::Tsv).problems().is_empty());
    let err = read_all(&s, &[], "[]").unwrap_err().to_string();
    assert_eq!(
        err,
        "in.txt: bad format spec: format.records: \"data..x\" has an empty step; write keys as a.b.c"
    );
}

mod round_trip {
    use super::*;
    use proptest::prelude::*;

    const ENCODINGS: [Encoding; 5] = [
        Encoding::Utf8,
        Encoding::Windows1252,
        Encoding::Utf16,
        Encoding::Utf16Le,
        Encoding::Utf16Be,
    ];

    /// A value to write, owned (an [`OutValue`] borrows its text).
    #[derive(Debug, Clone)]
    enum Value {
        Text(String),
        Bool(bool),
        Int(i64),
    }

    impl Value {
        fn out(&self) -> OutValue<'_> {
            match self {
                Value::Text(s) => OutValue::Text(s),
                Value::Bool(b) => OutValue::Bool(*b),
                Value::Int(i) => OutValue::Int(*i),
            }
        }
    }

    /// Awkward values: delimiters, quotes, line breaks, markup, spaces at the ends, non-ASCII.
    fn value(cp1252: bool) -> BoxedStrategy<Value> {
        let text = if cp1252 {
            "[a-z0-9 ,;\t\n\r\"'<>&/.äé€]{0,10}"
        } else {
            "[\\PC\t\n\r ,;\"'<>&]{0,10}"
        };
        prop_oneof![
            4 => text.prop_map(Value::Text),
            1 => any::<bool>().prop_map(Value::Bool),
            1 => any::<i64>().prop_map(Value::Int),
        ]
        .boxed()
    }

    /// Records of `parents` parent values (none: flat) holding 1-3 children of `fields` values.
    fn records(parents: usize, fields: usize, cp1252: bool) -> impl Strategy<Value = Recs> {
        let child = prop::collection::vec(value(cp1252), fields);
        let children = prop::collection::vec(child, if parents == 0 { 1..2 } else { 1..4 });
        prop::collection::vec((prop::collection::vec(value(cp1252), parents), children), 0..6)
    }

    type Recs = Vec<(Vec<Value>, Vec<Vec<Value>>)>;

    /// An encoding (index into `ENCODINGS`) and records it can represent.
    fn encoded(parents: usize, fields: usize) -> impl Strategy<Value = (usize, Recs)> {
        (0..5usize).prop_flat_map(move |e| (Just(e), records(parents, fields, e == 1)))
    }

    /// Writes the records, reads them back, and compares the values.
    fn check(spec: &FormatSpec, parent_fields: &[&str], fields: &[&str], records: &Recs) -> Result<(), TestCaseError> {
        // Columns as a mapping reads them: parent fields first, with their `../`.
        let columns: Vec<FieldRef> = parent_fields
            .iter()
            .map(|p| FieldRef::Name(format!("../{p}")))
            .chain(fields.iter().map(|f| FieldRef::Name(f.to_string())))
            .collect();
        let out: Vec<OutRecord> = records
            .iter()
            .map(|(parent, children)| {
                let mut r = OutRecord::default();
                for (column, v) in parent.iter().enumerate() {
                    r.push(Part::Parent, column, v.out());
                }
                for child in children {
                    r.start_child();
                    for (k, v) in child.iter().enumerate() {
                        r.push(Part::Child, parent_fields.len() + k, v.out());
                    }
                }
                r
            })
            .collect();
        let bytes = write_all(spec, &columns, &out);
        let expected: Vec<Vec<Option<String>>> = records
            .iter()
            .flat_map(|(parent, children)| {
                children
                    .iter()
                    .map(move |c| parent.iter().chain(c).map(|v| non_empty(&v.out().as_text())).collect())
            })
            .collect();
        let got = read_all(spec, &columns, bytes.clone()).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        let got: Vec<_> = got.into_iter().map(|r| r.values).collect();
        prop_assert_eq!(got, expected, "written: {}", String::from_utf8_lossy(&bytes));
        Ok(())
    }

    fn with_encoding(kind: FormatKind, e: usize, bom: bool) -> FormatSpec {
        let mut s = spec(kind);
        s.encoding = ENCODINGS[e];
        s.bom = bom && s.encoding != Encoding::Windows1252;
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn csv_and_tsv(e in 0..5usize, bom: bool, tsv: bool, crlf: bool, rs in records(0, 3, true)) {
            let mut s = with_encoding(if tsv { FormatKind::Tsv } else { FormatKind::Csv }, e, bom);
            s.line_ending = crlf.then_some(LineEnding::Crlf);
            check(&s, &[], &["phone", "a b", "Usage"], &rs)?;
        }

        #[test]
        fn csv_unicode(rs in records(0, 2, false)) {
            check(&spec(FormatKind::Csv), &[], &["phone", "usage"], &rs)?;
        }

        #[test]
        fn json_flat((e, rs) in encoded(0, 3), bom: bool, path in "|items|data\\.consents") {
            let mut s = with_encoding(FormatKind::Json, e, bom);
            s.records = Some(path);
            check(&s, &[], &["phone", "contact.usage", "contact.value"], &rs)?;
        }

        #[test]
        fn json_nested((e, rs) in encoded(2, 2), path in "consents|customers\\.consents") {
            let mut s = with_encoding(FormatKind::Json, e, false);
            s.records = Some(path);
            check(&s, &["phone", "info.name"], &["usage", "value"], &rs)?;
        }

        #[test]
        fn ndjson((e, rs) in encoded(0, 2), path in "|data\\.consents") {
            let mut s = with_encoding(FormatKind::Ndjson, e, false);
            s.records = Some(path);
            check(&s, &[], &["phone", "a.b"], &rs)?;
        }

        #[test]
        fn ndjson_nested((e, rs) in encoded(1, 2)) {
            let mut s = with_encoding(FormatKind::Ndjson, e, false);
            s.records = Some("consents".into());
            check(&s, &["phone"], &["usage", "value"], &rs)?;
        }

        #[test]
        fn xml_flat((e, rs) in encoded(0, 4), bom: bool) {
            let mut s = with_encoding(FormatKind::Xml, e, bom);
            s.record = Some("consents/consent".into());
            check(&s, &[], &["phone", "@type", "contact/usage", "contact/@id"], &rs)?;
        }

        #[test]
        fn xml_nested((e, rs) in encoded(2, 2)) {
            let mut s = with_encoding(FormatKind::Xml, e, false);
            s.record = Some("root/subjects/subject/consent".into());
            check(&s, &["@id", "phone"], &[".", "@usage"], &rs)?;
        }
    }
}

/// Reads 1M generated rows as CSV, JSON, NDJSON and XML and prints the time each takes. Run with
/// `cargo test --release --lib formats::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore = "needs python3 and /work/shared/bench/gen_consents.py; slow in debug builds"]
fn throughput() {
    let rows = 1_000_000;
    for (kind, arg) in [
        (FormatKind::Csv, "csv"),
        (FormatKind::Json, "json"),
        (FormatKind::Ndjson, "ndjson"),
        (FormatKind::Xml, "xml"),
    ] {
        let generated = std::process::Command::new("python3")
            .args(["/work/shared/bench/gen_consents.py", &rows.to_string(), arg])
            .output()
            .expect("run gen_consents.py");
        let mut s = spec(kind);
        let wanted = match kind {
            FormatKind::Xml => {
                s.record = Some("consents/consent".into());
                names(&["phone", "channel", "value", "created", "updated"])
            }
            _ => names(&["phone", "channel", "consent", "created_at", "updated_at"]),
        };
        let size = generated.stdout.len();
        let start = std::time::Instant::now();
        let mut reader = open_reader(&s, &wanted, &[], Box::new(std::io::Cursor::new(generated.stdout)), arg).expect("open");
        let mut n = 0;
        while let Some(r) = reader.next_record() {
            r.expect("record");
            n += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(n, rows);
        println!(
            "{arg}: {n} records, {} MB in {secs:.2} s ({:.0} MB/s)",
            size >> 20,
            size as f64 / secs / 1e6
        );
    }
}
