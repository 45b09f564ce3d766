//! The audit trail over HTTP: consent changes (who, when, before and after, source), filtered and
//! paged, and administrative events (purges, resets), which never carry a number.

use super::auth::{Caller, Right};
use super::error::{ApiError, Query};
use super::{number, page_size, AppState};
use crate::domain::Timestamp;
use crate::store::{dpo::Event, AuditEntry, AuditQuery};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new().route("/v1/audit", get(audit)).route("/v1/audit/events", get(events))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditParams {
    number: Option<String>,
    /// At or after (RFC 3339 or a date).
    from: Option<String>,
    /// At or before (RFC 3339, or a date for that whole day).
    to: Option<String>,
    actor: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[derive(Debug, Serialize)]
struct AuditPage {
    items: Vec<AuditEntry>,
    next_cursor: Option<String>,
}

fn cursor(c: Option<&str>) -> Result<u64, ApiError> {
    c.map_or(Ok(0), |c| {
        c.parse().map_err(|_| ApiError::field("cursor", "not a cursor this API gave out"))
    })
}

/// `GET /v1/audit?number=&from=&to=&actor=&limit=&cursor=` (manage or dpo).
#[utoipa::path(get, path = "/v1/audit", tag = "audit", params(("number" = Option<String>, Query), ("from" = Option<String>, Query), ("to" = Option<String>, Query), ("actor" = Option<String>, Query), ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)), responses((status = 200, body = serde_json::Value, description = "a page of audit entries")))]
async fn audit(State(state): State<AppState>, caller: Caller, Query(p): Query<AuditParams>) -> Result<Json<AuditPage>, ApiError> {
    caller.require_any(&[Right::Manage, Right::Dpo])?;
    let q = AuditQuery {
        number: p.number.as_deref().map(|n| number(&state, "number", n)).transpose()?,
        from: p
            .from
            .as_deref()
            .map(|t| Timestamp::parse_bound(t).map(|(t, _)| t).map_err(|e| ApiError::field("from", e)))
            .transpose()?,
        before: p
            .to
            .as_deref()
            .map(|t| Timestamp::parse_upper_bound(t).map_err(|e| ApiError::field("to", e)))
            .transpose()?,
        actor: p.actor,
    };
    let limit = page_size(&state, p.limit)?;
    let after = cursor(p.cursor.as_deref())?;
    let store = state.store.clone();
    let page = super::blocking(move || Ok(store.audit(&q, after, limit)?)).await?;
    Ok(Json(AuditPage {
        items: page.items,
        next_cursor: page.next.map(|s| s.to_string()),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/audit/events?limit=&cursor=` (manage or dpo): purges and resets.
#[utoipa::path(get, path = "/v1/audit/events", tag = "audit", params(("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query)), responses((status = 200, body = serde_json::Value, description = "purges and resets")))]
async fn events(State(state): State<AppState>, caller: Caller, Query(p): Query<EventParams>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require_any(&[Right::Manage, Right::Dpo])?;
    let limit = page_size(&state, p.limit)?;
    let items: Vec<Event> = state.store.events(cursor(p.cursor.as_deref())?, limit)?;
    let next = (items.len() == limit).then(|| items.last().map(|e| e.seq.to_string())).flatten();
    Ok(Json(serde_json::json!({"items": items, "next_cursor": next})))
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(audit, events))]
pub struct Api;
