//! Builds from source before packaging, for compiled languages: a Go module without a
//! `bootstrap` (`go build`), a Java source tree without a jar (`javac`). Other code
//! directories are packaged as they are.

use anyhow::Result;
use nimbus_core::FunctionConfig;
use std::path::{Path, PathBuf};

mod go;
mod java;

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

/// Builds `dir` for `config.runtime` when it holds sources that need a build.
pub async fn prepare(dir: &Path, config: &FunctionConfig) -> Result<Prepared> {
    if go::wants_build(dir, config) {
        return go::build(dir).await;
    }
    if java::wants_build(dir, config) {
        return java::build(dir, config).await;
    }
    Ok(Prepared::AsIs(dir.to_path_buf()))
}
