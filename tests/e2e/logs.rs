//! Function output cannot fill the host's disk or the server's memory: a per-invocation
//! byte bound with a marker line, per-function and total bounds of the log store, and the
//! space given back after `nimbus rm` (docs/security.md, "Abuse limits").

use nimbus_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1 << 20;

/// Writes 1 GiB to stdout without a newline.
const NO_NEWLINE: &str = r#"
import sys
def handler(event, context):
    chunk = b"x" * (1 << 20)
    for _ in range(1024):
        sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return "wrote 1 GiB"
"#;

/// Writes 2 GiB in lines of 1 KiB (half to stderr).
const LINES: &str = r#"
import sys
def handler(event, context):
    chunk = (b"y" * 1023 + b"\n") * 1024
    for i in range(2048):
        (sys.stdout if i % 2 else sys.stderr).buffer.write(chunk)
    sys.stdout.buffer.flush()
    sys.stderr.buffer.flush()
    return "wrote 2 GiB"
"#;

fn logs_db_bytes(dir: &Path) -> u64 {
    ["logs.db", "logs.db-wal", "logs.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Bytes of every file in the data dir but the test's own copy of the server's log.
fn data_dir_bytes(dir: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        let Ok(entries) = std::fs::read_dir(p) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| match e.file_type() {
                Ok(t) if t.is_dir() => walk(&e.path()),
                Ok(t) if t.is_file() && e.file_name() != "server.log" => {
                    e.metadata().map_or(0, |m| m.len())
                }
                _ => 0,
            })
            .sum()
    }
    walk(dir)
}

/// Every file of the data dir with its size, for failure messages.
fn listing(dir: &Path) -> String {
    let out = std::process::Command::new("find")
        .arg(dir)
        .args(["-type", "f", "-printf", "%s %P\n"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn vm_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn lines_of(s: &Server, f: &str) -> Vec<Value> {
    let (status, v) = s.get_json(&format!("/v1/functions/{f}/logs?limit=100000"));
    assert_eq!(status, 200, "{v}");
    v["logs"].as_array().cloned().unwrap_or_default()
}

#[test]
fn a_log_flood_stays_within_the_bounds_and_rm_gives_the_space_back() {
    let limit = 64 * MIB;
    let s = Server::start(&[
        "--max-log-bytes",
        &limit.to_string(),
        "--max-log-bytes-per-invocation",
        &(24 * MIB).to_string(),
    ]);
    let dir = s.data_path();
    let pid = s.child.as_ref().unwrap().id();
    let cfg = |h: &str| json!({"runtime": "python3.11", "handler": h, "timeout_s": 120, "memory_mb": 256});
    s.deploy("nonl", cfg("f.handler"), &[("f.py", NO_NEWLINE)]);
    s.deploy("lines", cfg("f.handler"), &[("f.py", LINES)]);
    s.deploy(
        "quiet",
        cfg("q.handler"),
        &[(
            "q.py",
            "def handler(e, c):\n    print('just one line')\n    return 1\n",
        )],
    );
    let (_, h) = s.get_json("/v1/health");
    assert_eq!(h["logs"]["limit_bytes"], limit, "{h}");
    let before = data_dir_bytes(&dir);
    let before_listing = listing(&dir);
    // The log store's size on disk: logs.db with its WAL, or on PostgreSQL
    // (`NIMBUS_TEST_BACKEND=postgres`) the `logs_lines` table with its indexes and TOAST
    // data, as health reports it (`logs.file_bytes`).
    let store_bytes: Arc<dyn Fn() -> u64 + Send + Sync> = if test_backend_is_postgres() {
        let (http, url) = (s.http.clone(), s.url("/v1/health"));
        Arc::new(move || {
            http.get(&url)
                .send()
                .and_then(|r| r.json::<Value>())
                .ok()
                .and_then(|h| h["logs"]["file_bytes"].as_u64())
                .unwrap_or(0)
        })
    } else {
        let dir = dir.clone();
        Arc::new(move || logs_db_bytes(&dir))
    };

    // Sample the log store's size on disk while the floods run.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, store_bytes) = (stop.clone(), peak.clone(), store_bytes.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(store_bytes(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let t0 = std::time::Instant::now();
    // Two of each at once, then again: 6 GiB of output in all.
    let server = &s;
    for _round in 0..2 {
        std::thread::scope(|scope| {
            let calls: Vec<_> = ["nonl", "lines", "nonl", "lines"]
                .into_iter()
                .map(|f| scope.spawn(move || (f, server.invoke(f, "{}"))))
                .collect();
            for c in calls {
                let (f, r) = c.join().unwrap();
                assert!(
                    !r.function_error(),
                    "{f}: {} {}",
                    r.body,
                    s.log()
                        .lines()
                        .rev()
                        .take(20)
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
        });
    }
    let flood_time = t0.elapsed();
    // The last lines reach the store.
    assert!(eventually(Duration::from_secs(10), || {
        let (_, h) = s.get_json("/v1/health");
        h["logs"]["pending_bytes"] == 0
    }));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed).max(store_bytes());
    let hwm_mib = vm_kib(pid, "VmHWM:") / 1024;
    eprintln!(
        "6 GiB of output in {flood_time:?}: log store peak {} MiB (bound {} MiB), server peak RSS {hwm_mib} MiB",
        peak / MIB,
        limit / MIB
    );
    assert!(
        peak <= limit,
        "the log store (logs.db + WAL, or logs_lines) reached {peak} bytes, bound {limit}"
    );
    // The server's memory stays bounded: the capture queue holds at most 32 MiB.
    assert!(hwm_mib < 300, "server peak RSS {hwm_mib} MiB");

    // Each invocation kept its first 24 MiB and one marker line saying what went.
    for f in ["nonl", "lines"] {
        let lines = lines_of(&s, f);
        let markers: Vec<&str> = lines
            .iter()
            .filter_map(|l| l["line"].as_str())
            .filter(|l| l.starts_with("[nimbus] log output truncated:"))
            .collect();
        assert!(!markers.is_empty(), "{f}: no marker line");
        let marker = markers.last().unwrap();
        assert!(
            marker.contains("dropped after")
                && marker.ends_with("of this invocation's 24.0 MiB log limit"),
            "{marker}"
        );
        let stored: usize = lines
            .iter()
            .map(|l| l["line"].as_str().unwrap_or("").len())
            .sum();
        assert!(stored as u64 <= limit, "{f}: {stored} bytes of lines");
        // The platform lines of the last invocation are there.
        let last = lines.last().unwrap()["line"].as_str().unwrap();
        assert!(last.starts_with("REPORT RequestId:"), "{last}");
    }
    let (_, h) = s.get_json("/v1/health");
    assert!(h["logs"]["file_bytes"].as_u64().unwrap() <= limit, "{h}");
    // Another function still logs normally.
    s.invoke("quiet", "{}").ok();
    assert!(eventually(Duration::from_secs(5), || lines_of(&s, "quiet")
        .iter()
        .any(|l| l["line"] == "just one line")));

    // `nimbus rm` gives the space back.
    for f in ["nonl", "lines", "quiet"] {
        cli_ok(&s.cli(&["rm", f])).unwrap();
    }
    let shrunk = eventually(Duration::from_secs(20), || {
        data_dir_bytes(&dir) <= before + before / 10
    });
    assert!(
        shrunk,
        "data dir {} bytes before the floods, {} after rm (logs.db + WAL {})\nbefore:\n{before_listing}\nafter:\n{}",
        before,
        data_dir_bytes(&dir),
        logs_db_bytes(&dir),
        listing(&dir)
    );
    if test_backend_is_postgres() {
        // PostgreSQL keeps a table's pages for reuse (autovacuum gives them to new rows, and
        // back to the file system only at the table's end): what `rm` gives back is every
        // line, and the bytes the store accounts against --max-log-bytes.
        let mut h = Value::Null;
        let emptied = eventually(Duration::from_secs(20), || {
            h = s.get_json("/v1/health").1;
            h["logs"]["lines"] == 0 && h["logs"]["stored_bytes"] == 0
        });
        assert!(emptied, "the log store after rm: {h}");
    }
    assert!(s.healthy());
}

/// `serve --log-format json`: every line the server logs is one JSON object with its
/// timestamp, level, target and message (for Vector, Loki, Fluent Bit); functions' own
/// logs are unaffected.
#[test]
fn server_logs_as_json_lines() {
    let s = Server::start(&["--log-format", "json"]);
    s.deploy(
        "json-logs",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async () => { console.log('from the function'); return 1; };",
        )],
    );
    assert_eq!(s.invoke("json-logs", "{}").ok(), json!(1));
    let log = s.log();
    let mut objects = 0;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        if line.starts_with('{') {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            for key in ["timestamp", "level", "target"] {
                assert!(v[key].is_string(), "no {key}: {line}");
            }
            assert!(v["fields"]["message"].is_string(), "{line}");
            objects += 1;
        } else {
            // What the CLI prints for people (the listening line), never a log line.
            assert!(
                !(line.contains(" INFO ") || line.contains(" WARN ")),
                "a text log line in JSON mode: {line}"
            );
        }
    }
    assert!(objects >= 5, "{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"level\":\"WARN\"") && l.contains("authentication is OFF")),
        "{log}"
    );
    // The function's own line went to its log store, not into the server's lines.
    assert!(!log.contains("from the function"), "{log}");
}

// ------------------------------------------------------------------ structured logs --

const TRACE: &str = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
const TRACE_ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";

const NODE_JSON: &str = r#"
exports.handler = async (event) => {
  console.debug('node debug, dropped at INFO');
  console.info('node info', { a: 1 });
  console.warn({ k: 'v' });
  console.error(new TypeError('node bad'));
  return 'ok';
};
"#;

const PYTHON_JSON: &str = r#"
import logging
logger = logging.getLogger("orders")
logger.setLevel(logging.DEBUG)

def handler(event, context):
    logger.debug("py debug, dropped at INFO")
    logger.info("py info %s", 7, extra={"orderId": 7})
    logger.warning("py careful")
    print("py plain print")
    return "ok"
"#;

fn json_cfg(mut cfg: Value, level: &str) -> Value {
    cfg["logging"] = json!({"format": "json", "application_level": level});
    cfg
}

/// The lines of one invocation (by the request id of its platform.start record).
fn invocation_lines(lines: &[Value], rid: &str) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["request_id"] == rid)
        .cloned()
        .collect()
}

fn parse(line: &Value) -> Value {
    let text = line["line"].as_str().unwrap();
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// LogFormat JSON: the platform lines are Lambda's `platform.*` records, the Node and
/// Python runtimes write their application lines as JSON objects with the request id, DEBUG
/// is dropped at INFO, and every stored line of the invocation carries its trace id and
/// level; `nimbus logs --json` prints them one object per line.
#[test]
fn json_logs_carry_request_and_trace_ids_and_drop_debug_at_info() {
    let s = Server::start(&[]);
    s.deploy(
        "node-json",
        json_cfg(node_cfg("index.handler"), "info"),
        &[("index.js", NODE_JSON)],
    );
    s.deploy(
        "py-json",
        json_cfg(python_cfg("app.handler"), "info"),
        &[("app.py", PYTHON_JSON)],
    );
    for f in ["node-json", "py-json"] {
        let r = s.invoke_with(f, b"{}".to_vec(), &[("X-Amzn-Trace-Id", TRACE)]);
        assert_eq!(r.ok(), json!("ok"));
    }
    let mut seen = std::collections::HashMap::new();
    for (f, want) in [
        (
            "node-json",
            vec![
                ("INFO", json!("node info { a: 1 }")),
                ("WARN", json!({"k": "v"})),
                ("ERROR", Value::Null),
            ],
        ),
        (
            "py-json",
            // Python's own level names (WARNING), as Lambda's runtime writes them.
            vec![
                ("INFO", json!("py info 7")),
                ("WARNING", json!("py careful")),
            ],
        ),
    ] {
        let mut lines = Vec::new();
        assert!(eventually(Duration::from_secs(10), || {
            lines = lines_of(&s, f);
            lines.iter().any(|l| {
                l["stream"] == "platform" && l["line"].as_str().unwrap().contains("platform.report")
            })
        }));
        let start = lines
            .iter()
            .map(parse_platform)
            .find(|v| v["type"] == "platform.start")
            .unwrap_or_else(|| panic!("{f}: no platform.start in {lines:?}"));
        let rid = start["record"]["requestId"].as_str().unwrap().to_string();
        assert_eq!(start["record"]["version"], "$LATEST");
        // The caller's root and sampling decision, with the invocation span as the parent
        // (the span the function is told: see docs/observability.md, "Traces").
        let tracing = &start["record"]["tracing"];
        let span = tracing["spanId"].as_str().unwrap();
        assert_eq!(span.len(), 16, "{start}");
        assert_eq!(
            tracing["value"].as_str().unwrap(),
            format!("Root={TRACE_ROOT};Parent={span};Sampled=1"),
            "{start}"
        );
        assert!(!TRACE.contains(span), "a span of its own: {start}");
        let mine = invocation_lines(&lines, &rid);
        // Every line of the invocation carries its trace id and a level.
        for l in &mine {
            assert_eq!(l["trace_id"], TRACE_ROOT, "{l}");
        }
        let report = mine
            .iter()
            .filter(|l| l["stream"] == "platform")
            .map(parse)
            .find(|v| v["type"] == "platform.report")
            .unwrap();
        let r = &report["record"];
        assert_eq!(r["requestId"], rid.as_str());
        assert_eq!(r["status"], "success");
        for k in [
            "durationMs",
            "billedDurationMs",
            "memorySizeMB",
            "maxMemoryUsedMB",
            "initDurationMs",
        ] {
            assert!(r["metrics"][k].is_number(), "{k} in {report}");
        }
        assert_eq!(r["metrics"]["memorySizeMB"], 128);
        assert!(report["time"].as_str().unwrap().ends_with('Z'), "{report}");
        // platform.runtimeDone is DEBUG: filtered at the default system level INFO.
        assert!(
            !mine
                .iter()
                .any(|l| l["line"].as_str().unwrap().contains("runtimeDone")),
            "{mine:?}"
        );
        // The application lines: Lambda's JSON, with the request id; DEBUG dropped.
        let app: Vec<Value> = mine
            .iter()
            .filter(|l| l["stream"] != "platform" && l["line"].as_str().unwrap().starts_with('{'))
            .map(parse)
            .collect();
        assert_eq!(app.len(), want.len(), "{f}: {app:?}");
        for (v, (level, message)) in app.iter().zip(&want) {
            assert_eq!(v["level"], *level, "{v}");
            assert_eq!(v["requestId"], rid.as_str(), "{v}");
            assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
            if !message.is_null() {
                assert_eq!(v["message"], *message, "{v}");
            }
        }
        assert!(
            !mine
                .iter()
                .any(|l| l["line"].as_str().unwrap().contains("dropped at INFO")),
            "{mine:?}"
        );
        // The stored level follows the line's own.
        let levels: Vec<&str> = mine
            .iter()
            .filter(|l| l["stream"] != "platform")
            .filter_map(|l| l["level"].as_str())
            .collect();
        let stored: Vec<&str> = want
            .iter()
            .map(|(l, _)| if *l == "WARNING" { "WARN" } else { *l })
            .collect();
        assert_eq!(levels, stored, "{mine:?}");
        seen.insert(f, (rid, app));
    }
    // Node: an Error is Lambda's {errorType, errorMessage, stackTrace} message.
    let node_err = &seen["node-json"].1[2]["message"];
    assert_eq!(node_err["errorType"], "TypeError", "{node_err}");
    assert_eq!(node_err["errorMessage"], "node bad");
    // Python: the logger's name and extra fields; print stays plain text (no level).
    let py = &seen["py-json"].1[0];
    assert_eq!(py["logger"], "orders");
    assert_eq!(py["orderId"], 7);
    let py_lines = lines_of(&s, "py-json");
    let print = py_lines
        .iter()
        .find(|l| l["line"] == "py plain print")
        .expect("the print line");
    assert!(print.get("level").is_none(), "{print}");
    assert_eq!(print["trace_id"], TRACE_ROOT);

    // `nimbus logs --json`: one object per line, with level and trace id.
    let out = cli_ok(&s.cli(&["logs", "py-json", "--json"])).unwrap();
    let objects: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(objects.len(), py_lines.len(), "{out}");
    assert!(objects.iter().all(|o| o["trace_id"] == TRACE_ROOT), "{out}");
    assert!(objects.iter().any(|o| o["level"] == "WARN"), "{out}");
}

/// A platform line parsed (text lines as `null`).
fn parse_platform(l: &Value) -> Value {
    if l["stream"] != "platform" {
        return Value::Null;
    }
    serde_json::from_str(l["line"].as_str().unwrap()).unwrap_or(Value::Null)
}

/// At `application_level = "warn"` and system level WARN, INFO lines and the platform's
/// start/report records go too; at DEBUG the platform's DEBUG record (runtimeDone) comes.
#[test]
fn levels_filter_application_and_system_lines() {
    let s = Server::start(&[]);
    let mut warn = json_cfg(python_cfg("app.handler"), "warn");
    warn["logging"]["system_level"] = json!("warn");
    s.deploy("py-warn", warn, &[("app.py", PYTHON_JSON)]);
    let mut debug = json_cfg(python_cfg("app.handler"), "debug");
    debug["logging"]["system_level"] = json!("debug");
    s.deploy("py-debug", debug, &[("app.py", PYTHON_JSON)]);
    // Levels need the JSON format (Lambda's rule), at deploy too.
    let mut bad = python_cfg("app.handler");
    bad["logging"] = json!({"application_level": "debug"});
    let (status, body) = s.deploy_zip("py-bad", bad, &zip_files(&[("app.py", PYTHON_JSON)]));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("LogFormat"), "{body}");

    s.invoke("py-warn", "{}").ok();
    s.invoke("py-debug", "{}").ok();
    // Each function's lines once `last` is stored (the platform lines after the call's own
    // may come in a later batch).
    let text = |f: &str, last: &str| -> Vec<String> {
        let mut lines = Vec::new();
        assert!(eventually(Duration::from_secs(5), || {
            lines = lines_of(&s, f);
            lines
                .iter()
                .any(|l| l["line"].as_str().unwrap().contains(last))
        }));
        lines
            .iter()
            .map(|l| l["line"].as_str().unwrap().to_string())
            .collect()
    };
    let w = text("py-warn", "py careful");
    assert!(w.iter().any(|l| l.contains("py careful")), "{w:?}");
    // INFO lines go, and so do lines without a level (print), which count as INFO.
    assert!(!w.iter().any(|l| l.contains("py info")), "{w:?}");
    assert!(!w.iter().any(|l| l.contains("py plain print")), "{w:?}");
    assert!(!w.iter().any(|l| l.contains("platform.")), "{w:?}");
    let d = text("py-debug", "platform.report");
    for want in [
        "py debug, dropped at INFO",
        "py info 7",
        "platform.runtimeDone",
        "platform.report",
    ] {
        assert!(d.iter().any(|l| l.contains(want)), "{want}: {d:?}");
    }
}

const TEXT_FN: &str = r#"
import logging
def handler(event, context):
    logging.getLogger().setLevel(logging.INFO)
    logging.info("text info %s", event.get("n"))
    logging.error("text error %s", event.get("n"))
    print("marker-" + str(event.get("n")))
    return event.get("n")
"#;

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The filters of the API and the CLI: time (RFC 3339 and relative), minimum level (text
/// lines of the runtimes have theirs parsed), request id, text, paging by cursor under a
/// filter, `/v1/logs` across functions, and `nimbus logs --all`.
#[test]
fn logs_filter_by_time_level_request_and_text_across_functions() {
    let s = Server::start(&[]);
    s.deploy("text-a", python_cfg("app.handler"), &[("app.py", TEXT_FN)]);
    s.deploy("text-b", python_cfg("app.handler"), &[("app.py", TEXT_FN)]);
    assert_eq!(s.invoke("text-a", r#"{"n": 1}"#).ok(), json!(1));
    let wait = |f: &str, marker: &str| {
        assert!(eventually(Duration::from_secs(5), || lines_of(&s, f)
            .iter()
            .any(|l| l["line"] == marker)));
    };
    wait("text-a", "marker-1");
    std::thread::sleep(Duration::from_millis(50));
    let between = now_ms();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(s.invoke("text-b", r#"{"n": 2}"#).ok(), json!(2));
    assert_eq!(s.invoke("text-a", r#"{"n": 3}"#).ok(), json!(3));
    wait("text-b", "marker-2");
    wait("text-a", "marker-3");

    let get = |path: &str| -> (Vec<Value>, i64) {
        let (status, v) = s.get_json(path);
        assert_eq!(status, 200, "{path}: {v}");
        (
            v["logs"].as_array().unwrap().clone(),
            v["next"].as_i64().unwrap(),
        )
    };
    let texts = |lines: &[Value]| -> Vec<String> {
        lines
            .iter()
            .map(|l| l["line"].as_str().unwrap().to_string())
            .collect()
    };
    // Time: before and after the mark.
    let until = rfc3339(between);
    let (early, _) = get(&format!("/v1/functions/text-a/logs?until={until}"));
    assert!(texts(&early).contains(&"marker-1".to_string()), "{early:?}");
    assert!(
        !texts(&early).contains(&"marker-3".to_string()),
        "{early:?}"
    );
    let (late, _) = get(&format!("/v1/functions/text-a/logs?since={until}"));
    assert!(texts(&late).contains(&"marker-3".to_string()), "{late:?}");
    assert!(!texts(&late).contains(&"marker-1".to_string()), "{late:?}");
    let (recent, _) = get("/v1/functions/text-a/logs?since=10m");
    assert_eq!(recent.len(), early.len() + late.len());
    let (none, _) = get(&format!(
        "/v1/functions/text-a/logs?until={}",
        rfc3339(between - 3_600_000)
    ));
    assert!(none.is_empty(), "{none:?}");
    // Level: the runtimes' text lines carry theirs ([ERROR] …).
    let (errors, _) = get("/v1/functions/text-a/logs?level=error");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors.iter().all(|l| l["level"] == "ERROR"), "{errors:?}");
    // Request id and text.
    let rid = errors[1]["request_id"].as_str().unwrap();
    let (one, _) = get(&format!("/v1/functions/text-a/logs?request_id={rid}"));
    assert!(one.iter().all(|l| l["request_id"] == rid));
    assert!(texts(&one).contains(&"marker-3".to_string()), "{one:?}");
    assert!(one
        .iter()
        .any(|l| l["line"].as_str().unwrap().starts_with("REPORT")));
    let (grep, _) = get("/v1/functions/text-a/logs?grep=marker-");
    assert_eq!(texts(&grep), ["marker-1", "marker-3"]);
    // Paging under a filter: one line a page, then nothing; `next` moves past the rest.
    let (p1, n1) = get("/v1/functions/text-a/logs?grep=marker-&limit=1");
    let (p2, n2) = get(&format!(
        "/v1/functions/text-a/logs?grep=marker-&limit=1&after={n1}"
    ));
    let (p3, n3) = get(&format!(
        "/v1/functions/text-a/logs?grep=marker-&limit=1&after={n2}"
    ));
    assert_eq!(
        (texts(&p1), texts(&p2)),
        (vec!["marker-1".to_string()], vec!["marker-3".to_string()])
    );
    assert!(p3.is_empty() && n3 >= n2, "{p3:?} {n3} {n2}");
    // Bad filters are 400s with the reason.
    for bad in ["level=loud", "since=yesterday", "limit=x", "follow=maybe"] {
        let (status, v) = s.get_json(&format!("/v1/functions/text-a/logs?{bad}"));
        assert_eq!(status, 400, "{bad}: {v}");
    }
    // Every function: /v1/logs interleaves them in order, each line naming its function.
    let (all, _) = get("/v1/logs?grep=marker-");
    assert_eq!(texts(&all), ["marker-1", "marker-2", "marker-3"]);
    assert_eq!(
        all.iter()
            .map(|l| l["function"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["text-a", "text-b", "text-a"]
    );
    // The CLI.
    let out = cli_ok(&s.cli(&["logs", "--all", "--grep", "marker-"])).unwrap();
    let shown: Vec<&str> = out.lines().collect();
    assert_eq!(shown.len(), 3, "{out}");
    assert!(
        shown[1].starts_with("text-b  ") && shown[1].ends_with("marker-2"),
        "{out}"
    );
    let out = cli_ok(&s.cli(&["logs", "text-a", "--level", "error", "--since", "1h"])).unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.lines().all(|l| l.contains("[ERROR]")), "{out}");
    let out = cli_ok(&s.cli(&["logs", "text-a", "--request-id", rid, "--grep", "marker"])).unwrap();
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.trim_end().ends_with("marker-3"), "{out}");
    let out = cli_ok(&s.cli(&["logs", "text-a", "--until", &until, "--grep", "marker"])).unwrap();
    assert!(
        out.trim_end().ends_with("marker-1") && out.lines().count() == 1,
        "{out}"
    );
}

/// Reads server-sent events from `GET path` on a thread: each `data:` payload as it comes.
fn sse(s: &Server, path: &str) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let client = reqwest::blocking::Client::builder().build().unwrap();
    let resp = client.get(s.url(path)).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(resp).lines() {
            let Ok(line) = line else { return };
            if let Some(data) = line.strip_prefix("data: ") {
                if tx.send(data.to_string()).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// The live tail: `follow=true` streams each new line as an SSE event (the same JSON as
/// the listing) within a second of the invocation, with the filters applied; `/v1/logs`
/// follows every function.
#[test]
fn the_live_tail_delivers_new_lines_within_a_second() {
    let mut s = Server::start(&[]);
    s.deploy("tail-a", python_cfg("app.handler"), &[("app.py", TEXT_FN)]);
    s.deploy("tail-b", python_cfg("app.handler"), &[("app.py", TEXT_FN)]);
    // Warm both, so the lines below come from warm invocations.
    s.invoke("tail-a", r#"{"n": 0}"#).ok();
    s.invoke("tail-b", r#"{"n": 0}"#).ok();
    // Their lines are stored before the tails begin (at the newest line).
    for f in ["tail-a", "tail-b"] {
        assert!(eventually(Duration::from_secs(5), || lines_of(&s, f)
            .iter()
            .any(|l| l["line"].as_str().unwrap().starts_with("REPORT"))));
    }
    let one = sse(&s, "/v1/functions/tail-a/logs?follow=true&grep=marker-");
    let all = sse(&s, "/v1/logs?follow=true&level=error");
    for n in 1..=3 {
        let f = if n == 2 { "tail-b" } else { "tail-a" };
        s.invoke(f, &format!(r#"{{"n": {n}}}"#)).ok();
        let answered = std::time::Instant::now();
        if f == "tail-a" {
            let got = one
                .recv_timeout(Duration::from_secs(1))
                .unwrap_or_else(|_| panic!("marker-{n} not streamed within 1 s"));
            let v: Value = serde_json::from_str(&got).unwrap();
            assert_eq!(v["line"], format!("marker-{n}"), "{v}");
            assert_eq!(v["function"], "tail-a");
            assert!(v["trace_id"].as_str().unwrap().starts_with("1-"), "{v}");
            eprintln!(
                "marker-{n} streamed {:?} after the answer",
                answered.elapsed()
            );
        }
        let got = all.recv_timeout(Duration::from_secs(2)).unwrap();
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["function"], f, "{v}");
        assert_eq!(v["level"], "ERROR", "{v}");
        assert!(
            v["line"]
                .as_str()
                .unwrap()
                .contains(&format!("text error {n}")),
            "{v}"
        );
    }
    // Nothing else matched the filters (the warm-up lines came before the tail began).
    assert!(one.recv_timeout(Duration::from_millis(500)).is_err());
    assert!(all.recv_timeout(Duration::from_millis(100)).is_err());
    // A shutdown ends the tails (they do not hold the server for its grace period).
    assert!(s.terminate().success());
    for rx in [one, all] {
        assert!(matches!(
            rx.recv_timeout(Duration::from_secs(5)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        ));
    }
}

/// With auth on, `/v1/logs` shows only the functions the key may read the logs of
/// (`nimbus:GetLogs` per function), and a key allowed none gets a 403.
#[test]
fn every_functions_logs_are_authorised_per_function() {
    let s = Server::start_with_auth(&[]);
    let admin = s.admin();
    for f in ["auth-a", "auth-b"] {
        let (status, body) =
            s.deploy_signed(f, python_cfg("app.handler"), &[("app.py", TEXT_FN)], &admin);
        assert!(status < 300, "{body}");
        let r = s.signed(
            "POST",
            &format!("/2015-03-31/functions/{f}/invocations"),
            br#"{"n": 5}"#,
            &admin,
        );
        assert_eq!(r.status().as_u16(), 200);
    }
    let key = |name: &str, resource: &str| -> Credentials {
        s.create_key(
            name,
            json!({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Action": "nimbus:GetLogs", "Resource": resource}]}),
        )
    };
    let only_a = key(
        "only-a",
        "arn:aws:lambda:us-east-1:000000000000:function:auth-a",
    );
    let nothing = key(
        "nothing",
        "arn:aws:lambda:us-east-1:000000000000:function:other",
    );
    let lines = |creds: &Credentials| -> (u16, Value) {
        let mut last = (0, Value::Null);
        eventually(Duration::from_secs(5), || {
            let r = s.signed("GET", "/v1/logs?grep=marker-", b"", creds);
            last = (r.status().as_u16(), r.json().unwrap_or(Value::Null));
            last.0 != 200 || last.1["logs"].as_array().map_or(0, Vec::len) >= 1
        });
        last
    };
    let (status, v) = lines(&admin);
    assert_eq!(status, 200, "{v}");
    assert!(eventually(Duration::from_secs(5), || {
        let r = s.signed("GET", "/v1/logs?grep=marker-", b"", &admin);
        let v: Value = r.json().unwrap();
        v["logs"].as_array().unwrap().len() == 2
    }));
    let (status, v) = lines(&only_a);
    assert_eq!(status, 200, "{v}");
    let functions: Vec<&str> = v["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["function"].as_str().unwrap())
        .collect();
    assert_eq!(functions, ["auth-a"], "{v}");
    // The per-function endpoint agrees.
    let r = s.signed("GET", "/v1/functions/auth-b/logs", b"", &only_a);
    assert_eq!(r.status().as_u16(), 403);
    let (status, v) = lines(&nothing);
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["type"], "AccessDeniedException", "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("nimbus:GetLogs"),
        "{v}"
    );
}
