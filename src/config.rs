//! The settings file (`config/consentd.toml`, built in as the default), environment overrides, and
//! its checks: every problem is reported at once, before anything starts.

use crate::domain::{PhoneParser, Region};
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
    /// The region (ISO 3166 code, `DE`, `US`) whose national formats numbers without a country code
    /// are read in (`0151 2345678` in DE, `(512) 555-1236` in US). None: such numbers are refused. A
    /// mapping's `[format] region`, a record's region field, `import --region` and a connector's
    /// `region` can say otherwise for what they read.
    pub default_region: Option<String>,
    /// Before `default_region`: the country calling code of national numbers (49). Still read, as the
    /// main region of the code (49 is DE, 1 is US), with a warning.
    pub default_country_code: Option<u16>,
    /// Address of the admin HTTP API. Override: `CONSENTD_LISTEN`.
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub import: ImportConfig,
    #[serde(default)]
    pub http: HttpConfig,
    #[serde(default)]
    pub ivr: IvrConfig,
    /// Who may call the API, and with which rights.
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// External consent systems synced on a schedule.
    #[serde(default)]
    pub connectors: Vec<crate::connectors::ConnectorConfig>,
    /// Where the settings came from, for messages (the file, or the built-in config).
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest import body, MiB.
    pub max_import_mb: u64,
    /// Largest JSON request body, KiB.
    pub max_json_kb: u64,
    /// Most results one page of a search or listing returns.
    pub max_page: usize,
    /// A connection that has not sent a whole request head this long after opening (or after the
    /// head's first byte) is closed; a request body that sends nothing this long is cut.
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    /// A connection idle between requests this long is closed.
    pub idle_timeout_secs: u64,
    /// Most connections open at once (bounded by the open-file limit); see [`crate::http::server`].
    pub max_connections: usize,
    /// On stop, how long requests in hand may take before their connections are dropped.
    pub shutdown_grace_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_import_mb: 1024,
            max_json_kb: 256,
            max_page: 1000,
            header_timeout_secs: 10,
            body_timeout_secs: 10,
            idle_timeout_secs: 60,
            max_connections: 4096,
            shutdown_grace_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrConfig {
    /// Keys the caller presses to give consent.
    pub yes_digits: Vec<String>,
    /// Keys the caller presses to deny it.
    pub no_digits: Vec<String>,
}

impl Default for IvrConfig {
    fn default() -> Self {
        Self {
            yes_digits: vec!["1".into()],
            no_digits: vec!["2".into()],
        }
    }
}

/// An API token: a name (the actor in the audit trail), the secret, and its rights.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// The environment variable that holds the secret.
    pub token_env: Option<String>,
    /// Or the secret's SHA-256, hex (`printf %s "$SECRET" | sha256sum`).
    pub sha256: Option<String>,
    /// Any of view, create, modify, delete, manage, dpo.
    pub rights: Vec<String>,
}

/// The rights a token may carry.
pub const RIGHTS: [&str; 6] = ["view", "create", "modify", "delete", "manage", "dpo"];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `sled` (the embedded default) or `postgres` (several daemons on one database; see `url`).
    /// Override: `CONSENTD_STORE_BACKEND`.
    pub backend: Backend,
    /// The PostgreSQL database (`postgresql://…` or libpq's `key=value` pairs). Override:
    /// `CONSENTD_DATABASE_URL`.
    pub url: Option<String>,
    /// Connections to PostgreSQL each daemon keeps at most (1 to 1000).
    pub pool_size: usize,
    /// With `sslmode=require` in `url`: the CA certificates (PEM) the database's certificate must
    /// chain to; none: the public roots. Override: `CONSENTD_DATABASE_CA_FILE`.
    pub tls_ca_file: Option<PathBuf>,
    /// sled's page cache, MiB: most of the store's memory (about 1.5 times this).
    pub cache_mb: u64,
    /// Largest page of a paged map, bytes (512 to 1048576). Above 7168, sled nodes of 17 pages pass
    /// the 128 KiB that sled writes as blobs its cache does not count, and memory grows with the store.
    pub page_bytes: usize,
    /// A purge is physically complete (no byte of the number left in any file of the store) within
    /// this many hours (1 to 720): the daemon compacts the store by then.
    pub erase_within_hours: u64,
    /// Seconds after a purge the compaction starts (purges in a burst share one), at most
    /// `erase_within_hours` after the first of them.
    pub compact_after_purge_secs: u64,
    /// The store is compacted when its files pass this many times what a fresh copy of its live data
    /// takes (1.2 to 100).
    pub compact_ratio: f64,
    /// Minutes between checks of the store's size against its live data (1 to 10080).
    pub compact_check_minutes: u64,
    /// Seconds a connector's lease lasts unless renewed (3 to 3600; renewed every third of it while a
    /// run goes on): with several daemons on PostgreSQL, a daemon killed mid-run lets another take the
    /// connector's next tick this long after.
    pub lease_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        let d = StoreOptions::default();
        Self {
            backend: Backend::Sled,
            url: None,
            pool_size: 16,
            tls_ca_file: None,
            cache_mb: d.cache_bytes >> 20,
            page_bytes: d.page_bytes,
            erase_within_hours: 24,
            compact_after_purge_secs: 60,
            compact_ratio: 1.5,
            compact_check_minutes: 60,
            lease_secs: 30,
        }
    }
}

/// Where the consents are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sled,
    Postgres,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImportConfig {
    /// Consents decided and written together (1 to 2^30): about 36 bytes of memory each. Each chunk
    /// rewrites every page it touches, so larger chunks make large imports faster.
    pub chunk_records: usize,
    /// Largest value of one field, in bytes: a record with a larger one is refused (with where and
    /// why) rather than carried through the import and its report.
    pub max_field_bytes: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            chunk_records: 1 << 19,
            max_field_bytes: 64 << 10,
        }
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
        config.apply_env(|k| std::env::var(k).ok()).map_err(|e| ConfigErrors(vec![e]))?;
        config.check(&name)?;
        config.source = name;
        Ok(config)
    }

    fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), String> {
        if let Some(v) = var("CONSENTD_DATA_DIR") {
            self.data_dir = v.into();
        }
        if let Some(v) = var("CONSENTD_MAPPINGS_DIR") {
            self.mappings_dir = v.into();
        }
        if let Some(v) = var("CONSENTD_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = var("CONSENTD_DATABASE_URL") {
            self.store.url = Some(v);
        }
        if let Some(v) = var("CONSENTD_DATABASE_CA_FILE") {
            self.store.tls_ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = var("CONSENTD_STORE_BACKEND") {
            self.store.backend = match v.as_str() {
                "sled" => Backend::Sled,
                "postgres" => Backend::Postgres,
                _ => return Err(format!("CONSENTD_STORE_BACKEND: {v:?} is neither sled nor postgres")),
            };
        }
        Ok(())
    }

    fn check(&self, name: &str) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        if let Err(e) = self.region() {
            problems.push(format!("{name}: {e}"));
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
        if !(1..=1000).contains(&self.store.pool_size) {
            problems.push(format!("{name}: store.pool_size: {} is outside 1 to 1000", self.store.pool_size));
        }
        if self.store.backend == Backend::Postgres && self.store.url.is_none() {
            problems.push(format!("{name}: store.backend is postgres: set store.url or CONSENTD_DATABASE_URL"));
        }
        if self.store.cache_mb == 0 {
            problems.push(format!("{name}: store.cache_mb: must be at least 1"));
        }
        if !(1..=720).contains(&self.store.erase_within_hours) {
            problems.push(format!(
                "{name}: store.erase_within_hours: {} is outside 1 to 720",
                self.store.erase_within_hours
            ));
        }
        if self.store.compact_after_purge_secs > self.store.erase_within_hours * 3600 {
            problems.push(format!(
                "{name}: store.compact_after_purge_secs: {} is longer than erase_within_hours allows",
                self.store.compact_after_purge_secs
            ));
        }
        if !(1.2..=100.0).contains(&self.store.compact_ratio) {
            problems.push(format!(
                "{name}: store.compact_ratio: {} is outside 1.2 to 100",
                self.store.compact_ratio
            ));
        }
        if !(1..=10080).contains(&self.store.compact_check_minutes) {
            problems.push(format!(
                "{name}: store.compact_check_minutes: {} is outside 1 to 10080",
                self.store.compact_check_minutes
            ));
        }
        if !(3..=3600).contains(&self.store.lease_secs) {
            problems.push(format!("{name}: store.lease_secs: {} is outside 3 to 3600", self.store.lease_secs));
        }
        if !(1..=1 << 30).contains(&self.import.chunk_records) {
            problems.push(format!(
                "{name}: import.chunk_records: {} is outside 1 to 1073741824",
                self.import.chunk_records
            ));
        }
        if self.import.max_field_bytes < 64 {
            problems.push(format!(
                "{name}: import.max_field_bytes: {} is less than 64 (a timestamp or a phone number would not fit)",
                self.import.max_field_bytes
            ));
        }
        if self.http.max_import_mb == 0 || self.http.max_json_kb == 0 || self.http.max_page == 0 {
            problems.push(format!("{name}: http: max_import_mb, max_json_kb and max_page must be at least 1"));
        }
        let h = &self.http;
        if h.header_timeout_secs == 0 || h.body_timeout_secs == 0 || h.idle_timeout_secs == 0 || h.max_connections == 0 {
            problems.push(format!(
                "{name}: http: header_timeout_secs, body_timeout_secs, idle_timeout_secs and max_connections must be at least 1"
            ));
        }
        let ivr = self.ivr.yes_digits.iter().chain(&self.ivr.no_digits);
        for d in ivr.clone() {
            if d.len() != 1 || !d.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#') {
                problems.push(format!("{name}: ivr: {d:?} is not a key of a phone keypad (0-9, *, #)"));
            }
        }
        if let Some(d) = self.ivr.yes_digits.iter().find(|d| self.ivr.no_digits.contains(d)) {
            problems.push(format!("{name}: ivr: {d:?} is both a yes and a no digit"));
        }
        let mut names = std::collections::HashSet::new();
        // Two tokens with one secret: the later would silently win, with its rights.
        let mut secrets: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let at = format!("{name}: tokens[{i}]");
            let hash = match (&t.token_env, &t.sha256) {
                (Some(var), None) => std::env::var(var).ok().filter(|v| !v.is_empty()).map(|v| {
                    use sha2::Digest;
                    hex::encode(sha2::Sha256::digest(v.as_bytes()))
                }),
                (None, Some(h)) => Some(h.to_ascii_lowercase()),
                _ => None,
            };
            if let Some(h) = hash {
                if let Some(j) = secrets.insert(h, i) {
                    problems.push(format!(
                        "{at}: the same secret as tokens[{j}] ({:?}); each token needs a secret of its own",
                        self.tokens[j].name
                    ));
                }
            }
            if t.name.is_empty() || t.name.len() > 100 || t.name.chars().any(|c| c.is_control()) {
                problems.push(format!("{at}.name: must be 1 to 100 printable characters"));
            } else if !names.insert(&t.name) {
                problems.push(format!("{at}.name: {:?} is used by another token", t.name));
            }
            match (&t.token_env, &t.sha256) {
                (Some(_), None) => {}
                (None, Some(h)) if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) => {}
                (None, Some(_)) => problems.push(format!("{at}.sha256: must be 64 hex digits")),
                _ => problems.push(format!("{at}: give exactly one of token_env or sha256")),
            }
            if t.rights.is_empty() {
                problems.push(format!("{at}.rights: give at least one of {}", RIGHTS.join(", ")));
            }
            for r in &t.rights {
                if !RIGHTS.contains(&r.as_str()) {
                    problems.push(format!("{at}.rights: unknown right {r:?}, expected one of {}", RIGHTS.join(", ")));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Every problem of the `[[connectors]]`: what the daemon, `sync` and `check-config` need to be
    /// right. Other commands (search, import, export, `--server` ones) do not look at connectors, so a
    /// broken one does not stop them.
    pub fn check_connectors(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        let mut connector_names = std::collections::HashSet::new();
        for (i, c) in self.connectors.iter().enumerate() {
            let at = format!("{}: connectors[{i}]", self.source);
            problems.extend(c.problems(&at, &self.mappings_dir));
            if !connector_names.insert(&c.name) {
                problems.push(format!("{at}.name: {:?} is used by another connector", c.name));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Opens the store the config names: sled in `data_dir`, or PostgreSQL at `store.url` (migrated).
    pub fn open_store(&self) -> Result<crate::store::Store, crate::store::StoreError> {
        match self.store.backend {
            Backend::Sled => crate::store::Store::open(&self.data_dir, &self.store_options()),
            Backend::Postgres => {
                let url = self.store.url.as_deref().ok_or(crate::store::StoreError::Unsupported(
                    "store.backend is postgres but no store.url (or CONSENTD_DATABASE_URL) is set",
                ))?;
                crate::store::Store::open_postgres(url, &self.pg_options(self.store.pool_size))
            }
        }
    }

    /// How to connect to PostgreSQL, with at most `pool_size` connections.
    pub fn pg_options(&self, pool_size: usize) -> crate::store::postgres::PgOptions {
        crate::store::postgres::PgOptions {
            pool_size,
            tls_ca_file: self.store.tls_ca_file.clone(),
        }
    }

    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            cache_bytes: self.store.cache_mb << 20,
            page_bytes: self.store.page_bytes,
        }
    }

    /// Problems that do not stop the daemon: tokens whose variable is not set (they are disabled), and
    /// settings that have a newer name.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .tokens
            .iter()
            .filter_map(|t| {
                let var = t.token_env.as_ref()?;
                match std::env::var(var) {
                    Ok(v) if !v.is_empty() => None,
                    _ => Some(format!("token {:?} is disabled: the variable {var} is not set", t.name)),
                }
            })
            .collect();
        if let (Some(cc), None, Ok(Some(r))) = (self.default_country_code, &self.default_region, self.region()) {
            w.push(format!(
                "default_country_code = {cc} is read as default_region = \"{r}\" (its main region); write that instead"
            ));
        }
        w
    }

    /// The default region: `default_region`, else the main region of `default_country_code`.
    pub fn region(&self) -> Result<Option<Region>, String> {
        let from_code = match self.default_country_code {
            None => None,
            Some(cc) => {
                Some(Region::for_calling_code(cc).ok_or_else(|| format!("default_country_code: {cc} is not a country calling code"))?)
            }
        };
        match (&self.default_region, from_code) {
            (None, r) => Ok(r),
            (Some(name), r) => {
                let region = Region::parse(name).map_err(|e| format!("default_region: {e}"))?;
                match r {
                    Some(other) if other.calling_code() != region.calling_code() => Err(format!(
                        "default_region {region} (+{}) and default_country_code {} disagree; keep default_region",
                        region.calling_code(),
                        other.calling_code()
                    )),
                    _ => Ok(Some(region)),
                }
            }
        }
    }

    pub fn phone_parser(&self) -> PhoneParser {
        PhoneParser::new(self.region().ok().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_loads() {
        let c: Config = toml::from_str(DEFAULT).unwrap();
        c.check("default").unwrap();
        assert_eq!(c.phone_parser().region().map(|r| r.to_string()).as_deref(), Some("DE"));
    }

    #[test]
    fn a_country_code_is_read_as_its_main_region() {
        let c: Config = toml::from_str("default_country_code = 1\n").unwrap();
        c.check("x.toml").unwrap();
        assert_eq!(c.region().unwrap().map(|r| r.to_string()).as_deref(), Some("US"));
        assert!(
            c.warnings().iter().any(|w| w.contains("default_region = \"US\"")),
            "{:?}",
            c.warnings()
        );
        let both: Config = toml::from_str("default_country_code = 44\ndefault_region = \"DE\"\n").unwrap();
        assert!(both.check("x.toml").unwrap_err().0[0].contains("disagree"));
        let bad: Config = toml::from_str("default_region = \"XX\"\n").unwrap();
        assert!(bad.check("x.toml").unwrap_err().0[0].starts_with("x.toml: default_region: \"XX\" is not a region"));
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let c: Config = toml::from_str(
            "listen = \"nowhere\"\ndefault_country_code = 0\n[store]\npage_bytes = 3\n[ivr]\nyes_digits = [\"1\", \"x\"]\n\
             [[tokens]]\nname = \"a\"\nrights = [\"fly\"]\n[[tokens]]\nname = \"a\"\nsha256 = \"00\"\nrights = [\"view\"]\n",
        )
        .unwrap();
        let e = c.check("x.toml").unwrap_err();
        assert_eq!(e.0.len(), 8, "{e}");
        assert!(e.0.iter().all(|p| p.starts_with("x.toml: ")));
    }

    #[test]
    fn two_tokens_with_one_secret_are_refused() {
        std::env::set_var("CONSENTD_TEST_SECRET_5c1", "same-secret");
        let hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(b"same-secret"))
        };
        let c: Config = toml::from_str(&format!(
            "[[tokens]]\nname = \"viewer\"\ntoken_env = \"CONSENTD_TEST_SECRET_5c1\"\nrights = [\"view\"]\n\
             [[tokens]]\nname = \"dpo\"\nsha256 = \"{}\"\nrights = [\"view\", \"dpo\"]\n",
            hash.to_uppercase()
        ))
        .unwrap();
        let e = c.check("x.toml").unwrap_err();
        assert_eq!(
            e.0,
            ["x.toml: tokens[1]: the same secret as tokens[0] (\"viewer\"); each token needs a secret of its own"]
        );
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut c: Config = toml::from_str(DEFAULT).unwrap();
        c.apply_env(|k| (k == "CONSENTD_LISTEN").then(|| "127.0.0.1:0".to_string()))
            .unwrap();
        assert_eq!(c.listen, "127.0.0.1:0");
    }
}
