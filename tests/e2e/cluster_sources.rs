//! Source mappings across nodes (tests/support/cluster.rs): one node at a time runs a
//! mapping, under its lease, so an MQTT subscription — which a broker delivers in full to
//! every subscriber, and whose client id one connection at a time may use — delivers each
//! message once; when that node dies, another takes the mapping over after the lease.

use crate::cluster::within;
use nimbus_tests::brokers::{self, unique};
use nimbus_tests::cluster::Cluster;
use nimbus_tests::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

/// Appends each record's payload `n` to $OUT, one line each.
const RECORDER: &str = "const fs = require('fs'); exports.handler = async (ev) => { const ns = (ev.Records || []).map((r) => r.payload.n); fs.appendFileSync(process.env.OUT, ns.join('\\n') + '\\n'); return {}; };";

/// How many times each `n` was delivered.
fn deliveries(out: &std::path::Path) -> HashMap<u64, usize> {
    let mut seen = HashMap::new();
    for l in std::fs::read_to_string(out).unwrap_or_default().lines() {
        if let Ok(n) = l.parse() {
            *seen.entry(n).or_insert(0) += 1;
        }
    }
    seen
}

/// Each node's view of the mapping's state.
fn states(c: &Cluster, uuid: &str) -> Vec<String> {
    c.nodes
        .iter()
        .map(|n| {
            if !n.running() {
                return "down".to_string();
            }
            let (_, v) = n.call("GET", &format!("/v1/sources/{uuid}"), None);
            v["status"]["state"].as_str().unwrap_or("?").to_string()
        })
        .collect()
}

fn publish(topic: &str, ns: std::ops::Range<u64>) {
    let payloads: Vec<Vec<u8>> = ns
        .map(|n| json!({ "n": n }).to_string().into_bytes())
        .collect();
    brokers::mqtt_publish(topic, &payloads);
}

#[test]
fn an_mqtt_mapping_runs_on_one_node_at_a_time_and_moves_when_it_dies() {
    let mut c = Cluster::start(2, &["--isolation", "none"]);
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cfg = node_cfg("index.handler");
    cfg["env"] = json!({ "OUT": out.path().to_str().unwrap() });
    c.node(1).deploy("recorder", cfg, &[("index.js", RECORDER)]);
    let root = unique("nimbus-t-");
    let topic = format!("{root}/sensors/a");
    let (status, v) = c.node(1).call(
        "POST",
        "/2015-03-31/event-source-mappings",
        Some(json!({
            "FunctionName": "recorder",
            "SelfManagedEventSource": {"Endpoints": {"MQTT_BROKERS": [format!("mqtt://{}", brokers::MQTT)]}},
            "Topics": [format!("{root}/sensors/+")],
            "StartingPosition": "TRIM_HORIZON",
            "BatchSize": 10,
        })),
    );
    assert_eq!(status, 202, "{v}");
    let uuid = v["UUID"].as_str().unwrap().to_string();
    // One node connects; the other says another node runs it.
    let one = |c: &Cluster| {
        let s = states(c, &uuid);
        s.iter().filter(|s| *s == "connected").count() == 1
            && s.iter()
                .all(|s| s == "connected" || s == "remote" || s == "down")
    };
    assert!(
        within(Duration::from_secs(20), || one(&c)).is_some(),
        "{:?}\n{}",
        states(&c, &uuid),
        c.logs()
    );
    let holder = states(&c, &uuid)
        .iter()
        .position(|s| s == "connected")
        .unwrap()
        + 1;

    publish(&topic, 0..50);
    let all = |from: u64, to: u64| {
        let d = deliveries(out.path());
        (from..to).all(|n| d.contains_key(&n))
    };
    assert!(
        within(Duration::from_secs(30), || all(0, 50)).is_some(),
        "{:?}\n{}",
        deliveries(out.path()),
        c.logs()
    );
    std::thread::sleep(Duration::from_secs(2));
    let twice: Vec<u64> = deliveries(out.path())
        .into_iter()
        .filter(|(_, k)| *k > 1)
        .map(|(n, _)| n)
        .collect();
    assert!(
        twice.is_empty(),
        "delivered more than once: {twice:?}\n{}",
        c.logs()
    );

    // The node running it dies: the other takes it over once the lease ends.
    c.node_mut(holder).kill9();
    let other = 3 - holder;
    let took = within(Duration::from_secs(30), || {
        states(&c, &uuid)[other - 1] == "connected"
    });
    assert!(
        took.is_some(),
        "node {other} never took the mapping over: {:?}\n{}",
        states(&c, &uuid),
        c.logs()
    );
    publish(&topic, 50..100);
    assert!(
        within(Duration::from_secs(30), || all(50, 100)).is_some(),
        "{:?}\n{}",
        deliveries(out.path()),
        c.logs()
    );
    eprintln!(
        "MQTT mapping: 50 messages once each on node {holder}; node {other} took it over {:?} after node {holder}'s kill -9",
        took.unwrap()
    );
}
