//! [`Db`]: a store's SQLite connection whose writes are timed into
//! `nimbus_store_write_seconds{db}` ([`nimbus_metrics::WriteTimer`]). A write transaction
//! ([`Db::write_tx`]) times its commit — the WAL append and, with `synchronous=FULL`, the
//! fsync; a single statement run outside a transaction ([`Db::execute`]) is its own
//! transaction and is timed with its commit. Reads go to the [`Connection`] as they are.

use nimbus_metrics::WriteTimer;
use rusqlite::{Connection, Params, Transaction, TransactionBehavior};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::time::Instant;

/// A connection to one database with the timer of its writes.
pub struct Db {
    conn: Connection,
    timer: WriteTimer,
}

impl Db {
    /// Times the writes of `conn` under the name of its file (`events.db`: `events`).
    pub fn new(conn: Connection, path: &Path) -> Self {
        let name = path
            .file_stem()
            .map_or_else(|| "unknown".into(), |s| s.to_string_lossy());
        Self {
            conn,
            timer: WriteTimer::new(&name),
        }
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: it takes the write lock at once)
    /// whose commit is timed.
    pub fn write_tx(&mut self) -> rusqlite::Result<WriteTx<'_>> {
        Ok(WriteTx {
            tx: self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?,
            timer: &self.timer,
        })
    }

    /// Runs one write statement in its own transaction, timed with its commit.
    pub fn execute<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        let t0 = Instant::now();
        let n = self.conn.execute(sql, params)?;
        self.timer.observe(t0.elapsed());
        Ok(n)
    }
}

impl Deref for Db {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        &self.conn
    }
}

impl DerefMut for Db {
    fn deref_mut(&mut self) -> &mut Connection {
        &mut self.conn
    }
}

/// A write transaction of a [`Db`]; rolled back when dropped without [`WriteTx::commit`].
pub struct WriteTx<'a> {
    tx: Transaction<'a>,
    timer: &'a WriteTimer,
}

impl WriteTx<'_> {
    /// Commits, timing the commit.
    pub fn commit(self) -> rusqlite::Result<()> {
        let t0 = Instant::now();
        self.tx.commit()?;
        self.timer.observe(t0.elapsed());
        Ok(())
    }
}

impl<'a> Deref for WriteTx<'a> {
    type Target = Transaction<'a>;

    fn deref(&self) -> &Transaction<'a> {
        &self.tx
    }
}

impl DerefMut for WriteTx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_and_single_statements_are_timed_rollbacks_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("unit-timed.db");
        let mut db = Db::new(Connection::open(&path).unwrap(), &path);
        let count = || {
            nimbus_metrics::recent_store_writes()
                .into_iter()
                .find(|w| w.db == "unit-timed")
                .map_or(0, |w| w.count)
        };
        db.execute("CREATE TABLE t (x INTEGER)", []).unwrap();
        assert_eq!(count(), 1);
        let tx = db.write_tx().unwrap();
        tx.execute("INSERT INTO t VALUES (1)", []).unwrap();
        tx.commit().unwrap();
        assert_eq!(count(), 2);
        let tx = db.write_tx().unwrap();
        tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
        drop(tx);
        assert_eq!(count(), 2);
        let n: i64 = db
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }
}
