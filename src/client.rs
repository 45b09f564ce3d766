//! The command line's way to a running daemon: with `--server URL`, commands go through the admin
//! HTTP API (token from `CONSENTD_TOKEN`) instead of opening the store, which the daemon holds.

use anyhow::{bail, Context};
use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use serde::de::DeserializeOwned;

pub struct Client {
    base: String,
    token: String,
    http: Http,
}

impl Client {
    /// `base` is the daemon's URL (`http://127.0.0.1:8080`); the token comes from `CONSENTD_TOKEN`.
    pub fn from_env(base: &str) -> anyhow::Result<Self> {
        let token = std::env::var("CONSENTD_TOKEN")
            .ok()
            .filter(|t| !t.is_empty())
            .context("--server needs an API token in CONSENTD_TOKEN")?;
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server {base:?} is not an http:// or https:// URL");
        }
        Ok(Self {
            base,
            token,
            // Imports and exports of millions of consents take a while: no overall timeout.
            http: Http::builder()
                .connect_timeout(std::time::Duration::from_secs(10))
                .timeout(None)
                .build()?,
        })
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.http.get(format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.http.post(format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.http.put(format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// Sends a request; a non-2xx answer becomes an error with the daemon's message and field.
    pub fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let r = req.send().with_context(|| format!("cannot reach the daemon at {}", self.base))?;
        if r.status().is_success() {
            return Ok(r);
        }
        let status = r.status();
        let body: serde_json::Value = r.json().unwrap_or_default();
        let message = body["message"].as_str().unwrap_or("no message");
        match body["field"].as_str() {
            Some(f) => bail!("the daemon refused the request ({status}): {f}: {message}"),
            None => bail!("the daemon refused the request ({status}): {message}"),
        }
    }

    /// Sends a request and reads its JSON answer.
    pub fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        Ok(self.send(req)?.json()?)
    }
}
