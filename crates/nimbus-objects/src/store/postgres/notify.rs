//! Notification configurations and the outbox.

use super::{decode_json, require_bucket, Tx};
use crate::model::ObjectMeta;
use crate::notify::{Notes, Notification, NotificationConfig, Outgoing, Target};
use crate::{ObjectError, Result};

/// The next S3 event sequencer number (starting at 1; persists across restarts). The
/// counter row stays locked until the write commits, so no two nodes hand out one number
/// and the outbox rows of notes commit in sequence order.
async fn next_sequencer(tx: &Tx<'_>) -> Result<u64> {
    let n: i64 = tx
        .query_one(
            "INSERT INTO objects_notification_sequencer (id, last) VALUES (0, 1)
             ON CONFLICT (id) DO UPDATE SET last = objects_notification_sequencer.last + 1
             RETURNING last",
            &[],
        )
        .await?
        .get(0);
    Ok(n as u64)
}

async fn insert(tx: &Tx<'_>, bucket: &str, n: &Notification, now_ms: i64) -> Result<()> {
    tx.execute(
        "INSERT INTO objects_notification_outbox (bucket, target, arn, payload, created_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &bucket,
            &n.target.kind(),
            &n.target.arn(),
            &n.payload,
            &now_ms,
        ],
    )
    .await?;
    Ok(())
}

/// Records the notes' notifications about `obj` (nothing, and no sequencer taken, when the
/// notes are empty).
pub(super) async fn record(tx: &Tx<'_>, notes: &Notes, obj: &ObjectMeta) -> Result<()> {
    if notes.is_empty() {
        return Ok(());
    }
    let n = next_sequencer(tx).await?;
    for note in notes.notifications(obj, n) {
        insert(tx, &obj.bucket, &note, notes.time_ms()).await?;
    }
    Ok(())
}

pub(super) async fn config(tx: &Tx<'_>, bucket: &str) -> Result<Option<NotificationConfig>> {
    require_bucket(tx, bucket).await?;
    let row = tx
        .query_opt(
            "SELECT config FROM objects_notification_configs WHERE bucket = $1",
            &[&bucket],
        )
        .await?;
    row.map(|r| decode_json(r.get::<_, &str>(0))).transpose()
}

pub(super) async fn set_config(
    tx: &Tx<'_>,
    bucket: &str,
    config: &NotificationConfig,
    tests: &[Notification],
    now_ms: i64,
) -> Result<()> {
    require_bucket(tx, bucket).await?;
    if config.is_empty() {
        tx.execute(
            "DELETE FROM objects_notification_configs WHERE bucket = $1",
            &[&bucket],
        )
        .await?;
    } else {
        let text = serde_json::to_string(config).map_err(|e| {
            ObjectError::Database(format!("encoding a notification configuration: {e}"))
        })?;
        tx.execute(
            "INSERT INTO objects_notification_configs (bucket, config) VALUES ($1, $2)
             ON CONFLICT (bucket) DO UPDATE SET config = excluded.config",
            &[&bucket, &text],
        )
        .await?;
    }
    for t in tests {
        insert(tx, bucket, t, now_ms).await?;
    }
    Ok(())
}

pub(super) async fn pending(tx: &Tx<'_>, after: u64, limit: usize) -> Result<Vec<Outgoing>> {
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = tx
        .query(
            "SELECT seq, bucket, target, arn, payload, created_ms
             FROM objects_notification_outbox
             WHERE seq > $1 ORDER BY seq LIMIT $2",
            &[&after, &limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Outgoing {
                seq: r.get::<_, i64>(0) as u64,
                bucket: r.get(1),
                target: Target::from_stored(r.get(2), r.get(3))?,
                payload: r.get(4),
                created_ms: r.get(5),
            })
        })
        .collect()
}

pub(super) async fn remove(tx: &Tx<'_>, seqs: &[u64]) -> Result<()> {
    let seqs: Vec<i64> = seqs.iter().filter_map(|&s| i64::try_from(s).ok()).collect();
    tx.execute(
        "DELETE FROM objects_notification_outbox WHERE seq = ANY($1)",
        &[&seqs],
    )
    .await?;
    Ok(())
}
