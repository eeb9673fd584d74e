//! [`EventQueue`] on PostgreSQL (cluster mode): the asynchronous invocations of every node
//! in one table, `events_events`, with the per-function settings, the stored synchronous
//! results and the backlog counts beside it.
//!
//! Several nodes claim from the queue at once. A claim locks the due rows it takes with
//! `FOR UPDATE SKIP LOCKED` and sets their lease in the same statement, so two nodes never
//! get the same event while its lease holds; a dead node's events come back when their
//! lease runs out. Idempotency keys are a unique index: of two nodes enqueueing one key
//! at once, exactly one stores an event and the other answers [`Enqueued::Duplicate`].

use crate::backlog::{Backlog, BacklogLimit};
use crate::events::{Enqueued, EventQueue, EventUpdate, StoredResult};
use crate::{BacklogUsage, Result, StoreError};
use nimbus_core::{AsyncEvent, EventInvokeConfig, EventStatus};
use nimbus_pg::types::ToSql;
use nimbus_pg::{Client, Migration, Pg, PgError, Row, Transaction};
use std::collections::BTreeMap;

/// Maps `tokio-postgres` and pool errors into [`StoreError::Postgres`].
pub(crate) trait PgResultExt<T> {
    fn db(self) -> Result<T>;
}

impl<T, E: Into<PgError>> PgResultExt<T> for std::result::Result<T, E> {
    fn db(self) -> Result<T> {
        self.map_err(|e| StoreError::Postgres(e.into()))
    }
}

/// Statements through the connection's cache of prepared statements: a statement is
/// parsed once per connection, then each use is one round trip.
pub(crate) trait Cached {
    async fn q(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, PgError>;
    async fn q_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, PgError>;
    async fn q_one(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, PgError>;
    async fn x(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError>;
}

macro_rules! cached {
    ($t:ty) => {
        impl Cached for $t {
            async fn q(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Vec<Row>, PgError> {
                let st = self.prepare_cached(sql).await?;
                self.query(&st, params).await.map_err(PgError::from)
            }
            async fn q_opt(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Option<Row>, PgError> {
                let st = self.prepare_cached(sql).await?;
                self.query_opt(&st, params).await.map_err(PgError::from)
            }
            async fn q_one(
                &self,
                sql: &str,
                params: &[&(dyn ToSql + Sync)],
            ) -> Result<Row, PgError> {
                let st = self.prepare_cached(sql).await?;
                self.query_one(&st, params).await.map_err(PgError::from)
            }
            async fn x(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, PgError> {
                let st = self.prepare_cached(sql).await?;
                self.execute(&st, params).await.map_err(PgError::from)
            }
        }
    };
}
cached!(Client);
cached!(Transaction<'_>);

/// Runs `f` in a transaction: committed when it returns `Ok`, rolled back on any error
/// (a [`StoreError::Full`] or `Conflict` included, as the SQLite stores roll back). A
/// deadlock or serialization failure between nodes runs `f` again (a few times).
pub(crate) fn in_tx<T>(pg: &Pg, f: impl AsyncFn(&Transaction<'_>) -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        let r = pg.block_on(async {
            let mut c = pg.client().await?;
            let tx = c.transaction().await.db()?;
            let out = f(&tx).await?;
            tx.commit().await.db()?;
            Ok(out)
        });
        match r {
            Err(StoreError::Postgres(e))
                if tries < 5 && matches!(e.code(), Some("40001" | "40P01")) =>
            {
                tries += 1;
                tracing::debug!(error = %e, tries, "PostgreSQL transaction retried");
            }
            other => return other,
        }
    }
}

/// Runs `f` on a pooled connection (single statements, each committed on its own).
pub(crate) fn with_client<T>(pg: &Pg, f: impl AsyncFnOnce(&Client) -> Result<T>) -> Result<T> {
    pg.block_on(async {
        let c = pg.client().await?;
        f(&c).await
    })
}

/// The backlog counts of table `table` (`events_backlog`, `queues_backlog`): two reads.
pub(crate) fn backlog_usage(pg: &Pg, table: &str, limit: BacklogLimit) -> Result<BacklogUsage> {
    with_client(pg, async |c| {
        let owners: Vec<(String, u64)> = c
            .q(
                &format!(
                    "SELECT owner, items FROM {table} WHERE items > 0 ORDER BY items DESC, owner"
                ),
                &[],
            )
            .await
            .db()?
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
            .collect();
        let total: i64 = c
            .q_one(
                &format!("SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM {table}"),
                &[],
            )
            .await
            .db()?
            .get(0);
        Ok(BacklogUsage {
            largest_owner: owners.first().cloned(),
            owners,
            total_bytes: total.max(0) as u64,
            limit,
        })
    })
}

const MIGRATIONS: &[Migration] = &[Migration::breaking(
    "
CREATE TABLE events_events (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    id              TEXT PRIMARY KEY NOT NULL,
    function        TEXT NOT NULL,
    qualifier       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        BIGINT NOT NULL,
    created_ms      BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    last_error      TEXT,
    result          TEXT,
    idempotency_key TEXT,
    finished_ms     BIGINT,
    trace           TEXT,
    \"trigger\"     TEXT
);
CREATE INDEX events_events_due ON events_events(next_attempt_ms, seq)
    WHERE status IN ('pending', 'running');
CREATE INDEX events_events_by_function ON events_events(function, created_ms);
CREATE UNIQUE INDEX events_events_idempotency ON events_events(function, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE events_invoke_configs (
    function TEXT PRIMARY KEY NOT NULL,
    config   TEXT NOT NULL
);
CREATE TABLE events_sync_results (
    function   TEXT NOT NULL,
    key        TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    request_id TEXT NOT NULL,
    version    TEXT NOT NULL,
    body       BYTEA NOT NULL,
    PRIMARY KEY (function, key)
);
CREATE INDEX events_sync_results_age ON events_sync_results(created_ms);
-- Unfinished (pending or running) events per function, for the backlog limit; kept by
-- triggers in the transactions that change the events (see crate::backlog).
CREATE TABLE events_backlog (
    owner TEXT PRIMARY KEY NOT NULL,
    items BIGINT NOT NULL,
    bytes BIGINT NOT NULL
);
CREATE FUNCTION events_backlog_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.status IN ('pending', 'running') THEN
        UPDATE events_backlog SET items = items - 1, bytes = bytes - octet_length(OLD.payload)
            WHERE owner = OLD.function;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.status IN ('pending', 'running') THEN
        INSERT INTO events_backlog (owner, items, bytes)
            VALUES (NEW.function, 1, octet_length(NEW.payload))
            ON CONFLICT (owner) DO UPDATE SET items = events_backlog.items + 1,
                bytes = events_backlog.bytes + EXCLUDED.bytes;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER events_backlog_add_remove AFTER INSERT OR DELETE ON events_events
    FOR EACH ROW EXECUTE FUNCTION events_backlog_count();
CREATE TRIGGER events_backlog_status AFTER UPDATE OF status ON events_events
    FOR EACH ROW
    WHEN ((OLD.status IN ('pending', 'running')) IS DISTINCT FROM (NEW.status IN ('pending', 'running')))
    EXECUTE FUNCTION events_backlog_count();
",
),
    // The node holding each claim: a restarted node takes back its previous run's at once.
    Migration::additive("ALTER TABLE events_events ADD COLUMN claimed_by TEXT;")];

const COLUMNS: &str =
    "id, function, qualifier, payload, status, attempts, created_ms, next_attempt_ms, \
     last_error, result, idempotency_key, trace, \"trigger\"";

/// [`COLUMNS`] of the table aliased `e`.
const E_COLUMNS: &str =
    "e.id, e.function, e.qualifier, e.payload, e.status, e.attempts, e.created_ms, \
     e.next_attempt_ms, e.last_error, e.result, e.idempotency_key, e.trace, e.\"trigger\"";

fn decode(r: &Row) -> AsyncEvent {
    let status: String = r.get(4);
    AsyncEvent {
        id: r.get(0),
        function: r.get(1),
        qualifier: r.get(2),
        payload: r.get(3),
        status: EventStatus::parse(&status).unwrap_or(EventStatus::Pending),
        attempts: r.get::<_, i64>(5) as u32,
        created_ms: r.get(6),
        next_attempt_ms: r.get(7),
        last_error: r.get(8),
        result: r.get(9),
        idempotency_key: r.get(10),
        trace: r.get(11),
        trigger: r.get(12),
    }
}

/// [`EventQueue`] on PostgreSQL, shared by every node of a cluster.
///
/// Differences from [`crate::SqliteEventQueue`], all for several nodes on one database:
/// - [`EventQueue::requeue_running`] only requeues events whose lease has run out: the
///   other running events belong to live nodes.
/// - The backlog's bound per function is exact (enqueues to one function take turns on
///   its count row); the bound on bytes across functions may be passed by what nodes
///   enqueue to different functions at the same instant.
pub struct PgEventQueue {
    pg: Pg,
    limit: BacklogLimit,
    /// This node's id, written on its claims ([`PgEventQueue::with_node`]).
    node: Option<String>,
}

impl PgEventQueue {
    /// Brings the `events` schema up to date; no backlog limit.
    pub fn open(pg: &Pg) -> Result<Self> {
        pg.migrate("events", MIGRATIONS)?;
        Ok(Self {
            pg: pg.clone(),
            limit: BacklogLimit::UNLIMITED,
            node: None,
        })
    }

    /// Claims name `node`, and [`EventQueue::requeue_running`] also takes back the
    /// claims a previous run of the same node left (it is restarting: nobody else holds
    /// them), instead of waiting for their leases to end.
    pub fn with_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }

    /// Bounds the unfinished events per function and their bytes across functions:
    /// [`EventQueue::enqueue`] beyond them is [`StoreError::Full`].
    pub fn with_limit(mut self, limit: BacklogLimit) -> Self {
        self.limit = limit;
        self
    }
}

impl EventQueue for PgEventQueue {
    fn backlog(&self) -> Result<BacklogUsage> {
        backlog_usage(&self.pg, "events_backlog", self.limit)
    }

    fn enqueue(&self, ev: &AsyncEvent, idempotency_window_ms: i64) -> Result<Enqueued> {
        let bytes = ev.payload.len() as u64;
        in_tx(&self.pg, async |tx| {
            // Twice at most: a concurrent enqueue of the same key may commit between our
            // look and our insert; the second look finds it.
            for _ in 0..3 {
                if let Some(key) = &ev.idempotency_key {
                    let existing = tx
                        .q_opt(
                            "SELECT id, created_ms FROM events_events
                             WHERE function = $1 AND idempotency_key = $2 FOR UPDATE",
                            &[&ev.function, key],
                        )
                        .await
                        .db()?;
                    if let Some(r) = existing {
                        let (id, created): (String, i64) = (r.get(0), r.get(1));
                        if created >= ev.created_ms - idempotency_window_ms {
                            return Ok(Enqueued::Duplicate(id));
                        }
                        // Outside the window: the key may be used again.
                        tx.x(
                            "UPDATE events_events SET idempotency_key = NULL WHERE id = $1",
                            &[&id],
                        )
                        .await
                        .db()?;
                    }
                }
                self.limit
                    .admit_pg(
                        tx,
                        "events_backlog",
                        &ev.function,
                        1,
                        bytes,
                        Backlog::AsyncEvents,
                    )
                    .await?;
                let n = tx
                    .x(
                        &format!(
                            "INSERT INTO events_events ({COLUMNS})
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                             ON CONFLICT (function, idempotency_key)
                                 WHERE idempotency_key IS NOT NULL DO NOTHING"
                        ),
                        &[
                            &ev.id,
                            &ev.function,
                            &ev.qualifier,
                            &ev.payload,
                            &ev.status.as_str(),
                            &i64::from(ev.attempts),
                            &ev.created_ms,
                            &ev.next_attempt_ms,
                            &ev.last_error,
                            &ev.result,
                            &ev.idempotency_key,
                            &ev.trace,
                            &ev.trigger,
                        ],
                    )
                    .await
                    .db()?;
                if n == 1 {
                    return Ok(Enqueued::New);
                }
            }
            Err(StoreError::Conflict(format!(
                "idempotency key of event {} keeps being taken by concurrent requests",
                ev.id
            )))
        })
    }

    fn claim_due(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<AsyncEvent>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        in_tx(&self.pg, async |tx| {
            let rows = tx
                .q(
                    &format!(
                        "WITH due AS (
                             SELECT id, next_attempt_ms AS due_ms, seq FROM events_events
                             WHERE status IN ('pending', 'running') AND next_attempt_ms <= $1
                             ORDER BY next_attempt_ms, seq LIMIT $2
                             FOR UPDATE SKIP LOCKED)
                         UPDATE events_events e SET status = 'running', next_attempt_ms = $3,
                             claimed_by = $4
                         FROM due WHERE e.id = due.id
                         RETURNING {E_COLUMNS}, due.due_ms, due.seq"
                    ),
                    &[&now_ms, &limit, &(now_ms + lease_ms), &self.node],
                )
                .await
                .db()?;
            let mut claimed: Vec<(i64, i64, AsyncEvent)> = rows
                .iter()
                .map(|r| {
                    let mut ev = decode(r);
                    // As SQLite returns them: running, with the time they fell due.
                    ev.next_attempt_ms = r.get(13);
                    ev.status = EventStatus::Running;
                    (r.get::<_, i64>(13), r.get::<_, i64>(14), ev)
                })
                .collect();
            claimed.sort_by_key(|c| (c.0, c.1));
            Ok(claimed.into_iter().map(|c| c.2).collect())
        })
    }

    fn finish(&self, id: &str, update: &EventUpdate, now_ms: i64) -> Result<()> {
        let n = with_client(&self.pg, async |c| {
            let n = match update {
                EventUpdate::Succeeded { result } => {
                    c.x(
                        "UPDATE events_events SET status = 'succeeded', attempts = attempts + 1,
                             result = $2, finished_ms = $3 WHERE id = $1",
                        &[&id, result, &now_ms],
                    )
                    .await
                }
                EventUpdate::Retry {
                    error,
                    next_attempt_ms,
                    counted,
                } => {
                    c.x(
                        "UPDATE events_events SET status = 'pending', attempts = attempts + $4,
                             last_error = $2, next_attempt_ms = $3 WHERE id = $1",
                        &[&id, error, next_attempt_ms, &i64::from(*counted)],
                    )
                    .await
                }
                EventUpdate::Dead { error } => {
                    c.x(
                        "UPDATE events_events SET status = 'dead', attempts = attempts + 1,
                             last_error = $2, finished_ms = $3 WHERE id = $1",
                        &[&id, error, &now_ms],
                    )
                    .await
                }
                EventUpdate::Expired => {
                    c.x(
                        "UPDATE events_events SET status = 'expired',
                             last_error = COALESCE(last_error, 'maximum event age exceeded'),
                             finished_ms = $2 WHERE id = $1",
                        &[&id, &now_ms],
                    )
                    .await
                }
            };
            n.db()
        })?;
        if n == 0 {
            return Err(StoreError::NotFound(format!("event {id} not found")));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<AsyncEvent> {
        with_client(&self.pg, async |c| {
            let r = c
                .q_opt(
                    &format!("SELECT {COLUMNS} FROM events_events WHERE id = $1"),
                    &[&id],
                )
                .await
                .db()?;
            r.map(|r| decode(&r))
                .ok_or_else(|| StoreError::NotFound(format!("event {id} not found")))
        })
    }

    fn list(
        &self,
        function: &str,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Result<Vec<AsyncEvent>> {
        let status = status.map(|s| s.as_str());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        with_client(&self.pg, async |c| {
            let rows = c
                .q(
                    &format!(
                        "SELECT {COLUMNS} FROM events_events
                         WHERE function = $1 AND ($2::TEXT IS NULL OR status = $2)
                         ORDER BY created_ms DESC, id LIMIT $3"
                    ),
                    &[&function, &status, &limit],
                )
                .await
                .db()?;
            Ok(rows.iter().map(decode).collect())
        })
    }

    fn counts(&self, function: &str) -> Result<BTreeMap<String, u64>> {
        with_client(&self.pg, async |c| {
            let rows = c
                .q(
                    "SELECT status, COUNT(*) FROM events_events WHERE function = $1 GROUP BY status",
                    &[&function],
                )
                .await
                .db()?;
            Ok(rows
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn next_due_ms(&self) -> Result<Option<i64>> {
        with_client(&self.pg, async |c| {
            Ok(c.q_one(
                "SELECT MIN(next_attempt_ms) FROM events_events
                 WHERE status IN ('pending', 'running')",
                &[],
            )
            .await
            .db()?
            .get(0))
        })
    }

    fn put_config(&self, function: &str, config: Option<&EventInvokeConfig>) -> Result<()> {
        let json = config
            .map(|c| {
                serde_json::to_string(c).map_err(|e| {
                    StoreError::Corrupt(format!("encoding the event invoke config: {e}"))
                })
            })
            .transpose()?;
        with_client(&self.pg, async |c| {
            match &json {
                Some(json) => c
                    .x(
                        "INSERT INTO events_invoke_configs (function, config) VALUES ($1, $2)
                         ON CONFLICT (function) DO UPDATE SET config = EXCLUDED.config",
                        &[&function, json],
                    )
                    .await
                    .db()?,
                None => c
                    .x(
                        "DELETE FROM events_invoke_configs WHERE function = $1",
                        &[&function],
                    )
                    .await
                    .db()?,
            };
            Ok(())
        })
    }

    fn config(&self, function: &str) -> Result<Option<EventInvokeConfig>> {
        let json: Option<String> = with_client(&self.pg, async |c| {
            Ok(c.q_opt(
                "SELECT config FROM events_invoke_configs WHERE function = $1",
                &[&function],
            )
            .await
            .db()?
            .map(|r| r.get(0)))
        })?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| {
                StoreError::Corrupt(format!("stored event invoke config of {function}: {e}"))
            })
        })
        .transpose()
    }

    fn prune(&self, keep: usize) -> Result<usize> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        with_client(&self.pg, async |c| {
            Ok(c.x(
                "DELETE FROM events_events WHERE id IN (
                     SELECT id FROM (
                         SELECT id, ROW_NUMBER() OVER (
                             PARTITION BY function ORDER BY finished_ms DESC NULLS LAST) AS n
                         FROM events_events WHERE status IN ('succeeded', 'dead', 'expired')) t
                     WHERE n > $1)",
                &[&keep],
            )
            .await
            .db()? as usize)
        })
    }

    fn forget_function(&self, function: &str) -> Result<()> {
        in_tx(&self.pg, async |tx| {
            for table in [
                "events_events",
                "events_invoke_configs",
                "events_sync_results",
            ] {
                tx.x(
                    &format!("DELETE FROM {table} WHERE function = $1"),
                    &[&function],
                )
                .await
                .db()?;
            }
            tx.x("DELETE FROM events_backlog WHERE owner = $1", &[&function])
                .await
                .db()?;
            Ok(())
        })
    }

    fn sync_result(
        &self,
        function: &str,
        key: &str,
        since_ms: i64,
    ) -> Result<Option<StoredResult>> {
        with_client(&self.pg, async |c| {
            Ok(c.q_opt(
                "SELECT request_id, version, body FROM events_sync_results
                 WHERE function = $1 AND key = $2 AND created_ms >= $3",
                &[&function, &key, &since_ms],
            )
            .await
            .db()?
            .map(|r| StoredResult {
                request_id: r.get(0),
                version: r.get(1),
                body: r.get(2),
            }))
        })
    }

    fn put_sync_result(
        &self,
        function: &str,
        key: &str,
        result: &StoredResult,
        now_ms: i64,
        expire_before_ms: i64,
    ) -> Result<()> {
        in_tx(&self.pg, async |tx| {
            tx.x(
                "INSERT INTO events_sync_results (function, key, created_ms, request_id, version, body)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (function, key) DO UPDATE SET created_ms = EXCLUDED.created_ms,
                     request_id = EXCLUDED.request_id, version = EXCLUDED.version,
                     body = EXCLUDED.body",
                &[
                    &function,
                    &key,
                    &now_ms,
                    &result.request_id,
                    &result.version,
                    &result.body,
                ],
            )
            .await
            .db()?;
            tx.x(
                "DELETE FROM events_sync_results WHERE created_ms < $1",
                &[&expire_before_ms],
            )
            .await
            .db()?;
            Ok(())
        })
    }

    /// Unlike SQLite's (one server per data directory), only events whose lease has run
    /// out (`next_attempt_ms <= now_ms`) or that this node's previous run claimed
    /// ([`PgEventQueue::with_node`]) become pending: the other running events are held by
    /// live nodes of the cluster. Those of a dead node come back as their leases end
    /// ([`EventQueue::claim_due`] takes them even without this call).
    fn requeue_running(&self, now_ms: i64) -> Result<usize> {
        with_client(&self.pg, async |c| {
            Ok(c.x(
                "UPDATE events_events SET status = 'pending', next_attempt_ms = $1,
                     claimed_by = NULL
                 WHERE status = 'running' AND (next_attempt_ms <= $1 OR claimed_by = $2)",
                &[&now_ms, &self.node],
            )
            .await
            .db()? as usize)
        })
    }

    fn release_claims_of(&self, nodes: &[String], now_ms: i64) -> Result<usize> {
        if nodes.is_empty() {
            return Ok(0);
        }
        with_client(&self.pg, async |c| {
            Ok(c.x(
                "UPDATE events_events SET status = 'pending', next_attempt_ms = $1,
                     claimed_by = NULL
                 WHERE status = 'running' AND claimed_by = ANY($2)",
                &[&now_ms, &nodes],
            )
            .await
            .db()? as usize)
        })
    }

    fn redrive(&self, function: &str, id: &str, now_ms: i64) -> Result<AsyncEvent> {
        in_tx(&self.pg, async |tx| {
            let ev = tx
                .q_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM events_events WHERE id = $1 AND function = $2
                         FOR UPDATE"
                    ),
                    &[&id, &function],
                )
                .await
                .db()?
                .map(|r| decode(&r))
                .ok_or_else(|| {
                    StoreError::NotFound(format!("event {id} of {function} not found"))
                })?;
            if !matches!(ev.status, EventStatus::Dead | EventStatus::Expired) {
                return Err(StoreError::Conflict(format!(
                    "event {id} is {}: only dead or expired events can be redriven",
                    ev.status.as_str()
                )));
            }
            self.limit
                .admit_pg(
                    tx,
                    "events_backlog",
                    function,
                    1,
                    ev.payload.len() as u64,
                    Backlog::AsyncEvents,
                )
                .await?;
            // The backlog trigger counts the event again (unfinished once more).
            let r = tx
                .q_one(
                    &format!(
                        "UPDATE events_events SET status = 'pending', attempts = 0,
                             created_ms = $2, next_attempt_ms = $2, last_error = NULL,
                             result = NULL, finished_ms = NULL
                         WHERE id = $1 RETURNING {COLUMNS}"
                    ),
                    &[&id, &now_ms],
                )
                .await
                .db()?;
            Ok(decode(&r))
        })
    }

    // Drain: give back claims not started (see the trait).
    fn give_back(&self, claims: &[(String, i64)], now_ms: i64) -> Result<usize> {
        if claims.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = claims.iter().map(|c| c.0.as_str()).collect();
        let leases: Vec<i64> = claims.iter().map(|c| c.1).collect();
        with_client(&self.pg, async |c| {
            Ok(c.x(
                "UPDATE events_events e SET status = 'pending', next_attempt_ms = $3
                 FROM unnest($1::text[], $2::bigint[]) AS g(id, lease_ms)
                 WHERE e.id = g.id AND e.status = 'running' AND e.next_attempt_ms = g.lease_ms",
                &[&ids, &leases, &now_ms],
            )
            .await
            .db()? as usize)
        })
    }
}
