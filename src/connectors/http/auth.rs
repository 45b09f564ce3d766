//! Secrets from the environment, never printed.

use super::{HeaderValue, HttpError};

/// A secret read from the environment; never printed.
pub(super) struct Secret(pub(super) String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

pub(super) fn secret(var: &str) -> Result<Secret, HttpError> {
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

pub(super) fn secret_header(value: &str, var: &str) -> Result<HeaderValue, HttpError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| HttpError::Config(format!("the secret in the environment variable {var} cannot be sent in a header")))?;
    v.set_sensitive(true);
    Ok(v)
}

/// OAuth2 client credentials (RFC 6749 §4.4): a token fetched from `token_url`, cached (for every
/// connector of this process with the same client and scope) until shortly before it expires, and
/// fetched again once when the API answers 401.
pub(super) struct OAuth {
    token_url: reqwest::Url,
    client_id: String,
    secret: Secret,
    scope: Option<String>,
    audience: Option<String>,
    in_body: bool,
    cache_key: String,
}

/// A cached token and when to stop using it.
struct Token {
    value: String,
    until: Option<std::time::Instant>,
}

fn tokens() -> &'static std::sync::Mutex<std::collections::HashMap<String, Token>> {
    static TOKENS: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<String, Token>>> = std::sync::OnceLock::new();
    TOKENS.get_or_init(Default::default)
}

/// Why no token could be had: worth another try (the token endpoint is down or slow), or not (it
/// refused the client: wrong id, secret or scope).
pub(super) enum TokenError {
    Retry(String),
    Fail(String),
}

impl OAuth {
    pub(super) fn new(
        token_url: &str,
        client_id: &str,
        secret: Secret,
        scope: Option<&str>,
        audience: Option<&str>,
        in_body: bool,
    ) -> Result<Self, HttpError> {
        let url = reqwest::Url::parse(token_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| HttpError::Config(format!("http.auth.token_url: {token_url:?} is not an http:// or https:// URL")))?;
        Ok(Self {
            cache_key: format!("{url}\u{0}{client_id}\u{0}{}\u{0}{}", scope.unwrap_or(""), audience.unwrap_or("")),
            token_url: url,
            client_id: client_id.to_string(),
            secret,
            scope: scope.map(str::to_string),
            audience: audience.map(str::to_string),
            in_body,
        })
    }

    /// The cached token, or a new one.
    pub(super) fn token(&self, client: &reqwest::blocking::Client) -> Result<String, TokenError> {
        if let Some(t) = tokens().lock().expect("tokens").get(&self.cache_key) {
            if t.until.is_none_or(|u| std::time::Instant::now() < u) {
                return Ok(t.value.clone());
            }
        }
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(s) = &self.scope {
            form.append_pair("scope", s);
        }
        if let Some(a) = &self.audience {
            form.append_pair("audience", a);
        }
        let mut rb = client
            .post(self.token_url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if self.in_body {
            form.append_pair("client_id", &self.client_id);
            form.append_pair("client_secret", &self.secret.0);
        } else {
            // RFC 6749 §2.3.1: id and secret form-encoded, then as HTTP basic credentials.
            let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            rb = rb.basic_auth(enc(&self.client_id), Some(enc(&self.secret.0)));
        }
        let at = format!("the token endpoint {}", self.token_url.origin().ascii_serialization());
        let resp = rb
            .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(form.finish())
            .send()
            .map_err(|e| TokenError::Retry(format!("{at}: {}", super::chain(&e))))?;
        let status = resp.status();
        if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(TokenError::Retry(format!("{at} answered {status}")));
        }
        if !status.is_success() {
            // The answer says why (`invalid_client`, `invalid_scope`); it holds no secret of ours.
            return Err(TokenError::Fail(format!(
                "{at} refused the client credentials: HTTP {status}{}{}",
                super::ANSWERED,
                super::body_start(resp, 300)
            )));
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: String,
            #[serde(default)]
            expires_in: Option<serde_json::Value>,
        }
        let answer: Answer = resp
            .json()
            .map_err(|e| TokenError::Fail(format!("{at} did not answer with an access_token: {}", super::chain(&e))))?;
        // Some servers send expires_in as a string.
        let secs = answer
            .expires_in
            .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())));
        // Renewed a little early, so a token does not expire on its way.
        let until = secs.map(|s| std::time::Instant::now() + std::time::Duration::from_secs(s.saturating_sub((s / 10).min(60))));
        tracing::debug!(expires_in = secs, "An OAuth2 token was fetched.");
        tokens().lock().expect("tokens").insert(
            self.cache_key.clone(),
            Token {
                value: answer.access_token.clone(),
                until,
            },
        );
        Ok(answer.access_token)
    }

    /// Drops `token` from the cache (the API answered 401 to it), unless another was cached since.
    pub(super) fn forget(&self, token: &str) {
        let mut cache = tokens().lock().expect("tokens");
        if cache.get(&self.cache_key).is_some_and(|t| t.value == token) {
            cache.remove(&self.cache_key);
        }
    }
}
