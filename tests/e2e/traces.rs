//! Distributed traces through the real binary, exported over OTLP/HTTP to a receiver in
//! the test (decoded with `opentelemetry-proto`): one trace covers an HTTP request whose
//! function publishes to the bus, whose rule invokes a second function asynchronously,
//! which fails once and is retried; the functions see their invoke span's ids; a dead
//! collector changes no result and counts drops; a stored context survives a restart; a
//! failure destination on a queue and a dead-letter copy on the bus stay in the caller's
//! trace, with its `tracestate`, which reaches the functions.

use nimbus_tests::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use prost::Message;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One exported span, flattened.
#[derive(Debug, Clone)]
struct Span {
    trace: String,
    id: String,
    parent: String,
    name: String,
    kind: i32,
    attrs: Vec<(String, Value)>,
    error: bool,
    service: String,
}

impl Span {
    fn attr(&self, k: &str) -> Option<&Value> {
        self.attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v)
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
struct Receiver {
    port: u16,
    spans: Arc<Mutex<Vec<Span>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let store = spans.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let store = store.clone();
                std::thread::spawn(move || serve(conn, &store));
            }
        });
        Receiver { port, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the spans received.
    fn wait(&self, what: &str, s: &Server, pred: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let ok = eventually(Duration::from_secs(30), || pred(&self.spans()));
        let spans = self.spans();
        assert!(ok, "{what}: spans {spans:#?}\n{}", s.log());
        spans
    }
}

/// Serves one keep-alive connection: each request's body is decoded and stored.
fn serve(conn: std::net::TcpStream, store: &Mutex<Vec<Span>>) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut len, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).unwrap();
                let n = usize::from_str_radix(size.trim(), 16).unwrap();
                let mut chunk = vec![0; n + 2];
                r.read_exact(&mut chunk).unwrap();
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
        } else {
            body.resize(len, 0);
            r.read_exact(&mut body).unwrap();
        }
        assert!(line.starts_with("POST /v1/traces "), "{line}");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("protobuf body");
        store.lock().unwrap().extend(flatten(req));
        out.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n",
        )
        .unwrap();
    }
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<Span> {
    let value = |v: Option<Any>| match v {
        Some(Any::StringValue(s)) => json!(s),
        Some(Any::BoolValue(b)) => json!(b),
        Some(Any::IntValue(i)) => json!(i),
        Some(Any::DoubleValue(d)) => json!(d),
        other => json!(format!("{other:?}")),
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| value(a.value.clone().and_then(|v| v.value)))
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(Span {
                    trace: hex(&s.trace_id),
                    id: hex(&s.span_id),
                    parent: hex(&s.parent_span_id),
                    name: s.name,
                    kind: s.kind,
                    attrs: s
                        .attributes
                        .into_iter()
                        .map(|a| (a.key, value(a.value.and_then(|v| v.value))))
                        .collect(),
                    error: s.status.is_some_and(|st| st.code == 2),
                    service: service.clone(),
                });
            }
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// OTLP span kinds.
const SERVER: i32 = 2;
const CONSUMER: i32 = 5;

/// `(trace id, parent span id)` of a traceparent.
fn ids_of_traceparent(tp: &str) -> (String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    (p[1].to_string(), p[2].to_string())
}

/// `(trace id, parent span id)` of an X-Ray header: the root `1-aaaaaaaa-bbbb…` is the
/// trace id `aaaaaaaabbbb…`.
fn ids_of_xray(h: &str) -> (String, String) {
    let field = |k: &str| {
        h.split(';')
            .find_map(|f| f.strip_prefix(k))
            .unwrap_or_else(|| panic!("no {k} in {h}"))
            .to_string()
    };
    let root = field("Root=1-").replace('-', "");
    (root, field("Parent="))
}

/// Publishes to the default bus through the EventBridge JSON API, passing its trace
/// context on as botocore does (`X-Amzn-Trace-Id` from `_X_AMZN_TRACE_ID`), and returns
/// the context it saw.
const PUBLISHER: &str = r#"
import json, os, urllib.request

def handler(event, context):
    req = urllib.request.Request(
        os.environ["NIMBUS"] + "/",
        data=json.dumps({"Entries": [{"Source": "shop", "DetailType": "Order", "Detail": "{\"n\": 1}"}]}).encode(),
        headers={"X-Amz-Target": "AWSEvents.PutEvents",
                 "Content-Type": "application/x-amz-json-1.1",
                 "X-Amzn-Trace-Id": os.environ["_X_AMZN_TRACE_ID"]},
        method="POST")
    put = json.load(urllib.request.urlopen(req, timeout=10))
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": json.dumps({"xray": os.environ.get("_X_AMZN_TRACE_ID"),
                                "traceparent": os.environ.get("TRACEPARENT"),
                                "event_traceparent": event["headers"].get("traceparent"),
                                "put": put})}
"#;

/// Fails its first attempt, succeeds on the retry; records what each attempt saw.
const WORKER: &str = r#"
import json, os

def handler(event, context):
    first = not os.path.exists(os.environ["MARK"])
    with open(os.environ["OUT"], "a") as f:
        f.write(json.dumps({"request_id": context.aws_request_id, "first": first,
                            "xray": os.environ.get("_X_AMZN_TRACE_ID"),
                            "traceparent": os.environ.get("TRACEPARENT")}) + "\n")
    if first:
        open(os.environ["MARK"], "w").close()
        raise Exception("first attempt fails")
    return "ok"
"#;

fn lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn metrics(s: &Server) -> String {
    s.http
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap()
}

/// The sum of a counter's samples whose line contains every one of `labels`.
fn counter(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn traces_follow_http_bus_async_and_retry_in_one_trace() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("worker.jsonl");
    let s = Server::start_with_env(
        &[
            "--isolation",
            "none",
            "--otlp-endpoint",
            &rx.endpoint(),
            "--retry-base-ms",
            "100",
        ],
        &[
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
            ("OTEL_SERVICE_NAME", "nimbus-e2e"),
        ],
    );
    let mut publisher = python_cfg("app.handler");
    publisher["url"] = json!(true);
    publisher["env"] = json!({"NIMBUS": s.base()});
    s.deploy("publisher", publisher, &[("app.py", PUBLISHER)]);
    let mut worker = python_cfg("app.handler");
    worker["env"] = json!({
        "OUT": out.to_str().unwrap(),
        "MARK": dir.path().join("mark").to_str().unwrap(),
    });
    s.deploy("worker", worker, &[("app.py", WORKER)]);
    let r = s
        .http
        .put(s.url("/v1/buses/default/rules/orders"))
        .json(&json!({"pattern": {"source": ["shop"]}, "targets": ["worker"]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // The caller's own context: the whole chain joins its trace.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let r = s
        .http
        .post(s.url("/fn/publisher/order"))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .header(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1",
        )
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", s.log());
    let seen: Value = r.json().unwrap();
    assert_eq!(seen["put"]["FailedEntryCount"], 0, "{seen}");

    assert!(
        eventually(Duration::from_secs(30), || lines(&out).len() >= 2),
        "the worker ran {:?}\n{}",
        lines(&out),
        s.log()
    );
    let spans = rx.wait("the whole chain", &s, |spans| {
        spans.iter().filter(|x| x.name == "worker").count() >= 2
    });
    let spans: Vec<Span> = spans.into_iter().filter(|x| x.trace == trace).collect();
    let by_id = |id: &str| spans.iter().find(|x| x.id == id);
    let one = |pred: &dyn Fn(&Span) -> bool, what: &str| -> Span {
        let found: Vec<&Span> = spans.iter().filter(|x| pred(x)).collect();
        assert_eq!(found.len(), 1, "{what}: {spans:#?}");
        found[0].clone()
    };
    assert!(spans.iter().all(|x| x.service == "nimbus-e2e"));

    // HTTP request → gateway span (child of the caller) → publisher's invoke span.
    let url = one(&|x| x.parent == caller, "the URL request's gateway span");
    assert_eq!(url.kind, SERVER);
    assert_eq!(url.attr("http.response.status_code"), Some(&json!(200)));
    let publisher = one(&|x| x.name == "publisher", "publisher's invoke span");
    assert_eq!(publisher.parent, url.id);
    assert_eq!(publisher.kind, SERVER);
    for (k, v) in [
        ("faas.trigger", json!("http")),
        ("nimbus.trigger", json!("url")),
        ("faas.name", json!("publisher")),
        ("faas.version", json!("$LATEST")),
        ("faas.coldstart", json!(true)),
        ("faas.max_memory", json!(128 * 1024 * 1024)),
    ] {
        assert_eq!(publisher.attr(k), Some(&v), "{k} of {publisher:#?}");
    }
    assert!(publisher.attr("faas.invocation_id").is_some());
    // Its phases: a cold start (spawn, init) and the response.
    let cold = one(
        &|x| x.name == "cold start" && x.parent == publisher.id,
        "cold start",
    );
    one(&|x| x.name == "spawn" && x.parent == cold.id, "spawn");
    one(&|x| x.name == "init" && x.parent == cold.id, "init");
    one(
        &|x| x.name == "response" && x.parent == publisher.id,
        "response",
    );

    // The function saw its invoke span's ids, in both forms; its HTTP event carried the
    // gateway span's traceparent.
    assert_eq!(
        ids_of_xray(seen["xray"].as_str().unwrap()),
        (trace.to_string(), publisher.id.clone())
    );
    assert_eq!(
        ids_of_traceparent(seen["traceparent"].as_str().unwrap()),
        (trace.to_string(), publisher.id.clone())
    );
    assert_eq!(
        ids_of_traceparent(seen["event_traceparent"].as_str().unwrap()),
        (trace.to_string(), url.id.clone())
    );

    // PutEvents (its gateway span, child of the publisher's invoke span) → the rule.
    let put = one(
        &|x| x.parent == publisher.id && x.kind == SERVER,
        "PutEvents",
    );
    let rule = one(&|x| x.name == "rule orders", "the rule's span");
    assert_eq!(rule.parent, put.id);
    let target = rule.attr("nimbus.target").and_then(Value::as_str);
    assert!(
        target.is_some_and(|t| t.ends_with(":function:worker")),
        "{rule:#?}"
    );

    // → the worker, asynchronously: one invoke span per attempt, both children of the
    // rule's span, the first failed.
    let attempts: Vec<&Span> = spans.iter().filter(|x| x.name == "worker").collect();
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    for a in &attempts {
        assert_eq!(a.parent, rule.id);
        assert_eq!(a.kind, CONSUMER);
        assert_eq!(a.attr("faas.trigger"), Some(&json!("pubsub")));
        assert_eq!(a.attr("nimbus.trigger"), Some(&json!("bus")));
    }
    assert_eq!(
        attempts.iter().filter(|a| a.error).count(),
        1,
        "{attempts:#?}"
    );
    let runs = lines(&out);
    assert_eq!(
        runs[0]["request_id"], runs[1]["request_id"],
        "a retry keeps the request id"
    );
    for run in &runs {
        let (t, parent) = ids_of_traceparent(run["traceparent"].as_str().unwrap());
        assert_eq!(t, trace);
        let span = by_id(&parent).unwrap_or_else(|| panic!("no span {parent}: {spans:#?}"));
        assert_eq!(span.name, "worker");
        assert_eq!(span.error, run["first"] == json!(true), "{run} {span:#?}");
        assert_eq!(
            span.attr("faas.invocation_id").and_then(Value::as_str),
            run["request_id"].as_str()
        );
        assert_eq!(ids_of_xray(run["xray"].as_str().unwrap()), (t, parent));
    }
    // The metrics say where the worker's invocations came from.
    let text = metrics(&s);
    assert_eq!(
        counter(
            &text,
            "nimbus_invocations_total",
            &["function=\"worker\"", "trigger=\"bus\""]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(counter(&text, "nimbus_trace_spans_dropped_total", &[]), 0.0);
}

#[test]
fn traces_to_a_dead_collector_change_no_result_and_count_drops() {
    let closed = free_port();
    let s = Server::start_with_env(
        &["--otlp-endpoint", &format!("http://127.0.0.1:{closed}")],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    s.deploy(
        "echo",
        python_cfg("app.handler"),
        &[(
            "app.py",
            "import os\ndef handler(e, c):\n    return {'e': e, 'xray': os.environ.get('_X_AMZN_TRACE_ID'), 'tp': os.environ.get('TRACEPARENT')}\n",
        )],
    );
    for i in 0..3 {
        let r = s.invoke("echo", &format!("{{\"i\":{i}}}"));
        let body = r.ok();
        assert_eq!(body["e"]["i"], i);
        let (t, p) = ids_of_traceparent(body["tp"].as_str().unwrap());
        assert_eq!(ids_of_xray(body["xray"].as_str().unwrap()), (t, p));
    }
    assert!(
        eventually(Duration::from_secs(30), || counter(
            &metrics(&s),
            "nimbus_trace_spans_dropped_total",
            &[]
        ) > 0.0),
        "{}\n{}",
        metrics(&s),
        s.log()
    );
}

#[test]
fn traces_keep_a_stored_context_across_a_restart() {
    let rx = Receiver::start();
    let mut s = Server::start_with_env(
        &["--otlp-endpoint", &rx.endpoint()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    s.deploy(
        "later",
        python_cfg("app.handler"),
        &[("app.py", "def handler(e, c):\n    return 'ok'\n")],
    );
    // Reserved concurrency 0: the event is stored but cannot run before the restart.
    let concurrency = s.url("/2017-10-31/functions/later/concurrency");
    let r = s
        .http
        .put(&concurrency)
        .json(&json!({"ReservedConcurrentExecutions": 0}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let trace = "0af7651916cd43dd8448eb211c80319c";
    let r = s
        .http
        .post(s.url("/2015-03-31/functions/later/invocations"))
        .header("x-amz-invocation-type", "Event")
        .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let spans = rx.wait("the Invoke request's span", &s, |spans| {
        spans.iter().any(|x| x.trace == trace)
    });
    let submit = spans
        .iter()
        .find(|x| x.trace == trace && x.parent == "b7ad6b7169203331")
        .unwrap()
        .clone();
    s.restart();
    let r = s.http.delete(&concurrency).send().unwrap();
    assert!(r.status().is_success());
    let spans = rx.wait("the invocation after the restart", &s, |spans| {
        spans.iter().any(|x| x.name == "later")
    });
    let later = spans.iter().find(|x| x.name == "later").unwrap();
    assert_eq!(later.trace, trace, "{spans:#?}");
    assert_eq!(later.parent, submit.id, "{spans:#?}");
    assert_eq!(later.attr("nimbus.trigger"), Some(&json!("async")));
}

#[test]
fn traces_follow_a_queue_message_into_its_batch() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("consumer.jsonl");
    let s = Server::start_with_env(
        &["--isolation", "none", "--otlp-endpoint", &rx.endpoint()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    );
    let mut consumer = python_cfg("app.handler");
    consumer["env"] = json!({"OUT": out.to_str().unwrap()});
    s.deploy(
        "consumer",
        consumer,
        &[(
            "app.py",
            "import json, os\ndef handler(e, c):\n    with open(os.environ['OUT'], 'a') as f:\n        f.write(json.dumps({'record': e['Records'][0]['attributes'], 'tp': os.environ.get('TRACEPARENT')}) + '\\n')\n",
        )],
    );
    let r = s
        .http
        .put(s.url("/v1/queues/jobs"))
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = s
        .http
        .post(s.url("/2015-03-31/event-source-mappings"))
        .json(&json!({"FunctionName": "consumer",
                      "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:jobs",
                      "BatchSize": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let trace = "5759e988bd862e3fe1be46a994272793";
    let r = s
        .http
        .post(s.url("/v1/queues/jobs/messages"))
        .header(
            "x-amzn-trace-id",
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .json(&json!({"body": "job"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        eventually(Duration::from_secs(30), || !lines(&out).is_empty()),
        "{}",
        s.log()
    );
    let spans = rx.wait("the batch's invocation", &s, |spans| {
        spans.iter().any(|x| x.name == "consumer")
    });
    let spans: Vec<Span> = spans.into_iter().filter(|x| x.trace == trace).collect();
    let send = spans
        .iter()
        .find(|x| x.parent == "53995c3f42cd8ad8")
        .expect("the send request's span");
    let batch = spans
        .iter()
        .find(|x| x.name == "batch jobs")
        .expect("batch span");
    assert_eq!(batch.parent, send.id, "{spans:#?}");
    let invoke = spans.iter().find(|x| x.name == "consumer").unwrap();
    assert_eq!(invoke.parent, batch.id);
    assert_eq!(invoke.attr("faas.trigger"), Some(&json!("pubsub")));
    assert_eq!(invoke.attr("nimbus.trigger"), Some(&json!("queue")));
    // The record carries the message's context as SQS's AWSTraceHeader; the function
    // runs in its invoke span.
    let run = &lines(&out)[0];
    let header = run["record"]["AWSTraceHeader"].as_str().unwrap();
    assert_eq!(ids_of_xray(header), (trace.to_string(), send.id.clone()));
    assert_eq!(
        ids_of_traceparent(run["tp"].as_str().unwrap()),
        (trace.to_string(), invoke.id.clone())
    );
}

/// Appends what each invocation saw (its event, `TRACEPARENT`, `TRACESTATE`) to `OUT`.
const RECORDER: &str = r#"
import json, os

def handler(event, context):
    with open(os.environ["OUT"], "a") as f:
        f.write(json.dumps({"event": event,
                            "traceparent": os.environ.get("TRACEPARENT"),
                            "tracestate": os.environ.get("TRACESTATE")}) + "\n")
    return "ok"
"#;

const FAILS: &str = "def handler(event, context):\n    raise Exception('boom')\n";

/// A W3C tracestate whose values hold `;` and spaces, as the spec allows.
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f0;67aa 0ba9";

/// A server exporting to `rx`, functions without isolation (they write to a temp dir).
fn traced_server(rx: &Receiver) -> Server {
    Server::start_with_env(
        &["--isolation", "none", "--otlp-endpoint", &rx.endpoint()],
        &[("OTEL_BSP_SCHEDULE_DELAY", "50")],
    )
}

/// Deploys `RECORDER` as `name`, writing to `out`.
fn deploy_recorder(s: &Server, name: &str, out: &std::path::Path) {
    let mut cfg = python_cfg("app.handler");
    cfg["env"] = json!({"OUT": out.to_str().unwrap()});
    s.deploy(name, cfg, &[("app.py", RECORDER)]);
}

/// `PUT`s `body` to `path`, expecting 200.
fn put_ok(s: &Server, path: &str, body: Value) {
    let r = s.http.put(s.url(path)).json(&body).send().unwrap();
    let status = r.status().as_u16();
    assert_eq!(status, 200, "{path}: {}", r.text().unwrap());
}

/// Invokes `function` asynchronously within the caller's context `(trace, caller span)`,
/// with `TRACESTATE`; waits until `out` holds a line.
fn invoke_async_traced(s: &Server, function: &str, ids: (&str, &str), out: &std::path::Path) {
    let r = s
        .http
        .post(s.url(&format!("/2015-03-31/functions/{function}/invocations")))
        .header("x-amz-invocation-type", "Event")
        .header("traceparent", format!("00-{}-{}-01", ids.0, ids.1))
        .header("tracestate", TRACESTATE)
        .body("{\"n\": 1}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(
        eventually(Duration::from_secs(30), || !lines(out).is_empty()),
        "{}",
        s.log()
    );
}

/// The one span of `spans` for which `pred` holds.
fn only<'a>(spans: &'a [Span], what: &str, pred: impl Fn(&Span) -> bool) -> &'a Span {
    let found: Vec<&Span> = spans.iter().filter(|x| pred(x)).collect();
    assert_eq!(found.len(), 1, "{what}: {spans:#?}");
    found[0]
}

/// The spans of `trace` once one is named `last`; the request span of the caller
/// `caller` and the failed invocation of `failed`, its child, checked.
fn chain(
    rx: &Receiver,
    s: &Server,
    trace: &str,
    caller: &str,
    failed: &str,
    last: &str,
) -> (Vec<Span>, Span) {
    let spans = rx.wait(last, s, |spans| spans.iter().any(|x| x.name == last));
    let spans: Vec<Span> = spans.into_iter().filter(|x| x.trace == trace).collect();
    let request = only(&spans, "the Invoke request's span", |x| x.parent == caller).clone();
    let f = only(&spans, failed, |x| x.name == failed);
    assert_eq!(f.parent, request.id);
    assert!(f.error, "{f:#?}");
    (spans, request)
}

#[test]
fn traces_follow_a_failure_destination_through_a_queue_and_its_mapping() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("consumer.jsonl");
    let s = traced_server(&rx);
    s.deploy("fails", python_cfg("app.handler"), &[("app.py", FAILS)]);
    deploy_recorder(&s, "consumer", &out);
    put_ok(&s, "/v1/queues/failures", json!({}));
    let queue = "arn:aws:sqs:us-east-1:000000000000:failures";
    let r = s
        .http
        .post(s.url("/2015-03-31/event-source-mappings"))
        .json(&json!({"FunctionName": "consumer", "EventSourceArn": queue, "BatchSize": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    put_ok(
        &s,
        "/2019-09-25/functions/fails/event-invoke-config",
        json!({"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": queue}}}),
    );

    let (trace, caller) = ("3c1a8a4f2b5e4d6c8e9f0a1b2c3d4e5f", "1111222233334444");
    invoke_async_traced(&s, "fails", (trace, caller), &out);
    let (spans, request) = chain(&rx, &s, trace, caller, "fails", "consumer");

    // The request → the `destination` span (a child of the event's context) → the
    // batch of the message it sent → the consumer's invocation: one trace.
    let dest = only(&spans, "destination", |x| x.name == "destination");
    assert_eq!(dest.parent, request.id);
    assert_eq!(dest.attr("nimbus.destination"), Some(&json!(queue)));
    assert_eq!(
        dest.attr("nimbus.condition"),
        Some(&json!("RetriesExhausted"))
    );
    let batch = only(&spans, "batch", |x| x.name == "batch failures");
    assert_eq!(batch.parent, dest.id, "{spans:#?}");
    let consumer = only(&spans, "consumer", |x| x.name == "consumer");
    assert_eq!(consumer.parent, batch.id);
    assert_eq!(consumer.attr("nimbus.trigger"), Some(&json!("queue")));

    // The record's AWSTraceHeader is the destination span (X-Ray form, nothing more);
    // the function runs in its invoke span, with the caller's tracestate.
    let run = &lines(&out)[0];
    let record = &run["event"]["Records"][0];
    let body: Value = serde_json::from_str(record["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["requestContext"]["condition"], "RetriesExhausted");
    let header = record["attributes"]["AWSTraceHeader"].as_str().unwrap();
    assert_eq!(ids_of_xray(header), (trace.to_string(), dest.id.clone()));
    assert!(!header.contains("tracestate"), "{header}");
    assert_eq!(
        ids_of_traceparent(run["traceparent"].as_str().unwrap()),
        (trace.to_string(), consumer.id.clone())
    );
    assert_eq!(run["tracestate"], TRACESTATE, "{run}");
}

#[test]
fn traces_follow_a_dead_letter_copy_onto_the_bus_and_its_rule() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mourner.jsonl");
    let s = traced_server(&rx);
    let bus = "arn:aws:events:us-east-1:000000000000:event-bus/default";
    let mut doomed = python_cfg("app.handler");
    doomed["dead_letter_target"] = json!(bus);
    s.deploy("doomed", doomed, &[("app.py", FAILS)]);
    put_ok(
        &s,
        "/2019-09-25/functions/doomed/event-invoke-config",
        json!({"MaximumRetryAttempts": 0}),
    );
    deploy_recorder(&s, "mourner", &out);
    put_ok(
        &s,
        "/v1/buses/default/rules/mourn",
        json!({"pattern": {"source": ["lambda"], "detail-type": ["Lambda Function Dead Letter"]},
               "targets": ["mourner"]}),
    );

    let (trace, caller) = ("7d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a", "5555666677778888");
    invoke_async_traced(&s, "doomed", (trace, caller), &out);
    let (spans, request) = chain(&rx, &s, trace, caller, "doomed", "mourner");

    // The request → the `dead letter` span → the rule's span → the rule target's
    // invocation (a `bus` trigger): one trace.
    let dead = only(&spans, "dead letter", |x| x.name == "dead letter");
    assert_eq!(dead.parent, request.id);
    assert_eq!(dead.attr("nimbus.dead_letter"), Some(&json!(bus)));
    let rule = only(&spans, "rule mourn", |x| x.name == "rule mourn");
    assert_eq!(rule.parent, dead.id, "{spans:#?}");
    assert_eq!(rule.attr("nimbus.rule"), Some(&json!("mourn")));
    let mourner = only(&spans, "mourner", |x| x.name == "mourner");
    assert_eq!(mourner.parent, rule.id, "{spans:#?}");
    assert_eq!(mourner.attr("nimbus.trigger"), Some(&json!("bus")));

    let run = &lines(&out)[0];
    assert_eq!(run["event"]["detail-type"], "Lambda Function Dead Letter");
    assert_eq!(
        ids_of_traceparent(run["traceparent"].as_str().unwrap()),
        (trace.to_string(), mourner.id.clone())
    );
    assert_eq!(run["tracestate"], TRACESTATE, "{run}");
}

/// Returns the tracestate it was given and the one of its HTTP event's headers.
const ECHO_STATE_PY: &str = "import os\ndef handler(e, c):\n    h = e.get('headers') or {}\n    return {'statusCode': 200, 'body': str(os.environ.get('TRACESTATE')) + '|' + str(h.get('tracestate'))}\n";
const ECHO_STATE_JS: &str = "exports.handler = async (e) => ({ statusCode: 200, body: String(process.env.TRACESTATE) + '|' + String((e.headers || {}).tracestate) });";

#[test]
fn traces_give_the_tracestate_to_the_function() {
    // Tracing off: the context (and its tracestate) still reaches the function.
    let s = Server::start(&[]);
    let mut py = python_cfg("app.handler");
    py["url"] = json!(true);
    s.deploy("state-py", py, &[("app.py", ECHO_STATE_PY)]);
    let mut js = node_cfg("index.handler");
    js["url"] = json!(true);
    s.deploy("state-js", js, &[("index.js", ECHO_STATE_JS)]);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for f in ["state-py", "state-js"] {
        // The Invoke API: in TRACESTATE; the next invocation without one has none.
        let r = s.invoke_with(
            f,
            b"{}".to_vec(),
            &[("traceparent", traceparent), ("tracestate", TRACESTATE)],
        );
        assert_eq!(r.ok()["body"], format!("{TRACESTATE}|{}", none(f)), "{f}");
        let r = s.invoke_with(f, b"{}".to_vec(), &[("traceparent", traceparent)]);
        assert_eq!(r.ok()["body"], format!("{0}|{0}", none(f)), "{f}");
        // A function URL: in TRACESTATE and in the HTTP event's headers.
        let r = s
            .http
            .post(s.url(&format!("/fn/{f}/x")))
            .header("traceparent", traceparent)
            .header("tracestate", TRACESTATE)
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert_eq!(
            r.text().unwrap(),
            format!("{TRACESTATE}|{TRACESTATE}"),
            "{f}"
        );
    }
}

/// How each runtime prints a missing value.
fn none(function: &str) -> &'static str {
    if function.ends_with("-py") {
        "None"
    } else {
        "undefined"
    }
}

/// The trace variables as a Node function sees them: in `process.env` (its keys and a
/// spread copy too), in a child process, and — not — in the C environment
/// (`process.report` reads that one).
const NODE_TRACE_ENV: &str = r#"
const { execFileSync } = require('child_process');
exports.handler = async () => {
  const e = process.env;
  return {
    xray: e._X_AMZN_TRACE_ID,
    tp: e.TRACEPARENT,
    keys: Object.keys(e).filter((k) => k === '_X_AMZN_TRACE_ID' || k === 'TRACEPARENT').sort(),
    spread: { ...e }.TRACEPARENT,
    child: execFileSync(process.execPath, ['-e', 'process.stdout.write(process.env.TRACEPARENT || "")']).toString(),
    c_env: process.report.getReport().environmentVariables.TRACEPARENT ?? null,
    greeting: e.GREETING,
  };
};
"#;

/// The same in Python: `os.environ` and `os.getenv` hold them, the C environment does not.
const PYTHON_TRACE_ENV: &str = r#"
import ctypes, os
getenv = ctypes.CDLL(None).getenv
getenv.restype = ctypes.c_char_p
def handler(e, c):
    raw = getenv(b"TRACEPARENT")
    return {"xray": os.environ.get("_X_AMZN_TRACE_ID"), "tp": os.getenv("TRACEPARENT"),
            "c_env": raw.decode() if raw else None, "greeting": os.environ.get("GREETING")}
"#;

/// The runtimes give each invocation its trace in the environment variables without
/// setting them in the C environment: glibc keeps every value `setenv` was ever given, so
/// a busy instance grew by ~260 bytes per invocation until its memory limit killed it.
#[test]
fn functions_see_their_trace_in_the_environment_but_the_c_environment_does_not_keep_it() {
    let s = Server::start(&[]);
    let mut node = node_cfg("index.handler");
    node["env"] = json!({"GREETING": "hi"});
    s.deploy("node-env", node, &[("index.js", NODE_TRACE_ENV)]);
    let mut py = python_cfg("app.handler");
    py["env"] = json!({"GREETING": "hi"});
    s.deploy("py-env", py, &[("app.py", PYTHON_TRACE_ENV)]);
    for f in ["node-env", "py-env"] {
        for i in 0..3 {
            let trace = format!("0af7651916cd43dd8448eb211c8031{i:02x}");
            let r = s
                .http
                .post(s.url(&format!("/2015-03-31/functions/{f}/invocations")))
                .header("traceparent", format!("00-{trace}-b7ad6b7169203331-01"))
                .body("{}")
                .send()
                .unwrap();
            assert_eq!(r.status().as_u16(), 200, "{f}");
            let v: Value = r.json().unwrap();
            let tp = v["tp"].as_str().unwrap_or_else(|| panic!("{f}: {v}"));
            let (t, p) = ids_of_traceparent(tp);
            assert_eq!(t, trace, "{f}: {v}");
            assert_eq!(ids_of_xray(v["xray"].as_str().unwrap()), (t, p), "{f}: {v}");
            assert_eq!(v["c_env"], Value::Null, "{f}: {v}");
            assert_eq!(v["greeting"], "hi", "{f}: {v}");
            if f == "node-env" {
                assert_eq!(v["keys"], json!(["TRACEPARENT", "_X_AMZN_TRACE_ID"]), "{v}");
                assert_eq!(v["spread"], tp, "{v}");
                assert_eq!(v["child"], tp, "{v}");
            }
        }
    }
}

/// The bytes the Python process has malloc'd and not freed (glibc's `mallinfo2`).
const PYTHON_MALLOC_IN_USE: &str = r#"
import ctypes

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2

def handler(e, c):
    return {"in_use": mallinfo2().uordblks}
"#;

/// A warm Python instance's malloc'd bytes stay flat from one invocation to the next (with
/// the trace variables set per invocation through `setenv` they grew by 256 bytes each:
/// 332,800 over these 1,300 invocations).
#[test]
fn a_warm_python_instance_does_not_grow_per_invocation() {
    let s = Server::start(&[]);
    let mut cfg = python_cfg("app.handler");
    cfg["concurrency"] = json!(1);
    s.deploy("malloc", cfg, &[("app.py", PYTHON_MALLOC_IN_USE)]);
    let in_use = || {
        let r = s.invoke("malloc", "{}");
        r.ok()["in_use"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}", r.body))
    };
    let mut at_200 = 0;
    for i in 1..=1500 {
        let v = in_use();
        if i == 200 {
            at_200 = v;
        }
        if i == 1500 {
            assert!(
                v.saturating_sub(at_200) < 32 << 10,
                "malloc'd bytes grew from {at_200} to {v} over 1,300 invocations"
            );
        }
    }
}
