//! The rules engine's crash test: SIGKILL the real server many times while its rules process
//! a stream, and compare with a run that was never killed. The derived events and delivery
//! requests, by id, must be the same sets, and no id may be appended twice; every delivery
//! must reach the webhook receiver at least once.
//!
//! The input is written first (and copied for the clean run), so both runs read the same
//! records; the rules start from the earliest offset. `STROM_RULES_CRASH_CYCLES` (default 12)
//! sets the kills, `STROM_RULES_CRASH_CARTS` (default 20000) the input's size,
//! `STROM_CRASH_SEED` the seed.
//!
//! The same on the Kafka backend, with the rules divided among two servers that are killed in
//! turns: `two_servers_sharing_rules_emit_what_a_clean_run_emits_and_no_id_twice`.

use std::collections::{BTreeSet, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The crash run appended no id twice and the same derived-event and delivery ids as the
/// clean run (and a good many), and each run's webhook receiver got exactly its deliveries.
/// What a failed run's server log says about hand-overs and failures (CI keeps no logs): how
/// often each telling message came, and the first warnings and errors.
fn log_digest(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let telling = [
        "partitions lost",
        "did not stop in time",
        "rule task failed",
        "not produced again",
        "commits cut short",
        "outputs already appended will be skipped",
        "task state restored from the changelog",
    ];
    let mut digest = format!("\nserver log {}:", log.display());
    for message in telling {
        digest += &format!("\n  {:>5} × {message}", text.matches(message).count());
    }
    let warnings = text
        .lines()
        .filter(|line| (line.contains(" WARN ") || line.contains(" ERROR ")) && !line.contains("no admin tokens"))
        .take(20);
    for line in warnings {
        digest += &format!("\n  {line}");
    }
    digest
}

fn assert_as_clean(
    crash: [&Vec<String>; 2],
    clean: [&Vec<String>; 2],
    received: [&Received; 2],
    seed: u64,
    crash_log: &Path,
) {
    let digest = || log_digest(crash_log);
    for ((what, crash), clean) in ["derived events", "delivery requests"].into_iter().zip(crash).zip(clean) {
        let mut seen = HashSet::new();
        let twice: BTreeSet<&String> = crash.iter().filter(|id| !seen.insert(*id)).collect();
        assert!(
            twice.is_empty(),
            "{what}: {} ids appended twice, e.g. {:?} (seed {seed}){}",
            twice.len(),
            twice.iter().take(3).collect::<Vec<_>>(),
            digest()
        );
        let (crash_set, clean_set): (BTreeSet<&String>, BTreeSet<&String>) =
            (crash.iter().collect(), clean.iter().collect());
        assert_eq!(clean_set.len(), clean.len(), "{what}: the clean run appended an id twice");
        let missing: Vec<_> = clean_set.difference(&crash_set).take(5).collect();
        let extra: Vec<_> = crash_set.difference(&clean_set).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{what}: missing {missing:?}, extra {extra:?} (seed {seed}){}",
            digest()
        );
    }
    assert!(crash[0].len() > 1000, "the rules emitted only {}", crash[0].len());
    // Every delivery reached the receiver at least once, and nothing else did.
    let requested: BTreeSet<String> = crash[1].iter().cloned().collect();
    for (run, received) in ["crash", "clean"].into_iter().zip(received) {
        let received: BTreeSet<String> = received.lock().unwrap().iter().cloned().collect();
        assert_eq!(received, requested, "the {run} run's webhook receiver");
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

    assert_as_clean(
        [&crash_derived, &crash_deliveries],
        [&clean_derived, &clean_deliveries],
        [&crash_received, &clean_received],
        seed,
        &crash_log,
    );
    eprintln!(
        "{cycles} kills: {} derived events and {} deliveries, as in the clean run; {} webhook calls for them",
        crash_derived.len(),
        crash_deliveries.len(),
        crash_received.lock().unwrap().len()
    );
}

const SHARED_CYCLES_DEFAULT: u64 = 8;
const SHARED_CARTS_DEFAULT: u64 = 60_000;
const SHARED_PARTITIONS: u32 = 4;
const SHARED_KILL_DELAY_MS_MIN: u64 = 500;
const SHARED_KILL_DELAY_MS_MAX: u64 = 3000;
const SHARED_RESTART_DELAY_MS_MAX: u64 = 1000;
/// How long the rules may take to finish after the last restart, and the deliveries after
/// that (bounds on waiting, not performance assertions).
const SHARED_DONE_TIMEOUT_MS: u64 = 180_000;
/// The finished state must hold this long: a task just handed over shows no lag until its
/// first turn.
const SHARED_DONE_STABLE_MS: u64 = 3000;

/// The rules of `RULES`, each `partitioned: true` (the filter always is): every rule runs as
/// one task per partition of `events`.
fn shared_rules() -> Vec<(&'static str, String)> {
    RULES
        .iter()
        .map(|(file, text)| {
            let partitioned = text.replacen("\nstreams: [events]\n", "\nstreams: [events]\npartitioned: true\n", 1);
            assert_ne!(&partitioned, text, "{file} names its streams as expected");
            (*file, partitioned)
        })
        .collect()
}

/// A server on the Kafka cluster `kafka` (its topics and groups prefixed with `prefix`),
/// with `config`'s rules and webhooks; a session expires 2 s after a server dies.
fn shared_config(kafka: &str, prefix: &str, receiver: SocketAddr, rules_dir: &Path) -> String {
    format!(
        "[log]\nbackend = \"kafka\"\n[log.kafka]\nbootstrap_servers = \"{kafka}\"\ntopic_prefix = \"{prefix}\"\n\
         linger_ms = 1\nproperties = {{ \"session.timeout.ms\" = \"2000\" }}\n{}",
        config(receiver, rules_dir)
    )
}

fn write_shared_rules(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in shared_rules() {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Whether the rules are done on the servers together: each rule has read all its input
/// (no lag) and holds no state on any server, each of its tasks runs on exactly one server,
/// and on every server that runs some of its tasks it runs and its watermark passed all the
/// input. `Err`: what is not done yet.
async fn shared_done(http: &reqwest::Client, urls: &[&str], last_event_ms: i64) -> Result<(), String> {
    let mut listed = Vec::new();
    for url in urls {
        let rules = http.get(format!("{url}/v1/rules")).send().await.map_err(|e| e.to_string())?;
        let rules: Value = rules.json().await.map_err(|e| e.to_string())?;
        listed.push(rules["rules"].as_array().cloned().unwrap_or_default());
    }
    for (file, _) in shared_rules() {
        let name = file.trim_end_matches(".yaml");
        let (mut lag, mut entries, mut here, mut tasks) = (0, 0, Vec::new(), None);
        for (url, rules) in urls.iter().zip(&listed) {
            let rule = rules.iter().find(|r| r["name"] == name).ok_or(format!("{url} has no rule {name}"))?;
            lag += rule["lag_records"].as_u64().ok_or(format!("{name} on {url}: no lag"))?;
            entries += rule["state_entries"].as_u64().ok_or(format!("{name} on {url}: no state size"))?;
            tasks = rule["tasks"].as_u64().or(tasks);
            let mine: Vec<u64> =
                rule["tasks_here"].as_array().map(|t| t.iter().filter_map(Value::as_u64).collect()).unwrap_or_default();
            // Past the input and its last 10-minute window.
            let passed = rule["watermark_ms"].as_i64().is_some_and(|w| w > last_event_ms + 600_000);
            if !mine.is_empty() && (rule["state"] != "running" || !passed) {
                return Err(format!("{name} on {url}: {} {}", rule["state"], rule["watermark_ms"]));
            }
            here.extend(mine);
        }
        here.sort();
        if tasks != Some(u64::from(SHARED_PARTITIONS)) || here != (0..u64::from(SHARED_PARTITIONS)).collect::<Vec<_>>()
        {
            return Err(format!("{name}: tasks {tasks:?}, run {here:?}"));
        }
        if lag > 0 || entries > 0 {
            return Err(format!("{name}: lag {lag}, {entries} state entries"));
        }
    }
    Ok(())
}

/// Waits until `shared_done` holds for `SHARED_DONE_STABLE_MS` on end.
async fn wait_shared_done(http: &reqwest::Client, urls: &[&str], last_event_ms: i64) {
    let deadline = Instant::now() + Duration::from_millis(SHARED_DONE_TIMEOUT_MS);
    let mut since: Option<Instant> = None;
    loop {
        match shared_done(http, urls, last_event_ms).await {
            Ok(()) => {
                let since = *since.get_or_insert_with(Instant::now);
                if since.elapsed() >= Duration::from_millis(SHARED_DONE_STABLE_MS) {
                    return;
                }
            }
            Err(why) => {
                since = None;
                if Instant::now() > deadline {
                    let mut statuses = String::new();
                    for url in urls {
                        statuses += &format!("\n{url}: {}", get(http, &format!("{url}/v1/rules")).await);
                    }
                    panic!("the rules did not finish ({why}):{statuses}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the receiver got every one of `requested` (at least once).
async fn wait_delivered(received: &Received, requested: &[String]) {
    let requested: BTreeSet<&String> = requested.iter().collect();
    let deadline = Instant::now() + Duration::from_millis(SHARED_DONE_TIMEOUT_MS);
    loop {
        let missing = {
            let received = received.lock().unwrap();
            let received: HashSet<&String> = received.iter().collect();
            requested.iter().filter(|id| !received.contains(**id)).count()
        };
        if missing == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{missing} of {} deliveries never reached the receiver", requested.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Rules divided among two servers on one Kafka cluster: one or the other is SIGKILLed
/// while the rules work through the input, many times, and restarted; the survivor takes
/// the dead one's tasks once its session expires (2 s here), restoring their state from the
/// rules' changelogs and skipping outputs already appended. The derived events and delivery
/// requests, by id, must be those of one server that was never killed on the same input
/// (the same four tasks per rule; it runs meanwhile, on its own topics), none twice; every
/// delivery must reach the receiver.
///
/// The input is written once into the cluster, as two identical topics (one per run), keyed
/// by user id so that the partitioned rules see every event of a user in one partition.
/// `STROM_SHARED_RULES_CRASH_CYCLES` (default 8) sets the kills,
/// `STROM_SHARED_RULES_CRASH_CARTS` (default 60000) the input's size, `STROM_CRASH_SEED`
/// the seed; with `STROM_RULES_CRASH_DEBUG` set the servers' directories and logs stay.
#[test]
fn two_servers_sharing_rules_emit_what_a_clean_run_emits_and_no_id_twice() {
    let cycles = env("STROM_SHARED_RULES_CRASH_CYCLES", SHARED_CYCLES_DEFAULT);
    let carts = env("STROM_SHARED_RULES_CRASH_CARTS", SHARED_CARTS_DEFAULT);
    let seed = env("STROM_CRASH_SEED", 7);
    eprintln!("shared rules crash test: {cycles} cycles, {carts} carts, STROM_CRASH_SEED={seed}");
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(seed);
    // With STROM_RULES_CRASH_DEBUG set, the servers' directories and logs stay.
    let temporary = tempfile::tempdir().unwrap();
    let (root, _temporary) = if std::env::var("STROM_RULES_CRASH_DEBUG").is_ok() {
        let root = temporary.keep();
        eprintln!("the servers' directories and logs stay in {}", root.display());
        (root, None)
    } else {
        (temporary.path().to_path_buf(), Some(temporary))
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let (crash_receiver, crash_received) = runtime.block_on(receiver());
    let (clean_receiver, clean_received) = runtime.block_on(receiver());
    let broker = TestServer::start_broker(&root.join("broker"), &root.join("broker.log"), "");
    let kafka = broker.kafka.clone().unwrap();

    // The input, written once into two topics of the cluster: the same records in the same
    // partitions, keyed by user id (the produce API's default key: userId, else anonymousId).
    let events = input(carts, seed);
    let last_event_ms = T0_MS + carts as i64 * 37 + 10_000;
    runtime.block_on(async {
        for topic in ["crash.events", "clean.events"] {
            let created = http
                .post(format!("{}/v1/streams", broker.url))
                .json(&json!({"name": topic, "partitions": SHARED_PARTITIONS}))
                .send()
                .await
                .unwrap();
            assert!(created.status().is_success(), "{topic}: {}", created.status());
        }
        for chunk in events.chunks(2000) {
            let mut placed = Vec::new();
            for topic in ["crash.events", "clean.events"] {
                let response =
                    http.post(format!("{}/v1/streams/{topic}/events", broker.url)).json(chunk).send().await.unwrap();
                assert_eq!(response.status(), 200);
                placed.push(response.json::<Value>().await.unwrap());
            }
            assert_eq!(placed[0], placed[1], "both copies of the input place each event alike");
        }
    });
    let written = started.elapsed();

    // The same input, on one server never killed, at the same time (its results do not
    // depend on its pace: the input is all there before it starts).
    let data = |dir: &Path| dir.join("data");
    let clean_dir = root.join("clean");
    let clean_rules = clean_dir.join("rules");
    write_shared_rules(&clean_rules);
    let server = TestServer::start(
        &data(&clean_dir),
        &root.join("clean.log"),
        &shared_config(&kafka, "clean.", clean_receiver, &clean_rules),
    );

    // Two servers on the cluster run the rules, killed in turns while they work.
    let crash_log = root.join("crash.log");
    let crash_dirs = [root.join("a"), root.join("b")];
    let crash_configs: Vec<String> = crash_dirs
        .iter()
        .map(|dir| {
            let rules = dir.join("rules");
            write_shared_rules(&rules);
            shared_config(&kafka, "crash.", crash_receiver, &rules)
        })
        .collect();
    let mut members: Vec<TestServer> =
        (0..2).map(|i| TestServer::start(&data(&crash_dirs[i]), &crash_log, &crash_configs[i])).collect();
    for cycle in 0..cycles {
        let delay = rng.u64(SHARED_KILL_DELAY_MS_MIN..=SHARED_KILL_DELAY_MS_MAX);
        std::thread::sleep(Duration::from_millis(delay));
        let victim = (cycle % 2) as usize;
        let derived = runtime.block_on(get(&http, &format!("{}/v1/streams/crash.derived", broker.url)));
        members[victim].kill();
        let down = rng.u64(0..=SHARED_RESTART_DELAY_MS_MAX);
        eprintln!(
            "cycle {cycle} at {:.1} s: server {victim} killed after {delay} ms, at {} derived events; restarted \
             after {down} ms",
            started.elapsed().as_secs_f64(),
            derived["log_end_offset_total"].as_u64().unwrap_or(0)
        );
        std::thread::sleep(Duration::from_millis(down));
        members[victim] = TestServer::start(&data(&crash_dirs[victim]), &crash_log, &crash_configs[victim]);
    }
    let killed = started.elapsed();
    let (crash_derived, crash_deliveries) = runtime.block_on(async {
        let urls: Vec<&str> = members.iter().map(|m| m.url.as_str()).collect();
        wait_shared_done(&http, &urls, last_event_ms).await;
        let ids =
            (ids(&http, &broker.url, "crash.derived").await, ids(&http, &broker.url, "crash.strom.deliveries").await);
        wait_delivered(&crash_received, &ids.1).await;
        ids
    });
    drop(members);
    let crash_done = started.elapsed();

    let (clean_derived, clean_deliveries) = runtime.block_on(async {
        wait_shared_done(&http, &[server.url.as_str()], last_event_ms).await;
        let ids =
            (ids(&http, &broker.url, "clean.derived").await, ids(&http, &broker.url, "clean.strom.deliveries").await);
        wait_delivered(&clean_received, &ids.1).await;
        ids
    });
    drop(server);
    let clean_done = started.elapsed();
    drop(broker);

    assert_as_clean(
        [&crash_derived, &crash_deliveries],
        [&clean_derived, &clean_deliveries],
        [&crash_received, &clean_received],
        seed,
        &crash_log,
    );
    let logs = std::fs::read_to_string(&crash_log).unwrap_or_default();
    eprintln!(
        "shared rules crash test: {cycles} kills: {} derived events and {} deliveries, as in the clean run, none \
         twice; {} webhook calls for them; {} task states restored from the changelogs, {} resumptions skipping \
         outputs (input {:.1} s, kills until {:.1} s, crash run done {:.1} s, clean run done {:.1} s)",
        crash_derived.len(),
        crash_deliveries.len(),
        crash_received.lock().unwrap().len(),
        logs.matches("task state restored from the changelog").count(),
        logs.matches("outputs already appended will be skipped").count(),
        written.as_secs_f64(),
        killed.as_secs_f64(),
        crash_done.as_secs_f64(),
        clean_done.as_secs_f64(),
    );
}
