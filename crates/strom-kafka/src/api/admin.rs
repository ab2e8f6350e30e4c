//! CreateTopics and DeleteTopics: Kafka's topic administration on the log's streams (one
//! namespace with the HTTP API).

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{DescribeConfigsResourceResult, DescribeConfigsResult};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse,
    DescribeClusterRequest, DescribeClusterResponse, DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strom_log::limits::{BATCH_BYTES_MAX, PARTITIONS_PER_STREAM_MAX};
use strom_log::{StreamConfig, validate_stream_name};

use crate::errors;
use crate::limits::ADMIN_TOPICS_PER_REQUEST_MAX;
use crate::server::{Broker, NODE_ID};

type Refusal = (ResponseError, String);

pub(super) async fn create_topics(
    broker: &Arc<Broker>,
    request: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    let too_many = request.topics.len() > ADMIN_TOPICS_PER_REQUEST_MAX;
    for topic in request.topics {
        let name = topic.name.clone();
        let outcome = if too_many {
            Err((ResponseError::PolicyViolation, format!("at most {ADMIN_TOPICS_PER_REQUEST_MAX} topics per request")))
        } else {
            match stream_config(&topic, &broker.stream_defaults) {
                Err(refusal) => Err(refusal),
                Ok(config) if request.validate_only => {
                    match validate_stream_name(name.as_str()).and_then(|()| config.validate()) {
                        Err(error) => Err((errors::code(&error), error.to_string())),
                        Ok(()) if broker.log.stream(name.as_str()).is_ok() => Err((
                            ResponseError::TopicAlreadyExists,
                            format!("topic {:?} already exists", name.as_str()),
                        )),
                        Ok(()) => Ok(config),
                    }
                }
                Ok(config) => match broker.log.create_stream(name.as_str(), config.clone()).await {
                    Ok(_) => Ok(config),
                    Err(error) => Err((errors::code(&error), error.to_string())),
                },
            }
        };
        let mut result = CreatableTopicResult::default();
        result.name = name;
        match outcome {
            Ok(config) => {
                result.error_message = None;
                if version >= 5 {
                    result.num_partitions = config.partitions as i32;
                    result.replication_factor = 1;
                    result.configs = Some(described(&config));
                }
            }
            Err((code, message)) => {
                result.error_code = code.code();
                result.error_message = Some(StrBytes::from_string(message));
                if version >= 5 {
                    result.configs = None;
                }
            }
        }
        response.topics.push(result);
    }
    response
}

/// The stream settings a CreateTopics entry asks for, on top of the server's defaults.
fn stream_config(topic: &CreatableTopic, defaults: &StreamConfig) -> Result<StreamConfig, Refusal> {
    let mut config = defaults.clone();
    match topic.num_partitions {
        -1 => {}
        n if n >= 1 && n as u32 <= PARTITIONS_PER_STREAM_MAX => config.partitions = n as u32,
        n => {
            return Err((
                ResponseError::InvalidPartitions,
                format!("partitions must be 1 to {PARTITIONS_PER_STREAM_MAX}, not {n}"),
            ));
        }
    }
    if !matches!(topic.replication_factor, -1 | 1) {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {} asked; Strom is one broker (1)", topic.replication_factor),
        ));
    }
    if !topic.assignments.is_empty() {
        return Err((ResponseError::InvalidReplicaAssignment, "manual replica assignment is not supported".into()));
    }
    for entry in &topic.configs {
        let value = entry.value.as_ref().map(|v| v.as_str()).unwrap_or_default();
        let invalid = || (ResponseError::InvalidConfig, format!("{}={value:?} is not valid", entry.name.as_str()));
        let number = || value.parse::<i64>().map_err(|_| invalid());
        match entry.name.as_str() {
            "retention.ms" => config.retention_ms = optional(number()?).ok_or_else(invalid)?,
            "retention.bytes" => config.retention_bytes = optional(number()?).ok_or_else(invalid)?,
            "segment.bytes" => config.segment_bytes = u64::try_from(number()?).map_err(|_| invalid())?,
            "segment.ms" => config.segment_ms = u64::try_from(number()?).map_err(|_| invalid())?,
            "cleanup.policy" if value == "delete" => {}
            "compression.type" if matches!(value, "producer" | "uncompressed") => {}
            "message.timestamp.type" if value == "CreateTime" => {}
            // Settings about replicas and sizes a single broker has no use for: accepted so
            // that tools which always send them work, without effect.
            "min.insync.replicas" | "unclean.leader.election.enable" | "max.message.bytes" => {}
            name => {
                return Err((ResponseError::InvalidConfig, format!("topic config {name}={value:?} is not supported")));
            }
        }
    }
    Ok(config)
}

/// -1 means no bound; other negative values and 0 are invalid (`None`).
fn optional(value: i64) -> Option<Option<u64>> {
    match value {
        -1 => Some(None),
        v if v > 0 => Some(Some(v as u64)),
        _ => None,
    }
}

/// A stream's settings under Kafka's topic config names.
fn topic_configs(config: &StreamConfig) -> Vec<(&'static str, String)> {
    let bound = |value: Option<u64>| value.map_or("-1".to_string(), |v| v.to_string());
    vec![
        ("cleanup.policy", "delete".to_string()),
        ("retention.ms", bound(config.retention_ms)),
        ("retention.bytes", bound(config.retention_bytes)),
        ("segment.bytes", config.segment_bytes.to_string()),
        ("segment.ms", config.segment_ms.to_string()),
        ("max.message.bytes", BATCH_BYTES_MAX.to_string()),
        ("compression.type", "producer".to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
    ]
}

/// The broker's settings clients ask about (read-only: they come from strom.toml or are fixed).
fn broker_configs(defaults: &StreamConfig) -> Vec<(&'static str, String)> {
    vec![
        ("message.max.bytes", BATCH_BYTES_MAX.to_string()),
        ("auto.create.topics.enable", "false".to_string()),
        ("num.partitions", defaults.partitions.to_string()),
        ("default.replication.factor", "1".to_string()),
        ("min.insync.replicas", "1".to_string()),
        ("log.retention.ms", defaults.retention_ms.map_or("-1".to_string(), |v| v.to_string())),
        ("log.segment.bytes", defaults.segment_bytes.to_string()),
    ]
}

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's config sources: set on the topic, and static broker configuration.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;

pub(super) fn describe_configs(
    broker: &Broker,
    request: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources.into_iter().take(ADMIN_TOPICS_PER_REQUEST_MAX) {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        let found = match resource.resource_type {
            RESOURCE_TOPIC => broker
                .log
                .stream(resource.resource_name.as_str())
                .map(|stream| (topic_configs(&stream.config), SOURCE_TOPIC, false))
                .map_err(|error| (errors::code(&error), error.to_string())),
            RESOURCE_BROKER if matches!(resource.resource_name.as_str(), "" | "0") => {
                Ok((broker_configs(&broker.stream_defaults), SOURCE_STATIC_BROKER, true))
            }
            RESOURCE_BROKER => Err((ResponseError::InvalidRequest, "Strom is broker 0".to_string())),
            other => Err((ResponseError::InvalidRequest, format!("resource type {other} has no configs here"))),
        };
        match found {
            Ok((configs, source, read_only)) => {
                let wanted = resource.configuration_keys.as_ref();
                result.configs = configs
                    .into_iter()
                    .filter(|(name, _)| wanted.is_none_or(|keys| keys.iter().any(|k| k.as_str() == *name)))
                    .map(|(name, value)| {
                        let mut entry = DescribeConfigsResourceResult::default();
                        entry.name = StrBytes::from_static_str(name);
                        entry.value = Some(StrBytes::from_string(value));
                        entry.read_only = read_only;
                        entry.config_source = source;
                        if version >= 3 {
                            entry.documentation = None;
                        }
                        entry
                    })
                    .collect();
                result.error_message = None;
            }
            Err((code, message)) => {
                result.error_code = code.code();
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        result.resource_name = resource.resource_name;
        response.results.push(result);
    }
    response
}

pub(super) fn describe_cluster(
    broker: &Broker,
    session: &super::Session,
    request: DescribeClusterRequest,
    version: i16,
) -> DescribeClusterResponse {
    let (host, port) = super::metadata::advertised(broker, session);
    let mut node = DescribeClusterBroker::default();
    node.broker_id = BrokerId(NODE_ID);
    node.host = StrBytes::from_string(host);
    node.port = port;
    let mut response = DescribeClusterResponse::default();
    response.error_message = None;
    if version >= 1 {
        response.endpoint_type = request.endpoint_type;
    }
    response.cluster_id = StrBytes::from_static_str(super::metadata::CLUSTER_ID);
    response.controller_id = BrokerId(NODE_ID);
    response.brokers = vec![node];
    response
}

fn described(config: &StreamConfig) -> Vec<CreatableTopicConfigs> {
    topic_configs(config)
        .into_iter()
        .map(|(name, value)| {
            let mut entry = CreatableTopicConfigs::default();
            entry.name = StrBytes::from_static_str(name);
            entry.value = Some(StrBytes::from_string(value));
            // The default (-1, unknown) trips clients that map sources to names (kafka-python).
            entry.config_source = SOURCE_TOPIC;
            entry
        })
        .collect()
}

pub(super) async fn delete_topics(
    broker: &Arc<Broker>,
    request: DeleteTopicsRequest,
    version: i16,
) -> DeleteTopicsResponse {
    // Up to version 5 topics are names; version 6 names them or gives ids (Strom has no ids).
    let asked: Vec<Option<TopicName>> = if version >= 6 {
        request.topics.into_iter().map(|topic| topic.name).collect()
    } else {
        request.topic_names.into_iter().map(Some).collect()
    };
    let too_many = asked.len() > ADMIN_TOPICS_PER_REQUEST_MAX;
    let mut response = DeleteTopicsResponse::default();
    for name in asked {
        let mut result = DeletableTopicResult::default();
        let outcome = match &name {
            _ if too_many => Err((
                ResponseError::PolicyViolation,
                format!("at most {ADMIN_TOPICS_PER_REQUEST_MAX} topics per request"),
            )),
            None => Err((ResponseError::UnknownTopicId, "topics are deleted by name".to_string())),
            Some(name) => {
                let deleted = broker.log.delete_stream(name.as_str()).await;
                broker.producers.forget(name.as_str());
                deleted.map_err(|error| (errors::code(&error), error.to_string()))
            }
        };
        result.name = name;
        if let Err((code, message)) = outcome {
            result.error_code = code.code();
            if version >= 5 {
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.responses.push(result);
    }
    response
}
