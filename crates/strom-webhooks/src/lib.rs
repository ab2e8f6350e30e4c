//! Webhook delivery for Strom: requests queued in a stream of the log, POSTed to configured
//! destinations, signed as Standard Webhooks, retried with backoff until a horizon, then
//! dead-lettered. Each destination has its own worker, queue position, concurrency and
//! circuit breaker, so one slow or dead destination never holds up another.
//!
//! At-least-once: a destination's progress (a consumer-group offset) moves past a request
//! only once it was delivered or dead-lettered, so a crash re-sends what was in flight;
//! receivers deduplicate by `webhook-id`, which is the request's id on every attempt.

mod address;
mod circuit;
mod config;
mod error;
pub mod limits;
mod request;
mod retry;
mod signature;
mod worker;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use strom_log::{Log, LogError, StreamConfig};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use address::AddressPolicy;
pub use circuit::{Circuit, CircuitState, Permit};
pub use config::{DestinationConfig, WebhooksConfig};
pub use error::{RefusedAddress, WebhooksError};
pub use request::{DeliveryRequest, REASON_HEADER};
pub use retry::{backoff_ms, parse_retry_after};
pub use signature::SigningKey;

/// A secret from the configuration: never shown by `Debug`.
#[derive(Clone, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// What `GET /v1/webhooks/destinations` shows of one destination.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct DestinationStatus {
    pub name: String,
    /// Scheme, host, port and path only: a query string may carry credentials.
    pub url: String,
    /// `active` or `disabled` (after a 410 Gone; `enable` resumes it).
    pub state: String,
    pub disabled_reason: Option<String>,
    pub circuit: String,
    /// The partition of the deliveries stream that holds this destination's requests.
    pub partition: u32,
    /// Everything before this offset is delivered or dead-lettered.
    pub committed_offset: u64,
    /// Records of the partition not yet behind `committed_offset` (other destinations'
    /// requests in the same partition are counted too).
    pub lag_records: u64,
    pub in_flight: usize,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    /// Whether this process delivers for the destination now. On the Kafka backend the
    /// processes divide the deliveries stream's partitions, so another one may; the counters
    /// above are this process's.
    pub delivering_here: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
struct Disabled {
    reason: String,
    since_ms: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub partition: u32,
    pub committed_offset: u64,
    pub lag_records: u64,
    pub in_flight: usize,
    pub delivered: u64,
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    pub last_error: Option<String>,
    /// A worker of this process delivers for the destination now.
    pub delivering_here: bool,
}

pub(crate) struct DestinationState {
    pub destination: config::Destination,
    pub circuit: Mutex<Circuit>,
    disabled: Mutex<Option<Disabled>>,
    /// Woken when the destination is enabled again.
    pub enabled: Notify,
    pub stats: Mutex<Stats>,
}

impl DestinationState {
    pub fn name(&self) -> &str {
        &self.destination.config.name
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }
}

/// What every worker shares.
pub(crate) struct Shared {
    pub log: Arc<Log>,
    pub config: WebhooksConfig,
    pub client: reqwest::Client,
    /// The zero of the circuit breakers' monotonic milliseconds.
    pub started: std::time::Instant,
    disabled_path: PathBuf,
    /// Serialises writes of the disabled-destinations file.
    disabled_file: Mutex<()>,
}

pub struct Webhooks {
    shared: Arc<Shared>,
    destinations: BTreeMap<String, Arc<DestinationState>>,
    shutdown: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// The shared group (`Log::share`) that divides the deliveries stream's partitions, and so
/// the destinations, among the processes of a Kafka-backed installation.
pub const SHARE_GROUP: &str = "strom-webhooks";

impl Webhooks {
    /// Checks the configuration, creates the deliveries and dead-letter streams when missing
    /// and destinations are configured
    /// (with `stream_defaults` but the configured partitions), and starts one worker per
    /// destination. `data_dir` keeps which destinations a 410 disabled.
    pub async fn start(
        log: Arc<Log>,
        config: WebhooksConfig,
        stream_defaults: StreamConfig,
        data_dir: &Path,
    ) -> Result<Arc<Webhooks>, WebhooksError> {
        let prepared = config.prepare().map_err(WebhooksError::Config)?;
        // Without destinations there is nothing to deliver: no streams are made.
        let streams = match prepared.is_empty() {
            true => vec![],
            false => vec![(&config.deliveries_stream, config.deliveries_partitions), (&config.dead_letter_stream, 1)],
        };
        for (stream, partitions) in streams {
            let stream_config = StreamConfig { partitions, ..stream_defaults.clone() };
            match log.create_stream(stream, stream_config).await {
                Ok(_) | Err(LogError::StreamExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let dir = data_dir.join("webhooks");
        std::fs::create_dir_all(&dir)?;
        let disabled_path = dir.join("disabled.json");
        let disabled: BTreeMap<String, Disabled> = match std::fs::read(&disabled_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| WebhooksError::Config(format!("{} is damaged: {error}", disabled_path.display())))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(error) => return Err(error.into()),
        };
        let policy = Arc::new(AddressPolicy::new(config.allowed_networks().map_err(WebhooksError::Config)?));
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(address::GuardedResolver { policy }))
            // A redirect could lead past the address guard, and receivers should be configured
            // with their final URL anyway.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("Strom-Webhooks/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|error| WebhooksError::Config(format!("HTTP client: {error}")))?;
        let shared = Arc::new(Shared {
            log,
            config,
            client,
            started: std::time::Instant::now(),
            disabled_path,
            disabled_file: Mutex::new(()),
        });
        let destinations: BTreeMap<String, Arc<DestinationState>> = prepared
            .into_iter()
            .map(|destination| {
                let name = destination.config.name.clone();
                let circuit = Circuit::new(
                    destination.config.circuit_failures,
                    destination.config.circuit_open_ms,
                    destination.config.circuit_open_ms.saturating_mul(10),
                );
                let state = DestinationState {
                    circuit: Mutex::new(circuit),
                    disabled: Mutex::new(disabled.get(&name).cloned()),
                    enabled: Notify::new(),
                    stats: Mutex::new(Stats::default()),
                    destination,
                };
                (name, Arc::new(state))
            })
            .collect();
        let (shutdown, stopped) = watch::channel(false);
        let supervisor = match destinations.is_empty() {
            true => None,
            false => {
                let share = shared.log.share(SHARE_GROUP, &shared.config.deliveries_stream)?;
                let all = destinations.values().cloned().collect();
                Some(tokio::spawn(worker::supervise(shared.clone(), all, share, stopped)))
            }
        };
        tracing::info!(destinations = destinations.len(), stream = %shared.config.deliveries_stream, "webhook delivery started");
        Ok(Arc::new(Webhooks { shared, destinations, shutdown, supervisor: Mutex::new(supervisor) }))
    }

    /// Destination names, for checking the actions of rules.
    pub fn destination_names(&self) -> Vec<String> {
        self.destinations.keys().cloned().collect()
    }

    pub fn deliveries_stream(&self) -> &str {
        &self.shared.config.deliveries_stream
    }

    pub fn status(&self) -> Vec<DestinationStatus> {
        self.destinations.values().map(|destination| status(destination)).collect()
    }

    pub fn destination(&self, name: &str) -> Option<DestinationStatus> {
        self.destinations.get(name).map(|destination| status(destination))
    }

    /// Resumes a destination a 410 disabled; its queue is sent from where it stopped.
    pub fn enable(&self, name: &str) -> Result<DestinationStatus, WebhooksError> {
        let destination = self.destinations.get(name).ok_or_else(|| WebhooksError::UnknownDestination(name.into()))?;
        if destination.disabled.lock().unwrap_or_else(|e| e.into_inner()).take().is_some() {
            self.shared.persist_disabled(&self.destinations)?;
            metrics::gauge!("strom_webhooks_disabled", "destination" => name.to_string()).set(0.0);
            tracing::info!(destination = name, "webhook destination enabled");
        }
        destination.enabled.notify_waiters();
        Ok(status(destination))
    }

    /// Stops the workers and leaves the shared group; what is in flight is sent again after
    /// the next start (or by the process that takes the destination over).
    pub async fn close(&self) {
        let _ = self.shutdown.send(true);
        let supervisor = self.supervisor.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(supervisor) = supervisor {
            let _ = supervisor.await;
        }
    }
}

impl Shared {
    /// Marks a destination disabled and writes the file of disabled destinations.
    pub(crate) fn disable(&self, destination: &DestinationState, reason: String) {
        {
            let mut disabled = destination.disabled.lock().unwrap_or_else(|e| e.into_inner());
            if disabled.is_some() {
                return;
            }
            let since_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_millis() as i64);
            *disabled = Some(Disabled { reason: reason.clone(), since_ms });
        }
        metrics::gauge!("strom_webhooks_disabled", "destination" => destination.name().to_string()).set(1.0);
        tracing::warn!(destination = destination.name(), %reason, "webhook destination disabled; `POST /v1/webhooks/destinations/{}/enable` resumes it", destination.name());
        if let Err(error) = self.write_disabled_entry(destination.name(), destination.disabled_entry()) {
            tracing::error!(destination = destination.name(), %error, "cannot record the disabled destination; it is active again after a restart");
        }
    }

    fn persist_disabled(&self, all: &BTreeMap<String, Arc<DestinationState>>) -> Result<(), WebhooksError> {
        let _serial = self.disabled_file.lock().unwrap_or_else(|e| e.into_inner());
        let entries: BTreeMap<&str, Disabled> =
            all.iter().filter_map(|(name, state)| state.disabled_entry().map(|entry| (name.as_str(), entry))).collect();
        write_atomically(&self.disabled_path, &serde_json::to_vec_pretty(&entries).unwrap_or_default())?;
        Ok(())
    }

    fn write_disabled_entry(&self, name: &str, entry: Option<Disabled>) -> Result<(), WebhooksError> {
        let _serial = self.disabled_file.lock().unwrap_or_else(|e| e.into_inner());
        let mut entries: BTreeMap<String, Disabled> = match std::fs::read(&self.disabled_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        match entry {
            Some(entry) => entries.insert(name.to_string(), entry),
            None => entries.remove(name),
        };
        write_atomically(&self.disabled_path, &serde_json::to_vec_pretty(&entries).unwrap_or_default())?;
        Ok(())
    }
}

impl DestinationState {
    fn disabled_entry(&self) -> Option<Disabled> {
        self.disabled.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Write to a temporary file, fsync, rename over, fsync the directory: the file is either the
/// old one or the new one after a crash.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    file.sync_data()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn status(destination: &DestinationState) -> DestinationStatus {
    let url = &destination.destination.url;
    let shown = format!(
        "{}://{}{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|port| format!(":{port}")).unwrap_or_default(),
        url.path()
    );
    let disabled = destination.disabled_entry();
    let stats = destination.stats.lock().unwrap_or_else(|e| e.into_inner());
    DestinationStatus {
        name: destination.name().to_string(),
        url: shown,
        state: if disabled.is_some() { "disabled" } else { "active" }.into(),
        disabled_reason: disabled.map(|d| d.reason),
        circuit: destination.circuit.lock().unwrap_or_else(|e| e.into_inner()).state().as_str().into(),
        partition: stats.partition,
        committed_offset: stats.committed_offset,
        lag_records: stats.lag_records,
        in_flight: stats.in_flight,
        delivered: stats.delivered,
        failed_attempts: stats.failed_attempts,
        dead_lettered: stats.dead_lettered,
        last_error: stats.last_error.clone(),
        delivering_here: stats.delivering_here,
    }
}
