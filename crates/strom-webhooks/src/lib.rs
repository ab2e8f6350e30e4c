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
mod states;
mod worker;

use std::collections::BTreeMap;
use std::path::Path;
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
    /// The offset of the states-stream record `disabled` reflects; held while a state is
    /// changed or applied (`states.rs`).
    state_offset: tokio::sync::Mutex<Option<u64>>,
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
            false => vec![
                (&config.deliveries_stream, config.deliveries_partitions, stream_defaults.retention_ms),
                (&config.dead_letter_stream, 1, stream_defaults.retention_ms),
                // Destinations' states are kept as long as the log is.
                (&config.states_stream, 1, None),
            ],
        };
        for (stream, partitions, retention_ms) in streams {
            let stream_config = StreamConfig { partitions, retention_ms, ..stream_defaults.clone() };
            match log.create_stream(stream, stream_config).await {
                Ok(_) | Err(LogError::StreamExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        // Releases before the states stream kept disabled destinations in a file of this
        // process: what it holds goes into the stream (unless the stream says otherwise).
        let legacy_path = data_dir.join("webhooks").join("disabled.json");
        let legacy: BTreeMap<String, Disabled> = match std::fs::read(&legacy_path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|error| WebhooksError::Config(format!("{} is damaged: {error}", legacy_path.display())))?,
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
        let shared = Arc::new(Shared { log, config, client, started: std::time::Instant::now() });
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
                    disabled: Mutex::new(None),
                    state_offset: tokio::sync::Mutex::new(None),
                    enabled: Notify::new(),
                    stats: Mutex::new(Stats::default()),
                    destination,
                };
                (name, Arc::new(state))
            })
            .collect();
        let mut follow_from = 0;
        if !destinations.is_empty() {
            let (log, stream) = (shared.log.clone(), shared.config.states_stream.clone());
            let (mut known, next) = tokio::task::spawn_blocking(move || states::read_all(&log, &stream))
                .await
                .map_err(|error| WebhooksError::Config(format!("reading the webhook states: {error}")))??;
            for (name, disabled) in &legacy {
                if destinations.contains_key(name) && !known.contains_key(name) {
                    let record = states::StateRecord::disabled(disabled);
                    let offset = states::append(&shared.log, &shared.config.states_stream, name, &record).await?;
                    known.insert(name.clone(), (offset, record));
                }
            }
            for (name, (offset, record)) in &known {
                if let Some(destination) = destinations.get(name) {
                    states::apply(destination, &mut *destination.state_offset.lock().await, *offset, record);
                }
            }
            follow_from = next;
            if !legacy.is_empty() {
                std::fs::remove_file(&legacy_path)?;
                tracing::info!(path = %legacy_path.display(), stream = %shared.config.states_stream, "disabled destinations moved from the file to the states stream");
            }
        }
        let (shutdown, stopped) = watch::channel(false);
        let supervisor = match destinations.is_empty() {
            true => None,
            false => {
                let share = shared.log.share(SHARE_GROUP, &shared.config.deliveries_stream)?;
                let all = destinations.values().cloned().collect();
                let (log, stream) = (shared.log.clone(), shared.config.states_stream.clone());
                let follower =
                    tokio::spawn(states::follow(log, stream, destinations.clone(), follow_from, stopped.clone()));
                let supervisor = tokio::spawn(worker::supervise(shared.clone(), all, share, stopped));
                Some(tokio::spawn(async move {
                    let _ = supervisor.await;
                    let _ = follower.await;
                }))
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

    /// Resumes a destination a 410 disabled; its queue is sent from where it stopped. The
    /// change is appended to the states stream first, so every process of the installation
    /// (the one delivering for the destination may be another) sees it.
    pub async fn enable(&self, name: &str) -> Result<DestinationStatus, WebhooksError> {
        let destination = self.destinations.get(name).ok_or_else(|| WebhooksError::UnknownDestination(name.into()))?;
        let mut applied = destination.state_offset.lock().await;
        if destination.is_disabled() {
            let record = states::StateRecord::active(now_ms());
            let offset = states::append(&self.shared.log, &self.shared.config.states_stream, name, &record).await?;
            states::apply(destination, &mut applied, offset, &record);
            tracing::info!(destination = name, "webhook destination enabled");
        }
        drop(applied);
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
    /// Marks a destination disabled here at once (its deliveries park), then records it in
    /// the states stream for the other processes and for restarts.
    pub(crate) async fn disable(&self, destination: &DestinationState, reason: String) {
        let mut applied = destination.state_offset.lock().await;
        let disabled = {
            let mut current = destination.disabled.lock().unwrap_or_else(|e| e.into_inner());
            if current.is_some() {
                return;
            }
            let disabled = Disabled { reason: reason.clone(), since_ms: now_ms() };
            *current = Some(disabled.clone());
            disabled
        };
        metrics::gauge!("strom_webhooks_disabled", "destination" => destination.name().to_string()).set(1.0);
        tracing::warn!(destination = destination.name(), %reason, "webhook destination disabled; `POST /v1/webhooks/destinations/{}/enable` resumes it", destination.name());
        let record = states::StateRecord::disabled(&disabled);
        match states::append(&self.log, &self.config.states_stream, destination.name(), &record).await {
            Ok(offset) => *applied = Some(offset),
            Err(error) => {
                tracing::error!(destination = destination.name(), %error, "cannot record the disabled destination; other processes and a restart see it active")
            }
        }
    }
}

impl DestinationState {
    fn disabled_entry(&self) -> Option<Disabled> {
        self.disabled.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
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
