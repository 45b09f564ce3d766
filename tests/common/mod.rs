//! What the black-box tests share: a real daemon on port 0 with its store and config in a temp dir,
//! and a real HTTP client; `browser` adds a real browser.
#![allow(dead_code)]

pub mod browser;
pub mod pg;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_consentd");

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Tokens of the test config: name, secret, rights.
pub const TOKENS: &[(&str, &str, &[&str])] = &[
    ("admin", "s-admin", &["view", "create", "modify", "delete", "manage"]),
    ("viewer", "s-viewer", &["view"]),
    ("creator", "s-creator", &["create"]),
    ("importer", "s-importer", &["manage"]),
    ("ivr", "s-ivr", &["create", "modify"]),
    ("dpo-office", "s-dpo", &["view", "dpo"]),
];

/// A running daemon with its own store and config.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub base: String,
    pub http: Client,
    /// The mappings directory (default: the shipped mappings).
    pub mappings: PathBuf,
    /// `CONSENTD_LOG` (default `warn`; `None`: unset, the daemon's own default).
    pub log: Option<&'static str>,
    /// More environment for the daemon (taken at the next [`Daemon::spawn`]).
    pub env: Vec<(&'static str, &'static str)>,
    /// The daemon's PostgreSQL database, when the tests run on that backend.
    pub database: Option<String>,
}

/// Whether the black-box tests run the daemon on PostgreSQL (`CONSENTD_TEST_BACKEND=postgres`: each
/// daemon gets a database of its own on one private server) rather than on sled.
pub fn on_postgres() -> bool {
    std::env::var("CONSENTD_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

impl Daemon {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// Starts with extra config text appended to the test config (`{dir}` is the temp dir).
    pub fn start_with(extra: &str) -> Self {
        Self::start_with_mappings(extra, &root().join("mappings"))
    }

    /// As [`Daemon::start_with`], with mapping files from `mappings`.
    pub fn start_with_mappings(extra: &str, mappings: &Path) -> Self {
        Self::start_logging(extra, mappings, Some("warn"))
    }

    /// As [`Daemon::start_with_mappings`], logging at `log` (`None`: the daemon's default level).
    pub fn start_logging(extra: &str, mappings: &Path, log: Option<&'static str>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from("default_country_code = 49\n");
        config.push_str(&extra.replace("{dir}", dir.path().to_str().unwrap()));
        for (name, secret, rights) in TOKENS {
            // Half the tokens by hash, half from the environment, so both ways are exercised.
            let secret_line = if name.len() % 2 == 0 {
                use sha2::Digest;
                format!("sha256 = \"{}\"", hex::encode(sha2::Sha256::digest(secret.as_bytes())))
            } else {
                format!("token_env = \"TEST_TOKEN_{}\"", name.to_uppercase().replace('-', "_"))
            };
            config.push_str(&format!("\n[[tokens]]\nname = \"{name}\"\n{secret_line}\nrights = {rights:?}\n"));
        }
        std::fs::write(dir.path().join("consentd.toml"), config).unwrap();
        let mut d = Daemon {
            dir,
            child: None,
            base: String::new(),
            // No idle connections kept: a connection the server closed (a body refused early) is never reused.
            http: Client::builder().pool_max_idle_per_host(0).build().unwrap(),
            mappings: mappings.to_path_buf(),
            log,
            env: Vec::new(),
            database: on_postgres().then(pg::database),
        };
        d.spawn();
        d
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.dir.path().join("consentd.toml"))
            .env("CONSENTD_DATA_DIR", self.dir.path().join("data"))
            .env("CONSENTD_MAPPINGS_DIR", &self.mappings)
            .env_remove("CONSENTD_LOG");
        if let Some(level) = self.log {
            c.env("CONSENTD_LOG", level);
        }
        c.envs(self.env.iter().copied());
        if let Some(url) = &self.database {
            c.env("CONSENTD_STORE_BACKEND", "postgres").env("CONSENTD_DATABASE_URL", url);
        }
        for (name, secret, _) in TOKENS {
            c.env(format!("TEST_TOKEN_{}", name.to_uppercase().replace('-', "_")), secret);
        }
        c
    }

    pub fn spawn(&mut self) {
        let mut child = self
            .command()
            .arg("serve")
            .env("CONSENTD_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("{line:?}"));
        self.base = format!("http://{addr}");
        self.child = Some(child);
    }

    /// SIGTERM, and wait for a clean exit; returns what the daemon logged.
    pub fn stop(&mut self) -> String {
        let child = self.child.take().unwrap();
        Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "the daemon exits 0 on SIGTERM");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn as_(&self, token: &str, method: reqwest::Method, path: &str) -> RequestBuilder {
        let secret = TOKENS.iter().find(|t| t.0 == token).map_or(token, |t| t.1);
        self.http.request(method, self.url(path)).bearer_auth(secret)
    }

    pub fn get(&self, token: &str, path: &str) -> Response {
        self.as_(token, reqwest::Method::GET, path).send().unwrap()
    }

    pub fn post(&self, token: &str, path: &str, body: Value) -> Response {
        self.as_(token, reqwest::Method::POST, path).json(&body).send().unwrap()
    }

    pub fn ok(&self, r: Response) -> Value {
        let status = r.status();
        let body = r.text().unwrap();
        assert!(status.is_success(), "{status}: {body}");
        serde_json::from_str(&body).unwrap_or(Value::Null)
    }

    pub fn search(&self, query: &str) -> Vec<Value> {
        let v = self.ok(self.get("admin", &format!("/v1/consents?{query}&limit=1000")));
        v["items"].as_array().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Asserts an error answer: status, and the field it names.
pub fn refused(r: Response, status: StatusCode, field: Option<&str>) -> Value {
    let got = r.status();
    let body: Value = r.json().unwrap();
    assert_eq!(got, status, "{body}");
    assert!(body["error"].is_string() && body["message"].is_string(), "{body}");
    if let Some(f) = field {
        assert_eq!(body["field"], f, "{body}");
    }
    body
}

pub fn fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures").join(name)
}

/// A store in a temp dir and a way to run the command line against it (the shipped mappings, the
/// built-in config).
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(["--data-dir", self.path("data").to_str().unwrap()])
            .args(args)
            .env("CONSENTD_MAPPINGS_DIR", root().join("mappings"))
            .env("CONSENTD_LOG", "warn")
            .current_dir(self.dir.path());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "consentd {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `import --json` with `args`: the report and the exit status.
    pub fn import_json(&self, args: &[&str]) -> (Value, i32) {
        let mut all = vec!["import", "--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (report, out.status.code().unwrap())
    }

    /// Everything in the store, as the search JSON gives it (created from 1970 on).
    pub fn all(&self) -> Vec<Value> {
        let out = self.ok(&["search", "--created-from", "1970-01-01", "--limit", "100000", "--json"]);
        serde_json::from_str(&out).unwrap()
    }
}

/// Serves `app` (a test's remote system) on 127.0.0.1 from a thread of its own; its base URL.
pub fn serve(app: axum::Router) -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}
