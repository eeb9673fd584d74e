//! `nimbus up`: one command serves a project and redeploys on change.

use nimbus_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// A running `nimbus up` on a copy of the examples, its output lines on a channel.
struct Up {
    child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
    base: String,
    project: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Up {
    /// `nimbus up` on a copy of `examples/` (so edits do not touch the repository), with
    /// `path` as its `PATH` when given.
    fn examples(args: &[&str], path: Option<&std::path::Path>) -> Up {
        let tmp = tempfile::tempdir().unwrap();
        let project = tmp.path().join("examples");
        copy_dir(&repo_root().join("examples"), &project);
        let port = free_port();
        let mut cmd = Command::new(nimbus_bin());
        cmd.arg("up")
            .arg(&project)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(p) = path {
            cmd.env("PATH", p);
        }
        let mut child = cmd.spawn().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
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
        Up {
            child,
            rx,
            base: format!("http://127.0.0.1:{port}"),
            project,
            _tmp: tmp,
        }
    }

    /// Reads output until every one of `wanted` was printed; returns what was printed.
    fn wait_for(&self, wanted: &[String]) -> String {
        // stdout (URLs) and stderr ("watching …") arrive on two threads: wait for everything.
        let mut printed = String::new();
        while !wanted.iter().all(|u| printed.contains(u.as_str())) {
            let line = self
                .rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("nimbus up printed:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
        }
        printed
    }

    /// `Some(success)` once the process has exited.
    fn child_exited(&mut self) -> Option<bool> {
        self.child.try_wait().unwrap().map(|s| s.success())
    }

    fn get(&self, path: &str) -> String {
        reqwest::blocking::get(format!("{}{path}", self.base))
            .unwrap()
            .text()
            .unwrap()
    }
}

#[test]
fn up_serves_the_examples_and_redeploys_on_change() {
    let up = Up::examples(&[], None);
    let base = up.base.clone();
    let project = up.project.clone();
    let printed = up.wait_for(&[
        "watching".to_string(),
        format!("{base}/fn/hello-node/"),
        format!("{base}/hello/{{name}}"),
        format!("{base}/fn/custom-bash/"),
        "S3 API on http://127.0.0.1:".to_string(),
    ]);
    let rx = &up.rx;
    let http = reqwest::blocking::Client::new();
    // `up` serves the object store on a free port and says where.
    let s3 = printed
        .lines()
        .find_map(|l| l.strip_prefix("S3 API on "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no S3 line in:\n{printed}"));
    let listing = http.get(s3).send().unwrap().text().unwrap();
    assert!(
        listing.contains("<Code>AccessDenied</Code>") || listing.contains("ListAllMyBucketsResult"),
        "an S3 answer from {s3}: {listing}"
    );
    let body = http
        .get(format!("{base}/hello/ada"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("Hello, ada from Node.js"), "{body}");
    let body = http
        .get(format!("{base}/py/hello/bob"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("Hello, bob from Python"), "{body}");
    let body = http
        .post(format!("{base}/fn/custom-bash/"))
        .body("ping")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("bash"), "{body}");

    // Edit the Node function: `up` redeploys it and the next request sees the change.
    let index = project.join("hello-node/index.js");
    let code = std::fs::read_to_string(&index)
        .unwrap()
        .replace("from Node.js", "from the edited Node.js");
    std::fs::write(&index, code).unwrap();
    let changed = eventually(Duration::from_secs(20), || {
        http.get(format!("{base}/hello/ada"))
            .send()
            .unwrap()
            .text()
            .unwrap()
            .contains("edited")
    });
    assert!(changed, "the edit was not redeployed");
    let mut rest = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
        rest.push_str(&line);
        rest.push('\n');
    }
    assert!(rest.contains("redeployed hello-node"), "{rest}");
    assert!(
        !rest.contains("redeployed hello-python"),
        "only the changed function is redeployed: {rest}"
    );

    // An alarm and a function with an S3 trigger added to the manifest are saved, as
    // `nimbus deploy` saves them (the bucket is created on `up`'s own object store).
    let manifest = project.join("nimbus.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[alarms.hello-errors]\nfunction = \"hello-node\"\nmetric = \"errors\"\ncomparison = \">=\"\nthreshold = 1\n");
    text.push_str("\n[functions.upload-sink]\nruntime = \"python3.11\"\nhandler = \"app.handler\"\ncode = \"hello-python\"\n\n[[functions.upload-sink.s3]]\nbucket = \"uploads\"\nprefix = \"in/\"\n");
    std::fs::write(&manifest, text).unwrap();
    up.wait_for(&[
        "alarm hello-errors: errors >= 1 on hello-node".to_string(),
        "bucket uploads created".to_string(),
        "s3 trigger: bucket uploads (s3:ObjectCreated:* on in/*) → upload-sink".to_string(),
    ]);
}

/// A fresh host without the optional sandbox tools: `nimbus up examples` still serves
/// every example (less isolated, said once at start and in `/v1/health`), and
/// `--isolation strict` refuses to start, naming the packages to install.
#[test]
fn up_serves_every_example_without_bwrap_or_slirp4netns_and_strict_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("bin");
    path_without_sandbox_tools(&bin);

    let up = Up::examples(&[], Some(&bin));
    let base = up.base.clone();
    let printed = up.wait_for(&[
        "watching".to_string(),
        format!("{base}/hello/{{name}}"),
        format!("{base}/py/hello/{{name}}"),
        format!("{base}/go/hello/{{name}}"),
        format!("{base}/java/hello/{{name}}"),
        format!("{base}/fn/custom-bash/"),
    ]);
    for (path, language) in [
        ("/hello/ada", "Node.js"),
        ("/py/hello/ada", "Python"),
        ("/go/hello/ada", "Go"),
        ("/java/hello/ada", "Java"),
    ] {
        let body = up.get(path);
        assert!(
            body.contains(&format!("Hello, ada from {language}")),
            "{path}: {body}\n{printed}"
        );
    }
    let body = reqwest::blocking::Client::new()
        .post(format!("{base}/fn/custom-bash/"))
        .body("ping")
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("bash"), "{body}");

    let health: serde_json::Value =
        serde_json::from_str(&up.get("/v1/health")).expect("health is JSON");
    let isolation = &health["isolation"];
    assert_eq!(isolation["level"], "partial", "{health}");
    let missing: Vec<&str> = isolation["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter(|l| l["ok"] == false)
        .filter_map(|l| l["name"].as_str())
        .collect();
    for layer in ["namespaces", "egress"] {
        assert!(missing.contains(&layer), "{layer} not reported: {health}");
    }
    drop(up);

    // --isolation strict refuses to start, and says what to install.
    let mut up = Up::examples(&["--isolation", "strict"], Some(&bin));
    let mut out = String::new();
    let exited = eventually(Duration::from_secs(60), || {
        while let Ok(line) = up.rx.try_recv() {
            out.push_str(&line);
            out.push('\n');
        }
        matches!(up.child_exited(), Some(false))
    });
    while let Ok(line) = up.rx.recv_timeout(Duration::from_millis(200)) {
        out.push_str(&line);
        out.push('\n');
    }
    assert!(exited, "strict must refuse to start: {out}");
    for package in ["apt-get install bubblewrap", "apt-get install slirp4netns"] {
        assert!(out.contains(package), "{package} not named: {out}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let name = e.file_name();
        if name == ".nimbus" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}
