//! The durable queue of asynchronous invocations (`DATA_DIR/events.db`, WAL,
//! `synchronous=FULL`: an event acknowledged with 202 survives `kill -9`), and the
//! per-function async settings.
//!
//! Delivery is at-least-once: a claimed event holds a lease; if the server dies before it
//! records the outcome, the lease runs out and the event is claimed again.

use crate::backlog::{Backlog, BacklogLimit};
use crate::db::Db;
use crate::sqlite::open_db;
use crate::{Result, StoreError};
use nimbus_core::{AsyncEvent, EventInvokeConfig, EventStatus};
use rusqlite::{params, OptionalExtension, Row};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE events (
    id              TEXT PRIMARY KEY NOT NULL,
    function        TEXT NOT NULL,
    qualifier       TEXT NOT NULL,
    payload         TEXT NOT NULL,
    status          TEXT NOT NULL,
    attempts        INTEGER NOT NULL,
    created_ms      INTEGER NOT NULL,
    next_attempt_ms INTEGER NOT NULL,
    last_error      TEXT,
    result          TEXT,
    idempotency_key TEXT,
    finished_ms     INTEGER
) STRICT;
CREATE INDEX events_due ON events(next_attempt_ms) WHERE status IN ('pending', 'running');
CREATE INDEX events_by_function ON events(function, created_ms);
CREATE UNIQUE INDEX events_idempotency ON events(function, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE TABLE invoke_configs (
    function TEXT PRIMARY KEY NOT NULL,
    config   TEXT NOT NULL
) STRICT;
",
    "
CREATE TABLE sync_results (
    function   TEXT NOT NULL,
    key        TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    version    TEXT NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (function, key)
) STRICT;
CREATE INDEX sync_results_age ON sync_results(created_ms);
",
    // Unfinished events per function, for the backlog limit (see crate::backlog).
    "
CREATE TABLE backlog (
    owner TEXT PRIMARY KEY NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) STRICT;
INSERT INTO backlog (owner, items, bytes)
    SELECT function, COUNT(*), SUM(length(CAST(payload AS BLOB))) FROM events
    WHERE status IN ('pending', 'running') GROUP BY function;
CREATE TRIGGER backlog_add AFTER INSERT ON events WHEN NEW.status IN ('pending', 'running')
BEGIN
    INSERT INTO backlog (owner, items, bytes) VALUES (NEW.function, 1, length(CAST(NEW.payload AS BLOB)))
        ON CONFLICT(owner) DO UPDATE SET items = items + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER backlog_finish AFTER UPDATE OF status ON events
    WHEN OLD.status IN ('pending', 'running') AND NEW.status NOT IN ('pending', 'running')
BEGIN
    UPDATE backlog SET items = items - 1, bytes = bytes - length(CAST(OLD.payload AS BLOB))
        WHERE owner = OLD.function;
END;
CREATE TRIGGER backlog_remove AFTER DELETE ON events WHEN OLD.status IN ('pending', 'running')
BEGIN
    UPDATE backlog SET items = items - 1, bytes = bytes - length(CAST(OLD.payload AS BLOB))
        WHERE owner = OLD.function;
END;
",
    // Each event's trace context (a W3C traceparent) and the trigger it came from.
    "
ALTER TABLE events ADD COLUMN trace TEXT;
ALTER TABLE events ADD COLUMN \"trigger\" TEXT;
",
];

/// The stored result of a successful synchronous invocation made with an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResult {
    pub request_id: String,
    /// The version that ran.
    pub version: String,
    pub body: Vec<u8>,
}

/// Result of [`EventQueue::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Stored durably under its own id.
    New,
    /// The idempotency key was seen within the window: nothing stored; the original id.
    Duplicate(String),
}

/// How an attempt ended, for [`EventQueue::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventUpdate {
    Succeeded {
        result: String,
    },
    /// Try again at `next_attempt_ms`; `counted` is false for throttles and paused circuits.
    Retry {
        error: String,
        next_attempt_ms: i64,
        counted: bool,
    },
    Dead {
        error: String,
    },
    Expired,
}

/// The async invocation queue.
pub trait EventQueue: Send + Sync + 'static {
    /// Stores a new pending event, unless `ev.idempotency_key` names an event of the same
    /// function created within `idempotency_window_ms`.
    fn enqueue(&self, ev: &AsyncEvent, idempotency_window_ms: i64) -> Result<Enqueued>;
    /// Claims up to `limit` events due at `now_ms` (pending, or running with an expired
    /// lease), marking them running until `now_ms + lease_ms`. Oldest due first.
    fn claim_due(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<AsyncEvent>>;
    /// Records the outcome of an attempt.
    fn finish(&self, id: &str, update: &EventUpdate, now_ms: i64) -> Result<()>;
    fn get(&self, id: &str) -> Result<AsyncEvent>;
    /// Newest first; optionally only one status.
    fn list(
        &self,
        function: &str,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Result<Vec<AsyncEvent>>;
    /// Number of events per status for `function`.
    fn counts(&self, function: &str) -> Result<BTreeMap<String, u64>>;
    /// When the next event falls due (pending or leased), if any.
    fn next_due_ms(&self) -> Result<Option<i64>>;
    fn put_config(&self, function: &str, config: Option<&EventInvokeConfig>) -> Result<()>;
    fn config(&self, function: &str) -> Result<Option<EventInvokeConfig>>;
    /// Deletes finished events beyond the newest `keep` of each function; returns how many.
    fn prune(&self, keep: usize) -> Result<usize>;
    /// Forgets a deleted function's events and settings.
    fn forget_function(&self, function: &str) -> Result<()>;
    /// The stored result for (`function`, `key`) if it was stored at or after `since_ms`.
    fn sync_result(&self, function: &str, key: &str, since_ms: i64)
        -> Result<Option<StoredResult>>;
    /// Stores a successful synchronous result (replacing an older one for the key) and
    /// forgets results stored before `expire_before_ms`.
    fn put_sync_result(
        &self,
        function: &str,
        key: &str,
        result: &StoredResult,
        now_ms: i64,
        expire_before_ms: i64,
    ) -> Result<()>;
    /// At start-up: events left running by a previous (dead) server become due now. One
    /// server owns a data directory, so nothing else can be holding them.
    fn requeue_running(&self, now_ms: i64) -> Result<usize>;
    /// Cluster mode: the running events claimed by `nodes` (dead: they stopped writing
    /// heartbeats) become due at `now_ms`, without waiting for their leases to end. A
    /// single-node store has no other nodes' claims: nothing to do.
    fn release_claims_of(&self, nodes: &[String], now_ms: i64) -> Result<usize> {
        let _ = (nodes, now_ms);
        Ok(0)
    }
    /// Sends a `dead` or `expired` event of `function` again: pending, due at `now_ms`, with
    /// no attempts and a fresh age (its maximum event age counts from the redrive). Refused
    /// with [`StoreError::Conflict`] for an event in any other state, and like a new event
    /// when the function's backlog is full.
    fn redrive(&self, function: &str, id: &str, now_ms: i64) -> Result<AsyncEvent>;
    /// How full the queue is against its backlog limit (the function holding the most
    /// unfinished events, the bytes of all).
    fn backlog(&self) -> Result<crate::BacklogUsage>;

    /// Drain: gives back claims this node holds but will not run (claimed, not started;
    /// or cut short by a shutdown), so any node may claim them at once instead of after
    /// their lease. Each claim is an event id with the lease end its claim wrote
    /// (`now_ms + lease_ms` of the [`EventQueue::claim_due`] that returned it): an event
    /// still running under that very lease becomes pending, due at `now_ms`, its attempts
    /// unchanged; one finished meanwhile, or claimed again after its lease ran out, is
    /// left alone. Returns how many were given back.
    fn give_back(&self, claims: &[(String, i64)], now_ms: i64) -> Result<usize>;
}

/// [`EventQueue`] on SQLite.
pub struct SqliteEventQueue {
    db: Mutex<Db>,
    limit: BacklogLimit,
}

impl SqliteEventQueue {
    /// Opens (or creates) `DATA_DIR/events.db`, with no backlog limit.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            db: Mutex::new(open_db(&data_dir.join("events.db"), "FULL", MIGRATIONS)?),
            limit: BacklogLimit::UNLIMITED,
        })
    }

    /// Bounds the unfinished events per function and their bytes across functions:
    /// [`EventQueue::enqueue`] beyond them is [`StoreError::Full`].
    pub fn with_limit(mut self, limit: BacklogLimit) -> Self {
        self.limit = limit;
        self
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const COLUMNS: &str =
    "id, function, qualifier, payload, status, attempts, created_ms, next_attempt_ms, \
                       last_error, result, idempotency_key, trace, \"trigger\"";

fn decode(r: &Row<'_>) -> rusqlite::Result<AsyncEvent> {
    let status: String = r.get(4)?;
    Ok(AsyncEvent {
        id: r.get(0)?,
        function: r.get(1)?,
        qualifier: r.get(2)?,
        payload: r.get(3)?,
        status: EventStatus::parse(&status).unwrap_or(EventStatus::Pending),
        attempts: r.get::<_, i64>(5)? as u32,
        created_ms: r.get(6)?,
        next_attempt_ms: r.get(7)?,
        last_error: r.get(8)?,
        result: r.get(9)?,
        idempotency_key: r.get(10)?,
        trace: r.get(11)?,
        trigger: r.get(12)?,
    })
}

impl EventQueue for SqliteEventQueue {
    fn backlog(&self) -> Result<crate::BacklogUsage> {
        crate::backlog::usage(&self.db(), self.limit)
    }

    fn enqueue(&self, ev: &AsyncEvent, idempotency_window_ms: i64) -> Result<Enqueued> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        if let Some(key) = &ev.idempotency_key {
            let existing: Option<(String, i64)> = tx
                .query_row(
                    "SELECT id, created_ms FROM events WHERE function = ?1 AND idempotency_key = ?2",
                    params![ev.function, key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            if let Some((id, created)) = existing {
                if created >= ev.created_ms - idempotency_window_ms {
                    return Ok(Enqueued::Duplicate(id));
                }
                // Outside the window: the key may be used again.
                tx.execute(
                    "UPDATE events SET idempotency_key = NULL WHERE id = ?1",
                    [&id],
                )?;
            }
        }
        self.limit.admit(
            &tx,
            &ev.function,
            1,
            ev.payload.len() as u64,
            Backlog::AsyncEvents,
        )?;
        tx.execute(
            &format!("INSERT INTO events ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"),
            params![
                ev.id,
                ev.function,
                ev.qualifier,
                ev.payload,
                ev.status.as_str(),
                ev.attempts,
                ev.created_ms,
                ev.next_attempt_ms,
                ev.last_error,
                ev.result,
                ev.idempotency_key,
                ev.trace,
                ev.trigger
            ],
        )?;
        tx.commit()?;
        Ok(Enqueued::New)
    }

    fn claim_due(&self, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<AsyncEvent>> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        let mut claimed = Vec::new();
        {
            let mut select = tx.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE status IN ('pending', 'running') AND next_attempt_ms <= ?1
                 ORDER BY next_attempt_ms LIMIT ?2"
            ))?;
            let rows = select.query_map(params![now_ms, limit as i64], decode)?;
            for r in rows {
                claimed.push(r?);
            }
            let mut update = tx.prepare_cached(
                "UPDATE events SET status = 'running', next_attempt_ms = ?2 WHERE id = ?1",
            )?;
            for ev in &mut claimed {
                update.execute(params![ev.id, now_ms + lease_ms])?;
                ev.status = EventStatus::Running;
            }
        }
        tx.commit()?;
        Ok(claimed)
    }

    fn finish(&self, id: &str, update: &EventUpdate, now_ms: i64) -> Result<()> {
        let db = self.db();
        let n = match update {
            EventUpdate::Succeeded { result } => db.execute(
                "UPDATE events SET status = 'succeeded', attempts = attempts + 1, result = ?2, finished_ms = ?3
                 WHERE id = ?1",
                params![id, result, now_ms],
            )?,
            EventUpdate::Retry { error, next_attempt_ms, counted } => db.execute(
                "UPDATE events SET status = 'pending', attempts = attempts + ?4, last_error = ?2,
                     next_attempt_ms = ?3 WHERE id = ?1",
                params![id, error, next_attempt_ms, i64::from(*counted)],
            )?,
            EventUpdate::Dead { error } => db.execute(
                "UPDATE events SET status = 'dead', attempts = attempts + 1, last_error = ?2, finished_ms = ?3
                 WHERE id = ?1",
                params![id, error, now_ms],
            )?,
            EventUpdate::Expired => db.execute(
                "UPDATE events SET status = 'expired', last_error = COALESCE(last_error, 'maximum event age exceeded'),
                     finished_ms = ?2 WHERE id = ?1",
                params![id, now_ms],
            )?,
        };
        if n == 0 {
            return Err(StoreError::NotFound(format!("event {id} not found")));
        }
        Ok(())
    }

    fn get(&self, id: &str) -> Result<AsyncEvent> {
        self.db()
            .query_row(
                &format!("SELECT {COLUMNS} FROM events WHERE id = ?1"),
                [id],
                decode,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("event {id} not found")))
    }

    fn list(
        &self,
        function: &str,
        status: Option<EventStatus>,
        limit: usize,
    ) -> Result<Vec<AsyncEvent>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events WHERE function = ?1 AND (?2 IS NULL OR status = ?2)
             ORDER BY created_ms DESC, id LIMIT ?3"
        ))?;
        let rows = stmt.query_map(
            params![function, status.map(|s| s.as_str()), limit as i64],
            decode,
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn counts(&self, function: &str) -> Result<BTreeMap<String, u64>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT status, COUNT(*) FROM events WHERE function = ?1 GROUP BY status",
        )?;
        let rows = stmt.query_map([function], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn next_due_ms(&self) -> Result<Option<i64>> {
        Ok(self.db().query_row(
            "SELECT MIN(next_attempt_ms) FROM events WHERE status IN ('pending', 'running')",
            [],
            |r| r.get(0),
        )?)
    }

    fn put_config(&self, function: &str, config: Option<&EventInvokeConfig>) -> Result<()> {
        let db = self.db();
        match config {
            Some(c) => {
                let json = serde_json::to_string(c).map_err(|e| {
                    StoreError::Corrupt(format!("encoding the event invoke config: {e}"))
                })?;
                db.execute(
                    "INSERT INTO invoke_configs (function, config) VALUES (?1, ?2)
                     ON CONFLICT(function) DO UPDATE SET config = excluded.config",
                    params![function, json],
                )?;
            }
            None => {
                db.execute("DELETE FROM invoke_configs WHERE function = ?1", [function])?;
            }
        }
        Ok(())
    }

    fn config(&self, function: &str) -> Result<Option<EventInvokeConfig>> {
        let json: Option<String> = self
            .db()
            .query_row(
                "SELECT config FROM invoke_configs WHERE function = ?1",
                [function],
                |r| r.get(0),
            )
            .optional()?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| {
                StoreError::Corrupt(format!("stored event invoke config of {function}: {e}"))
            })
        })
        .transpose()
    }

    fn prune(&self, keep: usize) -> Result<usize> {
        Ok(self.db().execute(
            "DELETE FROM events WHERE id IN (
                 SELECT id FROM (
                     SELECT id, ROW_NUMBER() OVER (PARTITION BY function ORDER BY finished_ms DESC) AS n
                     FROM events WHERE status IN ('succeeded', 'dead', 'expired'))
                 WHERE n > ?1)",
            [keep as i64],
        )?)
    }

    fn sync_result(
        &self,
        function: &str,
        key: &str,
        since_ms: i64,
    ) -> Result<Option<StoredResult>> {
        Ok(self
            .db()
            .query_row(
                "SELECT request_id, version, body FROM sync_results
                 WHERE function = ?1 AND key = ?2 AND created_ms >= ?3",
                params![function, key, since_ms],
                |r| {
                    Ok(StoredResult {
                        request_id: r.get(0)?,
                        version: r.get(1)?,
                        body: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    fn put_sync_result(
        &self,
        function: &str,
        key: &str,
        result: &StoredResult,
        now_ms: i64,
        expire_before_ms: i64,
    ) -> Result<()> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        tx.execute(
            "INSERT INTO sync_results (function, key, created_ms, request_id, version, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(function, key) DO UPDATE SET created_ms = excluded.created_ms,
                 request_id = excluded.request_id, version = excluded.version, body = excluded.body",
            params![function, key, now_ms, result.request_id, result.version, result.body],
        )?;
        tx.execute(
            "DELETE FROM sync_results WHERE created_ms < ?1",
            [expire_before_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn redrive(&self, function: &str, id: &str, now_ms: i64) -> Result<AsyncEvent> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        let ev = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM events WHERE id = ?1 AND function = ?2"),
                params![id, function],
                decode,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("event {id} of {function} not found")))?;
        if !matches!(ev.status, EventStatus::Dead | EventStatus::Expired) {
            return Err(StoreError::Conflict(format!(
                "event {id} is {}: only dead or expired events can be redriven",
                ev.status.as_str()
            )));
        }
        let bytes = ev.payload.len() as u64;
        self.limit
            .admit(&tx, function, 1, bytes, Backlog::AsyncEvents)?;
        tx.execute(
            "UPDATE events SET status = 'pending', attempts = 0, created_ms = ?2, next_attempt_ms = ?2,
                 last_error = NULL, result = NULL, finished_ms = NULL WHERE id = ?1",
            params![id, now_ms],
        )?;
        // The backlog triggers count inserts and finishes; a finished event becoming
        // unfinished again is counted here, in the same transaction.
        tx.execute(
            "INSERT INTO backlog (owner, items, bytes) VALUES (?1, 1, ?2)
                 ON CONFLICT(owner) DO UPDATE SET items = items + 1, bytes = bytes + excluded.bytes",
            params![function, bytes as i64],
        )?;
        let ev = tx.query_row(
            &format!("SELECT {COLUMNS} FROM events WHERE id = ?1"),
            [id],
            decode,
        )?;
        tx.commit()?;
        Ok(ev)
    }

    fn requeue_running(&self, now_ms: i64) -> Result<usize> {
        Ok(self.db().execute(
            "UPDATE events SET status = 'pending', next_attempt_ms = ?1 WHERE status = 'running'",
            [now_ms],
        )?)
    }

    fn forget_function(&self, function: &str) -> Result<()> {
        let db = self.db();
        db.execute("DELETE FROM events WHERE function = ?1", [function])?;
        db.execute("DELETE FROM invoke_configs WHERE function = ?1", [function])?;
        db.execute("DELETE FROM sync_results WHERE function = ?1", [function])?;
        db.execute("DELETE FROM backlog WHERE owner = ?1", [function])?;
        Ok(())
    }

    // Drain: give back claims not started (see the trait).
    fn give_back(&self, claims: &[(String, i64)], now_ms: i64) -> Result<usize> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        let mut n = 0;
        {
            let mut update = tx.prepare_cached(
                "UPDATE events SET status = 'pending', next_attempt_ms = ?3
                 WHERE id = ?1 AND status = 'running' AND next_attempt_ms = ?2",
            )?;
            for (id, lease) in claims {
                n += update.execute(params![id, lease, now_ms])?;
            }
        }
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backlog::testing::{backend_tests, Backend};

    fn ev(id: &str, created: i64, key: Option<&str>) -> AsyncEvent {
        AsyncEvent {
            id: id.into(),
            function: "f".into(),
            qualifier: "$LATEST".into(),
            payload: "{}".into(),
            status: EventStatus::Pending,
            attempts: 0,
            created_ms: created,
            next_attempt_ms: created,
            last_error: None,
            result: None,
            idempotency_key: key.map(str::to_string),
            trace: None,
            trigger: None,
        }
    }

    fn claim_retry_finish_and_lease_expiry(b: &Backend) {
        let q = b.events();
        q.enqueue(&ev("a", 100, None), 0).unwrap();
        q.enqueue(&ev("b", 200, None), 0).unwrap();
        assert_eq!(
            q.claim_due(150, 10, 1000).unwrap().len(),
            1,
            "only a is due at 150"
        );
        let b = q.claim_due(250, 10, 1000).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].id, "b");
        // a's lease (until 1150) has not run out: nothing to claim at 300.
        assert!(q.claim_due(300, 10, 1000).unwrap().is_empty());
        q.finish(
            "b",
            &EventUpdate::Retry {
                error: "boom".into(),
                next_attempt_ms: 500,
                counted: true,
            },
            300,
        )
        .unwrap();
        let b = q.get("b").unwrap();
        assert_eq!(
            (b.status, b.attempts, b.last_error.as_deref()),
            (EventStatus::Pending, 1, Some("boom"))
        );
        q.finish(
            "b",
            &EventUpdate::Retry {
                error: "throttled".into(),
                next_attempt_ms: 600,
                counted: false,
            },
            400,
        )
        .unwrap();
        assert_eq!(
            q.get("b").unwrap().attempts,
            1,
            "throttles are not attempts"
        );
        // The server "died" holding a: its lease ends and it is claimed again.
        let again = q.claim_due(1200, 10, 1000).unwrap();
        let ids: Vec<_> = again.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec!["b", "a"]);
        q.finish("a", &EventUpdate::Succeeded { result: "1".into() }, 1300)
            .unwrap();
        q.finish(
            "b",
            &EventUpdate::Dead {
                error: "still broken".into(),
            },
            1300,
        )
        .unwrap();
        assert!(q.claim_due(10_000, 10, 1000).unwrap().is_empty());
        assert_eq!(q.next_due_ms().unwrap(), None);
        let counts = q.counts("f").unwrap();
        assert_eq!((counts["succeeded"], counts["dead"]), (1, 1));
        assert_eq!(
            q.list("f", Some(EventStatus::Dead), 10).unwrap()[0].attempts,
            2
        );
        assert!(q
            .finish("zzz", &EventUpdate::Expired, 1)
            .unwrap_err()
            .is_not_found());
    }

    fn idempotency_window_and_durability(b: &Backend) {
        {
            let q = b.events();
            assert_eq!(
                q.enqueue(&ev("a", 1000, Some("k")), 500).unwrap(),
                Enqueued::New
            );
            assert_eq!(
                q.enqueue(&ev("b", 1400, Some("k")), 500).unwrap(),
                Enqueued::Duplicate("a".into())
            );
            assert_eq!(
                q.enqueue(&ev("c", 1600, Some("k")), 500).unwrap(),
                Enqueued::New,
                "window passed"
            );
            q.put_config(
                "f",
                Some(&EventInvokeConfig {
                    maximum_retry_attempts: 0,
                    ..Default::default()
                }),
            )
            .unwrap();
        }
        let q = b.events();
        assert!(q.get("a").is_ok() && q.get("c").is_ok());
        assert!(q.get("b").unwrap_err().is_not_found());
        assert_eq!(q.config("f").unwrap().unwrap().maximum_retry_attempts, 0);
        q.put_config("f", None).unwrap();
        assert_eq!(q.config("f").unwrap(), None);
    }

    fn redrive_sends_dead_and_expired_events_again_and_counts_them_in_the_backlog(b: &Backend) {
        let limit = BacklogLimit {
            per_owner: 1,
            total_bytes: 1000,
        };
        let q = b.events_with(limit);
        q.enqueue(&ev("a", 1, None), 0).unwrap();
        assert!(q.redrive("f", "a", 5).unwrap_err().is_conflict());
        q.claim_due(10, 10, 1000).unwrap();
        q.finish(
            "a",
            &EventUpdate::Dead {
                error: "boom".into(),
            },
            20,
        )
        .unwrap();
        assert!(q.redrive("g", "a", 30).unwrap_err().is_not_found());
        assert!(q.redrive("f", "nope", 30).unwrap_err().is_not_found());
        let r = q.redrive("f", "a", 30).unwrap();
        assert_eq!(
            (r.status, r.attempts, r.created_ms, r.next_attempt_ms),
            (EventStatus::Pending, 0, 30, 30)
        );
        assert_eq!(r.last_error, None);
        // It is due again and counts in the backlog: the function is at its bound of 1.
        assert!(q.enqueue(&ev("b", 31, None), 0).unwrap_err().is_full());
        assert_eq!(q.claim_due(40, 10, 1000).unwrap()[0].id, "a");
        q.finish("a", &EventUpdate::Expired, 50).unwrap();
        q.enqueue(&ev("b", 51, None), 0).unwrap();
        // Expired events redrive too, within the backlog bound.
        assert!(q.redrive("f", "a", 60).unwrap_err().is_full());
        q.claim_due(70, 10, 1000).unwrap();
        q.finish("b", &EventUpdate::Succeeded { result: "1".into() }, 80)
            .unwrap();
        assert!(q.redrive("f", "b", 90).unwrap_err().is_conflict());
        assert_eq!(
            q.redrive("f", "a", 90).unwrap().status,
            EventStatus::Pending
        );
        assert_eq!(q.backlog().unwrap().largest_owner, Some(("f".into(), 1)));
    }

    fn trace_and_trigger_are_stored_with_the_event(b: &Backend) {
        let tp = "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01";
        {
            let q = b.events();
            let mut e = ev("t", 100, None);
            e.trace = Some(tp.into());
            e.trigger = Some("bus".into());
            q.enqueue(&e, 0).unwrap();
            q.enqueue(&ev("plain", 100, None), 0).unwrap();
        }
        let q = b.events();
        let claimed = q.claim_due(1000, 10, 100).unwrap();
        let t = claimed.iter().find(|e| e.id == "t").unwrap();
        assert_eq!(t.trace.as_deref(), Some(tp));
        assert_eq!(t.trigger.as_deref(), Some("bus"));
        let plain = q.get("plain").unwrap();
        assert_eq!((plain.trace, plain.trigger), (None, None));
    }

    fn enqueues_beyond_the_backlog_limit_are_refused_until_events_finish(b: &Backend) {
        let limit = BacklogLimit {
            per_owner: 2,
            total_bytes: 7,
        };
        let q = b.events_with(limit);
        q.enqueue(&ev("a", 1, None), 0).unwrap();
        q.enqueue(&ev("b", 2, Some("k")), 0).unwrap();
        let e = q.enqueue(&ev("c", 3, None), 0).unwrap_err();
        assert!(e.is_full(), "{e}");
        assert!(e.to_string().contains("--max-async-events"), "{e}");
        // The health check's view: the fullest function is at its bound.
        let u = q.backlog().unwrap();
        assert_eq!(u.largest_owner.as_ref().map(|o| o.1), Some(2), "{u:?}");
        assert_eq!(u.total_bytes, 4);
        assert_eq!(u.fill(), 1.0);
        // A duplicate of a stored idempotency key is answered, not refused.
        assert_eq!(
            q.enqueue(&ev("b2", 3, Some("k")), 100).unwrap(),
            Enqueued::Duplicate("b".into())
        );
        // Running events still count; finished ones do not.
        q.claim_due(10, 10, 1000).unwrap();
        assert!(q.enqueue(&ev("c", 3, None), 0).unwrap_err().is_full());
        q.finish("a", &EventUpdate::Succeeded { result: "1".into() }, 20)
            .unwrap();
        q.enqueue(&ev("c", 3, None), 0).unwrap();
        // Bytes count across functions: 2 events of "{}" held, 2 more bytes pass 7.
        let mut g = ev("g", 4, None);
        g.function = "g".into();
        q.enqueue(&g, 0).unwrap();
        g.id = "g2".into();
        let e = q.enqueue(&g, 0).unwrap_err();
        assert!(e.to_string().contains("--max-async-bytes"), "{e}");
        // Retries keep their place; dead and expired events leave; counts survive a reopen.
        let retry = EventUpdate::Retry {
            error: "x".into(),
            next_attempt_ms: 50,
            counted: true,
        };
        q.finish("b", &retry, 30).unwrap();
        drop(q);
        let q = b.events_with(limit);
        assert!(q.enqueue(&ev("d", 5, None), 0).unwrap_err().is_full());
        q.finish("b", &EventUpdate::Dead { error: "x".into() }, 60)
            .unwrap();
        q.finish("c", &EventUpdate::Expired, 60).unwrap();
        q.enqueue(&ev("d", 5, None), 0).unwrap();
        q.forget_function("g").unwrap();
        q.enqueue(&g, 0).unwrap();
    }

    fn sync_results_within_the_window(b: &Backend) {
        let q = b.events();
        let r = StoredResult {
            request_id: "r1".into(),
            version: "$LATEST".into(),
            body: b"{\"ok\":1}".to_vec(),
        };
        q.put_sync_result("f", "k", &r, 1000, 0).unwrap();
        assert_eq!(q.sync_result("f", "k", 500).unwrap(), Some(r.clone()));
        assert_eq!(
            q.sync_result("f", "k", 1001).unwrap(),
            None,
            "older than the window"
        );
        assert_eq!(
            q.sync_result("g", "k", 0).unwrap(),
            None,
            "keys are per function"
        );
        // Storing another result expires old ones.
        q.put_sync_result("f", "k2", &r, 5000, 2000).unwrap();
        assert_eq!(q.sync_result("f", "k", 0).unwrap(), None);
        q.forget_function("f").unwrap();
        assert_eq!(q.sync_result("f", "k2", 0).unwrap(), None);
    }

    fn prune_keeps_the_newest_finished(b: &Backend) {
        let q = b.events();
        for i in 0..5 {
            q.enqueue(&ev(&format!("e{i}"), i, None), 0).unwrap();
            q.finish(
                &format!("e{i}"),
                &EventUpdate::Succeeded {
                    result: String::new(),
                },
                i,
            )
            .unwrap();
        }
        q.enqueue(&ev("pending", 9, None), 0).unwrap();
        assert_eq!(q.prune(2).unwrap(), 3);
        assert!(q.get("e4").is_ok() && q.get("e0").is_err() && q.get("pending").is_ok());
        q.forget_function("f").unwrap();
        assert!(q.get("pending").is_err());
    }

    /// A drained node's claims: given back at once, only under the lease it holds.
    fn give_back_makes_claims_due_at_once(b: &Backend) {
        let (q, other) = (b.events(), b.events());
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            q.enqueue(&ev(id, i as i64, None), 0).unwrap();
        }
        let held: Vec<(String, i64)> = q
            .claim_due(100, 3, 60_000)
            .unwrap()
            .into_iter()
            .map(|e| (e.id, 100 + 60_000))
            .collect();
        assert_eq!(held.len(), 3);
        q.finish("c", &EventUpdate::Succeeded { result: "1".into() }, 150)
            .unwrap();
        assert!(other.claim_due(200, 10, 1000).unwrap().is_empty(), "leased");
        // A stale lease token gives nothing back; a finished event stays finished.
        assert_eq!(q.give_back(&[("a".into(), 99)], 200).unwrap(), 0);
        assert_eq!(q.give_back(&held, 200).unwrap(), 2);
        assert_eq!(q.get("c").unwrap().status, EventStatus::Succeeded);
        let a = q.get("a").unwrap();
        assert_eq!((a.status, a.attempts), (EventStatus::Pending, 0));
        let again = other.claim_due(200, 10, 1000).unwrap();
        let mut ids: Vec<_> = again.iter().map(|e| e.id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["a", "b"]);
        // Claimed elsewhere now: giving back the old claim again changes nothing.
        assert_eq!(q.give_back(&held, 300).unwrap(), 0);
        assert_eq!(q.get("a").unwrap().status, EventStatus::Running);
        assert_eq!(q.give_back(&[], 300).unwrap(), 0);
    }

    backend_tests!(
        give_back_makes_claims_due_at_once,
        claim_retry_finish_and_lease_expiry,
        idempotency_window_and_durability,
        redrive_sends_dead_and_expired_events_again_and_counts_them_in_the_backlog,
        trace_and_trigger_are_stored_with_the_event,
        enqueues_beyond_the_backlog_limit_are_refused_until_events_finish,
        sync_results_within_the_window,
        prune_keeps_the_newest_finished,
    );

    /// Cluster mode: several nodes (pools) on one database.
    mod cluster {
        use super::ev;
        use crate::postgres::events::PgEventQueue;
        use crate::{Enqueued, EventQueue, EventUpdate};
        use nimbus_core::EventStatus;
        use nimbus_pg::testing::TestDb;
        use nimbus_pg::{Pg, PgConfig};
        use std::collections::HashSet;
        use std::sync::Arc;

        fn node(db: &TestDb) -> Arc<PgEventQueue> {
            let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
            Arc::new(PgEventQueue::open(&pg).unwrap())
        }

        #[test]
        fn nodes_claiming_at_once_never_get_the_same_event_and_lose_none() {
            let db = TestDb::new("events_nodes");
            let nodes = [node(&db), node(&db)];
            for i in 0..300 {
                nodes[i % 2]
                    .enqueue(&ev(&format!("e{i}"), i as i64, None), 0)
                    .unwrap();
            }
            let threads: Vec<_> = (0..6)
                .map(|t| {
                    let q = nodes[t % 2].clone();
                    std::thread::spawn(move || {
                        let mut got = Vec::new();
                        loop {
                            let batch = q.claim_due(10_000, 7, 60_000).unwrap();
                            if batch.is_empty() {
                                break;
                            }
                            for e in batch {
                                q.finish(
                                    &e.id,
                                    &EventUpdate::Succeeded {
                                        result: t.to_string(),
                                    },
                                    10_001,
                                )
                                .unwrap();
                                got.push(e.id);
                            }
                        }
                        got
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in threads {
                all.extend(t.join().unwrap());
            }
            let unique: HashSet<&String> = all.iter().collect();
            assert_eq!(unique.len(), all.len(), "an event was claimed twice");
            assert_eq!(all.len(), 300, "events were lost");
            assert_eq!(nodes[0].counts("f").unwrap()["succeeded"], 300);
            assert_eq!(nodes[1].backlog().unwrap().largest_owner, None);
        }

        #[test]
        fn one_idempotency_key_enqueued_by_many_nodes_at_once_is_one_event() {
            let db = TestDb::new("events_idem");
            let nodes = [node(&db), node(&db)];
            for round in 0..5 {
                let key = format!("k{round}");
                let barrier = Arc::new(std::sync::Barrier::new(6));
                let threads: Vec<_> = (0..6)
                    .map(|t| {
                        let q = nodes[t % 2].clone();
                        let (key, barrier) = (key.clone(), barrier.clone());
                        std::thread::spawn(move || {
                            barrier.wait();
                            let id = format!("{key}-{t}");
                            (
                                id.clone(),
                                q.enqueue(&ev(&id, 100, Some(&key)), 1000).unwrap(),
                            )
                        })
                    })
                    .collect();
                let outcomes: Vec<(String, Enqueued)> =
                    threads.into_iter().map(|t| t.join().unwrap()).collect();
                let new: Vec<&String> = outcomes
                    .iter()
                    .filter(|o| o.1 == Enqueued::New)
                    .map(|o| &o.0)
                    .collect();
                assert_eq!(new.len(), 1, "{outcomes:?}");
                for (_, o) in &outcomes {
                    if let Enqueued::Duplicate(of) = o {
                        assert_eq!(of, new[0]);
                    }
                }
            }
            assert_eq!(nodes[0].counts("f").unwrap()["pending"], 5);
        }

        #[test]
        fn a_dead_nodes_claims_return_to_another_node_when_their_lease_ends() {
            let db = TestDb::new("events_dead_node");
            let (a, b) = (node(&db), node(&db));
            a.enqueue(&ev("e", 1, None), 0).unwrap();
            assert_eq!(a.claim_due(10, 10, 1000).unwrap().len(), 1);
            drop(a);
            assert!(b.claim_due(1009, 10, 1000).unwrap().is_empty());
            let again = b.claim_due(1010, 10, 1000).unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].id, "e");
        }

        #[test]
        fn requeue_running_leaves_live_leases_to_their_nodes() {
            let db = TestDb::new("events_requeue");
            let (a, b) = (node(&db), node(&db));
            a.enqueue(&ev("held", 1, None), 0).unwrap();
            a.enqueue(&ev("orphan", 2, None), 0).unwrap();
            assert_eq!(a.claim_due(10, 1, 1000).unwrap()[0].id, "held");
            assert_eq!(a.claim_due(10, 1, 100).unwrap()[0].id, "orphan");
            // Node b starts at 500: orphan's lease (until 110) is over, held's (1010) is not.
            assert_eq!(b.requeue_running(500).unwrap(), 1);
            assert_eq!(b.get("held").unwrap().status, EventStatus::Running);
            let orphan = b.get("orphan").unwrap();
            assert_eq!(
                (orphan.status, orphan.next_attempt_ms),
                (EventStatus::Pending, 500)
            );
            let again = b.claim_due(500, 10, 1000).unwrap();
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].id, "orphan");
        }

        #[test]
        fn a_dead_nodes_claims_are_released_by_a_live_node() {
            let db = TestDb::new("events_release");
            let named = |id: &str| {
                let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
                PgEventQueue::open(&pg).unwrap().with_node(id)
            };
            let (a, b) = (named("a"), named("b"));
            for (id, seq) in [("a1", 1), ("b1", 2), ("free", 3)] {
                a.enqueue(&ev(id, seq, None), 0).unwrap();
            }
            assert_eq!(a.claim_due(10, 1, 60_000).unwrap()[0].id, "a1");
            assert_eq!(b.claim_due(10, 1, 60_000).unwrap()[0].id, "b1");
            // b sees a dead: a's claim returns at once, b's own stays.
            assert_eq!(b.release_claims_of(&["a".into()], 30).unwrap(), 1);
            assert_eq!(b.release_claims_of(&["a".into()], 30).unwrap(), 0);
            let a1 = b.get("a1").unwrap();
            assert_eq!((a1.status, a1.next_attempt_ms), (EventStatus::Pending, 30));
            assert_eq!(b.get("b1").unwrap().status, EventStatus::Running);
            let mut again: Vec<String> = b
                .claim_due(30, 10, 60_000)
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect();
            again.sort();
            assert_eq!(again, ["a1", "free"]);
        }

        #[test]
        fn a_restarted_node_takes_back_its_own_claims_at_once() {
            let db = TestDb::new("events_restart");
            let named = |id: &str| {
                let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
                PgEventQueue::open(&pg).unwrap().with_node(id)
            };
            let (a, b) = (named("a"), named("b"));
            a.enqueue(&ev("mine", 1, None), 0).unwrap();
            a.enqueue(&ev("theirs", 2, None), 0).unwrap();
            assert_eq!(a.claim_due(10, 1, 60_000).unwrap()[0].id, "mine");
            assert_eq!(b.claim_due(10, 1, 60_000).unwrap()[0].id, "theirs");
            // a is killed and starts again with the same id, long before its lease ends.
            drop(a);
            let a = named("a");
            assert_eq!(a.requeue_running(20).unwrap(), 1);
            assert_eq!(a.get("mine").unwrap().status, EventStatus::Pending);
            assert_eq!(a.get("theirs").unwrap().status, EventStatus::Running);
            assert_eq!(a.claim_due(20, 10, 60_000).unwrap()[0].id, "mine");
        }
    }
}
