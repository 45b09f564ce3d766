//! Scheduled sync with external consent systems: [`schedule`] (cron in a time zone), [`run`]
//! (`run_once`: one pull and/or push of one connector), [`scheduler`] (tokio-cron-scheduler jobs that
//! never overlap per connector). Connectors move bytes; mappings turn them into consents.

pub mod schedule;
