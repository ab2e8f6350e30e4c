//! `cargo bench -p strom-log --bench log`: the embedded log's figures for docs/BENCHMARKS.md.
//!
//! Environment: STROM_BENCH_BYTES (bytes appended in the throughput run, default 1 GiB),
//! STROM_BENCH_OPEN_GIB (size of the data dir for the open-time run, default 10; 0 skips it),
//! STROM_BENCH_DIR (where data goes; default: Cargo's target tmp dir, on the same disk).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_log::{Durability, EncodedBatch, Log, LogConfig, RecordIn, StreamConfig};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn batch(records: usize, record_bytes: usize) -> EncodedBatch {
    let value = Bytes::from(vec![b'x'; record_bytes]);
    let records: Vec<RecordIn> = (0..records)
        .map(|i| RecordIn {
            key: Some(Bytes::from(format!("user-{i}"))),
            value: Some(value.clone()),
            timestamp_ms: 1_700_000_000_000,
            headers: Vec::new(),
        })
        .collect();
    EncodedBatch::encode(&records).unwrap()
}

fn stream_config() -> StreamConfig {
    StreamConfig { partitions: 1, retention_ms: None, segment_bytes: 1 << 30, ..StreamConfig::default() }
}

fn config(dir: &std::path::Path) -> LogConfig {
    LogConfig { retention_check_interval: Duration::from_secs(3600), ..LogConfig::new(dir) }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::var("STROM_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    std::fs::create_dir_all(&base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        append_throughput(&base).await;
        group_commit(&base).await;
    });
    open_time(&base, &runtime);
}

/// 1 KiB records in batches of 100 with Sync durability, from 1 and from 4 concurrent
/// appenders; then a cold read of everything back (page cache, CRC checked).
async fn append_throughput(base: &str) {
    let total_bytes = env_u64("STROM_BENCH_BYTES", 1 << 30);
    let template = batch(100, 1024);
    let batch_bytes = template.size_bytes() as u64;
    let batches = total_bytes / batch_bytes;
    for appenders in [1u64, 4, 16] {
        let dir = tempfile::tempdir_in(base).unwrap();
        let log = Log::open(config(dir.path())).unwrap();
        log.create_stream("bench", stream_config()).await.unwrap();
        let stream = log.stream("bench").unwrap();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..appenders {
            let (stream, template) = (stream.clone(), template.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..batches / appenders {
                    stream.partition(0).unwrap().append(template.clone(), Durability::Sync).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let elapsed = started.elapsed().as_secs_f64();
        let partition = stream.partition(0).unwrap();
        let written = partition.status().size_bytes as f64;
        let (fsyncs, records) = partition.sync_stats();
        println!(
            "append 1KiB x100 Sync, {appenders} appender(s): {:.0} MB/s, {:.0} records/s, {fsyncs} fsyncs ({:.0} records/fsync)",
            written / elapsed / 1e6,
            records as f64 / elapsed,
            records as f64 / fsyncs.max(1) as f64
        );
        if appenders == 16 {
            let started = Instant::now();
            let mut from = 0;
            let mut bytes = 0usize;
            let end = partition.log_end_offset();
            while from < end {
                let read = partition.read(from, usize::MAX, 4 << 20).unwrap();
                bytes += read.batches.iter().map(|b| b.len()).sum::<usize>();
                let last = read.batches.last().unwrap();
                from = strom_log::BatchHeader::parse(last).unwrap().next_offset();
            }
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "catch-up read from page cache (CRC checked): {:.2} GB/s ({bytes} bytes)",
                bytes as f64 / elapsed / 1e9
            );
        }
        log.close().await;
    }
}

/// 64 writers each appending single records with Sync: how many records share an fsync.
async fn group_commit(base: &str) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let log = Log::open(config(dir.path())).unwrap();
    log.create_stream("bench", stream_config()).await.unwrap();
    let stream = log.stream("bench").unwrap();
    let template = batch(1, 1024);
    let per_writer = env_u64("STROM_BENCH_GROUP_APPENDS", 1000);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (stream, template) = (stream.clone(), template.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_writer as usize);
            for _ in 0..per_writer {
                let sent = Instant::now();
                stream.partition(0).unwrap().append(template.clone(), Durability::Sync).await.unwrap();
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let p99 = latencies[latencies.len() * 99 / 100];
    let (fsyncs, records) = stream.partition(0).unwrap().sync_stats();
    println!(
        "64 concurrent single-record Sync appenders: {:.0} records/s, {:.1} records/fsync ({fsyncs} fsyncs), p99 {:.2} ms",
        records as f64 / elapsed,
        records as f64 / fsyncs.max(1) as f64,
        p99.as_secs_f64() * 1e3
    );
    log.close().await;
}

/// Opening a data dir of STROM_BENCH_OPEN_GIB GiB after a clean shutdown.
fn open_time(base: &str, runtime: &tokio::runtime::Runtime) {
    let gib = env_u64("STROM_BENCH_OPEN_GIB", 10);
    if gib == 0 {
        return;
    }
    let dir = tempfile::tempdir_in(base).unwrap();
    runtime.block_on(async {
        let log = Log::open(config(dir.path())).unwrap();
        let config = StreamConfig { partitions: 4, ..stream_config() };
        log.create_stream("big", config).await.unwrap();
        let stream = log.stream("big").unwrap();
        let template = batch(1000, 1024);
        let batches = (gib << 30) / template.size_bytes() as u64;
        let mut tasks = Vec::new();
        for p in 0..4u32 {
            let (stream, template) = (stream.clone(), template.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..batches / 4 {
                    stream.partition(p).unwrap().append(template.clone(), Durability::Buffered).await.unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        log.close().await;
    });
    let started = Instant::now();
    let log = runtime.block_on(async { Log::open(config(dir.path())).unwrap() });
    let elapsed = started.elapsed();
    let stream = log.stream("big").unwrap();
    let bytes: u64 = stream.partitions().iter().map(|p| p.status().size_bytes).sum();
    println!(
        "open after clean shutdown: {:.1} ms for {:.2} GiB in {} segments",
        elapsed.as_secs_f64() * 1e3,
        bytes as f64 / (1u64 << 30) as f64,
        stream.partitions().iter().map(|p| p.status().segments).sum::<usize>()
    );
    runtime.block_on(log.close());
    drop(Arc::clone(&log));
}
