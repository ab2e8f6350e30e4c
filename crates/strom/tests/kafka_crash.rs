//! The crash test over Kafka: SIGKILL the real server while a librdkafka producer
//! (confluent-kafka, acks=all, idempotent) is being acknowledged, restart on the same data
//! directory, again and again; then every acknowledged record must be stored exactly once, at
//! the offset its acknowledgement named.
//!
//! `STROM_KAFKA_CRASH_CYCLES` (default 15) sets the cycles. Without python3 and
//! confluent-kafka the test prints why and passes, except with CI=true, where it fails.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const TOPIC: &str = "payments";
const PARTITIONS: u32 = 3;
const CYCLES_DEFAULT: u32 = 15;
const STARTUP_TIMEOUT_MS: u64 = 30_000;

struct Server {
    child: Child,
    http: String,
    kafka: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let parent = data_dir.parent().expect("a parent dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_strom"));
    command
        .args(["serve", "--http-addr", "127.0.0.1:0", "--kafka-addr", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .current_dir(parent)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STROM_") {
            command.env_remove(name);
        }
    }
    let mut child = command.spawn().expect("spawn strom serve");
    let stdout = child.stdout.take().expect("piped stdout");
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut lines = Vec::new();
    while lines.len() < 2 {
        let line = receiver
            .recv_timeout(Duration::from_millis(STARTUP_TIMEOUT_MS))
            .expect("strom serve prints its two listening lines");
        lines.push(line);
    }
    let http = lines[0].strip_prefix("listening ").expect("the HTTP line first").to_string();
    let kafka = lines[1].strip_prefix("listening kafka://").expect("then the Kafka line").to_string();
    Server { child, http, kafka }
}

fn http(method: &str, url: &str, body: Option<&str>) -> (u16, serde_json::Value) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.request(method.parse().unwrap(), url);
        if let Some(body) = body {
            request = request.body(body.to_string());
        }
        let response = request.send().await.expect("the HTTP API answers");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    })
}

fn confluent_kafka() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import confluent_kafka"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let message = "python3 with confluent-kafka is not installed (pip install confluent-kafka)";
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("{message}");
        }
        eprintln!("skipped: {message}");
    }
    found
}

#[test]
fn every_record_acknowledged_with_acks_all_survives_sigkill_exactly_once() {
    if !confluent_kafka() {
        return;
    }
    let cycles = std::env::var("STROM_KAFKA_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(CYCLES_DEFAULT);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    eprintln!("kafka crash test: {cycles} cycles, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let script = format!("{}/tests/kafka_crash_producer.py", env!("CARGO_MANIFEST_DIR"));
    // (partition, offset) -> value, for every acknowledged record.
    let mut acked: HashMap<(u32, u64), String> = HashMap::new();
    for cycle in 0..cycles {
        let mut server = start(&data_dir);
        if cycle == 0 {
            let body = format!(r#"{{"name": "{TOPIC}", "partitions": {PARTITIONS}}}"#);
            let (status, answer) = http("POST", &format!("{}/v1/streams", server.http), Some(&body));
            assert_eq!(status, 201, "{answer}");
        }
        let mut producer = Command::new("python3")
            .args([&script, &server.kafka, TOPIC, &cycle.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the producer");
        let stdout = producer.stdout.take().unwrap();
        let reader =
            std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
        std::thread::sleep(Duration::from_millis(rng.u64(700..1500)));
        server.child.kill().expect("SIGKILL strom serve");
        server.child.wait().unwrap();
        // Answers in flight when the server died are never delivered; give the producer a
        // moment to print what it had, then stop it.
        std::thread::sleep(Duration::from_millis(200));
        let _ = producer.kill();
        let _ = producer.wait();
        let lines = reader.join().unwrap();
        for line in &lines {
            let mut parts = line.splitn(3, ' ');
            let (Some(p), Some(o), Some(value)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let key = (p.parse().unwrap(), o.parse().unwrap());
            if let Some(previous) = acked.insert(key, value.to_string()) {
                panic!("cycle {cycle}: offset {key:?} acknowledged twice ({previous}, {value})");
            }
        }
        eprintln!("cycle {cycle}: {} acknowledged", lines.len());
        drop(server);
    }
    assert!(acked.len() > 1000, "the producer got too few acknowledgements ({}) to test anything", acked.len());
    // Read everything back over HTTP.
    let server = start(&data_dir);
    let mut stored: HashMap<(u32, u64), String> = HashMap::new();
    let mut values = HashSet::new();
    for partition in 0..PARTITIONS {
        let mut offset = 0;
        loop {
            let url = format!(
                "{}/v1/streams/{TOPIC}/partitions/{partition}/events?offset={offset}&max_records=10000",
                server.http
            );
            let (status, page) = http("GET", &url, None);
            assert_eq!(status, 200, "{page}");
            let events = page["events"].as_array().unwrap();
            for event in events {
                let at = event["offset"].as_u64().unwrap();
                assert_eq!(at, offset, "offsets are dense");
                let value = event["value"].as_str().unwrap().to_string();
                assert!(values.insert(value.clone()), "{value} is stored twice");
                stored.insert((partition, at), value);
                offset += 1;
            }
            if offset >= page["log_end_offset"].as_u64().unwrap() || events.is_empty() {
                break;
            }
        }
    }
    for (key, value) in &acked {
        assert_eq!(stored.get(key), Some(value), "acknowledged record at {key:?} lost or moved");
    }
    eprintln!("{} acknowledged records, {} stored, all acknowledged ones found once", acked.len(), stored.len());
}
