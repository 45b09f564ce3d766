//! Imports and exports over HTTP: an import's request body is the file (streamed to a temporary file
//! up to `http.max_import_mb`, then imported as the command line does, or in the background with its
//! progress to ask for: [`super::jobs`]); an export streams the file as it is written.

use super::auth::{Caller, Right};
use super::error::{ApiError, Query};
use super::jobs::Counting;
use super::{blocking, AppState};
use crate::domain::{CriteriaText, Source, Timestamp};
use crate::import::{ImportOptions, ImportReport, Input};
use crate::mapping::Mapping;
use crate::store::ChangeContext;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use std::io::{Read, Seek, Write};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/imports", post(import))
        .route("/v1/imports/{id}", get(import_status))
        .route("/v1/exports", get(export))
        .route("/v1/mappings", get(mappings))
}

/// `GET /v1/mappings` (manage): the mappings an import or export may name, with their format; a
/// mapping with problems is listed with them.
#[utoipa::path(get, path = "/v1/mappings", tag = "imports and exports", responses((status = 200, body = serde_json::Value, description = "the mappings")))]
async fn mappings(State(state): State<AppState>, caller: Caller) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Right::Manage)?;
    let dir = state.config.mappings_dir.clone();
    let items = blocking(move || {
        Ok(Mapping::names(&dir)
            .into_iter()
            .filter(|n| valid_name(n))
            .map(|n| match Mapping::load(&n, &dir) {
                Ok(m) => serde_json::json!({"name": n, "format": m.format().kind.extension()}),
                Err(e) => serde_json::json!({"name": n, "problems": e.problems}),
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(serde_json::json!({ "items": items })))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Loads a mapping by name (never a path: a client must not make the daemon read other files).
pub fn mapping(state: &AppState, name: &str) -> Result<Mapping, ApiError> {
    if !valid_name(name) {
        return Err(ApiError::field("mapping", "a mapping name: letters, digits, - and _"));
    }
    Mapping::load(name, &state.config.mappings_dir).map_err(|e| ApiError::field("mapping", e))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportParams {
    mapping: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    strict: bool,
    /// The file's name, for the report's locations and each change's proof (default `upload`; 1 to 200
    /// characters).
    name: Option<String>,
    /// Answer 202 with a job at once and import in the background (`GET /v1/imports/{id}`).
    #[serde(default)]
    background: bool,
    /// The region national numbers in the file are written in (over the mapping's and the config's).
    region: Option<String>,
}

fn too_large(limit_mb: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the file is larger than the limit of {limit_mb} MiB (http.max_import_mb); nothing was imported"),
    )
}

/// `POST /v1/imports?mapping=NAME[&dry_run=true][&strict=true][&background=true]` (manage): the
/// body is the file. The report comes back, or with `background` a job to follow (202).
#[utoipa::path(post, path = "/v1/imports", tag = "imports and exports", params(("mapping" = String, Query), ("dry_run" = Option<bool>, Query), ("strict" = Option<bool>, Query), ("name" = Option<String>, Query), ("background" = Option<bool>, Query), ("region" = Option<String>, Query)), request_body(content = String, description = "the file, in the mapping's format", content_type = "application/octet-stream"), responses((status = 200, body = ImportReport, description = "the import report"), (status = 202, body = serde_json::Value, description = "a background import started")))]
async fn import(
    State(state): State<AppState>,
    caller: Caller,
    Query(p): Query<ImportParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(Right::Manage)?;
    let mapping = mapping(&state, &p.mapping)?;
    let region = p
        .region
        .as_deref()
        .map(crate::domain::Region::parse)
        .transpose()
        .map_err(|e| ApiError::field("region", e))?;
    // The name is kept with every change the import makes, as the file of its proof.
    if p.name
        .as_ref()
        .is_some_and(|n| n.is_empty() || n.chars().count() > 200 || n.chars().any(char::is_control))
    {
        return Err(ApiError::field("name", "1 to 200 characters, no control characters"));
    }
    let limit_mb = state.config.http.max_import_mb;
    let limit = limit_mb << 20;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large(limit_mb));
    }
    // The whole body is taken before anything is imported, so a body over the limit changes nothing.
    let spool = tempfile::tempfile().map_err(ApiError::internal)?;
    let mut file = tokio::fs::File::from_std(spool.try_clone().map_err(ApiError::internal)?);
    let mut stream = body.into_data_stream();
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the request body could not be read: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(too_large(limit_mb));
        }
        tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
            .await
            .map_err(ApiError::internal)?;
    }
    tokio::io::AsyncWriteExt::flush(&mut file).await.map_err(ApiError::internal)?;
    drop(file);
    let name = p.name.clone().unwrap_or_else(|| "upload".into());
    let ctx = ChangeContext {
        actor: caller.name.to_string(),
        source: Source::Import(mapping.name.as_str().into()),
        now: Timestamp::now(),
        prefer: crate::domain::Prefer::Newest,
        call_id: None,
    };
    let opts = ImportOptions {
        dry_run: p.dry_run,
        strict: p.strict,
        rejects: None,
        chunk_records: state.config.import.chunk_records,
        skip: None,
        region,
        max_field_bytes: state.config.import.max_field_bytes,
    };
    if p.background {
        let (id, read) = state.imports.start(caller.name.clone(), size);
        let st = state.clone();
        tokio::spawn(async move {
            let result = run_import(st.clone(), caller, mapping, spool, name, ctx, opts, read).await;
            st.imports.finish(id, result);
        });
        let body = serde_json::json!({"job": id, "status": format!("/v1/imports/{id}")});
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let read = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    Ok(Json(run_import(state, caller, mapping, spool, name, ctx, opts, read).await?).into_response())
}

/// Imports the spooled file; `read` follows how much of it has been read.
#[allow(clippy::too_many_arguments)]
async fn run_import(
    state: AppState,
    caller: Caller,
    mapping: Mapping,
    spool: std::fs::File,
    name: String,
    ctx: ChangeContext,
    opts: ImportOptions,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Result<ImportReport, ApiError> {
    let st = state.clone();
    let result = blocking(move || {
        let input = Input::new(&name, move || {
            let mut f = spool.try_clone()?;
            f.rewind()?;
            read.store(0, std::sync::atomic::Ordering::Relaxed);
            let counted = Counting {
                inner: f,
                read: read.clone(),
            };
            Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, counted)) as Box<dyn Read + Send>)
        });
        let phones = st.config.phone_parser();
        crate::import::import(&st.store, &mapping, &mut [input], &ctx, &phones, &opts).map_err(|e| match e {
            crate::import::ImportError::Store(e) => ApiError::from(e),
            e => ApiError::internal(e),
        })
    })
    .await;
    state.metrics.import_finished(result.as_ref().ok());
    let mut report = result?;
    if !caller.has(Right::View) {
        // Refused values may be phone numbers: only callers who may view consents see them.
        report.hide_values();
    }
    tracing::info!(
        actor = %caller.name,
        read = report.read,
        inserted = report.inserted,
        updated = report.updated,
        rejected = report.rejected,
        "Import over HTTP finished."
    );
    Ok(report)
}

/// `GET /v1/imports/{id}` (manage, the token that started it): a background import's progress, then
/// its report or error.
#[utoipa::path(get, path = "/v1/imports/{id}", tag = "imports and exports", params(("id" = String, Path)), responses((status = 200, body = serde_json::Value, description = "the import's progress or report")))]
async fn import_status(State(state): State<AppState>, caller: Caller, Path(id): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Right::Manage)?;
    let id: u64 = id.parse().map_err(|_| ApiError::field("id", "a job id is a whole number"))?;
    state
        .imports
        .status(id, &caller.name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found("no import job by that id for this token"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportParams {
    mapping: String,
    number: Option<String>,
    digits: Option<String>,
    usage: Option<String>,
    consent: Option<String>,
    created_from: Option<String>,
    created_to: Option<String>,
}

/// Hands what the export writes to the response body, a chunk at a time.
struct ChannelWriter(tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET /v1/exports?mapping=NAME&<criteria>` (manage): the consents matching the criteria (none: all)
/// in the mapping's format, streamed.
#[utoipa::path(get, path = "/v1/exports", tag = "imports and exports", params(("mapping" = String, Query), ("number" = Option<String>, Query), ("digits" = Option<String>, Query), ("usage" = Option<String>, Query), ("consent" = Option<String>, Query), ("created_from" = Option<String>, Query), ("created_to" = Option<String>, Query)), responses((status = 200, description = "the consents in the mapping's format", content((String = "text/csv"), (String = "text/tab-separated-values"), (String = "application/json"), (String = "application/x-ndjson"), (String = "application/xml")))))]
async fn export(State(state): State<AppState>, caller: Caller, Query(p): Query<ExportParams>) -> Result<Response, ApiError> {
    caller.require(Right::Manage)?;
    let mapping = mapping(&state, &p.mapping)?;
    let criteria = CriteriaText {
        number: p.number,
        digits: p.digits,
        consent: p.consent,
        usage: p.usage,
        created_from: p.created_from,
        created_to: p.created_to,
    }
    .parse(&state.config.phone_parser())?;
    let kind = mapping.format().kind;
    let (content_type, ext) = (kind.media_type(), kind.extension());
    // What the mapping leaves out (an opt-out list writes denied consents only) is said in a header.
    let only = match mapping.narrow(&criteria) {
        Some((_, note)) => note,
        None => Some(format!(
            "nothing: the mapping {} cannot write the consents these criteria ask for",
            mapping.name
        )),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let store = state.store.clone();
    let name = mapping.name.clone();
    let metrics = state.metrics.clone();
    tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let out = Box::new(std::io::BufWriter::with_capacity(1 << 16, ChannelWriter(tx)));
        let result = crate::export::export(&store, &mapping, &criteria, out);
        metrics.export_finished(result.as_ref().ok().copied());
        match result {
            Ok(n) => tracing::info!(written = n, mapping = %mapping.name, "Export over HTTP finished."),
            Err(e) => {
                tracing::error!(error = %e, "Export over HTTP failed; the response is cut short.");
                let _ = err_tx.blocking_send(Err(std::io::Error::other("the export failed")));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|item| (item, rx)) });
    let mut response = (
        [
            (header::CONTENT_TYPE, content_type.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"consents-{name}.{ext}\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response();
    if let Some(v) = only.and_then(|o| header::HeaderValue::from_str(&o).ok()) {
        response.headers_mut().insert("x-export-only", v);
    }
    Ok(response)
}

/// The OpenAPI description of these routes ([`super::openapi`]).
#[derive(utoipa::OpenApi)]
#[openapi(paths(mappings, import, import_status, export))]
pub struct Api;
