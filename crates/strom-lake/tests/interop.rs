//! The lake's files read by DuckDB and by pyarrow (tests/interop/read_lake.py), independently
//! of Strom, and compared field by field with the events produced: values, types and nulls.
//!
//! The expected rows are computed here from the events themselves, with this file's own
//! reading of the catalog (the shop catalog in `catalog/`), not with the lake's code.

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use serde_json::{Value, json};
use strom_catalog::{Catalog, CatalogConfig, Compatibility};
use strom_lake::{Lake, LakeConfig};
use strom_log::{Durability, EncodedBatch, Log, LogConfig, RecordIn, StreamConfig};

/// 2026-11-22T08:00:00Z.
const EIGHT_MS: i64 = 1_795_334_400_000;

/// The typed columns the shop catalog gives, as this test reads its schemas.
const CATALOG_COLUMNS: [(&str, Kind); 17] = [
    ("properties_cart_id", Kind::String),
    ("properties_sku", Kind::String),
    ("properties_category", Kind::String),
    ("properties_price", Kind::Double),
    ("properties_quantity", Kind::Integer),
    ("properties_currency", Kind::String),
    ("properties_value", Kind::Double),
    ("properties_items", Kind::Integer),
    ("properties_list", Kind::String),
    ("properties_source", Kind::String),
    ("properties_query", Kind::String),
    ("properties_path", Kind::String),
    ("properties_url", Kind::String),
    ("properties_title", Kind::String),
    ("traits_email", Kind::String),
    ("traits_plan", Kind::String),
    ("traits_newsletter", Kind::Boolean),
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    String,
    Text,
    Integer,
    Double,
    Boolean,
    Timestamp,
}

impl Kind {
    /// The type names (DuckDB, pyarrow) each reader must report.
    fn names(self) -> (&'static str, &'static str) {
        match self {
            Kind::String | Kind::Text => ("VARCHAR", "string"),
            Kind::Integer => ("BIGINT", "int64"),
            Kind::Double => ("DOUBLE", "double"),
            Kind::Boolean => ("BOOLEAN", "bool"),
            Kind::Timestamp => ("TIMESTAMP WITH TIME ZONE", "timestamp[us, tz=UTC]"),
        }
    }

    fn expect(self, value: Option<&Value>) -> Value {
        let Some(value) = value else { return Value::Null };
        match (self, value) {
            (Kind::String, Value::String(_)) => value.clone(),
            (Kind::Text, Value::String(_)) => value.clone(),
            (Kind::Text, Value::Null) => Value::Null,
            (Kind::Text, other) => Value::String(other.to_string()),
            (Kind::Integer, Value::Number(n)) if n.is_i64() => value.clone(),
            (Kind::Integer, Value::Number(n)) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => {
                json!(n.as_f64().unwrap() as i64)
            }
            (Kind::Double, Value::Number(n)) => json!(n.as_f64().unwrap()),
            (Kind::Boolean, Value::Bool(_)) => value.clone(),
            (Kind::Timestamp, Value::String(text)) => {
                chrono::DateTime::parse_from_rfc3339(text).map(|t| json!(t.timestamp_micros())).unwrap_or(Value::Null)
            }
            _ => Value::Null,
        }
    }
}

const ENVELOPE: [(&str, &str, Kind); 12] = [
    ("message_id", "messageId", Kind::Text),
    ("type", "type", Kind::Text),
    ("event", "event", Kind::Text),
    ("name", "name", Kind::Text),
    ("user_id", "userId", Kind::Text),
    ("anonymous_id", "anonymousId", Kind::Text),
    ("group_id", "groupId", Kind::Text),
    ("previous_id", "previousId", Kind::Text),
    ("timestamp", "timestamp", Kind::Timestamp),
    ("original_timestamp", "originalTimestamp", Kind::Timestamp),
    ("sent_at", "sentAt", Kind::Timestamp),
    ("received_at", "receivedAt", Kind::Timestamp),
];

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Shop events of every catalog type, in two hours, with the imperfections a lake meets:
/// missing and null fields, values of the wrong type, unknown event names, numeric ids,
/// escapes and non-ASCII text, a value that is not JSON and one that is not UTF-8.
fn events() -> Vec<(Bytes, i64)> {
    let mut out = Vec::new();
    for n in 0..400i64 {
        let at = EIGHT_MS + n * 15_000; // 400 events over 100 minutes: hours 08 and 09
        let time = iso(at);
        let user = format!("user-{}", n % 37);
        let event = match n % 10 {
            0 => json!({"type": "track", "event": "AddToCart", "userId": user, "messageId": format!("m{n}"),
                        "timestamp": time, "sentAt": time, "receivedAt": iso(at + 40),
                        "properties": {"cart_id": format!("c{n}"), "sku": format!("SKU-{:05}", n), "category": "shoes",
                                       "price": (n as f64) * 1.25 + 0.1, "quantity": n % 5 + 1, "currency": "EUR"}}),
            1 => {
                json!({"type": "track", "event": "Checkout", "anonymousId": format!("a{n}"), "messageId": format!("m{n}"),
                        "timestamp": time, "properties": {"cart_id": null, "value": 19.99, "items": 2.0, "currency": "CHF"}})
            }
            2 => {
                json!({"type": "page", "name": "sale", "userId": user, "messageId": format!("m{n}"), "timestamp": time,
                        "properties": {"path": "/sale", "url": "https://shop.example/s\u{e4}le?q=\"x\"", "title": "Grüße \\ ✓"}})
            }
            3 => json!({"type": "identify", "userId": n, "messageId": format!("m{n}"), "timestamp": time,
                        "traits": {"email": "a@b.example", "plan": "plus", "newsletter": n % 2 == 0}}),
            4 => {
                json!({"type": "track", "event": "AddToCart", "userId": user, "messageId": format!("m{n}"), "timestamp": time,
                        "properties": {"price": "cheap", "quantity": 1.5, "sku": 12}})
            }
            5 => {
                json!({"type": "track", "event": "Mystery", "userId": user, "timestamp": time, "properties": {"price": 3}})
            }
            6 => json!({"type": "track", "event": "ProductViewed", "userId": user, "messageId": format!("m{n}"),
                        "timestamp": "not a time", "properties": {"sku": "SKU-00001", "price": 0.5}}),
            7 => json!({"type": "track", "event": "ProductsSearched", "userId": user, "messageId": format!("m{n}"),
                        "timestamp": iso(at + 7 * 3_600_000), "properties": {"query": "red shoes"}}),
            8 => json!({"type": "track", "event": "NewsletterOptIn", "userId": user, "messageId": format!("m{n}"),
                        "originalTimestamp": time, "properties": {"list": "weekly", "source": "popup"}}),
            _ => {
                json!({"type": "alias", "userId": user, "previousId": format!("a{n}"), "groupId": null, "timestamp": time})
            }
        };
        out.push((Bytes::from(event.to_string()), at));
    }
    out.push((Bytes::from_static(b"plain text, not JSON"), EIGHT_MS + 60_000));
    out.push((Bytes::from_static(b"\xff\x00 not UTF-8"), EIGHT_MS + 60_000));
    out
}

/// The row each reader must show for one record.
fn expected_row(partition: u32, offset: u64, value: &Bytes, log_time_ms: i64, key: &str) -> Value {
    let mut row = serde_json::Map::new();
    row.insert("log_partition".into(), json!(partition));
    row.insert("log_offset".into(), json!(offset));
    row.insert("log_time".into(), json!(log_time_ms * 1000));
    row.insert("log_key".into(), json!(key));
    let text = std::str::from_utf8(value).ok();
    let event: Option<Value> = text.and_then(|t| serde_json::from_str(t).ok()).filter(Value::is_object);
    for (column, field, kind) in ENVELOPE {
        row.insert(column.into(), kind.expect(event.as_ref().and_then(|e| e.get(field))));
    }
    for (column, kind) in CATALOG_COLUMNS {
        let (root, field) = column.split_once('_').unwrap();
        row.insert(column.into(), kind.expect(event.as_ref().and_then(|e| e.get(root)).and_then(|r| r.get(field))));
    }
    row.insert("event_json".into(), text.map_or(Value::Null, |t| json!(t)));
    row.insert("event_bytes".into(), if text.is_none() { json!({"bytes": value.to_vec()}) } else { Value::Null });
    Value::Object(row)
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_f64() || b.is_f64() => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

/// Whether the readers can run here; in CI (CI=true) their absence fails the test.
fn python_readers() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import duckdb, pyarrow, pytz"])
        .status()
        .is_ok_and(|status| status.success());
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI needs python3 with duckdb, pyarrow and pytz");
        eprintln!("skipped: python3 with duckdb, pyarrow and pytz is needed (pip install duckdb pyarrow pytz)");
    }
    ok
}

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duckdb_and_pyarrow_read_what_was_produced() {
    if !python_readers() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path().join("data"))).unwrap();
    log.create_stream("events", StreamConfig { partitions: 2, ..StreamConfig::default() }).await.unwrap();
    let catalog = Catalog::open(CatalogConfig {
        dir: repository().join("catalog"),
        store_dir: dir.path().join("data/catalog"),
        default_compatibility: Compatibility::Backward,
        pii_secret: Some(b"0123456789abcdef".to_vec()),
    })
    .unwrap();
    let stream = log.stream("events").unwrap();
    let mut expected = Vec::new();
    let mut next_offset = [0u64; 2];
    for (index, chunk) in events().chunks(7).enumerate() {
        let partition = (index % 2) as u32;
        let key = format!("k{}", index % 3);
        let log_time_ms = EIGHT_MS + index as i64 * 1000;
        let records: Vec<RecordIn> = chunk
            .iter()
            .map(|(value, _)| RecordIn {
                key: Some(Bytes::from(key.clone())),
                value: Some(value.clone()),
                timestamp_ms: log_time_ms,
                headers: Vec::new(),
            })
            .collect();
        let batch = EncodedBatch::encode(&records).unwrap();
        stream.partition(partition).unwrap().append(batch, Durability::Sync).await.unwrap();
        for (value, _) in chunk {
            let offset = next_offset[partition as usize];
            next_offset[partition as usize] += 1;
            expected.push(expected_row(partition, offset, value, log_time_ms, &key));
        }
    }
    expected.sort_by_key(|row| (row["log_partition"].as_u64(), row["log_offset"].as_u64()));
    let config = LakeConfig { enabled: true, roll_bytes: 64 * 1024, ..LakeConfig::default() };
    let lake = Lake::open(config, &dir.path().join("data"), log.clone(), Some(catalog), None).unwrap();
    for partition in 0..2 {
        let mut sink = lake.partition_sink("events", partition).await.unwrap();
        while sink.step().await.unwrap() {}
        sink.flush().await.unwrap();
    }
    let root = dir.path().join("data/lake");
    let output = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/read_lake.py"))
        .arg(&root)
        .arg("events")
        .output()
        .unwrap();
    assert!(output.status.success(), "read_lake.py failed: {}", String::from_utf8_lossy(&output.stderr));
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    eprintln!("readers: {}", read["versions"]);
    for (reader, types_at) in [("duckdb", 0), ("pyarrow", 1)] {
        let types = &read[reader]["types"];
        let names = |kind: Kind| if types_at == 0 { kind.names().0 } else { kind.names().1 };
        let mut wanted: Vec<(&str, &str)> = vec![
            ("log_partition", if types_at == 0 { "INTEGER" } else { "int32" }),
            ("log_offset", names(Kind::Integer)),
            ("log_time", names(Kind::Timestamp)),
            ("event_json", names(Kind::String)),
            ("event_bytes", if types_at == 0 { "BLOB" } else { "binary" }),
        ];
        wanted.extend(ENVELOPE.iter().map(|(column, _, kind)| (*column, names(*kind))));
        wanted.extend(CATALOG_COLUMNS.iter().map(|(column, kind)| (*column, names(*kind))));
        for (column, type_name) in wanted {
            assert_eq!(types[column].as_str(), Some(type_name), "{reader}: the type of {column} ({types})");
        }
        let rows = read[reader]["rows"].as_array().unwrap();
        assert_eq!(rows.len(), expected.len(), "{reader}: every record is one row");
        for (row, want) in rows.iter().zip(&expected) {
            for (column, value) in want.as_object().unwrap() {
                assert!(
                    close(&row[column], value),
                    "{reader}: {column} of {}/{} is {}, expected {value}",
                    want["log_partition"],
                    want["log_offset"],
                    row[column]
                );
            }
            // The Hive directories: the hour of the event's time, else of the receive time.
            let time_us = want["timestamp"].as_i64().unwrap_or(want["log_time"].as_i64().unwrap());
            let time = chrono::DateTime::from_timestamp_micros(time_us).unwrap();
            assert_eq!(row["date"].as_str(), Some(time.format("%Y-%m-%d").to_string().as_str()), "{reader}: date");
            let hour = time.format("%H").to_string();
            assert!(
                row["hour"].as_str() == Some(hour.as_str()) || row["hour"].as_i64() == hour.parse().ok(),
                "{reader}: hour {} for {hour}",
                row["hour"]
            );
        }
    }
}
