//! Phone numbers stay in their place: the daemon at its default log level, driven through refused
//! imports, a failing and a refusing remote, dead letters and API errors with one number written every
//! way, logs none of them, and answers tokens without the view right without them.

mod common;

use common::Daemon;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// One number, written as people and systems write it.
const SPELLINGS: &[&str] = &[
    "+4915123456789",
    "+49 151 23456789",
    "+49-151-2345-6789",
    "0049 (151) 234.567.89",
    "+49/151/23456789",
    "(0151) 2345 6789",
    "0151-23456789",
];

/// Whether `text` holds the number in any spelling: its last eight digits, separators taken out.
fn holds_number(text: &str) -> bool {
    let digits: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '/' | '(' | ')' | '\u{a0}'))
        .collect();
    digits.contains("23456789")
}

/// A remote consent system that fails pulls (HTTP 400) and refuses pushes (HTTP 422), quoting the
/// number every way in its answers, as real systems do; or, when `serving`, answers one page with a
/// record our mapping refuses.
#[derive(Default)]
struct Remote {
    serving: bool,
}

fn remote(state: Arc<Mutex<Remote>>) -> String {
    use axum::http::StatusCode;
    use axum::routing::get;
    let quoted = SPELLINGS.join(" / ");
    let pull_quote = quoted.clone();
    let app = axum::Router::new().route(
        "/api/people",
        get(move |axum::extract::State(s): axum::extract::State<Arc<Mutex<Remote>>>| {
            let quoted = pull_quote.clone();
            async move {
                if s.lock().unwrap().serving {
                    let body = json!([{"tel": "+49 151 23456789 !", "kind": "voice", "ok": "yes"}, {"tel": "0151-23456789", "kind": "voice", "ok": "perhaps"}]);
                    (StatusCode::OK, body.to_string())
                } else {
                    (StatusCode::BAD_REQUEST, format!("{{\"detail\": \"unknown subscriber {quoted}\"}}"))
                }
            }
        })
        .post(move |_body: String| {
            let quoted = quoted.clone();
            async move { (StatusCode::UNPROCESSABLE_ENTITY, format!("rejected: {quoted}")) }
        }),
    );
    common::serve(app.with_state(state))
}

const MAPPING: &str = r#"
[format]
type = "json"
[fields]
number = { path = "tel" }
usage = { path = "kind" }
consent = { path = "ok" }
[values]
usage = { call_recording = ["voice"], whatsapp = ["wa"] }
consent = { true = ["yes"], false = ["no"] }
"#;

#[test]
fn numbers_reach_no_log_and_no_caller_without_view() {
    let state = Arc::new(Mutex::new(Remote::default()));
    let url = remote(state.clone());
    let mappings = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(common::root().join("mappings")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, mappings.path().join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(mappings.path().join("people.toml"), MAPPING).unwrap();
    let config = format!(
        r#"
[[connectors]]
name = "people"
transport = "http"
direction = "both"
mapping = "people"
schedule = "0 0 0 1 1 *"
catch_up = false
[connectors.http]
url = "{url}/api/people"
retries = 0
"#
    );
    let mut d = Daemon::start_logging(&config, mappings.path(), None);
    let mut answers: Vec<(String, String)> = Vec::new();
    let mut keep = |what: &str, r: reqwest::blocking::Response| -> Value {
        let text = r.text().unwrap();
        answers.push((what.to_string(), text.clone()));
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };

    // An import with refused rows: each spelling with a bad consent value, and each as a bad number.
    let mut csv = String::from("phone,channel,consent,created_at,updated_at\n");
    for s in SPELLINGS {
        csv.push_str(&format!("\"{s}\",whatsapp,perhaps,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n"));
        csv.push_str(&format!("\"{s}x\",whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n"));
        csv.push_str(&format!("\"{s}\",whatsapp,true,{s},2024-01-01T00:00:00Z\n"));
    }
    let r = keep(
        "import",
        d.as_("importer", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
            .body(csv)
            .send()
            .unwrap(),
    );
    assert_eq!(r["rejected"].as_u64(), Some(3 * SPELLINGS.len() as u64), "{r}");

    // API errors quoting the number as the caller wrote it.
    for s in SPELLINGS {
        let body = json!({"number": s, "usage": "sms"});
        keep(
            "create",
            d.as_("creator", reqwest::Method::POST, "/v1/consents").json(&body).send().unwrap(),
        );
        let body = json!({"number": format!("{s}99999"), "usage": "whatsapp"});
        keep(
            "create",
            d.as_("creator", reqwest::Method::POST, "/v1/consents").json(&body).send().unwrap(),
        );
    }
    d.ok(d.post(
        "admin",
        "/v1/consents",
        json!({"number": "+4915123456789", "usage": "call_recording"}),
    ));

    // A failing pull, then a push the remote refuses, each quoting the number every way.
    let r = keep(
        "run",
        d.as_("importer", reqwest::Method::POST, "/v1/sync/people/run").send().unwrap(),
    );
    assert_eq!(r["outcome"], "failed", "{r}");
    keep("list", d.get("importer", "/v1/sync"));
    state.lock().unwrap().serving = true;
    let r = keep(
        "run",
        d.as_("importer", reqwest::Method::POST, "/v1/sync/people/run").send().unwrap(),
    );
    assert_ne!(r["outcome"], "ok", "{r}");
    let refused = keep("refused", d.get("importer", "/v1/sync/people/refused"));
    assert!(!refused["items"].as_array().unwrap().is_empty(), "{refused}");
    let letters = keep("dead letters", d.get("importer", "/v1/sync/people/dead-letters"));
    let id = letters["items"][0]["id"].as_u64().unwrap_or_else(|| panic!("{letters}"));
    keep(
        "replay",
        d.as_(
            "importer",
            reqwest::Method::POST,
            &format!("/v1/sync/people/dead-letters/{id}/replay"),
        )
        .send()
        .unwrap(),
    );
    let batch = refused["items"][0]["id"].as_u64().unwrap();
    keep(
        "resend",
        d.as_(
            "importer",
            reqwest::Method::POST,
            &format!("/v1/sync/people/refused/{batch}/resend"),
        )
        .send()
        .unwrap(),
    );

    // A token with view sees what was refused: the check above can fail.
    let seen = d.get("admin", "/v1/sync/people/refused").text().unwrap();
    assert!(holds_number(&seen), "{seen}");

    for (what, text) in &answers {
        assert!(!holds_number(text), "{what} answered a token without view with the number: {text}");
    }
    let log = d.stop();
    assert!(
        log.contains("INFO") && log.contains("Sync run failed."),
        "the default level logs info and warnings:\n{log}"
    );
    assert!(
        !log.contains("unknown subscriber") && !log.contains("rejected:"),
        "a remote's answer is logged only at debug:\n{log}"
    );
    if let Some(line) = log.lines().find(|l| holds_number(l)) {
        panic!("a log line above debug holds the number: {line}");
    }
}
