//! Fan-outs: a Parallel's branches or a Map's iterations as children in their own
//! scopes, started up to a concurrency bound, and the parent's continuation enqueued once
//! when they have all ended or too many failed. Everything here runs inside the
//! transaction of the step that opens, reports to or consumes a fan-out.

use super::{json_text, parse_json, steps};
use crate::store::child_scope;
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;
use rusqlite::{params, OptionalExtension, Transaction};

pub(super) fn open(
    tx: &Transaction<'_>,
    exec_id: i64,
    j: &NewJoin,
    now: Millis,
) -> StoreResult<()> {
    // A re-entered state (a loop) reuses its key: what is left of the old fan-out goes.
    drop(tx, exec_id, &j.key)?;
    let total = j.children.len() as u32;
    let first = match j.max_concurrency {
        0 => total,
        n => n.min(total),
    };
    tx.execute(
        "INSERT INTO joins (execution_id, key, parent_scope, parent_state, parent_attempt, \
         parent_payload, total, max_concurrency, tolerated, next_index, closed) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            exec_id,
            j.key,
            j.parent.scope,
            j.parent.state,
            j.parent.attempt,
            json_text(&j.parent.payload),
            total,
            j.max_concurrency,
            j.tolerated_failures,
            first,
            total == 0
        ],
    )?;
    if total == 0 {
        return enqueue_parent(tx, exec_id, &j.key, now);
    }
    let mut items = tx.prepare_cached(
        "INSERT INTO join_items (execution_id, key, idx, state, payload, status) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut started = Vec::with_capacity(first as usize);
    for (i, c) in j.children.iter().enumerate() {
        let i = i as u32;
        if i < first {
            items.execute(params![
                exec_id,
                j.key,
                i,
                c.state,
                None::<String>,
                "RUNNING"
            ])?;
            started.push(NewStep {
                scope: child_scope(&j.key, i),
                state: c.state.clone(),
                attempt: 0,
                due: now,
                payload: c.payload.clone(),
            });
        } else {
            items.execute(params![
                exec_id,
                j.key,
                i,
                c.state,
                json_text(&c.payload),
                "PENDING"
            ])?;
        }
    }
    steps::enqueue(tx, exec_id, &started)
}

pub(super) fn report(
    tx: &Transaction<'_>,
    exec_id: i64,
    r: &JoinReport,
    now: Millis,
) -> StoreResult<()> {
    let row: Option<(u32, u32, u32, u32, bool)> = tx
        .query_row(
            "SELECT total, tolerated, next_index, succeeded + failed, closed FROM joins \
             WHERE execution_id = ?1 AND key = ?2",
            params![exec_id, r.key],
            |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?, x.get(4)?)),
        )
        .optional()?;
    // Gone or closed: the fan-out ended without this child (it was cut short).
    let Some((total, tolerated, next_index, _, false)) = row else {
        return Ok(());
    };
    let status = if r.succeeded { "SUCCEEDED" } else { "FAILED" };
    let changed = tx.execute(
        "UPDATE join_items SET status = ?4, result = ?5 \
         WHERE execution_id = ?1 AND key = ?2 AND idx = ?3 AND status = 'RUNNING'",
        params![exec_id, r.key, r.index, status, json_text(&r.result)],
    )?;
    if changed == 0 {
        return Ok(()); // a repeated report of a child that already ended
    }
    let result = json_text(&r.result);
    let (succeeded, failed): (u32, u32) = tx.query_row(
        "UPDATE joins SET succeeded = succeeded + ?3, failed = failed + ?4, \
         first_error = CASE WHEN ?4 = 1 AND first_error IS NULL THEN ?5 ELSE first_error END \
         WHERE execution_id = ?1 AND key = ?2 RETURNING succeeded, failed",
        params![
            exec_id,
            r.key,
            u32::from(r.succeeded),
            u32::from(!r.succeeded),
            result
        ],
        |x| Ok((x.get(0)?, x.get(1)?)),
    )?;
    if failed > tolerated || succeeded + failed == total {
        tx.execute(
            "UPDATE joins SET closed = 1 WHERE execution_id = ?1 AND key = ?2",
            params![exec_id, r.key],
        )?;
        cut_children(tx, exec_id, &r.key)?;
        return enqueue_parent(tx, exec_id, &r.key, now);
    }
    if next_index < total {
        let (state, payload): (String, String) = tx.query_row(
            "SELECT state, payload FROM join_items WHERE execution_id = ?1 AND key = ?2 AND idx = ?3",
            params![exec_id, r.key, next_index],
            |x| Ok((x.get(0)?, x.get(1)?)),
        )?;
        tx.execute(
            "UPDATE join_items SET status = 'RUNNING', payload = NULL \
             WHERE execution_id = ?1 AND key = ?2 AND idx = ?3",
            params![exec_id, r.key, next_index],
        )?;
        tx.execute(
            "UPDATE joins SET next_index = next_index + 1 WHERE execution_id = ?1 AND key = ?2",
            params![exec_id, r.key],
        )?;
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
        )?;
    }
    Ok(())
}

fn enqueue_parent(tx: &Transaction<'_>, exec_id: i64, key: &str, now: Millis) -> StoreResult<()> {
    let (scope, state, attempt, payload): (String, String, u32, String) = tx.query_row(
        "SELECT parent_scope, parent_state, parent_attempt, parent_payload FROM joins \
         WHERE execution_id = ?1 AND key = ?2",
        params![exec_id, key],
        |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)),
    )?;
    steps::enqueue(
        tx,
        exec_id,
        &[NewStep {
            scope,
            state,
            attempt,
            due: now,
            payload: parse_json(&payload)?,
        }],
    )
}

/// Drops whatever still runs below `key`: queued steps, nested fan-outs, open tokens.
fn cut_children(tx: &Transaction<'_>, exec_id: i64, key: &str) -> StoreResult<()> {
    let prefix = format!("{key}/");
    tx.execute(
        "DELETE FROM steps WHERE execution_id = ?1 AND substr(scope, 1, length(?2)) = ?2",
        params![exec_id, prefix],
    )?;
    tx.execute(
        "UPDATE task_tokens SET status = 'CLOSED' WHERE execution_id = ?1 AND status = 'OPEN' \
         AND substr(scope, 1, length(?2)) = ?2",
        params![exec_id, prefix],
    )?;
    for table in ["joins", "join_items"] {
        tx.execute(
            &format!(
                "DELETE FROM {table} WHERE execution_id = ?1 AND substr(key, 1, length(?2)) = ?2"
            ),
            params![exec_id, prefix],
        )?;
    }
    Ok(())
}

/// Removes a fan-out, its items and anything left below it.
pub(super) fn drop(tx: &Transaction<'_>, exec_id: i64, key: &str) -> StoreResult<()> {
    cut_children(tx, exec_id, key)?;
    for table in ["joins", "join_items"] {
        tx.execute(
            &format!("DELETE FROM {table} WHERE execution_id = ?1 AND key = ?2"),
            params![exec_id, key],
        )?;
    }
    Ok(())
}

pub(super) fn results(tx: &Transaction<'_>, exec_id: i64, key: &str) -> StoreResult<JoinResults> {
    let (total, succeeded, failed, first_error): (u32, u32, u32, Option<String>) = tx
        .query_row(
            "SELECT total, succeeded, failed, first_error FROM joins \
             WHERE execution_id = ?1 AND key = ?2",
            params![exec_id, key],
            |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::Corrupt(format!("fan-out {key} is missing")))?;
    let mut items: Vec<Option<Result<serde_json::Value, serde_json::Value>>> =
        vec![None; total as usize];
    let mut st = tx.prepare(
        "SELECT idx, status, result FROM join_items WHERE execution_id = ?1 AND key = ?2 \
         AND status IN ('SUCCEEDED', 'FAILED')",
    )?;
    let rows = st.query_map(params![exec_id, key], |x| {
        Ok((
            x.get::<_, u32>(0)?,
            x.get::<_, String>(1)?,
            x.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (idx, status, result) = row?;
        let v = parse_json(&result)?;
        if let Some(slot) = items.get_mut(idx as usize) {
            *slot = Some(if status == "SUCCEEDED" { Ok(v) } else { Err(v) });
        }
    }
    Ok(JoinResults {
        items,
        first_error: first_error.map(|e| parse_json(&e)).transpose()?,
        succeeded,
        failed,
    })
}
