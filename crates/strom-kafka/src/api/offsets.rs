//! ListOffsets: earliest (-2), latest (-1), or the first offset at or after a timestamp.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use strom_log::Stream;

use crate::errors;
use crate::server::Broker;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;

pub(super) async fn list_offsets(
    broker: &Arc<Broker>,
    request: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let mut asked = Vec::new();
    for topic in request.topics {
        let stream = broker.log.stream(topic.name.as_str()).ok();
        let partitions: Vec<(i32, i64)> = topic.partitions.iter().map(|p| (p.partition_index, p.timestamp)).collect();
        asked.push((topic.name, stream, partitions));
    }
    // Timestamp look-ups read segment indexes and files: blocking I/O.
    let answered = tokio::task::spawn_blocking(move || {
        asked
            .into_iter()
            .map(|(name, stream, partitions)| {
                let mut topic = ListOffsetsTopicResponse::default();
                topic.name = name;
                topic.partitions = partitions
                    .into_iter()
                    .map(|(index, timestamp)| {
                        let mut out = ListOffsetsPartitionResponse::default();
                        out.partition_index = index;
                        match look_up(stream.as_deref(), index, timestamp) {
                            Ok((timestamp, offset)) => {
                                out.timestamp = timestamp;
                                out.offset = offset;
                                if version >= 4 {
                                    out.leader_epoch = 0;
                                }
                            }
                            Err(error) => out.error_code = error.code(),
                        }
                        out
                    })
                    .collect();
                topic
            })
            .collect()
    })
    .await;
    let mut response = ListOffsetsResponse::default();
    response.topics = answered.unwrap_or_default();
    response
}

/// (timestamp, offset) for one partition; -1, -1 when no record is that recent.
fn look_up(stream: Option<&Stream>, index: i32, timestamp: i64) -> Result<(i64, i64), ResponseError> {
    let stream = stream.ok_or(ResponseError::UnknownTopicOrPartition)?;
    let partition = u32::try_from(index)
        .ok()
        .and_then(|id| stream.partition(id).ok())
        .ok_or(ResponseError::UnknownTopicOrPartition)?;
    match timestamp {
        LATEST => Ok((-1, partition.log_end_offset() as i64)),
        EARLIEST => Ok((-1, partition.log_start_offset() as i64)),
        timestamp if timestamp >= 0 => {
            let offset = partition.offset_for_timestamp(timestamp).map_err(|error| errors::code(&error))?;
            let Some(offset) = offset else { return Ok((-1, -1)) };
            // Kafka answers the found record's own timestamp.
            let read = partition.read_records(offset, 1, 1).map_err(|error| errors::code(&error))?;
            let found = read.records.first().map_or(-1, |record| record.timestamp_ms);
            Ok((found, offset as i64))
        }
        // -3 (max timestamp) and -4 (tiered storage) need versions not served.
        _ => Err(ResponseError::InvalidRequest),
    }
}
