//! The consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup
//! (membership: `crate::groups`), OffsetCommit and OffsetFetch (the log's `GroupOffsets`),
//! ListGroups and DescribeGroups.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use kafka_protocol::messages::offset_fetch_response::{OffsetFetchResponsePartition, OffsetFetchResponseTopic};
use kafka_protocol::messages::{
    BrokerId, DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use strom_log::CommitMode;
use tokio::time::Instant;

use super::Session;
use super::metadata::advertised;
use crate::errors;
use crate::groups::{Answer, GroupState, JoinRequest, Joined};
use crate::limits::GROUPS_PER_REQUEST_MAX;
use crate::server::{Broker, NODE_ID};

fn text(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

pub(super) fn find_coordinator(
    broker: &Broker,
    session: &Session,
    request: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let (host, port) = advertised(broker, session);
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        // This one broker coordinates every group (and would every transaction).
        response.coordinators = request
            .coordinator_keys
            .into_iter()
            .take(GROUPS_PER_REQUEST_MAX)
            .map(|key| {
                let mut entry = CoordinatorEntry::default();
                entry.key = key;
                entry.node_id = BrokerId(NODE_ID);
                entry.host = text(host.clone());
                entry.port = port;
                entry
            })
            .collect();
    } else {
        response.node_id = BrokerId(NODE_ID);
        response.host = text(host);
        response.port = port;
        if version >= 1 {
            response.error_message = None;
        }
    }
    response
}

async fn wait<T>(broker: &Broker, answer: Answer<T>, gone: T) -> T {
    match answer {
        Answer::Now(value) => value,
        Answer::Later(receiver) => {
            let mut shutdown = broker.shutdown.clone();
            tokio::select! {
                value = receiver => value.unwrap_or(gone),
                _ = shutdown.wait_for(|stopping| *stopping) => gone,
            }
        }
    }
}

pub(super) async fn join_group(
    broker: &Arc<Broker>,
    session: &Session,
    client_id: String,
    request: JoinGroupRequest,
    version: i16,
) -> JoinGroupResponse {
    let session_timeout = Duration::from_millis(u64::try_from(request.session_timeout_ms).unwrap_or(0));
    // Version 0 has no rebalance timeout: Kafka uses the session timeout.
    let rebalance_timeout = match request.rebalance_timeout_ms {
        ms if version >= 1 && ms > 0 => Duration::from_millis(ms as u64),
        _ => session_timeout,
    };
    let join = JoinRequest {
        member_id: request.member_id.to_string(),
        instance_id: request.group_instance_id.map(|id| id.to_string()),
        client_id,
        client_host: session.peer_addr.ip().to_string(),
        session_timeout,
        rebalance_timeout,
        protocol_type: request.protocol_type.to_string(),
        protocols: request.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
        require_known_member_id: version >= 4,
    };
    let member_id = join.member_id.clone();
    let answer = broker.groups.join(request.group_id.as_str(), join, Instant::now());
    let gone = Joined {
        error: Some(ResponseError::CoordinatorNotAvailable),
        generation: -1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        member_id,
        members: Vec::new(),
    };
    let joined = wait(broker, answer, gone).await;
    let mut response = JoinGroupResponse::default();
    response.error_code = joined.error.map_or(0, |e| e.code());
    response.generation_id = joined.generation;
    if version >= 7 {
        response.protocol_type = joined.protocol_type.map(text);
        response.protocol_name = joined.protocol_name.map(text);
    } else {
        response.protocol_name = Some(text(joined.protocol_name.unwrap_or_default()));
    }
    response.leader = text(joined.leader);
    response.member_id = text(joined.member_id);
    response.members = joined
        .members
        .into_iter()
        .map(|(id, instance_id, metadata)| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = text(id);
            if version >= 5 {
                member.group_instance_id = instance_id.map(text);
            }
            member.metadata = metadata;
            member
        })
        .collect();
    response
}

pub(super) async fn sync_group(broker: &Arc<Broker>, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let assignments = request.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect();
    let answer = broker.groups.sync(
        request.group_id.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        assignments,
        Instant::now(),
    );
    let synced = wait(broker, answer, Err(ResponseError::CoordinatorNotAvailable)).await;
    let mut response = SyncGroupResponse::default();
    match synced {
        Ok(assignment) => {
            response.assignment = assignment;
            if version >= 5 {
                response.protocol_type = request.protocol_type;
                response.protocol_name = request.protocol_name;
            }
        }
        Err(error) => response.error_code = error.code(),
    }
    response
}

pub(super) fn heartbeat(broker: &Broker, request: HeartbeatRequest) -> HeartbeatResponse {
    let error = broker.groups.heartbeat(
        request.group_id.as_str(),
        request.generation_id,
        request.member_id.as_str(),
        Instant::now(),
    );
    let mut response = HeartbeatResponse::default();
    response.error_code = error.map_or(0, |e| e.code());
    response
}

pub(super) fn leave_group(broker: &Broker, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let mut response = LeaveGroupResponse::default();
    let now = Instant::now();
    if version >= 3 {
        let ids: Vec<String> = request.members.iter().map(|m| m.member_id.to_string()).collect();
        let errors = broker.groups.leave(request.group_id.as_str(), &ids, now);
        response.members = request
            .members
            .into_iter()
            .zip(errors)
            .map(|(identity, error)| {
                let mut member = MemberResponse::default();
                member.member_id = identity.member_id;
                member.group_instance_id = identity.group_instance_id;
                member.error_code = error.map_or(0, |e| e.code());
                member
            })
            .collect();
    } else {
        let errors = broker.groups.leave(request.group_id.as_str(), &[request.member_id.to_string()], now);
        response.error_code = errors.into_iter().next().flatten().map_or(0, |e| e.code());
    }
    response
}

pub(super) async fn offset_commit(broker: &Arc<Broker>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.to_string();
    let refused = broker.groups.check_commit(
        &group,
        request.generation_id_or_member_epoch,
        request.member_id.as_str(),
        Instant::now(),
    );
    let mut response = OffsetCommitResponse::default();
    for topic in request.topics {
        let stream = broker.log.stream(topic.name.as_str());
        let mut valid = Vec::new();
        let mut errors_by_partition = Vec::new();
        for partition in &topic.partitions {
            let error = match (&refused, &stream) {
                (Some(error), _) => Some(*error),
                (None, Err(error)) => Some(errors::code(error)),
                (None, Ok(stream)) => {
                    let id = u32::try_from(partition.partition_index).ok().filter(|&id| stream.partition(id).is_ok());
                    match (id, u64::try_from(partition.committed_offset)) {
                        (None, _) => Some(ResponseError::UnknownTopicOrPartition),
                        (Some(_), Err(_)) => Some(ResponseError::InvalidCommitOffsetSize),
                        (Some(id), Ok(offset)) => {
                            valid.push((id, offset));
                            None
                        }
                    }
                }
            };
            errors_by_partition.push((partition.partition_index, error));
        }
        // One store transaction per topic, fsync'd before the answer; Kafka lets a commit
        // move an offset backwards (a seek), hence `Reset`.
        let stored = if valid.is_empty() {
            Ok(())
        } else {
            let (broker, group, name) = (broker.clone(), group.clone(), topic.name.to_string());
            tokio::task::spawn_blocking(move || broker.log.groups().commit(&group, &name, &valid, CommitMode::Reset))
                .await
                .unwrap_or_else(|_| Err(strom_log::LogError::GroupStore("the commit task failed".into())))
        };
        let store_error = stored.err().map(|error| {
            tracing::warn!(%error, "offset commit failed");
            ResponseError::CoordinatorNotAvailable
        });
        let mut out = OffsetCommitResponseTopic::default();
        out.name = topic.name;
        out.partitions = errors_by_partition
            .into_iter()
            .map(|(index, error)| {
                let mut partition = OffsetCommitResponsePartition::default();
                partition.partition_index = index;
                partition.error_code = error.or(store_error).map_or(0, |e| e.code());
                partition
            })
            .collect();
        response.topics.push(out);
    }
    response
}

pub(super) fn offset_fetch(broker: &Broker, request: OffsetFetchRequest) -> OffsetFetchResponse {
    let group = request.group_id.as_str();
    let store = broker.log.groups();
    let asked: Vec<(TopicName, Vec<i32>)> = match request.topics {
        Some(topics) => topics.into_iter().map(|t| (t.name, t.partition_indexes)).collect(),
        None => {
            // Every committed offset of the group.
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (g, stream, partition, _) in store.all() {
                if g == group {
                    by_topic.entry(stream).or_default().push(partition as i32);
                }
            }
            by_topic.into_iter().map(|(name, partitions)| (TopicName(text(name)), partitions)).collect()
        }
    };
    let mut response = OffsetFetchResponse::default();
    response.topics = asked
        .into_iter()
        .map(|(name, partitions)| {
            let mut topic = OffsetFetchResponseTopic::default();
            topic.partitions = partitions
                .into_iter()
                .map(|index| {
                    let mut partition = OffsetFetchResponsePartition::default();
                    partition.partition_index = index;
                    let committed = u32::try_from(index).ok().and_then(|id| store.committed(group, name.as_str(), id));
                    partition.committed_offset = committed.map_or(-1, |offset| offset as i64);
                    partition
                })
                .collect();
            topic.name = name;
            topic
        })
        .collect();
    response
}

/// Groups with committed offsets but no members are "Empty" groups, as in Kafka.
fn has_offsets(broker: &Broker, group: &str) -> bool {
    broker.log.groups().all().iter().any(|(g, ..)| g == group)
}

pub(super) fn list_groups(broker: &Broker, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let mut listed: BTreeMap<String, (String, &'static str)> = BTreeMap::new();
    for group in broker.log.groups().groups() {
        listed.insert(group, ("consumer".to_string(), GroupState::Empty.name()));
    }
    for (group, protocol_type, state) in broker.groups.list() {
        listed.insert(group, (protocol_type, state.name()));
    }
    let filter: Vec<String> = request.states_filter.iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut response = ListGroupsResponse::default();
    response.groups = listed
        .into_iter()
        .filter(|(_, (_, state))| filter.is_empty() || filter.contains(&state.to_ascii_lowercase()))
        .map(|(id, (protocol_type, state))| {
            let mut group = ListedGroup::default();
            group.group_id = GroupId(text(id));
            group.protocol_type = text(protocol_type);
            if version >= 4 {
                group.group_state = StrBytes::from_static_str(state);
            }
            group
        })
        .collect();
    response
}

pub(super) fn describe_groups(broker: &Broker, request: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let mut response = DescribeGroupsResponse::default();
    response.groups = request
        .groups
        .into_iter()
        .take(GROUPS_PER_REQUEST_MAX)
        .map(|group_id| {
            let mut group = DescribedGroup::default();
            match broker.groups.describe(group_id.as_str()) {
                Some(description) => {
                    group.group_state = StrBytes::from_static_str(description.state.name());
                    group.protocol_type = text(description.protocol_type);
                    group.protocol_data = text(description.protocol_name);
                    group.members = description
                        .members
                        .into_iter()
                        .map(|(id, instance_id, client_id, client_host, metadata, assignment)| {
                            let mut member = DescribedGroupMember::default();
                            member.member_id = text(id);
                            if version >= 4 {
                                member.group_instance_id = instance_id.map(text);
                            }
                            member.client_id = text(client_id);
                            member.client_host = text(client_host);
                            member.member_metadata = metadata;
                            member.member_assignment = assignment;
                            member
                        })
                        .collect();
                }
                None if has_offsets(broker, group_id.as_str()) => {
                    group.group_state = StrBytes::from_static_str(GroupState::Empty.name());
                    group.protocol_type = StrBytes::from_static_str("consumer");
                }
                // Kafka describes an unknown group as Dead, without an error.
                None => group.group_state = StrBytes::from_static_str("Dead"),
            }
            group.group_id = group_id;
            group
        })
        .collect();
    response
}
