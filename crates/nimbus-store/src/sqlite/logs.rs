//! `logs.db`: captured log lines, bounded per function in lines and bytes and in total
//! bytes, and given back to the file system when lines go.
//!
//! Every stored line has a `size` (its bytes plus a fixed per-row overhead, see
//! [`row_size`]); `log_usage` holds the lines and bytes per function, updated in the same
//! transaction as the rows, so the bounds hold across crashes and a restart costs one read
//! of a table with a row per function. The database uses `auto_vacuum = INCREMENTAL`: pages
//! freed by pruning are reused by the next lines, and [`LogDb::maintain`] (called by the
//! server's log writer, off the request path) returns them to the file system when many are
//! free — after a function's deletion at once — and truncates the WAL.

use super::open_db;
use crate::db::Db;
use crate::{LogEntry, LogPage, LogQuery, Result, StoreError};
use nimbus_core::LogLevel;
use rusqlite::{params, Connection, Transaction};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Log lines kept per function; older lines are pruned on append.
pub const LOG_RETENTION_LINES: usize = 10_000;

/// Bounds of the log store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Lines kept per function.
    pub lines_per_function: usize,
    /// Bytes kept per function (lines plus per-row overhead).
    pub bytes_per_function: u64,
    /// Bytes of `logs.db` and its WAL together, all functions: lines are pruned (from the
    /// functions holding the most first) so that the file stays under it.
    pub total_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            lines_per_function: LOG_RETENTION_LINES,
            bytes_per_function: 64 << 20,
            total_bytes: 1 << 30,
        }
    }
}

impl LogLimits {
    /// The stored bytes (sum of row sizes) aimed at, so that the file — rows in B-tree
    /// pages, the index and free pages — and the WAL stay under `total_bytes`: 3/4 of it
    /// less the WAL's share (see the tests for the file sizes this gives).
    fn stored_target(&self) -> u64 {
        (self.total_bytes / 4 * 3).saturating_sub(self.wal_limit())
    }

    /// The WAL is checkpointed when it reaches this size (`wal_autocheckpoint`) and then
    /// truncated to it (`journal_size_limit`); one transaction may grow it further by its
    /// own size (the server's log writer commits at most 4 MiB at once).
    fn wal_limit(&self) -> u64 {
        (self.total_bytes / 16).clamp(256 << 10, 8 << 20)
    }
}

/// How much the log store holds (reported by `/v1/health`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LogUsage {
    pub lines: u64,
    /// Sum of the stored rows' sizes.
    pub stored_bytes: u64,
    /// `logs.db` plus its WAL on disk.
    pub file_bytes: u64,
    /// The configured bound of `file_bytes` (`--max-log-bytes`).
    pub limit_bytes: u64,
    /// Lines removed to keep the bounds since the server started.
    pub pruned_lines: u64,
}

/// Bytes a stored line is accounted for: its text, its function name, request id and trace
/// id, and 48 bytes for the row's other columns, its index entries and B-tree cell overhead.
fn row_size(e: &LogEntry) -> u64 {
    (e.line.len()
        + e.function.len()
        + e.request_id.as_ref().map_or(0, String::len)
        + e.trace_id.as_ref().map_or(0, String::len)
        + 48) as u64
}

/// Schema migrations of `logs.db`.
const LOGS_MIGRATIONS: &[&str] = &[
    "
CREATE TABLE logs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    function   TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    request_id TEXT,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL
);
CREATE INDEX logs_by_function ON logs(function, seq);
",
    "
-- Byte bounds: each row's accounted size, and lines and bytes per function.
ALTER TABLE logs ADD COLUMN size INTEGER NOT NULL DEFAULT 0;
UPDATE logs SET size = length(CAST(line AS BLOB)) + length(CAST(function AS BLOB))
    + COALESCE(length(CAST(request_id AS BLOB)), 0) + 48;
CREATE TABLE log_usage (
    function TEXT PRIMARY KEY NOT NULL,
    lines    INTEGER NOT NULL,
    bytes    INTEGER NOT NULL
) STRICT;
INSERT INTO log_usage (function, lines, bytes)
    SELECT function, COUNT(*), SUM(size) FROM logs GROUP BY function;
",
    "
-- Structured logs: each line's level (1 TRACE … 6 FATAL; NULL when the line names none)
-- and its invocation's trace id; reads by time across functions.
ALTER TABLE logs ADD COLUMN level INTEGER;
ALTER TABLE logs ADD COLUMN trace_id TEXT;
UPDATE logs SET level = 3 WHERE stream = 'platform';
CREATE INDEX logs_by_time ON logs(ts_ms);
",
];

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    lines: u64,
    bytes: u64,
}

/// Lines and bytes per function (all functions with lines), and their sums.
#[derive(Debug, Default, Clone)]
struct Totals {
    per_function: HashMap<String, Usage>,
    all: Usage,
    pruned_lines: u64,
}

impl Totals {
    fn add(&mut self, function: &str, lines: u64, bytes: u64) {
        let u = self.per_function.entry(function.to_string()).or_default();
        u.lines += lines;
        u.bytes += bytes;
        self.all.lines += lines;
        self.all.bytes += bytes;
    }

    fn remove(&mut self, function: &str, gone: Usage) {
        if let Some(u) = self.per_function.get_mut(function) {
            u.lines = u.lines.saturating_sub(gone.lines);
            u.bytes = u.bytes.saturating_sub(gone.bytes);
            if u.lines == 0 {
                self.per_function.remove(function);
            }
        }
        self.all.lines = self.all.lines.saturating_sub(gone.lines);
        self.all.bytes = self.all.bytes.saturating_sub(gone.bytes);
    }

    fn get(&self, function: &str) -> Usage {
        self.per_function.get(function).copied().unwrap_or_default()
    }

    /// The function holding the most bytes, and the bytes of the runner-up.
    fn largest(&self) -> Option<(String, Usage, u64)> {
        let mut best: Option<(&String, Usage)> = None;
        let mut second = 0;
        for (f, u) in &self.per_function {
            match best {
                Some((_, b)) if u.bytes <= b.bytes => second = second.max(u.bytes),
                _ => {
                    if let Some((_, b)) = best {
                        second = second.max(b.bytes);
                    }
                    best = Some((f, *u));
                }
            }
        }
        best.map(|(f, u)| (f.clone(), u, second))
    }
}

/// The log store (`logs.db`).
pub(crate) struct LogDb {
    conn: Mutex<Db>,
    path: PathBuf,
    limits: LogLimits,
    /// Guarded by the `conn` lock's order: always taken after it.
    totals: Mutex<Totals>,
    /// Set when a function's lines were deleted: the next [`LogDb::maintain`] compacts.
    compact_due: AtomicBool,
}

impl LogDb {
    pub(crate) fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join("logs.db");
        let conn = open_db(&path, "NORMAL", LOGS_MIGRATIONS)?;
        let auto_vacuum: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
        if auto_vacuum != 2 {
            // Only incremental auto-vacuum lets freed pages go back to the file system
            // without rewriting the whole file; switching needs one VACUUM (fast on a new
            // database, a one-off on one made by an older Nimbus).
            tracing::info!(db = %path.display(), "switching the log store to incremental vacuum (one-off)");
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
            conn.execute_batch("VACUUM")?;
        }
        let db = Self {
            conn: Mutex::new(conn),
            path,
            limits: LogLimits::default(),
            totals: Mutex::new(Totals::default()),
            compact_due: AtomicBool::new(false),
        };
        db.load_totals()?;
        db.apply_wal_limit()?;
        Ok(db)
    }

    pub(crate) fn set_limits(&mut self, limits: LogLimits) -> Result<()> {
        self.limits = limits;
        self.apply_wal_limit()?;
        // Lines stored under larger bounds are pruned at the next append.
        Ok(())
    }

    pub(crate) fn limits(&self) -> LogLimits {
        self.limits
    }

    fn apply_wal_limit(&self) -> Result<()> {
        configure(&self.db(), &self.limits)
    }

    fn load_totals(&self) -> Result<()> {
        let conn = self.db();
        let mut stmt = conn.prepare("SELECT function, lines, bytes FROM log_usage")?;
        let mut totals = Totals::default();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        for row in rows {
            let (f, lines, bytes) = row?;
            totals.add(&f, lines.max(0) as u64, bytes.max(0) as u64);
        }
        *self.totals() = totals;
        Ok(())
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn totals(&self) -> MutexGuard<'_, Totals> {
        self.totals.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[cfg(test)]
    pub(crate) fn connection(&self) -> MutexGuard<'_, Db> {
        self.db()
    }

    /// Appends `entries`, then prunes the oldest lines of each function over its bounds and,
    /// while the store is over its total, of the functions holding the most bytes.
    pub(crate) fn append(&self, entries: &[LogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.db();
        let tx = conn.write_tx()?;
        let mut appended: BTreeMap<&str, Usage> = BTreeMap::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO logs (function, ts_ms, request_id, stream, line, size, level, trace_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for e in entries {
                let size = row_size(e);
                insert.execute(params![
                    e.function,
                    e.ts_ms,
                    e.request_id,
                    e.stream.as_str(),
                    e.line,
                    size as i64,
                    e.level.map(LogLevel::rank),
                    e.trace_id,
                ])?;
                let u = appended.entry(e.function.as_str()).or_default();
                u.lines += 1;
                u.bytes += size;
            }
        }
        // Work on a copy: the in-memory totals change only once the transaction commits.
        let mut totals = self.totals().clone();
        let mut touched: Vec<String> = Vec::new();
        for (f, u) in &appended {
            totals.add(f, u.lines, u.bytes);
            touched.push(f.to_string());
        }
        let limits = self.limits;
        for f in appended.keys() {
            let u = totals.get(f);
            let excess_lines = u.lines.saturating_sub(limits.lines_per_function as u64);
            let excess_bytes = u.bytes.saturating_sub(limits.bytes_per_function);
            if excess_lines > 0 || excess_bytes > 0 {
                let gone = prune_oldest(&tx, f, excess_lines, excess_bytes)?;
                totals.remove(f, gone);
                totals.pruned_lines += gone.lines;
            }
        }
        let target = limits.stored_target();
        while totals.all.bytes > target {
            let Some((f, u, second)) = totals.largest() else {
                break;
            };
            // Level the largest down towards the runner-up (at least a quarter of it), so a
            // flooding function loses its own lines before quiet ones lose theirs.
            let excess = totals.all.bytes - target;
            let want = excess.min(u.bytes.saturating_sub(second).max(u.bytes / 4).max(1));
            let gone = prune_oldest(&tx, &f, 0, want)?;
            if gone.lines == 0 {
                break;
            }
            totals.remove(&f, gone);
            totals.pruned_lines += gone.lines;
            if !touched.contains(&f) {
                touched.push(f);
            }
        }
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO log_usage (function, lines, bytes) VALUES (?1, ?2, ?3)
                 ON CONFLICT(function) DO UPDATE SET lines = excluded.lines, bytes = excluded.bytes",
            )?;
            let mut drop_usage = tx.prepare_cached("DELETE FROM log_usage WHERE function = ?1")?;
            for f in &touched {
                let u = totals.get(f);
                if u.lines == 0 {
                    drop_usage.execute([f])?;
                } else {
                    upsert.execute(params![f, u.lines as i64, u.bytes as i64])?;
                }
            }
        }
        tx.commit()?;
        *self.totals() = totals;
        Ok(())
    }

    /// Log lines of `function` with `seq > after`, oldest first, at most `limit`.
    pub(crate) fn read(&self, function: &str, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let q = LogQuery {
            after,
            limit,
            ..LogQuery::default()
        };
        Ok(self.query(Some(&[function.to_string()]), &q)?.entries)
    }

    /// Lines matching `q` of `functions` (all for `None`), oldest first. The page's `next`
    /// is the last line's `seq` when the page is full, else the newest `seq` stored when the
    /// read began: lines filtered out are not looked at again.
    pub(crate) fn query(&self, functions: Option<&[String]>, q: &LogQuery) -> Result<LogPage> {
        let conn = self.db();
        let hi: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM logs", [], |r| r.get(0))?;
        let next_if_short = hi.max(q.after);
        if functions.is_some_and(|f| f.is_empty()) || q.limit == 0 {
            return Ok(LogPage {
                entries: Vec::new(),
                next: next_if_short,
            });
        }
        let mut sql = String::from(
            "SELECT seq, function, ts_ms, request_id, stream, line, level, trace_id FROM logs
             WHERE seq > ? AND seq <= ?",
        );
        let mut args: Vec<rusqlite::types::Value> = vec![q.after.into(), hi.into()];
        match functions {
            Some([one]) => {
                sql.push_str(" AND function = ?");
                args.push(one.clone().into());
            }
            Some(many) => {
                sql.push_str(" AND function IN (");
                sql.push_str(&vec!["?"; many.len()].join(","));
                sql.push(')');
                args.extend(many.iter().map(|f| f.clone().into()));
            }
            None => {}
        }
        if let Some(t) = q.since_ms {
            sql.push_str(" AND ts_ms >= ?");
            args.push(t.into());
        }
        if let Some(t) = q.until_ms {
            sql.push_str(" AND ts_ms < ?");
            args.push(t.into());
        }
        if let Some(l) = q.min_level {
            sql.push_str(" AND COALESCE(level, 3) >= ?");
            args.push(l.rank().into());
        }
        if let Some(r) = &q.request_id {
            sql.push_str(" AND request_id = ?");
            args.push(r.clone().into());
        }
        if let Some(g) = &q.grep {
            sql.push_str(" AND instr(line, ?) > 0");
            args.push(g.clone().into());
        }
        sql.push_str(" ORDER BY seq LIMIT ?");
        args.push(i64::try_from(q.limit).unwrap_or(i64::MAX).into());
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
            let stream: String = r.get(4)?;
            let level: Option<i64> = r.get(6)?;
            Ok((
                LogEntry {
                    seq: r.get(0)?,
                    function: r.get(1)?,
                    ts_ms: r.get(2)?,
                    request_id: r.get(3)?,
                    stream: crate::LogStream::Stdout,
                    line: r.get(5)?,
                    level: level.and_then(LogLevel::from_rank),
                    trace_id: r.get(7)?,
                },
                stream,
            ))
        })?;
        let mut entries = Vec::new();
        for r in rows {
            let (mut entry, stream) = r?;
            entry.stream = stream.parse().map_err(|e| {
                StoreError::Corrupt(format!("log line {} of {}: {e}", entry.seq, entry.function))
            })?;
            entries.push(entry);
        }
        let next = if entries.len() >= q.limit {
            entries.last().map_or(next_if_short, |e| e.seq)
        } else {
            next_if_short
        };
        Ok(LogPage { entries, next })
    }

    /// Deletes every line of `function`; the space goes back to the file system at the
    /// next [`LogDb::maintain`].
    pub(crate) fn delete_function(&self, function: &str) -> Result<()> {
        let mut conn = self.db();
        let tx = conn.write_tx()?;
        let n = tx.execute("DELETE FROM logs WHERE function = ?1", [function])?;
        tx.execute("DELETE FROM log_usage WHERE function = ?1", [function])?;
        tx.commit()?;
        let mut totals = self.totals();
        let gone = totals.get(function);
        totals.remove(function, gone);
        if n > 0 {
            self.compact_due.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// What the store holds now.
    pub(crate) fn usage(&self) -> LogUsage {
        let (all, pruned_lines) = {
            let t = self.totals();
            (t.all, t.pruned_lines)
        };
        LogUsage {
            lines: all.lines,
            stored_bytes: all.bytes,
            file_bytes: self.file_bytes(),
            limit_bytes: self.limits.total_bytes,
            pruned_lines,
        }
    }

    /// `logs.db`, its WAL and the WAL's shared-memory index on disk.
    fn file_bytes(&self) -> u64 {
        let with = |suffix: &str| {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            p
        };
        [with(""), with("-wal"), with("-shm")]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }

    /// Closes the connection held in `guard` and opens the database again in its place.
    fn reopen(&self, mut guard: MutexGuard<'_, Db>) -> Result<()> {
        let placeholder = Connection::open_in_memory()?;
        let old = std::mem::replace(&mut **guard, placeholder);
        if let Err((conn, e)) = old.close() {
            // Still open: keep using it.
            **guard = conn;
            return Err(e.into());
        }
        let reopened = open_db(&self.path, "NORMAL", LOGS_MIGRATIONS).and_then(|conn| {
            configure(&conn, &self.limits)?;
            Ok(conn)
        });
        match reopened {
            Ok(conn) => {
                *guard = conn;
                Ok(())
            }
            Err(e) => {
                // Lines are refused until the next maintenance opens it again.
                self.compact_due.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Returns free pages to the file system and truncates the WAL when a function's lines
    /// were deleted, or when more than an eighth of the file is free pages (pruning frees
    /// pages that the next lines reuse, so a steady flood does not compact on every batch).
    /// Blocking; call it off the request path. Returns the bytes given back.
    pub(crate) fn maintain(&self) -> Result<u64> {
        let before = self.file_bytes();
        let conn = self.db();
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let due = self.compact_due.swap(false, Ordering::Relaxed);
        if !due && free * 8 <= pages {
            return Ok(0);
        }
        {
            // The pragma frees one page per step (it returns a row each time): run it to
            // its end.
            let mut vacuum = conn.prepare("PRAGMA incremental_vacuum")?;
            let mut rows = vacuum.query([])?;
            while rows.next()?.is_some() {}
        }
        // TRUNCATE waits for readers (there are none: one connection) and empties the WAL.
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        if due {
            // After a deletion, close and reopen: the last connection's close removes the
            // WAL and its shared-memory index, which never shrinks while open (it grows
            // with the largest WAL seen).
            self.reopen(conn)?;
        } else {
            drop(conn);
        }
        let after = self.file_bytes();
        tracing::debug!(free_pages = free, before, after, "compacted the log store");
        Ok(before.saturating_sub(after))
    }
}

/// Sets the WAL's bounds on a `logs.db` connection: checkpointed when it reaches
/// [`LogLimits::wal_limit`] (`wal_autocheckpoint`, in pages) and truncated to it after.
fn configure(conn: &Connection, limits: &LogLimits) -> Result<()> {
    let wal = limits.wal_limit() as i64;
    conn.pragma_update(None, "journal_size_limit", wal)?;
    let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    conn.pragma_update(None, "wal_autocheckpoint", (wal / page.max(512)).max(16))?;
    Ok(())
}

/// Deletes the oldest lines of `function` until at least `lines` lines and `bytes` bytes are
/// gone (or none is left); returns what went.
fn prune_oldest(tx: &Transaction<'_>, function: &str, lines: u64, bytes: u64) -> Result<Usage> {
    let mut gone = Usage::default();
    let mut last_seq = None;
    {
        let mut walk =
            tx.prepare_cached("SELECT seq, size FROM logs WHERE function = ?1 ORDER BY seq")?;
        let mut rows = walk.query([function])?;
        while gone.lines < lines || gone.bytes < bytes {
            let Some(row) = rows.next()? else { break };
            let seq: i64 = row.get(0)?;
            let size: i64 = row.get(1)?;
            gone.lines += 1;
            gone.bytes += size.max(0) as u64;
            last_seq = Some(seq);
        }
    }
    if let Some(seq) = last_seq {
        tx.prepare_cached("DELETE FROM logs WHERE function = ?1 AND seq <= ?2")?
            .execute(params![function, seq])?;
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::tests::{both, Backend, TestStore};
    use crate::{LogStream, Store};
    use nimbus_core::FunctionName;

    fn entry(function: &str, line: String) -> LogEntry {
        LogEntry {
            seq: 0,
            function: function.into(),
            ts_ms: 1_700_000_000_000,
            request_id: Some("8f3c2a4e-0d5b-4a8e-9a51-6f0c2d9b7e11".into()),
            stream: LogStream::Stdout,
            line,
            level: None,
            trace_id: None,
        }
    }

    fn open(limits: LogLimits) -> (tempfile::TempDir, LogDb) {
        let dir = tempfile::tempdir().unwrap();
        let mut db = LogDb::open(dir.path()).unwrap();
        db.set_limits(limits).unwrap();
        (dir, db)
    }

    /// A store of `b` with `limits`.
    fn open_store(b: Backend, limits: LogLimits) -> TestStore {
        TestStore::open(b).with_log_limits(limits)
    }

    fn stored_in(s: &dyn Store, f: &str) -> Vec<String> {
        s.logs(&FunctionName::parse(f).unwrap(), 0, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|e| e.line)
            .collect()
    }

    /// What the usage table says equals what the rows hold, and what `log_usage` reports.
    fn check_store_usage(s: &TestStore) {
        let lines = s.log_count("SELECT COUNT(*) FROM logs");
        let bytes = s.log_count("SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM logs");
        let ulines = s.log_count("SELECT CAST(COALESCE(SUM(lines), 0) AS BIGINT) FROM log_usage");
        let ubytes = s.log_count("SELECT CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM log_usage");
        assert_eq!((lines, bytes), (ulines, ubytes));
        let u = s.log_usage();
        assert_eq!((u.lines, u.stored_bytes), (lines as u64, bytes as u64));
    }

    /// What `log_usage` says equals what the rows hold.
    fn check_usage(db: &LogDb) {
        let conn = db.db();
        let (lines, bytes): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM logs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let (ulines, ubytes): (i64, i64) = conn
            .query_row(
                "SELECT COALESCE(SUM(lines), 0), COALESCE(SUM(bytes), 0) FROM log_usage",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        drop(conn);
        assert_eq!((lines, bytes), (ulines, ubytes));
        let u = db.usage();
        assert_eq!((u.lines, u.stored_bytes), (lines as u64, bytes as u64));
    }

    fn bytes_per_function_prune_the_oldest_lines(b: Backend) {
        let db = open_store(
            b,
            LogLimits {
                lines_per_function: 1000,
                bytes_per_function: 10 * 1024,
                total_bytes: 1 << 30,
            },
        );
        for i in 0..30 {
            db.append_logs(&[entry("f", format!("{i:04}{}", "x".repeat(996)))])
                .unwrap();
        }
        db.append_logs(&[entry("g", "quiet".into())]).unwrap();
        let kept = stored_in(&*db, "f");
        // Each row is ~1.1 KB: at most 10 KiB of them, the newest.
        assert!(kept.len() >= 8 && kept.len() <= 9, "{}", kept.len());
        assert!(kept.last().unwrap().starts_with("0029"));
        assert_eq!(stored_in(&*db, "g"), ["quiet"]);
        check_store_usage(&db);
    }

    fn the_total_bound_takes_from_the_largest_function_first(b: Backend) {
        let db = open_store(
            b,
            LogLimits {
                lines_per_function: 100_000,
                bytes_per_function: 1 << 30,
                total_bytes: 400 * 1024,
            },
        );
        for i in 0..20 {
            db.append_logs(&[entry("quiet", format!("q{i}"))]).unwrap();
        }
        for i in 0..2000 {
            db.append_logs(&[entry("noisy", format!("{i:05}{}", "n".repeat(400)))])
                .unwrap();
        }
        let u = db.log_usage();
        assert!(u.stored_bytes <= LogLimits::default().stored_target());
        assert!(u.stored_bytes <= 300 * 1024, "{u:?}");
        // The quiet function keeps every line; the noisy one its newest.
        assert_eq!(stored_in(&*db, "quiet").len(), 20);
        assert!(stored_in(&*db, "noisy")
            .last()
            .unwrap()
            .starts_with("01999"));
        assert!(u.pruned_lines > 1000);
        check_store_usage(&db);
    }

    /// The file (with its WAL) stays under the total bound through a flood of lines of
    /// mixed sizes, and a deleted function's space goes back to the file system.
    #[test]
    fn the_file_stays_under_the_bound_and_shrinks_after_a_delete() {
        let total = 8 << 20;
        let (dir, db) = open(LogLimits {
            lines_per_function: 1_000_000,
            bytes_per_function: 1 << 40,
            total_bytes: total,
        });
        let sizes = [10usize, 100, 1000, 20_000, 256 * 1024];
        let mut max_file = 0;
        for round in 0..300 {
            let batch: Vec<LogEntry> = (0..16)
                .map(|i| {
                    let n = sizes[(round + i) % sizes.len()];
                    entry(["a", "b", "c"][i % 3], "y".repeat(n))
                })
                .collect();
            db.append(&batch).unwrap();
            db.maintain().unwrap();
            max_file = max_file.max(db.usage().file_bytes);
        }
        eprintln!("logs.db + WAL peaked at {max_file} bytes, bound {total}");
        assert!(
            max_file <= total,
            "logs.db reached {max_file} bytes, bound {total}"
        );
        check_usage(&db);
        let before = db.usage().file_bytes;
        for f in ["a", "b", "c"] {
            db.delete_function(f).unwrap();
        }
        assert!(db.maintain().unwrap() > 0);
        let after = db.usage().file_bytes;
        assert!(after < 256 * 1024, "{before} -> {after}");
        assert_eq!(db.usage().lines, 0);
        drop(db);
        // Totals survive a reopen.
        let db = LogDb::open(dir.path()).unwrap();
        assert_eq!(db.usage().lines, 0);
    }

    fn queries_filter_by_time_level_request_text_and_function(b: Backend) {
        let db = open_store(b, LogLimits::default());
        let mk = |f: &str, ts: i64, rid: &str, level: Option<LogLevel>, line: &str| LogEntry {
            ts_ms: ts,
            request_id: Some(rid.into()),
            level,
            trace_id: Some(format!("1-trace-{rid}")),
            ..entry(f, line.into())
        };
        db.append_logs(&[
            mk("a", 1000, "r1", Some(LogLevel::Debug), "debug one"),
            mk("a", 2000, "r1", None, "plain two"),
            mk("b", 3000, "r2", Some(LogLevel::Error), "error three"),
            mk("a", 4000, "r3", Some(LogLevel::Warn), "warn four"),
        ])
        .unwrap();
        let lines = |functions: Option<&[String]>, q: LogQuery| -> Vec<String> {
            db.query_logs(functions, &LogQuery { limit: 100, ..q })
                .unwrap()
                .entries
                .into_iter()
                .map(|e| e.line)
                .collect()
        };
        let a = ["a".to_string()];
        assert_eq!(lines(Some(&a), LogQuery::default()).len(), 3);
        assert_eq!(lines(None, LogQuery::default()).len(), 4);
        assert_eq!(lines(Some(&[]), LogQuery::default()).len(), 0);
        let since = LogQuery {
            since_ms: Some(2000),
            until_ms: Some(4000),
            ..Default::default()
        };
        assert_eq!(lines(None, since), ["plain two", "error three"]);
        // A line without a level counts as INFO.
        let info = LogQuery {
            min_level: Some(LogLevel::Info),
            ..Default::default()
        };
        assert_eq!(lines(Some(&a), info), ["plain two", "warn four"]);
        let rid = LogQuery {
            request_id: Some("r1".into()),
            ..Default::default()
        };
        assert_eq!(lines(None, rid), ["debug one", "plain two"]);
        let grep = LogQuery {
            grep: Some("thr".into()),
            ..Default::default()
        };
        assert_eq!(lines(None, grep), ["error three"]);
        let both = ["a".to_string(), "b".to_string()];
        let err = LogQuery {
            min_level: Some(LogLevel::Error),
            ..Default::default()
        };
        assert_eq!(lines(Some(&both), err), ["error three"]);
        // Level and trace id come back; `next` passes filtered-out lines.
        let page = db
            .query_logs(
                None,
                &LogQuery {
                    min_level: Some(LogLevel::Error),
                    limit: 10,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page.entries[0].level, Some(LogLevel::Error));
        assert_eq!(page.entries[0].trace_id.as_deref(), Some("1-trace-r2"));
        assert_eq!(page.next, 4);
        // A full page ends at its last line.
        let page = db
            .query_logs(
                None,
                &LogQuery {
                    limit: 2,
                    ..Default::default()
                },
            )
            .unwrap();
        assert_eq!(page.next, 2);
        check_store_usage(&db);
    }

    fn totals_are_read_back_after_a_restart(b: Backend) {
        let db = TestStore::open(b);
        db.append_logs(&[entry("f", "one".into()), entry("g", "two".into())])
            .unwrap();
        let db = db.reopen();
        assert_eq!(db.log_usage().lines, 2);
        check_store_usage(&db);
    }

    both!(
        bytes_per_function_prune_the_oldest_lines,
        the_total_bound_takes_from_the_largest_function_first,
        queries_filter_by_time_level_request_text_and_function,
        totals_are_read_back_after_a_restart,
    );

    /// A `logs.db` written before byte bounds (schema 1, no auto-vacuum) is migrated: sizes
    /// filled in, totals built, incremental vacuum switched on.
    #[test]
    fn an_older_log_store_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut conn = Connection::open(dir.path().join("logs.db")).unwrap();
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .unwrap();
            super::super::migrate(&mut conn, Path::new("logs.db"), &LOGS_MIGRATIONS[..1]).unwrap();
            conn.execute(
                "INSERT INTO logs (function, ts_ms, request_id, stream, line)
                 VALUES ('f', 1, 'r', 'stdout', 'hello')",
                [],
            )
            .unwrap();
        }
        let db = LogDb::open(dir.path()).unwrap();
        assert_eq!(
            db.usage().stored_bytes,
            row_size(&{
                let mut e = entry("f", "hello".into());
                e.request_id = Some("r".into());
                e
            })
        );
        let av: i64 = db
            .db()
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(av, 2);
        check_usage(&db);
    }
}
