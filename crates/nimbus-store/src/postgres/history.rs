//! [`crate::HistoryStore`] on PostgreSQL (component `history`, tables `history_minutes` and
//! `history_alarms`): the same per-minute rows and alarms as
//! [`crate::SqliteHistoryStore`], shared by every node.
//!
//! **Many writers.** Each node counts its own invocations and flushes its own row for a
//! (function, minute); the stored row is the sum of every node's. SQLite gets that by
//! reading the old row, merging and replacing it under its write lock. Here one
//! `INSERT … ON CONFLICT DO UPDATE` per flush does the merge on the row itself: counters
//! are added (saturating at `i64::MAX`, as SQLite's conversion does), `max_concurrency`
//! takes the larger value (the most any single node saw: nodes' peaks need not overlap,
//! so their sum would overstate it), and the duration histograms, kept in their sparse
//! text form ([`nimbus_metrics::LatencyHistogram::encode`]) as in SQLite, are added
//! bucket by bucket by the SQL function `history_merge_durations`. PostgreSQL runs the
//! upsert atomically per row (a concurrent flush of the same row waits for the row lock,
//! then merges into the committed row), so no flush is lost or counted twice, and a flush
//! locks its rows in function order, so two nodes' flushes never deadlock.

use crate::history::{Alarm, HistoryLimits, HistoryStore, MinuteRow};
use crate::{Result, StoreError};
use nimbus_core::{AlarmSpec, AlarmState};
use nimbus_metrics::{LatencyHistogram, MinuteStats};
use nimbus_pg::{Migration, Pg, Row};
use std::collections::BTreeMap;

const MIGRATIONS: &[Migration] = &[Migration::breaking(
    r#"
CREATE TABLE history_minutes (
    function        TEXT COLLATE "C" NOT NULL,
    minute_ms       BIGINT NOT NULL,
    invocations     BIGINT NOT NULL,
    errors          BIGINT NOT NULL,
    throttles       BIGINT NOT NULL,
    timeouts        BIGINT NOT NULL,
    cold_starts     BIGINT NOT NULL,
    max_concurrency BIGINT NOT NULL,
    durations       TEXT NOT NULL,
    PRIMARY KEY (function, minute_ms)
);
CREATE INDEX history_minutes_by_time ON history_minutes (minute_ms);
CREATE TABLE history_alarms (
    name       TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,
    state      TEXT NOT NULL,
    reason     TEXT NOT NULL,
    state_ms   BIGINT NOT NULL,
    created_ms BIGINT NOT NULL
);
-- a + b, saturating at the largest BIGINT.
CREATE FUNCTION history_add(a BIGINT, b BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT LEAST(a::NUMERIC + b, 9223372036854775807)::BIGINT
$$;
-- Two histograms in LatencyHistogram's sparse text form (`index:count,…`, ascending
-- indexes, empty buckets left out) added bucket by bucket, in the same form.
CREATE FUNCTION history_merge_durations(a TEXT, b TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT COALESCE(string_agg(i || ':' || c, ',' ORDER BY i), '')
    FROM (
        SELECT split_part(p, ':', 1)::INTEGER AS i, SUM(split_part(p, ':', 2)::NUMERIC) AS c
        FROM unnest(string_to_array(a, ',') || string_to_array(b, ',')) AS p
        WHERE p ~ '^[0-9]{1,9}:[0-9]{1,20}$'
        GROUP BY 1
    ) buckets
    WHERE c > 0
$$;
"#,
)];

const MINUTE_COLUMNS: &str = "function, minute_ms, invocations, errors, throttles, timeouts, cold_starts, max_concurrency, durations";
const ALARM_COLUMNS: &str = "name, spec, state, reason, state_ms, created_ms";

/// Serialises [`HistoryStore::prune`] across nodes (an advisory lock key; "hprune").
const PRUNE_LOCK: i64 = 0x68_70_72_75_6e_65;

/// [`HistoryStore`] on PostgreSQL.
#[derive(Clone)]
pub struct PgHistoryStore {
    pg: Pg,
}

impl PgHistoryStore {
    /// Brings the `history` schema up to date.
    pub fn open(pg: &Pg) -> Result<Self> {
        pg.migrate("history", MIGRATIONS)?;
        Ok(Self { pg: pg.clone() })
    }
}

fn decode_minute(r: &Row) -> MinuteRow {
    let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
    MinuteRow {
        function: r.get(0),
        minute_ms: r.get(1),
        stats: MinuteStats {
            invocations: n(2),
            errors: n(3),
            throttles: n(4),
            timeouts: n(5),
            cold_starts: n(6),
            max_concurrency: n(7),
            durations: LatencyHistogram::decode(r.get(8)),
        },
    }
}

fn decode_alarm(r: &Row) -> Result<Alarm> {
    let name: String = r.get(0);
    let spec: &str = r.get(1);
    let state: &str = r.get(2);
    Ok(Alarm {
        spec: serde_json::from_str(spec)
            .map_err(|e| StoreError::Corrupt(format!("alarm {name}: {e}")))?,
        state: AlarmState::parse(state)
            .ok_or_else(|| StoreError::Corrupt(format!("alarm {name}: state {state}")))?,
        reason: r.get(3),
        state_ms: r.get(4),
        created_ms: r.get(5),
        name,
    })
}

fn alarm_missing(name: &str) -> StoreError {
    StoreError::NotFound(format!("alarm not found: {name}"))
}

/// The columns of one flush, one array per column, in function order.
#[derive(Default)]
struct Columns {
    function: Vec<String>,
    invocations: Vec<i64>,
    errors: Vec<i64>,
    throttles: Vec<i64>,
    timeouts: Vec<i64>,
    cold_starts: Vec<i64>,
    max_concurrency: Vec<i64>,
    durations: Vec<String>,
}

impl Columns {
    /// Rows of the same function merged first (one statement cannot update a row twice),
    /// sorted by function (the order the upsert locks them in).
    fn of(rows: &[(String, MinuteStats)]) -> Self {
        let mut merged: BTreeMap<&str, MinuteStats> = BTreeMap::new();
        for (function, stats) in rows {
            merged.entry(function).or_default().merge(stats);
        }
        let i = |v: u64| v.min(i64::MAX as u64) as i64;
        let mut c = Columns::default();
        for (function, s) in merged {
            c.function.push(function.to_string());
            c.invocations.push(i(s.invocations));
            c.errors.push(i(s.errors));
            c.throttles.push(i(s.throttles));
            c.timeouts.push(i(s.timeouts));
            c.cold_starts.push(i(s.cold_starts));
            c.max_concurrency.push(i(s.max_concurrency));
            c.durations.push(s.durations.encode());
        }
        c
    }
}

impl HistoryStore for PgHistoryStore {
    fn add_minutes(&self, minute_ms: i64, rows: &[(String, MinuteStats)]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let c = Columns::of(rows);
        self.pg.with(async |db| {
            db.execute(
                &format!(
                    "INSERT INTO history_minutes ({MINUTE_COLUMNS})
                     SELECT f, $2, i, e, t, o, c, m, d
                     FROM unnest($1::TEXT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[],
                                 $6::BIGINT[], $7::BIGINT[], $8::BIGINT[], $9::TEXT[])
                          WITH ORDINALITY AS u(f, i, e, t, o, c, m, d, n)
                     ORDER BY n
                     ON CONFLICT (function, minute_ms) DO UPDATE SET
                         invocations = history_add(history_minutes.invocations, EXCLUDED.invocations),
                         errors = history_add(history_minutes.errors, EXCLUDED.errors),
                         throttles = history_add(history_minutes.throttles, EXCLUDED.throttles),
                         timeouts = history_add(history_minutes.timeouts, EXCLUDED.timeouts),
                         cold_starts = history_add(history_minutes.cold_starts, EXCLUDED.cold_starts),
                         max_concurrency = GREATEST(history_minutes.max_concurrency, EXCLUDED.max_concurrency),
                         durations = history_merge_durations(history_minutes.durations, EXCLUDED.durations)"
                ),
                &[
                    &c.function,
                    &minute_ms,
                    &c.invocations,
                    &c.errors,
                    &c.throttles,
                    &c.timeouts,
                    &c.cold_starts,
                    &c.max_concurrency,
                    &c.durations,
                ],
            )
            .await?;
            Ok(())
        })?;
        Ok(())
    }

    fn minutes(&self, function: Option<&str>, from_ms: i64, to_ms: i64) -> Result<Vec<MinuteRow>> {
        let rows = self.pg.with(async |c| {
            Ok(c.query(
                &format!(
                    "SELECT {MINUTE_COLUMNS} FROM history_minutes
                     WHERE minute_ms >= $1 AND minute_ms < $2
                       AND ($3::TEXT IS NULL OR function = $3)
                     ORDER BY minute_ms, function"
                ),
                &[&from_ms, &to_ms, &function],
            )
            .await?)
        })?;
        Ok(rows.iter().map(decode_minute).collect())
    }

    fn delete_function(&self, function: &str) -> Result<()> {
        self.pg.with(async |c| {
            c.execute(
                "DELETE FROM history_minutes WHERE function = $1",
                &[&function],
            )
            .await?;
            Ok(())
        })?;
        Ok(())
    }

    fn prune(&self, now_ms: i64, limits: HistoryLimits) -> Result<u64> {
        let before = now_ms.saturating_sub(limits.retention_ms);
        let max_rows = limits.max_rows.min(i64::MAX as u64) as i64;
        // One node prunes at a time: two at once would both see the same excess.
        let deleted = self.pg.transaction(async |tx| {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PRUNE_LOCK])
                .await?;
            let mut deleted = tx
                .execute(
                    "DELETE FROM history_minutes WHERE minute_ms < $1",
                    &[&before],
                )
                .await?;
            let rows: i64 = tx
                .query_one("SELECT COUNT(*) FROM history_minutes", &[])
                .await?
                .get(0);
            let excess = rows.saturating_sub(max_rows);
            if excess > 0 {
                // The minute at which `excess` rows are older: delete up to and including it.
                let cut = tx
                    .query_opt(
                        "SELECT minute_ms FROM history_minutes ORDER BY minute_ms
                         LIMIT 1 OFFSET $1",
                        &[&(excess - 1)],
                    )
                    .await?;
                if let Some(cut) = cut {
                    let cut: i64 = cut.get(0);
                    deleted += tx
                        .execute("DELETE FROM history_minutes WHERE minute_ms <= $1", &[&cut])
                        .await?;
                }
            }
            Ok(deleted)
        })?;
        Ok(deleted)
    }

    fn put_alarm(&self, name: &str, spec: &AlarmSpec, now_ms: i64) -> Result<Alarm> {
        let text = serde_json::to_string(spec)
            .map_err(|e| StoreError::InvalidInput(format!("alarm {name}: {e}")))?;
        // The old alarm is read under its row lock; a creation that loses a race with
        // another node's (the insert finds the row there) starts over and sees it.
        loop {
            let outcome = self.pg.transaction(async |tx| {
                let old = tx
                    .query_opt(
                        &format!(
                            "SELECT {ALARM_COLUMNS} FROM history_alarms WHERE name = $1 FOR UPDATE"
                        ),
                        &[&name],
                    )
                    .await?;
                let old = match old.as_ref().map(decode_alarm).transpose() {
                    Ok(old) => old,
                    Err(e) => return Ok(Some(Err(e))),
                };
                let existed = old.is_some();
                let alarm = match old {
                    Some(old) if old.spec == *spec => return Ok(Some(Ok(old))),
                    old => Alarm {
                        name: name.to_string(),
                        spec: spec.clone(),
                        state: AlarmState::InsufficientData,
                        reason: "Unchecked: Initial alarm creation".into(),
                        state_ms: now_ms,
                        created_ms: old.map_or(now_ms, |o| o.created_ms),
                    },
                };
                let state = alarm.state.as_str();
                let params: [&(dyn nimbus_pg::types::ToSql + Sync); 6] = [
                    &alarm.name,
                    &text,
                    &state,
                    &alarm.reason,
                    &alarm.state_ms,
                    &alarm.created_ms,
                ];
                if existed {
                    tx.execute(
                        "UPDATE history_alarms
                         SET spec = $2, state = $3, reason = $4, state_ms = $5, created_ms = $6
                         WHERE name = $1",
                        &params,
                    )
                    .await?;
                } else {
                    let n = tx
                        .execute(
                            &format!(
                                "INSERT INTO history_alarms ({ALARM_COLUMNS})
                                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name) DO NOTHING"
                            ),
                            &params,
                        )
                        .await?;
                    if n == 0 {
                        return Ok(None);
                    }
                }
                Ok(Some(Ok(alarm)))
            })?;
            if let Some(result) = outcome {
                return result;
            }
        }
    }

    fn get_alarm(&self, name: &str) -> Result<Alarm> {
        let row = self.pg.with(async |c| {
            Ok(c.query_opt(
                &format!("SELECT {ALARM_COLUMNS} FROM history_alarms WHERE name = $1"),
                &[&name],
            )
            .await?)
        })?;
        match row {
            Some(r) => decode_alarm(&r),
            None => Err(alarm_missing(name)),
        }
    }

    fn list_alarms(&self) -> Result<Vec<Alarm>> {
        let rows = self.pg.with(async |c| {
            Ok(c.query(
                &format!("SELECT {ALARM_COLUMNS} FROM history_alarms ORDER BY name"),
                &[],
            )
            .await?)
        })?;
        rows.iter().map(decode_alarm).collect()
    }

    fn delete_alarm(&self, name: &str) -> Result<()> {
        let n = self.pg.with(async |c| {
            Ok(
                c.execute("DELETE FROM history_alarms WHERE name = $1", &[&name])
                    .await?,
            )
        })?;
        match n {
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
        let state = state.as_str();
        self.pg.with(async |c| {
            c.execute(
                "UPDATE history_alarms SET state = $2, reason = $3, state_ms = $4 WHERE name = $1",
                &[&name, &state, &reason, &now_ms],
            )
            .await?;
            Ok(())
        })?;
        Ok(())
    }
}
