//! WebAssembly components built from source by `nimbus deploy` (issue 19, the guest side):
//! examples/hello-wasm (Rust, `wasi:http/proxy`), tests/fixtures/spin-hello (Spin's
//! `http-rust` template of Spin 3, spin-sdk 5: WASI 0.2) and examples/wasm-python
//! (componentize-py) through their
//! function URLs and the Invoke API; examples/wasm-event (Rust with crates/nimbus-guest,
//! Nimbus's event world) through Invoke, an async invoke and its schedule, each event in
//! the logs. Build errors say what to install.
//!
//! They need the Rust target wasm32-wasip2 and fail (not skip) without it (.ci/run adds it);
//! componentize-py is installed into target/test-python on first use. The components are
//! built into target/test-wasm (`CARGO_TARGET_DIR`), so the examples stay untouched.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Panics unless rustc has the standard library of wasm32-wasip2.
fn require_wasm_target() {
    nimbus_tests::components::ensure_wasm_target();
}

/// `target/test-wasm`: where the components are built (shared by the tests, cargo locks it).
fn wasm_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test> → target
    exe.ancestors()
        .nth(3)
        .expect("target dir of the test executable")
        .join("test-wasm")
}

/// `nimbus deploy ARGS` against `s` (JSON reply), the components built into
/// target/test-wasm; `path`: the CLI's `PATH` (default: the test's).
fn deploy(s: &Server, args: &[&str], path: Option<std::ffi::OsString>) -> Output {
    let mut cmd = Command::new(nimbus_bin());
    cmd.arg("--json")
        .arg("deploy")
        .args(args)
        .env("NIMBUS_ENDPOINT", s.base())
        .env("CARGO_TARGET_DIR", wasm_target_dir())
        .stdin(Stdio::null());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    cmd.output().expect("run nimbus deploy")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Deploys and checks the reply names `name` and the build said what it ran.
fn deploy_ok(s: &Server, args: &[&str], path: Option<std::ffi::OsString>, name: &str, tool: &str) {
    let out = deploy(s, args, path);
    let reply: Value = serde_json::from_str(&cli_ok(&out).unwrap()).unwrap();
    // a manifest deploys a list of functions, `--name` one
    let one = if reply.is_array() { &reply[0] } else { &reply };
    assert_eq!(one["function"]["name"], name, "{reply}");
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "building {}",
            Path::new(args[0]).file_name().unwrap().to_string_lossy()
        )) && err.contains(tool)
            && err.contains("app.wasm"),
        "{err}"
    );
}

/// GET (or POST `body`) a path of the server: status, content type, body.
fn http(s: &Server, path: &str, body: Option<&str>) -> (u16, String, String) {
    let req = match body {
        Some(b) => s.http.post(s.url(path)).body(b.to_string()),
        None => s.http.get(s.url(path)),
    };
    let r = req.send().unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, r.text().unwrap())
}

/// The function's log lines (`line` of each entry).
fn log_lines(s: &Server, f: &str) -> Vec<String> {
    let (status, v) = s.get_json(&format!("/v1/functions/{f}/logs?limit=10000"));
    assert_eq!(status, 200, "{v}");
    v["logs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l["line"].as_str().map(str::to_string))
        .collect()
}

fn wait_for_log(s: &Server, f: &str, needle: &str, within: Duration) {
    assert!(
        eventually(within, || log_lines(s, f)
            .iter()
            .any(|l| l.contains(needle))),
        "no log line of {f} contains {needle:?}: {:#?}\n{}",
        log_lines(s, f),
        s.log()
    );
}

/// The Invoke API on a `wasi-http` function: an API Gateway v2 event becomes the request
/// (`GET PATH`), the answer a v2 response.
fn invoke_get(s: &Server, f: &str, path: &str) -> Value {
    let event = json!({
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"accept": "*/*"},
        "requestContext": {"http": {"method": "GET", "path": path}},
    });
    s.invoke(f, &event.to_string()).ok()
}

/// PATH with componentize-py (installed into target/test-python) first.
fn path_with_componentize_py() -> std::ffi::OsString {
    let mut dirs = vec![nimbus_tests::python::componentize_py_bin()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).expect("PATH")
}

#[test]
fn wasm_hello_wasm_example_builds_and_serves_http() {
    require_wasm_target();
    let s = Server::start(&[]);
    let dir = repo_root().join("examples/hello-wasm");
    deploy_ok(
        &s,
        &[dir.to_str().unwrap()],
        None,
        "hello-wasm",
        "cargo build --release --target wasm32-wasip2",
    );
    let (_, f) = s.get_json("/v1/functions/hello-wasm");
    assert_eq!(f["config"]["runtime"], "wasi-http", "{f}");
    assert_eq!(f["config"]["handler"], "app.wasm", "{f}");

    // The function URL and the route, the request as it is.
    let (status, ctype, body) = http(&s, "/fn/hello-wasm/?name=ada", None);
    assert_eq!((status, body.as_str()), (200, "Hello, ada!\n"));
    assert_eq!(ctype, "text/plain; charset=utf-8");
    let (status, _, body) = http(&s, "/wasm/hello/bob", None);
    assert_eq!((status, body.as_str()), (200, "Hello, bob!\n"));
    let (status, _, body) = http(&s, "/fn/hello-wasm/", Some("ping pong"));
    assert_eq!((status, body.as_str()), (200, "ping pong"));
    // The Invoke API: a v2 event is the request; any other payload is POSTed to `/`.
    let v = invoke_get(&s, "hello-wasm", "/hello/lambda");
    assert_eq!(v["statusCode"], 200, "{v}");
    assert_eq!(v["body"], "Hello, lambda!\n", "{v}");
    assert_eq!(
        v["headers"]["content-type"], "text/plain; charset=utf-8",
        "{v}"
    );
    let v = s.invoke("hello-wasm", r#"{"any": "event"}"#).ok();
    assert_eq!(v["statusCode"], 200, "{v}");
    assert_eq!(v["body"], r#"{"any": "event"}"#, "{v}");
    // stderr lines are the function's log
    wait_for_log(
        &s,
        "hello-wasm",
        "hello-wasm: GET /?name=ada -> 200",
        Duration::from_secs(10),
    );
}

#[test]
fn wasm_spin_sdk_component_deploys_unchanged() {
    require_wasm_target();
    let s = Server::start(&[]);
    let dir = repo_root().join("tests/fixtures/spin-hello");
    deploy_ok(
        &s,
        &[
            dir.to_str().unwrap(),
            "--name",
            "spin-hello",
            "--runtime",
            "wasi-http",
            "--handler",
            "app.wasm",
            "--url",
        ],
        None,
        "spin-hello",
        "cargo build --release --target wasm32-wasip2",
    );
    // Spin's component, unchanged, behind the function URL and the Invoke API.
    let (status, _, body) = http(&s, "/fn/spin-hello/any/path", None);
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello World!"),
        "{}",
        s.log()
    );
    let out = s.invoke("spin-hello", "{}").ok();
    assert_eq!(out["statusCode"], 200, "{out}");
    assert_eq!(out["body"], "Hello World!");
    assert_eq!(out["headers"]["content-type"], "text/plain");
}

#[test]
fn wasm_python_example_builds_with_componentize_py_and_serves_http() {
    require_wasm_target();
    let s = Server::start(&[]);
    let dir = repo_root().join("examples/wasm-python");
    deploy_ok(
        &s,
        &[dir.to_str().unwrap()],
        Some(path_with_componentize_py()),
        "wasm-python",
        "componentize-py",
    );
    let (status, ctype, body) = http(&s, "/fn/wasm-python/?name=ada", None);
    assert_eq!(status, 200, "{body}\n{}", s.log());
    assert_eq!(ctype, "application/json");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"], "Hello, ada!", "{v}");
    assert_eq!(v["runtime"], "python-wasm", "{v}");
    let (status, _, body) = http(&s, "/py/hello/bob", None);
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["message"],
        "Hello, bob!"
    );
    let (status, _, body) = http(&s, "/fn/wasm-python/", Some("0123456789"));
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"received": 10, "start": "0123456789"})
    );
    wait_for_log(
        &s,
        "wasm-python",
        "wasm-python: GET /?name=ada",
        Duration::from_secs(10),
    );
}

#[test]
fn wasm_event_example_handles_invokes_async_events_and_its_schedule() {
    require_wasm_target();
    // rate(1 minute) fires every second at time scale 60
    let s = Server::start(&["--time-scale", "60"]);
    let dir = repo_root().join("examples/wasm-event");
    deploy_ok(
        &s,
        &[dir.to_str().unwrap()],
        None,
        "wasm-event",
        "cargo build --release --target wasm32-wasip2",
    );

    // The Invoke API: JSON in and out, Lambda's context.
    let r = s.invoke("wasm-event", r#"{"n": 12}"#);
    let v = r.ok();
    assert_eq!(v["n_squared"], 144, "{v}");
    assert_eq!(v["source"], "direct");
    assert_eq!(v["function"], "wasm-event");
    let request_id = r
        .header("x-amzn-requestid")
        .expect("request id")
        .to_string();
    assert_eq!(v["request_id"], request_id.as_str(), "{v}");
    let remaining = v["remaining_ms"].as_u64().unwrap();
    assert!(remaining > 0 && remaining <= 3000, "{v}");

    // Errors: the handler's own, and a `?`-converted one named after its type.
    let r = s.invoke("wasm-event", r#"{"fail": "now"}"#);
    assert!(r.function_error(), "{}", r.body);
    let e = r.json();
    assert_eq!(e["errorType"], "Refused", "{e}");
    assert_eq!(e["errorMessage"], "asked to fail: \"now\"", "{e}");
    let e = s.invoke("wasm-event", r#"{"n": "x"}"#).json();
    assert_eq!(e["errorType"], "ParseIntError", "{e}");

    // An async invoke: accepted at once, handled later, logged.
    let r = s.invoke_with(
        "wasm-event",
        br#"{"n": 5, "tag": "async-7"}"#.to_vec(),
        &[("X-Amz-Invocation-Type", "Event")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    wait_for_log(&s, "wasm-event", "async-7", Duration::from_secs(20));

    // The manifest's schedule (rule schedule-wasm-event) delivers EventBridge's envelope.
    wait_for_log(
        &s,
        "wasm-event",
        "wasm-event: Scheduled Event from aws.events",
        Duration::from_secs(30),
    );
}

#[test]
fn wasm_builds_say_what_is_missing() {
    let s = Server::start(&[]);
    // componentize-py is not on PATH
    let empty = tempfile::tempdir().unwrap();
    let dir = repo_root().join("examples/wasm-python");
    let out = deploy(&s, &[dir.to_str().unwrap()], Some(empty.path().into()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot build wasm-python: componentize-py was not found")
            && err.contains("pip install componentize-py"),
        "{err}"
    );
    // nothing to build the handler from
    let code = tempfile::tempdir().unwrap();
    std::fs::write(code.path().join("README.md"), "no sources").unwrap();
    let out = deploy(
        &s,
        &[
            code.path().to_str().unwrap(),
            "--name",
            "nothing",
            "--runtime",
            "wasm-event",
            "--handler",
            "app.wasm",
        ],
        None,
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("there is no app.wasm") && err.contains("Cargo.toml"),
        "{err}"
    );
    let (status, _) = s.get_json("/v1/functions/nothing");
    assert_eq!(status, 404, "nothing was deployed");
}
