//! Three `nimbus serve` nodes on one PostgreSQL schema and the local NATS
//! (tests/support/cluster.rs): changes made through one node reach the others within a
//! second, and async events survive a node's `kill -9`.

use nimbus_tests::cluster::Cluster;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Polls `f` every 10 ms until it is true; how long that took, or `None` after `limit`.
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t = Instant::now();
    loop {
        if f() {
            return Some(t.elapsed());
        }
        if t.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn greet(version: &str) -> String {
    format!("def handler(event, context):\n    return '{version}'\n")
}

#[test]
fn changes_through_one_node_reach_the_others_within_a_second() {
    let c = Cluster::start(3, &[]);
    let (n1, n2, n3) = (c.node(1), c.node(2), c.node(3));

    // Every node lists the three, alive.
    let (status, cluster) = n2.call("GET", "/v1/cluster", None);
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["mode"], "cluster");
    assert_eq!(cluster["node"], "n2");
    let alive: Vec<&str> = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["status"] == "alive")
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(alive, ["n1", "n2", "n3"], "{cluster}");
    assert_eq!(cluster["nodes"][2]["address"], json!(n3.base()));

    // A deploy on node 1 runs on node 3 (its code fetched from the shared blob store).
    n1.deploy("greet", python_cfg("app.handler"), &[("app.py", &greet("v1"))]);
    assert_eq!(n3.invoke("greet", "{}"), (200, "\"v1\"".into()), "{}", c.logs());
    assert_eq!(n2.invoke("greet", "{}"), (200, "\"v1\"".into()));

    // A redeploy through node 1: nodes 2 and 3, warm on v1 with it cached, serve v2
    // within a second of the deploy's answer.
    n1.deploy("greet", python_cfg("app.handler"), &[("app.py", &greet("v2"))]);
    for n in [n3, n2] {
        let took = within(Duration::from_secs(3), || n.invoke("greet", "{}").1 == "\"v2\"");
        let took = took.unwrap_or_else(|| panic!("{} still serves v1 after 3 s", n.id));
        assert!(took < Duration::from_secs(1), "{} took {took:?}", n.id);
        eprintln!("{}: v2 served {took:?} after the deploy", n.id);
    }

    // Versions and an alias moved through node 1.
    let publish = |code: &str| {
        n1.deploy("greet", python_cfg("app.handler"), &[("app.py", code)]);
        let (s, v) = n1.call("POST", "/2015-03-31/functions/greet/versions", Some(json!({})));
        assert_eq!(s, 201, "{v}");
        v["Version"].as_str().unwrap().to_string()
    };
    let (one, two) = (publish(&greet("v3")), publish(&greet("v4")));
    let (s, v) = n1.call(
        "POST",
        "/2015-03-31/functions/greet/aliases",
        Some(json!({"Name": "live", "FunctionVersion": one})),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(n3.invoke("greet:live", "{}").1, "\"v3\"");
    let (s, v) = n1.call(
        "PUT",
        "/2015-03-31/functions/greet/aliases/live",
        Some(json!({"FunctionVersion": two})),
    );
    assert_eq!(s, 200, "{v}");
    let took = within(Duration::from_secs(3), || n3.invoke("greet:live", "{}").1 == "\"v4\"")
        .expect("the alias change never reached node 3");
    assert!(took < Duration::from_secs(1), "alias: {took:?}");

    // Reserved concurrency 0 set through node 2 throttles on node 3.
    let (s, v) = n2.call(
        "PUT",
        "/2017-10-31/functions/greet/concurrency",
        Some(json!({"ReservedConcurrentExecutions": 0})),
    );
    assert_eq!(s, 200, "{v}");
    let took = within(Duration::from_secs(3), || n3.invoke("greet", "{}").0 == 429)
        .expect("the reservation never reached node 3");
    assert!(took < Duration::from_secs(1), "concurrency: {took:?}");

    // A delete through node 1 is a 404 on node 3.
    let (s, _) = n1.call("DELETE", "/2015-03-31/functions/greet", None);
    assert_eq!(s, 204);
    let took = within(Duration::from_secs(3), || n3.invoke("greet", "{}").0 == 404)
        .expect("node 3 still runs a deleted function");
    assert!(took < Duration::from_secs(1), "delete: {took:?}");
}

#[test]
fn async_events_submitted_round_robin_survive_a_node_killed_mid_delivery() {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut c = Cluster::start(3, &["--isolation", "none"]);
    let mut cfg = node_cfg("index.handler");
    cfg["env"] = json!({"OUT": out.path().to_str().unwrap()});
    cfg["concurrency"] = json!(4);
    // 20 ms per event, 4 instances per node: delivery lags the submissions, so the kill
    // lands while every node holds claims.
    c.node(1).deploy(
        "sink",
        cfg,
        &[("index.js", "const fs = require('fs'); exports.handler = async (e) => { await new Promise(r => setTimeout(r, 20)); fs.appendFileSync(process.env.OUT, e.n + '\\n'); return e.n; };")],
    );
    let n = 1000;
    let mut acked: HashSet<u64> = HashSet::new();
    let mut refused = 0;
    for i in 0..n as u64 {
        if i == 400 {
            c.node_mut(2).kill9();
        }
        let node = c.node(1 + (i as usize % 3));
        if !node.running() {
            refused += 1;
            continue;
        }
        let r = node
            .http
            .post(node.url("/2015-03-31/functions/sink/invocations"))
            .header("X-Amz-Invocation-Type", "Event")
            .body(format!(r#"{{"n":{i}}}"#))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202, "{}", node.log());
        acked.insert(i);
    }
    let delivered = || -> HashSet<u64> {
        std::fs::read_to_string(out.path())
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let at_kill_check = delivered().len();
    // Node 2's claims come back when the others see its heartbeats stop (TTL 5 s), long
    // before their 16-minute leases end.
    let all = within(Duration::from_secs(120), || acked.is_subset(&delivered()));
    let seen = delivered();
    let missing: Vec<&u64> = acked.iter().filter(|i| !seen.contains(i)).collect();
    assert!(
        all.is_some(),
        "{} acknowledged events never delivered: {missing:?}\n{}",
        missing.len(),
        c.logs()
    );
    let lines = std::fs::read_to_string(out.path()).unwrap().lines().count();
    eprintln!(
        "{} acknowledged ({refused} sent to the dead node were refused); {at_kill_check} delivered when submission ended; all delivered {:?} later; {} deliveries in all (at least once)",
        acked.len(),
        all.unwrap(),
        lines
    );
    // The survivors list node 2 as dead.
    let (_, cluster) = c.node(3).call("GET", "/v1/cluster", None);
    let n2: &Value = cluster["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "n2")
        .unwrap();
    assert_eq!(n2["status"], "dead", "{cluster}");
}
