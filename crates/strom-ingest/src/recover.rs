//! Rebuilding the dedup index at start: load the bucket files, then read back from the log
//! every record written since (the `strom-dedup` header says which id it carried).

use std::path::Path;
use std::time::Instant;

use strom_log::Log;

use crate::dedup::{self, Dedup, DedupError};

/// Records read per call while scanning.
const SCAN_RECORDS_PER_READ: usize = 10_000;
const SCAN_BYTES_PER_READ: usize = 16 * 1024 * 1024;

/// What the rebuild did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub records_scanned: u64,
    pub ids_remembered: usize,
    pub elapsed_ms: u64,
    /// Partitions whose records could not be read (poisoned or damaged): their ids are not
    /// remembered, so duplicates of them would be written again. Logged loudly.
    pub unreadable: Vec<(String, u32, String)>,
}

/// Opens the dedup state in `dir` and rebuilds what its files do not hold from the log.
/// Blocking: run it before serving (the collector is not ready until it returns).
pub fn open_and_rebuild(dir: &Path, log: &Log, window_ms: u64, ids_max: usize) -> Result<(Dedup, Rebuilt), DedupError> {
    let started = Instant::now();
    let now_ms = log.clock().now_ms();
    let (dedup, recovery) = Dedup::open(dir, window_ms, ids_max, now_ms)?;
    let mut rebuilt = Rebuilt::default();
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for stream in log.streams() {
        for partition in stream.partitions() {
            let id = partition.id();
            let log_start = partition.log_start_offset();
            let end = partition.log_end_offset();
            let from = match recovery.rescan_from.get(&(stream.name.to_string(), id)) {
                Some(offset) => (*offset).clamp(log_start, end),
                None => match partition.offset_for_timestamp(now_ms - dedup.window_ms()) {
                    Ok(Some(offset)) => offset.clamp(log_start, end),
                    Ok(None) => end,
                    Err(error) => {
                        rebuilt.unreadable.push((stream.name.to_string(), id, error.to_string()));
                        end
                    }
                },
            };
            starts.push((stream.name.to_string(), id, from));
            let mut position = from;
            while position < end {
                let read = match partition.read_records(position, SCAN_RECORDS_PER_READ, SCAN_BYTES_PER_READ) {
                    Ok(read) => read,
                    Err(error) => {
                        tracing::error!(
                            stream = %stream.name, partition = id, offset = position, %error,
                            "dedup rebuild cannot read this partition; its message ids are not remembered"
                        );
                        rebuilt.unreadable.push((stream.name.to_string(), id, error.to_string()));
                        break;
                    }
                };
                for record in &read.records {
                    rebuilt.records_scanned += 1;
                    if let Some((_, Some(value))) = record.headers.iter().find(|(name, _)| name == dedup::HEADER) {
                        dedup.insert_scanned(value, &stream.name, id, record.offset, record.timestamp_ms, now_ms);
                    }
                }
                if read.next_offset <= position {
                    break;
                }
                position = read.next_offset;
            }
            ends.push((stream.name.to_string(), id, end));
        }
    }
    dedup.recovered(starts, ends);
    rebuilt.ids_remembered = dedup.size().0;
    rebuilt.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok((dedup, rebuilt))
}

/// Every partition's end offset, for the dedup upkeep and close.
pub fn end_offsets(log: &Log) -> Vec<(String, u32, u64)> {
    let mut ends = Vec::new();
    for stream in log.streams() {
        for partition in stream.partitions() {
            ends.push((stream.name.to_string(), partition.id(), partition.log_end_offset()));
        }
    }
    ends
}
