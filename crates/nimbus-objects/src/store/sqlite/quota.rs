//! Quotas: the objects and bytes of each bucket (`bucket_usage`, kept by triggers on
//! `objects` in the transaction of every write) checked against the bucket's quota (its
//! `nimbus:quota-bytes` and `nimbus:quota-objects` tags) and the store's (`--s3-max-bytes`,
//! `--s3-max-objects`) before a write that grows them. The check and the write are one
//! transaction, and writes are serialized, so concurrent PUTs cannot overshoot together.

use crate::model::{ObjectMeta, Quota};
use crate::{ObjectError, Result};
use rusqlite::{Connection, OptionalExtension};
use std::collections::BTreeMap;

/// The tag that caps a bucket's bytes.
pub const QUOTA_BYTES_TAG: &str = "nimbus:quota-bytes";
/// The tag that caps a bucket's object count.
pub const QUOTA_OBJECTS_TAG: &str = "nimbus:quota-objects";

/// A bucket's quota from its tags (values checked when the tags were set).
pub(crate) fn of_tags(tags: &BTreeMap<String, String>) -> Quota {
    let get = |name: &str| tags.get(name).and_then(|v| v.trim().parse().ok());
    Quota {
        max_bytes: get(QUOTA_BYTES_TAG),
        max_objects: get(QUOTA_OBJECTS_TAG),
    }
}

/// `InvalidTag` unless each quota tag is a non-negative integer.
pub(crate) fn validate_tags(tags: &BTreeMap<String, String>) -> Result<()> {
    for name in [QUOTA_BYTES_TAG, QUOTA_OBJECTS_TAG] {
        if let Some(v) = tags.get(name) {
            if v.trim().parse::<u64>().is_err() {
                return Err(ObjectError::InvalidTag(format!(
                    "the value of {name} must be a non-negative integer, not {v:?}"
                )));
            }
        }
    }
    Ok(())
}

fn usage(conn: &Connection, bucket: Option<&str>) -> Result<(u64, u64)> {
    let (objects, bytes): (i64, i64) = match bucket {
        Some(b) => conn
            .prepare_cached("SELECT objects, bytes FROM bucket_usage WHERE bucket = ?1")?
            .query_row([b], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?
            .unwrap_or((0, 0)),
        None => conn
            .prepare_cached(
                "SELECT COALESCE(SUM(objects), 0), COALESCE(SUM(bytes), 0) FROM bucket_usage",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?,
    };
    Ok((objects.max(0) as u64, bytes.max(0) as u64))
}

/// Refuses (`QuotaExceeded`) writing `obj` over `current` when that would take the bucket
/// or the store past a quota. A write that adds no object and no bytes always passes (an
/// overwrite with fewer bytes frees room).
pub(crate) fn check(
    conn: &Connection,
    obj: &ObjectMeta,
    current: Option<&ObjectMeta>,
    store: &Quota,
) -> Result<()> {
    let added_objects = u64::from(current.is_none());
    let old_size = current.map_or(0, |c| c.size);
    if added_objects == 0 && obj.size <= old_size {
        return Ok(());
    }
    let tags: Option<String> = conn
        .prepare_cached("SELECT tags FROM bucket_tags WHERE bucket = ?1")?
        .query_row([&obj.bucket], |r| r.get(0))
        .optional()?;
    let bucket_quota = match tags {
        Some(t) => of_tags(&super::decode_json(&t)?),
        None => Quota::default(),
    };
    for (quota, scope) in [(&bucket_quota, Some(obj.bucket.as_str())), (store, None)] {
        if quota.is_unlimited() {
            continue;
        }
        let (objects, bytes) = usage(conn, scope)?;
        let new_objects = objects + added_objects;
        let new_bytes = (bytes + obj.size).saturating_sub(old_size);
        let what = match scope {
            Some(b) => format!("bucket {b}"),
            None => "the object store".to_string(),
        };
        if let Some(max) = quota.max_objects.filter(|&m| new_objects > m) {
            return Err(ObjectError::QuotaExceeded(format!(
                "{what} would hold {new_objects} objects; its quota is {max}"
            )));
        }
        if let Some(max) = quota.max_bytes.filter(|&m| new_bytes > m) {
            return Err(ObjectError::QuotaExceeded(format!(
                "{what} would hold {new_bytes} bytes; its quota is {max}"
            )));
        }
    }
    Ok(())
}
