//! Go functions from source: a package with a `go.mod` and no `bootstrap` (runtime `go`
//! or `provided*`) is built with the host's Go toolchain into a temporary directory that
//! holds only the `bootstrap` executable.
//!
//! The build is offline and leaves the code directory untouched. The Nimbus runtime
//! module (`runtimes/go`, module path [`MODULE`]) is embedded in this binary and written
//! to `~/.cache/nimbus/go-runtime/<hash of its files>/`; a copy of the function's
//! `go.mod` (and `go.sum`) in the temporary directory gets
//! `replace nimbus.dev/lambda => <that directory>` (`go mod edit`), and `go build` runs in
//! the code directory with `-modfile` pointing at the copy, `GOPROXY=off`, `GOWORK=off`
//! and `GOFLAGS=-mod=mod` (so a missing `require` line is filled in, in the copy).
//!
//! Builds are reproducible: `-trimpath`, `-buildvcs=false`, and a runtime directory that
//! only changes with the runtime's sources (Go records the replacement directory in the
//! binary), so redeploying unchanged sources publishes no new version.

use super::failure_message;
use super::Prepared;
use crate::errors::Hinted;
use anyhow::{Context, Result};
use nimbus_core::FunctionConfig;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The module path of the Nimbus Go runtime (`runtimes/go/go.mod`).
pub const MODULE: &str = "nimbus.dev/lambda";

/// `runtimes/go` without its tests and README: (path inside the module, contents).
const RUNTIME_FILES: &[(&str, &str)] = &[
    ("go.mod", include_str!("../../../../runtimes/go/go.mod")),
    (
        "events/apigw.go",
        include_str!("../../../../runtimes/go/events/apigw.go"),
    ),
    (
        "events/lambda_function_urls.go",
        include_str!("../../../../runtimes/go/events/lambda_function_urls.go"),
    ),
    (
        "lambda/client.go",
        include_str!("../../../../runtimes/go/lambda/client.go"),
    ),
    (
        "lambda/entry.go",
        include_str!("../../../../runtimes/go/lambda/entry.go"),
    ),
    (
        "lambda/errors.go",
        include_str!("../../../../runtimes/go/lambda/errors.go"),
    ),
    (
        "lambda/handler.go",
        include_str!("../../../../runtimes/go/lambda/handler.go"),
    ),
    (
        "lambda/invoke.go",
        include_str!("../../../../runtimes/go/lambda/invoke.go"),
    ),
    (
        "lambda/messages/messages.go",
        include_str!("../../../../runtimes/go/lambda/messages/messages.go"),
    ),
    (
        "lambda/sigterm.go",
        include_str!("../../../../runtimes/go/lambda/sigterm.go"),
    ),
    (
        "lambdacontext/context.go",
        include_str!("../../../../runtimes/go/lambdacontext/context.go"),
    ),
];

const INSTALL_HINT: &str = "is Go installed? apt-get install golang-go";
const OFFLINE_HINT: &str = "the build runs offline (GOPROXY=off): the standard library and nimbus.dev/lambda are provided, other modules must already be in the Go module cache";

/// Whether `dir` is Go source to build: a Go-capable runtime, a `go.mod`, no `bootstrap`.
pub fn wants_build(dir: &Path, config: &FunctionConfig) -> bool {
    let runtime = config.runtime.as_str();
    (runtime == "go" || runtime.starts_with("provided"))
        && dir.join("go.mod").is_file()
        && std::fs::symlink_metadata(dir.join("bootstrap")).is_err()
}

/// Builds `dir` into a temporary directory holding only `bootstrap`.
pub async fn build(dir: &Path) -> Result<Prepared> {
    build_with(OsStr::new("go"), dir).await
}

/// Where the build puts things inside its temporary directory.
struct Layout {
    /// The copy of the function's `go.mod` (and `go.sum`) that the build uses.
    modfile: PathBuf,
    /// The package directory: only `bootstrap`.
    out: PathBuf,
}

impl Layout {
    fn new(root: &Path) -> Layout {
        Layout {
            modfile: root.join("mod").join("go.mod"),
            out: root.join("out"),
        }
    }
}

async fn build_with(go: &OsStr, dir: &Path) -> Result<Prepared> {
    let name = display_name(dir);
    eprintln!("building {name} with go build…");
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("nimbus-go-")
        .tempdir()
        .context("cannot create a temporary directory for the Go build")?;
    let layout = Layout::new(tmp.path());
    let runtime = runtime_dir(|k| std::env::var_os(k), tmp.path());
    write_runtime(&runtime)?;
    std::fs::create_dir_all(layout.modfile.parent().expect("has a parent"))?;
    std::fs::create_dir_all(&layout.out)?;
    std::fs::copy(dir.join("go.mod"), &layout.modfile)
        .with_context(|| format!("cannot read {}", dir.join("go.mod").display()))?;
    if dir.join("go.sum").is_file() {
        std::fs::copy(dir.join("go.sum"), layout.modfile.with_extension("sum"))
            .with_context(|| format!("cannot read {}", dir.join("go.sum").display()))?;
    }

    let env = go_env(|k| std::env::var_os(k), tmp.path());
    let replace = format!("-replace={MODULE}={}", runtime.display());
    run_go(
        go,
        dir,
        &env,
        &[
            OsStr::new("mod"),
            OsStr::new("edit"),
            OsStr::new(&replace),
            layout.modfile.as_os_str(),
        ],
        &name,
    )
    .await?;
    let bootstrap = layout.out.join("bootstrap");
    run_go(
        go,
        dir,
        &env,
        &build_args(&layout.modfile, &bootstrap),
        &name,
    )
    .await?;
    if !bootstrap.is_file() {
        anyhow::bail!(
            "go build for {name} did not produce {}",
            bootstrap.display()
        );
    }
    tracing::debug!(function = %name, elapsed_ms = started.elapsed().as_millis() as u64, "go build done");
    Ok(Prepared::Built {
        dir: layout.out,
        _tmp: tmp,
    })
}

/// The `go build` arguments (run in the code directory).
fn build_args(modfile: &Path, bootstrap: &Path) -> Vec<std::ffi::OsString> {
    let mut modfile_arg = std::ffi::OsString::from("-modfile=");
    modfile_arg.push(modfile);
    vec![
        "build".into(),
        modfile_arg,
        "-o".into(),
        bootstrap.into(),
        "-trimpath".into(),
        "-buildvcs=false".into(),
        "-ldflags=-s -w".into(),
        ".".into(),
    ]
}

/// The environment of the `go` commands: a static Linux binary, no network, no
/// workspace, the temporary `go.mod` may be updated. `getenv` reads the current
/// environment; without a home directory Go has no default cache, so one is supplied
/// under `scratch` (the build's own temporary directory).
fn go_env(
    getenv: impl Fn(&str) -> Option<std::ffi::OsString>,
    scratch: &Path,
) -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = [
        ("CGO_ENABLED", "0"),
        ("GOOS", "linux"),
        ("GOPROXY", "off"),
        ("GOTOOLCHAIN", "local"),
        ("GOWORK", "off"),
        ("GOFLAGS", "-mod=mod"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into()))
    .collect();
    let set = |k: &str| getenv(k).is_some_and(|v| !v.is_empty());
    if !set("HOME") {
        let fallback = scratch.join("go");
        if !set("GOCACHE") && !set("XDG_CACHE_HOME") {
            env.push(("GOCACHE".into(), fallback.join("cache").into()));
        }
        if !set("GOPATH") {
            env.push(("GOPATH".into(), fallback.join("path").into()));
        }
    }
    env
}

async fn run_go<S: AsRef<OsStr>>(
    go: &OsStr,
    dir: &Path,
    env: &[(String, std::ffi::OsString)],
    args: &[S],
    name: &str,
) -> Result<()> {
    let mut cmd = tokio::process::Command::new(go);
    cmd.args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)));
    let what = format!("the Go toolchain ({})", go.to_string_lossy());
    let out = super::run_tool(cmd, name, &what, INSTALL_HINT).await?;
    if out.status.success() {
        return Ok(());
    }
    let text = super::tool_output(&out);
    // `go build` / `go mod edit`: the rest are temporary paths
    let command = std::iter::once(go)
        .chain(
            args.iter()
                .map(AsRef::as_ref)
                .take_while(|a| !a.to_string_lossy().starts_with('-')),
        )
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    Err(Hinted::error(
        failure_message(name, &command, out.status, &text),
        OFFLINE_HINT,
    ))
}

/// The directory the embedded runtime is written to: named by the hash of its files in
/// the user's cache directory, else (no home) under `scratch`.
fn runtime_dir(getenv: impl Fn(&str) -> Option<std::ffi::OsString>, scratch: &Path) -> PathBuf {
    let nonempty = |k: &str| getenv(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let cache = nonempty("XDG_CACHE_HOME")
        .or_else(|| nonempty("HOME").map(|h| h.join(".cache")))
        .map(|c| c.join("nimbus"))
        .unwrap_or_else(|| scratch.to_path_buf());
    cache
        .join("go-runtime")
        .join(format!("{:016x}", runtime_hash()))
}

/// FNV-1a over the embedded files' paths and contents: stable across builds of nimbus.
fn runtime_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (path, contents) in RUNTIME_FILES {
        for b in path.bytes().chain([0]).chain(contents.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// Writes the embedded runtime module under `root`. Files that already hold the right
/// contents are left alone; others are replaced atomically (temp file + rename), so
/// concurrent builds never see a half-written file.
fn write_runtime(root: &Path) -> Result<()> {
    for (path, contents) in RUNTIME_FILES {
        let p = root.join(path);
        if std::fs::read(&p).is_ok_and(|c| c == contents.as_bytes()) {
            continue;
        }
        let parent = p.parent().expect("has a parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent)
            .with_context(|| format!("cannot write in {}", parent.display()))?;
        std::io::Write::write_all(&mut tmp, contents.as_bytes())?;
        tmp.persist(&p)
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

/// The code directory's name, for messages.
pub(super) fn display_name(dir: &Path) -> String {
    dir.canonicalize()
        .ok()
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::Runtime;

    fn config(runtime: &str) -> FunctionConfig {
        FunctionConfig::new(Runtime::parse(runtime).unwrap(), "bootstrap")
    }

    #[test]
    fn builds_go_modules_without_a_bootstrap() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(!wants_build(d, &config("go")), "no go.mod");
        std::fs::write(d.join("go.mod"), "module x\n").unwrap();
        for runtime in ["go", "provided", "provided.al2", "provided.al2023"] {
            assert!(wants_build(d, &config(runtime)), "{runtime}");
        }
        assert!(!wants_build(
            d,
            &FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), "index.handler")
        ));
        std::fs::write(d.join("bootstrap"), "#!/bin/sh\n").unwrap();
        assert!(
            !wants_build(d, &config("go")),
            "a bootstrap is used as it is"
        );
    }

    /// Every non-test file of runtimes/go is embedded, and nothing else.
    #[test]
    fn embedded_runtime_matches_runtimes_go() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../runtimes/go");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                    continue;
                }
                let rel = p
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if rel.ends_with(".go") && !rel.ends_with("_test.go") || rel == "go.mod" {
                    on_disk.push(rel);
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = RUNTIME_FILES.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "update RUNTIME_FILES in build/go.rs");
    }

    #[test]
    fn runtime_is_written_as_a_module() {
        let dir = tempfile::tempdir().unwrap();
        write_runtime(dir.path()).unwrap();
        let gomod = std::fs::read_to_string(dir.path().join("go.mod")).unwrap();
        assert!(gomod.starts_with(&format!("module {MODULE}\n")), "{gomod}");
        let entry = dir.path().join("lambda/entry.go");
        assert!(std::fs::read_to_string(&entry)
            .unwrap()
            .contains("func Start(handler interface{})"));
        // a damaged file is repaired, intact ones are kept
        std::fs::write(&entry, "garbage").unwrap();
        let gomod_before = std::fs::metadata(dir.path().join("go.mod")).unwrap();
        write_runtime(dir.path()).unwrap();
        assert!(std::fs::read_to_string(&entry)
            .unwrap()
            .contains("func Start"));
        let gomod_after = std::fs::metadata(dir.path().join("go.mod")).unwrap();
        assert_eq!(
            gomod_before.modified().unwrap(),
            gomod_after.modified().unwrap()
        );
    }

    #[test]
    fn runtime_dir_is_stable_and_in_the_users_cache() {
        let scratch = Path::new("/scratch");
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let hash = format!("{:016x}", runtime_hash());
        assert_eq!(
            runtime_dir(env(&[("HOME", "/home/u")]), scratch),
            Path::new("/home/u/.cache/nimbus/go-runtime").join(&hash)
        );
        assert_eq!(
            runtime_dir(
                env(&[("HOME", "/home/u"), ("XDG_CACHE_HOME", "/c")]),
                scratch
            ),
            Path::new("/c/nimbus/go-runtime").join(&hash)
        );
        assert_eq!(
            runtime_dir(env(&[("HOME", "")]), scratch),
            scratch.join("go-runtime").join(&hash)
        );
        assert_eq!(runtime_hash(), runtime_hash());
    }

    #[test]
    fn environment_is_offline_and_static() {
        let home = |k: &str| (k == "HOME").then(|| "/root".into());
        let scratch = Path::new("/scratch");
        let env = go_env(home, scratch);
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(get("GOPROXY").as_deref(), Some("off"));
        assert_eq!(get("CGO_ENABLED").as_deref(), Some("0"));
        assert_eq!(get("GOOS").as_deref(), Some("linux"));
        assert_eq!(get("GOWORK").as_deref(), Some("off"));
        assert_eq!(get("GOFLAGS").as_deref(), Some("-mod=mod"));
        assert_eq!(get("GOTOOLCHAIN").as_deref(), Some("local"));
        assert_eq!(get("GOCACHE"), None, "Go's default cache under HOME");
        // no home: a cache and GOPATH are supplied
        let env = go_env(|_| None, scratch);
        assert!(env
            .iter()
            .any(|(k, v)| k == "GOCACHE" && Path::new(v).starts_with(scratch)));
        assert!(env.iter().any(|(k, _)| k == "GOPATH"));
        let env = go_env(|k| (k == "GOCACHE").then(|| "/c".into()), scratch);
        assert!(!env.iter().any(|(k, _)| k == "GOCACHE"));
    }

    #[test]
    fn build_arguments() {
        let args = build_args(Path::new("/t/mod/go.mod"), Path::new("/t/out/bootstrap"));
        let args: Vec<_> = args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "build",
                "-modfile=/t/mod/go.mod",
                "-o",
                "/t/out/bootstrap",
                "-trimpath",
                "-buildvcs=false",
                "-ldflags=-s -w",
                "."
            ]
        );
    }

    #[test]
    fn long_compiler_output_is_cut() {
        use std::os::unix::process::ExitStatusExt;
        let status = std::process::ExitStatus::from_raw(1 << 8);
        let m = failure_message("f", "go build", status, "./main.go:3:1: syntax error\n");
        assert!(
            m.starts_with("building f failed (go build: exit status: 1):\n./main.go:3:1"),
            "{m}"
        );
        let long = "é".repeat(crate::build::MAX_OUTPUT);
        let m = failure_message("f", "go build", status, &long);
        assert!(m.len() < crate::build::MAX_OUTPUT + 200 && m.ends_with('…'));
    }

    #[tokio::test]
    async fn missing_toolchain_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("go.mod"), "module x\n").unwrap();
        let e = build_with(OsStr::new("/nonexistent/go"), dir.path())
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("was not found"), "{e}");
        assert_eq!(crate::errors::hint(&e).as_deref(), Some(INSTALL_HINT));
    }
}
