//! The Python `confluent-kafka` client (a current librdkafka) against the real server. The
//! scripts live in `tests/kafka/`; each exits non-zero with the reason when a check fails.

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
