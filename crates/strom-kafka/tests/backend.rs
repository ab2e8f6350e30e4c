//! The log's semantics, one body run on each backend: the embedded log, and the Kafka backend
//! (librdkafka through `rdkafka`) against a Kafka-compatible broker.
//!
//! The broker is Strom's own Kafka listener on an embedded log in the same process, so that
//! `cargo test` needs nothing else. With `STROM_TEST_KAFKA_BOOTSTRAP=host:port` the Kafka
//! instances run against that broker instead (CI runs them against an independent one).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use strom_kafka::{BackendConfig, KafkaBackend, KafkaConfig};
use strom_log::{CommitMode, Durability, EncodedBatch, Log, LogConfig, LogError, RecordIn, StreamConfig};
use tokio::sync::watch;

/// A log of one backend and what keeps it alive (directories, the broker).
struct Subject {
    log: Arc<Log>,
    /// Names are prefixed per test: an external broker is shared by every run.
    prefix: String,
    /// The broker's address (the Kafka backend only).
    bootstrap: Option<String>,
    _dirs: Vec<tempfile::TempDir>,
    _broker: Option<(Arc<Log>, watch::Sender<bool>)>,
}

impl Subject {
    fn stream(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

async fn embedded() -> Subject {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(LogConfig::new(dir.path())).unwrap();
    Subject { log, prefix: String::new(), bootstrap: None, _dirs: vec![dir], _broker: None }
}

async fn kafka(test: &str) -> Subject {
    let state = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    let (bootstrap, broker) = match std::env::var("STROM_TEST_KAFKA_BOOTSTRAP") {
        Ok(bootstrap) => (bootstrap, None),
        Err(_) => {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(LogConfig::new(dir.path())).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = watch::channel(false);
            let config = KafkaConfig { addr, ..KafkaConfig::default() };
            tokio::spawn(strom_kafka::serve(listener, log.clone(), config, StreamConfig::default(), None, stopped));
            dirs.push(dir);
            (addr.to_string(), Some((log, stop)))
        }
    };
    // Unique per run, so that an external broker's leftovers never meet this run.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let prefix = format!("t{}-{test}-", nanos % 1_000_000_000);
    let log = remote_log(&bootstrap, &state, Vec::new()).await;
    dirs.push(state);
    Subject { log, prefix, bootstrap: Some(bootstrap), _dirs: dirs, _broker: broker }
}

/// A log on the cluster at `bootstrap`, as one Strom process has it.
async fn remote_log(bootstrap: &str, state: &tempfile::TempDir, properties: Vec<(String, String)>) -> Arc<Log> {
    let backend = BackendConfig {
        bootstrap_servers: bootstrap.to_string(),
        linger_ms: 1,
        properties: properties.into_iter().collect(),
        ..BackendConfig::default()
    };
    let remote = tokio::task::spawn_blocking(move || KafkaBackend::connect(backend)).await.unwrap().unwrap();
    let config = LogConfig { remote: Some(Arc::new(remote)), ..LogConfig::new(state.path()) };
    tokio::task::spawn_blocking(move || Log::open(config)).await.unwrap().unwrap()
}

fn record(key: &str, value: &str, timestamp_ms: i64) -> RecordIn {
    RecordIn {
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        timestamp_ms,
        headers: vec![("strom-test".to_string(), Bytes::from_static(b"yes"))],
    }
}

/// Appends `records` to one partition, synced, as the server's produce path does.
async fn append_synced(stream: &strom_log::Stream, partition: u32, records: &[RecordIn]) -> strom_log::Appended {
    stream.partition(partition).unwrap().append(EncodedBatch::encode(records).unwrap(), Durability::Sync).await.unwrap()
}

/// Blocking reads run where the server runs them: on the blocking pool.
async fn read(log: &Arc<Log>, stream: &str, partition: u32, from: u64, max: usize) -> strom_log::ReadRecords {
    let (log, stream) = (log.clone(), stream.to_string());
    tokio::task::spawn_blocking(move || log.stream(&stream)?.partition(partition)?.read_records(from, max, 1 << 20))
        .await
        .unwrap()
        .unwrap()
}

/// Appends come back in order with their keys, values, headers and timestamps; offsets
/// start at 0 and follow each other for one writer; the log end follows the appends;
/// reading at the end answers nothing and past it is out of range.
async fn appends_read_back_in_order(subject: Subject) {
    let log = &subject.log;
    let name = subject.stream("orders");
    let stream = log.create_stream(&name, StreamConfig { partitions: 2, ..StreamConfig::default() }).await.unwrap();
    let base_ms = 1_795_000_000_000;
    let mut expected = Vec::new();
    for round in 0..5 {
        let records: Vec<RecordIn> = (0..20)
            .map(|i| record(&format!("k{i}"), &format!("{{\"round\":{round},\"i\":{i}}}"), base_ms + round * 100 + i))
            .collect();
        let appended = append_synced(&stream, 1, &records).await;
        assert_eq!((appended.base_offset, appended.last_offset), (round as u64 * 20, round as u64 * 20 + 19));
        expected.extend(records);
    }
    assert_eq!(stream.partition(1).unwrap().log_end_offset(), 100);
    assert_eq!(stream.partition(0).unwrap().log_end_offset(), 0);
    let mut got = Vec::new();
    let mut from = 0;
    while from < 100 {
        let read = read(log, &name, 1, from, 30).await;
        assert!(!read.records.is_empty() && read.records.len() <= 30, "{} records from {from}", read.records.len());
        assert_eq!(read.records[0].offset, from);
        from = read.next_offset;
        got.extend(read.records);
    }
    assert_eq!(got.len(), 100);
    for (offset, (out, sent)) in got.iter().zip(&expected).enumerate() {
        assert_eq!(out.offset, offset as u64);
        assert_eq!(out.key, sent.key);
        assert_eq!(out.value, sent.value);
        assert_eq!(out.timestamp_ms, sent.timestamp_ms);
        assert_eq!(out.headers, vec![("strom-test".to_string(), Some(Bytes::from_static(b"yes")))]);
    }
    // A reader that starts in the middle, and one that goes back.
    assert_eq!(read(log, &name, 1, 57, 1).await.records[0].value, expected[57].value);
    assert_eq!(read(log, &name, 1, 3, 2).await.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4]);
    let at_end = read(log, &name, 1, 100, 10).await;
    assert!(at_end.records.is_empty());
    assert_eq!((at_end.next_offset, at_end.log_end_offset), (100, 100));
    let (reader, stream_name) = (log.clone(), name.clone());
    let past =
        tokio::task::spawn_blocking(move || reader.stream(&stream_name)?.partition(1)?.read_records(101, 10, 1 << 20))
            .await
            .unwrap();
    assert!(matches!(past, Err(LogError::OffsetOutOfRange { .. })), "{past:?}");
    // Offsets by time: the first record at or after the time, none past the newest.
    let partition = stream.partition(1).unwrap();
    assert_eq!(partition.offset_for_timestamp(base_ms + 205).unwrap(), Some(45));
    assert_eq!(partition.offset_for_timestamp(base_ms + 10_000).unwrap(), None);
}

/// A waiting reader wakes when a record arrives, and times out when none does.
async fn waiters_wake_on_append(subject: Subject) {
    let log = subject.log.clone();
    let name = subject.stream("live");
    let stream = log.create_stream(&name, StreamConfig::default()).await.unwrap();
    assert!(!stream.partition(0).unwrap().wait_for(0, Duration::from_millis(300)).await);
    let writer = stream.clone();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let batch = EncodedBatch::encode(&[record("k", "v", 1)]).unwrap();
        writer.partition(0).unwrap().append(batch, Durability::Sync).await.unwrap()
    });
    assert!(stream.partition(0).unwrap().wait_for(0, Duration::from_secs(10)).await);
    append.await.unwrap();
    assert_eq!(read(&log, &name, 0, 0, 10).await.records.len(), 1);
}

/// Committed offsets: per group, stream and partition; forward only unless reset; seen by
/// the log reopened on the same store.
async fn group_offsets(subject: Subject) {
    let log = &subject.log;
    let name = subject.stream("clicks");
    log.create_stream(&name, StreamConfig { partitions: 3, ..StreamConfig::default() }).await.unwrap();
    let group = subject.stream("mailer");
    let groups = log.clone();
    let (g, n) = (group.clone(), name.clone());
    tokio::task::spawn_blocking(move || {
        let offsets = groups.groups();
        assert_eq!(offsets.committed(&g, &n, 0), None);
        offsets.commit(&g, &n, &[(0, 0), (2, 0)], CommitMode::Forward).unwrap();
        offsets.commit(&g, &n, &[(0, 7), (2, 3)], CommitMode::Forward).unwrap();
        assert_eq!(offsets.committed(&g, &n, 0), Some(7));
        assert_eq!(offsets.committed(&g, &n, 1), None);
        assert_eq!(offsets.committed(&g, &n, 2), Some(3));
        let back = offsets.commit(&g, &n, &[(0, 5)], CommitMode::Forward);
        assert!(matches!(back, Err(LogError::OffsetRegression { committed: 7, .. })), "{back:?}");
        offsets.commit(&g, &n, &[(0, 5)], CommitMode::Reset).unwrap();
        assert_eq!(offsets.committed(&g, &n, 0), Some(5));
        assert_eq!(offsets.committed(&format!("{g}-other"), &n, 0), None);
    })
    .await
    .unwrap();
}

/// Streams: created once (a second creation is refused), listed, deleted (then unknown).
async fn streams_are_created_listed_and_deleted(subject: Subject) {
    let log = &subject.log;
    let name = subject.stream("temporary");
    log.create_stream(&name, StreamConfig { partitions: 4, ..StreamConfig::default() }).await.unwrap();
    let again = log.create_stream(&name, StreamConfig::default()).await;
    assert!(matches!(again, Err(LogError::StreamExists(_))), "{:?}", again.err());
    assert_eq!(log.stream(&name).unwrap().partitions().len(), 4);
    assert!(log.streams().iter().any(|s| s.name == name));
    log.delete_stream(&name).await.unwrap();
    assert!(matches!(log.stream(&name), Err(LogError::StreamNotFound(_))));
    assert!(matches!(log.delete_stream(&name).await, Err(LogError::StreamNotFound(_))));
}

/// Two Strom processes (two producers) append to one partition at once, as collectors
/// behind a load balancer do: their records interleave, and every append still reports each
/// of its records' own offset (`Appended::offset`), which is where the record is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_backend_two_writers_on_one_partition() {
    let subject = kafka("two_writers").await;
    let bootstrap = subject.bootstrap.clone().unwrap();
    let name = subject.stream("shared");
    subject.log.create_stream(&name, StreamConfig::default()).await.unwrap();
    // Small producer batches, so that one append goes out in several requests and the two
    // processes' requests can fall between each other's.
    let small = || vec![("batch.num.messages".to_string(), "4".to_string())];
    let states = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let writers =
        [remote_log(&bootstrap, &states[0], small()).await, remote_log(&bootstrap, &states[1], small()).await];
    for writer in &writers {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while writer.stream(&name).is_err() {
            assert!(std::time::Instant::now() < deadline, "a second process never saw {name}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut sent: Vec<(u64, String)> = Vec::new();
    let mut scattered = 0;
    for round in 0..40 {
        let appends = writers.iter().enumerate().map(|(w, writer)| {
            let values: Vec<String> = (0..40).map(|i| format!("w{w}-r{round}-i{i}")).collect();
            let records: Vec<RecordIn> = values.iter().map(|v| record("k", v, 1)).collect();
            let stream = writer.stream(&name).unwrap();
            async move {
                let appended = append_synced(&stream, 0, &records).await;
                (appended, values)
            }
        });
        for (appended, values) in futures_util::future::join_all(appends).await {
            scattered += usize::from(appended.scattered.is_some());
            let offsets: Vec<u64> = (0..values.len()).map(|i| appended.offset(i)).collect();
            assert!(offsets.windows(2).all(|p| p[0] < p[1]), "an append's records out of order: {offsets:?}");
            assert_eq!((offsets[0], offsets[offsets.len() - 1]), (appended.base_offset, appended.last_offset));
            sent.extend(offsets.into_iter().zip(values));
        }
        if scattered >= 3 && round >= 5 {
            break;
        }
    }
    assert!(scattered > 0, "no append of the two writers was interleaved with the other's in {} records", sent.len());
    let total = sent.len() as u64;
    // A third process reads them back, once its view of the log end has caught up.
    let reader = subject.log.stream(&name).unwrap();
    assert!(reader.partition(0).unwrap().wait_for(total - 1, Duration::from_secs(20)).await);
    let mut stored = std::collections::HashMap::new();
    let mut from = 0;
    while from < total {
        let read = read(&subject.log, &name, 0, from, 1000).await;
        assert!(!read.records.is_empty(), "the partition ends at {from}, {total} records were appended");
        for record in read.records {
            stored.insert(record.offset, String::from_utf8(record.value.unwrap().to_vec()).unwrap());
        }
        from = read.next_offset;
    }
    assert_eq!(stored.len() as u64, total);
    for (offset, value) in &sent {
        assert_eq!(stored.get(offset), Some(value), "offset {offset}");
    }
}

/// One test per body and backend.
macro_rules! on_both_backends {
    ($($body:ident),* $(,)?) => {
        mod embedded_log {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    super::$body(super::embedded().await).await;
                }
            )*
        }
        mod kafka_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $body() {
                    super::$body(super::kafka(stringify!($body)).await).await;
                }
            )*
        }
    };
}

on_both_backends!(
    appends_read_back_in_order,
    waiters_wake_on_append,
    group_offsets,
    streams_are_created_listed_and_deleted,
);
