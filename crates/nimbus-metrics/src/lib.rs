//! Nimbus's Prometheus metrics: one [`Registry`] with every `nimbus_…` family and the
//! process collector, encoded in the OpenMetrics text format by `prometheus-client`.
//!
//! Owns the families and their typed label sets, nothing else: the gateway records an
//! invocation's outcome once, where it finishes, through a [`FunctionMetrics`] handle
//! cached with the resolved function (its counters are atomics reached without a lock
//! shared by all functions); the async engine records its own facts through [`Metrics`].
//! Cardinality is bounded: labels are function names (at most [`MetricsConfig::max_functions`]
//! of them, the rest counted under `function="_other"`), route templates, and small enums;
//! never request ids or raw paths. Used by `nimbus-events`, `nimbus-gateway`,
//! `nimbus-store` and `nimbus-pg` (their commits' latency, [`WriteTimer`]) and
//! `nimbus-server`; depends on nothing of Nimbus.

pub mod history;
mod process;
mod scrape;
mod sources;
mod store;

pub use prometheus_client::registry::Unit as MetricUnit;
pub use scrape::GaugeFamily;
pub use sources::SourceMetrics;
pub use store::{
    add_database_sizes, database_sizes, recent_store_writes, RecentWrites, SizeSource, WriteTimer,
};

pub use history::{LatencyHistogram, MinuteCell, MinuteStats};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The OpenMetrics content type of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The label value that stands for every function past [`MetricsConfig::max_functions`].
pub const OTHER_FUNCTION: &str = "_other";

/// OpenTelemetry's FaaS duration buckets (seconds), for invocation and init durations.
pub const FAAS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Buckets of the API's own request latency (seconds).
const API_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("encoding the metrics failed")]
    Encode(#[from] std::fmt::Error),
}

/// Settings of the registry.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Functions with their own series; the others share `function="_other"`.
    pub max_functions: usize,
    /// Whether anything is recorded (`serve --metrics off` clears it): when off, every
    /// recording call returns at once, no series or per-minute history is kept, and the
    /// API's request metrics are not collected.
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_functions: 1000,
            enabled: true,
        }
    }
}

/// What started an invocation (OTel's `faas.trigger`, finer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The Lambda Invoke API (RequestResponse), and InvokeWithResponseStream.
    Api,
    /// A function URL.
    Url,
    /// A user route of a manifest.
    Route,
    /// An asynchronous event (Invoke with `Event`, and what the engine delivers).
    Async,
    /// An event-source mapping of a queue.
    Queue,
    /// A schedule.
    Schedule,
    /// An event bus rule.
    Bus,
    /// A notification of the object store (an S3 bucket's notification configuration).
    S3,
    /// A PostgreSQL change-data-capture mapping.
    Postgres,
    /// A NATS (JetStream or core) mapping.
    Nats,
    /// A RabbitMQ mapping.
    Rabbitmq,
    /// A Redis Streams mapping.
    Redis,
    /// An MQTT mapping.
    Mqtt,
    /// A Task state of a workflow.
    Workflow,
}

impl Trigger {
    const ALL: [Trigger; 14] = [
        Trigger::Api,
        Trigger::Url,
        Trigger::Route,
        Trigger::Async,
        Trigger::Queue,
        Trigger::Schedule,
        Trigger::Bus,
        Trigger::S3,
        Trigger::Postgres,
        Trigger::Nats,
        Trigger::Rabbitmq,
        Trigger::Redis,
        Trigger::Mqtt,
        Trigger::Workflow,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Url => "url",
            Trigger::Route => "route",
            Trigger::Async => "async",
            Trigger::Queue => "queue",
            Trigger::Schedule => "schedule",
            Trigger::Bus => "bus",
            Trigger::S3 => "s3",
            Trigger::Postgres => "postgres",
            Trigger::Nats => "nats",
            Trigger::Rabbitmq => "rabbitmq",
            Trigger::Redis => "redis",
            Trigger::Mqtt => "mqtt",
            Trigger::Workflow => "workflow",
        }
    }

    /// The trigger named by [`Trigger::as_str`].
    pub fn parse(s: &str) -> Option<Trigger> {
        Trigger::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// How an invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvocationOutcome {
    Success,
    /// The function (or the platform for it) failed: a function error.
    Error,
    /// It ran out of its timeout.
    Timeout,
    /// It was refused for lack of concurrency (never ran).
    Throttle,
    /// Its runtime failed to initialise.
    InitError,
}

impl InvocationOutcome {
    const ALL: [InvocationOutcome; 5] = [
        InvocationOutcome::Success,
        InvocationOutcome::Error,
        InvocationOutcome::Timeout,
        InvocationOutcome::Throttle,
        InvocationOutcome::InitError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvocationOutcome::Success => "success",
            InvocationOutcome::Error => "error",
            InvocationOutcome::Timeout => "timeout",
            InvocationOutcome::Throttle => "throttle",
            InvocationOutcome::InitError => "init_error",
        }
    }
}

/// Why an invocation was throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThrottleReason {
    /// The function's reservation is full (or 0).
    Reserved,
    /// The account's unreserved pool or the function's own limit is full.
    Concurrency,
    /// The scale-out rate allowed no new instance in time.
    ScaleRate,
    /// The instance memory budget is full.
    Memory,
}

impl ThrottleReason {
    const ALL: [ThrottleReason; 4] = [
        ThrottleReason::Reserved,
        ThrottleReason::Concurrency,
        ThrottleReason::ScaleRate,
        ThrottleReason::Memory,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ThrottleReason::Reserved => "reserved",
            ThrottleReason::Concurrency => "concurrency",
            ThrottleReason::ScaleRate => "scale_rate",
            ThrottleReason::Memory => "memory",
        }
    }
}

/// Why the async engine discarded an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Older than its maximum event age.
    Expired,
    /// Out of retries (or its function is gone).
    Dead,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Expired => "expired",
            DropReason::Dead => "dead",
        }
    }
}

/// What the response cache of a function URL or route did for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheResult {
    /// Served from the cache: the function was not invoked.
    Hit,
    /// The function was invoked (its response stored or not).
    Miss,
    /// A caller allowed to invalidate asked for a fresh answer (`Cache-Control:
    /// max-age=0`): the function was invoked and its response replaced the entry.
    Bypass,
}

impl CacheResult {
    const ALL: [CacheResult; 3] = [CacheResult::Hit, CacheResult::Miss, CacheResult::Bypass];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheResult::Hit => "hit",
            CacheResult::Miss => "miss",
            CacheResult::Bypass => "bypass",
        }
    }
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
label_value!(
    Trigger,
    InvocationOutcome,
    ThrottleReason,
    DropReason,
    CacheResult
);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FunctionLabels {
    function: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct InvocationLabels {
    function: String,
    qualifier: String,
    trigger: Trigger,
    outcome: InvocationOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ColdLabels {
    function: String,
    stem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ThrottleLabels {
    function: String,
    reason: ThrottleReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DropLabels {
    function: String,
    reason: DropReason,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CacheLabels {
    function: String,
    result: CacheResult,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ApiLabels {
    operation: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn faas_histogram() -> Histogram {
    Histogram::new(FAAS_BUCKETS)
}

/// Buckets of the async event age (seconds): immediate delivery to a long backlog.
const EVENT_AGE_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 21600.0,
];

fn event_age_histogram() -> Histogram {
    Histogram::new(EVENT_AGE_BUCKETS)
}

fn api_histogram() -> Histogram {
    Histogram::new(API_BUCKETS)
}

/// The registry and every family. Share it as an `Arc`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Gauges read at each scrape ([`Metrics::add_scrape_source`]).
    scraped: scrape::ScrapeGauges,
    cfg: MetricsConfig,
    /// Functions with their own series, each with the qualifiers its invocations were
    /// counted under (touched when a function is resolved, deleted, or an async event is
    /// recorded; never per synchronous invocation).
    functions: Mutex<HashMap<String, HashSet<String>>>,
    /// The current minute of every function by name (never `_other`), taken by the
    /// history flusher ([`Metrics::take_minutes`]).
    minutes: Mutex<HashMap<String, Arc<MinuteCell>>>,
    invocations: Family<InvocationLabels, Counter>,
    duration: HistogramFamily<FunctionLabels>,
    init_duration: HistogramFamily<FunctionLabels>,
    cold_starts: Family<ColdLabels, Counter>,
    throttles: Family<ThrottleLabels, Counter>,
    concurrent: Family<FunctionLabels, Gauge>,
    account_concurrent: Gauge,
    async_received: Family<FunctionLabels, Counter>,
    async_retries: Family<FunctionLabels, Counter>,
    async_dropped: Family<DropLabels, Counter>,
    dead_letter_errors: Family<FunctionLabels, Counter>,
    destination_failures: Family<FunctionLabels, Counter>,
    event_age: HistogramFamily<FunctionLabels>,
    api_requests: Family<ApiLabels, Counter>,
    api_duration: HistogramFamily<OperationLabels>,
    trace_spans_dropped: Counter,
    sources: SourceMetrics,
    cache_requests: Family<CacheLabels, Counter>,
    cache_evictions: Family<FunctionLabels, Counter>,
}

impl Metrics {
    pub fn new(cfg: MetricsConfig) -> Arc<Self> {
        let mut registry = Registry::default();
        let invocations = Family::<InvocationLabels, Counter>::default();
        let duration: HistogramFamily<FunctionLabels> =
            Family::new_with_constructor(faas_histogram);
        let init_duration: HistogramFamily<FunctionLabels> =
            Family::new_with_constructor(faas_histogram);
        let cold_starts = Family::<ColdLabels, Counter>::default();
        let throttles = Family::<ThrottleLabels, Counter>::default();
        let concurrent = Family::<FunctionLabels, Gauge>::default();
        let account_concurrent = Gauge::default();
        let async_received = Family::<FunctionLabels, Counter>::default();
        let async_retries = Family::<FunctionLabels, Counter>::default();
        let async_dropped = Family::<DropLabels, Counter>::default();
        let dead_letter_errors = Family::<FunctionLabels, Counter>::default();
        let destination_failures = Family::<FunctionLabels, Counter>::default();
        let event_age: HistogramFamily<FunctionLabels> =
            Family::new_with_constructor(event_age_histogram);
        let api_requests = Family::<ApiLabels, Counter>::default();
        let api_duration: HistogramFamily<OperationLabels> =
            Family::new_with_constructor(api_histogram);
        let trace_spans_dropped = Counter::default();
        let cache_requests = Family::<CacheLabels, Counter>::default();
        let cache_evictions = Family::<FunctionLabels, Counter>::default();
        let r = &mut registry;
        r.register(
            "nimbus_cache_requests",
            "Requests to cached function URLs and routes by function and result (hit, miss, bypass)",
            cache_requests.clone(),
        );
        r.register(
            "nimbus_cache_evictions",
            "Fresh response cache entries evicted to stay within --cache-max-bytes",
            cache_evictions.clone(),
        );
        let sources = SourceMetrics::register(r);
        r.register(
            "nimbus_trace_spans_dropped",
            "Trace spans not exported: the export queue was full or the OTLP endpoint failed",
            trace_spans_dropped.clone(),
        );
        r.register(
            "nimbus_invocations",
            "Invocations by function, qualifier, trigger and outcome",
            invocations.clone(),
        );
        r.register_with_unit(
            "nimbus_invocation_duration",
            "Time from hand-over to the runtime until its answer",
            Unit::Seconds,
            duration.clone(),
        );
        r.register_with_unit(
            "nimbus_init_duration",
            "Runtime initialisation time of cold starts",
            Unit::Seconds,
            init_duration.clone(),
        );
        r.register(
            "nimbus_cold_starts",
            "Invocations that started a new instance, from a stem cell or not",
            cold_starts.clone(),
        );
        r.register(
            "nimbus_throttles",
            "Invocations refused for lack of concurrency, by reason",
            throttles.clone(),
        );
        r.register(
            "nimbus_concurrent_executions",
            "Invocations in flight (waiting for or holding an instance) per function",
            concurrent.clone(),
        );
        r.register(
            "nimbus_account_concurrent_executions",
            "Invocations in flight across every function",
            account_concurrent.clone(),
        );
        r.register(
            "nimbus_async_events_received",
            "Asynchronous events accepted into the durable queue",
            async_received.clone(),
        );
        r.register(
            "nimbus_async_retries",
            "Asynchronous event deliveries scheduled again after a failure",
            async_retries.clone(),
        );
        r.register(
            "nimbus_async_events_dropped",
            "Asynchronous events discarded, by reason",
            async_dropped.clone(),
        );
        r.register(
            "nimbus_dead_letter_errors",
            "Discarded events that could not be sent to the dead-letter target",
            dead_letter_errors.clone(),
        );
        r.register(
            "nimbus_async_destination_failures",
            "Destination records (OnSuccess/OnFailure) that could not be delivered",
            destination_failures.clone(),
        );
        r.register_with_unit(
            "nimbus_async_event_age",
            "Time from an asynchronous event's acceptance to its first attempt",
            Unit::Seconds,
            event_age.clone(),
        );
        r.register(
            "nimbus_api_requests",
            "HTTP requests by operation (the route template) and status",
            api_requests.clone(),
        );
        r.register_with_unit(
            "nimbus_api_request_duration",
            "HTTP request latency by operation",
            Unit::Seconds,
            api_duration.clone(),
        );
        r.register_with_unit(
            "nimbus_store_write",
            "Commit time of a write to an embedded database (WAL append and fsync), by database",
            Unit::Seconds,
            store::family(),
        );
        registry.register_collector(Box::new(process::ProcessCollector));
        let scraped = scrape::ScrapeGauges::default();
        registry.register_collector(Box::new(scraped.clone()));
        Arc::new(Self {
            registry,
            scraped,
            cfg,
            functions: Mutex::new(HashMap::new()),
            minutes: Mutex::new(HashMap::new()),
            invocations,
            duration,
            init_duration,
            cold_starts,
            throttles,
            concurrent,
            account_concurrent,
            async_received,
            async_retries,
            async_dropped,
            dead_letter_errors,
            destination_failures,
            event_age,
            api_requests,
            api_duration,
            trace_spans_dropped,
            sources,
            cache_requests,
            cache_evictions,
        })
    }

    /// Whether metrics are recorded at all ([`MetricsConfig::enabled`]).
    pub fn is_enabled(&self) -> bool {
        self.cfg.enabled
    }

    /// The event sources' counters (bus, schedules, event-source mappings).
    pub fn sources(&self) -> &SourceMetrics {
        &self.sources
    }

    /// Adds gauge families read at each scrape (from the pool, a store, the disk). The
    /// source runs on the scraping thread: keep it to reads of state at hand or one quick
    /// query (the scrape handlers run it off the async workers).
    pub fn add_scrape_source(&self, source: impl Fn() -> Vec<GaugeFamily> + Send + Sync + 'static) {
        self.scraped
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(source));
    }

    /// The label for `function` in a scraped gauge: its name, or [`OTHER_FUNCTION`] past
    /// the limit (add samples with [`GaugeFamily::add`], which sums those).
    pub fn function_label(&self, function: &str) -> String {
        self.label(function)
    }

    /// `n` trace spans were dropped instead of exported.
    pub fn trace_spans_dropped(&self, n: u64) {
        if !self.cfg.enabled {
            return;
        }
        self.trace_spans_dropped.inc_by(n);
    }

    /// The text exposition (OpenMetrics, ending in `# EOF`).
    pub fn encode(&self) -> Result<String, MetricsError> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// The label a function's series use: its name, or [`OTHER_FUNCTION`] past the limit.
    fn label(&self, function: &str) -> String {
        self.labels(function, None).0
    }

    /// The labels of `function` and, when given, of its `qualifier` (remembered so the
    /// function's deletion removes its series): the names, or [`OTHER_FUNCTION`] for both
    /// past the limit.
    fn labels(&self, function: &str, qualifier: Option<&str>) -> (String, String) {
        let mut known = self.functions.lock().unwrap_or_else(|e| e.into_inner());
        let other = || (OTHER_FUNCTION.to_string(), OTHER_FUNCTION.to_string());
        if !known.contains_key(function) && known.len() >= self.cfg.max_functions {
            return other();
        }
        let qualifiers = known.entry(function.to_string()).or_default();
        let qualifier = qualifier.map_or_else(String::new, |q| {
            qualifiers.insert(q.to_string());
            q.to_string()
        });
        (function.to_string(), qualifier)
    }

    /// A handle recording the invocations of `function` addressed as `qualifier`
    /// (`$LATEST`, a version, or an alias as the caller named it): cache it with the
    /// resolved function. With metrics off it records nothing and registers nothing.
    pub fn function(self: &Arc<Self>, function: &str, qualifier: &str) -> Arc<FunctionMetrics> {
        let (label, qualifier, minute, concurrent) = if self.cfg.enabled {
            let (label, qualifier) = self.labels(function, Some(qualifier));
            let minute = self
                .minutes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(function.to_string())
                .or_default()
                .clone();
            let concurrent = self.concurrent.get_or_create_owned(&FunctionLabels {
                function: label.clone(),
            });
            (label, qualifier, minute, concurrent)
        } else {
            (
                function.to_string(),
                qualifier.to_string(),
                Arc::default(),
                Gauge::default(),
            )
        };
        Arc::new(FunctionMetrics {
            metrics: self.clone(),
            enabled: self.cfg.enabled,
            minute,
            concurrent,
            function: label,
            qualifier,
            invocations: Default::default(),
            duration: OnceLock::new(),
            init_duration: OnceLock::new(),
            cold_starts: Default::default(),
            throttles: Default::default(),
            cache: Default::default(),
        })
    }

    /// Removes the invocation series of a deleted version or alias of `function` (the
    /// function's other series stay: they are not per qualifier).
    pub fn remove_qualifier(&self, function: &str, qualifier: &str) {
        let known = self
            .functions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(function)
            .is_some_and(|q| q.remove(qualifier));
        if !known {
            return;
        }
        for trigger in Trigger::ALL {
            for outcome in InvocationOutcome::ALL {
                self.invocations.remove(&InvocationLabels {
                    function: function.to_string(),
                    qualifier: qualifier.to_string(),
                    trigger,
                    outcome,
                });
            }
        }
    }

    /// Removes every series of a deleted function.
    pub fn remove_function(&self, function: &str) {
        self.minutes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(function);
        let qualifiers = {
            let mut known = self.functions.lock().unwrap_or_else(|e| e.into_inner());
            match known.remove(function) {
                Some(q) => q,
                None => return,
            }
        };
        let f = || function.to_string();
        for qualifier in qualifiers {
            for trigger in Trigger::ALL {
                for outcome in InvocationOutcome::ALL {
                    self.invocations.remove(&InvocationLabels {
                        function: f(),
                        qualifier: qualifier.clone(),
                        trigger,
                        outcome,
                    });
                }
            }
        }
        for reason in ThrottleReason::ALL {
            self.throttles.remove(&ThrottleLabels {
                function: f(),
                reason,
            });
        }
        for stem in ["true", "false"] {
            self.cold_starts.remove(&ColdLabels {
                function: f(),
                stem: stem.into(),
            });
        }
        for reason in [DropReason::Expired, DropReason::Dead] {
            self.async_dropped.remove(&DropLabels {
                function: f(),
                reason,
            });
        }
        for result in CacheResult::ALL {
            self.cache_requests.remove(&CacheLabels {
                function: f(),
                result,
            });
        }
        let fl = FunctionLabels { function: f() };
        self.cache_evictions.remove(&fl);
        self.duration.remove(&fl);
        self.init_duration.remove(&fl);
        self.concurrent.remove(&fl);
        self.async_received.remove(&fl);
        self.async_retries.remove(&fl);
        self.dead_letter_errors.remove(&fl);
        self.destination_failures.remove(&fl);
        self.event_age.remove(&fl);
    }

    /// Every function's aggregates since the last take (functions with nothing to report
    /// left out); the next minute starts. Called by the history flusher only.
    pub fn take_minutes(&self) -> Vec<(String, MinuteStats)> {
        self.cells()
            .into_iter()
            .map(|(name, c)| (name, c.take()))
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    /// Every function's current (incomplete) minute and invocations in flight, without
    /// resetting anything.
    pub fn peek_minutes(&self) -> Vec<(String, MinuteStats, u64)> {
        self.cells()
            .into_iter()
            .map(|(name, c)| (name, c.peek(), c.in_flight()))
            .collect()
    }

    fn cells(&self) -> Vec<(String, Arc<MinuteCell>)> {
        let cells = self.minutes.lock().unwrap_or_else(|e| e.into_inner());
        cells.iter().map(|(n, c)| (n.clone(), c.clone())).collect()
    }

    /// An asynchronous event was accepted for `function`.
    pub fn async_received(&self, function: &str) {
        if !self.cfg.enabled {
            return;
        }
        let function = self.label(function);
        self.async_received
            .get_or_create(&FunctionLabels { function })
            .inc();
    }

    /// A failed async delivery of `function` will be tried again.
    pub fn async_retry(&self, function: &str) {
        if !self.cfg.enabled {
            return;
        }
        let function = self.label(function);
        self.async_retries
            .get_or_create(&FunctionLabels { function })
            .inc();
    }

    /// An async event of `function` was discarded.
    pub fn async_dropped(&self, function: &str, reason: DropReason) {
        if !self.cfg.enabled {
            return;
        }
        let function = self.label(function);
        self.async_dropped
            .get_or_create(&DropLabels { function, reason })
            .inc();
    }

    /// A discarded event of `function` could not be sent to its dead-letter target.
    pub fn dead_letter_error(&self, function: &str) {
        if !self.cfg.enabled {
            return;
        }
        let function = self.label(function);
        self.dead_letter_errors
            .get_or_create(&FunctionLabels { function })
            .inc();
    }

    /// A destination record of an event of `function` could not be delivered.
    pub fn destination_failure(&self, function: &str) {
        if !self.cfg.enabled {
            return;
        }
        let function = self.label(function);
        self.destination_failures
            .get_or_create(&FunctionLabels { function })
            .inc();
    }

    /// The first attempt of an async event of `function`, `age` after it was accepted.
    pub fn async_event_age(&self, function: &str, age: Duration) {
        if !self.cfg.enabled {
            return;
        }
        let function = self.label(function);
        self.event_age
            .get_or_create(&FunctionLabels { function })
            .observe(age.as_secs_f64());
    }

    /// `n` fresh response cache entries of `function` were evicted to make room.
    pub fn cache_evictions(&self, function: &str, n: u64) {
        if !self.cfg.enabled || n == 0 {
            return;
        }
        let function = self.label(function);
        self.cache_evictions
            .get_or_create(&FunctionLabels { function })
            .inc_by(n);
    }

    /// One HTTP request of the API, `operation` being a bounded name (a route template).
    pub fn api_request(&self, operation: &str, status: u16, elapsed: Duration) {
        if !self.cfg.enabled {
            return;
        }
        self.api_requests
            .get_or_create(&ApiLabels {
                operation: operation.to_string(),
                status,
            })
            .inc();
        self.api_duration
            .get_or_create(&OperationLabels {
                operation: operation.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// One function's series (its invocations under one qualifier), created on first use and
/// then reached without a shared lock.
#[derive(Debug)]
pub struct FunctionMetrics {
    metrics: Arc<Metrics>,
    /// [`MetricsConfig::enabled`], read once per call without reaching the registry.
    enabled: bool,
    /// The function's current minute for the history store.
    minute: Arc<MinuteCell>,
    function: String,
    qualifier: String,
    invocations: [[OnceLock<Counter>; InvocationOutcome::ALL.len()]; Trigger::ALL.len()],
    duration: OnceLock<Histogram>,
    init_duration: OnceLock<Histogram>,
    cold_starts: [OnceLock<Counter>; 2],
    throttles: [OnceLock<Counter>; 4],
    cache: [OnceLock<Counter>; CacheResult::ALL.len()],
    concurrent: Gauge,
}

impl FunctionMetrics {
    fn labels(&self) -> FunctionLabels {
        FunctionLabels {
            function: self.function.clone(),
        }
    }

    /// One finished invocation; `duration` when the runtime ran it.
    pub fn invocation(
        &self,
        trigger: Trigger,
        outcome: InvocationOutcome,
        duration: Option<Duration>,
    ) {
        if !self.enabled {
            return;
        }
        self.minute.finished(outcome, duration);
        let m = &self.metrics;
        self.invocations[trigger as usize][outcome as usize]
            .get_or_init(|| {
                m.invocations.get_or_create_owned(&InvocationLabels {
                    function: self.function.clone(),
                    qualifier: self.qualifier.clone(),
                    trigger,
                    outcome,
                })
            })
            .inc();
        if let Some(d) = duration {
            self.duration
                .get_or_init(|| m.duration.get_or_create_owned(&self.labels()))
                .observe(d.as_secs_f64());
        }
    }

    /// An invocation started a new instance; `init` is its runtime's init time.
    pub fn cold_start(&self, stem: bool, init: Option<Duration>) {
        if !self.enabled {
            return;
        }
        self.minute.cold_start();
        let m = &self.metrics;
        self.cold_starts[usize::from(stem)]
            .get_or_init(|| {
                m.cold_starts.get_or_create_owned(&ColdLabels {
                    function: self.function.clone(),
                    stem: stem.to_string(),
                })
            })
            .inc();
        if let Some(d) = init {
            self.init_duration
                .get_or_init(|| m.init_duration.get_or_create_owned(&self.labels()))
                .observe(d.as_secs_f64());
        }
    }

    /// An invocation was throttled (count its outcome with [`Self::invocation`] too).
    pub fn throttle(&self, reason: ThrottleReason) {
        if !self.enabled {
            return;
        }
        let m = &self.metrics;
        self.throttles[reason as usize]
            .get_or_init(|| {
                m.throttles.get_or_create_owned(&ThrottleLabels {
                    function: self.function.clone(),
                    reason,
                })
            })
            .inc();
    }

    /// A request to a cached URL or route of the function: served from the cache or not.
    pub fn cache(&self, result: CacheResult) {
        if !self.enabled {
            return;
        }
        let m = &self.metrics;
        self.cache[result as usize]
            .get_or_init(|| {
                m.cache_requests.get_or_create_owned(&CacheLabels {
                    function: self.function.clone(),
                    result,
                })
            })
            .inc();
    }

    /// Counts an invocation in flight until the guard drops (nothing with metrics off).
    pub fn in_flight(self: &Arc<Self>) -> InFlight {
        if !self.enabled {
            return InFlight(None);
        }
        self.concurrent.inc();
        self.metrics.account_concurrent.inc();
        self.minute.enter();
        InFlight(Some(self.clone()))
    }
}

/// See [`FunctionMetrics::in_flight`].
#[derive(Debug)]
pub struct InFlight(Option<Arc<FunctionMetrics>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            f.concurrent.dec();
            f.metrics.account_concurrent.dec();
            f.minute.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
    }

    #[test]
    fn counts_invocations_and_removes_a_function() {
        let m = Metrics::new(MetricsConfig::default());
        let f = m.function("orders", "$LATEST");
        f.invocation(
            Trigger::Api,
            InvocationOutcome::Success,
            Some(Duration::from_millis(3)),
        );
        f.invocation(
            Trigger::Api,
            InvocationOutcome::Success,
            Some(Duration::from_millis(30)),
        );
        f.throttle(ThrottleReason::Reserved);
        f.cold_start(true, Some(Duration::from_millis(80)));
        f.cache(CacheResult::Hit);
        f.cache(CacheResult::Hit);
        f.cache(CacheResult::Miss);
        m.cache_evictions("orders", 3);
        let g = f.in_flight();
        let text = m.encode().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            sample(
                &text,
                r#"nimbus_cache_requests_total{function="orders",result="hit"}"#
            ),
            Some("2")
        );
        assert_eq!(
            sample(
                &text,
                r#"nimbus_cache_requests_total{function="orders",result="miss"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, r#"nimbus_cache_evictions_total{function="orders"}"#),
            Some("3")
        );
        assert_eq!(
            sample(
                &text,
                r#"nimbus_invocations_total{function="orders",qualifier="$LATEST",trigger="api",outcome="success"}"#
            ),
            Some("2")
        );
        // The same function addressed through an alias and a version: series of their own.
        m.function("orders", "live")
            .invocation(Trigger::Api, InvocationOutcome::Error, None);
        m.function("orders", "3")
            .invocation(Trigger::Api, InvocationOutcome::Error, None);
        let text = m.encode().unwrap();
        for q in ["live", "3"] {
            let key = format!(
                r#"nimbus_invocations_total{{function="orders",qualifier="{q}",trigger="api",outcome="error"}}"#
            );
            assert_eq!(sample(&text, &key), Some("1"), "{text}");
        }
        assert_eq!(
            sample(
                &text,
                r#"nimbus_invocation_duration_seconds_bucket{le="0.005",function="orders"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(
                &text,
                r#"nimbus_cold_starts_total{function="orders",stem="true"}"#
            ),
            Some("1")
        );
        assert_eq!(
            sample(&text, r#"nimbus_concurrent_executions{function="orders"}"#),
            Some("1")
        );
        assert_eq!(
            sample(&text, "nimbus_account_concurrent_executions "),
            Some("1")
        );
        drop(g);
        assert_eq!(
            sample(
                &m.encode().unwrap(),
                "nimbus_account_concurrent_executions "
            ),
            Some("0")
        );
        // A deleted alias loses its series; the version and the function keep theirs.
        m.remove_qualifier("orders", "live");
        let text = m.encode().unwrap();
        assert!(!text.contains(r#"qualifier="live""#), "{text}");
        assert!(text.contains(r#"qualifier="3""#), "{text}");
        assert!(text.contains(r#"qualifier="$LATEST""#), "{text}");
        m.remove_function("orders");
        let text = m.encode().unwrap();
        assert!(!text.contains("orders"), "{text}");
        assert!(text.contains("process_open_fds"), "{text}");
    }

    #[test]
    fn scrape_sources_are_read_at_each_scrape_and_sum_equal_labels() {
        let m = Metrics::new(MetricsConfig {
            max_functions: 1,
            ..Default::default()
        });
        assert!(!m.encode().unwrap().contains("nimbus_queue_messages"));
        let depth = Arc::new(std::sync::atomic::AtomicU64::new(3));
        let (d, mm) = (depth.clone(), m.clone());
        m.add_scrape_source(move || {
            let mut f = GaugeFamily::new("nimbus_queue_messages", "Messages by state");
            f.add(
                vec![("queue", "jobs".into()), ("state", "visible".into())],
                d.load(std::sync::atomic::Ordering::SeqCst) as f64,
            );
            let mut b = GaugeFamily::new("nimbus_async_backlog", "Unfinished events");
            for (function, n) in [("a", 1.0), ("b", 2.0), ("c", 4.0)] {
                b.add(vec![("function", mm.function_label(function))], n);
            }
            let age =
                GaugeFamily::new("nimbus_queue_oldest_message_age", "Age").with_unit(Unit::Seconds);
            let mut failed =
                GaugeFamily::new("nimbus_stem_cell_refill_failures", "Failed").counter();
            failed.add(vec![("runtime", "node".into())], 2.0);
            vec![f, b, age, failed]
        });
        let text = m.encode().unwrap();
        assert_eq!(
            sample(
                &text,
                r#"nimbus_queue_messages{queue="jobs",state="visible"}"#
            ),
            Some("3.0"),
            "{text}"
        );
        assert_eq!(
            sample(&text, r#"nimbus_async_backlog{function="_other"}"#),
            Some("6.0"),
            "{text}"
        );
        assert!(
            text.contains("# UNIT nimbus_queue_oldest_message_age_seconds seconds"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE nimbus_stem_cell_refill_failures counter"),
            "{text}"
        );
        assert_eq!(
            sample(
                &text,
                r#"nimbus_stem_cell_refill_failures_total{runtime="node"}"#
            ),
            Some("2.0"),
            "{text}"
        );
        depth.store(0, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            sample(
                &m.encode().unwrap(),
                r#"nimbus_queue_messages{queue="jobs",state="visible"}"#
            ),
            Some("0.0")
        );
    }

    #[test]
    fn off_records_nothing() {
        let m = Metrics::new(MetricsConfig {
            enabled: false,
            ..Default::default()
        });
        assert!(!m.is_enabled());
        let f = m.function("orders", "$LATEST");
        let g = f.in_flight();
        assert!(m.peek_minutes().is_empty());
        f.throttle(ThrottleReason::Reserved);
        f.cold_start(false, Some(Duration::from_millis(80)));
        f.invocation(
            Trigger::Api,
            InvocationOutcome::Success,
            Some(Duration::from_millis(3)),
        );
        drop(g);
        m.async_received("orders");
        m.api_request("GET /v1/functions", 200, Duration::from_millis(1));
        let text = m.encode().unwrap();
        assert!(!text.contains("orders"), "{text}");
        assert!(!text.contains("nimbus_api_requests_total{"), "{text}");
        assert!(
            text.contains("nimbus_account_concurrent_executions 0"),
            "{text}"
        );
        assert!(m.take_minutes().is_empty());
    }

    #[test]
    fn functions_past_the_limit_share_one_label() {
        let m = Metrics::new(MetricsConfig {
            max_functions: 1,
            ..Default::default()
        });
        m.function("a", "$LATEST")
            .invocation(Trigger::Url, InvocationOutcome::Error, None);
        m.function("b", "live")
            .invocation(Trigger::Url, InvocationOutcome::Error, None);
        m.async_received("c");
        let text = m.encode().unwrap();
        assert!(text.contains(r#"function="a""#));
        assert!(
            text.contains(
                r#"nimbus_invocations_total{function="_other",qualifier="_other",trigger="url",outcome="error"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"nimbus_async_events_received_total{function="_other"} 1"#),
            "{text}"
        );
    }
}
