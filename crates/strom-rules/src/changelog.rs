//! A rule's state in a stream of the log (its changelog), for rules divided among processes
//! on a shared (Kafka) log: whoever runs a task of the rule next restores the state from
//! there, not from the redb file of the process that ran it before.
//!
//! The changelog of rule `r` is the stream `strom.rules.r.changelog`, one partition per task
//! of the rule, kept forever (restores start at the newest snapshot, below). A commit of a
//! task appends to the task's partition, in order and durably:
//! - one record per key whose state changed: the key, and the state (JSON) or no value for a
//!   key that has none any more;
//! - then its marker: no key, a `Marker` (JSON) with the input offsets, the output ends, the
//!   engine-wide state and the fingerprint of the rule's source.
//!
//! Every record of one commit carries the header `strom-commit` = `<writer>/<sequence>`, the
//! writer being one run of the task in one process. A restore applies a commit only once it
//! reads its marker, with exactly the records the marker counts under the same id: records of
//! a commit cut short by a crash (no marker) are dropped, so a commit is all or nothing.
//!
//! Snapshots bound restores: when the records written since the last snapshot outnumber both
//! `SNAPSHOT_RECORDS_MIN` and twice the keys held, a commit writes every key instead of the
//! changed ones, and its marker says so (`snapshot`: the restore forgets what it had). Every
//! marker names where the newest snapshot's records start (`base`), and a restore finds the
//! newest marker by reading backwards from the end in growing windows, then reads forward
//! from that base: at most about `SNAPSHOT_RECORDS_MIN` plus three times the keys records.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use strom_log::{Durability, EncodedBatch, Log, LogError, Partition, RecordIn, RecordOut, Stream, StreamConfig};

use crate::error::RulesError;
use crate::store::{Loaded, Offsets};

/// The header naming the commit a changelog record belongs to.
pub const COMMIT_HEADER: &str = "strom-commit";
/// Records written since the last snapshot before a commit may write a new one.
pub const SNAPSHOT_RECORDS_MIN: u64 = 10_000;
/// Records per append of a commit.
const APPEND_RECORDS_MAX: usize = 10_000;
/// Records read per call while restoring.
const READ_RECORDS_MAX: usize = 4096;
const READ_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The first window read backwards from the end to find the newest marker.
const MARKER_WINDOW_MIN: u64 = 256;

/// The changelog stream of a rule.
pub fn stream_name(rule: &str) -> String {
    format!("strom.rules.{rule}.changelog")
}

/// The end of one commit.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Marker {
    fingerprint: String,
    /// (stream, partition, next offset to read).
    offsets: Vec<(String, u32, u64)>,
    /// (stream, partition, end offset at the commit).
    outputs: Vec<(String, u32, u64)>,
    /// The engine-wide state, as the engine wrote it.
    meta: serde_json::Value,
    /// Records of this commit before the marker.
    records: u64,
    /// This commit wrote every key: what came before it is forgotten.
    snapshot: bool,
    /// Where the newest snapshot's records start (a restore reads from here).
    base: u64,
}

/// Opens (or creates, with `partitions` partitions) a rule's changelog. A changelog with
/// another number of partitions than the rule has tasks is refused: its tasks were cut
/// differently.
pub async fn open(log: &Log, rule: &str, partitions: u32) -> Result<Arc<Stream>, RulesError> {
    let name = stream_name(rule);
    let config = StreamConfig { partitions, retention_ms: None, ..StreamConfig::default() };
    let stream = crate::runtime::stream_or_create(log, &name, config).await?;
    let have = stream.partitions().len() as u32;
    if have != partitions {
        return Err(RulesError::Store(format!(
            "the changelog {name} has {have} partitions but rule {rule:?} has {partitions} tasks now \
             (its input streams' partitions changed); delete the changelog to start the rule afresh"
        )));
    }
    Ok(stream)
}

/// What a restore found: the state, and where the writer goes on from.
pub struct Restored {
    pub(crate) loaded: Loaded,
    /// Where the newest snapshot starts, and the records written since it.
    base: u64,
    since_snapshot: u64,
    /// Commits dropped because their marker never came (a crash mid-commit).
    pub dropped_commits: u64,
}

impl Restored {
    /// Keys with state.
    pub fn keys(&self) -> usize {
        self.loaded.keys.len()
    }
}

fn commit_id(record: &RecordOut) -> Option<&Bytes> {
    record.headers.iter().find(|(k, _)| k == COMMIT_HEADER).and_then(|(_, v)| v.as_ref())
}

/// A marker is the one record of a commit without a key.
fn marker(record: &RecordOut) -> Option<Result<Marker, serde_json::Error>> {
    if record.key.is_some() {
        return None;
    }
    Some(serde_json::from_slice(record.value.as_deref().unwrap_or_default()))
}

fn read(partition: &Partition, from: u64, mut each: impl FnMut(&RecordOut)) -> Result<(), RulesError> {
    let end = partition.log_end_offset();
    let mut next = from.max(partition.log_start_offset());
    while next < end {
        let read = partition.read_records(next, READ_RECORDS_MAX, READ_BYTES_MAX)?;
        if read.records.is_empty() {
            break;
        }
        for record in &read.records {
            if record.offset < end {
                each(record);
            }
        }
        next = read.next_offset;
    }
    Ok(())
}

/// Restores a task's state from its partition of the changelog. Blocking.
pub fn restore(changelog: &Stream, task: u32) -> Result<Restored, RulesError> {
    let partition = changelog.partition(task)?;
    // The end as the cluster knows it now, not this process's cached watermark: the commit
    // that the task's previous owner made before letting go must be in what is read.
    let end = partition.refresh_log_end_offset()?;
    let start = partition.log_start_offset();
    // The newest marker: its base is where the restore reads from.
    let mut window = MARKER_WINDOW_MIN;
    let mut base = None;
    loop {
        let from = end.saturating_sub(window).max(start);
        read(partition, from, |record| {
            if commit_id(record).is_some()
                && let Some(Ok(marker)) = marker(record)
            {
                base = Some(marker.base);
            }
        })?;
        if base.is_some() || from == start {
            break;
        }
        window = window.saturating_mul(4);
    }
    let mut restored = Restored { loaded: Loaded::default(), base: end, since_snapshot: 0, dropped_commits: 0 };
    let Some(base) = base else { return Ok(restored) };
    let mut keys: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut pending: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut pending_id: Option<Bytes> = None;
    let mut last: Option<Marker> = None;
    let mut failure = None;
    read(partition, base, |record| {
        if failure.is_some() {
            return;
        }
        let Some(id) = commit_id(record) else {
            tracing::warn!(stream = %changelog.name, offset = record.offset, "a changelog record without a commit id; skipped");
            return;
        };
        if pending_id.as_ref() != Some(id) {
            if !pending.is_empty() {
                restored.dropped_commits += 1;
            }
            pending.clear();
            pending_id = Some(id.clone());
        }
        match marker(record) {
            None => {
                let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default()).into_owned();
                pending.push((key, record.value.as_ref().map(|v| v.to_vec())));
            }
            Some(Err(error)) => failure = Some(format!("{} at offset {}: {error}", changelog.name, record.offset)),
            Some(Ok(marker)) => {
                if marker.records != pending.len() as u64 {
                    // Not the records it counts (a writer that lost its task interleaved):
                    // the commit is not applied.
                    restored.dropped_commits += 1;
                } else {
                    if marker.snapshot {
                        keys.clear();
                        restored.since_snapshot = 0;
                    }
                    for (key, value) in pending.drain(..) {
                        match value {
                            Some(value) => keys.insert(key, value),
                            None => keys.remove(&key),
                        };
                    }
                    restored.since_snapshot += marker.records + 1;
                    restored.base = marker.base;
                    last = Some(marker);
                }
                pending.clear();
                pending_id = None;
            }
        }
    })?;
    if let Some(failure) = failure {
        return Err(RulesError::Store(format!("the changelog is damaged: {failure}")));
    }
    if !pending.is_empty() {
        restored.dropped_commits += 1;
    }
    if let Some(marker) = last {
        let offsets =
            |list: Vec<(String, u32, u64)>| -> Offsets { list.into_iter().map(|(s, p, o)| ((s, p), o)).collect() };
        restored.loaded = Loaded {
            fingerprint: Some(marker.fingerprint),
            offsets: offsets(marker.offsets),
            outputs: offsets(marker.outputs),
            meta: Some(serde_json::to_vec(&marker.meta).unwrap_or_default()),
            keys: keys.into_iter().collect(),
        };
    } else {
        restored.base = end;
    }
    Ok(restored)
}

/// The writer of one task's commits, for one run of the task.
pub struct Writer {
    changelog: Arc<Stream>,
    task: u32,
    id: String,
    sequence: u64,
    base: u64,
    since_snapshot: u64,
    /// The next commit writes every key (the state started afresh).
    snapshot_next: bool,
}

/// A key and its new state (none: the key has no state any more).
pub type KeyChange = (Arc<str>, Option<Vec<u8>>);

/// One commit, as the runtime makes it.
pub struct ChangelogCommit<'a> {
    pub fingerprint: &'a str,
    pub offsets: &'a Offsets,
    pub outputs: &'a Offsets,
    pub meta: &'a [u8],
    /// The changed keys; with `all`, every key (a snapshot) instead.
    pub changes: &'a [KeyChange],
    pub all: Option<&'a [KeyChange]>,
}

impl Writer {
    pub fn new(changelog: Arc<Stream>, task: u32, restored: &Restored) -> Writer {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seed = format!("{}/{}/{}/{}", std::process::id(), now.as_nanos(), changelog.name, task);
        Writer {
            id: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes())),
            changelog,
            task,
            sequence: 0,
            base: restored.base,
            since_snapshot: restored.since_snapshot,
            snapshot_next: restored.loaded.fingerprint.is_none(),
        }
    }

    /// Asks for the next commit to be a snapshot (the state starts afresh).
    pub fn snapshot_next(&mut self) {
        self.snapshot_next = true;
    }

    /// Whether the next commit should write every key: asked for, or the records since the
    /// last snapshot outnumber `SNAPSHOT_RECORDS_MIN` and twice the keys held.
    pub fn wants_snapshot(&self, keys: usize) -> bool {
        self.snapshot_next || self.since_snapshot >= SNAPSHOT_RECORDS_MIN.max(2 * keys as u64)
    }

    /// Appends one commit and waits until it is durable.
    pub async fn commit(&mut self, commit: &ChangelogCommit<'_>) -> Result<(), RulesError> {
        let partition = self.changelog.partition(self.task)?;
        let records = commit.all.unwrap_or(commit.changes);
        let snapshot = commit.all.is_some();
        self.sequence += 1;
        let id = Bytes::from(format!("{}/{}", self.id, self.sequence));
        let header = || vec![(COMMIT_HEADER.to_string(), id.clone())];
        let base = if snapshot { partition.log_end_offset() } else { self.base };
        let meta: serde_json::Value =
            serde_json::from_slice(commit.meta).map_err(|e| RulesError::Store(format!("the engine state: {e}")))?;
        let list = |offsets: &Offsets| offsets.iter().map(|((s, p), o)| (s.clone(), *p, *o)).collect();
        let marker = Marker {
            fingerprint: commit.fingerprint.to_string(),
            offsets: list(commit.offsets),
            outputs: list(commit.outputs),
            meta,
            records: records.len() as u64,
            snapshot,
            base,
        };
        let marker = serde_json::to_vec(&marker).map_err(|e| RulesError::Store(e.to_string()))?;
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let mut all: Vec<RecordIn> = records
            .iter()
            .map(|(key, value)| RecordIn {
                key: Some(Bytes::copy_from_slice(key.as_bytes())),
                value: value.as_ref().map(|v| Bytes::copy_from_slice(v)),
                timestamp_ms: now,
                headers: header(),
            })
            .collect();
        all.push(RecordIn { key: None, value: Some(Bytes::from(marker)), timestamp_ms: now, headers: header() });
        let mut pending = Vec::new();
        for chunk in all.chunks(APPEND_RECORDS_MAX) {
            let batch = EncodedBatch::encode(chunk)?;
            loop {
                match partition.submit(batch.clone(), Durability::Sync) {
                    Ok(append) => break pending.push(append),
                    Err(LogError::Overloaded { .. }) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                    Err(error) => return Err(error.into()),
                }
            }
        }
        for append in pending {
            append.await?;
        }
        if snapshot {
            self.base = base;
            self.since_snapshot = 0;
            self.snapshot_next = false;
        }
        self.since_snapshot += all.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str, v: Option<&str>) -> (Arc<str>, Option<Vec<u8>>) {
        (Arc::from(k), v.map(|v| v.as_bytes().to_vec()))
    }

    async fn commit(writer: &mut Writer, at: u64, changes: &[(Arc<str>, Option<Vec<u8>>)], all: bool) {
        let offsets: Offsets = [(("in".to_string(), 0), at)].into_iter().collect();
        let commit = ChangelogCommit {
            fingerprint: "f1",
            offsets: &offsets,
            outputs: &Offsets::new(),
            meta: br#"{"watermark_ms":1}"#,
            changes,
            all: all.then_some(changes),
        };
        writer.commit(&commit).await.unwrap();
    }

    fn state(restored: &Restored) -> Vec<(String, String)> {
        restored.loaded.keys.iter().map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned())).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commits_restore_whole_and_a_cut_commit_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(strom_log::LogConfig::new(dir.path())).unwrap();
        let changelog = open(&log, "r", 2).await.unwrap();
        assert!(open(&log, "r", 3).await.is_err(), "another number of tasks is refused");
        let restored = tokio::task::block_in_place(|| restore(&changelog, 1)).unwrap();
        assert!(restored.loaded.fingerprint.is_none());
        let mut writer = Writer::new(changelog.clone(), 1, &restored);
        assert!(writer.wants_snapshot(0), "a fresh state starts with a snapshot");
        commit(&mut writer, 5, &[key("a", Some("1")), key("b", Some("2"))], true).await;
        commit(&mut writer, 9, &[key("a", None), key("c", Some("3"))], false).await;

        // A commit cut short: its records, no marker.
        let partition = changelog.partition(1).unwrap();
        let cut = RecordIn {
            key: Some(Bytes::from_static(b"b")),
            value: Some(Bytes::from_static(b"99")),
            timestamp_ms: 0,
            headers: vec![(COMMIT_HEADER.to_string(), Bytes::from_static(b"dead/1"))],
        };
        partition.submit(EncodedBatch::encode(&[cut]).unwrap(), Durability::Sync).unwrap().await.unwrap();

        let restored = tokio::task::block_in_place(|| restore(&changelog, 1)).unwrap();
        assert_eq!(state(&restored), [("b".into(), "2".into()), ("c".into(), "3".into())]);
        assert_eq!(restored.loaded.offsets[&("in".to_string(), 0)], 9);
        assert_eq!(restored.loaded.meta.as_deref(), Some(&br#"{"watermark_ms":1}"#[..]));
        assert_eq!(restored.dropped_commits, 1);

        // The next writer goes on after the cut records; a snapshot starts a new base.
        let mut writer = Writer::new(changelog.clone(), 1, &restored);
        assert!(!writer.wants_snapshot(2));
        commit(&mut writer, 12, &[key("d", Some("4"))], false).await;
        let restored = tokio::task::block_in_place(|| restore(&changelog, 1)).unwrap();
        assert_eq!(state(&restored).len(), 3);
        let mut writer = Writer::new(changelog.clone(), 1, &restored);
        writer.snapshot_next();
        commit(&mut writer, 20, &[key("z", Some("26"))], true).await;
        let restored = tokio::task::block_in_place(|| restore(&changelog, 1)).unwrap();
        assert_eq!(state(&restored), [("z".into(), "26".into())], "a snapshot replaces everything");
        assert_eq!(restored.loaded.offsets[&("in".to_string(), 0)], 20);
        // The other task's partition is untouched.
        let other = tokio::task::block_in_place(|| restore(&changelog, 0)).unwrap();
        assert!(other.loaded.keys.is_empty() && other.loaded.fingerprint.is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_restore_reads_from_the_newest_snapshot_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(strom_log::LogConfig::new(dir.path())).unwrap();
        let changelog = open(&log, "r", 1).await.unwrap();
        let mut writer =
            Writer::new(changelog.clone(), 0, &tokio::task::block_in_place(|| restore(&changelog, 0)).unwrap());
        // Many small commits: snapshots come once the records since the last one pass the bound.
        let mut snapshots = 0;
        for i in 0..(SNAPSHOT_RECORDS_MIN / 50 + 100) {
            let changes: Vec<_> = (0..50).map(|k| key(&format!("k{k}"), Some(&i.to_string()))).collect();
            let all = writer.wants_snapshot(50);
            snapshots += u64::from(all);
            commit(&mut writer, i, &changes, all).await;
        }
        assert!(snapshots >= 2, "{snapshots} snapshots");
        let restored = tokio::task::block_in_place(|| restore(&changelog, 0)).unwrap();
        let end = changelog.partition(0).unwrap().log_end_offset();
        assert!(end - restored.base <= SNAPSHOT_RECORDS_MIN + 51, "read from {} of {end}", restored.base);
        assert_eq!(restored.loaded.keys.len(), 50);
        let last = (SNAPSHOT_RECORDS_MIN / 50 + 99).to_string();
        assert!(state(&restored).iter().all(|(_, v)| *v == last));
    }
}
