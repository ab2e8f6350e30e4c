//! Exact dedup by messageId per source, within a window (default 24 h).
//!
//! The index maps a 64-bit hash of `source/messageId` to where the first copy was written
//! (stream, partition, offset). A hit is a *candidate*: the caller reads that record back and
//! compares its `strom-dedup` header with the new event's before calling it a duplicate. So a
//! hash collision can never drop a real event; it only costs one read (and the colliding id
//! is then not remembered, which is counted).
//!
//! Memory: one entry is 24 bytes in a hash table that is between 44 % and 87.5 % full, plus
//! one control byte, so 29 to 57 bytes per remembered id, never more than 64 (see
//! `BYTES_PER_ID_MAX`). The table is split into time buckets (`BUCKETS_PER_WINDOW` per
//! window) so that expiry drops a whole bucket instead of sweeping entries.
//!
//! Durability: the log is the journal. Every record the collector writes carries its
//! `strom-dedup` header, so the index can be rebuilt by reading records back. To keep restarts
//! fast, closed buckets are written to `<dir>/bucket-<start>.dd` once, and a manifest records
//! from which offsets the log must be read again to rebuild the open bucket. A crash loses
//! nothing: whatever is not in a bucket file is at or after the manifest's offsets.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use xxhash_rust::xxh3::xxh3_64;

/// Time buckets per window: expiry granularity (the window is remembered for between 1 and
/// 1 + 1/24 of itself) and the number of tables a lookup probes.
pub const BUCKETS_PER_WINDOW: u64 = 24;

/// The most bytes one remembered id costs in memory (see the module comment).
pub const BYTES_PER_ID_MAX: usize = 64;

/// The header every record written by the collector carries: `<source>/<messageId>`.
pub const HEADER: &str = "strom-dedup";

/// Capture points kept for choosing a safe rescan position (see `Dedup::open_bucket`).
const CAPTURES_MAX: usize = 64;

const BUCKET_MAGIC: &[u8; 8] = b"STROMDB1";
const MANIFEST_FILE: &str = "manifest.json";

/// Where the first copy of an event was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub stream: u16,
    pub partition: u16,
    pub offset: u64,
}

/// The index's key of a `strom-dedup` header value.
pub fn hash(header_value: &[u8]) -> u64 {
    xxh3_64(header_value)
}

/// The `strom-dedup` header value of an event: source names cannot contain `/`.
pub fn header_value(source: &str, message_id: &str) -> String {
    format!("{source}/{message_id}")
}

/// What the index says about a new event.
#[derive(Debug)]
pub enum Check<'a> {
    /// Not seen: reserved until `commit`, `release` or drop.
    New(Reservation<'a>),
    /// Seen at this place (stream name, location): read it back to confirm.
    Candidate(String, Location),
    /// Another request is writing the same id right now.
    InFlight,
}

/// An id being written. Dropped without `commit` (an error, a refusal, a cancelled request),
/// it is released, so that the client's retry is not taken for a duplicate of nothing.
#[must_use]
pub struct Reservation<'a> {
    dedup: &'a Dedup,
    hash: u64,
    sequence: u64,
    /// False after a verified hash collision: the slot belongs to another id.
    remember: bool,
    settled: bool,
}

impl std::fmt::Debug for Reservation<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation").field("hash", &self.hash).field("sequence", &self.sequence).finish()
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.settled && self.remember {
            let mut inner = self.dedup.lock();
            if inner.pending.get(&self.hash) == Some(&self.sequence) {
                inner.pending.remove(&self.hash);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    #[error("dedup state in {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("dedup state in {path} is damaged: {reason}")]
    Damaged { path: PathBuf, reason: String },
}

/// Offsets of every partition at one moment, and the reservation sequence at that moment.
#[derive(Clone, Debug)]
struct Capture {
    ends: Vec<(String, u32, u64)>,
    sequence: u64,
}

pub struct Dedup {
    dir: PathBuf,
    window_ms: i64,
    bucket_ms: i64,
    ids_max: usize,
    inner: Mutex<Inner>,
    /// Held while files are written: upkeep and close never write the same file at once.
    files: Mutex<()>,
}

/// One time bucket of the index.
#[derive(Default)]
struct Bucket {
    entries: HashMap<u64, Location>,
    /// A file holds this bucket, or a prefix of it.
    filed: bool,
    /// The smallest reservation sequence among entries not yet in the file (0 for entries
    /// read back from the log at recovery), or `None` when the file holds every entry.
    unfiled_sequence_min: Option<u64>,
}

#[derive(Default)]
struct Inner {
    /// Bucket start (ms, aligned to `bucket_ms`) → entries. At most `BUCKETS_PER_WINDOW + 2`.
    buckets: BTreeMap<i64, Bucket>,
    pending: HashMap<u64, u64>,
    next_sequence: u64,
    streams: Vec<String>,
    stream_ids: HashMap<String, u16>,
    len: usize,
    captures: Vec<Capture>,
}

/// The persisted state read at open: where to read the log again.
pub struct Recovery {
    /// Per stream and partition: read the log from here to rebuild what no bucket file holds.
    /// A partition absent from this list is read from `now − window`.
    pub rescan_from: HashMap<(String, u32), u64>,
}

/// Sequence of entries read back from the log at recovery: below every live reservation.
const SCANNED: u64 = 0;

impl Dedup {
    /// Opens the state in `dir`: loads the bucket files still within the window and returns
    /// where the log must be read again. The caller then calls `insert_scanned` for every
    /// record it reads and `recovered` with the positions it read from and to.
    pub fn open(dir: &Path, window_ms: u64, ids_max: usize, now_ms: i64) -> Result<(Dedup, Recovery), DedupError> {
        let io_error = |source| DedupError::Io { path: dir.to_path_buf(), source };
        fs::create_dir_all(dir).map_err(io_error)?;
        let window_ms = window_ms.max(BUCKETS_PER_WINDOW) as i64;
        let bucket_ms = window_ms / BUCKETS_PER_WINDOW as i64;
        let dedup = Dedup {
            dir: dir.to_path_buf(),
            window_ms,
            bucket_ms,
            ids_max,
            inner: Mutex::new(Inner::default()),
            files: Mutex::new(()),
        };
        let mut rescan_from = HashMap::new();
        let Some(manifest) = dedup.read_manifest()? else {
            return Ok((dedup, Recovery { rescan_from }));
        };
        if manifest.bucket_ms != bucket_ms {
            // The window changed: the files are laid out for another one. Rebuild.
            return Ok((dedup, Recovery { rescan_from }));
        }
        {
            let mut inner = dedup.lock();
            for start in &manifest.buckets {
                if *start + bucket_ms + window_ms <= now_ms {
                    continue;
                }
                if let Err(error) = dedup.read_bucket(&dedup.bucket_path(*start), &mut inner) {
                    // A bucket file that cannot be read is rebuilt from the log instead: the
                    // manifest's rescan positions assumed the file, so they are not used.
                    tracing::warn!(%error, "dedup bucket unreadable; rebuilding the index from the log");
                    *inner = Inner::default();
                    drop(inner);
                    return Ok((dedup, Recovery { rescan_from }));
                }
            }
        }
        for (stream, partition, offset) in manifest.rescan_from {
            rescan_from.insert((stream, partition), offset);
        }
        Ok((dedup, Recovery { rescan_from }))
    }

    pub fn window_ms(&self) -> i64 {
        self.window_ms
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers a record read back from the log at recovery.
    pub fn insert_scanned(
        &self,
        header_value: &[u8],
        stream: &str,
        partition: u32,
        offset: u64,
        time_ms: i64,
        now_ms: i64,
    ) {
        if time_ms + self.window_ms <= now_ms {
            return;
        }
        let mut inner = self.lock();
        let location = inner.location(stream, partition, offset);
        let start = self.bucket_start(time_ms.min(now_ms));
        self.insert(&mut inner, start, hash(header_value), location, SCANNED);
    }

    /// Ends recovery: `starts` are the positions the log was read from (every partition),
    /// `ends` where the reading stopped. Nothing is pending yet.
    pub fn recovered(&self, starts: Vec<(String, u32, u64)>, ends: Vec<(String, u32, u64)>) {
        let mut inner = self.lock();
        inner.captures.push(Capture { ends: starts, sequence: SCANNED });
        inner.captures.push(Capture { ends, sequence: SCANNED + 1 });
        inner.next_sequence = SCANNED + 1;
    }

    /// Looks an id up and, when it is new, reserves it.
    pub fn check(&self, header_value: &[u8]) -> Check<'_> {
        let key = hash(header_value);
        let mut inner = self.lock();
        for bucket in inner.buckets.values().rev() {
            if let Some(location) = bucket.entries.get(&key) {
                let stream = inner.streams[usize::from(location.stream)].clone();
                return Check::Candidate(stream, *location);
            }
        }
        if inner.pending.contains_key(&key) {
            return Check::InFlight;
        }
        let sequence = inner.reserve_sequence();
        inner.pending.insert(key, sequence);
        Check::New(Reservation { dedup: self, hash: key, sequence, remember: true, settled: false })
    }

    /// After a candidate turned out to be another id with the same hash: the new event is
    /// written, but its id cannot take the slot, so it is not remembered.
    pub fn reserve_colliding(&self, header_value: &[u8]) -> Reservation<'_> {
        metrics::counter!("strom_ingest_dedup_hash_collisions_total").increment(1);
        let sequence = self.lock().reserve_sequence();
        Reservation { dedup: self, hash: hash(header_value), sequence, remember: false, settled: false }
    }

    /// The event was written at `offset`: remember it.
    pub fn commit(&self, mut reservation: Reservation<'_>, stream: &str, partition: u32, offset: u64, now_ms: i64) {
        reservation.settled = true;
        if !reservation.remember {
            return;
        }
        let mut inner = self.lock();
        if inner.pending.get(&reservation.hash) == Some(&reservation.sequence) {
            inner.pending.remove(&reservation.hash);
        }
        let location = inner.location(stream, partition, offset);
        let start = self.bucket_start(now_ms);
        self.insert(&mut inner, start, reservation.hash, location, reservation.sequence);
    }

    /// The write failed: forget the reservation, so that a retry is not taken for a duplicate.
    /// (Dropping it does the same; this says so at the call site.)
    pub fn release(&self, reservation: Reservation<'_>) {
        drop(reservation);
    }

    fn insert(&self, inner: &mut Inner, start: i64, key: u64, location: Location, sequence: u64) {
        // A commit follows a `check` that found no entry, and the pending reservation kept
        // others out since; only records read back at recovery can repeat an entry.
        if sequence == SCANNED && inner.buckets.values().any(|bucket| bucket.entries.contains_key(&key)) {
            return;
        }
        let bucket = inner.buckets.entry(start).or_default();
        bucket.entries.insert(key, location);
        bucket.unfiled_sequence_min = Some(bucket.unfiled_sequence_min.map_or(sequence, |s| s.min(sequence)));
        inner.len += 1;
        while inner.len > self.ids_max && inner.buckets.len() > 1 {
            // Over the memory bound: the oldest bucket goes before its time. Duplicates of
            // those ids will no longer be caught; that is counted and logged, never hidden.
            let Some((_, oldest)) = inner.buckets.pop_first() else { break };
            inner.len -= oldest.entries.len();
            metrics::counter!("strom_ingest_dedup_evicted_early_total").increment(oldest.entries.len() as u64);
            tracing::warn!(
                ids = oldest.entries.len(),
                ids_max = self.ids_max,
                "dedup index full: the oldest ids are forgotten before their window ends"
            );
        }
    }

    fn bucket_start(&self, time_ms: i64) -> i64 {
        time_ms - time_ms.rem_euclid(self.bucket_ms)
    }

    /// Remembered ids, and the bytes their tables take (capacity × (entry + control byte)).
    pub fn size(&self) -> (usize, usize) {
        let inner = self.lock();
        let entry = std::mem::size_of::<(u64, Location)>() + 1;
        let bytes = inner.buckets.values().map(|bucket| bucket.entries.capacity() * entry).sum();
        (inner.len, bytes)
    }

    /// Periodic upkeep (the server calls it every few seconds with the partitions' end
    /// offsets, read just before the call): drops expired buckets, files closed buckets, and
    /// moves the manifest's rescan position forward.
    pub fn maintain(&self, now_ms: i64, ends: Vec<(String, u32, u64)>) -> Result<(), DedupError> {
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let open_start = self.bucket_start(now_ms);
        let to_file: Vec<(i64, Vec<(u64, Location)>)> = {
            let mut inner = self.lock();
            let expired: Vec<i64> = inner
                .buckets
                .keys()
                .copied()
                .filter(|start| start + self.bucket_ms + self.window_ms <= now_ms)
                .collect();
            for start in &expired {
                if let Some(bucket) = inner.buckets.remove(start) {
                    inner.len -= bucket.entries.len();
                }
            }
            // The sequence is read after the caller read `ends`: every record below them was
            // reserved with a smaller sequence.
            let sequence = inner.next_sequence;
            inner.captures.push(Capture { ends, sequence });
            if inner.captures.len() > CAPTURES_MAX {
                // Keep the oldest (the recovery's start) and drop the second oldest: the
                // choice below only ever needs an old enough one.
                inner.captures.remove(1);
            }
            unfiled(&inner, |start| start < open_start)
        };
        self.file_buckets(&to_file)?;
        let mut inner = self.lock();
        self.write_manifest_locked(&mut inner)
    }

    /// Writes bucket files, then marks their buckets filed (entries added meanwhile stay
    /// unfiled).
    fn file_buckets(&self, to_file: &[(i64, Vec<(u64, Location)>)]) -> Result<(), DedupError> {
        for (start, entries) in to_file {
            self.write_bucket(*start, entries)?;
        }
        let mut inner = self.lock();
        for (start, entries) in to_file {
            if let Some(bucket) = inner.buckets.get_mut(start) {
                bucket.filed = true;
                if bucket.entries.len() == entries.len() {
                    bucket.unfiled_sequence_min = None;
                }
            }
        }
        Ok(())
    }

    /// Writes the manifest: the filed buckets, and the newest capture below which every
    /// record is in a file. A record below a capture was reserved before it (smaller
    /// sequence); if no pending reservation and no unfiled entry has a smaller sequence,
    /// every such record is filed.
    fn write_manifest_locked(&self, inner: &mut Inner) -> Result<(), DedupError> {
        let pending_min = inner.pending.values().copied().min().unwrap_or(u64::MAX);
        let unfiled_min = inner.buckets.values().filter_map(|b| b.unfiled_sequence_min).min().unwrap_or(u64::MAX);
        let barrier = pending_min.min(unfiled_min);
        let Some(safe) = inner.captures.iter().rev().find(|c| c.sequence <= barrier) else {
            return Ok(());
        };
        let manifest = Manifest {
            bucket_ms: self.bucket_ms,
            buckets: inner.buckets.iter().filter(|(_, b)| b.filed).map(|(s, _)| *s).collect(),
            rescan_from: safe.ends.clone(),
        };
        self.write_manifest(&manifest)?;
        self.remove_stale_files(&manifest.buckets);
        Ok(())
    }

    /// At clean shutdown, with nothing pending: files every bucket, the open one included, so
    /// that a restart reads nothing back from the log.
    pub fn close(&self, ends: Vec<(String, u32, u64)>) -> Result<(), DedupError> {
        let _files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let to_file = unfiled(&self.lock(), |_| true);
        self.file_buckets(&to_file)?;
        let mut inner = self.lock();
        let sequence = inner.next_sequence;
        inner.captures.push(Capture { ends, sequence });
        self.write_manifest_locked(&mut inner)
    }

    fn bucket_path(&self, start: i64) -> PathBuf {
        self.dir.join(format!("bucket-{start}.dd"))
    }

    fn write_bucket(&self, start: i64, entries: &[(u64, Location)]) -> Result<(), DedupError> {
        let streams = self.lock().streams.clone();
        let mut out = Vec::with_capacity(64 + entries.len() * 20);
        out.extend_from_slice(BUCKET_MAGIC);
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&(streams.len() as u32).to_le_bytes());
        for name in &streams {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
        }
        out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
        for (key, location) in entries {
            out.extend_from_slice(&key.to_le_bytes());
            out.extend_from_slice(&location.stream.to_le_bytes());
            out.extend_from_slice(&location.partition.to_le_bytes());
            out.extend_from_slice(&location.offset.to_le_bytes());
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        write_atomically(&self.bucket_path(start), &out)
    }

    fn read_bucket(&self, path: &Path, inner: &mut Inner) -> Result<(), DedupError> {
        let damaged = |reason: &str| DedupError::Damaged { path: path.to_path_buf(), reason: reason.to_string() };
        let bytes = fs::read(path).map_err(|source| DedupError::Io { path: path.to_path_buf(), source })?;
        if bytes.len() < 28 || &bytes[..8] != BUCKET_MAGIC {
            return Err(damaged("not a dedup bucket"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().map_err(|_| damaged("short"))?) {
            return Err(damaged("checksum mismatch"));
        }
        let mut reader = Reader { bytes: body, position: 8 };
        let start = reader.i64().ok_or_else(|| damaged("short header"))?;
        let stream_count = reader.u32().ok_or_else(|| damaged("short header"))? as usize;
        if stream_count > usize::from(u16::MAX) {
            return Err(damaged("too many streams"));
        }
        let mut stream_map = Vec::with_capacity(stream_count);
        for _ in 0..stream_count {
            let length = reader.u16().ok_or_else(|| damaged("short stream name"))?;
            let name = reader.take(usize::from(length)).ok_or_else(|| damaged("short stream name"))?;
            let name = std::str::from_utf8(name).map_err(|_| damaged("stream name is not UTF-8"))?;
            stream_map.push(inner.stream_id(name));
        }
        let count = reader.u64().ok_or_else(|| damaged("short entry count"))?;
        if count > (body.len() / 20) as u64 {
            return Err(damaged("entry count beyond the file"));
        }
        let bucket = inner.buckets.entry(start).or_default();
        bucket.filed = true;
        bucket.entries.reserve(count as usize);
        let mut added = 0;
        for _ in 0..count {
            let (Some(key), Some(stream), Some(partition), Some(offset)) =
                (reader.u64(), reader.u16(), reader.u16(), reader.u64())
            else {
                return Err(damaged("short entry"));
            };
            let stream = *stream_map.get(usize::from(stream)).ok_or_else(|| damaged("unknown stream index"))?;
            if bucket.entries.insert(key, Location { stream, partition, offset }).is_none() {
                added += 1;
            }
        }
        inner.len += added;
        Ok(())
    }

    fn read_manifest(&self) -> Result<Option<Manifest>, DedupError> {
        let path = self.dir.join(MANIFEST_FILE);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(manifest) => Ok(Some(manifest)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "dedup manifest unreadable; rebuilding from the log");
                    Ok(None)
                }
            },
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(DedupError::Io { path, source }),
        }
    }

    fn write_manifest(&self, manifest: &Manifest) -> Result<(), DedupError> {
        let bytes = serde_json::to_vec(manifest)
            .map_err(|error| DedupError::Io { path: self.dir.join(MANIFEST_FILE), source: io::Error::other(error) })?;
        write_atomically(&self.dir.join(MANIFEST_FILE), &bytes)
    }

    fn remove_stale_files(&self, keep: &[i64]) {
        let Ok(entries) = fs::read_dir(&self.dir) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(start) = name.to_str().and_then(|n| n.strip_prefix("bucket-")).and_then(|n| n.strip_suffix(".dd"))
            else {
                continue;
            };
            if start.parse::<i64>().is_ok_and(|start| !keep.contains(&start)) {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

/// The entries of the buckets (chosen by start) that hold entries no file has yet.
fn unfiled(inner: &Inner, chosen: impl Fn(i64) -> bool) -> Vec<(i64, Vec<(u64, Location)>)> {
    inner
        .buckets
        .iter()
        .filter(|(start, bucket)| chosen(**start) && bucket.unfiled_sequence_min.is_some())
        .map(|(start, bucket)| (*start, bucket.entries.iter().map(|(k, v)| (*k, *v)).collect()))
        .collect()
}

impl Inner {
    fn reserve_sequence(&mut self) -> u64 {
        // Before `recovered`, live reservations still sort after scanned entries.
        self.next_sequence = self.next_sequence.max(SCANNED + 1);
        let sequence = self.next_sequence;
        self.next_sequence += 1;
        sequence
    }

    fn stream_id(&mut self, name: &str) -> u16 {
        if let Some(id) = self.stream_ids.get(name) {
            return *id;
        }
        let id = self.streams.len() as u16;
        self.streams.push(name.to_string());
        self.stream_ids.insert(name.to_string(), id);
        id
    }

    fn location(&mut self, stream: &str, partition: u32, offset: u64) -> Location {
        Location { stream: self.stream_id(stream), partition: partition as u16, offset }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    bucket_ms: i64,
    buckets: Vec<i64>,
    rescan_from: Vec<(String, u32, u64)>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.position..self.position.checked_add(n)?)?;
        self.position += n;
        Some(slice)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// Writes a file so that it is either wholly there or not at all: temp file, fsync, rename,
/// fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DedupError> {
    let io_error = |source| DedupError::Io { path: path.to_path_buf(), source };
    let temporary = path.with_extension("tmp");
    let mut file = fs::File::create(&temporary).map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_data().map_err(io_error)?;
    drop(file);
    fs::rename(&temporary, path).map_err(io_error)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent).and_then(|dir| dir.sync_all()).map_err(io_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn reserve_commit_candidate_release() {
        let dir = tempfile::tempdir().unwrap();
        let (dedup, _) = Dedup::open(dir.path(), 24 * HOUR_MS as u64, 1000, 0).unwrap();
        let Check::New(reservation) = dedup.check(b"web/m1") else { panic!("new id") };
        assert!(matches!(dedup.check(b"web/m1"), Check::InFlight));
        dedup.commit(reservation, "events", 3, 42, 1000);
        match dedup.check(b"web/m1") {
            Check::Candidate(stream, location) => {
                assert_eq!((stream.as_str(), location.partition, location.offset), ("events", 3, 42));
            }
            other => panic!("expected a candidate, got {other:?}"),
        }
        // Another source's id of the same text is another id.
        let Check::New(other) = dedup.check(b"app/m1") else { panic!("new id") };
        dedup.release(other);
        assert!(matches!(dedup.check(b"app/m1"), Check::New(_)));
    }

    #[test]
    fn expiry_and_persistence_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let window = 24 * HOUR_MS;
        let (dedup, _) = Dedup::open(dir.path(), window as u64, 1000, 0).unwrap();
        dedup.recovered(vec![("events".into(), 0, 0)], vec![("events".into(), 0, 0)]);
        for (i, time) in [(0, 10), (1, 2 * HOUR_MS), (2, 5 * HOUR_MS)] {
            let Check::New(r) = dedup.check(format!("web/m{i}").as_bytes()) else { panic!() };
            dedup.commit(r, "events", 0, i, time);
        }
        // Upkeep at 6 h: the buckets of 0 h, 2 h and 5 h are closed and written.
        dedup.maintain(6 * HOUR_MS, vec![("events".into(), 0, 3)]).unwrap();
        let (ids, bytes) = dedup.size();
        assert_eq!(ids, 3);
        assert!(bytes > 0);
        drop(dedup);
        let (reopened, recovery) = Dedup::open(dir.path(), window as u64, 1000, 6 * HOUR_MS).unwrap();
        assert!(matches!(reopened.check(b"web/m1"), Check::Candidate(_, _)));
        assert_eq!(recovery.rescan_from.get(&("events".to_string(), 0)), Some(&3));
        // A day later the first bucket has expired.
        reopened.maintain(window + HOUR_MS + 1, vec![]).unwrap();
        assert!(matches!(reopened.check(b"web/m0"), Check::New(_)));
        assert!(matches!(reopened.check(b"web/m2"), Check::Candidate(_, _)));
    }

    #[test]
    fn a_pending_reservation_holds_the_rescan_position_back() {
        let dir = tempfile::tempdir().unwrap();
        let (dedup, _) = Dedup::open(dir.path(), 24 * HOUR_MS as u64, 1000, 0).unwrap();
        dedup.recovered(vec![("events".into(), 0, 0)], vec![("events".into(), 0, 0)]);
        let Check::New(early) = dedup.check(b"web/a") else { panic!() };
        let Check::New(slow) = dedup.check(b"web/slow") else { panic!() };
        dedup.commit(early, "events", 0, 0, 10);
        // `slow` was reserved before this capture and is still pending at upkeep: the
        // manifest must not let a rescan skip the offsets it may be written at.
        dedup.maintain(2 * HOUR_MS, vec![("events".into(), 0, 5)]).unwrap();
        let (_, recovery) = Dedup::open(dir.path(), 24 * HOUR_MS as u64, 1000, 2 * HOUR_MS).unwrap();
        assert_eq!(recovery.rescan_from.get(&("events".to_string(), 0)), Some(&0));
        dedup.commit(slow, "events", 0, 5, 2 * HOUR_MS);
    }

    #[test]
    fn over_the_bound_the_oldest_bucket_goes_first() {
        let dir = tempfile::tempdir().unwrap();
        let (dedup, _) = Dedup::open(dir.path(), 24 * HOUR_MS as u64, 2, 0).unwrap();
        for (i, time) in [(0, 0), (1, HOUR_MS), (2, 2 * HOUR_MS)] {
            let Check::New(r) = dedup.check(format!("web/m{i}").as_bytes()) else { panic!() };
            dedup.commit(r, "events", 0, i, time);
        }
        assert_eq!(dedup.size().0, 2);
        assert!(matches!(dedup.check(b"web/m0"), Check::New(_)));
    }

    #[test]
    fn a_damaged_bucket_file_means_a_full_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let (dedup, _) = Dedup::open(dir.path(), 24 * HOUR_MS as u64, 1000, 0).unwrap();
        dedup.recovered(vec![("events".into(), 0, 0)], vec![("events".into(), 0, 0)]);
        let Check::New(r) = dedup.check(b"web/m") else { panic!() };
        dedup.commit(r, "events", 0, 0, 10);
        dedup.close(vec![("events".into(), 0, 1)]).unwrap();
        let file = dir.path().join("bucket-0.dd");
        let mut bytes = fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        fs::write(&file, bytes).unwrap();
        let (reopened, recovery) = Dedup::open(dir.path(), 24 * HOUR_MS as u64, 1000, 20).unwrap();
        assert!(recovery.rescan_from.is_empty());
        assert!(matches!(reopened.check(b"web/m"), Check::New(_)));
    }
}
