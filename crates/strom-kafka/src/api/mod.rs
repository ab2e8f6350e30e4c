//! One module per Kafka API: where `kafka-protocol`'s wire types meet the log's types.
//! `dispatch` decodes a request's body and returns the future of its encoded response.

mod admin;
mod fetch;
mod groups;
pub(crate) mod metadata;
mod offsets;
pub(crate) mod produce;
mod sasl;
mod versions;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tokio::sync::OwnedSemaphorePermit;

use crate::frame::{FrameError, RequestFrame};
use crate::server::Broker;

/// The versions served, per API: what current librdkafka, the Java client and kafka-python
/// negotiate, within what `kafka-protocol` implements. Upper bounds stop before versions that
/// need what Strom lacks: Fetch 13+ and Produce 13 address topics by id, ListOffsets 7 asks
/// for the max timestamp, Metadata 13 adds a top-level error.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::InitProducerId, 0, 4),
    // Listed from version 0 because librdkafka looks for it to enable SASL at all; it then
    // uses version 1 with SaslAuthenticate. The raw-token exchange that follows a version 0
    // handshake (clients before Kafka 1.0) is not served: its tokens are not frames.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::DescribeCluster, 0, 1),
];

/// The served version range of an API, if it is served at all.
pub(crate) fn served(api: ApiKey) -> Option<(i16, i16)> {
    SERVED.iter().find(|(key, ..)| *key == api).map(|&(_, min, max)| {
        let valid = api.valid_versions();
        (min.max(valid.min), max.min(valid.max))
    })
}

pub(crate) fn serves(api: ApiKey, version: i16) -> bool {
    served(api).is_some_and(|(min, max)| (min..=max).contains(&version))
}

/// An encoded response frame, with the share of the fetch budget its records hold until the
/// frame is written.
pub(crate) struct Encoded {
    pub frame: Bytes,
    pub _budget: Option<OwnedSemaphorePermit>,
}

/// A response being prepared: the encoded frame, or nothing (acks=0 produce), or a reason to
/// close the connection.
pub(crate) type Pending = Pin<Box<dyn Future<Output = Result<Option<Encoded>, FrameError>> + Send>>;

/// What a handler knows of its connection.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The address the client reached, advertised unless the config names another.
    pub local_addr: std::net::SocketAddr,
    /// The client's address (DescribeGroups shows it as the member's host).
    pub peer_addr: std::net::SocketAddr,
}

fn decode<R: Decodable>(frame: &RequestFrame) -> Result<R, FrameError> {
    let mut body = frame.body.clone();
    R::decode(&mut body, frame.api_version).map_err(|error| FrameError::Malformed {
        api: frame.api_key,
        version: frame.api_version,
        cause: error.to_string(),
    })
}

/// Encodes a response frame: length, response header, body.
pub(crate) fn encode<R: Encodable + HeaderVersion>(
    api: ApiKey,
    correlation_id: i32,
    version: i16,
    response: &R,
) -> Result<Bytes, FrameError> {
    let header_version = R::header_version(version);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let failed = |error: &dyn std::fmt::Display| FrameError::Encode { api, version, cause: error.to_string() };
    let size = header.compute_size(header_version).map_err(|e| failed(&e))?
        + response.compute_size(version).map_err(|e| failed(&e))?;
    let length = i32::try_from(size).map_err(|_| failed(&format!("{size} bytes do not fit a frame")))?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(length);
    header.encode(&mut buf, header_version).map_err(|e| failed(&e))?;
    response.encode(&mut buf, version).map_err(|e| failed(&e))?;
    Ok(buf.freeze())
}

fn respond<R, F>(frame: &RequestFrame, response: F) -> Pending
where
    R: Encodable + HeaderVersion + Send + 'static,
    F: Future<Output = R> + Send + 'static,
{
    let (api, correlation_id, version) = (frame.api_key, frame.correlation_id, frame.api_version);
    Box::pin(async move {
        let response = response.await;
        encode(api, correlation_id, version, &response).map(|frame| Some(Encoded { frame, _budget: None }))
    })
}

/// `respond` for a response that holds part of a budget until it is written.
fn respond_holding<R, F>(frame: &RequestFrame, response: F) -> Pending
where
    R: Encodable + HeaderVersion + Send + 'static,
    F: Future<Output = (R, Option<OwnedSemaphorePermit>)> + Send + 'static,
{
    let (api, correlation_id, version) = (frame.api_key, frame.correlation_id, frame.api_version);
    Box::pin(async move {
        let (response, budget) = response.await;
        encode(api, correlation_id, version, &response).map(|frame| Some(Encoded { frame, _budget: budget }))
    })
}

/// Decodes the request and starts handling it. Work that must keep request order (queueing
/// appends) happens here, before the returned future is first polled.
pub(crate) fn dispatch(broker: &Arc<Broker>, session: &Session, frame: RequestFrame) -> Result<Pending, FrameError> {
    let broker = broker.clone();
    let version = frame.api_version;
    Ok(match frame.api_key {
        ApiKey::ApiVersions => {
            let request = decode(&frame)?;
            let response = versions::handle(request, version);
            respond(&frame, async move { response })
        }
        ApiKey::Metadata => {
            let request = decode(&frame)?;
            let response = metadata::handle(&broker, session, request, version);
            respond(&frame, async move { response })
        }
        ApiKey::CreateTopics => {
            let request = decode(&frame)?;
            respond(&frame, async move { admin::create_topics(&broker, request, version).await })
        }
        ApiKey::DeleteTopics => {
            let request = decode(&frame)?;
            respond(&frame, async move { admin::delete_topics(&broker, request, version).await })
        }
        ApiKey::Produce => {
            let request = decode(&frame)?;
            match produce::handle(&broker, request, version) {
                produce::Answer::Respond(response) => respond(&frame, response),
                produce::Answer::Silent(done) => Box::pin(async move {
                    done.await;
                    Ok(None)
                }),
            }
        }
        ApiKey::Fetch => {
            let request = decode(&frame)?;
            respond_holding(&frame, async move { fetch::handle(&broker, request, version).await })
        }
        ApiKey::ListOffsets => {
            let request = decode(&frame)?;
            respond(&frame, async move { offsets::list_offsets(&broker, request, version).await })
        }
        ApiKey::FindCoordinator => {
            let request = decode(&frame)?;
            let response = groups::find_coordinator(&broker, session, request, version);
            respond(&frame, async move { response })
        }
        ApiKey::JoinGroup => {
            let request = decode(&frame)?;
            let client_id = frame.header.client_id.as_ref().map(|id| id.to_string()).unwrap_or_default();
            let session = session.clone();
            respond(&frame, async move { groups::join_group(&broker, &session, client_id, request, version).await })
        }
        ApiKey::SyncGroup => {
            let request = decode(&frame)?;
            respond(&frame, async move { groups::sync_group(&broker, request, version).await })
        }
        ApiKey::Heartbeat => {
            let request = decode(&frame)?;
            let response = groups::heartbeat(&broker, request);
            respond(&frame, async move { response })
        }
        ApiKey::LeaveGroup => {
            let request = decode(&frame)?;
            let response = groups::leave_group(&broker, request, version);
            respond(&frame, async move { response })
        }
        ApiKey::OffsetCommit => {
            let request = decode(&frame)?;
            respond(&frame, async move { groups::offset_commit(&broker, request).await })
        }
        ApiKey::OffsetFetch => {
            let request = decode(&frame)?;
            let response = groups::offset_fetch(&broker, request);
            respond(&frame, async move { response })
        }
        ApiKey::ListGroups => {
            let request = decode(&frame)?;
            let response = groups::list_groups(&broker, request, version);
            respond(&frame, async move { response })
        }
        ApiKey::DescribeGroups => {
            let request = decode(&frame)?;
            let response = groups::describe_groups(&broker, request, version);
            respond(&frame, async move { response })
        }
        ApiKey::DescribeConfigs => {
            let request = decode(&frame)?;
            let response = admin::describe_configs(&broker, request, version);
            respond(&frame, async move { response })
        }
        ApiKey::DescribeCluster => {
            let request = decode(&frame)?;
            let response = admin::describe_cluster(&broker, session, request, version);
            respond(&frame, async move { response })
        }
        ApiKey::InitProducerId => {
            let request = decode(&frame)?;
            let response = produce::init_producer_id(&broker, request);
            respond(&frame, async move { response })
        }
        api => return Err(FrameError::UnsupportedVersion { api, version }),
    })
}

/// SaslHandshake and SaslAuthenticate, which change the connection's authentication state:
/// the answer, and whether the connection closes once it is written.
pub(crate) fn sasl(
    broker: &Broker,
    exchange: &mut crate::sasl::Exchange,
    frame: &RequestFrame,
) -> Result<(Pending, bool), FrameError> {
    let version = frame.api_version;
    let encoded = |frame_bytes: Result<Bytes, FrameError>| -> Pending {
        Box::pin(async move { frame_bytes.map(|frame| Some(Encoded { frame, _budget: None })) })
    };
    Ok(match frame.api_key {
        ApiKey::SaslHandshake => {
            let response = sasl::handshake(&broker.sasl, exchange, decode(frame)?);
            (encoded(encode(frame.api_key, frame.correlation_id, version, &response)), false)
        }
        _ => {
            let (response, close) = sasl::authenticate(&broker.sasl, exchange, decode(frame)?);
            (encoded(encode(frame.api_key, frame.correlation_id, version, &response)), close)
        }
    })
}

/// An ApiVersions request of a version not served: answered in version 0 with
/// UNSUPPORTED_VERSION and the served list, so the client retries with one it finds there.
pub(crate) fn unsupported_api_versions(correlation_id: i32) -> Result<Encoded, FrameError> {
    let response = versions::unsupported();
    encode(ApiKey::ApiVersions, correlation_id, 0, &response).map(|frame| Encoded { frame, _budget: None })
}

/// Decodes a request's body as the listener would, without handling it, and walks every
/// produced record batch as `Produce` would: the fuzz target's and the golden tests' entry.
pub fn decode_only(frame: &RequestFrame) -> Result<(), FrameError> {
    use kafka_protocol::messages::*;
    match frame.api_key {
        ApiKey::ApiVersions => decode::<ApiVersionsRequest>(frame).map(drop),
        ApiKey::Metadata => decode::<MetadataRequest>(frame).map(drop),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(frame).map(drop),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(frame).map(drop),
        ApiKey::Produce => {
            let request = decode::<ProduceRequest>(frame)?;
            for records in request.topic_data.iter().flat_map(|t| &t.partition_data).filter_map(|p| p.records.as_ref())
            {
                // Refusals are answers, not decode errors; what is accepted must decode.
                let taken = match strom_log::compression::decompress_batch(
                    records,
                    strom_log::compression::DECOMPRESSED_BYTES_MAX,
                ) {
                    Ok(Some(decompressed)) => decompressed,
                    Ok(None) => bytes::BytesMut::from(&records[..]),
                    Err(_) => continue,
                };
                if let Ok(batch) = strom_log::EncodedBatch::from_client(taken) {
                    strom_log::decode_records(batch.into_bytes()).map_err(|cause| FrameError::Malformed {
                        api: frame.api_key,
                        version: frame.api_version,
                        cause: format!("an accepted batch does not decode: {cause}"),
                    })?;
                }
            }
            Ok(())
        }
        ApiKey::Fetch => decode::<FetchRequest>(frame).map(drop),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(frame).map(drop),
        ApiKey::FindCoordinator => decode::<FindCoordinatorRequest>(frame).map(drop),
        ApiKey::JoinGroup => decode::<JoinGroupRequest>(frame).map(drop),
        ApiKey::SyncGroup => decode::<SyncGroupRequest>(frame).map(drop),
        ApiKey::Heartbeat => decode::<HeartbeatRequest>(frame).map(drop),
        ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(frame).map(drop),
        ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(frame).map(drop),
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(frame).map(drop),
        ApiKey::ListGroups => decode::<ListGroupsRequest>(frame).map(drop),
        ApiKey::DescribeGroups => decode::<DescribeGroupsRequest>(frame).map(drop),
        ApiKey::InitProducerId => decode::<InitProducerIdRequest>(frame).map(drop),
        ApiKey::SaslHandshake => decode::<SaslHandshakeRequest>(frame).map(drop),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(frame).map(drop),
        ApiKey::DescribeCluster => decode::<DescribeClusterRequest>(frame).map(drop),
        ApiKey::SaslAuthenticate => decode::<SaslAuthenticateRequest>(frame).map(drop),
        api => Err(FrameError::UnsupportedVersion { api, version: frame.api_version }),
    }
}
