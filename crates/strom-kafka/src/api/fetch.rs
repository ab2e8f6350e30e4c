//! Fetch: record batches served as stored in the segment files (CRC-checked by the read,
//! never decoded or re-encoded), with long polling on the partitions' visible ends.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::select_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use strom_log::{LogError, Stream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use crate::errors;
use crate::limits::{FETCH_RESPONSE_BYTES_MAX, FETCH_WAIT_MS_MAX};
use crate::server::Broker;

/// One partition asked for.
struct Target {
    topic: TopicName,
    index: i32,
    stream: Option<Arc<Stream>>,
    fetch_offset: i64,
    partition_max_bytes: usize,
}

/// What one read round found for one partition.
struct Found {
    error: Option<ResponseError>,
    batches: Vec<Bytes>,
    bytes: usize,
    log_start_offset: i64,
    log_end_offset: i64,
}

pub(super) async fn handle(
    broker: &Arc<Broker>,
    request: FetchRequest,
    version: i16,
) -> (FetchResponse, Option<OwnedSemaphorePermit>) {
    let mut response = FetchResponse::default();
    // Fetch sessions (KIP-227) are not kept: every fetch names its partitions, and a
    // session id of 0 in the answer tells the client so. A client that names a session
    // it thinks it has is told the session is gone and starts over with a full fetch.
    if version >= 7 && request.session_id != 0 {
        response.error_code = ResponseError::FetchSessionIdNotFound.code();
        return (response, None);
    }
    let response_bytes_max = usize::try_from(request.max_bytes).unwrap_or(0).clamp(1, FETCH_RESPONSE_BYTES_MAX);
    let min_bytes = usize::try_from(request.min_bytes).unwrap_or(0);
    let wait = Duration::from_millis(u64::try_from(request.max_wait_ms).unwrap_or(0).min(FETCH_WAIT_MS_MAX));
    let deadline = Instant::now() + wait;
    let mut targets = Vec::new();
    for topic in request.topics {
        let stream = broker.log.stream(topic.topic.as_str()).ok();
        for partition in topic.partitions {
            targets.push(Target {
                topic: topic.topic.clone(),
                index: partition.partition,
                stream: stream.clone(),
                fetch_offset: partition.fetch_offset,
                partition_max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
            });
        }
    }
    let targets = Arc::new(targets);
    let mut shutdown = broker.shutdown.clone();
    let (found, budget) = loop {
        let budget = match broker.fetch_bytes.clone().acquire_many_owned(response_bytes_max as u32).await {
            Ok(budget) => budget,
            Err(_) => return (response, None),
        };
        let reading = targets.clone();
        let found = tokio::task::spawn_blocking(move || read_all(&reading, response_bytes_max)).await;
        let Ok(found) = found else {
            // The read panicked (a bug): answer every partition with a storage error.
            let found = targets.iter().map(|_| failed(ResponseError::KafkaStorageError)).collect();
            break (found, None);
        };
        let bytes: usize = found.iter().map(|f| f.bytes).sum();
        let any_error = found.iter().any(|f| f.error.is_some());
        if bytes >= min_bytes || any_error || Instant::now() >= deadline || *shutdown.borrow() {
            let mut budget = budget;
            // Only what the response holds stays taken from the budget.
            let held = budget.split(bytes.min(response_bytes_max));
            break (found, held);
        }
        drop(budget);
        // Wait for any partition's visible end to move past what this round saw.
        let remaining = deadline.saturating_duration_since(Instant::now());
        let waits: Vec<_> = targets
            .iter()
            .zip(&found)
            .filter_map(|(target, found)| {
                let partition = target.stream.as_ref()?.partition(u32::try_from(target.index).ok()?).ok()?;
                let end = u64::try_from(found.log_end_offset).ok()?;
                Some(Box::pin(partition.wait_for(end, remaining)))
            })
            .collect();
        if waits.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.wait_for(|stopping| *stopping) => {}
            }
        } else {
            tokio::select! {
                _ = select_all(waits) => {}
                _ = shutdown.wait_for(|stopping| *stopping) => {}
            }
        }
    };
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for (target, found) in targets.iter().zip(found) {
        let mut partition = PartitionData::default();
        partition.partition_index = target.index;
        match found.error {
            Some(error) => {
                partition.error_code = error.code();
                partition.high_watermark = -1;
            }
            None => {
                partition.high_watermark = found.log_end_offset;
                partition.last_stable_offset = found.log_end_offset;
                if version >= 5 {
                    partition.log_start_offset = found.log_start_offset;
                }
                partition.records = Some(concatenate(found.batches, found.bytes));
            }
        }
        match topics.last_mut() {
            Some(topic) if topic.topic == target.topic => topic.partitions.push(partition),
            _ => {
                let mut topic = FetchableTopicResponse::default();
                topic.topic = target.topic.clone();
                topic.partitions = vec![partition];
                topics.push(topic);
            }
        }
    }
    response.responses = topics;
    (response, budget)
}

fn failed(error: ResponseError) -> Found {
    Found { error: Some(error), batches: Vec::new(), bytes: 0, log_start_offset: -1, log_end_offset: -1 }
}

/// One read round over every partition (blocking file reads). Kafka's size rules: a
/// partition gets at most its `partition_max_bytes` and the response at most `response_max`,
/// except that the first batch of the first partition with data is served even when larger.
fn read_all(targets: &[Target], response_max: usize) -> Vec<Found> {
    let mut taken = 0usize;
    targets
        .iter()
        .map(|target| {
            let Some(stream) = &target.stream else { return failed(ResponseError::UnknownTopicOrPartition) };
            let Some(partition) = u32::try_from(target.index).ok().and_then(|id| stream.partition(id).ok()) else {
                return failed(ResponseError::UnknownTopicOrPartition);
            };
            let Ok(from) = u64::try_from(target.fetch_offset) else { return failed(ResponseError::OffsetOutOfRange) };
            let budget = target.partition_max_bytes.min(response_max.saturating_sub(taken));
            let ends = |start: u64, end: u64| (start as i64, end as i64);
            if budget == 0 && taken > 0 {
                let (log_start_offset, log_end_offset) = ends(partition.log_start_offset(), partition.log_end_offset());
                return Found { error: None, batches: Vec::new(), bytes: 0, log_start_offset, log_end_offset };
            }
            match partition.read(from, usize::MAX, budget.max(1)) {
                Ok(read) => {
                    let mut batches = Vec::with_capacity(read.batches.len());
                    let mut bytes = 0usize;
                    for batch in read.batches {
                        let oversized_first = taken == 0 && bytes == 0;
                        if bytes + batch.len() > budget && !oversized_first {
                            break;
                        }
                        bytes += batch.len();
                        batches.push(batch);
                    }
                    taken += bytes;
                    let (log_start_offset, log_end_offset) = ends(read.log_start_offset, read.log_end_offset);
                    Found { error: None, batches, bytes, log_start_offset, log_end_offset }
                }
                Err(error) => {
                    if !matches!(error, LogError::OffsetOutOfRange { .. }) {
                        tracing::warn!(stream = %stream.name, partition = target.index, %error, "fetch failed");
                    }
                    failed(errors::code(&error))
                }
            }
        })
        .collect()
}

/// The batches back to back, as the records field carries them (one batch needs no copy).
fn concatenate(batches: Vec<Bytes>, bytes: usize) -> Bytes {
    if batches.len() == 1 {
        return batches.into_iter().next().unwrap_or_default();
    }
    let mut out = BytesMut::with_capacity(bytes);
    for batch in batches {
        out.extend_from_slice(&batch);
    }
    out.freeze()
}
