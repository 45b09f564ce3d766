//! Black-box tests of the store's upkeep: a purge made physical by a compaction the daemon schedules
//! (no byte of the number left in any file of the data directory), and compactions killed at any
//! moment losing no acknowledged write.

mod common;

use common::{fixture, Daemon};
use serde_json::{json, Value};
use std::path::Path;

/// Every file below `dir` holding one of `forms`.
fn files_holding(dir: &Path, forms: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_holding(&p, forms));
        } else if let Ok(bytes) = std::fs::read(&p) {
            if forms.iter().any(|f| bytes.windows(f.len()).any(|w| w == &f[..])) {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

/// A number's byte forms: E.164 text, its digits, the reversed digits of the index keys, the stored
/// integer (the digits as a big-endian u64).
fn byte_forms(e164: &str) -> Vec<Vec<u8>> {
    let digits = e164.trim_start_matches('+');
    vec![
        e164.as_bytes().to_vec(),
        digits.as_bytes().to_vec(),
        digits.chars().rev().collect::<String>().into_bytes(),
        digits.parse::<u64>().unwrap().to_be_bytes().to_vec(),
    ]
}

/// Every (number, usage) held, paging through the search.
fn held(d: &Daemon) -> std::collections::BTreeSet<(String, String)> {
    let mut all = std::collections::BTreeSet::new();
    let mut cursor = String::new();
    loop {
        let page = d.ok(d.get("admin", &format!("/v1/consents?created_from=1970-01-01&limit=1000{cursor}")));
        for c in page["items"].as_array().unwrap() {
            all.insert((c["number"].as_str().unwrap().to_string(), c["usage"].as_str().unwrap().to_string()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return all,
        }
    }
}

#[test]
fn a_purge_is_physically_complete_after_the_compaction_the_daemon_schedules() {
    let d = Daemon::start_with("[store]\ncompact_after_purge_secs = 1\n");
    let data = d.dir.path().join("data");
    d.ok(d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
        .body(std::fs::read(fixture("generic.csv")).unwrap())
        .send()
        .unwrap());
    // The number, written again and again: old pages and journal blocks held it many times.
    let n = "+491512345678";
    for i in 0..30 {
        d.ok(d.post(
            "admin",
            "/v1/consents",
            json!({"number": n, "usage": if i % 2 == 0 { "whatsapp" } else { "call_recording" }}),
        ));
        let id = d.search("number=%2B491512345678")[0]["id"].as_str().unwrap().to_string();
        d.ok(d.post("admin", "/v1/consents/toggle", json!({"ids": [id]})));
    }
    let before = held(&d);
    assert!(
        !files_holding(&data, &byte_forms(n)).is_empty(),
        "the store's files hold the number before"
    );
    let ev = d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": n})));
    assert!(ev["physically_done_at"].is_null(), "{ev}");
    // Within compact_after_purge_secs (and at the latest erase_within_hours), the DPO report says the
    // purge is physically done…
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let purge = loop {
        let report = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491512345678"));
        let p = report["numbers"][0]["purges"][0].clone();
        if p["physically_done_at"].is_string() {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "no compaction after the purge: {report}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        purge["physically_done_at"].as_str().unwrap() >= purge["at"].as_str().unwrap(),
        "{purge}"
    );
    // …and no file of the data directory holds any byte form of the number.
    assert_eq!(files_holding(&data, &byte_forms(n)), Vec::<String>::new());
    // Everything else is still held.
    let after = held(&d);
    let expected: std::collections::BTreeSet<_> = before.into_iter().filter(|(num, _)| num != n).collect();
    assert_eq!(after, expected);
    let metrics = d.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("consentd_store_compactions_total 1"), "{metrics}");
    assert!(metrics.contains("consentd_store_disk_bytes "), "{metrics}");
    let store = d.ok(d.get("admin", "/v1/store"));
    assert!(store["live_bytes"].as_u64().unwrap() > 0, "{store}");
    assert_eq!(store["oldest_purge_not_physically_done"], Value::Null, "{store}");
}

#[test]
fn compactions_killed_at_any_moment_lose_no_acknowledged_write() {
    let mut d = Daemon::start();
    let mut rows = String::from("phone,channel,consent,created_at,updated_at\n");
    for i in 0..60_000 {
        rows.push_str(&format!(
            "+4915{:08},whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n",
            20_000_000 + i
        ));
    }
    d.ok(d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
        .body(rows)
        .send()
        .unwrap());
    let mut acknowledged: std::collections::BTreeSet<(String, String)> = held(&d);
    assert_eq!(acknowledged.len(), 60_000);
    let trials = 20;
    let mut killed_during = 0;
    for trial in 0..trials {
        let base = d.base.clone();
        // A writer adding consents, and a compaction asked for over the API, both cut off by the kill.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (base, stop) = (base.clone(), stop.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::new();
                let mut ok = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let number = format!("+4917{:04}{:04}", trial, i);
                    let r = http
                        .post(format!("{base}/v1/consents"))
                        .bearer_auth("s-admin")
                        .json(&json!({"number": number, "usage": "call_recording"}))
                        .send();
                    if r.is_ok_and(|r| r.status().is_success()) {
                        ok.push((number, "call_recording".to_string()));
                    }
                    i += 1;
                }
                ok
            })
        };
        let compacting = std::thread::spawn(move || {
            reqwest::blocking::Client::new()
                .post(format!("{base}/v1/store/compact"))
                .bearer_auth("s-admin")
                .send()
                .map(|r| r.status().is_success())
                .unwrap_or(false)
        });
        // A moment within the compaction (it takes a few hundred ms here), different each trial.
        std::thread::sleep(std::time::Duration::from_millis(5 + (trial as u64 * 23) % 150));
        let finished_before = compacting.is_finished();
        let pid = d.child.as_ref().unwrap().id();
        std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
        let _ = d.child.take().unwrap().wait();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        acknowledged.extend(writer.join().unwrap());
        let _ = compacting.join();
        if !finished_before {
            killed_during += 1;
        }
        d.spawn();
        let now = held(&d);
        let lost: Vec<_> = acknowledged.difference(&now).take(5).collect();
        assert!(lost.is_empty(), "trial {trial}: acknowledged writes lost: {lost:?}");
    }
    eprintln!(
        "{trials} kills, {killed_during} during a compaction; {} acknowledged writes, none lost",
        acknowledged.len()
    );
    assert!(
        killed_during >= trials / 2,
        "most kills came during a compaction ({killed_during} of {trials})"
    );
    // At most one generation is left after the restarts.
    let gens: Vec<String> = std::fs::read_dir(d.dir.path().join("data"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    assert!(gens.len() <= 1, "{gens:?}");
}
