//! PostgreSQL for Nimbus's stores in cluster mode (`nimbus serve --database postgres://…`):
//! one connection pool per process ([`Pg`]), versioned schema migrations per store
//! ([`Pg::migrate`]), and the bridge that lets the stores' blocking traits run
//! `tokio-postgres` queries ([`Pg::block_on`]).
//!
//! The store traits are blocking (SQLite's calls are), and their callers run on Tokio's
//! workers as well as on blocking threads. `tokio-postgres` is asynchronous, and a Tokio
//! runtime cannot be entered from inside another. So the pool and its connections live on
//! a small runtime of their own (threads `nimbus-pg`, which drive the sockets and timers),
//! and a store method waits for its queries with a plain executor on the calling thread,
//! as it waits for SQLite's lock and fsync today. A query costs the caller one round trip
//! to the server and no thread hand-off on the caller's side.
//!
//! Used by the store crates (each keeps its PostgreSQL backend in `store/postgres/`), the
//! server (which opens one [`Pg`] for all of them) and their tests ([`testing`]).

mod migrate;
mod retry;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use migrate::{Migration, SCHEMA_TABLE};
pub use retry::{Params, Tx, ATTEMPTS};
pub use tokio_postgres::{types, Row};

use nimbus_metrics::WriteTimer;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio_postgres::types::ToSql;
use tokio_postgres::ToStatement;

/// The name the commits and sizes of the database are reported under
/// (`nimbus_store_write_seconds{db="postgres"}`): every store shares the one database, so
/// its commits share one WAL and one latency.
pub const METRIC_DB: &str = "postgres";

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("cannot reach PostgreSQL at {target}: {message}")]
    Connect { target: String, message: String },
    #[error("PostgreSQL: {}", query_message(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("PostgreSQL connection pool: {0}")]
    Pool(String),
    #[error("{0}")]
    Schema(String),
    #[error("cannot start the PostgreSQL client runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

impl PgError {
    /// The SQLSTATE of a server error (`23505`: unique violation, …).
    pub fn code(&self) -> Option<&str> {
        match self {
            PgError::Query(e) => e.code().map(|c| c.code()),
            _ => None,
        }
    }

    /// A unique or primary key violation (`23505`).
    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some("23505")
    }

    /// The server, the network or the pool failed, not the statement: the work may
    /// succeed when retried (on another connection, after PostgreSQL is back).
    pub fn is_transient(&self) -> bool {
        match self {
            PgError::Connect { .. } | PgError::Pool(_) => true,
            PgError::Query(e) => {
                e.is_closed()
                    || e.as_db_error().is_none()
                    || matches!(
                        e.code().map(|c| c.code()),
                        // serialization failure, deadlock, lock timeout, admin shutdown,
                        // cannot connect now
                        Some("40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03")
                    )
            }
            _ => false,
        }
    }
}

pub type Result<T, E = PgError> = std::result::Result<T, E>;

/// A query error's text: the server's own message (and detail) when it sent one, else
/// tokio-postgres's (a closed connection, a type mismatch). `tokio_postgres::Error`'s
/// `Display` alone says only "db error".
pub(crate) fn query_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!("{} ({}): {detail}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => match std::error::Error::source(e) {
            Some(src) => format!("{e}: {src}"),
            None => e.to_string(),
        },
    }
}

/// Set on every new connection (see [`Pg::connect`]).
/// How long a connection may wait for the network before it fails (see [`Pg::connect`]).
const PARTITION_TIMEOUT: Duration = Duration::from_secs(10);

const LOCK_TIMEOUT: &str = "SET lock_timeout = '5s'; SET client_min_messages = warning";

/// Connection settings.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// `postgres://user[:password]@host[:port]/database[?options]`.
    pub url: String,
    /// Connections at most (default 16).
    pub max_connections: usize,
    /// How long a caller waits for a free connection or a new one (default 10 s).
    pub wait: Duration,
}

impl PgConfig {
    pub fn new(url: impl Into<String>) -> Self {
        PgConfig {
            url: url.into(),
            max_connections: 16,
            wait: Duration::from_secs(10),
        }
    }
}

/// The connection pool and the runtime that drives it. Cheap to clone.
#[derive(Clone)]
pub struct Pg {
    inner: Arc<Inner>,
}

struct Inner {
    pool: deadpool_postgres::Pool,
    /// Times the commits: [`Transaction::commit`] and [`Client::execute`].
    timer: WriteTimer,
    handle: tokio::runtime::Handle,
    /// Where the database is, without its password (for messages).
    target: String,
    /// Kept for the pool's connection tasks; shut down when the last [`Pg`] goes.
    _runtime: RuntimeGuard,
}

/// Shuts the runtime down in the background: dropping a runtime waits for its blocking
/// threads, which must not happen on an async thread.
struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("target", &self.inner.target)
            .finish()
    }
}

impl Pg {
    /// Opens the pool and checks that the server answers (one connection made now, so a
    /// wrong URL or a server that is down is reported at start, not on first use).
    pub fn connect(cfg: &PgConfig) -> Result<Pg> {
        let mut pg_config = tokio_postgres::Config::from_str(&cfg.url).map_err(|e| {
            PgError::Url(format!("{e} (expected postgres://user@host:port/database)"))
        })?;
        // A partition drops packets without a reset: without these, a statement sent into
        // it waits for TCP's retransmissions (about 15 minutes) and an idle connection
        // for keepalives (2 hours). Unless the URL says otherwise, a connection whose data
        // goes unacknowledged for 10 s, or that is idle and unanswered for 10 s + 3 × 2 s,
        // fails and is replaced.
        if pg_config.get_tcp_user_timeout().is_none() {
            pg_config.tcp_user_timeout(PARTITION_TIMEOUT);
        }
        if pg_config.get_keepalives_idle() == Duration::from_secs(2 * 60 * 60) {
            pg_config
                .keepalives_idle(PARTITION_TIMEOUT)
                .keepalives_interval(Duration::from_secs(2))
                .keepalives_retries(3);
        }
        let target = describe(&pg_config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nimbus-pg")
            .enable_all()
            .build()?;
        let manager = deadpool_postgres::Manager::from_config(
            pg_config,
            tokio_postgres::NoTls,
            deadpool_postgres::ManagerConfig {
                recycling_method: deadpool_postgres::RecyclingMethod::Fast,
            },
        );
        let pool = deadpool_postgres::Pool::builder(manager)
            .max_size(cfg.max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(cfg.wait))
            .create_timeout(Some(cfg.wait))
            .recycle_timeout(Some(cfg.wait))
            .post_create(deadpool_postgres::Hook::async_fn(|client, _| {
                Box::pin(async move {
                    // As SQLite's busy timeout: a statement waiting for a row another node
                    // holds gives up (SQLSTATE 55P03, transient) instead of waiting for ever
                    // behind a node that hangs inside its transaction.
                    client
                        .batch_execute(LOCK_TIMEOUT)
                        .await
                        .map_err(deadpool_postgres::HookError::Backend)
                })
            }))
            .build()
            .map_err(|e| PgError::Pool(e.to_string()))?;
        let pg = Pg {
            inner: Arc::new(Inner {
                pool,
                timer: WriteTimer::new(METRIC_DB),
                handle: runtime.handle().clone(),
                target,
                _runtime: RuntimeGuard(Some(runtime)),
            }),
        };
        pg.block_on(async {
            let c = pg.client().await?;
            c.simple_query("SELECT 1").await?;
            Ok::<_, PgError>(())
        })?;
        let weak: Weak<Inner> = Arc::downgrade(&pg.inner);
        nimbus_metrics::add_database_sizes(Box::new(move || {
            let inner = weak.upgrade()?;
            Some(Pg { inner }.component_sizes().unwrap_or_default())
        }));
        Ok(pg)
    }

    /// The bytes each component's tables take in this schema (`pg_total_relation_size`:
    /// table, indexes and TOAST), by component (`registry`, `events`, …: the components
    /// migrated here, whose tables are named `COMPONENT_…`).
    pub fn component_sizes(&self) -> Result<Vec<(String, u64)>> {
        self.with(async |c| {
            let rows = c
                .query(
                    "SELECT s.component, COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::BIGINT
                     FROM nimbus_schema s
                     JOIN pg_class c
                       ON c.relkind IN ('r', 'p')
                      AND c.relnamespace = current_schema()::regnamespace
                      AND starts_with(c.relname, s.component || '_')
                     GROUP BY s.component
                     ORDER BY s.component",
                    &[],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
                .collect())
        })
    }

    /// `host:port/database` (never the password).
    pub fn target(&self) -> &str {
        &self.inner.target
    }

    /// Runs `fut` to completion on the calling thread, with the pool's runtime as the
    /// context for what it spawns (new connections) and its timers. Blocks the thread for
    /// the queries' round trips, as a SQLite store blocks for its lock and fsync. Must not
    /// be called from the pool's own threads.
    pub fn block_on<F: Future>(&self, fut: F) -> F::Output {
        let _context = self.inner.handle.enter();
        futures_executor::block_on(fut)
    }

    /// A connection from the pool (back to the pool when dropped).
    pub async fn client(&self) -> Result<Client> {
        let conn = self.inner.pool.get().await.map_err(|e| match e {
            deadpool_postgres::PoolError::Backend(e) if e.as_db_error().is_none() => {
                PgError::Connect {
                    target: self.inner.target.clone(),
                    message: e.to_string(),
                }
            }
            deadpool_postgres::PoolError::Backend(e) => PgError::Query(e),
            other => PgError::Pool(other.to_string()),
        })?;
        Ok(Client {
            conn,
            timer: self.inner.timer.clone(),
        })
    }

    /// [`Pg::client`] for blocking code: a connection, then `f` on it.
    pub fn with<T>(&self, f: impl AsyncFnOnce(&mut Client) -> Result<T>) -> Result<T> {
        self.block_on(async {
            let mut c = self.client().await?;
            f(&mut c).await
        })
    }

    /// `f` in one transaction: committed when it returns `Ok`, rolled back otherwise.
    pub fn transaction<T>(&self, f: impl AsyncFnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.block_on(async {
            let mut c = self.client().await?;
            let tx = c.transaction().await?;
            let out = f(&tx).await?;
            tx.commit().await?;
            Ok(out)
        })
    }
}

/// A connection of the pool (back to the pool when dropped); everything of
/// `tokio_postgres::Client` through `Deref`. Its commits are timed
/// (`nimbus_store_write_seconds{db="postgres"}`): each [`Transaction::commit`], and each
/// [`Client::execute`] (a write statement outside a transaction, committed on its own).
pub struct Client {
    conn: deadpool_postgres::Object,
    timer: WriteTimer,
}

impl Client {
    /// Begins a transaction whose commit is timed.
    pub async fn transaction(&mut self) -> Result<Transaction<'_>, tokio_postgres::Error> {
        Ok(Transaction {
            tx: self.conn.transaction().await?,
            timer: &self.timer,
        })
    }

    /// Runs one statement in its own transaction, timed with its commit; the rows it
    /// changed.
    pub async fn execute<T: ?Sized + ToStatement>(
        &self,
        statement: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<u64, tokio_postgres::Error> {
        let t0 = Instant::now();
        let n = self.conn.execute(statement, params).await?;
        self.timer.observe(t0.elapsed());
        Ok(n)
    }
}

impl Deref for Client {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl DerefMut for Client {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

/// A transaction of a [`Client`]: rolled back when dropped without [`Transaction::commit`];
/// everything of `tokio_postgres::Transaction` through `Deref`.
pub struct Transaction<'a> {
    tx: deadpool_postgres::Transaction<'a>,
    timer: &'a WriteTimer,
}

impl Transaction<'_> {
    /// Commits, timing the commit.
    pub async fn commit(self) -> Result<(), tokio_postgres::Error> {
        let t0 = Instant::now();
        self.tx.commit().await?;
        self.timer.observe(t0.elapsed());
        Ok(())
    }

    /// Rolls back (as dropping it does, but waiting for the server).
    pub async fn rollback(self) -> Result<(), tokio_postgres::Error> {
        self.tx.rollback().await
    }
}

impl<'a> Deref for Transaction<'a> {
    type Target = deadpool_postgres::Transaction<'a>;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// `host:port/database` of a configuration.
fn describe(c: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match c.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", c.get_dbname().unwrap_or("postgres"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestDb;

    fn commits() -> u64 {
        nimbus_metrics::recent_store_writes()
            .into_iter()
            .find(|w| w.db == METRIC_DB)
            .map_or(0, |w| w.count)
    }

    #[test]
    fn commits_and_single_writes_are_timed() {
        let db = TestDb::new("timed");
        db.pg
            .with(async |c| {
                c.batch_execute("CREATE TABLE t (x BIGINT)").await?;
                Ok(())
            })
            .unwrap();
        let before = commits();
        db.pg
            .transaction(async |tx| {
                tx.execute("INSERT INTO t VALUES (1)", &[]).await?;
                Ok(())
            })
            .unwrap();
        // At least: the other tests of a `cargo test` process commit at the same time.
        assert!(commits() > before);
        let after_tx = commits();
        db.pg
            .with(async |c| {
                c.execute("INSERT INTO t VALUES (2)", &[]).await?;
                let tx = c.transaction().await?;
                tx.execute("INSERT INTO t VALUES (3)", &[]).await?;
                tx.rollback().await?;
                Ok(())
            })
            .unwrap();
        assert!(commits() > after_tx, "the single-statement write");
    }

    #[test]
    fn component_sizes_sum_each_components_tables() {
        let db = TestDb::new("sizes");
        db.pg
            .migrate(
                "alpha",
                &[Migration::breaking(
                    "CREATE TABLE alpha_things (id BIGINT PRIMARY KEY, body TEXT);
                     CREATE TABLE alpha_more (id BIGINT PRIMARY KEY)",
                )],
            )
            .unwrap();
        db.pg
            .migrate(
                "beta",
                &[Migration::breaking("CREATE TABLE beta_x (id BIGINT)")],
            )
            .unwrap();
        db.pg
            .with(async |c| {
                c.execute(
                    "INSERT INTO alpha_things SELECT g, repeat('x', 100) FROM generate_series(1, 1000) g",
                    &[],
                )
                .await?;
                Ok(())
            })
            .unwrap();
        let sizes = db.pg.component_sizes().unwrap();
        let names: Vec<&str> = sizes.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alpha", "beta"], "{sizes:?}");
        assert!(sizes[0].1 > 100_000, "{sizes:?}");
        // Served at each scrape while the pool lives.
        assert!(
            nimbus_metrics::database_sizes().contains(&sizes[0]),
            "{:?}",
            nimbus_metrics::database_sizes()
        );
    }
}
