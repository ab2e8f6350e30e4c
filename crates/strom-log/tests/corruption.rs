//! Bits flipped inside a sealed segment: reads of that range fail with `CorruptRecords`,
//! nothing is truncated, and the rest of the partition stays readable and writable.
mod common;

use common::*;
use strom_log::{Durability, LogError};

async fn damaged_log(dir: &std::path::Path) -> (std::path::PathBuf, u64, Vec<String>) {
    let log = open(dir);
    log.create_stream("s", stream_config(1, 4096)).await.unwrap();
    let values = fill(&log, "s", 60, 5).await;
    log.close().await;
    let first = dir.join("streams/s/0/00000000000000000000.log");
    let size = std::fs::metadata(&first).unwrap().len();
    let mut bytes = std::fs::read(&first).unwrap();
    // A byte in the records of a batch in the middle of the first (sealed) segment.
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0b0100_0000;
    std::fs::write(&first, &bytes).unwrap();
    (first, size, values)
}

fn check_damage_is_refused_not_cut(log: &strom_log::Log, first: &std::path::Path, size: u64, values: &[String]) {
    let stream = log.stream("s").unwrap();
    let partition = stream.partition(0).unwrap();
    let error = read_all(log, "s").unwrap_err();
    let LogError::CorruptRecords { offset, segment, .. } = error else {
        panic!("expected CorruptRecords, got {error}")
    };
    assert_eq!(segment, 0);
    assert!(offset > 0 && offset < 100, "the damage is inside the first segment: offset {offset}");
    // The same range keeps failing; it is neither served nor cut away.
    assert!(matches!(partition.read(offset, 10, 1000), Err(LogError::CorruptRecords { .. })));
    assert_eq!(std::fs::metadata(first).unwrap().len(), size);
    // Offsets before the damage and in later segments read fine.
    let before = partition.read_records(0, 1, 100).unwrap();
    assert_eq!(before.records.len(), 1);
    let later = partition.read_records(250, 50, 1 << 20).unwrap();
    let later_values: Vec<String> =
        later.records.iter().map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()).collect();
    assert_eq!(later_values, values[250..300]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (first, size, values) = damaged_log(dir.path()).await;
    let log = open(dir.path());
    check_damage_is_refused_not_cut(&log, &first, size, &values);
    let stream = log.stream("s").unwrap();
    let appended = stream.partition(0).unwrap().append(batch("more", 1, 1), Durability::Sync).await.unwrap();
    assert_eq!(appended.base_offset, 300, "appends go on");
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_with_a_full_recovery_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (first, size, values) = damaged_log(dir.path()).await;
    // Without the checkpoint recovery scans every segment, the damaged one included, and must
    // still not truncate it (it is not the tail).
    std::fs::remove_file(dir.path().join("streams/s/0/checkpoint.json")).unwrap();
    let log = open(dir.path());
    check_damage_is_refused_not_cut(&log, &first, size, &values);
    assert_eq!(log.stream("s").unwrap().partition(0).unwrap().log_end_offset(), 300);
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let values = {
        let log = open(dir.path());
        log.create_stream("s", stream_config(1, 4096)).await.unwrap();
        let values = fill(&log, "s", 60, 5).await;
        log.close().await;
        values
    };
    let partition_dir = dir.path().join("streams/s/0");
    for entry in std::fs::read_dir(&partition_dir).unwrap() {
        let path = entry.unwrap().path();
        match path.extension().and_then(|e| e.to_str()) {
            Some("index") => std::fs::write(&path, [9, 9, 9]).unwrap(),
            Some("timeindex") => std::fs::remove_file(&path).unwrap(),
            _ => {}
        }
    }
    let log = open(dir.path());
    assert_eq!(read_all(&log, "s").unwrap(), values);
    assert_eq!(log.stream("s").unwrap().partition(0).unwrap().offset_for_timestamp(1_030).unwrap(), Some(150));
    log.close().await;
}

/// A bit flipped in synced data of the active segment (below the checkpoint) is not a torn
/// tail: nothing is cut, the batches before it read fine, the damaged range is refused, and
/// the partition takes no appends (they would reuse the offsets of the records after it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_synced_data_of_the_active_segment_is_not_cut() {
    let dir = tempfile::tempdir().unwrap();
    let values = {
        let log = open(dir.path());
        log.create_stream("s", stream_config(1, 1 << 20)).await.unwrap();
        let values = fill(&log, "s", 20, 5).await;
        log.close().await;
        values
    };
    let segment = dir.path().join("streams/s/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let size = bytes.len() as u64;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&segment, &bytes).unwrap();
    // As after a kill following a periodic checkpoint: it says how far data was synced, and
    // that the segment was not closed cleanly, so recovery scans it.
    let checkpoint_path = dir.path().join("streams/s/0/checkpoint.json");
    let mut checkpoint: serde_json::Value = serde_json::from_slice(&std::fs::read(&checkpoint_path).unwrap()).unwrap();
    checkpoint["clean"] = serde_json::Value::Bool(false);
    std::fs::write(&checkpoint_path, serde_json::to_vec(&checkpoint).unwrap()).unwrap();
    let log = open(dir.path());
    let stream = log.stream("s").unwrap();
    let partition = stream.partition(0).unwrap();
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), size, "nothing was cut");
    assert!(partition.poisoned().is_some_and(|cause| cause.contains("damaged")), "{:?}", partition.status());
    let error = read_all(&log, "s").unwrap_err();
    assert!(matches!(error, LogError::CorruptRecords { .. }), "{error}");
    let first = partition.read_records(0, 5, 1 << 20).unwrap();
    assert_eq!(first.records.len(), 5);
    assert_eq!(String::from_utf8(first.records[0].value.clone().unwrap().to_vec()).unwrap(), values[0]);
    assert!(matches!(partition.append(batch("x", 1, 1), Durability::Sync).await, Err(LogError::Poisoned { .. })));
    log.close().await;
}

/// The base offset is outside the CRC: a flipped bit there must not serve records at wrong
/// offsets nor an empty page short of the log end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_base_offset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path());
        log.create_stream("s", stream_config(1, 4096)).await.unwrap();
        fill(&log, "s", 60, 5).await;
        log.close().await;
    }
    let first = dir.path().join("streams/s/0/00000000000000000000.log");
    let bytes = std::fs::read(&first).unwrap();
    let third_batch = {
        let one = strom_log::BatchHeader::parse(&bytes).unwrap().size_bytes;
        one + strom_log::BatchHeader::parse(&bytes[one..]).unwrap().size_bytes
    };
    for (flip, bit) in [(0usize, 0x40u8), (7, 0x02)] {
        let mut damaged = bytes.clone();
        damaged[third_batch + flip] ^= bit;
        std::fs::write(&first, &damaged).unwrap();
        let log = open(dir.path());
        let partition = log.stream("s").unwrap();
        let partition = partition.partition(0).unwrap();
        let error = partition.read(10, 100, 1 << 20).unwrap_err();
        assert!(matches!(error, LogError::CorruptRecords { offset: 10, .. }), "byte {flip}: {error}");
        let read = partition.read_records(0, 100, 1 << 20).unwrap();
        assert_eq!(read.records.iter().map(|r| r.offset).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
        log.close().await;
        drop(log);
    }
    std::fs::write(&first, &bytes).unwrap();
}
