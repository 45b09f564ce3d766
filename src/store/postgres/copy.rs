//! The PostgreSQL side of `consentd store copy` ([`crate::store::copy`]): what the store keeps beside
//! consents and the journal, read and replaced whole, and journal entries of another store written as
//! they are, with the consents and tombstones they leave.

use super::consents::{analyze_after, lock_writer, name_id, write_consents, write_journal, Row, Slot};
use super::{client, PgError, PgStore};
use crate::store::copy::Kept;
use crate::store::AuditEntry;
use std::collections::{BTreeMap, HashMap};

impl PgStore {
    /// What the store keeps beside consents and the journal (see [`Kept`]).
    pub fn kept(&self) -> Result<Vec<Kept>, PgError> {
        let mut out = Vec::new();
        for r in self.query("SELECT key, value FROM meta ORDER BY key", vec![])? {
            let key: String = r.get(0);
            if Kept::meta_key_is_kept(&key) {
                out.push(Kept::Meta { key, value: r.get(1) });
            }
        }
        for r in self.query("SELECT owner, name, body FROM saved_searches", vec![])? {
            out.push(Kept::Search {
                owner: r.get(0),
                name: r.get(1),
                body: r.get(2),
            });
        }
        for r in self.query("SELECT seq, body FROM events", vec![])? {
            out.push(Kept::Event {
                seq: r.get::<_, i64>(0) as u64,
                body: r.get(1),
            });
        }
        for r in self.query("SELECT connector, kind, id, value FROM sync_state", vec![])? {
            out.push(Kept::Sync {
                connector: r.get(0),
                kind: r.get(1),
                id: r.get(2),
                value: r.get(3),
            });
        }
        Ok(out)
    }

    /// Replaces what the store keeps beside consents and the journal with `kept`, in one transaction.
    pub fn replace_kept(&self, kept: &[Kept]) -> Result<(), PgError> {
        let (pool, kept) = (self.pool.clone(), kept.to_vec());
        self.run(async move {
            let mut client = client(&pool).await?;
            let tx = client.transaction().await?;
            tx.batch_execute(
                "DELETE FROM meta WHERE key IN ('store_id', 'erasure_key') OR key LIKE 'seal:%';
                 DELETE FROM saved_searches; DELETE FROM events; DELETE FROM sync_state;",
            )
            .await?;
            for k in &kept {
                match k {
                    Kept::Meta { key, value } => tx.execute("INSERT INTO meta (key, value) VALUES ($1, $2)", &[key, value]).await?,
                    Kept::Search { owner, name, body } => {
                        tx.execute(
                            "INSERT INTO saved_searches (owner, name, body) VALUES ($1, $2, $3)",
                            &[owner, name, body],
                        )
                        .await?
                    }
                    Kept::Event { seq, body } => {
                        tx.execute("INSERT INTO events (seq, body) VALUES ($1, $2)", &[&(*seq as i64), body])
                            .await?
                    }
                    Kept::Sync {
                        connector,
                        kind,
                        id,
                        value,
                    } => {
                        tx.execute(
                            "INSERT INTO sync_state (connector, kind, id, value) VALUES ($1, $2, $3, $4)",
                            &[connector, kind, id, value],
                        )
                        .await?
                    }
                };
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Writes journal entries of another store as they are and brings the consents in line, in one
    /// transaction; entries at or below the last change held are skipped. The last change becomes at
    /// least `last`.
    pub fn restore(&self, entries: &[AuditEntry], last: u64) -> Result<(), PgError> {
        let (pool, entries) = (self.pool.clone(), entries.to_vec());
        self.run(async move { restore(&pool, entries, last).await })
    }
}

async fn restore(pool: &deadpool_postgres::Pool, entries: Vec<AuditEntry>, last: u64) -> Result<(), PgError> {
    let mut client = client(pool).await?;
    let tx = client.transaction().await?;
    let next = lock_writer(&tx).await?;
    let mut ids: HashMap<String, i32> = HashMap::new();
    let mut rows = Vec::with_capacity(entries.len());
    // Each key's state after the entries: the last one's.
    let mut states: BTreeMap<(i64, i16), (Slot, i32)> = BTreeMap::new();
    let mut prev = next - 1;
    for e in entries.iter().filter(|e| e.seq as i64 >= next) {
        if e.seq as i64 <= prev {
            return Err(PgError::Corrupt(format!("journal entries out of order at {}", e.seq)));
        }
        prev = e.seq as i64;
        let mut names = vec![e.actor.clone(), e.source.to_string()];
        names.extend(e.before.iter().chain(&e.after).map(|c| c.source.to_string()));
        names.extend(e.origin.file.clone());
        for name in names {
            if let std::collections::hash_map::Entry::Vacant(v) = ids.entry(name) {
                let id = name_id(&tx, v.key()).await?;
                v.insert(id);
            }
        }
        let side = |c: &Option<crate::domain::Consent>| c.as_ref().map(|c| (c.clone(), ids[&c.source.to_string()]));
        let row = Row {
            seq: e.seq as i64,
            at: e.at.millis(),
            actor: ids[&e.actor],
            source: ids[&e.source.to_string()],
            number: e.number.as_u64() as i64,
            usage: i16::from(e.usage.code()),
            before: side(&e.before),
            after: side(&e.after),
            deleted_ms: e.deleted_at.map(|t| t.millis()),
            file: e.origin.file.as_ref().map(|f| ids[f]),
            line: e.origin.line.map(|l| l as i64),
            record: e.origin.record.map(|r| r as i64),
            call_id: e.origin.call_id.as_deref().map(Into::into),
        };
        let slot = match (&row.after, row.deleted_ms) {
            (Some((c, id)), _) => Slot::Consent(c.clone(), *id),
            (None, Some(at)) => Slot::Deleted(at),
            (None, None) => Slot::Nothing,
        };
        states.insert((row.number, row.usage), (slot, row.source));
        rows.push(row);
    }
    if !rows.is_empty() {
        write_journal(&tx, &rows).await?;
        // Keys held already (from an earlier chunk) are updated through the staging table; new
        // ones are copied in.
        let (numbers, usages): (Vec<i64>, Vec<i16>) = states.keys().copied().unzip();
        let held: std::collections::HashSet<(i64, i16)> = tx
            .query(
                "SELECT c.number, c.usage FROM consents c
                 JOIN unnest($1::int8[], $2::int2[]) AS k(number, usage) ON c.number = k.number AND c.usage = k.usage",
                &[&numbers, &usages],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let rows = |were: bool| -> Vec<((i64, i16), &Slot, i32)> {
            states
                .iter()
                .filter(|(k, _)| held.contains(k) == were)
                .map(|(k, (slot, src))| (*k, slot, *src))
                .collect()
        };
        write_consents(&tx, &rows(false), &rows(true)).await?;
        // Deletions of journals older than tombstones left nothing.
        let (gone_n, gone_u): (Vec<i64>, Vec<i16>) = states
            .iter()
            .filter(|(k, (s, _))| matches!(s, Slot::Nothing) && held.contains(k))
            .map(|(k, _)| *k)
            .unzip();
        if !gone_n.is_empty() {
            tx.execute(
                "DELETE FROM consents c USING unnest($1::int8[], $2::int2[]) AS k(number, usage)
                 WHERE c.number = k.number AND c.usage = k.usage",
                &[&gone_n, &gone_u],
            )
            .await?;
        }
    }
    let next_seq = next.max(prev + 1).max(last as i64 + 1);
    tx.execute("UPDATE meta SET value = int8send($1) WHERE key = 'next_seq'", &[&next_seq])
        .await?;
    tx.commit().await?;
    analyze_after(&client, rows.len()).await;
    Ok(())
}
