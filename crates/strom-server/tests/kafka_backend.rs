//! `[log] backend = "kafka"`: a whole Strom server whose log is a Kafka cluster. The cluster
//! here is a second Strom server's Kafka listener (its embedded log), so every record the
//! first writes must be readable, as the same records, from the second.

mod common;

use common::{TestServer, status_and_json};
use serde_json::{Value, json};
use strom_server::config::LogBackend;

async fn on_kafka(broker: &TestServer, dir: Option<tempfile::TempDir>) -> TestServer {
    on_kafka_with(broker, dir, "shop.", |_| {}).await
}

/// A server on `broker`'s cluster with topics under `prefix`, and `more` of its config.
async fn on_kafka_with(
    broker: &TestServer,
    dir: Option<tempfile::TempDir>,
    prefix: &str,
    more: impl FnOnce(&mut strom_server::Config),
) -> TestServer {
    let (bootstrap, prefix) = (broker.kafka_addr.to_string(), prefix.to_string());
    let adjust = move |config: &mut strom_server::Config| {
        config.log.backend = LogBackend::Kafka;
        config.log.kafka.bootstrap_servers = bootstrap;
        config.log.kafka.topic_prefix = prefix;
        config.log.kafka.linger_ms = 1;
        more(config);
    };
    match dir {
        Some(dir) => TestServer::start_in(dir, adjust).await,
        None => TestServer::start_with(adjust).await,
    }
}

/// A `/v1/track` call with a source's write key, as the Segment SDKs send it.
async fn send_track(server: &TestServer, key: &str, event: &Value) -> (u16, Value) {
    let url = format!("{}/v1/track", server.url);
    let response = server.client.post(url).basic_auth(key, Some("")).json(event).send().await.unwrap();
    status_and_json(response).await
}

/// Polls `path` until `ready` says so (bounded: 10 s).
async fn wait_until(server: &TestServer, path: &str, ready: impl Fn(&Value) -> bool) {
    for _ in 0..1000 {
        let (status, body) = server.get(path).await;
        if status == 200 && ready(&body) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{path} never became ready");
}

/// Every record of partition 0, once there are at least `count` (bounded: 10 s).
async fn wait_for_events(server: &TestServer, stream: &str, count: usize) -> Vec<Value> {
    for _ in 0..1000 {
        let read = events(server, stream, 0, 0).await;
        if read.len() >= count {
            return read;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{stream} never held {count} records");
}

async fn events(server: &TestServer, stream: &str, partition: u32, from: u64) -> Vec<Value> {
    let path = format!("/v1/streams/{stream}/partitions/{partition}/events?offset={from}&max_records=1000");
    let (status, read) = server.get(&path).await;
    assert_eq!(status, 200, "{read}");
    read["events"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_the_kafka_backend_keeps_its_streams_groups_and_tracking_on_the_cluster() {
    let _ = tracing_subscriber::fmt().with_env_filter("info,librdkafka=warn").with_test_writer().try_init();
    let broker = TestServer::start().await;
    let server = on_kafka(&broker, None).await;

    // Streams are topics with the prefix.
    let (status, body) = server.post("/v1/streams", &json!({"name": "orders", "partitions": 2})).await;
    assert_eq!(status, 201, "{body}");
    let (status, described) = broker.get("/v1/streams/shop.orders").await;
    assert_eq!(status, 200, "{described}");
    assert_eq!(described["partitions"].as_array().unwrap().len(), 2);

    // A rule reads from the cluster and writes its derived events there.
    let rule = "name: big-orders\nstreams: [orders]\nkey: none\nfilter: event.n >= 8\nemit:\n  stream: derived\n  event: BigOrder\n  properties: '{\"n\": event.n}'\n";
    let response = server.client.put(format!("{}/v1/rules/big-orders", server.url)).body(rule).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 201, "{:?}", response.text().await);
    wait_until(&server, "/v1/rules/big-orders", |status| status["state"] == "running").await;

    // Produce answers where each event went; the cluster holds the same events.
    let batch: Vec<Value> = (0..10).map(|i| json!({"userId": format!("u{}", i % 3), "n": i})).collect();
    let (status, produced) = server.post("/v1/streams/orders/events", &json!(batch)).await;
    assert_eq!(status, 200, "{produced}");
    let results = produced["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    let mut seen = 0;
    for partition in 0..2 {
        let ours = events(&server, "orders", partition, 0).await;
        let theirs = events(&broker, "shop.orders", partition, 0).await;
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!((&a["offset"], &a["value"], &a["key"]), (&b["offset"], &b["value"], &b["key"]));
        }
        seen += ours.len();
    }
    assert_eq!(seen, 10);
    let metrics = server.metrics().await;
    let appended: f64 = metrics
        .lines()
        .filter(|line| line.starts_with("strom_log_appended_records_total{") && line.contains("stream=\"orders\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(appended, 10.0, "the backend's append counter: {metrics}");

    // The rule's two derived events, on the cluster.
    wait_until(&broker, "/v1/streams/shop.derived", |_| true).await;
    let derived = wait_for_events(&broker, "shop.derived", 2).await;
    let mut numbers: Vec<i64> = derived.iter().map(|e| e["value"]["properties"]["n"].as_i64().unwrap_or(-1)).collect();
    numbers.sort();
    assert_eq!(numbers, vec![8, 9], "{derived:?}");

    // A consumer group reads, commits, and finds its offsets again after a restart.
    let (status, first) = server.get("/v1/groups/mailer/streams/orders/events?max_records=1000").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["events"].as_array().unwrap().len(), 10, "{first}");
    let offsets: Vec<Value> = (0..2)
        .map(|p| {
            let last = first["events"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|e| e["partition"] == p)
                .map(|e| e["offset"].as_u64().unwrap())
                .max();
            json!({"partition": p, "offset": last.map_or(0, |o| o + 1)})
        })
        .collect();
    let (status, body) =
        server.post("/v1/groups/mailer/offsets", &json!({"stream": "orders", "offsets": offsets})).await;
    assert_eq!(status, 200, "{body}");

    // The tracking API: a retry with the same messageId is stored once.
    let (status, created) = server.post("/v1/sources", &json!({"name": "web"})).await;
    assert_eq!(status, 201, "{created}");
    let key = created["write_key"].as_str().unwrap().to_string();
    let track = json!({"userId": "u1", "event": "Signed Up", "messageId": "m-kafka-1", "properties": {"plan": "pro"}});
    for expected_duplicate in [false, true] {
        let (status, body) = send_track(&server, &key, &track).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.get("duplicate").is_some(), expected_duplicate, "{body}");
    }
    let stored = events(&broker, "shop.events", 0, 0).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["value"]["messageId"], "m-kafka-1");
    assert_eq!(stored[0]["value"]["event"], "Signed Up");

    // Restart: the group's offsets are the cluster's, dedup still knows the message.
    let dir = server.stop().await;
    let server = on_kafka(&broker, Some(dir)).await;
    let (status, described) = server.get("/v1/streams/orders").await;
    assert_eq!(status, 200, "{described}");
    let (status, again) = server.get("/v1/groups/mailer/streams/orders/events?max_records=1000").await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["events"].as_array().unwrap().len(), 0, "committed offsets respected: {again}");
    let (status, body) = send_track(&server, &key, &track).await;
    assert_eq!((status, body.get("duplicate").cloned()), (200, Some(json!(true))), "{body}");
    assert_eq!(events(&broker, "shop.events", 0, 0).await.len(), 1);

    // The restarted rule goes on from its committed offsets: nothing is derived twice.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(events(&broker, "shop.derived", 0, 0).await.len(), 2);

    // Deleting the stream deletes the topic.
    assert_eq!(server.delete("/v1/streams/orders").await, 204);
    assert_eq!(broker.get("/v1/streams/shop.orders").await.0, 404);
    server.stop().await;
    broker.stop().await;
}

/// The lake on the Kafka backend: the sink reads the cluster's partitions, commits its group
/// there, and lands each record once, across a restart of the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lake_lands_a_stream_of_the_cluster_once_across_a_restart() {
    let _ = tracing_subscriber::fmt().with_env_filter("info,librdkafka=warn").with_test_writer().try_init();
    let broker = TestServer::start().await;
    let lake_dir = tempfile::tempdir().unwrap();
    let lake_url = lake_dir.path().display().to_string();
    let lake_on = |lake_url: String| {
        move |config: &mut strom_server::Config| {
            config.lake.enabled = true;
            config.lake.url = lake_url;
            config.lake.roll_age_ms = 50;
        }
    };
    let order = |n: u64| json!({"type": "track", "event": "Ordered", "messageId": format!("o{n}"), "timestamp": "2026-11-22T08:30:00.000Z", "properties": {"n": n}});
    let server = on_kafka_with(&broker, None, "lake.", lake_on(lake_url.clone())).await;
    let (status, body) = server.post("/v1/streams", &json!({"name": "events", "partitions": 2})).await;
    assert!(status == 201 || status == 409, "{status} {body}");
    let first: Vec<Value> = (0..6).map(order).collect();
    let (status, body) = server.post("/v1/streams/events/events", &json!(first)).await;
    assert_eq!(status, 200, "{body}");
    let landed = lake_rows(&server, 6).await;
    assert_eq!(landed.len(), 6, "{landed:?}");

    // A restart: the sink resumes from the group's offsets on the cluster.
    let dir = server.stop().await;
    let server = on_kafka_with(&broker, Some(dir), "lake.", lake_on(lake_url)).await;
    let second: Vec<Value> = (6..9).map(order).collect();
    let (status, body) = server.post("/v1/streams/events/events", &json!(second)).await;
    assert_eq!(status, 200, "{body}");
    lake_rows(&server, 9).await;
    // Give a duplicate the time to show up, then check every record landed once.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let landed = lake_rows(&server, 0).await;
    let ids: Vec<&str> = landed.iter().map(|r| r["message_id"].as_str().unwrap_or("")).collect();
    let (_, groups) = server.get("/v1/groups/strom-lake/offsets").await;
    let metrics = server.metrics().await;
    let lake_metrics: Vec<&str> = metrics.lines().filter(|l| l.starts_with("strom_lake")).collect();
    assert_eq!(ids, (0..9).map(|n| format!("o{n}")).collect::<Vec<_>>(), "{landed:?}\n{groups}\n{lake_metrics:#?}");
    // Each row's log position is the record's on the cluster.
    for row in &landed {
        let (partition, offset) = (row["log_partition"].as_u64().unwrap(), row["log_offset"].as_u64().unwrap());
        let stored = events(&broker, "lake.events", partition as u32, offset).await;
        assert_eq!(stored[0]["value"]["messageId"], row["message_id"], "{row}");
    }
    server.stop().await;
    broker.stop().await;
}

/// The lake's rows of `events` (message id and log position), once there are at least
/// `count` (bounded: 10 s; a query refused because nothing has landed yet counts as none).
async fn lake_rows(server: &TestServer, count: usize) -> Vec<Value> {
    let sql = "SELECT message_id, log_partition, log_offset FROM events ORDER BY message_id";
    let mut rows = Vec::new();
    for _ in 0..500 {
        let (status, answer) = server.post("/v1/query", &json!({"sql": sql})).await;
        rows = if status == 200 { answer["rows"].as_array().cloned().unwrap_or_default() } else { Vec::new() };
        if rows.len() >= count {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    rows
}

/// Two servers on one cluster divide the webhook destinations (through the deliveries
/// stream's partitions, in the shared group `strom-webhooks`): each request is delivered once,
/// by the server that owns its destination's partition. When one server stops, the other
/// takes its destinations over from where they were committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_the_cluster_divide_the_webhook_destinations_and_hand_them_over() {
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(String, String, String)>>>;
    // The receiver notes (destination, webhook-id, the server that sent it).
    // A destination named in `gone` is answered 410 (and not noted).
    let seen: Seen = Arc::default();
    let gone: Arc<Mutex<Option<String>>> = Arc::default();
    let (noted, refusing) = (seen.clone(), gone.clone());
    let app = axum::Router::new().route(
        "/hook/{destination}",
        axum::routing::post(
            move |axum::extract::Path(destination): axum::extract::Path<String>, headers: axum::http::HeaderMap| {
                let (noted, refusing) = (noted.clone(), refusing.clone());
                async move {
                    if refusing.lock().unwrap().as_deref() == Some(destination.as_str()) {
                        return axum::http::StatusCode::GONE;
                    }
                    let header = |name: &str| headers[name].to_str().unwrap().to_string();
                    noted.lock().unwrap().push((destination, header("webhook-id"), header("x-strom-server")));
                    axum::http::StatusCode::NO_CONTENT
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // One destination in each of the deliveries stream's 4 partitions.
    let mut names: Vec<Option<String>> = vec![None; 4];
    for i in 0.. {
        let name = format!("d{i}");
        let slot = &mut names[strom_log::partitioner::partition_for_key(name.as_bytes(), 4) as usize];
        slot.get_or_insert(name);
        if names.iter().all(Option::is_some) {
            break;
        }
    }
    let names: Vec<String> = names.into_iter().flatten().collect();
    let webhooks = |server: &str| {
        let mut toml = "[webhooks]\nallow_private = [\"127.0.0.1\"]\n".to_string();
        for name in &names {
            toml.push_str(&format!(
                "[[webhooks.destinations]]\nname = \"{name}\"\nurl = \"http://{receiver}/hook/{name}\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nretry_initial_ms = 20\nheaders = {{ x-strom-server = \"{server}\" }}\n"
            ));
        }
        strom_server::Config::parse(&toml).unwrap().webhooks
    };
    let broker = TestServer::start_with(|_| {}).await;
    let (for_a, for_b) = (webhooks("a"), webhooks("b"));
    let a = on_kafka_with(&broker, None, "hooks.", move |c| c.webhooks = for_a).await;
    let b = on_kafka_with(&broker, None, "hooks.", move |c| c.webhooks = for_b).await;

    // Which destinations each server delivers for, once the group has settled on both.
    let delivering = |server: &TestServer| {
        let (client, url) = (server.client.clone(), format!("{}/v1/webhooks/destinations", server.url));
        async move {
            let list: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            let mut here: Vec<String> = list["destinations"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["delivering_here"] == true)
                .map(|d| d["name"].as_str().unwrap().to_string())
                .collect();
            here.sort();
            here
        }
    };
    let mut split = (Vec::new(), Vec::new());
    for _ in 0..1500 {
        split = (delivering(&a).await, delivering(&b).await);
        let mut union: Vec<String> = split.0.iter().chain(&split.1).cloned().collect();
        union.sort();
        if !split.0.is_empty() && !split.1.is_empty() && union == names {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (on_a, on_b) = split.clone();
    assert!(!on_a.is_empty() && !on_b.is_empty(), "both servers deliver: {split:?}");
    assert_eq!(on_a.len() + on_b.len(), names.len(), "no destination on both: {split:?}");

    let enqueue = |round: &str| {
        let requests: Vec<(String, String)> =
            names.iter().flat_map(|name| (0..5).map(move |i| (name.clone(), format!("{name}-{round}-{i}")))).collect();
        let (client, url) = (b.client.clone(), b.url.clone());
        async move {
            for (name, id) in requests {
                let request = json!({"id": id, "destination": name, "payload": {"n": id}});
                let url = format!("{url}/v1/streams/strom.deliveries/events?key={name}");
                let response = client.post(url).json(&request).send().await.unwrap();
                assert_eq!(response.status(), 200);
            }
        }
    };
    let wait_for = |count: usize| {
        let seen = seen.clone();
        async move {
            for _ in 0..1000 {
                if seen.lock().unwrap().len() >= count {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            seen.lock().unwrap().clone()
        }
    };
    enqueue("one").await;
    let delivered = wait_for(20).await;
    assert_eq!(delivered.len(), 20, "each request once: {delivered:?}");
    for (destination, id, server) in &delivered {
        let owner = if on_a.contains(destination) { "a" } else { "b" };
        assert_eq!(server, owner, "{id} was sent by the server that owns {destination}");
    }

    // A 410 seen by the owner (A) disables the destination on every server; enabling it on
    // B, which does not deliver for it, resumes A.
    let refused = on_a[0].clone();
    *gone.lock().unwrap() = Some(refused.clone());
    let state_on = |server: &TestServer| {
        let (client, url) = (server.client.clone(), format!("{}/v1/webhooks/destinations/{refused}", server.url));
        async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap()["state"].clone() }
    };
    let request = json!({"id": "after-410", "destination": refused, "payload": {}});
    let url = format!("{}/v1/streams/strom.deliveries/events?key={refused}", b.url);
    assert_eq!(b.client.post(url).json(&request).send().await.unwrap().status(), 200);
    for _ in 0..1000 {
        if state_on(&a).await == "disabled" && state_on(&b).await == "disabled" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!((state_on(&a).await, state_on(&b).await), (json!("disabled"), json!("disabled")));
    *gone.lock().unwrap() = None;
    let enable = format!("{}/v1/webhooks/destinations/{refused}/enable", b.url);
    assert_eq!(b.client.post(enable).send().await.unwrap().status(), 200);
    let delivered = wait_for(21).await;
    assert_eq!(delivered.len(), 21, "{delivered:?}");
    assert_eq!(delivered[20], (refused.clone(), "after-410".to_string(), "a".to_string()));
    assert_eq!(state_on(&a).await, "active");

    // A stops: B takes every destination over, from where A committed.
    a.stop().await;
    let mut all = Vec::new();
    for _ in 0..1500 {
        all = delivering(&b).await;
        if all == names {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(all, names, "b delivers for every destination after a left");
    enqueue("two").await;
    let delivered = wait_for(41).await;
    let mut ids: Vec<&str> = delivered.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!((delivered.len(), ids.len()), (41, 41), "each request once across the hand-over: {delivered:?}");
    assert!(delivered[21..].iter().all(|(_, _, server)| server == "b"), "{delivered:?}");
    b.stop().await;
    broker.stop().await;
}

/// Two servers on one cluster land one stream into one lake, dividing its partitions (the
/// shared group `strom-lake.events`); when one stops, the other lands its partitions on from
/// where it committed. Every record is in the lake exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_divide_the_lake_sink_and_hand_partitions_over() {
    let broker = TestServer::start().await;
    let lake_dir = tempfile::tempdir().unwrap();
    let lake_on = |lake_url: String| {
        move |config: &mut strom_server::Config| {
            config.lake.enabled = true;
            config.lake.url = lake_url;
            config.lake.roll_age_ms = 50;
        }
    };
    let url = lake_dir.path().display().to_string();
    let a = on_kafka_with(&broker, None, "shared.", lake_on(url.clone())).await;
    let (status, body) = a.post("/v1/streams", &json!({"name": "events", "partitions": 4})).await;
    assert!(status == 201 || status == 409, "{status} {body}");
    let b = on_kafka_with(&broker, None, "shared.", lake_on(url)).await;

    let landing = |server: &TestServer| {
        let (client, url) = (server.client.clone(), format!("{}/v1/lake/status", server.url));
        async move {
            let status: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            let mut partitions: Vec<u64> =
                status["landing"].as_array().unwrap().iter().map(|p| p["partition"].as_u64().unwrap()).collect();
            partitions.sort();
            partitions
        }
    };
    // A joined first and took all four partitions; B's joining splits them.
    let mut split = (Vec::new(), Vec::new());
    for _ in 0..1500 {
        split = (landing(&a).await, landing(&b).await);
        let mut union: Vec<u64> = split.0.iter().chain(&split.1).copied().collect();
        union.sort();
        if !split.0.is_empty() && !split.1.is_empty() && union == [0, 1, 2, 3] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!split.0.is_empty() && !split.1.is_empty(), "both servers land: {split:?}");
    assert_eq!(split.0.len() + split.1.len(), 4, "no partition landed twice: {split:?}");

    let order = |n: u64| json!({"type": "track", "event": "Ordered", "messageId": format!("o{n:03}"), "timestamp": "2026-11-22T08:30:00.000Z", "properties": {"n": n}});
    let produce = |server: &TestServer, numbers: std::ops::Range<u64>| {
        let (client, url) = (server.client.clone(), server.url.clone());
        async move {
            for n in numbers {
                let response = client
                    .post(format!("{url}/v1/streams/events/events?key=customer-{n}"))
                    .json(&order(n))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
            }
        }
    };
    produce(&b, 0..40).await;
    let landed = lake_rows(&b, 40).await;
    assert_eq!(landed.len(), 40, "{landed:?}");
    let mut partitions: Vec<u64> = landed.iter().map(|r| r["log_partition"].as_u64().unwrap()).collect();
    partitions.sort();
    partitions.dedup();
    assert_eq!(partitions, [0, 1, 2, 3], "the keys spread over every partition");

    // A stops: B lands all four partitions, each from where it was committed.
    a.stop().await;
    let mut all = Vec::new();
    for _ in 0..1500 {
        all = landing(&b).await;
        if all == [0, 1, 2, 3] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(all, [0, 1, 2, 3], "b lands every partition after a left");
    produce(&b, 40..60).await;
    lake_rows(&b, 60).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let landed = lake_rows(&b, 0).await;
    let ids: Vec<&str> = landed.iter().map(|r| r["message_id"].as_str().unwrap_or("")).collect();
    assert_eq!(ids, (0..60).map(|n| format!("o{n:03}")).collect::<Vec<_>>(), "each record once: {landed:?}");
    for row in &landed {
        let (partition, offset) = (row["log_partition"].as_u64().unwrap(), row["log_offset"].as_u64().unwrap());
        let stored = events(&broker, "shared.events", partition as u32, offset).await;
        assert_eq!(stored[0]["value"]["messageId"], row["message_id"], "{row}");
    }
    b.stop().await;
    broker.stop().await;
}

/// Rules divided among servers: a partitioned window rule runs as one task per partition,
/// the two servers split the tasks, and when one stops the other takes its tasks over with
/// their state (restored from the rule's changelog on the cluster), so every window is
/// emitted once, counting the events seen before and after the hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_divide_a_rule_and_hand_its_state_over() {
    let _ = tracing_subscriber::fmt().with_env_filter("info,librdkafka=warn").with_test_writer().try_init();
    let broker = TestServer::start().await;
    let quick = |config: &mut strom_server::Config| {
        config.rules.out_of_orderness_ms = 0;
        config.rules.idle_timeout_ms = 300;
        config.rules.commit_interval_ms = 100;
    };
    let a = on_kafka_with(&broker, None, "ruled.", quick).await;
    let (status, body) = a.post("/v1/streams", &json!({"name": "clicks", "partitions": 4})).await;
    assert_eq!(status, 201, "{body}");
    let b = on_kafka_with(&broker, None, "ruled.", quick).await;
    let rule = "name: clicks-per-user\nstreams: [clicks]\npartitioned: true\nwindow:\n  type: tumbling\n  size: 1h\n  aggregates:\n    clicks: count()\nemit:\n  stream: counts\n  event: ClicksPerHour\n";
    for server in [&a, &b] {
        let url = format!("{}/v1/rules/clicks-per-user", server.url);
        let response = server.client.put(url).body(rule).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 201, "{:?}", response.text().await);
    }
    let rule_status = |server: &TestServer| {
        let (client, url) = (server.client.clone(), format!("{}/v1/rules/clicks-per-user", server.url));
        async move { client.get(url).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let here = |status: &Value| -> Vec<u64> {
        status["tasks_here"].as_array().map(|t| t.iter().filter_map(Value::as_u64).collect()).unwrap_or_default()
    };
    let mut split = (Vec::new(), Vec::new());
    let mut statuses = (Value::Null, Value::Null);
    for _ in 0..1500 {
        let (sa, sb) = (rule_status(&a).await, rule_status(&b).await);
        statuses = (sa.clone(), sb.clone());
        split = (here(&sa), here(&sb));
        let mut union: Vec<u64> = split.0.iter().chain(&split.1).copied().collect();
        union.sort();
        if !split.0.is_empty() && !split.1.is_empty() && union == [0, 1, 2, 3] && sa["tasks"] == 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!split.0.is_empty() && !split.1.is_empty(), "both servers run tasks: {split:?} {statuses:?}");
    assert_eq!(split.0.len() + split.1.len(), 4, "no task runs twice: {split:?}");

    // Event times in an hour a day ahead: the window closes only when an event of a later
    // hour says so, not by the wall clock.
    let hour = 3_600_000i64;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let start = (now / hour + 24) * hour;
    let users: Vec<String> = (0..8).map(|u| format!("u{u}")).collect();
    let produce = |server: &TestServer, user: &str, times: Vec<i64>| {
        let (client, url) = (server.client.clone(), format!("{}/v1/streams/clicks/events?key={user}", server.url));
        let batch: Vec<Value> = times
            .iter()
            .map(|t| json!({"type": "track", "event": "Clicked", "userId": user, "timestamp": strom_rules::format_time_ms(*t)}))
            .collect();
        async move {
            let response = client.post(url).json(&batch).send().await.unwrap();
            assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
        }
    };
    let events_in = |status: &Value| status["counters"]["events_in"].as_u64().unwrap_or(0);
    for user in &users {
        produce(&b, user, vec![start + 60_000, start + 120_000, start + 180_000]).await;
    }
    let mut seen = 0;
    for _ in 0..1500 {
        seen = events_in(&rule_status(&a).await) + events_in(&rule_status(&b).await);
        if seen == 24 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(seen, 24, "both servers processed the first events");

    // A stops (its tasks commit first); B takes them over with their state.
    a.stop().await;
    let mut all = Vec::new();
    for _ in 0..1500 {
        all = here(&rule_status(&b).await);
        if all == [0, 1, 2, 3] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(all, [0, 1, 2, 3], "b runs every task after a left");
    for user in &users {
        produce(&b, user, vec![start + 600_000, start + 700_000]).await;
    }
    // An event of two hours later closes each user's first window.
    for user in &users {
        produce(&b, user, vec![start + 2 * hour]).await;
    }
    for _ in 0..1500 {
        if events(&broker, "ruled.counts", 0, 0).await.len() >= 8 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let counts = events(&broker, "ruled.counts", 0, 0).await;
    let mut per_user: Vec<(String, i64)> = counts
        .iter()
        .map(|e| {
            let value = &e["value"];
            (value["userId"].as_str().unwrap_or("?").to_string(), value["properties"]["clicks"].as_i64().unwrap_or(-1))
        })
        .collect();
    per_user.sort();
    let expected: Vec<(String, i64)> = users.iter().map(|u| (u.clone(), 5)).collect();
    assert_eq!(
        per_user, expected,
        "one window per user, counting the events before and after the hand-over: {counts:?}"
    );
    // The state is in the rule's changelog on the cluster, one partition per task.
    let (status, changelog) = broker.get("/v1/streams/ruled.strom.rules.clicks-per-user.changelog").await;
    assert_eq!(status, 200, "{changelog}");
    assert_eq!(changelog["partitions"].as_array().unwrap().len(), 4);
    b.stop().await;
    broker.stop().await;
}
