//! Starting the rules runtime with the server, and reloading its files on SIGHUP (the runtime
//! also polls the directory every `rules.reload_interval_ms`).

use std::sync::Arc;

use strom_log::Log;
use strom_rules::Rules;
use tokio::sync::watch;

use crate::{Config, ServerError};

pub(crate) fn start(
    config: &Config,
    log: &Arc<Log>,
    destinations: Vec<String>,
) -> Result<Option<Arc<Rules>>, ServerError> {
    if !config.rules.enabled {
        return Ok(None);
    }
    let rules_config = config.rules.rules_config(&config.data_dir, destinations);
    if let Some(parent) = rules_config.state_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let dir = rules_config.rules_dir.clone();
    let rules = Rules::start(log.clone(), rules_config, log.clock().clone())?;
    tracing::info!(dir = %dir.display(), "rules ready");
    Ok(Some(rules))
}

pub(crate) async fn reload_on_hangup(rules: Arc<Rules>, mut shutdown: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP; rules reload on file changes only");
                return;
            }
        };
        loop {
            let stopping = tokio::select! {
                _ = shutdown.wait_for(|stopping| *stopping) => true,
                _ = hangup.recv() => false,
            };
            if stopping {
                return;
            }
            match rules.reload().await {
                Ok(report) => tracing::info!(
                    added = report.added.len(),
                    changed = report.changed.len(),
                    removed = report.removed.len(),
                    errors = report.errors.len(),
                    trigger = "SIGHUP",
                    "rules reloaded"
                ),
                Err(error) => tracing::error!(%error, "rules reload failed; the rules in force stay"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = (rules, shutdown.wait_for(|stopping| *stopping).await);
}
