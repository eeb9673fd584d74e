//! Go functions built from source by `nimbus deploy` (host `go build`, the runtime module
//! nimbus.dev/lambda supplied offline from the binary): the Lambda API, the function URL
//! and a route; Lambda-shaped errors; panics; the context deadline; build failures; and
//! the Go runtime's own unit tests. These need Go and fail (not skip) without it.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

/// Panics unless the Go toolchain runs.
fn require_go() {
    match Command::new("go").arg("version").output() {
        Ok(o) if o.status.success() => {}
        other => panic!(
            "these tests need the Go toolchain (`go version` gave {other:?}): apt-get install golang-go — .ci/run installs it"
        ),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// The JSON body of a v2 structured response.
fn body_json(response: &Value) -> Value {
    serde_json::from_str(response["body"].as_str().expect("body is a string")).unwrap()
}

#[test]
fn hello_go_example_builds_and_answers() {
    require_go();
    let s = Server::start(&[]);
    let dir = repo_root().join("examples/hello-go");
    let before = snapshot(&dir);
    let out = s.cli(&["--json", "deploy", dir.to_str().unwrap()]);
    let reply: Value = serde_json::from_str(&cli_ok(&out).unwrap()).unwrap();
    assert_eq!(reply[0]["function"]["name"], "hello-go", "{reply}");
    assert!(
        stderr(&out).contains("building hello-go with go build"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        snapshot(&dir),
        before,
        "the build must not touch the example"
    );
    let (_, f) = s.get_json("/v1/functions/hello-go");
    assert_eq!(f["config"]["runtime"], "go");
    assert_eq!(f["config"]["handler"], "bootstrap");

    // The Lambda Invoke API: the handler gets the event and the context.
    let event = json!({
        "version": "2.0",
        "rawPath": "/direct",
        "pathParameters": {"name": "lambda"},
        "requestContext": {"http": {"method": "POST"}}
    });
    let r = s.invoke("hello-go", &event.to_string());
    let v = r.ok();
    assert_eq!(v["statusCode"], 200, "{v}");
    let b = body_json(&v);
    assert_eq!(b["message"], "Hello, lambda from Go!");
    assert_eq!(b["path"], "/direct");
    assert_eq!(b["method"], "POST");
    assert_eq!(b["function"], "hello-go:$LATEST");
    assert_eq!(
        b["requestId"].as_str().unwrap(),
        r.header("x-amzn-requestid").unwrap()
    );
    let left = b["remainingMs"].as_i64().unwrap();
    assert!(left > 0 && left <= 3000, "remaining time {left}");

    // The function URL and the route from nimbus.toml.
    s.check_hello_example("hello-go", "/go/hello", "Go");

    // Builds are reproducible: deploying the same sources again changes nothing.
    let again: Value = serde_json::from_str(
        &cli_ok(&s.cli(&["--json", "deploy", dir.to_str().unwrap()])).unwrap(),
    )
    .unwrap();
    assert_eq!(again[0]["version"], reply[0]["version"], "{again}");
    assert_eq!(
        again[0]["function"]["code_sha256"],
        reply[0]["function"]["code_sha256"]
    );
}

/// A handler with every outcome, selected by the event.
const GO_FN: &str = r#"package main

import (
	"context"
	"errors"
	"os"
	"time"

	"nimbus.dev/lambda/lambda"
	"nimbus.dev/lambda/lambdacontext"
)

type Event struct {
	Mode string `json:"mode"`
}

type NotFound struct{ What string }

func (e *NotFound) Error() string { return e.What + " not found" }

func explode() { panic("boom") }

// Process state: counts the invocations this runtime has served.
var invocations int

func handler(ctx context.Context, e Event) (map[string]interface{}, error) {
	invocations++
	switch e.Mode {
	case "error":
		return nil, errors.New("something broke")
	case "custom":
		return nil, &NotFound{What: "the thing"}
	case "panic":
		explode()
	}
	lc, ok := lambdacontext.FromContext(ctx)
	deadline, hasDeadline := ctx.Deadline()
	return map[string]interface{}{
		"mode":        e.Mode,
		"hasContext":  ok,
		"requestId":   lc.AwsRequestID,
		"arn":         lc.InvokedFunctionArn,
		"hasDeadline": hasDeadline,
		"remainingMs": time.Until(deadline).Milliseconds(),
		"function":    lambdacontext.FunctionName,
		"version":     lambdacontext.FunctionVersion,
		"memory":      lambdacontext.MemoryLimitInMB,
		"pid":         os.Getpid(),
		"count":       invocations,
	}, nil
}

func main() {
	lambda.Start(handler)
}
"#;

#[test]
fn go_errors_panics_and_context() {
    require_go();
    let s = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = &tmp.path().join("gofn");
    // No `require` line: the build adds it (in its own copy of go.mod).
    write_files(
        src,
        &[("go.mod", "module gofn\n\ngo 1.19\n"), ("main.go", GO_FN)],
    );
    let p = src.to_str().unwrap();
    cli_ok(&s.cli(&[
        "deploy",
        p,
        "--name",
        "gofn",
        "--runtime",
        "go",
        "--timeout",
        "2",
        "--memory",
        "256",
    ]))
    .unwrap();
    assert_eq!(
        std::fs::read_to_string(src.join("go.mod")).unwrap(),
        "module gofn\n\ngo 1.19\n"
    );
    assert!(!src.join("go.sum").exists() && !src.join("bootstrap").exists());

    // Success: the context carries the request, the deadline and the function's metadata.
    let r = s.invoke("gofn", r#"{"mode":"ok"}"#);
    let v = r.ok();
    assert_eq!(v["mode"], "ok");
    assert_eq!(v["hasContext"], true);
    assert_eq!(
        v["requestId"].as_str().unwrap(),
        r.header("x-amzn-requestid").unwrap()
    );
    assert!(
        v["arn"].as_str().unwrap().starts_with("arn:aws:lambda:")
            && v["arn"].as_str().unwrap().ends_with(":function:gofn"),
        "{v}"
    );
    assert_eq!(v["hasDeadline"], true);
    let left = v["remainingMs"].as_i64().unwrap();
    assert!(left > 1000 && left <= 2000, "remaining time {left} of 2 s");
    assert_eq!(v["function"], "gofn");
    assert_eq!(v["version"], "$LATEST");
    assert_eq!(v["memory"], 256);
    let pid = v["pid"].as_i64().unwrap();

    // A returned error: Lambda's shape, errorType is the Go type name (as aws-lambda-go).
    let r = s.invoke("gofn", r#"{"mode":"error"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        r.json(),
        json!({"errorMessage": "something broke", "errorType": "errorString"})
    );
    let r = s.invoke("gofn", r#"{"mode":"custom"}"#);
    assert!(r.function_error());
    assert_eq!(
        r.json(),
        json!({"errorMessage": "the thing not found", "errorType": "NotFound"})
    );
    // An event that does not decode into the handler's type.
    let r = s.invoke("gofn", r#"{"mode":5}"#);
    assert!(r.function_error());
    assert_eq!(r.json()["errorType"], "UnmarshalTypeError");
    // Errors keep the runtime and its state: the same process answers, and it has
    // counted every call that reached the handler (not the one that did not decode).
    let v = s.invoke("gofn", r#"{"mode":"ok"}"#).ok();
    assert_eq!(
        v["pid"].as_i64().unwrap(),
        pid,
        "errors do not restart the runtime"
    );
    assert_eq!(v["count"], 4, "{v}");

    // A panic: reported with its stack, then the runtime starts afresh (aws-lambda-go
    // exits and Lambda re-initializes; Nimbus's Go runtime re-executes itself), and the
    // next call is answered with fresh state.
    let r = s.invoke("gofn", r#"{"mode":"panic"}"#);
    assert_eq!(r.status, 200);
    assert!(r.function_error(), "{}", r.body);
    let e = r.json();
    assert_eq!(e["errorType"], "string");
    assert_eq!(e["errorMessage"], "boom");
    let stack = e["stackTrace"].as_array().expect("a stack trace");
    assert_eq!(stack[0]["label"], "explode", "{e}");
    assert_eq!(stack[0]["path"], "gofn/main.go", "{e}");
    assert!(stack[0]["line"].as_i64().unwrap() > 0);
    assert_eq!(stack[1]["label"], "handler", "{e}");
    let v = s.invoke("gofn", r#"{"mode":"after-panic"}"#).ok();
    assert_eq!(v["mode"], "after-panic");
    assert_eq!(v["count"], 1, "fresh state after the panic: {v}");
    let v = s.invoke("gofn", r#"{"mode":"ok"}"#).ok();
    assert_eq!(v["count"], 2, "{v}");

    // The CLI reports a Go error like any function error.
    let out = s.cli(&["invoke", "gofn", "--data", r#"{"mode":"custom"}"#]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("NotFound"), "{}", stderr(&out));

    // The same sources as a provided.al2023 function.
    cli_ok(&s.cli(&[
        "deploy",
        p,
        "--name",
        "gofn-provided",
        "--runtime",
        "provided.al2023",
    ]))
    .unwrap();
    let v = s.invoke("gofn-provided", r#"{"mode":"ok"}"#).ok();
    assert_eq!(v["function"], "gofn-provided");
}

#[test]
fn go_build_failures_are_explained() {
    require_go();
    let s = Server::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let src = &tmp.path().join("broken");
    write_files(
        src,
        &[
            ("go.mod", "module broken\n\ngo 1.19\n\nrequire nimbus.dev/lambda v0.0.0\n"),
            (
                "main.go",
                "package main\n\nimport \"nimbus.dev/lambda/lambda\"\n\nfunc main() {\n\tlambda.Start(undefinedHandler)\n}\n",
            ),
        ],
    );
    let out = s.cli(&[
        "deploy",
        src.to_str().unwrap(),
        "--name",
        "broken",
        "--runtime",
        "go",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("building broken failed (go build"), "{err}");
    assert!(
        err.contains("main.go:6:15: undefined: undefinedHandler"),
        "{err}"
    );
    assert!(err.contains("hint: the build runs offline"), "{err}");
    assert_eq!(s.get_json("/v1/functions/broken").0, 404);

    // Modules that are not in the cache cannot be fetched: the message says so.
    write_files(
        src,
        &[(
            "main.go",
            "package main\n\nimport _ \"example.com/not/cached\"\n\nfunc main() {}\n",
        )],
    );
    let out = s.cli(&[
        "deploy",
        src.to_str().unwrap(),
        "--name",
        "broken",
        "--runtime",
        "go",
    ]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("GOPROXY=off"), "{err}");
}

/// The Go runtime's own tests (`runtimes/go`, stdlib only, offline).
#[test]
fn go_runtime_unit_tests() {
    require_go();
    let dir = repo_root().join("runtimes/go");
    for args in [&["vet", "./..."][..], &["test", "-count=1", "./..."]] {
        let out = Command::new("go")
            .args(args)
            .current_dir(&dir)
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .env("GOTOOLCHAIN", "local")
            .env("GOWORK", "off")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "go {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        );
    }
    let out = Command::new("gofmt").arg("-l").arg(&dir).output().unwrap();
    assert!(
        out.stdout.is_empty(),
        "gofmt -w these files:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
