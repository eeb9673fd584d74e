//! Content-addressed blobs shared by every node of a cluster (issue 18): code packages and
//! object bytes, which a node otherwise keeps only on its own disk. [`SharedBlobs`] is the
//! store the nodes share; [`PgBlobs`] keeps it in the cluster's PostgreSQL database, in
//! chunks of [`CHUNK_BYTES`]. Each node keeps its local files as a cache by hash: it
//! uploads what it writes before the metadata naming it commits, and fetches what it lacks
//! before it reads.
//!
//! A blob is named by the hex SHA-256 of its bytes inside a [`Namespace`] (`code`,
//! `objects`), so the two collectors never see each other's blobs. Rules every
//! implementation keeps:
//! - **Visible only whole.** A blob is listed, found or fetched only once all its bytes are
//!   stored; a reader never sees part of one.
//! - **Idempotent, concurrent puts.** Putting a hash that is stored writes nothing (it only
//!   marks the blob as just used); two nodes putting the same hash at once end with one
//!   blob.
//! - **Verified both ways.** A put whose bytes do not hash to the name is refused; a fetch
//!   streams into a temporary file, checks size and hash, and only then renames it into
//!   place.
//! - **Deletion with a grace period.** Callers delete only blobs no metadata names, and the
//!   store deletes only those not put (or [`SharedBlobs::touch`]ed) within the grace
//!   period, by the database's clock. A node commits metadata naming a blob only after
//!   putting or touching it, well within the grace period (one hour by default), so a
//!   collector on another node that read the references before that commit cannot delete
//!   the blob under it.
//!
//! Used by `nimbus-store` (`CodeStore`) and `nimbus-objects` (`BlobStore`); wired by the
//! server in cluster mode. The calls are blocking (file and database I/O): run them off
//! async workers.

mod postgres;
#[cfg(test)]
mod tests;

pub use postgres::PgBlobs;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

/// Bytes per stored chunk: a blob is never held whole in memory or in one row.
pub const CHUNK_BYTES: usize = 1 << 20;

/// How long an unreferenced blob is kept after it was last put or touched, by default:
/// longer than any deploy or write takes between its upload and its commit on another node.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Which kind of blob: each kind's collector sees only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Namespace {
    /// Code packages (zips of functions and layers).
    Code,
    /// Object bytes (objects and multipart parts).
    Objects,
}

impl Namespace {
    pub fn as_str(self) -> &'static str {
        match self {
            Namespace::Code => "code",
            Namespace::Objects => "objects",
        }
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BlobsError {
    /// No complete blob of that hash in the namespace.
    #[error("blob {namespace}/{sha256} is not in the shared blob store")]
    NotFound {
        namespace: Namespace,
        sha256: String,
    },
    #[error("{0:?} is not a content address (64 hex digits of a sha-256)")]
    InvalidHash(String),
    /// The bytes given (or fetched) do not hash to their name.
    #[error("the bytes of blob {namespace}/{expected} hash to {actual} ({size} bytes): {what}")]
    HashMismatch {
        namespace: Namespace,
        expected: String,
        actual: String,
        size: u64,
        what: &'static str,
    },
    /// An upload idle for longer than the grace period was removed by a collector.
    #[error(
        "the upload of blob {namespace}/{sha256} was idle past the grace period and was \
         removed; put it again"
    )]
    Abandoned {
        namespace: Namespace,
        sha256: String,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("shared blob store: {0}")]
    Pg(#[from] nimbus_pg::PgError),
}

impl From<tokio_postgres::Error> for BlobsError {
    fn from(e: tokio_postgres::Error) -> Self {
        BlobsError::Pg(e.into())
    }
}

impl BlobsError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, BlobsError::NotFound { .. })
    }

    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BlobsError {
        let context = context.into();
        move |source| BlobsError::Io { context, source }
    }
}

pub type Result<T, E = BlobsError> = std::result::Result<T, E>;

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    /// The bytes were stored.
    Stored,
    /// The blob was there already (now marked as just used); nothing was read.
    Existed,
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobInfo {
    pub sha256: String,
    pub size: u64,
    /// Since it was last put or touched.
    pub idle: Duration,
}

/// What [`SharedBlobs::delete_unreferenced`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    /// Blobs deleted.
    pub deleted: usize,
    /// Their bytes.
    pub deleted_bytes: u64,
    /// Uploads abandoned (by a node that died mid-upload) whose chunks were removed.
    pub abandoned_uploads: usize,
}

/// A content-addressed blob store shared by the nodes of a cluster. Blocking.
pub trait SharedBlobs: Send + Sync + std::fmt::Debug {
    /// Stores what `reader` yields as blob `sha256` of `ns`, streamed chunk by chunk and
    /// hashed on the way; refused ([`BlobsError::HashMismatch`], nothing kept) when the
    /// bytes hash otherwise. A blob already stored is not read or written again, only
    /// marked as just used ([`Put::Existed`]). Returns once the blob is complete and
    /// visible to every node.
    fn put_reader(&self, ns: Namespace, sha256: &str, reader: &mut dyn Read) -> Result<Put>;

    /// [`SharedBlobs::put_reader`] from the file at `path`.
    fn put_file(&self, ns: Namespace, sha256: &str, path: &Path) -> Result<Put> {
        let mut file = std::fs::File::open(path)
            .map_err(BlobsError::io(format!("opening {}", path.display())))?;
        self.put_reader(ns, sha256, &mut file)
    }

    /// Marks the blob as just used (so no collector deletes it within the grace period);
    /// false when it is not stored. Call it before committing metadata that names a blob
    /// without putting it (a copy of an object).
    fn touch(&self, ns: Namespace, sha256: &str) -> Result<bool>;

    /// Whether the complete blob is stored.
    fn exists(&self, ns: Namespace, sha256: &str) -> Result<bool>;

    /// Streams the blob into a new file in `tmp_dir`, checks its size and hash, syncs it
    /// and renames it to `dest` (same file system as `tmp_dir`). Returns its size;
    /// [`BlobsError::NotFound`] when it is not stored (or was deleted meanwhile).
    fn fetch(&self, ns: Namespace, sha256: &str, tmp_dir: &Path, dest: &Path) -> Result<u64>;

    /// The complete blobs of `ns`.
    fn list(&self, ns: Namespace) -> Result<Vec<BlobInfo>>;

    /// Deletes `sha256` if it was not put or touched within `grace` (checked atomically
    /// with the delete); true if deleted. The caller has checked that nothing names it.
    fn delete_if_idle(&self, ns: Namespace, sha256: &str, grace: Duration) -> Result<bool>;

    /// Deletes every blob of `ns` idle for longer than `grace` that `referenced` does not
    /// keep, and the chunks of uploads idle for longer than `grace` (nodes that died
    /// mid-upload). `referenced` may have been read before this call: a blob referenced
    /// later was put or touched since, so it is not idle.
    fn delete_unreferenced(
        &self,
        ns: Namespace,
        grace: Duration,
        referenced: &dyn Fn(&str) -> bool,
    ) -> Result<Swept>;
}

/// Accepts exactly 64 hex digits, returned lowercase.
pub fn validate_sha256(s: &str) -> Result<String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(BlobsError::InvalidHash(s.to_string()))
    }
}

/// Reads into `buf` until it is full or the reader ends; how many bytes were read.
pub(crate) fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
