//! Who is calling: `Authorization: Bearer <token>` looked up by the token's SHA-256, and the rights
//! the configuration gives it. No token or an unknown one is a 401; a missing right a 403. Secrets
//! are never logged or echoed.

use super::{error::ApiError, AppState};
use crate::config::Config;
use axum::extract::FromRequestParts;
use axum::http::{header, request::Parts, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    View,
    Create,
    Modify,
    Delete,
    Manage,
    Dpo,
}

impl Right {
    pub const ALL: [Right; 6] = [Right::View, Right::Create, Right::Modify, Right::Delete, Right::Manage, Right::Dpo];

    pub fn as_str(self) -> &'static str {
        match self {
            Right::View => "view",
            Right::Create => "create",
            Right::Modify => "modify",
            Right::Delete => "delete",
            Right::Manage => "manage",
            Right::Dpo => "dpo",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A caller the token identified: its name (the actor in the audit trail) and rights.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: Arc<str>,
    rights: u8,
}

impl Caller {
    pub fn has(&self, r: Right) -> bool {
        self.rights & r.bit() != 0
    }

    /// 403 unless the caller has the right.
    pub fn require(&self, r: Right) -> Result<(), ApiError> {
        if self.has(r) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!("the token {:?} lacks the right {:?}", self.name, r.as_str()),
            ))
        }
    }

    /// 403 unless the caller has one of the rights.
    pub fn require_any(&self, rights: &[Right]) -> Result<(), ApiError> {
        match rights.iter().find(|r| self.has(**r)) {
            Some(_) => Ok(()),
            None => self.require(rights[0]).map_err(|mut e| {
                let names: Vec<_> = rights.iter().map(|r| r.as_str()).collect();
                e.message = format!("the token {:?} needs one of the rights {}", self.name, names.join(", "));
                e
            }),
        }
    }

    pub fn rights(&self) -> Vec<&'static str> {
        Right::ALL.into_iter().filter(|r| self.has(*r)).map(Right::as_str).collect()
    }
}

/// The configured tokens, by the SHA-256 of their secret.
#[derive(Default)]
pub struct Tokens {
    by_hash: HashMap<[u8; 32], Caller>,
}

impl Tokens {
    /// Tokens from the (checked) configuration; tokens whose variable is unset are left out.
    pub fn from_config(config: &Config) -> Self {
        let mut by_hash = HashMap::new();
        for t in &config.tokens {
            let hash: Option<[u8; 32]> = match (&t.token_env, &t.sha256) {
                (Some(var), _) => std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| Sha256::digest(v.as_bytes()).into()),
                (None, Some(h)) => hex::decode(h).ok().and_then(|b| b.try_into().ok()),
                (None, None) => None,
            };
            let rights = t
                .rights
                .iter()
                .filter_map(|r| Right::ALL.into_iter().find(|x| x.as_str() == r))
                .fold(0, |acc, r| acc | r.bit());
            if let Some(h) = hash {
                by_hash.insert(
                    h,
                    Caller {
                        name: t.name.as_str().into(),
                        rights,
                    },
                );
            }
        }
        Self { by_hash }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The caller a request's `Authorization: Bearer <token>` names, or why there is none.
    pub fn caller_of(&self, headers: &axum::http::HeaderMap) -> Result<Caller, &'static str> {
        let value = headers.get(header::AUTHORIZATION).ok_or("send Authorization: Bearer <token>")?;
        let secret = value
            .to_str()
            .ok()
            // The scheme is case-insensitive (RFC 9110): Bearer, bearer, BEARER.
            .and_then(|v| v.trim_start().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or("the Authorization header is not Bearer <token>")?;
        self.find(secret).ok_or("unknown token")
    }

    fn find(&self, secret: &str) -> Option<Caller> {
        let h: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        self.by_hash.get(&h).cloned()
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        state
            .tokens
            .caller_of(&parts.headers)
            .map_err(|why| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why))
    }
}
