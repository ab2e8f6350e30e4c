//! The crash test: SIGKILL the real server while writers are being acknowledged with
//! `durability=sync`, restart it on the same data directory, and check that nothing
//! acknowledged was lost, moved or duplicated.
//!
//! Only the `strom` binary and its HTTP API are used. Each cycle:
//! 1. `WRITERS` tasks send single events and small batches as fast as the server answers,
//!    every event unique (`{"writer": w, "seq": n}`), recording each acknowledged offset;
//! 2. after a random delay the server is killed with SIGKILL (no shutdown code runs);
//! 3. the server restarts and every partition is read back from offset 0.
//!
//! Checked after every restart: offsets are dense from 0; every acknowledged event is at the
//! offset its acknowledgement named, with the same content; no event is stored twice; and
//! each request's events are all there, consecutive in one partition, or none of them are
//! (a batch is appended atomically), acknowledged or not.
//!
//! `STROM_CRASH_CYCLES` (default 50) sets the cycles, `STROM_CRASH_SEED` the RNG seed (default:
//! from the clock; it is printed so a failure can be replayed as closely as timing allows).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;

const STREAM: &str = "ledger";
const PARTITIONS: u32 = 2;
const WRITERS: u32 = 8;
const CYCLES_DEFAULT: u32 = 50;
/// The server is killed this long after the writers start, drawn uniformly.
const KILL_DELAY_MS_MIN: u64 = 50;
const KILL_DELAY_MS_MAX: u64 = 400;
/// Events per request: 1 half of the time, else up to this many.
const BATCH_EVENTS_MAX: u64 = 5;
const STARTUP_TIMEOUT_MS: u64 = 30_000;
const REQUEST_TIMEOUT_MS: u64 = 10_000;
const READ_PAGE_RECORDS: u32 = 10_000;

/// The `strom serve` child process, killed when dropped so a failing test leaves no server.
struct TestServer {
    child: Child,
    url: String,
}

impl TestServer {
    /// Starts `strom serve` on `data_dir` and an ephemeral port, its logs appended to
    /// `log_path`, and waits for its `listening http://HOST:PORT` line.
    fn start(data_dir: &Path, log_path: &Path) -> TestServer {
        let log = File::options().create(true).append(true).open(log_path).expect("open the server log");
        let parent = data_dir.parent().expect("the data dir has a parent");
        // Checkpoints every 50 ms, so kills also land after periodic checkpoints, whose synced
        // position decides what recovery may cut.
        let config = parent.join("crash.toml");
        std::fs::write(&config, "[log]\ncheckpoint_interval_ms = 50\n").expect("write the test config");
        let mut command = Command::new(env!("CARGO_BIN_EXE_strom"));
        command
            .args(["serve", "--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            // The server reads ./strom.toml when it exists: run where there is none.
            .current_dir(parent)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        // The developer's STROM_* settings must not change the server under test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STROM_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().expect("spawn strom serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_sender, line_receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = line_sender.send(lines.next());
            // Keep reading so the server never blocks on a full pipe.
            for _ in lines {}
        });
        let mut server = TestServer { child, url: String::new() };
        let line = match line_receiver.recv_timeout(Duration::from_millis(STARTUP_TIMEOUT_MS)) {
            Ok(Some(Ok(line))) => line,
            other => panic!(
                "strom serve did not print its listening line ({other:?}); its log:\n{}",
                std::fs::read_to_string(log_path).unwrap_or_default()
            ),
        };
        server.url = line
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("unexpected first line of strom serve: {line:?}"))
            .trim_end_matches('/')
            .to_owned();
        server
    }

    /// SIGKILL: the process gets no chance to flush or clean up anything.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL strom serve");
        self.child.wait().expect("reap strom serve");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A request a writer sent: `len` events with sequence numbers from `seq_first`.
#[derive(Clone, Copy)]
struct Sent {
    writer: u32,
    seq_first: u64,
    len: u64,
}

/// The test's events. Unknown fields are refused, so equality is "identical content".
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
struct TestEvent {
    writer: u32,
    seq: u64,
    cycle: u32,
}

/// An acknowledged event: where the server said it is, and what it is.
struct Ack {
    partition: u32,
    offset: u64,
    event: TestEvent,
}

#[derive(Deserialize)]
struct ProduceAnswer {
    results: Vec<Position>,
}

#[derive(Debug, Deserialize)]
struct Position {
    partition: u32,
    offset: u64,
}

#[derive(Deserialize)]
struct Page {
    events: Vec<StoredRecord>,
    next_offset: u64,
    log_start_offset: u64,
    log_end_offset: u64,
}

#[derive(Deserialize)]
struct StoredRecord {
    offset: u64,
    value: TestEvent,
}

/// Everything the writers sent, and what the server acknowledged, over all cycles.
#[derive(Default)]
struct Ledger {
    sent: Vec<Sent>,
    acks: HashMap<(u32, u64), Ack>,
}

/// What one writer did in one cycle.
struct WriterReport {
    sent: Vec<Sent>,
    acks: Vec<((u32, u64), Ack)>,
    seq_next: u64,
}

/// Sends requests until the server stops answering. Any error answer, or a failure before
/// the kill, is a test failure.
async fn write_until_killed(
    http: reqwest::Client,
    url: String,
    writer: u32,
    mut seq_next: u64,
    cycle: u32,
    seed: u64,
    killed: Arc<AtomicBool>,
) -> Result<WriterReport, String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut report = WriterReport { sent: Vec::new(), acks: Vec::new(), seq_next };
    loop {
        let len = if rng.bool() { 1 } else { rng.u64(2..=BATCH_EVENTS_MAX) };
        let events: Vec<TestEvent> = (seq_next..seq_next + len).map(|seq| TestEvent { writer, seq, cycle }).collect();
        // A single event goes as an object, a batch as an array: the API takes both.
        let body = if len == 1 { serde_json::to_string(&events[0]) } else { serde_json::to_string(&events) }
            .expect("the test's events serialize");
        report.sent.push(Sent { writer, seq_first: seq_next, len });
        seq_next += len;
        report.seq_next = seq_next;
        let response = http
            .post(format!("{url}/v1/streams/{STREAM}/events?durability=sync"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(_) if killed.load(Ordering::SeqCst) => return Ok(report),
            Err(error) => {
                return Err(format!("writer {writer}: request failed before the kill: {error}"));
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            // The answer was cut off by the kill: not acknowledged.
            Err(_) if killed.load(Ordering::SeqCst) => return Ok(report),
            Err(error) => {
                return Err(format!("writer {writer}: reading an answer failed before the kill: {error}"));
            }
        };
        if !status.is_success() {
            return Err(format!("writer {writer}: {status}: {}", String::from_utf8_lossy(&body)));
        }
        let answer: ProduceAnswer = serde_json::from_slice(&body)
            .map_err(|error| format!("writer {writer}: bad answer {:?}: {error}", String::from_utf8_lossy(&body)))?;
        if answer.results.len() as u64 != len {
            return Err(format!(
                "writer {writer}: {} results for {len} events: {:?}",
                answer.results.len(),
                answer.results
            ));
        }
        for (event, result) in events.into_iter().zip(answer.results) {
            report.acks.push(((writer, event.seq), Ack { partition: result.partition, offset: result.offset, event }));
        }
    }
}

/// Reads every partition from offset 0 and checks it against the ledger.
async fn verify(http: &reqwest::Client, url: &str, ledger: &Ledger) -> Result<VerifySummary, String> {
    // (writer, seq) -> (partition, offset, event) of every stored event.
    let mut stored: HashMap<(u32, u64), (u32, u64, TestEvent)> = HashMap::new();
    for partition in 0..PARTITIONS {
        let mut offset = 0u64;
        loop {
            let page_url = format!(
                "{url}/v1/streams/{STREAM}/partitions/{partition}/events?offset={offset}&max_records={READ_PAGE_RECORDS}"
            );
            let response = http.get(&page_url).send().await.map_err(|error| format!("GET {page_url}: {error}"))?;
            let status = response.status();
            let body = response.bytes().await.map_err(|error| format!("GET {page_url}: {error}"))?;
            if !status.is_success() {
                return Err(format!("GET {page_url}: {status}: {}", String::from_utf8_lossy(&body)));
            }
            // An event the test never wrote fails here, on its unknown or missing fields.
            let page: Page = serde_json::from_slice(&body).map_err(|error| format!("GET {page_url}: {error}"))?;
            if page.log_start_offset != 0 {
                return Err(format!("partition {partition}: log_start_offset is {}, not 0", page.log_start_offset));
            }
            for record in &page.events {
                if record.offset != offset {
                    return Err(format!("partition {partition}: expected offset {offset}, found {}", record.offset));
                }
                let event = record.value;
                if let Some((first_partition, first_offset, _)) =
                    stored.insert((event.writer, event.seq), (partition, offset, event))
                {
                    return Err(format!(
                        "event {event:?} is stored twice: partition {first_partition} offset {first_offset} and partition {partition} offset {offset}"
                    ));
                }
                offset += 1;
            }
            if page.next_offset != offset {
                return Err(format!("partition {partition}: next_offset {} after offset {offset}", page.next_offset));
            }
            let log_end_offset = page.log_end_offset;
            if offset >= log_end_offset {
                break;
            }
            if page.events.is_empty() {
                return Err(format!(
                    "partition {partition}: no records at {offset}, below log_end_offset {log_end_offset}"
                ));
            }
        }
    }
    for ((writer, seq), ack) in &ledger.acks {
        match stored.get(&(*writer, *seq)) {
            None => {
                return Err(format!(
                    "acknowledged event {:?} (partition {} offset {}) is lost",
                    ack.event, ack.partition, ack.offset
                ));
            }
            Some((partition, offset, value))
                if (*partition, *offset) != (ack.partition, ack.offset) || *value != ack.event =>
            {
                return Err(format!(
                    "acknowledged event {:?} at partition {} offset {} is stored as {value:?} at partition {partition} offset {offset}",
                    ack.event, ack.partition, ack.offset
                ));
            }
            Some(_) => {}
        }
    }
    // A request's events for one partition are one batch, appended whole or not at all.
    for sent in &ledger.sent {
        let positions: Vec<Option<(u32, u64)>> = (sent.seq_first..sent.seq_first + sent.len)
            .map(|seq| stored.get(&(sent.writer, seq)).map(|(partition, offset, _)| (*partition, *offset)))
            .collect();
        let present = positions.iter().flatten().count();
        if present == 0 {
            continue;
        }
        let consecutive = positions.windows(2).all(|pair| match pair {
            [Some((partition_a, offset_a)), Some((partition_b, offset_b))] => {
                partition_a == partition_b && offset_a + 1 == *offset_b
            }
            _ => false,
        });
        if present as u64 != sent.len || !consecutive {
            return Err(format!(
                "the request of writer {} with seq {}..{} is stored in part or out of order: {positions:?}",
                sent.writer,
                sent.seq_first,
                sent.seq_first + sent.len
            ));
        }
    }
    Ok(VerifySummary { stored: stored.len() as u64 })
}

struct VerifySummary {
    stored: u64,
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|text| text.parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let cycles = env_number("STROM_CRASH_CYCLES").map_or(CYCLES_DEFAULT, |cycles| cycles as u32);
    let seed = env_number("STROM_CRASH_SEED").unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).expect("the clock is past 1970").as_nanos() as u64
    });
    println!("crash test: {cycles} cycles, seed {seed} (STROM_CRASH_SEED={seed} to replay)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let dir = tempfile::tempdir().expect("create a temp dir");
    let data_dir = dir.path().join("data");
    let log_path = dir.path().join("server.log");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS))
        .build()
        .expect("build the HTTP client");

    let mut server = TestServer::start(&data_dir, &log_path);
    let created = http
        .post(format!("{}/v1/streams", server.url))
        .header("content-type", "application/json")
        .body(json!({ "name": STREAM, "partitions": PARTITIONS }).to_string())
        .send()
        .await
        .expect("create the stream");
    assert_eq!(created.status(), 201, "create the stream: {}", created.text().await.unwrap_or_default());

    let mut ledger = Ledger::default();
    let mut seq_next = vec![0u64; WRITERS as usize];
    let started = Instant::now();
    for cycle in 0..cycles {
        let cycle_started = Instant::now();
        let killed = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                tokio::spawn(write_until_killed(
                    http.clone(),
                    server.url.clone(),
                    writer,
                    seq_next[writer as usize],
                    cycle,
                    rng.u64(..),
                    Arc::clone(&killed),
                ))
            })
            .collect();
        let kill_delay_ms = rng.u64(KILL_DELAY_MS_MIN..=KILL_DELAY_MS_MAX);
        tokio::time::sleep(Duration::from_millis(kill_delay_ms)).await;
        killed.store(true, Ordering::SeqCst);
        server.kill();

        let mut acknowledged = 0;
        let mut failures = Vec::new();
        for (writer, handle) in writers.into_iter().enumerate() {
            match handle.await.expect("a writer panicked") {
                Ok(report) => {
                    acknowledged += report.acks.len();
                    seq_next[writer] = report.seq_next;
                    ledger.sent.extend(report.sent);
                    ledger.acks.extend(report.acks);
                }
                Err(failure) => failures.push(failure),
            }
        }
        let fail = |message: String, dir: tempfile::TempDir| -> ! {
            let kept = dir.keep();
            panic!("cycle {cycle} (seed {seed}): {message}\ndata and server log kept in {}", kept.display())
        };
        if !failures.is_empty() {
            drop(server);
            fail(failures.join("\n"), dir);
        }

        let restarted = Instant::now();
        server = TestServer::start(&data_dir, &log_path);
        let restart_ms = restarted.elapsed().as_millis();
        let verified = Instant::now();
        match verify(&http, &server.url, &ledger).await {
            Ok(summary) => println!(
                "cycle {cycle}: killed after {kill_delay_ms} ms, {acknowledged} acknowledged this cycle, \
                 {} acknowledged and {} stored in all; restart {restart_ms} ms, verify {} ms, cycle {} ms",
                ledger.acks.len(),
                summary.stored,
                verified.elapsed().as_millis(),
                cycle_started.elapsed().as_millis()
            ),
            Err(message) => {
                drop(server);
                fail(message, dir);
            }
        }
    }
    println!(
        "crash test passed: {cycles} cycles, {} acknowledged events all present, in {:.1} s",
        ledger.acks.len(),
        started.elapsed().as_secs_f64()
    );
}
