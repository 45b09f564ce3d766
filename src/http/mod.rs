//! The admin HTTP API (axum): one router per resource, merged by [`app`]. Handlers are short: check
//! the caller's rights, parse the input into domain types, call the store or the library, map the
//! result. Every route but `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and the page ([`web`])
//! needs a token; [`openapi`] describes them.

pub mod audit;
pub mod auth;
pub mod checks;
pub mod consents;
pub mod dpo;
pub mod error;
pub mod jobs;
pub mod metrics;
pub mod openapi;
pub mod searches;
pub mod server;
pub mod store;
pub mod sync;
pub mod transfer;
pub mod web;

use crate::config::Config;
use crate::domain::{Consent, ConsentId, PhoneNumber, Source, Timestamp};
use crate::store::{ChangeContext, Store};
use auth::{Caller, Tokens};
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::routing::get;
use axum::Router;
use error::ApiError;
use serde::Serialize;
use std::sync::Arc;

/// What handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Arc<Config>,
    pub tokens: Arc<Tokens>,
    pub metrics: Arc<metrics::Metrics>,
    pub sync: Arc<crate::sync::Sync>,
    pub imports: Arc<jobs::ImportJobs>,
    pub upkeep: Arc<crate::upkeep::Upkeep>,
}

impl AppState {
    pub fn new(store: Arc<Store>, config: Arc<Config>, sync: Arc<crate::sync::Sync>, upkeep: Arc<crate::upkeep::Upkeep>) -> Self {
        Self {
            upkeep,
            tokens: Arc::new(Tokens::from_config(&config)),
            imports: Arc::new(jobs::ImportJobs::new(&store)),
            store,
            config,
            metrics: Arc::new(metrics::Metrics::default()),
            sync,
        }
    }
}

/// All routes.
pub fn app(state: AppState) -> Router {
    let json_limit = (state.config.http.max_json_kb as usize) << 10;
    let api = Router::new()
        .merge(consents::router())
        .merge(searches::router())
        .merge(audit::router())
        .merge(dpo::router())
        .merge(checks::router())
        .merge(sync::router())
        .merge(store::router())
        .layer(DefaultBodyLimit::max(json_limit))
        // Imports carry their own limit (http.max_import_mb) and stream to disk.
        .merge(transfer::router().layer(DefaultBodyLimit::disable()))
        .route("/v1/me", get(me));
    Router::new()
        .merge(api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .route("/openapi.json", get(openapi::serve))
        .merge(web::router())
        .route_layer(axum::middleware::from_fn(metrics::track))
        // A span per request: lines logged while answering carry its id, method and route; the
        // answer's status and latency are logged at debug.
        .route_layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::DEBUG)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                )
                .on_failure(()),
        )
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(axum::middleware::map_response(secure_headers))
        // A handler that panics answers 500 (as JSON, below) instead of dropping the connection.
        // Its message is not shown: it may quote the request (a number).
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                tracing::error!("A request handler panicked; answered 500.");
                axum::response::IntoResponse::into_response(ApiError::new(
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "the request failed unexpectedly; the daemon's log says more",
                ))
            },
        ))
        .layer(axum::middleware::map_response(error::errors_as_json))
        // A body that sends nothing for this long is cut (the connection's own timeouts are the
        // listener's, [`server`]).
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(std::time::Duration::from_secs(
            state.config.http.body_timeout_secs,
        )))
        // Every request gets an id of ours (`x-request-id`, also on the answer); one a client sends is
        // replaced, as it could carry anything into the logs.
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(RequestIds::default()))
        .layer(axum::middleware::map_request(|mut req: axum::extract::Request| async move {
            req.headers_mut().remove("x-request-id");
            req
        }))
        .with_state(state)
}

/// Request ids: a random prefix per start-up and a counter (`3f9a1c07-42`).
#[derive(Clone)]
struct RequestIds {
    prefix: Arc<str>,
    next: Arc<std::sync::atomic::AtomicU64>,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut b = [0u8; 4];
        let _ = getrandom::getrandom(&mut b);
        Self {
            prefix: hex::encode(b).into(),
            next: Arc::default(),
        }
    }
}

impl tower_http::request_id::MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<tower_http::request_id::RequestId> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        HeaderValue::from_str(&format!("{}-{n}", self.prefix))
            .ok()
            .map(tower_http::request_id::RequestId::new)
    }
}

/// The span of one request: its id, method and route template (never the path: it may hold a number).
fn request_span<B>(req: &axum::http::Request<B>) -> tracing::Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |p| p.as_str());
    tracing::info_span!("request", id, method = %req.method(), route)
}

/// Headers every response carries.
async fn secure_headers(mut r: axum::response::Response) -> axum::response::Response {
    let h = r.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(web::CONTENT_SECURITY_POLICY),
    );
    h.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
    h.insert("cross-origin-resource-policy", HeaderValue::from_static("same-origin"));
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=(), payment=()"),
    );
    r
}

/// `GET /healthz` (no token): the daemon is up.
#[utoipa::path(get, path = "/healthz", tag = "service", responses((status = 200, body = String, content_type = "text/plain", description = "ok")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz` (no token): the daemon serves requests — on PostgreSQL, while the database answers
/// (503 otherwise, so a load balancer sends calls to another replica).
#[utoipa::path(get, path = "/readyz", tag = "service", responses((status = 200, body = String, content_type = "text/plain", description = "ready"), (status = 503, body = String, content_type = "text/plain", description = "the store cannot be reached")))]
async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.ready()).await {
        Ok(Ok(())) => "ready\n".into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "Not ready: the store cannot be reached.");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the store cannot be reached\n",
            )
                .into_response()
        }
        Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response(),
    }
}

/// `GET /v1/me`: the caller's token name and rights (any valid token).
#[utoipa::path(get, path = "/v1/me", tag = "service", responses((status = 200, body = serde_json::Value, description = "the token's name and rights")))]
async fn me(caller: Caller) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"name": &*caller.name, "rights": caller.rights()}))
}

/// A consent as the API shows it: its id, then the consent's own fields.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConsentView {
    pub id: ConsentId,
    #[serde(flatten)]
    pub consent: Consent,
}

impl From<Consent> for ConsentView {
    fn from(c: Consent) -> Self {
        Self { id: c.id(), consent: c }
    }
}

/// The change context of a caller: the token's name is the actor, `agent:<name>` the source.
pub fn agent(caller: &Caller) -> ChangeContext {
    ChangeContext {
        actor: caller.name.to_string(),
        source: Source::Agent(caller.name.clone()),
        now: Timestamp::now(),
        prefer: crate::domain::Prefer::Newest,
        call_id: None,
    }
}

/// Parses a number from the request, naming the field when it is refused.
pub fn number(state: &AppState, field: &str, text: &str) -> Result<PhoneNumber, ApiError> {
    state.config.phone_parser().parse(text).map_err(|e| ApiError::field(field, e))
}

/// Runs blocking store work (imports, exports, purges) off the async threads.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

/// Text from elsewhere (a remote system's answer, an error quoting it) as the caller may see it:
/// without the view right, what may be a phone number is hidden ([`crate::domain::mask_numbers`]).
pub fn hide_numbers(caller: &Caller, text: &str) -> String {
    if caller.has(auth::Right::View) {
        text.to_string()
    } else {
        crate::domain::mask_numbers(text)
    }
}

/// The page size asked for, bounded by the configuration (default 100).
pub fn page_size(state: &AppState, limit: Option<usize>) -> Result<usize, ApiError> {
    match limit {
        Some(0) => Err(ApiError::field("limit", "must be at least 1")),
        Some(n) if n > state.config.http.max_page => {
            Err(ApiError::field("limit", format!("at most {} per page", state.config.http.max_page)))
        }
        Some(n) => Ok(n),
        None => Ok(100.min(state.config.http.max_page)),
    }
}
