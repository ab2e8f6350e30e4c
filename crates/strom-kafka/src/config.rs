//! The `[kafka]` section of strom.toml.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Whether the Kafka listener runs at all.
    pub enabled: bool,
    /// Address of the Kafka listener; port 0 picks a free port.
    pub addr: SocketAddr,
    /// `host:port` clients are told to connect to (Metadata, FindCoordinator). Without it,
    /// the address each connection reached (right unless behind NAT or a proxy).
    pub advertised_addr: Option<String>,
    /// Largest request frame; a larger declared length closes the connection before any of
    /// the frame is read (Kafka: `socket.request.max.bytes`).
    pub frame_bytes_max: usize,
    /// Open Kafka connections; further ones are closed at once.
    pub connections_max: usize,
    /// Request bytes held in memory at once across connections; beyond it, connections are
    /// not read until earlier requests are answered (Kafka: `queued.max.request.bytes`).
    pub inflight_bytes_max: usize,
    /// Record bytes read for fetch responses at once across connections; beyond it, fetches
    /// wait for earlier ones.
    pub fetch_inflight_bytes_max: usize,
    /// Authentication: none unless mechanisms are listed.
    pub sasl: SaslConfig,
    /// TLS for every Kafka connection when set (clients use security.protocol SSL or SASL_SSL).
    pub tls: Option<TlsFiles>,
    /// What a produce to a topic whose stream has a catalog schema does with records the
    /// schema refuses: `reject` the partition's whole batch with INVALID_RECORD (nothing of it
    /// is appended), or `dead-letter` them (the valid records are appended).
    pub invalid_records: InvalidRecords,
    /// Per-stream exceptions to `invalid_records`: `{ "orders" = "dead-letter" }`.
    pub invalid_records_by_stream: std::collections::BTreeMap<String, InvalidRecords>,
    /// Where dead-lettered records go, with a `strom-dead-letter` header saying why.
    pub dead_letter_stream: String,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum InvalidRecords {
    /// As Confluent's broker-side schema validation: the producer gets INVALID_RECORD.
    #[default]
    Reject,
    DeadLetter,
}

impl KafkaConfig {
    pub fn invalid_records_for(&self, stream: &str) -> InvalidRecords {
        self.invalid_records_by_stream.get(stream).copied().unwrap_or(self.invalid_records)
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain, the server's certificate first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SaslConfig {
    /// `PLAIN` and/or `SCRAM-SHA-256`. With any, every connection authenticates first.
    pub mechanisms: Vec<String>,
    pub users: Vec<SaslUser>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SaslUser {
    pub name: String,
    pub password: String,
}

impl Default for KafkaConfig {
    fn default() -> KafkaConfig {
        KafkaConfig {
            enabled: true,
            addr: SocketAddr::from(([127, 0, 0, 1], 9092)),
            advertised_addr: None,
            frame_bytes_max: 100 * 1024 * 1024,
            connections_max: 1024,
            inflight_bytes_max: 256 * 1024 * 1024,
            fetch_inflight_bytes_max: 256 * 1024 * 1024,
            sasl: SaslConfig::default(),
            tls: None,
            invalid_records: InvalidRecords::Reject,
            invalid_records_by_stream: std::collections::BTreeMap::new(),
            dead_letter_stream: "dead-letters".into(),
        }
    }
}

impl KafkaConfig {
    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.frame_bytes_max < 1024 {
            return Err("kafka.frame_bytes_max must be at least 1024".into());
        }
        // A frame is a u31 length.
        if self.frame_bytes_max > i32::MAX as usize {
            return Err(format!("kafka.frame_bytes_max must be at most {}", i32::MAX));
        }
        if self.connections_max == 0 {
            return Err("kafka.connections_max must be positive".into());
        }
        if self.inflight_bytes_max < self.frame_bytes_max {
            return Err("kafka.inflight_bytes_max must be at least kafka.frame_bytes_max".into());
        }
        if self.fetch_inflight_bytes_max < crate::limits::FETCH_RESPONSE_BYTES_MAX {
            return Err(format!(
                "kafka.fetch_inflight_bytes_max must be at least {} (one fetch's largest response)",
                crate::limits::FETCH_RESPONSE_BYTES_MAX
            ));
        }
        // Semaphores count permits in a usize below this.
        let permits_max = tokio::sync::Semaphore::MAX_PERMITS;
        if self.inflight_bytes_max > permits_max || self.fetch_inflight_bytes_max > permits_max {
            return Err("kafka.inflight_bytes_max and kafka.fetch_inflight_bytes_max are too large".into());
        }
        for mechanism in &self.sasl.mechanisms {
            if !crate::sasl::MECHANISMS.contains(&mechanism.as_str()) {
                return Err(format!(
                    "kafka.sasl.mechanisms: {mechanism:?} is not one of {:?}",
                    crate::sasl::MECHANISMS
                ));
            }
        }
        if !self.sasl.mechanisms.is_empty() && self.sasl.users.is_empty() {
            return Err("kafka.sasl.users must name at least one user when mechanisms are listed".into());
        }
        if self.sasl.users.iter().any(|user| user.name.is_empty() || user.password.is_empty()) {
            return Err("kafka.sasl.users need a name and a password".into());
        }
        if let Some(files) = &self.tls {
            crate::tls::acceptor(files).map_err(|error| format!("kafka.tls: {error}"))?;
        }
        strom_log::validate_stream_name(&self.dead_letter_stream)
            .map_err(|error| format!("kafka.dead_letter_stream: {error}"))?;
        if let Some(advertised) = &self.advertised_addr {
            let port_ok =
                advertised.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return Err(format!("kafka.advertised_addr must be HOST:PORT, not {advertised:?}"));
            }
        }
        Ok(())
    }
}
