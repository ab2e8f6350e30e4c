//! Rule state in redb: every rule's key states, engine-wide state, input offsets and output
//! end offsets, written in one transaction per commit (fsync'd by redb before it returns),
//! so that the state on disk always reflects exactly the input before the committed
//! offsets. redb is crash-safe (copy-on-write pages, a commit is one atomic switch), so a
//! SIGKILL at any moment leaves the last commit.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{RulesError, store_error};

/// (rule, key) → the key's state (JSON).
const STATE: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("rule_state");
/// rule → the engine-wide state (watermarks; JSON).
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("rule_meta");
/// rule → the fingerprint of the rule source the state belongs to.
const FINGERPRINT: TableDefinition<&str, &str> = TableDefinition::new("rule_fingerprint");
/// rule → paused.
const PAUSED: TableDefinition<&str, bool> = TableDefinition::new("rule_paused");
/// (rule, stream, partition) → the next input offset to read.
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("rule_offsets");
/// (rule, stream, partition) → the output partition's end offset at the commit: records
/// after it may be this rule's outputs from after the commit (see `runtime`).
const OUTPUTS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("rule_outputs");

pub type Offsets = BTreeMap<(String, u32), u64>;

/// What the store holds for one rule.
#[derive(Default)]
pub(crate) struct Loaded {
    pub fingerprint: Option<String>,
    pub offsets: Offsets,
    pub outputs: Offsets,
    pub meta: Option<Vec<u8>>,
    pub keys: Vec<(String, Vec<u8>)>,
}

/// One commit of one rule.
pub(crate) struct Commit<'a> {
    pub rule: &'a str,
    pub fingerprint: &'a str,
    pub offsets: &'a Offsets,
    pub outputs: &'a Offsets,
    pub meta: &'a [u8],
    pub changes: &'a [(std::sync::Arc<str>, Option<Vec<u8>>)],
}

pub(crate) struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, RulesError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| RulesError::Io { path: parent.into(), source })?;
        }
        let db = Database::create(path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                RulesError::Store(format!("{} is in use by another process", path.display()))
            }
            other => store_error(format!("{}: {other}", path.display())),
        })?;
        let write = db.begin_write().map_err(store_error)?;
        write.open_table(STATE).map_err(store_error)?;
        write.open_table(META).map_err(store_error)?;
        write.open_table(FINGERPRINT).map_err(store_error)?;
        write.open_table(PAUSED).map_err(store_error)?;
        write.open_table(OFFSETS).map_err(store_error)?;
        write.open_table(OUTPUTS).map_err(store_error)?;
        write.commit().map_err(store_error)?;
        Ok(Store { db })
    }

    pub fn paused(&self) -> Result<BTreeMap<String, bool>, RulesError> {
        let read = self.db.begin_read().map_err(store_error)?;
        let table = read.open_table(PAUSED).map_err(store_error)?;
        let mut paused = BTreeMap::new();
        for entry in table.iter().map_err(store_error)? {
            let (name, value) = entry.map_err(store_error)?;
            paused.insert(name.value().to_string(), value.value());
        }
        Ok(paused)
    }

    pub fn load(&self, rule: &str) -> Result<Loaded, RulesError> {
        let read = self.db.begin_read().map_err(store_error)?;
        let mut loaded = Loaded {
            fingerprint: read
                .open_table(FINGERPRINT)
                .map_err(store_error)?
                .get(rule)
                .map_err(store_error)?
                .map(|v| v.value().to_string()),
            meta: read
                .open_table(META)
                .map_err(store_error)?
                .get(rule)
                .map_err(store_error)?
                .map(|v| v.value().to_vec()),
            ..Loaded::default()
        };
        for (table, into) in [(OFFSETS, &mut loaded.offsets), (OUTPUTS, &mut loaded.outputs)] {
            let table = read.open_table(table).map_err(store_error)?;
            for entry in table.range((rule, "", 0)..).map_err(store_error)? {
                let (key, value) = entry.map_err(store_error)?;
                let (r, stream, partition) = key.value();
                if r != rule {
                    break;
                }
                into.insert((stream.to_string(), partition), value.value());
            }
        }
        let state = read.open_table(STATE).map_err(store_error)?;
        for entry in state.range((rule, "")..).map_err(store_error)? {
            let (key, value) = entry.map_err(store_error)?;
            let (r, key) = key.value();
            if r != rule {
                break;
            }
            loaded.keys.push((key.to_string(), value.value().to_vec()));
        }
        Ok(loaded)
    }

    /// Writes one commit: changed keys, engine state, offsets and output ends, atomically.
    pub fn commit(&self, commit: &Commit<'_>) -> Result<(), RulesError> {
        let write = self.db.begin_write().map_err(store_error)?;
        {
            let mut state = write.open_table(STATE).map_err(store_error)?;
            for (key, value) in commit.changes {
                match value {
                    Some(value) => state.insert((commit.rule, &**key), value.as_slice()).map(drop),
                    None => state.remove((commit.rule, &**key)).map(drop),
                }
                .map_err(store_error)?;
            }
            write.open_table(META).map_err(store_error)?.insert(commit.rule, commit.meta).map_err(store_error)?;
            write
                .open_table(FINGERPRINT)
                .map_err(store_error)?
                .insert(commit.rule, commit.fingerprint)
                .map_err(store_error)?;
            for (table, values) in [(OFFSETS, commit.offsets), (OUTPUTS, commit.outputs)] {
                let mut table = write.open_table(table).map_err(store_error)?;
                for ((stream, partition), offset) in values {
                    table.insert((commit.rule, stream.as_str(), *partition), *offset).map_err(store_error)?;
                }
            }
        }
        write.commit().map_err(store_error)
    }

    /// Forgets a rule's state (a changed rule starts afresh) and, with `everything`, its
    /// offsets and pause flag too (a deleted rule).
    pub fn clear(&self, rule: &str, everything: bool) -> Result<(), RulesError> {
        let write = self.db.begin_write().map_err(store_error)?;
        {
            write.open_table(STATE).map_err(store_error)?.retain(|(r, _), _| r != rule).map_err(store_error)?;
            write.open_table(META).map_err(store_error)?.remove(rule).map_err(store_error)?;
            write.open_table(FINGERPRINT).map_err(store_error)?.remove(rule).map_err(store_error)?;
            if everything {
                write.open_table(PAUSED).map_err(store_error)?.remove(rule).map_err(store_error)?;
                for table in [OFFSETS, OUTPUTS] {
                    write
                        .open_table(table)
                        .map_err(store_error)?
                        .retain(|(r, _, _), _| r != rule)
                        .map_err(store_error)?;
                }
            }
        }
        write.commit().map_err(store_error)
    }

    /// Every rule the store holds anything for.
    pub fn rules(&self) -> Result<std::collections::BTreeSet<String>, RulesError> {
        let read = self.db.begin_read().map_err(store_error)?;
        let mut names = std::collections::BTreeSet::new();
        for entry in read.open_table(FINGERPRINT).map_err(store_error)?.iter().map_err(store_error)? {
            names.insert(entry.map_err(store_error)?.0.value().to_string());
        }
        for entry in read.open_table(OFFSETS).map_err(store_error)?.iter().map_err(store_error)? {
            names.insert(entry.map_err(store_error)?.0.value().0.to_string());
        }
        for entry in read.open_table(PAUSED).map_err(store_error)?.iter().map_err(store_error)? {
            names.insert(entry.map_err(store_error)?.0.value().to_string());
        }
        Ok(names)
    }

    pub fn set_paused(&self, rule: &str, paused: bool) -> Result<(), RulesError> {
        let write = self.db.begin_write().map_err(store_error)?;
        {
            let mut table = write.open_table(PAUSED).map_err(store_error)?;
            if paused {
                table.insert(rule, true).map_err(store_error)?;
            } else {
                table.remove(rule).map_err(store_error)?;
            }
        }
        write.commit().map_err(store_error)
    }
}
