use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use strom_log::{Stream, StreamConfig};

use super::{ADMIN_BODY_BYTES_MAX, AppState, json_body};
use crate::error::ApiError;

/// `POST /v1/streams`. Absent fields take the server's defaults; `null` retention means
/// keep forever.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateStream {
    name: String,
    partitions: Option<u32>,
    #[serde(default, deserialize_with = "present")]
    retention_ms: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    retention_bytes: Option<Option<u64>>,
    segment_bytes: Option<u64>,
    segment_ms: Option<u64>,
}

/// Tells an absent field (outer `None`) from an explicit `null` (`Some(None)`).
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(deserializer).map(Some)
}

pub(crate) fn describe_stream(stream: &Stream) -> Value {
    let partitions: Vec<_> = stream.partitions().iter().map(|p| p.status()).collect();
    let end_total: u64 = partitions.iter().map(|p| p.log_end_offset).sum();
    let size_total: u64 = partitions.iter().map(|p| p.size_bytes).sum();
    json!({
        "name": stream.name,
        "config": stream.config,
        "partitions": partitions,
        "log_end_offset_total": end_total,
        "size_bytes_total": size_total,
    })
}

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    let streams: Vec<Value> = state.log.streams().iter().map(|s| describe_stream(s)).collect();
    Json(json!({"streams": streams}))
}

pub(super) async fn create(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let request: CreateStream = json_body(body, ADMIN_BODY_BYTES_MAX).await?;
    let defaults = state.config.streams.stream_config();
    let config = StreamConfig {
        partitions: request.partitions.unwrap_or(defaults.partitions),
        retention_ms: request.retention_ms.unwrap_or(defaults.retention_ms),
        retention_bytes: request.retention_bytes.unwrap_or(defaults.retention_bytes),
        segment_bytes: request.segment_bytes.unwrap_or(defaults.segment_bytes),
        segment_ms: request.segment_ms.unwrap_or(defaults.segment_ms),
    };
    let stream = state.log.create_stream(&request.name, config).await?;
    Ok((StatusCode::CREATED, Json(describe_stream(&stream))).into_response())
}

pub(super) async fn describe(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let stream = state.log.stream(&name)?;
    Ok(Json(describe_stream(&stream)))
}

pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.log.delete_stream(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}
