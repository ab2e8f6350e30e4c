//! The Python clients `confluent-kafka` (a current librdkafka) and `kafka-python` (its own
//! protocol code) against the real server. The scripts live in `tests/kafka/`; each exits
//! non-zero with the reason when a check fails.

mod common;
mod kafka_support;

use std::time::Duration;

use common::*;
use kafka_support::*;

const TIMEOUT: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluent_kafka_administers_produces_and_consumes() {
    if !confluent_kafka() {
        return;
    }
    let server = TestServer::start().await;
    let output = python("admin_produce_consume.py", &[server.kafka_addr.to_string()], TIMEOUT).await;
    assert!(output.trim_end().ends_with("ok"), "{output}");
    // The topics it created and deleted went through the log: none is left.
    let (status, body) = server.get("/v1/streams").await;
    assert_eq!(status, 200);
    assert_eq!(body["streams"], serde_json::json!([]), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_compressed_with_each_codec_are_taken_and_read_back() {
    if !confluent_kafka() {
        return;
    }
    let server = TestServer::start().await;
    let output = python("compressed_produce.py", &[server.kafka_addr.to_string(), "3000".to_string()], TIMEOUT).await;
    assert!(output.trim_end().ends_with("ok"), "{output}");
    // Stored decompressed: the HTTP API reads the records as JSON like any other.
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let (status, read) =
            server.get(&format!("/v1/streams/shop-{codec}/partitions/0/events?offset=0&max_records=5")).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["events"].as_array().map(Vec::len), Some(5), "{read}");
        assert_eq!(read["events"][0]["value"]["codec"], codec, "{read}");
    }
    // The batches did arrive compressed (librdkafka sends a batch as it is when compressing
    // would not shrink it).
    let metrics = server.client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let line = metrics
            .lines()
            .find(|line| {
                line.starts_with("strom_kafka_compressed_batches_total") && line.contains(&format!("\"{codec}\""))
            })
            .unwrap_or_else(|| panic!("no {codec} batch counted"));
        let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(count >= 1.0, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_rebalances_when_one_leaves_and_resumes_after_a_restart() {
    if !confluent_kafka() {
        return;
    }
    let server = TestServer::start().await;
    server.create_stream("orders", 6).await;
    let args = |server: &TestServer, phase: &str| {
        vec![server.kafka_addr.to_string(), "orders".to_string(), "6".to_string(), phase.to_string()]
    };
    let output = python("group_rebalance.py", &args(&server, "consume"), TIMEOUT).await;
    assert!(output.contains("ok 5000"), "{output}");
    // The committed offsets are the log's: visible over HTTP and kept across a restart.
    let (status, body) = server.get("/v1/groups/mailer/offsets").await;
    assert_eq!(status, 200, "{body}");
    let server = server.restart().await;
    let output = python("group_rebalance.py", &args(&server, "resume"), TIMEOUT).await;
    assert!(output.contains("ok 1000"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_forced_to_retry_stores_each_record_once() {
    if !confluent_kafka() {
        return;
    }
    // The proxy's port is advertised, so the client keeps going through the proxy.
    let proxy_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let server =
        TestServer::start_with(|config| config.kafka.advertised_addr = Some(format!("127.0.0.1:{proxy_port}"))).await;
    server.create_stream("payments", 3).await;
    let args = [proxy_port.to_string(), server.kafka_addr.to_string(), "payments".to_string()];
    let output = python("idempotent_retries.py", &args, TIMEOUT).await;
    assert!(output.contains("ok 4000 records"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_administers_produces_and_consumes_in_a_group() {
    if !kafka_python() {
        return;
    }
    let server = TestServer::start().await;
    let output = python("kafka_python_client.py", &[server.kafka_addr.to_string()], TIMEOUT).await;
    assert!(output.trim_end().ends_with("ok"), "{output}");
    assert!(output.contains("gzip: 300 records produced compressed and read back"), "{output}");
    assert!(
        output.contains("snappy: 300 records") || output.contains("skipping snappy"),
        "snappy was produced or its skip said why: {output}"
    );
}

async fn enforce(mode: strom_kafka::InvalidRecords) -> (TestServer, serde_json::Value, serde_json::Value) {
    let server = TestServer::start_with(|config| config.kafka.invalid_records = mode).await;
    server.create_stream("orders", 2).await;
    let mode_name = match mode {
        strom_kafka::InvalidRecords::Reject => "reject",
        strom_kafka::InvalidRecords::DeadLetter => "dead-letter",
    };
    let args = [
        server.kafka_addr.to_string(),
        format!("{}/schema-registry", server.url),
        "orders".to_string(),
        mode_name.to_string(),
    ];
    let output = python("catalog_enforcement.py", &args, TIMEOUT).await;
    assert!(output.trim_end().ends_with("ok"), "{output}");
    let (_, orders) = server.get("/v1/streams/orders").await;
    let (_, dead) = server.get("/v1/streams/dead-letters/partitions/0/events?offset=0&max_records=100").await;
    (server, orders, dead)
}

fn records(stream: &serde_json::Value) -> u64 {
    stream["partitions"].as_array().unwrap().iter().map(|p| p["log_end_offset"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_topic_schema_refuses_are_rejected_with_invalid_record() {
    if !confluent_kafka() {
        return;
    }
    let (_server, orders, dead) = enforce(strom_kafka::InvalidRecords::Reject).await;
    // The 20 serialized records; nothing of the mixed batch.
    assert_eq!(records(&orders), 20, "{orders}");
    assert_eq!(dead["error"]["code"], "stream_not_found", "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_a_topic_schema_refuses_are_dead_lettered_with_their_reason() {
    if !confluent_kafka() {
        return;
    }
    let (server, orders, dead) = enforce(strom_kafka::InvalidRecords::DeadLetter).await;
    assert_eq!(records(&orders), 23, "20 serialized and the 3 valid of the mixed batch: {orders}");
    let letters = dead["events"].as_array().unwrap();
    assert_eq!(letters.len(), 2, "{dead}");
    for letter in letters {
        let reason: serde_json::Value =
            serde_json::from_str(letter["headers"]["strom-dead-letter"].as_str().unwrap()).unwrap();
        assert_eq!(reason["reason"], "invalid_schema");
        assert_eq!(reason["source"], "kafka");
        assert_eq!(reason["stream"], "orders");
        assert!(reason["schema"].as_str().unwrap().starts_with("orders-value version 1"), "{reason}");
    }
    // The valid ones keep their order in partition 0, after whatever the serializer put there.
    let (_, part) = server.get("/v1/streams/orders/partitions/0/events?offset=0&max_records=100").await;
    let ids: Vec<String> = part["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["value"]["order_id"].as_str().map(String::from))
        .filter(|id| id.len() == 1)
        .collect();
    assert_eq!(ids, ["a", "c", "e"]);
}
