//! Process budgets and shutdown: the server's cgroup subtree has `pids.max` from
//! `--max-pids`, so twenty thread bombs at once stay within it (and the host keeps its
//! PIDs); an instance left near its own process limit is recycled rather than reused; and
//! a SIGTERM during a burst of cold starts starts nothing more once the cgroups go (no
//! warning about a missing cgroup, no process left behind). They run as root (CI does)
//! with the full sandbox and the `pids` cgroup controller.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The server's own cgroup subtree in the `pids` hierarchy (cgroup v1) or the unified one.
fn server_pids_cgroup(s: &Server) -> PathBuf {
    let pid = s.child.as_ref().expect("running").id();
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/pids/nimbus/srv-{pid}"));
    if v1.join("pids.max").exists() {
        return v1;
    }
    let v2 = PathBuf::from(format!("/sys/fs/cgroup/nimbus/srv-{pid}"));
    assert!(
        v2.join("pids.max").exists(),
        "no pids cgroup for the server (neither {} nor {}):\n{}",
        v1.display(),
        v2.display(),
        s.log()
    );
    v2
}

fn read_number(path: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Tasks (processes and threads) on the host: the denominator of `/proc/loadavg`'s
/// fourth field.
fn host_tasks() -> u64 {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap();
    s.split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/loadavg: {s}"))
}

fn sandboxed(extra: &[&str]) -> Server {
    let s = Server::start(extra);
    let (_, health) = s.get_json("/v1/health");
    assert_eq!(
        health["isolation"]["level"],
        "full",
        "these tests need the full sandbox with the pids cgroup: {}\n{}",
        health["isolation"],
        s.log()
    );
    s
}

/// A thread bomb: with `bomb`, starts threads that sleep (for as long as the instance
/// lives) until it cannot, retrying for `secs` seconds, and returns how many it started.
/// Without it, starts and joins `probe` threads and a subprocess: what a function whose
/// instance is stuck at its process limit cannot do.
const THREADS: &str = r#"import os, subprocess, threading, time
def handler(e, c):
    iid = os.environ['AWS_LAMBDA_LOG_STREAM_NAME']
    if e.get('bomb'):
        end = time.time() + e['secs']
        n, err = 0, None
        while time.time() < end:
            try:
                threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
                n += 1
            except RuntimeError as x:
                err = str(x)
                time.sleep(0.02)
        return {'id': iid, 'threads': n, 'error': err}
    ts = [threading.Thread(target=time.sleep, args=(0.01,)) for _ in range(e.get('probe', 20))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out = subprocess.run(['/bin/echo', 'ok'], capture_output=True, text=True).stdout.strip()
    return {'id': iid, 'threads': len(ts), 'echo': out}
"#;

#[test]
fn twenty_thread_bombs_stay_within_the_servers_process_budget() {
    // Far below 20 bombs × the 1,024 tasks each instance may have.
    const BUDGET: u64 = 1500;
    let s = sandboxed(&["--max-pids", &BUDGET.to_string()]);
    let cg = server_pids_cgroup(&s);
    assert_eq!(
        std::fs::read_to_string(cg.join("pids.max")).unwrap().trim(),
        BUDGET.to_string()
    );
    let mut cfg = python_cfg("app.handler");
    cfg["timeout_s"] = json!(30);
    cfg["memory_mb"] = json!(256);
    s.deploy("threads", cfg, &[("app.py", THREADS)]);
    assert_eq!(s.invoke("threads", "{}").ok()["echo"], "ok");

    let host_before = host_tasks();
    let done = std::sync::atomic::AtomicBool::new(false);
    let (peak_cg, peak_host, results) = std::thread::scope(|sc| {
        let sampler = sc.spawn(|| {
            let (mut cg_max, mut host_max) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                cg_max = cg_max.max(read_number(&cg.join("pids.current")).unwrap_or(0));
                host_max = host_max.max(host_tasks());
                std::thread::sleep(Duration::from_millis(20));
            }
            (cg_max, host_max)
        });
        let calls: Vec<_> = (0..20)
            .map(|_| sc.spawn(|| s.invoke("threads", r#"{"bomb": true, "secs": 4}"#)))
            .collect();
        let results: Vec<_> = calls.into_iter().map(|c| c.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        let (c, h) = sampler.join().unwrap();
        (c, h, results)
    });
    let bombs: Vec<Value> = results
        .iter()
        .filter(|r| r.status == 200 && !r.function_error())
        .map(|r| r.json())
        .collect();
    let threads: Vec<u64> = bombs
        .iter()
        .map(|b| b["threads"].as_u64().unwrap())
        .collect();
    for r in results
        .iter()
        .filter(|r| r.status != 200 || r.function_error())
    {
        eprintln!("a bomb failed: {} {}", r.status, r.body);
    }
    eprintln!(
        "host tasks {host_before} before, peak {peak_host}; server subtree peak {peak_cg} of {BUDGET}; \
         {} of 20 bombs ran, threads started {threads:?}",
        bombs.len()
    );
    // The bombs pressed against the budget, and it held.
    assert!(
        bombs.iter().any(|b| !b["error"].is_null()),
        "no bomb ever failed to start a thread: {bombs:?}"
    );
    // The kernel counts a process that joins a cgroup without checking pids.max: each
    // instance starting at that moment may add its first process (then fails to fork).
    assert!(
        peak_cg <= BUDGET + 20,
        "{peak_cg} tasks in the server's subtree"
    );
    assert!(
        peak_cg >= BUDGET * 9 / 10,
        "the bombs never came near the budget ({peak_cg} of {BUDGET}): the test proves nothing"
    );
    // The host: at most the budget more tasks, plus room for whatever else this shared
    // machine does meanwhile (unbounded, the bombs alone would add about 20,000).
    assert!(
        peak_host < host_before + BUDGET + 1000,
        "host tasks went from {host_before} to {peak_host}"
    );
    assert!(s.healthy(), "{}", s.log());
    // The next call starts threads and a process: it runs on an instance with room.
    let next = s.invoke("threads", r#"{"probe": 50}"#);
    let v = next.ok();
    assert_eq!(
        (v["threads"].as_u64(), v["echo"].as_str()),
        (Some(50), Some("ok"))
    );
    // Not on an instance a bomb left with half its own limit or more: those were recycled.
    for b in bombs
        .iter()
        .filter(|b| b["threads"].as_u64().unwrap() >= 512)
    {
        assert_ne!(b["id"], v["id"], "an instance left with {b} was reused");
        let id = b["id"].as_str().unwrap();
        assert!(
            eventually(Duration::from_secs(10), || !instance_alive(id)),
            "the instance left with {b} still runs"
        );
    }
}

/// A fork bomb whose children exit at once and are never reaped: its instance is left
/// with about 1,020 zombies, counted against its `pids.max`. The next call must not get
/// that instance.
const ZOMBIES: &str = r#"import os, subprocess, threading, time
def handler(e, c):
    iid = os.environ['AWS_LAMBDA_LOG_STREAM_NAME']
    if e.get('zombies'):
        n = 0
        try:
            while True:
                if os.fork() == 0:
                    os._exit(0)
                n += 1
        except OSError as err:
            return {'id': iid, 'zombies': n, 'error': err.strerror}
    ts = [threading.Thread(target=time.sleep, args=(0.01,)) for _ in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    out = subprocess.run(['/bin/echo', 'ok'], capture_output=True, text=True).stdout.strip()
    return {'id': iid, 'echo': out}
"#;

#[test]
fn an_instance_left_at_its_process_limit_is_recycled() {
    let s = sandboxed(&[]);
    let mut cfg = python_cfg("app.handler");
    cfg["timeout_s"] = json!(20);
    // The bomb must meet the process limit, not the memory limit: children not yet
    // exited hold page tables and kernel stacks charged to the instance (seen on a busy
    // host: killed at 128 MB before reaching pids.max).
    cfg["memory_mb"] = json!(512);
    s.deploy("zombies", cfg, &[("app.py", ZOMBIES)]);
    let first = s.invoke("zombies", "{}").ok();
    assert_eq!(first["echo"], "ok");
    let bomb = s.invoke("zombies", r#"{"zombies": true}"#).ok();
    assert_eq!(bomb["id"], first["id"], "the bomb ran on the warm instance");
    let n = bomb["zombies"].as_u64().unwrap();
    assert!((900..1024).contains(&n), "{bomb}");
    // The bombing instance is gone; the next call gets a fresh one and can fork.
    let next = s.invoke("zombies", "{}").ok();
    assert_eq!(next["echo"], "ok", "{next}");
    assert_ne!(
        next["id"], bomb["id"],
        "the instance full of zombies was reused"
    );
    let id = bomb["id"].as_str().unwrap();
    assert!(
        eventually(Duration::from_secs(10), || !instance_alive(id)),
        "the recycled instance's processes must be gone"
    );
    // A well-behaved function's instance is reused as before.
    let again = s.invoke("zombies", "{}").ok();
    assert_eq!(again["id"], next["id"]);
    assert!(
        s.log().contains("recycling instance"),
        "the recycling is logged:\n{}",
        s.log()
    );
}

/// Makes this test process the reaper of orphans in its subtree: a process the server
/// leaves behind when it exits becomes our child instead of init's.
fn become_subreaper() {
    nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
}

/// Live processes (not zombies) whose parent is this test process.
fn adopted_children() -> Vec<(u64, String)> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next());
        if ppid == Some(me.as_str()) && state != Some("Z") {
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
            out.push((pid, comm.to_string()));
        }
    }
    out
}

const SLOW_PY: &str = r#"import os, time
def handler(e, c):
    time.sleep(0.3)
    return {'id': os.environ['AWS_LAMBDA_LOG_STREAM_NAME']}
"#;
const SLOW_NODE: &str = r#"exports.handler = async () => {
  await new Promise((r) => setTimeout(r, 300));
  return { id: process.env.AWS_LAMBDA_LOG_STREAM_NAME };
};
"#;

#[test]
fn sigterm_during_a_burst_of_cold_starts_starts_nothing_late() {
    become_subreaper();
    let mut s = sandboxed(&["--stem-cells", "2:8"]);
    let names: Vec<String> = (0..6).map(|i| format!("burst{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        if i % 2 == 0 {
            s.deploy(n, python_cfg("app.handler"), &[("app.py", SLOW_PY)]);
        } else {
            s.deploy(n, node_cfg("index.handler"), &[("index.js", SLOW_NODE)]);
        }
    }
    // A provisioned version keeps its maintainer busy as well.
    s.deploy("prov", python_cfg("app.handler"), &[("app.py", SLOW_PY)]);
    let (status, body) = s.put_json(
        "/2019-09-30/functions/prov/provisioned-concurrency?Qualifier=1",
        &json!({ "ProvisionedConcurrentExecutions": 3 }),
    );
    assert_eq!(status, 202, "{body}");
    wait_for_stem_cells(&s, "python");
    let server_pid = s.child.as_ref().unwrap().id();
    let cg = server_pids_cgroup(&s);

    let ids = std::thread::scope(|sc| {
        let calls: Vec<_> = (0..18)
            .map(|i| {
                let name = names[i % names.len()].clone();
                let s = &s;
                sc.spawn(move || {
                    std::thread::sleep(Duration::from_millis(40 * i as u64));
                    s.http
                        .post(s.url(&format!("/2015-03-31/functions/{name}/invocations")))
                        .body("{}")
                        .send()
                        .ok()
                        .filter(|r| r.status().is_success())
                        .and_then(|r| r.json::<Value>().ok())
                        .and_then(|v| v["id"].as_str().map(str::to_string))
                })
            })
            .collect();
        // While the calls are arriving and their cold starts run.
        std::thread::sleep(Duration::from_millis(400));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(server_pid as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        calls
            .into_iter()
            .filter_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    let t0 = Instant::now();
    let status = s.terminate();
    let log = s.log();
    assert!(status.success(), "exit status {status}:\n{log}");
    eprintln!(
        "{} calls answered before the exit; the server stopped {:?} after the last one",
        ids.len(),
        t0.elapsed()
    );
    assert!(log.contains("shutting down"), "{log}");
    assert!(
        !log.contains("cannot create cgroup"),
        "an instance started while the cgroups were removed:\n{log}"
    );
    assert!(
        !log.contains("could not remove instance cgroup"),
        "an instance cgroup was still busy at the end:\n{log}"
    );
    assert!(
        !cg.exists(),
        "the server's cgroup subtree is left: {}",
        cg.display()
    );
    // Nothing the server started outlives it.
    let mut left = Vec::new();
    let gone = eventually(Duration::from_secs(3), || {
        left = adopted_children();
        left.is_empty() && ids.iter().all(|id| !instance_alive(id))
    });
    assert!(
        gone,
        "processes left after the server exited: {left:?}\n{log}"
    );
}
