//! A bucket's CORS and lifecycle configurations: one JSON row per bucket and kind.

use super::{decode_json, require_bucket};
use crate::{ObjectError, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(super) const CORS: &str = "cors";
pub(super) const LIFECYCLE: &str = "lifecycle";

pub(super) fn get<T: DeserializeOwned>(
    conn: &Connection,
    bucket: &str,
    kind: &str,
) -> Result<Option<T>> {
    require_bucket(conn, bucket)?;
    let text: Option<String> = conn
        .prepare_cached("SELECT config FROM bucket_configs WHERE bucket = ?1 AND kind = ?2")?
        .query_row([bucket, kind], |r| r.get(0))
        .optional()?;
    text.map(|t| decode_json(&t)).transpose()
}

pub(super) fn set<T: Serialize>(
    tx: &Transaction<'_>,
    bucket: &str,
    kind: &str,
    config: Option<&T>,
) -> Result<()> {
    require_bucket(tx, bucket)?;
    match config {
        None => {
            tx.execute(
                "DELETE FROM bucket_configs WHERE bucket = ?1 AND kind = ?2",
                [bucket, kind],
            )?;
        }
        Some(c) => {
            let text = serde_json::to_string(c).map_err(|e| {
                ObjectError::Database(format!("encoding a {kind} configuration: {e}"))
            })?;
            tx.execute(
                "INSERT INTO bucket_configs (bucket, kind, config) VALUES (?1, ?2, ?3)
                 ON CONFLICT (bucket, kind) DO UPDATE SET config = excluded.config",
                params![bucket, kind, text],
            )?;
        }
    }
    Ok(())
}

pub(super) fn all<T: DeserializeOwned>(conn: &Connection, kind: &str) -> Result<Vec<(String, T)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT bucket, config FROM bucket_configs WHERE kind = ?1 ORDER BY bucket",
    )?;
    let rows = stmt.query_map([kind], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (bucket, text) = row?;
        out.push((bucket, decode_json(&text)?));
    }
    Ok(out)
}
