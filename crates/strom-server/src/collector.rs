//! Starting and stopping the tracking collector: sources, the dedup index (rebuilt before
//! the server answers), the streams it writes to, and the dedup upkeep task.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use strom_catalog::Catalog;
use strom_ingest::recover::{end_offsets, open_and_rebuild};
use strom_ingest::source::Sources;
use strom_ingest::{Ingest, IngestConfig};
use strom_log::Log;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Config, ServerError};

pub(crate) struct Collector {
    pub ingest: Arc<Ingest>,
    pub sources: Arc<Sources>,
    pub admin_tokens: HashSet<[u8; 32]>,
    upkeep: JoinHandle<()>,
}

pub(crate) async fn start(
    config: &Config,
    log: &Arc<Log>,
    catalog: Arc<Catalog>,
    stopping: watch::Receiver<bool>,
) -> Result<Collector, ServerError> {
    let sources_file = config.data_dir.join("sources.json");
    let sources = Arc::new(
        Sources::open(&config.sources, &sources_file).map_err(|error| ServerError::Collector(error.to_string()))?,
    );
    let collector = &config.collector;
    let stream_defaults = config.streams.stream_config();
    // The collector's streams (default, dead-letter, those catalog types name) are created
    // when the first event needs them, so a server without tracking has none of them.
    let dedup_dir = config.data_dir.join("collector").join("dedup");
    let (window_ms, ids_max) = (collector.dedup_window_ms, collector.dedup_ids_max);
    let scan_log = log.clone();
    let (dedup, rebuilt) =
        tokio::task::spawn_blocking(move || open_and_rebuild(&dedup_dir, &scan_log, window_ms, ids_max))
            .await
            .map_err(std::io::Error::other)?
            .map_err(|error| ServerError::Collector(error.to_string()))?;
    tracing::info!(
        records_scanned = rebuilt.records_scanned,
        ids = rebuilt.ids_remembered,
        elapsed_ms = rebuilt.elapsed_ms,
        unreadable_partitions = rebuilt.unreadable.len(),
        "dedup index ready"
    );
    let trusted_proxies = collector.trusted_proxy_networks().map_err(ServerError::Config)?;
    let ingest = Arc::new(Ingest::new(
        log.clone(),
        catalog,
        dedup,
        IngestConfig {
            default_stream: collector.default_stream.clone(),
            dead_letter_stream: collector.dead_letter_stream.clone(),
            event_bytes_max: collector.event_bytes_max,
            anonymize_ip: collector.anonymize_ip,
            trusted_proxies,
            state_dir: config.data_dir.join("collector"),
            stream_defaults,
        },
    ));
    let admin_tokens: HashSet<[u8; 32]> = config
        .auth
        .admin_tokens_sha256
        .iter()
        .filter_map(|hex| {
            let mut digest = [0u8; 32];
            for (i, byte) in digest.iter_mut().enumerate() {
                *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(digest)
        })
        .collect();
    if admin_tokens.is_empty() {
        tracing::warn!("no admin tokens configured ([auth] admin_tokens_sha256): the admin and read APIs are open");
    }
    let interval = Duration::from_millis(collector.dedup_upkeep_interval_ms);
    let upkeep = tokio::spawn(upkeep(ingest.clone(), log.clone(), interval, stopping));
    Ok(Collector { ingest, sources, admin_tokens, upkeep })
}

/// Runs until shutdown starts; an upkeep in progress finishes first, so that `close` is the
/// last to write the index files.
async fn upkeep(ingest: Arc<Ingest>, log: Arc<Log>, every: Duration, mut stopping: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stopping.wait_for(|stopping| *stopping) => return,
        }
        let ingest = ingest.clone();
        let log = log.clone();
        let done = tokio::task::spawn_blocking(move || {
            // The ends are read before the upkeep takes its sequence number (see Dedup::maintain).
            let ends = end_offsets(&log);
            let result = ingest.dedup().maintain(log.clock().now_ms(), ends);
            let (ids, bytes) = ingest.dedup().size();
            metrics::gauge!("strom_ingest_dedup_ids").set(ids as f64);
            metrics::gauge!("strom_ingest_dedup_memory_bytes").set(bytes as f64);
            result
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                metrics::counter!("strom_ingest_dedup_upkeep_errors_total").increment(1);
                tracing::error!(%error, "dedup upkeep failed; the index stays in memory and is rebuilt from the log after a restart");
            }
            Err(error) => tracing::error!(%error, "dedup upkeep task failed"),
        }
    }
}

impl Collector {
    /// After the last request: files the whole dedup index so that a restart reads nothing back.
    pub async fn close(self, log: &Arc<Log>) {
        let _ = self.upkeep.await;
        let ingest = self.ingest.clone();
        let log = log.clone();
        let closed = tokio::task::spawn_blocking(move || ingest.dedup().close(end_offsets(&log))).await;
        match closed {
            Ok(Ok(())) => tracing::info!("dedup index written"),
            Ok(Err(error)) => tracing::warn!(%error, "dedup index not written; it is rebuilt from the log at start"),
            Err(error) => tracing::warn!(%error, "dedup close task failed"),
        }
    }
}
