//! The store's upkeep while the daemon runs: a compaction soon after purges, so a purge is
//! physically complete within `store.erase_within_hours`, and whenever the store's files outgrow its
//! live data by `store.compact_ratio`. One compaction at a time; figures for `/metrics`.

use crate::config::StoreConfig;
use crate::store::compact::Compacted;
use crate::store::Store;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Bytes on disk of a fresh copy per live byte before any compaction measured it (1M consents: 316 MB
/// on disk for 153 MB of keys and values).
const FRESH_PER_LIVE: f64 = 2.1;

/// The upkeep's state, shared with the API (a purge says so; `/metrics` reads the figures).
pub struct Upkeep {
    store: Arc<Store>,
    settings: StoreConfig,
    /// Wakes the loop: a purge happened.
    wake: tokio::sync::Notify,
    /// One compaction at a time (the loop's, or one asked for over the API or at start).
    running: Mutex<()>,
    pub compactions: AtomicU64,
    pub live_bytes: AtomicU64,
    /// Bytes on disk of a fresh copy per live byte (sled's own overhead, about 2), as the last
    /// compaction found it; f64 bits.
    fresh_per_live: AtomicU64,
    pub last: Mutex<Option<Compacted>>,
}

impl Upkeep {
    pub fn new(store: Arc<Store>, settings: StoreConfig) -> Arc<Self> {
        Arc::new(Self {
            store,
            settings,
            wake: tokio::sync::Notify::new(),
            running: Mutex::new(()),
            compactions: AtomicU64::new(0),
            live_bytes: AtomicU64::new(0),
            fresh_per_live: AtomicU64::new(FRESH_PER_LIVE.to_bits()),
            last: Mutex::new(None),
        })
    }

    /// A purge happened: a compaction is owed.
    pub fn purged(&self) {
        self.wake.notify_one();
    }

    /// Compacts now (blocking); waits for a compaction going on to end first.
    pub fn compact(&self) -> Result<Compacted, crate::store::StoreError> {
        let _one = self.running.lock().expect("compaction lock");
        let done = self.store.compact()?;
        self.compactions.fetch_add(1, Ordering::Relaxed);
        self.live_bytes.store(done.live_bytes, Ordering::Relaxed);
        if done.live_bytes > 0 {
            let ratio = done.bytes_after as f64 / done.live_bytes as f64;
            self.fresh_per_live.store(ratio.clamp(1.0, 10.0).to_bits(), Ordering::Relaxed);
        }
        *self.last.lock().expect("last compaction") = Some(done.clone());
        Ok(done)
    }

    /// Runs until `stop` ends: compacts after purges (a short while after the last, within the bound
    /// after the first) and when the files outgrow the live data.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        // PostgreSQL looks after its own space (autovacuum); only the sled store is compacted.
        if self.store.sled().is_none() {
            return stop.await;
        }
        tokio::pin!(stop);
        let check_every = Duration::from_secs(self.settings.compact_check_minutes * 60);
        let mut next_check = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let owed_since = self.blocking(|s| s.store.oldest_pending_purge()).await.ok().flatten();
            let wait_purge = owed_since.map(|since| {
                let age = Duration::from_millis((crate::domain::Timestamp::now().millis() - since.millis()).max(0) as u64);
                let bound = Duration::from_secs(self.settings.erase_within_hours * 3600).saturating_sub(age);
                Duration::from_secs(self.settings.compact_after_purge_secs).min(bound)
            });
            let until_check = next_check.saturating_duration_since(tokio::time::Instant::now());
            let wait = wait_purge.map_or(until_check, |w| w.min(until_check));
            tokio::select! {
                _ = &mut stop => return,
                _ = self.wake.notified() => continue,
                _ = tokio::time::sleep(wait) => {}
            }
            let due_purge = wait_purge.is_some_and(|w| w <= wait);
            let mut compact = due_purge;
            if tokio::time::Instant::now() >= next_check {
                next_check = tokio::time::Instant::now() + check_every;
                let ratio = self.settings.compact_ratio;
                let grown = self
                    .blocking(move |s| {
                        let live = s.store.live_bytes()?;
                        s.live_bytes.store(live, Ordering::Relaxed);
                        let disk = s.store.disk_bytes();
                        // Against what a fresh copy would take; small stores are left alone.
                        let fresh = live as f64 * f64::from_bits(s.fresh_per_live.load(Ordering::Relaxed));
                        Ok(disk > 64 << 20 && disk as f64 > fresh * ratio)
                    })
                    .await;
                compact |= grown.unwrap_or(false);
            }
            if compact {
                match self.blocking(|s| s.compact()).await {
                    Ok(done) => tracing::info!(
                        reason = if due_purge { "purge" } else { "size" },
                        bytes_after = done.bytes_after,
                        purges_done = done.purges_done,
                        "The store was compacted by the daemon."
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "The store could not be compacted; trying again in a minute.");
                        tokio::select! {
                            _ = &mut stop => return,
                            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                        }
                    }
                }
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Upkeep) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, crate::store::StoreError> {
        let s = self.clone();
        tokio::task::spawn_blocking(move || f(&s))
            .await
            .unwrap_or_else(|e| Err(crate::store::StoreError::Corrupt(format!("the upkeep task failed: {e}"))))
    }
}
