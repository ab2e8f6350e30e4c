//! The dedup index alone: memory per remembered id, and the cost of a check and a commit.
//! `cargo bench -p strom-ingest --bench dedup` (STROM_BENCH_IDS sets how many ids; default
//! 2,000,000).

use std::time::Instant;

use strom_ingest::dedup::{self, Check, Dedup};

fn main() {
    let ids: u64 = std::env::var("STROM_BENCH_IDS").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000_000);
    let dir = tempfile::tempdir().expect("a temp dir");
    let window_ms = 24 * 3_600_000u64;
    let (index, _) = Dedup::open(dir.path(), window_ms, usize::MAX, 0).expect("open");
    index.recovered(Vec::new(), Vec::new());
    let header = |i: u64| dedup::header_value("web", &format!("node-next-1732363200000-{i:016x}-4b2c-9f1e"));
    // Spread over 24 h of receive times, as a day of traffic would be.
    let started = Instant::now();
    let mut samples = Vec::new();
    for i in 0..ids {
        let Check::New(reservation) = index.check(header(i).as_bytes()) else { panic!("id {i} seen twice") };
        let now_ms = (i * window_ms / ids) as i64;
        index.commit(reservation, "events", (i % 4) as u32, i / 4, now_ms);
        if (i + 1) % (ids / 20).max(1) == 0 {
            let (count, bytes) = index.size();
            samples.push(bytes as f64 / count as f64);
        }
    }
    let insert_ns = started.elapsed().as_nanos() as f64 / ids as f64;
    let (count, bytes) = index.size();
    let started = Instant::now();
    let lookups = ids.min(1_000_000);
    let mut hits = 0u64;
    for i in 0..lookups {
        if matches!(index.check(header(i).as_bytes()), Check::Candidate(..)) {
            hits += 1;
        }
    }
    let lookup_ns = started.elapsed().as_nanos() as f64 / lookups as f64;
    assert_eq!(hits, lookups, "every committed id is found");
    let min = samples.iter().copied().fold(f64::MAX, f64::min);
    let max = samples.iter().copied().fold(0.0, f64::max);
    println!(
        "dedup index: {count} ids in {:.1} MB of tables = {:.1} bytes/id (over the run: {min:.1} to {max:.1}; bound {})",
        bytes as f64 / 1e6,
        bytes as f64 / count as f64,
        dedup::BYTES_PER_ID_MAX
    );
    println!(
        "check + commit of a new id: {insert_ns:.0} ns (id formatting included); check of a remembered id: {lookup_ns:.0} ns"
    );
}
