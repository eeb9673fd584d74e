//! Packaging a layer directory (laid out as `/opt` will be: `python/`,
//! `nodejs/node_modules/`, `bin/`, `lib/`, …) into the zip PublishLayerVersion takes.
//! Minimal: the directory is zipped as it is (deterministically, so an unchanged directory
//! gives the same content hash and `nimbus deploy` republishes nothing).

use anyhow::{bail, Context, Result};
use nimbus_core::Runtime;
use std::path::Path;

/// Zips `dir` as it is for a layer compatible with `runtimes` (unused here: a build with
/// dependency installs may use them). Blocking file system work.
pub fn prepare_layer(dir: &Path, _runtimes: &[Runtime]) -> Result<Vec<u8>> {
    if !dir.is_dir() {
        bail!("layer directory {} does not exist", dir.display());
    }
    nimbus_store::zip_dir(dir).with_context(|| format!("cannot package {}", dir.display()))
}
