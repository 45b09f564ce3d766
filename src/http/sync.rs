//! Sync over HTTP (manage): each connector with its schedule, next run, last runs and watermark; run
//! one now; its dead letters (refused records), replayed after the mapping is fixed; refused push
//! batches.

use super::auth::{Caller, Right};
use super::error::ApiError;
use super::{blocking, AppState};
use crate::domain::Timestamp;
use crate::import::{ImportOptions, ImportReport, Input};
use crate::store::ChangeContext;
use crate::sync::run::{DeadLetter, RefusedBatch};
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
}

impl From<SyncError> for ApiError {
    fn from(e: SyncError) -> Self {
        match e {
            SyncError::Unknown(_) => ApiError::not_found(e.to_string()),
            SyncError::Busy(_) => ApiError::new(StatusCode::CONFLICT, "busy", e.to_string()),
            SyncError::Store(e) => ApiError::from(e),
        }
    }
}

/// `GET /v1/sync` (manage): every connector and where it stands.
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
                    "skipped_ticks": s.skipped_ticks,
                    "runs": s.runs.iter().rev().collect::<Vec<_>>(),
                    "dead_letters": sync.store.sync_list::<DeadLetter>(&c.cfg.name, "dead")?.len(),
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
async fn run(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    let sync = state.sync.clone();
    sync.connector(&name)?;
    let report = blocking(move || Ok(sync.run_once(&name, "manual")?)).await?;
    Ok(Json(serde_json::to_value(report).expect("serialisable")))
}

/// `GET /v1/sync/{name}/dead-letters` (manage): refused records of pulls, with where and why.
async fn dead_letters(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    state.sync.connector(&name)?;
    let mut items: Vec<DeadLetter> = state.store.sync_list(&name, "dead")?.into_iter().map(|(_, d)| d).collect();
    if !caller.has(Right::View) {
        for d in &mut items {
            d.records.clear();
            d.rejects.iter_mut().for_each(|r| r.value = None);
        }
    }
    Ok(Json(json!({ "items": items })))
}

/// `POST /v1/sync/{name}/dead-letters/{id}/replay` (manage): imports the refused records again through
/// the connector's (fixed) mapping; the dead letter is dropped when all are taken, else updated.
async fn replay(
    State(state): State<AppState>,
    caller: Caller,
    Path((name, id)): Path<(String, u64)>,
) -> Result<Json<ImportReport>, ApiError> {
    caller.require(Right::Manage)?;
    let c = state.sync.connector(&name)?;
    // The mapping is read again: it may have been fixed since the daemon started.
    let mapping = super::transfer::mapping(&state, &c.cfg.mapping)?;
    let st = state.clone();
    let report = blocking(move || {
        let key = id.to_be_bytes();
        let letter: DeadLetter = st
            .store
            .sync_get(&name, "dead", &key)?
            .ok_or_else(|| ApiError::not_found("no dead letter with this id"))?;
        let bytes = hex::decode(&letter.records).map_err(ApiError::internal)?;
        let rejects = tempfile::NamedTempFile::new().map_err(ApiError::internal)?;
        let opts = ImportOptions {
            dry_run: false,
            strict: false,
            rejects: Some(rejects.path().to_path_buf()),
            chunk_records: st.config.import.chunk_records,
            skip: None,
            region: c.region(),
        };
        let ctx = ChangeContext {
            actor: caller.name.to_string(),
            source: crate::domain::Source::Sync(name.as_str().into()),
            now: Timestamp::now(),
            prefer: c.prefer(),
        };
        let input = Input::once(&letter.origin, Box::new(std::io::Cursor::new(bytes)));
        let report =
            crate::import::import(&st.store, &mapping, &mut [input], &ctx, &st.config.phone_parser(), &opts).map_err(ApiError::internal)?;
        report.remove_unread_beside(rejects.path());
        if report.rejected == 0 {
            st.store.sync_remove(&name, "dead", &key)?;
        } else {
            let updated = DeadLetter {
                rejected: report.rejected,
                rejects: report.rejects.clone(),
                records: hex::encode(std::fs::read(rejects.path()).unwrap_or_default()),
                ..letter
            };
            st.store.sync_put(&name, "dead", &key, &updated)?;
        }
        Ok(report)
    })
    .await?;
    Ok(Json(report))
}

/// `GET /v1/sync/{name}/refused` (manage): push batches the remote refused, with its answer.
async fn refused(State(state): State<AppState>, caller: Caller, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    state.sync.connector(&name)?;
    let mut items: Vec<RefusedBatch> = state.store.sync_list(&name, "refused")?.into_iter().map(|(_, d)| d).collect();
    for b in &mut items {
        b.response = super::hide_numbers(&caller, &b.response);
    }
    Ok(Json(json!({ "items": items })))
}
