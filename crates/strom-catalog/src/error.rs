//! The catalog's one error type.

use std::path::PathBuf;

use crate::{Compatibility, Difference};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("invalid subject name {subject:?}: {reason}")]
    InvalidSubject { subject: String, reason: String },

    #[error("invalid schema for {subject:?}: {reason}")]
    InvalidSchema { subject: String, reason: String },

    #[error("schema for {subject:?} is incompatible with {against} under {mode}: {}", summary(differences))]
    Incompatible {
        subject: String,
        mode: Compatibility,
        /// Which earlier versions were checked, e.g. "version 3" or "versions 1..=3".
        against: String,
        differences: Vec<Difference>,
    },

    #[error("{subject:?} would take the lookup key {key}, which {other:?} already has")]
    Conflict { subject: String, key: String, other: String },

    #[error("subject {0:?} not found")]
    SubjectNotFound(String),

    #[error("version {version} of subject {subject:?} not found")]
    VersionNotFound { subject: String, version: u32 },

    #[error("schema {0} not found")]
    SchemaNotFound(u32),

    #[error(
        "invalid compatibility level {0:?} (expected BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE)"
    )]
    InvalidCompatibility(String),

    #[error("limit reached: {what} (at most {limit})")]
    Limit { what: &'static str, limit: usize },

    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },

    #[error("catalog configuration: {0}")]
    Config(String),

    #[error("catalog store: {0}")]
    Store(String),
}

fn summary(differences: &[Difference]) -> String {
    let mut text =
        differences.iter().take(3).map(|d| format!("{} at {}", d.kind, d.pointer)).collect::<Vec<_>>().join("; ");
    if differences.len() > 3 {
        text.push_str(&format!("; and {} more", differences.len() - 3));
    }
    text
}

pub(crate) fn store_error(error: impl std::fmt::Display) -> CatalogError {
    CatalogError::Store(error.to_string())
}
