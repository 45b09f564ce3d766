//! The command line (clap): parses arguments into commands and runs them against the store, the
//! mappings and the daemon. `main.rs` only calls [`run`].

use crate::config::Config;
use crate::domain::{Criteria, CriteriaText, Incoming, Op, Region, Source, Timestamp, Usage};
use crate::import::{ImportOptions, Input};
use crate::mapping::Mapping;
use crate::store::{ChangeContext, Outcome, Store};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;

/// Exit status when an import refused records (other failures exit 1).
pub const EXIT_REFUSED: u8 = 2;
/// Exit status when an import did not read all of its input (a file it could not read to its end).
pub const EXIT_INCOMPLETE: u8 = 3;

/// The exit status a sync run's outcome calls for: 0 when everything was done, 2 when it was partial
/// (refused records or changes, erasures still owed), 1 otherwise (failed, stopped).
fn run_status(outcome: &str) -> u8 {
    match outcome {
        "ok" => 0,
        "partial" => EXIT_REFUSED,
        _ => 1,
    }
}

/// The exit status an import report calls for.
fn import_status(report: &crate::import::ImportReport) -> u8 {
    if !report.complete {
        EXIT_INCOMPLETE
    } else if !report.clean() {
        EXIT_REFUSED
    } else {
        0
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "consentd",
    version,
    about = "Keeps customer consents and keeps them in step with other consent systems."
)]
pub struct Cli {
    /// Configuration file (default: the built-in config/consentd.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Store directory (overrides the config and CONSENTD_DATA_DIR).
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Send the command to a running daemon at this URL (token from CONSENTD_TOKEN) instead of
    /// opening the store, which the daemon holds.
    #[arg(long, global = true, value_name = "URL", env = "CONSENTD_SERVER")]
    pub server: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Check the configuration and report every problem.
    CheckConfig,
    /// Import files through a mapping.
    Import {
        /// Mapping name (mappings/NAME.toml) or path.
        #[arg(long)]
        mapping: String,
        /// Files to import (`-` for standard input).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Report what would change, write nothing.
        #[arg(long)]
        dry_run: bool,
        /// Apply nothing if any record is refused.
        #[arg(long)]
        strict: bool,
        /// Write refused records here, in the input's format.
        #[arg(long, value_name = "FILE")]
        rejects: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The region (ISO 3166 code, such as US) national numbers in the files are written in, over
        /// the mapping's and the config's.
        #[arg(long)]
        region: Option<Region>,
        /// No progress bar (there is none anyway when standard error is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Export consents through a mapping (all, or those matching the criteria).
    Export {
        #[arg(long)]
        mapping: String,
        #[command(flatten)]
        criteria: CriteriaArgs,
        /// Write here instead of standard output.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
        /// No progress bar (there is none anyway when standard error is not a terminal).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Search consents (at least one criterion), in creation-time order.
    Search {
        #[command(flatten)]
        criteria: CriteriaArgs,
        /// At most this many results.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Continue after a previous page (its next cursor).
        #[arg(long)]
        cursor: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Add a given (TRUE) consent.
    Add {
        number: String,
        #[arg(long, default_value = "call_recording")]
        usage: Usage,
    },
    /// Set a consent's value.
    Set {
        number: String,
        #[arg(long)]
        usage: Usage,
        #[arg(long, action = clap::ArgAction::Set)]
        consent: bool,
    },
    /// Delete a number's consent (both usages unless --usage is given).
    Delete {
        number: String,
        #[arg(long)]
        usage: Option<Usage>,
    },
    /// Flip a number's consent (both usages held unless --usage is given).
    Toggle {
        number: String,
        #[arg(long)]
        usage: Option<Usage>,
    },
    /// The audit trail of a number: every change, also of deleted consents.
    History {
        number: String,
        #[arg(long)]
        json: bool,
    },
    /// Work with mapping files.
    Mapping {
        #[command(subcommand)]
        command: MappingCommand,
    },
    /// Sync with external consent systems (the `[[connectors]]` of the config).
    Sync {
        #[command(subcommand)]
        command: SyncCommand,
    },
    /// Look after the store.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Rewrite the store's live data into fresh files and drop the old ones: disk comes back to the
    /// size of the data, and nothing a purge removed is left in any file.
    Compact,
    /// Bring a PostgreSQL database's schema up to this consentd's (for operators who migrate by hand;
    /// the daemon also migrates at start). Prints the versions before and after.
    Migrate {
        /// The database (a `postgresql://` URL or libpq's `key=value` pairs).
        #[arg(long, env = "CONSENTD_DATABASE_URL", hide_env_values = true)]
        url: String,
    },
    /// Copy a whole store, history included, into an empty one of either backend, and verify the copy
    /// (counts and digests of consents and journal, kept entries). Stop the daemons first. A copy that
    /// was interrupted goes on where it stopped when run again.
    Copy {
        /// `sled:DIR`, or `postgres:URL` (`postgres:` alone: the URL in CONSENTD_DATABASE_URL).
        #[arg(long, value_parser = StoreSpec::parse)]
        from: StoreSpec,
        /// The empty store to copy into, as `--from`.
        #[arg(long, value_parser = StoreSpec::parse)]
        to: StoreSpec,
    },
}

/// A store named on the command line.
#[derive(Debug, Clone)]
pub enum StoreSpec {
    Sled(PathBuf),
    Postgres(String),
}

impl StoreSpec {
    fn parse(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("sled", dir)) if !dir.is_empty() => Ok(StoreSpec::Sled(PathBuf::from(dir))),
            Some(("postgres" | "postgresql", "")) => std::env::var("CONSENTD_DATABASE_URL")
                .ok()
                .filter(|u| !u.is_empty())
                .map(StoreSpec::Postgres)
                .ok_or_else(|| "postgres: without a URL takes it from CONSENTD_DATABASE_URL, which is not set".to_string()),
            Some(("postgres" | "postgresql", rest)) if rest.starts_with("//") => Ok(StoreSpec::Postgres(s.to_string())),
            Some(("postgres" | "postgresql", url)) => Ok(StoreSpec::Postgres(url.to_string())),
            _ => Err("expected sled:DIR or postgres:URL".into()),
        }
    }

    fn open(&self, config: &Config) -> anyhow::Result<Store> {
        Ok(match self {
            StoreSpec::Sled(dir) => Store::open(dir, &config.store_options())?,
            StoreSpec::Postgres(url) => Store::open_postgres(url, &config.pg_options(2))?,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum SyncCommand {
    /// Run one connector now (pull and/or push) and print its report.
    Run { name: String },
    /// List the connectors with their schedule, next run and last run.
    List,
    /// List the changes a connector's remote refused (kept to re-send or dismiss).
    Refused { name: String },
    /// Send a refused batch again, after the remote or the mapping was fixed.
    Resend { name: String, id: u64 },
    /// Drop a refused batch: its changes will not be sent.
    Dismiss {
        name: String,
        id: u64,
        #[arg(long)]
        note: Option<String>,
    },
    /// Mark an erasure owed to a connector as done outside consentd (ID: from `sync list` or the DPO report).
    ErasureHandled {
        name: String,
        id: String,
        /// How it was handled (required).
        #[arg(long)]
        note: String,
    },
    /// Clear a connector's watermark (the next pull takes everything, or from `start_from`), or set it
    /// with --to; --pushed-seq sets the push position (the next push sends the changes after it).
    Reset {
        name: String,
        /// The watermark to set (RFC 3339) instead of clearing it.
        #[arg(long, value_name = "TIME")]
        to: Option<String>,
        /// Set the push position only (the watermark stays unless --to is given too).
        #[arg(long, value_name = "SEQ")]
        pushed_seq: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MappingCommand {
    /// Load a mapping and report every problem.
    Check { name: String },
    /// Show the first records of a file as consents, or why they are refused.
    Preview {
        name: String,
        file: PathBuf,
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
    /// Run the test cases the mapping carries.
    Test { name: String },
}

#[derive(Debug, Args, Default)]
pub struct CriteriaArgs {
    /// A full number (any common notation).
    #[arg(long)]
    pub number: Option<String>,
    /// Trailing digits of the number (at least 3).
    #[arg(long)]
    pub digits: Option<String>,
    /// Consent value.
    #[arg(long)]
    pub consent: Option<bool>,
    #[arg(long)]
    pub usage: Option<Usage>,
    /// Created at or after (RFC 3339 or YYYY-MM-DD).
    #[arg(long)]
    pub created_from: Option<String>,
    /// Created at or before (RFC 3339, or YYYY-MM-DD for that whole day).
    #[arg(long)]
    pub created_to: Option<String>,
}

impl CriteriaArgs {
    /// The criteria as typed, for parsing here or sending to the daemon.
    fn text(&self) -> CriteriaText {
        CriteriaText {
            number: self.number.clone(),
            digits: self.digits.clone(),
            consent: self.consent.map(|c| c.to_string()),
            usage: self.usage.map(|u| u.to_string()),
            created_from: self.created_from.clone(),
            created_to: self.created_to.clone(),
        }
    }

    /// The criteria as query parameters, for the daemon.
    fn query(&self) -> Vec<(&'static str, String)> {
        let t = self.text();
        [
            ("number", t.number),
            ("digits", t.digits),
            ("consent", t.consent),
            ("usage", t.usage),
            ("created_from", t.created_from),
            ("created_to", t.created_to),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }

    pub fn parse(&self, config: &Config) -> anyhow::Result<Criteria> {
        self.text()
            .parse(&config.phone_parser())
            .map_err(|e| anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.reason))
    }
}

/// Runs a command; returns the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(d) = cli.data_dir {
        config.data_dir = d;
    }
    if let Some(server) = &cli.server {
        if !matches!(
            cli.command,
            Command::Mapping { .. }
                | Command::CheckConfig
                | Command::Store {
                    command: StoreCommand::Migrate { .. } | StoreCommand::Copy { .. }
                }
        ) {
            return remote(cli.command, &crate::client::Client::from_env(server)?, &config);
        }
    }
    let phones = config.phone_parser();
    let open_store = || -> anyhow::Result<Store> {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        Ok(config.open_store()?)
    };
    let actor = || format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "local".into()));
    let ctx = || ChangeContext {
        actor: actor(),
        source: Source::Cli,
        now: Timestamp::now(),
        prefer: crate::domain::Prefer::Newest,
        call_id: None,
    };
    if matches!(cli.command, Command::Serve | Command::CheckConfig | Command::Sync { .. }) {
        config.check_connectors()?;
    }
    let stdout = &mut std::io::stdout().lock();
    match cli.command {
        Command::Serve => crate::app::serve(config)?,
        Command::CheckConfig => {
            for w in config.warnings() {
                writeln!(stdout, "warning: {w}")?;
            }
            writeln!(stdout, "The configuration is valid.")?;
        }
        Command::Import {
            mapping,
            files,
            dry_run,
            strict,
            rejects,
            json,
            region,
            quiet,
        } => {
            let mapping = Mapping::load(&mapping, &config.mappings_dir)?;
            let store = open_store()?;
            if strict && files.iter().any(|f| f.as_os_str() == "-") {
                bail!("--strict reads its input twice, so it needs files, not standard input");
            }
            // The bar counts bytes read, over both passes of --strict.
            let sizes: Option<u64> = files
                .iter()
                .map(|f| std::fs::metadata(f).ok().filter(|m| m.is_file()).map(|m| m.len()))
                .sum();
            let bar = crate::progress::bar(sizes.map(|n| n * if strict { 2 } else { 1 }), crate::progress::Unit::Bytes, quiet);
            let mut inputs: Vec<Input> = files
                .iter()
                .map(|f| {
                    let bar = bar.clone();
                    if f.as_os_str() == "-" {
                        Input::once("-", Box::new(bar.wrap_read(std::io::stdin())))
                    } else {
                        let path = f.clone();
                        Input::new(&f.display().to_string(), move || {
                            let file = std::fs::File::open(&path)?;
                            Ok(Box::new(bar.wrap_read(std::io::BufReader::with_capacity(1 << 16, file))))
                        })
                    }
                })
                .collect();
            let ctx = ChangeContext {
                source: Source::Import(mapping.name.as_str().into()),
                ..ctx()
            };
            let opts = ImportOptions {
                dry_run,
                strict,
                rejects,
                chunk_records: config.import.chunk_records,
                skip: None,
                region,
                max_field_bytes: config.import.max_field_bytes,
            };
            let report = crate::import::import(&store, &mapping, &mut inputs, &ctx, &phones, &opts);
            bar.finish_and_clear();
            let report = report?;
            if json {
                serde_json::to_writer_pretty(&mut *stdout, &report)?;
                writeln!(stdout)?;
            } else {
                write!(stdout, "{}", report.to_text())?;
            }
            let status = import_status(&report);
            if status != 0 {
                return Ok(status);
            }
        }
        Command::Export {
            mapping,
            criteria,
            output,
            quiet,
        } => {
            let mapping = Mapping::load(&mapping, &config.mappings_dir)?;
            let criteria = criteria.parse(&config)?;
            let store = open_store()?;
            let bar = crate::progress::bar(
                crate::export::expected(&store, &mapping, &criteria),
                crate::progress::Unit::Consents,
                quiet,
            );
            let mut progress = |n| bar.set_position(n);
            let written = match &output {
                Some(path) => {
                    // Written beside the target and renamed, so a reader never sees half a file.
                    let tmp = path.with_extension("partial");
                    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
                    let out = Box::new(std::io::BufWriter::with_capacity(1 << 16, file));
                    let n = crate::export::export_with(&store, &mapping, &criteria, out, &mut progress);
                    bar.finish_and_clear();
                    let n = n?;
                    std::fs::rename(&tmp, path)?;
                    n
                }
                None => {
                    let out = Box::new(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout()));
                    let n = crate::export::export_with(&store, &mapping, &criteria, out, &mut progress);
                    bar.finish_and_clear();
                    n?
                }
            };
            eprintln!("Exported {written} consent(s) with mapping {}.", mapping.name);
            match mapping.narrow(&criteria) {
                Some((_, Some(note))) => eprintln!("Exported {note}."),
                None => eprintln!("The mapping {} cannot write the consents these criteria ask for.", mapping.name),
                Some((_, None)) => {}
            }
        }
        Command::Search {
            criteria,
            limit,
            cursor,
            json,
        } => {
            let criteria = criteria.parse(&config)?.require_one()?;
            let store = open_store()?;
            let page = store.search(&criteria, cursor.as_deref(), limit)?;
            let rows: Vec<Row> = page.items.iter().map(Row::from).collect();
            print_rows(stdout, &rows, page.next_cursor.as_deref(), json)?;
        }
        Command::Add { number, usage } => {
            let n = phones.parse(&number).context("the number")?;
            let ctx = ctx();
            let op = Op::decided(true, ctx.now);
            let out = change(&open_store()?, &ctx, &[Incoming { number: n, usage, op }])?;
            writeln!(stdout, "{n} {usage}: {}", describe(out[0]))?;
        }
        Command::Set { number, usage, consent } => {
            let n = phones.parse(&number).context("the number")?;
            let ctx = ctx();
            let op = Op::decided(consent, ctx.now);
            let out = change(&open_store()?, &ctx, &[Incoming { number: n, usage, op }])?;
            writeln!(stdout, "{n} {usage}: {}", describe(out[0]))?;
        }
        Command::Delete { number, usage } => {
            let n = phones.parse(&number).context("the number")?;
            let usages: Vec<Usage> = usage.map_or(Usage::ALL.to_vec(), |u| vec![u]);
            let batch: Vec<Incoming> = usages
                .iter()
                .map(|&u| Incoming {
                    number: n,
                    usage: u,
                    op: Op::Delete { at: None },
                })
                .collect();
            let out = change(&open_store()?, &ctx(), &batch)?;
            for (u, o) in usages.iter().zip(out) {
                writeln!(
                    stdout,
                    "{n} {u}: {}",
                    if o == Outcome::Unchanged { "none held" } else { describe(o) }
                )?;
            }
        }
        Command::Toggle { number, usage } => {
            let n = phones.parse(&number).context("the number")?;
            let store = open_store()?;
            let usages: Vec<Usage> = match usage {
                Some(u) => vec![u],
                None => Usage::ALL
                    .into_iter()
                    .filter(|&u| store.get(n, u).ok().flatten().is_some())
                    .collect(),
            };
            let batch: Vec<Incoming> = usages
                .iter()
                .map(|&u| Incoming {
                    number: n,
                    usage: u,
                    op: Op::Toggle,
                })
                .collect();
            let out = change(&store, &ctx(), &batch)?;
            if out.is_empty() || out.contains(&Outcome::NotFound) {
                bail!(
                    "no consent held for this number{}",
                    usage.map(|u| format!(" and usage {u}")).unwrap_or_default()
                );
            }
            for u in usages {
                let c = store.get(n, u)?.context("just toggled")?;
                writeln!(stdout, "{n} {u}: now {}", c.consent)?;
            }
        }
        Command::History { number, json } => {
            let n = phones.parse(&number).context("the number")?;
            let history = serde_json::to_value(open_store()?.history(n)?)?;
            print_history(stdout, history.as_array().map_or(&[][..], |a| a), json)?;
        }
        Command::Mapping { command } => return mapping_command(command, &config, stdout),
        Command::Store {
            command: StoreCommand::Compact,
        } => {
            let done = open_store()?.compact()?;
            serde_json::to_writer_pretty(&mut *stdout, &done)?;
            writeln!(stdout)?;
        }
        Command::Store {
            command: StoreCommand::Migrate { url },
        } => {
            let pool = crate::store::postgres::pool(&url, &config.pg_options(1))?;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let done = rt.block_on(crate::store::postgres::migrate(&pool))?;
            serde_json::to_writer_pretty(&mut *stdout, &done)?;
            writeln!(stdout)?;
        }
        Command::Store {
            command: StoreCommand::Copy { from, to },
        } => {
            let (source, target) = (from.open(&config)?, to.open(&config)?);
            let mut shown = std::time::Instant::now();
            let report = crate::store::copy::copy(&source, &target, |done, last| {
                if shown.elapsed().as_secs() >= 2 {
                    eprintln!("copied changes up to {done} of {last}");
                    shown = std::time::Instant::now();
                }
            })?;
            let mut out = serde_json::to_value(&report)?;
            out["status"] = "ok".into();
            serde_json::to_writer_pretty(&mut *stdout, &out)?;
            writeln!(stdout)?;
        }
        Command::Sync { command } => {
            let store = std::sync::Arc::new(open_store()?);
            let sync = crate::sync::Sync::new(store, std::sync::Arc::new(config.clone())).map_err(anyhow::Error::msg)?;
            match command {
                SyncCommand::Run { name } => {
                    let report = sync.run_once(&name, "manual")?;
                    serde_json::to_writer_pretty(&mut *stdout, &report)?;
                    writeln!(stdout)?;
                    return Ok(run_status(&report.outcome));
                }
                SyncCommand::Refused { name } => {
                    sync.connector(&name)?;
                    let items: Vec<crate::sync::run::RefusedBatch> =
                        sync.store.sync_list(&name, "refused")?.into_iter().map(|(_, b)| b).collect();
                    serde_json::to_writer_pretty(&mut *stdout, &items)?;
                    writeln!(stdout)?;
                }
                SyncCommand::Resend { name, id } => {
                    let out = sync.resend_refused(&name, id, &actor())?;
                    serde_json::to_writer_pretty(&mut *stdout, &out)?;
                    writeln!(stdout)?;
                    if out.outcome == "refused" {
                        return Ok(EXIT_REFUSED);
                    }
                }
                SyncCommand::Dismiss { name, id, note } => {
                    let b = sync.dismiss_refused(&name, id, &actor(), note.as_deref())?;
                    writeln!(
                        stdout,
                        "Dismissed refused batch {} of {name} (changes {} to {}).",
                        b.id, b.first_seq, b.last_seq
                    )?;
                }
                SyncCommand::ErasureHandled { name, id, note } => {
                    sync.erasure_handled(&name, &id, &actor(), &note)?;
                    writeln!(stdout, "The erasure {id} at {name} is marked handled.")?;
                }
                SyncCommand::Reset { name, to, pushed_seq } => {
                    let position = reset_position(to, pushed_seq);
                    let s = sync.set_position(&name, &position, &actor())?;
                    writeln!(
                        stdout,
                        "{name}: watermark {}, pushed up to #{}",
                        s.watermark.as_deref().unwrap_or("-"),
                        s.pushed_seq
                    )?;
                }
                SyncCommand::List => {
                    let now = Timestamp::now();
                    for c in &sync.connectors {
                        let s = sync.state(&c.cfg.name)?;
                        let last = s
                            .runs
                            .last()
                            .map_or("never".to_string(), |r| format!("{} {}", r.started, r.outcome));
                        let next = c.schedule.next_after(now).map_or("-".to_string(), |t| t.to_rfc3339());
                        writeln!(
                            stdout,
                            "{}: {:?} next {next}, last {last}, watermark {}, pushed up to #{}",
                            c.cfg.name,
                            c.cfg.schedule,
                            s.watermark.as_deref().unwrap_or("-"),
                            s.pushed_seq
                        )?;
                    }
                }
            }
        }
    }
    Ok(0)
}

/// What `sync reset` sets: the watermark to `--to` (cleared without it, unless only `--pushed-seq` is
/// given), and the push position to `--pushed-seq`.
fn reset_position(to: Option<String>, pushed_seq: Option<u64>) -> crate::sync::manage::Position {
    crate::sync::manage::Position {
        watermark: match (&to, pushed_seq) {
            (None, Some(_)) => None,
            _ => Some(to),
        },
        pushed_seq,
    }
}

/// A consent as the search command prints it (from the store or from the daemon).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Row {
    number: String,
    usage: String,
    consent: bool,
    created_at: String,
    updated_at: String,
    source: String,
}

impl From<&crate::domain::Consent> for Row {
    fn from(c: &crate::domain::Consent) -> Self {
        Row {
            number: c.number.to_string(),
            usage: c.usage.to_string(),
            consent: c.consent,
            created_at: c.created_at.to_rfc3339(),
            updated_at: c.updated_at.to_rfc3339(),
            source: c.source.to_string(),
        }
    }
}

fn print_rows(out: &mut dyn Write, rows: &[Row], next: Option<&str>, json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, rows)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<17} {:<15} {:<7} {:<24} {:<24} source",
        "number", "usage", "consent", "created_at", "updated_at"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<17} {:<15} {:<7} {:<24} {:<24} {}",
            r.number, r.usage, r.consent, r.created_at, r.updated_at, r.source
        )?;
    }
    if let Some(next) = next {
        writeln!(out, "More results: --cursor {next}")?;
    }
    Ok(())
}

/// Prints audit entries (as the store serialises them).
fn print_history(out: &mut dyn Write, entries: &[serde_json::Value], json: bool) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, entries)?;
        writeln!(out)?;
        return Ok(());
    }
    let state = |c: &serde_json::Value| {
        if c.is_null() {
            "-".to_string()
        } else {
            format!("{} (created {})", c["consent"], c["created_at"].as_str().unwrap_or("?"))
        }
    };
    for e in entries {
        writeln!(
            out,
            "#{} {} {} by {} via {}: {} -> {}",
            e["seq"],
            e["at"].as_str().unwrap_or("?"),
            e["usage"].as_str().unwrap_or("?"),
            e["actor"].as_str().unwrap_or("?"),
            e["source"].as_str().unwrap_or("?"),
            state(&e["before"]),
            state(&e["after"])
        )?;
    }
    Ok(())
}

/// Runs a command through a running daemon's API.
fn remote(command: Command, client: &crate::client::Client, config: &Config) -> anyhow::Result<u8> {
    use crate::domain::ConsentId;
    let stdout = &mut std::io::stdout().lock();
    let phones = config.phone_parser();
    let id = |n: crate::domain::PhoneNumber, usage: Usage| ConsentId { number: n, usage }.to_string();
    match command {
        Command::Serve => bail!("serve runs the daemon itself; leave out --server"),
        Command::CheckConfig
        | Command::Mapping { .. }
        | Command::Store {
            command: StoreCommand::Migrate { .. } | StoreCommand::Copy { .. },
        } => unreachable!("run locally"),
        Command::Store {
            command: StoreCommand::Compact,
        } => {
            let done: serde_json::Value = client.json(client.post("/v1/store/compact"))?;
            serde_json::to_writer_pretty(&mut *stdout, &done)?;
            writeln!(stdout)?;
        }
        Command::Sync { command } => match command {
            SyncCommand::Run { name } => {
                let report: serde_json::Value = client.json(client.post(&format!("/v1/sync/{name}/run")))?;
                serde_json::to_writer_pretty(&mut *stdout, &report)?;
                writeln!(stdout)?;
                return Ok(run_status(report["outcome"].as_str().unwrap_or_default()));
            }
            SyncCommand::List => {
                let list: serde_json::Value = client.json(client.get("/v1/sync"))?;
                serde_json::to_writer_pretty(&mut *stdout, &list["items"])?;
                writeln!(stdout)?;
            }
            SyncCommand::Refused { name } => {
                let list: serde_json::Value = client.json(client.get(&format!("/v1/sync/{name}/refused")))?;
                serde_json::to_writer_pretty(&mut *stdout, &list["items"])?;
                writeln!(stdout)?;
            }
            SyncCommand::Resend { name, id } => {
                let out: serde_json::Value = client.json(client.post(&format!("/v1/sync/{name}/refused/{id}/resend")))?;
                serde_json::to_writer_pretty(&mut *stdout, &out)?;
                writeln!(stdout)?;
                if out["outcome"] == "refused" {
                    return Ok(EXIT_REFUSED);
                }
            }
            SyncCommand::Dismiss { name, id, note } => {
                let b: serde_json::Value = client.json(
                    client
                        .post(&format!("/v1/sync/{name}/refused/{id}/dismiss"))
                        .json(&serde_json::json!({ "note": note })),
                )?;
                writeln!(
                    stdout,
                    "Dismissed refused batch {id} of {name} (changes {} to {}).",
                    b["first_seq"], b["last_seq"]
                )?;
            }
            SyncCommand::ErasureHandled { name, id, note } => {
                client.json::<serde_json::Value>(
                    client
                        .post(&format!("/v1/sync/{name}/erasures/{id}/handled"))
                        .json(&serde_json::json!({ "note": note })),
                )?;
                writeln!(stdout, "The erasure {id} at {name} is marked handled.")?;
            }
            SyncCommand::Reset { name, to, pushed_seq } => {
                let mut body = serde_json::Map::new();
                let position = reset_position(to, pushed_seq);
                if let Some(w) = position.watermark {
                    body.insert("watermark".into(), w.into());
                }
                if let Some(seq) = position.pushed_seq {
                    body.insert("pushed_seq".into(), seq.into());
                }
                let s: serde_json::Value = client.json(client.post(&format!("/v1/sync/{name}/watermark")).json(&body))?;
                writeln!(
                    stdout,
                    "{name}: watermark {}, pushed up to #{}",
                    s["watermark"].as_str().unwrap_or("-"),
                    s["pushed_seq"]
                )?;
            }
        },
        Command::Import {
            mapping,
            files,
            dry_run,
            strict,
            rejects,
            json,
            region,
            quiet,
        } => {
            if rejects.is_some() {
                bail!("--rejects needs the refused records themselves; with --server the report lists them instead");
            }
            let mut status = 0;
            for f in &files {
                // The bar counts bytes sent; the daemon's answer comes once it has imported them.
                let (name, body, bar) = if f.as_os_str() == "-" {
                    let bar = crate::progress::bar(None, crate::progress::Unit::Bytes, quiet);
                    ("-".to_string(), reqwest::blocking::Body::new(bar.wrap_read(std::io::stdin())), bar)
                } else {
                    let file = std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
                    let len = file.metadata()?.len();
                    let bar = crate::progress::bar(Some(len), crate::progress::Unit::Bytes, quiet);
                    (
                        f.display().to_string(),
                        reqwest::blocking::Body::sized(bar.wrap_read(file), len),
                        bar,
                    )
                };
                let mut req = client.post("/v1/imports").body(body).query(&[
                    ("mapping", mapping.as_str()),
                    ("dry_run", if dry_run { "true" } else { "false" }),
                    ("strict", if strict { "true" } else { "false" }),
                    ("name", name.as_str()),
                ]);
                if let Some(r) = region {
                    req = req.query(&[("region", r.to_string())]);
                }
                let report = client.json::<crate::import::ImportReport>(req);
                bar.finish_and_clear();
                let report = report?;
                if json {
                    serde_json::to_writer_pretty(&mut *stdout, &report)?;
                    writeln!(stdout)?;
                } else {
                    write!(stdout, "{}", report.to_text())?;
                }
                status = status.max(import_status(&report));
            }
            return Ok(status);
        }
        Command::Export {
            mapping,
            criteria,
            output,
            quiet,
        } => {
            let mut q = criteria.query();
            q.push(("mapping", mapping));
            let mut r = client.send(client.get("/v1/exports").query(&q))?;
            // The daemon streams the export: its length is not known, the bar counts bytes received.
            let bar = crate::progress::bar(None, crate::progress::Unit::Bytes, quiet);
            match &output {
                Some(path) => {
                    let tmp = path.with_extension("partial");
                    let file = std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
                    let copied = r.copy_to(&mut bar.wrap_write(file));
                    bar.finish_and_clear();
                    copied.context("the export was cut short")?;
                    std::fs::rename(&tmp, path)?;
                }
                None => {
                    let copied = r.copy_to(&mut bar.wrap_write(stdout));
                    bar.finish_and_clear();
                    copied.context("the export was cut short")?;
                }
            }
        }
        Command::Search {
            criteria,
            limit,
            cursor,
            json,
        } => {
            let mut q = criteria.query();
            q.push(("limit", limit.to_string()));
            if let Some(c) = cursor {
                q.push(("cursor", c));
            }
            let page: serde_json::Value = client.json(client.get("/v1/consents").query(&q))?;
            let rows: Vec<Row> = serde_json::from_value(page["items"].clone())?;
            print_rows(stdout, &rows, page["next_cursor"].as_str(), json)?;
        }
        Command::Add { number, usage } => {
            let n = phones.parse(&number).context("the number")?;
            let r = client.send(
                client
                    .post("/v1/consents")
                    .json(&serde_json::json!({"number": n.to_string(), "usage": usage})),
            )?;
            let how = if r.status() == reqwest::StatusCode::CREATED {
                "added"
            } else {
                "updated"
            };
            writeln!(stdout, "{n} {usage}: {how}")?;
        }
        Command::Set { number, usage, consent } => {
            let n = phones.parse(&number).context("the number")?;
            let put = || {
                client
                    .put(&format!("/v1/consents/{}", id(n, usage)))
                    .json(&serde_json::json!({"consent": consent}))
            };
            let r = put().send().context("cannot reach the daemon")?;
            if r.status() == reqwest::StatusCode::NOT_FOUND {
                // Not held yet: add it, then set the value.
                client.send(
                    client
                        .post("/v1/consents")
                        .json(&serde_json::json!({"number": n.to_string(), "usage": usage})),
                )?;
                client.send(put())?;
            } else {
                client.send(put())?;
            }
            writeln!(stdout, "{n} {usage}: set to {consent}")?;
        }
        Command::Delete { number, usage } => {
            let n = phones.parse(&number).context("the number")?;
            let usages: Vec<Usage> = usage.map_or(Usage::ALL.to_vec(), |u| vec![u]);
            let ids: Vec<String> = usages.iter().map(|u| id(n, *u)).collect();
            let r: serde_json::Value = client.json(client.post("/v1/consents/delete").json(&serde_json::json!({ "ids": ids })))?;
            for (u, res) in usages.iter().zip(r["results"].as_array().into_iter().flatten()) {
                let done = res["outcome"] == "deleted";
                writeln!(stdout, "{n} {u}: {}", if done { "deleted" } else { "none held" })?;
            }
        }
        Command::Toggle { number, usage } => {
            let n = phones.parse(&number).context("the number")?;
            let usages: Vec<Usage> = usage.map_or(Usage::ALL.to_vec(), |u| vec![u]);
            let ids: Vec<String> = usages.iter().map(|u| id(n, *u)).collect();
            let r: serde_json::Value = client.json(client.post("/v1/consents/toggle").json(&serde_json::json!({ "ids": ids })))?;
            let mut any = false;
            for (u, res) in usages.iter().zip(r["results"].as_array().into_iter().flatten()) {
                if res["outcome"] == "updated" {
                    any = true;
                    writeln!(stdout, "{n} {u}: now {}", res["consent"])?;
                }
            }
            if !any {
                bail!(
                    "no consent held for this number{}",
                    usage.map(|u| format!(" and usage {u}")).unwrap_or_default()
                );
            }
        }
        Command::History { number, json } => {
            let n = phones.parse(&number).context("the number")?;
            let mut entries = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = vec![("number", n.to_string()), ("limit", "1000".to_string())];
                if let Some(c) = &cursor {
                    q.push(("cursor", c.clone()));
                }
                let page: serde_json::Value = client.json(client.get("/v1/audit").query(&q))?;
                entries.extend(page["items"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            print_history(stdout, &entries, json)?;
        }
    }
    Ok(0)
}

fn change(store: &Store, ctx: &ChangeContext, batch: &[Incoming]) -> anyhow::Result<Vec<Outcome>> {
    Ok(store.apply(batch, ctx, false)?)
}

fn describe(o: Outcome) -> &'static str {
    match o {
        Outcome::Inserted => "added",
        Outcome::Updated => "updated",
        Outcome::Unchanged => "unchanged",
        Outcome::Deleted => "deleted",
        Outcome::NotFound => "not found",
    }
}

fn mapping_command(command: MappingCommand, config: &Config, out: &mut dyn Write) -> anyhow::Result<u8> {
    match command {
        MappingCommand::Check { name } => {
            let m = Mapping::load(&name, &config.mappings_dir)?;
            writeln!(out, "{} ({}) is valid.", m.name, m.file.display())?;
            Ok(0)
        }
        MappingCommand::Preview { name, file, count } => {
            let m = Mapping::load(&name, &config.mappings_dir)?;
            let input = std::fs::File::open(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let mut records = crate::formats::open_reader(
                m.format(),
                &m.wanted_fields(),
                &m.optional_fields(),
                Box::new(std::io::BufReader::new(input)),
                &file.display().to_string(),
            )?;
            let phones = m.phones(&config.phone_parser());
            let mut status = 0;
            for _ in 0..count {
                let Some(next) = records.next_record() else { break };
                let record = match next {
                    Ok(r) => r,
                    Err(e) if !e.fatal => {
                        writeln!(out, "{e}")?;
                        status = EXIT_REFUSED;
                        continue;
                    }
                    Err(e) => {
                        writeln!(out, "{e} (reading stops here)")?;
                        status = EXIT_INCOMPLETE;
                        break;
                    }
                };
                let mut incoming = Vec::new();
                match m.to_incoming(&record, &phones, &mut incoming) {
                    Ok(()) => {
                        for i in incoming {
                            writeln!(out, "{}: {} {} {}", record.location, i.number, i.usage, describe_op(&i.op))?;
                        }
                    }
                    Err(e) if e.skipped => writeln!(out, "{e} (skipped)")?,
                    Err(e) => {
                        writeln!(out, "{e}")?;
                        status = EXIT_REFUSED;
                    }
                }
            }
            Ok(status)
        }
        MappingCommand::Test { name } => {
            let m = Mapping::load(&name, &config.mappings_dir)?;
            let report = m.run_tests(&config.phone_parser());
            let failed = report.cases.iter().filter(|c| !c.passed).count();
            for c in &report.cases {
                writeln!(
                    out,
                    "{} {}{}",
                    if c.passed { "ok  " } else { "FAIL" },
                    c.name,
                    if c.passed { String::new() } else { format!("\n{}", c.detail) }
                )?;
            }
            writeln!(out, "{} passed, {} failed", report.cases.len() - failed, failed)?;
            Ok(if failed > 0 { 1 } else { 0 })
        }
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Set {
            consent,
            created_at,
            updated_at,
        } => {
            let t = |t: &Option<Timestamp>| t.map_or("-".to_string(), |t| t.to_string());
            format!("consent={consent} created={} updated={}", t(created_at), t(updated_at))
        }
        Op::Delete { at } => format!("delete{}", at.map(|t| format!(" at {t}")).unwrap_or_default()),
        Op::Toggle => "toggle".into(),
    }
}
