//! The store over HTTP (manage): its size on disk and live, the last compaction, and a compaction now.

use super::auth::{Caller, Right};
use super::error::ApiError;
use super::{blocking, AppState};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/store", get(show))
        .route("/v1/store/compact", post(compact))
}

/// `GET /v1/store` (manage): bytes on disk, live bytes (as last counted), the last compaction and the
/// purges still waiting for one.
#[utoipa::path(get, path = "/v1/store", tag = "store", responses((status = 200, body = serde_json::Value, description = "the store's bytes and compactions")))]
async fn show(State(state): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Right::Manage)?;
    let (store, upkeep) = (state.store.clone(), state.upkeep.clone());
    blocking(move || {
        Ok(Json(json!({
            "disk_bytes": store.disk_bytes(),
            "live_bytes": upkeep.live_bytes.load(std::sync::atomic::Ordering::Relaxed),
            "compactions": upkeep.compactions.load(std::sync::atomic::Ordering::Relaxed),
            "last_compaction": *upkeep.last.lock().expect("last compaction"),
            "oldest_purge_not_physically_done": store.oldest_pending_purge()?,
        })))
    })
    .await
}

/// `POST /v1/store/compact` (manage): rewrites the store into a fresh generation now and answers what
/// it did; reads go on meanwhile, writes wait briefly.
#[utoipa::path(post, path = "/v1/store/compact", tag = "store", responses((status = 200, body = serde_json::Value, description = "what the compaction did")))]
async fn compact(State(state): State<AppState>, caller: Caller) -> Result<Json<crate::store::compact::Compacted>, ApiError> {
    caller.require(Right::Manage)?;
    let upkeep = state.upkeep.clone();
    let done = blocking(move || Ok(upkeep.compact()?)).await?;
    tracing::info!(actor = %caller.name, "A compaction was asked for.");
    Ok(Json(done))
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(show, compact))]
pub struct Api;
