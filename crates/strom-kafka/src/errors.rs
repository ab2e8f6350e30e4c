//! The log's errors as Kafka error codes, in one place.

use kafka_protocol::ResponseError;
use strom_log::LogError;

/// The Kafka error a client gets for a log error. Retriable codes are chosen where a retry
/// can succeed (overload, shutdown), so clients back off and retry instead of failing.
pub(crate) fn code(error: &LogError) -> ResponseError {
    match error {
        LogError::StreamNotFound(_) | LogError::PartitionNotFound { .. } => ResponseError::UnknownTopicOrPartition,
        LogError::StreamExists(_) => ResponseError::TopicAlreadyExists,
        LogError::InvalidStreamName { .. } => ResponseError::InvalidTopicException,
        LogError::InvalidConfig(_) => ResponseError::InvalidConfig,
        LogError::TooManyStreams { .. } => ResponseError::PolicyViolation,
        LogError::InvalidBatch(_) => ResponseError::CorruptMessage,
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        // Kafka has no "busy" error for produce; REQUEST_TIMED_OUT is retriable, and an
        // idempotent producer retries it with the same sequence, so nothing is duplicated.
        LogError::Overloaded { .. } => ResponseError::RequestTimedOut,
        // The partition stops taking writes until an operator repairs it: a storage error,
        // as Kafka reports an offline log directory.
        LogError::Poisoned { .. } | LogError::CorruptRecords { .. } | LogError::Io { .. } => {
            ResponseError::KafkaStorageError
        }
        // Shutting down: the client reconnects (to the restarted server) and retries.
        LogError::Closed => ResponseError::NotLeaderOrFollower,
        LogError::OffsetRegression { .. } | LogError::GroupStore(_) | LogError::Unsupported(_) => {
            ResponseError::UnknownServerError
        }
        // The listener serves the embedded log only; kept exhaustive for the day it does not.
        LogError::Remote(_) => ResponseError::KafkaStorageError,
    }
}
