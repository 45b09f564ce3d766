//! Black-box tests of sync: the real daemon with connectors, real files in temp dirs, and (for HTTP)
//! real servers on 127.0.0.1 standing in for the remote consent systems.

mod common;

use common::{fixture, root, Daemon};
use serde_json::{json, Value};
use std::path::Path;

/// A schedule that does not fire during a test (runs are started by hand).
const NEVER: &str = "0 0 0 1 1 *";

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn run(d: &Daemon, name: &str) -> Value {
    d.ok(d.post("importer", &format!("/v1/sync/{name}/run"), Value::Null))
}

#[test]
fn a_file_connector_imports_dropped_files_once_and_writes_our_changes() {
    let mappings = tempfile::tempdir().unwrap();
    for m in ["generic-csv", "sinch-contact-pro"] {
        std::fs::copy(root().join(format!("mappings/{m}.toml")), mappings.path().join(format!("{m}.toml"))).unwrap();
    }
    // A mapping that does not know the token "agreed" yet: its records are refused, then replayed.
    let strict = "[format]\ntype = \"csv\"\n[fields]\nnumber = { column = \"phone\" }\nusage = { column = \"channel\" }\n\
                  consent = { column = \"consent\" }\n[values]\nconsent = { true = [\"true\"], false = [\"false\"] }\n";
    std::fs::write(mappings.path().join("strict.toml"), strict).unwrap();
    let config = format!(
        r#"
[[connectors]]
name = "files"
transport = "file"
direction = "both"
mapping = "generic-csv"
schedule = "{NEVER}"
catch_up = false
[connectors.file]
dir = "{{dir}}/inbox"
glob = "*.csv"
out_dir = "{{dir}}/outbox"

[[connectors]]
name = "strict"
transport = "file"
direction = "pull"
mapping = "strict"
schedule = "{NEVER}"
[connectors.file]
dir = "{{dir}}/strict-inbox"

[[connectors]]
name = "sinch"
transport = "file"
direction = "push"
mapping = "sinch-contact-pro"
schedule = "{NEVER}"
[connectors.file]
out_dir = "{{dir}}/sinch-out"
file_name = "consents-{{seq}}.tsv"
"#
    );
    let d = Daemon::start_with_mappings(&config, mappings.path());
    let dir = d.dir.path().to_path_buf();
    let inbox = dir.join("inbox");
    std::fs::copy(fixture("generic.csv"), inbox.join("a.csv")).unwrap();
    std::fs::write(
        inbox.join("bad.csv"),
        "phone,channel,consent,created_at,updated_at\n+49 151 X,whatsapp,true,,\n",
    )
    .unwrap();
    std::fs::write(inbox.join("notes.txt"), "not a consent file").unwrap();

    let r = run(&d, "files");
    assert_eq!(
        (
            r["outcome"].as_str(),
            r["pulled"].as_u64(),
            r["inserted"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some("ok"), Some(21), Some(20), Some(1)),
        "{r}"
    );
    assert_eq!(r["pushed"], 0, "pulled changes are not echoed back: {r}");
    assert_eq!(files(&inbox.join("processed")), ["a.csv"]);
    assert_eq!(files(&inbox.join("failed")), ["bad.csv", "bad.csv.report.json"]);
    assert_eq!(files(&inbox), ["failed", "notes.txt", "processed"], "other files are left alone");
    let report: Value = serde_json::from_slice(&std::fs::read(inbox.join("failed/bad.csv.report.json")).unwrap()).unwrap();
    assert_eq!(report["rejects"][0]["line"], 2);
    assert!(files(&dir.join("outbox")).is_empty(), "nothing of ours to push yet");
    let sources: Vec<Value> = d.search("created_from=1970-01-01").iter().map(|c| c["source"].clone()).collect();
    assert!(sources.iter().all(|s| s == "sync:files"), "{sources:?}");

    // The same content again under another name: read, and nothing changes.
    std::fs::copy(fixture("generic.csv"), inbox.join("b.csv")).unwrap();
    let r = run(&d, "files");
    assert_eq!(
        (r["pulled"].as_u64(), r["unchanged"].as_u64(), r["inserted"].as_u64()),
        (Some(20), Some(20), Some(0)),
        "{r}"
    );

    // Our own changes go out, once, in a file written whole.
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491512345678", "usage": "whatsapp"})));
    let r = run(&d, "files");
    assert_eq!(r["pushed"], 1, "{r}");
    let out = files(&dir.join("outbox"));
    assert_eq!(out.len(), 1, "{out:?}");
    let text = std::fs::read_to_string(dir.join("outbox").join(&out[0])).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[1].starts_with("+491512345678,whatsapp,true,"), "{text}");
    let r = run(&d, "files");
    assert_eq!(r["pushed"], 0);
    assert_eq!(files(&dir.join("outbox")).len(), 1, "no file when there is nothing new");

    // Dead letters: refused records are kept, and taken once the mapping knows their values.
    std::fs::write(
        dir.join("strict-inbox/x.csv"),
        "phone,channel,consent\n+491517777777,whatsapp,agreed\n+491518888888,whatsapp,true\n",
    )
    .unwrap();
    let r = run(&d, "strict");
    assert_eq!((r["inserted"].as_u64(), r["rejected"].as_u64()), (Some(1), Some(1)), "{r}");
    let dead = d.ok(d.get("importer", "/v1/sync/strict/dead-letters"));
    assert_eq!(dead["items"][0]["rejects"][0]["field"], "consent (column consent)", "{dead}");
    assert_eq!(dead["items"][0]["rejects"][0]["value"], Value::Null, "no view right: values hidden");
    let id = dead["items"][0]["id"].as_u64().unwrap();
    std::fs::write(
        mappings.path().join("strict.toml"),
        strict.replace("[\"true\"]", "[\"true\", \"agreed\"]"),
    )
    .unwrap();
    let replay = d.ok(d.post("importer", &format!("/v1/sync/strict/dead-letters/{id}/replay"), Value::Null));
    assert_eq!(
        (replay["inserted"].as_u64(), replay["rejected"].as_u64()),
        (Some(1), Some(0)),
        "{replay}"
    );
    assert_eq!(d.ok(d.get("importer", "/v1/sync/strict/dead-letters"))["items"], json!([]));
    assert_eq!(d.search("number=%2B491517777777")[0]["consent"], true);

    // A purge reaches every push connector as a deletion, and the DPO report says so.
    let n = "%2B491512345678";
    let ev = d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": "+491512345678"})));
    assert_eq!(ev["removed"]["consents"], 1);
    let report = d.ok(d.get("dpo-office", &format!("/v1/dpo/report?number={n}")));
    let erasures = &report["numbers"][0]["erasures"];
    assert_eq!(erasures, &json!([["files", "pending"], ["sinch", "pending"]]), "{report}");
    run(&d, "sinch");
    let all: String = files(&dir.join("sinch-out"))
        .iter()
        .map(|f| std::fs::read_to_string(dir.join("sinch-out").join(f)).unwrap())
        .collect();
    let erased: Vec<&str> = all.lines().filter(|l| l.contains("+491512345678")).collect();
    assert_eq!(
        erased,
        ["+491512345678\twhatsapp\t\tD"],
        "the purged number goes out only as a deletion:\n{all}"
    );
    let report = d.ok(d.get("dpo-office", &format!("/v1/dpo/report?number={n}")));
    assert_eq!(
        report["numbers"][0]["erasures"],
        json!([["files", "pending"], ["sinch", "delivered"]]),
        "{report}"
    );
    assert!(report["numbers"][0]["consents"].as_array().unwrap().is_empty());

    // A pull does not bring the purged consent back unless the remote record is newer than the purge.
    std::fs::write(
        inbox.join("old.csv"),
        "phone,channel,consent,created_at,updated_at\n+491512345678,whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n",
    )
    .unwrap();
    let r = run(&d, "files");
    assert_eq!((r["skipped"].as_u64(), r["inserted"].as_u64()), (Some(1), Some(0)), "{r}");
    std::fs::write(
        inbox.join("new.csv"),
        "phone,channel,consent,created_at,updated_at\n+491512345678,whatsapp,false,2099-01-01T00:00:00Z,2099-01-01T00:00:00Z\n",
    )
    .unwrap();
    let r = run(&d, "files");
    assert_eq!(r["inserted"], 1, "{r}");

    // The listing shows each connector with its runs.
    let list = d.ok(d.get("importer", "/v1/sync"));
    let files_c = list["items"].as_array().unwrap().iter().find(|c| c["name"] == "files").unwrap();
    assert!(files_c["runs"].as_array().unwrap().len() >= 5);
    assert!(files_c["next_run"].as_str().unwrap().ends_with("-01-01T00:00:00Z"), "{files_c}");
    let metrics = d.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("consentd_sync_runs_total{connector=\"files\",outcome=\"ok\"} 6"),
        "{metrics}"
    );
    assert!(
        metrics.contains("consentd_sync_records_total{connector=\"files\",outcome=\"inserted\"} 21"),
        "{metrics}"
    );
    assert!(
        metrics.contains("consentd_sync_records_total{connector=\"files\",outcome=\"skipped\"} 1"),
        "{metrics}"
    );
    common::refused(
        d.post("viewer", "/v1/sync/files/run", Value::Null),
        reqwest::StatusCode::FORBIDDEN,
        None,
    );
    common::refused(
        d.post("importer", "/v1/sync/nope/run", Value::Null),
        reqwest::StatusCode::NOT_FOUND,
        None,
    );
}

#[test]
fn connectors_are_checked_with_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        r#"
[[connectors]]
name = "a b"
transport = "file"
direction = "both"
mapping = "no-such-mapping"
schedule = "every day"
timezone = "Mars/Olympus"

[[connectors]]
name = "web"
transport = "http"
direction = "push"
mapping = "generic-json"
schedule = "0 */5 * * * *"
[connectors.http]
url = "ftp://example.com"
deletes = "request"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["--config", config.to_str().unwrap(), "check-config"])
        .env("CONSENTD_MAPPINGS_DIR", root().join("mappings"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "connectors[0].name",
        "connectors[0].schedule",
        "Mars/Olympus",
        "connectors[0].mapping",
        "connectors[0]: transport file needs",
        "connectors[1].http.url",
        "connectors[1].http.delete_url",
    ] {
        assert!(err.contains(expected), "{expected} missing from:\n{err}");
    }
}
