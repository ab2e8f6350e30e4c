//! The one door into the log for tracked events: envelope checks, validation against the
//! catalog, enrichment, privacy, dedup and dead-lettering, then a durable append. Protocol
//! framing (HTTP, Kafka) stays outside; this crate sees events and sources.

pub mod dedup;
pub mod envelope;
mod ingest;
pub mod network;
pub mod recover;
pub mod replay;
pub mod source;
pub mod useragent;

pub use ingest::{
    Ingest, IngestConfig, IngestError, Origin, Outcome, REASON_HEADER, Replay, SOURCE_HEADER, TYPE_HEADER,
};

/// Bytes of a partition key (`userId`/`anonymousId`), as for the generic produce API.
pub const KEY_BYTES_MAX: usize = 4096;

/// Why an event was not accepted as it is: where in the event, which rule, and in words.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer into the event.
    pub pointer: String,
    /// The JSON Schema keyword (or envelope rule named like one) that failed.
    pub keyword: String,
    pub message: String,
}

impl Violation {
    pub fn envelope(pointer: &str, keyword: &str, message: impl Into<String>) -> Violation {
        Violation { pointer: pointer.to_string(), keyword: keyword.to_string(), message: message.into() }
    }
}
