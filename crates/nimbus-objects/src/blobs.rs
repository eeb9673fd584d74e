//! Object bytes on disk, content-addressed: `ROOT/ab/abcdef…` named by the hex SHA-256 of
//! the bytes, never by key. A write streams into `ROOT/tmp/` while hashing (SHA-256 and
//! MD5), is fsynced, then renamed into place and the directory fsynced — all before the
//! metadata row that refers to it commits, so an acknowledged object always has its bytes.
//!
//! Blobs are reference-counted in the metadata store, in the same transaction as the rows
//! that refer to them. A blob whose count reaches zero is unlinked right after that commit
//! ([`BlobStore::release`]); a crash between the commit and the unlink, or between writing a
//! blob and committing its row, leaves an unreferenced file that [`BlobStore::sweep`]
//! removes at the next start. Nothing referenced is ever removed: `release` re-checks the
//! count under the pin lock, and a write pins its hash from before its rename until after
//! its commit.
//!
//! In cluster mode ([`BlobStore::with_shared`]) the bytes are also in a store every node
//! shares ([`nimbus_blobs::SharedBlobs`], namespace `objects`) and the local files are a
//! cache by hash: [`BlobStore::place`] uploads the blob before the write's commit (so an
//! acknowledged object's bytes are readable from every node), and [`BlobStore::open_file`]
//! fetches a blob this node lacks (streamed into `tmp/`, verified, renamed into place).
//! A released blob is deleted from the shared store too, but only once no node has put or
//! touched it for the grace period ([`nimbus_blobs::DEFAULT_GRACE`]): a node writing the
//! same bytes, or copying an object, puts or touches the blob before it commits the row
//! naming it. What is still young then goes in a later [`BlobStore::sweep_shared`].

use crate::{ObjectError, Result};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use md5::Md5;
use nimbus_blobs::{BlobsError, Namespace, SharedBlobs, Swept};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Read chunk size when streaming a blob out.
const READ_CHUNK: usize = 256 * 1024;

/// The hashes and size of written bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub sha256: String,
    pub md5: [u8; 16],
    pub size: u64,
    /// The digest of the additional checksum asked for ([`BlobStore::stage_with`]).
    pub checksum: Option<Vec<u8>>,
}

impl Digests {
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }
}

type Pins = Arc<Mutex<HashMap<String, usize>>>;

fn lock(pins: &Pins) -> MutexGuard<'_, HashMap<String, usize>> {
    pins.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keeps a blob from being unlinked while held.
#[derive(Debug)]
pub struct Pin {
    pins: Pins,
    sha256: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut pins = lock(&self.pins);
        if let Some(n) = pins.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.sha256);
            }
        }
    }
}

/// Bytes written and fsynced under `tmp/`, not yet in place; removed if dropped.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    pub digests: Digests,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The blob directory.
#[derive(Debug)]
pub struct BlobStore {
    root: PathBuf,
    pins: Pins,
    shared: Option<Shared>,
}

/// The store the nodes of a cluster share, and how long an unreferenced blob stays in it.
#[derive(Debug)]
struct Shared {
    blobs: Arc<dyn SharedBlobs>,
    grace: Duration,
}

/// A failure of the shared store as the object store's error.
fn shared_error(e: BlobsError) -> ObjectError {
    match e {
        BlobsError::Io { context, source } => ObjectError::Io { context, source },
        BlobsError::HashMismatch { .. } => ObjectError::Corrupt(e.to_string()),
        e => ObjectError::Database(e.to_string()),
    }
}

impl BlobStore {
    /// Opens (creating) `root`, with `root/tmp` emptied of leftovers.
    pub fn open(root: &Path) -> Result<Self> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(ObjectError::io(format!("creating {}", tmp.display())))?;
        for entry in std::fs::read_dir(&tmp)
            .map_err(ObjectError::io(format!("reading {}", tmp.display())))?
            .flatten()
        {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Self {
            root: root.to_path_buf(),
            pins: Arc::default(),
            shared: None,
        })
    }

    /// Shares the bytes with the other nodes of a cluster through `blobs` (see the
    /// module's documentation); the local files become a cache.
    pub fn with_shared(mut self, blobs: Arc<dyn SharedBlobs>) -> Self {
        self.shared = Some(Shared {
            blobs,
            grace: nimbus_blobs::DEFAULT_GRACE,
        });
        self
    }

    /// How long a blob no row names stays in the shared store after it was last put or
    /// touched (default [`nimbus_blobs::DEFAULT_GRACE`]); no effect without one.
    pub fn with_shared_grace(mut self, grace: Duration) -> Self {
        if let Some(s) = self.shared.as_mut() {
            s.grace = grace;
        }
        self
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[..2]).join(sha256)
    }

    /// Streams `body` into a temporary file, hashing it; fails with `EntityTooLarge` past
    /// `max_bytes` (without reading further) and fsyncs the file.
    pub async fn stage<S, E>(&self, body: S, max_bytes: u64) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        self.stage_with(body, max_bytes, None).await
    }

    /// [`BlobStore::stage`], also computing `checksum` ([`Digests::checksum`]).
    pub(crate) async fn stage_with<S, E>(
        &self,
        body: S,
        max_bytes: u64,
        mut checksum: Option<crate::checksum::Hasher>,
    ) -> Result<Staged>
    where
        S: Stream<Item = std::result::Result<Bytes, E>>,
        E: std::fmt::Display,
    {
        let path = self
            .root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let mut file = tokio::fs::File::create(&path)
            .await
            .map_err(ObjectError::io(format!("creating {}", path.display())))?;
        // From here on, an error drops `staged` and so removes the file.
        let mut staged = Staged {
            path,
            digests: Digests {
                sha256: String::new(),
                md5: [0; 16],
                size: 0,
                checksum: None,
            },
        };
        let (mut sha, mut md5) = (Sha256::new(), Md5::new());
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| ObjectError::Body(e.to_string()))?;
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(ObjectError::EntityTooLarge { limit: max_bytes });
            }
            sha.update(&chunk);
            md5.update(&chunk);
            if let Some(c) = checksum.as_mut() {
                c.update(&chunk);
            }
            file.write_all(&chunk)
                .await
                .map_err(ObjectError::io(format!(
                    "writing {}",
                    staged.path.display()
                )))?;
        }
        file.sync_all().await.map_err(ObjectError::io(format!(
            "syncing {}",
            staged.path.display()
        )))?;
        staged.digests = Digests {
            sha256: hex::encode(sha.finalize()),
            md5: md5.finalize().into(),
            size,
            checksum: checksum.map(|c| c.finalize()),
        };
        Ok(staged)
    }

    /// Pins `sha256` (see [`Pin`]).
    pub fn pin(&self, sha256: &str) -> Pin {
        *lock(&self.pins).entry(sha256.to_string()).or_insert(0) += 1;
        Pin {
            pins: self.pins.clone(),
            sha256: sha256.to_string(),
        }
    }

    /// Moves staged bytes into place (or drops them if the same bytes are already there)
    /// and makes the rename durable. Hold the returned pin until the row that refers to the
    /// blob has committed.
    pub fn place(&self, staged: Staged) -> Result<Pin> {
        let sha = staged.digests.sha256.clone();
        let pin = self.pin(&sha);
        let dest = self.path(&sha);
        let dir = dest.parent().expect("blob path has a parent").to_path_buf();
        if !dir.exists() {
            std::fs::create_dir_all(&dir)
                .map_err(ObjectError::io(format!("creating {}", dir.display())))?;
            sync_dir(&self.root)?;
        }
        if !dest.exists() {
            std::fs::rename(&staged.path, &dest)
                .map_err(ObjectError::io(format!("renaming into {}", dest.display())))?;
            sync_dir(&dir)?;
        }
        // Even when this node had the bytes: the shared copy may have been collected, and
        // a put of a stored blob marks it as just used.
        if let Some(shared) = &self.shared {
            shared
                .blobs
                .put_file(Namespace::Objects, &sha, &dest)
                .map_err(shared_error)?;
        }
        Ok(pin)
    }

    /// Whether the bytes are shared with other nodes ([`BlobStore::with_shared`]).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Marks a blob a new row is about to name without writing it (a copy) as just used in
    /// the shared store, uploading it from this node when the shared store lacks it. Hold a
    /// pin on it, and commit the row within the grace period.
    pub fn retain(&self, sha256: &str) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        if shared
            .blobs
            .touch(Namespace::Objects, sha256)
            .map_err(shared_error)?
        {
            return Ok(());
        }
        let path = self.path(sha256);
        if !path.is_file() {
            return Err(ObjectError::Corrupt(format!(
                "blob {sha256} is neither on this node nor in the shared store"
            )));
        }
        shared
            .blobs
            .put_file(Namespace::Objects, sha256, &path)
            .map_err(shared_error)?;
        Ok(())
    }

    /// Opens a blob for reading; in cluster mode a blob this node lacks is fetched from the
    /// shared store first. Blocking (the fetch streams the whole blob to disk). Hold a pin
    /// on it while calling.
    pub fn open_file(&self, sha256: &str) -> std::io::Result<std::fs::File> {
        let path = self.path(sha256);
        match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => return other,
        }
        let Some(shared) = &self.shared else {
            return Err(std::io::ErrorKind::NotFound.into());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match shared
            .blobs
            .fetch(Namespace::Objects, sha256, &self.root.join("tmp"), &path)
        {
            Ok(size) => {
                tracing::debug!(blob = %sha256, size, "fetched object bytes from the shared store");
                std::fs::File::open(&path)
            }
            Err(e) if e.is_not_found() => Err(std::io::ErrorKind::NotFound.into()),
            Err(BlobsError::Io { source, .. }) => Err(source),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        }
    }

    /// Unlinks blobs no row refers to any more, unless pinned or referenced again by the
    /// time the pin lock is held (`referenced` asks the metadata store).
    pub fn release(&self, released: &[String], referenced: impl Fn(&str) -> Result<bool>) {
        if released.is_empty() {
            return;
        }
        let pins = lock(&self.pins);
        for sha in released {
            if pins.contains_key(sha) {
                continue;
            }
            match referenced(sha) {
                Ok(false) => {
                    match std::fs::remove_file(self.path(sha)) {
                        Ok(()) => {}
                        // Never fetched to this node (cluster mode).
                        Err(e)
                            if e.kind() == std::io::ErrorKind::NotFound
                                && self.shared.is_some() => {}
                        Err(e) => {
                            tracing::warn!(blob = %sha, error = %e, "cannot remove an unreferenced blob")
                        }
                    }
                    if let Some(shared) = &self.shared {
                        // Young (just written, maybe by another node for a row about to
                        // commit): left for a later sweep.
                        if let Err(e) =
                            shared
                                .blobs
                                .delete_if_idle(Namespace::Objects, sha, shared.grace)
                        {
                            tracing::warn!(blob = %sha, error = %e, "cannot delete an unreferenced blob from the shared store; a later sweep does");
                        }
                    }
                }
                Ok(true) => {}
                Err(e) => {
                    tracing::warn!(blob = %sha, error = %e, "cannot check a blob's references; kept until the next sweep");
                }
            }
        }
    }

    /// Removes every blob file not in `referenced` (run at start, before any write).
    /// Returns how many were removed.
    pub fn sweep(&self, referenced: &HashSet<String>) -> Result<usize> {
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.root)
            .map_err(ObjectError::io(format!("reading {}", self.root.display())))?;
        for dir in entries.flatten() {
            let name = dir.file_name();
            if name == "tmp" || !dir.path().is_dir() {
                continue;
            }
            for blob in std::fs::read_dir(dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let sha = blob.file_name().to_string_lossy().into_owned();
                if !referenced.contains(&sha) && std::fs::remove_file(blob.path()).is_ok() {
                    removed += 1;
                }
            }
        }
        if self.shared.is_some() {
            let swept = self.sweep_shared(referenced)?;
            if swept.deleted > 0 || swept.abandoned_uploads > 0 {
                tracing::info!(
                    deleted = swept.deleted,
                    bytes = swept.deleted_bytes,
                    abandoned_uploads = swept.abandoned_uploads,
                    "removed unreferenced object blobs from the shared store"
                );
            }
        }
        Ok(removed)
    }

    /// Deletes from the shared store the blobs not in `referenced` (the metadata's
    /// references, read before the call) that nobody put or touched within the grace
    /// period, and the leftovers of uploads abandoned by nodes that died. Nothing to do
    /// without a shared store. Run it now and then (the server does hourly).
    pub fn sweep_shared(&self, referenced: &HashSet<String>) -> Result<Swept> {
        let Some(shared) = &self.shared else {
            return Ok(Swept::default());
        };
        shared
            .blobs
            .delete_unreferenced(Namespace::Objects, shared.grace, &|sha| {
                referenced.contains(sha)
            })
            .map_err(shared_error)
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ObjectError::io(format!("syncing {}", dir.display())))
}

/// Streams `len` bytes of `file` from `offset`.
pub fn file_stream(
    file: std::fs::File,
    offset: u64,
    len: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static {
    let state = (tokio::fs::File::from_std(file), offset, len, false);
    futures_util::stream::unfold(state, |(mut file, offset, left, started)| async move {
        if left == 0 {
            return None;
        }
        if !started {
            if let Err(e) =
                tokio::io::AsyncSeekExt::seek(&mut file, std::io::SeekFrom::Start(offset)).await
            {
                return Some((Err(e), (file, offset, 0, true)));
            }
        }
        let want = left.min(READ_CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        match file.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob shorter than its recorded size",
                )),
                (file, offset, 0, true),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf.freeze()), (file, offset, left - n as u64, true)))
            }
            Err(e) => Some((Err(e), (file, offset, 0, true))),
        }
    })
}

#[cfg(test)]
#[path = "blobs_shared_tests.rs"]
mod shared_tests;
