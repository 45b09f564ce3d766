//! The consent view's operations: search, add, set, change value (toggle) and delete.

use super::auth::{Caller, Right};
use super::error::{ApiError, Body, Query};
use super::{agent, number, page_size, AppState, ConsentView};
use crate::domain::{ConsentId, Criteria, CriteriaText, Incoming, Op, Usage};
use crate::store::Outcome;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// Most ids one toggle or delete request may carry.
const MAX_IDS: usize = 10_000;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/consents", get(search).post(create))
        .route("/v1/consents/{id}", put(set))
        .route("/v1/consents/toggle", post(toggle))
        .route("/v1/consents/delete", post(delete))
}

/// Search parameters: the criteria plus paging.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub number: Option<String>,
    pub digits: Option<String>,
    pub usage: Option<String>,
    pub consent: Option<String>,
    pub created_from: Option<String>,
    pub created_to: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
    /// Also count every consent the search matches (`total`): a scan of the matches, so asked for
    /// with the first page only.
    #[serde(default)]
    pub count: bool,
    /// Another order than creation time: `number`, `usage`, `consent`, `updated_at`, `source` or
    /// `created_at`, `-` before it for descending.
    pub sort: Option<String>,
}

impl SearchParams {
    pub fn criteria(&self) -> CriteriaText {
        CriteriaText {
            number: self.number.clone(),
            digits: self.digits.clone(),
            consent: self.consent.clone(),
            usage: self.usage.clone(),
            created_from: self.created_from.clone(),
            created_to: self.created_to.clone(),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    pub items: Vec<ConsentView>,
    pub next_cursor: Option<String>,
    /// With `count=true`: how many consents the search matches in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// A search's criteria as the request gives them, read once: at least one is needed.
fn search_criteria(state: &AppState, criteria: &CriteriaText) -> Result<Criteria, ApiError> {
    criteria
        .parse(&state.config.phone_parser())?
        .require_one()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Runs a search (at least one criterion) and returns one page.
pub fn run_search(state: &AppState, criteria: &CriteriaText, limit: Option<usize>, cursor: Option<&str>) -> Result<Page, ApiError> {
    page_of(state, &search_criteria(state, criteria)?, limit, cursor)
}

/// One page of a search, in creation-time order.
fn page_of(state: &AppState, criteria: &Criteria, limit: Option<usize>, cursor: Option<&str>) -> Result<Page, ApiError> {
    let page = state.store.search(criteria, cursor, page_size(state, limit)?)?;
    Ok(Page {
        items: page.items.into_iter().map(ConsentView::from).collect(),
        next_cursor: page.next_cursor,
        total: None,
    })
}

/// Most matches a search sorted by another column than creation time may have: they are read and
/// sorted whole.
const MAX_SORTED: usize = 100_000;

/// A page of a search in another order than creation time: every match read, sorted (then by id),
/// and paged by position (`s:OFFSET` cursors; a change between pages may shift a row by one).
fn sorted_page(state: &AppState, criteria: &Criteria, sort: &str, limit: usize, cursor: Option<&str>) -> Result<Page, ApiError> {
    let (descending, column) = match sort.strip_prefix('-') {
        Some(c) => (true, c),
        None => (false, sort),
    };
    let columns = ["number", "usage", "consent", "created_at", "updated_at", "source"];
    if !columns.contains(&column) {
        return Err(ApiError::field(
            "sort",
            format!("expected one of {}, - before it for descending", columns.join(", ")),
        ));
    }
    let offset: usize = match cursor {
        None | Some("") => 0,
        Some(c) => c
            .strip_prefix("s:")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::field("cursor", "not a cursor of this sorted search"))?,
    };
    let mut all = Vec::new();
    for c in state.store.scan(criteria)? {
        all.push(c?);
        if all.len() > MAX_SORTED {
            return Err(ApiError::field(
                "sort",
                format!("more than {MAX_SORTED} consents match: narrow the search to sort it by another column than creation time"),
            ));
        }
    }
    // (text, time, then the consent's own order: number and usage).
    let key = |c: &crate::domain::Consent| -> (String, i64, u64, bool) {
        let (text, time) = match column {
            "number" => (c.number.to_string(), 0),
            "usage" => (c.usage.to_string(), 0),
            "consent" => (c.consent.to_string(), 0),
            "created_at" => (String::new(), c.created_at.millis()),
            "updated_at" => (String::new(), c.updated_at.millis()),
            _ => (c.source.to_string(), 0),
        };
        (text, time, c.number.as_u64(), c.usage == Usage::Whatsapp)
    };
    all.sort_by_cached_key(key);
    if descending {
        all.reverse();
    }
    let end = offset.saturating_add(limit).min(all.len());
    let items = all
        .get(offset.min(all.len())..end)
        .unwrap_or_default()
        .iter()
        .cloned()
        .map(ConsentView::from)
        .collect();
    Ok(Page {
        items,
        next_cursor: (end < all.len()).then(|| format!("s:{end}")),
        total: None,
    })
}

/// `GET /v1/consents?number=&digits=&usage=&consent=&created_from=&created_to=&limit=&cursor=` (view).
#[utoipa::path(get, path = "/v1/consents", tag = "consents", params(("number" = Option<String>, Query), ("digits" = Option<String>, Query), ("usage" = Option<String>, Query), ("consent" = Option<String>, Query), ("created_from" = Option<String>, Query), ("created_to" = Option<String>, Query), ("limit" = Option<usize>, Query), ("cursor" = Option<String>, Query), ("count" = Option<bool>, Query), ("sort" = Option<String>, Query)), responses((status = 200, body = Page, description = "a page of consents")))]
async fn search(State(state): State<AppState>, caller: Caller, Query(p): Query<SearchParams>) -> Result<Json<Page>, ApiError> {
    caller.require(Right::View)?;
    let criteria = search_criteria(&state, &p.criteria())?;
    let mut page = match p.sort.as_deref() {
        None | Some("created_at") => page_of(&state, &criteria, p.limit, p.cursor.as_deref())?,
        Some(sort) => {
            let limit = page_size(&state, p.limit)?;
            let (criteria, sort, cursor, st) = (criteria.clone(), sort.to_string(), p.cursor.clone(), state.clone());
            super::blocking(move || sorted_page(&st, &criteria, &sort, limit, cursor.as_deref())).await?
        }
    };
    if p.count {
        let store = state.store.clone();
        page.total = Some(
            super::blocking(move || {
                let mut n = 0u64;
                for c in store.scan(&criteria)? {
                    c?;
                    n += 1;
                }
                Ok(n)
            })
            .await?,
        );
    }
    Ok(Json(page))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewConsent {
    number: String,
    usage: Usage,
}

/// `POST /v1/consents {"number", "usage"}` (create): adds a given consent (201); one we hold is set
/// to given (needs modify, 200).
#[utoipa::path(post, path = "/v1/consents", tag = "consents", request_body = NewConsent, responses((status = 201, body = ConsentView, description = "the consent added"), (status = 200, body = ConsentView, description = "the consent held, set to given")))]
async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(b): Body<NewConsent>,
) -> Result<(StatusCode, Json<ConsentView>), ApiError> {
    caller.require(Right::Create)?;
    let n = number(&state, "number", &b.number)?;
    if state.store.get(n, b.usage)?.is_some() {
        caller.require(Right::Modify)?;
    }
    let ctx = agent(&caller);
    let set = Incoming {
        number: n,
        usage: b.usage,
        op: Op::decided(true, ctx.now),
    };
    let outcome = state.store.apply(&[set], &ctx, false)?[0];
    let now = state
        .store
        .get(n, b.usage)?
        .ok_or_else(|| ApiError::internal("a consent just written is missing"))?;
    let status = if outcome == Outcome::Inserted {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(now.into())))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewValue {
    consent: bool,
}

fn parse_id(field: &str, id: &str) -> Result<ConsentId, ApiError> {
    ConsentId::parse(id).map_err(|e| ApiError::field(field, e))
}

/// `PUT /v1/consents/{id} {"consent": bool}` (modify): sets the value; idempotent.
#[utoipa::path(put, path = "/v1/consents/{id}", tag = "consents", params(("id" = String, Path)), request_body = NewValue, responses((status = 200, body = ConsentView, description = "the consent")))]
async fn set(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Body(b): Body<NewValue>,
) -> Result<Json<ConsentView>, ApiError> {
    caller.require(Right::Modify)?;
    let id = parse_id("id", &id)?;
    if state.store.get(id.number, id.usage)?.is_none() {
        return Err(ApiError::not_found("no consent with this id"));
    }
    let ctx = agent(&caller);
    let set = Incoming {
        number: id.number,
        usage: id.usage,
        op: Op::decided(b.consent, ctx.now),
    };
    state.store.apply(&[set], &ctx, false)?;
    let now = state
        .store
        .get(id.number, id.usage)?
        .ok_or_else(|| ApiError::not_found("no consent with this id"))?;
    Ok(Json(now.into()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Ids {
    ids: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Result1 {
    id: String,
    /// `updated`, `deleted` or `not_found`.
    outcome: &'static str,
    /// The value after a toggle.
    #[serde(skip_serializing_if = "Option::is_none")]
    consent: Option<bool>,
    /// The times after a toggle (a new value takes a new creation time), so a page can show the row
    /// as it now is without searching again.
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<crate::domain::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<crate::domain::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<crate::domain::Source>,
}

#[derive(Debug, Serialize)]
struct Results {
    results: Vec<Result1>,
}

fn parse_ids(ids: &Ids) -> Result<Vec<ConsentId>, ApiError> {
    if ids.ids.is_empty() || ids.ids.len() > MAX_IDS {
        return Err(ApiError::field("ids", format!("give 1 to {MAX_IDS} ids")));
    }
    ids.ids.iter().enumerate().map(|(i, s)| parse_id(&format!("ids[{i}]"), s)).collect()
}

/// One change per id, all with the same op.
fn same_op(ids: &[ConsentId], op: Op) -> Vec<Incoming> {
    ids.iter()
        .map(|id| Incoming {
            number: id.number,
            usage: id.usage,
            op,
        })
        .collect()
}

/// `POST /v1/consents/toggle {"ids": [...]}` (modify): flips each, as the view's Change Value does.
#[utoipa::path(post, path = "/v1/consents/toggle", tag = "consents", request_body = Ids, responses((status = 200, body = serde_json::Value, description = "each id and what became of it")))]
async fn toggle(State(state): State<AppState>, caller: Caller, Body(b): Body<Ids>) -> Result<Json<Results>, ApiError> {
    caller.require(Right::Modify)?;
    let ids = parse_ids(&b)?;
    let outcomes = state.store.apply(&same_op(&ids, Op::Toggle), &agent(&caller), false)?;
    let mut results = Vec::with_capacity(ids.len());
    for (id, o) in ids.iter().zip(outcomes) {
        let now = state.store.get(id.number, id.usage)?.filter(|_| o != Outcome::NotFound);
        results.push(Result1 {
            id: id.to_string(),
            outcome: if o == Outcome::NotFound { "not_found" } else { "updated" },
            consent: now.as_ref().map(|c| c.consent),
            created_at: now.as_ref().map(|c| c.created_at),
            updated_at: now.as_ref().map(|c| c.updated_at),
            source: now.map(|c| c.source),
        });
    }
    Ok(Json(Results { results }))
}

/// `POST /v1/consents/delete {"ids": [...]}` (delete): removes each; unknown ids are reported.
#[utoipa::path(post, path = "/v1/consents/delete", tag = "consents", request_body = Ids, responses((status = 200, body = serde_json::Value, description = "each id and what became of it")))]
async fn delete(State(state): State<AppState>, caller: Caller, Body(b): Body<Ids>) -> Result<Json<Results>, ApiError> {
    caller.require(Right::Delete)?;
    let ids = parse_ids(&b)?;
    let outcomes = state.store.apply(&same_op(&ids, Op::Delete { at: None }), &agent(&caller), false)?;
    let results = ids
        .iter()
        .zip(outcomes)
        .map(|(id, o)| Result1 {
            id: id.to_string(),
            outcome: if o == Outcome::Deleted { "deleted" } else { "not_found" },
            consent: None,
            created_at: None,
            updated_at: None,
            source: None,
        })
        .collect();
    Ok(Json(Results { results }))
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(search, create, set, toggle, delete))]
pub struct Api;
