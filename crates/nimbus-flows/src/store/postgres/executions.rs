//! Executions: start (with name idempotency), describe, list, stop, redrive, retention.

use super::{decode_token, history, json_text, machines, paginate, parse_json, steps, u32_of, Tx};
use crate::store::error::{StoreError, StoreResult};
use crate::store::execution_arn;
use crate::store::model::*;
use nimbus_pg::Row;

const DAY_MS: i64 = 86_400_000;
/// How long after its stop a failed, aborted or timed-out execution can be redriven.
pub const REDRIVE_DAYS: i64 = 14;

const COLS: &str = "arn, machine_arn, name, revision_id, version_arn, alias_arn, status, input, \
     output, error, cause, start_date, stop_date, redrive_count, redrive_date, trace_header, \
     event_count, id";

fn row(r: &Row) -> (Execution, i64) {
    let status: String = r.get(6);
    (
        Execution {
            arn: r.get(0),
            machine_arn: r.get(1),
            name: r.get(2),
            revision_id: r.get(3),
            version_arn: r.get(4),
            alias_arn: r.get(5),
            status: ExecutionStatus::parse(&status).unwrap_or(ExecutionStatus::Failed),
            input: r.get(7),
            output: r.get(8),
            error: r.get(9),
            cause: r.get(10),
            start_date: r.get(11),
            stop_date: r.get(12),
            redrive_count: u32_of(r, 13),
            redrive_date: r.get(14),
            trace_header: r.get(15),
            event_count: u32_of(r, 16),
        },
        r.get(17),
    )
}

async fn find(tx: &Tx<'_>, arn: &str) -> StoreResult<Option<(Execution, i64)>> {
    Ok(tx
        .query_opt(
            &format!("SELECT {COLS} FROM flows_executions WHERE arn = $1"),
            &[&arn],
        )
        .await?
        .map(|r| row(&r)))
}

pub(super) async fn get(tx: &Tx<'_>, arn: &str) -> StoreResult<Execution> {
    find(tx, arn)
        .await?
        .map(|(e, _)| e)
        .ok_or_else(|| StoreError::ExecutionDoesNotExist(arn.into()))
}

pub(super) async fn get_by_id(tx: &Tx<'_>, id: i64) -> StoreResult<Execution> {
    tx.query_opt(
        &format!("SELECT {COLS} FROM flows_executions WHERE id = $1"),
        &[&id],
    )
    .await?
    .map(|r| row(&r).0)
    .ok_or_else(|| StoreError::Corrupt(format!("execution #{id} is missing")))
}

fn parse_status(arn: &str, status: String) -> StoreResult<ExecutionStatus> {
    ExecutionStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("status {status} of {arn}")))
}

/// The internal id and status of an execution.
pub(super) async fn id_status(tx: &Tx<'_>, arn: &str) -> StoreResult<(i64, ExecutionStatus)> {
    let r = tx
        .query_opt(
            "SELECT id, status FROM flows_executions WHERE arn = $1",
            &[&arn],
        )
        .await?
        .ok_or_else(|| StoreError::ExecutionDoesNotExist(arn.into()))?;
    Ok((r.get(0), parse_status(arn, r.get(1))?))
}

/// [`id_status`] with the execution's row locked: the writes to one execution take turns.
pub(super) async fn lock(tx: &Tx<'_>, arn: &str) -> StoreResult<(i64, ExecutionStatus)> {
    let r = tx
        .query_opt(
            "SELECT id, status FROM flows_executions WHERE arn = $1 FOR UPDATE",
            &[&arn],
        )
        .await?
        .ok_or_else(|| StoreError::ExecutionDoesNotExist(arn.into()))?;
    Ok((r.get(0), parse_status(arn, r.get(1))?))
}

/// Locks execution `id`'s row; its status, `None` when it is gone.
pub(super) async fn lock_id(tx: &Tx<'_>, id: i64) -> StoreResult<Option<ExecutionStatus>> {
    let Some(r) = tx
        .query_opt(
            "SELECT status FROM flows_executions WHERE id = $1 FOR UPDATE",
            &[&id],
        )
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(parse_status(&format!("#{id}"), r.get(0))?))
}

pub(super) async fn start(
    tx: &Tx<'_>,
    e: &NewExecution,
    events: &[NewEvent],
    first: &[NewStep],
    now: Millis,
) -> StoreResult<Started> {
    // Held to the commit: a delete of the machine waits for this start.
    let machine = machines::lock(tx, &e.machine_arn, true).await?;
    if machine.status == MachineStatus::Deleting {
        return Err(StoreError::MachineDeleting(e.machine_arn.clone()));
    }
    let revision_id = match &e.version_arn {
        Some(v) => {
            let v = machines::version(tx, v).await?;
            if v.machine_arn != e.machine_arn {
                return Err(StoreError::VersionDoesNotExist(v.arn));
            }
            v.revision.revision_id
        }
        None => machine.revision.revision_id,
    };
    let arn = execution_arn(&e.machine_arn, &e.name);
    // Two nodes starting the same name: the insert of the second waits for the first and
    // finds the name taken; it then answers as if it had come second.
    loop {
        if let Some((old, old_id)) = find(tx, &arn).await? {
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
            if lock_id(tx, old_id).await?.is_some_and(|s| s.is_open()) {
                continue; // redriven meanwhile: look again
            }
            delete(tx, old_id).await?;
        }
        let inserted = tx
            .query_opt(
                "INSERT INTO flows_executions (arn, machine_arn, name, revision_id, version_arn, \
                 alias_arn, status, input, start_date, trace_header) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'RUNNING', $7, $8, $9) \
                 ON CONFLICT (arn) DO NOTHING RETURNING id",
                &[
                    &arn,
                    &e.machine_arn,
                    &e.name,
                    &revision_id,
                    &e.version_arn,
                    &e.alias_arn,
                    &e.input,
                    &now,
                    &e.trace_header,
                ],
            )
            .await?;
        let Some(r) = inserted else {
            continue;
        };
        let id: i64 = r.get(0);
        if history::append(tx, id, events, now).await? {
            steps::enqueue(tx, id, first).await?;
        }
        return Ok(Started {
            execution: get_by_id(tx, id).await?,
            created: true,
        });
    }
}

/// Applies `u` to execution `id` (locked by the caller). A terminal status stops it: stop
/// date set, its steps dropped, its open task tokens closed, and its machine removed if
/// being deleted.
pub(super) async fn finish(
    tx: &Tx<'_>,
    id: i64,
    u: &ExecutionUpdate,
    now: Millis,
) -> StoreResult<()> {
    let terminal = u.status.is_some_and(|s| !s.is_open());
    tx.execute(
        "UPDATE flows_executions SET status = COALESCE($2, status), \
         output = COALESCE($3, output), error = COALESCE($4, error), \
         cause = COALESCE($5, cause), \
         stop_date = CASE WHEN $6 THEN $7 ELSE stop_date END WHERE id = $1",
        &[
            &id,
            &u.status.map(|s| s.as_str()),
            &u.output,
            &u.error,
            &u.cause,
            &terminal,
            &now,
        ],
    )
    .await?;
    if let Some(step) = &u.redrive {
        let text = json_text(&serde_json::json!({
            "scope": step.scope, "state": step.state, "payload": step.payload,
        }));
        tx.execute(
            "UPDATE flows_executions SET redrive_step = $2 WHERE id = $1",
            &[&id, &text],
        )
        .await?;
    }
    if terminal {
        for table in ["flows_steps", "flows_joins", "flows_join_items"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE execution_id = $1"),
                &[&id],
            )
            .await?;
        }
        tx.execute(
            "UPDATE flows_task_tokens SET status = 'CLOSED' \
             WHERE execution_id = $1 AND status = 'OPEN'",
            &[&id],
        )
        .await?;
        let machine: String = tx
            .query_one(
                "SELECT machine_arn FROM flows_executions WHERE id = $1",
                &[&id],
            )
            .await?
            .get(0);
        machines::remove_if_idle(tx, &machine).await?;
    }
    Ok(())
}

pub(super) async fn list(
    tx: &Tx<'_>,
    machine_arn: &str,
    status: Option<ExecutionStatus>,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<Execution>> {
    machines::get(tx, machine_arn).await?;
    let (before_start, before_id) = match token {
        Some(t) => decode_token(t)?
            .split_once(':')
            .and_then(|(s, i)| Some((s.parse::<i64>().ok()?, i.parse::<i64>().ok()?)))
            .ok_or_else(|| StoreError::InvalidToken(t.into()))?,
        None => (i64::MAX, i64::MAX),
    };
    let rows = tx
        .query(
            &format!(
                "SELECT {COLS} FROM flows_executions WHERE machine_arn = $1 \
                 AND (start_date, id) < ($2, $3) AND ($4::TEXT IS NULL OR status = $4) \
                 ORDER BY start_date DESC, id DESC LIMIT $5"
            ),
            &[
                &machine_arn,
                &before_start,
                &before_id,
                &status.map(|s| s.as_str()),
                &(max as i64 + 1),
            ],
        )
        .await?;
    let rows: Vec<_> = rows.iter().map(row).collect();
    let page = paginate(rows, max, |(e, id)| format!("{}:{id}", e.start_date));
    Ok(Page {
        items: page.items.into_iter().map(|(e, _)| e).collect(),
        next_token: page.next_token,
    })
}

pub(super) async fn stop(
    tx: &Tx<'_>,
    arn: &str,
    error: Option<&str>,
    cause: Option<&str>,
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<Execution> {
    let (id, status) = lock(tx, arn).await?;
    if !status.is_open() {
        return Err(StoreError::ExecutionNotRunning(arn.into()));
    }
    if history::append(tx, id, events, now).await? {
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
        )
        .await?;
    }
    get_by_id(tx, id).await
}

pub(super) async fn redrive(
    tx: &Tx<'_>,
    arn: &str,
    events: &[NewEvent],
    next: &[NewStep],
    now: Millis,
) -> StoreResult<Execution> {
    lock(tx, arn).await?;
    let (old, id) = find(tx, arn)
        .await?
        .ok_or_else(|| StoreError::ExecutionDoesNotExist(arn.into()))?;
    let redrivable = matches!(
        old.status,
        ExecutionStatus::Failed | ExecutionStatus::Aborted | ExecutionStatus::TimedOut
    ) && old
        .stop_date
        .is_some_and(|s| now < s + REDRIVE_DAYS * DAY_MS);
    if !redrivable {
        return Err(StoreError::ExecutionNotRedrivable(arn.into()));
    }
    // Running again: the machine must not be removed under it (order: execution, machine).
    let machine = machines::lock(tx, &old.machine_arn, true).await?;
    if machine.status == MachineStatus::Deleting {
        return Err(StoreError::MachineDeleting(old.machine_arn));
    }
    let recorded: Option<String> = tx
        .query_one(
            "SELECT redrive_step FROM flows_executions WHERE id = $1",
            &[&id],
        )
        .await?
        .get(0);
    tx.execute(
        "UPDATE flows_executions SET status = 'RUNNING', output = NULL, error = NULL, \
         cause = NULL, stop_date = NULL, redrive_count = redrive_count + 1, \
         redrive_date = $2, redrive_step = NULL WHERE id = $1",
        &[&id, &now],
    )
    .await?;
    if history::append(tx, id, events, now).await? {
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
                steps::enqueue(tx, id, &[step]).await?;
            }
            None => steps::enqueue(tx, id, next).await?,
        }
    }
    get_by_id(tx, id).await
}

/// Deletes an execution and everything it owns.
async fn delete(tx: &Tx<'_>, id: i64) -> StoreResult<()> {
    for table in [
        "flows_events",
        "flows_steps",
        "flows_task_tokens",
        "flows_joins",
        "flows_join_items",
    ] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE execution_id = $1"),
            &[&id],
        )
        .await?;
    }
    tx.execute("DELETE FROM flows_executions WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

pub(super) async fn purge(tx: &Tx<'_>, before: Millis) -> StoreResult<usize> {
    // Locked (skipping any another transaction holds: the next purge gets them), and
    // re-checked under the lock: a redrive may have reopened one.
    let ids: Vec<i64> = tx
        .query(
            "SELECT id FROM flows_executions WHERE stop_date IS NOT NULL AND stop_date < $1 \
             AND status NOT IN ('RUNNING', 'PENDING_REDRIVE') FOR UPDATE SKIP LOCKED",
            &[&before],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in &ids {
        delete(tx, *id).await?;
    }
    let deleting: Vec<String> = tx
        .query(
            "SELECT arn FROM flows_machines WHERE status = 'DELETING'",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for arn in deleting {
        machines::remove_if_idle(tx, &arn).await?;
    }
    machines::purge_revisions(tx).await?;
    Ok(ids.len())
}
