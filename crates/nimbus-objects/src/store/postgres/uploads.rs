//! Multipart uploads and their parts. Writes of one upload (parts, completion, abort) take
//! turns on its row (`FOR UPDATE`).

use super::{decode_json, key_string, lock_bucket, require_bucket, BucketLock, Refs, Tx};
use crate::model::{Part, Upload};
use crate::store::Released;
use crate::{ObjectError, Result};
use nimbus_pg::Row;

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, created_ms, attrs";

fn upload_from_row(r: &Row) -> Result<Upload> {
    Ok(Upload {
        upload_id: r.get(0),
        bucket: r.get(1),
        key: key_string(r.get(2))?,
        created_ms: r.get(3),
        attrs: decode_json(r.get::<_, &str>(4))?,
    })
}

pub(super) async fn create(tx: &Tx<'_>, u: &Upload) -> Result<()> {
    lock_bucket(tx, &u.bucket, BucketLock::Keep).await?;
    let attrs = serde_json::to_string(&u.attrs).unwrap_or_else(|_| "{}".into());
    tx.execute(
        "INSERT INTO objects_uploads (upload_id, bucket, key, created_ms, attrs)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &u.upload_id,
            &u.bucket,
            &u.key.as_bytes(),
            &u.created_ms,
            &attrs,
        ],
    )
    .await?;
    Ok(())
}

/// The upload (locked when `lock`); `NoSuchBucket`, `NoSuchUpload`.
pub(super) async fn find(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
    upload_id: &str,
    lock: bool,
) -> Result<Upload> {
    require_bucket(tx, bucket).await?;
    let sql = format!(
        "SELECT {UPLOAD_COLUMNS} FROM objects_uploads
         WHERE upload_id = $1 AND bucket = $2 AND key = $3{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    tx.query_opt(&sql, &[&upload_id, &bucket, &key.as_bytes()])
        .await?
        .map(|r| upload_from_row(&r))
        .transpose()?
        .ok_or_else(|| ObjectError::NoSuchUpload(upload_id.to_string()))
}

pub(super) async fn put_part(tx: &Tx<'_>, upload_id: &str, p: &Part) -> Result<Released> {
    let exists = tx
        .query_opt(
            "SELECT 1 FROM objects_uploads WHERE upload_id = $1 FOR UPDATE",
            &[&upload_id],
        )
        .await?;
    if exists.is_none() {
        return Err(ObjectError::NoSuchUpload(upload_id.to_string()));
    }
    let number = i64::from(p.number);
    let old = tx
        .query_opt(
            "SELECT sha256 FROM objects_parts WHERE upload_id = $1 AND number = $2",
            &[&upload_id, &number],
        )
        .await?;
    let mut refs = Refs::default();
    refs.take(&p.sha256);
    if let Some(old) = old {
        refs.drop(old.get(0));
    }
    tx.execute(
        "INSERT INTO objects_parts
            (upload_id, number, sha256, size, etag, last_modified_ms, checksum)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (upload_id, number) DO UPDATE SET
            sha256 = excluded.sha256, size = excluded.size, etag = excluded.etag,
            last_modified_ms = excluded.last_modified_ms, checksum = excluded.checksum",
        &[
            &upload_id,
            &number,
            &p.sha256,
            &(p.size as i64),
            &p.etag,
            &p.last_modified_ms,
            &super::checksum_json(p.checksum.as_ref()),
        ],
    )
    .await?;
    refs.apply(tx).await
}

pub(super) async fn parts(
    tx: &Tx<'_>,
    upload_id: &str,
    after: u32,
    max: usize,
) -> Result<(Vec<Part>, bool)> {
    let rows = tx
        .query(
            "SELECT number, sha256, size, etag, last_modified_ms, checksum FROM objects_parts
             WHERE upload_id = $1 AND number > $2 ORDER BY number LIMIT $3",
            &[&upload_id, &i64::from(after), &(max as i64 + 1)],
        )
        .await?;
    let mut parts = rows
        .iter()
        .map(|r| {
            let checksum: Option<&str> = r.get(5);
            Ok(Part {
                number: r.get::<_, i64>(0) as u32,
                sha256: r.get(1),
                size: r.get::<_, i64>(2) as u64,
                etag: r.get(3),
                last_modified_ms: r.get(4),
                checksum: checksum.map(decode_json).transpose()?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let more = parts.len() > max;
    parts.truncate(max);
    Ok((parts, more))
}

/// Deletes the upload and its parts, dropping their references to blobs into `refs`.
pub(super) async fn drop_upload(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
    upload_id: &str,
    refs: &mut Refs,
) -> Result<()> {
    find(tx, bucket, key, upload_id, true).await?;
    let rows = tx
        .query(
            "SELECT sha256 FROM objects_parts WHERE upload_id = $1",
            &[&upload_id],
        )
        .await?;
    for r in &rows {
        refs.drop(r.get(0));
    }
    tx.execute(
        "DELETE FROM objects_uploads WHERE upload_id = $1",
        &[&upload_id],
    )
    .await?;
    Ok(())
}

pub(super) async fn list(
    tx: &Tx<'_>,
    bucket: &str,
    prefix: &str,
    max: usize,
) -> Result<(Vec<Upload>, bool)> {
    let rows = tx
        .query(
            &format!(
                "SELECT {UPLOAD_COLUMNS} FROM objects_uploads
                 WHERE bucket = $1 AND substring(key FROM 1 FOR $3) = $2
                 ORDER BY key, created_ms LIMIT $4"
            ),
            &[
                &bucket,
                &prefix.as_bytes(),
                &(prefix.len() as i32),
                &(max as i64 + 1),
            ],
        )
        .await?;
    let mut uploads = rows
        .iter()
        .map(upload_from_row)
        .collect::<Result<Vec<_>>>()?;
    let more = uploads.len() > max;
    uploads.truncate(max);
    Ok((uploads, more))
}

pub(super) async fn started_before(tx: &Tx<'_>, before_ms: i64) -> Result<Vec<Upload>> {
    let rows = tx
        .query(
            &format!(
                "SELECT {UPLOAD_COLUMNS} FROM objects_uploads WHERE created_ms < $1
                 ORDER BY created_ms"
            ),
            &[&before_ms],
        )
        .await?;
    rows.iter().map(upload_from_row).collect()
}
