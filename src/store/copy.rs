//! `consentd store copy`: a store moved whole to another backend (sled to PostgreSQL and back, or
//! sled to sled), history included, and verified.
//!
//! What is copied: the journal, entry by entry with its sequence number, time, actor, source, before
//! and after, tombstone time and proof; the consents and tombstones follow from it in the target, as
//! they do in each store. Beside it, as the bytes both stores keep ([`Kept`]): the store id (so remote
//! systems' idempotency keys stay ours), the erasure key and the seals of purges (purged numbers are
//! still recognised), saved searches, administrative events and sync state. The last sequence number
//! given out is carried over even when a purge removed the changes that had it, so the change feed
//! never gives out a number twice.
//!
//! The target must be empty, or an interrupted copy of the same store (the same store id, its journal
//! behind the source's): a re-run goes on from the target's last change, in chunks each written in one
//! transaction (one flushed batch in sled). At the end both stores are read again and compared: the last
//! change, counts per usage and value, the journal's entries and the consents (counted, with a digest
//! of each), and the kept entries. The source must not be written meanwhile (stop the daemons).

use super::{AuditEntry, Store, StoreError};
use crate::domain::Criteria;
use std::hash::{Hash, Hasher};

/// Journal entries copied per transaction (about 25 MB of them in hand).
const CHUNK: usize = 100_000;

/// What a store keeps beside consents and the journal, as both backends encode it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kept {
    /// `store_id`, `erasure_key`, `seal:<hash>`.
    Meta {
        key: String,
        value: Vec<u8>,
    },
    Search {
        owner: String,
        name: String,
        body: Vec<u8>,
    },
    Event {
        seq: u64,
        body: Vec<u8>,
    },
    Sync {
        connector: String,
        kind: String,
        id: Vec<u8>,
        value: Vec<u8>,
    },
}

impl Kept {
    /// Whether a `meta` key is one a copy carries (the others are each store's own bookkeeping).
    pub fn meta_key_is_kept(key: &str) -> bool {
        key == "store_id" || key == "erasure_key" || key.starts_with("seal:")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the target store holds {0}: copy into an empty store (or re-run an interrupted copy of this same store)")]
    NotEmpty(String),
    #[error("the copy differs from the source: {0}")]
    Mismatch(String),
}

/// What a copy did, and what both stores hold after it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyReport {
    /// The target's last change before the copy (0: it was empty; more: a re-run went on from there).
    pub resumed_after: u64,
    /// Journal entries written by this run.
    pub changes_copied: u64,
    /// Journal entries each store holds.
    pub journal_entries: u64,
    pub consents: u64,
    /// Store id, erasure key, seals, saved searches, events, sync entries.
    pub kept_entries: usize,
    pub last_change: u64,
    /// Seconds copying, and reading both stores again to compare them.
    pub copy_seconds: f64,
    pub verify_seconds: f64,
}

/// Copies `from` into `to` (see the module's doc); `progress` is told the journal entries written so
/// far and the source's last change.
pub fn copy(from: &Store, to: &Store, mut progress: impl FnMut(u64, u64)) -> Result<CopyReport, CopyError> {
    // The source's id and erasure key are made now if they never were, so both stores have the same.
    let id = from.store_id()?;
    from.erasure_hasher()?;
    let mut kept = from.kept()?;
    kept.sort();
    let last = from.last_change()?;
    let target_last = to.last_change()?;
    let target_kept = to.kept()?;
    if target_last > 0 || !target_kept.is_empty() {
        let target_id = target_kept.iter().find_map(|k| match k {
            Kept::Meta { key, value } if key == "store_id" => Some(String::from_utf8_lossy(value).into_owned()),
            _ => None,
        });
        if target_id.as_deref() != Some(id.as_str()) {
            return Err(CopyError::NotEmpty(format!(
                "another store's data (its changes up to {target_last}, {} kept entries)",
                target_kept.len()
            )));
        }
        if target_last > last {
            return Err(CopyError::NotEmpty(format!(
                "changes up to {target_last}, past the source's last ({last})"
            )));
        }
    }
    let started = std::time::Instant::now();
    to.replace_kept(&kept)?;
    let (mut after, mut copied) = (target_last, 0u64);
    loop {
        let entries = from.changes_since(after, CHUNK)?;
        let Some(end) = entries.last().map(|e| e.seq) else { break };
        to.restore(&entries, end)?;
        copied += entries.len() as u64;
        after = end;
        progress(after, last);
    }
    to.restore(&[], last)?;
    to.flush()?;
    let copy_seconds = tenths(started.elapsed());
    let started = std::time::Instant::now();
    let report = verify(from, to, &kept)?;
    Ok(CopyReport {
        resumed_after: target_last,
        changes_copied: copied,
        copy_seconds,
        verify_seconds: tenths(started.elapsed()),
        ..report
    })
}

/// Both stores read again and compared (see the module's doc).
fn verify(from: &Store, to: &Store, kept: &[Kept]) -> Result<CopyReport, CopyError> {
    let mismatch = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        CopyError::Mismatch(format!("{what}: the source has {a:?}, the copy {b:?}"))
    };
    let last = (from.last_change()?, to.last_change()?);
    if last.0 != last.1 {
        return Err(mismatch("last change", &last.0, &last.1));
    }
    let counts = (from.counts()?, to.counts()?);
    if counts.0 != counts.1 {
        return Err(mismatch("consents per usage and value", &counts.0, &counts.1));
    }
    let journal = (journal_digest(from)?, journal_digest(to)?);
    if journal.0 != journal.1 {
        return Err(mismatch("journal (entries, digest)", &journal.0, &journal.1));
    }
    let consents = (consents_digest(from)?, consents_digest(to)?);
    if consents.0 != consents.1 {
        return Err(mismatch("consents (count, digest)", &consents.0, &consents.1));
    }
    let mut target_kept = to.kept()?;
    target_kept.sort();
    if target_kept != kept {
        let (a, b) = (kept.len(), target_kept.len());
        return Err(CopyError::Mismatch(format!(
            "the kept entries differ (the source has {a}, the copy {b})"
        )));
    }
    Ok(CopyReport {
        resumed_after: 0,
        changes_copied: 0,
        journal_entries: journal.0 .0,
        consents: consents.0 .0,
        kept_entries: kept.len(),
        last_change: last.0,
        copy_seconds: 0.0,
        verify_seconds: 0.0,
    })
}

fn tenths(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// A digest that does not depend on the order things are read in: the sum of each one's hash.
fn digest_of(h: &impl Hash) -> u64 {
    let mut s = std::hash::DefaultHasher::new();
    h.hash(&mut s);
    s.finish()
}

fn entry_digest(e: &AuditEntry) -> u64 {
    let json = serde_json::to_vec(e).unwrap_or_default();
    digest_of(&(
        json,
        e.deleted_at.map(|t| t.millis()),
        e.origin.file.as_deref(),
        e.origin.call_id.as_deref(),
    ))
}

fn journal_digest(store: &Store) -> Result<(u64, u64), StoreError> {
    let (mut n, mut sum, mut after) = (0u64, 0u64, 0u64);
    loop {
        let entries = store.changes_since(after, CHUNK)?;
        let Some(last) = entries.last() else { break };
        after = last.seq;
        n += entries.len() as u64;
        sum = entries.iter().fold(sum, |s, e| s.wrapping_add(entry_digest(e)));
    }
    Ok((n, sum))
}

fn consents_digest(store: &Store) -> Result<(u64, u64), StoreError> {
    let (mut n, mut sum) = (0u64, 0u64);
    for c in store.scan(&Criteria::default())? {
        let c = c?;
        n += 1;
        let source = c.source.to_string();
        sum = sum.wrapping_add(digest_of(&(
            c.number.as_u64(),
            c.usage.code(),
            c.consent,
            c.created_at.millis(),
            c.updated_at.millis(),
            source,
        )));
    }
    Ok((n, sum))
}

/// The three parts of a key separated by NULs (owner · name; connector · kind · id, whose id may
/// hold NULs).
fn split_key(key: &[u8], parts: usize) -> Option<Vec<&[u8]>> {
    let out: Vec<&[u8]> = key.splitn(parts, |&b| b == 0).collect();
    (out.len() == parts).then_some(out)
}

fn text(b: &[u8]) -> Result<String, StoreError> {
    String::from_utf8(b.to_vec()).map_err(|_| StoreError::Corrupt("a kept key is not UTF-8".into()))
}

impl super::SledStore {
    /// What the store keeps beside consents and the journal (see [`Kept`]).
    pub fn kept(&self) -> super::Result<Vec<Kept>> {
        let g = self.g().clone();
        let mut out = Vec::new();
        for kv in g.meta.iter() {
            let (k, v) = kv?;
            let key = String::from_utf8_lossy(&k).into_owned();
            if Kept::meta_key_is_kept(&key) {
                out.push(Kept::Meta { key, value: v.to_vec() });
            }
        }
        for kv in g.searches.iter() {
            let (k, v) = kv?;
            let p = split_key(&k, 2).ok_or_else(|| StoreError::Corrupt("saved search key".into()))?;
            out.push(Kept::Search {
                owner: text(p[0])?,
                name: text(p[1])?,
                body: v.to_vec(),
            });
        }
        for kv in g.events.iter() {
            let (k, v) = kv?;
            let seq = <[u8; 8]>::try_from(k.as_ref()).map_err(|_| StoreError::Corrupt("event key".into()))?;
            out.push(Kept::Event {
                seq: u64::from_be_bytes(seq),
                body: v.to_vec(),
            });
        }
        for kv in g.sync.iter() {
            let (k, v) = kv?;
            let p = split_key(&k, 3).ok_or_else(|| StoreError::Corrupt("sync key".into()))?;
            out.push(Kept::Sync {
                connector: text(p[0])?,
                kind: text(p[1])?,
                id: p[2].to_vec(),
                value: v.to_vec(),
            });
        }
        Ok(out)
    }

    /// Replaces what the store keeps beside consents and the journal with `kept`, durably.
    pub fn replace_kept(&self, kept: &[Kept]) -> super::Result<()> {
        let _writer = self.writer.lock().expect("writer lock");
        let g = self.g().clone();
        for kv in g.meta.iter() {
            let (k, _) = kv?;
            if Kept::meta_key_is_kept(&String::from_utf8_lossy(&k)) {
                g.meta.remove(k)?;
            }
        }
        for tree in [&g.searches, &g.events, &g.sync] {
            tree.clear()?;
        }
        for k in kept {
            match k {
                Kept::Meta { key, value } => g.meta.insert(key.as_bytes(), value.as_slice())?,
                Kept::Search { owner, name, body } => g.searches.insert(super::searches::SavedSearch::key(owner, name), body.as_slice())?,
                Kept::Event { seq, body } => g.events.insert(seq.to_be_bytes(), body.as_slice())?,
                Kept::Sync {
                    connector,
                    kind,
                    id,
                    value,
                } => g
                    .sync
                    .insert([connector.as_bytes(), &[0], kind.as_bytes(), &[0], id].concat(), value.as_slice())?,
            };
        }
        g.db.flush()?;
        Ok(())
    }

    /// Writes journal entries of another store as they are (their sequence numbers, times, actors,
    /// sources, before and after, tombstones and proof) and brings consents and indexes in line;
    /// entries at or below the last change held are skipped. The last change becomes at least `last`.
    pub fn restore(&self, entries: &[AuditEntry], last: u64) -> super::Result<()> {
        use super::keys::{RawChange, RawPlace, Stored};
        let mut writer = self.writer.lock().expect("writer lock");
        let g = self.g().clone();
        let applied = g.applied()?;
        let stored = |c: &crate::domain::Consent| -> super::Result<Stored> {
            Ok(Stored {
                consent: c.consent,
                created: c.created_at.millis(),
                updated: c.updated_at.millis(),
                source: g.names.id(&c.source.to_string())?,
            })
        };
        let mut changes = Vec::with_capacity(entries.len());
        let mut prev = applied;
        for e in entries.iter().filter(|e| e.seq > applied) {
            if e.seq <= prev {
                return Err(StoreError::Corrupt(format!("journal entries out of order at {}", e.seq)));
            }
            prev = e.seq;
            let place = match (&e.origin.file, e.origin.line, e.origin.record) {
                (Some(f), line, record) => {
                    let at = line.or(record).unwrap_or(0);
                    Some(RawPlace {
                        file: g.names.id(f)?,
                        at: u32::try_from(at).map_err(|_| StoreError::Corrupt(format!("line {at} of change {}", e.seq)))?,
                        by_record: line.is_none() && record.is_some(),
                    })
                }
                _ => None,
            };
            changes.push(RawChange {
                seq: e.seq,
                at: e.at.millis(),
                actor: g.names.id(&e.actor)?,
                source: g.names.id(&e.source.to_string())?,
                number: e.number,
                usage: e.usage,
                before: e.before.as_ref().map(stored).transpose()?,
                after: e.after.as_ref().map(stored).transpose()?,
                deleted_at: e.deleted_at.map(|t| t.millis()),
                place,
                call_id: e.origin.call_id.as_deref().map(Into::into),
            });
        }
        self.journal(&changes)?;
        g.db.flush()?;
        // The maps take changes fastest in key order (a key's changes in their order).
        changes.sort_by_cached_key(|c| (super::keys::number_key(c.number, c.usage), c.seq));
        g.apply_changes(|| changes.iter().cloned().map(Ok))?;
        let last = last.max(prev);
        if last > applied {
            g.meta.insert("applied", &last.to_be_bytes())?;
        }
        g.db.flush()?;
        writer.next_seq = writer.next_seq.max(last + 1);
        writer.counts = None;
        Ok(())
    }
}
