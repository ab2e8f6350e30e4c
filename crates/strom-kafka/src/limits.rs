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
