//! Strom's Kafka listener: the Kafka wire protocol on the embedded log; and the Kafka backend
//! (`backend.rs`): the log itself kept on a Kafka cluster.
//!
//! Kafka clients (librdkafka, the Java client, kafka-python) connect here and see one broker
//! (node 0) that leads every partition of every stream: streams are topics, one namespace
//! for HTTP and Kafka. Requests and responses are `kafka-protocol`'s types; this crate turns
//! them into calls on `strom_log` in one place per API (`api/`).
//!
//! Architecture invariants:
//! - Bytes from the network are never trusted: a frame's length is checked before it is
//!   buffered, every count is bounded before anything is allocated for it, and a frame that
//!   does not decode closes its connection and nothing else.
//! - Responses leave a connection in request order; appends of one connection's produce
//!   requests reach each partition in request order (queued synchronously while dispatching).
//! - A produce with acks=all is answered only after the fsync covering its batches.
//! - Every queue and budget is bounded: frames in flight per connection, bytes of requests
//!   and of fetch responses in flight across connections, connections.

pub(crate) mod api;
pub mod backend;
mod config;
mod connection;
mod errors;
mod frame;
mod groups;
pub mod limits;
mod producers;
mod sasl;
mod server;
mod tls;
mod validate;

pub use api::decode_only;
pub use backend::{BackendConfig, KafkaBackend};
pub use config::{InvalidRecords, KafkaConfig, SaslConfig, SaslUser, TlsFiles};
pub use frame::{FrameError, RequestFrame, parse_request};
pub use server::serve;
pub use validate::{RecordValidator, ValueSchema};
