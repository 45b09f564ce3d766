//! Black-box tests of the admin HTTP API: the real daemon on port 0 with its store in a temp dir,
//! talked to over HTTP with a real client.

mod common;

use common::{fixture, refused, root, Daemon};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::Command;

#[test]
fn every_route_refuses_callers_without_a_token_or_the_right() {
    let d = Daemon::start();
    // (method, path, body, a token that lacks the right)
    let routes: &[(&str, &str, Value, &str)] = &[
        ("GET", "/v1/consents?digits=678", Value::Null, "creator"),
        (
            "POST",
            "/v1/consents",
            json!({"number": "+491512345678", "usage": "whatsapp"}),
            "viewer",
        ),
        ("PUT", "/v1/consents/w-72706b344e", json!({"consent": false}), "viewer"),
        ("POST", "/v1/consents/toggle", json!({"ids": ["w-72706b344e"]}), "viewer"),
        ("POST", "/v1/consents/delete", json!({"ids": ["w-72706b344e"]}), "viewer"),
        (
            "POST",
            "/v1/searches",
            json!({"name": "s", "criteria": {"digits": "678"}}),
            "creator",
        ),
        ("GET", "/v1/searches", Value::Null, "creator"),
        ("GET", "/v1/searches/s/results", Value::Null, "creator"),
        ("DELETE", "/v1/searches/s", Value::Null, "creator"),
        ("POST", "/v1/imports?mapping=generic-csv", Value::Null, "viewer"),
        ("GET", "/v1/exports?mapping=generic-csv", Value::Null, "viewer"),
        ("GET", "/v1/imports/1", Value::Null, "viewer"),
        ("GET", "/v1/mappings", Value::Null, "viewer"),
        ("GET", "/v1/audit", Value::Null, "viewer"),
        ("GET", "/v1/audit/events", Value::Null, "viewer"),
        ("GET", "/v1/dpo/report?number=%2B491512345678", Value::Null, "admin"),
        ("POST", "/v1/dpo/purge", json!({"number": "+491512345678"}), "admin"),
        ("POST", "/v1/dpo/reset", json!({"confirm": "DELETE ALL CONSENTS"}), "admin"),
        (
            "POST",
            "/v1/ivr/answer",
            json!({"number": "+491512345678", "digit": "1"}),
            "creator",
        ),
        ("GET", "/v1/checks/recording/%2B491512345678", Value::Null, "creator"),
        ("GET", "/v1/checks/whatsapp/%2B491512345678", Value::Null, "creator"),
        ("GET", "/v1/sync", Value::Null, "viewer"),
        ("POST", "/v1/sync/crm/run", Value::Null, "viewer"),
        ("GET", "/v1/sync/crm/dead-letters", Value::Null, "viewer"),
        ("POST", "/v1/sync/crm/dead-letters/1/replay", Value::Null, "viewer"),
        ("GET", "/v1/sync/crm/refused", Value::Null, "viewer"),
        ("POST", "/v1/sync/crm/refused/1/resend", Value::Null, "viewer"),
        ("POST", "/v1/sync/crm/refused/1/dismiss", json!({"note": "n"}), "viewer"),
        ("GET", "/v1/sync/crm/erasures", Value::Null, "viewer"),
        ("POST", "/v1/sync/crm/erasures/ab/handled", json!({"note": "n"}), "viewer"),
        ("POST", "/v1/sync/crm/watermark", json!({"watermark": null}), "viewer"),
        ("GET", "/v1/store", Value::Null, "viewer"),
        ("POST", "/v1/store/compact", Value::Null, "dpo-office"),
        ("GET", "/v1/me", Value::Null, ""),
    ];
    for (method, path, body, lacking) in routes {
        let m: reqwest::Method = method.parse().unwrap();
        let mut bare = d.http.request(m.clone(), d.url(path));
        if !body.is_null() {
            bare = bare.json(body);
        }
        assert_eq!(
            bare.send().unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token"
        );
        let mut wrong = d.http.request(m.clone(), d.url(path)).bearer_auth("not-a-token");
        if !body.is_null() {
            wrong = wrong.json(body);
        }
        assert_eq!(
            wrong.send().unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} unknown token"
        );
        if !lacking.is_empty() {
            let mut req = d.as_(lacking, m, path);
            if !body.is_null() {
                req = req.json(body);
            }
            refused(req.send().unwrap(), StatusCode::FORBIDDEN, None);
        }
    }
    // Nothing was written by any refused call.
    assert!(d.search("created_from=1970-01-01").is_empty());
    // Health and metrics need no token.
    assert_eq!(d.http.get(d.url("/healthz")).send().unwrap().status(), StatusCode::OK);
    assert_eq!(d.http.get(d.url("/readyz")).send().unwrap().status(), StatusCode::OK);
    let me = d.ok(d.get("dpo-office", "/v1/me"));
    assert_eq!(me, json!({"name": "dpo-office", "rights": ["view", "dpo"]}));

    // The OpenAPI description (no token needed) lists exactly the routes of this table: each route
    // matches one of its operations, and each of its /v1 operations is a route here.
    let spec: Value = d.http.get(d.url("/openapi.json")).send().unwrap().json().unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3.1"), "{}", spec["openapi"]);
    let mut operations: Vec<(String, String)> = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            operations.push((method.to_uppercase(), template.clone()));
        }
    }
    let matches = |template: &str, path: &str| {
        let path = path.split('?').next().unwrap();
        let (t, p): (Vec<&str>, Vec<&str>) = (template.split('/').collect(), path.split('/').collect());
        t.len() == p.len() && t.iter().zip(&p).all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()))
    };
    for (method, path, _, _) in routes {
        assert!(
            operations.iter().any(|(m, t)| m == method && matches(t, path)),
            "{method} {path} is not in /openapi.json"
        );
    }
    for (m, t) in operations.iter().filter(|(_, t)| t.starts_with("/v1/")) {
        assert!(
            routes.iter().any(|(method, path, _, _)| m == method && matches(t, path)),
            "{m} {t} of /openapi.json is not a route of the rights table"
        );
        let op = &spec["paths"][t][m.to_lowercase()];
        for status in ["400", "401", "403"] {
            assert!(
                op["responses"][status]["content"]["application/json"].is_object(),
                "{m} {t}: {status}"
            );
        }
    }
}

#[test]
fn the_consent_view_operations_work_and_are_audited() {
    let d = Daemon::start();
    // Add: 201, then again (needs modify) 200.
    let r = d.post("admin", "/v1/consents", json!({"number": "0151 2345678", "usage": "whatsapp"}));
    assert_eq!(r.status(), StatusCode::CREATED);
    let c: Value = r.json().unwrap();
    assert_eq!(c["number"], "+491512345678");
    assert_eq!(c["consent"], true);
    assert_eq!(c["source"], "agent:admin");
    let id = c["id"].as_str().unwrap().to_string();
    assert!(!id.contains("1512345678"));
    assert_eq!(
        d.post("admin", "/v1/consents", json!({"number": "+491512345678", "usage": "whatsapp"}))
            .status(),
        StatusCode::OK
    );
    // creator may add new ones but not touch an existing one.
    assert_eq!(
        d.post(
            "creator",
            "/v1/consents",
            json!({"number": "+491519999999", "usage": "call_recording"})
        )
        .status(),
        StatusCode::CREATED
    );
    refused(
        d.post("creator", "/v1/consents", json!({"number": "+491512345678", "usage": "whatsapp"})),
        StatusCode::FORBIDDEN,
        None,
    );
    // Set: idempotent.
    for _ in 0..2 {
        let v = d.ok(d
            .as_("admin", reqwest::Method::PUT, &format!("/v1/consents/{id}"))
            .json(&json!({"consent": false}))
            .send()
            .unwrap());
        assert_eq!(v["consent"], false);
    }
    refused(
        d.as_("admin", reqwest::Method::PUT, "/v1/consents/w-1")
            .json(&json!({"consent": false}))
            .send()
            .unwrap(),
        StatusCode::BAD_REQUEST,
        Some("id"),
    );
    // Toggle flips; unknown ids are reported, not fatal.
    let unknown = "r-72706b344e";
    let t = d.ok(d.post("admin", "/v1/consents/toggle", json!({"ids": [id, unknown]})));
    let r0 = &t["results"][0];
    assert_eq!(
        (&r0["id"], &r0["outcome"], &r0["consent"], &r0["source"]),
        (&json!(id), &json!("updated"), &json!(true), &json!("agent:admin"))
    );
    // With its new times, so a page can show the row as it now is.
    assert!(r0["created_at"].is_string() && r0["created_at"] == r0["updated_at"], "{r0}");
    assert_eq!(t["results"][1]["outcome"], "not_found");
    // Sorted by another column than creation time, with a total; a sort or cursor it does not know is
    // refused naming the field.
    let sorted = d.ok(d.get("viewer", "/v1/consents?digits=678&sort=-usage&count=true"));
    let usages: Vec<&str> = sorted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["usage"].as_str().unwrap())
        .collect();
    let mut expected = usages.clone();
    expected.sort_by(|a, b| b.cmp(a));
    assert_eq!(
        (usages.clone(), sorted["total"].as_u64()),
        (expected, Some(usages.len() as u64)),
        "{sorted}"
    );
    refused(
        d.get("viewer", "/v1/consents?digits=678&sort=colour"),
        StatusCode::BAD_REQUEST,
        Some("sort"),
    );
    refused(
        d.get("viewer", "/v1/consents?digits=678&sort=number&cursor=abc"),
        StatusCode::BAD_REQUEST,
        Some("cursor"),
    );
    // Search by each criterion.
    assert_eq!(d.search("number=%2B49%20151%202345678").len(), 1);
    assert_eq!(d.search("digits=5678").len(), 1);
    assert_eq!(d.search("digits=99999").len(), 1);
    assert_eq!(d.search("usage=whatsapp").len(), 1);
    assert_eq!(d.search("consent=true").len(), 2);
    assert_eq!(d.search("consent=false").len(), 0);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(d.search(&format!("created_from={today}&created_to={today}")).len(), 2);
    assert_eq!(d.search("created_to=2000-01-01").len(), 0);
    refused(d.get("admin", "/v1/consents"), StatusCode::BAD_REQUEST, None);
    refused(d.get("admin", "/v1/consents?usage=fax"), StatusCode::BAD_REQUEST, Some("usage"));
    refused(d.get("admin", "/v1/consents?digits=12"), StatusCode::BAD_REQUEST, Some("digits"));
    refused(
        d.get("admin", "/v1/consents?created_from=yesterday"),
        StatusCode::BAD_REQUEST,
        Some("created_from"),
    );
    refused(d.get("admin", "/v1/consents?colour=red"), StatusCode::BAD_REQUEST, None);
    refused(
        d.get("admin", "/v1/consents?consent=true&cursor=zz"),
        StatusCode::BAD_REQUEST,
        Some("cursor"),
    );
    // Paging with a cursor walks every result once, in creation order.
    let p1 = d.ok(d.get("admin", "/v1/consents?consent=true&limit=1"));
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = d.ok(d.get("admin", &format!("/v1/consents?consent=true&limit=1&cursor={cursor}")));
    assert_eq!(p2["next_cursor"], Value::Null);
    assert_ne!(p1["items"][0]["id"], p2["items"][0]["id"]);
    assert!(p1["items"][0]["created_at"].as_str() <= p2["items"][0]["created_at"].as_str());
    // Delete.
    let r = d.ok(d.post("admin", "/v1/consents/delete", json!({"ids": [id, unknown]})));
    assert_eq!(r["results"][0]["outcome"], "deleted");
    assert_eq!(r["results"][1]["outcome"], "not_found");
    assert!(d.search("digits=5678").is_empty());
    // The audit trail: who did what, kept after the delete.
    let a = d.ok(d.get("admin", "/v1/audit?number=%2B491512345678"));
    let items = a["items"].as_array().unwrap();
    let kinds: Vec<(Value, Value)> = items
        .iter()
        .map(|e| (e["before"]["consent"].clone(), e["after"]["consent"].clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (Value::Null, json!(true)),
            (json!(true), json!(false)),
            (json!(false), json!(true)),
            (json!(true), Value::Null)
        ]
    );
    assert!(items.iter().all(|e| e["actor"] == "admin"));
    let by_creator = d.ok(d.get("admin", "/v1/audit?actor=creator"));
    assert_eq!(by_creator["items"].as_array().unwrap().len(), 1);
    let page = d.ok(d.get("admin", "/v1/audit?limit=2"));
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let rest = d.ok(d.get("admin", &format!("/v1/audit?cursor={}", page["next_cursor"].as_str().unwrap())));
    assert_eq!(rest["items"].as_array().unwrap().len(), 3);
    assert_eq!(d.ok(d.get("admin", "/v1/audit?to=2000-01-01"))["items"], json!([]));
}

#[test]
fn bad_requests_get_the_field_and_the_reason_and_write_nothing() {
    let d = Daemon::start_with("[http]\nmax_json_kb = 4\nmax_import_mb = 1\n");
    let post_raw = |body: &str| {
        d.as_("admin", reqwest::Method::POST, "/v1/consents")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    refused(post_raw("{\"number\": \"+491512345678\", "), StatusCode::BAD_REQUEST, None);
    refused(
        post_raw("{\"number\": 491512345678, \"usage\": \"whatsapp\"}"),
        StatusCode::BAD_REQUEST,
        Some("number"),
    );
    refused(
        post_raw("{\"number\": \"+491512345678\", \"usage\": \"fax\"}"),
        StatusCode::BAD_REQUEST,
        Some("usage"),
    );
    refused(
        post_raw("{\"number\": \"+491512345678\", \"usage\": \"whatsapp\", \"admin\": true}"),
        StatusCode::BAD_REQUEST,
        Some("admin"),
    );
    let bad = refused(
        post_raw("{\"number\": \"+49 151 CALL ME\", \"usage\": \"whatsapp\"}"),
        StatusCode::BAD_REQUEST,
        Some("number"),
    );
    assert!(bad["message"].as_str().unwrap().contains("not a digit"), "{bad}");
    refused(
        post_raw("{\"number\": \"+49 12\", \"usage\": \"whatsapp\"}"),
        StatusCode::BAD_REQUEST,
        Some("number"),
    );
    let ids: Vec<String> = (0..1000).map(|i| format!("w-{i:x}")).collect();
    refused(
        d.post("admin", "/v1/consents/delete", json!({ "ids": ids })),
        StatusCode::PAYLOAD_TOO_LARGE,
        None,
    );
    refused(
        d.post("admin", "/v1/consents/toggle", json!({"ids": ["w-1"]})),
        StatusCode::BAD_REQUEST,
        Some("ids[0]"),
    );
    refused(
        d.post("admin", "/v1/consents/toggle", json!({"ids": "w-1"})),
        StatusCode::BAD_REQUEST,
        Some("ids"),
    );
    // An oversized header is refused by the HTTP layer.
    let huge = "x".repeat(1 << 20);
    let r = d
        .as_("admin", reqwest::Method::GET, "/v1/consents?digits=123")
        .header("x-big", huge)
        .send();
    assert!(r.map_or(true, |r| r.status().is_client_error()));
    // An import over the size limit: 413 and nothing imported.
    let mut big = String::from("phone,channel,consent,created_at,updated_at\n");
    for i in 0..30_000 {
        big.push_str(&format!(
            "+4915{:08},whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n",
            10_000_000 + i
        ));
    }
    assert!(big.len() > 1 << 20);
    let r = d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
        .body(big)
        .send()
        .unwrap();
    refused(r, StatusCode::PAYLOAD_TOO_LARGE, None);
    // Mapping names only, never paths. (A new connection: the server closed the one it refused early.)
    let r = reqwest::blocking::Client::new()
        .post(d.url("/v1/imports?mapping=../tests/x"))
        .bearer_auth("s-admin")
        .body("a")
        .send()
        .unwrap();
    refused(r, StatusCode::BAD_REQUEST, Some("mapping"));
    refused(d.get("admin", "/v1/exports?mapping=nope"), StatusCode::BAD_REQUEST, Some("mapping"));
    assert!(d.search("created_from=1970-01-01").is_empty(), "nothing was written");
    refused(d.get("admin", "/v1/nowhere"), StatusCode::NOT_FOUND, None);
}

#[test]
fn saved_searches_belong_to_their_token() {
    let d = Daemon::start();
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491512345678", "usage": "whatsapp"})));
    let s = d.post(
        "viewer",
        "/v1/searches",
        json!({"name": "mine", "criteria": {"digits": "45 678", "usage": "whatsapp"}}),
    );
    assert_eq!(s.status(), StatusCode::CREATED);
    assert_eq!(d.ok(s)["criteria"], json!({"digits": "45678", "usage": "whatsapp"}));
    refused(
        d.post("viewer", "/v1/searches", json!({"name": "bad", "criteria": {"digits": "1"}})),
        StatusCode::BAD_REQUEST,
        Some("criteria.digits"),
    );
    refused(
        d.post("viewer", "/v1/searches", json!({"name": "empty", "criteria": {}})),
        StatusCode::BAD_REQUEST,
        Some("criteria"),
    );
    let list = d.ok(d.get("viewer", "/v1/searches"));
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let res = d.ok(d.get("viewer", "/v1/searches/mine/results"));
    assert_eq!(res["items"][0]["number"], "+491512345678");
    // Another token sees nothing of it; manage may look with ?owner=.
    assert_eq!(d.ok(d.get("dpo-office", "/v1/searches"))["items"], json!([]));
    refused(d.get("dpo-office", "/v1/searches/mine/results"), StatusCode::NOT_FOUND, None);
    refused(d.get("dpo-office", "/v1/searches?owner=viewer"), StatusCode::FORBIDDEN, None);
    assert_eq!(d.ok(d.get("admin", "/v1/searches?owner=*"))["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        d.ok(d.get("admin", "/v1/searches/mine/results?owner=viewer"))["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let del = d.as_("viewer", reqwest::Method::DELETE, "/v1/searches/mine").send().unwrap();
    assert_eq!(del.status(), StatusCode::NO_CONTENT);
    refused(d.get("viewer", "/v1/searches/mine/results"), StatusCode::NOT_FOUND, None);
}

#[test]
fn imports_and_exports_over_http() {
    let d = Daemon::start();
    let file = std::fs::read(fixture("generic.csv")).unwrap();
    let rows = file.iter().filter(|b| **b == b'\n').count() - 1;
    // A dry run reports and writes nothing.
    let dry = d.ok(d
        .as_("importer", reqwest::Method::POST, "/v1/imports?mapping=generic-csv&dry_run=true")
        .body(file.clone())
        .send()
        .unwrap());
    assert_eq!(dry["inserted"].as_u64().unwrap() as usize, rows);
    assert!(d.search("created_from=1970-01-01").is_empty());
    let r = d.ok(d
        .as_("importer", reqwest::Method::POST, "/v1/imports?mapping=generic-csv&name=crm.csv")
        .body(file.clone())
        .send()
        .unwrap());
    assert_eq!(r["inserted"].as_u64().unwrap() as usize, rows);
    assert_eq!(r["files"], json!(["crm.csv"]));
    assert_eq!(d.search("created_from=1970-01-01").len(), rows);
    // A file with a refused row: the rest is taken, the row reported with where and why; a caller
    // without view does not see the refused value.
    let mut text = String::from_utf8(file.clone()).unwrap();
    text.push_str("+49 151 NOPE,whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n");
    let r = d.ok(d
        .as_("importer", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
        .body(text.clone())
        .send()
        .unwrap());
    assert_eq!(r["rejected"], 1);
    assert_eq!(r["unchanged"].as_u64().unwrap() as usize, rows);
    let reject = &r["rejects"][0];
    assert_eq!(reject["line"].as_u64().unwrap() as usize, rows + 2);
    assert_eq!(reject["field"], "number (column phone)");
    assert_eq!(reject["value"], Value::Null);
    let r = d.ok(d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=generic-csv&strict=true")
        .body(text)
        .send()
        .unwrap());
    assert_eq!(r["applied"], false);
    assert_eq!(r["rejects"][0]["value"], "+49 151 NOPE");
    // A field larger than import.max_field_bytes refuses its record with where and why; the report
    // shows a prefix of it, and the other rows are taken.
    let huge = format!(
        "phone,channel,consent,created_at,updated_at\n+491510000000,whatsapp,\"{}\",2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n+491510000000,call_recording,true,2025-05-20T14:17:53Z,2025-05-21T04:21:44Z\n",
        "y".repeat(1 << 20)
    );
    let r = d.ok(d
        .as_("admin", reqwest::Method::POST, "/v1/imports?mapping=generic-csv")
        .body(huge)
        .send()
        .unwrap());
    assert_eq!((r["rejected"].as_u64(), r["unchanged"].as_u64()), (Some(1), Some(1)), "{r}");
    let reject = &r["rejects"][0];
    assert_eq!(
        (reject["line"].as_u64(), reject["field"].as_str()),
        (Some(2), Some("consent")),
        "{reject}"
    );
    assert!(
        reject["reason"]
            .as_str()
            .unwrap()
            .contains("1048576 bytes, more than import.max_field_bytes (65536)"),
        "{reject}"
    );
    assert!(reject["value"].as_str().unwrap().len() < 100, "{reject}");
    // Export: the same rows back, streamed.
    let out = d.get("importer", "/v1/exports?mapping=generic-csv");
    assert_eq!(out.status(), StatusCode::OK);
    assert_eq!(out.headers()["content-type"], "text/csv");
    let body = out.text().unwrap();
    assert_eq!(body.lines().count(), rows + 1);
    let out = d.get("importer", "/v1/exports?mapping=generic-ndjson&usage=whatsapp");
    let n = out.text().unwrap().lines().count();
    assert_eq!(n, d.search("usage=whatsapp").len());
    let metrics = d.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert!(metrics.contains("consentd_imports_total{outcome=\"refused\"} 3"), "{metrics}");
    assert!(metrics.contains("consentd_imports_total{outcome=\"clean\"} 1"), "{metrics}");
    assert!(metrics.contains("consentd_imports_total{outcome=\"dry_run\"} 1"), "{metrics}");
    assert!(
        metrics.contains(&format!("consentd_import_records_total{{outcome=\"inserted\"}} {rows}")),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/v1/imports\",status=\"200\""), "{metrics}");
    // Request durations as a histogram per route (p50/p99 from the buckets), exports counted.
    assert!(
        metrics
            .contains("consentd_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/imports\",status=\"200\",le=\"0.005\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("consentd_exports_total{outcome=\"ok\"} 2"), "{metrics}");
    let total: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("consentd_consents{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total as usize, rows);
    assert!(!metrics.contains("+49") && !metrics.contains("4915"), "no numbers in metrics");
}

#[test]
fn a_background_import_shows_its_progress_then_its_report() {
    let d = Daemon::start();
    // A file large enough to be seen running: 200,000 rows, one refused.
    let mut text = String::from("phone,channel,consent,created_at,updated_at\n");
    for i in 0..200_000u32 {
        text.push_str(&format!("+4915{i:08},whatsapp,true,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z\n"));
    }
    text.push_str("+49 151 NOPE,whatsapp,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n");
    let size = text.len() as u64;
    let r = d
        .as_(
            "importer",
            reqwest::Method::POST,
            "/v1/imports?mapping=generic-csv&background=true&name=big.csv",
        )
        .body(text)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let job: Value = r.json().unwrap();
    let path = job["status"].as_str().unwrap().to_string();
    assert_eq!(path, format!("/v1/imports/{}", job["job"]));
    // Another token does not see the job, not even with the same rights.
    refused(d.get("admin", &path), StatusCode::NOT_FOUND, None);
    let mut seen_read = Vec::new();
    let status = loop {
        let s = d.ok(d.get("importer", &path));
        assert_eq!(s["bytes_total"], size);
        seen_read.push(s["bytes_read"].as_u64().unwrap());
        if s["state"] != "running" {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(seen_read.windows(2).all(|w| w[0] <= w[1]), "progress only grows: {seen_read:?}");
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["bytes_read"], size);
    let report = &status["report"];
    assert_eq!(report["inserted"], 200_000);
    assert_eq!(report["rejected"], 1);
    assert_eq!(report["files"], json!(["big.csv"]));
    assert_eq!(report["rejects"][0]["line"], 200_002);
    assert_eq!(report["rejects"][0]["value"], Value::Null, "the importer may not view numbers");
    assert_eq!(d.search("usage=whatsapp&consent=true").len(), 1000, "a page of the 200,000 stored");
    // A job that fails reports the error as the API gives it; an unknown job is 404.
    let r = d
        .as_(
            "importer",
            reqwest::Method::POST,
            "/v1/imports?mapping=no-such-mapping&background=true",
        )
        .body("x")
        .send()
        .unwrap();
    refused(r, StatusCode::BAD_REQUEST, Some("mapping"));
    refused(d.get("importer", "/v1/imports/999"), StatusCode::NOT_FOUND, None);
    refused(d.get("importer", "/v1/imports/abc"), StatusCode::BAD_REQUEST, None);
    // The mappings an import may name, with their format.
    let m = d.ok(d.get("importer", "/v1/mappings"));
    let names: Vec<&str> = m["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"generic-csv") && names.contains(&"sinch-contact-pro"), "{m}");
    let sinch = m["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "sinch-contact-pro")
        .unwrap();
    assert_eq!(sinch["format"], "tsv");
    // A stop signal during a background import lets it finish: all of it is there after a restart.
    let mut text = String::from("phone,channel,consent,created_at,updated_at\n");
    for i in 0..100_000u32 {
        text.push_str(&format!(
            "+4917{i:08},call_recording,false,2024-01-01T00:00:00Z,2024-01-02T00:00:00Z\n"
        ));
    }
    let r = d
        .as_("importer", reqwest::Method::POST, "/v1/imports?mapping=generic-csv&background=true")
        .body(text)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut d = d;
    d.stop();
    d.spawn();
    let stored = d.ok(d.get("admin", "/v1/consents?usage=call_recording&consent=false&limit=1000"));
    assert_eq!(stored["items"].as_array().unwrap().len(), 1000);
    let last = d.ok(d.get("admin", "/v1/consents?number=%2B491700099999"));
    assert_eq!(last["items"].as_array().unwrap().len(), 1, "the last row of the file is stored");
}

#[test]
fn a_broken_mapping_is_listed_with_its_problems() {
    let mappings = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("mappings/generic-csv.toml"), mappings.path().join("good.toml")).unwrap();
    std::fs::write(mappings.path().join("broken.toml"), "[format]\nkind = \"yaml\"\n").unwrap();
    let d = Daemon::start_with_mappings("", mappings.path());
    let m = d.ok(d.get("importer", "/v1/mappings"));
    let items = m["items"].as_array().unwrap();
    let named = |name: &str| items.iter().find(|i| i["name"] == name).unwrap_or_else(|| panic!("{name}: {m}"));
    assert!(!named("broken")["problems"].as_array().unwrap().is_empty(), "{m}");
    assert_eq!(named("good"), &json!({"name": "good", "format": "csv"}));
    // The shipped mappings are built in, so they are there too.
    assert_eq!(named("sinch-contact-pro"), &json!({"name": "sinch-contact-pro", "format": "tsv"}));
    assert_eq!(items.len(), 2 + 8, "{m}");
}

#[test]
fn the_page_is_served_with_a_strict_content_security_policy() {
    let d = Daemon::start();
    for (path, kind) in [("/", "text/html"), ("/app.js", "text/javascript"), ("/app.css", "text/css")] {
        let r = d.http.get(d.url(path)).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let h = r.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
    }
    let page = d.http.get(d.url("/")).send().unwrap().text().unwrap();
    // Nothing inline: every script and style comes from the daemon's own files.
    assert!(!page.contains("<script>") && !page.contains("style="), "no inline code");
    let handler = page.split(" on").skip(1).find(|rest| {
        let name: String = rest.chars().take_while(|c| c.is_ascii_lowercase()).collect();
        !name.is_empty() && rest[name.len()..].starts_with('=')
    });
    assert!(handler.is_none(), "no inline event handler: on{}", handler.unwrap_or(""));
    assert!(page.contains("src=\"/app.js\"") && page.contains("href=\"/app.css\""));
    // The API's answers carry the same headers.
    let r = d.get("admin", "/v1/me");
    assert!(r.headers().contains_key("content-security-policy"));
}

#[test]
fn a_dpo_sees_everything_held_on_a_number_and_purges_it() {
    let d = Daemon::start();
    let n = "+491512345678";
    d.ok(d.post("admin", "/v1/consents", json!({"number": n, "usage": "whatsapp"})));
    d.ok(d.post("ivr", "/v1/ivr/answer", json!({"number": n, "digit": "2", "call_id": "c-1"})));
    // An import's change keeps the file and line it was read at.
    let file = "phone,channel,consent,created_at,updated_at\n\
                +4930123456,whatsapp,true,2030-01-01T00:00:00Z,2030-01-01T00:00:00Z\n\
                +49 151 2345678,call_recording,true,2030-01-02T00:00:00Z,2030-01-02T00:00:00Z\n";
    let imported = d.ok(d
        .as_(
            "importer",
            reqwest::Method::POST,
            "/v1/imports?mapping=generic-csv&name=crm%20export.csv",
        )
        .body(file)
        .send()
        .unwrap());
    assert_eq!(imported["updated"], 1, "{imported}");
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491519999999", "usage": "whatsapp"})));
    d.ok(d.post("viewer", "/v1/searches", json!({"name": "by number", "criteria": {"number": n}})));
    d.ok(d.post("viewer", "/v1/searches", json!({"name": "other", "criteria": {"digits": "9999"}})));
    let report = d.ok(d.get("dpo-office", "/v1/dpo/report?number=0151%202345678"));
    let held = &report["numbers"][0];
    assert_eq!(held["number"], n);
    assert_eq!(held["consents"].as_array().unwrap().len(), 2);
    let history = held["history"].as_array().unwrap();
    assert_eq!(history.len(), 3);
    // Each change with its proof: the agent's has none beyond its actor, the IVR's its call, the
    // import's its file and line.
    let origins: Vec<(&Value, &Value, &Value)> = history.iter().map(|h| (&h["source"], &h["actor"], &h["origin"])).collect();
    assert_eq!(
        origins,
        [
            (&json!("agent:admin"), &json!("admin"), &Value::Null),
            (&json!("ivr"), &json!("ivr"), &json!({"call_id": "c-1"})),
            (
                &json!("import:generic-csv"),
                &json!("importer"),
                &json!({"file": "crm export.csv", "line": 3})
            ),
        ]
    );
    for bad in ["", "a\u{7}b", &"x".repeat(201)] {
        refused(
            d.post("ivr", "/v1/ivr/answer", json!({"number": n, "digit": "2", "call_id": bad})),
            StatusCode::BAD_REQUEST,
            Some("call_id"),
        );
    }
    assert_eq!(held["saved_searches"][0]["name"], "by number");
    // As a file to hand over: the same report, with when and by whom, named without the number.
    let file = d.get("dpo-office", "/v1/dpo/report?number=0151%202345678&download=true");
    let disposition = file.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(
        disposition.starts_with("attachment; filename=\"consentd-dpo-report-") && !disposition.contains("2345678"),
        "{disposition}"
    );
    let file: Value = file.json().unwrap();
    assert_eq!(
        (file["numbers"].clone(), file["generated_by"].clone()),
        (report["numbers"].clone(), json!("dpo-office"))
    );
    assert!(file["generated_at"].is_string());
    let by_digits = d.ok(d.get("dpo-office", "/v1/dpo/report?digits=5678"));
    assert_eq!(by_digits["numbers"].as_array().unwrap().len(), 1);
    refused(d.get("dpo-office", "/v1/dpo/report"), StatusCode::BAD_REQUEST, None);
    // Purge: afterwards the report holds nothing but the purge itself (by the number's keyed hash),
    // and only an event without the number remains.
    let ev = d.ok(d.post("dpo-office", "/v1/dpo/purge", json!({"number": n})));
    assert_eq!(ev["removed"], json!({"consents": 2, "audit_entries": 3, "saved_searches": 1}));
    assert_eq!(ev["actor"], "dpo-office");
    let after = d.ok(d.get("dpo-office", "/v1/dpo/report?number=%2B491512345678"))["numbers"].clone();
    assert_eq!(after[0]["purges"][0]["seq"], ev["seq"], "{after}");
    for what in ["consents", "history", "saved_searches", "erasures", "dead_letters"] {
        assert_eq!(after[0][what], json!([]), "{what}: {after}");
    }
    assert_eq!(d.ok(d.get("dpo-office", "/v1/dpo/report?digits=5678"))["numbers"], json!([]));
    assert_eq!(d.ok(d.get("admin", "/v1/audit?number=%2B491512345678"))["items"], json!([]));
    let all_audit = serde_json::to_string(&d.ok(d.get("admin", "/v1/audit?limit=1000"))).unwrap();
    assert!(!all_audit.contains("1512345678"), "{all_audit}");
    let events = d.ok(d.get("dpo-office", "/v1/audit/events"));
    assert_eq!(events["items"][0]["kind"], "purge");
    assert!(!events.to_string().contains("1512345678"));
    assert_eq!(d.ok(d.get("viewer", "/v1/searches"))["items"].as_array().unwrap().len(), 1);
    // The other number is untouched; the purge survives a restart.
    assert_eq!(d.search("digits=9999").len(), 1);
    // Reset empties the store, audited; it needs the confirmation typed out.
    refused(
        d.post("dpo-office", "/v1/dpo/reset", json!({"confirm": "yes"})),
        StatusCode::BAD_REQUEST,
        Some("confirm"),
    );
    let ev = d.ok(d.post("dpo-office", "/v1/dpo/reset", json!({"confirm": "DELETE ALL CONSENTS"})));
    assert_eq!(ev["removed"]["consents"], 2, "+491519999999 and the imported +4930123456");
    assert!(d.search("created_from=1970-01-01").is_empty());
    assert_eq!(
        d.ok(d.get("admin", "/v1/audit?number=%2B491519999999"))["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn the_ivr_stores_answers_and_the_checks_answer_from_them() {
    let d = Daemon::start();
    let n = "%2B491512345678";
    assert_eq!(
        d.ok(d.get("viewer", &format!("/v1/checks/recording/{n}"))),
        json!({"decision": "ask"})
    );
    let r = d.ok(d.post(
        "ivr",
        "/v1/ivr/answer",
        json!({"number": "+491512345678", "digit": "1", "call_id": "abc"}),
    ));
    assert_eq!(r["outcome"], "inserted");
    assert_eq!(r["consent"]["source"], "ivr");
    assert_eq!(r["consent"]["usage"], "call_recording");
    assert_eq!(
        d.ok(d.get("viewer", &format!("/v1/checks/recording/{n}"))),
        json!({"decision": "record"})
    );
    d.ok(d.post("ivr", "/v1/ivr/answer", json!({"number": "+491512345678", "digit": "2"})));
    assert_eq!(
        d.ok(d.get("viewer", &format!("/v1/checks/recording/{n}"))),
        json!({"decision": "do_not_record"})
    );
    d.ok(d.post("ivr", "/v1/ivr/answer", json!({"number": "+491512345678", "accepted": true})));
    assert_eq!(
        d.ok(d.get("viewer", &format!("/v1/checks/recording/{n}"))),
        json!({"decision": "record"})
    );
    for bad in [
        json!({"number": "+491512345678", "digit": "3"}),
        json!({"number": "+491512345678", "digit": "#"}),
    ] {
        refused(d.post("ivr", "/v1/ivr/answer", bad), StatusCode::BAD_REQUEST, Some("digit"));
    }
    refused(
        d.post("ivr", "/v1/ivr/answer", json!({"number": "+491512345678"})),
        StatusCode::BAD_REQUEST,
        None,
    );
    refused(
        d.post(
            "ivr",
            "/v1/ivr/answer",
            json!({"number": "+491512345678", "digit": "1", "accepted": true}),
        ),
        StatusCode::BAD_REQUEST,
        None,
    );
    refused(d.get("viewer", "/v1/checks/recording/12"), StatusCode::BAD_REQUEST, Some("number"));
    let audit = d.ok(d.get("admin", "/v1/audit?number=%2B491512345678"));
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["actor"] == "ivr" && e["source"] == "ivr"));

    // WhatsApp: the 24-hour window at its edges, and templates with a given consent.
    let check = |last: &str, at: &str| -> Value {
        let q = format!(
            "/v1/checks/whatsapp/{n}?last_customer_message_at={}&at={}",
            urlencode(last),
            urlencode(at)
        );
        d.ok(d.get("viewer", &q))
    };
    let last = "2025-03-01T10:00:00Z";
    assert_eq!(check(last, "2025-03-02T09:59:59.999Z")["freeform"], true, "just inside");
    assert_eq!(check(last, "2025-03-02T10:00:00Z")["freeform"], false, "exactly 24 h");
    assert_eq!(check(last, "2025-03-02T10:00:00.001Z")["freeform"], false, "just outside");
    assert_eq!(
        check("2025-03-01T11:00:00+01:00", "2025-03-02T11:59:59+02:00")["freeform"],
        true,
        "other zones"
    );
    assert_eq!(
        check("2025-03-01T11:00:00+01:00", "2025-03-02T06:00:00-04:00")["freeform"],
        false,
        "other zones"
    );
    let none = check(last, "2025-03-01T12:00:00Z");
    assert_eq!(none["template"], false);
    assert!(none["reason"].as_str().unwrap().contains("no WhatsApp consent"));
    d.ok(d.post("admin", "/v1/consents", json!({"number": "+491512345678", "usage": "whatsapp"})));
    let later = check(last, "2025-03-05T12:00:00Z");
    assert_eq!((later["freeform"].clone(), later["template"].clone()), (json!(false), json!(true)));
    let r = d.ok(d.get("viewer", &format!("/v1/checks/whatsapp/{n}")));
    assert_eq!(r["freeform"], false, "no last message: the window is closed");
    refused(
        d.get("viewer", &format!("/v1/checks/whatsapp/{n}?last_customer_message_at=yesterday")),
        StatusCode::BAD_REQUEST,
        Some("last_customer_message_at"),
    );
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[test]
fn graceful_shutdown_loses_no_acknowledged_write() {
    let mut d = Daemon::start();
    let acked = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (d, acked) = (&d, &acked);
            s.spawn(move || {
                for i in 0..10_000u64 {
                    let number = format!("+4916{t}{i:07}");
                    let r = d
                        .http
                        .post(d.url("/v1/consents"))
                        .bearer_auth("s-admin")
                        .json(&json!({"number": number, "usage": "whatsapp"}))
                        .send();
                    match r {
                        Ok(r) if r.status() == StatusCode::CREATED => acked.lock().unwrap().push(number),
                        _ => break,
                    }
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(700));
        d_stop(&d);
    });
    let status = d.child.take().unwrap().wait().unwrap();
    assert!(status.success(), "the daemon exits 0 on SIGTERM");
    let acked = acked.into_inner().unwrap();
    assert!(acked.len() > 10, "some writes were acknowledged before the stop");
    d.spawn();
    let all: usize = {
        let mut n = 0;
        let mut cursor = String::new();
        loop {
            let v = d.ok(d.get("admin", &format!("/v1/consents?usage=whatsapp&limit=1000{cursor}")));
            n += v["items"].as_array().unwrap().len();
            match v["next_cursor"].as_str() {
                Some(c) => cursor = format!("&cursor={c}"),
                None => break n,
            }
        }
    };
    assert!(all >= acked.len(), "held {all}, acknowledged {}", acked.len());
    for number in acked.iter().step_by(97) {
        assert_eq!(
            d.search(&format!("number={}", urlencode(number))).len(),
            1,
            "acknowledged write lost"
        );
    }
    let log = d.stop();
    assert!(!log.contains("panicked"), "{log}");
}

/// Sends SIGTERM without waiting (the writers are still running).
fn d_stop(d: &Daemon) {
    let pid = d.child.as_ref().unwrap().id();
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
}

#[test]
fn start_up_fails_clearly_when_the_port_is_taken_or_the_store_is_held() {
    let d = Daemon::start();
    let addr = d.base.trim_start_matches("http://").to_string();
    // Another store, same port.
    let other = tempfile::tempdir().unwrap();
    let out = d
        .command()
        .arg("serve")
        .env("CONSENTD_DATA_DIR", other.path())
        .env("CONSENTD_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on"), "{err}");
    // Same store, another port: sled is one process's, so refused; PostgreSQL takes several daemons.
    if common::on_postgres() {
        let mut second = d
            .command()
            .arg("serve")
            .env("CONSENTD_LISTEN", "127.0.0.1:0")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(second.stdout.as_mut().unwrap()), &mut line).unwrap();
        second.kill().unwrap();
        second.wait().unwrap();
        assert!(line.starts_with("listening on "), "{line}");
        return;
    }
    let out = d.command().arg("serve").env("CONSENTD_LISTEN", "127.0.0.1:0").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use") && err.contains("--server"), "{err}");
}

#[test]
fn the_command_line_works_through_a_running_daemon() {
    let d = Daemon::start();
    let cli = |args: &[&str]| {
        let out = d
            .command()
            .args(["--server", &d.base])
            .args(args)
            .env("CONSENTD_TOKEN", "s-admin")
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["import", "--mapping", "generic-csv", fixture("generic.csv").to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("inserted 20"), "{out}");
    let (code, out, _) = cli(&["add", "0151 2345678", "--usage", "whatsapp"]);
    assert_eq!(code, 0);
    assert!(out.contains("+491512345678 whatsapp: added"), "{out}");
    let (_, out, _) = cli(&["toggle", "+491512345678"]);
    assert!(out.contains("whatsapp: now false"), "{out}");
    let (_, out, _) = cli(&["search", "--digits", "5678", "--json"]);
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["consent"], false);
    let (_, out, _) = cli(&["set", "+491512345678", "--usage", "call_recording", "--consent", "false"]);
    assert!(out.contains("set to false"), "{out}");
    let (_, out, _) = cli(&["history", "+491512345678"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    let (_, out, _) = cli(&["delete", "+491512345678"]);
    assert!(
        out.contains("call_recording: deleted") && out.contains("whatsapp: deleted"),
        "{out}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out.csv");
    let (code, _, err) = cli(&["export", "--mapping", "generic-csv", "--output", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 21);
    // A refused record: exit status 2, as without the daemon.
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "phone,channel,consent,created_at,updated_at\n+49 151 X,whatsapp,true,,\n").unwrap();
    let (code, out, _) = cli(&["import", "--mapping", "generic-csv", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{out}");
    // The daemon's refusal reaches the user.
    let out = d
        .command()
        .args(["--server", &d.base, "search", "--digits", "5678"])
        .env("CONSENTD_TOKEN", "s-creator")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lacks the right"));
}

#[test]
fn protocol_errors_are_json_and_the_auth_scheme_is_case_insensitive() {
    let d = Daemon::start();
    // The scheme in any case; a 401 names it.
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = d
            .http
            .get(d.url("/v1/me"))
            .header("Authorization", format!("{scheme} s-admin"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{scheme}");
    }
    let r = d.http.get(d.url("/v1/me")).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    // A JSON body with anything after the value is refused, and nothing is written.
    let r = d
        .as_("admin", reqwest::Method::POST, "/v1/consents")
        .header("content-type", "application/json")
        .body(r#"{"number": "+491512345678", "usage": "whatsapp"} this is not JSON"#)
        .send()
        .unwrap();
    let body = refused(r, StatusCode::BAD_REQUEST, None);
    assert!(body["message"].as_str().unwrap().contains("trailing"), "{body}");
    assert!(d.search("number=%2B491512345678").is_empty());
    // A method a route does not take: 405, JSON, with Allow.
    let r = d.as_("admin", reqwest::Method::PATCH, "/v1/consents").send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    // Made-up methods are counted under one label, whatever they are.
    let made_up = reqwest::Method::from_bytes("X".repeat(1000).as_bytes()).unwrap();
    for _ in 0..20 {
        d.http.request(made_up.clone(), d.url("/v1/me")).send().unwrap();
    }
    let metrics = d.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    assert!(!metrics.contains("XXXX"), "a made-up method became a label");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    // A consent id in another spelling of the same hex is not an id.
    let id = d.ok(d.post("admin", "/v1/consents", json!({"number": "+491711111111", "usage": "whatsapp"})))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let put = |id: &str| {
        d.as_("admin", reqwest::Method::PUT, &format!("/v1/consents/{id}"))
            .json(&json!({"consent": false}))
            .send()
            .unwrap()
    };
    refused(put(&id.to_uppercase().replacen("W-", "w-", 1)), StatusCode::BAD_REQUEST, Some("id"));
    d.ok(put(&id));
    // A path axum cannot read (an id that is not a number): JSON too.
    let r = d.post("admin", "/v1/sync/crm/refused/not-a-number/resend", Value::Null);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"], "invalid", "{body}");
}

/// Reads until the daemon closes the connection (or `limit` passes): what it sent, and whether it closed.
fn read_until_closed(s: &mut std::net::TcpStream, limit: std::time::Duration) -> (String, bool) {
    use std::io::Read;
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A reset is a close too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (String::from_utf8_lossy(&got).into_owned(), true),
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

#[test]
fn idle_and_half_sent_connections_are_closed_and_cannot_keep_others_out() {
    use std::io::Write;
    use std::net::TcpStream;
    use std::time::Duration;
    let mut d = Daemon::start_with(
        "[http]\nheader_timeout_secs = 1\nidle_timeout_secs = 6\nbody_timeout_secs = 30\nmax_connections = 24\nshutdown_grace_secs = 1\n",
    );
    let addr = d.url("").trim_start_matches("http://").to_string();
    let connect = || TcpStream::connect(&addr).unwrap();

    // A socket that sends nothing, and one that sends half a head, are closed after the head timeout.
    let mut silent = connect();
    let mut half = connect();
    half.write_all(b"GET /v1/me HTTP/1.1\r\nHost: x\r\n").unwrap();
    for s in [&mut silent, &mut half] {
        let (_, closed) = read_until_closed(s, Duration::from_secs(20));
        assert!(closed, "a connection without a whole request head is closed");
    }

    // A keep-alive connection that got its answer stays open past the head timeout (the idle timeout
    // is longer) and serves a second request.
    let mut kept = connect();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    kept.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 1024];
    let n = std::io::Read::read(&mut kept, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(2500));
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_until_closed(&mut kept, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200") && closed, "{answer:?}");

    // Three times the cap of idle sockets: health checks and callers with a token are still served.
    let flood: Vec<TcpStream> = (0..72).map(|_| connect()).collect();
    for _ in 0..5 {
        assert_eq!(d.http.get(d.url("/healthz")).send().unwrap().status(), StatusCode::OK);
        assert_eq!(d.get("admin", "/v1/me").status(), StatusCode::OK);
    }
    let metrics = d.http.get(d.url("/metrics")).send().unwrap().text().unwrap();
    let closed = |reason: &str| -> u64 {
        let key = format!("consentd_http_connections_closed_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&key))
            .unwrap_or_else(|| panic!("{key} in {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(closed("evicted") >= 48, "{metrics}");
    assert!(closed("header_timeout") >= 2, "{metrics}");
    drop(flood);

    // A request whose body stops half-way does not keep the daemon from stopping: after the grace
    // period its connection is dropped and the daemon exits cleanly.
    let mut stuck = connect();
    let secret = common::TOKENS.iter().find(|t| t.0 == "admin").unwrap().1;
    write!(
        stuck,
        "POST /v1/consents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"number\""
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let log = d.stop();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "stopped after {:?}\n{log}",
        started.elapsed()
    );
}

#[test]
fn json_logs_carry_the_request_id_route_status_and_latency() {
    let mut d = Daemon::start_logging("", &root().join("mappings"), Some("info,consentd=debug,tower_http=debug"));
    d.stop();
    d.env.push(("CONSENTD_LOG_FORMAT", "json"));
    d.spawn();
    // A request id sent by the client is replaced by one of ours (it could carry anything into the log).
    let r = d
        .as_("admin", reqwest::Method::GET, "/v1/me")
        .header("x-request-id", "+4915123456789")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_ne!(id, "+4915123456789");
    let log = d.stop();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let answered = lines
        .iter()
        .find(|l| l["span"]["id"] == id.as_str() && l["fields"]["status"] == 200)
        .unwrap_or_else(|| panic!("no line of the request {id}:\n{log}"));
    assert_eq!(answered["span"]["route"], "/v1/me");
    assert_eq!(answered["span"]["method"], "GET");
    assert!(
        answered["fields"]["latency"].as_str().is_some_and(|l| l.ends_with("μs")),
        "{answered}"
    );
    assert!(!log.contains("4915123456789"));
    assert!(lines.iter().any(|l| l["fields"]["message"] == "consentd is listening."));
}
