//! Asynchronous invocation through the real binary: retries with growing delays into the
//! dead-letter queue, destinations, maximum event age, idempotency, the circuit breaker,
//! and at-least-once delivery across `kill -9`.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

fn submit(s: &Server, name: &str, payload: &str, key: Option<&str>) -> (u16, String, bool) {
    let mut headers = vec![("X-Amz-Invocation-Type", "Event")];
    if let Some(k) = key {
        headers.push(("X-Nimbus-Idempotency-Key", k));
    }
    let r = s.invoke_with(name, payload.as_bytes().to_vec(), &headers);
    let id = r.header("x-amzn-requestid").unwrap_or_default().to_string();
    (
        r.status,
        id,
        r.header("x-nimbus-idempotent-replay").is_some(),
    )
}

fn events(s: &Server, name: &str) -> Value {
    s.get_json(&format!("/v1/functions/{name}/events?limit=10000"))
        .1
}

fn event(s: &Server, name: &str, id: &str) -> Value {
    events(s, name)["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn put_config(s: &Server, name: &str, cfg: Value) {
    let r = s
        .http
        .put(s.url(&format!("/2019-09-25/functions/{name}/event-invoke-config")))
        .json(&cfg)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
}

fn log_lines(s: &Server, name: &str) -> Vec<Value> {
    s.get_json(&format!("/v1/functions/{name}/logs?limit=10000"))
        .1["logs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

const FAILING: &str =
    "exports.handler = async (e) => { throw new Error('always fails ' + JSON.stringify(e)); };";
const RECORDER: &str =
    "exports.handler = async (e) => { console.log('GOT ' + JSON.stringify(e)); return 'ok'; };";

fn arn(name: &str) -> String {
    format!("arn:aws:lambda:us-east-1:000000000000:function:{name}")
}

#[test]
fn failing_event_is_retried_with_growing_delays_then_dead_lettered() {
    let s = Server::start(&["--retry-base-ms", "400"]);
    s.deploy("fails", node_cfg("index.handler"), &[("index.js", FAILING)]);
    s.deploy("dlq", node_cfg("index.handler"), &[("index.js", RECORDER)]);
    put_config(
        &s,
        "fails",
        json!({"MaximumRetryAttempts": 2, "DestinationConfig": {"OnFailure": {"Destination": arn("dlq")}}}),
    );
    let (status, id, _) = submit(&s, "fails", r#"{"order":7}"#, None);
    assert_eq!(status, 202);
    assert!(!id.is_empty());
    assert!(
        eventually(Duration::from_secs(20), || event(&s, "fails", &id)
            ["status"]
            == "dead"),
        "{}",
        events(&s, "fails")
    );
    let ev = event(&s, "fails", &id);
    assert_eq!(ev["attempts"], 3, "first attempt and two retries: {ev}");
    assert!(
        ev["last_error"].as_str().unwrap().contains("always fails"),
        "{ev}"
    );
    // Three attempts, each wait (from an attempt's REPORT to the next START) longer than
    // the one before (backoff 400 ms then 800 ms, ±20%). Measured from the REPORT, not the
    // START: the first attempt's cold start is not part of the backoff.
    let at = |prefix: &str| -> Vec<i64> {
        log_lines(&s, "fails")
            .iter()
            .filter(|l| l["line"].as_str().unwrap().starts_with(prefix))
            .map(|l| l["ts_ms"].as_i64().unwrap())
            .collect()
    };
    // Log lines reach the store shortly after the event's status (they are committed in
    // batches): wait for the last attempt's REPORT.
    assert!(
        eventually(Duration::from_secs(10), || at("REPORT").len() >= 3),
        "{:?}",
        at("REPORT")
    );
    let (starts, reports) = (at("START"), at("REPORT"));
    assert_eq!(starts.len(), 3, "{starts:?}");
    assert_eq!(reports.len(), 3, "{reports:?}");
    let (d1, d2) = (starts[1] - reports[0], starts[2] - reports[1]);
    assert!(
        d1 >= 300 && d2 >= 600 && d2 > d1,
        "delays grow: {d1} ms then {d2} ms"
    );
    // The failure destination received Lambda's destination record.
    assert!(eventually(Duration::from_secs(10), || log_lines(&s, "dlq")
        .iter()
        .any(|l| l["line"]
            .as_str()
            .unwrap()
            .contains("RetriesExhausted"))));
    let line = log_lines(&s, "dlq")
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_string())
        .find(|l| l.contains("GOT "))
        .unwrap();
    let record: Value = serde_json::from_str(&line[line.find("GOT ").unwrap() + 4..]).unwrap();
    assert_eq!(record["requestContext"]["requestId"], id.as_str());
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(record["requestPayload"], json!({"order": 7}));
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    // The CLI lists it as dead.
    let out = cli_ok(&s.cli(&["events", "fails", "--status", "dead"])).unwrap();
    assert!(out.contains(&id) && out.contains("dead"), "{out}");
}

#[test]
fn success_goes_to_the_success_destination() {
    let s = Server::start(&[]);
    s.deploy(
        "works",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async (e) => ({ doubled: e.n * 2 });",
        )],
    );
    s.deploy("sink", node_cfg("index.handler"), &[("index.js", RECORDER)]);
    put_config(
        &s,
        "works",
        json!({"DestinationConfig": {"OnSuccess": {"Destination": arn("sink")}}}),
    );
    let out = cli_ok(&s.cli(&["invoke", "works", "--async", "--data", r#"{"n":21}"#])).unwrap();
    let id = out.trim().strip_prefix("queued ").unwrap().to_string();
    assert!(eventually(Duration::from_secs(10), || event(
        &s, "works", &id
    )["status"]
        == "succeeded"));
    assert!(eventually(Duration::from_secs(10), || log_lines(
        &s, "sink"
    )
    .iter()
    .any(|l| l["line"].as_str().unwrap().contains("GOT "))));
    let line = log_lines(&s, "sink")
        .iter()
        .map(|l| l["line"].as_str().unwrap().to_string())
        .find(|l| l.contains("GOT "))
        .unwrap();
    let record: Value = serde_json::from_str(&line[line.find("GOT ").unwrap() + 4..]).unwrap();
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["responsePayload"], json!({"doubled": 42}));
    assert_eq!(record["responseContext"]["statusCode"], 200);
}

#[test]
fn an_event_older_than_its_maximum_age_is_never_delivered() {
    // --time-scale 1000 (test only): a 60 s maximum age passes in 60 ms.
    let s = Server::start(&["--time-scale", "1000"]);
    s.deploy("busy", node_cfg("index.handler"), &[("index.js", RECORDER)]);
    put_config(&s, "busy", json!({"MaximumEventAgeInSeconds": 60}));
    // Reserved concurrency 0: every delivery attempt is throttled until the event is too old.
    let r = s
        .http
        .put(s.url("/2017-10-31/functions/busy/concurrency"))
        .json(&json!({"ReservedConcurrentExecutions": 0}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, id, _) = submit(&s, "busy", "{}", None);
    assert_eq!(status, 202);
    assert!(
        eventually(Duration::from_secs(10), || event(&s, "busy", &id)["status"]
            == "expired"),
        "{}",
        events(&s, "busy")
    );
    assert!(
        log_lines(&s, "busy")
            .iter()
            .all(|l| !l["line"].as_str().unwrap().starts_with("START")),
        "never ran"
    );
}

#[test]
fn idempotent_resubmission_runs_the_function_once() {
    let s = Server::start(&[]);
    s.deploy("once", node_cfg("index.handler"), &[("index.js", RECORDER)]);
    let (_, a, replay_a) = submit(&s, "once", r#"{"pay":1}"#, Some("order-42"));
    let (_, b, replay_b) = submit(&s, "once", r#"{"pay":1}"#, Some("order-42"));
    assert_eq!(a, b, "the original request id comes back");
    assert!(!replay_a && replay_b);
    assert!(eventually(Duration::from_secs(10), || event(
        &s, "once", &a
    )["status"]
        == "succeeded"));
    std::thread::sleep(Duration::from_millis(500));
    let runs = log_lines(&s, "once")
        .iter()
        .filter(|l| l["line"].as_str().unwrap().starts_with("START"))
        .count();
    assert_eq!(runs, 1);
    assert_eq!(events(&s, "once")["events"].as_array().unwrap().len(), 1);
}

#[test]
fn circuit_opens_on_repeated_failures_and_closes_after_recovery_losing_nothing() {
    let flag = tempfile::NamedTempFile::new().unwrap();
    let s = Server::start_unsandboxed(&[
        "--retry-base-ms",
        "100",
        "--circuit-threshold",
        "3",
        "--circuit-cooldown-ms",
        "1500",
    ]);
    let mut cfg = node_cfg("index.handler");
    cfg["env"] = json!({"FAIL_FLAG": flag.path().to_str().unwrap()});
    s.deploy("shaky", cfg, &[("index.js", "const fs = require('fs'); exports.handler = async (e) => { if (fs.existsSync(process.env.FAIL_FLAG)) throw new Error('down'); return e; };")]);
    put_config(&s, "shaky", json!({"MaximumRetryAttempts": 0}));
    let failing: Vec<String> = (0..3)
        .map(|i| submit(&s, "shaky", &format!(r#"{{"i":{i}}}"#), None).1)
        .collect();
    assert!(
        eventually(Duration::from_secs(10), || events(&s, "shaky")["circuit"]
            ["state"]
            == "open"),
        "{}",
        events(&s, "shaky")
    );
    // While open, new events queue up and are not attempted.
    let queued: Vec<String> = (3..8)
        .map(|i| submit(&s, "shaky", &format!(r#"{{"i":{i}}}"#), None).1)
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for id in &queued {
        assert_eq!(
            event(&s, "shaky", id)["attempts"],
            0,
            "paused while the circuit is open"
        );
    }
    // The function recovers; after the cool-down a probe closes the circuit and all queued events run.
    std::fs::remove_file(flag.path()).unwrap();
    assert!(
        eventually(Duration::from_secs(15), || queued
            .iter()
            .all(|id| event(&s, "shaky", id)["status"] == "succeeded")),
        "{}",
        events(&s, "shaky")
    );
    assert_eq!(events(&s, "shaky")["circuit"]["state"], "closed");
    for id in &failing {
        assert_eq!(
            event(&s, "shaky", id)["status"],
            "dead",
            "failed events are dead-lettered, not lost"
        );
    }
    let counts = &events(&s, "shaky")["counts"];
    assert_eq!(
        (counts["dead"].as_u64(), counts["succeeded"].as_u64()),
        (Some(3), Some(5))
    );

    // Dead events are redriven — one through the CLI, the others through the API — and
    // now succeed; a succeeded event cannot be redriven, an unknown one is not found.
    let out = s.cli(&["events", "shaky", "--redrive", &failing[0]]);
    assert!(cli_ok(&out).unwrap().contains("pending again"), "{out:?}");
    for id in &failing[1..] {
        let r = s
            .http
            .post(s.url(&format!("/v1/functions/shaky/events/{id}/redrive")))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().unwrap();
        assert_eq!(
            (v["id"].as_str(), v["attempts"].as_u64()),
            (Some(id.as_str()), Some(0))
        );
    }
    assert!(
        eventually(Duration::from_secs(15), || failing
            .iter()
            .all(|id| event(&s, "shaky", id)["status"] == "succeeded")),
        "{}",
        events(&s, "shaky")
    );
    let again = s
        .http
        .post(s.url(&format!("/v1/functions/shaky/events/{}/redrive", queued[0])))
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 409);
    let err: Value = again.json().unwrap();
    assert_eq!(err["type"], "ResourceConflictException", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains("succeeded"),
        "{err}"
    );
    let unknown = s
        .http
        .post(s.url("/v1/functions/shaky/events/no-such-event/redrive"))
        .send()
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let counts = &events(&s, "shaky")["counts"];
    assert_eq!(
        (counts["dead"].as_u64(), counts["succeeded"].as_u64()),
        (None, Some(8))
    );
}

#[test]
fn kill_9_mid_delivery_loses_no_acknowledged_event() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut s = Server::start_unsandboxed(&[]);
    let mut cfg = node_cfg("index.handler");
    cfg["env"] = json!({"OUT": out.path().to_str().unwrap()});
    cfg["concurrency"] = json!(4);
    // 20 ms per event on 4 instances (at most ~200 events/s): delivery cannot keep up with
    // the submissions, so the kill lands mid-delivery.
    s.deploy("sink", cfg, &[("index.js", "const fs = require('fs'); exports.handler = async (e) => { await new Promise(r => setTimeout(r, 20)); fs.appendFileSync(process.env.OUT, e.n + '\\n'); return e.n; };")]);
    let n = 1000;
    let mut acked = 0;
    for i in 0..n {
        let (status, _, _) = submit(&s, "sink", &format!(r#"{{"n":{i}}}"#), None);
        assert_eq!(status, 202);
        acked += 1;
    }
    // Let delivery get going, then kill -9 in the middle of it.
    assert!(eventually(
        Duration::from_secs(30),
        || std::fs::read_to_string(out.path()).unwrap().lines().count() > 50
    ));
    s.restart();
    let delivered_before_restart = std::fs::read_to_string(out.path()).unwrap().lines().count();
    assert!(
        delivered_before_restart < n,
        "the kill must land mid-delivery ({delivered_before_restart} of {n} done)"
    );
    let done = eventually(Duration::from_secs(120), || {
        let c = &events(&s, "sink")["counts"];
        c["succeeded"].as_u64().unwrap_or(0) + c["dead"].as_u64().unwrap_or(0) == acked
    });
    assert!(done, "{}", events(&s, "sink")["counts"]);
    let seen: std::collections::HashSet<u64> = std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let missing: Vec<u64> = (0..n as u64).filter(|i| !seen.contains(i)).collect();
    assert!(missing.is_empty(), "events never delivered: {missing:?}");
    eprintln!("{acked} acknowledged; {delivered_before_restart} delivered before kill -9; all {} delivered after restart (at-least-once)", seen.len());
}

#[test]
fn idempotent_sync_calls_return_the_stored_result() {
    let s = Server::start(&[]);
    const COUNTER: &str = "let n = 0; exports.handler = async (e) => { if (e.fail) throw new Error('no'); return { n: ++n }; };";
    s.deploy(
        "counter",
        node_cfg("index.handler"),
        &[("index.js", COUNTER)],
    );
    let key = [("X-Nimbus-Idempotency-Key", "charge-1")];
    let a = s.invoke_with("counter", b"{}".to_vec(), &key);
    let b = s.invoke_with("counter", b"{}".to_vec(), &key);
    assert_eq!(a.ok(), json!({"n": 1}));
    assert_eq!(
        b.ok(),
        json!({"n": 1}),
        "the stored result, not a second run"
    );
    assert_eq!(b.header("x-nimbus-idempotent-replay"), Some("true"));
    assert_eq!(a.header("x-amzn-requestid"), b.header("x-amzn-requestid"));
    assert_eq!(
        s.invoke("counter", "{}").ok(),
        json!({"n": 2}),
        "no key: runs"
    );
    // Failures are not remembered: the same key runs again.
    let f = [("X-Nimbus-Idempotency-Key", "charge-2")];
    assert!(s
        .invoke_with("counter", br#"{"fail":true}"#.to_vec(), &f)
        .function_error());
    assert_eq!(
        s.invoke_with("counter", b"{}".to_vec(), &f).ok(),
        json!({"n": 3})
    );

    // The manifest's idempotency_key takes the key from the event (sync and async).
    let mut cfg = node_cfg("index.handler");
    cfg["idempotency_key_path"] = json!("$.order.id");
    s.deploy("orders", cfg, &[("index.js", COUNTER)]);
    let o1 = r#"{"order":{"id":"o-1"}}"#;
    assert_eq!(s.invoke("orders", o1).ok(), json!({"n": 1}));
    assert_eq!(s.invoke("orders", o1).ok(), json!({"n": 1}));
    assert_eq!(
        s.invoke("orders", r#"{"order":{"id":"o-2"}}"#).ok(),
        json!({"n": 2})
    );
    let (_, a, _) = submit(&s, "orders", r#"{"order":{"id":"async-1"}}"#, None);
    let (_, b, replay) = submit(&s, "orders", r#"{"order":{"id":"async-1"}}"#, None);
    assert_eq!(a, b);
    assert!(replay);
}
