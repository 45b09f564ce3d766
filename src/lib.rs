//! consentd keeps a contact center's customer consents (may we record this call, may we message this
//! WhatsApp number) and keeps them in step with other consent management systems.
//!
//! # Layout
//! - [`domain`]: phone numbers, usages, consents, search criteria; parsed once at the edge, no I/O.
//! - [`store`]: the one door to the store (sled, or PostgreSQL): consents, their indexes, the change
//!   feed and the audit trail.
//! - [`formats`]: bytes <-> flat records (CSV/TSV, JSON, NDJSON, XML, text encodings).
//! - [`mapping`]: flat records <-> consents, as `mappings/*.toml` describe them.
//! - [`import`] and [`export`]: streaming one-off moves between files and the store; [`scrub`]: a
//!   file the daemon keeps rewritten without a purged number's records.
//! - [`connectors`]: move bytes to and from other consent systems (HTTP, files); [`sync`]: scheduled
//!   pulls and pushes through mappings, with state, dead letters and erasures.
//! - [`client`]: the command line's way to a running daemon (`--server`).
//! - [`http`]: the admin HTTP API (rights, consents, saved searches, imports/exports, audit, DPO, checks,
//!   metrics) and the Customer Consents page it serves at `/` (`src/web/`).
//! - [`config`]: the settings file, validated at once; [`cli`]: the command line; [`app`]: the daemon;
//!   [`upkeep`]: its compactions of the store (after purges, and when the files outgrow the data).

pub mod app;
pub mod cli;
pub mod client;
pub mod config;
pub mod connectors;
pub mod domain;
pub mod export;
pub mod formats;
pub mod http;
pub mod import;
pub mod mapping;
pub mod progress;
pub mod scrub;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod upkeep;
