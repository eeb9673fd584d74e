//! Browser tests in real headless Chromium (Debian's `chromium`, `/usr/bin/chromium`),
//! driven by Node scripts under `tests/browser/` with npm's `playwright-core`, which the
//! tests install on first use into `target/test-browser/node_modules` (pinned by
//! `tests/browser/package.json`, reinstalled when it changes; never a global install), the
//! way [`crate::python`] installs the Python tools.

use crate::python::{lock_in, marker, run_step, target_dir};
use std::path::PathBuf;
use std::process::{Command, Output};

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";

fn package_json() -> PathBuf {
    crate::repo_root().join("tests/browser/package.json")
}

/// `target/test-browser`, with `playwright-core` installed in its `node_modules`.
pub fn node_modules_root() -> PathBuf {
    let dir = target_dir().join("test-browser");
    let manifest = std::fs::read(package_json()).expect("read tests/browser/package.json");
    let done = marker(&dir, &manifest);
    if done.exists() {
        return dir;
    }
    let _lock = lock_in(&dir);
    if done.exists() {
        return dir;
    }
    std::fs::write(dir.join("package.json"), &manifest).expect("write package.json");
    run_step(
        "test-browser",
        "npm install (tests/browser/package.json, into target/test-browser)",
        Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(&dir),
        "the browser tests need Node.js and npm (Debian: apt-get install nodejs npm)",
        "the tests install playwright-core into target/test-browser from npm on first use",
    );
    std::fs::write(&done, b"").expect("write the browser install's marker");
    dir
}

/// Runs `tests/browser/SCRIPT` with Node, `PLAYWRIGHT_CORE` naming the installed package
/// (ES modules ignore `NODE_PATH`: scripts `require` it through `createRequire`),
/// `CHROMIUM` set and `env`; panics unless Chromium is installed.
pub fn run_script(script: &str, env: &[(&str, String)]) -> Output {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "{CHROMIUM} not found: the browser tests need Debian's chromium (apt-get install chromium; .ci/run installs it)"
    );
    let package = node_modules_root().join("node_modules/playwright-core");
    let mut cmd = Command::new("node");
    cmd.arg(crate::repo_root().join("tests/browser").join(script))
        .env("PLAYWRIGHT_CORE", &package)
        .env("CHROMIUM", CHROMIUM);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run node")
}
