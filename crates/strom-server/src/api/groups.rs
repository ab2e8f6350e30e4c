//! Consumer groups over HTTP: read from committed offsets, commit, reset, inspect.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use strom_log::{CommitMode, LogError, Stream, validate_stream_name};

use super::read::{Page, wait_for_data, write_record};
use super::{ADMIN_BODY_BYTES_MAX, AppState, blocking, json_body, query, reserve_read};
use crate::error::ApiError;

/// Commits on the blocking pool: a commit waits for an fsync.
async fn commit_offsets(
    state: &AppState,
    group: &str,
    stream: &str,
    offsets: Vec<(u32, u64)>,
    mode: CommitMode,
) -> Result<Vec<(u32, u64)>, ApiError> {
    let (log, group, stream) = (state.log.clone(), group.to_string(), stream.to_string());
    blocking(move || {
        log.groups().commit(&group, &stream, &offsets, mode)?;
        Ok(offsets)
    })
    .await
}

fn check_group(group: &str) -> Result<(), ApiError> {
    validate_stream_name(group)
        .map_err(|_| ApiError::invalid(format!("invalid group name {group:?}: use [A-Za-z0-9._-]{{1,249}}")))
}

pub(super) async fn list(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({"groups": state.log.groups().groups()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupReadParams {
    partition: Option<u32>,
    max_records: Option<usize>,
    max_bytes: Option<usize>,
    wait_ms: Option<u64>,
    #[serde(default)]
    commit: bool,
    #[serde(default)]
    reset: Reset,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Reset {
    #[default]
    Earliest,
    Latest,
}

/// Where the group reads a partition next: its committed offset, kept inside the log's
/// range (retention may have passed it), or the reset policy where it has none.
fn position(state: &AppState, group: &str, stream: &Stream, partition: u32, reset: Reset) -> Result<u64, ApiError> {
    let p = stream.partition(partition)?;
    let (start, end) = (p.log_start_offset(), p.log_end_offset());
    Ok(match state.log.groups().committed(group, &stream.name, partition) {
        Some(committed) => committed.clamp(start, end),
        None if reset == Reset::Latest => end,
        None => start,
    })
}

pub(super) async fn read(
    State(state): State<Arc<AppState>>,
    Path((group, stream_name)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, ApiError> {
    check_group(&group)?;
    let params: GroupReadParams = query(&uri)?;
    let page = Page::new(params.max_records, params.max_bytes, params.wait_ms)?;
    let stream = state.log.stream(&stream_name)?;
    let partitions: Vec<u32> = match params.partition {
        Some(partition) => vec![stream.partition(partition)?.id()],
        None => (0..stream.partitions().len() as u32).collect(),
    };
    let mut positions = Vec::with_capacity(partitions.len());
    for &partition in &partitions {
        positions.push((partition, position(&state, &group, &stream, partition, params.reset)?));
    }
    // Each page starts at another partition, so a busy one cannot starve the rest.
    let start =
        (state.round_robin.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % positions.len() as u64) as usize;
    positions.rotate_left(start);
    let _read_permit = reserve_read(&state, page.max_bytes)?;
    let has_data = |positions: &[(u32, u64)]| {
        positions.iter().any(|&(p, offset)| stream.partitions()[p as usize].log_end_offset() > offset)
    };
    if !page.wait.is_zero() && !has_data(&positions) {
        let waits: Vec<_> = positions.iter().map(|&(p, offset)| (&stream.partitions()[p as usize], offset)).collect();
        wait_for_data(&waits, page.wait, state.shutdown.clone()).await;
    }
    let reader = stream.clone();
    let reads = blocking(move || {
        let mut records_left = page.max_records;
        let mut bytes_left = page.max_bytes;
        let mut reads = Vec::new();
        for (partition, from) in positions {
            if records_left == 0 || bytes_left == 0 {
                break;
            }
            let read = reader.partition(partition)?.read_records(from, records_left, bytes_left)?;
            if read.records.is_empty() {
                continue;
            }
            records_left -= read.records.len();
            bytes_left =
                bytes_left.saturating_sub(read.records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len())).sum());
            reads.push((partition, read));
        }
        Ok(reads)
    })
    .await?;
    let next: Vec<(u32, u64)> = reads.iter().map(|(p, read)| (*p, read.next_offset)).collect();
    if params.commit && !next.is_empty() {
        commit_offsets(&state, &group, &stream.name, next.clone(), CommitMode::Forward).await?;
    }
    let mut out = Vec::with_capacity(4096);
    out.extend_from_slice(b"{\"events\":[");
    let mut first = true;
    for (partition, read) in &reads {
        for record in &read.records {
            if !first {
                out.push(b',');
            }
            first = false;
            write_record(&mut out, Some(*partition), record);
        }
    }
    out.extend_from_slice(b"],\"offsets\":[");
    for (i, (partition, offset)) in next.iter().enumerate() {
        let _ = write!(out, "{}{{\"partition\":{partition},\"offset\":{offset}}}", if i > 0 { "," } else { "" });
    }
    out.extend_from_slice(b"]}");
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionOffset {
    partition: u32,
    offset: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitRequest {
    stream: String,
    offsets: Vec<PartitionOffset>,
}

fn committed_response(offsets: &[(u32, u64)]) -> Json<Value> {
    let committed: Vec<Value> = offsets.iter().map(|(p, o)| json!({"partition": p, "offset": o})).collect();
    Json(json!({"committed": committed}))
}

pub(super) async fn commit(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_group(&group)?;
    let request: CommitRequest = json_body(body, ADMIN_BODY_BYTES_MAX).await?;
    let stream = state.log.stream(&request.stream)?;
    let mut offsets = Vec::with_capacity(request.offsets.len());
    for PartitionOffset { partition, offset } in request.offsets {
        let p = stream.partition(partition)?;
        let end = p.log_end_offset();
        if offset > end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: p.log_start_offset(),
                log_end_offset: end,
            }
            .into());
        }
        offsets.push((partition, offset));
    }
    let offsets = commit_offsets(&state, &group, &stream.name, offsets, CommitMode::Forward).await?;
    Ok(committed_response(&offsets))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    stream: String,
    to: ResetTo,
    partitions: Option<Vec<u32>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ResetTo {
    Named(NamedPosition),
    Offset { offset: u64 },
    Timestamp { timestamp: i64 },
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum NamedPosition {
    Earliest,
    Latest,
}

pub(super) async fn reset(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    check_group(&group)?;
    let request: ResetRequest = json_body(body, ADMIN_BODY_BYTES_MAX).await?;
    let stream = state.log.stream(&request.stream)?;
    let partitions = request.partitions.unwrap_or_else(|| (0..stream.partitions().len() as u32).collect());
    for &partition in &partitions {
        stream.partition(partition)?;
    }
    let to = request.to;
    let reader = stream.clone();
    let offsets = blocking(move || {
        partitions
            .into_iter()
            .map(|partition| {
                let p = reader.partition(partition)?;
                let (start, end) = (p.log_start_offset(), p.log_end_offset());
                let offset = match to {
                    ResetTo::Named(NamedPosition::Earliest) => start,
                    ResetTo::Named(NamedPosition::Latest) => end,
                    ResetTo::Offset { offset } if (start..=end).contains(&offset) => offset,
                    ResetTo::Offset { offset } => {
                        return Err(LogError::OffsetOutOfRange {
                            offset,
                            log_start_offset: start,
                            log_end_offset: end,
                        }
                        .into());
                    }
                    ResetTo::Timestamp { timestamp } => p.offset_for_timestamp(timestamp)?.unwrap_or(end),
                };
                Ok((partition, offset))
            })
            .collect::<Result<Vec<_>, ApiError>>()
    })
    .await?;
    let offsets = commit_offsets(&state, &group, &stream.name, offsets, CommitMode::Reset).await?;
    Ok(committed_response(&offsets))
}

pub(super) async fn offsets(
    State(state): State<Arc<AppState>>,
    Path(group): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_group(&group)?;
    let mut streams: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (g, stream, partition, offset) in state.log.groups().all() {
        if g != group {
            continue;
        }
        let end = state.log.stream(&stream).ok().and_then(|s| s.partition(partition).ok().map(|p| p.log_end_offset()));
        streams.entry(stream).or_default().push(json!({
            "partition": partition, "offset": offset, "log_end_offset": end, "lag": end.map(|e| e.saturating_sub(offset)),
        }));
    }
    let streams: Vec<Value> =
        streams.into_iter().map(|(stream, partitions)| json!({"stream": stream, "partitions": partitions})).collect();
    Ok(Json(json!({"group": group, "streams": streams})))
}
