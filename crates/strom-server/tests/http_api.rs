mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_created_described_listed_and_deleted() {
    let server = TestServer::start().await;
    let (status, body) =
        server.post("/v1/streams", &json!({"name": "clicks", "partitions": 3, "retention_ms": null})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["config"]["partitions"], 3);
    assert_eq!(body["config"]["retention_ms"], Value::Null);
    assert_eq!(body["partitions"].as_array().unwrap().len(), 3);
    let (status, body) = server.post("/v1/streams", &json!({"name": "clicks"})).await;
    assert_error(status, &body, 409, "stream_exists");
    let (status, body) = server.post("/v1/streams", &json!({"name": "no/slash"})).await;
    assert_error(status, &body, 400, "invalid_stream_name");
    let (status, body) = server.post("/v1/streams", &json!({"name": "x", "partitions": 0})).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = server.post("/v1/streams", &json!({"name": "x", "colour": "red"})).await;
    assert_error(status, &body, 400, "malformed_json");
    server.create_stream("orders", 1).await;
    let (status, body) = server.get("/v1/streams").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = body["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["clicks", "orders"]);
    assert_eq!(server.delete("/v1/streams/orders").await, 204);
    let (status, body) = server.get("/v1/streams/orders").await;
    assert_error(status, &body, 404, "stream_not_found");
    assert_eq!(server.delete("/v1/streams/orders").await, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produced_events_are_read_back_by_offset_and_timestamp() {
    let server = TestServer::start().await;
    server.create_stream("shop", 4).await;
    let events: Vec<Value> = (0..20)
        .map(|i| json!({"type": "track", "event": "AddToCart", "userId": format!("u{}", i % 3), "n": i}))
        .collect();
    let (status, body) = server.post("/v1/streams/shop/events", &json!(events)).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 20);
    // One user's events share a partition, in order (Kafka's murmur2 partitioner).
    for user in 0..3 {
        let partitions: Vec<&Value> = (0..20).filter(|i| i % 3 == user).map(|i| &results[i]["partition"]).collect();
        assert!(partitions.windows(2).all(|w| w[0] == w[1]), "user {user}: {partitions:?}");
    }
    // Every event is where its result says.
    for (i, result) in results.iter().enumerate() {
        let (partition, offset) = (result["partition"].as_u64().unwrap(), result["offset"].as_u64().unwrap());
        let (status, read) =
            server.get(&format!("/v1/streams/shop/partitions/{partition}/events?offset={offset}&max_records=1")).await;
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["events"][0]["value"], events[i]);
        assert_eq!(read["events"][0]["offset"], offset);
        assert_eq!(read["events"][0]["key"], format!("u{}", i % 3));
        assert_eq!(read["next_offset"], offset + 1);
    }
    // A single event, an explicit key and an explicit partition.
    let (status, body) = server.post("/v1/streams/shop/events?partition=2&durability=buffered", &json!({"a": 1})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["partition"], 2);
    let (_, body) = server.post("/v1/streams/shop/events?key=u1", &json!({"b": 2})).await;
    assert_eq!(body["results"][0]["partition"], results[1]["partition"], "the same key as userId u1");
    // By timestamp: everything so far is older than now + 1 min, newer than an hour ago.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let (_, read) = server.get(&format!("/v1/streams/shop/partitions/2/events?timestamp={}", now_ms - 3_600_000)).await;
    assert_eq!(read["events"][0]["offset"], 0);
    let (_, read) = server.get(&format!("/v1/streams/shop/partitions/2/events?timestamp={}", now_ms + 60_000)).await;
    assert_eq!(read["events"], json!([]));
    assert_eq!(read["next_offset"], read["log_end_offset"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_precise_error() {
    let server = TestServer::start_with(|config| {
        config.http.body_bytes_max = 4096;
        config.http.event_bytes_max = 1024;
        config.http.inflight_bytes_max = 8192;
    })
    .await;
    server.create_stream("s", 2).await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("/v1/streams/s/events", b"{not json".to_vec(), 400, "malformed_json"),
        ("/v1/streams/s/events", b"[1, 2]".to_vec(), 400, "invalid_request"),
        ("/v1/streams/s/events", b"[]".to_vec(), 400, "invalid_request"),
        ("/v1/streams/s/events", b"\"text\"".to_vec(), 400, "malformed_json"),
        ("/v1/streams/s/events", vec![b'{', 0xff, b'}'], 400, "malformed_json"),
        ("/v1/streams/s/events", format!("{{\"big\":\"{}\"}}", "x".repeat(2000)).into_bytes(), 413, "event_too_large"),
        (
            "/v1/streams/s/events",
            format!("[{}]", vec!["{\"a\":1}"; 1000].join(",")).into_bytes(),
            413,
            "body_too_large",
        ),
        ("/v1/streams/nope/events", b"{}".to_vec(), 404, "stream_not_found"),
        ("/v1/streams/s/events?partition=2", b"{}".to_vec(), 404, "partition_not_found"),
        ("/v1/streams/s/events?durability=maybe", b"{}".to_vec(), 400, "invalid_request"),
        ("/v1/streams/s/events?colour=red", b"{}".to_vec(), 400, "invalid_request"),
        ("/v1/nothing", b"{}".to_vec(), 404, "not_found"),
    ];
    for (path, body, status, code) in cases {
        let (actual, response) = server.post_raw(path, body).await;
        assert_error(actual, &response, status, code);
    }
    for (path, status, code) in [
        ("/v1/streams/s/partitions/0/events?offset=5", 416, "offset_out_of_range"),
        ("/v1/streams/s/partitions/9/events", 404, "partition_not_found"),
        ("/v1/streams/s/partitions/x/events", 400, "invalid_request"),
        ("/v1/streams/s/partitions/0/events?max_records=0", 400, "invalid_request"),
        ("/v1/streams/s/partitions/0/events?wait_ms=999999", 400, "invalid_request"),
    ] {
        let (actual, response) = server.get(path).await;
        assert_error(actual, &response, status, code);
    }
    let response = server.client.put(format!("{}/v1/streams", server.url)).send().await.unwrap();
    let (status, body) = status_and_json(response).await;
    assert_error(status, &body, 405, "method_not_allowed");
    // Nothing of the refused requests landed.
    let (_, read) = server.get("/v1/streams/s").await;
    assert_eq!(read["log_end_offset_total"], 0);
}

/// A body declared larger than the limit is refused before it is sent, and a request whose
/// bytes do not fit the in-flight budget is answered 429 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_overloaded_requests_are_refused_early() {
    let server = TestServer::start_with(|config| {
        config.http.body_bytes_max = 4096;
        config.http.event_bytes_max = 1024;
        config.http.inflight_bytes_max = 4096;
    })
    .await;
    server.create_stream("s", 1).await;
    // 100 MB declared, nothing sent: the answer comes at once.
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"POST /v1/streams/s/events HTTP/1.1\r\nhost: x\r\ncontent-length: 100000000\r\n\r\n")
        .await
        .unwrap();
    let answer = read_head(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // Hold the whole budget with a request whose body never finishes...
    let mut holder = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    holder
        .write_all(b"POST /v1/streams/s/events HTTP/1.1\r\nhost: x\r\ncontent-length: 4096\r\n\r\n{\"a\":")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...so the next one is told to come back.
    let response =
        server.client.post(format!("{}/v1/streams/s/events", server.url)).body("{\"b\":1}").send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = status_and_json(response).await;
    assert_error(status, &body, 429, "overloaded");
    drop(holder);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = server.post("/v1/streams/s/events", &json!({"b": 1})).await;
    assert_eq!(status, 200, "the budget is released when the holder goes");
}

async fn read_head(socket: &mut tokio::net::TcpStream) -> String {
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buffer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_waits_for_data_and_returns_it() {
    let server = TestServer::start().await;
    server.create_stream("s", 1).await;
    let started = std::time::Instant::now();
    let (status, read) = server.get("/v1/streams/s/partitions/0/events?offset=0&wait_ms=100").await;
    assert_eq!(status, 200);
    assert_eq!(read["events"], json!([]));
    assert!(started.elapsed() >= Duration::from_millis(100), "it waited");
    let poll = {
        let (client, url) = (server.client.clone(), server.url.clone());
        tokio::spawn(async move {
            let response = client
                .get(format!("{url}/v1/streams/s/partitions/0/events?offset=0&wait_ms=20000"))
                .send()
                .await
                .unwrap();
            status_and_json(response).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.post("/v1/streams/s/events", &json!({"hello": "world"})).await;
    let (status, read) = poll.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(read["events"][0]["value"], json!({"hello": "world"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_commit_never_regress_and_survive_a_restart() {
    let server = TestServer::start().await;
    server.create_stream("s", 2).await;
    let events: Vec<Value> = (0..10).map(|i| json!({"userId": format!("u{i}"), "i": i})).collect();
    server.post("/v1/streams/s/events", &json!(events)).await;
    let (status, page) = server.get("/v1/groups/g1/streams/s/events?max_records=100").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 10);
    let offsets = page["offsets"].clone();
    let (status, body) = server.post("/v1/groups/g1/offsets", &json!({"stream": "s", "offsets": offsets})).await;
    assert_eq!(status, 200, "{body}");
    let (_, page) = server.get("/v1/groups/g1/streams/s/events").await;
    assert_eq!(page["events"], json!([]), "everything was committed");
    // Backwards is refused; beyond the end is refused.
    let (status, body) =
        server.post("/v1/groups/g1/offsets", &json!({"stream": "s", "offsets": [{"partition": 0, "offset": 0}]})).await;
    let committed_0 =
        offsets.as_array().unwrap().iter().find(|o| o["partition"] == 0).map(|o| o["offset"].as_u64().unwrap());
    if committed_0.is_some_and(|o| o > 0) {
        assert_error(status, &body, 409, "offset_regression");
    }
    let (status, body) = server
        .post("/v1/groups/g1/offsets", &json!({"stream": "s", "offsets": [{"partition": 0, "offset": 999}]}))
        .await;
    assert_error(status, &body, 416, "offset_out_of_range");
    // Lag appears in the group's offsets and in /metrics.
    server.post("/v1/streams/s/events?partition=1", &json!([{"x": 1}, {"x": 2}])).await;
    let (_, body) = server.get("/v1/groups/g1/offsets").await;
    let partition_1 =
        body["streams"][0]["partitions"].as_array().unwrap().iter().find(|p| p["partition"] == 1).cloned().unwrap();
    assert_eq!(partition_1["lag"], 2, "{body}");
    assert!(
        server
            .metrics()
            .await
            .contains("strom_consumer_group_lag_records{group=\"g1\",stream=\"s\",partition=\"1\"} 2")
    );
    // Committed offsets survive a restart; reset moves them back on request.
    let server = server.restart().await;
    let (_, page) = server.get("/v1/groups/g1/streams/s/events?commit=true").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 2, "only the two new events");
    let (_, page) = server.get("/v1/groups/g1/streams/s/events").await;
    assert_eq!(page["events"], json!([]), "commit=true committed them");
    let (status, body) = server.post("/v1/groups/g1/offsets/reset", &json!({"stream": "s", "to": "earliest"})).await;
    assert_eq!(status, 200, "{body}");
    let (_, page) = server.get("/v1/groups/g1/streams/s/events?max_records=100").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 12);
    let (status, body) = server
        .post("/v1/groups/g1/offsets/reset", &json!({"stream": "s", "to": {"offset": 1}, "partitions": [1]}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.post("/v1/groups/g1/offsets/reset", &json!({"stream": "s", "to": "sideways"})).await;
    assert_error(status, &body, 400, "malformed_json");
    let (_, body) = server.get("/v1/groups").await;
    assert_eq!(body["groups"], json!(["g1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_tail_streams_new_records_as_server_sent_events() {
    let server = TestServer::start().await;
    server.create_stream("s", 2).await;
    server.post("/v1/streams/s/events", &json!({"old": true})).await;
    let mut response = server.client.get(format!("{}/v1/streams/s/tail", server.url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.post("/v1/streams/s/events", &json!({"new": 1, "userId": "a"})).await;
    let mut seen = String::new();
    while !seen.contains("\"new\":1") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("a record in time")
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: record"), "{seen}");
    assert!(!seen.contains("\"old\""), "the tail starts at the end: {seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_are_served() {
    let server = TestServer::start().await;
    server.create_stream("s", 1).await;
    server.post("/v1/streams/s/events", &json!([{"a": 1}, {"a": 2}])).await;
    let (status, body) = server.get("/health/live").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("live")));
    let (status, body) = server.get("/health/ready").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let metrics = server.metrics().await;
    for name in [
        "strom_log_appended_records_total{stream=\"s\",partition=\"0\"}",
        "strom_log_appended_bytes_total",
        "strom_log_fsync_duration_seconds_bucket",
        "strom_log_append_duration_seconds_bucket",
        "strom_log_records_per_fsync_bucket",
        "strom_log_disk_bytes",
        "strom_http_requests_total{route=\"/v1/streams/{stream}/events\",method=\"POST\",status=\"200\"}",
        "strom_http_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_keeps_everything() {
    let server = TestServer::start().await;
    server.create_stream("s", 3).await;
    let events: Vec<Value> = (0..300).map(|i| json!({"anonymousId": format!("a{i}"), "i": i})).collect();
    let (_, body) = server.post("/v1/streams/s/events", &json!(events)).await;
    let server = server.restart().await;
    for (i, result) in body["results"].as_array().unwrap().iter().enumerate() {
        let path = format!(
            "/v1/streams/s/partitions/{}/events?offset={}&max_records=1",
            result["partition"], result["offset"]
        );
        let (_, read) = server.get(&path).await;
        assert_eq!(read["events"][0]["value"]["i"], i);
    }
    let (_, described) = server.get("/v1/streams/s").await;
    assert_eq!(described["log_end_offset_total"], 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_event_counts_are_bounded() {
    let server = TestServer::start().await;
    server.create_stream("s", 2).await;
    let long_key = "k".repeat(5000);
    let (status, body) = server.post(&format!("/v1/streams/s/events?key={long_key}"), &json!({"a": 1})).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = server.post("/v1/streams/s/events", &json!({"userId": long_key})).await;
    assert_error(status, &body, 400, "invalid_request");
    let many: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    let (status, body) = server.post("/v1/streams/s/events", &json!(many)).await;
    assert_error(status, &body, 413, "too_many_events");
    let (_, described) = server.get("/v1/streams/s").await;
    assert_eq!(described["log_end_offset_total"], 0, "nothing of the refused requests landed");
}

/// Stream names are Kafka topic names; none is special to the data directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_valid_name_survives_restarts_and_deletions() {
    let server = TestServer::start().await;
    for name in ["orders", "orders.deleted", "trash", "streams"] {
        server.create_stream(name, 1).await;
        let (status, _) = server.post(&format!("/v1/streams/{name}/events"), &json!({"name": name})).await;
        assert_eq!(status, 200);
    }
    assert_eq!(server.delete("/v1/streams/orders").await, 204);
    let server = server.restart().await;
    let (_, body) = server.get("/v1/streams").await;
    let names: Vec<&str> = body["streams"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["orders.deleted", "streams", "trash"]);
    let (_, read) = server.get("/v1/streams/orders.deleted/partitions/0/events").await;
    assert_eq!(read["events"][0]["value"]["name"], "orders.deleted");
}
