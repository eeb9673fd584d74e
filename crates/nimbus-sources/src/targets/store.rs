//! Targets and their outbox, in `sources.db` beside the source mappings.

use super::Target;
use crate::error::{Result, SourceError};
use crate::store::SqliteSourceStore;
use rusqlite::{params, OptionalExtension};

/// One message waiting for its target's broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxMessage {
    pub seq: i64,
    pub target: String,
    pub body: String,
    /// The W3C `traceparent` it carries.
    pub trace: Option<String>,
    /// Failed publishes so far.
    pub attempts: u32,
    pub created_ms: i64,
    /// Not before this time (back-off after a failure).
    pub next_ms: i64,
}

/// Targets and the outbox.
pub trait TargetStore: Send + Sync + 'static {
    /// Creates or replaces a target.
    fn put_target(&self, t: &Target) -> Result<()>;
    fn get_target(&self, name: &str) -> Result<Option<Target>>;
    fn list_targets(&self) -> Result<Vec<Target>>;
    /// Deletes a target and its undelivered messages (how many); `None` when missing.
    fn delete_target(&self, name: &str) -> Result<Option<u64>>;
    /// Stores a message for `target` (a `Missing` error when there is no such target).
    fn enqueue(&self, target: &str, body: &str, trace: Option<&str>, now_ms: i64) -> Result<i64>;
    /// The oldest `limit` messages of `target`, in order.
    fn head(&self, target: &str, limit: usize) -> Result<Vec<OutboxMessage>>;
    fn delivered(&self, seq: i64) -> Result<()>;
    /// Records a failed publish: retried from `next_ms`.
    fn failed(&self, seq: i64, next_ms: i64, error: &str) -> Result<()>;
    /// Messages waiting for `target`.
    fn depth(&self, target: &str) -> Result<u64>;
}

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS targets (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    body TEXT NOT NULL,
    trace TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL,
    next_ms INTEGER NOT NULL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_by_target ON outbox (target, seq);
";

fn decode(body: String) -> Result<Target> {
    serde_json::from_str(&body).map_err(|e| SourceError::Store(format!("corrupt target: {e}")))
}

impl TargetStore for SqliteSourceStore {
    fn put_target(&self, t: &Target) -> Result<()> {
        let body = serde_json::to_string(t).expect("a target serialises");
        self.db().execute(
            "INSERT INTO targets (name, body) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET body = excluded.body",
            params![t.name, body],
        )?;
        Ok(())
    }

    fn get_target(&self, name: &str) -> Result<Option<Target>> {
        let body: Option<String> = self
            .db()
            .query_row("SELECT body FROM targets WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        body.map(decode).transpose()
    }

    fn list_targets(&self) -> Result<Vec<Target>> {
        let db = self.db();
        let mut st = db.prepare("SELECT body FROM targets ORDER BY name")?;
        let bodies = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        bodies.into_iter().map(decode).collect()
    }

    fn delete_target(&self, name: &str) -> Result<Option<u64>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let n = tx.execute("DELETE FROM targets WHERE name = ?1", [name])?;
        let dropped = tx.execute("DELETE FROM outbox WHERE target = ?1", [name])?;
        tx.commit()?;
        Ok((n > 0).then_some(dropped as u64))
    }

    fn enqueue(&self, target: &str, body: &str, trace: Option<&str>, now_ms: i64) -> Result<i64> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let exists: Option<i64> = tx
            .query_row("SELECT 1 FROM targets WHERE name = ?1", [target], |r| {
                r.get(0)
            })
            .optional()?;
        if exists.is_none() {
            return Err(SourceError::Missing(format!(
                "no target {target}: declare it with PUT /v1/targets/{target}"
            )));
        }
        tx.execute(
            "INSERT INTO outbox (target, body, trace, created_ms, next_ms) VALUES (?1, ?2, ?3, ?4, ?4)",
            params![target, body, trace, now_ms],
        )?;
        let seq = tx.last_insert_rowid();
        tx.commit()?;
        Ok(seq)
    }

    fn head(&self, target: &str, limit: usize) -> Result<Vec<OutboxMessage>> {
        let db = self.db();
        let mut st = db.prepare(
            "SELECT seq, target, body, trace, attempts, created_ms, next_ms FROM outbox
             WHERE target = ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = st
            .query_map(params![target, limit as i64], |r| {
                Ok(OutboxMessage {
                    seq: r.get(0)?,
                    target: r.get(1)?,
                    body: r.get(2)?,
                    trace: r.get(3)?,
                    attempts: r.get(4)?,
                    created_ms: r.get(5)?,
                    next_ms: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn delivered(&self, seq: i64) -> Result<()> {
        self.db()
            .execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
        Ok(())
    }

    fn failed(&self, seq: i64, next_ms: i64, error: &str) -> Result<()> {
        self.db().execute(
            "UPDATE outbox SET attempts = attempts + 1, next_ms = ?2, last_error = ?3 WHERE seq = ?1",
            params![seq, next_ms, error],
        )?;
        Ok(())
    }

    fn depth(&self, target: &str) -> Result<u64> {
        Ok(self.db().query_row(
            "SELECT count(*) FROM outbox WHERE target = ?1",
            [target],
            |r| r.get::<_, i64>(0),
        )? as u64)
    }
}
