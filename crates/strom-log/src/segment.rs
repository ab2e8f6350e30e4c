//! One segment of a partition: `<base-offset>.log` (20 digits) holding record batches back to
//! back, with its sparse `.index` and `.timeindex` beside it.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};

use crate::batch::{BatchHeader, HEADER_BYTES, crc_matches};
use crate::error::{IoContext, Result};
use crate::index::Indexes;
use crate::limits::{INDEX_INTERVAL_BYTES, READ_CHUNK_BYTES};

pub(crate) fn file_name(base_offset: u64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

/// Base offset of a `.log` file name, or `None` for other files.
pub(crate) fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok()).flatten()
}

const NO_BATCH: u64 = u64::MAX;

pub(crate) struct Segment {
    pub base_offset: u64,
    pub log_path: PathBuf,
    file: File,
    /// Bytes of complete batches written. Readers never read past it.
    size: AtomicU64,
    /// The offset after the last batch.
    next_offset: AtomicU64,
    /// Where the last batch starts (`NO_BATCH` when the segment is empty).
    last_batch_position: AtomicU64,
    /// Loaded on first use for sealed segments (opening a large log stays cheap); always
    /// present for the active one.
    indexes: RwLock<Option<Indexes>>,
    /// When the segment was created, for rolling by age (wall clock, ms).
    pub created_ms: i64,
}

/// Where a scan of a segment stopped.
pub(crate) struct Scan {
    /// End of the last valid batch.
    pub valid_bytes: u64,
    pub next_offset: u64,
    pub last_batch_position: Option<u64>,
    pub indexes: Indexes,
    /// Why the scan stopped before the end of the file, with the position.
    pub damage: Option<(u64, String)>,
}

/// The outcome of reading from one segment.
pub(crate) enum SegmentRead {
    /// Stopped because a limit or the visible end was reached.
    Done,
    /// Reached the end of this segment; continue with the next.
    EndOfSegment,
    /// A damaged batch at this position and offset.
    Corrupt { position: u64, offset: u64, cause: String },
}

impl Segment {
    pub fn create(dir: &Path, base_offset: u64, now_ms: i64) -> Result<Segment> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(&log_path).at(&log_path)?;
        Ok(Segment {
            base_offset,
            log_path,
            file,
            size: AtomicU64::new(0),
            next_offset: AtomicU64::new(base_offset),
            last_batch_position: AtomicU64::new(NO_BATCH),
            indexes: RwLock::new(Some(Indexes::new())),
            created_ms: now_ms,
        })
    }

    /// Opens an existing segment whose content is trusted (a sealed one, or the active one
    /// after a clean shutdown). Indexes are loaded when first needed.
    pub fn open_trusted(
        log_path: PathBuf,
        base_offset: u64,
        next_offset: u64,
        last_batch_position: Option<u64>,
        now_ms: i64,
    ) -> Result<Segment> {
        let file = OpenOptions::new().read(true).write(true).open(&log_path).at(&log_path)?;
        let size = file.metadata().at(&log_path)?.len();
        Ok(Segment {
            base_offset,
            log_path,
            file,
            size: AtomicU64::new(size),
            next_offset: AtomicU64::new(next_offset),
            last_batch_position: AtomicU64::new(last_batch_position.unwrap_or(NO_BATCH)),
            indexes: RwLock::new(None),
            created_ms: now_ms,
        })
    }

    /// Opens a segment by scanning it: every batch's header, offsets and CRC are checked.
    /// When the scan stops at damage, `truncate` decides whether the damage is a torn tail to
    /// cut off (true) or damage to leave in place and report (false).
    pub fn open_scanned(
        log_path: PathBuf,
        base_offset: u64,
        now_ms: i64,
        truncate: impl FnOnce(&Segment, &Scan) -> Result<bool>,
    ) -> Result<(Segment, Scan)> {
        let file = OpenOptions::new().read(true).write(true).open(&log_path).at(&log_path)?;
        let scan = scan(&file, &log_path, base_offset)?;
        let file_size = file.metadata().at(&log_path)?.len();
        let segment = Segment {
            base_offset,
            log_path,
            file,
            size: AtomicU64::new(file_size),
            next_offset: AtomicU64::new(scan.next_offset),
            last_batch_position: AtomicU64::new(scan.last_batch_position.unwrap_or(NO_BATCH)),
            indexes: RwLock::new(Some(scan.indexes.clone())),
            created_ms: now_ms,
        };
        if scan.valid_bytes < file_size && truncate(&segment, &scan)? {
            segment.file.set_len(scan.valid_bytes).at(&segment.log_path)?;
            segment.file.sync_all().at(&segment.log_path)?;
            segment.size.store(scan.valid_bytes, Ordering::Release);
        }
        Ok((segment, scan))
    }

    /// Looks for an intact batch (magic 2, sane header, matching CRC, base offset at or after
    /// `min_offset`) anywhere after byte `from`: after a crash, damage followed by intact
    /// batches is more than a torn tail. Zeros and garbage are skipped cheaply on the magic byte.
    pub fn intact_batch_after(&self, from: u64, min_offset: u64) -> Result<Option<u64>> {
        let file_size = self.file.metadata().at(&self.log_path)?.len();
        let mut position = from + 1;
        while position + HEADER_BYTES as u64 <= file_size {
            let length = (file_size - position).min(READ_CHUNK_BYTES as u64) as usize;
            let chunk = self.read_at(position, length)?;
            let candidates = chunk.len() + 1 - HEADER_BYTES;
            for at in 0..candidates {
                if chunk[at + 16] != 2 {
                    continue;
                }
                let Ok(header) = BatchHeader::parse(&chunk[at..]) else { continue };
                let start = position + at as u64;
                let plausible = header.base_offset >= min_offset && header.base_offset - min_offset < 1 << 31;
                if !plausible || start + header.size_bytes as u64 > file_size {
                    continue;
                }
                let batch = if at + header.size_bytes <= chunk.len() {
                    chunk.slice(at..at + header.size_bytes)
                } else {
                    self.read_at(start, header.size_bytes)?
                };
                if crc_matches(&batch, &header) {
                    return Ok(Some(start));
                }
            }
            position += candidates as u64;
        }
        Ok(None)
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    /// Moves the end past a damaged range recovery left in place, so reads of it reach the
    /// damage and are refused instead of finding a silent end.
    pub fn raise_next_offset(&self, offset: u64) {
        self.next_offset.fetch_max(offset, Ordering::AcqRel);
    }

    pub fn last_batch_position(&self) -> Option<u64> {
        Some(self.last_batch_position.load(Ordering::Acquire)).filter(|&p| p != NO_BATCH)
    }

    /// True when the batch at `last_batch_position` is intact, ends at `size` and ends the
    /// offsets at `next_offset`: what a clean shutdown left, checked cheaply at open.
    pub fn ends_as_expected(path: &Path, last_batch_position: Option<u64>, size: u64, next_offset: u64) -> bool {
        let Some(position) = last_batch_position else { return size == 0 };
        let check = || -> std::io::Result<bool> {
            let file = File::open(path)?;
            let length = size
                .checked_sub(position)
                .filter(|&l| l as usize >= HEADER_BYTES)
                .ok_or(std::io::ErrorKind::InvalidData)?;
            let mut batch = vec![0u8; length as usize];
            file.read_exact_at(&mut batch, position)?;
            Ok(BatchHeader::parse(&batch).is_ok_and(|h| {
                h.size_bytes as u64 == length && h.next_offset() == next_offset && crc_matches(&batch, &h)
            }))
        };
        check().unwrap_or(false)
    }

    pub fn index_paths(&self) -> (PathBuf, PathBuf) {
        (self.log_path.with_extension("index"), self.log_path.with_extension("timeindex"))
    }

    /// Appends already-offset-assigned batches at the end. Only the partition's writer calls
    /// this, so the position cannot race.
    pub fn write(&self, bytes: &[BytesMut], batches: &[BatchHeader]) -> Result<()> {
        let position = self.size();
        let written = write_all_vectored_at(&self.file, bytes, position).at(&self.log_path)?;
        let mut guard = self.indexes.write().unwrap_or_else(|e| e.into_inner());
        let indexes = guard.get_or_insert_with(Indexes::new);
        let mut at = position;
        for header in batches {
            let relative = (header.base_offset - self.base_offset) as u32;
            indexes.observe(
                relative,
                at as u32,
                header.max_timestamp_ms,
                header.size_bytes as u64,
                INDEX_INTERVAL_BYTES,
            );
            at += header.size_bytes as u64;
        }
        drop(guard);
        if let Some(last) = batches.last() {
            self.next_offset.store(last.next_offset(), Ordering::Release);
            self.last_batch_position.store(at - last.size_bytes as u64, Ordering::Release);
        }
        self.size.store(position + written as u64, Ordering::Release);
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().at(&self.log_path)
    }

    /// Writes the index files (when the segment is sealed and at clean shutdown).
    pub fn write_indexes(&self) -> Result<()> {
        let guard = self.indexes.read().unwrap_or_else(|e| e.into_inner());
        let (index, time_index) = self.index_paths();
        match guard.as_ref() {
            Some(indexes) => indexes.write(&index, &time_index),
            None => Ok(()),
        }
    }

    /// Runs `f` on the indexes, loading or rebuilding them first if needed.
    fn with_indexes<T>(&self, f: impl FnOnce(&Indexes) -> T) -> Result<T> {
        {
            let guard = self.indexes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(indexes) = guard.as_ref() {
                return Ok(f(indexes));
            }
        }
        let mut guard = self.indexes.write().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() {
            let (index, time_index) = self.index_paths();
            let loaded = match Indexes::read(&index, &time_index, self.size()) {
                Some(indexes) => indexes,
                None => {
                    tracing::warn!(segment = %self.log_path.display(), "index missing or damaged; rebuilding it from the log");
                    let scan = scan(&self.file, &self.log_path, self.base_offset)?;
                    if let Some((position, cause)) = &scan.damage {
                        tracing::error!(segment = %self.log_path.display(), position, %cause, "sealed segment is damaged; the range will not be served");
                    }
                    // A failure to rewrite the index only costs another rebuild next time.
                    if let Err(error) = scan.indexes.write(&index, &time_index) {
                        tracing::warn!(%error, "could not rewrite the index");
                    }
                    scan.indexes
                }
            };
            *guard = Some(loaded);
        }
        Ok(f(guard.as_ref().expect("loaded above")))
    }

    pub fn max_timestamp_ms(&self) -> Result<i64> {
        self.with_indexes(|indexes| indexes.max_timestamp_ms)
    }

    pub fn position_for(&self, offset: u64) -> Result<u64> {
        let relative = offset.saturating_sub(self.base_offset).min(u64::from(u32::MAX)) as u32;
        self.with_indexes(|indexes| u64::from(indexes.position_for(relative)))
    }

    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<u64> {
        self.with_indexes(|indexes| self.base_offset + u64::from(indexes.offset_for_timestamp(timestamp_ms)))
    }

    /// Reads whole batches holding offsets at or after `from` and below `end`, appending them
    /// to `out` until `bytes_budget` is used (at least one batch overall is returned when
    /// `out` is empty). Every batch's CRC is checked before it is served.
    pub fn read(
        &self,
        from: u64,
        end: u64,
        bytes_budget: &mut usize,
        records_budget: &mut usize,
        out: &mut Vec<Bytes>,
    ) -> Result<SegmentRead> {
        let mut position = self.position_for(from)?;
        let limit = self.size();
        // The base offset is outside the CRC, so continuity is checked too: the first batch
        // may not start after `from`, and each batch starts where the previous one ended.
        let mut expected: Option<u64> = None;
        loop {
            if position >= limit {
                return Ok(SegmentRead::EndOfSegment);
            }
            let want = (*bytes_budget + HEADER_BYTES).clamp(16 * 1024, READ_CHUNK_BYTES);
            let chunk = self.read_at(position, want.min((limit - position) as usize))?;
            let mut at = 0usize;
            while at < chunk.len() {
                let header = match BatchHeader::parse(&chunk[at..]) {
                    Ok(header) => header,
                    Err(_)
                        if chunk.len() - at < HEADER_BYTES
                            && position + (at as u64) + (HEADER_BYTES as u64) <= limit =>
                    {
                        break;
                    }
                    Err(cause) => return Ok(self.corrupt(position + at as u64, from, cause)),
                };
                let batch_position = position + at as u64;
                let continuous = match expected {
                    Some(expected) => header.base_offset == expected,
                    None => header.base_offset <= from.max(self.base_offset) && header.base_offset >= self.base_offset,
                };
                if !continuous {
                    let offset = expected.unwrap_or(from);
                    let cause =
                        format!("a batch with base offset {} where offset {offset} was expected", header.base_offset);
                    return Ok(self.corrupt(batch_position, offset, cause));
                }
                expected = Some(header.next_offset());
                if header.base_offset >= end {
                    return Ok(SegmentRead::Done);
                }
                if batch_position + header.size_bytes as u64 > limit {
                    return Ok(self.corrupt(
                        batch_position,
                        header.base_offset,
                        "batch runs past the end of the segment".into(),
                    ));
                }
                if header.next_offset() <= from {
                    at += header.size_bytes;
                    continue;
                }
                let batch = if at + header.size_bytes <= chunk.len() {
                    chunk.slice(at..at + header.size_bytes)
                } else if at == 0 {
                    // One batch larger than the chunk: read it whole.
                    self.read_at(batch_position, header.size_bytes)?
                } else {
                    break;
                };
                if !crc_matches(&batch, &header) {
                    return Ok(self.corrupt(batch_position, header.base_offset, "CRC-32C mismatch".into()));
                }
                *bytes_budget = bytes_budget.saturating_sub(batch.len());
                *records_budget = records_budget.saturating_sub(header.record_count as usize);
                out.push(batch);
                at += header.size_bytes;
                if *bytes_budget == 0 || *records_budget == 0 {
                    return Ok(SegmentRead::Done);
                }
            }
            position += at as u64;
        }
    }

    fn corrupt(&self, position: u64, offset: u64, cause: String) -> SegmentRead {
        SegmentRead::Corrupt { position, offset, cause }
    }

    fn read_at(&self, position: u64, length: usize) -> Result<Bytes> {
        // Read into uninitialised capacity: zeroing the buffer first was about 2 % of the lake
        // sink's time (which reads every record twice).
        let mut buffer: Vec<u8> = Vec::with_capacity(length);
        while buffer.len() < length {
            let at = position + buffer.len() as u64;
            match rustix::io::pread(&self.file, rustix::buffer::spare_capacity(&mut buffer), at) {
                Ok(0) => return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)).at(&self.log_path),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => {}
                Err(errno) => return Err(std::io::Error::from(errno)).at(&self.log_path),
            }
        }
        buffer.truncate(length);
        Ok(Bytes::from(buffer))
    }

    pub fn remove_files(&self) {
        let (index, time_index) = self.index_paths();
        for path in [&self.log_path, &index, &time_index] {
            if let Err(error) = fs::remove_file(path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %path.display(), %error, "could not delete a segment file");
            }
        }
    }
}

/// Writes every buffer at `position` with as few `pwritev` calls as the kernel allows (a group
/// of batches goes to disk without being copied into one buffer first). Returns the bytes.
fn write_all_vectored_at(file: &File, buffers: &[BytesMut], position: u64) -> std::io::Result<usize> {
    // Linux takes at most IOV_MAX (1024) buffers per call.
    const IOV_MAX: usize = 1024;
    let mut slices: Vec<std::io::IoSlice> = buffers.iter().map(|b| std::io::IoSlice::new(b)).collect();
    let mut remaining: &mut [std::io::IoSlice] = &mut slices;
    let mut written = 0usize;
    while !remaining.is_empty() {
        let count = remaining.len().min(IOV_MAX);
        let n = rustix::io::pwritev(file, &remaining[..count], position + written as u64)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        written += n;
        std::io::IoSlice::advance_slices(&mut remaining, n);
    }
    Ok(written)
}

/// Checks every batch of a segment file from the start: header, offset continuity and CRC.
/// Stops at the first damage and says where.
pub(crate) fn scan(file: &File, path: &Path, base_offset: u64) -> Result<Scan> {
    let file_size = file.metadata().at(path)?.len();
    let mut indexes = Indexes::new();
    let mut position = 0u64;
    let mut expected = base_offset;
    let mut last_batch_position = None;
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    let damage = 'scan: loop {
        if position >= file_size {
            break None;
        }
        let length = (file_size - position).min(chunk.len() as u64) as usize;
        file.read_exact_at(&mut chunk[..length], position).at(path)?;
        let mut at = 0usize;
        while at < length {
            let header = match BatchHeader::parse(&chunk[at..length]) {
                Ok(header) => header,
                Err(_) if length - at < HEADER_BYTES && position + (length as u64) < file_size => break,
                Err(cause) => break 'scan Some((position + at as u64, cause)),
            };
            let batch_position = position + at as u64;
            if header.base_offset != expected {
                break 'scan Some((
                    batch_position,
                    format!("base offset {} where {expected} was expected", header.base_offset),
                ));
            }
            if batch_position + header.size_bytes as u64 > file_size {
                break 'scan Some((batch_position, "batch cut short by the end of the file".into()));
            }
            if at + header.size_bytes > length {
                if at == 0 {
                    // A batch larger than the chunk: grow the chunk and read again.
                    chunk.resize(header.size_bytes, 0);
                    continue 'scan;
                }
                break;
            }
            if !crc_matches(&chunk[at..at + header.size_bytes], &header) {
                break 'scan Some((batch_position, "CRC-32C mismatch".into()));
            }
            let relative = (header.base_offset - base_offset) as u32;
            indexes.observe(
                relative,
                batch_position as u32,
                header.max_timestamp_ms,
                header.size_bytes as u64,
                INDEX_INTERVAL_BYTES,
            );
            expected = header.next_offset();
            last_batch_position = Some(batch_position);
            at += header.size_bytes;
        }
        position += at as u64;
    };
    Ok(Scan {
        valid_bytes: damage.as_ref().map_or(file_size, |(p, _)| *p),
        next_offset: expected,
        last_batch_position,
        indexes,
        damage,
    })
}
