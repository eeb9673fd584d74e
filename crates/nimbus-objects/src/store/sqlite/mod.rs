//! The SQLite [`MetaStore`]: `DATA_DIR/objects.db`, WAL mode, `synchronous=FULL` (a write
//! is on disk when its request is acknowledged), one connection behind a mutex.

mod configs;
mod list;
mod notify;
pub(crate) mod quota;
pub(crate) mod schema;
mod uploads;

use super::{MetaStore, Released};
use crate::cors::CorsConfig;
use crate::lifecycle::LifecycleConfig;
use crate::model::{
    Bucket, ListPage, ListQuery, ObjectAttrs, ObjectMeta, Part, Quota, Upload, WriteCondition,
};
use crate::notify::{Notes, Notification, NotificationConfig, Outgoing};
use crate::{ObjectError, Result};
use nimbus_store::Db;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// The metadata of the object store in one SQLite database.
pub struct SqliteMetaStore {
    conn: Mutex<Db>,
    /// The store's quota (`--s3-max-bytes`, `--s3-max-objects`).
    quota: Quota,
}

impl std::fmt::Debug for SqliteMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteMetaStore").finish_non_exhaustive()
    }
}

impl SqliteMetaStore {
    /// Opens (creating and migrating as needed) `data_dir/objects.db`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(ObjectError::io(format!("creating {}", data_dir.display())))?;
        let conn = nimbus_store::open_db(&data_dir.join("objects.db"), "FULL", schema::MIGRATIONS)
            .map_err(|e| ObjectError::Database(e.to_string()))?;
        Ok(Self {
            conn: Mutex::new(conn),
            quota: Quota::default(),
        })
    }

    /// Limits what all buckets together may hold.
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    fn conn(&self) -> MutexGuard<'_, Db> {
        // Dropping a rusqlite Transaction rolls it back, so a panic leaves the connection good.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` in one immediate (write-locking) transaction and commits it.
    pub(crate) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.write_tx()?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

pub(super) const OBJECT_COLUMNS: &str =
    "key, sha256, size, etag, last_modified_ms, attrs, tags, parts, part_sizes, checksum";

pub(super) fn object_from_row(bucket: &str, r: &Row<'_>) -> rusqlite::Result<Result<ObjectMeta>> {
    let key: Vec<u8> = r.get(0)?;
    let attrs: String = r.get(5)?;
    let tags: String = r.get(6)?;
    let size: i64 = r.get(2)?;
    let parts: Option<i64> = r.get(7)?;
    let part_sizes: Option<String> = r.get(8)?;
    let checksum: Option<String> = r.get(9)?;
    let row = ObjectMeta {
        bucket: bucket.to_string(),
        key: String::new(),
        sha256: r.get(1)?,
        size: size as u64,
        etag: r.get(3)?,
        last_modified_ms: r.get(4)?,
        attrs: ObjectAttrs::default(),
        parts: parts.map(|p| p as u32),
        part_sizes: Vec::new(),
        checksum: None,
    };
    Ok(decode_object(row, key, &attrs, &tags).and_then(|mut obj| {
        if let Some(sizes) = part_sizes {
            obj.part_sizes = decode_json(&sizes)?;
        }
        if let Some(c) = checksum {
            obj.checksum = Some(decode_json(&c)?);
        }
        Ok(obj)
    }))
}

/// Fills in the parts of a row that can be corrupt: the key's UTF-8 and the JSON columns.
fn decode_object(mut obj: ObjectMeta, key: Vec<u8>, attrs: &str, tags: &str) -> Result<ObjectMeta> {
    obj.key = key_string(key)?;
    obj.attrs = decode_json(attrs)?;
    obj.attrs.tags = decode_json(tags)?;
    Ok(obj)
}

pub(super) fn key_string(key: Vec<u8>) -> Result<String> {
    String::from_utf8(key).map_err(|_| ObjectError::Corrupt("a stored key is not UTF-8".into()))
}

pub(super) fn decode_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| ObjectError::Corrupt(format!("stored attributes: {e}")))
}

/// The attributes column: everything but the tags, which have their own.
fn attrs_json(attrs: &ObjectAttrs) -> String {
    let without_tags = ObjectAttrs {
        tags: BTreeMap::new(),
        ..attrs.clone()
    };
    serde_json::to_string(&without_tags).unwrap_or_else(|_| "{}".into())
}

pub(super) fn checksum_json(c: Option<&crate::Checksum>) -> Option<String> {
    c.and_then(|c| serde_json::to_string(c).ok())
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".into())
}

pub(super) fn require_bucket(conn: &Connection, bucket: &str) -> Result<()> {
    let found: Option<i64> = conn
        .query_row("SELECT 1 FROM buckets WHERE name = ?1", [bucket], |r| {
            r.get(0)
        })
        .optional()?;
    found
        .map(|_| ())
        .ok_or_else(|| ObjectError::NoSuchBucket(bucket.to_string()))
}

fn find_object(conn: &Connection, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
    conn.query_row(
        &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE bucket = ?1 AND key = ?2"),
        params![bucket, key.as_bytes()],
        |r| object_from_row(bucket, r),
    )
    .optional()?
    .transpose()
}

/// Takes one reference to a blob.
pub(super) fn incref(tx: &Transaction<'_>, sha256: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO blobs (sha256, refs) VALUES (?1, 1)
         ON CONFLICT (sha256) DO UPDATE SET refs = refs + 1",
        [sha256],
    )?;
    Ok(())
}

/// Drops one reference to a blob, adding it to `released` when none is left.
pub(super) fn decref(tx: &Transaction<'_>, sha256: &str, released: &mut Released) -> Result<()> {
    let refs: Option<i64> = tx
        .query_row("SELECT refs FROM blobs WHERE sha256 = ?1", [sha256], |r| {
            r.get(0)
        })
        .optional()?;
    match refs {
        Some(n) if n > 1 => {
            tx.execute(
                "UPDATE blobs SET refs = refs - 1 WHERE sha256 = ?1",
                [sha256],
            )?;
        }
        Some(_) => {
            tx.execute("DELETE FROM blobs WHERE sha256 = ?1", [sha256])?;
            released.push(sha256.to_string());
        }
        None => {
            return Err(ObjectError::Corrupt(format!(
                "blob {sha256} is referenced but has no reference count"
            )))
        }
    }
    Ok(())
}

/// Checks `cond` against the current object.
fn check_condition(current: Option<&ObjectMeta>, cond: &WriteCondition) -> Result<()> {
    let holds = match cond {
        WriteCondition::None => true,
        WriteCondition::IfAbsent => current.is_none(),
        WriteCondition::IfMatch(etag) => {
            current.is_some_and(|c| crate::etag_matches(etag, &c.etag))
        }
    };
    if holds {
        Ok(())
    } else {
        Err(ObjectError::PreconditionFailed)
    }
}

/// Writes `obj` over whatever has its key, if `cond` holds, and records `notes` about it.
pub(crate) fn upsert_object(
    tx: &Transaction<'_>,
    obj: &ObjectMeta,
    cond: &WriteCondition,
    notes: &Notes,
    store_quota: &Quota,
) -> Result<Released> {
    require_bucket(tx, &obj.bucket)?;
    let current = find_object(tx, &obj.bucket, &obj.key)?;
    check_condition(current.as_ref(), cond)?;
    quota::check(tx, obj, current.as_ref(), store_quota)?;
    incref(tx, &obj.sha256)?;
    let mut released = Vec::new();
    if let Some(old) = current {
        decref(tx, &old.sha256, &mut released)?;
        // Deleted, not replaced, so that the usage triggers see the old row go.
        tx.execute(
            "DELETE FROM objects WHERE bucket = ?1 AND key = ?2",
            params![obj.bucket, obj.key.as_bytes()],
        )?;
    }
    tx.execute(
        "INSERT INTO objects
            (bucket, key, sha256, size, etag, last_modified_ms, attrs, tags, parts, part_sizes,
             checksum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            obj.bucket,
            obj.key.as_bytes(),
            obj.sha256,
            obj.size as i64,
            obj.etag,
            obj.last_modified_ms,
            attrs_json(&obj.attrs),
            tags_json(&obj.attrs.tags),
            obj.parts.map(i64::from),
            (!obj.part_sizes.is_empty())
                .then(|| serde_json::to_string(&obj.part_sizes).unwrap_or_default()),
            checksum_json(obj.checksum.as_ref()),
        ],
    )?;
    notify::record(tx, notes, obj)?;
    Ok(released)
}

/// Removes the object (if its last-modified time is `modified_ms`, when given) and records
/// `notes` about it; `None` when nothing was removed.
fn remove_object(
    tx: &Transaction<'_>,
    bucket: &str,
    key: &str,
    modified_ms: Option<i64>,
    notes: &Notes,
) -> Result<Option<Released>> {
    require_bucket(tx, bucket)?;
    let Some(old) = find_object(tx, bucket, key)? else {
        return Ok(None);
    };
    if modified_ms.is_some_and(|m| m != old.last_modified_ms) {
        return Ok(None);
    }
    tx.execute(
        "DELETE FROM objects WHERE bucket = ?1 AND key = ?2",
        params![bucket, key.as_bytes()],
    )?;
    let mut released = Vec::new();
    decref(tx, &old.sha256, &mut released)?;
    notify::record(tx, notes, &old)?;
    Ok(Some(released))
}

impl MetaStore for SqliteMetaStore {
    fn create_bucket(&self, name: &str, now_ms: i64) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "INSERT INTO buckets (name, created_ms) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![name, now_ms],
            )?;
            if n == 0 {
                return Err(ObjectError::BucketAlreadyOwnedByYou(name.to_string()));
            }
            Ok(())
        })
    }

    fn delete_bucket(&self, name: &str) -> Result<()> {
        self.write(|tx| {
            require_bucket(tx, name)?;
            let busy: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM objects WHERE bucket = ?1)
                     OR EXISTS (SELECT 1 FROM uploads WHERE bucket = ?1)",
                [name],
                |r| r.get(0),
            )?;
            if busy {
                return Err(ObjectError::BucketNotEmpty(name.to_string()));
            }
            tx.execute("DELETE FROM buckets WHERE name = ?1", [name])?;
            Ok(())
        })
    }

    fn bucket(&self, name: &str) -> Result<Bucket> {
        self.conn()
            .query_row(
                "SELECT name, created_ms FROM buckets WHERE name = ?1",
                [name],
                |r| {
                    Ok(Bucket {
                        name: r.get(0)?,
                        created_ms: r.get(1)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| ObjectError::NoSuchBucket(name.to_string()))
    }

    fn list_buckets(&self) -> Result<Vec<Bucket>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT name, created_ms FROM buckets ORDER BY name")?;
        let rows = stmt.query_map([], |r| {
            Ok(Bucket {
                name: r.get(0)?,
                created_ms: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn object(&self, bucket: &str, key: &str) -> Result<ObjectMeta> {
        let conn = self.conn();
        require_bucket(&conn, bucket)?;
        find_object(&conn, bucket, key)?.ok_or_else(|| ObjectError::NoSuchKey(key.to_string()))
    }

    fn put_object(
        &self,
        obj: &ObjectMeta,
        cond: &WriteCondition,
        notes: &Notes,
    ) -> Result<Released> {
        self.write(|tx| upsert_object(tx, obj, cond, notes, &self.quota))
    }

    fn delete_object(&self, bucket: &str, key: &str, notes: &Notes) -> Result<Released> {
        self.write(|tx| Ok(remove_object(tx, bucket, key, None, notes)?.unwrap_or_default()))
    }

    fn expire_object(
        &self,
        bucket: &str,
        key: &str,
        modified_ms: i64,
        notes: &Notes,
    ) -> Result<Option<Released>> {
        self.write(|tx| remove_object(tx, bucket, key, Some(modified_ms), notes))
    }

    fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: &BTreeMap<String, String>,
        notes: &Notes,
    ) -> Result<()> {
        self.write(|tx| {
            require_bucket(tx, bucket)?;
            let n = tx.execute(
                "UPDATE objects SET tags = ?3 WHERE bucket = ?1 AND key = ?2",
                params![bucket, key.as_bytes(), tags_json(tags)],
            )?;
            if n == 0 {
                return Err(ObjectError::NoSuchKey(key.to_string()));
            }
            if !notes.is_empty() {
                if let Some(obj) = find_object(tx, bucket, key)? {
                    notify::record(tx, notes, &obj)?;
                }
            }
            Ok(())
        })
    }

    fn bucket_tags(&self, bucket: &str) -> Result<Option<BTreeMap<String, String>>> {
        let conn = self.conn();
        require_bucket(&conn, bucket)?;
        let text: Option<String> = conn
            .prepare_cached("SELECT tags FROM bucket_tags WHERE bucket = ?1")?
            .query_row([bucket], |r| r.get(0))
            .optional()?;
        text.map(|t| decode_json(&t)).transpose()
    }

    fn set_bucket_tags(&self, bucket: &str, tags: Option<&BTreeMap<String, String>>) -> Result<()> {
        self.write(|tx| {
            require_bucket(tx, bucket)?;
            match tags {
                None => {
                    tx.execute("DELETE FROM bucket_tags WHERE bucket = ?1", [bucket])?;
                }
                Some(t) => {
                    tx.execute(
                        "INSERT INTO bucket_tags (bucket, tags) VALUES (?1, ?2)
                         ON CONFLICT (bucket) DO UPDATE SET tags = excluded.tags",
                        params![bucket, tags_json(t)],
                    )?;
                }
            }
            Ok(())
        })
    }

    fn list_objects(&self, q: &ListQuery) -> Result<ListPage> {
        let conn = self.conn();
        require_bucket(&conn, &q.bucket)?;
        list::page(&conn, q)
    }

    fn create_upload(&self, upload: &Upload) -> Result<()> {
        self.write(|tx| uploads::create(tx, upload))
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Upload> {
        uploads::find(&self.conn(), bucket, key, upload_id)
    }

    fn put_part(&self, upload_id: &str, part: &Part) -> Result<Released> {
        self.write(|tx| uploads::put_part(tx, upload_id, part))
    }

    fn list_parts(&self, upload_id: &str, after: u32, max: usize) -> Result<(Vec<Part>, bool)> {
        uploads::parts(&self.conn(), upload_id, after, max)
    }

    fn complete_upload(
        &self,
        upload_id: &str,
        obj: &ObjectMeta,
        cond: &WriteCondition,
        notes: &Notes,
    ) -> Result<Released> {
        self.write(|tx| {
            let mut released = uploads::drop_upload(tx, &obj.bucket, &obj.key, upload_id)?;
            released.extend(upsert_object(tx, obj, cond, notes, &self.quota)?);
            // A part whose blob became the object's (a one-part upload) is referenced again.
            released.retain(|sha| sha != &obj.sha256);
            Ok(released)
        })
    }

    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Released> {
        self.write(|tx| uploads::drop_upload(tx, bucket, key, upload_id))
    }

    fn list_uploads(&self, bucket: &str, prefix: &str, max: usize) -> Result<(Vec<Upload>, bool)> {
        let conn = self.conn();
        require_bucket(&conn, bucket)?;
        uploads::list(&conn, bucket, prefix, max)
    }

    fn uploads_started_before(&self, before_ms: i64) -> Result<Vec<Upload>> {
        uploads::started_before(&self.conn(), before_ms)
    }

    fn notification_config(&self, bucket: &str) -> Result<Option<NotificationConfig>> {
        notify::config(&self.conn(), bucket)
    }

    fn set_notification_config(
        &self,
        bucket: &str,
        config: &NotificationConfig,
        tests: &[Notification],
        now_ms: i64,
    ) -> Result<()> {
        self.write(|tx| notify::set_config(tx, bucket, config, tests, now_ms))
    }

    fn cors_config(&self, bucket: &str) -> Result<Option<CorsConfig>> {
        configs::get(&self.conn(), bucket, configs::CORS)
    }

    fn set_cors_config(&self, bucket: &str, config: Option<&CorsConfig>) -> Result<()> {
        self.write(|tx| configs::set(tx, bucket, configs::CORS, config))
    }

    fn lifecycle_config(&self, bucket: &str) -> Result<Option<LifecycleConfig>> {
        configs::get(&self.conn(), bucket, configs::LIFECYCLE)
    }

    fn set_lifecycle_config(&self, bucket: &str, config: Option<&LifecycleConfig>) -> Result<()> {
        self.write(|tx| configs::set(tx, bucket, configs::LIFECYCLE, config))
    }

    fn lifecycle_configs(&self) -> Result<Vec<(String, LifecycleConfig)>> {
        configs::all(&self.conn(), configs::LIFECYCLE)
    }

    fn pending_notifications(&self, after: u64, limit: usize) -> Result<Vec<Outgoing>> {
        notify::pending(&self.conn(), after, limit)
    }

    fn remove_notifications(&self, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.write(|tx| notify::remove(tx, seqs))
    }

    fn blob_referenced(&self, sha256: &str) -> Result<bool> {
        Ok(self.conn().query_row(
            "SELECT EXISTS (SELECT 1 FROM blobs WHERE sha256 = ?1)",
            [sha256],
            |r| r.get(0),
        )?)
    }

    fn referenced_blobs(&self) -> Result<HashSet<String>> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT sha256 FROM blobs")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<HashSet<_>>>()?)
    }
}
