//! Fan-outs: a Parallel's branches or a Map's iterations as children in their own
//! scopes, started up to a concurrency bound, and the parent's continuation enqueued once
//! when they have all ended or too many failed. Everything here runs inside the
//! transaction of the step that opens, reports to or consumes a fan-out, which holds the
//! execution's row lock; a report also locks the fan-out's row, so when the last two
//! children end on two nodes at once, the second sees the first's count and the parent is
//! enqueued exactly once.

use super::{json_text, parse_json, steps, u32_of, Tx};
use crate::store::child_scope;
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;

pub(super) async fn open(tx: &Tx<'_>, exec_id: i64, j: &NewJoin, now: Millis) -> StoreResult<()> {
    // A re-entered state (a loop) reuses its key: what is left of the old fan-out goes.
    drop(tx, exec_id, &j.key).await?;
    let total = j.children.len() as u32;
    let first = match j.max_concurrency {
        0 => total,
        n => n.min(total),
    };
    tx.execute(
        "INSERT INTO flows_joins (execution_id, key, parent_scope, parent_state, \
         parent_attempt, parent_payload, total, max_concurrency, tolerated, next_index, closed) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        &[
            &exec_id,
            &j.key,
            &j.parent.scope,
            &j.parent.state,
            &i64::from(j.parent.attempt),
            &json_text(&j.parent.payload),
            &i64::from(total),
            &i64::from(j.max_concurrency),
            &i64::from(j.tolerated_failures),
            &i64::from(first),
            &(total == 0),
        ],
    )
    .await?;
    if total == 0 {
        return enqueue_parent(tx, exec_id, &j.key, now).await;
    }
    let mut idx = Vec::with_capacity(j.children.len());
    let mut states = Vec::with_capacity(j.children.len());
    let mut payloads: Vec<Option<String>> = Vec::with_capacity(j.children.len());
    let mut statuses = Vec::with_capacity(j.children.len());
    let mut started = Vec::with_capacity(first as usize);
    for (i, c) in j.children.iter().enumerate() {
        let i = i as u32;
        idx.push(i64::from(i));
        states.push(c.state.as_str());
        if i < first {
            payloads.push(None);
            statuses.push("RUNNING");
            started.push(NewStep {
                scope: child_scope(&j.key, i),
                state: c.state.clone(),
                attempt: 0,
                due: now,
                payload: c.payload.clone(),
            });
        } else {
            payloads.push(Some(json_text(&c.payload)));
            statuses.push("PENDING");
        }
    }
    tx.execute(
        "INSERT INTO flows_join_items (execution_id, key, idx, state, payload, status) \
         SELECT $1, $2, i, s, p, st \
         FROM unnest($3::BIGINT[], $4::TEXT[], $5::TEXT[], $6::TEXT[]) AS u(i, s, p, st)",
        &[&exec_id, &j.key, &idx, &states, &payloads, &statuses],
    )
    .await?;
    steps::enqueue(tx, exec_id, &started).await
}

pub(super) async fn report(
    tx: &Tx<'_>,
    exec_id: i64,
    r: &JoinReport,
    now: Millis,
) -> StoreResult<()> {
    let row = tx
        .query_opt(
            "SELECT total, tolerated, next_index, closed FROM flows_joins \
             WHERE execution_id = $1 AND key = $2 FOR UPDATE",
            &[&exec_id, &r.key],
        )
        .await?;
    // Gone or closed: the fan-out ended without this child (it was cut short).
    let Some(row) = row else {
        return Ok(());
    };
    if row.get::<_, bool>(3) {
        return Ok(());
    }
    let (total, tolerated, next_index) = (u32_of(&row, 0), u32_of(&row, 1), u32_of(&row, 2));
    let status = if r.succeeded { "SUCCEEDED" } else { "FAILED" };
    let result = json_text(&r.result);
    let changed = tx
        .execute(
            "UPDATE flows_join_items SET status = $4, result = $5 \
             WHERE execution_id = $1 AND key = $2 AND idx = $3 AND status = 'RUNNING'",
            &[&exec_id, &r.key, &i64::from(r.index), &status, &result],
        )
        .await?;
    if changed == 0 {
        return Ok(()); // a repeated report of a child that already ended
    }
    let counts = tx
        .query_one(
            "UPDATE flows_joins SET succeeded = succeeded + $3, failed = failed + $4, \
             first_error = CASE WHEN $4 = 1 AND first_error IS NULL THEN $5 \
             ELSE first_error END \
             WHERE execution_id = $1 AND key = $2 RETURNING succeeded, failed",
            &[
                &exec_id,
                &r.key,
                &i64::from(r.succeeded),
                &i64::from(!r.succeeded),
                &result,
            ],
        )
        .await?;
    let (succeeded, failed) = (u32_of(&counts, 0), u32_of(&counts, 1));
    if failed > tolerated || succeeded + failed == total {
        tx.execute(
            "UPDATE flows_joins SET closed = TRUE WHERE execution_id = $1 AND key = $2",
            &[&exec_id, &r.key],
        )
        .await?;
        cut_children(tx, exec_id, &r.key).await?;
        return enqueue_parent(tx, exec_id, &r.key, now).await;
    }
    if next_index < total {
        let item = tx
            .query_one(
                "SELECT state, payload FROM flows_join_items \
                 WHERE execution_id = $1 AND key = $2 AND idx = $3",
                &[&exec_id, &r.key, &i64::from(next_index)],
            )
            .await?;
        let state: String = item.get(0);
        let payload: Option<String> = item.get(1);
        let payload = payload.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "pending child {next_index} of {} has no input",
                r.key
            ))
        })?;
        tx.execute(
            "UPDATE flows_join_items SET status = 'RUNNING', payload = NULL \
             WHERE execution_id = $1 AND key = $2 AND idx = $3",
            &[&exec_id, &r.key, &i64::from(next_index)],
        )
        .await?;
        tx.execute(
            "UPDATE flows_joins SET next_index = next_index + 1 \
             WHERE execution_id = $1 AND key = $2",
            &[&exec_id, &r.key],
        )
        .await?;
        steps::enqueue(
            tx,
            exec_id,
            &[NewStep {
                scope: child_scope(&r.key, next_index),
                state,
                attempt: 0,
                due: now,
                payload: parse_json(&payload)?,
            }],
        )
        .await?;
    }
    Ok(())
}

async fn enqueue_parent(tx: &Tx<'_>, exec_id: i64, key: &str, now: Millis) -> StoreResult<()> {
    let r = tx
        .query_one(
            "SELECT parent_scope, parent_state, parent_attempt, parent_payload FROM flows_joins \
             WHERE execution_id = $1 AND key = $2",
            &[&exec_id, &key],
        )
        .await?;
    steps::enqueue(
        tx,
        exec_id,
        &[NewStep {
            scope: r.get(0),
            state: r.get(1),
            attempt: u32_of(&r, 2),
            due: now,
            payload: parse_json(r.get(3))?,
        }],
    )
    .await
}

/// Drops whatever still runs below `key`: queued steps, nested fan-outs, open tokens.
async fn cut_children(tx: &Tx<'_>, exec_id: i64, key: &str) -> StoreResult<()> {
    let prefix = format!("{key}/");
    tx.execute(
        "DELETE FROM flows_steps WHERE execution_id = $1 AND left(scope, length($2)) = $2",
        &[&exec_id, &prefix],
    )
    .await?;
    tx.execute(
        "UPDATE flows_task_tokens SET status = 'CLOSED' WHERE execution_id = $1 \
         AND status = 'OPEN' AND left(scope, length($2)) = $2",
        &[&exec_id, &prefix],
    )
    .await?;
    for table in ["flows_joins", "flows_join_items"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE execution_id = $1 AND left(key, length($2)) = $2"),
            &[&exec_id, &prefix],
        )
        .await?;
    }
    Ok(())
}

/// Removes a fan-out, its items and anything left below it.
pub(super) async fn drop(tx: &Tx<'_>, exec_id: i64, key: &str) -> StoreResult<()> {
    cut_children(tx, exec_id, key).await?;
    for table in ["flows_joins", "flows_join_items"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE execution_id = $1 AND key = $2"),
            &[&exec_id, &key],
        )
        .await?;
    }
    Ok(())
}

pub(super) async fn results(tx: &Tx<'_>, exec_id: i64, key: &str) -> StoreResult<JoinResults> {
    let j = tx
        .query_opt(
            "SELECT total, succeeded, failed, first_error FROM flows_joins \
             WHERE execution_id = $1 AND key = $2",
            &[&exec_id, &key],
        )
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("fan-out {key} is missing")))?;
    let total = u32_of(&j, 0);
    let first_error: Option<&str> = j.get(3);
    let mut items: Vec<Option<Result<serde_json::Value, serde_json::Value>>> =
        vec![None; total as usize];
    let rows = tx
        .query(
            "SELECT idx, status, result FROM flows_join_items \
             WHERE execution_id = $1 AND key = $2 AND status IN ('SUCCEEDED', 'FAILED')",
            &[&exec_id, &key],
        )
        .await?;
    for row in &rows {
        let idx = u32_of(row, 0);
        let status: &str = row.get(1);
        let v = parse_json(row.get(2))?;
        if let Some(slot) = items.get_mut(idx as usize) {
            *slot = Some(if status == "SUCCEEDED" { Ok(v) } else { Err(v) });
        }
    }
    Ok(JoinResults {
        items,
        first_error: first_error.map(parse_json).transpose()?,
        succeeded: u32_of(&j, 1),
        failed: u32_of(&j, 2),
    })
}
