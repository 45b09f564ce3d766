//! Dead letters: the records a pull refused, kept per connector with where and why, to be replayed
//! once the mapping is fixed, and found and removed by a DPO purge. The records themselves are kept
//! as they came, in parts of at most [`PART_BYTES`] (kind `deadpart`), so a page or file with many
//! refused records never becomes one huge value in memory or in the store.

use super::{Sync, SyncError};
use crate::domain::{PhoneNumber, Timestamp};
use crate::import::{ImportReport, Reject};
use serde::{Deserialize, Serialize};
use std::io::Read;
use std::path::Path;

/// The largest part of a dead letter's records.
const PART_BYTES: usize = 1 << 20;

/// Refused records of a pull, kept for inspection and replay after the mapping is fixed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub at: String,
    /// The file or page URL they came from.
    pub origin: String,
    pub rejected: u64,
    /// Where and why (the first ones).
    pub rejects: Vec<Reject>,
    /// The refused records' bytes, kept in `parts` parts.
    #[serde(default)]
    pub bytes: u64,
    #[serde(default)]
    pub parts: u32,
    /// Dead letters of earlier versions: the records in the mapping's format, hex.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub records: String,
}

fn part_id(id: u64, part: u32) -> Vec<u8> {
    [&id.to_be_bytes()[..], &part.to_be_bytes()].concat()
}

impl Sync {
    /// Keeps the refused records of one import (written to `rejects`) as a new dead letter.
    pub(super) fn keep_dead_letter(&self, name: &str, origin: &str, report: &ImportReport, rejects: &Path) -> Result<(), SyncError> {
        let id = self.store.sync_next_id(name, "dead")?;
        let mut letter = DeadLetter {
            id,
            at: Timestamp::now().to_rfc3339(),
            origin: origin.to_string(),
            rejected: report.rejected,
            rejects: report.rejects.clone(),
            bytes: 0,
            parts: 0,
            records: String::new(),
        };
        self.put_records(name, &mut letter, rejects)?;
        self.store.sync_put(name, "dead", &id.to_be_bytes(), &letter)?;
        Ok(())
    }

    /// Writes a dead letter's records from a file, part by part, in place of those it had.
    fn put_records(&self, name: &str, letter: &mut DeadLetter, from: &Path) -> Result<(), SyncError> {
        self.store.sync_remove_prefix(name, "deadpart", &letter.id.to_be_bytes())?;
        letter.records.clear();
        let (mut bytes, mut parts) = (0u64, 0u32);
        // An unreadable rejects file leaves the letter without records; its rejects still say why.
        if let Ok(mut f) = std::fs::File::open(from) {
            let mut buf = vec![0u8; PART_BYTES];
            loop {
                let mut filled = 0;
                while filled < PART_BYTES {
                    match f.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(SyncError::Failed(format!("cannot read the refused records: {e}"))),
                    }
                }
                if filled == 0 {
                    break;
                }
                self.store
                    .sync_put_bytes(name, "deadpart", &part_id(letter.id, parts), &buf[..filled])?;
                bytes += filled as u64;
                parts += 1;
            }
        }
        letter.bytes = bytes;
        letter.parts = parts;
        Ok(())
    }

    /// A connector's dead letters (without their records).
    pub fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>, SyncError> {
        Ok(self
            .store
            .sync_list::<DeadLetter>(name, "dead")?
            .into_iter()
            .map(|(_, mut d)| {
                if !d.records.is_empty() {
                    d.bytes = d.records.len() as u64 / 2;
                    d.records.clear();
                }
                d
            })
            .collect())
    }

    pub fn dead_letter(&self, name: &str, id: u64) -> Result<DeadLetter, SyncError> {
        self.store
            .sync_get(name, "dead", &id.to_be_bytes())?
            .ok_or_else(|| SyncError::NotFound(format!("connector {name:?} has no dead letter {id}")))
    }

    /// A dead letter's records, part by part (`f` returns false to stop).
    fn each_part(&self, name: &str, d: &DeadLetter, f: &mut dyn FnMut(&[u8]) -> bool) -> Result<(), SyncError> {
        if !d.records.is_empty() {
            f(&hex::decode(&d.records).unwrap_or_default());
            return Ok(());
        }
        for part in 0..d.parts {
            let bytes = self
                .store
                .sync_get_bytes(name, "deadpart", &part_id(d.id, part))?
                .ok_or_else(|| SyncError::Failed(format!("dead letter {} lacks part {part}", d.id)))?;
            if !f(&bytes) {
                break;
            }
        }
        Ok(())
    }

    /// A dead letter's records, whole (for a replay).
    pub fn dead_letter_records(&self, name: &str, d: &DeadLetter) -> Result<Vec<u8>, SyncError> {
        let mut out = Vec::with_capacity(d.bytes as usize);
        self.each_part(name, d, &mut |b| {
            out.extend_from_slice(b);
            true
        })?;
        Ok(out)
    }

    /// After a replay: the records still refused (in `rejects`) replace the letter's, or the letter
    /// goes when none is left.
    /// A replay reads the dead letter's records as a file of their own, so its refusals name places
    /// in that file (line 2, 3, … of the replayed records): puts back where each record was in the
    /// file or page it came from, by its position among the letter's records.
    pub fn at_original_places(letter: &DeadLetter, report: &mut ImportReport) {
        for r in &mut report.rejects {
            let Some(first) = letter.rejects.get((r.record as usize).wrapping_sub(1)) else {
                continue;
            };
            r.file = first.file.clone();
            r.line = first.line;
            r.record = first.record;
            r.path = first.path.clone();
        }
    }

    pub fn settle_dead_letter(&self, name: &str, mut d: DeadLetter, report: &ImportReport, rejects: &Path) -> Result<(), SyncError> {
        if report.rejected == 0 {
            return self.remove_dead_letter(name, d.id);
        }
        d.rejected = report.rejected;
        d.rejects = report.rejects.clone();
        self.put_records(name, &mut d, rejects)?;
        self.store.sync_put(name, "dead", &d.id.to_be_bytes(), &d)?;
        Ok(())
    }

    pub fn remove_dead_letter(&self, name: &str, id: u64) -> Result<(), SyncError> {
        self.store.sync_remove_prefix(name, "deadpart", &id.to_be_bytes())?;
        self.store.sync_remove(name, "dead", &id.to_be_bytes())?;
        Ok(())
    }

    /// Dead letters (refused pulled records) that may hold the number: any line of their records whose
    /// digits contain the number's, international or national (as dialled in its country: `0151…`).
    pub fn dead_letters_naming(&self, number: PhoneNumber) -> Result<Vec<(String, DeadLetter)>, SyncError> {
        let digits = number.digits();
        let national = number.national_digits();
        let names_it = |line: &[u8]| {
            let line_digits: String = line.iter().filter(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
            line_digits.contains(&digits) || national.as_ref().is_some_and(|n| line_digits.contains(n))
        };
        let mut out = Vec::new();
        for c in &self.connectors {
            for (_, d) in self.store.sync_list::<DeadLetter>(&c.cfg.name, "dead")? {
                let mut names = d.rejects.iter().any(|r| r.value.as_deref().is_some_and(|v| v.contains(&digits)));
                // Lines may run across parts: the start of a line is carried to the next part.
                let mut carry: Vec<u8> = Vec::new();
                if !names {
                    self.each_part(&c.cfg.name, &d, &mut |part| {
                        carry.extend_from_slice(part);
                        let end = carry.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                        names = carry[..end].split(|&b| b == b'\n').any(&names_it);
                        carry.drain(..end);
                        !names
                    })?;
                    names = names || names_it(&carry);
                }
                if names {
                    out.push((c.cfg.name.clone(), d));
                }
            }
        }
        Ok(out)
    }

    /// Rewrites the files file connectors keep without the number's records (a DPO purge): outbox
    /// files not yet taken by their reader, and pulled files kept in `processed/` and `failed/` (with
    /// their reports). Returns what was done to which file.
    pub fn purge_files(&self, number: PhoneNumber) -> Result<Vec<crate::scrub::Scrubbed>, SyncError> {
        let mut out = Vec::new();
        for c in &self.connectors {
            let Some(f) = &c.cfg.file else { continue };
            let base = c.mapping.phones(&self.config.phone_parser());
            let phones = c.region().map_or(base, |r| base.with_region(r));
            let mut dirs: Vec<(std::path::PathBuf, &crate::mapping::Mapping)> = Vec::new();
            if let Some(d) = &f.dir {
                dirs.push((d.join("processed"), &c.mapping));
                dirs.push((d.join("failed"), &c.mapping));
            }
            if let Some(o) = &f.out_dir {
                dirs.push((o.clone(), &c.push_mapping));
            }
            for (dir, mapping) in dirs {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                let mut files: Vec<std::path::PathBuf> = entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                    .map(|e| e.path())
                    .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !n.starts_with('.')))
                    .collect();
                files.sort();
                for path in files {
                    let done = crate::scrub::scrub_file(&path, mapping, &phones, number)
                        .map_err(|e| SyncError::Failed(format!("connector {}: {e}", c.cfg.name)))?;
                    out.extend(done);
                }
            }
        }
        Ok(out)
    }

    /// Removes the dead letters that may hold the number (a DPO purge); returns how many.
    pub fn purge_dead_letters(&self, number: PhoneNumber) -> Result<usize, SyncError> {
        let found = self.dead_letters_naming(number)?;
        for (connector, d) in &found {
            self.remove_dead_letter(connector, d.id)?;
        }
        Ok(found.len())
    }
}
