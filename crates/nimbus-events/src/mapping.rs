//! Event-source mappings from built-in queues to functions: one poller task per enabled
//! mapping receives batches (waiting up to the batching window to fill one), hands them to
//! the function **synchronously** as an SQS event, and deletes what the function
//! processed: everything on success, nothing on a function error, everything but the
//! reported `batchItemFailures` with `ReportBatchItemFailures`. What is not deleted becomes
//! visible again after the queue's visibility timeout, and the queue's redrive policy moves
//! a message received too often to its dead-letter queue.
//!
//! FIFO queues: the store hands out a message group only while none of its messages is in
//! flight, so concurrent batches never share a group and each batch holds a group's
//! messages in order; a function error leaves the batch in flight (its groups wait for the
//! retry), and a partial batch failure keeps the failed message's later group mates too
//! ([`fifo_failures`]).

use crate::engine::{Attempt, Invoker};
use crate::heartbeat::Heartbeat;
use crate::pattern::EventPattern;
use nimbus_core::arn::{ACCOUNT, REGION};
use nimbus_store::{EventSourceMapping, Message, QueueStore};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// The SQS-style ARN of a built-in queue.
pub fn queue_arn(queue: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}")
}

/// The queue name of an SQS-style ARN (or a bare name).
pub fn queue_from_arn(arn: &str) -> Option<&str> {
    match arn.strip_prefix("arn:aws:sqs:") {
        Some(rest) => rest.splitn(3, ':').nth(2).filter(|q| !q.is_empty()),
        None => (!arn.is_empty() && !arn.contains(':')).then_some(arn),
    }
}

/// One SQS record as Lambda's pollers send it (attribute values as strings).
pub fn sqs_record(queue: &str, m: &Message) -> Value {
    let mut record = json!({
        "messageId": m.id,
        "receiptHandle": m.receipt.clone().unwrap_or_default(),
        "body": m.body,
        "attributes": {
            "ApproximateReceiveCount": m.receive_count.to_string(),
            "SentTimestamp": m.sent_ms.to_string(),
            "SenderId": m.sender.as_deref().unwrap_or(ACCOUNT),
            "ApproximateFirstReceiveTimestamp":
                m.first_receive_ms.unwrap_or(m.sent_ms).to_string(),
        },
        "messageAttributes": if m.attributes.is_object() { m.attributes.clone() } else { json!({}) },
        "md5OfBody": m.md5,
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn(queue),
        "awsRegion": REGION,
    });
    if let Some(t) = &m.trace {
        record["attributes"]["AWSTraceHeader"] = json!(nimbus_trace::stored_header(t));
    }
    // FIFO queues: as Lambda's records from them.
    for (k, v) in [
        ("SequenceNumber", &m.sequence_number),
        ("MessageGroupId", &m.group_id),
        ("MessageDeduplicationId", &m.dedup_id),
    ] {
        if let Some(v) = v {
            record["attributes"][k] = json!(v);
        }
    }
    record
}

/// Lambda's rule for FIFO queues: once a message of a group failed, the group's later
/// messages in the batch count as failed too (they are not deleted, so the group is
/// retried from the failed one, in order). Messages without a group are left as they are.
pub fn fifo_failures(batch: &[Message], failed: &mut HashSet<String>) {
    let mut broken: HashSet<&str> = HashSet::new();
    for m in batch {
        let Some(g) = m.group_id.as_deref() else {
            continue;
        };
        if broken.contains(g) {
            failed.insert(m.id.clone());
        } else if failed.contains(&m.id) {
            broken.insert(g);
        }
    }
}

/// Builds the SQS event Lambda's pollers send (`Records[]`).
pub fn sqs_event(queue: &str, messages: &[Message]) -> Value {
    let records: Vec<Value> = messages.iter().map(|m| sqs_record(queue, m)).collect();
    json!({ "Records": records })
}

/// Whether a message passes a mapping's `FilterCriteria`: the record (with a JSON body
/// parsed, as Lambda filters on body fields) matches at least one pattern. No patterns:
/// everything passes.
pub fn passes_filters(queue: &str, m: &Message, filters: &[EventPattern]) -> bool {
    if filters.is_empty() {
        return true;
    }
    let mut record = sqs_record(queue, m);
    if let Ok(body) = serde_json::from_str::<Value>(&m.body) {
        record["body"] = body;
    }
    filters.iter().any(|f| f.matches(&record))
}

/// What to do with a batch after the function ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Delete every message.
    DeleteAll,
    /// Delete nothing: every message becomes visible again after the visibility timeout.
    DeleteNone,
    /// Delete every message except these ids.
    DeleteAllBut(HashSet<String>),
}

/// Interprets a successful function response as a partial batch response (only for
/// mappings with `ReportBatchItemFailures`), exactly as Lambda documents it: an empty or
/// null response or `batchItemFailures` is complete success; invalid JSON, an empty, null
/// or misspelled `itemIdentifier`, or an id not in the batch is complete failure;
/// otherwise everything but the listed ids succeeded.
pub fn partial_batch_outcome(body: &str, batch_ids: &HashSet<&str>) -> BatchOutcome {
    let body = body.trim();
    if body.is_empty() {
        return BatchOutcome::DeleteAll;
    }
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return BatchOutcome::DeleteNone;
    };
    let obj = match v {
        Value::Null => return BatchOutcome::DeleteAll,
        Value::Object(o) => o,
        _ => return BatchOutcome::DeleteNone,
    };
    let items = match obj.get("batchItemFailures") {
        None | Some(Value::Null) => return BatchOutcome::DeleteAll,
        Some(Value::Array(a)) => a,
        Some(_) => return BatchOutcome::DeleteNone,
    };
    if items.is_empty() {
        return BatchOutcome::DeleteAll;
    }
    let mut failed = HashSet::new();
    for item in items {
        let Some(item) = item.as_object() else {
            return BatchOutcome::DeleteNone;
        };
        match item.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if !id.is_empty() && batch_ids.contains(id) => {
                failed.insert(id.to_string());
            }
            _ => return BatchOutcome::DeleteNone,
        }
    }
    BatchOutcome::DeleteAllBut(failed)
}

/// Largest synchronous invocation payload (Lambda's 6 MB).
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// How many of `batch` fit in one event within [`MAX_PAYLOAD`] (at least one).
fn fitting(batch: &[Message]) -> usize {
    let mut size = 16;
    for (i, m) in batch.iter().enumerate() {
        // Body as a JSON string (escaping can double it) plus the record's other fields.
        size += m.body.len() * 2 + m.attributes.to_string().len() + 600;
        if size > MAX_PAYLOAD && i > 0 {
            return i;
        }
    }
    batch.len()
}

/// Poller settings.
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// Batches being processed at once, across all mappings.
    pub max_concurrent_batches: usize,
    /// Batches of one mapping processed at once (when its queue has a backlog).
    pub batches_per_mapping: usize,
    /// How often an idle poller looks at its queue (sends wake pollers at once).
    pub idle_poll: Duration,
    /// How often the set of mappings is reread.
    pub reconcile_every: Duration,
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            max_concurrent_batches: 16,
            batches_per_mapping: 4,
            idle_poll: Duration::from_millis(500),
            reconcile_every: Duration::from_secs(2),
        }
    }
}

/// Runs one poller per enabled mapping and restarts pollers whose mapping changed.
pub struct MappingRunner {
    store: Arc<dyn QueueStore>,
    cfg: MappingConfig,
    /// Wakes the supervisor (mappings changed).
    changed: Notify,
    /// Wakes idle pollers (messages were sent).
    sent: Notify,
    stopping: AtomicBool,
    slots: Arc<Semaphore>,
    /// Beaten by every pass of the supervisor (every `reconcile_every` at most).
    heartbeat: Heartbeat,
    /// Where the spans of batches go (set by the server; off otherwise).
    tracer: std::sync::OnceLock<nimbus_trace::Tracer>,
    /// Where batches are counted (set by the server).
    metrics: std::sync::OnceLock<Arc<nimbus_metrics::Metrics>>,
    /// Set with `stopping`: wakes every wait of the pollers (no wake-up is missed).
    halt: tokio::sync::watch::Sender<bool>,
    /// Pollers and batches being delivered (for [`MappingRunner::drain`]).
    busy: Arc<crate::drain::InFlight>,
}

fn now_ms() -> i64 {
    crate::engine::now_ms()
}

impl MappingRunner {
    pub fn new(store: Arc<dyn QueueStore>, cfg: MappingConfig) -> Arc<Self> {
        Arc::new(Self {
            heartbeat: Heartbeat::new(cfg.reconcile_every),
            slots: Arc::new(Semaphore::new(cfg.max_concurrent_batches.max(1))),
            store,
            cfg,
            changed: Notify::new(),
            sent: Notify::new(),
            stopping: AtomicBool::new(false),
            tracer: Default::default(),
            metrics: Default::default(),
            halt: tokio::sync::watch::Sender::new(false),
            busy: Arc::new(crate::drain::InFlight::new()),
        })
    }

    /// Counts batches, records, failed records and the iterator age in `metrics`.
    pub fn set_metrics(&self, metrics: Arc<nimbus_metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Records a span per batch (child of its first message's context, linked to every
    /// message's) with `tracer`.
    pub fn set_tracer(&self, tracer: nimbus_trace::Tracer) {
        let _ = self.tracer.set(tracer);
    }

    /// The supervisor loop's heartbeat (for health checks).
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    pub fn store(&self) -> &Arc<dyn QueueStore> {
        &self.store
    }

    /// Call after creating, updating or deleting a mapping.
    pub fn mappings_changed(&self) {
        self.changed.notify_one();
    }

    /// Call after sending messages: idle pollers look at once.
    pub fn messages_sent(&self) {
        self.sent.notify_waiters();
    }

    /// Waits until messages are sent (to any queue) or `d` passes: long polling.
    pub async fn wait_for_sends(&self, d: Duration) {
        self.idle(d).await
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.halt.send_replace(true);
        self.changed.notify_one();
        self.sent.notify_waiters();
    }

    /// Drains the pollers: they receive nothing more; a batch received but not yet handed
    /// to its function (filling during its batching window) is released, visible again at
    /// once with its receive uncounted; resolves when the batches being delivered have
    /// been settled (the caller bounds the wait: a batch cut short stays in flight until
    /// its visibility timeout, as after a crash).
    pub async fn drain(&self) {
        self.stop();
        self.busy.idle().await;
    }

    /// Starts the supervisor; it runs until [`stop`](Self::stop) and leaves its pollers
    /// to end on their own (each releases the batch it was filling; see
    /// [`MappingRunner::drain`]).
    pub fn spawn(self: &Arc<Self>, invoker: Arc<dyn Invoker>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.supervise(invoker).await })
    }

    async fn supervise(self: Arc<Self>, invoker: Arc<dyn Invoker>) {
        let mut running: HashMap<String, (EventSourceMapping, JoinHandle<()>)> = HashMap::new();
        while !self.stopping.load(Ordering::SeqCst) {
            self.heartbeat.beat();
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.list_mappings()).await {
                Ok(Ok(mappings)) => {
                    let wanted: HashMap<String, EventSourceMapping> = mappings
                        .into_iter()
                        .filter(|m| m.enabled)
                        .map(|m| (m.uuid.clone(), m))
                        .collect();
                    running.retain(|uuid, (m, task)| {
                        let keep = wanted.get(uuid) == Some(m) && !task.is_finished();
                        if !keep {
                            task.abort();
                            debug!(mapping = %uuid, "poller stopped");
                        }
                        keep
                    });
                    for (uuid, m) in wanted {
                        if running.contains_key(&uuid) {
                            continue;
                        }
                        info!(mapping = %uuid, queue = %m.queue, function = %m.function, "polling queue");
                        let polling = self.busy.enter();
                        let me = self.clone();
                        let (m2, inv) = (m.clone(), invoker.clone());
                        let task = tokio::spawn(async move {
                            me.poll(m2, inv).await;
                            drop(polling);
                        });
                        running.insert(uuid, (m, task));
                    }
                }
                Ok(Err(e)) => warn!("cannot read event source mappings: {e}"),
                Err(e) => warn!("mapping task failed: {e}"),
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(self.cfg.reconcile_every) => {}
            }
        }
        // The pollers see `stopping` and end by themselves (releasing what they hold).
        drop(running);
    }

    async fn receive(&self, queue: &str, max: usize) -> Result<Vec<Message>, String> {
        let (store, q) = (self.store.clone(), queue.to_string());
        tokio::task::spawn_blocking(move || store.receive(&q, max, None, now_ms()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    async fn idle(&self, d: Duration) {
        let mut halt = self.halt.subscribe();
        tokio::select! {
            _ = self.sent.notified() => {}
            _ = tokio::time::sleep(d) => {}
            _ = halt.wait_for(|h| *h) => {}
        }
    }

    /// Gives received messages back (visible now, their receive uncounted).
    async fn release(&self, queue: &str, batch: Vec<Message>) {
        let receipts: Vec<String> = batch.into_iter().filter_map(|x| x.receipt).collect();
        if receipts.is_empty() {
            return;
        }
        let (store, q) = (self.store.clone(), queue.to_string());
        let _ = tokio::task::spawn_blocking(move || store.release(&q, &receipts, now_ms())).await;
    }

    /// One mapping's loop: receive a batch, invoke, settle.
    async fn poll(self: Arc<Self>, m: EventSourceMapping, invoker: Arc<dyn Invoker>) {
        let m = Arc::new(m);
        let filters: Vec<EventPattern> = m
            .filters
            .iter()
            .filter_map(|f| match EventPattern::parse(f) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(mapping = %m.uuid, "ignoring an invalid filter: {e}");
                    None
                }
            })
            .collect();
        let batch_size = m.batch_size as usize;
        let window = Duration::from_secs(u64::from(m.window_s));
        // Batches of this mapping in flight at once (each also holds a global slot).
        let local = Arc::new(Semaphore::new(self.cfg.batches_per_mapping.max(1)));
        // Consecutive throttles (shared with the delivery tasks): grows the back-off.
        let throttles = Arc::new(AtomicU32::new(0));
        while !self.stopping.load(Ordering::SeqCst) {
            let n = throttles.load(Ordering::SeqCst);
            if n > 0 {
                // Throttled or missing function: back off, nothing counted against messages.
                self.idle(Duration::from_millis(100 << n.min(6))).await;
            }
            let Ok(mine) = local.clone().acquire_owned().await else {
                return;
            };
            let Ok(global) = self.slots.clone().acquire_owned().await else {
                return;
            };
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let mut batch = match self.receive(&m.queue, batch_size).await {
                Ok(b) => b,
                Err(e) => {
                    debug!(mapping = %m.uuid, queue = %m.queue, "cannot receive: {e}");
                    drop((mine, global));
                    self.idle(Duration::from_secs(2)).await;
                    continue;
                }
            };
            if batch.is_empty() {
                drop((mine, global));
                self.idle(self.cfg.idle_poll).await;
                continue;
            }
            // Fill the batch for up to the batching window.
            let started = Instant::now();
            while batch.len() < batch_size
                && started.elapsed() < window
                && !self.stopping.load(Ordering::SeqCst)
            {
                self.idle(Duration::from_millis(100).min(window - started.elapsed()))
                    .await;
                match self.receive(&m.queue, batch_size - batch.len()).await {
                    Ok(more) => batch.extend(more),
                    Err(_) => break,
                }
            }
            if self.stopping.load(Ordering::SeqCst) {
                // Draining: received but not started, so it goes back for another poller.
                debug!(mapping = %m.uuid, messages = batch.len(), "batch released by the drain");
                self.release(&m.queue, batch).await;
                return;
            }
            if !filters.is_empty() {
                // Messages no filter matches are deleted without invoking, as Lambda does.
                let (keep, dropped): (Vec<Message>, Vec<Message>) = batch
                    .into_iter()
                    .partition(|x| passes_filters(&m.queue, x, &filters));
                batch = keep;
                if !dropped.is_empty() {
                    let receipts: Vec<String> =
                        dropped.into_iter().filter_map(|x| x.receipt).collect();
                    let (store, q) = (self.store.clone(), m.queue.clone());
                    let _ = tokio::task::spawn_blocking(move || {
                        for r in receipts {
                            let _ = store.delete_message(&q, &r);
                        }
                    })
                    .await;
                }
                if batch.is_empty() {
                    continue;
                }
            }
            // Lambda's synchronous payload limit bounds a batch, whatever its size setting:
            // what does not fit goes back uncounted for the next batch.
            let keep = fitting(&batch);
            if keep < batch.len() {
                let extra: Vec<String> = batch
                    .split_off(keep)
                    .into_iter()
                    .filter_map(|x| x.receipt)
                    .collect();
                let (store, q) = (self.store.clone(), m.queue.clone());
                let _ =
                    tokio::task::spawn_blocking(move || store.release(&q, &extra, now_ms())).await;
            }
            let (me, m2, inv, thr) = (self.clone(), m.clone(), invoker.clone(), throttles.clone());
            let delivering = self.busy.enter();
            tokio::spawn(async move {
                if me.deliver(&m2, &batch, inv.as_ref()).await {
                    thr.store(0, Ordering::SeqCst);
                } else {
                    thr.fetch_add(1, Ordering::SeqCst);
                }
                drop((mine, global, delivering));
            });
        }
    }

    /// Invokes the function with one batch and deletes what it processed. False when the
    /// invocation did not happen (throttled, function missing): the batch is released.
    async fn deliver(
        &self,
        m: &EventSourceMapping,
        batch: &[Message],
        invoker: &dyn Invoker,
    ) -> bool {
        let payload = sqs_event(&m.queue, batch).to_string();
        let request_id = uuid::Uuid::new_v4().to_string();
        let (function, qualifier) = m
            .function
            .split_once(':')
            .unwrap_or((&m.function, nimbus_core::LATEST));
        // The batch is a hop of its messages' traces: a child of the first one's context,
        // linked to every message's.
        let contexts: Vec<nimbus_trace::TraceContext> = batch
            .iter()
            .filter_map(|x| x.trace.as_deref())
            .filter_map(nimbus_trace::TraceContext::parse_stored)
            .collect();
        let trace = match self.tracer.get() {
            Some(t) => t.hop(
                format!("batch {}", m.queue),
                contexts.first(),
                vec![
                    nimbus_trace::KeyValue::new("nimbus.queue", m.queue.clone()),
                    nimbus_trace::KeyValue::new(
                        "messaging.batch.message_count",
                        batch.len() as i64,
                    ),
                ],
                contexts.clone(),
            ),
            None => contexts.first().cloned(),
        }
        .map(|t| t.stored_traceparent());
        let invoked_ms = now_ms();
        let attempt = invoker
            .invoke_traced(
                nimbus_metrics::Trigger::Queue,
                function,
                qualifier,
                &request_id,
                payload,
                trace.as_deref(),
            )
            .await;
        let outcome = match &attempt {
            Attempt::Success { body, .. } if m.report_batch_item_failures => {
                let ids: HashSet<&str> = batch.iter().map(|x| x.id.as_str()).collect();
                match partial_batch_outcome(body, &ids) {
                    BatchOutcome::DeleteAllBut(mut failed) => {
                        fifo_failures(batch, &mut failed);
                        BatchOutcome::DeleteAllBut(failed)
                    }
                    other => other,
                }
            }
            Attempt::Success { .. } => BatchOutcome::DeleteAll,
            Attempt::FunctionError { error_type, .. } => {
                info!(mapping = %m.uuid, function = %m.function, request_id, error_type, messages = batch.len(),
                      "function failed: the batch will be retried after the visibility timeout");
                BatchOutcome::DeleteNone
            }
            Attempt::Throttled(why) | Attempt::Missing(why) => {
                debug!(mapping = %m.uuid, function = %m.function, "batch not delivered: {why}");
                let receipts: Vec<String> =
                    batch.iter().filter_map(|x| x.receipt.clone()).collect();
                let (store, q) = (self.store.clone(), m.queue.clone());
                let _ = tokio::task::spawn_blocking(move || store.release(&q, &receipts, now_ms()))
                    .await;
                return false;
            }
        };
        if let Some(metrics) = self.metrics.get() {
            let failed = match &outcome {
                BatchOutcome::DeleteAll => 0,
                BatchOutcome::DeleteNone => batch.len(),
                BatchOutcome::DeleteAllBut(f) => f.len(),
            };
            let oldest = batch.iter().map(|x| x.sent_ms).min().unwrap_or(invoked_ms);
            metrics.sources().mapping_batch(
                &m.queue,
                &m.function,
                batch.len() as u64,
                failed as u64,
                std::time::Duration::from_millis((invoked_ms - oldest).max(0) as u64),
            );
        }
        let delete: Vec<String> = batch
            .iter()
            .filter(|x| match &outcome {
                BatchOutcome::DeleteAll => true,
                BatchOutcome::DeleteNone => false,
                BatchOutcome::DeleteAllBut(failed) => !failed.contains(&x.id),
            })
            .filter_map(|x| x.receipt.clone())
            .collect();
        if let BatchOutcome::DeleteAllBut(failed) = &outcome {
            debug!(mapping = %m.uuid, failed = failed.len(), "partial batch failure");
        }
        if matches!(outcome, BatchOutcome::DeleteNone) && m.report_batch_item_failures {
            if let Attempt::Success { .. } = attempt {
                warn!(mapping = %m.uuid, function = %m.function,
                      "unusable partial batch response: the whole batch will be retried");
            }
        }
        if !delete.is_empty() {
            let (store, q) = (self.store.clone(), m.queue.clone());
            let _ = tokio::task::spawn_blocking(move || {
                for r in delete {
                    if let Err(e) = store.delete_message(&q, &r) {
                        // Processing outlived the visibility timeout: it was redelivered.
                        warn!(queue = %q, "cannot delete a processed message: {e}");
                    }
                }
            })
            .await;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_batch_rules() {
        let ids: HashSet<&str> = ["a", "b", "c"].into_iter().collect();
        let all_but =
            |v: &[&str]| BatchOutcome::DeleteAllBut(v.iter().map(|s| s.to_string()).collect());
        use BatchOutcome::*;
        for (body, want) in [
            ("", DeleteAll),
            ("null", DeleteAll),
            ("{}", DeleteAll),
            (r#"{"batchItemFailures":null}"#, DeleteAll),
            (r#"{"batchItemFailures":[]}"#, DeleteAll),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"b"}]}"#,
                all_but(&["b"]),
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"c"}]}"#,
                all_but(&["a", "c"]),
            ),
            ("not json", DeleteNone),
            (r#""ok""#, DeleteNone),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":""}]}"#,
                DeleteNone,
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":null}]}"#,
                DeleteNone,
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifer":"a"}]}"#,
                DeleteNone,
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"zzz"}]}"#,
                DeleteNone,
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"a"},{"itemIdentifier":"zzz"}]}"#,
                DeleteNone,
            ),
            (
                r#"{"batchItemFailures":[{"itemIdentifier":"a","extra":1}]}"#,
                all_but(&["a"]),
            ),
            (r#"{"batchItemFailures":"a"}"#, DeleteNone),
        ] {
            assert_eq!(partial_batch_outcome(body, &ids), want, "{body}");
        }
    }

    #[test]
    fn filters_match_records_with_json_bodies_parsed() {
        let msg = |body: &str| Message {
            id: "i".into(),
            queue: "q".into(),
            body: body.into(),
            attributes: json!({"kind": {"stringValue": "x", "dataType": "String"}}),
            md5: String::new(),
            sent_ms: 0,
            receive_count: 1,
            first_receive_ms: None,
            visible_at_ms: 0,
            receipt: None,
            trace: None,
            sender: None,
            group_id: None,
            dedup_id: None,
            sequence_number: None,
        };
        let f = vec![EventPattern::parse(r#"{"body":{"type":["order"]}}"#).unwrap()];
        assert!(passes_filters("q", &msg(r#"{"type":"order"}"#), &f));
        assert!(!passes_filters("q", &msg(r#"{"type":"refund"}"#), &f));
        assert!(!passes_filters("q", &msg("plain text"), &f));
        assert!(passes_filters("q", &msg("anything"), &[]));
        let plain = vec![EventPattern::parse(r#"{"body":[{"prefix":"plain"}]}"#).unwrap()];
        assert!(passes_filters("q", &msg("plain text"), &plain));
        let attr =
            vec![
                EventPattern::parse(r#"{"messageAttributes":{"kind":{"stringValue":["x"]}}}"#)
                    .unwrap(),
            ];
        assert!(passes_filters("q", &msg("b"), &attr));
    }

    #[test]
    fn batches_fit_the_payload_limit() {
        let msg = |len: usize| Message {
            id: "i".into(),
            queue: "q".into(),
            body: "x".repeat(len),
            attributes: json!({}),
            md5: String::new(),
            sent_ms: 0,
            receive_count: 1,
            first_receive_ms: None,
            visible_at_ms: 0,
            receipt: None,
            trace: None,
            sender: None,
            group_id: None,
            dedup_id: None,
            sequence_number: None,
        };
        assert_eq!(fitting(&[msg(10), msg(10)]), 2);
        let big: Vec<Message> = (0..20).map(|_| msg(256 * 1024)).collect();
        let n = fitting(&big);
        assert!(n > 5 && n < 20, "{n}");
        let event = sqs_event("q", &big[..n]).to_string();
        assert!(event.len() <= MAX_PAYLOAD, "{}", event.len());
        // One message always goes, even alone over the limit.
        assert_eq!(fitting(&[msg(MAX_PAYLOAD)]), 1);
    }

    #[test]
    fn arns_and_event_shape() {
        assert_eq!(
            queue_arn("orders"),
            "arn:aws:sqs:us-east-1:000000000000:orders"
        );
        assert_eq!(
            queue_from_arn("arn:aws:sqs:us-east-1:000000000000:orders"),
            Some("orders")
        );
        assert_eq!(queue_from_arn("orders"), Some("orders"));
        assert_eq!(queue_from_arn("arn:aws:sqs:us-east-1:1:"), None);
        let m = Message {
            id: "id1".into(),
            queue: "orders".into(),
            body: "hi".into(),
            attributes: json!({}),
            md5: "49f68a5c8493ec2c0bf489821c21fc3b".into(),
            sent_ms: 5,
            receive_count: 2,
            first_receive_ms: Some(7),
            visible_at_ms: 0,
            receipt: Some("r".into()),
            trace: None,
            sender: None,
            group_id: None,
            dedup_id: None,
            sequence_number: None,
        };
        let e = sqs_event("orders", &[m]);
        let r = &e["Records"][0];
        assert_eq!(r["messageId"], "id1");
        assert_eq!(r["receiptHandle"], "r");
        assert_eq!(r["attributes"]["ApproximateReceiveCount"], "2");
        assert_eq!(r["attributes"]["SentTimestamp"], "5");
        assert_eq!(r["attributes"]["ApproximateFirstReceiveTimestamp"], "7");
        assert_eq!(r["eventSource"], "aws:sqs");
        assert_eq!(r["eventSourceARN"], queue_arn("orders"));
        assert_eq!(r["awsRegion"], "us-east-1");
    }

    #[test]
    fn fifo_records_and_failures_keep_group_order() {
        let msg = |id: &str, group: &str| Message {
            id: id.into(),
            queue: "q.fifo".into(),
            body: "b".into(),
            attributes: json!({}),
            md5: String::new(),
            sent_ms: 0,
            receive_count: 1,
            first_receive_ms: None,
            visible_at_ms: 0,
            receipt: None,
            trace: None,
            sender: None,
            group_id: Some(group.into()),
            dedup_id: Some(format!("d-{id}")),
            sequence_number: Some("18446744073709551617".into()),
        };
        let batch = [
            msg("a1", "a"),
            msg("b1", "b"),
            msg("a2", "a"),
            msg("a3", "a"),
            msg("b2", "b"),
        ];
        let r = sqs_record("q.fifo", &batch[0]);
        assert_eq!(r["attributes"]["MessageGroupId"], "a");
        assert_eq!(r["attributes"]["MessageDeduplicationId"], "d-a1");
        assert_eq!(r["attributes"]["SequenceNumber"], "18446744073709551617");
        // a2 failed: a3 (later in its group) is kept too; b's messages are not touched.
        let mut failed: HashSet<String> = ["a2".to_string()].into();
        fifo_failures(&batch, &mut failed);
        let want: HashSet<String> = ["a2".to_string(), "a3".to_string()].into();
        assert_eq!(failed, want);
        // A standard queue's record has none of these.
        let mut plain = batch[0].clone();
        plain.group_id = None;
        plain.dedup_id = None;
        plain.sequence_number = None;
        assert!(sqs_record("q", &plain)["attributes"]
            .get("MessageGroupId")
            .is_none());
    }

    /// Throttled twice, then reports the first record as failed.
    struct Fake {
        calls: std::sync::Mutex<Vec<Value>>,
    }

    impl Invoker for Fake {
        fn invoke<'a>(
            &'a self,
            _function: &'a str,
            _qualifier: &'a str,
            _request_id: &'a str,
            payload: String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Attempt> + Send + 'a>> {
            Box::pin(async move {
                let ev: Value = serde_json::from_str(&payload).unwrap();
                let mut calls = self.calls.lock().unwrap();
                calls.push(ev.clone());
                if calls.len() <= 2 {
                    return Attempt::Throttled("busy".into());
                }
                let first = ev["Records"][0]["messageId"].clone();
                Attempt::Success {
                    body: json!({"batchItemFailures": [{"itemIdentifier": first}]}).to_string(),
                    version: "$LATEST".into(),
                }
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn throttles_are_not_counted_and_partial_failures_stay() {
        use nimbus_store::{NewMessage, QueueSettings, SqliteQueueStore};
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteQueueStore::open(dir.path()).unwrap());
        store
            .put_queue(
                "q",
                &QueueSettings {
                    visibility_timeout_s: 60,
                    ..Default::default()
                },
                0,
            )
            .unwrap();
        let msgs: Vec<NewMessage> = ["a", "b", "c"]
            .iter()
            .map(|b| NewMessage {
                body: b.to_string(),
                ..Default::default()
            })
            .collect();
        store.send("q", &msgs, now_ms()).unwrap();
        store
            .create_mapping(&EventSourceMapping {
                uuid: "m".into(),
                queue: "q".into(),
                function: "f".into(),
                batch_size: 10,
                window_s: 0,
                enabled: true,
                report_batch_item_failures: true,
                last_modified_s: 0,
                filters: vec![],
            })
            .unwrap();
        let runner = MappingRunner::new(store.clone(), MappingConfig::default());
        let fake = Arc::new(Fake {
            calls: Default::default(),
        });
        let task = runner.spawn(fake.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while fake.calls.lock().unwrap().len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        runner.stop();
        task.abort();
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 3, "{calls:?}");
        // Every delivery saw receive count 1: throttled attempts were given back uncounted.
        for c in &calls {
            assert_eq!(c["Records"].as_array().unwrap().len(), 3);
            assert_eq!(
                c["Records"][0]["attributes"]["ApproximateReceiveCount"],
                "1"
            );
        }
        // Only the reported failure is left, in flight until its visibility timeout.
        let st = store.stats("q", now_ms()).unwrap();
        assert_eq!((st.visible, st.in_flight), (0, 1), "{st:?}");
    }
    /// Holds every invocation until the gate opens, then succeeds.
    struct Gate {
        open: tokio::sync::Semaphore,
        calls: AtomicU32,
    }

    impl Invoker for Gate {
        fn invoke<'a>(
            &'a self,
            _function: &'a str,
            _qualifier: &'a str,
            _request_id: &'a str,
            _payload: String,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Attempt> + Send + 'a>> {
            Box::pin(async move {
                self.calls.fetch_add(1, Ordering::SeqCst);
                let _ = self.open.acquire().await.unwrap();
                Attempt::Success {
                    body: "null".into(),
                    version: "$LATEST".into(),
                }
            })
        }
    }

    /// A queue with one message and a mapping with batching window `window_s`.
    fn one_message(dir: &std::path::Path, window_s: u32) -> Arc<nimbus_store::SqliteQueueStore> {
        use nimbus_store::{NewMessage, QueueSettings, SqliteQueueStore};
        let store = Arc::new(SqliteQueueStore::open(dir).unwrap());
        let settings = QueueSettings {
            visibility_timeout_s: 600,
            ..Default::default()
        };
        store.put_queue("q", &settings, 0).unwrap();
        let msg = NewMessage {
            body: "a".into(),
            ..Default::default()
        };
        store.send("q", &[msg], now_ms()).unwrap();
        store
            .create_mapping(&EventSourceMapping {
                uuid: "m".into(),
                queue: "q".into(),
                function: "f".into(),
                batch_size: 10,
                window_s,
                enabled: true,
                report_batch_item_failures: false,
                last_modified_s: 0,
                filters: vec![],
            })
            .unwrap();
        store
    }

    async fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..500 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drain_releases_a_batch_still_filling_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_message(dir.path(), 60);
        let runner = MappingRunner::new(store.clone(), MappingConfig::default());
        let gate = Arc::new(Gate {
            open: tokio::sync::Semaphore::new(100),
            calls: AtomicU32::new(0),
        });
        let task = runner.spawn(gate.clone());
        until("the poller received the message", || {
            store.stats("q", now_ms()).unwrap().in_flight == 1
        })
        .await;
        // The batching window (60 s) is far off: the drain gives the batch back now.
        tokio::time::timeout(Duration::from_secs(5), runner.drain())
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "never delivered");
        let other = nimbus_store::SqliteQueueStore::open(dir.path()).unwrap();
        let got = other.receive("q", 10, None, now_ms()).unwrap();
        assert_eq!(got.len(), 1, "visible again at once");
        let record = sqs_record("q", &got[0]);
        assert_eq!(record["attributes"]["ApproximateReceiveCount"], "1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drain_waits_for_the_batch_in_flight() {
        let dir = tempfile::tempdir().unwrap();
        let store = one_message(dir.path(), 0);
        let runner = MappingRunner::new(store.clone(), MappingConfig::default());
        let gate = Arc::new(Gate {
            open: tokio::sync::Semaphore::new(0),
            calls: AtomicU32::new(0),
        });
        let _task = runner.spawn(gate.clone());
        until("the batch is being delivered", || {
            gate.calls.load(Ordering::SeqCst) == 1
        })
        .await;
        let drain = {
            let runner = runner.clone();
            tokio::spawn(async move { runner.drain().await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!drain.is_finished(), "the batch is still in flight");
        gate.open.add_permits(1);
        tokio::time::timeout(Duration::from_secs(5), drain)
            .await
            .unwrap()
            .unwrap();
        let st = store.stats("q", now_ms()).unwrap();
        assert_eq!((st.visible, st.in_flight), (0, 0), "settled: {st:?}");
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
    }
}
