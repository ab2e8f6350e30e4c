//! One client connection: a reader that takes frames and dispatches them in order, and a
//! writer that sends the responses back in the same order while later requests are handled.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use kafka_protocol::messages::ApiKey;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::api::{self, Pending, Session};
use crate::frame::{self, FrameError};
use crate::limits::CONNECTION_REQUESTS_IN_FLIGHT_MAX;
use crate::sasl::Exchange;
use crate::server::Broker;

/// Bytes read from the socket per system call when frames are small.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// A request being handled, with what it holds of the connection's and the server's bounds
/// until its response is written.
struct InFlight {
    response: Pending,
    _slot: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

/// Serves one connection, plain TCP or TLS, until the client closes it, a frame is refused,
/// or the server stops.
pub(crate) async fn run<S>(broker: Arc<Broker>, stream: S, local_addr: SocketAddr, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let session = Session { local_addr, peer_addr: peer };
    let (reader, mut writer) = tokio::io::split(stream);
    let (queue, mut responses) = mpsc::channel::<InFlight>(CONNECTION_REQUESTS_IN_FLIGHT_MAX);
    let reading = read_requests(&broker, &session, BufReader::with_capacity(READ_BUFFER_BYTES, reader), queue);
    let writing = async move {
        let mut ordered = FuturesOrdered::new();
        let mut reader_done = false;
        loop {
            tokio::select! {
                received = responses.recv(), if !reader_done => match received {
                    Some(in_flight) => ordered.push_back(async move {
                        let result = in_flight.response.await;
                        (result, in_flight._slot, in_flight._bytes)
                    }),
                    None => reader_done = true,
                },
                Some((result, _slot, _bytes)) = ordered.next() => match result {
                    Ok(Some(encoded)) => writer.write_all(&encoded.frame).await?,
                    Ok(None) => {}
                    Err(error) => return Err(error),
                },
                else => return Ok(()),
            }
        }
    };
    // The reader ends at the client's end of stream, at shutdown or on a bad frame; the
    // writer then answers what was read. A failed write ends both.
    let (read, written) = tokio::join!(reading, writing);
    for result in [read, written] {
        if let Err(error) = result {
            log_close(peer, &error);
        }
    }
}

fn log_close(peer: SocketAddr, error: &FrameError) {
    let reason = match error {
        FrameError::Io(_) => {
            tracing::debug!(%peer, %error, "Kafka connection closed");
            return;
        }
        FrameError::TooLarge { .. } => "too_large",
        FrameError::TooShort(_) => "too_short",
        FrameError::UnknownApi(_) => "unknown_api",
        FrameError::UnsupportedVersion { .. } => "unsupported_version",
        FrameError::Malformed { .. } => "malformed",
        FrameError::Unauthenticated(_) => "unauthenticated",
        FrameError::AuthenticationFailed => "authentication_failed",
        FrameError::Encode { .. } => {
            tracing::error!(%peer, %error, "closing a Kafka connection: a response could not be encoded");
            metrics::counter!("strom_kafka_frames_refused_total", "reason" => "encode").increment(1);
            return;
        }
    };
    metrics::counter!("strom_kafka_frames_refused_total", "reason" => reason).increment(1);
    tracing::warn!(%peer, %error, "closing a Kafka connection");
}

async fn read_requests<S: AsyncRead + AsyncWrite>(
    broker: &Arc<Broker>,
    session: &Session,
    mut reader: BufReader<ReadHalf<S>>,
    queue: mpsc::Sender<InFlight>,
) -> Result<(), FrameError> {
    let slots = Arc::new(Semaphore::new(CONNECTION_REQUESTS_IN_FLIGHT_MAX));
    let mut shutdown = broker.shutdown.clone();
    let mut exchange = Exchange::default();
    loop {
        // A slot first: with the connection's requests at their bound, nothing more is read.
        let Ok(slot) = slots.clone().acquire_owned().await else { return Ok(()) };
        let length = tokio::select! {
            length = frame::read_length(&mut reader, broker.config.frame_bytes_max) => length?,
            _ = shutdown.wait_for(|stopping| *stopping) => return Ok(()),
            _ = queue.closed() => return Ok(()),
        };
        let Some(length) = length else { return Ok(()) };
        // `length` is at most `frame_bytes_max`, which the config bounds below i32::MAX.
        let permits = u32::try_from(length).unwrap_or(u32::MAX);
        let Ok(bytes_permit) = broker.request_bytes.clone().acquire_many_owned(permits).await else { return Ok(()) };
        let mut frame = BytesMut::zeroed(length);
        reader.read_exact(&mut frame).await?;
        let frame = frame.freeze();
        let mut close_after = false;
        let response = match frame::parse_request(frame.clone()) {
            Ok(request) if matches!(request.api_key, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate) => {
                let (pending, close) = api::sasl(broker, &mut exchange, &request)?;
                close_after = close;
                measured(request.api_key, pending)
            }
            Ok(request) => {
                let api = request.api_key;
                // With SASL on, only ApiVersions and the SASL requests come before
                // authentication; anything else closes the connection, as in Kafka.
                if broker.sasl.required() && !matches!(exchange, Exchange::Authenticated) && api != ApiKey::ApiVersions
                {
                    return Err(FrameError::Unauthenticated(api));
                }
                let pending = api::dispatch(broker, session, request)?;
                measured(api, pending)
            }
            // Kafka answers an ApiVersions request of an unknown version in version 0, so the
            // client can pick one it finds in the answer. Everything else unserved closes.
            Err(FrameError::UnsupportedVersion { api: ApiKey::ApiVersions, .. }) => {
                let prelude = frame::prelude(&frame)?;
                let answer = api::unsupported_api_versions(prelude.correlation_id);
                Box::pin(async move { answer.map(Some) })
            }
            Err(error) => return Err(error),
        };
        let in_flight = InFlight { response, _slot: slot, _bytes: bytes_permit };
        if queue.send(in_flight).await.is_err() {
            return Ok(());
        }
        if close_after {
            // The failure's answer is written; then the connection closes.
            return Err(FrameError::AuthenticationFailed);
        }
    }
}

/// Counts the request and times it until its response is ready.
fn measured(api: ApiKey, pending: Pending) -> Pending {
    let name = api_name(api);
    let started = Instant::now();
    Box::pin(async move {
        let result = pending.await;
        metrics::counter!("strom_kafka_requests_total", "api" => name).increment(1);
        metrics::histogram!("strom_kafka_request_duration_seconds", "api" => name)
            .record(started.elapsed().as_secs_f64());
        result
    })
}

fn api_name(api: ApiKey) -> &'static str {
    match api {
        ApiKey::Produce => "produce",
        ApiKey::Fetch => "fetch",
        ApiKey::ListOffsets => "list_offsets",
        ApiKey::Metadata => "metadata",
        ApiKey::ApiVersions => "api_versions",
        ApiKey::CreateTopics => "create_topics",
        ApiKey::DeleteTopics => "delete_topics",
        ApiKey::OffsetCommit => "offset_commit",
        ApiKey::OffsetFetch => "offset_fetch",
        ApiKey::FindCoordinator => "find_coordinator",
        ApiKey::JoinGroup => "join_group",
        ApiKey::SyncGroup => "sync_group",
        ApiKey::Heartbeat => "heartbeat",
        ApiKey::LeaveGroup => "leave_group",
        ApiKey::ListGroups => "list_groups",
        ApiKey::DescribeGroups => "describe_groups",
        ApiKey::InitProducerId => "init_producer_id",
        ApiKey::SaslHandshake => "sasl_handshake",
        ApiKey::SaslAuthenticate => "sasl_authenticate",
        ApiKey::DescribeConfigs => "describe_configs",
        ApiKey::DescribeCluster => "describe_cluster",
        _ => "other",
    }
}
