//! The classic consumer-group protocol's coordinator (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), as Kafka's group coordinator runs it: members join, the first to join leads,
//! the leader computes the assignment and hands it over in SyncGroup, heartbeats keep members
//! alive, and any join, leave or expired session starts a new generation.
//!
//! Membership lives in memory: after a restart members rejoin (their heartbeats get
//! UNKNOWN_MEMBER_ID), as after a Kafka coordinator failover. Committed offsets are durable
//! (`strom_log::GroupOffsets`). Time is passed in (`now`) so the state machine is testable;
//! `Coordinator::tick` is called by the server's timer.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::indexmap::IndexMap;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::limits::{
    GROUP_INITIAL_REBALANCE_DELAY_MS, GROUP_MEMBERS_MAX, GROUP_SESSION_TIMEOUT_MS_MAX, GROUP_SESSION_TIMEOUT_MS_MIN,
    GROUPS_MAX,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a member sent in JoinGroup.
pub(crate) struct JoinRequest {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets an id with MEMBER_ID_REQUIRED and joins with it.
    pub require_known_member_id: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Joined {
    pub error: Option<ResponseError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// The members with their metadata, for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    fn error(error: ResponseError, member_id: String) -> Joined {
        Joined {
            error: Some(error),
            generation: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id,
            members: Vec::new(),
        }
    }
}

pub(crate) type Synced = Result<Bytes, ResponseError>;

/// An answer now, or one to wait for.
pub(crate) enum Answer<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    joining: Option<oneshot::Sender<Joined>>,
    syncing: Option<oneshot::Sender<Synced>>,
    last_seen: Instant,
}

struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    leader: Option<String>,
    /// In join order: the first member leads.
    members: IndexMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, not yet joined.
    pending: HashSet<String>,
    /// When a rebalance gives up on members that have not rejoined.
    rebalance_deadline: Option<Instant>,
    /// A new group waits this long for more members before its first generation.
    initial_delay_until: Option<Instant>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            leader: None,
            members: IndexMap::new(),
            pending: HashSet::new(),
            rebalance_deadline: None,
            initial_delay_until: None,
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for member in self.members.values_mut() {
                if let Some(syncing) = member.syncing.take() {
                    let _ = syncing.send(Err(ResponseError::RebalanceInProgress));
                }
            }
        }
        if self.state == GroupState::Empty {
            self.initial_delay_until = Some(now + Duration::from_millis(GROUP_INITIAL_REBALANCE_DELAY_MS));
        }
        if self.state != GroupState::PreparingRebalance {
            let timeout = self.members.values().map(|m| m.rebalance_timeout).max().unwrap_or_default();
            self.rebalance_deadline = Some(now + timeout);
        }
        self.state = GroupState::PreparingRebalance;
    }

    /// Ends the join phase once every member has rejoined (after a new group's initial
    /// delay), or at the rebalance deadline without the members that did not.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joining.is_some());
        let delayed = self.initial_delay_until.is_some_and(|until| now < until);
        let expired = self.rebalance_deadline.is_some_and(|deadline| now >= deadline);
        if !(expired || all_joined && !delayed) {
            return;
        }
        self.members.retain(|_, member| member.joining.is_some());
        self.initial_delay_until = None;
        self.rebalance_deadline = None;
        self.generation = self.generation.wrapping_add(1);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.leader = None;
            self.protocol_type = None;
            self.protocol_name = None;
            return;
        }
        self.protocol_name = self.choose_protocol();
        if self.leader.as_ref().is_none_or(|leader| !self.members.contains_key(leader)) {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let protocol_name = self.protocol_name.clone().unwrap_or_default();
        let listed: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, member)| {
                let metadata = member.protocols.iter().find(|(name, _)| *name == protocol_name).map(|(_, m)| m.clone());
                (id.clone(), member.instance_id.clone(), metadata.unwrap_or_default())
            })
            .collect();
        for (id, member) in self.members.iter_mut() {
            member.assignment = Bytes::new();
            member.last_seen = now;
            if let Some(joining) = member.joining.take() {
                let _ = joining.send(Joined {
                    error: None,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol_name.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { listed.clone() } else { Vec::new() },
                });
            }
        }
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let common: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| self.members.values().all(|m| m.protocols.iter().any(|(n, _)| n == *name)))
            .collect();
        let mut votes: HashMap<&String, usize> = HashMap::new();
        for member in self.members.values() {
            if let Some((name, _)) = member.protocols.iter().find(|(name, _)| common.contains(&name)) {
                *votes.entry(name).or_default() += 1;
            }
        }
        // Ties go to the first member's preference order.
        common
            .iter()
            .max_by_key(|name| {
                (
                    votes.get(*name).copied().unwrap_or(0),
                    usize::MAX - common.iter().position(|n| n == *name).unwrap_or(0),
                )
            })
            .map(|name| (*name).clone())
    }

    fn supports(&self, protocols: &[(String, Bytes)]) -> bool {
        self.members
            .values()
            .all(|member| member.protocols.iter().any(|(name, _)| protocols.iter().any(|(n, _)| n == name)))
    }

    fn remove(&mut self, member_id: &str, now: Instant) {
        if let Some(member) = self.members.shift_remove(member_id) {
            if let Some(joining) = member.joining {
                let _ = joining.send(Joined::error(ResponseError::UnknownMemberId, member_id.to_string()));
            }
            if let Some(syncing) = member.syncing {
                let _ = syncing.send(Err(ResponseError::UnknownMemberId));
            }
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => self.prepare_rebalance(now),
            GroupState::PreparingRebalance | GroupState::Empty => {}
        }
        if self.members.is_empty() && self.state == GroupState::PreparingRebalance {
            // Nobody left to wait for.
            self.rebalance_deadline = Some(now);
        }
        self.try_complete_join(now);
    }
}

/// A described group (DescribeGroups, ListGroups).
pub(crate) struct Description {
    pub state: GroupState,
    pub protocol_type: String,
    pub protocol_name: String,
    /// (member id, instance id, client id, client host, metadata, assignment)
    pub members: Vec<(String, Option<String>, String, String, Bytes, Bytes)>,
}

pub(crate) struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    member_ids: AtomicU64,
}

impl Coordinator {
    pub(crate) fn new() -> Coordinator {
        Coordinator { groups: Mutex::new(HashMap::new()), member_ids: AtomicU64::new(0) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn new_member_id(&self, client_id: &str) -> String {
        let n = self.member_ids.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        // Client ids come from the network: keep a short, printable prefix.
        let prefix: String = client_id.chars().filter(|c| c.is_ascii_graphic()).take(64).collect();
        format!("{prefix}-{nanos:x}-{n}")
    }

    pub(crate) fn join(&self, group_id: &str, request: JoinRequest, now: Instant) -> Answer<Joined> {
        let refuse = |error, member_id: &str| Answer::Now(Joined::error(error, member_id.to_string()));
        let timeout_ms = request.session_timeout.as_millis() as u64;
        if !(GROUP_SESSION_TIMEOUT_MS_MIN..=GROUP_SESSION_TIMEOUT_MS_MAX).contains(&timeout_ms) {
            return refuse(ResponseError::InvalidSessionTimeout, &request.member_id);
        }
        if group_id.is_empty() {
            return refuse(ResponseError::InvalidGroupId, &request.member_id);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return refuse(ResponseError::InconsistentGroupProtocol, &request.member_id);
        }
        let mut groups = self.lock();
        if !groups.contains_key(group_id) && groups.len() >= GROUPS_MAX {
            return refuse(ResponseError::CoordinatorNotAvailable, &request.member_id);
        }
        let group = groups.entry(group_id.to_string()).or_insert_with(Group::new);
        if !group.members.is_empty()
            && (group.protocol_type.as_deref() != Some(request.protocol_type.as_str())
                || !group.supports(&request.protocols))
        {
            return refuse(ResponseError::InconsistentGroupProtocol, &request.member_id);
        }
        let mut member_id = request.member_id.clone();
        let known = group.members.contains_key(&member_id) || group.pending.remove(&member_id);
        if member_id.is_empty() {
            if group.members.len() + group.pending.len() >= GROUP_MEMBERS_MAX {
                return refuse(ResponseError::GroupMaxSizeReached, "");
            }
            member_id = self.new_member_id(&request.client_id);
            if request.require_known_member_id {
                group.pending.insert(member_id.clone());
                return refuse(ResponseError::MemberIdRequired, &member_id);
            }
        } else if !known {
            return refuse(ResponseError::UnknownMemberId, &member_id);
        }
        let (sender, receiver) = oneshot::channel();
        let existing = group.members.get(&member_id).map(|m| m.protocols == request.protocols);
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        if group.state == GroupState::Stable && existing == Some(true) && !is_leader {
            // A follower rejoining with nothing changed gets the current generation back.
            let member = &mut group.members[&member_id];
            member.last_seen = now;
            return Answer::Now(Joined {
                error: None,
                generation: group.generation,
                protocol_type: group.protocol_type.clone(),
                protocol_name: group.protocol_name.clone(),
                leader: group.leader.clone().unwrap_or_default(),
                member_id,
                members: Vec::new(),
            });
        }
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        let member = group.members.entry(member_id.clone()).or_insert_with(|| Member {
            instance_id: None,
            client_id: String::new(),
            client_host: String::new(),
            session_timeout: request.session_timeout,
            rebalance_timeout: request.rebalance_timeout,
            protocols: Vec::new(),
            assignment: Bytes::new(),
            joining: None,
            syncing: None,
            last_seen: now,
        });
        member.instance_id = request.instance_id;
        member.client_id = request.client_id;
        member.client_host = request.client_host;
        member.session_timeout = request.session_timeout;
        member.rebalance_timeout = request.rebalance_timeout;
        member.protocols = request.protocols;
        member.last_seen = now;
        if let Some(previous) = member.joining.replace(sender) {
            let _ = previous.send(Joined::error(ResponseError::RebalanceInProgress, member_id.clone()));
        }
        if group.state != GroupState::PreparingRebalance {
            group.prepare_rebalance(now);
        }
        group.try_complete_join(now);
        Answer::Later(receiver)
    }

    pub(crate) fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Answer<Synced> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else { return Answer::Now(Err(ResponseError::UnknownMemberId)) };
        if !group.members.contains_key(member_id) {
            return Answer::Now(Err(ResponseError::UnknownMemberId));
        }
        if generation != group.generation {
            return Answer::Now(Err(ResponseError::IllegalGeneration));
        }
        match group.state {
            GroupState::Empty => Answer::Now(Err(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => Answer::Now(Err(ResponseError::RebalanceInProgress)),
            GroupState::Stable => {
                let member = &mut group.members[member_id];
                member.last_seen = now;
                Answer::Now(Ok(member.assignment.clone()))
            }
            GroupState::CompletingRebalance => {
                let (sender, receiver) = oneshot::channel();
                let member = &mut group.members[member_id];
                member.last_seen = now;
                if let Some(previous) = member.syncing.replace(sender) {
                    let _ = previous.send(Err(ResponseError::RebalanceInProgress));
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, member) in group.members.iter_mut() {
                        member.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    for member in group.members.values_mut() {
                        if let Some(syncing) = member.syncing.take() {
                            let _ = syncing.send(Ok(member.assignment.clone()));
                        }
                    }
                }
                Answer::Later(receiver)
            }
        }
    }

    pub(crate) fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        now: Instant,
    ) -> Option<ResponseError> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else { return Some(ResponseError::UnknownMemberId) };
        let state = group.state;
        let current = group.generation;
        let Some(member) = group.members.get_mut(member_id) else { return Some(ResponseError::UnknownMemberId) };
        member.last_seen = now;
        match state {
            GroupState::Empty => Some(ResponseError::UnknownMemberId),
            _ if generation != current => Some(ResponseError::IllegalGeneration),
            GroupState::PreparingRebalance => Some(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => None,
        }
    }

    /// Removes members; per member, the error (None when it left).
    pub(crate) fn leave(&self, group_id: &str, member_ids: &[String], now: Instant) -> Vec<Option<ResponseError>> {
        let mut groups = self.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return member_ids.iter().map(|_| Some(ResponseError::UnknownMemberId)).collect();
        };
        member_ids
            .iter()
            .map(|member_id| {
                if group.members.contains_key(member_id) {
                    group.remove(member_id, now);
                    None
                } else {
                    Some(ResponseError::UnknownMemberId)
                }
            })
            .collect()
    }

    /// Whether an offset commit with this generation and member may go through. A commit with
    /// generation -1 and no member is a standalone one (consumers without a group), allowed
    /// while the group has no members.
    pub(crate) fn check_commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        now: Instant,
    ) -> Option<ResponseError> {
        let mut groups = self.lock();
        let group = groups.get_mut(group_id);
        if generation < 0 && member_id.is_empty() {
            return match group {
                Some(group) if !group.members.is_empty() => Some(ResponseError::UnknownMemberId),
                _ => None,
            };
        }
        let Some(group) = group else { return Some(ResponseError::UnknownMemberId) };
        let state = group.state;
        let current = group.generation;
        let Some(member) = group.members.get_mut(member_id) else { return Some(ResponseError::UnknownMemberId) };
        member.last_seen = now;
        match state {
            _ if generation != current => Some(ResponseError::IllegalGeneration),
            GroupState::CompletingRebalance => Some(ResponseError::RebalanceInProgress),
            _ => None,
        }
    }

    /// Expires members whose session ran out and ends join phases that are due.
    pub(crate) fn tick(&self, now: Instant) {
        let mut groups = self.lock();
        for (group_id, group) in groups.iter_mut() {
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| m.joining.is_none() && now.saturating_duration_since(m.last_seen) > m.session_timeout)
                .map(|(id, _)| id.clone())
                .collect();
            for member_id in expired {
                tracing::info!(group = %group_id, member = %member_id, "consumer group member's session expired");
                group.remove(&member_id, now);
            }
            group.try_complete_join(now);
        }
        // Groups nobody is in are forgotten (their committed offsets stay in the store).
        groups.retain(|_, group| {
            !(group.state == GroupState::Empty && group.members.is_empty() && group.pending.is_empty())
        });
    }

    pub(crate) fn describe(&self, group_id: &str) -> Option<Description> {
        let groups = self.lock();
        let group = groups.get(group_id)?;
        let protocol_name = group.protocol_name.clone().unwrap_or_default();
        let stable = group.state == GroupState::Stable;
        Some(Description {
            state: group.state,
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol_name: if stable { protocol_name.clone() } else { String::new() },
            members: group
                .members
                .iter()
                .map(|(id, m)| {
                    let metadata = m.protocols.iter().find(|(n, _)| *n == protocol_name).map(|(_, b)| b.clone());
                    let assignment = if stable { m.assignment.clone() } else { Bytes::new() };
                    (
                        id.clone(),
                        m.instance_id.clone(),
                        m.client_id.clone(),
                        m.client_host.clone(),
                        metadata.unwrap_or_default(),
                        assignment,
                    )
                })
                .collect(),
        })
    }

    /// (group id, protocol type, state) of every group with members.
    pub(crate) fn list(&self) -> Vec<(String, String, GroupState)> {
        let groups = self.lock();
        groups.iter().map(|(id, g)| (id.clone(), g.protocol_type.clone().unwrap_or_default(), g.state)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(member_id: &str, protocol: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout: Duration::from_secs(10),
            rebalance_timeout: Duration::from_secs(5),
            protocol_type: "consumer".into(),
            protocols: vec![(protocol.into(), Bytes::from_static(b"meta"))],
            require_known_member_id: true,
        }
    }

    fn now_answer<T>(answer: Answer<T>) -> T {
        match answer {
            Answer::Now(value) => value,
            Answer::Later(_) => panic!("expected an immediate answer"),
        }
    }

    fn later<T>(answer: Answer<T>) -> oneshot::Receiver<T> {
        match answer {
            Answer::Later(receiver) => receiver,
            Answer::Now(_) => panic!("expected to wait"),
        }
    }

    /// Joins a new member the v4+ way (MEMBER_ID_REQUIRED first); returns its id and receiver.
    fn join_new(coordinator: &Coordinator, now: Instant) -> (String, oneshot::Receiver<Joined>) {
        let first = now_answer(coordinator.join("g", request("", "range"), now));
        assert_eq!(first.error, Some(ResponseError::MemberIdRequired));
        let id = first.member_id.clone();
        (id.clone(), later(coordinator.join("g", request(&id, "range"), now)))
    }

    #[test]
    fn members_join_sync_and_rebalance_when_one_leaves_or_expires() {
        let coordinator = Coordinator::new();
        let t0 = Instant::now();
        let (a, mut a_join) = join_new(&coordinator, t0);
        let (b, mut b_join) = join_new(&coordinator, t0);
        // The new group waits its initial delay for more members.
        coordinator.tick(t0);
        assert!(a_join.try_recv().is_err());
        let t1 = t0 + Duration::from_millis(GROUP_INITIAL_REBALANCE_DELAY_MS);
        coordinator.tick(t1);
        let (ja, jb) = (a_join.try_recv().unwrap(), b_join.try_recv().unwrap());
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.leader, a, "the first to join leads");
        assert_eq!(ja.members.len(), 2, "the leader gets the members");
        assert!(jb.members.is_empty());
        assert_eq!(ja.protocol_name.as_deref(), Some("range"));
        // The follower's sync waits for the leader's assignment.
        let mut b_sync = later(coordinator.sync("g", 1, &b, vec![], t1));
        assert!(b_sync.try_recv().is_err());
        assert_eq!(coordinator.heartbeat("g", 1, &b, t1), None);
        let assignments = vec![(a.clone(), Bytes::from_static(b"A")), (b.clone(), Bytes::from_static(b"B"))];
        let mut a_sync = later(coordinator.sync("g", 1, &a, assignments, t1));
        assert_eq!(a_sync.try_recv().unwrap(), Ok(Bytes::from_static(b"A")));
        assert_eq!(b_sync.try_recv().unwrap(), Ok(Bytes::from_static(b"B")));
        assert_eq!(coordinator.describe("g").unwrap().state, GroupState::Stable);
        assert_eq!(coordinator.heartbeat("g", 0, &a, t1), Some(ResponseError::IllegalGeneration));
        assert_eq!(coordinator.check_commit("g", 1, &a, t1), None);
        assert_eq!(coordinator.check_commit("g", -1, "", t1), Some(ResponseError::UnknownMemberId));

        // b leaves: a is told to rejoin, and alone makes generation 2.
        assert_eq!(coordinator.leave("g", std::slice::from_ref(&b), t1), vec![None]);
        assert_eq!(coordinator.heartbeat("g", 1, &a, t1), Some(ResponseError::RebalanceInProgress));
        let mut a_join = later(coordinator.join("g", request(&a, "range"), t1));
        let joined = a_join.try_recv().unwrap();
        assert_eq!((joined.generation, joined.members.len()), (2, 1));
        let mut synced = later(coordinator.sync("g", 2, &a, vec![(a.clone(), Bytes::from_static(b"all"))], t1));
        assert_eq!(synced.try_recv().unwrap(), Ok(Bytes::from_static(b"all")));

        // c joins; a never heartbeats again: after its session it is removed at the deadline.
        let (c, mut c_join) = join_new(&coordinator, t1);
        let t2 = t1 + Duration::from_secs(6);
        coordinator.tick(t2);
        let joined = c_join.try_recv().unwrap();
        assert_eq!(joined.generation, 3, "a did not rejoin within the rebalance timeout");
        assert_eq!(joined.leader, c);
        assert_eq!(coordinator.heartbeat("g", 3, &a, t2), Some(ResponseError::UnknownMemberId));
    }

    #[test]
    fn bad_joins_are_refused() {
        let coordinator = Coordinator::new();
        let now = Instant::now();
        let mut short = request("", "range");
        short.session_timeout = Duration::from_millis(1);
        assert_eq!(now_answer(coordinator.join("g", short, now)).error, Some(ResponseError::InvalidSessionTimeout));
        assert_eq!(
            now_answer(coordinator.join("g", request("who", "range"), now)).error,
            Some(ResponseError::UnknownMemberId)
        );
        let (_a, _join) = join_new(&coordinator, now);
        let other = now_answer(coordinator.join("g", request("", "roundrobin"), now));
        assert_eq!(other.error, Some(ResponseError::InconsistentGroupProtocol));
    }
}
