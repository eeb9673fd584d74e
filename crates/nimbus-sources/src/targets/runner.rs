//! Delivers each target's outbox in order (see the module docs of [`super`]).

use super::{open_publisher, PublishContext, Publisher, Target, TargetStore, MAX_AGE};
use crate::error::SourceError;
use crate::model::Credentials;
use crate::runner::SecretReader;
use crate::source::now_ms;
use nimbus_events::external::ExternalTargets;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

/// Makes a target's publisher ([`open_publisher`] unless replaced in tests).
pub type PublisherOpener =
    Arc<dyn Fn(PublishContext) -> crate::Result<Arc<dyn Publisher>> + Send + Sync>;

/// A target's delivery state, for `/v1/targets`.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct TargetStatus {
    /// `idle`, `delivering` or `failing`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub delivered: u64,
    pub failed: u64,
    pub dropped: u64,
}

/// Delivers the outbox of every target.
pub struct TargetRunner {
    store: Arc<dyn TargetStore>,
    secrets: SecretReader,
    opener: PublisherOpener,
    /// Wakes a target's task (a message was enqueued).
    wake: Mutex<HashMap<String, Arc<Notify>>>,
    changed: Notify,
    stopping: AtomicBool,
    status: Mutex<HashMap<String, TargetStatus>>,
    metrics: std::sync::OnceLock<Arc<nimbus_metrics::Metrics>>,
    /// First and longest pause after a failed publish.
    retry: (Duration, Duration),
    /// Set with `stopping`: wakes the delivery tasks' waits.
    halt: tokio::sync::watch::Sender<bool>,
    /// Delivery tasks (for [`TargetRunner::drain`]).
    busy: Arc<nimbus_events::drain::InFlight>,
    /// In a cluster, the targets whose outbox this node delivers ([`crate::lease`]).
    leases: Arc<crate::LeaseGate>,
}

impl TargetRunner {
    pub fn new(store: Arc<dyn TargetStore>, secrets: SecretReader) -> Arc<Self> {
        Self::with_opener(
            store,
            secrets,
            Arc::new(open_publisher),
            (Duration::from_millis(500), Duration::from_secs(60)),
        )
    }

    /// A runner with another way of making publishers and other retry pauses (tests).
    pub fn with_opener(
        store: Arc<dyn TargetStore>,
        secrets: SecretReader,
        opener: PublisherOpener,
        retry: (Duration, Duration),
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            secrets,
            opener,
            wake: Mutex::default(),
            changed: Notify::new(),
            stopping: AtomicBool::new(false),
            status: Mutex::default(),
            metrics: Default::default(),
            retry,
            halt: tokio::sync::watch::Sender::new(false),
            busy: Arc::new(nimbus_events::drain::InFlight::new()),
            leases: Arc::default(),
        })
    }

    /// Cluster mode: deliver a target's outbox only while this node holds its lease.
    pub fn set_leases(&self, leases: Arc<dyn crate::Leases>) {
        self.leases.set(leases);
    }

    /// Gives the targets' leases back (after a drain: another node takes over at once).
    async fn release_leases(&self) {
        let leases = self.leases.clone();
        let _ = tokio::task::spawn_blocking(move || leases.release_all()).await;
    }

    pub fn store(&self) -> &Arc<dyn TargetStore> {
        &self.store
    }

    pub fn set_metrics(&self, metrics: Arc<nimbus_metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Call after creating, replacing or deleting a target.
    pub fn targets_changed(&self) {
        self.changed.notify_one();
    }

    pub fn status(&self, name: &str) -> TargetStatus {
        self.status
            .lock()
            .unwrap()
            .get(name)
            .cloned()
            .unwrap_or(TargetStatus {
                state: "idle",
                ..Default::default()
            })
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.halt.send_replace(true);
        self.changed.notify_one();
    }

    /// Drains the runner: each target finishes the publish in progress and starts no
    /// other (the outbox keeps the rest, for the next start or another node); resolves
    /// when none is in progress. The caller bounds the wait.
    pub async fn drain(&self) {
        self.stop();
        self.busy.idle().await;
        self.release_leases().await;
    }

    /// Sleeps `d`, or until some wake-up (`wake`, if given) or the runner stops; false
    /// once it is stopping.
    async fn wait(&self, d: Duration, wake: Option<&Notify>) -> bool {
        let mut halt = self.halt.subscribe();
        let woken = async {
            match wake {
                Some(w) => w.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = woken => {}
            _ = halt.wait_for(|h| *h) => {}
        }
        !self.stopping.load(Ordering::SeqCst)
    }

    fn wake_of(&self, name: &str) -> Arc<Notify> {
        self.wake
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    fn update(&self, name: &str, f: impl FnOnce(&mut TargetStatus)) {
        let mut all = self.status.lock().unwrap();
        let st = all.entry(name.to_string()).or_insert(TargetStatus {
            state: "idle",
            ..Default::default()
        });
        f(st);
    }

    fn count(&self, target: &str, outcome: &'static str) {
        if let Some(m) = self.metrics.get() {
            m.sources().target_delivery(target, outcome);
        }
    }

    /// Starts the supervisor: one delivery task per target, restarted when it changes.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.supervise().await })
    }

    async fn supervise(self: Arc<Self>) {
        let mut running: HashMap<String, (Target, JoinHandle<()>)> = HashMap::new();
        while !self.stopping.load(Ordering::SeqCst) {
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.list_targets()).await {
                Ok(Ok(targets)) => {
                    let mut wanted: HashMap<String, Target> =
                        targets.into_iter().map(|t| (t.name.clone(), t)).collect();
                    // In a cluster, only the targets whose lease this node holds.
                    let keys: Vec<String> = wanted.keys().map(|n| format!("target:{n}")).collect();
                    let allowed = self.leases.allowed(&keys).await;
                    wanted.retain(|n, _| allowed.contains(&format!("target:{n}")));
                    running.retain(|name, (t, task)| {
                        let keep = wanted.get(name) == Some(t) && !task.is_finished();
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for (name, t) in wanted {
                        if running.contains_key(&name) {
                            continue;
                        }
                        let span = tracing::info_span!("target", target = %name);
                        let delivering = self.busy.enter();
                        let run = self.clone().deliver(t.clone());
                        let task = tokio::spawn(
                            async move {
                                run.await;
                                drop(delivering);
                            }
                            .instrument(span),
                        );
                        running.insert(name, (t, task));
                    }
                }
                Ok(Err(e)) => warn!("cannot read targets: {e}"),
                Err(e) => warn!("target task failed: {e}"),
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
        }
        // The delivery tasks see `stopping` and end after the publish in progress.
        drop(running);
    }

    fn open(&self, t: &Target) -> crate::Result<Arc<dyn Publisher>> {
        let credentials = match &t.secret {
            Some(name) => match (self.secrets)(name) {
                Ok(Some(v)) => Some(Credentials::from_secret(&v)),
                Ok(None) => return Err(crate::runner::missing_secret(name)),
                Err(e) => return Err(SourceError::Store(e)),
            },
            None => None,
        };
        (self.opener)(PublishContext {
            target: t.clone(),
            credentials,
        })
    }

    fn pause(&self, attempts: u32) -> Duration {
        let (min, max) = self.retry;
        let d = min
            .saturating_mul(1 << attempts.saturating_sub(1).min(16))
            .min(max);
        d.mul_f64(rand::random_range(0.8..1.2))
    }

    /// One target's loop: publish its messages in order, one at a time.
    async fn deliver(self: Arc<Self>, t: Target) {
        let wake = self.wake_of(&t.name);
        let mut publisher: Option<Arc<dyn Publisher>> = None;
        let mut connected = false;
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let (store, name) = (self.store.clone(), t.name.clone());
            let head = match tokio::task::spawn_blocking(move || store.head(&name, 64)).await {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    warn!(target = %t.name, "cannot read the outbox: {e}");
                    self.wait(Duration::from_secs(1), None).await;
                    continue;
                }
                Err(_) => return,
            };
            if head.is_empty() {
                self.update(&t.name, |st| {
                    if st.state == "delivering" {
                        st.state = "idle";
                    }
                });
                self.wait(Duration::from_secs(1), Some(&wake)).await;
                continue;
            }
            for m in head {
                if self.stopping.load(Ordering::SeqCst) {
                    // Draining: the rest stays in the outbox.
                    return;
                }
                let now = now_ms();
                if now - m.created_ms > MAX_AGE.as_millis() as i64 {
                    warn!(target = %t.name, seq = m.seq, attempts = m.attempts, "dropping a message undelivered for 24 h");
                    let (store, seq) = (self.store.clone(), m.seq);
                    let _ = tokio::task::spawn_blocking(move || store.delivered(seq)).await;
                    self.count(&t.name, "dropped");
                    self.update(&t.name, |st| st.dropped += 1);
                    continue;
                }
                if m.next_ms > now {
                    // In order: nothing behind a message waiting for its retry goes first.
                    let pause = Duration::from_millis((m.next_ms - now) as u64);
                    if !self.wait(pause, None).await {
                        return;
                    }
                }
                let result = async {
                    let p = match &publisher {
                        Some(p) => p.clone(),
                        None => {
                            let p = self.open(&t)?;
                            publisher = Some(p.clone());
                            p
                        }
                    };
                    if !connected {
                        p.connect().await?;
                        connected = true;
                        info!(target = %t.name, "target connected");
                    }
                    let headers: Vec<(String, String)> = m
                        .trace
                        .iter()
                        .map(|tp| ("traceparent".to_string(), tp.clone()))
                        .collect();
                    p.publish(m.body.as_bytes(), &headers).await
                }
                .await;
                match result {
                    Ok(()) => {
                        let (store, seq) = (self.store.clone(), m.seq);
                        let _ = tokio::task::spawn_blocking(move || store.delivered(seq)).await;
                        self.count(&t.name, "delivered");
                        self.update(&t.name, |st| {
                            st.state = "delivering";
                            st.delivered += 1;
                            st.last_error = None;
                        });
                        debug!(target = %t.name, seq = m.seq, "delivered");
                    }
                    Err(e) => {
                        connected = false;
                        if matches!(e, SourceError::Config(_)) {
                            publisher = None;
                        }
                        let next = now_ms() + self.pause(m.attempts + 1).as_millis() as i64;
                        warn!(target = %t.name, seq = m.seq, attempts = m.attempts + 1, "cannot publish (retried): {e}");
                        let (store, seq, err) = (self.store.clone(), m.seq, e.to_string());
                        let _ = tokio::task::spawn_blocking(move || store.failed(seq, next, &err))
                            .await;
                        self.count(&t.name, "failed");
                        let msg = e.to_string();
                        self.update(&t.name, |st| {
                            st.state = "failing";
                            st.failed += 1;
                            st.last_error = Some(msg);
                        });
                        break;
                    }
                }
            }
        }
    }
}

impl ExternalTargets for TargetRunner {
    fn enqueue(&self, name: &str, body: &str, trace: Option<&str>) -> Result<(), String> {
        self.store
            .enqueue(name, body, trace, now_ms())
            .map_err(|e| e.to_string())?;
        self.wake_of(name).notify_one();
        Ok(())
    }

    fn exists(&self, name: &str) -> bool {
        matches!(self.store.get_target(name), Ok(Some(_)))
    }
}
