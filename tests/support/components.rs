//! WebAssembly components the tests build from source (tests/fixtures/…), for the
//! wasm executor's tests. The Rust target wasm32-wasip2 is added with rustup when it is
//! missing (as the Python tools go into target/test-python); where that fails the tests
//! fail loudly, never skip.

use crate::repo_root;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// Builds the Rust component project `tests/fixtures/<name>` for wasm32-wasip2 (release)
/// into `target/test-wasm` and returns the component's bytes.
pub fn build_component(name: &str) -> Vec<u8> {
    ensure_wasm_target();
    let dir = repo_root().join("tests/fixtures").join(name);
    let target_dir = repo_root().join("target/test-wasm");
    let t0 = Instant::now();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target_dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "building the component {name} failed{}:\n{stderr}",
        if stderr.contains("wasm32-wasip2") && stderr.contains("target may not be installed") {
            " (the target is missing: run `rustup target add wasm32-wasip2`)"
        } else {
            ""
        }
    );
    eprintln!("built component {name} in {:.1?}", t0.elapsed());
    let file: PathBuf = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Makes sure rustc has the wasm32-wasip2 target, adding it with rustup (once across the
/// test processes: a lock directory in target/ orders them).
pub fn ensure_wasm_target() {
    let installed = || {
        let out = Command::new("rustc")
            .args(["--print", "sysroot"])
            .output()
            .expect("run rustc --print sysroot");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
            .join("lib/rustlib/wasm32-wasip2/lib")
            .is_dir()
    };
    if installed() {
        return;
    }
    let lock = repo_root().join("target/.wasm32-wasip2.lock");
    let _ = std::fs::create_dir_all(repo_root().join("target"));
    let t0 = Instant::now();
    while std::fs::create_dir(&lock).is_err() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(600),
            "waited 10 minutes for {} (another test adding wasm32-wasip2; remove it if none runs)",
            lock.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = if installed() {
        None
    } else {
        eprintln!("adding the Rust target wasm32-wasip2 (rustup target add wasm32-wasip2)");
        Some(
            Command::new("rustup")
                .args(["target", "add", "wasm32-wasip2"])
                .output(),
        )
    };
    let _ = std::fs::remove_dir(&lock);
    if let Some(out) = out {
        let ok = out.as_ref().is_ok_and(|o| o.status.success());
        assert!(
            ok && installed(),
            "these tests need the Rust target wasm32-wasip2, and `rustup target add wasm32-wasip2` failed: {:?}",
            out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        );
    }
}
