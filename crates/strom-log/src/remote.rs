//! A log kept elsewhere: the same `Log`, `Stream`, `Partition` and `GroupOffsets` over a
//! remote store (Apache Kafka, through `strom-kafka`'s backend). This crate knows no Kafka
//! client: the remote is a trait, so that everything above the log (the HTTP API, the
//! collector, rules, webhooks, the lake) runs unchanged on either.
//!
//! What differs from the embedded log, by design:
//! - An append is acknowledged when the remote acknowledged every record (Kafka: acks=all
//!   with an idempotent producer); the remote decides what that means for durability.
//! - Offsets are the remote's. Records of one append are in order, but another writer's
//!   records may fall between them; `Appended::scattered` then holds each record's offset.
//! - The log end and start are the remote's watermarks, refreshed by a poller: often while
//!   somebody waits for new data (`wait_for`), seldom otherwise, and at once after this
//!   process's own appends. `wait_for` therefore sees other writers' records within
//!   `REMOTE_WAIT_POLL_MS`.
//! - Retention, segments, fsyncs and checksums are the remote's business.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::batch::{EncodedBatch, RecordOut};
use crate::error::{LogError, Result};
use crate::partition::{Appended, PendingAppend, ReadRecords};
use crate::share::{Membership, ShareHandle};
use crate::stream::StreamConfig;

/// A remote operation's future.
pub type RemoteFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// What a remote store does for the log. Methods without a future block (network calls):
/// the log calls them on the blocking pool, or where its callers already are on it (reads).
pub trait Remote: Send + Sync + 'static {
    /// Where the log is, for logs and errors (`kafka://host:9092, topics strom.*`).
    fn describe(&self) -> String;
    /// The streams there now, with their partition counts. Blocking.
    fn streams(&self) -> Result<Vec<(String, u32)>>;
    fn create_stream<'a>(&'a self, name: &'a str, config: &'a StreamConfig) -> RemoteFuture<'a, ()>;
    fn delete_stream<'a>(&'a self, name: &'a str) -> RemoteFuture<'a, ()>;
    /// Queues the batch's records for the partition now, in order after earlier calls; the
    /// future resolves once every record is acknowledged. A full queue is refused at once.
    fn append(&self, stream: &str, partition: u32, batch: EncodedBatch) -> Result<RemoteFuture<'static, Appended>>;
    /// Records from `from` on, below `end` (the log end known now): at most `max_records`
    /// and about `max_bytes`, at least one record when `from < end`. Blocking.
    fn read(
        &self,
        stream: &str,
        partition: u32,
        from: u64,
        end: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<RecordOut>>;
    /// (log start offset, log end offset). Blocking.
    fn watermarks(&self, stream: &str, partition: u32) -> Result<(u64, u64)>;
    /// The first offset whose record timestamp is at or after `timestamp_ms`. Blocking.
    fn offset_for_timestamp(&self, stream: &str, partition: u32, timestamp_ms: i64) -> Result<Option<u64>>;
    /// Commits a group's offsets of one stream. Blocking.
    fn commit(&self, group: &str, stream: &str, offsets: &[(u32, u64)]) -> Result<()>;
    /// A group's committed offsets of one stream's partitions (those it has). Blocking.
    fn committed(&self, group: &str, stream: &str) -> Result<Vec<(u32, u64)>>;
    /// Joins the group that divides `stream`'s partitions among the processes running the
    /// same work (`Log::share`): the membership tells `handle` what this process owns, and
    /// revokes through it (waiting for the workers) before the partitions move elsewhere. The
    /// group must not be one whose offsets are committed (`commit`): its members own
    /// partitions, they do not consume them.
    fn join(&self, group: &str, stream: &str, handle: ShareHandle) -> Result<Box<dyn Membership>>;
    /// Waits (bounded) for queued appends to be acknowledged. Blocking.
    fn close(&self);
}

/// Runs a blocking call to the remote. On a worker of a multi-threaded tokio runtime the
/// runtime is told first (`block_in_place`), so that the worker's other tasks move on while
/// this one waits for the network: some of the log's blocking methods (`committed`, reads
/// that must check their range) are called from async code, as they are cheap on the
/// embedded log.
pub(crate) fn blocking<T>(call: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(call)
        }
        _ => call(),
    }
}

/// A partition of a remote log: its cached watermarks and the remote.
pub(crate) struct RemotePartition {
    pub remote: Arc<dyn Remote>,
    pub stream: String,
    pub id: u32,
    start: AtomicU64,
    end: watch::Sender<u64>,
    /// Callers waiting for data: the poller refreshes this partition often while any wait.
    pub waiters: AtomicUsize,
    /// Why the last refresh failed, if it did (shown where the embedded log shows poison).
    pub unreachable: Mutex<Option<String>>,
    metrics: RemoteMetrics,
}

/// The same names as the embedded log's partition metrics where they mean the same, so
/// dashboards work on either backend; `strom_log_remote_errors_total` for what only a
/// remote can do wrong.
struct RemoteMetrics {
    appended_records: metrics::Counter,
    appended_bytes: metrics::Counter,
    append_seconds: metrics::Histogram,
    append_errors: metrics::Counter,
    refresh_errors: metrics::Counter,
}

impl RemoteMetrics {
    fn new(stream: &str, partition: u32) -> RemoteMetrics {
        let labels = [("stream", stream.to_string()), ("partition", partition.to_string())];
        let error = |operation: &'static str| metrics::counter!("strom_log_remote_errors_total", "stream" => stream.to_string(), "partition" => partition.to_string(), "operation" => operation);
        RemoteMetrics {
            appended_records: metrics::counter!("strom_log_appended_records_total", &labels),
            appended_bytes: metrics::counter!("strom_log_appended_bytes_total", &labels),
            append_seconds: metrics::histogram!("strom_log_append_duration_seconds", &labels),
            append_errors: error("append"),
            refresh_errors: error("watermarks"),
        }
    }
}

impl RemotePartition {
    pub fn new(remote: Arc<dyn Remote>, stream: &str, id: u32, watermarks: (u64, u64)) -> RemotePartition {
        let (end, _) = watch::channel(watermarks.1);
        RemotePartition {
            remote,
            stream: stream.to_string(),
            id,
            start: AtomicU64::new(watermarks.0),
            end,
            waiters: AtomicUsize::new(0),
            unreachable: Mutex::new(None),
            metrics: RemoteMetrics::new(stream, id),
        }
    }

    pub fn log_start_offset(&self) -> u64 {
        self.start.load(Ordering::Acquire)
    }

    pub fn log_end_offset(&self) -> u64 {
        *self.end.borrow()
    }

    /// Asks the remote for the watermarks now. Blocking.
    pub fn refresh(&self) -> Result<(u64, u64)> {
        match blocking(|| self.remote.watermarks(&self.stream, self.id)) {
            Ok((start, end)) => {
                self.start.store(start, Ordering::Release);
                self.end.send_if_modified(|known| {
                    // The end never moves back: a lagging answer must not hide records that
                    // this process's own appends already showed.
                    let moved = end > *known;
                    *known = (*known).max(end);
                    moved
                });
                *self.unreachable.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok((start, self.log_end_offset()))
            }
            Err(error) => {
                self.metrics.refresh_errors.increment(1);
                *self.unreachable.lock().unwrap_or_else(|e| e.into_inner()) = Some(error.to_string());
                Err(error)
            }
        }
    }

    fn saw_end(&self, end: u64) {
        self.end.send_if_modified(|known| {
            let moved = end > *known;
            *known = (*known).max(end);
            moved
        });
    }

    pub fn submit(self: &Arc<Self>, batch: EncodedBatch) -> Result<PendingAppend> {
        let (records, bytes) = (u64::from(batch.record_count()), batch.size_bytes() as u64);
        let started = Instant::now();
        let appended = self.remote.append(&self.stream, self.id, batch).inspect_err(|_| {
            self.metrics.append_errors.increment(1);
        })?;
        let (reply, answer) = oneshot::channel();
        let partition = self.clone();
        tokio::spawn(async move {
            let result = appended.await;
            match &result {
                Ok(appended) => {
                    partition.saw_end(appended.last_offset + 1);
                    partition.metrics.appended_records.increment(records);
                    partition.metrics.appended_bytes.increment(bytes);
                    partition.metrics.append_seconds.record(started.elapsed().as_secs_f64());
                }
                Err(_) => partition.metrics.append_errors.increment(1),
            }
            let _ = reply.send(result);
        });
        Ok(PendingAppend::new(
            answer,
            LogError::Remote(format!("the append to {}/{} was abandoned", self.stream, self.id)),
        ))
    }

    pub async fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        if self.log_end_offset() > offset {
            return true;
        }
        let mut receiver = self.end.subscribe();
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let result = tokio::time::timeout(timeout, receiver.wait_for(|&end| end > offset)).await;
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        matches!(result, Ok(Ok(_)))
    }

    /// Reads like the embedded log: out of range is an error, the end answers no records.
    pub fn read_records(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadRecords> {
        let (mut start, mut end) = (self.log_start_offset(), self.log_end_offset());
        if from < start || from > end {
            // The cache may be behind: ask before refusing.
            (start, end) = self.refresh()?;
            if from < start || from > end {
                return Err(LogError::OffsetOutOfRange { offset: from, log_start_offset: start, log_end_offset: end });
            }
        }
        if from == end {
            return Ok(ReadRecords {
                records: Vec::new(),
                next_offset: from,
                log_start_offset: start,
                log_end_offset: end,
            });
        }
        let records =
            blocking(|| self.remote.read(&self.stream, self.id, from, end, max_records.max(1), max_bytes.max(1)))?;
        let next_offset = records.last().map_or(from, |r| r.offset + 1);
        if next_offset > end {
            self.saw_end(next_offset);
        }
        Ok(ReadRecords { records, next_offset, log_start_offset: start, log_end_offset: self.log_end_offset() })
    }
}

/// Refreshes remote partitions' watermarks: the ones somebody waits on every
/// `REMOTE_WAIT_POLL_MS`, every partition every `REMOTE_IDLE_POLL_MS`. Ends with the log.
pub(crate) async fn poll_watermarks(log: std::sync::Weak<crate::log::Log>) {
    use crate::limits::{REMOTE_IDLE_POLL_MS, REMOTE_STREAMS_POLL_MS, REMOTE_WAIT_POLL_MS};
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(REMOTE_WAIT_POLL_MS)).await;
        ticks += 1;
        let Some(log) = log.upgrade() else { return };
        if log.is_closed() {
            return;
        }
        let all = ticks.is_multiple_of(REMOTE_IDLE_POLL_MS / REMOTE_WAIT_POLL_MS);
        let streams = ticks.is_multiple_of(REMOTE_STREAMS_POLL_MS / REMOTE_WAIT_POLL_MS);
        let due: Vec<Arc<RemotePartition>> = log
            .streams()
            .iter()
            .flat_map(|s| s.partitions().iter().filter_map(|p| p.remote()))
            .filter(|p| all || p.waiters.load(Ordering::Acquire) > 0)
            .cloned()
            .collect();
        if due.is_empty() && !streams {
            continue;
        }
        let result = tokio::task::spawn_blocking(move || {
            for partition in due {
                if let Err(error) = partition.refresh() {
                    tracing::debug!(stream = %partition.stream, partition = partition.id, %error, "watermarks not refreshed");
                }
            }
            if streams {
                log.refresh_remote_streams();
            }
        })
        .await;
        if result.is_err() {
            return;
        }
    }
}
