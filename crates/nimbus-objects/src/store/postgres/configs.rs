//! A bucket's CORS and lifecycle configurations: one JSON row per bucket and kind.

use super::{decode_json, require_bucket, Tx};
use crate::{ObjectError, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub(super) const CORS: &str = "cors";
pub(super) const LIFECYCLE: &str = "lifecycle";

pub(super) async fn get<T: DeserializeOwned>(
    tx: &Tx<'_>,
    bucket: &str,
    kind: &str,
) -> Result<Option<T>> {
    require_bucket(tx, bucket).await?;
    let row = tx
        .query_opt(
            "SELECT config FROM objects_bucket_configs WHERE bucket = $1 AND kind = $2",
            &[&bucket, &kind],
        )
        .await?;
    row.map(|r| decode_json(r.get::<_, &str>(0))).transpose()
}

pub(super) async fn set<T: Serialize>(
    tx: &Tx<'_>,
    bucket: &str,
    kind: &str,
    config: Option<&T>,
) -> Result<()> {
    require_bucket(tx, bucket).await?;
    match config {
        None => {
            tx.execute(
                "DELETE FROM objects_bucket_configs WHERE bucket = $1 AND kind = $2",
                &[&bucket, &kind],
            )
            .await?;
        }
        Some(c) => {
            let text = serde_json::to_string(c).map_err(|e| {
                ObjectError::Database(format!("encoding a {kind} configuration: {e}"))
            })?;
            tx.execute(
                "INSERT INTO objects_bucket_configs (bucket, kind, config) VALUES ($1, $2, $3)
                 ON CONFLICT (bucket, kind) DO UPDATE SET config = excluded.config",
                &[&bucket, &kind, &text],
            )
            .await?;
        }
    }
    Ok(())
}

pub(super) async fn all<T: DeserializeOwned>(tx: &Tx<'_>, kind: &str) -> Result<Vec<(String, T)>> {
    let rows = tx
        .query(
            "SELECT bucket, config FROM objects_bucket_configs WHERE kind = $1 ORDER BY bucket",
            &[&kind],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.get(0), decode_json(r.get::<_, &str>(1))?)))
        .collect()
}
