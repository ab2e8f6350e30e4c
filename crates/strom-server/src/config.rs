//! `strom.toml`: every key, its default, and how flags and environment override it.
//! `strom.toml.example` at the repository root documents the same keys for users.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use strom_ingest::source::SourceConfig;
use strom_log::StreamConfig;

use crate::ServerError;

/// Arguments of `strom serve`. Flags beat environment variables, which beat the file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// Configuration file (TOML). Without it, ./strom.toml is read when it exists.
    #[arg(long, env = "STROM_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where streams and offsets are stored [default: ./strom-data].
    #[arg(long, env = "STROM_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the HTTP API [default: 127.0.0.1:8425]. Port 0 picks a free port.
    #[arg(long, env = "STROM_HTTP_ADDR", value_name = "HOST:PORT")]
    pub http_addr: Option<SocketAddr>,
    /// Address of the Kafka listener [default: 127.0.0.1:9092]. Port 0 picks a free port.
    #[arg(long, env = "STROM_KAFKA_ADDR", value_name = "HOST:PORT")]
    pub kafka_addr: Option<SocketAddr>,
    /// Log filter, e.g. `info` or `strom_log=debug,info` [default: info].
    #[arg(long, env = "STROM_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
}

/// The largest `http.body_bytes_max` allowed.
pub const BODY_BYTES_MAX: usize = 15 * 1024 * 1024;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub data_dir: PathBuf,
    pub http: HttpConfig,
    pub log: LogSettings,
    /// Defaults for streams created without explicit settings.
    pub streams: StreamDefaults,
    pub logging: LoggingConfig,
    /// The Kafka wire protocol listener (its keys are `strom_kafka::KafkaConfig`'s).
    pub kafka: strom_kafka::KafkaConfig,
    /// The event catalog: JSON Schemas per event type.
    pub catalog: CatalogSettings,
    /// The tracking collector (`/v1/track`, `/v1/batch`, ...).
    pub collector: CollectorConfig,
    /// `[[sources]]`: who may send tracked events, with which write keys.
    pub sources: Vec<SourceConfig>,
    pub auth: AuthConfig,
    /// `[rules]`: the rules engine (docs/RULES.md).
    pub rules: RulesSettings,
    /// `[webhooks]`: destinations of rule actions (its keys are `strom_webhooks::WebhooksConfig`'s).
    pub webhooks: strom_webhooks::WebhooksConfig,
    /// The data lake (its keys are `strom_lake::LakeConfig`'s).
    pub lake: strom_lake::LakeConfig,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where events of types the catalog does not know go, unless their source names a stream.
    pub default_stream: String,
    /// Where rejected events are kept, with their reason, unless their source names one.
    pub dead_letter_stream: String,
    /// Largest tracked event (Segment: 32 KB).
    pub event_bytes_max: usize,
    /// Largest tracking request, before and after gzip (Segment: 500 KB).
    pub batch_bytes_max: usize,
    /// How long a messageId is remembered per source for dedup.
    pub dedup_window_ms: u64,
    /// Message ids remembered at most (each costs at most 64 bytes of memory); beyond it the
    /// oldest are forgotten early, which is counted and logged.
    pub dedup_ids_max: usize,
    /// How often the dedup index drops expired ids and writes closed buckets to disk (the
    /// more often, the less a restart after a crash reads back from the log).
    pub dedup_upkeep_interval_ms: u64,
    /// Zero the host part of client addresses before anything is written.
    pub anonymize_ip: bool,
    /// Proxies whose `X-Forwarded-For` is believed (CIDR networks).
    pub trusted_proxies: Vec<String>,
}

/// `[catalog]`: the event catalog's files, default compatibility and PII key.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CatalogSettings {
    /// Catalog files (`<dir>/<TypeName>.json`), relative to the working directory. A missing
    /// directory is an empty catalog.
    pub dir: PathBuf,
    /// Level of subjects that set none: BACKWARD, FORWARD, FULL, their _TRANSITIVE forms, NONE.
    pub compatibility: strom_catalog::Compatibility,
    /// Key of `x-strom-pii: hash` (also STROM_PII_SECRET). Unset: a random key is kept in
    /// `<data_dir>/catalog/pii.key`.
    pub pii_secret: Option<Secret>,
    /// How often the directory is checked for changed files; 0 checks only on SIGHUP.
    pub reload_interval_ms: u64,
}

/// A secret from the configuration: never shown by `Debug`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl Default for CatalogSettings {
    fn default() -> CatalogSettings {
        CatalogSettings {
            dir: PathBuf::from("catalog"),
            compatibility: strom_catalog::Compatibility::Backward,
            pii_secret: None,
            reload_interval_ms: 2000,
        }
    }
}

impl CatalogSettings {
    pub fn catalog_config(&self, data_dir: &Path) -> strom_catalog::CatalogConfig {
        strom_catalog::CatalogConfig {
            dir: self.dir.clone(),
            store_dir: data_dir.join("catalog"),
            default_compatibility: self.compatibility,
            pii_secret: self.pii_secret.as_ref().map(|secret| secret.0.as_bytes().to_vec()),
        }
    }
}

/// `[rules]`: where rule files are, and the runtime's time and state settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesSettings {
    /// Whether rules run at all.
    pub enabled: bool,
    /// Rule files (`<name>.yaml`, `.yml`, `.toml`), relative to the working directory;
    /// created when missing.
    pub dir: PathBuf,
    /// Rule state, input offsets and output ends; relative paths are under `data_dir`.
    pub state_path: PathBuf,
    pub out_of_orderness_ms: u64,
    pub idle_timeout_ms: u64,
    pub commit_interval_ms: u64,
    pub reload_interval_ms: u64,
    pub keys_max: usize,
    pub matches_per_key_max: usize,
    pub start_from: strom_rules::StartFrom,
    pub output_partitions: u32,
}

impl Default for RulesSettings {
    fn default() -> RulesSettings {
        let engine = strom_rules::RulesConfig::new("rules", "rules/state.redb");
        RulesSettings {
            enabled: true,
            dir: PathBuf::from("rules"),
            state_path: PathBuf::from("rules/state.redb"),
            out_of_orderness_ms: engine.out_of_orderness_ms as u64,
            idle_timeout_ms: engine.idle_timeout_ms as u64,
            commit_interval_ms: engine.commit_interval_ms,
            reload_interval_ms: engine.reload_interval_ms,
            keys_max: engine.keys_max,
            matches_per_key_max: engine.matches_per_key_max,
            start_from: engine.start_from,
            output_partitions: engine.output_partitions,
        }
    }
}

impl RulesSettings {
    /// The runtime's configuration; rules may name the `[webhooks]` destinations.
    pub fn rules_config(&self, data_dir: &Path, destinations: Vec<String>) -> strom_rules::RulesConfig {
        let mut config = strom_rules::RulesConfig::new(&self.dir, data_dir.join(&self.state_path));
        config.destinations = destinations.into_iter().collect();
        config.out_of_orderness_ms = self.out_of_orderness_ms as i64;
        config.idle_timeout_ms = self.idle_timeout_ms as i64;
        config.commit_interval_ms = self.commit_interval_ms;
        config.reload_interval_ms = self.reload_interval_ms;
        config.keys_max = self.keys_max;
        config.matches_per_key_max = self.matches_per_key_max;
        config.start_from = self.start_from;
        config.output_partitions = self.output_partitions;
        config
    }

    fn validate(&self) -> Result<(), String> {
        let within = |name: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) { Ok(()) } else { Err(format!("rules.{name} must be {min} to {max}")) }
        };
        within("out_of_orderness_ms", self.out_of_orderness_ms, 0, 24 * 3_600_000)?;
        within("idle_timeout_ms", self.idle_timeout_ms, 1, 24 * 3_600_000)?;
        within("commit_interval_ms", self.commit_interval_ms, 1, 3_600_000)?;
        within("reload_interval_ms", self.reload_interval_ms, 0, 3_600_000)?;
        within("keys_max", self.keys_max as u64, 1, 100_000_000)?;
        within("matches_per_key_max", self.matches_per_key_max as u64, 1, 100_000)?;
        within(
            "output_partitions",
            u64::from(self.output_partitions),
            1,
            u64::from(strom_log::limits::PARTITIONS_PER_STREAM_MAX),
        )?;
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Hex SHA-256 digests of the admin tokens (`Authorization: Bearer TOKEN`) that the
    /// admin and read APIs require. Empty: those APIs are open (development), and a warning
    /// says so at start.
    pub admin_tokens_sha256: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub addr: SocketAddr,
    /// Largest request body; larger ones get 413 before they are read.
    pub body_bytes_max: usize,
    /// Largest single event.
    pub event_bytes_max: usize,
    /// Request bodies held in memory at once across all produce requests; beyond it, 429.
    pub inflight_bytes_max: usize,
    /// Bytes read for responses at once across all reads; beyond it, 429.
    pub read_inflight_bytes_max: usize,
    /// Concurrent live tails (SSE connections); beyond it, 429.
    pub tail_connections_max: usize,
    /// How long shutdown waits for in-flight requests before it stops anyway.
    pub shutdown_timeout_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// Buffered appends are fsync'd at the latest this long after being written.
    pub flush_interval_ms: u64,
    /// How often retention runs.
    pub retention_check_interval_ms: u64,
    /// How often each partition records how far it is synced (bounds what recovery may cut).
    pub checkpoint_interval_ms: u64,
    /// Where streams and group offsets are kept: `embedded` (the data directory) or `kafka`
    /// (a Kafka cluster, `[log.kafka]`; the Kafka listener is then off).
    pub backend: LogBackend,
    /// The cluster of the `kafka` backend (its keys are `strom_kafka::BackendConfig`'s).
    pub kafka: strom_kafka::BackendConfig,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    #[default]
    Embedded,
    Kafka,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StreamDefaults {
    pub partitions: u32,
    /// 0 keeps records forever (by time).
    pub retention_ms: u64,
    /// 0 puts no bound on a partition's bytes.
    pub retention_bytes: u64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// tracing filter directives.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./strom-data"),
            http: HttpConfig::default(),
            log: LogSettings::default(),
            streams: StreamDefaults::default(),
            logging: LoggingConfig::default(),
            catalog: CatalogSettings::default(),
            collector: CollectorConfig::default(),
            sources: Vec::new(),
            auth: AuthConfig::default(),
            kafka: strom_kafka::KafkaConfig::default(),
            webhooks: strom_webhooks::WebhooksConfig::default(),
            rules: RulesSettings::default(),
            lake: strom_lake::LakeConfig::default(),
        }
    }
}

impl Default for CollectorConfig {
    fn default() -> CollectorConfig {
        CollectorConfig {
            default_stream: "events".into(),
            dead_letter_stream: "dead-letters".into(),
            event_bytes_max: 32 * 1024,
            batch_bytes_max: 500 * 1024,
            dedup_window_ms: 24 * 3_600_000,
            dedup_ids_max: 4_000_000,
            dedup_upkeep_interval_ms: 5000,
            anonymize_ip: true,
            trusted_proxies: Vec::new(),
        }
    }
}

impl CollectorConfig {
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|text| {
                text.parse::<ipnet::IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("collector.trusted_proxies: {text:?} is not an address or a CIDR network"))
            })
            .collect()
    }
}

impl Default for HttpConfig {
    fn default() -> HttpConfig {
        HttpConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 8425)),
            body_bytes_max: 8 * 1024 * 1024,
            event_bytes_max: 1024 * 1024,
            inflight_bytes_max: 256 * 1024 * 1024,
            read_inflight_bytes_max: 256 * 1024 * 1024,
            tail_connections_max: 256,
            shutdown_timeout_ms: 30_000,
        }
    }
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            flush_interval_ms: 1000,
            retention_check_interval_ms: 30_000,
            checkpoint_interval_ms: 5000,
            backend: LogBackend::Embedded,
            kafka: strom_kafka::BackendConfig::default(),
        }
    }
}

impl Default for StreamDefaults {
    fn default() -> StreamDefaults {
        let stream = StreamConfig::default();
        StreamDefaults {
            partitions: stream.partitions,
            retention_ms: stream.retention_ms.unwrap_or(0),
            retention_bytes: stream.retention_bytes.unwrap_or(0),
            segment_bytes: stream.segment_bytes,
            segment_ms: stream.segment_ms,
        }
    }
}

impl Default for LoggingConfig {
    fn default() -> LoggingConfig {
        LoggingConfig { level: "info".into(), format: LogFormat::Text }
    }
}

impl StreamDefaults {
    pub fn stream_config(&self) -> StreamConfig {
        StreamConfig {
            partitions: self.partitions,
            retention_ms: (self.retention_ms > 0).then_some(self.retention_ms),
            retention_bytes: (self.retention_bytes > 0).then_some(self.retention_bytes),
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
        }
    }
}

impl Config {
    /// Reads the file named by the arguments (or ./strom.toml when present), then applies
    /// the flag and environment overrides, then checks every value.
    pub fn load(args: &ServeArgs) -> Result<Config, ServerError> {
        let implicit = Path::new("strom.toml");
        let path = args.config.clone().or_else(|| implicit.exists().then(|| implicit.to_path_buf()));
        let mut config = match &path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|error| ServerError::Config(format!("cannot read {}: {error}", path.display())))?;
                Config::parse(&text).map_err(|error| ServerError::Config(format!("{}: {error}", path.display())))?
            }
            None => Config::default(),
        };
        if let Some(dir) = &args.data_dir {
            config.data_dir = dir.clone();
        }
        if let Some(addr) = args.http_addr {
            config.http.addr = addr;
        }
        if let Some(addr) = args.kafka_addr {
            config.kafka.addr = addr;
        }
        if let Some(level) = &args.log_level {
            config.logging.level = level.clone();
        }
        // From the environment only: a secret on the command line shows in `ps`.
        if let Some(secret) = std::env::var("STROM_PII_SECRET").ok().filter(|s| !s.is_empty()) {
            config.catalog.pii_secret = Some(Secret(secret));
        }
        config.validate().map_err(ServerError::Config)?;
        Ok(config)
    }

    /// Parses TOML; unknown keys and bad types are refused with the key's name.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|error| error.to_string())?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        let positive =
            |name: &str, value: u64| if value == 0 { Err(format!("{name} must be positive")) } else { Ok(()) };
        positive("http.body_bytes_max", self.http.body_bytes_max as u64)?;
        positive("http.event_bytes_max", self.http.event_bytes_max as u64)?;
        positive("http.tail_connections_max", self.http.tail_connections_max as u64)?;
        positive("log.flush_interval_ms", self.log.flush_interval_ms)?;
        positive("log.retention_check_interval_ms", self.log.retention_check_interval_ms)?;
        positive("log.checkpoint_interval_ms", self.log.checkpoint_interval_ms)?;
        // Intervals are added to instants; an hour is more than any of them needs.
        for (name, value) in [
            ("log.flush_interval_ms", self.log.flush_interval_ms),
            ("log.retention_check_interval_ms", self.log.retention_check_interval_ms),
            ("log.checkpoint_interval_ms", self.log.checkpoint_interval_ms),
            ("http.shutdown_timeout_ms", self.http.shutdown_timeout_ms),
            ("catalog.reload_interval_ms", self.catalog.reload_interval_ms),
        ] {
            if value > 3_600_000 {
                return Err(format!("{name} must be at most 3600000 (an hour)"));
            }
        }
        // A body's events for one partition become one batch of up to about twice the body
        // (keys are copied out of the events), which must fit the log's batch bound.
        if self.http.body_bytes_max > BODY_BYTES_MAX {
            return Err(format!("http.body_bytes_max must be at most {BODY_BYTES_MAX} (15 MiB)"));
        }
        if self.http.event_bytes_max > self.http.body_bytes_max.min(strom_log::limits::BATCH_BYTES_MAX / 2) {
            return Err(format!(
                "http.event_bytes_max must be at most http.body_bytes_max and {} bytes",
                strom_log::limits::BATCH_BYTES_MAX / 2
            ));
        }
        if self.http.read_inflight_bytes_max < 16 * 1024 * 1024 {
            return Err("http.read_inflight_bytes_max must be at least 16777216 (one read's largest max_bytes)".into());
        }
        if self.http.inflight_bytes_max < self.http.body_bytes_max {
            return Err("http.inflight_bytes_max must be at least http.body_bytes_max".into());
        }
        self.streams.stream_config().validate().map_err(|error| format!("streams: {error}"))?;
        self.kafka.validate()?;
        if self.log.backend == LogBackend::Kafka {
            self.log.kafka.validate()?;
        }
        self.lake.validate()?;
        if self.catalog.pii_secret.as_ref().is_some_and(|secret| secret.0.len() < 16) {
            return Err("catalog.pii_secret must be at least 16 bytes (a short key can be guessed)".into());
        }
        let collector = &self.collector;
        for (name, stream) in [
            ("collector.default_stream", &collector.default_stream),
            ("collector.dead_letter_stream", &collector.dead_letter_stream),
        ] {
            strom_log::validate_stream_name(stream).map_err(|error| format!("{name}: {error}"))?;
        }
        positive("collector.event_bytes_max", collector.event_bytes_max as u64)?;
        if collector.batch_bytes_max < collector.event_bytes_max || collector.batch_bytes_max > BODY_BYTES_MAX {
            return Err(format!(
                "collector.batch_bytes_max must be between collector.event_bytes_max and {BODY_BYTES_MAX}"
            ));
        }
        if collector.dedup_window_ms < 60_000 || collector.dedup_window_ms > 30 * 86_400_000 {
            return Err("collector.dedup_window_ms must be between 60000 (a minute) and 2592000000 (30 days)".into());
        }
        positive("collector.dedup_ids_max", collector.dedup_ids_max as u64)?;
        positive("collector.dedup_upkeep_interval_ms", collector.dedup_upkeep_interval_ms)?;
        if collector.dedup_upkeep_interval_ms > 3_600_000 {
            return Err("collector.dedup_upkeep_interval_ms must be at most 3600000 (an hour)".into());
        }
        collector.trusted_proxy_networks()?;
        let mut names = std::collections::HashSet::new();
        for source in &self.sources {
            source.validate().map_err(|error| format!("sources: {error}"))?;
            if !names.insert(&source.name) {
                return Err(format!("sources: {:?} is defined twice", source.name));
            }
        }
        self.webhooks.validate()?;
        self.rules.validate()?;
        for digest in &self.auth.admin_tokens_sha256 {
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("auth.admin_tokens_sha256: {digest:?} is not a hex SHA-256 digest"));
            }
        }
        Ok(())
    }

    pub fn log_config(&self) -> strom_log::LogConfig {
        strom_log::LogConfig {
            flush_interval: Duration::from_millis(self.log.flush_interval_ms),
            retention_check_interval: Duration::from_millis(self.log.retention_check_interval_ms),
            checkpoint_interval: Duration::from_millis(self.log.checkpoint_interval_ms),
            ..strom_log::LogConfig::new(&self.data_dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_parses_to_the_defaults() {
        let example = include_str!("../../../strom.toml.example");
        assert_eq!(Config::parse(example).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let cases = [
            ("[http]\nadress = \"127.0.0.1:1\"", "adress"),
            ("[http]\naddr = \"nowhere\"", "addr"),
            ("[streams]\npartitions = 0", "partitions"),
            ("[http]\nbody_bytes_max = 0", "http.body_bytes_max"),
            ("[http]\nbody_bytes_max = 16777216", "http.body_bytes_max"),
            ("[logging]\nformat = \"xml\"", "format"),
            ("colour = true", "colour"),
            ("[collector]\ntrusted_proxies = [\"10.0.0.0/33\"]", "collector.trusted_proxies"),
            ("[collector]\nevent_bytes_max = 100\nbatch_bytes_max = 10", "collector.batch_bytes_max"),
            ("[[sources]]\nname = \"web site\"", "source name"),
            ("[[sources]]\nname = \"web\"\nunknown_types = \"drop\"", "unknown_types"),
            ("[auth]\nadmin_tokens_sha256 = [\"xyz\"]", "auth.admin_tokens_sha256"),
            ("[catalog]\ncompatibility = \"SOMETIMES\"", "SOMETIMES"),
            ("[catalog]\npii_secret = \"short\"", "catalog.pii_secret"),
            ("[catalog]\nreload_interval_ms = 3600001", "catalog.reload_interval_ms"),
            ("[kafka]\nframe_bytes_max = 10", "kafka.frame_bytes_max"),
            ("[kafka]\nport = 9092", "port"),
            ("[kafka.tls]\ncert_file = \"/nonexistent.pem\"\nkey_file = \"/nonexistent.pem\"", "kafka.tls"),
            ("[kafka.sasl]\nmechanisms = [\"GSSAPI\"]", "kafka.sasl.mechanisms"),
            ("[lake]\nroll_bytes = 1", "lake.roll_bytes"),
            ("[lake]\nurl = \"gs://bucket\"", "lake.url"),
            ("[lake]\ntime_basis = \"wall\"", "wall"),
            ("[lake.s3]\nkey = \"x\"", "key"),
        ];
        for (text, key) in cases {
            let error = Config::parse(text).unwrap_err();
            assert!(error.contains(key), "{text:?} → {error}");
        }
    }
}
