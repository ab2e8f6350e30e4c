//! Rules through the server: written over HTTP, fed by produced events, firing derived events
//! into a stream and signed webhooks into a real receiver.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::TestServer;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

const CART_RULE: &str = r#"
name: cart-abandoned
streams: [events]
where: event.event in ["AddToCart", "Checkout"]
pattern:
  within: 1s
  steps:
    - name: cart
      match: event.event == "AddToCart"
    - name: checkout
      match: event.event == "Checkout" && event.properties.cart_id == cart.properties.cart_id
      absent: true
emit:
  stream: derived
  event: CartAbandoned
  properties: '{"cart_id": cart.properties.cart_id}'
actions:
  - webhook: coupons
    payload: '{"user": key, "cart": event.properties.cart_id}'
"#;

type Seen = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

async fn receiver() -> (std::net::SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let store = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let store = store.clone();
            async move {
                store.lock().unwrap().push((headers, body.0));
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

async fn start(addr: std::net::SocketAddr) -> TestServer {
    let parsed = strom_server::Config::parse(&format!(
        "[webhooks]\nallow_private = [\"127.0.0.1\"]\n[[webhooks.destinations]]\nname = \"coupons\"\nurl = \"http://{addr}/hook\"\nsecret = \"{SECRET}\"\n"
    ))
    .unwrap();
    TestServer::start_with(|config| {
        config.webhooks = parsed.webhooks.clone();
        config.rules.out_of_orderness_ms = 100;
        config.rules.idle_timeout_ms = 300;
        config.rules.commit_interval_ms = 100;
    })
    .await
}

async fn put_rule(server: &TestServer, name: &str, source: &str, format: &str) -> (u16, Value) {
    let response = server
        .client
        .put(format!("{}/v1/rules/{name}?format={format}", server.url))
        .body(source.to_string())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

async fn wait_running(server: &TestServer, name: &str) {
    for _ in 0..500 {
        let (_, status) = server.get(&format!("/v1/rules/{name}")).await;
        if status["state"] == "running" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("rule {name} never ran");
}

fn now_iso() -> String {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    strom_rules::format_time_ms(ms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_cart_fires_a_derived_event_and_a_signed_webhook() {
    let (addr, seen) = receiver().await;
    let server = start(addr).await;
    server.create_stream("events", 2).await;
    let (status, body) = put_rule(&server, "cart-abandoned", CART_RULE, "yaml").await;
    assert_eq!(status, 201, "{body}");
    wait_running(&server, "cart-abandoned").await;

    let events = json!([
        {"type": "track", "event": "AddToCart", "userId": "u1", "timestamp": now_iso(), "properties": {"cart_id": "c1"}},
        {"type": "track", "event": "AddToCart", "userId": "u2", "timestamp": now_iso(), "properties": {"cart_id": "c2"}},
        {"type": "track", "event": "Checkout", "userId": "u2", "timestamp": now_iso(), "properties": {"cart_id": "c2"}},
    ]);
    let (status, body) = server.post("/v1/streams/events/events", &events).await;
    assert_eq!(status, 200, "{body}");

    // The timeout fires with no further events: idle partitions follow the wall clock.
    let mut derived = json!(null);
    for _ in 0..1000 {
        let (status, body) = server.get("/v1/streams/derived/partitions/0/events?offset=0").await;
        if status == 200 && !body["events"].as_array().unwrap().is_empty() {
            derived = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let derived = derived["events"].as_array().expect("a derived event");
    assert_eq!(derived.len(), 1, "{derived:?}");
    let event = &derived[0]["value"];
    assert_eq!(event["event"], "CartAbandoned");
    assert_eq!(event["userId"], "u1");
    assert_eq!(event["properties"]["cart_id"], "c1");
    assert_eq!(event["context"]["rule"]["name"], "cart-abandoned");

    for _ in 0..1000 {
        if !seen.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (headers, body) = &seen[0];
    assert_eq!(body, &json!({"user": "u1", "cart": "c1"}));
    let key: strom_webhooks::SigningKey = SECRET.parse().unwrap();
    let timestamp: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
    let signed = serde_json::to_vec(body).unwrap();
    assert!(key.verify(
        headers["webhook-id"].to_str().unwrap(),
        timestamp,
        &signed,
        headers["webhook-signature"].to_str().unwrap()
    ));

    // The rule's status and metrics say what happened.
    let (_, status) = server.get("/v1/rules/cart-abandoned").await;
    assert_eq!(status["counters"]["emits"], 1, "{status}");
    let metrics = server.client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("strom_rules_"), "no rule metrics");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_refused_with_their_place_listed_paused_backtested_and_deleted() {
    let (addr, _) = receiver().await;
    let server = start(addr).await;
    server.create_stream("events", 1).await;

    // A CEL error: refused with line, column and field; nothing is written.
    let broken = CART_RULE.replace(
        "event.properties.cart_id == cart.properties.cart_id",
        "event.properties.cart_id == crat.properties.cart_id",
    );
    let (status, body) = put_rule(&server, "cart-abandoned", &broken, "yaml").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_rule");
    assert_eq!(body["error"]["detail"]["field"], "pattern.steps[1].match", "{body}");
    assert!(body["error"]["detail"]["line"].as_u64().unwrap() > 0, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("crat"), "{body}");
    // An unknown destination, in TOML.
    let toml = "name = \"t\"\nstreams = [\"events\"]\nfilter = \"true\"\n[emit]\nstream = \"x\"\n[[actions]]\nwebhook = \"crm\"\n";
    let (status, body) = put_rule(&server, "t", toml, "toml").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["detail"]["field"], "actions[0].webhook", "{body}");
    let (_, list) = server.get("/v1/rules").await;
    assert_eq!(list["rules"], json!([]));

    // A rule, events, and a backtest that reports without appending.
    let (status, _) = put_rule(&server, "cart-abandoned", CART_RULE, "yaml").await;
    assert_eq!(status, 201);
    let old = "2026-01-01T00:00:00.000Z";
    let later = "2026-01-01T00:00:05.000Z";
    let events = json!([
        {"type": "track", "event": "AddToCart", "userId": "u9", "timestamp": old, "properties": {"cart_id": "c9"}},
        {"type": "track", "event": "AddToCart", "userId": "u8", "timestamp": later, "properties": {"cart_id": "c8"}},
    ]);
    let (status, _) = server.post("/v1/streams/events/events", &events).await;
    assert_eq!(status, 200);
    let (status, report) =
        server.post("/v1/rules/backtest", &json!({"rule": "cart-abandoned", "from_offset": 0})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["events_read"], 2, "{report}");
    let abandoned: Vec<&Value> =
        report["outputs"].as_array().unwrap().iter().filter(|o| o["kind"] == "derived").collect();
    assert_eq!(abandoned.len(), 2, "{report}");
    // A new version, over the same range: with 10 s, neither cart has timed out by the last
    // event, and without `flush` nothing is finalised.
    let source = CART_RULE.replace("within: 1s", "within: 10s");
    let (status, report) =
        server.post("/v1/rules/backtest", &json!({"source": source, "from_offset": 0, "flush": false})).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["outputs_total"], 0, "{report}");
    assert_eq!(report["open_entries"], 2, "{report}");

    let (status, paused) = server.post("/v1/rules/cart-abandoned/pause", &json!({})).await;
    assert_eq!((status, &paused["paused"]), (200, &json!(true)), "{paused}");
    let (status, resumed) = server.post("/v1/rules/cart-abandoned/resume", &json!({})).await;
    assert_eq!((status, &resumed["paused"]), (200, &json!(false)));
    let deleted = server.client.delete(format!("{}/v1/rules/cart-abandoned", server.url)).send().await.unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, body) = server.get("/v1/rules/cart-abandoned").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("rule_not_found")));
    assert!(!server.dir.path().join("rules/cart-abandoned.yaml").exists());
    server.stop().await;
}
