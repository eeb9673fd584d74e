//! Stem cells: a cold start takes a prewarmed, sandboxed runtime that was started before
//! the request (its process is older than the request), specialises it with the
//! function's code and environment, and the pool refills; functions whose environment
//! the interpreter reads at start never take one; `--stem-cells off` spawns a runtime.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A Python handler reporting how long its process has been running (from /proc: start
/// time in clock ticks since boot against the uptime), its instance, cwd and environment.
const PY_AGE: &str = r#"import os
def _age_ms():
    with open('/proc/self/stat') as f:
        start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
        uptime = float(f.read().split()[0])
    return (uptime - start_ticks / os.sysconf('SC_CLK_TCK')) * 1000.0
def handler(event, context):
    return {
        'age_ms': _age_ms(),
        'id': os.environ['AWS_LAMBDA_LOG_STREAM_NAME'],
        'cwd': os.getcwd(),
        'root': os.environ.get('LAMBDA_TASK_ROOT'),
        'greeting': os.environ.get('GREETING'),
        'fn': context.function_name,
        'mem': context.memory_limit_in_mb,
        'stem_marker': os.environ.get('_NIMBUS_STEM'),
    }
"#;

const NODE_AGE: &str = r#"exports.handler = async (event, context) => ({
  age_ms: process.uptime() * 1000,
  id: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
  cwd: process.cwd(),
  root: process.env.LAMBDA_TASK_ROOT,
  greeting: process.env.GREETING,
  fn: context.functionName,
  mem: context.memoryLimitInMB,
  stem_marker: process.env._NIMBUS_STEM === undefined ? null : process.env._NIMBUS_STEM,
});
"#;

/// Invokes `name` once; the result and the request's wall time.
fn timed_invoke(s: &Server, name: &str) -> (Value, Duration, String) {
    let r = s.invoke_with(name, b"{}".to_vec(), &[("X-Amz-Log-Type", "Tail")]);
    let log = r
        .header("x-amz-log-result")
        .map(|b| {
            use base64::Engine;
            String::from_utf8_lossy(
                &base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_default(),
            )
            .into_owned()
        })
        .unwrap_or_default();
    (r.ok(), r.elapsed, log)
}

fn check_cold_start_from_stem(runtime: &str, cfg: Value, file: (&str, &str)) {
    let s = Server::start(&[]);
    wait_for_stem_cells(&s, runtime);
    let hits_before = stem_pool(&s, runtime)["hits"].as_u64().unwrap();
    let mut cfg = cfg;
    cfg["env"] = json!({ "GREETING": "hi" });
    cfg["memory_mb"] = json!(256);
    s.deploy("aged", cfg, &[file]);
    // The stem cell is at least this old when the request arrives.
    std::thread::sleep(Duration::from_millis(1500));
    let t0 = Instant::now();
    let (v, elapsed, log) = timed_invoke(&s, "aged");
    let age = v["age_ms"].as_f64().unwrap();
    assert!(
        age > elapsed.as_secs_f64() * 1000.0 + 500.0,
        "the {runtime} instance's process started {age:.0} ms before it answered, the request took {elapsed:?}: it was not a stem cell\n{}",
        s.log()
    );
    assert!(t0.elapsed() >= elapsed);
    // Specialised: its own code, environment and memory size; no stem marker left.
    assert_eq!(v["cwd"], "/var/task");
    assert_eq!(v["root"], "/var/task");
    assert_eq!(v["greeting"], "hi");
    assert_eq!(v["fn"], "aged");
    assert_eq!(v["mem"].to_string().trim_matches('"'), "256");
    assert_eq!(v["stem_marker"], Value::Null);
    assert!(instance_alive(v["id"].as_str().unwrap()));
    // Lambda's init report still comes with the first invocation.
    assert!(log.contains("Init Duration"), "{log}");
    assert_eq!(
        stem_pool(&s, runtime)["hits"].as_u64().unwrap(),
        hits_before + 1
    );
    // A warm call reuses the same instance; the pool refills for the next cold start.
    let (again, _, _) = timed_invoke(&s, "aged");
    assert_eq!(again["id"], v["id"]);
    wait_for_stem_cells(&s, runtime);
}

#[test]
fn python_cold_start_takes_a_stem_cell() {
    check_cold_start_from_stem("python", python_cfg("app.handler"), ("app.py", PY_AGE));
}

#[test]
fn node_cold_start_takes_a_stem_cell() {
    check_cold_start_from_stem("node", node_cfg("index.handler"), ("index.js", NODE_AGE));
}

/// `PYTHONPATH` is read when the interpreter starts: such a function gets a fresh runtime
/// (whose `PYTHONPATH` works), never a stem cell. And with `--stem-cells off` every cold
/// start is a fresh process, younger than the request.
#[test]
fn startup_variables_and_off_spawn_a_fresh_runtime() {
    let s = Server::start(&[]);
    wait_for_stem_cells(&s, "python");
    let mut cfg = python_cfg("app.handler");
    cfg["env"] = json!({ "PYTHONPATH": "/var/task/lib" });
    let code = format!("import helper\n{PY_AGE}\n_h = handler\ndef handler(e, c):\n    r = _h(e, c)\n    r['helper'] = helper.VALUE\n    return r\n");
    s.deploy(
        "pypath",
        cfg,
        &[("app.py", code.as_str()), ("lib/helper.py", "VALUE = 42\n")],
    );
    let hits = stem_pool(&s, "python")["hits"].clone();
    std::thread::sleep(Duration::from_millis(1500));
    let (v, elapsed, _) = timed_invoke(&s, "pypath");
    assert_eq!(v["helper"], 42);
    assert!(
        v["age_ms"].as_f64().unwrap() < elapsed.as_secs_f64() * 1000.0 + 20.0,
        "a PYTHONPATH function ran in an old process: {v} after {elapsed:?}"
    );
    assert_eq!(stem_pool(&s, "python")["hits"], hits);

    let off = Server::start(&["--stem-cells", "off"]);
    let (status, h) = off.get_json("/v1/health");
    assert_eq!(status, 200);
    assert_eq!(h["stem_cells"]["enabled"], false, "{h}");
    off.deploy("fresh", python_cfg("app.handler"), &[("app.py", PY_AGE)]);
    std::thread::sleep(Duration::from_millis(1500));
    let (v, elapsed, _) = timed_invoke(&off, "fresh");
    assert!(
        v["age_ms"].as_f64().unwrap() < elapsed.as_secs_f64() * 1000.0 + 20.0,
        "with --stem-cells off the instance is older than the request: {v} after {elapsed:?}"
    );
}
