//! Unmodified AWS tooling against Nimbus.

use nimbus_tests::*;
use serde_json::{json, Value};

#[test]
fn aws_cli_lambda_invoke_returns_the_result() {
    let s = Server::start(&[]);
    s.deploy(
        "hello",
        python_cfg("app.handler"),
        &[(
            "app.py",
            "def handler(e, c):\n    return {'hello': e.get('name', 'world')}\n",
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out.json");
    let payload = dir.path().join("in.json");
    std::fs::write(&payload, r#"{"name":"aws"}"#).unwrap();
    let out = python::aws_cli(&s.base())
        .args(["lambda", "invoke", "--function-name", "hello"])
        .arg("--payload")
        .arg(format!("fileb://{}", payload.display()))
        .arg(&out_file)
        .output()
        .expect("run the AWS CLI of target/test-python/venv");
    assert!(
        out.status.success(),
        "aws failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(meta["StatusCode"], 200);
    assert_eq!(meta["ExecutedVersion"], "$LATEST");
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(result, json!({"hello": "aws"}));

    // Errors parse as modeled Lambda exceptions.
    let out = python::aws_cli(&s.base())
        .args(["lambda", "invoke", "--function-name", "nope"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ResourceNotFoundException"), "{err}");
}
