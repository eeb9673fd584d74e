//! The Python tools the tests drive (pytest, boto3, the AWS CLI, PyPI's awslambdaric,
//! componentize-py),
//! installed on first use under the target directory, so `cargo nextest run --workspace`
//! passes on a fresh clone with nothing installed by hand but Python 3 itself.
//!
//! - `target/test-python/venv`: a virtual environment made from the host's `python3` with
//!   `tests/python/requirements.txt` installed. Reinstalled when that file changes.
//! - `target/test-python/awslambdaric-VERSION`: awslambdaric installed with
//!   `pip install --target`, the way a custom runtime vendors it into its package: the
//!   tests copy it into the function's code, which runs on the host's `python3` in the
//!   sandbox (a virtual environment under `target/` is not visible there).
//!
//! nextest runs each test in its own process, so several may ask at once: an exclusive
//! `flock` on `target/test-python/lock` makes the first one install and the others wait.
//! Each step writes its marker only after it succeeded; a failed or killed install is
//! redone by the next test.

use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The awslambdaric release the `ric` tests run unchanged.
pub const AWSLAMBDARIC: &str = "awslambdaric==4.2.2";

/// The componentize-py release `nimbus deploy` builds Python components with in the
/// `wasm_guests` tests.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The target directory the tests were built into (`target/`).
pub(crate) fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe path");
    // target/<profile>/deps/<test> → target
    exe.ancestors()
        .nth(3)
        .expect("target dir of the test executable")
        .to_path_buf()
}

fn root() -> PathBuf {
    target_dir().join("test-python")
}

/// Holds the install lock while alive.
pub(crate) struct Lock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn lock() -> Lock {
    lock_in(&root())
}

/// An exclusive `flock` on `DIR/lock` (created with `DIR`): one installer at a time.
pub(crate) fn lock_in(dir: &Path) -> Lock {
    std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let locked = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock {}: {e}", path.display()));
    Lock(locked)
}

/// Runs an install step, echoing what it does to stderr (nextest shows it for a failing
/// test) and panicking with the tool's output and the command to run by hand.
fn run(what: &str, cmd: &mut Command) {
    run_step(
        "test-python",
        what,
        cmd.env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
            .env("PIP_ROOT_USER_ACTION", "ignore"),
        "the tests need Python 3 with venv and pip \
         (Debian: apt-get install python3 python3-venv python3-pip)",
        "the tests install their Python tools into target/test-python \
         from PyPI on first use; a machine without PyPI access can pre-fill pip's cache \
         or set PIP_FIND_LINKS to a wheelhouse",
    );
}

/// Runs one install step of `tag` (`missing`: what to install when the tool cannot start;
/// `how`: where the step installs from), panicking with the tool's output on failure.
pub(crate) fn run_step(tag: &str, what: &str, cmd: &mut Command, missing: &str, how: &str) {
    eprintln!("{tag}: {what}");
    let t0 = std::time::Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {:?} ({e}): {missing}", cmd.get_program()));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}\n{}\n({how})",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    eprintln!("{tag}: {what}: done in {:.1?}", t0.elapsed());
}

/// The marker a finished install leaves: named after what it installed.
pub(crate) fn marker(dir: &Path, what: &[u8]) -> PathBuf {
    let hash = sha2::Sha256::digest(what);
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!(".installed-{hex}"))
}

fn requirements() -> PathBuf {
    crate::repo_root().join("tests/python/requirements.txt")
}

/// The test virtual environment's directory, with `tests/python/requirements.txt`
/// installed (pytest, boto3, botocore, the AWS CLI). Its `bin/` holds `python` and `aws`.
pub fn venv() -> PathBuf {
    let dir = root().join("venv");
    let reqs = std::fs::read(requirements()).expect("read tests/python/requirements.txt");
    let done = marker(&dir, &reqs);
    if done.exists() {
        return dir;
    }
    let _lock = lock();
    if done.exists() {
        return dir;
    }
    run(
        "python3 -m venv target/test-python/venv",
        Command::new("python3")
            .arg("-m")
            .arg("venv")
            .arg("--clear")
            .arg(&dir),
    );
    run(
        "pip install -r tests/python/requirements.txt (into target/test-python/venv)",
        Command::new(dir.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "-r"])
            .arg(requirements()),
    );
    std::fs::write(&done, b"").expect("write the venv's marker");
    dir
}

/// The venv's Python interpreter (see [`venv`]).
pub fn python() -> PathBuf {
    venv().join("bin/python")
}

/// `PATH` with the venv's `bin/` first, for tools that look up `aws` or `python`.
pub fn path_with_venv() -> std::ffi::OsString {
    let mut dirs = vec![venv().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).expect("PATH")
}

/// A directory holding PyPI's awslambdaric (and its dependencies) installed for the
/// host's `python3` with `pip install --target`: copy its contents into a function's code.
pub fn awslambdaric() -> PathBuf {
    let dir = root().join(AWSLAMBDARIC.replace("==", "-"));
    let done = marker(&dir, AWSLAMBDARIC.as_bytes());
    if done.exists() {
        return dir;
    }
    let _lock = lock();
    if done.exists() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The host's python3: the one the function runs on (its compiled part must match).
    run(
        &format!("pip install --target target/test-python/… {AWSLAMBDARIC}"),
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--no-input", "--target"])
            .arg(&dir)
            .arg(AWSLAMBDARIC),
    );
    std::fs::write(&done, b"").expect("write awslambdaric's marker");
    dir
}

/// The `bin/` of a virtual environment (`target/test-python/componentize-py-VERSION`)
/// holding [`COMPONENTIZE_PY`]: put it on the CLI's `PATH`.
pub fn componentize_py_bin() -> PathBuf {
    let dir = root().join(COMPONENTIZE_PY.replace("==", "-"));
    let done = marker(&dir, COMPONENTIZE_PY.as_bytes());
    if done.exists() {
        return dir.join("bin");
    }
    let _lock = lock();
    if done.exists() {
        return dir.join("bin");
    }
    run(
        "python3 -m venv target/test-python/componentize-py-…",
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&dir),
    );
    run(
        &format!("pip install {COMPONENTIZE_PY} (into target/test-python/…)"),
        Command::new(dir.join("bin/python"))
            .args(["-m", "pip", "install", "--quiet", "--no-input"])
            .arg(COMPONENTIZE_PY),
    );
    std::fs::write(&done, b"").expect("write componentize-py's marker");
    dir.join("bin")
}

/// Every file under `dir` as (path relative to `dir`, contents), for a function's zip.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).expect("read dir") {
            let e = e.expect("dir entry");
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(".installed-") || name == "__pycache__" {
                continue;
            }
            if e.file_type().expect("file type").is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).expect("read file")));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// The AWS CLI of the test venv, pointed at `endpoint` with throwaway credentials and
/// no user configuration.
pub fn aws_cli(endpoint: &str) -> Command {
    let mut cmd = Command::new(venv().join("bin/aws"));
    cmd.env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .args(["--endpoint-url", endpoint]);
    cmd
}

/// Runs pytest from the test venv in the repository root with `args` (files, options),
/// against the binary under test, and returns its output; panics with the output when a
/// test fails.
pub fn pytest(args: &[&str]) -> String {
    let out = Command::new(python())
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .args(["-o", "console_output_style=classic"])
        .args(args)
        .current_dir(crate::repo_root())
        .env("NIMBUS_BIN", crate::nimbus_bin())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // The suites run `aws` as a subprocess: the venv's.
        .env("PATH", path_with_venv())
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pytest {args:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}
