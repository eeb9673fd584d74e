//! The metadata store: buckets, object rows, uploads and parts, and the reference counts of
//! the blobs they point at. A trait in domain terms so a PostgreSQL backend can follow the
//! SQLite one ([`sqlite::SqliteMetaStore`]); every method is one transaction.
//!
//! Methods that drop a reference to a blob return the hashes whose count reached zero: the
//! engine then removes those files ([`crate::BlobStore::release`]), re-checking
//! [`MetaStore::blob_referenced`] so a concurrent write of the same bytes keeps its file.
//!
//! Writes that can cause S3 events take [`Notes`]: when the write happens and the notes are
//! not empty, the store takes the next event sequencer and records
//! [`Notes::notifications`] in its outbox **in the write's transaction** (nothing when the
//! write fails, e.g. on a precondition).

pub mod postgres;
pub mod sqlite;

use crate::cors::CorsConfig;
use crate::lifecycle::LifecycleConfig;
use crate::model::{Bucket, ListPage, ListQuery, ObjectMeta, Part, Upload, WriteCondition};
use crate::notify::{Notes, Notification, NotificationConfig, Outgoing};
use crate::Result;
use std::collections::HashSet;

/// Blob hashes no row refers to any more.
pub type Released = Vec<String>;

pub trait MetaStore: Send + Sync + 'static {
    /// Creates a bucket; `BucketAlreadyOwnedByYou` if it exists.
    fn create_bucket(&self, name: &str, now_ms: i64) -> Result<()>;
    /// Deletes an empty bucket (no objects, no uploads in progress).
    fn delete_bucket(&self, name: &str) -> Result<()>;
    fn bucket(&self, name: &str) -> Result<Bucket>;
    /// Every bucket, by name.
    fn list_buckets(&self) -> Result<Vec<Bucket>>;

    fn object(&self, bucket: &str, key: &str) -> Result<ObjectMeta>;
    /// Inserts or replaces the object row (taking a reference to its blob) if `cond` holds,
    /// recording `notes` about `obj`.
    fn put_object(
        &self,
        obj: &ObjectMeta,
        cond: &WriteCondition,
        notes: &Notes,
    ) -> Result<Released>;
    /// Deletes the object if it exists; `Ok` either way (S3 semantics) unless the bucket
    /// does not exist. `notes` (about the removed object) are recorded only if one was
    /// removed.
    fn delete_object(&self, bucket: &str, key: &str, notes: &Notes) -> Result<Released>;
    /// Deletes the object only if it is still the version last modified at `modified_ms`
    /// (a lifecycle expiry racing an overwrite keeps the new object); `None` when it was
    /// not removed.
    fn expire_object(
        &self,
        bucket: &str,
        key: &str,
        modified_ms: i64,
        notes: &Notes,
    ) -> Result<Option<Released>>;
    /// Replaces the object's tag set, recording `notes` about the object.
    fn set_tags(
        &self,
        bucket: &str,
        key: &str,
        tags: &std::collections::BTreeMap<String, String>,
        notes: &Notes,
    ) -> Result<()>;
    /// The bucket's tags (PutBucketTagging), if it has any.
    fn bucket_tags(
        &self,
        bucket: &str,
    ) -> Result<Option<std::collections::BTreeMap<String, String>>>;
    /// Replaces (or with `None` removes) the bucket's tags.
    fn set_bucket_tags(
        &self,
        bucket: &str,
        tags: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<()>;
    /// One page of keys in key order (UTF-8 byte order), with common prefixes folded.
    fn list_objects(&self, q: &ListQuery) -> Result<ListPage>;

    fn create_upload(&self, upload: &Upload) -> Result<()>;
    fn upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Upload>;
    /// Stores (or replaces) a part of an upload.
    fn put_part(&self, upload_id: &str, part: &Part) -> Result<Released>;
    /// Parts with numbers above `after`, at most `max`, and whether more follow.
    fn list_parts(&self, upload_id: &str, after: u32, max: usize) -> Result<(Vec<Part>, bool)>;
    /// Ends the upload: writes `obj` (if `cond` holds), drops the parts and records `notes`.
    fn complete_upload(
        &self,
        upload_id: &str,
        obj: &ObjectMeta,
        cond: &WriteCondition,
        notes: &Notes,
    ) -> Result<Released>;
    /// Drops the upload and its parts.
    fn abort_upload(&self, bucket: &str, key: &str, upload_id: &str) -> Result<Released>;
    /// Uploads in progress in `bucket` whose key starts with `prefix`, by key then start
    /// time, at most `max`, and whether more follow.
    fn list_uploads(&self, bucket: &str, prefix: &str, max: usize) -> Result<(Vec<Upload>, bool)>;
    /// Uploads started before `before_ms` (abandoned ones, to abort).
    fn uploads_started_before(&self, before_ms: i64) -> Result<Vec<Upload>>;

    /// The bucket's notification configuration, if it has one (`NoSuchBucket` if the bucket
    /// does not exist).
    fn notification_config(&self, bucket: &str) -> Result<Option<NotificationConfig>>;
    /// Replaces the bucket's notification configuration (an empty one removes it) and
    /// records `tests` (the `s3:TestEvent` messages) in the same transaction.
    fn set_notification_config(
        &self,
        bucket: &str,
        config: &NotificationConfig,
        tests: &[Notification],
        now_ms: i64,
    ) -> Result<()>;
    /// The bucket's CORS configuration, if it has one (`NoSuchBucket` if the bucket does
    /// not exist).
    fn cors_config(&self, bucket: &str) -> Result<Option<CorsConfig>>;
    /// Replaces (`Some`) or removes (`None`) the bucket's CORS configuration.
    fn set_cors_config(&self, bucket: &str, config: Option<&CorsConfig>) -> Result<()>;
    /// The bucket's lifecycle configuration, if it has one.
    fn lifecycle_config(&self, bucket: &str) -> Result<Option<LifecycleConfig>>;
    /// Replaces (`Some`) or removes (`None`) the bucket's lifecycle configuration.
    fn set_lifecycle_config(&self, bucket: &str, config: Option<&LifecycleConfig>) -> Result<()>;
    /// Every bucket with a lifecycle configuration, by name.
    fn lifecycle_configs(&self) -> Result<Vec<(String, LifecycleConfig)>>;

    /// Recorded notifications with sequence numbers above `after`, oldest first, at most
    /// `limit`.
    fn pending_notifications(&self, after: u64, limit: usize) -> Result<Vec<Outgoing>>;
    /// Removes delivered notifications (unknown numbers are ignored).
    fn remove_notifications(&self, seqs: &[u64]) -> Result<()>;

    /// Whether any object or part refers to the blob.
    fn blob_referenced(&self, sha256: &str) -> Result<bool>;
    /// Every referenced blob (for the sweep at start).
    fn referenced_blobs(&self) -> Result<HashSet<String>>;
}
