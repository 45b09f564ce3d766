//! The file transport: pulls files dropped into a directory (matching a glob), and pushes by writing a
//! new file of changes to a directory (temporary name, then renamed, so readers never see half a file).

use super::Direction;
use serde::Deserialize;
use std::path::PathBuf;

/// `[connectors.file]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// Pull: the directory files are dropped into; imported files move to `processed/` beside them, or
    /// to `failed/` with a report.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Pull: which files of `dir` to take (default `*`).
    #[serde(default = "any")]
    pub glob: String,
    /// Push: the directory changes are written to.
    #[serde(default)]
    pub out_dir: Option<PathBuf>,
    /// Push: the file name, with `{time}` (UTC, `20250101T120000Z`) and `{seq}` (last change sent).
    #[serde(default = "default_name")]
    pub file_name: String,
}

fn any() -> String {
    "*".into()
}

fn default_name() -> String {
    "consents-{time}-{seq}".into()
}

impl FileOptions {
    pub fn problems(&self, at: &str, direction: Direction) -> Vec<String> {
        let mut p = Vec::new();
        if direction.pulls() && self.dir.is_none() {
            p.push(format!("{at}.dir: a pull connector needs the directory files are dropped into"));
        }
        if direction.pushes() && self.out_dir.is_none() {
            p.push(format!("{at}.out_dir: a push connector needs the directory to write to"));
        }
        if let Err(e) = glob::Pattern::new(&self.glob) {
            p.push(format!("{at}.glob: {:?} is not a pattern: {e}", self.glob));
        }
        if self.file_name.contains('/') || self.file_name.is_empty() {
            p.push(format!("{at}.file_name: {:?} must be a file name, not a path", self.file_name));
        }
        p
    }
}
