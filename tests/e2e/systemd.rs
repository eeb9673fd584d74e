//! The systemd unit in deploy/: `systemd-analyze verify` accepts it without a warning, and
//! the variables of its environment file are ones `nimbus serve` reads.

use nimbus_tests::*;
use std::process::Command;

#[test]
fn the_unit_verifies_and_its_environment_is_what_serve_reads() {
    let unit = std::fs::read_to_string(repo_root().join("deploy/nimbus.service")).unwrap();
    let env_file = repo_root().join("deploy/nimbus.env");
    // The unit as installed, with the binary and environment file where they are here.
    let dir = tempfile::tempdir().unwrap();
    let installed = dir.path().join("nimbus.service");
    std::fs::write(
        &installed,
        unit.replace("/usr/local/bin/nimbus", nimbus_bin().to_str().unwrap())
            .replace(
                "EnvironmentFile=/etc/nimbus/nimbus.env",
                &format!("EnvironmentFile={}", env_file.display()),
            ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&installed)
        .output()
        .expect("systemd-analyze (package systemd) is needed by this test: .ci/run has it");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // An unknown value is only a warning (exit 0): any output fails the check.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );

    // ExecStart's flags and the environment file's variables are `nimbus serve`'s.
    let help = Command::new(nimbus_bin())
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    for flag in exec.split_whitespace().filter(|w| w.starts_with("--")) {
        assert!(
            help.contains(flag),
            "ExecStart uses {flag}, unknown to nimbus serve"
        );
    }
    let vars: Vec<String> = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .map(|l| l.split('=').next().unwrap().to_string())
        .collect();
    assert!(vars.len() >= 5, "{vars:?}");
    for v in vars {
        assert!(
            help.contains(&format!("env: {v}")) || v == "NIMBUS_MASTER_KEY",
            "{v} in deploy/nimbus.env is not read by nimbus serve"
        );
    }
}
