//! A private PostgreSQL cluster for the tests that need one: Debian's `postgresql` package (installed
//! by `.ci/run`), `initdb` into a temp dir, listening on a Unix socket in that dir only (no TCP port
//! to collide with), stopped when dropped. As root the server runs as the `postgres` user, since
//! PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub struct Postgres {
    /// The cluster's data and socket, owned by the server's user.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Port number in the socket's name (`.s.PGSQL.<port>`); TCP on it only for [`Postgres::start_tls`].
    pub port: u16,
}

/// The server's binaries: `CONSENTD_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CONSENTD_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|e| {
                let e = e.ok()?;
                let v = e.file_name().to_str()?.parse().ok()?;
                let bin = e.path().join("bin");
                bin.join("initdb").exists().then_some((v, bin))
            })
            .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .expect("PostgreSQL's server is not installed (.ci/run installs Debian's postgresql; or set CONSENTD_PG_BIN)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_on(false)
    }

    /// A server that also listens on 127.0.0.1 (a free port), taking TCP connections over TLS only
    /// (`hostssl`), with a certificate for `localhost` signed by a CA of its own: the CA's PEM file is
    /// [`Postgres::ca_file`]. Made with the `openssl` command.
    pub fn start_tls() -> Postgres {
        Self::start_on(true)
    }

    /// The CA that signed a [`Postgres::start_tls`] server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A URL for database `db` over TCP to 127.0.0.1 as `localhost` (the certificate's name), with
    /// `sslmode`.
    pub fn tcp_url(&self, db: &str, sslmode: &str) -> String {
        format!("postgresql://consentd@localhost:{}/{db}?sslmode={sslmode}", self.port)
    }

    fn start_on(tls: bool) -> Postgres {
        let bin = bin_dir();
        let dir = tempfile::Builder::new().prefix("consentd-pg").tempdir().unwrap();
        let root = is_root();
        if root {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown the cluster's dir to postgres");
        }
        // The port only names the socket, which is in the cluster's own dir: clusters cannot collide.
        // Listening on TCP too, a free one.
        let port = if tls {
            std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
        } else {
            5432
        };
        let pg = Postgres { dir, bin, port };
        let data = pg.data();
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "consentd",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let mut opts = format!(
            "-c unix_socket_directories='{}' -p {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            pg.dir.path().display(),
            pg.port
        );
        if tls {
            pg.make_certificates();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
            )
            .unwrap();
            opts.push_str(" -c listen_addresses='127.0.0.1' -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        } else {
            opts.push_str(" -c listen_addresses=''");
        }
        let log = pg.dir.path().join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "start",
            ],
        );
        pg.watch();
        pg
    }

    /// Stops the server and removes its dir once this test process is gone, however it ended (a
    /// cluster kept in a static is never dropped; a test run may be killed).
    // The watcher outlives this process by design; it is never waited for.
    #[allow(clippy::zombie_processes)]
    fn watch(&self) {
        let stop = format!(
            "while [ -d /proc/{pid} ]; do sleep 1; done; {pg_ctl} -D '{data}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
            pid = std::process::id(),
            pg_ctl = self.bin.join("pg_ctl").display(),
            data = self.data().display(),
            dir = self.dir.path().display(),
        );
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            Command::new("env")
        };
        c.args(["sh", "-c", &stop])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
    }

    /// A CA (in the cluster's dir) and a certificate for localhost it signed (in the data dir, owned
    /// by the server's user).
    fn make_certificates(&self) {
        let (dir, data) = (self.dir.path(), self.data());
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
            assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let days = ["-days", "2"];
        openssl(
            &[
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "rsa:2048",
                    "-nodes",
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.crt",
                    "-subj",
                    "/CN=consentd test CA",
                ][..],
                &days,
            ]
            .concat(),
        );
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n").unwrap();
        openssl(
            &[
                &[
                    "x509",
                    "-req",
                    "-in",
                    "server.csr",
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    "server.crt",
                    "-extfile",
                    "san.ext",
                ][..],
                &days,
            ]
            .concat(),
        );
        for f in ["server.crt", "server.key"] {
            std::fs::copy(dir.join(f), data.join(f)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(dir.join("ca.crt"), std::fs::Permissions::from_mode(0o644)).unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(data.join("server.crt"))
                .arg(data.join("server.key"))
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// One of the server's programs, to run as the server's user.
    fn program(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        }
    }

    /// Runs one of the server's programs; panics with its output if it fails.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self
            .program(program)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(
            out.status.success(),
            "{program} failed: {}{}\nserver log:\n{log}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The socket's directory.
    pub fn host(&self) -> &Path {
        self.dir.path()
    }

    /// A connection URL for database `db` (the socket directory as `host`).
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgresql://consentd@localhost/{db}?host={}&port={}",
            self.dir.path().display(),
            self.port
        )
    }

    /// Makes a new, empty database and gives its URL.
    pub fn create_database(&self, db: &str) -> String {
        self.psql("postgres", &format!("CREATE DATABASE \"{db}\""));
        self.url(db)
    }

    /// Runs SQL through `psql` (PostgreSQL's own client, not ours) and gives its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", "consentd", "-d", db, "-c", sql])
            .output()
            .expect("psql (Debian's postgresql-client) runs");
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim_end().to_string()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .program("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A new, empty database on a server shared by this test process (started at first use, stopped
/// when the process ends).
pub fn database() -> String {
    static SERVER: std::sync::OnceLock<Postgres> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    SERVER.get_or_init(Postgres::start).create_database(&format!("test{n}"))
}
