//! Sync over HTTP (manage): each connector with its schedule, next run, last runs, watermark and
//! erasures owed; run one now; its dead letters (refused records), replayed after the mapping is
//! fixed; refused push batches, re-sent or dismissed; erasures marked handled; watermark and push
//! position set by hand. Work by hand is audited (`GET /v1/audit/events`).

use super::auth::{Caller, Right};
use super::error::{ApiError, Body};
use super::{blocking, AppState};
use crate::domain::Timestamp;
use crate::import::{ImportOptions, ImportReport, Input};
use crate::store::ChangeContext;
use crate::sync::dead::DeadLetter;
use crate::sync::run::RefusedBatch;
use crate::sync::SyncError;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sync", get(list))
        .route("/v1/sync/{name}/run", post(run))
        .route("/v1/sync/{name}/dead-letters", get(dead_letters))
        .route("/v1/sync/{name}/dead-letters/{id}/replay", post(replay))
        .route("/v1/sync/{name}/refused", get(refused))
        .route("/v1/sync/{name}/refused/{id}/resend", post(resend))
        .route("/v1/sync/{name}/refused/{id}/dismiss", post(dismiss))
        .route("/v1/sync/{name}/erasures", get(erasures))
        .route("/v1/sync/{name}/erasures/{id}/handled", post(erasure_handled))
        .route("/v1/sync/{name}/watermark", post(watermark))
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Unknown(_) => ApiError::not_found(e.to_string()),
            SyncError::Busy(_) | SyncError::Elsewhere(_) => ApiError::new(StatusCode::CONFLICT, "busy", e.to_string()),
            SyncError::NotFound(_) => ApiError::not_found(e.to_string()),
            SyncError::Invalid(_) => ApiError::bad_request(e.to_string()),
            // The remote's answer may quote numbers: the handler hides them from callers without view.
            SyncError::Failed(_) => ApiError::new(StatusCode::BAD_GATEWAY, "sync_failed", e.to_string()),
            SyncError::Store(e) => ApiError::from(e),
        }
    }
}

/// `GET /v1/sync` (manage): every connector and where it stands.
#[utoipa::path(get, path = "/v1/sync", tag = "sync", responses((status = 200, body = serde_json::Value, description = "every connector and where it stands")))]
async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    let sync = state.sync.clone();
    let items = blocking(move || {
        let now = Timestamp::now();
        sync.connectors
            .iter()
            .map(|c| {
                let mut s = sync.state(&c.cfg.name)?;
                let mut progress = sync.progress(&c.cfg.name);
                // Errors may quote a remote's answer.
                for run in s.runs.iter_mut().chain(progress.as_mut()) {
                    run.error = run.error.as_deref().map(|e| super::hide_numbers(&caller, e));
                }
                Ok(json!({
                    "name": c.cfg.name,
                    "transport": c.cfg.transport,
                    "direction": c.cfg.direction,
                    "mapping": c.cfg.mapping,
                    "schedule": c.cfg.schedule,
                    "timezone": c.schedule.zone().name(),
                    "next_run": c.schedule.next_after(now),
                    "running": progress.is_some(),
                    // The run going on, with its figures so far.
                    "progress": progress,
                    "watermark": s.watermark,
                    "pushed_seq": s.pushed_seq,
                    "in_flight": s.in_flight,
                    "erasures_pending": sync.pending_erasures(&c.cfg.name)?
                        .into_iter()
                        .map(|mut e| {
                            e.last.last_answer = e.last.last_answer.as_deref().map(|a| super::hide_numbers(&caller, a));
                            e
                        })
                        .collect::<Vec<_>>(),
                    "skipped_ticks": s.skipped_ticks,
                    "runs": s.runs.iter().rev().collect::<Vec<_>>(),
                    "dead_letters": sync.dead_letters(&c.cfg.name)?.len(),
                    "refused_batches": sync.store.sync_list::<RefusedBatch>(&c.cfg.name, "refused")?.len(),
                }))
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/sync/{name}/run` (manage): runs the connector now and answers with the run's report;
/// 409 if it is running already.
#[utoipa::path(post, path = "/v1/sync/{name}/run", tag = "sync", params(("name" = String, Path)), responses((status = 200, body = serde_json::Value, description = "the run's report")))]
async fn run(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    let sync = state.sync.clone();
    sync.connector(&name)?;
    let mut report = blocking(move || Ok(sync.run_once(&name, "manual")?)).await?;
    // The error may quote a remote's answer, as in `GET /v1/sync`.
    report.error = report.error.as_deref().map(|e| super::hide_numbers(&caller, e));
    Ok(Json(serde_json::to_value(report).expect("serialisable")))
}

/// `GET /v1/sync/{name}/dead-letters` (manage): refused records of pulls, with where and why.
#[utoipa::path(get, path = "/v1/sync/{name}/dead-letters", tag = "sync", params(("name" = String, Path)), responses((status = 200, body = serde_json::Value, description = "refused records of pulls")))]
async fn dead_letters(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    state.sync.connector(&name)?;
    let mut items: Vec<DeadLetter> = state.sync.dead_letters(&name)?;
    if !caller.has(Right::View) {
        for d in &mut items {
            crate::import::hide_values(&mut d.rejects);
        }
    }
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/sync/{name}/dead-letters/{id}/replay` (manage): imports the refused records again through
/// the connector's (fixed) mapping; the dead letter is dropped when all are taken, else updated.
#[utoipa::path(post, path = "/v1/sync/{name}/dead-letters/{id}/replay", tag = "sync", params(("name" = String, Path), ("id" = u64, Path)), responses((status = 200, body = ImportReport, description = "the import report")))]
async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(Right::Manage)?;
    let c = state.sync.connector(&name)?;
    // The mapping is read again: it may have been fixed since the daemon started.
    let mapping = super::transfer::mapping(&state, &c.cfg.mapping)?;
    let may_view = caller.has(Right::View);
    let st = state.clone();
    let report = blocking(move || {
        let letter = st.sync.dead_letter(&name, id)?;
        let bytes = st.sync.dead_letter_records(&name, &letter)?;
        let rejects = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
        let opts = ImportOptions {
            dry_run: false,
            strict: false,
            rejects: Some(rejects.path().to_path_buf()),
            chunk_records: st.config.import.chunk_records,
            skip: None,
            region: c.region(),
            max_field_bytes: st.config.import.max_field_bytes,
        };
        let ctx = ChangeContext {
            actor: caller.name.to_string(),
            source: crate::domain::Source::Sync(name.as_str().into()),
            now: Timestamp::now(),
            prefer: c.prefer(),
            call_id: None,
        };
        let input = Input::once(&letter.origin, Box::new(std::io::Cursor::new(bytes))).without_places();
        let mut report =
            crate::import::import(&st.store, &mapping, &mut [input], &ctx, &st.config.phone_parser(), &opts).map_err(ApiError::internal)?;
        crate::sync::Sync::at_original_places(&letter, &mut report);
        report.remove_unread_beside(rejects.path());
        st.sync.settle_dead_letter(&name, letter, &report, rejects.path())?;
        Ok(report)
    })
    .await?;
    let mut report = report;
    if !may_view {
        report.hide_values();
    }
    Ok(Json(report))
}

/// `GET /v1/sync/{name}/refused` (manage): push batches the remote refused, with its answer.
#[utoipa::path(get, path = "/v1/sync/{name}/refused", tag = "sync", params(("name" = String, Path)), responses((status = 200, body = serde_json::Value, description = "refused push batches")))]
async fn refused(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    state.sync.connector(&name)?;
    let mut items: Vec<RefusedBatch> = state.store.sync_list(&name, "refused")?.into_iter().map(|(_, d)| d).collect();
    for b in &mut items {
        b.response = super::hide_numbers(&caller, &b.response);
    }
    Ok(Json(json!({ "items": items })))
}

/// A failure of work by hand, its message (which may quote a remote's answer) hidden as for the caller.
fn hidden(caller: &Caller, e: SyncError) -> ApiError {
    match e {
        SyncError::Failed(m) => SyncError::Failed(super::hide_numbers(caller, &m)).into(),
        other => other.into(),
    }
}

/// `POST /v1/sync/{name}/refused/{id}/resend` (manage): sends a refused batch's changes again; the
/// batch is gone when the remote took them, kept with the new answer when it refused them again;
/// 502 when the remote is misconfigured or down (nothing changes).
#[utoipa::path(post, path = "/v1/sync/{name}/refused/{id}/resend", tag = "sync", params(("name" = String, Path), ("id" = u64, Path)), responses((status = 200, body = serde_json::Value, description = "what the remote did with them")))]
async fn resend(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Json<crate::sync::manage::Resent>, ApiError> {
    caller.require(Right::Manage)?;
    let sync = state.sync.clone();
    let actor = caller.name.to_string();
    let c = caller.clone();
    let mut out = blocking(move || sync.resend_refused(&name, id, &actor).map_err(|e| hidden(&c, e))).await?;
    out.response = out.response.as_deref().map(|r| super::hide_numbers(&caller, r));
    Ok(Json(out))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Note {
    #[serde(default)]
    note: Option<String>,
}

/// `POST /v1/sync/{name}/refused/{id}/dismiss {"note"?}` (manage): drops a refused batch; its changes
/// will not be sent.
#[utoipa::path(post, path = "/v1/sync/{name}/refused/{id}/dismiss", tag = "sync", params(("name" = String, Path), ("id" = u64, Path)), request_body = Note, responses((status = 200, body = serde_json::Value, description = "the batch dismissed")))]
async fn dismiss(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, u64)>,
    body: axum::body::Bytes,
) -> Result<Json<RefusedBatch>, ApiError> {
    caller.require(Right::Manage)?;
    // The body is optional.
    let note = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Note>(&body)
            .map_err(|e| ApiError::bad_request(format!("the body is not {{\"note\": \"…\"}}: {e}")))?
            .note
    };
    let sync = state.sync.clone();
    let actor = caller.name.to_string();
    let mut b = blocking(move || Ok(sync.dismiss_refused(&name, id, &actor, note.as_deref())?)).await?;
    b.response = super::hide_numbers(&caller, &b.response);
    Ok(Json(b))
}

/// `GET /v1/sync/{name}/erasures` (manage): erasures owed to the connector, with attempts and the
/// last answer (by the number's keyed hash; no numbers).
#[utoipa::path(get, path = "/v1/sync/{name}/erasures", tag = "sync", params(("name" = String, Path)), responses((status = 200, body = serde_json::Value, description = "erasures owed")))]
async fn erasures(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    state.sync.connector(&name)?;
    let mut items = state.sync.pending_erasures(&name)?;
    for e in &mut items {
        e.last.last_answer = e.last.last_answer.as_deref().map(|a| super::hide_numbers(&caller, a));
    }
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/sync/{name}/erasures/{id}/handled {"note"}` (manage): the erasure was done outside
/// consentd; it is no longer sent. The note is required.
#[utoipa::path(post, path = "/v1/sync/{name}/erasures/{id}/handled", tag = "sync", params(("name" = String, Path), ("id" = String, Path)), request_body = Note, responses((status = 200, body = serde_json::Value, description = "the erasure's status")))]
async fn erasure_handled(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, String)>,
    Body(b): Body<Note>,
) -> Result<Json<crate::sync::ErasureStatus>, ApiError> {
    caller.require(Right::Manage)?;
    let sync = state.sync.clone();
    let actor = caller.name.to_string();
    let note = b.note.unwrap_or_default();
    Ok(Json(blocking(move || Ok(sync.erasure_handled(&name, &id, &actor, &note)?)).await?))
}

/// The body of `POST /v1/sync/{name}/watermark`, as the OpenAPI description shows it (the handler
/// reads it as a map, to tell a `null` watermark from an absent one).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct Position {
    /// An RFC 3339 time, or null to clear the watermark.
    watermark: Option<String>,
    /// The last change pushed (its sequence number).
    pushed_seq: Option<u64>,
}

/// `POST /v1/sync/{name}/watermark {"watermark": TIME | null, "pushed_seq": N}` (manage): sets (a time)
/// or clears (null) the pull watermark, and/or sets the push position; a key left out is left as it
/// is. 409 while the connector runs.
#[utoipa::path(post, path = "/v1/sync/{name}/watermark", tag = "sync", params(("name" = String, Path)), request_body = Position, responses((status = 200, body = serde_json::Value, description = "the watermark and push position")))]
async fn watermark(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(b): Body<serde_json::Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    let mut to = crate::sync::manage::Position::default();
    for (k, v) in &b {
        match (k.as_str(), v) {
            ("watermark", Value::Null) => to.watermark = Some(None),
            ("watermark", Value::String(t)) => to.watermark = Some(Some(t.clone())),
            ("pushed_seq", v) if v.as_u64().is_some() => to.pushed_seq = v.as_u64(),
            ("watermark", _) => return Err(ApiError::field("watermark", "expected an RFC 3339 time or null")),
            ("pushed_seq", _) => {
                return Err(ApiError::field(
                    "pushed_seq",
                    "expected a whole number (a change's sequence number)",
                ))
            }
            (other, _) => return Err(ApiError::field(other, "unknown key: expected watermark or pushed_seq")),
        }
    }
    let sync = state.sync.clone();
    let actor = caller.name.to_string();
    let s = blocking(move || Ok(sync.set_position(&name, &to, &actor)?)).await?;
    Ok(Json(json!({"watermark": s.watermark, "pushed_seq": s.pushed_seq})))
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(list, run, dead_letters, replay, refused, resend, dismiss, erasures, erasure_handled, watermark))]
pub struct Api;
