#![allow(dead_code)]
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strom_log::{Clock, Durability, EncodedBatch, Log, LogConfig, RecordIn, StreamConfig};

pub fn config(dir: &Path, clock: Arc<dyn Clock>) -> LogConfig {
    LogConfig { clock, retention_check_interval: Duration::from_secs(3600), ..LogConfig::new(dir) }
}

pub fn open(dir: &Path) -> Arc<Log> {
    Log::open(config(dir, Arc::new(strom_log::SystemClock))).expect("log opens")
}

pub fn stream_config(partitions: u32, segment_bytes: u64) -> StreamConfig {
    StreamConfig { partitions, segment_bytes, retention_ms: None, ..StreamConfig::default() }
}

/// A batch of `count` records whose values say `tag` and their index.
pub fn batch(tag: &str, count: usize, timestamp_ms: i64) -> EncodedBatch {
    let records: Vec<RecordIn> = (0..count)
        .map(|i| RecordIn {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("{tag}-{i}-{}", "x".repeat(40)))),
            timestamp_ms,
            headers: Vec::new(),
        })
        .collect();
    EncodedBatch::encode(&records).expect("encodes")
}

/// Appends `batches` batches of `per_batch` records (Sync), returning every value in order.
pub async fn fill(log: &Log, stream: &str, batches: usize, per_batch: usize) -> Vec<String> {
    let stream = log.stream(stream).unwrap();
    let partition = stream.partition(0).unwrap();
    let mut values = Vec::new();
    for b in 0..batches {
        let tag = format!("b{b}");
        partition.append(batch(&tag, per_batch, 1_000 + b as i64), Durability::Sync).await.unwrap();
        values.extend((0..per_batch).map(|i| format!("{tag}-{i}-{}", "x".repeat(40))));
    }
    values
}

/// Every value in partition 0, read from offset 0 in small pages.
pub fn read_all(log: &Log, stream: &str) -> Result<Vec<String>, strom_log::LogError> {
    let stream = log.stream(stream).unwrap();
    let partition = stream.partition(0).unwrap();
    let mut values = Vec::new();
    let mut from = partition.log_start_offset();
    loop {
        let read = partition.read_records(from, 7, 300)?;
        if read.records.is_empty() {
            return Ok(values);
        }
        for (i, record) in read.records.iter().enumerate() {
            assert_eq!(record.offset, from + i as u64, "offsets are dense");
            values.push(String::from_utf8(record.value.clone().unwrap().to_vec()).unwrap());
        }
        from = read.next_offset;
    }
}
