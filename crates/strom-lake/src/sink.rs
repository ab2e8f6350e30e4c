//! The lake sink: one task per landed partition that reads the log, cuts flushes by size and
//! age, writes their files, publishes them, and only then commits the offsets they cover.
//!
//! Exactly once, step by step, for a flush of `[start, end)`:
//! 1. the marker `{start, end, basis, files}` is written (synced) in the sink's state dir;
//! 2. each hour's file is written to the spool (synced), then published (rename + directory
//!    sync, or one PUT / a completed multipart upload): a file is visible whole or not at all;
//! 3. `end` is committed under the group `strom-lake` (redb, synced).
//!
//! After a crash the committed offset `c` is where the sink resumes. A marker with
//! `start == c` is a flush that may have published some of its files: it is done again
//! for exactly `[start, end)`, which gives the same files under the same names, and only the
//! missing ones are written. So every offset ends up in exactly one visible file.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strom_log::{CommitMode, Fence, Lease, Stream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::Shared;
use crate::config::{GROUP, TimeBasis};
use crate::error::{LakeError, Result};
use crate::flush::{self, FlushContext, Marker, RangeScan};
use crate::limits::{OPEN_HOURS_MAX, READ_BYTES_MAX, READ_RECORDS_MAX, RETRY_BACKOFF_MS_MAX, STREAM_POLL_MS};
use crate::store::blocking;

/// The first guess of Parquet bytes per input byte, before a partition's first flush says.
const RATIO_INITIAL: f64 = 0.25;
/// Input bytes a flush needs before its compression ratio is believed.
const RATIO_SAMPLE_BYTES_MIN: u64 = 1024 * 1024;
/// The smallest read while landing.
const READ_BYTES_MIN: usize = 64 * 1024;
/// Waiting for data with nothing pending (the stop signal ends the wait earlier).
const IDLE_WAIT_MS: u64 = 5000;

/// The running sink: its tasks, and how to stop them.
pub struct Sink {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sink {
    pub(crate) fn start(shared: Arc<Shared>, streams: Vec<String>) -> Sink {
        let (stop, stopped) = watch::channel(false);
        let tasks = streams
            .into_iter()
            .map(|stream| tokio::spawn(land_stream(shared.clone(), stream, stopped.clone())))
            .collect();
        Sink { stop, tasks }
    }

    /// Stops reading, flushes what each partition has pending (so the lake holds everything
    /// read), and waits for the tasks. A flush cut short here is done again at the next start.
    pub async fn close(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

async fn land_stream(shared: Arc<Shared>, name: String, mut stop: watch::Receiver<bool>) {
    let stream = loop {
        match shared.log.stream(&name) {
            Ok(stream) => break stream,
            Err(_) => {
                tracing::debug!(stream = %name, "the lake waits for the stream to exist");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(STREAM_POLL_MS)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    };
    // The partitions this process lands: all of them on the embedded log; on a shared (Kafka)
    // log the processes landing this stream divide them.
    let share_group = format!("{GROUP}.{name}");
    let mut share = loop {
        match shared.log.share(&share_group, &name) {
            Ok(share) => break share,
            Err(error) => {
                tracing::error!(stream = %name, %error, "the lake cannot join its shared group; trying again");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(STREAM_POLL_MS)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    };
    let mut tasks: Vec<Option<JoinHandle<()>>> = stream.partitions().iter().map(|_| None).collect();
    loop {
        // Started even when the sink is stopping already: a partition's start finishes the
        // flush a crash interrupted.
        for (partition, task) in tasks.iter_mut().enumerate() {
            if task.as_ref().is_some_and(|task| !task.is_finished()) {
                continue;
            }
            if let Some(lease) = share.lease(partition as u32) {
                *task = Some(tokio::spawn(land_partition(shared.clone(), stream.clone(), lease, stop.clone())));
            }
        }
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            _ = share.changed() => {}
            _ = stop.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(STREAM_POLL_MS)) => {}
        }
    }
    for task in tasks.into_iter().flatten() {
        let _ = task.await;
    }
    share.leave().await;
}

/// Lands one partition while `lease` holds it. When the partition is taken away (or the sink
/// stops) it flushes what it read, so the lake and the committed offset agree, and returns.
async fn land_partition(shared: Arc<Shared>, stream: Arc<Stream>, mut lease: Lease, mut stop: watch::Receiver<bool>) {
    let partition = lease.partition();
    let mut backoff_ms = 100;
    let mut sink = loop {
        if lease.is_revoked() {
            return;
        }
        match PartitionSink::open_fenced(shared.clone(), stream.clone(), partition, Some(lease.fence())).await {
            Ok(sink) => break sink,
            Err(error) => {
                metrics::counter!("strom_lake_errors_total", "stream" => stream.name.clone()).increment(1);
                tracing::error!(stream = %stream.name, partition, %error, retry_ms = backoff_ms, "lake recovery failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    _ = stop.wait_for(|s| *s) => return,
                    _ = lease.revoked() => return,
                }
                backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
            }
        }
    };
    let _landing = Landing::new(&shared, &stream.name, partition);
    backoff_ms = 100;
    loop {
        if lease.is_lost() {
            // Another process may land the partition already: what was read is left to it.
            tracing::warn!(stream = %stream.name, partition, "lake partition lost; its pending range is left to the next owner");
            return;
        }
        if *stop.borrow() || lease.is_revoked() {
            if let Err(error) = sink.flush().await {
                tracing::warn!(stream = %stream.name, partition, %error, "the lake's last flush failed; it is done again by the next to land this partition");
            }
            tracing::info!(stream = %stream.name, partition, committed = sink.scan.start, revoked = lease.is_revoked(), "lake partition stopped");
            return;
        }
        match sink.step().await {
            Ok(true) => backoff_ms = 100,
            Ok(false) => {
                let now = shared.clock.now_ms();
                let wait = sink.until_roll_ms(now).unwrap_or(IDLE_WAIT_MS).max(1);
                let next = sink.scan.end;
                let Ok(handle) = stream.partition(partition) else { return };
                tokio::select! {
                    _ = handle.wait_for(next, Duration::from_millis(wait)) => {}
                    _ = stop.wait_for(|s| *s) => {}
                    _ = lease.revoked() => {}
                }
            }
            Err(error) => {
                metrics::counter!("strom_lake_errors_total", "stream" => stream.name.clone()).increment(1);
                tracing::error!(stream = %stream.name, partition, %error, retry_ms = backoff_ms, "lake flush failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    _ = stop.wait_for(|s| *s) => {}
                    _ = lease.revoked() => {}
                }
                backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MS_MAX);
            }
        }
    }
}

/// A partition in `Shared::landing` while this lives.
struct Landing {
    shared: Arc<Shared>,
    key: (String, u32),
}

impl Landing {
    fn new(shared: &Arc<Shared>, stream: &str, partition: u32) -> Landing {
        let key = (stream.to_string(), partition);
        shared.landing.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone());
        Landing { shared: shared.clone(), key }
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.shared.landing.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

/// One partition's landing, driven by hand (`step`, `flush`): the sink's tasks run one per
/// partition; benchmarks and tests drive one directly.
pub struct PartitionSink {
    shared: Arc<Shared>,
    stream: Arc<Stream>,
    partition: u32,
    /// What was read since the last flush: `[scan.start, scan.end)`; `scan.start` is committed.
    pub(crate) scan: RangeScan,
    /// When (clock time) the first record of the pending flush was read.
    first_read_at_ms: Option<i64>,
    /// Parquet bytes per input byte of this partition's last flush.
    ratio: f64,
    marker_path: String,
    dead_letters: bool,
    /// When the partition's share says so, nothing more is published or committed.
    fence: Option<Fence>,
}

impl PartitionSink {
    /// Recovers the partition: finishes an interrupted flush, then resumes after it.
    pub(crate) async fn open(shared: Arc<Shared>, stream: Arc<Stream>, partition: u32) -> Result<PartitionSink> {
        PartitionSink::open_fenced(shared, stream, partition, None).await
    }

    /// `open`, with the fence of the lease the partition is landed under.
    pub(crate) async fn open_fenced(
        shared: Arc<Shared>,
        stream: Arc<Stream>,
        partition: u32,
        fence: Option<Fence>,
    ) -> Result<PartitionSink> {
        let handle = stream.partition(partition)?;
        let log_start = handle.log_start_offset();
        // Asked of the store, not a copy: on a shared log another process may have landed
        // this partition before it came here.
        let committed = {
            let (shared, name) = (shared.clone(), stream.name.clone());
            blocking(move || Ok(shared.log.groups().committed_now(GROUP, &name, partition)?)).await?
        };
        let marker_path = flush::marker_path(&stream.name, partition);
        let dead_letters = shared.dead_letter_stream.as_deref() == Some(stream.name.as_str());
        let mut sink = PartitionSink {
            shared: shared.clone(),
            stream: stream.clone(),
            partition,
            scan: RangeScan::new(committed.unwrap_or(log_start)),
            first_read_at_ms: None,
            ratio: RATIO_INITIAL,
            marker_path: marker_path.clone(),
            dead_letters,
            fence,
        };
        let legacy = flush::legacy_marker_path(&shared.state_dir, &stream.name, partition);
        let marker = match flush::read_marker(&shared.store, &marker_path).await? {
            Some(marker) => Some(marker),
            None => {
                let path = legacy.clone();
                blocking(move || flush::read_legacy_marker(&path)).await?
            }
        };
        if let Some(marker) = marker
            && marker.start == committed.unwrap_or(log_start)
            && marker.end > marker.start
        {
            tracing::info!(stream = %stream.name, partition, start = marker.start, end = marker.end, "finishing an interrupted lake flush");
            let scan = sink.rescan(marker.start, marker.end, marker.time_basis).await?;
            let files: Vec<String> = scan.files(&stream.name, partition).into_iter().map(|(_, _, path)| path).collect();
            if files != marker.files {
                // Only a change of the hour rules between versions could do this; the files
                // the marker names may then hold some of the range's rows a second time.
                tracing::error!(stream = %stream.name, partition, ?files, marker = ?marker.files, "an interrupted flush gives other files than it planned");
            }
            sink.complete(&marker, &scan).await?;
            metrics::counter!("strom_lake_recovered_flushes_total", "stream" => stream.name.clone()).increment(1);
            sink.scan = RangeScan::new(marker.end);
        } else if committed.is_some_and(|c| c < log_start) {
            sink.records_lost(committed.unwrap_or(0), log_start).await?;
        }
        // A marker from before markers moved into the lake is done with now.
        if legacy.exists() {
            std::fs::remove_file(&legacy).map_err(|source| LakeError::Io { path: legacy.clone(), source })?;
        }
        sink.report_lag();
        Ok(sink)
    }

    /// The first offset not landed yet (committed), and one past the last offset read.
    pub fn pending(&self) -> (u64, u64) {
        (self.scan.start, self.scan.end)
    }

    fn basis(&self) -> TimeBasis {
        self.shared.config.time_basis
    }

    /// Reads what the log has after the pending range and flushes when a roll is due.
    /// Returns whether anything was read or written.
    pub async fn step(&mut self) -> Result<bool> {
        let now = self.shared.clock.now_ms();
        if self.roll_due(now) {
            self.flush().await?;
            return Ok(true);
        }
        let stream = self.stream.clone();
        let (partition, basis) = (self.partition, self.basis());
        let mut scan = std::mem::take(&mut self.scan);
        let from = scan.end;
        // Read no more than the largest file may still take, so that files end near roll_bytes.
        let largest = scan.hours.values().map(|h| h.input_bytes).max().unwrap_or(0);
        let budget = (self.shared.config.roll_bytes as f64 / self.ratio) as u64;
        let max_bytes = budget.saturating_sub(largest).clamp(READ_BYTES_MIN as u64, READ_BYTES_MAX as u64) as usize;
        let read = blocking(move || {
            let handle = stream.partition(partition)?;
            let read = handle.read_records(from, READ_RECORDS_MAX, max_bytes);
            let outcome = match read {
                Ok(read) => {
                    for record in &read.records {
                        scan.observe(record, basis);
                    }
                    Ok(read.records.len())
                }
                Err(error) => Err(error),
            };
            Ok((scan, outcome))
        })
        .await;
        let (scan, outcome) = match read {
            Ok(read) => read,
            Err(error) => {
                // The scan is gone with the failed task: start over from what is committed.
                self.scan = RangeScan::new(self.committed_or_start());
                self.first_read_at_ms = None;
                return Err(error);
            }
        };
        self.scan = scan;
        let read = match outcome {
            Ok(read) => read,
            Err(strom_log::LogError::OffsetOutOfRange { log_start_offset, .. }) if from < log_start_offset => {
                let committed = self.scan.start;
                self.records_lost(committed, log_start_offset).await?;
                return Ok(true);
            }
            Err(error) => return Err(error.into()),
        };
        if read > 0 && self.first_read_at_ms.is_none() {
            self.first_read_at_ms = Some(now);
        }
        if self.roll_due(now) {
            self.flush().await?;
        }
        self.report_lag();
        Ok(read > 0)
    }

    fn committed_or_start(&self) -> u64 {
        let committed = self.shared.log.groups().committed(GROUP, &self.stream.name, self.partition);
        committed.unwrap_or_else(|| self.stream.partition(self.partition).map_or(0, |p| p.log_start_offset()))
    }

    /// Whether the pending range must be cut now: a file would pass `roll_bytes`, the
    /// oldest pending record was read `roll_age_ms` ago, or too many hours are open.
    pub(crate) fn roll_due(&self, now_ms: i64) -> bool {
        if self.scan.is_empty() {
            return false;
        }
        let config = &self.shared.config;
        let largest = self.scan.hours.values().map(|h| h.input_bytes).max().unwrap_or(0);
        largest as f64 * self.ratio >= config.roll_bytes as f64
            || self.scan.hours.len() >= OPEN_HOURS_MAX
            || self.until_roll_ms(now_ms) == Some(0)
    }

    /// Milliseconds until the pending range is old enough to be cut; `None` with nothing pending.
    pub(crate) fn until_roll_ms(&self, now_ms: i64) -> Option<u64> {
        let first = self.first_read_at_ms.filter(|_| !self.scan.is_empty())?;
        let due = first.saturating_add(self.shared.config.roll_age_ms as i64);
        Some(due.saturating_sub(now_ms).max(0) as u64)
    }

    /// Writes, publishes and commits the pending range.
    pub async fn flush(&mut self) -> Result<()> {
        if self.scan.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let marker = Marker {
            start: self.scan.start,
            end: self.scan.end,
            time_basis: self.basis(),
            files: self.scan.files(&self.stream.name, self.partition).into_iter().map(|(_, _, path)| path).collect(),
        };
        flush::write_marker(&self.shared.store, &self.marker_path, &marker).await?;
        let scan = std::mem::take(&mut self.scan);
        let result = self.complete(&marker, &scan).await;
        match result {
            Ok(()) => {
                metrics::histogram!("strom_lake_commit_seconds").record(started.elapsed().as_secs_f64());
                self.scan = RangeScan::new(marker.end);
                self.first_read_at_ms = None;
                self.report_lag();
                Ok(())
            }
            Err(error) => {
                // Keep the range: the retry completes this same marker.
                self.scan = scan;
                Err(error)
            }
        }
    }

    /// Writes the marker's files that are not in the lake yet, publishes them, commits.
    async fn complete(&mut self, marker: &Marker, scan: &RangeScan) -> Result<()> {
        let mut missing = BTreeSet::new();
        for (hour, _, path) in scan.files(&self.stream.name, self.partition) {
            if !self.shared.store.exists(&path).await? {
                missing.insert(hour);
            }
        }
        let written = {
            let shared = self.shared.clone();
            let stream = self.stream.clone();
            let (partition, basis, dead_letters) = (self.partition, marker.time_basis, self.dead_letters);
            let hours_scan = clone_scan(scan);
            blocking(move || {
                let snapshot = shared.catalog.as_ref().map(|c| c.snapshot()).unwrap_or_default();
                let handle = stream.partition(partition)?;
                let spool = shared.store.spool_dir();
                std::fs::create_dir_all(&spool).map_err(|source| LakeError::Io { path: spool.clone(), source })?;
                let context = FlushContext {
                    stream: &stream.name,
                    partition: handle,
                    basis,
                    snapshot: &snapshot,
                    dead_letters,
                    config: &shared.config,
                    spool: &spool,
                };
                flush::write_files(&context, &hours_scan, &missing)
            })
            .await?
        };
        let (mut bytes, mut input_bytes) = (0, 0);
        for (index, file) in written.iter().enumerate() {
            let fenced = self.check_fence();
            let published = match fenced {
                Ok(()) => self.shared.store.publish(&file.spool_path, &file.path).await,
                Err(error) => Err(error),
            };
            if let Err(error) = published {
                for rest in &written[index..] {
                    let _ = std::fs::remove_file(&rest.spool_path);
                }
                return Err(error);
            }
            let stream = self.stream.name.clone();
            metrics::counter!("strom_lake_rows_total", "stream" => stream.clone()).increment(file.rows);
            metrics::counter!("strom_lake_bytes_total", "stream" => stream.clone()).increment(file.bytes);
            metrics::counter!("strom_lake_files_total", "stream" => stream).increment(1);
            tracing::debug!(path = %file.path, rows = file.rows, bytes = file.bytes, hour = file.hour.0, "lake file published");
            bytes += file.bytes;
            input_bytes += file.input_bytes;
        }
        // A small file is mostly Parquet's own metadata: it says nothing of the ratio.
        if input_bytes >= RATIO_SAMPLE_BYTES_MIN {
            self.ratio = (bytes as f64 / input_bytes as f64).clamp(0.01, 4.0);
        }
        self.check_fence()?;
        self.commit(marker.end).await
    }

    /// Fails once the partition was lost to another process (see `strom_log::Fence`).
    fn check_fence(&self) -> Result<()> {
        match &self.fence {
            Some(fence) if !fence.holds() => {
                Err(LakeError::Lost { stream: self.stream.name.clone(), partition: self.partition })
            }
            _ => Ok(()),
        }
    }

    async fn commit(&self, offset: u64) -> Result<()> {
        let shared = self.shared.clone();
        let (stream, partition) = (self.stream.name.clone(), self.partition);
        blocking(move || {
            shared.log.groups().commit(GROUP, &stream, &[(partition, offset)], CommitMode::Forward)?;
            Ok(())
        })
        .await
    }

    /// Records from `from` to `log_start` were deleted by retention before they landed.
    async fn records_lost(&mut self, from: u64, log_start: u64) -> Result<()> {
        tracing::error!(stream = %self.stream.name, partition = self.partition, from, to = log_start,
            "records were deleted by retention before the lake landed them");
        metrics::counter!("strom_lake_records_lost_total", "stream" => self.stream.name.clone())
            .increment(log_start.saturating_sub(from));
        self.commit(log_start).await?;
        self.scan = RangeScan::new(log_start);
        self.first_read_at_ms = None;
        Ok(())
    }

    /// The first pass over a range again (recovery).
    async fn rescan(&self, start: u64, end: u64, basis: TimeBasis) -> Result<RangeScan> {
        let stream = self.stream.clone();
        let partition = self.partition;
        blocking(move || {
            let handle = stream.partition(partition)?;
            let mut scan = RangeScan::new(start);
            flush::read_range(handle, &stream.name, start, end, |record| {
                scan.observe(record, basis);
                Ok(())
            })?;
            Ok(scan)
        })
        .await
    }

    fn report_lag(&self) {
        if let Ok(handle) = self.stream.partition(self.partition) {
            let lag = handle.log_end_offset().saturating_sub(self.scan.start);
            metrics::gauge!("strom_lake_lag_records", "stream" => self.stream.name.clone(), "partition" => self.partition.to_string())
                .set(lag as f64);
        }
    }
}

/// A copy of a scan (its counters and the types of each hour) for the blocking writer.
fn clone_scan(scan: &RangeScan) -> RangeScan {
    let mut copy = RangeScan::new(scan.start);
    copy.end = scan.end;
    copy.records = scan.records;
    copy.input_bytes = scan.input_bytes;
    for (hour, hour_scan) in &scan.hours {
        copy.hours.insert(*hour, hour_scan.clone());
    }
    copy
}
