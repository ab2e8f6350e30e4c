//! Webhook delivery against a real HTTP receiver that fails, stalls and answers 410 on
//! purpose: every request arrives at least once, signed, and nothing is lost.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use strom_log::{Durability, EncodedBatch, Log, LogConfig, StreamConfig, partitioner};
use strom_webhooks::{DeliveryRequest, DestinationConfig, Secret, SigningKey, Webhooks, WebhooksConfig};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Clone, Copy, Debug)]
enum Reply {
    Ok,
    Status(u16),
    RetryAfter(u16, u64),
    Hang,
}

type Script = Arc<dyn Fn(&str, u32) -> Reply + Send + Sync>;

#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    delivered: bool,
}

#[derive(Clone)]
struct Receiver {
    script: Arc<Mutex<Script>>,
    attempts: Arc<Mutex<HashMap<String, u32>>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) -> (Receiver, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Receiver {
            script: Arc::new(Mutex::new(Arc::new(script))),
            attempts: Arc::default(),
            received: Arc::default(),
        };
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(receiver.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, addr)
    }

    fn set_script(&self, script: impl Fn(&str, u32) -> Reply + Send + Sync + 'static) {
        *self.script.lock().unwrap() = Arc::new(script);
    }

    fn delivered_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.delivered)
            .map(|r| r.headers["webhook-id"].clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }
}

async fn receive(State(receiver): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let attempt = {
        let mut attempts = receiver.attempts.lock().unwrap();
        let count = attempts.entry(id.clone()).or_insert(0);
        *count += 1;
        *count
    };
    let script = receiver.script.lock().unwrap().clone();
    let reply = script(&id, attempt);
    let headers: BTreeMap<String, String> =
        headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
    receiver.received.lock().unwrap().push(Received {
        headers,
        body: body.to_vec(),
        delivered: matches!(reply, Reply::Ok),
    });
    match reply {
        Reply::Ok => StatusCode::NO_CONTENT.into_response(),
        Reply::Status(code) => (StatusCode::from_u16(code).unwrap(), "try later").into_response(),
        Reply::RetryAfter(code, seconds) => {
            (StatusCode::from_u16(code).unwrap(), [("retry-after", seconds.to_string())], "slow down").into_response()
        }
        Reply::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            StatusCode::OK.into_response()
        }
    }
}

fn destination(name: &str, addr: SocketAddr) -> DestinationConfig {
    DestinationConfig {
        name: name.into(),
        url: format!("http://{addr}/hook"),
        secret: Some(Secret(SECRET.into())),
        secret_env: None,
        timeout_ms: 300,
        concurrency: 4,
        retry_initial_ms: 20,
        retry_max_ms: 200,
        retry_horizon_ms: 60_000,
        circuit_failures: 1000,
        circuit_open_ms: 100,
        headers: BTreeMap::from([("x-shop".to_string(), "test".to_string())]),
    }
}

fn config(destinations: Vec<DestinationConfig>) -> WebhooksConfig {
    WebhooksConfig { allow_private: vec!["127.0.0.1/32".into()], destinations, ..WebhooksConfig::default() }
}

async fn open(dir: &std::path::Path) -> Arc<Log> {
    Log::open(LogConfig::new(dir.join("log"))).unwrap()
}

async fn start(log: &Arc<Log>, dir: &std::path::Path, config: WebhooksConfig) -> Arc<Webhooks> {
    Webhooks::start(log.clone(), config, StreamConfig::default(), dir).await.unwrap()
}

/// Queues `count` requests for `destination` as the rules engine does.
async fn enqueue(log: &Log, destination: &str, ids: impl IntoIterator<Item = String>) {
    let stream = log.stream("strom.deliveries").unwrap();
    let partition = partitioner::partition_for_key(destination.as_bytes(), stream.partitions().len() as u32);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let records: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let request = DeliveryRequest {
                payload: serde_json::json!({"type": "CartAbandoned", "id": id, "cart": {"value": 42.5}}),
                id,
                destination: destination.into(),
                rule: Some("cart-abandonment".into()),
            };
            request.record(now)
        })
        .collect();
    let batch = EncodedBatch::encode(&records).unwrap();
    stream.partition(partition).unwrap().append(batch, Durability::Sync).await.unwrap();
}

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

fn ids(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}-{i:04}")).collect()
}

/// Verifies every received request with the Python `standardwebhooks` package (the
/// specification's reference library), an implementation independent of ours.
fn verify_with_reference_library(received: &[Received]) {
    let check = std::process::Command::new("python3").args(["-c", "import standardwebhooks"]).output();
    if !check.is_ok_and(|output| output.status.success()) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the Python package standardwebhooks is missing (pip install standardwebhooks)");
        }
        eprintln!("skipping the reference verification: pip install standardwebhooks");
        return;
    }
    let cases: Vec<serde_json::Value> = received
        .iter()
        .map(|r| serde_json::json!({"headers": r.headers, "body": String::from_utf8(r.body.clone()).unwrap()}))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_vec(&cases).unwrap()).unwrap();
    let script = r#"
import json, sys
from standardwebhooks import Webhook
cases = json.load(open(sys.argv[1]))
hook = Webhook(sys.argv[2])
for case in cases:
    hook.verify(case["body"], case["headers"])
    bad = dict(case["headers"]); bad["webhook-id"] = bad["webhook-id"] + "x"
    try:
        hook.verify(case["body"], bad)
        sys.exit("a forged id verified")
    except Exception:
        pass
print(len(cases))
"#;
    let output =
        std::process::Command::new("python3").args(["-c", script]).arg(file.path()).arg(SECRET).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), received.len().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_arrives_signed_through_failures_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    // Attempt 1 fails with 500, attempt 2 stalls past the timeout, attempt 3 is told to wait
    // by 429 + Retry-After, attempt 4 succeeds; every fifth request succeeds at once.
    let (receiver, addr) = Receiver::start(|id, attempt| {
        if id.ends_with('0') || id.ends_with('5') {
            return Reply::Ok;
        }
        match attempt {
            1 => Reply::Status(500),
            2 => Reply::Hang,
            3 => Reply::RetryAfter(429, 0),
            _ => Reply::Ok,
        }
    })
    .await;
    let log = open(dir.path()).await;
    let webhooks = start(&log, dir.path(), config(vec![destination("shop", addr)])).await;
    let expected = ids("req", 60);
    enqueue(&log, "shop", expected.clone()).await;
    eventually("all 60 requests are delivered", || receiver.delivered_ids() == expected).await;
    eventually("the position passes them all", || webhooks.destination("shop").unwrap().lag_records == 0).await;

    let received = receiver.received.lock().unwrap().clone();
    let key: SigningKey = SECRET.parse().unwrap();
    for request in &received {
        let h = &request.headers;
        let timestamp: i64 = h["webhook-timestamp"].parse().unwrap();
        assert!(key.verify(&h["webhook-id"], timestamp, &request.body, &h["webhook-signature"]));
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-shop"], "test");
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(body["id"], h["webhook-id"].as_str());
    }
    // The same id on every attempt: 12 requests succeeded at once, 48 after four attempts.
    assert_eq!(received.len(), 12 + 48 * 4);
    let status = webhooks.destination("shop").unwrap();
    assert_eq!((status.delivered, status.failed_attempts, status.dead_lettered), (60, 48 * 3, 0));
    verify_with_reference_library(&received);
    webhooks.close().await;
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_destination_until_enabled_even_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, addr) = Receiver::start(|_, _| Reply::Status(410)).await;
    let log = open(dir.path()).await;
    let webhooks = start(&log, dir.path(), config(vec![destination("gone", addr)])).await;
    let expected = ids("g", 20);
    enqueue(&log, "gone", expected.clone()).await;
    eventually("the destination is disabled", || webhooks.destination("gone").unwrap().state == "disabled").await;
    let status = webhooks.destination("gone").unwrap();
    assert!(status.disabled_reason.unwrap().contains("410"));
    webhooks.close().await;
    let tried = receiver.received.lock().unwrap().len();
    assert!((1..=4).contains(&tried), "{tried} attempts after a 410 with concurrency 4");

    // Still disabled after a restart: nothing is sent.
    receiver.set_script(|_, _| Reply::Ok);
    let webhooks = start(&log, dir.path(), config(vec![destination("gone", addr)])).await;
    assert_eq!(webhooks.destination("gone").unwrap().state, "disabled");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received.lock().unwrap().len(), tried);

    // Enabled: the whole queue goes out, nothing lost.
    assert_eq!(webhooks.enable("gone").await.unwrap().state, "active");
    eventually("all 20 are delivered after enable", || receiver.delivered_ids() == expected).await;
    assert!(webhooks.enable("nope").await.is_err());
    webhooks.close().await;
    log.close().await;
}

/// A destination disabled by a release that kept disabled destinations in
/// `webhooks/disabled.json` stays disabled: the file's entry moves into the states stream
/// (and the file goes), and a restart still knows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_disabled_in_the_old_file_stays_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, addr) = Receiver::start(|_, _| Reply::Ok).await;
    let legacy = dir.path().join("webhooks").join("disabled.json");
    std::fs::create_dir_all(legacy.parent().unwrap()).unwrap();
    std::fs::write(&legacy, r#"{"old": {"reason": "410 in an older release", "since_ms": 1700000000000}}"#).unwrap();
    let log = open(dir.path()).await;
    let webhooks = start(&log, dir.path(), config(vec![destination("old", addr)])).await;
    let status = webhooks.destination("old").unwrap();
    assert_eq!(
        (status.state.as_str(), status.disabled_reason.as_deref()),
        ("disabled", Some("410 in an older release"))
    );
    assert!(!legacy.exists(), "the file's entries moved into the states stream");
    enqueue(&log, "old", ids("o", 3)).await;
    webhooks.close().await;

    let webhooks = start(&log, dir.path(), config(vec![destination("old", addr)])).await;
    assert_eq!(webhooks.destination("old").unwrap().state, "disabled", "the stream remembers it");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received.lock().unwrap().is_empty(), "nothing is sent to a disabled destination");
    webhooks.enable("old").await.unwrap();
    eventually("the queue goes out once enabled", || receiver.delivered_ids() == ids("o", 3)).await;
    webhooks.close().await;
    log.close().await;
}

/// A destination enabled the moment a 410 disables it: requests that were parked by the 410
/// (or by the disabling, while in flight) are sent again, none is left behind. An operator
/// thread enables the destination as soon as it sees it disabled, so the enabling often lands
/// before the worker has collected its parked deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_enabled_at_once_after_a_410_sends_every_parked_request() {
    let dir = tempfile::tempdir().unwrap();
    // Each request's first attempt is answered 410, every later one 204.
    let (receiver, addr) =
        Receiver::start(|_, attempt| if attempt == 1 { Reply::Status(410) } else { Reply::Ok }).await;
    let log = open(dir.path()).await;
    let webhooks = start(&log, dir.path(), config(vec![destination("flappy", addr)])).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let operator = {
        let (webhooks, done, runtime) = (webhooks.clone(), done.clone(), tokio::runtime::Handle::current());
        std::thread::spawn(move || {
            let mut enabled = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if webhooks.destination("flappy").unwrap().state == "disabled" {
                    runtime.block_on(webhooks.enable("flappy")).unwrap();
                    enabled += 1;
                }
                std::hint::spin_loop();
            }
            enabled
        })
    };
    let expected = ids("f", 40);
    enqueue(&log, "flappy", expected.clone()).await;
    eventually("all 40 are delivered through 40 disablings", || receiver.delivered_ids() == expected).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let enabled = operator.join().unwrap();
    assert!(enabled >= 1, "the destination was never seen disabled");
    let status = webhooks.destination("flappy").unwrap();
    assert_eq!(status.delivered, 40, "{status:?}");
    webhooks.close().await;
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_past_the_horizon_and_malformed_requests_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, addr) = Receiver::start(|_, _| Reply::Status(503)).await;
    let log = open(dir.path()).await;
    let mut dead = destination("dead", addr);
    dead.retry_horizon_ms = 300;
    let webhooks = start(&log, dir.path(), config(vec![dead])).await;
    enqueue(&log, "dead", ids("d", 5)).await;
    // A record keyed for the destination that is not a delivery request.
    let stream = log.stream("strom.deliveries").unwrap();
    let partition = partitioner::partition_for_key(b"dead", stream.partitions().len() as u32);
    let junk = strom_log::RecordIn {
        key: Some("dead".into()),
        value: Some("{not json".into()),
        timestamp_ms: 0,
        headers: vec![],
    };
    stream
        .partition(partition)
        .unwrap()
        .append(EncodedBatch::encode(&[junk]).unwrap(), Durability::Sync)
        .await
        .unwrap();

    eventually("six dead letters", || webhooks.destination("dead").unwrap().dead_lettered == 6).await;
    eventually("the position passes them", || webhooks.destination("dead").unwrap().lag_records == 0).await;
    let letters =
        log.stream("strom.deliveries.dead").unwrap().partition(0).unwrap().read_records(0, 100, 1 << 20).unwrap();
    assert_eq!(letters.records.len(), 6);
    for letter in &letters.records {
        let reason: serde_json::Value = serde_json::from_slice(
            letter.headers.iter().find(|(k, _)| k == "strom-dead-letter").unwrap().1.as_ref().unwrap(),
        )
        .unwrap();
        assert_eq!(reason["destination"], "dead");
        if letter.value.as_deref() == Some(b"{not json".as_slice()) {
            assert!(reason["reason"].as_str().unwrap().contains("not valid"), "{reason}");
            assert_eq!(reason["attempts"], 0);
        } else {
            // The request is kept unchanged, with the last answer.
            let request: DeliveryRequest = serde_json::from_slice(letter.value.as_ref().unwrap()).unwrap();
            assert_eq!(request.destination, "dead");
            assert!(reason["reason"].as_str().unwrap().contains("retry horizon"), "{reason}");
            assert_eq!(reason["last_status"], 503);
            assert!(reason["attempts"].as_u64().unwrap() >= 1);
        }
    }
    assert!(!receiver.received.lock().unwrap().is_empty());
    webhooks.close().await;
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_destination_does_not_hold_up_another() {
    let dir = tempfile::tempdir().unwrap();
    let (stalled, stalled_addr) = Receiver::start(|_, _| Reply::Hang).await;
    let (fast, fast_addr) = Receiver::start(|_, _| Reply::Ok).await;
    let log = open(dir.path()).await;
    let mut slow = destination("slow", stalled_addr);
    slow.timeout_ms = 60_000;
    slow.concurrency = 1;
    let webhooks = start(&log, dir.path(), config(vec![slow, destination("fast", fast_addr)])).await;
    enqueue(&log, "slow", ids("s", 50)).await;
    enqueue(&log, "fast", ids("f", 200)).await;
    eventually("the fast destination gets all 200", || fast.delivered_ids().len() == 200).await;
    assert_eq!(stalled.received.lock().unwrap().len(), 1, "one stalled request in flight, the rest queued");
    assert_eq!(webhooks.destination("slow").unwrap().delivered, 0);
    webhooks.close().await;
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens yet: a port that was free a moment ago.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let log = open(dir.path()).await;
    let webhooks = start(&log, dir.path(), config(vec![destination("later", closed_addr)])).await;
    let expected = ids("p", 30);
    enqueue(&log, "later", expected.clone()).await;
    eventually("attempts fail to connect", || webhooks.destination("later").unwrap().failed_attempts >= 4).await;
    assert!(webhooks.destination("later").unwrap().last_error.unwrap().contains("connect"));
    webhooks.close().await;
    log.close().await;
    drop((webhooks, log));

    // A restart of everything; the receiver is up now.
    let (receiver, addr) = Receiver::start(|_, _| Reply::Ok).await;
    let log = open(dir.path()).await;
    let webhooks = start(&log, dir.path(), config(vec![destination("later", addr)])).await;
    eventually("all 30 arrive after the restart", || receiver.delivered_ids() == expected).await;
    eventually("the position passes them", || webhooks.destination("later").unwrap().lag_records == 0).await;
    webhooks.close().await;
    log.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, addr) = Receiver::start(|_, _| Reply::Ok).await;
    let log = open(dir.path()).await;
    let refused = WebhooksConfig { destinations: vec![destination("inner", addr)], ..WebhooksConfig::default() };
    let error = Webhooks::start(log.clone(), refused, StreamConfig::default(), dir.path()).await.err().unwrap();
    assert!(error.to_string().contains("loopback"), "{error}");

    // A host name that resolves to loopback is refused when connecting, and never reached.
    let mut by_name = destination("by-name", addr);
    by_name.url = format!("http://localhost:{}/hook", addr.port());
    by_name.retry_horizon_ms = 200;
    let config = WebhooksConfig { destinations: vec![by_name], ..WebhooksConfig::default() };
    let webhooks = start(&log, dir.path(), config).await;
    enqueue(&log, "by-name", ids("n", 1)).await;
    eventually("the delivery is dead-lettered", || webhooks.destination("by-name").unwrap().dead_lettered == 1).await;
    let status = webhooks.destination("by-name").unwrap();
    assert!(status.last_error.unwrap().contains("address refused"));
    assert!(receiver.received.lock().unwrap().is_empty());
    webhooks.close().await;
    log.close().await;
}

type Change = Box<dyn Fn(&mut DestinationConfig)>;

#[test]
fn configuration_errors_name_the_key() {
    let addr: SocketAddr = "93.184.216.34:443".parse().unwrap();
    let cases: Vec<(Change, &str)> = vec![
        (Box::new(|d| d.url = "ftp://example.com/x".into()), "scheme"),
        (Box::new(|d| d.url = "https://user:pw@example.com/x".into()), "credentials"),
        (Box::new(|d| d.secret = Some(Secret("plain".into()))), "whsec_"),
        (Box::new(|d| d.secret = None), "secret"),
        (Box::new(|d| d.concurrency = 0), "concurrency"),
        (Box::new(|d| d.timeout_ms = 0), "timeout_ms"),
        (Box::new(|d| d.url = "http://169.254.169.254/latest".into()), "link-local"),
        (Box::new(|d| d.url = "http://[::1]:80/".into()), "loopback"),
        (Box::new(|d| d.name = "a b".into()), "name"),
        (Box::new(|d| _ = d.headers.insert("webhook-id".into(), "x".into())), "set by Strom"),
    ];
    for (change, expected) in cases {
        let mut destination = destination("d", addr);
        change(&mut destination);
        let config = WebhooksConfig { destinations: vec![destination], ..WebhooksConfig::default() };
        let error = config.validate().unwrap_err();
        assert!(error.contains("webhooks.destinations") && error.contains(expected), "{error} lacks {expected}");
    }
    let twice = WebhooksConfig {
        destinations: vec![destination("d", addr), destination("d", addr)],
        ..WebhooksConfig::default()
    };
    assert!(twice.validate().unwrap_err().contains("defined twice"));
    let unknown = toml::from_str::<WebhooksConfig>(
        "[[destinations]]\nname = \"x\"\nurl = \"https://example.com\"\nsecrett = \"\"\n",
    )
    .unwrap_err();
    assert!(unknown.to_string().contains("secrett"), "{unknown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_in_a_row_open_the_circuit_and_a_probe_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver, addr) = Receiver::start(|_, _| Reply::Status(500)).await;
    let log = open(dir.path()).await;
    let mut flaky = destination("flaky", addr);
    flaky.concurrency = 1;
    flaky.circuit_failures = 3;
    flaky.circuit_open_ms = 1500;
    flaky.retry_initial_ms = 10;
    flaky.retry_max_ms = 20;
    let webhooks = start(&log, dir.path(), config(vec![flaky])).await;
    enqueue(&log, "flaky", ids("f", 3)).await;
    eventually("the circuit opens", || webhooks.destination("flaky").unwrap().circuit == "open").await;
    // While it is open nothing is attempted: three failures, then silence.
    let attempts = receiver.received.lock().unwrap().len();
    assert_eq!(attempts, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received.lock().unwrap().len(), 3, "an attempt while the circuit was open");
    // The receiver recovers; the probe after the open period succeeds and closes the circuit.
    receiver.set_script(|_, _| Reply::Ok);
    eventually("all three are delivered", || receiver.delivered_ids() == ids("f", 3)).await;
    assert_eq!(webhooks.destination("flaky").unwrap().circuit, "closed");
    webhooks.close().await;
    log.close().await;
}
