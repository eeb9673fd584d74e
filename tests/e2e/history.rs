//! Per-minute history through the real binary: a scripted mix (successes, function errors,
//! a timeout, a throttle) counted exactly in `GET /v1/functions/{name}/metrics` with
//! plausible percentiles, the current minute visible at once, minutes flushed to
//! `history.db` surviving `kill -9` and a graceful restart, `/v1/metrics/summary`,
//! `nimbus stats` and `nimbus top` (one snapshot when stdout is not a terminal), and a
//! deleted function's history deleted. The server runs under the test hook
//! `NIMBUS_TEST_MINUTE_MS` (a 2 s "minute").

use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

pub(crate) const MINUTE_MS: &str = "2000";

const MIX: &str = "import time\ndef handler(event, context):\n    if event.get('fail'):\n        raise ValueError('boom')\n    time.sleep(event.get('sleep', 0))\n    return {'ok': True}\n";

/// The function's points over the last hour (of test minutes).
fn points(s: &Server, name: &str) -> Vec<Value> {
    let (status, v) = s.get_json(&format!("/v1/functions/{name}/metrics?since=1h"));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["function"], name);
    assert_eq!(v["period"], 60);
    v["points"].as_array().cloned().unwrap()
}

fn sum(points: &[Value], field: &str) -> u64 {
    points.iter().map(|p| p[field].as_u64().unwrap()).sum()
}

fn max_of(points: &[Value], field: &str) -> f64 {
    points
        .iter()
        .filter_map(|p| p[field].as_f64())
        .fold(0.0, f64::max)
}

#[test]
fn history_counts_a_mix_exactly_and_survives_restarts() {
    let mut s = Server::start_with_env(
        &["--stem-cells", "off"],
        &[("NIMBUS_TEST_MINUTE_MS", MINUTE_MS)],
    );
    let mut cfg = python_cfg("app.handler");
    cfg["timeout_s"] = json!(1);
    s.deploy("mix", cfg, &[("app.py", MIX)]);
    // Nothing yet: no points, and an unknown function is a 404.
    assert!(points(&s, "mix").is_empty());
    let (status, v) = s.get_json("/v1/functions/nope/metrics");
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["type"], "ResourceNotFoundException");
    let (status, v) = s.get_json("/v1/functions/mix/metrics?period=90");
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.get_json("/v1/functions/mix/metrics?since=yesterday");
    assert_eq!(status, 400, "{v}");

    // The mix: 5 successes of ~50 ms, 2 errors, 1 timeout, 1 throttle.
    for _ in 0..5 {
        s.invoke("mix", r#"{"sleep": 0.05}"#).ok();
    }
    for _ in 0..2 {
        assert!(s.invoke("mix", r#"{"fail": true}"#).function_error());
    }
    let r = s.invoke("mix", r#"{"sleep": 3}"#);
    assert!(r.body.contains("Sandbox.Timedout"), "{}", r.body);
    let (code, v) = s.put_json(
        "/2017-10-31/functions/mix/concurrency",
        &json!({ "ReservedConcurrentExecutions": 0 }),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(s.invoke("mix", "{}").status, 429);

    // Seen at once (the current minute comes from memory).
    let check = |p: &[Value], invocations: u64, cold: u64| {
        assert_eq!(sum(p, "invocations"), invocations, "{p:?}");
        assert_eq!(sum(p, "errors"), 3, "{p:?}");
        assert_eq!(sum(p, "timeouts"), 1, "{p:?}");
        assert_eq!(sum(p, "throttles"), 1, "{p:?}");
        assert_eq!(sum(p, "cold_starts"), cold, "{p:?}");
        assert!(max_of(p, "max_concurrency") >= 1.0, "{p:?}");
    };
    let p = points(&s, "mix");
    check(&p, 8, 1);
    // Percentiles from the merged histograms: p50 is a ~50 ms success, p99 the 1 s timeout.
    let (_, v) = s.get_json("/v1/metrics/summary?since=1h");
    let f = &v["functions"][0];
    assert_eq!(
        (&f["function"], &f["invocations"]),
        (&json!("mix"), &json!(8)),
        "{v}"
    );
    let p50 = f["duration_p50_ms"].as_f64().unwrap();
    assert!((40.0..400.0).contains(&p50), "p50 {p50}: {v}");
    let p99 = f["duration_p99_ms"].as_f64().unwrap();
    assert!((800.0..3000.0).contains(&p99), "p99 {p99}: {v}");
    assert!(max_of(&p, "duration_p99_ms") >= 800.0, "{p:?}");
    let ts: Vec<i64> = p.iter().map(|x| x["t"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    assert!(ts.iter().all(|t| t % 2000 == 0), "{ts:?}");
    // A 2-minute period merges the minutes into fewer points with the same totals.
    let (_, merged) = s.get_json("/v1/functions/mix/metrics?since=1h&period=120");
    let merged = merged["points"].as_array().cloned().unwrap();
    assert!(merged.len() <= p.len());
    assert_eq!(sum(&merged, "invocations"), 8);

    // Flushed at the minute boundary: survives kill -9.
    std::thread::sleep(Duration::from_millis(4500));
    s.restart();
    check(&points(&s, "mix"), 8, 1);
    // The minute in progress is flushed at a graceful shutdown.
    let (code, _) = s.put_json(
        "/2017-10-31/functions/mix/concurrency",
        &json!({ "ReservedConcurrentExecutions": 5 }),
    );
    assert_eq!(code, 200);
    s.invoke("mix", "{}").ok();
    assert!(s.terminate().success());
    s.restart();
    // (after kill -9 the instance is gone: that invocation was a cold start)
    check(&points(&s, "mix"), 9, 2);

    // The summary has every function; the CLI renders both views.
    s.deploy("other", python_cfg("app.handler"), &[("app.py", MIX)]);
    s.invoke("other", "{}").ok();
    let (status, v) = s.get_json("/v1/metrics/summary?since=1h");
    assert_eq!(status, 200, "{v}");
    let fs = v["functions"].as_array().unwrap();
    assert_eq!(fs[0]["function"], "mix", "{v}");
    assert_eq!(fs[0]["invocations"], 9, "{v}");
    assert_eq!(fs[1]["function"], "other", "{v}");
    assert_eq!(fs[1]["in_flight"], 0, "{v}");
    assert_eq!(sum(v["points"].as_array().unwrap(), "invocations"), 10);

    let out = cli_ok(&s.cli(&["stats", "mix", "--since", "1h"])).unwrap();
    let row = |label: &str| -> Vec<String> {
        let line = out.lines().find(|l| l.starts_with(label)).unwrap();
        line[label.len()..]
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    assert_eq!(row("invocations")[0], "9", "{out}");
    assert_eq!(row("errors")[0], "3", "{out}");
    assert_eq!(row("throttles")[0], "1", "{out}");
    assert!(out.starts_with("mix · since 1h"), "{out}");
    let json_out = cli_ok(&s.cli(&["stats", "mix", "--json"])).unwrap();
    let v: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(sum(v["points"].as_array().unwrap(), "invocations"), 9);
    let top = cli_ok(&s.cli(&["top", "--since", "1h"])).unwrap();
    let lines: Vec<&str> = top.lines().collect();
    assert!(lines[1].starts_with("FUNCTION"), "{top}");
    let mix: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&mix[..4], ["mix", "9", "3", "1"], "{top}");
    assert!(lines[3].starts_with("other"), "{top}");

    // Deleting a function deletes its history, stored and in memory.
    let r = s.http.delete(s.url("/v1/functions/mix")).send().unwrap();
    assert_eq!(r.status().as_u16(), 204);
    s.deploy("mix", python_cfg("app.handler"), &[("app.py", MIX)]);
    assert!(points(&s, "mix").is_empty());
    s.restart();
    assert!(points(&s, "mix").is_empty());
}
