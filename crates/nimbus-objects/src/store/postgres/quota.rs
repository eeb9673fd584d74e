//! Quotas: the objects and bytes of each bucket (`objects_bucket_usage`, changed in the
//! transaction of every write) checked against the bucket's quota (its `nimbus:quota-*`
//! tags) and the store's before a write that grows them. The check and the write are one
//! transaction holding the bucket's usage row (and, for the store's quota, the advisory
//! lock [`STORE_LOCK`]), so writes on several nodes cannot overshoot together.

use super::{decode_json, Tx};
use crate::model::{ObjectMeta, Quota};
use crate::store::sqlite::quota::of_tags;
use crate::{ObjectError, Result};

/// The advisory lock writes that may grow the store take when it has a quota
/// ("objquota" in ASCII; the migrations' lock is another number).
pub(super) const STORE_LOCK: i64 = 0x6f_62_6a_71_75_6f_74_61;

async fn usage(tx: &Tx<'_>, bucket: Option<&str>) -> Result<(u64, u64)> {
    let (objects, bytes): (i64, i64) = match bucket {
        Some(b) => tx
            .query_opt(
                "SELECT objects, bytes FROM objects_bucket_usage WHERE bucket = $1",
                &[&b],
            )
            .await?
            .map_or((0, 0), |r| (r.get(0), r.get(1))),
        None => {
            let r = tx
                .query_one(
                    "SELECT COALESCE(SUM(objects), 0)::BIGINT, COALESCE(SUM(bytes), 0)::BIGINT
                     FROM objects_bucket_usage",
                    &[],
                )
                .await?;
            (r.get(0), r.get(1))
        }
    };
    Ok((objects.max(0) as u64, bytes.max(0) as u64))
}

/// Refuses (`QuotaExceeded`) writing `obj` over `current` when that would take the bucket
/// or the store past a quota. A write that adds no object and no bytes always passes (an
/// overwrite with fewer bytes frees room).
pub(super) async fn check(
    tx: &Tx<'_>,
    obj: &ObjectMeta,
    current: Option<&ObjectMeta>,
    store: &Quota,
) -> Result<()> {
    let added_objects = u64::from(current.is_none());
    let old_size = current.map_or(0, |c| c.size);
    if added_objects == 0 && obj.size <= old_size {
        return Ok(());
    }
    let tags = tx
        .query_opt(
            "SELECT tags FROM objects_bucket_tags WHERE bucket = $1",
            &[&obj.bucket],
        )
        .await?;
    let bucket_quota = match tags {
        Some(r) => of_tags(&decode_json(r.get::<_, &str>(0))?),
        None => Quota::default(),
    };
    for (quota, scope) in [(&bucket_quota, Some(obj.bucket.as_str())), (store, None)] {
        if quota.is_unlimited() {
            continue;
        }
        let (objects, bytes) = usage(tx, scope).await?;
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
