//! `cargo bench -p strom-log --bench compression`: what taking a Kafka producer's compressed
//! batch costs the listener, per codec: the batch decompressed (`decompress_batch`) and
//! taken (`EncodedBatch::from_client`: CRC and every record walked), on one core, against the
//! same batches sent uncompressed.
//!
//! Input: the shared shop workload (`../shared/workload/shop_events.py`), one event per
//! record keyed by user, in batches of STROM_BENCH_BATCH_RECORDS (default 500) records;
//! STROM_BENCH_EVENTS events (default 200,000), seed 7.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use strom_log::EncodedBatch;
use strom_log::compression::{DECOMPRESSED_BYTES_MAX, GZIP, LZ4, SNAPPY, ZSTD, compress_batch, decompress_batch};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let events = env_u64("STROM_BENCH_EVENTS", 200_000);
    let per_batch = env_u64("STROM_BENCH_BATCH_RECORDS", 500) as usize;
    let generator = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/workload/shop_events.py");
    let output = std::process::Command::new("python3")
        .args([generator, "--events", &events.to_string(), "--seed", "7"])
        .output()
        .expect("python3 runs the shared workload generator");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&[u8]> = output.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()).collect();
    let records: Vec<strom_log::RecordIn> = lines
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_slice(line).unwrap();
            let user = event["userId"].as_str().or(event["anonymousId"].as_str()).unwrap_or("-").to_string();
            strom_log::RecordIn {
                key: Some(Bytes::from(user)),
                value: Some(Bytes::copy_from_slice(line)),
                timestamp_ms: 1_795_334_400_000,
                headers: Vec::new(),
            }
        })
        .collect();
    let plain: Vec<Bytes> =
        records.chunks(per_batch).map(|chunk| EncodedBatch::encode(chunk).unwrap().into_bytes()).collect();
    let plain_bytes: usize = plain.iter().map(Bytes::len).sum();
    println!(
        "{} shop events ({:.0} B each on average), {} batches of {per_batch}, {:.1} MB uncompressed",
        records.len(),
        plain_bytes as f64 / records.len() as f64,
        plain.len(),
        plain_bytes as f64 / 1e6
    );

    // Uncompressed: what every produce costs already.
    let started = Instant::now();
    for batch in &plain {
        EncodedBatch::from_client(BytesMut::from(&batch[..])).unwrap();
    }
    report("none", records.len(), plain_bytes, plain_bytes, started.elapsed().as_secs_f64());
    for (name, codec) in [("gzip", GZIP), ("snappy", SNAPPY), ("lz4", LZ4), ("zstd", ZSTD)] {
        let compressed: Vec<BytesMut> = plain.iter().map(|batch| compress_batch(batch, codec).unwrap()).collect();
        let sent: usize = compressed.iter().map(BytesMut::len).sum();
        let started = Instant::now();
        for batch in &compressed {
            let decompressed = decompress_batch(batch, DECOMPRESSED_BYTES_MAX).unwrap().unwrap();
            EncodedBatch::from_client(decompressed).unwrap();
        }
        report(name, records.len(), sent, plain_bytes, started.elapsed().as_secs_f64());
    }
}

fn report(codec: &str, records: usize, sent: usize, plain: usize, seconds: f64) {
    println!(
        "{codec:>6}: {:>6.1} MB sent ({:.2}x smaller), taken at {:>9.0} records/s, {:>6.0} MB/s of records on one core",
        sent as f64 / 1e6,
        plain as f64 / sent as f64,
        records as f64 / seconds,
        plain as f64 / seconds / 1e6
    );
}
