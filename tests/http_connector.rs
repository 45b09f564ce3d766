//! Black-box tests of the HTTP transport: `HttpConnector` against real HTTP servers on 127.0.0.1 (a
//! small axum app, or a raw TCP listener for broken answers). Waits between attempts are recorded by an
//! injected sleep instead of slept, so nothing here depends on timing except the read-timeout tests,
//! which wait for a 1 s timeout to pass.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use consentd::connectors::http::{Delivery, HttpConnector, HttpError, HttpOptions, Page};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

// ---------------------------------------------------------------------------------------------------
// A scripted server.

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// The raw query string (still encoded).
    raw_query: String,
    query: BTreeMap<String, String>,
    /// Lower-case names.
    headers: BTreeMap<String, String>,
    body: String,
    /// 0 for the first request.
    n: usize,
}

/// What the server answers.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    delay: Duration,
}

impl Reply {
    fn ok(body: impl Into<String>) -> Self {
        Self::status(200, body)
    }
    fn status(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }
    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
    fn delay(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Starts an axum app on port 0 in its own thread and runtime, answering every request with `script`.
fn serve(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Server {
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let script = Arc::new(script);
    let log = seen.clone();
    let app = Router::new().fallback(move |req: Request| {
        let script = script.clone();
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let raw_query = parts.uri.query().unwrap_or("").to_owned();
            let reply = {
                let mut log = log.lock().unwrap();
                let s = Seen {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: form_urlencoded::parse(raw_query.as_bytes()).into_owned().collect(),
                    raw_query,
                    headers: parts
                        .headers
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                        .collect(),
                    body: String::from_utf8_lossy(&body).into_owned(),
                    n: log.len(),
                };
                let reply = script(&s);
                log.push(s);
                reply
            };
            if !reply.delay.is_zero() {
                tokio::time::sleep(reply.delay).await;
            }
            let mut resp: Response = (StatusCode::from_u16(reply.status).unwrap(), Body::from(reply.body)).into_response();
            for (k, v) in reply.headers {
                resp.headers_mut()
                    .append(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(&v).unwrap());
            }
            resp
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    Server {
        base: format!("http://{}", rx.recv().unwrap()),
        seen,
    }
}

/// How a raw server answers one connection.
#[derive(Clone, Copy)]
enum Raw {
    /// The whole answer.
    Whole,
    /// Headers announcing the whole body, a third of it, then the connection is closed.
    CutShort,
    /// Headers and a third of the body, then nothing for this long.
    Stall(Duration),
}

/// A bare TCP server answering its n-th connection as `script[n]` says (then `Whole`), always with
/// `body`. Returns its base URL and a count of connections.
fn raw_server(body: String, script: Vec<Raw>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    std::thread::spawn(move || {
        for (i, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let third = &body.as_bytes()[..body.len() / 3];
            match script.get(i).copied().unwrap_or(Raw::Whole) {
                Raw::Whole => {
                    let _ = stream.write_all(answer.as_bytes());
                    let _ = stream.write_all(body.as_bytes());
                }
                Raw::CutShort => {
                    let _ = stream.write_all(answer.as_bytes());
                    let _ = stream.write_all(third);
                    let _ = stream.flush();
                }
                Raw::Stall(d) => {
                    let _ = stream.write_all(answer.as_bytes());
                    let _ = stream.write_all(third);
                    let _ = stream.flush();
                    std::thread::spawn(move || {
                        std::thread::sleep(d);
                        drop(stream);
                    });
                }
            }
        }
    });
    (base, count)
}

// ---------------------------------------------------------------------------------------------------
// The connector side.

type Sleeps = Arc<Mutex<Vec<Duration>>>;

/// A connector from TOML options, with quick defaults for retries and timeouts unless `text` sets
/// them, and a sleep that records the waits instead of sleeping.
fn connector(text: &str) -> (HttpConnector, Sleeps) {
    let mut full = String::new();
    for (key, value) in [
        ("retries", "3"),
        ("backoff_ms", "1"),
        ("max_backoff_ms", "10"),
        ("read_timeout_secs", "5"),
        ("connect_timeout_secs", "5"),
    ] {
        if !text.lines().any(|l| l.trim_start().starts_with(key)) {
            full.push_str(&format!("{key} = {value}\n"));
        }
    }
    full.push_str(text);
    let opts: HttpOptions = toml::from_str(&full).unwrap_or_else(|e| panic!("{full}\n{e}"));
    let sleeps: Sleeps = Arc::default();
    let recorder = sleeps.clone();
    let c = HttpConnector::new(&opts)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_sleep(move |d| recorder.lock().unwrap().push(d));
    (c, sleeps)
}

/// `{"items":[{"id":..},..]}` for ids in `range`, plus `extra` top-level fields.
fn items(range: std::ops::Range<u64>, extra: Value) -> String {
    let list: Vec<Value> = range.map(|id| json!({ "id": id, "number": format!("+4930{id:07}") })).collect();
    let mut doc = json!({ "items": list });
    if let Value::Object(fields) = extra {
        doc.as_object_mut().unwrap().extend(fields);
    }
    doc.to_string()
}

/// Pulls, parsing each page as `items(..)` made it. Returns the outcome, the ids and the page URLs.
fn pull_ids(c: &HttpConnector, since: Option<&str>) -> (Result<(), HttpError>, Vec<u64>, Vec<String>) {
    let mut ids = Vec::new();
    let mut urls = Vec::new();
    let result = c.pull(since, &mut |mut p: Page| {
        urls.push(p.url.clone());
        let mut text = String::new();
        p.body.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("record 1: not JSON: {e}"))?;
        let list = doc["items"].as_array().ok_or("no items array")?;
        ids.extend(list.iter().map(|i| i["id"].as_u64().unwrap()));
        Ok(list.len() as u64)
    });
    (result, ids, urls)
}

/// Every id of `1..=n` exactly once.
fn assert_each_once(ids: &[u64], n: u64) {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    assert_eq!(sorted, (1..=n).collect::<Vec<_>>(), "ids received: {ids:?}");
}

fn param(s: &Seen, key: &str) -> Option<String> {
    s.query.get(key).cloned()
}

// ---------------------------------------------------------------------------------------------------
// Pagination.

#[test]
fn no_pagination_takes_one_page() {
    let server = serve(|_| Reply::ok(items(1..26, json!({}))));
    let (c, _) = connector(&format!("url = \"{}/consents\"", server.base));
    let (result, ids, urls) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 25);
    assert_eq!(urls, [format!("{}/consents", server.base)]);
    assert_eq!(server.requests().len(), 1);
    assert_eq!(server.requests()[0].method, "GET");
}

#[test]
fn page_number_pagination_stops_at_an_empty_page() {
    let server = serve(|s| {
        let page: u64 = s.query["p"].parse().unwrap();
        let per: u64 = s.query["per"].parse().unwrap();
        let from = (page * per + 1).min(26);
        Reply::ok(items(from..(from + per).min(26), json!({})))
    });
    let (c, _) = connector(&format!(
        "url = \"{}/consents\"\npagination = {{ style = \"page\", param = \"p\", start = 0, size_param = \"per\", size = 10 }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 25);
    let pages: Vec<_> = server.requests().iter().map(|s| param(s, "p").unwrap()).collect();
    assert_eq!(
        pages,
        ["0", "1", "2", "3"],
        "pages 0..2 hold records, page 3 is empty and ends the pull"
    );
}

#[test]
fn page_number_pagination_defaults_to_page_from_one() {
    let server = serve(|s| {
        let page: u64 = s.query["page"].parse().unwrap();
        Reply::ok(if page <= 3 {
            items(page * 2 - 1..page * 2 + 1, json!({}))
        } else {
            items(0..0, json!({}))
        })
    });
    let (c, _) = connector(&format!("url = \"{}/consents\"\npagination = {{ style = \"page\" }}", server.base));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 6);
    let pages: Vec<_> = server.requests().iter().map(|s| param(s, "page").unwrap()).collect();
    assert_eq!(pages, ["1", "2", "3", "4"]);
}

/// `offset`/`limit` over `total` records.
fn offset_server(total: u64) -> Server {
    serve(move |s| {
        let offset: u64 = s.query["offset"].parse().unwrap();
        let limit: u64 = s.query["limit"].parse().unwrap();
        let from = (offset + 1).min(total + 1);
        Reply::ok(items(from..(from + limit).min(total + 1), json!({})))
    })
}

#[test]
fn offset_pagination_stops_at_a_short_page() {
    let server = offset_server(25);
    let (c, _) = connector(&format!(
        "url = \"{}/consents\"\npagination = {{ style = \"offset\", size = 10 }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 25);
    let asked: Vec<_> = server
        .requests()
        .iter()
        .map(|s| (param(s, "offset").unwrap(), param(s, "limit").unwrap()))
        .collect();
    assert_eq!(
        asked,
        [("0".into(), "10".into()), ("10".into(), "10".into()), ("20".into(), "10".into())]
    );
}

#[test]
fn offset_pagination_stops_at_an_empty_page() {
    let server = serve(|s| {
        let skip: u64 = s.query["skip"].parse().unwrap();
        let take: u64 = s.query["take"].parse().unwrap();
        let from = (skip + 1).min(21);
        Reply::ok(items(from..(from + take).min(21), json!({})))
    });
    let (c, _) = connector(&format!(
        "url = \"{}/consents\"\npagination = {{ style = \"offset\", offset_param = \"skip\", limit_param = \"take\", size = 10 }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 20);
    let skips: Vec<_> = server.requests().iter().map(|s| param(s, "skip").unwrap()).collect();
    assert_eq!(skips, ["0", "10", "20"], "the third page is empty and ends the pull");
}

#[test]
fn token_pagination_follows_the_token_until_it_is_null() {
    let server = serve(|s| match param(s, "cursor").as_deref() {
        None => Reply::ok(items(1..11, json!({ "meta": { "next_token": "tok A" } }))),
        Some("tok A") => Reply::ok(items(11..21, json!({ "meta": { "next_token": 42 } }))),
        Some("42") => Reply::ok(items(21..26, json!({ "meta": { "next_token": null } }))),
        Some(other) => Reply::status(400, format!("unknown cursor {other}")),
    });
    let (c, _) = connector(&format!(
        "url = \"{}/consents?view=full\"\npagination = {{ style = \"token\", path = \"meta.next_token\", param = \"cursor\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 25);
    let seen = server.requests();
    let cursors: Vec<_> = seen.iter().map(|s| param(s, "cursor")).collect();
    assert_eq!(cursors, [None, Some("tok A".into()), Some("42".into())]);
    assert!(
        seen.iter().all(|s| param(s, "view").as_deref() == Some("full")),
        "the configured query stays"
    );
}

#[test]
fn a_next_page_token_in_a_response_header_is_followed() {
    let server = serve(|s| match param(s, "pageToken").as_deref() {
        None => Reply::ok(items(1..4, json!({}))).header("X-Next-Page", "p2"),
        Some("p2") => Reply::ok(items(4..6, json!({}))).header("X-Next-Page", ""),
        Some(other) => Reply::status(400, format!("unknown token {other}")),
    });
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\npagination = {{ style = \"token\", header = \"X-Next-Page\", param = \"pageToken\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 5);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn after_pagination_asks_for_the_records_after_the_last_id() {
    // Keyset pagination: `?after=<last id>&limit=4`, ids sparse, until an empty page.
    let all: Vec<u64> = vec![3, 7, 8, 20, 21, 35, 36, 90, 91];
    let server = serve(move |s| {
        let after: u64 = param(s, "after").map_or(0, |a| a.parse().unwrap());
        let page: Vec<Value> = all
            .iter()
            .filter(|&&i| i > after)
            .take(4)
            .map(|i| json!({"meta": {"id": i}, "id": i}))
            .collect();
        Reply::ok(json!({"result": {"items": page}}).to_string())
    });
    let (c, _) = connector(&format!(
        "url = \"{}/c?limit=4\"\npagination = {{ style = \"after\", field = \"meta.id\", param = \"after\" }}",
        server.base
    ));
    let c = c.with_records_path(Some("result.items"));
    let mut ids = Vec::new();
    c.pull(None, &mut |mut p: Page| {
        let mut text = String::new();
        p.body.read_to_string(&mut text).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        let list = doc["result"]["items"].as_array().unwrap();
        ids.extend(list.iter().map(|i| i["id"].as_u64().unwrap()));
        Ok(list.len() as u64)
    })
    .unwrap();
    assert_eq!(ids, [3, 7, 8, 20, 21, 35, 36, 90, 91]);
    let afters: Vec<_> = server.requests().iter().map(|s| param(s, "after")).collect();
    assert_eq!(afters, [None, Some("20".into()), Some("90".into()), Some("91".into())]);
}

#[test]
fn token_pagination_stops_at_an_empty_or_absent_token() {
    let server = serve(|s| match param(s, "t").as_deref() {
        None => Reply::ok(items(1..4, json!({ "next": "x" }))),
        Some("x") => Reply::ok(items(4..6, json!({ "next": "" }))),
        Some(_) => Reply::status(400, "no"),
    });
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\npagination = {{ style = \"token\", path = \"next\", param = \"t\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 5);
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn repeated_next_token_stops_with_an_error() {
    let server = serve(|s| Reply::ok(items(s.n as u64 * 2 + 1..s.n as u64 * 2 + 3, json!({ "next": "same" }))));
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\npagination = {{ style = \"token\", path = \"next\", param = \"t\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    let err = result.unwrap_err();
    assert!(matches!(err, HttpError::Failed { .. }), "{err:?}");
    assert!(err.to_string().contains("\"same\" again"), "{err}");
    assert_eq!(server.requests().len(), 2);
    assert_each_once(&ids, 4);
}

#[test]
fn next_url_pagination_resolves_relative_urls() {
    let base = Arc::new(Mutex::new(String::new()));
    let b = base.clone();
    let server = serve(move |s| match (s.path.as_str(), param(s, "after").as_deref()) {
        ("/v1/consents", None) => Reply::ok(items(1..11, json!({ "links": { "next": "consents?after=10" } }))),
        ("/v1/consents", Some("10")) => Reply::ok(items(
            11..21,
            json!({ "links": { "next": format!("{}/v2/more?after=20", b.lock().unwrap()) } }),
        )),
        ("/v2/more", Some("20")) => Reply::ok(items(21..26, json!({ "links": { "next": null } }))),
        _ => Reply::status(404, "where?"),
    });
    *base.lock().unwrap() = server.base.clone();
    let (c, _) = connector(&format!(
        "url = \"{}/v1/consents\"\npagination = {{ style = \"next_url\", path = \"links.next\" }}",
        server.base
    ));
    let (result, ids, urls) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 25);
    assert_eq!(
        urls,
        [
            format!("{}/v1/consents", server.base),
            format!("{}/v1/consents?after=10", server.base),
            format!("{}/v2/more?after=20", server.base)
        ]
    );
}

#[test]
fn link_header_pagination_follows_rel_next() {
    let server = serve(|s| {
        let page: u64 = param(s, "page").map_or(1, |p| p.parse().unwrap());
        let body = items((page - 1) * 10 + 1..(page * 10 + 1).min(26), json!({}));
        let prev = format!("</consents?page={}>; rel=\"prev\"", page.saturating_sub(1).max(1));
        match page {
            1 | 2 => Reply::ok(body).header("Link", &format!("{prev}, </consents?page={}>; rel=\"next\"", page + 1)),
            _ => Reply::ok(body).header("Link", &prev),
        }
    });
    let (c, _) = connector(&format!(
        "url = \"{}/consents\"\npagination = {{ style = \"link_header\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 25);
    let pages: Vec<_> = server.requests().iter().map(|s| param(s, "page")).collect();
    assert_eq!(pages, [None, Some("2".into()), Some("3".into())]);
}

#[test]
fn repeated_next_link_stops_with_an_error() {
    let server = serve(|s| Reply::ok(items(s.n as u64 + 1..s.n as u64 + 2, json!({}))).header("Link", "</consents?page=2>; rel=\"next\""));
    let (c, _) = connector(&format!(
        "url = \"{}/consents\"\npagination = {{ style = \"link_header\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("again"), "{err}");
    assert_eq!(server.requests().len(), 2);
    assert_each_once(&ids, 2);
}

#[test]
fn next_url_to_another_host_is_not_followed() {
    let server = serve(|_| Reply::ok(items(1..3, json!({ "next": "http://localhost:1/steal" }))));
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\npagination = {{ style = \"next_url\", path = \"next\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("not on"), "{err}");
    assert_eq!(server.requests().len(), 1);
    assert_each_once(&ids, 2);
}

#[test]
fn a_server_ignoring_the_page_parameter_is_caught() {
    let server = serve(|_| Reply::ok(items(1..4, json!({}))));
    let (c, _) = connector(&format!("url = \"{}/c\"\npagination = {{ style = \"page\" }}", server.base));
    let (result, ids, _) = pull_ids(&c, None);
    let err = result.unwrap_err();
    assert!(err.to_string().contains("same page again"), "{err}");
    assert_eq!(server.requests().len(), 2);
    assert_each_once(&ids, 3);
}

#[test]
fn pages_larger_than_the_memory_limit_are_spilled_and_read_whole() {
    let server = offset_server(3000);
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\npagination = {{ style = \"offset\", size = 1000 }}",
        server.base
    ));
    let c = c.with_spill_above(4096);
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 3000);
    assert_eq!(server.requests().len(), 4);
}

#[test]
fn since_param_is_sent_on_every_page() {
    let server = serve(|s| {
        let page: u64 = s.query["page"].parse().unwrap();
        Reply::ok(if page <= 2 {
            items(page * 3 - 2..page * 3 + 1, json!({}))
        } else {
            items(0..0, json!({}))
        })
    });
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\nsince_param = \"updated_since\"\npagination = {{ style = \"page\" }}",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, Some("2025-03-01T10:00:00+01:00"));
    result.unwrap();
    assert_each_once(&ids, 6);
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(param(s, "updated_since").as_deref(), Some("2025-03-01T10:00:00+01:00"));
        assert!(s.raw_query.contains("%2B01%3A00"), "the + is encoded: {}", s.raw_query);
    }
    // Without a watermark, nothing is sent.
    let (result, _, _) = pull_ids(&c, None);
    result.unwrap();
    assert!(server.requests()[3..].iter().all(|s| param(s, "updated_since").is_none()));
}

// ---------------------------------------------------------------------------------------------------
// Auth and headers.

fn set_secrets() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("CONSENTD_HTTP_TEST_BEARER", "tok-123");
        std::env::set_var("CONSENTD_HTTP_TEST_PASSWORD", "pw-456");
        std::env::set_var("CONSENTD_HTTP_TEST_KEY", "key-789");
        std::env::set_var("CONSENTD_HTTP_TEST_WRONG", "not-it");
        std::env::set_var("CONSENTD_HTTP_TEST_EMPTY", "");
    });
}

/// A server that answers 200 with records only when `header` is `expected`, else 401.
fn guarded(header: &'static str, expected: &'static str) -> Server {
    serve(move |s| {
        if s.headers.get(header).map(String::as_str) == Some(expected) {
            Reply::ok(items(1..3, json!({})))
        } else {
            Reply::status(401, "bad credentials")
        }
    })
}

fn check_auth(server: &Server, good: &str, wrong: &str) {
    let (c, _) = connector(&format!("url = \"{}/c\"\n{good}", server.base));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 2);
    let (c, _) = connector(&format!("url = \"{}/c\"\n{wrong}", server.base));
    let (result, ids, _) = pull_ids(&c, None);
    match result.unwrap_err() {
        HttpError::Failed { reason, attempts, .. } => {
            assert!(reason.contains("401") && reason.contains("bad credentials"), "{reason}");
            assert_eq!(attempts, 1, "a refused login is not retried");
        }
        other => panic!("{other:?}"),
    }
    assert!(ids.is_empty());
}

#[test]
fn bearer_auth() {
    set_secrets();
    let server = guarded("authorization", "Bearer tok-123");
    check_auth(
        &server,
        "auth = { type = \"bearer\", token_env = \"CONSENTD_HTTP_TEST_BEARER\" }",
        "auth = { type = \"bearer\", token_env = \"CONSENTD_HTTP_TEST_WRONG\" }",
    );
}

#[test]
fn basic_auth() {
    set_secrets();
    // base64("agent:pw-456")
    let server = guarded("authorization", "Basic YWdlbnQ6cHctNDU2");
    check_auth(
        &server,
        "auth = { type = \"basic\", user = \"agent\", password_env = \"CONSENTD_HTTP_TEST_PASSWORD\" }",
        "auth = { type = \"basic\", user = \"agent\", password_env = \"CONSENTD_HTTP_TEST_WRONG\" }",
    );
}

#[test]
fn api_key_header_auth() {
    set_secrets();
    let server = guarded("x-api-key", "key-789");
    check_auth(
        &server,
        "auth = { type = \"header\", name = \"X-API-Key\", value_env = \"CONSENTD_HTTP_TEST_KEY\" }",
        "auth = { type = \"header\", name = \"X-API-Key\", value_env = \"CONSENTD_HTTP_TEST_WRONG\" }",
    );
}

#[test]
fn missing_or_empty_secret_is_a_config_error_naming_the_variable() {
    set_secrets();
    for var in ["CONSENTD_HTTP_TEST_EMPTY", "CONSENTD_HTTP_TEST_NEVER_SET"] {
        let opts: HttpOptions = toml::from_str(&format!(
            "url = \"http://127.0.0.1:9/c\"\nauth = {{ type = \"bearer\", token_env = \"{var}\" }}"
        ))
        .unwrap();
        match HttpConnector::new(&opts) {
            Err(HttpError::Config(m)) => assert!(m.contains(var), "{m}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("{var} accepted"),
        }
    }
}

#[test]
fn extra_headers_go_with_every_request() {
    set_secrets();
    let server = serve(|s| {
        if s.method == "GET" {
            Reply::ok(items(1..2, json!({})))
        } else {
            Reply::status(204, "")
        }
    });
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\ndeletes = \"request\"\ndelete_url = \"{}/c/{{number}}\"\nheaders = {{ X-Tenant = \"acme\", Accept = \"application/json\" }}\nauth = {{ type = \"bearer\", token_env = \"CONSENTD_HTTP_TEST_BEARER\" }}",
        server.base, server.base
    ));
    pull_ids(&c, None).0.unwrap();
    assert_eq!(c.push(b"[]".to_vec(), "application/json", "k1").unwrap(), Delivery::Delivered);
    assert_eq!(
        c.delete("+49301234567", "call_recording", "id-1", "k2").unwrap(),
        Delivery::Delivered
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    for s in &seen {
        assert_eq!(s.headers["x-tenant"], "acme", "{} {}", s.method, s.path);
        assert_eq!(s.headers["accept"], "application/json");
        assert_eq!(s.headers["authorization"], "Bearer tok-123");
    }
}

// ---------------------------------------------------------------------------------------------------
// Faults and retries.

#[test]
fn server_error_then_success_is_retried() {
    let server = serve(|s| {
        if s.n == 0 {
            Reply::status(500, "oops")
        } else {
            Reply::ok(items(1..4, json!({})))
        }
    });
    let (c, sleeps) = connector(&format!("url = \"{}/c\"", server.base));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 3);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(sleeps.lock().unwrap().len(), 1);
}

#[test]
fn too_many_requests_waits_as_retry_after_says() {
    let server = serve(|s| match s.n {
        0 => Reply::status(429, "slow down").header("Retry-After", "7"),
        1 => Reply::status(503, "busy").header("Retry-After", "3600"),
        _ => Reply::ok(items(1..3, json!({}))),
    });
    let (c, sleeps) = connector(&format!("url = \"{}/c\"\nbackoff_ms = 1\nmax_backoff_ms = 60000", server.base));
    let (result, ids, _) = pull_ids(&c, None);
    // 7 s as asked; an hour is more than max_backoff_ms allows: the pull fails with that reason
    // rather than knocking again too early.
    let err = result.unwrap_err().to_string();
    assert!(err.contains("3600 s") && err.contains("max_backoff_ms"), "{err}");
    assert!(ids.is_empty());
    assert_eq!(*sleeps.lock().unwrap(), [Duration::from_secs(7)]);
    assert_eq!(server.requests().len(), 2, "no request after the long Retry-After");
}

#[test]
fn retry_after_as_an_http_date() {
    let later = chrono::Utc::now() + chrono::Duration::seconds(30);
    let date = later.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    let server = serve(move |s| {
        if s.n == 0 {
            Reply::status(429, "").header("Retry-After", &date)
        } else {
            Reply::ok(items(1..2, json!({})))
        }
    });
    let (c, sleeps) = connector(&format!("url = \"{}/c\"\nmax_backoff_ms = 60000", server.base));
    pull_ids(&c, None).0.unwrap();
    let waited = sleeps.lock().unwrap()[0];
    assert!(waited > Duration::from_secs(20) && waited <= Duration::from_secs(30), "{waited:?}");
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap_then_gives_up() {
    let server = serve(|_| Reply::status(502, "bad gateway"));
    let (c, sleeps) = connector(&format!(
        "url = \"{}/c?since=x\"\nretries = 4\nbackoff_ms = 100\nmax_backoff_ms = 300",
        server.base
    ));
    let (result, ids, _) = pull_ids(&c, None);
    match result.unwrap_err() {
        HttpError::Failed { url, reason, attempts } => {
            assert_eq!(attempts, 5);
            assert!(reason.contains("502"), "{reason}");
            assert_eq!(url, format!("{}/c?since=x", server.base));
        }
        other => panic!("{other:?}"),
    }
    assert!(ids.is_empty());
    assert_eq!(server.requests().len(), 5);
    let ms: Vec<u128> = sleeps.lock().unwrap().iter().map(Duration::as_millis).collect();
    assert_eq!(ms.len(), 4);
    for (wait, full) in ms.iter().zip([100, 200, 300, 300]) {
        assert!((full / 2..=full).contains(wait), "waits {ms:?}");
    }
}

#[test]
fn client_error_on_pull_fails_at_once_with_the_body() {
    let server = serve(|_| Reply::status(404, "no such list: consents-x"));
    let (c, sleeps) = connector(&format!("url = \"{}/c\"", server.base));
    match pull_ids(&c, None).0.unwrap_err() {
        HttpError::Failed { reason, attempts, .. } => {
            assert_eq!(attempts, 1);
            assert!(reason.contains("404") && reason.contains("no such list: consents-x"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(sleeps.lock().unwrap().is_empty());
}

#[test]
fn a_response_slower_than_the_read_timeout_is_retried_then_fails() {
    let server = serve(|_| Reply::ok(items(1..2, json!({}))).delay(Duration::from_secs(3)));
    let (c, _) = connector(&format!("url = \"{}/c\"\nread_timeout_secs = 1\nretries = 1", server.base));
    match pull_ids(&c, None).0.unwrap_err() {
        HttpError::Failed { reason, attempts, .. } => {
            assert_eq!(attempts, 2);
            assert!(reason.contains("timed out"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn a_body_that_stalls_past_the_read_timeout_is_retried() {
    let (base, connections) = raw_server(items(1..51, json!({})), vec![Raw::Stall(Duration::from_secs(3))]);
    let (c, sleeps) = connector(&format!("url = \"{base}/c\"\nread_timeout_secs = 1"));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 50);
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    assert_eq!(sleeps.lock().unwrap().len(), 1);
}

#[test]
fn a_connection_cut_mid_body_is_retried() {
    let (base, connections) = raw_server(items(1..51, json!({})), vec![Raw::CutShort, Raw::CutShort]);
    let (c, _) = connector(&format!("url = \"{base}/c\""));
    let (result, ids, _) = pull_ids(&c, None);
    result.unwrap();
    assert_each_once(&ids, 50);
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[test]
fn a_connection_cut_every_time_fails_after_the_retries() {
    let (base, connections) = raw_server(items(1..51, json!({})), vec![Raw::CutShort; 10]);
    let (c, _) = connector(&format!("url = \"{base}/c\"\nretries = 2"));
    let (result, ids, _) = pull_ids(&c, None);
    match result.unwrap_err() {
        HttpError::Failed { reason, attempts, .. } => {
            assert_eq!(attempts, 3);
            assert!(reason.contains("cut short"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(ids.is_empty(), "a page cut short is never handed over");
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}

#[test]
fn nothing_listening_fails_after_the_retries() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (c, sleeps) = connector(&format!("url = \"http://127.0.0.1:{port}/c\"\nretries = 2"));
    match pull_ids(&c, None).0.unwrap_err() {
        HttpError::Failed { attempts, .. } => assert_eq!(attempts, 3),
        other => panic!("{other:?}"),
    }
    assert_eq!(sleeps.lock().unwrap().len(), 2);
}

#[test]
fn a_malformed_page_stops_the_pull_with_the_callback_reason() {
    let server = serve(|s| match param(s, "page").as_deref() {
        Some("1") => Reply::ok(items(1..3, json!({}))),
        _ => Reply::ok("{\"items\": [ {\"id\": 3}, oops"),
    });
    let (c, sleeps) = connector(&format!("url = \"{}/c\"\npagination = {{ style = \"page\" }}", server.base));
    let (result, ids, _) = pull_ids(&c, None);
    match result.unwrap_err() {
        HttpError::Page { url, reason } => {
            assert!(reason.starts_with("record 1: not JSON"), "{reason}");
            assert_eq!(url, format!("{}/c?page=2", server.base));
        }
        other => panic!("{other:?}"),
    }
    assert_each_once(&ids, 2);
    assert_eq!(server.requests().len(), 2, "not retried, and no page after it");
    assert!(sleeps.lock().unwrap().is_empty());
}

#[test]
fn a_page_that_is_not_json_fails_token_pagination_with_the_callback_reason() {
    let server = serve(|_| Reply::ok("id;number\n1;+4930\n"));
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\npagination = {{ style = \"token\", path = \"next\", param = \"t\" }}",
        server.base
    ));
    match pull_ids(&c, None).0.unwrap_err() {
        HttpError::Page { reason, .. } => assert!(reason.starts_with("record 1: not JSON"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Push and delete.

#[test]
fn push_posts_the_batch_with_its_headers() {
    let server = serve(|_| Reply::status(201, "created"));
    let (c, _) = connector(&format!(
        "url = \"{}/pull\"\npush_url = \"{}/batches?src=cc\"",
        server.base, server.base
    ));
    let body = br#"[{"number":"+49301234567","usage":"call_recording","state":"granted"}]"#.to_vec();
    assert_eq!(c.push(body.clone(), "application/json", "batch-0001").unwrap(), Delivery::Delivered);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(
        (s.method.as_str(), s.path.as_str(), s.raw_query.as_str()),
        ("POST", "/batches", "src=cc")
    );
    assert_eq!(s.headers["content-type"], "application/json");
    assert_eq!(s.headers["idempotency-key"], "batch-0001");
    assert_eq!(s.body.as_bytes(), body.as_slice());
}

#[test]
fn push_with_put_to_the_pull_url() {
    let server = serve(|_| Reply::status(200, ""));
    let (c, _) = connector(&format!("url = \"{}/consents\"\npush_method = \"PUT\"", server.base));
    assert_eq!(
        c.push(b"a,b\n".to_vec(), "text/csv; charset=utf-8", "k").unwrap(),
        Delivery::Delivered
    );
    let s = &server.requests()[0];
    assert_eq!((s.method.as_str(), s.path.as_str()), ("PUT", "/consents"));
    assert_eq!(s.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(s.body, "a,b\n");
}

#[test]
fn push_refused_keeps_the_start_of_the_answer() {
    let answer = format!("invalid record 3: {}", "x".repeat(5000));
    let expected: String = answer.chars().take(2048).collect();
    let server = serve(move |_| Reply::status(422, answer.clone()));
    let (c, sleeps) = connector(&format!("url = \"{}/c\"", server.base));
    match c.push(b"[]".to_vec(), "application/json", "k").unwrap() {
        Delivery::Refused { status, body } => {
            assert_eq!(status, 422);
            assert_eq!(body, expected);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(server.requests().len(), 1, "a refused batch is not retried");
    assert!(sleeps.lock().unwrap().is_empty());
}

#[test]
fn only_answers_that_refuse_the_content_make_a_batch_refused() {
    // Each status answered to every request; 5xx, 408 and 429 are retried first.
    for (status, refused) in [
        (400, true),
        (409, true),
        (413, true),
        (422, true),
        (401, false),
        (403, false),
        (404, false),
        (405, false),
        (407, false),
        (408, false),
        (410, false),
        (429, false),
        (500, false),
        (502, false),
        (503, false),
        (302, false),
    ] {
        let server = serve(move |_| Reply::status(status, "no"));
        let (c, _) = connector(&format!("url = \"{}/c\"\nretries = 1", server.base));
        match c.push(b"[]".to_vec(), "application/json", "k") {
            Ok(Delivery::Refused { status: s, .. }) => assert!(refused && s == status, "{status} was taken as refused content"),
            Err(HttpError::Failed { reason, .. }) => {
                assert!(!refused, "{status} failed instead of being refused: {reason}");
                assert!(reason.contains(&status.to_string()), "{status}: {reason}");
            }
            other => panic!("{status}: {other:?}"),
        }
    }
}

#[test]
fn refused_statuses_are_configurable() {
    let server = serve(|s| match s.n {
        0 => Reply::status(400, "bad"),
        _ => Reply::status(410, "gone"),
    });
    let (c, _) = connector(&format!("url = \"{}/c\"\nrefused_statuses = [410, 422]", server.base));
    assert!(
        matches!(c.push(b"[]".to_vec(), "application/json", "k"), Err(HttpError::Failed { .. })),
        "400 is not in the list: the run fails"
    );
    assert!(matches!(
        c.push(b"[]".to_vec(), "application/json", "k"),
        Ok(Delivery::Refused { status: 410, .. })
    ));
}

#[test]
fn a_delete_answered_404_fails_unless_404_means_deleted() {
    let server = serve(|_| Reply::status(404, "no such route"));
    let (c, _) = connector(&format!(
        "url = \"{b}/c\"\ndeletes = \"request\"\ndelete_url = \"{b}/wrong/{{number}}\"",
        b = server.base
    ));
    let err = c.delete("+49301234567", "call_recording", "c1", "k").unwrap_err().to_string();
    assert!(err.contains("404") && !err.contains("+49301234567"), "{err}");
}

#[test]
fn push_retries_a_server_error_with_the_same_idempotency_key() {
    let server = serve(|s| match s.n {
        0 => Reply::status(500, "oops"),
        1 => Reply::status(408, "too slow"),
        2 => Reply::status(429, "").header("Retry-After", "0"),
        _ => Reply::status(200, "ok"),
    });
    let (c, sleeps) = connector(&format!("url = \"{}/c\"", server.base));
    assert_eq!(
        c.push(b"[1,2,3]".to_vec(), "application/json", "key-42").unwrap(),
        Delivery::Delivered
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 4);
    for s in &seen {
        assert_eq!(s.headers["idempotency-key"], "key-42");
        assert_eq!(s.body, "[1,2,3]");
    }
    assert_eq!(sleeps.lock().unwrap().len(), 3);
}

#[test]
fn push_retries_exhausted_is_an_error() {
    let server = serve(|_| Reply::status(503, "down"));
    let (c, _) = connector(&format!("url = \"{}/c?tenant=a\"\nretries = 2", server.base));
    match c.push(b"[]".to_vec(), "application/json", "k").unwrap_err() {
        HttpError::Failed { url, reason, attempts } => {
            assert_eq!(attempts, 3);
            assert!(reason.contains("503"), "{reason}");
            assert_eq!(url, format!("{}/c?tenant=a", server.base));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn delete_fills_in_the_encoded_number() {
    let server = serve(|s| match s.n {
        0 => Reply::status(204, ""),
        1 => Reply::status(404, "gone already"),
        _ => Reply::status(400, "unknown usage"),
    });
    let (c, _) = connector(&format!(
        "url = \"{b}/c\"\ndeletes = \"request\"\nnot_found_means_deleted = true\ndelete_url = \"{b}/consents/{{number}}/{{usage}}?id={{id}}\"",
        b = server.base
    ));
    assert_eq!(
        c.delete("+49301234567", "call_recording", "c/1 2", "d-1").unwrap(),
        Delivery::Delivered
    );
    assert_eq!(
        c.delete("+49301234567", "call_recording", "c2", "d-2").unwrap(),
        Delivery::Delivered,
        "404 means already gone"
    );
    assert_eq!(
        c.delete("+49301234567", "whatsapp", "c3", "d-3").unwrap(),
        Delivery::Refused {
            status: 400,
            body: "unknown usage".into()
        }
    );
    let seen = server.requests();
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].path, "/consents/%2B49301234567/call_recording");
    assert_eq!(seen[0].raw_query, "id=c%2F1%202");
    assert_eq!(seen[0].headers["idempotency-key"], "d-1");
    assert!(!seen[0].headers.contains_key("content-type"));
}

#[test]
fn delete_errors_show_the_template_not_the_number() {
    let server = serve(|_| Reply::status(500, "oops"));
    let template = format!("{}/consents/{{number}}", server.base);
    let (c, _) = connector(&format!(
        "url = \"{}/c\"\ndeletes = \"request\"\ndelete_url = \"{template}\"\nretries = 1",
        server.base
    ));
    let err = c.delete("+49301234567", "call_recording", "c1", "k").unwrap_err();
    match &err {
        HttpError::Failed { url, attempts, .. } => {
            assert_eq!(url, &template);
            assert_eq!(*attempts, 2);
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.to_string().contains("49301234567"), "{err}");
}
