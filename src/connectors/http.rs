//! The HTTP transport: pulls pages of records (GET, with auth, pagination, a `since` watermark,
//! timeouts and retries with backoff) and pushes batches (POST/PUT with an idempotency key, or DELETE
//! requests). Bodies are bytes in the mapping's format; this module never looks at consents.

use super::Direction;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LINK, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tempfile::SpooledTempFile;
use tracing::{debug, warn};

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
    /// A next-page token in the body at `path` (dotted, e.g. `meta.next_token`), sent back as `param`;
    /// stops when it is absent, null or empty.
    Token { path: String, param: String },
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
            Pagination::Token { path, param } => {
                if path.split('.').any(str::is_empty) {
                    p.push(format!("{at}.path: {path:?} is not a dotted path such as \"meta.next_token\""));
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

/// Why a request finally failed (after retries), or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("{0}")]
    Config(String),
    #[error("{url}: {reason} (after {attempts} attempt(s))")]
    Failed { url: String, reason: String, attempts: u32 },
    /// The page was received, but the `page` callback of [`HttpConnector::pull`] could not use it
    /// (a parse or apply failure); the pull stops there, without retrying.
    #[error("{url}: {reason}")]
    Page { url: String, reason: String },
}

/// What became of one pushed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A 2xx answer.
    Delivered,
    /// Nothing was sent on purpose (a deletion the mapping cannot express).
    Skipped,
    /// An answer of `refused_statuses` (400, 409, 413, 422): the remote refuses this batch's content;
    /// sending it again unchanged will not help.
    Refused { status: u16, body: String },
}

/// One page of a pull, received whole (in memory, or spilled to a temporary file when large).
pub struct Page {
    pub url: String,
    pub body: Box<dyn Read + Send>,
}

/// Pages up to this size stay in memory; larger ones are spilled to a temporary file.
const SPILL_ABOVE: usize = 32 * 1024 * 1024;
/// How much of a refused push's answer is kept.
const REFUSED_BODY_BYTES: usize = 2048;
/// How much of a failed pull's answer goes into the error.
const FAILED_BODY_BYTES: usize = 512;
/// Redirects followed (same host only) before giving up.
const MAX_REDIRECTS: usize = 10;

/// The HTTP side of one connector, with its secrets resolved.
pub struct HttpConnector {
    opts: HttpOptions,
    /// The pull URL, parsed.
    url: Url,
    /// Extra headers plus a bearer or API-key header (marked sensitive).
    headers: HeaderMap,
    /// Basic auth: user and password.
    basic: Option<(String, Secret)>,
    /// Built on first use, so that `new` may be called anywhere (a blocking client cannot be built
    /// inside an async runtime).
    client: OnceLock<Result<Client, String>>,
    sleep: Arc<dyn Fn(Duration) + Send + Sync>,
    spill_above: usize,
}

/// A secret read from the environment; never printed.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl HttpConnector {
    pub fn new(opts: &HttpOptions) -> Result<Self, HttpError> {
        let url = Url::parse(&opts.url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                HttpError::Config(format!(
                    "http.url: {:?} is not an http:// or https:// URL",
                    strip_userinfo(&opts.url)
                ))
            })?;
        let mut headers = HeaderMap::new();
        for (name, value) in &opts.headers {
            let n = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| HttpError::Config(format!("http.headers: {name:?} is not a valid header name")))?;
            let v = HeaderValue::from_str(value)
                .map_err(|_| HttpError::Config(format!("http.headers.{name}: {value:?} is not a valid header value")))?;
            headers.append(n, v);
        }
        let mut basic = None;
        match &opts.auth {
            None => {}
            Some(Auth::Bearer { token_env }) => {
                let token = secret(token_env)?;
                headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {}", token.0), token_env)?);
            }
            Some(Auth::Basic { user, password_env }) => basic = Some((user.clone(), secret(password_env)?)),
            Some(Auth::Header { name, value_env }) => {
                let n = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| HttpError::Config(format!("http.auth.name: {name:?} is not a valid header name")))?;
                let value = secret(value_env)?;
                headers.insert(n, secret_header(&value.0, value_env)?);
            }
        }
        Ok(Self {
            opts: opts.clone(),
            url,
            headers,
            basic,
            client: OnceLock::new(),
            sleep: Arc::new(std::thread::sleep),
            spill_above: SPILL_ABOVE,
        })
    }

    /// Replaces how the connector waits between attempts (default `std::thread::sleep`): tests pass
    /// one that records the wait instead of sleeping.
    pub fn with_sleep(mut self, sleep: impl Fn(Duration) + Send + Sync + 'static) -> Self {
        self.sleep = Arc::new(sleep);
        self
    }

    /// Pages larger than `bytes` are kept in a temporary file rather than in memory (default 32 MiB).
    pub fn with_spill_above(mut self, bytes: usize) -> Self {
        self.spill_above = bytes;
        self
    }

    /// GETs every page from the watermark `since` on, handing each to `page`, which returns how many
    /// records it held (an empty page ends page and offset pagination).
    #[tracing::instrument(skip_all, fields(url = %without_query(&self.url)))]
    pub fn pull(&self, since: Option<&str>, page: &mut dyn FnMut(Page) -> Result<u64, String>) -> Result<(), HttpError> {
        let mut base = self.url.clone();
        if let (Some(param), Some(since)) = (&self.opts.since_param, since) {
            set_param(&mut base, param, since);
        }
        let mut cursor = match &self.opts.pagination {
            Pagination::Page { start, .. } => *start,
            _ => 0,
        };
        let mut url = self.numbered_url(&base, cursor);
        let mut seen: HashSet<[u8; 16]> = HashSet::new();
        seen.insert(fingerprint(url.as_str()));
        let mut previous_body: Option<[u8; 32]> = None;
        let (mut pages, mut records) = (0u64, 0u64);
        loop {
            let (mut got, attempts) = self.get(&url)?;
            pages += 1;
            let numbered = matches!(self.opts.pagination, Pagination::Page { .. } | Pagination::Offset { .. });
            if numbered && previous_body == Some(got.digest) {
                return Err(HttpError::Failed {
                    url: shown(&url),
                    reason: "the server sent the same page again (does it honour the paging parameters?)".into(),
                    attempts,
                });
            }
            previous_body = Some(got.digest);
            let next = match &self.opts.pagination {
                Pagination::Token { path, .. } | Pagination::NextUrl { path } => json_at_path(&mut got.body, path),
                Pagination::LinkHeader => Ok(got.link_next.take()),
                _ => Ok(None),
            };
            let page_url = shown(&got.url);
            let bytes = got.bytes;
            let count = page(Page {
                url: page_url.clone(),
                body: Box::new(got.body),
            })
            .map_err(|reason| HttpError::Page {
                url: page_url.clone(),
                reason,
            })?;
            records += count;
            debug!(page = pages, bytes, records = count, "Page received.");
            let fail = |reason: String| HttpError::Failed {
                url: page_url.clone(),
                reason,
                attempts,
            };
            url = match &self.opts.pagination {
                Pagination::None => break,
                Pagination::Page { .. } => {
                    if count == 0 {
                        break;
                    }
                    cursor += 1;
                    self.numbered_url(&base, cursor)
                }
                Pagination::Offset { size, .. } => {
                    if count == 0 || count < *size {
                        break;
                    }
                    cursor += count;
                    self.numbered_url(&base, cursor)
                }
                Pagination::Token { param, path } => {
                    let token = match next.map_err(|e| fail(format!("next page token at {path:?}: {e}")))? {
                        Some(t) if !t.is_empty() => t,
                        _ => break,
                    };
                    if !seen.insert(fingerprint(&token)) {
                        return Err(fail(format!(
                            "the server sent the next page token {token:?} again; stopping rather than looping"
                        )));
                    }
                    let mut u = base.clone();
                    set_param(&mut u, param, &token);
                    u
                }
                Pagination::NextUrl { .. } | Pagination::LinkHeader => {
                    let link = match next.map_err(|e| fail(format!("next page URL: {e}")))? {
                        Some(l) if !l.trim().is_empty() => l,
                        _ => break,
                    };
                    let u = got
                        .url
                        .join(link.trim())
                        .map_err(|e| fail(format!("next page URL {link:?}: {e}")))?;
                    if origin(&u) != origin(&self.url) {
                        return Err(fail(format!(
                            "the next page URL {} is not on {}; not sending the credentials there",
                            shown(&u),
                            origin(&self.url)
                        )));
                    }
                    if !seen.insert(fingerprint(u.as_str())) {
                        return Err(fail(format!(
                            "the server sent the next page URL {} again; stopping rather than looping",
                            shown(&u)
                        )));
                    }
                    u
                }
            };
        }
        debug!(pages, records, "Pull finished.");
        Ok(())
    }

    /// Sends one batch with an idempotency key (`Idempotency-Key` header).
    #[tracing::instrument(skip_all, fields(url = tracing::field::Empty))]
    pub fn push(&self, body: Vec<u8>, content_type: &str, idempotency_key: &str) -> Result<Delivery, HttpError> {
        let target = self.opts.push_url.as_deref().unwrap_or(&self.opts.url);
        let url = parse_target(target, "push_url")?;
        tracing::Span::current().record("url", tracing::field::display(without_query(&url)));
        let method = match self.opts.push_method {
            PushMethod::Post => Method::POST,
            PushMethod::Put => Method::PUT,
        };
        let content_type =
            HeaderValue::from_str(content_type).map_err(|_| HttpError::Config(format!("{content_type:?} is not a valid Content-Type")))?;
        self.deliver(
            method,
            &url,
            &shown(&url),
            &without_query(&url),
            Some((body, content_type)),
            idempotency_key,
        )
    }

    /// Sends a DELETE for one consent (`deletes = "request"`).
    #[tracing::instrument(skip_all, fields(url = tracing::field::Empty))]
    pub fn delete(&self, number: &str, usage: &str, id: &str, idempotency_key: &str) -> Result<Delivery, HttpError> {
        let template = self
            .opts
            .delete_url
            .as_deref()
            .ok_or_else(|| HttpError::Config("http.delete_url: deletes = \"request\" needs a delete_url".into()))?;
        // The filled URL holds a phone number: errors and logs show the template instead.
        let template_shown = strip_userinfo(template);
        tracing::Span::current().record("url", template_shown.as_str());
        let url = parse_target(&fill_template(template, number, usage, id), "delete_url")?;
        self.deliver(Method::DELETE, &url, &template_shown, &template_shown, None, idempotency_key)
    }

    fn client(&self) -> Result<&Client, HttpError> {
        let built = self.client.get_or_init(|| {
            let first_url = self.url.clone();
            Client::builder()
                .user_agent(concat!("consentd/", env!("CARGO_PKG_VERSION")))
                .default_headers(self.headers.clone())
                .connect_timeout(Duration::from_secs(self.opts.connect_timeout_secs))
                .timeout(Duration::from_secs(self.opts.read_timeout_secs))
                .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                    let from = attempt.previous().first().map_or_else(|| origin(&first_url), origin);
                    let to = origin(attempt.url());
                    if attempt.previous().len() > MAX_REDIRECTS {
                        attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
                    } else if to != from {
                        attempt.error(format!("a redirect to {to} (another host) is not followed"))
                    } else {
                        attempt.follow()
                    }
                }))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {}", chain(&e)))
        });
        built.as_ref().map_err(|e| HttpError::Config(e.clone()))
    }

    fn request(&self, client: &Client, method: Method, url: &Url) -> RequestBuilder {
        let rb = client.request(method, url.clone());
        match &self.basic {
            Some((user, password)) => rb.basic_auth(user, Some(&password.0)),
            None => rb,
        }
    }

    /// The first URL of page or offset pagination (or `base` for the other styles) at `cursor`.
    fn numbered_url(&self, base: &Url, cursor: u64) -> Url {
        let mut u = base.clone();
        match &self.opts.pagination {
            Pagination::Page {
                param, size_param, size, ..
            } => {
                set_param(&mut u, param, &cursor.to_string());
                if let (Some(p), Some(s)) = (size_param, size) {
                    set_param(&mut u, p, &s.to_string());
                }
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
            } => {
                set_param(&mut u, offset_param, &cursor.to_string());
                set_param(&mut u, limit_param, &size.to_string());
            }
            _ => {}
        }
        u
    }

    /// GETs one page, whole, with retries.
    fn get(&self, url: &Url) -> Result<(Received, u32), HttpError> {
        let client = self.client()?;
        self.with_retries(&shown(url), &without_query(url), || {
            let resp = match self.request(client, Method::GET, url).send() {
                Ok(r) => r,
                Err(e) => return self.transport_failure(&e),
            };
            let status = resp.status();
            if !status.is_success() {
                if retryable(status) {
                    return Attempt::Retry {
                        cause: format!("HTTP {status}"),
                        wait: retry_after(&resp),
                    };
                }
                return Attempt::Fail(format!("HTTP {status}: {}", body_start(resp, FAILED_BODY_BYTES)));
            }
            let final_url = resp.url().clone();
            let link_next = resp
                .headers()
                .get_all(LINK)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(link_next);
            match self.receive(resp) {
                Ok((body, digest, bytes)) => Attempt::Done(Received {
                    url: final_url,
                    link_next,
                    body,
                    digest,
                    bytes,
                }),
                Err(a) => a,
            }
        })
    }

    /// Reads a whole answer into memory, or a temporary file past `spill_above`.
    fn receive<T>(&self, mut resp: Response) -> Result<(SpooledTempFile, [u8; 32], u64), Attempt<T>> {
        let mut spool = SpooledTempFile::new(self.spill_above);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut bytes = 0u64;
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Attempt::Retry {
                        cause: format!("the answer was cut short after {bytes} bytes: {}", chain(&e)),
                        wait: None,
                    })
                }
            };
            hasher.update(&buf[..n]);
            spool
                .write_all(&buf[..n])
                .map_err(|e| Attempt::Fail(format!("cannot keep the page in a temporary file: {e}")))?;
            bytes += n as u64;
        }
        spool
            .rewind()
            .map_err(|e| Attempt::Fail(format!("cannot read back the page from its temporary file: {e}")))?;
        Ok((spool, hasher.finalize().into(), bytes))
    }

    /// Sends one push or delete request, with retries, and sorts the answer.
    fn deliver(
        &self,
        method: Method,
        url: &Url,
        shown_url: &str,
        logged_url: &str,
        body: Option<(Vec<u8>, HeaderValue)>,
        idempotency_key: &str,
    ) -> Result<Delivery, HttpError> {
        let key = HeaderValue::from_str(idempotency_key)
            .map_err(|_| HttpError::Config(format!("{idempotency_key:?} is not a valid Idempotency-Key")))?;
        let client = self.client()?;
        let is_delete = method == Method::DELETE;
        let (delivery, _) = self.with_retries(shown_url, logged_url, || {
            let mut rb = self.request(client, method.clone(), url).header(IDEMPOTENCY_KEY, key.clone());
            if let Some((bytes, content_type)) = &body {
                rb = rb.header(CONTENT_TYPE, content_type.clone()).body(bytes.clone());
            }
            let resp = match rb.send() {
                Ok(r) => r,
                Err(e) => return self.transport_failure(&e),
            };
            let status = resp.status();
            if status.is_success() || (is_delete && status == StatusCode::NOT_FOUND && self.opts.not_found_means_deleted) {
                Attempt::Done(Delivery::Delivered)
            } else if retryable(status) {
                Attempt::Retry {
                    cause: format!("HTTP {status}"),
                    wait: retry_after(&resp),
                }
            } else if self.opts.refused_statuses.contains(&status.as_u16()) {
                Attempt::Done(Delivery::Refused {
                    status: status.as_u16(),
                    body: body_start(resp, REFUSED_BODY_BYTES),
                })
            } else {
                // 401, 403, 404, 405, a redirect not followed…: the request or its credentials are
                // wrong, not the content. The run fails; the batch goes again next time.
                Attempt::Fail(format!(
                    "HTTP {status}{}: {}",
                    misconfigured_hint(status),
                    body_start(resp, FAILED_BODY_BYTES)
                ))
            }
        })?;
        Ok(delivery)
    }

    /// A request that got no (whole) answer: retried, unless the request itself is wrong.
    fn transport_failure<T>(&self, e: &reqwest::Error) -> Attempt<T> {
        let cause = chain(e);
        if e.is_builder() || e.is_redirect() {
            Attempt::Fail(cause)
        } else if e.is_timeout() {
            let waited = if e.is_connect() {
                format!("no connection within {} s", self.opts.connect_timeout_secs)
            } else {
                format!("no answer within {} s", self.opts.read_timeout_secs)
            };
            Attempt::Retry {
                cause: format!("timed out: {waited} ({cause})"),
                wait: None,
            }
        } else {
            Attempt::Retry { cause, wait: None }
        }
    }

    /// Runs `attempt` until it is done or fails for good, at most `retries + 1` times, waiting between
    /// attempts (exponential backoff with jitter, or the server's `Retry-After`). Returns the value and
    /// the number of attempts it took.
    fn with_retries<T>(&self, shown_url: &str, logged_url: &str, mut attempt: impl FnMut() -> Attempt<T>) -> Result<(T, u32), HttpError> {
        let max = self.opts.max_backoff_ms;
        let mut backoff = self.opts.backoff_ms.min(max);
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            match attempt() {
                Attempt::Done(value) => return Ok((value, attempts)),
                Attempt::Fail(reason) => {
                    return Err(HttpError::Failed {
                        url: shown_url.to_owned(),
                        reason,
                        attempts,
                    })
                }
                Attempt::Retry { cause, wait } => {
                    if attempts > self.opts.retries {
                        warn!(
                            url = logged_url,
                            attempts,
                            cause = cause.as_str(),
                            "Request failed; no retries left."
                        );
                        return Err(HttpError::Failed {
                            url: shown_url.to_owned(),
                            reason: cause,
                            attempts,
                        });
                    }
                    let wait = match wait {
                        Some(w) if w > Duration::from_millis(max) => {
                            warn!(
                                url = logged_url,
                                attempts,
                                retry_after_secs = w.as_secs(),
                                "The server asks to wait longer than max_backoff_ms."
                            );
                            return Err(HttpError::Failed {
                                url: shown_url.to_owned(),
                                reason: format!(
                                    "{cause}: the server asks to wait {} s (Retry-After), more than max_backoff_ms ({max} ms); the next run tries again",
                                    w.as_secs_f64().ceil() as u64
                                ),
                                attempts,
                            });
                        }
                        Some(w) => w,
                        None => jitter(Duration::from_millis(backoff)),
                    };
                    warn!(
                        url = logged_url,
                        attempt = attempts,
                        cause = cause.as_str(),
                        wait_ms = wait.as_millis() as u64,
                        "Request failed; retrying."
                    );
                    (self.sleep)(wait);
                    backoff = backoff.saturating_mul(2).min(max);
                }
            }
        }
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What one attempt at a request came to.
enum Attempt<T> {
    Done(T),
    /// Worth another try: a transport error, a timeout, a body cut short, a 5xx, 408 or 429.
    /// `wait` is the server's `Retry-After`, if it sent one.
    Retry {
        cause: String,
        wait: Option<Duration>,
    },
    /// Retrying will not help.
    Fail(String),
}

/// One page, received whole.
struct Received {
    /// Where it finally came from (after redirects).
    url: Url,
    /// The `Link: <…>; rel="next"` target, as sent.
    link_next: Option<String>,
    body: SpooledTempFile,
    /// SHA-256 of the body.
    digest: [u8; 32],
    bytes: u64,
}

fn secret(var: &str) -> Result<Secret, HttpError> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Ok(Secret(v)),
        Ok(_) => Err(HttpError::Config(format!(
            "the environment variable {var} (an HTTP secret) is empty"
        ))),
        Err(std::env::VarError::NotPresent) => Err(HttpError::Config(format!(
            "the environment variable {var} (an HTTP secret) is not set"
        ))),
        Err(std::env::VarError::NotUnicode(_)) => Err(HttpError::Config(format!(
            "the environment variable {var} (an HTTP secret) is not valid UTF-8"
        ))),
    }
}

fn secret_header(value: &str, var: &str) -> Result<HeaderValue, HttpError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| HttpError::Config(format!("the secret in the environment variable {var} cannot be sent in a header")))?;
    v.set_sensitive(true);
    Ok(v)
}

fn parse_target(url: &str, key: &str) -> Result<Url, HttpError> {
    Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| HttpError::Config(format!("http.{key}: {:?} is not an http:// or https:// URL", strip_userinfo(url))))
}

/// What a status that fails a push says is wrong.
fn misconfigured_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 407 => " (the credentials were not accepted)",
        403 => " (the credentials lack the right)",
        404 => " (is the URL right?)",
        405 => " (the method is not allowed there: push_method?)",
        300..=399 => " (a redirect that was not followed)",
        _ => "",
    }
}

fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// The `Retry-After` of a 429 or 503 answer.
fn retry_after(resp: &Response) -> Option<Duration> {
    if !matches!(resp.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        return None;
    }
    let value = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

/// `Retry-After`: delay seconds, or an HTTP date (a date in the past means now).
fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((when.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

/// Between half of `backoff` and all of it ("equal jitter"), so that clients do not retry in step.
fn jitter(backoff: Duration) -> Duration {
    let mut bytes = [0u8; 8];
    let random = match getrandom::getrandom(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64),
    };
    let half = backoff.as_millis() as u64 / 2;
    let spread = backoff.as_millis() as u64 - half;
    Duration::from_millis(half + random % (spread + 1))
}

/// The first `limit` bytes of an answer, as text.
fn body_start(resp: Response, limit: usize) -> String {
    let mut buf = Vec::with_capacity(limit.min(4096));
    // A body that cannot be read whole is still worth showing in part.
    let _ = resp.take(limit as u64).read_to_end(&mut buf);
    let text = match std::str::from_utf8(&buf) {
        Ok(s) => s.to_owned(),
        // Cut inside a character: drop the partial character.
        Err(e) if e.error_len().is_none() => String::from_utf8_lossy(&buf[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(&buf).into_owned(),
    };
    text.trim().to_owned()
}

/// An error and its causes, `: `-separated, without the request URL (it may hold a phone number).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    if let Some(u) = e.downcast_ref::<reqwest::Error>().and_then(|r| r.url()) {
        text = text.replace(&format!(" for url ({u})"), "");
    }
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Sets query parameter `key` to `value`, replacing any it already had.
fn set_param(url: &mut Url, key: &str, value: &str) {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != key)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut pairs = url.query_pairs_mut();
    pairs.clear();
    for (k, v) in &kept {
        pairs.append_pair(k, v);
    }
    pairs.append_pair(key, value);
}

/// A URL as errors show it: with its query, without a password.
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.to_string()
}

/// A URL as logs show it: no query (it may hold tokens or a watermark), no password.
fn without_query(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// A URL (or template) as text, without `user:password@`.
fn strip_userinfo(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

fn fingerprint(s: &str) -> [u8; 16] {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

/// Fills `{number}`, `{usage}` and `{id}` into a delete URL, each percent-encoded (`+` is `%2B`).
fn fill_template(template: &str, number: &str, usage: &str, id: &str) -> String {
    template
        .replace("{number}", &encode(number))
        .replace("{usage}", &encode(usage))
        .replace("{id}", &encode(id))
}

/// Percent-encodes all but the unreserved characters of RFC 3986.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `rel="next"` target of one `Link` header value (RFC 8288), if it has one.
fn link_next(header: &str) -> Option<String> {
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
        if !rest.starts_with('<') {
            return None;
        }
        let end = rest.find('>')?;
        let target = &rest[1..end];
        rest = &rest[end + 1..];
        let mut is_next = false;
        // Parameters: `; name=value` or `; name="quoted value"`, up to the next `,` between links.
        while let Some(after) = rest.trim_start().strip_prefix(';') {
            let after = after.trim_start();
            let name_end = after.find(['=', ';', ',']).unwrap_or(after.len());
            let name = after[..name_end].trim();
            rest = &after[name_end..];
            let mut value = String::new();
            if let Some(v) = rest.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(quoted) = v.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut closed = quoted.len();
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => {
                                if let Some((_, escaped)) = chars.next() {
                                    value.push(escaped);
                                }
                            }
                            '"' => {
                                closed = i + 1;
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    rest = &quoted[closed..];
                } else {
                    let value_end = v.find([';', ',']).unwrap_or(v.len());
                    value = v[..value_end].trim().to_owned();
                    rest = &v[value_end..];
                }
            }
            if name.eq_ignore_ascii_case("rel") && value.split_ascii_whitespace().any(|r| r.eq_ignore_ascii_case("next")) {
                is_next = true;
            }
        }
        if is_next {
            return Some(target.trim().to_owned());
        }
    }
}

/// The text at a dotted `path` (`meta.next`, `links.0.href`) of a JSON document, read as a stream
/// (the rest of the document is skipped, not kept). `None` when the path is absent or null; numbers
/// come back as their text. Leaves `body` at its start.
fn json_at_path<R: Read + Seek>(body: &mut R, path: &str) -> Result<Option<String>, String> {
    let segments: Vec<&str> = path.split('.').collect();
    let found = {
        let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(&mut *body));
        AtPath(&segments)
            .deserialize(&mut de)
            .map_err(|e| format!("the page is not JSON ({e})"))
    };
    body.rewind().map_err(|e| format!("cannot read back the page: {e}"))?;
    match found? {
        Found::Missing | Found::Null => Ok(None),
        Found::Text(t) => Ok(Some(t)),
        Found::Other(what) => Err(format!("{path:?} holds {what}, not a string")),
    }
}

enum Found {
    Missing,
    Null,
    Text(String),
    Other(&'static str),
}

/// Walks `.0` of a dotted path into a JSON value, skipping everything else.
struct AtPath<'a>(&'a [&'a str]);

impl<'de> DeserializeSeed<'de> for AtPath<'_> {
    type Value = Found;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Found, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AtPath<'_> {
    type Value = Found;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            return Ok(Found::Other("an object"));
        };
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            if found.is_none() && key == *first {
                found = Some(map.next_value_seed(AtPath(rest))?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found.unwrap_or(Found::Missing))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
        let Some((first, rest)) = self.0.split_first() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(Found::Other("an array"));
        };
        let index = first.parse::<usize>().ok();
        let mut found = None;
        let mut i = 0usize;
        loop {
            if Some(i) == index {
                match seq.next_element_seed(AtPath(rest))? {
                    Some(f) => found = Some(f),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found.unwrap_or(Found::Missing))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_owned())
        } else {
            Found::Missing
        })
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Found, E> {
        Ok(if self.0.is_empty() { Found::Text(v) } else { Found::Missing })
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_string())
        } else {
            Found::Missing
        })
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_string())
        } else {
            Found::Missing
        })
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Text(v.to_string())
        } else {
            Found::Missing
        })
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Found, E> {
        Ok(if self.0.is_empty() {
            Found::Other("a boolean")
        } else {
            Found::Missing
        })
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Found, E> {
        Ok(if self.0.is_empty() { Found::Null } else { Found::Missing })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn at(json: &str, path: &str) -> Result<Option<String>, String> {
        json_at_path(&mut Cursor::new(json.as_bytes().to_vec()), path)
    }

    #[test]
    fn dotted_path_finds_nested_values() {
        let doc = r#"{"items":[{"id":1},{"id":2}],"meta":{"next":"abc","count":2,"none":null,"flag":true}}"#;
        assert_eq!(at(doc, "meta.next").unwrap().as_deref(), Some("abc"));
        assert_eq!(at(doc, "meta.count").unwrap().as_deref(), Some("2"));
        assert_eq!(at(doc, "items.1.id").unwrap().as_deref(), Some("2"));
        assert_eq!(at(r#"{"cursor":"top"}"#, "cursor").unwrap().as_deref(), Some("top"));
        assert_eq!(
            at(r#"{"a":{"b":{"c":"deep \"quoted\" é"}}}"#, "a.b.c").unwrap().as_deref(),
            Some("deep \"quoted\" é")
        );
    }

    #[test]
    fn dotted_path_absent_null_and_wrong_kinds() {
        let doc = r#"{"meta":{"next":null,"flag":true,"obj":{}},"list":[]}"#;
        assert_eq!(at(doc, "meta.next").unwrap(), None);
        assert_eq!(at(doc, "meta.missing").unwrap(), None);
        assert_eq!(at(doc, "nothing.here").unwrap(), None);
        assert_eq!(at(doc, "meta.flag.deeper").unwrap(), None);
        assert_eq!(at(doc, "list.0").unwrap(), None);
        assert_eq!(at(doc, "list.x").unwrap(), None);
        assert!(at(doc, "meta.flag").unwrap_err().contains("a boolean"));
        assert!(at(doc, "meta.obj").unwrap_err().contains("an object"));
        assert!(at(doc, "list").unwrap_err().contains("an array"));
        assert!(at("[1,2", "a").unwrap_err().contains("not JSON"));
    }

    #[test]
    fn dotted_path_rewinds_the_body() {
        let mut body = Cursor::new(br#"{"next":"n","items":[1,2,3]}"#.to_vec());
        assert_eq!(json_at_path(&mut body, "next").unwrap().as_deref(), Some("n"));
        let mut all = String::new();
        body.read_to_string(&mut all).unwrap();
        assert_eq!(all, r#"{"next":"n","items":[1,2,3]}"#);
    }

    #[test]
    fn link_header_next() {
        assert_eq!(
            link_next(r#"<https://x.test/p?page=2>; rel="next""#).as_deref(),
            Some("https://x.test/p?page=2")
        );
        assert_eq!(
            link_next(
                r#"<https://x.test/p?page=1>; rel="prev", <https://x.test/p?page=3>; rel="next", <https://x.test/p?page=9>; rel="last""#
            )
            .as_deref(),
            Some("https://x.test/p?page=3")
        );
        assert_eq!(link_next("</items?cursor=a,b>;rel=next").as_deref(), Some("/items?cursor=a,b"));
        assert_eq!(link_next(r#"<p2>; title="a; b, c"; rel="prefetch next""#).as_deref(), Some("p2"));
        assert_eq!(link_next(r#"<p2>; REL="Next""#).as_deref(), Some("p2"));
        assert_eq!(link_next(r#"<p2>; title="say \"next\""; rel="prev""#), None);
        assert_eq!(link_next(r#"<https://x.test/p?page=1>; rel="prev""#), None);
        assert_eq!(link_next(r#"<https://x.test/next>; rel="nextish""#), None);
        assert_eq!(link_next(""), None);
        assert_eq!(link_next("garbage"), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn jitter_stays_between_half_and_whole() {
        for _ in 0..200 {
            let j = jitter(Duration::from_millis(100));
            assert!(j >= Duration::from_millis(50) && j <= Duration::from_millis(100), "{j:?}");
        }
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn delete_templates_are_encoded() {
        assert_eq!(
            fill_template("https://x.test/c/{number}/{usage}?id={id}", "+4930 123", "call_recording", "a/b"),
            "https://x.test/c/%2B4930%20123/call_recording?id=a%2Fb"
        );
    }

    #[test]
    fn query_parameters_are_replaced() {
        let mut u = Url::parse("https://x.test/c?page=7&q=a+b").unwrap();
        set_param(&mut u, "page", "2");
        set_param(&mut u, "since", "2025-01-01T00:00:00+01:00");
        assert_eq!(u.as_str(), "https://x.test/c?q=a+b&page=2&since=2025-01-01T00%3A00%3A00%2B01%3A00");
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        let u = Url::parse("https://me:pw@x.test/c?page=2").unwrap();
        assert_eq!(shown(&u), "https://me@x.test/c?page=2");
        assert_eq!(without_query(&u), "https://me@x.test/c");
        assert_eq!(strip_userinfo("https://me:pw@x.test/c/{number}"), "https://x.test/c/{number}");
        assert_eq!(strip_userinfo("https://x.test/a@b"), "https://x.test/a@b");
    }

    #[test]
    fn option_problems_name_the_key() {
        let problems = |text: &str| {
            let opts: HttpOptions = toml::from_str(&format!("url = \"https://x.test/c\"\n{text}")).unwrap();
            opts.problems("c.toml: connectors[0].http", Direction::Pull)
        };
        assert!(problems("pagination = { style = \"token\", path = \"meta.next\", param = \"t\" }").is_empty());
        assert!(problems("pagination = { style = \"page\", size_param = \"per\", size = 50 }").is_empty());
        assert_eq!(
            problems("pagination = { style = \"token\", path = \"meta..next\", param = \"\" }"),
            [
                "c.toml: connectors[0].http.pagination.path: \"meta..next\" is not a dotted path such as \"meta.next_token\"",
                "c.toml: connectors[0].http.pagination.param: must not be empty"
            ]
        );
        assert_eq!(
            problems("pagination = { style = \"offset\", size = 0 }"),
            ["c.toml: connectors[0].http.pagination.size: must be at least 1"]
        );
        assert_eq!(
            problems("pagination = { style = \"page\", size = 10 }"),
            ["c.toml: connectors[0].http.pagination: size needs a size_param to be sent as"]
        );
        assert_eq!(
            problems("pagination = { style = \"next_url\", path = \"\" }"),
            ["c.toml: connectors[0].http.pagination.path: \"\" is not a dotted path such as \"links.next\""]
        );
        assert_eq!(
            problems("headers = { \"Bad Name\" = \"x\", X-Ok = \"line\\nbreak\" }"),
            [
                "c.toml: connectors[0].http.headers: \"Bad Name\" is not a valid header name",
                "c.toml: connectors[0].http.headers.X-Ok: \"line\\nbreak\" is not a valid header value"
            ]
        );
    }

    #[test]
    fn missing_secrets_name_the_variable() {
        let opts: HttpOptions =
            toml::from_str("url = \"https://x.test/c\"\n[auth]\ntype = \"bearer\"\ntoken_env = \"CONSENTD_TEST_UNSET_TOKEN_7f3a\"\n")
                .unwrap();
        match HttpConnector::new(&opts) {
            Err(HttpError::Config(m)) => assert!(m.contains("CONSENTD_TEST_UNSET_TOKEN_7f3a"), "{m}"),
            other => panic!("expected a config error, got {:?}", other.err()),
        }
    }
}
