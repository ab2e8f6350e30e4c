//! The lake on S3-compatible storage: moto's S3 server (`moto_server`, from PyPI's
//! `moto[server]`) on a local port. Files are landed with PUTs, listed, read back by
//! DataFusion's object store, compacted (GET, PUT, DELETE), and checked through boto3.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use bytes::Bytes;
use serde_json::json;
use strom_lake::{Lake, LakeConfig, S3Settings, Secret};
use strom_log::{Durability, EncodedBatch, Log, LogConfig, ManualClock, RecordIn, StreamConfig};

/// 2026-11-22T08:00:00Z.
const EIGHT_MS: i64 = 1_795_334_400_000;
const HOUR_MS: i64 = 3_600_000;
const STARTUP_TIMEOUT_MS: u64 = 30_000;

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Option<Moto> {
    let available = Command::new("moto_server").arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !available.is_ok_and(|s| s.success()) {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI needs moto_server (pip install 'moto[server]')");
        eprintln!("skipped: moto_server is needed (pip install 'moto[server]')");
        return None;
    }
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child, endpoint: format!("http://127.0.0.1:{port}") };
    let deadline = Instant::now() + Duration::from_millis(STARTUP_TIMEOUT_MS);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(moto)
}

/// Runs boto3 against moto: `script` sees `s3`, a client, and prints its answer.
fn boto3(endpoint: &str, script: &str) -> String {
    let program = format!(
        "import boto3, json\ns3 = boto3.client('s3', endpoint_url='{endpoint}', aws_access_key_id='test', \
         aws_secret_access_key='test', region_name='us-east-1')\n{script}"
    );
    let output = Command::new("python3").args(["-c", &program]).output().unwrap();
    assert!(output.status.success(), "boto3: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn event(n: u64, at_ms: i64) -> Bytes {
    let time = chrono::DateTime::from_timestamp_millis(at_ms).unwrap().to_rfc3339();
    Bytes::from(
        json!({"type": "track", "event": "Tick", "userId": "u", "timestamp": time, "properties": {"n": n}}).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_on_s3_lands_queries_and_compacts() {
    let Some(moto) = moto() else { return };
    boto3(&moto.endpoint, "s3.create_bucket(Bucket='lake')");
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(EIGHT_MS + 3 * HOUR_MS));
    let log = Log::open(LogConfig { clock: clock.clone(), ..LogConfig::new(dir.path().join("data")) }).unwrap();
    log.create_stream("events", StreamConfig { partitions: 1, ..StreamConfig::default() }).await.unwrap();
    let config = LakeConfig {
        enabled: true,
        url: "s3://lake/tables".into(),
        s3: S3Settings {
            endpoint: moto.endpoint.clone(),
            region: "us-east-1".into(),
            access_key_id: "test".into(),
            secret_access_key: Some(Secret("test".into())),
            allow_http: true,
            path_style: true,
            session_token: None,
        },
        ..LakeConfig::default()
    };
    let lake = Lake::open(config, &dir.path().join("data"), log.clone(), None, None).unwrap();
    assert_eq!(lake.store().url(), "s3://lake/tables");
    let stream = log.stream("events").unwrap();
    let mut sink = lake.partition_sink("events", 0).await.unwrap();
    // Three flushes: 08, 08 and 09, then 09 again.
    for values in [
        vec![event(0, EIGHT_MS)],
        vec![event(1, EIGHT_MS + 10), event(2, EIGHT_MS + HOUR_MS)],
        vec![event(3, EIGHT_MS + HOUR_MS)],
    ] {
        let records: Vec<RecordIn> = values
            .into_iter()
            .map(|v| RecordIn { value: Some(v), timestamp_ms: EIGHT_MS, ..RecordIn::default() })
            .collect();
        stream.partition(0).unwrap().append(EncodedBatch::encode(&records).unwrap(), Durability::Sync).await.unwrap();
        while sink.step().await.unwrap() {}
        sink.flush().await.unwrap();
    }
    let keys = boto3(
        &moto.endpoint,
        "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='lake').get('Contents', [])))",
    );
    assert_eq!(
        keys.lines().collect::<Vec<_>>(),
        [
            "tables/_strom_markers/events/0.json",
            "tables/events/date=2026-11-22/hour=08/0-00000000000000000000-00000000000000000000.parquet",
            "tables/events/date=2026-11-22/hour=08/0-00000000000000000001-00000000000000000001.parquet",
            "tables/events/date=2026-11-22/hour=09/0-00000000000000000002-00000000000000000002.parquet",
            "tables/events/date=2026-11-22/hour=09/0-00000000000000000003-00000000000000000003.parquet",
        ],
        "the partition's flush marker and one object per file, nothing else (files are spooled locally)"
    );
    // The marker, in the bucket, names the last flush (where another process would resume).
    let marker = boto3(
        &moto.endpoint,
        "import json; m = json.loads(s3.get_object(Bucket='lake', Key='tables/_strom_markers/events/0.json')['Body'].read()); print(m['start'], m['end'])",
    );
    assert_eq!(marker.trim(), "3 4");
    let offsets = |answer: &strom_lake::QueryAnswer| -> Vec<i64> {
        answer.batches.iter().flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec()).collect()
    };
    let answer = lake.query("SELECT log_offset FROM events ORDER BY log_offset", 100).await.unwrap();
    assert_eq!(offsets(&answer), [0, 1, 2, 3]);
    let answer = lake.query("SELECT log_offset FROM events WHERE hour = '09' ORDER BY log_offset", 100).await.unwrap();
    assert_eq!(offsets(&answer), [2, 3]);
    // Hour 08 closed (an hour after its end, 10:00; now 11:00); hour 09 ended at 10:00: closed too.
    let report = lake.compact(None).await.unwrap();
    assert_eq!((report.files_merged, report.files_written, report.rows), (4, 2, 4), "{report:?}");
    let keys = boto3(
        &moto.endpoint,
        "print('\\n'.join(o['Key'] for o in s3.list_objects_v2(Bucket='lake').get('Contents', [])))",
    );
    assert_eq!(
        keys.lines().collect::<Vec<_>>(),
        [
            "tables/_strom_markers/events/0.json",
            "tables/events/date=2026-11-22/hour=08/0-00000000000000000000-00000000000000000001.parquet",
            "tables/events/date=2026-11-22/hour=09/0-00000000000000000002-00000000000000000003.parquet",
        ]
    );
    let answer = lake.query("SELECT log_offset FROM events ORDER BY log_offset", 100).await.unwrap();
    assert_eq!(offsets(&answer), [0, 1, 2, 3], "the same rows after compaction");
    // A new sink (a restart) resumes after what was committed.
    let sink = lake.partition_sink("events", 0).await.unwrap();
    assert_eq!(sink.pending(), (4, 4));
}
