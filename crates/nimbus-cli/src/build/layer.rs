//! Packaging a layer directory (laid out as `/opt` will be: `python/`,
//! `nodejs/node_modules/`, `bin/`, `lib/`, …) into the zip PublishLayerVersion takes, with
//! the same dependency builds as functions (`deps.rs`): a `requirements.txt` at the layer's
//! root is installed into `python/`, a `nodejs/package.json` into `nodejs/node_modules`.
//! The zip is deterministic, so an unchanged directory (and cached dependencies) gives the
//! same content hash and `nimbus deploy` republishes nothing.

use super::deps::{self, Built};
use anyhow::{bail, Context, Result};
use nimbus_core::{Runtime, RuntimeFamily};
use std::path::Path;

/// Builds and zips `dir` for a layer compatible with `runtimes`.
pub async fn prepare_layer(dir: &Path, runtimes: &[Runtime]) -> Result<Vec<u8>> {
    if !dir.is_dir() {
        bail!("layer directory {} does not exist", dir.display());
    }
    let built = match family(dir, runtimes) {
        Some(f) => deps::prepare_layer(dir, f).await?,
        None => Built::as_is(dir),
    };
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || {
        // `built` (and its temporary build directory) lives until the zip is made.
        nimbus_store::zip_dir(built.prepared.dir())
            .with_context(|| format!("cannot package {shown}"))
    })
    .await
    .context("packaging task failed")?
}

/// The runtime family whose dependencies the layer installs: that of its compatible
/// runtimes when they agree, else (none named) the one whose dependency manifest it has.
fn family(dir: &Path, runtimes: &[Runtime]) -> Option<RuntimeFamily> {
    let mut families = runtimes.iter().map(Runtime::family);
    match families.next() {
        Some(first) => families.all(|f| f == first).then_some(first),
        None if dir.join("requirements.txt").is_file() => Some(RuntimeFamily::Python),
        None if dir.join("nodejs/package.json").is_file() => Some(RuntimeFamily::Node),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_family_comes_from_the_runtimes_or_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let py = Runtime::parse("python3.11").unwrap();
        let node = Runtime::parse("nodejs20.x").unwrap();
        assert_eq!(
            family(dir.path(), std::slice::from_ref(&py)),
            Some(RuntimeFamily::Python)
        );
        assert_eq!(family(dir.path(), &[py, node.clone()]), None);
        assert_eq!(family(dir.path(), &[]), None);
        std::fs::create_dir(dir.path().join("nodejs")).unwrap();
        std::fs::write(dir.path().join("nodejs/package.json"), "{}").unwrap();
        assert_eq!(family(dir.path(), &[]), Some(RuntimeFamily::Node));
        assert_eq!(family(dir.path(), &[node]), Some(RuntimeFamily::Node));
    }
}
