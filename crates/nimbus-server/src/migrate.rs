//! `nimbus migrate --from DATA_DIR --to postgres://…`: moves a single node's data (the
//! SQLite files of its data directory, its code packages and object bytes) into the
//! PostgreSQL database of a cluster (docs/cluster.md, "Moving a single node into a
//! cluster").
//!
//! The PostgreSQL tables were written as mirrors of the SQLite ones (`functions` in
//! `registry.db` is `registry_functions`, and so on), so the copy is table by table, column
//! by column, with the same values: function versions and their numbers, sequence numbers,
//! ids, receive counts, watermarks, sealed secrets (the sealed bytes, never a plaintext).
//! [`STORES`] lists every table and the few differences; a SQLite table or column it does
//! not account for stops the migration before anything is written (never a silent loss).
//!
//! Steps, in order:
//! 1. Refuse a data directory a server has open (SQLite's lock on its WAL index), and load
//!    the master key the secrets were sealed with (as `serve` does).
//! 2. Open every store on both sides through its own `open`: the SQLite files are brought
//!    up to date (as a server start would), the PostgreSQL tables are created.
//! 3. Refuse a target that already holds data (anything but what the stores' `open` seeds).
//! 4. Upload the code packages the registry names and every object's bytes into the shared
//!    blob store ([`nimbus_blobs::PgBlobs`], namespaces `code` and `objects`): the nodes
//!    start with empty data directories and fetch what they need from there. Blobs are
//!    content-addressed, so this step may be repeated.
//! 5. Copy every table in ONE transaction (all or nothing), advance the identity
//!    sequences past the copied numbers, and record the master key's id
//!    (`secrets_master`): the nodes must be started with that same key.
//!
//! What is derived is not copied but rebuilt: the backlog counts of async events and
//! queue messages (`events_backlog`, `queues_backlog`) are kept by PostgreSQL triggers as
//! the rows arrive. Async events a stopped server left `running` arrive `pending`, due at
//! once (what a restart of that server would do). Log lines are copied (the source node
//! already bounded them by its log limits).

use anyhow::{bail, Context};
use nimbus_blobs::{Namespace, PgBlobs, Put, SharedBlobs};
use nimbus_pg::types::ToSql;
use nimbus_pg::{Pg, PgConfig};
use nimbus_store::{MasterKey, Store};
use rusqlite::types::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What to move where.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The data directory of the (stopped) single node.
    pub from: PathBuf,
    /// `postgres://…` of the cluster's database (empty of Nimbus data).
    pub to: String,
    /// The master key file the node used, when not `FROM/master.key` (`NIMBUS_MASTER_KEY`,
    /// the key itself, takes precedence, as for `serve`).
    pub master_key_file: Option<PathBuf>,
}

/// Rows copied: per store, `(what, rows)` in copy order.
pub type StoreCounts = Vec<(String, Vec<(String, u64)>)>;

/// What was moved.
#[derive(Debug, Clone, Default)]
pub struct MigrateReport {
    /// `host:port/database` of the target (no password).
    pub target: String,
    /// Per store, `(what, rows)` in copy order.
    pub stores: StoreCounts,
    /// Code packages uploaded (or found there already) and their bytes.
    pub code_blobs: u64,
    pub code_bytes: u64,
    /// Object and part bytes uploaded (or found there already).
    pub object_blobs: u64,
    pub object_bytes: u64,
    /// The id of the master key the secrets are sealed with, recorded in the database.
    pub master_key_id: String,
    /// Where that key came from (a file, or `NIMBUS_MASTER_KEY`).
    pub master_key_source: String,
}

impl MigrateReport {
    /// Rows copied in all.
    pub fn rows(&self) -> u64 {
        self.stores
            .iter()
            .flat_map(|(_, t)| t.iter().map(|(_, n)| n))
            .sum()
    }
}

/// One SQLite table and the PostgreSQL table it goes to.
struct Table {
    /// What its rows are, for the progress lines ("functions").
    what: &'static str,
    sqlite: &'static str,
    pg: &'static str,
    /// PostgreSQL columns computed from a SQLite expression instead of copied by name
    /// (`{now}` is replaced by the current time in milliseconds).
    computed: &'static [(&'static str, &'static str)],
    /// SQLite columns with no PostgreSQL counterpart: state the PostgreSQL store keeps
    /// otherwise (or computed from them, above).
    dropped: &'static [&'static str],
    /// Rows the PostgreSQL store's `open` makes itself (a `WHERE` clause): they do not
    /// make the target "not empty" and are replaced by the copied ones.
    seeded: Option<&'static str>,
}

const fn table(what: &'static str, sqlite: &'static str, pg: &'static str) -> Table {
    Table {
        what,
        sqlite,
        pg,
        computed: &[],
        dropped: &[],
        seeded: None,
    }
}

/// One SQLite file of the data directory.
struct StoreSpec {
    name: &'static str,
    file: &'static str,
    /// Parents before children (foreign keys).
    tables: &'static [Table],
    /// SQLite tables not copied because PostgreSQL derives them from the copied rows.
    derived: &'static [&'static str],
}

/// Every store of a data directory, in copy order.
const STORES: &[StoreSpec] = &[
    StoreSpec {
        name: "registry",
        file: "registry.db",
        tables: &[
            table("functions", "functions", "registry_functions"),
            table("versions", "versions", "registry_versions"),
            table("aliases", "aliases", "registry_aliases"),
            table(
                "provisioned concurrency settings",
                "provisioned_concurrency",
                "registry_provisioned",
            ),
            table("layers", "layers", "registry_layers"),
            table(
                "layer versions",
                "layer_versions",
                "registry_layer_versions",
            ),
        ],
        derived: &[],
    },
    StoreSpec {
        name: "logs",
        file: "logs.db",
        tables: &[
            table("log lines", "logs", "logs_lines"),
            table("log usage rows", "log_usage", "logs_usage"),
        ],
        derived: &[],
    },
    StoreSpec {
        name: "async events",
        file: "events.db",
        tables: &[
            Table {
                computed: &[
                    // The claim order (SQLite's is its rowid).
                    ("seq", "rowid"),
                    // Left running by the stopped server: due again now, as its restart
                    // would make them (`requeue_running`).
                    (
                        "status",
                        "CASE WHEN status = 'running' THEN 'pending' ELSE status END",
                    ),
                    (
                        "next_attempt_ms",
                        "CASE WHEN status = 'running' THEN MIN(next_attempt_ms, {now}) \
                         ELSE next_attempt_ms END",
                    ),
                ],
                ..table("events", "events", "events_events")
            },
            table("invoke configs", "invoke_configs", "events_invoke_configs"),
            table("stored results", "sync_results", "events_sync_results"),
        ],
        derived: &["backlog"],
    },
    StoreSpec {
        name: "queues",
        file: "queues.db",
        tables: &[
            table("queues", "queues", "queues_queues"),
            table("messages", "messages", "queues_messages"),
            Table {
                // SQLite's triggers keep each group's first message; PostgreSQL looks it
                // up (a group's row is its lock).
                dropped: &["head_seq"],
                ..table("FIFO groups", "fifo_groups", "queues_fifo_groups")
            },
            table("FIFO deduplication ids", "fifo_dedup", "queues_fifo_dedup"),
            table(
                "receive attempts",
                "receive_attempts",
                "queues_receive_attempts",
            ),
            Table {
                // The listing order (SQLite's is its rowid).
                computed: &[("position", "rowid")],
                ..table("mappings", "mappings", "queues_mappings")
            },
        ],
        derived: &["backlog"],
    },
    StoreSpec {
        name: "event buses",
        file: "bus.db",
        tables: &[
            Table {
                seeded: Some("name = 'default'"),
                ..table("buses", "buses", "bus_buses")
            },
            table("rules", "rules", "bus_rules"),
        ],
        derived: &[],
    },
    StoreSpec {
        name: "history",
        file: "history.db",
        tables: &[
            table("minutes", "minutes", "history_minutes"),
            table("alarms", "alarms", "history_alarms"),
        ],
        derived: &[],
    },
    StoreSpec {
        name: "secrets, access keys and roles",
        file: "secrets.db",
        tables: &[
            table("secrets", "secrets", "secrets_secrets"),
            table("access keys", "access_keys", "secrets_access_keys"),
            Table {
                // Names are unique without regard to ASCII case (SQLite's NOCASE; SQLite's
                // lower() folds ASCII only, as str::to_ascii_lowercase).
                computed: &[("name_key", "lower(name)")],
                ..table("roles", "roles", "roles_roles")
            },
            Table {
                computed: &[("role_key", "lower(role)")],
                dropped: &["role"],
                ..table("role policies", "role_policies", "roles_policies")
            },
        ],
        derived: &[],
    },
    StoreSpec {
        name: "objects",
        file: "objects.db",
        tables: &[
            table("buckets", "buckets", "objects_buckets"),
            table("bucket usage rows", "bucket_usage", "objects_bucket_usage"),
            table("bucket configs", "bucket_configs", "objects_bucket_configs"),
            table("bucket tag sets", "bucket_tags", "objects_bucket_tags"),
            table(
                "notification configs",
                "notification_configs",
                "objects_notification_configs",
            ),
            table("blob references", "blobs", "objects_blobs"),
            table("objects", "objects", "objects_objects"),
            table("uploads", "uploads", "objects_uploads"),
            table("parts", "parts", "objects_parts"),
            table(
                "notifications to deliver",
                "notification_outbox",
                "objects_notification_outbox",
            ),
            table(
                "notification sequencers",
                "notification_sequencer",
                "objects_notification_sequencer",
            ),
        ],
        derived: &[],
    },
    StoreSpec {
        name: "workflows",
        file: "flows.db",
        tables: &[
            table("machines", "machines", "flows_machines"),
            table("revisions", "revisions", "flows_revisions"),
            table("versions", "versions", "flows_versions"),
            table("aliases", "aliases", "flows_aliases"),
            table("executions", "executions", "flows_executions"),
            table("history events", "events", "flows_events"),
            table("steps", "steps", "flows_steps"),
            table("task tokens", "task_tokens", "flows_task_tokens"),
            table("joins", "joins", "flows_joins"),
            table("join items", "join_items", "flows_join_items"),
        ],
        derived: &[],
    },
    StoreSpec {
        name: "event sources and targets",
        file: "sources.db",
        tables: &[
            table("mappings", "source_mappings", "sources_mappings"),
            table("checkpoints", "source_checkpoints", "sources_checkpoints"),
            table("targets", "targets", "sources_targets"),
            table("outbox messages", "outbox", "sources_outbox"),
        ],
        derived: &[],
    },
];

/// Rows (or bytes) per INSERT statement, at most.
const BATCH_ROWS: usize = 500;
const BATCH_BYTES: usize = 8 << 20;
/// PostgreSQL's limit on the parameters of one statement.
const MAX_PARAMS: usize = 65_535;

/// Moves the data directory `opts.from` into the database `opts.to`; `progress` gets one
/// line per step ("registry: 12 functions, 40 versions, …"). Blocking: call it off async
/// workers. Refuses (before writing anything) a data directory in use, a target that is
/// not empty, a missing master key, and any table or column it would not know where to
/// put.
pub fn run(opts: &MigrateOptions, progress: &dyn Fn(&str)) -> anyhow::Result<MigrateReport> {
    let from = &opts.from;
    if !from.join("registry.db").is_file() {
        bail!(
            "{} is not a nimbus data directory (it has no registry.db): give the --data-dir the \
             single node's server used",
            from.display()
        );
    }
    if let Some((file, pid)) = in_use(from)? {
        bail!(
            "the data directory {} is in use: process {pid} has {} open (a nimbus server?). \
             Stop that server first; nimbus migrate copies a stopped node",
            from.display(),
            file.display()
        );
    }
    let (key, key_source) = load_master_key(from, opts.master_key_file.as_deref())?;
    let key_id = key.id();

    let pg = Pg::connect(&PgConfig::new(&opts.to)).context(
        "cannot connect to the --to database: check the URL (postgres://USER@HOST:PORT/DATABASE) \
         and that PostgreSQL is running",
    )?;
    let mut report = MigrateReport {
        target: pg.target().to_string(),
        master_key_id: key_id.clone(),
        master_key_source: key_source,
        ..Default::default()
    };
    progress(&format!(
        "moving {} into PostgreSQL at {}",
        from.display(),
        pg.target()
    ));
    check_recorded_key(&pg, &key_id)?;

    // Both sides' schemas up to date, through the stores' own `open`.
    let now = now_ms();
    let code_refs = open_sqlite(from, &key, now)?;
    open_postgres(&pg, &key, now)?;
    let counts = target_counts(&pg)?;
    if !counts.is_empty() {
        let list: Vec<String> = counts.iter().map(|(t, n)| format!("{t} ({n})")).collect();
        bail!(
            "the database at {} already holds Nimbus data: {}. nimbus migrate copies into an \
             empty database only, and merges nothing: use a new database (or schema), or drop \
             this one's tables, and run nimbus migrate before starting any node on it",
            pg.target(),
            list.join(", ")
        );
    }

    // The bytes first: a row must never name bytes the nodes cannot fetch.
    let blobs = PgBlobs::open(&pg).context("cannot open the shared blob store in PostgreSQL")?;
    let (n, bytes) = upload_code(from, &code_refs, &blobs, progress)?;
    (report.code_blobs, report.code_bytes) = (n, bytes);
    let (n, bytes) = upload_objects(from, &blobs, progress)?;
    (report.object_blobs, report.object_bytes) = (n, bytes);

    report.stores = copy_tables(&pg, from, &key_id, now, progress)?;
    Ok(report)
}

/// The first SQLite file of `dir` another process has open, and that process: every
/// connection to a WAL database holds a shared lock on byte 128 of its `-shm` file (the
/// "DMS" lock of SQLite's unix VFS) for as long as it is open.
pub fn in_use(dir: &Path) -> anyhow::Result<Option<(PathBuf, i32)>> {
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    let mut shm: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".db-shm"))
        .collect();
    shm.sort();
    for path in shm {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
        };
        // SAFETY: a plain C struct, all zeroes is a valid value.
        let mut lock: nix::libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = nix::libc::F_WRLCK as _;
        lock.l_whence = nix::libc::SEEK_SET as _;
        lock.l_start = 128;
        lock.l_len = 1;
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETLK(&mut lock))
            .with_context(|| format!("cannot check the locks of {}", path.display()))?;
        if lock.l_type as i32 != nix::libc::F_UNLCK {
            let db = PathBuf::from(path.to_string_lossy().trim_end_matches("-shm").to_string());
            return Ok(Some((db, lock.l_pid)));
        }
    }
    Ok(None)
}

/// The key the node sealed its secrets with, found as `serve` finds it (never created).
fn load_master_key(data_dir: &Path, file: Option<&Path>) -> anyhow::Result<(MasterKey, String)> {
    if let Ok(text) = std::env::var("NIMBUS_MASTER_KEY") {
        if !text.trim().is_empty() {
            let key = MasterKey::from_base64(&text).context("NIMBUS_MASTER_KEY")?;
            return Ok((key, "NIMBUS_MASTER_KEY".into()));
        }
    }
    let path = file
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("NIMBUS_MASTER_KEY_FILE").map(PathBuf::from))
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| data_dir.join("master.key"));
    if !path.exists() {
        bail!(
            "no master key at {}: give the key the node's server used (--master-key-file FILE \
             or NIMBUS_MASTER_KEY); its secrets and access keys are sealed with it",
            path.display()
        );
    }
    let key = MasterKey::read_file(&path)
        .with_context(|| format!("cannot read the master key {}", path.display()))?;
    Ok((key, path.display().to_string()))
}

/// Refuses a database whose recorded master key (a node started on it) is another one.
fn check_recorded_key(pg: &Pg, ours: &str) -> anyhow::Result<()> {
    let recorded: Option<String> = pg.with(async |c| {
        let exists: bool = c
            .query_one("SELECT to_regclass('secrets_master') IS NOT NULL", &[])
            .await?
            .get(0);
        if !exists {
            return Ok(None);
        }
        Ok(c.query_opt("SELECT key_id FROM secrets_master", &[])
            .await?
            .map(|r| r.get(0)))
    })?;
    match recorded {
        Some(theirs) if theirs != ours => bail!(
            "the database at {} records master key {theirs} (a node was started on it with that \
             key), but the data directory's secrets are sealed with master key {ours}: migrate \
             into a new database (or schema), and start the nodes only afterwards, each with \
             the data directory's key",
            pg.target()
        ),
        _ => Ok(()),
    }
}

/// Opens every SQLite store once (schema migrations, the master key check) and returns
/// the code packages the registry names.
fn open_sqlite(dir: &Path, key: &MasterKey, now: i64) -> anyhow::Result<BTreeSet<String>> {
    let at = |what: &str| format!("cannot open the {what} in {}", dir.display());
    let registry = nimbus_store::SqliteStore::open(dir).with_context(|| at("registry"))?;
    let refs = registry
        .code_references()
        .context("cannot read the code packages the registry names")?;
    nimbus_store::SqliteEventQueue::open(dir).with_context(|| at("async event queue"))?;
    nimbus_store::SqliteQueueStore::open(dir).with_context(|| at("queues"))?;
    nimbus_store::SqliteBusStore::open(dir, now).with_context(|| at("event bus store"))?;
    nimbus_store::SqliteHistoryStore::open(dir).with_context(|| at("history store"))?;
    nimbus_store::SecretStore::open(dir, key.clone()).with_context(|| {
        format!(
            "cannot open the secrets store in {} with master key {}",
            dir.display(),
            key.id()
        )
    })?;
    nimbus_objects::store::sqlite::SqliteMetaStore::open(dir)
        .with_context(|| at("object metadata"))?;
    nimbus_flows::store::sqlite::SqliteFlowStore::open(dir).with_context(|| at("workflows"))?;
    nimbus_sources::SqliteSourceStore::open(dir).with_context(|| at("event source store"))?;
    Ok(refs.into_iter().collect())
}

/// Opens every PostgreSQL store once: their migrations create the tables.
fn open_postgres(pg: &Pg, key: &MasterKey, now: i64) -> anyhow::Result<()> {
    let at = |what: &str| format!("cannot open the {what} in PostgreSQL");
    nimbus_store::PgStore::open(pg).with_context(|| at("registry"))?;
    nimbus_store::postgres::events::PgEventQueue::open(pg)
        .with_context(|| at("async event queue"))?;
    nimbus_store::postgres::queues::PgQueueStore::open(pg).with_context(|| at("queues"))?;
    nimbus_store::postgres::bus::PgBusStore::open(pg, now)
        .with_context(|| at("event bus store"))?;
    nimbus_store::postgres::history::PgHistoryStore::open(pg)
        .with_context(|| at("history store"))?;
    nimbus_store::SecretStore::open_postgres(pg, key.clone())
        .with_context(|| at("secrets store"))?;
    nimbus_objects::store::postgres::PgMetaStore::open(pg)
        .with_context(|| at("object metadata"))?;
    nimbus_flows::store::postgres::PgFlowStore::open(pg).with_context(|| at("workflows"))?;
    nimbus_sources::postgres::PgSourceStore::open(pg).with_context(|| at("event source store"))?;
    Ok(())
}

/// The target tables holding rows other than the ones the stores seed, with their counts.
fn target_counts(pg: &Pg) -> anyhow::Result<Vec<(String, i64)>> {
    let mut out = Vec::new();
    for store in STORES {
        for t in store.tables {
            let filter = t
                .seeded
                .map(|w| format!(" WHERE NOT ({w})"))
                .unwrap_or_default();
            let n: i64 = pg.with(async |c| {
                Ok(
                    c.query_one(&format!("SELECT COUNT(*) FROM {}{filter}", t.pg), &[])
                        .await?
                        .get(0),
                )
            })?;
            if n > 0 {
                out.push((t.pg.to_string(), n));
            }
        }
    }
    Ok(out)
}

/// Uploads the code packages the registry names (`DATA_DIR/code/blobs/<sha256>.zip`).
fn upload_code(
    dir: &Path,
    refs: &BTreeSet<String>,
    blobs: &PgBlobs,
    progress: &dyn Fn(&str),
) -> anyhow::Result<(u64, u64)> {
    let root = dir.join("code").join("blobs");
    let missing: Vec<&String> = refs
        .iter()
        .filter(|sha| !root.join(format!("{sha}.zip")).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the registry names code packages that are not in {}: {} (this data directory is \
             incomplete; restore them from a backup of the data directory)",
            root.display(),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let mut bytes = 0;
    for sha in refs {
        let path = root.join(format!("{sha}.zip"));
        bytes += std::fs::metadata(&path)?.len();
        put(blobs, Namespace::Code, sha, &path)?;
    }
    progress(&format!(
        "code packages: {} ({}) in the shared blob store",
        refs.len(),
        human_bytes(bytes)
    ));
    Ok((refs.len() as u64, bytes))
}

/// Uploads the bytes of every object and multipart part (`DATA_DIR/objects/<ab>/<sha256>`).
fn upload_objects(
    dir: &Path,
    blobs: &PgBlobs,
    progress: &dyn Fn(&str),
) -> anyhow::Result<(u64, u64)> {
    let db = rusqlite::Connection::open(dir.join("objects.db"))?;
    let mut shas: BTreeSet<String> = BTreeSet::new();
    for sql in [
        "SELECT sha256 FROM objects",
        "SELECT sha256 FROM parts",
        "SELECT sha256 FROM blobs WHERE refs > 0",
    ] {
        let mut st = db.prepare(sql)?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        for r in rows {
            shas.insert(r?);
        }
    }
    let root = dir.join("objects");
    let mut bytes = 0;
    for sha in &shas {
        let path = root.join(sha.get(..2).unwrap_or_default()).join(sha);
        let len = std::fs::metadata(&path)
            .with_context(|| {
                format!(
                    "the bytes of an object ({sha}) are missing from {}: this data directory is \
                     incomplete; restore them from a backup of the data directory",
                    root.display()
                )
            })?
            .len();
        bytes += len;
        put(blobs, Namespace::Objects, sha, &path)?;
    }
    progress(&format!(
        "object bytes: {} blobs ({}) in the shared blob store",
        shas.len(),
        human_bytes(bytes)
    ));
    Ok((shas.len() as u64, bytes))
}

fn put(blobs: &PgBlobs, ns: Namespace, sha: &str, path: &Path) -> anyhow::Result<Put> {
    blobs.put_file(ns, sha, path).with_context(|| {
        format!(
            "cannot upload {} into the shared blob store",
            path.display()
        )
    })
}

/// A PostgreSQL column of a target table.
struct PgColumn {
    name: String,
    ty: String,
    optional: bool,
    identity: bool,
    /// The sequence numbering it (an identity or serial column).
    sequence: Option<String>,
}

fn pg_columns(pg: &Pg, table: &str) -> anyhow::Result<Vec<PgColumn>> {
    let rows = pg.with(async |c| {
        Ok(c.query(
            "SELECT column_name::TEXT, data_type::TEXT,
                    is_nullable = 'YES' OR column_default IS NOT NULL,
                    is_identity = 'YES',
                    pg_get_serial_sequence(quote_ident(table_name), column_name)
             FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1
             ORDER BY ordinal_position",
            &[&table],
        )
        .await?)
    })?;
    if rows.is_empty() {
        bail!("table {table} is missing in PostgreSQL after its store's migrations");
    }
    Ok(rows
        .iter()
        .map(|r| PgColumn {
            name: r.get(0),
            ty: r.get(1),
            optional: r.get::<_, bool>(2) || r.get::<_, bool>(3),
            identity: r.get(3),
            sequence: r.get(4),
        })
        .collect())
}

/// A column of the copy: the PostgreSQL name and type, and the SQLite expression read.
struct CopyColumn {
    pg: String,
    ty: String,
    expr: String,
}

/// Works out the columns of `t`'s copy, refusing any SQLite column it would drop unsaid
/// and any required PostgreSQL column it cannot fill.
fn plan(
    db: &rusqlite::Connection,
    file: &str,
    t: &Table,
    pg_cols: &[PgColumn],
    now: i64,
) -> anyhow::Result<Vec<CopyColumn>> {
    let mut st = db.prepare(&format!("PRAGMA table_info(\"{}\")", t.sqlite))?;
    let sqlite_cols: Vec<String> = st
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for c in &sqlite_cols {
        if t.dropped.contains(&c.as_str()) || t.computed.iter().any(|(p, _)| p == c) {
            continue;
        }
        let Some(p) = pg_cols.iter().find(|p| &p.name == c) else {
            bail!(
                "column {c} of table {} in {file} has no place in PostgreSQL table {}: this \
                 nimbus cannot move it without losing it (a bug: report it)",
                t.sqlite,
                t.pg
            );
        };
        out.push(CopyColumn {
            pg: p.name.clone(),
            ty: p.ty.clone(),
            expr: format!("\"{c}\""),
        });
    }
    for (name, expr) in t.computed {
        let Some(p) = pg_cols.iter().find(|p| p.name == *name) else {
            bail!("PostgreSQL table {} has no column {name}", t.pg);
        };
        out.push(CopyColumn {
            pg: p.name.clone(),
            ty: p.ty.clone(),
            expr: expr.replace("{now}", &now.to_string()),
        });
    }
    for p in pg_cols {
        if !p.optional && !out.iter().any(|c| c.pg == p.name) {
            bail!(
                "PostgreSQL column {}.{} is required and table {} in {file} has nothing for it \
                 (a bug: report it)",
                t.pg,
                p.name,
                t.sqlite
            );
        }
    }
    Ok(out)
}

/// A value bound to an INSERT.
type Param = Box<dyn ToSql + Sync + Send>;

/// Converts one SQLite value to the PostgreSQL column type `ty`; `Err` names the problem.
fn convert(v: Value, ty: &str) -> Result<(Param, usize), String> {
    let size = match &v {
        Value::Text(s) => s.len(),
        Value::Blob(b) => b.len(),
        _ => 8,
    };
    let p: Param = match (ty, v) {
        ("bigint", Value::Null) => Box::new(None::<i64>),
        ("bigint", Value::Integer(i)) => Box::new(Some(i)),
        ("integer", Value::Null) => Box::new(None::<i32>),
        ("integer", Value::Integer(i)) => Box::new(Some(
            i32::try_from(i).map_err(|_| format!("{i} does not fit an integer column"))?,
        )),
        ("smallint", Value::Null) => Box::new(None::<i16>),
        ("smallint", Value::Integer(i)) => Box::new(Some(
            i16::try_from(i).map_err(|_| format!("{i} does not fit a smallint column"))?,
        )),
        ("boolean", Value::Null) => Box::new(None::<bool>),
        ("boolean", Value::Integer(i)) => Box::new(Some(i != 0)),
        ("double precision", Value::Null) => Box::new(None::<f64>),
        ("double precision", Value::Real(f)) => Box::new(Some(f)),
        ("double precision", Value::Integer(i)) => Box::new(Some(i as f64)),
        ("text", Value::Null) => Box::new(None::<String>),
        ("text", Value::Text(s)) => Box::new(Some(s)),
        ("text", Value::Integer(i)) => Box::new(Some(i.to_string())),
        ("text", Value::Real(f)) => Box::new(Some(f.to_string())),
        ("text", Value::Blob(b)) => Box::new(Some(
            String::from_utf8(b).map_err(|_| "bytes that are not UTF-8 for a text column")?,
        )),
        ("bytea", Value::Null) => Box::new(None::<Vec<u8>>),
        ("bytea", Value::Blob(b)) => Box::new(Some(b)),
        ("bytea", Value::Text(s)) => Box::new(Some(s.into_bytes())),
        (ty, v) => return Err(format!("a {:?} value for a {ty} column", v.data_type())),
    };
    Ok((p, size))
}

/// Copies every table of every store in one transaction; returns the counts per store.
fn copy_tables(
    pg: &Pg,
    dir: &Path,
    key_id: &str,
    now: i64,
    progress: &dyn Fn(&str),
) -> anyhow::Result<StoreCounts> {
    // The plans first (SQLite and PostgreSQL schemas), so a table this nimbus does not
    // know stops everything before a single row is written.
    let mut plans = Vec::new();
    for store in STORES {
        let path = dir.join(store.file);
        let db = rusqlite::Connection::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let known: Vec<&str> = store
            .tables
            .iter()
            .map(|t| t.sqlite)
            .chain(store.derived.iter().copied())
            .collect();
        let mut st = db.prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
        )?;
        let present: Vec<String> = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        drop(st);
        if let Some(unknown) = present.iter().find(|t| !known.contains(&t.as_str())) {
            bail!(
                "table {unknown} of {} is not known to nimbus migrate: it cannot move it \
                 without losing it (a bug: report it)",
                store.file
            );
        }
        let mut tables = Vec::new();
        for t in store.tables {
            if !present.iter().any(|p| p == t.sqlite) {
                bail!("{} has no table {}", path.display(), t.sqlite);
            }
            let pg_cols = pg_columns(pg, t.pg)?;
            let cols = plan(&db, store.file, t, &pg_cols, now)?;
            let sqlite_seq: Option<i64> = sqlite_sequence(&db, t.sqlite)?;
            tables.push((t, cols, pg_cols, sqlite_seq));
        }
        plans.push((store, db, tables));
    }

    pg.block_on(async {
        let mut client = pg.client().await?;
        let tx = client.transaction().await?;
        // Checked again inside the transaction, then the seeded rows make way.
        for (_, _, tables) in &plans {
            for (t, ..) in tables.iter().rev() {
                let filter = t
                    .seeded
                    .map(|w| format!(" WHERE NOT ({w})"))
                    .unwrap_or_default();
                let n: i64 = tx
                    .query_one(&format!("SELECT COUNT(*) FROM {}{filter}", t.pg), &[])
                    .await?
                    .get(0);
                if n > 0 {
                    bail!(
                        "{} received {n} rows while nimbus migrate ran: is a node running on \
                         this database? Stop it, and migrate into an empty database",
                        t.pg
                    );
                }
            }
        }
        for (_, _, tables) in plans.iter().rev() {
            for (t, ..) in tables.iter().rev() {
                tx.execute(&format!("DELETE FROM {}", t.pg), &[]).await?;
            }
        }
        let mut out = Vec::new();
        for (store, db, tables) in &plans {
            db.execute_batch("BEGIN")?;
            let mut counts = Vec::new();
            for (t, cols, pg_cols, sqlite_seq) in tables {
                let n = copy_table(&tx, db, store.file, t, cols, pg_cols).await?;
                advance_sequences(&tx, t.pg, pg_cols, *sqlite_seq).await?;
                counts.push((t.what.to_string(), n));
            }
            db.execute_batch("COMMIT")?;
            progress(&format!(
                "{}: {} … done",
                store.name,
                counts
                    .iter()
                    .map(|(w, n)| format!("{n} {w}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            out.push((store.name.to_string(), counts));
        }
        tx.execute(
            "INSERT INTO secrets_master (singleton, key_id, updated_ms) VALUES (TRUE, $1, $2)
             ON CONFLICT (singleton) DO UPDATE SET key_id = EXCLUDED.key_id,
                 updated_ms = EXCLUDED.updated_ms",
            &[&key_id, &now],
        )
        .await?;
        progress("committing …");
        tx.commit().await?;
        Ok(out)
    })
}

/// The last number SQLite's AUTOINCREMENT handed out for `table` (never reused, even
/// once its row is gone), if it keeps one.
fn sqlite_sequence(db: &rusqlite::Connection, table: &str) -> anyhow::Result<Option<i64>> {
    let has: bool = db.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'sqlite_sequence'",
        [],
        |r| r.get(0),
    )?;
    if !has {
        return Ok(None);
    }
    use rusqlite::OptionalExtension;
    Ok(db
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = ?1",
            [table],
            |r| r.get(0),
        )
        .optional()?)
}

/// Copies the rows of one table in batches of multi-row INSERTs.
async fn copy_table(
    tx: &nimbus_pg::Transaction<'_>,
    db: &rusqlite::Connection,
    file: &str,
    t: &Table,
    cols: &[CopyColumn],
    pg_cols: &[PgColumn],
) -> anyhow::Result<u64> {
    if cols.is_empty() {
        return Ok(0);
    }
    let overriding = if pg_cols.iter().any(|c| c.identity) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    let names: Vec<String> = cols.iter().map(|c| format!("\"{}\"", c.pg)).collect();
    let head = format!(
        "INSERT INTO {} ({}){overriding} VALUES ",
        t.pg,
        names.join(", ")
    );
    let exprs: Vec<&str> = cols.iter().map(|c| c.expr.as_str()).collect();
    let mut st = db.prepare(&format!(
        "SELECT {} FROM \"{}\"",
        exprs.join(", "),
        t.sqlite
    ))?;
    let max_rows = BATCH_ROWS.min(MAX_PARAMS / cols.len());
    let mut rows = st.query([])?;
    let mut batch: Vec<Param> = Vec::new();
    let (mut in_batch, mut bytes, mut total) = (0usize, 0usize, 0u64);
    loop {
        let row = rows.next()?;
        if let Some(row) = row {
            for (i, c) in cols.iter().enumerate() {
                let v: Value = row.get(i)?;
                let (p, size) = convert(v, &c.ty).map_err(|e| {
                    anyhow::anyhow!(
                        "{file}, table {}, column {}: cannot copy {e} into {}.{}",
                        t.sqlite,
                        c.expr,
                        t.pg,
                        c.pg
                    )
                })?;
                batch.push(p);
                bytes += size;
            }
            in_batch += 1;
        }
        let last = row.is_none();
        if in_batch > 0 && (last || in_batch >= max_rows || bytes >= BATCH_BYTES) {
            let mut sql = head.clone();
            for r in 0..in_batch {
                if r > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..cols.len() {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", r * cols.len() + c + 1));
                }
                sql.push(')');
            }
            let params: Vec<&(dyn ToSql + Sync)> = batch
                .iter()
                .map(|p| p.as_ref() as &(dyn ToSql + Sync))
                .collect();
            tx.execute(&sql, &params).await.with_context(|| {
                format!(
                    "cannot insert the rows of {file} table {} into {}",
                    t.sqlite, t.pg
                )
            })?;
            total += in_batch as u64;
            batch.clear();
            (in_batch, bytes) = (0, 0);
        }
        if last {
            return Ok(total);
        }
    }
}

/// Moves the sequences of `table`'s numbered columns past the copied numbers (and past
/// SQLite's AUTOINCREMENT high-water mark), so new rows get new numbers.
async fn advance_sequences(
    tx: &nimbus_pg::Transaction<'_>,
    table: &str,
    columns: &[PgColumn],
    sqlite_seq: Option<i64>,
) -> anyhow::Result<()> {
    for c in columns {
        let (col, Some(seq)) = (&c.name, &c.sequence) else {
            continue;
        };
        let max: Option<i64> = tx
            .query_one(&format!("SELECT MAX(\"{col}\")::BIGINT FROM {table}"), &[])
            .await?
            .get(0);
        let high = max.unwrap_or(0).max(sqlite_seq.unwrap_or(0));
        if high > 0 {
            tx.execute(
                "SELECT setval($1::TEXT::regclass, $2, true)",
                &[&seq, &high],
            )
            .await?;
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `1.5 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The counts of a report, `what → rows`, across stores (for tests and summaries).
pub fn totals(report: &MigrateReport) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for (store, tables) in &report.stores {
        for (what, n) in tables {
            m.insert(format!("{store}/{what}"), *n);
        }
    }
    m
}
