//! A delivery request: one record of the deliveries stream, appended by whoever wants a
//! webhook sent (the rules engine), keyed by the destination's name.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strom_log::RecordIn;

/// The header of dead-lettered deliveries: why, as JSON.
pub const REASON_HEADER: &str = "strom-dead-letter";

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct DeliveryRequest {
    /// The idempotency key: `webhook-id`, the same on every attempt, so receivers deduplicate.
    pub id: String,
    pub destination: String,
    /// The rule that asked for it, when a rule did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The body of the POST.
    pub payload: serde_json::Value,
}

impl DeliveryRequest {
    /// The record to append to the deliveries stream. Its partition must be
    /// `strom_log::partitioner::partition_for_key(destination, partitions)`: a destination's
    /// worker reads only that one.
    pub fn record(&self, timestamp_ms: i64) -> RecordIn {
        RecordIn {
            key: Some(Bytes::copy_from_slice(self.destination.as_bytes())),
            // Serialising a Value-bearing struct with string keys cannot fail.
            value: Some(Bytes::from(serde_json::to_vec(self).unwrap_or_default())),
            timestamp_ms,
            headers: Vec::new(),
        }
    }
}
