//! What a Data Protection Officer does to the store: purge everything held on a number, empty the
//! consent store, and the log of such events (which never holds a number: a purged number is only
//! recognisable by a keyed hash whose secret stays in the store).

use super::{keys, pages::Change, searches::SavedSearch, ChangeContext, RawChange, Result, SledStore, StoreError, Writer};
use crate::domain::{PhoneNumber, Timestamp};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

const EVENT_FORMAT: u8 = 1;

/// An event as both stores keep it: format byte, JSON.
pub(super) fn encode_event(e: &Event) -> Vec<u8> {
    super::encode_json(EVENT_FORMAT, e)
}

pub(super) fn decode_event(v: &[u8]) -> Result<Event> {
    super::decode_json(EVENT_FORMAT, v, "event")
}

/// Consents a reset deletes per batch.
const RESET_CHUNK: usize = 65_536;

/// An administrative event: when, who, what, and figures; never a phone number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    /// `purge` or `reset`; sync work by hand: `sync_resend`, `sync_dismiss`, `erasure_handled`,
    /// `sync_position`.
    pub kind: String,
    /// What was removed, by kind of item.
    #[serde(default)]
    pub removed: PurgeCounts,
    /// Purges: the keyed hash that recognises the purged number (the number itself is not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number_hash: Option<String>,
    /// Purges: when the store was compacted after it, so no file of the store holds the number any
    /// more (the purge itself is `at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physically_done_at: Option<String>,
    /// Sync events: the connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<String>,
    /// Sync events: what was done, and how it came out (no personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Event {
    /// A purge (with the number's keyed hash) or a reset.
    pub(super) fn removal(seq: u64, kind: &str, at: Timestamp, actor: &str, removed: PurgeCounts, number_hash: Option<String>) -> Event {
        Event {
            seq,
            at: at.to_rfc3339(),
            actor: actor.to_string(),
            kind: kind.to_string(),
            removed,
            number_hash,
            physically_done_at: None,
            connector: None,
            detail: None,
        }
    }

    /// An administrative sync event, made now.
    pub(super) fn sync(seq: u64, actor: &str, kind: &str, connector: &str, detail: serde_json::Value) -> Event {
        Event {
            seq,
            at: crate::domain::Timestamp::now().to_rfc3339(),
            actor: actor.to_string(),
            kind: kind.to_string(),
            removed: PurgeCounts::default(),
            number_hash: None,
            physically_done_at: None,
            connector: Some(connector.to_string()),
            detail: Some(detail),
        }
    }
}

/// How many items of each kind a purge or reset removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeCounts {
    pub consents: u64,
    pub audit_entries: u64,
    pub saved_searches: u64,
}

/// Hashes numbers with the store's erasure secret.
#[derive(Clone)]
pub struct ErasureHasher {
    mac: Hmac<sha2::Sha256>,
}

impl ErasureHasher {
    pub(super) fn from_key(key: &[u8]) -> Self {
        ErasureHasher {
            mac: Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length"),
        }
    }

    pub fn hash(&self, number: PhoneNumber) -> String {
        let mut mac = self.mac.clone();
        mac.update(number.to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A purge in progress, kept in `meta` until it is complete (finished on open after a crash): the
/// number sealed under its purge's key (see [`super::seal`]), never in cleartext.
#[derive(Serialize, Deserialize)]
struct Purging {
    /// Markers of earlier versions: the number as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    number: Option<u64>,
    #[serde(default)]
    hash: String,
    #[serde(default)]
    sealed: String,
}

impl SledStore {
    /// The keyed hash (HMAC-SHA-256, secret kept in the store) by which a purged number is recognised.
    pub fn erasure_hash(&self, number: PhoneNumber) -> Result<String> {
        Ok(self.erasure_hasher()?.hash(number))
    }

    /// The hasher of [`SledStore::erasure_hash`], its secret read (or made) once: for hashing many numbers.
    pub fn erasure_hasher(&self) -> Result<ErasureHasher> {
        let key = match self.g().meta.get("erasure_key")? {
            Some(k) => k,
            None => {
                let mut k = [0u8; 32];
                getrandom::getrandom(&mut k).map_err(|e| StoreError::Corrupt(format!("no randomness for the erasure key: {e}")))?;
                match self.g().meta.compare_and_swap("erasure_key", None as Option<&[u8]>, Some(&k[..]))? {
                    Ok(()) => k.to_vec().into(),
                    Err(current) => current.current.ok_or_else(|| StoreError::Corrupt("erasure key".into()))?,
                }
            }
        };
        Ok(ErasureHasher::from_key(&key))
    }

    /// Removes everything held on `number`: its consents, their audit trail and change-feed entries, and
    /// saved searches that name it. What remains is an event saying a purge happened, by whom, when and
    /// how many items, with the number's keyed hash. Crash-safe: an interrupted purge is finished on open.
    pub fn purge(&self, number: PhoneNumber, actor: &str, now: Timestamp) -> Result<Event> {
        let number_hash = self.erasure_hash(number)?;
        let mut writer = self.writer.lock().expect("writer lock");
        let removed = PurgeCounts {
            consents: self
                .scan_by_number(&crate::domain::Criteria {
                    number: Some(number),
                    ..Default::default()
                })?
                .count() as u64,
            audit_entries: self.audit_seqs(number)?.len() as u64,
            saved_searches: self.searches_naming(number)?.len() as u64,
        };
        let event = Event::removal(self.next_event_seq()?, "purge", now, actor, removed, Some(number_hash.clone()));
        let marker = Purging {
            number: None,
            sealed: self.seal(&number_hash, number)?,
            hash: number_hash,
        };
        let marker = serde_json::to_vec(&marker).expect("serialisable");
        self.g().meta.insert("purging", marker)?;
        self.put_event(&event)?;
        self.g().db.flush()?;
        self.purges.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.remove_number(&mut writer, number)?;
        self.g().meta.remove("purging")?;
        self.g().db.flush()?;
        Ok(event)
    }

    /// Finishes a purge a crash interrupted (called on open).
    pub(super) fn finish_purge(&self) -> Result<()> {
        let Some(v) = self.g().meta.get("purging")? else { return Ok(()) };
        let p: Purging = serde_json::from_slice(&v).map_err(|_| StoreError::Corrupt("purge marker".into()))?;
        let number = match p.number {
            Some(n) => PhoneNumber::from_u64(n),
            None => self.unseal(&p.hash, &p.sealed)?,
        }
        .ok_or_else(|| StoreError::Corrupt("purge marker: the number cannot be read".into()))?;
        tracing::warn!("Finishing a purge that was interrupted.");
        let mut writer = self.writer.lock().expect("writer lock");
        self.remove_number(&mut writer, number)?;
        self.g().meta.remove("purging")?;
        self.g().db.flush()?;
        Ok(())
    }

    fn remove_number(&self, writer: &mut Writer, number: PhoneNumber) -> Result<()> {
        // Consents and their creation-time index entries.
        let held: Vec<_> = self
            .scan_by_number(&crate::domain::Criteria {
                number: Some(number),
                ..Default::default()
            })?
            .collect::<Result<_>>()?;
        // Both usages' entries, consents and tombstones alike.
        let by_number: Vec<Change> = crate::domain::Usage::ALL
            .iter()
            .map(|u| (keys::number_key(number, *u), None))
            .collect();
        let mut by_created: Vec<Change> = held
            .iter()
            .map(|c| (keys::created_key(c.number, c.usage, c.consent, c.created_at.millis()), None))
            .collect();
        by_created.sort_by_key(|c| c.0);
        self.g().by_number.apply(by_number)?;
        self.g().by_created.apply(by_created)?;
        if let Some(counts) = &mut writer.counts {
            for c in &held {
                counts[super::count_slot(c.usage, c.consent)] -= 1;
            }
        }
        // The journal blocks that hold the number's changes, rewritten without them.
        let seqs = self.audit_seqs(number)?;
        let mut blocks = BTreeSet::new();
        for seq in &seqs {
            if let Some((k, _)) = self.g().journal.range(..=seq.to_be_bytes()).next_back().transpose()? {
                blocks.insert(k);
            }
        }
        for k in blocks {
            let Some(v) = self.g().journal.get(&k)? else { continue };
            let changes = keys::decode_block(&v).ok_or_else(|| StoreError::Corrupt("journal block".into()))?;
            let kept: Vec<RawChange> = changes.into_iter().filter(|c| c.number != number).collect();
            if kept.is_empty() {
                self.g().journal.remove(&k)?;
            } else {
                self.g().journal.insert(&k, keys::encode_block(&kept))?;
            }
        }
        let audit: Vec<Change> = seqs.iter().map(|s| (keys::audit_key(number, *s), None)).collect();
        self.g().audit.apply(audit)?;
        for s in self.searches_naming(number)? {
            self.g().searches.remove(SavedSearch::key(&s.owner, &s.name))?;
        }
        Ok(())
    }

    /// The sequence numbers of a number's changes, oldest first.
    pub(super) fn audit_seqs(&self, number: PhoneNumber) -> Result<Vec<u64>> {
        let prefix = keys::number_prefix(number);
        let mut seqs = Vec::new();
        let mut scan = self.g().audit.scan(&prefix, None);
        while let Some(e) = scan.next_entry() {
            let (k, _) = e?;
            if !k.starts_with(&prefix) {
                break;
            }
            seqs.push(keys::decode_audit_seq(k).ok_or_else(|| StoreError::Corrupt("audit key".into()))?);
        }
        Ok(seqs)
    }

    /// Deletes every consent (each deletion journalled and audited, so the change feed carries them),
    /// as a DPO does when the privacy policy is renewed. Returns how many were deleted.
    pub fn reset(&self, ctx: &ChangeContext) -> Result<Event> {
        let mut writer = self.writer.lock().expect("writer lock");
        let source = self.g().names.id(&ctx.source.to_string())?;
        let actor = self.g().names.id(&ctx.actor)?;
        let mut deleted = 0u64;
        // Deleted consents stay as tombstones, so each round goes on after the last key it took.
        let mut from: Vec<u8> = Vec::new();
        loop {
            let mut changes: Vec<RawChange> = Vec::with_capacity(RESET_CHUNK);
            let mut scan = self.g().by_number.scan(&from, None);
            while changes.len() < RESET_CHUNK {
                let Some(e) = scan.next_entry() else { break };
                let (k, v) = e?;
                let ((number, usage), entry) = keys::decode_number_key(k)
                    .zip(keys::decode_number_entry(v))
                    .ok_or_else(|| StoreError::Corrupt("consent entry".into()))?;
                from = [k, &[0]].concat();
                let keys::Entry::Consent(before) = entry else { continue };
                changes.push(RawChange {
                    seq: 0,
                    at: ctx.now.millis(),
                    actor,
                    source,
                    number,
                    usage,
                    before: Some(before),
                    after: None,
                    deleted_at: Some(ctx.now.millis()),
                    place: None,
                    call_id: None,
                });
            }
            drop(scan);
            if changes.is_empty() {
                break;
            }
            deleted += changes.len() as u64;
            self.commit(&mut writer, &mut changes)?;
        }
        let removed = PurgeCounts {
            consents: deleted,
            ..Default::default()
        };
        let event = Event::removal(self.next_event_seq()?, "reset", ctx.now, &ctx.actor, removed, None);
        self.put_event(&event)?;
        self.g().db.flush()?;
        Ok(event)
    }

    /// Records an administrative sync event (a re-send, a dismissal, an erasure marked handled, a
    /// watermark set) and flushes it.
    pub fn record_event(&self, actor: &str, kind: &str, connector: &str, detail: serde_json::Value) -> Result<Event> {
        loop {
            let event = Event::sync(self.next_event_seq()?, actor, kind, connector, detail.clone());
            let v = encode_event(&event);
            // Another event may take the number first: then the next one.
            if self
                .g()
                .events
                .compare_and_swap(event.seq.to_be_bytes(), None as Option<&[u8]>, Some(v))?
                .is_ok()
            {
                self.g().events.flush()?;
                return Ok(event);
            }
        }
    }

    /// Adds what happened after an event to it (a purge: the files rewritten), flushed.
    pub fn annotate_event(&self, seq: u64, detail: serde_json::Value) -> Result<Event> {
        let mut event = self
            .events(seq - 1, 1)?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| StoreError::Corrupt(format!("no event {seq}")))?;
        event.detail = Some(detail);
        self.put_event(&event)?;
        self.g().events.flush()?;
        Ok(event)
    }

    /// When the oldest purge not yet physically done happened (a compaction is owed since then).
    pub fn oldest_pending_purge(&self) -> Result<Option<Timestamp>> {
        for kv in self.g().events.iter() {
            let e = decode_event(&kv?.1)?;
            if e.kind == "purge" && e.physically_done_at.is_none() {
                return Ok(Timestamp::parse_rfc3339(&e.at).ok());
            }
        }
        Ok(None)
    }

    /// The purges of the number with this keyed hash, oldest first.
    pub fn purges_of(&self, number_hash: &str) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for kv in self.g().events.iter() {
            let e = decode_event(&kv?.1)?;
            if e.number_hash.as_deref() == Some(number_hash) {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn next_event_seq(&self) -> Result<u64> {
        Ok(self
            .g()
            .events
            .last()?
            .and_then(|(k, _)| k.as_ref().try_into().ok())
            .map_or(1, |k| u64::from_be_bytes(k) + 1))
    }

    fn put_event(&self, e: &Event) -> Result<()> {
        self.g().events.insert(e.seq.to_be_bytes(), encode_event(e))?;
        Ok(())
    }

    /// Administrative events after `after`, oldest first, at most `limit`.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>> {
        let mut out = Vec::new();
        for kv in self.g().events.range((after + 1).to_be_bytes()..).take(limit) {
            out.push(decode_event(&kv?.1)?);
        }
        Ok(out)
    }
}

impl SledStore {
    /// The numbers ending in `digits` that we hold anything on (a consent or its audit trail), at most
    /// `limit`; the flag says whether there were more.
    pub fn numbers_ending_in(&self, digits: &crate::domain::Digits, limit: usize) -> Result<(Vec<PhoneNumber>, bool)> {
        let prefix = digits.reversed();
        let mut found: Vec<PhoneNumber> = Vec::new();
        let mut scan = self.g().audit.scan(&prefix, None);
        while let Some(e) = scan.next_entry() {
            let (k, _) = e?;
            if !k.starts_with(&prefix) {
                break;
            }
            let rev = k
                .get(..k.len().saturating_sub(9))
                .ok_or_else(|| StoreError::Corrupt("audit key".into()))?;
            let n = PhoneNumber::from_reversed_digits(rev).ok_or_else(|| StoreError::Corrupt("audit key".into()))?;
            if found.last() != Some(&n) {
                if found.len() == limit {
                    return Ok((found, true));
                }
                found.push(n);
            }
        }
        let mut searches: Vec<PhoneNumber> = Vec::new();
        for s in self.saved_searches(None)? {
            if let Some(n) = s.criteria.number.as_deref().and_then(|n| PhoneNumber::parse(n).ok()) {
                if digits.matches(n) && !found.contains(&n) && !searches.contains(&n) {
                    searches.push(n);
                }
            }
        }
        found.extend(searches);
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }
}
