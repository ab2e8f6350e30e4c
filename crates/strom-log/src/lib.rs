//! Strom's embedded durable log.
//!
//! Streams (Kafka: topics) of partitions; each partition is a sequence of segments in Kafka's
//! RecordBatch v2 format with sparse offset and time indexes. One writer task per partition
//! owns appends and commits them in groups (one write and one fdatasync for every append that
//! queued while the previous sync ran). Readers read segment files directly, verify every
//! batch's CRC-32C, and never see past what the writer made visible.
//!
//! The same API can sit on a remote log instead (`LogConfig::remote`: Apache Kafka through
//! `strom-kafka`'s backend); see `remote.rs` for what differs.
//!
//! Architecture invariants:
//! - Nothing is acknowledged before the durability the caller asked for.
//! - A failed write or fsync poisons the partition; it is never retried on the same pages.
//! - A damaged range is never served and never cut away, except the unsynced tail of the
//!   active segment at recovery (which was never acknowledged as synced).

mod batch;
mod clock;
pub mod compression;
mod error;
mod groups;
mod index;
pub mod limits;
mod log;
mod partition;
pub mod partitioner;
mod remote;
pub mod rfc3339;
mod segment;
mod share;
mod stream;

pub use batch::{BatchHeader, EncodedBatch, RecordIn, RecordOut, decode_records};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{LogError, Result};
pub use groups::{CommitMode, GroupOffsets};
pub use log::{Log, LogConfig};
pub use partition::{Appended, Durability, Partition, PartitionStatus, PendingAppend, ReadBatches, ReadRecords};
pub use remote::{Remote, RemoteFuture};
pub use share::{Fence, Lease, Membership, Share, ShareHandle};
pub use stream::{Stream, StreamConfig, validate_stream_name};
