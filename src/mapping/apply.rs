//! Records -> incoming changes, consents -> records, as a checked [`MappingSpec`] says.

use super::spec::{From, Slot, SlotUsage, Source, TimeFormat, TimeKind, TimeSource};
use super::*;
use crate::domain::{Op, PhoneNumber, Region, Timestamp};
use crate::formats::{FormatKind, OutValue, Part};
use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone};
use std::fmt::Write;

pub fn wanted_fields(m: &Mapping) -> Vec<FieldRef> {
    m.spec.columns.clone()
}

/// The delete marker's column, and fallbacks (a field's first column must be there, the others may not).
pub fn optional_fields(m: &Mapping) -> Vec<FieldRef> {
    let mut optional: Vec<FieldRef> = m.spec.columns[m.spec.written..].to_vec();
    if let Some(From::Field { at, .. }) = m.spec.delete.as_ref().map(|d| &d.source.from) {
        optional.push(at.clone());
    }
    optional
}

/// What the mapping can write: the consent value when it is a constant (an opt-out list writes only
/// denied consents), and the usages it has a place for (a constant usage, or the `[[wide]]` entries).
pub fn expressible(m: &Mapping) -> (Option<bool>, Vec<crate::domain::Usage>) {
    let s = &m.spec;
    fn constant(src: &Source) -> Option<&str> {
        match &src.from {
            From::Const(v) => Some(v),
            From::Field { .. } => None,
        }
    }
    let consent = match s.slots.as_slice() {
        [slot] => constant(&slot.consent).and_then(|v| s.consent_values.lookup(v)),
        _ => None,
    };
    let mut usages: Vec<crate::domain::Usage> = Vec::new();
    for slot in &s.slots {
        match &slot.usage {
            SlotUsage::Fixed(u) => usages.push(*u),
            SlotUsage::Read(src) => match constant(src).and_then(|v| s.usage_values.lookup(v)) {
                Some(u) => usages.push(u),
                None => usages.extend(crate::domain::Usage::ALL),
            },
        }
    }
    usages.sort_by_key(|u| u.code());
    usages.dedup();
    (consent, usages)
}

pub fn groups_by_number(m: &Mapping) -> bool {
    m.spec.wide || m.spec.columns.iter().any(FieldRef::is_parent)
}

pub fn out_columns(m: &Mapping) -> Vec<FieldRef> {
    m.spec.columns[..m.spec.written].to_vec()
}

impl Source {
    /// The value in `record`, `None` when absent or blank.
    #[inline]
    fn get<'r>(&'r self, record: &'r Record) -> Option<&'r str> {
        let value = |i: usize| record.values.get(i)?.as_deref().filter(|v| !v.trim().is_empty());
        match &self.from {
            From::Field { index, fallbacks, .. } if fallbacks.is_empty() => value(*index),
            From::Field { index, fallbacks, .. } => value(*index).or_else(|| fallbacks.iter().find_map(|(_, i)| value(*i))),
            From::Const(v) => (!v.trim().is_empty()).then_some(v.as_str()),
        }
    }

    fn error(&self, record: &Record, value: &str, reason: String) -> RecordError {
        let hint = if value.contains(['\n', '\r']) {
            " (the value spans lines: a quote may be unbalanced)"
        } else {
            ""
        };
        RecordError {
            location: record.location.clone(),
            field: self.describe(),
            value: value.to_string(),
            reason: format!("{reason}{hint}"),
            skipped: false,
        }
    }

    /// The record is not a consent of ours: `value` is listed under `skip` in `[values.<key>]`.
    fn skip(&self, record: &Record, value: &str) -> RecordError {
        RecordError {
            skipped: true,
            ..self.error(
                record,
                value,
                format!("listed under skip in [values.{}]: not a consent of ours", self.key),
            )
        }
    }

    fn required<'r>(&'r self, record: &'r Record) -> Result<&'r str, RecordError> {
        self.get(record).ok_or_else(|| self.error(record, "", "missing".into()))
    }
}

impl TimeFormat {
    /// Reads a time as the mapping writes it.
    pub(super) fn parse(&self, s: &str) -> Result<Timestamp, String> {
        let s = s.trim();
        let epoch = |scale: u32| {
            epoch_millis(s, scale)
                .map(Timestamp::from_millis)
                .ok_or_else(|| "expected a number, such as 1704153600 or 1704153600.5".to_string())
        };
        let local = |naive: NaiveDateTime| match self.tz.from_local_datetime(&naive) {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(Timestamp::from_datetime(&t)),
            LocalResult::None => Err(format!("{naive} does not exist in {} (the clocks skip it)", self.tz)),
        };
        let pattern_error = |p: &str, e: chrono::ParseError| format!("does not match the pattern {p:?}: {e}");
        match &self.kind {
            TimeKind::Rfc3339 => {
                Timestamp::parse_rfc3339(s).map_err(|_| "not a date (YYYY-MM-DD) or an RFC 3339 time (2024-05-01T12:00:00Z)".to_string())
            }
            TimeKind::EpochS => epoch(3),
            TimeKind::EpochMs => epoch(0),
            TimeKind::WithOffset(p) => DateTime::parse_from_str(s, p)
                .map(|t| Timestamp::from_datetime(&t))
                .map_err(|e| pattern_error(p, e)),
            TimeKind::Local(p) => local(NaiveDateTime::parse_from_str(s, p).map_err(|e| pattern_error(p, e))?),
            TimeKind::Date(p) => local(
                NaiveDate::parse_from_str(s, p)
                    .map_err(|e| pattern_error(p, e))?
                    .and_time(chrono::NaiveTime::MIN),
            ),
        }
    }

    /// The time as a number, for the epoch formats (written as a JSON number where there are some).
    fn number(&self, t: Timestamp) -> Option<i64> {
        match self.kind {
            TimeKind::EpochS => Some(t.millis().div_euclid(1000)),
            TimeKind::EpochMs => Some(t.millis()),
            _ => None,
        }
    }

    /// Writes a time as the mapping reads it.
    fn write(&self, t: Timestamp, out: &mut String) {
        let pattern = match &self.kind {
            TimeKind::EpochS | TimeKind::EpochMs => {
                let _ = write!(out, "{}", self.number(t).unwrap_or_default());
                return;
            }
            TimeKind::Rfc3339 if self.tz == chrono_tz::UTC => return t.write_rfc3339(out),
            TimeKind::Rfc3339 if t.millis() % 1000 == 0 => "%Y-%m-%dT%H:%M:%S%:z",
            TimeKind::Rfc3339 => "%Y-%m-%dT%H:%M:%S%.3f%:z",
            TimeKind::WithOffset(p) | TimeKind::Local(p) | TimeKind::Date(p) => p,
        };
        // The pattern was tried when the mapping was loaded, so writing it cannot fail.
        let _ = write!(out, "{}", t.to_datetime().with_timezone(&self.tz).format(pattern));
    }
}

/// A decimal number of seconds (`scale` 3) or milliseconds (`scale` 0) as milliseconds since 1970,
/// a fraction of a millisecond cut off (towards the past): `1704153600.5` s is `1704153600500`.
/// Reads a sign, digits, a fraction and an exponent (`1.7041536005e9`, as JSON writers may).
fn epoch_millis(s: &str, scale: u32) -> Option<i64> {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i32>().ok()?),
        None => (s, 0),
    };
    let (negative, digits) = match mantissa.as_bytes().first()? {
        b'-' => (true, &mantissa[1..]),
        b'+' => (false, &mantissa[1..]),
        _ => (false, mantissa),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty()) || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // The digits as one integer, and the power of ten that makes it milliseconds.
    let mut n: i128 = 0;
    let mut power = i64::from(exponent) + i64::from(scale) - fraction.len() as i64;
    for b in whole.bytes().chain(fraction.bytes()) {
        match n.checked_mul(10) {
            Some(m) if m < 1 << 100 => n = m + i128::from(b - b'0'),
            // Digits past what a time needs are beyond a millisecond: drop them.
            _ => power += 1,
        }
    }
    if negative {
        n = -n;
    }
    let ms = if power >= 0 {
        n.checked_mul(10i128.checked_pow(u32::try_from(power).ok()?)?)?
    } else {
        match 10i128.checked_pow(u32::try_from(-power).ok()?) {
            Some(d) => n.div_euclid(d),
            None if n < 0 => -1,
            None => 0,
        }
    };
    i64::try_from(ms).ok()
}

impl TimeSource {
    fn read(&self, record: &Record) -> Result<Option<Timestamp>, RecordError> {
        self.source
            .get(record)
            .map(|v| self.format.parse(v).map_err(|e| self.source.error(record, v, e)))
            .transpose()
    }
}

pub fn to_incoming(m: &Mapping, record: &Record, phones: &PhoneParser, out: &mut Vec<Incoming>) -> Result<(), RecordError> {
    let start = out.len();
    let result = read(m, record, phones, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn read(m: &Mapping, record: &Record, phones: &PhoneParser, out: &mut Vec<Incoming>) -> Result<(), RecordError> {
    let s = &m.spec;
    let deleting = s.delete.as_ref().is_some_and(|d| {
        d.source
            .get(record)
            .is_some_and(|v| d.values.iter().any(|t| spec::same_token(t, v)))
    });
    // A flat record's usage and consent are looked up first, once: a record that is not a consent of
    // ours (a value listed under skip) is skipped before anything else is read of it, as a marketing
    // e-mail row need not hold a phone number. A deletion is a decision whatever its consent says.
    let flat = match s.slots.as_slice() {
        [slot] if !s.wide => {
            let usage = match &slot.usage {
                SlotUsage::Fixed(u) => Ok(*u),
                SlotUsage::Read(src) => match src.get(record) {
                    None => Err(src.error(record, "", "missing".into())),
                    Some(v) => match s.usage_values.lookup(v) {
                        Some(u) => Ok(u),
                        None if s.usage_values.skips(v) => return Err(src.skip(record, v)),
                        None => Err(unmapped(src, record, v, &s.usage_values.accepted())),
                    },
                },
            };
            let consent = match slot.consent.get(record) {
                _ if deleting => Ok(None),
                None => Err(slot.consent.error(record, "", "missing".into())),
                Some(v) => match s.consent_values.lookup(v) {
                    Some(c) => Ok(Some(c)),
                    None if s.consent_values.skips(v) => return Err(slot.consent.skip(record, v)),
                    None => Err(unmapped(&slot.consent, record, v, &s.consent_values.accepted())),
                },
            };
            Some((slot, usage, consent))
        }
        _ => None,
    };
    let text = s.number.required(record)?;
    if let From::Field { index, .. } = s.number.from {
        if record.inexact(index) {
            return Err(s.number.error(
                record,
                text,
                "not a string: a JSON number that is not a whole number as written".into(),
            ));
        }
    }
    let written;
    let text = if s.international {
        written = international(text);
        written.as_ref()
    } else {
        text
    };
    let phones = match s.region.as_ref().and_then(|src| Some((src, src.get(record)?))) {
        Some((src, v)) => phones.with_region(Region::parse_code(v).map_err(|_| {
            // The reason never quotes the value: it is shown only to callers who may see values.
            src.error(
                record,
                v,
                "not a region: expected an ISO 3166 code such as DE or US, or a country calling code such as 49".into(),
            )
        })?),
        None => *phones,
    };
    let number = phones.parse(text).map_err(|e| s.number.error(record, text, e.to_string()))?;
    let op = |consent: Option<bool>, slot: &Slot| -> Result<Op, RecordError> {
        let (created_at, updated_at) = times(slot, record)?;
        Ok(match consent {
            Some(consent) => Op::Set {
                consent,
                created_at,
                updated_at,
            },
            None => Op::Delete {
                at: updated_at.or(created_at),
            },
        })
    };
    if let Some((slot, usage, consent)) = flat {
        let consent = consent?;
        let usage = usage?;
        out.push(Incoming {
            number,
            usage,
            op: op(consent, slot)?,
        });
        return Ok(());
    }
    // Wide: one consent per [[wide]] entry that has one.
    let (start, mut skipped) = (out.len(), None);
    for slot in &s.slots {
        let consent = match slot.consent.get(record) {
            _ if deleting => None,
            None => continue,
            Some(v) => match s.consent_values.lookup(v) {
                Some(c) => Some(c),
                // A usage without a decision: no consent for that usage.
                None if s.consent_values.skips(v) => {
                    skipped.get_or_insert_with(|| slot.consent.skip(record, v));
                    continue;
                }
                None => return Err(unmapped(&slot.consent, record, v, &s.consent_values.accepted())),
            },
        };
        // [[wide]] entries name their usage.
        let SlotUsage::Fixed(usage) = slot.usage else { continue };
        out.push(Incoming {
            number,
            usage,
            op: op(consent, slot)?,
        });
    }
    match skipped {
        // Every usage the record spoke of was skipped.
        Some(e) if out.len() == start => Err(e),
        _ => Ok(()),
    }
}

/// A number of a column that holds international numbers: `491512345678` and `0049 151…` as
/// `+49…`. A `+`, a `tel:` URI, or a leading single 0 (a national number after all) is left as it is.
fn international(text: &str) -> std::borrow::Cow<'_, str> {
    let t = text.trim_start();
    match t.as_bytes() {
        [b'0', b'0', ..] => format!("+{}", &t[2..]).into(),
        [b'1'..=b'9', ..] => format!("+{t}").into(),
        _ => text.into(),
    }
}

fn unmapped(src: &Source, record: &Record, value: &str, accepted: &str) -> RecordError {
    src.error(record, value, format!("not one of the accepted values ({accepted})"))
}

fn times(slot: &Slot, record: &Record) -> Result<(Option<Timestamp>, Option<Timestamp>), RecordError> {
    let created = slot.created.as_ref().map(|t| t.read(record)).transpose()?.flatten();
    let updated = slot.updated.as_ref().map(|t| t.read(record)).transpose()?.flatten();
    if let (Some(c), Some(u), Some(src)) = (created, updated, &slot.updated) {
        if u < c {
            let value = src.source.get(record).unwrap_or_default();
            return Err(src.source.error(record, value, format!("earlier than the created time {c}")));
        }
    }
    Ok((created, updated))
}

/// What goes in a column of the record being filled. A column shared by several consents keeps the
/// earliest creation time and the latest update time.
#[derive(Clone, Copy)]
enum Cell<'m> {
    Number(PhoneNumber),
    Region(Region),
    Value(OutValue<'m>),
    Time(Timestamp, &'m TimeFormat),
}

/// Mappings of up to this many columns fill their cells on the stack.
const STACK_CELLS: usize = 16;

pub fn to_out_record(m: &Mapping, consents: &[Consent], out: &mut OutRecord) {
    out_record(m, consents, None, out)
}

/// Whether a deletion can be written: a delete marker read from a field, with a value to write.
pub fn writes_deletes(m: &Mapping) -> bool {
    m.spec
        .delete
        .as_ref()
        .is_some_and(|d| !d.values.is_empty() && matches!(d.source.from, From::Field { .. }))
}

/// A record that removes a consent: its number, usage and the delete marker's first value; false
/// (and `out` untouched) when the mapping has no delete marker read from a field.
pub fn to_out_delete(m: &Mapping, number: PhoneNumber, usage: crate::domain::Usage, out: &mut OutRecord) -> bool {
    let Some(d) = m.spec.delete.as_ref() else { return false };
    let Some(marker) = d.values.first() else { return false };
    if !matches!(d.source.from, From::Field { .. }) {
        return false;
    }
    let gone = Consent {
        number,
        usage,
        consent: false,
        created_at: Timestamp::from_millis(0),
        updated_at: Timestamp::from_millis(0),
        source: crate::domain::Source::Cli,
    };
    out_record(m, &[gone], Some(marker), out);
    true
}

fn out_record(m: &Mapping, consents: &[Consent], delete: Option<&str>, out: &mut OutRecord) {
    let s = &m.spec;
    out.clear();
    let json = matches!(s.format.kind, FormatKind::Json | FormatKind::Ndjson);
    let consent_bool = json && s.consent_values.token(true) == Some("true") && s.consent_values.token(false) == Some("false");
    let (mut on_stack, mut on_heap) = ([None; STACK_CELLS], Vec::new());
    let cells: &mut [Option<Cell>] = match on_stack.get_mut(..s.columns.len()) {
        Some(cells) => cells,
        None => {
            on_heap.resize(s.columns.len(), None);
            &mut on_heap
        }
    };
    // A wide record carries all consents of the number; other layouts one record (child) each.
    let per_record = if s.wide { consents.len().max(1) } else { 1 };
    for (n, group) in consents.chunks(per_record).enumerate() {
        cells.fill(None);
        set(cells, &s.number, Cell::Number(group[0].number));
        if let (Some(src), Some(region)) = (&s.region, Region::of(group[0].number)) {
            set(cells, src, Cell::Region(region));
        }
        if let Some(d) = &s.delete {
            set(cells, &d.source, Cell::Value(OutValue::Text(delete.unwrap_or_default())));
        }
        for c in group {
            let slot = s.slots.iter().find(|slot| match slot.usage {
                SlotUsage::Fixed(u) => u == c.usage,
                SlotUsage::Read(_) => true,
            });
            let Some(slot) = slot else { continue };
            if let SlotUsage::Read(src) = &slot.usage {
                let token = s.usage_values.token(c.usage).unwrap_or(c.usage.as_str());
                set(cells, src, Cell::Value(OutValue::Text(token)));
            }
            if delete.is_some() {
                continue;
            }
            let consent = match s.consent_values.token(c.consent) {
                Some(t) if !consent_bool => OutValue::Text(t),
                _ => OutValue::Bool(c.consent),
            };
            set(cells, &slot.consent, Cell::Value(consent));
            set_time(cells, &slot.created, c.created_at, true);
            set_time(cells, &slot.updated, c.updated_at, false);
        }
        out.start_child();
        for (i, (column, cell)) in s.columns.iter().zip(cells.iter()).enumerate() {
            // Parent fields are the number's: written once, with the first child.
            let part = part(column);
            if part == Part::Parent && n > 0 {
                continue;
            }
            match *cell {
                None => {}
                Some(Cell::Number(number)) => out.push_text_with(part, i, |t| number.push_to(t)),
                Some(Cell::Region(region)) => out.push_text_with(part, i, |t| t.push_str(&region.to_string())),
                Some(Cell::Value(v)) => out.push(part, i, v),
                Some(Cell::Time(t, format)) => match format.number(t) {
                    Some(n) if json => out.push(part, i, OutValue::Int(n)),
                    _ => out.push_text_with(part, i, |text| format.write(t, text)),
                },
            }
        }
    }
}

/// Where a column's value goes: `../` fields are the parent's.
fn part(column: &FieldRef) -> Part {
    if column.is_parent() {
        Part::Parent
    } else {
        Part::Child
    }
}

fn set<'m>(cells: &mut [Option<Cell<'m>>], src: &Source, cell: Cell<'m>) {
    if let From::Field { index, .. } = src.from {
        cells[index] = Some(cell);
    }
}

/// Sets a time cell; a column shared by several consents keeps the earliest (or else the latest) time.
fn set_time<'m>(cells: &mut [Option<Cell<'m>>], t: &'m Option<TimeSource>, at: Timestamp, earliest: bool) {
    if let Some(TimeSource {
        source: Source {
            from: From::Field { index, .. },
            ..
        },
        format,
    }) = t
    {
        let keep = matches!(cells[*index], Some(Cell::Time(old, _)) if (old < at) == earliest);
        if !keep {
            cells[*index] = Some(Cell::Time(at, format));
        }
    }
}

pub fn reject_record(m: &Mapping, record: &Record) -> OutRecord {
    let mut out = OutRecord::default();
    out.start_child();
    for (i, (column, value)) in m.spec.columns.iter().zip(&record.values).enumerate() {
        if let Some(v) = value {
            out.push(part(column), i, OutValue::Text(v));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testing::{mapping, record};
    use super::*;
    use crate::domain::{Source as From_, Usage};
    use crate::formats::OutValues;
    use proptest::prelude::*;

    const FLAT: &str = r#"
        [format]
        type = "csv"
        [fields]
        number = { column = "phone" }
        usage = { column = "channel" }
        consent = { column = "consent" }
        created = { column = "created_at" }
        updated = { column = "updated_at" }
        delete = { column = "Delete", values = ["D", "del"] }
    "#;

    const WIDE: &str = r#"
        [format]
        type = "csv"
        delimiter = ";"
        [fields]
        number = { column = "msisdn" }
        updated = { column = "changed", format = "%d.%m.%Y %H:%M", timezone = "Europe/Berlin" }
        [values]
        consent = { true = ["Y"], false = ["N"] }
        [[wide]]
        usage = "call_recording"
        consent = { column = "rec" }
        created = { column = "rec_since", format = "epoch_ms" }
        [[wide]]
        usage = "whatsapp"
        consent = { column = "wa" }
    "#;

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn incoming(m: &Mapping, fields: &[(&str, &str)]) -> Result<Vec<Incoming>, RecordError> {
        let mut out = Vec::new();
        m.to_incoming(&record(m, 7, fields), &PhoneParser::new(Region::parse("DE").ok()), &mut out)
            .map(|()| out)
    }

    fn one(m: &Mapping, fields: &[(&str, &str)]) -> Incoming {
        let out = incoming(m, fields).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(out.len(), 1);
        out[0]
    }

    fn number() -> PhoneNumber {
        PhoneNumber::parse("+491512345678").unwrap()
    }

    #[test]
    fn a_flat_record_becomes_one_change() {
        let m = mapping(FLAT);
        let i = one(
            &m,
            &[
                ("phone", "0151 2345678"),
                ("channel", " WhatsApp "),
                ("consent", "Opt-In"),
                ("updated_at", "2024-01-02T00:00:00+01:00"),
            ],
        );
        assert_eq!(
            i,
            Incoming {
                number: number(),
                usage: Usage::Whatsapp,
                op: Op::Set {
                    consent: true,
                    created_at: None,
                    updated_at: Some(ts("2024-01-01T23:00:00Z"))
                }
            }
        );
        assert!(!m.groups_by_number());
    }

    #[test]
    fn refusals_say_where_which_field_and_why() {
        let m = mapping(FLAT);
        let e = incoming(&m, &[("phone", "+49 151 CALLME"), ("channel", "whatsapp"), ("consent", "true")]).unwrap_err();
        assert_eq!(e.to_string(), "in.csv:8 (record 7): field number (column phone) = \"+49 151 CALLME\": the number contains 'C', which is not a digit or a separator");
        let e = incoming(&m, &[("phone", "+491512345678"), ("channel", "sms"), ("consent", "true")]).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            (
                "usage (column channel)",
                "not one of the accepted values (call_recording: call_recording; whatsapp: whatsapp)"
            )
        );
        let e = incoming(&m, &[("phone", "+491512345678"), ("channel", "whatsapp"), ("consent", "")]).unwrap_err();
        assert_eq!((e.field.as_str(), e.reason.as_str()), ("consent (column consent)", "missing"));
        let e = incoming(
            &m,
            &[
                ("phone", "+491512345678"),
                ("channel", "whatsapp\n+4917012345678,whatsapp"),
                ("consent", "true"),
            ],
        )
        .unwrap_err();
        assert!(e.reason.ends_with("(the value spans lines: a quote may be unbalanced)"), "{e}");
        let e = incoming(
            &m,
            &[
                ("phone", "+491512345678"),
                ("channel", "whatsapp"),
                ("consent", "true"),
                ("created_at", "2024-02-01T00:00:00Z"),
                ("updated_at", "2024-01-01T00:00:00Z"),
            ],
        )
        .unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            ("updated (column updated_at)", "earlier than the created time 2024-02-01T00:00:00Z")
        );
        let e = incoming(
            &m,
            &[
                ("phone", "+491512345678"),
                ("channel", "whatsapp"),
                ("consent", "true"),
                ("created_at", "2024-02-30T00:00:00Z"),
            ],
        )
        .unwrap_err();
        assert_eq!(e.field, "created (column created_at)");
    }

    #[test]
    fn value_maps_match_trimmed_in_any_case_and_export_the_first_token() {
        let m = mapping(&FLAT.replace("[fields]", "[values]\nconsent = { true = [\"Zustimmung\", \"ÜBER\"], false = [\"Ablehnung\"] }\nusage = { whatsapp = [\"WA\", \"WhatsApp Business\"] }\n[fields]"));
        let i = one(
            &m,
            &[("phone", "+491512345678"), ("channel", " whatsapp business "), ("consent", "über")],
        );
        assert_eq!(
            (i.usage, i.op),
            (
                Usage::Whatsapp,
                Op::Set {
                    consent: true,
                    created_at: None,
                    updated_at: None
                }
            )
        );
        // A usage left out of [values.usage] keeps its canonical name.
        assert_eq!(
            one(
                &m,
                &[("phone", "+491512345678"), ("channel", "CALL_RECORDING"), ("consent", "ablehnung")]
            )
            .usage,
            Usage::CallRecording
        );
        assert!(incoming(&m, &[("phone", "+491512345678"), ("channel", "whatsapp"), ("consent", "true")]).is_err());
        let c = consent(Usage::Whatsapp, false, 0, 0);
        let out = written(&m, &[c]);
        assert_eq!(
            children(&m, &out)[0][1..3],
            [("channel", OutValue::Text("WA")), ("consent", OutValue::Text("Ablehnung"))]
        );
    }

    #[test]
    fn a_constant_usage_applies_to_every_record() {
        let m = mapping(&FLAT.replace("usage = { column = \"channel\" }", "usage = { value = \"whatsapp\" }"));
        assert_eq!(one(&m, &[("phone", "+491512345678"), ("consent", "0")]).usage, Usage::Whatsapp);
        assert!(!m.out_columns().contains(&FieldRef::Name("channel".into())));
    }

    fn time(format: &str, zone: &str) -> TimeFormat {
        TimeFormat {
            kind: spec::time_kind(format).unwrap(),
            tz: zone.parse().unwrap(),
        }
    }

    /// The time as `f` writes it.
    fn text(f: &TimeFormat, t: Timestamp) -> String {
        let mut s = String::new();
        f.write(t, &mut s);
        s
    }

    #[test]
    fn time_formats_read_and_write() {
        let utc = time("rfc3339", "UTC");
        assert_eq!(utc.parse("2024-05-01T14:00:00+02:00"), Ok(ts("2024-05-01T12:00:00Z")));
        assert_eq!(text(&utc, ts("2024-05-01T12:00:00Z")), "2024-05-01T12:00:00Z");
        assert_eq!(
            text(&time("rfc3339", "Europe/Berlin"), ts("2024-05-01T12:00:00.5Z")),
            "2024-05-01T14:00:00.500+02:00"
        );
        let s = time("epoch_s", "UTC");
        assert_eq!(s.parse(" 1700000000 "), Ok(ts("2023-11-14T22:13:20Z")));
        assert_eq!(s.number(ts("2023-11-14T22:13:20.9Z")), Some(1_700_000_000));
        assert_eq!(text(&s, ts("2023-11-14T22:13:20Z")), "1700000000");
        assert_eq!(utc.number(ts("2023-11-14T22:13:20Z")), None);
        assert_eq!(s.parse("1704153600.5"), Ok(Timestamp::from_millis(1_704_153_600_500)));
        assert_eq!(s.parse("1.7041536005e9"), Ok(Timestamp::from_millis(1_704_153_600_500)));
        assert_eq!(s.parse("1704153600.123456"), Ok(Timestamp::from_millis(1_704_153_600_123)));
        assert_eq!(s.parse("-1.5"), Ok(Timestamp::from_millis(-1500)));
        assert_eq!(s.parse("+12"), Ok(Timestamp::from_millis(12_000)));
        for bad in ["", ".", "1.5.2", "12a", "1e", "99999999999999999", "--1", "1e400", "0x10"] {
            assert!(s.parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            time("epoch_ms", "UTC").parse("1700000000123"),
            Ok(Timestamp::from_millis(1_700_000_000_123))
        );
        assert_eq!(
            time("epoch_ms", "UTC").parse("1700000000123.9"),
            Ok(Timestamp::from_millis(1_700_000_000_123))
        );
        let de = time("%d.%m.%Y %H:%M:%S", "Europe/Berlin");
        assert_eq!(de.parse("01.07.2024 12:00:00"), Ok(ts("2024-07-01T10:00:00Z")));
        assert_eq!(text(&de, ts("2024-01-15T09:30:00Z")), "15.01.2024 10:30:00");
        assert!(de.parse("30.02.2024 12:00:00").unwrap_err().contains("does not match the pattern"));
        let date = time("%Y-%m-%d", "Europe/Berlin");
        assert_eq!(date.parse("2024-01-15"), Ok(ts("2024-01-14T23:00:00Z")));
        assert_eq!(text(&date, ts("2024-01-14T23:00:00Z")), "2024-01-15");
        let offset = time("%d.%m.%Y %H:%M %z", "Europe/Berlin");
        assert_eq!(offset.parse("01.07.2024 12:00 +0000"), Ok(ts("2024-07-01T12:00:00Z")));
    }

    #[test]
    fn clock_changes_in_berlin() {
        let de = time("%Y-%m-%d %H:%M", "Europe/Berlin");
        // Spring: 02:00-02:59 on the last Sunday of March does not exist.
        assert_eq!(de.parse("2024-03-31 01:59"), Ok(ts("2024-03-31T00:59:00Z")));
        assert_eq!(
            de.parse("2024-03-31 02:30"),
            Err("2024-03-31 02:30:00 does not exist in Europe/Berlin (the clocks skip it)".into())
        );
        assert_eq!(de.parse("2024-03-31 03:00"), Ok(ts("2024-03-31T01:00:00Z")));
        // Autumn: 02:00-02:59 on the last Sunday of October happens twice; the earlier instant is taken.
        assert_eq!(de.parse("2024-10-27 02:30"), Ok(ts("2024-10-27T00:30:00Z")));
        assert_eq!(de.parse("2024-10-27 03:00"), Ok(ts("2024-10-27T02:00:00Z")));
    }

    #[test]
    fn a_delete_marker_removes_the_consent() {
        let m = mapping(FLAT);
        let i = one(
            &m,
            &[
                ("phone", "+491512345678"),
                ("channel", "whatsapp"),
                ("Delete", " d "),
                ("created_at", "2024-01-01T00:00:00Z"),
            ],
        );
        assert_eq!(
            i.op,
            Op::Delete {
                at: Some(ts("2024-01-01T00:00:00Z"))
            }
        );
        let i = one(
            &m,
            &[
                ("phone", "+491512345678"),
                ("channel", "whatsapp"),
                ("consent", "false"),
                ("Delete", ""),
            ],
        );
        assert!(matches!(i.op, Op::Set { consent: false, .. }));
        let out = written(&m, &[consent(Usage::Whatsapp, true, 0, 0)]);
        assert_eq!(children(&m, &out)[0].last(), Some(&("Delete", OutValue::Text(""))));
    }

    #[test]
    fn a_wide_record_carries_one_consent_per_usage() {
        let m = mapping(WIDE);
        assert!(m.groups_by_number());
        let names: Vec<String> = m.out_columns().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["msisdn", "rec", "wa", "rec_since", "changed"]);
        let out = incoming(
            &m,
            &[
                ("msisdn", "+491512345678"),
                ("rec", "y"),
                ("wa", "N"),
                ("rec_since", "1700000000000"),
                ("changed", "15.01.2024 10:30"),
            ],
        )
        .unwrap();
        let updated_at = Some(ts("2024-01-15T09:30:00Z"));
        assert_eq!(
            out,
            [
                Incoming {
                    number: number(),
                    usage: Usage::CallRecording,
                    op: Op::Set {
                        consent: true,
                        created_at: Some(ts("2023-11-14T22:13:20Z")),
                        updated_at
                    }
                },
                Incoming {
                    number: number(),
                    usage: Usage::Whatsapp,
                    op: Op::Set {
                        consent: false,
                        created_at: None,
                        updated_at
                    }
                },
            ]
        );
        // An empty cell: no consent for that usage.
        assert_eq!(one(&m, &[("msisdn", "+491512345678"), ("wa", "Y")]).usage, Usage::Whatsapp);
        // An error in one usage refuses the whole record and adds nothing.
        let mut out = Vec::new();
        let r = record(&m, 1, &[("msisdn", "+491512345678"), ("rec", "Y"), ("wa", "maybe")]);
        assert!(m.to_incoming(&r, &PhoneParser::default(), &mut out).is_err() && out.is_empty());
        // The shared update column gets the latest update.
        let row = written(
            &m,
            &[
                consent(Usage::Whatsapp, true, 0, 1_705_311_000_000),
                consent(Usage::CallRecording, false, 5, 1_705_000_000_000),
            ],
        );
        let row = children(&m, &row);
        assert_eq!(row.len(), 1);
        assert_eq!(row[0].last(), Some(&("changed", OutValue::Text("15.01.2024 10:30"))));
    }

    #[test]
    fn nested_records_read_and_write_the_parent() {
        let m = mapping(
            r#"
            [format]
            type = "json"
            records = "customers.consents"
            [fields]
            number = { path = "../phone" }
            usage = { path = "channel" }
            consent = { path = "ok" }
            updated = { path = "ts", format = "epoch_s" }
            "#,
        );
        assert!(m.groups_by_number());
        let i = one(
            &m,
            &[
                ("../phone", "+491512345678"),
                ("channel", "whatsapp"),
                ("ok", "true"),
                ("ts", "1700000000"),
            ],
        );
        assert_eq!(
            i.op,
            Op::Set {
                consent: true,
                created_at: None,
                updated_at: Some(ts("2023-11-14T22:13:20Z"))
            }
        );
        let out = written(
            &m,
            &[
                consent(Usage::Whatsapp, true, 0, 1_700_000_000_000),
                consent(Usage::CallRecording, false, 0, 0),
            ],
        );
        assert_eq!(named(&m, out.parent()), [("phone", OutValue::Text("+491512345678"))]);
        let children = children(&m, &out);
        assert_eq!(children.len(), 2);
        assert_eq!(
            children[0],
            [
                ("channel", OutValue::Text("whatsapp")),
                ("ok", OutValue::Bool(true)),
                ("ts", OutValue::Int(1_700_000_000))
            ]
        );
        let rejected = m.reject_record(&record(&m, 1, &[("../phone", "+49 x"), ("channel", "whatsapp")]));
        assert_eq!(named(&m, rejected.parent()), [("phone", OutValue::Text("+49 x"))]);
        let rejected: Vec<_> = rejected.children().map(|c| named(&m, c)).collect();
        assert_eq!(rejected, [[("channel", OutValue::Text("whatsapp"))]]);
    }

    fn consent(usage: Usage, consent: bool, created: i64, updated: i64) -> Consent {
        Consent {
            number: number(),
            usage,
            consent,
            created_at: Timestamp::from_millis(created),
            updated_at: Timestamp::from_millis(updated),
            source: From_::Cli,
        }
    }

    /// The record written for `consents`.
    fn written(m: &Mapping, consents: &[Consent]) -> OutRecord {
        let mut out = OutRecord::default();
        m.to_out_record(consents, &mut out);
        out
    }

    /// Values with the name of their column, as a writer names it (without `../`).
    fn named<'a>(m: &'a Mapping, values: OutValues<'a>) -> Vec<(&'a str, OutValue<'a>)> {
        let name = |c: usize| match &m.spec.columns[c] {
            FieldRef::Name(n) => n.strip_prefix("../").unwrap_or(n),
            FieldRef::Position(_) => panic!("a column by position"),
        };
        values.iter().map(|(c, v)| (name(c), v)).collect()
    }

    fn children<'a>(m: &'a Mapping, out: &'a OutRecord) -> Vec<Vec<(&'a str, OutValue<'a>)>> {
        out.children().map(|c| named(m, c)).collect()
    }

    /// Reads `out` back as a record the way a reader would give it: the wanted fields are the columns.
    fn as_record(m: &Mapping, out: &OutRecord, child: usize) -> Record {
        let child = out.children().nth(child).expect("child");
        let values = (0..m.wanted_fields().len())
            .map(|w| {
                let mut fields = out.parent().iter().chain(child.iter());
                fields.find(|(c, _)| *c == w).map(|(_, v)| v.as_text().into_owned())
            })
            .collect();
        Record {
            location: Location::default(),
            values,
            inexact: 0,
        }
    }

    fn arb_consent() -> impl Strategy<Value = (PhoneNumber, bool, i64, i64)> {
        (
            crate::domain::phone::possible_numbers(),
            any::<bool>(),
            0i64..4_000_000_000,
            0i64..100_000_000,
        )
    }

    proptest! {
        #[test]
        fn flat_consents_round_trip(
            (digits, value, created, later) in arb_consent(),
            whatsapp in any::<bool>(),
            zone in prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York"]),
            format in prop::sample::select(vec!["rfc3339", "epoch_s", "epoch_ms", "%d.%m.%Y %H:%M:%S %z"]),
            json in any::<bool>(),
        ) {
            let text = FLAT
                .replace("type = \"csv\"", if json { "type = \"json\"" } else { "type = \"csv\"" })
                .replace("column", if json { "path" } else { "column" })
                .replace("created = { column = \"created_at\" }", &format!("created = {{ column = \"created_at\", format = \"{format}\", timezone = \"{zone}\" }}"))
                .replace("created = { path = \"created_at\" }", &format!("created = {{ path = \"created_at\", format = \"{format}\", timezone = \"{zone}\" }}"));
            let m = mapping(&text);
            let c = Consent {
                number: digits,
                usage: if whatsapp { Usage::Whatsapp } else { Usage::CallRecording },
                consent: value,
                created_at: Timestamp::from_millis(created * 1000),
                updated_at: Timestamp::from_millis(created * 1000 + later),
                source: From_::Cli,
            };
            let out = written(&m, std::slice::from_ref(&c));
            let mut back = Vec::new();
            m.to_incoming(&as_record(&m, &out, 0), &PhoneParser::default(), &mut back).unwrap();
            prop_assert_eq!(back, vec![Incoming { number: c.number, usage: c.usage, op: Op::Set { consent: c.consent, created_at: Some(c.created_at), updated_at: Some(c.updated_at) } }]);
        }

        #[test]
        fn wide_consents_round_trip(
            (digits, value, created, later) in arb_consent(),
            other in prop::option::of(any::<bool>()),
        ) {
            let m = mapping(&WIDE.replace("%d.%m.%Y %H:%M", "%Y-%m-%d %H:%M:%S%.3f %z"));
            let number = digits;
            let make = |usage, consent| Consent { number, usage, consent, created_at: Timestamp::from_millis(created), updated_at: Timestamp::from_millis(created + later), source: From_::Cli };
            let consents: Vec<Consent> = std::iter::once(make(Usage::CallRecording, value)).chain(other.map(|v| make(Usage::Whatsapp, v))).collect();
            let out = written(&m, &consents);
            let mut back = Vec::new();
            m.to_incoming(&as_record(&m, &out, 0), &PhoneParser::default(), &mut back).unwrap();
            let expected: Vec<Incoming> = consents.iter().map(|c| {
                let created_at = (c.usage == Usage::CallRecording).then_some(c.created_at);
                Incoming { number, usage: c.usage, op: Op::Set { consent: c.consent, created_at, updated_at: Some(c.updated_at) } }
            }).collect();
            prop_assert_eq!(back, expected);
        }
    }
}
