//! The one error shape of the HTTP API: `{"error": {"code", "message", "detail"}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use strom_log::LogError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub detail: Value,
    /// Seconds for `Retry-After` (429 and 503).
    pub retry_after_s: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), detail: Value::Null, retry_after_s: None }
    }

    pub fn with_detail(mut self, detail: Value) -> ApiError {
        self.detail = detail;
        self
    }

    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn malformed(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", message)
    }

    pub fn overloaded(message: impl Into<String>) -> ApiError {
        ApiError { retry_after_s: Some(1), ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message, "detail": self.detail}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after_s {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

impl From<LogError> for ApiError {
    fn from(error: LogError) -> ApiError {
        let message = error.to_string();
        match error {
            LogError::StreamNotFound(stream) => {
                ApiError::new(StatusCode::NOT_FOUND, "stream_not_found", message).with_detail(json!({"stream": stream}))
            }
            LogError::PartitionNotFound { stream, partition } => {
                ApiError::new(StatusCode::NOT_FOUND, "partition_not_found", message)
                    .with_detail(json!({"stream": stream, "partition": partition}))
            }
            LogError::StreamExists(stream) => {
                ApiError::new(StatusCode::CONFLICT, "stream_exists", message).with_detail(json!({"stream": stream}))
            }
            LogError::InvalidStreamName { .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_stream_name", message)
            }
            LogError::InvalidConfig(_) | LogError::InvalidBatch(_) => ApiError::invalid(message),
            LogError::TooManyStreams { .. } => ApiError::new(StatusCode::CONFLICT, "too_many_streams", message),
            LogError::OffsetOutOfRange { offset, log_start_offset, log_end_offset } => {
                ApiError::new(StatusCode::RANGE_NOT_SATISFIABLE, "offset_out_of_range", message).with_detail(json!({
                    "offset": offset, "log_start_offset": log_start_offset, "log_end_offset": log_end_offset
                }))
            }
            LogError::Overloaded { .. } => ApiError::overloaded(message),
            LogError::Poisoned { stream, partition, .. } => ApiError {
                retry_after_s: Some(30),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "partition_unavailable", message)
                    .with_detail(json!({"stream": stream, "partition": partition}))
            },
            LogError::CorruptRecords { stream, partition, offset, segment, position, .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "corrupt_records", message).with_detail(json!({
                    "stream": stream, "partition": partition, "offset": offset, "segment": segment, "position": position
                }))
            }
            LogError::OffsetRegression { offset, committed, partition, .. } => {
                ApiError::new(StatusCode::CONFLICT, "offset_regression", message)
                    .with_detail(json!({"partition": partition, "offset": offset, "committed": committed}))
            }
            LogError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", message),
            LogError::Io { ref source, .. } if is_disk_full(source) => ApiError {
                retry_after_s: Some(30),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "partition_unavailable", message)
            },
            // The Kafka cluster behind the log failed or is out of reach: worth a retry.
            LogError::Remote(_) => ApiError {
                retry_after_s: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", message)
            },
            LogError::Unsupported(_) => ApiError::new(StatusCode::NOT_IMPLEMENTED, "not_supported", message),
            LogError::Io { .. } | LogError::GroupStore(_) => {
                tracing::error!(%message, "internal error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

impl From<strom_lake::LakeError> for ApiError {
    fn from(error: strom_lake::LakeError) -> ApiError {
        use strom_lake::LakeError;
        let message = error.to_string();
        match error {
            LakeError::Query(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", message),
            LakeError::QueryTooLarge(_) => ApiError::new(StatusCode::BAD_REQUEST, "query_too_large", message),
            LakeError::QueryTimeout { timeout_ms } => {
                ApiError::new(StatusCode::GATEWAY_TIMEOUT, "query_timeout", message)
                    .with_detail(json!({"timeout_ms": timeout_ms}))
            }
            LakeError::QueriesBusy { .. } => ApiError::overloaded(message),
            LakeError::Log(error) => ApiError::from(error),
            _ => {
                tracing::error!(%message, "lake error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

fn is_disk_full(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
}
