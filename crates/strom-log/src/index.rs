//! The sparse offset and time indexes of one segment, in Kafka's layout:
//! `.index` holds (relative offset u32, position u32) entries, `.timeindex` holds
//! (max timestamp so far i64, relative offset u32) entries, both big-endian. An entry is added
//! every `INDEX_INTERVAL_BYTES` of log. They are derived data: whatever is wrong with them is
//! repaired by scanning the segment.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Indexes {
    /// (offset relative to the segment's base, byte position of a batch starting there).
    pub offsets: Vec<(u32, u32)>,
    /// (largest timestamp of any record up to this batch, relative offset of the batch).
    pub times: Vec<(i64, u32)>,
    /// Bytes written since the last entry, to space the next one.
    pub bytes_since_entry: u64,
    /// Largest record timestamp in the segment (i64::MIN when empty).
    pub max_timestamp_ms: i64,
}

impl Indexes {
    pub fn new() -> Indexes {
        Indexes { max_timestamp_ms: i64::MIN, ..Indexes::default() }
    }

    /// Records a batch at `position`; adds an entry when the interval has passed.
    pub fn observe(&mut self, relative_offset: u32, position: u32, max_timestamp_ms: i64, size: u64, interval: u64) {
        self.max_timestamp_ms = self.max_timestamp_ms.max(max_timestamp_ms);
        if position > 0 && self.bytes_since_entry >= interval {
            self.offsets.push((relative_offset, position));
            self.times.push((self.max_timestamp_ms, relative_offset));
            self.bytes_since_entry = 0;
        }
        self.bytes_since_entry += size;
    }

    /// Position of a batch at or before `relative_offset` (0 when no entry is).
    pub fn position_for(&self, relative_offset: u32) -> u32 {
        let after = self.offsets.partition_point(|&(offset, _)| offset <= relative_offset);
        if after == 0 { 0 } else { self.offsets[after - 1].1 }
    }

    /// A relative offset from which scanning finds the first record at or after
    /// `timestamp_ms`: every record before it is older.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> u32 {
        let after = self.times.partition_point(|&(max, _)| max < timestamp_ms);
        if after == 0 { 0 } else { self.times[after - 1].1 }
    }

    pub fn write(&self, index_path: &Path, time_index_path: &Path) -> Result<()> {
        let mut offsets = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for &(offset, position) in &self.offsets {
            offsets.extend_from_slice(&offset.to_be_bytes());
            offsets.extend_from_slice(&position.to_be_bytes());
        }
        let mut times = Vec::with_capacity((self.times.len() + 1) * TIME_ENTRY_BYTES);
        for &(timestamp, offset) in &self.times {
            times.extend_from_slice(&timestamp.to_be_bytes());
            times.extend_from_slice(&offset.to_be_bytes());
        }
        // A last entry carries the segment's largest timestamp, which retention and
        // timestamp look-ups need without scanning (Kafka does the same when it seals).
        let last_offset = self.offsets.last().map_or(0, |&(offset, _)| offset);
        times.extend_from_slice(&self.max_timestamp_ms.to_be_bytes());
        times.extend_from_slice(&last_offset.to_be_bytes());
        write_synced(index_path, &offsets)?;
        write_synced(time_index_path, &times)
    }

    /// Reads both files; `None` when either is missing or inconsistent (the caller rebuilds).
    pub fn read(index_path: &Path, time_index_path: &Path, segment_size: u64) -> Option<Indexes> {
        let offsets_bytes = fs::read(index_path).ok()?;
        let times_bytes = fs::read(time_index_path).ok()?;
        if offsets_bytes.len() % OFFSET_ENTRY_BYTES != 0
            || times_bytes.len() % TIME_ENTRY_BYTES != 0
            || times_bytes.is_empty()
        {
            return None;
        }
        let offsets: Vec<(u32, u32)> = offsets_bytes
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|e| (u32::from_be_bytes([e[0], e[1], e[2], e[3]]), u32::from_be_bytes([e[4], e[5], e[6], e[7]])))
            .collect();
        let mut times: Vec<(i64, u32)> = times_bytes
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|e| {
                let mut timestamp = [0u8; 8];
                timestamp.copy_from_slice(&e[..8]);
                (i64::from_be_bytes(timestamp), u32::from_be_bytes([e[8], e[9], e[10], e[11]]))
            })
            .collect();
        let (max_timestamp_ms, _) = times.pop()?;
        let increasing = offsets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1)
            && times.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1);
        let in_bounds = offsets.last().is_none_or(|&(_, position)| u64::from(position) < segment_size);
        (increasing && in_bounds).then_some(Indexes { offsets, times, bytes_since_entry: 0, max_timestamp_ms })
    }
}

/// Writes a small file whole and fsyncs it and its directory, through a temporary name so a
/// crash leaves either the old or the new content, and the new name is durable on return.
pub(crate) fn write_synced(path: &Path, content: &[u8]) -> Result<()> {
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary).at(&temporary)?;
    file.write_all(content).at(&temporary)?;
    file.sync_data().at(&temporary)?;
    fs::rename(&temporary, path).at(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_find_the_entry_at_or_before() {
        let mut indexes = Indexes::new();
        // Batches of 10 records and 3000 bytes each, interval 4096: an entry every 2 batches.
        for batch in 0..10u32 {
            indexes.observe(batch * 10, batch * 3000, i64::from(batch) * 100, 3000, 4096);
        }
        assert_eq!(indexes.offsets, [(20, 6000), (40, 12000), (60, 18000), (80, 24000)]);
        assert_eq!(indexes.position_for(0), 0);
        assert_eq!(indexes.position_for(19), 0);
        assert_eq!(indexes.position_for(20), 6000);
        assert_eq!(indexes.position_for(99), 24000);
        assert_eq!(indexes.offset_for_timestamp(0), 0);
        assert_eq!(indexes.offset_for_timestamp(450), 40, "batch 4 has max 400 < 450");
        assert_eq!(indexes.max_timestamp_ms, 900);
    }

    #[test]
    fn files_round_trip_and_damage_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (index, time_index) = (dir.path().join("0.index"), dir.path().join("0.timeindex"));
        let mut indexes = Indexes::new();
        for batch in 0..10u32 {
            indexes.observe(batch, batch * 5000, 7, 5000, 4096);
        }
        indexes.write(&index, &time_index).unwrap();
        let read = Indexes::read(&index, &time_index, 50_000).unwrap();
        assert_eq!(read.offsets, indexes.offsets);
        assert_eq!(read.times, indexes.times);
        assert_eq!(read.max_timestamp_ms, 7);
        assert!(Indexes::read(&index, &time_index, 100).is_none(), "positions past the segment");
        std::fs::write(&index, [1, 2, 3]).unwrap();
        assert!(Indexes::read(&index, &time_index, 50_000).is_none(), "a torn entry");
    }
}
