//! `nimbus doctor` through the real binary: on this host (root, every tool installed) and
//! with `bwrap` and `slirp4netns` hidden from `PATH`; the exit status per `--isolation`;
//! `--json`; a data dir that cannot be used; a listen port in use.

use nimbus_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

/// The rows of the sandbox probe `serve` runs at start.
const LAYERS: &[&str] = &[
    "namespaces",
    "filesystem",
    "user",
    "seccomp",
    "paths",
    "rlimits",
    "memory",
    "pids",
    "cpu",
    "network",
    "egress",
];

fn doctor(args: &[&str], path: Option<&Path>) -> Output {
    let mut cmd = Command::new(nimbus_bin());
    cmd.arg("doctor").args(args);
    for var in [
        "NIMBUS_ISOLATION",
        "NIMBUS_LISTEN",
        "NIMBUS_DATA_DIR",
        "NIMBUS_NODE",
        "NIMBUS_PYTHON",
        "NIMBUS_JAVA",
        "NIMBUS_SLIRP4NETNS",
        "NIMBUS_PASTA",
    ] {
        cmd.env_remove(var);
    }
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().expect("run nimbus doctor");
    eprintln!(
        "nimbus doctor {args:?} -> {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The table row of `name`: (status mark, the rest of the line).
fn row(text: &str, name: &str) -> (String, String) {
    text.lines()
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let mark = words.next()?;
            (words.next()? == name).then(|| (mark.to_string(), l.to_string()))
        })
        .unwrap_or_else(|| panic!("no row {name} in:\n{text}"))
}

/// The `fix:` line under the row of `name`.
fn fix_of(text: &str, name: &str) -> String {
    let mut lines = text.lines().skip_while(|l| {
        let mut w = l.split_whitespace();
        !(w.next().is_some() && w.next() == Some(name))
    });
    lines.next();
    lines
        .next()
        .filter(|l| l.trim_start().starts_with("fix:"))
        .unwrap_or_else(|| panic!("no fix under {name} in:\n{text}"))
        .trim()
        .to_string()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every check of a `--json` answer, by name.
fn json_checks(out: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&out.stdout).expect("doctor --json is JSON");
    v["checks"].as_array().expect("checks").clone()
}

fn find(checks: &[Value], name: &str) -> Value {
    checks
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {checks:?}"))
        .clone()
}

#[test]
fn doctor_on_this_host_reports_every_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let data = data.to_str().unwrap();
    let out = doctor(&["--listen", "127.0.0.1:0", "--data-dir", data], None);
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    for layer in LAYERS {
        assert_eq!(row(&text, layer).0, "✓", "{layer}:\n{text}");
    }
    for tool in ["node", "python3", "java", "javac"] {
        let (mark, line) = row(&text, tool);
        assert_eq!(mark, "✓", "{line}");
    }
    assert!(row(&text, "data").1.contains("writable"), "{text}");
    assert_eq!(row(&text, "listen").0, "✓", "{text}");
    assert!(
        text.contains("ready: everything --isolation auto uses is here"),
        "{text}"
    );
    // The probe leaves nothing behind (no trial directory, nothing created).
    assert!(!Path::new(data).exists(), "doctor created the data dir");

    // strict needs every layer: all here, so it passes too; --json names each check.
    let out = doctor(
        &[
            "--json",
            "--isolation",
            "strict",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    let checks = json_checks(&out);
    for name in LAYERS
        .iter()
        .chain(&["pasta", "node", "python3", "java", "javac", "go"])
        .chain(&["data dir", "listen"])
    {
        let c = find(&checks, name);
        assert_eq!(c["blocking"], false, "{c}");
    }
    for layer in LAYERS {
        assert_eq!(find(&checks, layer)["status"], "ok");
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(leftovers.is_empty(), "doctor left {leftovers:?}");
}

#[test]
fn doctor_without_bwrap_and_slirp4netns() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    path_without_sandbox_tools(&bin);
    let common = [
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        tmp.path().to_str().unwrap(),
    ];

    // auto: degraded, never fatal; each row says what to install.
    let out = doctor(&common, Some(&bin));
    assert!(out.status.success(), "auto must pass: {out:?}");
    let text = stdout(&out);
    for layer in ["namespaces", "filesystem", "seccomp", "paths"] {
        assert_eq!(row(&text, layer).0, "degraded", "{layer}:\n{text}");
        assert_eq!(fix_of(&text, layer), "fix: apt-get install bubblewrap");
    }
    let (mark, line) = row(&text, "egress");
    assert_eq!(mark, "degraded", "{line}");
    assert!(line.contains("slirp4netns"), "{line}");
    assert_eq!(fix_of(&text, "egress"), "fix: apt-get install slirp4netns");
    // The interpreters are still found through the PATH given.
    for tool in ["node", "python3", "java"] {
        let (mark, line) = row(&text, tool);
        assert_eq!(mark, "✓", "{line}");
        assert!(
            line.contains(bin.to_str().unwrap()) || tool == "python3",
            "{line}"
        );
    }
    // cgroups do not need the tools.
    assert_eq!(row(&text, "memory").0, "✓", "{text}");
    assert!(text.contains("ready for --isolation auto, with"), "{text}");

    // strict: the same rows are errors, the exit status says so.
    let mut strict = vec!["--isolation", "strict"];
    strict.extend(common);
    let out = doctor(&strict, Some(&bin));
    assert!(!out.status.success(), "strict must fail: {out:?}");
    let text = stdout(&out);
    assert_eq!(row(&text, "namespaces").0, "✗", "{text}");
    assert_eq!(row(&text, "egress").0, "✗", "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--isolation strict") && err.contains("namespaces") && err.contains("egress"),
        "{err}"
    );

    // --json: the same verdicts, machine-readable.
    let mut json = vec!["--json"];
    json.extend(&strict);
    let out = doctor(&json, Some(&bin));
    assert!(!out.status.success());
    let checks = json_checks(&out);
    let ns = find(&checks, "namespaces");
    assert_eq!(ns["status"], "missing", "{ns}");
    assert_eq!(ns["blocking"], true, "{ns}");
    assert_eq!(ns["fix"], "apt-get install bubblewrap", "{ns}");
    assert_eq!(
        find(&checks, "egress")["fix"],
        "apt-get install slirp4netns"
    );
    assert_eq!(find(&checks, "node")["status"], "ok");

    // `serve` on the same host says isolation is degraded and points to doctor, once.
    let s = Server::start_with_env(&[], &[("PATH", bin.to_str().unwrap())]);
    let (_, health) = s.get_json("/v1/health");
    assert_eq!(health["isolation"]["level"], "partial", "{health}");
    let log = s.log();
    assert_eq!(log.matches("run `nimbus doctor`").count(), 1, "{log}");
    drop(s);

    // No interpreter at all: a warning per runtime, auto still passes.
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = doctor(&common, Some(&empty));
    assert!(out.status.success(), "{out:?}");
    let text = stdout(&out);
    let (mark, line) = row(&text, "node");
    assert_eq!(mark, "✗", "{line}");
    assert_eq!(fix_of(&text, "node"), "fix: apt-get install nodejs");
    assert_eq!(
        fix_of(&text, "java"),
        "fix: apt-get install openjdk-17-jdk-headless"
    );
}

#[test]
fn doctor_refuses_an_unusable_data_dir_or_port() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let listen = ["--listen", "127.0.0.1:0"];
    for (dir, says) in [
        (file.to_str().unwrap(), "is not a directory"),
        // Not even root can create a directory in /proc.
        ("/proc/nimbus-doctor/data", "cannot be created"),
    ] {
        for mode in ["auto", "none"] {
            let out = doctor(
                &[&listen[..], &["--isolation", mode, "--data-dir", dir]].concat(),
                None,
            );
            assert!(!out.status.success(), "{dir} in {mode}: {out:?}");
            let text = stdout(&out);
            let (mark, line) = row(&text, "data");
            assert_eq!(mark, "✗", "{line}");
            assert!(line.contains(says), "{line}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("data dir"));
        }
    }
    // A port something already listens on.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = doctor(
        &[
            "--listen",
            &addr,
            "--data-dir",
            tmp.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(!out.status.success(), "{out:?}");
    let (mark, line) = row(&stdout(&out), "listen");
    assert_eq!(mark, "✗", "{line}");
    assert!(line.contains("in use"), "{line}");
}
