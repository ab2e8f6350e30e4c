//! The Kafka listener's fixed bounds, in one place (configurable ones are in `KafkaConfig`).
//! docs/ARCHITECTURE.md has the table.

/// Requests of one connection being handled or waiting to be written back. Beyond it the
/// connection is not read until the oldest response is written (TCP pushes back on the
/// client). librdkafka sends at most 5 per connection with idempotence (its default without
/// is far higher); the Java client's default is 5.
pub const CONNECTION_REQUESTS_IN_FLIGHT_MAX: usize = 32;

/// The longest a fetch may wait for `min_bytes` (Kafka clients ask 500 ms by default).
pub const FETCH_WAIT_MS_MAX: u64 = 60_000;

/// Bytes of record batches in one fetch response (Kafka's `fetch.max.bytes` default is
/// 50 MiB); larger asked sizes are cut to it.
pub const FETCH_RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Topics in one CreateTopics or DeleteTopics request: each is a directory and files.
pub const ADMIN_TOPICS_PER_REQUEST_MAX: usize = 256;

/// The smallest frame: api key, api version and correlation id.
pub const FRAME_HEADER_BYTES_MIN: usize = 8;

/// Consumer groups the coordinator holds in memory (groups with members).
pub const GROUPS_MAX: usize = 10_000;

/// Members (and member ids handed out, not yet joined) per group (Kafka:
/// `group.max.size` is unbounded by default).
pub const GROUP_MEMBERS_MAX: usize = 1000;

/// Session timeouts a member may ask for (Kafka: `group.min.session.timeout.ms` 6 s and
/// `group.max.session.timeout.ms` 30 min; the lower bound is smaller so tests can be quick).
pub const GROUP_SESSION_TIMEOUT_MS_MIN: u64 = 1000;
pub const GROUP_SESSION_TIMEOUT_MS_MAX: u64 = 30 * 60 * 1000;

/// A new group's first generation waits this long for more members to join (Kafka:
/// `group.initial.rebalance.delay.ms`, 3 s), so members starting together get one
/// assignment instead of one rebalance each.
pub const GROUP_INITIAL_REBALANCE_DELAY_MS: u64 = 500;

/// How often sessions and rebalance deadlines are checked.
pub const GROUP_TICK_MS: u64 = 100;

/// Groups in one DescribeGroups or OffsetFetch request.
pub const GROUPS_PER_REQUEST_MAX: usize = 256;

/// Batches whose sequences are kept per idempotent producer and partition: Kafka's 5, the
/// most a producer may have in flight with idempotence.
pub const PRODUCER_BATCHES_KEPT: usize = 5;

/// Idempotent producers remembered per partition.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;

/// How much of a partition's tail rebuilds its producer state after a restart.
pub const PRODUCER_TAIL_OFFSETS: u64 = 100_000;
pub const PRODUCER_TAIL_BYTES: usize = 16 * 1024 * 1024;

/// How long a client has to finish its TLS handshake before the connection is closed.
pub const TLS_HANDSHAKE_MS_MAX: u64 = 10_000;

/// Record errors listed in one partition's INVALID_RECORD answer (Produce v8+); the count of
/// invalid records is in the message.
pub const RECORD_ERRORS_MAX: usize = 100;
