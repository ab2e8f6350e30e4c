//! One flush of a partition: the records of an offset range, written as one Parquet file per
//! hour they fall in.
//!
//! A flush is a pure function of its range (and the time basis): the same records give the
//! same hours, the same rows in each, and so the same file names. That is what recovery
//! relies on: a flush interrupted by a crash is done again for the same range, writing only
//! the files that are not there yet.
//!
//! Two passes over the range: the first (`RangeScan::observe`, done while reading) finds each
//! record's hour and event type, so that each file's schema is known before its first row is
//! written (a file's columns are those of the event types in it); the second re-reads the
//! range from the log (page cache) and writes the rows. Nothing but per-hour counters is
//! held in memory between the two.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression as ParquetCompression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use strom_catalog::{EventKind, EventType, Snapshot};
use strom_log::{LogError, Partition, RecordOut};

use crate::columns::{self, PropertyColumn, RowInput, Rows};
use crate::config::{Compression, LakeConfig, TimeBasis};
use crate::error::{IoContext, LakeError, Result};
use crate::event::{Envelope, Field, TIME_FIELDS};
use crate::layout::{FileName, Hour, file_path};
use crate::limits::{BATCH_ROWS_MAX, READ_BYTES_MAX, READ_RECORDS_MAX};

/// Distinct event type names remembered per hour of a flush; beyond it, events of further
/// types still land, without typed columns of their own.
const TYPE_NAMES_PER_HOUR_MAX: usize = 10_000;

/// The event types seen in one hour of a flush, by kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct TypeSet {
    names: [HashSet<String>; 7],
    len: usize,
}

fn kind_index(kind: EventKind) -> usize {
    EventKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

impl TypeSet {
    fn insert(&mut self, kind: EventKind, name: &str) {
        let set = &mut self.names[kind_index(kind)];
        if self.len < TYPE_NAMES_PER_HOUR_MAX && !set.contains(name) {
            set.insert(name.to_string());
            self.len += 1;
        }
    }

    /// The catalog's types for these names, in a stable order (kind, then name).
    pub fn resolve<'s>(&self, snapshot: &'s Snapshot, stream: &str) -> Vec<&'s std::sync::Arc<EventType>> {
        let mut found: Vec<&std::sync::Arc<EventType>> = Vec::new();
        for kind in EventKind::ALL {
            let mut names: Vec<&String> = self.names[kind_index(kind)].iter().collect();
            names.sort();
            for name in names {
                let event_type = match kind {
                    EventKind::Raw => snapshot.raw_for_stream(stream),
                    _ => snapshot.lookup(kind, name),
                };
                if let Some(event_type) = event_type
                    && !found.iter().any(|t| t.name == event_type.name)
                {
                    found.push(event_type);
                }
            }
        }
        found
    }
}

/// What a flush's first pass learnt of one hour.
#[derive(Clone, Debug, Default)]
pub(crate) struct HourScan {
    pub first: u64,
    pub last: u64,
    pub rows: u64,
    /// Bytes of the records' values (what the file's size is estimated from).
    pub input_bytes: u64,
    pub types: TypeSet,
}

/// The first pass over a flush's range.
#[derive(Debug, Default)]
pub(crate) struct RangeScan {
    pub start: u64,
    /// One past the last offset observed.
    pub end: u64,
    pub hours: BTreeMap<Hour, HourScan>,
    pub records: u64,
    pub input_bytes: u64,
}

impl RangeScan {
    pub fn new(start: u64) -> RangeScan {
        RangeScan { start, end: start, ..RangeScan::default() }
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    pub fn observe(&mut self, record: &RecordOut, basis: TimeBasis) {
        let value = record.value.as_deref();
        let text = value.and_then(|v| std::str::from_utf8(v).ok());
        let envelope = text.and_then(Envelope::parse);
        let hour = hour_of(record, envelope.as_ref(), basis);
        let entry = self.hours.entry(hour).or_insert_with(|| HourScan { first: record.offset, ..HourScan::default() });
        entry.first = entry.first.min(record.offset);
        entry.last = entry.last.max(record.offset);
        entry.rows += 1;
        let bytes = value.map_or(0, <[u8]>::len) as u64;
        entry.input_bytes += bytes;
        if let Some(envelope) = &envelope {
            let key = envelope.type_key();
            entry.types.insert(key.kind, &key.name);
        }
        self.records += 1;
        self.input_bytes += bytes;
        self.end = self.end.max(record.offset + 1);
    }

    /// The files this range makes: (hour, name, path below the lake's root).
    pub fn files(&self, stream: &str, partition: u32) -> Vec<(Hour, FileName, String)> {
        self.hours
            .iter()
            .map(|(hour, scan)| {
                let file = FileName { partition, first: scan.first, last: scan.last };
                (*hour, file, file_path(stream, *hour, &file))
            })
            .collect()
    }
}

/// The hour an event lands in: its own time (`timestamp`) under the event basis, when it has
/// one within the years 0 to 9999; else the time the log recorded.
pub(crate) fn hour_of(record: &RecordOut, envelope: Option<&Envelope<'_>>, basis: TimeBasis) -> Hour {
    let event_hour = match basis {
        TimeBasis::Event => {
            envelope.and_then(|e| e.time_us(Field::Timestamp)).and_then(|us| Hour::of_ms(us.div_euclid(1000)))
        }
        TimeBasis::Receive => None,
    };
    event_hour.unwrap_or_else(|| Hour::of_ms_clamped(record.timestamp_ms))
}

/// Reads `[start, end)` of a partition in bounded chunks.
pub(crate) fn read_range(
    partition: &Partition,
    stream: &str,
    start: u64,
    end: u64,
    mut each: impl FnMut(&RecordOut) -> Result<()>,
) -> Result<()> {
    let mut next = start;
    while next < end {
        let read = partition.read_records(next, READ_RECORDS_MAX, READ_BYTES_MAX).map_err(|error| match error {
            LogError::OffsetOutOfRange { .. } => LakeError::RecordsGone {
                stream: stream.to_string(),
                partition: partition.id(),
                first: next,
                end,
                detail: error.to_string(),
            },
            other => LakeError::Log(other),
        })?;
        if read.records.is_empty() {
            return Err(LakeError::RecordsGone {
                stream: stream.to_string(),
                partition: partition.id(),
                first: next,
                end,
                detail: format!("the log ends at {}", read.log_end_offset),
            });
        }
        for record in &read.records {
            if record.offset >= end {
                return Ok(());
            }
            each(record)?;
        }
        next = read.next_offset;
    }
    Ok(())
}

/// What a flush needs besides its range.
pub(crate) struct FlushContext<'a> {
    pub stream: &'a str,
    pub partition: &'a Partition,
    pub basis: TimeBasis,
    pub snapshot: &'a Snapshot,
    pub dead_letters: bool,
    pub config: &'a LakeConfig,
    pub spool: &'a Path,
}

/// A file written to the spool, ready to publish.
#[derive(Debug)]
pub(crate) struct Written {
    pub hour: Hour,
    pub path: String,
    pub spool_path: PathBuf,
    pub rows: u64,
    pub bytes: u64,
    pub input_bytes: u64,
}

struct OpenFile {
    hour: Hour,
    path: String,
    spool_path: PathBuf,
    file: File,
    writer: ArrowWriter<File>,
    rows: Rows,
    written_rows: u64,
    expected_rows: u64,
    input_bytes: u64,
}

/// Spool file names are unique within the process (and the spool is emptied at start).
static SPOOL_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The second pass: writes the files of `hours` (a subset of the scan's) to the spool, each
/// complete and synced.
pub(crate) fn write_files(
    context: &FlushContext<'_>,
    scan: &RangeScan,
    hours: &BTreeSet<Hour>,
) -> Result<Vec<Written>> {
    let mut open: BTreeMap<Hour, OpenFile> = BTreeMap::new();
    let result = write_into(context, scan, hours, &mut open);
    if result.is_err() {
        for file in open.values() {
            let _ = std::fs::remove_file(&file.spool_path);
        }
    }
    result
}

fn write_into(
    context: &FlushContext<'_>,
    scan: &RangeScan,
    hours: &BTreeSet<Hour>,
    open: &mut BTreeMap<Hour, OpenFile>,
) -> Result<Vec<Written>> {
    let partition_id = context.partition.id();
    for (hour, file, path) in scan.files(context.stream, partition_id) {
        if !hours.contains(&hour) {
            continue;
        }
        let hour_scan = &scan.hours[&hour];
        let types = hour_scan.types.resolve(context.snapshot, context.stream);
        let sets: Vec<Vec<PropertyColumn>> = types.iter().map(|t| columns::columns_of(t)).collect();
        let properties = columns::merge(sets.iter().map(Vec::as_slice));
        let rows = Rows::new(properties, context.dead_letters);
        let sequence = SPOOL_SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let spool_path = context.spool.join(format!(
            "{}.{partition_id}.{}.{}.{}.{sequence}.tmp",
            context.stream,
            file.first,
            hour.0,
            std::process::id()
        ));
        let handle = File::create(&spool_path).at(&spool_path)?;
        let metadata = vec![
            KeyValue::new("strom.stream".into(), context.stream.to_string()),
            KeyValue::new("strom.partition".into(), partition_id.to_string()),
            KeyValue::new("strom.first_offset".into(), file.first.to_string()),
            KeyValue::new("strom.last_offset".into(), file.last.to_string()),
            KeyValue::new(
                "strom.time_basis".into(),
                match context.basis {
                    TimeBasis::Event => "event".to_string(),
                    TimeBasis::Receive => "receive".to_string(),
                },
            ),
            KeyValue::new(
                "strom.event_types".into(),
                types.iter().map(|t| format!("{}@{}", t.name, t.version)).collect::<Vec<_>>().join(","),
            ),
        ];
        let properties = writer_properties(context.config, Some(metadata));
        let writer =
            ArrowWriter::try_new(handle.try_clone().at(&spool_path)?, rows.schema().clone(), Some(properties))?;
        open.insert(
            hour,
            OpenFile {
                hour,
                path,
                spool_path,
                file: handle,
                writer,
                rows,
                written_rows: 0,
                expected_rows: hour_scan.rows,
                input_bytes: hour_scan.input_bytes,
            },
        );
    }
    if open.is_empty() {
        return Ok(Vec::new());
    }
    read_range(context.partition, context.stream, scan.start, scan.end, |record| {
        let value = record.value.as_deref();
        let text = value.and_then(|v| std::str::from_utf8(v).ok());
        let envelope = text.and_then(Envelope::parse);
        let hour = hour_of(record, envelope.as_ref(), context.basis);
        let Some(file) = open.get_mut(&hour) else { return Ok(()) };
        let input = RowInput {
            partition: partition_id as i32,
            offset: record.offset as i64,
            log_time_ms: record.timestamp_ms,
            key: record.key.as_deref(),
            value,
            headers: &record.headers,
        };
        file.rows.append(&input, text, envelope.as_ref());
        file.written_rows += 1;
        if file.rows.len() >= BATCH_ROWS_MAX {
            let batch = file.rows.take()?;
            file.writer.write(&batch)?;
        }
        Ok(())
    })?;
    let mut written = Vec::with_capacity(open.len());
    for (_, mut file) in std::mem::take(open) {
        let cleanup = file.spool_path.clone();
        let finished = (|| {
            if file.written_rows != file.expected_rows {
                // The log is immutable below its end: a difference means a bug, and a file
                // that would not match its name.
                return Err(LakeError::Io {
                    path: file.spool_path.clone(),
                    source: std::io::Error::other(format!(
                        "the second pass found {} rows for {}, the first {}",
                        file.written_rows, file.path, file.expected_rows
                    )),
                });
            }
            if !file.rows.is_empty() {
                let batch = file.rows.take()?;
                file.writer.write(&batch)?;
            }
            file.writer.close()?;
            file.file.sync_all().at(&file.spool_path)?;
            let bytes = file.file.metadata().at(&file.spool_path)?.len();
            Ok(Written {
                hour: file.hour,
                path: file.path,
                spool_path: file.spool_path,
                rows: file.written_rows,
                bytes,
                input_bytes: file.input_bytes,
            })
        })();
        match finished {
            Ok(done) => written.push(done),
            Err(error) => {
                let _ = std::fs::remove_file(&cleanup);
                for done in &written {
                    let _ = std::fs::remove_file(&done.spool_path);
                }
                return Err(error);
            }
        }
    }
    Ok(written)
}

pub(crate) fn writer_properties(config: &LakeConfig, metadata: Option<Vec<KeyValue>>) -> WriterProperties {
    let compression = match config.compression {
        Compression::Zstd => ParquetCompression::ZSTD(ZstdLevel::try_new(config.zstd_level).unwrap_or_default()),
        Compression::None => ParquetCompression::UNCOMPRESSED,
    };
    let mut builder = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(config.row_group_rows))
        .set_key_value_metadata(metadata);
    // A value per row that never repeats: a dictionary would be built for each page, found
    // useless and dropped (its interning was about 3 % of the sink's time).
    for column in ["event_json", "event_bytes", "message_id", "log_offset"] {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(column), false);
    }
    // The envelope's times are nearly unique at millisecond precision: without a dictionary
    // they are cheaper to write and, compressed, smaller (115.2 against 118.9 bytes per
    // event in a one-million-event run, docs/BENCHMARKS.md).
    for field in TIME_FIELDS {
        builder = builder.set_column_dictionary_enabled(ColumnPath::from(crate::event::column_name(field)), false);
    }
    // The minimum and maximum of whole events or headers prune nothing; comparing them row by
    // row was about 1 % of the sink's time.
    for column in ["event_json", "event_bytes", "headers"] {
        builder = builder.set_column_statistics_enabled(ColumnPath::from(column), EnabledStatistics::None);
    }
    builder.build()
}

/// What a flush is about to do, written before any of its files is published: after a
/// crash, the range to do again (with the basis it was cut with).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub start: u64,
    pub end: u64,
    pub time_basis: TimeBasis,
    pub files: Vec<String>,
}

/// Where a partition's marker is in the lake.
pub(crate) fn marker_path(stream: &str, partition: u32) -> String {
    format!("{}/{stream}/{partition}.json", crate::config::MARKERS_DIR)
}

/// Where a partition's marker was kept before markers moved into the lake (in the data
/// directory): still read, so that a flush interrupted before an upgrade is finished after it.
pub(crate) fn legacy_marker_path(state_dir: &Path, stream: &str, partition: u32) -> PathBuf {
    state_dir.join("markers").join(stream).join(format!("{partition}.json"))
}

pub(crate) async fn write_marker(store: &crate::store::Store, path: &str, marker: &Marker) -> Result<()> {
    let text = serde_json::to_vec(marker)
        .map_err(|error| LakeError::BadMarker { path: PathBuf::from(path), detail: error.to_string() })?;
    store.put_small(path, text).await
}

pub(crate) async fn read_marker(store: &crate::store::Store, path: &str) -> Result<Option<Marker>> {
    match store.read_if_exists(path).await? {
        Some(bytes) => parse_marker(Path::new(path), &bytes).map(Some),
        None => Ok(None),
    }
}

pub(crate) fn read_legacy_marker(path: &Path) -> Result<Option<Marker>> {
    match std::fs::read(path) {
        Ok(bytes) => parse_marker(path, &bytes).map(Some),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(LakeError::Io { path: path.to_path_buf(), source: error }),
    }
}

fn parse_marker(path: &Path, bytes: &[u8]) -> Result<Marker> {
    if bytes.len() > crate::limits::MARKER_BYTES_MAX {
        return Err(LakeError::BadMarker { path: path.to_path_buf(), detail: "too large".into() });
    }
    serde_json::from_slice(bytes)
        .map_err(|error| LakeError::BadMarker { path: path.to_path_buf(), detail: error.to_string() })
}
