//! The schedule of every connector, run by tokio-cron-scheduler. Each connector's next run is worked
//! out by [`Schedule::next_after`] in its own time zone and set as a one-shot job, which sets the
//! next one when it fires: tokio-cron-scheduler's own cron jobs fix a zone's UTC offset when the job is
//! made, which would be an hour off after a daylight-saving change. A tick that finds the previous
//! run still going is skipped and counted; a run missed while the daemon was down runs at start-up.

use super::Sync;
use crate::domain::Timestamp;
use std::sync::Arc;
use std::time::Duration;
use tokio_cron_scheduler::{Job, JobScheduler};

/// The running scheduler.
pub struct Scheduler {
    jobs: JobScheduler,
    sync: Arc<Sync>,
    runs: tokio::task::JoinSet<()>,
}

impl Scheduler {
    /// Starts the timers, and the catch-up runs of connectors whose scheduled run was missed.
    pub async fn start(sync: Arc<Sync>) -> anyhow::Result<Self> {
        let jobs = JobScheduler::new().await?;
        let mut runs = tokio::task::JoinSet::new();
        for c in &sync.connectors {
            let name = c.cfg.name.clone();
            let last = sync
                .state(&name)?
                .runs
                .last()
                .and_then(|r| Timestamp::parse_rfc3339(&r.started).ok());
            if c.cfg.catch_up && c.schedule.missed(last, Timestamp::now()) {
                tracing::info!(connector = %name, "A scheduled run was missed while the daemon was down; running it now.");
                let s = sync.clone();
                runs.spawn_blocking(move || tick(&s, &name, "catch_up", Timestamp::now()));
            }
            arm(&jobs, sync.clone(), c.cfg.name.clone()).await?;
        }
        jobs.start().await?;
        Ok(Self { jobs, sync, runs })
    }

    /// Stops the timers and waits for runs in flight to finish the batch in hand.
    pub async fn stop(mut self) {
        self.sync.stop();
        let _ = self.jobs.shutdown().await;
        while self.runs.join_next().await.is_some() {}
        // Runs started by timers or by hand hold the connector; wait until none does.
        while self.sync.connectors.iter().any(|c| self.sync.is_running(&c.cfg.name)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sets a connector's next run as a one-shot job that runs it and sets the one after.
fn arm(
    jobs: &JobScheduler,
    sync: Arc<Sync>,
    name: String,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send + '_>> {
    Box::pin(async move {
        let Ok(c) = sync.connector(&name) else { return Ok(()) };
        let now = Timestamp::now();
        let Some(next) = c.schedule.next_after(now) else {
            tracing::warn!(connector = %name, "The schedule has no next run.");
            return Ok(());
        };
        let wait = Duration::from_millis((next.millis() - now.millis()).max(0) as u64);
        let job_jobs = jobs.clone();
        let job = Job::new_one_shot_async(wait, move |_, _| {
            let (sync, name, jobs) = (sync.clone(), name.clone(), job_jobs.clone());
            Box::pin(async move {
                if sync.stopping.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let s = sync.clone();
                let n = name.clone();
                // The run goes on a blocking thread; the next tick is armed at once, so a long run
                // makes later ticks find it busy (skipped and counted), not pile up.
                tokio::task::spawn_blocking(move || tick(&s, &n, "schedule", next));
                if let Err(e) = arm(&jobs, sync, name.clone()).await {
                    tracing::error!(connector = %name, error = %e, "Cannot set the next run.");
                }
            })
        })?;
        jobs.add(job).await?;
        Ok(())
    })
}

/// One scheduled (or catch-up) run: skipped and counted when the previous one is still going; left to
/// the daemon that took the tick when several share a store.
fn tick(sync: &Sync, name: &str, trigger: &str, at: Timestamp) {
    match sync.run_tick(name, trigger, at) {
        Ok(_) => {}
        Err(super::SyncError::Elsewhere(_)) => {
            tracing::debug!(connector = %name, "Another daemon on this store runs this tick.");
        }
        Err(super::SyncError::Busy(_)) => {
            tracing::warn!(connector = %name, "The previous run is still going; this tick is skipped.");
            if let Err(e) = sync.skipped_tick(name) {
                tracing::error!(connector = %name, error = %e, "Cannot count a skipped tick.");
            }
        }
        Err(e) => tracing::error!(connector = %name, error = %e, "The sync run could not start."),
    }
}
