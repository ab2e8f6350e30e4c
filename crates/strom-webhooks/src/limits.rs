//! Every bound of webhook delivery, in one place.

/// Destinations in one configuration.
pub const DESTINATIONS_MAX: usize = 256;
/// Concurrent deliveries to one destination.
pub const CONCURRENCY_MAX: usize = 256;
/// Delivery requests read ahead of the ones in flight, per destination.
pub const READ_AHEAD_MAX: usize = 256;
/// Bytes read from the deliveries stream at once, per destination.
pub const READ_BYTES_MAX: usize = 1024 * 1024;
/// Largest delivery request (its payload is the body of the POST).
pub const REQUEST_BYTES_MAX: usize = 1024 * 1024;
/// Longest per-attempt timeout.
pub const TIMEOUT_MS_MAX: u64 = 300_000;
/// Longest retry horizon: a delivery older than this is dead-lettered.
pub const RETRY_HORIZON_MS_MAX: u64 = 7 * 24 * 3_600_000;
/// Extra headers per destination.
pub const HEADERS_MAX: usize = 32;
/// How often a destination's progress is committed while deliveries complete.
pub const COMMIT_INTERVAL_MS: u64 = 200;
/// How long a caught-up destination waits for new requests before it looks again.
pub const IDLE_WAIT_MS: u64 = 1000;
/// Bytes of a failed response's body kept for the error message and the dead letter.
pub const ERROR_BODY_BYTES_MAX: usize = 512;
