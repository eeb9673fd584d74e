//! `nimbus up`: one command serves a project and redeploys on change.

use nimbus_tests::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

struct Up(std::process::Child);
impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn up_serves_the_examples_and_redeploys_on_change() {
    // Work on a copy so the change we make does not touch the repository.
    let tmp = tempfile::tempdir().unwrap();
    let project = tmp.path().join("examples");
    copy_dir(&repo_root().join("examples"), &project);
    let port = free_port();
    let mut child = Command::new(nimbus_bin())
        .arg("up")
        .arg(&project)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = Up(child);
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
    let base = format!("http://127.0.0.1:{port}");
    let expected = [
        format!("{base}/fn/hello-node/"),
        format!("{base}/hello/{{name}}"),
        format!("{base}/fn/custom-bash/"),
    ];
    // stdout (URLs) and stderr ("watching …") arrive on two threads: wait for everything.
    let mut printed = String::new();
    while !(printed.contains("watching") && expected.iter().all(|u| printed.contains(u.as_str()))) {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("nimbus up printed:\n{printed}"));
        printed.push_str(&line);
        printed.push('\n');
    }
    let http = reqwest::blocking::Client::new();
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
