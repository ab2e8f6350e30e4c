//! The version history, in an embedded transactional store (redb, already Strom's store for
//! consumer-group offsets): one write transaction per registration, durable (fsync'd) before
//! the registration is answered. Subject records are small and kept in memory too; schema
//! texts stay on disk and are read when asked for.
//!
//! Tables: `schemas` (id → canonical text), `digests` (SHA-256 of the canonical text → id, so
//! the same schema gets the same id under every subject), `subjects` (name → JSON record of
//! versions and settings), `meta` (`next_id`, the global compatibility set through the API).

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::Compatibility;
use crate::error::{CatalogError, store_error};

const SCHEMAS: TableDefinition<u32, &str> = TableDefinition::new("schemas");
const DIGESTS: TableDefinition<&[u8], u32> = TableDefinition::new("digests");
const SUBJECTS: TableDefinition<&str, &str> = TableDefinition::new("subjects");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct SubjectRecord {
    pub versions: Vec<VersionRecord>,
    /// Set through the API (`PUT /config/{subject}`); wins over the schema's own `x-strom`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compatibility: Option<Compatibility>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct VersionRecord {
    pub version: u32,
    pub id: u32,
    /// Soft-deleted, as in the Confluent Schema Registry: hidden, its number never reused.
    #[serde(default)]
    pub deleted: bool,
}

impl SubjectRecord {
    pub fn active(&self) -> impl DoubleEndedIterator<Item = &VersionRecord> {
        self.versions.iter().filter(|v| !v.deleted)
    }

    pub fn latest(&self) -> Option<&VersionRecord> {
        self.active().next_back()
    }

    pub fn next_version(&self) -> u32 {
        self.versions.last().map_or(1, |v| v.version + 1)
    }
}

pub(crate) struct Loaded {
    pub subjects: BTreeMap<String, SubjectRecord>,
    pub global: Option<Compatibility>,
    pub next_id: u32,
}

/// One registration's writes, applied in one transaction.
pub(crate) struct Write<'a> {
    pub new_schema: Option<(u32, &'a str, [u8; 32])>,
    pub subject: Option<(&'a str, &'a SubjectRecord)>,
    pub next_id: Option<u32>,
    pub global: Option<Option<Compatibility>>,
}

pub(crate) struct Store {
    db: Database,
}

impl Store {
    pub fn open(path: &Path) -> Result<(Store, Loaded), CatalogError> {
        let db = Database::create(path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => CatalogError::Store(format!(
                "{} is in use: is another Strom running on this data directory?",
                path.display()
            )),
            other => CatalogError::Store(format!("{}: {other}", path.display())),
        })?;
        let write = db.begin_write().map_err(store_error)?;
        write.open_table(SCHEMAS).map_err(store_error)?;
        write.open_table(DIGESTS).map_err(store_error)?;
        write.open_table(SUBJECTS).map_err(store_error)?;
        write.open_table(META).map_err(store_error)?;
        write.commit().map_err(store_error)?;

        let read = db.begin_read().map_err(store_error)?;
        let mut subjects = BTreeMap::new();
        for entry in read.open_table(SUBJECTS).map_err(store_error)?.iter().map_err(store_error)? {
            let (name, record) = entry.map_err(store_error)?;
            let record: SubjectRecord = serde_json::from_str(record.value())
                .map_err(|e| CatalogError::Store(format!("subject {:?} has a corrupt record: {e}", name.value())))?;
            subjects.insert(name.value().to_string(), record);
        }
        let meta = read.open_table(META).map_err(store_error)?;
        let next_id = match meta.get("next_id").map_err(store_error)? {
            Some(value) => value.value().parse().map_err(|_| CatalogError::Store("corrupt next_id".into()))?,
            None => 1,
        };
        let global = match meta.get("compatibility").map_err(store_error)? {
            Some(value) => Some(value.value().parse()?),
            None => None,
        };
        Ok((Store { db }, Loaded { subjects, global, next_id }))
    }

    pub fn schema(&self, id: u32) -> Result<Option<String>, CatalogError> {
        let read = self.db.begin_read().map_err(store_error)?;
        let table = read.open_table(SCHEMAS).map_err(store_error)?;
        Ok(table.get(id).map_err(store_error)?.map(|v| v.value().to_string()))
    }

    pub fn id_for_digest(&self, digest: &[u8; 32]) -> Result<Option<u32>, CatalogError> {
        let read = self.db.begin_read().map_err(store_error)?;
        let table = read.open_table(DIGESTS).map_err(store_error)?;
        Ok(table.get(digest.as_slice()).map_err(store_error)?.map(|v| v.value()))
    }

    pub fn write(&self, write: Write<'_>) -> Result<(), CatalogError> {
        let txn = self.db.begin_write().map_err(store_error)?;
        {
            if let Some((id, text, digest)) = write.new_schema {
                txn.open_table(SCHEMAS).map_err(store_error)?.insert(id, text).map_err(store_error)?;
                txn.open_table(DIGESTS).map_err(store_error)?.insert(digest.as_slice(), id).map_err(store_error)?;
            }
            if let Some((name, record)) = write.subject {
                let json = serde_json::to_string(record).map_err(store_error)?;
                txn.open_table(SUBJECTS).map_err(store_error)?.insert(name, json.as_str()).map_err(store_error)?;
            }
            let mut meta = txn.open_table(META).map_err(store_error)?;
            if let Some(next_id) = write.next_id {
                meta.insert("next_id", next_id.to_string().as_str()).map_err(store_error)?;
            }
            match write.global {
                None => {}
                Some(None) => {
                    meta.remove("compatibility").map_err(store_error)?;
                }
                Some(Some(level)) => {
                    meta.insert("compatibility", level.as_str()).map_err(store_error)?;
                }
            }
        }
        txn.commit().map_err(store_error)
    }
}
