//! One-off imports: files are read through a mapping as a stream, records become incoming changes,
//! and changes are decided and written a chunk at a time, so memory does not grow with the file.
//! Refused records are reported with where and why, and can be written back out for correction.

use crate::domain::{Incoming, PhoneParser};
use crate::formats::{self, FormatError, RecordReader, RecordWriter};
use crate::mapping::{Mapping, RecordError};
use crate::store::{Batch, ChangeContext, Outcome, Store, StoreError};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{BufReader, Read};
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
}

/// What an import did. Counts of consents, except `read` (records) and `rejected` (records).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ImportReport {
    pub mapping: String,
    pub files: Vec<String>,
    pub dry_run: bool,
    /// With `strict`, whether anything was applied.
    pub applied: bool,
    pub read: u64,
    pub inserted: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub deleted: u64,
    pub rejected: u64,
    /// Changes left out on purpose (sync: purged numbers).
    #[serde(default)]
    pub skipped: u64,
    /// The newest update (else creation) time among the records read: a pull's next watermark.
    #[serde(skip)]
    pub newest: Option<crate::domain::Timestamp>,
    /// The first refused records, with where and why.
    pub rejects: Vec<Reject>,
    pub seconds: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    fn from(e: &RecordError) -> Self {
        Reject {
            file: e.location.file.clone(),
            line: e.location.line,
            record: e.location.record,
            path: e.location.path.clone(),
            field: Some(e.field.clone()),
            value: Some(e.value.clone()),
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
    /// True when every record was taken.
    pub fn clean(&self) -> bool {
        self.rejected == 0
    }

    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}{} file(s) with mapping {} in {:.2} s: read {}, inserted {}, updated {}, unchanged {}, deleted {}, rejected {}\n",
            if self.dry_run { "Dry run (nothing written): " } else { "Imported " },
            self.files.len(),
            self.mapping,
            self.seconds,
            self.read,
            self.inserted,
            self.updated,
            self.unchanged,
            self.deleted,
            self.rejected
        );
        if !self.applied && !self.dry_run {
            s.push_str("Nothing was applied: --strict and some records were refused.\n");
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
        s
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
}

impl Input {
    pub fn file(path: &Path) -> Self {
        let p = path.to_path_buf();
        Input {
            name: path.display().to_string(),
            open: Box::new(move || Ok(Box::new(BufReader::with_capacity(1 << 16, File::open(&p)?)))),
        }
    }

    /// An input opened by `open`, once per pass.
    pub fn new(name: &str, open: impl FnMut() -> std::io::Result<Box<dyn Read + Send>> + 'static) -> Self {
        Input {
            name: name.to_string(),
            open: Box::new(open),
        }
    }

    /// A reader that can only be read once (stdin, a request body).
    pub fn once(name: &str, r: Box<dyn Read + Send>) -> Self {
        let mut r = Some(r);
        Input {
            name: name.to_string(),
            open: Box::new(move || r.take().ok_or_else(|| std::io::Error::other("this input can only be read once"))),
        }
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
            read_input(mapping, input, phones, &mut check, &mut rejects, &mut |_, _| Ok(()))?;
        }
        rejects.finish()?;
        if !check.clean() {
            report.read = check.read;
            report.rejected = check.rejected;
            report.rejects = check.rejects;
            report.seconds = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        rejects = RejectsFile::new(mapping, None);
    }
    let mut session = Importer {
        store,
        mapping,
        ctx,
        phones,
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
    phones: &'a PhoneParser,
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
            phones,
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
            self.phones,
            &mut self.report,
            &mut self.rejects,
            &mut |incoming, report| {
                for i in incoming {
                    let at = i.time();
                    if at.is_some() && at > report.newest {
                        report.newest = at;
                    }
                    if opts.skip.as_ref().is_some_and(|skip| skip(i)) {
                        report.skipped += 1;
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
        Ok(self.report)
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

type Sink<'a> = dyn FnMut(&[Incoming], &mut ImportReport) -> Result<(), ImportError> + 'a;

/// Reads one input, handing each record's changes to `sink` and noting refused records.
fn read_input(
    mapping: &Mapping,
    input: &mut Input,
    phones: &PhoneParser,
    report: &mut ImportReport,
    rejects: &mut RejectsFile,
    sink: &mut Sink,
) -> Result<(), ImportError> {
    let reader = (input.open)().map_err(|e| ImportError::Open(input.name.clone(), e))?;
    let wanted = mapping.wanted_fields();
    let mut records = match formats::open_reader(mapping.format(), &wanted, &mapping.optional_fields(), reader, &input.name) {
        Ok(r) => r,
        Err(e) => {
            note(report, Reject::from(&e));
            return Ok(());
        }
    };
    let mut incoming = Vec::with_capacity(2);
    while let Some(next) = records.next_record() {
        let record = match next {
            Ok(r) => r,
            Err(e) => {
                note(report, Reject::from(&e));
                break;
            }
        };
        report.read += 1;
        incoming.clear();
        match mapping.to_incoming(&record, phones, &mut incoming) {
            Ok(()) => sink(&incoming, report)?,
            Err(e) => {
                note(report, Reject::from(&e));
                rejects.write(&*records, mapping, &record)?;
            }
        }
    }
    Ok(())
}

fn note(report: &mut ImportReport, r: Reject) {
    report.rejected += 1;
    if report.rejects.len() < REPORT_REJECTS {
        report.rejects.push(r);
    }
}

/// The `--rejects` file, opened at the first refused record.
struct RejectsFile<'m> {
    mapping: &'m Mapping,
    path: Option<PathBuf>,
    writer: Option<Box<dyn RecordWriter>>,
}

impl<'m> RejectsFile<'m> {
    fn new(mapping: &'m Mapping, path: Option<&Path>) -> Self {
        Self {
            mapping,
            path: path.map(Path::to_path_buf),
            writer: None,
        }
    }

    fn err(&self, e: impl ToString) -> ImportError {
        ImportError::Rejects(
            self.path.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            e.to_string(),
        )
    }

    fn write(&mut self, reader: &dyn RecordReader, mapping: &Mapping, record: &formats::Record) -> Result<(), ImportError> {
        let Some(path) = &self.path else { return Ok(()) };
        if self.writer.is_none() {
            let file = File::create(path).map_err(|e| self.err(e))?;
            let out = Box::new(std::io::BufWriter::new(file));
            self.writer = Some(
                formats::open_writer(self.mapping.format(), &self.mapping.out_columns(), reader.header(), out).map_err(|e| self.err(e))?,
            );
        }
        let w = self.writer.as_mut().expect("opened above");
        let result = match &record.raw {
            Some(row) => w.write_raw(row),
            None => w.write(&mapping.reject_record(record)),
        };
        result.map_err(|e| self.err(e))
    }

    fn finish(&mut self) -> Result<(), ImportError> {
        match self.writer.take() {
            Some(w) => w.finish().map_err(|e| self.err(e)),
            None => Ok(()),
        }
    }
}
