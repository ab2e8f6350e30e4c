//! `/v1/webhooks`: the state of webhook destinations, and resuming one a 410 disabled.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "destinations": state.webhooks.status() }))
}

pub(super) async fn get(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    state.webhooks.destination(&name).map(|status| Json(json!(status))).ok_or_else(|| unknown(&name))
}

pub(super) async fn enable(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.webhooks.enable(&name).await.map(|status| Json(json!(status))).map_err(|error| match error {
        strom_webhooks::WebhooksError::UnknownDestination(_) => unknown(&name),
        // The states stream refused the change (overloaded, unavailable): the log's own answer.
        strom_webhooks::WebhooksError::Log(error) => ApiError::from(error),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", other.to_string()),
    })
}

fn unknown(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "destination_not_found", format!("no webhook destination {name:?}"))
}
