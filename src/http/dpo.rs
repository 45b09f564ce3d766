//! The Data Protection Officer's routes: what we hold on a number (or on every number ending in some
//! digits), purging it, and emptying the consent store.

use super::auth::{Caller, Right};
use super::error::{ApiError, Body, Query};
use super::{blocking, number, AppState, ConsentView};
use crate::domain::{Criteria, Digits, PhoneNumber, Source, Timestamp};
use crate::store::{dpo::Event, searches::SavedSearch, AuditEntry, ChangeContext};
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Most numbers one report by trailing digits covers.
const MAX_NUMBERS: usize = 100;
/// What a DPO types to empty the store.
pub const RESET_CONFIRMATION: &str = "DELETE ALL CONSENTS";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/dpo/report", get(report))
        .route("/v1/dpo/purge", post(purge))
        .route("/v1/dpo/reset", post(reset))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportParams {
    number: Option<String>,
    digits: Option<String>,
    /// Answer as a file to keep or hand over (`Content-Disposition: attachment`).
    #[serde(default)]
    download: bool,
}

/// Everything held on one number.
#[derive(Debug, Serialize)]
struct Held {
    number: PhoneNumber,
    consents: Vec<ConsentView>,
    /// Every change to its consents (also of deleted ones): the proof of consent.
    history: Vec<AuditEntry>,
    saved_searches: Vec<SavedSearch>,
    /// Per push connector, whether a purge of this number reached it (`pending` with attempts and
    /// the last answer, `delivered`, or `handled` by hand with a note), found by the number's keyed hash.
    erasures: Vec<crate::sync::ErasureView>,
    /// Refused records of sync pulls that may hold the number: (connector, dead letter).
    dead_letters: Vec<(String, crate::sync::dead::DeadLetter)>,
    /// Purges of the number: when, by whom, how much, and which files were rewritten.
    purges: Vec<Event>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// When the report was made, and by which token: the answer to a data-subject request says so.
    generated_at: Timestamp,
    generated_by: String,
    numbers: Vec<Held>,
    /// True when more numbers end in the digits than one report covers.
    truncated: bool,
}

/// `GET /v1/dpo/report?number=` or `?digits=` (dpo).
#[utoipa::path(get, path = "/v1/dpo/report", tag = "dpo", params(("number" = Option<String>, Query), ("digits" = Option<String>, Query), ("download" = Option<bool>, Query)), responses((status = 200, body = serde_json::Value, description = "everything held on the number")))]
async fn report(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ReportParams>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    caller.require(Right::Dpo)?;
    let (numbers, truncated) = match (&p.number, &p.digits) {
        (Some(n), None) => (vec![number(&state, "number", n)?], false),
        (None, Some(d)) => {
            let d = Digits::parse(d).map_err(|e| ApiError::field("digits", e))?;
            let store = state.store.clone();
            blocking(move || Ok(store.numbers_ending_in(&d, MAX_NUMBERS)?)).await?
        }
        _ => return Err(ApiError::bad_request("give exactly one of number or digits")),
    };
    let store = state.store.clone();
    let sync = state.sync.clone();
    let numbers = blocking(move || {
        numbers
            .into_iter()
            .map(|n| {
                let criteria = Criteria {
                    number: Some(n),
                    ..Default::default()
                };
                Ok(Held {
                    number: n,
                    consents: store
                        .scan_by_number(&criteria)?
                        .map(|c| c.map(ConsentView::from))
                        .collect::<Result<_, _>>()?,
                    history: store.history(n)?,
                    saved_searches: store.searches_naming(n)?,
                    erasures: sync.erasure_status(&store.erasure_hash(n)?)?,
                    dead_letters: sync.dead_letters_naming(n)?,
                    purges: store.purges_of(&store.erasure_hash(n)?)?,
                })
            })
            .filter(|h: &Result<Held, ApiError>| {
                h.as_ref().map_or(true, |h| {
                    !(h.consents.is_empty()
                        && h.history.is_empty()
                        && h.saved_searches.is_empty()
                        && h.erasures.is_empty()
                        && h.dead_letters.is_empty()
                        && h.purges.is_empty())
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    let generated_at = Timestamp::now();
    let report = Json(Report {
        generated_at,
        generated_by: caller.name.to_string(),
        numbers,
        truncated,
    });
    if !p.download {
        return Ok(report.into_response());
    }
    // The file's name says when, never which number: names end up in logs and download lists.
    let stamp: String = generated_at.to_rfc3339().chars().filter(char::is_ascii_alphanumeric).collect();
    let disposition = format!("attachment; filename=\"consentd-dpo-report-{stamp}.json\"");
    Ok(([(axum::http::header::CONTENT_DISPOSITION, disposition)], report).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PurgeBody {
    number: String,
}

/// `POST /v1/dpo/purge {"number"}` (dpo): removes everything held on the number in one step.
#[utoipa::path(post, path = "/v1/dpo/purge", tag = "dpo", request_body = PurgeBody, responses((status = 200, body = serde_json::Value, description = "the purge event")))]
async fn purge(State(state): State<AppState>, caller: Caller, Body(b): Body<PurgeBody>) -> Result<Json<Event>, ApiError> {
    caller.require(Right::Dpo)?;
    let n = number(&state, "number", &b.number)?;
    let store = state.store.clone();
    let sync = state.sync.clone();
    let imports = state.imports.clone();
    let actor = caller.name.to_string();
    let event = blocking(move || {
        // Push connectors are told to delete the number; the number is kept only until they are.
        let held: Vec<_> = store
            .history(n)?
            .iter()
            .map(|e| e.usage)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !held.is_empty() {
            sync.queue_erasure(n, &held, &store.erasure_hash(n)?)?;
        }
        let dead_letters = sync.purge_dead_letters(n)?;
        if dead_letters > 0 {
            tracing::info!(dead_letters, "Dead letters that held a purged number were removed.");
        }
        let event = store.purge(n, &actor, Timestamp::now())?;
        // No erasure owed (no push connector, or nothing held): the purge's seal goes at once.
        sync.release_seal(&store.erasure_hash(n)?)?;
        // Files the daemon keeps: rewritten without the number, and the purge says which.
        let files = sync.purge_files(n)?;
        imports.forget_samples()?;
        Ok(store.annotate_event(event.seq, serde_json::json!({ "files": files }))?)
    })
    .await?;
    // The store is compacted soon, so no file of it holds the number (store.erase_within_hours).
    state.upkeep.purged();
    tracing::info!(actor = %caller.name, consents = event.removed.consents, audit_entries = event.removed.audit_entries, "A number was purged.");
    Ok(Json(event))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    confirm: String,
}

/// `POST /v1/dpo/reset {"confirm": "DELETE ALL CONSENTS"}` (dpo): deletes every consent, audited.
#[utoipa::path(post, path = "/v1/dpo/reset", tag = "dpo", request_body = ResetBody, responses((status = 200, body = serde_json::Value, description = "the reset event")))]
async fn reset(State(state): State<AppState>, caller: Caller, Body(b): Body<ResetBody>) -> Result<Json<Event>, ApiError> {
    caller.require(Right::Dpo)?;
    if b.confirm != RESET_CONFIRMATION {
        return Err(ApiError::field(
            "confirm",
            format!("type {RESET_CONFIRMATION:?} to empty the consent store"),
        ));
    }
    let store = state.store.clone();
    let ctx = ChangeContext {
        actor: caller.name.to_string(),
        source: Source::Agent(caller.name.clone()),
        now: Timestamp::now(),
        prefer: crate::domain::Prefer::Newest,
        call_id: None,
    };
    let event = blocking(move || Ok(store.reset(&ctx)?)).await?;
    tracing::warn!(actor = %caller.name, consents = event.removed.consents, "The consent store was reset.");
    Ok(Json(event))
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(report, purge, reset))]
pub struct Api;
