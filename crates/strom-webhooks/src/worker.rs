//! One destination's worker: reads its requests from its partition of the deliveries stream,
//! keeps up to `concurrency` deliveries in flight, and commits its position up to the oldest
//! request not yet finished (delivered or dead-lettered).

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strom_log::{CommitMode, Durability, EncodedBatch, Lease, LogError, RecordIn, RecordOut, Share, partitioner};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::circuit::Permit;
use crate::limits::*;
use crate::request::{DeliveryRequest, REASON_HEADER};
use crate::retry::{backoff_ms, parse_retry_after};
use crate::{DestinationState, Shared};

/// How a delivery task ended.
enum Finish {
    /// Delivered or dead-lettered: the position may move past it.
    Done,
    /// Not finished (shutdown, or the destination was disabled): the request goes back to the
    /// worker, which sends it again once the destination is active.
    Parked(RecordOut),
}

/// Runs a worker for each destination whose partition of the deliveries stream this process
/// owns (all of them on the embedded log; a share of them on the Kafka backend, where the
/// processes divide the partitions). A worker stops when its partition is taken away, after
/// committing, and is started again when it comes back.
pub(crate) async fn supervise(
    shared: Arc<Shared>,
    destinations: Vec<Arc<DestinationState>>,
    mut share: Share,
    mut stopped: watch::Receiver<bool>,
) {
    let partitions = shared.log.stream(&shared.config.deliveries_stream).map_or(1, |s| s.partitions().len() as u32);
    let mut workers: Vec<Option<tokio::task::JoinHandle<()>>> = destinations.iter().map(|_| None).collect();
    loop {
        if *stopped.borrow() {
            break;
        }
        for (destination, worker) in destinations.iter().zip(workers.iter_mut()) {
            if worker.as_ref().is_some_and(|task| !task.is_finished()) {
                continue;
            }
            let partition = partitioner::partition_for_key(destination.name().as_bytes(), partitions);
            if let Some(lease) = share.lease(partition) {
                let (shared, destination, stopped) = (shared.clone(), destination.clone(), stopped.clone());
                *worker = Some(tokio::spawn(run(shared, destination, stopped, lease)));
            }
        }
        // A worker that ended on its own (an error) is started again after a pause.
        tokio::select! {
            _ = share.changed() => {}
            _ = stopped.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)) => {}
        }
    }
    for worker in workers.into_iter().flatten() {
        let _ = worker.await;
    }
    share.leave().await;
}

/// One destination's worker, while `lease` holds its partition.
async fn run(
    shared: Arc<Shared>,
    destination: Arc<DestinationState>,
    mut stopped: watch::Receiver<bool>,
    mut lease: Lease,
) {
    let name = destination.name().to_string();
    let group = format!("strom-webhooks.{name}");
    let stream_name = shared.config.deliveries_stream.clone();
    let labels = [("destination", name.clone())];
    let lag_gauge = metrics::gauge!("strom_webhooks_lag_records", &labels);
    let in_flight_gauge = metrics::gauge!("strom_webhooks_in_flight", &labels);
    let circuit_gauge = metrics::gauge!("strom_webhooks_circuit_state", &labels);
    metrics::gauge!("strom_webhooks_disabled", &labels).set(if destination.is_disabled() { 1.0 } else { 0.0 });

    let stream = match shared.log.stream(&stream_name) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(destination = %name, %error, "webhook worker cannot open the deliveries stream");
            sleep_or_stop(&mut stopped, Duration::from_millis(IDLE_WAIT_MS)).await;
            return;
        }
    };
    let partition_id = lease.partition();
    let start = match stream.partition(partition_id) {
        Ok(partition) => partition.log_start_offset(),
        Err(_) => return,
    };
    // Asked of the store, not a copy: another process may have delivered for this destination
    // before the partition came here.
    let committed_now = {
        let groups_log = shared.log.clone();
        let (group, stream_name) = (group.clone(), stream_name.clone());
        tokio::task::spawn_blocking(move || groups_log.groups().committed_now(&group, &stream_name, partition_id)).await
    };
    let mut committed = match committed_now {
        Ok(Ok(committed)) => committed.unwrap_or(start),
        Ok(Err(error)) => {
            tracing::error!(destination = %name, %error, "cannot read the destination's position; trying again");
            sleep_or_stop(&mut stopped, Duration::from_millis(IDLE_WAIT_MS)).await;
            return;
        }
        Err(_) => return,
    };
    tracing::info!(destination = %name, partition = partition_id, committed, "webhook worker started");
    let mut next_read = committed;
    // Offsets started but not finished, and requests read but not started.
    let mut unfinished: BTreeSet<u64> = BTreeSet::new();
    let mut buffer: VecDeque<RecordOut> = VecDeque::new();
    let mut tasks: JoinSet<(u64, Finish)> = JoinSet::new();
    let mut last_commit = std::time::Instant::now();
    {
        let mut stats = destination.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.partition = partition_id;
        stats.committed_offset = committed;
        stats.delivering_here = true;
    }
    let concurrency = destination.destination.config.concurrency;

    loop {
        // Stopping: the process stops, or the partition goes to another process.
        let stopping = *stopped.borrow() || lease.is_revoked();
        // Finished deliveries.
        while let Some(joined) = tasks.try_join_next() {
            finished(joined, &mut unfinished, &mut buffer);
        }
        let Ok(partition) = stream.partition(partition_id) else { return };
        // The position: everything below the oldest unfinished or unstarted request is done.
        let low = [unfinished.first().copied(), buffer.front().map(|r| r.offset), Some(next_read)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_read);
        let commit_due = last_commit.elapsed() >= Duration::from_millis(COMMIT_INTERVAL_MS) || stopping;
        // A lost partition may have another owner already: its position is theirs to move.
        if low > committed && commit_due && !lease.is_lost() {
            let groups_log = shared.log.clone();
            let (group, stream_name) = (group.clone(), stream_name.clone());
            let result = tokio::task::spawn_blocking(move || {
                groups_log.groups().commit(&group, &stream_name, &[(partition_id, low)], CommitMode::Forward)
            })
            .await;
            match result {
                Ok(Ok(())) => committed = low,
                Ok(Err(error)) => tracing::error!(destination = %name, %error, "cannot commit webhook progress"),
                Err(_) => {}
            }
            last_commit = std::time::Instant::now();
        }
        {
            let mut stats = destination.stats.lock().unwrap_or_else(|e| e.into_inner());
            stats.committed_offset = committed;
            stats.lag_records = partition.log_end_offset().saturating_sub(committed);
            stats.in_flight = tasks.len();
            lag_gauge.set(stats.lag_records as f64);
            in_flight_gauge.set(tasks.len() as f64);
        }
        circuit_gauge.set(destination.circuit.lock().unwrap_or_else(|e| e.into_inner()).state().gauge());
        if stopping {
            tasks.shutdown().await;
            destination.stats.lock().unwrap_or_else(|e| e.into_inner()).delivering_here = false;
            tracing::info!(destination = %name, partition = partition_id, committed, revoked = lease.is_revoked(), "webhook worker stopped");
            return;
        }

        if destination.is_disabled() {
            // Wait for what is in flight to park (parked requests return to the buffer), then
            // sleep until enabled.
            if !tasks.is_empty() {
                tokio::select! {
                    Some(joined) = tasks.join_next() => finished(joined, &mut unfinished, &mut buffer),
                    _ = stopped.changed() => {}
                    _ = lease.revoked() => {}
                }
                continue;
            }
            let enabled = destination.enabled.notified();
            if destination.is_disabled() {
                tokio::select! {
                    _ = enabled => {}
                    _ = stopped.changed() => {}
                    _ = lease.revoked() => {}
                    _ = tokio::time::sleep(Duration::from_millis(IDLE_WAIT_MS)) => {}
                }
            }
            continue;
        }

        // Read ahead.
        if buffer.len() < READ_AHEAD_MAX / 2 && next_read < partition.log_end_offset() {
            let reader = stream.clone();
            let from = next_read;
            let wanted = READ_AHEAD_MAX - buffer.len();
            let read = tokio::task::spawn_blocking(move || {
                reader.partition(partition_id).and_then(|p| p.read_records(from, wanted, READ_BYTES_MAX))
            })
            .await;
            match read {
                Ok(Ok(read)) => {
                    next_read = read.next_offset.max(next_read);
                    buffer.extend(read.records.into_iter().filter(|r| r.key.as_deref() == Some(name.as_bytes())));
                }
                Ok(Err(LogError::OffsetOutOfRange { log_start_offset, .. })) if from < log_start_offset => {
                    // Retention deleted requests that were never sent: say so loudly.
                    let lost = log_start_offset - from;
                    metrics::counter!("strom_webhooks_expired_total", &labels).increment(lost);
                    tracing::error!(destination = %name, lost, "delivery requests expired by retention before they were sent");
                    next_read = log_start_offset;
                    buffer.clear();
                    unfinished.retain(|&offset| offset >= log_start_offset);
                }
                Ok(Err(error)) => {
                    tracing::error!(destination = %name, %error, "cannot read delivery requests");
                    sleep_or_stop(&mut stopped, Duration::from_millis(IDLE_WAIT_MS)).await;
                }
                Err(_) => {}
            }
        }

        // Start deliveries.
        while tasks.len() < concurrency {
            let Some(record) = buffer.pop_front() else { break };
            unfinished.insert(record.offset);
            let (shared, destination, stopped) = (shared.clone(), destination.clone(), stopped.clone());
            tasks.spawn(async move {
                let offset = record.offset;
                (offset, deliver(&shared, &destination, record, stopped).await)
            });
        }

        // Wait for something to do.
        let idle = buffer.is_empty() && next_read >= partition.log_end_offset();
        let room = tasks.len() < concurrency;
        let commit_in = Duration::from_millis(COMMIT_INTERVAL_MS);
        tokio::select! {
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => finished(joined, &mut unfinished, &mut buffer),
            _ = partition.wait_for(next_read, Duration::from_millis(IDLE_WAIT_MS)), if idle && room => {}
            _ = stopped.changed() => {}
            _ = lease.revoked() => {}
            _ = tokio::time::sleep(commit_in), if !idle || !room => {}
        }
    }
}

/// A finished delivery leaves the unfinished set; a parked one goes back into the buffer in
/// offset order, so the position still cannot pass it and it is started again whenever the
/// destination is active, however soon after its disabling the destination was enabled. A task
/// that did not return (it panicked) stays unfinished: the position stops there.
fn finished(
    joined: Result<(u64, Finish), tokio::task::JoinError>,
    unfinished: &mut BTreeSet<u64>,
    buffer: &mut VecDeque<RecordOut>,
) {
    match joined {
        Ok((offset, Finish::Done)) => {
            unfinished.remove(&offset);
        }
        Ok((offset, Finish::Parked(record))) => {
            unfinished.remove(&offset);
            let at = buffer.partition_point(|queued| queued.offset < offset);
            buffer.insert(at, record);
        }
        Err(_) => {}
    }
}

async fn sleep_or_stop(stopped: &mut watch::Receiver<bool>, duration: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(duration) => {}
        _ = stopped.changed() => {}
    }
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The result of one attempt.
enum Attempt {
    Delivered,
    Gone,
    Failed { cause: &'static str, status: Option<u16>, retry_after: Option<Duration>, message: String },
}

/// Why a delivery goes to the dead-letter stream.
struct DeadLetter {
    reason: String,
    attempts: u32,
    last_status: Option<u16>,
    last_error: Option<String>,
}

/// Delivers one request: attempts until success, a 410, the retry horizon, or shutdown.
async fn deliver(
    shared: &Shared,
    destination: &DestinationState,
    record: RecordOut,
    mut stopped: watch::Receiver<bool>,
) -> Finish {
    let name = destination.name();
    let labels = [("destination", name.to_string())];
    let request = match parse(&record, name) {
        Ok(request) => request,
        Err(reason) => {
            let dead = DeadLetter { reason, attempts: 0, last_status: None, last_error: None };
            return dead_letter(shared, destination, record, dead, &mut stopped).await;
        }
    };
    let config = &destination.destination.config;
    let body = Bytes::from(serde_json::to_vec(&request.payload).unwrap_or_default());
    // The horizon counts from when the request was queued, which survives restarts; every
    // process start still makes at least one attempt.
    let deadline_ms = record.timestamp_ms.saturating_add(config.retry_horizon_ms as i64);
    let mut attempts = 0u32;
    loop {
        // The circuit breaker's permission.
        let probe = loop {
            if *stopped.borrow() || destination.is_disabled() {
                return Finish::Parked(record);
            }
            let now = shared.started.elapsed().as_millis() as u64;
            let permit = destination.circuit.lock().unwrap_or_else(|e| e.into_inner()).acquire(now);
            match permit {
                Permit::Go => break false,
                Permit::Probe => break true,
                Permit::WaitUntil(at) => {
                    let wait = Duration::from_millis(at.saturating_sub(now).clamp(1, IDLE_WAIT_MS));
                    sleep_or_stop(&mut stopped, wait).await;
                }
            }
        };
        let started = std::time::Instant::now();
        let result = attempt(shared, destination, &request.id, body.clone()).await;
        metrics::histogram!("strom_webhooks_attempt_seconds", &labels).record(started.elapsed().as_secs_f64());
        attempts += 1;
        let now_mono = shared.started.elapsed().as_millis() as u64;
        match result {
            Attempt::Delivered => {
                destination.circuit.lock().unwrap_or_else(|e| e.into_inner()).success();
                metrics::counter!("strom_webhooks_attempts_total", "destination" => name.to_string(), "outcome" => "success").increment(1);
                metrics::counter!("strom_webhooks_delivered_total", &labels).increment(1);
                let queued_for = (now_ms() - record.timestamp_ms).max(0) as f64 / 1000.0;
                metrics::histogram!("strom_webhooks_delivery_seconds", &labels).record(queued_for);
                destination.stats.lock().unwrap_or_else(|e| e.into_inner()).delivered += 1;
                return Finish::Done;
            }
            Attempt::Gone => {
                destination.circuit.lock().unwrap_or_else(|e| e.into_inner()).success();
                metrics::counter!("strom_webhooks_attempts_total", "destination" => name.to_string(), "outcome" => "gone").increment(1);
                shared
                    .disable(destination, format!("the destination answered 410 Gone to delivery {}", request.id))
                    .await;
                return Finish::Parked(record);
            }
            Attempt::Failed { cause, status, retry_after, message } => {
                if probe {
                    tracing::warn!(destination = name, %message, "the circuit's probe failed");
                }
                destination.circuit.lock().unwrap_or_else(|e| e.into_inner()).failure(now_mono, probe);
                metrics::counter!("strom_webhooks_attempts_total", "destination" => name.to_string(), "outcome" => cause).increment(1);
                {
                    let mut stats = destination.stats.lock().unwrap_or_else(|e| e.into_inner());
                    stats.failed_attempts += 1;
                    stats.last_error = Some(message.clone());
                }
                let backoff = Duration::from_millis(backoff_ms(
                    attempts,
                    config.retry_initial_ms,
                    config.retry_max_ms,
                    fastrand::f64(),
                ));
                // The receiver's Retry-After is honoured, within the configured longest wait.
                let wait = retry_after
                    .map_or(backoff, |asked| asked.min(Duration::from_millis(config.retry_max_ms)).max(backoff));
                if now_ms().saturating_add(wait.as_millis() as i64) > deadline_ms {
                    let dead = DeadLetter {
                        reason: format!("no success within the retry horizon of {} ms", config.retry_horizon_ms),
                        attempts,
                        last_status: status,
                        last_error: Some(message),
                    };
                    return dead_letter(shared, destination, record, dead, &mut stopped).await;
                }
                tracing::debug!(destination = name, id = %request.id, attempts, wait_ms = wait.as_millis() as u64, %message, "webhook delivery failed; retrying");
                metrics::counter!("strom_webhooks_retries_total", &labels).increment(1);
                sleep_or_stop(&mut stopped, wait).await;
            }
        }
    }
}

fn parse(record: &RecordOut, name: &str) -> Result<DeliveryRequest, String> {
    let value = record.value.as_ref().ok_or("the delivery request has no value")?;
    if value.len() > REQUEST_BYTES_MAX {
        return Err(format!("the delivery request is {} bytes; at most {REQUEST_BYTES_MAX} are sent", value.len()));
    }
    let request: DeliveryRequest =
        serde_json::from_slice(value).map_err(|error| format!("the delivery request is not valid: {error}"))?;
    if request.destination != name {
        return Err(format!("the request names destination {:?} but is keyed {name:?}", request.destination));
    }
    if request.id.is_empty() || request.id.len() > 256 {
        return Err("the delivery request's id must be 1 to 256 bytes".into());
    }
    Ok(request)
}

async fn attempt(shared: &Shared, destination: &DestinationState, id: &str, body: Bytes) -> Attempt {
    let config = &destination.destination.config;
    let timestamp_s = now_ms() / 1000;
    let signature = destination.destination.key.sign(id, timestamp_s, &body);
    let sent = shared
        .client
        .post(destination.destination.url.clone())
        .headers(destination.destination.headers.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp_s.to_string())
        .header("webhook-signature", signature)
        .timeout(Duration::from_millis(config.timeout_ms))
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(error) => {
            let refused = refused_address(&error);
            let cause = if refused.is_some() {
                "refused_address"
            } else if error.is_timeout() {
                "timeout"
            } else if error.is_connect() {
                "connect"
            } else {
                "request"
            };
            let message = refused.unwrap_or_else(|| error_chain(&error));
            return Attempt::Failed { cause, status: None, retry_after: None, message };
        }
    };
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    if status == reqwest::StatusCode::GONE {
        return Attempt::Gone;
    }
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    // A little of the answer's body, for the error message; never more.
    let mut excerpt = Vec::new();
    while excerpt.len() < ERROR_BODY_BYTES_MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                excerpt.extend_from_slice(&chunk[..chunk.len().min(ERROR_BODY_BYTES_MAX - excerpt.len())])
            }
            _ => break,
        }
    }
    let cause = match status.as_u16() {
        300..=399 => "status_3xx",
        400..=499 => "status_4xx",
        _ => "status_5xx",
    };
    let message = format!("HTTP {status}: {}", String::from_utf8_lossy(&excerpt).trim());
    Attempt::Failed { cause, status: Some(status.as_u16()), retry_after, message }
}

fn refused_address(error: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<crate::RefusedAddress>() {
            return Some(format!("address refused: {refused}"));
        }
        source = current.source();
    }
    None
}

fn error_chain(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(current) = source {
        message.push_str(": ");
        message.push_str(&current.to_string());
        source = current.source();
    }
    message
}

/// Appends the request, unchanged, to the dead-letter stream with its reason, durably, before
/// the position may pass it. Retries while the log refuses (it is then itself failing).
async fn dead_letter(
    shared: &Shared,
    destination: &DestinationState,
    record: RecordOut,
    dead: DeadLetter,
    stopped: &mut watch::Receiver<bool>,
) -> Finish {
    let name = destination.name();
    let reason = serde_json::json!({
        "reason": dead.reason,
        "destination": name,
        "attempts": dead.attempts,
        "last_status": dead.last_status,
        "last_error": dead.last_error,
        "deliveries_offset": record.offset,
        "dead_lettered_ms": now_ms(),
    });
    let stream_name = &shared.config.dead_letter_stream;
    loop {
        let appended = async {
            let stream = shared.log.stream(stream_name)?;
            let partition = partitioner::partition_for_key(name.as_bytes(), stream.partitions().len() as u32);
            let record_in = RecordIn {
                key: record.key.clone(),
                value: record.value.clone(),
                timestamp_ms: now_ms(),
                headers: vec![(REASON_HEADER.to_string(), Bytes::from(reason.to_string()))],
            };
            let batch = EncodedBatch::encode(&[record_in])?;
            stream.partition(partition)?.append(batch, Durability::Sync).await
        }
        .await;
        match appended {
            Ok(_) => {
                tracing::warn!(destination = name, offset = record.offset, reason = %dead.reason, "webhook delivery dead-lettered");
                metrics::counter!("strom_webhooks_dead_lettered_total", "destination" => name.to_string()).increment(1);
                destination.stats.lock().unwrap_or_else(|e| e.into_inner()).dead_lettered += 1;
                return Finish::Done;
            }
            Err(error) => {
                tracing::error!(destination = name, %error, "cannot dead-letter a webhook delivery; retrying");
                if *stopped.borrow() {
                    return Finish::Parked(record);
                }
                sleep_or_stop(stopped, Duration::from_millis(IDLE_WAIT_MS)).await;
            }
        }
    }
}
