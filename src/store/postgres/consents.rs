//! Consents and the journal in PostgreSQL: [`PgStore::apply_batch`] and [`PgStore::get`], with the
//! same answers as the sled store's.
//!
//! # A batch
//! One transaction: the writer lock (the `next_seq` row of `meta`, `FOR UPDATE`: writers on every
//! replica take turns, so sequence numbers follow commit order and the change feed never skips a
//! change committed late), the consents held for the batch's keys read in one query, the changes
//! decided in Rust by the same conflict rule as the sled store ([`Incoming::decide_preferring`]), then
//! the keys' new states and the journal rows written with binary `COPY`, and `next_seq` moved.

use super::{client, PgError, PgStore};
use crate::domain::{Consent, Decision, Held, Incoming, PhoneNumber, Source, Timestamp, Usage};
use crate::store::{Batch, ChangeContext, Outcome};
use futures_util::pin_mut;
use std::collections::HashMap;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

/// What a key holds while a batch is decided.
#[derive(Debug, Clone)]
pub(super) enum Slot {
    Nothing,
    /// A consent and the name id of its source.
    Consent(Consent, i32),
    Deleted(i64),
}

impl Slot {
    fn held(&self) -> Held<'_> {
        match self {
            Slot::Nothing => Held::Nothing,
            Slot::Consent(c, _) => Held::Consent(c),
            Slot::Deleted(at) => Held::Deleted(Timestamp::from_millis(*at)),
        }
    }
}

/// A change of a batch: its place in arrival order, the change, and where it was read (file, line or
/// record, whether it is a record).
type Change = (usize, Incoming, Option<(String, u32, bool)>);

/// One journal row, as decided (or copied from another store).
pub(super) struct Row {
    pub seq: i64,
    pub at: i64,
    pub actor: i32,
    pub source: i32,
    pub number: i64,
    pub usage: i16,
    pub before: Option<(Consent, i32)>,
    pub after: Option<(Consent, i32)>,
    pub deleted_ms: Option<i64>,
    pub file: Option<i32>,
    pub line: Option<i64>,
    pub record: Option<i64>,
    pub call_id: Option<std::sync::Arc<str>>,
}

impl PgStore {
    /// The consent held for a number and usage.
    pub fn get(&self, number: PhoneNumber, usage: Usage) -> Result<Option<Consent>, PgError> {
        let pool = self.pool.clone();
        self.run(async move { get(&pool, number, usage).await })
    }

    /// [`PgStore::get`], awaited on the caller's runtime.
    pub async fn get_async(&self, number: PhoneNumber, usage: Usage) -> Result<Option<Consent>, PgError> {
        get(&self.pool, number, usage).await
    }

    /// [`PgStore::apply_batch`] for a slice of changes.
    pub fn apply(&self, changes: &[Incoming], ctx: &ChangeContext, dry_run: bool) -> Result<Vec<Outcome>, PgError> {
        self.apply_batch(&mut Batch::from(changes), ctx, dry_run)
    }

    /// Every write is committed when it returns: nothing to flush.
    pub fn flush(&self) -> Result<(), PgError> {
        Ok(())
    }

    /// Decides and applies a batch of changes (see the module's doc); the batch is emptied.
    pub fn apply_batch(&self, batch: &mut Batch, ctx: &ChangeContext, dry_run: bool) -> Result<Vec<Outcome>, PgError> {
        batch.sort();
        let changes: Vec<Change> = batch
            .iter()
            .map(|(i, _, inc, place)| (i, inc, place.map(|p| (batch.files()[p.file].to_string(), p.at, p.by_record))))
            .collect();
        batch.release();
        let (pool, ctx) = (self.pool.clone(), ctx.clone());
        self.run(async move { apply(&pool, changes, &ctx, dry_run).await })
    }
}

/// A key's state while a batch is decided.
struct State {
    key: (i64, i16),
    /// A row (a consent or a tombstone) was held before the batch.
    exists: bool,
    changed: bool,
    slot: Slot,
}

/// Writes keys' states through a binary `COPY` of (number, usage, consent, created_ms, updated_ms,
/// deleted_ms, source): each key, its slot, and the source of a tombstone.
async fn write_states(sink: tokio_postgres::CopyInSink<bytes::Bytes>, states: &[((i64, i16), &Slot, i32)]) -> Result<(), PgError> {
    let writer = BinaryCopyInWriter::new(
        sink,
        &[Type::INT8, Type::INT2, Type::BOOL, Type::INT8, Type::INT8, Type::INT8, Type::INT4],
    );
    pin_mut!(writer);
    for &(key, slot, tomb_source) in states {
        let (consent, created, updated, deleted, src): (Option<bool>, Option<i64>, Option<i64>, Option<i64>, i32) = match slot {
            Slot::Consent(c, id) => (Some(c.consent), Some(c.created_at.millis()), Some(c.updated_at.millis()), None, *id),
            Slot::Deleted(at) => (None, None, None, Some(*at), tomb_source),
            Slot::Nothing => continue,
        };
        writer
            .as_mut()
            .write(&[&key.0, &key.1, &consent, &created, &updated, &deleted, &src])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}

/// Writes keys' states (each key, its slot, the source of a tombstone): rows `new` to the table
/// straight by `COPY`, rows `changed` (held already) through a staging table (per session, emptied at
/// commit) and one `UPDATE`.
pub(super) async fn write_consents(
    tx: &tokio_postgres::Transaction<'_>,
    new: &[((i64, i16), &Slot, i32)],
    changed: &[((i64, i16), &Slot, i32)],
) -> Result<(), PgError> {
    let sink = tx
        .copy_in("COPY consents (number, usage, consent, created_ms, updated_ms, deleted_ms, source) FROM STDIN (FORMAT binary)")
        .await?;
    write_states(sink, new).await?;
    if changed.is_empty() {
        return Ok(());
    }
    tx.batch_execute(
        "CREATE TEMP TABLE IF NOT EXISTS staged_consents (
             number bigint, usage smallint, consent boolean, created_ms bigint, updated_ms bigint,
             deleted_ms bigint, source integer
         ) ON COMMIT DELETE ROWS",
    )
    .await?;
    let sink = tx.copy_in("COPY staged_consents FROM STDIN (FORMAT binary)").await?;
    write_states(sink, changed).await?;
    tx.batch_execute(
        "UPDATE consents c SET consent = s.consent, created_ms = s.created_ms, updated_ms = s.updated_ms,
             deleted_ms = s.deleted_ms, source = s.source
         FROM staged_consents s WHERE c.number = s.number AND c.usage = s.usage",
    )
    .await?;
    Ok(())
}

async fn get(pool: &deadpool_postgres::Pool, number: PhoneNumber, usage: Usage) -> Result<Option<Consent>, PgError> {
    let client = client(pool).await?;
    let statement = client
        .prepare_cached(
            "SELECT c.consent, c.created_ms, c.updated_ms, n.name FROM consents c JOIN names n ON n.id = c.source
             WHERE c.number = $1 AND c.usage = $2 AND c.deleted_ms IS NULL",
        )
        .await?;
    let rows = client
        .query(&statement, &[&(number.as_u64() as i64), &i16::from(usage.code())])
        .await?;
    Ok(rows.first().map(|r| Consent {
        number,
        usage,
        consent: r.get(0),
        created_at: Timestamp::from_millis(r.get(1)),
        updated_at: Timestamp::from_millis(r.get(2)),
        source: source_of(r.get(3)),
    }))
}

/// A name's source, as the sled store reads it.
pub(super) fn source_of(name: String) -> Source {
    Source::parse(&name).unwrap_or(Source::Agent(name.as_str().into()))
}

/// Takes the writer lock for the transaction (the `next_seq` row of `meta`, made when missing) and
/// gives the next sequence number.
pub(super) async fn lock_writer(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, PgError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ('next_seq', int8send(1)) ON CONFLICT DO NOTHING",
        &[],
    )
    .await?;
    let next: Vec<u8> = tx
        .query_one("SELECT value FROM meta WHERE key = 'next_seq' FOR UPDATE", &[])
        .await?
        .get(0);
    Ok(i64::from_be_bytes(
        next.try_into().map_err(|_| PgError::Corrupt("meta next_seq".into()))?,
    ))
}

/// The id of `name` in `names`, made when new (under the writer lock, so ids are handed out in turn).
pub(super) async fn name_id(tx: &tokio_postgres::Transaction<'_>, name: &str) -> Result<i32, PgError> {
    if let Some(row) = tx.query_opt("SELECT id FROM names WHERE name = $1", &[&name]).await? {
        return Ok(row.get(0));
    }
    let row = tx
        .query_one(
            "INSERT INTO names (id, name) SELECT coalesce(max(id) + 1, 0), $1 FROM names RETURNING id",
            &[&name],
        )
        .await?;
    Ok(row.get(0))
}

async fn apply(pool: &deadpool_postgres::Pool, changes: Vec<Change>, ctx: &ChangeContext, dry_run: bool) -> Result<Vec<Outcome>, PgError> {
    let mut outcomes = vec![Outcome::Unchanged; changes.len()];
    let mut client = client(pool).await?;
    let tx = client.transaction().await?;
    let mut seq = lock_writer(&tx).await?;
    let source = name_id(&tx, &ctx.source.to_string()).await?;
    let actor = name_id(&tx, &ctx.actor).await?;
    let mut files: HashMap<String, i32> = HashMap::new();
    for (_, _, place) in &changes {
        if let Some((f, _, _)) = place {
            if !files.contains_key(f) {
                files.insert(f.clone(), name_id(&tx, f).await?);
            }
        }
    }
    // What is held for the batch's keys, in one query.
    let (mut numbers, mut usages): (Vec<i64>, Vec<i16>) = (Vec::new(), Vec::new());
    for (_, inc, _) in &changes {
        let (n, u) = (inc.number.as_u64() as i64, i16::from(inc.usage.code()));
        if numbers.last() != Some(&n) || usages.last() != Some(&u) {
            numbers.push(n);
            usages.push(u);
        }
    }
    let rows = tx
        .query(
            "SELECT c.number, c.usage, c.consent, c.created_ms, c.updated_ms, c.deleted_ms, n.name, c.source
             FROM consents c JOIN names n ON n.id = c.source
             JOIN unnest($1::int8[], $2::int2[]) AS k(number, usage) ON c.number = k.number AND c.usage = k.usage",
            &[&numbers, &usages],
        )
        .await?;
    let mut held: HashMap<(i64, i16), Slot> = HashMap::with_capacity(rows.len());
    for r in rows {
        let (n, u): (i64, i16) = (r.get(0), r.get(1));
        let slot = match r.get::<_, Option<i64>>(5) {
            Some(at) => Slot::Deleted(at),
            None => Slot::Consent(
                Consent {
                    number: PhoneNumber::from_u64(n as u64).ok_or_else(|| PgError::Corrupt(format!("number {n}")))?,
                    usage: Usage::from_code(u as u8).ok_or_else(|| PgError::Corrupt(format!("usage {u}")))?,
                    consent: r.get(2),
                    created_at: Timestamp::from_millis(r.get(3)),
                    updated_at: Timestamp::from_millis(r.get(4)),
                    source: source_of(r.get(6)),
                },
                r.get(7),
            ),
        };
        held.insert((n, u), slot);
    }
    // Decide in key order; changes to one consent in their batch order.
    let mut journal: Vec<Row> = Vec::new();
    // Each key's state after the batch, in key order: whether the row exists, whether it changed.
    let mut states: Vec<State> = Vec::new();
    for (i, inc, place) in &changes {
        let key = (inc.number.as_u64() as i64, i16::from(inc.usage.code()));
        if states.last().is_none_or(|s| s.key != key) {
            let was = held.remove(&key);
            states.push(State {
                key,
                exists: was.is_some(),
                changed: false,
                slot: was.unwrap_or(Slot::Nothing),
            });
        }
        let state = states.last_mut().expect("pushed above");
        let slot = &mut state.slot;
        let (outcome, after) = match inc.decide_preferring(slot.held(), &ctx.source, ctx.now, ctx.prefer) {
            // A decided consent's source is the change's.
            Decision::Insert(c) => (Outcome::Inserted, Some(Slot::Consent(c, source))),
            Decision::Update(c) => (Outcome::Updated, Some(Slot::Consent(c, source))),
            Decision::Delete { at } => (Outcome::Deleted, Some(Slot::Deleted(at.millis()))),
            Decision::Tombstone { at } => (Outcome::Unchanged, Some(Slot::Deleted(at.millis()))),
            Decision::Unchanged => (Outcome::Unchanged, None),
            Decision::NotFound => (Outcome::NotFound, None),
        };
        outcomes[*i] = outcome;
        let Some(after) = after else { continue };
        let before = match slot {
            Slot::Consent(c, id) => Some((c.clone(), *id)),
            _ => None,
        };
        let (after_consent, deleted_ms) = match &after {
            Slot::Consent(c, id) => (Some((c.clone(), *id)), None),
            Slot::Deleted(at) => (None, Some(*at)),
            Slot::Nothing => (None, None),
        };
        journal.push(Row {
            seq,
            at: ctx.now.millis(),
            actor,
            source,
            number: key.0,
            usage: key.1,
            before,
            after: after_consent,
            deleted_ms,
            file: place.as_ref().map(|(f, _, _)| files[f]),
            line: place.as_ref().filter(|p| !p.2).map(|p| i64::from(p.1)),
            record: place.as_ref().filter(|p| p.2).map(|p| i64::from(p.1)),
            call_id: ctx.call_id.clone(),
        });
        seq += 1;
        *slot = after;
        state.changed = true;
    }
    if dry_run || journal.is_empty() {
        return Ok(outcomes);
    }
    // The keys' new states: new rows straight into the table, changed ones through a staging table.
    let rows = |exists: bool| -> Vec<((i64, i16), &Slot, i32)> {
        states
            .iter()
            .filter(|s| s.changed && s.exists == exists)
            .map(|s| (s.key, &s.slot, source))
            .collect()
    };
    write_consents(&tx, &rows(false), &rows(true)).await?;
    write_journal(&tx, &journal).await?;
    tx.execute("UPDATE meta SET value = int8send($1) WHERE key = 'next_seq'", &[&seq])
        .await?;
    tx.commit().await?;
    analyze_after(&client, journal.len()).await;
    Ok(outcomes)
}

/// After a large write, the planner's statistics are brought up to date at once, where autovacuum
/// would a minute or more later: a table bulk-loaded before it was ever analyzed is planned as if
/// nearly empty, and the checks' point lookups then scanned it (a tenth of their throughput,
/// measured with benches/pg.sh). Done when the write is more than a tenth of the table, autovacuum's
/// own rule. The write is committed already: a failure is logged, not returned.
pub(super) async fn analyze_after(client: &tokio_postgres::Client, written: usize) {
    if written < 1000 {
        return;
    }
    let analyze = async {
        let tuples: f32 = client
            .query_one("SELECT reltuples FROM pg_class WHERE oid = 'consents'::regclass", &[])
            .await?
            .get(0);
        if tuples < 0.0 || written as f32 * 10.0 > tuples {
            client.batch_execute("ANALYZE consents, journal").await?;
        }
        Ok::<(), tokio_postgres::Error>(())
    };
    if let Err(e) = analyze.await {
        tracing::warn!(error = %PgError::from(e), "The database's statistics could not be brought up to date after a large write.");
    }
}

/// Writes journal rows with a binary `COPY`.
pub(super) async fn write_journal(tx: &tokio_postgres::Transaction<'_>, rows: &[Row]) -> Result<(), PgError> {
    let sink = tx
        .copy_in(
            "COPY journal (seq, at_ms, actor, source, number, usage, before_consent, before_created_ms, before_updated_ms,
             before_source, after_consent, after_created_ms, after_updated_ms, after_source, deleted_ms, file, line, record,
             call_id) FROM STDIN (FORMAT binary)",
        )
        .await?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::INT8,
            Type::INT4,
            Type::INT4,
            Type::INT8,
            Type::INT2,
            Type::BOOL,
            Type::INT8,
            Type::INT8,
            Type::INT4,
            Type::BOOL,
            Type::INT8,
            Type::INT8,
            Type::INT4,
            Type::INT8,
            Type::INT4,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
        ],
    );
    pin_mut!(writer);
    for r in rows {
        let part = |c: &Option<(Consent, i32)>| {
            (
                c.as_ref().map(|c| c.0.consent),
                c.as_ref().map(|c| c.0.created_at.millis()),
                c.as_ref().map(|c| c.0.updated_at.millis()),
                c.as_ref().map(|c| c.1),
            )
        };
        let (bc, bcr, bup, bsrc) = part(&r.before);
        let (ac, acr, aup, asrc) = part(&r.after);
        let call_id = r.call_id.as_deref();
        writer
            .as_mut()
            .write(&[
                &r.seq,
                &r.at,
                &r.actor,
                &r.source,
                &r.number,
                &r.usage,
                &bc,
                &bcr,
                &bup,
                &bsrc,
                &ac,
                &acr,
                &aup,
                &asrc,
                &r.deleted_ms,
                &r.file,
                &r.line,
                &r.record,
                &call_id,
            ])
            .await?;
    }
    writer.finish().await?;
    Ok(())
}
