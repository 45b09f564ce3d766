//! One-off imports: files are read through a mapping as a stream, records become incoming changes,
//! and changes are decided and written a chunk at a time, so memory does not grow with the file.
//! Refused records are reported with where and why, and can be written back out for correction; a
//! record that cannot be read is refused on its own and reading goes on, and where reading cannot go
//! on the report says so and keeps the rest of the input. Nothing is left out without being counted.

use crate::domain::{Incoming, PhoneParser, Region};
use crate::formats::{self, FormatError, FormatKind, Location, RecordReader, RecordWriter, Unread};
use crate::mapping::{Mapping, RecordError};
use crate::store::{Batch, ChangeContext, Outcome, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Refused records kept in a report; the rest are counted (and all go to the rejects file).
const REPORT_REJECTS: usize = 1000;

/// Decides which incoming changes an import leaves out (counted as `skipped`).
pub type Skip = std::sync::Arc<dyn Fn(&Incoming) -> bool + Send + Sync>;

#[derive(Clone)]
pub struct ImportOptions {
    /// Decide everything and report, write nothing.
    pub dry_run: bool,
    /// Apply nothing if any record is refused.
    pub strict: bool,
    /// Where to write refused records, in the input's format.
    pub rejects: Option<PathBuf>,
    /// Consents decided and written together.
    pub chunk_records: usize,
    /// Changes to leave out (sync: numbers a DPO purged after the remote record was written).
    pub skip: Option<Skip>,
    /// The region national numbers are read in, over the mapping's `[format] region` and the
    /// config's default (`import --region`, a connector's `region`). A record's own region field still
    /// goes first.
    pub region: Option<Region>,
    /// Largest value of one field, in bytes (`import.max_field_bytes`): a record with a larger one is
    /// refused.
    pub max_field_bytes: usize,
}

/// What an import did. Counts of consents, except `read`, `rejected` and `skipped` (records).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImportReport {
    pub mapping: String,
    pub files: Vec<String>,
    pub dry_run: bool,
    /// `ok`: every record of the whole input was read and taken; `partial`: some were refused, or the
    /// input was not read to its end (`complete`).
    #[serde(default)]
    pub outcome: String,
    /// Whether the whole input was read. When not, `unread` says where reading stopped and how much
    /// was left.
    #[serde(default = "yes")]
    pub complete: bool,
    /// With `strict`, whether anything was applied.
    pub applied: bool,
    pub read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub rejected: u64,
    /// Records left out on purpose: not consents of ours (values the mapping lists under `skip`), and
    /// changes to numbers a DPO purged (sync).
    #[serde(default)]
    pub skipped: u64,
    /// The first records skipped as not ours, with where and why (purged numbers are not listed).
    #[serde(default)]
    pub skips: Vec<Reject>,
    /// The inputs, or rests of inputs, that were not read, with where and why reading stopped.
    #[serde(default)]
    pub unread: Vec<NotRead>,
    /// The newest update (else creation) time among the records read: a pull's next watermark.
    #[serde(skip)]
    pub newest: Option<crate::domain::Timestamp>,
    /// The first refused records, with where and why.
    pub rejects: Vec<Reject>,
    pub seconds: f64,
}

impl Default for ImportReport {
    fn default() -> Self {
        ImportReport {
            mapping: String::new(),
            files: Vec::new(),
            dry_run: false,
            outcome: String::new(),
            complete: true,
            applied: false,
            read: 0,
            inserted: 0,
            updated: 0,
            unchanged: 0,
            deleted: 0,
            rejected: 0,
            skipped: 0,
            skips: Vec::new(),
            unread: Vec::new(),
            newest: None,
            rejects: Vec::new(),
            seconds: 0.0,
        }
    }
}

impl ImportReport {
    /// Drops the refused and skipped values, which may be phone numbers: for callers without the view
    /// right. Reasons never quote a value, so where and why stay.
    pub fn hide_values(&mut self) {
        hide_values(self.rejects.iter_mut().chain(&mut self.skips));
    }
}

/// Drops refused values, which may be phone numbers (reports, dead letters), for callers without
/// the view right.
pub fn hide_values<'r>(rejects: impl IntoIterator<Item = &'r mut Reject>) {
    for r in rejects {
        r.value = None;
    }
}

fn yes() -> bool {
    true
}

/// An input, or the rest of one, that was not read.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotRead {
    pub file: String,
    /// Where reading stopped (the line of the record that broke it), if it started.
    pub line: Option<u64>,
    pub record: u64,
    pub path: Option<String>,
    pub reason: String,
    /// How much was not read, from the start of the record that broke it; `None` when the input was
    /// not read at all (its header or layout did not fit the mapping).
    pub bytes: Option<u64>,
    pub lines: Option<u64>,
    /// Where the unread rest was written, to be fixed and imported again (`--rejects`).
    pub saved_to: Option<String>,
}

impl std::fmt::Display for NotRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if self.record > 0 {
            write!(f, " record {}", self.record)?;
        }
        if let Some(p) = &self.path {
            write!(f, " ({p})")?;
        }
        write!(f, ": {}; ", self.reason)?;
        match (self.bytes, self.lines) {
            (Some(b), Some(l)) => write!(f, "reading stopped here: {l} line(s), {b} byte(s) not read")?,
            _ => write!(f, "the file was not read")?,
        }
        if let Some(to) = &self.saved_to {
            write!(f, " (written to {to})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reject {
    pub file: String,
    pub line: Option<u64>,
    pub record: u64,
    pub path: Option<String>,
    pub field: Option<String>,
    pub value: Option<String>,
    pub reason: String,
}

impl From<&RecordError> for Reject {
    /// Also a skipped record: where, which field, the value, and why it is not ours.
    fn from(e: &RecordError) -> Self {
        Reject {
            file: e.location.file.clone(),
            line: e.location.line,
            record: e.location.record,
            path: e.location.path.clone(),
            field: Some(e.field.clone()),
            value: Some(clip(&e.value)),
            reason: e.reason.clone(),
        }
    }
}

impl From<&FormatError> for Reject {
    fn from(e: &FormatError) -> Self {
        Reject {
            file: e.location.file.clone(),
            line: e.location.line,
            record: e.location.record,
            path: e.location.path.clone(),
            field: None,
            value: None,
            reason: e.message.clone(),
        }
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        write!(f, " record {}", self.record)?;
        if let Some(p) = &self.path {
            write!(f, " ({p})")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        if let Some(v) = &self.value {
            let shown: String = v.chars().take(80).collect();
            write!(f, " = {shown:?}{}", if shown.len() < v.len() { "…" } else { "" })?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl ImportReport {
    /// True when every record of the whole input was taken (or skipped as not ours).
    pub fn clean(&self) -> bool {
        self.rejected == 0 && self.complete
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}{} file(s) with mapping {} in {:.2} s: read {}, inserted {}, updated {}, unchanged {}, deleted {}, rejected {}, skipped {}\n",
            if self.dry_run { "Dry run (nothing written): " } else { "Imported " },
            self.files.len(),
            self.mapping,
            self.seconds,
            self.read,
            self.inserted,
            self.updated,
            self.unchanged,
            self.deleted,
            self.rejected,
            self.skipped
        );
        if self.complete {
            s.push_str("The whole input was read.\n");
        } else {
            s.push_str("NOT ALL OF THE INPUT WAS READ:\n");
            for u in &self.unread {
                s.push_str(&format!("  {u}\n"));
            }
        }
        if !self.applied && !self.dry_run {
            s.push_str("Nothing was applied: --strict and some records were refused or not read.\n");
        }
        if !self.rejects.is_empty() {
            s.push_str("Refused:\n");
            for r in &self.rejects {
                s.push_str(&format!("  {r}\n"));
            }
            if self.rejected > self.rejects.len() as u64 {
                s.push_str(&format!("  … and {} more\n", self.rejected - self.rejects.len() as u64));
            }
        }
        if !self.skips.is_empty() {
            s.push_str("Skipped (not consents of ours):\n");
            for r in &self.skips {
                s.push_str(&format!("  {r}\n"));
            }
        }
        s
    }

    /// Removes the files beside the rejects file `rejects` that hold the unread rests of JSON and XML
    /// inputs, for callers that keep the inputs themselves (a pull, a replay): they hold personal data
    /// and are not needed there.
    pub fn remove_unread_beside(&self, rejects: &Path) {
        for to in self.unread.iter().filter_map(|u| u.saved_to.as_deref()) {
            if Path::new(to) != rejects {
                let _ = std::fs::remove_file(to);
            }
        }
    }

    /// Sets `outcome` from the figures.
    fn conclude(&mut self) {
        self.outcome = if self.clean() { "ok" } else { "partial" }.to_string();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {0}: {1}")]
    Open(String, std::io::Error),
    #[error("cannot write the rejects to {0}: {1}")]
    Rejects(String, String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One input: a name for messages and a way to open it (again, for `strict`).
pub struct Input {
    pub name: String,
    open: Box<dyn FnMut() -> std::io::Result<Box<dyn Read + Send>>>,
    /// Whether each change keeps the place it was read at (file and line) in its audit entry.
    placed: bool,
}

impl Input {
    pub fn file(path: &Path) -> Self {
        let p = path.to_path_buf();
        Input {
            name: path.display().to_string(),
            open: Box::new(move || Ok(Box::new(BufReader::with_capacity(1 << 16, File::open(&p)?)))),
            placed: true,
        }
    }

    /// An input opened by `open`, once per pass.
    pub fn new(name: &str, open: impl FnMut() -> std::io::Result<Box<dyn Read + Send>> + 'static) -> Self {
        Input {
            name: name.to_string(),
            open: Box::new(open),
            placed: true,
        }
    }

    /// A reader that can only be read once (stdin, a request body).
    pub fn once(name: &str, r: Box<dyn Read + Send>) -> Self {
        let mut r = Some(r);
        Input {
            name: name.to_string(),
            open: Box::new(move || r.take().ok_or_else(|| std::io::Error::other("this input can only be read once"))),
            placed: true,
        }
    }

    /// The input's changes keep no place: an HTTP page (whose address says nothing lasting), records
    /// replayed from a dead letter (whose places are not those of the original).
    pub fn without_places(mut self) -> Self {
        self.placed = false;
        self
    }
}

/// Imports `inputs` through `mapping` into `store`.
pub fn import(
    store: &Store,
    mapping: &Mapping,
    inputs: &mut [Input],
    ctx: &ChangeContext,
    phones: &PhoneParser,
    opts: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let started = Instant::now();
    let phones = &region_parser(mapping, phones, opts);
    let mut report = ImportReport {
        mapping: mapping.name.clone(),
        files: inputs.iter().map(|i| i.name.clone()).collect(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut rejects = RejectsFile::new(mapping, opts.rejects.as_deref());
    if opts.strict {
        // First pass: check everything, write nothing.
        let mut check = ImportReport::default();
        for input in inputs.iter_mut() {
            read_input(
                mapping,
                input,
                phones,
                opts.max_field_bytes,
                &mut check,
                &mut rejects,
                &mut |_, _, _| Ok(()),
            )?;
        }
        rejects.finish()?;
        if !check.clean() {
            report.read = check.read;
            report.rejected = check.rejected;
            report.rejects = check.rejects;
            report.skipped = check.skipped;
            report.skips = check.skips;
            report.complete = check.complete;
            report.unread = check.unread;
            report.seconds = started.elapsed().as_secs_f64();
            report.conclude();
            return Ok(report);
        }
        rejects = RejectsFile::new(mapping, None);
    }
    let mut session = Importer {
        store,
        mapping,
        ctx,
        phones: *phones,
        opts,
        report,
        rejects,
        chunk: Batch::with_capacity(opts.chunk_records.min(1 << 22)),
        started,
    };
    for input in inputs.iter_mut() {
        session.add(input)?;
    }
    session.finish()
}

/// An import fed one input at a time (a sync pull's pages): changes of all inputs share chunks, so
/// many small inputs cost what one large one does.
pub struct Importer<'a> {
    store: &'a Store,
    mapping: &'a Mapping,
    ctx: &'a ChangeContext,
    phones: PhoneParser,
    opts: &'a ImportOptions,
    report: ImportReport,
    rejects: RejectsFile<'a>,
    chunk: Batch,
    started: Instant,
}

impl<'a> Importer<'a> {
    /// A session without `strict` (which needs every input twice); `opts.strict` is ignored.
    pub fn new(store: &'a Store, mapping: &'a Mapping, ctx: &'a ChangeContext, phones: &'a PhoneParser, opts: &'a ImportOptions) -> Self {
        Importer {
            store,
            mapping,
            ctx,
            phones: region_parser(mapping, phones, opts),
            opts,
            report: ImportReport {
                mapping: mapping.name.clone(),
                dry_run: opts.dry_run,
                ..Default::default()
            },
            rejects: RejectsFile::new(mapping, opts.rejects.as_deref()),
            chunk: Batch::with_capacity(opts.chunk_records.min(1 << 22)),
            started: Instant::now(),
        }
    }

    /// The report so far (changes still in the chunk are not counted yet).
    pub fn report(&self) -> &ImportReport {
        &self.report
    }

    /// Reads one more input; its changes join the chunk, which is written whenever it is full.
    pub fn add(&mut self, input: &mut Input) -> Result<(), ImportError> {
        if !self.report.files.contains(&input.name) {
            self.report.files.push(input.name.clone());
        }
        let (store, ctx, opts, chunk) = (self.store, self.ctx, self.opts, &mut self.chunk);
        read_input(
            self.mapping,
            input,
            &self.phones,
            opts.max_field_bytes,
            &mut self.report,
            &mut self.rejects,
            &mut |incoming, place, report| {
                for i in incoming {
                    let at = i.time();
                    if at.is_some() && at > report.newest {
                        report.newest = at;
                    }
                    if opts.skip.as_ref().is_some_and(|skip| skip(i)) {
                        report.skipped += 1;
                    } else if let Some(l) = place {
                        chunk.push_from(i, &l.file, l.line, l.record);
                    } else {
                        chunk.push(i);
                    }
                }
                if chunk.len() >= opts.chunk_records {
                    apply_chunk(store, ctx, opts, chunk, report)?;
                }
                Ok(())
            },
        )
    }

    /// Writes what is left and returns the report.
    pub fn finish(mut self) -> Result<ImportReport, ImportError> {
        if !self.chunk.is_empty() {
            apply_chunk(self.store, self.ctx, self.opts, &mut self.chunk, &mut self.report)?;
        }
        self.rejects.finish()?;
        self.report.applied = !self.opts.dry_run;
        self.report.seconds = self.started.elapsed().as_secs_f64();
        self.report.conclude();
        Ok(self.report)
    }
}

/// Where national numbers are read: `--region` (or a connector's), else the mapping's, else `phones`'.
fn region_parser(mapping: &Mapping, phones: &PhoneParser, opts: &ImportOptions) -> PhoneParser {
    match opts.region {
        Some(r) => phones.with_region(r),
        None => mapping.phones(phones),
    }
}

fn apply_chunk(
    store: &Store,
    ctx: &ChangeContext,
    opts: &ImportOptions,
    chunk: &mut Batch,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    for o in store.apply_batch(chunk, ctx, opts.dry_run)? {
        match o {
            Outcome::Inserted => report.inserted += 1,
            Outcome::Updated => report.updated += 1,
            Outcome::Deleted => report.deleted += 1,
            Outcome::Unchanged | Outcome::NotFound => report.unchanged += 1,
        }
    }
    tracing::info!(
        read = report.read,
        inserted = report.inserted,
        updated = report.updated,
        "Import chunk written."
    );
    Ok(())
}

/// Takes one record's changes, and where the record was read when the input keeps places.
type Sink<'a> = dyn FnMut(&[Incoming], Option<&Location>, &mut ImportReport) -> Result<(), ImportError> + 'a;

/// Reads one input, handing each record's changes to `sink` and noting refused and skipped records.
/// A record that cannot be read is refused by itself; where reading cannot go on, what was not read is
/// noted (and kept in the rejects).
fn read_input(
    mapping: &Mapping,
    input: &mut Input,
    phones: &PhoneParser,
    max_field: usize,
    report: &mut ImportReport,
    rejects: &mut RejectsFile,
    sink: &mut Sink,
) -> Result<(), ImportError> {
    let reader = (input.open)().map_err(|e| ImportError::Open(input.name.clone(), e))?;
    let wanted = mapping.wanted_fields();
    let mut records = match formats::open_reader(mapping.format(), &wanted, &mapping.optional_fields(), reader, &input.name) {
        Ok(r) => r,
        Err(e) => {
            report.complete = false;
            report.unread.push(NotRead {
                file: e.location.file,
                line: e.location.line,
                record: e.location.record,
                path: e.location.path,
                reason: e.message,
                bytes: None,
                lines: None,
                saved_to: None,
            });
            return Ok(());
        }
    };
    let mut incoming = Vec::with_capacity(2);
    while let Some(next) = records.next_record() {
        let record = match next {
            Ok(r) => r,
            Err(e) if !e.fatal => {
                report.read += 1;
                note(report, Reject::from(&e));
                rejects.write(&*records, mapping, None)?;
                continue;
            }
            Err(e) => {
                let (unread, saved_to) = rejects.keep_rest(&mut *records, mapping, &input.name)?;
                report.complete = false;
                report.unread.push(NotRead {
                    file: e.location.file,
                    line: e.location.line,
                    record: e.location.record,
                    path: e.location.path,
                    reason: e.message,
                    bytes: Some(unread.bytes),
                    lines: Some(unread.lines),
                    saved_to,
                });
                break;
            }
        };
        report.read += 1;
        if let Some((i, v)) = record
            .values
            .iter()
            .enumerate()
            .find_map(|(i, v)| Some((i, v.as_deref()?)).filter(|(_, v)| v.len() > max_field))
        {
            note(
                report,
                Reject {
                    file: record.location.file.clone(),
                    line: record.location.line,
                    record: record.location.record,
                    path: record.location.path.clone(),
                    field: Some(wanted[i].to_string()),
                    value: Some(clip(v)),
                    reason: format!("the value is {} bytes, more than import.max_field_bytes ({max_field})", v.len()),
                },
            );
            rejects.write(&*records, mapping, Some(&record))?;
            continue;
        }
        incoming.clear();
        match mapping.to_incoming(&record, phones, &mut incoming) {
            Ok(()) => sink(&incoming, input.placed.then_some(&record.location), report)?,
            Err(e) if e.skipped => {
                report.skipped += 1;
                if report.skips.len() < REPORT_REJECTS {
                    report.skips.push(Reject::from(&e));
                }
            }
            Err(e) => {
                note(report, Reject::from(&e));
                rejects.write(&*records, mapping, Some(&record))?;
            }
        }
    }
    Ok(())
}

/// A value as a report shows it: its first 64 characters, and how long it was when it was longer.
pub fn clip(value: &str) -> String {
    const SHOWN: usize = 64;
    match value.char_indices().nth(SHOWN) {
        None => value.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &value[..end], value.len()),
    }
}

fn note(report: &mut ImportReport, r: Reject) {
    report.rejected += 1;
    if report.rejects.len() < REPORT_REJECTS {
        report.rejects.push(r);
    }
}

/// The `--rejects` file, opened at the first refused record. Rests of inputs that were not read to
/// their end are kept aside and added when it is finished: at its end for line formats (CSV, NDJSON),
/// which then read on as the input would have; beside it (`FILE.unread`, `FILE.unread.2`, …) for JSON
/// and XML documents, which a rest cannot be part of.
struct RejectsFile<'m> {
    mapping: &'m Mapping,
    path: Option<PathBuf>,
    writer: Option<Box<dyn RecordWriter>>,
    /// Rests kept aside, to go at the end of the file.
    rests: Option<tempfile::NamedTempFile>,
    documents: usize,
}

impl<'m> RejectsFile<'m> {
    fn new(mapping: &'m Mapping, path: Option<&Path>) -> Self {
        Self {
            mapping,
            path: path.map(Path::to_path_buf),
            writer: None,
            rests: None,
            documents: 0,
        }
    }

    fn err(&self, e: impl ToString) -> ImportError {
        ImportError::Rejects(
            self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            e.to_string(),
        )
    }

    fn open(&mut self, reader: &dyn RecordReader) -> Result<(), ImportError> {
        let Some(path) = &self.path else { return Ok(()) };
        if self.writer.is_none() {
            let file = File::create(path).map_err(|e| self.err(e))?;
            let out = Box::new(std::io::BufWriter::new(file));
            // Every field read, fallbacks too, so a refused record keeps all it had.
            self.writer = Some(
                formats::open_writer(self.mapping.format(), &self.mapping.wanted_fields(), reader.header(), out)
                    .map_err(|e| self.err(e))?,
            );
        }
        Ok(())
    }

    /// Writes a refused record: as it came when the reader kept it, else rebuilt from its values.
    fn write(&mut self, reader: &dyn RecordReader, mapping: &Mapping, record: Option<&formats::Record>) -> Result<(), ImportError> {
        if self.path.is_none() {
            return Ok(());
        }
        self.open(reader)?;
        let w = self.writer.as_mut().expect("opened above");
        let result = match (reader.raw(), record) {
            (Some(raw), _) => w.write_raw(raw),
            (None, Some(record)) => w.write(&mapping.reject_record(record)),
            (None, None) => Ok(()),
        };
        result.map_err(|e| self.err(e))
    }

    /// Takes what the reader could not read, from the start of the record that stopped it: counted,
    /// and kept for the rejects file when there is one. Returns where it went.
    fn keep_rest(
        &mut self,
        reader: &mut dyn RecordReader,
        mapping: &Mapping,
        input: &str,
    ) -> Result<(Unread, Option<String>), ImportError> {
        let Some(path) = self.path.clone() else {
            let unread = reader
                .rest(&mut std::io::sink())
                .map_err(|e| ImportError::Open(input.to_string(), e))?;
            return Ok((unread, None));
        };
        let format = mapping.format();
        if matches!(format.kind, FormatKind::Json | FormatKind::Xml) {
            self.documents += 1;
            let mut name = path.as_os_str().to_owned();
            name.push(".unread");
            if self.documents > 1 {
                name.push(format!(".{}", self.documents));
            }
            let to = PathBuf::from(name);
            let file = File::create(&to).map_err(|e| self.err(e))?;
            let mut out = formats::encode(format.encoding, false, Box::new(std::io::BufWriter::new(file)));
            let unread = reader.rest(&mut out).map_err(|e| self.err(e))?;
            out.flush().map_err(|e| self.err(e))?;
            return Ok((unread, Some(to.display().to_string())));
        }
        // Line formats: the file (with its header) must exist, and the rest goes at its end.
        self.open(&*reader)?;
        if self.rests.is_none() {
            self.rests = Some(tempfile::NamedTempFile::new().map_err(|e| self.err(e))?);
        }
        let rests = self.rests.as_mut().expect("made above");
        let mut out = std::io::BufWriter::new(rests.as_file_mut());
        let kept = reader.rest(&mut out).and_then(|unread| out.flush().map(|()| unread));
        drop(out);
        let unread = kept.map_err(|e| self.err(e))?;
        Ok((unread, Some(path.display().to_string())))
    }

    fn finish(&mut self) -> Result<(), ImportError> {
        if let Some(w) = self.writer.take() {
            w.finish().map_err(|e| self.err(e))?;
        }
        if let (Some(rests), Some(path)) = (self.rests.take(), &self.path) {
            let file = std::fs::OpenOptions::new().append(true).open(path).map_err(|e| self.err(e))?;
            let format = self.mapping.format();
            let mut out = formats::encode(format.encoding, false, Box::new(std::io::BufWriter::new(file)));
            let mut from = rests.reopen().map_err(|e| self.err(e))?;
            std::io::copy(&mut from, &mut out).map_err(|e| self.err(e))?;
            out.flush().map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Consent, Criteria, Op, PhoneNumber, Source, Timestamp, Usage};
    use crate::store::StoreOptions;
    use proptest::prelude::*;

    /// Mappings of every format, with what makes a file hard to write back: value tokens holding
    /// delimiters, quotes and markup; encodings other than UTF-8; nested and wide layouts.
    const MAPPINGS: [&str; 7] = [
        // CSV with ; and quotes inside the tokens, windows-1252.
        r#"[format]
type = "csv"
delimiter = ";"
encoding = "windows-1252"
[fields]
number = { column = "Rufnummer" }
usage = { column = "Kanal" }
consent = { column = "Einwilligung" }
created = { column = "erstellt" }
updated = { column = "geändert", format = "epoch_ms" }
[values]
consent = { true = ["Ja; \"gern\""], false = ["Nein, \"nie\""] }
usage = { call_recording = ["Aufzeichnung"], whatsapp = ["WhatsApp; Business"] }"#,
        // TSV in UTF-16 with a BOM.
        r#"[format]
type = "tsv"
encoding = "utf-16"
[fields]
number = { column = "Address" }
usage = { column = "Usage" }
consent = { column = "Consent" }
created = { column = "Created" }
updated = { column = "Updated" }"#,
        // NDJSON with nested paths and JSON booleans.
        r#"[format]
type = "ndjson"
[fields]
number = { path = "contact.phone" }
usage = { path = "consent.channel" }
consent = { path = "consent.given" }
created = { path = "consent.at", format = "epoch_ms" }
updated = { path = "changed" }"#,
        // JSON, a number's consents nested under it.
        r#"[format]
type = "json"
records = "data.people.consents"
[fields]
number = { path = "../phone" }
usage = { path = "usage" }
consent = { path = "value" }
created = { path = "created" }
updated = { path = "updated" }
[values]
consent = { true = ["yes \"really\""], false = ["no\nway"] }"#,
        // XML, nested, with attributes and markup in the tokens.
        r#"[format]
type = "xml"
record = "subjects/subject/consent"
[fields]
number = { path = "../@msisdn" }
usage = { path = "@kind" }
consent = { path = "." }
created = { path = "@since" }
updated = { path = "changed/@at" }
[values]
consent = { true = ["<granted> & 'kept'"], false = ["\"revoked\" & <gone>"] }"#,
        // XML, flat, in windows-1252.
        r#"[format]
type = "xml"
encoding = "windows-1252"
record = "export/row"
[fields]
number = { path = "tel" }
usage = { path = "art" }
consent = { path = "@zustimmung" }
created = { path = "seit" }
updated = { path = "geändert" }
[values]
consent = { true = ["ja"], false = ["nein"] }
usage = { call_recording = ["Gesprächsaufzeichnung"], whatsapp = ["WhatsApp"] }"#,
        // Wide CSV: a column per usage, with its own times.
        r#"[format]
type = "csv"
[fields]
number = { column = "msisdn" }
[[wide]]
usage = "call_recording"
consent = { column = "rec" }
created = { column = "rec_created" }
updated = { column = "rec_updated" }
[[wide]]
usage = "whatsapp"
consent = { column = "wa" }
created = { column = "wa_created" }
updated = { column = "wa_updated" }"#,
    ];

    fn consents() -> impl Strategy<Value = Vec<Consent>> {
        let one = (
            crate::domain::phone::possible_numbers(),
            any::<bool>(),
            any::<bool>(),
            0i64..4_000_000_000_000,
            0i64..100_000_000_000,
        );
        prop::collection::vec(one, 1..40).prop_map(|v| {
            let mut seen = std::collections::HashSet::new();
            v.into_iter()
                .map(|(number, whatsapp, consent, created, later)| Consent {
                    number,
                    usage: if whatsapp { Usage::Whatsapp } else { Usage::CallRecording },
                    consent,
                    created_at: Timestamp::from_millis(created),
                    updated_at: Timestamp::from_millis(created + later),
                    source: Source::Cli,
                })
                .filter(|c| seen.insert((c.number, c.usage)))
                .collect()
        })
    }

    fn ctx(source: Source) -> ChangeContext {
        ChangeContext {
            actor: "test".into(),
            source,
            now: Timestamp::from_millis(5_000_000_000_000),
            prefer: crate::domain::Prefer::Newest,
            call_id: None,
        }
    }

    /// What a store holds, without where it came from.
    fn held(store: &Store) -> Vec<(PhoneNumber, Usage, bool, Timestamp, Timestamp)> {
        let mut all: Vec<_> = store
            .scan(&Criteria::default())
            .unwrap()
            .map(|c| c.unwrap())
            .map(|c| (c.number, c.usage, c.consent, c.created_at, c.updated_at))
            .collect();
        all.sort();
        all
    }

    fn export(store: &Store, m: &Mapping) -> Vec<u8> {
        let mut out = Vec::new();
        crate::export::export(store, m, &Criteria::default(), Box::new(&mut out)).unwrap();
        out
    }

    fn open(dir: &Path) -> Store {
        let opts = StoreOptions {
            cache_bytes: 1 << 20,
            page_bytes: 512,
        };
        Store::open(dir, &opts).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Consents written through a mapping, imported into an empty store and exported again are
        /// the same consents and the same file, in every format.
        #[test]
        fn consents_survive_a_file_in_every_format(which in 0..MAPPINGS.len(), consents in consents()) {
            let m = Mapping::from_toml("round-trip", Path::new("round-trip.toml"), MAPPINGS[which]).unwrap_or_else(|e| panic!("{e}"));
            let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
            let (a, b) = (open(a_dir.path()), open(b_dir.path()));
            let changes: Vec<Incoming> = consents
                .iter()
                .map(|c| Incoming { number: c.number, usage: c.usage, op: Op::Set { consent: c.consent, created_at: Some(c.created_at), updated_at: Some(c.updated_at) } })
                .collect();
            a.apply(&changes, &ctx(Source::Cli), false).unwrap();
            let file = export(&a, &m);
            let opts = ImportOptions { dry_run: false, strict: false, rejects: None, chunk_records: 7, skip: None, region: None, max_field_bytes: 1 << 10 };
            let input = Input::once("file", Box::new(std::io::Cursor::new(file.clone())));
            let report = import(&b, &m, &mut [input], &ctx(Source::Import("round-trip".into())), &PhoneParser::default(), &opts).unwrap();
            prop_assert!(report.clean(), "{}\n{}", report.to_text(), String::from_utf8_lossy(&file));
            prop_assert_eq!(held(&b), held(&a));
            prop_assert_eq!(export(&b, &m), file);
            // Each change names the file and its own line (or record, in formats without lines).
            let audit = b.audit(&crate::store::AuditQuery::default(), 0, 1 << 20).unwrap().items;
            prop_assert_eq!(audit.len(), consents.len());
            let places: std::collections::HashSet<_> = audit.iter().map(|e| (e.origin.line, e.origin.record)).collect();
            prop_assert_eq!(places.len(), audit.len());
            prop_assert!(audit.iter().all(|e| e.origin.file.as_deref() == Some("file") && (e.origin.line.is_some() != e.origin.record.is_some())));
        }
    }
}
