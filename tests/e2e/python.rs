//! The Lambda-compatibility suite in `tests/python` (pytest driving unmodified boto3 and the
//! AWS CLI against the real binary), run as part of `cargo nextest run --workspace`.

use nimbus_tests::*;
use std::process::Command;

const INSTALL: &str = "python3 -m pip install -r tests/python/requirements.txt";

#[test]
fn python_boto3_and_aws_cli_suite() {
    let root = repo_root();

    let probe = Command::new("python3")
        .args(["-c", "import pytest, boto3, botocore"])
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}): install Python 3, then `{INSTALL}`"));
    assert!(
        probe.status.success(),
        "the Python suite needs pytest and boto3, which are missing: run `{INSTALL}`\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let out = Command::new("python3")
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
