//! The rules engine's crash test: SIGKILL the real server many times while its rules process
//! a stream, and compare with a run that was never killed. The derived events and delivery
//! requests, by id, must be the same sets, and no id may be appended twice; every delivery
//! must reach the webhook receiver at least once.
//!
//! The input is written first (and copied for the clean run), so both runs read the same
//! records; the rules start from the earliest offset. `STROM_RULES_CRASH_CYCLES` (default 12)
//! sets the kills, `STROM_RULES_CRASH_CARTS` (default 20000) the input's size,
//! `STROM_CRASH_SEED` the seed.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::TestServer;

const CYCLES_DEFAULT: u64 = 12;
const CARTS_DEFAULT: u64 = 20_000;
const USERS: u64 = 3000;
const KILL_DELAY_MS_MIN: u64 = 300;
const KILL_DELAY_MS_MAX: u64 = 6000;
/// 2026-01-01T00:00:00Z: the input is history, so idle partitions' watermarks (the wall
/// clock) pass all of it once it is read.
const T0_MS: i64 = 1_767_225_600_000;

const RULES: [(&str, &str); 3] = [
    (
        "cart-abandoned.yaml",
        r#"name: cart-abandoned
streams: [events]
where: event.event in ["AddToCart", "Checkout"]
pattern:
  within: 30s
  steps:
    - name: cart
      match: event.event == "AddToCart"
    - name: checkout
      match: event.event == "Checkout" && event.properties.cart_id == cart.properties.cart_id
      absent: true
emit:
  stream: derived
  event: CartAbandoned
  properties: '{"cart_id": cart.properties.cart_id}'
actions:
  - webhook: crm
"#,
    ),
    (
        "big-checkouts.yaml",
        r#"name: big-checkouts
streams: [events]
filter: event.event == "Checkout" && event.properties.value > 150.0
emit:
  stream: derived
  event: BigCheckout
"#,
    ),
    (
        "adds-per-user.yaml",
        r#"name: adds-per-user
streams: [events]
where: event.event == "AddToCart"
window:
  type: tumbling
  size: 10m
  aggregates:
    adds: count()
    value: sum(event.properties.price)
emit:
  stream: derived
  event: AddsPerUser
"#,
    ),
];

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(receiver: SocketAddr, rules_dir: &Path) -> String {
    format!(
        "[streams]\npartitions = 2\n[rules]\ndir = \"{}\"\nstart_from = \"earliest\"\ncommit_interval_ms = 3000\n\
         idle_timeout_ms = 1000\noutput_partitions = 2\n[webhooks]\nallow_private = [\"127.0.0.1\"]\n\
         [[webhooks.destinations]]\nname = \"crm\"\nurl = \"http://{receiver}/hook\"\n\
         secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_initial_ms = 50\nretry_max_ms = 500\n",
        rules_dir.display()
    )
}

/// Carts of users, most checked out 10 s later, in event-time order.
fn input(carts: u64, seed: u64) -> Vec<Value> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut events = Vec::new();
    for cart in 0..carts {
        let user = format!("u{}", rng.u64(0..USERS));
        let at = T0_MS + cart as i64 * 37;
        let price = 5.0 + rng.u32(0..400) as f64;
        events.push((
            at,
            json!({"type": "track", "event": "AddToCart", "userId": user,
            "properties": {"cart_id": format!("c{cart}"), "price": price}}),
        ));
        if rng.u32(0..5) != 0 {
            events.push((
                at + 10_000,
                json!({"type": "track", "event": "Checkout", "userId": user,
                "properties": {"cart_id": format!("c{cart}"), "value": price}}),
            ));
        }
    }
    events.sort_by_key(|(at, _)| *at);
    events
        .into_iter()
        .map(|(at, mut event)| {
            event["timestamp"] = json!(strom_time(at));
            event
        })
        .collect()
}

fn strom_time(ms: i64) -> String {
    // Days since the epoch to a civil date (the input only spans 2026-01-01).
    let seconds = (ms - T0_MS) / 1000;
    format!("2026-01-01T{:02}:{:02}:{:02}.{:03}Z", seconds / 3600, seconds / 60 % 60, seconds % 60, ms % 1000)
}

type Received = Arc<Mutex<Vec<String>>>;

async fn receiver() -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let store = store.clone();
            async move {
                let id = headers.get("webhook-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                store.lock().unwrap().push(id);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

async fn get(http: &reqwest::Client, url: &str) -> Value {
    http.get(url).send().await.unwrap().json().await.unwrap()
}

/// Every record of a stream: the `strom-id` header of each.
async fn ids(http: &reqwest::Client, url: &str, stream: &str) -> Vec<String> {
    let described = get(http, &format!("{url}/v1/streams/{stream}")).await;
    let mut ids = Vec::new();
    for partition in described["partitions"].as_array().cloned().unwrap_or_default() {
        let (p, end) = (partition["partition"].as_u64().unwrap(), partition["log_end_offset"].as_u64().unwrap());
        let mut offset = 0;
        while offset < end {
            let page = get(
                http,
                &format!("{url}/v1/streams/{stream}/partitions/{p}/events?offset={offset}&max_records=10000"),
            )
            .await;
            for record in page["events"].as_array().unwrap() {
                ids.push(record["headers"]["strom-id"].as_str().expect("every output has an id").to_string());
            }
            offset = page["next_offset"].as_u64().unwrap();
        }
    }
    ids
}

/// Waits until every rule has read all its input, its watermark has passed all of it (its
/// timeouts and windows are final) and it holds no open state, and every delivery is done.
async fn wait_done(http: &reqwest::Client, url: &str, last_event_ms: i64) {
    for _ in 0..6000 {
        let rules = get(http, &format!("{url}/v1/rules")).await;
        let rules = rules["rules"].as_array().cloned().unwrap_or_default();
        let webhooks = get(http, &format!("{url}/v1/webhooks/destinations/crm")).await;
        let done = rules.len() == RULES.len()
            && rules.iter().all(|r| {
                r["lag_records"] == 0
                    && r["state_entries"] == 0
                    && r["state"] == "running"
                    && r["watermark_ms"].as_i64().is_some_and(|w| w > last_event_ms + 600_000)
            })
            && webhooks["lag_records"] == 0;
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the rules did not finish: {}", get(http, &format!("{url}/v1/rules")).await);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn write_rules(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in RULES {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn killed_rules_emit_what_a_clean_run_emits_and_no_id_twice() {
    let cycles = env("STROM_RULES_CRASH_CYCLES", CYCLES_DEFAULT);
    let carts = env("STROM_RULES_CRASH_CARTS", CARTS_DEFAULT);
    let seed = env("STROM_CRASH_SEED", 7);
    let mut rng = fastrand::Rng::with_seed(seed);
    let root = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let (crash_receiver, crash_received) = runtime.block_on(receiver());
    let (clean_receiver, clean_received) = runtime.block_on(receiver());
    let (crash_dir, clean_dir) = (root.path().join("crash"), root.path().join("clean"));
    let (crash_data, clean_data) = (crash_dir.join("data"), clean_dir.join("data"));
    let (crash_rules, clean_rules) = (crash_dir.join("rules"), clean_dir.join("rules"));
    std::fs::create_dir_all(&crash_rules).unwrap();
    let crash_log = crash_dir.join("server.log");

    // The input, written once with no rule running.
    let events = input(carts, seed);
    let last_event_ms = T0_MS + carts as i64 * 37 + 10_000;
    {
        let mut server = TestServer::start(&crash_data, &crash_log, &config(crash_receiver, &crash_rules));
        runtime.block_on(async {
            let created =
                http.post(format!("{}/v1/streams", server.url)).json(&json!({"name": "events", "partitions": 2}));
            assert!(created.send().await.unwrap().status().is_success());
            for chunk in events.chunks(2000) {
                let response =
                    http.post(format!("{}/v1/streams/events/events", server.url)).json(chunk).send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        });
        server.kill();
    }
    copy_dir(&crash_data, &clean_data);
    write_rules(&crash_rules);
    write_rules(&clean_rules);

    // Killed again and again while the rules work through the input.
    for cycle in 0..cycles {
        let mut server = TestServer::start(&crash_data, &crash_log, &config(crash_receiver, &crash_rules));
        let delay = rng.u64(KILL_DELAY_MS_MIN..KILL_DELAY_MS_MAX);
        let derived = runtime.block_on(async {
            let derived = get(&http, &format!("{}/v1/streams/derived", server.url)).await;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            derived["log_end_offset_total"].as_u64().unwrap_or(0)
        });
        server.kill();
        eprintln!("cycle {cycle}: {derived} derived events at the start; killed after {delay} ms");
    }
    let server = TestServer::start(&crash_data, &crash_log, &config(crash_receiver, &crash_rules));
    let (crash_derived, crash_deliveries) = runtime.block_on(async {
        wait_done(&http, &server.url, last_event_ms).await;
        if std::env::var("STROM_RULES_CRASH_DEBUG").is_ok() {
            eprintln!("{}", get(&http, &format!("{}/v1/rules", server.url)).await);
            eprintln!("{}", get(&http, &format!("{}/v1/streams", server.url)).await);
        }
        (ids(&http, &server.url, "derived").await, ids(&http, &server.url, "strom.deliveries").await)
    });
    drop(server);
    if std::env::var("STROM_RULES_CRASH_DEBUG").is_ok() {
        eprintln!("{}", std::fs::read_to_string(&crash_log).unwrap_or_default());
    }

    // The same input, never killed.
    let clean_log = clean_dir.join("server.log");
    let server = TestServer::start(&clean_data, &clean_log, &config(clean_receiver, &clean_rules));
    let (clean_derived, clean_deliveries) = runtime.block_on(async {
        wait_done(&http, &server.url, last_event_ms).await;
        (ids(&http, &server.url, "derived").await, ids(&http, &server.url, "strom.deliveries").await)
    });
    drop(server);

    for (what, crash, clean) in [
        ("derived events", &crash_derived, &clean_derived),
        ("delivery requests", &crash_deliveries, &clean_deliveries),
    ] {
        let unique: HashSet<&String> = crash.iter().collect();
        assert_eq!(unique.len(), crash.len(), "{what}: {} ids appended twice", crash.len() - unique.len());
        let (crash_set, clean_set): (BTreeSet<&String>, BTreeSet<&String>) =
            (crash.iter().collect(), clean.iter().collect());
        assert_eq!(clean_set.len(), clean.len(), "{what}: the clean run appended an id twice");
        let missing: Vec<_> = clean_set.difference(&crash_set).take(5).collect();
        let extra: Vec<_> = crash_set.difference(&clean_set).take(5).collect();
        assert!(missing.is_empty() && extra.is_empty(), "{what}: missing {missing:?}, extra {extra:?}");
    }
    assert!(crash_derived.len() > 1000, "the rules emitted only {}", crash_derived.len());
    // Every delivery reached the receiver at least once.
    let received: BTreeSet<String> = crash_received.lock().unwrap().iter().cloned().collect();
    let requested: BTreeSet<String> = crash_deliveries.iter().cloned().collect();
    assert_eq!(received, requested, "the crash run's webhook receiver");
    let clean: BTreeSet<String> = clean_received.lock().unwrap().iter().cloned().collect();
    assert_eq!(clean, requested);
    eprintln!(
        "{cycles} kills: {} derived events and {} deliveries, as in the clean run; {} webhook calls for them",
        crash_derived.len(),
        crash_deliveries.len(),
        crash_received.lock().unwrap().len()
    );
}
