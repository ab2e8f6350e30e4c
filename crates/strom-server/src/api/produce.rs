//! `POST /v1/streams/{stream}/events`: events in, acknowledged after the asked durability.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::json;
use serde_json::value::RawValue;
use strom_log::limits::BATCH_BYTES_MAX;
use strom_log::{Durability, EncodedBatch, RecordIn};
use tokio::sync::OwnedSemaphorePermit;

use super::{AppState, body_too_large, collect_body, query};
use crate::error::ApiError;
use crate::partitioner::partition_for_key;

/// Events in one request. Bounds the work and the per-event bookkeeping of one request.
pub const REQUEST_EVENTS_MAX: usize = 10_000;

/// Bytes of a record key (`?key=` or a key field). Keys pick partitions; a longer one is a
/// mistake, and each event carries its own copy in the batch.
pub const KEY_BYTES_MAX: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceParams {
    #[serde(default)]
    durability: DurabilityParam,
    key: Option<String>,
    key_field: Option<String>,
    partition: Option<u32>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DurabilityParam {
    #[default]
    Sync,
    Buffered,
}

pub(super) async fn produce(
    State(state): State<Arc<AppState>>,
    Path(stream_name): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let params: ProduceParams = query(&uri)?;
    let stream = state.log.stream(&stream_name)?;
    let partitions = stream.partitions().len() as u32;
    if let Some(partition) = params.partition {
        stream.partition(partition)?;
    }
    let (body, _permit) = read_body(&state, &headers, body).await?;
    let events = parse_events(&body)?;
    // A stream with a raw event type in the catalog takes only events its schema accepts;
    // the request is refused whole, with every violation, and nothing of it is appended.
    if let Some(event_type) = state.catalog.snapshot().raw_for_stream(&stream_name) {
        let mut invalid = Vec::new();
        for (index, raw) in events.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_str(raw.get())
                .map_err(|error| ApiError::malformed(format!("event {index}: {error}")))?;
            if let Err(violations) = event_type.validate(&value) {
                invalid.push(json!({"index": index, "violations": violations.iter().map(|v| json!({
                    "pointer": v.pointer, "keyword": v.keyword, "message": v.message
                })).collect::<Vec<_>>()}));
            }
        }
        if !invalid.is_empty() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_event",
                format!("{} event(s) do not match the schema of {} version {}", invalid.len(), event_type.name, event_type.version),
            )
            .with_detail(json!({"type": event_type.name, "schema_id": event_type.schema_id, "version": event_type.version, "events": invalid})));
        }
    }
    let event_bytes_max = state.config.http.event_bytes_max;
    let key_fields: Vec<Cow<str>> = match &params.key_field {
        Some(fields) => fields.split(',').map(|f| Cow::Owned(f.trim().to_string())).collect(),
        None => vec![Cow::Borrowed("userId"), Cow::Borrowed("anonymousId")],
    };
    let explicit_key: Option<Bytes> = match &params.key {
        Some(key) if key.len() > KEY_BYTES_MAX => {
            return Err(ApiError::invalid(format!("the key has {} bytes; at most {KEY_BYTES_MAX}", key.len())));
        }
        Some(key) => Some(Bytes::from(key.clone())),
        None => None,
    };
    let now_ms = state.log.clock().now_ms();
    // Keyless events of one request share one partition (Kafka's sticky partitioning): one
    // batch instead of many; successive requests rotate.
    let mut sticky = None;
    // Per partition: the events' indexes, their records, and the batch size they will make.
    let mut by_partition: BTreeMap<u32, (Vec<usize>, Vec<RecordIn>, usize)> = BTreeMap::new();
    for (index, raw) in events.iter().enumerate() {
        let text = raw.get();
        if text.len() > event_bytes_max {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "event_too_large",
                format!("event {index} has {} bytes; the limit is {event_bytes_max}", text.len()),
            )
            .with_detail(json!({"index": index, "bytes": text.len(), "limit": event_bytes_max})));
        }
        if !text.starts_with('{') {
            return Err(
                ApiError::invalid(format!("event {index} is not a JSON object")).with_detail(json!({"index": index}))
            );
        }
        let key = match &explicit_key {
            Some(key) => Some(key.clone()),
            None => {
                let found = key_of(text, &key_fields)
                    .map_err(|error| ApiError::malformed(format!("event {index}: {error}")))?;
                if let Some(key) = &found
                    && key.len() > KEY_BYTES_MAX
                {
                    return Err(ApiError::invalid(format!(
                        "event {index}: its key has {} bytes; at most {KEY_BYTES_MAX}",
                        key.len()
                    ))
                    .with_detail(json!({"index": index})));
                }
                found.map(Bytes::from)
            }
        };
        let partition = match (params.partition, &key) {
            (Some(partition), _) => partition,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => *sticky.get_or_insert_with(|| {
                (state.round_robin.fetch_add(1, Ordering::Relaxed) % u64::from(partitions)) as u32
            }),
        };
        let entry = by_partition.entry(partition).or_default();
        // Per record: the value, the key, and at most about 30 bytes of varints and attributes.
        entry.2 += text.len() + key.as_ref().map_or(0, Bytes::len) + 30;
        if entry.2 > BATCH_BYTES_MAX {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the events for partition {partition} would make a batch over {BATCH_BYTES_MAX} bytes"),
            ));
        }
        entry.0.push(index);
        entry.1.push(RecordIn {
            key,
            value: Some(body.slice_ref(text.as_bytes())),
            timestamp_ms: now_ms,
            headers: Vec::new(),
        });
    }
    let durability = match params.durability {
        DurabilityParam::Sync => Durability::Sync,
        DurabilityParam::Buffered => Durability::Buffered,
    };
    let mut appends = Vec::with_capacity(by_partition.len());
    let mut indexes = Vec::with_capacity(by_partition.len());
    for (partition, (event_indexes, records, _)) in by_partition {
        let batch = EncodedBatch::encode(&records)?;
        let target = stream.partition(partition)?;
        appends.push(target.append(batch, durability));
        indexes.push((partition, event_indexes));
    }
    let outcomes = futures_util::future::join_all(appends).await;
    let mut results = vec![(0u32, 0u64); events.len()];
    for ((partition, event_indexes), outcome) in indexes.into_iter().zip(outcomes) {
        let appended = outcome?;
        for (position, index) in event_indexes.into_iter().enumerate() {
            results[index] = (partition, appended.offset(position));
        }
    }
    metrics::counter!("strom_http_produced_events_total", "stream" => stream_name).increment(events.len() as u64);
    Ok(results_response(&results))
}

/// Writes `{"results":[{"partition":P,"offset":O},...]}` directly: it is on the hot path.
fn results_response(results: &[(u32, u64)]) -> Response {
    let mut out = String::with_capacity(16 + results.len() * 32);
    out.push_str("{\"results\":[");
    for (i, (partition, offset)) in results.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&format!("{{\"partition\":{partition},\"offset\":{offset}}}"));
    }
    out.push_str("]}");
    ([(header::CONTENT_TYPE, "application/json")], out).into_response()
}

/// Reads a request body up to the configured limit, holding its bytes against the in-flight
/// budget. A declared length over the limit is refused before anything is read.
pub(crate) async fn read_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, OwnedSemaphorePermit), ApiError> {
    let max = state.config.http.body_bytes_max;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|length| length > max) {
        return Err(body_too_large(max));
    }
    let reserve = declared.unwrap_or(max).max(1) as u32;
    let permit = state.inflight_bytes.clone().try_acquire_many_owned(reserve).map_err(|_| {
        metrics::counter!("strom_http_overloaded_total").increment(1);
        ApiError::overloaded("too many request bytes in flight; retry later")
    })?;
    Ok((collect_body(body, max).await?, permit))
}

/// One object or an array of objects, each kept as the raw JSON text it was sent as.
fn parse_events(body: &Bytes) -> Result<Vec<&RawValue>, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|error| ApiError::malformed(format!("the body is not UTF-8: {error}")))?;
    let events: Vec<&RawValue> = match text.trim_start().as_bytes().first() {
        Some(b'[') => serde_json::from_str(text).map_err(|error| ApiError::malformed(error.to_string()))?,
        Some(b'{') => vec![serde_json::from_str(text).map_err(|error| ApiError::malformed(error.to_string()))?],
        _ => return Err(ApiError::malformed("expected a JSON object or an array of objects")),
    };
    if events.is_empty() {
        return Err(ApiError::invalid("no events"));
    }
    if events.len() > REQUEST_EVENTS_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!("{} events; a request holds at most {REQUEST_EVENTS_MAX}", events.len()),
        ));
    }
    Ok(events)
}

/// The key of an event: the first of `fields` present as a non-empty string or a number.
/// Walks the top level only, skipping other values without building them.
fn key_of(event: &str, fields: &[Cow<str>]) -> Result<Option<String>, serde_json::Error> {
    let mut deserializer = serde_json::Deserializer::from_str(event);
    let found = KeySeed { fields }.deserialize(&mut deserializer)?;
    Ok(found.map(|(_, key)| key))
}

struct KeySeed<'f> {
    fields: &'f [Cow<'f, str>],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<(usize, String)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<(usize, String)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut best: Option<(usize, String)> = None;
        while let Some(name) = map.next_key::<FieldName<'de>>()? {
            let rank = self.fields.iter().position(|f| f.as_ref() == name.0.as_ref());
            match rank {
                Some(rank) if best.as_ref().is_none_or(|(b, _)| rank < *b) => {
                    let value: serde_json::Value = map.next_value()?;
                    let key = match value {
                        serde_json::Value::String(s) if !s.is_empty() => Some(s),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        _ => None,
                    };
                    if let Some(key) = key {
                        best = Some((rank, key));
                    }
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(best)
    }
}

/// A field name, borrowed from the input when it has no escapes.
struct FieldName<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for FieldName<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = FieldName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(FieldName(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_first_present_field() {
        let fields = [Cow::Borrowed("userId"), Cow::Borrowed("anonymousId")];
        let cases = [
            (r#"{"userId":"u1","anonymousId":"a1"}"#, Some("u1")),
            (r#"{"anonymousId":"a1","userId":"u1"}"#, Some("u1")),
            (r#"{"anonymousId":"a1","userId":null}"#, Some("a1")),
            (r#"{"userId":"","anonymousId":"a1"}"#, Some("a1")),
            (r#"{"userId":42}"#, Some("42")),
            (r#"{"properties":{"userId":"nested"}}"#, None),
            (r#"{"user\u0049d":"escaped"}"#, Some("escaped")),
            (r#"{}"#, None),
        ];
        for (event, expected) in cases {
            assert_eq!(key_of(event, &fields).unwrap().as_deref(), expected, "{event}");
        }
    }
}
