//! The sink's behaviour on a real log, a real catalog and a local lake, with the crash
//! windows of a flush simulated by stopping it between its steps.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::json;
use strom_catalog::{Catalog, CatalogConfig, Compatibility};
use strom_log::{Durability, EncodedBatch, Log, LogConfig, ManualClock, RecordIn, StreamConfig};

use crate::config::{GROUP, LakeConfig};
use crate::flush::{self, FlushContext, Marker};
use crate::layout::parse_file_path;
use crate::{Lake, PartitionSink};

/// 2026-11-22T08:00:00Z.
const EIGHT: i64 = 1_795_334_400_000;
const HOUR: i64 = 3_600_000;

struct Fixture {
    dir: tempfile::TempDir,
    log: Arc<Log>,
    clock: Arc<ManualClock>,
    catalog: Arc<Catalog>,
}

impl Fixture {
    async fn new(partitions: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::new(EIGHT + 2 * HOUR));
        let log = Log::open(LogConfig { clock: clock.clone(), ..LogConfig::new(dir.path().join("data")) }).unwrap();
        log.create_stream("events", StreamConfig { partitions, ..StreamConfig::default() }).await.unwrap();
        write_schema(dir.path(), "AddToCart", add_to_cart(false));
        write_schema(dir.path(), "identify", identify());
        let catalog = Catalog::open(CatalogConfig {
            dir: dir.path().join("catalog"),
            store_dir: dir.path().join("data/catalog"),
            // The tests change schemas freely.
            default_compatibility: Compatibility::None,
            pii_secret: Some(b"0123456789abcdef".to_vec()),
        })
        .unwrap();
        Fixture { dir, log, clock, catalog }
    }

    fn lake(&self, change: impl FnOnce(&mut LakeConfig)) -> Lake {
        let mut config = LakeConfig { enabled: true, roll_age_ms: 60_000, ..LakeConfig::default() };
        change(&mut config);
        Lake::open(config, &self.dir.path().join("data"), self.log.clone(), Some(self.catalog.clone()), None).unwrap()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("data/lake")
    }

    async fn append(&self, partition: u32, values: &[Bytes], timestamp_ms: i64) {
        let records: Vec<RecordIn> = values
            .iter()
            .map(|value| RecordIn {
                key: Some(Bytes::from_static(b"u1")),
                value: Some(value.clone()),
                timestamp_ms,
                headers: vec![("strom-source".into(), Bytes::from_static(b"web"))],
            })
            .collect();
        let stream = self.log.stream("events").unwrap();
        let batch = EncodedBatch::encode(&records).unwrap();
        stream.partition(partition).unwrap().append(batch, Durability::Sync).await.unwrap();
    }
}

fn write_schema(root: &Path, name: &str, schema: serde_json::Value) {
    let dir = root.join("catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.json")), schema.to_string()).unwrap();
}

fn add_to_cart(with_coupon: bool) -> serde_json::Value {
    let mut properties = json!({
        "sku": {"type": "string"}, "price": {"type": "number"}, "quantity": {"type": "integer"},
        "added_at": {"type": "string", "format": "date-time"}, "gift": {"type": "boolean"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}}, "tags": {"type": "array"}
    });
    if with_coupon {
        properties["coupon"] = json!({"type": "string"});
    }
    json!({"x-strom": {"kind": "track", "stream": "events", "event": "AddToCart"}, "type": "object",
           "properties": {"properties": {"type": "object", "properties": properties}}})
}

fn identify() -> serde_json::Value {
    json!({"x-strom": {"kind": "identify", "stream": "events"}, "type": "object",
           "properties": {"traits": {"type": "object", "properties": {"plan": {"enum": ["free", "plus"]}}}}})
}

fn track(n: u64, at_ms: i64) -> Bytes {
    let time =
        chrono::DateTime::from_timestamp_millis(at_ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Bytes::from(
        json!({"type": "track", "event": "AddToCart", "userId": "u1", "messageId": format!("m-{n}"), "timestamp": time,
               "properties": {"sku": format!("SKU-{n:05}"), "price": 1.5, "quantity": n, "address": {"city": "Bern"},
                              "tags": ["a", 1], "added_at": time, "gift": n.is_multiple_of(2)},
               "context": {"ip": "203.0.113.0"}})
        .to_string(),
    )
}

fn identify_event(n: u64, at_ms: i64) -> Bytes {
    let time =
        chrono::DateTime::from_timestamp_millis(at_ms).unwrap().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Bytes::from(
        json!({"type": "identify", "userId": "u1", "messageId": format!("i-{n}"), "timestamp": time,
                       "traits": {"plan": "plus", "email": "x@example.com"}})
        .to_string(),
    )
}

/// Every data file of the lake: (path below the root, its rows).
fn lake_files(root: &Path) -> Vec<(String, RecordBatch)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if !path.ends_with(crate::config::SPOOL_DIR) && !path.ends_with(crate::config::MARKERS_DIR) {
                    stack.push(path);
                }
                continue;
            }
            let relative = path.strip_prefix(root).unwrap().to_str().unwrap().to_string();
            out.push((relative, read_parquet(&path)));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn read_parquet(path: &Path) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(path).unwrap()).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(Result::unwrap).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// Checks that every file's rows match its name and that the files hold each offset of
/// `[0, end)` of each partition exactly once.
fn assert_exactly_once(root: &Path, ends: &[u64]) {
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); ends.len()];
    for (path, batch) in lake_files(root) {
        let (_, _, name) = parse_file_path(&path).unwrap_or_else(|| panic!("{path} is not a data file name"));
        let offsets: Vec<u64> = batch
            .column_by_name("log_offset")
            .unwrap()
            .as_primitive::<Int64Type>()
            .values()
            .iter()
            .map(|o| *o as u64)
            .collect();
        assert_eq!(offsets.first(), Some(&name.first), "{path}");
        assert_eq!(offsets.last(), Some(&name.last), "{path}");
        let partitions = batch.column_by_name("log_partition").unwrap().as_primitive::<Int32Type>();
        assert!(partitions.values().iter().all(|p| *p as u32 == name.partition), "{path}");
        seen[name.partition as usize].extend(offsets);
    }
    for (partition, end) in ends.iter().enumerate() {
        let mut offsets = seen[partition].clone();
        offsets.sort();
        assert_eq!(offsets, (0..*end).collect::<Vec<_>>(), "partition {partition}");
    }
}

async fn land_all(sink: &mut PartitionSink) {
    while sink.step().await.unwrap() {}
    sink.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_writes_one_typed_file_per_hour() {
    let fixture = Fixture::new(1).await;
    // Offsets interleave the hours: events arrive out of order.
    let values = vec![
        track(0, EIGHT + 10),
        identify_event(1, EIGHT + HOUR + 5),
        track(2, EIGHT + 20),
        Bytes::from_static(b"not json"),
        Bytes::from_static(b"\xff\xfe binary"),
    ];
    fixture.append(0, &values, EIGHT + HOUR + 30).await;
    let lake = fixture.lake(|_| {});
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    land_all(&mut sink).await;
    assert_eq!(fixture.log.groups().committed(GROUP, "events", 0), Some(5));
    let files = lake_files(&fixture.root());
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "events/date=2026-11-22/hour=08/0-00000000000000000000-00000000000000000002.parquet",
            // The identify event's hour, and the records without an event time (receive time).
            "events/date=2026-11-22/hour=09/0-00000000000000000001-00000000000000000004.parquet",
        ]
    );
    let eight = &files[0].1;
    assert_eq!(eight.num_rows(), 2);
    let schema = eight.schema();
    let column = |name: &str| schema.field_with_name(name).unwrap().data_type().clone();
    assert_eq!(column("properties_price"), DataType::Float64);
    assert_eq!(column("properties_quantity"), DataType::Int64);
    assert_eq!(column("properties_gift"), DataType::Boolean);
    assert_eq!(column("properties_address_city"), DataType::Utf8);
    assert_eq!(column("properties_tags"), DataType::Utf8);
    assert_eq!(column("properties_added_at"), crate::columns::timestamp_type());
    assert_eq!(column("timestamp"), crate::columns::timestamp_type());
    assert!(schema.field_with_name("traits_plan").is_err(), "a file has the columns of its own events' types");
    let get = |name: &str| eight.column_by_name(name).unwrap().clone();
    assert_eq!(get("properties_quantity").as_primitive::<Int64Type>().values(), &[0, 2]);
    assert_eq!(get("properties_price").as_primitive::<Float64Type>().value(1), 1.5);
    assert_eq!(get("properties_tags").as_string::<i32>().value(0), r#"["a",1]"#);
    assert_eq!(get("properties_address_city").as_string::<i32>().value(0), "Bern");
    assert_eq!(get("event").as_string::<i32>().value(0), "AddToCart");
    assert_eq!(get("timestamp").as_primitive::<TimestampMicrosecondType>().value(0), (EIGHT + 10) * 1000);
    assert_eq!(get("log_key").as_string::<i32>().value(0), "u1");
    assert_eq!(get("headers").as_string::<i32>().value(0), r#"{"strom-source":"web"}"#);
    assert_eq!(get("event_json").as_string::<i32>().value(0).as_bytes(), &values[0][..]);
    let nine = &files[1].1;
    assert!(nine.schema().field_with_name("properties_price").is_err());
    let get = |name: &str| nine.column_by_name(name).unwrap().clone();
    assert_eq!(get("traits_plan").as_string::<i32>().value(0), "plus");
    assert_eq!(get("event_json").as_string::<i32>().value(1), "not json");
    assert!(get("type").is_null(1));
    assert!(get("event_json").is_null(2));
    assert_eq!(get("event_bytes").as_binary::<i32>().value(2), &values[4][..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_that_does_not_fit_its_column_is_null_there_and_kept_whole() {
    let fixture = Fixture::new(1).await;
    let bad = Bytes::from(
        json!({"type": "track", "event": "AddToCart", "userId": "u1", "timestamp": "2026-11-22T08:00:00Z",
        "properties": {"price": "cheap", "quantity": 2.5, "added_at": "yesterday", "gift": "yes", "address": "Bern"}})
        .to_string(),
    );
    fixture.append(0, std::slice::from_ref(&bad), EIGHT).await;
    let lake = fixture.lake(|_| {});
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    land_all(&mut sink).await;
    let files = lake_files(&fixture.root());
    let batch = &files[0].1;
    for column in
        ["properties_price", "properties_quantity", "properties_added_at", "properties_gift", "properties_address_city"]
    {
        assert!(batch.column_by_name(column).unwrap().is_null(0), "{column}");
    }
    assert_eq!(batch.column_by_name("event_json").unwrap().as_string::<i32>().value(0).as_bytes(), &bad[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_cut_by_age_on_the_clock_and_by_size() {
    let fixture = Fixture::new(1).await;
    let lake = fixture.lake(|c| {
        c.roll_age_ms = 1000;
        c.roll_bytes = 64 * 1024;
    });
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    fixture.append(0, &[track(0, EIGHT)], EIGHT).await;
    assert!(sink.step().await.unwrap());
    assert!(!sink.step().await.unwrap());
    assert!(lake_files(&fixture.root()).is_empty(), "nothing is cut before roll_age_ms");
    fixture.clock.advance_ms(999);
    sink.step().await.unwrap();
    assert!(lake_files(&fixture.root()).is_empty());
    fixture.clock.advance_ms(1);
    sink.step().await.unwrap();
    assert_eq!(lake_files(&fixture.root()).len(), 1, "cut once the first record is roll_age_ms old");
    assert_eq!(sink.pending(), (1, 1));
    // 64 KiB of Parquet at the first guess of 4 input bytes per Parquet byte: 256 KiB read.
    let values: Vec<Bytes> = (1..=2000).map(|n| track(n, EIGHT)).collect();
    for chunk in values.chunks(100) {
        fixture.append(0, chunk, EIGHT).await;
    }
    while sink.step().await.unwrap() {}
    // About 360 bytes per event: 256 KiB is about 730 events, read in batches of 100.
    for (path, batch) in lake_files(&fixture.root()) {
        assert!(batch.num_rows() <= 1000, "{path}: {} rows", batch.num_rows());
    }
    let cut = lake_files(&fixture.root()).len();
    assert!(cut >= 3, "{cut} files: the size bound cuts without waiting for the age");
    sink.flush().await.unwrap();
    assert_exactly_once(&fixture.root(), &[2001]);
}

/// Runs a flush of everything pending up to `stage`, as a crash there would leave it. With
/// `legacy` its marker is where releases before markers moved into the lake kept it.
async fn interrupted_flush(fixture: &Fixture, lake: &Lake, stage: usize, legacy: bool) {
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    while sink.step().await.unwrap() {}
    let shared = lake.shared.clone();
    let marker = Marker {
        start: sink.scan.start,
        end: sink.scan.end,
        time_basis: shared.config.time_basis,
        files: sink.scan.files("events", 0).into_iter().map(|(_, _, p)| p).collect(),
    };
    if legacy {
        let path = flush::legacy_marker_path(&shared.state_dir, "events", 0);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(&marker).unwrap()).unwrap();
    } else {
        flush::write_marker(&shared.store, &flush::marker_path("events", 0), &marker).await.unwrap();
    }
    let stream = fixture.log.stream("events").unwrap();
    let spool = shared.store.spool_dir();
    std::fs::create_dir_all(&spool).unwrap();
    let snapshot = fixture.catalog.snapshot();
    let context = FlushContext {
        stream: "events",
        partition: stream.partition(0).unwrap(),
        basis: marker.time_basis,
        snapshot: &snapshot,
        dead_letters: false,
        config: &shared.config,
        spool: &spool,
    };
    let hours: BTreeSet<_> = sink.scan.hours.keys().copied().collect();
    let written = tokio::task::block_in_place(|| flush::write_files(&context, &sink.scan, &hours)).unwrap();
    for file in written.iter().take(stage) {
        shared.store.publish(&file.spool_path, &file.path).await.unwrap();
    }
    // The crash: what was not published stays in the spool; nothing is committed.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_interrupted_at_any_step_is_finished_under_the_same_names() {
    for published in 0..=3 {
        let fixture = Fixture::new(1).await;
        let values: Vec<Bytes> = (0..30).map(|n| track(n, EIGHT + (n as i64 % 3) * HOUR)).collect();
        fixture.append(0, &values, EIGHT).await;
        let lake = fixture.lake(|_| {});
        // One of the four crashes left its marker where an older release kept it.
        let legacy = published == 1;
        interrupted_flush(&fixture, &lake, published, legacy).await;
        let before: Vec<String> = lake_files(&fixture.root()).into_iter().map(|(p, _)| p).collect();
        assert_eq!(before.len(), published.min(3));
        assert_eq!(fixture.log.groups().committed(GROUP, "events", 0), None);
        // More records arrive before the restart: they must not join the interrupted range.
        fixture.append(0, &[track(30, EIGHT)], EIGHT).await;
        // The restart: the sink empties the spool and recovers.
        let restarted = fixture.lake(|_| {});
        let sink_task = restarted.start_sink().await.unwrap();
        sink_task.close().await;
        assert_eq!(fixture.log.groups().committed(GROUP, "events", 0), Some(30), "the interrupted range, exactly");
        land_all(&mut restarted.partition_sink("events", 0).await.unwrap()).await;
        let after: Vec<String> = lake_files(&fixture.root()).into_iter().map(|(p, _)| p).collect();
        for path in &before {
            assert!(after.contains(path), "published file {path} is still there after recovery");
        }
        assert_eq!(fixture.log.groups().committed(GROUP, "events", 0), Some(31));
        assert_exactly_once(&fixture.root(), &[31]);
        let spool: Vec<_> = std::fs::read_dir(restarted.store().spool_dir()).unwrap().collect();
        assert!(spool.is_empty(), "the spool holds no leftovers after a clean stop");
        let legacy_path = flush::legacy_marker_path(&restarted.shared.state_dir, "events", 0);
        assert!(!legacy_path.exists(), "an older release's marker is removed once its flush is done");
        assert!(fixture.root().join("_strom_markers/events/0.json").exists(), "markers are in the lake");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_marker_is_ignored() {
    let fixture = Fixture::new(1).await;
    fixture.append(0, &[track(0, EIGHT), track(1, EIGHT)], EIGHT).await;
    let lake = fixture.lake(|_| {});
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    land_all(&mut sink).await;
    fixture.append(0, &[track(2, EIGHT)], EIGHT).await;
    // The marker of the completed flush (start 0) is still there; the committed offset is 2.
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    assert_eq!(sink.pending(), (2, 2));
    land_all(&mut sink).await;
    assert_exactly_once(&fixture.root(), &[3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_before_landing_are_skipped_and_the_rest_lands() {
    let fixture = Fixture::new(1).await;
    let config =
        StreamConfig { partitions: 1, segment_bytes: 4096, retention_bytes: Some(4096), ..StreamConfig::default() };
    fixture.log.create_stream("small", config).await.unwrap();
    let stream = fixture.log.stream("small").unwrap();
    for n in 0..40 {
        let record = RecordIn { value: Some(track(n, EIGHT)), timestamp_ms: EIGHT, ..RecordIn::default() };
        let batch = EncodedBatch::encode(&[record]).unwrap();
        stream.partition(0).unwrap().append(batch, Durability::Sync).await.unwrap();
    }
    fixture.log.groups().commit(GROUP, "small", &[(0, 0)], strom_log::CommitMode::Forward).unwrap();
    fixture.log.enforce_retention();
    let log_start = stream.partition(0).unwrap().log_start_offset();
    assert!(log_start > 0, "retention deleted a segment");
    let lake = fixture.lake(|_| {});
    let mut sink = lake.partition_sink("small", 0).await.unwrap();
    assert_eq!(sink.pending(), (log_start, log_start));
    assert_eq!(fixture.log.groups().committed(GROUP, "small", 0), Some(log_start));
    land_all(&mut sink).await;
    let files = lake_files(&fixture.root());
    let first = files[0].1.column_by_name("log_offset").unwrap().as_primitive::<Int64Type>().value(0);
    assert_eq!(first as u64, log_start);
    assert_eq!(fixture.log.groups().committed(GROUP, "small", 0), Some(40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_catalog_version_adds_columns_to_new_files_only() {
    let fixture = Fixture::new(1).await;
    let lake = fixture.lake(|_| {});
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    fixture.append(0, &[track(0, EIGHT)], EIGHT).await;
    land_all(&mut sink).await;
    write_schema(fixture.dir.path(), "AddToCart", add_to_cart(true));
    fixture.catalog.reload().unwrap();
    let mut value: serde_json::Value = serde_json::from_slice(&track(1, EIGHT)).unwrap();
    value["properties"]["coupon"] = json!("TEN");
    fixture.append(0, &[Bytes::from(value.to_string())], EIGHT).await;
    land_all(&mut sink).await;
    let files = lake_files(&fixture.root());
    assert_eq!(files.len(), 2);
    assert!(files[0].1.schema().field_with_name("properties_coupon").is_err());
    assert_eq!(files[1].1.column_by_name("properties_coupon").unwrap().as_string::<i32>().value(0), "TEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_merges_small_files_of_closed_hours_with_the_same_rows() {
    let fixture = Fixture::new(1).await;
    let lake = fixture.lake(|_| {});
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    // Three flushes in hour 08 (one with an identify: another schema), one in hour 10.
    for n in 0..3u64 {
        fixture
            .append(
                0,
                &[track(n * 2, EIGHT + 60_000), identify_event(n * 2 + 1, EIGHT + 120_000)][..(n as usize % 2 + 1)],
                EIGHT,
            )
            .await;
        land_all(&mut sink).await;
    }
    fixture.append(0, &[track(9, EIGHT + 2 * HOUR)], EIGHT).await;
    land_all(&mut sink).await;
    let before = lake_files(&fixture.root());
    assert_eq!(before.len(), 4);
    let rows = |files: &[(String, RecordBatch)]| -> Vec<(i64, String)> {
        let mut rows: Vec<(i64, String)> = files
            .iter()
            .flat_map(|(_, batch)| {
                let offsets = batch.column_by_name("log_offset").unwrap().as_primitive::<Int64Type>().clone();
                let json = batch.column_by_name("event_json").unwrap().as_string::<i32>().clone();
                (0..batch.num_rows()).map(move |i| (offsets.value(i), json.value(i).to_string()))
            })
            .collect();
        rows.sort();
        rows
    };
    // Hour 08 closed an hour after its end (10:00 now); hour 10 is open.
    let report = lake.compact(None).await.unwrap();
    assert_eq!((report.files_merged, report.files_written, report.rows), (3, 1, 4), "{report:?}");
    let after = lake_files(&fixture.root());
    assert_eq!(
        after.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        [
            "events/date=2026-11-22/hour=08/0-00000000000000000000-00000000000000000003.parquet",
            "events/date=2026-11-22/hour=10/0-00000000000000000004-00000000000000000004.parquet",
        ]
    );
    assert_eq!(rows(&after), rows(&before), "the same rows");
    let merged = &after[0].1;
    assert!(
        merged.schema().field_with_name("traits_plan").is_ok()
            && merged.schema().field_with_name("properties_price").is_ok()
    );
    assert_exactly_once(&fixture.root(), &[5]);
    // A crash after the merged file was published and before the inputs were deleted.
    let input = &before[0];
    let input_path = fixture.root().join(&input.0);
    let mut file = std::fs::File::create(&input_path).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(&mut file, input.1.schema(), None).unwrap();
    writer.write(&input.1).unwrap();
    writer.close().unwrap();
    let report = lake.compact(None).await.unwrap();
    assert_eq!(report.leftovers_deleted, 1, "{report:?}");
    assert_exactly_once(&fixture.root(), &[5]);
    let report = lake.compact(None).await.unwrap();
    assert_eq!((report.files_merged, report.leftovers_deleted), (0, 0), "nothing more to do");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_table_has_the_reason_columns() {
    let fixture = Fixture::new(1).await;
    fixture.log.create_stream("dead-letters", StreamConfig::default()).await.unwrap();
    let reason = r#"{"code":"invalid_schema","source":"web","violations":[{"pointer":"/properties/price"}]}"#;
    let record = RecordIn {
        key: None,
        value: Some(Bytes::from_static(br#"{"type":"track","event":"AddToCart","properties":{"price":"cheap"}}"#)),
        timestamp_ms: EIGHT,
        headers: vec![("strom-dead-letter".into(), Bytes::from(reason))],
    };
    let stream = fixture.log.stream("dead-letters").unwrap();
    stream.partition(0).unwrap().append(EncodedBatch::encode(&[record]).unwrap(), Durability::Sync).await.unwrap();
    let config = LakeConfig { enabled: true, ..LakeConfig::default() };
    let data = fixture.dir.path().join("data");
    let lake =
        Lake::open(config, &data, fixture.log.clone(), Some(fixture.catalog.clone()), Some("dead-letters".into()))
            .unwrap();
    assert_eq!(lake.landed_streams(), ["events", "dead-letters"]);
    land_all(&mut lake.partition_sink("dead-letters", 0).await.unwrap()).await;
    let files = lake_files(&fixture.root());
    let batch = &files[0].1;
    assert!(files[0].0.starts_with("dead-letters/date=2026-11-22/hour=08/"), "{}", files[0].0);
    assert_eq!(batch.column_by_name("dead_letter_code").unwrap().as_string::<i32>().value(0), "invalid_schema");
    assert_eq!(batch.column_by_name("dead_letter").unwrap().as_string::<i32>().value(0), reason);
    assert!(batch.column_by_name("properties_price").unwrap().is_null(0), "a bad value is null in its typed column");
}
