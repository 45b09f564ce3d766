//! Logging setup: structured `tracing` events to stderr, filtered by `CONSENTD_LOG` (default `info`).
//! Phone numbers are only ever logged at `debug` or below.

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("CONSENTD_LOG").unwrap_or_else(|_| EnvFilter::new("info,tokio_cron_scheduler=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
