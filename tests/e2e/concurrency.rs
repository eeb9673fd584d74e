//! Account and reserved concurrency, the scale-out rate and the bounded queue, measured
//! from inside the functions: each invocation reports its instance and when it started and
//! ended (the host's wall clock, shared by every sandbox), so the test can count how many
//! ran at once. Nothing here asserts a duration.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// Sleeps `e.sleep` ms; answers its instance and its start and end times (ms).
const TIMED_NODE: &str = "exports.handler = async (e) => { const start = Date.now(); await new Promise(r => setTimeout(r, e.sleep || 0)); return { id: process.env.AWS_LAMBDA_LOG_STREAM_NAME, start, end: Date.now() }; };";

/// One call's outcome: `Ok((instance, start, end))` or `Err((status, Reason))`.
type Outcome = Result<(String, i64, i64), (u16, String)>;

fn call(s: &Server, function: &str, sleep_ms: u64) -> Outcome {
    let r = s.invoke(function, &json!({ "sleep": sleep_ms }).to_string());
    if r.status == 200 {
        let v = r.ok();
        return Ok((
            v["id"].as_str().unwrap().to_string(),
            v["start"].as_i64().unwrap(),
            v["end"].as_i64().unwrap(),
        ));
    }
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert!(r.header("retry-after").is_some(), "429 without Retry-After");
    let reason = r.json()["Reason"].as_str().unwrap_or_default().to_string();
    Err((r.status, reason))
}

/// The most invocations that ran at once (an end and a start in the same millisecond do
/// not overlap).
fn peak<'a>(runs: impl IntoIterator<Item = &'a (String, i64, i64)>) -> usize {
    let mut ev: Vec<(i64, i32)> = Vec::new();
    for (_, start, end) in runs {
        ev.push((*start, 1));
        ev.push((*end, -1));
    }
    ev.sort();
    let (mut cur, mut max) = (0i32, 0i32);
    for (_, d) in ev {
        cur += d;
        max = max.max(cur);
    }
    max as usize
}

fn reserve(s: &Server, function: &str, n: u32) -> (u16, Value) {
    s.put_json(
        &format!("/2017-10-31/functions/{function}/concurrency"),
        &json!({ "ReservedConcurrentExecutions": n }),
    )
}

/// Runs `n` concurrent calls to each function; outcomes per function.
fn storm(s: &Server, calls: &[(&str, usize, u64)]) -> HashMap<String, Vec<Outcome>> {
    let all: Vec<(String, Outcome)> = std::thread::scope(|sc| {
        let hs: Vec<_> = calls
            .iter()
            .flat_map(|&(f, n, sleep)| (0..n).map(move |_| (f, sleep)).collect::<Vec<_>>())
            .map(|(f, sleep)| sc.spawn(move || (f.to_string(), call(s, f, sleep))))
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut out: HashMap<String, Vec<Outcome>> = HashMap::new();
    for (f, o) in all {
        out.entry(f).or_default().push(o);
    }
    out
}

fn runs(o: &[Outcome]) -> Vec<(String, i64, i64)> {
    o.iter().filter_map(|o| o.as_ref().ok().cloned()).collect()
}

fn reasons(o: &[Outcome]) -> Vec<String> {
    o.iter()
        .filter_map(|o| o.as_ref().err().map(|e| e.1.clone()))
        .collect()
}

#[test]
fn account_and_reserved_concurrency_are_enforced() {
    // Invocations last 2 s; a request that cannot get a slot within 300 ms is throttled.
    let s = Server::start(&["--account-concurrency", "6", "--queue-timeout-ms", "300"]);
    for f in ["res", "a", "b", "zero"] {
        s.deploy(f, node_cfg("index.handler"), &[("index.js", TIMED_NODE)]);
    }
    // The whole account cannot be reserved beyond its size.
    let (status, body) = reserve(&s, "res", 7);
    assert_eq!(status, 400, "{body}");
    assert_eq!(reserve(&s, "res", 2).0, 200);
    assert_eq!(reserve(&s, "zero", 0).0, 200);
    let (_, settings) = s.get_json("/2016-08-19/account-settings");
    assert_eq!(settings["AccountLimit"]["ConcurrentExecutions"], 6);
    assert_eq!(
        settings["AccountLimit"]["UnreservedConcurrentExecutions"],
        4
    );

    // Reserved 0: always throttled, with the reservation's reason.
    assert_eq!(
        call(&s, "zero", 0).unwrap_err().1,
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );

    let out = storm(&s, &[("res", 8, 2000), ("a", 8, 2000), ("b", 8, 2000)]);
    let res = runs(&out["res"]);
    let unreserved: Vec<_> = runs(&out["a"]).into_iter().chain(runs(&out["b"])).collect();
    let everything: Vec<_> = res.iter().chain(&unreserved).cloned().collect();
    assert!(!res.is_empty() && !unreserved.is_empty(), "{out:?}");
    assert!(peak(&res) <= 2, "reservation exceeded: {res:?}");
    assert!(
        peak(&unreserved) <= 4,
        "unreserved pool exceeded: {unreserved:?}"
    );
    assert!(peak(&everything) <= 6, "account exceeded: {everything:?}");
    // 8 calls of 2 s for 2 slots: some were throttled, with the reservation's reason.
    let r = reasons(&out["res"]);
    assert!(!r.is_empty(), "{out:?}");
    assert!(
        r.iter()
            .all(|r| r == "ReservedFunctionConcurrentInvocationLimitExceeded"),
        "{r:?}"
    );
    let r: Vec<_> = reasons(&out["a"])
        .into_iter()
        .chain(reasons(&out["b"]))
        .collect();
    assert!(!r.is_empty(), "{out:?}");
    assert!(
        r.iter().all(|r| r == "ConcurrentInvocationLimitExceeded"),
        "{r:?}"
    );

    // All done: nothing holds a slot or waits.
    let (_, view) = s.get_json("/v1/functions/res");
    assert_eq!(view["pool"]["running"], 0, "{view}");
    assert_eq!(view["pool"]["waiting"], 0, "{view}");

    // Without the reservation, the account is shared again: 6 at once, no more.
    let r = s
        .http
        .delete(s.url("/2017-10-31/functions/res/concurrency"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (_, settings) = s.get_json("/2016-08-19/account-settings");
    assert_eq!(
        settings["AccountLimit"]["UnreservedConcurrentExecutions"],
        6
    );
    let out = storm(&s, &[("res", 5, 2000), ("a", 5, 2000)]);
    let all: Vec<_> = runs(&out["res"])
        .into_iter()
        .chain(runs(&out["a"]))
        .collect();
    assert!(peak(&all) <= 6, "account exceeded: {all:?}");
    for o in out.values() {
        assert!(reasons(o)
            .iter()
            .all(|r| r == "ConcurrentInvocationLimitExceeded"));
    }
}

#[test]
fn a_burst_on_a_cold_function_stays_within_its_limit() {
    let s = Server::start(&["--max-scale-rate", "5:5"]);
    let mut cfg = node_cfg("index.handler");
    cfg["concurrency"] = json!(20);
    s.deploy("burst", cfg, &[("index.js", TIMED_NODE)]);
    let out = storm(&s, &[("burst", 200, 200)]);
    let ok = runs(&out["burst"]);
    assert!(!ok.is_empty());
    let instances: HashSet<_> = ok.iter().map(|r| r.0.clone()).collect();
    assert!(instances.len() <= 20, "{} instances", instances.len());
    assert!(peak(&ok) <= 20, "more than 20 at once");
    // Every other call got a documented throttle.
    for r in reasons(&out["burst"]) {
        assert!(
            r == "ConcurrentInvocationLimitExceeded" || r == "FunctionInvocationRateLimitExceeded",
            "{r}"
        );
    }
}

#[test]
fn async_events_go_through_the_same_limits_and_throttles_are_retried() {
    // Unsandboxed so every instance can append to the same host file.
    let out = tempfile::NamedTempFile::new().unwrap();
    let s = Server::start_unsandboxed(&["--time-scale", "100", "--queue-timeout-ms", "100"]);
    let mut cfg = node_cfg("index.handler");
    cfg["env"] = json!({ "OUT": out.path().to_str().unwrap() });
    s.deploy("q", cfg, &[("index.js", "const fs = require('fs'); exports.handler = async (e) => { const start = Date.now(); await new Promise(r => setTimeout(r, 300)); fs.appendFileSync(process.env.OUT, `${process.env.AWS_LAMBDA_LOG_STREAM_NAME} ${start} ${Date.now()}\\n`); return e.n; };")]);
    assert_eq!(reserve(&s, "q", 2).0, 200);
    let n = 12;
    for i in 0..n {
        let r = s.invoke_with(
            "q",
            format!(r#"{{"n":{i}}}"#).into_bytes(),
            &[("X-Amz-Invocation-Type", "Event")],
        );
        assert_eq!(r.status, 202, "{}", r.body);
    }
    // Meanwhile synchronous calls compete for the same two slots.
    let sync = storm(&s, &[("q", 6, 0)]);
    let done = eventually(std::time::Duration::from_secs(120), || {
        s.get_json("/v1/functions/q/events?limit=100").1["counts"]["succeeded"].as_u64() == Some(n)
    });
    assert!(done, "{}", s.get_json("/v1/functions/q/events?limit=100").1);
    // Deliveries beyond the reservation were throttled by the pool and retried.
    let events = s.get_json("/v1/functions/q/events?limit=100").1;
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["last_error"]
                .as_str()
                .is_some_and(|m| m.contains("reserved concurrency"))),
        "{events}"
    );
    let runs: Vec<(String, i64, i64)> = std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(|l| {
            let p: Vec<&str> = l.split(' ').collect();
            (
                p[0].to_string(),
                p[1].parse().unwrap(),
                p[2].parse().unwrap(),
            )
        })
        .collect();
    assert!(runs.len() >= n as usize, "{runs:?}");
    assert!(peak(&runs) <= 2, "reservation exceeded: {runs:?}");
    let instances: HashSet<_> = runs.iter().map(|r| &r.0).collect();
    assert!(instances.len() <= 2, "{instances:?}");
    for r in reasons(&sync["q"]) {
        assert_eq!(r, "ReservedFunctionConcurrentInvocationLimitExceeded");
    }
}
