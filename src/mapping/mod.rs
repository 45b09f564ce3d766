//! Field mappings: records <-> consents, described by `mappings/NAME.toml` and read at run time, so a
//! new external system needs a mapping file, not code. `spec` is the file's shape and its checks;
//! `apply` turns records into incoming changes and consents back into records; `cases` runs the test
//! cases a mapping carries.

// RecordError is returned once per refused record, a rare path; boxing it would change the public API.
#![allow(clippy::result_large_err)]

mod apply;
mod cases;
mod spec;

use crate::domain::{Consent, Incoming, PhoneParser};
use crate::formats::{FieldRef, FormatSpec, Location, OutRecord, Record};
use std::path::{Path, PathBuf};

pub use cases::{CaseOutcome, TestReport};
pub use spec::MappingSpec;

/// A loaded, checked mapping.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// The mapping's name: the file stem (`generic-csv`), used in sources (`import:generic-csv`).
    pub name: String,
    /// The file it was read from.
    pub file: PathBuf,
    pub spec: MappingSpec,
}

/// Every problem found in a mapping file, each with the file and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct MappingErrors {
    pub problems: Vec<String>,
}

/// Why one record was refused (or skipped): where, which field, the value, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: field {field} = {value:?}: {reason}")]
pub struct RecordError {
    pub location: Location,
    /// The mapping key (`number`, `region`, `usage`, `consent`, `created`, `updated`, `delete`) and where
    /// it is read.
    pub field: String,
    pub value: String,
    pub reason: String,
    /// Not refused but skipped: the record is not a consent of ours (a value the mapping lists under
    /// `skip`). It is left out and counted, and not written to the rejects.
    pub skipped: bool,
}

impl Mapping {
    /// `name_or_path` is a mapping name (`mappings_dir/NAME.toml`) or a path to a `.toml` file.
    pub fn load(name_or_path: &str, mappings_dir: &Path) -> Result<Mapping, MappingErrors> {
        spec::load(name_or_path, mappings_dir)
    }

    /// The names of the mappings in `mappings_dir`, sorted.
    pub fn names(mappings_dir: &Path) -> Vec<String> {
        spec::names(mappings_dir)
    }

    /// Parses and checks mapping text; `file` is used in messages and `name` is the mapping's name.
    pub fn from_toml(name: &str, file: &Path, text: &str) -> Result<Mapping, MappingErrors> {
        spec::from_toml(name, file, text)
    }

    pub fn format(&self) -> &FormatSpec {
        &self.spec.format
    }

    /// The parser for this mapping's files: `base` reading national numbers in the mapping's
    /// `[format] region`, when it names one. (A record's own region field goes further still.)
    pub fn phones(&self, base: &PhoneParser) -> PhoneParser {
        self.spec.default_region.map_or(*base, |r| base.with_region(r))
    }

    /// The fields a reader must pick out of each record, in the order `Record::values` gives them.
    pub fn wanted_fields(&self) -> Vec<FieldRef> {
        apply::wanted_fields(self)
    }

    /// Fields a file may lack altogether (the delete marker column): a reader gives them as empty.
    pub fn optional_fields(&self) -> Vec<FieldRef> {
        apply::optional_fields(self)
    }

    /// Turns one record into incoming changes (a wide record gives one per usage it carries). `phones`
    /// reads national numbers in the region the caller decided (see [`Mapping::phones`]), unless the
    /// record names its own.
    pub fn to_incoming(&self, record: &Record, phones: &PhoneParser, out: &mut Vec<Incoming>) -> Result<(), RecordError> {
        apply::to_incoming(self, record, phones, out)
    }

    /// Whether the mapping can write a deletion (it has a delete marker column with a value).
    pub fn writes_deletes(&self) -> bool {
        apply::writes_deletes(self)
    }

    /// Fills `out` with a record that tells the remote system to remove a consent (the delete marker
    /// set); false when the mapping has no delete marker column.
    pub fn to_out_delete(&self, number: crate::domain::PhoneNumber, usage: crate::domain::Usage, out: &mut OutRecord) -> bool {
        apply::to_out_delete(self, number, usage, out)
    }

    /// Whether the mapping can write this consent: its usage has a place, and its value is the one a
    /// constant consent says (an opt-out list never writes a given consent).
    pub fn expresses(&self, usage: crate::domain::Usage, consent: bool) -> bool {
        let (only, usages) = apply::expressible(self);
        usages.contains(&usage) && only.is_none_or(|v| v == consent)
    }

    /// The criteria narrowed to what the mapping can write, and what was left out, in words; `None`
    /// when it can write none of what the criteria match.
    pub fn narrow(&self, criteria: &crate::domain::Criteria) -> Option<(crate::domain::Criteria, Option<String>)> {
        let (only, usages) = apply::expressible(self);
        let mut narrowed = criteria.clone();
        let mut said = Vec::new();
        if let Some(v) = only {
            if criteria.consent.is_some_and(|c| c != v) {
                return None;
            }
            narrowed.consent = Some(v);
            said.push(if v { "given consents only" } else { "denied consents only" }.to_string());
        }
        if usages.len() < crate::domain::Usage::ALL.len() {
            if criteria.usage.is_some_and(|u| !usages.contains(&u)) {
                return None;
            }
            if let [u] = usages.as_slice() {
                narrowed.usage = Some(*u);
                said.push(format!("{u} only"));
            }
        }
        let note = (!said.is_empty()).then(|| format!("{}: the mapping {} writes nothing else", said.join(", "), self.name));
        Some((narrowed, note))
    }

    /// Whether records group the consents of one number (wide or nested layouts); export then hands
    /// [`Mapping::to_out_record`] all consents of a number at once.
    pub fn groups_by_number(&self) -> bool {
        apply::groups_by_number(self)
    }

    /// The columns a writer lays out (CSV header order).
    pub fn out_columns(&self) -> Vec<FieldRef> {
        apply::out_columns(self)
    }

    /// Fills `out` with the record to write for consents of one number (one consent unless
    /// `groups_by_number`). Values name their column by its index in [`Mapping::out_columns`].
    pub fn to_out_record(&self, consents: &[Consent], out: &mut OutRecord) {
        apply::to_out_record(self, consents, out)
    }

    /// A refused record, to write back in the input's format (`--rejects`).
    pub fn reject_record(&self, record: &Record) -> OutRecord {
        apply::reject_record(self, record)
    }

    /// Runs the test cases the mapping carries.
    pub fn run_tests(&self, phones: &PhoneParser) -> TestReport {
        cases::run(self, phones)
    }
}

#[cfg(test)]
mod testing {
    use super::*;

    pub fn mapping(text: &str) -> Mapping {
        Mapping::from_toml("test", Path::new("test.toml"), text).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A record as a reader would give it: each wanted field's value by its name (`../x` for parents).
    pub fn record(m: &Mapping, number: u64, fields: &[(&str, &str)]) -> Record {
        let values = m
            .wanted_fields()
            .iter()
            .map(|w| {
                fields
                    .iter()
                    .find(|(name, _)| FieldRef::Name(name.to_string()) == *w)
                    .map(|(_, v)| v.to_string())
            })
            .collect();
        Record {
            location: Location {
                file: "in.csv".into(),
                line: Some(number + 1),
                record: number,
                path: None,
            },
            values,
            inexact: 0,
        }
    }
}
