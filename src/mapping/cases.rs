//! The test cases a mapping carries (`[[tests]]`): each input is read with the mapping's format and
//! mapped, and the changes and refusals are compared with what the case expects.

use super::spec::TestCase;
use super::*;
use crate::domain::Op;
use crate::formats::{open_reader, Encoding};
use std::io::Cursor;

#[derive(Debug, Clone)]
pub struct CaseOutcome {
    pub name: String,
    pub passed: bool,
    /// What differed, one line each; empty when the case passed.
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct TestReport {
    pub cases: Vec<CaseOutcome>,
}

impl TestReport {
    pub fn passed(&self) -> bool {
        self.cases.iter().all(|c| c.passed)
    }
}

pub fn run(m: &Mapping, phones: &PhoneParser) -> TestReport {
    let phones = &m.phones(phones);
    // Test inputs are TOML text, so they are read as UTF-8 whatever encoding the files have.
    let format = FormatSpec {
        encoding: Encoding::default(),
        ..m.spec.format.clone()
    };
    let wanted = m.wanted_fields();
    let cases = m
        .spec
        .tests
        .iter()
        .map(|case| {
            let input = Box::new(Cursor::new(case.input.clone().into_bytes()));
            let records = open_reader(&format, &wanted, &m.optional_fields(), input, &format!("<test {}>", case.name))
                .and_then(|mut reader| std::iter::from_fn(|| reader.next_record()).collect::<Result<Vec<_>, _>>());
            match records {
                Ok(records) => judge(m, case, &records, phones),
                Err(e) => CaseOutcome {
                    name: case.name.clone(),
                    passed: false,
                    detail: format!("the input cannot be read: {e}"),
                },
            }
        })
        .collect();
    TestReport { cases }
}

/// Maps `records` and compares the outcome with the case.
fn judge(m: &Mapping, case: &TestCase, records: &[Record], phones: &PhoneParser) -> CaseOutcome {
    let mut got = Vec::new();
    let (mut refused, mut skipped) = (Vec::new(), Vec::new());
    for r in records {
        match m.to_incoming(r, phones, &mut got) {
            Err(e) if e.skipped => skipped.push(e),
            Err(e) => refused.push(e),
            Ok(()) => {}
        }
    }
    let mut detail = Vec::new();
    if got != case.expect {
        let missing: Vec<_> = case.expect.iter().filter(|e| !got.contains(e)).collect();
        let extra: Vec<_> = got.iter().filter(|g| !case.expect.contains(g)).collect();
        detail.extend(missing.iter().map(|e| format!("expected, not produced: {}", show(e))));
        detail.extend(extra.iter().map(|g| format!("produced, not expected: {}", show(g))));
        if missing.is_empty() && extra.is_empty() {
            detail.push("the changes came in another order (or another number of times) than expected".into());
        }
    }
    let key = |e: &RecordError| e.field.split(' ').next().unwrap_or_default().to_string();
    for (record, field) in &case.rejects {
        if !refused.iter().any(|e| e.location.record == *record && key(e) == *field) {
            detail.push(format!("expected record {record} to be refused for {field}, it was not"));
        }
    }
    for e in refused.iter().filter(|e| !case.rejects.contains(&(e.location.record, key(e)))) {
        detail.push(format!("refused, not expected: {e}"));
    }
    for (record, field) in &case.skipped {
        if !skipped.iter().any(|e| e.location.record == *record && key(e) == *field) {
            detail.push(format!("expected record {record} to be skipped for {field}, it was not"));
        }
    }
    for e in skipped.iter().filter(|e| !case.skipped.contains(&(e.location.record, key(e)))) {
        detail.push(format!("skipped, not expected: {e}"));
    }
    CaseOutcome {
        name: case.name.clone(),
        passed: detail.is_empty(),
        detail: detail.join("\n"),
    }
}

/// A change in the words of a test case: `+4915112345678 whatsapp consent=true updated=...`.
fn show(i: &Incoming) -> String {
    let time = |name: &str, t: Option<crate::domain::Timestamp>| t.map(|t| format!(" {name}={t}")).unwrap_or_default();
    let what = match i.op {
        Op::Set {
            consent,
            created_at,
            updated_at,
        } => format!("consent={consent}{}{}", time("created", created_at), time("updated", updated_at)),
        Op::Delete { at } => format!("delete{}", time("at", at)),
        Op::Toggle => "toggle".into(),
    };
    format!("{} {} {what}", i.number, i.usage)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{mapping, record};
    use super::*;

    const TEXT: &str = r#"
        [format]
        type = "csv"
        [fields]
        number = { column = "phone" }
        usage = { column = "channel" }
        consent = { column = "consent" }
        [[tests]]
        name = "two records, one refused"
        input = "phone,channel,consent\n+4915112345678,whatsapp,true\n+49 x,whatsapp,true\n"
        expect = [{ number = "+4915112345678", usage = "whatsapp", consent = true }]
        rejects = [{ record = 2, field = "number" }]
    "#;

    #[test]
    fn a_case_passes_when_changes_and_refusals_match() {
        let m = mapping(TEXT);
        let records = [
            record(&m, 1, &[("phone", "+4915112345678"), ("channel", "whatsapp"), ("consent", "true")]),
            record(&m, 2, &[("phone", "+49 x"), ("channel", "whatsapp"), ("consent", "true")]),
        ];
        let outcome = judge(&m, &m.spec.tests[0], &records, &PhoneParser::default());
        assert!(outcome.passed, "{}", outcome.detail);
    }

    #[test]
    fn a_failing_case_shows_the_difference() {
        let m = mapping(TEXT);
        let records = [
            record(&m, 1, &[("phone", "+4915112345678"), ("channel", "whatsapp"), ("consent", "no")]),
            record(&m, 2, &[("phone", "+4915112345679"), ("channel", "sms"), ("consent", "true")]),
        ];
        let outcome = judge(&m, &m.spec.tests[0], &records, &PhoneParser::default());
        assert!(!outcome.passed);
        assert_eq!(
            outcome.detail.lines().collect::<Vec<_>>(),
            [
                "expected, not produced: +4915112345678 whatsapp consent=true",
                "produced, not expected: +4915112345678 whatsapp consent=false",
                "expected record 2 to be refused for number, it was not",
                "refused, not expected: in.csv:3 (record 2): field usage (column channel) = \"sms\": not one of the accepted values (call_recording: call_recording; whatsapp: whatsapp)",
            ]
        );
    }
}
