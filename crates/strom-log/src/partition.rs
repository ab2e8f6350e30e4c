//! A partition: an ordered sequence of segments, one writer task that owns appends (group
//! commit), lock-free reads from any number of readers, recovery on open and retention.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use metrics::{Counter, Gauge, Histogram};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use crate::batch::{BatchHeader, EncodedBatch, RecordOut, decode_records, set_base_offset};
use crate::clock::Clock;
use crate::error::{IoContext, LogError, Result};
use crate::index::write_synced;
use crate::limits::{APPEND_QUEUE_MAX, GROUP_BYTES_MAX, QUEUE_BYTES_MAX, READ_BYTES_MAX};
use crate::remote::RemotePartition;
use crate::segment::{Segment, SegmentRead, parse_log_file_name};
use crate::stream::StreamConfig;

/// The writer's intervals (from `LogConfig`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterTiming {
    pub flush_interval: Duration,
    pub checkpoint_interval: Duration,
}

/// What an append waits for before it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// Answered once written to the page cache: survives the process, not the machine.
    /// Flushed within the log's `flush_interval`.
    Buffered,
    /// Answered once the fdatasync covering the batch has returned.
    #[default]
    Sync,
}

/// Offsets an append was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    pub last_offset: u64,
    /// Each record's offset, where they are not `base_offset + i`: on a Kafka cluster another
    /// producer's records can fall between those of one append. `None` means consecutive.
    pub scattered: Option<std::sync::Arc<[u64]>>,
}

impl Appended {
    /// Consecutive offsets from `base_offset` to `last_offset`.
    pub fn consecutive(base_offset: u64, last_offset: u64) -> Appended {
        Appended { base_offset, last_offset, scattered: None }
    }

    /// The offset of the append's record `index` (in the order they were given).
    pub fn offset(&self, index: usize) -> u64 {
        match &self.scattered {
            Some(offsets) => offsets.get(index).copied().unwrap_or(self.last_offset),
            None => self.base_offset + index as u64,
        }
    }
}

/// An append queued by `Partition::submit`; resolves once it has the asked durability.
#[must_use = "the append's outcome is only known by awaiting it"]
pub struct PendingAppend {
    answer: oneshot::Receiver<Result<Appended>>,
    /// The answer when the writer goes away without replying.
    stopped: LogError,
}

impl PendingAppend {
    pub(crate) fn new(answer: oneshot::Receiver<Result<Appended>>, stopped: LogError) -> PendingAppend {
        PendingAppend { answer, stopped }
    }
}

impl std::future::Future for PendingAppend {
    type Output = Result<Appended>;

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.answer).poll(context).map(|answer| match answer {
            Ok(result) => result,
            Err(_) => Err(std::mem::replace(&mut self.stopped, LogError::Closed)),
        })
    }
}

/// Whole batches read from a partition, as stored (the Kafka listener serves them as they are).
#[derive(Debug, Default)]
pub struct ReadBatches {
    pub batches: Vec<Bytes>,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// Records read from a partition, trimmed to the asked range.
#[derive(Debug, Default)]
pub struct ReadRecords {
    pub records: Vec<RecordOut>,
    /// The offset to read from next.
    pub next_offset: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

/// A snapshot of a partition's state.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionStatus {
    pub partition: u32,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub size_bytes: u64,
    pub segments: usize,
    pub poisoned: Option<String>,
}

/// The position up to which the partition is known to be complete and synced. Written when a
/// segment is rolled and at clean shutdown; recovery scans only what comes after it.
#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Checkpoint {
    segment: u64,
    position: u64,
    next_offset: u64,
    /// Where the segment's last batch starts; a clean open checks that batch.
    last_batch_position: Option<u64>,
    /// Written by a clean close: the segment ends at `position` and its index files are
    /// current, so the next open need not scan. Periodic checkpoints only say that
    /// everything up to `position` was synced.
    #[serde(default)]
    clean: bool,
}

const CHECKPOINT_FILE: &str = "checkpoint.json";

enum Command {
    Append { batch: EncodedBatch, durability: Durability, enqueued: Instant, reply: oneshot::Sender<Result<Appended>> },
    Close { reply: oneshot::Sender<()> },
}

struct PartitionMetrics {
    appended_records: Counter,
    appended_bytes: Counter,
    append_seconds: Histogram,
    fsync_seconds: Histogram,
    records_per_fsync: Histogram,
    fsyncs: Counter,
    disk_bytes: Gauge,
    corrupt_reads: Counter,
    segments_deleted: Counter,
    segments_rolled: Counter,
}

impl PartitionMetrics {
    fn new(stream: &str, partition: u32) -> PartitionMetrics {
        let labels = [("stream", stream.to_string()), ("partition", partition.to_string())];
        PartitionMetrics {
            appended_records: metrics::counter!("strom_log_appended_records_total", &labels),
            appended_bytes: metrics::counter!("strom_log_appended_bytes_total", &labels),
            append_seconds: metrics::histogram!("strom_log_append_duration_seconds", &labels),
            fsync_seconds: metrics::histogram!("strom_log_fsync_duration_seconds", &labels),
            records_per_fsync: metrics::histogram!("strom_log_records_per_fsync", &labels),
            fsyncs: metrics::counter!("strom_log_fsyncs_total", &labels),
            disk_bytes: metrics::gauge!("strom_log_disk_bytes", &labels),
            corrupt_reads: metrics::counter!("strom_log_corrupt_reads_total", &labels),
            segments_deleted: metrics::counter!("strom_log_segments_deleted_total", &labels),
            segments_rolled: metrics::counter!("strom_log_segments_rolled_total", &labels),
        }
    }
}

/// State shared by the writer and the readers.
struct Shared {
    stream: String,
    id: u32,
    dir: PathBuf,
    config: StreamConfig,
    clock: Arc<dyn Clock>,
    segments: Mutex<BTreeMap<u64, Arc<Segment>>>,
    log_start: AtomicU64,
    size_bytes: AtomicU64,
    /// The end of what readers may see: written, and synced when a sync was asked for.
    visible: watch::Sender<u64>,
    poisoned: Mutex<Option<String>>,
    metrics: PartitionMetrics,
    /// fsyncs done and records they covered, for benchmarks and `status` (also in metrics).
    fsyncs: AtomicU64,
    synced_records: AtomicU64,
    /// Bytes of batches waiting in the queue: bounded by `QUEUE_BYTES_MAX` besides the count.
    queued_bytes: AtomicUsize,
}

/// One partition of a stream: embedded (segments on local disk, this module) or remote (a
/// partition of a Kafka topic, `remote.rs`). Callers see one API.
pub struct Partition {
    inner: Inner,
}

enum Inner {
    Local(LocalPartition),
    Remote(Arc<RemotePartition>),
}

impl Partition {
    pub(crate) fn open(
        stream: &str,
        id: u32,
        dir: PathBuf,
        config: StreamConfig,
        clock: Arc<dyn Clock>,
        timing: WriterTiming,
    ) -> Result<Partition> {
        Ok(Partition { inner: Inner::Local(LocalPartition::open(stream, id, dir, config, clock, timing)?) })
    }

    pub(crate) fn from_remote(partition: RemotePartition) -> Partition {
        Partition { inner: Inner::Remote(Arc::new(partition)) }
    }

    pub(crate) fn remote(&self) -> Option<&Arc<RemotePartition>> {
        match &self.inner {
            Inner::Local(_) => None,
            Inner::Remote(remote) => Some(remote),
        }
    }

    pub fn id(&self) -> u32 {
        match &self.inner {
            Inner::Local(local) => local.id(),
            Inner::Remote(remote) => remote.id,
        }
    }

    /// Appends one batch; answers after the asked durability. A full queue answers
    /// `Overloaded` at once. (Remote: once the remote acknowledged every record.)
    pub async fn append(&self, batch: EncodedBatch, durability: Durability) -> Result<Appended> {
        self.submit(batch, durability)?.await
    }

    /// Queues one batch for appending now, without waiting: batches submitted one after the
    /// other are appended in that order (the Kafka listener relies on it for the requests of
    /// one connection). The returned future answers after the asked durability. A full queue
    /// answers `Overloaded` at once.
    pub fn submit(&self, batch: EncodedBatch, durability: Durability) -> Result<PendingAppend> {
        match &self.inner {
            Inner::Local(local) => local.submit(batch, durability),
            Inner::Remote(remote) => remote.submit(batch),
        }
    }

    /// Why the partition takes no appends (embedded: a failed write or fsync; remote: the
    /// last watermark refresh failed), if it does not.
    pub fn poisoned(&self) -> Option<String> {
        match &self.inner {
            Inner::Local(local) => local.poisoned(),
            Inner::Remote(remote) => remote.unreachable.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    pub fn log_start_offset(&self) -> u64 {
        match &self.inner {
            Inner::Local(local) => local.log_start_offset(),
            Inner::Remote(remote) => remote.log_start_offset(),
        }
    }

    /// The offset the next record will get, as far as readers can see.
    pub fn log_end_offset(&self) -> u64 {
        match &self.inner {
            Inner::Local(local) => local.log_end_offset(),
            Inner::Remote(remote) => remote.log_end_offset(),
        }
    }

    /// The log end including every record acknowledged to any writer so far. A remote
    /// partition's `log_end_offset` is a cached watermark that may lag other processes'
    /// appends by a poll interval: this asks the remote (and moves the cache on). Blocking
    /// (the network, for a remote log).
    pub fn refresh_log_end_offset(&self) -> Result<u64> {
        match &self.inner {
            Inner::Local(local) => Ok(local.log_end_offset()),
            Inner::Remote(remote) => remote.refresh().map(|(_, end)| end),
        }
    }

    pub fn status(&self) -> PartitionStatus {
        match &self.inner {
            Inner::Local(local) => local.status(),
            Inner::Remote(remote) => PartitionStatus {
                partition: remote.id,
                log_start_offset: remote.log_start_offset(),
                log_end_offset: remote.log_end_offset(),
                size_bytes: 0,
                segments: 0,
                poisoned: self.poisoned(),
            },
        }
    }

    /// (fsyncs, records they covered) since the partition was opened (remote: none known).
    pub fn sync_stats(&self) -> (u64, u64) {
        match &self.inner {
            Inner::Local(local) => local.sync_stats(),
            Inner::Remote(_) => (0, 0),
        }
    }

    /// Waits until the log end passes `offset` or `timeout` elapses; true when there is data.
    pub async fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        match &self.inner {
            Inner::Local(local) => local.wait_for(offset, timeout).await,
            Inner::Remote(remote) => remote.wait_for(offset, timeout).await,
        }
    }

    /// Reads whole batches from `from` on, as stored: at most about `max_bytes` (but at least
    /// one batch) and about `max_records` (batch granularity). Blocking file I/O (page cache
    /// reads). A remote log has no batches to serve as stored: `Unsupported`.
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadBatches> {
        match &self.inner {
            Inner::Local(local) => local.read(from, max_records, max_bytes),
            Inner::Remote(_) => Err(LogError::Unsupported("reading stored batches of a remote log")),
        }
    }

    /// Reads records from `from`, decoded and trimmed to `[from, from + max_records)`.
    /// Blocking (file I/O, or the network for a remote log).
    pub fn read_records(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadRecords> {
        match &self.inner {
            Inner::Local(local) => local.read_records(from, max_records, max_bytes),
            Inner::Remote(remote) => remote.read_records(from, max_records, max_bytes),
        }
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms`, or `None` when
    /// every record is older. Blocking.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        match &self.inner {
            Inner::Local(local) => local.offset_for_timestamp(timestamp_ms),
            Inner::Remote(remote) => {
                crate::remote::blocking(|| remote.remote.offset_for_timestamp(&remote.stream, remote.id, timestamp_ms))
            }
        }
    }

    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        match &self.inner {
            Inner::Local(local) => local.enforce_retention(now_ms),
            // The remote applies its own retention.
            Inner::Remote(_) => Ok(0),
        }
    }

    pub(crate) async fn close(&self) {
        if let Inner::Local(local) = &self.inner {
            local.close().await;
        }
    }
}

/// A partition of the embedded log.
pub(crate) struct LocalPartition {
    shared: Arc<Shared>,
    queue: mpsc::Sender<Command>,
}

impl LocalPartition {
    /// Opens (or creates) the partition in `dir`, recovering what a crash left, and starts its
    /// writer task on the current tokio runtime.
    pub(crate) fn open(
        stream: &str,
        id: u32,
        dir: PathBuf,
        config: StreamConfig,
        clock: Arc<dyn Clock>,
        timing: WriterTiming,
    ) -> Result<LocalPartition> {
        fs::create_dir_all(&dir).at(&dir)?;
        let metrics = PartitionMetrics::new(stream, id);
        let Recovered { segments, poisoned } = recover(stream, id, &dir, clock.now_ms(), &metrics)?;
        if poisoned.is_some() {
            metrics::gauge!("strom_log_partitions_poisoned").increment(1.0);
        }
        let active = segments.values().next_back().cloned().expect("recover returns at least one segment");
        let next_offset = active.next_offset();
        let log_start = *segments.keys().next().expect("at least one segment");
        let size_bytes: u64 = segments.values().map(|s| s.size()).sum();
        metrics.disk_bytes.set(size_bytes as f64);
        let (visible, _) = watch::channel(next_offset);
        let shared = Arc::new(Shared {
            stream: stream.to_string(),
            id,
            dir,
            config,
            clock,
            segments: Mutex::new(segments),
            log_start: AtomicU64::new(log_start),
            size_bytes: AtomicU64::new(size_bytes),
            visible,
            poisoned: Mutex::new(poisoned),
            metrics,
            fsyncs: AtomicU64::new(0),
            synced_records: AtomicU64::new(0),
            queued_bytes: AtomicUsize::new(0),
        });
        let (queue, receiver) = mpsc::channel(APPEND_QUEUE_MAX);
        let writer = Writer {
            shared: shared.clone(),
            active,
            next_offset,
            batches: Vec::new(),
            batches_bytes: 0,
            headers: Vec::new(),
            unsynced_since: None,
            flush_interval: timing.flush_interval,
            checkpointed: (Instant::now(), 0),
            checkpoint_interval: timing.checkpoint_interval,
            closed: false,
        };
        tokio::spawn(writer.run(receiver));
        Ok(LocalPartition { shared, queue })
    }

    pub fn id(&self) -> u32 {
        self.shared.id
    }

    /// Queues one batch for the writer (see `Partition::submit`).
    pub fn submit(&self, batch: EncodedBatch, durability: Durability) -> Result<PendingAppend> {
        if let Some(cause) = self.poisoned() {
            return Err(self.poisoned_error(cause));
        }
        let size = batch.size_bytes();
        let overloaded = || LogError::Overloaded {
            stream: self.shared.stream.clone(),
            partition: self.shared.id,
            queued: APPEND_QUEUE_MAX,
        };
        let queued = self.shared.queued_bytes.fetch_add(size, Ordering::AcqRel);
        // One batch always fits an empty queue; beyond that, the bytes are bounded too.
        if queued > 0 && queued + size > QUEUE_BYTES_MAX {
            self.shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            return Err(overloaded());
        }
        let (reply, answer) = oneshot::channel();
        let command = Command::Append { batch, durability, enqueued: Instant::now(), reply };
        self.queue.try_send(command).map_err(|error| {
            self.shared.queued_bytes.fetch_sub(size, Ordering::AcqRel);
            match error {
                mpsc::error::TrySendError::Full(_) => overloaded(),
                mpsc::error::TrySendError::Closed(_) => LogError::Closed,
            }
        })?;
        Ok(PendingAppend { answer, stopped: self.poisoned_error("the partition writer stopped".into()) })
    }

    fn poisoned_error(&self, cause: String) -> LogError {
        LogError::Poisoned { stream: self.shared.stream.clone(), partition: self.shared.id, cause }
    }

    pub fn poisoned(&self) -> Option<String> {
        self.shared.poisoned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn log_start_offset(&self) -> u64 {
        self.shared.log_start.load(Ordering::Acquire)
    }

    /// The offset the next record will get, as far as readers can see.
    pub fn log_end_offset(&self) -> u64 {
        *self.shared.visible.borrow()
    }

    pub fn status(&self) -> PartitionStatus {
        PartitionStatus {
            partition: self.shared.id,
            log_start_offset: self.log_start_offset(),
            log_end_offset: self.log_end_offset(),
            size_bytes: self.shared.size_bytes.load(Ordering::Relaxed),
            segments: self.shared.segments.lock().unwrap_or_else(|e| e.into_inner()).len(),
            poisoned: self.poisoned(),
        }
    }

    /// (fsyncs, records they covered) since the partition was opened.
    pub fn sync_stats(&self) -> (u64, u64) {
        (self.shared.fsyncs.load(Ordering::Relaxed), self.shared.synced_records.load(Ordering::Relaxed))
    }

    /// Waits until the log end passes `offset` or `timeout` elapses; true when there is data.
    pub async fn wait_for(&self, offset: u64, timeout: Duration) -> bool {
        let mut receiver = self.shared.visible.subscribe();
        let wait = receiver.wait_for(|&end| end > offset);
        matches!(tokio::time::timeout(timeout, wait).await, Ok(Ok(_)))
    }

    /// Reads whole batches from `from` on: at most about `max_bytes` (but at least one batch)
    /// and about `max_records` (batch granularity). Blocking file I/O (page cache reads).
    pub fn read(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadBatches> {
        let log_end_offset = self.log_end_offset();
        let log_start_offset = self.log_start_offset();
        if from < log_start_offset || from > log_end_offset {
            return Err(LogError::OffsetOutOfRange { offset: from, log_start_offset, log_end_offset });
        }
        let mut result = ReadBatches { batches: Vec::new(), log_start_offset, log_end_offset };
        if from == log_end_offset {
            return Ok(result);
        }
        let segments: Vec<Arc<Segment>> = {
            let map = self.shared.segments.lock().unwrap_or_else(|e| e.into_inner());
            // Retention may have deleted the segment holding `from` since the check above.
            let Some((&first, _)) = map.range(..=from).next_back() else {
                let log_start_offset = map.keys().next().copied().unwrap_or(log_start_offset);
                return Err(LogError::OffsetOutOfRange { offset: from, log_start_offset, log_end_offset });
            };
            map.range(first..).take(16).map(|(_, s)| s.clone()).collect()
        };
        let mut bytes_budget = max_bytes.clamp(1, READ_BYTES_MAX);
        let mut records_budget = max_records.max(1);
        let mut position = from;
        for segment in segments {
            if segment.base_offset >= log_end_offset {
                break;
            }
            match segment.read(position, log_end_offset, &mut bytes_budget, &mut records_budget, &mut result.batches)? {
                SegmentRead::Done => break,
                SegmentRead::EndOfSegment => position = position.max(segment.next_offset()),
                SegmentRead::Corrupt { position: byte, offset, cause } => {
                    if !result.batches.is_empty() {
                        // Serve what precedes the damage; the next read reports it.
                        break;
                    }
                    self.shared.metrics.corrupt_reads.increment(1);
                    tracing::error!(stream = %self.shared.stream, partition = self.shared.id, segment = segment.base_offset, byte, offset, %cause, "refusing to serve a damaged range");
                    return Err(LogError::CorruptRecords {
                        stream: self.shared.stream.clone(),
                        partition: self.shared.id,
                        offset: offset.max(from),
                        segment: segment.base_offset,
                        position: byte,
                        cause,
                    });
                }
            }
        }
        Ok(result)
    }

    /// Reads records from `from`, decoded and trimmed to `[from, from + max_records)`.
    pub fn read_records(&self, from: u64, max_records: usize, max_bytes: usize) -> Result<ReadRecords> {
        let read = self.read(from, max_records, max_bytes)?;
        let mut records = Vec::new();
        let max_records = max_records.max(1);
        'batches: for batch in read.batches {
            let decoded = decode_records(batch).map_err(|cause| LogError::CorruptRecords {
                stream: self.shared.stream.clone(),
                partition: self.shared.id,
                offset: from,
                segment: 0,
                position: 0,
                cause,
            })?;
            for record in decoded {
                if record.offset < from {
                    continue;
                }
                if records.len() == max_records {
                    break 'batches;
                }
                records.push(record);
            }
        }
        let next_offset = records.last().map_or(from, |r| r.offset + 1);
        Ok(ReadRecords {
            records,
            next_offset,
            log_start_offset: read.log_start_offset,
            log_end_offset: read.log_end_offset,
        })
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms`, or `None` when
    /// every record is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<u64>> {
        let segments: Vec<Arc<Segment>> =
            self.shared.segments.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let log_start = self.log_start_offset();
        let log_end = self.log_end_offset();
        for segment in segments {
            if segment.max_timestamp_ms()? < timestamp_ms {
                continue;
            }
            // The indexes may already cover batches not yet visible: stay below the log end.
            let mut from = segment.offset_for_timestamp(timestamp_ms)?.clamp(log_start, log_end);
            while from < segment.next_offset().min(log_end) {
                let read = self.read_records(from, 1000, 1024 * 1024)?;
                if let Some(record) = read.records.iter().find(|r| r.timestamp_ms >= timestamp_ms) {
                    return Ok(Some(record.offset));
                }
                if read.records.is_empty() {
                    break;
                }
                from = read.next_offset;
            }
        }
        Ok(None)
    }

    /// Deletes sealed segments past the stream's retention time or bytes. What to delete is
    /// decided without holding the segments lock (a segment's newest timestamp may need its
    /// index loaded); the active segment, and any segment whose newest timestamp is unknown
    /// (damaged, unreadable), is never deleted by time.
    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<usize> {
        let config = &self.shared.config;
        if config.retention_ms.is_none() && config.retention_bytes.is_none() {
            return Ok(0);
        }
        let snapshot: Vec<Arc<Segment>> =
            self.shared.segments.lock().unwrap_or_else(|e| e.into_inner()).values().cloned().collect();
        let mut total: u64 = snapshot.iter().map(|s| s.size()).sum();
        let mut doomed = Vec::new();
        for segment in snapshot.iter().take(snapshot.len().saturating_sub(1)) {
            let too_old = config.retention_ms.is_some_and(|retention| match segment.max_timestamp_ms() {
                Ok(newest) if newest != i64::MIN => now_ms.saturating_sub(newest) > retention as i64,
                _ => false,
            });
            let too_big =
                config.retention_bytes.is_some_and(|retention| total.saturating_sub(segment.size()) >= retention);
            if !(too_old || too_big) {
                break;
            }
            total -= segment.size();
            doomed.push(segment.clone());
        }
        if doomed.is_empty() {
            return Ok(0);
        }
        {
            let mut map = self.shared.segments.lock().unwrap_or_else(|e| e.into_inner());
            for segment in &doomed {
                map.remove(&segment.base_offset);
            }
            if let Some(&start) = map.keys().next() {
                self.shared.log_start.store(start, Ordering::Release);
            }
        }
        for segment in &doomed {
            tracing::info!(stream = %self.shared.stream, partition = self.shared.id, segment = segment.base_offset, "retention deleted a segment");
            self.shared.size_bytes.fetch_sub(segment.size(), Ordering::Relaxed);
            segment.remove_files();
        }
        self.shared.metrics.segments_deleted.increment(doomed.len() as u64);
        self.shared.metrics.disk_bytes.set(self.shared.size_bytes.load(Ordering::Relaxed) as f64);
        Ok(doomed.len())
    }

    /// Finishes queued appends, syncs, writes indexes and the checkpoint. Later appends
    /// answer `Closed`.
    pub(crate) async fn close(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Command::Close { reply }).await.is_ok() {
            let _ = done.await;
        }
    }
}

/// A partition's segments as recovery found them, and why it must refuse appends, if it must.
struct Recovered {
    segments: BTreeMap<u64, Arc<Segment>>,
    poisoned: Option<String>,
}

/// Opens every segment of a partition directory, scanning what the checkpoint does not cover.
fn recover(stream: &str, id: u32, dir: &Path, now_ms: i64, metrics: &PartitionMetrics) -> Result<Recovered> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = parse_log_file_name(&name) {
            bases.push(base);
        } else if name.ends_with(".tmp") {
            let _ = fs::remove_file(entry.path());
        }
    }
    bases.sort_unstable();
    let mut segments = BTreeMap::new();
    if bases.is_empty() {
        let segment = Segment::create(dir, 0, now_ms)?;
        sync_dir(dir)?;
        segments.insert(0, Arc::new(segment));
        return Ok(Recovered { segments, poisoned: None });
    }
    let checkpoint: Option<Checkpoint> =
        fs::read(dir.join(CHECKPOINT_FILE)).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let path_of = |base: u64| dir.join(crate::segment::file_name(base, "log"));
    let last = *bases.last().expect("not empty");
    let (scan_from, clean) = match &checkpoint {
        Some(checkpoint) if bases.contains(&checkpoint.segment) => {
            let size = fs::metadata(path_of(last)).at(path_of(last))?.len();
            let clean = checkpoint.clean
                && checkpoint.segment == last
                && checkpoint.position == size
                && Segment::ends_as_expected(
                    &path_of(last),
                    checkpoint.last_batch_position,
                    size,
                    checkpoint.next_offset,
                );
            (bases.iter().position(|&b| b == checkpoint.segment).expect("contained"), clean)
        }
        _ => (0, false),
    };
    let mut poisoned = None;
    for (index, &base) in bases.iter().enumerate() {
        let path = path_of(base);
        let is_last = index + 1 == bases.len();
        let segment = if index < scan_from {
            Segment::open_trusted(path, base, bases[index + 1], None, now_ms)?
        } else if clean {
            let checkpoint = checkpoint.as_ref().expect("clean implies a checkpoint");
            let segment =
                Segment::open_trusted(path, base, checkpoint.next_offset, checkpoint.last_batch_position, now_ms)?;
            segment.max_timestamp_ms()?; // loads the indexes before the writer extends them
            segment
        } else {
            // Bytes up to here were synced when the checkpoint was written: damage below it
            // is damage to acknowledged data, never a torn tail.
            let synced_through = checkpoint.as_ref().filter(|c| c.segment == base).map_or(0, |c| c.position);
            let (segment, scan) = Segment::open_scanned(path, base, now_ms, |segment, scan| {
                let Some((position, cause)) = &scan.damage else { return Ok(false) };
                if is_last && *position >= synced_through {
                    let intact_after = segment.intact_batch_after(*position, scan.next_offset)?;
                    tracing::warn!(
                        stream, partition = id, segment = base, position, %cause, intact_batch_after = ?intact_after,
                        "recovery cuts the unsynced tail of the active segment"
                    );
                    return Ok(true);
                }
                metrics.corrupt_reads.increment(1);
                tracing::error!(stream, partition = id, segment = base, position, synced_through, %cause, "a segment is damaged in synced data; the damaged range will not be served");
                if is_last {
                    poisoned = Some(format!(
                        "the active segment {base} is damaged at byte {position} ({cause}), inside data synced before; \
                         it is left as it is and the partition takes no appends until it is repaired"
                    ));
                }
                Ok(false)
            })?;
            if is_last && poisoned.is_some() {
                let synced_end = checkpoint.as_ref().filter(|c| c.segment == base).map_or(0, |c| c.next_offset);
                segment.raise_next_offset(synced_end.max(segment.next_offset() + 1));
            }
            if !is_last && segment.next_offset() != bases[index + 1] && scan.damage.is_none() {
                tracing::error!(
                    stream,
                    partition = id,
                    segment = base,
                    next = segment.next_offset(),
                    following = bases[index + 1],
                    "segments are not contiguous"
                );
            }
            segment
        };
        segments.insert(base, Arc::new(segment));
    }
    Ok(Recovered { segments, poisoned })
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// The partition's only writer. Runs as a tokio task; file I/O runs on the blocking pool,
/// one group at a time, while the next group gathers in the queue.
struct Writer {
    shared: Arc<Shared>,
    active: Arc<Segment>,
    next_offset: u64,
    /// Batches of the current group not yet written, with their total size.
    batches: Vec<BytesMut>,
    batches_bytes: usize,
    headers: Vec<BatchHeader>,
    /// Since when bytes have been written without an fsync (buffered appends).
    unsynced_since: Option<Instant>,
    flush_interval: Duration,
    /// When the last checkpoint was written, and its position.
    checkpointed: (Instant, u64),
    checkpoint_interval: Duration,
    closed: bool,
}

struct Pending {
    reply: oneshot::Sender<Result<Appended>>,
    appended: Appended,
    enqueued: Instant,
    records: u64,
    bytes: u64,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let flush_interval = self.flush_interval;
        loop {
            let command = match self.unsynced_since {
                Some(since) => tokio::select! {
                    command = queue.recv() => command,
                    _ = tokio::time::sleep_until((since + flush_interval).into()) => {
                        match self.blocking(|writer| writer.flush_unsynced()).await {
                            Some(writer) => self = writer,
                            None => return,
                        }
                        continue;
                    }
                },
                None => queue.recv().await,
            };
            let Some(first) = command else {
                self.blocking(|writer| writer.close()).await;
                return;
            };
            let mut group_bytes = self.dequeued(&first);
            let mut group = vec![first];
            while group_bytes < GROUP_BYTES_MAX && !matches!(group.last(), Some(Command::Close { .. })) {
                match queue.try_recv() {
                    Ok(command) => {
                        group_bytes += self.dequeued(&command);
                        group.push(command);
                    }
                    Err(_) => break,
                }
            }
            match self.blocking(move |writer| writer.process(group)).await {
                Some(writer) => self = writer,
                None => return,
            }
            if self.closed {
                queue.close();
                while let Some(command) = queue.recv().await {
                    self.dequeued(&command);
                    match command {
                        Command::Append { reply, .. } => drop(reply.send(Err(LogError::Closed))),
                        Command::Close { reply } => drop(reply.send(())),
                    }
                }
                break;
            }
        }
    }

    /// Releases a command's bytes from the queue bound; returns them.
    fn dequeued(&self, command: &Command) -> usize {
        match command {
            Command::Append { batch, .. } => {
                self.shared.queued_bytes.fetch_sub(batch.size_bytes(), Ordering::AcqRel);
                batch.size_bytes()
            }
            Command::Close { .. } => 0,
        }
    }

    /// Runs `f` on the blocking pool (file I/O must not stall the async workers). `None` when
    /// the writer is gone: the runtime is shutting down, or `f` panicked (a bug), in which case
    /// the partition is poisoned and waiting appends are answered through their dropped replies.
    async fn blocking(mut self, f: impl FnOnce(&mut Writer) + Send + 'static) -> Option<Writer> {
        let shared = self.shared.clone();
        match tokio::task::spawn_blocking(move || {
            f(&mut self);
            self
        })
        .await
        {
            Ok(writer) => Some(writer),
            Err(error) if error.is_panic() => {
                tracing::error!(stream = %shared.stream, partition = shared.id, %error, "partition writer panicked");
                let mut poisoned = shared.poisoned.lock().unwrap_or_else(|e| e.into_inner());
                poisoned.get_or_insert_with(|| format!("the partition writer panicked: {error}"));
                None
            }
            Err(_) => None,
        }
    }

    fn process(&mut self, group: Vec<Command>) {
        let mut pending = Vec::with_capacity(group.len());
        let mut sync = false;
        let mut close = None;
        for command in group {
            match command {
                Command::Close { reply } => close = Some(reply),
                Command::Append { reply, .. } if self.closed => drop(reply.send(Err(LogError::Closed))),
                Command::Append { mut batch, durability, enqueued, reply } => {
                    if let Some(cause) = self.poisoned() {
                        let _ = reply.send(Err(self.poisoned_error(cause)));
                        continue;
                    }
                    if let Err(error) = self.roll_if_needed(batch.size_bytes()) {
                        self.poison(&error);
                        let _ = reply.send(Err(self.poisoned_error(error.to_string())));
                        continue;
                    }
                    let base_offset = self.next_offset;
                    set_base_offset(&mut batch.bytes, base_offset);
                    let header = BatchHeader { base_offset, ..batch.header };
                    self.batches_bytes += batch.bytes.len();
                    self.batches.push(batch.bytes);
                    self.headers.push(header);
                    self.next_offset = header.next_offset();
                    sync |= durability == Durability::Sync;
                    pending.push(Pending {
                        reply,
                        appended: Appended::consecutive(base_offset, header.last_offset()),
                        enqueued,
                        records: u64::from(header.record_count),
                        bytes: header.size_bytes as u64,
                    });
                }
            }
        }
        if let Some(cause) = self.poisoned() {
            // A write or fsync failed while this group was being assembled (during a roll).
            // Nothing of the group may be acknowledged, and the file is not touched again:
            // a second fsync could report success for pages the first one lost.
            self.batches.clear();
            self.batches_bytes = 0;
            self.headers.clear();
            for p in pending.drain(..) {
                let _ = p.reply.send(Err(self.poisoned_error(cause.clone())));
            }
        }
        if !pending.is_empty() {
            let records: u64 = pending.iter().map(|p| p.records).sum();
            let result = self.write_buffer().and_then(|()| {
                let overdue = self.unsynced_since.is_some_and(|since| since.elapsed() >= self.flush_interval);
                if sync || overdue { self.sync(records) } else { Ok(()) }
            });
            match result {
                Ok(()) => {
                    self.shared.visible.send_replace(self.next_offset);
                    let metrics = &self.shared.metrics;
                    for p in pending {
                        metrics.appended_records.increment(p.records);
                        metrics.appended_bytes.increment(p.bytes);
                        metrics.append_seconds.record(p.enqueued.elapsed().as_secs_f64());
                        let _ = p.reply.send(Ok(p.appended));
                    }
                    metrics.disk_bytes.set(self.shared.size_bytes.load(Ordering::Relaxed) as f64);
                    self.checkpoint_if_due();
                }
                Err(error) => {
                    self.poison(&error);
                    for p in pending {
                        let _ = p.reply.send(Err(self.poisoned_error(error.to_string())));
                    }
                }
            }
        }
        if let Some(reply) = close {
            self.close();
            let _ = reply.send(());
        }
    }

    fn write_buffer(&mut self) -> Result<()> {
        if self.batches.is_empty() {
            return Ok(());
        }
        self.active.write(&self.batches, &self.headers)?;
        self.shared.size_bytes.fetch_add(self.batches_bytes as u64, Ordering::Relaxed);
        self.unsynced_since.get_or_insert_with(Instant::now);
        self.batches.clear();
        self.batches_bytes = 0;
        self.headers.clear();
        Ok(())
    }

    fn sync(&mut self, records: u64) -> Result<()> {
        let started = Instant::now();
        self.active.sync()?;
        let metrics = &self.shared.metrics;
        metrics.fsync_seconds.record(started.elapsed().as_secs_f64());
        metrics.fsyncs.increment(1);
        metrics.records_per_fsync.record(records as f64);
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.shared.synced_records.fetch_add(records, Ordering::Relaxed);
        self.unsynced_since = None;
        Ok(())
    }

    fn flush_unsynced(&mut self) {
        if self.unsynced_since.is_some() && self.poisoned().is_none() {
            if let Err(error) = self.sync(0) {
                self.poison(&error);
            } else {
                self.shared.visible.send_replace(self.next_offset);
            }
        }
    }

    fn roll_if_needed(&mut self, incoming_bytes: usize) -> Result<()> {
        let size = self.active.size() + self.batches_bytes as u64;
        if size == 0 {
            return Ok(());
        }
        let now_ms = self.shared.clock.now_ms();
        let config = &self.shared.config;
        let full = size + incoming_bytes as u64 > config.segment_bytes;
        let old = now_ms.saturating_sub(self.active.created_ms) >= config.segment_ms as i64;
        if !(full || old) {
            return Ok(());
        }
        // Seal: everything of the old segment is on disk before the new one exists, so
        // recovery never has to look behind the checkpoint.
        self.write_buffer()?;
        self.active.sync()?;
        self.unsynced_since = None;
        self.active.write_indexes()?;
        let segment = Arc::new(Segment::create(&self.shared.dir, self.next_offset, now_ms)?);
        sync_dir(&self.shared.dir)?;
        self.write_checkpoint(self.next_offset, 0, None, false)?;
        self.shared.segments.lock().unwrap_or_else(|e| e.into_inner()).insert(segment.base_offset, segment.clone());
        self.active = segment;
        self.shared.metrics.segments_rolled.increment(1);
        Ok(())
    }

    /// Records how far the active segment is synced, at most every `checkpoint_interval`
    /// (`LogConfig`): it bounds the range in which recovery cannot tell a torn unsynced tail
    /// from damage to synced data.
    /// A failure here loses no data (the checkpoint only narrows recovery), so it is logged.
    fn checkpoint_if_due(&mut self) {
        let (at, position) = self.checkpointed;
        let size = self.active.size();
        if self.unsynced_since.is_some() || at.elapsed() < self.checkpoint_interval || size == position {
            return;
        }
        let (base, last) = (self.active.base_offset, self.active.last_batch_position());
        if let Err(error) = self.write_checkpoint(base, size, last, false) {
            tracing::warn!(stream = %self.shared.stream, partition = self.shared.id, %error, "could not write the checkpoint");
        }
    }

    fn write_checkpoint(
        &mut self,
        segment: u64,
        position: u64,
        last_batch_position: Option<u64>,
        clean: bool,
    ) -> Result<()> {
        let checkpoint = Checkpoint { segment, position, next_offset: self.next_offset, last_batch_position, clean };
        self.checkpointed = (Instant::now(), position);
        let bytes = serde_json::to_vec(&checkpoint).expect("plain struct serializes");
        write_synced(&self.shared.dir.join(CHECKPOINT_FILE), &bytes)
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        if self.poisoned().is_some() {
            // No checkpoint: the next open scans and repairs.
            return;
        }
        let result = (|| {
            self.write_buffer()?;
            self.active.sync()?;
            self.active.write_indexes()?;
            let (base, size, last) = (self.active.base_offset, self.active.size(), self.active.last_batch_position());
            self.write_checkpoint(base, size, last, true)
        })();
        if let Err(error) = result {
            self.poison(&error);
        }
        self.shared.visible.send_replace(self.next_offset);
    }

    fn poisoned(&self) -> Option<String> {
        self.shared.poisoned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn poisoned_error(&self, cause: String) -> LogError {
        LogError::Poisoned { stream: self.shared.stream.clone(), partition: self.shared.id, cause }
    }

    /// A failed write or fsync leaves the file's state unknown (Linux may drop the dirty
    /// pages and report success on the next fsync), so the partition takes no more appends.
    fn poison(&self, error: &LogError) {
        let mut poisoned = self.shared.poisoned.lock().unwrap_or_else(|e| e.into_inner());
        if poisoned.is_none() {
            tracing::error!(stream = %self.shared.stream, partition = self.shared.id, %error, "partition poisoned: it takes no more appends until restarted");
            metrics::gauge!("strom_log_partitions_poisoned").increment(1.0);
            *poisoned = Some(error.to_string());
        }
    }
}
