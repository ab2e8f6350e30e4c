//! The lake's routes: `POST /v1/query` (SQL over the lake's files), `POST /v1/lake/compact`
//! and `GET /v1/lake/status`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ADMIN_BODY_BYTES_MAX, AppState, json_body};
use crate::error::ApiError;

/// Rows answered when the request does not say.
const QUERY_ROWS_DEFAULT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryRequest {
    sql: String,
    /// `json` (the default) or `csv`; `Accept: text/csv` also asks for CSV.
    format: Option<Format>,
    max_rows: Option<usize>,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Format {
    Json,
    Csv,
}

fn lake(state: &AppState) -> Result<&strom_lake::Lake, ApiError> {
    state.lake.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "lake_not_configured", "the lake is not configured ([lake] in strom.toml)")
    })
}

pub(super) async fn query(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let lake = lake(&state)?;
    let request: QueryRequest = json_body(body, ADMIN_BODY_BYTES_MAX).await?;
    let accepts_csv = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/csv"));
    let format = request.format.unwrap_or(if accepts_csv { Format::Csv } else { Format::Json });
    let max_rows = request.max_rows.unwrap_or(QUERY_ROWS_DEFAULT);
    if max_rows == 0 || max_rows > strom_lake::limits::QUERY_ROWS_MAX {
        return Err(ApiError::invalid(format!("max_rows must be 1 to {}", strom_lake::limits::QUERY_ROWS_MAX)));
    }
    let answer = lake.query(&request.sql, max_rows).await?;
    metrics::histogram!("strom_lake_query_seconds").record(answer.elapsed.as_secs_f64());
    let (body, content_type) = match format {
        Format::Json => (answer.to_json()?, "application/json"),
        Format::Csv => (answer.to_csv()?, "text/csv; charset=utf-8"),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("x-strom-row-count", HeaderValue::from(answer.rows));
    headers.insert("x-strom-truncated", HeaderValue::from_static(if answer.truncated { "true" } else { "false" }));
    Ok(response)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CompactRequest {
    /// One stream's table; all landed streams when absent.
    stream: Option<String>,
}

pub(super) async fn compact(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let lake = lake(&state)?;
    let request: CompactRequest = json_body(body, ADMIN_BODY_BYTES_MAX).await?;
    if let Some(stream) = &request.stream {
        strom_log::validate_stream_name(stream)?;
    }
    let report = lake.compact(request.stream.as_deref()).await?;
    Ok(axum::Json(report).into_response())
}

pub(super) async fn status(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    Ok(axum::Json(lake(&state)?.status()).into_response())
}
