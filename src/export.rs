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
pub fn export<'w>(store: &Store, mapping: &Mapping, criteria: &Criteria, out: Box<dyn Write + 'w>) -> Result<u64, ExportError> {
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
        }
    }
    writer.finish()?;
    Ok(written)
}
