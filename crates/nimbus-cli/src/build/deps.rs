//! Dependencies of Python and Node functions and layers, installed the way `sam build`
//! does without Docker: into a build copy of the code directory, never into the directory
//! itself.
//!
//! - Python: a `requirements.txt` is installed with `python3 -m pip install --target`,
//!   with the interpreter the server's Python runtime uses (`NIMBUS_PYTHON`, else `python3`
//!   on `PATH`, resolved as [`nimbus_runtime::HostInterpreters`] does), so compiled wheels
//!   match its ABI.
//! - Node: a `package.json` is installed with `npm ci --omit=dev` when a `package-lock.json`
//!   (or `npm-shrinkwrap.json`) is beside it, else `npm install --omit=dev`, into
//!   `node_modules`. npm runs on a copy of the manifest, lock file and `.npmrc` (so the code
//!   directory is never written to): `file:` dependencies and the package's own install
//!   scripts are not supported; vendor those and deploy with `--no-build`.
//!
//! Installed dependencies are cached in [`cache_root`] (`NIMBUS_BUILD_CACHE`, else
//! `$XDG_CACHE_HOME/nimbus/build-cache`, else `~/.cache/nimbus/build-cache`) under a hash of
//! the manifest, the lock file, the tool's configuration file beside them and the
//! interpreter's version: a code-only change reuses them and installs nothing. An entry is
//! written to a temporary directory and renamed into place, so a reader never sees half of
//! one; entries may be deleted at any time.
//!
//! The tools inherit the environment, so their own settings apply: `PIP_FIND_LINKS` and
//! `PIP_NO_INDEX` for a wheelhouse, `npm_config_offline` / `npm_config_prefer_offline` for
//! npm's cache (README, "Dependencies").

use super::Prepared;
use crate::errors::Hinted;
use anyhow::{Context, Result};
use nimbus_core::RuntimeFamily;
use serde::Serialize;
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, BufReader};
use tracing::Instrument;

/// Bumped when the layout of cache entries changes.
const CACHE_FORMAT: &str = "nimbus-deps-v1";
/// Lines of tool output kept for an error message (the last ones).
const KEPT_LINES: usize = 400;
/// Lines shown when a tool fails and none of its lines looks like an error.
const TAIL_LINES: usize = 25;
/// Names never copied from the code directory into the build.
const SKIPPED: &[&str] = &[".git", ".nimbus", "__pycache__"];

const PIP_INSTALL_HINT: &str =
    "install pip for that interpreter (Debian: apt-get install python3-pip), or vendor the dependencies yourself and deploy with --no-build";
const NPM_INSTALL_HINT: &str =
    "install npm (Debian: apt-get install npm), or vendor node_modules yourself and deploy with --no-build";

/// How a build used the dependency cache; `nimbus deploy --json` reports it as
/// `build.cache`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheUse {
    /// The dependencies came from the cache: nothing was installed.
    Hit,
    /// The dependencies were installed (and are now cached).
    Miss,
    /// Nothing to install: no dependency manifest, or a build that is not cached (Go, Java).
    None,
}

/// A prepared package directory and how it used the dependency cache.
pub struct Built {
    pub prepared: Prepared,
    pub cache: CacheUse,
}

impl Built {
    pub fn as_is(dir: &Path) -> Built {
        Built {
            prepared: Prepared::AsIs(dir.to_path_buf()),
            cache: CacheUse::None,
        }
    }
}

/// The package managers this module drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ecosystem {
    Python,
    Node,
}

impl Ecosystem {
    fn label(self) -> &'static str {
        match self {
            Ecosystem::Python => "Python",
            Ecosystem::Node => "Node",
        }
    }
}

/// What to install and where, relative to the code (or layer) directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    ecosystem: Ecosystem,
    /// The directory holding the manifest (and lock file).
    manifest_dir: PathBuf,
    /// Where the installed dependencies go in the build.
    install_dir: PathBuf,
}

impl Plan {
    /// Whether a lock file pins the install (`npm ci` rather than `npm install`).
    fn locked(&self, root: &Path) -> bool {
        let dir = root.join(&self.manifest_dir);
        self.ecosystem == Ecosystem::Node
            && ["package-lock.json", "npm-shrinkwrap.json"]
                .iter()
                .any(|n| dir.join(n).is_file())
    }

    /// The files whose contents decide what gets installed (the cache key), those present.
    fn inputs(&self, root: &Path) -> Vec<PathBuf> {
        let names: &[&str] = match self.ecosystem {
            Ecosystem::Python => &["requirements.txt"],
            Ecosystem::Node => &[
                "package.json",
                "package-lock.json",
                "npm-shrinkwrap.json",
                ".npmrc",
            ],
        };
        let dir = root.join(&self.manifest_dir);
        names
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect()
    }
}

/// The plan for a function's code directory: `requirements.txt` (Python) or `package.json`
/// (Node) at its root.
fn function_plan(dir: &Path, family: RuntimeFamily) -> Option<Plan> {
    let (ecosystem, manifest, install_dir) = match family {
        RuntimeFamily::Python => (Ecosystem::Python, "requirements.txt", ""),
        RuntimeFamily::Node => (Ecosystem::Node, "package.json", "node_modules"),
        _ => return None,
    };
    dir.join(manifest).is_file().then(|| Plan {
        ecosystem,
        manifest_dir: PathBuf::new(),
        install_dir: install_dir.into(),
    })
}

/// The plan for a layer directory, in Lambda's layer layout: `requirements.txt` at the
/// root installs into `python/`, `nodejs/package.json` into `nodejs/node_modules`.
fn layer_plan(dir: &Path, family: RuntimeFamily) -> Option<Plan> {
    let (ecosystem, manifest, manifest_dir, install_dir) = match family {
        RuntimeFamily::Python => (Ecosystem::Python, "requirements.txt", "", "python"),
        RuntimeFamily::Node => (
            Ecosystem::Node,
            "package.json",
            "nodejs",
            "nodejs/node_modules",
        ),
        _ => return None,
    };
    dir.join(manifest_dir)
        .join(manifest)
        .is_file()
        .then(|| Plan {
            ecosystem,
            manifest_dir: manifest_dir.into(),
            install_dir: install_dir.into(),
        })
}

/// Builds a function's code directory with its dependencies installed; `None` when it
/// has no dependency manifest for its runtime.
pub async fn prepare_function(dir: &Path, family: RuntimeFamily) -> Result<Option<Built>> {
    match function_plan(dir, family) {
        Some(plan) => build(dir, &plan, &cache_root(|k| std::env::var_os(k)))
            .await
            .map(Some),
        None => Ok(None),
    }
}

/// Builds a layer directory the way function code is built, in Lambda's layer layout: for
/// Python a `requirements.txt` at the layer root is installed into `python/`, for Node a
/// `nodejs/package.json` into `nodejs/node_modules` (with the same cache, progress and
/// errors as function builds). A layer without such a manifest is packaged as it is
/// ([`CacheUse::None`]); so is one for another runtime family.
///
/// For manifest-defined layers (`[layers.NAME]`, issue 13 item 5): package the returned
/// [`Built::prepared`] directory.
pub async fn prepare_layer(dir: &Path, family: RuntimeFamily) -> Result<Built> {
    match layer_plan(dir, family) {
        Some(plan) => build(dir, &plan, &cache_root(|k| std::env::var_os(k))).await,
        None => Ok(Built::as_is(dir)),
    }
}

/// Copies `dir` into a temporary build directory and adds the dependencies of `plan`,
/// from the cache or freshly installed.
async fn build(dir: &Path, plan: &Plan, cache: &Path) -> Result<Built> {
    let name = super::go::display_name(dir);
    let span =
        tracing::info_span!("build_deps", function = %name, ecosystem = plan.ecosystem.label());
    build_in_span(dir, plan, cache, &name)
        .instrument(span)
        .await
}

async fn build_in_span(dir: &Path, plan: &Plan, cache: &Path, name: &str) -> Result<Built> {
    let started = Instant::now();
    let tool = probe_tool(plan.ecosystem, name).await?;
    let key = cache_key(dir, plan, &tool.version)?;
    let entry = cache.join(format!(
        "{}-{}",
        plan.ecosystem.label().to_lowercase(),
        &key[..32]
    ));
    let cache_use = if entry.is_dir() {
        tracing::debug!(entry = %entry.display(), "dependency cache hit");
        CacheUse::Hit
    } else {
        install(dir, plan, &tool, cache, &entry, name).await?;
        CacheUse::Miss
    };

    let tmp = tempfile::Builder::new()
        .prefix("nimbus-build-")
        .tempdir()
        .context("cannot create a temporary build directory")?;
    let out = tmp.path().join("package");
    let (src, install_dir, entry_dir, out_dir) = (
        dir.to_path_buf(),
        plan.install_dir.clone(),
        entry.clone(),
        out.clone(),
    );
    tokio::task::spawn_blocking(move || -> Result<()> {
        // The code first (without a stale copy of what gets installed), then the
        // dependencies over it.
        copy_tree(&src, &out_dir, Path::new(""), &|rel: &Path| {
            !install_dir.as_os_str().is_empty() && rel == install_dir
        })
        .with_context(|| format!("cannot copy {} into the build", src.display()))?;
        let target = out_dir.join(&install_dir);
        copy_tree(&entry_dir, &target, Path::new(""), &|_| false)
            .with_context(|| format!("cannot copy {} into the build", entry_dir.display()))
    })
    .await
    .context("the build copy task failed")??;
    tracing::debug!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        cache = ?cache_use,
        "dependencies ready"
    );
    Ok(Built {
        prepared: Prepared::Built {
            dir: out,
            _tmp: tmp,
        },
        cache: cache_use,
    })
}

/// The interpreter an ecosystem's packages are built for.
#[derive(Debug, Clone)]
struct Tool {
    /// The real `python3` the server runs (pip runs as `python3 -m pip`), or `npm`.
    program: PathBuf,
    /// Goes into the cache key: e.g. `3.11.7 cpython-311 linux-x86_64`, `v20.11.0`.
    version: String,
}

/// Tools probed by this process: `nimbus up` probes once, not on every redeploy (an
/// interpreter behind a shim such as pyenv's takes a good part of a second to start).
static PROBED: std::sync::Mutex<Vec<(Ecosystem, Tool)>> = std::sync::Mutex::new(Vec::new());

/// Finds the interpreter as the server does (`NIMBUS_PYTHON` / `NIMBUS_NODE`, else
/// `python3` / `node` on `PATH`; Python resolved to `sys.executable`, past shims, as
/// [`nimbus_runtime::HostInterpreters`] does) and asks its version.
async fn probe_tool(ecosystem: Ecosystem, name: &str) -> Result<Tool> {
    let known = |probed: &Vec<(Ecosystem, Tool)>| {
        probed
            .iter()
            .find(|(e, _)| *e == ecosystem)
            .map(|(_, t)| t.clone())
    };
    if let Some(tool) = known(&PROBED.lock().unwrap_or_else(|e| e.into_inner())) {
        return Ok(tool);
    }
    let var = |name: &str, default: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let (interpreter, args, hint): (PathBuf, &[&str], &str) = match ecosystem {
        Ecosystem::Python => (
            var("NIMBUS_PYTHON", "python3"),
            &[
                "-c",
                "import sys, sysconfig; print(sys.executable); print(sys.version.split()[0], sys.implementation.cache_tag, sysconfig.get_platform())",
            ],
            "install python3 (Debian: apt-get install python3) or point NIMBUS_PYTHON at one",
        ),
        Ecosystem::Node => (
            var("NIMBUS_NODE", "node"),
            &["--version"],
            "install node (Debian: apt-get install nodejs) or point NIMBUS_NODE at one",
        ),
    };
    let what = format!(
        "the {} interpreter ({})",
        ecosystem.label(),
        interpreter.display()
    );
    let mut cmd = tokio::process::Command::new(&interpreter);
    cmd.args(args);
    let out = super::run_tool(cmd, name, &what, hint).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "{what} does not run ({}): {}",
            out.status,
            super::tool_output(&out).trim()
        );
    }
    let tool = match ecosystem {
        Ecosystem::Python => {
            let mut lines = stdout.lines();
            let exe = lines
                .next()
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .unwrap_or(interpreter);
            Tool {
                program: exe,
                version: lines.next().unwrap_or_default().trim().to_string(),
            }
        }
        Ecosystem::Node => Tool {
            program: PathBuf::from("npm"),
            version: stdout.trim().to_string(),
        },
    };
    PROBED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((ecosystem, tool.clone()));
    Ok(tool)
}

/// The hex SHA-256 naming the cache entry of `plan` in `dir`.
fn cache_key(dir: &Path, plan: &Plan, tool_version: &str) -> Result<String> {
    let mut material = Vec::new();
    for part in [
        CACHE_FORMAT,
        plan.ecosystem.label(),
        tool_version,
        // npm ci and npm install differ
        if plan.locked(dir) {
            "locked"
        } else {
            "unlocked"
        },
    ] {
        material.extend_from_slice(part.as_bytes());
        material.push(0);
    }
    for path in plan.inputs(dir) {
        let bytes =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        material.extend_from_slice(name.as_bytes());
        material.push(0);
        material.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        material.extend_from_slice(&bytes);
    }
    Ok(nimbus_auth::sigv4::payload_hash(&material))
}

/// Where built dependencies are cached: `NIMBUS_BUILD_CACHE`, else
/// `$XDG_CACHE_HOME/nimbus/build-cache`, else `$HOME/.cache/nimbus/build-cache`, else
/// the system's temporary directory.
pub fn cache_root(getenv: impl Fn(&str) -> Option<OsString>) -> PathBuf {
    let nonempty = |k: &str| getenv(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = nonempty("NIMBUS_BUILD_CACHE") {
        return dir;
    }
    nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("nimbus")
        .join("build-cache")
}

/// Installs the dependencies of `plan` into a fresh directory that becomes `entry`.
async fn install(
    dir: &Path,
    plan: &Plan,
    tool: &Tool,
    cache: &Path,
    entry: &Path,
    name: &str,
) -> Result<()> {
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot create the build cache {}", cache.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempdir_in(cache)
        .with_context(|| format!("cannot write in the build cache {}", cache.display()))?;
    let manifest_dir = dir.join(&plan.manifest_dir);
    let (cmd, command_line, installed) = match plan.ecosystem {
        Ecosystem::Python => {
            let target = staging.path().join("out");
            let requirements = manifest_dir.join("requirements.txt");
            let mut cmd = tokio::process::Command::new(&tool.program);
            cmd.args(["-m", "pip", "install", "--no-input", "--no-compile"])
                .args(["--disable-pip-version-check", "--progress-bar", "off"])
                .arg("--target")
                .arg(&target)
                .arg("-r")
                .arg(&requirements)
                // relative paths in requirements.txt are relative to it
                .current_dir(&manifest_dir)
                .env("PIP_ROOT_USER_ACTION", "ignore");
            (cmd, "pip install -r requirements.txt", target)
        }
        Ecosystem::Node => {
            // npm works on a copy of the manifest and lock file: the code directory is
            // never written to.
            let work = staging.path().join("work");
            std::fs::create_dir_all(&work)?;
            for input in plan.inputs(dir) {
                let file_name = input.file_name().expect("a file");
                std::fs::copy(&input, work.join(file_name))
                    .with_context(|| format!("cannot read {}", input.display()))?;
            }
            let locked = plan.locked(dir);
            let mut cmd = tokio::process::Command::new(&tool.program);
            let verb = if locked { "ci" } else { "install" };
            cmd.args([verb, "--omit=dev", "--no-audit", "--no-fund"])
                .current_dir(&work);
            let line = if locked {
                "npm ci --omit=dev"
            } else {
                "npm install --omit=dev"
            };
            (cmd, line, work.join("node_modules"))
        }
    };
    let what = deps_summary(dir, plan);
    eprintln!(
        "installing {} dependencies of {name} ({what}) with {command_line}…",
        plan.ecosystem.label()
    );
    let started = Instant::now();
    let (program_desc, hint) = match plan.ecosystem {
        Ecosystem::Python => (
            format!("the Python interpreter ({})", tool.program.display()),
            PIP_INSTALL_HINT,
        ),
        Ecosystem::Node => ("npm".to_string(), NPM_INSTALL_HINT),
    };
    let run = run_streamed(cmd, name, &program_desc, hint).await?;
    if !run.success {
        return Err(install_failed(name, plan.ecosystem, command_line, &run));
    }
    if !installed.is_dir() {
        // nothing to install (no dependencies): an empty entry
        std::fs::create_dir_all(&installed)?;
    }
    // The entry is complete: move it into place. A concurrent build may have won the
    // race; its entry is as good as ours.
    if let Err(e) = std::fs::rename(&installed, entry) {
        if !entry.is_dir() {
            return Err(anyhow::Error::new(e)
                .context(format!("cannot save the build in {}", entry.display())));
        }
    }
    let summary = run
        .lines
        .iter()
        .rev()
        .find(|l| l.starts_with("Successfully installed") || l.starts_with("added "))
        .map(|l| format!(": {l}"))
        .unwrap_or_default();
    eprintln!(
        "installed {} dependencies of {name} in {:.1}s{summary}",
        plan.ecosystem.label(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `requirements.txt: orjson, requests` / `package.json: uuid` — what is being installed.
fn deps_summary(dir: &Path, plan: &Plan) -> String {
    let manifest_dir = dir.join(&plan.manifest_dir);
    let (file, names) = match plan.ecosystem {
        Ecosystem::Python => {
            let text =
                std::fs::read_to_string(manifest_dir.join("requirements.txt")).unwrap_or_default();
            ("requirements.txt", requirement_names(&text))
        }
        Ecosystem::Node => {
            let text =
                std::fs::read_to_string(manifest_dir.join("package.json")).unwrap_or_default();
            ("package.json", dependency_names(&text))
        }
    };
    let shown = plan.manifest_dir.join(file);
    if names.is_empty() {
        shown.display().to_string()
    } else {
        format!("{}: {}", shown.display(), names.join(", "))
    }
}

/// The requirement lines of a `requirements.txt` (comments, options and blanks left out).
fn requirement_names(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split(" #").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('-'))
        .map(str::to_string)
        .collect()
}

/// The names of a `package.json`'s `dependencies`.
fn dependency_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| {
            v.get("dependencies")
                .and_then(|d| d.as_object())
                .map(|d| d.keys().cloned().collect())
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A finished tool run: its status and the last [`KEPT_LINES`] lines of its output.
struct Run {
    success: bool,
    status: std::process::ExitStatus,
    lines: Vec<String>,
}

/// Runs an installer with its output captured line by line. On a terminal a spinner shows
/// the line it printed last; otherwise nothing is shown until it ends.
async fn run_streamed(
    mut cmd: tokio::process::Command,
    name: &str,
    what: &str,
    install_hint: &str,
) -> Result<Run> {
    let mut child = super::spawn_tool(&mut cmd, name, what, install_hint)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let tx2 = tx.clone();
    let readers = [
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx.send(l);
            }
        }),
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                let _ = tx2.send(l);
            }
        }),
    ];
    let spinner = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut kept = std::collections::VecDeque::new();
    while let Some(line) = rx.recv().await {
        if let Some(bar) = &spinner {
            let shown: String = line.trim().chars().take(100).collect();
            bar.set_message(shown);
        }
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
    for r in readers {
        let _ = r.await;
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let status = child.wait().await.context("waiting for the installer")?;
    Ok(Run {
        success: status.success(),
        status,
        lines: kept.into(),
    })
}

/// The error for a failed install: the tool's error lines (or the end of its output) and
/// what to do next.
fn install_failed(name: &str, ecosystem: Ecosystem, command: &str, run: &Run) -> anyhow::Error {
    let errors: Vec<&str> = run
        .lines
        .iter()
        .map(String::as_str)
        .filter(|l| {
            l.starts_with("ERROR:")
                || l.starts_with("npm ERR!")
                || l.starts_with("npm error")
                || l.contains("No module named pip")
        })
        .collect();
    let shown: Vec<&str> = if errors.is_empty() {
        let skip = run.lines.len().saturating_sub(TAIL_LINES);
        run.lines[skip..].iter().map(String::as_str).collect()
    } else {
        errors
    };
    let no_pip = run.lines.iter().any(|l| l.contains("No module named pip"));
    let hint = match ecosystem {
        _ if no_pip => PIP_INSTALL_HINT,
        Ecosystem::Python => {
            "fix requirements.txt and deploy again (the previous version keeps serving); offline, point PIP_FIND_LINKS at a wheelhouse and set PIP_NO_INDEX=1; or deploy the directory as it is with --no-build"
        }
        Ecosystem::Node => {
            "fix package.json (and regenerate package-lock.json with npm install) and deploy again (the previous version keeps serving); offline, set npm_config_prefer_offline=true (or npm_config_offline=true) to use npm's cache; or deploy the directory as it is with --no-build"
        }
    };
    Hinted::error(
        format!(
            "installing the dependencies of {name} failed ({command}: {}):\n{}",
            run.status,
            shown.join("\n")
        ),
        hint,
    )
}

/// Copies the tree `src` into `dst` (created; existing files are replaced), keeping
/// symlinks as they are and permissions; files are hard-linked where possible. Paths
/// (relative to the top `src`) for which `skip` is true, and the names in [`SKIPPED`],
/// are left out.
fn copy_tree(src: &Path, dst: &Path, rel: &Path, skip: &dyn Fn(&Path) -> bool) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let entry = entry?;
        let file_name = entry.file_name();
        let child_rel = rel.join(&file_name);
        if SKIPPED.iter().any(|s| file_name == *s) || skip(&child_rel) {
            continue;
        }
        let from = entry.path();
        let to = dst.join(&file_name);
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&from, &to, &child_rel, skip)?;
            continue;
        }
        if std::fs::symlink_metadata(&to).is_ok() && !to.is_dir() {
            std::fs::remove_file(&to)?;
        }
        if kind.is_symlink() {
            let target = std::fs::read_link(&from)?;
            std::os::unix::fs::symlink(&target, &to)
                .with_context(|| format!("cannot create {}", to.display()))?;
        } else if kind.is_file() && std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).with_context(|| format!("cannot copy {}", from.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_follow_the_runtime_and_the_layout() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        assert_eq!(function_plan(dir, RuntimeFamily::Python), None);
        std::fs::write(dir.join("requirements.txt"), "orjson\n").unwrap();
        std::fs::write(dir.join("package.json"), "{}").unwrap();
        let py = function_plan(dir, RuntimeFamily::Python).unwrap();
        assert_eq!(py.install_dir, Path::new(""));
        let node = function_plan(dir, RuntimeFamily::Node).unwrap();
        assert_eq!(node.install_dir, Path::new("node_modules"));
        assert_eq!(function_plan(dir, RuntimeFamily::Provided), None);
        assert_eq!(function_plan(dir, RuntimeFamily::Java), None);

        // layers: python/ for Python; nodejs/package.json → nodejs/node_modules
        assert_eq!(
            layer_plan(dir, RuntimeFamily::Python).unwrap().install_dir,
            Path::new("python")
        );
        assert_eq!(
            layer_plan(dir, RuntimeFamily::Node),
            None,
            "root package.json"
        );
        std::fs::create_dir(dir.join("nodejs")).unwrap();
        std::fs::write(dir.join("nodejs/package.json"), "{}").unwrap();
        let node = layer_plan(dir, RuntimeFamily::Node).unwrap();
        assert_eq!(node.manifest_dir, Path::new("nodejs"));
        assert_eq!(node.install_dir, Path::new("nodejs/node_modules"));
    }

    #[test]
    fn the_cache_key_follows_manifest_lock_and_interpreter_not_code() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        std::fs::write(
            dir.join("package.json"),
            r#"{"dependencies":{"uuid":"^9"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("index.js"), "exports.handler = 1").unwrap();
        let plan = function_plan(dir, RuntimeFamily::Node).unwrap();
        let key = |v: &str| cache_key(dir, &plan, v).unwrap();
        let k1 = key("v20.1.0");
        std::fs::write(dir.join("index.js"), "exports.handler = 2").unwrap();
        assert_eq!(key("v20.1.0"), k1, "code changes keep the key");
        assert_ne!(key("v22.1.0"), k1, "another interpreter");
        std::fs::write(dir.join("package-lock.json"), "{}").unwrap();
        let k2 = key("v20.1.0");
        assert_ne!(k2, k1, "a lock file");
        std::fs::write(dir.join("package-lock.json"), "{\"x\":1}").unwrap();
        assert_ne!(key("v20.1.0"), k2, "another lock file");
    }

    #[test]
    fn cache_root_precedence() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            cache_root(env(&[("NIMBUS_BUILD_CACHE", "/c"), ("HOME", "/h")])),
            Path::new("/c")
        );
        assert_eq!(
            cache_root(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])),
            Path::new("/x/nimbus/build-cache")
        );
        assert_eq!(
            cache_root(env(&[("NIMBUS_BUILD_CACHE", ""), ("HOME", "/h")])),
            Path::new("/h/.cache/nimbus/build-cache")
        );
    }

    #[test]
    fn summaries_name_what_is_installed() {
        assert_eq!(
            requirement_names("# c\norjson>=3.10  # fast\n-r other.txt\n\nrequests\n"),
            vec!["orjson>=3.10", "requests"]
        );
        assert_eq!(
            dependency_names(
                r#"{"dependencies":{"uuid":"^9","b":"1"},"devDependencies":{"x":"1"}}"#
            ),
            vec!["b", "uuid"]
        );
        assert!(dependency_names("not json").is_empty());
    }

    #[test]
    fn copies_skip_caches_and_replace_files() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(src.join("__pycache__")).unwrap();
        std::fs::create_dir_all(src.join("node_modules/old")).unwrap();
        std::fs::create_dir_all(src.join("lib")).unwrap();
        std::fs::write(src.join("__pycache__/app.pyc"), "x").unwrap();
        std::fs::write(src.join("node_modules/old/index.js"), "x").unwrap();
        std::fs::write(src.join("lib/a.py"), "a").unwrap();
        std::os::unix::fs::symlink("lib/a.py", src.join("link.py")).unwrap();
        let dst = d.path().join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        std::fs::write(dst.join("link.py"), "stale").unwrap();
        copy_tree(&src, &dst, Path::new(""), &|rel: &Path| {
            rel == Path::new("node_modules")
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(dst.join("lib/a.py")).unwrap(), "a");
        assert_eq!(
            std::fs::read_link(dst.join("link.py")).unwrap(),
            Path::new("lib/a.py")
        );
        assert!(!dst.join("__pycache__").exists());
        assert!(!dst.join("node_modules").exists());
    }

    /// Layers in Lambda's layout, built offline (manifests without dependencies): pip and
    /// npm run, the installed directory lands where Lambda looks, the second build is a hit.
    #[tokio::test]
    async fn layers_install_into_lambdas_layer_paths() {
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        let layer = d.path().join("layer");
        std::fs::create_dir_all(layer.join("nodejs/node_modules/stale")).unwrap();
        std::fs::create_dir_all(layer.join("bin")).unwrap();
        std::fs::write(layer.join("bin/tool"), "#!/bin/sh\n").unwrap();
        std::fs::write(
            layer.join("nodejs/package.json"),
            r#"{"name":"layer","version":"1.0.0","dependencies":{}}"#,
        )
        .unwrap();
        std::fs::write(layer.join("requirements.txt"), "# nothing yet\n").unwrap();

        let plan = layer_plan(&layer, RuntimeFamily::Node).unwrap();
        let built = build(&layer, &plan, &cache).await.unwrap();
        assert_eq!(built.cache, CacheUse::Miss);
        let out = built.prepared.dir();
        assert!(out.join("nodejs/node_modules").is_dir());
        assert!(
            !out.join("nodejs/node_modules/stale").exists(),
            "installed, not copied"
        );
        assert!(out.join("nodejs/package.json").is_file());
        assert!(out.join("bin/tool").is_file());
        assert!(
            !layer.join("nodejs/package-lock.json").exists(),
            "the layer directory is not written to"
        );
        let again = build(&layer, &plan, &cache).await.unwrap();
        assert_eq!(again.cache, CacheUse::Hit);

        let plan = layer_plan(&layer, RuntimeFamily::Python).unwrap();
        let built = build(&layer, &plan, &cache).await.unwrap();
        assert_eq!(built.cache, CacheUse::Miss);
        assert!(built.prepared.dir().join("python").is_dir());
        assert!(built.prepared.dir().join("bin/tool").is_file());
    }

    #[test]
    fn failures_show_the_tools_error_lines() {
        let run = Run {
            success: false,
            status: std::os::unix::process::ExitStatusExt::from_raw(256),
            lines: vec![
                "Looking in links: /opt/wheels".into(),
                "ERROR: Could not find a version that satisfies the requirement nope==1 (from versions: none)".into(),
                "ERROR: No matching distribution found for nope==1".into(),
            ],
        };
        let e = install_failed(
            "f",
            Ecosystem::Python,
            "pip install -r requirements.txt",
            &run,
        );
        let text = e.to_string();
        assert!(
            text.starts_with("installing the dependencies of f failed (pip install -r requirements.txt: exit status: 1):\nERROR: Could not find"),
            "{text}"
        );
        assert!(!text.contains("Looking in links"), "{text}");
        assert!(crate::errors::hint(&e).unwrap().contains("--no-build"));
    }
}
