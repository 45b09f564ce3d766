//! The daemon: opens the store, serves the admin HTTP API ([`crate::http::server`]) and keeps the
//! store compacted until SIGTERM/SIGINT, then finishes the requests in flight (within
//! `http.shutdown_grace_secs`), sync runs' batches in hand, background
//! imports and a compaction going on, and flushes the store.

use crate::config::Config;
use crate::http::AppState;
use anyhow::Context;
use std::sync::Arc;

/// Runs the daemon until a stop signal.
pub fn serve(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        std::fs::create_dir_all(&config.data_dir).with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let store = Arc::new(config.open_store()?);
        // Each connection takes a file descriptor: take what the system allows, and keep some for
        // the store, files and connections to remote systems.
        let mut config = config;
        match crate::http::server::raise_fd_limit() {
            Ok(fds) => {
                let room = usize::try_from(fds.saturating_sub(256)).unwrap_or(usize::MAX).max(16);
                if config.http.max_connections > room {
                    tracing::warn!(
                        max_connections = config.http.max_connections,
                        open_files = fds,
                        "http.max_connections is more than the open-file limit allows; using {room}."
                    );
                    config.http.max_connections = room;
                }
            }
            Err(e) => tracing::warn!(error = %e, "Cannot read the open-file limit."),
        }
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let config = Arc::new(config);
        let sync = Arc::new(crate::sync::Sync::new(store.clone(), config.clone()).map_err(anyhow::Error::msg)?);
        // Listen for stop signals before announcing the address: a SIGTERM right after start-up must
        // stop the daemon cleanly, not kill it.
        let stop = stop_signal()?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, data_dir = %config.data_dir.display(), "consentd is listening.");
        // Tests and scripts read the bound address (port 0 picks one) from this line.
        println!("listening on {addr}");
        for w in config.warnings() {
            tracing::warn!("{w}");
        }
        let scheduler = crate::sync::scheduler::Scheduler::start(sync.clone()).await?;
        // Compactions after purges and when the files outgrow the data; stopped with the server.
        let upkeep = crate::upkeep::Upkeep::new(store.clone(), config.store.clone());
        let (upkeep_stop, upkeep_stopped) = tokio::sync::oneshot::channel::<()>();
        let upkeep_task = tokio::spawn(upkeep.clone().run(async move {
            let _ = upkeep_stopped.await;
        }));
        let state = AppState::new(store.clone(), config, sync.clone(), upkeep);
        if state.tokens.is_empty() {
            tracing::warn!("No API token is enabled: every /v1 request will be refused. See [[tokens]] in the README.");
        }
        let imports = state.imports.clone();
        let limits = crate::http::server::Limits::from_config(&state.config.http);
        crate::http::server::serve(listener, state, limits, async move {
            stop.await;
            // Sync runs (scheduled or started over HTTP) stop after the page, file or batch in hand.
            sync.stop();
        })
        .await;
        // Sync runs finish the page, file or batch in hand, then stop.
        scheduler.stop().await;
        // A compaction going on runs to its end (a killed one leaves the old generation in use).
        let _ = upkeep_stop.send(());
        let _ = upkeep_task.await;
        // Background imports run to their end (a killed one is finished by importing the file again).
        if imports.running() > 0 {
            tracing::info!(imports = imports.running(), "Waiting for background imports to finish.");
            while imports.running() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        store.flush()?;
        tracing::info!("consentd stopped; the store is flushed.");
        Ok(())
    })
}

/// A future that ends at SIGTERM or SIGINT; the handlers are in place when this returns.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    })
}
