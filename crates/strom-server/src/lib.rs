//! Strom's server: configuration, the HTTP API, metrics, logging and shutdown, wired around
//! the embedded log.

mod api;
mod catalog;
mod collector;
pub mod config;
mod error;
mod lake;
mod rules;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use strom_log::{Log, LogError};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use api::produce::REQUEST_EVENTS_MAX;
pub use config::{Config, LogFormat, ServeArgs};
/// Kafka's murmur2 partitioner (it lives with the log, which every door shares).
pub use strom_log::partitioner;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("catalog: {0}")]
    Catalog(#[from] strom_catalog::CatalogError),
    #[error("{0}")]
    Webhooks(#[from] strom_webhooks::WebhooksError),
    #[error("rules: {0}")]
    Rules(#[from] strom_rules::RulesError),
    #[error("collector: {0}")]
    Collector(String),
    #[error("lake: {0}")]
    Lake(#[from] strom_lake::LakeError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The hex SHA-256 digest of a write key, as `[[sources]] write_keys_sha256` holds it.
pub fn write_key_digest(key: &str) -> String {
    strom_ingest::source::digest_hex(key)
}

/// `strom serve`: reads the configuration, sets up logging, runs until SIGINT or SIGTERM.
pub fn serve(args: ServeArgs) -> Result<(), ServerError> {
    let config = Config::load(&args)?;
    init_logging(&config);
    raise_open_files_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("strom").build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(config.http.addr)
            .await
            .map_err(|source| ServerError::Bind { addr: config.http.addr, source })?;
        run(config, listener, shutdown_signal()).await
    })
}

/// Runs the server on an already bound listener until `shutdown` completes, then stops
/// accepting, lets in-flight requests finish, and closes the log (sync + checkpoints).
/// Prints `listening http://ADDR` on stdout once it serves. The Kafka listener, when
/// enabled, is bound here at `kafka.addr`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    // On the Kafka backend, Kafka clients connect to the cluster itself.
    let kafka = match config.kafka.enabled && config.log.backend == config::LogBackend::Embedded {
        true => Some(
            TcpListener::bind(config.kafka.addr)
                .await
                .map_err(|source| ServerError::Bind { addr: config.kafka.addr, source })?,
        ),
        false => None,
    };
    run_with_kafka(config, listener, kafka, shutdown).await
}

/// `run` with the Kafka listener bound by the caller too (tests bind both on port 0), or
/// none. Prints `listening kafka://ADDR` after the HTTP line.
pub async fn run_with_kafka(
    config: Config,
    listener: TcpListener,
    kafka: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let metrics = metrics_handle();
    let mut log_config = config.log_config();
    let backend = (config.log.backend == config::LogBackend::Kafka).then(|| config.log.kafka.clone());
    let kafka = match (kafka, &backend) {
        (Some(_), Some(_)) => {
            tracing::warn!("the Kafka listener is off on the Kafka backend: clients connect to the cluster");
            None
        }
        (kafka, _) => kafka,
    };
    let opened = std::time::Instant::now();
    let log = tokio::task::spawn_blocking(move || {
        if let Some(backend) = backend {
            log_config.remote = Some(Arc::new(strom_kafka::KafkaBackend::connect(backend)?));
        }
        Log::open(log_config)
    })
    .await
    .map_err(std::io::Error::other)??;
    let where_ = log.remote().map_or_else(|| config.data_dir.display().to_string(), |remote| remote.describe());
    tracing::info!(log = %where_, open_ms = opened.elapsed().as_millis() as u64, "log ready");
    let (stopping, stopping_receiver) = watch::channel(false);
    let catalog = catalog::open(&config).await?;
    tokio::spawn(catalog::watch(catalog.clone(), config.catalog.reload_interval_ms, stopping_receiver.clone()));
    let collector = collector::start(&config, &log, catalog.clone(), stopping_receiver.clone()).await?;
    let webhooks = strom_webhooks::Webhooks::start(
        log.clone(),
        config.webhooks.clone(),
        config.streams.stream_config(),
        &config.data_dir,
    )
    .await?;
    let rules = rules::start(&config, &log, webhooks.destination_names())?;
    if let Some(rules) = &rules {
        tokio::spawn(rules::reload_on_hangup(rules.clone(), stopping_receiver.clone()));
    }
    let (lake, lake_sink) = lake::start(&config, &log, &catalog).await?;
    let state = Arc::new(api::AppState {
        log: log.clone(),
        catalog,
        inflight_bytes: Arc::new(Semaphore::new(config.http.inflight_bytes_max)),
        read_bytes: Arc::new(Semaphore::new(config.http.read_inflight_bytes_max)),
        tails: Arc::new(Semaphore::new(config.http.tail_connections_max)),
        round_robin: AtomicU64::new(0),
        shutdown: stopping_receiver,
        metrics,
        config: config.clone(),
        ingest: collector.ingest.clone(),
        sources: collector.sources.clone(),
        admin_tokens: collector.admin_tokens.clone(),
        webhooks: webhooks.clone(),
        rules: rules.clone(),
        lake,
    });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "HTTP API listening");
    println!("listening http://{addr}");
    let kafka = match kafka {
        Some(kafka) => {
            let addr = kafka.local_addr()?;
            tracing::info!(%addr, "Kafka listener listening");
            println!("listening kafka://{addr}");
            let (log, config, defaults) = (log.clone(), config.kafka.clone(), config.streams.stream_config());
            let validator: Arc<dyn strom_kafka::RecordValidator> =
                Arc::new(catalog::KafkaValidator(state.catalog.clone()));
            Some(tokio::spawn(strom_kafka::serve(
                kafka,
                log,
                config,
                defaults,
                Some(validator),
                state.shutdown.clone(),
            )))
        }
        None => None,
    };
    let mut started_stopping = state.shutdown.clone();
    let app = api::router(state);
    // The collector needs each connection's peer address (context.ip).
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; finishing in-flight requests");
        // Long polls and tails watch this and end, so the drain does not wait for them.
        let _ = stopping.send(true);
    });
    let timeout = Duration::from_millis(config.http.shutdown_timeout_ms);
    tokio::select! {
        result = server.into_future() => result?,
        _ = async {
            let _ = started_stopping.wait_for(|stopping| *stopping).await;
            tokio::time::sleep(timeout).await;
        } => {
            tracing::warn!(timeout_ms = config.http.shutdown_timeout_ms, "in-flight requests did not finish in time; stopping anyway");
        }
    }
    if let Some(kafka) = kafka {
        // Kafka connections end their long polls at the same signal and answer what they
        // read; the same timeout bounds the wait.
        let abort = kafka.abort_handle();
        if tokio::time::timeout(timeout, kafka).await.is_err() {
            tracing::warn!("Kafka connections did not finish in time; stopping anyway");
            abort.abort();
        }
    }
    // Rules first: their last commit may append delivery requests the webhooks then see
    // after the restart.
    if let Some(rules) = &rules {
        rules.close().await;
    }
    webhooks.close().await;
    collector.close(&log).await;
    if let Some(sink) = lake_sink {
        // After the collector: nothing is appended any more, so the last flush is the last.
        sink.close().await;
    }
    log.close().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

/// Every segment file stays open, so the soft limit on open files (often 1024) is raised to
/// the hard limit, as Kafka's operations guide asks of its brokers.
fn raise_open_files_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(open_files_max = ?limit.maximum, "raised the open-files limit"),
            Err(error) => tracing::warn!(%error, current = ?limit.current, "could not raise the open-files limit"),
        }
    }
}

/// Logging to stderr as `[logging]` says (`strom serve` and `strom demo`); once per process.
pub fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.logging.level).unwrap_or_else(|error| {
        eprintln!("bad log filter {:?} ({error}); using info", config.logging.level);
        tracing_subscriber::EnvFilter::new("info")
    });
    // Colours only for a terminal: logs written to files and collectors stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = match config.logging.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// The process-wide Prometheus recorder (installed once; servers started in one test process
/// share it).
fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let seconds = [
                0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ];
            let counts = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0];
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full("strom_log_records_per_fsync".into()), &counts))
                .expect("bucket lists are not empty")
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows only this server's recorder");
            }
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("strom-metrics".into())
                .spawn(move || {
                    loop {
                        // Histograms are drained into their buckets here, keeping their memory bounded.
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn the metrics upkeep thread");
            handle
        })
        .clone()
}
