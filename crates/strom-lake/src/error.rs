use std::path::PathBuf;

/// Everything the lake can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("lake configuration: {0}")]
    Config(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("Parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("Arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("log: {0}")]
    Log(#[from] strom_log::LogError),
    #[error("records {first}..{end} of {stream}/{partition} are gone from the log (retention?): {detail}")]
    RecordsGone { stream: String, partition: u32, first: u64, end: u64, detail: String },
    #[error("the flush marker {path} is damaged: {detail}")]
    BadMarker { path: PathBuf, detail: String },
    /// The query is wrong: it does not parse, names what does not exist, or is not a read.
    #[error("query: {0}")]
    Query(String),
    /// The query needs more memory than a query may hold.
    #[error("the query is too large: {0}")]
    QueryTooLarge(String),
    /// The query was right but could not be run (storage, damaged files, internal errors).
    #[error("the query failed: {0}")]
    QueryFailed(String),
    #[error("the query ran longer than {timeout_ms} ms")]
    QueryTimeout { timeout_ms: u64 },
    #[error("too many queries at once (at most {max}); retry later")]
    QueriesBusy { max: usize },
    #[error("{stream}/{partition} was lost to another process: nothing more is published")]
    Lost { stream: String, partition: u32 },
    #[error("the lake sink stopped")]
    Stopped,
}

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| LakeError::Io { path: path.into(), source })
    }
}
