//! API errors and the extractors that turn bad input into them: every error is
//! `{"error": code, "message": ..., "field": ...}` with a 4xx or 5xx status; internal causes go to
//! the log, never to the client.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{request::Parts, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 about one field of the request.
    pub fn field(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            field: Some(field.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid", message.to_string())
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// An unexpected failure: the cause is logged, the client gets an opaque message.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "A request failed unexpectedly.");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed; the cause is in the daemon's log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.code, "message": self.message, "field": self.field});
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme it takes.
            r.headers_mut()
                .insert(axum::http::header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

/// Every error answered as JSON, as the README promises: the ones axum answers itself (a 405, with its
/// `Allow` kept; a path or query it cannot extract, as text) get the same body as ours.
pub async fn errors_as_json(r: Response) -> Response {
    let status = r.status();
    let is_json = r
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return r;
    }
    let (mut parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let (code, message) = match status {
        // axum adds `Allow` to the answer after this layer.
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this route does not take that method; the Allow header says which it takes".to_string(),
        ),
        _ => ("invalid", String::from_utf8_lossy(&text).trim().to_string()),
    };
    let body = serde_json::to_vec(&serde_json::json!({"error": code, "message": message, "field": null})).expect("serialisable");
    parts.headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::BadCursor => Self::field("cursor", e),
            // Another replica may answer: 503, as /readyz says, not a failure of this request.
            crate::store::StoreError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "The store did not answer a request.");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the consent store does not answer now; try again (the cause is in the daemon's log)",
                )
            }
            e => Self::internal(e),
        }
    }
}

impl From<crate::domain::BadCriterion> for ApiError {
    fn from(e: crate::domain::BadCriterion) -> Self {
        Self::field(e.field, e.reason)
    }
}

/// A JSON body, read up to the route's limit; unknown fields and wrong types are refused with the
/// field's path (`ids[2]`, `number`).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "the request body is larger than the limit",
                )
            } else {
                ApiError::bad_request(e.body_text())
            }
        })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        let parsed = serde_path_to_error::deserialize(&mut *de);
        // Nothing but white space may follow the value (`{...} and more` is not JSON).
        if parsed.is_ok() {
            if let Err(e) = de.end() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("malformed JSON body: {e}"),
                ));
            }
        }
        match parsed {
            Ok(v) => Ok(Body(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                let field = (path != ".").then_some(path);
                Err(ApiError {
                    field,
                    ..ApiError::new(StatusCode::BAD_REQUEST, "invalid", format!("malformed JSON body: {inner}"))
                })
            }
        }
    }
}

/// Query parameters; unknown parameters and wrong types are refused.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de).map(Query).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            ApiError {
                field: (path != ".").then_some(path),
                ..ApiError::bad_request(format!("bad query parameter: {inner}"))
            }
        })
    }
}
