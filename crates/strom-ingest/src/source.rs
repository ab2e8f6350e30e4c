//! Sources: who may send events, with which write keys, of which types, from which origins.
//!
//! Write keys are stored as SHA-256 digests only (in the config file and in
//! `<data>/sources.json` for sources created through the API). A key is a random 256-bit
//! token, so an unsalted digest cannot be reversed by a dictionary, and a lookup by digest
//! needs no per-key work.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Sources, and write keys per source: each source is checked on every request's lookup
/// table, and both live in memory.
pub const SOURCES_MAX: usize = 1024;
pub const WRITE_KEYS_PER_SOURCE_MAX: usize = 16;
/// Entries of `allowed_types` and `cors_origins` per source.
pub const SOURCE_LIST_ENTRIES_MAX: usize = 1024;

/// What happens to an event whose type the catalog does not know.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum UnknownTypes {
    /// Written to the source's stream, unvalidated (Segment's default for unplanned events).
    #[default]
    Accept,
    /// Kept in the dead-letter stream with reason `unknown_type`.
    DeadLetter,
    /// Refused (the response says why), not written anywhere.
    Reject,
}

/// A source as configured (`[[sources]]` in strom.toml, or `POST /v1/sources`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub name: String,
    /// Hex SHA-256 digests of the write keys (`strom sources hash-key KEY` prints one).
    #[serde(default)]
    pub write_keys_sha256: Vec<String>,
    /// Event types this source may send: track event names (`AddToCart`), call names
    /// (`identify`, `page`, ...), or `*` for all.
    #[serde(default = "all_types")]
    pub allowed_types: Vec<String>,
    #[serde(default)]
    pub unknown_types: UnknownTypes,
    /// Browser origins allowed to send with this source's keys (`https://shop.example`), or
    /// `*`. Empty: no browser origin.
    #[serde(default)]
    pub cors_origins: Vec<String>,
    /// Where events without a catalog type go (default: the collector's `default_stream`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Where this source's rejected events go (default: the collector's dead-letter stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_stream: Option<String>,
}

fn all_types() -> Vec<String> {
    vec!["*".to_string()]
}

impl SourceConfig {
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty()
            || name.len() > 64
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(format!("source name {name:?}: 1 to 64 characters of letters, digits, '-', '_' and '.'"));
        }
        if self.write_keys_sha256.len() > WRITE_KEYS_PER_SOURCE_MAX {
            return Err(format!("source {name}: at most {WRITE_KEYS_PER_SOURCE_MAX} write keys"));
        }
        for digest in &self.write_keys_sha256 {
            if parse_digest(digest).is_none() {
                return Err(format!("source {name}: {digest:?} is not a hex SHA-256 digest (64 hex digits)"));
            }
        }
        if self.allowed_types.len() > SOURCE_LIST_ENTRIES_MAX || self.cors_origins.len() > SOURCE_LIST_ENTRIES_MAX {
            return Err(format!("source {name}: at most {SOURCE_LIST_ENTRIES_MAX} allowed types and origins"));
        }
        for origin in &self.cors_origins {
            if origin != "*" && !(origin.starts_with("http://") || origin.starts_with("https://")) {
                return Err(format!("source {name}: origin {origin:?} must be `*` or start with http:// or https://"));
            }
        }
        for stream in [&self.stream, &self.dead_letter_stream].into_iter().flatten() {
            strom_log::validate_stream_name(stream).map_err(|error| format!("source {name}: {error}"))?;
        }
        Ok(())
    }
}

/// A source in force.
#[derive(Debug)]
pub struct Source {
    pub config: SourceConfig,
    /// Created through the API (kept in `sources.json`) rather than in the config file.
    pub dynamic: bool,
}

impl Source {
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the source may send events of this type (`name` is the track event name or
    /// the call name).
    pub fn allows_type(&self, name: &str) -> bool {
        self.config.allowed_types.iter().any(|allowed| allowed == "*" || allowed == name)
    }

    /// Whether a browser on `origin` may send with this source's keys.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.config.cors_origins.iter().any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }
}

/// The SHA-256 digest of a write key, as stored.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

pub fn digest_hex(key: &str) -> String {
    digest(key).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Invalid(String),
    #[error("source {0:?} exists")]
    Exists(String),
    #[error("source {0:?} not found")]
    NotFound(String),
    #[error("source {0:?} is defined in the config file; change it there")]
    Static(String),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

#[derive(Default)]
struct Table {
    by_name: HashMap<String, Arc<Source>>,
    by_key: HashMap<[u8; 32], Arc<Source>>,
}

/// Every source in force, found by write key.
pub struct Sources {
    file: PathBuf,
    table: RwLock<Table>,
}

impl Sources {
    /// The config file's sources, then those created through the API (`<file>`).
    pub fn open(configured: &[SourceConfig], file: &Path) -> Result<Sources, SourceError> {
        let sources = Sources { file: file.to_path_buf(), table: RwLock::new(Table::default()) };
        {
            let mut table = sources.table.write().unwrap_or_else(|e| e.into_inner());
            for config in configured {
                insert(&mut table, config.clone(), false)?;
            }
            match fs::read(file) {
                Ok(bytes) => {
                    let dynamic: Vec<SourceConfig> = serde_json::from_slice(&bytes)
                        .map_err(|error| SourceError::Invalid(format!("{}: {error}", file.display())))?;
                    for config in dynamic {
                        insert(&mut table, config, true)?;
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(SourceError::Io { path: file.to_path_buf(), source }),
            }
        }
        Ok(sources)
    }

    /// The source a write key belongs to.
    pub fn authenticate(&self, key: &str) -> Option<Arc<Source>> {
        if key.is_empty() || key.len() > 512 {
            return None;
        }
        self.table.read().unwrap_or_else(|e| e.into_inner()).by_key.get(&digest(key)).cloned()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Source>> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).by_name.get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Source>> {
        let mut all: Vec<_> = self.table.read().unwrap_or_else(|e| e.into_inner()).by_name.values().cloned().collect();
        all.sort_by(|a, b| a.name().cmp(b.name()));
        all
    }

    /// Whether any source lets `origin` send (answers CORS preflights, which carry no key).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.table.read().unwrap_or_else(|e| e.into_inner()).by_name.values().any(|s| s.allows_origin(origin))
    }

    /// Creates a source through the API with a new write key, returned once and stored only
    /// as its digest.
    pub fn create(&self, mut config: SourceConfig) -> Result<(Arc<Source>, String), SourceError> {
        let key = new_write_key();
        config.write_keys_sha256 = vec![digest_hex(&key)];
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        if table.by_name.contains_key(&config.name) {
            return Err(SourceError::Exists(config.name));
        }
        let source = insert(&mut table, config, true)?;
        if let Err(error) = self.save(&table) {
            remove(&mut table, source.name());
            return Err(error);
        }
        Ok((source, key))
    }

    /// Adds a write key to an API-created source (key rotation) and returns it.
    pub fn add_key(&self, name: &str) -> Result<String, SourceError> {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let source = table.by_name.get(name).cloned().ok_or_else(|| SourceError::NotFound(name.to_string()))?;
        if !source.dynamic {
            return Err(SourceError::Static(name.to_string()));
        }
        let key = new_write_key();
        let mut config = source.config.clone();
        config.write_keys_sha256.push(digest_hex(&key));
        remove(&mut table, name);
        let updated = insert(&mut table, config, true);
        match updated {
            Ok(_) => {}
            Err(error) => {
                remove(&mut table, name);
                insert(&mut table, source.config.clone(), true)?;
                return Err(error);
            }
        }
        if let Err(error) = self.save(&table) {
            remove(&mut table, name);
            insert(&mut table, source.config.clone(), true)?;
            return Err(error);
        }
        Ok(key)
    }

    pub fn delete(&self, name: &str) -> Result<(), SourceError> {
        let mut table = self.table.write().unwrap_or_else(|e| e.into_inner());
        let source = table.by_name.get(name).cloned().ok_or_else(|| SourceError::NotFound(name.to_string()))?;
        if !source.dynamic {
            return Err(SourceError::Static(name.to_string()));
        }
        remove(&mut table, name);
        if let Err(error) = self.save(&table) {
            insert(&mut table, source.config.clone(), true)?;
            return Err(error);
        }
        Ok(())
    }

    fn save(&self, table: &Table) -> Result<(), SourceError> {
        let mut dynamic: Vec<&SourceConfig> = table.by_name.values().filter(|s| s.dynamic).map(|s| &s.config).collect();
        dynamic.sort_by(|a, b| a.name.cmp(&b.name));
        let bytes = serde_json::to_vec_pretty(&dynamic).map_err(|error| SourceError::Invalid(error.to_string()))?;
        let io_error = |source| SourceError::Io { path: self.file.clone(), source };
        let temporary = self.file.with_extension("tmp");
        let mut file = fs::File::create(&temporary).map_err(io_error)?;
        file.write_all(&bytes).map_err(io_error)?;
        file.sync_data().map_err(io_error)?;
        fs::rename(&temporary, &self.file).map_err(io_error)?;
        if let Some(dir) = self.file.parent() {
            fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_error)?;
        }
        Ok(())
    }
}

fn insert(table: &mut Table, config: SourceConfig, dynamic: bool) -> Result<Arc<Source>, SourceError> {
    config.validate().map_err(SourceError::Invalid)?;
    if table.by_name.contains_key(&config.name) {
        return Err(SourceError::Exists(config.name));
    }
    if table.by_name.len() >= SOURCES_MAX {
        return Err(SourceError::Invalid(format!("at most {SOURCES_MAX} sources")));
    }
    let digests: Vec<[u8; 32]> = config.write_keys_sha256.iter().filter_map(|hex| parse_digest(hex)).collect();
    if let Some(taken) = digests.iter().find_map(|d| table.by_key.get(d)) {
        return Err(SourceError::Invalid(format!(
            "source {}: a write key is already used by source {}",
            config.name,
            taken.name()
        )));
    }
    let source = Arc::new(Source { config, dynamic });
    for digest in digests {
        table.by_key.insert(digest, source.clone());
    }
    table.by_name.insert(source.name().to_string(), source.clone());
    Ok(source)
}

fn remove(table: &mut Table, name: &str) {
    if let Some(source) = table.by_name.remove(name) {
        table.by_key.retain(|_, s| !Arc::ptr_eq(s, &source));
    }
}

/// 256 random bits (two v4 UUIDs' worth of the OS's randomness, less their version bits),
/// as 64 hex digits behind a recognisable prefix.
fn new_write_key() -> String {
    format!("sk_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(name: &str, key: &str) -> SourceConfig {
        SourceConfig {
            name: name.to_string(),
            write_keys_sha256: vec![digest_hex(key)],
            allowed_types: vec!["AddToCart".into(), "identify".into()],
            unknown_types: UnknownTypes::Accept,
            cors_origins: vec!["https://shop.example".into()],
            stream: None,
            dead_letter_stream: None,
        }
    }

    #[test]
    fn keys_scopes_and_api_sources_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sources.json");
        let sources = Sources::open(&[config("web", "secret-web")], &file).unwrap();
        let web = sources.authenticate("secret-web").unwrap();
        assert_eq!(web.name(), "web");
        assert!(web.allows_type("AddToCart") && web.allows_type("identify") && !web.allows_type("Checkout"));
        assert!(web.allows_origin("https://SHOP.example") && !web.allows_origin("https://evil.example"));
        assert!(sources.authenticate("secret-wrong").is_none());
        assert!(matches!(sources.delete("web"), Err(SourceError::Static(_))));

        let mut app = config("app", "unused");
        app.write_keys_sha256.clear();
        let (_, key) = sources.create(app).unwrap();
        assert!(key.starts_with("sk_") && key.len() == 67);
        let second = sources.add_key("app").unwrap();
        drop(sources);

        let reopened = Sources::open(&[config("web", "secret-web")], &file).unwrap();
        assert_eq!(reopened.authenticate(&key).unwrap().name(), "app");
        assert_eq!(reopened.authenticate(&second).unwrap().name(), "app");
        assert!(!fs::read_to_string(&file).unwrap().contains(&key), "keys are stored hashed");
        reopened.delete("app").unwrap();
        assert!(reopened.authenticate(&key).is_none());
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let mut bad = config("web site", "k");
        assert!(bad.validate().unwrap_err().contains("source name"));
        bad = config("web", "k");
        bad.write_keys_sha256 = vec!["abc".into()];
        assert!(bad.validate().unwrap_err().contains("SHA-256"));
        bad = config("web", "k");
        bad.cors_origins = vec!["shop.example".into()];
        assert!(bad.validate().unwrap_err().contains("origin"));
        let dir = tempfile::tempdir().unwrap();
        let shared = Sources::open(&[config("a", "same"), config("b", "same")], &dir.path().join("s.json"));
        assert!(matches!(shared, Err(SourceError::Invalid(message)) if message.contains("already used")));
    }
}
