//! The HTTP transport: pulls pages of records (GET, with auth, pagination, a `since` watermark,
//! timeouts and retries with backoff) and pushes batches (POST/PUT with an idempotency key, or DELETE
//! requests). Bodies are bytes in the mapping's format; this module never looks at consents.
//! [`options`] holds the `[connectors.http]` settings and their checks, [`auth`] the secrets and the
//! OAuth2 token, [`pagination`] what finds the next page in an answer, [`retry`] the backoff; the
//! request loop is here.

mod auth;
mod options;
mod pagination;
mod retry;

pub use options::{Auth, ClientAuth, DeleteMode, HttpOptions, Pagination, PushMethod, SinceFormat};

use auth::*;
use pagination::*;
use retry::*;

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, LINK};
use reqwest::{Method, StatusCode, Url};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::io::{Read, Seek, Write};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tempfile::SpooledTempFile;
use tracing::debug;

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
    /// OAuth2 client credentials.
    oauth: Option<OAuth>,
    /// Where the records are in a JSON page (the mapping's `format.records`), for `after` pagination.
    records_path: Option<String>,
    /// Built on first use, so that `new` may be called anywhere (a blocking client cannot be built
    /// inside an async runtime).
    client: OnceLock<Result<Client, String>>,
    sleep: Arc<dyn Fn(Duration) + Send + Sync>,
    spill_above: usize,
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
        let mut oauth = None;
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
            Some(Auth::Oauth2 {
                token_url,
                client_id,
                client_id_env,
                client_secret_env,
                scope,
                audience,
                client_auth,
            }) => {
                let id = match (client_id, client_id_env) {
                    (Some(id), None) => id.clone(),
                    (None, Some(var)) => secret(var)?.0,
                    _ => return Err(HttpError::Config("http.auth: give client_id or client_id_env (one of them)".into())),
                };
                oauth = Some(OAuth::new(
                    token_url,
                    &id,
                    secret(client_secret_env)?,
                    scope.as_deref(),
                    audience.as_deref(),
                    *client_auth == ClientAuth::Body,
                )?);
            }
        }
        Ok(Self {
            opts: opts.clone(),
            url,
            headers,
            basic,
            oauth,
            records_path: None,
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

    /// Where the records are in a JSON page (the mapping's `format.records`): `after` pagination reads
    /// the last one's id there.
    pub fn with_records_path(mut self, path: Option<&str>) -> Self {
        self.records_path = path.map(str::to_string);
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
                Pagination::Token { path: Some(path), .. } | Pagination::NextUrl { path } => json_at_path(&mut got.body, path),
                Pagination::Token { .. } | Pagination::LinkHeader => Ok(got.link_next.take()),
                Pagination::After { field, .. } => {
                    let records = self.records_path.as_deref().unwrap_or("");
                    let path = if records.is_empty() {
                        format!("-1.{field}")
                    } else {
                        format!("{records}.-1.{field}")
                    };
                    json_at_path(&mut got.body, &path)
                }
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
                Pagination::After { param, field } => {
                    if count == 0 {
                        break;
                    }
                    let after = match next.map_err(|e| fail(format!("the last record's {field:?}: {e}")))? {
                        Some(t) if !t.is_empty() => t,
                        _ => {
                            return Err(fail(format!(
                                "the last record of the page has no {field:?} to ask for the next page after"
                            )))
                        }
                    };
                    if !seen.insert(fingerprint(&after)) {
                        return Err(fail(format!(
                            "the page ends with the same {field:?} as an earlier one; stopping rather than looping"
                        )));
                    }
                    let mut u = base.clone();
                    set_param(&mut u, param, &after);
                    u
                }
                Pagination::Token { param, path, header } => {
                    let from = path.as_deref().or(header.as_deref()).unwrap_or_default();
                    let token = match next.map_err(|e| fail(format!("next page token at {from:?}: {e}")))? {
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

    /// Sends the request `build` makes, with the OAuth2 token when there is one; a 401 to a token
    /// drops it and sends once more with a new one (it may have been revoked or expired early).
    fn send<T>(&self, client: &Client, build: &dyn Fn() -> RequestBuilder) -> Result<Response, Attempt<T>> {
        let mut renewed = false;
        loop {
            let mut rb = build();
            let mut used = None;
            if let Some(o) = &self.oauth {
                let token = o.token(client).map_err(|e| match e {
                    TokenError::Retry(cause) => Attempt::Retry { cause, wait: None },
                    TokenError::Fail(reason) => Attempt::Fail(reason),
                })?;
                rb = rb.bearer_auth(&token);
                used = Some(token);
            }
            let resp = rb.send().map_err(|e| self.transport_failure(&e))?;
            if let (StatusCode::UNAUTHORIZED, Some(o), Some(token), false) = (resp.status(), &self.oauth, &used, renewed) {
                debug!("The API answered 401 to the OAuth2 token; fetching a new one.");
                o.forget(token);
                renewed = true;
                continue;
            }
            return Ok(resp);
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
            let resp = match self.send(client, &|| self.request(client, Method::GET, url)) {
                Ok(r) => r,
                Err(a) => return a,
            };
            let status = resp.status();
            if !status.is_success() {
                if retryable(status) {
                    return Attempt::Retry {
                        cause: format!("HTTP {status}"),
                        wait: retry_after(&resp),
                    };
                }
                return Attempt::Fail(format!("HTTP {status}{ANSWERED}{}", body_start(resp, FAILED_BODY_BYTES)));
            }
            let final_url = resp.url().clone();
            // The next page from a header: a `Link: rel="next"`, or a token header.
            let link_next = match &self.opts.pagination {
                Pagination::Token { header: Some(h), .. } => resp
                    .headers()
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(|v| v.trim().to_string()),
                _ => resp
                    .headers()
                    .get_all(LINK)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(link_next),
            };
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
            let build = || {
                let rb = self.request(client, method.clone(), url).header(IDEMPOTENCY_KEY, key.clone());
                match &body {
                    Some((bytes, content_type)) => rb.header(CONTENT_TYPE, content_type.clone()).body(bytes.clone()),
                    None => rb,
                }
            };
            let resp = match self.send(client, &build) {
                Ok(r) => r,
                Err(a) => return a,
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
                    "HTTP {status}{}{ANSWERED}{}",
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
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// One page, received whole.
struct Received {
    /// Where it finally came from (after redirects).
    url: Url,
    /// The `Link: <…>; rel="next"` target, or the token header, as sent.
    link_next: Option<String>,
    body: SpooledTempFile,
    /// SHA-256 of the body.
    digest: [u8; 32],
    bytes: u64,
}

fn parse_target(url: &str, key: &str) -> Result<Url, HttpError> {
    Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| HttpError::Config(format!("http.{key}: {:?} is not an http:// or https:// URL", strip_userinfo(url))))
}

/// The first `limit` bytes of an answer, as text.
/// What joins an error to the start of the remote's answer. The answer may quote anything (numbers
/// of ours included): logs above debug level cut an error here ([`without_answer`]); the API shows it
/// whole to callers with the view right, masked to others.
pub const ANSWERED: &str = "; the remote answered: ";

/// An error without the remote's answer it quotes, if any.
pub fn without_answer(error: &str) -> &str {
    error.split(ANSWERED).next().unwrap_or(error)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::Direction;
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
    fn new_option_problems_name_the_key() {
        let problems = |text: &str| {
            let opts: HttpOptions = toml::from_str(&format!("url = \"https://x.test/c\"\n{text}")).unwrap();
            opts.problems("c.toml: connectors[0].http", Direction::Both)
        };
        assert!(problems("since_format = \"%Y-%m-%d %H:%M:%S\"\nrefused_statuses = [400, 410]").is_empty());
        assert_eq!(
            problems("since_format = \"yesterday\""),
            ["c.toml: connectors[0].http.since_format: \"yesterday\" is not rfc3339, epoch_seconds, epoch_millis or a strftime pattern such as \"%Y-%m-%dT%H:%M:%S\""]
        );
        assert_eq!(
            problems("refused_statuses = [401, 500]"),
            [
                "c.toml: connectors[0].http.refused_statuses: 401 is not an answer that refuses content (a 4xx other than 401, 407, 408 and 429)",
                "c.toml: connectors[0].http.refused_statuses: 500 is not an answer that refuses content (a 4xx other than 401, 407, 408 and 429)"
            ]
        );
        assert_eq!(
            problems("pagination = { style = \"token\", param = \"t\" }"),
            ["c.toml: connectors[0].http.pagination: give path (the token in the body) or header (in a response header), one of them"]
        );
        assert_eq!(
            problems("pagination = { style = \"after\", field = \"\", param = \"after\" }"),
            ["c.toml: connectors[0].http.pagination.field: \"\" is not a dotted path such as \"id\" or \"meta.cursor\""]
        );
        std::env::set_var("CONSENTD_TEST_OAUTH_SECRET_91c", "x");
        assert_eq!(
            problems("auth = { type = \"oauth2\", token_url = \"ftp://x\", client_secret_env = \"CONSENTD_TEST_OAUTH_SECRET_91c\" }"),
            [
                "c.toml: connectors[0].http.auth.token_url: \"ftp://x\" is not an http:// or https:// URL",
                "c.toml: connectors[0].http.auth: give client_id or client_id_env (one of them)"
            ]
        );
        assert_eq!(
            problems("auth = { type = \"bearer\", token_env = \"CONSENTD_TEST_UNSET_91c\" }"),
            ["c.toml: connectors[0].http.auth: the environment variable CONSENTD_TEST_UNSET_91c (an HTTP secret) is not set"]
        );
    }

    #[test]
    fn the_watermark_is_written_as_the_remote_reads_it() {
        let t = crate::domain::Timestamp::parse_rfc3339("2025-04-01T12:30:05.250+02:00").unwrap();
        let write = |f: &str| {
            let f: SinceFormat =
                toml::from_str::<std::collections::BTreeMap<String, SinceFormat>>(&format!("f = {f:?}")).unwrap()["f"].clone();
            f.write(t)
        };
        assert_eq!(write("rfc3339"), "2025-04-01T10:30:05.250Z");
        assert_eq!(write("epoch_seconds"), "1743503405");
        assert_eq!(write("epoch_millis"), "1743503405250");
        assert_eq!(write("%Y-%m-%d %H:%M:%S"), "2025-04-01 10:30:05");
        assert_eq!(write("%d.%m.%Y"), "01.04.2025");
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
