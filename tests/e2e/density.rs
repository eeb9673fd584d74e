//! Memory and density: per-instance memory in the API and `REPORT` lines, and LRU reaping
//! of idle instances (any function) when a start would exceed the instance memory budget.

use nimbus_tests::*;
use serde_json::Value;
use std::time::Duration;

const WHO_AM_I: &str =
    "import os\ndef handler(e, c):\n    return {'id': os.environ['AWS_LAMBDA_LOG_STREAM_NAME']}\n";

/// A Python function without network (no slirp4netns needed, nothing to reach).
fn cfg() -> Value {
    let mut c = python_cfg("app.handler");
    c["network"] = "none".into();
    c
}

fn instance(s: &Server, f: &str) -> String {
    s.invoke(f, "{}").ok()["id"].as_str().unwrap().to_string()
}

/// The pool's instances of `f` as `GET /v1/functions/{f}` shows them.
fn pool_instances(s: &Server, f: &str) -> Vec<Value> {
    let (status, v) = s.get_json(&format!("/v1/functions/{f}"));
    assert_eq!(status, 200, "{v}");
    v["pool"]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_start_over_the_memory_budget_reaps_the_least_recently_used_idle_instance() {
    // Room for three 128 MB instances; the host floor off so only the budget decides.
    let s = Server::start(&["--instance-memory-budget", "384", "--memory-floor", "off"]);
    for f in ["a", "b", "c", "d"] {
        s.deploy(f, cfg(), &[("app.py", WHO_AM_I)]);
    }
    let a = instance(&s, "a");
    let b = instance(&s, "b");
    let c = instance(&s, "c");
    // `a` again (warm): `b` is now the least recently used idle instance.
    assert_eq!(instance(&s, "a"), a);
    assert!(instance_alive(&b));

    let (_, health) = s.get_json("/v1/health");
    let inst = &health["instances"];
    assert_eq!(inst["count"], 3, "{health}");
    assert_eq!(inst["committed_bytes"], 384u64 << 20, "{health}");
    assert_eq!(inst["memory_budget_bytes"], 384u64 << 20, "{health}");
    let cgroups = health["memory_limits"] != "none";

    // Per instance: id, state, memory, idle time.
    let pa = pool_instances(&s, "a");
    assert_eq!(pa.len(), 1, "{pa:?}");
    assert!(a.ends_with(pa[0]["id"].as_str().unwrap()), "{a} vs {pa:?}");
    assert_eq!(pa[0]["state"], "idle");
    assert!(pa[0]["idle_ms"].is_u64());
    assert!(
        pa[0]["idle_since"].as_str().unwrap().ends_with('Z'),
        "{pa:?}"
    );
    assert!(pa[0]["memory_bytes"].as_u64().unwrap() > 0, "{pa:?}");
    if cgroups {
        assert_eq!(pa[0]["memory_source"], "cgroup");
    }

    // A fourth function: `b` is stopped to make room, `a` and `c` stay.
    let d = instance(&s, "d");
    assert!(
        eventually(Duration::from_secs(10), || !instance_alive(&b)),
        "the least recently used instance (b) must be stopped"
    );
    assert!(instance_alive(&a) && instance_alive(&c) && instance_alive(&d));
    assert!(pool_instances(&s, "b").is_empty());
    assert_eq!(pool_instances(&s, "a").len(), 1);
    let (_, health) = s.get_json("/v1/health");
    assert_eq!(health["instances"]["count"], 3, "{health}");
    assert_eq!(health["instances"]["reaped_for_memory"], 1, "{health}");
    // `b` comes back on a fresh instance (stopping `c`, now the oldest).
    let b2 = instance(&s, "b");
    assert_ne!(b2, b);
    assert!(eventually(Duration::from_secs(10), || !instance_alive(&c)));
    assert!(instance_alive(&a));
}

#[test]
fn a_start_that_cannot_fit_is_throttled_and_report_shows_memory_used() {
    // Room for one 128 MB instance only.
    let s = Server::start(&["--instance-memory-budget", "128", "--memory-floor", "off"]);
    let mut slow = cfg();
    slow["timeout_s"] = 30.into();
    s.deploy(
        "slow",
        slow,
        &[(
            "app.py",
            "import time\ndef handler(e, c):\n    time.sleep(e.get('sleep', 0))\n    return 1\n",
        )],
    );
    s.deploy("other", cfg(), &[("app.py", WHO_AM_I)]);
    let r = s.invoke_with("slow", b"{}".to_vec(), &[("X-Amz-Log-Type", "Tail")]);
    r.ok();
    use base64::Engine;
    let tail = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(r.header("x-amz-log-result").unwrap())
            .unwrap(),
    )
    .unwrap();
    let used: u64 = tail
        .split("Max Memory Used: ")
        .nth(1)
        .and_then(|t| t.split(" MB").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no Max Memory Used in {tail}"));
    assert!(tail.contains("Memory Size: 128 MB"), "{tail}");
    let (_, health) = s.get_json("/v1/health");
    if health["memory_limits"] != "none" {
        assert!(used > 0 && used <= 128, "{tail}");
    }
    // While `slow` is busy, the budget is full and nothing idle can be stopped.
    std::thread::scope(|sc| {
        let busy = sc.spawn(|| s.invoke("slow", r#"{"sleep": 5}"#));
        assert!(eventually(Duration::from_secs(5), || {
            pool_instances(&s, "slow")
                .first()
                .is_some_and(|i| i["state"] == "busy")
        }));
        let r = s.invoke("other", "{}");
        assert_eq!(r.status, 429, "{}", r.body);
        let e = r.json();
        assert_eq!(e["type"], "TooManyRequestsException", "{e}");
        assert_eq!(e["Reason"], "ConcurrentInvocationLimitExceeded", "{e}");
        assert!(r.body.contains("memory budget"), "{}", r.body);
        busy.join().unwrap().ok();
    });
    // Once idle, `slow` is stopped for `other`.
    s.invoke("other", "{}").ok();
}
