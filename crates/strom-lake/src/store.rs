//! Where the lake's files live: a local directory or an S3-compatible bucket. Both make a
//! file visible only once it is complete: locally by `rename` of a synced file (then a sync
//! of the directory), on S3 by the single PUT or the completed multipart upload that creates
//! the object.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::config::{LakeUrl, S3Settings, SPOOL_DIR};
use crate::error::{IoContext, LakeError, Result};

/// Files up to this size are uploaded with one PUT; larger ones in parts of this size.
const UPLOAD_PART_BYTES: usize = 16 * 1024 * 1024;

/// One object below the lake's root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The path below the root, `/`-separated.
    pub path: String,
    pub size: u64,
}

#[derive(Clone)]
pub enum Store {
    /// `spool`: this process's own directory below the lake's `_strom_spool` (several
    /// processes may land into one lake directory).
    Local {
        root: PathBuf,
        spool: PathBuf,
    },
    S3 {
        store: Arc<AmazonS3>,
        bucket: String,
        prefix: String,
        spool: PathBuf,
    },
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Store::Local { root, .. } => write!(f, "Store::Local({})", root.display()),
            Store::S3 { bucket, prefix, .. } => write!(f, "Store::S3(s3://{bucket}/{prefix})"),
        }
    }
}

impl Store {
    /// `state_dir` holds the spool of an S3 lake (files are written there, then uploaded).
    pub fn open(url: &LakeUrl, s3: &S3Settings, state_dir: &Path) -> Result<Store> {
        match url {
            LakeUrl::Local(root) => {
                let root = std::path::absolute(root).at(root)?;
                std::fs::create_dir_all(&root).at(&root)?;
                let spool = root.join(SPOOL_DIR).join(spool_id(state_dir)?);
                Ok(Store::Local { root, spool })
            }
            LakeUrl::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                if let Some(key) = env("STROM_LAKE_ACCESS_KEY_ID").or_else(|| non_empty(&s3.access_key_id)) {
                    builder = builder.with_access_key_id(key);
                }
                let secret = env("STROM_LAKE_SECRET_ACCESS_KEY").or_else(|| s3.secret_access_key.clone().map(|s| s.0));
                if let Some(secret) = secret {
                    builder = builder.with_secret_access_key(secret);
                }
                if let Some(token) = &s3.session_token {
                    builder = builder.with_token(token.0.clone());
                }
                if let Some(region) = non_empty(&s3.region) {
                    builder = builder.with_region(region);
                } else if env("AWS_REGION").is_none() && env("AWS_DEFAULT_REGION").is_none() {
                    builder = builder.with_region("us-east-1");
                }
                if let Some(endpoint) = non_empty(&s3.endpoint) {
                    builder = builder.with_endpoint(endpoint);
                }
                let store =
                    builder.with_allow_http(s3.allow_http).with_virtual_hosted_style_request(!s3.path_style).build()?;
                let spool = state_dir.join("spool");
                std::fs::create_dir_all(&spool).at(&spool)?;
                Ok(Store::S3 { store: Arc::new(store), bucket: bucket.clone(), prefix: prefix.clone(), spool })
            }
        }
    }

    /// Where files are written before they are published. Emptied when a sink starts.
    pub fn spool_dir(&self) -> PathBuf {
        match self {
            // The same file system as the lake, so that publishing is a rename.
            Store::Local { spool, .. } => spool.clone(),
            Store::S3 { spool, .. } => spool.clone(),
        }
    }

    /// The URL DataFusion knows the lake by, and the object store serving it.
    pub fn url(&self) -> String {
        match self {
            Store::Local { root, .. } => format!("file://{}", root.display()),
            Store::S3 { bucket, prefix, .. } if prefix.is_empty() => format!("s3://{bucket}"),
            Store::S3 { bucket, prefix, .. } => format!("s3://{bucket}/{prefix}"),
        }
    }

    pub fn object_store(&self) -> Result<Arc<dyn ObjectStore>> {
        match self {
            Store::Local { .. } => Ok(Arc::new(object_store::local::LocalFileSystem::new())),
            Store::S3 { store, .. } => Ok(store.clone()),
        }
    }

    fn object_path(prefix: &str, path: &str) -> ObjectPath {
        if prefix.is_empty() { ObjectPath::from(path) } else { ObjectPath::from(format!("{prefix}/{path}")) }
    }

    /// Makes the complete, synced file at `spool_path` visible as `path` and removes it from
    /// the spool.
    pub async fn publish(&self, spool_path: &Path, path: &str) -> Result<()> {
        match self {
            Store::Local { root, .. } => {
                let (root, spool_path, target) = (root.clone(), spool_path.to_path_buf(), root.join(path));
                blocking(move || publish_local(&root, &spool_path, &target)).await
            }
            Store::S3 { store, prefix, .. } => {
                let location = Store::object_path(prefix, path);
                let size = tokio::fs::metadata(spool_path).await.at(spool_path)?.len();
                if size as usize <= UPLOAD_PART_BYTES {
                    let bytes = tokio::fs::read(spool_path).await.at(spool_path)?;
                    store.put(&location, PutPayload::from(bytes)).await?;
                } else {
                    let upload = store.put_multipart(&location).await?;
                    let mut writer = WriteMultipart::new_with_chunk_size(upload, UPLOAD_PART_BYTES);
                    let mut file = std::fs::File::open(spool_path).at(spool_path)?;
                    let mut buffer = vec![0u8; UPLOAD_PART_BYTES];
                    loop {
                        let read = file.read(&mut buffer).at(spool_path)?;
                        if read == 0 {
                            break;
                        }
                        // At most two parts in flight: memory stays bounded by the part size.
                        writer.wait_for_capacity(2).await?;
                        writer.write(&buffer[..read]);
                    }
                    writer.finish().await?;
                }
                tokio::fs::remove_file(spool_path).await.at(spool_path)?;
                Ok(())
            }
        }
    }

    /// Writes a small file whole, replacing any earlier one (flush markers): locally through
    /// the spool (synced, renamed, directory synced), on S3 as one PUT.
    pub async fn put_small(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        match self {
            Store::Local { root, .. } => {
                let (root, spool, target, path) = (root.clone(), self.spool_dir(), root.join(path), path.to_string());
                blocking(move || {
                    std::fs::create_dir_all(&spool).at(&spool)?;
                    // One writer per marker in a process; the process id keeps two processes on one
                    // machine apart.
                    let temporary = spool.join(format!("{}-{}.tmp", std::process::id(), path.replace('/', "_")));
                    {
                        let mut file = std::fs::File::create(&temporary).at(&temporary)?;
                        std::io::Write::write_all(&mut file, &bytes).at(&temporary)?;
                        file.sync_all().at(&temporary)?;
                    }
                    publish_local(&root, &temporary, &target)
                })
                .await
            }
            Store::S3 { store, prefix, .. } => {
                store.put(&Store::object_path(prefix, path), PutPayload::from(bytes)).await?;
                Ok(())
            }
        }
    }

    /// A file's bytes, or `None` when there is no such file.
    pub async fn read_if_exists(&self, path: &str) -> Result<Option<Bytes>> {
        match self {
            Store::Local { root, .. } => {
                let target = root.join(path);
                match tokio::fs::read(&target).await {
                    Ok(bytes) => Ok(Some(bytes.into())),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(error) => Err(LakeError::Io { path: target, source: error }),
                }
            }
            Store::S3 { store, prefix, .. } => match store.get(&Store::object_path(prefix, path)).await {
                Ok(found) => Ok(Some(found.bytes().await?)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(error) => Err(error.into()),
            },
        }
    }

    pub async fn exists(&self, path: &str) -> Result<bool> {
        match self {
            Store::Local { root, .. } => {
                let target = root.join(path);
                Ok(tokio::fs::try_exists(&target).await.at(&target)?)
            }
            Store::S3 { store, prefix, .. } => match store.head(&Store::object_path(prefix, path)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(error) => Err(error.into()),
            },
        }
    }

    /// Every file below `dir` (recursively), with paths below the root, sorted.
    pub async fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let mut listed = match self {
            Store::Local { root, .. } => {
                let (root, dir) = (root.clone(), dir.to_string());
                blocking(move || list_local(&root, &dir)).await?
            }
            Store::S3 { store, prefix, .. } => {
                let location = Store::object_path(prefix, dir);
                let strip = if prefix.is_empty() { 0 } else { prefix.len() + 1 };
                store
                    .list(Some(&location))
                    .map_ok(|meta| Listed { path: meta.location.as_ref()[strip..].to_string(), size: meta.size })
                    .try_collect()
                    .await?
            }
        };
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(listed)
    }

    pub async fn read(&self, path: &str) -> Result<Bytes> {
        match self {
            Store::Local { root, .. } => {
                let target = root.join(path);
                Ok(tokio::fs::read(&target).await.at(&target)?.into())
            }
            Store::S3 { store, prefix, .. } => Ok(store.get(&Store::object_path(prefix, path)).await?.bytes().await?),
        }
    }

    /// Deletes a file; one already gone is fine (deletes are repeated after a crash).
    pub async fn delete(&self, path: &str) -> Result<()> {
        match self {
            Store::Local { root, .. } => {
                let target = root.join(path);
                match tokio::fs::remove_file(&target).await {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                    Err(error) => return Err(LakeError::Io { path: target, source: error }),
                }
                let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
                blocking(move || sync_dir(&dir)).await
            }
            Store::S3 { store, prefix, .. } => match store.delete(&Store::object_path(prefix, path)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(error) => Err(error.into()),
            },
        }
    }
}

/// This process's name in a shared spool directory: random, made once and kept in
/// `<state_dir>/spool-id`.
fn spool_id(state_dir: &Path) -> Result<String> {
    use std::hash::{BuildHasher, Hasher};
    let path = state_dir.join("spool-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(LakeError::Io { path, source: error }),
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.write_u32(std::process::id());
    let id = format!("{:016x}", hasher.finish());
    std::fs::create_dir_all(state_dir).at(state_dir)?;
    std::fs::write(&path, &id).at(&path)?;
    Ok(id)
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_string())
}

pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|error| LakeError::Io {
        path: PathBuf::new(),
        source: std::io::Error::other(format!("a blocking task failed: {error}")),
    })?
}

fn publish_local(root: &Path, spool_path: &Path, target: &Path) -> Result<()> {
    let dir = target.parent().unwrap_or(root);
    // Directories made here are synced into their parents, up to the root: a file whose
    // directory entry is lost in a power cut would be lost with it.
    let mut created = Vec::new();
    let mut missing = dir;
    while !missing.exists() && missing != root {
        created.push(missing.to_path_buf());
        missing = missing.parent().unwrap_or(root);
    }
    std::fs::create_dir_all(dir).at(dir)?;
    std::fs::rename(spool_path, target).at(target)?;
    sync_dir(dir)?;
    for made in created {
        if let Some(parent) = made.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

fn list_local(root: &Path, dir: &str) -> Result<Vec<Listed>> {
    let mut out = Vec::new();
    let mut stack = vec![root.join(dir)];
    while let Some(next) = stack.pop() {
        let entries = match std::fs::read_dir(&next) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(LakeError::Io { path: next, source: error }),
        };
        for entry in entries {
            let entry = entry.at(&next)?;
            let file_type = entry.file_type().at(entry.path())?;
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if file_type.is_file() {
                let path = entry.path();
                let Ok(relative) = path.strip_prefix(root) else { continue };
                let Some(relative) = relative.to_str() else { continue };
                let size = entry.metadata().at(&path)?.len();
                out.push(Listed { path: relative.to_string(), size });
            }
            if out.len() > crate::limits::COMPACT_FILES_MAX {
                return Ok(out);
            }
        }
    }
    Ok(out)
}
