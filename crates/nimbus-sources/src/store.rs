//! Where source mappings and connector checkpoints live: a trait speaking domain
//! operations, with a SQLite backend (`sources.db` in the data directory).

use crate::error::{Result, SourceError};
use crate::model::SourceMapping;
use crate::source::Checkpoints;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Source mappings and the connectors' checkpoints.
pub trait SourceStore: Send + Sync + 'static {
    /// Stores a new mapping (`Config` error when the id exists).
    fn create(&self, m: &SourceMapping) -> Result<()>;
    fn get(&self, uuid: &str) -> Result<Option<SourceMapping>>;
    /// Replaces a mapping; false when it does not exist.
    fn update(&self, m: &SourceMapping) -> Result<bool>;
    /// Deletes a mapping and its checkpoints; the deleted mapping, if it existed.
    fn delete(&self, uuid: &str) -> Result<Option<SourceMapping>>;
    /// All mappings, oldest first.
    fn list(&self) -> Result<Vec<SourceMapping>>;
    fn checkpoint(&self, uuid: &str, key: &str) -> Result<Option<String>>;
    fn set_checkpoint(&self, uuid: &str, key: &str, value: &str) -> Result<()>;
    fn delete_checkpoint(&self, uuid: &str, key: &str) -> Result<()>;
}

/// The SQLite backend.
pub struct SqliteSourceStore {
    db: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS source_mappings (
    uuid TEXT PRIMARY KEY,
    created INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS source_checkpoints (
    uuid TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (uuid, key)
);
";

impl SqliteSourceStore {
    /// Opens (creating) `sources.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| SourceError::Store(format!("{}: {e}", data_dir.display())))?;
        let conn = Connection::open(data_dir.join("sources.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::targets::store::SCHEMA)?;
        Ok(Self {
            db: Mutex::new(conn),
        })
    }

    pub(crate) fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn decode(body: String) -> Result<SourceMapping> {
    serde_json::from_str(&body).map_err(|e| SourceError::Store(format!("corrupt mapping: {e}")))
}

fn encode(m: &SourceMapping) -> String {
    serde_json::to_string(m).expect("a mapping serialises")
}

impl SourceStore for SqliteSourceStore {
    fn create(&self, m: &SourceMapping) -> Result<()> {
        let n = self.db().execute(
            "INSERT OR IGNORE INTO source_mappings (uuid, created, body) VALUES (?1, ?2, ?3)",
            params![m.uuid, crate::source::now_ms(), encode(m)],
        )?;
        if n == 0 {
            return Err(SourceError::Config(format!(
                "a mapping with id {} exists",
                m.uuid
            )));
        }
        Ok(())
    }

    fn get(&self, uuid: &str) -> Result<Option<SourceMapping>> {
        let body: Option<String> = self
            .db()
            .query_row(
                "SELECT body FROM source_mappings WHERE uuid = ?1",
                [uuid],
                |r| r.get(0),
            )
            .optional()?;
        body.map(decode).transpose()
    }

    fn update(&self, m: &SourceMapping) -> Result<bool> {
        let n = self.db().execute(
            "UPDATE source_mappings SET body = ?2 WHERE uuid = ?1",
            params![m.uuid, encode(m)],
        )?;
        Ok(n > 0)
    }

    fn delete(&self, uuid: &str) -> Result<Option<SourceMapping>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let body: Option<String> = tx
            .query_row(
                "SELECT body FROM source_mappings WHERE uuid = ?1",
                [uuid],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute("DELETE FROM source_mappings WHERE uuid = ?1", [uuid])?;
        tx.execute("DELETE FROM source_checkpoints WHERE uuid = ?1", [uuid])?;
        tx.commit()?;
        body.map(decode).transpose()
    }

    fn list(&self) -> Result<Vec<SourceMapping>> {
        let db = self.db();
        let mut st = db.prepare("SELECT body FROM source_mappings ORDER BY created, uuid")?;
        let bodies = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        bodies.into_iter().map(decode).collect()
    }

    fn checkpoint(&self, uuid: &str, key: &str) -> Result<Option<String>> {
        Ok(self
            .db()
            .query_row(
                "SELECT value FROM source_checkpoints WHERE uuid = ?1 AND key = ?2",
                [uuid, key],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn set_checkpoint(&self, uuid: &str, key: &str, value: &str) -> Result<()> {
        self.db().execute(
            "INSERT INTO source_checkpoints (uuid, key, value) VALUES (?1, ?2, ?3)
             ON CONFLICT (uuid, key) DO UPDATE SET value = excluded.value",
            params![uuid, key, value],
        )?;
        Ok(())
    }

    fn delete_checkpoint(&self, uuid: &str, key: &str) -> Result<()> {
        self.db().execute(
            "DELETE FROM source_checkpoints WHERE uuid = ?1 AND key = ?2",
            [uuid, key],
        )?;
        Ok(())
    }
}

/// One mapping's view of the store's checkpoints, for its connector.
pub struct MappingCheckpoints {
    pub store: Arc<dyn SourceStore>,
    pub uuid: String,
}

impl Checkpoints for MappingCheckpoints {
    fn get(&self, key: &str) -> Result<Option<String>> {
        self.store.checkpoint(&self.uuid, key)
    }
    fn put(&self, key: &str, value: &str) -> Result<()> {
        self.store.set_checkpoint(&self.uuid, key, value)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.store.delete_checkpoint(&self.uuid, key)
    }
}

/// Checkpoints kept in memory: for connector tests and tools that need no durability.
#[derive(Default)]
pub struct MemoryCheckpoints(Mutex<std::collections::HashMap<String, String>>);

impl Checkpoints for MemoryCheckpoints {
    fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(self.0.lock().unwrap().get(key).cloned())
    }
    fn put(&self, key: &str, value: &str) -> Result<()> {
        self.0.lock().unwrap().insert(key.into(), value.into());
        Ok(())
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.0.lock().unwrap().remove(key);
        Ok(())
    }
}

// The store tests run on both backends: `crate::postgres::tests`.
