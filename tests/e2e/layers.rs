//! Lambda layers end to end: a manifest layer used by two functions through `nimbus deploy`
//! (published once, republished only when its content changes), `nimbus layer publish|ls`,
//! a function with layers specialised from a stem cell (its `/opt` mounted then), and
//! layers without the sandbox (the environment points at the merged host directory).

use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const MANIFEST: &str = r#"
[layers.shared]
path = "layers/shared"
compatible_runtimes = ["python3.11", "nodejs20.x"]

[functions.py-user]
runtime = "python3.11"
handler = "app.handler"
code = "py"
url = true
layers = ["shared"]

[functions.node-user]
runtime = "nodejs20.x"
handler = "index.handler"
code = "node"
url = true
layers = ["shared"]
"#;

const PY: &str = "import greeting\n\ndef handler(event, context):\n    return greeting.TEXT\n";
const NODE: &str =
    "exports.handler = async () => require('fs').readFileSync('/opt/greeting.txt', 'utf8');\n";

fn write_project(dir: &std::path::Path, text: &str) {
    write_files(
        dir,
        &[
            ("nimbus.toml", MANIFEST),
            ("py/app.py", PY),
            ("node/index.js", NODE),
            (
                "layers/shared/python/greeting.py",
                &format!("TEXT = {text:?}\n"),
            ),
            ("layers/shared/greeting.txt", text),
        ],
    );
}

#[test]
fn manifest_layer_used_by_two_functions() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_project(dir.path(), "hello from the layer");
    let project = dir.path().to_str().unwrap();

    let out = cli_ok(&s.cli(&["deploy", project])).unwrap();
    let arn1 = "arn:aws:lambda:us-east-1:000000000000:layer:shared:1";
    assert!(out.contains(&format!("published layer {arn1}")), "{out}");
    assert_eq!(s.invoke("py-user", "{}").ok(), "hello from the layer");
    assert_eq!(s.invoke("node-user", "{}").ok(), "hello from the layer");
    let (_, f) = s.get_json("/2015-03-31/functions/py-user/configuration");
    assert_eq!(f["Layers"][0]["Arn"], arn1, "{f}");

    // Unchanged: nothing is published again.
    let out = cli_ok(&s.cli(&["deploy", project])).unwrap();
    assert!(out.contains("layer shared unchanged"), "{out}");
    let (_, versions) = s.get_json("/2018-10-31/layers/shared/versions");
    assert_eq!(versions["LayerVersions"].as_array().unwrap().len(), 1);

    // Changed: version 2, and both functions use it.
    write_project(dir.path(), "a new greeting");
    let out = cli_ok(&s.cli(&["deploy", project])).unwrap();
    assert!(
        out.contains("published layer arn:aws:lambda:us-east-1:000000000000:layer:shared:2"),
        "{out}"
    );
    assert_eq!(s.invoke("py-user", "{}").ok(), "a new greeting");
    assert_eq!(s.invoke("node-user", "{}").ok(), "a new greeting");

    // A function naming a layer the manifest does not declare is refused before deploying.
    std::fs::write(
        dir.path().join("nimbus.toml"),
        MANIFEST.replace(
            "layers = [\"shared\"]\n\n[functions.node-user]",
            "layers = [\"nope\"]\n\n[functions.node-user]",
        ),
    )
    .unwrap();
    let out = s.cli(&["deploy", project]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"nope\""));
}

/// `nimbus up` publishes the manifest's layer before serving, and a change to the layer's
/// files publishes a new version and redeploys the functions that use it.
#[test]
fn up_publishes_the_layer_and_redeploys_when_it_changes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    write_project(dir.path(), "served by up");
    let port = free_port();
    let mut child = Command::new(nimbus_bin())
        .arg("up")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let _child = Kill(child);
    let mut printed = String::new();
    let mut wait_for = |wanted: &[&str]| {
        while !wanted.iter().all(|w| printed.contains(w)) {
            let line = rx
                .recv_timeout(Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("nimbus up printed:\n{printed}"));
            printed.push_str(&line);
            printed.push('\n');
        }
    };
    wait_for(&[
        "published layer arn:aws:lambda:us-east-1:000000000000:layer:shared:1",
        "watching",
    ]);
    let get = |f: &str| {
        reqwest::blocking::get(format!("http://127.0.0.1:{port}/fn/{f}/"))
            .unwrap()
            .text()
            .unwrap()
    };
    assert!(get("py-user").contains("served by up"));
    assert!(get("node-user").contains("served by up"));
    write_files(
        dir.path(),
        &[
            (
                "layers/shared/python/greeting.py",
                "TEXT = 'edited layer'\n",
            ),
            ("layers/shared/greeting.txt", "edited layer"),
        ],
    );
    wait_for(&[
        "published layer arn:aws:lambda:us-east-1:000000000000:layer:shared:2",
        "redeployed py-user",
        "redeployed node-user",
    ]);
    assert!(get("py-user").contains("edited layer"));
    assert!(get("node-user").contains("edited layer"));
}

#[test]
fn cli_publish_and_ls() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path(), &[("bin/hello-tool", "#!/bin/sh\necho hi\n")]);
    let out = cli_ok(&s.cli(&[
        "layer",
        "publish",
        "tools",
        dir.path().to_str().unwrap(),
        "--runtime",
        "python3.11",
        "--description",
        "shell tools",
    ]))
    .unwrap();
    assert!(
        out.contains("published arn:aws:lambda:us-east-1:000000000000:layer:tools:1"),
        "{out}"
    );
    let (_, v) = s.get_json("/2018-10-31/layers/tools/versions/1");
    assert_eq!(v["Description"], "shell tools");
    assert_eq!(v["CompatibleRuntimes"], json!(["python3.11"]));
    let ls = cli_ok(&s.cli(&["layer", "ls"])).unwrap();
    assert!(ls.contains("tools") && ls.contains("python3.11"), "{ls}");
    let out = s.cli(&["layer", "publish", "bad/name", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
}

/// A Python handler reporting its process's age (a stem cell is older than the request),
/// what `/opt` holds and a module from a layer.
const PY_AGE: &str = r#"import os, sys
def _age_ms():
    with open('/proc/self/stat') as f:
        start_ticks = int(f.read().rsplit(')', 1)[1].split()[19])
    with open('/proc/uptime') as f:
        uptime = float(f.read().split()[0])
    return (uptime - start_ticks / os.sysconf('SC_CLK_TCK')) * 1000.0
def handler(event, context):
    import from_layer
    return {
        'age_ms': _age_ms(),
        'value': from_layer.VALUE,
        'opt': sorted(os.listdir('/opt')),
        'pythonpath': os.environ.get('PYTHONPATH'),
        'ld': os.environ.get('LD_LIBRARY_PATH'),
        'mounts': open('/proc/self/mountinfo').read(),
    }
"#;

fn publish(s: &Server, name: &str, files: &[(&str, &str)]) -> Value {
    use base64::Engine;
    let zip = base64::engine::general_purpose::STANDARD.encode(zip_files(files));
    let resp = reqwest::blocking::Client::new()
        .post(s.url(&format!("/2018-10-31/layers/{name}/versions")))
        .json(&json!({ "Content": { "ZipFile": zip }, "CompatibleRuntimes": ["python3.11"] }))
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    resp.json().unwrap()
}

#[test]
fn stem_cell_serves_a_function_with_layers() {
    let s = Server::start(&[]);
    wait_for_stem_cells(&s, "python");
    let hits = stem_pool(&s, "python")["hits"].as_u64().unwrap();
    let layer = publish(
        &s,
        "deps",
        &[("python/from_layer.py", "VALUE = 'layered'\n")],
    );
    let mut cfg = python_cfg("app.handler");
    cfg["layers"] = json!([{ "arn": layer["LayerVersionArn"] }]);
    s.deploy("layered", cfg, &[("app.py", PY_AGE)]);
    std::thread::sleep(Duration::from_millis(1500));
    let r = s.invoke("layered", "{}");
    let v = r.ok();
    assert!(
        v["age_ms"].as_f64().unwrap() > r.elapsed.as_secs_f64() * 1000.0 + 500.0,
        "not a stem cell: {v}\n{}",
        s.log()
    );
    assert_eq!(stem_pool(&s, "python")["hits"].as_u64().unwrap(), hits + 1);
    assert_eq!(v["value"], "layered");
    assert_eq!(v["opt"], json!(["python"]));
    assert_eq!(
        v["pythonpath"],
        "/opt/python:/opt/python/lib/python3.11/site-packages"
    );
    assert_eq!(v["ld"], "/opt/lib");
    // /opt is a mount of its own that, like /var/task, shows no host path of the data dir.
    let mounts = v["mounts"].as_str().unwrap();
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(4) == Some("/opt")),
        "{mounts}"
    );
    assert!(!mounts.contains("/code/"), "{mounts}");
    // A fresh instance (the stem cell is taken) sees the same.
    let fresh = Server::start(&["--stem-cells", "off"]);
    let layer = publish(
        &fresh,
        "deps",
        &[("python/from_layer.py", "VALUE = 'fresh'\n")],
    );
    let mut cfg = python_cfg("app.handler");
    cfg["layers"] = json!([{ "arn": layer["LayerVersionArn"] }]);
    fresh.deploy("layered", cfg, &[("app.py", PY_AGE)]);
    let v = fresh.invoke("layered", "{}").ok();
    assert_eq!(v["value"], "fresh");
    let mounts = v["mounts"].as_str().unwrap();
    assert!(
        mounts.lines().any(|l| l.split(' ').nth(4) == Some("/opt")),
        "{mounts}"
    );
    assert!(!mounts.contains("/code/"), "{mounts}");
}

#[test]
fn layers_work_without_the_sandbox() {
    let s = Server::start_unsandboxed(&[]);
    let layer = publish(&s, "deps", &[("python/from_layer.py", "VALUE = 'host'\n")]);
    let mut cfg = python_cfg("app.handler");
    cfg["layers"] = json!([{ "arn": layer["LayerVersionArn"] }]);
    let code = "import os, from_layer\ndef handler(e, c):\n    return [from_layer.VALUE, os.environ['PYTHONPATH']]\n";
    s.deploy("hosted", cfg, &[("app.py", code)]);
    let v = s.invoke("hosted", "{}").ok();
    assert_eq!(v[0], "host");
    // The merged tree in the data dir, not the host's /opt.
    let first = v[1]
        .as_str()
        .unwrap()
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert!(first.contains("/code/opt/"), "{v}");
    assert!(first.ends_with("/python"), "{v}");
    assert!(std::path::Path::new(&first).join("from_layer.py").is_file());
}
