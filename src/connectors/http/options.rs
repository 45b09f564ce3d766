//! `[connectors.http]`: where and how a connector talks HTTP, and the checks of those settings.

use super::{secret, HeaderName, HeaderValue, HttpError};
use crate::connectors::Direction;
use serde::de::Deserializer;
use serde::Deserialize;
use std::collections::BTreeMap;

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
    /// successful pull; without it every pull takes everything. It goes with every page request, except
    /// to next-page URLs the server hands out (`next_url`, `link_header`), which are followed as given.
    #[serde(default)]
    pub since_param: Option<String>,
    /// The watermark of the first pull (RFC 3339); without it the first pull takes everything.
    #[serde(default)]
    pub start_from: Option<String>,
    /// Seconds before the watermark a pull asks from (default 60), so records at exactly the
    /// watermark are read again by a remote whose `since` means "strictly newer", and records the
    /// remote saved a little late are not missed. Records read again are unchanged.
    #[serde(default = "default_overlap")]
    pub since_overlap_secs: u64,
    /// How the watermark is written into `since_param`: `rfc3339` (default, `2025-01-01T00:00:00Z`),
    /// `epoch_seconds`, `epoch_millis`, or a strftime pattern in UTC such as `%Y-%m-%d %H:%M:%S`.
    #[serde(default)]
    pub since_format: SinceFormat,
    /// Push answers that refuse the *content* of a batch (default 400, 409, 413 and 422): the batch is
    /// kept as refused (see `on_refused`) and can be re-sent. Any other answer that is not a 2xx
    /// (401, 403, 404, 405, 5xx, …) means a misconfiguration or an outage: the run fails and the
    /// next run sends the same batch again. A 413 splits the batch first.
    #[serde(default = "default_refused_statuses")]
    pub refused_statuses: Vec<u16>,
    /// `deletes = "request"`: a 404 answer to a DELETE means the consent is already gone there
    /// (default false: a 404 fails the run, as a wrong `delete_url` would).
    #[serde(default)]
    pub not_found_means_deleted: bool,
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
fn default_overlap() -> u64 {
    60
}
fn default_refused_statuses() -> Vec<u16> {
    vec![400, 409, 413, 422]
}

/// How a watermark is written in the `since` parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum SinceFormat {
    #[default]
    Rfc3339,
    EpochSeconds,
    EpochMillis,
    /// A strftime pattern, in UTC.
    Pattern(String),
}

impl<'de> Deserialize<'de> for SinceFormat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "rfc3339" => SinceFormat::Rfc3339,
            "epoch_seconds" | "epoch_s" => SinceFormat::EpochSeconds,
            "epoch_millis" | "epoch_ms" => SinceFormat::EpochMillis,
            _ => SinceFormat::Pattern(s),
        })
    }
}

impl SinceFormat {
    /// The time as the remote reads it.
    pub fn write(&self, t: crate::domain::Timestamp) -> String {
        match self {
            SinceFormat::Rfc3339 => t.to_rfc3339(),
            SinceFormat::EpochSeconds => t.millis().div_euclid(1000).to_string(),
            SinceFormat::EpochMillis => t.millis().to_string(),
            SinceFormat::Pattern(p) => {
                use std::fmt::Write as _;
                let mut out = String::new();
                // A bad pattern is refused by `problems`; here it writes what it can.
                let _ = write!(out, "{}", t.to_datetime().format(p));
                out
            }
        }
    }

    fn problem(&self) -> Option<String> {
        let SinceFormat::Pattern(p) = self else { return None };
        let bad = chrono::format::StrftimeItems::new(p).any(|i| matches!(i, chrono::format::Item::Error));
        if bad || !p.contains('%') {
            Some(format!(
                "{p:?} is not rfc3339, epoch_seconds, epoch_millis or a strftime pattern such as \"%Y-%m-%dT%H:%M:%S\""
            ))
        } else {
            None
        }
    }
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
    /// OAuth2 client credentials: a token from `token_url` (cached until it expires, fetched again
    /// once on a 401), sent as `Authorization: Bearer`. The client id comes from `client_id` or the
    /// variable `client_id_env`, the secret from `client_secret_env`. `client_auth` is `basic`
    /// (default, RFC 6749) or `body` (id and secret as form fields, as some servers want).
    Oauth2 {
        token_url: String,
        #[serde(default)]
        client_id: Option<String>,
        #[serde(default)]
        client_id_env: Option<String>,
        client_secret_env: String,
        #[serde(default)]
        scope: Option<String>,
        #[serde(default)]
        audience: Option<String>,
        #[serde(default)]
        client_auth: ClientAuth,
    },
}

/// How an OAuth2 client presents its id and secret to the token endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    #[default]
    Basic,
    Body,
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
    /// `?offset=N&limit=size`; stops at an empty (or short) page, so `size` must not exceed the
    /// largest page the server gives.
    Offset {
        #[serde(default = "offset_param")]
        offset_param: String,
        #[serde(default = "limit_param")]
        limit_param: String,
        #[serde(default = "page_size")]
        size: u64,
    },
    /// A next-page token in the body at `path` (dotted, e.g. `meta.next_token`) or in the response
    /// header `header` (e.g. `X-Next-Page-Token`), sent back as `param`; stops when it is absent,
    /// null or empty.
    Token {
        #[serde(default)]
        path: Option<String>,
        #[serde(default)]
        header: Option<String>,
        param: String,
    },
    /// Keyset pagination: the last record's `field` (its id or cursor, a dotted path inside the
    /// record) sent as `param` for the next page (`?after=1234`); stops at an empty page. JSON only;
    /// the records are found at the mapping's `format.records`.
    After { field: String, param: String },
    /// The next page's URL in the body at `path` (relative URLs resolved against the page's); stops
    /// when it is absent, null or empty. It must be on the same host as `url` (credentials go there).
    NextUrl { path: String },
    /// The next page's URL in a `Link: <…>; rel="next"` header; stops when there is none. It must be
    /// on the same host as `url`.
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
        if let Some(e) = self.since_format.problem() {
            p.push(format!("{at}.since_format: {e}"));
        }
        for &status in &self.refused_statuses {
            if !(400..500).contains(&status) || matches!(status, 401 | 407 | 408 | 429) {
                p.push(format!(
                    "{at}.refused_statuses: {status} is not an answer that refuses content (a 4xx other than 401, 407, 408 and 429)"
                ));
            }
        }
        if self.read_timeout_secs == 0 || self.connect_timeout_secs == 0 {
            p.push(format!("{at}: timeouts must be at least 1 second"));
        }
        for (name, value) in &self.headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(format!("{at}.headers: {name:?} is not a valid header name"));
            } else if HeaderValue::from_str(value).is_err() {
                p.push(format!("{at}.headers.{name}: {value:?} is not a valid header value"));
            }
        }
        let secrets: Vec<&String> = match &self.auth {
            None => vec![],
            Some(Auth::Bearer { token_env }) => vec![token_env],
            Some(Auth::Basic { password_env, .. }) => vec![password_env],
            Some(Auth::Header { value_env, .. }) => vec![value_env],
            Some(Auth::Oauth2 {
                token_url,
                client_id,
                client_id_env,
                client_secret_env,
                ..
            }) => {
                if reqwest::Url::parse(token_url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
                    p.push(format!("{at}.auth.token_url: {token_url:?} is not an http:// or https:// URL"));
                }
                match (client_id, client_id_env) {
                    (Some(_), None) => vec![client_secret_env],
                    (None, Some(v)) => vec![v, client_secret_env],
                    _ => {
                        p.push(format!("{at}.auth: give client_id or client_id_env (one of them)"));
                        vec![client_secret_env]
                    }
                }
            }
        };
        for var in secrets {
            if let Err(HttpError::Config(e)) = secret(var) {
                p.push(format!("{at}.auth: {e}"));
            }
        }
        if let Some(Auth::Header { name, .. }) = &self.auth {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push(format!("{at}.auth.name: {name:?} is not a valid header name"));
            }
        }
        let at = format!("{at}.pagination");
        match &self.pagination {
            Pagination::None | Pagination::LinkHeader => {}
            Pagination::Page {
                param, size_param, size, ..
            } => {
                if param.is_empty() {
                    p.push(format!("{at}.param: must not be empty"));
                }
                match (size_param, size) {
                    (Some(_), Some(0)) => p.push(format!("{at}.size: must be at least 1")),
                    (Some(sp), _) if sp.is_empty() => p.push(format!("{at}.size_param: must not be empty")),
                    (Some(_), Some(_)) | (None, None) => {}
                    (Some(_), None) => p.push(format!("{at}: size_param needs a size")),
                    (None, Some(_)) => p.push(format!("{at}: size needs a size_param to be sent as")),
                }
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
            } => {
                if offset_param.is_empty() || limit_param.is_empty() {
                    p.push(format!("{at}: offset_param and limit_param must not be empty"));
                }
                if *size == 0 {
                    p.push(format!("{at}.size: must be at least 1"));
                }
            }
            Pagination::Token { path, header, param } => {
                match (path, header) {
                    (Some(path), None) if path.split('.').any(str::is_empty) => {
                        p.push(format!("{at}.path: {path:?} is not a dotted path such as \"meta.next_token\""))
                    }
                    (None, Some(h)) if HeaderName::from_bytes(h.as_bytes()).is_err() => {
                        p.push(format!("{at}.header: {h:?} is not a valid header name"))
                    }
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => p.push(format!(
                        "{at}: give path (the token in the body) or header (in a response header), one of them"
                    )),
                }
                if param.is_empty() {
                    p.push(format!("{at}.param: must not be empty"));
                }
            }
            Pagination::After { field, param } => {
                if field.split('.').any(str::is_empty) {
                    p.push(format!(
                        "{at}.field: {field:?} is not a dotted path such as \"id\" or \"meta.cursor\""
                    ));
                }
                if param.is_empty() {
                    p.push(format!("{at}.param: must not be empty"));
                }
            }
            Pagination::NextUrl { path } => {
                if path.split('.').any(str::is_empty) {
                    p.push(format!("{at}.path: {path:?} is not a dotted path such as \"links.next\""));
                }
            }
        }
        p
    }
}
