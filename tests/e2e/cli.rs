//! The CLI against a real server: deploy from a directory, a zip and a manifest; invoke; ls; rm.

use nimbus_tests::*;
use serde_json::{json, Value};

#[test]
fn deploy_dir_and_zip_invoke_ls_rm() {
    let s = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[(
            "app.py",
            "def handler(e, c):\n    return {'from': 'dir', 'e': e}\n",
        )],
    );
    let out = cli_ok(&s.cli(&[
        "deploy",
        dir.path().to_str().unwrap(),
        "--name",
        "fromdir",
        "--runtime",
        "python3.12",
        "--handler",
        "app.handler",
        "--env",
        "A=b=c",
        "--memory",
        "256",
    ]))
    .unwrap();
    assert!(out.contains("fromdir"), "{out}");
    let (_, f) = s.get_json("/v1/functions/fromdir");
    assert_eq!(f["config"]["env"]["A"], "b=c");
    assert_eq!(f["config"]["memory_mb"], 256);

    let zip_path = dir.path().join("code.zip");
    std::fs::write(
        &zip_path,
        zip_files(&[(
            "index.js",
            "exports.handler = async (e) => ({ from: 'zip', e });",
        )]),
    )
    .unwrap();
    cli_ok(&s.cli(&[
        "deploy",
        zip_path.to_str().unwrap(),
        "--name",
        "fromzip",
        "--runtime",
        "nodejs20.x",
        "--handler",
        "index.handler",
    ]))
    .unwrap();

    let out = cli_ok(&s.cli(&["invoke", "fromdir", "--data", r#"{"x":1}"#])).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"from": "dir", "e": {"x": 1}})
    );
    let data = dir.path().join("event.json");
    std::fs::write(&data, r#"{"y":2}"#).unwrap();
    let out = cli_ok(&s.cli(&[
        "invoke",
        "fromzip",
        "--data",
        &format!("@{}", data.display()),
    ]))
    .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"from": "zip", "e": {"y": 2}})
    );

    let out = cli_ok(&s.cli(&["ls"])).unwrap();
    assert!(
        out.contains("fromdir") && out.contains("fromzip") && out.contains("python3.12"),
        "{out}"
    );
    let out = cli_ok(&s.cli(&["--json", "ls"])).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v.to_string().contains("fromzip"), "{v}");

    cli_ok(&s.cli(&["rm", "fromzip"])).unwrap();
    let r = s.cli(&["invoke", "fromzip"]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );

    // --endpoint after the subcommand works too.
    let out = std::process::Command::new(nimbus_bin())
        .args(["ls", "--endpoint", &s.base()])
        .output()
        .unwrap();
    assert!(cli_ok(&out).unwrap().contains("fromdir"));
    // A function error exits non-zero with the error on stderr.
    s.deploy(
        "fails",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async () => { throw new RangeError('nope'); };",
        )],
    );
    let r = s.cli(&["invoke", "fails"]);
    assert!(!r.status.success());
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("RangeError"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn deploy_manifest_and_examples() {
    let s = Server::start(&[]);
    let root = repo_root();
    for example in ["hello-node", "hello-python", "custom-bash"] {
        let dir = root.join("examples").join(example);
        cli_ok(&s.cli(&["deploy", dir.to_str().unwrap()])).unwrap();
    }
    let body = s
        .http
        .get(s.url("/hello/ada"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("Hello, ada"), "{body}");
    let r = s.http.get(s.url("/fn/hello-python/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let out = cli_ok(&s.cli(&["invoke", "custom-bash", "--data", r#"{"ping":1}"#])).unwrap();
    assert!(out.contains("ping"), "{out}");
}

#[test]
fn cannot_reach_server_is_explained() {
    let port = free_port();
    let out = std::process::Command::new(nimbus_bin())
        .args(["ls", "--endpoint", &format!("http://127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nimbus serve") || err.contains("nimbus up"),
        "{err}"
    );
}
