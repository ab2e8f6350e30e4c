//! The Segment-compatible tracking API: write keys and their scope, enrichment, dedup across
//! restarts, limits, gzip and CORS, through the real server.

mod common;

use std::io::Write;

use common::{TestServer, assert_error, status_and_json};
use serde_json::{Value, json};

/// Creates a source through the admin API and returns its write key.
async fn create_source(server: &TestServer, body: Value) -> String {
    let (status, created) = server.post("/v1/sources", &body).await;
    assert_eq!(status, 201, "{created}");
    created["write_key"].as_str().expect("a write key").to_string()
}

async fn send(server: &TestServer, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let response =
        server.client.post(format!("{}{path}", server.url)).basic_auth(key, Some("")).json(body).send().await.unwrap();
    status_and_json(response).await
}

/// Every record of a stream, all partitions, as (headers, value) in offset order per partition.
async fn read_all(server: &TestServer, stream: &str) -> Vec<Value> {
    let (status, described) = server.get(&format!("/v1/streams/{stream}")).await;
    assert_eq!(status, 200, "{described}");
    let mut out = Vec::new();
    for partition in described["partitions"].as_array().unwrap() {
        let id = partition["partition"].as_u64().unwrap();
        let (status, read) =
            server.get(&format!("/v1/streams/{stream}/partitions/{id}/events?offset=0&max_records=10000")).await;
        assert_eq!(status, 200, "{read}");
        out.extend(read["events"].as_array().unwrap().iter().cloned());
    }
    out
}

fn values(records: &[Value]) -> Vec<Value> {
    records.iter().map(|r| r["value"].clone()).collect()
}

#[tokio::test]
async fn a_track_call_is_enriched_and_stored_durably() {
    let server = TestServer::start().await;
    let key = create_source(&server, json!({"name": "web"})).await;
    let (status, body) = send(
        &server,
        "/v1/track",
        &key,
        &json!({
            "userId": "u1", "event": "AddToCart", "messageId": "m-1", "writeKey": "never stored",
            "properties": {"sku": "SKU-1", "price": 9.5},
            // The client's clock is 1 h ahead: stamped 13:00:00, sent 13:00:05.
            "timestamp": "2030-01-01T13:00:00.000Z", "sentAt": "2030-01-01T13:00:05.000Z",
            "context": {"userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"}
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["success"], true);
    assert_eq!(body["stream"], "events");
    let records = read_all(&server, "events").await;
    assert_eq!(records.len(), 1);
    let event = &records[0]["value"];
    assert_eq!(event["type"], "track", "the endpoint's call is written into the event: {event}");
    assert_eq!(event["event"], "AddToCart");
    assert_eq!(event["properties"]["price"], 9.5);
    assert!(event.get("writeKey").is_none(), "{event}");
    assert_eq!(event["originalTimestamp"], "2030-01-01T13:00:00.000Z");
    assert_eq!(event["sentAt"], "2030-01-01T13:00:05.000Z");
    // timestamp = receivedAt − (sentAt − originalTimestamp) = receivedAt − 5 s.
    let received: i64 = parse_ms(event["receivedAt"].as_str().unwrap());
    let corrected: i64 = parse_ms(event["timestamp"].as_str().unwrap());
    assert_eq!(received - corrected, 5_000, "{event}");
    // The connection's address, anonymised (the test connects from 127.0.0.1).
    assert_eq!(event["context"]["ip"], "127.0.0.0");
    assert_eq!(event["context"]["userAgentParsed"]["os"], "iOS");
    let headers = &records[0]["headers"];
    assert_eq!(headers["strom-source"], "web", "{headers}");
    assert_eq!(headers["strom-dedup"], "web/m-1", "{headers}");
}

fn parse_ms(text: &str) -> i64 {
    // YYYY-MM-DDTHH:MM:SS.mmmZ, all in UTC as the collector writes it.
    let date = &text[..10];
    let parts: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let days = days_from_civil(parts[0], parts[1], parts[2]);
    let h: i64 = text[11..13].parse().unwrap();
    let m: i64 = text[14..16].parse().unwrap();
    let s: i64 = text[17..19].parse().unwrap();
    let ms: i64 = text[20..23].parse().unwrap();
    ((days * 24 + h) * 60 + m) * 60_000 + s * 1000 + ms
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[tokio::test]
async fn write_keys_only_write_and_only_their_types() {
    let server = TestServer::start().await;
    let key = create_source(&server, json!({"name": "shop", "allowed_types": ["AddToCart", "identify"]})).await;
    let event = json!({"userId": "u1", "event": "AddToCart"});
    // No key, a wrong key.
    let (status, body) = server.post("/v1/track", &event).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = send(&server, "/v1/track", "sk_wrong", &event).await;
    assert_error(status, &body, 401, "unauthorized");
    // The key in the body, as analytics.js sends it.
    let (status, body) =
        server.post("/v1/track", &json!({"writeKey": key, "userId": "u1", "event": "AddToCart"})).await;
    assert_eq!(status, 200, "{body}");
    // A type outside the source's list.
    let (status, body) = send(&server, "/v1/track", &key, &json!({"userId": "u1", "event": "Checkout"})).await;
    assert_error(status, &body, 403, "type_not_allowed");
    let (status, body) = send(&server, "/v1/page", &key, &json!({"userId": "u1"})).await;
    assert_error(status, &body, 403, "type_not_allowed");
    // A write key can neither read nor administer.
    for (method, path) in [
        ("GET", "/v1/streams"),
        ("GET", "/v1/streams/events/partitions/0/events?offset=0"),
        ("POST", "/v1/streams"),
        ("GET", "/v1/sources"),
        ("POST", "/v1/streams/events/events"),
    ] {
        let request = match method {
            "GET" => server.client.get(format!("{}{path}", server.url)),
            _ => server.client.post(format!("{}{path}", server.url)).body("{}"),
        };
        let (status, body) = status_and_json(request.basic_auth(&key, Some("")).send().await.unwrap()).await;
        assert_error(status, &body, 403, "forbidden");
        let (status, body) = status_and_json(
            match method {
                "GET" => server.client.get(format!("{}{path}", server.url)),
                _ => server.client.post(format!("{}{path}", server.url)).body("{}"),
            }
            .bearer_auth(&key)
            .send()
            .await
            .unwrap(),
        )
        .await;
        assert_error(status, &body, 403, "forbidden");
    }
}

#[tokio::test]
async fn admin_tokens_guard_the_admin_api_when_configured() {
    let token = "admin-secret-token";
    let digest = strom_ingest::source::digest_hex(token);
    let server = TestServer::start_with(|config| config.auth.admin_tokens_sha256 = vec![digest]).await;
    let (status, body) = server.get("/v1/streams").await;
    assert_error(status, &body, 401, "unauthorized");
    let response = server.client.get(format!("{}/v1/streams", server.url)).bearer_auth("wrong").send().await.unwrap();
    let (status, body) = status_and_json(response).await;
    assert_error(status, &body, 401, "unauthorized");
    let response = server.client.get(format!("{}/v1/streams", server.url)).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    // The schema registry is admin too; its clients send the token as a Basic password.
    let (status, body) = server.get("/schema-registry/subjects").await;
    assert_eq!(status, 401, "{body}");
    let response = server
        .client
        .get(format!("{}/schema-registry/subjects", server.url))
        .basic_auth("any", Some(token))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(server.get("/health/ready").await.0, 200);
    assert!(server.metrics().await.contains("strom_"));
}

#[tokio::test]
async fn a_retried_message_is_stored_once_even_across_restarts() {
    let server = TestServer::start().await;
    let key = create_source(&server, json!({"name": "web"})).await;
    let event = json!({"userId": "u1", "event": "AddToCart", "messageId": "retry-me"});
    let (status, first) = send(&server, "/v1/track", &key, &event).await;
    assert_eq!(status, 200, "{first}");
    let (status, second) = send(&server, "/v1/track", &key, &event).await;
    assert_eq!((status, &second["duplicate"]), (200, &json!(true)), "{second}");
    // Another source's message with the same id is another message.
    let other = create_source(&server, json!({"name": "app"})).await;
    let (status, body) = send(&server, "/v1/track", &other, &event).await;
    assert_eq!((status, &body["duplicate"]), (200, &Value::Null), "{body}");
    // In a batch, a repeat within the batch and a repeat of an earlier request.
    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "AddToCart", "messageId": "retry-me"},
        {"type": "track", "userId": "u1", "event": "AddToCart", "messageId": "b-1"},
        {"type": "track", "userId": "u1", "event": "AddToCart", "messageId": "b-1"}
    ]});
    let (status, body) = send(&server, "/v1/batch", &key, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["duplicates"].as_u64()), (Some(1), Some(2)), "{body}");

    // A clean restart: the index is read from its files.
    let server = server.restart().await;
    let (_, again) = send(&server, "/v1/track", &key, &event).await;
    assert_eq!(again["duplicate"], true, "{again}");
    // As after a crash: without the index files, it is rebuilt from the log.
    let dir = server.stop().await;
    std::fs::remove_dir_all(dir.path().join("collector/dedup")).unwrap();
    let server = TestServer::start_in(dir, |_| {}).await;
    let (_, again) = send(&server, "/v1/track", &key, &event).await;
    assert_eq!(again["duplicate"], true, "{again}");
    let stored = values(&read_all(&server, "events").await);
    let count = |id: &str| stored.iter().filter(|e| e["messageId"] == id).count();
    assert_eq!((count("retry-me"), count("b-1")), (2, 1), "one per source: {stored:?}");
    assert!(server.metrics().await.contains("strom_ingest_duplicates_total"));
}

#[tokio::test]
async fn bad_input_gets_a_precise_error_and_nothing_is_half_written() {
    let server = TestServer::start().await;
    let key = create_source(&server, json!({"name": "web"})).await;
    let post = |path: &'static str, body: Vec<u8>| {
        let request = server.client.post(format!("{}{path}", server.url)).basic_auth(&key, Some("")).body(body);
        async move { status_and_json(request.send().await.unwrap()).await }
    };
    let (status, body) = post("/v1/track", b"{not json".to_vec()).await;
    assert_error(status, &body, 400, "malformed_json");
    let (status, body) = post("/v1/batch", b"{\"batch\": [{\"userId\": \"\xff\xfe\"}]}".to_vec()).await;
    assert_error(status, &body, 400, "malformed_json");
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let (status, body) =
        post("/v1/track", format!("{{\"userId\":\"u\",\"event\":\"A\",\"properties\":{{\"x\":{deep}}}}}").into_bytes())
            .await;
    assert_error(status, &body, 400, "malformed_json");
    let (status, body) = post("/v1/batch", b"{\"events\": []}".to_vec()).await;
    assert_error(status, &body, 400, "malformed_json");
    // Over 32 KB: a single call is refused; in a batch only that event is.
    let big = "x".repeat(40 * 1024);
    let (status, body) =
        send(&server, "/v1/track", &key, &json!({"userId": "u", "event": "A", "properties": {"big": big}})).await;
    assert_error(status, &body, 413, "event_too_large");
    let (status, body) = send(
        &server,
        "/v1/batch",
        &key,
        &json!({"batch": [
            {"type": "track", "userId": "u", "event": "A", "properties": {"big": big}},
            {"type": "track", "userId": "u", "event": "B"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["rejected"].as_u64()), (Some(1), Some(1)), "{body}");
    assert_eq!(body["errors"][0]["index"], 0);
    assert_eq!(body["errors"][0]["code"], "event_too_large");
    // Over the 500 KB request limit.
    let huge: Vec<Value> = (0..20).map(|i| json!({"type": "track", "userId": "u", "event": "A", "properties": {"i": i, "pad": "y".repeat(30_000)}})).collect();
    let (status, body) = send(&server, "/v1/batch", &key, &json!({"batch": huge})).await;
    assert_error(status, &body, 413, "body_too_large");
    // Envelope errors are kept in the dead-letter stream with the reason, the rest go through.
    let (status, body) = send(
        &server,
        "/v1/batch",
        &key,
        &json!({"batch": [
            {"type": "track", "userId": "u"},
            {"type": "shout", "userId": "u"},
            {"type": "identify", "traits": {"plan": "pro"}},
            {"type": "identify", "userId": "u", "traits": {"plan": "pro"}}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["accepted"].as_u64(), body["dead_lettered"].as_u64()), (Some(1), Some(3)), "{body}");
    assert_eq!(body["errors"][0]["violations"][0]["pointer"], "/event", "{body}");
    assert_eq!(body["errors"][1]["violations"][0]["keyword"], "enum", "{body}");
    let letters = read_all(&server, "dead-letters").await;
    assert_eq!(letters.len(), 3);
    let first = &letters.iter().find(|l| l["value"]["type"] == "shout").expect("kept as sent")["headers"];
    let reason: Value = serde_json::from_str(first["strom-dead-letter"].as_str().unwrap()).unwrap();
    assert_eq!(reason["code"], "invalid_envelope");
    assert_eq!(reason["source"], "web");
    assert_eq!(reason["ip"], "127.0.0.0");
    // Unsupported encodings and broken gzip.
    let request = server
        .client
        .post(format!("{}/v1/track", server.url))
        .basic_auth(&key, Some(""))
        .header("content-encoding", "br")
        .body("{}");
    let (status, body) = status_and_json(request.send().await.unwrap()).await;
    assert_error(status, &body, 415, "unsupported_encoding");
    let request = server
        .client
        .post(format!("{}/v1/track", server.url))
        .basic_auth(&key, Some(""))
        .header("content-encoding", "gzip")
        .body("not gzip");
    let (status, body) = status_and_json(request.send().await.unwrap()).await;
    assert_error(status, &body, 400, "malformed_gzip");
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn gzip_bodies_are_accepted_within_a_decompressed_bound() {
    let server = TestServer::start().await;
    let key = create_source(&server, json!({"name": "web"})).await;
    let batch = json!({"batch": [{"type": "track", "userId": "u", "event": "A", "messageId": "gz-1"}], "sentAt": "2030-01-01T00:00:00Z"});
    let request = server
        .client
        .post(format!("{}/v1/batch", server.url))
        .basic_auth(&key, Some(""))
        .header("content-encoding", "gzip")
        .body(gzip(&serde_json::to_vec(&batch).unwrap()));
    let (status, body) = status_and_json(request.send().await.unwrap()).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    // A small body that inflates past the limit: a zip bomb.
    let bomb = gzip(&vec![b' '; 4 * 1024 * 1024]);
    assert!(bomb.len() < 10 * 1024);
    let request = server
        .client
        .post(format!("{}/v1/batch", server.url))
        .basic_auth(&key, Some(""))
        .header("content-encoding", "gzip")
        .body(bomb);
    let (status, body) = status_and_json(request.send().await.unwrap()).await;
    assert_error(status, &body, 413, "body_too_large");
}

#[tokio::test]
async fn browsers_may_send_only_from_their_source_origins() {
    let server = TestServer::start().await;
    let key = create_source(&server, json!({"name": "web", "cors_origins": ["https://shop.example"]})).await;
    let preflight = |origin: &'static str| {
        server
            .client
            .request(reqwest::Method::OPTIONS, format!("{}/v1/batch", server.url))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
    };
    let allowed = preflight("https://shop.example").await.unwrap();
    assert_eq!(allowed.status(), 204);
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://shop.example");
    assert_eq!(preflight("https://evil.example").await.unwrap().status(), 403);
    // analytics.js: text/plain, key in the body.
    let body = json!({"writeKey": key, "batch": [{"type": "page", "anonymousId": "a1", "writeKey": key}]});
    let send_from = |origin: &'static str| {
        server
            .client
            .post(format!("{}/v1/batch", server.url))
            .header("origin", origin)
            .header("content-type", "text/plain")
            .body(body.to_string())
            .send()
    };
    let response = send_from("https://shop.example").await.unwrap();
    assert_eq!(response.headers()["access-control-allow-origin"], "https://shop.example");
    let (status, body) = status_and_json(response).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(1)), "{body}");
    let (status, body) = status_and_json(send_from("https://evil.example").await.unwrap()).await;
    assert_error(status, &body, 403, "origin_not_allowed");
}

#[tokio::test]
async fn sources_api_round_trip() {
    let server = TestServer::start().await;
    let key = create_source(&server, json!({"name": "web"})).await;
    let (status, body) = server.post("/v1/sources", &json!({"name": "web"})).await;
    assert_error(status, &body, 409, "source_exists");
    let (status, body) = server.post("/v1/sources", &json!({"name": "bad name"})).await;
    assert_error(status, &body, 400, "invalid_source");
    let (status, body) = server.post("/v1/sources", &json!({"name": "x", "colour": 1})).await;
    assert_error(status, &body, 400, "malformed_json");
    let (status, listed) = server.get("/v1/sources").await;
    assert_eq!(status, 200);
    assert_eq!(listed["sources"][0]["name"], "web");
    assert!(!listed.to_string().contains(&key), "keys are never shown");
    let (status, rotated) = server.post("/v1/sources/web/keys", &json!({})).await;
    assert_eq!(status, 201, "{rotated}");
    let second = rotated["write_key"].as_str().unwrap();
    let (status, _) = send(&server, "/v1/identify", second, &json!({"userId": "u"})).await;
    assert_eq!(status, 200);
    assert_eq!(server.delete("/v1/sources/web").await, 204);
    let (status, body) = send(&server, "/v1/identify", &key, &json!({"userId": "u"})).await;
    assert_error(status, &body, 401, "unauthorized");
    assert_eq!(server.delete("/v1/sources/web").await, 404);
}

/// The golden corpus (tests/golden/collector_cases.jsonl) against the example catalog at the
/// repository root: each case's status, outcome, and where and why it failed.
#[tokio::test]
async fn golden_cases_against_the_example_catalog() {
    let catalog_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog");
    let server = TestServer::start_with(|config| config.catalog.dir = catalog_dir).await;
    let key = create_source(&server, json!({"name": "web", "unknown_types": "dead-letter"})).await;
    let cases = include_str!("golden/collector_cases.jsonl");
    let mut dead_lettered = Vec::new();
    for (number, line) in cases.lines().enumerate() {
        let case: Value = serde_json::from_str(line).unwrap();
        let name = case["name"].as_str().unwrap();
        let endpoint = case["endpoint"].as_str().unwrap();
        let expect = &case["expect"];
        let body: Vec<u8> = match case["raw_hex"].as_str() {
            Some(hex) => (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect(),
            None => {
                let mut body = case["body"].clone();
                // Unique ids: the cases are independent of each other's dedup.
                let id = json!(format!("golden-{number}"));
                match body.get_mut("batch") {
                    Some(batch) => batch[0]["messageId"] = id,
                    None => body["messageId"] = id,
                }
                serde_json::to_vec(&body).unwrap()
            }
        };
        let request =
            server.client.post(format!("{}{endpoint}", server.url)).basic_auth(&key, Some("")).body(body.clone());
        let (status, answer) = status_and_json(request.send().await.unwrap()).await;
        assert_eq!(status, expect["status"].as_u64().unwrap() as u16, "{name}: {answer}");
        if let Some(code) = expect["error"].as_str() {
            assert_eq!(answer["error"]["code"], code, "{name}: {answer}");
            continue;
        }
        let outcome = expect["outcome"].as_str().unwrap();
        let (code, violation, kept) = if endpoint == "/v1/batch" {
            if outcome == "accepted" {
                assert_eq!(answer["accepted"], 1, "{name}: {answer}");
                continue;
            }
            let error = &answer["errors"][0];
            (error["code"].clone(), error["violations"][0].clone(), error["dead_lettered"].clone())
        } else {
            if outcome == "accepted" {
                assert_eq!(answer["success"], true, "{name}: {answer}");
                continue;
            }
            let error = &answer["error"];
            (error["code"].clone(), error["detail"]["violations"][0].clone(), error["detail"]["dead_lettered"].clone())
        };
        assert_eq!(code, outcome, "{name}: {answer}");
        for field in ["pointer", "keyword"] {
            if let Some(expected) = expect.get(field) {
                assert_eq!(&violation[field], expected, "{name} ({field}): {answer}");
            }
        }
        if kept == true {
            dead_lettered.push((name.to_string(), body));
        }
    }
    // Every dead-lettered event is kept exactly as it was sent, with a reason naming the
    // schema it failed.
    let letters = read_all(&server, "dead-letters").await;
    assert_eq!(letters.len(), dead_lettered.len(), "{letters:#?}");
    for (name, sent) in &dead_lettered {
        let sent: Value = serde_json::from_slice(sent).unwrap();
        let sent = sent.get("batch").map_or(sent.clone(), |batch| batch[0].clone());
        let letter = letters.iter().find(|l| l["value"] == sent).unwrap_or_else(|| panic!("{name} not kept as sent"));
        let reason: Value = serde_json::from_str(letter["headers"]["strom-dead-letter"].as_str().unwrap()).unwrap();
        if reason["code"] == "invalid_schema" {
            assert!(reason["schema_id"].as_u64().is_some() && reason["schema_version"] == 1, "{name}: {reason}");
        }
    }
    // PII: the identify's email is stored as a keyed hash, never in clear.
    let stored = values(&read_all(&server, "events").await);
    let identify = stored.iter().find(|e| e["type"] == "identify").expect("the identify is stored");
    let email = identify["traits"]["email"].as_str().unwrap();
    assert!(email.len() == 64 && email.bytes().all(|b| b.is_ascii_hexdigit()), "{identify}");
    assert!(!stored.iter().any(|e| e.to_string().contains("a@example.com")));
    let metrics = server.metrics().await;
    assert!(metrics.contains("strom_ingest_validation_seconds"), "validation latency is measured");
}

/// Dead letters replayed after the schema is fixed: appended once, however often the replay
/// runs, across a restart too; a dry run appends nothing.
#[tokio::test]
async fn dead_letters_are_replayed_once_after_a_schema_fix() {
    let catalog = tempfile::tempdir().unwrap();
    let strict = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "x-strom": {"kind": "track", "stream": "orders"},
        "type": "object", "required": ["properties"],
        "properties": {"properties": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "integer"}}}}
    });
    std::fs::write(catalog.path().join("AddToCart.json"), strict.to_string()).unwrap();
    let catalog_dir = catalog.path().to_path_buf();
    let server = TestServer::start_with(|config| config.catalog.dir = catalog_dir.clone()).await;
    let key = create_source(&server, json!({"name": "web"})).await;
    let batch = json!({"batch": [
        {"type": "track", "userId": "u1", "event": "AddToCart", "messageId": "r1", "properties": {"sku": "A-1"}},
        {"type": "track", "userId": "u2", "event": "AddToCart", "messageId": "r2", "properties": {"sku": 7}},
    ]});
    let (status, body) = send(&server, "/v1/batch", &key, &batch).await;
    assert_eq!((status, &body["accepted"], &body["dead_lettered"]), (200, &json!(1), &json!(1)), "{body}");
    // A single call dead-lettered too: its body has no type, the reason keeps the call.
    let (status, body) = send(
        &server,
        "/v1/track",
        &key,
        &json!({"userId": "u3", "event": "AddToCart", "messageId": "r3", "properties": {"sku": "B-2"}}),
    )
    .await;
    assert_error(status, &body, 400, "invalid_schema");
    let (status, report) = replay(&server, json!({})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        (report["replayed"].as_u64(), report["still_invalid"]["invalid_schema"].as_u64()),
        (Some(0), Some(2)),
        "{report}"
    );

    // The fix: sku may be a string (BACKWARD compatible: the schema only relaxes).
    let relaxed = strict.to_string().replace(r#"{"type":"integer"}"#, r#"{"type":["integer","string"]}"#);
    assert_ne!(relaxed, strict.to_string());
    std::fs::write(catalog.path().join("AddToCart.json"), relaxed).unwrap();
    let (status, reloaded) = server.post("/v1/catalog/reload", &json!({})).await;
    assert_eq!(status, 200, "{reloaded}");
    let (_, dry) = replay(&server, json!({"dry_run": true})).await;
    assert_eq!((dry["would_replay"].as_u64(), dry["replayed"].as_u64()), (Some(2), Some(0)), "{dry}");
    let (_, report) = replay(&server, json!({"type": "AddToCart", "code": "invalid_schema"})).await;
    assert_eq!(report["replayed"], 2, "{report}");
    let (_, again) = replay(&server, json!({})).await;
    assert_eq!((again["replayed"].as_u64(), again["already_replayed"].as_u64()), (Some(0), Some(2)), "{again}");
    let server = server.restart().await;
    let (_, after_restart) = replay(&server, json!({})).await;
    assert_eq!(after_restart["replayed"], 0, "{after_restart}");
    let orders = values(&read_all(&server, "orders").await);
    let mut ids: Vec<&str> = orders.iter().map(|e| e["messageId"].as_str().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["r1", "r2", "r3"], "{orders:#?}");
    let r3 = orders.iter().find(|e| e["messageId"] == "r3").unwrap();
    assert_eq!(r3["type"], "track");
    // A replayed event keeps the time it first arrived.
    let letters = read_all(&server, "dead-letters").await;
    assert_eq!(letters.len(), 2, "replays never add dead letters");
}

async fn replay(server: &TestServer, filter: Value) -> (u16, Value) {
    let request = server.client.post(format!("{}/v1/dead-letters/replay", server.url)).json(&filter);
    status_and_json(request.send().await.unwrap()).await
}
