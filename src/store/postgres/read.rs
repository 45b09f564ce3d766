//! Reading the PostgreSQL store: searches, counts, the audit trail, with the sled store's answers
//! (the same order: creation time, then number, then usage; the same cursors).

use super::{client, Param, PgError, PgStore};
use crate::domain::{Consent, Criteria, PhoneNumber, Timestamp, Usage};
use crate::store::{decode_cursor, AuditEntry, AuditPage, AuditQuery, Origin, SearchPage};

use tokio_postgres::Row;

/// Rows fetched at a time by [`PgStore::stream`].
const STREAM_ROWS: i32 = 10_000;

/// The columns of a consent with its source's name, for [`consent`].
const CONSENT: &str = "c.number, c.usage, c.consent, c.created_ms, c.updated_ms, n.name FROM consents c JOIN names n ON n.id = c.source";

fn consent(r: &Row) -> Result<Consent, PgError> {
    let n: i64 = r.get(0);
    let u: i16 = r.get(1);
    Ok(Consent {
        number: PhoneNumber::from_u64(n as u64).ok_or_else(|| PgError::Corrupt(format!("number {n}")))?,
        usage: Usage::from_code(u as u8).ok_or_else(|| PgError::Corrupt(format!("usage {u}")))?,
        consent: r.get(2),
        created_at: Timestamp::from_millis(r.get(3)),
        updated_at: Timestamp::from_millis(r.get(4)),
        source: super::consents::source_of(r.get(5)),
    })
}

/// The journal's columns with the names of actor, sources and file, for [`audit_entry`].
const ENTRY: &str = "j.seq, j.at_ms, a.name, s.name, j.number, j.usage,
    j.before_consent, j.before_created_ms, j.before_updated_ms, bs.name,
    j.after_consent, j.after_created_ms, j.after_updated_ms, aft.name, f.name, j.line, j.record, j.call_id, j.deleted_ms
    FROM journal j JOIN names a ON a.id = j.actor JOIN names s ON s.id = j.source
    LEFT JOIN names bs ON bs.id = j.before_source LEFT JOIN names aft ON aft.id = j.after_source
    LEFT JOIN names f ON f.id = j.file";

fn audit_entry(r: &Row) -> Result<AuditEntry, PgError> {
    let n: i64 = r.get(4);
    let u: i16 = r.get(5);
    let number = PhoneNumber::from_u64(n as u64).ok_or_else(|| PgError::Corrupt(format!("number {n}")))?;
    let usage = Usage::from_code(u as u8).ok_or_else(|| PgError::Corrupt(format!("usage {u}")))?;
    let side = |at: usize| -> Option<Consent> {
        Some(Consent {
            number,
            usage,
            consent: r.get::<_, Option<bool>>(at)?,
            created_at: Timestamp::from_millis(r.get::<_, Option<i64>>(at + 1)?),
            updated_at: Timestamp::from_millis(r.get::<_, Option<i64>>(at + 2)?),
            source: super::consents::source_of(r.get::<_, Option<String>>(at + 3)?),
        })
    };
    Ok(AuditEntry {
        seq: r.get::<_, i64>(0) as u64,
        at: Timestamp::from_millis(r.get(1)),
        actor: r.get(2),
        source: super::consents::source_of(r.get(3)),
        number,
        usage,
        before: side(6),
        after: side(10),
        origin: Origin {
            file: r.get(14),
            line: r.get::<_, Option<i64>>(15).map(|l| l as u64),
            record: r.get::<_, Option<i64>>(16).map(|l| l as u64),
            call_id: r.get(17),
        },
        deleted_at: r.get::<_, Option<i64>>(18).map(Timestamp::from_millis),
    })
}

/// SQL conditions and their parameters, numbered as they are added.
#[derive(Default)]
struct Filter {
    sql: Vec<String>,
    params: Vec<Param>,
}

impl Filter {
    /// Adds `condition`, its `?`s standing for `values` in order.
    fn add(&mut self, condition: &str, values: Vec<Param>) {
        let mut parts = condition.split('?');
        let mut sql = parts.next().unwrap_or_default().to_string();
        for (part, value) in parts.zip(values) {
            self.params.push(value);
            sql.push_str(&format!("${}{part}", self.params.len()));
        }
        self.sql.push(sql);
    }

    /// A `LIMIT` of one more than `limit` (to tell whether there are more), as a parameter: the SQL
    /// text stays the same whatever the page size, so a statement prepared once serves every page.
    fn limit_one_more(&mut self, limit: usize) -> String {
        self.params.push(Box::new(limit.saturating_add(1).min(i64::MAX as usize) as i64));
        format!("LIMIT ${}", self.params.len())
    }

    fn clause(&self) -> String {
        if self.sql.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", self.sql.join(" AND "))
        }
    }
}

/// The conditions of `criteria` (none: every consent held).
fn criteria_filter(criteria: &Criteria) -> Filter {
    let mut f = Filter::default();
    f.add("c.deleted_ms IS NULL", vec![]);
    if let Some(n) = criteria.number {
        f.add("c.number = ?", vec![Box::new(n.as_u64() as i64)]);
    }
    if let Some(d) = &criteria.digits {
        // Digits 678 end the numbers whose reversed digits start 876: from "876" to "876:" (':' follows '9').
        let prefix = String::from_utf8(d.reversed()).expect("digits are ASCII");
        f.add(
            "c.rev_digits >= ? AND c.rev_digits < ?",
            vec![Box::new(prefix.clone()), Box::new(prefix + ":")],
        );
    }
    if let Some(v) = criteria.consent {
        f.add("c.consent = ?", vec![Box::new(v)]);
    }
    if let Some(u) = criteria.usage {
        f.add("c.usage = ?", vec![Box::new(i16::from(u.code()))]);
    }
    if let Some(t) = criteria.created_from {
        f.add("c.created_ms >= ?", vec![Box::new(t.millis())]);
    }
    if let Some(t) = criteria.created_before {
        f.add("c.created_ms < ?", vec![Box::new(t.millis())]);
    }
    f
}

impl PgStore {
    /// Every consent matching the criteria (none: all), in creation-time order, streamed (see
    /// [`PgStore::stream`]).
    pub fn scan(&self, criteria: &Criteria) -> impl Iterator<Item = Result<Consent, PgError>> {
        let f = criteria_filter(criteria);
        let sql = format!("SELECT {CONSENT} {} ORDER BY c.created_ms, c.number, c.usage", f.clause());
        self.stream(sql, f.params, consent)
    }

    /// Every consent matching the criteria in the sled store's number order (reversed digits, then
    /// usage), streamed: exports grouped by number, lookups by number or trailing digits.
    pub fn scan_by_number(&self, criteria: &Criteria) -> impl Iterator<Item = Result<Consent, PgError>> {
        let f = criteria_filter(criteria);
        let sql = format!("SELECT {CONSENT} {} ORDER BY c.rev_digits, c.usage", f.clause());
        self.stream(sql, f.params, consent)
    }

    /// The rows of a query through a server-side cursor (a portal of the extended protocol), fetched
    /// [`STREAM_ROWS`] at a time in a read-only repeatable-read transaction, so a whole export is one
    /// snapshot and memory does not grow with the store: a batch or two is in hand at any time. The
    /// transaction (and the connection it holds) ends when the rows are read or the iterator dropped.
    fn stream<T: Send + 'static>(
        &self,
        sql: String,
        params: Vec<Param>,
        convert: fn(&Row) -> Result<T, PgError>,
    ) -> impl Iterator<Item = Result<T, PgError>> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<T>, PgError>>(1);
        let pool = self.pool.clone();
        self.rt.as_ref().expect("open until dropped").spawn(async move {
            let read = async {
                let mut client = client(&pool).await?;
                let t = client
                    .build_transaction()
                    .read_only(true)
                    .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                    .start()
                    .await?;
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
                let portal = t.bind(sql.as_str(), &refs).await?;
                loop {
                    let rows = t.query_portal(&portal, STREAM_ROWS).await?;
                    let last = rows.len() < STREAM_ROWS as usize;
                    let batch = rows.iter().map(convert).collect::<Result<Vec<T>, _>>()?;
                    // The reader takes its time: wait for it off the runtime's workers.
                    if tokio::task::block_in_place(|| tx.send(Ok(batch))).is_err() || last {
                        return Ok(());
                    }
                }
            };
            if let Err(e) = read.await {
                let _ = tokio::task::block_in_place(|| tx.send(Err(e)));
            }
        });
        rx.into_iter()
            .flat_map(|batch: Result<Vec<T>, PgError>| -> Box<dyn Iterator<Item = Result<T, PgError>>> {
                match batch {
                    Ok(rows) => Box::new(rows.into_iter().map(Ok)),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                }
            })
    }

    /// Whether the database answers (within 2 seconds).
    pub fn ready(&self) -> Result<(), PgError> {
        let pool = self.pool.clone();
        self.run(async move {
            let answer = async {
                client(&pool).await?.simple_query("SELECT 1").await?;
                Ok::<(), PgError>(())
            };
            tokio::time::timeout(std::time::Duration::from_secs(2), answer)
                .await
                .map_err(|_| PgError::Connect("no answer within 2 seconds".into()))?
        })
    }

    /// The database's size on disk, in bytes.
    pub fn database_bytes(&self) -> Result<u64, PgError> {
        let rows = self.query("SELECT pg_database_size(current_database())", vec![])?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64))
    }

    /// Searches with any combination of criteria, in creation-time order, `limit` items after `cursor`.
    pub fn search(&self, criteria: &Criteria, cursor: Option<&str>, limit: usize) -> Result<SearchPage, PgError> {
        let after = cursor.map(decode_cursor).transpose().map_err(|_| PgError::BadCursor)?;
        let mut f = criteria_filter(criteria);
        if let Some((t, n, u)) = after {
            f.add(
                "(c.created_ms, c.number, c.usage) > (?, ?, ?)",
                vec![Box::new(t), Box::new(n as i64), Box::new(i16::from(u))],
            );
        }
        let limit_sql = f.limit_one_more(limit);
        let sql = format!(
            "SELECT {CONSENT} {} ORDER BY c.created_ms, c.number, c.usage {limit_sql}",
            f.clause()
        );
        let items = self.query(sql, f.params)?.iter().map(consent).collect::<Result<Vec<_>, _>>()?;
        Ok(SearchPage::of(items, limit))
    }

    /// How many consents are held per usage and value, every pair listed.
    pub fn counts(&self) -> Result<Vec<(Usage, bool, u64)>, PgError> {
        let rows = self.query(
            "SELECT usage, consent, count(*) FROM consents WHERE deleted_ms IS NULL GROUP BY 1, 2",
            vec![],
        )?;
        Ok(Usage::ALL
            .into_iter()
            .flat_map(|u| [false, true].map(|v| (u, v)))
            .map(|(u, v)| {
                let n = rows
                    .iter()
                    .find(|r| r.get::<_, i16>(0) == i16::from(u.code()) && r.get::<_, bool>(1) == v)
                    .map_or(0, |r| r.get::<_, i64>(2) as u64);
                (u, v, n)
            })
            .collect())
    }

    /// When the consent of a number and usage was deleted, if a tombstone says so.
    pub fn deleted_at(&self, number: PhoneNumber, usage: Usage) -> Result<Option<Timestamp>, PgError> {
        let rows = self.query(
            "SELECT deleted_ms FROM consents WHERE number = $1 AND usage = $2 AND deleted_ms IS NOT NULL",
            vec![Box::new(number.as_u64() as i64), Box::new(i16::from(usage.code()))],
        )?;
        Ok(rows.first().map(|r| Timestamp::from_millis(r.get(0))))
    }

    /// The sequence number of the last change made (0: none yet), also when a purge has removed it.
    pub fn last_change(&self) -> Result<u64, PgError> {
        match self.query("SELECT value FROM meta WHERE key = 'next_seq'", vec![])?.first() {
            None => Ok(0),
            Some(r) => {
                let next = <[u8; 8]>::try_from(r.get::<_, &[u8]>(0)).map_err(|_| PgError::Corrupt("meta next_seq".into()))?;
                Ok(u64::from_be_bytes(next).saturating_sub(1))
            }
        }
    }

    /// The audit trail of a number (also of deleted consents), oldest first.
    pub fn history(&self, number: PhoneNumber) -> Result<Vec<AuditEntry>, PgError> {
        self.entries("WHERE j.number = $1 ORDER BY j.seq", vec![Box::new(number.as_u64() as i64)])
    }

    /// Changes with a sequence number above `seq`, oldest first, at most `limit`.
    pub fn changes_since(&self, seq: u64, limit: usize) -> Result<Vec<AuditEntry>, PgError> {
        self.entries(
            "WHERE j.seq > $1 ORDER BY j.seq LIMIT $2",
            vec![Box::new(seq as i64), Box::new(limit.min(i64::MAX as usize) as i64)],
        )
    }

    /// The audit trail, filtered and paged as the sled store's [`crate::store::Store::audit`].
    pub fn audit(&self, q: &AuditQuery, after: u64, limit: usize) -> Result<AuditPage, PgError> {
        let mut f = Filter::default();
        f.add("j.seq > ?", vec![Box::new(after as i64)]);
        if let Some(n) = q.number {
            f.add("j.number = ?", vec![Box::new(n.as_u64() as i64)]);
        }
        if let Some(t) = q.from {
            f.add("j.at_ms >= ?", vec![Box::new(t.millis())]);
        }
        if let Some(t) = q.before {
            f.add("j.at_ms < ?", vec![Box::new(t.millis())]);
        }
        if let Some(a) = &q.actor {
            f.add("a.name = ?", vec![Box::new(a.clone())]);
        }
        let limit_sql = f.limit_one_more(limit);
        let sql = format!("{} ORDER BY j.seq {limit_sql}", f.clause());
        let mut items = self.entries(&sql, f.params)?;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|e| e.seq)
        } else {
            None
        };
        Ok(AuditPage { items, next })
    }

    fn entries(&self, tail: &str, params: Vec<Param>) -> Result<Vec<AuditEntry>, PgError> {
        self.query(format!("SELECT {ENTRY} {tail}"), params)?
            .iter()
            .map(audit_entry)
            .collect()
    }
}
