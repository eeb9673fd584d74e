//! Honest health through the real binary: `/v1/health` (liveness) and `/v1/ready`
//! (readiness) on a normal server; a data dir on a small tmpfs filled up and freed again;
//! the stuck-dispatcher test hook; partial isolation; `nimbus doctor` against a server.

use nimbus_tests::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The check named `name` of a report.
fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name}: {report}"))
}

/// The status of check `name`, if the report has it yet.
fn status_of<'a>(report: &'a Value, name: &str) -> Option<&'a str> {
    report["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)?["status"]
        .as_str()
}

/// Polls `/v1/ready` until `pred` holds (the checks refresh every 2 s); the last answer.
fn ready_until(s: &Server, timeout: Duration, pred: impl Fn(u16, &Value) -> bool) -> (u16, Value) {
    let mut last = (0, Value::Null);
    let ok = eventually(timeout, || {
        last = s.get_json("/v1/ready");
        pred(last.0, &last.1)
    });
    assert!(
        ok,
        "/v1/ready never matched; last: {} {}\n{}",
        last.0,
        last.1,
        s.log()
    );
    last
}

#[test]
fn a_normal_server_is_ok_on_both() {
    let s = Server::start(&["--low-free-disk-mb", "0"]);
    // On PostgreSQL (NIMBUS_TEST_BACKEND=postgres) the node connects to NATS in the
    // background after it starts: its `cluster` check is degraded until then (seen once
    // on a busy host), so that is waited out here; a NATS that never answers still fails.
    let (code, ready) = ready_until(&s, Duration::from_secs(10), |c, r| {
        c == 200 && status_of(r, "disk").is_some() && status_of(r, "cluster") != Some("degraded")
    });
    assert_eq!(code, 200);
    // Isolation is full on this host (root, bwrap installed); everything else is ok.
    assert_eq!(ready["status"], "ok", "{ready}");
    assert_eq!(ready["reasons"], serde_json::json!([]), "{ready}");
    for name in [
        "disk",
        "stores",
        "isolation",
        "executor",
        "stem_cells",
        "dispatcher",
        "scheduler",
        "pollers",
        "async_backlog",
        "queue_backlog",
        "checks",
    ] {
        let c = check(&ready, name);
        assert_eq!(c["status"], "ok", "{c}");
        assert!(c["detail"].is_string(), "{c}");
    }
    assert!(
        check(&ready, "disk")["value"]["free_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert!(check(&ready, "stores")["value"]["fsync_ms"]
        .as_f64()
        .is_some());
    assert_eq!(check(&ready, "dispatcher")["liveness"], true);

    // Liveness: the same checks, the old figures (isolation report included), 200.
    let (code, health) = s.get_json("/v1/health");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["live"], true);
    assert_eq!(health["isolation"]["level"], "full", "{health}");
    assert!(health["stem_cells"].is_object(), "{health}");
    assert_eq!(check(&health, "scheduler")["status"], "ok");
}

/// A 64 MiB tmpfs mounted on a directory, unmounted (lazily: the server may still hold
/// files there) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(out.status.success(), "mount tmpfs: {out:?}");
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() as u64 * st.fragment_size() as u64
}

#[test]
fn a_full_data_dir_disk_fails_readiness_until_space_returns() {
    let mut s = Server::start(&["--min-free-disk-mb", "16"]);
    // The same server again, its data dir now a fresh 64 MiB tmpfs. On PostgreSQL the
    // stores stay in the database, whose secrets are sealed with the server's master key:
    // the fresh data dir gets that key back (a node given another key refuses to start).
    let key = std::fs::read(s.data_path().join("master.key")).unwrap();
    s.kill9();
    let _tmpfs = Tmpfs::mount(&s.data_path());
    if test_backend_is_postgres() {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(s.data_path().join("master.key"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, &key))
            .unwrap();
    }
    s.restart();
    let (_, ready) = ready_until(&s, Duration::from_secs(10), |c, r| {
        c == 200 && status_of(r, "disk") == Some("ok")
    });
    let total = check(&ready, "disk")["value"]["total_bytes"]
        .as_u64()
        .unwrap();
    assert_eq!(total, 64 << 20, "{ready}");

    // Leave 4 MiB free: below --min-free-disk-mb 16.
    let ballast = s.data_path().join("ballast");
    let fill = free_bytes(&s.data_path()) - (4 << 20);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![1u8; 1 << 20];
        let mut left = fill;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n]).unwrap();
            left -= n as u64;
        }
        f.sync_all().unwrap();
    }
    let (code, ready) = ready_until(&s, Duration::from_secs(15), |_, r| {
        status_of(r, "disk") == Some("failing")
    });
    assert_eq!(code, 503);
    assert_eq!(ready["status"], "failing", "{ready}");
    let disk = check(&ready, "disk");
    assert_eq!(disk["status"], "failing", "{disk}");
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains("disk") && reasons.contains("--min-free-disk-mb"),
        "{reasons}"
    );
    // Liveness is not readiness: a full disk does not ask for a restart.
    let (code, health) = s.get_json("/v1/health");
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "failing", "{health}");

    // Space returns: ok again at the next refresh.
    std::fs::remove_file(&ballast).unwrap();
    let (code, ready) = ready_until(&s, Duration::from_secs(15), |_, r| {
        status_of(r, "disk") == Some("ok")
    });
    assert_eq!(
        (code, ready["status"].as_str()),
        (200, Some("ok")),
        "{ready}"
    );
    assert_eq!(check(&ready, "stores")["status"], "ok", "{ready}");
    assert!(s.log().contains("health: ok again"), "{}", s.log());
    drop(s);
}

#[test]
fn a_stalled_dispatcher_is_reported_stuck() {
    let s = Server::start_with_env(
        &["--low-free-disk-mb", "0"],
        &[("NIMBUS_TEST_STALL_DISPATCHER", "1")],
    );
    // Stuck after 10 s without a pass (5 periods of 1 s, at least 10 s).
    let (code, ready) = ready_until(&s, Duration::from_secs(30), |_, r| {
        status_of(r, "dispatcher") == Some("failing")
    });
    assert_eq!(code, 503);
    let d = check(&ready, "dispatcher");
    assert_eq!(d["status"], "failing", "{d}");
    assert!(d["detail"].as_str().unwrap().contains("stuck"), "{d}");
    assert!(
        d["value"]["last_tick_ms_ago"].as_u64().unwrap() > 10_000,
        "{d}"
    );
    assert_eq!(check(&ready, "scheduler")["status"], "ok", "{ready}");
    // A stuck loop is a wedged process: liveness says so too.
    let (code, health) = s.get_json("/v1/health");
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["live"], false, "{health}");
    assert!(s.log().contains("TEST ONLY"), "{}", s.log());
}

#[test]
fn partial_isolation_is_degraded_and_doctor_shows_readiness() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    path_without_sandbox_tools(&bin);
    let s = Server::start_with_env(
        &["--low-free-disk-mb", "0"],
        &[("PATH", bin.to_str().unwrap())],
    );
    let (code, ready) = ready_until(&s, Duration::from_secs(10), |_, r| {
        r["status"] == "degraded"
    });
    assert_eq!(code, 200, "degraded is still ready: {ready}");
    let iso = check(&ready, "isolation");
    assert_eq!(iso["status"], "degraded", "{iso}");
    assert_eq!(iso["value"]["level"], "partial", "{iso}");
    assert!(
        iso["detail"].as_str().unwrap().contains("namespaces"),
        "{iso}"
    );
    let reasons = ready["reasons"].to_string();
    assert!(reasons.contains("isolation partial"), "{reasons}");
    let (code, health) = s.get_json("/v1/health");
    assert_eq!((code, health["status"].as_str()), (200, Some("degraded")));

    // `nimbus doctor` against the running server: one `server` row with its readiness.
    let data = tmp.path().join("doctor-data");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let out = s.cli(&[&["doctor"][..], &args].concat());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{out:?}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("server"))
        .unwrap_or_else(|| panic!("no server row:\n{text}"));
    assert!(line.trim_start().starts_with("degraded"), "{line}");
    assert!(
        line.contains(&format!("{}/v1/ready: degraded (200)", s.base()))
            && line.contains("isolation"),
        "{line}"
    );
    // --json: the same row.
    let out = s.cli(&[&["--json", "doctor"][..], &args].concat());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let row = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "server")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(row["status"], "degraded", "{row}");
    assert_eq!(row["blocking"], false, "{row}");
}

/// A runtime that cannot start (`NIMBUS_NODE` names an interpreter that exits at once, as
/// a broken installation would; a missing one is left out of the stem cell pools at start)
/// fails every refill of the node stem cells: `/v1/ready` reports `stem_cells` degraded
/// with the error (still ready: cold starts spawn a runtime), `/v1/health` has the pool's
/// count and last error, and `nimbus_stem_cell_refill_failures_total` counts them by
/// runtime (python's still start: none).
#[test]
fn failing_stem_cell_refills_are_degraded_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let node = tmp.path().join("node");
    std::fs::write(&node, "#!/bin/sh\necho 'node: broken' >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let s = Server::start_with_env(
        &["--low-free-disk-mb", "0", "--metrics-listen", &listen],
        &[("NIMBUS_NODE", node.to_str().unwrap())],
    );
    let (code, ready) = ready_until(&s, Duration::from_secs(30), |_, r| {
        status_of(r, "stem_cells") == Some("degraded")
    });
    assert_eq!(code, 200, "degraded is still ready: {ready}");
    let c = check(&ready, "stem_cells");
    let detail = c["detail"].as_str().unwrap();
    assert!(detail.contains("node (outbound): "), "{c}");
    assert!(!detail.contains("python"), "{c}");
    assert!(c["value"]["refill_failures"].as_u64().unwrap() >= 1, "{c}");
    assert!(
        ready["reasons"].to_string().contains("stem_cells: "),
        "{ready}"
    );

    let node = stem_pool(&s, "node");
    assert!(node["refill_failures"].as_u64().unwrap() >= 1, "{node}");
    assert!(node["last_error"].is_string(), "{node}");
    assert!(
        node["last_failure_ms_ago"].as_u64().unwrap() < 60_000,
        "{node}"
    );
    assert!(stem_pool(&s, "python").get("last_error").is_none());

    let text = s
        .http
        .get(format!("http://{listen}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let sample = |runtime: &str| {
        let prefix = format!("nimbus_stem_cell_refill_failures_total{{runtime=\"{runtime}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {runtime} sample: {text}"))
    };
    assert!(sample("node") >= 1.0, "{text}");
    assert_eq!(sample("python"), 0.0, "{text}");
    assert!(
        text.contains("# TYPE nimbus_stem_cell_refill_failures counter"),
        "{text}"
    );
}
