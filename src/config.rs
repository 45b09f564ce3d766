//! The settings file (`config/consentd.toml`, built in as the default), environment overrides, and
//! its checks: every problem is reported at once, before anything starts.

use crate::domain::PhoneParser;
use crate::store::StoreOptions;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The default configuration, as shipped in `config/consentd.toml`.
pub const DEFAULT: &str = include_str!("../config/consentd.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the sled store lives. Override: `CONSENTD_DATA_DIR`, `--data-dir`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Where mapping files (`NAME.toml`) are found. Override: `CONSENTD_MAPPINGS_DIR`.
    #[serde(default = "default_mappings_dir")]
    pub mappings_dir: PathBuf,
    /// Country code used for national numbers (one leading 0). None: national numbers are refused.
    pub default_country_code: Option<u16>,
    /// Address of the admin HTTP API. Override: `CONSENTD_LISTEN`.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub import: ImportConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// sled's page cache, MiB: most of the store's memory (about 1.5 times this).
    pub cache_mb: u64,
    /// Largest page of a paged map, bytes (512 to 1048576). Above 7168, sled nodes of 17 pages pass
    /// the 128 KiB that sled writes as blobs its cache does not count, and memory grows with the store.
    pub page_bytes: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let d = StoreOptions::default();
        Self {
            cache_mb: d.cache_bytes >> 20,
            page_bytes: d.page_bytes,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// Consents decided and written together (1 to 2^30): about 36 bytes of memory each. Each chunk
    /// rewrites every page it touches, so larger chunks make large imports faster.
    pub chunk_records: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self { chunk_records: 1 << 19 }
    }
}

fn default_data_dir() -> PathBuf {
    "./data".into()
}
fn default_mappings_dir() -> PathBuf {
    "./mappings".into()
}
fn default_listen() -> String {
    "127.0.0.1:8080".into()
}

/// Every problem found in a configuration, each naming the file and key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// Reads `file`, or the built-in default when none is given; then applies environment overrides
    /// and checks everything.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigErrors> {
        let (name, text) = match file {
            Some(f) => (
                f.display().to_string(),
                std::fs::read_to_string(f).map_err(|e| ConfigErrors(vec![format!("{}: cannot read: {e}", f.display())]))?,
            ),
            None => ("<built-in config/consentd.toml>".to_string(), DEFAULT.to_string()),
        };
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigErrors(vec![format!("{name}: {}", e.to_string().trim_end())]))?;
        config.apply_env(|k| std::env::var(k).ok());
        config.check(&name)?;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        if let Some(v) = var("CONSENTD_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("CONSENTD_MAPPINGS_DIR") {
            self.mappings_dir = v.into();
        }
        if let Some(v) = var("CONSENTD_LISTEN") {
            self.listen = v;
        }
    }

    fn check(&self, name: &str) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        if let Some(cc) = self.default_country_code {
            if !(1..=999).contains(&cc) {
                problems.push(format!("{name}: default_country_code: {cc} is not a country code (1 to 999)"));
            }
        }
        if self.listen.parse::<SocketAddr>().is_err() {
            problems.push(format!(
                "{name}: listen: {:?} is not an address:port such as 127.0.0.1:8080",
                self.listen
            ));
        }
        if !(512..=1 << 20).contains(&self.store.page_bytes) {
            problems.push(format!(
                "{name}: store.page_bytes: {} is outside 512 to 1048576",
                self.store.page_bytes
            ));
        }
        if self.store.cache_mb == 0 {
            problems.push(format!("{name}: store.cache_mb: must be at least 1"));
        }
        if !(1..=1 << 30).contains(&self.import.chunk_records) {
            problems.push(format!(
                "{name}: import.chunk_records: {} is outside 1 to 1073741824",
                self.import.chunk_records
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            cache_bytes: self.store.cache_mb << 20,
            page_bytes: self.store.page_bytes,
        }
    }

    pub fn phone_parser(&self) -> PhoneParser {
        PhoneParser::new(self.default_country_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_loads() {
        let c: Config = toml::from_str(DEFAULT).unwrap();
        c.check("default").unwrap();
        assert_eq!(c.default_country_code, Some(49));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c: Config = toml::from_str("listen = \"nowhere\"\ndefault_country_code = 0\n[store]\npage_bytes = 3\n").unwrap();
        let e = c.check("x.toml").unwrap_err();
        assert_eq!(e.0.len(), 3, "{e}");
        assert!(e.0.iter().all(|p| p.starts_with("x.toml: ")));
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c: Config = toml::from_str(DEFAULT).unwrap();
        c.apply_env(|k| (k == "CONSENTD_LISTEN").then(|| "127.0.0.1:0".to_string()));
        assert_eq!(c.listen, "127.0.0.1:0");
    }
}
