//! Opens the lake (`[lake]`) and starts its sink.

use std::sync::Arc;

use strom_log::Log;

use crate::{Config, ServerError};

/// The lake when `lake.enabled` or `lake.url` is set (queries then work), and its running
/// sink when `lake.enabled`.
pub(crate) async fn start(
    config: &Config,
    log: &Arc<Log>,
    catalog: &Arc<strom_catalog::Catalog>,
) -> Result<(Option<strom_lake::Lake>, Option<strom_lake::Sink>), ServerError> {
    let settings = &config.lake;
    if !settings.enabled && settings.url.is_empty() {
        return Ok((None, None));
    }
    let (settings, data_dir, log, catalog) = (settings.clone(), config.data_dir.clone(), log.clone(), catalog.clone());
    let dead_letters = Some(config.collector.dead_letter_stream.clone());
    let lake = tokio::task::spawn_blocking(move || {
        strom_lake::Lake::open(settings, &data_dir, log, Some(catalog), dead_letters)
    })
    .await
    .map_err(std::io::Error::other)??;
    tracing::info!(url = %lake.store().url(), enabled = lake.config().enabled, "lake ready");
    let sink = match lake.config().enabled {
        true => {
            tracing::info!(streams = ?lake.landed_streams(), group = strom_lake::GROUP, "lake sink landing");
            Some(lake.start_sink().await?)
        }
        false => None,
    };
    Ok((Some(lake), sink))
}
