//! Saved searches: criteria kept under a name by the token that saved them. `manage` may list, run
//! and delete those of other tokens with `?owner=`.

use super::auth::{Caller, Right};
use super::consents::{run_search, Page};
use super::error::{ApiError, Body, Query};
use super::AppState;
use crate::domain::{CriteriaText, Timestamp};
use crate::store::searches::SavedSearch;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/searches", get(list).post(save))
        .route("/v1/searches/{name}", axum::routing::delete(remove))
        .route("/v1/searches/{name}/results", get(results))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewSearch {
    name: String,
    criteria: CriteriaText,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OwnerParam {
    /// Another token's name, or `*` for all (needs manage).
    owner: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

/// The owner a request acts for: the caller, or with `manage` another token (`*`: all, for listing).
fn owner(caller: &Caller, asked: Option<&str>) -> Result<Option<String>, ApiError> {
    match asked {
        None => Ok(Some(caller.name.to_string())),
        Some(o) if o == &*caller.name => Ok(Some(o.to_string())),
        Some(o) => {
            caller.require(Right::Manage)?;
            Ok((o != "*").then(|| o.to_string()))
        }
    }
}

/// `POST /v1/searches {"name", "criteria": {...}}` (view): saves or replaces a search of the caller.
#[utoipa::path(post, path = "/v1/searches", tag = "searches", request_body = NewSearch, responses((status = 201, body = serde_json::Value, description = "the saved search")))]
async fn save(
    State(state): State<AppState>,
    caller: Caller,
    Body(b): Body<NewSearch>,
) -> Result<(StatusCode, Json<SavedSearch>), ApiError> {
    caller.require(Right::View)?;
    let name = b.name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::field("name", "must be 1 to 100 printable characters"));
    }
    let parsed = b.criteria.parse(&state.config.phone_parser()).map_err(|e| ApiError {
        field: Some(format!("criteria.{}", e.field)),
        ..ApiError::bad_request(e.reason.clone())
    })?;
    let parsed = parsed.require_one().map_err(|e| ApiError::field("criteria", e))?;
    let s = SavedSearch {
        name: name.to_string(),
        owner: caller.name.to_string(),
        criteria: b.criteria.normalised(&parsed),
        saved_at: Timestamp::now().to_rfc3339(),
    };
    let existed = state.store.saved_search(&s.owner, &s.name)?.is_some();
    state.store.save_search(&s)?;
    Ok((if existed { StatusCode::OK } else { StatusCode::CREATED }, Json(s)))
}

/// `GET /v1/searches[?owner=NAME|*]` (view): the caller's saved searches.
#[utoipa::path(get, path = "/v1/searches", tag = "searches", params(("owner" = Option<String>, Query), ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)), responses((status = 200, body = serde_json::Value, description = "saved searches")))]
async fn list(State(state): State<AppState>, caller: Caller, Query(p): Query<OwnerParam>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Right::View)?;
    let owner = owner(&caller, p.owner.as_deref())?;
    let items = state.store.saved_searches(owner.as_deref())?;
    Ok(Json(serde_json::json!({ "items": items })))
}

fn find(state: &AppState, caller: &Caller, name: &str, asked: Option<&str>) -> Result<SavedSearch, ApiError> {
    let owner = owner(caller, asked)?.ok_or_else(|| ApiError::field("owner", "name one owner"))?;
    state
        .store
        .saved_search(&owner, name)?
        .ok_or_else(|| ApiError::not_found("no saved search by that name"))
}

/// `GET /v1/searches/{name}/results[?limit=&cursor=]` (view): runs a saved search.
#[utoipa::path(get, path = "/v1/searches/{name}/results", tag = "searches", params(("name" = String, Path), ("owner" = Option<String>, Query), ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)), responses((status = 200, body = super::consents::Page, description = "a page of consents")))]
async fn results(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<OwnerParam>,
) -> Result<Json<Page>, ApiError> {
    caller.require(Right::View)?;
    let s = find(&state, &caller, &name, p.owner.as_deref())?;
    Ok(Json(run_search(&state, &s.criteria, p.limit, p.cursor.as_deref())?))
}

/// `DELETE /v1/searches/{name}` (view): removes one of the caller's saved searches.
#[utoipa::path(delete, path = "/v1/searches/{name}", tag = "searches", params(("name" = String, Path), ("owner" = Option<String>, Query), ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)), responses((status = 204, description = "removed")))]
async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(p): Query<OwnerParam>,
) -> Result<StatusCode, ApiError> {
    caller.require(Right::View)?;
    let s = find(&state, &caller, &name, p.owner.as_deref())?;
    state.store.delete_search(&s.owner, &s.name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(save, list, results, remove))]
pub struct Api;
