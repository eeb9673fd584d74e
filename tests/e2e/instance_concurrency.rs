//! `instance_concurrency` (Lambda Managed Instances' `PerExecutionEnvironmentMaxConcurrency`,
//! `AWS_LAMBDA_MAX_CONCURRENCY` in the runtime): one process runs several invocations at
//! once. Measured from inside the functions: each answer names the process that ran it.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// Sleeps `e.sleep` ms, logs a line, and answers its process (its log stream is named after
/// it: pids are the sandbox's own), its request id, the concurrency the runtime was told and
/// its trace (`TRACEPARENT`) before and after the sleep.
const NODE: &str = r#"
exports.handler = async (e, context) => {
  console.log('begin', e.n);
  const before = process.env.TRACEPARENT;
  await new Promise((r) => setTimeout(r, e.sleep || 0));
  console.log('end', e.n);
  return {
    env: context.logStreamName, id: context.awsRequestId, n: e.n, max: process.env.AWS_LAMBDA_MAX_CONCURRENCY || null,
    before, after: process.env.TRACEPARENT,
  };
};
"#;

/// The same in Python: one invocation per process at a time, the processes forked.
const PYTHON: &str = r#"
import os, time
def handler(e, context):
    time.sleep(e.get("sleep", 0) / 1000)
    return {"pid": os.getpid(), "ppid": os.getppid(), "id": context.aws_request_id, "max": os.environ.get("AWS_LAMBDA_MAX_CONCURRENCY")}
"#;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `n` concurrent invocations of `f`, each sleeping `sleep` ms: (status, answer or error).
fn burst(s: &Server, f: &str, n: usize, sleep: u64) -> Vec<(u16, Value)> {
    std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                sc.spawn(move || {
                    let r = s.invoke(f, &json!({ "n": i, "sleep": sleep }).to_string());
                    (r.status, r.json())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn node_runs_several_invocations_per_process_and_logs_each_under_its_own_id() {
    let s = Server::start(&[]);
    let mut cfg = node_cfg("index.handler");
    cfg["instance_concurrency"] = json!(4);
    cfg["concurrency"] = json!(64);
    s.deploy("multi", cfg, &[("index.js", NODE)]);
    // One process per core first, then slots of those: more calls than cores share.
    let n = cores() + 6;
    let out = burst(&s, "multi", n, 1500);
    let mut per_env: HashMap<String, usize> = HashMap::new();
    let mut traces = HashSet::new();
    for (status, v) in &out {
        assert_eq!(*status, 200, "{v}\n{}", s.log());
        assert_eq!(v["max"], "4", "{v}");
        // Each invocation sees its own trace in process.env, though others began meanwhile.
        let tp = v["before"].as_str().unwrap_or_else(|| panic!("{v}"));
        assert_eq!(v["after"], tp, "{v}");
        assert!(traces.insert(tp.to_string()), "{tp} twice: {out:?}");
        *per_env
            .entry(v["env"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        per_env.len() < n && per_env.values().all(|&k| k <= 4),
        "{n} calls of 1.5 s at once should share processes, at most 4 each: {per_env:?}"
    );

    // Each invocation's lines carry its own request id, though they interleave (read once
    // the log writer has stored every REPORT line: it commits in batches).
    let mut logs = Vec::new();
    for _ in 0..100 {
        let (status, v) = s.get_json("/v1/functions/multi/logs?limit=10000");
        assert_eq!(status, 200, "{v}");
        logs = v["logs"].as_array().cloned().unwrap_or_default();
        let reports = logs
            .iter()
            .filter(|l| l["line"].as_str().is_some_and(|l| l.starts_with("REPORT ")))
            .count();
        if reports >= n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (_, v) in &out {
        let id = v["id"].as_str().unwrap();
        let mine: Vec<&str> = logs
            .iter()
            .filter(|l| l["request_id"] == id)
            .filter_map(|l| l["line"].as_str())
            .collect();
        let n = v["n"].as_u64().unwrap();
        for word in ["begin", "end"] {
            let want = format!("{word} {n}");
            assert!(
                mine.iter().any(|l| l.ends_with(&want) && l.contains(id)),
                "no {want:?} under {id}: {mine:?}"
            );
        }
        assert!(
            mine.iter()
                .any(|l| l.starts_with("REPORT RequestId: ") && l.contains(id)),
            "no REPORT under {id}: {mine:?}"
        );
        // No line of another invocation under this id.
        assert!(
            mine.iter()
                .filter(|l| l.contains("\tINFO\t"))
                .all(|l| l.contains(id)),
            "{id}: {mine:?}"
        );
    }
    // The function's instances are the slots, named after their process (`ID+N`).
    let (_, f) = s.get_json("/v1/functions/multi");
    let slots = f["pool"]["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(slots.len() <= n && slots.len() > per_env.len(), "{f}");
    let processes: HashSet<&str> = slots
        .iter()
        .filter_map(|i| i["id"].as_str())
        .map(|id| id.split('+').next().unwrap())
        .collect();
    let streams: HashSet<&str> = per_env
        .keys()
        .map(|e| e.rsplit(']').next().unwrap())
        .collect();
    assert_eq!(processes, streams, "{f}");
}

#[test]
fn a_timeout_stops_the_process_and_says_so_to_the_invocations_sharing_it() {
    let s = Server::start(&[]);
    let mut cfg = node_cfg("index.handler");
    cfg["instance_concurrency"] = json!(8);
    cfg["timeout_s"] = json!(2);
    s.deploy("shared", cfg, &[("index.js", NODE)]);
    // The first call hangs past the timeout; the others (one process per core first,
    // then slots of those) would end 5 s in, after it timed out at 2 s.
    let n = cores() + 3;
    let s = &s;
    let out = std::thread::scope(|sc| {
        let first = sc.spawn(move || {
            let r = s.invoke("shared", &json!({ "n": 0, "sleep": 30000 }).to_string());
            (r.status, r.json())
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let rest: Vec<_> = (1..n)
            .map(|i| {
                sc.spawn(move || {
                    let r = s.invoke("shared", &json!({ "n": i, "sleep": 5000 }).to_string());
                    (r.status, r.json())
                })
            })
            .collect();
        let mut all = vec![first.join().unwrap()];
        all.extend(rest.into_iter().map(|h| h.join().unwrap()));
        all
    });
    let (status, first) = &out[0];
    assert_eq!(*status, 200, "{first}");
    assert_eq!(first["errorType"], "Sandbox.Timedout", "{first}");
    // Those in the first call's process ended with it, and were told why.
    let stopped: Vec<&Value> = out[1..]
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["errorType"] == "Runtime.ExitError")
        .collect();
    assert!(!stopped.is_empty(), "{out:?}");
    for v in &stopped {
        let msg = v["errorMessage"].as_str().unwrap_or_default();
        assert!(
            msg.contains("the instance was stopped") && msg.contains("timed out"),
            "{v}"
        );
    }
    // The function still serves.
    let r = s.invoke("shared", &json!({ "n": 99 }).to_string());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.ok()["n"], 99);
}

#[test]
fn python_forks_a_process_per_concurrent_invocation() {
    let s = Server::start(&[]);
    let mut cfg = python_cfg("app.handler");
    cfg["instance_concurrency"] = json!(3);
    cfg["concurrency"] = json!(64);
    s.deploy("forks", cfg, &[("app.py", PYTHON)]);
    let n = cores() + 4;
    let out = burst(&s, "forks", n, 1500);
    let mut pids = HashSet::new();
    let mut parents = HashSet::new();
    for (status, v) in &out {
        assert_eq!(*status, 200, "{v}\n{}", s.log());
        assert_eq!(v["max"], "3", "{v}");
        pids.insert(v["pid"].as_u64().unwrap());
        parents.insert(v["ppid"].as_u64().unwrap());
    }
    // Some invocations ran in processes forked from another that served one too.
    assert!(
        pids.iter().any(|p| parents.contains(p)),
        "no answer from a forked worker: pids {pids:?}, parents {parents:?}"
    );
}

#[test]
fn instance_concurrency_is_validated() {
    let s = Server::start(&[]);
    for (runtime, handler, n, want) in [
        (
            "nodejs20.x",
            "index.handler",
            0,
            "instance_concurrency must be 1 to 1600",
        ),
        (
            "nodejs20.x",
            "index.handler",
            1601,
            "instance_concurrency must be 1 to 1600",
        ),
        (
            "wasi-http",
            "app.wasm",
            2,
            "fresh component instance per request",
        ),
    ] {
        let cfg = json!({ "runtime": runtime, "handler": handler, "instance_concurrency": n });
        let (status, body) = s.deploy_zip("bad", cfg, &zip_files(&[("index.js", NODE)]));
        assert_eq!(status, 400, "{body}");
        assert!(body.to_string().contains(want), "{body}");
    }
}

#[test]
fn the_lambda_api_takes_lambda_managed_instances_capacity_provider_config() {
    use base64::Engine;
    let s = Server::start(&[]);
    let zip = base64::engine::general_purpose::STANDARD.encode(zip_files(&[("index.js", NODE)]));
    let create = |name: &str, max: i64| {
        let r = s
            .http
            .post(s.url("/2015-03-31/functions"))
            .json(&json!({
                "FunctionName": name,
                "Runtime": "nodejs20.x",
                "Role": "arn:aws:iam::000000000000:role/lambda",
                "Handler": "index.handler",
                "Code": { "ZipFile": zip },
                "CapacityProviderConfig": { "LambdaManagedInstancesCapacityProviderConfig": {
                    "CapacityProviderArn": "arn:aws:lambda:us-east-1:000000000000:capacity-provider:cp",
                    "PerExecutionEnvironmentMaxConcurrency": max,
                }},
            }))
            .send()
            .unwrap();
        (
            r.status().as_u16(),
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let (status, body) = create("lmi", 6);
    assert_eq!(status, 201, "{body}");
    let (_, cfg) = s.get_json("/2015-03-31/functions/lmi/configuration");
    assert_eq!(
        cfg["CapacityProviderConfig"]["LambdaManagedInstancesCapacityProviderConfig"]
            ["PerExecutionEnvironmentMaxConcurrency"],
        6,
        "{cfg}"
    );
    let r = s.invoke("lmi", r#"{"n":1}"#);
    assert_eq!(r.ok()["max"], "6");
    let (status, body) = create("lmi-bad", 1601);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["type"], "InvalidParameterValueException", "{body}");
    // A function without it answers without the field.
    let (_, f) = s.get_json("/2015-03-31/functions/lmi-bad/configuration");
    assert!(f["CapacityProviderConfig"].is_null(), "{f}");
}
