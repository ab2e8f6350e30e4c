//! `/v1/rules`: rules as API objects. A rule written here is a file in the rules directory,
//! as if written by hand; refusals carry the line, column and field.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use serde::Deserialize;
use serde_json::{Value, json};
use strom_rules::{BacktestRequest, BacktestRule, Format, Position, Rules, RulesError};

use super::{ADMIN_BODY_BYTES_MAX, AppState, collect_body, json_body, query};
use crate::error::ApiError;

/// A rule file's largest size (YAML or TOML).
const RULE_BYTES_MAX: usize = 256 * 1024;

fn runtime(state: &AppState) -> Result<&Arc<Rules>, ApiError> {
    state.rules.as_ref().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "rules_disabled", "the rules engine is off (rules.enabled = false)")
    })
}

fn rules_error(error: RulesError) -> ApiError {
    match error {
        RulesError::Invalid(invalid) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_rule", invalid.to_string())
            .with_detail(json!({
                "line": invalid.line, "column": invalid.column, "field": invalid.field, "why": invalid.why,
            })),
        RulesError::NotFound(name) => {
            ApiError::new(StatusCode::NOT_FOUND, "rule_not_found", format!("no rule {name:?}"))
        }
        RulesError::InvalidName { name, why } => {
            ApiError::invalid(format!("invalid rule name {name:?}: {why}")).with_detail(json!({"field": "name"}))
        }
        RulesError::TooManyRules { max } => {
            ApiError::new(StatusCode::CONFLICT, "too_many_rules", format!("at most {max} rules"))
        }
        RulesError::InvalidBacktest(why) => ApiError::invalid(format!("invalid backtest: {why}")),
        RulesError::Closed => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the server is stopping"),
        other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "rules_error", other.to_string()),
    }
}

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "rules": runtime(&state)?.list().await })))
}

pub(super) async fn get(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    runtime(&state)?.get(&name).await.map(|status| Json(json!(status))).map_err(rules_error)
}

#[derive(Deserialize)]
struct FormatQuery {
    format: Option<String>,
}

/// The rule's format: `?format=`, else the content type, else YAML.
fn format_of(uri: &Uri, headers: &HeaderMap) -> Result<Format, ApiError> {
    let named = query::<FormatQuery>(uri)?.format.or_else(|| {
        let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?.to_ascii_lowercase();
        content_type.contains("toml").then(|| "toml".to_string())
    });
    match named.as_deref() {
        None | Some("yaml") | Some("yml") => Ok(Format::Yaml),
        Some("toml") => Ok(Format::Toml),
        Some(other) => Err(ApiError::invalid(format!("format {other:?} is not yaml or toml"))),
    }
}

/// `PUT /v1/rules/{name}`: the body is the rule file. 201 for a new rule, 200 for a new
/// version (its state is kept when only non-semantic parts change; see docs/RULES.md).
pub(super) async fn put(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let rules = runtime(&state)?;
    let format = format_of(&uri, &headers)?;
    let bytes = collect_body(body, RULE_BYTES_MAX).await?;
    let source =
        std::str::from_utf8(&bytes).map_err(|_| ApiError::malformed("the rule is not UTF-8 text".to_string()))?;
    let existed = rules.get(&name).await.is_ok();
    let status = rules.put(&name, source, format).await.map_err(rules_error)?;
    Ok((if existed { StatusCode::OK } else { StatusCode::CREATED }, Json(json!(status))))
}

pub(super) async fn delete(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    runtime(&state)?.delete(&name).await.map_err(rules_error)?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn pause(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    runtime(&state)?.pause(&name, true).await.map(|status| Json(json!(status))).map_err(rules_error)
}

pub(super) async fn resume(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    runtime(&state)?.pause(&name, false).await.map(|status| Json(json!(status))).map_err(rules_error)
}

pub(super) async fn reload(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    runtime(&state)?.reload().await.map(|report| Json(json!(report))).map_err(rules_error)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BacktestBody {
    /// A running rule's name, or:
    rule: Option<String>,
    /// a rule's source (a new rule, or a new version of one) and its format (default yaml).
    source: Option<String>,
    format: Option<Format>,
    stream: Option<String>,
    from_offset: Option<u64>,
    from_timestamp_ms: Option<i64>,
    to_offset: Option<u64>,
    to_timestamp_ms: Option<i64>,
    #[serde(default = "default_max_outputs")]
    max_outputs: usize,
    /// Finalise open windows and pending timeouts at the end (default true).
    #[serde(default = "default_flush")]
    flush: bool,
}

fn default_max_outputs() -> usize {
    1000
}

fn default_flush() -> bool {
    true
}

/// `POST /v1/rules/backtest`: what a rule would have emitted over a past range; nothing is
/// appended.
pub(super) async fn backtest(State(state): State<Arc<AppState>>, body: Body) -> Result<Json<Value>, ApiError> {
    let rules = runtime(&state)?;
    let body: BacktestBody = json_body(body, ADMIN_BODY_BYTES_MAX.max(RULE_BYTES_MAX)).await?;
    let rule = match (body.rule, body.source) {
        (Some(name), None) => BacktestRule::Name(name),
        (None, Some(source)) => BacktestRule::Source { source, format: body.format.unwrap_or(Format::Yaml) },
        _ => return Err(ApiError::invalid("give `rule` (a rule's name) or `source` (a rule), not both")),
    };
    let position = |offset: Option<u64>, timestamp: Option<i64>, which: &str| match (offset, timestamp) {
        (Some(offset), None) => Ok(Some(Position::Offset(offset))),
        (None, Some(ms)) => Ok(Some(Position::TimestampMs(ms))),
        (None, None) => Ok(None),
        _ => Err(ApiError::invalid(format!("give {which}_offset or {which}_timestamp_ms, not both"))),
    };
    let request = BacktestRequest {
        rule,
        stream: body.stream,
        from: position(body.from_offset, body.from_timestamp_ms, "from")?,
        to: position(body.to_offset, body.to_timestamp_ms, "to")?,
        max_outputs: body.max_outputs,
        flush: body.flush,
    };
    rules.backtest(request).await.map(|report| Json(json!(report))).map_err(rules_error)
}
