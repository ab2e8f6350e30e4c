//! Which destinations a 410 disabled, kept in a stream of the log (`webhooks.states_stream`:
//! one partition, no retention) instead of a file of one process, so that every process of
//! an installation agrees: on the Kafka backend the process that saw the 410 may not be the
//! one an operator asks to enable the destination, nor the one that delivers for it after a
//! hand-over.
//!
//! Each change is one record keyed by the destination's name whose value is its new state.
//! Every process reads the whole stream at start and then follows it. A destination's state
//! is the one of the newest record seen for it: a change made here takes the destination's
//! lock, appends (synced), and applies the record's offset with it, so the follower, which
//! takes the same lock, never applies an older record over a newer one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strom_log::{Durability, EncodedBatch, Log, LogError, RecordIn, RecordOut};
use tokio::sync::watch;

use crate::limits::{IDLE_WAIT_MS, READ_AHEAD_MAX, READ_BYTES_MAX};
use crate::{DestinationState, Disabled};

/// One record of the states stream.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct StateRecord {
    /// `disabled` or `active`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub since_ms: i64,
}

impl StateRecord {
    pub fn disabled(disabled: &Disabled) -> StateRecord {
        StateRecord { state: "disabled".into(), reason: Some(disabled.reason.clone()), since_ms: disabled.since_ms }
    }

    pub fn active(since_ms: i64) -> StateRecord {
        StateRecord { state: "active".into(), reason: None, since_ms }
    }

    fn as_disabled(&self) -> Option<Disabled> {
        (self.state == "disabled")
            .then(|| Disabled { reason: self.reason.clone().unwrap_or_default(), since_ms: self.since_ms })
    }
}

/// A record of the stream, read: (offset, destination, state); records that are not states
/// (no key, not JSON) are skipped with a warning.
fn decode(record: &RecordOut, stream: &str) -> Option<(u64, String, StateRecord)> {
    let name = record.key.as_deref().and_then(|key| std::str::from_utf8(key).ok())?;
    match record.value.as_deref().map(serde_json::from_slice::<StateRecord>) {
        Some(Ok(state)) => Some((record.offset, name.to_string(), state)),
        _ => {
            tracing::warn!(
                stream,
                offset = record.offset,
                "a record of the webhook states stream is not a state; skipped"
            );
            None
        }
    }
}

/// Each destination's newest state, with the offset of its record.
pub(crate) type Known = BTreeMap<String, (u64, StateRecord)>;

/// Reads the whole stream: each destination's newest state, and the offset to follow from.
/// Blocking.
pub(crate) fn read_all(log: &Log, stream: &str) -> Result<(Known, u64), LogError> {
    let handle = log.stream(stream)?;
    let partition = handle.partition(0)?;
    let end = partition.log_end_offset();
    let mut next = partition.log_start_offset();
    let mut states = BTreeMap::new();
    while next < end {
        let read = partition.read_records(next, READ_AHEAD_MAX, READ_BYTES_MAX)?;
        for record in &read.records {
            if let Some((offset, name, state)) = decode(record, stream) {
                states.insert(name, (offset, state));
            }
        }
        if read.next_offset <= next {
            break;
        }
        next = read.next_offset;
    }
    Ok((states, next))
}

/// Appends a destination's new state (synced) and answers its offset.
pub(crate) async fn append(log: &Log, stream: &str, name: &str, state: &StateRecord) -> Result<u64, LogError> {
    let record = RecordIn {
        key: Some(Bytes::from(name.to_string())),
        value: Some(Bytes::from(serde_json::to_vec(state).unwrap_or_default())),
        timestamp_ms: state.since_ms,
        headers: Vec::new(),
    };
    let batch = EncodedBatch::encode(&[record])?;
    let appended = log.stream(stream)?.partition(0)?.append(batch, Durability::Sync).await?;
    Ok(appended.base_offset)
}

/// Applies a record read from the stream, unless the destination already holds this one or a
/// newer one. Wakes the destination's worker when it becomes active.
pub(crate) fn apply(destination: &DestinationState, applied: &mut Option<u64>, offset: u64, state: &StateRecord) {
    if applied.is_some_and(|known| known >= offset) {
        return;
    }
    *applied = Some(offset);
    let disabled = state.as_disabled();
    let active = disabled.is_none();
    let changed = {
        let mut current = destination.disabled.lock().unwrap_or_else(|e| e.into_inner());
        let changed = current.is_some() != disabled.is_some();
        *current = disabled;
        changed
    };
    metrics::gauge!("strom_webhooks_disabled", "destination" => destination.name().to_string()).set(if active {
        0.0
    } else {
        1.0
    });
    if changed {
        tracing::info!(destination = destination.name(), state = %state.state, offset, "webhook destination state changed elsewhere");
    }
    if active {
        destination.enabled.notify_waiters();
    }
}

/// Follows the stream from `next`, applying what other processes (and this one) append.
pub(crate) async fn follow(
    log: Arc<Log>,
    stream: String,
    destinations: BTreeMap<String, Arc<DestinationState>>,
    mut next: u64,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        if *stopped.borrow() {
            return;
        }
        let handle = match log.stream(&stream) {
            Ok(handle) => handle,
            Err(error) => {
                tracing::error!(%stream, %error, "cannot follow the webhook states stream");
                sleep_or_stop(&mut stopped).await;
                continue;
            }
        };
        let Ok(partition) = handle.partition(0) else { return };
        if next >= partition.log_end_offset() {
            tokio::select! {
                _ = partition.wait_for(next, Duration::from_millis(IDLE_WAIT_MS)) => {}
                _ = stopped.changed() => {}
            }
            continue;
        }
        let reader = handle.clone();
        let read = tokio::task::spawn_blocking(move || {
            reader.partition(0)?.read_records(next, READ_AHEAD_MAX, READ_BYTES_MAX)
        })
        .await;
        match read {
            Ok(Ok(read)) => {
                for record in &read.records {
                    let Some((offset, name, state)) = decode(record, &stream) else { continue };
                    if let Some(destination) = destinations.get(&name) {
                        let mut applied = destination.state_offset.lock().await;
                        apply(destination, &mut applied, offset, &state);
                    }
                }
                next = read.next_offset.max(next);
            }
            Ok(Err(LogError::OffsetOutOfRange { log_start_offset, .. })) => next = log_start_offset,
            Ok(Err(error)) => {
                tracing::error!(%stream, %error, "cannot read the webhook states stream");
                sleep_or_stop(&mut stopped).await;
            }
            Err(_) => return,
        }
    }
}

async fn sleep_or_stop(stopped: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)) => {}
        _ = stopped.changed() => {}
    }
}
