//! Strom's data lake: streams landed as Parquet files, exactly once, in a Hive layout
//! (`<stream>/date=YYYY-MM-DD/hour=HH/<partition>-<first>-<last>.parquet`) on a local
//! directory or S3-compatible storage; compaction of closed hours; SQL over the files.
//!
//! Architecture invariants:
//! - A file is visible only when complete, and an offset is committed only after every file
//!   holding its flush is visible. After a crash, the interrupted flush is done again for
//!   the same range, which gives the same names: each offset is in exactly one file.
//! - The sink reads time only through the log's `Clock`.
//! - Nothing of an event is lost: typed columns are a view, `event_json` (or `event_bytes`)
//!   holds the record's value as stored.

mod columns;
mod compact;
pub mod config;
mod error;
mod event;
mod flush;
pub mod layout;
pub mod limits;
mod query;
mod sink;
mod store;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use strom_catalog::Catalog;
use strom_log::{Clock, Log};

pub use columns::{ColumnKind, DEAD_LETTER_COLUMNS, LOG_COLUMNS, TAIL_COLUMNS};
pub use compact::CompactReport;
pub use config::{Compression, GROUP, LakeConfig, LakeUrl, S3Settings, Secret, TimeBasis};
pub use error::{LakeError, Result};
pub use query::{QueryAnswer, QueryEngine};
pub use sink::{PartitionSink, Sink};
pub use store::{Listed, Store};

/// What the sink, compaction and queries share.
pub(crate) struct Shared {
    pub config: LakeConfig,
    pub store: Store,
    /// `<data_dir>/lake`: flush markers (and an S3 lake's spool).
    pub state_dir: PathBuf,
    pub log: Arc<Log>,
    pub catalog: Option<Arc<Catalog>>,
    pub clock: Arc<dyn Clock>,
    /// The collector's dead-letter stream: its table gets the reason columns.
    pub dead_letter_stream: Option<String>,
    pub queries: QueryEngine,
    /// The partitions this process's sink lands now: (stream, partition).
    pub landing: std::sync::Mutex<std::collections::BTreeSet<(String, u32)>>,
}

/// What `GET /v1/lake/status` shows: where the lake is, and what this process lands.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct LakeStatus {
    pub url: String,
    /// Whether this process runs the sink (`lake.enabled`).
    pub sink: bool,
    /// The partitions this process lands now (on the Kafka backend the processes landing a
    /// stream divide its partitions).
    pub landing: Vec<PartitionLanding>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PartitionLanding {
    pub stream: String,
    pub partition: u32,
    /// Everything before it is in the lake.
    pub committed_offset: Option<u64>,
    pub log_end_offset: u64,
}

/// The lake of one Strom server.
#[derive(Clone)]
pub struct Lake {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("store", &self.shared.store).finish_non_exhaustive()
    }
}

impl Lake {
    /// Opens the lake's storage. `data_dir` is the server's (the lake keeps its state in
    /// `<data_dir>/lake`); an empty `config.url` puts the lake there too.
    pub fn open(
        config: LakeConfig,
        data_dir: &Path,
        log: Arc<Log>,
        catalog: Option<Arc<Catalog>>,
        dead_letter_stream: Option<String>,
    ) -> Result<Lake> {
        config.validate().map_err(LakeError::Config)?;
        let state_dir = data_dir.join("lake-state");
        let url = match config.url.as_str() {
            "" => LakeUrl::Local(data_dir.join("lake")),
            text => LakeUrl::parse(text).map_err(|error| LakeError::Config(format!("lake.url: {error}")))?,
        };
        let store = Store::open(&url, &config.s3, &state_dir)?;
        let clock = log.clock().clone();
        let queries = QueryEngine::new(store.clone())?;
        let shared = Shared {
            config,
            store,
            state_dir,
            log,
            catalog,
            clock,
            dead_letter_stream,
            queries,
            landing: Default::default(),
        };
        Ok(Lake { shared: Arc::new(shared) })
    }

    pub fn config(&self) -> &LakeConfig {
        &self.shared.config
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The streams the sink lands: the configured ones and the dead-letter stream when asked.
    pub fn landed_streams(&self) -> Vec<String> {
        let mut streams = self.shared.config.streams.clone();
        if self.shared.config.dead_letters
            && let Some(dead_letters) = &self.shared.dead_letter_stream
            && !streams.contains(dead_letters)
        {
            streams.push(dead_letters.clone());
        }
        streams
    }

    /// Where the lake is and the partitions this process lands now, with their progress.
    pub fn status(&self) -> LakeStatus {
        let landing = self.shared.landing.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let groups = self.shared.log.groups();
        LakeStatus {
            url: self.shared.store.url(),
            sink: self.shared.config.enabled,
            landing: landing
                .into_iter()
                .map(|(stream, partition)| PartitionLanding {
                    committed_offset: groups.committed(GROUP, &stream, partition),
                    log_end_offset: self
                        .shared
                        .log
                        .stream(&stream)
                        .ok()
                        .and_then(|s| s.partition(partition).ok().map(|p| p.log_end_offset()))
                        .unwrap_or(0),
                    stream,
                    partition,
                })
                .collect(),
        }
    }

    /// Runs one read-only SQL statement over the lake's tables (one per stream).
    pub async fn query(&self, sql: &str, max_rows: usize) -> Result<QueryAnswer> {
        self.shared.queries.query(sql, max_rows).await
    }

    /// Merges the small files of closed hours (`stream`, else every landed stream).
    pub async fn compact(&self, stream: Option<&str>) -> Result<CompactReport> {
        let streams = match stream {
            Some(stream) => vec![stream.to_string()],
            None => self.landed_streams(),
        };
        compact::compact(&self.shared, &streams).await
    }

    /// One partition's sink, recovered, to drive by hand (benchmarks, tests).
    pub async fn partition_sink(&self, stream: &str, partition: u32) -> Result<PartitionSink> {
        let stream = self.shared.log.stream(stream)?;
        PartitionSink::open(self.shared.clone(), stream, partition).await
    }

    /// Starts landing (`config.enabled` is the caller's to check). The spool is emptied
    /// first: what it holds are files of flushes a crash interrupted, done again anyway.
    pub async fn start_sink(&self) -> Result<Sink> {
        let spool = self.shared.store.spool_dir();
        store::blocking(move || {
            match std::fs::remove_dir_all(&spool) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(LakeError::Io { path: spool.clone(), source: error }),
            }
            // Files right in a local lake's `_strom_spool` were left by a release that spooled
            // there for every process; this one spools in a directory of its own below.
            if let Some(shared) = spool.parent().filter(|dir| dir.ends_with(config::SPOOL_DIR)) {
                for entry in std::fs::read_dir(shared).into_iter().flatten().flatten() {
                    if entry.file_type().is_ok_and(|kind| kind.is_file()) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
            std::fs::create_dir_all(&spool).map_err(|source| LakeError::Io { path: spool, source })
        })
        .await?;
        Ok(Sink::start(self.shared.clone(), self.landed_streams()))
    }
}
