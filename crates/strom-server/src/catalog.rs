//! Opening the event catalog and keeping it in step with its directory: a reload on SIGHUP
//! and whenever the directory's listing (names, sizes, modification times) changes.

use std::sync::Arc;
use std::time::Duration;

use strom_catalog::{Catalog, ReloadReport};
use tokio::sync::watch;

use crate::{Config, ServerError};

pub(crate) async fn open(config: &Config) -> Result<Arc<Catalog>, ServerError> {
    let catalog_config = config.catalog.catalog_config(&config.data_dir);
    let dir = catalog_config.dir.clone();
    let catalog =
        tokio::task::spawn_blocking(move || Catalog::open(catalog_config)).await.map_err(std::io::Error::other)??;
    let types = catalog.snapshot().len();
    tracing::info!(dir = %dir.display(), types, "catalog ready");
    Ok(catalog)
}

/// Runs until shutdown. Reloads are blocking file and store work, so they run off the async
/// workers, one at a time.
pub(crate) async fn watch(catalog: Arc<Catalog>, interval_ms: u64, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; the catalog reloads on file changes only");
            None
        }
    };
    let poll = Duration::from_millis(if interval_ms == 0 { 3_600_000 } else { interval_ms });
    loop {
        let hangup_received = async {
            #[cfg(unix)]
            if let Some(signal) = hangup.as_mut() {
                signal.recv().await;
                return;
            }
            std::future::pending::<()>().await
        };
        let forced = tokio::select! {
            _ = shutdown.wait_for(|stopping| *stopping) => return,
            _ = hangup_received => true,
            _ = tokio::time::sleep(poll) => false,
        };
        if !forced && interval_ms == 0 {
            continue;
        }
        let worker = catalog.clone();
        let result =
            tokio::task::spawn_blocking(
                move || {
                    if forced || worker.dir_changed() { Some(worker.reload()) } else { None }
                },
            )
            .await;
        match result {
            Ok(Some(Ok(report))) => log_report(&report, forced),
            Ok(Some(Err(error))) => tracing::error!(%error, "catalog reload failed; the types in force stay"),
            Ok(None) => {}
            Err(error) => tracing::error!(%error, "catalog reload task failed"),
        }
    }
}

fn log_report(report: &ReloadReport, forced: bool) {
    let trigger = if forced { "SIGHUP" } else { "file change" };
    tracing::info!(
        trigger,
        added = report.added.len(),
        updated = report.updated.len(),
        unchanged = report.unchanged.len(),
        refused = report.refused.len(),
        "catalog reloaded"
    );
    metrics::counter!("strom_catalog_reloads_total").increment(1);
    metrics::counter!("strom_catalog_files_refused_total").increment(report.refused.len() as u64);
}
