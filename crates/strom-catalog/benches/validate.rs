//! `cargo bench -p strom-catalog --bench validate`: the catalog alone, for docs/BENCHMARKS.md.
//!
//! Loads the example catalog (the repository's `catalog/`, the shop workload's types) and
//! validates the shop workload's events (`benches/shop_events.jsonl`, 1,000 events from
//! `shop_events.py --events 1000 --seed 7`; STROM_BENCH_EVENTS names another file). Events are
//! parsed before timing: the collector parses each event once, whatever the catalog does.
//!
//! STROM_BENCH_SECONDS sets the time per measurement (default 2).

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use strom_catalog::{Catalog, CatalogConfig, Compatibility, EventKind, Snapshot};

fn kind_and_name(event: &Value) -> Option<(EventKind, &str)> {
    let kind: EventKind = event.get("type")?.as_str()?.parse().ok()?;
    let name = match kind {
        EventKind::Track => event.get("event")?.as_str()?,
        _ => event.get("name").and_then(Value::as_str).unwrap_or(""),
    };
    Some((kind, name))
}

/// Runs `f` over the events repeatedly for about `seconds`; returns ns per event.
fn measure(events: &[Value], seconds: f64, mut f: impl FnMut(&Value)) -> f64 {
    let budget = Duration::from_secs_f64(seconds);
    // Warm-up: caches, lazily compiled regexes.
    events.iter().for_each(&mut f);
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < budget {
        for event in events {
            f(event);
        }
        done += events.len() as u64;
    }
    started.elapsed().as_nanos() as f64 / done as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seconds: f64 = std::env::var("STROM_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let events_path = std::env::var("STROM_BENCH_EVENTS")
        .map(Into::into)
        .unwrap_or_else(|_| manifest.join("benches/shop_events.jsonl"));
    let text = std::fs::read_to_string(&events_path).expect("events file");
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("event JSON")).collect();

    let store = tempfile::tempdir().expect("temp dir");
    let catalog = Catalog::open(CatalogConfig {
        dir: manifest.join("../../catalog"),
        store_dir: store.path().to_path_buf(),
        default_compatibility: Compatibility::Backward,
        pii_secret: Some(b"bench".to_vec()),
    })
    .expect("catalog");
    let snapshot = catalog.snapshot();
    assert!(snapshot.len() >= 7, "the example catalog has the shop's 7 types");

    let lookup = |snapshot: &Snapshot, event: &Value| {
        let (kind, name) = kind_and_name(event)?;
        snapshot.lookup(kind, name).cloned()
    };
    let (valid, invalid): (Vec<Value>, Vec<Value>) =
        events.iter().cloned().partition(|event| lookup(&snapshot, event).is_some_and(|t| t.validate(event).is_ok()));
    let tagged_invalid = events.iter().filter(|e| e["context"]["workload"] == "invalid").count();
    let mean_bytes = text.len() as f64 / events.len() as f64;
    println!(
        "{} events ({mean_bytes:.0} bytes each on average): {} valid, {} invalid ({tagged_invalid} tagged invalid by the generator)",
        events.len(),
        valid.len(),
        invalid.len()
    );

    let ns = measure(&valid, seconds, |event| {
        let event_type = lookup(&snapshot, event).expect("type");
        black_box(event_type.validate(black_box(event)).is_ok());
    });
    println!("lookup + validate, valid events, workload mix:    {ns:>8.0} ns/event");

    let carts: Vec<Value> = valid.iter().filter(|e| e["event"] == "AddToCart").cloned().collect();
    let cart_bytes = carts.first().map_or(0, |e| e.to_string().len());
    let cart_type = snapshot.lookup(EventKind::Track, "AddToCart").expect("AddToCart").clone();
    let ns = measure(&carts, seconds, |event| {
        black_box(cart_type.validate(black_box(event)).is_ok());
    });
    println!("validate, valid AddToCart track event ({cart_bytes} bytes): {ns:>8.0} ns/event");

    let ns = measure(&invalid, seconds, |event| {
        if let Some(event_type) = lookup(&snapshot, event) {
            black_box(event_type.validate(black_box(event)).err());
        }
    });
    println!("lookup + validate, invalid events (violations built): {ns:>5.0} ns/event");

    let identifies: Vec<Value> = valid.iter().filter(|e| e["type"] == "identify").cloned().collect();
    let identify = snapshot.lookup(EventKind::Identify, "").expect("identify").clone();
    let secret = catalog.pii_secret().to_vec();
    let ns = measure(&identifies, seconds, |event| {
        let mut copy = event.clone();
        identify.apply_pii(&mut copy, &secret);
        black_box(copy);
    });
    println!("clone + apply_pii (HMAC of the email), identify:  {ns:>8.0} ns/event");
    let ns = measure(&identifies, seconds, |event| {
        black_box(event.clone());
    });
    println!("  of which the clone alone:                         {ns:>8.0} ns/event");
}
