//! `cargo bench -p strom-rules`: the rules engine's figures for docs/BENCHMARKS.md.
//!
//! 1. Shop traffic (a Rust port of /work/shared/workload/shop_events.py's mix, about 560
//!    bytes per event) is appended to a log with 4 partitions.
//! 2. A filter rule and the cart-abandonment rule each run through the real runtime from the
//!    log's start: reading, JSON parsing, the engine, appending outputs, committing state
//!    every second. One rule is one task, so this is one core's work per rule.
//! 3. The engine alone over the same events (parsed JSON in memory).
//! 4. State size: 1,000,000 open carts (one AddToCart each from 1,000,000 users within the
//!    rule's 30 s), measured as bytes allocated by the engine and as bytes in the state store.
//!
//! Environment: STROM_BENCH_EVENTS (default 1,000,000), STROM_BENCH_USERS (100,000),
//! STROM_BENCH_CARTS (1,000,000; 0 skips the state-size run), STROM_BENCH_DIR (where data goes;
//! default: Cargo's target tmp dir).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strom_log::{Clock, Durability, EncodedBatch, Log, LogConfig, ManualClock, RecordIn, StreamConfig, SystemClock};
use strom_rules::{Engine, EngineConfig, Format, Input, Rule, Rules, RulesConfig, StartFrom};

/// Counts bytes currently allocated, for the state-size measurement.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);
/// Counting is on only for the state-size run: a shared counter would slow every thread.
static COUNTING: AtomicBool = AtomicBool::new(false);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATED.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const T0: i64 = 1_795_334_400_000; // 2026-11-22T08:00:00Z

const FILTER_RULE: &str = r#"
name: expensive-adds
streams: [events]
filter: event.event == "AddToCart" && event.properties.price > 150.0
emit:
  stream: derived
  event: ExpensiveAdd
  properties: '{"sku": event.properties.sku, "price": event.properties.price}'
"#;

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
  properties: '{"cart_id": cart.properties.cart_id, "sku": cart.properties.sku}'
actions:
  - webhook: coupons
"#;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// SplitMix64: a deterministic generator without a dependency.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct User {
    anonymous: String,
    known: bool,
    cart: Option<String>,
}

/// Shop traffic in shop_events.py's mix: (key, JSON).
fn shop_events(count: usize, users: usize, seed: u64) -> Vec<(String, String)> {
    let mut random = Random(seed);
    let mut sessions: Vec<User> = (0..users)
        .map(|u| User {
            anonymous: format!("{:032x}", random.next() as u128 * 7 + u as u128),
            known: random.unit() < 0.4,
            cart: None,
        })
        .collect();
    let agents = [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    ];
    let mut time = T0;
    let mut events = Vec::with_capacity(count);
    for n in 0..count {
        time += random.below(100) as i64;
        let u = random.below(users as u64) as usize;
        let r = random.unit();
        let sku = format!("SKU-{:05}", random.below(2000));
        let price = 4.0 + (random.below(17_600) as f64) / 100.0;
        let (kind, name, properties) = if r < 0.45 {
            (
                "page",
                "PageViewed",
                r#"{"path":"/c/shoes","url":"https://shop.example/c/shoes","title":"Shop"}"#.to_string(),
            )
        } else if r < 0.70 {
            (
                "track",
                "ProductViewed",
                format!(r#"{{"sku":"{sku}","category":"shoes","price":{price},"currency":"EUR"}}"#),
            )
        } else if r < 0.77 {
            ("track", "ProductsSearched", r#"{"query":"red shoes"}"#.to_string())
        } else if r < 0.90 {
            let cart = sessions[u].cart.get_or_insert_with(|| format!("cart-{u}-{n}")).clone();
            let quantity = 1 + random.below(3);
            (
                "track",
                "AddToCart",
                format!(
                    r#"{{"cart_id":"{cart}","sku":"{sku}","category":"shoes","price":{price},"quantity":{quantity},"currency":"EUR"}}"#
                ),
            )
        } else if r < 0.93 && sessions[u].cart.is_some() {
            let cart = sessions[u].cart.take().unwrap_or_default();
            ("track", "Checkout", format!(r#"{{"cart_id":"{cart}","value":{price},"currency":"EUR","items":2}}"#))
        } else if r < 0.97 {
            sessions[u].known = true;
            ("identify", "", format!(r#"{{"email":"user{u}@mail.example","plan":"free"}}"#))
        } else {
            ("track", "NewsletterOptIn", r#"{"list":"weekly","source":"footer"}"#.to_string())
        };
        let session = &sessions[u];
        let user = if session.known { format!(r#""userId":"user-{u}","#) } else { String::new() };
        let key = if session.known { format!("user-{u}") } else { session.anonymous.clone() };
        let timestamp = strom_rules::format_time_ms(time);
        let event = if kind == "track" { format!(r#""event":"{name}","#) } else { String::new() };
        let body = if kind == "identify" { "traits" } else { "properties" };
        let json = format!(
            r#"{{"type":"{kind}",{event}{user}"anonymousId":"{}","messageId":"{:032x}","timestamp":"{timestamp}","sentAt":"{timestamp}","{body}":{properties},"context":{{"library":{{"name":"shop-workload","version":"1.0"}},"userAgent":"{}","ip":"203.0.113.{}","locale":"de-DE","page":{{"path":"/","referrer":""}}}}}}"#,
            session.anonymous,
            random.next() as u128,
            agents[u % 2],
            u % 250 + 1,
        );
        events.push((key, json));
    }
    events
}

async fn fill(log: &Log, events: &[(String, String)]) {
    let stream = log.stream("events").unwrap();
    let partitions = stream.partitions().len() as u32;
    let mut groups: Vec<Vec<RecordIn>> = (0..partitions).map(|_| Vec::new()).collect();
    for (key, json) in events {
        let partition = strom_log::partitioner::partition_for_key(key.as_bytes(), partitions);
        groups[partition as usize].push(RecordIn {
            key: Some(Bytes::copy_from_slice(key.as_bytes())),
            value: Some(Bytes::copy_from_slice(json.as_bytes())),
            timestamp_ms: T0,
            headers: Vec::new(),
        });
    }
    for (partition, records) in groups.iter().enumerate() {
        for chunk in records.chunks(1000) {
            let batch = EncodedBatch::encode(chunk).unwrap();
            stream.partition(partition as u32).unwrap().append(batch, Durability::Buffered).await.unwrap();
        }
    }
}

fn rules_config(dir: &std::path::Path) -> RulesConfig {
    RulesConfig {
        destinations: ["coupons".to_string()].into(),
        start_from: StartFrom::Earliest,
        reload_interval_ms: 0,
        commit_interval_ms: 1000,
        ..RulesConfig::new(dir.join("rules"), dir.join("rules-state.redb"))
    }
}

/// Runs one rule through the runtime over everything in `events`; prints its rate.
async fn runtime_rate(
    log: &Arc<Log>,
    base: &std::path::Path,
    label: &str,
    source: &str,
    events: u64,
    clock: Arc<dyn Clock>,
) {
    let dir = tempfile::tempdir_in(base).unwrap();
    let config = rules_config(dir.path());
    std::fs::create_dir_all(&config.rules_dir).unwrap();
    let rule = Rule::parse(source, Format::Yaml, label).unwrap();
    std::fs::write(config.rules_dir.join(format!("{}.yaml", rule.name)), source).unwrap();
    let started = Instant::now();
    let rules = Rules::start(log.clone(), config.clone(), clock).unwrap();
    let status = loop {
        let status = rules.get(&rule.name).await.unwrap();
        if status.counters.events_in >= events && status.lag_records == 0 {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let elapsed = started.elapsed().as_secs_f64();
    rules.close().await;
    let state_bytes = std::fs::metadata(&config.state_path).map(|m| m.len()).unwrap_or(0);
    println!(
        "runtime {label}: {events} events in {elapsed:.2} s = {:.0} events/s; {} matches, {} emits, {} deliveries; state store {} KiB",
        events as f64 / elapsed,
        status.counters.matches,
        status.counters.emits,
        status.counters.deliveries,
        state_bytes / 1024,
    );
}

fn engine_rate(label: &str, source: &str, events: &[(String, String)]) {
    let rule = Arc::new(Rule::parse(source, Format::Yaml, label).unwrap());
    let mut engine = Engine::new(rule.clone(), EngineConfig::default());
    let paths = engine.input_paths().clone();
    let parsed: Vec<serde_json::Value> =
        events.iter().map(|(_, json)| strom_rules::parse_pruned(json.as_bytes(), &paths).unwrap()).collect();
    let mut outputs = Vec::new();
    let started = Instant::now();
    for (offset, event) in parsed.iter().enumerate() {
        let input = Input { stream: "events", partition: 0, offset: offset as u64, record_timestamp_ms: T0, event };
        engine.process(&input, T0, &mut outputs);
        outputs.clear();
    }
    let engine_only = started.elapsed().as_secs_f64();
    let mut engine = Engine::new(rule, EngineConfig::default());
    let started = Instant::now();
    for (offset, (_, json)) in events.iter().enumerate() {
        // As the runtime does: the text first, then the fields screening reads, then the rest.
        if engine.screen_raw("events", 0, json.as_bytes(), T0, &mut outputs) {
            outputs.clear();
            continue;
        }
        let event = match engine.screen_paths() {
            Some(screen) => {
                let partial = strom_rules::parse_pruned(json.as_bytes(), screen).unwrap();
                if engine.screens_out(&partial) {
                    partial
                } else {
                    strom_rules::parse_pruned(json.as_bytes(), &paths).unwrap()
                }
            }
            None => strom_rules::parse_pruned(json.as_bytes(), &paths).unwrap(),
        };
        let input =
            Input { stream: "events", partition: 0, offset: offset as u64, record_timestamp_ms: T0, event: &event };
        engine.process(&input, T0, &mut outputs);
        outputs.clear();
    }
    let with_parse = started.elapsed().as_secs_f64();
    println!(
        "engine {label}: {:.0} events/s (parsed events), {:.0} events/s (from JSON text, screened and parsed as the runtime does)",
        events.len() as f64 / engine_only,
        events.len() as f64 / with_parse
    );
}

/// Bytes per open partial match: 1,000,000 users each with one open cart.
async fn state_size(base: &std::path::Path, carts: usize) {
    let rule = Arc::new(Rule::parse(CART_RULE, Format::Yaml, "carts").unwrap());
    let events: Vec<String> = (0..carts)
        .map(|u| {
            format!(
                r#"{{"type":"track","event":"AddToCart","userId":"user-{u}","timestamp":"{}","properties":{{"cart_id":"cart-{u}-{}","sku":"SKU-{:05}","category":"shoes","price":19.9,"quantity":1,"currency":"EUR"}},"context":{{"ip":"203.0.113.1"}}}}"#,
                strom_rules::format_time_ms(T0 + (u as i64 * 10_000 / carts as i64)),
                u * 7919 % 1_000_000,
                u % 2000
            )
        })
        .collect();
    // Counted on this thread only while the engine is fed (nothing else runs meanwhile; the
    // events' own texts were made before).
    COUNTING.store(true, Ordering::SeqCst);
    let before = ALLOCATED.load(Ordering::Relaxed);
    let mut engine = Engine::new(rule, EngineConfig::default());
    let mut outputs = Vec::new();
    for (offset, json) in events.iter().enumerate() {
        let event: serde_json::Value = serde_json::from_str(json).unwrap();
        let input =
            Input { stream: "events", partition: 0, offset: offset as u64, record_timestamp_ms: T0, event: &event };
        engine.process(&input, T0, &mut outputs);
    }
    // As after a commit: the set of changed keys is empty again.
    let (_, meta) = engine.take_changes();
    let after = ALLOCATED.load(Ordering::Relaxed);
    COUNTING.store(false, Ordering::SeqCst);
    changelog_restore(base, &engine.all_states(), &meta).await;
    let (keys, entries) = engine.state_size();
    assert_eq!((keys, entries, outputs.len()), (carts, carts, 0), "every cart is open");
    let bytes = (after - before) as f64;
    println!(
        "state: {carts} open carts hold {:.1} MiB in the engine = {:.0} bytes per open partial match (key, timer, captured fields)",
        bytes / (1 << 20) as f64,
        bytes / carts as f64
    );
    drop(engine);

    // The same carts through the runtime, for the state store's size on disk.
    let dir = tempfile::tempdir_in(base).unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let log = Log::open(LogConfig { clock: clock.clone(), ..LogConfig::new(dir.path().join("log")) }).unwrap();
    log.create_stream(
        "events",
        StreamConfig { partitions: 1, segment_bytes: 1 << 30, retention_ms: None, ..Default::default() },
    )
    .await
    .unwrap();
    let keyed: Vec<(String, String)> =
        events.into_iter().enumerate().map(|(u, json)| (format!("user-{u}"), json)).collect();
    fill(&log, &keyed).await;
    let config = rules_config(dir.path());
    std::fs::create_dir_all(&config.rules_dir).unwrap();
    std::fs::write(config.rules_dir.join("cart-abandoned.yaml"), CART_RULE).unwrap();
    // A clock that stands still: nothing goes idle, every cart stays open.
    let rules = Rules::start(log.clone(), config.clone(), clock).unwrap();
    loop {
        let status = rules.get("cart-abandoned").await.unwrap();
        if status.counters.events_in >= carts as u64 && status.lag_records == 0 {
            assert_eq!(status.state_entries, carts as u64);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rules.close().await;
    let file = std::fs::metadata(&config.state_path).unwrap().len();
    println!(
        "state store: {carts} open carts in {:.1} MiB of redb = {:.0} bytes per open partial match",
        file as f64 / (1 << 20) as f64,
        file as f64 / carts as f64
    );
    log.close().await;
}

/// The same state as a task's changelog on a shared log (here on the embedded log: the cost
/// of the format, without a network): one snapshot commit of every key, and a restore.
async fn changelog_restore(base: &std::path::Path, states: &[strom_rules::changelog::KeyChange], meta: &[u8]) {
    use strom_rules::changelog::{self, ChangelogCommit, Writer};
    let dir = tempfile::tempdir_in(base).unwrap();
    let log = Log::open(LogConfig::new(dir.path().join("log"))).unwrap();
    let stream = changelog::open(&log, "carts", 1).await.unwrap();
    let restored = tokio::task::block_in_place(|| changelog::restore(&stream, 0)).unwrap();
    let mut writer = Writer::new(stream.clone(), 0, &restored);
    let (offsets, outputs) = (Default::default(), Default::default());
    let started = Instant::now();
    let commit = ChangelogCommit {
        fingerprint: "bench",
        offsets: &offsets,
        outputs: &outputs,
        meta,
        changes: &[],
        all: Some(states),
    };
    writer.commit(&commit).await.unwrap();
    let written = started.elapsed().as_secs_f64();
    let bytes: usize = states.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len)).sum();
    let started = Instant::now();
    let restored = tokio::task::block_in_place(|| changelog::restore(&stream, 0)).unwrap();
    let read = started.elapsed().as_secs_f64();
    assert_eq!(restored.keys(), states.len());
    println!(
        "changelog: a snapshot of {} keys ({:.1} MiB of keys and states) appended (synced) in {:.2} s, restored in {:.2} s = {:.0} keys/s",
        states.len(),
        bytes as f64 / (1 << 20) as f64,
        written,
        read,
        states.len() as f64 / read
    );
    log.close().await;
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let base = std::env::var("STROM_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").to_string());
    let base = std::path::PathBuf::from(base);
    std::fs::create_dir_all(&base).unwrap();
    let count = env_u64("STROM_BENCH_EVENTS", 1_000_000) as usize;
    let users = env_u64("STROM_BENCH_USERS", 100_000) as usize;
    let carts = env_u64("STROM_BENCH_CARTS", 1_000_000) as usize;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let started = Instant::now();
        let events = shop_events(count, users, 7);
        let bytes: usize = events.iter().map(|(_, json)| json.len()).sum();
        println!(
            "workload: {count} events from {users} users, {:.0} bytes per event, generated in {:.1} s",
            bytes as f64 / count as f64,
            started.elapsed().as_secs_f64()
        );
        // STROM_BENCH_ONLY=engine runs only the engine-alone part (for profiling);
        // STROM_BENCH_ONLY=engine-cart only the cart rule's part of it, =runtime-cart only the
        // cart rule through the runtime.
        match std::env::var("STROM_BENCH_ONLY").as_deref() {
            Ok("engine") => {
                engine_rate("filter", FILTER_RULE, &events);
                engine_rate("cart-abandonment", CART_RULE, &events);
                return;
            }
            Ok("engine-cart") => return engine_rate("cart-abandonment", CART_RULE, &events),
            _ => {}
        }
        let dir = tempfile::tempdir_in(&base).unwrap();
        let log = Log::open(LogConfig {
            retention_check_interval: Duration::from_secs(3600),
            ..LogConfig::new(dir.path().join("log"))
        })
        .unwrap();
        log.create_stream(
            "events",
            StreamConfig { partitions: 4, segment_bytes: 1 << 30, retention_ms: None, ..Default::default() },
        )
        .await
        .unwrap();
        fill(&log, &events).await;
        // The wall clock: the workload's event times are in the past, so idle partitions'
        // watermarks pass every deadline at the end, as in production after a backlog.
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        if std::env::var("STROM_BENCH_ONLY").is_ok_and(|only| only == "runtime-cart") {
            runtime_rate(&log, &base, "cart-abandonment", CART_RULE, count as u64, clock).await;
            return log.close().await;
        }
        runtime_rate(&log, &base, "filter", FILTER_RULE, count as u64, clock.clone()).await;
        runtime_rate(&log, &base, "cart-abandonment", CART_RULE, count as u64, clock).await;
        engine_rate("filter", FILTER_RULE, &events);
        engine_rate("cart-abandonment", CART_RULE, &events);
        log.close().await;
        drop(events);
        if carts > 0 {
            state_size(&base, carts).await;
        }
    });
}
