//! Bounds on the durable queues (`events.db`'s asynchronous events, `queues.db`'s
//! messages): without them a caller allowed to invoke asynchronously or to send messages
//! could fill the disk.
//!
//! Each database keeps a `backlog` table — one row per owner (function or queue) with
//! the number of items it holds and their bytes — maintained by triggers on the item
//! table, in the same transactions as the items themselves, so the counts can never drift
//! from the rows (a `kill -9` included) and a check costs two indexed reads, not a scan.

use crate::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// How much one durable queue may hold. New items beyond either bound are refused with
/// [`StoreError::Full`]; items already stored are never dropped to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimit {
    /// Items one owner (a function's unfinished async events, a queue's messages) may hold.
    pub per_owner: u64,
    /// Bytes of payload all owners together may hold.
    pub total_bytes: u64,
}

impl BacklogLimit {
    pub const UNLIMITED: BacklogLimit = BacklogLimit {
        per_owner: u64::MAX,
        total_bytes: u64::MAX,
    };

    /// Refuses adding `items` items of `bytes` bytes to `owner` when that would pass a
    /// bound. `what` names the items and the flag that sets the bound, for the message.
    pub(crate) fn admit(
        &self,
        db: &Connection,
        owner: &str,
        items: u64,
        bytes: u64,
        what: Backlog,
    ) -> Result<()> {
        if *self == Self::UNLIMITED {
            return Ok(());
        }
        let held: i64 = db
            .query_row(
                "SELECT items FROM backlog WHERE owner = ?1",
                params![owner],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let total: i64 = db.query_row("SELECT COALESCE(SUM(bytes), 0) FROM backlog", [], |r| {
            r.get(0)
        })?;
        self.judge(owner, held, total, items, bytes, what)
    }

    /// [`BacklogLimit::admit`] in a PostgreSQL transaction, on the counts table `table`
    /// (`events_backlog`, `queues_backlog`). The owner's count row is locked (`FOR UPDATE`)
    /// until the transaction ends, so nodes adding to one owner take turns and its bound
    /// holds exactly; the bytes across owners are read unlocked.
    pub(crate) async fn admit_pg(
        &self,
        tx: &nimbus_pg::Transaction<'_>,
        table: &str,
        owner: &str,
        items: u64,
        bytes: u64,
        what: Backlog,
    ) -> Result<()> {
        if *self == Self::UNLIMITED {
            return Ok(());
        }
        let pg = |e| StoreError::Postgres(nimbus_pg::PgError::from(e));
        tx.execute(
            &format!("INSERT INTO {table} (owner, items, bytes) VALUES ($1, 0, 0) ON CONFLICT (owner) DO NOTHING"),
            &[&owner],
        )
        .await
        .map_err(pg)?;
        let held: i64 = tx
            .query_one(
                &format!("SELECT items FROM {table} WHERE owner = $1 FOR UPDATE"),
                &[&owner],
            )
            .await
            .map_err(pg)?
            .get(0);
        let total: i64 = tx
            .query_one(
                &format!("SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM {table}"),
                &[],
            )
            .await
            .map_err(pg)?
            .get(0);
        self.judge(owner, held, total, items, bytes, what)
    }

    /// Refuses when `held` items of `owner` and `total` bytes of all leave no room.
    fn judge(
        &self,
        owner: &str,
        held: i64,
        total: i64,
        items: u64,
        bytes: u64,
        what: Backlog,
    ) -> Result<()> {
        let names = what.names();
        if (held.max(0) as u64).saturating_add(items) > self.per_owner {
            return Err(StoreError::Full(format!(
                "{} {owner} already holds {held} {} (the limit is {}, {}); retry once some are processed",
                names.owner, names.items, self.per_owner, names.count_flag
            )));
        }
        if (total.max(0) as u64).saturating_add(bytes) > self.total_bytes {
            return Err(StoreError::Full(format!(
                "stored {} total {total} bytes (the limit is {} bytes, {}); retry once some are processed",
                names.items, self.total_bytes, names.bytes_flag
            )));
        }
        Ok(())
    }
}

/// How full a durable queue is, against its [`BacklogLimit`] (for health checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BacklogUsage {
    /// The owner (function or queue) holding the most items, and how many.
    pub largest_owner: Option<(String, u64)>,
    /// Every owner holding items, with how many, fullest first (`nimbus_async_backlog`,
    /// `nimbus_queue_…` gauges).
    pub owners: Vec<(String, u64)>,
    /// Bytes of payload all owners together hold.
    pub total_bytes: u64,
    pub limit: BacklogLimit,
}

impl BacklogUsage {
    /// The fullest of the two bounds, as a fraction (0 when unlimited).
    pub fn fill(&self) -> f64 {
        let items = self.largest_owner.as_ref().map_or(0, |(_, n)| *n);
        let frac = |used: u64, limit: u64| {
            if limit == u64::MAX || limit == 0 {
                0.0
            } else {
                used as f64 / limit as f64
            }
        };
        frac(items, self.limit.per_owner).max(frac(self.total_bytes, self.limit.total_bytes))
    }
}

/// Reads every owner holding items (fullest first) and the total bytes: two reads of the
/// `backlog` table, one row per function or queue.
pub(crate) fn usage(db: &Connection, limit: BacklogLimit) -> Result<BacklogUsage> {
    let mut stmt = db.prepare_cached(
        "SELECT owner, items FROM backlog WHERE items > 0 ORDER BY items DESC, owner",
    )?;
    let owners = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let total: i64 = db.query_row("SELECT COALESCE(SUM(bytes), 0) FROM backlog", [], |r| {
        r.get(0)
    })?;
    Ok(BacklogUsage {
        largest_owner: owners.first().cloned(),
        owners,
        total_bytes: total.max(0) as u64,
        limit,
    })
}

/// Which durable queue a [`BacklogLimit`] bounds (for messages).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backlog {
    AsyncEvents,
    QueueMessages,
}

/// How messages name a backlog's owners and items, and the flags that bound it.
struct Names {
    owner: &'static str,
    items: &'static str,
    count_flag: &'static str,
    bytes_flag: &'static str,
}

impl Backlog {
    fn names(self) -> Names {
        match self {
            Backlog::AsyncEvents => Names {
                owner: "function",
                items: "unfinished asynchronous events",
                count_flag: "--max-async-events",
                bytes_flag: "--max-async-bytes",
            },
            Backlog::QueueMessages => Names {
                owner: "queue",
                items: "messages",
                count_flag: "--max-queue-messages",
                bytes_flag: "--max-queue-bytes",
            },
        }
    }
}

/// Backend-parameterised store tests: each test is a function of a [`testing::Backend`]
/// and runs on SQLite and on PostgreSQL ([`testing::backend_tests`]).
#[cfg(test)]
pub(crate) mod testing {
    use super::BacklogLimit;
    use crate::postgres::events::PgEventQueue;
    use crate::postgres::queues::PgQueueStore;
    use crate::{EventQueue, QueueStore, SqliteEventQueue, SqliteQueueStore};

    /// Where a test's stores keep their data: every store opened on it sees the same data
    /// (opening again is a restart).
    pub(crate) enum Backend {
        Sqlite(tempfile::TempDir),
        Postgres(nimbus_pg::testing::TestDb),
    }

    impl Backend {
        pub(crate) fn sqlite() -> Self {
            Backend::Sqlite(tempfile::tempdir().unwrap())
        }

        pub(crate) fn postgres() -> Self {
            Backend::Postgres(nimbus_pg::testing::TestDb::new("store"))
        }

        /// A new, empty backend of the same kind.
        pub(crate) fn fresh(&self) -> Self {
            match self {
                Backend::Sqlite(_) => Self::sqlite(),
                Backend::Postgres(_) => Self::postgres(),
            }
        }

        pub(crate) fn events(&self) -> Box<dyn EventQueue> {
            self.events_with(BacklogLimit::UNLIMITED)
        }

        pub(crate) fn events_with(&self, limit: BacklogLimit) -> Box<dyn EventQueue> {
            match self {
                Backend::Sqlite(d) => {
                    Box::new(SqliteEventQueue::open(d.path()).unwrap().with_limit(limit))
                }
                Backend::Postgres(db) => {
                    Box::new(PgEventQueue::open(&db.pg).unwrap().with_limit(limit))
                }
            }
        }

        pub(crate) fn queues(&self) -> Box<dyn QueueStore> {
            self.queues_with(BacklogLimit::UNLIMITED)
        }

        pub(crate) fn queues_with(&self, limit: BacklogLimit) -> Box<dyn QueueStore> {
            match self {
                Backend::Sqlite(d) => {
                    Box::new(SqliteQueueStore::open(d.path()).unwrap().with_limit(limit))
                }
                Backend::Postgres(db) => {
                    Box::new(PgQueueStore::open(&db.pg).unwrap().with_limit(limit))
                }
            }
        }
    }

    /// Instantiates each named test function (`fn name(b: &Backend)` in the enclosing
    /// module) once per backend: `sqlite::name` and `postgres::name`.
    macro_rules! backend_tests {
        ($($name:ident),* $(,)?) => {
            mod sqlite {
                $(#[test]
                fn $name() {
                    super::$name(&$crate::backlog::testing::Backend::sqlite())
                })*
            }
            mod postgres {
                $(#[test]
                fn $name() {
                    super::$name(&$crate::backlog::testing::Backend::postgres())
                })*
            }
        };
    }
    pub(crate) use backend_tests;
}
