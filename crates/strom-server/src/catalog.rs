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

/// Catalog enforcement for the Kafka listener: a topic whose stream has a raw event type
/// (a catalog file with `"kind": "raw"`, or a Schema Registry subject `<topic>-value`) takes
/// only record values its schema accepts.
pub(crate) struct KafkaValidator(pub Arc<Catalog>);

struct RawSchema(Arc<strom_catalog::EventType>);

impl strom_kafka::RecordValidator for KafkaValidator {
    fn schema(&self, stream: &str) -> Option<Arc<dyn strom_kafka::ValueSchema>> {
        let snapshot = self.0.snapshot();
        let event_type = snapshot.raw_for_stream(stream)?;
        Some(Arc::new(RawSchema(event_type.clone())))
    }
}

/// The Confluent wire format's header: magic byte 0 and a 4-byte schema id, which Schema
/// Registry serializers put before the JSON.
const CONFLUENT_HEADER_BYTES: usize = 5;

impl strom_kafka::ValueSchema for RawSchema {
    fn check(&self, value: Option<&[u8]>) -> Result<(), String> {
        let Some(mut bytes) = value else { return Err("the record has no value".into()) };
        if bytes.len() >= CONFLUENT_HEADER_BYTES && bytes[0] == 0 {
            bytes = &bytes[CONFLUENT_HEADER_BYTES..];
        }
        let json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|error| format!("the value is not JSON: {error}"))?;
        self.0.validate(&json).map_err(|violations| {
            violations
                .iter()
                .map(|v| {
                    format!("{} {}: {}", if v.pointer.is_empty() { "/" } else { &v.pointer }, v.keyword, v.message)
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    fn describe(&self) -> String {
        format!("{} version {} (schema id {})", self.0.name, self.0.version, self.0.schema_id)
    }
}
