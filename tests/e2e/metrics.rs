//! Prometheus metrics (`GET /metrics`): a scripted mix of invocations (successes, a
//! function error, a timeout, an init error, a throttle, a cold then a warm call, calls by
//! a version and by an alias, a URL call, a queue message through an event-source mapping, async events that end dead, one of them failing to reach its dead-letter queue)
//! and the families' values checked exactly, parsed with a real Prometheus parser
//! (`prometheus-parse`) and checked against the OpenMetrics grammar by Python's
//! `prometheus_client` parser; both endpoints (the unauthenticated `--metrics-listen` and
//! the main listener, authorised as `nimbus:GetMetrics`).

use nimbus_tests::*;
use prometheus_parse::{Sample, Scrape, Value as PValue};
use serde_json::{json, Value};
use std::time::Duration;

const OK: &str = "def handler(event, context):\n    return {'ok': True}\n";
const FAILS: &str = "def handler(event, context):\n    raise ValueError('boom')\n";
const SLOW: &str = "import time\ndef handler(event, context):\n    time.sleep(5)\n";
const BROKEN: &str =
    "raise RuntimeError('cannot import')\ndef handler(event, context):\n    pass\n";

fn parse(text: &str) -> Vec<Sample> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    Scrape::parse(lines).expect("prometheus text").samples
}

/// The value of the sample `metric` whose labels include `labels` (0 when absent).
fn value(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert!(found.len() <= 1, "{metric} {labels:?} matches {found:?}");
    match found.first().map(|s| &s.value) {
        None => 0.0,
        Some(PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v)) => *v,
        Some(other) => panic!("{metric}: unexpected {other:?}"),
    }
}

/// The sum of every `metric` sample whose labels include `labels`.
fn total(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .map(|s| match &s.value {
            PValue::Counter(v) | PValue::Gauge(v) | PValue::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

/// Checks `text` against the OpenMetrics grammar with Python's `prometheus_client`.
fn strict_parse(text: &str) {
    let script = "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nprint(len(list(p(sys.stdin.read()))))\n";
    let mut child = std::process::Command::new(python::python())
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run python");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn scrape(s: &Server, url: &str) -> String {
    let r = s.http.get(url).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    r.text().unwrap()
}

/// CreateFunction of a Python function with `extra` fields.
fn create(s: &Server, name: &str, code: &str, extra: Value) {
    let (code, v) = s.create_python_function(name, code, extra);
    assert_eq!(code, 201, "{v}");
    let (code, v) = s.put_json(
        &format!("/2019-09-25/functions/{name}/event-invoke-config"),
        &json!({"MaximumRetryAttempts": 0}),
    );
    assert_eq!(code, 200, "{v}");
}

fn send_event(s: &Server, name: &str) {
    let r = s.invoke_with(name, b"{}".to_vec(), &[("X-Amz-Invocation-Type", "Event")]);
    assert_eq!(r.status, 202, "{}", r.body);
}

#[test]
fn a_scripted_mix_is_counted_exactly_on_both_endpoints() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let s = Server::start(&["--metrics-listen", &listen, "--stem-cells", "off"]);
    let metrics_url = format!("http://{listen}/metrics");

    let mut ok = python_cfg("app.handler");
    ok["url"] = json!(true);
    s.deploy("ok", ok, &[("app.py", OK)]);
    s.deploy("fails", python_cfg("app.handler"), &[("app.py", FAILS)]);
    let mut slow = python_cfg("app.handler");
    slow["timeout_s"] = json!(1);
    s.deploy("slow", slow, &[("app.py", SLOW)]);
    s.deploy("broken", python_cfg("app.handler"), &[("app.py", BROKEN)]);
    s.deploy("zero", python_cfg("app.handler"), &[("app.py", OK)]);
    s.deploy("gone", python_cfg("app.handler"), &[("app.py", OK)]);
    let (code, v) = s.put_json(
        "/2017-10-31/functions/zero/concurrency",
        &json!({ "ReservedConcurrentExecutions": 0 }),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(s.put_json("/v1/queues/dead", &json!({})).0, 200);
    assert_eq!(s.put_json("/v1/queues/soon-gone", &json!({})).0, 200);
    let dlq = |q: &str| json!({"DeadLetterConfig": {"TargetArn": format!("arn:aws:sqs:us-east-1:000000000000:{q}")}});
    create(&s, "async-dead", FAILS, dlq("dead"));
    create(&s, "async-dlq-error", FAILS, dlq("soon-gone"));
    // Its on-failure destination is the same queue, gone too: a destination failure.
    let (code, v) = s.put_json(
        "/2019-09-25/functions/async-dlq-error/event-invoke-config",
        &json!({"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:soon-gone"}}}),
    );
    assert_eq!(code, 200, "{v}");
    let r = s.http.delete(s.url("/v1/queues/soon-gone")).send().unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());

    // The mix.
    s.invoke("ok", "{}").ok(); // cold
    s.invoke("ok", "{}").ok(); // warm
                               // `ok` by its version 1 (another instance: a cold start) and by an alias of it: each
                               // counted under the qualifier as called.
    let r = s
        .http
        .post(s.url("/2015-03-31/functions/ok/aliases"))
        .json(&json!({"Name": "live", "FunctionVersion": "1"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    s.invoke("ok:1", "{}").ok();
    s.invoke("ok:live", "{}").ok();
    let r = s.http.get(s.url("/fn/ok/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // A queue message for `ok` through an event-source mapping (its instance is warm).
    assert_eq!(s.put_json("/v1/queues/work", &json!({})).0, 200);
    let body = json!({"FunctionName": "ok", "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:work", "BatchSize": 10});
    let r = s
        .http
        .post(s.url("/2015-03-31/event-source-mappings"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap());
    let r = s
        .http
        .post(s.url("/v1/queues/work/messages"))
        .json(&json!({"entries": [{"body": "x"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let queued = eventually(Duration::from_secs(20), || {
        let m = parse(&scrape(&s, &metrics_url));
        total(&m, "nimbus_invocations_total", &[("trigger", "queue")]) == 1.0
    });
    assert!(queued, "{}", s.log());
    assert!(s.invoke("fails", "{}").function_error());
    let r = s.invoke("slow", "{}");
    assert!(r.body.contains("Sandbox.Timedout"), "{}", r.body);
    let r = s.invoke("broken", "{}");
    assert!(r.function_error(), "{}", r.body);
    let r = s.invoke("zero", "{}");
    assert_eq!(r.status, 429, "{}", r.body);
    s.invoke("gone", "{}").ok();
    send_event(&s, "async-dead");
    send_event(&s, "async-dlq-error");
    let r = s
        .http
        .delete(s.url("/2015-03-31/functions/gone"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);

    // Both async events end dead (no retries); the second one's queue is gone.
    let mut samples = Vec::new();
    let done = eventually(Duration::from_secs(30), || {
        samples = parse(&scrape(&s, &metrics_url));
        total(&samples, "nimbus_async_events_dropped_total", &[]) == 2.0
            && total(&samples, "nimbus_dead_letter_errors_total", &[]) == 1.0
            && total(&samples, "nimbus_async_destination_failures_total", &[]) == 1.0
    });
    assert!(done, "{samples:#?}\n{}", s.log());
    let text = scrape(&s, &metrics_url);
    strict_parse(&text);
    let m = parse(&text);

    let inv_at = |f: &str, qualifier: &str, trigger: &str, outcome: &str| {
        value(
            &m,
            "nimbus_invocations_total",
            &[
                ("function", f),
                ("qualifier", qualifier),
                ("trigger", trigger),
                ("outcome", outcome),
            ],
        )
    };
    let inv = |f: &str, trigger: &str, outcome: &str| inv_at(f, "$LATEST", trigger, outcome);
    assert_eq!(inv("ok", "api", "success"), 2.0, "{text}");
    // By version and by alias (not the version the alias picked).
    assert_eq!(inv_at("ok", "1", "api", "success"), 1.0, "{text}");
    assert_eq!(inv_at("ok", "live", "api", "success"), 1.0, "{text}");
    assert_eq!(
        total(&m, "nimbus_invocations_total", &[("function", "ok")]),
        6.0,
        "{text}"
    );
    assert_eq!(inv("ok", "url", "success"), 1.0, "{text}");
    assert_eq!(inv("ok", "queue", "success"), 1.0, "{text}");
    assert_eq!(inv("fails", "api", "error"), 1.0, "{text}");
    assert_eq!(inv("slow", "api", "timeout"), 1.0, "{text}");
    assert_eq!(inv("broken", "api", "init_error"), 1.0, "{text}");
    assert_eq!(inv("zero", "api", "throttle"), 1.0, "{text}");
    assert_eq!(inv("async-dead", "async", "error"), 1.0, "{text}");
    assert_eq!(inv("async-dlq-error", "async", "error"), 1.0, "{text}");
    // Nothing else was counted.
    assert_eq!(total(&m, "nimbus_invocations_total", &[]), 12.0, "{text}");

    // Durations: one observation per invocation that ran.
    let count = |metric: &str, f: &str| value(&m, metric, &[("function", f)]);
    assert_eq!(count("nimbus_invocation_duration_seconds_count", "ok"), 6.0);
    assert_eq!(
        count("nimbus_invocation_duration_seconds_count", "slow"),
        1.0
    );
    assert!(count("nimbus_invocation_duration_seconds_sum", "slow") >= 1.0);
    assert_eq!(
        count("nimbus_invocation_duration_seconds_count", "zero"),
        0.0
    );
    let slow_hist = m
        .iter()
        .find(|s| {
            s.metric == "nimbus_invocation_duration_seconds"
                && s.labels.get("function") == Some("slow")
        })
        .expect("slow's histogram");
    let PValue::Histogram(buckets) = &slow_hist.value else {
        panic!("{slow_hist:?}")
    };
    let le = |b: f64| {
        buckets
            .iter()
            .find(|h| h.less_than == b)
            .map(|h| h.count)
            .unwrap_or_else(|| panic!("no bucket {b}: {buckets:?}"))
    };
    // OTel's FaaS buckets; the 1 s timeout lands above 0.75 s.
    assert_eq!(le(0.005), 0.0);
    assert_eq!(le(0.75), 0.0);
    assert_eq!(le(10.0), 1.0);
    assert_eq!(le(f64::INFINITY), 1.0);

    // Cold starts: one per new instance (`ok` has two: $LATEST and version 1), none from
    // a stem cell (off here); init times.
    let cold = |f: &str| {
        value(
            &m,
            "nimbus_cold_starts_total",
            &[("function", f), ("stem", "false")],
        )
    };
    assert_eq!(cold("ok"), 2.0, "{text}");
    for f in ["fails", "slow", "broken", "async-dead", "async-dlq-error"] {
        assert_eq!(cold(f), 1.0, "{f}: {text}");
    }
    assert_eq!(cold("zero"), 0.0);
    assert_eq!(
        total(&m, "nimbus_cold_starts_total", &[("stem", "true")]),
        0.0
    );
    assert_eq!(count("nimbus_init_duration_seconds_count", "ok"), 2.0);

    assert_eq!(
        value(
            &m,
            "nimbus_throttles_total",
            &[("function", "zero"), ("reason", "reserved")]
        ),
        1.0
    );
    assert_eq!(total(&m, "nimbus_throttles_total", &[]), 1.0);

    // Nothing in flight now.
    assert_eq!(total(&m, "nimbus_concurrent_executions", &[]), 0.0);
    assert_eq!(value(&m, "nimbus_account_concurrent_executions", &[]), 0.0);

    // Async: received, no retries (MaximumRetryAttempts 0), dead, one DLQ failure.
    for f in ["async-dead", "async-dlq-error"] {
        assert_eq!(
            value(&m, "nimbus_async_events_received_total", &[("function", f)]),
            1.0
        );
        assert_eq!(
            value(
                &m,
                "nimbus_async_events_dropped_total",
                &[("function", f), ("reason", "dead")]
            ),
            1.0
        );
    }
    assert_eq!(total(&m, "nimbus_async_retries_total", &[]), 0.0);
    // Each event's first attempt came soon after it was accepted.
    for f in ["async-dead", "async-dlq-error"] {
        assert_eq!(
            value(
                &m,
                "nimbus_async_event_age_seconds_count",
                &[("function", f)]
            ),
            1.0,
            "{text}"
        );
        assert!(value(&m, "nimbus_async_event_age_seconds_sum", &[("function", f)]) < 30.0);
    }
    assert_eq!(
        value(
            &m,
            "nimbus_async_destination_failures_total",
            &[("function", "async-dlq-error")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "nimbus_dead_letter_errors_total",
            &[("function", "async-dlq-error")]
        ),
        1.0
    );

    // The API by route template, never a raw path.
    let invoke_op = "POST /2015-03-31/functions/:name/invocations";
    let api = |op: &str, status: &str| {
        value(
            &m,
            "nimbus_api_requests_total",
            &[("operation", op), ("status", status)],
        )
    };
    // ok ×4, fails, slow, broken, gone: 200; zero: 429; two events: 202.
    assert_eq!(api(invoke_op, "200"), 8.0, "{text}");
    assert_eq!(api(invoke_op, "429"), 1.0, "{text}");
    assert_eq!(api(invoke_op, "202"), 2.0, "{text}");
    assert_eq!(api("GET /fn/:name/", "200"), 1.0, "{text}");
    assert_eq!(
        value(
            &m,
            "nimbus_api_request_duration_seconds_count",
            &[("operation", invoke_op)]
        ),
        11.0
    );
    assert!(!text.contains("/fn/ok/\""), "a raw path as a label: {text}");

    // A deleted function's series are gone.
    assert!(!text.contains("function=\"gone\""), "{text}");

    // The process.
    assert!(value(&m, "process_cpu_seconds_total", &[]) > 0.0, "{text}");
    assert!(
        value(&m, "process_resident_memory_bytes", &[]) > 1e6,
        "{text}"
    );
    assert!(value(&m, "process_open_fds", &[]) >= 3.0, "{text}");

    // The main listener serves the same registry (auth is off here).
    let main = parse(&scrape(&s, &s.url("/metrics")));
    assert_eq!(total(&main, "nimbus_invocations_total", &[]), 12.0);
    // The metrics listener serves nothing else.
    let r = s
        .http
        .get(format!("http://{listen}/v1/health"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let body: Value = r.json().unwrap();
    assert_eq!(body["Type"], "User", "{body}");
    assert!(s.healthy(), "{}", s.log());
}

#[test]
fn the_main_listener_serves_metrics_to_keys_allowed_get_metrics() {
    let s = Server::start_with_auth(&[]);
    let admin = s.admin();
    let key = |name: &str, action: &str| {
        s.create_key(
            name,
            json!({"Statement": [{"Effect": "Allow", "Action": [action], "Resource": ["*"]}]}),
        )
    };
    let scraper = key("scraper", "nimbus:GetMetrics");
    let reader = key("reader", "lambda:Get*");

    // Unsigned: refused.
    let r = s.http.get(s.url("/metrics")).send().unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Signed by a key without nimbus:GetMetrics: refused.
    let r = s.signed("GET", "/metrics", b"", &reader);
    assert_eq!(r.status().as_u16(), 403);
    let body: Value = r.json().unwrap();
    assert_eq!(body["type"], "AccessDeniedException", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("nimbus:GetMetrics"),
        "{body}"
    );
    // The admin and the scraper may.
    for creds in [&admin, &scraper] {
        let r = s.signed("GET", "/metrics", b"", creds);
        assert_eq!(r.status().as_u16(), 200);
        let text = r.text().unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        let m = parse(&text);
        assert!(value(&m, "process_open_fds", &[]) >= 3.0, "{text}");
    }
    // The refusals were counted, by route template.
    let text = s.signed("GET", "/metrics", b"", &scraper).text().unwrap();
    let m = parse(&text);
    assert_eq!(
        value(
            &m,
            "nimbus_api_requests_total",
            &[("operation", "GET /metrics"), ("status", "403")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "nimbus_api_requests_total",
            &[("operation", "GET /metrics"), ("status", "200")]
        ),
        2.0,
        "{text}"
    );
}

#[test]
fn a_cold_start_from_a_stem_cell_is_labelled_stem_true() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let s = Server::start(&["--metrics-listen", &listen]);
    s.deploy("stemmed", python_cfg("app.handler"), &[("app.py", OK)]);
    wait_for_stem_cells(&s, "python");
    s.invoke("stemmed", "{}").ok();
    s.invoke("stemmed", "{}").ok();
    let text = scrape(&s, &format!("http://{listen}/metrics"));
    let m = parse(&text);
    let cold = |stem: &str| {
        value(
            &m,
            "nimbus_cold_starts_total",
            &[("function", "stemmed"), ("stem", stem)],
        )
    };
    assert_eq!((cold("true"), cold("false")), (1.0, 0.0), "{text}");
    // The pool refills after the take: soon a python stem cell is starting or idle.
    let mut last = String::new();
    let refilled = eventually(Duration::from_secs(20), || {
        last = scrape(&s, &format!("http://{listen}/metrics"));
        total(&parse(&last), "nimbus_stem_cells", &[("runtime", "python")]) >= 1.0
    });
    assert!(refilled, "{last}");
    // Its one instance waits for work; stem cells are not function instances.
    assert_eq!(
        value(&m, "nimbus_instances", &[("state", "idle")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "nimbus_instances", &[("state", "busy")]),
        0.0,
        "{text}"
    );
    assert_eq!(
        value(
            &m,
            "nimbus_invocations_total",
            &[
                ("function", "stemmed"),
                ("trigger", "api"),
                ("outcome", "success")
            ]
        ),
        2.0
    );
}

/// Every commit to an embedded database is timed under its name: a deploy commits to the
/// registry, an async event to events.db; `/v1/ready` shows each database's commits of the
/// last minute. On PostgreSQL (`NIMBUS_TEST_BACKEND=postgres`) every store commits to the
/// one database, timed as `db="postgres"`, and no SQLite database is written.
#[test]
fn store_commits_are_timed_per_database() {
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Server::start(&["--metrics-listen", &listen, "--stem-cells", "off"]);
    let url = format!("http://{listen}/metrics");
    let commits =
        |m: &[Sample], db: &str| value(m, "nimbus_store_write_seconds_count", &[("db", db)]);
    let (registry, events) = if test_backend_is_postgres() {
        ("postgres", "postgres")
    } else {
        ("registry", "events")
    };
    let before = parse(&scrape(&s, &url));
    s.deploy("timed", python_cfg("app.handler"), &[("app.py", OK)]);
    if test_backend_is_postgres() {
        // The deploy's commits are timed before the event is sent, the event's after.
        let mut text = String::new();
        let grew = eventually(Duration::from_secs(10), || {
            text = scrape(&s, &url);
            commits(&parse(&text), "postgres") > commits(&before, "postgres")
        });
        assert!(grew, "the deploy's commits: {text}");
    }
    let deployed = parse(&scrape(&s, &url));
    send_event(&s, "timed");
    let mut text = String::new();
    let grew = eventually(Duration::from_secs(10), || {
        text = scrape(&s, &url);
        let m = parse(&text);
        commits(&m, registry) > commits(&before, registry)
            && commits(&m, events) > commits(&deployed, events)
    });
    assert!(grew, "{text}");
    strict_parse(&text);
    let m = parse(&text);
    if test_backend_is_postgres() {
        for db in ["registry", "events", "queues", "bus", "logs", "secrets"] {
            assert!(
                !text.contains(&format!("nimbus_store_write_seconds_count{{db=\"{db}\"}}")),
                "{db}: a SQLite database was written on PostgreSQL: {text}"
            );
        }
    }
    let hist = m
        .iter()
        .find(|x| x.metric == "nimbus_store_write_seconds" && x.labels.get("db") == Some(registry))
        .expect("the registry's histogram");
    let PValue::Histogram(buckets) = &hist.value else {
        panic!("{hist:?}")
    };
    let inf = buckets
        .iter()
        .find(|b| b.less_than == f64::INFINITY)
        .unwrap();
    assert_eq!(inf.count, commits(&m, registry), "{text}");
    assert!(value(&m, "nimbus_store_write_seconds_sum", &[("db", registry)]) > 0.0);

    let mut ready = Value::Null;
    let shown = eventually(Duration::from_secs(10), || {
        ready = s.get_json("/v1/ready").1;
        let stores = ready["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["name"] == "stores"))
            .cloned()
            .unwrap_or_default();
        stores["value"]["commits"][registry]["count"].as_u64() >= Some(1)
            && stores["value"]["commits"][events]["max_ms"].as_f64() > Some(0.0)
    });
    assert!(shown, "{ready}");
}

/// `/metrics` (and the other prefixes Nimbus took after routes were first stored) cannot be
/// a user route: the deploy is refused by name, and the server keeps serving.
#[test]
fn a_route_under_a_nimbus_path_is_refused_at_deploy() {
    let s = Server::start(&[]);
    for route in ["GET /metrics", "ANY /2018-10-31/layers/{x+}"] {
        let mut cfg = node_cfg("index.handler");
        cfg["routes"] = json!([route]);
        let (code, v) = s.deploy_zip(
            "shadowed",
            cfg,
            &zip_files(&[("index.js", "exports.handler = async () => 'mine';")]),
        );
        assert_eq!(code, 400, "{route}: {v}");
        assert!(v.to_string().contains("reserved by Nimbus"), "{route}: {v}");
    }
    assert!(s.healthy(), "{}", s.log());
}

/// The gauges read at each scrape: the async backlog per function (the dispatcher is
/// stalled by the test hook, so events stay pending), a queue's visible, in-flight and
/// delayed messages and its oldest message's age, the account's unreserved concurrency,
/// instances by state and the databases' sizes. A deleted queue's series go with it.
#[test]
fn state_gauges_show_backlogs_queue_depths_and_database_sizes() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let s = Server::start_with_env(
        &["--metrics-listen", &listen, "--stem-cells", "off"],
        &[("NIMBUS_TEST_STALL_DISPATCHER", "1")],
    );
    let url = format!("http://{listen}/metrics");
    s.deploy("later", python_cfg("app.handler"), &[("app.py", OK)]);
    s.deploy("reserved", python_cfg("app.handler"), &[("app.py", OK)]);
    let (code, v) = s.put_json(
        "/2017-10-31/functions/reserved/concurrency",
        &json!({ "ReservedConcurrentExecutions": 7 }),
    );
    assert_eq!(code, 200, "{v}");
    // The dispatcher's first pass is over once health reports it stuck-free; events sent
    // from now on wait.
    std::thread::sleep(Duration::from_millis(500));
    send_event(&s, "later");
    send_event(&s, "later");
    assert_eq!(s.put_json("/v1/queues/jobs", &json!({})).0, 200);
    assert_eq!(s.put_json("/v1/queues/empty", &json!({})).0, 200);
    let send = |body: Value| {
        let r = s
            .http
            .post(s.url("/v1/queues/jobs/messages"))
            .json(&body)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    };
    send(json!({"entries": [{"body": "a"}, {"body": "b"}, {"body": "c"}]}));
    send(json!({"entries": [{"body": "d", "delay_seconds": 600}]}));
    let r = s
        .http
        .post(s.url("/v1/queues/jobs/receive"))
        .json(&json!({"max": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    std::thread::sleep(Duration::from_millis(1100));

    let text = scrape(&s, &url);
    strict_parse(&text);
    let m = parse(&text);
    assert_eq!(
        value(&m, "nimbus_async_backlog", &[("function", "later")]),
        2.0,
        "{text}"
    );
    let q = |queue: &str, state: &str| {
        value(
            &m,
            "nimbus_queue_messages",
            &[("queue", queue), ("state", state)],
        )
    };
    assert_eq!(
        (
            q("jobs", "visible"),
            q("jobs", "in_flight"),
            q("jobs", "delayed")
        ),
        (2.0, 1.0, 1.0),
        "{text}"
    );
    assert_eq!(q("empty", "visible"), 0.0, "{text}");
    assert!(
        text.contains(r#"nimbus_queue_messages{queue="empty",state="visible"} 0"#),
        "{text}"
    );
    let age = value(
        &m,
        "nimbus_queue_oldest_message_age_seconds",
        &[("queue", "jobs")],
    );
    assert!((1.0..60.0).contains(&age), "{age}: {text}");
    assert_eq!(
        value(
            &m,
            "nimbus_queue_oldest_message_age_seconds",
            &[("queue", "empty")]
        ),
        0.0
    );
    // The account's limit less the reservation of 7, nothing running.
    let (_, account) = s.get_json("/2016-08-19/account-settings");
    let unreserved = account["AccountLimit"]["UnreservedConcurrentExecutions"]
        .as_f64()
        .unwrap();
    assert_eq!(
        value(&m, "nimbus_unreserved_concurrency_remaining", &[]),
        unreserved,
        "{account} {text}"
    );
    assert_eq!(
        value(&m, "nimbus_instances", &[("state", "initializing")]),
        0.0,
        "{text}"
    );
    for db in ["registry", "events", "queues", "bus", "logs", "secrets"] {
        assert!(
            value(&m, "nimbus_database_size_bytes", &[("database", db)]) > 0.0,
            "{db}: {text}"
        );
    }
    // A deleted queue leaves no series.
    let r = s.http.delete(s.url("/v1/queues/empty")).send().unwrap();
    assert!(r.status().is_success());
    let text = scrape(&s, &url);
    assert!(!text.contains(r#"queue="empty""#), "{text}");
}

/// The event sources' counters after a scripted mix: PutEvents with a matching, a
/// non-matching and an invalid entry; a rule whose queue target is gone; a one-time
/// schedule firing; a queue batch of two records with one partial failure.
#[test]
fn event_source_counters_follow_the_bus_schedules_and_mappings() {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let s = Server::start(&["--metrics-listen", &listen]);
    let url = format!("http://{listen}/metrics");
    s.deploy("rec", python_cfg("app.handler"), &[("app.py", OK)]);
    let half = "def handler(event, context):\n    ids = [r['messageId'] for r in event['Records'] if r['body'] == 'bad']\n    return {'batchItemFailures': [{'itemIdentifier': i} for i in ids]}\n";
    s.deploy("half", python_cfg("app.handler"), &[("app.py", half)]);
    assert_eq!(s.put_json("/v1/queues/gone-q", &json!({})).0, 200);
    let rule = |name: &str, body: Value| {
        let (code, v) = s.put_json(&format!("/v1/buses/default/rules/{name}"), &body);
        assert_eq!(code, 200, "{v}");
    };
    rule(
        "orders",
        json!({"pattern": {"source": ["shop"]}, "targets": ["rec"]}),
    );
    rule(
        "to-gone",
        json!({"pattern": {"source": ["audit"]}, "targets": ["arn:aws:sqs:us-east-1:000000000000:gone-q"]}),
    );
    let r = s.http.delete(s.url("/v1/queues/gone-q")).send().unwrap();
    assert!(r.status().is_success());
    // A one-time schedule two seconds from now (UTC): exactly one firing, on time.
    let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let at = format!(
        "at({:04}-{:02}-{:02}T{:02}:{:02}:{:02})",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    );
    rule("once", json!({"schedule": at, "targets": ["rec"]}));

    let entries = json!({"Entries": [
        {"Source": "shop", "DetailType": "order", "Detail": "{\"n\":1}"},
        {"Source": "other", "DetailType": "x", "Detail": "{}"},
        {"Source": "audit", "DetailType": "x", "Detail": "{}"},
        {"Source": "shop", "DetailType": "bad", "Detail": "not json"},
    ]});
    let r = s
        .http
        .post(s.url("/v1/buses/default/events"))
        .json(&entries)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let out: Value = r.json().unwrap();
    assert_eq!(out["FailedEntryCount"], 2, "{out}");

    // Two records sent before the mapping exists arrive in one batch; one fails.
    assert_eq!(s.put_json("/v1/queues/work", &json!({})).0, 200);
    let r = s
        .http
        .post(s.url("/v1/queues/work/messages"))
        .json(&json!({"entries": [{"body": "good"}, {"body": "bad"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let body = json!({"FunctionName": "half", "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:work",
                      "BatchSize": 10, "FunctionResponseTypes": ["ReportBatchItemFailures"]});
    let r = s
        .http
        .post(s.url("/2015-03-31/event-source-mappings"))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202, "{}", r.text().unwrap());

    let mut m = Vec::new();
    let done = eventually(Duration::from_secs(30), || {
        m = parse(&scrape(&s, &url));
        total(&m, "nimbus_mapping_batches_total", &[]) >= 1.0
            && total(&m, "nimbus_schedule_firings_total", &[]) >= 1.0
    });
    assert!(done, "{m:#?}\n{}", s.log());
    let text = scrape(&s, &url);
    strict_parse(&text);
    let m = parse(&text);
    let bus = &[("bus", "default")];
    assert_eq!(value(&m, "nimbus_bus_events_put_total", bus), 3.0, "{text}");
    let rule_of = |f: &str, r: &str| value(&m, f, &[("bus", "default"), ("rule", r)]);
    assert_eq!(rule_of("nimbus_bus_matches_total", "orders"), 1.0, "{text}");
    assert_eq!(
        rule_of("nimbus_bus_matches_total", "to-gone"),
        0.0,
        "{text}"
    );
    assert_eq!(
        rule_of("nimbus_bus_failed_targets_total", "to-gone"),
        1.0,
        "{text}"
    );
    assert_eq!(
        rule_of("nimbus_schedule_firings_total", "once"),
        1.0,
        "{text}"
    );
    assert_eq!(rule_of("nimbus_schedule_late_firings_total", "once"), 0.0);
    assert_eq!(total(&m, "nimbus_schedule_missed_firings_total", &[]), 0.0);
    let mapping = &[("queue", "work"), ("function", "half")];
    assert_eq!(
        value(&m, "nimbus_mapping_batches_total", mapping),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "nimbus_mapping_records_total", mapping),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&m, "nimbus_mapping_failed_records_total", mapping),
        1.0,
        "{text}"
    );
    let age = value(&m, "nimbus_mapping_iterator_age_seconds", mapping);
    assert!((0.0..30.0).contains(&age), "{age}: {text}");
    // The bus and schedule deliveries are labelled by their source.
    let mut last = String::new();
    let labelled = eventually(Duration::from_secs(10), || {
        last = scrape(&s, &url);
        let m = parse(&last);
        let rec = |trigger: &str| {
            value(
                &m,
                "nimbus_invocations_total",
                &[
                    ("function", "rec"),
                    ("trigger", trigger),
                    ("outcome", "success"),
                ],
            )
        };
        rec("bus") == 1.0 && rec("schedule") == 1.0
    });
    assert!(labelled, "{last}");
}

#[test]
fn with_metrics_off_invocations_work_and_the_metrics_endpoints_say_off() {
    let s = Server::start(&["--metrics", "off", "--stem-cells", "off"]);
    let mut cfg = python_cfg("app.handler");
    cfg["url"] = json!(true);
    s.deploy("ok", cfg, &[("app.py", OK)]);
    s.deploy("fails", python_cfg("app.handler"), &[("app.py", FAILS)]);
    assert_eq!(s.invoke("ok", "{}").ok(), json!({"ok": true})); // cold
    assert_eq!(s.invoke("ok", "{}").ok(), json!({"ok": true})); // warm
    assert!(s.invoke("fails", "{}").function_error());
    let r = s.http.get(s.url("/fn/ok/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);

    for path in [
        "/metrics",
        "/v1/functions/ok/metrics?since=1h",
        "/v1/metrics/summary",
    ] {
        let (status, v) = s.get_json(path);
        assert_eq!(status, 404, "{path}: {v}");
        assert_eq!(v["type"], "ResourceNotFoundException", "{path}: {v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("metrics are off on this server (nimbus serve --metrics off)"),
            "{path}: {v}"
        );
    }
    assert!(s.healthy(), "{}", s.log());
}

#[test]
fn metrics_off_refuses_a_metrics_listener() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(nimbus_bin())
        .args(["serve", "--auth", "off", "--metrics", "off"])
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--metrics-listen", &free_port().to_string()])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-listen needs metrics on"), "{err}");
}
