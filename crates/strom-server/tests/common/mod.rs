#![allow(dead_code)]
//! `TestServer`: the real server on an ephemeral port with a temporary data directory,
//! reached only through HTTP.

use std::path::PathBuf;

use serde_json::Value;
use strom_server::Config;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub struct TestServer {
    pub url: String,
    pub addr: std::net::SocketAddr,
    /// The Kafka listener, also on an ephemeral port.
    pub kafka_addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), strom_server::ServerError>>>,
}

impl TestServer {
    pub async fn start() -> TestServer {
        TestServer::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::start_in(tempfile::tempdir().unwrap(), adjust).await
    }

    pub async fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config { data_dir: PathBuf::from(dir.path()), ..Config::default() };
        // Not the crate's directory (the working directory of tests).
        config.rules.dir = dir.path().join("rules");
        adjust(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let kafka = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let kafka_addr = kafka.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(strom_server::run_with_kafka(config, listener, Some(kafka), async move {
            let _ = stopped.await;
        }));
        let url = format!("http://{addr}");
        let client = reqwest::Client::new();
        // The listener is bound before `run`, so requests queue until the log is open.
        for _ in 0..500 {
            if client.get(format!("{url}/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            if task.is_finished() {
                panic!("the server stopped at start: {:?}", task.await);
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        TestServer { url, addr, kafka_addr, client, dir, stop: Some(stop), task: Some(task) }
    }

    /// Graceful shutdown; gives back the data directory for a restart.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.stop.take().unwrap().send(()).unwrap();
        self.task.take().unwrap().await.unwrap().expect("clean shutdown");
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    pub async fn restart(self) -> TestServer {
        let dir = self.stop().await;
        TestServer::start_in(dir, |_| {}).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(format!("{}{path}", self.url)).send().await.unwrap();
        status_and_json(response).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, serde_json::to_vec(body).unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let response = self.client.post(format!("{}{path}", self.url)).body(body).send().await.unwrap();
        status_and_json(response).await
    }

    pub async fn delete(&self, path: &str) -> u16 {
        self.client.delete(format!("{}{path}", self.url)).send().await.unwrap().status().as_u16()
    }

    pub async fn create_stream(&self, name: &str, partitions: u32) {
        let (status, body) =
            self.post("/v1/streams", &serde_json::json!({"name": name, "partitions": partitions})).await;
        assert_eq!(status, 201, "{body}");
    }

    pub async fn metrics(&self) -> String {
        self.client.get(format!("{}/metrics", self.url)).send().await.unwrap().text().await.unwrap()
    }
}

pub async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, value)
}

/// Asserts the API's error shape and code.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}
