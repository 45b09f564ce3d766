//! Imports that run in the background (`POST /v1/imports?background=true`), so a page can show a
//! large file's progress: how much of the file the import has read and, once done, its report or its
//! error. Jobs live in memory for the token that started them; each token's newest finished ones are
//! kept (another token's imports cannot push yours out), and a report is bounded (the first refused
//! records, each value cut to a prefix), so what is kept is bounded too.
//!
//! With several daemons on one PostgreSQL store, a job is also kept in the store (sync state of the
//! reserved connector `""`, kind `import_job`): its progress written every second while it runs, its
//! outcome when it ends, so any daemon answers for it (a load balancer may send the page's next
//! question elsewhere). A job whose progress stops coming for 10 seconds is shown failed: the daemon
//! running it stopped; what it had imported is kept (each chunk is applied whole), and importing the
//! file again finishes the work (records already held come out unchanged). Ids are random, so
//! daemons never hand out the same one.

use super::error::ApiError;
use crate::domain::Timestamp;
use crate::import::ImportReport;
use crate::store::Store;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Finished jobs kept per token for it to collect.
const KEEP_FINISHED: usize = 16;
/// How often a running job's progress is written to a shared store.
const PROGRESS_EVERY_MS: u64 = 1000;
/// A running job whose progress is older than this is shown failed (its daemon stopped).
const STALE_MS: i64 = 10_000;
/// Where jobs are kept in a shared store: sync state of a connector no config can name.
const KEPT_CONNECTOR: &str = "";
const KEPT_KIND: &str = "import_job";

#[derive(Default)]
pub struct ImportJobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Job>>,
    /// The store, when several daemons share it: jobs are kept there too.
    shared: Option<Arc<Store>>,
}

/// A job as a shared store keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct KeptJob {
    owner: String,
    /// RFC 3339.
    started: String,
    bytes_total: u64,
    bytes_read: u64,
    /// `running`, `done` or `failed`.
    state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    report: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
    /// When this was written (UTC ms).
    written_ms: i64,
}

struct Job {
    owner: Arc<str>,
    started: Timestamp,
    total: u64,
    read: Arc<AtomicU64>,
    /// The report, or the error as the API gives it (with its HTTP status).
    outcome: Option<Result<ImportReport, Value>>,
    /// Held while the job's record is written to a shared store; true once the outcome is written,
    /// so progress written late never covers it.
    outcome_written: Arc<Mutex<bool>>,
}

impl Job {
    /// Where the job stands, as the API shows it and a shared store keeps it.
    fn kept(&self) -> KeptJob {
        let (state, report, error) = match &self.outcome {
            None => ("running", None, None),
            Some(Ok(report)) => ("done", Some(serde_json::to_value(report).expect("serialisable")), None),
            Some(Err(e)) => ("failed", None, Some(e.clone())),
        };
        KeptJob {
            owner: self.owner.to_string(),
            started: self.started.to_rfc3339(),
            bytes_total: self.total,
            bytes_read: self.read.load(Ordering::Relaxed).min(self.total),
            state: state.into(),
            report,
            error,
            written_ms: Timestamp::now().millis(),
        }
    }
}

impl ImportJobs {
    /// Jobs of this daemon; with a store several daemons share, kept there too.
    pub fn new(store: &Arc<Store>) -> Self {
        Self {
            shared: store.sled().is_none().then(|| store.clone()),
            ..Default::default()
        }
    }

    /// Registers a running import of `total` bytes; returns its id and the counter its reader moves.
    pub fn start(self: &Arc<Self>, owner: Arc<str>, total: u64) -> (u64, Arc<AtomicU64>) {
        let id = match self.shared {
            // Random (53 bits, exact in JSON): daemons sharing the store never hand out the same id.
            Some(_) => {
                let mut b = [0u8; 8];
                getrandom::getrandom(&mut b).expect("randomness");
                (u64::from_be_bytes(b) & ((1 << 53) - 1)).max(1)
            }
            None => self.next.fetch_add(1, Ordering::Relaxed) + 1,
        };
        let read = Arc::new(AtomicU64::new(0));
        let job = Job {
            owner,
            started: Timestamp::now(),
            total,
            read: read.clone(),
            outcome: None,
            outcome_written: Arc::default(),
        };
        let written = job.outcome_written.clone();
        self.jobs.lock().expect("jobs").insert(id, job);
        if self.shared.is_some() {
            // In the store before its id is given out (the next question may go to another daemon),
            // then its progress every second until the outcome is written.
            self.keep(id, &written);
            let jobs = self.clone();
            std::thread::spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_millis(PROGRESS_EVERY_MS));
                if !jobs.keep(id, &written) {
                    return;
                }
            });
        }
        (id, read)
    }

    /// Writes a job's record to the shared store (unless its outcome is written already); whether
    /// the job is still running.
    fn keep(&self, id: u64, outcome_written: &Mutex<bool>) -> bool {
        let Some(store) = &self.shared else { return false };
        let mut ended = outcome_written.lock().expect("job");
        if *ended {
            return false;
        }
        let Some(record) = self.jobs.lock().expect("jobs").get(&id).map(Job::kept) else {
            return false;
        };
        let running = record.state == "running";
        if let Err(e) = store.sync_put(KEPT_CONNECTOR, KEPT_KIND, &id.to_be_bytes(), &record) {
            tracing::warn!(error = %e, job = id, "An import job's progress could not be written to the store.");
        }
        *ended = !running;
        running
    }

    pub fn finish(&self, id: u64, outcome: Result<ImportReport, ApiError>) {
        let written = {
            let mut jobs = self.jobs.lock().expect("jobs");
            let Some(job) = jobs.get_mut(&id) else { return };
            job.outcome =
                Some(outcome.map_err(|e| json!({"status": e.status.as_u16(), "error": e.code, "message": e.message, "field": e.field})));
            job.outcome_written.clone()
        };
        if self.shared.is_some() {
            self.keep(id, &written);
            self.prune_kept(id);
        }
        let mut jobs = self.jobs.lock().expect("jobs");
        let Some(owner) = jobs.get(&id).map(|j| j.owner.clone()) else {
            return;
        };
        let finished: Vec<u64> = jobs
            .iter()
            .filter(|(_, j)| j.outcome.is_some() && j.owner == owner)
            .map(|(id, _)| *id)
            .collect();
        for id in finished.iter().take(finished.len().saturating_sub(KEEP_FINISHED)) {
            jobs.remove(id);
        }
    }

    /// How many imports are still running.
    pub fn running(&self) -> usize {
        self.jobs.lock().expect("jobs").values().filter(|j| j.outcome.is_none()).count()
    }

    /// For a DPO purge: the refused and skipped records shown in finished jobs' reports may hold the
    /// number, in whatever form it was written; they are cleared (the counts stay), here and in a
    /// shared store.
    /// Fails when the shared store could not be read or written (the purge then fails, and doing it
    /// again clears them).
    pub fn forget_samples(&self) -> Result<(), crate::store::StoreError> {
        for job in self.jobs.lock().expect("jobs").values_mut() {
            if let Some(Ok(report)) = &mut job.outcome {
                report.rejects.clear();
                report.skips.clear();
            }
        }
        let Some(store) = &self.shared else { return Ok(()) };
        for (key, mut job) in store.sync_list::<KeptJob>(KEPT_CONNECTOR, KEPT_KIND)? {
            let Some(report) = job.report.as_mut() else { continue };
            let mut cleared = false;
            for list in ["rejects", "skips"] {
                if report[list].as_array().is_some_and(|a| !a.is_empty()) {
                    report[list] = json!([]);
                    cleared = true;
                }
            }
            if cleared {
                store.sync_put(KEPT_CONNECTOR, KEPT_KIND, &key, &job)?;
            }
        }
        Ok(())
    }

    /// A shared store keeps the newest finished jobs of the owner of job `id`, as memory does.
    fn prune_kept(&self, id: u64) {
        let Some(store) = &self.shared else { return };
        let all = match store.sync_list::<KeptJob>(KEPT_CONNECTOR, KEPT_KIND) {
            Ok(all) => all,
            Err(e) => return tracing::warn!(error = %e, "Import jobs kept in the store could not be listed."),
        };
        let Some(owner) = all
            .iter()
            .find(|(k, _)| k.as_slice() == id.to_be_bytes())
            .map(|(_, j)| j.owner.clone())
        else {
            return;
        };
        let mut finished: Vec<(i64, Vec<u8>)> = all
            .into_iter()
            .filter(|(_, j)| j.owner == owner && j.state != "running")
            .map(|(k, j)| (j.written_ms, k))
            .collect();
        finished.sort();
        for (_, key) in finished.iter().take(finished.len().saturating_sub(KEEP_FINISHED)) {
            if let Err(e) = store.sync_remove(KEPT_CONNECTOR, KEPT_KIND, key) {
                tracing::warn!(error = %e, "An old import job could not be removed from the store.");
            }
        }
    }

    /// Where a job of `owner` stands: `running` with the bytes read, `done` with the report, or
    /// `failed` with the error. None if there is no such job of this owner (here, or in a shared
    /// store: another daemon's).
    pub fn status(&self, id: u64, owner: &str) -> Option<Value> {
        let here = self.jobs.lock().expect("jobs").get(&id).map(Job::kept);
        // A finished job as the shared store has it (a purge through another daemon changes it);
        // a running one of this daemon from memory, where its progress is newest.
        let kept = match &here {
            Some(j) if j.state == "running" => None,
            _ => self.kept_elsewhere(id),
        };
        let job = kept.or(here).filter(|j| j.owner == owner)?;
        let mut v = json!({
            "id": id,
            "started": job.started,
            "bytes_total": job.bytes_total,
            "bytes_read": job.bytes_read,
            "state": job.state,
        });
        if let Some(report) = job.report {
            v["report"] = report;
        }
        if let Some(error) = job.error {
            v["error"] = error;
        }
        Some(v)
    }

    /// A job another daemon runs or ran, from the shared store; one whose progress stopped coming is
    /// failed.
    fn kept_elsewhere(&self, id: u64) -> Option<KeptJob> {
        let store = self.shared.as_ref()?;
        let mut job: KeptJob = match store.sync_get(KEPT_CONNECTOR, KEPT_KIND, &id.to_be_bytes()) {
            Ok(job) => job?,
            Err(e) => {
                tracing::warn!(error = %e, job = id, "An import job could not be read from the store.");
                return None;
            }
        };
        if job.state == "running" && Timestamp::now().millis() - job.written_ms > STALE_MS {
            job.state = "failed".into();
            job.error = Some(json!({
                "status": 503,
                "error": "interrupted",
                "message": "the daemon running this import stopped before it finished; what it imported is kept (each chunk whole): import the file again to finish (records held already come out unchanged)",
            }));
        }
        Some(job)
    }
}

/// A reader that adds what it reads to a counter (restarted at each pass over the file).
pub struct Counting<R> {
    pub inner: R,
    pub read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_keeps_its_newest_finished_jobs_whatever_others_run() {
        let jobs = Arc::new(ImportJobs::default());
        let (mine, _) = jobs.start("mine".into(), 10);
        jobs.finish(mine, Ok(ImportReport::default()));
        let theirs: Vec<u64> = (0..3 * KEEP_FINISHED)
            .map(|_| {
                let (id, _) = jobs.start("theirs".into(), 10);
                jobs.finish(id, Ok(ImportReport::default()));
                id
            })
            .collect();
        assert_eq!(jobs.status(mine, "mine").unwrap()["state"], "done");
        assert!(jobs.status(mine, "theirs").is_none(), "a job is its owner's");
        let kept = theirs.iter().filter(|id| jobs.status(**id, "theirs").is_some()).count();
        assert_eq!(kept, KEEP_FINISHED);
        assert!(jobs.status(*theirs.last().unwrap(), "theirs").is_some(), "the newest are kept");
    }
}
