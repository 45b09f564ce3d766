//! One run of one connector: pull (files or HTTP pages, each imported through the mapping as the
//! command line imports), then push (erasures first, then every change since the last pushed one, in
//! batches, never echoing a connector's own changes back to it). What a run did, and where pull and
//! push stand, is kept in the store after every page, file and batch, so a crash loses nothing and a
//! re-run applies nothing twice (at most one batch is sent again, with the same idempotency key).

use super::{ConnectorState, Erasure, RunReport, Sync};
use crate::connectors::http::{DeleteMode, Delivery, HttpConnector, Page};
use crate::connectors::{OnRefused, Transport};
use crate::domain::{Source, Timestamp};
use crate::import::{ImportOptions, ImportReport, Importer, Input, Skip};
use crate::store::{AuditEntry, ChangeContext};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Refused records of a pull, kept for inspection and replay after the mapping is fixed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    pub at: String,
    /// The file or page URL they came from.
    pub origin: String,
    pub rejected: u64,
    /// Where and why (the first ones).
    pub rejects: Vec<crate::import::Reject>,
    /// The refused records in the mapping's format, hex.
    pub records: String,
}

/// A push batch the remote refused (4xx), kept with its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedBatch {
    pub id: u64,
    pub at: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub status: u16,
    pub response: String,
}

/// A file already imported: its name, size and content hash.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct SeenFile {
    size: u64,
    sha256: String,
}

impl Sync {
    pub(super) fn pull(&self, c: &super::Connector, run: &mut RunReport, state: &mut ConnectorState) -> Result<(), String> {
        let skip = self.purged_filter().map_err(|e| e.to_string())?;
        match c.cfg.transport {
            Transport::File => self.pull_files(c, run, skip),
            Transport::Http => {
                let opts = c.cfg.http.as_ref().expect("checked: http connectors have [http]");
                let http = HttpConnector::new(opts).map_err(|e| e.to_string())?;
                let since = state.watermark.clone().or_else(|| opts.start_from.clone());
                let mut newest = since.as_deref().and_then(|s| Timestamp::parse_rfc3339(s).ok());
                // All pages go through one import session, so they share chunks: pulling a page of
                // 10,000 costs what importing 10,000 rows of a big file does.
                let rejects = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
                let (import_opts, ctx) = self.pull_setup(c, skip, rejects.path());
                let phones = self.config.phone_parser();
                let mut session = Importer::new(&self.store, &c.mapping, &ctx, &phones, &import_opts);
                let result = http.pull(since.as_deref(), &mut |page: Page| {
                    if self.stopping.load(Ordering::SeqCst) {
                        return Err("the daemon is stopping".into());
                    }
                    let before = session.report().read;
                    session.add(&mut Input::once(&page.url, page.body)).map_err(|e| e.to_string())?;
                    Ok(session.report().read - before)
                });
                // What was read is applied even when a later page failed: the watermark stays, so
                // the next run reads it again and finds it unchanged.
                let report = session.finish().map_err(|e| e.to_string())?;
                self.account(c, &opts.url, &report, rejects.path(), run)?;
                result.map_err(|e| e.to_string())?;
                // A page not read to its end: the watermark stays, so the next run reads it again.
                if let Some(u) = report.unread.first() {
                    return Err(format!("a page was not read to its end: {u}"));
                }
                if report.newest > newest {
                    newest = report.newest;
                }
                // The watermark moves only after the whole pull succeeded; records at exactly the
                // watermark come again next time and are unchanged, so none is skipped.
                state.watermark = newest.map(|t| t.to_rfc3339());
                run.watermark = state.watermark.clone();
                Ok(())
            }
        }
    }

    fn pull_files(&self, c: &super::Connector, run: &mut RunReport, skip: Option<Skip>) -> Result<(), String> {
        let opts = c.cfg.file.as_ref().expect("checked: file connectors have [file]");
        let dir = opts.dir.as_ref().expect("checked: pull needs dir");
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let pattern = glob::Pattern::new(&opts.glob).map_err(|e| e.to_string())?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.') && !n.ends_with(".partial") && pattern.matches(n))
            })
            .collect();
        files.sort();
        // Files not read to their end: kept whole in failed/, and the run says so.
        let mut incomplete = Vec::new();
        for path in files {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            let seen = SeenFile {
                size: std::fs::metadata(&path).map_err(|e| e.to_string())?.len(),
                sha256: file_hash(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?,
            };
            let known: Option<SeenFile> = self
                .store
                .sync_get(&c.cfg.name, "file", name.as_bytes())
                .map_err(|e| e.to_string())?;
            let failed = if known.as_ref() == Some(&seen) {
                // Imported before a crash, not yet moved.
                false
            } else {
                let file = std::fs::File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let report = self.import_body(
                    c,
                    &path.display().to_string(),
                    Box::new(std::io::BufReader::new(file)),
                    run,
                    skip.clone(),
                )?;
                self.store
                    .sync_put(&c.cfg.name, "file", name.as_bytes(), &seen)
                    .map_err(|e| e.to_string())?;
                let failed = report.rejected > 0 || !report.complete;
                if failed {
                    let report_path = dir.join("failed").join(format!("{name}.report.json"));
                    std::fs::create_dir_all(dir.join("failed")).map_err(|e| e.to_string())?;
                    let text = serde_json::to_vec_pretty(&report).expect("serialisable");
                    std::fs::write(&report_path, text).map_err(|e| format!("cannot write {}: {e}", report_path.display()))?;
                }
                if !report.complete {
                    incomplete.push(name.clone());
                }
                failed
            };
            let to = dir.join(if failed { "failed" } else { "processed" });
            std::fs::create_dir_all(&to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
            std::fs::rename(&path, to.join(&name)).map_err(|e| format!("cannot move {}: {e}", path.display()))?;
        }
        match incomplete.as_slice() {
            [] => Ok(()),
            names => Err(format!(
                "{} file(s) could not be read to their end and are kept whole in failed/ with a report: {}",
                names.len(),
                names.join(", ")
            )),
        }
    }

    /// Imports one file or page through the connector's mapping; refused records become a dead letter.
    fn import_body(
        &self,
        c: &super::Connector,
        origin: &str,
        body: Box<dyn Read + Send>,
        run: &mut RunReport,
        skip: Option<Skip>,
    ) -> Result<ImportReport, String> {
        let rejects = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let (opts, ctx) = self.pull_setup(c, skip, rejects.path());
        let report = crate::import::import(
            &self.store,
            &c.mapping,
            &mut [Input::once(origin, body)],
            &ctx,
            &self.config.phone_parser(),
            &opts,
        )
        .map_err(|e| e.to_string())?;
        self.account(c, origin, &report, rejects.path(), run)?;
        Ok(report)
    }

    /// How a pull imports: into the store as `sync:<name>`, refused records written to `rejects`.
    fn pull_setup(&self, c: &super::Connector, skip: Option<Skip>, rejects: &Path) -> (ImportOptions, ChangeContext) {
        let opts = ImportOptions {
            dry_run: false,
            strict: false,
            rejects: Some(rejects.to_path_buf()),
            chunk_records: self.config.import.chunk_records,
            skip,
            region: c.region(),
        };
        let ctx = ChangeContext {
            actor: format!("sync:{}", c.cfg.name),
            source: Source::Sync(c.cfg.name.as_str().into()),
            now: Timestamp::now(),
            prefer: c.prefer(),
        };
        (opts, ctx)
    }

    /// Adds an import's figures to the run; its refused records become a dead letter.
    fn account(
        &self,
        c: &super::Connector,
        origin: &str,
        report: &ImportReport,
        rejects: &Path,
        run: &mut RunReport,
    ) -> Result<(), String> {
        // A pull keeps what it did not read where it can be read again (the file in failed/, the page
        // at the next run).
        report.remove_unread_beside(rejects);
        run.pulled += report.read;
        run.inserted += report.inserted;
        run.updated += report.updated;
        run.unchanged += report.unchanged;
        run.deleted += report.deleted;
        run.rejected += report.rejected;
        run.skipped += report.skipped;
        self.publish(&c.cfg.name, run);
        if report.rejected > 0 {
            let id = self.store.sync_next_id(&c.cfg.name, "dead").map_err(|e| e.to_string())?;
            let letter = DeadLetter {
                id,
                at: Timestamp::now().to_rfc3339(),
                origin: origin.to_string(),
                rejected: report.rejected,
                rejects: report.rejects.clone(),
                records: hex::encode(std::fs::read(rejects).unwrap_or_default()),
            };
            self.store
                .sync_put(&c.cfg.name, "dead", &id.to_be_bytes(), &letter)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Leaves out records of purged numbers unless they are newer than the purge.
    fn purged_filter(&self) -> Result<Option<Skip>, crate::store::StoreError> {
        let mut purged = std::collections::HashMap::new();
        let mut after = 0;
        loop {
            let events = self.store.events(after, 1000)?;
            let Some(last) = events.last().map(|e| e.seq) else { break };
            for e in events {
                if let (Some(h), Ok(at)) = (e.number_hash, Timestamp::parse_rfc3339(&e.at)) {
                    purged.insert(h, at);
                }
            }
            after = last;
        }
        if purged.is_empty() {
            return Ok(None);
        }
        let hasher = self.store.erasure_hasher()?;
        Ok(Some(Arc::new(move |i: &crate::domain::Incoming| {
            let Some(purged_at) = purged.get(&hasher.hash(i.number)) else {
                return false;
            };
            let at = i.time();
            at.is_none_or(|t| t <= *purged_at)
        })))
    }

    pub(super) fn push(&self, c: &super::Connector, run: &mut RunReport, state: &mut ConnectorState) -> Result<(), String> {
        let name = &c.cfg.name;
        let http = match c.cfg.transport {
            Transport::Http => Some(HttpConnector::new(c.cfg.http.as_ref().expect("checked")).map_err(|e| e.to_string())?),
            Transport::File => None,
        };
        let by_request = c.cfg.http.as_ref().is_some_and(|h| h.deletes == DeleteMode::Request);
        // Erasures first: a purged number is deleted remotely, then only a keyed hash remains.
        for (hash, e) in self.store.sync_list::<Erasure>(name, "erase").map_err(|e| e.to_string())? {
            let key = format!("{name}-erase-{}", String::from_utf8_lossy(&hash));
            let outcome = match &http {
                Some(h) if by_request => {
                    let mut out = Ok(Delivery::Delivered);
                    for u in &e.usages {
                        let id = crate::domain::ConsentId {
                            number: e.number,
                            usage: *u,
                        }
                        .to_string();
                        out = h
                            .delete(&e.number.to_string(), u.as_str(), &id, &format!("{key}-{u}"))
                            .map_err(|e| e.to_string());
                        if !matches!(out, Ok(Delivery::Delivered)) {
                            break;
                        }
                    }
                    out
                }
                // The mapping cannot say "deleted": nothing is sent, and the DPO report says so.
                _ if !c.mapping.writes_deletes() => Ok(Delivery::Skipped),
                _ => {
                    let records: Vec<super::Outgoing> = e.usages.iter().map(|u| super::Outgoing::Delete(e.number, *u)).collect();
                    self.deliver(c, http.as_ref(), &records, &key, 0)
                }
            };
            let status = match &outcome {
                Ok(Delivery::Delivered) => "delivered",
                Ok(Delivery::Refused { .. }) => "refused",
                Ok(Delivery::Skipped) => "skipped",
                Err(_) => "failed",
            };
            let mut erased = e.clone();
            erased.status = status.to_string();
            erased.at = Timestamp::now().to_rfc3339();
            let done = status != "failed";
            self.store
                .sync_put(name, "erased", &hash, &super::ErasureStatus::from(&erased))
                .map_err(|e| e.to_string())?;
            if done {
                self.store.sync_remove(name, "erase", &hash).map_err(|e| e.to_string())?;
                run.pushed += 1;
            }
            outcome?;
        }
        // Files: one file per run with every change, written as the batches come (memory stays flat).
        let mut file: Option<OutFile> = None;
        let (mut file_first, mut file_last) = (None, state.pushed_seq);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                break;
            }
            let changes = self
                .store
                .changes_since(file_last.max(state.pushed_seq), c.cfg.batch_size)
                .map_err(|e| e.to_string())?;
            let (Some(first), Some(last)) = (changes.first().map(|e| e.seq), changes.last().map(|e| e.seq)) else {
                break;
            };
            let own = Source::Sync(name.as_str().into());
            let records: Vec<super::Outgoing> = changes.iter().filter(|e| e.source != own).map(outgoing).collect();
            if http.is_none() {
                // Files: one file per run with every change; written at the end.
                if !records.is_empty() {
                    if file.is_none() {
                        file = Some(OutFile::create(c)?);
                    }
                    file.as_mut().expect("opened above").write(c, &records)?;
                    run.pushed += records.len() as u64;
                }
                file_first.get_or_insert(first);
                file_last = last;
                self.publish(name, run);
                continue;
            }
            let h = http.as_ref().expect("http");
            let key = format!("{name}-{first}-{last}");
            let outcome = if records.is_empty() {
                Ok(Delivery::Delivered)
            } else if by_request {
                self.deliver_by_request(c, h, &records, &key)
            } else {
                self.deliver(c, Some(h), &records, &key, first)
            };
            match outcome? {
                Delivery::Delivered => run.pushed += records.len() as u64,
                Delivery::Skipped => {}
                Delivery::Refused { status, body } => {
                    run.push_refused += records.len() as u64;
                    let id = self.store.sync_next_id(name, "refused").map_err(|e| e.to_string())?;
                    let kept = RefusedBatch {
                        id,
                        at: Timestamp::now().to_rfc3339(),
                        first_seq: first,
                        last_seq: last,
                        status,
                        response: body,
                    };
                    self.store
                        .sync_put(name, "refused", &id.to_be_bytes(), &kept)
                        .map_err(|e| e.to_string())?;
                    if c.cfg.on_refused == OnRefused::Stop {
                        return Err(format!(
                            "the remote refused changes {first} to {last} with status {status}; stopped (on_refused = \"stop\")"
                        ));
                    }
                }
            }
            state.pushed_seq = last;
            self.save_state(name, state)?;
            self.publish(name, run);
        }
        if http.is_none() && file_first.is_some() {
            if let Some(f) = file {
                f.finish(c, file_last)?;
            }
            state.pushed_seq = file_last;
            self.save_state(name, state)?;
        }
        Ok(())
    }

    fn save_state(&self, name: &str, state: &ConnectorState) -> Result<(), String> {
        self.store.sync_put(name, "state", b"", state).map_err(|e| e.to_string())
    }

    /// Sends records as one body (HTTP) or one file.
    fn deliver(
        &self,
        c: &super::Connector,
        http: Option<&HttpConnector>,
        records: &[super::Outgoing],
        key: &str,
        seq: u64,
    ) -> Result<Delivery, String> {
        let body = super::encode(&c.mapping, records)?;
        match http {
            Some(h) => h.push(body, c.mapping.format().kind.media_type(), key).map_err(|e| e.to_string()),
            None => {
                let opts = c.cfg.file.as_ref().expect("checked");
                let dir = opts.out_dir.as_ref().expect("checked: push needs out_dir");
                write_file(dir, &file_name(&opts.file_name, seq, c.mapping.format().kind.extension()), &body)?;
                Ok(Delivery::Delivered)
            }
        }
    }

    /// `deletes = "request"`: deletions as DELETE requests, the rest as one batch.
    fn deliver_by_request(
        &self,
        c: &super::Connector,
        h: &HttpConnector,
        records: &[super::Outgoing],
        key: &str,
    ) -> Result<Delivery, String> {
        let (deletes, sets): (Vec<_>, Vec<_>) = records.iter().partition(|r| matches!(r, super::Outgoing::Delete(..)));
        for d in deletes {
            if let super::Outgoing::Delete(n, u) = d {
                let id = crate::domain::ConsentId { number: *n, usage: *u }.to_string();
                match h
                    .delete(&n.to_string(), u.as_str(), &id, &format!("{key}-{id}"))
                    .map_err(|e| e.to_string())?
                {
                    Delivery::Delivered => {}
                    refused => return Ok(refused),
                }
            }
        }
        if sets.is_empty() {
            return Ok(Delivery::Delivered);
        }
        let sets: Vec<super::Outgoing> = sets.into_iter().cloned().collect();
        self.deliver(c, Some(h), &sets, key, 0)
    }
}

/// A push file being written: a hidden temporary name in the out directory, renamed when complete.
struct OutFile {
    tmp: PathBuf,
    writer: Box<dyn crate::formats::RecordWriter>,
}

impl OutFile {
    fn create(c: &super::Connector) -> Result<Self, String> {
        let dir = c
            .cfg
            .file
            .as_ref()
            .and_then(|f| f.out_dir.as_ref())
            .expect("checked: push needs out_dir");
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let tmp = dir.join(format!(".{}.partial", c.cfg.name));
        let f = std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        let out = Box::new(std::io::BufWriter::with_capacity(1 << 16, f));
        let writer = crate::formats::open_writer(c.mapping.format(), &c.mapping.out_columns(), None, out).map_err(|e| e.to_string())?;
        Ok(Self { tmp, writer })
    }

    fn write(&mut self, c: &super::Connector, records: &[super::Outgoing]) -> Result<(), String> {
        super::write_records(&c.mapping, &mut *self.writer, records)
    }

    fn finish(self, c: &super::Connector, seq: u64) -> Result<(), String> {
        let opts = c.cfg.file.as_ref().expect("checked");
        let dir = opts.out_dir.as_ref().expect("checked");
        self.writer.finish().map_err(|e| e.to_string())?;
        std::fs::File::open(&self.tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| e.to_string())?;
        let name = file_name(&opts.file_name, seq, c.mapping.format().kind.extension());
        std::fs::rename(&self.tmp, dir.join(&name)).map_err(|e| format!("cannot rename {}: {e}", self.tmp.display()))
    }
}

fn outgoing(e: &AuditEntry) -> super::Outgoing {
    match &e.after {
        Some(c) => super::Outgoing::Set(c.clone()),
        None => super::Outgoing::Delete(e.number, e.usage),
    }
}

fn file_hash(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn file_name(pattern: &str, seq: u64, ext: &str) -> String {
    let time = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let name = pattern.replace("{time}", &time).replace("{seq}", &seq.to_string());
    if name.contains('.') {
        name
    } else {
        format!("{name}.{ext}")
    }
}

/// Writes to a hidden temporary name in the same directory, syncs, then renames.
fn write_file(dir: &Path, name: &str, body: &[u8]) -> Result<(), String> {
    use std::io::Write;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tmp = dir.join(format!(".{name}.partial"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(body)
        .and_then(|_| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| format!("cannot rename {}: {e}", tmp.display()))
}
