//! `/metrics` in Prometheus text: requests by route and status, consents by usage and value, imports
//! and their outcomes. Labels are route templates, statuses and outcomes: never a phone number.

use super::AppState;
use crate::import::ImportReport;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

/// Per route template: (method, status) → (count, seconds).
type Requests = HashMap<String, BTreeMap<(String, u16), (u64, f64)>>;

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<Requests>,
    /// Import runs by outcome (`clean`, `refused`, `incomplete` (the input not read to its end),
    /// `failed`, `dry_run`).
    imports: Mutex<BTreeMap<&'static str, u64>>,
    /// Imported records and consents by outcome.
    import_records: Mutex<BTreeMap<&'static str, u64>>,
    /// Connections: open now, and closed by the listener ([`super::server`]) by reason.
    pub connections_open: AtomicI64,
    pub connections_closed: [AtomicU64; Closed::ALL.len()],
}

/// Why the listener closed a connection itself.
#[derive(Debug, Clone, Copy)]
pub enum Closed {
    /// No whole request head within `http.header_timeout_secs`.
    HeaderTimeout,
    /// Idle between requests for `http.idle_timeout_secs`.
    IdleTimeout,
    /// Closed to make room for a new one at `http.max_connections`.
    Evicted,
    /// A new one refused at `http.max_connections`, every open one busy.
    Refused,
    /// Still open at the end of the shutdown grace period.
    Shutdown,
}

impl Closed {
    pub const ALL: [Closed; 5] = [
        Closed::HeaderTimeout,
        Closed::IdleTimeout,
        Closed::Evicted,
        Closed::Refused,
        Closed::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            Closed::HeaderTimeout => "header_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Evicted => "evicted",
            Closed::Refused => "refused",
            Closed::Shutdown => "shutdown",
        }
    }
}

impl Metrics {
    pub fn connection_closed(&self, why: Closed) {
        self.connections_closed[why as usize].fetch_add(1, Relaxed);
    }

    pub fn import_finished(&self, report: Option<&ImportReport>) {
        let outcome = match report {
            None => "failed",
            Some(r) if r.dry_run => "dry_run",
            Some(r) if r.clean() => "clean",
            Some(r) if !r.complete => "incomplete",
            Some(_) => "refused",
        };
        *self.imports.lock().expect("metrics").entry(outcome).or_default() += 1;
        if let Some(r) = report.filter(|r| !r.dry_run) {
            let mut m = self.import_records.lock().expect("metrics");
            for (k, v) in [
                ("read", r.read),
                ("inserted", r.inserted),
                ("updated", r.updated),
                ("unchanged", r.unchanged),
                ("deleted", r.deleted),
                ("rejected", r.rejected),
                ("skipped", r.skipped),
            ] {
                *m.entry(k).or_default() += v;
            }
        }
    }
}

/// Middleware: counts each request by method, route template and status.
pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    let seconds = started.elapsed().as_secs_f64();
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    // Labels from a closed set: a made-up method is `other`, not a label of its own.
    let method = match method.as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    };
    let key = (method, response.status().as_u16());
    let mut m = state.metrics.requests.lock().expect("metrics");
    // No allocation once a route and status have been seen: this runs on every request.
    if !m.contains_key(route) {
        m.insert(route.to_string(), BTreeMap::new());
    }
    let by_status = m.get_mut(route).expect("inserted above");
    match by_status.iter_mut().find(|((m, s), _)| (m.as_str(), *s) == key) {
        Some((_, e)) => {
            e.0 += 1;
            e.1 += seconds;
        }
        None => {
            by_status.insert((key.0.to_string(), key.1), (1, seconds));
        }
    }
    drop(m);
    response
}

/// `GET /metrics` (no token: it carries no personal data).
pub async fn render(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let counts = match tokio::task::spawn_blocking(move || store.counts()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return super::error::ApiError::from(e).into_response(),
        Err(e) => return super::error::ApiError::internal(e).into_response(),
    };
    let mut out = String::new();
    out.push_str("# HELP consentd_http_requests_total HTTP requests by method, route and status.\n");
    out.push_str("# TYPE consentd_http_requests_total counter\n");
    let requests: BTreeMap<_, _> = state
        .metrics
        .requests
        .lock()
        .expect("metrics")
        .iter()
        .flat_map(|(route, m)| {
            m.iter()
                .map(move |((method, status), v)| ((method.clone(), route.clone(), *status), *v))
        })
        .collect();
    for ((method, route, status), (n, _)) in &requests {
        let _ = writeln!(
            out,
            "consentd_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
        );
    }
    out.push_str("# HELP consentd_http_request_seconds_total Time spent answering, by method, route and status.\n");
    out.push_str("# TYPE consentd_http_request_seconds_total counter\n");
    for ((method, route, status), (_, s)) in &requests {
        let _ = writeln!(
            out,
            "consentd_http_request_seconds_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {s:.6}"
        );
    }
    let _ = writeln!(
        out,
        "# HELP consentd_http_connections Connections open.\n# TYPE consentd_http_connections gauge\nconsentd_http_connections {}",
        state.metrics.connections_open.load(Relaxed)
    );
    out.push_str("# HELP consentd_http_connections_closed_total Connections the daemon closed itself, by reason.\n");
    out.push_str("# TYPE consentd_http_connections_closed_total counter\n");
    for why in Closed::ALL {
        let n = state.metrics.connections_closed[why as usize].load(Relaxed);
        let _ = writeln!(out, "consentd_http_connections_closed_total{{reason=\"{}\"}} {n}", why.label());
    }
    out.push_str("# HELP consentd_consents Consents held, by usage and value.\n# TYPE consentd_consents gauge\n");
    for (usage, consent, n) in counts {
        let _ = writeln!(out, "consentd_consents{{usage=\"{usage}\",consent=\"{consent}\"}} {n}");
    }
    let up = &state.upkeep;
    let _ = writeln!(
        out,
        "# HELP consentd_store_disk_bytes Bytes of the store's files.\n# TYPE consentd_store_disk_bytes gauge\nconsentd_store_disk_bytes {}",
        state.store.disk_bytes()
    );
    let _ = writeln!(
        out,
        "# HELP consentd_store_live_bytes Bytes of the keys and values the store holds (counted at the last check or compaction).\n# TYPE consentd_store_live_bytes gauge\nconsentd_store_live_bytes {}",
        up.live_bytes.load(Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP consentd_store_compactions_total Compactions since start-up.\n# TYPE consentd_store_compactions_total counter\nconsentd_store_compactions_total {}",
        up.compactions.load(Relaxed)
    );
    out.push_str("# HELP consentd_imports_total Import runs by outcome.\n# TYPE consentd_imports_total counter\n");
    for (k, n) in state.metrics.imports.lock().expect("metrics").iter() {
        let _ = writeln!(out, "consentd_imports_total{{outcome=\"{k}\"}} {n}");
    }
    out.push_str("# HELP consentd_import_records_total Imported records and consents by outcome.\n");
    out.push_str("# TYPE consentd_import_records_total counter\n");
    for (k, n) in state.metrics.import_records.lock().expect("metrics").iter() {
        let _ = writeln!(out, "consentd_import_records_total{{outcome=\"{k}\"}} {n}");
    }
    out.push_str("# HELP consentd_sync_runs_total Sync runs since start-up, by connector and outcome.\n");
    out.push_str("# TYPE consentd_sync_runs_total counter\n");
    let counters = state.sync.counters();
    for ((connector, what), n) in &counters {
        if let Some(outcome) = what.strip_prefix("run_") {
            let _ = writeln!(
                out,
                "consentd_sync_runs_total{{connector=\"{connector}\",outcome=\"{outcome}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP consentd_sync_records_total Records pulled and pushed since start-up, by connector and outcome.\n");
    out.push_str("# TYPE consentd_sync_records_total counter\n");
    for ((connector, what), n) in &counters {
        if !what.starts_with("run_") {
            let _ = writeln!(
                out,
                "consentd_sync_records_total{{connector=\"{connector}\",outcome=\"{what}\"}} {n}"
            );
        }
    }
    out.push_str("# HELP consentd_sync_skipped_ticks_total Scheduled ticks skipped because a run was still going.\n");
    out.push_str("# TYPE consentd_sync_skipped_ticks_total counter\n");
    out.push_str("# HELP consentd_sync_watermark_seconds The pull watermark (newest update time pulled), Unix seconds.\n");
    out.push_str("# TYPE consentd_sync_watermark_seconds gauge\n");
    out.push_str("# HELP consentd_sync_pushed_seq The last change pushed, by connector.\n# TYPE consentd_sync_pushed_seq gauge\n");
    for c in &state.sync.connectors {
        let name = &c.cfg.name;
        let Ok(s) = state.sync.state(name) else { continue };
        let _ = writeln!(out, "consentd_sync_skipped_ticks_total{{connector=\"{name}\"}} {}", s.skipped_ticks);
        if let Some(t) = s.watermark.as_deref().and_then(|w| crate::domain::Timestamp::parse_rfc3339(w).ok()) {
            let _ = writeln!(
                out,
                "consentd_sync_watermark_seconds{{connector=\"{name}\"}} {}",
                t.millis() as f64 / 1000.0
            );
        }
        let _ = writeln!(out, "consentd_sync_pushed_seq{{connector=\"{name}\"}} {}", s.pushed_seq);
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
