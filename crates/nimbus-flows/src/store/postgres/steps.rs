//! The durable step queue (the executor's outbox) and `.waitForTaskToken` task tokens.
//!
//! A step is claimable when `available_at <= now`: `available_at` is its due time, then
//! the end of its lease once claimed. A claim takes the due steps no other transaction
//! holds (`FOR UPDATE SKIP LOCKED`) and sets a fresh claim id and the lease in the same
//! statement; a claim that outlived its lease can be taken by another node, whose claim id
//! replaces it. Renewing and completing succeed only for the current claim id.

use super::{executions, history, joins, json_text, parse_json, u32_of, Tx};
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;
use crate::store::new_task_token;

pub(super) async fn enqueue(tx: &Tx<'_>, exec_id: i64, steps: &[NewStep]) -> StoreResult<()> {
    match steps {
        [] => Ok(()),
        [s] => {
            tx.execute(
                "INSERT INTO flows_steps (execution_id, scope, state, attempt, due, payload, \
                 available_at) VALUES ($1, $2, $3, $4, $5, $6, $5)",
                &[
                    &exec_id,
                    &s.scope,
                    &s.state,
                    &i64::from(s.attempt),
                    &s.due,
                    &json_text(&s.payload),
                ],
            )
            .await?;
            Ok(())
        }
        _ => {
            let scopes: Vec<&str> = steps.iter().map(|s| s.scope.as_str()).collect();
            let states: Vec<&str> = steps.iter().map(|s| s.state.as_str()).collect();
            let attempts: Vec<i64> = steps.iter().map(|s| i64::from(s.attempt)).collect();
            let dues: Vec<i64> = steps.iter().map(|s| s.due).collect();
            let payloads: Vec<String> = steps.iter().map(|s| json_text(&s.payload)).collect();
            tx.execute(
                "INSERT INTO flows_steps (execution_id, scope, state, attempt, due, payload, \
                 available_at) \
                 SELECT $1, sc, st, a, d, p, d FROM unnest($2::TEXT[], $3::TEXT[], \
                 $4::BIGINT[], $5::BIGINT[], $6::TEXT[]) WITH ORDINALITY AS u(sc, st, a, d, p, n) \
                 ORDER BY n",
                &[&exec_id, &scopes, &states, &attempts, &dues, &payloads],
            )
            .await?;
            Ok(())
        }
    }
}

/// Claims up to `limit` due steps, of one execution (`execution`) or of any.
pub(super) async fn claim(
    tx: &Tx<'_>,
    now: Millis,
    limit: usize,
    lease_ms: i64,
    execution: Option<i64>,
) -> StoreResult<Vec<Step>> {
    let claim = uuid::Uuid::new_v4().to_string();
    let until = now + lease_ms;
    let rows = tx
        .query(
            "WITH c AS (SELECT id FROM flows_steps WHERE available_at <= $3 \
             AND ($5::BIGINT IS NULL OR execution_id = $5) \
             ORDER BY available_at, id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             UPDATE flows_steps s SET claim = $1, available_at = $2 \
             FROM c, flows_executions e WHERE s.id = c.id AND e.id = s.execution_id \
             RETURNING s.id, e.arn, s.scope, s.state, s.attempt, s.due, s.payload, \
             s.resolution, s.task_token",
            &[&claim, &until, &now, &(limit as i64), &execution],
        )
        .await?;
    let mut steps = rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            let resolution: Option<&str> = r.get(7);
            Ok(Step {
                id,
                execution_arn: r.get(1),
                scope: r.get(2),
                state: r.get(3),
                attempt: u32_of(r, 4),
                due: r.get(5),
                payload: parse_json(r.get(6))?,
                resolution: resolution
                    .map(|r| {
                        serde_json::from_str(r).map_err(|e| {
                            StoreError::Corrupt(format!("resolution of step {id}: {e}"))
                        })
                    })
                    .transpose()?,
                task_token: r.get(8),
                claim: claim.clone(),
                claimed_until: until,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    steps.sort_by_key(|s| (s.due, s.id));
    Ok(steps)
}

/// The execution of a step whose claim is still held, with the execution's row locked
/// (the lock every write to an execution takes first). The step's row is locked after it
/// by the caller's update or delete of the step, which re-checks the claim.
async fn lock_held(tx: &Tx<'_>, step: &Step) -> StoreResult<Option<i64>> {
    Ok(tx
        .query_opt(
            "SELECT id FROM flows_executions WHERE id = \
             (SELECT execution_id FROM flows_steps WHERE id = $1 AND claim = $2) FOR UPDATE",
            &[&step.id, &step.claim],
        )
        .await?
        .map(|r| r.get(0)))
}

pub(super) async fn renew(
    tx: &Tx<'_>,
    step: &Step,
    now: Millis,
    lease_ms: i64,
) -> StoreResult<bool> {
    let n = tx
        .execute(
            "UPDATE flows_steps SET available_at = $3 WHERE id = $1 AND claim = $2",
            &[&step.id, &step.claim, &(now + lease_ms)],
        )
        .await?;
    Ok(n > 0)
}

pub(super) async fn complete(
    tx: &Tx<'_>,
    step: &Step,
    t: &Transition,
    now: Millis,
) -> StoreResult<Completion> {
    let Some(exec_id) = lock_held(tx, step).await? else {
        return Ok(Completion::ClaimLost);
    };
    // Re-checked under the step's lock: another node may have claimed it meanwhile.
    let deleted = tx
        .execute(
            "DELETE FROM flows_steps WHERE id = $1 AND claim = $2",
            &[&step.id, &step.claim],
        )
        .await?;
    if deleted == 0 {
        return Ok(Completion::ClaimLost);
    }
    for token in &t.close_tokens {
        let status = tx
            .query_opt(
                "SELECT status FROM flows_task_tokens WHERE token = $1",
                &[token],
            )
            .await?;
        if status
            .map(|r| r.get::<_, String>(0))
            .is_some_and(|s| s != "OPEN" && s != "CLOSED")
        {
            return Ok(Completion::TokenResolved);
        }
    }
    for token in &t.close_tokens {
        tx.execute(
            "UPDATE flows_task_tokens SET status = 'CLOSED' WHERE token = $1",
            &[token],
        )
        .await?;
    }
    if !history::append(tx, exec_id, &t.events, now).await? {
        return Ok(Completion::HistoryLimit);
    }
    enqueue(tx, exec_id, &t.next_steps).await?;
    for key in &t.drop_joins {
        joins::drop(tx, exec_id, key).await?;
    }
    for j in &t.new_joins {
        joins::open(tx, exec_id, j, now).await?;
    }
    if let Some(r) = &t.join_report {
        joins::report(tx, exec_id, r, now).await?;
    }
    if let Some(u) = &t.execution {
        executions::finish(tx, exec_id, u, now).await?;
    }
    Ok(Completion::Committed)
}

pub(super) async fn next_due(tx: &Tx<'_>) -> StoreResult<Option<Millis>> {
    Ok(tx
        .query_one("SELECT MIN(available_at) FROM flows_steps", &[])
        .await?
        .get(0))
}

// ---- task tokens ----

pub(super) async fn create_token(tx: &Tx<'_>, step: &Step, now: Millis) -> StoreResult<String> {
    let lost = || StoreError::Conflict(format!("the claim of step {} was lost", step.id));
    let exec_id = lock_held(tx, step).await?.ok_or_else(lost)?;
    // Held to the commit: the claim cannot be taken over while the token is made.
    tx.query_opt(
        "SELECT 1 FROM flows_steps WHERE id = $1 AND claim = $2 FOR UPDATE",
        &[&step.id, &step.claim],
    )
    .await?
    .ok_or_else(lost)?;
    let existing = tx
        .query_opt(
            "SELECT token FROM flows_task_tokens WHERE execution_id = $1 AND scope = $2 \
             AND state = $3 AND attempt = $4 AND status = 'OPEN'",
            &[&exec_id, &step.scope, &step.state, &i64::from(step.attempt)],
        )
        .await?;
    if let Some(r) = existing {
        return Ok(r.get(0));
    }
    let token = new_task_token();
    tx.execute(
        "INSERT INTO flows_task_tokens (token, execution_id, scope, state, attempt, payload, \
         status, created) VALUES ($1, $2, $3, $4, $5, $6, 'OPEN', $7)",
        &[
            &token,
            &exec_id,
            &step.scope,
            &step.state,
            &i64::from(step.attempt),
            &json_text(&step.payload),
            &now,
        ],
    )
    .await?;
    Ok(token)
}

pub(super) async fn resolve_token(
    tx: &Tx<'_>,
    token: &str,
    resolution: &TokenResolution,
    now: Millis,
) -> StoreResult<TokenAnswer> {
    let exec_id: i64 = tx
        .query_opt(
            "SELECT execution_id FROM flows_task_tokens WHERE token = $1",
            &[&token],
        )
        .await?
        .ok_or(StoreError::TaskDoesNotExist)?
        .get(0);
    // The execution's lock orders this against a completion closing the token.
    executions::lock_id(tx, exec_id).await?;
    let row = tx
        .query_opt(
            "SELECT execution_id, scope, state, attempt, payload, status, resolution \
             FROM flows_task_tokens WHERE token = $1 FOR UPDATE",
            &[&token],
        )
        .await?
        .ok_or(StoreError::TaskDoesNotExist)?;
    let scope: String = row.get(1);
    let state: String = row.get(2);
    let attempt: i64 = row.get(3);
    let payload: String = row.get(4);
    let status: String = row.get(5);
    let recorded: Option<String> = row.get(6);
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
        "UPDATE flows_task_tokens SET status = $2, resolution = $3 WHERE token = $1",
        &[&token, &new_status, &text],
    )
    .await?;
    tx.execute(
        "INSERT INTO flows_steps (execution_id, scope, state, attempt, due, payload, task_token, \
         resolution, available_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5)",
        &[
            &exec_id, &scope, &state, &attempt, &now, &payload, &token, &text,
        ],
    )
    .await?;
    Ok(TokenAnswer::Accepted)
}

pub(super) async fn heartbeat_token(
    tx: &Tx<'_>,
    token: &str,
    now: Millis,
) -> StoreResult<TokenAnswer> {
    let n = tx
        .execute(
            "UPDATE flows_task_tokens SET heartbeat = $2 WHERE token = $1 AND status = 'OPEN'",
            &[&token, &now],
        )
        .await?;
    if n > 0 {
        return Ok(TokenAnswer::Accepted);
    }
    tx.query_opt(
        "SELECT 1 FROM flows_task_tokens WHERE token = $1",
        &[&token],
    )
    .await?
    .ok_or(StoreError::TaskDoesNotExist)?;
    Ok(TokenAnswer::Closed)
}

pub(super) async fn token(tx: &Tx<'_>, token: &str) -> StoreResult<TaskToken> {
    let r = tx
        .query_opt(
            "SELECT t.token, e.arn, t.scope, t.state, t.attempt, t.status, t.created, \
             t.heartbeat FROM flows_task_tokens t \
             JOIN flows_executions e ON e.id = t.execution_id WHERE t.token = $1",
            &[&token],
        )
        .await?
        .ok_or(StoreError::TaskDoesNotExist)?;
    Ok(TaskToken {
        token: r.get(0),
        execution_arn: r.get(1),
        scope: r.get(2),
        state: r.get(3),
        attempt: u32_of(&r, 4),
        status: r.get(5),
        created: r.get(6),
        last_heartbeat: r.get(7),
    })
}
