mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use strom_log::{Durability, LogError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_get_dense_offsets_and_read_back_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_stream("s", stream_config(1, 4096)).await.unwrap();
    let values = fill(&log, "s", 60, 5).await;
    let stream = log.stream("s").unwrap();
    let partition = stream.partition(0).unwrap();
    assert_eq!(partition.log_end_offset(), 300);
    assert!(partition.status().segments > 3, "4 KiB segments roll: {:?}", partition.status());
    assert_eq!(read_all(&log, "s").unwrap(), values);
    // A read from the middle of a batch starts at the asked offset.
    let read = partition.read_records(7, 3, 1 << 20).unwrap();
    assert_eq!(read.records.iter().map(|r| r.offset).collect::<Vec<_>>(), [7, 8, 9]);
    assert_eq!(read.next_offset, 10);
    // Reads past the end are out of range; at the end, empty.
    assert!(matches!(partition.read(301, 10, 1000), Err(LogError::OffsetOutOfRange { log_end_offset: 300, .. })));
    assert!(partition.read(300, 10, 1000).unwrap().batches.is_empty());
    // Unknown stream and partition.
    assert!(matches!(log.stream("nope"), Err(LogError::StreamNotFound(_))));
    assert!(matches!(stream.partition(1), Err(LogError::PartitionNotFound { .. })));
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_offsets_survive_a_clean_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let values = {
        let log = open(dir.path());
        log.create_stream("s", stream_config(1, 8192)).await.unwrap();
        let values = fill(&log, "s", 40, 3).await;
        log.close().await;
        values
    };
    let log = open(dir.path());
    assert_eq!(read_all(&log, "s").unwrap(), values);
    let partition = log.stream("s").unwrap().partition(0).unwrap().log_end_offset();
    assert_eq!(partition, 120);
    let more = fill(&log, "s", 1, 2).await;
    let all = read_all(&log, "s").unwrap();
    assert_eq!(&all[120..], &more[..]);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_lookup_finds_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_stream("s", stream_config(1, 4096)).await.unwrap();
    fill(&log, "s", 50, 4).await; // batch b has timestamp 1000 + b, offsets 4b..4b+3
    let stream = log.stream("s").unwrap();
    let partition = stream.partition(0).unwrap();
    assert_eq!(partition.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(partition.offset_for_timestamp(1_000).unwrap(), Some(0));
    assert_eq!(partition.offset_for_timestamp(1_001).unwrap(), Some(4));
    assert_eq!(partition.offset_for_timestamp(1_037).unwrap(), Some(148));
    assert_eq!(partition.offset_for_timestamp(1_049).unwrap(), Some(196));
    assert_eq!(partition.offset_for_timestamp(1_050).unwrap(), None);
    log.close().await;
    drop(log);
    // The same after a reopen, with the time index read from disk.
    let log = open(dir.path());
    let partition = log.stream("s").unwrap();
    assert_eq!(partition.partition(0).unwrap().offset_for_timestamp(1_037).unwrap(), Some(148));
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_on_append_and_times_out_without() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_stream("s", stream_config(1, 1 << 20)).await.unwrap();
    let stream = log.stream("s").unwrap();
    assert!(!stream.partition(0).unwrap().wait_for(0, Duration::from_millis(50)).await);
    let waiter = {
        let stream = stream.clone();
        tokio::spawn(async move { stream.partition(0).unwrap().wait_for(0, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    stream.partition(0).unwrap().append(batch("x", 1, 5), Durability::Buffered).await.unwrap();
    assert!(waiter.await.unwrap());
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_record_appends_all_land_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_stream("s", stream_config(1, 1 << 20)).await.unwrap();
    let stream = log.stream("s").unwrap();
    let mut tasks = Vec::new();
    for writer in 0..64 {
        let stream = Arc::clone(&stream);
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for n in 0..20 {
                let appended = stream
                    .partition(0)
                    .unwrap()
                    .append(batch(&format!("w{writer}n{n}"), 1, 1), Durability::Sync)
                    .await
                    .unwrap();
                offsets.push(appended.base_offset);
            }
            offsets
        }));
    }
    let mut offsets = Vec::new();
    for task in tasks {
        offsets.extend(task.await.unwrap());
    }
    offsets.sort_unstable();
    assert_eq!(offsets, (0..1280).collect::<Vec<u64>>());
    assert_eq!(read_all(&log, "s").unwrap().len(), 1280);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    log.create_stream("a", stream_config(3, 1 << 20)).await.unwrap();
    assert!(matches!(log.create_stream("a", stream_config(1, 1 << 20)).await, Err(LogError::StreamExists(_))));
    assert!(matches!(
        log.create_stream("a/b", stream_config(1, 1 << 20)).await,
        Err(LogError::InvalidStreamName { .. })
    ));
    assert!(matches!(log.create_stream("z", stream_config(0, 1 << 20)).await, Err(LogError::InvalidConfig(_))));
    log.create_stream("b", stream_config(1, 1 << 20)).await.unwrap();
    fill(&log, "b", 2, 2).await;
    log.groups().commit("g", "b", &[(0, 2)], strom_log::CommitMode::Forward).unwrap();
    log.delete_stream("b").await.unwrap();
    assert_eq!(log.streams().iter().map(|s| s.name.clone()).collect::<Vec<_>>(), ["a"]);
    assert!(log.groups().all().is_empty(), "a deleted stream's offsets go with it");
    assert!(!dir.path().join("streams/b").exists());
    log.close().await;
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.stream("a").unwrap().partitions().len(), 3);
    assert!(log.stream("b").is_err());
    log.close().await;
}
