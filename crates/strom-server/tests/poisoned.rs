//! A failed write poisons the partition: the append is answered 503 (nothing acknowledged),
//! later appends too, readiness fails, the metric says so; other partitions go on; a restart
//! on a healthy disk recovers. The failure is the kernel's own: the active segment is
//! replaced by a link to /dev/full, whose writes fail with ENOSPC.
mod common;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_poisons_the_partition_and_acknowledges_nothing() {
    if !std::path::Path::new("/dev/full").exists() {
        assert!(std::env::var("CI").is_err(), "/dev/full is needed in CI");
        eprintln!("skipped: no /dev/full on this machine");
        return;
    }
    let server = TestServer::start().await;
    server.create_stream("s", 2).await;
    let dir = server.stop().await;
    let segment = dir.path().join("streams/s/0/00000000000000000000.log");
    std::fs::remove_file(&segment).unwrap();
    std::os::unix::fs::symlink("/dev/full", &segment).unwrap();
    let server = TestServer::start_in(dir, |_| {}).await;

    let (status, body) = server.post("/v1/streams/s/events?partition=0", &json!({"a": 1})).await;
    assert_error(status, &body, 503, "partition_unavailable");
    let (status, body) = server.post("/v1/streams/s/events?partition=0", &json!({"a": 2})).await;
    assert_error(status, &body, 503, "partition_unavailable");
    let (status, body) = server.get("/health/ready").await;
    assert_error(status, &body, 503, "partition_unavailable");
    assert_eq!(body["error"]["detail"][0]["partition"], 0);
    let (_, described) = server.get("/v1/streams/s").await;
    assert!(
        described["partitions"][0]["poisoned"].as_str().is_some_and(|cause| cause.contains("No space")),
        "{described}"
    );
    assert_eq!(described["partitions"][0]["log_end_offset"], 0, "nothing became visible");
    assert!(server.metrics().await.contains("strom_log_partitions_poisoned"));
    // The other partition is untouched.
    let (status, body) = server.post("/v1/streams/s/events?partition=1", &json!({"b": 1})).await;
    assert_eq!(status, 200, "{body}");

    // Back on a real file, a restart recovers and the partition takes appends again.
    let dir = server.stop().await;
    std::fs::remove_file(&segment).unwrap();
    std::fs::File::create(&segment).unwrap();
    let server = TestServer::start_in(dir, |_| {}).await;
    let (status, body) = server.post("/v1/streams/s/events?partition=0", &json!({"a": 3})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["offset"], 0);
    let (status, _) = server.get("/health/ready").await;
    assert_eq!(status, 200);
}
