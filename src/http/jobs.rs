//! Imports that run in the background (`POST /v1/imports?background=true`), so a page can show a
//! large file's progress: how much of the file the import has read and, once done, its report or its
//! error. Jobs live in memory for the token that started them; each token's newest finished ones are
//! kept (another token's imports cannot push yours out), and a report is bounded (the first refused
//! records, each value cut to a prefix), so what is kept is bounded too.

use super::error::ApiError;
use crate::domain::Timestamp;
use crate::import::ImportReport;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Finished jobs kept per token for it to collect.
const KEEP_FINISHED: usize = 16;

#[derive(Default)]
pub struct ImportJobs {
    next: AtomicU64,
    jobs: Mutex<BTreeMap<u64, Job>>,
}

struct Job {
    owner: Arc<str>,
    started: Timestamp,
    total: u64,
    read: Arc<AtomicU64>,
    /// The report, or the error as the API gives it (with its HTTP status).
    outcome: Option<Result<ImportReport, Value>>,
}

impl ImportJobs {
    /// Registers a running import of `total` bytes; returns its id and the counter its reader moves.
    pub fn start(&self, owner: Arc<str>, total: u64) -> (u64, Arc<AtomicU64>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let read = Arc::new(AtomicU64::new(0));
        let job = Job {
            owner,
            started: Timestamp::now(),
            total,
            read: read.clone(),
            outcome: None,
        };
        self.jobs.lock().expect("jobs").insert(id, job);
        (id, read)
    }

    pub fn finish(&self, id: u64, outcome: Result<ImportReport, ApiError>) {
        let mut jobs = self.jobs.lock().expect("jobs");
        if let Some(job) = jobs.get_mut(&id) {
            job.outcome =
                Some(outcome.map_err(|e| json!({"status": e.status.as_u16(), "error": e.code, "message": e.message, "field": e.field})));
        }
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

    /// Where a job of `owner` stands: `running` with the bytes read, `done` with the report, or
    /// `failed` with the error. None if there is no such job of this owner.
    pub fn status(&self, id: u64, owner: &str) -> Option<Value> {
        let jobs = self.jobs.lock().expect("jobs");
        let job = jobs.get(&id).filter(|j| &*j.owner == owner)?;
        let mut v = json!({
            "id": id,
            "started": job.started,
            "bytes_total": job.total,
            "bytes_read": job.read.load(Ordering::Relaxed).min(job.total),
        });
        match &job.outcome {
            None => v["state"] = "running".into(),
            Some(Ok(report)) => {
                v["state"] = "done".into();
                v["report"] = serde_json::to_value(report).expect("serialisable");
            }
            Some(Err(e)) => {
                v["state"] = "failed".into();
                v["error"] = e.clone();
            }
        }
        Some(v)
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
        let jobs = ImportJobs::default();
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
