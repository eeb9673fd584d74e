//! The Lambda-compatibility suite in `tests/python` (pytest driving unmodified boto3 and the
//! AWS CLI against the real binary), run as part of `cargo nextest run --workspace`.

use nimbus_tests::*;
use std::process::Command;

#[test]
fn python_boto3_and_aws_cli_suite() {
    let root = repo_root();
    // pytest, boto3 and the AWS CLI, installed into target/test-python on first use.
    let out = Command::new(python::python())
        .args([
            "-m",
            "pytest",
            "tests/python",
            "-q",
            "-p",
            "no:cacheprovider",
            "-o",
            "console_output_style=classic",
        ])
        .current_dir(&root)
        .env("NIMBUS_BIN", nimbus_bin())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // The suite runs `aws` as a subprocess: the venv's.
        .env("PATH", python::path_with_venv())
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest tests/python failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Echo pytest's summary so the nextest output shows what ran.
    println!("{stdout}");
}
