//! Executions: start (with name idempotency), describe, list, stop, redrive, retention.

use super::{decode_token, history, json_text, machines, paginate, parse_json, steps};
use crate::store::error::{StoreError, StoreResult};
use crate::store::execution_arn;
use crate::store::model::*;
use rusqlite::{params, OptionalExtension, Row, Transaction};

const DAY_MS: i64 = 86_400_000;
/// How long after its stop a failed, aborted or timed-out execution can be redriven.
pub const REDRIVE_DAYS: i64 = 14;

const COLS: &str = "arn, machine_arn, name, revision_id, version_arn, alias_arn, status, input, \
     output, error, cause, start_date, stop_date, redrive_count, redrive_date, trace_header, \
     event_count, id";

fn row(r: &Row<'_>) -> rusqlite::Result<(Execution, i64)> {
    let status: String = r.get(6)?;
    Ok((
        Execution {
            arn: r.get(0)?,
            machine_arn: r.get(1)?,
            name: r.get(2)?,
            revision_id: r.get(3)?,
            version_arn: r.get(4)?,
            alias_arn: r.get(5)?,
            status: ExecutionStatus::parse(&status).unwrap_or(ExecutionStatus::Failed),
            input: r.get(7)?,
            output: r.get(8)?,
            error: r.get(9)?,
            cause: r.get(10)?,
            start_date: r.get(11)?,
            stop_date: r.get(12)?,
            redrive_count: r.get(13)?,
            redrive_date: r.get(14)?,
            trace_header: r.get(15)?,
            event_count: r.get(16)?,
        },
        r.get(17)?,
    ))
}

fn find(tx: &Transaction<'_>, arn: &str) -> StoreResult<Option<(Execution, i64)>> {
    Ok(tx
        .query_row(
            &format!("SELECT {COLS} FROM executions WHERE arn = ?1"),
            [arn],
            row,
        )
        .optional()?)
}

pub(super) fn get(tx: &Transaction<'_>, arn: &str) -> StoreResult<Execution> {
    find(tx, arn)?
        .map(|(e, _)| e)
        .ok_or_else(|| StoreError::ExecutionDoesNotExist(arn.into()))
}

pub(super) fn get_by_id(tx: &Transaction<'_>, id: i64) -> StoreResult<Execution> {
    tx.query_row(
        &format!("SELECT {COLS} FROM executions WHERE id = ?1"),
        [id],
        row,
    )
    .optional()?
    .map(|(e, _)| e)
    .ok_or_else(|| StoreError::Corrupt(format!("execution #{id} is missing")))
}

/// The internal id and status of an execution.
pub(super) fn id_status(tx: &Transaction<'_>, arn: &str) -> StoreResult<(i64, ExecutionStatus)> {
    let (id, status): (i64, String) = tx
        .query_row(
            "SELECT id, status FROM executions WHERE arn = ?1",
            [arn],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::ExecutionDoesNotExist(arn.into()))?;
    let status = ExecutionStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("status {status} of {arn}")))?;
    Ok((id, status))
}

pub(super) fn start(
    tx: &Transaction<'_>,
    e: &NewExecution,
    events: &[NewEvent],
    first: &[NewStep],
    now: Millis,
) -> StoreResult<Started> {
    let machine = machines::get_active(tx, &e.machine_arn)?;
    let revision_id = match &e.version_arn {
        Some(v) => {
            let v = machines::version(tx, v)?;
            if v.machine_arn != e.machine_arn {
                return Err(StoreError::VersionDoesNotExist(v.arn));
            }
            v.revision.revision_id
        }
        None => machine.revision.revision_id,
    };
    let arn = execution_arn(&e.machine_arn, &e.name);
    if let Some((old, old_id)) = find(tx, &arn)? {
        if old.status.is_open() {
            return if old.input == e.input {
                Ok(Started {
                    execution: old,
                    created: false,
                })
            } else {
                Err(StoreError::ExecutionAlreadyExists(arn))
            };
        }
        let reusable = old
            .stop_date
            .is_some_and(|s| s + NAME_REUSE_DAYS * DAY_MS <= now);
        if !reusable {
            return Err(StoreError::ExecutionAlreadyExists(arn));
        }
        delete(tx, old_id)?;
    }
    tx.execute(
        "INSERT INTO executions (arn, machine_arn, name, revision_id, version_arn, alias_arn, \
         status, input, start_date, trace_header) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'RUNNING', ?7, ?8, ?9)",
        params![
            arn,
            e.machine_arn,
            e.name,
            revision_id,
            e.version_arn,
            e.alias_arn,
            e.input,
            now,
            e.trace_header
        ],
    )?;
    let id = tx.last_insert_rowid();
    if history::append(tx, id, events, now)? {
        steps::enqueue(tx, id, first)?;
    }
    Ok(Started {
        execution: get_by_id(tx, id)?,
        created: true,
    })
}

/// Applies `u` to execution `id`. A terminal status stops it: stop date set, its steps
/// dropped, its open task tokens closed, and its machine removed if being deleted.
pub(super) fn finish(
    tx: &Transaction<'_>,
    id: i64,
    u: &ExecutionUpdate,
    now: Millis,
) -> StoreResult<()> {
    let terminal = u.status.is_some_and(|s| !s.is_open());
    tx.execute(
        "UPDATE executions SET status = COALESCE(?2, status), output = COALESCE(?3, output), \
         error = COALESCE(?4, error), cause = COALESCE(?5, cause), \
         stop_date = CASE WHEN ?6 THEN ?7 ELSE stop_date END WHERE id = ?1",
        params![
            id,
            u.status.map(|s| s.as_str()),
            u.output,
            u.error,
            u.cause,
            terminal,
            now
        ],
    )?;
    if let Some(step) = &u.redrive {
        let text = json_text(&serde_json::json!({
            "scope": step.scope, "state": step.state, "payload": step.payload,
        }));
        tx.execute(
            "UPDATE executions SET redrive_step = ?2 WHERE id = ?1",
            params![id, text],
        )?;
    }
    if terminal {
        for table in ["steps", "joins", "join_items"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE execution_id = ?1"),
                [id],
            )?;
        }
        tx.execute(
            "UPDATE task_tokens SET status = 'CLOSED' WHERE execution_id = ?1 AND status = 'OPEN'",
            [id],
        )?;
        let machine: String = tx.query_row(
            "SELECT machine_arn FROM executions WHERE id = ?1",
            [id],
            |r| r.get(0),
        )?;
        machines::remove_if_idle(tx, &machine)?;
    }
    Ok(())
}

pub(super) fn list(
    tx: &Transaction<'_>,
    machine_arn: &str,
    status: Option<ExecutionStatus>,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<Execution>> {
    machines::get(tx, machine_arn)?;
    let (before_start, before_id) = match token {
        Some(t) => decode_token(t)?
            .split_once(':')
            .and_then(|(s, i)| Some((s.parse::<i64>().ok()?, i.parse::<i64>().ok()?)))
            .ok_or_else(|| StoreError::InvalidToken(t.into()))?,
        None => (i64::MAX, i64::MAX),
    };
    let mut st = tx.prepare(&format!(
        "SELECT {COLS} FROM executions WHERE machine_arn = ?1 \
         AND (start_date, id) < (?2, ?3) AND (?4 IS NULL OR status = ?4) \
         ORDER BY start_date DESC, id DESC LIMIT ?5"
    ))?;
    let rows = st
        .query_map(
            params![
                machine_arn,
                before_start,
                before_id,
                status.map(|s| s.as_str()),
                max as i64 + 1
            ],
            row,
        )?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let page = paginate(rows, max, |(e, id)| format!("{}:{id}", e.start_date));
    Ok(Page {
        items: page.items.into_iter().map(|(e, _)| e).collect(),
        next_token: page.next_token,
    })
}

pub(super) fn stop(
    tx: &Transaction<'_>,
    arn: &str,
    error: Option<&str>,
    cause: Option<&str>,
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<Execution> {
    let (id, status) = id_status(tx, arn)?;
    if !status.is_open() {
        return Err(StoreError::ExecutionNotRunning(arn.into()));
    }
    if history::append(tx, id, events, now)? {
        finish(
            tx,
            id,
            &ExecutionUpdate {
                status: Some(ExecutionStatus::Aborted),
                output: None,
                error: error.map(Into::into),
                cause: cause.map(Into::into),
                redrive: None,
            },
            now,
        )?;
    }
    get_by_id(tx, id)
}

pub(super) fn redrive(
    tx: &Transaction<'_>,
    arn: &str,
    events: &[NewEvent],
    next: &[NewStep],
    now: Millis,
) -> StoreResult<Execution> {
    let (old, id) = find(tx, arn)?.ok_or_else(|| StoreError::ExecutionDoesNotExist(arn.into()))?;
    let redrivable = matches!(
        old.status,
        ExecutionStatus::Failed | ExecutionStatus::Aborted | ExecutionStatus::TimedOut
    ) && old
        .stop_date
        .is_some_and(|s| now < s + REDRIVE_DAYS * DAY_MS);
    if !redrivable {
        return Err(StoreError::ExecutionNotRedrivable(arn.into()));
    }
    machines::get_active(tx, &old.machine_arn)?;
    tx.execute(
        "UPDATE executions SET status = 'RUNNING', output = NULL, error = NULL, cause = NULL, \
         stop_date = NULL, redrive_count = redrive_count + 1, redrive_date = ?2 WHERE id = ?1",
        params![id, now],
    )?;
    let recorded: Option<String> = tx.query_row(
        "SELECT redrive_step FROM executions WHERE id = ?1",
        [id],
        |r| r.get(0),
    )?;
    tx.execute(
        "UPDATE executions SET redrive_step = NULL WHERE id = ?1",
        [id],
    )?;
    if history::append(tx, id, events, now)? {
        match recorded {
            Some(text) => {
                let v = parse_json(&text)?;
                let step = NewStep {
                    scope: v["scope"].as_str().unwrap_or_default().to_string(),
                    state: v["state"].as_str().unwrap_or_default().to_string(),
                    attempt: 0,
                    due: now,
                    payload: v["payload"].clone(),
                };
                steps::enqueue(tx, id, &[step])?;
            }
            None => steps::enqueue(tx, id, next)?,
        }
    }
    get_by_id(tx, id)
}

/// Deletes an execution and everything it owns.
fn delete(tx: &Transaction<'_>, id: i64) -> StoreResult<()> {
    for table in ["events", "steps", "task_tokens", "joins", "join_items"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE execution_id = ?1"),
            [id],
        )?;
    }
    tx.execute("DELETE FROM executions WHERE id = ?1", [id])?;
    Ok(())
}

pub(super) fn purge(tx: &Transaction<'_>, before: Millis) -> StoreResult<usize> {
    let ids = {
        let mut st = tx.prepare(
            "SELECT id FROM executions WHERE stop_date IS NOT NULL AND stop_date < ?1 \
             AND status NOT IN ('RUNNING', 'PENDING_REDRIVE')",
        )?;
        let ids = st
            .query_map([before], |r| r.get::<_, i64>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        ids
    };
    for id in &ids {
        delete(tx, *id)?;
    }
    let deleting = {
        let mut st = tx.prepare("SELECT arn FROM machines WHERE status = 'DELETING'")?;
        let arns = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        arns
    };
    for arn in deleting {
        machines::remove_if_idle(tx, &arn)?;
    }
    machines::purge_revisions(tx)?;
    Ok(ids.len())
}
