//! Per-minute history of every function and the alarms on it (`DATA_DIR/history.db`, its
//! own file and migrations; WAL, `synchronous=NORMAL`: a crash may lose the last flushed
//! minute, never corrupt the file).
//!
//! One row per (function, minute) with activity: counts, the maximum concurrency and the
//! duration histogram in its sparse text form ([`LatencyHistogram::encode`]). Rows older
//! than the retention (14 days) are pruned, and the table never holds more than
//! [`HistoryLimits::max_rows`] rows (the oldest minutes go first): with at most 96
//! histogram pairs a row is under 2 KB, typically under 100 bytes, so the default bound
//! (2,000,000 rows ≈ 100 functions busy every minute of 14 days) keeps the file under
//! about 200 MB in practice and 4 GB in the worst case.

use crate::db::Db;
use crate::sqlite::open_db;
use crate::{Result, StoreError};
use nimbus_core::{AlarmSpec, AlarmState};
use nimbus_metrics::{LatencyHistogram, MinuteStats};
use rusqlite::{params, OptionalExtension};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const MIGRATIONS: &[&str] = &["
CREATE TABLE minutes (
    function        TEXT NOT NULL,
    minute_ms       INTEGER NOT NULL,
    invocations     INTEGER NOT NULL,
    errors          INTEGER NOT NULL,
    throttles       INTEGER NOT NULL,
    timeouts        INTEGER NOT NULL,
    cold_starts     INTEGER NOT NULL,
    max_concurrency INTEGER NOT NULL,
    durations       TEXT NOT NULL,
    PRIMARY KEY (function, minute_ms)
) STRICT, WITHOUT ROWID;
CREATE INDEX minutes_by_time ON minutes (minute_ms);
CREATE TABLE alarms (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    state_ms   INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
"];

/// How long minutes are kept.
pub const HISTORY_RETENTION_MS: i64 = 14 * 86_400_000;

/// Bounds of the history table.
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    /// Minutes older than this are pruned.
    pub retention_ms: i64,
    /// The most rows kept; past it the oldest minutes are pruned.
    pub max_rows: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            retention_ms: HISTORY_RETENTION_MS,
            max_rows: 2_000_000,
        }
    }
}

/// One stored minute of one function.
#[derive(Debug, Clone, PartialEq)]
pub struct MinuteRow {
    pub function: String,
    /// Start of the minute, ms since the epoch.
    pub minute_ms: i64,
    pub stats: MinuteStats,
}

/// An alarm with its current state.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub name: String,
    pub spec: AlarmSpec,
    pub state: AlarmState,
    pub reason: String,
    /// When the state last changed.
    pub state_ms: i64,
    pub created_ms: i64,
}

/// Per-minute history and alarms: [`SqliteHistoryStore`], and
/// [`crate::postgres::history::PgHistoryStore`] for a cluster.
pub trait HistoryStore: Send + Sync + 'static {
    /// Adds the minute `minute_ms` of each function to what is stored for it (a minute
    /// flushed twice, e.g. at shutdown and after a restart, is merged, not replaced).
    /// Merging is [`MinuteStats::merge`]: counters and histograms add up, the maximum
    /// concurrency is the larger one. Flushes may come from several writers at once (the
    /// nodes of a cluster, each flushing its own rows for the same minute): every flush is
    /// added exactly once, whatever the interleaving. The same function twice in `rows`
    /// adds up too.
    fn add_minutes(&self, minute_ms: i64, rows: &[(String, MinuteStats)]) -> Result<()>;
    /// Minutes in `[from_ms, to_ms)` of `function` (of every function when `None`),
    /// ordered by minute then function.
    fn minutes(&self, function: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<MinuteRow>>;
    /// Deletes every minute of `function`.
    fn delete_function(&self, function: &str) -> Result<()>;
    /// Deletes minutes before `now_ms - retention`, then the oldest past `max_rows`;
    /// returns the rows deleted.
    fn prune(&self, now_ms: i64, limits: HistoryLimits) -> Result<u64>;
    /// Creates or replaces an alarm: a new one (or one whose definition changed) starts in
    /// INSUFFICIENT_DATA, an unchanged one keeps its state.
    fn put_alarm(&self, name: &str, spec: &AlarmSpec, now_ms: i64) -> Result<Alarm>;
    /// `NotFound` when missing.
    fn get_alarm(&self, name: &str) -> Result<Alarm>;
    /// Sorted by name.
    fn list_alarms(&self) -> Result<Vec<Alarm>>;
    /// `NotFound` when missing.
    fn delete_alarm(&self, name: &str) -> Result<()>;
    /// Records a state change (a no-op for an alarm deleted meanwhile).
    fn set_alarm_state(
        &self,
        name: &str,
        state: AlarmState,
        reason: &str,
        now_ms: i64,
    ) -> Result<()>;
}

/// [`HistoryStore`] on SQLite.
pub struct SqliteHistoryStore {
    db: Mutex<Db>,
}

impl SqliteHistoryStore {
    /// Opens (or creates) `data_dir/history.db`.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            db: Mutex::new(open_db(&data_dir.join("history.db"), "NORMAL", MIGRATIONS)?),
        })
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn decode_minute(r: &rusqlite::Row<'_>) -> rusqlite::Result<MinuteRow> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
    Ok(MinuteRow {
        function: r.get(0)?,
        minute_ms: r.get(1)?,
        stats: MinuteStats {
            invocations: n(2)?,
            errors: n(3)?,
            throttles: n(4)?,
            timeouts: n(5)?,
            cold_starts: n(6)?,
            max_concurrency: n(7)?,
            durations: LatencyHistogram::decode(&r.get::<_, String>(8)?),
        },
    })
}

fn decode_alarm(r: &rusqlite::Row<'_>) -> rusqlite::Result<Alarm> {
    let bad = |i: usize, e: Box<dyn std::error::Error + Send + Sync>| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e)
    };
    let spec: String = r.get(1)?;
    let state: String = r.get(2)?;
    Ok(Alarm {
        name: r.get(0)?,
        spec: serde_json::from_str(&spec).map_err(|e| bad(1, Box::new(e)))?,
        state: AlarmState::parse(&state).ok_or_else(|| bad(2, state.clone().into()))?,
        reason: r.get(3)?,
        state_ms: r.get(4)?,
        created_ms: r.get(5)?,
    })
}

const MINUTE_COLUMNS: &str = "function, minute_ms, invocations, errors, throttles, timeouts, cold_starts, max_concurrency, durations";
const ALARM_COLUMNS: &str = "name, spec, state, reason, state_ms, created_ms";

fn alarm_missing(name: &str) -> StoreError {
    StoreError::NotFound(format!("alarm not found: {name}"))
}

impl HistoryStore for SqliteHistoryStore {
    fn add_minutes(&self, minute_ms: i64, rows: &[(String, MinuteStats)]) -> Result<()> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        for (function, stats) in rows {
            let mut merged = stats.clone();
            let old = tx
                .query_row(
                    &format!(
                        "SELECT {MINUTE_COLUMNS} FROM minutes WHERE function = ?1 AND minute_ms = ?2"
                    ),
                    params![function, minute_ms],
                    decode_minute,
                )
                .optional()?;
            if let Some(old) = old {
                merged.merge(&old.stats);
            }
            let i = |v: u64| v.min(i64::MAX as u64) as i64;
            tx.execute(
                &format!("INSERT OR REPLACE INTO minutes ({MINUTE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
                params![
                    function,
                    minute_ms,
                    i(merged.invocations),
                    i(merged.errors),
                    i(merged.throttles),
                    i(merged.timeouts),
                    i(merged.cold_starts),
                    i(merged.max_concurrency),
                    merged.durations.encode(),
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn minutes(&self, function: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<MinuteRow>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(&format!(
            "SELECT {MINUTE_COLUMNS} FROM minutes
             WHERE minute_ms >= ?1 AND minute_ms < ?2 AND (?3 IS NULL OR function = ?3)
             ORDER BY minute_ms, function"
        ))?;
        let rows = stmt.query_map(params![from_ms, to_ms, function], decode_minute)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_function(&self, function: &str) -> Result<()> {
        self.db()
            .execute("DELETE FROM minutes WHERE function = ?1", params![function])?;
        Ok(())
    }

    fn prune(&self, now_ms: i64, limits: HistoryLimits) -> Result<u64> {
        let db = self.db();
        let mut deleted = db.execute(
            "DELETE FROM minutes WHERE minute_ms < ?1",
            params![now_ms.saturating_sub(limits.retention_ms)],
        )? as u64;
        let rows: i64 = db.query_row("SELECT COUNT(*) FROM minutes", [], |r| r.get(0))?;
        let excess = (rows.max(0) as u64).saturating_sub(limits.max_rows);
        if excess > 0 {
            // The minute at which `excess` rows are older: delete up to and including it.
            let cut: Option<i64> = db
                .query_row(
                    "SELECT minute_ms FROM minutes ORDER BY minute_ms LIMIT 1 OFFSET ?1",
                    params![excess as i64 - 1],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(cut) = cut {
                deleted +=
                    db.execute("DELETE FROM minutes WHERE minute_ms <= ?1", params![cut])? as u64;
            }
        }
        Ok(deleted)
    }

    fn put_alarm(&self, name: &str, spec: &AlarmSpec, now_ms: i64) -> Result<Alarm> {
        let text = serde_json::to_string(spec)
            .map_err(|e| StoreError::InvalidInput(format!("alarm {name}: {e}")))?;
        let mut db = self.db();
        let tx = db.write_tx()?;
        let old = tx
            .query_row(
                &format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE name = ?1"),
                params![name],
                decode_alarm,
            )
            .optional()?;
        let alarm = match old {
            Some(old) if old.spec == *spec => old,
            old => Alarm {
                name: name.to_string(),
                spec: spec.clone(),
                state: AlarmState::InsufficientData,
                reason: "Unchecked: Initial alarm creation".into(),
                state_ms: now_ms,
                created_ms: old.map_or(now_ms, |o| o.created_ms),
            },
        };
        tx.execute(
            &format!(
                "INSERT OR REPLACE INTO alarms ({ALARM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
            ),
            params![
                alarm.name,
                text,
                alarm.state.as_str(),
                alarm.reason,
                alarm.state_ms,
                alarm.created_ms
            ],
        )?;
        tx.commit()?;
        Ok(alarm)
    }

    fn get_alarm(&self, name: &str) -> Result<Alarm> {
        self.db()
            .query_row(
                &format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE name = ?1"),
                params![name],
                decode_alarm,
            )
            .optional()?
            .ok_or_else(|| alarm_missing(name))
    }

    fn list_alarms(&self) -> Result<Vec<Alarm>> {
        let db = self.db();
        let mut stmt =
            db.prepare_cached(&format!("SELECT {ALARM_COLUMNS} FROM alarms ORDER BY name"))?;
        let rows = stmt.query_map([], decode_alarm)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_alarm(&self, name: &str) -> Result<()> {
        match self
            .db()
            .execute("DELETE FROM alarms WHERE name = ?1", params![name])?
        {
            0 => Err(alarm_missing(name)),
            _ => Ok(()),
        }
    }

    fn set_alarm_state(
        &self,
        name: &str,
        state: AlarmState,
        reason: &str,
        now_ms: i64,
    ) -> Result<()> {
        self.db().execute(
            "UPDATE alarms SET state = ?2, reason = ?3, state_ms = ?4 WHERE name = ?1",
            params![name, state.as_str(), reason, now_ms],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::history::PgHistoryStore;
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::{Pg, PgConfig};
    use std::sync::{Arc, Barrier};

    /// Opens the backend's store (again), as a restarted node or another node does.
    type Open<'a> = &'a dyn Fn() -> Arc<dyn HistoryStore>;

    fn sqlite(body: fn(Open)) {
        let dir = tempfile::tempdir().unwrap();
        body(&|| Arc::new(SqliteHistoryStore::open(dir.path()).unwrap()));
    }

    /// Every open is a pool of its own, as on another node.
    fn postgres(body: fn(Open)) {
        let db = TestDb::new("history");
        body(&|| {
            let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
            Arc::new(PgHistoryStore::open(&pg).unwrap())
        });
    }

    /// Runs each test body on SQLite and on PostgreSQL (`<body>::sqlite`, `<body>::postgres`).
    macro_rules! on_both_backends {
        ($($body:ident),* $(,)?) => {$(
            mod $body {
                #[test]
                fn sqlite() {
                    super::sqlite(super::$body)
                }
                #[test]
                fn postgres() {
                    super::postgres(super::$body)
                }
            }
        )*};
    }

    on_both_backends!(
        minutes_merge_survive_reopening_and_are_pruned,
        alarms_keep_their_state_until_redefined,
        nodes_flushing_the_same_minute_add_up,
        histograms_and_empty_rows_merge_exactly,
    );

    fn stats(invocations: u64, ms: f64) -> MinuteStats {
        let mut s = MinuteStats {
            invocations,
            errors: 1,
            max_concurrency: invocations,
            ..Default::default()
        };
        for _ in 0..invocations {
            s.durations.record_ms(ms);
        }
        s
    }

    fn minutes_merge_survive_reopening_and_are_pruned(open: Open) {
        let m = 60_000;
        {
            let s = open();
            s.add_minutes(
                10 * m,
                &[("a".into(), stats(2, 5.0)), ("b".into(), stats(1, 1.0))],
            )
            .unwrap();
            s.add_minutes(10 * m, &[("a".into(), stats(3, 500.0))])
                .unwrap();
            s.add_minutes(11 * m, &[("a".into(), stats(1, 5.0))])
                .unwrap();
            s.add_minutes(11 * m, &[]).unwrap();
        }
        let s = open();
        let a = s.minutes(Some("a"), 0, 12 * m).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].minute_ms, 10 * m);
        assert_eq!(
            (
                a[0].stats.invocations,
                a[0].stats.errors,
                a[0].stats.max_concurrency
            ),
            (5, 2, 3)
        );
        assert_eq!(a[0].stats.durations.count(), 5);
        let mut expected = stats(2, 5.0);
        expected.merge(&stats(3, 500.0));
        assert_eq!(a[0].stats, expected, "merged exactly as MinuteStats::merge");
        // The same function twice in one flush adds up too.
        s.add_minutes(
            12 * m,
            &[("c".into(), stats(1, 2.0)), ("c".into(), stats(4, 9.0))],
        )
        .unwrap();
        let c = s.minutes(Some("c"), 0, i64::MAX).unwrap();
        assert_eq!(
            (c.len(), c[0].stats.invocations, c[0].stats.errors),
            (1, 5, 2)
        );
        s.delete_function("c").unwrap();
        let all = s.minutes(None, 10 * m, 11 * m).unwrap();
        let names: Vec<_> = all.iter().map(|r| r.function.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        // Retention: minutes older than now - retention go.
        let limits = HistoryLimits {
            retention_ms: 90_000,
            max_rows: 100,
        };
        assert_eq!(s.prune(11 * m + 60_000, limits).unwrap(), 2);
        let left = s.minutes(None, 0, i64::MAX).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].minute_ms, 11 * m);
        // The row bound: the oldest minutes go first.
        for k in 20..25 {
            s.add_minutes(k * m, &[("a".into(), stats(1, 1.0))])
                .unwrap();
        }
        let limits = HistoryLimits {
            retention_ms: HISTORY_RETENTION_MS,
            max_rows: 3,
        };
        assert_eq!(s.prune(25 * m, limits).unwrap(), 3);
        let left: Vec<i64> = s
            .minutes(None, 0, i64::MAX)
            .unwrap()
            .iter()
            .map(|r| r.minute_ms / m)
            .collect();
        assert_eq!(left, vec![22, 23, 24]);
        assert_eq!(s.prune(25 * m, limits).unwrap(), 0);
        s.delete_function("a").unwrap();
        assert!(s.minutes(None, 0, i64::MAX).unwrap().is_empty());
    }

    fn alarms_keep_their_state_until_redefined(open: Open) {
        let s = open();
        let spec: AlarmSpec = serde_json::from_value(serde_json::json!({
            "function": "hello", "metric": "errors", "comparison": ">", "threshold": 0
        }))
        .unwrap();
        let a = s.put_alarm("errs", &spec, 1).unwrap();
        assert_eq!(a.state, AlarmState::InsufficientData);
        assert_eq!(s.get_alarm("errs").unwrap(), a);
        s.set_alarm_state("errs", AlarmState::Alarm, "boom", 2)
            .unwrap();
        assert_eq!(
            s.put_alarm("errs", &spec, 3).unwrap().state,
            AlarmState::Alarm
        );
        let got = s.get_alarm("errs").unwrap();
        assert_eq!(
            (got.state, got.reason.as_str(), got.state_ms),
            (AlarmState::Alarm, "boom", 2)
        );
        let mut changed = spec.clone();
        changed.threshold = 5.0;
        let a = s.put_alarm("errs", &changed, 4).unwrap();
        assert_eq!((a.state, a.created_ms), (AlarmState::InsufficientData, 1));
        assert_eq!(s.get_alarm("errs").unwrap(), a);
        s.put_alarm("B", &spec, 5).unwrap();
        let names: Vec<_> = s
            .list_alarms()
            .unwrap()
            .into_iter()
            .map(|a| a.name)
            .collect();
        assert_eq!(names, ["B", "errs"]);
        s.delete_alarm("B").unwrap();
        assert_eq!(s.list_alarms().unwrap().len(), 1);
        s.delete_alarm("errs").unwrap();
        assert!(s.get_alarm("errs").unwrap_err().is_not_found());
        assert!(s.delete_alarm("errs").unwrap_err().is_not_found());
        // A state change of a deleted alarm: a no-op.
        s.set_alarm_state("errs", AlarmState::Ok, "fine", 6)
            .unwrap();
        assert!(s.get_alarm("errs").unwrap_err().is_not_found());
    }

    /// Merging in the database gives what [`MinuteStats::merge`] gives: every bucket
    /// (one- and two-digit indexes), rows without durations, counters near the top.
    fn histograms_and_empty_rows_merge_exactly(open: Open) {
        let s = open();
        let mut one = MinuteStats::default();
        let mut two = MinuteStats::default();
        for k in 0..200 {
            one.durations.record_ms(0.01 * 1.37f64.powi(k % 60));
            two.durations.record_ms(1.11f64.powi(k));
        }
        one.invocations = 200;
        two.invocations = i64::MAX as u64 - 100;
        let throttled = MinuteStats {
            throttles: 3,
            ..Default::default()
        };
        s.add_minutes(
            0,
            &[("h".into(), one.clone()), ("t".into(), throttled.clone())],
        )
        .unwrap();
        s.add_minutes(
            0,
            &[("h".into(), two.clone()), ("t".into(), throttled.clone())],
        )
        .unwrap();
        let rows = s.minutes(None, 0, 1).unwrap();
        let mut expected = one;
        expected.merge(&two);
        expected.invocations = i64::MAX as u64;
        assert_eq!(rows[0].stats, expected, "saturating counters, every bucket");
        assert_eq!(
            rows[0].stats.durations.encode(),
            expected.durations.encode()
        );
        let mut t = throttled.clone();
        t.merge(&throttled);
        assert_eq!((rows[1].function.as_str(), &rows[1].stats), ("t", &t));
    }

    /// Two stores (on PostgreSQL, two pools: two nodes), two threads on each, flushing
    /// rows for the same minutes and functions at the same moment, in different orders:
    /// every flush counts, none is lost or doubled, and nobody deadlocks.
    fn nodes_flushing_the_same_minute_add_up(open: Open) {
        const ROUNDS: u64 = 25;
        const THREADS: usize = 4;
        let m = 60_000;
        let stores = [open(), open()];
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = stores[t % 2].clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    let mut names = ["f1", "f2", "f3"];
                    if t % 2 == 1 {
                        names.reverse();
                    }
                    for round in 0..ROUNDS {
                        let rows: Vec<_> = names
                            .iter()
                            .map(|n| {
                                let mut s = stats(2, 10.0 * (t + 1) as f64);
                                s.max_concurrency = round + t as u64;
                                (n.to_string(), s)
                            })
                            .collect();
                        start.wait();
                        store
                            .add_minutes(m * (1 + (round as i64 % 2)), &rows)
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rows = stores[0].minutes(None, 0, i64::MAX).unwrap();
        assert_eq!(rows.len(), 6, "{rows:?}");
        for r in rows {
            // Half the rounds of every thread went to each minute.
            let flushes = THREADS as u64 * ROUNDS.div_ceil(2);
            let flushes = if r.minute_ms == m {
                flushes
            } else {
                THREADS as u64 * (ROUNDS / 2)
            };
            assert_eq!(r.stats.invocations, 2 * flushes, "{r:?}");
            assert_eq!(r.stats.errors, flushes);
            assert_eq!(r.stats.durations.count(), 2 * flushes);
            let top = if r.minute_ms == m {
                ROUNDS - 1
            } else {
                ROUNDS - 2
            };
            assert_eq!(
                r.stats.max_concurrency,
                top + THREADS as u64 - 1,
                "the largest"
            );
        }
    }
}
