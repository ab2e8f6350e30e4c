//! The lake through the server: the sink started with it and flushed at shutdown, SQL over
//! HTTP (`POST /v1/query`) as JSON and CSV, errors in the API's shape, the lake's metrics.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{TestServer, assert_error, status_and_json};
use serde_json::{Value, json};

fn lake_on(config: &mut strom_server::Config, roll_age_ms: u64) {
    config.lake.enabled = true;
    config.lake.roll_age_ms = roll_age_ms;
    config.catalog.dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog");
}

fn add_to_cart(n: u64) -> Value {
    json!({"type": "track", "event": "AddToCart", "userId": format!("u{}", n % 3), "timestamp": "2026-11-22T08:30:00.000Z",
           "properties": {"cart_id": "c1", "sku": format!("SKU-{n:05}"), "price": 2.5, "quantity": 1, "currency": "EUR"}})
}

/// Waits (bounded) until the lake's group has committed every offset of `stream`.
async fn landed(server: &TestServer, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, offsets) = server.get("/v1/groups/strom-lake/offsets").await;
        let done = offsets["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["stream"] == stream && s["partitions"].as_array().unwrap().iter().all(|p| p["lag"] == 0));
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "the lake did not land {stream}: {offsets}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_http_answers_json_and_csv() {
    let server = TestServer::start_with(|c| lake_on(c, 50)).await;
    server.create_stream("events", 2).await;
    let events: Vec<Value> = (0..10).map(add_to_cart).collect();
    let (status, body) = server.post("/v1/streams/events/events", &json!(events)).await;
    assert_eq!(status, 200, "{body}");
    landed(&server, "events").await;
    let sql = "SELECT user_id, count(*) AS n, sum(properties_price) AS total FROM events \
               WHERE date = '2026-11-22' AND hour = '08' GROUP BY user_id ORDER BY user_id";
    let (status, answer) = server.post("/v1/query", &json!({"sql": sql})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["columns"][0], json!({"name": "user_id", "type": "Utf8"}));
    assert_eq!(
        answer["rows"],
        json!([{"user_id": "u0", "n": 4, "total": 10.0}, {"user_id": "u1", "n": 3, "total": 7.5}, {"user_id": "u2", "n": 3, "total": 7.5}])
    );
    assert_eq!((answer["row_count"].clone(), answer["truncated"].clone()), (json!(3), json!(false)));
    let (_, one) = server.post("/v1/query", &json!({"sql": "SELECT timestamp, log_key FROM events LIMIT 1"})).await;
    assert_eq!(one["rows"][0]["timestamp"], "2026-11-22T08:30:00Z");
    let response = server
        .client
        .post(format!("{}/v1/query", server.url))
        .header("accept", "text/csv")
        .json(&json!({"sql": sql, "max_rows": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(response.headers()["x-strom-truncated"], "true");
    assert_eq!(response.text().await.unwrap(), "user_id,n,total\nu0,4,10.0\nu1,3,7.5\n");
    // Hour 08 of 2026-11-22 is long closed; its partitions have one file each: nothing to merge.
    let (status, report) = server.post("/v1/lake/compact", &json!({"stream": "events"})).await;
    assert_eq!(status, 200, "{report}");
    assert!(report["hours_examined"].as_u64() >= Some(1), "{report}");
    assert_eq!(report["files_merged"], 0, "{report}");
    let (status, error) = server.post("/v1/lake/compact", &json!({"stream": "no such/stream"})).await;
    assert_error(status, &error, 400, "invalid_stream_name");
    // Files published after a table's first query are in the next one.
    let more: Vec<Value> = (10..14).map(add_to_cart).collect();
    let (status, body) = server.post("/v1/streams/events/events", &json!(more)).await;
    assert_eq!(status, 200, "{body}");
    landed(&server, "events").await;
    let (status, count) = server.post("/v1/query", &json!({"sql": "SELECT count(*) AS n FROM events"})).await;
    assert_eq!((status, count["rows"][0]["n"].clone()), (200, json!(14)), "{count}");
    let (status, error) = server.post("/v1/query", &json!({"sql": "SELECT nope FROM events"})).await;
    assert_error(status, &error, 400, "invalid_query");
    let (status, error) = server.post("/v1/query", &json!({"sql": "DROP TABLE events"})).await;
    assert_error(status, &error, 400, "invalid_query");
    let (status, error) = server.post("/v1/query", &json!({"sql": "SELECT 1", "max_rows": 0})).await;
    assert_error(status, &error, 400, "invalid_request");
    let (status, error) = server.post("/v1/query", &json!({"query": "SELECT 1"})).await;
    assert_error(status, &error, 400, "malformed_json");
    let metrics = server.metrics().await;
    // The recorder is the process's: other tests' lakes add to the same series.
    for name in [
        "strom_lake_rows_total{stream=\"events\"}",
        "strom_lake_files_total{stream=\"events\"}",
        "strom_lake_bytes_total{stream=\"events\"}",
        "strom_lake_commit_seconds",
        "strom_lake_lag_records{stream=\"events\",partition=\"1\"}",
        "strom_lake_query_seconds",
    ] {
        assert!(metrics.contains(name), "{name} in the metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_what_the_sink_read() {
    // Files would be cut only after an hour: the stop must flush.
    let server = TestServer::start_with(|c| lake_on(c, 3_600_000)).await;
    server.create_stream("events", 1).await;
    let events: Vec<Value> = (0..5).map(add_to_cart).collect();
    server.post("/v1/streams/events/events", &json!(events)).await;
    // The sink reads as soon as the append is visible; give it that moment, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.metrics().await.contains("strom_lake_lag_records{stream=\"events\",partition=\"0\"} 5") {
        assert!(Instant::now() < deadline, "the sink never read the stream");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let dir = server.stop().await;
    let lake_files: Vec<_> = walk(&dir.path().join("lake/events"));
    assert_eq!(lake_files.len(), 1, "{lake_files:?}");
    let server = TestServer::start_in(dir, |c| lake_on(c, 3_600_000)).await;
    let (status, answer) = server.post("/v1/query", &json!({"sql": "SELECT count(*) AS n FROM events"})).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"], json!([{"n": 5}]));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_lake_says_so() {
    let server = TestServer::start().await;
    let response =
        server.client.post(format!("{}/v1/query", server.url)).json(&json!({"sql": "SELECT 1"})).send().await.unwrap();
    let (status, body) = status_and_json(response).await;
    assert_error(status, &body, 404, "lake_not_configured");
}
