//! The collector's crash test: SIGKILL the real server while SDK-like writers send tracking
//! batches, restart it, resend what was not acknowledged (as an SDK retries) and some of what
//! was (as an SDK retries after a lost answer), and check that every message is stored
//! exactly once.
//!
//! This is the dedup index's promise under crashes: after a kill, the index is rebuilt from
//! its files and the log, so a retry of anything the server wrote (acknowledged or not) is a
//! duplicate, and anything it did not write is written.
//!
//! `STROM_DEDUP_CRASH_CYCLES` (default 20) sets the cycles, `STROM_CRASH_SEED` the seed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

mod common;
use common::TestServer;

const WRITERS: u32 = 6;
const CYCLES_DEFAULT: u32 = 20;
const KILL_DELAY_MS_MIN: u64 = 50;
const KILL_DELAY_MS_MAX: u64 = 600;
const BATCH_MESSAGES_MAX: u64 = 5;
const REQUEST_TIMEOUT_MS: u64 = 10_000;
const WRITE_KEY: &str = "sk_crash_test_key";

/// The source from the config, dedup buckets of 2.5 s (the shortest window) filed every
/// 200 ms, so that kills land before, during and after bucket files and manifests. With a
/// broker, the log is that Kafka cluster (`[log] backend = "kafka"`).
fn config(broker: Option<&str>) -> String {
    let log = match broker {
        None => "[log]\ncheckpoint_interval_ms = 50\n".to_string(),
        Some(bootstrap) => format!(
            "[log]\nbackend = \"kafka\"\n[log.kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
             topic_prefix = \"crash.\"\nlinger_ms = 1\n"
        ),
    };
    format!(
        "[streams]\npartitions = 2\n{log}[collector]\ndedup_window_ms = 60000\n\
         dedup_upkeep_interval_ms = 200\n[[sources]]\nname = \"crash\"\nwrite_keys_sha256 = [\"{}\"]\n",
        strom_ingest::source::digest_hex(WRITE_KEY)
    )
}

/// One tracking message of the test.
fn message(writer: u32, seq: u64) -> Value {
    json!({"type": "track", "event": "Tick", "userId": format!("user-{}", seq % 17), "messageId": format!("w{writer}-{seq}"),
           "properties": {"writer": writer, "seq": seq}})
}

async fn send(http: &reqwest::Client, url: &str, messages: &[Value]) -> Result<Value, String> {
    let response = http
        .post(format!("{url}/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .json(&json!({"batch": messages}))
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .send()
        .await
        .map_err(|error| format!("transport: {error}"))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|error| format!("answer: {error}"))?;
    if status != 200
        || body["accepted"].as_u64().unwrap_or(0) + body["duplicates"].as_u64().unwrap_or(0) != messages.len() as u64
    {
        return Err(format!("{status}: {body}"));
    }
    Ok(body)
}

/// Sends batches until the server is killed; returns (batches sent, batches acknowledged).
async fn write_until_killed(
    http: reqwest::Client,
    url: String,
    writer: u32,
    mut seq: u64,
    seed: u64,
    killed: Arc<AtomicBool>,
) -> Result<(Vec<Vec<u64>>, Vec<Vec<u64>>, u64), String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let (mut sent, mut acknowledged) = (Vec::new(), Vec::new());
    loop {
        let len = rng.u64(1..=BATCH_MESSAGES_MAX);
        let seqs: Vec<u64> = (seq..seq + len).collect();
        seq += len;
        let messages: Vec<Value> = seqs.iter().map(|s| message(writer, *s)).collect();
        sent.push(seqs.clone());
        match send(&http, &url, &messages).await {
            Ok(_) => acknowledged.push(seqs),
            Err(_) if killed.load(Ordering::SeqCst) => return Ok((sent, acknowledged, seq)),
            Err(error) => return Err(format!("writer {writer} before the kill: {error}")),
        }
    }
}

#[test]
fn every_message_is_stored_once_across_kills_and_retries() {
    every_message_once(false);
}

/// The same on the Kafka backend: the server under test keeps its log on a Kafka cluster
/// (a second Strom, whose Kafka listener is the broker, and which is never killed). Its
/// dedup index is rebuilt after each kill from its own files and from what the cluster holds.
#[test]
fn on_the_kafka_backend_every_message_is_stored_once_across_kills_and_retries() {
    every_message_once(true);
}

fn every_message_once(on_kafka: bool) {
    let cycles: u32 =
        std::env::var("STROM_DEDUP_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(CYCLES_DEFAULT);
    let seed: u64 = std::env::var("STROM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64);
    let backend = if on_kafka { "the Kafka backend" } else { "the embedded log" };
    eprintln!("dedup crash test on {backend}: {cycles} cycles, STROM_CRASH_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let cluster =
        on_kafka.then(|| TestServer::start_broker(&dir.path().join("cluster"), &dir.path().join("cluster.log"), ""));
    let config = config(cluster.as_ref().and_then(|c| c.kafka.as_deref()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut next_seq: HashMap<u32, u64> = (0..WRITERS).map(|w| (w, 0)).collect();
    let mut all_sent: HashSet<(u32, u64)> = HashSet::new();
    let mut server = TestServer::start(&data_dir, &log_path, &config);
    for cycle in 0..cycles {
        let killed = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                runtime.spawn(write_until_killed(
                    http.clone(),
                    server.url.clone(),
                    w,
                    next_seq[&w],
                    seed ^ (u64::from(cycle) << 8) ^ u64::from(w),
                    killed.clone(),
                ))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.u64(KILL_DELAY_MS_MIN..=KILL_DELAY_MS_MAX)));
        killed.store(true, Ordering::SeqCst);
        server.kill();
        let mut retries: Vec<Vec<Value>> = Vec::new();
        for (w, writer) in writers.into_iter().enumerate() {
            let (sent, acknowledged, seq) =
                runtime.block_on(writer).unwrap().unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
            next_seq.insert(w as u32, seq);
            let acknowledged: HashSet<&Vec<u64>> = acknowledged.iter().collect();
            for batch in &sent {
                all_sent.extend(batch.iter().map(|s| (w as u32, *s)));
                // Every unacknowledged batch is retried; an acknowledged one now and then too.
                if !acknowledged.contains(batch) || rng.u8(..) < 32 {
                    retries.push(batch.iter().map(|s| message(w as u32, *s)).collect());
                }
            }
        }
        server = TestServer::start(&data_dir, &log_path, &config);
        runtime.block_on(async {
            for batch in &retries {
                send(&http, &server.url, batch).await.unwrap_or_else(|e| panic!("cycle {cycle}: a retry failed: {e}"));
            }
        });
    }
    // Every message ever sent is stored exactly once.
    let stored: Vec<Value> = runtime.block_on(async {
        let mut stored = Vec::new();
        for partition in 0..2 {
            let mut offset = 0;
            loop {
                let page: Value = http
                    .get(format!(
                        "{}/v1/streams/events/partitions/{partition}/events?offset={offset}&max_records=10000",
                        server.url
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
                stored.extend(events.iter().map(|e| e["value"].clone()));
                offset = page["next_offset"].as_u64().unwrap();
            }
        }
        stored
    });
    let mut seen: HashMap<(u32, u64), usize> = HashMap::new();
    for event in &stored {
        let key =
            (event["properties"]["writer"].as_u64().unwrap() as u32, event["properties"]["seq"].as_u64().unwrap());
        *seen.entry(key).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{} stored more than once on {backend}, e.g. {:?} (seed {seed})",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
    let missing: Vec<_> = all_sent.iter().filter(|k| !seen.contains_key(k)).collect();
    assert!(
        missing.is_empty(),
        "{} never stored on {backend}, e.g. {:?} (seed {seed})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(seen.len(), all_sent.len());
    eprintln!("dedup crash test on {backend}: {} messages, each stored once, over {cycles} kills", all_sent.len());
}
