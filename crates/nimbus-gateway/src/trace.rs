//! Distributed traces on the HTTP surfaces and the invocation path (exported by
//! `nimbus-trace`): the gateway span of each request, and the spans of each invocation
//! (invoke, queue, cold start with spawn and init, response) with OpenTelemetry's FaaS
//! attributes.
//!
//! The gateway span becomes the request's context: the middleware rewrites `traceparent`
//! and `X-Amzn-Trace-Id` to it (as API Gateway passes its own segment on), so every
//! handler, and the headers of an HTTP event, see it as the incoming context. With
//! tracing off the headers pass through untouched.

use crate::Gateway;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use nimbus_core::TracingMode;
use nimbus_metrics::Trigger;
use nimbus_pool::PoolInvokeResult;
use nimbus_runtime::{InstanceSpec, Invocation, Outcome};
use nimbus_trace::{KeyValue, Kind, Span, TraceContext, Tracer, TRACEPARENT, XRAY};
use std::sync::Arc;
use std::time::SystemTime;

/// The trace context a request arrived with (`traceparent` wins over `X-Amzn-Trace-Id`).
pub(crate) fn incoming(headers: &HeaderMap) -> Option<TraceContext> {
    TraceContext::from_headers(|n| headers.get(n).and_then(|v| v.to_str().ok()))
}

/// One gateway (HTTP server) span per request, except scrapes and health checks.
pub(crate) async fn entry(
    State(gw): State<Arc<Gateway>>,
    mut req: Request,
    next: Next,
) -> Response {
    let tracer = &gw.cfg.tracer;
    if !tracer.is_enabled() {
        return next.run(req).await;
    }
    let path = req.uri().path();
    if path == "/metrics" || path == "/v1/health" || path == "/v1/ready" {
        return next.run(req).await;
    }
    let parent = incoming(req.headers());
    let cx = tracer.start_span(parent.as_ref(), false);
    let h = req.headers_mut();
    for (name, value) in [(TRACEPARENT, cx.traceparent()), (XRAY, cx.xray())] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = SystemTime::now();
    let resp = next.run(req).await;
    if cx.is_sampled() {
        let status = resp.status().as_u16();
        let name = crate::metrics::operation(&method, route.as_ref());
        let mut span = Span::new(name.to_string(), Kind::Server, &cx, parent.as_ref(), start);
        span.parent_remote = parent.is_some();
        span.end = SystemTime::now();
        span.attributes = vec![
            KeyValue::new("http.request.method", method.as_str().to_string()),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ];
        if let Some(r) = route {
            span.attributes
                .push(KeyValue::new("http.route", r.as_str().to_string()));
        }
        if status >= 500 {
            span.error = Some(status.to_string());
        }
        tracer.record(span);
    }
    resp
}

/// OpenTelemetry's `faas.trigger` for a Nimbus trigger.
fn faas_trigger(t: Trigger) -> &'static str {
    match t {
        Trigger::Url | Trigger::Route => "http",
        Trigger::Queue
        | Trigger::Bus
        | Trigger::Nats
        | Trigger::Rabbitmq
        | Trigger::Redis
        | Trigger::Mqtt => "pubsub",
        Trigger::S3 | Trigger::Postgres => "datasource",
        Trigger::Schedule => "timer",
        Trigger::Api | Trigger::Async | Trigger::Workflow => "other",
    }
}

/// The context an invocation arrived with: its `traceparent` (with its `tracestate`),
/// else its X-Ray header.
fn parent_of(inv: &Invocation) -> Option<TraceContext> {
    match inv
        .traceparent
        .as_deref()
        .and_then(TraceContext::parse_traceparent)
    {
        Some(cx) => Some(TraceContext {
            tracestate: inv.tracestate.clone(),
            ..cx
        }),
        None => inv.trace_id.as_deref().and_then(TraceContext::parse_xray),
    }
}

/// An invocation's trace: its parent and its own invoke span.
pub(crate) struct InvokeTrace {
    parent: Option<TraceContext>,
    cx: TraceContext,
    start: SystemTime,
}

/// Starts the invoke span of `inv` (child of the context it arrived with; a new trace
/// without one) and hands its ids to the function: `Lambda-Runtime-Trace-Id` and
/// `Nimbus-Runtime-Traceparent` carry the invoke span, `Nimbus-Runtime-Tracestate` the
/// incoming tracestate. `TracingConfig: Active` samples it whatever the incoming decision.
pub(crate) fn begin(tracer: &Tracer, mode: TracingMode, inv: &mut Invocation) -> InvokeTrace {
    let parent = parent_of(inv);
    let cx = tracer.start_span(parent.as_ref(), mode == TracingMode::Active);
    inv.trace_id = Some(cx.xray());
    inv.traceparent = Some(cx.traceparent());
    inv.tracestate = cx.tracestate.clone();
    InvokeTrace {
        parent,
        cx,
        start: SystemTime::now(),
    }
}

impl InvokeTrace {
    /// Records the invocation's spans once it ended (nothing unless sampled).
    pub(crate) fn end(
        self,
        tracer: &Tracer,
        spec: &InstanceSpec,
        trigger: Trigger,
        request_id: &str,
        res: &Result<PoolInvokeResult, nimbus_pool::PoolError>,
    ) {
        if !tracer.is_enabled() || !self.cx.is_sampled() {
            return;
        }
        let end = SystemTime::now();
        // Synchronous calls are served; queued work is consumed.
        let kind = match trigger {
            Trigger::Api | Trigger::Url | Trigger::Route => Kind::Server,
            _ => Kind::Consumer,
        };
        let mut invoke = Span::new(
            spec.function.to_string(),
            kind,
            &self.cx,
            self.parent.as_ref(),
            self.start,
        );
        invoke.end = end;
        invoke.attributes = vec![
            KeyValue::new("faas.trigger", faas_trigger(trigger)),
            KeyValue::new("nimbus.trigger", trigger.as_str()),
            KeyValue::new("faas.invocation_id", request_id.to_string()),
            KeyValue::new("faas.name", spec.function.to_string()),
            KeyValue::new("faas.version", spec.version.clone()),
            KeyValue::new(
                "faas.max_memory",
                i64::from(spec.config.memory_mb) * 1024 * 1024,
            ),
        ];
        let r = match res {
            Ok(r) => r,
            Err(e) => {
                invoke
                    .attributes
                    .push(KeyValue::new("faas.coldstart", false));
                invoke.error = Some(e.to_string());
                tracer.record(invoke);
                return;
            }
        };
        invoke
            .attributes
            .push(KeyValue::new("faas.coldstart", r.cold));
        if let Outcome::Error { error_type, .. } = &r.result.outcome {
            invoke.error = Some(error_type.clone());
            invoke
                .attributes
                .push(KeyValue::new("error.type", error_type.clone()));
        }
        // The phases, in order: waiting for a slot, the cold start (spawn, init), the
        // function's run, and the response back to the caller.
        let mut at = self.start;
        if !r.waited.is_zero() {
            tracer.record(phase("queue", &self.cx, at, at + r.waited));
        }
        at += r.waited;
        if r.cold {
            let init = r.result.init_duration.unwrap_or_default();
            let cold = phase("cold start", &self.cx, at, at + r.spawn + init);
            tracer.record(phase("spawn", &cold.context, at, at + r.spawn));
            let mut init_span = phase("init", &cold.context, at + r.spawn, at + r.spawn + init);
            if r.stem {
                init_span
                    .attributes
                    .push(KeyValue::new("nimbus.stem_cell", true));
            }
            tracer.record(init_span);
            tracer.record(cold);
            at += r.spawn + init;
        }
        let answered = (at + r.result.duration).min(end);
        tracer.record(phase("response", &self.cx, answered, end));
        tracer.record(invoke);
    }
}

/// A phase of an invocation: a sampled child span of `parent` from `from` to `to`.
fn phase(name: &'static str, parent: &TraceContext, from: SystemTime, to: SystemTime) -> Span {
    let mut s = Span::new(
        name,
        Kind::Internal,
        &parent.child(true),
        Some(parent),
        from,
    );
    s.end = to;
    s
}
