//! `/metrics` in Prometheus text, through the `metrics` crate and its Prometheus exporter: request
//! durations as histograms by method, route template and status; connections; consents by usage and
//! value; the store's bytes; imports, exports and sync runs with their records. Labels are route
//! templates, statuses, outcomes and connector names: never a phone number.

use super::AppState;
use crate::import::ImportReport;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::OnceLock;
use std::time::Instant;

/// Request durations' buckets, seconds: from a cached check (well under a millisecond) to an import.
const DURATION_BUCKETS: [f64; 16] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// The process's recorder: the `metrics` macros record into it from anywhere (sync runs, imports).
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("consentd_http_request_duration_seconds".into()), &DURATION_BUCKETS)
            .expect("buckets are given")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder already installed (a test harness): ours still renders what it is given.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// What the daemon counts itself (the rest is read from the store and the sync state when scraped).
pub struct Metrics {
    _installed: &'static PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        let _installed = handle();
        metrics::describe_histogram!(
            "consentd_http_request_duration_seconds",
            metrics::Unit::Seconds,
            "Time to answer HTTP requests, by method, route and status."
        );
        metrics::describe_gauge!("consentd_http_connections", "Connections open.");
        metrics::describe_counter!(
            "consentd_http_connections_closed_total",
            "Connections the daemon closed itself, by reason."
        );
        metrics::describe_gauge!("consentd_consents", "Consents held, by usage and value.");
        metrics::describe_gauge!("consentd_store_disk_bytes", metrics::Unit::Bytes, "Bytes of the store's files.");
        metrics::describe_gauge!(
            "consentd_store_live_bytes",
            metrics::Unit::Bytes,
            "Bytes of the keys and values the store holds (counted at the last check or compaction)."
        );
        metrics::describe_counter!("consentd_store_compactions_total", "Compactions since start-up.");
        metrics::describe_counter!("consentd_imports_total", "Import runs by outcome.");
        metrics::describe_counter!("consentd_import_records_total", "Imported records and consents by outcome.");
        metrics::describe_counter!("consentd_exports_total", "Exports by outcome.");
        metrics::describe_counter!("consentd_export_records_total", "Consents written by exports.");
        metrics::describe_counter!("consentd_sync_runs_total", "Sync runs since start-up, by connector and outcome.");
        metrics::describe_counter!(
            "consentd_sync_records_total",
            "Records pulled and pushed since start-up, by connector and outcome."
        );
        metrics::describe_counter!(
            "consentd_sync_erasures_delivered_total",
            "Erasures delivered to a remote, by connector."
        );
        metrics::describe_counter!(
            "consentd_sync_skipped_ticks_total",
            "Scheduled ticks skipped because a run was still going."
        );
        metrics::describe_gauge!(
            "consentd_sync_watermark_seconds",
            "The pull watermark (newest update time pulled), Unix seconds."
        );
        metrics::describe_gauge!("consentd_sync_pushed_seq", "The last change pushed, by connector.");
        metrics::describe_gauge!("consentd_sync_erasures_pending", "Erasures not yet delivered, by connector.");
        Self { _installed }
    }
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
        metrics::counter!("consentd_http_connections_closed_total", "reason" => why.label()).increment(1);
    }

    pub fn connections(&self, delta: f64) {
        metrics::gauge!("consentd_http_connections").increment(delta);
    }

    pub fn import_finished(&self, report: Option<&ImportReport>) {
        let outcome = match report {
            None => "failed",
            Some(r) if r.dry_run => "dry_run",
            Some(r) if r.clean() => "clean",
            Some(r) if !r.complete => "incomplete",
            Some(_) => "refused",
        };
        metrics::counter!("consentd_imports_total", "outcome" => outcome).increment(1);
        if let Some(r) = report.filter(|r| !r.dry_run) {
            for (k, v) in [
                ("read", r.read),
                ("inserted", r.inserted),
                ("updated", r.updated),
                ("unchanged", r.unchanged),
                ("deleted", r.deleted),
                ("rejected", r.rejected),
                ("skipped", r.skipped),
            ] {
                metrics::counter!("consentd_import_records_total", "outcome" => k).increment(v);
            }
        }
    }

    /// An export ended: `Ok(consents written)`, or failed.
    pub fn export_finished(&self, written: Option<u64>) {
        let outcome = if written.is_some() { "ok" } else { "failed" };
        metrics::counter!("consentd_exports_total", "outcome" => outcome).increment(1);
        metrics::counter!("consentd_export_records_total").increment(written.unwrap_or(0));
    }
}

/// Middleware: times each request, by method, route template and status.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    // Labels from a closed set: a made-up method is `other`, not a label of its own.
    let method = match req.method().as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    let response = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |p| p.as_str()).to_string();
    metrics::histogram!(
        "consentd_http_request_duration_seconds",
        "method" => method,
        "route" => route,
        "status" => status_label(response.status().as_u16()),
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// A status as a label without allocating for the common ones.
fn status_label(status: u16) -> metrics::SharedString {
    match status {
        200 => "200".into(),
        201 => "201".into(),
        202 => "202".into(),
        204 => "204".into(),
        400 => "400".into(),
        401 => "401".into(),
        403 => "403".into(),
        404 => "404".into(),
        409 => "409".into(),
        413 => "413".into(),
        422 => "422".into(),
        500 => "500".into(),
        other => other.to_string().into(),
    }
}

/// `GET /metrics` (no token: it carries no personal data). Gauges of the store and the sync state
/// are read now; the rest was counted as it happened.
#[utoipa::path(get, path = "/metrics", tag = "service", responses((status = 200, body = String, content_type = "text/plain", description = "Prometheus text")))]
pub async fn render(State(state): State<AppState>) -> Response {
    let store = state.store.clone();
    let counts = match tokio::task::spawn_blocking(move || store.counts()).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return super::error::ApiError::from(e).into_response(),
        Err(e) => return super::error::ApiError::internal(e).into_response(),
    };
    for (usage, consent, n) in counts {
        metrics::gauge!("consentd_consents", "usage" => usage.to_string(), "consent" => consent.to_string()).set(n as f64);
    }
    let up = &state.upkeep;
    metrics::gauge!("consentd_store_disk_bytes").set(state.store.disk_bytes() as f64);
    metrics::gauge!("consentd_store_live_bytes").set(up.live_bytes.load(Relaxed) as f64);
    metrics::counter!("consentd_store_compactions_total").absolute(up.compactions.load(Relaxed));
    for c in &state.sync.connectors {
        let name = c.cfg.name.clone();
        let Ok(s) = state.sync.state(&name) else { continue };
        metrics::counter!("consentd_sync_skipped_ticks_total", "connector" => name.clone()).absolute(s.skipped_ticks);
        if let Some(t) = s.watermark.as_deref().and_then(|w| crate::domain::Timestamp::parse_rfc3339(w).ok()) {
            metrics::gauge!("consentd_sync_watermark_seconds", "connector" => name.clone()).set(t.millis() as f64 / 1000.0);
        }
        metrics::gauge!("consentd_sync_pushed_seq", "connector" => name.clone()).set(s.pushed_seq as f64);
        if let Ok(pending) = state.sync.pending_erasures(&name) {
            metrics::gauge!("consentd_sync_erasures_pending", "connector" => name).set(pending.len() as f64);
        }
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle().render()).into_response()
}
