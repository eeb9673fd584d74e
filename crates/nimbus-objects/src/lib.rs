//! Nimbus's object storage engine: buckets, objects and multipart uploads with S3's
//! semantics (ETags, preconditions, ranges, listing with delimiters), independent of any
//! wire protocol (`nimbus-s3` speaks S3 over it).
//!
//! Metadata lives behind the [`MetaStore`] trait (SQLite: `DATA_DIR/objects.db`;
//! PostgreSQL in cluster mode: [`PgMetaStore`]);
//! object bytes live in `DATA_DIR/objects/`, content-addressed by SHA-256 ([`BlobStore`]),
//! so a copy is a new row pointing at the same blob. Keys are never file names.
//!
//! Buckets may carry a CORS configuration ([`cors`]) and a lifecycle configuration
//! ([`lifecycle`], applied by [`Objects::apply_lifecycle`]).
//!
//! S3 event notifications ([`notify`]) are recorded in an outbox in the same transaction as
//! the write that caused them and delivered at least once by a consumer of
//! [`Objects::notifications_pending`].

mod blobs;
mod checksum;
mod conditions;
pub mod cors;
mod engine;
mod error;
pub mod lifecycle;
mod model;
mod names;
pub mod notify;
pub mod store;

pub use blobs::{BlobStore, Digests};
pub use checksum::{Checksum, ChecksumAlgorithm, ChecksumRequest};
pub use conditions::{etag_matches, ByteRange, ReadConditions};
pub use cors::{CorsConfig, CorsRule};
pub use engine::{BodyChecks, ObjectRead, Objects, ObjectsConfig, PutOptions, MAX_PARTS};
pub use error::{ObjectError, Result};
pub use lifecycle::{Expiration, LifecycleConfig, LifecycleCounts, LifecycleFilter, LifecycleRule};
pub use model::{
    Bucket, ContentHeaders, ListPage, ListQuery, ObjectAttrs, ObjectMeta, Part, Quota, Upload,
    WriteCondition,
};
pub use names::{validate_bucket_name, validate_key, MAX_KEY_BYTES};
pub use notify::{
    Destinations, EventKind, KeyFilter, Notes, Notification, NotificationConfig, Outgoing,
    Requester, Target, TargetConfig,
};
pub use store::sqlite::quota::{QUOTA_BYTES_TAG, QUOTA_OBJECTS_TAG};
pub use store::{postgres::PgMetaStore, sqlite::SqliteMetaStore, MetaStore};

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod notify_tests;
#[cfg(test)]
mod tests;
