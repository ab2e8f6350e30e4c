//! Committed consumer-group offsets, in an embedded transactional store (redb): one write
//! transaction per commit, fsync'd before the commit is answered. A copy lives in memory for
//! reads and for the lag metric.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{LogError, Result};

/// (group, stream, partition) → the next offset the group will read.
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("offsets");

type Key = (String, String, u32);

pub struct GroupOffsets {
    db: Database,
    commit: Mutex<()>,
    cache: Mutex<BTreeMap<Key, u64>>,
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
        Ok(GroupOffsets { db, commit: Mutex::new(()), cache: Mutex::new(cache) })
    }

    /// Commits offsets of one group and stream atomically.
    pub fn commit(&self, group: &str, stream: &str, offsets: &[(u32, u64)], mode: CommitMode) -> Result<()> {
        // Blocking (an fsync): async callers run it on the blocking pool. Commits are
        // serialised so the check and the write are one step; readers of the cache never wait
        // for a commit's fsync.
        let _commit = self.commit.lock().unwrap_or_else(|e| e.into_inner());
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
        let write = self.db.begin_write().map_err(store_error)?;
        {
            let mut table = write.open_table(OFFSETS).map_err(store_error)?;
            for &(partition, offset) in offsets {
                table.insert((group, stream, partition), offset).map_err(store_error)?;
            }
        }
        write.commit().map_err(store_error)?;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for &(partition, offset) in offsets {
            cache.insert((group.to_string(), stream.to_string(), partition), offset);
        }
        Ok(())
    }

    pub fn committed(&self, group: &str, stream: &str, partition: u32) -> Option<u64> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(&(group.to_string(), stream.to_string(), partition)).copied()
    }

    /// Every committed offset: (group, stream, partition, offset), sorted.
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
        let write = self.db.begin_write().map_err(store_error)?;
        {
            let mut table = write.open_table(OFFSETS).map_err(store_error)?;
            table.retain(|(_, s, _), _| s != stream).map_err(store_error)?;
        }
        write.commit().map_err(store_error)?;
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
