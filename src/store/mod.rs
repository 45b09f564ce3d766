//! The store: consents, their indexes, the change feed and the audit trail. [`Store`] ([`door`]) is
//! the one door to it, on sled ([`SledStore`], this module: the embedded default; nothing else in
//! consentd touches sled) or on PostgreSQL ([`postgres`]).
//!
//! # Key layout
//! Consents and indexes are *paged maps* ([`pages`]): each sled value is a page of many small sorted
//! entries, so a bulk write costs one sled insert per page touched, not per consent.
//! - tree `by_number`: key `reversed digits · 0x00 · usage` → `1 · consent · created · updated · source`,
//!   or for a deleted consent a *tombstone* `2 · deleted at · source`, which an older record does not
//!   pass (searches, counts and exports skip tombstones; a purge removes them). Exact lookups, and
//!   trailing-digit searches as a key-prefix range (digits `678` → prefix `876`).
//! - tree `by_created`: key `usage · consent · created · number(u64 BE)` → `1 · updated · source`.
//!   Creation-time order; one partition per (usage, value), so a search only reads matching entries.
//! - tree `audit_by_number`: key `reversed digits · 0x00 · seq` → empty. Finds a number's audit trail.
//! - tree `journal`: key `first seq (u64 BE)` → a block of changes (seq, when, actor, source, number,
//!   usage, before, after; a deletion's after is its tombstone's time; where an imported record was
//!   read: its file's name id and line or record; an IVR answer's call id). It is the change feed, the
//!   audit trail (kept after a consent is deleted) and the redo log at once.
//! - tree `names`: `i · id(u32 BE)` → name and `s · name` → id, for sources, actors and imported files.
//! - tree `searches` ([`searches`]): `owner · 0x00 · name` → a saved search (JSON, format byte first).
//! - tree `events` ([`dpo`]): `seq (u64 BE)` → an administrative event without personal data (a purge,
//!   a reset, sync work by hand such as a re-send): when, who, what, how many (JSON, format byte first).
//! - tree `sync` ([`sync`]): `connector · 0x00 · kind · 0x00 · id` → what sync keeps per connector
//!   (state, skipped ticks, imported files, dead letters, refused batches, erasures to push and
//!   delivered); JSON, format byte first.
//! - tree `meta`: `format` → store format version; `applied` → the last seq applied to the maps;
//!   `store_id` → a random id made once, the start of sync idempotency keys;
//!   `erasure_key` → the secret of the keyed hashes that recognise purged numbers; `purging` → a purge
//!   in progress (finished on open; the number sealed); `seal:<hash>` → the key a purge's number is
//!   sealed under while erasures are owed ([`seal`]).
//!
//! Times are UTC milliseconds, stored sign-flipped big-endian so they sort. Every value starts with a
//! format byte.
//!
//! # Writes and crashes
//! A batch of changes is decided against what we hold, written to the journal and flushed, then applied
//! to the maps, and `applied` is moved and flushed. On open, journal blocks past `applied` are applied
//! again (applying is idempotent), so a SIGKILL at any point leaves consents, indexes, change feed and
//! audit in agreement. One writer at a time; readers never block.
//!
//! # Memory
//! A batch is held as a [`Batch`] (32 bytes a change) and decided in key order; each decided change
//! goes straight into the journal block in hand. The maps are then brought up to date from the
//! journal itself, the path recovery takes too: `by_number` and `audit_by_number` take the changes as
//! they are read, `by_created` from a sorted list of 36 bytes an entry. Pages (7 KiB by default) and
//! journal blocks are kept small enough that sled stores its nodes inline, where its cache counts
//! them (see [`BLOCK_BYTES`]), so sled's cached nodes follow `cache_bytes`, not the size of the store.
//! What does grow with the store is sled's bookkeeping: an entry for every node on disk (about 350
//! bytes, with its log positions) and for every 512 KiB log segment, under one byte a consent.

mod batch;
pub mod compact;
pub mod copy;
mod door;
pub mod dpo;
mod keys;
mod pages;
pub mod postgres;
mod seal;
pub mod searches;
pub mod sync;

pub use batch::Batch;
pub use door::Store;

use crate::domain::{Consent, Criteria, Decision, Held, Incoming, PhoneNumber, Source, Timestamp, Usage};
use keys::{Entry, RawChange, Stored};
use pages::{Change, PagedMap, Small};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// The store format: 2 added tombstones (by_number values and journal entries of format 2), 3 the
/// places and call ids of journal entries; an older store is read as it is and marked 3 when opened.
const STORE_FORMAT: u8 = 3;
/// Journal block size in bytes (one sled value). sled writes a node larger than 128 KiB (its segment
/// size / 4) as a separate blob and its cache then counts that node as a few bytes, so memory would
/// outgrow `cache_bytes`; a node holds up to 17 values, so blocks stay well under 128 KiB / 17.
const BLOCK_BYTES: usize = 6 << 10;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store at {0} is in use by another process (is `consentd serve` running? then use --server)")]
    InUse(PathBuf),
    #[error("the store at {dir} was written by a newer consentd (format {found}, this one reads {STORE_FORMAT})")]
    Format { dir: PathBuf, found: u8 },
    #[error("the cursor is not one this store gave out")]
    BadCursor,
    #[error("the store is damaged: {0}")]
    Corrupt(String),
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
    #[error("the PostgreSQL store failed: {0}")]
    Postgres(String),
    /// The database does not answer (down, unreachable, refusing connections): nothing was done.
    #[error("the PostgreSQL store is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Unsupported(&'static str),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// A value kept beside consents (a saved search, an event, a sync entry) as both stores keep it: its
/// format byte, then JSON.
fn encode_json<T: serde::Serialize>(format: u8, value: &T) -> Vec<u8> {
    let mut v = vec![format];
    serde_json::to_writer(&mut v, value).expect("serialisable");
    v
}

/// [`encode_json`] read back; `what` names the value in the error (whose parser's message may quote a
/// value: numbers in it are hidden, as it reaches the log).
fn decode_json<T: serde::de::DeserializeOwned>(format: u8, v: &[u8], what: &str) -> Result<T> {
    match v.split_first() {
        Some((&f, json)) if f == format => serde_json::from_slice(json)
            .map_err(|e| StoreError::Corrupt(format!("{what}: {}", crate::domain::mask_numbers(&e.to_string())))),
        _ => Err(StoreError::Corrupt(format!("{what} format"))),
    }
}

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// Largest page of a paged map, in bytes. At most 7 KiB keeps sled's nodes (up to 17 pages)
    /// under the 128 KiB above which sled writes a blob that its cache does not count.
    pub page_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 32 << 20,
            page_bytes: 7 << 10,
        }
    }
}

/// Who makes a batch of changes, from where, and when.
#[derive(Debug, Clone)]
pub struct ChangeContext {
    /// The actor of the audit trail: a token name, `cli:<user>`, a connector.
    pub actor: String,
    pub source: Source,
    pub now: Timestamp,
    /// Who wins a conflict (sync connectors' `authority`; everything else: the newest).
    pub prefer: crate::domain::Prefer,
    /// The IVR call whose answer the changes are, kept with each (at most 255 bytes).
    pub call_id: Option<Arc<str>>,
}

/// What one incoming change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Inserted,
    Updated,
    Unchanged,
    Deleted,
    NotFound,
}

/// An entry of the audit trail and change feed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: Timestamp,
    pub actor: String,
    pub source: Source,
    pub number: PhoneNumber,
    pub usage: Usage,
    pub before: Option<Consent>,
    pub after: Option<Consent>,
    /// Where the change came from beyond its source: an imported record's file and line, an IVR
    /// answer's call.
    #[serde(skip_serializing_if = "Origin::is_empty")]
    pub origin: Origin,
    /// A deletion's tombstone time (the journal keeps it; the audit trail shows the deletion by its
    /// empty `after`). `store copy` carries it over.
    #[serde(skip)]
    pub deleted_at: Option<Timestamp>,
}

/// The proof of one change beyond its source and actor.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Origin {
    /// The file an imported record was read from, as it was named to the import.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The record's line in `file` (1-based).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// The record's place among the file's records (1-based), for formats without lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<u64>,
    /// The contact center's id of the IVR call that gave the answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

impl Origin {
    pub fn is_empty(&self) -> bool {
        *self == Origin::default()
    }
}

/// Filters of the audit trail; the time range is half-open.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub number: Option<PhoneNumber>,
    pub from: Option<Timestamp>,
    pub before: Option<Timestamp>,
    pub actor: Option<String>,
}

/// One page of the audit trail; `next` is the `after` of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next: Option<u64>,
}

/// One page of search results; `next_cursor` continues after the last item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    pub items: Vec<Consent>,
    pub next_cursor: Option<String>,
}

impl SearchPage {
    /// A page of the first `limit` of `items`, which holds one more when there are more to come.
    fn of(mut items: Vec<Consent>, limit: usize) -> Self {
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(encode_cursor)
        } else {
            None
        };
        SearchPage { items, next_cursor }
    }
}

/// Ids by name, and (name, name as a source) by id.
type NameCache = (HashMap<String, u32>, Vec<(String, Source)>);

struct Names {
    tree: sled::Tree,
    cache: RwLock<NameCache>,
}

impl Names {
    fn open(tree: sled::Tree) -> Result<Self> {
        let (mut ids, mut names) = (HashMap::new(), Vec::new());
        for kv in tree.scan_prefix(b"i") {
            let (k, v) = kv?;
            let name = String::from_utf8_lossy(&v).into_owned();
            let id = u32::from_be_bytes(k[1..].try_into().map_err(|_| StoreError::Corrupt("bad name key".into()))?);
            if id as usize != names.len() {
                return Err(StoreError::Corrupt(format!("name id {id} out of order")));
            }
            names.push((name.clone(), Source::parse(&name).unwrap_or(Source::Agent(name.as_str().into()))));
            ids.insert(name, id);
        }
        Ok(Self {
            tree,
            cache: RwLock::new((ids, names)),
        })
    }

    fn id(&self, name: &str) -> Result<u32> {
        if let Some(&id) = self.cache.read().expect("names lock").0.get(name) {
            return Ok(id);
        }
        let mut cache = self.cache.write().expect("names lock");
        if let Some(&id) = cache.0.get(name) {
            return Ok(id);
        }
        let id = cache.1.len() as u32;
        self.tree.insert([b"i".as_slice(), &id.to_be_bytes()].concat(), name.as_bytes())?;
        cache
            .1
            .push((name.to_string(), Source::parse(name).unwrap_or(Source::Agent(name.into()))));
        cache.0.insert(name.to_string(), id);
        Ok(id)
    }

    /// The name as a source (actors that are not sources come back as their plain text via `text`).
    fn source(&self, id: u32) -> Source {
        self.cache
            .read()
            .expect("names lock")
            .1
            .get(id as usize)
            .map(|(_, s)| s.clone())
            .unwrap_or(Source::Cli)
    }

    fn text(&self, id: u32) -> String {
        self.cache
            .read()
            .expect("names lock")
            .1
            .get(id as usize)
            .map(|(t, _)| t.clone())
            .unwrap_or_default()
    }
}

/// The consent store.
pub struct SledStore {
    /// The sled database in use: replaced whole by a compaction ([`compact`]). Every operation reads
    /// it for as long as it touches the trees, so a compaction switches between operations.
    gen: parking_lot::RwLock<Arc<Gen>>,
    dir: PathBuf,
    opts: StoreOptions,
    /// One writer at a time.
    writer: Mutex<Writer>,
    /// Held while the store is open: one process at a time.
    _lock: std::fs::File,
    /// Purges done since open: a compaction whose copy saw one copies again.
    purges: std::sync::atomic::AtomicU64,
}

/// One sled database and its trees: a generation of the store.
pub(crate) struct Gen {
    db: sled::Db,
    by_number: PagedMap,
    by_created: PagedMap,
    audit: PagedMap,
    journal: sled::Tree,
    meta: sled::Tree,
    names: Names,
    searches: sled::Tree,
    events: sled::Tree,
    sync: sled::Tree,
}

/// What the one writer holds.
struct Writer {
    next_seq: u64,
    /// Consents per (usage, value), counted on first use and kept up to date by each commit.
    counts: Option<[u64; 4]>,
}

fn count_slot(usage: Usage, consent: bool) -> usize {
    usize::from(usage.code()) * 2 + usize::from(consent)
}

/// Adds a change to per-(usage, value) deltas.
fn count_change(counted: &mut [i64; 4], c: &RawChange) {
    if let Some(b) = &c.before {
        counted[count_slot(c.usage, b.consent)] -= 1;
    }
    if let Some(a) = &c.after {
        counted[count_slot(c.usage, a.consent)] += 1;
    }
}

impl Writer {
    /// Adds written changes' deltas to the counts, when they have been counted.
    fn count(&mut self, counted: &[i64; 4]) {
        if let Some(counts) = &mut self.counts {
            for (c, d) in counts.iter_mut().zip(counted) {
                *c = c.saturating_add_signed(*d);
            }
        }
    }
}

/// What the decision of one change in a batch sees, and what it leaves for the next change to it.
enum Slot {
    Nothing,
    Consent(Stored, Consent),
    /// A tombstone: deleted at this time (UTC ms).
    Deleted(i64),
}

impl Slot {
    fn held(&self) -> Held<'_> {
        match self {
            Slot::Nothing => Held::Nothing,
            Slot::Consent(_, c) => Held::Consent(c),
            Slot::Deleted(at) => Held::Deleted(Timestamp::from_millis(*at)),
        }
    }

    fn stored(&self) -> Option<Stored> {
        match self {
            Slot::Consent(s, _) => Some(*s),
            _ => None,
        }
    }

    fn deleted_at(&self) -> Option<i64> {
        match self {
            Slot::Deleted(at) => Some(*at),
            _ => None,
        }
    }
}

impl Gen {
    /// Journalled changes with a sequence number above `seq`, oldest first, decoded a block at a time.
    fn journal_after(&self, seq: u64) -> impl Iterator<Item = Result<RawChange>> + '_ {
        let start = self.journal.range(..=seq.to_be_bytes()).next_back().transpose();
        let (start, mut failed) = match start {
            Ok(found) => (found.map(|(k, _)| k).unwrap_or_default(), None),
            Err(e) => (sled::IVec::default(), Some(StoreError::from(e))),
        };
        let mut blocks = self.journal.range(start..);
        let mut block = Vec::<RawChange>::new().into_iter();
        std::iter::from_fn(move || loop {
            if let Some(e) = failed.take() {
                return Some(Err(e));
            }
            if let Some(c) = block.next() {
                if c.seq > seq {
                    return Some(Ok(c));
                }
                continue;
            }
            let (_, bytes) = match blocks.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            match keys::decode_block(&bytes) {
                Some(changes) => block = changes.into_iter(),
                None => return Some(Err(StoreError::Corrupt("journal block".into()))),
            }
        })
    }

    /// Brings the paged maps in line with the journalled changes after `applied`, read back from the
    /// journal (so a batch and the recovery of an interrupted one take the same path). Idempotent.
    /// Returns the last sequence number applied. A batch is journalled in `by_number` key order, which
    /// is also `audit_by_number` order, so those two maps take the changes as they are read; only
    /// `by_created` needs them sorted, in a compact list.
    fn apply_to_maps(&self, applied: u64) -> Result<Option<u64>> {
        self.apply_changes(|| self.journal_after(applied))
    }

    /// [`Gen::apply_to_maps`] for the changes `read` gives (read three times, once per map); changes in
    /// `by_number` key order are the fast case. Returns the highest sequence number applied.
    fn apply_changes<I: Iterator<Item = Result<RawChange>>>(&self, read: impl Fn() -> I) -> Result<Option<u64>> {
        let mut failed = None;
        let (mut last, mut created_len) = (None, 0usize);
        self.by_number.apply(until_error(read(), &mut failed).map(|c| {
            last = last.max(Some(c.seq));
            created_len += usize::from(c.before.is_some()) + usize::from(c.after.is_some());
            (keys::number_key(c.number, c.usage), keys::after_value(&c))
        }))?;
        if let Some(e) = failed {
            return Err(e);
        }
        let mut created = Vec::with_capacity(created_len);
        for c in until_error(read(), &mut failed) {
            if let Some(b) = &c.before {
                created.push(CreatedChange::new(
                    keys::created_key(c.number, c.usage, b.consent, b.created),
                    None,
                    created.len(),
                )?);
            }
            if let Some(a) = &c.after {
                let key = keys::created_key(c.number, c.usage, a.consent, a.created);
                created.push(CreatedChange::new(key, Some(keys::created_value(a)), created.len())?);
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        created.sort_unstable_by_key(CreatedChange::sort_key);
        self.by_created.apply(created.iter().map(CreatedChange::change))?;
        drop(created);
        let mut failed = None;
        self.audit
            .apply(until_error(read(), &mut failed).map(|c| (keys::audit_key(c.number, c.seq), Some(Small::default()))))?;
        match failed {
            Some(e) => Err(e),
            None => Ok(last),
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, finishing any batch a crash interrupted (and clearing
    /// what an interrupted compaction left).
    pub fn open(dir: &Path, opts: &StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| compact::io(dir, e))?;
        let lock = compact::lock(dir)?;
        let gen_dir = compact::current_dir(dir)?;
        let gen = Gen::open(&gen_dir, opts)?;
        compact::clear_others(dir, &gen_dir)?;
        let applied = gen.applied()?;
        // A purge may have emptied the last blocks; `applied` still knows how far we got.
        let next_seq = match gen.journal.last()? {
            None => applied + 1,
            Some((_, block)) => keys::decode_block(&block)
                .and_then(|b| b.last().map(|c| c.seq + 1))
                .ok_or_else(|| StoreError::Corrupt("last journal block".into()))?
                .max(applied + 1),
        };
        let store = SledStore {
            gen: parking_lot::RwLock::new(Arc::new(gen)),
            dir: dir.to_path_buf(),
            opts: opts.clone(),
            writer: Mutex::new(Writer { next_seq, counts: None }),
            _lock: lock,
            purges: Default::default(),
        };
        store.recover()?;
        store.finish_purge()?;
        Ok(store)
    }

    fn purges_done(&self) -> u64 {
        self.purges.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The generation in use, for one short operation (a compaction waits for it to end). Reads nest
    /// without waiting for a compaction that waits for them.
    fn g(&self) -> parking_lot::RwLockReadGuard<'_, Arc<Gen>> {
        self.gen.read_recursive()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The sequence number of the latest change (0 for none).
    pub fn last_change(&self) -> Result<u64> {
        self.applied()
    }

    fn applied(&self) -> Result<u64> {
        self.g().applied()
    }

    /// Applies journal blocks written after the last `applied` mark.
    fn recover(&self) -> Result<()> {
        let applied = self.applied()?;
        if self.g().journal_after(applied).next().is_none() {
            return Ok(());
        }
        tracing::warn!("Finishing a batch that was interrupted.");
        if let Some(last) = self.g().apply_to_maps(applied)? {
            self.g().meta.insert("applied", &last.to_be_bytes())?;
            self.g().db.flush()?;
            tracing::warn!(changes = last - applied, "The interrupted batch is finished.");
        }
        Ok(())
    }

    fn consent(&self, number: PhoneNumber, usage: Usage, s: &Stored) -> Consent {
        Consent {
            number,
            usage,
            consent: s.consent,
            created_at: Timestamp::from_millis(s.created),
            updated_at: Timestamp::from_millis(s.updated),
            source: self.g().names.source(s.source),
        }
    }

    /// The consent held for a number and usage.
    pub fn get(&self, number: PhoneNumber, usage: Usage) -> Result<Option<Consent>> {
        match self.entry(number, usage)? {
            Some(Entry::Consent(s)) => Ok(Some(self.consent(number, usage, &s))),
            Some(Entry::Deleted { .. }) | None => Ok(None),
        }
    }

    /// What `by_number` holds for a number and usage: a consent, a tombstone, or nothing.
    fn entry(&self, number: PhoneNumber, usage: Usage) -> Result<Option<Entry>> {
        self.g()
            .by_number
            .get(&keys::number_key(number, usage))?
            .map(|v| keys::decode_number_entry(&v).ok_or_else(|| StoreError::Corrupt("consent value".into())))
            .transpose()
    }

    /// When the consent of a number and usage was deleted, if what we hold for it is a tombstone.
    pub fn deleted_at(&self, number: PhoneNumber, usage: Usage) -> Result<Option<Timestamp>> {
        match self.entry(number, usage)? {
            Some(Entry::Deleted { at, .. }) => Ok(Some(Timestamp::from_millis(at))),
            _ => Ok(None),
        }
    }

    /// Decides, journals and applies a batch of incoming changes (in order: a later change to the same
    /// consent sees the earlier one). With `dry_run` nothing is written. Returns each change's outcome.
    pub fn apply(&self, batch: &[Incoming], ctx: &ChangeContext, dry_run: bool) -> Result<Vec<Outcome>> {
        self.apply_batch(&mut Batch::from(batch), ctx, dry_run)
    }

    /// [`Store::apply`] for changes gathered in a [`Batch`]. The batch is emptied, and its memory given
    /// back, once its changes are decided, before the maps are written.
    pub fn apply_batch(&self, batch: &mut Batch, ctx: &ChangeContext, dry_run: bool) -> Result<Vec<Outcome>> {
        let mut writer = self.writer.lock().expect("writer lock");
        let mut counted = [0i64; 4];
        let source_id = self.g().names.id(&ctx.source.to_string())?;
        let actor_id = self.g().names.id(&ctx.actor)?;
        let file_ids = batch.files().iter().map(|f| self.g().names.id(f)).collect::<Result<Vec<u32>>>()?;
        let applied = self.applied()?;
        // Decide in key order, reading each page once; changes to one consent keep their batch order.
        // Sequence numbers follow that order, so the journal is in key order too.
        batch.sort();
        let mut outcomes = vec![Outcome::Unchanged; batch.len()];
        let (mut block, mut block_bytes): (Vec<RawChange>, usize) = (Vec::new(), 0);
        // The writer lock is held: no compaction switches generations under this batch.
        let g = self.g().clone();
        // A bulk batch writes pages: the recent single changes go into them first, so its lookups
        // read pages alone.
        if batch.len() > pages::SMALL_APPLY {
            for map in [&g.by_number, &g.by_created, &g.audit] {
                map.fold()?;
            }
        }
        let mut lookup = g.by_number.sorted_lookup();
        let mut held: Option<(u64, Slot)> = None;
        for (i, key, inc, place) in batch.iter() {
            if held.as_ref().is_none_or(|(k, _)| *k != key) {
                let entry = lookup
                    .get(&keys::number_key(inc.number, inc.usage))?
                    .map(|v| keys::decode_number_entry(&v).ok_or_else(|| StoreError::Corrupt("consent value".into())))
                    .transpose()?;
                let slot = match entry {
                    None => Slot::Nothing,
                    Some(Entry::Consent(s)) => Slot::Consent(s, self.consent(inc.number, inc.usage, &s)),
                    Some(Entry::Deleted { at, .. }) => Slot::Deleted(at),
                };
                held = Some((key, slot));
            }
            let slot = &mut held.as_mut().expect("set above").1;
            let stored = |c: Consent| {
                let s = Stored {
                    consent: c.consent,
                    created: c.created_at.millis(),
                    updated: c.updated_at.millis(),
                    source: source_id,
                };
                Slot::Consent(s, c)
            };
            let (outcome, after) = match inc.decide_preferring(slot.held(), &ctx.source, ctx.now, ctx.prefer) {
                Decision::Insert(c) => (Outcome::Inserted, Some(stored(c))),
                Decision::Update(c) => (Outcome::Updated, Some(stored(c))),
                Decision::Delete { at } => (Outcome::Deleted, Some(Slot::Deleted(at.millis()))),
                // A deletion recorded where no consent was held: no consent changes.
                Decision::Tombstone { at } => (Outcome::Unchanged, Some(Slot::Deleted(at.millis()))),
                Decision::Unchanged => (Outcome::Unchanged, None),
                Decision::NotFound => (Outcome::NotFound, None),
            };
            outcomes[i] = outcome;
            if let Some(after) = after {
                if !dry_run {
                    let change = RawChange {
                        seq: writer.next_seq,
                        at: ctx.now.millis(),
                        actor: actor_id,
                        source: source_id,
                        number: inc.number,
                        usage: inc.usage,
                        before: slot.stored(),
                        after: after.stored(),
                        deleted_at: after.deleted_at(),
                        place: place.map(|p| keys::RawPlace {
                            file: file_ids[p.file],
                            at: p.at,
                            by_record: p.by_record,
                        }),
                        call_id: ctx.call_id.clone(),
                    };
                    writer.next_seq += 1;
                    count_change(&mut counted, &change);
                    block_bytes += keys::encoded_len(&change);
                    block.push(change);
                    if block_bytes >= BLOCK_BYTES {
                        self.g().journal.insert(block[0].seq.to_be_bytes(), keys::encode_block(&block))?;
                        block.clear();
                        block_bytes = 0;
                    }
                }
                *slot = after;
            }
        }
        drop(lookup);
        batch.release();
        if let Some(first) = block.first() {
            self.g().journal.insert(first.seq.to_be_bytes(), keys::encode_block(&block))?;
        }
        drop(block);
        if dry_run || writer.next_seq - 1 == applied {
            return Ok(outcomes);
        }
        self.g().db.flush()?;
        if let Some(last) = self.g().apply_to_maps(applied)? {
            self.g().meta.insert("applied", &last.to_be_bytes())?;
            self.g().db.flush()?;
        }
        writer.count(&counted);
        Ok(outcomes)
    }

    /// Numbers changes decided outside [`Store::apply`] (a reset), journals them, applies them to the
    /// maps and flushes.
    fn commit(&self, writer: &mut Writer, changes: &mut [RawChange]) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let applied = self.applied()?;
        let mut counted = [0i64; 4];
        for c in changes.iter_mut() {
            c.seq = writer.next_seq;
            writer.next_seq += 1;
            count_change(&mut counted, c);
        }
        self.journal(changes)?;
        self.g().db.flush()?;
        if let Some(last) = self.g().apply_to_maps(applied)? {
            self.g().meta.insert("applied", &last.to_be_bytes())?;
            self.g().db.flush()?;
        }
        writer.count(&counted);
        Ok(())
    }

    /// Writes numbered changes to the journal in blocks (not flushed).
    fn journal(&self, changes: &[RawChange]) -> Result<()> {
        let (mut start, mut bytes) = (0, 0);
        for (i, c) in changes.iter().enumerate() {
            bytes += keys::encoded_len(c);
            if bytes >= BLOCK_BYTES || i + 1 == changes.len() {
                self.g()
                    .journal
                    .insert(changes[start].seq.to_be_bytes(), keys::encode_block(&changes[start..=i]))?;
                (start, bytes) = (i + 1, 0);
            }
        }
        Ok(())
    }

    /// How many consents we hold per usage and value: `(usage, consent, count)`. The first call counts
    /// the index (a second for millions); later calls are free.
    pub fn counts(&self) -> Result<Vec<(Usage, bool, u64)>> {
        let mut writer = self.writer.lock().expect("writer lock");
        if writer.counts.is_none() {
            let mut counts = [0u64; 4];
            for usage in Usage::ALL {
                for consent in [false, true] {
                    let end = [usage.code(), u8::from(consent) + 1];
                    let mut scan = self.g().by_created.scan(&[usage.code(), u8::from(consent)], Some(&end));
                    while let Some(e) = scan.next_entry() {
                        e?;
                        counts[count_slot(usage, consent)] += 1;
                    }
                }
            }
            writer.counts = Some(counts);
        }
        let counts = writer.counts.expect("counted above");
        Ok(Usage::ALL
            .into_iter()
            .flat_map(|u| [false, true].map(|v| (u, v, counts[count_slot(u, v)])))
            .collect())
    }

    /// Searches with any combination of criteria (at least one), in creation-time order, `limit` items
    /// after `cursor`.
    pub fn search(&self, criteria: &Criteria, cursor: Option<&str>, limit: usize) -> Result<SearchPage> {
        let after = cursor.map(decode_cursor).transpose()?;
        let mut items = Vec::with_capacity(limit.min(1000) + 1);
        for c in self.matches(criteria, after)? {
            items.push(c?);
            if items.len() > limit {
                break;
            }
        }
        Ok(SearchPage::of(items, limit))
    }

    /// Every consent matching the criteria (none: all), in creation-time order, streamed.
    pub fn scan(&self, criteria: &Criteria) -> Result<Box<dyn Iterator<Item = Result<Consent>> + '_>> {
        self.matches(criteria, None)
    }

    fn matches(&self, criteria: &Criteria, after: Option<SortKey>) -> Result<Box<dyn Iterator<Item = Result<Consent>> + '_>> {
        if criteria.number.is_some() || criteria.digits.is_some() {
            // Few candidates: read them by number, then order them by creation time.
            let mut found = Vec::new();
            for c in self.scan_by_number(criteria)? {
                let c = c?;
                if after.is_none_or(|a| sort_key(&c) > a) {
                    found.push(c);
                }
            }
            found.sort_by_key(sort_key);
            return Ok(Box::new(found.into_iter().map(Ok)));
        }
        let from = criteria
            .created_from
            .map_or(i64::MIN, Timestamp::millis)
            .max(after.map_or(i64::MIN, |a| a.0));
        let to = criteria.created_before.map(Timestamp::millis);
        let mut parts = Vec::new();
        for usage in Usage::ALL.into_iter().filter(|u| criteria.usage.is_none_or(|c| c == *u)) {
            for consent in [false, true].into_iter().filter(|v| criteria.consent.is_none_or(|c| c == *v)) {
                let end = match to {
                    Some(t) => keys::created_bound(usage, consent, t).to_vec(),
                    None => vec![usage.code(), u8::from(consent) + 1],
                };
                parts.push(self.g().by_created.scan(&keys::created_bound(usage, consent, from), Some(&end)));
            }
        }
        Ok(Box::new(MergeByCreated {
            store: self,
            heads: parts.iter().map(|_| None).collect(),
            parts,
            after,
            started: false,
        }))
    }

    /// Every consent matching the criteria (none: all) in number order, a number's usages together.
    pub fn scan_by_number(&self, criteria: &Criteria) -> Result<impl Iterator<Item = Result<Consent>> + '_> {
        let prefix = match (&criteria.number, &criteria.digits) {
            (Some(n), _) => keys::number_prefix(*n).to_vec(),
            (None, Some(d)) => d.reversed(),
            (None, None) => Vec::new(),
        };
        let criteria = criteria.clone();
        let mut scan = self.g().by_number.scan(&prefix, None);
        Ok(std::iter::from_fn(move || loop {
            let (k, v) = match scan.next_entry()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e.into())),
            };
            if !k.starts_with(&prefix) {
                return None;
            }
            let decoded = keys::decode_number_key(k).zip(keys::decode_number_entry(v));
            let ((number, usage), s) = match decoded {
                Some((key, Entry::Consent(s))) => (key, s),
                Some((_, Entry::Deleted { .. })) => continue,
                None => return Some(Err(StoreError::Corrupt("consent entry".into()))),
            };
            let c = self.consent(number, usage, &s);
            if criteria.matches(&c) {
                return Some(Ok(c));
            }
        }))
    }

    /// The audit trail of a number (also of deleted consents), oldest first.
    pub fn history(&self, number: PhoneNumber) -> Result<Vec<AuditEntry>> {
        let seqs = self.audit_seqs(number)?;
        let mut out = Vec::new();
        let mut block: Option<(u64, Vec<RawChange>)> = None;
        for seq in seqs {
            if block
                .as_ref()
                .is_none_or(|(_, b)| b.last().is_none_or(|c| c.seq < seq) || b[0].seq > seq)
            {
                let (k, v) = self
                    .g()
                    .journal
                    .range(..=seq.to_be_bytes())
                    .next_back()
                    .transpose()?
                    .ok_or_else(|| StoreError::Corrupt("journal".into()))?;
                let b = keys::decode_block(&v).ok_or_else(|| StoreError::Corrupt("journal block".into()))?;
                block = Some((u64::from_be_bytes(k.as_ref().try_into().unwrap_or_default()), b));
            }
            if let Some(c) = block.as_ref().and_then(|(_, b)| b.iter().find(|c| c.seq == seq)) {
                out.push(self.audit_entry(c));
            }
        }
        Ok(out)
    }

    fn audit_entry(&self, c: &RawChange) -> AuditEntry {
        AuditEntry {
            seq: c.seq,
            at: Timestamp::from_millis(c.at),
            actor: self.g().names.text(c.actor),
            source: self.g().names.source(c.source),
            number: c.number,
            usage: c.usage,
            before: c.before.as_ref().map(|s| self.consent(c.number, c.usage, s)),
            after: c.after.as_ref().map(|s| self.consent(c.number, c.usage, s)),
            origin: Origin {
                file: c.place.map(|p| self.g().names.text(p.file)),
                line: c.place.filter(|p| !p.by_record).map(|p| u64::from(p.at)),
                record: c.place.filter(|p| p.by_record).map(|p| u64::from(p.at)),
                call_id: c.call_id.as_deref().map(str::to_string),
            },
            deleted_at: c.deleted_at.map(Timestamp::from_millis),
        }
    }

    /// Changes with a sequence number above `seq`, oldest first, at most `limit`.
    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let start = self
            .g()
            .journal
            .range(..=seq.to_be_bytes())
            .next_back()
            .transpose()?
            .map(|(k, _)| k)
            .unwrap_or_default();
        let mut out = Vec::new();
        for kv in self.g().journal.range(start..) {
            let (_, v) = kv?;
            for c in keys::decode_block(&v).ok_or_else(|| StoreError::Corrupt("journal block".into()))? {
                if c.seq > seq {
                    out.push(self.audit_entry(&c));
                    if out.len() == limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The audit trail, filtered and paged: entries after sequence number `after`, oldest first, at most
    /// `limit`; `next` continues the listing when there may be more.
    pub fn audit(&self, q: &AuditQuery, after: u64, limit: usize) -> Result<AuditPage> {
        let keep = |e: &AuditEntry| {
            q.from.is_none_or(|t| e.at >= t) && q.before.is_none_or(|t| e.at < t) && q.actor.as_ref().is_none_or(|a| &e.actor == a)
        };
        let mut items = Vec::new();
        let mut next = None;
        match q.number {
            Some(n) => {
                for e in self.history(n)?.into_iter().filter(|e| e.seq > after && keep(e)) {
                    if items.len() == limit {
                        next = items.last().map(|e: &AuditEntry| e.seq);
                        break;
                    }
                    items.push(e);
                }
            }
            None => {
                let mut from = after;
                'blocks: loop {
                    let batch = self.changes_since(from, 4096)?;
                    let Some(last) = batch.last().map(|e| e.seq) else { break };
                    for e in batch.into_iter().filter(keep) {
                        if items.len() == limit {
                            next = items.last().map(|e: &AuditEntry| e.seq);
                            break 'blocks;
                        }
                        items.push(e);
                    }
                    from = last;
                }
            }
        }
        Ok(AuditPage { items, next })
    }

    /// Writes everything to disk.
    pub fn flush(&self) -> Result<()> {
        self.g().db.flush()?;
        Ok(())
    }
}

/// The items of `iter` up to its first error, which is left in `failed`.
fn until_error<'a, T: 'a>(iter: impl Iterator<Item = Result<T>> + 'a, failed: &'a mut Option<StoreError>) -> impl Iterator<Item = T> + 'a {
    iter.map_while(move |r| r.map_err(|e| *failed = Some(e)).ok())
}

/// A change to one `by_created` entry, in 36 bytes: key, value (none: remove), and its place in
/// journal order, so that sorting keeps the later of two changes to one key later.
#[derive(Clone, Copy)]
struct CreatedChange {
    key: [u8; 18],
    value: Option<[u8; 13]>,
    order: u32,
}

impl CreatedChange {
    fn new(key: Small, value: Option<Small>, order: usize) -> Result<Self> {
        let bad = || StoreError::Corrupt("a by_created entry of unexpected size".into());
        Ok(CreatedChange {
            key: (*key).try_into().map_err(|_| bad())?,
            value: value.map(|v| (*v).try_into().map_err(|_| bad())).transpose()?,
            order: u32::try_from(order).map_err(|_| StoreError::Corrupt("more than 2^32 index changes in one batch".into()))?,
        })
    }

    /// The key's bytes as big-endian numbers (same order, cheaper to compare), then journal order.
    fn sort_key(&self) -> (u16, u64, u64, u32) {
        let k = &self.key;
        let be = |r: std::ops::Range<usize>| k[r].iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
        (be(0..2) as u16, be(2..10), be(10..18), self.order)
    }

    fn change(&self) -> Change {
        (Small::new(&self.key), self.value.as_ref().map(|v| Small::new(v)))
    }
}

/// Creation-time order: (created, number, usage).
type SortKey = (i64, u64, u8);

fn sort_key(c: &Consent) -> SortKey {
    (c.created_at.millis(), c.number.as_u64(), c.usage.code())
}

fn encode_cursor(c: &Consent) -> String {
    let (t, n, u) = sort_key(c);
    let mut bytes = Vec::with_capacity(17);
    bytes.extend_from_slice(&t.to_be_bytes());
    bytes.extend_from_slice(&n.to_be_bytes());
    bytes.push(u);
    bytes.iter().map(|b| format!("{:02x}", b ^ 0x5a)).collect()
}

fn decode_cursor(s: &str) -> Result<SortKey> {
    let bad = || StoreError::BadCursor;
    if s.len() != 34 || !s.is_ascii() {
        return Err(bad());
    }
    let b: Vec<u8> = (0..17)
        .map(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).map(|b| b ^ 0x5a))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    Ok((
        i64::from_be_bytes(b[0..8].try_into().map_err(|_| bad())?),
        u64::from_be_bytes(b[8..16].try_into().map_err(|_| bad())?),
        b[16],
    ))
}

/// Merges the `by_created` partitions into one creation-time ordered stream.
struct MergeByCreated<'s> {
    store: &'s SledStore,
    parts: Vec<pages::Scan>,
    heads: Vec<Option<Consent>>,
    after: Option<SortKey>,
    started: bool,
}

impl MergeByCreated<'_> {
    fn fill(&mut self, i: usize) -> Result<()> {
        loop {
            let Some(e) = self.parts[i].next_entry() else {
                self.heads[i] = None;
                return Ok(());
            };
            let (k, v) = e?;
            let (number, usage, consent, created) = keys::decode_created_key(k).ok_or_else(|| StoreError::Corrupt("created key".into()))?;
            let (updated, source) = keys::decode_created_value(v).ok_or_else(|| StoreError::Corrupt("created value".into()))?;
            let c = self.store.consent(
                number,
                usage,
                &Stored {
                    consent,
                    created,
                    updated,
                    source,
                },
            );
            if self.after.is_none_or(|a| sort_key(&c) > a) {
                self.heads[i] = Some(c);
                return Ok(());
            }
        }
    }
}

impl Iterator for MergeByCreated<'_> {
    type Item = Result<Consent>;
    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for i in 0..self.parts.len() {
                if let Err(e) = self.fill(i) {
                    return Some(Err(e));
                }
            }
        }
        let (i, _) = self
            .heads
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().map(|c| (i, sort_key(c))))
            .min_by_key(|(_, k)| *k)?;
        let out = self.heads[i].take();
        if let Err(e) = self.fill(i) {
            return Some(Err(e));
        }
        out.map(Ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Digits, Op};

    fn ts(s: &str) -> Timestamp {
        Timestamp::parse_rfc3339(s).unwrap()
    }

    fn ctx() -> ChangeContext {
        ChangeContext {
            actor: "cli:test".into(),
            source: Source::Import("generic-csv".into()),
            now: ts("2025-01-01T00:00:00Z"),
            prefer: crate::domain::Prefer::Newest,
            call_id: None,
        }
    }

    fn set(n: &str, usage: Usage, consent: bool, at: &str) -> Incoming {
        Incoming {
            number: PhoneNumber::parse(n).unwrap(),
            usage,
            op: Op::Set {
                consent,
                created_at: Some(ts(at)),
                updated_at: Some(ts(at)),
            },
        }
    }

    /// Opens the store with small pages. Reopening in the same process can find the lock still held
    /// for a moment after the last handle is dropped (sled's background threads let go of the file
    /// last), so `InUse` is retried for a while; another process is not involved here.
    fn open(dir: &Path) -> SledStore {
        let opts = StoreOptions {
            cache_bytes: 1 << 20,
            page_bytes: 256,
        };
        for _ in 0..100 {
            match SledStore::open(dir, &opts) {
                Err(StoreError::InUse(_)) => std::thread::sleep(std::time::Duration::from_millis(50)),
                other => return other.unwrap(),
            }
        }
        SledStore::open(dir, &opts).unwrap()
    }

    /// Every file below `dir` that holds one of `forms`.
    fn files_holding(dir: &Path, forms: &[Vec<u8>]) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_holding(&p, forms));
            } else if let Ok(bytes) = std::fs::read(&p) {
                if forms.iter().any(|f| bytes.windows(f.len()).any(|w| w == &f[..])) {
                    out.push(p.display().to_string());
                }
            }
        }
        out
    }

    /// The byte forms of a number a file may hold it in: E.164 text, its digits, the reversed digits
    /// of the index keys, the stored integer.
    fn byte_forms(n: PhoneNumber) -> Vec<Vec<u8>> {
        let digits = n.digits();
        vec![
            n.to_string().into_bytes(),
            digits.clone().into_bytes(),
            digits.chars().rev().collect::<String>().into_bytes(),
            n.as_u64().to_be_bytes().to_vec(),
        ]
    }

    #[test]
    fn a_compaction_keeps_every_write_and_no_byte_of_a_purged_number() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let batch: Vec<Incoming> = (0..3000)
            .map(|i| {
                set(
                    &format!("+4915{:08}", 10_000_000 + i),
                    Usage::ALL[i % 2],
                    i % 3 != 0,
                    "2024-01-01T00:00:00Z",
                )
            })
            .collect();
        store.apply(&batch, &ctx(), false).unwrap();
        let gone = PhoneNumber::parse("+491510000042").unwrap();
        // Written over and over, so old pages held it many times.
        for i in 0..50 {
            store
                .apply(
                    &[set(
                        "+491510000042",
                        Usage::Whatsapp,
                        i % 2 == 0,
                        &format!("2024-02-01T00:00:{:02}Z", i),
                    )],
                    &ctx(),
                    false,
                )
                .unwrap();
        }
        store.sync_put("c", "state", b"", &serde_json::json!({"x": 1})).unwrap();
        let purged = store.purge(gone, "dpo", ts("2025-01-01T00:00:00Z")).unwrap();
        assert_eq!(purged.removed.consents, 2);
        assert!(
            !files_holding(dir.path(), &byte_forms(gone)).is_empty(),
            "before: sled still holds the number"
        );
        let before: std::collections::BTreeSet<(String, Usage, bool)> = store
            .scan(&Criteria::default())
            .unwrap()
            .map(|c| c.map(|c| (c.number.to_string(), c.usage, c.consent)))
            .collect::<Result<_>>()
            .unwrap();
        let done = store.compact().unwrap();
        let after: std::collections::BTreeSet<(String, Usage, bool)> = store
            .scan(&Criteria::default())
            .unwrap()
            .map(|c| c.map(|c| (c.number.to_string(), c.usage, c.consent)))
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(
            after.difference(&before).collect::<Vec<_>>(),
            Vec::<&(String, Usage, bool)>::new(),
            "new after"
        );
        assert_eq!(
            before.difference(&after).collect::<Vec<_>>(),
            Vec::<&(String, Usage, bool)>::new(),
            "gone after"
        );
        assert_eq!(done.generation, "gen-1");
        assert_eq!(
            files_holding(dir.path(), &byte_forms(gone)),
            Vec::<String>::new(),
            "no file holds the purged number"
        );
        assert!(done.bytes_after < done.bytes_before, "{done:?}");
        // Everything else is as it was, now and after reopening.
        let expected = before.len();
        let check = |s: &SledStore, expected: usize| {
            let all: Vec<Consent> = s.scan(&Criteria::default()).unwrap().collect::<Result<_>>().unwrap();
            let mut seen = std::collections::BTreeMap::new();
            for c in &all {
                *seen.entry((c.number.to_string(), c.usage)).or_insert(0) += 1;
            }
            let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
            assert!(dups.is_empty(), "{dups:?} {:?}", all.iter().find(|c| c.number == gone));
            assert_eq!(all.len(), expected);
            assert!(s.get(gone, Usage::Whatsapp).unwrap().is_none());
            let n = PhoneNumber::parse("+491510000007").unwrap();
            assert!(s.get(n, Usage::ALL[1]).unwrap().unwrap().consent);
            assert_eq!(s.history(n).unwrap().len(), 1);
            assert_eq!(s.sync_get::<serde_json::Value>("c", "state", b"").unwrap().unwrap()["x"], 1);
        };
        check(&store, expected);
        // Writes go on in the new generation.
        store
            .apply(
                &[set("+491710000001", Usage::Whatsapp, true, "2025-01-01T00:00:00Z")],
                &ctx(),
                false,
            )
            .unwrap();
        drop(store);
        let store = open(dir.path());
        check(&store, expected + 1);
        assert!(store
            .get(PhoneNumber::parse("+491710000001").unwrap(), Usage::Whatsapp)
            .unwrap()
            .is_some());
        assert_eq!(std::fs::read_to_string(dir.path().join("CURRENT")).unwrap(), "gen-1");
        assert!(!dir.path().join("db").exists(), "the first generation's files are gone");
        assert_eq!(store.compact().unwrap().generation, "gen-2");
        assert!(!dir.path().join("gen-1").exists());
    }

    #[test]
    fn writes_during_a_compaction_wait_and_are_all_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(open(dir.path()));
        let batch: Vec<Incoming> = (0..20_000)
            .map(|i| {
                set(
                    &format!("+4915{:08}", 10_000_000 + i),
                    Usage::Whatsapp,
                    true,
                    "2024-01-01T00:00:00Z",
                )
            })
            .collect();
        store.apply(&batch, &ctx(), false).unwrap();
        let writer = {
            let s = store.clone();
            std::thread::spawn(move || {
                for i in 0..400 {
                    s.apply(
                        &[set(&format!("+4917{:08}", i), Usage::CallRecording, true, "2025-01-01T00:00:00Z")],
                        &ctx(),
                        false,
                    )
                    .unwrap();
                    s.sync_put("c", "n", &(i as u64).to_be_bytes(), &i).unwrap();
                }
            })
        };
        let mut compactions = 0;
        while !writer.is_finished() {
            store.compact().unwrap();
            compactions += 1;
        }
        writer.join().unwrap();
        assert!(compactions >= 1);
        let all = store.scan(&Criteria::default()).unwrap().count();
        assert_eq!(all, 20_400);
        assert_eq!(store.sync_list::<u64>("c", "n").unwrap().len(), 400);
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.scan(&Criteria::default()).unwrap().count(), 20_400);
        assert_eq!(store.sync_list::<u64>("c", "n").unwrap().len(), 400);
    }

    #[test]
    fn changes_are_decided_journalled_and_searchable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let batch = vec![
            set("+491512345678", Usage::Whatsapp, true, "2024-03-01T10:00:00Z"),
            set("+491512345678", Usage::CallRecording, false, "2024-03-02T10:00:00Z"),
            set("+33123456789", Usage::Whatsapp, true, "2024-03-01T09:00:00Z"),
            set("+491512345678", Usage::Whatsapp, false, "2024-02-01T00:00:00Z"),
        ];
        let out = store.apply(&batch, &ctx(), false).unwrap();
        assert_eq!(
            out,
            vec![Outcome::Inserted, Outcome::Inserted, Outcome::Inserted, Outcome::Unchanged]
        );
        assert_eq!(store.apply(&batch, &ctx(), false).unwrap(), vec![Outcome::Unchanged; 4]);

        let n = PhoneNumber::parse("+491512345678").unwrap();
        let c = store.get(n, Usage::Whatsapp).unwrap().unwrap();
        assert!(c.consent);
        assert_eq!(c.source, Source::Import("generic-csv".into()));

        let by_digits = Criteria {
            digits: Some(Digits::parse("5678").unwrap()),
            ..Default::default()
        };
        let page = store.search(&by_digits, None, 10).unwrap();
        assert_eq!(
            page.items.iter().map(|c| c.usage).collect::<Vec<_>>(),
            vec![Usage::Whatsapp, Usage::CallRecording]
        );
        let day = Criteria {
            created_from: Some(ts("2024-03-01T00:00:00Z")),
            created_before: Some(ts("2024-03-02T00:00:00Z")),
            ..Default::default()
        };
        let page = store.search(&day, None, 1).unwrap();
        assert_eq!(page.items[0].number.to_string(), "+33123456789");
        let page = store.search(&day, page.next_cursor.as_deref(), 1).unwrap();
        assert_eq!(page.items[0].number, n);
        assert_eq!(page.next_cursor, None);
        let denied = Criteria {
            consent: Some(false),
            ..Default::default()
        };
        assert_eq!(store.search(&denied, None, 10).unwrap().items.len(), 1);

        let del = Incoming {
            number: n,
            usage: Usage::Whatsapp,
            op: Op::Delete { at: None },
        };
        assert_eq!(store.apply(&[del], &ctx(), false).unwrap(), vec![Outcome::Deleted]);
        assert_eq!(store.get(n, Usage::Whatsapp).unwrap(), None);
        let history = store.history(n).unwrap();
        assert_eq!(history.len(), 3, "two inserts and the delete are kept");
        assert!(history[2].after.is_none() && history[2].before.as_ref().is_some_and(|b| b.consent));
        assert_eq!(history[2].actor, "cli:test");
        assert_eq!(store.changes_since(2, 10).unwrap().len(), 2);
        assert_eq!(
            store
                .search(
                    &Criteria {
                        usage: Some(Usage::Whatsapp),
                        ..Default::default()
                    },
                    None,
                    10
                )
                .unwrap()
                .items
                .len(),
            1
        );
    }

    #[test]
    fn many_consents_page_through_in_creation_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let batch: Vec<Incoming> = (0..2000u64)
            .map(|i| {
                let t = Timestamp::from_millis(1_700_000_000_000 + ((i * 7919) % 2000) as i64 * 1000);
                Incoming {
                    number: PhoneNumber::from_u64(4915100000000 + i * 13).unwrap(),
                    usage: Usage::ALL[(i % 2) as usize],
                    op: Op::Set {
                        consent: i % 3 != 0,
                        created_at: Some(t),
                        updated_at: Some(t),
                    },
                }
            })
            .collect();
        store.apply(&batch, &ctx(), false).unwrap();
        let all = Criteria {
            created_from: Some(Timestamp::from_millis(0)),
            ..Default::default()
        };
        let (mut seen, mut cursor) = (Vec::new(), None);
        loop {
            let page = store.search(&all, cursor.as_deref(), 150).unwrap();
            seen.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 2000);
        assert!(seen.windows(2).all(|w| sort_key(&w[0]) < sort_key(&w[1])));
        assert_eq!(
            store
                .scan(&Criteria {
                    consent: Some(false),
                    usage: Some(Usage::Whatsapp),
                    ..Default::default()
                })
                .unwrap()
                .count(),
            (0..2000).filter(|i| i % 3 == 0 && i % 2 == 1).count()
        );
    }

    #[test]
    fn a_batch_interrupted_after_the_journal_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = open(dir.path());
            store
                .apply(
                    &[set("+491512345678", Usage::Whatsapp, true, "2024-03-01T10:00:00Z")],
                    &ctx(),
                    false,
                )
                .unwrap();
            // Crash between journal and maps: the journal holds a change the maps have not seen.
            let change = RawChange {
                seq: 2,
                at: 0,
                actor: 0,
                source: 0,
                number: PhoneNumber::parse("+33123456789").unwrap(),
                usage: Usage::CallRecording,
                before: None,
                after: Some(Stored {
                    consent: true,
                    created: 5,
                    updated: 5,
                    source: 0,
                }),
                deleted_at: None,
                place: None,
                call_id: None,
            };
            store.g().journal.insert(2u64.to_be_bytes(), keys::encode_block(&[change])).unwrap();
            store.flush().unwrap();
        }
        let store = open(dir.path());
        assert!(store
            .get(PhoneNumber::parse("+33123456789").unwrap(), Usage::CallRecording)
            .unwrap()
            .is_some());
        assert_eq!(
            store
                .search(
                    &Criteria {
                        usage: Some(Usage::CallRecording),
                        ..Default::default()
                    },
                    None,
                    10
                )
                .unwrap()
                .items
                .len(),
            1
        );
        assert_eq!(
            store
                .apply(&[set("+4670123456", Usage::Whatsapp, true, "2024-03-01T10:00:00Z")], &ctx(), false)
                .unwrap(),
            vec![Outcome::Inserted]
        );
        assert_eq!(
            store.changes_since(0, 10).unwrap().iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
    }

    fn delete(n: &str, usage: Usage, at: Option<&str>) -> Incoming {
        Incoming {
            number: PhoneNumber::parse(n).unwrap(),
            usage,
            op: Op::Delete { at: at.map(ts) },
        }
    }

    fn undated(n: &str, usage: Usage, consent: bool) -> Incoming {
        Incoming {
            number: PhoneNumber::parse(n).unwrap(),
            usage,
            op: Op::Set {
                consent,
                created_at: None,
                updated_at: None,
            },
        }
    }

    #[test]
    fn deletions_stay_deleted_whatever_the_order_and_however_often() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let n = PhoneNumber::parse("+491512345678").unwrap();
        // A file with a consent and its deletion (no times, as Sinch writes them), twice.
        let file = [
            undated("+491512345678", Usage::Whatsapp, true),
            delete("+491512345678", Usage::Whatsapp, None),
        ];
        assert_eq!(store.apply(&file, &ctx(), false).unwrap(), [Outcome::Inserted, Outcome::Deleted]);
        let journalled = store.changes_since(0, 100).unwrap().len();
        assert_eq!(store.apply(&file, &ctx(), false).unwrap(), [Outcome::Unchanged, Outcome::Unchanged]);
        assert_eq!(
            store.changes_since(0, 100).unwrap().len(),
            journalled,
            "the second import changes nothing"
        );
        assert_eq!(store.get(n, Usage::Whatsapp).unwrap(), None);
        assert_eq!(store.deleted_at(n, Usage::Whatsapp).unwrap(), Some(ctx().now));
        // The deletion first, then an older consent: the consent is not taken.
        let reversed = [
            delete("+491519999999", Usage::Whatsapp, Some("2024-06-01T00:00:00Z")),
            set("+491519999999", Usage::Whatsapp, true, "2024-05-01T00:00:00Z"),
        ];
        assert_eq!(
            store.apply(&reversed, &ctx(), false).unwrap(),
            [Outcome::Unchanged, Outcome::Unchanged]
        );
        let other = PhoneNumber::parse("+491519999999").unwrap();
        assert_eq!(store.get(other, Usage::Whatsapp).unwrap(), None);
        // A late, older file does not bring it back; a newer record does.
        assert_eq!(
            store
                .apply(
                    &[set("+491519999999", Usage::Whatsapp, true, "2024-05-15T00:00:00Z")],
                    &ctx(),
                    false
                )
                .unwrap(),
            [Outcome::Unchanged]
        );
        assert_eq!(
            store
                .apply(
                    &[set("+491519999999", Usage::Whatsapp, false, "2024-06-02T00:00:00Z")],
                    &ctx(),
                    false
                )
                .unwrap(),
            [Outcome::Inserted]
        );
        assert_eq!(store.deleted_at(other, Usage::Whatsapp).unwrap(), None);
        // Tombstones are not consents: searches, counts and toggles do not see them.
        let digits = Criteria {
            digits: Some(Digits::parse("5678").unwrap()),
            ..Default::default()
        };
        assert!(store.search(&digits, None, 10).unwrap().items.is_empty());
        assert_eq!(store.counts().unwrap().iter().map(|c| c.2).sum::<u64>(), 1);
        let toggle = Incoming {
            number: n,
            usage: Usage::Whatsapp,
            op: Op::Toggle,
        };
        assert_eq!(store.apply(&[toggle], &ctx(), false).unwrap(), [Outcome::NotFound]);
        // Someone deciding now undoes the deletion.
        let now = Timestamp::from_millis(ctx().now.millis() + 1);
        let decided = Incoming {
            number: n,
            usage: Usage::Whatsapp,
            op: Op::decided(true, now),
        };
        assert_eq!(store.apply(&[decided], &ctx(), false).unwrap(), [Outcome::Inserted]);
    }

    #[test]
    fn tombstones_survive_reopening_and_a_purge_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let n = PhoneNumber::parse("+491512345678").unwrap();
        {
            let s = open(dir.path());
            s.apply(
                &[delete("+491512345678", Usage::CallRecording, Some("2024-06-01T00:00:00Z"))],
                &ctx(),
                false,
            )
            .unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.deleted_at(n, Usage::CallRecording).unwrap(), Some(ts("2024-06-01T00:00:00Z")));
        let history = s.history(n).unwrap();
        assert_eq!(history.len(), 1, "the deletion is audited");
        assert!(history[0].before.is_none() && history[0].after.is_none());
        s.purge(n, "dpo", ts("2025-01-01T00:00:00Z")).unwrap();
        assert_eq!(s.deleted_at(n, Usage::CallRecording).unwrap(), None);
        assert!(s.history(n).unwrap().is_empty());
    }

    #[test]
    fn a_reset_leaves_tombstones_that_older_records_do_not_pass() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let batch: Vec<Incoming> = (0..300u64)
            .map(|i| set(&format!("+4915100{i:05}"), Usage::Whatsapp, true, "2024-01-01T00:00:00Z"))
            .collect();
        s.apply(&batch, &ctx(), false).unwrap();
        let e = s.reset(&ctx()).unwrap();
        assert_eq!(e.removed.consents, 300);
        assert_eq!(s.apply(&batch, &ctx(), false).unwrap(), vec![Outcome::Unchanged; 300]);
        assert_eq!(s.counts().unwrap().iter().map(|c| c.2).sum::<u64>(), 0);
        assert_eq!(s.reset(&ctx()).unwrap().removed.consents, 0);
    }

    #[test]
    fn a_second_opener_is_told_the_store_is_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path());
        match Store::open(dir.path(), &StoreOptions::default()) {
            Err(StoreError::InUse(_)) => {}
            other => panic!("{:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_purge_removes_everything_on_the_number_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let n = PhoneNumber::parse("+491512345678").unwrap();
        let other = PhoneNumber::parse("+491519999999").unwrap();
        {
            let s = open(dir.path());
            s.apply(
                &[set("+491519999999", Usage::Whatsapp, true, "2024-01-01T00:00:00Z")],
                &ctx(),
                false,
            )
            .unwrap();
            for (i, v) in [true, false, true].into_iter().enumerate() {
                let at = format!("2024-0{}-01T00:00:00Z", i + 2);
                s.apply(
                    &[
                        set("+491512345678", Usage::Whatsapp, v, &at),
                        set("+491512345678", Usage::CallRecording, v, &at),
                    ],
                    &ctx(),
                    false,
                )
                .unwrap();
            }
            assert_eq!(s.counts().unwrap().iter().map(|c| c.2).sum::<u64>(), 3);
            let e = s.purge(n, "dpo", ts("2025-01-01T00:00:00Z")).unwrap();
            assert_eq!((e.removed.consents, e.removed.audit_entries), (2, 6));
            assert_eq!(s.counts().unwrap().iter().map(|c| c.2).sum::<u64>(), 1);
        }
        let s = open(dir.path());
        assert!(s.history(n).unwrap().is_empty());
        assert_eq!(s.get(n, Usage::Whatsapp).unwrap(), None);
        assert!(s.changes_since(0, 100).unwrap().iter().all(|c| c.number == other));
        // Sequence numbers go on after the purged ones, even though their journal block is gone.
        s.apply(
            &[set("+491517777777", Usage::Whatsapp, true, "2024-06-01T00:00:00Z")],
            &ctx(),
            false,
        )
        .unwrap();
        assert_eq!(s.changes_since(1, 10).unwrap()[0].seq, 8);
        assert_eq!(s.events(0, 10).unwrap().len(), 1);
        assert_eq!(s.counts().unwrap().iter().map(|c| c.2).sum::<u64>(), 2);
    }

    #[test]
    fn an_interrupted_purge_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let n = PhoneNumber::parse("+491512345678").unwrap();
        {
            let s = open(dir.path());
            s.apply(
                &[set("+491512345678", Usage::Whatsapp, true, "2024-01-01T00:00:00Z")],
                &ctx(),
                false,
            )
            .unwrap();
            // As if the process died right after marking the purge.
            s.g()
                .meta
                .insert("purging", serde_json::to_vec(&serde_json::json!({"number": n.as_u64()})).unwrap())
                .unwrap();
            s.flush().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.get(n, Usage::Whatsapp).unwrap(), None);
        assert!(s.history(n).unwrap().is_empty());
        assert!(s.g().meta.get("purging").unwrap().is_none());
    }
}
