//! The SQLite [`Store`]: `registry.db` (functions and versions, `synchronous=FULL`) and
//! `logs.db` (log lines, `synchronous=NORMAL`: a crash may lose the last lines, never the
//! registry) in the data directory, both in WAL mode.

use crate::{CodeInfo, Deployed, LogEntry, Result, Store, StoreError};
use nimbus_core::{FunctionConfig, FunctionName, FunctionVersion, LATEST};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Log lines kept per function; older lines are pruned on append.
pub const LOG_RETENTION_LINES: usize = 10_000;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations of `registry.db`; entry `i` takes `user_version` from `i` to `i + 1`.
const REGISTRY_MIGRATIONS: &[&str] = &["
CREATE TABLE functions (
    name          TEXT PRIMARY KEY NOT NULL,
    config        TEXT NOT NULL,
    code_sha256   TEXT NOT NULL,
    code_size     INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    revision_id   TEXT NOT NULL,
    created_ms    INTEGER NOT NULL
) STRICT;
CREATE TABLE versions (
    name          TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    version       INTEGER NOT NULL,
    config        TEXT NOT NULL,
    code_sha256   TEXT NOT NULL,
    code_size     INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    revision_id   TEXT NOT NULL,
    created_ms    INTEGER NOT NULL,
    PRIMARY KEY (name, version)
) STRICT;
CREATE TRIGGER versions_are_immutable BEFORE UPDATE ON versions
BEGIN
    SELECT RAISE(ABORT, 'numbered versions are immutable');
END;
"];

/// Schema migrations of `logs.db`.
const LOGS_MIGRATIONS: &[&str] = &["
CREATE TABLE logs (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    function   TEXT NOT NULL,
    ts_ms      INTEGER NOT NULL,
    request_id TEXT,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL
);
CREATE INDEX logs_by_function ON logs(function, seq);
"];

/// The default [`Store`]: two SQLite databases in the data directory.
pub struct SqliteStore {
    registry: Mutex<Connection>,
    logs: Mutex<Connection>,
    log_retention: usize,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("log_retention", &self.log_retention)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating and migrating as needed) `data_dir/registry.db` and `data_dir/logs.db`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Io(std::io::Error::new(
                e.kind(),
                format!("creating {}: {e}", data_dir.display()),
            ))
        })?;
        let registry = open_db(&data_dir.join("registry.db"), "FULL", REGISTRY_MIGRATIONS)?;
        let logs = open_db(&data_dir.join("logs.db"), "NORMAL", LOGS_MIGRATIONS)?;
        Ok(Self {
            registry: Mutex::new(registry),
            logs: Mutex::new(logs),
            log_retention: LOG_RETENTION_LINES,
        })
    }

    /// Keeps at most `lines` log lines per function (default [`LOG_RETENTION_LINES`]).
    pub fn with_log_retention(mut self, lines: usize) -> Self {
        self.log_retention = lines;
        self
    }

    fn registry(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done transaction behind (dropping
        // a rusqlite Transaction rolls it back), so the connection is still good.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn logs_db(&self) -> MutexGuard<'_, Connection> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn open_db(path: &Path, synchronous: &str, migrations: &[&str]) -> Result<Connection> {
    let mut conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Corrupt(format!(
            "{} cannot use WAL mode (journal mode is {mode}): put the data directory on a local file system",
            path.display()
        )));
    }
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", true)?;
    migrate(&mut conn, path, migrations)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path, migrations: &[&str]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = migrations.len() as i64;
    if current > known {
        return Err(StoreError::Corrupt(format!(
            "{} has schema version {current}, this nimbus knows up to {known}: upgrade nimbus",
            path.display()
        )));
    }
    for (i, sql) in migrations.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tracing::debug!(db = %path.display(), version = i + 1, "migrated schema");
    }
    tx.commit()?;
    Ok(())
}

/// Now in Lambda's `LastModified` format, `2021-06-16T10:49:22.524+0000` (UTC).
fn lambda_timestamp(t: time::OffsetDateTime) -> String {
    const FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]+0000"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(FORMAT)
        .expect("formatting a UTC timestamp cannot fail")
}

fn now_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn function_not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("function not found: {name}"))
}

const COLUMNS: &str = "name, config, code_sha256, code_size, last_modified, revision_id";

/// Decodes a row selected as `COLUMNS` (plus the version for numbered versions).
fn decode(row: &Row<'_>, version: Option<i64>) -> rusqlite::Result<Result<FunctionVersion>> {
    let name: String = row.get(0)?;
    let config: String = row.get(1)?;
    let code_sha256: String = row.get(2)?;
    let code_size: i64 = row.get(3)?;
    let last_modified: String = row.get(4)?;
    let revision_id: String = row.get(5)?;
    Ok((|| {
        let fname = FunctionName::parse(&name)
            .map_err(|e| StoreError::Corrupt(format!("stored function name {name:?}: {e}")))?;
        let config: FunctionConfig = serde_json::from_str(&config)
            .map_err(|e| StoreError::Corrupt(format!("stored config of {name}: {e}")))?;
        Ok(FunctionVersion {
            name: fname,
            version: version.map_or_else(|| LATEST.to_string(), |v| v.to_string()),
            config,
            code_sha256,
            code_size: code_size as u64,
            last_modified,
            revision_id,
        })
    })())
}

fn get_latest(conn: &Connection, name: &str) -> Result<Option<FunctionVersion>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM functions WHERE name = ?1"),
        [name],
        |r| decode(r, None),
    )
    .optional()?
    .transpose()
}

fn get_version(conn: &Connection, name: &str, version: i64) -> Result<Option<FunctionVersion>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM versions WHERE name = ?1 AND version = ?2"),
        params![name, version],
        |r| decode(r, Some(version)),
    )
    .optional()?
    .transpose()
}

/// A qualifier naming a numbered version: decimal digits only, fitting an i64.
fn parse_version(q: &str) -> Option<i64> {
    if q.is_empty() || !q.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    q.parse().ok()
}

impl Store for SqliteStore {
    fn deploy(
        &self,
        name: &FunctionName,
        config: &FunctionConfig,
        code: &CodeInfo,
    ) -> Result<Deployed> {
        let config_json = serde_json::to_string(config)
            .map_err(|e| StoreError::Corrupt(format!("encoding the config of {name}: {e}")))?;
        let now = time::OffsetDateTime::now_utc();
        let last_modified = lambda_timestamp(now);
        let created_ms = now_ms(now);
        let code_size = code.size as i64;

        let mut conn = self.registry();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let created = tx
            .query_row(
                "SELECT 1 FROM functions WHERE name = ?1",
                [name.as_str()],
                |_| Ok(()),
            )
            .optional()?
            .is_none();
        tx.execute(
            "INSERT INTO functions (name, config, code_sha256, code_size, last_modified, revision_id, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT(name) DO UPDATE SET config = excluded.config, code_sha256 = excluded.code_sha256,
                 code_size = excluded.code_size, last_modified = excluded.last_modified,
                 revision_id = excluded.revision_id",
            params![
                name.as_str(),
                config_json,
                code.sha256,
                code_size,
                last_modified,
                uuid::Uuid::new_v4().to_string(),
                created_ms
            ],
        )?;

        let newest: Option<(i64, String, String)> = tx
            .query_row(
                "SELECT version, config, code_sha256 FROM versions WHERE name = ?1 ORDER BY version DESC LIMIT 1",
                [name.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?;
        let unchanged = match &newest {
            Some((v, stored_config, stored_sha)) => {
                // Compare decoded configs, not JSON text, so a schema change that only adds
                // defaulted fields does not publish a spurious version.
                let stored: FunctionConfig = serde_json::from_str(stored_config).map_err(|e| {
                    StoreError::Corrupt(format!("stored config of {name} version {v}: {e}"))
                })?;
                stored == *config && *stored_sha == code.sha256
            }
            None => false,
        };
        let version = match newest {
            Some((v, _, _)) if unchanged => v,
            newest => {
                let v = newest.map_or(1, |(v, _, _)| v + 1);
                tx.execute(
                    "INSERT INTO versions (name, version, config, code_sha256, code_size, last_modified,
                         revision_id, created_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        name.as_str(),
                        v,
                        config_json,
                        code.sha256,
                        code_size,
                        last_modified,
                        uuid::Uuid::new_v4().to_string(),
                        created_ms
                    ],
                )?;
                v
            }
        };
        let latest = get_latest(&tx, name.as_str())?.ok_or_else(|| {
            StoreError::Corrupt(format!("{name} vanished inside its own transaction"))
        })?;
        tx.commit()?;
        drop(conn);

        if created {
            // Lines appended after an earlier function of the same name was deleted must not
            // show up as this function's.
            if let Err(e) = self
                .logs_db()
                .execute("DELETE FROM logs WHERE function = ?1", [name.as_str()])
            {
                tracing::warn!(function = %name, error = %e, "could not clear stale log lines");
            }
        }
        tracing::debug!(function = %name, version, created, "deployed");
        Ok(Deployed {
            latest,
            version: version.to_string(),
            created,
        })
    }

    fn get(&self, name: &FunctionName, qualifier: Option<&str>) -> Result<FunctionVersion> {
        let conn = self.registry();
        match qualifier {
            None | Some(LATEST) => {
                get_latest(&conn, name.as_str())?.ok_or_else(|| function_not_found(name.as_str()))
            }
            Some(q) => {
                let found = match parse_version(q) {
                    Some(v) => get_version(&conn, name.as_str(), v)?,
                    None => None,
                };
                match found {
                    Some(f) => Ok(f),
                    None if get_latest(&conn, name.as_str())?.is_none() => {
                        Err(function_not_found(name.as_str()))
                    }
                    None if parse_version(q).is_some() => Err(StoreError::NotFound(format!(
                        "version {q} of {name} not found"
                    ))),
                    None => Err(StoreError::NotFound(format!(
                        "alias {q} of {name} not found"
                    ))),
                }
            }
        }
    }

    fn list(&self) -> Result<Vec<FunctionVersion>> {
        let conn = self.registry();
        let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM functions ORDER BY name"))?;
        let rows = stmt.query_map([], |r| decode(r, None))?;
        rows.map(|r| r?).collect()
    }

    fn versions(&self, name: &FunctionName) -> Result<Vec<FunctionVersion>> {
        let conn = self.registry();
        let latest =
            get_latest(&conn, name.as_str())?.ok_or_else(|| function_not_found(name.as_str()))?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS}, version FROM versions WHERE name = ?1 ORDER BY version"
        ))?;
        let rows = stmt.query_map([name.as_str()], |r| {
            let v: i64 = r.get(6)?;
            decode(r, Some(v))
        })?;
        let mut out = vec![latest];
        for r in rows {
            out.push(r??);
        }
        Ok(out)
    }

    fn delete(&self, name: &FunctionName) -> Result<()> {
        {
            let mut conn = self.registry();
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Versions go with it (ON DELETE CASCADE).
            let n = tx.execute("DELETE FROM functions WHERE name = ?1", [name.as_str()])?;
            if n == 0 {
                return Err(function_not_found(name.as_str()));
            }
            tx.commit()?;
        }
        // The function is gone either way; leftover lines are cleared when the name is reused.
        if let Err(e) = self
            .logs_db()
            .execute("DELETE FROM logs WHERE function = ?1", [name.as_str()])
        {
            tracing::warn!(function = %name, error = %e, "could not delete log lines");
        }
        tracing::debug!(function = %name, "deleted");
        Ok(())
    }

    fn append_logs(&self, entries: &[LogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut conn = self.logs_db();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut functions = BTreeSet::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO logs (function, ts_ms, request_id, stream, line) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for e in entries {
                insert.execute(params![
                    e.function,
                    e.ts_ms,
                    e.request_id,
                    e.stream.as_str(),
                    e.line
                ])?;
                functions.insert(e.function.as_str());
            }
            // Delete everything at or below the (retention + 1)-th newest line.
            let mut prune = tx.prepare_cached(
                "DELETE FROM logs WHERE function = ?1 AND seq <= (
                     SELECT seq FROM logs WHERE function = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
            )?;
            let keep = i64::try_from(self.log_retention).unwrap_or(i64::MAX);
            for f in functions {
                prune.execute(params![f, keep])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn logs(&self, function: &FunctionName, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let conn = self.logs_db();
        let mut stmt = conn.prepare_cached(
            "SELECT seq, function, ts_ms, request_id, stream, line FROM logs
             WHERE function = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(params![function.as_str(), after, limit], |r| {
            let stream: String = r.get(4)?;
            Ok((
                LogEntry {
                    seq: r.get(0)?,
                    function: r.get(1)?,
                    ts_ms: r.get(2)?,
                    request_id: r.get(3)?,
                    stream: crate::LogStream::Stdout,
                    line: r.get(5)?,
                },
                stream,
            ))
        })?;
        let mut out = Vec::new();
        for r in rows {
            let (mut entry, stream) = r?;
            entry.stream = stream.parse().map_err(|e| {
                StoreError::Corrupt(format!("log line {} of {function}: {e}", entry.seq))
            })?;
            out.push(entry);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LogStream;
    use nimbus_core::Runtime;

    fn name(s: &str) -> FunctionName {
        FunctionName::parse(s).unwrap()
    }

    fn cfg(handler: &str) -> FunctionConfig {
        FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), handler)
    }

    fn code(content: &[u8]) -> CodeInfo {
        CodeInfo::of(content)
    }

    fn open() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        (dir, store)
    }

    fn line(function: &str, text: &str) -> LogEntry {
        LogEntry {
            seq: 0,
            function: function.into(),
            ts_ms: 1_700_000_000_000,
            request_id: Some("req".into()),
            stream: LogStream::Stdout,
            line: text.into(),
        }
    }

    fn lines(store: &SqliteStore, f: &str, after: i64, limit: usize) -> Vec<String> {
        store
            .logs(&name(f), after, limit)
            .unwrap()
            .into_iter()
            .map(|e| e.line)
            .collect()
    }

    #[test]
    fn deploy_get_and_version_numbering() {
        let (_d, s) = open();
        let hello = name("hello");
        let c1 = code(b"one");

        let d1 = s.deploy(&hello, &cfg("index.handler"), &c1).unwrap();
        assert!(d1.created);
        assert_eq!(d1.version, "1");
        assert_eq!(d1.latest.version, "$LATEST");
        assert_eq!(d1.latest.code_sha256, c1.sha256);
        assert_eq!(d1.latest.code_size, 3);
        assert_eq!(d1.latest.config, cfg("index.handler"));
        assert_eq!(s.get(&hello, None).unwrap(), d1.latest);
        assert_eq!(s.get(&hello, Some("$LATEST")).unwrap(), d1.latest);
        let v1 = s.get(&hello, Some("1")).unwrap();
        assert_eq!(v1.version, "1");
        assert_eq!(v1.code_sha256, c1.sha256);

        // Same code and config: nothing new is published, but $LATEST gets a new revision.
        let d2 = s.deploy(&hello, &cfg("index.handler"), &c1).unwrap();
        assert!(!d2.created);
        assert_eq!(d2.version, "1");
        assert_ne!(d2.latest.revision_id, d1.latest.revision_id);
        assert_eq!(s.versions(&hello).unwrap().len(), 2);

        // New code publishes 2, new config publishes 3; going back to the first publishes 4.
        let c2 = code(b"two");
        assert_eq!(
            s.deploy(&hello, &cfg("index.handler"), &c2)
                .unwrap()
                .version,
            "2"
        );
        assert_eq!(
            s.deploy(&hello, &cfg("index.other"), &c2).unwrap().version,
            "3"
        );
        assert_eq!(
            s.deploy(&hello, &cfg("index.handler"), &c1)
                .unwrap()
                .version,
            "4"
        );

        let all = s.versions(&hello).unwrap();
        let tags: Vec<&str> = all.iter().map(|v| v.version.as_str()).collect();
        assert_eq!(tags, ["$LATEST", "1", "2", "3", "4"]);
        assert_eq!(all[2].code_sha256, c2.sha256);
        assert_eq!(all[3].config.handler, "index.other");
        // Numbered versions kept their content.
        assert_eq!(s.get(&hello, Some("1")).unwrap(), v1);
    }

    #[test]
    fn last_modified_uses_lambda_format() {
        let (_d, s) = open();
        let d = s.deploy(&name("f"), &cfg("i.h"), &code(b"x")).unwrap();
        let t = &d.latest.last_modified;
        // 2021-06-16T10:49:22.524+0000
        assert_eq!(t.len(), 28, "{t}");
        assert!(
            t.ends_with("+0000") && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.',
            "{t}"
        );
        assert!(uuid::Uuid::parse_str(&d.latest.revision_id).is_ok());
        let fixed = time::macros::datetime!(2021-06-16 10:49:22.524 +02:00);
        assert_eq!(lambda_timestamp(fixed), "2021-06-16T08:49:22.524+0000");
    }

    #[test]
    fn list_is_sorted_by_name() {
        let (_d, s) = open();
        for n in ["zeta", "Alpha", "beta"] {
            s.deploy(&name(n), &cfg("i.h"), &code(n.as_bytes()))
                .unwrap();
        }
        let names: Vec<String> = s
            .list()
            .unwrap()
            .into_iter()
            .map(|f| f.name.to_string())
            .collect();
        assert_eq!(names, ["Alpha", "beta", "zeta"]);
        assert!(s.list().unwrap().iter().all(|f| f.version == "$LATEST"));
    }

    #[test]
    fn not_found_errors() {
        let (_d, s) = open();
        let ghost = name("ghost");
        let e = s.get(&ghost, None).unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "function not found: ghost");
        assert_eq!(
            s.get(&ghost, Some("3")).unwrap_err().to_string(),
            "function not found: ghost"
        );
        assert!(s.versions(&ghost).unwrap_err().is_not_found());
        assert!(s.delete(&ghost).unwrap_err().is_not_found());

        let hello = name("hello");
        s.deploy(&hello, &cfg("i.h"), &code(b"x")).unwrap();
        assert_eq!(
            s.get(&hello, Some("7")).unwrap_err().to_string(),
            "version 7 of hello not found"
        );
        for q in ["live", "-1", "1.0", "", "99999999999999999999999"] {
            assert!(s.get(&hello, Some(q)).unwrap_err().is_not_found(), "{q:?}");
        }
    }

    #[test]
    fn numbered_versions_are_immutable() {
        let (_d, s) = open();
        s.deploy(&name("f"), &cfg("i.h"), &code(b"x")).unwrap();
        let e = s
            .registry()
            .execute("UPDATE versions SET code_sha256 = 'x'", [])
            .unwrap_err();
        assert!(e.to_string().contains("immutable"), "{e}");
    }

    #[test]
    fn everything_persists_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let f = name("persist");
        let (versions, logs) = {
            let s = SqliteStore::open(dir.path()).unwrap();
            s.deploy(&f, &cfg("i.h"), &code(b"1")).unwrap();
            s.deploy(&f, &cfg("i.h"), &code(b"2")).unwrap();
            s.append_logs(&[line("persist", "a"), line("persist", "b")])
                .unwrap();
            (s.versions(&f).unwrap(), s.logs(&f, 0, 100).unwrap())
        };
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(s.versions(&f).unwrap(), versions);
        assert_eq!(s.logs(&f, 0, 100).unwrap(), logs);
        assert_eq!(s.list().unwrap().len(), 1);
        // Numbering continues.
        assert_eq!(s.deploy(&f, &cfg("i.h"), &code(b"3")).unwrap().version, "3");
        // Sequence numbers keep growing.
        s.append_logs(&[line("persist", "c")]).unwrap();
        assert!(s.logs(&f, 0, 100).unwrap()[2].seq > logs[1].seq);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(SqliteStore::open(dir.path()).unwrap());
        Connection::open(dir.path().join("registry.db"))
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let e = SqliteStore::open(dir.path()).unwrap_err();
        assert!(
            matches!(e, StoreError::Corrupt(_)) && e.to_string().contains("upgrade nimbus"),
            "{e}"
        );
    }

    #[test]
    fn pragmas_are_set() {
        let (_d, s) = open();
        let reg = s.registry();
        let mode: String = reg
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = reg
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let fk: i64 = reg
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
        let logs = s.logs_db();
        let sync: i64 = logs
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    }

    #[test]
    fn delete_removes_function_versions_and_logs() {
        let (_d, s) = open();
        let (a, b) = (name("a"), name("b"));
        s.deploy(&a, &cfg("i.h"), &code(b"1")).unwrap();
        s.deploy(&a, &cfg("i.h"), &code(b"2")).unwrap();
        s.deploy(&b, &cfg("i.h"), &code(b"1")).unwrap();
        s.append_logs(&[line("a", "x"), line("b", "y")]).unwrap();

        s.delete(&a).unwrap();
        assert!(s.get(&a, None).unwrap_err().is_not_found());
        assert!(s.get(&a, Some("1")).unwrap_err().is_not_found());
        assert!(s.logs(&a, 0, 10).unwrap().is_empty());
        let left: i64 = s
            .registry()
            .query_row("SELECT COUNT(*) FROM versions WHERE name = 'a'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(left, 0);
        // The other function is untouched.
        assert_eq!(s.versions(&b).unwrap().len(), 2);
        assert_eq!(lines(&s, "b", 0, 10), ["y"]);
        assert!(s.delete(&a).unwrap_err().is_not_found());

        // Recreated: a new function, numbering starts again, stale lines are gone.
        s.append_logs(&[line("a", "late line from a dying instance")])
            .unwrap();
        let d = s.deploy(&a, &cfg("i.h"), &code(b"9")).unwrap();
        assert!(d.created);
        assert_eq!(d.version, "1");
        assert!(s.logs(&a, 0, 10).unwrap().is_empty());
    }

    #[test]
    fn logs_after_and_limit() {
        let (_d, s) = open();
        let batch: Vec<LogEntry> = (0..5).map(|i| line("f", &format!("l{i}"))).collect();
        s.append_logs(&batch).unwrap();
        s.append_logs(&[line("g", "other")]).unwrap();
        s.append_logs(&[]).unwrap();

        let all = s.logs(&name("f"), 0, 100).unwrap();
        assert_eq!(
            all.iter().map(|e| e.line.as_str()).collect::<Vec<_>>(),
            ["l0", "l1", "l2", "l3", "l4"]
        );
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(all[0].request_id.as_deref(), Some("req"));
        assert_eq!(all[0].ts_ms, 1_700_000_000_000);
        assert_eq!(all[0].function, "f");

        assert_eq!(lines(&s, "f", 0, 2), ["l0", "l1"]);
        assert_eq!(lines(&s, "f", all[1].seq, 2), ["l2", "l3"]);
        assert_eq!(lines(&s, "f", all[4].seq, 10), Vec::<String>::new());
        assert!(lines(&s, "f", 0, 0).is_empty());
        assert_eq!(lines(&s, "g", 0, 10), ["other"]);

        let mut e = line("f", "err");
        e.stream = LogStream::Platform;
        e.request_id = None;
        s.append_logs(&[e]).unwrap();
        let last = s.logs(&name("f"), all[4].seq, 10).unwrap();
        assert_eq!(last[0].stream, LogStream::Platform);
        assert_eq!(last[0].request_id, None);
    }

    #[test]
    fn logs_retention_prunes_oldest() {
        let (_d, s) = open();
        let s = s.with_log_retention(3);
        s.append_logs(&[line("f", "1"), line("f", "2")]).unwrap();
        s.append_logs(&[line("f", "3"), line("f", "4"), line("g", "g1")])
            .unwrap();
        assert_eq!(lines(&s, "f", 0, 100), ["2", "3", "4"]);
        s.append_logs(
            &(5..=9)
                .map(|i| line("f", &i.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(lines(&s, "f", 0, 100), ["7", "8", "9"]);
        // Other functions keep their own budget.
        assert_eq!(lines(&s, "g", 0, 100), ["g1"]);
        assert_eq!(LOG_RETENTION_LINES, 10_000);
    }
}
