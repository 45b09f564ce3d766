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

/// Changes the remote refused (an answer of `refused_statuses`), kept with its answer until they are
/// re-sent and taken, or dismissed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefusedBatch {
    pub id: u64,
    /// When it was (last) refused.
    pub at: String,
    /// The changes (sequence numbers of the journal) it holds.
    pub first_seq: u64,
    pub last_seq: u64,
    /// How many changes were sent.
    #[serde(default)]
    pub records: u64,
    pub status: u16,
    pub response: String,
    /// Re-sends by hand so far.
    #[serde(default)]
    pub resends: u32,
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
                let http = HttpConnector::new(opts)
                    .map_err(|e| e.to_string())?
                    .with_records_path(c.mapping.format().records.as_deref());
                let watermark = state.watermark.as_deref().and_then(|s| Timestamp::parse_rfc3339(s).ok());
                // From a little before the watermark (records read again are unchanged), or from
                // `start_from` the first time.
                let since = match watermark {
                    Some(w) => Some(Timestamp::from_millis(
                        w.millis().saturating_sub(opts.since_overlap_secs.saturating_mul(1000) as i64),
                    )),
                    None => opts.start_from.as_deref().and_then(|s| Timestamp::parse_rfc3339(s).ok()),
                };
                let since = since.map(|t| opts.since_format.write(t));
                let mut newest = watermark;
                // All pages go through one import session, so they share chunks: pulling a page of
                // 10,000 costs what importing 10,000 rows of a big file does.
                let rejects = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
                let (import_opts, ctx) = self.pull_setup(c, skip, rejects.path());
                let phones = self.config.phone_parser();
                let mut session = Importer::new(&self.store, &c.mapping, &ctx, &phones, &import_opts);
                let result = http.pull(since.as_deref(), &mut |page: Page| {
                    if self.stopping.load(Ordering::SeqCst) {
                        return Err(STOPPED.into());
                    }
                    let before = session.report().read;
                    session
                        .add(&mut Input::once(&page.url, page.body).without_places())
                        .map_err(|e| e.to_string())?;
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
                // The files not yet taken stay for the next run.
                return Err(STOPPED.into());
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
            max_field_bytes: self.config.import.max_field_bytes,
        };
        let ctx = ChangeContext {
            actor: format!("sync:{}", c.cfg.name),
            source: Source::Sync(c.cfg.name.as_str().into()),
            now: Timestamp::now(),
            prefer: c.prefer(),
            call_id: None,
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
            self.keep_dead_letter(&c.cfg.name, origin, report, rejects)
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
        let keys = self.key_base(c)?;
        // Erasures first: a purged number is deleted remotely, then only a keyed hash remains.
        self.push_erasures(c, http.as_ref(), &keys, run)?;
        let Some(h) = http else {
            return self.push_file(c, run, state);
        };
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(STOPPED.into());
            }
            // After a crash, the batch that was in flight goes again, exactly: same changes, same keys.
            let changes = match state.in_flight {
                Some((_, last)) if last > state.pushed_seq => {
                    let most = (last - state.pushed_seq).min(usize::MAX as u64) as usize;
                    let mut c = self
                        .store
                        .changes_since(state.pushed_seq, most.max(c.cfg.batch_size))
                        .map_err(|e| e.to_string())?;
                    c.retain(|e| e.seq <= last);
                    c
                }
                _ => self
                    .store
                    .changes_since(state.pushed_seq, c.cfg.batch_size)
                    .map_err(|e| e.to_string())?,
            };
            let (Some(first), Some(last)) = (changes.first().map(|e| e.seq), changes.last().map(|e| e.seq)) else {
                break;
            };
            let records: Vec<(u64, super::Outgoing)> = changes
                .iter()
                .filter(|e| !c.own.contains(&e.source))
                .map(|e| (e.seq, outgoing(e)))
                .collect();
            if !records.is_empty() {
                if state.in_flight != Some((first, last)) {
                    state.in_flight = Some((first, last));
                    self.save_state(name, state)?;
                }
                let mut refused = 0;
                for refusal in self.send(c, &h, &records, &keys)? {
                    refused += refusal.records;
                    self.keep_refused(name, &refusal)?;
                    if c.cfg.on_refused == OnRefused::Stop {
                        // The position stays before them: the next run sends them again.
                        run.push_refused += refused;
                        return Err(format!(
                            "the remote refused changes {} to {} with status {}; stopped (on_refused = \"stop\")",
                            refusal.first, refusal.last, refusal.status
                        ));
                    }
                }
                run.push_refused += refused;
                run.pushed += records.len() as u64 - refused;
            }
            state.pushed_seq = last;
            state.in_flight = None;
            self.save_state(name, state)?;
            self.publish(name, run);
        }
        Ok(())
    }

    /// Keeps refused changes for a re-send by hand; refused again (`on_refused = "stop"` sends them
    /// every run), the entry is brought up to date rather than kept twice.
    pub(super) fn keep_refused(&self, name: &str, r: &Refusal) -> Result<(), String> {
        let existing = self
            .store
            .sync_list::<RefusedBatch>(name, "refused")
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(_, b)| b)
            .find(|b| b.first_seq == r.first && b.last_seq == r.last);
        let id = match &existing {
            Some(b) => b.id,
            None => self.store.sync_next_id(name, "refused").map_err(|e| e.to_string())?,
        };
        let kept = RefusedBatch {
            id,
            at: Timestamp::now().to_rfc3339(),
            first_seq: r.first,
            last_seq: r.last,
            records: r.records,
            status: r.status,
            response: r.body.clone(),
            resends: existing.map_or(0, |b| b.resends),
        };
        tracing::warn!(connector = %name, status = r.status, records = r.records, "The remote refused changes; they are kept for a re-send.");
        self.store
            .sync_put(name, "refused", &id.to_be_bytes(), &kept)
            .map_err(|e| e.to_string())
    }

    /// The start of every idempotency key of this connector: the store's id (made once per store,
    /// so a store made again does not reuse keys) and the connector's name.
    pub(super) fn key_base(&self, c: &super::Connector) -> Result<String, String> {
        Ok(format!("{}-{}", self.store.store_id().map_err(|e| e.to_string())?, c.cfg.name))
    }

    /// Sends each erasure still owed; one the remote refuses stays owed (sent again next run), one that
    /// finds the remote misconfigured or down fails the run.
    fn push_erasures(&self, c: &super::Connector, http: Option<&HttpConnector>, keys: &str, run: &mut RunReport) -> Result<(), String> {
        let name = &c.cfg.name;
        let by_request = c.cfg.http.as_ref().is_some_and(|h| h.deletes == DeleteMode::Request);
        for (hash, mut e) in self.store.sync_list::<Erasure>(name, "erase").map_err(|e| e.to_string())? {
            if self.stopping.load(Ordering::SeqCst) {
                return Err(STOPPED.into());
            }
            let id = String::from_utf8_lossy(&hash).into_owned();
            // The same key for every attempt at one erasure: a remote that took it once takes it once.
            let key = format!("{keys}-erase-{id}");
            let number = self.erased_number(&id, &e).map_err(|e| e.to_string())?;
            let records: Vec<(u64, super::Outgoing)> = number
                .iter()
                .flat_map(|n| e.usages.iter().map(move |u| (0, super::Outgoing::Delete(*n, *u))))
                .collect();
            let outcome = match http {
                // The seal's key is gone (it should not be while this is owed): nothing can be sent.
                _ if number.is_none() => Ok(Delivery::Skipped),
                _ if !by_request && !c.push_mapping.writes_deletes() => Ok(Delivery::Skipped),
                Some(h) if by_request => self.deliver_deletes(h, &records, &key),
                _ => self.deliver(c, http, &records, &key, 0),
            };
            e.attempts += 1;
            e.last = super::LastTry {
                last_try: Some(Timestamp::now().to_rfc3339()),
                ..Default::default()
            };
            match &outcome {
                Ok(Delivery::Delivered) => {
                    let done = super::ErasureStatus {
                        status: "delivered".into(),
                        at: Timestamp::now().to_rfc3339(),
                        attempts: e.attempts,
                        by: None,
                        note: None,
                    };
                    self.store.sync_put(name, "erased", &hash, &done).map_err(|e| e.to_string())?;
                    self.store.sync_remove(name, "erase", &hash).map_err(|e| e.to_string())?;
                    self.release_seal(&id).map_err(|e| e.to_string())?;
                    run.erasures_delivered += 1;
                    run.pushed += 1;
                    continue;
                }
                Ok(Delivery::Skipped) if number.is_none() => {
                    e.last.last_answer =
                        Some("not sent: the number's seal cannot be opened; delete it at the remote and mark this erasure handled".into())
                }
                Ok(Delivery::Skipped) => {
                    e.last.last_answer = Some(format!(
                        "not sent: the mapping {} cannot write a deletion; delete the number at the remote and mark this erasure handled",
                        c.push_mapping.name
                    ))
                }
                Ok(Delivery::Refused { status, body }) => {
                    e.last.last_status = Some(*status);
                    e.last.last_answer = Some(body.clone());
                }
                Err(reason) => e.last.last_answer = Some(reason.clone()),
            }
            run.erasures_pending += 1;
            self.store.sync_put(name, "erase", &hash, &e).map_err(|e| e.to_string())?;
            outcome?;
        }
        Ok(())
    }

    /// Files: one file per run with every change, written as the batches come (memory stays flat),
    /// renamed into place when complete.
    fn push_file(&self, c: &super::Connector, run: &mut RunReport, state: &mut ConnectorState) -> Result<(), String> {
        let name = &c.cfg.name;
        let mut file: Option<OutFile> = None;
        let mut last_seen = state.pushed_seq;
        let mut stopped = false;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                stopped = true;
                break;
            }
            let changes = self.store.changes_since(last_seen, c.cfg.batch_size).map_err(|e| e.to_string())?;
            let Some(last) = changes.last().map(|e| e.seq) else { break };
            let records: Vec<super::Outgoing> = changes.iter().filter(|e| !c.own.contains(&e.source)).map(outgoing).collect();
            if !records.is_empty() {
                if file.is_none() {
                    file = Some(OutFile::create(c)?);
                }
                file.as_mut().expect("opened above").write(c, &records)?;
                run.pushed += records.len() as u64;
            }
            last_seen = last;
            self.publish(name, run);
        }
        if let Some(f) = file {
            f.finish(c, last_seen)?;
        }
        state.pushed_seq = last_seen;
        self.save_state(name, state)?;
        if stopped {
            return Err(STOPPED.into());
        }
        Ok(())
    }

    /// Sends records as one batch; a 413 splits it into halves, sent the same way, before anything is
    /// called refused. Returns the parts the remote refused.
    pub(super) fn send(
        &self,
        c: &super::Connector,
        h: &HttpConnector,
        records: &[(u64, super::Outgoing)],
        keys: &str,
    ) -> Result<Vec<Refusal>, String> {
        let (first, last) = (records[0].0, records[records.len() - 1].0);
        let key = format!("{keys}-{first}-{last}");
        let by_request = c.cfg.http.as_ref().is_some_and(|o| o.deletes == DeleteMode::Request);
        let outcome = if by_request {
            let (deletes, sets): (Vec<_>, Vec<_>) = records.iter().cloned().partition(|(_, r)| matches!(r, super::Outgoing::Delete(..)));
            match self.deliver_deletes(h, &deletes, &key)? {
                Delivery::Delivered if !sets.is_empty() => self.deliver(c, Some(h), &sets, &key, 0)?,
                other => other,
            }
        } else {
            self.deliver(c, Some(h), records, &key, 0)?
        };
        match outcome {
            Delivery::Delivered | Delivery::Skipped => Ok(Vec::new()),
            Delivery::Refused { status: 413, .. } if records.len() > 1 => {
                tracing::info!(connector = %c.cfg.name, records = records.len(), "The remote finds the batch too large (413); sending it in halves.");
                let (a, b) = records.split_at(records.len() / 2);
                let mut refused = self.send(c, h, a, keys)?;
                refused.extend(self.send(c, h, b, keys)?);
                Ok(refused)
            }
            Delivery::Refused { status, body } => Ok(vec![Refusal {
                first,
                last,
                records: records.len() as u64,
                status,
                body,
            }]),
        }
    }

    /// Sends records as one body (HTTP) or one file.
    fn deliver(
        &self,
        c: &super::Connector,
        http: Option<&HttpConnector>,
        records: &[(u64, super::Outgoing)],
        key: &str,
        seq: u64,
    ) -> Result<Delivery, String> {
        let records: Vec<super::Outgoing> = records.iter().map(|(_, r)| r.clone()).collect();
        let mapping = &c.push_mapping;
        let body = super::encode(mapping, &records)?;
        match http {
            Some(h) => h.push(body, mapping.format().kind.media_type(), key).map_err(|e| e.to_string()),
            None => {
                let opts = c.cfg.file.as_ref().expect("checked");
                let dir = opts.out_dir.as_ref().expect("checked: push needs out_dir");
                write_file(dir, &file_name(&opts.file_name, seq, mapping.format().kind.extension()), &body)?;
                Ok(Delivery::Delivered)
            }
        }
    }

    /// `deletes = "request"`: one DELETE per deleted consent, each with its own key; the first one
    /// refused stops there.
    fn deliver_deletes(&self, h: &HttpConnector, deletes: &[(u64, super::Outgoing)], key: &str) -> Result<Delivery, String> {
        for (i, (_, d)) in deletes.iter().enumerate() {
            if let super::Outgoing::Delete(n, u) = d {
                let id = crate::domain::ConsentId { number: *n, usage: *u }.to_string();
                match h
                    .delete(&n.to_string(), u.as_str(), &id, &format!("{key}-d{i}"))
                    .map_err(|e| e.to_string())?
                {
                    Delivery::Delivered => {}
                    refused => return Ok(refused),
                }
            }
        }
        Ok(Delivery::Delivered)
    }
}

/// Part of a batch the remote refused.
pub(super) struct Refusal {
    pub first: u64,
    pub last: u64,
    pub records: u64,
    pub status: u16,
    pub body: String,
}

/// What a run that sees the daemon stopping returns; the run is then `stopped`.
pub(super) const STOPPED: &str = "the daemon is stopping";

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

pub(super) fn outgoing(e: &AuditEntry) -> super::Outgoing {
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
