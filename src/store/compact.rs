//! Compaction: the live data rewritten into a fresh sled database (a *generation*, `DIR/gen-N`) and
//! switched to, so disk follows the live data and nothing a purge removed remains in any file. Reads
//! and checks go on answering from the old generation during the copy; consent writes wait only
//! while the changes made during the copy are replayed, other writes only while the small trees are
//! copied again and `DIR/CURRENT` names the new generation. A crash before that rename leaves the
//! old generation in use (the half-made one is removed on open), a crash after it the new one (the
//! old one is removed on open).

use super::{Gen, Names, PagedMap, Result, SledStore, StoreError, StoreOptions, STORE_FORMAT};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Files sled keeps in its directory (what a store made before generations has in `DIR` itself).
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];

pub(super) fn io(path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Corrupt(format!("{}: {e}", path.display()))
}

/// The store's lock, held while it is open: a second process is told the store is in use.
pub(super) fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("store.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, e))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::InUse(dir.to_path_buf())),
        Err(std::fs::TryLockError::Error(e)) => Err(io(&path, e)),
    }
}

/// The generation `DIR/CURRENT` names, or `DIR` itself for a store made before generations.
pub(super) fn current_dir(dir: &Path) -> Result<PathBuf> {
    match std::fs::read_to_string(dir.join("CURRENT")) {
        Ok(name) if is_generation(name.trim()) => Ok(dir.join(name.trim())),
        Ok(name) => Err(StoreError::Corrupt(format!("CURRENT names {name:?}, not a generation"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(dir.to_path_buf()),
        Err(e) => Err(io(&dir.join("CURRENT"), e)),
    }
}

fn is_generation(name: &str) -> bool {
    name.strip_prefix("gen-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn generation_number(dir: &Path, gen_dir: &Path) -> u64 {
    if gen_dir == dir {
        return 0;
    }
    gen_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("gen-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Removes every generation but `current`: one a compaction was making when it was cut off, or the
/// one it replaced.
pub(super) fn clear_others(dir: &Path, current: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| io(dir, e))?;
    for e in entries.filter_map(|e| e.ok()) {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if is_generation(&name) && path != current {
            tracing::info!(generation = %name, "Removing a store generation no longer in use.");
            std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
        }
    }
    if current != dir {
        remove_sled_files(dir)?;
    }
    Ok(())
}

/// Removes sled's own files from `dir` (not the generations below it).
fn remove_sled_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))?.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if SLED_FILES.contains(&name.as_str()) || name.starts_with("snap.") {
            if path.is_dir() {
                std::fs::remove_dir_all(&path).map_err(|e| io(&path, e))?;
            } else {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
    }
    Ok(())
}

/// Bytes of every file below `dir`.
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Gen {
    pub(super) fn open(dir: &Path, opts: &StoreOptions) -> Result<Gen> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => StoreError::InUse(dir.to_path_buf()),
                e => StoreError::Sled(e),
            })?;
        let meta = db.open_tree("meta")?;
        match meta.get("format")?.as_deref() {
            // New, or format 1 (no tombstones yet) or 2 (no places or call ids in the journal), which
            // this version reads as they are.
            None | Some([1]) | Some([2]) => {
                meta.insert("format", &[STORE_FORMAT])?;
            }
            Some([STORE_FORMAT]) => {}
            Some(v) => {
                return Err(StoreError::Format {
                    dir: dir.to_path_buf(),
                    found: v.first().copied().unwrap_or(0),
                })
            }
        }
        Ok(Gen {
            by_number: PagedMap::new(db.open_tree("by_number")?, db.open_tree("by_number.delta")?, opts.page_bytes),
            by_created: PagedMap::new(db.open_tree("by_created")?, db.open_tree("by_created.delta")?, opts.page_bytes),
            audit: PagedMap::new(
                db.open_tree("audit_by_number")?,
                db.open_tree("audit_by_number.delta")?,
                opts.page_bytes,
            ),
            names: Names::open(db.open_tree("names")?)?,
            searches: db.open_tree("searches")?,
            events: db.open_tree("events")?,
            sync: db.open_tree("sync")?,
            journal: db.open_tree("journal")?,
            meta,
            db,
        })
    }

    pub(super) fn applied(&self) -> Result<u64> {
        Ok(self
            .meta
            .get("applied")?
            .and_then(|v| v.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0))
    }

    /// The consent maps (pages and deltas) and the journal.
    fn big_trees(&self) -> [&sled::Tree; 7] {
        [
            self.by_number.tree(),
            self.by_number.delta_tree(),
            self.by_created.tree(),
            self.by_created.delta_tree(),
            self.audit.tree(),
            self.audit.delta_tree(),
            &self.journal,
        ]
    }

    /// The small trees, copied again whole while writes wait.
    fn small_trees(&self) -> [&sled::Tree; 5] {
        [&self.names.tree, &self.searches, &self.events, &self.sync, &self.meta]
    }

    /// Bytes of every key and value held (what a fresh copy of the store would hold).
    pub(super) fn live_bytes(&self) -> Result<u64> {
        let mut n = 0u64;
        for t in self.big_trees().into_iter().chain(self.small_trees()) {
            for kv in t.iter() {
                let (k, v) = kv?;
                n += (k.len() + v.len()) as u64;
            }
        }
        Ok(n)
    }
}

/// Copies every entry of `from` into `to`, in batches.
fn copy_tree(from: &sled::Tree, to: &sled::Tree, after: Option<&[u8]>) -> Result<u64> {
    let mut batch = sled::Batch::default();
    let (mut in_batch, mut copied) = (0usize, 0u64);
    let iter = match after {
        Some(k) => from.range((std::ops::Bound::Excluded(k.to_vec()), std::ops::Bound::Unbounded)),
        None => from.iter(),
    };
    for kv in iter {
        let (k, v) = kv?;
        in_batch += k.len() + v.len();
        batch.insert(k, v);
        copied += 1;
        if in_batch >= 4 << 20 {
            to.apply_batch(std::mem::take(&mut batch))?;
            in_batch = 0;
        }
    }
    to.apply_batch(batch)?;
    Ok(copied)
}

/// The purges in `events` not yet physically done (their event numbers).
fn purges_not_physical(events: &sled::Tree) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for kv in events.iter() {
        let (_, v) = kv?;
        let Some((_, json)) = v.split_first() else { continue };
        let Ok(e) = serde_json::from_slice::<super::dpo::Event>(json) else {
            continue;
        };
        if e.kind == "purge" && e.physically_done_at.is_none() {
            out.push(e.seq);
        }
    }
    Ok(out)
}

/// What a compaction did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Compacted {
    pub generation: String,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub live_bytes: u64,
    /// Changes made during the copy, replayed into the new generation before the switch.
    pub replayed: u64,
    pub seconds: f64,
    /// Milliseconds consent writes waited (replay and switch).
    pub writes_waited_ms: u64,
    /// Purges physically complete with this compaction.
    pub purges_done: u64,
}

impl SledStore {
    /// Rewrites the live data into a fresh generation and switches to it (see the module doc).
    pub fn compact(&self) -> Result<Compacted> {
        let started = std::time::Instant::now();
        let bytes_before = disk_bytes(&self.dir);
        for _ in 0..3 {
            if let Some(done) = self.try_compact(started, bytes_before)? {
                return Ok(done);
            }
            tracing::info!("A purge came during the compaction's copy; copying again.");
        }
        Err(StoreError::Corrupt(
            "purges kept coming during three compaction attempts; try again later".into(),
        ))
    }

    /// One attempt; `None` when a purge removed data during the copy (the copy may hold it).
    fn try_compact(&self, started: std::time::Instant, bytes_before: u64) -> Result<Option<Compacted>> {
        let old: Arc<Gen> = self.g().clone();
        let old_dir = current_dir(&self.dir)?;
        let number = generation_number(&self.dir, &old_dir) + 1;
        let name = format!("gen-{number}");
        let new_dir = self.dir.join(&name);
        if new_dir.exists() {
            std::fs::remove_dir_all(&new_dir).map_err(|e| io(&new_dir, e))?;
        }
        let mut new = Gen::open(&new_dir, &self.opts)?;
        let purges_before = self.purges_done();
        // 1. The consent maps and the journal, while writes go on.
        let copied_up_to = old.applied()?;
        for (from, to) in [&old.by_number, &old.by_created, &old.audit]
            .into_iter()
            .zip([&new.by_number, &new.by_created, &new.audit])
        {
            from.copy_into(to)?;
        }
        copy_tree(&old.journal, &new.journal, None)?;
        // 2. Consent writes wait: the changes made during the copy are replayed.
        let writer = self.writer.lock().expect("writer lock");
        let waited = std::time::Instant::now();
        if self.purges_done() != purges_before {
            drop(writer);
            drop(new);
            std::fs::remove_dir_all(&new_dir).map_err(|e| io(&new_dir, e))?;
            return Ok(None);
        }
        let last_key = new.journal.last()?.map(|(k, _)| k.to_vec());
        copy_tree(&old.journal, &new.journal, last_key.as_deref())?;
        let replayed = match new.apply_to_maps(copied_up_to)? {
            Some(last) => last - copied_up_to,
            None => 0,
        };
        // 3. Every write waits: the small trees again, whole, and the switch.
        let mut slot = self.gen.write();
        for (from, to) in old.small_trees().into_iter().zip(new.small_trees()) {
            to.clear()?;
            copy_tree(from, to, None)?;
        }
        new.names = Names::open(new.names.tree.clone())?;
        // Every purge so far is in the past of the copy: physically done once the old files are gone.
        let purges = purges_not_physical(&new.events)?;
        new.db.flush()?;
        let tmp = self.dir.join("CURRENT.tmp");
        std::fs::write(&tmp, &name).map_err(|e| io(&tmp, e))?;
        std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io(&tmp, e))?;
        std::fs::rename(&tmp, self.dir.join("CURRENT")).map_err(|e| io(&self.dir, e))?;
        std::fs::File::open(&self.dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| io(&self.dir, e))?;
        let new = Arc::new(new);
        *slot = new.clone();
        drop(slot);
        let writes_waited_ms = waited.elapsed().as_millis() as u64;
        drop(writer);
        let live_bytes = new.live_bytes()?;
        drop(new);
        // 4. The old generation's files go (readers still holding it read on from the open files).
        drop(old);
        clear_others(&self.dir, &new_dir)?;
        let physically_done = self.mark_physically_done(&purges)?;
        let done = Compacted {
            generation: name,
            bytes_before,
            bytes_after: disk_bytes(&self.dir),
            live_bytes,
            replayed,
            seconds: started.elapsed().as_secs_f64(),
            writes_waited_ms,
            purges_done: physically_done,
        };
        tracing::info!(
            generation = %done.generation,
            bytes_before = done.bytes_before,
            bytes_after = done.bytes_after,
            replayed = done.replayed,
            writes_waited_ms = done.writes_waited_ms,
            "The store was compacted."
        );
        Ok(Some(done))
    }

    /// Marks purges physically done now (the files of the generations before are gone).
    fn mark_physically_done(&self, seqs: &[u64]) -> Result<u64> {
        let now = crate::domain::Timestamp::now().to_rfc3339();
        let g = self.g();
        for seq in seqs {
            let Some(v) = g.events.get(seq.to_be_bytes())? else { continue };
            let Some((&format, json)) = v.split_first() else { continue };
            let Ok(mut e) = serde_json::from_slice::<super::dpo::Event>(json) else {
                continue;
            };
            e.physically_done_at = Some(now.clone());
            let mut out = vec![format];
            serde_json::to_writer(&mut out, &e).expect("serialisable");
            g.events.insert(seq.to_be_bytes(), out)?;
        }
        g.events.flush()?;
        Ok(seqs.len() as u64)
    }

    /// Bytes of every key and value the store holds.
    pub fn live_bytes(&self) -> Result<u64> {
        let g = self.g().clone();
        g.live_bytes()
    }

    /// Bytes of the store's files on disk.
    pub fn disk_bytes(&self) -> u64 {
        disk_bytes(&self.dir)
    }
}
