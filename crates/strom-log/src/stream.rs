use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{LogError, Result};
use crate::limits::{PARTITIONS_PER_STREAM_MAX, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, STREAM_NAME_BYTES_MAX};
use crate::partition::Partition;

/// A stream's settings, fixed at creation and stored beside its partitions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub partitions: u32,
    /// Sealed segments whose newest record is older than this are deleted. `None`: forever.
    pub retention_ms: Option<u64>,
    /// Oldest sealed segments are deleted while the partition is over this. `None`: no bound.
    pub retention_bytes: Option<u64>,
    /// The active segment is rolled before it would exceed this.
    pub segment_bytes: u64,
    /// The active segment is rolled once it is this old.
    pub segment_ms: u64,
}

impl Default for StreamConfig {
    fn default() -> StreamConfig {
        StreamConfig {
            partitions: 1,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
        }
    }
}

impl StreamConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |why: String| Err(LogError::InvalidConfig(why));
        if !(1..=PARTITIONS_PER_STREAM_MAX).contains(&self.partitions) {
            return fail(format!("partitions must be 1 to {PARTITIONS_PER_STREAM_MAX}, not {}", self.partitions));
        }
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return fail(format!(
                "segment_bytes must be {SEGMENT_BYTES_MIN} to {SEGMENT_BYTES_MAX}, not {}",
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 || self.segment_ms > i64::MAX as u64 {
            return fail(format!("segment_ms must be positive, not {}", self.segment_ms));
        }
        if self.retention_ms.is_some_and(|ms| ms == 0 || ms > i64::MAX as u64) {
            return fail("retention_ms must be positive or null".into());
        }
        if self.retention_bytes == Some(0) {
            return fail("retention_bytes must be positive or null".into());
        }
        Ok(())
    }
}

/// Checks a stream name by Kafka's topic rules, so every stream can be a Kafka topic.
pub fn validate_stream_name(name: &str) -> Result<()> {
    let why = if name.is_empty() {
        Some("it is empty")
    } else if name.len() > STREAM_NAME_BYTES_MAX {
        Some("it is longer than 249 bytes")
    } else if name == "." || name == ".." {
        Some("'.' and '..' are reserved")
    } else if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        Some("only ASCII letters, digits, '.', '_' and '-' are allowed")
    } else {
        None
    };
    match why {
        Some(why) => Err(LogError::InvalidStreamName { name: name.to_string(), why }),
        None => Ok(()),
    }
}

pub struct Stream {
    pub name: String,
    pub config: StreamConfig,
    pub(crate) dir: PathBuf,
    pub(crate) partitions: Vec<Partition>,
}

impl Stream {
    pub fn partitions(&self) -> &[Partition] {
        &self.partitions
    }

    pub fn partition(&self, id: u32) -> Result<&Partition> {
        self.partitions
            .get(id as usize)
            .ok_or_else(|| LogError::PartitionNotFound { stream: self.name.clone(), partition: id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_topic_rules() {
        for good in ["clicks", "shop.orders-v2", "a_b", &"x".repeat(249)] {
            assert!(validate_stream_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(validate_stream_name(bad).is_err(), "{bad}");
        }
    }
}
