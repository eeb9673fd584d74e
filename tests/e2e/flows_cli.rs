//! Workflows from the manifest and the CLI: `[[workflows]]` deployed by `nimbus deploy`
//! (created, unchanged, updated), `${fn:NAME}` and `definition_substitutions` in the
//! definition, and `nimbus flows ls|start --wait|describe|history|stop|rm` against the
//! real server's Step Functions API.

use nimbus_tests::*;

const APP: &str = r#"
def handler(event, context):
    return {"y": int(event["x"]) * 2}
"#;

const MANIFEST: &str = r#"
[functions.double]
runtime = "python3.11"
handler = "app.handler"

[[workflows]]
name = "orders"
definition = "flows/orders.asl.json"

[[workflows]]
name = "slow"
definition = "slow.asl.json"
definition_substitutions = { Delay = "600" }
"#;

const ORDERS: &str = r#"{
  "StartAt": "Double",
  "States": {
    "Double": {"Type": "Task", "Resource": "${fn:double}", "Next": "Both"},
    "Both": {
      "Type": "Parallel",
      "Branches": [
        {"StartAt": "Left", "States": {"Left": {"Type": "Pass", "End": true}}},
        {"StartAt": "Right", "States": {"Right": {"Type": "Pass", "End": true}}}
      ],
      "OutputPath": "$[0]",
      "Next": "Done"
    },
    "Done": {"Type": "Succeed"}
  }
}"#;

const SLOW: &str = r#"{"StartAt": "Hold", "States": {"Hold": {"Type": "Wait", "Seconds": ${Delay}, "End": true}}}"#;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn manifest_workflows_and_the_flows_cli() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("app.py", APP),
            ("nimbus.toml", MANIFEST),
            ("flows/orders.asl.json", ORDERS),
            ("slow.asl.json", SLOW),
        ],
    );
    let path = dir.path().to_str().unwrap();
    let s = Server::start(&[]);

    // Deploy creates both machines, after the function.
    let text = cli_ok(&s.cli(&["deploy", path])).unwrap();
    assert!(text.contains("workflow orders: created"), "{text}");
    assert!(text.contains("workflow slow: created"), "{text}");
    let ls = cli_ok(&s.cli(&["flows", "ls"])).unwrap();
    assert!(
        ls.lines()
            .any(|l| l.starts_with("orders") && l.contains("STANDARD")),
        "{ls}"
    );

    // Start and wait: the function's output, through the Parallel.
    let out = s.cli(&[
        "flows",
        "start",
        "orders",
        "--input",
        r#"{"x":1}"#,
        "--name",
        "run1",
        "--wait",
    ]);
    let stdout = cli_ok(&out).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("output is not JSON ({e}): {stdout}\n{}", stderr(&out)));
    assert_eq!(v, serde_json::json!({"y": 2}));
    assert!(
        stderr(&out).contains(":execution:orders:run1"),
        "{}",
        stderr(&out)
    );

    // Listed, described (short form) and its history readable (bare name resolved).
    let runs = cli_ok(&s.cli(&["flows", "ls", "orders"])).unwrap();
    assert!(
        runs.lines()
            .any(|l| l.starts_with("run1") && l.contains("SUCCEEDED")),
        "{runs}"
    );
    let d = cli_ok(&s.cli(&["flows", "describe", "orders/run1"])).unwrap();
    assert!(d.contains("status     SUCCEEDED"), "{d}");
    assert!(
        d.contains(r#"output     {"y":2}"#) || d.contains(r#""y": 2"#),
        "{d}"
    );
    let h = cli_ok(&s.cli(&["flows", "history", "run1"])).unwrap();
    let line_with = |a: &str, b: &str| h.lines().any(|l| l.contains(a) && l.contains(b));
    assert!(
        h.lines().next().unwrap().contains("ExecutionStarted"),
        "{h}"
    );
    assert!(line_with("TaskStateEntered", "Double"), "{h}");
    assert!(line_with("LambdaFunctionScheduled", "double"), "{h}");
    assert!(line_with("ParallelStateStarted", ""), "{h}");
    // Branch states are indented under the Parallel.
    assert!(
        h.lines()
            .any(|l| l.contains("s    PassStateEntered") && l.contains("Left")),
        "{h}"
    );
    assert!(
        h.lines().last().unwrap().contains("ExecutionSucceeded"),
        "{h}"
    );
    assert!(h.lines().all(|l| l.trim_start().starts_with('+')), "{h}");

    // A failing execution: exit status 1, the error, and where to look.
    let out = s.cli(&["flows", "start", "orders", "--input", "{}", "--wait"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("execution FAILED"), "{err}");
    assert!(err.contains("KeyError"), "{err}");
    assert!(err.contains("nimbus flows history orders/"), "{err}");

    // A running execution stopped; the substitution made the Wait 600 s long.
    let arn = cli_ok(&s.cli(&["flows", "start", "slow", "--name", "hold"]))
        .unwrap()
        .trim()
        .to_string();
    assert!(arn.ends_with(":execution:slow:hold"), "{arn}");
    let stopped = cli_ok(&s.cli(&[
        "flows",
        "stop",
        &arn,
        "--error",
        "Cancelled",
        "--cause",
        "test",
    ]))
    .unwrap();
    assert_eq!(stopped, "stopped slow/hold\n");
    let d = cli_ok(&s.cli(&["flows", "describe", "slow/hold"])).unwrap();
    assert!(d.contains("status     ABORTED"), "{d}");

    // Errors say what to do next.
    let out = s.cli(&["flows", "start", "nope"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("hint: `nimbus flows ls`"),
        "{}",
        stderr(&out)
    );
    let out = s.cli(&["flows", "start", "orders", "--input", "{x"]);
    assert!(
        stderr(&out).contains("--input is not JSON"),
        "{}",
        stderr(&out)
    );

    // Deploying again changes nothing; an edited definition updates the machine.
    let text = cli_ok(&s.cli(&["deploy", path])).unwrap();
    assert!(text.contains("workflow orders: unchanged"), "{text}");
    write_files(
        dir.path(),
        &[(
            "flows/orders.asl.json",
            &ORDERS.replace(
                "\"StartAt\": \"Double\",",
                "\"Comment\": \"v2\", \"StartAt\": \"Double\",",
            ),
        )],
    );
    let text = cli_ok(&s.cli(&["deploy", path])).unwrap();
    assert!(text.contains("workflow orders: updated"), "{text}");
    assert!(text.contains("workflow slow: unchanged"), "{text}");

    // A definition the server refuses names the workflow and the file.
    write_files(
        dir.path(),
        &[("slow.asl.json", r#"{"StartAt": "Nowhere", "States": {}}"#)],
    );
    let out = s.cli(&["deploy", path]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("workflow slow: the server refused"), "{err}");
    assert!(err.contains("InvalidDefinition"), "{err}");

    // Removed.
    assert_eq!(
        cli_ok(&s.cli(&["flows", "rm", "slow"])).unwrap(),
        "removed state machine slow\n"
    );
    let ls = cli_ok(&s.cli(&["flows", "ls"])).unwrap();
    assert!(!ls.contains("slow"), "{ls}");
}
