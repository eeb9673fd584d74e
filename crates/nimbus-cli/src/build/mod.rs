//! Builds before packaging (`nimbus deploy` and `nimbus up`; `--no-build` skips them): a Go
//! module without a `bootstrap` (`go build`), a Java source tree without a jar (`javac`), a
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
    match cmd.output().await {
        Ok(o) => Ok(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(crate::errors::Hinted::error(
            format!("cannot build {name}: {what} was not found"),
            install_hint,
        )),
        Err(e) => {
            let program = cmd.as_std().get_program().to_string_lossy().into_owned();
            Err(anyhow::Error::new(e).context(format!("cannot run {program}")))
        }
    }
}

/// A finished tool's stderr followed by its stdout.
pub(crate) fn tool_output(out: &std::process::Output) -> String {
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    text
}
