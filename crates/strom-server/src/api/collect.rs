//! The Segment-compatible tracking API: `/v1/{track,page,screen,identify,group,alias}`,
//! `/v1/batch` and `/v1/import`. Wire format in, `strom_ingest` does the rest.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use strom_ingest::envelope::Call;
use strom_ingest::source::Source;
use strom_ingest::{IngestError, Origin, Outcome};

use super::{AppState, collect_body};
use crate::error::ApiError;

/// Messages in one batch request (Segment's 500 KB batches hold a few hundred at most).
pub const BATCH_MESSAGES_MAX: usize = 2_500;

/// One handler per endpoint; they differ only in the call they stand for.
macro_rules! endpoint {
    ($name:ident, $call:expr) => {
        pub(super) async fn $name(
            state: State<Arc<AppState>>,
            peer: ConnectInfo<SocketAddr>,
            headers: HeaderMap,
            body: Body,
        ) -> Response {
            collect(state, $call, peer, headers, body).await
        }
    };
}

endpoint!(track, Some(Call::Track));
endpoint!(page, Some(Call::Page));
endpoint!(screen, Some(Call::Screen));
endpoint!(identify, Some(Call::Identify));
endpoint!(group, Some(Call::Group));
endpoint!(alias, Some(Call::Alias));
endpoint!(batch, None);

/// CORS preflight. It carries no write key, so it is answered for any origin some source
/// allows; the request itself is then checked against its own source's list.
pub(super) async fn preflight(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return StatusCode::NO_CONTENT.into_response();
    };
    if !state.sources.any_allows_origin(origin) {
        return ApiError::new(StatusCode::FORBIDDEN, "origin_not_allowed", format!("no source allows origin {origin}"))
            .into_response();
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    allow_origin(headers, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, content-encoding"),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    response
}

fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// A batch request's body. Messages stay raw: each is kept as sent if it is dead-lettered.
#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "writeKey")]
    write_key: Option<String>,
    #[serde(rename = "sentAt")]
    sent_at: Option<Value>,
    context: Option<Map<String, Value>>,
}

/// The write key of a single call's body.
#[derive(Deserialize)]
struct KeyOnly {
    #[serde(rename = "writeKey")]
    write_key: Option<Value>,
}

async fn collect(
    State(state): State<Arc<AppState>>,
    call: Option<Call>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let mut response = match collect_inner(&state, call, peer, &headers, body, origin.as_deref()).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    // Browsers must be able to read errors too, or every failure looks like a network error;
    // a refused origin gets no CORS header (that is the refusal).
    if let Some(origin) = &origin
        && response.status() != StatusCode::FORBIDDEN
        && state.sources.any_allows_origin(origin)
    {
        allow_origin(response.headers_mut(), origin);
    }
    response
}

async fn collect_inner(
    state: &AppState,
    call: Option<Call>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Body,
    origin: Option<&str>,
) -> Result<Response, ApiError> {
    let limit = state.config.collector.batch_bytes_max;
    let (body, _permit) = read_tracking_body(state, headers, body, limit).await?;
    let basic_key = basic_auth_user(headers);
    let (events, body_key, batch_sent_at, batch_context) = match call {
        Some(_) => {
            // The whole body is checked here, so that a broken single event is a 400 for the
            // request rather than a dead letter.
            serde_json::from_slice::<Value>(&body).map_err(|error| ApiError::malformed(error.to_string()))?;
            let key: KeyOnly = serde_json::from_slice(&body).map_err(|error| ApiError::malformed(error.to_string()))?;
            let body_key = match key.write_key {
                Some(Value::String(key)) => Some(key),
                _ => None,
            };
            (vec![body.clone()], body_key, None, None)
        }
        None => {
            let parsed: BatchBody = serde_json::from_slice(&body)
                .map_err(|error| ApiError::malformed(format!("a batch is {{\"batch\": [messages...]}}: {error}")))?;
            if parsed.batch.len() > BATCH_MESSAGES_MAX {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_many_events",
                    format!("the batch has {} messages; at most {BATCH_MESSAGES_MAX}", parsed.batch.len()),
                ));
            }
            let events: Vec<Bytes> = parsed.batch.iter().map(|raw| body.slice_ref(raw.get().as_bytes())).collect();
            // analytics.js puts the key in each message rather than in the batch.
            let body_key = parsed.write_key.clone().or_else(|| {
                parsed.batch.first().and_then(|first| serde_json::from_str::<KeyOnly>(first.get()).ok()).and_then(|k| {
                    match k.write_key {
                        Some(Value::String(key)) => Some(key),
                        _ => None,
                    }
                })
            });
            (events, body_key, parsed.sent_at, parsed.context)
        }
    };
    let source = authenticate(state, basic_key.as_deref().or(body_key.as_deref()))?;
    if let Some(origin) = origin
        && !source.allows_origin(origin)
    {
        metrics::counter!("strom_collector_requests_refused_total", "source" => source.name().to_string(), "reason" => "origin").increment(1);
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "origin_not_allowed",
            format!("source {} does not allow origin {origin}", source.name()),
        ));
    }
    let forwarded_for = headers.get("x-forwarded-for").and_then(|v| v.to_str().ok());
    let request =
        Origin { source: &source, peer: peer.ip(), forwarded_for, batch_sent_at, batch_context, replay: None };
    let count = events.len();
    let outcomes = state.ingest.ingest(&request, call, events).await.map_err(|error| match error {
        IngestError::Log(error) => ApiError::from(error),
    })?;
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Rejected { code: "internal", message: "no outcome".into() }))
        .collect();
    Ok(match call {
        Some(_) => single_response(outcomes.into_iter().next().unwrap_or(Outcome::Duplicate)),
        None => batch_response(&outcomes, count),
    })
}

/// One call: 200 when the event is stored (or was already), otherwise the precise error.
fn single_response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Accepted { stream, partition, offset } => {
            axum::Json(json!({"success": true, "stream": stream, "partition": partition, "offset": offset}))
                .into_response()
        }
        Outcome::Duplicate => axum::Json(json!({"success": true, "duplicate": true})).into_response(),
        Outcome::DeadLettered { code, violations } => ApiError::new(
            StatusCode::BAD_REQUEST,
            code,
            "the event is invalid; it was kept in the dead-letter stream with the reason",
        )
        .with_detail(json!({"dead_lettered": true, "violations": violations}))
        .into_response(),
        Outcome::Rejected { code, message } => {
            let status = match code {
                "event_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
                "type_not_allowed" => StatusCode::FORBIDDEN,
                "duplicate_in_flight" => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            };
            let mut error = ApiError::new(status, code, message).with_detail(json!({"dead_lettered": false}));
            if status == StatusCode::TOO_MANY_REQUESTS {
                error.retry_after_s = Some(1);
            }
            error.into_response()
        }
    }
}

/// A batch: 200 with counts and, per index, why an event was not accepted. If another
/// request is writing one of its messageIds, 429: the rest is written and remembered, so the
/// retry only adds what is missing.
fn batch_response(outcomes: &[Outcome], count: usize) -> Response {
    let (mut accepted, mut duplicates, mut dead_lettered, mut rejected) = (0, 0, 0, 0);
    let mut errors = Vec::new();
    let mut in_flight = false;
    for (index, outcome) in outcomes.iter().enumerate() {
        match outcome {
            Outcome::Accepted { .. } => accepted += 1,
            Outcome::Duplicate => duplicates += 1,
            Outcome::DeadLettered { code, violations } => {
                dead_lettered += 1;
                errors.push(json!({"index": index, "code": code, "dead_lettered": true, "violations": violations}));
            }
            Outcome::Rejected { code, message } => {
                rejected += 1;
                in_flight |= *code == "duplicate_in_flight";
                errors.push(json!({"index": index, "code": code, "dead_lettered": false, "message": message}));
            }
        }
    }
    let body = json!({
        "success": accepted + duplicates == count,
        "accepted": accepted,
        "duplicates": duplicates,
        "dead_lettered": dead_lettered,
        "rejected": rejected,
        "errors": errors,
    });
    if in_flight {
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    }
    axum::Json(body).into_response()
}

fn authenticate(state: &AppState, key: Option<&str>) -> Result<Arc<Source>, ApiError> {
    let unauthorized = |message: &str| {
        metrics::counter!("strom_collector_requests_refused_total", "source" => "", "reason" => "unauthorized")
            .increment(1);
        let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_string());
        response.detail = json!({"hint": "send the write key as the HTTP Basic user name, or as writeKey in the body"});
        response
    };
    let key = key.ok_or_else(|| unauthorized("a write key is required"))?;
    state.sources.authenticate(key).ok_or_else(|| unauthorized("unknown write key"))
}

/// The user name of `Authorization: Basic ...` (Segment SDKs send `KEY:`).
pub(super) fn basic_auth_user(headers: &HeaderMap) -> Option<String> {
    basic_auth(headers).map(|(user, _)| user).filter(|user| !user.is_empty())
}

/// User name and password of `Authorization: Basic ...`.
pub(super) fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':').unwrap_or((text.as_str(), ""));
    Some((user.to_string(), password.to_string()))
}

/// Reads a tracking body under the collector's limit, before and after gzip (SDKs compress
/// batches; a small body must not become a large one in memory).
async fn read_tracking_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), ApiError> {
    let too_large = |what: &str| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the {what} is over {limit} bytes"))
            .with_detail(json!({"limit": limit}))
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(too_large("body"));
    }
    // Held against the in-flight budget: the declared body (or the limit, for chunked bodies),
    // plus the limit for a gzip body's decompressed copy. Reserving the limit for every small
    // body would refuse many concurrent single events long before memory is at stake.
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let reserve = declared.unwrap_or(limit) + if gzip { limit } else { 0 };
    let permit = state.inflight_bytes.clone().try_acquire_many_owned(reserve.max(1) as u32).map_err(|_| {
        metrics::counter!("strom_http_overloaded_total").increment(1);
        ApiError::overloaded("too many request bytes in flight; retry later")
    })?;
    let raw = collect_body(body, limit)
        .await
        .map_err(|error| if error.status == StatusCode::PAYLOAD_TOO_LARGE { too_large("body") } else { error })?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(str::trim);
    let body = match encoding {
        None | Some("") | Some("identity") => raw,
        Some(gzip) if gzip.eq_ignore_ascii_case("gzip") => {
            let mut decoded = Vec::with_capacity(raw.len() * 4);
            let read = flate2::read::GzDecoder::new(&raw[..]).take(limit as u64 + 1).read_to_end(&mut decoded);
            match read {
                Ok(_) if decoded.len() > limit => return Err(too_large("decompressed body")),
                Ok(_) => Bytes::from(decoded),
                Err(error) => {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "malformed_gzip",
                        format!("the gzip body does not decompress: {error}"),
                    ));
                }
            }
        }
        Some(other) => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding {other:?} is not supported; send identity or gzip"),
            ));
        }
    };
    Ok((body, permit))
}

/// `POST /v1/dead-letters/replay`: dead letters (all, or filtered) through the pipeline
/// again; those that pass now are appended once, however often this is called.
pub(super) async fn replay(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, ApiError> {
    let filter: strom_ingest::replay::ReplayFilter = super::json_body(body, super::ADMIN_BODY_BYTES_MAX).await?;
    let report = state.ingest.replay(&state.sources, filter).await.map_err(|error| match error {
        IngestError::Log(error) => ApiError::from(error),
    })?;
    tracing::info!(?report, "dead letters replayed");
    Ok(axum::Json(report).into_response())
}
