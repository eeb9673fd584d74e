//! [`PgBlobs`]: the shared blob store in the cluster's PostgreSQL database (component
//! `blobs`).
//!
//! - `blobs_uploads`: one row per upload in progress (its id assigned by the database),
//!   renewed as chunks arrive. A node that dies mid-upload leaves a row that stops being
//!   renewed; a collector removes it and its chunks after the grace period.
//! - `blobs_chunks(upload, seq, bytes)`: the bytes, [`CHUNK_BYTES`] per row, written one
//!   statement at a time under the upload's id (never the whole blob in one row, one
//!   statement or in memory). Stored uncompressed (`STORAGE EXTERNAL`): zips and object
//!   bytes rarely compress.
//! - `blobs_blobs(namespace, sha256, size, chunks, upload, created_ms, touched_ms)`: a row
//!   exists only for a complete blob and names the upload whose chunks hold it. It is
//!   inserted in the transaction that ends the upload, so readers see a blob whole or not
//!   at all. Two nodes uploading one hash at once each write their own chunks; the first
//!   to finish inserts the row (primary key on namespace and hash), the other finds it
//!   (`ON CONFLICT`) and drops its chunks in the same transaction.
//!
//! Ages (`touched_ms`) are taken from the database's clock, so the nodes' clocks do not
//! matter to the grace period.

use crate::{
    read_full, validate_sha256, BlobInfo, BlobsError, Namespace, Put, Result, SharedBlobs, Swept,
    CHUNK_BYTES,
};
use nimbus_pg::{Client, Migration, Pg};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

/// The component's migrations (append, never edit).
const MIGRATIONS: &[Migration] = &[Migration::additive(
    "CREATE TABLE blobs_blobs (
        namespace  TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        size       BIGINT NOT NULL,
        chunks     INTEGER NOT NULL,
        upload     BIGINT NOT NULL,
        created_ms BIGINT NOT NULL,
        touched_ms BIGINT NOT NULL,
        PRIMARY KEY (namespace, sha256)
    );
    CREATE INDEX blobs_blobs_idle ON blobs_blobs (namespace, touched_ms);
    CREATE TABLE blobs_uploads (
        upload     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        namespace  TEXT NOT NULL,
        sha256     TEXT NOT NULL,
        started_ms BIGINT NOT NULL,
        touched_ms BIGINT NOT NULL
    );
    CREATE INDEX blobs_uploads_idle ON blobs_uploads (namespace, touched_ms);
    CREATE TABLE blobs_chunks (
        upload BIGINT NOT NULL,
        seq    INTEGER NOT NULL,
        bytes  BYTEA NOT NULL,
        PRIMARY KEY (upload, seq)
    );
    ALTER TABLE blobs_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;",
)];

/// The database's clock in milliseconds.
macro_rules! now_ms {
    () => {
        "(extract(epoch from clock_timestamp()) * 1000)::bigint"
    };
}

const TOUCH: &str = concat!(
    "UPDATE blobs_blobs SET touched_ms = ",
    now_ms!(),
    " WHERE namespace = $1 AND sha256 = $2"
);
const START: &str = concat!(
    "INSERT INTO blobs_uploads (namespace, sha256, started_ms, touched_ms) VALUES ($1, $2, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ") RETURNING upload"
);
const RENEW: &str = concat!(
    "UPDATE blobs_uploads SET touched_ms = ",
    now_ms!(),
    " WHERE upload = $1"
);
const CHUNK: &str = "INSERT INTO blobs_chunks (upload, seq, bytes) VALUES ($1, $2, $3)";
const FINISH: &str = concat!(
    "INSERT INTO blobs_blobs (namespace, sha256, size, chunks, upload, created_ms, touched_ms) \
     VALUES ($1, $2, $3, $4, $5, ",
    now_ms!(),
    ", ",
    now_ms!(),
    ") ON CONFLICT (namespace, sha256) DO UPDATE SET touched_ms = EXCLUDED.touched_ms \
     RETURNING upload"
);
const BLOB: &str =
    "SELECT upload, size, chunks FROM blobs_blobs WHERE namespace = $1 AND sha256 = $2";
const READ_CHUNK: &str = "SELECT bytes FROM blobs_chunks WHERE upload = $1 AND seq = $2";
const LIST: &str = concat!(
    "SELECT sha256, size, ",
    now_ms!(),
    " - touched_ms FROM blobs_blobs WHERE namespace = $1 ORDER BY sha256"
);
const IDLE: &str = concat!(
    "SELECT sha256 FROM blobs_blobs WHERE namespace = $1 AND touched_ms < ",
    now_ms!(),
    " - $2"
);
const DELETE_IDLE: &str = concat!(
    "DELETE FROM blobs_blobs WHERE namespace = $1 AND sha256 = $2 AND touched_ms < ",
    now_ms!(),
    " - $3 RETURNING upload, size"
);
const DROP_CHUNKS: &str = "DELETE FROM blobs_chunks WHERE upload = ANY($1)";
const REAP: &str = concat!(
    "DELETE FROM blobs_uploads WHERE namespace = $1 AND touched_ms < ",
    now_ms!(),
    " - $2 RETURNING upload"
);

/// Chunks between two renewals of an upload's row.
const RENEW_EVERY: i32 = 16;

/// The shared blob store in PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgBlobs {
    pg: Pg,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl PgBlobs {
    /// The store on `pg`, its tables migrated.
    pub fn open(pg: &Pg) -> Result<Self> {
        pg.migrate("blobs", MIGRATIONS)?;
        Ok(PgBlobs { pg: pg.clone() })
    }

    /// `f` with a connection of the pool, on the calling thread.
    fn with<T>(&self, f: impl AsyncFnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.pg.block_on(async {
            let mut c = self.pg.client().await?;
            f(&mut c).await
        })
    }

    /// Writes the chunks of upload `upload` from `reader`; the size, the chunk count and
    /// the hash of what was read.
    fn write_chunks(
        &self,
        ns: Namespace,
        sha: &str,
        upload: i64,
        reader: &mut dyn Read,
    ) -> Result<(u64, i32, String)> {
        self.with(async |c| {
            let insert = c.prepare_cached(CHUNK).await?;
            let renew = c.prepare_cached(RENEW).await?;
            let mut buf = vec![0u8; CHUNK_BYTES];
            let mut hasher = Sha256::new();
            let (mut size, mut seq) = (0u64, 0i32);
            loop {
                let n = read_full(reader, &mut buf).map_err(BlobsError::io(format!(
                    "reading the bytes of blob {ns}/{sha}"
                )))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                c.execute(&insert, &[&upload, &seq, &&buf[..n]]).await?;
                size += n as u64;
                seq += 1;
                if seq % RENEW_EVERY == 0 && c.execute(&renew, &[&upload]).await? == 0 {
                    return Err(BlobsError::Abandoned {
                        namespace: ns,
                        sha256: sha.to_string(),
                    });
                }
                if n < buf.len() {
                    break;
                }
            }
            Ok((size, seq, hex::encode(hasher.finalize())))
        })
    }

    /// Ends upload `upload` in one transaction: its row goes, the blob's row appears (or,
    /// when another upload of the same hash finished first, this one's chunks go).
    fn finish(&self, ns: Namespace, sha: &str, upload: i64, size: u64, chunks: i32) -> Result<Put> {
        self.with(async |c| {
            let tx = c.transaction().await?;
            let ours = tx
                .execute("DELETE FROM blobs_uploads WHERE upload = $1", &[&upload])
                .await?;
            if ours == 0 {
                return Err(BlobsError::Abandoned {
                    namespace: ns,
                    sha256: sha.to_string(),
                });
            }
            let size = size as i64;
            let row = tx
                .query_one(FINISH, &[&ns.as_str(), &sha, &size, &chunks, &upload])
                .await?;
            let winner: i64 = row.get(0);
            if winner != upload {
                tx.execute(DROP_CHUNKS, &[&vec![upload]]).await?;
            }
            tx.commit().await?;
            Ok(if winner == upload {
                Put::Stored
            } else {
                Put::Existed
            })
        })
    }

    /// Removes what a failed upload wrote (best effort: a collector removes leftovers).
    fn discard(&self, ns: Namespace, sha: &str, upload: i64) {
        let res = self.with(async |c| {
            let tx = c.transaction().await?;
            tx.execute("DELETE FROM blobs_uploads WHERE upload = $1", &[&upload])
                .await?;
            tx.execute(DROP_CHUNKS, &[&vec![upload]]).await?;
            tx.commit().await?;
            Ok(())
        });
        if let Err(e) = res {
            tracing::warn!(namespace = %ns, sha256 = %sha, error = %e,
                "cannot remove the chunks of a failed upload; a later collection removes them");
        }
    }
}

impl SharedBlobs for PgBlobs {
    fn put_reader(&self, ns: Namespace, sha256: &str, reader: &mut dyn Read) -> Result<Put> {
        let sha = validate_sha256(sha256)?;
        if self.touch(ns, &sha)? {
            return Ok(Put::Existed);
        }
        let upload: i64 = self.with(async |c| {
            let row = c.query_one(START, &[&ns.as_str(), &sha]).await?;
            Ok(row.get(0))
        })?;
        let (size, chunks, actual) = match self.write_chunks(ns, &sha, upload, reader) {
            Ok(done) => done,
            Err(e) => {
                self.discard(ns, &sha, upload);
                return Err(e);
            }
        };
        if actual != sha {
            self.discard(ns, &sha, upload);
            return Err(BlobsError::HashMismatch {
                namespace: ns,
                expected: sha,
                actual,
                size,
                what: "refused; the caller named the bytes wrongly or they changed while read",
            });
        }
        let put = self.finish(ns, &sha, upload, size, chunks)?;
        tracing::debug!(namespace = %ns, sha256 = %sha, size, ?put, "shared blob stored");
        Ok(put)
    }

    fn touch(&self, ns: Namespace, sha256: &str) -> Result<bool> {
        let sha = validate_sha256(sha256)?;
        self.with(async |c| {
            let st = c.prepare_cached(TOUCH).await?;
            Ok(c.execute(&st, &[&ns.as_str(), &sha]).await? > 0)
        })
    }

    fn exists(&self, ns: Namespace, sha256: &str) -> Result<bool> {
        let sha = validate_sha256(sha256)?;
        self.with(async |c| {
            let st = c.prepare_cached(BLOB).await?;
            Ok(c.query_opt(&st, &[&ns.as_str(), &sha]).await?.is_some())
        })
    }

    fn fetch(&self, ns: Namespace, sha256: &str, tmp_dir: &Path, dest: &Path) -> Result<u64> {
        let sha = validate_sha256(sha256)?;
        let not_found = || BlobsError::NotFound {
            namespace: ns,
            sha256: sha.clone(),
        };
        let tmp = TempFile(Some(
            tmp_dir.join(format!("{}.fetch", uuid::Uuid::new_v4().simple())),
        ));
        let size = self.with(async |c| {
            let st = c.prepare_cached(BLOB).await?;
            let row = c
                .query_opt(&st, &[&ns.as_str(), &sha])
                .await?
                .ok_or_else(not_found)?;
            let (upload, size, chunks): (i64, i64, i32) = (row.get(0), row.get(1), row.get(2));
            let path = tmp.path();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(BlobsError::io(format!("creating {}", path.display())))?;
            let read = c.prepare_cached(READ_CHUNK).await?;
            let mut hasher = Sha256::new();
            let mut written = 0u64;
            for seq in 0..chunks {
                // Deleted meanwhile (a collector found it unreferenced): gone for the caller.
                let row = c
                    .query_opt(&read, &[&upload, &seq])
                    .await?
                    .ok_or_else(not_found)?;
                let bytes: &[u8] = row.get(0);
                hasher.update(bytes);
                file.write_all(bytes)
                    .map_err(BlobsError::io(format!("writing {}", path.display())))?;
                written += bytes.len() as u64;
            }
            let actual = hex::encode(hasher.finalize());
            if actual != sha || written != size as u64 {
                return Err(BlobsError::HashMismatch {
                    namespace: ns,
                    expected: sha.clone(),
                    actual,
                    size: written,
                    what: "the shared copy is damaged; store the bytes again (deploy or upload)",
                });
            }
            file.sync_all()
                .map_err(BlobsError::io(format!("syncing {}", path.display())))?;
            Ok(written)
        })?;
        std::fs::rename(tmp.path(), dest)
            .map_err(BlobsError::io(format!("renaming into {}", dest.display())))?;
        tmp.keep();
        if let Some(dir) = dest.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(BlobsError::io(format!("syncing {}", dir.display())))?;
        }
        tracing::debug!(namespace = %ns, sha256 = %sha, size, "fetched shared blob");
        Ok(size)
    }

    fn list(&self, ns: Namespace) -> Result<Vec<BlobInfo>> {
        self.with(async |c| {
            let rows = c.query(LIST, &[&ns.as_str()]).await?;
            Ok(rows
                .iter()
                .map(|r| BlobInfo {
                    sha256: r.get(0),
                    size: r.get::<_, i64>(1) as u64,
                    idle: Duration::from_millis(r.get::<_, i64>(2).max(0) as u64),
                })
                .collect())
        })
    }

    fn delete_if_idle(&self, ns: Namespace, sha256: &str, grace: Duration) -> Result<bool> {
        let sha = validate_sha256(sha256)?;
        Ok(self.delete_one(ns, &sha, grace)?.is_some())
    }

    fn delete_unreferenced(
        &self,
        ns: Namespace,
        grace: Duration,
        referenced: &dyn Fn(&str) -> bool,
    ) -> Result<Swept> {
        let mut swept = Swept::default();
        let idle: Vec<String> = self.with(async |c| {
            let rows = c.query(IDLE, &[&ns.as_str(), &ms(grace)]).await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?;
        for sha in idle.iter().filter(|s| !referenced(s)) {
            if let Some(size) = self.delete_one(ns, sha, grace)? {
                swept.deleted += 1;
                swept.deleted_bytes += size;
                tracing::debug!(namespace = %ns, sha256 = %sha, size, "deleted unreferenced shared blob");
            }
        }
        swept.abandoned_uploads = self.with(async |c| {
            let tx = c.transaction().await?;
            let rows = tx.query(REAP, &[&ns.as_str(), &ms(grace)]).await?;
            let uploads: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
            if !uploads.is_empty() {
                tx.execute(DROP_CHUNKS, &[&uploads]).await?;
            }
            tx.commit().await?;
            Ok(uploads.len())
        })?;
        Ok(swept)
    }
}

impl PgBlobs {
    /// Deletes the blob and its chunks if idle past `grace`; its size if deleted.
    fn delete_one(&self, ns: Namespace, sha: &str, grace: Duration) -> Result<Option<u64>> {
        self.with(async |c| {
            let tx = c.transaction().await?;
            let Some(row) = tx
                .query_opt(DELETE_IDLE, &[&ns.as_str(), &sha, &ms(grace)])
                .await?
            else {
                return Ok(None);
            };
            let (upload, size): (i64, i64) = (row.get(0), row.get(1));
            tx.execute(DROP_CHUNKS, &[&vec![upload]]).await?;
            tx.commit().await?;
            Ok(Some(size as u64))
        })
    }
}

/// A temp file removed on drop unless kept.
struct TempFile(Option<std::path::PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().expect("present until kept")
    }
    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}
