//! The Kafka listener's framing and its answers to bad input, over raw sockets: bytes a
//! client library would never send.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const API_VERSIONS: i16 = 18;
const METADATA: i16 = 3;

/// A request frame with header v1 (api key, version, correlation id, client id "t").
fn frame(api_key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&api_key.to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&correlation_id.to_be_bytes());
    payload.extend_from_slice(&1i16.to_be_bytes());
    payload.push(b't');
    payload.extend_from_slice(body);
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Reads one response frame: (correlation id, the rest).
async fn response(socket: &mut TcpStream) -> Option<(i32, Vec<u8>)> {
    let mut length = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), socket.read_exact(&mut length))
        .await
        .expect("an answer in time")
        .ok()?;
    let mut payload = vec![0u8; i32::from_be_bytes(length) as usize];
    socket.read_exact(&mut payload).await.ok()?;
    let correlation_id = i32::from_be_bytes(payload[..4].try_into().unwrap());
    Some((correlation_id, payload[4..].to_vec()))
}

/// True when the server closed the connection (and sent nothing more).
async fn closed(socket: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(Duration::from_secs(10), socket.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

async fn still_serves(server: &TestServer) {
    let mut socket = TcpStream::connect(server.kafka_addr).await.unwrap();
    socket.write_all(&frame(API_VERSIONS, 0, 77, &[])).await.unwrap();
    let (correlation_id, body) = response(&mut socket).await.expect("the server still answers");
    assert_eq!(correlation_id, 77);
    assert_eq!(&body[..2], &[0, 0], "no error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let server = TestServer::start().await;
    server.create_stream("clicks", 2).await;
    let mut socket = TcpStream::connect(server.kafka_addr).await.unwrap();
    let mut bytes = Vec::new();
    // A Metadata v0 request for every topic (an empty list) between two ApiVersions.
    for (correlation_id, api, body) in
        [(1, API_VERSIONS, vec![]), (2, METADATA, 0i32.to_be_bytes().to_vec()), (3, API_VERSIONS, vec![])]
    {
        bytes.extend(frame(api, 0, correlation_id, &body));
    }
    socket.write_all(&bytes).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let (correlation_id, body) = response(&mut socket).await.expect("an answer");
        order.push(correlation_id);
        if correlation_id == 2 {
            let text = String::from_utf8_lossy(&body);
            assert!(text.contains("clicks"), "metadata names the topic: {text:?}");
        }
    }
    assert_eq!(order, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_api_versions_version_gets_the_list_in_version_0() {
    let server = TestServer::start().await;
    let mut socket = TcpStream::connect(server.kafka_addr).await.unwrap();
    socket.write_all(&frame(API_VERSIONS, 99, 5, &[])).await.unwrap();
    let (correlation_id, body) = response(&mut socket).await.expect("an answer");
    assert_eq!(correlation_id, 5);
    assert_eq!(i16::from_be_bytes([body[0], body[1]]), 35, "UNSUPPORTED_VERSION");
    let count = i32::from_be_bytes(body[2..6].try_into().unwrap());
    assert!(count >= 7, "the served APIs are listed ({count})");
    // Each entry: api key, min, max (v0 layout). ApiVersions itself is served up to v3.
    let entries: Vec<[i16; 3]> = body[6..6 + 6 * count as usize]
        .chunks(6)
        .map(|c| [0, 2, 4].map(|at| i16::from_be_bytes([c[at], c[at + 1]])))
        .collect();
    assert!(entries.contains(&[API_VERSIONS, 0, 3]), "{entries:?}");
    // The connection stays usable.
    socket.write_all(&frame(API_VERSIONS, 0, 6, &[])).await.unwrap();
    assert_eq!(response(&mut socket).await.map(|(id, _)| id), Some(6));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    let server = TestServer::start().await;
    let bystander_bytes = frame(API_VERSIONS, 0, 1, &[]);
    let mut bystander = TcpStream::connect(server.kafka_addr).await.unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Declared lengths are refused before any body is read: nothing follows them here.
        ("over the frame limit", (200 * 1024 * 1024i32).to_be_bytes().to_vec()),
        ("negative length", (-5i32).to_be_bytes().to_vec()),
        ("too short for a header", [3i32.to_be_bytes().to_vec(), vec![0, 1, 2]].concat()),
        ("unknown API key", frame(999, 0, 1, &[])),
        ("unserved Metadata version", frame(METADATA, 99, 1, &0i32.to_be_bytes())),
        ("truncated body", frame(METADATA, 0, 1, &5i32.to_be_bytes())),
        // An array that claims 2^31-1 topics in a few bytes: refused before any allocation
        // (kafka-protocol alone would try to allocate ~150 GiB and abort the process).
        ("huge array count", frame(METADATA, 0, 1, &i32::MAX.to_be_bytes())),
        ("client id longer than the frame", {
            let mut bytes = frame(API_VERSIONS, 0, 1, &[]);
            bytes[12..14].copy_from_slice(&i16::MAX.to_be_bytes());
            bytes
        }),
    ];
    for (name, bytes) in cases {
        let mut socket = TcpStream::connect(server.kafka_addr).await.unwrap();
        socket.write_all(&bytes).await.unwrap();
        assert!(closed(&mut socket).await, "{name}: the connection is closed");
        bystander.write_all(&bystander_bytes).await.unwrap();
        assert_eq!(response(&mut bystander).await.map(|(id, _)| id), Some(1), "{name}: others are served");
    }
    still_serves(&server).await;
    let metrics = server.metrics().await;
    assert!(metrics.contains("strom_kafka_frames_refused_total{reason=\"too_large\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_before_a_bad_frame_are_still_answered() {
    let server = TestServer::start().await;
    let mut socket = TcpStream::connect(server.kafka_addr).await.unwrap();
    let bytes = [frame(API_VERSIONS, 0, 1, &[]), frame(999, 0, 2, &[])].concat();
    socket.write_all(&bytes).await.unwrap();
    assert_eq!(response(&mut socket).await.map(|(id, _)| id), Some(1));
    assert!(closed(&mut socket).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_fetch_is_answered_at_shutdown_and_does_not_hold_it() {
    let server = TestServer::start().await;
    server.create_stream("quiet", 1).await;
    let mut socket = TcpStream::connect(server.kafka_addr).await.unwrap();
    // Fetch v4 of partition 0 from offset 0, waiting up to 30 s for one byte.
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i32).to_be_bytes()); // replica id
    body.extend_from_slice(&30_000i32.to_be_bytes()); // max wait
    body.extend_from_slice(&1i32.to_be_bytes()); // min bytes
    body.extend_from_slice(&(1024 * 1024i32).to_be_bytes()); // max bytes
    body.push(0); // isolation level
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&5i16.to_be_bytes());
    body.extend_from_slice(b"quiet");
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&0i32.to_be_bytes());
    body.extend_from_slice(&0i64.to_be_bytes());
    body.extend_from_slice(&(1024 * 1024i32).to_be_bytes());
    socket.write_all(&frame(1, 4, 9, &body)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let stopping = tokio::spawn(server.stop());
    let (correlation_id, _) = response(&mut socket).await.expect("the fetch is answered");
    assert_eq!(correlation_id, 9);
    assert!(closed(&mut socket).await, "then the connection closes");
    stopping.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown took {:?}", started.elapsed());
}

const PRODUCE: i16 = 0;

/// A Produce v3 body: acks=all, one batch for one partition of one topic.
fn produce_body(topic: &str, partition: i32, batch: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
    body.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
    body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&1i32.to_be_bytes());
    body.extend_from_slice(&partition.to_be_bytes());
    body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
    body.extend_from_slice(batch);
    body
}

/// Sends one batch and answers the partition's error code.
async fn produce(socket: &mut TcpStream, correlation_id: i32, batch: &[u8]) -> i16 {
    socket.write_all(&frame(PRODUCE, 3, correlation_id, &produce_body("clicks", 0, batch))).await.unwrap();
    let (answered, body) = response(socket).await.expect("an answer");
    assert_eq!(answered, correlation_id);
    // topics (4), name (2 + 6), partitions (4), index (4), then the error code.
    let at = 4 + 2 + "clicks".len() + 4 + 4;
    i16::from_be_bytes([body[at], body[at + 1]])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_stored_decompressed_and_bombs_and_unknown_codecs_are_refused() {
    use std::io::Write;
    use strom_log::compression::{GZIP, ZSTD, compress_batch, seal};

    let server = TestServer::start().await;
    server.create_stream("clicks", 1).await;
    let records: Vec<strom_log::RecordIn> = (0..100)
        .map(|i| strom_log::RecordIn {
            key: Some(bytes::Bytes::from(format!("user{}", i % 3))),
            value: Some(bytes::Bytes::from(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(100)))),
            timestamp_ms: 1_795_334_400_000 + i,
            headers: Vec::new(),
        })
        .collect();
    let plain = strom_log::EncodedBatch::encode(&records).unwrap().into_bytes();
    let mut socket = TcpStream::connect(server.kafka_addr).await.unwrap();
    for (correlation_id, codec) in [(1, GZIP), (2, ZSTD)] {
        let batch = compress_batch(&plain, codec).unwrap();
        assert!(batch.len() < plain.len() / 4);
        assert_eq!(produce(&mut socket, correlation_id, &batch).await, 0, "codec {codec} is taken");
    }
    // Attribute bits 5: no codec Kafka has. UNSUPPORTED_COMPRESSION_TYPE.
    assert_eq!(produce(&mut socket, 3, &seal(&plain, 5, &plain[61..])).await, 76);
    // 48 MiB of zeros, about 48 KiB gzipped: refused once the decompressed records pass what
    // a stored batch may hold (32 MiB). MESSAGE_TOO_LARGE.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&vec![0u8; 48 << 20]).unwrap();
    let bomb = seal(&plain, GZIP, &encoder.finish().unwrap());
    assert!(bomb.len() < 1 << 20);
    assert_eq!(produce(&mut socket, 4, &bomb).await, 10);
    // gzip bytes that do not inflate (CRC right): CORRUPT_MESSAGE.
    let mut broken = compress_batch(&plain, GZIP).unwrap().to_vec();
    let middle = 61 + (broken.len() - 61) / 2;
    broken[middle..middle + 8].copy_from_slice(b"\xff\xff\xff\xff\xff\xff\xff\xff");
    assert_eq!(produce(&mut socket, 5, &seal(&plain, GZIP, &broken[61..])).await, 2);

    // The two taken batches are stored decompressed: any reader reads 200 plain records.
    let (status, read) = server.get("/v1/streams/clicks/partitions/0/events?offset=0&max_records=1000").await;
    assert_eq!(status, 200, "{read}");
    let events = read["events"].as_array().unwrap();
    assert_eq!(events.len(), 200, "{read}");
    for (offset, event) in events.iter().enumerate() {
        assert_eq!(event["value"]["n"], offset % 100, "{event}");
        assert_eq!(event["key"], format!("user{}", offset % 100 % 3));
    }
    still_serves(&server).await;
}
