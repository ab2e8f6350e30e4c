//! Strom's event catalog: event types as JSON Schemas (2020-12 and draft-07), their versions
//! and compatibility (with the Confluent Schema Registry's meaning), validation of events, and
//! PII annotations. It knows nothing of HTTP or of where events come from.
//!
//! The hot path (`Catalog::snapshot` → `Snapshot::lookup` → `EventType::validate` →
//! `EventType::apply_pii`) takes no lock: writers build a new [`Snapshot`] and swap it in.

mod canonical;
mod catalog;
pub mod compat;
mod error;
mod event_type;
pub mod limits;
mod model;
mod pii;
mod snapshot;
mod store;

pub use canonical::canonical_text;
pub use catalog::{
    Catalog, CatalogConfig, Refused, Registered, ReloadReport, SchemaVersion, VersionRef, validate_subject,
};
pub use compat::check_compatibility;
pub use error::CatalogError;
pub use event_type::EventType;
pub use model::{Compatibility, Difference, EventKind, Metadata, Violation};
pub use pii::{REDACTED, keyed_hash};
pub use snapshot::Snapshot;
