//! The catalog: registration (files and API), version history, compatibility, and the
//! snapshot the hot path reads.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::canonical::{canonical_text, sha256};
use crate::compat::check_compatibility;
use crate::error::CatalogError;
use crate::event_type::{Compiled, compile};
use crate::limits::{
    CATALOG_FILES_MAX, PII_SECRET_BYTES, SCHEMA_BYTES_MAX, SUBJECT_BYTES_MAX, SUBJECT_VERSIONS_MAX, SUBJECTS_MAX,
};
use crate::model::Metadata;
use crate::snapshot::Snapshot;
use crate::store::{Loaded, Store, SubjectRecord, VersionRecord, Write};
use crate::{Compatibility, Difference, EventType};

#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// The catalog files (`<dir>/<TypeName>.json`); a missing directory is an empty catalog.
    pub dir: PathBuf,
    /// Where the version history lives (in the data directory).
    pub store_dir: PathBuf,
    /// The compatibility level of subjects that set none (the API can override it).
    pub default_compatibility: Compatibility,
    /// The PII hashing key. `None`: a random key is generated once and kept in
    /// `<store_dir>/pii.key`, so hashes stay stable across restarts.
    pub pii_secret: Option<Vec<u8>>,
}

/// The outcome of a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub subject: String,
    pub id: u32,
    pub version: u32,
    /// False when the schema was already a version of the subject (nothing changed).
    pub created: bool,
}

/// One version of a subject, as the registry API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaVersion {
    pub subject: String,
    pub version: u32,
    pub id: u32,
    /// The canonical text (keys sorted, no whitespace): what identity is decided on.
    pub schema: String,
}

/// A version number or the latest version (`latest` or `-1` in the registry API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionRef {
    Latest,
    Number(u32),
}

impl FromStr for VersionRef {
    type Err = String;

    fn from_str(text: &str) -> Result<VersionRef, String> {
        match text {
            "latest" | "-1" => Ok(VersionRef::Latest),
            _ => match text.parse::<u32>() {
                Ok(n) if n >= 1 => Ok(VersionRef::Number(n)),
                _ => Err(format!("version {text:?} is not a positive number or \"latest\"")),
            },
        }
    }
}

/// What a reload of the catalog directory did, file by file.
#[derive(Debug, Default)]
pub struct ReloadReport {
    pub added: Vec<Registered>,
    pub updated: Vec<Registered>,
    pub unchanged: Vec<String>,
    pub refused: Vec<Refused>,
}

/// A catalog file that was not loaded; the subject's previous version (if any) stays in force.
#[derive(Debug)]
pub struct Refused {
    pub subject: String,
    pub path: PathBuf,
    pub error: CatalogError,
}

struct State {
    subjects: BTreeMap<String, SubjectRecord>,
    /// Set through the API; wins over the configured default.
    global: Option<Compatibility>,
    next_id: u32,
    types: BTreeMap<String, Arc<EventType>>,
}

type Fingerprint = Vec<(String, u64, Option<SystemTime>)>;

pub struct Catalog {
    dir: PathBuf,
    default_compatibility: Compatibility,
    secret: Vec<u8>,
    store: Store,
    /// Writers (registrations, deletions, settings) take this lock; readers never do.
    state: Mutex<State>,
    snapshot: ArcSwap<Snapshot>,
    /// The directory listing the last reload read, to tell a change without reading files.
    fingerprint: Mutex<Option<Fingerprint>>,
}

/// A schema parsed, checked and compiled, not yet registered.
struct Prepared {
    canonical: String,
    digest: [u8; 32],
    metadata: Option<Metadata>,
    compiled: Compiled,
}

enum Source {
    /// Confluent semantics: a schema already among the subject's versions returns that version.
    Api,
    /// A catalog file holds the current version: any difference from the latest is a new version.
    File,
}

pub fn validate_subject(subject: &str) -> Result<(), CatalogError> {
    let invalid =
        |reason: &str| Err(CatalogError::InvalidSubject { subject: subject.to_string(), reason: reason.to_string() });
    if subject.is_empty() {
        return invalid("it is empty");
    }
    if subject.len() > SUBJECT_BYTES_MAX {
        return invalid(&format!("it is longer than {SUBJECT_BYTES_MAX} bytes"));
    }
    if subject.starts_with('.') {
        return invalid("it starts with a dot");
    }
    if !subject.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':')) {
        return invalid("only ASCII letters, digits, '.', '_', '-' and ':' are allowed");
    }
    Ok(())
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the state half-written: every change is
    // made after the store's transaction commits, by plain inserts.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

fn prepare(subject: &str, text: &str, from_file: bool) -> Result<Prepared, CatalogError> {
    let invalid = |reason: String| CatalogError::InvalidSchema { subject: subject.to_string(), reason };
    if text.len() > SCHEMA_BYTES_MAX {
        return Err(CatalogError::Limit { what: "schema bytes", limit: SCHEMA_BYTES_MAX });
    }
    let value: Value = serde_json::from_str(text).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let metadata = match Metadata::from_schema(subject, &value).map_err(invalid)? {
        Some(metadata) => Some(metadata),
        None if from_file => {
            return Err(invalid(
                "no x-strom metadata: a catalog file needs {\"x-strom\": {\"kind\": ..., \"stream\": ...}}".into(),
            ));
        }
        None => Metadata::raw_for_subject(subject),
    };
    let canonical = canonical_text(&value);
    let digest = sha256(canonical.as_bytes());
    let compiled = compile(value).map_err(invalid)?;
    Ok(Prepared { canonical, digest, metadata, compiled })
}

fn load_secret(config: &CatalogConfig) -> Result<Vec<u8>, CatalogError> {
    if let Some(secret) = &config.pii_secret {
        if secret.is_empty() {
            return Err(CatalogError::Config(
                "the PII secret is empty: an unkeyed hash could be reversed by a dictionary".into(),
            ));
        }
        return Ok(secret.clone());
    }
    let path = config.store_dir.join("pii.key");
    let io = |source| CatalogError::Io { path: path.clone(), source };
    match std::fs::read(&path) {
        Ok(secret) if secret.len() == PII_SECRET_BYTES => return Ok(secret),
        Ok(_) => return Err(CatalogError::Config(format!("{} is not {PII_SECRET_BYTES} bytes long", path.display()))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(io(error)),
    }
    let mut secret = vec![0u8; PII_SECRET_BYTES];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut secret)).map_err(io)?;
    // Written aside, fsync'd and renamed: a crash never leaves a short key that would then
    // change every hash.
    let partial = config.store_dir.join("pii.key.partial");
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
        file.write_all(&secret)?;
        file.sync_all()?;
        std::fs::rename(&partial, &path)?;
        std::fs::File::open(&config.store_dir)?.sync_all()
    };
    write().map_err(io)?;
    Ok(secret)
}

impl Catalog {
    /// Opens the version history, loads the types in force, then reads the catalog directory.
    /// Files that are refused are logged and reported by [`Catalog::reload`]; they do not stop
    /// the start (the previous version stays in force).
    pub fn open(config: CatalogConfig) -> Result<Arc<Catalog>, CatalogError> {
        std::fs::create_dir_all(&config.store_dir)
            .map_err(|source| CatalogError::Io { path: config.store_dir.clone(), source })?;
        let secret = load_secret(&config)?;
        let (store, Loaded { subjects, global, next_id }) = Store::open(&config.store_dir.join("catalog.redb"))?;
        let catalog = Catalog {
            dir: config.dir,
            default_compatibility: config.default_compatibility,
            secret,
            store,
            state: Mutex::new(State { subjects, global, next_id, types: BTreeMap::new() }),
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            fingerprint: Mutex::new(None),
        };
        {
            let mut state = lock(&catalog.state);
            let names: Vec<String> = state.subjects.keys().cloned().collect();
            for subject in names {
                match catalog.type_in_force(&state, &subject) {
                    Ok(Some(event_type)) => {
                        state.types.insert(subject, event_type);
                    }
                    Ok(None) => {}
                    // A stored schema this build cannot compile (say, after a validator
                    // upgrade) must not keep the server from starting.
                    Err(error) => tracing::error!(%subject, %error, "stored event type not loaded"),
                }
            }
            catalog.publish(&state);
        }
        catalog.reload()?;
        Ok(Arc::new(catalog))
    }

    /// The types in force. Cheap (an atomic load); hold it for a batch of events.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The key for `x-strom-pii: hash`.
    pub fn pii_secret(&self) -> &[u8] {
        &self.secret
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn publish(&self, state: &State) {
        self.snapshot.store(Arc::new(Snapshot::build(state.types.values().cloned())));
    }

    fn type_in_force(&self, state: &State, subject: &str) -> Result<Option<Arc<EventType>>, CatalogError> {
        let Some(latest) = state.subjects.get(subject).and_then(SubjectRecord::latest) else { return Ok(None) };
        let text = self.store.schema(latest.id)?.ok_or(CatalogError::SchemaNotFound(latest.id))?;
        let prepared = prepare(subject, &text, false)?;
        Ok(prepared
            .metadata
            .map(|metadata| Arc::new(EventType::new(subject, metadata, latest.version, latest.id, prepared.compiled))))
    }

    fn fingerprint(&self) -> Result<Fingerprint, CatalogError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CatalogError::Io { path: self.dir.clone(), source }),
        };
        let mut listing = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CatalogError::Io { path: self.dir.clone(), source })?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            let metadata = entry.metadata().ok();
            listing.push((name, metadata.as_ref().map_or(0, |m| m.len()), metadata.and_then(|m| m.modified().ok())));
            if listing.len() > CATALOG_FILES_MAX {
                return Err(CatalogError::Limit { what: "files in the catalog directory", limit: CATALOG_FILES_MAX });
            }
        }
        listing.sort();
        Ok(listing)
    }

    /// Whether the catalog directory changed (files added, removed, resized or touched) since
    /// the last reload. Cheap: one directory listing.
    pub fn dir_changed(&self) -> bool {
        let current = self.fingerprint().ok();
        let last = self.fingerprint.lock().unwrap_or_else(|e| e.into_inner());
        current != *last
    }

    /// Reads every `<dir>/*.json` and registers what changed. A file that fails (bad JSON,
    /// invalid schema, incompatible change, conflict) is refused and logged; the others load.
    /// `Err` only when the directory cannot be listed or the store fails. A removed file does
    /// not remove its type (delete the subject through the API): the history is not the files'.
    pub fn reload(&self) -> Result<ReloadReport, CatalogError> {
        let listing = self.fingerprint()?;
        let mut report = ReloadReport::default();
        for (name, _, _) in &listing {
            let path = self.dir.join(name);
            let subject = name.trim_end_matches(".json").to_string();
            match self.load_file(&subject, &path) {
                Ok(registered) if !registered.created => report.unchanged.push(subject),
                Ok(registered) if registered.version == 1 => report.added.push(registered),
                Ok(registered) => report.updated.push(registered),
                Err(error @ CatalogError::Store(_)) => return Err(error),
                Err(error) => {
                    tracing::error!(subject = %subject, path = %path.display(), %error, "catalog file refused; the previous version stays in force");
                    report.refused.push(Refused { subject, path, error });
                }
            }
        }
        for registered in report.added.iter().chain(&report.updated) {
            tracing::info!(subject = %registered.subject, version = registered.version, id = registered.id, "catalog type registered");
        }
        *self.fingerprint.lock().unwrap_or_else(|e| e.into_inner()) = Some(listing);
        Ok(report)
    }

    fn load_file(&self, subject: &str, path: &Path) -> Result<Registered, CatalogError> {
        validate_subject(subject)?;
        let io = |source| CatalogError::Io { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        // Reads one byte past the limit to tell a file at the limit from one over it.
        file.take(SCHEMA_BYTES_MAX as u64 + 1).read_to_string(&mut text).map_err(io)?;
        let prepared = prepare(subject, &text, true)?;
        self.register_prepared(subject, prepared, Source::File)
    }

    /// Registers a schema under a subject, as `POST /subjects/{subject}/versions` does: a
    /// schema that already is a version of the subject returns that version; otherwise the new
    /// version must be compatible with the earlier ones under the subject's level.
    pub fn register(&self, subject: &str, schema: &str) -> Result<Registered, CatalogError> {
        validate_subject(subject)?;
        let prepared = prepare(subject, schema, false)?;
        self.register_prepared(subject, prepared, Source::Api)
    }

    /// Makes `schema` the subject's current version, exactly as a catalog file with this
    /// content would (it needs `x-strom`; any difference from the latest is a new version).
    pub fn put_current(&self, subject: &str, schema: &str) -> Result<Registered, CatalogError> {
        validate_subject(subject)?;
        let prepared = prepare(subject, schema, true)?;
        self.register_prepared(subject, prepared, Source::File)
    }

    fn effective_level(
        &self,
        state: &State,
        record: Option<&SubjectRecord>,
        declared: Option<Compatibility>,
    ) -> Compatibility {
        record.and_then(|r| r.compatibility).or(declared).or(state.global).unwrap_or(self.default_compatibility)
    }

    fn earlier_schemas(&self, record: &SubjectRecord) -> Result<Vec<(u32, Value)>, CatalogError> {
        let mut schemas = Vec::new();
        for version in record.active() {
            let text = self.store.schema(version.id)?.ok_or(CatalogError::SchemaNotFound(version.id))?;
            let value = serde_json::from_str(&text)
                .map_err(|e| CatalogError::Store(format!("schema {} is corrupt: {e}", version.id)))?;
            schemas.push((version.version, value));
        }
        Ok(schemas)
    }

    fn incompatibility(
        &self,
        subject: &str,
        level: Compatibility,
        earlier: &[(u32, Value)],
        new: &Value,
    ) -> Result<(), CatalogError> {
        let values: Vec<&Value> = earlier.iter().map(|(_, v)| v).collect();
        let differences = check_compatibility(level, &values, new);
        if differences.is_empty() {
            return Ok(());
        }
        let against = match (level.is_transitive(), earlier.first(), earlier.last()) {
            (true, Some(first), Some(last)) if first.0 != last.0 => format!("versions {}..={}", first.0, last.0),
            (_, _, Some(last)) => format!("version {}", last.0),
            _ => "no version".into(),
        };
        Err(CatalogError::Incompatible { subject: subject.to_string(), mode: level, against, differences })
    }

    fn register_prepared(&self, subject: &str, prepared: Prepared, source: Source) -> Result<Registered, CatalogError> {
        let mut state = lock(&self.state);
        let mut record = state.subjects.get(subject).cloned().unwrap_or_default();
        let existing_id = self.store.id_for_digest(&prepared.digest)?;
        if let Some(id) = existing_id {
            let known = match source {
                Source::Api => record.active().find(|v| v.id == id).copied(),
                Source::File => record.latest().filter(|v| v.id == id).copied(),
            };
            if let Some(version) = known {
                return Ok(Registered { subject: subject.to_string(), id, version: version.version, created: false });
            }
        }
        if !state.subjects.contains_key(subject) && state.subjects.len() >= SUBJECTS_MAX {
            return Err(CatalogError::Limit { what: "subjects", limit: SUBJECTS_MAX });
        }
        if record.versions.len() >= SUBJECT_VERSIONS_MAX {
            return Err(CatalogError::Limit { what: "versions of one subject", limit: SUBJECT_VERSIONS_MAX });
        }
        let declared = prepared.metadata.as_ref().and_then(|m| m.compatibility);
        let level = self.effective_level(&state, state.subjects.get(subject), declared);
        if level != Compatibility::None {
            let earlier = self.earlier_schemas(&record)?;
            self.incompatibility(subject, level, &earlier, &prepared.compiled.schema)?;
        }
        if let Some(metadata) = &prepared.metadata
            && let Some(holder) =
                state.types.values().find(|t| t.name != subject && t.kind == metadata.kind && t.event == metadata.event)
        {
            return Err(CatalogError::Conflict {
                subject: subject.to_string(),
                key: metadata.key(),
                other: holder.name.clone(),
            });
        }

        let (id, new_schema) = match existing_id {
            Some(id) => (id, None),
            None => (state.next_id, Some((state.next_id, prepared.canonical.as_str(), prepared.digest))),
        };
        let next_id = match new_schema {
            Some(_) => {
                Some(id.checked_add(1).ok_or(CatalogError::Limit { what: "schema ids", limit: u32::MAX as usize })?)
            }
            None => None,
        };
        let version = record.next_version();
        record.versions.push(VersionRecord { version, id, deleted: false });
        self.store.write(Write { new_schema, subject: Some((subject, &record)), next_id, global: None })?;

        state.subjects.insert(subject.to_string(), record);
        if let Some(next_id) = next_id {
            state.next_id = next_id;
        }
        match prepared.metadata {
            Some(metadata) => {
                let event_type = EventType::new(subject, metadata, version, id, prepared.compiled);
                state.types.insert(subject.to_string(), Arc::new(event_type));
            }
            None => {
                state.types.remove(subject);
            }
        }
        self.publish(&state);
        Ok(Registered { subject: subject.to_string(), id, version, created: true })
    }

    /// Checks a schema against a subject's versions without registering it: against the
    /// given version, or (None) against what the subject's level demands. Empty: compatible.
    pub fn test_compatibility(
        &self,
        subject: &str,
        schema: &str,
        against: Option<VersionRef>,
    ) -> Result<Vec<Difference>, CatalogError> {
        validate_subject(subject)?;
        let prepared = prepare(subject, schema, false)?;
        let state = lock(&self.state);
        let record = state
            .subjects
            .get(subject)
            .filter(|r| r.latest().is_some())
            .ok_or_else(|| CatalogError::SubjectNotFound(subject.to_string()))?;
        let declared = prepared.metadata.as_ref().and_then(|m| m.compatibility);
        let level = self.effective_level(&state, Some(record), declared);
        let mut earlier = self.earlier_schemas(record)?;
        if let Some(against) = against {
            let version = Self::find_version(subject, record, against)?.version;
            earlier.retain(|(v, _)| *v == version);
        }
        match self.incompatibility(subject, level, &earlier, &prepared.compiled.schema) {
            Ok(()) => Ok(Vec::new()),
            Err(CatalogError::Incompatible { differences, .. }) => Ok(differences),
            Err(other) => Err(other),
        }
    }

    fn find_version(subject: &str, record: &SubjectRecord, version: VersionRef) -> Result<VersionRecord, CatalogError> {
        match version {
            VersionRef::Latest => {
                record.latest().copied().ok_or_else(|| CatalogError::SubjectNotFound(subject.to_string()))
            }
            VersionRef::Number(n) => record
                .active()
                .find(|v| v.version == n)
                .copied()
                .ok_or(CatalogError::VersionNotFound { subject: subject.to_string(), version: n }),
        }
    }

    fn active_record(state: &State, subject: &str) -> Result<SubjectRecord, CatalogError> {
        state
            .subjects
            .get(subject)
            .filter(|r| r.latest().is_some())
            .cloned()
            .ok_or_else(|| CatalogError::SubjectNotFound(subject.to_string()))
    }

    /// Subjects with at least one version that is not deleted, sorted.
    pub fn subjects(&self) -> Vec<String> {
        let state = lock(&self.state);
        state.subjects.iter().filter(|(_, r)| r.latest().is_some()).map(|(name, _)| name.clone()).collect()
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<u32>, CatalogError> {
        let state = lock(&self.state);
        Ok(Self::active_record(&state, subject)?.active().map(|v| v.version).collect())
    }

    pub fn version(&self, subject: &str, version: VersionRef) -> Result<SchemaVersion, CatalogError> {
        let found = {
            let state = lock(&self.state);
            Self::find_version(subject, &Self::active_record(&state, subject)?, version)?
        };
        let schema = self.store.schema(found.id)?.ok_or(CatalogError::SchemaNotFound(found.id))?;
        Ok(SchemaVersion { subject: subject.to_string(), version: found.version, id: found.id, schema })
    }

    /// The version of `subject` whose schema is `schema` (`POST /subjects/{subject}`).
    pub fn lookup_schema(&self, subject: &str, schema: &str) -> Result<SchemaVersion, CatalogError> {
        let value: Value = serde_json::from_str(schema).map_err(|e| CatalogError::InvalidSchema {
            subject: subject.to_string(),
            reason: format!("not JSON: {e}"),
        })?;
        let canonical = canonical_text(&value);
        let record = Self::active_record(&lock(&self.state), subject)?;
        let id = self.store.id_for_digest(&sha256(canonical.as_bytes()))?;
        let found =
            id.and_then(|id| record.active().find(|v| v.id == id).copied()).ok_or(CatalogError::SchemaNotFound(0))?;
        Ok(SchemaVersion { subject: subject.to_string(), version: found.version, id: found.id, schema: canonical })
    }

    /// A schema's canonical text by its global id.
    pub fn by_id(&self, id: u32) -> Result<String, CatalogError> {
        self.store.schema(id)?.ok_or(CatalogError::SchemaNotFound(id))
    }

    /// (subject, version) pairs that use a schema id, deleted versions left out.
    pub fn subject_versions_of(&self, id: u32) -> Vec<(String, u32)> {
        let state = lock(&self.state);
        state
            .subjects
            .iter()
            .flat_map(|(name, record)| record.active().filter(|v| v.id == id).map(|v| (name.clone(), v.version)))
            .collect()
    }

    /// The level in force for a subject (its own, its schema's, else the global one).
    pub fn compatibility(&self, subject: Option<&str>) -> Compatibility {
        let state = lock(&self.state);
        match subject {
            None => state.global.unwrap_or(self.default_compatibility),
            Some(subject) => {
                let declared = state.types.get(subject).and_then(|t| t.compatibility);
                self.effective_level(&state, state.subjects.get(subject), declared)
            }
        }
    }

    /// The level a subject sets itself (through the API or its schema's `x-strom`), if any.
    pub fn subject_compatibility(&self, subject: &str) -> Option<Compatibility> {
        let state = lock(&self.state);
        state
            .subjects
            .get(subject)
            .and_then(|r| r.compatibility)
            .or_else(|| state.types.get(subject).and_then(|t| t.compatibility))
    }

    /// Sets (Some) or clears (None) the global level or a subject's level. A subject's level
    /// can be set before its first version, as in the Confluent Schema Registry.
    pub fn set_compatibility(&self, subject: Option<&str>, level: Option<Compatibility>) -> Result<(), CatalogError> {
        let mut state = lock(&self.state);
        match subject {
            None => {
                self.store.write(Write { new_schema: None, subject: None, next_id: None, global: Some(level) })?;
                state.global = level;
            }
            Some(subject) => {
                validate_subject(subject)?;
                if !state.subjects.contains_key(subject) && state.subjects.len() >= SUBJECTS_MAX {
                    return Err(CatalogError::Limit { what: "subjects", limit: SUBJECTS_MAX });
                }
                let mut record = state.subjects.get(subject).cloned().unwrap_or_default();
                record.compatibility = level;
                self.store.write(Write {
                    new_schema: None,
                    subject: Some((subject, &record)),
                    next_id: None,
                    global: None,
                })?;
                state.subjects.insert(subject.to_string(), record);
            }
        }
        Ok(())
    }

    /// Soft-deletes every version of a subject (its event type leaves the snapshot); returns
    /// the deleted version numbers. Registering again continues the numbering.
    pub fn delete_subject(&self, subject: &str) -> Result<Vec<u32>, CatalogError> {
        let mut state = lock(&self.state);
        let mut record = Self::active_record(&state, subject)?;
        let deleted: Vec<u32> = record.active().map(|v| v.version).collect();
        record.versions.iter_mut().for_each(|v| v.deleted = true);
        self.store.write(Write { new_schema: None, subject: Some((subject, &record)), next_id: None, global: None })?;
        state.subjects.insert(subject.to_string(), record);
        state.types.remove(subject);
        self.publish(&state);
        Ok(deleted)
    }

    /// Soft-deletes one version; if it was the latest, the one before comes into force.
    pub fn delete_version(&self, subject: &str, version: VersionRef) -> Result<u32, CatalogError> {
        let mut state = lock(&self.state);
        let mut record = Self::active_record(&state, subject)?;
        let found = Self::find_version(subject, &record, version)?;
        if let Some(v) = record.versions.iter_mut().find(|v| v.version == found.version) {
            v.deleted = true;
        }
        self.store.write(Write { new_schema: None, subject: Some((subject, &record)), next_id: None, global: None })?;
        state.subjects.insert(subject.to_string(), record);
        match self.type_in_force(&state, subject) {
            Ok(Some(event_type)) => {
                state.types.insert(subject.to_string(), event_type);
            }
            Ok(None) => {
                state.types.remove(subject);
            }
            Err(error) => {
                tracing::error!(%subject, %error, "the version before the deleted one could not be loaded");
                state.types.remove(subject);
            }
        }
        self.publish(&state);
        Ok(found.version)
    }
}
