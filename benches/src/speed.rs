//! `--speed`: issue 19's figures in one run. Beside a **bare hyper server** (the floor: the
//! least any HTTP server in front of a function can cost, a Rust process of this bench
//! answering a fixed body) and **workerd** (Cloudflare's runtime, from npm, serving a JS
//! hello) and the **runtimes alone** — the hello component on wasmtime with a fresh
//! instance per request and nothing else (`crates/nimbus-wasm/examples/wasm_floor.rs`),
//! the Node and Python hellos in their language's bare HTTP server (`benches/floor/`, one
//! process and one per core): the most each runtime serves here with no platform in
//! front — one `nimbus serve` answers through function URLs: the `wasi-http` hello
//! component (`examples/hello-wasm`, built here for wasm32-wasip2), the Node and Python
//! hello process functions, the Node hello with `instance_concurrency` 16 (one process
//! serving that many events at once), and the Node hello with a response cache (every
//! measured request a hit); a second `nimbus serve --instance-gate on` answers the same Node and
//! Python hellos through the instance gate (its effect, in the same run). Per run, each
//! target in turn (the order rotating): warm latency on one connection, then throughput
//! of `--clients` closed-loop clients. Once: the wasm cold start (the first request after
//! a deploy, the compiled component cached or not), the time a request spends in the
//! wasm executor (its `REPORT` line: a fresh store and instance, the handler, the answer
//! read), the memory an idle wasm function costs, and the Node cold start with a stem
//! cell. See docs/performance.md, "WebAssembly, process functions and caching (issue 19)".

use crate::client::{self, Load};
use crate::lang::{self, Lang};
use crate::stats::{self, Figs, Latency};
use crate::targets::{free_addr, hello_config, Floor, Nimbus};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// The workerd release the bench installs from npm (into `target/bench-npm`).
pub const WORKERD_VERSION: &str = "1.20261123.1";

/// How long workerd and the hyper floor may take to answer their first request.
const START_WAIT: Duration = Duration::from_secs(30);

/// What every target answers, so the client's hello check passes for all of them.
const FLOOR_BODY: &[u8] = b"{\"message\":\"Hello, world from hyper!\"}";

pub struct Settings {
    pub runs: u32,
    pub warm_requests: usize,
    pub load: Load,
    /// The process functions' concurrency limit (the wasm function's too).
    pub concurrency: u32,
    pub cold_samples: u32,
    /// Wasm cold starts whose component is compiled first (a content never seen).
    pub compile_samples: u32,
    /// Idle wasm functions deployed for the memory figure.
    pub idle_functions: u32,
}

/// The servers measured side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Floor,
    Workerd,
    /// The hello component on wasmtime alone, a fresh instance per request
    /// (`crates/nimbus-wasm/examples/wasm_floor.rs`).
    WasmFloor,
    /// The Node and Python hellos in their language's bare HTTP server
    /// (`benches/floor/`): one process, and one per core.
    NodeFloor,
    NodeFloorCores,
    PythonFloor,
    PythonFloorCores,
    /// nginx in front of the Node floor (one process per core each): the least one
    /// process hop costs — what any platform that keeps functions in processes of their
    /// own pays at least. Measured when `nginx` is installed.
    NodeHop,
    Wasm,
    Node,
    Python,
    CacheHit,
    /// The Node and Python hellos on the server with the instance gate.
    NodeGated,
    PythonGated,
    /// The Node hello with `instance_concurrency` [`SHARED_SLOTS`]: one process serves that
    /// many events at once.
    NodeShared,
}

/// The Node hello's `instance_concurrency` in the [`Kind::NodeShared`] row.
const SHARED_SLOTS: u32 = 16;

impl Kind {
    const ALL: [Kind; 15] = [
        Kind::Floor,
        Kind::Workerd,
        Kind::WasmFloor,
        Kind::NodeFloor,
        Kind::NodeFloorCores,
        Kind::PythonFloor,
        Kind::PythonFloorCores,
        Kind::NodeHop,
        Kind::Wasm,
        Kind::Node,
        Kind::Python,
        Kind::CacheHit,
        Kind::NodeGated,
        Kind::PythonGated,
        Kind::NodeShared,
    ];

    fn key(self) -> &'static str {
        match self {
            Kind::Floor => "floor",
            Kind::Workerd => "workerd",
            Kind::WasmFloor => "wasm_floor",
            Kind::NodeFloor => "node_floor",
            Kind::NodeFloorCores => "node_floor_cores",
            Kind::PythonFloor => "python_floor",
            Kind::PythonFloorCores => "python_floor_cores",
            Kind::NodeHop => "node_hop",
            Kind::Wasm => "wasm",
            Kind::Node => "node",
            Kind::Python => "python",
            Kind::CacheHit => "cache_hit",
            Kind::NodeGated => "node_gated",
            Kind::PythonGated => "python_gated",
            Kind::NodeShared => "node_shared",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Floor => "bare hyper server (floor)",
            Kind::Workerd => "workerd (JS hello)",
            Kind::WasmFloor => "wasmtime alone, a fresh instance per request (wasm floor)",
            Kind::NodeFloor => "Node.js http server, same handler (1 process)",
            Kind::NodeFloorCores => "Node.js http server, same handler (1 process per core)",
            Kind::PythonFloor => "Python asyncio server, same handler (1 process)",
            Kind::PythonFloorCores => "Python asyncio server, same handler (1 process per core)",
            Kind::NodeHop => {
                "nginx → the Node.js http server (1 process per core each; CPU: nginx's only)"
            }
            Kind::Wasm => "nimbus wasi-http hello (wasm)",
            Kind::Node => "nimbus Node.js hello (process)",
            Kind::Python => "nimbus Python hello (process)",
            Kind::CacheHit => "nimbus cache hit (Node hello URL)",
            Kind::NodeGated => "nimbus Node.js hello, --instance-gate on",
            Kind::PythonGated => "nimbus Python hello, --instance-gate on",
            Kind::NodeShared => "nimbus Node.js hello, instance_concurrency 16",
        }
    }
}

/// Where a target answers, and whose CPU its throughput is charged to.
struct Target {
    kind: Kind,
    addr: SocketAddr,
    path: String,
    pid: u32,
}

/// The `--hyper-floor ADDR` mode: a bare hyper HTTP/1.1 server (a tokio worker thread per
/// core) answering every request with a fixed hello.
pub fn serve_hyper_floor(addr: SocketAddr) -> Result<()> {
    use http_body_util::Full;
    use hyper::service::service_fn;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                tokio::spawn(async move {
                    let svc = service_fn(|_req| async {
                        let mut r =
                            hyper::Response::new(Full::new(bytes::Bytes::from_static(FLOOR_BODY)));
                        r.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(r)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the floor server panicked"))?
}

/// The repository (this crate lives in `benches/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// workerd's native binary, installed from npm into `target/bench-npm` on first use.
fn workerd_bin() -> Result<PathBuf> {
    let prefix = repo().join("target/bench-npm");
    let bin = prefix.join("node_modules/@cloudflare/workerd-linux-64/bin/workerd");
    let installed = std::fs::read_to_string(prefix.join("node_modules/workerd/package.json"))
        .is_ok_and(|p| p.contains(&format!("\"version\": \"{WORKERD_VERSION}\"")));
    if bin.is_file() && installed {
        return Ok(bin);
    }
    eprintln!(
        "installing workerd {WORKERD_VERSION} from npm into {}",
        prefix.display()
    );
    std::fs::create_dir_all(&prefix)?;
    let out = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--prefix"])
        .arg(&prefix)
        .arg(format!("workerd@{WORKERD_VERSION}"))
        .output()
        .context("cannot run npm (Node.js's package manager) to install workerd")?;
    if !out.status.success() || !bin.is_file() {
        bail!(
            "npm install workerd@{WORKERD_VERSION} failed (this machine is x86_64 Linux?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(bin)
}

/// The workerd hello: what the Node hello answers (a JSON message with the request's path,
/// method and an id), without a log line (workerd keeps no function logs).
const WORKER_JS: &str = r#"export default {
  async fetch(request) {
    const url = new URL(request.url);
    const name = url.searchParams.get('name') ?? 'world';
    return new Response(JSON.stringify({
      message: `Hello, ${name} from workerd!`,
      path: url.pathname,
      method: request.method,
      requestId: crypto.randomUUID(),
    }), { headers: { 'content-type': 'application/json' } });
  },
};
"#;

async fn start_workerd(dir: &Path) -> Result<Floor> {
    let bin = workerd_bin()?;
    let dir = dir.join("workerd");
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    std::fs::write(dir.join("worker.js"), WORKER_JS)?;
    std::fs::write(
        dir.join("config.capnp"),
        format!(
            r#"using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [ (name = "main", worker = .hello) ],
  sockets = [ (name = "http", address = "{addr}", http = (), service = "main") ],
);
const hello :Workerd.Worker = (
  modules = [ (name = "worker", esModule = embed "worker.js") ],
  compatibilityDate = "2024-09-23",
);
"#
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve").arg(dir.join("config.capnp"));
    Floor::spawn(cmd, addr, "workerd", &dir.join("workerd.log"), START_WAIT).await
}

async fn start_floor(dir: &Path) -> Result<Floor> {
    let addr = free_addr()?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("--hyper-floor").arg(addr.to_string());
    Floor::spawn(
        cmd,
        addr,
        "the hyper floor",
        &dir.join("hyper-floor.log"),
        START_WAIT,
    )
    .await
}

/// Every target that is not Nimbus: the hyper floor, workerd, the wasm floor serving
/// `component`, and the Node and Python floors (one process, and one per core).
async fn start_floors(dir: &Path, component: &[u8]) -> Result<Vec<(Kind, Floor)>> {
    let mut floors = vec![
        (Kind::Floor, start_floor(dir).await?),
        (Kind::Workerd, start_workerd(dir).await?),
    ];
    let wasm = dir.join("wasm-floor");
    std::fs::create_dir_all(&wasm)?;
    std::fs::write(wasm.join("app.wasm"), component)?;
    let addr = free_addr()?;
    let mut cmd = Command::new(wasm_floor_bin()?);
    // The environment the Nimbus function has (`wasm_config`): the same greeting.
    cmd.arg(addr.to_string())
        .arg(wasm.join("app.wasm"))
        .arg("GREETING=Hello, world from wasm");
    floors.push((
        Kind::WasmFloor,
        Floor::spawn(cmd, addr, "the wasm floor", &wasm.join("log"), START_WAIT).await?,
    ));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (lang, one, all) in [
        (Lang::Node, Kind::NodeFloor, Kind::NodeFloorCores),
        (Lang::Python, Kind::PythonFloor, Kind::PythonFloorCores),
    ] {
        let interpreter = lang.interpreter()?;
        for (kind, workers) in [(one, 1), (all, cores)] {
            let d = dir.join(kind.key());
            std::fs::create_dir_all(&d)?;
            lang.write_files(&d)?;
            floors.push((
                kind,
                Floor::start_workers(lang, &interpreter, &d, workers).await?,
            ));
        }
    }
    let upstream = floors
        .iter()
        .find(|(k, _)| *k == Kind::NodeFloorCores)
        .map(|(_, f)| f.addr)
        .expect("the Node floor started above");
    match lang::which(Path::new("nginx")).or_else(|| lang::which(Path::new("/usr/sbin/nginx"))) {
        Some(nginx) => floors.push((
            Kind::NodeHop,
            start_nginx(&nginx, &dir.join(Kind::NodeHop.key()), upstream, cores).await?,
        )),
        None => eprintln!(
            "nginx not found: the process-hop floor (nginx → Node) is not measured \
             (apt-get install nginx-light)"
        ),
    }
    Ok(floors)
}

/// nginx with a worker per core proxying to `upstream` over kept-alive connections
/// (`benches/floor/nginx-hop.conf`, its placeholders filled in).
async fn start_nginx(
    nginx: &Path,
    dir: &Path,
    upstream: SocketAddr,
    cores: usize,
) -> Result<Floor> {
    std::fs::create_dir_all(dir)?;
    let addr = free_addr()?;
    let conf = include_str!("../floor/nginx-hop.conf")
        .replace("@WORKERS@", &cores.to_string())
        .replace("@DIR@", &dir.display().to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@LISTEN@", &addr.to_string());
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-c").arg(&path).args(["-g", "daemon off;"]);
    Floor::spawn(cmd, addr, "nginx", &dir.join("nginx.log"), START_WAIT).await
}

/// Builds the wasm floor (`cargo build --release -p nimbus-wasm --example wasm_floor`).
fn wasm_floor_bin() -> Result<PathBuf> {
    cargo_build(
        &repo(),
        None,
        &["-p", "nimbus-wasm", "--example", "wasm_floor"],
        "the wasm floor",
    )?;
    Ok(repo().join("target/release/examples/wasm_floor"))
}

/// Builds `examples/hello-wasm` for wasm32-wasip2 (release) into `target/bench-wasm`.
fn hello_component() -> Result<Vec<u8>> {
    let target = repo().join("target/bench-wasm");
    cargo_build(
        &repo().join("examples/hello-wasm"),
        Some(&target),
        &["--target", "wasm32-wasip2"],
        "examples/hello-wasm",
    )
    .context("is the target there? rustup target add wasm32-wasip2")?;
    Ok(std::fs::read(
        target.join("wasm32-wasip2/release/hello_wasm.wasm"),
    )?)
}

/// `cargo build --release ARGS` in `dir` (into `target_dir` when given), saying so.
fn cargo_build(dir: &Path, target_dir: Option<&Path>, args: &[&str], what: &str) -> Result<()> {
    eprintln!("building {what}: cargo build --release {}", args.join(" "));
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(dir).args(["build", "--release"]).args(args);
    if let Some(t) = target_dir {
        cmd.env("CARGO_TARGET_DIR", t);
    }
    let out = cmd.output().context("cannot run cargo")?;
    if !out.status.success() {
        bail!(
            "building {what} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `component` with a custom section appended: the same code under another content hash,
/// so the server compiles it afresh (its compiled-code cache is keyed by content).
fn distinct(component: &[u8], tag: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"nimbus-bench";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

fn wasm_zip(component: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write as _;
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut z = zip::ZipWriter::new(&mut buf);
    z.start_file("app.wasm", zip::write::SimpleFileOptions::default())?;
    z.write_all(component)?;
    z.finish()?;
    Ok(buf.into_inner())
}

fn wasm_config(concurrency: u32) -> Value {
    json!({
        "runtime": "wasi-http", "handler": "app.wasm", "memory_mb": 128, "timeout_s": 3,
        "env": { "GREETING": "Hello, world from wasm" }, "concurrency": concurrency, "url": true,
    })
}

/// Everything one `--speed` run needs, set up once.
struct Setup {
    /// The targets that are not Nimbus, by kind ([`start_floors`]).
    floors: Vec<(Kind, Floor)>,
    nimbus: Nimbus,
    /// The same process hellos, `--instance-gate on`.
    gated: Nimbus,
    component: Vec<u8>,
}

impl Setup {
    fn targets(&self) -> Vec<Target> {
        Kind::ALL
            .into_iter()
            // A target that is not Nimbus is measured when it started (nginx may be missing).
            .filter_map(|kind| {
                let (addr, pid, path) = match self.floors.iter().find(|(k, _)| *k == kind) {
                    Some((_, f)) => (f.addr, f.pid(), "/".to_string()),
                    None => {
                        let n = match kind {
                            Kind::NodeGated | Kind::PythonGated => &self.gated,
                            _ => &self.nimbus,
                        };
                        (n.addr, n.pid(), format!("/fn/{}/", function(kind)?))
                    }
                };
                Some(Target {
                    kind,
                    addr,
                    path,
                    pid,
                })
            })
            .collect()
    }
}

/// The Nimbus function a target calls; `None` for the targets that are not Nimbus.
fn function(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::Wasm => Some("speed-wasm"),
        Kind::Node | Kind::NodeGated => Some("speed-node"),
        Kind::Python | Kind::PythonGated => Some("speed-python"),
        Kind::CacheHit => Some("speed-cached"),
        Kind::NodeShared => Some("speed-node-shared"),
        _ => None,
    }
}

fn function_of(kind: Kind) -> &'static str {
    function(kind).expect("not a function")
}

/// The figures of a `--speed` benchmark: the median of the runs, and the once-measured ones.
pub struct SpeedFigs {
    pub median: Figs,
    pub runs: Vec<Figs>,
    pub versions: Value,
}

pub async fn bench(bin: &Path, dir: &Path, s: &Settings) -> Result<SpeedFigs> {
    let component = hello_component()?;
    let floors = start_floors(dir, &component).await?;
    let nimbus = Nimbus::start(bin, &dir.join("server"), &[]).await?;
    let gated = Nimbus::start(bin, &dir.join("gated"), &["--instance-gate", "on"]).await?;
    let x = Setup {
        floors,
        nimbus,
        gated,
        component,
    };
    let out = bench_on(&x, s).await;
    if out.is_err() {
        for n in [&x.nimbus, &x.gated] {
            eprintln!("nimbus server log (tail):\n{}", crate::tail(&n.log(), 40));
        }
    }
    x.nimbus.stop().await?;
    x.gated.stop().await?;
    out
}

async fn bench_on(x: &Setup, s: &Settings) -> Result<SpeedFigs> {
    let n = &x.nimbus;
    n.deploy_config(
        function_of(Kind::Wasm),
        wasm_config(s.concurrency),
        &wasm_zip(&x.component)?,
    )
    .await?;
    // The engine and its pooling allocator start with the first component: before the
    // idle-memory measurement, so it counts functions, not the engine.
    client::one_shot(n.addr, &format!("/fn/{}/", function_of(Kind::Wasm))).await?;
    let mut once = Figs::default();
    idle_memory(x, s.idle_functions, &mut once).await?;
    for lang in [Lang::Node, Lang::Python] {
        let kind = if lang == Lang::Node {
            Kind::Node
        } else {
            Kind::Python
        };
        for server in [n, &x.gated] {
            server
                .deploy(function_of(kind), lang, &lang.code_zip()?, s.concurrency)
                .await?;
        }
    }
    let mut shared = hello_config(Lang::Node, s.concurrency);
    shared["instance_concurrency"] = json!(SHARED_SLOTS);
    n.deploy_config(
        function_of(Kind::NodeShared),
        shared,
        &Lang::Node.code_zip()?,
    )
    .await?;
    let mut cached = hello_config(Lang::Node, s.concurrency);
    cached["url_cache"] = json!({ "ttl": "1h", "key": [] });
    n.deploy_config(function_of(Kind::CacheHit), cached, &Lang::Node.code_zip()?)
        .await?;
    check_cache_hit(n.addr).await?;

    let targets = x.targets();
    let mut runs = Vec::new();
    for run in 0..s.runs {
        let mut figs = Figs::default();
        // First in each run, the machine quiet: the previous run's load leaves the log
        // store committing its lines for a while.
        tokio::time::sleep(Duration::from_secs(3)).await;
        eprintln!(
            "run {}/{}: Node cold starts with a stem cell",
            run + 1,
            s.runs
        );
        crate::cold_samples(
            n,
            Lang::Node,
            &Lang::Node.code_zip()?,
            "stem",
            s.cold_samples,
            true,
            &mut figs,
        )
        .await?;
        for i in 0..targets.len() {
            let t = &targets[(i + run as usize) % targets.len()];
            eprintln!("run {}/{}: {}", run + 1, s.runs, t.kind.label());
            let warm = client::sequential(t.addr, &t.path, 200, s.warm_requests).await?;
            figs.put_lat(&format!("{}.warm", t.kind.key()), Latency::of(&warm));
            let th = client::throughput(t.addr, &t.path, s.load, t.pid).await?;
            figs.put(&format!("{}.rps", t.kind.key()), th.rps);
            stats::put_cpu(&mut figs, t.kind.key(), &th, s.load.duration);
        }
        runs.push(figs);
    }
    wasm_cold(x, s, &mut once).await?;
    executor_time(n, &mut once).await?;
    let mut median = Figs::median_of(&runs);
    median.extend(&once);
    Ok(SpeedFigs {
        median,
        runs,
        versions: versions()?,
    })
}

/// The cached URL answers a hit the second time (else the cache-hit row measures misses).
async fn check_cache_hit(addr: SocketAddr) -> Result<()> {
    let path = format!("/fn/{}/", function_of(Kind::CacheHit));
    let http = reqwest::Client::new();
    let mut last = String::new();
    for _ in 0..2 {
        let r = http.get(format!("http://{addr}{path}")).send().await?;
        last = r
            .headers()
            .get("x-nimbus-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("(none)")
            .to_string();
    }
    if last != "hit" {
        bail!("the cached URL answered x-nimbus-cache: {last} the second time, not hit");
    }
    Ok(())
}

/// Memory per idle wasm function: two batches of `k` functions, each its own component
/// content (so each is compiled and loaded on its own), each invoked once (its component
/// loaded, an idle instance in its pool); per batch, the growth of the server's RSS and
/// PSS over `k`. The first batch also grows the allocator's arenas by what compiling
/// takes (freed, kept by the allocator, reused by the next compiles): the second is the
/// steady cost of one more function.
async fn idle_memory(x: &Setup, k: u32, figs: &mut Figs) -> Result<()> {
    let n = &x.nimbus;
    for batch in ["first", "next"] {
        let before = n.own_mem();
        eprintln!("idle memory: {k} wasm functions ({batch} batch)");
        for i in 0..k {
            let name = format!("idle-wasm-{batch}-{i}");
            let zip = wasm_zip(&distinct(&x.component, &name))?;
            n.deploy_config(&name, wasm_config(1), &zip).await?;
            client::one_shot(n.addr, &format!("/fn/{name}/")).await?;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = n.own_mem();
        let per = |a: u64, b: u64| a.saturating_sub(b) as f64 / f64::from(k) / 1024.0;
        figs.put(
            &format!("idle_wasm.{batch}.rss_mb"),
            per(after.rss_kb, before.rss_kb),
        );
        figs.put(
            &format!("idle_wasm.{batch}.pss_mb"),
            per(after.pss_kb, before.pss_kb),
        );
    }
    figs.put("idle_wasm.functions", f64::from(k));
    Ok(())
}

/// The first request after a deploy, on a new connection: `cold_samples` of a component
/// the server has compiled before (its compiled code cached on disk), `compile_samples`
/// of one it has never seen.
async fn wasm_cold(x: &Setup, s: &Settings, figs: &mut Figs) -> Result<()> {
    let n = &x.nimbus;
    for (tag, samples, fresh) in [
        ("cached", s.cold_samples, false),
        ("compile", s.compile_samples, true),
    ] {
        let mut lat = Vec::new();
        for i in 0..samples {
            eprintln!("wasm cold start ({tag}) {}/{samples}", i + 1);
            let name = format!("cold-wasm-{tag}-{i}");
            let component = if fresh {
                distinct(&x.component, &name)
            } else {
                x.component.clone()
            };
            n.deploy_config(&name, wasm_config(1), &wasm_zip(&component)?)
                .await?;
            tokio::time::sleep(crate::scenarios::SETTLE).await;
            lat.push(client::one_shot(n.addr, &format!("/fn/{name}/")).await?);
            n.delete(&name).await?;
        }
        figs.put_lat(&format!("wasm_cold.{tag}"), Latency::of(&lat));
    }
    Ok(())
}

/// The `Duration` of the wasm function's `REPORT` lines (a fresh store and instance, the
/// handler, the answer read; 10 µs resolution): the per-request cost inside the executor.
async fn executor_time(n: &Nimbus, figs: &mut Figs) -> Result<()> {
    let name = function_of(Kind::Wasm);
    let mut durations = Vec::new();
    let mut after = 0u64;
    loop {
        let page = n
            .get_json(&format!(
                "/v1/functions/{name}/logs?grep=REPORT&limit=10000&after={after}"
            ))
            .await?;
        let logs = page["logs"].as_array().cloned().unwrap_or_default();
        for l in &logs {
            let line = l["line"].as_str().unwrap_or_default();
            if let Some(ms) = line
                .split('\t')
                .find_map(|f| f.strip_prefix("Duration: "))
                .and_then(|f| f.strip_suffix(" ms"))
                .and_then(|f| f.parse::<f64>().ok())
            {
                durations.push(Duration::from_secs_f64(ms / 1e3));
            }
        }
        let next = page["next"].as_u64().unwrap_or(after);
        if logs.is_empty() || next == after {
            break;
        }
        after = next;
    }
    if durations.len() < 100 {
        bail!(
            "only {} REPORT lines of {name} in its log: cannot read the executor's time",
            durations.len()
        );
    }
    figs.put_lat("wasm_executor", Latency::of(&durations));
    figs.put("wasm_executor.samples", durations.len() as f64);
    Ok(())
}

fn versions() -> Result<Value> {
    let node = Lang::Node.interpreter()?;
    let python = Lang::Python.interpreter()?;
    Ok(json!({
        "workerd": WORKERD_VERSION,
        "node": Lang::Node.version(&node)?,
        "python": Lang::Python.version(&python)?,
        "rustc": lang::capture(Path::new("rustc"), &["--version"]).unwrap_or_default().trim(),
    }))
}

/// The report: one row per target, then the once-measured figures and issue 19's targets.
pub fn text(f: &SpeedFigs, s: &Settings) -> String {
    let m = &f.median;
    let g = |k: &str| m.get(k).unwrap_or(f64::NAN);
    let floor_rps = g("floor.rps");
    let floor_p50 = g("floor.warm.p50");
    let workerd_rps = g("workerd.rps");
    let mut out = format!(
        "versions: {}\n\n| target | warm p50 | warm p99 | p50 − floor | req/s at {} clients | vs floor | vs workerd | CPU µs/req (server + instances) |\n|---|---|---|---|---|---|---|---|\n",
        f.versions, s.load.clients
    );
    for k in Kind::ALL {
        let key = k.key();
        let rps = g(&format!("{key}.rps"));
        if rps.is_nan() {
            // Not measured (nginx missing).
            continue;
        }
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.2}× | {:.2}× | {:.0} + {:.0} |\n",
            k.label(),
            stats::ms(g(&format!("{key}.warm.p50"))),
            stats::ms(g(&format!("{key}.warm.p99"))),
            stats::ms(g(&format!("{key}.warm.p50")) - floor_p50),
            rps,
            rps / floor_rps,
            rps / workerd_rps,
            g(&format!("{key}.server_us")),
            g(&format!("{key}.instances_us")),
        ));
    }
    let other: Vec<String> = f
        .runs
        .iter()
        .map(|r| {
            let o: Vec<String> = Kind::ALL
                .iter()
                .map(|k| {
                    format!(
                        "{:.2}",
                        r.get(&format!("{}.other_cores", k.key()))
                            .unwrap_or(f64::NAN)
                    )
                })
                .collect();
            o.join("/")
        })
        .collect();
    out.push_str(&format!(
        "\ncores used by other processes during each throughput (per run, targets in table order): {}\n\n",
        other.join("; ")
    ));
    let lat = |k: &str| {
        format!(
            "p50 {} p99 {}",
            stats::ms(g(&format!("{k}.p50"))),
            stats::ms(g(&format!("{k}.p99")))
        )
    };
    out.push_str(&format!(
        "wasm cold start, first request after deploy (new connection): compiled code cached {} ({} samples); compiled first {} ({} samples)\n",
        lat("wasm_cold.cached"), s.cold_samples, lat("wasm_cold.compile"), s.compile_samples
    ));
    out.push_str(&format!(
        "wasm per request in the executor (REPORT Duration: store, instantiation, handler, answer; the last {} requests, as many as the function's log keeps): {}\n",
        g("wasm_executor.samples"), lat("wasm_executor")
    ));
    out.push_str(&format!(
        "idle wasm function (each its own compiled component), server growth per function: first {n} {:.3} MB RSS / {:.3} MB PSS (compiler arenas included); next {n} {:.3} MB RSS / {:.3} MB PSS\n",
        g("idle_wasm.first.rss_mb"), g("idle_wasm.first.pss_mb"),
        g("idle_wasm.next.rss_mb"), g("idle_wasm.next.pss_mb"),
        n = g("idle_wasm.functions"),
    ));
    out.push_str(&format!(
        "Node cold start with a stem cell: {} ({} samples per run, {} of them served by a stem cell in the median run)\n\n",
        lat("cold.stem"), s.cold_samples, g("cold.stem.stem_hits")
    ));
    let mark = |ok: bool| if ok { "MET" } else { "NOT MET" };
    let wasm_x = g("wasm.rps") / workerd_rps;
    let node_x = g("node.rps") / workerd_rps;
    let py_x = g("python.rps") / workerd_rps;
    let stem = g("cold.stem.p50");
    let idle = g("idle_wasm.next.rss_mb");
    let node_best = g("node_floor.rps").max(g("node_floor_cores.rps"));
    let python_best = g("python_floor.rps").max(g("python_floor_cores.rps"));
    out.push_str(&format!(
        "the runtimes alone (no platform in front) against workerd: wasmtime with a fresh instance per request {:.2}×; Node.js's http server {:.2}× (best of 1 process and 1 per core); Python's asyncio server {:.2}×; nginx → Node's http server (one process hop) {}\nNimbus against them: wasm {:.2}× the wasm floor; Node {:.2}× Node's best; Python {:.2}× Python's best\n\n",
        g("wasm_floor.rps") / workerd_rps,
        node_best / workerd_rps,
        python_best / workerd_rps,
        match g("node_hop.rps") / workerd_rps {
            x if x.is_nan() => "not measured (no nginx)".to_string(),
            x => format!("{x:.2}×"),
        },
        g("wasm.rps") / g("wasm_floor.rps"),
        g("node.rps") / node_best,
        g("python.rps") / python_best,
    ));
    out.push_str(&format!(
        "the instance gate (--instance-gate on): Node {:.2}×, Python {:.2}× the throughput without it\nseveral invocations per Node process (instance_concurrency {SHARED_SLOTS}): {:.2}× the throughput of one each, {:.2}× workerd\n\ntargets (issue 19):\n- wasm hello throughput ≥ 2.5× workerd: {:.2}× {}\n- Node hello throughput ≥ workerd: {:.2}× {}\n- Python hello throughput ≥ workerd: {:.2}× {}\n- Node stem-cell cold start ≤ 10 ms: {} {}\n- idle wasm function < 1 MB (next batch, RSS): {:.3} MB {}\n",
        g("node_gated.rps") / g("node.rps"),
        g("python_gated.rps") / g("python.rps"),
        g("node_shared.rps") / g("node.rps"),
        g("node_shared.rps") / workerd_rps,
        wasm_x, mark(wasm_x >= 2.5),
        node_x, mark(node_x >= 1.0),
        py_x, mark(py_x >= 1.0),
        stats::ms(stem), mark(stem <= 10.0),
        idle, mark(idle < 1.0),
    ));
    out
}

pub fn to_json(f: &SpeedFigs) -> Value {
    json!({
        "versions": f.versions,
        "median": f.median.to_json(),
        "runs": f.runs.iter().map(Figs::to_json).collect::<Vec<_>>(),
    })
}
