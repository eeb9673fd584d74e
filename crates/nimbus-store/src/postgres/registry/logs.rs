//! The log store on PostgreSQL (component `logs`: tables `logs_lines` and `logs_usage`).
//!
//! Bounds as [`LogLimits`] says: each stored line has an accounted `size` (as in SQLite),
//! `logs_usage` holds the lines and bytes per function, updated in the transaction that adds
//! or removes rows; an append prunes the oldest lines of each function over its bounds and,
//! while the stored bytes exceed 3/4 of `total_bytes`, the oldest lines of the functions
//! holding the most.
//!
//! `seq` comes from the table's sequence (`BIGSERIAL`). Appends and deletions of a
//! function's lines are serialised across nodes by a transaction-scoped advisory lock, so
//! lines become visible in `seq` order: a reader's cursor (`after`) never passes a line
//! that another node commits later with a smaller `seq`, and the usage counters cannot
//! race. The log writer batches lines, so one lock per batch is cheap.

use super::{execute, get, query, query_one, PgStore};
use crate::{LogEntry, LogLimits, LogPage, LogQuery, LogUsage, Result, StoreError};
use nimbus_core::LogLevel;
use nimbus_pg::types::ToSql;
use nimbus_pg::{Migration, Transaction};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// Schema of the `logs` component.
pub(super) const LOGS_MIGRATIONS: &[Migration] = &[Migration::breaking(
    r#"
CREATE TABLE logs_lines (
    seq        BIGSERIAL PRIMARY KEY,
    function   TEXT COLLATE "C" NOT NULL,
    ts_ms      BIGINT NOT NULL,
    request_id TEXT,
    stream     TEXT NOT NULL,
    line       TEXT NOT NULL,
    -- The accounted bytes of the row (see `row_size`).
    size       BIGINT NOT NULL,
    -- 1 TRACE … 6 FATAL; NULL when the line names none.
    level      BIGINT,
    trace_id   TEXT
);
CREATE INDEX logs_lines_by_function ON logs_lines (function, seq);
CREATE INDEX logs_lines_by_time ON logs_lines (ts_ms);
CREATE TABLE logs_usage (
    function TEXT COLLATE "C" PRIMARY KEY,
    lines    BIGINT NOT NULL,
    bytes    BIGINT NOT NULL
);
"#,
)];

/// The advisory lock serialising log writes ("logs_ln" in ASCII).
const LOCK: i64 = 0x6c_6f_67_73_5f_6c_6e;

/// Bytes a stored line is accounted for (as the SQLite store counts them): its text, its
/// function name, request id and trace id, and 48 bytes for the other columns and index
/// entries.
fn row_size(e: &LogEntry) -> u64 {
    (e.line.len()
        + e.function.len()
        + e.request_id.as_ref().map_or(0, String::len)
        + e.trace_id.as_ref().map_or(0, String::len)
        + 48) as u64
}

/// The accounted bytes aimed at under `total_bytes`: 3/4 of it, leaving room for
/// PostgreSQL's tuple headers, indexes and not yet vacuumed space.
fn stored_target(limits: &LogLimits) -> u64 {
    limits.total_bytes / 4 * 3
}

#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    lines: u64,
    bytes: u64,
}

async fn lock(tx: &Transaction<'_>) -> Result<()> {
    execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&LOCK]).await?;
    Ok(())
}

/// Deletes every line of `function` (in the caller's transaction).
pub(super) async fn delete_function(tx: &Transaction<'_>, function: &str) -> Result<()> {
    lock(tx).await?;
    execute(
        tx,
        "DELETE FROM logs_lines WHERE function = $1",
        &[&function],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM logs_usage WHERE function = $1",
        &[&function],
    )
    .await?;
    Ok(())
}

/// Deletes the oldest lines of `function` until at least `lines` lines and `bytes` bytes
/// are gone (or none is left), takes them off its usage row and returns what went.
async fn prune_oldest(
    tx: &Transaction<'_>,
    function: &str,
    lines: u64,
    bytes: u64,
) -> Result<Usage> {
    if lines == 0 && bytes == 0 {
        return Ok(Usage::default());
    }
    let row = query_one(
        tx,
        "WITH w AS (
             SELECT seq, row_number() OVER (ORDER BY seq) AS n,
                    SUM(size) OVER (ORDER BY seq) AS b
             FROM logs_lines WHERE function = $1
         ),
         cut AS (
             -- `w` is read once, in order, up to the first row that is enough: the scan
             -- stops there instead of summing every line of the function.
             SELECT COALESCE(
                 (SELECT seq FROM w WHERE n >= $2::BIGINT AND b >= $3::BIGINT
                  ORDER BY seq LIMIT 1),
                 (SELECT MAX(seq) FROM logs_lines WHERE function = $1)) AS seq
         ),
         gone AS (
             DELETE FROM logs_lines l USING cut
             WHERE l.function = $1 AND l.seq <= cut.seq
             RETURNING l.size
         )
         SELECT COUNT(*)::BIGINT, COALESCE(SUM(size), 0)::BIGINT FROM gone",
        &[
            &function,
            &i64::try_from(lines).unwrap_or(i64::MAX),
            &i64::try_from(bytes).unwrap_or(i64::MAX),
        ],
    )
    .await?;
    let gone = Usage {
        lines: get::<i64>(&row, 0)?.max(0) as u64,
        bytes: get::<i64>(&row, 1)?.max(0) as u64,
    };
    if gone.lines > 0 {
        execute(
            tx,
            "UPDATE logs_usage SET lines = GREATEST(lines - $2, 0),
                 bytes = GREATEST(bytes - $3, 0)
             WHERE function = $1",
            &[&function, &(gone.lines as i64), &(gone.bytes as i64)],
        )
        .await?;
        execute(
            tx,
            "DELETE FROM logs_usage WHERE function = $1 AND lines = 0",
            &[&function],
        )
        .await?;
    }
    Ok(gone)
}

impl PgStore {
    /// Appends `entries`, then prunes the oldest lines of each function over its bounds and,
    /// while the store is over its total, of the functions holding the most bytes.
    pub(super) fn append(&self, entries: &[LogEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut appended: BTreeMap<&str, Usage> = BTreeMap::new();
        let mut functions = Vec::with_capacity(entries.len());
        let mut ts = Vec::with_capacity(entries.len());
        let mut request_ids = Vec::with_capacity(entries.len());
        let mut streams = Vec::with_capacity(entries.len());
        let mut lines = Vec::with_capacity(entries.len());
        let mut sizes = Vec::with_capacity(entries.len());
        let mut levels = Vec::with_capacity(entries.len());
        let mut trace_ids = Vec::with_capacity(entries.len());
        for e in entries {
            let size = row_size(e);
            functions.push(e.function.as_str());
            ts.push(e.ts_ms);
            request_ids.push(e.request_id.as_deref());
            streams.push(e.stream.as_str());
            lines.push(e.line.as_str());
            sizes.push(size as i64);
            levels.push(e.level.map(LogLevel::rank));
            trace_ids.push(e.trace_id.as_deref());
            let u = appended.entry(e.function.as_str()).or_default();
            u.lines += 1;
            u.bytes += size;
        }
        let limits = self.limits;
        let pruned = self.tx(async |tx| {
            lock(tx).await?;
            // In the batch's order, so `seq` follows it.
            execute(
                tx,
                "INSERT INTO logs_lines (function, ts_ms, request_id, stream, line, size, level,
                     trace_id)
                 SELECT f, t, r, s, l, z, v, tr
                 FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[],
                             $6::BIGINT[], $7::BIGINT[], $8::TEXT[])
                      WITH ORDINALITY AS u(f, t, r, s, l, z, v, tr, n)
                 ORDER BY n",
                &[
                    &functions,
                    &ts,
                    &request_ids,
                    &streams,
                    &lines,
                    &sizes,
                    &levels,
                    &trace_ids,
                ],
            )
            .await?;
            let mut pruned = Usage::default();
            for (f, u) in &appended {
                let row = query_one(
                    tx,
                    "INSERT INTO logs_usage (function, lines, bytes) VALUES ($1, $2, $3)
                     ON CONFLICT (function) DO UPDATE SET
                         lines = logs_usage.lines + EXCLUDED.lines,
                         bytes = logs_usage.bytes + EXCLUDED.bytes
                     RETURNING lines, bytes",
                    &[f, &(u.lines as i64), &(u.bytes as i64)],
                )
                .await?;
                let lines = get::<i64>(&row, 0)?.max(0) as u64;
                let bytes = get::<i64>(&row, 1)?.max(0) as u64;
                let excess_lines = lines.saturating_sub(limits.lines_per_function as u64);
                let excess_bytes = bytes.saturating_sub(limits.bytes_per_function);
                if excess_lines > 0 || excess_bytes > 0 {
                    let gone = prune_oldest(tx, f, excess_lines, excess_bytes).await?;
                    pruned.lines += gone.lines;
                    pruned.bytes += gone.bytes;
                }
            }
            let target = stored_target(&limits);
            loop {
                let total: i64 = get(
                    &query_one(
                        tx,
                        "SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM logs_usage",
                        &[],
                    )
                    .await?,
                    0,
                )?;
                let total = total.max(0) as u64;
                if total <= target {
                    break;
                }
                let top = query(
                    tx,
                    "SELECT function, bytes FROM logs_usage ORDER BY bytes DESC, function LIMIT 2",
                    &[],
                )
                .await?;
                let Some(first) = top.first() else { break };
                let f: String = get(first, 0)?;
                let bytes = get::<i64>(first, 1)?.max(0) as u64;
                let second = match top.get(1) {
                    Some(r) => get::<i64>(r, 1)?.max(0) as u64,
                    None => 0,
                };
                // Level the largest down towards the runner-up (at least a quarter of it),
                // so a flooding function loses its own lines before quiet ones lose theirs.
                let excess = total - target;
                let want = excess.min(bytes.saturating_sub(second).max(bytes / 4).max(1));
                let gone = prune_oldest(tx, &f, 0, want).await?;
                if gone.lines == 0 {
                    break;
                }
                pruned.lines += gone.lines;
                pruned.bytes += gone.bytes;
            }
            Ok(pruned)
        })?;
        self.pruned_lines.fetch_add(pruned.lines, Ordering::Relaxed);
        self.vacuum_debt.fetch_add(pruned.bytes, Ordering::Relaxed);
        Ok(())
    }

    /// `VACUUM`s `logs_lines` once this process has pruned an eighth of the store's bound
    /// since the last time (the server calls it every 2 s, off the request path), and
    /// returns the bytes the table shrank by. Autovacuum looks at a table only once a
    /// minute (`autovacuum_naptime`): under a flood of log lines the pruned rows it has not
    /// reached yet grew the table a third past its bound (88 MiB of 64 in the e2e flood).
    /// Vacuumed, their space is reused by the next lines. `SKIP_LOCKED`: if another node
    /// or autovacuum is vacuuming the table now, that is enough.
    pub(super) fn vacuum_logs(&self) -> Result<u64> {
        let debt = self.vacuum_debt.load(Ordering::Relaxed);
        if debt < self.limits.total_bytes / 8 {
            return Ok(0);
        }
        self.vacuum_debt.fetch_sub(debt, Ordering::Relaxed);
        const SIZE: &str = "SELECT pg_total_relation_size('logs_lines')";
        let shrunk = self.pg.with(async |c| {
            let before: i64 = c.query_one(SIZE, &[]).await?.get(0);
            c.batch_execute("VACUUM (SKIP_LOCKED) logs_lines").await?;
            let after: i64 = c.query_one(SIZE, &[]).await?.get(0);
            Ok((before - after).max(0) as u64)
        })?;
        Ok(shrunk)
    }

    /// Lines matching `q` of `functions` (all for `None`), oldest first. The page's `next`
    /// is the last line's `seq` when the page is full, else the newest `seq` stored when the
    /// read began: lines filtered out are not looked at again.
    pub(super) fn query_lines(
        &self,
        functions: Option<&[String]>,
        q: &LogQuery,
    ) -> Result<LogPage> {
        self.tx(async |tx| {
            let hi: i64 = get(
                &query_one(tx, "SELECT COALESCE(MAX(seq), 0) FROM logs_lines", &[]).await?,
                0,
            )?;
            let next_if_short = hi.max(q.after);
            if functions.is_some_and(|f| f.is_empty()) || q.limit == 0 {
                return Ok(LogPage {
                    entries: Vec::new(),
                    next: next_if_short,
                });
            }
            let mut sql = String::from(
                "SELECT seq, function, ts_ms, request_id, stream, line, level, trace_id
                 FROM logs_lines WHERE seq > $1 AND seq <= $2",
            );
            let mut args: Vec<Box<dyn ToSql + Sync + Send>> = vec![Box::new(q.after), Box::new(hi)];
            let mut arg = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync + Send>| {
                args.push(v);
                sql.push_str(&clause.replace('?', &format!("${}", args.len())));
            };
            match functions {
                Some([one]) => arg(&mut sql, " AND function = ?", Box::new(one.clone())),
                Some(many) => arg(&mut sql, " AND function = ANY(?)", Box::new(many.to_vec())),
                None => {}
            }
            if let Some(t) = q.since_ms {
                arg(&mut sql, " AND ts_ms >= ?", Box::new(t));
            }
            if let Some(t) = q.until_ms {
                arg(&mut sql, " AND ts_ms < ?", Box::new(t));
            }
            if let Some(l) = q.min_level {
                arg(&mut sql, " AND COALESCE(level, 3) >= ?", Box::new(l.rank()));
            }
            if let Some(r) = &q.request_id {
                arg(&mut sql, " AND request_id = ?", Box::new(r.clone()));
            }
            if let Some(g) = &q.grep {
                arg(&mut sql, " AND strpos(line, ?) > 0", Box::new(g.clone()));
            }
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            arg(&mut sql, " ORDER BY seq LIMIT ?", Box::new(limit));
            let params: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let rows = query(tx, &sql, &params).await?;
            let mut entries = Vec::with_capacity(rows.len());
            for r in &rows {
                let seq: i64 = get(r, 0)?;
                let function: String = get(r, 1)?;
                let stream: String = get(r, 4)?;
                let level: Option<i64> = get(r, 6)?;
                entries.push(LogEntry {
                    stream: stream.parse().map_err(|e| {
                        StoreError::Corrupt(format!("log line {seq} of {function}: {e}"))
                    })?,
                    seq,
                    function,
                    ts_ms: get(r, 2)?,
                    request_id: get(r, 3)?,
                    line: get(r, 5)?,
                    level: level.and_then(LogLevel::from_rank),
                    trace_id: get(r, 7)?,
                });
            }
            let next = if entries.len() >= q.limit {
                entries.last().map_or(next_if_short, |e| e.seq)
            } else {
                next_if_short
            };
            Ok(LogPage { entries, next })
        })
    }

    /// What the store holds now. `file_bytes` is the size of `logs_lines` with its indexes
    /// and TOAST data; on a database error, zeros (and a warning).
    pub(super) fn usage(&self) -> LogUsage {
        let read = self.tx(async |tx| {
            let row = query_one(
                tx,
                "SELECT COALESCE(SUM(lines), 0)::BIGINT, COALESCE(SUM(bytes), 0)::BIGINT,
                     pg_total_relation_size('logs_lines')
                 FROM logs_usage",
                &[],
            )
            .await?;
            Ok((
                get::<i64>(&row, 0)?,
                get::<i64>(&row, 1)?,
                get::<i64>(&row, 2)?,
            ))
        });
        let (lines, bytes, file) = read.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the log store's usage");
            (0, 0, 0)
        });
        LogUsage {
            lines: lines.max(0) as u64,
            stored_bytes: bytes.max(0) as u64,
            file_bytes: file.max(0) as u64,
            limit_bytes: self.limits.total_bytes,
            pruned_lines: self.pruned_lines.load(Ordering::Relaxed),
        }
    }
}
