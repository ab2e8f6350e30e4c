//! The server's webhook delivery, reached through HTTP only: a request queued on the
//! deliveries stream arrives at a real receiver, and the destinations API shows and resumes it.

mod common;

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use common::TestServer;
use serde_json::{Value, json};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

async fn receiver(answer: Arc<Mutex<u16>>) -> (std::net::SocketAddr, Arc<Mutex<Vec<(HeaderMap, Value)>>>) {
    let received: Arc<Mutex<Vec<(HeaderMap, Value)>>> = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
            let (seen, answer) = (seen.clone(), answer.clone());
            async move {
                seen.lock().unwrap().push((headers, body.0));
                StatusCode::from_u16(*answer.lock().unwrap()).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_are_delivered_and_a_410_is_shown_and_resumed() {
    let answer = Arc::new(Mutex::new(410));
    let (addr, received) = receiver(answer.clone()).await;
    let config = format!(
        r#"
[webhooks]
allow_private = ["127.0.0.1"]
[[webhooks.destinations]]
name = "coupons"
url = "http://{addr}/hook"
secret = "{SECRET}"
retry_initial_ms = 20
"#
    );
    let parsed = strom_server::Config::parse(&config).unwrap();
    let server = TestServer::start_with(|c| c.webhooks = parsed.webhooks.clone()).await;
    let request = json!({"id": "cart-1", "destination": "coupons", "payload": {"coupon": "SAVE10"}});
    let response = server
        .client
        .post(format!("{}/v1/streams/strom.deliveries/events?key=coupons", server.url))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());

    let destination = |server: &TestServer| {
        let (client, url) = (server.client.clone(), format!("{}/v1/webhooks/destinations/coupons", server.url));
        async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let mut status = json!({});
    for _ in 0..500 {
        status = destination(&server).await;
        if status["state"] == "disabled" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(status["state"], "disabled", "{status}");
    assert_eq!(status["url"], format!("http://{addr}/hook"));

    *answer.lock().unwrap() = 200;
    let enabled =
        server.client.post(format!("{}/v1/webhooks/destinations/coupons/enable", server.url)).send().await.unwrap();
    assert_eq!(enabled.status(), 200);
    for _ in 0..500 {
        if destination(&server).await["delivered"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let seen = received.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "the 410 attempt and the one after enable");
    assert!(seen.iter().all(|(headers, body)| headers["webhook-id"] == "cart-1" && body["coupon"] == "SAVE10"));

    let list: Value = server
        .client
        .get(format!("{}/v1/webhooks/destinations", server.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["destinations"][0]["delivered"], 1);
    let missing =
        server.client.post(format!("{}/v1/webhooks/destinations/nope/enable", server.url)).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["error"]["code"], "destination_not_found");
    let metrics = server.client.get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("strom_webhooks_delivered_total{destination=\"coupons\"} 1"), "{metrics}");
    server.stop().await;
}

#[test]
fn a_loopback_destination_is_refused_without_an_allow_list() {
    let error = strom_server::Config::parse(&format!(
        "[[webhooks.destinations]]\nname = \"x\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"{SECRET}\"\n"
    ))
    .unwrap_err();
    assert!(error.contains("webhooks.destinations \"x\": url: 127.0.0.1 is a loopback address"), "{error}");
}
