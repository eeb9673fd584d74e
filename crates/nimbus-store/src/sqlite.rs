//! The SQLite [`Store`]: `registry.db` (functions, versions, aliases and per-function
//! metadata, `synchronous=FULL`) and `logs.db` (log lines, `synchronous=NORMAL`: a crash may
//! lose the last lines, never the registry; see [`logs`]) in the data directory, both in WAL
//! mode.

mod layers;
mod logs;

pub use logs::{LogLimits, LogUsage, LOG_RETENTION_LINES};

use crate::db::Db;
use crate::{CodeInfo, Deployed, LogEntry, ProvisionedConfig, Result, Store, StoreError};
use logs::LogDb;
use nimbus_core::control::validate_alias_name;
use nimbus_core::{
    Alias, FunctionConfig, FunctionMeta, FunctionName, FunctionVersion, Limits, LATEST,
};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Schema migrations of `registry.db`; entry `i` takes `user_version` from `i` to `i + 1`.
const REGISTRY_MIGRATIONS: &[&str] = &[
    "
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
",
    "
-- Lambda control plane: per-function metadata and aliases.
ALTER TABLE functions ADD COLUMN reserved_concurrency INTEGER;
ALTER TABLE functions ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
ALTER TABLE functions ADD COLUMN policy TEXT NOT NULL DEFAULT '[]';
ALTER TABLE functions ADD COLUMN policy_revision_id TEXT NOT NULL DEFAULT '';
-- Highest version number ever published, so a deleted version's number is never reused.
ALTER TABLE functions ADD COLUMN last_version INTEGER NOT NULL DEFAULT 0;
UPDATE functions SET last_version =
    COALESCE((SELECT MAX(version) FROM versions WHERE versions.name = functions.name), 0);
CREATE TABLE aliases (
    function         TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    name             TEXT NOT NULL,
    function_version TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    routing          TEXT NOT NULL DEFAULT '{}',
    revision_id      TEXT NOT NULL,
    PRIMARY KEY (function, name)
) STRICT;
",
    "
-- Provisioned concurrency: per function and qualifier (a version or an alias).
CREATE TABLE provisioned_concurrency (
    function      TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier     TEXT NOT NULL,
    requested     INTEGER NOT NULL,
    last_modified TEXT NOT NULL,
    PRIMARY KEY (function, qualifier)
) STRICT;
",
    "
-- Lambda layers. A layer row outlives its versions: `last_version` keeps a deleted
-- version's number from being reused.
CREATE TABLE layers (
    name         TEXT PRIMARY KEY NOT NULL,
    last_version INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE layer_versions (
    name                     TEXT NOT NULL REFERENCES layers(name),
    version                  INTEGER NOT NULL,
    description              TEXT NOT NULL DEFAULT '',
    license_info             TEXT NOT NULL DEFAULT '',
    compatible_runtimes      TEXT NOT NULL DEFAULT '[]',
    compatible_architectures TEXT NOT NULL DEFAULT '[]',
    code_sha256              TEXT NOT NULL,
    code_size                INTEGER NOT NULL,
    unzipped_size            INTEGER NOT NULL,
    created_date             TEXT NOT NULL,
    policy                   TEXT NOT NULL DEFAULT '[]',
    policy_revision_id       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, version)
) STRICT;
CREATE TRIGGER layer_versions_are_immutable
BEFORE UPDATE OF name, version, description, license_info, compatible_runtimes,
    compatible_architectures, code_sha256, code_size, unzipped_size, created_date
ON layer_versions
BEGIN
    SELECT RAISE(ABORT, 'layer versions are immutable');
END;
",
];

/// The default [`Store`]: two SQLite databases in the data directory.
pub struct SqliteStore {
    registry: Mutex<Db>,
    logs: LogDb,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("log_limits", &self.logs.limits())
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
        let logs = LogDb::open(data_dir)?;
        Ok(Self {
            registry: Mutex::new(registry),
            logs,
        })
    }

    /// Keeps at most `lines` log lines per function (default [`LOG_RETENTION_LINES`]).
    pub fn with_log_retention(self, lines: usize) -> Result<Self> {
        let limits = LogLimits {
            lines_per_function: lines,
            ..self.logs.limits()
        };
        self.with_log_limits(limits)
    }

    /// Bounds the log store (default [`LogLimits::default`]).
    pub fn with_log_limits(mut self, limits: LogLimits) -> Result<Self> {
        self.logs.set_limits(limits)?;
        Ok(self)
    }

    fn registry(&self) -> MutexGuard<'_, Db> {
        // A panic while holding the lock cannot leave a half-done transaction behind (dropping
        // a rusqlite Transaction rolls it back), so the connection is still good.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens (creating as needed) the SQLite database at `path` in WAL mode with this
/// `synchronous` level and foreign keys on, and applies `migrations` (entry `i` takes
/// `user_version` from `i` to `i + 1`) in one transaction. Every store in the data
/// directory opens its database this way; its writes are timed ([`Db`]).
pub fn open_db(path: &Path, synchronous: &str, migrations: &[&str]) -> Result<Db> {
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
    Ok(Db::new(conn, path))
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

pub(crate) fn now_ms(t: time::OffsetDateTime) -> i64 {
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

fn encode_config(name: &FunctionName, config: &FunctionConfig) -> Result<String> {
    serde_json::to_string(config)
        .map_err(|e| StoreError::Corrupt(format!("encoding the config of {name}: {e}")))
}

fn encode_json<T: serde::Serialize>(what: &str, name: &FunctionName, value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("encoding the {what} of {name}: {e}")))
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, owner: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored {what} of {owner}: {e}")))
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `$LATEST` of `name`, or `NotFound`.
fn require_latest(conn: &Connection, name: &FunctionName) -> Result<FunctionVersion> {
    get_latest(conn, name.as_str())?.ok_or_else(|| function_not_found(name.as_str()))
}

/// `NotFound` unless the function exists.
fn require_function(conn: &Connection, name: &FunctionName) -> Result<()> {
    conn.query_row(
        "SELECT 1 FROM functions WHERE name = ?1",
        [name.as_str()],
        |_| Ok(()),
    )
    .optional()?
    .ok_or_else(|| function_not_found(name.as_str()))
}

/// `PreconditionFailed` when the caller expects another revision than `current`.
fn check_revision(expected: Option<&str>, current: &str, what: &str) -> Result<()> {
    match expected {
        Some(e) if e != current => Err(StoreError::PreconditionFailed(format!(
            "revision id {e:?} does not match the current revision {current:?} of {what}: \
             read it again and retry with its current revision id"
        ))),
        _ => Ok(()),
    }
}

fn check_description(description: &str) -> Result<()> {
    if description.chars().count() > Limits::DESCRIPTION_MAX {
        return Err(StoreError::InvalidInput(format!(
            "invalid description: use at most {} characters",
            Limits::DESCRIPTION_MAX
        )));
    }
    Ok(())
}

fn version_exists(conn: &Connection, name: &FunctionName, version: i64) -> Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM versions WHERE name = ?1 AND version = ?2",
            params![name.as_str(), version],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// A version about to be published by [`publish_version`].
struct Candidate<'a> {
    config: &'a FunctionConfig,
    code_sha256: &'a str,
    code_size: u64,
    /// Whether a different description alone makes the newest version differ. False when
    /// PublishVersion names the description: it labels the version, it is not a change.
    compare_description: bool,
}

/// Inside the caller's (immediate) transaction: the newest numbered version of `name` when
/// it has the same code and config as `c`, else a new version numbered one past the highest
/// number ever used by this function. Returns the number and whether it was published now.
///
/// Decoded configs are compared, not JSON text, so a schema change that only adds
/// defaulted fields does not publish a spurious version.
fn publish_version(
    tx: &Connection,
    name: &FunctionName,
    c: &Candidate<'_>,
    now: time::OffsetDateTime,
) -> Result<(i64, bool)> {
    let newest: Option<(i64, String, String)> = tx
        .query_row(
            "SELECT version, config, code_sha256 FROM versions WHERE name = ?1 ORDER BY version DESC LIMIT 1",
            [name.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    if let Some((v, stored_config, stored_sha)) = &newest {
        let mut stored: FunctionConfig =
            decode_json("config", &format!("{name} version {v}"), stored_config)?;
        if !c.compare_description {
            stored.description.clone_from(&c.config.description);
        }
        // Settings of the deploy's alias, not of a version: changing them publishes nothing.
        stored.alias.clone_from(&c.config.alias);
        stored.provisioned_concurrency = c.config.provisioned_concurrency;
        if stored == *c.config && stored_sha == c.code_sha256 {
            return Ok((*v, false));
        }
    }
    let last_used: i64 = tx
        .query_row(
            "SELECT last_version FROM functions WHERE name = ?1",
            [name.as_str()],
            |r| r.get(0),
        )
        .optional()?
        .ok_or_else(|| function_not_found(name.as_str()))?;
    let v = last_used.max(newest.map_or(0, |(v, _, _)| v)) + 1;
    tx.execute(
        "INSERT INTO versions (name, version, config, code_sha256, code_size, last_modified,
             revision_id, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            name.as_str(),
            v,
            encode_config(name, c.config)?,
            c.code_sha256,
            c.code_size as i64,
            lambda_timestamp(now),
            new_revision(),
            now_ms(now)
        ],
    )?;
    tx.execute(
        "UPDATE functions SET last_version = ?2 WHERE name = ?1",
        params![name.as_str(), v],
    )?;
    Ok((v, true))
}

const META_COLUMNS: &str = "reserved_concurrency, tags, policy, policy_revision_id";

fn get_meta(conn: &Connection, name: &FunctionName) -> Result<FunctionMeta> {
    let row: Option<(Option<i64>, String, String, String)> = conn
        .query_row(
            &format!("SELECT {META_COLUMNS} FROM functions WHERE name = ?1"),
            [name.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let (reserved, tags, policy, policy_revision_id) =
        row.ok_or_else(|| function_not_found(name.as_str()))?;
    let reserved_concurrency = reserved
        .map(|v| {
            u32::try_from(v).map_err(|_| {
                StoreError::Corrupt(format!("stored reserved concurrency of {name}: {v}"))
            })
        })
        .transpose()?;
    Ok(FunctionMeta {
        reserved_concurrency,
        tags: decode_json("tags", name.as_str(), &tags)?,
        policy: decode_json("policy", name.as_str(), &policy)?,
        policy_revision_id,
    })
}

fn set_tags(tx: &Connection, name: &FunctionName, tags: &BTreeMap<String, String>) -> Result<()> {
    tx.execute(
        "UPDATE functions SET tags = ?2 WHERE name = ?1",
        params![name.as_str(), encode_json("tags", name, tags)?],
    )?;
    Ok(())
}

/// Stores `policy` with a new policy revision id.
fn set_policy(tx: &Connection, name: &FunctionName, policy: &[serde_json::Value]) -> Result<()> {
    tx.execute(
        "UPDATE functions SET policy = ?2, policy_revision_id = ?3 WHERE name = ?1",
        params![
            name.as_str(),
            encode_json("policy", name, &policy)?,
            new_revision()
        ],
    )?;
    Ok(())
}

fn statement_sid(statement: &serde_json::Value) -> Option<&str> {
    statement.get("Sid").and_then(|s| s.as_str())
}

const ALIAS_COLUMNS: &str = "name, function_version, description, routing, revision_id";

fn decode_alias(function: &FunctionName, row: &Row<'_>) -> rusqlite::Result<Result<Alias>> {
    let name: String = row.get(0)?;
    let function_version: String = row.get(1)?;
    let description: String = row.get(2)?;
    let routing: String = row.get(3)?;
    let revision_id: String = row.get(4)?;
    Ok(
        decode_json("routing", &format!("alias {name} of {function}"), &routing).map(|routing| {
            Alias {
                name,
                function_version,
                description,
                routing,
                revision_id,
            }
        }),
    )
}

fn find_alias(conn: &Connection, function: &FunctionName, alias: &str) -> Result<Option<Alias>> {
    conn.query_row(
        &format!("SELECT {ALIAS_COLUMNS} FROM aliases WHERE function = ?1 AND name = ?2"),
        params![function.as_str(), alias],
        |r| decode_alias(function, r),
    )
    .optional()?
    .transpose()
}

fn require_alias(conn: &Connection, function: &FunctionName, alias: &str) -> Result<Alias> {
    require_function(conn, function)?;
    find_alias(conn, function, alias)?
        .ok_or_else(|| StoreError::NotFound(format!("alias {alias} of {function} not found")))
}

fn all_aliases(conn: &Connection, function: &FunctionName) -> Result<Vec<Alias>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {ALIAS_COLUMNS} FROM aliases WHERE function = ?1 ORDER BY name"
    ))?;
    let rows = stmt.query_map([function.as_str()], |r| decode_alias(function, r))?;
    rows.map(|r| r?).collect()
}

/// Whether `alias` sends any traffic to `version` (canonical form).
fn points_at(alias: &Alias, version: &str) -> bool {
    alias.function_version == version || alias.routing.contains_key(version)
}

/// The canonical form of a numbered-version qualifier (`"007"` → `"7"`).
fn canonical_version(q: &str) -> String {
    parse_version(q).map_or_else(|| q.to_string(), |v| v.to_string())
}

/// Checks an alias target and returns it in canonical form: `function_version` is `$LATEST`
/// or an existing numbered version; `routing` has at most one entry, naming another existing
/// numbered version with a weight in 0.0–1.0, and only when `function_version` is numbered.
fn check_alias_target(
    conn: &Connection,
    function: &FunctionName,
    function_version: &str,
    routing: &BTreeMap<String, f64>,
) -> Result<(String, BTreeMap<String, f64>)> {
    let target = if function_version == LATEST {
        LATEST.to_string()
    } else {
        let v = parse_version(function_version).ok_or_else(|| {
            StoreError::InvalidInput(format!(
                "invalid alias target {function_version:?}: use $LATEST or a published version number"
            ))
        })?;
        if !version_exists(conn, function, v)? {
            return Err(StoreError::NotFound(format!(
                "version {v} of {function} not found"
            )));
        }
        v.to_string()
    };
    if routing.len() > 1 {
        return Err(StoreError::InvalidInput(format!(
            "invalid routing configuration: it names {} versions, an alias can route to at most one additional version",
            routing.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (key, &weight) in routing {
        if target == LATEST {
            return Err(StoreError::InvalidInput(
                "invalid routing configuration: an alias pointing at $LATEST cannot route to another version; point it at a published version".into(),
            ));
        }
        let v = parse_version(key).ok_or_else(|| {
            StoreError::InvalidInput(format!(
                "invalid routing configuration: {key:?} is not a published version number; route to a numbered version"
            ))
        })?;
        if v.to_string() == target {
            return Err(StoreError::InvalidInput(format!(
                "invalid routing configuration: version {v} is already the alias's primary version; route to a different version"
            )));
        }
        if !(0.0..=1.0).contains(&weight) {
            return Err(StoreError::InvalidInput(format!(
                "invalid routing configuration: weight {weight} of version {v} is out of range; use 0.0 to 1.0"
            )));
        }
        if !version_exists(conn, function, v)? {
            return Err(StoreError::NotFound(format!(
                "version {v} of {function} not found"
            )));
        }
        out.insert(v.to_string(), weight);
    }
    Ok((target, out))
}

impl SqliteStore {
    /// Lines appended after an earlier function of the same name was deleted must not show up
    /// as a newly created function's.
    fn clear_stale_logs(&self, name: &FunctionName) {
        self.delete_logs(name, "could not clear stale log lines");
    }

    /// Deletes every log line of `name` (logging, not failing, on error).
    fn delete_logs(&self, name: &FunctionName, failure: &str) {
        if let Err(e) = self.logs.delete_function(name.as_str()) {
            tracing::warn!(function = %name, error = %e, "{failure}");
        }
    }
}

impl Store for SqliteStore {
    fn layers(&self) -> &dyn crate::LayerStore {
        self
    }

    fn deploy(
        &self,
        name: &FunctionName,
        config: &FunctionConfig,
        code: &CodeInfo,
    ) -> Result<Deployed> {
        let config_json = encode_config(name, config)?;
        let now = time::OffsetDateTime::now_utc();

        let mut conn = self.registry();
        let tx = conn.write_tx()?;
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
                code.size as i64,
                lambda_timestamp(now),
                new_revision(),
                now_ms(now)
            ],
        )?;
        let (version, _) = publish_version(
            &tx,
            name,
            &Candidate {
                config,
                code_sha256: &code.sha256,
                code_size: code.size,
                compare_description: true,
            },
            now,
        )?;
        let latest = get_latest(&tx, name.as_str())?.ok_or_else(|| {
            StoreError::Corrupt(format!("{name} vanished inside its own transaction"))
        })?;
        tx.commit()?;
        drop(conn);

        if created {
            self.clear_stale_logs(name);
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

    fn list_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionVersion>> {
        let conn = self.registry();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM functions WHERE name > ?1 ORDER BY name LIMIT ?2"
        ))?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt.query_map(rusqlite::params![after.unwrap_or(""), limit], |r| {
            decode(r, None)
        })?;
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
            let tx = conn.write_tx()?;
            // Versions go with it (ON DELETE CASCADE).
            let n = tx.execute("DELETE FROM functions WHERE name = ?1", [name.as_str()])?;
            if n == 0 {
                return Err(function_not_found(name.as_str()));
            }
            tx.commit()?;
        }
        // The function is gone either way; leftover lines are cleared when the name is reused.
        self.delete_logs(name, "could not delete log lines");
        tracing::debug!(function = %name, "deleted");
        Ok(())
    }

    fn code_references(&self) -> Result<HashSet<String>> {
        let conn = self.registry();
        let mut stmt = conn.prepare_cached(
            "SELECT code_sha256 FROM functions UNION SELECT code_sha256 FROM versions \
             UNION SELECT code_sha256 FROM layer_versions",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = HashSet::new();
        for r in rows {
            out.insert(r?.to_ascii_lowercase());
        }
        // The layers every function version uses (kept even after the layer version is
        // deleted) and the merged `/opt` tree each ordered list of them makes.
        layers::function_layer_references(&conn, &mut out)?;
        Ok(out)
    }

    fn append_logs(&self, entries: &[LogEntry]) -> Result<()> {
        self.logs.append(entries)
    }

    fn logs(&self, function: &FunctionName, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        self.logs.read(function.as_str(), after, limit)
    }

    fn query_logs(
        &self,
        functions: Option<&[String]>,
        q: &crate::LogQuery,
    ) -> Result<crate::LogPage> {
        self.logs.query(functions, q)
    }

    fn log_usage(&self) -> LogUsage {
        self.logs.usage()
    }

    fn maintain_logs(&self) -> Result<u64> {
        self.logs.maintain()
    }

    fn create(
        &self,
        name: &FunctionName,
        config: &FunctionConfig,
        code: &CodeInfo,
        tags: &BTreeMap<String, String>,
        publish: bool,
    ) -> Result<(FunctionVersion, Option<FunctionVersion>)> {
        let now = time::OffsetDateTime::now_utc();
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        if get_latest(&tx, name.as_str())?.is_some() {
            return Err(StoreError::Conflict(format!(
                "function {name} already exists: update its code or configuration, or delete it first"
            )));
        }
        tx.execute(
            "INSERT INTO functions (name, config, code_sha256, code_size, last_modified, revision_id,
                 created_ms, tags)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                name.as_str(),
                encode_config(name, config)?,
                code.sha256,
                code.size as i64,
                lambda_timestamp(now),
                new_revision(),
                now_ms(now),
                encode_json("tags", name, tags)?
            ],
        )?;
        let published = if publish {
            let candidate = Candidate {
                config,
                code_sha256: &code.sha256,
                code_size: code.size,
                compare_description: true,
            };
            let (v, _) = publish_version(&tx, name, &candidate, now)?;
            get_version(&tx, name.as_str(), v)?
        } else {
            None
        };
        let latest = require_latest(&tx, name)?;
        tx.commit()?;
        drop(conn);
        self.clear_stale_logs(name);
        tracing::debug!(function = %name, publish, "created");
        Ok((latest, published))
    }

    fn update_latest(
        &self,
        name: &FunctionName,
        config: Option<&FunctionConfig>,
        code: Option<&CodeInfo>,
        expected_revision: Option<&str>,
    ) -> Result<FunctionVersion> {
        let now = time::OffsetDateTime::now_utc();
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let current = require_latest(&tx, name)?;
        check_revision(expected_revision, &current.revision_id, &format!("{name}"))?;
        if config.is_none() && code.is_none() {
            return Ok(current);
        }
        let config_json = match config {
            Some(c) => encode_config(name, c)?,
            None => encode_config(name, &current.config)?,
        };
        let (sha, size) = match code {
            Some(c) => (c.sha256.as_str(), c.size),
            None => (current.code_sha256.as_str(), current.code_size),
        };
        tx.execute(
            "UPDATE functions SET config = ?2, code_sha256 = ?3, code_size = ?4, last_modified = ?5,
                 revision_id = ?6
             WHERE name = ?1",
            params![
                name.as_str(),
                config_json,
                sha,
                size as i64,
                lambda_timestamp(now),
                new_revision()
            ],
        )?;
        let latest = require_latest(&tx, name)?;
        tx.commit()?;
        tracing::debug!(function = %name, config = config.is_some(), code = code.is_some(), "updated $LATEST");
        Ok(latest)
    }

    fn publish(
        &self,
        name: &FunctionName,
        description: Option<&str>,
        expected_code_sha256: Option<&str>,
        expected_revision: Option<&str>,
    ) -> Result<FunctionVersion> {
        if let Some(d) = description {
            check_description(d)?;
        }
        let now = time::OffsetDateTime::now_utc();
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let latest = require_latest(&tx, name)?;
        check_revision(expected_revision, &latest.revision_id, &format!("{name}"))?;
        if let Some(sha) = expected_code_sha256 {
            if !sha.eq_ignore_ascii_case(&latest.code_sha256) {
                return Err(StoreError::PreconditionFailed(format!(
                    "code sha256 {sha} does not match the code of {name} ({}): read the function again and retry with its current code hash",
                    latest.code_sha256
                )));
            }
        }
        let mut config = latest.config.clone();
        if let Some(d) = description {
            config.description = d.to_string();
        }
        let candidate = Candidate {
            config: &config,
            code_sha256: &latest.code_sha256,
            code_size: latest.code_size,
            // As Lambda: publishing an unchanged $LATEST returns the newest version, whether
            // or not that version was given a description of its own.
            compare_description: false,
        };
        let (v, new) = publish_version(&tx, name, &candidate, now)?;
        let version = get_version(&tx, name.as_str(), v)?.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "version {v} of {name} vanished inside its own transaction"
            ))
        })?;
        tx.commit()?;
        tracing::debug!(function = %name, version = v, new, "published");
        Ok(version)
    }

    fn delete_version(&self, name: &FunctionName, version: &str) -> Result<()> {
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        require_function(&tx, name)?;
        let v = match parse_version(version) {
            Some(v) => v,
            None if version == LATEST => {
                return Err(StoreError::InvalidInput(format!(
                    "$LATEST of {name} cannot be deleted on its own: delete the function instead"
                )))
            }
            None => {
                return Err(StoreError::InvalidInput(format!(
                    "{version:?} is not a version number: name a published version to delete (aliases are deleted separately)"
                )))
            }
        };
        let users: Vec<String> = all_aliases(&tx, name)?
            .into_iter()
            .filter(|a| points_at(a, &v.to_string()))
            .map(|a| a.name)
            .collect();
        if !users.is_empty() {
            return Err(StoreError::Conflict(format!(
                "version {v} of {name} is used by alias {}: point the alias at another version or delete it first",
                users.join(", ")
            )));
        }
        let n = tx.execute(
            "DELETE FROM versions WHERE name = ?1 AND version = ?2",
            params![name.as_str(), v],
        )?;
        tx.execute(
            "DELETE FROM provisioned_concurrency WHERE function = ?1 AND qualifier = ?2",
            params![name.as_str(), v.to_string()],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "version {v} of {name} not found"
            )));
        }
        tx.commit()?;
        tracing::debug!(function = %name, version = v, "deleted version");
        Ok(())
    }

    fn meta(&self, name: &FunctionName) -> Result<FunctionMeta> {
        get_meta(&self.registry(), name)
    }

    fn set_reserved_concurrency(&self, name: &FunctionName, value: Option<u32>) -> Result<()> {
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let n = tx.execute(
            "UPDATE functions SET reserved_concurrency = ?2 WHERE name = ?1",
            params![name.as_str(), value],
        )?;
        if n == 0 {
            return Err(function_not_found(name.as_str()));
        }
        tx.commit()?;
        Ok(())
    }

    fn tag(&self, name: &FunctionName, tags: &BTreeMap<String, String>) -> Result<()> {
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let mut current = get_meta(&tx, name)?.tags;
        current.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        set_tags(&tx, name, &current)?;
        tx.commit()?;
        Ok(())
    }

    fn untag(&self, name: &FunctionName, keys: &[String]) -> Result<()> {
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let mut current = get_meta(&tx, name)?.tags;
        for k in keys {
            current.remove(k);
        }
        set_tags(&tx, name, &current)?;
        tx.commit()?;
        Ok(())
    }

    fn add_permission(
        &self,
        name: &FunctionName,
        statement_id: &str,
        statement: serde_json::Value,
        expected_revision: Option<&str>,
    ) -> Result<FunctionMeta> {
        let serde_json::Value::Object(mut statement) = statement else {
            return Err(StoreError::InvalidInput(
                "invalid policy statement: send a JSON object".into(),
            ));
        };
        if statement_id.is_empty() {
            return Err(StoreError::InvalidInput(
                "invalid statement id: use a non-empty id".into(),
            ));
        }
        statement.insert("Sid".into(), statement_id.into());
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let mut meta = get_meta(&tx, name)?;
        check_revision(
            expected_revision,
            &meta.policy_revision_id,
            &format!("the policy of {name}"),
        )?;
        if meta
            .policy
            .iter()
            .any(|s| statement_sid(s) == Some(statement_id))
        {
            return Err(StoreError::Conflict(format!(
                "statement id {statement_id} already exists in the policy of {name}: use another id or remove that statement first"
            )));
        }
        meta.policy.push(serde_json::Value::Object(statement));
        set_policy(&tx, name, &meta.policy)?;
        let meta = get_meta(&tx, name)?;
        tx.commit()?;
        Ok(meta)
    }

    fn remove_permission(
        &self,
        name: &FunctionName,
        statement_id: &str,
        expected_revision: Option<&str>,
    ) -> Result<()> {
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let mut meta = get_meta(&tx, name)?;
        check_revision(
            expected_revision,
            &meta.policy_revision_id,
            &format!("the policy of {name}"),
        )?;
        let before = meta.policy.len();
        meta.policy
            .retain(|s| statement_sid(s) != Some(statement_id));
        if meta.policy.len() == before {
            return Err(StoreError::NotFound(format!(
                "statement {statement_id} not found in the policy of {name}"
            )));
        }
        set_policy(&tx, name, &meta.policy)?;
        tx.commit()?;
        Ok(())
    }

    fn create_alias(&self, function: &FunctionName, alias: &Alias) -> Result<Alias> {
        if validate_alias_name(&alias.name).is_err() {
            return Err(StoreError::InvalidInput(format!(
                "invalid alias name {:?}: use 1-128 letters, digits, '-' or '_', not only digits",
                alias.name
            )));
        }
        check_description(&alias.description)?;
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        require_function(&tx, function)?;
        if find_alias(&tx, function, &alias.name)?.is_some() {
            return Err(StoreError::Conflict(format!(
                "alias {} of {function} already exists: update it or delete it first",
                alias.name
            )));
        }
        let (function_version, routing) =
            check_alias_target(&tx, function, &alias.function_version, &alias.routing)?;
        let stored = Alias {
            name: alias.name.clone(),
            function_version,
            description: alias.description.clone(),
            routing,
            revision_id: new_revision(),
        };
        tx.execute(
            "INSERT INTO aliases (function, name, function_version, description, routing, revision_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                function.as_str(),
                stored.name,
                stored.function_version,
                stored.description,
                encode_json("routing", function, &stored.routing)?,
                stored.revision_id
            ],
        )?;
        tx.commit()?;
        tracing::debug!(function = %function, alias = %stored.name, "created alias");
        Ok(stored)
    }

    fn update_alias(
        &self,
        function: &FunctionName,
        alias: &str,
        function_version: Option<&str>,
        description: Option<&str>,
        routing: Option<&BTreeMap<String, f64>>,
        expected_revision: Option<&str>,
    ) -> Result<Alias> {
        if let Some(d) = description {
            check_description(d)?;
        }
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        let mut current = require_alias(&tx, function, alias)?;
        check_revision(
            expected_revision,
            &current.revision_id,
            &format!("alias {alias} of {function}"),
        )?;
        let (target, routing) = check_alias_target(
            &tx,
            function,
            function_version.unwrap_or(&current.function_version),
            routing.unwrap_or(&current.routing),
        )?;
        current.function_version = target;
        current.routing = routing;
        if let Some(d) = description {
            current.description = d.to_string();
        }
        current.revision_id = new_revision();
        tx.execute(
            "UPDATE aliases SET function_version = ?3, description = ?4, routing = ?5, revision_id = ?6
             WHERE function = ?1 AND name = ?2",
            params![
                function.as_str(),
                alias,
                current.function_version,
                current.description,
                encode_json("routing", function, &current.routing)?,
                current.revision_id
            ],
        )?;
        tx.commit()?;
        tracing::debug!(function = %function, alias, "updated alias");
        Ok(current)
    }

    fn get_alias(&self, function: &FunctionName, alias: &str) -> Result<Alias> {
        let mut conn = self.registry();
        let tx = conn.transaction()?;
        require_alias(&tx, function, alias)
    }

    fn list_aliases(&self, function: &FunctionName, version: Option<&str>) -> Result<Vec<Alias>> {
        let mut conn = self.registry();
        let tx = conn.transaction()?;
        require_function(&tx, function)?;
        let mut aliases = all_aliases(&tx, function)?;
        if let Some(v) = version {
            let v = canonical_version(v);
            aliases.retain(|a| points_at(a, &v));
        }
        Ok(aliases)
    }

    fn delete_alias(&self, function: &FunctionName, alias: &str) -> Result<()> {
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        require_function(&tx, function)?;
        let n = tx.execute(
            "DELETE FROM aliases WHERE function = ?1 AND name = ?2",
            params![function.as_str(), alias],
        )?;
        tx.execute(
            "DELETE FROM provisioned_concurrency WHERE function = ?1 AND qualifier = ?2",
            params![function.as_str(), alias],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "alias {alias} of {function} not found"
            )));
        }
        tx.commit()?;
        tracing::debug!(function = %function, alias, "deleted alias");
        Ok(())
    }

    fn put_provisioned(
        &self,
        function: &FunctionName,
        qualifier: &str,
        requested: u32,
    ) -> Result<ProvisionedConfig> {
        let qualifier = canonical_version(qualifier);
        let last_modified = lambda_timestamp(time::OffsetDateTime::now_utc());
        let mut conn = self.registry();
        let tx = conn.write_tx()?;
        require_function(&tx, function)?;
        tx.execute(
            "INSERT INTO provisioned_concurrency (function, qualifier, requested, last_modified)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (function, qualifier) DO UPDATE SET
                 requested = excluded.requested, last_modified = excluded.last_modified",
            params![function.as_str(), qualifier, requested, last_modified],
        )?;
        tx.commit()?;
        Ok(ProvisionedConfig {
            function: function.clone(),
            qualifier,
            requested,
            last_modified,
        })
    }

    fn list_provisioned(&self, function: Option<&FunctionName>) -> Result<Vec<ProvisionedConfig>> {
        let conn = self.registry();
        let mut stmt = conn.prepare_cached(
            "SELECT function, qualifier, requested, last_modified FROM provisioned_concurrency
             WHERE ?1 IS NULL OR function = ?1 ORDER BY function, qualifier",
        )?;
        let rows = stmt.query_map(params![function.map(|f| f.as_str())], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (f, qualifier, requested, last_modified) = row?;
            let function = FunctionName::parse(&f)
                .map_err(|e| StoreError::Corrupt(format!("stored function name {f:?}: {e}")))?;
            out.push(ProvisionedConfig {
                function,
                qualifier,
                requested: requested.clamp(0, i64::from(u32::MAX)) as u32,
                last_modified,
            });
        }
        Ok(out)
    }

    fn delete_provisioned(&self, function: &FunctionName, qualifier: &str) -> Result<bool> {
        let conn = self.registry();
        let n = conn.execute(
            "DELETE FROM provisioned_concurrency WHERE function = ?1 AND qualifier = ?2",
            params![function.as_str(), canonical_version(qualifier)],
        )?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::registry::PgStore;
    use crate::LogStream;
    use nimbus_core::Runtime;
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::{Pg, PgConfig};

    /// Which backend a backend-parameterised test runs on.
    #[derive(Debug, Clone, Copy)]
    pub(crate) enum Backend {
        Sqlite,
        Postgres,
    }

    /// A [`Store`] under test: SQLite in a temporary directory, or PostgreSQL in a fresh
    /// schema of the test server. Derefs to `dyn Store`.
    pub(crate) enum TestStore {
        Sqlite(tempfile::TempDir, Box<SqliteStore>),
        Pg(TestDb, PgStore),
    }

    impl std::ops::Deref for TestStore {
        type Target = dyn Store;
        fn deref(&self) -> &(dyn Store + 'static) {
            match self {
                TestStore::Sqlite(_, s) => &**s,
                TestStore::Pg(_, s) => s,
            }
        }
    }

    impl TestStore {
        pub(crate) fn open(b: Backend) -> Self {
            match b {
                Backend::Sqlite => {
                    let dir = tempfile::tempdir().unwrap();
                    let s = SqliteStore::open(dir.path()).unwrap();
                    TestStore::Sqlite(dir, Box::new(s))
                }
                Backend::Postgres => {
                    let db = TestDb::new("store");
                    let s = PgStore::open(&db.pg).unwrap();
                    TestStore::Pg(db, s)
                }
            }
        }

        /// The same data opened by a new store (a restart; for PostgreSQL, a new pool
        /// too, as another node would).
        pub(crate) fn reopen(self) -> Self {
            match self {
                TestStore::Sqlite(dir, s) => {
                    drop(s);
                    let s = SqliteStore::open(dir.path()).unwrap();
                    TestStore::Sqlite(dir, Box::new(s))
                }
                TestStore::Pg(db, s) => {
                    drop(s);
                    let s = PgStore::open(&Self::another_pool(&db)).unwrap();
                    TestStore::Pg(db, s)
                }
            }
        }

        /// A second pool on `db`: another node's connections.
        pub(crate) fn another_pool(db: &TestDb) -> Pg {
            Pg::connect(&PgConfig::new(&db.url)).unwrap()
        }

        pub(crate) fn with_log_limits(self, limits: LogLimits) -> Self {
            match self {
                TestStore::Sqlite(d, s) => {
                    TestStore::Sqlite(d, Box::new((*s).with_log_limits(limits).unwrap()))
                }
                TestStore::Pg(d, s) => TestStore::Pg(d, s.with_log_limits(limits).unwrap()),
            }
        }

        pub(crate) fn with_log_retention(self, lines: usize) -> Self {
            match self {
                TestStore::Sqlite(d, s) => {
                    TestStore::Sqlite(d, Box::new((*s).with_log_retention(lines).unwrap()))
                }
                TestStore::Pg(d, s) => TestStore::Pg(d, s.with_log_retention(lines).unwrap()),
            }
        }

        /// `sql` as written for SQLite, with PostgreSQL's table names for PostgreSQL.
        fn pg_sql(sql: &str) -> String {
            let mut out = sql.to_string();
            for (from, to) in [
                ("functions", "registry_functions"),
                ("versions", "registry_versions"),
                ("aliases", "registry_aliases"),
                ("provisioned_concurrency", "registry_provisioned"),
                ("layer_versions", "registry_layer_versions"),
                ("log_usage", "logs_usage"),
                ("logs", "logs_lines"),
            ] {
                for kw in ["FROM", "UPDATE", "INTO"] {
                    out = out.replace(&format!("{kw} {from} "), &format!("{kw} {to} "));
                    if out.ends_with(&format!("{kw} {from}")) {
                        out = format!("{}{to}", &out[..out.len() - from.len()]);
                    }
                }
            }
            out
        }

        /// The single integer `sql` selects (SQLite's table names, mapped for PostgreSQL).
        pub(crate) fn count(&self, sql: &str) -> i64 {
            match self {
                TestStore::Sqlite(_, s) => s.registry().query_row(sql, [], |r| r.get(0)).unwrap(),
                TestStore::Pg(_, s) => {
                    let sql = Self::pg_sql(sql);
                    s.pg()
                        .with(async |c| Ok(c.query_one(&sql, &[]).await?.get::<_, i64>(0)))
                        .unwrap()
                }
            }
        }

        /// The single integer `sql` selects from the log store.
        pub(crate) fn log_count(&self, sql: &str) -> i64 {
            match self {
                TestStore::Sqlite(_, s) => s
                    .logs
                    .connection()
                    .query_row(sql, [], |r| r.get(0))
                    .unwrap(),
                TestStore::Pg(..) => self.count(sql),
            }
        }

        /// Runs a statement (SQLite's table names); the error's text on failure.
        pub(crate) fn sql_execute(&self, sql: &str) -> std::result::Result<u64, String> {
            match self {
                TestStore::Sqlite(_, s) => s
                    .registry()
                    .execute(sql, [])
                    .map(|n| n as u64)
                    .map_err(|e| e.to_string()),
                TestStore::Pg(_, s) => {
                    let sql = Self::pg_sql(sql);
                    s.pg()
                        .with(async |c| Ok(c.execute(&sql, &[]).await?))
                        .map_err(|e| format!("{e}: {:?}", e))
                }
            }
        }
    }

    /// Instantiates each named `fn(Backend)` as a test on SQLite and one on PostgreSQL.
    macro_rules! both {
        ($($name:ident),* $(,)?) => {
            mod on_sqlite {
                $(#[test]
                fn $name() {
                    super::$name(super::Backend::Sqlite)
                })*
            }
            mod on_postgres {
                $(#[test]
                fn $name() {
                    super::$name(super::Backend::Postgres)
                })*
            }
        };
    }
    pub(crate) use both;

    both!(
        deploy_get_and_version_numbering,
        last_modified_uses_lambda_format,
        list_is_sorted_by_name,
        not_found_errors,
        numbered_versions_are_immutable,
        delete_removes_function_versions_and_logs,
        code_references_are_latest_and_every_version,
        logs_after_and_limit,
        logs_retention_prunes_oldest,
        create_without_and_with_publish,
        create_conflicts_with_an_existing_function_and_changes_nothing,
        create_after_delete_starts_clean,
        update_latest_config_code_and_revision,
        update_latest_errors_and_no_op,
        publish_next_version_or_the_unchanged_newest,
        publish_preconditions,
        delete_version_and_numbers_are_never_reused,
        delete_version_conflicts_while_an_alias_uses_it,
        reserved_concurrency_and_tags,
        permissions,
        alias_create_get_list_delete,
        alias_create_errors,
        alias_invalid_routing,
        alias_update,
        deleting_a_function_removes_its_aliases,
        everything_persists_across_reopen,
        logs_retention_counts_lines_stored_before_a_restart,
        control_plane_state_persists_across_reopen,
    );

    fn name(s: &str) -> FunctionName {
        FunctionName::parse(s).unwrap()
    }

    fn cfg(handler: &str) -> FunctionConfig {
        FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), handler)
    }

    fn code(content: &[u8]) -> CodeInfo {
        CodeInfo::of(content)
    }

    fn open_sqlite() -> (tempfile::TempDir, SqliteStore) {
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
            level: None,
            trace_id: None,
        }
    }

    fn lines(store: &dyn Store, f: &str, after: i64, limit: usize) -> Vec<String> {
        store
            .logs(&name(f), after, limit)
            .unwrap()
            .into_iter()
            .map(|e| e.line)
            .collect()
    }

    fn deploy_get_and_version_numbering(b: Backend) {
        let s = TestStore::open(b);
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
        // The deploy alias and its provisioned count are not part of a version.
        let mut aliased = cfg("index.handler");
        aliased.alias = Some("live".into());
        aliased.provisioned_concurrency = Some(2);
        assert_eq!(s.deploy(&hello, &aliased, &c1).unwrap().version, "1");
        aliased.provisioned_concurrency = Some(3);
        assert_eq!(s.deploy(&hello, &aliased, &c1).unwrap().version, "1");
        assert_eq!(
            s.get(&hello, None).unwrap().config.provisioned_concurrency,
            Some(3)
        );
        s.deploy(&hello, &cfg("index.handler"), &c1).unwrap();

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

    fn last_modified_uses_lambda_format(b: Backend) {
        let s = TestStore::open(b);
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

    fn list_is_sorted_by_name(b: Backend) {
        let s = TestStore::open(b);
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
        // Pages: names strictly after the marker, at most `limit`.
        let page = |after: Option<&str>, limit| -> Vec<String> {
            s.list_after(after, limit)
                .unwrap()
                .into_iter()
                .map(|f| f.name.to_string())
                .collect()
        };
        assert_eq!(page(None, 2), ["Alpha", "beta"]);
        assert_eq!(page(Some("beta"), 2), ["zeta"]);
        assert_eq!(page(Some("Alpha"), 10), ["beta", "zeta"]);
        assert!(page(Some("zeta"), 10).is_empty());
    }

    fn not_found_errors(b: Backend) {
        let s = TestStore::open(b);
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

    fn numbered_versions_are_immutable(b: Backend) {
        let s = TestStore::open(b);
        s.deploy(&name("f"), &cfg("i.h"), &code(b"x")).unwrap();
        let e = s
            .sql_execute("UPDATE versions SET code_sha256 = 'x'")
            .unwrap_err();
        assert!(e.contains("immutable"), "{e}");
    }

    fn everything_persists_across_reopen(b: Backend) {
        let f = name("persist");
        let s = TestStore::open(b);
        s.deploy(&f, &cfg("i.h"), &code(b"1")).unwrap();
        s.deploy(&f, &cfg("i.h"), &code(b"2")).unwrap();
        s.append_logs(&[line("persist", "a"), line("persist", "b")])
            .unwrap();
        let (versions, logs) = (s.versions(&f).unwrap(), s.logs(&f, 0, 100).unwrap());
        let s = s.reopen();
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
        let (_d, s) = open_sqlite();
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
        let logs = s.logs.connection();
        let sync: i64 = logs
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 1);
    }

    fn delete_removes_function_versions_and_logs(b: Backend) {
        let s = TestStore::open(b);
        let (a, b) = (name("a"), name("b"));
        s.deploy(&a, &cfg("i.h"), &code(b"1")).unwrap();
        s.deploy(&a, &cfg("i.h"), &code(b"2")).unwrap();
        s.deploy(&b, &cfg("i.h"), &code(b"1")).unwrap();
        s.append_logs(&[line("a", "x"), line("b", "y")]).unwrap();

        s.delete(&a).unwrap();
        assert!(s.get(&a, None).unwrap_err().is_not_found());
        assert!(s.get(&a, Some("1")).unwrap_err().is_not_found());
        assert!(s.logs(&a, 0, 10).unwrap().is_empty());
        let left = s.count("SELECT COUNT(*) FROM versions WHERE name = 'a'");
        assert_eq!(left, 0);
        // The other function is untouched.
        assert_eq!(s.versions(&b).unwrap().len(), 2);
        assert_eq!(lines(&*s, "b", 0, 10), ["y"]);
        assert!(s.delete(&a).unwrap_err().is_not_found());

        // Recreated: a new function, numbering starts again, stale lines are gone.
        s.append_logs(&[line("a", "late line from a dying instance")])
            .unwrap();
        let d = s.deploy(&a, &cfg("i.h"), &code(b"9")).unwrap();
        assert!(d.created);
        assert_eq!(d.version, "1");
        assert!(s.logs(&a, 0, 10).unwrap().is_empty());
    }

    fn code_references_are_latest_and_every_version(b: Backend) {
        let s = TestStore::open(b);
        let refs = |s: &dyn Store| {
            let mut v: Vec<String> = s.code_references().unwrap().into_iter().collect();
            v.sort();
            v
        };
        let shas = |cs: &[&[u8]]| {
            let mut v: Vec<String> = cs.iter().map(|c| code(c).sha256).collect();
            v.sort();
            v
        };
        assert!(refs(&*s).is_empty());
        let (a, b) = (name("a"), name("b"));
        three_versions(&*s, &a); // versions 1..3 with code 1..3; $LATEST has code 3
        s.create(&b, &cfg("i.h"), &code(b"b"), &BTreeMap::new(), false)
            .unwrap();
        assert_eq!(refs(&*s), shas(&[b"1", b"2", b"3", b"b"]));

        // $LATEST's new code is referenced; the old one stays while version 3 has it.
        s.update_latest(&a, None, Some(&code(b"4")), None).unwrap();
        assert_eq!(refs(&*s), shas(&[b"1", b"2", b"3", b"4", b"b"]));
        s.delete_version(&a, "3").unwrap();
        assert_eq!(refs(&*s), shas(&[b"1", b"2", b"4", b"b"]));
        // An alias keeps its version (and so its code) from being deleted.
        s.create_alias(&a, &alias("live", "1", &[])).unwrap();
        assert!(s.delete_version(&a, "1").unwrap_err().is_conflict());
        assert_eq!(refs(&*s), shas(&[b"1", b"2", b"4", b"b"]));
        // Code shared by two functions stays until neither refers to it.
        s.update_latest(&b, None, Some(&code(b"2")), None).unwrap();
        s.delete(&a).unwrap();
        assert_eq!(refs(&*s), shas(&[b"2"]));
        s.delete(&b).unwrap();
        assert!(refs(&*s).is_empty());
    }

    fn logs_after_and_limit(b: Backend) {
        let s = TestStore::open(b);
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

        assert_eq!(lines(&*s, "f", 0, 2), ["l0", "l1"]);
        assert_eq!(lines(&*s, "f", all[1].seq, 2), ["l2", "l3"]);
        assert_eq!(lines(&*s, "f", all[4].seq, 10), Vec::<String>::new());
        assert!(lines(&*s, "f", 0, 0).is_empty());
        assert_eq!(lines(&*s, "g", 0, 10), ["other"]);

        let mut e = line("f", "err");
        e.stream = LogStream::Platform;
        e.request_id = None;
        s.append_logs(&[e]).unwrap();
        let last = s.logs(&name("f"), all[4].seq, 10).unwrap();
        assert_eq!(last[0].stream, LogStream::Platform);
        assert_eq!(last[0].request_id, None);
    }

    fn logs_retention_prunes_oldest(b: Backend) {
        let s = TestStore::open(b).with_log_retention(3);
        s.append_logs(&[line("f", "1"), line("f", "2")]).unwrap();
        s.append_logs(&[line("f", "3"), line("f", "4"), line("g", "g1")])
            .unwrap();
        assert_eq!(lines(&*s, "f", 0, 100), ["2", "3", "4"]);
        s.append_logs(
            &(5..=9)
                .map(|i| line("f", &i.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(lines(&*s, "f", 0, 100), ["7", "8", "9"]);
        // Other functions keep their own budget.
        assert_eq!(lines(&*s, "g", 0, 100), ["g1"]);
        assert_eq!(LOG_RETENTION_LINES, 10_000);
        // Deleting a function's lines resets its count: a new function starts afresh.
        s.deploy(&name("f"), &cfg("i.h"), &code(b"x")).unwrap();
        s.delete(&name("f")).unwrap();
        s.append_logs(&[line("f", "a")]).unwrap();
        assert_eq!(lines(&*s, "f", 0, 100), ["a"]);
    }

    fn logs_retention_counts_lines_stored_before_a_restart(b: Backend) {
        let s = TestStore::open(b);
        s.append_logs(
            &(1..=5)
                .map(|i| line("f", &i.to_string()))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let s = s.reopen().with_log_retention(3);
        s.append_logs(&[line("f", "6")]).unwrap();
        assert_eq!(lines(&*s, "f", 0, 100), ["4", "5", "6"]);
    }

    // ---- Lambda control plane ----

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn alias(name: &str, version: &str, routing: &[(&str, f64)]) -> Alias {
        Alias {
            name: name.into(),
            function_version: version.into(),
            description: String::new(),
            routing: routing.iter().map(|(k, w)| (k.to_string(), *w)).collect(),
            revision_id: String::new(),
        }
    }

    fn version_tags(s: &dyn Store, f: &FunctionName) -> Vec<String> {
        s.versions(f)
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect()
    }

    fn count(s: &SqliteStore, sql: &str) -> i64 {
        s.registry().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// A function with versions 1, 2 and 3 (different code each).
    fn three_versions(s: &dyn Store, f: &FunctionName) {
        for c in [b"1", b"2", b"3"] {
            s.deploy(f, &cfg("i.h"), &code(c)).unwrap();
        }
        assert_eq!(version_tags(s, f), ["$LATEST", "1", "2", "3"]);
    }

    fn create_without_and_with_publish(b: Backend) {
        let s = TestStore::open(b);
        let (a, b) = (name("a"), name("b"));
        let (latest, published) = s
            .create(&a, &cfg("i.h"), &code(b"a"), &tags(&[("team", "x")]), false)
            .unwrap();
        assert!(published.is_none());
        assert_eq!(latest.version, "$LATEST");
        assert_eq!(latest.code_sha256, code(b"a").sha256);
        assert_eq!(s.get(&a, None).unwrap(), latest);
        assert_eq!(version_tags(&*s, &a), ["$LATEST"]);
        let meta = s.meta(&a).unwrap();
        assert_eq!(meta.tags, tags(&[("team", "x")]));
        assert_eq!(meta.reserved_concurrency, None);
        assert!(meta.policy.is_empty());

        let mut c = cfg("i.h");
        c.role = "arn:aws:iam::123456789012:role/r".into();
        let (latest, published) = s
            .create(&b, &c, &code(b"b"), &BTreeMap::new(), true)
            .unwrap();
        let v1 = published.unwrap();
        assert_eq!(v1.version, "1");
        assert_eq!(
            (v1.config.clone(), v1.code_sha256.clone()),
            (c.clone(), latest.code_sha256.clone())
        );
        assert_eq!(s.get(&b, Some("1")).unwrap(), v1);
        assert_eq!(s.get(&b, None).unwrap().config.role, c.role);
        assert!(s.meta(&b).unwrap().tags.is_empty());
        // deploy continues the numbering of a created function.
        assert_eq!(
            s.deploy(&b, &cfg("i.h"), &code(b"b2")).unwrap().version,
            "2"
        );
    }

    fn create_conflicts_with_an_existing_function_and_changes_nothing(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        let before = s.deploy(&f, &cfg("i.h"), &code(b"x")).unwrap().latest;
        let e = s
            .create(&f, &cfg("i.other"), &code(b"y"), &tags(&[("k", "v")]), true)
            .unwrap_err();
        assert!(e.is_conflict(), "{e:?}");
        assert!(!e.is_not_found() && !e.is_invalid_input());
        assert!(e.to_string().contains("already exists"), "{e}");
        assert_eq!(s.get(&f, None).unwrap(), before);
        assert_eq!(version_tags(&*s, &f), ["$LATEST", "1"]);
        assert!(s.meta(&f).unwrap().tags.is_empty());
    }

    fn create_after_delete_starts_clean(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        s.create(&f, &cfg("i.h"), &code(b"1"), &tags(&[("k", "v")]), true)
            .unwrap();
        s.create_alias(&f, &alias("live", "1", &[])).unwrap();
        s.set_reserved_concurrency(&f, Some(3)).unwrap();
        s.delete(&f).unwrap();
        s.append_logs(&[line("f", "late line")]).unwrap();

        let (_, v) = s
            .create(&f, &cfg("i.h"), &code(b"2"), &BTreeMap::new(), true)
            .unwrap();
        assert_eq!(v.unwrap().version, "1");
        assert_eq!(s.meta(&f).unwrap(), FunctionMeta::default());
        assert!(s.list_aliases(&f, None).unwrap().is_empty());
        assert!(s.logs(&f, 0, 10).unwrap().is_empty());
    }

    fn update_latest_config_code_and_revision(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        let d = s.deploy(&f, &cfg("i.h"), &code(b"1")).unwrap().latest;

        let mut c = cfg("i.other");
        c.memory_mb = 512;
        let u1 = s.update_latest(&f, Some(&c), None, None).unwrap();
        assert_eq!(u1.config, c);
        assert_eq!(u1.code_sha256, d.code_sha256);
        assert_ne!(u1.revision_id, d.revision_id);
        assert_eq!(u1.version, "$LATEST");

        let u2 = s
            .update_latest(&f, None, Some(&code(b"22")), Some(&u1.revision_id))
            .unwrap();
        assert_eq!(u2.config, c);
        assert_eq!(
            (u2.code_sha256.as_str(), u2.code_size),
            (code(b"22").sha256.as_str(), 2)
        );
        assert_ne!(u2.revision_id, u1.revision_id);

        let u3 = s
            .update_latest(&f, Some(&cfg("i.h")), Some(&code(b"3")), None)
            .unwrap();
        assert_eq!(
            (u3.config.handler.as_str(), u3.code_sha256.as_str()),
            ("i.h", code(b"3").sha256.as_str())
        );
        assert_eq!(s.get(&f, None).unwrap(), u3);
        // Nothing was published and version 1 kept its content.
        assert_eq!(version_tags(&*s, &f), ["$LATEST", "1"]);
        assert_eq!(s.get(&f, Some("1")).unwrap().code_sha256, d.code_sha256);
    }

    fn update_latest_errors_and_no_op(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        let latest = s.deploy(&f, &cfg("i.h"), &code(b"1")).unwrap().latest;

        let e = s
            .update_latest(&f, Some(&cfg("i.x")), None, Some("stale"))
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e:?}");
        assert!(e.to_string().contains("revision"), "{e}");
        assert_eq!(s.get(&f, None).unwrap(), latest);

        // Neither config nor code: nothing changes, not even the revision...
        let same = s
            .update_latest(&f, None, None, Some(&latest.revision_id))
            .unwrap();
        assert_eq!(same, latest);
        assert_eq!(s.get(&f, None).unwrap(), latest);
        // ...but the revision is still checked.
        assert!(s
            .update_latest(&f, None, None, Some("stale"))
            .unwrap_err()
            .is_precondition_failed());

        let e = s
            .update_latest(&name("ghost"), Some(&cfg("i.h")), None, None)
            .unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
    }

    fn publish_next_version_or_the_unchanged_newest(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        s.create(&f, &cfg("i.h"), &code(b"1"), &BTreeMap::new(), false)
            .unwrap();
        let v1 = s.publish(&f, None, None, None).unwrap();
        assert_eq!(v1.version, "1");
        assert_eq!(v1.code_sha256, code(b"1").sha256);
        // Unchanged: the newest version comes back, nothing is published.
        assert_eq!(s.publish(&f, None, None, None).unwrap(), v1);
        assert_eq!(version_tags(&*s, &f), ["$LATEST", "1"]);

        let latest_before = s.update_latest(&f, None, Some(&code(b"2")), None).unwrap();
        let v2 = s.publish(&f, Some("second"), None, None).unwrap();
        assert_eq!(v2.version, "2");
        assert_eq!(v2.config.description, "second");
        assert_eq!(v2.code_sha256, code(b"2").sha256);
        // $LATEST is not touched by publishing.
        assert_eq!(s.get(&f, None).unwrap(), latest_before);
        assert_eq!(s.get(&f, None).unwrap().config.description, "");

        // A description alone is a label, not a change: the newest version comes back.
        let again = s.publish(&f, Some("another label"), None, None).unwrap();
        assert_eq!(again, v2);
        // Config changes publish.
        let mut c = cfg("i.h");
        c.timeout_s = 30;
        s.update_latest(&f, Some(&c), None, None).unwrap();
        let v3 = s.publish(&f, None, None, None).unwrap();
        assert_eq!((v3.version.as_str(), v3.config.timeout_s), ("3", 30));
        // deploy and publish share the numbering and the comparison.
        assert_eq!(s.deploy(&f, &c, &code(b"2")).unwrap().version, "3");
        assert_eq!(version_tags(&*s, &f), ["$LATEST", "1", "2", "3"]);
        assert_eq!(s.get(&f, Some("1")).unwrap(), v1);
    }

    fn publish_preconditions(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        let (latest, _) = s
            .create(&f, &cfg("i.h"), &code(b"1"), &BTreeMap::new(), false)
            .unwrap();

        let e = s.publish(&f, None, None, Some("stale")).unwrap_err();
        assert!(e.is_precondition_failed(), "{e:?}");
        let e = s
            .publish(&f, None, Some(&code(b"other").sha256), None)
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e:?}");
        assert!(e.to_string().contains("code sha256"), "{e}");
        assert_eq!(version_tags(&*s, &f), ["$LATEST"]);

        let upper = latest.code_sha256.to_ascii_uppercase();
        let v = s
            .publish(&f, None, Some(&upper), Some(&latest.revision_id))
            .unwrap();
        assert_eq!(v.version, "1");

        assert!(s
            .publish(&f, Some(&"d".repeat(257)), None, None)
            .unwrap_err()
            .is_invalid_input());
        assert!(s
            .publish(&name("ghost"), None, None, None)
            .unwrap_err()
            .is_not_found());
    }

    fn delete_version_and_numbers_are_never_reused(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        three_versions(&*s, &f);
        let v2 = s.get(&f, Some("2")).unwrap();

        s.delete_version(&f, "3").unwrap();
        assert_eq!(version_tags(&*s, &f), ["$LATEST", "1", "2"]);
        assert!(s.get(&f, Some("3")).unwrap_err().is_not_found());
        // $LATEST still has version 3's content; publishing it gives 4, not 3 again.
        assert_eq!(s.publish(&f, None, None, None).unwrap().version, "4");
        s.delete_version(&f, "4").unwrap();
        assert_eq!(s.deploy(&f, &cfg("i.h"), &code(b"5")).unwrap().version, "5");
        // Unchanged against the newest existing version (2 after deleting the rest).
        s.delete_version(&f, "5").unwrap();
        s.update_latest(&f, None, Some(&code(b"2")), None).unwrap();
        assert_eq!(s.publish(&f, None, None, None).unwrap(), v2);

        let e = s.delete_version(&f, "3").unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.to_string(), "version 3 of f not found");
        assert!(s
            .delete_version(&f, "$LATEST")
            .unwrap_err()
            .is_invalid_input());
        assert!(s.delete_version(&f, "live").unwrap_err().is_invalid_input());
        assert!(s
            .delete_version(&name("ghost"), "1")
            .unwrap_err()
            .is_not_found());
    }

    fn delete_version_conflicts_while_an_alias_uses_it(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        three_versions(&*s, &f);
        s.create_alias(&f, &alias("live", "1", &[("2", 0.1)]))
            .unwrap();

        for v in ["1", "2"] {
            let e = s.delete_version(&f, v).unwrap_err();
            assert!(e.is_conflict(), "{v}: {e:?}");
            assert!(e.to_string().contains("alias live"), "{e}");
        }
        assert_eq!(version_tags(&*s, &f), ["$LATEST", "1", "2", "3"]);
        s.delete_version(&f, "3").unwrap();

        s.update_alias(&f, "live", Some("2"), None, Some(&BTreeMap::new()), None)
            .unwrap();
        s.delete_version(&f, "1").unwrap();
        s.delete_alias(&f, "live").unwrap();
        s.delete_version(&f, "2").unwrap();
        assert_eq!(version_tags(&*s, &f), ["$LATEST"]);
    }

    fn reserved_concurrency_and_tags(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        s.deploy(&f, &cfg("i.h"), &code(b"1")).unwrap();
        assert_eq!(s.meta(&f).unwrap(), FunctionMeta::default());

        s.set_reserved_concurrency(&f, Some(0)).unwrap();
        assert_eq!(s.meta(&f).unwrap().reserved_concurrency, Some(0));
        s.set_reserved_concurrency(&f, Some(u32::MAX)).unwrap();
        assert_eq!(s.meta(&f).unwrap().reserved_concurrency, Some(u32::MAX));
        s.set_reserved_concurrency(&f, None).unwrap();
        assert_eq!(s.meta(&f).unwrap().reserved_concurrency, None);

        s.tag(&f, &tags(&[("a", "1"), ("b", "2")])).unwrap();
        s.tag(&f, &tags(&[("b", "3"), ("c", "4")])).unwrap();
        assert_eq!(
            s.meta(&f).unwrap().tags,
            tags(&[("a", "1"), ("b", "3"), ("c", "4")])
        );
        s.untag(&f, &["a".into(), "missing".into()]).unwrap();
        assert_eq!(s.meta(&f).unwrap().tags, tags(&[("b", "3"), ("c", "4")]));

        // Metadata is not part of a version: deploying keeps it and publishes nothing new.
        let d = s.deploy(&f, &cfg("i.h"), &code(b"1")).unwrap();
        assert_eq!(d.version, "1");
        assert_eq!(s.meta(&f).unwrap().tags.len(), 2);

        let ghost = name("ghost");
        assert!(s.meta(&ghost).unwrap_err().is_not_found());
        assert!(s
            .set_reserved_concurrency(&ghost, Some(1))
            .unwrap_err()
            .is_not_found());
        assert!(s
            .tag(&ghost, &tags(&[("a", "1")]))
            .unwrap_err()
            .is_not_found());
        assert!(s.untag(&ghost, &["a".into()]).unwrap_err().is_not_found());
    }

    fn permissions(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        s.deploy(&f, &cfg("i.h"), &code(b"1")).unwrap();
        let stmt = serde_json::json!({"Effect": "Allow", "Action": "lambda:InvokeFunction", "Sid": "ignored"});

        let m1 = s.add_permission(&f, "one", stmt.clone(), None).unwrap();
        assert_eq!(m1.policy.len(), 1);
        assert_eq!(m1.policy[0]["Sid"], "one");
        assert_eq!(m1.policy[0]["Action"], "lambda:InvokeFunction");
        assert!(!m1.policy_revision_id.is_empty());
        assert_eq!(s.meta(&f).unwrap(), m1);

        let e = s
            .add_permission(&f, "two", stmt.clone(), Some("stale"))
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e:?}");
        let e = s.add_permission(&f, "one", stmt.clone(), None).unwrap_err();
        assert!(e.is_conflict(), "{e:?}");
        assert_eq!(s.meta(&f).unwrap(), m1);

        let m2 = s
            .add_permission(&f, "two", stmt.clone(), Some(&m1.policy_revision_id))
            .unwrap();
        assert_ne!(m2.policy_revision_id, m1.policy_revision_id);
        let sids: Vec<&str> = m2.policy.iter().filter_map(statement_sid).collect();
        assert_eq!(sids, ["one", "two"]);

        assert!(s
            .add_permission(&f, "three", serde_json::json!("not an object"), None)
            .unwrap_err()
            .is_invalid_input());
        assert!(s
            .add_permission(&name("ghost"), "x", stmt.clone(), None)
            .unwrap_err()
            .is_not_found());

        let e = s
            .remove_permission(&f, "one", Some(&m1.policy_revision_id))
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e:?}");
        s.remove_permission(&f, "one", Some(&m2.policy_revision_id))
            .unwrap();
        let m3 = s.meta(&f).unwrap();
        assert_eq!(
            m3.policy
                .iter()
                .filter_map(statement_sid)
                .collect::<Vec<_>>(),
            ["two"]
        );
        assert_ne!(m3.policy_revision_id, m2.policy_revision_id);
        let e = s.remove_permission(&f, "one", None).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert!(s
            .remove_permission(&name("ghost"), "two", None)
            .unwrap_err()
            .is_not_found());
    }

    fn alias_create_get_list_delete(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        three_versions(&*s, &f);

        let mut want = alias("live", "2", &[("3", 0.25)]);
        want.description = "production".into();
        let live = s.create_alias(&f, &want).unwrap();
        assert!(uuid::Uuid::parse_str(&live.revision_id).is_ok());
        assert_eq!(
            live,
            Alias {
                revision_id: live.revision_id.clone(),
                ..want
            }
        );
        let dev = s.create_alias(&f, &alias("dev", "$LATEST", &[])).unwrap();
        let old = s.create_alias(&f, &alias("old", "01", &[])).unwrap();
        assert_eq!(old.function_version, "1");

        assert_eq!(s.get_alias(&f, "live").unwrap(), live);
        let names = |v: Vec<Alias>| v.into_iter().map(|a| a.name).collect::<Vec<_>>();
        assert_eq!(
            names(s.list_aliases(&f, None).unwrap()),
            ["dev", "live", "old"]
        );
        assert_eq!(names(s.list_aliases(&f, Some("2")).unwrap()), ["live"]);
        assert_eq!(names(s.list_aliases(&f, Some("3")).unwrap()), ["live"]);
        assert_eq!(names(s.list_aliases(&f, Some("$LATEST")).unwrap()), ["dev"]);
        assert_eq!(names(s.list_aliases(&f, Some("1")).unwrap()), ["old"]);
        assert!(s.list_aliases(&f, Some("9")).unwrap().is_empty());
        assert_eq!(s.get_alias(&f, "dev").unwrap(), dev);

        // Aliases of another function are separate.
        let g = name("g");
        s.deploy(&g, &cfg("i.h"), &code(b"g")).unwrap();
        assert!(s.list_aliases(&g, None).unwrap().is_empty());
        assert!(s.get_alias(&g, "live").unwrap_err().is_not_found());
        s.create_alias(&g, &alias("live", "1", &[])).unwrap();
        assert_eq!(s.get_alias(&f, "live").unwrap(), live);

        s.delete_alias(&f, "dev").unwrap();
        assert_eq!(names(s.list_aliases(&f, None).unwrap()), ["live", "old"]);
        let e = s.delete_alias(&f, "dev").unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.to_string(), "alias dev of f not found");
        let e = s.get_alias(&f, "dev").unwrap_err();
        assert_eq!(e.to_string(), "alias dev of f not found");

        let ghost = name("ghost");
        assert_eq!(
            s.get_alias(&ghost, "live").unwrap_err().to_string(),
            "function not found: ghost"
        );
        assert!(s.list_aliases(&ghost, None).unwrap_err().is_not_found());
        assert!(s.delete_alias(&ghost, "live").unwrap_err().is_not_found());
    }

    fn alias_create_errors(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        three_versions(&*s, &f);
        s.create_alias(&f, &alias("live", "1", &[])).unwrap();

        let e = s.create_alias(&f, &alias("live", "2", &[])).unwrap_err();
        assert!(e.is_conflict(), "{e:?}");
        assert_eq!(s.get_alias(&f, "live").unwrap().function_version, "1");

        let e = s
            .create_alias(&name("ghost"), &alias("live", "1", &[]))
            .unwrap_err();
        assert_eq!(e.to_string(), "function not found: ghost");
        let e = s.create_alias(&f, &alias("next", "9", &[])).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.to_string(), "version 9 of f not found");
        let e = s
            .create_alias(&f, &alias("next", "1", &[("9", 0.5)]))
            .unwrap_err();
        assert!(e.is_not_found(), "{e:?}");

        for bad in ["12", "", "a b", &"a".repeat(129)] {
            let e = s.create_alias(&f, &alias(bad, "1", &[])).unwrap_err();
            assert!(e.is_invalid_input(), "{bad:?}: {e:?}");
        }
        let e = s.create_alias(&f, &alias("next", "live", &[])).unwrap_err();
        assert!(e.is_invalid_input(), "{e:?}");
        let mut long = alias("next", "1", &[]);
        long.description = "d".repeat(257);
        assert!(s.create_alias(&f, &long).unwrap_err().is_invalid_input());
        assert_eq!(s.list_aliases(&f, None).unwrap().len(), 1);
    }

    fn alias_invalid_routing(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        three_versions(&*s, &f);
        let cases: &[(&str, &[(&str, f64)])] = &[
            ("1", &[("2", 0.1), ("3", 0.1)]),
            ("1", &[("2", 1.5)]),
            ("1", &[("2", -0.1)]),
            ("1", &[("2", f64::NAN)]),
            ("1", &[("2", f64::INFINITY)]),
            ("1", &[("1", 0.5)]),
            ("1", &[("01", 0.5)]),
            ("1", &[("$LATEST", 0.5)]),
            ("1", &[("live", 0.5)]),
            ("$LATEST", &[("2", 0.5)]),
        ];
        for (target, routing) in cases {
            let e = s
                .create_alias(&f, &alias("live", target, routing))
                .unwrap_err();
            assert!(e.is_invalid_input(), "{target} {routing:?}: {e:?}");
            assert!(e.to_string().contains("routing"), "{e}");
        }
        assert!(s.list_aliases(&f, None).unwrap().is_empty());

        // The edges are valid.
        for w in [0.0, 1.0] {
            let a = s
                .create_alias(&f, &alias("edge", "1", &[("2", w)]))
                .unwrap();
            assert_eq!(a.routing, BTreeMap::from([("2".to_string(), w)]));
            s.delete_alias(&f, "edge").unwrap();
        }

        // update_alias checks the merged result.
        let live = s
            .create_alias(&f, &alias("live", "1", &[("2", 0.5)]))
            .unwrap();
        let e = s
            .update_alias(&f, "live", Some("2"), None, None, None)
            .unwrap_err();
        assert!(e.is_invalid_input(), "{e:?}");
        let e = s
            .update_alias(&f, "live", Some("$LATEST"), None, None, None)
            .unwrap_err();
        assert!(e.is_invalid_input(), "{e:?}");
        let two = BTreeMap::from([("2".to_string(), 0.1), ("3".to_string(), 0.1)]);
        let e = s
            .update_alias(&f, "live", None, None, Some(&two), None)
            .unwrap_err();
        assert!(e.is_invalid_input(), "{e:?}");
        assert_eq!(s.get_alias(&f, "live").unwrap(), live);
    }

    fn alias_update(b: Backend) {
        let s = TestStore::open(b);
        let f = name("f");
        three_versions(&*s, &f);
        let mut a = alias("live", "1", &[]);
        a.description = "first".into();
        let r0 = s.create_alias(&f, &a).unwrap();

        // Only the given fields change; the revision always does.
        let routing = BTreeMap::from([("3".to_string(), 0.2)]);
        let r1 = s
            .update_alias(
                &f,
                "live",
                Some("2"),
                None,
                Some(&routing),
                Some(&r0.revision_id),
            )
            .unwrap();
        assert_eq!(
            (r1.function_version.as_str(), r1.description.as_str()),
            ("2", "first")
        );
        assert_eq!(r1.routing, routing);
        assert_ne!(r1.revision_id, r0.revision_id);
        assert_eq!(s.get_alias(&f, "live").unwrap(), r1);

        let r2 = s
            .update_alias(&f, "live", None, Some("second"), None, None)
            .unwrap();
        assert_eq!(
            (r2.function_version.as_str(), r2.description.as_str()),
            ("2", "second")
        );
        assert_eq!(r2.routing, routing);
        assert_ne!(r2.revision_id, r1.revision_id);

        let r3 = s
            .update_alias(
                &f,
                "live",
                Some("$LATEST"),
                None,
                Some(&BTreeMap::new()),
                None,
            )
            .unwrap();
        assert_eq!(r3.function_version, "$LATEST");
        assert!(r3.routing.is_empty());
        assert_eq!(s.get_alias(&f, "live").unwrap(), r3);

        let e = s
            .update_alias(&f, "live", Some("1"), None, None, Some(&r1.revision_id))
            .unwrap_err();
        assert!(e.is_precondition_failed(), "{e:?}");
        assert_eq!(s.get_alias(&f, "live").unwrap(), r3);

        let e = s
            .update_alias(&f, "live", Some("9"), None, None, None)
            .unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        let e = s
            .update_alias(&f, "nope", Some("1"), None, None, None)
            .unwrap_err();
        assert_eq!(e.to_string(), "alias nope of f not found");
        assert!(s
            .update_alias(&name("ghost"), "live", None, None, None, None)
            .unwrap_err()
            .is_not_found());
    }

    fn deleting_a_function_removes_its_aliases(b: Backend) {
        let s = TestStore::open(b);
        let (f, g) = (name("f"), name("g"));
        three_versions(&*s, &f);
        s.deploy(&g, &cfg("i.h"), &code(b"g")).unwrap();
        s.create_alias(&f, &alias("live", "1", &[("2", 0.5)]))
            .unwrap();
        s.create_alias(&f, &alias("dev", "$LATEST", &[])).unwrap();
        s.create_alias(&g, &alias("live", "1", &[])).unwrap();
        assert_eq!(s.count("SELECT COUNT(*) FROM aliases"), 3);

        s.delete(&f).unwrap();
        assert_eq!(
            s.count("SELECT COUNT(*) FROM aliases WHERE function = 'f'"),
            0
        );
        assert_eq!(s.list_aliases(&g, None).unwrap().len(), 1);
        s.deploy(&f, &cfg("i.h"), &code(b"new")).unwrap();
        assert!(s.list_aliases(&f, None).unwrap().is_empty());
        assert!(s.get_alias(&f, "live").unwrap_err().is_not_found());
    }

    fn control_plane_state_persists_across_reopen(b: Backend) {
        let f = name("f");
        let s = TestStore::open(b);
        let (meta, aliases, versions) = {
            s.create(&f, &cfg("i.h"), &code(b"1"), &tags(&[("k", "v")]), true)
                .unwrap();
            s.update_latest(&f, None, Some(&code(b"2")), None).unwrap();
            s.publish(&f, Some("two"), None, None).unwrap();
            s.set_reserved_concurrency(&f, Some(7)).unwrap();
            s.add_permission(&f, "p", serde_json::json!({"Effect": "Allow"}), None)
                .unwrap();
            s.create_alias(&f, &alias("live", "1", &[("2", 0.3)]))
                .unwrap();
            s.delete_version(&f, "2").unwrap_err();
            (
                s.meta(&f).unwrap(),
                s.list_aliases(&f, None).unwrap(),
                s.versions(&f).unwrap(),
            )
        };
        let s = s.reopen();
        assert_eq!(s.meta(&f).unwrap(), meta);
        assert_eq!(s.list_aliases(&f, None).unwrap(), aliases);
        assert_eq!(s.versions(&f).unwrap(), versions);
        assert_eq!(meta.reserved_concurrency, Some(7));
        assert_eq!(aliases[0].routing["2"], 0.3);
    }

    #[test]
    fn upgrade_from_schema_1_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let f = name("old");
        // What the previous release wrote: schema 1 only, configs without the newer fields.
        let old_config = r#"{"runtime":"nodejs20.x","handler":"index.handler","memory_mb":256,"timeout_s":3,"env":{},"description":"","concurrency":10,"url":false,"routes":[]}"#;
        let sha1 = code(b"one").sha256;
        let sha2 = code(b"two").sha256;
        {
            let conn = open_db(
                &dir.path().join("registry.db"),
                "FULL",
                &REGISTRY_MIGRATIONS[..1],
            )
            .unwrap();
            let v: i64 = conn
                .query_row("PRAGMA user_version", [], |r| r.get(0))
                .unwrap();
            assert_eq!(v, 1);
            conn.execute(
                "INSERT INTO functions VALUES ('old', ?1, ?2, 3, '2024-01-01T00:00:00.000+0000', 'rev-latest', 1)",
                params![old_config, sha2],
            )
            .unwrap();
            for (v, sha) in [(1, &sha1), (2, &sha2)] {
                conn.execute(
                    "INSERT INTO versions VALUES ('old', ?1, ?2, ?3, 3, '2024-01-01T00:00:00.000+0000', ?4, 1)",
                    params![v, old_config, sha, format!("rev-{v}")],
                )
                .unwrap();
            }
        }

        let s = SqliteStore::open(dir.path()).unwrap();
        let v: i64 = count(&s, "PRAGMA user_version");
        assert_eq!(v, REGISTRY_MIGRATIONS.len() as i64);
        let latest = s.get(&f, None).unwrap();
        assert_eq!(
            (
                latest.revision_id.as_str(),
                latest.code_sha256.as_str(),
                latest.config.memory_mb
            ),
            ("rev-latest", sha2.as_str(), 256)
        );
        assert_eq!(latest.config.role, "");
        assert_eq!(version_tags(&s, &f), ["$LATEST", "1", "2"]);
        assert_eq!(s.get(&f, Some("1")).unwrap().revision_id, "rev-1");
        assert_eq!(s.meta(&f).unwrap(), FunctionMeta::default());
        assert!(s.list_aliases(&f, None).unwrap().is_empty());

        // Everything new works on the upgraded data; numbering continues after 2.
        s.create_alias(&f, &alias("live", "2", &[("1", 0.5)]))
            .unwrap();
        s.tag(&f, &tags(&[("k", "v")])).unwrap();
        assert!(s.delete_version(&f, "1").unwrap_err().is_conflict());
        let mut c = latest.config.clone();
        assert_eq!(s.deploy(&f, &c, &code(b"two")).unwrap().version, "2");
        c.memory_mb = 512;
        assert_eq!(s.deploy(&f, &c, &code(b"two")).unwrap().version, "3");
        // The trigger still guards numbered versions.
        assert!(s
            .registry()
            .execute("UPDATE versions SET code_sha256 = 'x'", [])
            .is_err());
        // And cascading deletes reach the new table.
        s.delete(&f).unwrap();
        assert_eq!(count(&s, "SELECT COUNT(*) FROM aliases"), 0);
        drop(s);
        // Reopening an upgraded database migrates nothing further.
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            count(&s, "PRAGMA user_version"),
            REGISTRY_MIGRATIONS.len() as i64
        );
    }

    #[test]
    fn upgrade_sets_last_version_from_existing_versions() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = open_db(
                &dir.path().join("registry.db"),
                "FULL",
                &REGISTRY_MIGRATIONS[..1],
            )
            .unwrap();
            let c = serde_json::to_string(&cfg("i.h")).unwrap();
            conn.execute(
                "INSERT INTO functions VALUES ('f', ?1, 'aa', 1, 't', 'r', 1)",
                [&c],
            )
            .unwrap();
            conn.execute(
                "INSERT INTO versions VALUES ('f', 4, ?1, 'aa', 1, 't', 'r', 1)",
                [&c],
            )
            .unwrap();
        }
        let s = SqliteStore::open(dir.path()).unwrap();
        assert_eq!(
            count(&s, "SELECT last_version FROM functions WHERE name = 'f'"),
            4
        );
        // Version 4 is the newest; deleting it must not let 4 be handed out again.
        s.delete_version(&name("f"), "4").unwrap();
        let v = s.publish(&name("f"), None, None, None).unwrap();
        assert_eq!(v.version, "5");
    }
}

#[cfg(test)]
mod provisioned_tests {
    use super::*;

    use super::tests::{Backend, TestStore};

    fn provisioned_configs_round_trip_and_go_with_their_alias(b: Backend) {
        let s = TestStore::open(b);
        let f = FunctionName::parse("p").unwrap();
        assert!(s.put_provisioned(&f, "1", 2).unwrap_err().is_not_found());
        let config = nimbus_core::FunctionConfig::new(
            nimbus_core::Runtime::parse("python3.12").unwrap(),
            "app.handler",
        );
        s.deploy(&f, &config, &CodeInfo::of(b"zip")).unwrap();
        let alias = Alias {
            name: "live".into(),
            function_version: "1".into(),
            description: String::new(),
            routing: BTreeMap::new(),
            revision_id: String::new(),
        };
        s.create_alias(&f, &alias).unwrap();
        s.put_provisioned(&f, "live", 2).unwrap();
        s.put_provisioned(&f, "01", 3).unwrap();
        s.put_provisioned(&f, "live", 4).unwrap();
        let all = s.list_provisioned(None).unwrap();
        let got: Vec<_> = all
            .iter()
            .map(|c| (c.qualifier.as_str(), c.requested))
            .collect();
        assert_eq!(got, [("1", 3), ("live", 4)]);
        s.delete_alias(&f, "live").unwrap();
        assert_eq!(s.list_provisioned(Some(&f)).unwrap().len(), 1);
        assert!(s.delete_provisioned(&f, "1").unwrap());
        assert!(!s.delete_provisioned(&f, "1").unwrap());
        s.put_provisioned(&f, "1", 1).unwrap();
        let s = s.reopen();
        assert_eq!(s.list_provisioned(Some(&f)).unwrap().len(), 1);
        s.delete(&f).unwrap();
        assert!(s.list_provisioned(None).unwrap().is_empty());
    }

    super::tests::both!(provisioned_configs_round_trip_and_go_with_their_alias);
}
