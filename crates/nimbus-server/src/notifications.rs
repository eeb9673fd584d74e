//! Delivery of the object store's bucket notifications: the task that reads the outbox
//! `nimbus-objects` fills in the same transaction as each write
//! ([`Objects::notifications_pending`]) and hands every notification on through the event
//! bus's delivery path — a function's asynchronous invocation (retries, DLQ, destinations
//! as for any async event), a built-in queue's message, or a `PutEvents` entry on the
//! default bus — before removing it ([`Objects::notifications_done`]). At least once: a
//! crash between the hand-off and the removal hands it on again after the restart; a
//! function's invocation is deduplicated by the notification's sequence number within the
//! async engine's idempotency window.

use nimbus_core::{is_version, FunctionName, LATEST};
use nimbus_events::bus::{BusError, EventBus, PutEventsEntry};
use nimbus_events::engine::Origin;
use nimbus_metrics::{Metrics, Trigger};
use nimbus_objects::{Destinations, Objects, Outgoing, Target};
use nimbus_store::{QueueStore, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// Notifications read from the outbox at a time.
const BATCH: usize = 100;
/// The pause after a delivery that may succeed later (a full queue, a store error).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a notification was not handed on.
enum Failure {
    /// It never will be (its queue is gone, its entry is refused): dropped, logged.
    Permanent(String),
    /// It may be later: kept, retried in order.
    Transient(String),
}

/// Runs until aborted: delivers what is recorded, then waits for more.
pub(crate) async fn deliver(objects: Objects, bus: Arc<EventBus>, metrics: Arc<Metrics>) {
    let count = |bucket: &str, outcome: &'static str| {
        if metrics.is_enabled() {
            metrics.sources().s3_notification(bucket, outcome);
        }
    };
    loop {
        let batch = match objects.notifications_pending(0, BATCH).await {
            Ok(b) => b,
            Err(e) => {
                warn!(error = %e, "cannot read the bucket notifications to deliver");
                tokio::time::sleep(RETRY_AFTER).await;
                continue;
            }
        };
        if batch.is_empty() {
            objects.notifications_wait().await;
            continue;
        }
        let mut done = Vec::with_capacity(batch.len());
        let mut stalled = false;
        for n in &batch {
            match hand_on(&bus, n).await {
                Ok(()) => {
                    count(&n.bucket, "delivered");
                    done.push(n.seq);
                }
                Err(Failure::Permanent(why)) => {
                    count(&n.bucket, "dropped");
                    warn!(bucket = %n.bucket, destination = %describe(&n.target), "bucket notification dropped: {why}");
                    done.push(n.seq);
                }
                Err(Failure::Transient(why)) => {
                    count(&n.bucket, "retried");
                    debug!(bucket = %n.bucket, destination = %describe(&n.target), "bucket notification delayed: {why}");
                    stalled = true;
                    break;
                }
            }
        }
        if let Err(e) = objects.notifications_done(&done).await {
            // Handed on but still recorded: they go again (at least once).
            warn!(error = %e, "cannot mark bucket notifications delivered");
            stalled = true;
        }
        if stalled {
            tokio::time::sleep(RETRY_AFTER).await;
        }
    }
}

/// Hands one notification to its target.
async fn hand_on(bus: &EventBus, n: &Outgoing) -> Result<(), Failure> {
    let trace = bus.engine().hop(
        "s3 notification",
        None,
        vec![
            nimbus_trace::KeyValue::new("aws.s3.bucket", n.bucket.clone()),
            nimbus_trace::KeyValue::new("messaging.destination.name", describe(&n.target)),
        ],
        Vec::new(),
    );
    let origin = Origin {
        trigger: Trigger::S3,
        trace,
    };
    match &n.target {
        Target::Function { arn, .. } | Target::Queue { arn, .. } => {
            let payload: serde_json::Value = serde_json::from_str(&n.payload)
                .map_err(|e| Failure::Permanent(format!("unreadable record: {e}")))?;
            let key = matches!(n.target, Target::Function { .. })
                .then(|| format!("s3-notification-{}", n.seq));
            bus.deliver(arn, &payload, key, origin)
                .await
                .map(|_| ())
                .map_err(classify)
        }
        Target::EventBridge => {
            let entry: PutEventsEntry = serde_json::from_str(&n.payload)
                .map_err(|e| Failure::Permanent(format!("unreadable PutEvents entry: {e}")))?;
            let bus_name = entry
                .event_bus_name
                .clone()
                .unwrap_or_else(|| "default".into());
            let out = bus
                .put_events(&bus_name, vec![entry], origin.trace.as_ref())
                .await
                .map_err(classify)?;
            match out.entries.first().and_then(|e| e.error_code.as_deref()) {
                None => Ok(()),
                Some("ThrottlingException" | "InternalFailure") => Err(Failure::Transient(
                    out.entries[0].error_message.clone().unwrap_or_default(),
                )),
                Some(code) => Err(Failure::Permanent(format!(
                    "{code}: {}",
                    out.entries[0].error_message.clone().unwrap_or_default()
                ))),
            }
        }
    }
}

/// The target as the configuration named it.
fn describe(t: &Target) -> String {
    match t {
        Target::Function { arn, .. } | Target::Queue { arn, .. } => arn.clone(),
        Target::EventBridge => "EventBridge (default bus)".into(),
    }
}

fn classify(e: BusError) -> Failure {
    match e {
        BusError::Invalid(m) => Failure::Permanent(m),
        BusError::Store(StoreError::NotFound(m)) => Failure::Permanent(m),
        BusError::Store(s) if s.is_full() => Failure::Transient(s.to_string()),
        BusError::Store(s @ StoreError::InvalidInput(_)) => Failure::Permanent(s.to_string()),
        BusError::Store(s) => Failure::Transient(s.to_string()),
    }
}

/// The targets a notification configuration may name, checked when it is set (as S3
/// checks its destinations): the function (and its version or alias) and the queue must
/// exist.
pub(crate) struct Targets {
    pub(crate) registry: Arc<dyn Store>,
    pub(crate) queues: Arc<dyn QueueStore>,
}

impl Destinations for Targets {
    fn check(&self, target: &Target) -> Result<(), String> {
        match target {
            Target::Function {
                name, qualifier, ..
            } => {
                let f = FunctionName::parse(name).map_err(|e| e.to_string())?;
                match qualifier.as_deref() {
                    Some(q) if q != LATEST && !is_version(q) => {
                        self.registry.get_alias(&f, q).map(|_| ())
                    }
                    q => self.registry.get(&f, q).map(|_| ()),
                }
                .map_err(|e| e.to_string())
            }
            Target::Queue { name, .. } => self
                .queues
                .get_queue(name)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Target::EventBridge => Ok(()),
        }
    }
}
