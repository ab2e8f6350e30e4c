//! Reading: by partition (offset or timestamp, with long-poll) and the live SSE tail.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::IgnoredAny;
use strom_log::{Partition, RecordOut, Stream};
use tokio::sync::{mpsc, watch};

use super::{AppState, blocking, partition_number, query, reserve_read};
use crate::error::ApiError;

pub(crate) const MAX_RECORDS_MAX: usize = 10_000;
pub(crate) const MAX_BYTES_MAX: usize = 16 * 1024 * 1024;
pub(crate) const WAIT_MS_MAX: u64 = 30_000;
const TAIL_PAGE_RECORDS: usize = 500;
const TAIL_QUEUE_EVENTS: usize = 256;
const TAIL_WAIT: Duration = Duration::from_secs(15);
const TAIL_READ_BYTES: usize = 1024 * 1024;

/// Page limits shared by partition and group reads.
#[derive(Clone, Copy)]
pub(crate) struct Page {
    pub max_records: usize,
    pub max_bytes: usize,
    pub wait: Duration,
}

impl Page {
    pub fn new(max_records: Option<usize>, max_bytes: Option<usize>, wait_ms: Option<u64>) -> Result<Page, ApiError> {
        let max_records = max_records.unwrap_or(100);
        let max_bytes = max_bytes.unwrap_or(1024 * 1024);
        let wait_ms = wait_ms.unwrap_or(0);
        if !(1..=MAX_RECORDS_MAX).contains(&max_records) {
            return Err(ApiError::invalid(format!("max_records must be 1 to {MAX_RECORDS_MAX}")));
        }
        if !(1..=MAX_BYTES_MAX).contains(&max_bytes) {
            return Err(ApiError::invalid(format!("max_bytes must be 1 to {MAX_BYTES_MAX}")));
        }
        if wait_ms > WAIT_MS_MAX {
            return Err(ApiError::invalid(format!("wait_ms must be at most {WAIT_MS_MAX}")));
        }
        Ok(Page { max_records, max_bytes, wait: Duration::from_millis(wait_ms) })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    offset: Option<u64>,
    timestamp: Option<i64>,
    max_records: Option<usize>,
    max_bytes: Option<usize>,
    wait_ms: Option<u64>,
}

pub(super) async fn read_partition(
    State(state): State<Arc<AppState>>,
    Path((stream_name, partition)): Path<(String, String)>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params: ReadParams = query(&uri)?;
    let page = Page::new(params.max_records, params.max_bytes, params.wait_ms)?;
    let partition = partition_number(&partition)?;
    let stream = state.log.stream(&stream_name)?;
    let handle = stream.partition(partition)?;
    let from = match (params.offset, params.timestamp) {
        (Some(_), Some(_)) => return Err(ApiError::invalid("give offset or timestamp, not both")),
        (Some(offset), None) => offset,
        (None, Some(timestamp)) => {
            let stream = stream.clone();
            blocking(move || {
                let partition = stream.partition(partition)?;
                Ok(partition.offset_for_timestamp(timestamp)?.unwrap_or_else(|| partition.log_end_offset()))
            })
            .await?
        }
        (None, None) => handle.log_start_offset(),
    };
    if !page.wait.is_zero() && from == handle.log_end_offset() {
        wait_for_data(&[(handle, from)], page.wait, state.shutdown.clone()).await;
    }
    let _read_permit = reserve_read(&state, page.max_bytes)?;
    let read =
        blocking(move || Ok(stream.partition(partition)?.read_records(from, page.max_records, page.max_bytes)?))
            .await?;
    let mut out = Vec::with_capacity(
        128 + read.records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len()) + 96).sum::<usize>(),
    );
    out.extend_from_slice(b"{\"events\":[");
    for (i, record) in read.records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_record(&mut out, None, record);
    }
    let _ = write!(
        out,
        "],\"next_offset\":{},\"log_start_offset\":{},\"log_end_offset\":{}}}",
        read.next_offset, read.log_start_offset, read.log_end_offset
    );
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

/// Waits until any of the partitions has data past its position, the wait ends, or the
/// server shuts down.
pub(crate) async fn wait_for_data(
    positions: &[(&Partition, u64)],
    wait: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    if positions.is_empty() {
        return;
    }
    let waits = positions.iter().map(|(partition, from)| Box::pin(partition.wait_for(*from, wait)));
    tokio::select! {
        _ = futures_util::future::select_all(waits) => {}
        _ = shutdown.wait_for(|stopping| *stopping) => {}
    }
}

/// One record as JSON: `{"partition"?, "offset", "timestamp", "key", "value", "headers"?}`.
/// The value is written as stored when it is JSON (it is, for events produced over HTTP),
/// else as a string; headers (when the record has any) as an object of strings.
pub(crate) fn write_record(out: &mut Vec<u8>, partition: Option<u32>, record: &RecordOut) {
    out.push(b'{');
    if let Some(partition) = partition {
        let _ = write!(out, "\"partition\":{partition},");
    }
    let _ = write!(out, "\"offset\":{},\"timestamp\":{},\"key\":", record.offset, record.timestamp_ms);
    match &record.key {
        Some(key) => {
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(key));
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"value\":");
    match &record.value {
        Some(value) if serde_json::from_slice::<IgnoredAny>(value).is_ok() => out.extend_from_slice(value),
        Some(value) => {
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(value));
        }
        None => out.extend_from_slice(b"null"),
    }
    if !record.headers.is_empty() {
        out.extend_from_slice(b",\"headers\":{");
        for (i, (name, value)) in record.headers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let _ = serde_json::to_writer(&mut *out, name);
            out.push(b':');
            match value {
                Some(value) => {
                    let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(value));
                }
                None => out.extend_from_slice(b"null"),
            }
        }
        out.push(b'}');
    }
    out.push(b'}');
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TailParams {
    partition: Option<u32>,
    #[serde(default)]
    from: TailFrom,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum TailFrom {
    #[default]
    End,
    Start,
}

pub(super) async fn tail(
    State(state): State<Arc<AppState>>,
    Path(stream_name): Path<String>,
    uri: Uri,
) -> Result<Response, ApiError> {
    let params: TailParams = query(&uri)?;
    let stream = state.log.stream(&stream_name)?;
    let partitions: Vec<u32> = match params.partition {
        Some(partition) => vec![stream.partition(partition)?.id()],
        None => (0..stream.partitions().len() as u32).collect(),
    };
    let permit = state.tails.clone().try_acquire_owned().map_err(|_| ApiError::overloaded("too many live tails"))?;
    let positions: Vec<(u32, u64)> = partitions
        .into_iter()
        .map(|p| {
            let partition = &stream.partitions()[p as usize];
            (p, if params.from == TailFrom::Start { partition.log_start_offset() } else { partition.log_end_offset() })
        })
        .collect();
    let (sender, mut receiver) = mpsc::channel::<Event>(TAIL_QUEUE_EVENTS);
    let shutdown = state.shutdown.clone();
    let read_bytes = state.read_bytes.clone();
    tokio::spawn(async move {
        let _permit = permit;
        follow(stream, positions, sender, shutdown, read_bytes).await;
    });
    let events =
        futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx).map(|event| event.map(Ok::<_, Infallible>)));
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(TAIL_WAIT).text("keepalive")).into_response())
}

/// Feeds a tail until the client leaves or the server stops. The channel is bounded: a slow
/// client slows its own reads, nothing else.
async fn follow(
    stream: Arc<Stream>,
    mut positions: Vec<(u32, u64)>,
    sender: mpsc::Sender<Event>,
    shutdown: watch::Receiver<bool>,
    read_bytes: Arc<tokio::sync::Semaphore>,
) {
    loop {
        let mut progressed = false;
        for (partition, position) in positions.iter_mut() {
            let (id, from) = (*partition, *position);
            let reader = stream.clone();
            // Tails wait for read budget instead of being refused: they are already admitted.
            let Ok(_permit) = read_bytes.clone().acquire_many_owned(TAIL_READ_BYTES as u32).await else { return };
            let read =
                blocking(move || Ok(reader.partition(id)?.read_records(from, TAIL_PAGE_RECORDS, TAIL_READ_BYTES)?))
                    .await;
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    let body = serde_json::json!({"error": {"code": error.code, "message": error.message, "detail": error.detail}});
                    let _ = sender.send(Event::default().event("error").data(body.to_string())).await;
                    return;
                }
            };
            for record in &read.records {
                let mut json = Vec::with_capacity(256);
                write_record(&mut json, Some(id), record);
                let event = Event::default().event("record").data(String::from_utf8_lossy(&json));
                if sender.send(event).await.is_err() {
                    return;
                }
            }
            progressed |= !read.records.is_empty();
            *position = read.next_offset;
        }
        if *shutdown.borrow() {
            return;
        }
        if !progressed {
            let waits: Vec<(&Partition, u64)> =
                positions.iter().map(|&(p, offset)| (&stream.partitions()[p as usize], offset)).collect();
            tokio::select! {
                _ = wait_for_data(&waits, TAIL_WAIT, shutdown.clone()) => {}
                _ = sender.closed() => return,
            }
        }
    }
}
