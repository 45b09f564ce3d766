//! The DPO's work on the PostgreSQL store: keyed hashes, seals, purge, reset, lookups by trailing
//! digits, with the sled store's answers. A purge is one transaction (no marker to finish after a
//! crash: it happened whole or not at all); the tables are vacuumed after it.

use super::{client, PgError, PgStore};
use crate::domain::{Digits, PhoneNumber, Timestamp};
use crate::store::dpo::{encode_event, ErasureHasher, Event, PurgeCounts};
use crate::store::searches::SavedSearch;
use crate::store::{seal, ChangeContext, StoreError};

/// Records the event `make` builds under the next event number, in the transaction.
async fn insert_event(tx: &tokio_postgres::Transaction<'_>, make: impl FnOnce(u64) -> Event) -> Result<Event, PgError> {
    let seq: i64 = tx.query_one("SELECT coalesce(max(seq), 0) + 1 FROM events", &[]).await?.get(0);
    let event = make(seq as u64);
    tx.execute("INSERT INTO events (seq, body) VALUES ($1, $2)", &[&seq, &encode_event(&event)])
        .await?;
    Ok(event)
}

fn corrupt(e: StoreError) -> PgError {
    PgError::Corrupt(e.to_string())
}

impl PgStore {
    /// A `meta` value, made by `make` when there is none (the first writer's value wins).
    pub(super) fn meta_or_make(&self, key: String, make: impl FnOnce() -> Result<Vec<u8>, PgError>) -> Result<Vec<u8>, PgError> {
        self.query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            vec![Box::new(key.clone()), Box::new(make()?)],
        )?;
        let rows = self.query("SELECT value FROM meta WHERE key = $1", vec![Box::new(key)])?;
        Ok(rows
            .first()
            .ok_or_else(|| PgError::Corrupt("a meta value just written is missing".into()))?
            .get(0))
    }

    /// The hasher of the keyed hashes that recognise purged numbers (HMAC-SHA-256, secret in `meta`).
    pub fn erasure_hasher(&self) -> Result<ErasureHasher, PgError> {
        let key = self.meta_or_make("erasure_key".into(), || {
            let mut k = [0u8; 32];
            getrandom::getrandom(&mut k).map_err(|e| PgError::Corrupt(format!("no randomness for the erasure key: {e}")))?;
            Ok(k.to_vec())
        })?;
        Ok(ErasureHasher::from_key(&key))
    }

    pub fn erasure_hash(&self, number: PhoneNumber) -> Result<String, PgError> {
        Ok(self.erasure_hasher()?.hash(number))
    }

    /// The number sealed under the key of its purge, made on first use (see the sled store's seal).
    pub fn seal(&self, hash: &str, number: PhoneNumber) -> Result<String, PgError> {
        let key = self.meta_or_make(seal::key_name(hash), || Ok(seal::new_key().map_err(corrupt)?.to_vec()))?;
        seal::seal_with(&key, hash, number).map_err(corrupt)
    }

    /// The number in `sealed`, while its key lives; `None` once it is destroyed.
    pub fn unseal(&self, hash: &str, sealed: &str) -> Result<Option<PhoneNumber>, PgError> {
        let rows = self.query("SELECT value FROM meta WHERE key = $1", vec![Box::new(seal::key_name(hash))])?;
        match rows.first() {
            None => Ok(None),
            Some(r) => seal::open_with(r.get::<_, &[u8]>(0), hash, sealed).map(Some).map_err(corrupt),
        }
    }

    /// Destroys the key of a purge: what was sealed under it can no longer be read.
    pub fn destroy_seal(&self, hash: &str) -> Result<(), PgError> {
        self.query("DELETE FROM meta WHERE key = $1", vec![Box::new(seal::key_name(hash))])?;
        Ok(())
    }

    /// Saved searches (of every owner) that name the number.
    pub fn searches_naming(&self, number: PhoneNumber) -> Result<Vec<SavedSearch>, PgError> {
        Ok(self.saved_searches(None)?.into_iter().filter(|s| s.names(number)).collect())
    }

    /// Removes everything held on `number` in one transaction: consents and tombstones, the journal's
    /// entries, saved searches that name it; records the purge's event with the number's keyed hash.
    pub fn purge(&self, number: PhoneNumber, actor: &str, now: Timestamp) -> Result<Event, PgError> {
        let hash = self.erasure_hash(number)?;
        let naming: Vec<(String, String)> = self.searches_naming(number)?.into_iter().map(|s| (s.owner, s.name)).collect();
        let (pool, actor) = (self.pool.clone(), actor.to_string());
        let n = number.as_u64() as i64;
        let event = self.run(async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await?;
            super::consents::lock_writer(&tx).await?;
            let consents = tx
                .execute("DELETE FROM consents WHERE number = $1 AND deleted_ms IS NULL", &[&n])
                .await?;
            tx.execute("DELETE FROM consents WHERE number = $1", &[&n]).await?;
            let audit_entries = tx.execute("DELETE FROM journal WHERE number = $1", &[&n]).await?;
            let mut saved_searches = 0;
            for (owner, name) in &naming {
                saved_searches += tx
                    .execute("DELETE FROM saved_searches WHERE owner = $1 AND name = $2", &[owner, name])
                    .await?;
            }
            let removed = PurgeCounts {
                consents,
                audit_entries,
                saved_searches,
            };
            let event = insert_event(&tx, |seq| Event::removal(seq, "purge", now, &actor, removed, Some(hash))).await?;
            tx.commit().await?;
            // Dead rows become reusable space (PostgreSQL does not overwrite them at once: see the README).
            // The purge is done whatever comes of it, so a failure here is said, not returned.
            if let Err(e) = c.batch_execute("VACUUM consents, journal, saved_searches").await {
                tracing::warn!(error = %PgError::from(e), "The purge is done, but VACUUM after it failed; autovacuum will come to it.");
            }
            Ok(event)
        })?;
        Ok(event)
    }

    /// Deletes every consent, each deletion journalled (a tombstone each, as the sled store leaves),
    /// in the sled store's key order; records a `reset` event.
    pub fn reset(&self, ctx: &ChangeContext) -> Result<Event, PgError> {
        let (pool, ctx) = (self.pool.clone(), ctx.clone());
        self.run(async move {
            let mut c = client(&pool).await?;
            let tx = c.transaction().await?;
            let next = super::consents::lock_writer(&tx).await?;
            let source = super::consents::name_id(&tx, &ctx.source.to_string()).await?;
            let actor = super::consents::name_id(&tx, &ctx.actor).await?;
            let at = ctx.now.millis();
            let deleted = tx
                .execute(
                    "INSERT INTO journal (seq, at_ms, actor, source, number, usage, before_consent, before_created_ms,
                         before_updated_ms, before_source, deleted_ms)
                     SELECT $1 + row_number() OVER (ORDER BY rev_digits, usage) - 1, $2, $3, $4, number, usage, consent,
                         created_ms, updated_ms, source, $2
                     FROM consents WHERE deleted_ms IS NULL",
                    &[&next, &at, &actor, &source],
                )
                .await?;
            tx.execute(
                "UPDATE consents SET consent = NULL, created_ms = NULL, updated_ms = NULL, deleted_ms = $1, source = $2
                 WHERE deleted_ms IS NULL",
                &[&at, &source],
            )
            .await?;
            tx.execute(
                "UPDATE meta SET value = int8send($1) WHERE key = 'next_seq'",
                &[&(next + deleted as i64)],
            )
            .await?;
            let removed = PurgeCounts {
                consents: deleted,
                ..Default::default()
            };
            let event = insert_event(&tx, |seq| Event::removal(seq, "reset", ctx.now, &ctx.actor, removed, None)).await?;
            tx.commit().await?;
            Ok(event)
        })
    }

    /// The numbers ending in `digits` that we hold anything on (a consent, a tombstone, hence an audit
    /// trail), at most `limit`, in the sled store's order; the flag says whether there were more.
    pub fn numbers_ending_in(&self, digits: &Digits, limit: usize) -> Result<(Vec<PhoneNumber>, bool), PgError> {
        let prefix = String::from_utf8(digits.reversed()).expect("digits are ASCII");
        let take = limit.saturating_add(1).min(i64::MAX as usize) as i64;
        let rows = self.query(
            "SELECT number FROM (SELECT DISTINCT number, rev_digits FROM consents WHERE rev_digits >= $1 AND rev_digits < $2) d
             ORDER BY rev_digits LIMIT $3",
            vec![Box::new(prefix.clone()), Box::new(format!("{prefix}:")), Box::new(take)],
        )?;
        let mut found = rows
            .iter()
            .map(|r| PhoneNumber::from_u64(r.get::<_, i64>(0) as u64).ok_or_else(|| PgError::Corrupt("number".into())))
            .collect::<Result<Vec<_>, _>>()?;
        if found.len() > limit {
            found.truncate(limit);
            return Ok((found, true));
        }
        for s in self.saved_searches(None)? {
            if let Some(n) = s.criteria.number.as_deref().and_then(|n| PhoneNumber::parse(n).ok()) {
                if digits.matches(n) && !found.contains(&n) {
                    found.push(n);
                }
            }
        }
        let more = found.len() > limit;
        found.truncate(limit);
        Ok((found, more))
    }
}
