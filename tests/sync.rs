//! Black-box tests of sync: the real daemon with connectors, real files in temp dirs, and (for HTTP)
//! real servers on 127.0.0.1 standing in for the remote consent systems.

mod common;

use common::{fixture, root, serve, Daemon};
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

/// The DPO report's erasures of a number: (connector, status) pairs.
fn erasures(report: &Value) -> Vec<(String, String)> {
    report["numbers"][0]["erasures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["connector"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
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
        (Some("partial"), Some(21), Some(20), Some(1)),
        "a run with refused records is partial: {r}"
    );
    assert_eq!(r["warnings"][0], "1 pulled record(s) refused: see the dead letters", "{r}");
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
        "phone,channel,consent\n+491517777777,whatsapp,agreed\n+491518888888,whatsapp,true\n+491516666666,whatsapp,agreed\n",
    )
    .unwrap();
    let r = run(&d, "strict");
    assert_eq!((r["inserted"].as_u64(), r["rejected"].as_u64()), (Some(1), Some(2)), "{r}");
    let dead = d.ok(d.get("importer", "/v1/sync/strict/dead-letters"));
    assert_eq!(dead["items"][0]["rejects"][0]["field"], "consent (column consent)", "{dead}");
    assert_eq!(dead["items"][0]["rejects"][0]["value"], Value::Null, "no view right: values hidden");
    let id = dead["items"][0]["id"].as_u64().unwrap();
    // Replayed before the fix: refused again, at the places they had in the file they came from
    // (lines 2 and 4), not in the replayed records (lines 2 and 3).
    let again = d.ok(d.post("importer", &format!("/v1/sync/strict/dead-letters/{id}/replay"), Value::Null));
    let places: Vec<(Value, Value)> = again["rejects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["file"].clone(), r["line"].clone()))
        .collect();
    let file = dead["items"][0]["rejects"][0]["file"].clone();
    assert_eq!(places, vec![(file.clone(), json!(2)), (file.clone(), json!(4))], "{again}");
    let dead = d.ok(d.get("importer", "/v1/sync/strict/dead-letters"));
    assert_eq!(dead["items"][0]["rejects"][1]["line"], 4, "kept so for the next replay: {dead}");
    std::fs::write(
        mappings.path().join("strict.toml"),
        strict.replace("[\"true\"]", "[\"true\", \"agreed\"]"),
    )
    .unwrap();
    let replay = d.ok(d.post("importer", &format!("/v1/sync/strict/dead-letters/{id}/replay"), Value::Null));
    assert_eq!(
        (replay["inserted"].as_u64(), replay["rejected"].as_u64()),
        (Some(2), Some(0)),
        "{replay}"
    );
    assert_eq!(d.ok(d.get("importer", "/v1/sync/strict/dead-letters"))["items"], json!([]));
    assert_eq!(d.search("number=%2B491517777777")[0]["consent"], true);

    // A purge reaches every push connector as a deletion, and the DPO report says so.
    let n = "%2B491512345678";
    let ev = d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": "+491512345678"})));
    assert_eq!(ev["removed"]["consents"], 1);
    let report = d.ok(d.get("dpo-office", &format!("/v1/dpo/report?number={n}")));
    assert_eq!(erasures(&report), pairs(&[("files", "pending"), ("sinch", "pending")]), "{report}");
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
        erasures(&report),
        pairs(&[("files", "pending"), ("sinch", "delivered")]),
        "{report}"
    );
    assert_eq!(report["numbers"][0]["erasures"][1]["attempts"], 1, "{report}");
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
    // generic-csv has no delete marker: the erasure cannot be sent there. It stays owed, each run says
    // so (partial), and the report shows why, until an admin marks it handled outside consentd.
    assert_eq!(
        (r["outcome"].as_str(), r["erasures_pending"].as_u64()),
        (Some("partial"), Some(1)),
        "{r}"
    );
    let report = d.ok(d.get("dpo-office", &format!("/v1/dpo/report?number={n}")));
    assert_eq!(
        erasures(&report),
        pairs(&[("files", "pending"), ("sinch", "delivered")]),
        "{report}"
    );
    let owed = &report["numbers"][0]["erasures"][0];
    assert_eq!(owed["attempts"], 2, "one a run: {report}");
    assert!(
        owed["last_answer"].as_str().unwrap().contains("cannot write a deletion"),
        "{report}"
    );
    let listed = d.ok(d.get("importer", "/v1/sync"))["items"].clone();
    let files_connector = listed.as_array().unwrap().iter().find(|c| c["name"] == "files").unwrap();
    assert_eq!(files_connector["erasures_pending"][0]["id"], owed["id"], "{listed}");
    let id = owed["id"].as_str().unwrap();
    // A note is required.
    common::refused(
        d.post("importer", &format!("/v1/sync/files/erasures/{id}/handled"), json!({})),
        reqwest::StatusCode::BAD_REQUEST,
        None,
    );
    d.ok(d.post(
        "importer",
        &format!("/v1/sync/files/erasures/{id}/handled"),
        json!({"note": "deleted in the partner portal, ticket 4711"}),
    ));
    let report = d.ok(d.get("dpo-office", &format!("/v1/dpo/report?number={n}")));
    assert_eq!(
        erasures(&report),
        pairs(&[("files", "handled"), ("sinch", "delivered")]),
        "{report}"
    );
    assert_eq!(
        report["numbers"][0]["erasures"][0]["note"],
        "deleted in the partner portal, ticket 4711"
    );
    assert_eq!(report["numbers"][0]["erasures"][0]["by"], "importer");
    assert_eq!(run(&d, "files")["erasures_pending"], 0);
    let events = d.ok(d.get("admin", "/v1/audit/events?limit=100"));
    let handled = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "erasure_handled")
        .unwrap();
    assert_eq!(
        (handled["actor"].as_str(), handled["connector"].as_str()),
        (Some("importer"), Some("files")),
        "{events}"
    );

    // Refused pulled records that hold a number are personal data too: reported, and purged.
    std::fs::write(
        dir.join("strict-inbox/y.csv"),
        "phone,channel,consent\n0151 9999911,whatsapp,maybe\n",
    )
    .unwrap();
    assert_eq!(run(&d, "strict")["rejected"], 1);
    let report = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491519999911"));
    assert_eq!(report["numbers"][0]["dead_letters"][0][0], "strict", "{report}");
    d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": "+491519999911"})));
    assert_eq!(d.ok(d.get("importer", "/v1/sync/strict/dead-letters"))["items"], json!([]));
    let after = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491519999911"))["numbers"].clone();
    assert_eq!(after[0]["dead_letters"], json!([]), "{after}");
    assert_eq!(after[0]["purges"].as_array().unwrap().len(), 1, "{after}");

    // The listing shows each connector with its runs.
    let list = d.ok(d.get("importer", "/v1/sync"));
    let files_c = list["items"].as_array().unwrap().iter().find(|c| c["name"] == "files").unwrap();
    assert!(files_c["runs"].as_array().unwrap().len() >= 5);
    assert!(files_c["next_run"].as_str().unwrap().ends_with("-01-01T00:00:00Z"), "{files_c}");
    let metrics = d.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert!(
        metrics.contains("consentd_sync_runs_total{connector=\"files\",outcome=\"ok\"} 4")
            && metrics.contains("consentd_sync_runs_total{connector=\"files\",outcome=\"partial\"} 3"),
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

/// A remote consent system on 127.0.0.1: serves its consents as JSON (`data.consents`), in pages with a
/// next-page token, changed at or after `updated_since` (or strictly after, as some systems do);
/// takes pushed batches, remembering them by idempotency key. It checks the bearer token on every
/// request, and can be told to deny it for a while, to fail or refuse pushes, to find batches too
/// large, to fail pages, or to answer slowly; it counts requests in progress at once.
struct Remote {
    consents: Vec<Value>,
    page_size: usize,
    /// The bearer token it takes.
    token: String,
    /// Requests to answer 401 (an expired token) before taking the token again.
    deny_auth: usize,
    /// `updated_since` means strictly newer.
    strict_since: bool,
    /// (idempotency key, body) of every push received, including repeats.
    pushes: Vec<(String, Value)>,
    /// Keys of pushes answered 2xx, in the order answered.
    answered: Vec<String>,
    /// Pushes to answer with 500 before accepting.
    fail_pushes: usize,
    /// Pushes to refuse with 422.
    refuse_pushes: usize,
    /// Pushes holding a deletion to refuse with 422.
    refuse_deletes: usize,
    /// Every push answered with this status (a wrong URL, a missing right).
    push_status: Option<u16>,
    /// Batches with more records than this are answered 413.
    max_batch: Option<usize>,
    /// Pages after the first answered 500 (a remote failing mid-way).
    fail_later_pages: bool,
    page_delay_ms: u64,
    push_delay_ms: u64,
    /// `updated_since` of each first-page GET.
    since_seen: Vec<Option<String>>,
    /// Requests in progress now, and the most at once.
    in_progress: usize,
    most_at_once: usize,
}

impl Default for Remote {
    fn default() -> Self {
        Self {
            consents: Vec::new(),
            page_size: 10,
            token: "crm-secret".into(),
            deny_auth: 0,
            strict_since: false,
            pushes: Vec::new(),
            answered: Vec::new(),
            fail_pushes: 0,
            refuse_pushes: 0,
            refuse_deletes: 0,
            push_status: None,
            max_batch: None,
            fail_later_pages: false,
            page_delay_ms: 0,
            push_delay_ms: 0,
            since_seen: Vec::new(),
            in_progress: 0,
            most_at_once: 0,
        }
    }
}

type Shared = std::sync::Arc<std::sync::Mutex<Remote>>;

/// Counts a request in progress; 401 unless it carries the remote's bearer token.
fn admit(s: &Shared, headers: &axum::http::HeaderMap) -> Result<(), (axum::http::StatusCode, String)> {
    let mut r = s.lock().unwrap();
    let expected = format!("Bearer {}", r.token);
    if r.deny_auth > 0 || headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        r.deny_auth = r.deny_auth.saturating_sub(1);
        return Err((axum::http::StatusCode::UNAUTHORIZED, "{\"error\":\"invalid_token\"}".into()));
    }
    r.in_progress += 1;
    r.most_at_once = r.most_at_once.max(r.in_progress);
    Ok(())
}

fn remote(state: Shared) -> String {
    use axum::extract::{Query, State};
    use axum::http::StatusCode;
    use axum::routing::get;
    async fn pull(
        State(s): State<Shared>,
        headers: axum::http::HeaderMap,
        Query(q): Query<std::collections::HashMap<String, String>>,
    ) -> Result<axum::Json<Value>, (StatusCode, String)> {
        admit(&s, &headers)?;
        let delay = s.lock().unwrap().page_delay_ms;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        let mut r = s.lock().unwrap();
        r.in_progress -= 1;
        let since = q.get("updated_since").cloned();
        if !q.contains_key("page_token") {
            r.since_seen.push(since.clone());
        } else if r.fail_later_pages {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, "database unavailable".into()));
        }
        let strict = r.strict_since;
        let mut items: Vec<&Value> = r
            .consents
            .iter()
            .filter(|c| {
                since.as_deref().is_none_or(|s| {
                    let changed = c["changed_at"].as_str().unwrap();
                    if strict {
                        changed > s
                    } else {
                        changed >= s
                    }
                })
            })
            .collect();
        items.sort_by_key(|c| c["changed_at"].as_str().unwrap().to_string());
        let from: usize = q.get("page_token").map_or(0, |t| t.parse().unwrap());
        let page: Vec<Value> = items.iter().skip(from).take(r.page_size).map(|v| (*v).clone()).collect();
        let next = (from + page.len() < items.len()).then(|| (from + page.len()).to_string());
        Ok(axum::Json(json!({"data": {"consents": page}, "next": next})))
    }
    async fn push(State(s): State<Shared>, headers: axum::http::HeaderMap, body: String) -> (StatusCode, String) {
        if let Err(denied) = admit(&s, &headers) {
            return denied;
        }
        let key = headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body: Value = serde_json::from_str(&body).unwrap();
        s.lock().unwrap().pushes.push((key.clone(), body.clone()));
        let delay = s.lock().unwrap().push_delay_ms;
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
        let mut r = s.lock().unwrap();
        r.in_progress -= 1;
        let records = body["data"]["consents"].as_array().map_or(0, Vec::len);
        if let Some(status) = r.push_status {
            return (StatusCode::from_u16(status).unwrap(), "not here".into());
        }
        if r.fail_pushes > 0 {
            r.fail_pushes -= 1;
            return (StatusCode::INTERNAL_SERVER_ERROR, String::new());
        }
        if r.max_batch.is_some_and(|m| records > m) {
            return (StatusCode::PAYLOAD_TOO_LARGE, "batch too large".into());
        }
        let has_delete = body["data"]["consents"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["status"] == "deleted"));
        if r.refuse_deletes > 0 && has_delete {
            r.refuse_deletes -= 1;
            return (StatusCode::UNPROCESSABLE_ENTITY, "deletions are not accepted today".into());
        }
        if r.refuse_pushes > 0 {
            r.refuse_pushes -= 1;
            // As real systems do, the answer quotes what it refused.
            let quoted = body.pointer("/data/consents/0/msisdn").cloned().unwrap_or_default();
            return (StatusCode::UNPROCESSABLE_ENTITY, format!("invalid record: {quoted}"));
        }
        r.answered.push(key);
        (StatusCode::NO_CONTENT, String::new())
    }
    let app = axum::Router::new().route("/consents", get(pull).post(push)).with_state(state);
    serve(app)
}

const REMOTE_MAPPING: &str = r#"
[format]
type = "json"
records = "data.consents"
[fields]
number = { path = "msisdn" }
usage = { path = "purpose" }
consent = { path = "granted" }
created = { path = "given_at", format = "rfc3339" }
updated = { path = "changed_at", format = "rfc3339" }
delete = { path = "status", values = ["deleted"] }
[values]
usage = { call_recording = ["recording"], whatsapp = ["whatsapp"] }
"#;

fn remote_consent(i: usize, granted: bool, changed: &str) -> Value {
    json!({"msisdn": format!("+4915{:08}", 10_000_000 + i), "purpose": if i.is_multiple_of(2) { "recording" } else { "whatsapp" },
           "granted": granted, "given_at": "2024-01-01T00:00:00Z", "changed_at": changed})
}

/// A remote answering pushes after `push_delay_ms`, and a daemon holding `n` consents (imported by
/// hand) for its connector to push.
fn pushing_remote(page_size: usize, push_delay_ms: u64, n: usize) -> (std::sync::Arc<std::sync::Mutex<Remote>>, Daemon, tempfile::TempDir) {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size,
        push_delay_ms,
        ..Default::default()
    }));
    let url = remote(state.clone());
    let (d, m) = remote_daemon(&url, "");
    let file = json!({"data": {"consents": (0..n).map(|i| remote_consent(i, true, "2024-01-01T00:00:00Z")).collect::<Vec<_>>()}});
    let r = d.ok(d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=remote-json")
        .body(file.to_string())
        .send()
        .unwrap());
    assert_eq!(r["inserted"], n);
    (state, d, m)
}

fn remote_daemon(url: &str, extra: &str) -> (Daemon, tempfile::TempDir) {
    remote_daemon_on(url, extra, NEVER)
}

fn remote_daemon_on(url: &str, extra: &str, schedule: &str) -> (Daemon, tempfile::TempDir) {
    remote_daemon_full(url, "", extra, schedule)
}

/// A daemon with the `crm` connector to `url`: `top` goes before the connector (`[import]`…), `extra`
/// into it.
fn remote_daemon_full(url: &str, top: &str, extra: &str, schedule: &str) -> (Daemon, tempfile::TempDir) {
    let mappings = tempfile::tempdir().unwrap();
    std::fs::write(mappings.path().join("remote-json.toml"), REMOTE_MAPPING).unwrap();
    let config = format!(
        r#"
{top}
[[connectors]]
name = "crm"
transport = "http"
direction = "both"
mapping = "remote-json"
schedule = "{schedule}"
catch_up = false
batch_size = 3
{extra}
[connectors.http]
url = "{url}/consents"
auth = {{ type = "bearer", token_env = "CRM_TOKEN" }}
pagination = {{ style = "token", path = "next", param = "page_token" }}
since_param = "updated_since"
retries = 3
backoff_ms = 1
max_backoff_ms = 5
"#
    );
    std::env::set_var("CRM_TOKEN", "crm-secret");
    (Daemon::start_with_mappings(&config, mappings.path()), mappings)
}

#[test]
fn an_http_connector_pulls_pages_incrementally_and_pushes_our_changes_once() {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size: 4,
        ..Default::default()
    }));
    state.lock().unwrap().consents = (0..10)
        .map(|i| remote_consent(i, i % 3 != 0, &format!("2025-01-01T00:00:{i:02}Z")))
        .collect();
    let url = remote(state.clone());
    let (d, _m) = remote_daemon(&url, "");
    let r = run(&d, "crm");
    assert_eq!(
        (r["outcome"].as_str(), r["pulled"].as_u64(), r["inserted"].as_u64()),
        (Some("ok"), Some(10), Some(10)),
        "{r}"
    );
    assert_eq!(r["watermark"], "2025-01-01T00:00:09Z");
    assert_eq!(r["pushed"], 0, "pulled consents are not echoed back");
    // Incremental: the next pull asks from a minute before the watermark (since_overlap_secs); the
    // records read again are unchanged.
    state
        .lock()
        .unwrap()
        .consents
        .push(remote_consent(10, true, "2025-01-02T00:00:00Z"));
    let r = run(&d, "crm");
    assert_eq!(
        (r["pulled"].as_u64(), r["inserted"].as_u64(), r["unchanged"].as_u64()),
        (Some(11), Some(1), Some(10)),
        "{r}"
    );
    assert_eq!(state.lock().unwrap().since_seen, [None, Some("2024-12-31T23:59:09Z".to_string())]);
    // Our changes go out in batches of 3, with the mapping's format; a 500 is retried with the same key.
    for i in 0..4 {
        d.ok(d.post(
            "admin",
            "/v1/consents",
            json!({"number": format!("+4917{:08}", 20_000_000 + i), "usage": "whatsapp"}),
        ));
    }
    let id = d.search("number=%2B491720000000")[0]["id"].as_str().unwrap().to_string();
    d.ok(d.post("admin", "/v1/consents/delete", json!({"ids": [id]})));
    state.lock().unwrap().fail_pushes = 1;
    let r = run(&d, "crm");
    assert_eq!((r["outcome"].as_str(), r["pushed"].as_u64()), (Some("ok"), Some(5)), "{r}");
    let pushes = state.lock().unwrap().pushes.clone();
    assert_eq!(pushes.len(), 3, "two batches, the first sent twice: {pushes:?}");
    assert_eq!(pushes[0].0, pushes[1].0, "a batch sent again carries the same idempotency key");
    assert_ne!(pushes[1].0, pushes[2].0);
    let sent: Vec<Value> = pushes[1..]
        .iter()
        .flat_map(|(_, b)| b["data"]["consents"].as_array().unwrap().clone())
        .collect();
    assert_eq!(sent.len(), 5);
    assert!(
        sent[..4].iter().all(|c| c["purpose"] == "whatsapp" && c["granted"] == true),
        "{sent:?}"
    );
    assert_eq!(
        (sent[4]["msisdn"].as_str(), sent[4]["status"].as_str()),
        (Some("+491720000000"), Some("deleted")),
        "{sent:?}"
    );
    // Nothing new: nothing sent.
    let r = run(&d, "crm");
    assert_eq!(r["pushed"], 0);
    assert_eq!(state.lock().unwrap().pushes.len(), 3);
    // A refused batch is kept with the answer and skipped; the run is partial.
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491730000000", "usage": "whatsapp"})));
    state.lock().unwrap().refuse_pushes = 1;
    let r = run(&d, "crm");
    assert_eq!(
        (r["outcome"].as_str(), r["push_refused"].as_u64()),
        (Some("partial"), Some(1)),
        "{r}"
    );
    let refused = d.ok(d.get("importer", "/v1/sync/crm/refused"));
    assert_eq!(refused["items"][0]["status"], 422);
    // The remote's answer quotes the number: a token without view sees it hidden.
    assert_eq!(refused["items"][0]["response"], "invalid record: \"[number hidden]\"", "{refused}");
    let seen = d.ok(d.get("admin", "/v1/sync/crm/refused"));
    assert_eq!(seen["items"][0]["response"], "invalid record: \"+491730000000\"", "{seen}");
    assert_eq!(d.ok(d.get("importer", "/v1/sync"))["items"][0]["refused_batches"], 1);
    // Re-sent after the fix: the remote takes it, under a key of its own; the batch is gone.
    let id = seen["items"][0]["id"].as_u64().unwrap();
    let out = d.ok(d.post("importer", &format!("/v1/sync/crm/refused/{id}/resend"), Value::Null));
    assert_eq!(
        (out["outcome"].as_str(), out["sent"].as_u64()),
        (Some("delivered"), Some(1)),
        "{out}"
    );
    let pushes = state.lock().unwrap().pushes.clone();
    let (refused_key, resent_key) = (&pushes[pushes.len() - 2].0, &pushes[pushes.len() - 1].0);
    assert_ne!(refused_key, resent_key);
    assert_eq!(pushes.last().unwrap().1["data"]["consents"][0]["msisdn"], "+491730000000");
    assert_eq!(d.ok(d.get("importer", "/v1/sync/crm/refused"))["items"], json!([]));
    common::refused(
        d.post("importer", &format!("/v1/sync/crm/refused/{id}/resend"), Value::Null),
        reqwest::StatusCode::NOT_FOUND,
        None,
    );
    // Refused again, then dismissed by an admin: gone, and both are audited.
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491730000001", "usage": "whatsapp"})));
    state.lock().unwrap().refuse_pushes = 1;
    assert_eq!(run(&d, "crm")["push_refused"], 1);
    let id = d.ok(d.get("importer", "/v1/sync/crm/refused"))["items"][0]["id"].as_u64().unwrap();
    state.lock().unwrap().refuse_pushes = 1;
    let out = d.ok(d.post("importer", &format!("/v1/sync/crm/refused/{id}/resend"), Value::Null));
    assert_eq!(
        (out["outcome"].as_str(), out["status"].as_u64()),
        (Some("refused"), Some(422)),
        "{out}"
    );
    assert_eq!(out["response"], "invalid record: \"[number hidden]\"", "{out}");
    assert_eq!(d.ok(d.get("importer", "/v1/sync/crm/refused"))["items"][0]["resends"], 1);
    d.ok(d.post(
        "importer",
        &format!("/v1/sync/crm/refused/{id}/dismiss"),
        json!({"note": "the remote does not take this number"}),
    ));
    assert_eq!(d.ok(d.get("importer", "/v1/sync/crm/refused"))["items"], json!([]));
    let events = d.ok(d.get("admin", "/v1/audit/events?limit=100"))["items"].clone();
    let kinds: Vec<&str> = events.as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["sync_resend", "sync_resend", "sync_dismiss"], "{events}");
    assert_eq!(events[2]["detail"]["note"], "the remote does not take this number");
    assert!(!events.to_string().contains("+49173"), "events hold no numbers: {events}");
}

#[test]
fn a_failing_remote_fails_the_run_and_keeps_the_watermark() {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size: 4,
        ..Default::default()
    }));
    state.lock().unwrap().consents = (0..3).map(|i| remote_consent(i, true, "2025-01-01T00:00:00Z")).collect();
    let url = remote(state.clone());
    let (d, _m) = remote_daemon(&url, "");
    assert_eq!(run(&d, "crm")["outcome"], "ok");
    let watermark = d.ok(d.get("importer", "/v1/sync"))["items"][0]["watermark"].clone();
    assert_eq!(watermark, "2025-01-01T00:00:00Z");
    // Newer records over three pages; the remote fails after the first page.
    state
        .lock()
        .unwrap()
        .consents
        .extend((3..13).map(|i| remote_consent(i, true, &format!("2025-02-01T00:00:{i:02}Z"))));
    state.lock().unwrap().fail_later_pages = true;
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("500"), "{r}");
    assert!(r["inserted"].as_u64().unwrap() > 0, "the first page was applied: {r}");
    assert_eq!(
        d.ok(d.get("importer", "/v1/sync"))["items"][0]["watermark"],
        watermark,
        "the watermark stays where the last whole pull left it"
    );
    // Mended: the next run reads from the same watermark and ends with everything, once.
    state.lock().unwrap().fail_later_pages = false;
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(count_all(&d), 13);
    assert_eq!(r["watermark"], "2025-02-01T00:00:12Z");
    let seen = state.lock().unwrap().since_seen.clone();
    assert_eq!(seen[1], seen[2], "the failed pull and the next asked from the same point: {seen:?}");
    // A remote that is gone: the run fails with the reason after its retries; nothing moves.
    let (d2, _m2) = remote_daemon("http://127.0.0.1:9", "");
    let r = run(&d2, "crm");
    assert_eq!(r["outcome"], "failed");
    assert!(r["error"].as_str().unwrap().contains("attempt"), "{r}");
    assert_eq!(d2.ok(d2.get("importer", "/v1/sync"))["items"][0]["watermark"], Value::Null);
}

#[test]
fn a_daemon_killed_during_a_pull_finishes_on_restart_without_duplicates() {
    let n = 3000;
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size: 100,
        page_delay_ms: 30,
        ..Default::default()
    }));
    state.lock().unwrap().consents = (0..n)
        .map(|i| remote_consent(i, i.is_multiple_of(2), &format!("2025-01-01T00:{:02}:{:02}Z", i / 60 % 60, i % 60)))
        .collect();
    let url = remote(state.clone());
    // Small chunks: each page is applied as it comes.
    let (mut d, _m) = remote_daemon_full(&url, "[import]\nchunk_records = 100", "", NEVER);
    // Kill it once some chunks are applied, while pages are still coming.
    let probe = (d.base.clone(), d.http.clone());
    let applied = move || {
        let page: Value = probe
            .1
            .get(format!("{}/v1/consents?created_from=1970-01-01&limit=1000", probe.0))
            .bearer_auth("s-admin")
            .send()
            .and_then(|r| r.json())
            .unwrap_or(Value::Null);
        page["items"].as_array().map_or(0, Vec::len)
    };
    run_and_kill(&mut d, || applied() >= 300);
    d.spawn();
    let before = count_all(&d);
    assert!(
        (300..n).contains(&before),
        "the kill came after some chunks were applied ({before} of {n} stored)"
    );
    // The run the kill cut off is shown interrupted.
    let runs = d.ok(d.get("importer", "/v1/sync"))["items"][0]["runs"].clone();
    assert_eq!(runs[0]["outcome"], "interrupted", "{runs}");
    assert!(runs[0]["error"].as_str().unwrap().contains("stopped during this run"), "{runs}");
    state.lock().unwrap().page_delay_ms = 0;
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(count_all(&d), n, "every remote consent is held once");
    // Each consent was inserted once: the audit trail holds exactly one change per consent.
    let audit = d.ok(d.get("admin", "/v1/audit?limit=1000&actor=sync:crm"));
    let mut changes = audit["items"].as_array().unwrap().len();
    let mut next = audit["next_cursor"].as_str().map(str::to_string);
    while let Some(c) = next {
        let page = d.ok(d.get("admin", &format!("/v1/audit?limit=1000&actor=sync:crm&cursor={c}")));
        changes += page["items"].as_array().unwrap().len();
        next = page["next_cursor"].as_str().map(str::to_string);
    }
    assert_eq!(changes, n, "no consent applied twice");
}

/// Every consent held, paging through the search.
fn count_all(d: &Daemon) -> usize {
    let mut all = 0;
    let mut cursor = String::new();
    loop {
        let page = d.ok(d.get("admin", &format!("/v1/consents?created_from=1970-01-01&limit=1000{cursor}")));
        all += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return all,
        }
    }
}

#[test]
fn runs_of_one_connector_never_overlap_and_skipped_ticks_are_counted() {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size: 1,
        page_delay_ms: 700,
        ..Default::default()
    }));
    state.lock().unwrap().consents = (0..4).map(|i| remote_consent(i, true, "2025-01-01T00:00:00Z")).collect();
    let url = remote(state.clone());
    // Every second, while one run takes about three.
    let (d, _m) = remote_daemon_on(&url, "", "* * * * * *");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut seen_running = false;
    loop {
        let c = d.ok(d.get("importer", "/v1/sync"))["items"][0].clone();
        // A run going on shows its figures so far; none is shown otherwise.
        if c["running"] == true {
            seen_running = true;
            assert_eq!(c["progress"]["outcome"], "running", "{c}");
            assert!(c["progress"]["started"].is_string(), "{c}");
        } else {
            assert!(c["progress"].is_null(), "{c}");
        }
        if seen_running
            && c["skipped_ticks"].as_u64().unwrap_or(0) >= 1
            && c["runs"].as_array().unwrap().iter().any(|r| r["outcome"] == "ok")
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no tick was skipped: {c}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // A run by hand while one is going is refused, not started twice.
    loop {
        if d.ok(d.get("importer", "/v1/sync"))["items"][0]["running"] == true {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    common::refused(
        d.post("importer", "/v1/sync/crm/run", Value::Null),
        reqwest::StatusCode::CONFLICT,
        None,
    );
    // The remote never saw two requests of this connector at once.
    // Setting the watermark by hand waits for no run either: 409 while one goes on.
    common::refused(
        d.post("admin", "/v1/sync/crm/watermark", json!({"watermark": null})),
        reqwest::StatusCode::CONFLICT,
        None,
    );
    while state.lock().unwrap().since_seen.len() < 2 {
        assert!(std::time::Instant::now() < deadline, "a second run never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let r = state.lock().unwrap();
    assert_eq!(r.most_at_once, 1, "runs of one connector overlapped at the remote");
}

#[test]
fn a_daemon_killed_during_a_push_resends_at_most_the_batch_in_hand() {
    let n = 900;
    let (state, mut d, _m) = pushing_remote(100, 10, n);
    // Kill it once some batches (of 3) have gone out.
    run_and_kill(&mut d, || state.lock().unwrap().pushes.len() >= 20);
    let before = state.lock().unwrap().pushes.len();
    assert!(before < n / 3, "the kill came during the push ({before} batches)");
    d.spawn();
    state.lock().unwrap().push_delay_ms = 0;
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "ok", "{r}");
    let pushes = state.lock().unwrap().pushes.clone();
    let keys: std::collections::BTreeSet<&str> = pushes.iter().map(|(k, _)| k.as_str()).collect();
    assert!(
        pushes.len() - keys.len() <= 1,
        "at most the batch in hand is sent again ({} sends, {} batches)",
        pushes.len(),
        keys.len()
    );
    let mut numbers: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (k, body) in &pushes {
        if seen.insert(k.clone()) {
            numbers.extend(
                body["data"]["consents"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["msisdn"].as_str().unwrap().to_string()),
            );
        }
    }
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), n, "every change reached the remote");
}

/// Starts a run of `crm` over HTTP and SIGKILLs the daemon once `now` says so.
fn run_and_kill(d: &mut Daemon, now: impl Fn() -> bool) {
    let base = d.base.clone();
    let runner = std::thread::spawn(move || {
        let _ = reqwest::blocking::Client::new()
            .post(format!("{base}/v1/sync/crm/run"))
            .bearer_auth("s-importer")
            .send();
    });
    while !now() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = d.child.as_ref().unwrap().id();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    let _ = d.child.take().unwrap().wait();
    runner.join().unwrap();
}

#[test]
fn a_run_missed_while_the_daemon_was_down_runs_at_start_up() {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size: 10,
        ..Default::default()
    }));
    let url = remote(state.clone());
    // Every other second; catch-up on (the default) for this test.
    let (mut d, _m) = remote_daemon_on(&url, "", "*/2 * * * * *");
    let cfg = d.dir.path().join("consentd.toml");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("catch_up = false", "catch_up = true");
    std::fs::write(&cfg, text).unwrap();
    d.stop();
    d.spawn();
    run(&d, "crm");
    d.stop();
    // Down for longer than one period: the next start runs the missed one at once.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    d.spawn();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let runs = d.ok(d.get("importer", "/v1/sync"))["items"][0]["runs"].clone();
        if runs.as_array().unwrap().iter().any(|r| r["trigger"] == "catch_up") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no catch-up run: {runs}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn sigterm_lets_the_batch_in_hand_finish() {
    let (state, mut d, _m) = pushing_remote(10, 300, 60);
    let base = d.base.clone();
    let runner = std::thread::spawn(move || {
        let _ = reqwest::blocking::Client::new()
            .post(format!("{base}/v1/sync/crm/run"))
            .bearer_auth("s-importer")
            .send();
    });
    // SIGTERM while a batch is on its way (the remote answers after 300 ms).
    while state.lock().unwrap().pushes.len() < 2 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    d.stop();
    runner.join().unwrap();
    let (sent, answered) = {
        let r = state.lock().unwrap();
        (r.pushes.len(), r.answered.clone())
    };
    assert!(sent < 20, "the run stopped early ({sent} of 20 batches)");
    // The batch in hand when SIGTERM came was finished: every batch sent was answered (the remote
    // answers 300 ms after it receives one), none was cut off.
    assert_eq!(answered.len(), sent, "a batch was sent and not waited for");
    assert_eq!(
        answered,
        state.lock().unwrap().pushes.iter().map(|p| p.0.clone()).collect::<Vec<_>>()
    );
    // The batch in hand was delivered and recorded: the next run sends each other batch once, none again.
    state.lock().unwrap().push_delay_ms = 0;
    d.spawn();
    // The stopped run is shown as such, with what it did: every answered batch counted.
    let runs = d.ok(d.get("importer", "/v1/sync"))["items"][0]["runs"].clone();
    assert_eq!(runs[0]["outcome"], "stopped", "{runs}");
    assert_eq!(runs[0]["pushed"].as_u64(), Some(3 * sent as u64), "{runs}");
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "ok", "{r}");
    let pushes = state.lock().unwrap().pushes.clone();
    let keys: std::collections::BTreeSet<&str> = pushes.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        (pushes.len(), keys.len()),
        (20, 20),
        "every batch once: {:?}",
        pushes.iter().map(|p| &p.0).collect::<Vec<_>>()
    );
}

#[test]
fn a_dropped_file_not_read_to_its_end_fails_the_run_and_is_kept_whole() {
    let config = format!(
        "[[connectors]]\nname = \"drop\"\ntransport = \"file\"\ndirection = \"pull\"\nmapping = \"generic-csv\"\n\
         schedule = \"{NEVER}\"\ncatch_up = false\n[connectors.file]\ndir = \"{{dir}}/drop\"\n"
    );
    let d = Daemon::start_with(&config);
    let drop = d.dir.path().join("drop");
    std::fs::copy(fixture("real/unclosed-quote.csv"), drop.join("x.csv")).unwrap();
    let r = run(&d, "drop");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("could not be read to their end") && r["error"].as_str().unwrap().contains("x.csv"),
        "{r}"
    );
    // The records before the break are taken; the file is kept whole, with a report saying where.
    assert_eq!(r["inserted"], 1, "{r}");
    assert_eq!(files(&drop.join("failed")), ["x.csv", "x.csv.report.json"]);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(drop.join("failed/x.csv.report.json")).unwrap()).unwrap();
    assert_eq!(
        (&report["complete"], &report["unread"][0]["line"]),
        (&json!(false), &json!(3)),
        "{report}"
    );
}

#[test]
fn a_connectors_authority_wins_whatever_the_times() {
    let config = format!(
        "[[connectors]]\nname = \"theirs\"\ntransport = \"file\"\ndirection = \"pull\"\nmapping = \"generic-csv\"\n\
         schedule = \"{NEVER}\"\ncatch_up = false\nauthority = \"remote\"\n[connectors.file]\ndir = \"{{dir}}/theirs\"\n\n\
         [[connectors]]\nname = \"ours\"\ntransport = \"file\"\ndirection = \"pull\"\nmapping = \"generic-csv\"\n\
         schedule = \"{NEVER}\"\ncatch_up = false\nauthority = \"local\"\n[connectors.file]\ndir = \"{{dir}}/ours\"\n"
    );
    let d = Daemon::start_with(&config);
    let header = "phone,channel,consent,created_at,updated_at\n";
    let held = format!(
        "{header}+491511111111,whatsapp,true,2024-06-01T00:00:00Z,2024-06-01T00:00:00Z\n\
         +491512222222,whatsapp,true,2024-06-01T00:00:00Z,2024-06-01T00:00:00Z\n"
    );
    let r = d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
        .body(held)
        .send()
        .unwrap();
    assert_eq!(d.ok(r)["inserted"], 2);
    let drop = |connector: &str, name: &str, row: &str| {
        std::fs::write(d.dir.path().join(connector).join(name), format!("{header}{row}\n")).unwrap();
    };
    let consent = |n: &str| d.search(&format!("number={n}")).first().map(|c| c["consent"].clone());
    // An older denial from the system that is the authority wins.
    drop(
        "theirs",
        "a.csv",
        "+491511111111,whatsapp,false,2020-01-01T00:00:00Z,2020-01-01T00:00:00Z",
    );
    assert_eq!(run(&d, "theirs")["updated"], 1);
    assert_eq!(consent("%2B491511111111"), Some(json!(false)));
    // A newer denial from a system we are the authority over changes nothing.
    drop(
        "ours",
        "b.csv",
        "+491512222222,whatsapp,false,2025-01-01T00:00:00Z,2025-01-01T00:00:00Z",
    );
    assert_eq!(run(&d, "ours")["unchanged"], 1);
    assert_eq!(consent("%2B491512222222"), Some(json!(true)));
    // Deleted here: the authority brings it back even with an older record; the other does not.
    let ids: Vec<Value> = d
        .search("digits=1111111")
        .iter()
        .chain(&d.search("digits=2222222"))
        .map(|c| c["id"].clone())
        .collect();
    d.ok(d.post("admin", "/v1/consents/delete", json!({ "ids": ids })));
    drop(
        "theirs",
        "c.csv",
        "+491511111111,whatsapp,true,2020-01-01T00:00:00Z,2020-01-01T00:00:00Z",
    );
    drop(
        "ours",
        "d.csv",
        "+491512222222,whatsapp,true,2030-01-01T00:00:00Z,2030-01-01T00:00:00Z",
    );
    assert_eq!(run(&d, "theirs")["inserted"], 1);
    assert_eq!(run(&d, "ours")["inserted"], 0);
    assert_eq!(consent("%2B491511111111"), Some(json!(true)));
    assert_eq!(consent("%2B491512222222"), None);
}

/// The keys of the pushes a remote took, and the numbers it took, each once.
fn taken(state: &Shared) -> (Vec<String>, std::collections::BTreeSet<String>) {
    let r = state.lock().unwrap();
    let mut numbers = std::collections::BTreeSet::new();
    for (k, body) in &r.pushes {
        if r.answered.contains(k) {
            for c in body["data"]["consents"].as_array().unwrap() {
                numbers.insert(c["msisdn"].as_str().unwrap().to_string());
            }
        }
    }
    (r.answered.clone(), numbers)
}

#[test]
fn a_push_the_remote_does_not_take_is_never_done() {
    // An expired token: 401 to everything for a while. The run fails with the reason, the position
    // stays, nothing is called refused; once the token is good again every change goes out.
    let (state, d, _m) = pushing_remote(10, 0, 12);
    state.lock().unwrap().deny_auth = 1000;
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("401"), "{r}");
    assert_eq!((r["pushed"].as_u64(), r["push_refused"].as_u64()), (Some(0), Some(0)), "{r}");
    let c = d.ok(d.get("importer", "/v1/sync"))["items"][0].clone();
    assert_eq!((c["pushed_seq"].as_u64(), c["refused_batches"].as_u64()), (Some(0), Some(0)), "{c}");
    state.lock().unwrap().deny_auth = 0;
    let r = run(&d, "crm");
    assert_eq!((r["outcome"].as_str(), r["pushed"].as_u64()), (Some("ok"), Some(12)), "{r}");
    assert_eq!(taken(&state).1.len(), 12);

    // A wrong URL (404), a missing right (403), a method not allowed (405), an outage (503): the
    // same. Only content refusals make a batch refused.
    for status in [404, 403, 405, 503] {
        d.ok(d.post(
            "admin",
            "/v1/consents",
            json!({"number": format!("+4917{status:08}"), "usage": "whatsapp"}),
        ));
        state.lock().unwrap().push_status = Some(status);
        let r = run(&d, "crm");
        assert_eq!(r["outcome"], "failed", "{status}: {r}");
        assert!(r["error"].as_str().unwrap().contains(&status.to_string()), "{r}");
        assert_eq!(d.ok(d.get("importer", "/v1/sync"))["items"][0]["refused_batches"], 0);
        state.lock().unwrap().push_status = None;
        let r = run(&d, "crm");
        assert_eq!(
            (r["outcome"].as_str(), r["pushed"].as_u64()),
            (Some("ok"), Some(1)),
            "{status}: {r}"
        );
    }
    assert_eq!(taken(&state).1.len(), 16, "every change reached the remote");
}

#[test]
fn a_batch_too_large_is_split_before_anything_is_refused() {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        max_batch: Some(2),
        ..Default::default()
    }));
    let url = remote(state.clone());
    let (d, _m) = remote_daemon(&url, "");
    let ids: Vec<String> = (0..7).map(|i| format!("+4917{:08}", 30_000_000 + i)).collect();
    for n in &ids {
        d.ok(d.post("admin", "/v1/consents", json!({"number": n, "usage": "whatsapp"})));
    }
    // Batches of 3 (batch_size): each is answered 413, then sent as 1 + 2.
    let r = run(&d, "crm");
    assert_eq!(
        (r["outcome"].as_str(), r["pushed"].as_u64(), r["push_refused"].as_u64()),
        (Some("ok"), Some(7), Some(0)),
        "{r}"
    );
    let (keys, numbers) = taken(&state);
    assert_eq!(numbers.into_iter().collect::<Vec<_>>(), ids);
    let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(unique.len(), keys.len(), "each half has a key of its own: {keys:?}");
    assert!(state
        .lock()
        .unwrap()
        .pushes
        .iter()
        .any(|(_, b)| b["data"]["consents"].as_array().unwrap().len() == 3));
    // One record that is too large on its own is refused, and kept.
    state.lock().unwrap().max_batch = Some(0);
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491739999999", "usage": "whatsapp"})));
    let r = run(&d, "crm");
    assert_eq!(
        (r["outcome"].as_str(), r["push_refused"].as_u64()),
        (Some("partial"), Some(1)),
        "{r}"
    );
    let refused = d.ok(d.get("admin", "/v1/sync/crm/refused"));
    assert_eq!(
        (refused["items"][0]["status"].as_u64(), refused["items"][0]["records"].as_u64()),
        (Some(413), Some(1)),
        "{refused}"
    );
}

#[test]
fn an_erasure_is_sent_on_every_run_until_the_remote_takes_it() {
    let (state, d, _m) = pushing_remote(10, 0, 2);
    assert_eq!(run(&d, "crm")["pushed"], 2);
    d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": "+491510000000"})));
    state.lock().unwrap().refuse_deletes = 2;
    for attempt in 1..=2 {
        let r = run(&d, "crm");
        assert_eq!(
            (r["outcome"].as_str(), r["erasures_pending"].as_u64()),
            (Some("partial"), Some(1)),
            "{r}"
        );
        let report = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491510000000"));
        let e = &report["numbers"][0]["erasures"][0];
        assert_eq!(
            (e["status"].as_str(), e["attempts"].as_u64(), e["last_status"].as_u64()),
            (Some("pending"), Some(attempt), Some(422)),
            "{report}"
        );
        assert_eq!(e["last_answer"], "deletions are not accepted today");
        assert!(e["last_try"].is_string());
        let owed = d.ok(d.get("importer", "/v1/sync"))["items"][0]["erasures_pending"].clone();
        assert_eq!(owed[0]["attempts"], attempt, "{owed}");
    }
    // A misconfigured remote fails the run; the erasure stays owed.
    state.lock().unwrap().push_status = Some(401);
    let r = run(&d, "crm");
    assert_eq!(
        (r["outcome"].as_str(), r["erasures_pending"].as_u64()),
        (Some("failed"), Some(1)),
        "{r}"
    );
    state.lock().unwrap().push_status = None;
    let r = run(&d, "crm");
    assert_eq!(
        (r["outcome"].as_str(), r["erasures_delivered"].as_u64()),
        (Some("ok"), Some(1)),
        "{r}"
    );
    let report = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491510000000"));
    let e = &report["numbers"][0]["erasures"][0];
    assert_eq!(
        (e["status"].as_str(), e["attempts"].as_u64()),
        (Some("delivered"), Some(4)),
        "{report}"
    );
    // Every attempt at one erasure carried the same key; the remote took it once.
    let r = state.lock().unwrap();
    let erase_keys: std::collections::BTreeSet<&str> = r
        .pushes
        .iter()
        .filter(|(_, b)| b["data"]["consents"][0]["status"] == "deleted")
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(erase_keys.len(), 1, "{erase_keys:?}");
    assert!(d.ok(d.get("importer", "/v1/sync"))["items"][0]["erasures_pending"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn records_at_the_watermark_are_pulled_from_a_remote_whose_since_is_strict() {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size: 3,
        strict_since: true,
        ..Default::default()
    }));
    let t = "2025-03-01T10:00:00Z";
    state.lock().unwrap().consents = vec![remote_consent(0, true, t)];
    let url = remote(state.clone());
    let (d, _m) = remote_daemon(&url, "");
    assert_eq!(run(&d, "crm")["watermark"], t);
    // Ten more saved later at the same second: a `since` of exactly the watermark would miss them all.
    state.lock().unwrap().consents.extend((1..=10).map(|i| remote_consent(i, true, t)));
    let r = run(&d, "crm");
    assert_eq!(
        (r["outcome"].as_str(), r["inserted"].as_u64(), r["unchanged"].as_u64()),
        (Some("ok"), Some(10), Some(1)),
        "{r}"
    );
    assert_eq!(count_all(&d), 11);
    assert_eq!(state.lock().unwrap().since_seen[1].as_deref(), Some("2025-03-01T09:59:00Z"));
}

#[test]
fn the_watermark_is_written_as_the_remote_reads_it_and_can_be_set_by_hand() {
    // A remote that takes `since` in epoch milliseconds, strictly newer, under another name.
    let seen: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let records: Vec<Value> = (0..4)
        .map(|i| remote_consent(i, true, &format!("2025-04-01T00:00:0{i}Z")))
        .collect();
    let app = {
        let seen = seen.clone();
        axum::Router::new().route(
            "/v2/consents",
            axum::routing::get(move |q: axum::extract::Query<std::collections::HashMap<String, String>>| {
                let seen = seen.clone();
                let records = records.clone();
                async move {
                    let after: i64 = q.get("modifiedAfterMs").map_or(i64::MIN, |v| v.parse().expect("epoch ms"));
                    seen.lock().unwrap().push(q.get("modifiedAfterMs").cloned().unwrap_or_default());
                    let items: Vec<Value> = records
                        .into_iter()
                        .filter(|c| {
                            chrono::DateTime::parse_from_rfc3339(c["changed_at"].as_str().unwrap())
                                .unwrap()
                                .timestamp_millis()
                                > after
                        })
                        .collect();
                    axum::Json(json!({"data": {"consents": items}}))
                }
            }),
        )
    };
    let url = serve(app);
    let mappings = tempfile::tempdir().unwrap();
    std::fs::write(mappings.path().join("remote-json.toml"), REMOTE_MAPPING).unwrap();
    let mut d = Daemon::start_with_mappings(
        &format!(
            r#"
[[connectors]]
name = "ms"
transport = "http"
direction = "pull"
mapping = "remote-json"
schedule = "{NEVER}"
catch_up = false
[connectors.http]
url = "{url}/v2/consents"
since_param = "modifiedAfterMs"
since_format = "epoch_millis"
since_overlap_secs = 2
"#
        ),
        mappings.path(),
    );
    assert_eq!(run(&d, "ms")["inserted"], 4);
    let r = run(&d, "ms");
    assert_eq!((r["pulled"].as_u64(), r["unchanged"].as_u64()), (Some(2), Some(2)), "{r}");
    // 2025-04-01T00:00:03Z less 2 s, in milliseconds.
    assert_eq!(seen.lock().unwrap().clone(), ["", "1743465601000"]);

    // Cleared by hand (audited): the next pull takes everything again.
    let s = d.ok(d.post("admin", "/v1/sync/ms/watermark", json!({"watermark": null})));
    assert_eq!(s["watermark"], Value::Null);
    run(&d, "ms");
    assert_eq!(seen.lock().unwrap()[2], "");
    // Set by hand to a time; a bad time or key is refused with the field.
    d.ok(d.post("admin", "/v1/sync/ms/watermark", json!({"watermark": "2025-04-01T02:00:02+02:00"})));
    assert_eq!(d.ok(d.get("importer", "/v1/sync"))["items"][0]["watermark"], "2025-04-01T00:00:02Z");
    common::refused(
        d.post("admin", "/v1/sync/ms/watermark", json!({"watermark": "yesterday"})),
        reqwest::StatusCode::BAD_REQUEST,
        None,
    );
    common::refused(
        d.post("admin", "/v1/sync/ms/watermark", json!({"since": "2025-01-01T00:00:00Z"})),
        reqwest::StatusCode::BAD_REQUEST,
        Some("since"),
    );
    common::refused(
        d.post("viewer", "/v1/sync/ms/watermark", json!({"watermark": null})),
        reqwest::StatusCode::FORBIDDEN,
        None,
    );
    let events = d.ok(d.get("admin", "/v1/audit/events"))["items"].clone();
    let set: Vec<&Value> = events.as_array().unwrap().iter().filter(|e| e["kind"] == "sync_position").collect();
    assert_eq!(set.len(), 2, "{events}");
    assert_eq!(set[1]["detail"]["after"]["watermark"], "2025-04-01T00:00:02Z");

    // From the command line, with the daemon stopped: `sync reset NAME` clears, `--to` sets.
    d.stop();
    let out = d
        .command()
        .args(["sync", "reset", "ms", "--to", "2025-04-01T00:00:01Z"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("watermark 2025-04-01T00:00:01Z"));
    d.spawn();
    run(&d, "ms");
    assert_eq!(seen.lock().unwrap()[3], "1743465599000");
    d.stop();
    let out = d.command().args(["sync", "reset", "ms"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    d.spawn();
    run(&d, "ms");
    assert_eq!(seen.lock().unwrap()[4], "");
}

#[test]
fn idempotency_keys_cannot_collide_across_stores_or_split_after_a_crash() {
    // Two stores made afresh send the same range of changes under different keys.
    let (a, da, _ma) = pushing_remote(10, 0, 2);
    let (b, db, _mb) = pushing_remote(10, 0, 2);
    run(&da, "crm");
    run(&db, "crm");
    let (ka, kb) = (a.lock().unwrap().pushes[0].0.clone(), b.lock().unwrap().pushes[0].0.clone());
    assert!(ka.ends_with("-crm-1-2") && kb.ends_with("-crm-1-2"), "{ka} {kb}");
    assert_ne!(ka, kb, "a store made again does not reuse keys");

    // A crash while a part batch (2 of batch_size 3) is with the remote, which applies it but is slow
    // to answer; then a new change. The batch goes again with the same key and the same content; the
    // new change goes in a later batch.
    let (state, mut d, _m) = pushing_remote(10, 0, 0);
    for i in 0..2 {
        d.ok(d.post(
            "admin",
            "/v1/consents",
            json!({"number": format!("+4917{:08}", 40_000_000 + i), "usage": "whatsapp"}),
        ));
    }
    state.lock().unwrap().push_delay_ms = 60_000;
    run_and_kill(&mut d, || !state.lock().unwrap().pushes.is_empty());
    d.spawn();
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491740000002", "usage": "whatsapp"})));
    state.lock().unwrap().push_delay_ms = 0;
    let r = run(&d, "crm");
    assert_eq!((r["outcome"].as_str(), r["pushed"].as_u64()), (Some("ok"), Some(3)), "{r}");
    let pushes = state.lock().unwrap().pushes.clone();
    assert_eq!(pushes.len(), 3, "{pushes:?}");
    assert_eq!(pushes[0], pushes[1], "the batch in flight went again, same key, same content");
    let last: Vec<&str> = pushes[2].1["data"]["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["msisdn"].as_str().unwrap())
        .collect();
    assert_eq!(last, ["+491740000002"]);
    assert_ne!(pushes[2].0, pushes[0].0);
}

/// A push shape unlike the pull shape: a flat list of updates with other names.
const PUSH_MAPPING: &str = r#"
[format]
type = "json"
records = "updates"
[fields]
number = { path = "phone" }
usage = { path = "channel" }
consent = { path = "optin" }
updated = { path = "ts", format = "rfc3339" }
delete = { path = "op", values = ["remove"] }
"#;

#[test]
fn a_remote_with_two_shapes_and_two_connectors_gets_no_echo() {
    // Pull from GET /consents in one shape, push to POST /updates in another.
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        page_size: 50,
        ..Default::default()
    }));
    state.lock().unwrap().consents = (0..5).map(|i| remote_consent(i, true, "2025-01-01T00:00:00Z")).collect();
    let pushed: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let url = remote(state.clone());
    let push_url = {
        let pushed = pushed.clone();
        serve(axum::Router::new().route(
            "/updates",
            axum::routing::post(move |body: axum::Json<Value>| {
                let pushed = pushed.clone();
                async move {
                    pushed.lock().unwrap().push(body.0);
                    axum::http::StatusCode::ACCEPTED
                }
            }),
        ))
    };
    let mappings = tempfile::tempdir().unwrap();
    std::fs::write(mappings.path().join("remote-json.toml"), REMOTE_MAPPING).unwrap();
    std::fs::write(mappings.path().join("remote-push.toml"), PUSH_MAPPING).unwrap();
    std::env::set_var("CRM_TOKEN", "crm-secret");
    let d = Daemon::start_with_mappings(
        &format!(
            r#"
[[connectors]]
name = "crm-in"
system = "crm"
transport = "http"
direction = "pull"
mapping = "remote-json"
schedule = "{NEVER}"
catch_up = false
[connectors.http]
url = "{url}/consents"
auth = {{ type = "bearer", token_env = "CRM_TOKEN" }}
pagination = {{ style = "token", path = "next", param = "page_token" }}

[[connectors]]
name = "crm-out"
system = "crm"
transport = "http"
direction = "push"
mapping = "remote-json"
push_mapping = "remote-push"
schedule = "{NEVER}"
catch_up = false
[connectors.http]
url = "{url}/consents"
push_url = "{push_url}/updates"
"#
        ),
        mappings.path(),
    );
    assert_eq!(run(&d, "crm-in")["inserted"], 5);
    let r = run(&d, "crm-out");
    assert_eq!(
        (r["outcome"].as_str(), r["pushed"].as_u64()),
        (Some("ok"), Some(0)),
        "nothing pulled from crm goes back to it: {r}"
    );
    d.ok(d.post(
        "admin",
        "/v1/consents",
        json!({"number": "+491750000000", "usage": "call_recording"}),
    ));
    let r = run(&d, "crm-out");
    assert_eq!(r["pushed"], 1, "{r}");
    let got = pushed.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["updates"][0]["phone"], "+491750000000", "{got:?}");
    assert_eq!(got[0]["updates"][0]["optin"], true, "{got:?}");
    assert!(got[0].get("data").is_none(), "the push shape, not the pull shape: {got:?}");
}

#[test]
fn a_pull_whose_records_path_matches_nothing_fails() {
    // The remote answers, but not where the mapping looks for records.
    let url = serve(axum::Router::new().route(
        "/consents",
        axum::routing::get(|| async { axum::Json(json!({"results": [{"msisdn": "+4915100000001"}]})) }),
    ));
    let (d, _m) = remote_daemon(&url, "");
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("data"), "{r}");
    assert_eq!(d.ok(d.get("importer", "/v1/sync"))["items"][0]["watermark"], Value::Null);
}

#[test]
fn oauth2_client_credentials_are_fetched_cached_and_renewed_on_a_401() {
    let state = std::sync::Arc::new(std::sync::Mutex::new(Remote {
        token: "none issued yet".into(),
        ..Default::default()
    }));
    state.lock().unwrap().consents = (0..3).map(|i| remote_consent(i, true, "2025-01-01T00:00:00Z")).collect();
    let url = remote(state.clone());
    // The token endpoint: client credentials in HTTP basic auth, a form body; each token it issues
    // replaces the one the API takes.
    let issued: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let token_url = {
        let (state, issued) = (state.clone(), issued.clone());
        serve(axum::Router::new().route(
            "/oauth/token",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let (state, issued) = (state.clone(), issued.clone());
                async move {
                    // base64 of `consentd-client:s3cr%3At`: id and secret form-encoded first (RFC 6749 2.3.1).
                    let expected = "Basic Y29uc2VudGQtY2xpZW50OnMzY3IlM0F0";
                    let form: std::collections::HashMap<String, String> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected)
                        || form.get("grant_type").map(String::as_str) != Some("client_credentials")
                        || form.get("scope").map(String::as_str) != Some("consents:write")
                    {
                        return (axum::http::StatusCode::UNAUTHORIZED, axum::Json(json!({"error": "invalid_client"})));
                    }
                    let token = format!("tok-{}", issued.lock().unwrap().len() + 1);
                    issued.lock().unwrap().push(token.clone());
                    state.lock().unwrap().token = token.clone();
                    (
                        axum::http::StatusCode::OK,
                        axum::Json(json!({"access_token": token, "token_type": "Bearer", "expires_in": 3600})),
                    )
                }
            }),
        ))
    };
    std::env::set_var("CRM_CLIENT_SECRET", "s3cr:t");
    let (d, _m) = remote_daemon_full(&url, "", "", NEVER);
    // The connector of remote_daemon uses a bearer token: this one is written with OAuth2 instead.
    let cfg = d.dir.path().join("consentd.toml");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        r#"auth = { type = "bearer", token_env = "CRM_TOKEN" }"#,
        &format!(
            r#"auth = {{ type = "oauth2", token_url = "{token_url}/oauth/token", client_id = "consentd-client", client_secret_env = "CRM_CLIENT_SECRET", scope = "consents:write" }}"#
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let mut d = d;
    d.stop();
    d.spawn();
    let r = run(&d, "crm");
    assert_eq!((r["outcome"].as_str(), r["inserted"].as_u64()), (Some("ok"), Some(3)), "{r}");
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491760000000", "usage": "whatsapp"})));
    let r = run(&d, "crm");
    assert_eq!((r["outcome"].as_str(), r["pushed"].as_u64()), (Some("ok"), Some(1)), "{r}");
    assert_eq!(issued.lock().unwrap().len(), 1, "one token for both runs, pull and push");
    // The remote revokes the token: the next request gets a 401, the connector fetches a new token
    // once and goes on.
    state.lock().unwrap().token = "revoked".into();
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "ok", "{r}");
    assert_eq!(issued.lock().unwrap().clone(), ["tok-1", "tok-2"]);
    // Wrong client credentials: the run fails with the token endpoint's reason, not a loop.
    std::env::set_var("CRM_CLIENT_SECRET", "wrong");
    d.stop();
    d.spawn();
    state.lock().unwrap().token = "revoked again".into();
    let r = run(&d, "crm");
    assert_eq!(r["outcome"], "failed", "{r}");
    assert!(r["error"].as_str().unwrap().contains("invalid_client"), "{r}");
    assert_eq!(issued.lock().unwrap().len(), 2);
}

#[test]
fn the_sync_commands_work_through_the_daemon_and_unset_secrets_are_named() {
    let state: Shared = Default::default();
    state.lock().unwrap().consents = (0..2).map(|i| remote_consent(i, true, "2025-01-01T00:00:00Z")).collect();
    let url = remote(state.clone());
    let (d, _m) = remote_daemon(&url, "");
    // This shell lacks the connector's secret: commands sent to the daemon do not need it…
    let cli = |args: &[&str]| {
        let out = d
            .command()
            .env_remove("CRM_TOKEN")
            .env("CONSENTD_TOKEN", "s-admin")
            .args(["--server", &d.base])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["sync", "run", "crm"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"inserted\": 2"), "{out}");
    let (code, out, err) = cli(&["sync", "reset", "crm", "--to", "2024-06-01T00:00:00Z"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("watermark 2024-06-01T00:00:00Z"), "{out}");
    let (code, out, _) = cli(&["sync", "refused", "crm"]);
    assert_eq!((code, out.trim()), (0, "[]"));
    // A partial run (a change refused) exits 2, as an import with refused records does.
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491770000000", "usage": "whatsapp"})));
    state.lock().unwrap().refuse_pushes = 1;
    let (code, out, _) = cli(&["sync", "run", "crm"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("\"outcome\": \"partial\""), "{out}");
    let (code, out, _) = cli(&["sync", "refused", "crm"]);
    assert_eq!(code, 0);
    let id = serde_json::from_str::<Value>(&out).unwrap()[0]["id"].as_u64().unwrap().to_string();
    let (code, out, err) = cli(&["sync", "resend", "crm", &id]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("\"outcome\": \"delivered\""), "{out}");
    let (code, _, err) = cli(&["sync", "resend", "crm", "7"]);
    assert_eq!(code, 1);
    assert!(err.contains("no refused batch 7"), "{err}");
    // …and check-config names the variable that is not set.
    let out = d.command().env_remove("CRM_TOKEN").arg("check-config").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connectors[0].http.auth") && err.contains("CRM_TOKEN"), "{err}");
}

/// Every file below `dir`, with its bytes.
fn all_files(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            out.extend(all_files(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out
}

#[test]
fn a_purge_rewrites_the_files_the_daemon_keeps_without_the_number() {
    let mappings = tempfile::tempdir().unwrap();
    for m in ["generic-csv", "generic-json"] {
        std::fs::copy(root().join(format!("mappings/{m}.toml")), mappings.path().join(format!("{m}.toml"))).unwrap();
    }
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
name = "jfiles"
transport = "file"
direction = "pull"
mapping = "generic-json"
schedule = "{NEVER}"
catch_up = false
[connectors.file]
dir = "{{dir}}/jinbox"
"#
    );
    let config = format!("[store]\ncompact_after_purge_secs = 1\n{config}");
    let d = Daemon::start_with_mappings(&config, mappings.path());
    let dir = d.dir.path().to_path_buf();
    let header = "phone,channel,consent,created_at,updated_at\n";
    std::fs::write(
        dir.join("inbox/a.csv"),
        format!(
            "{header}+491512345678,whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n\
             +491710007919,call_recording,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n\
             \"0151 2345678\",call_recording,false,2024-01-02T00:00:00Z,2024-01-02T00:00:00Z\n\
             +491710007920,whatsapp,false,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n"
        ),
    )
    .unwrap();
    // A refused record in national notation with separators: the file and its report go to failed/.
    std::fs::write(
        dir.join("inbox/bad.csv"),
        format!("{header}0151 / 234 56 78,whatsapp,maybe,,\n+491710007921,whatsapp,true,,\n0151 2345678 CALL,whatsapp,true,,\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("jinbox/a.json"),
        r#"[{"phone": "+491512345678", "channel": "whatsapp", "consent": true, "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"},
            {"phone": "+491710007922", "channel": "whatsapp", "consent": true, "created_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z"}]"#,
    )
    .unwrap();
    run(&d, "files");
    run(&d, "jfiles");
    assert_eq!(files(&dir.join("inbox/failed")), ["bad.csv", "bad.csv.report.json"]);
    // A change made here goes to the outbox; its reader has not taken it yet.
    let id = d.search("number=%2B491512345678&usage=whatsapp")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.ok(d.post("admin", "/v1/consents/toggle", json!({"ids": [id]})));
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491710007923", "usage": "whatsapp"})));
    run(&d, "files");
    assert_eq!(files(&dir.join("outbox")).len(), 1);

    let forms: [&[u8]; 5] = [
        b"+491512345678",
        b"491512345678",
        b"01512345678",
        b"0151 2345678",
        b"0151 / 234 56 78",
    ];
    let held = |forms: &[&[u8]]| -> Vec<String> {
        all_files(&dir)
            .into_iter()
            .filter(|(p, _)| !p.starts_with(dir.join("data")))
            .filter(|(_, b)| forms.iter().any(|f| b.windows(f.len()).any(|w| w == *f)))
            .map(|(p, _)| p.strip_prefix(&dir).unwrap().display().to_string())
            .collect()
    };
    let mut before = held(&forms);
    before.sort();
    assert_eq!(
        before,
        [
            "inbox/failed/bad.csv",
            "inbox/failed/bad.csv.report.json",
            "inbox/processed/a.csv",
            "jinbox/processed/a.json",
            &files(&dir.join("outbox")).iter().map(|f| format!("outbox/{f}")).next().unwrap()
        ],
        "the files hold the number before the purge"
    );

    let ev = d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": "+491512345678"})));
    assert_eq!(
        held(&forms),
        Vec::<String>::new(),
        "no file outside the store holds the number after the purge"
    );
    // Once the compaction after the purge is done, no file anywhere holds it: the store's files
    // (the E.164 text, its digits, the reversed digits of index keys, the stored integer) included.
    // (On PostgreSQL the store's files are the server's: what it keeps is in the README.)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !common::on_postgres()
        && d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491512345678"))["numbers"][0]["purges"][0]["physically_done_at"].is_null()
    {
        assert!(std::time::Instant::now() < deadline, "the purge was not made physical");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let stored: Vec<u8> = 491512345678u64.to_be_bytes().to_vec();
    let every_form: [&[u8]; 7] = [forms[0], forms[1], forms[2], forms[3], forms[4], b"876543215194", &stored];
    let anywhere: Vec<String> = all_files(&dir)
        .into_iter()
        .filter(|(_, b)| every_form.iter().any(|f| b.windows(f.len()).any(|w| w == *f)))
        .map(|(p, _)| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    assert_eq!(
        anywhere,
        Vec::<String>::new(),
        "no file under the daemon's directory holds the number"
    );
    // The other records are all still there, as they were.
    let csv = std::fs::read_to_string(dir.join("inbox/processed/a.csv")).unwrap();
    assert_eq!(
        csv,
        format!(
            "{header}+491710007919,call_recording,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n\
             +491710007920,whatsapp,false,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n"
        )
    );
    assert!(std::fs::read_to_string(dir.join("inbox/failed/bad.csv"))
        .unwrap()
        .contains("+491710007921"));
    let json_left: Value = serde_json::from_slice(&std::fs::read(dir.join("jinbox/processed/a.json")).unwrap()).unwrap();
    assert_eq!(json_left.as_array().unwrap().len(), 1);
    assert_eq!(json_left[0]["phone"], "+491710007922");
    let out = std::fs::read_to_string(dir.join("outbox").join(&files(&dir.join("outbox"))[0])).unwrap();
    assert!(out.contains("+491710007923"), "{out}");
    // The purge says which files it rewrote, and so does the DPO report.
    let rewritten: Vec<&str> = ev["detail"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["action"].as_str().unwrap())
        .collect();
    assert_eq!(rewritten.len(), 5, "{ev}");
    assert!(rewritten.iter().all(|a| *a == "rewritten"), "{ev}");
    let report = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491512345678"));
    let purge = &report["numbers"][0]["purges"][0];
    assert_eq!(purge["kind"], "purge", "{report}");
    assert_eq!(purge["detail"]["files"].as_array().unwrap().len(), 5, "{report}");
    assert!(report["numbers"][0]["consents"].as_array().unwrap().is_empty());
}
