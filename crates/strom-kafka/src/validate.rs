//! Catalog enforcement on produce: the listener asks, per topic, for the schema of its
//! record values; the server answers from the event catalog. This crate knows no catalog.

use std::sync::Arc;

/// The schemas of streams' record values (the server implements it over the catalog).
pub trait RecordValidator: Send + Sync {
    /// The schema `stream`'s record values must match, if the catalog has one. Asked once
    /// per partition batch: a stream without one costs a lookup, and its batches are stored
    /// as sent without being decoded.
    fn schema(&self, stream: &str) -> Option<Arc<dyn ValueSchema>>;
}

pub trait ValueSchema: Send + Sync {
    /// `Err` lists why the value does not match, in one line.
    fn check(&self, value: Option<&[u8]>) -> Result<(), String>;
    /// Names the schema in errors and dead letters, e.g. `orders-value version 3 (schema id 12)`.
    fn describe(&self) -> String;
}
