//! Workflows through the real binary: durability across `kill -9`, durable waits across a
//! restart, a large Map.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

const ROLE: &str = "arn:aws:iam::000000000000:role/flows";

fn machine(s: &Server, name: &str, definition: &Value, kind: &str) -> String {
    let (status, out) = s.sfn(
        "CreateStateMachine",
        &json!({"name": name, "definition": definition.to_string(), "roleArn": ROLE, "type": kind}),
    );
    assert_eq!(status, 200, "{out}");
    out["stateMachineArn"].as_str().unwrap().to_string()
}

fn start(s: &Server, machine: &str, name: &str, input: &Value) -> String {
    let (status, out) = s.sfn(
        "StartExecution",
        &json!({"stateMachineArn": machine, "name": name, "input": input.to_string()}),
    );
    assert_eq!(status, 200, "{out}");
    out["executionArn"].as_str().unwrap().to_string()
}

fn describe(s: &Server, arn: &str) -> Value {
    let (status, out) = s.sfn("DescribeExecution", &json!({"executionArn": arn}));
    assert_eq!(status, 200, "{out}");
    out
}

fn history(s: &Server, arn: &str) -> Vec<Value> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"executionArn": arn, "maxResults": 1000});
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let (status, out) = s.sfn("GetExecutionHistory", &req);
        assert_eq!(status, 200, "{out}");
        events.extend(out["events"].as_array().unwrap().iter().cloned());
        match out["nextToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return events,
        }
    }
}

/// Waits until every execution has ended; their descriptions.
fn wait_all(s: &Server, arns: &[String], timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut done: BTreeMap<String, Value> = BTreeMap::new();
    while done.len() < arns.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} executions ended in time",
            done.len(),
            arns.len()
        );
        for a in arns {
            if done.contains_key(a) {
                continue;
            }
            let d = describe(s, a);
            if d["status"] != "RUNNING" {
                done.insert(a.clone(), d);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    arns.iter().map(|a| done[a].clone()).collect()
}

/// History ids increase by one from 1; every state entered is exited once, except the
/// ones where a crash cut the step (re-entered after the restart, exited then).
fn check_history(events: &[Value]) {
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["id"], json!(i + 1), "ids increase by one: {e}");
    }
    let mut open: BTreeMap<String, i64> = BTreeMap::new();
    for e in events {
        let ty = e["type"].as_str().unwrap();
        let name = e["stateEnteredEventDetails"]["name"]
            .as_str()
            .or(e["stateExitedEventDetails"]["name"].as_str());
        if let Some(n) = name {
            let c = open.entry(n.to_string()).or_default();
            if ty.ends_with("StateEntered") {
                *c += 1;
            } else if ty.ends_with("StateExited") {
                *c -= 1;
            }
        }
    }
    for (state, count) in open {
        // Inside a Map the same states run once per iteration; enters and exits balance.
        assert_eq!(count, 0, "state {state} entered and exited unevenly");
    }
}

#[test]
fn kill_9_during_200_executions_loses_nothing() {
    let mut s = Server::start(&[]);
    s.deploy(
        "wf-double",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async (e) => ({ n: e.n * 2 });",
        )],
    );
    s.deploy(
        "wf-add",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async (e) => e.base + e.item;",
        )],
    );
    let (status, q) = s.put_json("/v1/queues/wf-effects", &json!({}));
    assert!(status < 300, "{q}");
    let queue_url = format!("{}/000000000000/wf-effects", s.base());
    let def = json!({
        "StartAt": "Prepare",
        "States": {
            "Prepare": {"Type": "Pass", "Parameters": {"n.$": "$.n"}, "Next": "Double"},
            "Double": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:000000000000:function:wf-double", "Next": "Pause"},
            "Pause": {"Type": "Wait", "Seconds": 2, "Next": "Both"},
            "Both": {"Type": "Parallel", "ResultPath": "$.both", "Next": "Each", "Branches": [
                {"StartAt": "Again", "States": {"Again": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:000000000000:function:wf-double", "End": true}}},
                {"StartAt": "Same", "States": {"Same": {"Type": "Pass", "End": true}}}
            ]},
            "Each": {"Type": "Map", "ItemsPath": "$.both", "MaxConcurrency": 2, "ResultPath": "$.sums",
                     "ItemSelector": {"base.$": "$.n", "item.$": "$$.Map.Item.Value.n"},
                     "ItemProcessor": {"StartAt": "Add", "States": {"Add": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:000000000000:function:wf-add", "End": true}}},
                     "Next": "Effect"},
            "Effect": {"Type": "Task", "Resource": "arn:aws:states:::sqs:sendMessage",
                       "Parameters": {"QueueUrl": queue_url, "MessageBody": {"execution.$": "$$.Execution.Name", "sums.$": "$.sums"}},
                       "ResultPath": null, "End": true}
        }
    });
    let m = machine(&s, "durable", &def, "STANDARD");
    let arns: Vec<String> = (0..200)
        .map(|i| start(&s, &m, &format!("run-{i}"), &json!({"n": i})))
        .collect();
    // Mid-flight: some in Tasks, most in the Wait.
    std::thread::sleep(Duration::from_millis(1500));
    s.restart();
    let ended = wait_all(&s, &arns, Duration::from_secs(240));
    for (i, d) in ended.iter().enumerate() {
        assert_eq!(d["status"], "SUCCEEDED", "run-{i}: {d}");
        let out: Value = serde_json::from_str(d["output"].as_str().unwrap()).unwrap();
        let n = 2 * i as i64;
        assert_eq!(out["both"], json!([{"n": 2 * n}, {"n": n}]), "run-{i}");
        assert_eq!(out["sums"], json!([n + 2 * n, n + n]), "run-{i}");
    }
    for a in arns.iter().step_by(20) {
        check_history(&history(&s, a));
    }
    // Every execution's side effect reached the queue (at least once).
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 200 && Instant::now() < deadline {
        let r = s
            .http
            .post(s.url("/v1/queues/wf-effects/receive"))
            .json(&json!({"max": 10, "visibility_timeout": 600}))
            .send()
            .unwrap();
        let body: Value = r.json().unwrap();
        let msgs = body["messages"].as_array().cloned().unwrap_or_default();
        if msgs.is_empty() {
            break;
        }
        for m in msgs {
            let b: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
            seen.insert(b["execution"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        seen.len(),
        200,
        "side effects of {} executions seen",
        seen.len()
    );
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn an_hour_long_wait_survives_a_restart_without_polling() {
    // --time-scale 360: the hour lasts 10 s.
    let mut s = Server::start(&["--time-scale", "360"]);
    let def = json!({"StartAt": "Hour", "States": {
        "Hour": {"Type": "Wait", "Seconds": 3600, "Next": "Done"},
        "Done": {"Type": "Pass", "Result": "waited", "End": true}
    }});
    let m = machine(&s, "hour", &def, "STANDARD");
    let started = Instant::now();
    let arn = start(&s, &m, "long", &json!({}));
    std::thread::sleep(Duration::from_secs(2));
    s.restart();
    // While it waits, the server does not spin: a few CPU ticks over 4 s, not a core.
    std::thread::sleep(Duration::from_secs(1));
    let pid = s.pid();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(4));
    let used = cpu_ticks(pid) - before;
    assert!(used < 100, "{used} ticks of CPU in 4 s of waiting");
    assert_eq!(describe(&s, &arn)["status"], "RUNNING");
    let d = wait_all(&s, std::slice::from_ref(&arn), Duration::from_secs(30)).remove(0);
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "the wait was not cut short"
    );
    assert_eq!(d["status"], "SUCCEEDED");
    assert_eq!(d["output"], "\"waited\"");
    let types: Vec<String> = history(&s, &arn)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        types,
        [
            "ExecutionStarted",
            "WaitStateEntered",
            "WaitStateExited",
            "PassStateEntered",
            "PassStateExited",
            "ExecutionSucceeded"
        ]
    );
}

#[test]
fn a_map_over_10000_items_finishes_in_bounded_memory_within_its_tolerance() {
    let s = Server::start(&[]);
    let map = |pct: u32| {
        json!({"StartAt": "Each", "States": {"Each": {
            "Type": "Map", "MaxConcurrency": 20, "ToleratedFailurePercentage": pct,
            "ItemProcessor": {
                "ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                "StartAt": "Tenth?",
                "States": {
                    "Tenth?": {"Type": "Choice", "Choices": [{"Variable": "$.i", "NumericEquals": 0, "Next": "Bad"}], "Default": "Good"},
                    "Bad": {"Type": "Fail", "Error": "Tenth"},
                    "Good": {"Type": "Pass", "End": true}
                }
            },
            "ItemSelector": {"i.$": "$$.Map.Item.Value"},
            "ResultSelector": {"n.$": "States.ArrayLength($)"},
            "End": true
        }}})
    };
    // Every tenth item fails: 10 % is tolerated, 9 % is not.
    let items: Vec<u32> = (0..10_000).map(|i| i % 10).collect();
    let ok = machine(&s, "many", &map(10), "STANDARD");
    let strict = machine(&s, "many-strict", &map(9), "STANDARD");
    let pid = s.pid();
    let base = rss_kib(pid);
    let run = start(&s, &ok, "all", &json!(items));
    let mut peak = base;
    let deadline = Instant::now() + Duration::from_secs(600);
    let d = loop {
        peak = peak.max(rss_kib(pid));
        let d = describe(&s, &run);
        if d["status"] != "RUNNING" {
            break d;
        }
        assert!(Instant::now() < deadline, "the map did not finish");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    assert_eq!(d["output"], json!({"n": 10_000}).to_string());
    eprintln!("map of 10000: RSS {base} KiB before, {peak} KiB at most");
    assert!(
        peak < base + 256 * 1024,
        "RSS grew from {base} to {peak} KiB"
    );
    // The parent's history holds the map, not its 10,000 iterations.
    let events = history(&s, &run);
    assert!(events.len() < 20, "{} events", events.len());
    let failed = start(&s, &strict, "strict", &json!(items));
    let d = wait_all(&s, &[failed], Duration::from_secs(600)).remove(0);
    assert_eq!(d["status"], "FAILED");
    assert_eq!(d["error"], "States.ExceedToleratedFailureThreshold");
}

fn list_executions(s: &Server, machine: &str) -> Vec<Value> {
    let (status, out) = s.sfn("ListExecutions", &json!({"stateMachineArn": machine}));
    assert_eq!(status, 200, "{out}");
    out["executions"].as_array().unwrap().clone()
}

#[test]
fn bus_rules_destinations_and_routes_start_workflows() {
    let s = Server::start(&[]);
    let echo = json!({"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": true}}});
    let from_bus = machine(&s, "from-bus", &echo, "STANDARD");
    // A bus rule targets the machine: each matching event starts one execution with the
    // event as its input.
    let (status, body) = s.put_json(
        "/v1/buses/default/rules/to-flow",
        &json!({"pattern": {"source": ["shop"]}, "targets": [from_bus]}),
    );
    assert_eq!(status, 200, "{body}");
    let r = s
        .http
        .post(s.url("/v1/buses/default/events"))
        .json(&json!({"Entries": [{"Source": "shop", "DetailType": "Order", "Detail": "{\"id\":7}"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(eventually(Duration::from_secs(10), || {
        list_executions(&s, &from_bus)
            .first()
            .is_some_and(|e| e["status"] == "SUCCEEDED")
    }));
    let run = list_executions(&s, &from_bus).remove(0);
    let d = describe(&s, run["executionArn"].as_str().unwrap());
    let input: Value = serde_json::from_str(d["output"].as_str().unwrap()).unwrap();
    assert_eq!(
        (input["source"].as_str(), input["detail"]["id"].as_i64()),
        (Some("shop"), Some(7))
    );

    // An async invocation's destination starts a workflow with Lambda's record.
    let on_success = machine(&s, "on-success", &echo, "STANDARD");
    s.deploy(
        "wf-src",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async (e) => ({ got: e });")],
    );
    let (status, body) = s.put_json(
        "/2019-09-25/functions/wf-src/event-invoke-config",
        &json!({"DestinationConfig": {"OnSuccess": {"Destination": on_success}}}),
    );
    assert_eq!(status, 200, "{body}");
    let r = s
        .http
        .post(s.url("/2015-03-31/functions/wf-src/invocations"))
        .header("x-amz-invocation-type", "Event")
        .body("{\"n\":1}")
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(eventually(Duration::from_secs(20), || {
        list_executions(&s, &on_success)
            .first()
            .is_some_and(|e| e["status"] == "SUCCEEDED")
    }));
    let run = list_executions(&s, &on_success).remove(0);
    let out: Value = serde_json::from_str(
        describe(&s, run["executionArn"].as_str().unwrap())["output"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(out["responsePayload"], json!({"got": {"n": 1}}));
    assert_eq!(out["requestContext"]["condition"], "Success");

    // A route served by an EXPRESS workflow answers synchronously.
    let greet = json!({"StartAt": "Greet", "States": {"Greet": {"Type": "Pass",
        "Parameters": {"statusCode": 201, "headers": {"x-flow": "yes"},
                       "body.$": "States.Format('hello {}', $.pathParameters.who)"},
        "End": true}}});
    let (status, out) = s.sfn(
        "CreateStateMachine",
        &json!({"name": "greet", "definition": greet.to_string(), "roleArn": ROLE, "type": "EXPRESS",
                "tags": [{"key": "nimbus:route", "value": "GET /greet/{who}"}]}),
    );
    assert_eq!(status, 200, "{out}");
    let r = s.http.get(s.url("/greet/ada")).send().unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["x-flow"], "yes");
    assert_eq!(r.text().unwrap(), "hello ada");
}

#[test]
fn map_results_go_to_the_object_store_and_tasks_read_and_write_objects() {
    let s3 = free_port();
    let s = Server::start(&["--s3-listen", &format!("127.0.0.1:{s3}")]);
    let (status, body) = s.put_json("/v1/buckets/flow-results", &json!({}));
    assert_eq!(status, 200, "{body}");
    let def = json!({"StartAt": "Each", "States": {
        "Each": {"Type": "Map", "ItemsPath": "$.items", "ToleratedFailureCount": 1,
                 "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                     "StartAt": "Zero?", "States": {
                        "Zero?": {"Type": "Choice", "Choices": [{"Variable": "$", "NumericEquals": 0, "Next": "Bad"}], "Default": "Ok"},
                        "Bad": {"Type": "Fail", "Error": "Zero", "Cause": "no zeros"},
                        "Ok": {"Type": "Pass", "End": true}}},
                 "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
                                  "Parameters": {"Bucket": "flow-results", "Prefix": "runs"}},
                 "Next": "Manifest"},
        "Manifest": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                     "Parameters": {"Bucket.$": "$.ResultWriterDetails.Bucket", "Key.$": "$.ResultWriterDetails.Key"},
                     "ResultSelector": {"manifest.$": "States.StringToJson($.Body)"},
                     "Next": "Succeeded"},
        "Succeeded": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:getObject",
                      "Parameters": {"Bucket": "flow-results", "Key.$": "$.manifest.ResultFiles.SUCCEEDED[0].Key"},
                      "ResultSelector": {"results.$": "States.StringToJson($.Body)"},
                      "ResultPath": "$.succeeded",
                      "Next": "Note"},
        "Note": {"Type": "Task", "Resource": "arn:aws:states:::aws-sdk:s3:putObject",
                 "Parameters": {"Bucket": "flow-results", "Key": "note.json", "Body": {"done.$": "$.manifest.MapRunArn"}},
                 "ResultPath": "$.note", "End": true}
    }});
    let m = machine(&s, "writer", &def, "STANDARD");
    let run = start(&s, &m, "w1", &json!({"items": [3, 0, 5]}));
    let d = wait_all(&s, &[run], Duration::from_secs(60)).remove(0);
    assert_eq!(d["status"], "SUCCEEDED", "{d}");
    let out: Value = serde_json::from_str(d["output"].as_str().unwrap()).unwrap();
    let manifest = &out["manifest"];
    assert_eq!(manifest["DestinationBucket"], "flow-results");
    let run_arn = manifest["MapRunArn"].as_str().unwrap();
    assert!(
        run_arn.starts_with("arn:aws:states:us-east-1:000000000000:mapRun:writer/Each:"),
        "{run_arn}"
    );
    assert_eq!(
        manifest["ResultFiles"]["FAILED"].as_array().unwrap().len(),
        1
    );
    let results = out["succeeded"]["results"].as_array().unwrap();
    let outputs: Vec<(u64, &str)> = results
        .iter()
        .map(|r| (r["Index"].as_u64().unwrap(), r["Output"].as_str().unwrap()))
        .collect();
    assert_eq!(outputs, [(0, "3"), (2, "5")]);
    assert!(out["note"]["ETag"].as_str().unwrap().starts_with('"'));
    // The note is an object like any other: read it back over S3.
    let note = s
        .http
        .get(format!("http://127.0.0.1:{s3}/flow-results/note.json"))
        .send()
        .unwrap();
    assert_eq!(note.status().as_u16(), 200);
    assert_eq!(note.json::<Value>().unwrap()["done"], run_arn);
}
