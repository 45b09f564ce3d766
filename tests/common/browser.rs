//! A real browser for page tests: headless Debian Chromium driven through its own chromedriver.
//!
//! Each [`Browser`] starts its own chromedriver on a free port with its own Chromium profile, so
//! tests in one binary run side by side. Chromium and chromedriver come from Debian's `chromium` and
//! `chromium-driver` packages (`/usr/bin/chromium`, `/usr/bin/chromedriver`; `.ci/run` installs them).
//!
//! The API is async (fantoccini). The [`Daemon`](super::Daemon) helper is blocking (reqwest's
//! blocking client, which must not be used on an async thread), so a page test is a plain `#[test]`:
//! start and seed the daemon outside, drive the browser in [`block_on`], and wrap the daemon's calls
//! made in there in [`blocking`]. A
//! [`Browser`] must not outlive the runtime that started it (its session task lives there).
//!
//! ```ignore
//! let d = Daemon::start();
//! block_on(async {
//!     let b = Browser::start().await;
//!     b.client.goto(&d.url("/")).await.unwrap();
//!     b.wait_text("h1", "Consents").await;
//!     b.screenshot("home").await;
//!     b.close().await;
//! });
//! ```

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The time zone [`Browser::start`] gives the page.
pub const DEFAULT_TZ: &str = "Europe/Berlin";

/// How long [`Browser::wait_text`] waits, and a sensible timeout for [`Browser::wait_for`].
pub const WAIT: Duration = Duration::from_secs(10);

/// How long chromedriver gets to accept connections.
const DRIVER_START: Duration = Duration::from_secs(10);

/// Runs a browser test's async part on a fresh runtime (one worker), where [`blocking`] may call the
/// blocking [`Daemon`](super::Daemon) helpers.
pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Runs blocking work (the [`Daemon`](super::Daemon) helpers' HTTP calls) inside [`block_on`].
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A headless Chromium session with its own chromedriver, profile and time zone.
pub struct Browser {
    pub client: Client,
    /// chromedriver's port on 127.0.0.1.
    pub port: u16,
    // Dropped in this order: the driver (killed with its browser), then the directory.
    driver: Driver,
    /// Holds the Chromium profile and chromedriver's log (`chromedriver.log`).
    dir: tempfile::TempDir,
}

/// chromedriver, killed with the Chromium it started when dropped: when a test fails, when
/// [`Browser::start`] fails half way, and after [`Browser::close`].
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // SIGKILL to the process group (chromedriver and its Chromium), then reap chromedriver.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Browser {
    /// A browser whose pages run in [`DEFAULT_TZ`].
    pub async fn start() -> Browser {
        Self::start_with_tz(DEFAULT_TZ).await
    }

    /// A browser whose pages run in time zone `tz` (an IANA name: TZ of chromedriver, which
    /// Chromium inherits).
    pub async fn start_with_tz(tz: &str) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        std::fs::create_dir(&profile).unwrap();
        // The port is free when we look, but another process may take it before chromedriver binds
        // it: then chromedriver exits at once and we try another.
        let mut tries = 0;
        let (driver, port) = loop {
            tries += 1;
            let port = free_port();
            let log = std::fs::File::create(dir.path().join("chromedriver.log")).unwrap();
            let mut cmd = Command::new(CHROMEDRIVER);
            cmd.arg(format!("--port={port}"))
                .env("TZ", tz)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // Its own process group, so Drop can kill Chromium with it: killing chromedriver alone
            // leaves the browser it started running.
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
            let mut driver = Driver(
                cmd.spawn()
                    .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e} (install Debian's chromium and chromium-driver)")),
            );
            match wait_listening(&mut driver, port, &dir).await {
                Ok(()) => break (driver, port),
                Err(why) => {
                    drop(driver);
                    let log = read_log(&dir);
                    // Only a chromedriver that exited (the port taken) is worth another try.
                    let again = tries < 3 && why.starts_with("exited");
                    assert!(again, "chromedriver on port {port}: {why}\n--- chromedriver.log ---\n{log}");
                }
            }
        };
        // Plain http: chromedriver is on 127.0.0.1.
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities(&profile))
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        match client {
            Ok(client) => Browser { client, port, driver, dir },
            Err(e) => {
                drop(driver);
                panic!("cannot open a Chromium session: {e}\n--- chromedriver.log ---\n{}", read_log(&dir));
            }
        }
    }

    /// The process group of chromedriver and the Chromium it started (chromedriver's pid).
    pub fn process_group(&self) -> u32 {
        self.driver.0.id()
    }

    /// Ends the session (Chromium quits) and stops chromedriver.
    pub async fn close(self) {
        if let Err(e) = self.client.close().await {
            eprintln!("closing the browser session: {e}");
        }
        // Dropping the rest of `self` stops chromedriver.
    }

    /// Saves a PNG of the viewport to `<target dir>/screenshots/<name>.png` and returns its path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name:?}: {e}"));
        let dir = target_dir().join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The first element matching `css` that is displayed, once there is one; panics after
    /// `timeout`, saying what it saw last.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        let start = Instant::now();
        loop {
            let seen = match self.client.find_all(Locator::Css(css)).await {
                Err(e) => format!("error: {e}"),
                Ok(els) if els.is_empty() => "no element matches".to_string(),
                Ok(els) => {
                    let n = els.len();
                    for el in els {
                        if let Ok(true) = el.is_displayed().await {
                            return el;
                        }
                    }
                    format!("{n} element(s) match, none displayed")
                }
            };
            if start.elapsed() >= timeout {
                panic!(
                    "wait_for({css:?}): nothing displayed after {timeout:?}; last seen: {seen}; {}",
                    self.location().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until no element matching `css` is displayed (a dialog closed); panics after [`WAIT`].
    pub async fn wait_hidden(&self, css: &str) {
        let start = Instant::now();
        loop {
            let mut shown = false;
            for el in self.client.find_all(Locator::Css(css)).await.unwrap_or_default() {
                shown |= el.is_displayed().await.unwrap_or(false);
            }
            if !shown {
                return;
            }
            if start.elapsed() >= WAIT {
                panic!("wait_hidden({css:?}): still displayed after {WAIT:?}; {}", self.location().await);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// [`Browser::wait_text_for`] with [`WAIT`].
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        self.wait_text_for(css, needle, WAIT).await
    }

    /// The text of the first element matching `css` whose text contains `needle`, once there is
    /// one; panics after `timeout`, with the texts it saw last.
    pub async fn wait_text_for(&self, css: &str, needle: &str, timeout: Duration) -> String {
        let start = Instant::now();
        loop {
            let seen = match self.client.find_all(Locator::Css(css)).await {
                Err(e) => format!("error: {e}"),
                Ok(els) if els.is_empty() => "no element matches".to_string(),
                Ok(els) => {
                    let mut texts = Vec::new();
                    for el in els {
                        match el.text().await {
                            Ok(t) if t.contains(needle) => return t,
                            Ok(t) => texts.push(format!("{:?}", clip(&t))),
                            Err(e) => texts.push(format!("<{e}>")),
                        }
                    }
                    format!("texts [{}]", texts.join(", "))
                }
            };
            if start.elapsed() >= timeout {
                panic!(
                    "wait_text({css:?}, {needle:?}): no such text after {timeout:?}; last seen: {seen}; {}",
                    self.location().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// "page URL (title)", for failure messages.
    pub async fn location(&self) -> String {
        let url = self.client.current_url().await.map_or_else(|e| format!("<{e}>"), |u| u.to_string());
        let title = self.client.title().await.unwrap_or_default();
        format!("page {url} ({title:?})")
    }
}

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(50);

/// Chromium's options. The `--disable-*` flags and the resolver rules keep Chromium off the
/// network (no update, sync or Google service look-ups): the tests only ever talk to 127.0.0.1, and
/// this machine reaches nothing else.
fn capabilities(profile: &Path) -> Map<String, Value> {
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,900",
        // Even so Chromium looks up Google's hosts (accounts, clients2, *.googleapis): resolve none
        // but the loopback the tests use.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    ];
    let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = Map::new();
    caps.insert("goog:chromeOptions".into(), json!({ "binary": CHROMIUM, "args": args }));
    caps
}

/// `$CARGO_TARGET_DIR` (at run time, else at build time), else the crate's `target`.
fn target_dir() -> PathBuf {
    let set = std::env::var_os("CARGO_TARGET_DIR").or_else(|| option_env!("CARGO_TARGET_DIR").map(Into::into));
    match set {
        Some(d) if !d.is_empty() => super::root().join(d),
        _ => super::root().join("target"),
    }
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls until chromedriver says it started on `port` and accepts connections there, it exits, or
/// [`DRIVER_START`] passes. Its own word, not just a connection, since another process may have
/// taken the port (chromedriver then exits).
async fn wait_listening(driver: &mut Driver, port: u16, dir: &tempfile::TempDir) -> Result<(), String> {
    let start = Instant::now();
    let started = format!("started successfully on port {port}");
    loop {
        if let Some(status) = driver.0.try_wait().unwrap() {
            return Err(format!("exited before listening ({status})"));
        }
        if read_log(dir).contains(&started) && TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if start.elapsed() > DRIVER_START {
            return Err(format!("not listening after {DRIVER_START:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn read_log(dir: &tempfile::TempDir) -> String {
    std::fs::read_to_string(dir.path().join("chromedriver.log")).unwrap_or_default()
}
