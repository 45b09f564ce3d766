//! What the PostgreSQL store keeps beside consents, as the sled store keeps it (the same encodings,
//! format byte then JSON): the store id, sync state per connector, saved searches, administrative
//! events.

use super::{PgError, PgStore};
use crate::store::dpo::{decode_event, encode_event, Event};
use crate::store::searches::{self, SavedSearch};
use crate::store::sync as kept;
use crate::store::StoreError;
use serde::{de::DeserializeOwned, Serialize};

fn corrupt(e: StoreError) -> PgError {
    PgError::Corrupt(e.to_string())
}

impl PgStore {
    /// This store's id: random, made once and kept (`meta` `store_id`), the start of idempotency keys.
    pub fn store_id(&self) -> Result<String, PgError> {
        let id = self.meta_or_make("store_id".into(), || {
            let mut raw = [0u8; 8];
            getrandom::getrandom(&mut raw).map_err(|e| PgError::Corrupt(format!("no randomness for the store id: {e}")))?;
            Ok(hex::encode(raw).into_bytes())
        })?;
        Ok(String::from_utf8_lossy(&id).into_owned())
    }

    pub fn sync_get_bytes(&self, connector: &str, kind: &str, id: &[u8]) -> Result<Option<Vec<u8>>, PgError> {
        let rows = self.query(
            "SELECT value FROM sync_state WHERE connector = $1 AND kind = $2 AND id = $3",
            vec![Box::new(connector.to_string()), Box::new(kind.to_string()), Box::new(id.to_vec())],
        )?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Writes an entry; committed when this returns.
    pub fn sync_put_bytes(&self, connector: &str, kind: &str, id: &[u8], bytes: &[u8]) -> Result<(), PgError> {
        self.query(
            "INSERT INTO sync_state (connector, kind, id, value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (connector, kind, id) DO UPDATE SET value = EXCLUDED.value",
            vec![
                Box::new(connector.to_string()),
                Box::new(kind.to_string()),
                Box::new(id.to_vec()),
                Box::new(bytes.to_vec()),
            ],
        )?;
        Ok(())
    }

    pub fn sync_get<T: DeserializeOwned>(&self, connector: &str, kind: &str, id: &[u8]) -> Result<Option<T>, PgError> {
        self.sync_get_bytes(connector, kind, id)?
            .map(|v| kept::decode(&v).map_err(corrupt))
            .transpose()
    }

    pub fn sync_put<T: Serialize>(&self, connector: &str, kind: &str, id: &[u8], value: &T) -> Result<(), PgError> {
        self.sync_put_bytes(connector, kind, id, &kept::encode(value))
    }

    /// Removes every entry of a kind whose id starts with `prefix`.
    pub fn sync_remove_prefix(&self, connector: &str, kind: &str, prefix: &[u8]) -> Result<usize, PgError> {
        let rows = self.query(
            "DELETE FROM sync_state WHERE connector = $1 AND kind = $2 AND substring(id FROM 1 FOR length($3::bytea)) = $3::bytea RETURNING 1",
            vec![Box::new(connector.to_string()), Box::new(kind.to_string()), Box::new(prefix.to_vec())],
        )?;
        Ok(rows.len())
    }

    pub fn sync_remove(&self, connector: &str, kind: &str, id: &[u8]) -> Result<bool, PgError> {
        let rows = self.query(
            "DELETE FROM sync_state WHERE connector = $1 AND kind = $2 AND id = $3 RETURNING 1",
            vec![Box::new(connector.to_string()), Box::new(kind.to_string()), Box::new(id.to_vec())],
        )?;
        Ok(!rows.is_empty())
    }

    /// A connector's entries of one kind, by id (bytewise, as sled orders them).
    pub fn sync_list<T: DeserializeOwned>(&self, connector: &str, kind: &str) -> Result<Vec<(Vec<u8>, T)>, PgError> {
        self.query(
            "SELECT id, value FROM sync_state WHERE connector = $1 AND kind = $2 ORDER BY id",
            vec![Box::new(connector.to_string()), Box::new(kind.to_string())],
        )?
        .iter()
        .map(|r| Ok((r.get(0), kept::decode(r.get::<_, &[u8]>(1)).map_err(corrupt)?)))
        .collect()
    }

    /// The next id for a connector's entries of one kind (ascending, big-endian u64).
    pub fn sync_next_id(&self, connector: &str, kind: &str) -> Result<u64, PgError> {
        let rows = self.query(
            "SELECT id FROM sync_state WHERE connector = $1 AND kind = $2 ORDER BY id DESC LIMIT 1",
            vec![Box::new(connector.to_string()), Box::new(kind.to_string())],
        )?;
        Ok(rows
            .first()
            .and_then(|r| <[u8; 8]>::try_from(r.get::<_, &[u8]>(0)).ok())
            .map_or(1, |b| u64::from_be_bytes(b) + 1))
    }

    /// Saves (or replaces) a search.
    pub fn save_search(&self, s: &SavedSearch) -> Result<(), PgError> {
        self.query(
            "INSERT INTO saved_searches (owner, name, body) VALUES ($1, $2, $3)
             ON CONFLICT (owner, name) DO UPDATE SET body = EXCLUDED.body",
            vec![Box::new(s.owner.clone()), Box::new(s.name.clone()), Box::new(searches::encode(s))],
        )?;
        Ok(())
    }

    /// One owner's saved searches (all owners' when `None`), by owner and name.
    pub fn saved_searches(&self, owner: Option<&str>) -> Result<Vec<SavedSearch>, PgError> {
        self.query(
            "SELECT body FROM saved_searches WHERE $1::text IS NULL OR owner = $1
             ORDER BY owner COLLATE \"C\", name COLLATE \"C\"",
            vec![Box::new(owner.map(str::to_string))],
        )?
        .iter()
        .map(|r| searches::decode(r.get::<_, &[u8]>(0)).map_err(corrupt))
        .collect()
    }

    pub fn saved_search(&self, owner: &str, name: &str) -> Result<Option<SavedSearch>, PgError> {
        Ok(self.saved_searches(Some(owner))?.into_iter().find(|s| s.name == name))
    }

    /// Removes a saved search; false when there was none.
    pub fn delete_search(&self, owner: &str, name: &str) -> Result<bool, PgError> {
        let rows = self.query(
            "DELETE FROM saved_searches WHERE owner = $1 AND name = $2 RETURNING 1",
            vec![Box::new(owner.to_string()), Box::new(name.to_string())],
        )?;
        Ok(!rows.is_empty())
    }

    /// Records an administrative sync event under the next sequence number.
    pub fn record_event(&self, actor: &str, kind: &str, connector: &str, detail: serde_json::Value) -> Result<Event, PgError> {
        loop {
            let next = self.query("SELECT coalesce(max(seq), 0) + 1 FROM events", vec![])?;
            let event = Event::sync(next[0].get::<_, i64>(0) as u64, actor, kind, connector, detail.clone());
            // Another replica may take the number first: then the next one.
            let taken = self.query(
                "INSERT INTO events (seq, body) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1",
                vec![Box::new(event.seq as i64), Box::new(encode_event(&event))],
            )?;
            if !taken.is_empty() {
                return Ok(event);
            }
        }
    }

    /// Adds what happened after an event to it.
    pub fn annotate_event(&self, seq: u64, detail: serde_json::Value) -> Result<Event, PgError> {
        let mut event = self
            .events(seq - 1, 1)?
            .into_iter()
            .next()
            .filter(|e| e.seq == seq)
            .ok_or_else(|| PgError::Corrupt(format!("no event {seq}")))?;
        event.detail = Some(detail);
        self.query(
            "UPDATE events SET body = $2 WHERE seq = $1",
            vec![Box::new(seq as i64), Box::new(encode_event(&event))],
        )?;
        Ok(event)
    }

    /// Administrative events after `after`, oldest first, at most `limit`.
    pub fn events(&self, after: u64, limit: usize) -> Result<Vec<Event>, PgError> {
        self.query(
            "SELECT body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2",
            vec![Box::new(after as i64), Box::new(limit.min(i64::MAX as usize) as i64)],
        )?
        .iter()
        .map(|r| decode_event(r.get::<_, &[u8]>(0)).map_err(corrupt))
        .collect()
    }

    /// The purges of the number with this keyed hash, oldest first.
    pub fn purges_of(&self, number_hash: &str) -> Result<Vec<Event>, PgError> {
        Ok(self
            .events(0, usize::MAX)?
            .into_iter()
            .filter(|e| e.number_hash.as_deref() == Some(number_hash))
            .collect())
    }

    /// Takes the lease `name` for `holder` and the scheduled `tick` (UTC ms) until `ttl_ms` from now:
    /// only when no one else holds it (released or expired; a holder started again takes back its
    /// own) and no run took it for this tick or a later one, so of several replicas one runs each
    /// tick. True when taken.
    pub fn take_lease(&self, name: &str, holder: &str, tick: i64, ttl_ms: i64) -> Result<bool, PgError> {
        let now = crate::domain::Timestamp::now().millis();
        let rows = self.query(
            "INSERT INTO leases (name, holder, expires_ms, tick_ms) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_ms = EXCLUDED.expires_ms, tick_ms = EXCLUDED.tick_ms
             WHERE leases.tick_ms < EXCLUDED.tick_ms AND (leases.expires_ms < $5 OR leases.holder = EXCLUDED.holder)
             RETURNING 1",
            vec![
                Box::new(name.to_string()),
                Box::new(holder.to_string()),
                Box::new(now + ttl_ms),
                Box::new(tick),
                Box::new(now),
            ],
        )?;
        Ok(!rows.is_empty())
    }

    /// Keeps a lease `ttl_ms` longer; false when `holder` no longer holds it.
    pub fn renew_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, PgError> {
        let rows = self.query(
            "UPDATE leases SET expires_ms = $3 WHERE name = $1 AND holder = $2 AND expires_ms > 0 RETURNING 1",
            vec![
                Box::new(name.to_string()),
                Box::new(holder.to_string()),
                Box::new(crate::domain::Timestamp::now().millis() + ttl_ms),
            ],
        )?;
        Ok(!rows.is_empty())
    }

    /// Who holds the lease `name` and until when (UTC ms; 0 when let go), if it was ever taken.
    pub fn lease(&self, name: &str) -> Result<Option<(String, i64)>, PgError> {
        let rows = self.query(
            "SELECT holder, expires_ms FROM leases WHERE name = $1",
            vec![Box::new(name.to_string())],
        )?;
        Ok(rows.first().map(|r| (r.get(0), r.get(1))))
    }

    /// Lets a lease go (its tick stays taken).
    pub fn release_lease(&self, name: &str, holder: &str) -> Result<(), PgError> {
        self.query(
            "UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2",
            vec![Box::new(name.to_string()), Box::new(holder.to_string())],
        )?;
        Ok(())
    }
}
