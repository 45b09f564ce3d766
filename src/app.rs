//! The daemon: opens the store, serves the admin HTTP API until SIGTERM/SIGINT, then finishes the
//! requests in flight and flushes the store.

use crate::config::Config;
use crate::http::AppState;
use crate::store::Store;
use anyhow::Context;
use std::sync::Arc;

/// Runs the daemon until a stop signal.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let store = Arc::new(Store::open(&config.data_dir, &config.store_options())?);
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let config = Arc::new(config);
        let sync = Arc::new(crate::sync::Sync::new(store.clone(), config.clone()).map_err(anyhow::Error::msg)?);
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "consentd is listening.");
        // Tests and scripts read the bound address (port 0 picks one) from this line.
        println!("listening on {addr}");
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let scheduler = crate::sync::scheduler::Scheduler::start(sync.clone()).await?;
        let state = AppState::new(store.clone(), config, sync.clone());
        if state.tokens.is_empty() {
            tracing::warn!("No API token is enabled: every /v1 request will be refused. See [[tokens]] in the README.");
        }
        axum::serve(listener, crate::http::app(state))
            .with_graceful_shutdown(async move {
                stop_signal().await;
                // Sync runs (scheduled or started over HTTP) stop after the page, file or batch in hand.
                sync.stop();
            })
            .await?;
        // Sync runs finish the page, file or batch in hand, then stop.
        scheduler.stop().await;
        store.flush()?;
        tracing::info!("consentd stopped; the store is flushed.");
        Ok(())
    })
}

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
