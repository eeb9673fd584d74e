//! S3 event notifications: a bucket's [`NotificationConfig`] says which events go where
//! (functions, queues, EventBridge); every write that causes a wanted event records its
//! messages in an **outbox** in the same transaction as the write itself, so a notification
//! exists exactly when the write committed, and survives `kill -9` with it.
//!
//! Delivery is **at least once**: a consumer reads recorded notifications with
//! [`crate::Objects::notifications_pending`], hands each on (a function's asynchronous
//! invocation, a queue message, a `PutEvents` entry), and only then removes it with
//! [`crate::Objects::notifications_done`]. A crash in between delivers it again. The
//! consumer waits for new rows with [`crate::Objects::notifications_wait`]:
//!
//! ```no_run
//! # use nimbus_objects::{Objects, Outgoing};
//! # async fn deliver(n: &Outgoing) -> Result<(), String> { Ok(()) }
//! # async fn consume(objects: Objects) -> nimbus_objects::Result<()> {
//! let mut after = 0;
//! loop {
//!     let batch = objects.notifications_pending(after, 100).await?;
//!     let Some(last) = batch.last() else {
//!         // Caught up: wait for new rows (or a while, to retry failed ones from the start).
//!         let wait = objects.notifications_wait();
//!         let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wait).await;
//!         after = 0;
//!         continue;
//!     };
//!     after = last.seq;
//!     let mut done = Vec::new();
//!     for n in &batch {
//!         if deliver(n).await.is_ok() {
//!             done.push(n.seq);
//!         }
//!     }
//!     objects.notifications_done(&done).await?;
//! }
//! # }
//! ```
//!
//! Each [`Outgoing`] row carries its whole message, built when the event happened:
//! - [`Target::Function`] and [`Target::Queue`]: S3's event record, `{"Records":[…]}`
//!   (the queue's message body is the same text); a queue also gets the `s3:TestEvent`
//!   message when a configuration naming it is set, as S3 does;
//! - [`Target::EventBridge`]: one `PutEvents` entry (`Source` `aws.s3`, `DetailType`
//!   `Object Created` …, `Detail` as JSON text, `Resources` the bucket's ARN, `Time`,
//!   `EventBusName` `default`).
//!
//! A write with notifications off costs one in-memory lookup: configurations are cached per
//! bucket (one indexed lookup the first time a bucket is written), and no row is written and
//! no sequencer taken when nothing matches.

mod config;
mod event;
mod target;

pub use config::{KeyFilter, NotificationConfig, TargetConfig};
#[cfg(test)]
pub(crate) use event::event_time;
pub use event::{record_key, sequencer, EventKind, Requester, ANONYMOUS};
pub(crate) use event::{test_event, Event};
pub use target::Target;

use crate::model::ObjectMeta;
use crate::store::MetaStore;
use crate::{ObjectError, Result};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A notification ready to be recorded: where it goes and its whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub target: Target,
    pub payload: String,
}

/// A recorded notification waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Increasing in recording order, never reused: what
    /// [`crate::Objects::notifications_done`] takes.
    pub seq: u64,
    pub bucket: String,
    pub target: Target,
    /// The message: an event record, a test event or a `PutEvents` entry (see the module
    /// docs).
    pub payload: String,
    pub created_ms: i64,
}

/// The platform's answer to "can this target receive notifications?", asked for every
/// function and queue target when a configuration is set, as S3 checks its destinations
/// (unless the request sets `x-amz-skip-destination-validation`). Without one
/// ([`crate::Objects::with_destinations`]), targets are not checked.
pub trait Destinations: Send + Sync + 'static {
    /// `Err(reason)` when `target` does not exist or cannot receive notifications. Called
    /// on the blocking pool.
    fn check(&self, target: &Target) -> std::result::Result<(), String>;
}

/// What a write records in its own transaction if it commits: an event and the targets that
/// want it. Empty when notifications are off or nothing matches.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    pending: Option<Pending>,
}

#[derive(Debug, Clone)]
struct Pending {
    kind: EventKind,
    time_ms: i64,
    requester: Requester,
    /// Each target with the `Id` of the configuration that matched (`None`: EventBridge).
    targets: Vec<(Target, Option<String>)>,
}

impl Notes {
    /// Nothing to record.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// When the event happened (ms since the epoch); 0 if empty.
    pub fn time_ms(&self) -> i64 {
        self.pending.as_ref().map_or(0, |p| p.time_ms)
    }

    /// The messages of the event on `object` (the object written, tagged or removed), whose
    /// sequencer is the store's `n`th.
    pub fn notifications(&self, object: &ObjectMeta, n: u64) -> Vec<Notification> {
        let Some(p) = &self.pending else {
            return Vec::new();
        };
        let event = Event {
            kind: p.kind,
            time_ms: p.time_ms,
            requester: &p.requester,
            object,
            sequencer: sequencer(n),
        };
        p.targets
            .iter()
            .map(|(target, id)| Notification {
                target: target.clone(),
                payload: match id {
                    Some(id) => event.record(id),
                    None => event.bus_entry(),
                },
            })
            .collect()
    }
}

/// The engine's side of notifications: cached configurations and the consumer's wake-up.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    /// Per bucket: its configuration, `None` when it has none. Loaded on first use, replaced
    /// on set (under this lock, so a load never races a set), dropped with the bucket.
    configs: Mutex<HashMap<String, Option<Arc<NotificationConfig>>>>,
    /// Signalled after a commit that recorded notifications (one stored permit: a consumer
    /// that was busy finds it when it next waits).
    signal: tokio::sync::Notify,
}

impl Notifier {
    fn configs(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, Option<Arc<NotificationConfig>>>> {
        self.configs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bucket's configuration (cached); `None` when it has none or does not exist.
    pub fn config(
        &self,
        meta: &dyn MetaStore,
        bucket: &str,
    ) -> Result<Option<Arc<NotificationConfig>>> {
        let mut configs = self.configs();
        if let Some(c) = configs.get(bucket) {
            return Ok(c.clone());
        }
        let loaded = match meta.notification_config(bucket) {
            Ok(c) => c.filter(|c| !c.is_empty()).map(Arc::new),
            // The write reports the missing bucket itself; nothing to cache.
            Err(ObjectError::NoSuchBucket(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        configs.insert(bucket.to_string(), loaded.clone());
        Ok(loaded)
    }

    /// What a write of `kind` on `key` records.
    pub fn notes(
        &self,
        meta: &dyn MetaStore,
        (bucket, key): (&str, &str),
        kind: EventKind,
        time_ms: i64,
        requester: &Requester,
    ) -> Result<Notes> {
        let Some(config) = self.config(meta, bucket)? else {
            return Ok(Notes::none());
        };
        let targets = config.targets_for(kind, key);
        if targets.is_empty() {
            return Ok(Notes::none());
        }
        Ok(Notes {
            pending: Some(Pending {
                kind,
                time_ms,
                requester: requester.clone(),
                targets,
            }),
        })
    }

    /// Stores `config` (validated) with its test messages and caches it.
    pub fn set(
        &self,
        meta: &dyn MetaStore,
        bucket: &str,
        config: &NotificationConfig,
        tests: &[Notification],
        now_ms: i64,
    ) -> Result<()> {
        let mut configs = self.configs();
        meta.set_notification_config(bucket, config, tests, now_ms)?;
        let cached = (!config.is_empty()).then(|| Arc::new(config.clone()));
        configs.insert(bucket.to_string(), cached);
        Ok(())
    }

    /// Forgets a bucket's cached configuration (the bucket was deleted or created).
    pub fn forget(&self, bucket: &str) {
        self.configs().remove(bucket);
    }

    /// Forgets every cached configuration.
    pub fn forget_all(&self) {
        self.configs().clear();
    }

    /// Tells the consumer that rows were recorded.
    pub fn wake(&self) {
        self.signal.notify_one();
    }

    /// Wakes the consumer after a committed write that had notes to record.
    pub fn woken_by(&self, notes: &Notes) {
        if !notes.is_empty() {
            self.wake();
        }
    }

    pub async fn wait(&self) {
        self.signal.notified().await;
    }
}
