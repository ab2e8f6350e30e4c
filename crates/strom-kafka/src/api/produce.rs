//! Produce: each partition's record batch is checked and appended as the producer built it.
//!
//! acks=all (-1) waits for the fsync covering the batch (`Durability::Sync`): Strom's promise.
//! acks=1 is answered once the batch is written to the page cache (`Durability::Buffered`):
//! like a Kafka leader's acks=1 it survives a crash of the process, not of the machine, and
//! it is fsync'd within `log.flush_interval_ms`. acks=0 is appended like acks=1, unanswered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use strom_log::{BatchHeader, Durability, EncodedBatch, LogError, PendingAppend};
use tokio::sync::watch;

use crate::errors;
use crate::producers::Admitted;
use crate::server::Broker;

pub(super) enum Answer {
    Respond(Pin<Box<dyn Future<Output = ProduceResponse> + Send>>),
    /// acks=0: appended, never answered.
    Silent(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// One partition's outcome: refused at once, or queued and awaiting the log.
enum Outcome {
    Refused(ResponseError, String),
    Queued(PendingAppend),
    /// An idempotent producer's batch: the offset is also told to its retries.
    QueuedIdempotent {
        pending: PendingAppend,
        offset: watch::Sender<Option<Result<u64, ResponseError>>>,
        retry_key: RetryKey,
    },
    /// A retry of a batch already taken.
    Duplicate(watch::Receiver<Option<Result<u64, ResponseError>>>),
}

/// What identifies an idempotent batch to forget when its append fails.
struct RetryKey {
    stream: String,
    partition: u32,
    producer_id: i64,
    first_sequence: i32,
}

/// Checks and queues every partition's batch now (so that one connection's batches reach a
/// partition in request order) and returns the future of the answer.
pub(super) fn handle(broker: &Arc<Broker>, request: ProduceRequest, version: i16) -> Answer {
    let durability = match request.acks {
        -1 => Ok(Durability::Sync),
        0 | 1 => Ok(Durability::Buffered),
        acks => Err((ResponseError::InvalidRequiredAcks, format!("acks must be -1, 0 or 1, not {acks}"))),
    };
    let durability = match (durability, &request.transactional_id) {
        (Ok(_), Some(_)) => {
            Err((ResponseError::TransactionalIdAuthorizationFailed, "transactions are not supported".into()))
        }
        (durability, _) => durability,
    };
    let silent = request.acks == 0;
    let mut topics = Vec::with_capacity(request.topic_data.len());
    for topic in request.topic_data {
        let stream = broker.log.stream(topic.name.as_str());
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for data in topic.partition_data {
            let outcome = match (&durability, &stream) {
                (Err((code, message)), _) => Outcome::Refused(*code, message.clone()),
                (_, Err(error)) => Outcome::Refused(errors::code(error), error.to_string()),
                (Ok(durability), Ok(stream)) => append(broker, stream, data.index, data.records, *durability),
            };
            partitions.push((data.index, outcome));
        }
        topics.push((topic.name, partitions));
    }
    let broker = broker.clone();
    let answer = async move {
        let mut response = ProduceResponse::default();
        for (name, partitions) in topics {
            let broker = &broker;
            let answers = join_all(partitions.into_iter().map(|(index, outcome)| async move {
                let mut out = PartitionProduceResponse::default();
                out.index = index;
                let result = match outcome {
                    Outcome::Refused(code, message) => Err((code, message)),
                    Outcome::Queued(pending) => {
                        pending.await.map(|a| a.base_offset).map_err(|error| (errors::code(&error), error.to_string()))
                    }
                    Outcome::QueuedIdempotent { pending, offset, retry_key } => {
                        let result = pending.await;
                        let _ = offset.send(Some(result.as_ref().map(|a| a.base_offset).map_err(errors::code)));
                        if result.is_err() {
                            let RetryKey { stream, partition, producer_id, first_sequence } = retry_key;
                            broker.producers.failed(&stream, partition, producer_id, first_sequence);
                        }
                        result.map(|a| a.base_offset).map_err(|error| (errors::code(&error), error.to_string()))
                    }
                    Outcome::Duplicate(mut offset) => match offset.wait_for(Option::is_some).await.map(|o| *o) {
                        Ok(Some(Ok(base_offset))) => Ok(base_offset),
                        Ok(Some(Err(code))) => Err((code, "the first copy of this batch failed".to_string())),
                        // The first copy's request went away before its answer: retry.
                        Ok(None) | Err(_) => Err((ResponseError::RequestTimedOut, "retry".to_string())),
                    },
                };
                match result {
                    Ok(base_offset) => out.base_offset = base_offset as i64,
                    Err((code, message)) => {
                        tracing::debug!(index, %message, "produce refused");
                        out.error_code = code.code();
                        out.base_offset = -1;
                        if version >= 8 {
                            out.error_message = Some(StrBytes::from_string(message));
                        }
                    }
                }
                out
            }))
            .await;
            let mut topic = TopicProduceResponse::default();
            topic.name = name;
            topic.partition_responses = answers;
            response.responses.push(topic);
        }
        response
    };
    if silent {
        Answer::Silent(Box::pin(async move {
            let _ = answer.await;
        }))
    } else {
        Answer::Respond(Box::pin(answer))
    }
}

fn append(
    broker: &Broker,
    stream: &strom_log::Stream,
    index: i32,
    records: Option<bytes::Bytes>,
    durability: Durability,
) -> Outcome {
    let partition = match u32::try_from(index).map_err(|_| ()).and_then(|id| stream.partition(id).map_err(|_| ())) {
        Ok(partition) => partition,
        Err(()) => {
            return Outcome::Refused(
                ResponseError::UnknownTopicOrPartition,
                format!("{} has no partition {index}", stream.name),
            );
        }
    };
    let Some(records) = records.filter(|records| !records.is_empty()) else {
        return Outcome::Refused(ResponseError::InvalidRecord, "no record batch".into());
    };
    let header = match BatchHeader::parse(&records) {
        Ok(header) => header,
        Err(why) => return Outcome::Refused(ResponseError::CorruptMessage, why),
    };
    if header.compression() != 0 {
        return Outcome::Refused(
            ResponseError::UnsupportedCompressionType,
            format!(
                "compression codec {} is not supported: produce uncompressed batches (compression.type=none)",
                header.compression()
            ),
        );
    }
    if header.is_transactional() || header.is_control() {
        return Outcome::Refused(ResponseError::InvalidRecord, "transactional batches are not supported".into());
    }
    // The batch is copied out of the request frame: the writer patches its base offset.
    let batch = match EncodedBatch::from_client(BytesMut::from(&records[..])) {
        Ok(batch) => batch,
        Err(LogError::InvalidBatch(why)) => return Outcome::Refused(ResponseError::CorruptMessage, why),
        Err(error) => return Outcome::Refused(errors::code(&error), error.to_string()),
    };
    if header.producer_id >= 0 {
        return match broker.producers.admit(&stream.name, partition, batch, durability) {
            Admitted::Queued(pending, offset) => Outcome::QueuedIdempotent {
                pending,
                offset,
                retry_key: RetryKey {
                    stream: stream.name.clone(),
                    partition: partition.id(),
                    producer_id: header.producer_id,
                    first_sequence: header.base_sequence,
                },
            },
            Admitted::Duplicate(offset) => Outcome::Duplicate(offset),
            Admitted::Refused(code, why) => Outcome::Refused(code, why),
        };
    }
    match partition.submit(batch, durability) {
        Ok(pending) => Outcome::Queued(pending),
        Err(error) => Outcome::Refused(errors::code(&error), error.to_string()),
    }
}

/// InitProducerId for idempotent producers; transactions are not supported.
pub(super) fn init_producer_id(
    broker: &Broker,
    request: kafka_protocol::messages::InitProducerIdRequest,
) -> kafka_protocol::messages::InitProducerIdResponse {
    let mut response = kafka_protocol::messages::InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        response.error_code = ResponseError::TransactionalIdAuthorizationFailed.code();
        return response;
    }
    let (id, epoch) = broker.producers.init(request.producer_id.0, request.producer_epoch);
    response.producer_id = kafka_protocol::messages::ProducerId(id);
    response.producer_epoch = epoch;
    response
}
