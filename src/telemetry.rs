//! Logging setup: structured `tracing` events to stderr, filtered by `CONSENTD_LOG` (default `info`),
//! as text for terminals or, with `CONSENTD_LOG_FORMAT=json`, one JSON object per line (with the
//! request's id, method and route on lines logged while answering one). Phone numbers are only ever
//! logged at `debug` or below.

use tracing_subscriber::EnvFilter;

/// Sets up logging; refuses a `CONSENTD_LOG_FORMAT` it does not know.
pub fn init() -> Result<(), String> {
    let filter = EnvFilter::try_from_env("CONSENTD_LOG").unwrap_or_else(|_| EnvFilter::new("info,tokio_cron_scheduler=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match std::env::var("CONSENTD_LOG_FORMAT").as_deref() {
        Err(_) | Ok("" | "text") => {
            let _ = builder.with_target(false).try_init();
        }
        Ok("json") => {
            let _ = builder.json().with_current_span(true).with_span_list(false).try_init();
        }
        Ok(other) => return Err(format!("CONSENTD_LOG_FORMAT: {other:?} is not a log format: use text or json")),
    }
    Ok(())
}
