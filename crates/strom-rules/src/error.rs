use std::fmt;

/// Why a rule was refused: where (origin, line, column), which field, and why.
///
/// Displays as `origin:line:col: field: why` (line and column when known), the form editors
/// and CI logs link to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// Where the rule came from: a file path, or `api:<name>` for the HTTP API.
    pub origin: String,
    /// 1-based line and column of the offending value, when the format reports it.
    pub line: Option<u64>,
    pub column: Option<u64>,
    /// The field's path in the rule, like `pattern.steps[1].match`; `syntax` for a document
    /// that does not parse.
    pub field: String,
    pub why: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.origin)?;
        if let Some(line) = self.line {
            write!(f, "{line}:")?;
            if let Some(column) = self.column {
                write!(f, "{column}:")?;
            }
        }
        write!(f, " {}: {}", self.field, self.why)
    }
}

impl std::error::Error for RuleError {}

/// Everything the rules runtime can refuse or fail at.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("{0}")]
    Invalid(#[from] RuleError),
    #[error("rule {0:?} does not exist")]
    NotFound(String),
    #[error("invalid rule name {name:?}: {why}")]
    InvalidName { name: String, why: &'static str },
    #[error("too many rules (at most {max})")]
    TooManyRules { max: usize },
    #[error("rules directory {path}: {source}")]
    Io { path: std::path::PathBuf, source: std::io::Error },
    #[error("rule state store: {0}")]
    Store(String),
    #[error(transparent)]
    Log(#[from] strom_log::LogError),
    #[error("invalid backtest: {0}")]
    InvalidBacktest(String),
    #[error("the rules runtime is closed")]
    Closed,
}

pub(crate) fn store_error(error: impl fmt::Display) -> RulesError {
    RulesError::Store(error.to_string())
}
