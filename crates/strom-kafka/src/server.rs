//! The listener: accepts connections (bounded), hands each to its task, stops on shutdown.

use std::sync::Arc;

use strom_log::{Log, StreamConfig};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::KafkaConfig;
use crate::groups::Coordinator;
use crate::limits::{GROUP_TICK_MS, TLS_HANDSHAKE_MS_MAX};
use crate::producers::Producers;
use crate::sasl::Authenticator;
use std::time::Duration;

/// The one broker's node id: every partition's leader, the coordinator of every group.
pub(crate) const NODE_ID: i32 = 0;

/// What every connection's handlers share.
pub(crate) struct Broker {
    pub log: Arc<Log>,
    pub config: KafkaConfig,
    /// Settings of topics created without their own (the server's `[streams]` section).
    pub stream_defaults: StreamConfig,
    /// Bytes of request frames held, across connections (`inflight_bytes_max`).
    pub request_bytes: Arc<Semaphore>,
    /// Bytes of record batches read for fetch responses, across connections.
    pub fetch_bytes: Arc<Semaphore>,
    /// True once the server is stopping: long polls end, connections close.
    pub shutdown: watch::Receiver<bool>,
    /// Consumer-group membership.
    pub groups: Coordinator,
    /// Idempotent producers' sequences per partition.
    pub producers: Producers,
    /// Catalog enforcement on produce (none: batches are stored as sent).
    pub validator: Option<Arc<dyn crate::RecordValidator>>,
    /// SASL users and mechanisms (none: no authentication).
    pub sasl: Authenticator,
}

/// Serves Kafka clients on an already bound listener until `shutdown` turns true, then stops
/// accepting, lets each connection finish the requests it has read, and returns.
pub async fn serve(
    listener: TcpListener,
    log: Arc<Log>,
    config: KafkaConfig,
    stream_defaults: StreamConfig,
    validator: Option<Arc<dyn crate::RecordValidator>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(config.connections_max));
    // The files were checked when the configuration was loaded; they may have changed since.
    let tls = match config.tls.as_ref().map(crate::tls::acceptor).transpose() {
        Ok(tls) => tls,
        Err(error) => {
            tracing::error!(%error, "Kafka listener not started: its TLS certificate cannot be loaded");
            return;
        }
    };
    let dead_lettering = config.invalid_records == crate::InvalidRecords::DeadLetter
        || config.invalid_records_by_stream.values().any(|mode| *mode == crate::InvalidRecords::DeadLetter);
    if dead_lettering {
        match log.create_stream(&config.dead_letter_stream, stream_defaults.clone()).await {
            Ok(_) | Err(strom_log::LogError::StreamExists(_)) => {}
            Err(error) => {
                tracing::error!(%error, stream = %config.dead_letter_stream, "cannot create the dead-letter stream; invalid records will be refused")
            }
        }
    }
    let sasl = Authenticator::new(&config.sasl);
    let broker = Arc::new(Broker {
        log,
        request_bytes: Arc::new(Semaphore::new(config.inflight_bytes_max)),
        fetch_bytes: Arc::new(Semaphore::new(config.fetch_inflight_bytes_max)),
        config,
        stream_defaults,
        shutdown: shutdown.clone(),
        groups: Coordinator::new(),
        producers: Producers::new(),
        validator,
        sasl,
    });
    // Sessions and rebalance deadlines are checked on a timer.
    let ticking = broker.clone();
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(std::time::Duration::from_millis(GROUP_TICK_MS));
        let mut shutdown = ticking.shutdown.clone();
        loop {
            tokio::select! {
                now = interval.tick() => ticking.groups.tick(now),
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            }
        }
    });
    let open = metrics::gauge!("strom_kafka_connections");
    let refused = metrics::counter!("strom_kafka_connections_refused_total");
    let mut tasks = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopping| *stopping) => break,
        };
        // Reap finished connection tasks so the set does not grow with the connections served.
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(%error, "cannot accept a Kafka connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            refused.increment(1);
            tracing::warn!(%peer, max = broker.config.connections_max, "too many Kafka connections; closing the new one");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(local_addr) = stream.local_addr() else { continue };
        let broker = broker.clone();
        let open = open.clone();
        let tls = tls.clone();
        tasks.spawn(async move {
            open.increment(1.0);
            match tls {
                None => crate::connection::run(broker, stream, local_addr, peer).await,
                Some(acceptor) => {
                    let handshake = Duration::from_millis(TLS_HANDSHAKE_MS_MAX);
                    match tokio::time::timeout(handshake, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => crate::connection::run(broker, stream, local_addr, peer).await,
                        Ok(Err(error)) => tracing::info!(%peer, %error, "TLS handshake with a Kafka client failed"),
                        Err(_) => tracing::info!(%peer, "TLS handshake with a Kafka client timed out"),
                    }
                }
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    tracing::info!(connections = tasks.len(), "Kafka listener stopping: finishing the requests read");
    while tasks.join_next().await.is_some() {}
}
