//! The executor over a real SQLite flows store, with functions played by Rust closures
//! (the server's runner is tested end to end through the binary).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nimbus_flows::store::sqlite::SqliteFlowStore;
use nimbus_flows::store::*;
use nimbus_workflows::{
    BoxFuture, Config, FunctionCall, StartRequest, TaskOutcome, TaskRunner, Workflows,
};
use serde_json::{json, Value};

const ACCOUNT: &str = "arn:aws:states:us-east-1:000000000000";

type Handler = Arc<dyn Fn(Value) -> Result<Value, (String, String)> + Send + Sync>;

#[derive(Default)]
struct Functions {
    handlers: Mutex<BTreeMap<String, Handler>>,
    calls: AtomicUsize,
    running: AtomicUsize,
    max_running: AtomicUsize,
    delay_ms: std::sync::atomic::AtomicU64,
}

impl Functions {
    fn add(
        &self,
        name: &str,
        f: impl Fn(Value) -> Result<Value, (String, String)> + Send + Sync + 'static,
    ) {
        self.handlers
            .lock()
            .unwrap()
            .insert(name.into(), Arc::new(f));
    }
}

impl TaskRunner for Functions {
    fn invoke<'a>(&'a self, call: FunctionCall<'a>) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_running.fetch_max(now, Ordering::SeqCst);
            let delay = self.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let name = call
                .function
                .rsplit(':')
                .next()
                .unwrap_or(call.function)
                .to_string();
            let h = self.handlers.lock().unwrap().get(&name).cloned();
            let out = match h {
                None => TaskOutcome::Failed {
                    error: "Lambda.ResourceNotFoundException".into(),
                    cause: format!("Function not found: {name}"),
                },
                Some(h) => match h(serde_json::from_str(&call.payload).unwrap()) {
                    Ok(v) => TaskOutcome::Succeeded {
                        output: v,
                        version: "$LATEST".into(),
                    },
                    Err((error, cause)) => TaskOutcome::Failed { error, cause },
                },
            };
            self.running.fetch_sub(1, Ordering::SeqCst);
            out
        })
    }
}

struct Harness {
    wf: Workflows,
    fns: Arc<Functions>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: Option<tempfile::TempDir>,
}

impl Harness {
    fn new(cfg: Config) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::on(dir, cfg, Arc::new(Functions::default()))
    }

    fn on(dir: tempfile::TempDir, cfg: Config, fns: Arc<Functions>) -> Self {
        let store: Arc<dyn FlowStore> = Arc::new(SqliteFlowStore::open(dir.path()).unwrap());
        let wf = Workflows::new(store, fns.clone(), cfg);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let w = wf.clone();
        tokio::spawn(async move {
            w.run(async {
                let _ = rx.await;
            })
            .await
        });
        Harness {
            wf,
            fns,
            stop: Some(tx),
            dir: Some(dir),
        }
    }

    fn machine(&self, name: &str, definition: Value) -> String {
        let arn = format!("{ACCOUNT}:stateMachine:{name}");
        self.wf
            .store()
            .create_machine(
                &NewMachine {
                    arn: arn.clone(),
                    name: name.into(),
                    definition: definition.to_string(),
                    machine_type: MachineType::Standard,
                    role_arn: "arn:aws:iam::000000000000:role/flows".into(),
                    logging: json!({}),
                    tracing: json!({}),
                    tags: BTreeMap::new(),
                    description: String::new(),
                },
                nimbus_workflows::now_millis(),
            )
            .unwrap();
        arn
    }

    async fn run(&self, machine: &str, input: Value) -> Execution {
        let e = self
            .wf
            .start_sync(
                StartRequest {
                    target: machine.into(),
                    input: Some(input.to_string()),
                    ..Default::default()
                },
                Duration::from_secs(30),
            )
            .await
            .unwrap();
        assert!(!e.status.is_open(), "execution still {:?}", e.status);
        e
    }

    fn history(&self, arn: &str) -> Vec<HistoryEvent> {
        self.wf
            .store()
            .history(arn, false, 1000, None)
            .unwrap()
            .items
    }
}

impl Harness {
    /// Stops the step loop and hands the data dir over.
    fn kill(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.dir.take().unwrap()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn output(e: &Execution) -> Value {
    serde_json::from_str(e.output.as_deref().unwrap_or("null")).unwrap()
}

fn types(h: &[HistoryEvent]) -> Vec<&str> {
    h.iter().map(|e| e.event_type.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_choice_and_task_run_with_their_history() {
    let h = Harness::new(Config::default());
    h.fns
        .add("double", |v| Ok(json!({"n": v["n"].as_i64().unwrap() * 2})));
    let m = h.machine(
        "basic",
        json!({"StartAt": "Init", "States": {
            "Init": {"Type": "Pass", "Result": {"n": 21}, "ResultPath": "$.data", "Next": "Double"},
            "Double": {"Type": "Task", "Resource": "arn:aws:lambda:us-east-1:000000000000:function:double",
                       "InputPath": "$.data", "ResultPath": "$.data", "Next": "Big?"},
            "Big?": {"Type": "Choice", "Choices": [{"Variable": "$.data.n", "NumericGreaterThan": 40, "Next": "Yes"}], "Default": "No"},
            "Yes": {"Type": "Succeed", "OutputPath": "$.data"},
            "No": {"Type": "Fail", "Error": "Small"}
        }}),
    );
    let e = h.run(&m, json!({"keep": true})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(output(&e), json!({"n": 42}));
    let hist = h.history(&e.arn);
    assert_eq!(
        types(&hist),
        vec![
            "ExecutionStarted",
            "PassStateEntered",
            "PassStateExited",
            "TaskStateEntered",
            "LambdaFunctionScheduled",
            "LambdaFunctionStarted",
            "LambdaFunctionSucceeded",
            "TaskStateExited",
            "ChoiceStateEntered",
            "ChoiceStateExited",
            "SucceedStateEntered",
            "SucceedStateExited",
            "ExecutionSucceeded",
        ]
    );
    assert!(hist.windows(2).all(|w| w[1].id == w[0].id + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_back_off_then_catch_hands_the_error_on() {
    let h = Harness::new(Config::default());
    let attempts = Arc::new(AtomicUsize::new(0));
    let a = attempts.clone();
    h.fns.add("flaky", move |_| {
        let n = a.fetch_add(1, Ordering::SeqCst);
        if n < 2 {
            Err((
                "Transient".into(),
                "{\"errorMessage\":\"try again\"}".into(),
            ))
        } else {
            Err(("Fatal".into(), "{\"errorMessage\":\"no\"}".into()))
        }
    });
    let m = h.machine(
        "retry",
        json!({"StartAt": "T", "States": {
            "T": {"Type": "Task", "Resource": "flaky", "End": true,
                  "Retry": [{"ErrorEquals": ["Transient"], "IntervalSeconds": 1, "BackoffRate": 1.0, "MaxAttempts": 3}],
                  "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err", "Next": "Handled"}]},
            "Handled": {"Type": "Pass", "End": true}
        }}),
    );
    let started = std::time::Instant::now();
    let e = h.run(&m, json!({"x": 1})).await;
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "two 1 s backoffs"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(
        output(&e),
        json!({"x": 1, "err": {"Error": "Fatal", "Cause": "{\"errorMessage\":\"no\"}"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncaught_error_fails_the_execution() {
    let h = Harness::new(Config::default());
    let m = h.machine(
        "missing",
        json!({"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "nope", "End": true}}}),
    );
    let e = h.run(&m, json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert_eq!(e.error.as_deref(), Some("Lambda.ResourceNotFoundException"));
    let hist = h.history(&e.arn);
    assert_eq!(types(&hist).last(), Some(&"ExecutionFailed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_and_map_fan_out_and_keep_order() {
    let h = Harness::new(Config::default());
    h.fns.delay_ms.store(30, Ordering::SeqCst);
    h.fns.add("sq", |v| Ok(json!(v.as_i64().unwrap().pow(2))));
    let m = h.machine(
        "fan",
        json!({"StartAt": "P", "States": {
            "P": {"Type": "Parallel", "Next": "M", "ResultPath": "$.branches", "Branches": [
                {"StartAt": "A", "States": {"A": {"Type": "Pass", "Result": "a", "End": true}}},
                {"StartAt": "B", "States": {"B": {"Type": "Pass", "Result": "b", "End": true}}}
            ]},
            "M": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 3, "ResultPath": "$.squares", "End": true,
                  "ItemProcessor": {"StartAt": "Sq", "States": {"Sq": {"Type": "Task", "Resource": "sq", "End": true}}}}
        }}),
    );
    let items: Vec<i64> = (0..20).collect();
    let e = h.run(&m, json!({"items": items})).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded, "{e:?}");
    let out = output(&e);
    assert_eq!(out["branches"], json!(["a", "b"]));
    assert_eq!(
        out["squares"],
        json!((0..20).map(|i: i64| i * i).collect::<Vec<_>>())
    );
    assert!(h.fns.max_running.load(Ordering::SeqCst) <= 3);
    let hist = h.history(&e.arn);
    let started = types(&hist)
        .iter()
        .filter(|t| **t == "MapIterationStarted")
        .count();
    let done = types(&hist)
        .iter()
        .filter(|t| **t == "MapIterationSucceeded")
        .count();
    assert_eq!((started, done), (20, 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_failures_beyond_tolerance_fail_the_map() {
    let h = Harness::new(Config::default());
    h.fns.add("odd", |v| {
        if v.as_i64().unwrap() % 2 == 1 {
            Err(("Odd".into(), String::new()))
        } else {
            Ok(v)
        }
    });
    let def = |pct: u32| {
        json!({"StartAt": "M", "States": {
            "M": {"Type": "Map", "ToleratedFailurePercentage": pct, "End": true,
                  "Catch": [{"ErrorEquals": ["States.ExceedToleratedFailureThreshold"], "Next": "Over"}],
                  "ItemProcessor": {"StartAt": "T", "States": {"T": {"Type": "Task", "Resource": "odd", "End": true}}}},
            "Over": {"Type": "Pass", "Result": "over", "End": true}
        }})
    };
    let ok = h.machine("tolerant", def(50));
    let e = h.run(&ok, json!([0, 1, 2, 3])).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(output(&e)[0], json!(0));
    assert_eq!(output(&e)[1]["Error"], json!("Odd"));
    let strict = h.machine("strict", def(25));
    let e = h.run(&strict, json!([0, 1, 2, 3])).await;
    assert_eq!(output(&e), json!("over"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_are_timers_and_the_time_scale_shortens_them() {
    let h = Harness::new(Config {
        time_scale: 3600,
        ..Config::default()
    });
    let m = h.machine(
        "wait",
        json!({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": true}}}),
    );
    let t = std::time::Instant::now();
    let e = h.run(&m, json!({"a": 1})).await;
    assert!(t.elapsed() >= Duration::from_millis(1000));
    assert_eq!(output(&e), json!({"a": 1}));
    assert_eq!(
        types(&h.history(&e.arn)),
        vec![
            "ExecutionStarted",
            "WaitStateEntered",
            "WaitStateExited",
            "ExecutionSucceeded"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_tokens_wait_for_send_task_success_and_time_out() {
    let h = Harness::new(Config::default());
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let t = tokens.clone();
    h.fns.add("ask", move |v| {
        t.lock()
            .unwrap()
            .push(v["token"].as_str().unwrap().to_string());
        Ok(json!({}))
    });
    let m = h.machine(
        "callback",
        json!({"StartAt": "Ask", "States": {
            "Ask": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                    "Parameters": {"FunctionName": "ask", "Payload": {"token.$": "$$.Task.Token"}},
                    "TimeoutSeconds": 2, "ResultPath": "$.answer", "End": true,
                    "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "Late"}]},
            "Late": {"Type": "Pass", "Result": "late", "End": true}
        }}),
    );
    let started =
        h.wf.start(StartRequest {
            target: m.clone(),
            input: Some("{\"q\":1}".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = loop {
        if let Some(t) = tokens.lock().unwrap().first().cloned() {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        h.wf.task_success(&token, "{\"ok\":true}".into())
            .await
            .unwrap(),
        TokenAnswer::Accepted
    );
    let e = wait_end(&h, &started.execution.arn).await;
    assert_eq!(output(&e), json!({"q": 1, "answer": {"ok": true}}));
    // No answer: the timeout fires and Catch takes over.
    let started =
        h.wf.start(StartRequest {
            target: m,
            input: Some("{}".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let e = wait_end(&h, &started.execution.arn).await;
    assert_eq!(output(&e), json!("late"));
    let late = tokens.lock().unwrap()[1].clone();
    assert_eq!(
        h.wf.task_success(&late, "{}".into()).await.unwrap(),
        TokenAnswer::Closed
    );
}

async fn wait_end(h: &Harness, arn: &str) -> Execution {
    for _ in 0..500 {
        let e = h.wf.describe(arn).await.unwrap();
        if !e.status.is_open() {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{arn} did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_engine_resumes_what_a_dead_one_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let fns = Arc::new(Functions::default());
    fns.add("id", Ok);
    let cfg = Config {
        lease: Duration::from_millis(600),
        ..Config::default()
    };
    let h = Harness::on(dir, cfg.clone(), fns.clone());
    let m = h.machine(
        "resume",
        json!({"StartAt": "W", "States": {
            "W": {"Type": "Wait", "Seconds": 1, "Next": "T"},
            "T": {"Type": "Task", "Resource": "id", "End": true}
        }}),
    );
    let mut arns = Vec::new();
    for i in 0..10 {
        let s =
            h.wf.start(StartRequest {
                target: m.clone(),
                input: Some(format!("{{\"i\":{i}}}")),
                ..Default::default()
            })
            .await
            .unwrap();
        arns.push(s.execution.arn);
    }
    // The engine dies while every execution waits.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dir = h.kill();
    assert_eq!(dir.path(), path);
    let h2 = Harness::on(dir, cfg, fns);
    for (i, arn) in arns.iter().enumerate() {
        let e = wait_end(&h2, arn).await;
        assert_eq!(e.status, ExecutionStatus::Succeeded);
        assert_eq!(output(&e), json!({"i": i}));
        let hist = h2.history(arn);
        assert_eq!(
            types(&hist)
                .iter()
                .filter(|t| t.ends_with("StateEntered"))
                .count(),
            2
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_executions_run_sync_and_fail_the_parent_task() {
    let h = Harness::new(Config::default());
    h.fns
        .add("inc", |v| Ok(json!(v["n"].as_i64().unwrap() + 1)));
    let child = h.machine(
        "child",
        json!({"StartAt": "Inc", "States": {
            "Inc": {"Type": "Task", "Resource": "inc", "Next": "Big?"},
            "Big?": {"Type": "Choice", "Choices": [{"Variable": "$", "NumericGreaterThan": 10, "Next": "Boom"}], "Default": "Ok"},
            "Ok": {"Type": "Succeed"},
            "Boom": {"Type": "Fail", "Error": "TooBig", "Cause": "over ten"}
        }}),
    );
    let parent = h.machine(
        "parent",
        json!({"StartAt": "Child", "States": {
            "Child": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync:2",
                      "Parameters": {"StateMachineArn": child, "Input": {"n.$": "$.n"}},
                      "ResultSelector": {"out.$": "$.Output", "status.$": "$.Status"},
                      "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.failed", "Next": "Failed"}],
                      "End": true},
            "Failed": {"Type": "Pass", "End": true}
        }}),
    );
    let e = h.run(&parent, json!({"n": 1})).await;
    assert_eq!(output(&e), json!({"out": 2, "status": "SUCCEEDED"}));
    let e = h.run(&parent, json!({"n": 10})).await;
    let out = output(&e);
    assert_eq!(out["failed"]["Error"], "States.TaskFailed");
    let cause: Value = serde_json::from_str(out["failed"]["Cause"].as_str().unwrap()).unwrap();
    assert_eq!(
        (cause["Status"].as_str(), cause["Error"].as_str()),
        (Some("FAILED"), Some("TooBig"))
    );
    // Request-response: the child's ARN at once.
    let fire = h.machine(
        "fire",
        json!({"StartAt": "Child", "States": {
            "Child": {"Type": "Task", "Resource": "arn:aws:states:::states:startExecution",
                      "Parameters": {"StateMachineArn": child, "Input": {"n": 3}, "Name": "fired"}, "End": true}
        }}),
    );
    let e = h.run(&fire, json!({})).await;
    let arn = output(&e)["ExecutionArn"].as_str().unwrap().to_string();
    assert!(arn.ends_with(":execution:child:fired"), "{arn}");
    let c = wait_end(&h, &arn).await;
    assert_eq!(output(&c), json!(4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: cargo test -p nimbus-workflows --release --test executor -- --ignored map_memory --nocapture"]
async fn map_memory_over_repeated_fan_outs() {
    let h = Harness::new(Config::default());
    let m = h.machine(
        "big",
        json!({"StartAt": "M", "States": {"M": {"Type": "Map", "MaxConcurrency": 20, "End": true,
            "ResultSelector": {"n.$": "States.ArrayLength($)"},
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED"}, "StartAt": "P",
                              "States": {"P": {"Type": "Pass", "End": true}}}}}}),
    );
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
            .unwrap()
    };
    eprintln!("RSS before: {}", rss());
    for n in [5_000u32; 16] {
        let t = std::time::Instant::now();
        let input = json!((0..n).collect::<Vec<u32>>()).to_string();
        let req = StartRequest {
            target: m.clone(),
            input: Some(input),
            ..Default::default()
        };
        let e =
            h.wf.start_sync(req, Duration::from_secs(600))
                .await
                .unwrap();
        eprintln!(
            "{n} items in {:?}: {:?}; RSS {}",
            t.elapsed(),
            e.output,
            rss()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_task_first_in_an_iteration_announces_the_iteration_once() {
    let h = Harness::new(Config::default());
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let t = tokens.clone();
    h.fns.add("ask", move |v| {
        t.lock()
            .unwrap()
            .push(v["token"].as_str().unwrap().to_string());
        Ok(json!({}))
    });
    let m = h.machine(
        "approve-each",
        json!({"StartAt": "Each", "States": {"Each": {"Type": "Map", "End": true,
            "ItemProcessor": {"StartAt": "Ask", "States": {"Ask": {"Type": "Task",
                "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                "Parameters": {"FunctionName": "ask", "Payload": {"token.$": "$$.Task.Token"}},
                "End": true}}}}}}),
    );
    let started =
        h.wf.start(StartRequest {
            target: m,
            input: Some("[1,2]".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let asked = loop {
        let t = tokens.lock().unwrap().clone();
        if t.len() == 2 {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for (i, token) in asked.iter().enumerate() {
        h.wf.task_success(token, format!("{{\"ok\":{i}}}"))
            .await
            .unwrap();
    }
    let e = wait_end(&h, &started.execution.arn).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    let hist = h.history(&e.arn);
    let count = |ty: &str| types(&hist).iter().filter(|t| **t == ty).count();
    assert_eq!(
        (
            count("MapIterationStarted"),
            count("TaskStateEntered"),
            count("MapIterationSucceeded")
        ),
        (2, 2, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choice_assigns_what_its_matched_rule_says() {
    let h = Harness::new(Config::default());
    // Two rules and the default share a target: each path assigns its own value.
    let m = h.machine(
        "assign",
        json!({"StartAt": "C", "States": {
            "C": {"Type": "Choice", "Assign": {"via": "default"}, "Default": "Out",
                  "Choices": [
                      {"Variable": "$.n", "NumericEquals": 1, "Next": "Out", "Assign": {"via": "one"}},
                      {"Variable": "$.n", "NumericEquals": 2, "Next": "Out", "Assign": {"via": "two"}}]},
            "Out": {"Type": "Pass", "Parameters": {"via.$": "$via"}, "End": true}
        }}),
    );
    for (n, via) in [(1, "one"), (2, "two"), (3, "default")] {
        let e = h.run(&m, json!({"n": n})).await;
        assert_eq!(output(&e), json!({"via": via}), "n = {n}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_resumes_at_the_state_that_failed() {
    let h = Harness::new(Config::default());
    let first_runs = Arc::new(AtomicUsize::new(0));
    let f = first_runs.clone();
    h.fns.add("first", move |v| {
        f.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"n": v["n"].as_i64().unwrap() + 1}))
    });
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b = broken.clone();
    h.fns.add("second", move |v| {
        if b.load(Ordering::SeqCst) {
            Err(("Down".into(), "the service is down".into()))
        } else {
            Ok(json!({"n": v["n"].as_i64().unwrap() * 10}))
        }
    });
    let m = h.machine(
        "redrive",
        json!({"StartAt": "First", "States": {
            "First": {"Type": "Task", "Resource": "first", "Next": "Second"},
            "Second": {"Type": "Task", "Resource": "second", "End": true}
        }}),
    );
    let e = h.run(&m, json!({"n": 1})).await;
    assert_eq!(
        (e.status, e.error.as_deref()),
        (ExecutionStatus::Failed, Some("Down"))
    );
    broken.store(false, Ordering::SeqCst);
    h.wf.redrive(&e.arn).await.unwrap();
    let e = wait_end(&h, &e.arn).await;
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(output(&e), json!({"n": 20}));
    assert_eq!(e.redrive_count, 1);
    assert_eq!(
        first_runs.load(Ordering::SeqCst),
        1,
        "First did not run again"
    );
    let hist = h.history(&e.arn);
    let tail: Vec<&str> = types(&hist)
        .into_iter()
        .skip_while(|t| *t != "ExecutionRedriven")
        .collect();
    assert_eq!(
        tail,
        [
            "ExecutionRedriven",
            "TaskStateEntered",
            "LambdaFunctionScheduled",
            "LambdaFunctionStarted",
            "LambdaFunctionSucceeded",
            "TaskStateExited",
            "ExecutionSucceeded"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_token_task_alive_and_their_absence_fails_it() {
    let h = Harness::new(Config::default());
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let t = tokens.clone();
    h.fns.add("ask", move |v| {
        t.lock()
            .unwrap()
            .push(v["token"].as_str().unwrap().to_string());
        Ok(json!({}))
    });
    let m = h.machine(
        "beat",
        json!({"StartAt": "Ask", "States": {
            "Ask": {"Type": "Task", "Resource": "arn:aws:states:::lambda:invoke.waitForTaskToken",
                    "Parameters": {"FunctionName": "ask", "Payload": {"token.$": "$$.Task.Token"}},
                    "HeartbeatSeconds": 1, "TimeoutSeconds": 30, "End": true,
                    "Catch": [{"ErrorEquals": ["States.HeartbeatTimeout"], "ResultPath": "$.err", "Next": "Silent"}]},
            "Silent": {"Type": "Pass", "End": true}
        }}),
    );
    let token_of = |i: usize| {
        let tokens = tokens.clone();
        async move {
            loop {
                if let Some(t) = tokens.lock().unwrap().get(i).cloned() {
                    return t;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    // Beating every 400 ms for 2.5 s keeps it alive past its 1 s heartbeat; then it is answered.
    let run =
        h.wf.start(StartRequest {
            target: m.clone(),
            input: Some("{}".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = token_of(0).await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            h.wf.task_heartbeat(&token).await.unwrap(),
            TokenAnswer::Accepted
        );
    }
    assert!(h
        .wf
        .describe(&run.execution.arn)
        .await
        .unwrap()
        .status
        .is_open());
    h.wf.task_success(&token, "{\"done\":true}".into())
        .await
        .unwrap();
    let e = wait_end(&h, &run.execution.arn).await;
    assert_eq!(output(&e), json!({"done": true}));
    // No heartbeat: States.HeartbeatTimeout after about a second, and the token is closed.
    let started = std::time::Instant::now();
    let run =
        h.wf.start(StartRequest {
            target: m,
            input: Some("{}".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let token = token_of(1).await;
    let e = wait_end(&h, &run.execution.arn).await;
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(output(&e)["err"]["Error"], "States.HeartbeatTimeout");
    assert_eq!(
        h.wf.task_heartbeat(&token).await.unwrap(),
        TokenAnswer::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_256_kib_fails_past_states_all() {
    let h = Harness::new(Config::default());
    h.fns.add("big", |_| Ok(json!("x".repeat(300 * 1024))));
    let m = h.machine(
        "big",
        json!({"StartAt": "Big", "States": {
            "Big": {"Type": "Task", "Resource": "big", "End": true,
                    "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
            "Caught": {"Type": "Pass", "End": true}
        }}),
    );
    let e = h.run(&m, json!({})).await;
    assert_eq!(e.status, ExecutionStatus::Failed);
    assert_eq!(e.error.as_deref(), Some("States.DataLimitExceeded"));
    assert!(!types(&h.history(&e.arn)).contains(&"PassStateEntered"));
}
