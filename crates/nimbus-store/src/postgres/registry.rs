//! The PostgreSQL [`Store`]: the function registry (component `registry`: functions,
//! versions, aliases, per-function metadata, provisioned concurrency and layers) and the
//! log store (component `logs`) in the shared cluster database.
//!
//! Semantics are those of [`crate::SqliteStore`], method for method. Where SQLite relied on
//! its single writer, the PostgreSQL store takes row locks: every write of a function locks
//! its `registry_functions` row (`SELECT … FOR UPDATE`, or the row an upsert wrote) for the
//! whole transaction, so two nodes publishing at once get consecutive version numbers,
//! never the same one; `create` of an existing function is refused by the primary key.
//! Log appends are serialised across nodes (see [`logs`]).

mod layers;
mod logs;
#[cfg(test)]
mod tests;

use crate::{
    CodeInfo, Deployed, LogEntry, LogLimits, LogPage, LogQuery, LogUsage, ProvisionedConfig,
    Result, Store, StoreError,
};
use nimbus_core::control::validate_alias_name;
use nimbus_core::{
    Alias, FunctionConfig, FunctionMeta, FunctionName, FunctionVersion, Limits, LATEST,
};
use nimbus_pg::types::ToSql;
use nimbus_pg::{Migration, Pg, PgError, Row, Transaction};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;

/// Schema of the `registry` component.
const REGISTRY_MIGRATIONS: &[Migration] = &[Migration::breaking(
    r#"
CREATE TABLE registry_functions (
    name                 TEXT COLLATE "C" PRIMARY KEY,
    config               TEXT NOT NULL,
    code_sha256          TEXT NOT NULL,
    code_size            BIGINT NOT NULL,
    last_modified        TEXT NOT NULL,
    revision_id          TEXT NOT NULL,
    created_ms           BIGINT NOT NULL,
    reserved_concurrency BIGINT,
    tags                 TEXT NOT NULL DEFAULT '{}',
    policy               TEXT NOT NULL DEFAULT '[]',
    policy_revision_id   TEXT NOT NULL DEFAULT '',
    -- Highest version number ever published, so a deleted version's number is never reused.
    last_version         BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE registry_versions (
    name          TEXT COLLATE "C" NOT NULL
                  REFERENCES registry_functions(name) ON DELETE CASCADE,
    version       BIGINT NOT NULL,
    config        TEXT NOT NULL,
    code_sha256   TEXT NOT NULL,
    code_size     BIGINT NOT NULL,
    last_modified TEXT NOT NULL,
    revision_id   TEXT NOT NULL,
    created_ms    BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE FUNCTION registry_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are immutable', TG_ARGV[0];
END
$$;
CREATE TRIGGER registry_versions_are_immutable BEFORE UPDATE ON registry_versions
    FOR EACH ROW EXECUTE FUNCTION registry_immutable('numbered versions');
CREATE TABLE registry_aliases (
    function         TEXT COLLATE "C" NOT NULL
                     REFERENCES registry_functions(name) ON DELETE CASCADE,
    name             TEXT COLLATE "C" NOT NULL,
    function_version TEXT NOT NULL,
    description      TEXT NOT NULL DEFAULT '',
    routing          TEXT NOT NULL DEFAULT '{}',
    revision_id      TEXT NOT NULL,
    PRIMARY KEY (function, name)
);
CREATE TABLE registry_provisioned (
    function      TEXT COLLATE "C" NOT NULL
                  REFERENCES registry_functions(name) ON DELETE CASCADE,
    qualifier     TEXT COLLATE "C" NOT NULL,
    requested     BIGINT NOT NULL,
    last_modified TEXT NOT NULL,
    PRIMARY KEY (function, qualifier)
);
-- A layer row outlives its versions: `last_version` keeps a deleted version's number
-- from being reused.
CREATE TABLE registry_layers (
    name         TEXT COLLATE "C" PRIMARY KEY,
    last_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE registry_layer_versions (
    name                     TEXT COLLATE "C" NOT NULL REFERENCES registry_layers(name),
    version                  BIGINT NOT NULL,
    description              TEXT NOT NULL DEFAULT '',
    license_info             TEXT NOT NULL DEFAULT '',
    compatible_runtimes      TEXT NOT NULL DEFAULT '[]',
    compatible_architectures TEXT NOT NULL DEFAULT '[]',
    code_sha256              TEXT NOT NULL,
    code_size                BIGINT NOT NULL,
    unzipped_size            BIGINT NOT NULL,
    created_date             TEXT NOT NULL,
    policy                   TEXT NOT NULL DEFAULT '[]',
    policy_revision_id       TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (name, version)
);
CREATE TRIGGER registry_layer_versions_are_immutable
    BEFORE UPDATE OF name, version, description, license_info, compatible_runtimes,
        compatible_architectures, code_sha256, code_size, unzipped_size, created_date
    ON registry_layer_versions
    FOR EACH ROW EXECUTE FUNCTION registry_immutable('layer versions');
"#,
)];

/// The [`Store`] of a cluster: the registry and the logs in PostgreSQL, shared by every
/// node. Cheap to share between threads; each method runs its statements in one
/// transaction on a pooled connection and blocks until it committed.
pub struct PgStore {
    pg: Pg,
    limits: LogLimits,
    /// Lines this process pruned to keep the bounds (as [`LogUsage::pruned_lines`]: since
    /// the server started).
    pruned_lines: AtomicU64,
    /// Accounted bytes of the lines this process pruned since its last `VACUUM` of them
    /// ([`PgStore::vacuum_logs`]).
    vacuum_debt: AtomicU64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pg", &self.pg)
            .field("log_limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Opens the store on `pg`, creating or migrating the `registry` and `logs` schemas.
    pub fn open(pg: &Pg) -> Result<Self> {
        pg.migrate("registry", REGISTRY_MIGRATIONS)?;
        pg.migrate("logs", logs::LOGS_MIGRATIONS)?;
        Ok(Self {
            pg: pg.clone(),
            limits: LogLimits::default(),
            pruned_lines: AtomicU64::new(0),
            vacuum_debt: AtomicU64::new(0),
        })
    }

    /// Keeps at most `lines` log lines per function (default [`crate::LOG_RETENTION_LINES`]).
    pub fn with_log_retention(self, lines: usize) -> Result<Self> {
        let limits = LogLimits {
            lines_per_function: lines,
            ..self.limits
        };
        self.with_log_limits(limits)
    }

    /// Bounds the log store (default [`LogLimits::default`]). `total_bytes` bounds the
    /// lines' accounted bytes (3/4 of it is aimed at, leaving room for PostgreSQL's page
    /// and index overhead); PostgreSQL's WAL is the server's, not counted here. Lines
    /// stored under larger bounds are pruned at the next append.
    pub fn with_log_limits(mut self, limits: LogLimits) -> Result<Self> {
        self.limits = limits;
        Ok(self)
    }

    /// The pool this store uses.
    pub fn pg(&self) -> &Pg {
        &self.pg
    }

    /// Runs `f` in one transaction: committed when it returns `Ok`, rolled back otherwise
    /// (so a `NotFound` or `Conflict` found halfway leaves nothing behind).
    fn tx<T>(&self, f: impl AsyncFnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.pg.block_on(async {
            let mut c = self.pg.client().await?;
            let tx = c.transaction().await.map_err(pe)?;
            let out = f(&tx).await?;
            tx.commit().await.map_err(pe)?;
            Ok(out)
        })
    }
}

/// A PostgreSQL failure as the store's error.
fn pe<E: Into<PgError>>(e: E) -> StoreError {
    StoreError::Postgres(e.into())
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

async fn query(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> Result<Vec<Row>> {
    tx.query(sql, params).await.map_err(pe)
}

async fn query_opt(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> Result<Option<Row>> {
    tx.query_opt(sql, params).await.map_err(pe)
}

async fn query_one(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> Result<Row> {
    tx.query_one(sql, params).await.map_err(pe)
}

async fn execute(tx: &Transaction<'_>, sql: &str, params: Params<'_>) -> Result<u64> {
    tx.execute(sql, params).await.map_err(pe)
}

/// Column `i` of `row`.
fn get<'a, T: nimbus_pg::types::FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i).map_err(pe)
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
fn decode(row: &Row, version: Option<i64>) -> Result<FunctionVersion> {
    let name: String = get(row, 0)?;
    let config: String = get(row, 1)?;
    let fname = FunctionName::parse(&name)
        .map_err(|e| StoreError::Corrupt(format!("stored function name {name:?}: {e}")))?;
    let config: FunctionConfig = serde_json::from_str(&config)
        .map_err(|e| StoreError::Corrupt(format!("stored config of {name}: {e}")))?;
    Ok(FunctionVersion {
        name: fname,
        version: version.map_or_else(|| LATEST.to_string(), |v| v.to_string()),
        config,
        code_sha256: get(row, 2)?,
        code_size: get::<i64>(row, 3)? as u64,
        last_modified: get(row, 4)?,
        revision_id: get(row, 5)?,
    })
}

/// `$LATEST` of `name`; with `lock`, its row stays locked until the transaction ends.
async fn get_latest(
    tx: &Transaction<'_>,
    name: &str,
    lock: bool,
) -> Result<Option<FunctionVersion>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = query_opt(
        tx,
        &format!("SELECT {COLUMNS} FROM registry_functions WHERE name = $1{lock}"),
        &[&name],
    )
    .await?;
    row.map(|r| decode(&r, None)).transpose()
}

async fn get_version(
    tx: &Transaction<'_>,
    name: &str,
    version: i64,
) -> Result<Option<FunctionVersion>> {
    let row = query_opt(
        tx,
        &format!("SELECT {COLUMNS} FROM registry_versions WHERE name = $1 AND version = $2"),
        &[&name, &version],
    )
    .await?;
    row.map(|r| decode(&r, Some(version))).transpose()
}

/// A qualifier naming a numbered version: decimal digits only, fitting an i64.
fn parse_version(q: &str) -> Option<i64> {
    if q.is_empty() || !q.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    q.parse().ok()
}

fn encode_json<T: serde::Serialize>(what: &str, name: &FunctionName, value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Corrupt(format!("encoding the {what} of {name}: {e}")))
}

fn encode_config(name: &FunctionName, config: &FunctionConfig) -> Result<String> {
    encode_json("config", name, config)
}

fn decode_json<T: serde::de::DeserializeOwned>(what: &str, owner: &str, text: &str) -> Result<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt(format!("stored {what} of {owner}: {e}")))
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// `$LATEST` of `name` (locked with `lock`), or `NotFound`.
async fn require_latest(
    tx: &Transaction<'_>,
    name: &FunctionName,
    lock: bool,
) -> Result<FunctionVersion> {
    get_latest(tx, name.as_str(), lock)
        .await?
        .ok_or_else(|| function_not_found(name.as_str()))
}

/// `NotFound` unless the function exists; with `lock`, its row is locked (`FOR UPDATE`)
/// until the transaction ends, which orders this write after every other write of the
/// function on any node.
async fn require_function(tx: &Transaction<'_>, name: &FunctionName, lock: bool) -> Result<()> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    query_opt(
        tx,
        &format!("SELECT 1 FROM registry_functions WHERE name = $1{lock}"),
        &[&name.as_str()],
    )
    .await?
    .map(|_| ())
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

async fn version_exists(tx: &Transaction<'_>, name: &FunctionName, version: i64) -> Result<bool> {
    Ok(query_opt(
        tx,
        "SELECT 1 FROM registry_versions WHERE name = $1 AND version = $2",
        &[&name.as_str(), &version],
    )
    .await?
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

/// With the function's row locked by the caller's transaction: the newest numbered version
/// of `name` when it has the same code and config as `c`, else a new version numbered one
/// past the highest number ever used by this function. Returns the number and whether it
/// was published now. The row lock makes the number unique across nodes.
async fn publish_version(
    tx: &Transaction<'_>,
    name: &FunctionName,
    c: &Candidate<'_>,
    now: time::OffsetDateTime,
) -> Result<(i64, bool)> {
    let newest = query_opt(
        tx,
        "SELECT version, config, code_sha256 FROM registry_versions WHERE name = $1 \
         ORDER BY version DESC LIMIT 1",
        &[&name.as_str()],
    )
    .await?;
    let newest: Option<(i64, String, String)> = match newest {
        Some(r) => Some((get(&r, 0)?, get(&r, 1)?, get(&r, 2)?)),
        None => None,
    };
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
    let last_used: i64 = match query_opt(
        tx,
        "SELECT last_version FROM registry_functions WHERE name = $1",
        &[&name.as_str()],
    )
    .await?
    {
        Some(r) => get(&r, 0)?,
        None => return Err(function_not_found(name.as_str())),
    };
    let v = last_used.max(newest.map_or(0, |(v, _, _)| v)) + 1;
    execute(
        tx,
        "INSERT INTO registry_versions (name, version, config, code_sha256, code_size,
             last_modified, revision_id, created_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &name.as_str(),
            &v,
            &encode_config(name, c.config)?,
            &c.code_sha256,
            &(c.code_size as i64),
            &lambda_timestamp(now),
            &new_revision(),
            &now_ms(now),
        ],
    )
    .await?;
    execute(
        tx,
        "UPDATE registry_functions SET last_version = $2 WHERE name = $1",
        &[&name.as_str(), &v],
    )
    .await?;
    Ok((v, true))
}

const META_COLUMNS: &str = "reserved_concurrency, tags, policy, policy_revision_id";

async fn get_meta(tx: &Transaction<'_>, name: &FunctionName, lock: bool) -> Result<FunctionMeta> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row = query_opt(
        tx,
        &format!("SELECT {META_COLUMNS} FROM registry_functions WHERE name = $1{lock}"),
        &[&name.as_str()],
    )
    .await?
    .ok_or_else(|| function_not_found(name.as_str()))?;
    let reserved: Option<i64> = get(&row, 0)?;
    let tags: String = get(&row, 1)?;
    let policy: String = get(&row, 2)?;
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
        policy_revision_id: get(&row, 3)?,
    })
}

async fn set_tags(
    tx: &Transaction<'_>,
    name: &FunctionName,
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    execute(
        tx,
        "UPDATE registry_functions SET tags = $2 WHERE name = $1",
        &[&name.as_str(), &encode_json("tags", name, tags)?],
    )
    .await?;
    Ok(())
}

/// Stores `policy` with a new policy revision id.
async fn set_policy(
    tx: &Transaction<'_>,
    name: &FunctionName,
    policy: &[serde_json::Value],
) -> Result<()> {
    execute(
        tx,
        "UPDATE registry_functions SET policy = $2, policy_revision_id = $3 WHERE name = $1",
        &[
            &name.as_str(),
            &encode_json("policy", name, &policy)?,
            &new_revision(),
        ],
    )
    .await?;
    Ok(())
}

fn statement_sid(statement: &serde_json::Value) -> Option<&str> {
    statement.get("Sid").and_then(|s| s.as_str())
}

const ALIAS_COLUMNS: &str = "name, function_version, description, routing, revision_id";

fn decode_alias(function: &FunctionName, row: &Row) -> Result<Alias> {
    let name: String = get(row, 0)?;
    let routing: String = get(row, 3)?;
    Ok(Alias {
        routing: decode_json("routing", &format!("alias {name} of {function}"), &routing)?,
        name,
        function_version: get(row, 1)?,
        description: get(row, 2)?,
        revision_id: get(row, 4)?,
    })
}

async fn find_alias(
    tx: &Transaction<'_>,
    function: &FunctionName,
    alias: &str,
) -> Result<Option<Alias>> {
    query_opt(
        tx,
        &format!("SELECT {ALIAS_COLUMNS} FROM registry_aliases WHERE function = $1 AND name = $2"),
        &[&function.as_str(), &alias],
    )
    .await?
    .map(|r| decode_alias(function, &r))
    .transpose()
}

async fn require_alias(
    tx: &Transaction<'_>,
    function: &FunctionName,
    alias: &str,
    lock: bool,
) -> Result<Alias> {
    require_function(tx, function, lock).await?;
    find_alias(tx, function, alias)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("alias {alias} of {function} not found")))
}

async fn all_aliases(tx: &Transaction<'_>, function: &FunctionName) -> Result<Vec<Alias>> {
    query(
        tx,
        &format!("SELECT {ALIAS_COLUMNS} FROM registry_aliases WHERE function = $1 ORDER BY name"),
        &[&function.as_str()],
    )
    .await?
    .iter()
    .map(|r| decode_alias(function, r))
    .collect()
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
async fn check_alias_target(
    tx: &Transaction<'_>,
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
        if !version_exists(tx, function, v).await? {
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
        if !version_exists(tx, function, v).await? {
            return Err(StoreError::NotFound(format!(
                "version {v} of {function} not found"
            )));
        }
        out.insert(v.to_string(), weight);
    }
    Ok((target, out))
}

impl Store for PgStore {
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
        let (latest, version, created) = self.tx(async |tx| {
            // The upsert locks the function's row until commit: publishing below is
            // serialised with every other write of this function.
            let row = query_one(
                tx,
                "INSERT INTO registry_functions (name, config, code_sha256, code_size,
                     last_modified, revision_id, created_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (name) DO UPDATE SET config = EXCLUDED.config,
                     code_sha256 = EXCLUDED.code_sha256, code_size = EXCLUDED.code_size,
                     last_modified = EXCLUDED.last_modified, revision_id = EXCLUDED.revision_id
                 RETURNING (xmax = 0)",
                &[
                    &name.as_str(),
                    &config_json,
                    &code.sha256,
                    &(code.size as i64),
                    &lambda_timestamp(now),
                    &new_revision(),
                    &now_ms(now),
                ],
            )
            .await?;
            let created: bool = get(&row, 0)?;
            let (version, _) = publish_version(
                tx,
                name,
                &Candidate {
                    config,
                    code_sha256: &code.sha256,
                    code_size: code.size,
                    compare_description: true,
                },
                now,
            )
            .await?;
            let latest = get_latest(tx, name.as_str(), false).await?.ok_or_else(|| {
                StoreError::Corrupt(format!("{name} vanished inside its own transaction"))
            })?;
            if created {
                // Lines appended after an earlier function of the same name was deleted
                // must not show up as the new function's.
                logs::delete_function(tx, name.as_str()).await?;
            }
            Ok((latest, version, created))
        })?;
        tracing::debug!(function = %name, version, created, "deployed");
        Ok(Deployed {
            latest,
            version: version.to_string(),
            created,
        })
    }

    fn get(&self, name: &FunctionName, qualifier: Option<&str>) -> Result<FunctionVersion> {
        self.tx(async |tx| match qualifier {
            None | Some(LATEST) => require_latest(tx, name, false).await,
            Some(q) => {
                let found = match parse_version(q) {
                    Some(v) => get_version(tx, name.as_str(), v).await?,
                    None => None,
                };
                match found {
                    Some(f) => Ok(f),
                    None if get_latest(tx, name.as_str(), false).await?.is_none() => {
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
        })
    }

    fn list(&self) -> Result<Vec<FunctionVersion>> {
        self.tx(async |tx| {
            query(
                tx,
                &format!("SELECT {COLUMNS} FROM registry_functions ORDER BY name"),
                &[],
            )
            .await?
            .iter()
            .map(|r| decode(r, None))
            .collect()
        })
    }

    fn list_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionVersion>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.unwrap_or("");
        self.tx(async |tx| {
            query(
                tx,
                &format!(
                    "SELECT {COLUMNS} FROM registry_functions WHERE name > $1 \
                     ORDER BY name LIMIT $2"
                ),
                &[&after, &limit],
            )
            .await?
            .iter()
            .map(|r| decode(r, None))
            .collect()
        })
    }

    fn versions(&self, name: &FunctionName) -> Result<Vec<FunctionVersion>> {
        self.tx(async |tx| {
            let latest = require_latest(tx, name, false).await?;
            let rows = query(
                tx,
                &format!(
                    "SELECT {COLUMNS}, version FROM registry_versions WHERE name = $1 \
                     ORDER BY version"
                ),
                &[&name.as_str()],
            )
            .await?;
            let mut out = vec![latest];
            for r in &rows {
                out.push(decode(r, Some(get(r, 6)?))?);
            }
            Ok(out)
        })
    }

    fn delete(&self, name: &FunctionName) -> Result<()> {
        self.tx(async |tx| {
            // Versions, aliases and provisioned configs go with it (ON DELETE CASCADE).
            let n = execute(
                tx,
                "DELETE FROM registry_functions WHERE name = $1",
                &[&name.as_str()],
            )
            .await?;
            if n == 0 {
                return Err(function_not_found(name.as_str()));
            }
            logs::delete_function(tx, name.as_str()).await
        })?;
        tracing::debug!(function = %name, "deleted");
        Ok(())
    }

    fn code_references(&self) -> Result<HashSet<String>> {
        self.tx(async |tx| {
            let rows = query(
                tx,
                "SELECT code_sha256 FROM registry_functions \
                 UNION SELECT code_sha256 FROM registry_versions \
                 UNION SELECT code_sha256 FROM registry_layer_versions",
                &[],
            )
            .await?;
            let mut out = HashSet::new();
            for r in &rows {
                out.insert(get::<String>(r, 0)?.to_ascii_lowercase());
            }
            // The layers every function version uses (kept even after the layer version is
            // deleted) and the merged `/opt` tree each ordered list of them makes.
            layers::function_layer_references(tx, &mut out).await?;
            Ok(out)
        })
    }

    fn append_logs(&self, entries: &[LogEntry]) -> Result<()> {
        self.append(entries)
    }

    fn logs(&self, function: &FunctionName, after: i64, limit: usize) -> Result<Vec<LogEntry>> {
        let q = LogQuery {
            after,
            limit,
            ..LogQuery::default()
        };
        Ok(self.query_lines(Some(&[function.to_string()]), &q)?.entries)
    }

    fn query_logs(&self, functions: Option<&[String]>, q: &LogQuery) -> Result<LogPage> {
        self.query_lines(functions, q)
    }

    fn log_usage(&self) -> LogUsage {
        self.usage()
    }

    /// `VACUUM`s the lines' table once this process has pruned an eighth of the bound
    /// since the last time ([`PgStore::vacuum_logs`]); the WAL is the server's.
    fn maintain_logs(&self) -> Result<u64> {
        self.vacuum_logs()
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
        let config_json = encode_config(name, config)?;
        let tags_json = encode_json("tags", name, tags)?;
        let out = self.tx(async |tx| {
            // The primary key decides between two nodes creating the same function: the
            // second waits for the first and then inserts nothing.
            let inserted = query_opt(
                tx,
                "INSERT INTO registry_functions (name, config, code_sha256, code_size,
                     last_modified, revision_id, created_ms, tags)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (name) DO NOTHING RETURNING 1",
                &[
                    &name.as_str(),
                    &config_json,
                    &code.sha256,
                    &(code.size as i64),
                    &lambda_timestamp(now),
                    &new_revision(),
                    &now_ms(now),
                    &tags_json,
                ],
            )
            .await?;
            if inserted.is_none() {
                return Err(StoreError::Conflict(format!(
                    "function {name} already exists: update its code or configuration, or delete it first"
                )));
            }
            let published = if publish {
                let candidate = Candidate {
                    config,
                    code_sha256: &code.sha256,
                    code_size: code.size,
                    compare_description: true,
                };
                let (v, _) = publish_version(tx, name, &candidate, now).await?;
                get_version(tx, name.as_str(), v).await?
            } else {
                None
            };
            let latest = require_latest(tx, name, false).await?;
            logs::delete_function(tx, name.as_str()).await?;
            Ok((latest, published))
        })?;
        tracing::debug!(function = %name, publish, "created");
        Ok(out)
    }

    fn update_latest(
        &self,
        name: &FunctionName,
        config: Option<&FunctionConfig>,
        code: Option<&CodeInfo>,
        expected_revision: Option<&str>,
    ) -> Result<FunctionVersion> {
        let now = time::OffsetDateTime::now_utc();
        let latest = self.tx(async |tx| {
            let current = require_latest(tx, name, true).await?;
            check_revision(expected_revision, &current.revision_id, &format!("{name}"))?;
            if config.is_none() && code.is_none() {
                return Ok(current);
            }
            let config_json = encode_config(name, config.unwrap_or(&current.config))?;
            let (sha, size) = match code {
                Some(c) => (c.sha256.as_str(), c.size),
                None => (current.code_sha256.as_str(), current.code_size),
            };
            execute(
                tx,
                "UPDATE registry_functions SET config = $2, code_sha256 = $3, code_size = $4,
                     last_modified = $5, revision_id = $6
                 WHERE name = $1",
                &[
                    &name.as_str(),
                    &config_json,
                    &sha,
                    &(size as i64),
                    &lambda_timestamp(now),
                    &new_revision(),
                ],
            )
            .await?;
            require_latest(tx, name, false).await
        })?;
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
        let (version, v, new) = self.tx(async |tx| {
            let latest = require_latest(tx, name, true).await?;
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
                // As Lambda: publishing an unchanged $LATEST returns the newest version,
                // whether or not that version was given a description of its own.
                compare_description: false,
            };
            let (v, new) = publish_version(tx, name, &candidate, now).await?;
            let version = get_version(tx, name.as_str(), v).await?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "version {v} of {name} vanished inside its own transaction"
                ))
            })?;
            Ok((version, v, new))
        })?;
        tracing::debug!(function = %name, version = v, new, "published");
        Ok(version)
    }

    fn delete_version(&self, name: &FunctionName, version: &str) -> Result<()> {
        let v = self.tx(async |tx| {
            require_function(tx, name, true).await?;
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
            let users: Vec<String> = all_aliases(tx, name)
                .await?
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
            let n = execute(
                tx,
                "DELETE FROM registry_versions WHERE name = $1 AND version = $2",
                &[&name.as_str(), &v],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "version {v} of {name} not found"
                )));
            }
            execute(
                tx,
                "DELETE FROM registry_provisioned WHERE function = $1 AND qualifier = $2",
                &[&name.as_str(), &v.to_string()],
            )
            .await?;
            Ok(v)
        })?;
        tracing::debug!(function = %name, version = v, "deleted version");
        Ok(())
    }

    fn meta(&self, name: &FunctionName) -> Result<FunctionMeta> {
        self.tx(async |tx| get_meta(tx, name, false).await)
    }

    fn set_reserved_concurrency(&self, name: &FunctionName, value: Option<u32>) -> Result<()> {
        let value = value.map(i64::from);
        self.tx(async |tx| {
            let n = execute(
                tx,
                "UPDATE registry_functions SET reserved_concurrency = $2 WHERE name = $1",
                &[&name.as_str(), &value],
            )
            .await?;
            if n == 0 {
                return Err(function_not_found(name.as_str()));
            }
            Ok(())
        })
    }

    fn tag(&self, name: &FunctionName, tags: &BTreeMap<String, String>) -> Result<()> {
        self.tx(async |tx| {
            let mut current = get_meta(tx, name, true).await?.tags;
            current.extend(tags.iter().map(|(k, v)| (k.clone(), v.clone())));
            set_tags(tx, name, &current).await
        })
    }

    fn untag(&self, name: &FunctionName, keys: &[String]) -> Result<()> {
        self.tx(async |tx| {
            let mut current = get_meta(tx, name, true).await?.tags;
            for k in keys {
                current.remove(k);
            }
            set_tags(tx, name, &current).await
        })
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
        self.tx(async |tx| {
            let mut meta = get_meta(tx, name, true).await?;
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
            set_policy(tx, name, &meta.policy).await?;
            get_meta(tx, name, false).await
        })
    }

    fn remove_permission(
        &self,
        name: &FunctionName,
        statement_id: &str,
        expected_revision: Option<&str>,
    ) -> Result<()> {
        self.tx(async |tx| {
            let mut meta = get_meta(tx, name, true).await?;
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
            set_policy(tx, name, &meta.policy).await
        })
    }

    fn create_alias(&self, function: &FunctionName, alias: &Alias) -> Result<Alias> {
        if validate_alias_name(&alias.name).is_err() {
            return Err(StoreError::InvalidInput(format!(
                "invalid alias name {:?}: use 1-128 letters, digits, '-' or '_', not only digits",
                alias.name
            )));
        }
        check_description(&alias.description)?;
        let stored = self.tx(async |tx| {
            // Locked: a version this alias names cannot be deleted meanwhile.
            require_function(tx, function, true).await?;
            if find_alias(tx, function, &alias.name).await?.is_some() {
                return Err(StoreError::Conflict(format!(
                    "alias {} of {function} already exists: update it or delete it first",
                    alias.name
                )));
            }
            let (function_version, routing) =
                check_alias_target(tx, function, &alias.function_version, &alias.routing).await?;
            let stored = Alias {
                name: alias.name.clone(),
                function_version,
                description: alias.description.clone(),
                routing,
                revision_id: new_revision(),
            };
            execute(
                tx,
                "INSERT INTO registry_aliases (function, name, function_version, description,
                     routing, revision_id)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &function.as_str(),
                    &stored.name,
                    &stored.function_version,
                    &stored.description,
                    &encode_json("routing", function, &stored.routing)?,
                    &stored.revision_id,
                ],
            )
            .await?;
            Ok(stored)
        })?;
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
        let current = self.tx(async |tx| {
            let mut current = require_alias(tx, function, alias, true).await?;
            check_revision(
                expected_revision,
                &current.revision_id,
                &format!("alias {alias} of {function}"),
            )?;
            let (target, routing) = check_alias_target(
                tx,
                function,
                function_version.unwrap_or(&current.function_version),
                routing.unwrap_or(&current.routing),
            )
            .await?;
            current.function_version = target;
            current.routing = routing;
            if let Some(d) = description {
                current.description = d.to_string();
            }
            current.revision_id = new_revision();
            execute(
                tx,
                "UPDATE registry_aliases SET function_version = $3, description = $4,
                     routing = $5, revision_id = $6
                 WHERE function = $1 AND name = $2",
                &[
                    &function.as_str(),
                    &alias,
                    &current.function_version,
                    &current.description,
                    &encode_json("routing", function, &current.routing)?,
                    &current.revision_id,
                ],
            )
            .await?;
            Ok(current)
        })?;
        tracing::debug!(function = %function, alias, "updated alias");
        Ok(current)
    }

    fn get_alias(&self, function: &FunctionName, alias: &str) -> Result<Alias> {
        self.tx(async |tx| require_alias(tx, function, alias, false).await)
    }

    fn list_aliases(&self, function: &FunctionName, version: Option<&str>) -> Result<Vec<Alias>> {
        self.tx(async |tx| {
            require_function(tx, function, false).await?;
            let mut aliases = all_aliases(tx, function).await?;
            if let Some(v) = version {
                let v = canonical_version(v);
                aliases.retain(|a| points_at(a, &v));
            }
            Ok(aliases)
        })
    }

    fn delete_alias(&self, function: &FunctionName, alias: &str) -> Result<()> {
        self.tx(async |tx| {
            require_function(tx, function, true).await?;
            let n = execute(
                tx,
                "DELETE FROM registry_aliases WHERE function = $1 AND name = $2",
                &[&function.as_str(), &alias],
            )
            .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!(
                    "alias {alias} of {function} not found"
                )));
            }
            execute(
                tx,
                "DELETE FROM registry_provisioned WHERE function = $1 AND qualifier = $2",
                &[&function.as_str(), &alias],
            )
            .await?;
            Ok(())
        })?;
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
        self.tx(async |tx| {
            // Locked: the function (and so this config) cannot be deleted meanwhile.
            require_function(tx, function, true).await?;
            execute(
                tx,
                "INSERT INTO registry_provisioned (function, qualifier, requested, last_modified)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (function, qualifier) DO UPDATE SET
                     requested = EXCLUDED.requested, last_modified = EXCLUDED.last_modified",
                &[
                    &function.as_str(),
                    &qualifier,
                    &i64::from(requested),
                    &last_modified,
                ],
            )
            .await?;
            Ok(())
        })?;
        Ok(ProvisionedConfig {
            function: function.clone(),
            qualifier,
            requested,
            last_modified,
        })
    }

    fn list_provisioned(&self, function: Option<&FunctionName>) -> Result<Vec<ProvisionedConfig>> {
        let function = function.map(|f| f.as_str());
        self.tx(async |tx| {
            let rows = query(
                tx,
                "SELECT function, qualifier, requested, last_modified FROM registry_provisioned
                 WHERE $1::TEXT IS NULL OR function = $1 ORDER BY function, qualifier",
                &[&function],
            )
            .await?;
            let mut out = Vec::new();
            for r in &rows {
                let f: String = get(r, 0)?;
                let function = FunctionName::parse(&f)
                    .map_err(|e| StoreError::Corrupt(format!("stored function name {f:?}: {e}")))?;
                let requested: i64 = get(r, 2)?;
                out.push(ProvisionedConfig {
                    function,
                    qualifier: get(r, 1)?,
                    requested: requested.clamp(0, i64::from(u32::MAX)) as u32,
                    last_modified: get(r, 3)?,
                });
            }
            Ok(out)
        })
    }

    fn delete_provisioned(&self, function: &FunctionName, qualifier: &str) -> Result<bool> {
        let qualifier = canonical_version(qualifier);
        self.tx(async |tx| {
            let n = execute(
                tx,
                "DELETE FROM registry_provisioned WHERE function = $1 AND qualifier = $2",
                &[&function.as_str(), &qualifier],
            )
            .await?;
            Ok(n > 0)
        })
    }
}
