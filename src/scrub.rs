//! Rewriting a file the daemon keeps (an outbox file not yet taken, a pulled file kept in
//! `processed/` or `failed/`, a report beside it) without a purged number's records, so a purge
//! reaches files as well as the store. Records are read through the file's mapping: one whose number
//! is the purged one goes, and so does any record that cannot be read as a consent but whose digits
//! hold the number's; every other record is written back as it came.

use crate::domain::{PhoneNumber, PhoneParser};
use crate::formats::{self, RecordReader};
use crate::mapping::Mapping;
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What a purge did to one file.
#[derive(Debug, Clone, Serialize)]
pub struct Scrubbed {
    pub path: String,
    /// `rewritten` (without the number's records) or `removed` (a part that could not be read held
    /// the number, so the file could not be rewritten without it).
    pub action: String,
    /// Records (or report entries) taken out.
    pub records: u64,
}

/// Whether text holds the number: its international digits, or national ones as dialled in its
/// country (`0151…`), once separators are left out.
pub fn names(number: PhoneNumber, text: &[u8]) -> bool {
    let digits: String = text.iter().filter(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
    digits.contains(&number.digits()) || number.national_digits().is_some_and(|n| n.len() >= 6 && digits.contains(&n))
}

/// Rewrites `path` without the records of `number`; `None` when it holds none.
pub fn scrub_file(path: &Path, mapping: &Mapping, phones: &PhoneParser, number: PhoneNumber) -> Result<Option<Scrubbed>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    // Most files do not hold the number at all: nothing to read record by record.
    if !names(number, &bytes) {
        return Ok(None);
    }
    if path.extension().is_some_and(|e| e == "json") && path.to_string_lossy().ends_with(".report.json") {
        return scrub_report(path, &bytes, number);
    }
    let name = path.display().to_string();
    let mut reader: Box<dyn RecordReader> = match formats::open_reader(
        mapping.format(),
        &mapping.wanted_fields(),
        &mapping.optional_fields(),
        Box::new(std::io::Cursor::new(bytes)),
        &name,
    ) {
        Ok(r) => r,
        // Not readable as records at all (a broken file kept in failed/): it holds the number, so it
        // cannot be rewritten without it and goes, as an unreadable rest does.
        Err(_) => {
            std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
            return Ok(Some(Scrubbed {
                path: name,
                action: "removed".into(),
                records: 1,
            }));
        }
    };
    let tmp = tmp_path(path);
    let file = std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    let mut writer = formats::open_writer(
        mapping.format(),
        &mapping.wanted_fields(),
        reader.header(),
        Box::new(std::io::BufWriter::new(file)),
    )
    .map_err(|e| e.to_string())?;
    let mut dropped = 0u64;
    let mut incoming = Vec::new();
    let fail = |tmp: &Path, e: String| {
        let _ = std::fs::remove_file(tmp);
        e
    };
    while let Some(next) = reader.next_record() {
        let keep = match &next {
            Ok(record) => {
                incoming.clear();
                match mapping.to_incoming(record, phones, &mut incoming) {
                    Ok(()) => incoming.iter().all(|i| i.number != number),
                    Err(_) => !reader.raw().is_some_and(|raw| names(number, raw)),
                }
            }
            Err(e) if !e.fatal => !reader.raw().is_some_and(|raw| names(number, raw)),
            Err(_) => {
                // The rest cannot be read as records: kept if it does not hold the number, else the
                // file cannot be rewritten without it and goes.
                let mut rest = Vec::new();
                reader.rest(&mut rest).map_err(|e| fail(&tmp, e.to_string()))?;
                if names(number, &rest) {
                    drop(writer);
                    let _ = std::fs::remove_file(&tmp);
                    std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
                    return Ok(Some(Scrubbed {
                        path: name,
                        action: "removed".into(),
                        records: dropped + 1,
                    }));
                }
                writer.finish().map_err(|e| fail(&tmp, e.to_string()))?;
                let mut f = std::fs::OpenOptions::new().append(true).open(&tmp).map_err(|e| e.to_string())?;
                f.write_all(&rest).map_err(|e| fail(&tmp, e.to_string()))?;
                return finish(path, &tmp, name, dropped);
            }
        };
        if !keep {
            dropped += 1;
            continue;
        }
        let written = match (reader.raw(), &next) {
            (Some(raw), _) => writer.write_raw(raw),
            (None, Ok(record)) => writer.write(&mapping.reject_record(record)),
            (None, Err(_)) => Ok(()),
        };
        written.map_err(|e| fail(&tmp, e.to_string()))?;
    }
    writer.finish().map_err(|e| fail(&tmp, e.to_string()))?;
    finish(path, &tmp, name, dropped)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(".scrub");
    path.with_file_name(name)
}

fn finish(path: &Path, tmp: &Path, name: String, dropped: u64) -> Result<Option<Scrubbed>, String> {
    std::fs::File::open(tmp).and_then(|f| f.sync_all()).map_err(|e| e.to_string())?;
    std::fs::rename(tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    Ok(Some(Scrubbed {
        path: name,
        action: "rewritten".into(),
        records: dropped,
    }))
}

/// A report beside a failed file: its refused and skipped entries that hold the number go.
fn scrub_report(path: &Path, bytes: &[u8], number: PhoneNumber) -> Result<Option<Scrubbed>, String> {
    let name = path.display().to_string();
    let Ok(mut report) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        std::fs::remove_file(path).map_err(|e| e.to_string())?;
        return Ok(Some(Scrubbed {
            path: name,
            action: "removed".into(),
            records: 1,
        }));
    };
    let mut dropped = 0u64;
    if let Some(obj) = report.as_object_mut() {
        for list in obj.values_mut().filter_map(|v| v.as_array_mut()) {
            let before = list.len();
            list.retain(|entry| !names(number, entry.to_string().as_bytes()));
            dropped += (before - list.len()) as u64;
        }
    }
    let text = serde_json::to_vec_pretty(&report).expect("serialisable");
    if names(number, &text) {
        // Held elsewhere in the report: it goes whole.
        std::fs::remove_file(path).map_err(|e| e.to_string())?;
        return Ok(Some(Scrubbed {
            path: name,
            action: "removed".into(),
            records: dropped.max(1),
        }));
    }
    let tmp = tmp_path(path);
    std::fs::write(&tmp, text).map_err(|e| e.to_string())?;
    finish(path, &tmp, name, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_cannot_be_read_as_records_and_holds_the_number_goes() {
        let dir = tempfile::tempdir().unwrap();
        let mapping = Mapping::load("generic-json", dir.path()).unwrap();
        let phones = PhoneParser::default();
        let n = PhoneNumber::parse("+491512345678").unwrap();
        let broken = dir.path().join("broken.json");
        std::fs::write(&broken, "{\"no records here\": \"+491512345678\"").unwrap();
        let done = scrub_file(&broken, &mapping, &phones, n).unwrap().unwrap();
        assert_eq!(done.action, "removed");
        assert!(!broken.exists());
        let other = dir.path().join("other.json");
        std::fs::write(&other, "[{\"phone\": \"+491710000000\"}]").unwrap();
        assert!(scrub_file(&other, &mapping, &phones, n).unwrap().is_none());
        assert!(other.exists());
    }
}
