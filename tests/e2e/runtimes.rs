//! Node (CJS, ESM, callback), Python and `provided` functions, init errors, logs.

use nimbus_tests::*;
use serde_json::json;

#[test]
fn node_commonjs_async() {
    let s = Server::start(&[]);
    s.deploy(
        "cjs",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async (event, context) => ({ got: event, fn: context.functionName, rid: context.awsRequestId, left: context.getRemainingTimeInMillis(), mem: context.memoryLimitInMB, env: process.env.AWS_LAMBDA_FUNCTION_NAME });")],
    );
    let r = s.invoke("cjs", r#"{"a":1}"#);
    let v = r.ok();
    assert_eq!(v["got"], json!({"a": 1}));
    assert_eq!(v["fn"], "cjs");
    assert_eq!(v["env"], "cjs");
    assert_eq!(v["mem"], "128");
    assert_eq!(
        v["rid"].as_str().unwrap(),
        r.header("x-amzn-requestid").unwrap()
    );
    let left = v["left"].as_i64().unwrap();
    assert!(left > 0 && left <= 3000, "remaining time {left}");
    assert_eq!(r.header("x-amz-executed-version"), Some("$LATEST"));
}

#[test]
fn node_esm_mjs_and_type_module() {
    let s = Server::start(&[]);
    s.deploy(
        "esm",
        node_cfg("app.handler"),
        &[(
            "app.mjs",
            "export const handler = async (e) => ({ esm: true, n: e.n * 2 });",
        )],
    );
    assert_eq!(
        s.invoke("esm", r#"{"n":21}"#).ok(),
        json!({"esm": true, "n": 42})
    );
    s.deploy(
        "esm-pkg",
        node_cfg("src/main.handler"),
        &[
            ("package.json", r#"{"type":"module"}"#),
            ("src/main.js", "import { helper } from './util.js';\nexport async function handler(e) { return helper(e); }"),
            ("src/util.js", "export const helper = (e) => ({ module: true, echo: e });"),
        ],
    );
    assert_eq!(
        s.invoke("esm-pkg", r#"{"x":"y"}"#).ok(),
        json!({"module": true, "echo": {"x": "y"}})
    );
}

#[test]
fn node_callback_style_and_errors() {
    let s = Server::start(&[]);
    s.deploy(
        "cb",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = function (event, context, callback) { if (event.fail) return callback(new TypeError('bad input')); setTimeout(() => callback(null, { cb: event.v }), 10); };")],
    );
    assert_eq!(s.invoke("cb", r#"{"v":7}"#).ok(), json!({"cb": 7}));
    let r = s.invoke("cb", r#"{"fail":true}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let e = r.json();
    assert_eq!(e["errorType"], "TypeError");
    assert_eq!(e["errorMessage"], "bad input");
    // A handled error does not kill the instance: the next call still works.
    assert_eq!(s.invoke("cb", r#"{"v":8}"#).ok(), json!({"cb": 8}));
}

#[test]
fn python_handler_context_and_errors() {
    let s = Server::start(&[]);
    s.deploy(
        "py",
        python_cfg("app.handler"),
        &[(
            "app.py",
            "import os\ndef handler(event, context):\n    if event.get('boom'):\n        raise ValueError('kaboom')\n    return {'sum': event['a'] + event['b'], 'fn': context.function_name, 'rid': context.aws_request_id, 'left': context.get_remaining_time_in_millis(), 'mem': context.memory_limit_in_mb, 'root': os.environ['LAMBDA_TASK_ROOT'] == os.getcwd()}\n",
        )],
    );
    let r = s.invoke("py", r#"{"a":2,"b":3}"#);
    let v = r.ok();
    assert_eq!(v["sum"], 5);
    assert_eq!(v["fn"], "py");
    assert_eq!(v["mem"], 128);
    assert_eq!(v["root"], true);
    assert_eq!(
        v["rid"].as_str().unwrap(),
        r.header("x-amzn-requestid").unwrap()
    );
    let r = s.invoke("py", r#"{"boom":true}"#);
    assert!(r.function_error());
    let e = r.json();
    assert_eq!(e["errorType"], "ValueError");
    assert_eq!(e["errorMessage"], "kaboom");
    assert!(e["stackTrace"].is_array());
}

const BASH_BOOTSTRAP: &str = r#"#!/bin/bash
set -euo pipefail
while true; do
  HEADERS=$(mktemp)
  EVENT=$(curl -sS -D "$HEADERS" "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/next")
  ID=$(grep -i '^lambda-runtime-aws-request-id:' "$HEADERS" | tr -d '\r' | cut -d' ' -f2)
  curl -sS -X POST "http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime/invocation/$ID/response" -d "{\"bash\":true,\"event\":$EVENT,\"fn\":\"$AWS_LAMBDA_FUNCTION_NAME\"}" >/dev/null
  rm -f "$HEADERS"
done
"#;

#[test]
fn provided_runtime_with_a_shell_bootstrap() {
    let s = Server::start(&[]);
    s.deploy(
        "sh",
        json!({"runtime": "provided.al2023", "handler": "bootstrap"}),
        &[("bootstrap", BASH_BOOTSTRAP)],
    );
    assert_eq!(
        s.invoke("sh", r#"{"k":[1,2]}"#).ok(),
        json!({"bash": true, "event": {"k": [1, 2]}, "fn": "sh"})
    );
    assert_eq!(s.invoke("sh", r#"{"k":3}"#).ok()["event"]["k"], 3);
    // A package without an executable bootstrap fails clearly.
    s.deploy(
        "nobootstrap",
        json!({"runtime": "provided", "handler": "x"}),
        &[("readme.txt", "no bootstrap here")],
    );
    let r = s.invoke("nobootstrap", "{}");
    assert!(r.function_error());
    assert_eq!(r.json()["errorType"], "Runtime.InvalidEntrypoint");
}

#[test]
fn init_errors_are_returned_with_their_message() {
    let s = Server::start(&[]);
    s.deploy(
        "syntax",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async () => { return {;")],
    );
    let r = s.invoke("syntax", "{}");
    assert!(r.function_error(), "{}", r.body);
    assert_eq!(r.json()["errorType"], "Runtime.UserCodeSyntaxError");

    s.deploy(
        "nohandler",
        node_cfg("index.missing"),
        &[("index.js", "exports.handler = async () => 1;")],
    );
    let e = s.invoke("nohandler", "{}").json();
    assert_eq!(e["errorType"], "Runtime.HandlerNotFound");
    assert!(
        e["errorMessage"].as_str().unwrap().contains("missing"),
        "{e}"
    );

    s.deploy(
        "nomodule",
        python_cfg("nothere.handler"),
        &[("app.py", "def handler(e, c): return 1\n")],
    );
    let e = s.invoke("nomodule", "{}").json();
    assert_eq!(e["errorType"], "Runtime.ImportModuleError");
    assert!(
        e["errorMessage"].as_str().unwrap().contains("nothere"),
        "{e}"
    );

    s.deploy(
        "pyimport",
        python_cfg("app.handler"),
        &[(
            "app.py",
            "import not_a_real_module\ndef handler(e, c): return 1\n",
        )],
    );
    let e = s.invoke("pyimport", "{}").json();
    assert_eq!(e["errorType"], "Runtime.ImportModuleError");
    assert!(
        e["errorMessage"]
            .as_str()
            .unwrap()
            .contains("not_a_real_module"),
        "{e}"
    );
    assert!(s.healthy());
}

#[test]
fn logs_are_captured_with_request_ids_and_tail() {
    let s = Server::start(&[]);
    s.deploy("logger", node_cfg("index.handler"), &[("index.js", "exports.handler = async (e) => { console.log('hello from', e.who); process.stderr.write('to stderr\\n'); return 1; };")]);
    let r = s.invoke_with(
        "logger",
        br#"{"who":"tester"}"#.to_vec(),
        &[("X-Amz-Log-Type", "Tail")],
    );
    r.ok();
    let rid = r.header("x-amzn-requestid").unwrap().to_string();
    use base64::Engine;
    let tail = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(r.header("x-amz-log-result").unwrap())
            .unwrap(),
    )
    .unwrap();
    assert!(tail.contains(&format!("START RequestId: {rid}")), "{tail}");
    assert!(tail.contains("hello from tester"), "{tail}");
    assert!(tail.contains(&format!("REPORT RequestId: {rid}")), "{tail}");
    assert!(
        tail.contains("Init Duration"),
        "first call is a cold start: {tail}"
    );
    // The same lines are stored and readable through the API and the CLI.
    let found = eventually(std::time::Duration::from_secs(5), || {
        let (_, v) = s.get_json("/v1/functions/logger/logs");
        v["logs"].as_array().is_some_and(|l| {
            l.iter()
                .any(|e| e["line"].as_str().unwrap().contains("REPORT"))
        })
    });
    assert!(found);
    let (_, v) = s.get_json("/v1/functions/logger/logs");
    let lines = v["logs"].as_array().unwrap();
    let hello = lines
        .iter()
        .find(|e| e["line"].as_str().unwrap().contains("hello from tester"))
        .unwrap();
    assert_eq!(hello["request_id"], rid.as_str());
    assert_eq!(hello["stream"], "stdout");
    assert!(lines
        .iter()
        .any(|e| e["stream"] == "stderr" && e["line"].as_str().unwrap().contains("to stderr")));
    let report = lines
        .iter()
        .find(|e| e["line"].as_str().unwrap().starts_with("REPORT"))
        .unwrap()["line"]
        .as_str()
        .unwrap()
        .to_string();
    for field in [
        "Duration:",
        "Billed Duration:",
        "Memory Size: 128 MB",
        "Max Memory Used:",
        "Init Duration:",
    ] {
        assert!(report.contains(field), "{report}");
    }
    let out = cli_ok(&s.cli(&["logs", "logger"])).unwrap();
    assert!(
        out.contains("hello from tester") && out.contains("REPORT"),
        "{out}"
    );
}

/// The instance's user has a readable passwd entry with home `/tmp`, as Lambda's
/// `sbx_user` does: Node's `os.homedir()` (which the AWS SDK for JavaScript v3 calls to look
/// for `~/.aws/config`) and Python's `pwd`/`expanduser` work without `HOME` set.
#[test]
fn the_instance_user_has_a_home_directory() {
    let s = Server::start(&[]);
    s.deploy(
        "home-node",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "const os = require('os');\nexports.handler = async () => ({ home: process.env.HOME ?? null, homedir: os.homedir(), user: os.userInfo().username, uid: process.getuid() });",
        )],
    );
    let v = s.invoke("home-node", "{}").ok();
    assert_eq!(v["home"], serde_json::Value::Null, "{v}");
    assert_eq!(v["homedir"], "/tmp", "{v}");
    let uid = v["uid"].as_u64().unwrap();
    assert_eq!(v["user"], format!("sbx_user{uid}"), "{v}");
    s.deploy(
        "home-py",
        python_cfg("app.handler"),
        &[(
            "app.py",
            "import os, pwd, grp\ndef handler(event, context):\n    p = pwd.getpwuid(os.getuid())\n    return {'dir': p.pw_dir, 'name': p.pw_name, 'group': grp.getgrgid(os.getgid()).gr_name, 'expanded': os.path.expanduser('~/.aws')}\n",
        )],
    );
    let v = s.invoke("home-py", "{}").ok();
    assert_eq!(v["dir"], "/tmp", "{v}");
    assert!(v["name"].as_str().unwrap().starts_with("sbx_user"), "{v}");
    assert_eq!(v["name"], v["group"], "{v}");
    assert_eq!(v["expanded"], "/tmp/.aws", "{v}");
}
