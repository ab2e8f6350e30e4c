mod common;

use std::sync::Arc;

use common::*;
use strom_log::{Durability, Log, LogError, ManualClock, StreamConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_segments_past_retention_time_are_deleted_and_reads_below_start_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000));
    let log = Log::open(config(dir.path(), clock.clone())).unwrap();
    let stream_config =
        StreamConfig { partitions: 1, segment_bytes: 4096, retention_ms: Some(60_000), ..StreamConfig::default() };
    log.create_stream("s", stream_config).await.unwrap();
    let stream = log.stream("s").unwrap();
    let partition = stream.partition(0).unwrap();
    // Old records (timestamp 1,000,000), then new ones an hour later.
    for _ in 0..30 {
        partition.append(batch("old", 5, 1_000_000), Durability::Sync).await.unwrap();
    }
    clock.advance_ms(3_600_000);
    for _ in 0..30 {
        partition.append(batch("new", 5, 4_600_000), Durability::Sync).await.unwrap();
    }
    let before = partition.status();
    let deleted = log.enforce_retention();
    assert!(deleted > 0, "old segments are deleted");
    assert_eq!(partition.status().segments, before.segments - deleted);
    let start = partition.log_start_offset();
    // Every new record (offsets 150..300) is kept; only segments of old records went.
    assert!(start > 0 && start <= 150, "start {start}");
    assert_eq!(log.enforce_retention(), 0, "what remains is within retention");
    assert!(
        matches!(partition.read(0, 1, 100), Err(LogError::OffsetOutOfRange { log_start_offset, .. }) if log_start_offset == start)
    );
    let read = partition.read_records(start, 1000, 1 << 20).unwrap();
    assert_eq!(read.records.last().unwrap().offset, 299);
    // The same after a restart: the start offset comes from the first remaining segment.
    log.close().await;
    drop(log);
    let log = Log::open(config(dir.path(), clock)).unwrap();
    assert_eq!(log.stream("s").unwrap().partition(0).unwrap().log_start_offset(), start);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_bytes_keeps_the_partition_under_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    let stream_config = StreamConfig {
        partitions: 1,
        segment_bytes: 4096,
        retention_ms: None,
        retention_bytes: Some(16_384),
        ..StreamConfig::default()
    };
    log.create_stream("s", stream_config).await.unwrap();
    fill(&log, "s", 200, 5).await;
    let stream = log.stream("s").unwrap();
    let partition = stream.partition(0).unwrap();
    assert!(partition.status().size_bytes > 40_000);
    assert!(log.enforce_retention() > 0);
    let status = partition.status();
    assert!(status.size_bytes <= 16_384 + 4096, "{status:?}");
    assert_eq!(status.log_end_offset, 1000);
    assert_eq!(read_all(&log, "s").unwrap().len() as u64, 1000 - status.log_start_offset);
    log.close().await;
}
