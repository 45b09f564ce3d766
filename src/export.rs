//! Exports: consents matching any criteria (none: all) written through a mapping, streamed.

use crate::domain::{Consent, Criteria};
use crate::formats::{self, FormatError, OutRecord};
use crate::mapping::Mapping;
use crate::store::{Store, StoreError};
use std::io::Write;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[from] FormatError),
}

/// Writes the matching consents to `out` and returns how many were written. Flat mappings get them
/// in creation-time order; mappings that group a number's consents (wide, nested) get them by number.
/// Only what the mapping can write is exported ([`Mapping::narrow`]: an opt-out list, whose consent is
/// a constant, gets the denied consents only; a WhatsApp list the WhatsApp ones).
/// How often [`export_with`] reports progress, in consents.
const PROGRESS_EVERY: u64 = 4096;

/// How many consents an export of `criteria` writes at most, when the store's counts say it without
/// a scan (criteria of usage and value only); for a progress bar.
pub fn expected(store: &Store, mapping: &Mapping, criteria: &Criteria) -> Option<u64> {
    let (narrowed, _) = mapping.narrow(criteria)?;
    let c = &narrowed;
    if c.number.is_some() || c.digits.is_some() || c.created_from.is_some() || c.created_before.is_some() {
        return None;
    }
    let counts = store.counts().ok()?;
    Some(
        counts
            .iter()
            .filter(|(u, v, _)| c.usage.is_none_or(|x| x == *u) && c.consent.is_none_or(|x| x == *v))
            .map(|(_, _, n)| n)
            .sum(),
    )
}

pub fn export<'w>(store: &Store, mapping: &Mapping, criteria: &Criteria, out: Box<dyn Write + 'w>) -> Result<u64, ExportError> {
    export_with(store, mapping, criteria, out, &mut |_| {})
}

/// As [`export`], telling `progress` how many consents are written every few thousand.
pub fn export_with<'w>(
    store: &Store,
    mapping: &Mapping,
    criteria: &Criteria,
    out: Box<dyn Write + 'w>,
    progress: &mut dyn FnMut(u64),
) -> Result<u64, ExportError> {
    let mut writer = formats::open_writer(mapping.format(), &mapping.out_columns(), None, out)?;
    let Some((narrowed, _)) = mapping.narrow(criteria) else {
        writer.finish()?;
        return Ok(0);
    };
    let criteria = &narrowed;
    let mut written = 0u64;
    // One record, filled again for each: its buffers are reused.
    let mut record = OutRecord::default();
    if mapping.groups_by_number() {
        let mut group: Vec<Consent> = Vec::with_capacity(2);
        for c in store.scan_by_number(criteria)? {
            let c = c?;
            if !mapping.expresses(c.usage, c.consent) {
                continue;
            }
            if group.first().is_some_and(|g| g.number != c.number) {
                mapping.to_out_record(&group, &mut record);
                writer.write(&record)?;
                group.clear();
            }
            group.push(c);
            written += 1;
            if written.is_multiple_of(PROGRESS_EVERY) {
                progress(written);
            }
        }
        if !group.is_empty() {
            mapping.to_out_record(&group, &mut record);
            writer.write(&record)?;
        }
    } else {
        for c in store.scan(criteria)? {
            mapping.to_out_record(std::slice::from_ref(&c?), &mut record);
            writer.write(&record)?;
            written += 1;
            if written.is_multiple_of(PROGRESS_EVERY) {
                progress(written);
            }
        }
    }
    writer.finish()?;
    progress(written);
    Ok(written)
}
