//! The mapping runner: one task per enabled source mapping drives its connector with the
//! semantics Lambda gives event-source mappings, the same for every broker.
//!
//! - **Batching**: up to `BatchSize` records, waiting up to `MaximumBatchingWindowInSeconds`
//!   to fill a batch; never more than Lambda's 6 MB synchronous payload (what does not
//!   fit starts the next batch).
//! - **Filters** (`FilterCriteria`, the bus's pattern engine): a record no pattern matches
//!   is acknowledged without invoking.
//! - **Settling**: success acknowledges the batch; with `ReportBatchItemFailures` the
//!   function's `batchItemFailures` are retried and the rest acknowledged (for an ordered
//!   source, everything before the first failed record, as Lambda checkpoints streams).
//! - **Retries** happen here, in place, with exponential back-off, holding the records
//!   unacknowledged on the broker: `MaximumRetryAttempts` (-1: until the record expires),
//!   `MaximumRecordAgeInSeconds`, `BisectBatchOnFunctionError` (a failing batch is split
//!   in halves, which do not count as retries). When they are exhausted the batch goes to
//!   `DestinationConfig.OnFailure` (an invocation record holding the records) and is
//!   acknowledged; without a destination the connector's `reject` hands it to the broker's
//!   own dead-lettering.
//! - **Concurrency and back-pressure**: at most `ScalingConfig.MaximumConcurrency`
//!   batches in flight (one for ordered sources); a throttled function is retried without
//!   counting, and while every batch slot is taken the runner polls nothing, so the
//!   connector's bounded prefetch stops the broker's flow instead of buffering.
//! - **Resilience**: any connector error drops the connection; the runner reconnects with
//!   exponential back-off and jitter and reports the state (`connecting`, `connected`,
//!   `lagging`, `failing` with the last error) in [`MappingStatus`]. A mapping never
//!   blocks another one or the invoke path.
//! - **Drain** ([`SourceRunner::drain`]): the mappings poll nothing more; records polled
//!   but not yet handed to the function (a batch filling, what did not fit the last one)
//!   are dropped unacknowledged, so the broker delivers them again (to another consumer
//!   at once where it tracks its consumers' connections, after its acknowledgement
//!   deadline otherwise; an ordered source's next reader starts from the last
//!   acknowledged record); batches being settled finish, and the drain resolves then.

use crate::connectors;
use crate::error::SourceError;
use crate::model::{Credentials, Kind, SourceMapping};
use crate::source::{now_ms, Context, Record, Source};
use crate::store::{MappingCheckpoints, SourceStore};
use async_trait::async_trait;
use nimbus_events::engine::{Attempt, Invoker};
use nimbus_events::heartbeat::Heartbeat;
use nimbus_events::mapping::{partial_batch_outcome, BatchOutcome};
use nimbus_events::pattern::EventPattern;
use nimbus_metrics::Trigger;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

/// The error of a mapping naming a secret that does not exist.
pub(crate) fn missing_secret(name: &str) -> SourceError {
    SourceError::Config(format!(
        "the secret {name:?} does not exist: create it with `nimbus secret set {name}`"
    ))
}

/// Largest synchronous invocation payload (Lambda's 6 MB).
const MAX_PAYLOAD: usize = 6 * 1024 * 1024;

/// Largest invocation record sent to an on-failure destination with its records (an
/// asynchronous invocation's 256 KB); a bigger batch's record leaves them out.
const MAX_FAILURE_RECORD: usize = 256 * 1024;

/// Where a batch whose retries are exhausted goes (`DestinationConfig.OnFailure`).
#[async_trait]
pub trait FailureSink: Send + Sync + 'static {
    /// Hands `record` to the destination `arn`; `key` deduplicates a resend.
    async fn send(&self, arn: &str, record: &Value, key: String) -> Result<(), String>;
}

#[async_trait]
impl FailureSink for nimbus_events::bus::EventBus {
    async fn send(&self, arn: &str, record: &Value, key: String) -> Result<(), String> {
        self.deliver(arn, record, Some(key), Default::default())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Reads a Nimbus secret's value by name (`Ok(None)`: no such secret).
pub type SecretReader = Arc<dyn Fn(&str) -> Result<Option<Vec<u8>>, String> + Send + Sync>;

/// Makes the connector of a mapping ([`connectors::open`] unless replaced).
pub type Opener = Arc<dyn Fn(Context) -> crate::Result<Arc<dyn Source>> + Send + Sync>;

/// Runner settings.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// How long one poll waits for the first record.
    pub poll_wait: Duration,
    /// How often the set of mappings is reread.
    pub reconcile_every: Duration,
    /// Reconnect back-off: first and longest delay (doubling, with jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Retry back-off of a failed batch: first and longest delay (doubling).
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// An iterator age above this marks a connected mapping `lagging`.
    pub lagging_after: Duration,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            poll_wait: Duration::from_secs(1),
            reconcile_every: Duration::from_secs(2),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            lagging_after: Duration::from_secs(60),
        }
    }
}

/// What a mapping is doing, for `/v1/sources`, the CLI and Lambda's
/// `LastProcessingResult`.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct MappingStatus {
    /// `connecting`, `connected`, `lagging`, `failing`, `disabled`, or `remote` (another
    /// node of the cluster runs it).
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected_since_ms: Option<i64>,
    /// Invocations made and the records sent in them (retries included: a record tried
    /// twice counts twice).
    pub batches: u64,
    pub records: u64,
    /// Records a function reported as failed or whose batch failed (each attempt).
    pub failed_records: u64,
    /// Records handed to the on-failure destination or the broker's dead-lettering.
    pub dead_lettered: u64,
    /// Records acknowledged without invoking (no filter matched).
    pub filtered: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_batch_ms: Option<i64>,
    /// Age of the oldest record of the last batch when it was invoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iterator_age_ms: Option<i64>,
    /// Records waiting on the broker, when the connector can say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

impl MappingStatus {
    /// Lambda's `LastProcessingResult`.
    pub fn last_processing_result(&self) -> String {
        match (self.state, &self.last_error) {
            ("failing", Some(e)) => format!("PROBLEM: {e}"),
            _ if self.batches == 0 => "No records processed".into(),
            _ => "OK".into(),
        }
    }
}

/// The lease of mapping `uuid` in a cluster.
fn lease_key(uuid: &str) -> String {
    format!("source:{uuid}")
}

/// Runs one task per enabled source mapping.
pub struct SourceRunner {
    store: Arc<dyn SourceStore>,
    secrets: SecretReader,
    opener: Opener,
    cfg: RunnerConfig,
    status: Mutex<HashMap<String, MappingStatus>>,
    /// The running mapping tasks, by mapping id (the supervisor's; `delete` takes one out
    /// to stop it before removing the broker state it could otherwise recreate).
    running: Mutex<HashMap<String, (SourceMapping, JoinHandle<()>)>>,
    changed: Notify,
    stopping: AtomicBool,
    heartbeat: Heartbeat,
    sink: std::sync::OnceLock<Arc<dyn FailureSink>>,
    tracer: std::sync::OnceLock<nimbus_trace::Tracer>,
    metrics: std::sync::OnceLock<Arc<nimbus_metrics::Metrics>>,
    /// Set with `stopping`: wakes the mappings' waits (polls, back-offs).
    halt: tokio::sync::watch::Sender<bool>,
    /// Mapping tasks and batches being settled (for [`SourceRunner::drain`]).
    busy: Arc<nimbus_events::drain::InFlight>,
    /// In a cluster, the mappings this node runs ([`crate::lease`]).
    leases: Arc<crate::LeaseGate>,
}

impl SourceRunner {
    pub fn new(store: Arc<dyn SourceStore>, secrets: SecretReader, cfg: RunnerConfig) -> Arc<Self> {
        Arc::new(Self {
            heartbeat: Heartbeat::new(cfg.reconcile_every),
            store,
            secrets,
            opener: Arc::new(connectors::open),
            cfg,
            status: Mutex::new(HashMap::new()),
            running: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            stopping: AtomicBool::new(false),
            sink: Default::default(),
            tracer: Default::default(),
            metrics: Default::default(),
            halt: tokio::sync::watch::Sender::new(false),
            busy: Arc::new(nimbus_events::drain::InFlight::new()),
            leases: Arc::default(),
        })
    }

    /// The same runner with another way of making connectors (tests of the runner's
    /// semantics use an in-memory source).
    pub fn with_opener(
        store: Arc<dyn SourceStore>,
        secrets: SecretReader,
        cfg: RunnerConfig,
        opener: Opener,
    ) -> Arc<Self> {
        let mut me = Self::new(store, secrets, cfg);
        Arc::get_mut(&mut me).expect("not shared yet").opener = opener;
        me
    }

    pub fn store(&self) -> &Arc<dyn SourceStore> {
        &self.store
    }

    /// Where batches whose retries are exhausted go (set by the server).
    pub fn set_failure_sink(&self, sink: Arc<dyn FailureSink>) {
        let _ = self.sink.set(sink);
    }

    pub fn set_tracer(&self, tracer: nimbus_trace::Tracer) {
        let _ = self.tracer.set(tracer);
    }

    pub fn set_metrics(&self, metrics: Arc<nimbus_metrics::Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// Cluster mode: run a mapping only while this node holds its lease.
    pub fn set_leases(&self, leases: Arc<dyn crate::Leases>) {
        self.leases.set(leases);
    }

    /// The supervisor's heartbeat (for health checks).
    pub fn heartbeat(&self) -> &Heartbeat {
        &self.heartbeat
    }

    /// Call after creating, updating or deleting a mapping.
    pub fn mappings_changed(&self) {
        self.changed.notify_one();
    }

    /// The state of mapping `uuid` (`disabled` for a disabled one, `connecting` before
    /// its task first reported).
    pub fn status(&self, m: &SourceMapping) -> MappingStatus {
        if !m.enabled {
            return MappingStatus {
                state: "disabled",
                ..Default::default()
            };
        }
        self.status
            .lock()
            .unwrap()
            .get(&m.uuid)
            .cloned()
            .unwrap_or(MappingStatus {
                state: "connecting",
                ..Default::default()
            })
    }

    /// Deletes mapping `uuid` and the durable state its connector made on the broker
    /// (a PostgreSQL slot); the deleted mapping, if it existed.
    pub async fn delete(&self, uuid: &str) -> crate::Result<Option<SourceMapping>> {
        let (store, id) = (self.store.clone(), uuid.to_string());
        let deleted = tokio::task::spawn_blocking(move || store.delete(&id))
            .await
            .map_err(|e| SourceError::Store(e.to_string()))??;
        self.mappings_changed();
        // Stop its task first: a task still connecting would recreate what `remove` drops.
        let task = self.running.lock().unwrap().remove(uuid);
        if let Some((_, task)) = task {
            task.abort();
            let _ = task.await;
        }
        if let Some(m) = &deleted {
            self.status.lock().unwrap().remove(&m.uuid);
            match self.open(m) {
                Ok(source) => {
                    if let Err(e) = source.remove().await {
                        warn!(mapping = %m.uuid, source = %m.source.label(), "cannot remove the broker state of a deleted mapping: {e}");
                    }
                }
                Err(e) => {
                    warn!(mapping = %m.uuid, "cannot open a deleted mapping's connector: {e}")
                }
            }
        }
        Ok(deleted)
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.halt.send_replace(true);
        self.changed.notify_one();
    }

    /// Drains the runner (see the module docs): resolves when the batches being settled
    /// have finished; the caller bounds the wait.
    pub async fn drain(&self) {
        self.stop();
        self.busy.idle().await;
        self.release_leases().await;
    }

    /// Resolves once the runner is stopping.
    async fn halted(&self) {
        let mut rx = self.halt.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }

    /// Sleeps `d`; false when the runner stopped meanwhile.
    async fn pause_unless_halted(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping.load(Ordering::SeqCst),
            _ = self.halted() => false,
        }
    }

    /// Starts the supervisor; it runs until [`stop`](Self::stop); the mapping tasks then
    /// end on their own (what they had not acknowledged is delivered again by the
    /// broker; see [`SourceRunner::drain`]).
    pub fn spawn(self: &Arc<Self>, invoker: Arc<dyn Invoker>) -> JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move { me.supervise(invoker).await })
    }

    async fn supervise(self: Arc<Self>, invoker: Arc<dyn Invoker>) {
        while !self.stopping.load(Ordering::SeqCst) {
            self.heartbeat.beat();
            let store = self.store.clone();
            match tokio::task::spawn_blocking(move || store.list()).await {
                Ok(Ok(mappings)) => {
                    let mut wanted: HashMap<String, SourceMapping> = mappings
                        .into_iter()
                        .filter(|m| m.enabled)
                        .map(|m| (m.uuid.clone(), m))
                        .collect();
                    // In a cluster, only the mappings whose lease this node holds.
                    let keys: Vec<String> = wanted.keys().map(|u| lease_key(u)).collect();
                    let allowed = self.leases.allowed(&keys).await;
                    {
                        let mut status = self.status.lock().unwrap();
                        status.retain(|uuid, _| wanted.contains_key(uuid));
                        for uuid in wanted.keys() {
                            if !allowed.contains(&lease_key(uuid)) {
                                status.insert(
                                    uuid.clone(),
                                    MappingStatus {
                                        state: "remote",
                                        ..Default::default()
                                    },
                                );
                            }
                        }
                    }
                    wanted.retain(|uuid, _| allowed.contains(&lease_key(uuid)));
                    let mut running = self.running.lock().unwrap();
                    running.retain(|uuid, (m, task)| {
                        let keep = wanted.get(uuid) == Some(m) && !task.is_finished();
                        if !keep {
                            task.abort();
                            debug!(mapping = %uuid, "source mapping stopped");
                        }
                        keep
                    });
                    for (uuid, m) in wanted {
                        if running.contains_key(&uuid) {
                            continue;
                        }
                        info!(mapping = %uuid, source = %m.source.label(), function = %m.function, "starting source mapping");
                        let span = tracing::info_span!("source", mapping = %uuid, source = %m.source.label());
                        let running_guard = self.busy.enter();
                        let run = self.clone().run(Arc::new(m.clone()), invoker.clone());
                        let task = tokio::spawn(
                            async move {
                                run.await;
                                drop(running_guard);
                            }
                            .instrument(span),
                        );
                        running.insert(uuid, (m, task));
                    }
                }
                Ok(Err(e)) => warn!("cannot read source mappings: {e}"),
                Err(e) => warn!("source mapping task failed: {e}"),
            }
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep(self.cfg.reconcile_every) => {}
            }
        }
        // The mapping tasks see `stopping` and end by themselves.
        self.running.lock().unwrap().clear();
    }

    /// Gives the mappings' leases back (after a drain: another node takes over at once).
    async fn release_leases(&self) {
        let leases = self.leases.clone();
        let _ = tokio::task::spawn_blocking(move || leases.release_all()).await;
    }

    /// The connector of `m`, with its credentials read from its secret.
    fn open(&self, m: &SourceMapping) -> crate::Result<Arc<dyn Source>> {
        let credentials = match &m.source.secret {
            Some(name) => match (self.secrets)(name) {
                Ok(Some(value)) => Some(Credentials::from_secret(&value)),
                Ok(None) => return Err(missing_secret(name)),
                Err(e) => return Err(SourceError::Store(e)),
            },
            None => None,
        };
        (self.opener)(Context {
            mapping: m.uuid.clone(),
            spec: m.source.clone(),
            credentials,
            checkpoints: Arc::new(MappingCheckpoints {
                store: self.store.clone(),
                uuid: m.uuid.clone(),
            }),
            batch_size: m.batch_size as usize,
            concurrency: m.concurrency(),
        })
    }

    fn update(&self, uuid: &str, f: impl FnOnce(&mut MappingStatus)) {
        let mut all = self.status.lock().unwrap();
        let st = all.entry(uuid.to_string()).or_insert(MappingStatus {
            state: "connecting",
            ..Default::default()
        });
        f(st);
    }

    fn failing(&self, m: &SourceMapping, e: &SourceError) {
        warn!(mapping = %m.uuid, source = %m.source.label(), "source mapping failing: {e}");
        let msg = e.to_string();
        self.update(&m.uuid, |st| {
            st.state = "failing";
            st.last_error = Some(msg);
            st.last_error_ms = Some(now_ms());
            st.connected_since_ms = None;
        });
    }

    /// One mapping's life: open, connect, poll and hand batches to settling tasks;
    /// reconnect with back-off after any error.
    async fn run(self: Arc<Self>, m: Arc<SourceMapping>, invoker: Arc<dyn Invoker>) {
        let filters: Arc<Vec<EventPattern>> = Arc::new(
            m.filters
                .iter()
                .filter_map(|f| match EventPattern::parse(f) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        warn!(mapping = %m.uuid, "ignoring an invalid filter: {e}");
                        None
                    }
                })
                .collect(),
        );
        let mut backoff = Backoff::new(self.cfg.backoff_min, self.cfg.backoff_max);
        let source = loop {
            match self.open(&m) {
                Ok(s) => break s,
                Err(e) => {
                    self.failing(&m, &e);
                    if !self.pause_unless_halted(backoff.next(false)).await {
                        return;
                    }
                }
            }
        };
        let permits = Arc::new(Semaphore::new(m.concurrency()));
        let shared = Arc::new(Shared {
            broken: AtomicBool::new(false),
            throttles: AtomicU32::new(0),
        });
        let batch_size = m.batch_size as usize;
        let window = Duration::from_secs(u64::from(m.window_s));
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            self.update(&m.uuid, |st| st.state = "connecting");
            if let Err(e) = source.connect().await {
                self.failing(&m, &e);
                if !self
                    .pause_unless_halted(backoff.next(e.is_transient()))
                    .await
                {
                    return;
                }
                continue;
            }
            info!(mapping = %m.uuid, source = %m.source.label(), "source connected");
            backoff.reset();
            self.update(&m.uuid, |st| {
                st.state = "connected";
                st.connected_since_ms = Some(now_ms());
            });
            shared.broken.store(false, Ordering::SeqCst);
            // Records polled that did not fit the previous batch: they start the next one.
            let mut carry: Vec<Record> = Vec::new();
            let mut lag_checked = Instant::now() - Duration::from_secs(60);
            let error = loop {
                let n = shared.throttles.load(Ordering::SeqCst);
                if n > 0 {
                    // The function is throttled: poll nothing more for a while.
                    let _ = self
                        .pause_unless_halted(Duration::from_millis(100 << n.min(7)))
                        .await;
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                if self.stopping.load(Ordering::SeqCst) {
                    // Draining: `carry` goes back to the broker unacknowledged.
                    return;
                }
                if shared.broken.swap(false, Ordering::SeqCst) {
                    break SourceError::Broker(
                        "the connection failed while settling a batch".into(),
                    );
                }
                if lag_checked.elapsed() > Duration::from_secs(10) {
                    lag_checked = Instant::now();
                    let lag = source.lag().await;
                    self.update(&m.uuid, |st| st.lag = lag);
                }
                let mut batch = std::mem::take(&mut carry);
                if batch.len() < batch_size {
                    let wait = if batch.is_empty() {
                        self.cfg.poll_wait
                    } else {
                        Duration::ZERO
                    };
                    let polled = tokio::select! {
                        r = source.poll(batch_size - batch.len(), wait) => r,
                        _ = self.halted() => return,
                    };
                    match polled {
                        Ok(more) => batch.extend(more),
                        Err(e) => break e,
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                // Fill the batch for up to the batching window.
                let started = Instant::now();
                let mut failed = None;
                while batch.len() < batch_size && started.elapsed() < window {
                    let left = window.saturating_sub(started.elapsed());
                    let polled = tokio::select! {
                        r = source.poll(batch_size - batch.len(), left) => r,
                        _ = self.halted() => break,
                    };
                    match polled {
                        Ok(more) => batch.extend(more),
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failed {
                    break e;
                }
                if self.stopping.load(Ordering::SeqCst) {
                    // Draining: polled, not started: back to the broker unacknowledged.
                    debug!(mapping = %m.uuid, records = batch.len(), "batch left unacknowledged by the drain");
                    return;
                }
                // Lambda's synchronous payload limit bounds a batch whatever its size.
                let keep = fitting(&batch);
                carry = batch.split_off(keep);
                let settle = Settle {
                    runner: self.clone(),
                    m: m.clone(),
                    source: source.clone(),
                    invoker: invoker.clone(),
                    filters: filters.clone(),
                    shared: shared.clone(),
                };
                let settling = self.busy.enter();
                tokio::spawn(
                    async move {
                        settle.run(batch).await;
                        drop((permit, settling));
                    }
                    .in_current_span(),
                );
            };
            self.failing(&m, &error);
            // In-flight batches of the old connection settle on their own (the connector
            // ignores their acknowledgements); wait for them before an ordered source
            // reads again, so it starts from its first unacknowledged record.
            if m.source.kind.ordered() {
                let _ = permits.acquire_many(m.concurrency() as u32).await;
            }
            if !self
                .pause_unless_halted(backoff.next(error.is_transient()))
                .await
            {
                return;
            }
        }
    }
}

/// State the settling tasks share with their mapping's loop.
struct Shared {
    /// A settling task saw the connection fail: reconnect before polling again.
    broken: AtomicBool,
    /// Consecutive throttled invocations (grows the poll loop's pause).
    throttles: AtomicU32,
}

/// What filters see of a record: as Lambda does for Amazon MQ and Kafka, a base64 `data`
/// (or MQTT `payload`) holding JSON is decoded first, so patterns can match its fields.
fn filter_view(data: &Value) -> std::borrow::Cow<'_, Value> {
    use base64::Engine;
    let mut view = std::borrow::Cow::Borrowed(data);
    for key in ["data", "payload"] {
        let Some(Value::String(b64)) = data.get(key) else {
            continue;
        };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
        if let Some(json) = decoded {
            view.to_mut()[key] = json;
        }
    }
    view
}

/// How many of `batch` fit in one event within [`MAX_PAYLOAD`] (at least one).
fn fitting(batch: &[Record]) -> usize {
    let mut size = 64;
    for (i, r) in batch.iter().enumerate() {
        size += r.size + 1;
        if size > MAX_PAYLOAD && i > 0 {
            return i;
        }
    }
    batch.len()
}

/// Reconnect back-off: doubling from `min` to `max`, with jitter; configuration errors
/// wait at least 5 s (a user must change something).
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn reset(&mut self) {
        self.next = self.min;
    }

    fn next(&mut self, transient: bool) -> Duration {
        let base = if transient {
            self.next
        } else {
            self.next.max(Duration::from_secs(5).min(self.max))
        };
        self.next = (self.next * 2).min(self.max);
        jitter(base)
    }
}

/// `d` ± 20 %.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random_range(0.8..1.2);
    d.mul_f64(f)
}

/// Why a batch's records leave without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    RetryAttemptsExhausted,
    RecordAgeExceeded,
    /// A record alone is larger than the 6 MB invoke payload: it can never be delivered.
    PayloadTooLarge,
}

impl Condition {
    fn as_str(self) -> &'static str {
        match self {
            Condition::RetryAttemptsExhausted => "RetryAttemptsExhausted",
            Condition::RecordAgeExceeded => "RecordAgeExceeded",
            Condition::PayloadTooLarge => "PayloadTooLarge",
        }
    }
}

/// The last failed attempt, for the on-failure invocation record.
#[derive(Debug, Clone, Default)]
struct LastFailure {
    request_id: String,
    version: String,
    error_type: Option<String>,
}

/// Settles one batch: invoke, acknowledge, retry, bisect, dead-letter.
struct Settle {
    runner: Arc<SourceRunner>,
    m: Arc<SourceMapping>,
    source: Arc<dyn Source>,
    invoker: Arc<dyn Invoker>,
    filters: Arc<Vec<EventPattern>>,
    shared: Arc<Shared>,
}

impl Settle {
    fn ordered(&self) -> bool {
        self.m.source.kind.ordered()
    }

    fn passes(&self, r: &Record) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let view = filter_view(&r.data);
        self.filters.iter().any(|f| f.matches(&view))
    }

    async fn ack(&self, records: &[Record]) -> bool {
        if records.is_empty() {
            return true;
        }
        match self.source.ack(records).await {
            Ok(()) => true,
            Err(e) => {
                warn!(mapping = %self.m.uuid, "cannot acknowledge {} records (they will be delivered again): {e}", records.len());
                self.shared.broken.store(true, Ordering::SeqCst);
                false
            }
        }
    }

    async fn run(self, batch: Vec<Record>) {
        let mut chunks: VecDeque<(Vec<Record>, u32)> = VecDeque::from([(batch, 0)]);
        while let Some((chunk, failures)) = chunks.pop_front() {
            if !self.settle_chunk(chunk, failures, &mut chunks).await {
                // The connection failed: the rest is delivered again after reconnecting.
                return;
            }
        }
    }

    /// Drives one chunk to an end (acknowledged, dead-lettered, or split into halves
    /// pushed to the front of `chunks`). False when the connection failed, or the runner
    /// is draining and the chunk needs a retry (left unacknowledged).
    async fn settle_chunk(
        &self,
        mut chunk: Vec<Record>,
        mut failures: u32,
        chunks: &mut VecDeque<(Vec<Record>, u32)>,
    ) -> bool {
        let m = &self.m;
        let mut throttled = 0u32;
        let mut last = LastFailure::default();
        loop {
            if chunk.is_empty() {
                return true;
            }
            // Records older than MaximumRecordAgeInSeconds are given up (for an ordered
            // source only a leading run, so acknowledgements stay in order).
            if m.maximum_record_age_s >= 0 {
                let limit = now_ms() - i64::from(m.maximum_record_age_s) * 1000;
                let (expired, live): (Vec<Record>, Vec<Record>) = if self.ordered() {
                    let n = chunk.iter().take_while(|r| r.produced_ms < limit).count();
                    let live = chunk.split_off(n);
                    (chunk, live)
                } else {
                    chunk.into_iter().partition(|r| r.produced_ms < limit)
                };
                chunk = live;
                if !expired.is_empty()
                    && !self
                        .give_up(expired, Condition::RecordAgeExceeded, &last, failures)
                        .await
                {
                    return false;
                }
                if chunk.is_empty() {
                    return true;
                }
            }
            // A record that alone exceeds the invoke payload limit can never be delivered:
            // it leaves at once (for an ordered source only a leading one, in order).
            let too_big = |r: &Record| r.size + 64 > MAX_PAYLOAD;
            if chunk.iter().any(too_big) {
                let (big, rest): (Vec<Record>, Vec<Record>) = if self.ordered() {
                    let n = chunk.iter().take_while(|r| too_big(r)).count();
                    let rest = chunk.split_off(n);
                    (chunk, rest)
                } else {
                    chunk.into_iter().partition(too_big)
                };
                chunk = rest;
                if !big.is_empty() {
                    let msg = format!(
                        "{} record(s) larger than the 6 MB invoke payload limit (first: {}, {} bytes) were dead-lettered",
                        big.len(),
                        big[0].id,
                        big[0].size
                    );
                    warn!(mapping = %m.uuid, "{msg}");
                    self.runner.update(&m.uuid, |st| {
                        st.last_error = Some(msg);
                        st.last_error_ms = Some(now_ms());
                    });
                    if !self
                        .give_up(big, Condition::PayloadTooLarge, &last, failures)
                        .await
                    {
                        return false;
                    }
                }
                if chunk.is_empty() {
                    return true;
                }
                // An ordered chunk may hold a big record after the leading run: settle the
                // part before it first, the rest comes back as its own chunk.
                if self.ordered() {
                    if let Some(p) = chunk.iter().position(too_big) {
                        let rest = chunk.split_off(p);
                        chunks.push_front((rest, failures));
                    }
                }
            }
            // Records no filter matches are acknowledged without invoking.
            let (send, skipped): (Vec<Record>, Vec<Record>) =
                chunk.iter().cloned().partition(|r| self.passes(r));
            if !skipped.is_empty() {
                let n = skipped.len() as u64;
                self.runner.update(&m.uuid, |st| st.filtered += n);
            }
            if send.is_empty() {
                return self.ack(&chunk).await;
            }
            if !self.ordered() && !skipped.is_empty() {
                if !self.ack(&skipped).await {
                    return false;
                }
                chunk = send.clone();
            }
            let request_id = uuid::Uuid::new_v4().to_string();
            let invoked_ms = now_ms();
            let attempt = self.invoke(&send, &request_id).await;
            let (outcome, function_error) = match &attempt {
                Attempt::Success { body, .. } if m.report_batch_item_failures => {
                    let ids: HashSet<&str> = send.iter().map(|r| r.id.as_str()).collect();
                    (partial_batch_outcome(body, &ids), false)
                }
                Attempt::Success { .. } => (BatchOutcome::DeleteAll, false),
                Attempt::FunctionError { error_type, .. } => {
                    info!(mapping = %m.uuid, function = %m.function, request_id, error_type,
                          records = send.len(), "function failed: the batch will be retried");
                    (BatchOutcome::DeleteNone, true)
                }
                Attempt::Throttled(why) | Attempt::Missing(why) => {
                    // Not an attempt: wait and try again, holding the records (and the
                    // batch slot: the poll loop stops when every slot is held).
                    throttled += 1;
                    self.shared.throttles.fetch_add(1, Ordering::SeqCst);
                    debug!(mapping = %m.uuid, "batch not delivered: {why}");
                    if matches!(attempt, Attempt::Missing(_)) {
                        self.runner.update(&m.uuid, |st| {
                            st.last_error = Some(format!("function {}: {why}", m.function));
                            st.last_error_ms = Some(now_ms());
                        });
                    }
                    if self.runner.stopping.load(Ordering::SeqCst) {
                        // Draining: the retry is not started here; the broker delivers
                        // the records again.
                        return false;
                    }
                    let pause = Duration::from_millis(100 << throttled.min(7));
                    tokio::time::sleep(jitter(pause)).await;
                    let _ = self.source.touch(&chunk).await;
                    continue;
                }
            };
            if throttled > 0 {
                self.shared.throttles.store(0, Ordering::SeqCst);
                throttled = 0;
            }
            if let Attempt::Success { version, .. } | Attempt::FunctionError { version, .. } =
                &attempt
            {
                last = LastFailure {
                    request_id: request_id.clone(),
                    version: version.clone(),
                    error_type: match &attempt {
                        Attempt::FunctionError { error_type, .. } => Some(error_type.clone()),
                        _ => None,
                    },
                };
            }
            if matches!(outcome, BatchOutcome::DeleteNone) && !function_error {
                warn!(mapping = %m.uuid, function = %m.function,
                      "unusable partial batch response: the whole batch will be retried");
            }
            // What is acknowledged now and what stays for a retry.
            let (done, rest): (Vec<Record>, Vec<Record>) = match &outcome {
                BatchOutcome::DeleteAll => (std::mem::take(&mut chunk), Vec::new()),
                BatchOutcome::DeleteNone => (Vec::new(), std::mem::take(&mut chunk)),
                BatchOutcome::DeleteAllBut(failed) if self.ordered() => {
                    // A stream checkpoints before the first failed record.
                    let p = chunk
                        .iter()
                        .position(|r| failed.contains(&r.id))
                        .unwrap_or(chunk.len());
                    let rest = chunk.split_off(p);
                    (std::mem::take(&mut chunk), rest)
                }
                BatchOutcome::DeleteAllBut(failed) => std::mem::take(&mut chunk)
                    .into_iter()
                    .partition(|r| !failed.contains(&r.id)),
            };
            let failed_now = rest.iter().filter(|r| self.passes(r)).count() as u64;
            self.count(&send, failed_now, invoked_ms);
            if !self.ack(&done).await {
                return false;
            }
            if rest.is_empty() {
                return true;
            }
            chunk = rest;
            // A failure: bisect, give up, or retry after a pause.
            if function_error && m.bisect_batch_on_function_error && chunk.len() > 1 {
                let second = chunk.split_off(chunk.len() / 2);
                debug!(mapping = %m.uuid, first = chunk.len(), second = second.len(), "bisecting a failed batch");
                chunks.push_front((second, failures));
                chunks.push_front((chunk, failures));
                return true;
            }
            failures += 1;
            if m.maximum_retry_attempts >= 0 && failures > m.maximum_retry_attempts as u32 {
                if let (true, BatchOutcome::DeleteAllBut(failed)) = (self.ordered(), &outcome) {
                    // The last attempt processed everything but the reported records: only
                    // they are given up; the whole chunk is then acknowledged in order.
                    let dead: Vec<Record> = chunk
                        .iter()
                        .filter(|r| failed.contains(&r.id))
                        .cloned()
                        .collect();
                    return self
                        .give_up_within(
                            dead,
                            &chunk,
                            Condition::RetryAttemptsExhausted,
                            &last,
                            failures,
                        )
                        .await;
                }
                return self
                    .give_up(chunk, Condition::RetryAttemptsExhausted, &last, failures)
                    .await;
            }
            let pause = self
                .runner
                .cfg
                .retry_min
                .saturating_mul(1 << failures.saturating_sub(1).min(16))
                .min(self.runner.cfg.retry_max);
            if self.runner.stopping.load(Ordering::SeqCst) {
                // Draining: the retry is not started here (see above).
                debug!(mapping = %m.uuid, records = chunk.len(), "failed batch left unacknowledged by the drain");
                return false;
            }
            tokio::time::sleep(jitter(pause)).await;
            if let Err(e) = self.source.touch(&chunk).await {
                debug!(mapping = %m.uuid, "cannot extend the records' deadline: {e}");
            }
        }
    }

    /// Invokes the function with `send` as one event, within the records' trace.
    async fn invoke(&self, send: &[Record], request_id: &str) -> Attempt {
        let m = &self.m;
        let payload = self.source.event(send).to_string();
        let (function, qualifier) = m
            .function
            .split_once(':')
            .unwrap_or((&m.function, nimbus_core::LATEST));
        let contexts: Vec<nimbus_trace::TraceContext> = send
            .iter()
            .filter_map(|r| r.trace.as_deref())
            .filter_map(nimbus_trace::TraceContext::parse_stored)
            .collect();
        let trace = match self.runner.tracer.get() {
            Some(t) => t.hop(
                format!("batch {}", m.source.label()),
                contexts.first(),
                vec![
                    nimbus_trace::KeyValue::new("messaging.system", m.source.kind.as_str()),
                    nimbus_trace::KeyValue::new("nimbus.mapping", m.uuid.clone()),
                    nimbus_trace::KeyValue::new("messaging.batch.message_count", send.len() as i64),
                ],
                contexts.clone(),
            ),
            None => contexts.first().cloned(),
        }
        .map(|t| t.stored_traceparent());
        self.invoker
            .invoke_traced(
                trigger(m.source.kind),
                function,
                qualifier,
                request_id,
                payload,
                trace.as_deref(),
            )
            .await
    }

    fn count(&self, send: &[Record], failed: u64, invoked_ms: i64) {
        let m = &self.m;
        let oldest = send
            .iter()
            .map(|r| r.produced_ms)
            .min()
            .unwrap_or(invoked_ms);
        let age = (invoked_ms - oldest).max(0);
        let lagging = Duration::from_millis(age as u64) > self.runner.cfg.lagging_after;
        self.runner.update(&m.uuid, |st| {
            st.batches += 1;
            st.records += send.len() as u64;
            st.failed_records += failed;
            st.last_batch_ms = Some(invoked_ms);
            st.iterator_age_ms = Some(age);
            if st.state == "connected" || st.state == "lagging" {
                st.state = if lagging { "lagging" } else { "connected" };
            }
        });
        if let Some(metrics) = self.runner.metrics.get() {
            metrics.sources().mapping_batch(
                &m.source.label(),
                &m.function,
                send.len() as u64,
                failed,
                Duration::from_millis(age as u64),
            );
        }
    }

    /// Retries are over for `records`: to the on-failure destination (then acknowledged)
    /// or to the broker's dead-lettering. False when the connection failed.
    async fn give_up(
        &self,
        records: Vec<Record>,
        condition: Condition,
        last: &LastFailure,
        failures: u32,
    ) -> bool {
        let all = records.clone();
        self.give_up_within(records, &all, condition, last, failures)
            .await
    }

    /// [`give_up`](Self::give_up) for `records`, which are part of `all`: the settling
    /// acknowledges or rejects `all` (in order) once `records` are with the destination.
    async fn give_up_within(
        &self,
        records: Vec<Record>,
        all: &[Record],
        condition: Condition,
        last: &LastFailure,
        failures: u32,
    ) -> bool {
        let m = &self.m;
        warn!(mapping = %m.uuid, function = %m.function, records = records.len(),
              condition = condition.as_str(), "giving up on records");
        let n = records.len() as u64;
        self.runner.update(&m.uuid, |st| st.dead_lettered += n);
        let Some(dest) = &m.on_failure else {
            return match self.source.reject(all).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(mapping = %m.uuid, "cannot dead-letter records: {e}");
                    self.shared.broken.store(true, Ordering::SeqCst);
                    false
                }
            };
        };
        let record = self.failure_record(&records, condition, last, failures);
        let key = format!(
            "source-{}-{}-{}",
            m.uuid,
            records.first().map(|r| r.id.as_str()).unwrap_or(""),
            records.len()
        );
        let Some(sink) = self.runner.sink.get() else {
            warn!(mapping = %m.uuid, "no on-failure destination service: the records stay on the broker");
            self.shared.broken.store(true, Ordering::SeqCst);
            return false;
        };
        let mut pause = Duration::from_millis(200);
        for attempt in 1..=3 {
            match sink.send(&dest.destination, &record, key.clone()).await {
                Ok(()) => return self.ack(all).await,
                Err(e) => {
                    warn!(mapping = %m.uuid, destination = %dest.destination, attempt,
                          "cannot send records to the on-failure destination: {e}");
                    tokio::time::sleep(pause).await;
                    pause *= 4;
                }
            }
        }
        // Not acknowledged: the broker delivers the records again after reconnecting.
        self.shared.broken.store(true, Ordering::SeqCst);
        false
    }

    /// Lambda's invocation record for a stream's on-failure destination, with the batch's
    /// records (as the function saw them) when they fit 256 KB.
    fn failure_record(
        &self,
        records: &[Record],
        condition: Condition,
        last: &LastFailure,
        failures: u32,
    ) -> Value {
        let m = &self.m;
        let (function, qualifier) = m
            .function
            .split_once(':')
            .map(|(f, q)| (f, Some(q)))
            .unwrap_or((&m.function, None));
        let function_arn = nimbus_core::arn::function_arn(function, qualifier);
        let first = records.iter().map(|r| r.produced_ms).min().unwrap_or(0);
        let last_ms = records.iter().map(|r| r.produced_ms).max().unwrap_or(0);
        let mut record = json!({
            "requestContext": {
                "requestId": last.request_id,
                "functionArn": function_arn,
                "condition": condition.as_str(),
                "approximateInvokeCount": failures,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": if last.version.is_empty() { nimbus_core::LATEST } else { &last.version },
                "functionError": last.error_type,
            },
            "version": "1.0",
            "timestamp": rfc3339(now_ms()),
            "SourceBatchInfo": {
                "eventSource": m.source.kind.event_source(),
                "source": m.source.label(),
                "mappingUUID": m.uuid,
                "batchSize": records.len(),
                "firstRecordId": records.first().map(|r| r.id.clone()),
                "lastRecordId": records.last().map(|r| r.id.clone()),
                "approximateArrivalOfFirstRecord": rfc3339(first),
                "approximateArrivalOfLastRecord": rfc3339(last_ms),
            },
        });
        let size: usize = records.iter().map(|r| r.size + 1).sum();
        if size < MAX_FAILURE_RECORD {
            record["payload"] = self.source.event(records);
        } else {
            record["SourceBatchInfo"]["payloadOmitted"] = json!(true);
        }
        record
    }
}

/// The metrics' trigger of a kind of source.
pub fn trigger(kind: Kind) -> Trigger {
    match kind {
        Kind::Postgres => Trigger::Postgres,
        Kind::Nats | Kind::NatsCore => Trigger::Nats,
        Kind::Rabbitmq => Trigger::Rabbitmq,
        Kind::Redis => Trigger::Redis,
        Kind::Mqtt => Trigger::Mqtt,
    }
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "runner_tests.rs"]
mod tests;
