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

    // Sample the log store's size on disk while the floods run.
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, peak, dir) = (stop.clone(), peak.clone(), dir.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(logs_db_bytes(&dir), Ordering::Relaxed);
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
    let peak = peak.load(Ordering::Relaxed).max(logs_db_bytes(&dir));
    let hwm_mib = vm_kib(pid, "VmHWM:") / 1024;
    eprintln!(
        "6 GiB of output in {flood_time:?}: logs.db peak {} MiB (bound {} MiB), server peak RSS {hwm_mib} MiB",
        peak / MIB,
        limit / MIB
    );
    assert!(
        peak <= limit,
        "logs.db + WAL reached {peak} bytes, bound {limit}"
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
