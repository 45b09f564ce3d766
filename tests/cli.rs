//! Black-box tests of the `consentd` binary: real files, a real store in a temp dir, the shipped
//! mappings, and the daemon started for real.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use common::{fixture, root, Env};

fn without_source(v: &[serde_json::Value]) -> Vec<serde_json::Value> {
    v.iter()
        .map(|c| {
            let mut c = c.clone();
            c.as_object_mut().unwrap().remove("source");
            c
        })
        .collect()
}

#[test]
fn a_real_session_import_search_flip_export() {
    let env = Env::new();
    let csv = fixture("generic.csv");
    let (report, code) = env.import_json(&["--mapping", "generic-csv", csv.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(
        (report["read"].as_u64(), report["inserted"].as_u64(), report["rejected"].as_u64()),
        (Some(20), Some(20), Some(0))
    );
    let all = env.all();
    assert_eq!(all.len(), 20);
    assert!(
        all.windows(2).all(|w| w[0]["created_at"].as_str() <= w[1]["created_at"].as_str()),
        "creation order"
    );
    assert_eq!(all[0]["source"], "import:generic-csv");

    // Re-importing the same file changes nothing.
    let (report, _) = env.import_json(&["--mapping", "generic-csv", csv.to_str().unwrap()]);
    assert_eq!((report["inserted"].as_u64(), report["unchanged"].as_u64()), (Some(0), Some(20)));

    // Search by trailing digits and by number, as written by a person.
    let number = all[3]["number"].as_str().unwrap().to_string();
    let digits = &number[number.len() - 4..];
    let found: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["search", "--digits", digits, "--json"])).unwrap();
    assert!(found.iter().any(|c| c["number"] == number.as_str()));
    assert!(found.iter().all(|c| c["number"].as_str().unwrap().ends_with(digits)));
    let spaced = format!("{} {} {}", &number[..3], &number[3..6], &number[6..]);
    let found: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["search", "--number", &spaced, "--json"])).unwrap();
    assert_eq!(found.len(), 1);

    // Flip it; the audit trail shows both changes.
    let before = found[0]["consent"].as_bool().unwrap();
    env.ok(&["toggle", &number]);
    let found: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["search", "--number", &number, "--json"])).unwrap();
    assert_eq!(found[0]["consent"].as_bool(), Some(!before));
    assert_eq!(found[0]["source"], "cli");
    let history: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["history", &number, "--json"])).unwrap();
    assert_eq!(history.len(), 2);
    assert!(history[1]["actor"].as_str().unwrap().starts_with("cli:"));

    // Export and import into a fresh store: the same consents.
    let exported = env.path("export.csv");
    env.ok(&["export", "--mapping", "generic-csv", "--output", exported.to_str().unwrap()]);
    let other = Env::new();
    let (report, code) = other.import_json(&["--mapping", "generic-csv", exported.to_str().unwrap()]);
    assert_eq!((code, report["inserted"].as_u64()), (0, Some(20)));
    assert_eq!(without_source(&other.all()), without_source(&env.all()));

    // Export by criteria: only denied consents.
    let denied = env.ok(&["export", "--mapping", "generic-csv", "--consent", "false"]);
    let expected = env.all().iter().filter(|c| c["consent"] == false).count();
    assert_eq!(denied.lines().count(), expected + 1, "{denied}");
}

#[test]
fn every_shipped_mapping_imports_its_fixture_and_round_trips() {
    for (mapping, file, count) in [
        ("generic-csv", "generic.csv", 20),
        ("generic-ndjson", "generic.ndjson", 20),
        ("generic-json", "generic.json", 20),
        ("generic-xml", "generic.xml", 20),
        ("sinch-contact-pro", "sinch.tsv", 4),
    ] {
        let env = Env::new();
        let (report, code) = env.import_json(&["--mapping", mapping, fixture(file).to_str().unwrap()]);
        assert_eq!(code, 0, "{mapping}: {report}");
        let all = env.all();
        assert_eq!(all.len(), count, "{mapping}: {report}");
        let exported = env.path("export");
        env.ok(&["export", "--mapping", mapping, "--output", exported.to_str().unwrap()]);
        let other = Env::new();
        let (report, code) = other.import_json(&["--mapping", mapping, exported.to_str().unwrap()]);
        assert_eq!(code, 0, "{mapping} re-import: {report}");
        let strip_times = |v: Vec<serde_json::Value>| -> Vec<(String, String, bool)> {
            let mut v: Vec<_> = v
                .iter()
                .map(|c| {
                    (
                        c["number"].as_str().unwrap().to_string(),
                        c["usage"].as_str().unwrap().to_string(),
                        c["consent"].as_bool().unwrap(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        if mapping == "sinch-contact-pro" {
            // No time columns: the times are those of each import.
            assert_eq!(strip_times(other.all()), strip_times(all), "{mapping}");
        } else {
            assert_eq!(without_source(&other.all()), without_source(&all), "{mapping}");
        }
        let out = env.ok(&["mapping", "test", mapping]);
        assert!(out.contains(" 0 failed"), "{mapping}: {out}");
    }
}

#[test]
fn sinch_numbers_normalise_and_the_delete_marker_removes() {
    let env = Env::new();
    env.ok(&["import", "--mapping", "sinch-contact-pro", fixture("sinch.tsv").to_str().unwrap()]);
    // "+49 151 2345-678" and "+49 151 2345678" are one number with two usages.
    let found: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["search", "--number", "0151 2345678", "--json"])).unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    let (report, code) = env.import_json(&["--mapping", "sinch-contact-pro", fixture("sinch-delete.tsv").to_str().unwrap()]);
    assert_eq!((code, report["deleted"].as_u64()), (0, Some(1)), "{report}");
    let found: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["search", "--number", "+491512345678", "--json"])).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["usage"], "whatsapp");
}

#[test]
fn refused_records_are_reported_written_back_and_leave_the_rest() {
    let env = Env::new();
    env.ok(&["import", "--mapping", "generic-csv", fixture("generic.csv").to_str().unwrap()]);
    let before = env.all();
    let broken = fixture("broken-records.csv");

    // --strict: nothing applied.
    let (report, code) = env.import_json(&["--strict", "--mapping", "generic-csv", broken.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(
        (report["rejected"].as_u64(), report["applied"].as_bool()),
        (Some(5), Some(false)),
        "{report}"
    );
    assert_eq!(env.all(), before);

    // --dry-run: reported, nothing written.
    let (report, _) = env.import_json(&["--dry-run", "--mapping", "generic-csv", broken.to_str().unwrap()]);
    assert_eq!(report["inserted"].as_u64(), Some(2), "{report}");
    assert_eq!(env.all(), before);

    // Default: the two good records are applied, the five refused ones reported and written back.
    let rejects = env.path("rejects.csv");
    let (report, code) = env.import_json(&[
        "--rejects",
        rejects.to_str().unwrap(),
        "--mapping",
        "generic-csv",
        broken.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert_eq!(
        (report["inserted"].as_u64(), report["rejected"].as_u64()),
        (Some(2), Some(5)),
        "{report}"
    );
    let lines: Vec<u64> = report["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![3, 4, 5, 6, 7]);
    for r in report["rejects"].as_array().unwrap() {
        assert!(r["file"].as_str().unwrap().ends_with("broken-records.csv"));
        assert!(!r["reason"].as_str().unwrap().is_empty());
        assert!(r["field"].as_str().is_some(), "{r}");
    }
    let reasons = report["rejects"].to_string();
    assert!(reasons.contains("sms") && reasons.contains("maybe"), "{reasons}");
    let written = std::fs::read_to_string(&rejects).unwrap();
    assert_eq!(written.lines().count(), 6, "header and five rows: {written}");
    assert!(written.starts_with("phone,channel,consent,created_at,updated_at"));
    assert_eq!(env.all().len(), before.len() + 2);

    // The text report names the place and the reason.
    let out = env.run(&["import", "--mapping", "generic-csv", broken.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("broken-records.csv:3"), "{text}");
}

#[test]
fn broken_files_get_a_message_and_leave_the_store_untouched() {
    let env = Env::new();
    env.ok(&["import", "--mapping", "generic-csv", fixture("generic.csv").to_str().unwrap()]);
    let before = env.all();
    let big = env.path("big-line.csv");
    let mut f = std::fs::File::create(&big).unwrap();
    writeln!(f, "phone,channel,consent,created_at,updated_at").unwrap();
    writeln!(
        f,
        "+4915100000001,{},true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z",
        "x".repeat(10 << 20)
    )
    .unwrap();
    drop(f);
    for (mapping, file) in [
        ("generic-csv", fixture("broken-unbalanced-quotes.csv")),
        ("generic-xml", fixture("broken-truncated.xml")),
        ("generic-json", fixture("broken-wrong-types.json")),
        ("generic-csv", fixture("broken-garbage.bin")),
        ("generic-json", fixture("broken-garbage.bin")),
        ("generic-xml", fixture("broken-garbage.bin")),
        ("generic-csv", big.clone()),
    ] {
        let (report, code) = env.import_json(&["--strict", "--mapping", mapping, file.to_str().unwrap()]);
        // 2: records refused; 3: the file could not be read to its end, and the report says where.
        let complete = report["complete"].as_bool().unwrap();
        assert_eq!(code, if complete { 2 } else { 3 }, "{mapping} {file:?}: {report}");
        assert_eq!(report["outcome"], "partial", "{report}");
        let problem = if complete { &report["rejects"][0] } else { &report["unread"][0] };
        assert!(problem["reason"].as_str().is_some_and(|r| !r.is_empty()), "{report}");
        assert!(
            problem["line"].as_u64().is_some() || problem["path"].as_str().is_some() || problem["record"].as_u64().is_some(),
            "{report}"
        );
        assert_eq!(env.all(), before, "{file:?}");
    }
    for file in ["broken-empty.csv", "broken-header-only.csv"] {
        let (report, code) = env.import_json(&["--mapping", "generic-csv", fixture(file).to_str().unwrap()]);
        assert_eq!((code, report["read"].as_u64()), (0, Some(0)), "{file}: {report}");
    }
    assert_eq!(env.all(), before);
}

#[test]
fn bad_command_line_input_is_refused() {
    let env = Env::new();
    for (args, expect) in [
        (vec!["search"], "at least one"),
        (vec!["search", "--digits", "12"], "at least 3"),
        (vec!["add", "+49 151 CALLME"], "not a digit"),
        (vec!["add", "+4915123456789012"], "more than"),
        (vec!["set", "+491512345678", "--usage", "sms", "--consent", "true"], "sms"),
        (vec!["search", "--created-from", "2024-02-30"], "2024-02-30"),
        (vec!["import", "--mapping", "no-such-mapping", "x.csv"], "generic-csv"),
    ] {
        let out = env.run(&args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "{args:?}: {err}");
    }
    let out = env.ok(&["add", "0151 2345678", "--usage", "whatsapp"]);
    assert!(out.contains("+491512345678 whatsapp: added"), "{out}");
}

/// Starts `consentd serve` on port 0; returns the child and its address.
fn serve(env: &Env) -> (std::process::Child, String) {
    let mut child = env
        .cmd(&["serve"])
        .env("CONSENTD_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (child, addr)
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_daemon_holds_the_store_and_a_second_process_is_told_so() {
    let env = Env::new();
    let (mut daemon, addr) = serve(&env);
    assert!(http_get(&addr, "/healthz").starts_with("HTTP/1.0 200"));
    let out = env.run(&["import", "--mapping", "generic-csv", fixture("generic.csv").to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("in use") && err.contains("--server"), "{err}");
    unsafe_kill(daemon.id(), "TERM");
    assert!(daemon.wait().unwrap().success(), "SIGTERM ends the daemon cleanly");
    env.ok(&["import", "--mapping", "generic-csv", fixture("generic.csv").to_str().unwrap()]);
}

fn unsafe_kill(pid: u32, signal: &str) {
    Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
}

/// A CSV like gen_consents.py's, with `n` rows.
fn generate_csv(path: &Path, n: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(f, "phone,channel,consent,created_at,updated_at").unwrap();
    for i in 0..n {
        let usage = if i % 5 < 3 { "call_recording" } else { "whatsapp" };
        let day = 1 + i % 28;
        writeln!(
            f,
            "+4915{:08},{usage},{},2024-02-{day:02}T10:00:00Z,2024-03-{day:02}T10:00:00Z",
            10_000_000 + (i * 7919) % 89_999_999,
            i % 4 != 0
        )
        .unwrap();
    }
}

#[test]
fn an_import_killed_midway_finishes_on_rerun_without_duplicates() {
    let env = Env::new();
    let file = env.path("big.csv");
    generate_csv(&file, 150_000);
    let config = env.path("small-chunks.toml");
    std::fs::write(&config, "[import]\nchunk_records = 10000\n").unwrap();
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--mapping",
        "generic-csv",
        file.to_str().unwrap(),
    ];
    let mut child = env
        .cmd(&[&["import"], &args[..]].concat())
        .env("CONSENTD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Kill it once it has written a few chunks.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut chunks = 0;
    while let Some(Ok(line)) = lines.next() {
        if line.contains("Import chunk written") {
            chunks += 1;
            if chunks == 3 {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(chunks, 3, "the import ran long enough to be killed");
    let (report, code) = env.import_json(&args);
    assert_eq!(code, 0, "{report}");
    let (inserted, unchanged) = (report["inserted"].as_u64().unwrap(), report["unchanged"].as_u64().unwrap());
    assert_eq!(inserted + unchanged, 150_000);
    assert!(unchanged >= 30_000, "the chunks written before the kill stay: {report}");

    let reference = Env::new();
    reference.ok(&["import", "--mapping", "generic-csv", file.to_str().unwrap()]);
    let a = env.ok(&["export", "--mapping", "generic-csv"]);
    let b = reference.ok(&["export", "--mapping", "generic-csv"]);
    assert_eq!(a.lines().count(), 150_001);
    assert!(a == b, "the store after kill and re-run equals one import without a kill");
    // One audit entry per consent: nothing was applied twice.
    let history: Vec<serde_json::Value> = serde_json::from_str(&env.ok(&["history", "+491510000000", "--json"])).unwrap();
    assert_eq!(history.len(), 1, "{history:?}");
}

#[test]
fn long_imports_and_exports_show_progress_on_a_terminal_only() {
    let env = Env::new();
    let mut csv = String::from("phone,channel,consent,created_at,updated_at\n");
    for i in 0..60_000u64 {
        csv.push_str(&format!(
            "+4915{:08},whatsapp,true,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z\n",
            10_000_000 + i
        ));
    }
    std::fs::write(env.path("big.csv"), csv).unwrap();
    let data = env.path("data");
    // Through a pseudo-terminal (util-linux `script`), as a person at a terminal runs it.
    let on_terminal = |args: &str| -> String {
        let line = format!("{} --data-dir {} {args}", common::BIN, data.display());
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("CONSENTD_MAPPINGS_DIR", root().join("mappings"))
            .env("CONSENTD_LOG", "warn")
            .current_dir(env.dir.path())
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = on_terminal("import --mapping generic-csv big.csv");
    assert!(
        shown.contains("MiB") && shown.contains("left") && shown.contains("inserted"),
        "{shown}"
    );
    let quiet = on_terminal("import --quiet --mapping generic-csv big.csv");
    assert!(!quiet.contains("left") && quiet.contains("unchanged"), "{quiet}");
    let shown = on_terminal("export --mapping generic-ndjson -o out.ndjson");
    assert!(shown.contains("consents of 60,000") && shown.contains("/s"), "{shown}");
    // Not on a terminal: no bar, whatever the flags.
    let out = env.run(&["import", "--mapping", "generic-csv", "big.csv"]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("left"));
}
