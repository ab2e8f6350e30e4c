//! Committed consumer-group offsets, in an embedded transactional store (redb): one write
//! transaction per commit, fsync'd before the commit is answered. A copy lives in memory for
//! reads and for the lag metric.
//!
//! On a remote log the offsets are the remote's (Kafka: the group's committed offsets, so
//! Kafka's tools show them). The memory copy is then filled per group and stream on first
//! use and kept current by this process's commits: one process commits for a group.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{LogError, Result};
use crate::remote::Remote;

/// (group, stream, partition) → the next offset the group will read.
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("offsets");

type Key = (String, String, u32);

pub struct GroupOffsets {
    store: Store,
    commit: Mutex<()>,
    cache: Mutex<BTreeMap<Key, u64>>,
}

enum Store {
    Local(Database),
    /// The remote's group offsets, and the (group, stream) pairs already fetched into the cache.
    Remote {
        remote: Arc<dyn Remote>,
        fetched: Mutex<BTreeSet<(String, String)>>,
    },
}

/// Whether a commit may move an offset backwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitMode {
    /// Refuses an offset below the committed one.
    Forward,
    /// Sets the offset whatever it was (an explicit reset).
    Reset,
}

fn store_error(error: impl std::fmt::Display) -> LogError {
    LogError::GroupStore(error.to_string())
}

impl GroupOffsets {
    pub(crate) fn open(path: &Path) -> Result<GroupOffsets> {
        let db = Database::create(path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => LogError::GroupStore(format!(
                "{} is in use: is another Strom running on this data directory?",
                path.display()
            )),
            other => store_error(other),
        })?;
        let mut cache = BTreeMap::new();
        {
            let write = db.begin_write().map_err(store_error)?;
            write.open_table(OFFSETS).map_err(store_error)?;
            write.commit().map_err(store_error)?;
            let read = db.begin_read().map_err(store_error)?;
            let table = read.open_table(OFFSETS).map_err(store_error)?;
            for entry in table.iter().map_err(store_error)? {
                let (key, value) = entry.map_err(store_error)?;
                let (group, stream, partition) = key.value();
                cache.insert((group.to_string(), stream.to_string(), partition), value.value());
            }
        }
        Ok(GroupOffsets { store: Store::Local(db), commit: Mutex::new(()), cache: Mutex::new(cache) })
    }

    pub(crate) fn remote(remote: Arc<dyn Remote>) -> GroupOffsets {
        GroupOffsets {
            store: Store::Remote { remote, fetched: Mutex::new(BTreeSet::new()) },
            commit: Mutex::new(()),
            cache: Mutex::new(BTreeMap::new()),
        }
    }

    /// Fills the cache with a remote group's offsets of a stream, once. Blocking.
    fn fetch(&self, group: &str, stream: &str) -> Result<()> {
        let Store::Remote { remote, fetched } = &self.store else { return Ok(()) };
        let pair = (group.to_string(), stream.to_string());
        if fetched.lock().unwrap_or_else(|e| e.into_inner()).contains(&pair) {
            return Ok(());
        }
        let offsets = crate::remote::blocking(|| remote.committed(group, stream))?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for (partition, offset) in offsets {
            // A commit of this process since is newer than what was fetched.
            cache.entry((group.to_string(), stream.to_string(), partition)).or_insert(offset);
        }
        fetched.lock().unwrap_or_else(|e| e.into_inner()).insert(pair);
        Ok(())
    }

    /// Commits offsets of one group and stream atomically.
    pub fn commit(&self, group: &str, stream: &str, offsets: &[(u32, u64)], mode: CommitMode) -> Result<()> {
        // Blocking (an fsync): async callers run it on the blocking pool. Commits are
        // serialised so the check and the write are one step; readers of the cache never wait
        // for a commit's fsync.
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        self.fetch(group, stream)?;
        if mode == CommitMode::Forward {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for &(partition, offset) in offsets {
                let key = (group.to_string(), stream.to_string(), partition);
                if let Some(&committed) = cache.get(&key)
                    && offset < committed
                {
                    return Err(LogError::OffsetRegression {
                        group: group.into(),
                        stream: stream.into(),
                        partition,
                        offset,
                        committed,
                    });
                }
            }
        }
        match &self.store {
            Store::Local(db) => {
                let write = db.begin_write().map_err(store_error)?;
                {
                    let mut table = write.open_table(OFFSETS).map_err(store_error)?;
                    for &(partition, offset) in offsets {
                        table.insert((group, stream, partition), offset).map_err(store_error)?;
                    }
                }
                write.commit().map_err(store_error)?;
            }
            Store::Remote { remote, .. } => crate::remote::blocking(|| remote.commit(group, stream, offsets))?,
        }
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for &(partition, offset) in offsets {
            cache.insert((group.to_string(), stream.to_string(), partition), offset);
        }
        Ok(())
    }

    /// The next offset `group` reads of the partition. A remote log is asked once per group
    /// and stream (blocking); a failure to ask answers `None` and is asked again next time.
    pub fn committed(&self, group: &str, stream: &str, partition: u32) -> Option<u64> {
        if let Err(error) = self.fetch(group, stream) {
            tracing::warn!(group, stream, %error, "committed offsets could not be fetched from the remote log");
            return None;
        }
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&(group.to_string(), stream.to_string(), partition)).copied()
    }

    /// The next offset `group` reads of the partition as the store has it now, not as this
    /// process last saw it: on a remote log another process may have committed since (a
    /// shared partition handed over to this one). Blocking on a remote log.
    pub fn committed_now(&self, group: &str, stream: &str, partition: u32) -> Result<Option<u64>> {
        if let Store::Remote { remote, fetched } = &self.store {
            let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
            let offsets = crate::remote::blocking(|| remote.committed(group, stream))?;
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            cache.retain(|(g, s, _), _| g != group || s != stream);
            for (partition, offset) in offsets {
                cache.insert((group.to_string(), stream.to_string(), partition), offset);
            }
            fetched.lock().unwrap_or_else(|e| e.into_inner()).insert((group.to_string(), stream.to_string()));
        }
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cache.get(&(group.to_string(), stream.to_string(), partition)).copied())
    }

    /// Every committed offset: (group, stream, partition, offset), sorted. On a remote log:
    /// those of the groups and streams this process used.
    pub fn all(&self) -> Vec<(String, String, u32, u64)> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.iter().map(|((g, s, p), o)| (g.clone(), s.clone(), *p, *o)).collect()
    }

    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = self.all().into_iter().map(|(g, ..)| g).collect();
        groups.dedup();
        groups
    }

    /// Forgets a deleted stream's offsets in every group.
    pub(crate) fn remove_stream(&self, stream: &str) -> Result<()> {
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
        match &self.store {
            Store::Local(db) => {
                let write = db.begin_write().map_err(store_error)?;
                {
                    let mut table = write.open_table(OFFSETS).map_err(store_error)?;
                    table.retain(|(_, s, _), _| s != stream).map_err(store_error)?;
                }
                write.commit().map_err(store_error)?;
            }
            // The remote forgets a deleted topic's offsets itself (Kafka does).
            Store::Remote { fetched, .. } => {
                fetched.lock().unwrap_or_else(|e| e.into_inner()).retain(|(_, s)| s != stream);
            }
        }
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).retain(|(_, s, _), _| s != stream);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_survive_reopen_and_never_move_backwards_unless_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("groups.redb");
        {
            let groups = GroupOffsets::open(&path).unwrap();
            groups.commit("g", "s", &[(0, 10), (1, 5)], CommitMode::Forward).unwrap();
            let error = groups.commit("g", "s", &[(0, 9)], CommitMode::Forward).unwrap_err();
            assert!(matches!(error, LogError::OffsetRegression { committed: 10, offset: 9, .. }), "{error}");
            assert_eq!(groups.committed("g", "s", 0), Some(10), "a refused commit changes nothing");
            groups.commit("g", "s", &[(1, 2)], CommitMode::Reset).unwrap();
            groups.commit("h", "t", &[(0, 1)], CommitMode::Forward).unwrap();
        }
        let groups = GroupOffsets::open(&path).unwrap();
        assert_eq!(groups.committed("g", "s", 0), Some(10));
        assert_eq!(groups.committed("g", "s", 1), Some(2));
        assert_eq!(groups.groups(), ["g", "h"]);
        groups.remove_stream("s").unwrap();
        assert_eq!(groups.all(), [("h".to_string(), "t".to_string(), 0, 1)]);
    }
}
