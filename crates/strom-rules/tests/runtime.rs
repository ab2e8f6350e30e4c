//! The runtime over a real log in a temporary directory: crash recovery without duplicate
//! ids, state across restarts, hot reload, the API operations and backtests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use strom_log::{Clock, Durability, EncodedBatch, Log, LogConfig, ManualClock, RecordIn, StreamConfig};
use strom_rules::{
    BacktestRequest, BacktestRule, CrashPoint, Engine, EngineConfig, Format, Input, OutputKind, Position, Rule, Rules,
    RulesConfig, RulesError, RunState, StartFrom,
};

const T0: i64 = 1_795_334_400_000; // 2026-11-22T08:00:00Z

fn iso(ms: i64) -> String {
    strom_rules::format_time_ms(ms)
}

fn open_log(dir: &Path, clock: Arc<dyn Clock>) -> Arc<Log> {
    let config =
        LogConfig { clock, retention_check_interval: Duration::from_secs(3600), ..LogConfig::new(dir.join("log")) };
    Log::open(config).expect("log opens")
}

fn rules_config(dir: &Path) -> RulesConfig {
    RulesConfig {
        destinations: ["coupons".to_string()].into(),
        start_from: StartFrom::Earliest,
        reload_interval_ms: 0,
        ..RulesConfig::new(dir.join("rules"), dir.join("rules-state.redb"))
    }
}

fn event(name: &str, user: &str, time_ms: i64, properties: Value) -> Value {
    json!({"type": "track", "event": name, "userId": user, "timestamp": iso(time_ms), "properties": properties})
}

/// Appends events, keyed by user, to partition `murmur2(user) % partitions`.
async fn append(log: &Log, stream: &str, events: &[Value]) {
    let stream = log.stream(stream).unwrap();
    let partitions = stream.partitions().len() as u32;
    let mut groups: BTreeMap<u32, Vec<RecordIn>> = BTreeMap::new();
    for event in events {
        let key = event["userId"].as_str().unwrap().to_string();
        let partition = strom_log::partitioner::partition_for_key(key.as_bytes(), partitions);
        groups.entry(partition).or_default().push(RecordIn {
            key: Some(Bytes::from(key)),
            value: Some(Bytes::from(event.to_string())),
            timestamp_ms: T0,
            headers: Vec::new(),
        });
    }
    for (partition, records) in groups {
        let batch = EncodedBatch::encode(&records).unwrap();
        stream.partition(partition).unwrap().append(batch, Durability::Sync).await.unwrap();
    }
}

/// Every record of a stream: (key, id header, value).
fn read_stream(log: &Log, stream: &str) -> Vec<(String, String, Value)> {
    let Ok(stream) = log.stream(stream) else { return Vec::new() };
    let mut out = Vec::new();
    for partition in stream.partitions() {
        let mut from = partition.log_start_offset();
        loop {
            let read = partition.read_records(from, 1000, 1 << 20).unwrap();
            if read.records.is_empty() {
                break;
            }
            for record in &read.records {
                let header = |name: &str| {
                    record
                        .headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.clone())
                        .map(|v| String::from_utf8(v.to_vec()).unwrap())
                };
                let key = String::from_utf8(record.key.clone().unwrap_or_default().to_vec()).unwrap();
                let value: Value = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
                out.push((key, header("strom-id").expect("every output has an id"), value));
                assert!(header("strom-rule").is_some(), "every output names its rule");
            }
            from = read.next_offset;
        }
    }
    out
}

/// Waits (up to a minute; machines are slow, not wrong) for a condition.
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    for _ in 0..3000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

const FILTER_RULE: &str = r#"
name: adds
streams: [events]
filter: event.event == "AddToCart"
emit:
  stream: derived
  event: Added
  properties: '{"sku": event.properties.sku}'
actions:
  - webhook: coupons
"#;

fn shop_events(users: usize, per_user: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..per_user {
        for u in 0..users {
            let name = if (u + i) % 3 == 0 { "PageViewed" } else { "AddToCart" };
            let time = T0 + (i * users + u) as i64 * 10;
            events.push(event(
                name,
                &format!("u{u}"),
                time,
                json!({"sku": format!("S{i}"), "cart_id": format!("c{u}")}),
            ));
        }
    }
    events
}

/// The ids the engine alone gives for these events in this order (the reference).
fn reference_ids(source: &str, log: &Log, stream: &str) -> BTreeSet<String> {
    let rule = Arc::new(Rule::parse(source, Format::Yaml, "reference").unwrap());
    let mut engine = Engine::new(rule, EngineConfig::default());
    let stream = log.stream(stream).unwrap();
    let mut outputs = Vec::new();
    for partition in stream.partitions() {
        let read = partition.read_records(0, 100_000, 64 << 20).unwrap();
        for record in read.records {
            let value: Value = serde_json::from_slice(record.value.as_ref().unwrap()).unwrap();
            let input = Input {
                stream: &stream.name,
                partition: partition.id(),
                offset: record.offset,
                record_timestamp_ms: record.timestamp_ms,
                event: &value,
            };
            engine.process(&input, T0, &mut outputs);
        }
    }
    outputs.iter().filter(|o| o.kind == OutputKind::Derived).map(|o| o.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_append_and_commit_resumes_from_the_last_commit_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = open_log(dir.path(), clock.clone());
    log.create_stream("events", StreamConfig { partitions: 2, ..StreamConfig::default() }).await.unwrap();
    let events = shop_events(50, 40);
    let (first, second) = events.split_at(events.len() / 2);
    append(&log, "events", first).await;
    let expected_adds = events.iter().filter(|e| e["event"] == "AddToCart").count();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/adds.yaml"), FILTER_RULE).unwrap();

    // First run: commits at start, never again before the crash (a long commit interval);
    // it appends the outputs of the first half, then of the second, and crashes before
    // committing either.
    let crash = CrashPoint::after_appends(2);
    let config =
        RulesConfig { commit_interval_ms: 3_600_000, crash_point: Some(crash.clone()), ..rules_config(dir.path()) };
    let rules = Rules::start(log.clone(), config, clock.clone()).unwrap();
    wait_processed(&rules, "adds", first.len() as u64).await;
    append(&log, "events", second).await;
    eventually("the crash point", async || crash.crashed()).await;
    let first_adds = first.iter().filter(|e| e["event"] == "AddToCart").count();
    assert!(
        read_stream(&log, "derived").len() > first_adds,
        "outputs of both halves went out before the crash, none of them committed"
    );
    rules.close().await;
    drop(rules);

    // Second run: resumes from the commit made at start, re-processes what the first run
    // did, and skips the outputs that already went out.
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    wait_processed(&rules, "adds", events.len() as u64).await;
    let status = rules.get("adds").await.unwrap();
    rules.close().await;

    let derived = read_stream(&log, "derived");
    let ids: BTreeSet<String> = derived.iter().map(|(_, id, _)| id.clone()).collect();
    assert_eq!(ids.len(), derived.len(), "no id is appended twice");
    assert_eq!(derived.len(), expected_adds);
    assert_eq!(ids, reference_ids(FILTER_RULE, &log, "events"), "the same ids as one uninterrupted run");
    for (key, id, value) in &derived {
        assert_eq!(value["messageId"], json!(id));
        assert_eq!(value["userId"], json!(key));
        assert_eq!(value["context"]["rule"]["name"], "adds");
    }
    let deliveries = read_stream(&log, "strom.deliveries");
    let delivery_ids: BTreeSet<&String> = deliveries.iter().map(|(_, id, _)| id).collect();
    assert_eq!(delivery_ids.len(), deliveries.len(), "no delivery id is appended twice");
    assert_eq!(deliveries.len(), expected_adds);
    assert!(deliveries.iter().all(|(key, _, value)| key == "coupons" && value["destination"] == "coupons"));
    assert_eq!(status.state, RunState::Running);
    assert_eq!(
        status.counters.events_in,
        events.len() as u64,
        "the second run re-read everything after the last commit"
    );
    assert_eq!(status.counters.emits, expected_adds as u64, "and produced every output again (skipped as duplicates)");
}

const CART_RULE: &str = r#"
name: cart-abandoned
streams: [events]
where: event.event in ["AddToCart", "Checkout"]
pattern:
  within: 30s
  start: latest
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
"#;

/// A log at T0 (manual clock) with a two-partition `events` stream, and the cart rule in
/// the rules directory.
async fn cart_rule_on_two_partitions() -> (tempfile::TempDir, Arc<ManualClock>, Arc<Log>) {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = open_log(dir.path(), clock.clone());
    log.create_stream("events", StreamConfig { partitions: 2, ..StreamConfig::default() }).await.unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/cart-abandoned.yaml"), CART_RULE).unwrap();
    (dir, clock, log)
}

async fn wait_processed(rules: &Rules, name: &str, events: u64) {
    eventually(&format!("{name} to process {events} events"), async || {
        rules.get(name).await.is_ok_and(|s| s.counters.events_in >= events && s.lag_records == 0)
    })
    .await;
}

/// A run emits what the wall clock finalised (carts timed out by idle partitions) and
/// crashes before committing. Its re-run reads the same input but is stopped before its wall
/// clock finalises the carts again, so it has not produced those outputs again when it
/// commits: that commit must still point the next run at them, which then skips them when
/// they fire instead of appending them a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_the_wall_clock_finalised_are_not_appended_twice_across_two_restarts() {
    let (dir, clock, log) = cart_rule_on_two_partitions().await;
    let carts: Vec<Value> = (0..20)
        .map(|u| event("AddToCart", &format!("u{u}"), T0 + u * 100, json!({"cart_id": format!("c{u}")})))
        .collect();
    append(&log, "events", &carts).await;
    let seldom = |crash| RulesConfig { commit_interval_ms: 3_600_000, crash_point: crash, ..rules_config(dir.path()) };

    // First run: reads the carts (it commits only at its start); the wall clock moves on,
    // the idle partitions time the carts out, and it crashes once their outputs are out.
    let crash = CrashPoint::after_appends(1);
    let rules = Rules::start(log.clone(), seldom(Some(crash.clone())), clock.clone()).unwrap();
    wait_processed(&rules, "cart-abandoned", carts.len() as u64).await;
    clock.advance_ms(60_000);
    eventually("the crash point", async || crash.crashed()).await;
    rules.close().await;
    drop(rules);
    assert_eq!(read_stream(&log, "derived").len(), carts.len(), "every cart timed out before the crash");

    // Second run: reads the carts again, but its wall clock stands still, so none times out
    // before it stops (a task moved on at once, say) and commits.
    let rules = Rules::start(log.clone(), seldom(None), clock.clone()).unwrap();
    wait_processed(&rules, "cart-abandoned", carts.len() as u64).await;
    let reopened = rules.get("cart-abandoned").await.unwrap().state_entries;
    rules.close().await;
    drop(rules);
    assert_eq!(reopened, carts.len() as u64, "the second run had the carts open again");
    assert_eq!(read_stream(&log, "derived").len(), carts.len());

    // Third run: the wall clock moves on and the carts time out again; their outputs were
    // appended by the first run.
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    eventually("the third run", async || rules.get("cart-abandoned").await.unwrap().state == RunState::Running).await;
    clock.advance_ms(60_000);
    eventually("the carts to time out again", async || rules.get("cart-abandoned").await.unwrap().state_entries == 0)
        .await;
    rules.close().await;
    let derived = read_stream(&log, "derived");
    let ids: BTreeSet<&String> = derived.iter().map(|(_, id, _)| id).collect();
    assert_eq!(ids.len(), derived.len(), "no id is appended twice");
    assert_eq!(derived.len(), carts.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_partial_matches_survive_a_restart_and_time_out_by_the_wall_clock() {
    let (dir, clock, log) = cart_rule_on_two_partitions().await;
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    append(
        &log,
        "events",
        &[
            event("AddToCart", "u1", T0, json!({"cart_id": "c1"})),
            event("AddToCart", "u2", T0 + 1000, json!({"cart_id": "c2"})),
            event("Checkout", "u2", T0 + 5000, json!({"cart_id": "c2"})),
            event("AddToCart", "u3", T0 + 2000, json!({"cart_id": "c3"})),
        ],
    )
    .await;
    wait_processed(&rules, "cart-abandoned", 4).await;
    assert_eq!(rules.get("cart-abandoned").await.unwrap().state_entries, 2, "u1 and u3 have open carts");
    rules.close().await;
    drop(rules);

    // After the restart the carts are still open; nothing arrives, and the wall clock alone
    // moves the idle partitions' watermarks past the deadlines.
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    eventually("the restarted rule", async || rules.get("cart-abandoned").await.unwrap().state == RunState::Running)
        .await;
    assert_eq!(rules.get("cart-abandoned").await.unwrap().state_entries, 2);
    clock.advance_ms(40_000);
    eventually("two abandoned carts", async || read_stream(&log, "derived").len() == 2).await;
    let carts: BTreeSet<String> = read_stream(&log, "derived")
        .iter()
        .map(|(_, _, v)| v["properties"]["cart_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(carts, ["c1".to_string(), "c3".to_string()].into());
    rules.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_keeps_the_state_of_unchanged_rules() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = open_log(dir.path(), clock.clone());
    log.create_stream("events", StreamConfig::default()).await.unwrap();
    let rules_dir = dir.path().join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("cart-abandoned.yaml"), CART_RULE).unwrap();
    std::fs::write(rules_dir.join("adds.yaml"), FILTER_RULE).unwrap();
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    append(&log, "events", &[event("AddToCart", "u1", T0, json!({"cart_id": "c1", "sku": "S1"}))]).await;
    wait_processed(&rules, "cart-abandoned", 1).await;
    wait_processed(&rules, "adds", 1).await;

    // Change one rule, break nothing, add one, and reload.
    std::fs::write(rules_dir.join("adds.yaml"), FILTER_RULE.replace("event: Added", "event: AddedV2")).unwrap();
    std::fs::write(rules_dir.join("broken.yaml"), "name: broken\nstreams: [events]\nfilter: 'event.'\n").unwrap();
    let report = rules.reload().await.unwrap();
    assert_eq!(report.changed, ["adds"]);
    assert_eq!(report.unchanged, ["cart-abandoned"]);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("broken.yaml:3:9: filter: CEL"), "{}", report.errors[0]);

    let cart = rules.get("cart-abandoned").await.unwrap();
    assert_eq!(cart.state_entries, 1, "the unchanged rule kept its open cart");
    assert_eq!(cart.counters.events_in, 1, "and its counters: it was not restarted");
    // The changed rule starts afresh from where the old version stopped: it does not emit
    // the first event again.
    append(&log, "events", &[event("AddToCart", "u2", T0 + 1000, json!({"cart_id": "c2", "sku": "S2"}))]).await;
    wait_processed(&rules, "adds", 1).await;
    eventually("the new version's output", async || {
        read_stream(&log, "derived").iter().any(|(_, _, v)| v["event"] == "AddedV2")
    })
    .await;
    let names: Vec<String> =
        read_stream(&log, "derived").iter().map(|(_, _, v)| v["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(names.iter().filter(|n| *n == "Added").count(), 1);
    assert_eq!(names.iter().filter(|n| *n == "AddedV2").count(), 1);

    // The cart started before the reload still times out.
    clock.advance_ms(40_000);
    eventually("the cart started before the reload to time out", async || {
        read_stream(&log, "derived").iter().any(|(_, _, v)| v["event"] == "CartAbandoned")
    })
    .await;

    // Removing a file stops the rule and forgets it.
    std::fs::remove_file(rules_dir.join("adds.yaml")).unwrap();
    let report = rules.reload().await.unwrap();
    assert_eq!(report.removed, ["adds"]);
    assert!(matches!(rules.get("adds").await, Err(RulesError::NotFound(_))));
    rules.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_puts_pauses_and_deletes_rules_through_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = open_log(dir.path(), clock.clone());
    log.create_stream("events", StreamConfig::default()).await.unwrap();
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();

    let error =
        rules.put("adds", &FILTER_RULE.replace("webhook: coupons", "webhook: crm"), Format::Yaml).await.unwrap_err();
    let RulesError::Invalid(error) = error else { panic!("{error}") };
    assert_eq!((error.line, error.field.as_str()), (Some(10), "actions[0].webhook"), "{error}");
    let error = rules.put("other-name", FILTER_RULE, Format::Yaml).await.unwrap_err();
    assert!(error.to_string().contains("name: is \"adds\" but the file is named \"other-name\""), "{error}");

    let status = rules.put("adds", FILTER_RULE, Format::Yaml).await.unwrap();
    assert_eq!((status.name.as_str(), status.kind, status.paused), ("adds", "filter", false));
    assert_eq!(std::fs::read_to_string(dir.path().join("rules/adds.yaml")).unwrap(), FILTER_RULE);
    // The same rule in TOML replaces the YAML file.
    let toml = "name = \"adds\"\nstreams = [\"events\"]\nfilter = 'event.event == \"AddToCart\"'\n[emit]\nstream = \"derived\"\n";
    rules.put("adds", toml, Format::Toml).await.unwrap();
    assert!(!dir.path().join("rules/adds.yaml").exists());
    assert!(dir.path().join("rules/adds.toml").exists());

    let status = rules.pause("adds", true).await.unwrap();
    assert_eq!((status.state, status.paused), (RunState::Paused, true));
    append(&log, "events", &[event("AddToCart", "u1", T0, json!({}))]).await;
    // Paused across a restart too.
    rules.close().await;
    drop(rules);
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    assert!(rules.get("adds").await.unwrap().paused);
    assert!(read_stream(&log, "derived").is_empty(), "a paused rule emits nothing");
    rules.pause("adds", false).await.unwrap();
    eventually("the resumed rule's output", async || read_stream(&log, "derived").len() == 1).await;

    assert_eq!(rules.list().await.len(), 1);
    // A file removed while the runtime is down: its rule's state is forgotten at start, so a
    // rule of that name created later starts from scratch (here: from the log's start again).
    rules.close().await;
    drop(rules);
    std::fs::remove_file(dir.path().join("rules/adds.toml")).unwrap();
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    assert!(rules.list().await.is_empty());
    rules.put("adds", toml, Format::Toml).await.unwrap();
    eventually("the re-created rule to read everything again", async || {
        rules.get("adds").await.is_ok_and(|s| s.counters.events_in == 1 && s.lag_records == 0)
    })
    .await;
    // A new rule of the same name and version: the same ids as its predecessor's outputs
    // (a consumer deduplicating by messageId sees one event).
    eventually("its output", async || read_stream(&log, "derived").len() == 2).await;
    let ids: BTreeSet<String> = read_stream(&log, "derived").into_iter().map(|(_, id, _)| id).collect();
    assert_eq!(ids.len(), 1);
    rules.delete("adds").await.unwrap();
    assert!(rules.list().await.is_empty());
    assert!(!dir.path().join("rules/adds.toml").exists());
    assert!(matches!(rules.delete("adds").await, Err(RulesError::NotFound(_))));
    rules.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backtest_reports_what_a_rule_would_have_emitted_and_emits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = open_log(dir.path(), clock.clone());
    log.create_stream("events", StreamConfig { partitions: 2, ..StreamConfig::default() }).await.unwrap();
    append(
        &log,
        "events",
        &[
            event("AddToCart", "u1", T0, json!({"cart_id": "c1"})),
            event("AddToCart", "u2", T0 + 1000, json!({"cart_id": "c2"})),
            event("Checkout", "u2", T0 + 5000, json!({"cart_id": "c2"})),
            event("PageViewed", "u3", T0 + 60_000, json!({})),
        ],
    )
    .await;
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    let request = BacktestRequest {
        rule: BacktestRule::Source { source: CART_RULE.to_string(), format: Format::Yaml },
        stream: None,
        from: Some(Position::Offset(0)),
        to: None,
        max_outputs: 10,
        flush: true,
    };
    let report = rules.backtest(request.clone()).await.unwrap();
    assert_eq!(report.events_read, 4);
    assert_eq!(report.outputs_total, 1);
    assert_eq!(report.outputs[0].json()["properties"]["cart_id"], "c1");
    assert!(log.stream("derived").is_err(), "a backtest appends nothing");

    let report = rules.backtest(BacktestRequest { max_outputs: 0, ..request.clone() }).await.unwrap();
    assert_eq!((report.outputs.len(), report.outputs_total, report.truncated), (0, 1, true));

    // By record time: every record was appended at T0, so a range from T0 + 1 ms is empty.
    let later = BacktestRequest { from: Some(Position::TimestampMs(T0 + 1)), ..request.clone() };
    assert_eq!(rules.backtest(later).await.unwrap().events_read, 0);
    let all = BacktestRequest { from: Some(Position::TimestampMs(T0)), ..request.clone() };
    assert_eq!(rules.backtest(all).await.unwrap().events_read, 4);
    // A rule that does not validate is an error with its place, not a report.
    let broken = BacktestRequest {
        rule: BacktestRule::Source { source: CART_RULE.replace("within: 30s", "within: soon"), format: Format::Yaml },
        ..request
    };
    let error = rules.backtest(broken).await.unwrap_err();
    assert!(error.to_string().starts_with("backtest:6:11: pattern.within:"), "{error}");
    rules.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_writes_to_its_own_input_does_not_read_its_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = open_log(dir.path(), clock.clone());
    log.create_stream("events", StreamConfig::default()).await.unwrap();
    std::fs::create_dir_all(dir.path().join("rules")).unwrap();
    let source = FILTER_RULE
        .replace("stream: derived", "stream: events")
        .replace("filter: event.event == \"AddToCart\"", "filter: has(event.properties)");
    std::fs::write(dir.path().join("rules/adds.yaml"), &source).unwrap();
    let rules = Rules::start(log.clone(), rules_config(dir.path()), clock.clone()).unwrap();
    append(&log, "events", &[event("AddToCart", "u1", T0, json!({"sku": "S1"}))]).await;
    wait_processed(&rules, "adds", 1).await;
    // Its output is in `events` now, and would match its own filter.
    eventually("the output", async || read_stream_all(&log, "events") == 2).await;
    append(&log, "events", &[event("AddToCart", "u2", T0, json!({"sku": "S2"}))]).await;
    wait_processed(&rules, "adds", 2).await;
    eventually("the second output", async || read_stream_all(&log, "events") == 4).await;
    let status = rules.get("adds").await.unwrap();
    assert_eq!((status.counters.events_in, status.counters.emits), (2, 2), "its own outputs were not input");
    rules.close().await;
}

/// Records in a stream, outputs or not.
fn read_stream_all(log: &Log, stream: &str) -> usize {
    let stream = log.stream(stream).unwrap();
    stream.partitions().iter().map(|p| (p.log_end_offset() - p.log_start_offset()) as usize).sum()
}
