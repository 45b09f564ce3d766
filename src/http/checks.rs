//! What the consent IVR and agents' tools ask: the IVR stores a caller's answer; the recording and
//! WhatsApp checks answer from the consent we hold. These are the hot routes: no blocking work.

use super::auth::{Caller, Right};
use super::error::{ApiError, Body, Query};
use super::{number, AppState, ConsentView};
use crate::domain::checks::{self, RecordingDecision, WhatsappAnswer};
use crate::domain::{Incoming, Op, Source, Timestamp, Usage};
use crate::store::{ChangeContext, Outcome};
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/ivr/answer", post(ivr_answer))
        .route("/v1/checks/recording/{number}", get(recording))
        .route("/v1/checks/whatsapp/{number}", get(whatsapp))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IvrAnswer {
    number: String,
    /// The key the caller pressed (configured: ivr.yes_digits, ivr.no_digits).
    digit: Option<String>,
    /// Or the answer itself.
    accepted: Option<bool>,
    /// The call's id in the contact center (1 to 200 characters, at most 255 bytes): kept with the
    /// change as its proof (audit trail, DPO report).
    call_id: Option<String>,
}

#[derive(Debug, Serialize)]
struct IvrResult {
    /// `inserted`, `updated` or `unchanged`.
    outcome: &'static str,
    consent: ConsentView,
    call_id: Option<String>,
}

/// `POST /v1/ivr/answer {"number", "digit" | "accepted", "call_id"?}` (create + modify): stores the
/// caller's answer as a `call_recording` consent with source `ivr`.
#[utoipa::path(post, path = "/v1/ivr/answer", tag = "checks", request_body = IvrAnswer, responses((status = 200, body = serde_json::Value, description = "the answer stored")))]
async fn ivr_answer(State(state): State<AppState>, caller: Caller, Body(b): Body<IvrAnswer>) -> Result<Json<IvrResult>, ApiError> {
    caller.require(Right::Create)?;
    caller.require(Right::Modify)?;
    let n = number(&state, "number", &b.number)?;
    let ivr = &state.config.ivr;
    let accepted = match (&b.digit, b.accepted) {
        (Some(d), None) if ivr.yes_digits.contains(d) => true,
        (Some(d), None) if ivr.no_digits.contains(d) => false,
        (Some(_), None) => {
            return Err(ApiError::field(
                "digit",
                format!(
                    "not an answer: yes is {}, no is {}",
                    ivr.yes_digits.join(" or "),
                    ivr.no_digits.join(" or ")
                ),
            ))
        }
        (None, Some(a)) => a,
        _ => return Err(ApiError::bad_request("give exactly one of digit or accepted")),
    };
    if let Some(c) = &b.call_id {
        if c.is_empty() || c.chars().count() > 200 || c.len() > 255 {
            return Err(ApiError::field("call_id", "1 to 200 characters (at most 255 bytes)"));
        }
        if c.chars().any(char::is_control) {
            return Err(ApiError::field("call_id", "holds a control character"));
        }
    }
    let ctx = ChangeContext {
        actor: caller.name.to_string(),
        source: Source::Ivr,
        now: Timestamp::now(),
        prefer: crate::domain::Prefer::Newest,
        call_id: b.call_id.as_deref().map(Into::into),
    };
    let answer = Incoming {
        number: n,
        usage: Usage::CallRecording,
        op: Op::decided(accepted, ctx.now),
    };
    let outcome = state.store.apply(&[answer], &ctx, false)?[0];
    tracing::info!(call_id = b.call_id.as_deref().unwrap_or("-"), accepted, "IVR answer stored.");
    let held = state
        .store
        .get(n, Usage::CallRecording)?
        .ok_or_else(|| ApiError::internal("an answer just stored is missing"))?;
    Ok(Json(IvrResult {
        outcome: match outcome {
            Outcome::Inserted => "inserted",
            Outcome::Updated => "updated",
            _ => "unchanged",
        },
        consent: held.into(),
        call_id: b.call_id,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RecordingAnswer {
    decision: RecordingDecision,
}

/// `GET /v1/checks/recording/{number}` (view): record, do_not_record, or ask.
#[utoipa::path(get, path = "/v1/checks/recording/{number}", tag = "checks", params(("number" = String, Path)), responses((status = 200, body = RecordingAnswer, description = "record, do_not_record or ask")))]
async fn recording(State(state): State<AppState>, caller: Caller, Path(n): Path<String>) -> Result<Json<RecordingAnswer>, ApiError> {
    caller.require(Right::View)?;
    let n = number(&state, "number", &n)?;
    let held = state.store.get_async(n, Usage::CallRecording).await?;
    Ok(Json(RecordingAnswer {
        decision: checks::recording(held.as_ref()),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhatsappParams {
    /// When the customer last wrote (RFC 3339, any offset).
    last_customer_message_at: Option<String>,
    /// The time to answer for (RFC 3339; default now): when the message would be sent.
    at: Option<String>,
}

/// `GET /v1/checks/whatsapp/{number}?last_customer_message_at=T[&at=T]` (view).
#[utoipa::path(get, path = "/v1/checks/whatsapp/{number}", tag = "checks", params(("number" = String, Path), ("last_customer_message_at" = Option<String>, Query), ("at" = Option<String>, Query)), responses((status = 200, body = crate::domain::checks::WhatsappAnswer, description = "whether a message may be sent")))]
async fn whatsapp(
    State(state): State<AppState>,
    caller: Caller,
    Path(n): Path<String>,
    Query(p): Query<WhatsappParams>,
) -> Result<Json<WhatsappAnswer>, ApiError> {
    caller.require(Right::View)?;
    let n = number(&state, "number", &n)?;
    let time = |field: &str, v: &Option<String>| {
        v.as_deref()
            .map(|t| Timestamp::parse_rfc3339(t).map_err(|e| ApiError::field(field, e)))
            .transpose()
    };
    let last = time("last_customer_message_at", &p.last_customer_message_at)?;
    let now = time("at", &p.at)?.unwrap_or_else(Timestamp::now);
    let held = state.store.get_async(n, Usage::Whatsapp).await?;
    Ok(Json(checks::whatsapp(held.as_ref(), last, now)))
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(ivr_answer, recording, whatsapp))]
pub struct Api;
