//! Connectors move bytes between consentd and other consent systems: over HTTP ([`http`]) or through
//! files ([`file`]). They know nothing of consents: the mapping turns the bytes into consents and back.
//! This module holds the `[[connectors]]` settings and their checks.

pub mod file;
pub mod http;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// One external system: `[[connectors]]` in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Unique; the source of what it pulls is `sync:<name>`.
    pub name: String,
    /// `http` or `file`.
    pub transport: Transport,
    /// `pull`, `push` or `both`.
    pub direction: Direction,
    /// The mapping (`mappings/NAME.toml`) that reads the remote format, and writes it unless
    /// `push_mapping` is set.
    pub mapping: String,
    /// The mapping that writes what is pushed, when the remote takes another shape than it gives.
    #[serde(default)]
    pub push_mapping: Option<String>,
    /// The remote system this connector talks to, when several connectors talk to one (a pull and a
    /// push connector, say): a change pulled by any of them is not pushed to any of them.
    #[serde(default)]
    pub system: Option<String>,
    /// Cron: `sec min hour day-of-month month day-of-week` (or five fields without seconds).
    pub schedule: String,
    /// IANA time zone the schedule is read in (default UTC), e.g. `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// Who wins a conflict: `newest` (default: the newer update time), `remote` or `local`.
    #[serde(default)]
    pub authority: Authority,
    /// Run once at start-up when a scheduled run was missed while the daemon was down (default true).
    #[serde(default = "yes")]
    pub catch_up: bool,
    /// Push: what changes the remote refuses (an answer of `http.refused_statuses`) do: `skip`
    /// (default: kept as a refused batch to re-send or dismiss by hand, later batches go on; the run
    /// is `partial`) or `stop` (kept too, and the run stops there and sends them again next time).
    #[serde(default)]
    pub on_refused: OnRefused,
    /// Push: changes per batch (default 1000).
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Pull: the region (ISO 3166 code) national numbers of this system's records are written in,
    /// over the mapping's `[format] region` and the config's `default_region`.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub http: Option<http::HttpOptions>,
    #[serde(default)]
    pub file: Option<file::FileOptions>,
}

fn yes() -> bool {
    true
}

fn default_batch() -> usize {
    1000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Pull,
    Push,
    Both,
}

impl Direction {
    pub fn pulls(self) -> bool {
        matches!(self, Direction::Pull | Direction::Both)
    }
    pub fn pushes(self) -> bool {
        matches!(self, Direction::Push | Direction::Both)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Authority {
    #[default]
    Newest,
    Remote,
    Local,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnRefused {
    #[default]
    Skip,
    Stop,
}

impl ConnectorConfig {
    /// Every problem with this connector, each prefixed with `at` (file and key).
    pub fn problems(&self, at: &str, mappings_dir: &std::path::Path) -> Vec<String> {
        let mut p = Vec::new();
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            p.push(format!("{at}.name: {:?} must be letters, digits, - and _", self.name));
        }
        if let Err(e) = crate::sync::schedule::Schedule::parse(&self.schedule, None) {
            p.push(format!("{at}.schedule: {e}"));
        }
        if let Some(Err(e)) = self
            .timezone
            .as_deref()
            .map(|z| crate::sync::schedule::Schedule::parse("0 0 * * * *", Some(z)))
        {
            p.push(format!("{at}.timezone: {e}"));
        }
        match crate::mapping::Mapping::load(&self.mapping, mappings_dir) {
            Err(e) => p.push(format!("{at}.mapping: {:?}: {}", self.mapping, e.problems.join("; "))),
            Ok(m) => {
                let after = matches!(self.http.as_ref().map(|h| &h.pagination), Some(http::Pagination::After { .. }));
                if after && m.format().kind != crate::formats::FormatKind::Json {
                    p.push(format!(
                        "{at}.http.pagination: style \"after\" reads the last record's id from a JSON page; the mapping {:?} is not JSON",
                        self.mapping
                    ));
                }
            }
        }
        if let Some(Err(e)) = self.push_mapping.as_deref().map(|m| crate::mapping::Mapping::load(m, mappings_dir)) {
            p.push(format!(
                "{at}.push_mapping: {:?}: {}",
                self.push_mapping.as_deref().unwrap_or_default(),
                e.problems.join("; ")
            ));
        }
        if self.push_mapping.is_some() && !self.direction.pushes() {
            p.push(format!("{at}.push_mapping: the connector does not push (direction = \"pull\")"));
        }
        if self.system.as_deref().is_some_and(str::is_empty) {
            p.push(format!("{at}.system: must not be empty"));
        }
        if self.batch_size == 0 {
            p.push(format!("{at}.batch_size: must be at least 1"));
        }
        if let Some(Err(e)) = self.region.as_deref().map(crate::domain::Region::parse) {
            p.push(format!("{at}.region: {e}"));
        }
        match (self.transport, &self.http, &self.file) {
            (Transport::Http, Some(h), None) => p.extend(h.problems(&format!("{at}.http"), self.direction)),
            (Transport::File, None, Some(f)) => p.extend(f.problems(&format!("{at}.file"), self.direction)),
            (Transport::Http, _, _) => p.push(format!("{at}: transport http needs an [connectors.http] table and no file table")),
            (Transport::File, _, _) => p.push(format!("{at}: transport file needs a [connectors.file] table and no http table")),
        }
        p
    }
}

/// A directory option relative to the working directory.
pub type Dir = PathBuf;
