//! Every bound of the lake, in one place (docs/ARCHITECTURE.md, "Limits").

/// Records asked of the log per read while landing.
pub const READ_RECORDS_MAX: usize = 10_000;
/// Bytes asked of the log per read while landing.
pub const READ_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Hours one flush of a partition may span. Events far apart in time (skewed clocks,
/// backfills) open one file each; past this many the partition is flushed early, which bounds
/// the writers (and their row groups in memory) open at once.
pub const OPEN_HOURS_MAX: usize = 8;
/// Rows collected in Arrow builders before they are handed to the Parquet writer.
pub const BATCH_ROWS_MAX: usize = 8192;
/// Typed columns a file gets from the catalog; properties beyond it are in `event_json` only.
pub const PROPERTY_COLUMNS_MAX: usize = 1000;
/// How deep nested objects of a schema are flattened into columns (`properties_a_b_c`);
/// deeper objects become one JSON text column.
pub const NESTING_DEPTH_MAX: usize = 4;
/// Bounds of `lake.row_group_rows`.
pub const ROW_GROUP_ROWS_MIN: usize = 1024;
pub const ROW_GROUP_ROWS_MAX: usize = 1024 * 1024;
/// Bounds of `lake.roll_bytes` (the target size of a file).
pub const ROLL_BYTES_MIN: u64 = 64 * 1024;
pub const ROLL_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Bounds of `lake.roll_age_ms`.
pub const ROLL_AGE_MS_MIN: u64 = 10;
pub const ROLL_AGE_MS_MAX: u64 = 3_600_000;
/// The longest wait between retries of a failed flush.
pub const RETRY_BACKOFF_MS_MAX: u64 = 30_000;
/// How often a sink looks again for a stream that does not exist yet.
pub const STREAM_POLL_MS: u64 = 1000;
/// Bytes of a flush marker file.
pub const MARKER_BYTES_MAX: usize = 64 * 1024;
/// Files listed per compaction run and per hour merged at once.
pub const COMPACT_FILES_MAX: usize = 100_000;
/// Rows a query answers at most (the HTTP API's `max_rows` is capped by it).
pub const QUERY_ROWS_MAX: usize = 100_000;
/// Queries running at once; more are answered "busy".
pub const QUERIES_IN_FLIGHT_MAX: usize = 4;
/// Memory one query's operators may hold (sorts, hash tables) before it fails.
pub const QUERY_MEMORY_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// A query's longest run.
pub const QUERY_TIMEOUT_MS: u64 = 60_000;
/// SQL text accepted.
pub const QUERY_SQL_BYTES_MAX: usize = 64 * 1024;
/// File schemas kept between queries (by path and size).
pub const SCHEMA_CACHE_ENTRIES_MAX: usize = 100_000;
