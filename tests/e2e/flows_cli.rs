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

/// `nimbus up` creates the workflows after the functions and updates one when its
/// definition file changes; a broken definition is reported and the watch goes on.
#[test]
fn up_updates_a_workflow_when_its_definition_changes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    struct Child(std::process::Child);
    impl Drop for Child {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("fn/app.py", APP),
            (
                "nimbus.toml",
                "[functions.double]\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n\
                 code = \"fn\"\n\n[[workflows]]\nname = \"orders\"\n\
                 definition = \"flows/orders.asl.json\"\n",
            ),
            ("flows/orders.asl.json", ORDERS),
        ],
    );
    let mut child = Child(
        Command::new(nimbus_bin())
            .arg("up")
            .arg(dir.path())
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    let stderr = child.0.stderr.take().unwrap();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(line);
        }
    });
    let mut printed = String::new();
    let mut wait_for = |wanted: &[&str]| {
        while !wanted.iter().all(|w| printed.contains(w)) {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("nimbus up printed:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
        }
        printed.clone()
    };
    wait_for(&["workflow orders: created", "watching"]);
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
    let out = wait_for(&["workflow orders: updated"]);
    // The function's code did not change: it is not redeployed.
    assert!(!out.contains("redeployed double"), "{out}");
    write_files(dir.path(), &[("flows/orders.asl.json", "{broken")]);
    wait_for(&["orders.asl.json is not valid JSON"]);
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "nimbus up exited:\n{printed}"
    );
}

/// With authentication on, Task states act as the machine's role: a workflow's inline
/// `policy` (the role `wf-NAME`, created by deploy) lets it invoke the function; without
/// one the Task fails with `States.Permissions`, and the CLI says so.
#[test]
fn a_workflow_policy_makes_its_role_under_auth() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"
[functions.double]
runtime = "python3.11"
handler = "app.handler"

[[workflows]]
name = "allowed"
definition = "flow.asl.json"
policy = '''{"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
  "Action": "lambda:InvokeFunction",
  "Resource": "arn:aws:lambda:us-east-1:000000000000:function:double"}]}'''

[[workflows]]
name = "bare"
definition = "flow.asl.json"
"#;
    let flow = r#"{"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "${fn:double}", "End": true}}}"#;
    write_files(
        dir.path(),
        &[
            ("app.py", APP),
            ("nimbus.toml", manifest),
            ("flow.asl.json", flow),
        ],
    );
    let s = Server::start_with_auth(&[]);
    let text = cli_ok(&s.cli(&["deploy", dir.path().to_str().unwrap()])).unwrap();
    assert!(text.contains("role wf-allowed: created"), "{text}");
    assert!(text.contains("workflow allowed: created"), "{text}");
    let out = cli_ok(&s.cli(&[
        "flows",
        "start",
        "allowed",
        "--input",
        r#"{"x": 4}"#,
        "--wait",
    ]))
    .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(out.trim()).unwrap(),
        serde_json::json!({"y": 8})
    );
    let out = s.cli(&["flows", "start", "bare", "--input", r#"{"x": 4}"#, "--wait"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("execution FAILED: States.Permissions"),
        "{err}"
    );
    assert!(err.contains("role/nimbus-workflows"), "{err}");
}

#[test]
fn manifest_workflow_routes_follow_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |routes: &str| {
        format!(
            "[[workflows]]\nname = \"hello\"\ndefinition = \"hello.asl.json\"\ntype = \"EXPRESS\"\n{routes}"
        )
    };
    let hello = r#"{"StartAt": "Say", "States": {"Say": {"Type": "Pass",
        "Parameters": {"greeting.$": "States.Format('hi {}', $.pathParameters.who)"}, "End": true}}}"#;
    write_files(
        dir.path(),
        &[
            (
                "nimbus.toml",
                &manifest("routes = [\"GET /hello/{who}\"]\n"),
            ),
            ("hello.asl.json", hello),
        ],
    );
    let path = dir.path().to_str().unwrap();
    let s = Server::start(&[]);
    let text = cli_ok(&s.cli(&["deploy", path])).unwrap();
    assert!(text.contains("workflow hello: created"), "{text}");
    let r = s.http.get(s.url("/hello/ada")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<serde_json::Value>().unwrap()["greeting"], "hi ada");
    // Another route: only the tag changes, and the old route is gone.
    write_files(
        dir.path(),
        &[("nimbus.toml", &manifest("routes = [\"GET /hi/{who}\"]\n"))],
    );
    let text = cli_ok(&s.cli(&["deploy", path])).unwrap();
    assert!(text.contains("workflow hello: updated"), "{text}");
    assert_eq!(
        s.http
            .get(s.url("/hello/ada"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert_eq!(
        s.http
            .get(s.url("/hi/bo"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    // No routes: none left.
    write_files(dir.path(), &[("nimbus.toml", &manifest(""))]);
    let text = cli_ok(&s.cli(&["deploy", path])).unwrap();
    assert!(text.contains("workflow hello: updated"), "{text}");
    assert_eq!(
        s.http
            .get(s.url("/hi/bo"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}
