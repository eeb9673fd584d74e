//! WebAssembly components from source, for the runtimes `wasi-http` (the standard
//! `wasi:http/proxy` world) and `wasm-event` (Nimbus's `nimbus:function/event-handler`).
//! The handler names the component's file in the package (`app.wasm`); the package holds
//! only that file, built into a temporary directory (the code directory is not written to,
//! except by cargo's own `target/`).
//!
//! What is built, in this order:
//! - the handler's file already exists in the code directory: it is packaged as it is
//!   (a prebuilt component, e.g. from `spin build` or your own build);
//! - a `Cargo.toml`: `cargo build --release --target wasm32-wasip2`; the `.wasm` of the
//!   package's `cdylib` or `bin` (found in cargo's JSON messages, so `CARGO_TARGET_DIR`
//!   and workspaces work) becomes the handler;
//! - `<handler stem>.py` or `app.py`: `componentize-py componentize <module>` against the
//!   runtime's world (its WIT is embedded in this binary: `wit/wasi-http`,
//!   `wit/nimbus-function`);
//! - a `package.json` naming `@bytecodealliance/componentize-js` (or jco, which uses it):
//!   `npx --no-install componentize-js <entry>` against the same WIT (`entry`: the
//!   package's `main`, else `<handler stem>.js`, `app.js` or `index.js`). (componentize-js
//!   itself, not `jco componentize`: jco 1.35's wrapper cannot read a WIT directory on
//!   Node 20.)
//!
//! Anything else is an error that says what to add. `--no-build` packages the directory as
//! it is.

use super::failure_message;
use super::Prepared;
use crate::errors::Hinted;
use anyhow::{Context, Result};
use nimbus_core::{FunctionConfig, RuntimeFamily};
use std::ffi::OsString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// The Rust target components are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The world of `wasi-http` functions, and its WIT (`wit/wasi-http`): (path, contents).
const WASI_HTTP_WORLD: &str = "wasi:http/proxy@0.2.12";
const WASI_HTTP_WIT: &[(&str, &str)] = &[
    (
        "proxy.wit",
        include_str!("../../../../wit/wasi-http/proxy.wit"),
    ),
    (
        "deps/cli.wit",
        include_str!("../../../../wit/wasi-http/deps/cli.wit"),
    ),
    (
        "deps/clocks.wit",
        include_str!("../../../../wit/wasi-http/deps/clocks.wit"),
    ),
    (
        "deps/filesystem.wit",
        include_str!("../../../../wit/wasi-http/deps/filesystem.wit"),
    ),
    (
        "deps/http.wit",
        include_str!("../../../../wit/wasi-http/deps/http.wit"),
    ),
    (
        "deps/io.wit",
        include_str!("../../../../wit/wasi-http/deps/io.wit"),
    ),
    (
        "deps/random.wit",
        include_str!("../../../../wit/wasi-http/deps/random.wit"),
    ),
    (
        "deps/sockets.wit",
        include_str!("../../../../wit/wasi-http/deps/sockets.wit"),
    ),
];

/// The world of `wasm-event` functions, and its WIT (`wit/nimbus-function`).
const EVENT_WORLD: &str = "nimbus:function/event-handler@0.1.0";
const EVENT_WIT: &[(&str, &str)] = &[(
    "handler.wit",
    include_str!("../../../../wit/nimbus-function/handler.wit"),
)];

const CARGO_HINT: &str =
    "install Rust with rustup (or apt-get install cargo), then rustup target add wasm32-wasip2";
const TARGET_HINT: &str = "run: rustup target add wasm32-wasip2";
const COMPONENTIZE_PY_HINT: &str =
    "run: pip install componentize-py (it must be on PATH), or deploy a prebuilt component";
const JCO_HINT: &str = "run: npm install --save-dev @bytecodealliance/componentize-js (npx runs the project's componentize-js), or deploy a prebuilt component";
/// Lines of a tool's stderr kept for an error message.
const KEPT_LINES: usize = 400;

/// How a component is obtained from a code directory.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// `cargo build --release --target wasm32-wasip2`.
    Cargo,
    /// `componentize-py … componentize MODULE`.
    ComponentizePy { module: String },
    /// `npx componentize-js ENTRY`.
    ComponentizeJs { entry: PathBuf },
    /// No handler file and nothing to build it from.
    Nothing,
}

/// What to do for `dir`: `None` when it is packaged as it is (not a wasm runtime, or the
/// handler's component is already there).
pub fn plan(dir: &Path, config: &FunctionConfig) -> Option<Plan> {
    if !config.runtime.family().is_wasm() || dir.join(&config.handler).is_file() {
        return None;
    }
    if dir.join("Cargo.toml").is_file() {
        return Some(Plan::Cargo);
    }
    let stem = handler_stem(&config.handler);
    for module in [stem, "app"] {
        if !module.is_empty() && dir.join(format!("{module}.py")).is_file() {
            return Some(Plan::ComponentizePy {
                module: module.to_string(),
            });
        }
    }
    if let Some(entry) = jco_entry(dir, stem) {
        return Some(Plan::ComponentizeJs { entry });
    }
    Some(Plan::Nothing)
}

/// `app.wasm` → `app`, `out/my-fn.wasm` → `my-fn`.
fn handler_stem(handler: &str) -> &str {
    let file = handler.rsplit('/').next().unwrap_or(handler);
    file.strip_suffix(".wasm").unwrap_or(file)
}

/// The entry module of a componentize-js project: a `package.json` that depends on it or
/// on jco, and its `main` (else `STEM.js`, `app.js`, `index.js`).
fn jco_entry(dir: &Path, stem: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(dir.join("package.json")).ok()?;
    let pkg: serde_json::Value = serde_json::from_str(&text).ok()?;
    let uses_jco = ["dependencies", "devDependencies"].iter().any(|k| {
        pkg[k].as_object().is_some_and(|deps| {
            deps.contains_key("@bytecodealliance/jco")
                || deps.contains_key("@bytecodealliance/componentize-js")
        })
    });
    if !uses_jco {
        return None;
    }
    let main = pkg["main"].as_str().map(PathBuf::from);
    main.into_iter()
        .chain([
            PathBuf::from(format!("{stem}.js")),
            "app.js".into(),
            "index.js".into(),
        ])
        .find(|p| dir.join(p).is_file())
        .or_else(|| Some(PathBuf::from("index.js")))
}

/// The world a runtime's components target.
struct World {
    /// Its fully qualified name (componentize-py's `-w`).
    qualified: &'static str,
    /// Its name in the root package of its WIT directory (componentize-js's `--world-name`).
    local: &'static str,
    /// The WIT directory: (path, contents).
    wit: &'static [(&'static str, &'static str)],
}

fn world(family: RuntimeFamily) -> World {
    match family {
        RuntimeFamily::WasmEvent => World {
            qualified: EVENT_WORLD,
            local: "event-handler",
            wit: EVENT_WIT,
        },
        _ => World {
            qualified: WASI_HTTP_WORLD,
            local: "proxy",
            wit: WASI_HTTP_WIT,
        },
    }
}

/// Builds the component of `dir` into a temporary package holding only the handler's file.
pub async fn build(dir: &Path, config: &FunctionConfig, plan: Plan) -> Result<Prepared> {
    let tools = Tools::default();
    build_with(&tools, dir, config, plan).await
}

/// The programs run (tests point them elsewhere).
struct Tools {
    cargo: OsString,
    rustc: OsString,
    componentize_py: OsString,
    npx: OsString,
}

impl Default for Tools {
    fn default() -> Self {
        Tools {
            cargo: std::env::var_os("CARGO")
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "cargo".into()),
            rustc: std::env::var_os("RUSTC")
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| "rustc".into()),
            componentize_py: "componentize-py".into(),
            npx: "npx".into(),
        }
    }
}

async fn build_with(
    tools: &Tools,
    dir: &Path,
    config: &FunctionConfig,
    plan: Plan,
) -> Result<Prepared> {
    let name = super::go::display_name(dir);
    let handler = &config.handler;
    let tmp = tempfile::Builder::new()
        .prefix("nimbus-wasm-")
        .tempdir()
        .context("cannot create a temporary directory for the component build")?;
    let out_dir = tmp.path().join("out");
    let out = out_dir.join(handler);
    std::fs::create_dir_all(out.parent().expect("has a parent"))?;
    let started = Instant::now();
    let how = match plan {
        Plan::Nothing => {
            return Err(Hinted::error(
                format!("cannot build {name}: there is no {handler} in {} and nothing to build it from", dir.display()),
                format!("add a Cargo.toml (Rust, built for wasm32-wasip2), an app.py (componentize-py) or a package.json using @bytecodealliance/componentize-js, or put the built component at {handler}"),
            ));
        }
        Plan::Cargo => {
            let built = cargo_build(tools, dir, &name, handler).await?;
            std::fs::copy(&built, &out)
                .with_context(|| format!("cannot copy {} into the package", built.display()))?;
            "cargo build"
        }
        Plan::ComponentizePy { module } => {
            let wit = write_wit(tmp.path(), config.runtime.family())?;
            let world = world(config.runtime.family()).qualified;
            let mut cmd = tokio::process::Command::new(&tools.componentize_py);
            cmd.arg("-d")
                .arg(&wit)
                .args(["-w", world, "componentize", &module, "-p", ".", "-o"])
                .arg(&out)
                .current_dir(dir);
            let line = format!("componentize-py -w {world} componentize {module}");
            run_build_tool(cmd, &name, &line, "componentize-py", COMPONENTIZE_PY_HINT).await?;
            "componentize-py"
        }
        Plan::ComponentizeJs { entry } => {
            let wit = write_wit(tmp.path(), config.runtime.family())?;
            // the world of the WIT directory's root package, by its local name
            let local_world = world(config.runtime.family()).local;
            let mut cmd = tokio::process::Command::new(&tools.npx);
            cmd.args(["--no-install", "componentize-js"])
                .arg(&entry)
                .arg("--wit")
                .arg(&wit)
                .args(["--world-name", local_world, "-o"])
                .arg(&out)
                .current_dir(dir);
            let line = format!("npx componentize-js {}", entry.display());
            run_build_tool(cmd, &name, &line, "npx (npm)", JCO_HINT).await?;
            "componentize-js"
        }
    };
    if !out.is_file() {
        anyhow::bail!("{how} for {name} did not produce {handler}");
    }
    let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "built {name}: {handler} ({}) with {how} in {:.1}s",
        human_size(size),
        started.elapsed().as_secs_f64()
    );
    Ok(Prepared::Built {
        dir: out_dir,
        _tmp: tmp,
    })
}

fn human_size(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MB", n as f64 / f64::from(1 << 20))
    } else {
        format!("{} KB", n.div_ceil(1024))
    }
}

/// Writes the runtime's WIT package (with its deps) under `root/wit`.
fn write_wit(root: &Path, family: RuntimeFamily) -> Result<PathBuf> {
    let wit = root.join("wit");
    for (path, contents) in world(family).wit {
        let p = wit.join(path);
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        std::fs::write(&p, contents).with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(wit)
}

/// `cargo build --release --target wasm32-wasip2` in `dir`; the built component's path.
async fn cargo_build(tools: &Tools, dir: &Path, name: &str, handler: &str) -> Result<PathBuf> {
    if let Some(false) = target_installed(tools, dir).await? {
        return Err(Hinted::error(
            format!("cannot build {name}: the Rust target {TARGET} is not installed"),
            TARGET_HINT,
        ));
    }
    let mut cmd = tokio::process::Command::new(&tools.cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        TARGET,
        "--message-format=json-render-diagnostics",
    ])
    .current_dir(dir);
    let line = format!("cargo build --release --target {TARGET}");
    let what = format!("cargo ({})", tools.cargo.to_string_lossy());
    eprintln!("building {name} with {line}…");
    let run = run_captured(cmd, name, &what, CARGO_HINT).await?;
    if !run.status.success() {
        // cargo's progress lines (`   Compiling x v1`) say nothing about the failure
        let text = run
            .stderr
            .iter()
            .filter(|l| !is_cargo_progress(l))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("\n");
        let hint = if missing_target(&text) {
            TARGET_HINT
        } else {
            "fix the errors above and deploy again (the previous version keeps serving)"
        };
        return Err(Hinted::error(
            failure_message(name, &line, run.status, &text),
            hint,
        ));
    }
    let manifest_dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let found = components_built(&String::from_utf8_lossy(&run.stdout), &manifest_dir);
    pick_component(found, name, handler)
}

/// Whether the Rust target is installed for the toolchain `dir` uses (`None`: cannot tell,
/// e.g. a rustc without a sysroot layout; the build then says it).
async fn target_installed(tools: &Tools, dir: &Path) -> Result<Option<bool>> {
    let mut cmd = tokio::process::Command::new(&tools.rustc);
    cmd.args(["--print", "sysroot"]).current_dir(dir);
    let what = format!("rustc ({})", tools.rustc.to_string_lossy());
    let out = super::run_tool(cmd, &super::go::display_name(dir), &what, CARGO_HINT).await?;
    if !out.status.success() {
        return Ok(None);
    }
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let rustlib = sysroot.join("lib/rustlib");
    if !rustlib.is_dir() {
        return Ok(None);
    }
    Ok(Some(rustlib.join(TARGET).join("lib").is_dir()))
}

/// `   Compiling wasi v0.14.7`, `  Downloaded x v1`, …
fn is_cargo_progress(line: &str) -> bool {
    const VERBS: &[&str] = &[
        "Compiling",
        "Checking",
        "Downloading",
        "Downloaded",
        "Updating",
        "Locking",
        "Adding",
        "Blocking",
        "Fresh",
    ];
    line.starts_with(' ')
        && line
            .split_whitespace()
            .next()
            .is_some_and(|w| VERBS.contains(&w))
}

/// rustc's words when the standard library of the target is missing.
fn missing_target(stderr: &str) -> bool {
    stderr.contains("target may not be installed")
        || (stderr.contains("can't find crate for `core`")
            || stderr.contains("can't find crate for `std`"))
            && stderr.contains(TARGET)
}

/// The `.wasm` files of the `cdylib` and `bin` targets of the packages under
/// `manifest_dir` (the package itself, or a workspace's members) in cargo's JSON messages.
fn components_built(messages: &str, manifest_dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for line in messages.lines() {
        let Ok(m) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if m["reason"] != "compiler-artifact" {
            continue;
        }
        let Some(manifest) = m["manifest_path"].as_str() else {
            continue;
        };
        let manifest = Path::new(manifest);
        if !manifest.starts_with(manifest_dir) || manifest.starts_with(manifest_dir.join("target"))
        {
            continue;
        }
        let kinds = m["target"]["kind"].as_array().cloned().unwrap_or_default();
        if !kinds.iter().any(|k| k == "cdylib" || k == "bin") {
            continue;
        }
        for f in m["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = f.as_str().filter(|f| f.ends_with(".wasm")) {
                let p = PathBuf::from(f);
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// The one component built, or the one named like the handler among several.
fn pick_component(found: Vec<PathBuf>, name: &str, handler: &str) -> Result<PathBuf> {
    let stem = handler_stem(handler).replace('-', "_");
    match found.len() {
        0 => Err(Hinted::error(
            format!("cargo build for {name} built no component (no cdylib or bin target)"),
            "add [lib] crate-type = [\"cdylib\"] to Cargo.toml (or a src/main.rs)",
        )),
        1 => Ok(found.into_iter().next().expect("one")),
        _ => {
            let named = found.iter().find(|p| {
                p.file_stem()
                    .is_some_and(|s| s.to_string_lossy().replace('-', "_") == stem)
            });
            match named {
                Some(p) => Ok(p.clone()),
                None => {
                    let list: Vec<String> = found
                        .iter()
                        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                        .collect();
                    Err(Hinted::error(
                        format!(
                            "cargo build for {name} built several components ({}); which one is {handler}?",
                            list.join(", ")
                        ),
                        format!("name the handler after one of them (e.g. {}), or keep one cdylib/bin target", list[0]),
                    ))
                }
            }
        }
    }
}

/// A finished tool: its status, stdout, and the last lines of its stderr.
struct Captured {
    status: std::process::ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<String>,
}

/// Runs a build tool with its output captured; on a terminal a spinner shows its last
/// stderr line (cargo's `Compiling …`).
async fn run_captured(
    mut cmd: tokio::process::Command,
    name: &str,
    what: &str,
    install_hint: &str,
) -> Result<Captured> {
    let mut child = super::spawn_tool(&mut cmd, name, what, install_hint)?;
    let mut stdout = child.stdout.take().expect("piped");
    let stdout_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let spinner = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    });
    let mut kept = std::collections::VecDeque::new();
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(bar) = &spinner {
            bar.set_message(line.trim().chars().take(100).collect::<String>());
        }
        if kept.len() == KEPT_LINES {
            kept.pop_front();
        }
        kept.push_back(line);
    }
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let stdout = stdout_task.await.unwrap_or_default();
    let status = child.wait().await.context("waiting for the build")?;
    Ok(Captured {
        status,
        stdout,
        stderr: kept.into(),
    })
}

/// Runs componentize-py or componentize-js; fails with their output.
async fn run_build_tool(
    cmd: tokio::process::Command,
    name: &str,
    line: &str,
    what: &str,
    install_hint: &str,
) -> Result<()> {
    eprintln!("building {name} with {line}…");
    let run = run_captured(cmd, name, what, install_hint).await?;
    if run.status.success() {
        return Ok(());
    }
    let mut text = run.stderr.join("\n");
    text.push_str(&String::from_utf8_lossy(&run.stdout));
    // npx without the package installed: "npm error could not determine executable to run"
    let hint = if text.contains("could not determine executable") || text.contains("npx canceled") {
        JCO_HINT
    } else {
        "fix the errors above and deploy again (the previous version keeps serving)"
    };
    Err(Hinted::error(
        failure_message(name, line, run.status, &text),
        hint,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_core::Runtime;

    fn config(runtime: &str, handler: &str) -> FunctionConfig {
        FunctionConfig::new(Runtime::parse(runtime).unwrap(), handler)
    }

    #[test]
    fn detection() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let http = config("wasi-http", "app.wasm");
        let event = config("wasm-event", "app.wasm");
        assert_eq!(plan(d, &http), Some(Plan::Nothing));
        assert_eq!(plan(d, &config("nodejs20.x", "index.handler")), None);

        std::fs::write(d.join("package.json"), r#"{"dependencies": {"uuid": "1"}}"#).unwrap();
        assert_eq!(
            plan(d, &http),
            Some(Plan::Nothing),
            "a package.json without jco"
        );
        std::fs::write(
            d.join("package.json"),
            r#"{"main": "src/app.js", "devDependencies": {"@bytecodealliance/jco": "1"}}"#,
        )
        .unwrap();
        assert_eq!(
            plan(d, &http),
            Some(Plan::ComponentizeJs {
                entry: "index.js".into()
            })
        );
        std::fs::create_dir(d.join("src")).unwrap();
        std::fs::write(d.join("src/app.js"), "").unwrap();
        assert_eq!(
            plan(d, &event),
            Some(Plan::ComponentizeJs {
                entry: "src/app.js".into()
            })
        );

        std::fs::write(d.join("app.py"), "").unwrap();
        assert_eq!(
            plan(d, &http),
            Some(Plan::ComponentizePy {
                module: "app".into()
            })
        );
        std::fs::write(d.join("hello.py"), "").unwrap();
        assert_eq!(
            plan(d, &config("wasi-http", "out/hello.wasm")),
            Some(Plan::ComponentizePy {
                module: "hello".into()
            })
        );

        std::fs::write(d.join("Cargo.toml"), "[package]\n").unwrap();
        assert_eq!(plan(d, &event), Some(Plan::Cargo));
        assert_eq!(plan(d, &http), Some(Plan::Cargo));
        assert_eq!(
            plan(d, &config("provided.al2023", "bootstrap")),
            None,
            "not a wasm runtime"
        );

        // a prebuilt component is packaged as it is
        std::fs::write(d.join("app.wasm"), b"\0asm").unwrap();
        assert_eq!(plan(d, &http), None);
        assert_eq!(plan(d, &event), None);
        assert_eq!(
            plan(d, &config("wasm-event", "other.wasm")),
            Some(Plan::Cargo)
        );
    }

    #[test]
    fn handler_stems() {
        assert_eq!(handler_stem("app.wasm"), "app");
        assert_eq!(handler_stem("out/my-fn.wasm"), "my-fn");
    }

    #[test]
    fn worlds_and_their_wit() {
        let dir = tempfile::tempdir().unwrap();
        let wit = write_wit(dir.path(), RuntimeFamily::WasiHttp).unwrap();
        let proxy = std::fs::read_to_string(wit.join("proxy.wit")).unwrap();
        assert!(proxy.contains("include wasi:http/proxy@0.2.12;"), "{proxy}");
        let http = std::fs::read_to_string(wit.join("deps/http.wit")).unwrap();
        assert!(http.starts_with("package wasi:http@0.2.12;"));
        assert!(http.contains("world proxy"));
        assert_eq!(world(RuntimeFamily::WasiHttp).qualified, WASI_HTTP_WORLD);

        let dir = tempfile::tempdir().unwrap();
        let wit = write_wit(dir.path(), RuntimeFamily::WasmEvent).unwrap();
        let handler = std::fs::read_to_string(wit.join("handler.wit")).unwrap();
        assert!(handler.contains("package nimbus:function@0.1.0;"));
        assert!(handler.contains("world event-handler"));
        assert_eq!(world(RuntimeFamily::WasmEvent).qualified, EVENT_WORLD);
    }

    /// Every file of wit/wasi-http is embedded.
    #[test]
    fn embedded_wit_matches_the_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/wasi-http");
        let mut on_disk: Vec<String> = ["", "deps"]
            .iter()
            .flat_map(|sub| {
                std::fs::read_dir(root.join(sub))
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .filter(|p| p.extension().is_some_and(|e| e == "wit"))
                    .map(|p| {
                        p.strip_prefix(&root)
                            .unwrap()
                            .to_string_lossy()
                            .into_owned()
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        on_disk.sort();
        let mut embedded: Vec<String> = WASI_HTTP_WIT.iter().map(|(p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(embedded, on_disk, "update WASI_HTTP_WIT in build/wasm.rs");
    }

    #[test]
    fn cargo_messages() {
        let dir = Path::new("/src/hello");
        let msgs = [
            r#"{"reason":"compiler-artifact","manifest_path":"/home/u/.cargo/registry/src/x/wasi-0.14.7/Cargo.toml","target":{"kind":["lib"]},"filenames":["/src/hello/target/wasm32-wasip2/release/deps/libwasi.rlib"]}"#,
            r#"{"reason":"compiler-message","message":{}}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/src/hello/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-wasip2/release/hello_wasm.wasm"]}"#,
            r#"{"reason":"compiler-artifact","manifest_path":"/src/hello/Cargo.toml","target":{"kind":["cdylib"]},"filenames":["/t/wasm32-wasip2/release/hello_wasm.wasm"]}"#,
            "not json",
            r#"{"reason":"build-finished","success":true}"#,
        ]
        .join("\n");
        let found = components_built(&msgs, dir);
        assert_eq!(
            found,
            [PathBuf::from("/t/wasm32-wasip2/release/hello_wasm.wasm")]
        );
        assert_eq!(
            pick_component(found, "hello", "app.wasm").unwrap(),
            Path::new("/t/wasm32-wasip2/release/hello_wasm.wasm")
        );

        let two = vec![PathBuf::from("/t/a.wasm"), PathBuf::from("/t/my_fn.wasm")];
        assert_eq!(
            pick_component(two.clone(), "x", "my-fn.wasm").unwrap(),
            Path::new("/t/my_fn.wasm")
        );
        let e = pick_component(two, "x", "app.wasm").unwrap_err();
        assert!(e.to_string().contains("a.wasm, my_fn.wasm"), "{e}");
        let e = pick_component(Vec::new(), "x", "app.wasm").unwrap_err();
        assert!(crate::errors::hint(&e).unwrap().contains("cdylib"));
    }

    #[test]
    fn a_missing_target_is_recognised() {
        let rustc = "error[E0463]: can't find crate for `core`\n  |\n  = note: the `wasm32-wasip2` target may not be installed\n  = help: consider downloading the target with `rustup target add wasm32-wasip2`";
        assert!(missing_target(rustc));
        assert!(!missing_target(
            "error[E0425]: cannot find value `x` in this scope"
        ));
    }

    fn missing_tools() -> Tools {
        Tools {
            cargo: "/nonexistent/cargo".into(),
            rustc: "/nonexistent/rustc".into(),
            componentize_py: "/nonexistent/componentize-py".into(),
            npx: "/nonexistent/npx".into(),
        }
    }

    #[tokio::test]
    async fn missing_tools_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let http = config("wasi-http", "app.wasm");
        let cases = [
            (Plan::Cargo, CARGO_HINT),
            (
                Plan::ComponentizePy {
                    module: "app".into(),
                },
                COMPONENTIZE_PY_HINT,
            ),
            (
                Plan::ComponentizeJs {
                    entry: "index.js".into(),
                },
                JCO_HINT,
            ),
        ];
        for (plan, hint) in cases {
            let e = build_with(&missing_tools(), d, &http, plan)
                .await
                .err()
                .unwrap();
            assert!(e.to_string().contains("was not found"), "{e}");
            assert_eq!(crate::errors::hint(&e).as_deref(), Some(hint));
        }
        let e = build_with(&missing_tools(), d, &http, Plan::Nothing)
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains("there is no app.wasm"), "{e}");
        assert!(crate::errors::hint(&e).unwrap().contains("Cargo.toml"));
    }

    /// A rustc whose sysroot lacks the target: the error says `rustup target add`.
    #[tokio::test]
    async fn a_missing_target_is_explained_before_building() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let sysroot = dir.path().join("sysroot");
        std::fs::create_dir_all(sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/lib")).unwrap();
        let rustc = dir.path().join("rustc");
        std::fs::write(&rustc, format!("#!/bin/sh\necho {}\n", sysroot.display())).unwrap();
        std::fs::set_permissions(&rustc, std::fs::Permissions::from_mode(0o755)).unwrap();
        let tools = Tools {
            rustc: rustc.into(),
            ..missing_tools()
        };
        let e = build_with(
            &tools,
            dir.path(),
            &config("wasm-event", "app.wasm"),
            Plan::Cargo,
        )
        .await
        .err()
        .unwrap();
        assert!(
            e.to_string().contains("wasm32-wasip2 is not installed"),
            "{e}"
        );
        assert_eq!(crate::errors::hint(&e).as_deref(), Some(TARGET_HINT));
    }
}
