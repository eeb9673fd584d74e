//! Content-addressed code packages.
//!
//! Layout under the root (the server uses `DATA_DIR/code`):
//!
//! ```text
//! blobs/<sha256 hex>.zip     the package exactly as uploaded (the source of truth)
//! unpacked/<sha256 hex>/     the package extracted, what instances run from
//! opt/<opt key>/             the layers of a function merged in order (its `/opt`),
//!                            named by [`opt_key`] of the ordered layer packages
//! tmp/                       work area for atomic writes (same file system)
//! ```
//!
//! Layers are packages like any other (`blobs/` and `unpacked/`); a merged `opt/` tree is
//! derived from them (hard links where the file system allows, else copies), built once
//! and collected like a package when no registry row or running instance names its key.
//!
//! Both the blob and the unpacked directory appear atomically (written under `tmp/`, synced,
//! then renamed). An unpacked directory exists only for a package that extracted cleanly; if it
//! goes missing it is re-extracted from the blob.
//!
//! Garbage collection ([`CodeStore::collect`]) removes the blob and the unpacked directory of
//! every package nothing needs any more. What is needed is read under the collector's lock:
//! the packages the registry names and the ones running instances were started from (both
//! given by the caller, [`LiveCode`]), and the packages pinned by a deploy in flight
//! ([`CodePin`]). A deploy pins its package before it looks for or writes the blob and keeps
//! the pin until the registry row naming the package is committed, so a collection never
//! removes a package between the upload and the commit: either it runs before the pin (and
//! the deploy then writes the files again) or it sees the pin or, once the pin is gone, the
//! committed row. Removal renames the entries into `tmp/gc-*` under the lock (instant) and
//! deletes them after it; `gc-*` leftovers of a crash are removed on open.
//!
//! In cluster mode ([`CodeStore::with_shared`]) the packages are also in a store every node
//! shares ([`nimbus_blobs::SharedBlobs`], namespace `code`), and the local files are a cache
//! by hash: [`CodeStore::put`] uploads the package before it returns (so the registry row
//! committed after it names a package every node can fetch), and whatever needs a package
//! that is not on this disk ([`CodeStore::dir`], [`CodeStore::zip_bytes`],
//! [`CodeStore::contains`], …) fetches its blob first. A collection also deletes from the
//! shared store the packages that no registry row (cluster-wide: the registry is in the
//! same database), no local instance and no local deploy needs, once they have gone
//! unused for the grace period ([`nimbus_blobs::DEFAULT_GRACE`]): a deploy on another node
//! uploads (or touches) its package before it commits the row naming it, well within that
//! time.

use crate::{Result, StoreError};
use base64::Engine as _;
use nimbus_blobs::{BlobsError, Namespace, SharedBlobs};
use nimbus_core::Limits;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use zip::HasZipMetadata as _;

/// Most entries a package may have.
pub const MAX_ENTRIES: usize = 100_000;
/// Longest symlink target accepted in a package.
const MAX_LINK_TARGET: u64 = 4096;
/// Temp entries older than this are leftovers of a crash and are removed on open.
const STALE_TMP: Duration = Duration::from_secs(3600);

const S_IFMT: u32 = 0o170_000;
const S_IFLNK: u32 = 0o120_000;
/// `System::Unix` in the zip "version made by" field.
const ZIP_SYSTEM_UNIX: u8 = 3;

/// Identity of a stored code package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeInfo {
    /// Hex SHA-256 of the zip: the content address.
    pub sha256: String,
    /// Size of the zip in bytes.
    pub size: u64,
    /// Base64 of the raw SHA-256, what Lambda reports as `CodeSha256`.
    pub sha256_b64: String,
}

impl CodeInfo {
    /// Hashes `zip` (no validation).
    pub fn of(zip: &[u8]) -> Self {
        let digest = Sha256::digest(zip);
        Self {
            sha256: hex::encode(digest),
            size: zip.len() as u64,
            sha256_b64: base64::engine::general_purpose::STANDARD.encode(digest),
        }
    }
}

/// Limits applied while extracting a package.
#[derive(Debug, Clone, Copy)]
struct ExtractLimits {
    max_bytes: u64,
    max_entries: usize,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_bytes: Limits::CODE_UNZIPPED_MAX,
            max_entries: MAX_ENTRIES,
        }
    }
}

/// Code packages on disk, addressed by the SHA-256 of their zip. Safe to share between threads
/// (clones share the pins and the collector's lock).
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
    limits: ExtractLimits,
    pins: Arc<Pins>,
    shared: Option<Shared>,
}

/// The store the nodes of a cluster share, and how long an unreferenced package stays in it.
#[derive(Debug, Clone)]
struct Shared {
    blobs: Arc<dyn SharedBlobs>,
    grace: Duration,
}

/// Packages held by deploys in flight, with how many hold each (two requests may deploy the
/// same bytes at once). Its mutex is also the collector's lock.
#[derive(Debug, Default)]
struct Pins(Mutex<HashMap<String, usize>>);

impl Pins {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        // A panic while holding the lock leaves the counts consistent (each update is one
        // map operation), so a poisoned lock is used as is.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Holds a package against garbage collection until dropped. A deploy takes it before it
/// looks for or writes the package ([`CodeStore::put`], [`CodeStore::pin`]) and drops it
/// after the registry row naming the package is committed (or the deploy failed).
#[derive(Debug)]
pub struct CodePin {
    pins: Arc<Pins>,
    sha256: String,
}

impl CodePin {
    /// The pinned package's hex SHA-256.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

impl Drop for CodePin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock();
        if let Some(n) = pins.get_mut(&self.sha256) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.sha256);
            }
        }
    }
}

/// A package just stored, pinned until the caller has committed the registry row naming it.
#[derive(Debug)]
pub struct PinnedCode {
    pub info: CodeInfo,
    pub pin: CodePin,
}

/// What a collection must keep, read under the collector's lock.
#[derive(Debug, Clone, Default)]
pub struct LiveCode {
    /// Packages the registry names (see [`crate::Store::code_references`]).
    pub referenced: HashSet<String>,
    /// Packages running (or starting) instances were started from: their directory must not
    /// disappear under them even after their function was deleted.
    pub running: HashSet<String>,
}

/// What one [`CodeStore::collect`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Blobs (`blobs/<sha>.zip`) removed.
    pub removed_blobs: usize,
    /// Unpacked directories removed.
    pub removed_trees: usize,
    /// Bytes of the removed files.
    pub removed_bytes: u64,
    /// Packages left on disk.
    pub kept: usize,
    /// Of those, packages no registry row names that were kept for a running instance:
    /// collect again once it has stopped.
    pub held_by_instances: usize,
    /// Of those, packages no registry row names that were kept for a deploy in flight.
    pub pinned: usize,
    /// Packages deleted from the store the nodes share (cluster mode).
    pub removed_shared: usize,
}

impl CollectReport {
    /// Whether unreferenced packages were kept (for a running instance or a deploy in
    /// flight): a later collection may remove them.
    pub fn kept_unreferenced(&self) -> bool {
        self.held_by_instances > 0 || self.pinned > 0
    }
}

/// The name of the merged `/opt` tree of a function whose layers are the packages `layers`
/// (hex SHA-256 of their zips), in order: a content address of the ordered list.
pub fn opt_key<'a>(layers: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    h.update(b"nimbus-opt-v1");
    for sha in layers {
        h.update(b"\n");
        h.update(sha.to_ascii_lowercase().as_bytes());
    }
    hex::encode(h.finalize())
}

impl CodeStore {
    /// Opens (creating if needed) the store under `root` and removes stale temp files.
    pub fn open(root: &Path) -> Result<Self> {
        let store = Self {
            root: root.to_path_buf(),
            limits: ExtractLimits::default(),
            pins: Arc::default(),
            shared: None,
        };
        for dir in [store.blobs(), store.unpacked(), store.opt(), store.tmp()] {
            fs::create_dir_all(&dir).map_err(|e| io_ctx(e, "creating", &dir))?;
        }
        store.remove_stale_tmp();
        Ok(store)
    }

    /// Shares the packages with the other nodes of a cluster through `blobs` (see the
    /// module's documentation); the local files become a cache.
    pub fn with_shared(mut self, blobs: Arc<dyn SharedBlobs>) -> Self {
        self.shared = Some(Shared {
            blobs,
            grace: nimbus_blobs::DEFAULT_GRACE,
        });
        self
    }

    /// How long a package no registry row names stays in the shared store after it was
    /// last uploaded (default [`nimbus_blobs::DEFAULT_GRACE`]); no effect without one.
    pub fn with_shared_grace(mut self, grace: Duration) -> Self {
        if let Some(s) = self.shared.as_mut() {
            s.grace = grace;
        }
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Validates, stores and extracts a zipped code package, pinned against garbage
    /// collection until the returned [`PinnedCode`]'s pin is dropped: keep it until the
    /// registry row naming the package is committed. Idempotent: storing the same bytes again
    /// returns the same [`CodeInfo`] without touching the disk.
    pub fn put(&self, zip: &[u8]) -> Result<PinnedCode> {
        if zip.len() as u64 > Limits::CODE_ZIPPED_MAX {
            return Err(StoreError::InvalidPackage(format!(
                "the zip is {} bytes, the limit is {} bytes ({}): leave out build caches, tests \
                 and development dependencies",
                zip.len(),
                Limits::CODE_ZIPPED_MAX,
                mib(Limits::CODE_ZIPPED_MAX)
            )));
        }
        let info = CodeInfo::of(zip);
        // Pinned before looking: a collection either finished before (and the files are
        // written again below) or sees the pin.
        let pin = self.pin_hash(&info.sha256);
        if !(self.blob_path(&info.sha256).is_file()
            && is_real_dir(&self.unpacked_path(&info.sha256)))
        {
            self.materialize(&info.sha256, zip, true)?;
            tracing::debug!(sha256 = %info.sha256, size = info.size, "stored code package");
        }
        // Validated (extracted) first: only a good package reaches the other nodes. Put even
        // when this node had it: the shared copy may have been collected meanwhile, and a put
        // of a stored blob marks it as just used.
        if let Some(shared) = &self.shared {
            shared
                .blobs
                .put_reader(Namespace::Code, &info.sha256, &mut &zip[..])
                .map_err(|e| shared_error(e, &info.sha256))?;
        }
        Ok(PinnedCode { info, pin })
    }

    /// [`CodeStore::put`] without keeping the pin, for callers that commit no registry row
    /// naming the package (a collection may remove it at any time).
    pub fn put_zip(&self, zip: &[u8]) -> Result<CodeInfo> {
        self.put(zip).map(|p| p.info)
    }

    /// Pins a package that is already stored (a deploy that keeps the current code) against
    /// garbage collection; take it before reading the package. Whether the package exists is
    /// not checked here.
    pub fn pin(&self, sha256_hex: &str) -> Result<CodePin> {
        let sha = validate_sha(sha256_hex)?;
        Ok(self.pin_hash(&sha))
    }

    fn pin_hash(&self, sha: &str) -> CodePin {
        *self.pins.lock().entry(sha.to_string()).or_insert(0) += 1;
        CodePin {
            pins: self.pins.clone(),
            sha256: sha.to_string(),
        }
    }

    /// The package whose unpacked directory is `dir` (as returned by [`CodeStore::dir`]),
    /// `None` for any other path.
    /// Also the key of a merged `/opt` tree ([`CodeStore::opt_dir`]).
    pub fn package_of(&self, dir: &Path) -> Option<String> {
        let parent = dir.parent()?;
        if parent != self.unpacked() && parent != self.opt() {
            return None;
        }
        validate_sha(dir.file_name()?.to_str()?).ok()
    }

    /// Bytes of the extracted files of the package `sha256_hex` (re-extracted if missing).
    pub fn unzipped_size(&self, sha256_hex: &str) -> Result<u64> {
        Ok(tree_bytes(&self.dir(sha256_hex)?))
    }

    /// The merged `/opt` tree of the packages `layers` (hex SHA-256s), in order: every
    /// layer's files, a later layer's replacing an earlier one's at the same path. Built
    /// once (under `tmp/`, then renamed into `opt/<key>`), then reused; hold the layers'
    /// pins or registry rows while calling. Blocking file system work.
    pub fn opt_dir(&self, layers: &[String]) -> Result<PathBuf> {
        let key = opt_key(layers.iter().map(String::as_str));
        let dest = self.opt().join(&key);
        if is_real_dir(&dest) {
            return Ok(dest);
        }
        let tmp = TempPath::new(self.tmp().join(format!("{}.opt", uuid::Uuid::new_v4())));
        fs::create_dir(tmp.path()).map_err(|e| io_ctx(e, "creating", tmp.path()))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| io_ctx(e, "setting the mode of", tmp.path()))?;
        for sha in layers {
            let src = self.dir(sha)?;
            merge_tree(&src, tmp.path())?;
        }
        sync_dir(tmp.path())?;
        match fs::rename(tmp.path(), &dest) {
            Ok(()) => {
                tmp.keep();
                sync_dir(&self.opt())?;
            }
            // Built by another thread meanwhile; ours is removed on drop.
            Err(_) if is_real_dir(&dest) => {}
            Err(e) => return Err(io_ctx(e, "renaming into", &dest)),
        }
        tracing::debug!(key = %key, layers = layers.len(), "built merged /opt tree");
        Ok(dest)
    }

    /// Removes the blob and unpacked directory of every package that `live` (called under
    /// the collector's lock) does not list and no deploy has pinned. Entries whose names are
    /// not content addresses are left alone. Blocking file system work: run it off async
    /// workers. An error from `live` removes nothing.
    pub fn collect(&self, live: impl FnOnce() -> Result<LiveCode>) -> Result<CollectReport> {
        let mut report = CollectReport::default();
        let mut doomed: Vec<(String, &'static str, PathBuf)> = Vec::new();
        // What the shared store must keep, as read under the lock.
        let mut keep: HashSet<String> = HashSet::new();
        {
            let pins = self.pins.lock();
            let live = live()?;
            if self.shared.is_some() {
                keep.extend(live.referenced.iter().cloned());
                keep.extend(live.running.iter().cloned());
                keep.extend(pins.keys().cloned());
            }
            let mut packages: HashSet<String> = HashSet::new();
            let mut blobs: HashSet<String> = HashSet::new();
            for name in list_names(&self.blobs())? {
                if let Some(sha) = name.strip_suffix(".zip").filter(|s| is_address(s)) {
                    blobs.insert(sha.to_string());
                    packages.insert(sha.to_string());
                }
            }
            let mut trees: HashSet<String> = HashSet::new();
            for name in list_names(&self.unpacked())? {
                if is_address(&name) {
                    packages.insert(name.clone());
                    trees.insert(name);
                }
            }
            let mut merged: HashSet<String> = HashSet::new();
            for name in list_names(&self.opt())? {
                if is_address(&name) {
                    packages.insert(name.clone());
                    merged.insert(name);
                }
            }
            for sha in packages {
                if live.referenced.contains(&sha) {
                    report.kept += 1;
                    continue;
                }
                if live.running.contains(&sha) {
                    report.kept += 1;
                    report.held_by_instances += 1;
                    continue;
                }
                if pins.contains_key(&sha) {
                    report.kept += 1;
                    report.pinned += 1;
                    continue;
                }
                let id = uuid::Uuid::new_v4();
                if blobs.contains(&sha) {
                    let to = self.tmp().join(format!("gc-{id}.zip"));
                    if self.move_out(&self.blob_path(&sha), &to) {
                        doomed.push((sha.clone(), "blob", to));
                    }
                }
                if trees.contains(&sha) {
                    let to = self.tmp().join(format!("gc-{id}.d"));
                    if self.move_out(&self.unpacked_path(&sha), &to) {
                        doomed.push((sha.clone(), "unpacked directory", to));
                    }
                }
                if merged.contains(&sha) {
                    let to = self.tmp().join(format!("gc-{id}.opt"));
                    if self.move_out(&self.opt().join(&sha), &to) {
                        doomed.push((sha, "merged /opt tree", to));
                    }
                }
            }
        }
        for (sha, what, path) in doomed {
            let bytes = tree_bytes(&path);
            remove_any(&path);
            tracing::debug!(sha256 = %sha, what, bytes, "removed unreferenced code");
            if what == "blob" {
                report.removed_blobs += 1;
            } else {
                report.removed_trees += 1;
            }
            report.removed_bytes += bytes;
        }
        if let Some(shared) = &self.shared {
            // Outside the lock (deploys need it to pin): a package referenced after `keep`
            // was read was uploaded or touched since, so it is not idle.
            match shared
                .blobs
                .delete_unreferenced(Namespace::Code, shared.grace, &|sha| keep.contains(sha))
            {
                Ok(swept) => {
                    report.removed_shared = swept.deleted;
                    if swept.deleted > 0 || swept.abandoned_uploads > 0 {
                        tracing::info!(
                            deleted = swept.deleted,
                            bytes = swept.deleted_bytes,
                            abandoned_uploads = swept.abandoned_uploads,
                            "removed unreferenced code packages from the shared store"
                        );
                    }
                }
                Err(e) => tracing::warn!(error = %e,
                    "cannot collect the shared code packages; the next collection tries again"),
            }
        }
        Ok(report)
    }

    /// Renames `from` to `to` (in `tmp/`); false (with a warning unless it is gone) if it
    /// cannot be.
    fn move_out(&self, from: &Path, to: &Path) -> bool {
        match fs::rename(from, to) {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                tracing::warn!(path = %from.display(), error = %e, "cannot remove unreferenced code");
                false
            }
        }
    }

    /// The unpacked directory of the package `sha256_hex`, re-extracted from its blob if missing.
    pub fn dir(&self, sha256_hex: &str) -> Result<PathBuf> {
        let sha = validate_sha(sha256_hex)?;
        let dir = self.unpacked_path(&sha);
        if is_real_dir(&dir) {
            return Ok(dir);
        }
        let zip = self.zip_bytes(&sha)?;
        let actual = CodeInfo::of(&zip).sha256;
        if actual != sha {
            return Err(StoreError::Corrupt(format!(
                "code blob {} has sha256 {actual}: the file is damaged; deploy the function again",
                self.blob_path(&sha).display()
            )));
        }
        tracing::info!(sha256 = %sha, "re-extracting code package from its blob");
        self.materialize(&sha, &zip, false)?;
        Ok(dir)
    }

    /// The zip bytes of the package `sha256_hex`, exactly as uploaded (fetched from the
    /// shared store first when this node lacks it).
    pub fn zip_bytes(&self, sha256_hex: &str) -> Result<Vec<u8>> {
        let sha = validate_sha(sha256_hex)?;
        let path = self.blob_path(&sha);
        match fs::read(&path) {
            Ok(bytes) => return Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_ctx(e, "reading", &path)),
        }
        self.fetch(&sha)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(not_found(&sha)),
            Err(e) => Err(io_ctx(e, "reading", &path)),
        }
    }

    /// Whether the blob of `sha256_hex` is stored (on this node, or in the shared store,
    /// from which it is then fetched).
    pub fn contains(&self, sha256_hex: &str) -> bool {
        let Ok(sha) = validate_sha(sha256_hex) else {
            return false;
        };
        if self.blob_path(&sha).is_file() {
            return true;
        }
        match self.fetch(&sha) {
            Ok(()) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => {
                tracing::warn!(sha256 = %sha, error = %e, "cannot fetch a code package from the shared store");
                false
            }
        }
    }

    /// Fetches the blob of `sha` from the shared store into `blobs/` (not found without one).
    fn fetch(&self, sha: &str) -> Result<()> {
        let Some(shared) = &self.shared else {
            return Err(not_found(sha));
        };
        let size = shared
            .blobs
            .fetch(Namespace::Code, sha, &self.tmp(), &self.blob_path(sha))
            .map_err(|e| shared_error(e, sha))?;
        tracing::info!(sha256 = %sha, size, "fetched code package from the shared store");
        Ok(())
    }

    /// Extracts `zip` into `unpacked/<sha>` (and writes the blob when `write_blob`), atomically.
    fn materialize(&self, sha: &str, zip: &[u8], write_blob: bool) -> Result<()> {
        let tmp = TempPath::new(self.tmp().join(format!("{}.d", uuid::Uuid::new_v4())));
        fs::create_dir(tmp.path()).map_err(|e| io_ctx(e, "creating", tmp.path()))?;
        extract(zip, tmp.path(), self.limits)?;
        sync_dir(tmp.path())?;

        if write_blob {
            let blob = self.blob_path(sha);
            if !blob.is_file() {
                let tmp_blob =
                    TempPath::new(self.tmp().join(format!("{}.zip", uuid::Uuid::new_v4())));
                write_synced(tmp_blob.path(), zip)?;
                fs::rename(tmp_blob.path(), &blob)
                    .map_err(|e| io_ctx(e, "renaming into", &blob))?;
                tmp_blob.keep();
                sync_dir(&self.blobs())?;
            }
        }

        let dest = self.unpacked_path(sha);
        match fs::rename(tmp.path(), &dest) {
            Ok(()) => {
                tmp.keep();
                sync_dir(&self.unpacked())?;
            }
            // Another thread extracted the same package first; ours is removed on drop.
            Err(_) if is_real_dir(&dest) => {}
            Err(e) => return Err(io_ctx(e, "renaming into", &dest)),
        }
        Ok(())
    }

    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.tmp()) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            // `gc-*`: packages a collection had moved out when the server stopped.
            let collected = entry.file_name().to_string_lossy().starts_with("gc-");
            let stale = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).unwrap_or_default() > STALE_TMP);
            if collected || stale {
                tracing::debug!(path = %entry.path().display(), "removing stale temp entry");
                remove_any(&entry.path());
            }
        }
    }

    fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    fn unpacked(&self) -> PathBuf {
        self.root.join("unpacked")
    }
    fn opt(&self) -> PathBuf {
        self.root.join("opt")
    }
    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    fn blob_path(&self, sha: &str) -> PathBuf {
        self.blobs().join(format!("{sha}.zip"))
    }
    fn unpacked_path(&self, sha: &str) -> PathBuf {
        self.unpacked().join(sha)
    }
}

fn not_found(sha: &str) -> StoreError {
    StoreError::NotFound(format!("code package not found: {sha}"))
}

/// A failure of the shared store about the package `sha`, as the store's error.
fn shared_error(e: BlobsError, sha: &str) -> StoreError {
    match e {
        BlobsError::NotFound { .. } | BlobsError::InvalidHash(_) => not_found(sha),
        BlobsError::Pg(e) => StoreError::Postgres(e),
        BlobsError::HashMismatch { .. } => StoreError::Corrupt(e.to_string()),
        BlobsError::Io { source, context } => StoreError::Io(io::Error::new(
            source.kind(),
            format!("{context}: {source}"),
        )),
        other @ BlobsError::Abandoned { .. } => StoreError::Io(io::Error::other(other.to_string())),
    }
}

/// Accepts exactly 64 hex digits (either case), returns them lowercase. Anything else cannot be
/// a content address (and could be a path), so it is reported as not found.
fn validate_sha(s: &str) -> Result<String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(StoreError::NotFound(format!(
            "code package not found: {s:?} is not a sha-256 hex digest"
        )))
    }
}

/// Whether `s` is a content address as the store writes it (64 lowercase hex digits).
fn is_address(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The names in `dir` (those that are not UTF-8 cannot be content addresses and are skipped).
fn list_names(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).map_err(|e| io_ctx(e, "listing", dir))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_ctx(e, "listing", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            out.push(name);
        }
    }
    Ok(out)
}

/// Bytes of the files under `p` (or of `p` itself), not following symlinks; for the logs.
fn tree_bytes(p: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(p) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(p).map_or(0, |entries| {
        entries.flatten().map(|e| tree_bytes(&e.path())).sum()
    })
}

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes / (1024 * 1024))
}

fn io_ctx(e: io::Error, what: &str, path: &Path) -> StoreError {
    StoreError::Io(io::Error::new(
        e.kind(),
        format!("{what} {}: {e}", path.display()),
    ))
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

fn remove_any(p: &Path) {
    let res = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => Ok(()),
    };
    if let Err(e) = res {
        tracing::warn!(path = %p.display(), error = %e, "could not remove temp entry");
    }
}

/// Merges the tree `src` into `dest`: directories are merged, anything else replaces what
/// `dest` has at its path. Files are hard-linked (read-only for everyone, as packages are
/// never written), copied when the file system refuses links; symlinks are recreated.
fn merge_tree(src: &Path, dest: &Path) -> Result<()> {
    let entries = fs::read_dir(src).map_err(|e| io_ctx(e, "listing", src))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_ctx(e, "listing", src))?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        let meta = fs::symlink_metadata(&from).map_err(|e| io_ctx(e, "reading", &from))?;
        let existing = fs::symlink_metadata(&to).ok();
        if meta.is_dir() {
            if !existing.as_ref().is_some_and(|m| m.is_dir()) {
                if existing.is_some() {
                    remove_any(&to);
                }
                fs::create_dir(&to).map_err(|e| io_ctx(e, "creating", &to))?;
                fs::set_permissions(
                    &to,
                    fs::Permissions::from_mode(meta.permissions().mode() & 0o7777 | 0o555),
                )
                .map_err(|e| io_ctx(e, "setting the mode of", &to))?;
            }
            merge_tree(&from, &to)?;
            continue;
        }
        if existing.is_some() {
            if existing.as_ref().is_some_and(|m| m.is_dir()) {
                fs::remove_dir_all(&to).map_err(|e| io_ctx(e, "replacing", &to))?;
            } else {
                fs::remove_file(&to).map_err(|e| io_ctx(e, "replacing", &to))?;
            }
        }
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&from).map_err(|e| io_ctx(e, "reading", &from))?;
            std::os::unix::fs::symlink(&target, &to).map_err(|e| io_ctx(e, "creating", &to))?;
        } else if fs::hard_link(&from, &to).is_err() {
            fs::copy(&from, &to).map_err(|e| io_ctx(e, "copying into", &to))?;
        }
    }
    Ok(())
}

/// A temp file or directory removed on drop unless [`TempPath::keep`] was called.
struct TempPath(Option<PathBuf>);

impl TempPath {
    fn new(path: PathBuf) -> Self {
        Self(Some(path))
    }
    fn path(&self) -> &Path {
        self.0.as_deref().expect("temp path present until keep()")
    }
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            remove_any(&p);
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| io_ctx(e, "creating", path))?;
    f.write_all(bytes).map_err(|e| io_ctx(e, "writing", path))?;
    f.sync_all().map_err(|e| io_ctx(e, "syncing", path))?;
    Ok(())
}

fn sync_dir(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_ctx(e, "syncing", path))
}

fn invalid(msg: String) -> StoreError {
    StoreError::InvalidPackage(msg)
}

/// Extracts `zip` into the empty directory `dest`, enforcing every package rule. On error
/// `dest` may hold a partial extraction; the caller removes it.
///
/// Rules: no absolute paths or `..` components; symlinks must be relative and stay inside the
/// package; at most `limits.max_entries` entries and `limits.max_bytes` bytes, counted while
/// decompressing (the sizes in the headers are not trusted); unix permission bits are kept
/// (without setuid/setgid/sticky), entries without them get 0644, or 0755 for `bootstrap`.
fn extract(zip: &[u8], dest: &Path, limits: ExtractLimits) -> Result<()> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| {
        invalid(format!(
            "not a readable zip archive ({e}): upload a .zip file, for example made with `zip -r`"
        ))
    })?;
    if archive.len() > limits.max_entries {
        return Err(invalid(format!(
            "the zip has {} entries, the limit is {}: package fewer files",
            archive.len(),
            limits.max_entries
        )));
    }

    let mut written: u64 = 0;
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dir_modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut links: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    let mut seen: HashSet<PathBuf> = HashSet::new();
    let mut buf = vec![0u8; 64 * 1024];
    let too_big = |limits: ExtractLimits| {
        invalid(format!(
            "the package unzips to more than {} bytes ({}): make it smaller (the zip may also be a \
             zip bomb)",
            limits.max_bytes,
            mib(limits.max_bytes)
        ))
    };

    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| invalid(format!("entry #{i} cannot be read ({e}): rebuild the zip")))?;
        let name = entry.name().to_string();
        if entry.encrypted() {
            return Err(invalid(format!(
                "entry {name:?} is encrypted: upload an unencrypted zip"
            )));
        }
        let rel = entry_path(&name, entry.enclosed_name())?;
        if rel.as_os_str().is_empty() {
            if entry.is_dir() {
                continue; // "./"
            }
            return Err(invalid(format!(
                "entry {name:?} has no file name: rebuild the zip"
            )));
        }
        if !seen.insert(rel.clone()) {
            return Err(invalid(format!(
                "entry {name:?} appears twice: rebuild the zip"
            )));
        }
        let unix_mode = (entry.get_metadata().system as u8 == ZIP_SYSTEM_UNIX)
            .then(|| entry.unix_mode())
            .flatten()
            .filter(|m| m & 0o7777 != 0 || m & S_IFMT == S_IFLNK);

        if unix_mode.is_some_and(|m| m & S_IFMT == S_IFLNK) {
            let mut target = Vec::new();
            let n = (&mut entry)
                .take(MAX_LINK_TARGET + 1)
                .read_to_end(&mut target)
                .map_err(|e| {
                    invalid(format!(
                        "entry {name:?} cannot be decompressed ({e}): rebuild the zip"
                    ))
                })?;
            if n as u64 > MAX_LINK_TARGET {
                return Err(invalid(format!(
                    "symlink {name:?} has a target longer than {MAX_LINK_TARGET} bytes: rebuild the zip"
                )));
            }
            written += n as u64;
            let target = String::from_utf8(target).map_err(|_| {
                invalid(format!(
                    "symlink {name:?} has a target that is not utf-8: rebuild the zip"
                ))
            })?;
            let target = check_link_target(&name, &rel, &target)?;
            links.push((name, rel, target));
        } else if entry.is_dir() {
            ensure_dirs(dest, &rel, &name)?;
            if let Some(m) = unix_mode {
                dir_modes.push((rel, m));
            }
        } else {
            let parent = rel.parent().unwrap_or(Path::new(""));
            ensure_dirs(dest, parent, &name)?;
            let mode = match unix_mode {
                Some(m) => m & 0o777,
                None if rel.file_name().is_some_and(|f| f == "bootstrap") => 0o755,
                None => 0o644,
            };
            let path = dest.join(&rel);
            let mut out = match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(invalid(format!(
                        "entry {name:?} collides with a directory of the same name: rebuild the zip"
                    )))
                }
                Err(e) => return Err(io_ctx(e, "creating", &path)),
            };
            loop {
                let n = match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        return Err(invalid(format!(
                            "entry {name:?} cannot be decompressed ({e}): the zip is damaged; rebuild it"
                        )))
                    }
                };
                written += n as u64;
                if written > limits.max_bytes {
                    return Err(too_big(limits));
                }
                out.write_all(&buf[..n])
                    .map_err(|e| io_ctx(e, "writing", &path))?;
            }
            // Applied after writing: a read-only mode must not stop us writing the content.
            out.set_permissions(fs::Permissions::from_mode(mode))
                .map_err(|e| io_ctx(e, "setting permissions of", &path))?;
            files.push(path);
        }
        if written > limits.max_bytes {
            return Err(too_big(limits));
        }
    }

    // Symlinks last, so no file or directory above is ever written through one.
    for (name, rel, target) in links {
        let parent = rel.parent().unwrap_or(Path::new(""));
        ensure_dirs(dest, parent, &name)?;
        let path = dest.join(&rel);
        match std::os::unix::fs::symlink(&target, &path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(invalid(format!(
                    "symlink {name:?} collides with a file or directory of the same name: rebuild the zip"
                )))
            }
            Err(e) => return Err(io_ctx(e, "creating symlink", &path)),
        }
    }

    // Directories: the owner keeps rwx so the package can be replaced and removed later.
    for (rel, mode) in dir_modes {
        let path = dest.join(rel);
        fs::set_permissions(&path, fs::Permissions::from_mode((mode & 0o777) | 0o700))
            .map_err(|e| io_ctx(e, "setting permissions of", &path))?;
    }

    // Make the content durable before the caller renames the directory into place. The first
    // fsync commits most of the data; the rest are cheap.
    for path in &files {
        File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(|e| io_ctx(e, "syncing", path))?;
    }
    sync_tree_dirs(dest)?;
    Ok(())
}

/// The safe relative path of an entry: no root, no prefix, no `..`, no `.` components.
fn entry_path(name: &str, enclosed: Option<PathBuf>) -> Result<PathBuf> {
    let unsafe_path = || {
        invalid(format!(
            "entry {name:?} has an absolute path or a '..' component and would be written outside \
             the package: rebuild the zip with paths relative to its root"
        ))
    };
    let enclosed = enclosed.ok_or_else(unsafe_path)?;
    let mut out = PathBuf::new();
    for c in enclosed.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path())
            }
        }
    }
    Ok(out)
}

/// Checks a symlink target: relative, and resolving inside the package. `..` may only lead
/// the target (`../lib/x`, not `a/../../x`), which makes the lexical check exact: every
/// directory it climbs through is a real directory created by the extraction.
fn check_link_target(name: &str, rel: &Path, target: &str) -> Result<PathBuf> {
    let escape = |why: &str| {
        invalid(format!(
            "symlink {name:?} -> {target:?} {why}: symlinks must be relative and point inside the \
             package; replace it with the file it points to"
        ))
    };
    if target.is_empty() || target.contains('\0') {
        return Err(escape("has an invalid target"));
    }
    let target_path = PathBuf::from(target);
    let mut depth = rel.components().count() as i64 - 1; // depth of the link's directory
    let mut seen_normal = false;
    for c in target_path.components() {
        match c {
            Component::RootDir | Component::Prefix(_) => return Err(escape("is absolute")),
            Component::CurDir => {}
            Component::ParentDir if seen_normal => {
                return Err(escape("has a '..' after a directory name"));
            }
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(escape("points outside the package"));
                }
            }
            Component::Normal(_) => seen_normal = true,
        }
    }
    Ok(target_path)
}

/// Creates `dest/rel` and its parents as real directories; fails if a component already
/// exists as anything else (a file or a symlink from the same package).
fn ensure_dirs(dest: &Path, rel: &Path, name: &str) -> Result<()> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(invalid(format!(
                "entry {name:?} needs {:?} to be a directory, but the zip also has it as a file \
                     or symlink: rebuild the zip",
                cur.strip_prefix(dest).unwrap_or(&cur)
            )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&cur).map_err(|e| io_ctx(e, "creating", &cur))?;
            }
            Err(e) => return Err(io_ctx(e, "inspecting", &cur)),
        }
    }
    Ok(())
}

fn sync_tree_dirs(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| io_ctx(e, "reading", dir))? {
        let entry = entry.map_err(|e| io_ctx(e, "reading", dir))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            sync_tree_dirs(&entry.path())?;
        }
    }
    sync_dir(dir)
}

/// Names skipped by [`zip_dir`]: version control, Nimbus's own state and build caches
/// (Python's `__pycache__`: stale bytecode of the packager's interpreter).
fn skipped(parent_rel: &str, file_name: &str) -> bool {
    match file_name {
        ".git" | ".nimbus" | "__pycache__" => true,
        ".cache" => parent_rel == "node_modules" || parent_rel.ends_with("/node_modules"),
        _ => false,
    }
}

/// Packages the directory `dir` as a zip, ready for [`CodeStore::put_zip`].
///
/// The output is deterministic (entries sorted, fixed timestamps), so packaging an unchanged
/// directory twice gives the same bytes and the same content address. Unix permission bits are
/// kept. `.git`, `.nimbus`, `__pycache__` and `node_modules/.cache` are left out. Symlinks are followed when
/// they resolve inside `dir` (the zip holds what they point to) and rejected otherwise.
pub fn zip_dir(dir: &Path) -> Result<Vec<u8>> {
    let root = dir.canonicalize().map_err(|e| io_ctx(e, "opening", dir))?;
    if !root.is_dir() {
        return Err(invalid(format!(
            "{} is not a directory: point at the function's code directory",
            dir.display()
        )));
    }
    let mut w = Packer {
        dir,
        root: root.clone(),
        zip: zip::ZipWriter::new(Cursor::new(Vec::new())),
        total: 0,
        entries: 0,
        stack: vec![root.clone()],
    };
    w.walk(&root, "")?;
    let bytes = w
        .zip
        .finish()
        .map_err(|e| io::Error::other(format!("finishing the zip: {e}")))?
        .into_inner();
    if bytes.len() as u64 > Limits::CODE_ZIPPED_MAX {
        return Err(invalid(format!(
            "{} zips to {} bytes, the limit is {} ({}): leave out build caches, tests and \
             development dependencies",
            dir.display(),
            bytes.len(),
            Limits::CODE_ZIPPED_MAX,
            mib(Limits::CODE_ZIPPED_MAX)
        )));
    }
    Ok(bytes)
}

struct Packer<'a> {
    dir: &'a Path,
    root: PathBuf,
    zip: zip::ZipWriter<Cursor<Vec<u8>>>,
    total: u64,
    entries: usize,
    /// Canonical directories being walked, to detect symlink loops.
    stack: Vec<PathBuf>,
}

impl Packer<'_> {
    fn options(mode: u32) -> zip::write::SimpleFileOptions {
        zip::write::SimpleFileOptions::default()
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(mode & 0o777)
    }

    fn zip_err(e: zip::result::ZipError) -> StoreError {
        StoreError::Io(io::Error::other(format!("writing the zip: {e}")))
    }

    fn count_entry(&mut self) -> Result<()> {
        self.entries += 1;
        if self.entries > MAX_ENTRIES {
            return Err(invalid(format!(
                "{} holds more than {MAX_ENTRIES} files and directories: package fewer files",
                self.dir.display()
            )));
        }
        Ok(())
    }

    /// Adds the children of the real directory `real` under the zip path prefix `rel`.
    fn walk(&mut self, real: &Path, rel: &str) -> Result<()> {
        let mut children: Vec<(String, PathBuf)> = Vec::new();
        for entry in fs::read_dir(real).map_err(|e| io_ctx(e, "reading", real))? {
            let entry = entry.map_err(|e| io_ctx(e, "reading", real))?;
            let name = entry.file_name().into_string().map_err(|n| {
                invalid(format!(
                    "file name {:?} in {} is not valid utf-8: rename it",
                    n,
                    real.display()
                ))
            })?;
            if skipped(rel, &name) {
                continue;
            }
            children.push((name, entry.path()));
        }
        children.sort();

        for (name, path) in children {
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let lmeta = fs::symlink_metadata(&path).map_err(|e| io_ctx(e, "inspecting", &path))?;
            let (real_path, meta) = if lmeta.file_type().is_symlink() {
                let target = match path.canonicalize() {
                    Ok(t) => t,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return Err(invalid(format!(
                            "symlink {} points to nothing: remove it or fix its target",
                            path.display()
                        )))
                    }
                    Err(e) => return Err(io_ctx(e, "resolving", &path)),
                };
                if !target.starts_with(&self.root) {
                    return Err(invalid(format!(
                        "symlink {} points outside {} (to {}): copy what it points to into the \
                         directory or remove the link",
                        path.display(),
                        self.dir.display(),
                        target.display()
                    )));
                }
                let meta = fs::metadata(&target).map_err(|e| io_ctx(e, "inspecting", &target))?;
                (target, meta)
            } else {
                (path.clone(), lmeta)
            };
            let mode = meta.permissions().mode();

            if meta.is_dir() {
                // Either a resolved symlink or a plain child of a canonical directory.
                let canonical = real_path;
                if self.stack.iter().any(|d| d == &canonical) {
                    return Err(invalid(format!(
                        "symlink {} makes a loop (it points to {}, which contains it): remove the link",
                        path.display(),
                        canonical.display()
                    )));
                }
                self.count_entry()?;
                self.zip
                    .add_directory(format!("{child_rel}/"), Self::options(mode))
                    .map_err(Self::zip_err)?;
                self.stack.push(canonical.clone());
                self.walk(&canonical, &child_rel)?;
                self.stack.pop();
            } else if meta.is_file() {
                self.count_entry()?;
                self.total += meta.len();
                if self.total > Limits::CODE_UNZIPPED_MAX {
                    return Err(invalid(format!(
                        "{} holds more than {} bytes ({}): leave out build caches, tests and \
                         development dependencies",
                        self.dir.display(),
                        Limits::CODE_UNZIPPED_MAX,
                        mib(Limits::CODE_UNZIPPED_MAX)
                    )));
                }
                self.zip
                    .start_file(child_rel.as_str(), Self::options(mode))
                    .map_err(Self::zip_err)?;
                let mut f = File::open(&real_path).map_err(|e| io_ctx(e, "opening", &real_path))?;
                io::copy(&mut f, &mut self.zip).map_err(|e| io_ctx(e, "reading", &real_path))?;
            } else {
                tracing::debug!(path = %path.display(), "skipping special file");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "code_shared_tests.rs"]
mod shared_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use zip::write::SimpleFileOptions;

    /// Builds a zip from (name, mode, content) entries; mode `None` stores no unix mode.
    fn build_zip(entries: &[(&str, Option<u32>, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, mode, content) in entries {
            let opts = match mode {
                Some(m) => SimpleFileOptions::default().unix_permissions(*m),
                None => SimpleFileOptions::default(),
            };
            w.start_file(*name, opts).unwrap();
            w.write_all(content).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn zip_with_symlink(name: &str, target: &str) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("index.js", SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"x").unwrap();
        w.add_symlink(name, target, SimpleFileOptions::default())
            .unwrap();
        w.finish().unwrap().into_inner()
    }

    fn store() -> (tempfile::TempDir, CodeStore) {
        let tmp = tempfile::tempdir().unwrap();
        let store = CodeStore::open(&tmp.path().join("code")).unwrap();
        (tmp, store)
    }

    fn mode_of(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// Everything under `unpacked/` and `tmp/`: must stay empty after a rejected package.
    fn leftovers(store: &CodeStore) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for d in [store.unpacked(), store.tmp(), store.blobs()] {
            out.extend(fs::read_dir(d).unwrap().map(|e| e.unwrap().path()));
        }
        out
    }

    fn assert_invalid(r: Result<CodeInfo>, needle: &str) {
        match r {
            Err(StoreError::InvalidPackage(m)) => {
                assert!(m.contains(needle), "{m:?} lacks {needle:?}")
            }
            other => panic!("expected InvalidPackage containing {needle:?}, got {other:?}"),
        }
    }

    #[test]
    fn good_zip_round_trips_with_exec_bits() {
        let (_t, store) = store();
        let zip = build_zip(&[
            ("bootstrap", Some(0o755), b"#!/bin/sh\necho hi\n"),
            ("lib/data.txt", Some(0o640), b"data"),
            ("./dotted/x.txt", Some(0o644), b"x"),
        ]);
        let info = store.put_zip(&zip).unwrap();
        let digest = Sha256::digest(&zip);
        assert_eq!(info.sha256, hex::encode(digest));
        assert_eq!(info.size, zip.len() as u64);
        assert_eq!(
            info.sha256_b64,
            base64::engine::general_purpose::STANDARD.encode(digest)
        );

        let dir = store.dir(&info.sha256).unwrap();
        assert_eq!(dir, store.root().join("unpacked").join(&info.sha256));
        assert_eq!(
            fs::read(dir.join("bootstrap")).unwrap(),
            b"#!/bin/sh\necho hi\n"
        );
        assert_eq!(mode_of(&dir.join("bootstrap")), 0o755);
        assert_eq!(fs::read(dir.join("lib/data.txt")).unwrap(), b"data");
        assert_eq!(mode_of(&dir.join("lib/data.txt")), 0o640);
        assert_eq!(fs::read(dir.join("dotted/x.txt")).unwrap(), b"x");
        assert_eq!(store.zip_bytes(&info.sha256).unwrap(), zip);
        assert!(store.contains(&info.sha256));
        assert!(
            fs::read_dir(store.tmp()).unwrap().next().is_none(),
            "temp files left behind"
        );

        // Idempotent, and upper-case hex is accepted.
        assert_eq!(store.put_zip(&zip).unwrap(), info);
        assert_eq!(store.dir(&info.sha256.to_ascii_uppercase()).unwrap(), dir);
    }

    #[test]
    fn entries_without_unix_mode_get_defaults() {
        let tmp = tempfile::tempdir().unwrap();
        // Entries written by the zip crate always carry a unix mode; extract through a
        // modified copy whose "version made by" says MS-DOS so no unix mode is present.
        let mut zip = build_zip(&[
            ("bootstrap", Some(0o600), b"b"),
            ("app.py", Some(0o600), b"a"),
        ]);
        let mut i = 0;
        while i + 4 <= zip.len() {
            if zip[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] {
                zip[i + 5] = 0; // system byte of "version made by": MS-DOS
                zip[i + 38..i + 42].copy_from_slice(&0x20u32.to_le_bytes()); // archive bit only
            }
            i += 1;
        }
        let dest = tmp.path().join("out");
        fs::create_dir(&dest).unwrap();
        extract(&zip, &dest, ExtractLimits::default()).unwrap();
        assert_eq!(mode_of(&dest.join("bootstrap")), 0o755);
        assert_eq!(mode_of(&dest.join("app.py")), 0o644);
    }

    fn live(referenced: &[&str], running: &[&str]) -> LiveCode {
        LiveCode {
            referenced: referenced.iter().map(|s| s.to_string()).collect(),
            running: running.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn on_disk(store: &CodeStore, sha: &str) -> (bool, bool) {
        (
            store.blob_path(sha).is_file(),
            store.unpacked_path(sha).is_dir(),
        )
    }

    #[test]
    fn collect_removes_only_unneeded_packages() {
        let (_t, store) = store();
        let zip = |n: u8| build_zip(&[("f", Some(0o644), &[n; 100])]);
        let [a, b, c, d] = [1, 2, 3, 4].map(|n| store.put_zip(&zip(n)).unwrap().sha256);
        let pinned = store.put(&zip(5)).unwrap();
        let e = pinned.info.sha256.clone();
        // Not content addresses: never touched.
        fs::write(store.blobs().join("notes.txt"), b"x").unwrap();
        fs::create_dir(store.unpacked().join("NOT-A-HASH")).unwrap();

        let report = store.collect(|| Ok(live(&[&a], &[&b]))).unwrap();
        assert_eq!(
            report,
            CollectReport {
                removed_blobs: 2,
                removed_trees: 2,
                removed_bytes: (zip(3).len() + zip(4).len() + 200) as u64,
                kept: 3,
                held_by_instances: 1,
                pinned: 1,
                removed_shared: 0,
            }
        );
        for kept in [&a, &b, &e] {
            assert_eq!(on_disk(&store, kept), (true, true), "{kept}");
        }
        for gone in [&c, &d] {
            assert_eq!(on_disk(&store, gone), (false, false), "{gone}");
        }
        assert!(store.blobs().join("notes.txt").is_file());
        assert!(store.unpacked().join("NOT-A-HASH").is_dir());
        let tmp: Vec<_> = fs::read_dir(store.tmp()).unwrap().collect();
        assert!(tmp.is_empty(), "collected entries left in tmp/: {tmp:?}");

        // The pin goes with the deploy; the instance stops: both are collected next time.
        drop(pinned);
        let report = store.collect(|| Ok(live(&[&a], &[]))).unwrap();
        assert_eq!((report.removed_blobs, report.removed_trees), (2, 2));
        assert_eq!(on_disk(&store, &b), (false, false));
        assert_eq!(on_disk(&store, &e), (false, false));
        assert_eq!(on_disk(&store, &a), (true, true));
        // A tree without its blob (or the reverse) is collected as well.
        fs::remove_file(store.blob_path(&a)).unwrap();
        let report = store.collect(|| Ok(live(&[], &[]))).unwrap();
        assert_eq!((report.removed_blobs, report.removed_trees), (0, 1));
    }

    #[test]
    fn opt_dir_merges_layers_in_order_and_is_collected_by_its_key() {
        let (_t, store) = store();
        let a = store
            .put_zip(&build_zip(&[
                ("python/shared.py", Some(0o644), b"a"),
                ("python/only_a.py", Some(0o644), b"a"),
                ("bin/tool", Some(0o755), b"#!/bin/sh\n"),
                ("lib", Some(0o644), b"a file where b has a directory"),
            ]))
            .unwrap()
            .sha256;
        let b = store
            .put_zip(&build_zip(&[
                ("python/shared.py", Some(0o644), b"b"),
                ("lib/libb.so", Some(0o644), b"b"),
            ]))
            .unwrap()
            .sha256;
        let layers = vec![a.clone(), b.clone()];
        let dir = store.opt_dir(&layers).unwrap();
        assert_eq!(dir, store.opt().join(opt_key([a.as_str(), b.as_str()])));
        let read = |p: &str| fs::read_to_string(dir.join(p)).unwrap();
        assert_eq!(read("python/shared.py"), "b", "the later layer wins");
        assert_eq!(read("python/only_a.py"), "a");
        assert_eq!(read("lib/libb.so"), "b");
        assert_eq!(mode_of(&dir.join("bin/tool")) & 0o111, 0o111);
        // Built once: the same list gives the same tree; another order is another tree.
        assert_eq!(store.opt_dir(&layers).unwrap(), dir);
        let reversed = store.opt_dir(&[b.clone(), a.clone()]).unwrap();
        assert_ne!(reversed, dir);
        assert_eq!(
            fs::read_to_string(reversed.join("python/shared.py")).unwrap(),
            "a"
        );
        assert_eq!(
            store.package_of(&dir),
            Some(opt_key([a.as_str(), b.as_str()]))
        );

        // Kept while referenced or in use by an instance, collected otherwise; its layers
        // are packages like any other.
        let key = opt_key([a.as_str(), b.as_str()]);
        store.collect(|| Ok(live(&[&a, &b, &key], &[]))).unwrap();
        assert!(dir.is_dir());
        assert!(!reversed.exists());
        store.collect(|| Ok(live(&[], &[&key]))).unwrap();
        assert!(dir.is_dir());
        assert_eq!(on_disk(&store, &a), (false, false));
        store.collect(|| Ok(live(&[], &[]))).unwrap();
        assert!(!dir.exists());
        // A layer whose package is gone cannot be merged.
        assert!(store.opt_dir(&[a]).unwrap_err().is_not_found());
    }

    #[test]
    fn collect_removes_nothing_when_the_references_cannot_be_read() {
        let (_t, store) = store();
        let sha = store
            .put_zip(&build_zip(&[("f", None, b"x")]))
            .unwrap()
            .sha256;
        let e = store
            .collect(|| Err(StoreError::Corrupt("registry unreadable".into())))
            .unwrap_err();
        assert!(e.to_string().contains("registry unreadable"), "{e}");
        assert_eq!(on_disk(&store, &sha), (true, true));
    }

    #[test]
    fn pins_count_every_holder() {
        let (_t, store) = store();
        let zip = build_zip(&[("f", None, b"x")]);
        let first = store.put(&zip).unwrap();
        let second = store.put(&zip).unwrap();
        let third = store.pin(&first.info.sha256.to_ascii_uppercase()).unwrap();
        assert_eq!(third.sha256(), first.info.sha256);
        assert!(store.pin("../x").unwrap_err().is_not_found());
        let sha = first.info.sha256.clone();
        for pin in [first.pin, second.pin] {
            drop(pin);
            store.collect(|| Ok(LiveCode::default())).unwrap();
            assert_eq!(on_disk(&store, &sha), (true, true));
        }
        drop(third);
        store.collect(|| Ok(LiveCode::default())).unwrap();
        assert_eq!(on_disk(&store, &sha), (false, false));
        assert!(store.pins.lock().is_empty());
    }

    #[test]
    fn a_put_after_a_collection_writes_the_package_again() {
        let (_t, store) = store();
        let zip = build_zip(&[("bootstrap", Some(0o755), b"#!/bin/sh\n")]);
        let sha = store.put_zip(&zip).unwrap().sha256;
        store.collect(|| Ok(LiveCode::default())).unwrap();
        assert_eq!(on_disk(&store, &sha), (false, false));
        let again = store.put(&zip).unwrap();
        assert_eq!(again.info.sha256, sha);
        assert_eq!(on_disk(&store, &sha), (true, true));
        assert_eq!(mode_of(&store.dir(&sha).unwrap().join("bootstrap")), 0o755);
    }

    /// The race the pins exist for: deploys of the same few packages (put, then commit a
    /// reference, then drop the pin, then delete the reference) against collections that
    /// run back to back. Whenever a reference is committed, the blob and the unpacked
    /// directory must be there.
    #[test]
    fn concurrent_deploys_never_lose_a_committed_package() {
        let (_t, store) = store();
        let zips: Vec<Vec<u8>> = (0..3u8)
            .map(|n| build_zip(&[("bootstrap", Some(0o755), &[n; 64])]))
            .collect();
        let registry: Arc<Mutex<Vec<String>>> = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let collector = {
            let (store, registry, stop) = (store.clone(), registry.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut removed = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let report = store
                        .collect(|| {
                            Ok(LiveCode {
                                referenced: registry.lock().unwrap().iter().cloned().collect(),
                                running: HashSet::new(),
                            })
                        })
                        .unwrap();
                    removed += report.removed_blobs;
                }
                removed
            })
        };
        let deployers: Vec<_> = (0..2)
            .map(|t| {
                let (store, registry, zips) = (store.clone(), registry.clone(), zips.clone());
                std::thread::spawn(move || {
                    for i in 0..150 {
                        let zip = &zips[(i + t) % zips.len()];
                        let stored = store.put(zip).unwrap();
                        let sha = stored.info.sha256.clone();
                        registry.lock().unwrap().push(sha.clone()); // the commit
                        drop(stored.pin);
                        assert!(
                            store.blob_path(&sha).is_file(),
                            "blob of a committed package removed"
                        );
                        assert!(
                            store.unpacked_path(&sha).join("bootstrap").is_file(),
                            "tree of a committed package removed"
                        );
                        let mut reg = registry.lock().unwrap(); // the delete
                        let at = reg.iter().position(|s| *s == sha).unwrap();
                        reg.remove(at);
                    }
                })
            })
            .collect();
        for d in deployers {
            d.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let removed = collector.join().unwrap();
        assert!(removed > 0, "the collector never ran against a deploy");
        store.collect(|| Ok(LiveCode::default())).unwrap();
        assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    }

    #[test]
    fn package_of_names_only_unpacked_directories() {
        let (_t, store) = store();
        let sha = store
            .put_zip(&build_zip(&[("f", None, b"x")]))
            .unwrap()
            .sha256;
        let dir = store.dir(&sha).unwrap();
        assert_eq!(store.package_of(&dir).as_deref(), Some(sha.as_str()));
        assert_eq!(store.package_of(Path::new("/")), None);
        assert_eq!(store.package_of(&store.blobs().join(&sha)), None);
        assert_eq!(store.package_of(&store.unpacked().join("x")), None);
    }

    #[test]
    fn dir_re_extracts_from_blob_and_reports_missing() {
        let (_t, store) = store();
        let info = store
            .put_zip(&build_zip(&[("a.txt", Some(0o644), b"a")]))
            .unwrap();
        let dir = store.dir(&info.sha256).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(store.dir(&info.sha256).unwrap(), dir);
        assert_eq!(fs::read(dir.join("a.txt")).unwrap(), b"a");

        // A damaged blob is reported, not extracted.
        fs::remove_dir_all(&dir).unwrap();
        fs::write(store.blob_path(&info.sha256), b"damaged").unwrap();
        assert!(matches!(
            store.dir(&info.sha256),
            Err(StoreError::Corrupt(_))
        ));

        let missing = "0".repeat(64);
        let e = store.dir(&missing).unwrap_err();
        assert!(e.is_not_found(), "{e}");
        assert_eq!(e.to_string(), format!("code package not found: {missing}"));
        assert!(store.zip_bytes(&missing).unwrap_err().is_not_found());
        assert!(!store.contains(&missing));
    }

    #[test]
    fn sha_must_be_hex() {
        let (_t, store) = store();
        for bad in [
            "../../etc",
            "",
            &"g".repeat(64),
            &format!("{}/..", "a".repeat(61)),
            &"a".repeat(63),
        ] {
            assert!(store.dir(bad).unwrap_err().is_not_found(), "{bad}");
            assert!(store.zip_bytes(bad).unwrap_err().is_not_found(), "{bad}");
        }
    }

    #[test]
    fn garbage_is_rejected() {
        let (_t, store) = store();
        assert_invalid(
            store.put_zip(b"this is not a zip at all"),
            "not a readable zip",
        );
        assert_invalid(store.put_zip(b""), "not a readable zip");
        assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    }

    #[test]
    fn too_large_zip_is_rejected_before_reading() {
        let (_t, store) = store();
        let big = vec![0u8; Limits::CODE_ZIPPED_MAX as usize + 1];
        assert_invalid(store.put_zip(&big), "the limit is");
    }

    #[test]
    fn zip_slip_is_rejected() {
        let (_t, store) = store();
        for name in [
            "../evil",
            "a/../../evil",
            "ok/../../../etc/passwd",
            "a/../b",
        ] {
            let zip = build_zip(&[
                ("fine.txt", Some(0o644), b"x"),
                (name, Some(0o644), b"pwned"),
            ]);
            assert_invalid(store.put_zip(&zip), "outside the package");
            assert!(
                leftovers(&store).is_empty(),
                "{name}: {:?}",
                leftovers(&store)
            );
        }
        assert!(!store.root().parent().unwrap().join("evil").exists());
    }

    #[test]
    fn absolute_path_is_rejected() {
        let (_t, store) = store();
        let zip = build_zip(&[("/tmp/nimbus-evil-abs", Some(0o644), b"pwned")]);
        assert_invalid(store.put_zip(&zip), "absolute path");
        assert!(leftovers(&store).is_empty());
        assert!(!Path::new("/tmp/nimbus-evil-abs").exists());
    }

    #[test]
    fn escaping_symlinks_are_rejected() {
        let (_t, store) = store();
        for (name, target) in [
            ("link", "/etc/passwd"),
            ("link", "../outside"),
            ("sub/link", "../../outside"),
            ("link", "sub/../../outside"),
        ] {
            assert_invalid(store.put_zip(&zip_with_symlink(name, target)), "symlink");
            assert!(
                leftovers(&store).is_empty(),
                "{name} -> {target}: {:?}",
                leftovers(&store)
            );
        }
    }

    #[test]
    fn dotdot_through_a_symlink_is_rejected() {
        // `deep/d -> ..` is the package root, so `deep/d/..` is its parent, although the text
        // `deep/d/..` looks like it stays inside.
        let (_t, store) = store();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_symlink("deep/d", "..", SimpleFileOptions::default())
            .unwrap();
        w.add_symlink("x", "deep/d/..", SimpleFileOptions::default())
            .unwrap();
        assert_invalid(
            store.put_zip(&w.finish().unwrap().into_inner()),
            "'..' after a directory name",
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn inner_relative_symlinks_are_created() {
        let (_t, store) = store();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("lib/real.so.1", SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"elf").unwrap();
        w.add_symlink("lib/real.so", "real.so.1", SimpleFileOptions::default())
            .unwrap();
        w.add_symlink("bin/tool", "../lib/real.so", SimpleFileOptions::default())
            .unwrap();
        let info = store.put_zip(&w.finish().unwrap().into_inner()).unwrap();
        let dir = store.dir(&info.sha256).unwrap();
        assert_eq!(
            fs::read_link(dir.join("bin/tool")).unwrap(),
            Path::new("../lib/real.so")
        );
        assert_eq!(fs::read(dir.join("bin/tool")).unwrap(), b"elf");
    }

    #[test]
    fn files_under_a_symlink_are_rejected() {
        let (_t, store) = store();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.add_symlink("d", ".", SimpleFileOptions::default())
            .unwrap();
        w.add_symlink("d/x", "y", SimpleFileOptions::default())
            .unwrap();
        assert_invalid(
            store.put_zip(&w.finish().unwrap().into_inner()),
            "to be a directory",
        );
        assert!(leftovers(&store).is_empty());
    }

    #[test]
    fn duplicate_entries_are_rejected() {
        let (_t, store) = store();
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("a", SimpleFileOptions::default()).unwrap();
        w.write_all(b"1").unwrap();
        w.start_file("./a", SimpleFileOptions::default()).unwrap();
        w.write_all(b"2").unwrap();
        assert_invalid(
            store.put_zip(&w.finish().unwrap().into_inner()),
            "appears twice",
        );
    }

    /// 300 MB of zeros, deflated to a few hundred KB.
    fn zero_bomb() -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let opts = SimpleFileOptions::default();
        w.start_file("zeros.bin", opts).unwrap();
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..300 {
            w.write_all(&chunk).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    /// Rewrites the uncompressed size of every entry (local and central headers) to `size`.
    fn lie_about_size(zip: &mut [u8], size: u32) {
        let mut i = 0;
        while i + 4 <= zip.len() {
            match zip[i..i + 4] {
                [0x50, 0x4b, 0x03, 0x04] => {
                    zip[i + 22..i + 26].copy_from_slice(&size.to_le_bytes())
                }
                [0x50, 0x4b, 0x01, 0x02] => {
                    zip[i + 24..i + 28].copy_from_slice(&size.to_le_bytes())
                }
                _ => {}
            }
            i += 1;
        }
    }

    #[test]
    fn zip_bomb_is_rejected_while_decompressing() {
        let (_t, store) = store();
        let mut bomb = zero_bomb();
        assert!(bomb.len() < 2 << 20, "bomb is {} bytes", bomb.len());
        // Headers claim 1 KiB: only counting the bytes actually written catches it.
        lie_about_size(&mut bomb, 1024);
        let archive = zip::ZipArchive::new(Cursor::new(&bomb[..])).unwrap();
        assert_eq!(archive.decompressed_size(), Some(1024));
        assert_invalid(store.put_zip(&bomb), "unzips to more than");
        assert!(leftovers(&store).is_empty(), "{:?}", leftovers(&store));
    }

    #[test]
    fn byte_limit_counts_actual_bytes() {
        let tmp = tempfile::tempdir().unwrap();
        let limits = ExtractLimits {
            max_bytes: 10_000,
            max_entries: 10,
        };
        let mut zip = build_zip(&[("a", None, &[7u8; 6000]), ("b", None, &[7u8; 6000])]);
        lie_about_size(&mut zip, 1);
        let dest = tmp.path().join("x");
        fs::create_dir(&dest).unwrap();
        let e = extract(&zip, &dest, limits).unwrap_err();
        assert!(e.to_string().contains("more than 10000 bytes"), "{e}");

        let ok = build_zip(&[("a", None, &[7u8; 5000]), ("b", None, &[7u8; 5000])]);
        let dest = tmp.path().join("y");
        fs::create_dir(&dest).unwrap();
        extract(&ok, &dest, limits).unwrap();

        // The limit stops decompression as it is crossed: nothing past it reaches the disk.
        let mut one = build_zip(&[("big", None, &[7u8; 200_000])]);
        lie_about_size(&mut one, 1);
        let dest = tmp.path().join("z");
        fs::create_dir(&dest).unwrap();
        assert!(extract(&one, &dest, limits).is_err());
        let written = fs::metadata(dest.join("big")).map_or(0, |m| m.len());
        assert!(
            written <= limits.max_bytes,
            "{written} bytes written past the limit"
        );
    }

    #[test]
    fn entry_count_is_limited() {
        let tmp = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..4).map(|i| format!("f{i}")).collect();
        let entries: Vec<(&str, Option<u32>, &[u8])> =
            names.iter().map(|n| (n.as_str(), None, &b""[..])).collect();
        let zip = build_zip(&entries);
        let dest = tmp.path().join("x");
        fs::create_dir(&dest).unwrap();
        let e = extract(
            &zip,
            &dest,
            ExtractLimits {
                max_bytes: 1 << 20,
                max_entries: 3,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("4 entries, the limit is 3"), "{e}");
        extract(
            &zip,
            &dest,
            ExtractLimits {
                max_bytes: 1 << 20,
                max_entries: 4,
            },
        )
        .unwrap();
    }

    #[test]
    fn stale_temp_entries_are_removed_on_open() {
        let (t, store) = store();
        let stale = store.tmp().join("old.d");
        fs::create_dir(&stale).unwrap();
        fs::write(stale.join("f"), b"x").unwrap();
        let old = SystemTime::now() - Duration::from_secs(7200);
        File::open(&stale).unwrap().set_modified(old).unwrap();
        let fresh = store.tmp().join("fresh.zip");
        fs::write(&fresh, b"x").unwrap();
        // Moved out by a collection that was interrupted: removed whatever its age.
        let collected = store.tmp().join("gc-1234.d");
        fs::create_dir(&collected).unwrap();
        fs::write(collected.join("f"), b"x").unwrap();
        CodeStore::open(&t.path().join("code")).unwrap();
        assert!(!stale.exists());
        assert!(!collected.exists());
        assert!(fresh.exists(), "an in-flight temp file must survive");
    }

    #[test]
    fn zip_dir_round_trips() {
        let (t, store) = store();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("lib/deep")).unwrap();
        fs::create_dir_all(src.join(".git")).unwrap();
        fs::create_dir_all(src.join(".nimbus")).unwrap();
        fs::create_dir_all(src.join("node_modules/.cache")).unwrap();
        fs::create_dir_all(src.join("lib/__pycache__")).unwrap();
        fs::write(src.join("lib/__pycache__/m.cpython-311.pyc"), b"c").unwrap();
        fs::create_dir_all(src.join("empty")).unwrap();
        fs::write(src.join(".git/HEAD"), b"ref").unwrap();
        fs::write(src.join(".nimbus/state"), b"s").unwrap();
        fs::write(src.join("node_modules/.cache/junk"), b"j").unwrap();
        fs::write(src.join("node_modules/pkg.js"), b"p").unwrap();
        fs::write(src.join("bootstrap"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(src.join("bootstrap"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(src.join("lib/deep/data.txt"), b"deep").unwrap();
        fs::set_permissions(
            src.join("lib/deep/data.txt"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        symlink("lib/deep/data.txt", src.join("alias.txt")).unwrap();
        symlink("lib", src.join("liblink")).unwrap();

        let zip = zip_dir(&src).unwrap();
        // Deterministic: modification times do not leak into the zip.
        let earlier = SystemTime::now() - Duration::from_secs(86_400 * 400);
        File::options()
            .write(true)
            .open(src.join("bootstrap"))
            .unwrap()
            .set_modified(earlier)
            .unwrap();
        assert_eq!(zip_dir(&src).unwrap(), zip, "zip_dir must be deterministic");

        let names: Vec<String> = zip::ZipArchive::new(Cursor::new(&zip[..]))
            .unwrap()
            .file_names()
            .map(String::from)
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "entries in order");
        for skipped in [
            ".git/HEAD",
            ".nimbus/state",
            "node_modules/.cache/junk",
            "lib/__pycache__/",
            "lib/__pycache__/m.cpython-311.pyc",
        ] {
            assert!(
                !names.iter().any(|n| n == skipped),
                "{skipped} included: {names:?}"
            );
        }

        let info = store.put_zip(&zip).unwrap();
        let out = store.dir(&info.sha256).unwrap();
        assert_eq!(mode_of(&out.join("bootstrap")), 0o755);
        assert_eq!(mode_of(&out.join("lib/deep/data.txt")), 0o600);
        assert_eq!(fs::read(out.join("alias.txt")).unwrap(), b"deep");
        assert!(!fs::symlink_metadata(out.join("alias.txt"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(
            fs::read(out.join("liblink/deep/data.txt")).unwrap(),
            b"deep"
        );
        assert_eq!(fs::read(out.join("node_modules/pkg.js")).unwrap(), b"p");
        assert!(out.join("empty").is_dir());
        assert!(!out.join(".git").exists());
    }

    #[test]
    fn zip_dir_rejects_escaping_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(t.path().join("secret"), b"s").unwrap();
        fs::write(src.join("ok.txt"), b"ok").unwrap();
        symlink("../secret", src.join("leak")).unwrap();
        match zip_dir(&src) {
            Err(StoreError::InvalidPackage(m)) => {
                assert!(m.contains("leak") && m.contains("points outside"), "{m}")
            }
            other => panic!("expected InvalidPackage, got {other:?}"),
        }

        fs::remove_file(src.join("leak")).unwrap();
        symlink("/etc", src.join("etc")).unwrap();
        assert!(zip_dir(&src).unwrap_err().is_invalid_input());

        fs::remove_file(src.join("etc")).unwrap();
        symlink("nowhere", src.join("dangling")).unwrap();
        assert!(zip_dir(&src).unwrap_err().to_string().contains("dangling"));
    }

    #[test]
    fn zip_dir_rejects_symlink_loops() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("a")).unwrap();
        symlink("..", src.join("a/up")).unwrap();
        let e = zip_dir(&src).unwrap_err();
        assert!(
            e.is_invalid_input() && e.to_string().contains("loop"),
            "{e}"
        );
    }
}
