//! The PostgreSQL [`MetaStore`] (cluster mode, issue 18): the SQLite store's semantics over
//! a shared [`nimbus_pg::Pg`] pool, with several nodes writing at once. Tables are named
//! `objects_…`; every method is one transaction.
//!
//! SQLite serialises every write with `BEGIN IMMEDIATE`; here rows carry the locks, always
//! taken in one order (so two writers wait for each other instead of deadlocking):
//! 1. with a store quota (`--s3-max-bytes`/`--s3-max-objects`), a write that can add an
//!    object (put, copy, completion) first takes a transaction-scoped advisory lock, so the
//!    store-wide sum it checks cannot change under it but by deletes;
//! 2. every write of an object row locks its bucket's `objects_bucket_usage` row
//!    (`FOR NO KEY UPDATE`): the quota check, the condition (`If-Match`/`If-None-Match`)
//!    and the write it guards see no concurrent write of the bucket, and the usage counts
//!    change in the same transaction; creating an upload holds it `FOR KEY SHARE` and
//!    deleting the bucket `FOR UPDATE`, so a bucket cannot vanish under either;
//! 3. then the upload row (`FOR UPDATE`: parts, completion and abort of one upload take
//!    turns) and the object row (`FOR UPDATE`);
//! 4. then the event sequencer row (`UPDATE … SET last = last + 1`, unique across nodes);
//! 5. last, the blobs' reference counts, changed by `refs = refs + n` in hash order.
//!
//! A transaction PostgreSQL aborts as a deadlock or serialisation failure anyway is retried
//! a few times before the error is returned.

mod configs;
mod list;
mod notify;
mod quota;
mod schema;
#[cfg(test)]
mod tests;
mod uploads;

use super::{MetaStore, Released};
use crate::cors::CorsConfig;
use crate::lifecycle::LifecycleConfig;
use crate::model::{
    Bucket, ListPage, ListQuery, ObjectAttrs, ObjectMeta, Part, Quota, Upload, WriteCondition,
};
use crate::notify::{Notes, Notification, NotificationConfig, Outgoing};
use crate::store::sqlite::{checksum_json, decode_json, key_string};
use crate::{ObjectError, Result};
use nimbus_pg::{Pg, Row};
use std::collections::{BTreeMap, HashSet};

/// The metadata of the object store in PostgreSQL, shared by every node.
pub struct PgMetaStore {
    pg: Pg,
    /// The store's quota (`--s3-max-bytes`, `--s3-max-objects`).
    quota: Quota,
}

impl std::fmt::Debug for PgMetaStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMetaStore")
            .field("pg", &self.pg)
            .finish_non_exhaustive()
    }
}

/// A transaction whose statements fail with [`ObjectError`] (see [`nimbus_pg::Pg::retrying`]).
pub(super) type Tx<'a> = nimbus_pg::Tx<'a, ObjectError>;

impl PgMetaStore {
    /// Opens the store on `pg`, creating or migrating the `objects_…` tables.
    pub fn open(pg: &Pg) -> Result<Self> {
        pg.migrate(schema::COMPONENT, schema::MIGRATIONS)?;
        Ok(Self {
            pg: pg.clone(),
            quota: Quota::default(),
        })
    }

    /// Limits what all buckets together may hold.
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// Runs `f` in one transaction (read committed, or one read-only snapshot when
    /// `snapshot`), committed when it returns `Ok` and rolled back otherwise.
    fn run<T>(&self, snapshot: bool, f: impl AsyncFn(&Tx<'_>) -> Result<T>) -> Result<T> {
        let setup =
            snapshot.then_some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
        self.pg.retrying(setup, f)
    }

    fn write<T>(&self, f: impl AsyncFn(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.run(false, f)
    }

    /// A read whose statements need no common snapshot (each is consistent by itself, and
    /// a bucket removed between two of them reads as removed).
    fn read<T>(&self, f: impl AsyncFn(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.run(false, f)
    }

    /// A read of several statements that must agree (a listing page's seeks).
    fn snapshot<T>(&self, f: impl AsyncFn(&Tx<'_>) -> Result<T>) -> Result<T> {
        self.run(true, f)
    }
}

const OBJECT_COLUMNS: &str =
    "key, sha256, size, etag, last_modified_ms, attrs, tags, parts, part_sizes, checksum";

fn object_from_row(bucket: &str, r: &Row) -> Result<ObjectMeta> {
    let size: i64 = r.get(2);
    let parts: Option<i64> = r.get(7);
    let part_sizes: Option<String> = r.get(8);
    let checksum: Option<String> = r.get(9);
    let mut attrs: ObjectAttrs = decode_json(r.get::<_, &str>(5))?;
    attrs.tags = decode_json(r.get::<_, &str>(6))?;
    Ok(ObjectMeta {
        bucket: bucket.to_string(),
        key: key_string(r.get(0))?,
        sha256: r.get(1),
        size: size as u64,
        etag: r.get(3),
        last_modified_ms: r.get(4),
        attrs,
        parts: parts.map(|p| p as u32),
        part_sizes: match part_sizes {
            Some(s) => decode_json(&s)?,
            None => Vec::new(),
        },
        checksum: checksum.map(|c| decode_json(&c)).transpose()?,
    })
}

/// The attributes column: everything but the tags, which have their own.
fn attrs_json(attrs: &ObjectAttrs) -> String {
    let without_tags = ObjectAttrs {
        tags: BTreeMap::new(),
        ..attrs.clone()
    };
    serde_json::to_string(&without_tags).unwrap_or_else(|_| "{}".into())
}

fn tags_json(tags: &BTreeMap<String, String>) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "{}".into())
}

/// `NoSuchBucket` unless the bucket exists.
async fn require_bucket(tx: &Tx<'_>, bucket: &str) -> Result<()> {
    tx.query_opt("SELECT 1 FROM objects_buckets WHERE name = $1", &[&bucket])
        .await?
        .map(|_| ())
        .ok_or_else(|| ObjectError::NoSuchBucket(bucket.to_string()))
}

/// How a write holds its bucket's usage row.
#[derive(Clone, Copy)]
enum BucketLock {
    /// Object writes: one at a time per bucket.
    Write,
    /// Creating an upload: the bucket stays, object writes go on.
    Keep,
    /// Deleting the bucket.
    Delete,
}

/// Locks the bucket's usage row (see the module doc); `NoSuchBucket` if there is none.
async fn lock_bucket(tx: &Tx<'_>, bucket: &str, how: BucketLock) -> Result<()> {
    let sql = match how {
        BucketLock::Write => {
            "SELECT 1 FROM objects_bucket_usage WHERE bucket = $1 FOR NO KEY UPDATE"
        }
        BucketLock::Keep => "SELECT 1 FROM objects_bucket_usage WHERE bucket = $1 FOR KEY SHARE",
        BucketLock::Delete => "SELECT 1 FROM objects_bucket_usage WHERE bucket = $1 FOR UPDATE",
    };
    tx.query_opt(sql, &[&bucket])
        .await?
        .map(|_| ())
        .ok_or_else(|| ObjectError::NoSuchBucket(bucket.to_string()))
}

/// Locks what a write of an object row in `bucket` needs (steps 1 and 2 of the module doc):
/// the store quota's lock when `adds` and there is a store quota, then the bucket.
async fn lock_for_object_write(
    tx: &Tx<'_>,
    bucket: &str,
    adds: bool,
    store_quota: &Quota,
) -> Result<()> {
    if adds && !store_quota.is_unlimited() {
        tx.query_one("SELECT pg_advisory_xact_lock($1)", &[&quota::STORE_LOCK])
            .await?;
    }
    lock_bucket(tx, bucket, BucketLock::Write).await
}

async fn find_object(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
    lock: bool,
) -> Result<Option<ObjectMeta>> {
    let sql = if lock {
        format!(
            "SELECT {OBJECT_COLUMNS} FROM objects_objects WHERE bucket = $1 AND key = $2 \
             FOR UPDATE"
        )
    } else {
        format!("SELECT {OBJECT_COLUMNS} FROM objects_objects WHERE bucket = $1 AND key = $2")
    };
    tx.query_opt(&sql, &[&bucket, &key.as_bytes()])
        .await?
        .map(|r| object_from_row(bucket, &r))
        .transpose()
}

/// Changes of the blobs' reference counts in a transaction, applied at its end in hash
/// order (step 5 of the module doc).
#[derive(Default)]
pub(super) struct Refs(BTreeMap<String, i64>);

impl Refs {
    pub(super) fn take(&mut self, sha256: &str) {
        *self.0.entry(sha256.to_string()).or_default() += 1;
    }

    pub(super) fn drop(&mut self, sha256: &str) {
        *self.0.entry(sha256.to_string()).or_default() -= 1;
    }

    /// Applies the changes; the hashes whose count reached zero.
    pub(super) async fn apply(self, tx: &Tx<'_>) -> Result<Released> {
        let mut released = Vec::new();
        for (sha, n) in self.0 {
            if n > 0 {
                tx.execute(
                    "INSERT INTO objects_blobs (sha256, refs) VALUES ($1, $2)
                     ON CONFLICT (sha256) DO UPDATE SET refs = objects_blobs.refs + $2",
                    &[&sha, &n],
                )
                .await?;
            } else if n < 0 {
                // Locked first: the count and the decision on it see no concurrent change.
                let refs: i64 = tx
                    .query_opt(
                        "SELECT refs FROM objects_blobs WHERE sha256 = $1 FOR UPDATE",
                        &[&sha],
                    )
                    .await?
                    .ok_or_else(|| {
                        ObjectError::Corrupt(format!(
                            "blob {sha} is referenced but has no reference count"
                        ))
                    })?
                    .get(0);
                if refs + n > 0 {
                    tx.execute(
                        "UPDATE objects_blobs SET refs = refs + $2 WHERE sha256 = $1",
                        &[&sha, &n],
                    )
                    .await?;
                } else {
                    tx.execute("DELETE FROM objects_blobs WHERE sha256 = $1", &[&sha])
                        .await?;
                    released.push(sha);
                }
            }
        }
        Ok(released)
    }
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

/// Adds `objects` and `bytes` to the bucket's usage (its row is locked).
async fn add_usage(tx: &Tx<'_>, bucket: &str, objects: i64, bytes: i64) -> Result<()> {
    if objects != 0 || bytes != 0 {
        tx.execute(
            "UPDATE objects_bucket_usage SET objects = objects + $2, bytes = bytes + $3
             WHERE bucket = $1",
            &[&bucket, &objects, &bytes],
        )
        .await?;
    }
    Ok(())
}

/// Writes `obj` over whatever has its key, if `cond` holds, and records `notes` about it.
/// The caller holds [`lock_for_object_write`].
async fn upsert_object(
    tx: &Tx<'_>,
    obj: &ObjectMeta,
    cond: &WriteCondition,
    notes: &Notes,
    store_quota: &Quota,
    refs: &mut Refs,
) -> Result<()> {
    let current = find_object(tx, &obj.bucket, &obj.key, true).await?;
    check_condition(current.as_ref(), cond)?;
    quota::check(tx, obj, current.as_ref(), store_quota).await?;
    refs.take(&obj.sha256);
    if let Some(old) = &current {
        refs.drop(&old.sha256);
    }
    let size = obj.size as i64;
    let parts = obj.parts.map(i64::from);
    let part_sizes = (!obj.part_sizes.is_empty())
        .then(|| serde_json::to_string(&obj.part_sizes).unwrap_or_default());
    let checksum = checksum_json(obj.checksum.as_ref());
    tx.execute(
        "INSERT INTO objects_objects
            (bucket, key, sha256, size, etag, last_modified_ms, attrs, tags, parts, part_sizes,
             checksum)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (bucket, key) DO UPDATE SET
            sha256 = excluded.sha256, size = excluded.size, etag = excluded.etag,
            last_modified_ms = excluded.last_modified_ms, attrs = excluded.attrs,
            tags = excluded.tags, parts = excluded.parts, part_sizes = excluded.part_sizes,
            checksum = excluded.checksum",
        &[
            &obj.bucket,
            &obj.key.as_bytes(),
            &obj.sha256,
            &size,
            &obj.etag,
            &obj.last_modified_ms,
            &attrs_json(&obj.attrs),
            &tags_json(&obj.attrs.tags),
            &parts,
            &part_sizes,
            &checksum,
        ],
    )
    .await?;
    let old_size = current.as_ref().map_or(0, |c| c.size as i64);
    add_usage(
        tx,
        &obj.bucket,
        i64::from(current.is_none()),
        size - old_size,
    )
    .await?;
    notify::record(tx, notes, obj).await
}

/// Removes the object (if its last-modified time is `modified_ms`, when given) and records
/// `notes` about it; `None` when nothing was removed.
async fn remove_object(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
    modified_ms: Option<i64>,
    notes: &Notes,
) -> Result<Option<Released>> {
    lock_bucket(tx, bucket, BucketLock::Write).await?;
    let Some(old) = find_object(tx, bucket, key, true).await? else {
        return Ok(None);
    };
    if modified_ms.is_some_and(|m| m != old.last_modified_ms) {
        return Ok(None);
    }
    tx.execute(
        "DELETE FROM objects_objects WHERE bucket = $1 AND key = $2",
        &[&bucket, &key.as_bytes()],
    )
    .await?;
    add_usage(tx, bucket, -1, -(old.size as i64)).await?;
    notify::record(tx, notes, &old).await?;
    let mut refs = Refs::default();
    refs.drop(&old.sha256);
    Ok(Some(refs.apply(tx).await?))
}

fn bucket_from_row(r: &Row) -> Bucket {
    Bucket {
        name: r.get(0),
        created_ms: r.get(1),
    }
}

impl MetaStore for PgMetaStore {
    fn create_bucket(&self, name: &str, now_ms: i64) -> Result<()> {
        self.write(async |tx| {
            let n = tx
                .execute(
                    "INSERT INTO objects_buckets (name, created_ms) VALUES ($1, $2)
                     ON CONFLICT DO NOTHING",
                    &[&name, &now_ms],
                )
                .await?;
            if n == 0 {
                return Err(ObjectError::BucketAlreadyOwnedByYou(name.to_string()));
            }
            tx.execute(
                "INSERT INTO objects_bucket_usage (bucket, objects, bytes) VALUES ($1, 0, 0)",
                &[&name],
            )
            .await?;
            Ok(())
        })
    }

    fn delete_bucket(&self, name: &str) -> Result<()> {
        self.write(async |tx| {
            lock_bucket(tx, name, BucketLock::Delete).await?;
            let busy: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM objects_objects WHERE bucket = $1)
                         OR EXISTS (SELECT 1 FROM objects_uploads WHERE bucket = $1)",
                    &[&name],
                )
                .await?
                .get(0);
            if busy {
                return Err(ObjectError::BucketNotEmpty(name.to_string()));
            }
            tx.execute("DELETE FROM objects_buckets WHERE name = $1", &[&name])
                .await?;
            Ok(())
        })
    }

    fn bucket(&self, name: &str) -> Result<Bucket> {
        self.read(async |tx| {
            tx.query_opt(
                "SELECT name, created_ms FROM objects_buckets WHERE name = $1",
                &[&name],
            )
            .await?
            .map(|r| bucket_from_row(&r))
            .ok_or_else(|| ObjectError::NoSuchBucket(name.to_string()))
        })
    }

    fn list_buckets(&self) -> Result<Vec<Bucket>> {
        self.read(async |tx| {
            let rows = tx
                .query(
                    "SELECT name, created_ms FROM objects_buckets ORDER BY name",
                    &[],
                )
                .await?;
            Ok(rows.iter().map(bucket_from_row).collect())
        })
    }

    fn object(&self, bucket: &str, key: &str) -> Result<ObjectMeta> {
        self.read(async |tx| {
            require_bucket(tx, bucket).await?;
            find_object(tx, bucket, key, false)
                .await?
                .ok_or_else(|| ObjectError::NoSuchKey(key.to_string()))
        })
    }

    fn put_object(
        &self,
        obj: &ObjectMeta,
        cond: &WriteCondition,
        notes: &Notes,
    ) -> Result<Released> {
        self.write(async |tx| {
            lock_for_object_write(tx, &obj.bucket, true, &self.quota).await?;
            let mut refs = Refs::default();
            upsert_object(tx, obj, cond, notes, &self.quota, &mut refs).await?;
            refs.apply(tx).await
        })
    }

    fn delete_object(&self, bucket: &str, key: &str, notes: &Notes) -> Result<Released> {
        self.write(async |tx| {
            Ok(remove_object(tx, bucket, key, None, notes)
                .await?
                .unwrap_or_default())
        })
    }

    fn expire_object(
        &self,
        bucket: &str,
        key: &str,
        modified_ms: i64,
        notes: &Notes,
    ) -> Result<Option<Released>> {
        self.write(async |tx| remove_object(tx, bucket, key, Some(modified_ms), notes).await)
    }

    fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: &BTreeMap<String, String>,
        notes: &Notes,
    ) -> Result<()> {
        self.write(async |tx| {
            lock_bucket(tx, bucket, BucketLock::Write).await?;
            let row = tx
                .query_opt(
                    &format!(
                        "UPDATE objects_objects SET tags = $3 WHERE bucket = $1 AND key = $2
                         RETURNING {OBJECT_COLUMNS}"
                    ),
                    &[&bucket, &key.as_bytes(), &tags_json(tags)],
                )
                .await?;
            let Some(row) = row else {
                return Err(ObjectError::NoSuchKey(key.to_string()));
            };
            if !notes.is_empty() {
                let obj = object_from_row(bucket, &row)?;
                notify::record(tx, notes, &obj).await?;
            }
            Ok(())
        })
    }

    fn bucket_tags(&self, bucket: &str) -> Result<Option<BTreeMap<String, String>>> {
        self.read(async |tx| {
            require_bucket(tx, bucket).await?;
            let row = tx
                .query_opt(
                    "SELECT tags FROM objects_bucket_tags WHERE bucket = $1",
                    &[&bucket],
                )
                .await?;
            row.map(|r| decode_json(r.get::<_, &str>(0))).transpose()
        })
    }

    fn set_bucket_tags(&self, bucket: &str, tags: Option<&BTreeMap<String, String>>) -> Result<()> {
        self.write(async |tx| {
            // The bucket's quota comes from its tags: writes checking it take turns with this.
            lock_bucket(tx, bucket, BucketLock::Write).await?;
            match tags {
                None => {
                    tx.execute(
                        "DELETE FROM objects_bucket_tags WHERE bucket = $1",
                        &[&bucket],
                    )
                    .await?;
                }
                Some(t) => {
                    tx.execute(
                        "INSERT INTO objects_bucket_tags (bucket, tags) VALUES ($1, $2)
                         ON CONFLICT (bucket) DO UPDATE SET tags = excluded.tags",
                        &[&bucket, &tags_json(t)],
                    )
                    .await?;
                }
            }
            Ok(())
        })
    }

    fn list_objects(&self, q: &ListQuery) -> Result<ListPage> {
        self.snapshot(async |tx| {
            require_bucket(tx, &q.bucket).await?;
            list::page(tx, q).await
        })
    }

    fn create_upload(&self, upload: &Upload) -> Result<()> {
        self.write(async |tx| uploads::create(tx, upload).await)
    }

    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Upload> {
        self.read(async |tx| uploads::find(tx, bucket, key, upload_id, false).await)
    }

    fn put_part(&self, upload_id: &str, part: &Part) -> Result<Released> {
        self.write(async |tx| uploads::put_part(tx, upload_id, part).await)
    }

    fn list_parts(&self, upload_id: &str, after: u32, max: usize) -> Result<(Vec<Part>, bool)> {
        self.read(async |tx| uploads::parts(tx, upload_id, after, max).await)
    }

    fn complete_upload(
        &self,
        upload_id: &str,
        obj: &ObjectMeta,
        cond: &WriteCondition,
        notes: &Notes,
    ) -> Result<Released> {
        self.write(async |tx| {
            lock_for_object_write(tx, &obj.bucket, true, &self.quota).await?;
            let mut refs = Refs::default();
            uploads::drop_upload(tx, &obj.bucket, &obj.key, upload_id, &mut refs).await?;
            upsert_object(tx, obj, cond, notes, &self.quota, &mut refs).await?;
            // A part whose blob became the object's (a one-part upload) nets out in `refs`.
            refs.apply(tx).await
        })
    }

    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Released> {
        self.write(async |tx| {
            let mut refs = Refs::default();
            uploads::drop_upload(tx, bucket, key, upload_id, &mut refs).await?;
            refs.apply(tx).await
        })
    }

    fn list_uploads(&self, bucket: &str, prefix: &str, max: usize) -> Result<(Vec<Upload>, bool)> {
        self.read(async |tx| {
            require_bucket(tx, bucket).await?;
            uploads::list(tx, bucket, prefix, max).await
        })
    }

    fn uploads_started_before(&self, before_ms: i64) -> Result<Vec<Upload>> {
        self.read(async |tx| uploads::started_before(tx, before_ms).await)
    }

    fn notification_config(&self, bucket: &str) -> Result<Option<NotificationConfig>> {
        self.read(async |tx| notify::config(tx, bucket).await)
    }

    fn set_notification_config(
        &self,
        bucket: &str,
        config: &NotificationConfig,
        tests: &[Notification],
        now_ms: i64,
    ) -> Result<()> {
        self.write(async |tx| notify::set_config(tx, bucket, config, tests, now_ms).await)
    }

    fn cors_config(&self, bucket: &str) -> Result<Option<CorsConfig>> {
        self.read(async |tx| configs::get(tx, bucket, configs::CORS).await)
    }

    fn set_cors_config(&self, bucket: &str, config: Option<&CorsConfig>) -> Result<()> {
        self.write(async |tx| configs::set(tx, bucket, configs::CORS, config).await)
    }

    fn lifecycle_config(&self, bucket: &str) -> Result<Option<LifecycleConfig>> {
        self.read(async |tx| configs::get(tx, bucket, configs::LIFECYCLE).await)
    }

    fn set_lifecycle_config(&self, bucket: &str, config: Option<&LifecycleConfig>) -> Result<()> {
        self.write(async |tx| configs::set(tx, bucket, configs::LIFECYCLE, config).await)
    }

    fn lifecycle_configs(&self) -> Result<Vec<(String, LifecycleConfig)>> {
        self.read(async |tx| configs::all(tx, configs::LIFECYCLE).await)
    }

    fn pending_notifications(&self, after: u64, limit: usize) -> Result<Vec<Outgoing>> {
        self.read(async |tx| notify::pending(tx, after, limit).await)
    }

    fn remove_notifications(&self, seqs: &[u64]) -> Result<()> {
        if seqs.is_empty() {
            return Ok(());
        }
        self.write(async |tx| notify::remove(tx, seqs).await)
    }

    fn blob_referenced(&self, sha256: &str) -> Result<bool> {
        self.read(async |tx| {
            Ok(tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM objects_blobs WHERE sha256 = $1)",
                    &[&sha256],
                )
                .await?
                .get(0))
        })
    }

    fn referenced_blobs(&self) -> Result<HashSet<String>> {
        self.read(async |tx| {
            let rows = tx.query("SELECT sha256 FROM objects_blobs", &[]).await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }
}
