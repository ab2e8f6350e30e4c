//! Produce: each partition's record batch is checked and appended as the producer built it.
//!
//! acks=all (-1) waits for the fsync covering the batch (`Durability::Sync`): Strom's promise.
//! acks=1 is answered once the batch is written to the page cache (`Durability::Buffered`):
//! like a Kafka leader's acks=1 it survives a crash of the process, not of the machine, and
//! it is fsync'd within `log.flush_interval_ms`. acks=0 is appended like acks=1, unanswered.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use strom_log::compression::{DECOMPRESSED_BYTES_MAX, DecompressError, codec_name, decompress_batch};
use strom_log::{BatchHeader, Durability, EncodedBatch, LogError, PendingAppend, RecordIn, RecordOut};
use tokio::sync::watch;

use crate::config::InvalidRecords;
use crate::errors;
use crate::limits::RECORD_ERRORS_MAX;
use crate::producers::Admitted;
use crate::server::Broker;

pub(super) enum Answer {
    Respond(Pin<Box<dyn Future<Output = ProduceResponse> + Send>>),
    /// acks=0: appended, never answered.
    Silent(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// What was queued for one partition's batch: its base offset once durable as asked, or -1
/// when all of its records went to the dead-letter stream.
pub(crate) type Pending = Pin<Box<dyn Future<Output = Result<i64, LogError>> + Send>>;

pub(crate) fn pending(append: PendingAppend) -> Pending {
    Box::pin(async move { append.await.map(|appended| appended.base_offset as i64) })
}

/// The header of dead-lettered records: why, as JSON (the collector's header too).
pub const DEAD_LETTER_HEADER: &str = "strom-dead-letter";

/// One partition's outcome: refused at once, or queued and awaiting the log.
enum Outcome {
    Refused(ResponseError, String),
    /// Refused because records do not match the stream's schema: which ones and why.
    Invalid(String, Vec<(i32, String)>),
    Queued(Pending),
    /// An idempotent producer's batch: the offset is also told to its retries.
    QueuedIdempotent {
        pending: Pending,
        offset: watch::Sender<Option<Result<i64, ResponseError>>>,
        retry_key: RetryKey,
    },
    /// A retry of a batch already taken.
    Duplicate(watch::Receiver<Option<Result<i64, ResponseError>>>),
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
                    Outcome::Invalid(message, records) => {
                        if version >= 8 {
                            out.record_errors = records
                                .into_iter()
                                .map(|(index, why)| {
                                    let mut error = BatchIndexAndErrorMessage::default();
                                    error.batch_index = index;
                                    error.batch_index_error_message = Some(StrBytes::from_string(why));
                                    error
                                })
                                .collect();
                        }
                        Err((ResponseError::InvalidRecord, message))
                    }
                    Outcome::Queued(pending) => {
                        pending.await.map_err(|error| (errors::code(&error), error.to_string()))
                    }
                    Outcome::QueuedIdempotent { pending, offset, retry_key } => {
                        let result = pending.await;
                        let _ = offset.send(Some(result.as_ref().map(|o| *o).map_err(errors::code)));
                        if result.is_err() {
                            let RetryKey { stream, partition, producer_id, first_sequence } = retry_key;
                            broker.producers.failed(&stream, partition, producer_id, first_sequence);
                        }
                        result.map_err(|error| (errors::code(&error), error.to_string()))
                    }
                    Outcome::Duplicate(mut offset) => match offset.wait_for(Option::is_some).await.map(|o| *o) {
                        Ok(Some(Ok(base_offset))) => Ok(base_offset),
                        Ok(Some(Err(code))) => Err((code, "the first copy of this batch failed".to_string())),
                        // The first copy's request went away before its answer: retry.
                        Ok(None) | Err(_) => Err((ResponseError::RequestTimedOut, "retry".to_string())),
                    },
                };
                match result {
                    Ok(base_offset) => out.base_offset = base_offset,
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
    if header.is_transactional() || header.is_control() {
        return Outcome::Refused(ResponseError::InvalidRecord, "transactional batches are not supported".into());
    }
    // A compressed batch is stored decompressed (bounded); otherwise the batch is copied out
    // of the request frame as it is: the writer patches its base offset.
    let compressed = header.compression() != 0;
    let taken = match decompress_batch(&records, DECOMPRESSED_BYTES_MAX) {
        Ok(Some(decompressed)) => {
            metrics::counter!("strom_kafka_compressed_batches_total", "codec" => codec_name(header.compression()))
                .increment(1);
            decompressed
        }
        Ok(None) => BytesMut::from(&records[..]),
        Err(error) => {
            let code = match error {
                DecompressError::UnknownCodec(_) => ResponseError::UnsupportedCompressionType,
                DecompressError::TooLarge { .. } => ResponseError::MessageTooLarge,
                DecompressError::Corrupt(_) => ResponseError::CorruptMessage,
            };
            return Outcome::Refused(code, error.to_string());
        }
    };
    let batch = match EncodedBatch::from_client(taken) {
        Ok(batch) => batch,
        Err(LogError::InvalidBatch(why)) => return Outcome::Refused(ResponseError::CorruptMessage, why),
        Err(error) => return Outcome::Refused(errors::code(&error), error.to_string()),
    };
    // Catalog enforcement: only streams with a schema have their batches decoded.
    let stored = match broker.validator.as_ref().and_then(|validator| validator.schema(&stream.name)) {
        None => Stored::AsSent(batch),
        Some(schema) => {
            // The records as stored: a compressed batch's decompressed ones.
            let records = if compressed { Bytes::copy_from_slice(batch.as_slice()) } else { records };
            match check(broker, stream, partition.id(), &records, schema.as_ref()) {
                Checked::Valid => Stored::AsSent(batch),
                Checked::Refused(outcome) => return outcome,
                Checked::Split { valid, dead, dead_stream, dead_partition } => {
                    Stored::Split { valid, dead, dead_stream, dead_partition }
                }
            }
        }
    };
    let submit = move || -> Result<Pending, LogError> {
        match stored {
            Stored::AsSent(batch) => partition.submit(batch, durability).map(pending),
            Stored::Split { valid, dead, dead_stream, dead_partition } => {
                // Dead letters first: a failure after them leaves extra dead letters on a
                // retry (at least once), never a valid record without its invalid siblings'.
                let dead = dead_stream.partition(dead_partition)?.submit(dead, durability)?;
                let valid = valid.map(|batch| partition.submit(batch, durability)).transpose()?;
                Ok(Box::pin(async move {
                    dead.await?;
                    match valid {
                        Some(valid) => valid.await.map(|appended| appended.base_offset as i64),
                        None => Ok(-1),
                    }
                }))
            }
        }
    };
    if header.producer_id >= 0 {
        return match broker.producers.admit(&stream.name, partition, header, submit) {
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
    match submit() {
        Ok(pending) => Outcome::Queued(pending),
        Err(error) => Outcome::Refused(errors::code(&error), error.to_string()),
    }
}

/// What is appended for a partition's batch.
enum Stored {
    /// The batch as the producer built it (decompressed, if it was compressed).
    AsSent(EncodedBatch),
    /// Its valid records (re-encoded, none left: nothing) and the dead letters of the others.
    Split { valid: Option<EncodedBatch>, dead: EncodedBatch, dead_stream: Arc<strom_log::Stream>, dead_partition: u32 },
}

enum Checked {
    Valid,
    Refused(Outcome),
    Split { valid: Option<EncodedBatch>, dead: EncodedBatch, dead_stream: Arc<strom_log::Stream>, dead_partition: u32 },
}

/// Checks every record value of a batch against the stream's schema.
fn check(
    broker: &Broker,
    stream: &strom_log::Stream,
    partition: u32,
    records: &Bytes,
    schema: &dyn crate::ValueSchema,
) -> Checked {
    let decoded = match strom_log::decode_records(records.clone()) {
        Ok(decoded) => decoded,
        Err(why) => return Checked::Refused(Outcome::Refused(ResponseError::CorruptMessage, why)),
    };
    let verdicts: Vec<Result<(), String>> =
        decoded.iter().map(|record| schema.check(record.value.as_deref())).collect();
    let invalid = verdicts.iter().filter(|verdict| verdict.is_err()).count();
    if invalid == 0 {
        return Checked::Valid;
    }
    let mode = broker.config.invalid_records_for(&stream.name);
    let label = match mode {
        InvalidRecords::Reject => "rejected",
        InvalidRecords::DeadLetter => "dead_lettered",
    };
    metrics::counter!("strom_kafka_invalid_records_total", "stream" => stream.name.clone(), "outcome" => label)
        .increment(invalid as u64);
    let described = schema.describe();
    if mode == InvalidRecords::Reject {
        let errors: Vec<(i32, String)> = verdicts
            .iter()
            .enumerate()
            .filter_map(|(index, verdict)| verdict.as_ref().err().map(|why| (index as i32, why.clone())))
            .take(RECORD_ERRORS_MAX)
            .collect();
        let first = errors.first().map_or(String::new(), |(index, why)| format!("; record {index}: {why}"));
        let message = format!("{invalid} of {} records do not match {described}{first}", decoded.len());
        return Checked::Refused(Outcome::Invalid(message, errors));
    }
    let dead_stream = match broker.log.stream(&broker.config.dead_letter_stream) {
        Ok(dead_stream) => dead_stream,
        Err(error) => {
            return Checked::Refused(Outcome::Refused(errors::code(&error), format!("dead-letter stream: {error}")));
        }
    };
    // One dead-letter partition per source partition keeps each one's order.
    let dead_partition_id = partition % dead_stream.partitions().len() as u32;
    let mut valid = Vec::new();
    let mut dead = Vec::new();
    for (record, verdict) in decoded.into_iter().zip(verdicts) {
        let mut record_in = record_in(record);
        match verdict {
            Ok(()) => valid.push(record_in),
            Err(why) => {
                let reason = serde_json::json!({
                    "reason": "invalid_schema",
                    "source": "kafka",
                    "stream": stream.name,
                    "partition": partition,
                    "schema": described,
                    "violations": why,
                });
                record_in.headers.push((DEAD_LETTER_HEADER.to_string(), Bytes::from(reason.to_string())));
                dead.push(record_in);
            }
        }
    }
    let encode = |records: &[RecordIn]| EncodedBatch::encode(records);
    let valid = match valid.is_empty() {
        true => None,
        false => match encode(&valid) {
            Ok(batch) => Some(batch),
            Err(error) => return Checked::Refused(Outcome::Refused(errors::code(&error), error.to_string())),
        },
    };
    match encode(&dead) {
        Ok(dead) => Checked::Split { valid, dead, dead_stream, dead_partition: dead_partition_id },
        Err(error) => Checked::Refused(Outcome::Refused(errors::code(&error), error.to_string())),
    }
}

fn record_in(record: RecordOut) -> RecordIn {
    RecordIn {
        key: record.key,
        value: record.value,
        timestamp_ms: record.timestamp_ms,
        // A header with a null value is kept with an empty one.
        headers: record.headers.into_iter().map(|(key, value)| (key, value.unwrap_or_default())).collect(),
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
