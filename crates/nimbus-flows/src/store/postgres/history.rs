//! History events: numbered from 1 per execution, bounded by [`HISTORY_LIMIT`]. The
//! caller holds the execution's row lock, so the numbers stay dense when several nodes
//! append to one execution.

use super::{decode_token, executions, json_text, paginate, parse_json, u32_of, Tx};
use crate::store::error::{StoreError, StoreResult};
use crate::store::model::*;

/// Rows of one `INSERT … SELECT FROM unnest(…)`.
#[derive(Default)]
struct Batch {
    ids: Vec<i64>,
    previous: Vec<i64>,
    types: Vec<String>,
    details: Vec<String>,
}

impl Batch {
    fn push(&mut self, id: u32, previous: u32, event_type: &str, details: String) {
        self.ids.push(id.into());
        self.previous.push(previous.into());
        self.types.push(event_type.into());
        self.details.push(details);
    }

    async fn insert(&self, tx: &Tx<'_>, exec_id: i64, now: Millis) -> StoreResult<()> {
        if self.ids.is_empty() {
            return Ok(());
        }
        tx.execute(
            "INSERT INTO flows_events (execution_id, id, previous_id, timestamp, type, details) \
             SELECT $1, i, p, $2, t, d \
             FROM unnest($3::BIGINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[]) AS u(i, p, t, d)",
            &[
                &exec_id,
                &now,
                &self.ids,
                &self.previous,
                &self.types,
                &self.details,
            ],
        )
        .await?;
        Ok(())
    }
}

/// Appends `events` to execution `exec_id`. Returns false when the history bound was
/// reached: the events up to 24,999 are recorded, event 25,000 is `ExecutionFailed`
/// (`States.Runtime`) unless the batch's 25,000th event ends the execution, and the
/// execution is FAILED.
pub(super) async fn append(
    tx: &Tx<'_>,
    exec_id: i64,
    events: &[NewEvent],
    now: Millis,
) -> StoreResult<bool> {
    if events.is_empty() {
        return Ok(true);
    }
    let count = u32_of(
        &tx.query_one(
            "SELECT event_count FROM flows_executions WHERE id = $1 FOR UPDATE",
            &[&exec_id],
        )
        .await?,
        0,
    );
    let mut batch = Batch::default();
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
            batch.push(id, id - 1, "ExecutionFailed", json_text(&details));
            batch.insert(tx, exec_id, now).await?;
            set_count(tx, exec_id, id).await?;
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
            )
            .await?;
            return Ok(false);
        }
        let previous = e.previous_event_id.unwrap_or(id - 1);
        batch.push(id, previous, &e.event_type, json_text(&e.details));
    }
    batch.insert(tx, exec_id, now).await?;
    set_count(tx, exec_id, id).await?;
    Ok(true)
}

async fn set_count(tx: &Tx<'_>, exec_id: i64, count: u32) -> StoreResult<()> {
    tx.execute(
        "UPDATE flows_executions SET event_count = $2 WHERE id = $1",
        &[&exec_id, &i64::from(count)],
    )
    .await?;
    Ok(())
}

pub(super) async fn read(
    tx: &Tx<'_>,
    execution_arn: &str,
    reverse: bool,
    max: usize,
    token: Option<&str>,
) -> StoreResult<Page<HistoryEvent>> {
    let (exec_id, _) = executions::id_status(tx, execution_arn).await?;
    let from: Option<i64> = token
        .map(|t| {
            decode_token(t)?
                .parse()
                .map_err(|_| StoreError::InvalidToken(t.into()))
        })
        .transpose()?;
    let sql = if reverse {
        "SELECT id, previous_id, timestamp, type, details FROM flows_events \
         WHERE execution_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"
    } else {
        "SELECT id, previous_id, timestamp, type, details FROM flows_events \
         WHERE execution_id = $1 AND id > $2 ORDER BY id LIMIT $3"
    };
    let bound = from.unwrap_or(if reverse { i64::MAX } else { 0 });
    let rows = tx
        .query(sql, &[&exec_id, &bound, &(max as i64 + 1)])
        .await?;
    let events = rows
        .iter()
        .map(|r| {
            Ok(HistoryEvent {
                id: u32_of(r, 0),
                previous_event_id: u32_of(r, 1),
                timestamp: r.get(2),
                event_type: r.get(3),
                details: parse_json(r.get(4))?,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(paginate(events, max, |e| e.id.to_string()))
}
