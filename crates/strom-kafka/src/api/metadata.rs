//! Metadata: one broker (node 0), the controller and leader of every partition.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use strom_log::Stream;

use super::Session;
use crate::server::{Broker, NODE_ID};

/// Reported as the cluster id: clients only compare it between answers.
pub(super) const CLUSTER_ID: &str = "strom";

/// The host and port clients are told to use.
pub(super) fn advertised(broker: &Broker, session: &Session) -> (String, i32) {
    if let Some((host, port)) = broker.config.advertised_addr.as_deref().and_then(|a| a.rsplit_once(':'))
        && let Ok(port) = port.parse::<u16>()
    {
        return (host.trim_start_matches('[').trim_end_matches(']').to_string(), i32::from(port));
    }
    (session.local_addr.ip().to_string(), i32::from(session.local_addr.port()))
}

pub(super) fn handle(broker: &Broker, session: &Session, request: MetadataRequest, version: i16) -> MetadataResponse {
    let (host, port) = advertised(broker, session);
    let mut node = MetadataResponseBroker::default();
    node.node_id = BrokerId(NODE_ID);
    node.host = StrBytes::from_string(host);
    node.port = port;
    let mut response = MetadataResponse::default();
    response.brokers = vec![node];
    if version >= 2 {
        response.cluster_id = Some(StrBytes::from_static_str(CLUSTER_ID));
    }
    if version >= 1 {
        response.controller_id = BrokerId(NODE_ID);
    }
    // Version 0 asks for every topic with an empty list; later versions with a null one.
    let every_topic = match &request.topics {
        None => true,
        Some(topics) => topics.is_empty() && version == 0,
    };
    response.topics = if every_topic {
        broker.log.streams().iter().map(|stream| topic(stream, version)).collect()
    } else {
        request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|requested| match requested.name {
                Some(name) => match broker.log.stream(name.as_str()) {
                    Ok(stream) => topic(&stream, version),
                    Err(_) => missing(name, ResponseError::UnknownTopicOrPartition),
                },
                // A topic asked for by id only (v10+): Strom's topics have no ids.
                None => missing(TopicName(StrBytes::default()), ResponseError::UnknownTopicId),
            })
            .collect()
    };
    response
}

fn missing(name: TopicName, error: ResponseError) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.error_code = error.code();
    topic.name = Some(name);
    topic
}

fn topic(stream: &Stream, version: i16) -> MetadataResponseTopic {
    let mut topic = MetadataResponseTopic::default();
    topic.name = Some(TopicName(StrBytes::from_string(stream.name.clone())));
    topic.partitions = stream
        .partitions()
        .iter()
        .map(|partition| {
            let mut out = MetadataResponsePartition::default();
            out.partition_index = partition.id() as i32;
            out.leader_id = BrokerId(NODE_ID);
            if version >= 7 {
                out.leader_epoch = 0;
            }
            out.replica_nodes = vec![BrokerId(NODE_ID)];
            out.isr_nodes = vec![BrokerId(NODE_ID)];
            out
        })
        .collect();
    topic
}
