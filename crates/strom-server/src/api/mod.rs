//! The HTTP API (docs/HTTP_API.md). Wire types meet the log's types here and only here.

mod catalog;
mod collect;
mod groups;
pub(crate) mod produce;
mod query;
mod read;
mod rules;
mod sources;
mod streams;
mod webhooks;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::de::DeserializeOwned;
use serde_json::json;
use strom_log::Log;
use tokio::sync::{Semaphore, watch};

use crate::config::Config;
use crate::error::ApiError;

pub(crate) struct AppState {
    pub log: Arc<Log>,
    pub catalog: Arc<strom_catalog::Catalog>,
    pub config: Config,
    /// Produce request bytes held at once; a request that cannot get its bytes is answered 429.
    pub inflight_bytes: Arc<Semaphore>,
    /// Bytes being read for responses at once; a read that cannot get its bytes is answered 429.
    pub read_bytes: Arc<Semaphore>,
    pub tails: Arc<Semaphore>,
    pub round_robin: AtomicU64,
    /// Turns true when shutdown starts: long polls and tails end.
    pub shutdown: watch::Receiver<bool>,
    pub metrics: PrometheusHandle,
    pub ingest: Arc<strom_ingest::Ingest>,
    pub sources: Arc<strom_ingest::source::Sources>,
    /// SHA-256 digests of the admin tokens; empty leaves the admin API open.
    pub admin_tokens: std::collections::HashSet<[u8; 32]>,
    pub webhooks: Arc<strom_webhooks::Webhooks>,
    /// None when `rules.enabled` is false.
    pub rules: Option<Arc<strom_rules::Rules>>,
    /// The lake, when configured (`[lake]`): queries and compaction.
    pub lake: Option<strom_lake::Lake>,
}

pub(crate) fn router(state: Arc<AppState>) -> Router {
    // The tracking API authenticates each request by its write key.
    let tracking = Router::new()
        .route("/v1/track", post(collect::track).options(collect::preflight))
        .route("/v1/page", post(collect::page).options(collect::preflight))
        .route("/v1/screen", post(collect::screen).options(collect::preflight))
        .route("/v1/identify", post(collect::identify).options(collect::preflight))
        .route("/v1/group", post(collect::group).options(collect::preflight))
        .route("/v1/alias", post(collect::alias).options(collect::preflight))
        .route("/v1/batch", post(collect::batch).options(collect::preflight))
        .route("/v1/import", post(collect::batch).options(collect::preflight));
    // Everything else needs an admin token (when configured) and never takes a write key.
    let admin = Router::new()
        .route("/v1/sources", get(sources::list).post(sources::create))
        .route("/v1/sources/{source}", get(sources::get).delete(sources::delete))
        .route("/v1/sources/{source}/keys", post(sources::add_key))
        .route("/v1/dead-letters/replay", post(collect::replay))
        .route("/v1/streams", get(streams::list).post(streams::create))
        .route("/v1/streams/{stream}", get(streams::describe).delete(streams::delete))
        .route("/v1/streams/{stream}/events", post(produce::produce))
        .route("/v1/streams/{stream}/partitions/{partition}/events", get(read::read_partition))
        .route("/v1/streams/{stream}/tail", get(read::tail))
        .route("/v1/groups", get(groups::list))
        .route("/v1/groups/{group}/streams/{stream}/events", get(groups::read))
        .route("/v1/groups/{group}/offsets", get(groups::offsets).post(groups::commit))
        .route("/v1/groups/{group}/offsets/reset", post(groups::reset))
        .route("/v1/rules", get(rules::list))
        .route("/v1/rules/reload", post(rules::reload))
        .route("/v1/rules/backtest", post(rules::backtest))
        .route("/v1/rules/{name}", get(rules::get).put(rules::put).delete(rules::delete))
        .route("/v1/rules/{name}/pause", post(rules::pause))
        .route("/v1/rules/{name}/resume", post(rules::resume))
        .route("/v1/webhooks/destinations", get(webhooks::list))
        .route("/v1/webhooks/destinations/{name}", get(webhooks::get))
        .route("/v1/webhooks/destinations/{name}/enable", post(webhooks::enable))
        .route("/v1/query", post(query::query))
        .route("/v1/lake/compact", post(query::compact))
        .route("/v1/lake/status", get(query::status))
        .merge(catalog::admin_routes())
        .nest("/schema-registry", catalog::registry_routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), sources::admin_guard));
    Router::new()
        .merge(tracking)
        .merge(admin)
        .route("/metrics", get(metrics))
        .route("/health/live", get(|| async { Json(json!({"status": "live"})) }))
        .route("/health/ready", get(ready))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "the route does not take this method")
        })
        .layer(middleware::from_fn(track))
        .with_state(state)
}

/// Counts and times every request by route, method and status.
async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route =
        request.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let seconds = started.elapsed().as_secs_f64();
    metrics::counter!("strom_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status).increment(1);
    metrics::histogram!("strom_http_request_duration_seconds", "route" => route, "method" => method).record(seconds);
    response
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    // Consumer lag is computed when scraped: it changes with every append and commit, and a
    // scrape is the only moment it is looked at.
    for (group, stream, partition, committed) in state.log.groups().all() {
        let Ok(handle) = state.log.stream(&stream) else { continue };
        let Ok(p) = handle.partition(partition) else { continue };
        let lag = p.log_end_offset().saturating_sub(committed);
        metrics::gauge!("strom_consumer_group_lag_records", "group" => group, "stream" => stream, "partition" => partition.to_string())
            .set(lag as f64);
    }
    let body = state.metrics.render();
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn ready(State(state): State<Arc<AppState>>) -> Response {
    if *state.shutdown.borrow() {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping")
            .into_response();
    }
    let poisoned = state.log.poisoned();
    if poisoned.is_empty() {
        return Json(json!({"status": "ready"})).into_response();
    }
    let detail: Vec<_> =
        poisoned.iter().map(|(s, p, cause)| json!({"stream": s, "partition": p, "cause": cause})).collect();
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "partition_unavailable", "some partitions are poisoned")
        .with_detail(json!(detail))
        .into_response()
}

/// Parses query parameters into `T`, answering 400 with the parameter's problem.
pub(crate) fn query<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|rejection| ApiError::invalid(format!("bad query parameter: {}", rejection.body_text())))
}

/// Holds a read's byte budget for the response being built.
pub(crate) fn reserve_read(state: &AppState, bytes: usize) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.read_bytes.clone().try_acquire_many_owned(bytes as u32).map_err(|_| {
        metrics::counter!("strom_http_overloaded_total").increment(1);
        ApiError::overloaded("too many read bytes in flight; retry later")
    })
}

/// Runs blocking file reads off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()))?
}

/// Reads a body whole, refusing it with 413 once it passes `max` bytes (nothing beyond the
/// limit is ever buffered).
pub(crate) async fn collect_body(body: axum::body::Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::{BodyExt, LengthLimitError, Limited};
    let collected = Limited::new(body, max).collect().await.map_err(|error| {
        if error.downcast_ref::<LengthLimitError>().is_some() {
            body_too_large(max)
        } else {
            ApiError::invalid(format!("could not read the body: {error}"))
        }
    })?;
    Ok(collected.to_bytes())
}

pub(crate) fn body_too_large(max: usize) -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body is over {max} bytes"))
        .with_detail(json!({"limit": max}))
}

/// Reads a small JSON body (admin and commit requests) with a byte limit.
pub(crate) async fn json_body<T: DeserializeOwned>(body: axum::body::Body, max: usize) -> Result<T, ApiError> {
    let bytes = collect_body(body, max).await?;
    serde_json::from_slice(&bytes).map_err(|error| ApiError::malformed(error.to_string()))
}

/// Small bodies: stream definitions, commits, resets.
pub(crate) const ADMIN_BODY_BYTES_MAX: usize = 64 * 1024;

/// A partition number from a path segment, with the API's error on garbage.
pub(crate) fn partition_number(text: &str) -> Result<u32, ApiError> {
    text.parse().map_err(|_| ApiError::invalid(format!("partition {text:?} is not a partition number")))
}
