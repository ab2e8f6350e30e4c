use std::path::PathBuf;

/// Everything the log can refuse or fail at. Callers map these to protocol errors.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("stream {0:?} does not exist")]
    StreamNotFound(String),
    #[error("stream {0:?} already exists")]
    StreamExists(String),
    #[error("invalid stream name {name:?}: {why}")]
    InvalidStreamName { name: String, why: &'static str },
    #[error("invalid stream config: {0}")]
    InvalidConfig(String),
    #[error("too many streams (at most {max})")]
    TooManyStreams { max: usize },
    #[error("stream {stream:?} has no partition {partition}")]
    PartitionNotFound { stream: String, partition: u32 },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("offset {offset} is out of range [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { offset: u64, log_start_offset: u64, log_end_offset: u64 },
    #[error("partition {stream}/{partition} is overloaded: {queued} appends queued")]
    Overloaded { stream: String, partition: u32, queued: usize },
    #[error("partition {stream}/{partition} is poisoned and accepts no appends: {cause}")]
    Poisoned { stream: String, partition: u32, cause: String },
    #[error(
        "records from offset {offset} of {stream}/{partition} are corrupt on disk \
         (segment {segment}, byte {position}): {cause}"
    )]
    CorruptRecords { stream: String, partition: u32, offset: u64, segment: u64, position: u64, cause: String },
    #[error("offset {offset} is below the committed offset {committed} of group {group:?} for {stream}/{partition}")]
    OffsetRegression { group: String, stream: String, partition: u32, offset: u64, committed: u64 },
    #[error("the log is closed")]
    Closed,
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("consumer group store: {0}")]
    GroupStore(String),
    /// The remote log (Kafka) failed or could not be reached.
    #[error("remote log: {0}")]
    Remote(String),
    /// Something the embedded log does that this log cannot (e.g. serving stored batches of
    /// a remote log).
    #[error("not supported: {0}")]
    Unsupported(&'static str),
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| LogError::Io { path: path.into(), source })
    }
}
