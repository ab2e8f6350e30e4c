//! The lake's crash test: SIGKILL the real server while its lake sink is writing files (every
//! 50 ms, several hours per flush), restart it, and at the end check that the lake's files
//! hold every record of the stream exactly once, each as stored, and that no partial file
//! was ever visible.
//!
//! After every kill, before the restart, every `.parquet` file below the lake's tables must
//! be complete (its footer read, its rows match its name); files being written live in the
//! spool (`_strom_spool`), never under a table.
//!
//! `STROM_LAKE_CRASH_CYCLES` (default 20) sets the cycles, `STROM_CRASH_SEED` the seed.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Int32Type, Int64Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

mod common;
use common::TestServer;

const PARTITIONS: u32 = 2;
const WRITERS: u64 = 4;
const CYCLES_DEFAULT: u32 = 20;
const KILL_DELAY_MS_MIN: u64 = 100;
const KILL_DELAY_MS_MAX: u64 = 700;
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long the last restart may take to land everything (a bound on waiting, not a
/// performance assertion: landing a few thousand records takes well under a second).
const CATCH_UP_TIMEOUT_MS: u64 = 120_000;
/// 2026-11-22T08:00:00Z: events spread over five hours from here.
const BASE_MS: i64 = 1_795_334_400_000;

fn config(lake: &Path) -> String {
    format!(
        "[log]\ncheckpoint_interval_ms = 50\n[lake]\nenabled = true\nurl = \"{}\"\nroll_age_ms = 50\nroll_bytes = 65536\n",
        lake.display()
    )
}

fn event(writer: u64, seq: u64) -> Value {
    let at = BASE_MS + (seq % 5) as i64 * 3_600_000 + seq as i64;
    let time = chrono_free_iso(at);
    json!({"type": "track", "event": "Tick", "userId": format!("u{}", seq % 13), "timestamp": time,
           "properties": {"writer": writer, "seq": seq}})
}

/// RFC 3339 with milliseconds, without a date library: the test's times are all on
/// 2026-11-22 (hours 08 to 12).
fn chrono_free_iso(ms: i64) -> String {
    let of_day = (ms - (BASE_MS - 8 * 3_600_000)).rem_euclid(86_400_000);
    let (h, m, s, milli) = (of_day / 3_600_000, of_day / 60_000 % 60, of_day / 1000 % 60, of_day % 1000);
    format!("2026-11-22T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Posts events in threes to `url`/events (a stream's URL) until `killed` is set.
async fn produce_until_killed(
    http: reqwest::Client,
    url: String,
    writer: u64,
    seq: Arc<AtomicU64>,
    killed: Arc<AtomicBool>,
) {
    loop {
        if killed.load(Ordering::SeqCst) {
            return;
        }
        let first = seq.fetch_add(3, Ordering::SeqCst);
        let events: Vec<Value> = (first..first + 3).map(|s| event(writer, s)).collect();
        let sent = http
            .post(format!("{url}/events"))
            .json(&events)
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            _ if killed.load(Ordering::SeqCst) => return,
            Ok(response) => panic!("writer {writer}: {} before the kill", response.status()),
            Err(error) => panic!("writer {writer}: {error} before the kill"),
        }
    }
}

/// Every data file under the lake's tables: (path, partition, offsets, event_json values).
fn read_lake(root: &Path) -> Vec<(String, u32, Vec<u64>, Vec<String>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                // The lake's own directories: the spool and the flush markers.
                if !path.ends_with("_strom_spool") && !path.ends_with("_strom_markers") {
                    stack.push(path);
                }
                continue;
            }
            let name = path.file_name().unwrap().to_str().unwrap().to_string();
            assert!(name.ends_with(".parquet"), "only data files under the tables: {}", path.display());
            let file = std::fs::File::open(&path).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap_or_else(|e| panic!("{} is not a complete Parquet file: {e}", path.display()))
                .build()
                .unwrap();
            let (mut partitions, mut offsets, mut values) = (Vec::new(), Vec::new(), Vec::new());
            for batch in reader {
                let batch = batch.unwrap();
                partitions.extend(
                    batch
                        .column_by_name("log_partition")
                        .unwrap()
                        .as_primitive::<Int32Type>()
                        .values()
                        .iter()
                        .map(|p| *p as u32),
                );
                offsets.extend(
                    batch
                        .column_by_name("log_offset")
                        .unwrap()
                        .as_primitive::<Int64Type>()
                        .values()
                        .iter()
                        .map(|o| *o as u64),
                );
                let json = batch.column_by_name("event_json").unwrap().as_string::<i32>().clone();
                values.extend((0..json.len()).map(|i| json.value(i).to_string()));
            }
            let stem = name.trim_end_matches(".parquet");
            let parts: Vec<u64> = stem.split('-').map(|p| p.parse().unwrap()).collect();
            assert_eq!(parts.len(), 3, "{name}");
            assert!(partitions.iter().all(|p| u64::from(*p) == parts[0]), "{name}: rows of another partition");
            assert_eq!(
                (offsets.first().copied(), offsets.last().copied()),
                (Some(parts[1]), Some(parts[2])),
                "{name}: rows and name disagree"
            );
            out.push((path.display().to_string(), parts[0] as u32, offsets, values));
        }
    }
    out
}

async fn read_log(http: &reqwest::Client, url: &str, stream: &str, partitions: u32) -> BTreeMap<(u32, u64), String> {
    let mut records = BTreeMap::new();
    for partition in 0..partitions {
        let mut offset = 0;
        loop {
            let page: Value = http
                .get(format!(
                    "{url}/v1/streams/{stream}/partitions/{partition}/events?offset={offset}&max_records=10000"
                ))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let events = page["events"].as_array().unwrap();
            if events.is_empty() {
                break;
            }
            for event in events {
                records.insert((partition, event["offset"].as_u64().unwrap()), event["value"].to_string());
            }
            offset = page["next_offset"].as_u64().unwrap();
        }
    }
    records
}

/// Every record of the log is in exactly one of the lake's files, as stored, and the files
/// hold nothing else.
fn assert_landed_once(
    files: &[(String, u32, Vec<u64>, Vec<String>)],
    records: &BTreeMap<(u32, u64), String>,
    seed: u64,
) {
    let mut landed: BTreeMap<(u32, u64), (String, String)> = BTreeMap::new();
    for (path, partition, offsets, values) in files {
        for (offset, value) in offsets.iter().zip(values) {
            if let Some((other, _)) = landed.insert((*partition, *offset), (path.clone(), value.clone())) {
                panic!("{partition}/{offset} is in {other} and in {path} (seed {seed})");
            }
        }
    }
    let missing: Vec<_> = records.keys().filter(|k| !landed.contains_key(k)).take(10).collect();
    assert!(missing.is_empty(), "never landed, e.g. {missing:?} (seed {seed})");
    assert_eq!(landed.len(), records.len(), "the lake holds records the log does not (seed {seed})");
    for (position, value) in records {
        let (path, stored) = &landed[position];
        let stored: Value = serde_json::from_str(stored).unwrap();
        let produced: Value = serde_json::from_str(value).unwrap();
        assert_eq!(stored, produced, "{position:?} in {path}");
    }
}

#[test]
fn every_record_lands_in_exactly_one_file_across_kills() {
    let cycles: u32 =
        std::env::var("STROM_LAKE_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(CYCLES_DEFAULT);
    let seed: u64 = std::env::var("STROM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("lake crash test: {cycles} cycles, STROM_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let lake = dir.path().join("lake");
    let log_path = dir.path().join("server.log");
    let config = config(&lake);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut server = TestServer::start(&data_dir, &log_path, &config);
    runtime.block_on(async {
        let created = http
            .post(format!("{}/v1/streams", server.url))
            .json(&json!({"name": "events", "partitions": PARTITIONS}))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
    });
    let sequences: Vec<Arc<AtomicU64>> = (0..WRITERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let mut files_seen = 0;
    for cycle in 0..cycles {
        let killed = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                runtime.spawn(produce_until_killed(
                    http.clone(),
                    format!("{}/v1/streams/events", server.url),
                    w,
                    sequences[w as usize].clone(),
                    killed.clone(),
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(KILL_DELAY_MS_MIN..=KILL_DELAY_MS_MAX)));
        killed.store(true, Ordering::SeqCst);
        server.kill();
        for writer in writers {
            runtime.block_on(writer).unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        }
        // What a reader sees while the server is down: only complete files.
        files_seen = read_lake(&lake.join("events")).len();
        server = TestServer::start(&data_dir, &log_path, &config);
    }
    // Let the restarted sink land everything, then compare.
    let deadline = Instant::now() + Duration::from_millis(CATCH_UP_TIMEOUT_MS);
    let records = runtime.block_on(async {
        loop {
            let offsets: Value = http
                .get(format!("{}/v1/groups/strom-lake/offsets", server.url))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let lags: Vec<u64> = offsets["streams"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|s| s["stream"] == "events")
                .flat_map(|s| s["partitions"].as_array().unwrap().iter().map(|p| p["lag"].as_u64().unwrap()))
                .collect();
            if lags.len() == PARTITIONS as usize && lags.iter().all(|lag| *lag == 0) {
                break;
            }
            assert!(Instant::now() < deadline, "the lake did not catch up: {offsets}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        read_log(&http, &server.url, "events", PARTITIONS).await
    });
    let files = read_lake(&lake.join("events"));
    assert_landed_once(&files, &records, seed);
    let server_log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let recovered = server_log.matches("finishing an interrupted lake flush").count();
    eprintln!(
        "lake crash test: {} records in {} files, each exactly once, over {cycles} kills ({files_seen} files at the \
         last kill; {recovered} interrupted flushes finished at restarts)",
        records.len(),
        files.len()
    );
}

const SHARED_PARTITIONS: u32 = 4;
const SHARED_CYCLES_DEFAULT: u32 = 8;

/// Two servers on one Kafka cluster (a third server's listener) land one stream into one
/// lake, dividing its partitions. One or the other is SIGKILLed while landing, many times,
/// and restarted; the survivor takes the dead one's partitions once its session expires
/// (2 s here), finishing from the lake's markers any flush the dead one left. At the end the
/// lake holds every record of the cluster's stream exactly once.
///
/// `STROM_SHARED_LAKE_CRASH_CYCLES` (default 8) sets the kills, `STROM_CRASH_SEED` the seed.
#[test]
fn two_servers_sharing_a_lake_land_every_record_once_across_kills() {
    let cycles: u32 = std::env::var("STROM_SHARED_LAKE_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(SHARED_CYCLES_DEFAULT);
    let seed: u64 = std::env::var("STROM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    eprintln!("shared lake crash test: {cycles} cycles, STROM_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let log_path = dir.path().join("servers.log");
    let broker = TestServer::start_broker(&dir.path().join("broker"), &log_path, "");
    let member_config = format!(
        "[log]\nbackend = \"kafka\"\n[log.kafka]\nbootstrap_servers = \"{}\"\ntopic_prefix = \"shared.\"\nlinger_ms = 1\n\
         properties = {{ \"session.timeout.ms\" = \"2000\" }}\n{}",
        broker.kafka.as_deref().unwrap(),
        config(&lake).replace("[log]\ncheckpoint_interval_ms = 50\n", "")
    );
    let data_dirs = [dir.path().join("a"), dir.path().join("b")];
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut members: Vec<TestServer> =
        data_dirs.iter().map(|data_dir| TestServer::start(data_dir, &log_path, &member_config)).collect();
    runtime.block_on(async {
        let created = http
            .post(format!("{}/v1/streams", members[0].url))
            .json(&json!({"name": "events", "partitions": SHARED_PARTITIONS}))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{}", created.status());
    });
    // The writers produce to the cluster itself (the broker's own HTTP API), which is never
    // killed: records keep arriving through every kill and hand-over.
    let stop = Arc::new(AtomicBool::new(false));
    let sequences: Vec<Arc<AtomicU64>> = (0..WRITERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let url = format!("{}/v1/streams/shared.events", broker.url);
            runtime.spawn(produce_until_killed(http.clone(), url, w, sequences[w as usize].clone(), stop.clone()))
        })
        .collect();
    for cycle in 0..cycles {
        std::thread::sleep(Duration::from_millis(rng.u64(KILL_DELAY_MS_MIN..=KILL_DELAY_MS_MAX * 2)));
        let victim = (cycle % 2) as usize;
        members[victim].kill();
        // What a reader sees with one landing server dead: only complete files.
        read_lake(&lake.join("events"));
        std::thread::sleep(Duration::from_millis(rng.u64(0..=KILL_DELAY_MS_MAX)));
        members[victim] = TestServer::start(&data_dirs[victim], &log_path, &member_config);
    }
    stop.store(true, Ordering::SeqCst);
    for writer in writers {
        runtime.block_on(writer).unwrap();
    }
    // Caught up once the lake holds as many rows as the cluster's stream has records (the
    // comparison below then checks they are the same ones, once each).
    let deadline = Instant::now() + Duration::from_millis(CATCH_UP_TIMEOUT_MS);
    let records = runtime.block_on(read_log(&http, &broker.url, "shared.events", SHARED_PARTITIONS));
    loop {
        let rows: usize = read_lake(&lake.join("events")).iter().map(|(_, _, offsets, _)| offsets.len()).sum();
        if rows >= records.len() {
            break;
        }
        assert!(Instant::now() < deadline, "the lake did not catch up: {rows} rows of {} records", records.len());
        std::thread::sleep(Duration::from_millis(200));
    }
    let files = read_lake(&lake.join("events"));
    assert_landed_once(&files, &records, seed);
    let logs = std::fs::read_to_string(&log_path).unwrap_or_default();
    eprintln!(
        "shared lake crash test: {} records in {} files, each exactly once, over {cycles} kills ({} interrupted \
         flushes finished, {} hand-overs)",
        records.len(),
        files.len(),
        logs.matches("finishing an interrupted lake flush").count(),
        logs.matches("partitions handed over").count()
    );
}
