//! The HTTP transport: pulls pages of records (GET, with auth, pagination, a `since` watermark,
//! timeouts and retries with backoff) and pushes batches (POST/PUT with an idempotency key, or DELETE
//! requests). Bodies are bytes in the mapping's format; this module never looks at consents.

use super::Direction;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;

/// `[connectors.http]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpOptions {
    /// Where consents are pulled from (GET), and pushed to unless `push_url` is set.
    pub url: String,
    /// Where batches are pushed, if not `url`.
    #[serde(default)]
    pub push_url: Option<String>,
    /// `POST` (default) or `PUT`.
    #[serde(default)]
    pub push_method: PushMethod,
    /// How a deletion is pushed: `marker` (default: a record with the mapping's delete marker, in a
    /// batch) or `request` (a DELETE to `delete_url`).
    #[serde(default)]
    pub deletes: DeleteMode,
    /// For `deletes = "request"`: a URL with `{number}` (E.164, URL-encoded), `{usage}` and `{id}`.
    #[serde(default)]
    pub delete_url: Option<String>,
    #[serde(default)]
    pub auth: Option<Auth>,
    /// Extra request headers (no secrets here: use `auth`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub pagination: Pagination,
    /// Query parameter that carries the watermark (the newest update time seen, RFC 3339) of the last
    /// successful pull; without it every pull takes everything.
    #[serde(default)]
    pub since_param: Option<String>,
    /// The watermark of the first pull (RFC 3339); without it the first pull takes everything.
    #[serde(default)]
    pub start_from: Option<String>,
    /// Seconds to wait for a connection (default 10).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Seconds to wait for a response or the next bytes of one (default 60).
    #[serde(default = "default_read_timeout")]
    pub read_timeout_secs: u64,
    /// Retries of a request after a connection error, a timeout, a 5xx or a 429 (default 5).
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// First backoff in milliseconds; doubled each retry, with jitter, at most `max_backoff_ms`.
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
}

fn default_connect_timeout() -> u64 {
    10
}
fn default_read_timeout() -> u64 {
    60
}
fn default_retries() -> u32 {
    5
}
fn default_backoff() -> u64 {
    500
}
fn default_max_backoff() -> u64 {
    30_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum PushMethod {
    #[default]
    Post,
    Put,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeleteMode {
    #[default]
    Marker,
    Request,
}

/// How requests authenticate; secrets come from environment variables.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Bearer <secret>`.
    Bearer { token_env: String },
    /// HTTP basic auth.
    Basic { user: String, password_env: String },
    /// A header such as `X-API-Key: <secret>`.
    Header { name: String, value_env: String },
}

/// How the remote system pages its answers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "style", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One response holds everything.
    #[default]
    None,
    /// `?page=N` from `start` (default 1), optionally `size_param=size`; stops at an empty page.
    Page {
        #[serde(default = "page_param")]
        param: String,
        #[serde(default = "one")]
        start: u64,
        #[serde(default)]
        size_param: Option<String>,
        #[serde(default)]
        size: Option<u64>,
    },
    /// `?offset=N&limit=size`; stops at an empty (or short) page.
    Offset {
        #[serde(default = "offset_param")]
        offset_param: String,
        #[serde(default = "limit_param")]
        limit_param: String,
        #[serde(default = "page_size")]
        size: u64,
    },
    /// A next-page token in the body at `path` (dotted, e.g. `meta.next_token`), sent back as `param`;
    /// stops when it is absent, null or empty.
    Token { path: String, param: String },
    /// The next page's URL in the body at `path` (relative URLs resolved against the page's); stops
    /// when it is absent, null or empty.
    NextUrl { path: String },
    /// The next page's URL in a `Link: <…>; rel="next"` header; stops when there is none.
    LinkHeader,
}

fn page_param() -> String {
    "page".into()
}
fn one() -> u64 {
    1
}
fn offset_param() -> String {
    "offset".into()
}
fn limit_param() -> String {
    "limit".into()
}
fn page_size() -> u64 {
    10_000
}

impl HttpOptions {
    /// Every problem, each prefixed with `at`.
    pub fn problems(&self, at: &str, direction: Direction) -> Vec<String> {
        let mut p = Vec::new();
        for (key, url) in [
            ("url", Some(&self.url)),
            ("push_url", self.push_url.as_ref()),
            ("delete_url", self.delete_url.as_ref()),
        ] {
            if let Some(u) = url {
                let probe = u.replace("{number}", "1").replace("{usage}", "u").replace("{id}", "i");
                match reqwest::Url::parse(&probe) {
                    Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => {}
                    _ => p.push(format!("{at}.{key}: {u:?} is not an http:// or https:// URL")),
                }
            }
        }
        if direction.pushes() && self.deletes == DeleteMode::Request && self.delete_url.is_none() {
            p.push(format!("{at}.delete_url: deletes = \"request\" needs a delete_url"));
        }
        if let Some(t) = &self.start_from {
            if crate::domain::Timestamp::parse_rfc3339(t).is_err() {
                p.push(format!("{at}.start_from: {t:?} is not an RFC 3339 time"));
            }
        }
        if self.read_timeout_secs == 0 || self.connect_timeout_secs == 0 {
            p.push(format!("{at}: timeouts must be at least 1 second"));
        }
        p
    }
}

/// Why a request finally failed (after retries), or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Config(String),
    #[error("{url}: {reason} (after {attempts} attempt(s))")]
    Failed { url: String, reason: String, attempts: u32 },
}

/// What became of one pushed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer.
    Delivered,
    /// A 4xx answer (other than 408/429): the remote refuses this batch; retrying will not help.
    Refused { status: u16, body: String },
}

/// One page of a pull, received whole (in memory, or spilled to a temporary file when large).
pub struct Page {
    pub url: String,
    pub body: Box<dyn Read + Send>,
}

/// The HTTP side of one connector, with its secrets resolved.
pub struct HttpConnector {
    opts: HttpOptions,
}

impl HttpConnector {
    pub fn new(opts: &HttpOptions) -> Result<Self, HttpError> {
        Ok(Self { opts: opts.clone() })
    }

    /// GETs every page from the watermark `since` on, handing each to `page`, which returns how many
    /// records it held (an empty page ends page and offset pagination).
    pub fn pull(&self, since: Option<&str>, page: &mut dyn FnMut(Page) -> Result<u64, String>) -> Result<(), HttpError> {
        let _ = (since, page);
        Err(HttpError::Config(format!("{}: HTTP pull is not built yet", self.opts.url)))
    }

    /// Sends one batch with an idempotency key (`Idempotency-Key` header).
    pub fn push(&self, body: Vec<u8>, content_type: &str, idempotency_key: &str) -> Result<Delivery, HttpError> {
        let _ = (body, content_type, idempotency_key);
        Err(HttpError::Config("HTTP push is not built yet".into()))
    }

    /// Sends a DELETE for one consent (`deletes = "request"`).
    pub fn delete(&self, number: &str, usage: &str, id: &str, idempotency_key: &str) -> Result<Delivery, HttpError> {
        let _ = (number, usage, id, idempotency_key);
        Err(HttpError::Config("HTTP delete is not built yet".into()))
    }
}
