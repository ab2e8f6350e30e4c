//! The active segment cut at every byte inside its last batches: recovery keeps exactly the
//! complete batches and appends continue at the next offset.
mod common;

use common::*;
use strom_log::{BatchHeader, Durability};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_keeps_exactly_the_complete_batches() {
    let dir = tempfile::tempdir().unwrap();
    let values = {
        let log = open(dir.path());
        log.create_stream("s", stream_config(1, 1 << 20)).await.unwrap();
        let values = fill(&log, "s", 10, 3).await;
        log.close().await;
        values
    };
    let segment = dir.path().join("streams/s/0/00000000000000000000.log");
    let original = std::fs::read(&segment).unwrap();
    // Batch boundaries, from the headers.
    let mut ends = Vec::new();
    let mut at = 0;
    while at < original.len() {
        let header = BatchHeader::parse(&original[at..]).unwrap();
        at += header.size_bytes;
        ends.push(at);
    }
    assert_eq!(ends.len(), 10);
    let first_cut = ends[ends.len() - 4];
    let checkpoint = dir.path().join("streams/s/0/checkpoint.json");
    for cut in first_cut..original.len() {
        std::fs::write(&segment, &original[..cut]).unwrap();
        // As after a crash with no checkpoint covering the tail (a clean close's checkpoint
        // would make any damage below its position damage to synced data; see corruption.rs).
        let _ = std::fs::remove_file(&checkpoint);
        let log = open(dir.path());
        let complete = ends.iter().filter(|&&end| end <= cut).count();
        let boundary = if complete == 0 { 0 } else { ends[complete - 1] };
        let size = log.stream("s").unwrap().partition(0).unwrap().status().size_bytes as usize;
        assert_eq!(size, boundary, "truncated to the last complete batch, cut at {cut}");
        let read = read_all(&log, "s").unwrap();
        assert_eq!(read, values[..complete * 3], "cut at byte {cut}");
        let partition = log.stream("s").unwrap();
        let partition = partition.partition(0).unwrap();
        assert_eq!(partition.log_end_offset(), complete as u64 * 3, "cut at byte {cut}");
        let appended = partition.append(batch("after", 1, 9), Durability::Sync).await.unwrap();
        assert_eq!(appended.base_offset, complete as u64 * 3);
        log.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_last_batch_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let values = {
        let log = open(dir.path());
        log.create_stream("s", stream_config(1, 1 << 20)).await.unwrap();
        let values = fill(&log, "s", 3, 2).await;
        log.close().await;
        values
    };
    let segment = dir.path().join("streams/s/0/00000000000000000000.log");
    let size = std::fs::metadata(&segment).unwrap().len();
    // Zeros, as a file system may leave after a crash extended the file.
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend(std::iter::repeat_n(0u8, 4096));
    std::fs::write(&segment, &bytes).unwrap();
    let log = open(dir.path());
    assert_eq!(read_all(&log, "s").unwrap(), values);
    assert_eq!(log.stream("s").unwrap().partition(0).unwrap().status().size_bytes, size);
    log.close().await;
    // A clean close leaves the file ending at its last batch.
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), size);
}
