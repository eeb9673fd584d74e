//! Restart durability after `kill -9`; versions.

use nimbus_tests::*;
use serde_json::json;

#[test]
fn kill_9_and_restart_lose_nothing() {
    let mut s = Server::start(&[]);
    let mut cfg = python_cfg("app.handler");
    cfg["memory_mb"] = json!(256);
    cfg["env"] = json!({"GREETING": "hi"});
    s.deploy(
        "keep",
        cfg.clone(),
        &[(
            "app.py",
            "import os\ndef handler(e, c):\n    return {'v': 1, 'g': os.environ['GREETING']}\n",
        )],
    );
    let reply = s.deploy(
        "keep",
        cfg,
        &[(
            "app.py",
            "import os\ndef handler(e, c):\n    return {'v': 2, 'g': os.environ['GREETING']}\n",
        )],
    );
    assert_eq!(reply["version"], "2");
    s.deploy(
        "other",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async () => 'other';")],
    );
    assert_eq!(s.invoke("keep", "{}").ok(), json!({"v": 2, "g": "hi"}));

    s.restart(); // kill -9, then start on the same data dir
    let (_, list) = s.get_json("/v1/functions");
    let names: Vec<_> = list["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["keep", "other"]);
    let (_, keep) = s.get_json("/v1/functions/keep");
    assert_eq!(keep["config"]["memory_mb"], 256);
    assert_eq!(keep["config"]["env"]["GREETING"], "hi");
    let (_, versions) = s.get_json("/v1/functions/keep/versions");
    let vs: Vec<_> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(vs, vec!["$LATEST", "1", "2"]);
    assert_eq!(s.invoke("keep", "{}").ok(), json!({"v": 2, "g": "hi"}));
    // Immutable versions keep their own code.
    let r = s.invoke_with("keep", b"{}".to_vec(), &[]);
    r.ok();
    let v1 = s
        .http
        .post(s.url("/2015-03-31/functions/keep/invocations?Qualifier=1"))
        .body("{}")
        .send()
        .unwrap();
    assert_eq!(v1.headers()["x-amz-executed-version"], "1");
    assert_eq!(
        v1.json::<serde_json::Value>().unwrap(),
        json!({"v": 1, "g": "hi"})
    );
    assert_eq!(s.invoke("keep:2", "{}").ok()["v"], 2);
    assert_eq!(s.invoke("other", "{}").ok(), json!("other"));
}

#[test]
fn redeploying_the_same_code_publishes_nothing_and_replaces_instances_on_change() {
    let s = Server::start(&[]);
    let code = [(
        "index.js",
        "exports.handler = async () => ({ v: 'a', pid: process.env.AWS_LAMBDA_LOG_STREAM_NAME });",
    )];
    assert_eq!(
        s.deploy("same", node_cfg("index.handler"), &code)["version"],
        "1"
    );
    assert_eq!(
        s.deploy("same", node_cfg("index.handler"), &code)["version"],
        "1"
    );
    let a = s.invoke("same", "{}").ok();
    s.deploy(
        "same",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async () => ({ v: 'b', pid: process.env.AWS_LAMBDA_LOG_STREAM_NAME });",
        )],
    );
    let b = s.invoke("same", "{}").ok();
    assert_eq!(b["v"], "b", "a new $LATEST is served at once");
    assert_ne!(a["pid"], b["pid"]);
}
