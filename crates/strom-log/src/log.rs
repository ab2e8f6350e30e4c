use std::collections::BTreeMap;
use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::error::{IoContext, LogError, Result};
use crate::groups::GroupOffsets;
use crate::index::write_synced;
use crate::limits::{REMOTE_DELETED_GRACE_MS, STREAMS_MAX};
use crate::partition::{Partition, WriterTiming};
use crate::remote::{Remote, RemotePartition, poll_watermarks};
use crate::share::Share;
use crate::stream::{Stream, StreamConfig, validate_stream_name};

const STREAM_FILE: &str = "stream.json";
const TRASH_DIR: &str = "trash";

/// True when any segment under a stream directory holds bytes.
fn holds_records(dir: &std::path::Path) -> Result<bool> {
    for partition in fs::read_dir(dir).at(dir)? {
        let partition = partition.at(dir)?.path();
        if !partition.is_dir() {
            continue;
        }
        for file in fs::read_dir(&partition).at(&partition)? {
            let file = file.at(&partition)?;
            let is_log = file.file_name().to_string_lossy().ends_with(".log");
            if is_log && file.metadata().at(file.path())?.len() > 0 {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// How the log is opened.
#[derive(Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// Buffered appends are fsync'd at the latest this long after they were written.
    pub flush_interval: Duration,
    /// How often retention looks for segments to delete.
    pub retention_check_interval: Duration,
    /// How often a partition records how far its active segment is synced. Recovery after a
    /// crash cuts a damaged tail only beyond that point; damage before it is damage to
    /// acknowledged data and is left in place (the partition then refuses appends).
    pub checkpoint_interval: Duration,
    pub clock: Arc<dyn Clock>,
    /// Keep the streams and group offsets on a remote log (Kafka) instead of in `dir`.
    pub remote: Option<Arc<dyn Remote>>,
}

impl LogConfig {
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            flush_interval: Duration::from_millis(1000),
            retention_check_interval: Duration::from_secs(30),
            checkpoint_interval: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
            remote: None,
        }
    }
}

/// The embedded log: named streams of partitions in a data directory.
///
/// Layout: `<dir>/streams/<stream>/stream.json`, `<dir>/streams/<stream>/<partition>/` with
/// segments and `checkpoint.json`, `<dir>/groups.redb` for committed offsets, and
/// `<dir>/trash/` for streams being deleted.
pub struct Log {
    config: LogConfig,
    streams: RwLock<BTreeMap<String, Arc<Stream>>>,
    /// Serialises creating and deleting streams (not appends or reads).
    admin: tokio::sync::Mutex<()>,
    groups: GroupOffsets,
    closed: AtomicBool,
    /// Streams deleted here lately (remote logs only), not to be taken back from a listing
    /// that still shows them.
    deleted: Mutex<HashMap<String, Instant>>,
}

impl Log {
    /// Opens the log, recovering every partition, and starts the writer and retention tasks
    /// on the current tokio runtime.
    pub fn open(config: LogConfig) -> Result<Arc<Log>> {
        if let Some(remote) = config.remote.clone() {
            return Log::open_remote(config, remote);
        }
        let streams_dir = config.dir.join("streams");
        fs::create_dir_all(&streams_dir).at(&streams_dir)?;
        // Opening the offsets store first also takes its lock: a second process on the same
        // directory stops here, before touching a segment.
        let groups = GroupOffsets::open(&config.dir.join("groups.redb"))?;
        // Deleted streams are moved here first and removed after; a crash in between leaves
        // them here, and they go now.
        let trash = config.dir.join(TRASH_DIR);
        if trash.exists() {
            fs::remove_dir_all(&trash).at(&trash)?;
        }
        let mut streams = BTreeMap::new();
        for entry in fs::read_dir(&streams_dir).at(&streams_dir)? {
            let entry = entry.at(&streams_dir)?;
            let dir = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let stream_file = dir.join(STREAM_FILE);
            if !stream_file.exists() {
                // A creation that a crash interrupted: the stream was never visible, so its
                // segments are empty. Anything else is not ours to delete.
                if holds_records(&dir)? {
                    return Err(LogError::InvalidConfig(format!(
                        "{} has segments with records but no {STREAM_FILE}; restore the file or move the directory away",
                        dir.display()
                    )));
                }
                tracing::warn!(dir = %dir.display(), "removing an unfinished stream creation");
                fs::remove_dir_all(&dir).at(&dir)?;
                continue;
            }
            let bytes = fs::read(&stream_file).at(&stream_file)?;
            let stream_config: StreamConfig = serde_json::from_slice(&bytes)
                .map_err(|error| LogError::InvalidConfig(format!("{}: {error}", stream_file.display())))?;
            let stream = open_stream(&config, &name, dir, stream_config)?;
            streams.insert(name, Arc::new(stream));
        }
        tracing::info!(dir = %config.dir.display(), streams = streams.len(), "log opened");
        let log = Arc::new(Log {
            config,
            streams: RwLock::new(streams),
            admin: tokio::sync::Mutex::new(()),
            groups,
            closed: AtomicBool::new(false),
            deleted: Mutex::new(HashMap::new()),
        });
        tokio::spawn(retention_task(Arc::downgrade(&log)));
        Ok(log)
    }

    /// Opens a log whose streams are on a remote (blocking: asks the remote for its streams
    /// and their watermarks), and starts the watermark poller on the current tokio runtime.
    /// `dir` is still created: it is where the rest of Strom keeps its local state.
    fn open_remote(config: LogConfig, remote: Arc<dyn Remote>) -> Result<Arc<Log>> {
        fs::create_dir_all(&config.dir).at(&config.dir)?;
        let mut streams = BTreeMap::new();
        for (name, partitions) in remote.streams()? {
            let stream = remote_stream(&remote, &name, partitions, true)?;
            streams.insert(name, Arc::new(stream));
        }
        tracing::info!(remote = %remote.describe(), streams = streams.len(), "remote log opened");
        let log = Arc::new(Log {
            config,
            streams: RwLock::new(streams),
            admin: tokio::sync::Mutex::new(()),
            groups: GroupOffsets::remote(remote),
            closed: AtomicBool::new(false),
            deleted: Mutex::new(HashMap::new()),
        });
        tokio::spawn(poll_watermarks(Arc::downgrade(&log)));
        Ok(log)
    }

    /// The remote this log is kept on, if it is.
    pub fn remote(&self) -> Option<&Arc<dyn Remote>> {
        self.config.remote.as_ref()
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes in streams that others created on the remote and forgets the ones they deleted.
    /// Blocking.
    pub(crate) fn refresh_remote_streams(&self) {
        let Some(remote) = self.config.remote.clone() else { return };
        let listed = match remote.streams() {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, "the remote log's streams could not be listed");
                return;
            }
        };
        let recently_deleted: Vec<String> = {
            let mut deleted = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
            deleted.retain(|_, at| at.elapsed() < Duration::from_millis(REMOTE_DELETED_GRACE_MS));
            deleted.keys().cloned().collect()
        };
        let known: Vec<(String, u32)> =
            self.streams().iter().map(|s| (s.name.clone(), s.partitions().len() as u32)).collect();
        for (name, partitions) in &listed {
            let same = known.iter().any(|(known, count)| known == name && count == partitions);
            if same || recently_deleted.contains(name) {
                continue;
            }
            // New, or its partitions were added to (Kafka's CreatePartitions).
            match remote_stream(&remote, name, *partitions, true) {
                Ok(stream) => {
                    tracing::info!(stream = %name, partitions, "stream found on the remote log");
                    self.streams.write().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), Arc::new(stream));
                }
                Err(error) => tracing::warn!(stream = %name, %error, "a remote stream could not be opened"),
            }
        }
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        streams.retain(|name, _| {
            let keep = listed.iter().any(|(listed, _)| listed == name);
            if !keep {
                tracing::info!(stream = %name, "stream gone from the remote log");
            }
            keep
        });
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.config.dir
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.config.clock
    }

    pub fn groups(&self) -> &GroupOffsets {
        &self.groups
    }

    /// This process's share of `group`'s work on `stream`'s partitions. On the embedded log
    /// that is every partition; on a remote log the processes running the same group divide
    /// them (`share.rs`), and the share starts empty until the remote assigns some. `group`
    /// names the workers (`strom-webhooks`), not a group whose offsets are committed.
    pub fn share(&self, group: &str, stream: &str) -> Result<Share> {
        let partitions = self.stream(stream)?.partitions().len() as u32;
        let (mut share, handle) = Share::new(group, stream, partitions);
        match &self.config.remote {
            Some(remote) => share.set_membership(remote.join(group, stream, handle)?),
            None => handle.assign(&(0..partitions).collect::<Vec<_>>()),
        }
        Ok(share)
    }

    pub fn stream(&self, name: &str) -> Result<Arc<Stream>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::StreamNotFound(name.to_string()))
    }

    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.streams.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }

    pub async fn create_stream(&self, name: &str, config: StreamConfig) -> Result<Arc<Stream>> {
        validate_stream_name(name)?;
        config.validate()?;
        let _admin = self.admin.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        {
            let streams = self.streams.read().unwrap_or_else(|e| e.into_inner());
            if streams.contains_key(name) {
                return Err(LogError::StreamExists(name.to_string()));
            }
            if streams.len() >= STREAMS_MAX {
                return Err(LogError::TooManyStreams { max: STREAMS_MAX });
            }
        }
        if let Some(remote) = &self.config.remote {
            match remote.create_stream(name, &config).await {
                Ok(()) => {}
                Err(LogError::StreamExists(_)) => {
                    // Another process created it meanwhile: taken in now, so that `stream`
                    // finds it at once instead of after the next refresh.
                    let (remote, owned) = (remote.clone(), name.to_string());
                    let found = tokio::task::spawn_blocking(move || -> Result<Option<Stream>> {
                        let Some((_, partitions)) = remote.streams()?.into_iter().find(|(n, _)| *n == owned) else {
                            return Ok(None);
                        };
                        remote_stream(&remote, &owned, partitions, true).map(Some)
                    })
                    .await
                    .map_err(|e| LogError::Remote(format!("looking up {name}: {e}")))??;
                    if let Some(stream) = found {
                        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
                        streams.entry(name.to_string()).or_insert_with(|| Arc::new(stream));
                    }
                    return Err(LogError::StreamExists(name.to_string()));
                }
                Err(error) => return Err(error),
            }
            self.deleted.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
            // A new topic's watermarks are 0 and 0: nothing to ask.
            let stream = Arc::new(remote_stream(remote, name, config.partitions, false)?);
            self.streams.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), stream.clone());
            tracing::info!(stream = name, partitions = config.partitions, "stream created on the remote log");
            return Ok(stream);
        }
        let streams_dir = self.config.dir.join("streams");
        let dir = streams_dir.join(name);
        fs::create_dir(&dir).at(&dir)?;
        let stream = open_stream(&self.config, name, dir.clone(), config.clone())?;
        // stream.json is written last: a directory without it is an unfinished creation.
        let bytes = serde_json::to_vec_pretty(&config).expect("plain struct serializes");
        write_synced(&dir.join(STREAM_FILE), &bytes)?;
        fs::File::open(&streams_dir).and_then(|d| d.sync_all()).at(&streams_dir)?;
        let stream = Arc::new(stream);
        self.streams.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), stream.clone());
        tracing::info!(stream = name, partitions = config.partitions, "stream created");
        Ok(stream)
    }

    pub async fn delete_stream(&self, name: &str) -> Result<()> {
        let _admin = self.admin.lock().await;
        let stream = self
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| LogError::StreamNotFound(name.to_string()))?;
        if let Some(remote) = &self.config.remote {
            if let Err(error) = remote.delete_stream(name).await {
                // Still there: keep serving it.
                self.streams.write().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), stream);
                return Err(error);
            }
            self.deleted.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), Instant::now());
            self.groups.remove_stream(name)?;
            tracing::info!(stream = name, "stream deleted on the remote log");
            return Ok(());
        }
        for partition in stream.partitions() {
            partition.close().await;
        }
        // Renamed out of `streams/` first (atomic, and durable with the directory sync), so a
        // crash during the removal cannot leave half a stream that opens again.
        let trash = self.config.dir.join(TRASH_DIR);
        fs::create_dir_all(&trash).at(&trash)?;
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let doomed = trash.join(format!("{name}.{nanos}"));
        fs::rename(&stream.dir, &doomed).at(&stream.dir)?;
        let streams_dir = self.config.dir.join("streams");
        fs::File::open(&streams_dir).and_then(|d| d.sync_all()).at(&streams_dir)?;
        fs::remove_dir_all(&doomed).at(&doomed)?;
        self.groups.remove_stream(name)?;
        tracing::info!(stream = name, "stream deleted");
        Ok(())
    }

    /// Partitions that take no appends, with why.
    pub fn poisoned(&self) -> Vec<(String, u32, String)> {
        self.streams()
            .iter()
            .flat_map(|s| {
                s.partitions().iter().filter_map(|p| p.poisoned().map(|cause| (s.name.clone(), p.id(), cause)))
            })
            .collect()
    }

    /// Applies retention to every partition now; returns the number of segments deleted.
    pub fn enforce_retention(&self) -> usize {
        let now_ms = self.config.clock.now_ms();
        let mut deleted = 0;
        for stream in self.streams() {
            for partition in stream.partitions() {
                match partition.enforce_retention(now_ms) {
                    Ok(count) => deleted += count,
                    Err(error) => {
                        tracing::warn!(stream = %stream.name, partition = partition.id(), %error, "retention failed")
                    }
                }
            }
        }
        deleted
    }

    /// Finishes every queued append, syncs, and writes checkpoints so the next open needs no
    /// recovery scan. Appends after this answer `Closed`.
    pub async fn close(&self) {
        let _admin = self.admin.lock().await;
        self.closed.store(true, Ordering::Release);
        for stream in self.streams() {
            for partition in stream.partitions() {
                partition.close().await;
            }
        }
        if let Some(remote) = self.config.remote.clone() {
            // Waits for the appends still in flight to be acknowledged (bounded by the remote).
            let _ = tokio::task::spawn_blocking(move || remote.close()).await;
        }
        tracing::info!("log closed");
    }
}

fn open_stream(config: &LogConfig, name: &str, dir: PathBuf, stream_config: StreamConfig) -> Result<Stream> {
    let partitions = (0..stream_config.partitions)
        .map(|id| {
            Partition::open(
                name,
                id,
                dir.join(id.to_string()),
                stream_config.clone(),
                config.clock.clone(),
                WriterTiming { flush_interval: config.flush_interval, checkpoint_interval: config.checkpoint_interval },
            )
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Stream { name: name.to_string(), config: stream_config, dir, partitions })
}

/// A stream of a remote log; `ask` fetches each partition's watermarks (blocking), else they
/// start at 0 (a stream just created).
fn remote_stream(remote: &Arc<dyn Remote>, name: &str, partitions: u32, ask: bool) -> Result<Stream> {
    let partitions = (0..partitions)
        .map(|id| {
            let watermarks = if ask { remote.watermarks(name, id)? } else { (0, 0) };
            Ok(Partition::from_remote(RemotePartition::new(remote.clone(), name, id, watermarks)))
        })
        .collect::<Result<Vec<_>>>()?;
    // The remote keeps the topic's settings (retention, segments); only the partition count
    // is known here.
    let config = StreamConfig { partitions: partitions.len() as u32, ..StreamConfig::default() };
    Ok(Stream { name: name.to_string(), config, dir: std::path::PathBuf::new(), partitions })
}

async fn retention_task(log: Weak<Log>) {
    let interval = match log.upgrade() {
        Some(log) => log.config.retention_check_interval,
        None => return,
    };
    loop {
        tokio::time::sleep(interval).await;
        let Some(log) = log.upgrade() else { return };
        if log.closed.load(Ordering::Acquire) {
            return;
        }
        // Deleting files is blocking I/O.
        let _ = tokio::task::spawn_blocking(move || log.enforce_retention()).await;
    }
}
