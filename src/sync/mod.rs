//! Scheduled sync with external consent systems: [`schedule`] (cron in a time zone), [`run`] (one pull
//! and/or push of one connector), [`scheduler`] (tokio-cron-scheduler timers; runs of one connector
//! never overlap), [`dead`] (refused pulled records, kept in parts), [`manage`] (what an admin does by hand: re-send or dismiss a refused batch, mark an
//! erasure handled, set a watermark). Connectors move bytes; mappings turn them into consents and back.

pub mod dead;
pub mod manage;
pub mod run;
pub mod schedule;
pub mod scheduler;

use crate::config::Config;
use crate::connectors::ConnectorConfig;
use crate::domain::{Consent, PhoneNumber, Timestamp, Usage};
use crate::mapping::Mapping;
use crate::store::Store;
use schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Runs kept per connector.
const KEPT_RUNS: usize = 20;

/// Where a connector stands, kept in the store after every page, file and batch.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectorState {
    /// Pull: the newest update time seen by the last successful pull (RFC 3339).
    pub watermark: Option<String>,
    /// Push: the last change (sequence number) delivered, refused (and kept) or not for this remote.
    pub pushed_seq: u64,
    /// Push: the batch being sent (its first and last change), recorded before it is sent, so that
    /// after a crash the same batch goes again with the same key and content, and new changes go
    /// in later batches.
    #[serde(default)]
    pub in_flight: Option<(u64, u64)>,
    /// Scheduled ticks skipped because the previous run was still going (kept apart in the store,
    /// filled in by [`Sync::state`]).
    #[serde(default)]
    pub skipped_ticks: u64,
    /// The latest runs, oldest first.
    pub runs: Vec<RunReport>,
}

/// What one run did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// `schedule`, `catch_up`, `manual`.
    pub trigger: String,
    pub started: String,
    pub finished: Option<String>,
    /// `ok` (everything was done), `partial` (done, but records or batches were refused or erasures
    /// are still owed: see `warnings`), `failed` (see `error`; the next run goes on from where this
    /// one stood), `stopped` (by a shutdown, after the page, file or batch in hand), `interrupted`
    /// (the daemon died during the run; found at the next start), or `running`.
    pub outcome: String,
    pub pulled: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub pushed: u64,
    /// Changes in batches the remote refused (kept, see `GET /v1/sync/NAME/refused`).
    pub push_refused: u64,
    /// Erasures (purged numbers) the remote took in this run.
    #[serde(default)]
    pub erasures_delivered: u64,
    /// Erasures still owed to the remote after this run (sent again next run).
    #[serde(default)]
    pub erasures_pending: u64,
    pub error: Option<String>,
    /// Why a run is `partial`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub watermark: Option<String>,
}

/// A purged number still to be deleted at one push connector: sent on every run until the remote
/// answers 2xx, or an admin marks it handled. The number is kept only until then, sealed (see
/// [`crate::store::Store::seal`]): the key goes when no connector is owed the erasure any more.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Erasure {
    /// Erasures of earlier versions: the number in cleartext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<PhoneNumber>,
    #[serde(default)]
    pub sealed: String,
    pub usages: Vec<Usage>,
    /// When it was queued (the purge).
    pub at: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(flatten)]
    pub last: LastTry,
}

/// The last attempt at delivering an erasure: when, the remote's status (none when no answer came)
/// and the start of its answer or the reason.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LastTry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_try: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_answer: Option<String>,
}

/// Whether a purge reached a connector, by the number's keyed hash (no number).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErasureStatus {
    /// `delivered` (the remote answered 2xx), or `handled` (an admin marked it done outside consentd).
    pub status: String,
    pub at: String,
    #[serde(default)]
    pub attempts: u32,
    /// `handled`: who, and their note.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// An erasure as the DPO report and `GET /v1/sync` show it: per connector, by the number's keyed
/// hash; `status` is `pending`, `delivered` or `handled`.
#[derive(Debug, Clone, Serialize)]
pub struct ErasureView {
    pub connector: String,
    /// The keyed hash of the number (what `…/erasures/ID/handled` takes).
    pub id: String,
    pub status: String,
    /// Queued (pending) or finished (delivered, handled).
    pub at: String,
    pub attempts: u32,
    #[serde(flatten)]
    pub last: LastTry,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl ErasureView {
    fn pending(connector: &str, id: &str, e: &Erasure) -> Self {
        Self {
            connector: connector.to_string(),
            id: id.to_string(),
            status: "pending".into(),
            at: e.at.clone(),
            attempts: e.attempts,
            last: e.last.clone(),
            by: None,
            note: None,
        }
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PhoneNumber::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// One record to push.
#[derive(Debug, Clone)]
pub enum Outgoing {
    Set(Consent),
    Delete(PhoneNumber, Usage),
}

/// Writes records in the mapping's format into a body.
pub fn encode(mapping: &Mapping, records: &[Outgoing]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    {
        let out = Box::new(&mut body);
        let mut w = crate::formats::open_writer(mapping.format(), &mapping.out_columns(), None, out).map_err(|e| e.to_string())?;
        write_records(mapping, &mut *w, records)?;
        w.finish().map_err(|e| e.to_string())?;
    }
    Ok(body)
}

/// Writes records through a writer; a deletion the mapping cannot express (no delete marker) is left
/// out with a warning. A consent the mapping cannot write as it is (a given consent, for an opt-out
/// list whose consent is a constant) goes as a deletion where the mapping can say one, so the remote
/// list loses the number, and is otherwise left out with a warning: it is never written as what it
/// is not.
pub fn write_records(mapping: &Mapping, w: &mut dyn crate::formats::RecordWriter, records: &[Outgoing]) -> Result<(), String> {
    let mut rec = crate::formats::OutRecord::default();
    for r in records {
        match r {
            Outgoing::Set(c) if !mapping.expresses(c.usage, c.consent) => {
                if !mapping.to_out_delete(c.number, c.usage, &mut rec) {
                    tracing::warn!(mapping = %mapping.name, "A change is not pushed: the mapping cannot write this consent.");
                    continue;
                }
            }
            Outgoing::Set(c) => mapping.to_out_record(std::slice::from_ref(c), &mut rec),
            Outgoing::Delete(n, u) => {
                if !mapping.to_out_delete(*n, *u, &mut rec) {
                    tracing::warn!(mapping = %mapping.name, "A deletion is not pushed: the mapping has no delete marker.");
                    continue;
                }
            }
        }
        w.write(&rec).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// A connector ready to run: its settings, mappings and schedule.
pub struct Connector {
    pub cfg: ConnectorConfig,
    /// Reads what is pulled (and writes pushes, unless `push_mapping` is set).
    pub mapping: Mapping,
    /// Writes what is pushed.
    pub push_mapping: Mapping,
    pub schedule: Schedule,
    /// The sources whose changes are not pushed to this connector: its own pulls, and those of the
    /// connectors of the same `system`.
    pub own: Vec<crate::domain::Source>,
}

impl Connector {
    /// The region national numbers of this connector's records are read in, when it names one
    /// (checked with the config).
    pub fn region(&self) -> Option<crate::domain::Region> {
        self.cfg.region.as_deref().and_then(|r| crate::domain::Region::parse(r).ok())
    }

    /// Who wins a conflict in what this connector pulls.
    pub fn prefer(&self) -> crate::domain::Prefer {
        match self.cfg.authority {
            crate::connectors::Authority::Newest => crate::domain::Prefer::Newest,
            crate::connectors::Authority::Remote => crate::domain::Prefer::Theirs,
            crate::connectors::Authority::Local => crate::domain::Prefer::Ours,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("no connector named {0:?}")]
    Unknown(String),
    #[error("connector {0:?} is already running")]
    Busy(String),
    /// Another daemon on the same store holds the connector's lease (runs it now, or ran this tick).
    #[error("connector {0:?} is run by another daemon on this store")]
    Elsewhere(String),
    /// Something asked of a connector's entry that is not there (a refused batch, an erasure).
    #[error("{0}")]
    NotFound(String),
    /// A request by hand that the connector or the remote could not carry out.
    #[error("{0}")]
    Failed(String),
    /// A request by hand with a wrong value.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// All connectors, and which are running.
pub struct Sync {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    pub connectors: Vec<Arc<Connector>>,
    /// The runs going on, with their figures so far (brought up to date per file, page set or batch).
    running: Mutex<HashMap<String, RunReport>>,
    /// Set at shutdown: runs finish the page, file or batch in hand and stop.
    pub stopping: AtomicBool,
    /// This daemon's name in the store's leases: with several daemons on one PostgreSQL store, the one
    /// holding a connector's lease runs it.
    holder: String,
}

/// A daemon's name in leases: its host and data directory, hashed. The same daemon started again
/// (after a crash) is the same holder, so it takes back a lease it held at once rather than wait for
/// it to expire; daemons on other hosts or with other directories are others.
fn lease_holder(data_dir: &std::path::Path) -> String {
    use sha2::Digest;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let hash = sha2::Sha256::digest(format!("{}\0{}", host.trim(), dir.display()).as_bytes());
    hex::encode(&hash[..8])
}

/// The lease of a connector's runs on a store several daemons share.
fn lease_name(connector: &str) -> String {
    format!("sync:{connector}")
}

/// Runs shown `running` where none goes on (at the sled daemon's start; when a run starts under the
/// connector's lease) were cut off by a crash or a kill: they are `interrupted`, and the next run goes
/// on from where they stood. Whether any was.
fn mark_interrupted(name: &str, state: &mut ConnectorState) -> bool {
    let mut changed = false;
    for r in state.runs.iter_mut().filter(|r| r.outcome == "running") {
        r.outcome = "interrupted".into();
        r.error = Some("the daemon stopped during this run (a crash or a kill); the next run goes on from where it stood".into());
        changed = true;
    }
    if changed {
        tracing::warn!(connector = %name, "A sync run was interrupted by a crash; the next run goes on from where it stood.");
    }
    changed
}

impl Sync {
    /// Loads every connector of the (checked) config.
    pub fn new(store: Arc<Store>, config: Arc<Config>) -> Result<Self, String> {
        let mut connectors = Vec::new();
        for c in &config.connectors {
            if let Some(f) = &c.file {
                // Made up front, so people (and scripts) can drop files in before the first run.
                for dir in f.dir.iter().chain(&f.out_dir) {
                    std::fs::create_dir_all(dir).map_err(|e| format!("connector {}: cannot create {}: {e}", c.name, dir.display()))?;
                }
            }
            let mapping = Mapping::load(&c.mapping, &config.mappings_dir).map_err(|e| e.to_string())?;
            let push_mapping = match &c.push_mapping {
                Some(m) => Mapping::load(m, &config.mappings_dir).map_err(|e| e.to_string())?,
                None => mapping.clone(),
            };
            let own = config
                .connectors
                .iter()
                .filter(|o| o.name == c.name || (c.system.is_some() && o.system == c.system))
                .map(|o| crate::domain::Source::Sync(o.name.as_str().into()))
                .collect();
            connectors.push(Arc::new(Connector {
                mapping,
                push_mapping,
                schedule: Schedule::parse(&c.schedule, c.timezone.as_deref())?,
                cfg: c.clone(),
                own,
            }));
        }
        let sync = Self {
            store,
            holder: lease_holder(&config.data_dir),
            config,
            connectors,
            running: Mutex::new(HashMap::new()),
            stopping: AtomicBool::new(false),
        };
        // A run shown `running` was cut off by a crash, unless another daemon on the same store
        // holds the connector's lease now (then it is that daemon's run; a lease this daemon held
        // before it was killed is its own).
        for c in &sync.connectors {
            let name = &c.cfg.name;
            let now = Timestamp::now().millis();
            let lease = sync.store.lease(&lease_name(name)).map_err(|e| e.to_string())?;
            if lease.is_some_and(|(holder, expires)| holder != sync.holder && expires > now) {
                continue;
            }
            let mut state = sync.state(name).map_err(|e| e.to_string())?;
            if mark_interrupted(name, &mut state) {
                sync.save_state(name, &state).map_err(|e| e.to_string())?;
            }
        }
        Ok(sync)
    }

    pub fn connector(&self, name: &str) -> Result<Arc<Connector>, SyncError> {
        self.connectors
            .iter()
            .find(|c| c.cfg.name == name)
            .cloned()
            .ok_or_else(|| SyncError::Unknown(name.to_string()))
    }

    pub fn state(&self, name: &str) -> Result<ConnectorState, SyncError> {
        let mut state: ConnectorState = self.store.sync_get(name, "state", b"")?.unwrap_or_default();
        state.skipped_ticks = self.store.sync_get(name, "ticks", b"")?.unwrap_or(0);
        Ok(state)
    }

    pub fn is_running(&self, name: &str) -> bool {
        self.running.lock().expect("running").contains_key(name)
    }

    /// The figures so far of the connector's run going on, if one is.
    pub fn progress(&self, name: &str) -> Option<RunReport> {
        self.running.lock().expect("running").get(name).cloned()
    }

    /// Shows a run's figures so far to [`Sync::progress`].
    fn publish(&self, name: &str, run: &RunReport) {
        if let Some(live) = self.running.lock().expect("running").get_mut(name) {
            live.clone_from(run);
        }
    }

    /// Counts a scheduled tick that found the previous run still going (kept apart from the state,
    /// which the run going on writes).
    pub fn skipped_tick(&self, name: &str) -> Result<(), SyncError> {
        let ticks: u64 = self.store.sync_get(name, "ticks", b"")?.unwrap_or(0);
        self.store.sync_put(name, "ticks", b"", &(ticks + 1))?;
        Ok(())
    }

    /// Holds a connector for a run or a change by hand: `Busy` if this daemon has it in hand already,
    /// `Elsewhere` if another daemon on the same store holds its lease (or ran this `tick`). The
    /// lease is renewed while it is held and let go when the holding is dropped.
    fn hold(&self, name: &str, trigger: &str) -> Result<Holding<'_>, SyncError> {
        self.hold_tick(name, trigger, Timestamp::now())
    }

    fn hold_tick(&self, name: &str, trigger: &str, tick: Timestamp) -> Result<Holding<'_>, SyncError> {
        let mut held = {
            let mut running = self.running.lock().expect("running");
            if running.contains_key(name) {
                return Err(SyncError::Busy(name.to_string()));
            }
            let starting = RunReport {
                trigger: trigger.to_string(),
                started: Timestamp::now().to_rfc3339(),
                outcome: "running".into(),
                ..Default::default()
            };
            running.insert(name.to_string(), starting);
            Holding {
                sync: self,
                name: name.to_string(),
                lease: None,
            }
        };
        // With the sled store this is the one daemon: no lease to take.
        if self.store.sled().is_none() {
            let ttl_ms = self.config.store.lease_secs as i64 * 1000;
            match Lease::take(&self.store, lease_name(name), &self.holder, tick, ttl_ms)? {
                Some(lease) => held.lease = Some(lease),
                None => return Err(SyncError::Elsewhere(name.to_string())),
            }
        }
        Ok(held)
    }

    /// One pull and/or push of a connector (blocking). `Busy` if a run of it is going.
    pub fn run_once(&self, name: &str, trigger: &str) -> Result<RunReport, SyncError> {
        self.run_tick(name, trigger, Timestamp::now())
    }

    /// The run of the scheduled `tick`: `Busy` if a run of it is going here, `Elsewhere` if another
    /// daemon on the same store holds its lease or has run this tick. The lease is renewed while the
    /// run goes on and let go after it.
    pub fn run_tick(&self, name: &str, trigger: &str, tick: Timestamp) -> Result<RunReport, SyncError> {
        let c = self.connector(name)?;
        let _held = self.hold_tick(name, trigger, tick)?;
        self.run_locked(&c, trigger)
    }

    fn run_locked(&self, c: &Connector, trigger: &str) -> Result<RunReport, SyncError> {
        let name = &c.cfg.name;
        let mut state = self.state(name)?;
        mark_interrupted(name, &mut state);
        let mut run = RunReport {
            trigger: trigger.to_string(),
            started: Timestamp::now().to_rfc3339(),
            outcome: "running".into(),
            ..Default::default()
        };
        state.runs.push(run.clone());
        self.store.sync_put(name, "state", b"", &state)?;
        self.publish(name, &run);
        tracing::info!(connector = %name, trigger, "Sync run started.");
        let mut result = Ok(());
        if c.cfg.direction.pulls() {
            result = self.pull(c, &mut run, &mut state);
        }
        if result.is_ok() && c.cfg.direction.pushes() {
            result = self.push(c, &mut run, &mut state);
        }
        run.finished = Some(Timestamp::now().to_rfc3339());
        if run.rejected > 0 {
            run.warnings
                .push(format!("{} pulled record(s) refused: see the dead letters", run.rejected));
        }
        if run.push_refused > 0 {
            run.warnings.push(format!(
                "{} change(s) refused by the remote: see the refused batches",
                run.push_refused
            ));
        }
        if run.erasures_pending > 0 {
            run.warnings.push(format!(
                "{} erasure(s) not yet taken by the remote: sent again next run",
                run.erasures_pending
            ));
        }
        let stopping = self.stopping.load(Ordering::SeqCst);
        match result {
            Err(e) if stopping => {
                tracing::info!(connector = %name, "Sync run stopped by the shutdown.");
                run.outcome = "stopped".into();
                run.error = Some(format!(
                    "stopped by the shutdown after the page, file or batch in hand ({e}); the next run goes on from here"
                ));
            }
            Ok(()) if run.warnings.is_empty() => run.outcome = "ok".into(),
            Ok(()) => run.outcome = "partial".into(),
            Err(e) => {
                // The error may quote a remote's answer, numbers and all: that only at debug level.
                let shown = crate::domain::mask_numbers(crate::connectors::http::without_answer(&e));
                tracing::warn!(connector = %name, error = %shown, "Sync run failed.");
                tracing::debug!(connector = %name, error = %e, "Sync run failed (unmasked).");
                run.outcome = "failed".into();
                run.error = Some(e);
            }
        }
        // Counted in /metrics ([`crate::http::metrics`]): labels are connector names and outcomes.
        let connector = name.clone();
        metrics::counter!("consentd_sync_runs_total", "connector" => connector.clone(), "outcome" => run.outcome.clone()).increment(1);
        for (what, n) in [
            ("pulled", run.pulled),
            ("inserted", run.inserted),
            ("updated", run.updated),
            ("unchanged", run.unchanged),
            ("deleted", run.deleted),
            ("rejected", run.rejected),
            ("skipped", run.skipped),
            ("pushed", run.pushed),
            ("push_refused", run.push_refused),
        ] {
            metrics::counter!("consentd_sync_records_total", "connector" => connector.clone(), "outcome" => what).increment(n);
        }
        metrics::counter!("consentd_sync_erasures_delivered_total", "connector" => connector).increment(run.erasures_delivered);
        state.runs.pop();
        state.runs.push(run.clone());
        let excess = state.runs.len().saturating_sub(KEPT_RUNS);
        state.runs.drain(..excess);
        self.save_state(name, &state).map_err(SyncError::Failed)?;
        tracing::info!(
            connector = %name,
            outcome = %run.outcome,
            pulled = run.pulled,
            inserted = run.inserted,
            updated = run.updated,
            rejected = run.rejected,
            pushed = run.pushed,
            push_refused = run.push_refused,
            erasures_pending = run.erasures_pending,
            "Sync run finished."
        );
        Ok(run)
    }

    /// Queues a purged number's deletion for every push connector.
    pub fn queue_erasure(&self, number: PhoneNumber, usages: &[Usage], hash: &str) -> Result<(), SyncError> {
        for c in self.connectors.iter().filter(|c| c.cfg.direction.pushes()) {
            let e = Erasure {
                number: None,
                sealed: self.store.seal(hash, number)?,
                usages: usages.to_vec(),
                at: Timestamp::now().to_rfc3339(),
                attempts: 0,
                last: LastTry::default(),
            };
            self.store.sync_put(&c.cfg.name, "erase", hash.as_bytes(), &e)?;
        }
        Ok(())
    }

    /// The number an erasure is about, while its seal lives.
    pub(super) fn erased_number(&self, hash: &str, e: &Erasure) -> Result<Option<PhoneNumber>, SyncError> {
        Ok(match e.number {
            Some(n) => Some(n),
            None => self.store.unseal(hash, &e.sealed)?,
        })
    }

    /// Destroys the key a purged number is sealed under once no connector is owed its erasure: the
    /// number can no longer be read from anything kept.
    pub fn release_seal(&self, hash: &str) -> Result<(), SyncError> {
        for c in &self.connectors {
            if self.store.sync_get::<Erasure>(&c.cfg.name, "erase", hash.as_bytes())?.is_some() {
                return Ok(());
            }
        }
        self.store.destroy_seal(hash)?;
        Ok(())
    }

    /// Per push connector: whether a purge (by the number's keyed hash) reached it.
    pub fn erasure_status(&self, hash: &str) -> Result<Vec<ErasureView>, SyncError> {
        let mut out = Vec::new();
        for c in self.connectors.iter().filter(|c| c.cfg.direction.pushes()) {
            let name = &c.cfg.name;
            if let Some(e) = self.store.sync_get::<Erasure>(name, "erase", hash.as_bytes())? {
                out.push(ErasureView::pending(name, hash, &e));
            } else if let Some(s) = self.store.sync_get::<ErasureStatus>(name, "erased", hash.as_bytes())? {
                out.push(ErasureView {
                    connector: name.clone(),
                    id: hash.to_string(),
                    status: s.status,
                    at: s.at,
                    attempts: s.attempts,
                    last: LastTry::default(),
                    by: s.by,
                    note: s.note,
                });
            }
        }
        Ok(out)
    }

    /// A connector's erasures still owed (no numbers: by keyed hash).
    pub fn pending_erasures(&self, name: &str) -> Result<Vec<ErasureView>, SyncError> {
        Ok(self
            .store
            .sync_list::<Erasure>(name, "erase")?
            .iter()
            .map(|(id, e)| ErasureView::pending(name, &String::from_utf8_lossy(id), e))
            .collect())
    }

    fn save_state(&self, name: &str, state: &ConnectorState) -> Result<(), String> {
        self.store.sync_put(name, "state", b"", state).map_err(|e| e.to_string())
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// A connector held by a run or a request by hand; let go when dropped, also on a panic.
struct Holding<'a> {
    sync: &'a Sync,
    name: String,
    /// Its lease, on a store several daemons share.
    lease: Option<Lease>,
}

/// A connector's lease on a shared store, renewed every third of its time by a thread of its own
/// until dropped, then let go (a daemon killed meanwhile leaves it to expire).
struct Lease {
    store: Arc<Store>,
    name: String,
    holder: String,
    stop: Option<std::sync::mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// The lease `name` for the scheduled `tick`, if no other daemon holds it or ran that tick.
    fn take(store: &Arc<Store>, name: String, holder: &str, tick: Timestamp, ttl_ms: i64) -> Result<Option<Lease>, SyncError> {
        if !store.take_lease(&name, holder, tick, ttl_ms)? {
            return Ok(None);
        }
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let (s, n, h) = (store.clone(), name.clone(), holder.to_string());
        let renewer = std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                wait.recv_timeout(std::time::Duration::from_millis(ttl_ms as u64 / 3))
            {
                match s.renew_lease(&n, &h, ttl_ms) {
                    Ok(true) => {}
                    Ok(false) => tracing::warn!(lease = %n, "A connector's lease was lost while it was held."),
                    Err(e) => tracing::warn!(lease = %n, error = %e, "A connector's lease could not be renewed."),
                }
            }
        });
        Ok(Some(Lease {
            store: store.clone(),
            name,
            holder: holder.to_string(),
            stop: Some(stop),
            renewer: Some(renewer),
        }))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(r) = self.renewer.take() {
            let _ = r.join();
        }
        if let Err(e) = self.store.release_lease(&self.name, &self.holder) {
            tracing::warn!(lease = %self.name, error = %e, "A connector's lease could not be let go; it expires by itself.");
        }
    }
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        self.sync.running.lock().expect("running").remove(&self.name);
    }
}
