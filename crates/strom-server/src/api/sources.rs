//! `/v1/sources`: tracking sources and their write keys (admin API), and the admin guard
//! that keeps write keys out of everything but the tracking endpoints.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use strom_ingest::source::{Source, SourceConfig, SourceError, UnknownTypes};

use super::collect::{basic_auth, basic_auth_user};
use super::{ADMIN_BODY_BYTES_MAX, AppState, json_body};
use crate::error::ApiError;

/// Every route but tracking, health and metrics goes through here.
///
/// With admin tokens configured, a request needs `Authorization: Bearer TOKEN` (or Basic auth
/// with the token as password, as Schema Registry clients send it) with one of them (401
/// otherwise). Without them the admin API is open, as for local development. In
/// both cases a write key is refused with 403: write keys can only send events.
pub(super) async fn admin_guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string());
    let presented_write_key = basic_auth_user(headers)
        .or_else(|| bearer.clone())
        .is_some_and(|key| state.sources.authenticate(&key).is_some());
    if presented_write_key {
        metrics::counter!("strom_http_admin_refused_total", "reason" => "write_key").increment(1);
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "write keys can only send events to the tracking API",
        )
        .into_response();
    }
    if !state.admin_tokens.is_empty() {
        // Schema Registry clients send credentials as Basic auth: the password is the token.
        let basic_password = basic_auth(headers).map(|(_, password)| password);
        let allowed = [bearer, basic_password]
            .into_iter()
            .flatten()
            .any(|token| state.admin_tokens.contains(&strom_ingest::source::digest(&token)));
        if !allowed {
            metrics::counter!("strom_http_admin_refused_total", "reason" => "unauthorized").increment(1);
            let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "an admin token is required")
                .with_detail(json!({"hint": "Authorization: Bearer <admin token>"}))
                .into_response();
            response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
            return response;
        }
    }
    next.run(request).await
}

/// A source as the API shows it: never its key digests.
fn describe(source: &Source) -> serde_json::Value {
    let config = &source.config;
    json!({
        "name": config.name,
        "allowed_types": config.allowed_types,
        "unknown_types": config.unknown_types,
        "cors_origins": config.cors_origins,
        "stream": config.stream,
        "dead_letter_stream": config.dead_letter_stream,
        "write_keys": config.write_keys_sha256.len(),
        "defined_in": if source.dynamic { "api" } else { "config" },
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateSource {
    name: String,
    #[serde(default)]
    allowed_types: Option<Vec<String>>,
    #[serde(default)]
    unknown_types: UnknownTypes,
    #[serde(default)]
    cors_origins: Vec<String>,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    dead_letter_stream: Option<String>,
}

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Json<serde_json::Value> {
    let sources: Vec<_> = state.sources.list().iter().map(|s| describe(s)).collect();
    Json(json!({"sources": sources}))
}

pub(super) async fn get(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let source = state.sources.get(&name).ok_or_else(|| source_error(SourceError::NotFound(name)))?;
    Ok(Json(describe(&source)).into_response())
}

/// Creates a source and its first write key. The key is in this response and nowhere else.
pub(super) async fn create(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let request: CreateSource = json_body(body, ADMIN_BODY_BYTES_MAX).await?;
    let config = SourceConfig {
        name: request.name,
        write_keys_sha256: Vec::new(),
        allowed_types: request.allowed_types.unwrap_or_else(|| vec!["*".to_string()]),
        unknown_types: request.unknown_types,
        cors_origins: request.cors_origins,
        stream: request.stream,
        dead_letter_stream: request.dead_letter_stream,
    };
    let sources = state.sources.clone();
    let (source, key) = tokio::task::spawn_blocking(move || sources.create(config))
        .await
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()))?
        .map_err(source_error)?;
    tracing::info!(source = source.name(), "source created");
    let mut body = describe(&source);
    body["write_key"] = json!(key);
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Adds a write key (rotation: add, deploy, then delete the source's old key by recreating).
pub(super) async fn add_key(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let sources = state.sources.clone();
    let key = tokio::task::spawn_blocking(move || sources.add_key(&name))
        .await
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()))?
        .map_err(source_error)?;
    Ok((StatusCode::CREATED, Json(json!({"write_key": key}))).into_response())
}

pub(super) async fn delete(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let sources = state.sources.clone();
    tokio::task::spawn_blocking(move || sources.delete(&name))
        .await
        .map_err(|error| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()))?
        .map_err(source_error)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn source_error(error: SourceError) -> ApiError {
    let message = error.to_string();
    match error {
        SourceError::Invalid(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_source", message),
        SourceError::Exists(name) => {
            ApiError::new(StatusCode::CONFLICT, "source_exists", message).with_detail(json!({"source": name}))
        }
        SourceError::NotFound(name) => {
            ApiError::new(StatusCode::NOT_FOUND, "source_not_found", message).with_detail(json!({"source": name}))
        }
        SourceError::Static(name) => {
            ApiError::new(StatusCode::CONFLICT, "source_in_config", message).with_detail(json!({"source": name}))
        }
        SourceError::Io { .. } => ApiError {
            retry_after_s: Some(5),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable", message)
        },
    }
}
