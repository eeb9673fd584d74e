//! Nimbus distributed tracing: trace contexts (W3C `traceparent` and X-Ray
//! `X-Amzn-Trace-Id`, [`TraceContext`]), sampling ([`Sampler`]), and the export of
//! finished spans over OTLP/HTTP (protobuf) through a bounded queue ([`Tracer`]).
//!
//! Spans are recorded when they end, with their own ids and times chosen by the caller:
//! the ids are known before the work starts (so a function is told its invoke span's id),
//! the times are measured by whoever did the work. Recording never waits: a full queue
//! drops the span and counts it, as does a failed export.
//!
//! Without an endpoint ([`TraceConfig::from_env`] gives `None`) the [`Tracer`] is off and
//! recording costs one branch.

mod config;
mod context;
mod otlp;

pub use config::{Root, Sampler, TraceConfig};
pub use context::{new_span_id, stored_header, TraceContext, TRACEPARENT, TRACESTATE, XRAY};
pub use opentelemetry::{KeyValue, Value};

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{oneshot, Notify};

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("tracing configuration: {0}")]
    Config(String),
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
}

/// What a span is, in OpenTelemetry's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Consumer,
    Producer,
    Client,
    Internal,
}

/// A finished span, ready to record.
#[derive(Debug, Clone)]
pub struct Span {
    pub name: Cow<'static, str>,
    pub kind: Kind,
    /// This span's trace, id and sampling decision.
    pub context: TraceContext,
    /// The parent span's id (0: a root span).
    pub parent: u64,
    /// The parent span was recorded in another process (came in with a request).
    pub parent_remote: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<KeyValue>,
    /// Set when the work failed: the span's status is `Error` with this description.
    pub error: Option<String>,
    /// Other spans this one is linked to (a schedule firing's root, for instance).
    pub links: Vec<TraceContext>,
}

impl Span {
    /// A span of `context` whose parent is `parent` (`None`: a root span).
    pub fn new(
        name: impl Into<Cow<'static, str>>,
        kind: Kind,
        context: &TraceContext,
        parent: Option<&TraceContext>,
        start: SystemTime,
    ) -> Self {
        Span {
            name: name.into(),
            kind,
            context: context.clone(),
            parent: parent.map_or(0, |p| p.span_id),
            parent_remote: false,
            start,
            end: start,
            attributes: Vec::new(),
            error: None,
            links: Vec::new(),
        }
    }
}

/// The queue between the recording callers and the export task. Recording takes the
/// lock for one push and wakes the task only when a batch is full, so a span costs no
/// task wake-up (and no thread unpark) on the request path; the task wakes itself every
/// `delay` for what is queued.
struct Queue {
    spans: Mutex<Vec<Span>>,
    /// Callers of [`Tracer::flush`] waiting for what was queued before they asked.
    flushes: Mutex<Vec<oneshot::Sender<()>>>,
    wake: Notify,
    /// Every [`Tracer`] is gone: export what is left and stop.
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Inner {
    queue: Arc<Queue>,
    max_queue: usize,
    max_batch: usize,
    sampler: Sampler,
    dropped: Arc<AtomicU64>,
    on_drop: Arc<dyn Fn(u64) + Send + Sync>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        self.queue.wake.notify_one();
    }
}

/// Records spans and sends them to the OTLP endpoint in the background. Cheap to clone;
/// [`Tracer::off`] (the default) records nothing.
#[derive(Clone, Default)]
pub struct Tracer(Option<Arc<Inner>>);

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracer")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl Tracer {
    /// A tracer that records nothing.
    pub fn off() -> Self {
        Tracer(None)
    }

    /// Starts the export task (on the current Tokio runtime) for `cfg`. `on_drop` is
    /// told how many spans were dropped (queue full, or an export that failed).
    pub fn start(
        cfg: &TraceConfig,
        on_drop: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<Self, TraceError> {
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &cfg.headers {
            let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| TraceError::Config(format!("bad OTLP header name {name:?}")))?;
            let mut value = reqwest::header::HeaderValue::from_str(value)
                .map_err(|_| TraceError::Config(format!("bad value for OTLP header {name}")))?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        headers.insert(
            reqwest::header::CONTENT_TYPE,
            reqwest::header::HeaderValue::from_static("application/x-protobuf"),
        );
        let queue = Arc::new(Queue {
            spans: Mutex::new(Vec::new()),
            flushes: Mutex::new(Vec::new()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let dropped = Arc::new(AtomicU64::new(0));
        let inner = Arc::new(Inner {
            queue: queue.clone(),
            max_queue: cfg.max_queue.max(1),
            max_batch: cfg.max_batch.max(1),
            sampler: cfg.sampler,
            dropped: dropped.clone(),
            on_drop: on_drop.clone(),
        });
        let batch = Batch {
            queue,
            max: cfg.max_batch.max(1),
            max_queue: cfg.max_queue.max(1),
            delay: cfg.delay,
            dropped,
            on_drop,
            client,
            url: cfg.traces_url.clone(),
            headers,
        };
        let encoder = otlp::Encoder::new(&cfg.service_name, env!("CARGO_PKG_VERSION"));
        tokio::spawn(batch.run(encoder));
        tracing::info!(endpoint = %cfg.traces_url, service = %cfg.service_name, "exporting traces over OTLP/HTTP");
        Ok(Tracer(Some(inner)))
    }

    pub fn is_enabled(&self) -> bool {
        self.0.is_some()
    }

    /// Spans dropped so far (queue full or export failed).
    pub fn dropped(&self) -> u64 {
        self.0
            .as_ref()
            .map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// The context of a new span whose parent is `parent` (`None`: a new trace). The
    /// span is sampled when `force` is set (a function with `TracingConfig: Active`), else
    /// as the sampler decides (by default, as the parent was). With tracing off, the
    /// context is made all the same (functions still get a trace id) but never sampled.
    pub fn start_span(&self, parent: Option<&TraceContext>, force: bool) -> TraceContext {
        let Some(inner) = &self.0 else {
            // Off: keep the incoming decision for the header passed on, record nothing.
            return match parent {
                Some(p) => TraceContext {
                    sampled: p.sampled.or(Some(false)),
                    ..p.child(false)
                },
                None => TraceContext::new_root(false),
            };
        };
        match parent {
            Some(p) if p.trace_id != 0 => {
                let sampled = force || inner.sampler.decide(Some(p), p.trace_id);
                p.child(sampled)
            }
            _ => {
                let mut root = TraceContext::new_root(false);
                root.sampled = Some(force || inner.sampler.decide(None, root.trace_id));
                root
            }
        }
    }

    /// The context a work item passed on by a hop carries: with tracing on, a new
    /// producer span `name` (child of `parent`, a new trace without one, linked to `links`)
    /// recorded now; with tracing off, `parent` as it came (so the trace id still reaches
    /// the function).
    pub fn hop(
        &self,
        name: impl Into<Cow<'static, str>>,
        parent: Option<&TraceContext>,
        attributes: Vec<KeyValue>,
        links: Vec<TraceContext>,
    ) -> Option<TraceContext> {
        if !self.is_enabled() {
            return parent.cloned();
        }
        let cx = self.start_span(parent, false);
        let mut span = Span::new(name, Kind::Producer, &cx, parent, SystemTime::now());
        span.attributes = attributes;
        span.links = links;
        self.record(span);
        Some(cx)
    }

    /// Queues a finished span for export, unless it is not sampled or tracing is off.
    /// Never waits: with the queue full the span is dropped and counted.
    pub fn record(&self, span: Span) {
        let Some(inner) = &self.0 else { return };
        if !span.context.is_sampled() {
            return;
        }
        let queued = {
            let mut spans = lock(&inner.queue.spans);
            if spans.len() >= inner.max_queue {
                None
            } else {
                spans.push(span);
                Some(spans.len())
            }
        };
        match queued {
            None => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                (inner.on_drop)(1);
            }
            // A full batch (or a full queue, when it is the smaller) is sent at once.
            Some(n) if n == inner.max_batch.min(inner.max_queue) => inner.queue.wake.notify_one(),
            Some(_) => {}
        }
    }

    /// Exports what is queued now and waits (at most `timeout`) until that is done.
    pub async fn flush(&self, timeout: std::time::Duration) {
        let Some(inner) = &self.0 else { return };
        let (done, wait) = oneshot::channel();
        lock(&inner.queue.flushes).push(done);
        inner.queue.wake.notify_one();
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

/// The export task: every `delay`, or as soon as a batch of `max` spans is queued, or
/// when asked to flush, it takes what is queued and exports it in batches of at most
/// `max`; a failed export drops its batch (counted).
struct Batch {
    queue: Arc<Queue>,
    max: usize,
    max_queue: usize,
    delay: std::time::Duration,
    dropped: Arc<AtomicU64>,
    on_drop: Arc<dyn Fn(u64) + Send + Sync>,
    client: reqwest::Client,
    url: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS` and the content type.
    headers: reqwest::header::HeaderMap,
}

impl Batch {
    async fn run(self, mut encoder: otlp::Encoder) {
        let mut failing = false;
        loop {
            let timed_out = tokio::time::timeout(self.delay, self.queue.wake.notified())
                .await
                .is_err();
            let closed = self.queue.closed.load(Ordering::Acquire);
            // The waiters first: a flush asked now was asked after its spans were queued,
            // so they are among the spans taken next.
            let flushes = std::mem::take(&mut *lock(&self.queue.flushes));
            // Woken by a full batch: whole batches only, the rest waits for more. At the
            // interval, for a flush or at the end: everything.
            // Only what is queued now: spans arriving during the exports wait their turn.
            let mut left = {
                let n = lock(&self.queue.spans).len();
                // A full queue (smaller than a batch) goes whole too.
                if timed_out || closed || !flushes.is_empty() || n >= self.max_queue {
                    n
                } else {
                    n - n % self.max
                }
            };
            while left > 0 {
                let spans = {
                    let mut q = lock(&self.queue.spans);
                    let n = left.min(self.max).min(q.len());
                    q.drain(..n).collect::<Vec<_>>()
                };
                if spans.is_empty() {
                    break;
                }
                left -= spans.len();
                self.export(&mut encoder, &spans, &mut failing).await;
            }
            for done in flushes {
                let _ = done.send(());
            }
            if closed {
                return;
            }
        }
    }

    async fn export(&self, encoder: &mut otlp::Encoder, spans: &[Span], failing: &mut bool) {
        let n = spans.len() as u64;
        let body = encoder.encode(spans);
        let sent = self
            .client
            .post(&self.url)
            .headers(self.headers.clone())
            .body(body)
            .send()
            .await;
        let result = match sent {
            // The answer is read whole, so the connection is kept for the next batch.
            Ok(r) if r.status().is_success() => {
                r.bytes().await.map(|_| ()).map_err(|e| e.to_string())
            }
            Ok(r) => Err(format!("the collector answered {}", r.status())),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                if *failing {
                    tracing::info!("trace export works again");
                }
                *failing = false;
            }
            Err(e) => {
                // Logged once per failure streak, not per batch.
                if !*failing {
                    tracing::warn!("trace export failed, spans dropped: {e}");
                }
                *failing = true;
                self.dropped.fetch_add(n, Ordering::Relaxed);
                (self.on_drop)(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(url: &str, max_queue: usize) -> TraceConfig {
        TraceConfig {
            traces_url: url.into(),
            service_name: "test".into(),
            sampler: Sampler::default(),
            max_queue,
            max_batch: 512,
            delay: Duration::from_millis(10),
            timeout: Duration::from_secs(2),
            headers: Vec::new(),
        }
    }

    fn counted() -> (Arc<AtomicU64>, Arc<dyn Fn(u64) + Send + Sync>) {
        let n = Arc::new(AtomicU64::new(0));
        let m = n.clone();
        (
            n,
            Arc::new(move |k| {
                m.fetch_add(k, Ordering::Relaxed);
            }),
        )
    }

    fn span(t: &Tracer) -> Span {
        let cx = t.start_span(None, false);
        let mut s = Span::new("work", Kind::Internal, &cx, None, SystemTime::now());
        s.end = SystemTime::now();
        s
    }

    /// The queue never waits: on a single-threaded runtime the export task cannot run
    /// between these calls, so all but the queue's capacity are dropped and counted.
    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (n, on_drop) = counted();
        let t = Tracer::start(&config("http://127.0.0.1:9/v1/traces", 4), on_drop).unwrap();
        for _ in 0..100 {
            t.record(span(&t));
        }
        assert_eq!(t.dropped(), 96);
        assert_eq!(n.load(Ordering::Relaxed), 96);
    }

    /// A dead collector (closed port): every span's export fails and is counted.
    #[tokio::test]
    async fn failed_exports_are_counted_as_drops() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (n, on_drop) = counted();
        let url = format!("http://127.0.0.1:{port}/v1/traces");
        let t = Tracer::start(&config(&url, 64), on_drop).unwrap();
        for _ in 0..3 {
            t.record(span(&t));
        }
        t.flush(Duration::from_secs(30)).await;
        assert_eq!(n.load(Ordering::Relaxed), 3);
    }

    /// A full queue smaller than a batch is sent at once, not at the next interval: here
    /// to a dead collector, so the export's failure counts the spans.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_smaller_than_a_batch_is_sent_without_waiting() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let (n, on_drop) = counted();
        let mut cfg = config(&format!("http://127.0.0.1:{port}/v1/traces"), 4);
        cfg.delay = Duration::from_secs(600);
        let t = Tracer::start(&cfg, on_drop).unwrap();
        for _ in 0..4 {
            t.record(span(&t));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while n.load(Ordering::Relaxed) < 4 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            n.load(Ordering::Relaxed),
            4,
            "exported before the 600 s interval"
        );
    }

    #[test]
    fn off_records_nothing_but_still_makes_contexts() {
        let t = Tracer::off();
        let root = t.start_span(None, true);
        assert!(!root.is_sampled());
        let incoming = TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .unwrap();
        let child = t.start_span(Some(&incoming), false);
        assert_eq!(child.trace_id, incoming.trace_id);
        assert_eq!(
            child.sampled,
            Some(true),
            "the incoming decision is passed on"
        );
        t.record(span(&t));
        assert_eq!(t.dropped(), 0);
    }

    #[test]
    fn sampling_follows_the_parent_unless_forced() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let mut cfg = config("http://127.0.0.1:9/v1/traces", 4);
        cfg.sampler = Sampler::ParentBased(Root::AlwaysOff);
        let t = Tracer::start(&cfg, Arc::new(|_| {})).unwrap();
        let unsampled = TraceContext::parse_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        )
        .unwrap();
        assert!(!t.start_span(Some(&unsampled), false).is_sampled());
        assert!(t.start_span(Some(&unsampled), true).is_sampled());
        assert!(!t.start_span(None, false).is_sampled());
        assert!(t.start_span(None, true).is_sampled());
    }
}
