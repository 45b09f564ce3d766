//! The one door to the store: [`Store`], the same methods whichever backend holds the data — the
//! embedded sled store ([`SledStore`], the default) or PostgreSQL ([`PgStore`], for several daemons on
//! one database). Everything above the store (domain, mappings, import/export, sync, API, page) goes
//! through it.

use super::copy::Kept;
use super::dpo::{ErasureHasher, Event};
use super::postgres::{PgError, PgStore};
use super::searches::SavedSearch;
use super::{AuditEntry, AuditPage, AuditQuery, Batch, ChangeContext, Outcome, Result, SearchPage, SledStore, StoreError, StoreOptions};
use crate::domain::{Consent, Criteria, Digits, Incoming, PhoneNumber, Timestamp, Usage};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;

/// The consent store, on one of its backends.
pub struct Store {
    backend: Backend,
}

enum Backend {
    Sled(SledStore),
    Postgres(PgStore),
}

impl From<PgError> for StoreError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::BadCursor => StoreError::BadCursor,
            PgError::Corrupt(what) => StoreError::Corrupt(crate::domain::mask_numbers(&what)),
            e @ PgError::Connect(_) => StoreError::Unavailable(e.to_string()),
            // The connection went, or the server is shutting down or starting: it does not answer.
            PgError::Sql(e) if e.is_closed() || e.code().is_some_and(|c| c.code().starts_with("08") || c.code().starts_with("57P")) => {
                StoreError::Unavailable(PgError::Sql(e).to_string())
            }
            e => StoreError::Postgres(e.to_string()),
        }
    }
}

/// Methods both backends have, with the same signature: each goes to the backend in use.
macro_rules! delegate {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub fn $name(&self $(, $arg: $ty)*) -> Result<$ret> {
                    match &self.backend {
                        Backend::Sled(s) => s.$name($($arg),*),
                        Backend::Postgres(p) => Ok(p.$name($($arg),*)?),
                    }
                }
            )*
        }
    };
}

delegate! {
    /// The sequence number of the last change made (0: none yet).
    fn last_change(&self) -> u64;
    /// The consent held for a number and usage (in async code: [`Store::get_async`]).
    fn get(&self, number: PhoneNumber, usage: Usage) -> Option<Consent>;
    /// When the consent of a number and usage was deleted, if a tombstone says so.
    fn deleted_at(&self, number: PhoneNumber, usage: Usage) -> Option<Timestamp>;
    /// Decides and applies changes by the conflict rule; what each did, in their order.
    fn apply(&self, batch: &[Incoming], ctx: &ChangeContext, dry_run: bool) -> Vec<Outcome>;
    /// [`Store::apply`] for changes gathered in a [`Batch`], which is emptied.
    fn apply_batch(&self, batch: &mut Batch, ctx: &ChangeContext, dry_run: bool) -> Vec<Outcome>;
    /// How many consents are held per usage and value.
    fn counts(&self) -> Vec<(Usage, bool, u64)>;
    /// Searches in creation-time order, `limit` items after `cursor`.
    fn search(&self, criteria: &Criteria, cursor: Option<&str>, limit: usize) -> SearchPage;
    /// The audit trail of a number (also of deleted consents), oldest first.
    fn history(&self, number: PhoneNumber) -> Vec<AuditEntry>;
    /// Changes with a sequence number above `seq`, oldest first, at most `limit`.
    fn changes_since(&self, seq: u64, limit: usize) -> Vec<AuditEntry>;
    /// The audit trail, filtered and paged.
    fn audit(&self, q: &AuditQuery, after: u64, limit: usize) -> AuditPage;
    /// Writes everything to disk (PostgreSQL: every write is committed already).
    fn flush(&self) -> ();
    /// The keyed hash by which a purged number is recognised.
    fn erasure_hash(&self, number: PhoneNumber) -> String;
    /// The hasher of [`Store::erasure_hash`], for many numbers.
    fn erasure_hasher(&self) -> ErasureHasher;
    /// Removes everything held on a number; leaves an event with its keyed hash.
    fn purge(&self, number: PhoneNumber, actor: &str, now: Timestamp) -> Event;
    /// Deletes every consent, each deletion audited.
    fn reset(&self, ctx: &ChangeContext) -> Event;
    /// Records an administrative sync event.
    fn record_event(&self, actor: &str, kind: &str, connector: &str, detail: serde_json::Value) -> Event;
    /// Adds what happened after an event to it.
    fn annotate_event(&self, seq: u64, detail: serde_json::Value) -> Event;
    /// The purges of the number with this keyed hash, oldest first.
    fn purges_of(&self, number_hash: &str) -> Vec<Event>;
    /// Administrative events after `after`, oldest first, at most `limit`.
    fn events(&self, after: u64, limit: usize) -> Vec<Event>;
    /// The numbers ending in `digits` we hold anything on, at most `limit`; whether there were more.
    fn numbers_ending_in(&self, digits: &Digits, limit: usize) -> (Vec<PhoneNumber>, bool);
    /// The number sealed under the key of its purge.
    fn seal(&self, hash: &str, number: PhoneNumber) -> String;
    /// The number in `sealed`, while its key lives.
    fn unseal(&self, hash: &str, sealed: &str) -> Option<PhoneNumber>;
    /// Destroys the key of a purge.
    fn destroy_seal(&self, hash: &str) -> ();
    /// Saves (or replaces) a search.
    fn save_search(&self, s: &SavedSearch) -> ();
    /// One owner's saved searches (all owners' when `None`), by owner and name.
    fn saved_searches(&self, owner: Option<&str>) -> Vec<SavedSearch>;
    fn saved_search(&self, owner: &str, name: &str) -> Option<SavedSearch>;
    /// Removes a saved search; false when there was none.
    fn delete_search(&self, owner: &str, name: &str) -> bool;
    /// Saved searches (of every owner) that name the number.
    fn searches_naming(&self, number: PhoneNumber) -> Vec<SavedSearch>;
    /// This store's id, made once: the start of sync idempotency keys.
    fn store_id(&self) -> String;
    fn sync_put_bytes(&self, connector: &str, kind: &str, id: &[u8], bytes: &[u8]) -> ();
    fn sync_get_bytes(&self, connector: &str, kind: &str, id: &[u8]) -> Option<Vec<u8>>;
    /// Removes every entry of a kind whose id starts with `prefix`.
    fn sync_remove_prefix(&self, connector: &str, kind: &str, prefix: &[u8]) -> usize;
    fn sync_remove(&self, connector: &str, kind: &str, id: &[u8]) -> bool;
    /// The next id for a connector's entries of one kind.
    fn sync_next_id(&self, connector: &str, kind: &str) -> u64;
    /// What the store keeps beside consents and the journal, for a copy ([`super::copy`]).
    fn kept(&self) -> Vec<Kept>;
    /// Replaces what the store keeps beside consents and the journal.
    fn replace_kept(&self, kept: &[Kept]) -> ();
    /// Writes another store's journal entries as they are, with the consents they leave; the last
    /// change becomes at least `last`.
    fn restore(&self, entries: &[AuditEntry], last: u64) -> ();
}

impl Store {
    /// The sled store in `dir`.
    pub fn open(dir: &Path, opts: &StoreOptions) -> Result<Self> {
        Ok(Store {
            backend: Backend::Sled(SledStore::open(dir, opts)?),
        })
    }

    /// The PostgreSQL store at `url`, migrated.
    pub fn open_postgres(url: &str, opts: &super::postgres::PgOptions) -> Result<Self> {
        Ok(Store {
            backend: Backend::Postgres(PgStore::open(url, opts)?),
        })
    }

    /// [`Store::get`] for async code: on PostgreSQL the query is awaited where it is asked (sled
    /// answers from memory or its cache at once).
    pub async fn get_async(&self, number: PhoneNumber, usage: Usage) -> Result<Option<Consent>> {
        match &self.backend {
            Backend::Sled(s) => s.get(number, usage),
            Backend::Postgres(p) => Ok(p.get_async(number, usage).await?),
        }
    }

    /// The sled store, when it is the backend: what only it has (its directory, compaction).
    pub fn sled(&self) -> Option<&SledStore> {
        match &self.backend {
            Backend::Sled(s) => Some(s),
            Backend::Postgres(_) => None,
        }
    }

    /// Every consent matching the criteria (none: all), in creation-time order, streamed.
    pub fn scan(&self, criteria: &Criteria) -> Result<Box<dyn Iterator<Item = Result<Consent>> + '_>> {
        match &self.backend {
            Backend::Sled(s) => s.scan(criteria),
            Backend::Postgres(p) => Ok(Box::new(p.scan(criteria).map(|r| r.map_err(StoreError::from)))),
        }
    }

    /// Every consent matching the criteria (none: all) in number order, a number's usages together.
    pub fn scan_by_number(&self, criteria: &Criteria) -> Result<Box<dyn Iterator<Item = Result<Consent>> + '_>> {
        match &self.backend {
            Backend::Sled(s) => Ok(Box::new(s.scan_by_number(criteria)?)),
            Backend::Postgres(p) => Ok(Box::new(p.scan_by_number(criteria).map(|r| r.map_err(StoreError::from)))),
        }
    }

    /// A connector's entry of one kind and id.
    pub fn sync_get<T: DeserializeOwned>(&self, connector: &str, kind: &str, id: &[u8]) -> Result<Option<T>> {
        match &self.backend {
            Backend::Sled(s) => s.sync_get(connector, kind, id),
            Backend::Postgres(p) => Ok(p.sync_get(connector, kind, id)?),
        }
    }

    /// Writes an entry, durably.
    pub fn sync_put<T: Serialize>(&self, connector: &str, kind: &str, id: &[u8], value: &T) -> Result<()> {
        match &self.backend {
            Backend::Sled(s) => s.sync_put(connector, kind, id, value),
            Backend::Postgres(p) => Ok(p.sync_put(connector, kind, id, value)?),
        }
    }

    /// A connector's entries of one kind, by id.
    pub fn sync_list<T: DeserializeOwned>(&self, connector: &str, kind: &str) -> Result<Vec<(Vec<u8>, T)>> {
        match &self.backend {
            Backend::Sled(s) => s.sync_list(connector, kind),
            Backend::Postgres(p) => Ok(p.sync_list(connector, kind)?),
        }
    }

    /// When the oldest purge not yet physically done happened (sled: a compaction is owed since then;
    /// PostgreSQL: none is tracked, see the README on what it keeps).
    pub fn oldest_pending_purge(&self) -> Result<Option<Timestamp>> {
        match &self.backend {
            Backend::Sled(s) => s.oldest_pending_purge(),
            Backend::Postgres(_) => Ok(None),
        }
    }

    /// Rewrites the sled store's live data into fresh files (see [`super::compact`]); PostgreSQL
    /// reclaims space with its own `VACUUM`.
    pub fn compact(&self) -> Result<super::compact::Compacted> {
        match &self.backend {
            Backend::Sled(s) => s.compact(),
            Backend::Postgres(_) => Err(StoreError::Unsupported(
                "compaction is the sled store's: PostgreSQL reclaims space with VACUUM",
            )),
        }
    }

    /// Bytes of live data (PostgreSQL: the database's size).
    pub fn live_bytes(&self) -> Result<u64> {
        match &self.backend {
            Backend::Sled(s) => s.live_bytes(),
            Backend::Postgres(p) => Ok(p.database_bytes()?),
        }
    }

    /// Takes a lease for one scheduled tick (see [`PgStore::take_lease`]): with several daemons on one
    /// PostgreSQL store, one of them runs each tick. The sled store has one daemon: always taken.
    pub fn take_lease(&self, name: &str, holder: &str, tick: Timestamp, ttl_ms: i64) -> Result<bool> {
        match &self.backend {
            Backend::Sled(_) => Ok(true),
            Backend::Postgres(p) => Ok(p.take_lease(name, holder, tick.millis(), ttl_ms)?),
        }
    }

    /// Keeps a lease longer; false when it was lost (expired and taken by another daemon).
    pub fn renew_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool> {
        match &self.backend {
            Backend::Sled(_) => Ok(true),
            Backend::Postgres(p) => Ok(p.renew_lease(name, holder, ttl_ms)?),
        }
    }

    /// Who holds a lease and until when (UTC ms), if it was ever taken (sled: never).
    pub fn lease(&self, name: &str) -> Result<Option<(String, i64)>> {
        match &self.backend {
            Backend::Sled(_) => Ok(None),
            Backend::Postgres(p) => Ok(p.lease(name)?),
        }
    }

    pub fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        match &self.backend {
            Backend::Sled(_) => Ok(()),
            Backend::Postgres(p) => Ok(p.release_lease(name, holder)?),
        }
    }

    /// Whether the store can serve: sled always (it is in this process); PostgreSQL when the database
    /// answers within 2 seconds.
    pub fn ready(&self) -> Result<()> {
        match &self.backend {
            Backend::Sled(_) => Ok(()),
            Backend::Postgres(p) => Ok(p.ready()?),
        }
    }

    /// Bytes the store takes on disk (PostgreSQL: the database's size).
    pub fn disk_bytes(&self) -> u64 {
        match &self.backend {
            Backend::Sled(s) => s.disk_bytes(),
            Backend::Postgres(p) => p.database_bytes().unwrap_or(0),
        }
    }
}
