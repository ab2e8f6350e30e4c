//! The lake sink's throughput and the lake's size, then a query's time, on shop events.
//!
//!     python3 ../shared/workload/shop_events.py --events 1000000 \
//!       | taskset -c 0 cargo bench -p strom-lake --bench sink
//!
//! JSON lines on stdin are appended to a one-partition stream of a real log in chunks of
//! `CHUNK_EVENTS`; after each chunk the sink (`PartitionSink`, the server's code) lands what
//! was appended and segments beyond the retention bound are deleted (so that tens of
//! millions of events need about 1 GiB of log). Only the time spent in the sink counts: reading the log, parsing, writing
//! Parquet (zstd), publishing, committing. Events are typed with the repository's catalog.
//!
//! Then `STROM_LAKE_BENCH_QUERY` (default: events per name on the workload's first day) runs
//! `STROM_LAKE_BENCH_RUNS` times (default 5) with DataFusion over the files.
//! `STROM_LAKE_BENCH_OUT`: keep the lake there (default: a temporary directory).

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_catalog::{Catalog, CatalogConfig, Compatibility};
use strom_lake::{Lake, LakeConfig};
use strom_log::{Durability, EncodedBatch, Log, LogConfig, RecordIn, StreamConfig};

const CHUNK_EVENTS: usize = 200_000;
const BATCH_EVENTS: usize = 1000;
const QUERY_DEFAULT: &str =
    "SELECT event, count(*) AS n FROM events WHERE date = '2026-11-22' GROUP BY event ORDER BY n DESC";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(run());
}

async fn run() {
    let scratch = tempfile::tempdir().unwrap();
    let out = std::env::var("STROM_LAKE_BENCH_OUT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| scratch.path().join("lake"));
    let log = Log::open(LogConfig::new(scratch.path().join("data"))).unwrap();
    let stream_config = StreamConfig {
        partitions: 1,
        segment_bytes: 64 * 1024 * 1024,
        // Retention deletes landed segments between chunks, but never the range the sink has
        // read and not flushed yet (its second pass re-reads it): a flush is cut at the
        // latest after 8 hours of events (about 576,000 of this workload, 320 MB), so 1 GiB
        // always holds it.
        retention_bytes: Some(1024 * 1024 * 1024),
        ..StreamConfig::default()
    };
    log.create_stream("events", stream_config).await.unwrap();
    let catalog = Catalog::open(CatalogConfig {
        dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog"),
        store_dir: scratch.path().join("data/catalog"),
        default_compatibility: Compatibility::Backward,
        pii_secret: Some(b"0123456789abcdef".to_vec()),
    })
    .unwrap();
    // `STROM_LAKE_BENCH_ZSTD_LEVEL` measures another compression level (default: the config's).
    let zstd_level = std::env::var("STROM_LAKE_BENCH_ZSTD_LEVEL").ok().and_then(|l| l.parse().ok());
    let defaults = LakeConfig::default();
    let config = LakeConfig {
        enabled: true,
        url: out.display().to_string(),
        roll_age_ms: 3_600_000,
        zstd_level: zstd_level.unwrap_or(defaults.zstd_level),
        ..defaults
    };
    let lake = Lake::open(config, &scratch.path().join("data"), log.clone(), Some(catalog), None).unwrap();
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    let partition = || log.stream("events").unwrap();
    let (mut events, mut json_bytes, mut sink_time) = (0u64, 0u64, Duration::ZERO);
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let started = Instant::now();
    loop {
        let mut chunk: Vec<Bytes> = Vec::with_capacity(CHUNK_EVENTS);
        for line in lines.by_ref() {
            let line = line.unwrap();
            json_bytes += line.len() as u64 + 1;
            chunk.push(Bytes::from(line));
            if chunk.len() == CHUNK_EVENTS {
                break;
            }
        }
        if chunk.is_empty() {
            break;
        }
        events += chunk.len() as u64;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let batches = chunk.len().div_ceil(BATCH_EVENTS);
        for (index, batch) in chunk.chunks(BATCH_EVENTS).enumerate() {
            let records: Vec<RecordIn> = batch
                .iter()
                .map(|v| RecordIn { value: Some(v.clone()), timestamp_ms: now, ..RecordIn::default() })
                .collect();
            let encoded = EncodedBatch::encode(&records).unwrap();
            // The chunk's last append is synced, as the server's appends are before the lake
            // sees them: the sink's own fsyncs then do not wait for the log's writeback.
            let durability = if index + 1 == batches { Durability::Sync } else { Durability::Buffered };
            partition().partition(0).unwrap().append(encoded, durability).await.unwrap();
        }
        let landing = Instant::now();
        while sink.step().await.unwrap() {}
        sink_time += landing.elapsed();
        log.enforce_retention();
        eprintln!("{events} events, sink {:.0} events/s", events as f64 / sink_time.as_secs_f64());
    }
    let landing = Instant::now();
    sink.flush().await.unwrap();
    sink_time += landing.elapsed();
    let (files, parquet_bytes) = walk(&out.join("events"));
    println!("events                {events}");
    println!(
        "sink time             {:.2} s (of {:.1} s wall, the rest is the generator and appends)",
        sink_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("sink throughput       {:.0} events/s", events as f64 / sink_time.as_secs_f64());
    println!("JSON lines            {json_bytes} bytes ({:.1} per event)", json_bytes as f64 / events.max(1) as f64);
    println!(
        "Parquet               {parquet_bytes} bytes in {files} files ({:.1} per event)",
        parquet_bytes as f64 / events.max(1) as f64
    );
    println!("JSON / Parquet        {:.2}x", json_bytes as f64 / parquet_bytes.max(1) as f64);
    let sql = std::env::var("STROM_LAKE_BENCH_QUERY").unwrap_or_else(|_| QUERY_DEFAULT.to_string());
    let runs: usize = std::env::var("STROM_LAKE_BENCH_RUNS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    for sql in [sql.as_str(), "SELECT event, count(*) AS n FROM events GROUP BY event ORDER BY n DESC"] {
        let mut times = Vec::new();
        let mut first = None;
        for _ in 0..runs {
            let answer = lake.query(sql, 1000).await.unwrap();
            times.push(answer.elapsed.as_secs_f64() * 1000.0);
            first.get_or_insert(answer);
        }
        println!("query                 {sql}");
        println!("  DataFusion ms       {}", times.iter().map(|t| format!("{t:.0}")).collect::<Vec<_>>().join(" "));
        if let Some(answer) = first {
            let rows = String::from_utf8(answer.to_csv().unwrap()).unwrap();
            println!("  answer              {}", rows.lines().skip(1).collect::<Vec<_>>().join("; "));
        }
    }
}

fn walk(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let (f, b) = walk(&path);
            files += f;
            bytes += b;
        } else {
            files += 1;
            bytes += path.metadata().unwrap().len();
        }
    }
    (files, bytes)
}
