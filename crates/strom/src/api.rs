//! The HTTP API as the command line sees it: one client, the error shape, and the wire types.
//!
//! Wire types meet the command line here and nowhere else: `client` and `bench` take these
//! structs and never spell a JSON field name themselves. See `docs/HTTP_API.md`.

use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use reqwest::{Client, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// How long a connection attempt may take before the server counts as unreachable.
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// How long a request may take beyond any long-poll wait it asked the server for.
pub const REQUEST_TIMEOUT_MS: u64 = 30_000;
/// At most this much of a non-JSON error body is shown; the rest is noise from a proxy.
const ERROR_BODY_SHOWN_BYTES_MAX: usize = 200;

/// A client of one Strom server: the base URL and a shared keep-alive connection pool.
#[derive(Clone)]
pub struct Api {
    http: Client,
    base: Url,
}

impl Api {
    /// A client for the server at `base` (for example `http://127.0.0.1:8425`), keeping up to
    /// `connections_idle_max` connections open between requests.
    pub fn new(base: Url, connections_idle_max: usize, token: Option<&str>) -> Result<Api> {
        // This build carries no TLS (see Cargo.toml): say so now rather than at the first request.
        if base.scheme() != "http" {
            bail!("--url {base}: only http:// URLs are supported");
        }
        if base.cannot_be_a_base() {
            bail!("--url {base}: not a base URL");
        }
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {token}")).context("--token: not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = Client::builder()
            .default_headers(headers)
            .connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .pool_max_idle_per_host(connections_idle_max)
            // Small requests must not wait for Nagle's algorithm to fill a segment.
            .tcp_nodelay(true)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Api { http, base })
    }

    /// The shared connection pool, for callers that send their own requests (the bench).
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// The URL of `segments` below the base URL, each segment escaped (stream names may hold
    /// `.`, which must stay a name and not become a relative path).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        // `cannot_be_a_base` was ruled out in `new`, so the path can always be extended.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// `GET url`, the body decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, url: Url) -> Result<T> {
        let body = self.get_bytes(url).await?;
        decode(&body)
    }

    /// `GET url`, the body as the server sent it.
    pub async fn get_bytes(&self, url: Url) -> Result<Bytes> {
        self.send(self.http.get(url.clone()), &url).await
    }

    /// `POST url` with a JSON body, the answer decoded as `T`.
    pub async fn post<T: DeserializeOwned>(&self, url: Url, body: impl Into<Bytes>) -> Result<T> {
        let request = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(body.into());
        let answer = self.send(request, &url).await?;
        decode(&answer)
    }

    /// `DELETE url`, the answer ignored.
    pub async fn delete(&self, url: Url) -> Result<()> {
        self.send(self.http.delete(url.clone()), &url).await?;
        Ok(())
    }

    /// Sends `request`; a non-2xx answer becomes an [`ApiError`].
    async fn send(&self, request: RequestBuilder, url: &Url) -> Result<Bytes> {
        let response = request
            .timeout(Duration::from_millis(REQUEST_TIMEOUT_MS + wait_ms_of(url)))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let response = error_for_status(response).await?;
        response.bytes().await.with_context(|| format!("reading the answer of {url}"))
    }

    /// Sends `request` and returns the response to read as a stream, with no overall timeout.
    pub async fn open_stream(&self, url: Url) -> Result<Response> {
        let response = self.http.get(url).send().await.with_context(|| format!("cannot reach {}", self.base))?;
        error_for_status(response).await
    }
}

/// The long-poll wait a URL asks the server for, so the request timeout can allow for it.
fn wait_ms_of(url: &Url) -> u64 {
    url.query_pairs().find(|(name, _)| name == "wait_ms").and_then(|(_, value)| value.parse().ok()).unwrap_or(0)
}

/// Passes a 2xx response through; anything else becomes an [`ApiError`].
pub async fn error_for_status(response: Response) -> Result<Response> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let retry_after_s = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse().ok());
    let body = response.bytes().await.unwrap_or_default();
    Err(ApiError::from_response(status, retry_after_s, &body).into())
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).context("the server's answer is not the JSON the API describes")
}

/// An error answer of the server, `{"error": {"code", "message", "detail"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub message: String,
    pub detail: serde_json::Value,
    /// The `Retry-After` header of a `429`, in seconds.
    pub retry_after_s: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    message: String,
    #[serde(default)]
    detail: serde_json::Value,
}

impl ApiError {
    fn from_response(status: StatusCode, retry_after_s: Option<u64>, body: &[u8]) -> ApiError {
        match serde_json::from_slice::<ErrorBody>(body) {
            Ok(ErrorBody { error }) => {
                ApiError { status, code: error.code, message: error.message, detail: error.detail, retry_after_s }
            }
            // Not Strom's error shape (a proxy, or a bug): keep the status and a bounded excerpt.
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let excerpt: String = text.trim().chars().take(ERROR_BODY_SHOWN_BYTES_MAX).collect();
                let message = if excerpt.is_empty() {
                    status.canonical_reason().unwrap_or("no reason").to_owned()
                } else {
                    excerpt
                };
                ApiError {
                    status,
                    code: format!("http_{}", status.as_u16()),
                    message,
                    detail: serde_json::Value::Null,
                    retry_after_s,
                }
            }
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// When the server answers a produce request.
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum Durability {
    /// After the fsync that covers the events.
    #[default]
    Sync,
    /// After the write to the page cache: a crash of the machine may lose the events.
    Buffered,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Sync => "sync",
            Durability::Buffered => "buffered",
        }
    }
}

/// `GET /v1/streams/{stream}`.
#[derive(Deserialize)]
pub struct StreamDescription {
    pub name: String,
    pub config: StreamConfig,
    pub partitions: Vec<PartitionDescription>,
    pub log_end_offset_total: u64,
    pub size_bytes_total: u64,
}

#[derive(Deserialize)]
pub struct StreamConfig {
    pub partitions: u32,
    pub retention_ms: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub segment_bytes: u64,
    #[serde(default)]
    pub segment_ms: Option<u64>,
}

#[derive(Deserialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
    pub size_bytes: u64,
    pub segments: u64,
    pub poisoned: Option<serde_json::Value>,
}

/// `GET /v1/streams`.
#[derive(Deserialize)]
pub struct StreamList {
    pub streams: Vec<StreamDescription>,
}

/// The answer to `POST /v1/streams/{stream}/events`.
#[derive(Deserialize)]
pub struct ProduceAnswer {
    pub results: Vec<PartitionOffset>,
}

/// A position in a partition: an acknowledged event, or the next offset a group reads.
#[derive(Clone, Copy, Deserialize, Serialize)]
pub struct PartitionOffset {
    pub partition: u32,
    pub offset: u64,
}

/// One record as read back. `partition` is absent when reading one partition by number.
#[derive(Deserialize, Serialize)]
pub struct Record {
    #[serde(default)]
    pub partition: u32,
    pub offset: u64,
    pub timestamp: i64,
    pub key: Option<String>,
    /// The event exactly as the server stored it.
    pub value: Box<RawValue>,
}

/// `GET /v1/streams/{stream}/partitions/{partition}/events`.
#[derive(Deserialize)]
pub struct PartitionPage {
    pub events: Vec<Record>,
    pub next_offset: u64,
    pub log_end_offset: u64,
}

/// `GET /v1/groups/{group}/streams/{stream}/events`.
#[derive(Deserialize)]
pub struct GroupPage {
    pub events: Vec<Record>,
    pub offsets: Vec<PartitionOffset>,
}

/// The body of `POST /v1/groups/{group}/offsets`.
#[derive(Serialize)]
pub struct CommitRequest<'a> {
    pub stream: &'a str,
    pub offsets: &'a [PartitionOffset],
}

/// The answer to a commit or a reset.
#[derive(Deserialize)]
pub struct Committed {
    pub committed: Vec<PartitionOffset>,
}

/// `GET /v1/groups`.
#[derive(Deserialize)]
pub struct GroupList {
    pub groups: Vec<String>,
}

/// `GET /v1/groups/{group}/offsets`.
#[derive(Deserialize)]
pub struct GroupOffsets {
    pub streams: Vec<GroupStreamOffsets>,
}

#[derive(Deserialize)]
pub struct GroupStreamOffsets {
    pub stream: String,
    pub partitions: Vec<GroupPartitionOffset>,
}

#[derive(Deserialize)]
pub struct GroupPartitionOffset {
    pub partition: u32,
    pub offset: u64,
    pub log_end_offset: u64,
    pub lag: u64,
}
