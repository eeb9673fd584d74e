//! History events: numbered from 1 per execution, bounded by [`HISTORY_LIMIT`].

use super::{decode_token, executions, json_text, paginate, parse_json};
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;
use rusqlite::{params, Transaction};

/// Appends `events` to execution `exec_id`. Returns false when the history bound was
/// reached: the events up to 24,999 are recorded, event 25,000 is `ExecutionFailed`
/// (`States.Runtime`) unless the batch's 25,000th event ends the execution, and the
/// execution is FAILED.
pub(super) fn append(
    tx: &Transaction<'_>,
    exec_id: i64,
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<bool> {
    if events.is_empty() {
        return Ok(true);
    }
    let count: u32 = tx.query_row(
        "SELECT event_count FROM executions WHERE id = ?1",
        [exec_id],
        |r| r.get(0),
    )?;
    let mut st = tx.prepare_cached(
        "INSERT INTO events (execution_id, id, previous_id, timestamp, type, details) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut id = count;
    for (i, e) in events.iter().enumerate() {
        id += 1;
        let last_of_batch = i + 1 == events.len();
        if id >= HISTORY_LIMIT && !(id == HISTORY_LIMIT && e.is_terminal() && last_of_batch) {
            let details = serde_json::json!({
                "error": HISTORY_LIMIT_ERROR,
                "cause": HISTORY_LIMIT_CAUSE,
            });
            let id = HISTORY_LIMIT.min(id);
            st.execute(params![
                exec_id,
                id,
                id - 1,
                now,
                "ExecutionFailed",
                json_text(&details)
            ])?;
            drop(st);
            set_count(tx, exec_id, id)?;
            executions::finish(
                tx,
                exec_id,
                &ExecutionUpdate {
                    status: Some(ExecutionStatus::Failed),
                    output: None,
                    error: Some(HISTORY_LIMIT_ERROR.into()),
                    cause: Some(HISTORY_LIMIT_CAUSE.into()),
                    redrive: None,
                },
                now,
            )?;
            return Ok(false);
        }
        let previous = e.previous_event_id.unwrap_or(id - 1);
        st.execute(params![
            exec_id,
            id,
            previous,
            now,
            e.event_type,
            json_text(&e.details)
        ])?;
    }
    drop(st);
    set_count(tx, exec_id, id)?;
    Ok(true)
}

fn set_count(tx: &Transaction<'_>, exec_id: i64, count: u32) -> StoreResult<()> {
    tx.execute(
        "UPDATE executions SET event_count = ?2 WHERE id = ?1",
        params![exec_id, count],
    )?;
    Ok(())
}

pub(super) fn read(
    tx: &Transaction<'_>,
    execution_arn: &str,
    reverse: bool,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<HistoryEvent>> {
    let (exec_id, _) = executions::id_status(tx, execution_arn)?;
    let from: Option<i64> = token
        .map(|t| {
            decode_token(t)?
                .parse()
                .map_err(|_| StoreError::InvalidToken(t.into()))
        })
        .transpose()?;
    let sql = if reverse {
        "SELECT id, previous_id, timestamp, type, details FROM events \
         WHERE execution_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
    } else {
        "SELECT id, previous_id, timestamp, type, details FROM events \
         WHERE execution_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
    };
    let bound = from.unwrap_or(if reverse { i64::MAX } else { 0 });
    let mut st = tx.prepare(sql)?;
    let rows = st
        .query_map(params![exec_id, bound, max as i64 + 1], |r| {
            Ok((
                r.get::<_, u32>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let events = rows
        .into_iter()
        .map(|(id, previous, timestamp, event_type, details)| {
            Ok(HistoryEvent {
                id,
                previous_event_id: previous,
                timestamp,
                event_type,
                details: parse_json(&details)?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(paginate(events, max, |e| e.id.to_string()))
}
