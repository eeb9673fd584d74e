//! Builds before packaging (`nimbus deploy` and `nimbus up`; `--no-build` skips them): a Go
//! module without a `bootstrap` (`go build`), a Java source tree without a jar (`javac`), a
//! WebAssembly component for `wasi-http`/`wasm-event` without the handler's `.wasm`
//! (`cargo build --target wasm32-wasip2`, componentize-py or jco: [`wasm`]), a
//! Python function with a `requirements.txt` or a Node function with a `package.json`
//! (dependencies installed, cached: [`deps`]). Other code directories are packaged as they
//! are.

use anyhow::Result;
use nimbus_core::FunctionConfig;
use std::path::{Path, PathBuf};

pub mod deps;
mod go;
mod java;
pub mod layer;
mod wasm;

pub use deps::{Built, CacheUse};

/// The directory to package: the code directory itself, or a build output that lives as
/// long as this value.
pub enum Prepared {
    AsIs(PathBuf),
    Built {
        dir: PathBuf,
        _tmp: tempfile::TempDir,
    },
}

impl Prepared {
    pub fn dir(&self) -> &Path {
        match self {
            Prepared::AsIs(d) => d,
            Prepared::Built { dir, .. } => dir,
        }
    }
}

/// Builds `dir` for `config.runtime` when it holds sources that need a build or
/// dependencies to install.
pub async fn prepare(dir: &Path, config: &FunctionConfig) -> Result<Built> {
    let uncached = |prepared| Built {
        prepared,
        cache: CacheUse::None,
    };
    if go::wants_build(dir, config) {
        return go::build(dir).await.map(uncached);
    }
    if java::wants_build(dir, config) {
        return java::build(dir, config).await.map(uncached);
    }
    if let Some(plan) = wasm::plan(dir, config) {
        return wasm::build(dir, config, plan).await.map(uncached);
    }
    if let Some(built) = deps::prepare_function(dir, config.runtime.family()).await? {
        return Ok(built);
    }
    Ok(Built::as_is(dir))
}

/// Runs a build tool to completion with no stdin. A tool that is not installed becomes an
/// error saying `cannot build NAME: WHAT was not found` with `install_hint`.
pub(crate) async fn run_tool(
    mut cmd: tokio::process::Command,
    name: &str,
    what: &str,
    install_hint: &str,
) -> Result<std::process::Output> {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await;
    out.map_err(|e| start_error(e, &cmd, name, what, install_hint))
}

/// A finished tool's stderr followed by its stdout.
pub(crate) fn tool_output(out: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text
}

/// A build tool's output beyond this is cut in error messages (its start is kept: the first
/// errors matter most).
pub(crate) const MAX_OUTPUT: usize = 16 * 1024;

/// The error message of a failed build of `name` by `command`: its status and the start
/// of its output.
pub(crate) fn failure_message(
    name: &str,
    command: &str,
    status: std::process::ExitStatus,
    output: &str,
) -> String {
    let mut output = output.trim_end();
    let mut cut = "";
    if output.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !output.is_char_boundary(end) {
            end -= 1;
        }
        output = &output[..end];
        cut = "\n…";
    }
    format!("building {name} failed ({command}: {status}):\n{output}{cut}")
}

/// Starts a build tool with its output piped (killed if dropped); a missing program is an
/// error saying `what` is missing and how to install it.
pub(crate) fn spawn_tool(
    cmd: &mut tokio::process::Command,
    name: &str,
    what: &str,
    install_hint: &str,
) -> Result<tokio::process::Child> {
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd.spawn()
        .map_err(|e| start_error(e, cmd, name, what, install_hint))
}

/// Why a build tool did not start: a missing program says what to install.
fn start_error(
    e: std::io::Error,
    cmd: &tokio::process::Command,
    name: &str,
    what: &str,
    install_hint: &str,
) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        return crate::errors::Hinted::error(
            format!("cannot build {name}: {what} was not found"),
            install_hint,
        );
    }
    let program = cmd.as_std().get_program().to_string_lossy().into_owned();
    anyhow::Error::new(e).context(format!("cannot run {program}"))
}
