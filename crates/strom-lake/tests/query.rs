//! SQL over the lake: tables per stream, partition pruning on `date` and `hour`, files of two
//! catalog versions read as one table, read-only statements, bounded answers.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use bytes::Bytes;
use serde_json::{Value, json};
use strom_catalog::{Catalog, CatalogConfig, Compatibility};
use strom_lake::{Lake, LakeConfig, LakeError, QueryAnswer};
use strom_log::{Durability, EncodedBatch, Log, LogConfig, RecordIn, StreamConfig};

/// 2026-11-22T08:00:00Z.
const EIGHT_MS: i64 = 1_795_334_400_000;
const HOUR_MS: i64 = 3_600_000;

fn schema(quantity_type: &str, coupon: bool) -> Value {
    let mut properties = json!({"sku": {"type": "string"}, "quantity": {"type": quantity_type}});
    if coupon {
        properties["coupon"] = json!({"type": "string"});
    }
    json!({"x-strom": {"kind": "track", "stream": "events"}, "type": "object",
           "properties": {"properties": {"type": "object", "properties": properties}}})
}

fn write_schema(dir: &Path, value: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("AddToCart.json"), value.to_string()).unwrap();
}

fn event(name: &str, at_ms: i64, properties: Value) -> Bytes {
    let time = chrono::DateTime::from_timestamp_millis(at_ms).unwrap().to_rfc3339();
    Bytes::from(
        json!({"type": "track", "event": name, "userId": "u", "timestamp": time, "properties": properties}).to_string(),
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    catalog: Arc<Catalog>,
    catalog_dir: std::path::PathBuf,
    lake: Lake,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(LogConfig::new(dir.path().join("data"))).unwrap();
        log.create_stream("events", StreamConfig { partitions: 1, ..StreamConfig::default() }).await.unwrap();
        let catalog_dir = dir.path().join("catalog");
        write_schema(&catalog_dir, &schema("integer", false));
        let catalog = Catalog::open(CatalogConfig {
            dir: catalog_dir.clone(),
            store_dir: dir.path().join("data/catalog"),
            // Version 2 changes a type (integer → number), which BACKWARD would refuse.
            default_compatibility: Compatibility::None,
            pii_secret: Some(b"0123456789abcdef".to_vec()),
        })
        .unwrap();
        let config = LakeConfig { enabled: true, ..LakeConfig::default() };
        let lake = Lake::open(config, &dir.path().join("data"), log.clone(), Some(catalog.clone()), None).unwrap();
        Fixture { _dir: dir, log, catalog, catalog_dir, lake }
    }

    async fn land(&self, values: &[Bytes]) {
        let records: Vec<RecordIn> = values
            .iter()
            .map(|v| RecordIn { value: Some(v.clone()), timestamp_ms: EIGHT_MS, ..RecordIn::default() })
            .collect();
        let stream = self.log.stream("events").unwrap();
        let batch = EncodedBatch::encode(&records).unwrap();
        stream.partition(0).unwrap().append(batch, Durability::Sync).await.unwrap();
        let mut sink = self.lake.partition_sink("events", 0).await.unwrap();
        while sink.step().await.unwrap() {}
        sink.flush().await.unwrap();
    }

    async fn query(&self, sql: &str) -> QueryAnswer {
        self.lake.query(sql, 1000).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

fn strings(answer: &QueryAnswer, column: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for batch in &answer.batches {
        let array = arrow::compute::cast(batch.column(column), &DataType::Utf8).unwrap();
        let array = array.as_string::<i32>();
        out.extend((0..array.len()).map(|i| array.is_valid(i).then(|| array.value(i).to_string())));
    }
    out
}

async fn two_versions() -> Fixture {
    let fixture = Fixture::new().await;
    fixture
        .land(&[
            event("AddToCart", EIGHT_MS, json!({"sku": "a", "quantity": 1})),
            event("AddToCart", EIGHT_MS + HOUR_MS, json!({"sku": "b", "quantity": 2})),
            event("Checkout", EIGHT_MS + HOUR_MS, json!({})),
        ])
        .await;
    write_schema(&fixture.catalog_dir, &schema("number", true));
    fixture.catalog.reload().unwrap();
    fixture
        .land(&[
            event("AddToCart", EIGHT_MS, json!({"sku": "c", "quantity": 2.5, "coupon": "TEN"})),
            event("Checkout", EIGHT_MS + 2 * HOUR_MS, json!({})),
        ])
        .await;
    fixture
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_two_catalog_versions_are_one_table() {
    let fixture = two_versions().await;
    let answer = fixture
        .query("SELECT properties_sku, properties_quantity, properties_coupon FROM events WHERE event = 'AddToCart' ORDER BY log_offset")
        .await;
    assert_eq!(answer.schema.field(1).data_type(), &DataType::Float64, "integer in v1 files, number in v2 files");
    assert_eq!(strings(&answer, 0), [Some("a".into()), Some("b".into()), Some("c".into())]);
    let quantities: Vec<f64> =
        answer.batches.iter().flat_map(|b| b.column(1).as_primitive::<Float64Type>().values().to_vec()).collect();
    assert_eq!(quantities, [1.0, 2.0, 2.5]);
    assert_eq!(strings(&answer, 2), [None, None, Some("TEN".into())], "the v1 files have no coupon column");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_and_hour_prune_directories() {
    let fixture = two_versions().await;
    let answer = fixture
        .query("SELECT event, count(*) AS n FROM events WHERE date = '2026-11-22' AND hour = '09' GROUP BY event ORDER BY event")
        .await;
    assert_eq!(strings(&answer, 0), [Some("AddToCart".into()), Some("Checkout".into())]);
    assert_eq!(strings(&answer, 1), [Some("1".into()), Some("1".into())]);
    let plan = fixture.query("EXPLAIN SELECT log_offset FROM events WHERE date = '2026-11-22' AND hour = '09'").await;
    let plan = strings(&plan, 1).into_iter().flatten().collect::<Vec<_>>().join("\n");
    assert!(plan.contains("hour=09"), "{plan}");
    assert!(!plan.contains("hour=08") && !plan.contains("hour=10"), "other hours are not read: {plan}");
    let all = fixture.query("SELECT count(*) FROM events").await;
    assert_eq!(all.batches[0].column(0).as_primitive::<Int64Type>().value(0), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_reads_are_run_and_answers_are_bounded() {
    let fixture = two_versions().await;
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO events (event) VALUES ('x')",
        "COPY events TO '/tmp/out.parquet'",
        "SET datafusion.execution.batch_size = 1",
        "DROP TABLE events",
        "SELECT * FROM nowhere",
        "SELEC 1",
    ] {
        let error = fixture.lake.query(sql, 10).await.unwrap_err();
        assert!(matches!(error, LakeError::Query(_)), "{sql}: {error:?}");
    }
    let answer = fixture.lake.query("SELECT log_offset FROM events ORDER BY log_offset", 2).await.unwrap();
    assert_eq!((answer.rows, answer.truncated), (2, true));
    let answer = fixture.lake.query("SELECT log_offset FROM events", 5).await.unwrap();
    assert_eq!((answer.rows, answer.truncated), (5, false));
}
