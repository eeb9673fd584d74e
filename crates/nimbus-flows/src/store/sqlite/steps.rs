//! The durable step queue (the executor's outbox) and `.waitForTaskToken` task tokens.
//!
//! A step is claimable when `available_at <= now`: `available_at` is its due time, then
//! the end of its lease once claimed. Completing deletes it; a claim that outlived its
//! lease can be taken by another worker, whose claim replaces it.

use super::{executions, history, joins, json_text, parse_json};
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;
use crate::store::new_task_token;
use rusqlite::{params, OptionalExtension, Transaction};

pub(super) fn enqueue(tx: &Transaction<'_>, exec_id: i64, steps: &[NewStep]) -> StoreResult<()> {
    let mut st = tx.prepare_cached(
        "INSERT INTO steps (execution_id, scope, state, attempt, due, payload, available_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5)",
    )?;
    for s in steps {
        st.execute(params![
            exec_id,
            s.scope,
            s.state,
            s.attempt,
            s.due,
            json_text(&s.payload)
        ])?;
    }
    Ok(())
}

/// Claims up to `limit` due steps, of one execution (`execution`) or of any.
pub(super) fn claim(
    tx: &Transaction<'_>,
    now: Millis,
    limit: usize,
    lease_ms: i64,
    execution: Option<i64>,
) -> StoreResult<Vec<Step>> {
    let claim = uuid::Uuid::new_v4().to_string();
    let until = now + lease_ms;
    let mut st = tx.prepare(
        "UPDATE steps SET claim = ?1, available_at = ?2 WHERE id IN \
         (SELECT id FROM steps WHERE available_at <= ?3 AND (?5 IS NULL OR execution_id = ?5) \
          ORDER BY available_at, id LIMIT ?4) \
         RETURNING id, (SELECT arn FROM executions e WHERE e.id = execution_id), scope, state, \
         attempt, due, payload, resolution, task_token",
    )?;
    let rows = st
        .query_map(params![claim, until, now, limit as i64, execution], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, u32>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
                r.get::<_, Option<String>>(8)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut steps = rows
        .into_iter()
        .map(
            |(id, execution_arn, scope, state, attempt, due, payload, resolution, task_token)| {
                Ok(Step {
                    id,
                    execution_arn,
                    scope,
                    state,
                    attempt,
                    due,
                    payload: parse_json(&payload)?,
                    resolution: resolution
                        .map(|r| {
                            serde_json::from_str(&r).map_err(|e| {
                                StoreError::Corrupt(format!("resolution of step {id}: {e}"))
                            })
                        })
                        .transpose()?,
                    task_token,
                    claim: claim.clone(),
                    claimed_until: until,
                })
            },
        )
        .collect::<StoreResult<Vec<_>>>()?;
    steps.sort_by_key(|s| (s.due, s.id));
    Ok(steps)
}

/// The execution id of a step whose claim is still held.
fn held(tx: &Transaction<'_>, step: &Step) -> StoreResult<Option<i64>> {
    Ok(tx
        .query_row(
            "SELECT execution_id FROM steps WHERE id = ?1 AND claim = ?2",
            params![step.id, step.claim],
            |r| r.get(0),
        )
        .optional()?)
}

pub(super) fn renew(
    tx: &Transaction<'_>,
    step: &Step,
    now: Millis,
    lease_ms: i64,
) -> StoreResult<bool> {
    let n = tx.execute(
        "UPDATE steps SET available_at = ?3 WHERE id = ?1 AND claim = ?2",
        params![step.id, step.claim, now + lease_ms],
    )?;
    Ok(n > 0)
}

pub(super) fn complete(
    tx: &Transaction<'_>,
    step: &Step,
    t: &Transition,
    now: Millis,
) -> StoreResult<Completion> {
    let Some(exec_id) = held(tx, step)? else {
        return Ok(Completion::ClaimLost);
    };
    tx.execute("DELETE FROM steps WHERE id = ?1", [step.id])?;
    for token in &t.close_tokens {
        let status: Option<String> = tx
            .query_row(
                "SELECT status FROM task_tokens WHERE token = ?1",
                [token],
                |r| r.get(0),
            )
            .optional()?;
        if status
            .as_deref()
            .is_some_and(|s| s != "OPEN" && s != "CLOSED")
        {
            return Ok(Completion::TokenResolved);
        }
    }
    for token in &t.close_tokens {
        tx.execute(
            "UPDATE task_tokens SET status = 'CLOSED' WHERE token = ?1",
            [token],
        )?;
    }
    if !history::append(tx, exec_id, &t.events, now)? {
        return Ok(Completion::HistoryLimit);
    }
    enqueue(tx, exec_id, &t.next_steps)?;
    for key in &t.drop_joins {
        joins::drop(tx, exec_id, key)?;
    }
    for j in &t.new_joins {
        joins::open(tx, exec_id, j, now)?;
    }
    if let Some(r) = &t.join_report {
        joins::report(tx, exec_id, r, now)?;
    }
    if let Some(u) = &t.execution {
        executions::finish(tx, exec_id, u, now)?;
    }
    Ok(Completion::Committed)
}

pub(super) fn next_due(tx: &Transaction<'_>) -> StoreResult<Option<Millis>> {
    Ok(tx.query_row("SELECT MIN(available_at) FROM steps", [], |r| r.get(0))?)
}

// ---- task tokens ----

pub(super) fn create_token(tx: &Transaction<'_>, step: &Step, now: Millis) -> StoreResult<String> {
    let exec_id = held(tx, step)?
        .ok_or_else(|| StoreError::Conflict(format!("the claim of step {} was lost", step.id)))?;
    let existing: Option<String> = tx
        .query_row(
            "SELECT token FROM task_tokens WHERE execution_id = ?1 AND scope = ?2 AND state = ?3 \
             AND attempt = ?4 AND status = 'OPEN'",
            params![exec_id, step.scope, step.state, step.attempt],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(token) = existing {
        return Ok(token);
    }
    let token = new_task_token();
    tx.execute(
        "INSERT INTO task_tokens (token, execution_id, scope, state, attempt, payload, status, created) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'OPEN', ?7)",
        params![
            token,
            exec_id,
            step.scope,
            step.state,
            step.attempt,
            json_text(&step.payload),
            now
        ],
    )?;
    Ok(token)
}

pub(super) fn resolve_token(
    tx: &Transaction<'_>,
    token: &str,
    resolution: &TokenResolution,
    now: Millis,
) -> StoreResult<TokenAnswer> {
    #[allow(clippy::type_complexity)]
    let row: Option<(i64, String, String, u32, String, String, Option<String>)> = tx
        .query_row(
            "SELECT execution_id, scope, state, attempt, payload, status, resolution \
             FROM task_tokens WHERE token = ?1",
            [token],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                ))
            },
        )
        .optional()?;
    let (exec_id, scope, state, attempt, payload, status, recorded) =
        row.ok_or(StoreError::TaskDoesNotExist)?;
    let text = serde_json::to_string(resolution).expect("a resolution serialises");
    if status != "OPEN" {
        return Ok(if recorded.as_deref() == Some(text.as_str()) {
            TokenAnswer::Duplicate
        } else {
            TokenAnswer::Closed
        });
    }
    let new_status = match resolution {
        TokenResolution::Success { .. } => "SUCCEEDED",
        TokenResolution::Failure { .. } => "FAILED",
    };
    tx.execute(
        "UPDATE task_tokens SET status = ?2, resolution = ?3 WHERE token = ?1",
        params![token, new_status, text],
    )?;
    tx.execute(
        "INSERT INTO steps (execution_id, scope, state, attempt, due, payload, task_token, \
         resolution, available_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?5)",
        params![exec_id, scope, state, attempt, now, payload, token, text],
    )?;
    Ok(TokenAnswer::Accepted)
}

pub(super) fn heartbeat_token(
    tx: &Transaction<'_>,
    token: &str,
    now: Millis,
) -> StoreResult<TokenAnswer> {
    let status: String = tx
        .query_row(
            "SELECT status FROM task_tokens WHERE token = ?1",
            [token],
            |r| r.get(0),
        )
        .optional()?
        .ok_or(StoreError::TaskDoesNotExist)?;
    if status != "OPEN" {
        return Ok(TokenAnswer::Closed);
    }
    tx.execute(
        "UPDATE task_tokens SET heartbeat = ?2 WHERE token = ?1",
        params![token, now],
    )?;
    Ok(TokenAnswer::Accepted)
}

pub(super) fn token(tx: &Transaction<'_>, token: &str) -> StoreResult<TaskToken> {
    tx.query_row(
        "SELECT t.token, e.arn, t.scope, t.state, t.attempt, t.status, t.created, t.heartbeat \
         FROM task_tokens t JOIN executions e ON e.id = t.execution_id WHERE t.token = ?1",
        [token],
        |r| {
            Ok(TaskToken {
                token: r.get(0)?,
                execution_arn: r.get(1)?,
                scope: r.get(2)?,
                state: r.get(3)?,
                attempt: r.get(4)?,
                status: r.get(5)?,
                created: r.get(6)?,
                last_heartbeat: r.get(7)?,
            })
        },
    )
    .optional()?
    .ok_or(StoreError::TaskDoesNotExist)
}
