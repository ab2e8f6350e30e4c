//! The catalog's two HTTP faces (docs/HTTP_API.md): Strom's admin API under `/v1/catalog`
//! (Strom's error shape), and the Confluent Schema Registry REST subset under
//! `/schema-registry` (Confluent's content type, error body and codes, because its clients
//! parse them). Catalog operations touch files and the store, so they run off the async workers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use strom_catalog::{Catalog, CatalogError, Compatibility, EventType, ReloadReport, VersionRef};

use super::{AppState, collect_body};
use crate::error::ApiError;

/// Largest schema body of the admin API: a schema at the catalog's size limit.
const SCHEMA_BODY_BYTES_MAX: usize = strom_catalog::limits::SCHEMA_BYTES_MAX;
/// Largest registry request body: the schema arrives as a JSON string, whose escaping can
/// double its size, plus the request's other fields.
const REGISTRY_BODY_BYTES_MAX: usize = 2 * strom_catalog::limits::SCHEMA_BYTES_MAX + 64 * 1024;
const REGISTRY_CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

pub(crate) fn admin_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/catalog/types", get(list_types))
        .route("/v1/catalog/types/{name}", get(get_type).put(put_type).delete(delete_type))
        .route("/v1/catalog/types/{name}/versions/{version}", get(get_type_version))
        .route("/v1/catalog/types/{name}/compatibility", post(test_type))
        .route("/v1/catalog/reload", post(reload))
}

pub(crate) fn registry_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/subjects", get(sr_subjects))
        .route("/subjects/{subject}", post(sr_lookup).delete(sr_delete_subject))
        .route("/subjects/{subject}/versions", get(sr_versions).post(sr_register))
        .route("/subjects/{subject}/versions/{version}", get(sr_version).delete(sr_delete_version))
        .route("/subjects/{subject}/versions/{version}/schema", get(sr_version_schema))
        .route("/schemas/ids/{id}", get(sr_schema_by_id))
        .route("/schemas/ids/{id}/schema", get(sr_raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(sr_id_versions))
        .route("/schemas/types", get(|| async { registry_json(StatusCode::OK, json!(["JSON"])) }))
        .route("/compatibility/subjects/{subject}/versions", post(sr_compatibility_all))
        .route("/compatibility/subjects/{subject}/versions/{version}", post(sr_compatibility))
        .route("/config", get(sr_get_global).put(sr_put_global))
        .route(
            "/config/{subject}",
            get(sr_get_subject_config).put(sr_put_subject_config).delete(sr_delete_subject_config),
        )
        .fallback(|| async { RegistryError::new(StatusCode::NOT_FOUND, 404, "no such registry route") })
}

/// Runs catalog work (store reads and writes, fsyncs, file reads) on the blocking pool.
async fn on_catalog<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Catalog) -> Result<T, CatalogError> + Send + 'static,
) -> Result<T, CatalogError> {
    let catalog = state.catalog.clone();
    tokio::task::spawn_blocking(move || work(&catalog))
        .await
        .map_err(|error| CatalogError::Store(format!("catalog task failed: {error}")))?
}

async fn body_text(body: Body, max: usize) -> Result<String, ApiError> {
    let bytes = collect_body(body, max).await?;
    String::from_utf8(bytes.to_vec()).map_err(|_| ApiError::malformed("the body is not UTF-8"))
}

// ---------------------------------------------------------------------------------------
// Strom's admin API
// ---------------------------------------------------------------------------------------

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> ApiError {
        let message = error.to_string();
        match error {
            CatalogError::InvalidSubject { subject, .. } => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", message).with_detail(json!({"name": subject}))
            }
            CatalogError::InvalidSchema { reason, .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_schema", message)
                    .with_detail(json!({"reason": reason}))
            }
            CatalogError::Incompatible { mode, against, differences, .. } => {
                ApiError::new(StatusCode::CONFLICT, "incompatible_schema", message)
                    .with_detail(json!({"compatibility": mode, "against": against, "differences": differences}))
            }
            CatalogError::Conflict { key, other, .. } => {
                ApiError::new(StatusCode::CONFLICT, "lookup_conflict", message)
                    .with_detail(json!({"key": key, "held_by": other}))
            }
            CatalogError::SubjectNotFound(name) => {
                ApiError::new(StatusCode::NOT_FOUND, "type_not_found", message).with_detail(json!({"name": name}))
            }
            CatalogError::VersionNotFound { subject, version } => {
                ApiError::new(StatusCode::NOT_FOUND, "version_not_found", message)
                    .with_detail(json!({"name": subject, "version": version}))
            }
            CatalogError::SchemaNotFound(id) => {
                ApiError::new(StatusCode::NOT_FOUND, "schema_not_found", message).with_detail(json!({"id": id}))
            }
            CatalogError::InvalidCompatibility(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_compatibility", message)
            }
            CatalogError::Limit { what, limit } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "limit_reached", message)
                    .with_detail(json!({"what": what, "limit": limit}))
            }
            CatalogError::Config(_) | CatalogError::Io { .. } | CatalogError::Store(_) => {
                tracing::error!(%message, "catalog error");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
            }
        }
    }
}

fn type_json(event_type: &EventType) -> Value {
    json!({
        "name": event_type.name,
        "kind": event_type.kind,
        "event": event_type.event,
        "stream": event_type.stream,
        "version": event_type.version,
        "schema_id": event_type.schema_id,
        "compatibility": event_type.compatibility,
        "has_pii": event_type.has_pii(),
    })
}

fn registered_json(registered: &strom_catalog::Registered) -> Value {
    json!({"name": registered.subject, "version": registered.version, "schema_id": registered.id, "created": registered.created})
}

async fn list_types(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.catalog.snapshot();
    let types: Vec<Value> = snapshot.types().map(|t| type_json(t)).collect();
    axum::Json(json!({"types": types})).into_response()
}

async fn get_type(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let snapshot = state.catalog.snapshot();
    let event_type = snapshot.get(&name).ok_or_else(|| CatalogError::SubjectNotFound(name.clone()))?.clone();
    let lookup = name.clone();
    let versions = on_catalog(&state, move |catalog| catalog.versions(&lookup)).await?;
    let mut body = type_json(&event_type);
    body["versions"] = json!(versions);
    body["effective_compatibility"] = json!(state.catalog.compatibility(Some(&name)));
    body["schema"] = (*event_type.schema).clone();
    Ok(axum::Json(body).into_response())
}

async fn get_type_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let version: VersionRef = version.parse().map_err(ApiError::invalid)?;
    let found = on_catalog(&state, move |catalog| catalog.version(&name, version)).await?;
    let schema: Value = serde_json::from_str(&found.schema).unwrap_or(Value::String(found.schema.clone()));
    Ok(axum::Json(json!({"name": found.subject, "version": found.version, "schema_id": found.id, "schema": schema}))
        .into_response())
}

/// PUT: the body becomes the type's current version, as if written to `<dir>/<name>.json`.
async fn put_type(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let schema = body_text(body, SCHEMA_BODY_BYTES_MAX).await?;
    let registered = on_catalog(&state, move |catalog| catalog.put_current(&name, &schema)).await?;
    let status = if registered.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(registered_json(&registered))).into_response())
}

async fn delete_type(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Result<Response, ApiError> {
    let deleted = on_catalog(&state, move |catalog| catalog.delete_subject(&name)).await?;
    Ok(axum::Json(json!({"deleted_versions": deleted})).into_response())
}

async fn test_type(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let schema = body_text(body, SCHEMA_BODY_BYTES_MAX).await?;
    let lookup = name.clone();
    let differences = on_catalog(&state, move |catalog| catalog.test_compatibility(&lookup, &schema, None)).await?;
    let mode = state.catalog.compatibility(Some(&name));
    Ok(axum::Json(json!({"compatible": differences.is_empty(), "compatibility": mode, "differences": differences}))
        .into_response())
}

async fn reload(State(state): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let report = on_catalog(&state, |catalog| catalog.reload()).await?;
    Ok(axum::Json(report_json(report)).into_response())
}

fn report_json(report: ReloadReport) -> Value {
    let refused: Vec<Value> = report
        .refused
        .into_iter()
        .map(|refused| {
            let error = ApiError::from(refused.error);
            json!({
                "name": refused.subject,
                "path": refused.path.display().to_string(),
                "error": {"code": error.code, "message": error.message, "detail": error.detail},
            })
        })
        .collect();
    json!({
        "added": report.added.iter().map(registered_json).collect::<Vec<_>>(),
        "updated": report.updated.iter().map(registered_json).collect::<Vec<_>>(),
        "unchanged": report.unchanged,
        "refused": refused,
    })
}

// ---------------------------------------------------------------------------------------
// The Confluent Schema Registry subset
// ---------------------------------------------------------------------------------------

fn registry_json(status: StatusCode, body: Value) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(REGISTRY_CONTENT_TYPE));
    response
}

/// Confluent's error body: `{"error_code": 40401, "message": "..."}`.
#[derive(Debug)]
struct RegistryError {
    status: StatusCode,
    code: u32,
    message: String,
}

impl RegistryError {
    fn new(status: StatusCode, code: u32, message: impl Into<String>) -> RegistryError {
        RegistryError { status, code, message: message.into() }
    }

    fn invalid_schema(message: impl Into<String>) -> RegistryError {
        RegistryError::new(StatusCode::UNPROCESSABLE_ENTITY, 42201, message)
    }

    fn invalid_version(text: &str) -> RegistryError {
        RegistryError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42202,
            format!(
                "The specified version '{text}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        registry_json(self.status, json!({"error_code": self.code, "message": self.message}))
    }
}

impl From<CatalogError> for RegistryError {
    fn from(error: CatalogError) -> RegistryError {
        let message = error.to_string();
        let (status, code) = match &error {
            CatalogError::SubjectNotFound(_) => (StatusCode::NOT_FOUND, 40401),
            CatalogError::VersionNotFound { .. } => (StatusCode::NOT_FOUND, 40402),
            CatalogError::SchemaNotFound(_) => (StatusCode::NOT_FOUND, 40403),
            CatalogError::Incompatible { differences, .. } => {
                let details: Vec<String> = differences.iter().map(difference_message).collect();
                return RegistryError::new(
                    StatusCode::CONFLICT,
                    409,
                    format!("Schema being registered is incompatible with an earlier schema: {}", details.join("; ")),
                );
            }
            CatalogError::Conflict { .. } => (StatusCode::CONFLICT, 409),
            CatalogError::InvalidSchema { .. } => (StatusCode::UNPROCESSABLE_ENTITY, 42201),
            CatalogError::InvalidCompatibility(_) => (StatusCode::UNPROCESSABLE_ENTITY, 42203),
            CatalogError::InvalidSubject { .. } => (StatusCode::UNPROCESSABLE_ENTITY, 42208),
            CatalogError::Limit { what: "schema bytes", .. } => (StatusCode::UNPROCESSABLE_ENTITY, 42209),
            CatalogError::Limit { .. } => (StatusCode::UNPROCESSABLE_ENTITY, 42205),
            CatalogError::Config(_) | CatalogError::Io { .. } | CatalogError::Store(_) => {
                tracing::error!(%message, "catalog error");
                (StatusCode::INTERNAL_SERVER_ERROR, 50001)
            }
        };
        RegistryError::new(status, code, message)
    }
}

impl From<ApiError> for RegistryError {
    fn from(error: ApiError) -> RegistryError {
        // Body problems: too large (413 in Strom's API) and malformed JSON.
        let code = if error.status == StatusCode::PAYLOAD_TOO_LARGE { 42209 } else { 42201 };
        RegistryError::new(StatusCode::UNPROCESSABLE_ENTITY, code, error.message)
    }
}

fn difference_message(difference: &strom_catalog::Difference) -> String {
    format!(
        "{{kind:{}, pointer:'#{}', message:'{}'}}",
        difference.kind.to_ascii_uppercase(),
        difference.pointer,
        difference.message
    )
}

/// `POST /subjects/{subject}/versions` and friends: `{"schema": "...", "schemaType": "JSON"}`.
#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Option<Vec<Value>>,
}

async fn schema_request(body: Body) -> Result<String, RegistryError> {
    let text = body_text(body, REGISTRY_BODY_BYTES_MAX).await?;
    let request: SchemaRequest = serde_json::from_str(&text)
        .map_err(|error| RegistryError::invalid_schema(format!("the request body is not a schema request: {error}")))?;
    match request.schema_type.as_deref() {
        Some("JSON") => {}
        // The registry API's default type is AVRO.
        None => {
            return Err(RegistryError::invalid_schema(
                "Strom's registry takes JSON Schemas only; a request without schemaType means AVRO, send \"schemaType\": \"JSON\"",
            ));
        }
        Some(other) => {
            return Err(RegistryError::invalid_schema(format!(
                "Strom's registry takes JSON Schemas only; schemaType {other:?} is not supported"
            )));
        }
    }
    if request.references.is_some_and(|r| !r.is_empty()) {
        return Err(RegistryError::invalid_schema(
            "schema references are not supported: inline the referenced schemas under $defs",
        ));
    }
    Ok(request.schema)
}

fn version_ref(text: &str) -> Result<VersionRef, RegistryError> {
    text.parse().map_err(|_| RegistryError::invalid_version(text))
}

async fn sr_subjects(State(state): State<Arc<AppState>>) -> Result<Response, RegistryError> {
    let subjects = on_catalog(&state, |catalog| Ok(catalog.subjects())).await?;
    Ok(registry_json(StatusCode::OK, json!(subjects)))
}

async fn sr_versions(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
) -> Result<Response, RegistryError> {
    let versions = on_catalog(&state, move |catalog| catalog.versions(&subject)).await?;
    Ok(registry_json(StatusCode::OK, json!(versions)))
}

async fn sr_version(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = version_ref(&version)?;
    let found = on_catalog(&state, move |catalog| catalog.version(&subject, version)).await?;
    Ok(registry_json(
        StatusCode::OK,
        json!({"subject": found.subject, "version": found.version, "id": found.id, "schemaType": "JSON", "schema": found.schema}),
    ))
}

fn raw_schema(text: &str) -> Response {
    let mut response = (StatusCode::OK, text.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(REGISTRY_CONTENT_TYPE));
    response
}

async fn sr_version_schema(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = version_ref(&version)?;
    let found = on_catalog(&state, move |catalog| catalog.version(&subject, version)).await?;
    Ok(raw_schema(&found.schema))
}

async fn sr_register(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    body: Body,
) -> Result<Response, RegistryError> {
    let schema = schema_request(body).await?;
    let registered = on_catalog(&state, move |catalog| catalog.register(&subject, &schema)).await?;
    Ok(registry_json(StatusCode::OK, json!({"id": registered.id})))
}

async fn sr_lookup(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    body: Body,
) -> Result<Response, RegistryError> {
    let schema = schema_request(body).await?;
    let found = on_catalog(&state, move |catalog| catalog.lookup_schema(&subject, &schema)).await.map_err(|error| {
        match error {
            // lookup_schema has no id to name when the schema is not among the versions.
            CatalogError::SchemaNotFound(_) => RegistryError::new(StatusCode::NOT_FOUND, 40403, "Schema not found"),
            other => other.into(),
        }
    })?;
    Ok(registry_json(
        StatusCode::OK,
        json!({"subject": found.subject, "version": found.version, "id": found.id, "schemaType": "JSON", "schema": found.schema}),
    ))
}

/// Soft delete; `?permanent=true` is answered as a soft delete too (Strom keeps the
/// history; see docs/HTTP_API.md).
async fn sr_delete_subject(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
) -> Result<Response, RegistryError> {
    let deleted = on_catalog(&state, move |catalog| catalog.delete_subject(&subject)).await?;
    Ok(registry_json(StatusCode::OK, json!(deleted)))
}

async fn sr_delete_version(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
) -> Result<Response, RegistryError> {
    let version = version_ref(&version)?;
    let deleted = on_catalog(&state, move |catalog| catalog.delete_version(&subject, version)).await?;
    Ok(registry_json(StatusCode::OK, json!(deleted)))
}

fn schema_id(text: &str) -> Result<u32, RegistryError> {
    text.parse().map_err(|_| RegistryError::new(StatusCode::NOT_FOUND, 40403, format!("Schema {text} not found")))
}

async fn sr_schema_by_id(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let id = schema_id(&id)?;
    let schema = on_catalog(&state, move |catalog| catalog.by_id(id)).await?;
    Ok(registry_json(StatusCode::OK, json!({"schemaType": "JSON", "schema": schema})))
}

async fn sr_raw_schema_by_id(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, RegistryError> {
    let id = schema_id(&id)?;
    let schema = on_catalog(&state, move |catalog| catalog.by_id(id)).await?;
    Ok(raw_schema(&schema))
}

async fn sr_id_versions(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Response, RegistryError> {
    let id = schema_id(&id)?;
    let pairs = on_catalog(&state, move |catalog| {
        catalog.by_id(id)?;
        Ok(catalog.subject_versions_of(id))
    })
    .await?;
    let body: Vec<Value> =
        pairs.into_iter().map(|(subject, version)| json!({"subject": subject, "version": version})).collect();
    Ok(registry_json(StatusCode::OK, json!(body)))
}

async fn compatibility_answer(
    state: &AppState,
    subject: String,
    version: Option<VersionRef>,
    uri: &Uri,
    body: Body,
) -> Result<Response, RegistryError> {
    let schema = schema_request(body).await?;
    let differences = on_catalog(state, move |catalog| catalog.test_compatibility(&subject, &schema, version)).await?;
    let verbose = uri.query().is_some_and(|q| q.split('&').any(|p| p == "verbose=true"));
    let mut answer = json!({"is_compatible": differences.is_empty()});
    if verbose || !differences.is_empty() {
        answer["messages"] = json!(differences.iter().map(difference_message).collect::<Vec<_>>());
    }
    Ok(registry_json(StatusCode::OK, answer))
}

async fn sr_compatibility(
    State(state): State<Arc<AppState>>,
    Path((subject, version)): Path<(String, String)>,
    uri: Uri,
    body: Body,
) -> Result<Response, RegistryError> {
    let version = version_ref(&version)?;
    compatibility_answer(&state, subject, Some(version), &uri, body).await
}

async fn sr_compatibility_all(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    uri: Uri,
    body: Body,
) -> Result<Response, RegistryError> {
    compatibility_answer(&state, subject, None, &uri, body).await
}

#[derive(Deserialize)]
struct ConfigRequest {
    compatibility: String,
}

async fn config_request(body: Body) -> Result<Compatibility, RegistryError> {
    let text = body_text(body, 64 * 1024).await?;
    let request: ConfigRequest = serde_json::from_str(&text).map_err(|error| {
        RegistryError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            42203,
            format!("expected {{\"compatibility\": LEVEL}}: {error}"),
        )
    })?;
    Ok(request.compatibility.parse()?)
}

async fn sr_get_global(State(state): State<Arc<AppState>>) -> Response {
    registry_json(StatusCode::OK, json!({"compatibilityLevel": state.catalog.compatibility(None)}))
}

async fn sr_put_global(State(state): State<Arc<AppState>>, body: Body) -> Result<Response, RegistryError> {
    let level = config_request(body).await?;
    on_catalog(&state, move |catalog| catalog.set_compatibility(None, Some(level))).await?;
    Ok(registry_json(StatusCode::OK, json!({"compatibility": level})))
}

async fn sr_get_subject_config(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    uri: Uri,
) -> Result<Response, RegistryError> {
    let default_to_global = uri.query().is_some_and(|q| q.split('&').any(|p| p == "defaultToGlobal=true"));
    let level = match state.catalog.subject_compatibility(&subject) {
        Some(level) => level,
        None if default_to_global => state.catalog.compatibility(None),
        None => {
            return Err(RegistryError::new(
                StatusCode::NOT_FOUND,
                40408,
                format!("Subject '{subject}' does not have subject-level compatibility configured"),
            ));
        }
    };
    Ok(registry_json(StatusCode::OK, json!({"compatibilityLevel": level})))
}

async fn sr_put_subject_config(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
    body: Body,
) -> Result<Response, RegistryError> {
    let level = config_request(body).await?;
    on_catalog(&state, move |catalog| catalog.set_compatibility(Some(&subject), Some(level))).await?;
    Ok(registry_json(StatusCode::OK, json!({"compatibility": level})))
}

async fn sr_delete_subject_config(
    State(state): State<Arc<AppState>>,
    Path(subject): Path<String>,
) -> Result<Response, RegistryError> {
    let previous = state.catalog.compatibility(Some(&subject));
    on_catalog(&state, move |catalog| catalog.set_compatibility(Some(&subject), None)).await?;
    Ok(registry_json(StatusCode::OK, json!({"compatibilityLevel": previous})))
}
