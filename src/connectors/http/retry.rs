//! Retries: which answers are worth another try, how long to wait (exponential backoff with
//! jitter, or the server's `Retry-After`), and the loop that tries.

use super::{HttpConnector, HttpError, Response, StatusCode};
use reqwest::header::RETRY_AFTER;
use std::time::Duration;
use tracing::warn;

/// What one attempt at a request came to.
pub(super) enum Attempt<T> {
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

/// What a status that fails a push says is wrong.
pub(super) fn misconfigured_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 407 => " (the credentials were not accepted)",
        403 => " (the credentials lack the right)",
        404 => " (is the URL right?)",
        405 => " (the method is not allowed there: push_method?)",
        300..=399 => " (a redirect that was not followed)",
        _ => "",
    }
}

pub(super) fn retryable(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT
}

/// The `Retry-After` of a 429 or 503 answer.
pub(super) fn retry_after(resp: &Response) -> Option<Duration> {
    if !matches!(resp.status(), StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE) {
        return None;
    }
    let value = resp.headers().get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, chrono::Utc::now())
}

/// `Retry-After`: delay seconds, or an HTTP date (a date in the past means now).
pub(super) fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some((when.with_timezone(&chrono::Utc) - now).to_std().unwrap_or(Duration::ZERO))
}

/// Between half of `backoff` and all of it ("equal jitter"), so that clients do not retry in step.
pub(super) fn jitter(backoff: Duration) -> Duration {
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

impl HttpConnector {
    /// Runs `attempt` until it is done or fails for good, at most `retries + 1` times, waiting between
    /// attempts (exponential backoff with jitter, or the server's `Retry-After`). Returns the value and
    /// the number of attempts it took.
    pub(super) fn with_retries<T>(
        &self,
        shown_url: &str,
        logged_url: &str,
        mut attempt: impl FnMut() -> Attempt<T>,
    ) -> Result<(T, u32), HttpError> {
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
