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
