//! Notification configurations and the outbox.

use super::{decode_json, require_bucket};
use crate::model::ObjectMeta;
use crate::notify::{Notes, Notification, NotificationConfig, Outgoing, Target};
use crate::{ObjectError, Result};
use rusqlite::{params, Connection, OptionalExtension, Transaction};

/// The next S3 event sequencer number (starting at 1; persists across restarts).
fn next_sequencer(tx: &Transaction<'_>) -> Result<u64> {
    let n: i64 = tx.query_row(
        "INSERT INTO notification_sequencer (id, last) VALUES (0, 1)
         ON CONFLICT (id) DO UPDATE SET last = last + 1
         RETURNING last",
        [],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}

fn insert(tx: &Transaction<'_>, bucket: &str, n: &Notification, now_ms: i64) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO notification_outbox (bucket, target, arn, payload, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        bucket,
        n.target.kind(),
        n.target.arn(),
        n.payload,
        now_ms
    ])?;
    Ok(())
}

/// Records the notes' notifications about `obj` (nothing, and no sequencer taken, when the
/// notes are empty).
pub(super) fn record(tx: &Transaction<'_>, notes: &Notes, obj: &ObjectMeta) -> Result<()> {
    if notes.is_empty() {
        return Ok(());
    }
    let n = next_sequencer(tx)?;
    for note in notes.notifications(obj, n) {
        insert(tx, &obj.bucket, &note, notes.time_ms())?;
    }
    Ok(())
}

pub(super) fn config(conn: &Connection, bucket: &str) -> Result<Option<NotificationConfig>> {
    require_bucket(conn, bucket)?;
    let text: Option<String> = conn
        .prepare_cached("SELECT config FROM notification_configs WHERE bucket = ?1")?
        .query_row([bucket], |r| r.get(0))
        .optional()?;
    text.map(|t| decode_json(&t)).transpose()
}

pub(super) fn set_config(
    tx: &Transaction<'_>,
    bucket: &str,
    config: &NotificationConfig,
    tests: &[Notification],
    now_ms: i64,
) -> Result<()> {
    require_bucket(tx, bucket)?;
    if config.is_empty() {
        tx.execute(
            "DELETE FROM notification_configs WHERE bucket = ?1",
            [bucket],
        )?;
    } else {
        let text = serde_json::to_string(config).map_err(|e| {
            ObjectError::Database(format!("encoding a notification configuration: {e}"))
        })?;
        tx.execute(
            "INSERT INTO notification_configs (bucket, config) VALUES (?1, ?2)
             ON CONFLICT (bucket) DO UPDATE SET config = excluded.config",
            params![bucket, text],
        )?;
    }
    for t in tests {
        insert(tx, bucket, t, now_ms)?;
    }
    Ok(())
}

pub(super) fn pending(conn: &Connection, after: u64, limit: usize) -> Result<Vec<Outgoing>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, bucket, target, arn, payload, created_ms FROM notification_outbox
         WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![after, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
            r.get::<_, String>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, bucket, kind, arn, payload, created_ms) = row?;
        out.push(Outgoing {
            seq: seq as u64,
            bucket,
            target: Target::from_stored(&kind, &arn)?,
            payload,
            created_ms,
        });
    }
    Ok(out)
}

pub(super) fn remove(tx: &Transaction<'_>, seqs: &[u64]) -> Result<()> {
    let mut stmt = tx.prepare_cached("DELETE FROM notification_outbox WHERE seq = ?1")?;
    for &seq in seqs {
        if let Ok(seq) = i64::try_from(seq) {
            stmt.execute([seq])?;
        }
    }
    Ok(())
}
