//! Every bound the log enforces, in one place. docs/ARCHITECTURE.md has the table.

/// Bytes of one record batch (one append). Kafka's `message.max.bytes` is 1 MiB; Strom allows
/// more because an HTTP request's events for one partition become one batch, which can be up
/// to twice the body (each event's key is copied out of it) plus per-record overhead.
pub const BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;

/// Records in one batch.
pub const BATCH_RECORDS_MAX: usize = 100_000;

/// Append requests waiting for a partition's writer. A full queue answers `Overloaded` at
/// once instead of queueing without bound (the HTTP layer turns it into 429).
pub const APPEND_QUEUE_MAX: usize = 1024;

/// Bytes of batches waiting in one partition's queue (a single batch is always accepted by an
/// empty queue). With `APPEND_QUEUE_MAX` this bounds a partition's queued memory.
pub const QUEUE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes the writer takes into one group commit (one write, one fsync). Bounds the latency of
/// the requests that share the group and the writer's buffer.
pub const GROUP_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Segment size bounds. Index entries store positions as u32, hence the upper bound.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// A sparse index entry is written every this many bytes of log (Kafka: index.interval.bytes).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;

/// Partitions per stream, and streams per log: each partition owns a writer task and open
/// files, so their number is bounded.
pub const PARTITIONS_PER_STREAM_MAX: u32 = 256;
pub const STREAMS_MAX: usize = 1024;

/// Bytes one read may return (a single batch larger than the asked bytes is still returned
/// whole, as Kafka does, but never more than `BATCH_BYTES_MAX`).
pub const READ_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Bytes read from a segment file per system call when scanning or serving.
pub const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// Length of a stream name (Kafka's topic name limit).
pub const STREAM_NAME_BYTES_MAX: usize = 249;

/// A remote log's watermarks are refreshed this often for partitions somebody waits on
/// (`Partition::wait_for`): the delay before a long poll sees another writer's records.
pub const REMOTE_WAIT_POLL_MS: u64 = 50;
/// ... and this often for every partition (lag metrics, reads' range checks).
pub const REMOTE_IDLE_POLL_MS: u64 = 1000;
/// Streams created or deleted on the remote by others are seen within this.
pub const REMOTE_STREAMS_POLL_MS: u64 = 5000;
/// A stream deleted here is not taken back from the remote's listing for this long (Kafka
/// deletes topics asynchronously, and its metadata may list one for a while).
pub const REMOTE_DELETED_GRACE_MS: u64 = 60_000;

/// How long taking a shared partition away from this process waits for its workers to commit
/// and stop before the partition is handed over anyway (`share.rs`).
pub const SHARE_HANDOVER_MS: u64 = 30_000;
