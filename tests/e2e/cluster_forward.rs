//! Forwarding synchronous calls to warm instances (docs/cluster.md, "Forwarding to warm
//! instances"): a node with no instance of a function runs its calls on another node's
//! idle warm instance instead of cold-starting; the internal endpoint takes only requests
//! signed with the cluster's node key; a forward to a node just killed runs the call here.

use base64::Engine;
use nimbus_tests::cluster::Cluster;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

/// Answers with the process that served it: its pid and a random id made at its start.
const WHO: &str = r#"
import os, uuid

PROCESS = uuid.uuid4().hex

def handler(event, context):
    return {"pid": os.getpid(), "process": PROCESS, "request_id": context.aws_request_id}
"#;

/// A node publishes its idle instances with its next heartbeat (1 s) and the others read
/// them with theirs (1 s).
const PUBLISHED: Duration = Duration::from_millis(2500);

fn process(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["process"].as_str().unwrap().to_string()
}

/// Node `id`'s instances as the cluster API lists them.
fn instances(c: &Cluster, id: &str) -> i64 {
    let (s, v) = c.node(1).call("GET", "/v1/cluster", None);
    assert_eq!(s, 200, "{v}");
    v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == id)
        .unwrap_or_else(|| panic!("no {id} in {v}"))["instances"]
        .as_i64()
        .unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_node_without_an_instance_runs_the_call_on_a_warm_one_elsewhere() {
    let c = Cluster::start(2, &["--isolation", "none"]);
    let (n1, n2) = (c.node(1), c.node(2));
    n1.deploy("who", python_cfg("app.handler"), &[("app.py", WHO)]);
    // A URL is part of the configuration (a new revision): made before the warm-up.
    let (s, v) = n1.call(
        "POST",
        "/2021-10-31/functions/who/url",
        Some(json!({"AuthType": "NONE"})),
    );
    assert_eq!(s, 201, "{v}");
    let (s, body) = n1.invoke("who", "{}");
    assert_eq!(s, 200, "{body}\n{}", c.logs());
    let warm = process(&body);
    std::thread::sleep(PUBLISHED);

    // For the record (not asserted): a warm call on node 1 itself.
    let mut local = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        assert_eq!(n1.invoke("who", "{}").0, 200);
        local.push(t.elapsed());
    }
    // Through node 2, which has no instance: node 1's instance serves, with node 2's
    // request id, log tail and executed version as a local run would give them.
    let mut forwarded = Vec::new();
    for _ in 0..5 {
        let t = std::time::Instant::now();
        let r = n2
            .http
            .post(n2.url("/2015-03-31/functions/who/invocations"))
            .header("x-amz-log-type", "Tail")
            .body("{}")
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        forwarded.push(t.elapsed());
        let header = |n: &str| {
            r.headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let (request_id, version, log) = (
            header("x-amzn-requestid"),
            header("x-amz-executed-version"),
            header("x-amz-log-result"),
        );
        let body = r.text().unwrap();
        assert_eq!(
            process(&body),
            warm,
            "served by node 1's instance\n{}",
            c.logs()
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["request_id"],
            request_id.as_str(),
            "the origin's request id"
        );
        assert_eq!(version, "$LATEST");
        let log = base64::engine::general_purpose::STANDARD
            .decode(log)
            .unwrap();
        let log = String::from_utf8_lossy(&log);
        assert!(log.contains(&request_id), "the log tail came back: {log}");
    }

    local.sort();
    forwarded.sort();
    eprintln!(
        "warm call on node 1: median {:?}; through node 2, forwarded: median {:?}",
        local[2], forwarded[2]
    );

    // A function URL on node 2 takes the same path.
    let r = n2.http.get(n2.url("/fn/who/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(process(&r.text().unwrap()), warm, "{}", c.logs());

    // Node 2 never started an instance (an instance it had started would still be idle,
    // and listed with its next heartbeat).
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(instances(&c, "n2"), 0, "{}", c.logs());
    assert_eq!(instances(&c, "n1"), 1);
    // Node 1 served the forwards on its internal endpoint.
    let metrics = n1
        .http
        .get(n1.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let served = metrics
        .lines()
        .filter(|l| l.contains("/v1/internal/invoke") && l.contains("status=\"200\""))
        .find(|l| l.contains("_total") || l.contains("_count"));
    assert!(served.is_some(), "{metrics}");
}

#[test]
fn the_internal_endpoint_takes_only_the_cluster_node_key() {
    let c = Cluster::start(2, &["--isolation", "none"]);
    let (n1, n2) = (c.node(1), c.node(2));
    n1.deploy("who", python_cfg("app.handler"), &[("app.py", WHO)]);
    let (s, f) = n1.call("GET", "/2015-03-31/functions/who/configuration", None);
    assert_eq!(s, 200, "{f}");
    let revision = f["RevisionId"].as_str().unwrap().to_string();
    let b64 = |v: &Value| base64::engine::general_purpose::STANDARD.encode(v.to_string());
    let meta = |revision: &str| {
        b64(&json!({
            "function": "who", "version": "$LATEST", "revision": revision,
            "request_id": "0f0f0f0f-1111-2222-3333-444444444444",
            "invoked_arn": "arn:aws:lambda:us-east-1:000000000000:function:who",
        }))
    };
    let send = |key: Option<&nimbus_cluster::NodeKey>, at: i64, meta: &str| {
        let payload = "{}";
        let mut req = n2
            .http
            .post(n2.url("/v1/internal/invoke"))
            .header("x-nimbus-invocation", meta)
            .body(payload);
        if let Some(k) = key {
            let signed = format!("{meta}\n{payload}");
            req = req
                .header("x-nimbus-forwarded-from", "n1")
                .header("x-nimbus-node-time", at.to_string())
                .header(
                    "x-nimbus-node-signature",
                    k.sign(at, "n1", signed.as_bytes()),
                );
        }
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let answer = r.headers().get("x-nimbus-result").is_some();
        let body = r.text().unwrap();
        (status, answer, body)
    };
    let ours = nimbus_cluster::NodeKey::derive(c.master_key.as_bytes());
    let theirs = nimbus_cluster::NodeKey::derive(b"another cluster's master key");
    let m = meta(&revision);
    // No credentials, another cluster's key, a stale signature: 403 with a JSON error.
    for (key, at) in [
        (None, now_ms()),
        (Some(&theirs), now_ms()),
        (Some(&ours), now_ms() - 120_000),
    ] {
        let (s, answer, body) = send(key, at, &m);
        assert_eq!(s, 403, "{body}");
        assert!(!answer);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert!(v.to_string().contains("AccessDenied"), "{v}");
    }
    // A garbage signature too.
    let r = n2
        .http
        .post(n2.url("/v1/internal/invoke"))
        .header("x-nimbus-invocation", &m)
        .header("x-nimbus-forwarded-from", "n1")
        .header("x-nimbus-node-time", now_ms().to_string())
        .header("x-nimbus-node-signature", "00")
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    // Signed with the node key, for another revision: refused with 409 (the origin then
    // runs the call itself).
    let (s, _, body) = send(Some(&ours), now_ms(), &meta("not-the-revision"));
    assert_eq!(s, 409, "{body}");
    // Signed, for the revision: run there with the request id given.
    let (s, answer, body) = send(Some(&ours), now_ms(), &m);
    assert_eq!(s, 200, "{body}\n{}", c.logs());
    assert!(answer);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["request_id"], "0f0f0f0f-1111-2222-3333-444444444444");
}

#[test]
fn a_forward_to_a_node_just_killed_runs_the_call_here() {
    let mut c = Cluster::start(2, &["--isolation", "none"]);
    c.node(1)
        .deploy("who", python_cfg("app.handler"), &[("app.py", WHO)]);
    let (s, body) = c.node(1).invoke("who", "{}");
    assert_eq!(s, 200, "{body}");
    let warm = process(&body);
    std::thread::sleep(PUBLISHED);
    // Node 1 dies; its row stays alive for the TTL, so node 2 still sees its instance.
    c.node_mut(1).kill9();
    let (s, body) = c.node(2).invoke("who", "{}");
    assert_eq!(s, 200, "{body}\n{}", c.logs());
    assert_ne!(process(&body), warm, "run on node 2");
    let log = c.node(2).log();
    assert!(
        log.contains("cannot forward the invocation: running it here"),
        "the forward was tried: {log}"
    );
    // Node 1 is left out after the failure: the next calls run here without trying it.
    let (s, again) = c.node(2).invoke("who", "{}");
    assert_eq!(s, 200);
    assert_eq!(
        process(&again),
        process(&body),
        "node 2's own warm instance"
    );
}
