//! Multipart uploads and their parts.

use super::{decode_json, decref, incref, key_string, require_bucket};
use crate::model::{Part, Upload};
use crate::store::Released;
use crate::{ObjectError, Result};
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};

const UPLOAD_COLUMNS: &str = "upload_id, bucket, key, created_ms, attrs";

fn upload_from_row(r: &Row<'_>) -> rusqlite::Result<Result<Upload>> {
    let key: Vec<u8> = r.get(2)?;
    let attrs: String = r.get(4)?;
    let upload_id: String = r.get(0)?;
    let bucket: String = r.get(1)?;
    let created_ms: i64 = r.get(3)?;
    Ok(key_string(key).and_then(|key| {
        Ok(Upload {
            upload_id,
            bucket,
            key,
            created_ms,
            attrs: decode_json(&attrs)?,
        })
    }))
}

fn collect_uploads(
    rows: impl Iterator<Item = rusqlite::Result<Result<Upload>>>,
) -> Result<Vec<Upload>> {
    rows.map(|r| r.map_err(ObjectError::from).and_then(|u| u))
        .collect()
}

pub(super) fn create(tx: &Transaction<'_>, u: &Upload) -> Result<()> {
    require_bucket(tx, &u.bucket)?;
    let attrs = serde_json::to_string(&u.attrs).unwrap_or_else(|_| "{}".into());
    tx.execute(
        "INSERT INTO uploads (upload_id, bucket, key, created_ms, attrs) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![u.upload_id, u.bucket, u.key.as_bytes(), u.created_ms, attrs],
    )?;
    Ok(())
}

pub(super) fn find(conn: &Connection, bucket: &str, key: &str, upload_id: &str) -> Result<Upload> {
    require_bucket(conn, bucket)?;
    conn.query_row(
        &format!(
            "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE upload_id = ?1 AND bucket = ?2 AND key = ?3"
        ),
        params![upload_id, bucket, key.as_bytes()],
        upload_from_row,
    )
    .optional()?
    .transpose()?
    .ok_or_else(|| ObjectError::NoSuchUpload(upload_id.to_string()))
}

pub(super) fn put_part(tx: &Transaction<'_>, upload_id: &str, p: &Part) -> Result<Released> {
    let exists: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM uploads WHERE upload_id = ?1)",
        [upload_id],
        |r| r.get(0),
    )?;
    if !exists {
        return Err(ObjectError::NoSuchUpload(upload_id.to_string()));
    }
    let old: Option<String> = tx
        .query_row(
            "SELECT sha256 FROM parts WHERE upload_id = ?1 AND number = ?2",
            params![upload_id, p.number],
            |r| r.get(0),
        )
        .optional()?;
    incref(tx, &p.sha256)?;
    let mut released = Vec::new();
    if let Some(old) = old {
        decref(tx, &old, &mut released)?;
    }
    tx.execute(
        "INSERT OR REPLACE INTO parts
            (upload_id, number, sha256, size, etag, last_modified_ms, checksum)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            upload_id,
            p.number,
            p.sha256,
            p.size as i64,
            p.etag,
            p.last_modified_ms,
            super::checksum_json(p.checksum.as_ref()),
        ],
    )?;
    Ok(released)
}

pub(super) fn parts(
    conn: &Connection,
    upload_id: &str,
    after: u32,
    max: usize,
) -> Result<(Vec<Part>, bool)> {
    let mut stmt = conn.prepare_cached(
        "SELECT number, sha256, size, etag, last_modified_ms, checksum FROM parts
         WHERE upload_id = ?1 AND number > ?2 ORDER BY number LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![upload_id, after, max as i64 + 1], |r| {
        let checksum: Option<String> = r.get(5)?;
        Ok((
            Part {
                number: r.get(0)?,
                sha256: r.get(1)?,
                size: r.get::<_, i64>(2)? as u64,
                etag: r.get(3)?,
                last_modified_ms: r.get(4)?,
                checksum: None,
            },
            checksum,
        ))
    })?;
    let mut parts = Vec::new();
    for row in rows {
        let (mut part, checksum) = row?;
        if let Some(c) = checksum {
            part.checksum = Some(super::decode_json(&c)?);
        }
        parts.push(part);
    }
    let more = parts.len() > max;
    parts.truncate(max);
    Ok((parts, more))
}

/// Deletes the upload and its parts, releasing their blobs.
pub(super) fn drop_upload(
    tx: &Transaction<'_>,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<Released> {
    find(tx, bucket, key, upload_id)?;
    let shas: Vec<String> = {
        let mut stmt = tx.prepare("SELECT sha256 FROM parts WHERE upload_id = ?1")?;
        let rows = stmt.query_map([upload_id], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut released = Vec::new();
    for sha in &shas {
        decref(tx, sha, &mut released)?;
    }
    tx.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id])?;
    Ok(released)
}

pub(super) fn list(
    conn: &Connection,
    bucket: &str,
    prefix: &str,
    max: usize,
) -> Result<(Vec<Upload>, bool)> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads
         WHERE bucket = ?1 AND substr(key, 1, ?3) = ?2
         ORDER BY key, created_ms LIMIT ?4"
    ))?;
    let rows = stmt.query_map(
        params![
            bucket,
            prefix.as_bytes(),
            prefix.len() as i64,
            max as i64 + 1
        ],
        upload_from_row,
    )?;
    let mut uploads = collect_uploads(rows)?;
    let more = uploads.len() > max;
    uploads.truncate(max);
    Ok((uploads, more))
}

pub(super) fn started_before(conn: &Connection, before_ms: i64) -> Result<Vec<Upload>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {UPLOAD_COLUMNS} FROM uploads WHERE created_ms < ?1 ORDER BY created_ms"
    ))?;
    let rows = stmt.query_map([before_ms], upload_from_row)?;
    collect_uploads(rows)
}
