//! The mapping file's shape and its checks. The `Raw*` types are the TOML as users write it (their
//! `///` docs are the key reference); [`from_toml`] checks a file, collecting every problem at once,
//! and turns what passes into a [`MappingSpec`] that `apply` uses without further checks.

use super::*;
use crate::domain::{Op, PhoneNumber, Region, Timestamp, Usage};
use crate::formats::FormatKind;
use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt::{self, Write};

// ----- The file as written -----

/// Where one field's value comes from: exactly one of `column`, `path` or `value`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawField {
    /// CSV/TSV: the column, by its header name (`column = "phone"`) or its 1-based position (`column = 3`).
    /// A list names fallbacks: the first non-empty of them is read (`column = ["revoked_at", "opt_in_at"]`;
    /// the first must be in the file, the others may be absent). Export writes the first.
    column: Option<OneOrMany<RawColumn>>,
    /// JSON/NDJSON: dotted path inside the record (`contact.phone`). XML: slash path inside the record
    /// element (`phone`, `contact/phone`, `@id`, `.`). A leading `../` reads from the parent of a nested
    /// record (`../@id`, `../phone`). A list names fallbacks, as with `column`.
    path: Option<OneOrMany<String>>,
    /// A constant used for every record instead of reading one, e.g. `usage = { value = "whatsapp" }`.
    value: Option<String>,
    /// `created`/`updated`: how times are written: `rfc3339` (default), `epoch_s`, `epoch_ms`, or a
    /// chrono strftime pattern such as `%d.%m.%Y %H:%M:%S` or the date-only `%Y-%m-%d`.
    /// `number`: `national` (default: digits without `+` are a number of the region, as libphonenumber
    /// reads them) or `international` (digits without `+` are E.164 without its plus, as MSISDN
    /// columns hold them; `00` also starts a country code).
    format: Option<String>,
    /// `created`/`updated` only: the IANA time zone (`Europe/Berlin`) of times without an offset.
    /// Default `UTC`. Export writes times in this zone.
    timezone: Option<String>,
    /// `delete` only: the values that mark a record as a removal, e.g. `["D"]` (trimmed, any case).
    values: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawColumn {
    Position(i64),
    Name(String),
}

/// One value, or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl<T> OneOrMany<T> {
    fn items(&self) -> &[T] {
        match self {
            OneOrMany::One(t) => std::slice::from_ref(t),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The `[values]` table: how values are written in the files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValues {
    /// `consent = { true = [...], false = [...] }`: the tokens meaning given and denied.
    consent: Option<RawConsentValues>,
    /// `usage = { call_recording = [...], whatsapp = [...] }`: the tokens of each usage. A usage left
    /// out keeps its canonical name. `skip = [...]`: purposes we do not keep (`marketing_email`), whose
    /// records are skipped and counted, not refused.
    usage: Option<BTreeMap<String, Vec<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsentValues {
    /// Tokens meaning the consent is given; the first one is written on export.
    #[serde(rename = "true")]
    given: Vec<String>,
    /// Tokens meaning the consent is denied; the first one is written on export.
    #[serde(rename = "false")]
    denied: Vec<String>,
    /// Tokens that are no decision (`NotSeen`, `pending`): such records are skipped and counted, not
    /// refused.
    #[serde(default)]
    skip: Vec<String>,
}

/// One `[[wide]]` entry: a record carries the consent of this usage in its own column.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWide {
    /// `call_recording` or `whatsapp`.
    usage: String,
    /// Where this usage's consent is; an empty value means the record has no consent for the usage.
    consent: RawField,
    /// This usage's creation time; default: `fields.created`.
    created: Option<RawField>,
    /// This usage's update time; default: `fields.updated`.
    updated: Option<RawField>,
}

/// One `[[tests]]` case: an input and what the mapping must make of it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTest {
    /// What the case shows.
    name: String,
    /// The file content, as UTF-8 text (read as UTF-8 whatever `format.encoding` says).
    input: String,
    /// The changes expected, in record order.
    #[serde(default)]
    expect: Vec<RawExpect>,
    /// The records expected to be refused.
    #[serde(default)]
    rejects: Vec<RawReject>,
    /// The records expected to be skipped as not consents of ours (values listed under `skip`).
    #[serde(default)]
    skipped: Vec<RawReject>,
}

/// One expected change.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    /// E.164, e.g. `+4915112345678`.
    number: String,
    /// `call_recording` or `whatsapp`.
    usage: String,
    /// The consent set; leave out for a delete.
    consent: Option<bool>,
    /// RFC 3339.
    created: Option<String>,
    /// RFC 3339.
    updated: Option<String>,
    /// `true`: the record removes the consent (its time is `updated`, else `created`).
    #[serde(default)]
    delete: bool,
}

/// One expected refusal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReject {
    /// The 1-based record number.
    record: u64,
    /// The mapping key of the refused field: `number`, `usage`, `consent`, `created`, `updated`, `delete`.
    field: String,
}

const TOP_KEYS: [&str; 6] = ["description", "format", "fields", "values", "wide", "tests"];
const FIELD_KEYS: [&str; 7] = ["number", "region", "usage", "consent", "created", "updated", "delete"];
const GIVEN: [&str; 7] = ["true", "1", "y", "yes", "ja", "opt-in", "granted"];
const DENIED: [&str; 8] = ["false", "0", "n", "no", "nein", "opt-out", "revoked", "denied"];

// ----- The checked mapping -----

/// A checked mapping file: where each value is read and how it is written.
#[derive(Debug, Clone)]
pub struct MappingSpec {
    /// The `description` key: what the mapping is for.
    pub description: String,
    /// The `[format]` table.
    pub format: FormatSpec,
    /// Every field read, deduplicated, in write order; `Source::Field` indexes into it. The first
    /// `written` are what export writes; after them come fallbacks, which are only read.
    pub(super) columns: Vec<FieldRef>,
    pub(super) written: usize,
    pub(super) number: Source,
    /// Where a record says the region its number is written in (an ISO code or a calling code).
    pub(super) region: Option<Source>,
    /// `[format] region`: the region this file's national numbers are written in.
    pub(super) default_region: Option<Region>,
    /// `number.format = "international"`: digits without `+` are E.164 without its plus.
    pub(super) international: bool,
    /// One slot for a flat layout; one per `[[wide]]` entry for a wide one.
    pub(super) slots: Vec<Slot>,
    pub(super) wide: bool,
    pub(super) delete: Option<DeleteMarker>,
    pub(super) consent_values: ValueMap<bool>,
    pub(super) usage_values: ValueMap<Usage>,
    pub(super) tests: Vec<TestCase>,
}

/// Where one value of a record comes from.
#[derive(Debug, Clone)]
pub(super) struct Source {
    /// The mapping key: `number`, `usage`, `consent`, `created`, `updated` or `delete`.
    pub key: &'static str,
    /// Where it is read, for messages: `column phone`, `path ../@id`, `value "whatsapp"`.
    pub label: String,
    pub from: From,
}

#[derive(Debug, Clone)]
pub(super) enum From {
    /// A field of the record (`at`, the `index`-th wanted field), else the first non-empty fallback.
    Field {
        at: FieldRef,
        index: usize,
        fallbacks: Vec<(FieldRef, usize)>,
    },
    Const(String),
}

/// One consent a record carries.
#[derive(Debug, Clone)]
pub(super) struct Slot {
    pub usage: SlotUsage,
    pub consent: Source,
    pub created: Option<TimeSource>,
    pub updated: Option<TimeSource>,
}

#[derive(Debug, Clone)]
pub(super) enum SlotUsage {
    Read(Source),
    Fixed(Usage),
}

#[derive(Debug, Clone)]
pub(super) struct TimeSource {
    pub source: Source,
    pub format: TimeFormat,
}

#[derive(Debug, Clone)]
pub(super) struct TimeFormat {
    pub kind: TimeKind,
    pub tz: Tz,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum TimeKind {
    Rfc3339,
    EpochS,
    EpochMs,
    /// A strftime pattern with an offset (`%z`).
    WithOffset(String),
    /// A strftime pattern read in the zone.
    Local(String),
    /// A date-only strftime pattern: midnight in the zone.
    Date(String),
}

#[derive(Debug, Clone)]
pub(super) struct DeleteMarker {
    pub source: Source,
    pub values: Vec<String>,
}

/// Tokens per value; the first token of each is written on export. `skip` tokens mean "not a consent
/// of ours": the record is skipped, not refused.
#[derive(Debug, Clone)]
pub(super) struct ValueMap<T> {
    pub entries: Vec<(T, Vec<String>)>,
    pub skip: Vec<String>,
}

/// A test case with its expectations parsed.
#[derive(Debug, Clone)]
pub(super) struct TestCase {
    pub name: String,
    pub input: String,
    pub expect: Vec<Incoming>,
    /// (record number, field key).
    pub rejects: Vec<(u64, String)>,
    /// (record number, field key) of records skipped as not ours.
    pub skipped: Vec<(u64, String)>,
}

impl Source {
    /// `number (column phone)`, as record errors name a field.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.key, self.label)
    }
}

/// Trimmed, case-insensitive equality, without allocating. ASCII (nearly every value) is compared a
/// byte at a time; anything else with Unicode lower-casing.
pub(super) fn same_token(token: &str, value: &str) -> bool {
    let (token, value) = (token.trim(), value.trim());
    if token.is_ascii() && value.is_ascii() {
        return token.eq_ignore_ascii_case(value);
    }
    token
        .chars()
        .flat_map(char::to_lowercase)
        .eq(value.chars().flat_map(char::to_lowercase))
}

impl<T: Copy + PartialEq + fmt::Display> ValueMap<T> {
    pub fn lookup(&self, value: &str) -> Option<T> {
        self.entries
            .iter()
            .find(|(_, ts)| ts.iter().any(|t| same_token(t, value)))
            .map(|(v, _)| *v)
    }

    /// The token written on export.
    pub fn token(&self, value: T) -> Option<&str> {
        self.entries
            .iter()
            .find(|(v, _)| *v == value)
            .and_then(|(_, ts)| ts.first())
            .map(String::as_str)
    }

    /// Whether the value is one the mapping skips.
    pub fn skips(&self, value: &str) -> bool {
        self.skip.iter().any(|t| same_token(t, value))
    }

    /// `true: true, 1, yes; false: false, 0, no`, for messages.
    pub fn accepted(&self) -> String {
        self.entries
            .iter()
            .map(|(v, ts)| format!("{v}: {}", ts.join(", ")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

// ----- Loading and checking -----

/// The shipped mappings, built into the binary: commands work wherever they are run, with or without
/// a `mappings/` directory. A file of the same name in `mappings_dir` wins.
const BUILT_IN: [(&str, &str); 8] = [
    ("example-nested-json", include_str!("../../mappings/example-nested-json.toml")),
    ("example-nested-xml", include_str!("../../mappings/example-nested-xml.toml")),
    ("example-wide", include_str!("../../mappings/example-wide.toml")),
    ("generic-csv", include_str!("../../mappings/generic-csv.toml")),
    ("generic-json", include_str!("../../mappings/generic-json.toml")),
    ("generic-ndjson", include_str!("../../mappings/generic-ndjson.toml")),
    ("generic-xml", include_str!("../../mappings/generic-xml.toml")),
    ("sinch-contact-pro", include_str!("../../mappings/sinch-contact-pro.toml")),
];

/// The names of the mappings in `mappings_dir` (`NAME.toml`) and the built-in ones, sorted.
pub fn names(mappings_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(mappings_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|d| d.file_name().to_str()?.strip_suffix(".toml").map(String::from))
        .chain(BUILT_IN.iter().map(|(n, _)| n.to_string()))
        .collect();
    names.sort();
    names.dedup();
    names
}

pub fn load(name_or_path: &str, mappings_dir: &Path) -> Result<Mapping, MappingErrors> {
    let by_path = name_or_path.ends_with(".toml") || name_or_path.contains('/');
    let file = if by_path {
        PathBuf::from(name_or_path)
    } else {
        mappings_dir.join(format!("{name_or_path}.toml"))
    };
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) => match BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            Some((name, text)) if !by_path && e.kind() == std::io::ErrorKind::NotFound => {
                return from_toml(name, Path::new(&format!("<built-in {name}>")), text);
            }
            _ => {
                let names = names(mappings_dir);
                let problem = format!(
                    "{}: cannot read the mapping ({e}); mappings available (in {} and built in): {}",
                    file.display(),
                    mappings_dir.display(),
                    names.join(", ")
                );
                return Err(MappingErrors { problems: vec![problem] });
            }
        },
    };
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or(name_or_path).to_string();
    from_toml(&name, &file, &text)
}

pub fn from_toml(name: &str, file: &Path, text: &str) -> Result<Mapping, MappingErrors> {
    let mut c = Checker {
        file: file.display().to_string(),
        kind: None,
        problems: Vec::new(),
    };
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let at = e.span().map(|s| line_column(text, s.start)).unwrap_or_default();
        MappingErrors {
            problems: vec![format!("{}: {at}{}", c.file, e.message().trim_end())],
        }
    })?;
    let spec = c.spec(table);
    match spec {
        Some(spec) if c.problems.is_empty() => Ok(Mapping {
            name: name.to_string(),
            file: file.to_path_buf(),
            spec,
        }),
        _ => Err(MappingErrors { problems: c.problems }),
    }
}

fn line_column(text: &str, offset: usize) -> String {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}: ")
}

struct Checker {
    file: String,
    kind: Option<FormatKind>,
    problems: Vec<String>,
}

impl Checker {
    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems.push(format!("{}: {key}: {message}", self.file));
    }

    fn parse<T: DeserializeOwned>(&mut self, key: &str, value: toml::Value) -> Option<T> {
        T::deserialize(value).map_err(|e| self.problem(key, e.message().trim_end())).ok()
    }

    /// Builds the spec, or returns `None` when a part is too broken to go on; problems are collected
    /// either way.
    fn spec(&mut self, mut table: toml::Table) -> Option<MappingSpec> {
        for key in table.keys().filter(|k| !TOP_KEYS.contains(&k.as_str())) {
            let message = format!("unknown key, expected one of {}", TOP_KEYS.join(", "));
            self.problems.push(format!("{}: {key}: {message}", self.file));
        }
        let description = table
            .remove("description")
            .and_then(|v| self.parse::<String>("description", v))
            .unwrap_or_default();
        let mut format_table = table.remove("format");
        // `region` is about numbers, not bytes: the mapping reads it, the format spec does not.
        let default_region = match format_table
            .as_mut()
            .and_then(toml::Value::as_table_mut)
            .and_then(|t| t.remove("region"))
        {
            None => None,
            Some(toml::Value::String(r)) => Region::parse(&r).map_err(|e| self.problem("format.region", e)).ok(),
            Some(_) => {
                self.problem("format.region", "must be a region code in quotes, such as \"US\"");
                None
            }
        };
        let format = match format_table {
            Some(v) => self.parse::<FormatSpec>("format", v),
            None => {
                self.problem("format", "missing: add a [format] table with at least `type`");
                None
            }
        };
        if let Some(f) = &format {
            self.kind = Some(f.kind);
            // Each message names its key already (`format.record: …`).
            for p in f.problems() {
                self.problems.push(format!("{}: {p}", self.file));
            }
        }
        let mut fields = self.raw_fields(table.remove("fields"));
        let values = table.remove("values").and_then(|v| self.parse::<RawValues>("values", v));
        let wide: Vec<RawWide> = table.remove("wide").and_then(|v| self.parse("wide", v)).unwrap_or_default();
        let tests: Vec<RawTest> = table.remove("tests").and_then(|v| self.parse("tests", v)).unwrap_or_default();

        let (consent_values, usage_values) = self.value_maps(values);
        let raw_number = fields.remove("number");
        let number = match &raw_number {
            Some(f) => self.source("fields.number", "number", f, Extras::Number),
            None => {
                self.problem("fields.number", "missing: say where the phone number is read");
                None
            }
        };
        let international = match raw_number.as_ref().and_then(|f| f.format.as_deref()) {
            None | Some("national") => false,
            Some("international") => true,
            Some(other) => {
                self.problem("fields.number.format", format!("{other:?}: expected national or international"));
                false
            }
        };
        let region = fields
            .remove("region")
            .and_then(|f| self.source("fields.region", "region", &f, Extras::None));
        if let Some(Source { from: From::Const(v), .. }) = &region {
            if let Err(e) = Region::parse_code(v) {
                self.problem("fields.region.value", e);
            }
        }
        let created = fields.remove("created").and_then(|f| self.time("fields.created", "created", &f));
        let updated = fields.remove("updated").and_then(|f| self.time("fields.updated", "updated", &f));
        let delete = fields.remove("delete").and_then(|f| self.delete(&f));
        let slots = if wide.is_empty() {
            let usage = self.required(&mut fields, "usage", "the usage (or use [[wide]])");
            let consent = self.required(&mut fields, "consent", "the consent (or use [[wide]])");
            self.check_const(&usage, &usage_values);
            self.check_const(&consent, &consent_values);
            usage.zip(consent).map(|(usage, consent)| {
                vec![Slot {
                    usage: SlotUsage::Read(usage),
                    consent,
                    created,
                    updated,
                }]
            })
        } else {
            for key in ["usage", "consent"].into_iter().filter(|k| fields.contains_key(*k)) {
                self.problem(
                    &format!("fields.{key}"),
                    "not used with [[wide]]: each [[wide]] entry names its usage and consent",
                );
            }
            Some(self.wide(wide, &created, &updated))
        };
        let tests = tests.into_iter().enumerate().map(|(i, t)| self.test(i, t)).collect();
        let slots = slots?;
        let mut spec = MappingSpec {
            description,
            format: format?,
            columns: Vec::new(),
            written: 0,
            number: number?,
            region,
            default_region,
            international,
            wide: slots.iter().any(|s| matches!(s.usage, SlotUsage::Fixed(_))),
            slots,
            delete,
            consent_values,
            usage_values,
            tests,
        };
        spec.index_columns();
        Some(spec)
    }

    fn raw_fields(&mut self, fields: Option<toml::Value>) -> BTreeMap<String, RawField> {
        let table = match fields {
            None => toml::Table::new(),
            Some(toml::Value::Table(t)) => t,
            Some(_) => {
                self.problem("fields", "must be a table: [fields]");
                toml::Table::new()
            }
        };
        let mut out = BTreeMap::new();
        for (key, value) in table {
            if !FIELD_KEYS.contains(&key.as_str()) {
                self.problem(
                    &format!("fields.{key}"),
                    format!("unknown field, expected one of {}", FIELD_KEYS.join(", ")),
                );
            } else if let Some(f) = self.parse::<RawField>(&format!("fields.{key}"), value) {
                out.insert(key, f);
            }
        }
        out
    }

    fn required(&mut self, fields: &mut BTreeMap<String, RawField>, key: &'static str, what: &str) -> Option<Source> {
        match fields.remove(key) {
            Some(f) => self.source(&format!("fields.{key}"), key, &f, Extras::None),
            None => {
                self.problem(&format!("fields.{key}"), format!("missing: say where {what} is read"));
                None
            }
        }
    }

    fn source(&mut self, path: &str, key: &'static str, f: &RawField, extras: Extras) -> Option<Source> {
        if extras != Extras::Time {
            if f.format.is_some() && extras != Extras::Number {
                self.problem(&format!("{path}.format"), "only for `number` and the times `created` and `updated`");
            }
            if f.timezone.is_some() {
                self.problem(&format!("{path}.timezone"), "only for the times `created` and `updated`");
            }
        }
        if extras != Extras::Delete && f.values.is_some() {
            self.problem(
                &format!("{path}.values"),
                "only for `delete`; value tokens of other fields go in [values]",
            );
        }
        let csv = self.kind.map(|k| matches!(k, FormatKind::Csv | FormatKind::Tsv));
        let refs: Vec<Option<FieldRef>> = match (&f.column, &f.path, &f.value) {
            (Some(_), _, _) if csv == Some(false) => {
                self.problem(path, "`column` is for csv/tsv files; use `path` with json, ndjson and xml");
                return None;
            }
            (_, Some(_), _) if csv == Some(true) => {
                self.problem(path, "`path` is for json, ndjson and xml files; use `column` with csv/tsv");
                return None;
            }
            (Some(columns), None, None) => columns
                .items()
                .iter()
                .map(|c| match c {
                    RawColumn::Position(p) => match usize::try_from(*p) {
                        Ok(p) if p >= 1 => Some(FieldRef::Position(p)),
                        _ => {
                            self.problem(&format!("{path}.column"), format!("position {p}: positions count from 1"));
                            None
                        }
                    },
                    RawColumn::Name(n) => self.field_name(path, n),
                })
                .collect(),
            (None, Some(paths), None) => paths.items().iter().map(|n| self.field_name(path, n)).collect(),
            (None, None, Some(v)) => {
                return Some(Source {
                    key,
                    label: format!("value {v:?}"),
                    from: From::Const(v.clone()),
                })
            }
            (None, None, None) => {
                self.problem(path, "say where the value is: one of `column`, `path` or `value`");
                return None;
            }
            _ => {
                self.problem(path, "give only one of `column`, `path` or `value`");
                return None;
            }
        };
        if refs.is_empty() {
            self.problem(path, "the list of columns or paths is empty");
        }
        let mut refs = refs.into_iter().collect::<Option<Vec<FieldRef>>>()?.into_iter();
        let at = refs.next()?;
        let fallbacks: Vec<(FieldRef, usize)> = refs.map(|r| (r, 0)).collect();
        let word = if csv == Some(true) { "column" } else { "path" };
        let name = |r: &FieldRef| match r {
            FieldRef::Position(p) => format!("column {p}"),
            FieldRef::Name(n) => format!("{word} {n}"),
        };
        let mut label = name(&at);
        for (r, _) in &fallbacks {
            label.push_str(&format!(", else {}", name(r)));
        }
        Some(Source {
            key,
            label,
            from: From::Field { at, index: 0, fallbacks },
        })
    }

    /// A column name or path as written, or a problem when it is empty.
    fn field_name(&mut self, path: &str, n: &str) -> Option<FieldRef> {
        if n.trim().is_empty() || n == "../" {
            self.problem(path, "the column name or path is empty");
            return None;
        }
        Some(FieldRef::Name(n.to_string()))
    }

    fn time(&mut self, path: &str, key: &'static str, f: &RawField) -> Option<TimeSource> {
        let source = self.source(path, key, f, Extras::Time);
        let tz = match f.timezone.as_deref() {
            None => Some(Tz::UTC),
            Some(name) => name
                .parse::<Tz>()
                .map_err(|_| {
                    self.problem(
                        &format!("{path}.timezone"),
                        format!("unknown time zone {name:?}: use an IANA name such as Europe/Berlin or UTC"),
                    )
                })
                .ok(),
        };
        let kind = match time_kind(f.format.as_deref().unwrap_or("rfc3339")) {
            Ok(k) => Some(k),
            Err(e) => {
                self.problem(&format!("{path}.format"), e);
                None
            }
        };
        let format = TimeFormat { kind: kind?, tz: tz? };
        if let Some(Source { from: From::Const(v), .. }) = &source {
            if let Err(e) = format.parse(v) {
                self.problem(&format!("{path}.value"), e);
            }
        }
        Some(TimeSource { source: source?, format })
    }

    fn delete(&mut self, f: &RawField) -> Option<DeleteMarker> {
        let source = self.source("fields.delete", "delete", f, Extras::Delete);
        let values = match &f.values {
            Some(v) if !v.is_empty() && v.iter().all(|t| !t.trim().is_empty()) => Some(v.clone()),
            Some(_) => {
                self.problem("fields.delete.values", "list at least one non-empty value, e.g. [\"D\"]");
                None
            }
            None => {
                self.problem(
                    "fields.delete.values",
                    "missing: list the values that mark a removal, e.g. values = [\"D\"]",
                );
                None
            }
        };
        Some(DeleteMarker {
            source: source?,
            values: values?,
        })
    }

    fn value_maps(&mut self, values: Option<RawValues>) -> (ValueMap<bool>, ValueMap<Usage>) {
        let tokens = |ts: &[&str]| ts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
        let (consent, usage) = values.map(|v| (v.consent, v.usage)).unwrap_or_default();
        let consent = match consent {
            Some(c) => ValueMap {
                entries: vec![(true, c.given), (false, c.denied)],
                skip: c.skip,
            },
            None => ValueMap {
                entries: vec![(true, tokens(&GIVEN)), (false, tokens(&DENIED))],
                skip: Vec::new(),
            },
        };
        let mut usages: Vec<(Usage, Vec<String>)> = Usage::ALL.iter().map(|u| (*u, vec![u.as_str().to_string()])).collect();
        let mut skip = Vec::new();
        for (name, list) in usage.unwrap_or_default() {
            if name == "skip" {
                skip = list;
                continue;
            }
            match Usage::parse(&name) {
                Ok(u) => usages.iter_mut().filter(|(v, _)| *v == u).for_each(|(_, ts)| *ts = list.clone()),
                Err(e) => self.problem(&format!("values.usage.{name}"), format!("{e} (or skip, for values to leave out)")),
            }
        }
        let usage = ValueMap { entries: usages, skip };
        self.check_tokens("values.consent", &consent);
        self.check_tokens("values.usage", &usage);
        (consent, usage)
    }

    fn check_tokens<T: Copy + PartialEq + fmt::Display>(&mut self, key: &str, map: &ValueMap<T>) {
        if map.skip.iter().any(|t| t.trim().is_empty()) {
            self.problem(&format!("{key}.skip"), "no empty tokens");
        }
        for t in map.skip.iter().filter(|t| map.lookup(t).is_some()) {
            self.problem(&format!("{key}.skip"), format!("{t:?} is also listed as a value"));
        }
        for (i, (value, tokens)) in map.entries.iter().enumerate() {
            if tokens.is_empty() || tokens.iter().any(|t| t.trim().is_empty()) {
                self.problem(&format!("{key}.{value}"), "list at least one token, and no empty ones");
            }
            for (other, other_tokens) in &map.entries[i + 1..] {
                for t in tokens.iter().filter(|t| other_tokens.iter().any(|o| same_token(o, t))) {
                    self.problem(key, format!("{t:?} is listed for both {value} and {other}"));
                }
            }
        }
    }

    fn check_const<T: Copy + PartialEq + fmt::Display>(&mut self, source: &Option<Source>, map: &ValueMap<T>) {
        if let Some(Source {
            key, from: From::Const(v), ..
        }) = source
        {
            if map.lookup(v).is_none() {
                self.problem(
                    &format!("fields.{key}.value"),
                    format!("{v:?} is not one of the accepted values ({})", map.accepted()),
                );
            }
        }
    }

    fn wide(&mut self, wide: Vec<RawWide>, created: &Option<TimeSource>, updated: &Option<TimeSource>) -> Vec<Slot> {
        let mut slots: Vec<Slot> = Vec::new();
        for (i, w) in wide.into_iter().enumerate() {
            let path = format!("wide[{}]", i + 1);
            let usage = match Usage::parse(&w.usage) {
                Ok(u) if slots.iter().any(|s| matches!(s.usage, SlotUsage::Fixed(v) if v == u)) => {
                    self.problem(&format!("{path}.usage"), format!("{u} has another [[wide]] entry already"));
                    None
                }
                Ok(u) => Some(u),
                Err(e) => {
                    self.problem(&format!("{path}.usage"), e);
                    None
                }
            };
            let consent = self.source(&format!("{path}.consent"), "consent", &w.consent, Extras::None);
            let own_created = w.created.and_then(|f| self.time(&format!("{path}.created"), "created", &f));
            let own_updated = w.updated.and_then(|f| self.time(&format!("{path}.updated"), "updated", &f));
            if let (Some(u), Some(consent)) = (usage, consent) {
                let created = own_created.or_else(|| created.clone());
                let updated = own_updated.or_else(|| updated.clone());
                slots.push(Slot {
                    usage: SlotUsage::Fixed(u),
                    consent,
                    created,
                    updated,
                });
            }
        }
        slots
    }

    fn test(&mut self, i: usize, t: RawTest) -> TestCase {
        let path = format!("tests[{}]", i + 1);
        let mut expect = Vec::new();
        for (j, e) in t.expect.iter().enumerate() {
            match expected(e) {
                Ok(incoming) => expect.push(incoming),
                Err(message) => self.problem(&format!("{path}.expect[{}]", j + 1), message),
            }
        }
        for (list, items) in [("rejects", &t.rejects), ("skipped", &t.skipped)] {
            for (j, r) in items.iter().enumerate() {
                if !FIELD_KEYS.contains(&r.field.as_str()) {
                    self.problem(
                        &format!("{path}.{list}[{}].field", j + 1),
                        format!("{:?}: expected one of {}", r.field, FIELD_KEYS.join(", ")),
                    );
                }
            }
        }
        let pairs = |v: Vec<RawReject>| v.into_iter().map(|r| (r.record, r.field)).collect();
        TestCase {
            name: t.name,
            input: t.input,
            expect,
            rejects: pairs(t.rejects),
            skipped: pairs(t.skipped),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Extras {
    None,
    Time,
    Delete,
    Number,
}

/// An expected change of a test case, parsed.
fn expected(e: &RawExpect) -> Result<Incoming, String> {
    let number = PhoneNumber::parse(&e.number).map_err(|err| format!("number {:?}: {err}", e.number))?;
    let usage = Usage::parse(&e.usage).map_err(|err| err.to_string())?;
    let time = |t: &Option<String>| {
        t.as_deref()
            .map(Timestamp::parse_rfc3339)
            .transpose()
            .map_err(|err| err.to_string())
    };
    let (created_at, updated_at) = (time(&e.created)?, time(&e.updated)?);
    let op = match (e.delete, e.consent) {
        (true, None) => Op::Delete {
            at: updated_at.or(created_at),
        },
        (false, Some(consent)) => Op::Set {
            consent,
            created_at,
            updated_at,
        },
        (true, Some(_)) => return Err("give either `consent` or `delete = true`, not both".into()),
        (false, None) => return Err("give `consent = true|false` or `delete = true`".into()),
    };
    Ok(Incoming { number, usage, op })
}

/// What a time format name or pattern means; a pattern is tried on a sample time to see what it reads.
pub(super) fn time_kind(format: &str) -> Result<TimeKind, String> {
    match format {
        "rfc3339" => return Ok(TimeKind::Rfc3339),
        "epoch_s" => return Ok(TimeKind::EpochS),
        "epoch_ms" => return Ok(TimeKind::EpochMs),
        _ => {}
    }
    let bad =
        || format!("{format:?} is not rfc3339, epoch_s, epoch_ms or a strftime pattern that reads a date (such as %d.%m.%Y %H:%M:%S)");
    if !format.contains('%') || StrftimeItems::new(format).any(|i| matches!(i, Item::Error)) {
        return Err(bad());
    }
    let sample = DateTime::from_timestamp(1_709_991_930, 0).unwrap_or_default();
    let mut text = String::new();
    write!(text, "{}", sample.format(format)).map_err(|_| bad())?;
    if DateTime::parse_from_str(&text, format).is_ok() {
        Ok(TimeKind::WithOffset(format.to_string()))
    } else if NaiveDateTime::parse_from_str(&text, format).is_ok() {
        Ok(TimeKind::Local(format.to_string()))
    } else if NaiveDate::parse_from_str(&text, format).is_ok() {
        Ok(TimeKind::Date(format.to_string()))
    } else {
        Err(bad())
    }
}

impl MappingSpec {
    /// Every source of a value, in write order: number, region, usages, consents, created, updated,
    /// delete.
    fn each_source(&mut self, mut f: impl FnMut(&mut Source)) {
        f(&mut self.number);
        if let Some(r) = &mut self.region {
            f(r);
        }
        for slot in &mut self.slots {
            if let SlotUsage::Read(u) = &mut slot.usage {
                f(u);
            }
        }
        self.slots.iter_mut().for_each(|s| f(&mut s.consent));
        self.slots
            .iter_mut()
            .filter_map(|s| s.created.as_mut())
            .for_each(|t| f(&mut t.source));
        self.slots
            .iter_mut()
            .filter_map(|s| s.updated.as_mut())
            .for_each(|t| f(&mut t.source));
        if let Some(d) = &mut self.delete {
            f(&mut d.source);
        }
    }

    /// Lists every field read, in write order, fallbacks last (export writes only the fields before
    /// them), and points each source at its place in that list.
    fn index_columns(&mut self) {
        let mut columns = std::mem::take(&mut self.columns);
        let mut place = |at: &FieldRef| {
            columns.iter().position(|c| c == at).unwrap_or_else(|| {
                columns.push(at.clone());
                columns.len() - 1
            })
        };
        self.each_source(|s| {
            if let From::Field { at, index, .. } = &mut s.from {
                *index = place(at);
            }
        });
        self.written = columns.len();
        let mut place = |at: &FieldRef| {
            columns.iter().position(|c| c == at).unwrap_or_else(|| {
                columns.push(at.clone());
                columns.len() - 1
            })
        };
        self.each_source(|s| {
            if let From::Field { fallbacks, .. } = &mut s.from {
                for (f, i) in fallbacks {
                    *i = place(f);
                }
            }
        });
        self.columns = columns;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_trimmed_and_in_any_case() {
        assert!(same_token("Yes", " yES "));
        assert!(!same_token("yes", "yess"));
        assert!(same_token("ÄNDERUNG", "änderung"));
        // The Kelvin sign lower-cases to an ASCII k.
        assert!(same_token("k", "\u{212A}"));
    }

    fn problems(text: &str) -> Vec<String> {
        match Mapping::from_toml("t", Path::new("t.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems,
        }
    }

    fn assert_problem(text: &str, expected: &str) {
        let p = problems(text);
        assert!(p.iter().any(|p| p == expected), "expected {expected:?} among {p:#?}");
    }

    const CSV: &str = "[format]\ntype = \"csv\"\n";

    #[test]
    fn every_shipped_mapping_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let m = Mapping::load(path.to_str().unwrap(), &dir).unwrap_or_else(|e| panic!("{e}"));
                assert!(!m.spec.tests.is_empty(), "{} has no test cases", m.name);
                assert!(
                    m.spec.tests.iter().any(|t| !t.rejects.is_empty()),
                    "{} has no refused record",
                    m.name
                );
                names.push(m.name);
            }
        }
        names.sort();
        let expected = [
            "example-nested-json",
            "example-nested-xml",
            "example-wide",
            "generic-csv",
            "generic-json",
            "generic-ndjson",
            "generic-xml",
            "sinch-contact-pro",
        ];
        assert_eq!(names, expected);
        assert_eq!(Mapping::load("generic-csv", &dir).unwrap().name, "generic-csv");
    }

    #[test]
    fn the_shipped_mappings_are_built_in_and_a_file_of_the_same_name_wins() {
        let empty = tempfile::tempdir().unwrap();
        let m = Mapping::load("sinch-contact-pro", empty.path()).unwrap();
        assert_eq!(m.file, Path::new("<built-in sinch-contact-pro>"));
        assert_eq!(Mapping::names(empty.path()).len(), BUILT_IN.len());
        let own = "[format]\ntype = \"csv\"\n[fields]\nnumber = { column = \"msisdn\" }\nusage = { value = \"whatsapp\" }\nconsent = { column = \"ok\" }\n";
        std::fs::write(empty.path().join("generic-csv.toml"), own).unwrap();
        let m = Mapping::load("generic-csv", empty.path()).unwrap();
        assert_eq!(m.out_columns()[0], FieldRef::Name("msisdn".into()));
        // Built-in ones are the shipped files.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        for (name, text) in BUILT_IN {
            assert_eq!(
                std::fs::read_to_string(shipped.join(format!("{name}.toml"))).unwrap(),
                text,
                "{name}"
            );
        }
        assert!(
            Mapping::load("./no/generic-csv.toml", empty.path()).is_err(),
            "a path is read as a path"
        );
    }

    #[test]
    fn a_missing_mapping_lists_the_available_ones() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let e = Mapping::load("nope", &dir).unwrap_err();
        assert!(e.problems[0].contains("nope.toml: cannot read the mapping"), "{e}");
        assert!(e.problems[0].contains("generic-csv, generic-json"), "{e}");
    }

    #[test]
    fn syntax_errors_name_line_and_column() {
        assert_eq!(problems("[format]\ntype = \"csv\"\nx = = 1\n").len(), 1);
        assert!(problems("[format]\ntype = \"csv\"\nx = = 1\n")[0].starts_with("t.toml: line 3, column 5: "));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let p = problems(
            r#"
            colour = "blue"
            [format]
            type = "json"
            [fields]
            number = { column = "phone" }
            usage = { path = "u", value = "whatsapp" }
            created = { path = "c", format = "%Q" }
            updated = { path = "u2", timezone = "Europe/Berln" }
            delete = { path = "d", values = [] }
            phone = { path = "x" }
            [values]
            consent = { true = ["yes", "ja"], false = ["no", "JA"] }
            usage = { sms = ["sms"], whatsapp = [] }
            "#,
        );
        let expected = [
            "t.toml: colour: unknown key, expected one of description, format, fields, values, wide, tests",
            "t.toml: fields.phone: unknown field, expected one of number, region, usage, consent, created, updated, delete",
            "t.toml: fields.number: `column` is for csv/tsv files; use `path` with json, ndjson and xml",
            "t.toml: fields.usage: give only one of `column`, `path` or `value`",
            "t.toml: fields.consent: missing: say where the consent (or use [[wide]]) is read",
            "t.toml: fields.updated.timezone: unknown time zone \"Europe/Berln\": use an IANA name such as Europe/Berlin or UTC",
            "t.toml: fields.delete.values: list at least one non-empty value, e.g. [\"D\"]",
            "t.toml: values.consent: \"ja\" is listed for both true and false",
            "t.toml: values.usage.sms: unknown usage \"sms\": expected call_recording or whatsapp (or skip, for values to leave out)",
            "t.toml: values.usage.whatsapp: list at least one token, and no empty ones",
        ];
        for e in expected {
            assert!(p.contains(&e.to_string()), "expected {e:?} among {p:#?}");
        }
        assert!(
            p.iter()
                .any(|p| p.starts_with("t.toml: fields.created.format: \"%Q\" is not rfc3339")),
            "{p:#?}"
        );
    }

    #[test]
    fn field_sources_are_checked() {
        let base = |fields: &str| format!("{CSV}[fields]\nusage = {{ value = \"whatsapp\" }}\nconsent = {{ column = 3 }}\n{fields}");
        assert_problem(&base(""), "t.toml: fields.number: missing: say where the phone number is read");
        assert_problem(
            &base("number = {}"),
            "t.toml: fields.number: say where the value is: one of `column`, `path` or `value`",
        );
        assert_problem(
            &base("number = { path = \"a\" }"),
            "t.toml: fields.number: `path` is for json, ndjson and xml files; use `column` with csv/tsv",
        );
        assert_problem(
            &base("number = { column = 0 }"),
            "t.toml: fields.number.column: position 0: positions count from 1",
        );
        assert_problem(
            &base("number = { column = \" \" }"),
            "t.toml: fields.number: the column name or path is empty",
        );
        assert_problem(
            &base("number = { column = \"a\", format = \"epoch_s\" }"),
            "t.toml: fields.number.format: \"epoch_s\": expected national or international",
        );
        assert_problem(
            &base("number = { column = \"a\", values = [\"x\"] }"),
            "t.toml: fields.number.values: only for `delete`; value tokens of other fields go in [values]",
        );
        assert_problem(
            &base("number = { colum = \"a\" }"),
            "t.toml: fields.number: unknown field `colum`, expected one of `column`, `path`, `value`, `format`, `timezone`, `values`",
        );
        assert_problem(
            &base("number = { column = \"a\" }\ndelete = { column = \"D\" }"),
            "t.toml: fields.delete.values: missing: list the values that mark a removal, e.g. values = [\"D\"]",
        );
        let sms = format!("{CSV}[fields]\nnumber = {{ column = 1 }}\nusage = {{ value = \"sms\" }}\nconsent = {{ column = 3 }}\n");
        assert_problem(
            &sms,
            "t.toml: fields.usage.value: \"sms\" is not one of the accepted values (call_recording: call_recording; whatsapp: whatsapp)",
        );
        assert!(problems(&base("number = { column = 1 }")).is_empty());
    }

    #[test]
    fn wide_entries_are_checked() {
        let text = format!(
            "{CSV}[fields]\nnumber = {{ column = \"n\" }}\nusage = {{ column = \"u\" }}\n[[wide]]\nusage = \"sms\"\nconsent = {{ column = \"s\" }}\n\
             [[wide]]\nusage = \"whatsapp\"\nconsent = {{ column = \"w\" }}\n[[wide]]\nusage = \"WhatsApp\"\nconsent = {{ column = \"w2\" }}\n"
        );
        let p = problems(&text);
        assert!(
            p.contains(&"t.toml: fields.usage: not used with [[wide]]: each [[wide]] entry names its usage and consent".to_string()),
            "{p:#?}"
        );
        assert!(
            p.contains(&"t.toml: wide[1].usage: unknown usage \"sms\": expected call_recording or whatsapp".to_string()),
            "{p:#?}"
        );
        assert!(
            p.contains(&"t.toml: wide[3].usage: whatsapp has another [[wide]] entry already".to_string()),
            "{p:#?}"
        );
    }

    #[test]
    fn time_formats_are_tried_when_loading() {
        assert_eq!(time_kind("rfc3339"), Ok(TimeKind::Rfc3339));
        assert_eq!(time_kind("%d.%m.%Y %H:%M"), Ok(TimeKind::Local("%d.%m.%Y %H:%M".into())));
        assert_eq!(time_kind("%Y-%m-%d"), Ok(TimeKind::Date("%Y-%m-%d".into())));
        assert_eq!(
            time_kind("%Y-%m-%d %H:%M:%S %z"),
            Ok(TimeKind::WithOffset("%Y-%m-%d %H:%M:%S %z".into()))
        );
        for bad in ["iso", "%H:%M", "%Y-%m-%d %Q", "epoch"] {
            assert!(time_kind(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn test_expectations_are_checked() {
        let text = format!(
            "{CSV}[fields]\nnumber = {{ column = 1 }}\nusage = {{ column = 2 }}\nconsent = {{ column = 3 }}\n[[tests]]\nname = \"x\"\ninput = \"\"\n\
             expect = [{{ number = \"+49 CALL\", usage = \"whatsapp\", consent = true }}, {{ number = \"+4915112345678\", usage = \"sms\", consent = true }},\n\
             {{ number = \"+4915112345678\", usage = \"whatsapp\" }}, {{ number = \"+4915112345678\", usage = \"whatsapp\", consent = true, created = \"yesterday\" }}]\n\
             rejects = [{{ record = 1, field = \"phone\" }}]\n"
        );
        let p = problems(&text);
        let expected = [
            "t.toml: tests[1].expect[1]: number \"+49 CALL\": the number contains 'C', which is not a digit or a separator",
            "t.toml: tests[1].expect[2]: unknown usage \"sms\": expected call_recording or whatsapp",
            "t.toml: tests[1].expect[3]: give `consent = true|false` or `delete = true`",
            "t.toml: tests[1].expect[4]: \"yesterday\" is not a date (YYYY-MM-DD) or an RFC 3339 time (2024-05-01T12:00:00Z)",
            "t.toml: tests[1].rejects[1].field: \"phone\": expected one of number, region, usage, consent, created, updated, delete",
        ];
        for e in expected {
            assert!(p.contains(&e.to_string()), "expected {e:?} among {p:#?}");
        }
    }

    #[test]
    fn columns_are_listed_once_in_write_order() {
        let m = super::super::testing::mapping(&format!(
            "{CSV}[fields]\nnumber = {{ column = \"n\" }}\nupdated = {{ column = \"t\" }}\ndelete = {{ column = \"D\", values = [\"D\"] }}\n\
             [[wide]]\nusage = \"whatsapp\"\nconsent = {{ column = \"w\" }}\n[[wide]]\nusage = \"call_recording\"\nconsent = {{ column = \"r\" }}\n"
        ));
        let names: Vec<String> = m.wanted_fields().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["n", "w", "r", "t", "D"]);
        assert_eq!(m.out_columns(), m.wanted_fields());
    }
}
