//! The PostgreSQL store, for deployments where several daemons share one database: [`PgStore`], with
//! the sled store's answers behind the one door ([`crate::store::Store`]). The versioned schema
//! ([`schema`]) and its migrations; consents and the journal (`consents`); searches and the audit
//! trail (`read`); sync state, saved searches, events and leases (`kept`); the DPO's work (`dpo`);
//! a whole store read and written for `consentd store copy` (`copy`).
//!
//! Crates: `tokio-postgres` (the protocol, `COPY` in and out, pipelining; no compile-time database
//! needed, unlike sqlx's checked queries) and `deadpool-postgres` (a small async pool made for it).
//!
//! # Migrations
//! [`migrate`] applies the pending migrations in one transaction, holding a row lock on
//! `consentd_schema_lock` (`SELECT … FOR UPDATE`, not an advisory lock, so that PostgreSQL-protocol
//! engines without advisory locks such as CockroachDB and YugabyteDB work too): when several replicas
//! start at once, one migrates and the others wait for it, then find nothing to do. A database whose
//! schema is newer than this consentd's is refused.

mod consents;
mod copy;
mod dpo;
mod kept;
mod read;
pub mod schema;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::path::PathBuf;
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("the database URL is not valid: {0}")]
    Url(String),
    #[error("cannot connect to the database: {0}")]
    Connect(String),
    #[error("TLS to the database: {0}")]
    Tls(String),
    #[error("the database's schema is version {found}, newer than this consentd's ({known}): run a newer consentd")]
    Newer { found: i32, known: i32 },
    #[error("the database's schema is version {found}, older than this consentd's ({known}): run `consentd store migrate`")]
    Older { found: i32, known: i32 },
    /// The server's message may quote a row (a key's values in a constraint's detail): numbers in it
    /// are hidden, as this message reaches the log.
    #[error("the database refused: {}", crate::domain::mask_numbers(&.0.to_string()))]
    Sql(#[from] tokio_postgres::Error),
    #[error("the database holds what consentd cannot read: {}", crate::domain::mask_numbers(.0))]
    Corrupt(String),
    #[error("the cursor is not one this store gave out")]
    BadCursor,
}

/// A statement's parameter, owned, so the statement can run on the store's runtime.
type Param = Box<dyn tokio_postgres::types::ToSql + Sync + Send>;

/// The PostgreSQL store. Its methods block, as the sled store's do: each runs its queries on the
/// store's own runtime and waits for them, so it may be called from any thread, the daemon's async
/// ones included.
pub struct PgStore {
    pool: Pool,
    /// Always some; taken when dropped, to shut down without waiting.
    rt: Option<tokio::runtime::Runtime>,
}

/// How to connect to the database beside its URL.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections kept at most.
    pub pool_size: usize,
    /// With `sslmode=require` in the URL: the CA certificates (PEM) the server's certificate must
    /// chain to (none: the public roots of webpki-roots).
    pub tls_ca_file: Option<PathBuf>,
}

impl PgOptions {
    /// At most `size` connections; public roots for TLS.
    pub fn pool(size: usize) -> Self {
        Self {
            pool_size: size,
            tls_ca_file: None,
        }
    }
}

impl PgStore {
    /// Connects to the database at `url` and migrates it.
    pub fn open(url: &str, opts: &PgOptions) -> Result<Self, PgError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("consentd-pg")
            .enable_all()
            .build()
            .map_err(|e| PgError::Connect(e.to_string()))?;
        let store = PgStore {
            pool: pool(url, opts)?,
            rt: Some(rt),
        };
        let pool = store.pool.clone();
        store.run(async move { migrate(&pool).await })?;
        Ok(store)
    }

    /// Runs one statement (its `$n` standing for `params` in order) and gives the rows it returned.
    fn query(&self, sql: impl Into<String>, params: Vec<Param>) -> Result<Vec<tokio_postgres::Row>, PgError> {
        let (pool, sql) = (self.pool.clone(), sql.into());
        self.run(async move {
            let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.iter().map(|p| &**p as _).collect();
            let client = client(&pool).await?;
            // Prepared once per connection: a statement is then one round trip.
            let statement = client.prepare_cached(&sql).await?;
            Ok(client.query(&statement, &refs).await?)
        })
    }

    /// Runs `f` on the store's runtime and waits for its answer. Called from a worker of a
    /// multi-threaded runtime (the daemon's handlers), the wait tells tokio the worker blocks, so its
    /// other tasks move to another thread rather than wait behind a round trip to the database.
    fn run<T: Send + 'static>(&self, f: impl std::future::Future<Output = Result<T, PgError>> + Send + 'static) -> Result<T, PgError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.as_ref().expect("open until dropped").spawn(async move {
            let _ = tx.send(f.await);
        });
        let wait = || rx.recv().map_err(|_| PgError::Connect("the database task stopped".into()))?;
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// A pool of connections to the database at `url` (a `postgresql://` URL or `key=value` pairs, as
/// libpq takes them; `host` may be a Unix socket directory). With `sslmode=require` every connection
/// is TLS (rustls), the server's certificate verified against `opts.tls_ca_file` or the public roots
/// and its name against the host's; with `prefer` (the default) or `disable`, none is (as a client
/// without TLS: `prefer` falls back to plain).
pub fn pool(url: &str, opts: &PgOptions) -> Result<Pool, PgError> {
    let config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| PgError::Url(e.to_string()))?;
    let mc = || ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match config.get_ssl_mode() {
        SslMode::Require => Manager::from_config(config, tls(opts)?, mc()),
        _ => Manager::from_config(config, NoTls, mc()),
    };
    Pool::builder(manager)
        .max_size(opts.pool_size)
        .build()
        .map_err(|e| PgError::Connect(e.to_string()))
}

/// The TLS connector: rustls (ring), trusting the CA file's certificates or the public roots.
fn tls(opts: &PgOptions) -> Result<tokio_postgres_rustls::MakeRustlsConnect, PgError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    match &opts.tls_ca_file {
        Some(file) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
                .and_then(|certs| certs.collect())
                .map_err(|e| PgError::Tls(format!("store.tls_ca_file {}: {e}", file.display())))?;
            if certs.is_empty() {
                return Err(PgError::Tls(format!("store.tls_ca_file {}: no certificate in it", file.display())));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| PgError::Tls(format!("store.tls_ca_file {}: {e}", file.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| PgError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

async fn client(pool: &Pool) -> Result<deadpool_postgres::Client, PgError> {
    pool.get().await.map_err(|e| match e {
        deadpool_postgres::PoolError::Backend(e) => PgError::Connect(with_causes(&e)),
        e => PgError::Connect(e.to_string()),
    })
}

/// An error with what caused it ("error performing TLS handshake: invalid peer certificate: …").
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        cause = c.source();
    }
    text
}

/// What [`migrate`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Migrated {
    /// The schema version before.
    pub from: i32,
    /// The schema version now.
    pub to: i32,
    /// The migrations applied, by version.
    pub applied: Vec<i32>,
}

/// Brings the database's schema up to [`schema::latest`].
pub async fn migrate(pool: &Pool) -> Result<Migrated, PgError> {
    let mut client = client(pool).await?;
    // Two replicas creating the lock table at once: one of them may fail on the catalog's unique
    // index; the table is there then, so trying again succeeds.
    for attempt in 0.. {
        let made = client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS consentd_schema_lock (id integer PRIMARY KEY);
                 INSERT INTO consentd_schema_lock VALUES (1) ON CONFLICT DO NOTHING;
                 CREATE TABLE IF NOT EXISTS consentd_schema (
                     version integer PRIMARY KEY,
                     name text NOT NULL,
                     applied_at timestamptz NOT NULL DEFAULT now()
                 );",
            )
            .await;
        match made {
            Ok(()) => break,
            Err(e)
                if attempt < 5
                    && matches!(
                        e.code(),
                        Some(&SqlState::UNIQUE_VIOLATION | &SqlState::DUPLICATE_TABLE | &SqlState::DUPLICATE_OBJECT)
                    ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT id FROM consentd_schema_lock WHERE id = 1 FOR UPDATE", &[])
        .await?;
    let from: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM consentd_schema", &[])
        .await?
        .get(0);
    if from > schema::latest() {
        return Err(PgError::Newer {
            found: from,
            known: schema::latest(),
        });
    }
    let mut applied = Vec::new();
    for (version, name, sql) in schema::MIGRATIONS.iter().filter(|m| m.0 > from) {
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO consentd_schema (version, name) VALUES ($1, $2)", &[version, name])
            .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    if !applied.is_empty() {
        tracing::info!(from, to = schema::latest(), "Database schema migrated.");
    }
    Ok(Migrated {
        from,
        to: schema::latest(),
        applied,
    })
}

/// The database's schema version, refused unless it is this consentd's (for daemons that do not
/// migrate at start).
pub async fn check_version(pool: &Pool) -> Result<i32, PgError> {
    let client = client(pool).await?;
    let found: i32 = match client.query_one("SELECT coalesce(max(version), 0) FROM consentd_schema", &[]).await {
        Ok(row) => row.get(0),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => 0,
        Err(e) => return Err(e.into()),
    };
    let known = schema::latest();
    match found.cmp(&known) {
        std::cmp::Ordering::Equal => Ok(found),
        std::cmp::Ordering::Greater => Err(PgError::Newer { found, known }),
        std::cmp::Ordering::Less => Err(PgError::Older { found, known }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_hide_numbers() {
        let e = super::PgError::Corrupt("number 491512345678".into()).to_string();
        assert!(!e.contains("491512345678") && e.contains("[number hidden]"), "{e}");
    }
}
