//! The process executor: one child process per instance.

use crate::cgroup::{Cgroup, MemoryLimits};
use crate::egress::{self, Egress};
use crate::host_services::{self, HostForwards};
use crate::instance_log::{InvocationEnd, LogCtx};
use crate::java::JavaRuntime;
use crate::logs::{now_ms, LogSink, LogStreamKind};
use crate::netns::{self, NetNs};
use crate::platform::{self, PlatformAccess, PlatformLease};
use crate::platform_log::PlatformEvent;
use crate::rapi::{self, Pending, RapiState};
use crate::sandbox::{self, Isolation, IsolationReport, Mounts, Sandbox, UidLease};
use crate::stem::{Stem, StemConfig, StemKey, StemPool, StemStats};
use crate::{Executor, Instance, InstanceSpec, Invocation, InvokeResult, Outcome, RuntimeError};
use bytes::Bytes;
use nimbus_core::{arn, FunctionConfig, FunctionName, NetworkPolicy, Runtime, RuntimeFamily};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// Nimbus's own bootstraps, embedded so the binary is self-contained.
const NODE_BOOTSTRAP: &str = include_str!("../../../runtimes/node/bootstrap.js");
/// The modules a Node stem cell loads (and invokes) before it is specialised, next to the
/// bootstrap: the path to a function's first invocation is then compiled ahead.
const NODE_WARM_MODULES: [(&str, &str); 2] = [
    (
        "node/warm.js",
        include_str!("../../../runtimes/node/warm.js"),
    ),
    (
        "node/warm-esm.mjs",
        include_str!("../../../runtimes/node/warm-esm.mjs"),
    ),
];
const PYTHON_BOOTSTRAP: &str = include_str!("../../../runtimes/python/bootstrap.py");

/// How long a runtime may take to initialise before its first `next` (Lambda: 10 s).
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// An instance is not reused when its role credentials would expire within the function's
/// timeout plus this.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(60);
/// Bytes of log kept for `X-Amz-Log-Result` (Lambda returns the last 4 KB).
/// Longest log line kept; longer lines are split.
const MAX_LINE: usize = 256 * 1024;

/// Configuration of the process executor.
#[derive(Debug, Clone)]
pub struct ProcessExecutorConfig {
    /// Directory the embedded bootstraps are written to (`DATA_DIR/runtimes`).
    pub runtimes_dir: PathBuf,
    /// The host `node` (resolved from `PATH` when relative).
    pub node: PathBuf,
    /// The host `python3`.
    pub python: PathBuf,
    /// The host `java` (a JDK: `javac` next to it or on `PATH` compiles the bootstrap).
    pub java: PathBuf,
    pub memory: MemoryLimits,
    /// `--isolation`: how instances are sandboxed.
    pub isolation: Isolation,
    /// `--stem-cells`: prewarmed sandboxed runtimes for cold starts.
    pub stem_cells: StemConfig,
}

/// Where the executor reads the values of a function's secret references
/// ([`nimbus_core::FunctionConfig::secrets`]) when it starts an instance.
pub trait SecretSource: Send + Sync + 'static {
    /// The value of the secret `name`; `Ok(None)` when there is no such secret.
    fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, String>;
}

/// The function's secret variables (`spec.config.secrets`) with their values from `source`,
/// read now: each executor calls it when an instance starts.
pub fn resolve_secrets(
    source: Option<&dyn SecretSource>,
    spec: &InstanceSpec,
) -> Result<Vec<(String, String)>, RuntimeError> {
    let mut out = Vec::new();
    for (var, name) in &spec.config.secrets {
        let missing = || {
            RuntimeError::Secret(format!(
                "secret {name:?} (environment variable {var}) does not exist: set it with `nimbus secret set {name}`"
            ))
        };
        let source = source.ok_or_else(missing)?;
        let value = source
            .secret(name)
            .map_err(|e| {
                RuntimeError::Secret(format!(
                    "secret {name:?} (environment variable {var}) cannot be read: {e}"
                ))
            })?
            .ok_or_else(missing)?;
        let value = String::from_utf8(value)
            .ok()
            .filter(|v| !v.contains('\0'))
            .ok_or_else(|| {
                RuntimeError::Secret(format!(
                    "secret {name:?} (environment variable {var}) is not UTF-8 text without NUL bytes"
                ))
            })?;
        out.push((var.clone(), value));
    }
    Ok(out)
}

/// Replaces every occurrence of each value in `secrets` (longest first) with `****`.
pub fn mask_secrets(line: &str, secrets: &[String]) -> String {
    let mut out = line.to_string();
    for s in secrets {
        if !s.is_empty() && out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "****");
        }
    }
    out
}

/// Starts each instance as a child process with its own Runtime API listener.
pub struct ProcessExecutor {
    cfg: ProcessExecutorConfig,
    secrets: Option<Arc<dyn SecretSource>>,
    /// Role credentials and private AWS endpoints for instances (`platform.rs`).
    platform: Option<Arc<dyn PlatformAccess>>,
    logs: LogSink,
    /// `PATH` handed to functions.
    path_env: String,
    java: JavaRuntime,
    /// Whether instances get network namespaces of their own (see [`netns::probe`]).
    netns: bool,
    /// Builds sandboxed command lines; `None` with `--isolation none` or when the host
    /// allows no sandbox.
    sandbox: Option<Sandbox>,
    isolation: IsolationReport,
    stems: Arc<StemPool>,
    /// The stem cell refill loop ([`Self::spawn_stem_cells`]), awaited at shutdown.
    stem_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    launches: Launches,
    /// Processes of functions with `instance_concurrency` above 1 that take more slots.
    shares: Arc<Shares>,
    /// The host's cores: a version's first processes of several slots each start anew, one
    /// per core, before slots share them.
    cores: usize,
}

/// Instance starts in progress, and whether one may begin: closed at shutdown, before
/// the server's cgroups are removed, so no instance starts without its cgroup.
struct Launches {
    closed: Mutex<bool>,
    running: watch::Sender<usize>,
}

impl Launches {
    fn new() -> Self {
        Self {
            closed: Mutex::new(false),
            running: watch::Sender::new(0),
        }
    }

    /// Counts a start until the guard is dropped; refused once closed.
    fn enter(&self) -> Result<LaunchGuard<'_>, RuntimeError> {
        let closed = self.closed.lock().unwrap();
        if *closed {
            return Err(RuntimeError::ShuttingDown);
        }
        self.running.send_modify(|n| *n += 1);
        Ok(LaunchGuard(self))
    }

    fn is_closed(&self) -> bool {
        *self.closed.lock().unwrap()
    }

    /// Refuses every later start and waits for those in progress.
    async fn close(&self) {
        *self.closed.lock().unwrap() = true;
        let mut rx = self.running.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

struct LaunchGuard<'a>(&'a Launches);

impl Drop for LaunchGuard<'_> {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n -= 1);
    }
}

/// Environment variables an interpreter reads when it starts: a function that sets one
/// cannot become a stem cell (started before its environment was known), so its cold
/// starts spawn a fresh interpreter.
const STARTUP_VARS: [&str; 11] = [
    "NODE_",
    "PYTHON",
    "LD_",
    "UV_",
    "MALLOC_",
    "GLIBC_",
    "OPENSSL_",
    "SSL_CERT_",
    "TZ",
    "LANG",
    "LC_",
];

/// How long a stem cell that failed to start keeps its key from trying again.
const STEM_BACKOFF: Duration = Duration::from_secs(30);
/// At most this long after a stem cell was taken, its replacement starts (sooner when the
/// specialised instance has answered its first invocation).
const STEM_REFILL_AFTER: Duration = Duration::from_millis(250);
/// The memory limit of an idle stem cell (set to the function's when it is specialised).
const STEM_MEMORY_MB: u32 = 512;

impl ProcessExecutor {
    /// Writes the bootstraps to `runtimes_dir`, resolves the interpreters and probes the
    /// sandbox (`--isolation strict` fails here when a layer is missing).
    /// Where instances' output goes (its counters are reported by `/v1/health`).
    pub fn log_sink(&self) -> &LogSink {
        &self.logs
    }

    pub fn new(mut cfg: ProcessExecutorConfig, logs: LogSink) -> Result<Self, RuntimeError> {
        write_if_changed(&cfg.runtimes_dir.join("node/bootstrap.js"), NODE_BOOTSTRAP)?;
        for (path, contents) in NODE_WARM_MODULES {
            write_if_changed(&cfg.runtimes_dir.join(path), contents)?;
        }
        write_if_changed(
            &cfg.runtimes_dir.join("python/bootstrap.py"),
            PYTHON_BOOTSTRAP,
        )?;
        let path_env =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        cfg.node = resolve(&cfg.node, &path_env);
        let (python, python_prefixes) = resolve_python(&cfg.python, &path_env);
        cfg.python = python;
        cfg.java = resolve(&cfg.java, &path_env);
        // Interpreters installed outside /usr are bound read-only into every sandbox.
        let mut host_dirs: Vec<PathBuf> = python_prefixes;
        host_dirs.extend(
            [&cfg.node, &cfg.java]
                .into_iter()
                .filter_map(|p| std::fs::canonicalize(p).ok())
                .filter_map(|p| p.parent()?.parent().map(Path::to_path_buf)),
        );
        host_dirs.retain(|d| d.is_absolute() && !d.starts_with("/usr") && d != Path::new("/"));
        // Never a directory that holds the data dir (secrets, other functions' code).
        if let Some(data) = cfg.runtimes_dir.parent() {
            host_dirs.retain(|d| {
                let holds = data.starts_with(d);
                if holds {
                    warn!(dir = %d.display(), "not binding an interpreter directory into sandboxes: it contains the data dir; move the data dir elsewhere");
                }
                !holds
            });
        }
        host_dirs.sort();
        host_dirs.dedup();
        let scratch = cfg.runtimes_dir.join("sandbox-probe");
        std::fs::create_dir_all(&scratch)?;
        // Outside the runtimes dir: overlayfs refuses layers inside one another.
        let empty = cfg.runtimes_dir.with_file_name("sandbox-empty");
        let (sandbox, isolation) =
            sandbox::probe(cfg.isolation, &cfg.memory, host_dirs, &scratch, &empty)
                .map_err(RuntimeError::Isolation)?;
        if isolation.mode == Isolation::None || isolation.missing().next().is_some() {
            warn!("{}", isolation.summary());
            if isolation.missing().next().is_some() {
                warn!("run `nimbus doctor` for what each missing layer means and the command that adds it");
            }
        } else {
            info!("{}", isolation.summary());
        }
        // Compiled lazily, at the first Java cold start.
        let java = JavaRuntime::new(cfg.java.clone(), cfg.runtimes_dir.join("java"), &path_env);
        info!(node = %cfg.node.display(), python = %cfg.python.display(), java = %java.java().display(), memory_limits = cfg.memory.describe(), "process executor ready");
        if let MemoryLimits::Unavailable { reason } = &cfg.memory {
            warn!("memory limits are NOT enforced on this host ({reason}); run as root on a host with cgroups to enforce them");
        }
        let netns = match netns::probe() {
            // `--isolation none`: instances share the host network, as everything else.
            Ok(()) if isolation.mode == Isolation::None => false,
            Ok(()) => {
                match egress::probe() {
                    Ok(tool) => info!(egress = %tool, "network isolation: a network namespace per instance; outbound egress through {tool}"),
                    Err(e) => warn!("network isolation: a network namespace per instance, but {e}: functions with network = \"outbound\" run WITHOUT one (on the host network: they reach its loopback, Nimbus's API and other such instances' Runtime APIs); {} (or passt) to isolate them, or deploy them with network = \"none\"; `--isolation strict` refuses to start without it", egress::INSTALL),
                }
                true
            }
            Err(e) => {
                warn!("network isolation is NOT enforced on this host: {e}; instances share the host network and reach its loopback (Nimbus's API, other instances' Runtime APIs)");
                false
            }
        };
        let disabled = match &sandbox {
            Some(sb) if !sb.privileged() => Some(
                "stem cells need the root sandbox (bwrap + setpriv): this server sandboxes in a user namespace, so every cold start spawns a runtime".to_string(),
            ),
            _ => None,
        };
        let tmp_mb =
            FunctionConfig::new(stem_runtime(RuntimeFamily::Node), "x").ephemeral_storage_mb;
        let defaults: Vec<StemKey> = [
            (RuntimeFamily::Node, &cfg.node),
            (RuntimeFamily::Python, &cfg.python),
        ]
        .into_iter()
        .filter(|(_, program)| program.is_file())
        .map(|(family, _)| StemKey {
            family,
            network: NetworkPolicy::default(),
            tmp_mb,
        })
        .collect();
        let stems = Arc::new(StemPool::new(cfg.stem_cells.clone(), &defaults, disabled));
        if let Some(reason) = &stems.stats().reason {
            if cfg.stem_cells.enabled() {
                warn!("stem cells are OFF: {reason}");
            }
        } else {
            info!(
                min = cfg.stem_cells.min,
                max = cfg.stem_cells.max,
                "stem cells: prewarmed sandboxed runtimes for node and python cold starts"
            );
        }
        Ok(Self {
            cfg,
            secrets: None,
            platform: None,
            logs,
            path_env,
            java,
            netns,
            sandbox,
            isolation,
            stems,
            stem_task: Mutex::new(None),
            launches: Launches::new(),
            shares: Arc::new(Shares::default()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    /// Keeps the stem cell pools filled (and trimmed) until shutdown begins
    /// ([`Self::stop_refills`]) or the executor is dropped; call once, from within the
    /// server's runtime.
    pub fn spawn_stem_cells(self: &Arc<Self>) {
        if !self.stems.enabled() {
            return;
        }
        let weak = Arc::downgrade(self);
        let stems = self.stems.clone();
        let task = tokio::spawn(async move {
            let mut warned: std::collections::HashSet<StemKey> = Default::default();
            loop {
                if stems.is_closed() {
                    break;
                }
                let wake = stems.wake.notified();
                {
                    let Some(exec) = weak.upgrade() else { break };
                    let now = Instant::now();
                    // Measured only from a cgroup: without one the figure is bwrap's alone.
                    let measure = |s: &Stem| {
                        s.inst
                            .memory_probe()
                            .filter(|p| p.source() == "cgroup")
                            .and_then(|p| p.current_bytes())
                    };
                    for s in stems.trim(now, measure) {
                        s.inst.stop().await;
                    }
                    while let Some(key) = stems.wanted(Instant::now()) {
                        match exec.launch_stem(key).await {
                            Ok(stem) => {
                                if let Some(late) = stems.put(key, stem) {
                                    late.inst.stop().await;
                                }
                            }
                            Err(RuntimeError::ShuttingDown) => {
                                stems.failed(key, Instant::now());
                                return;
                            }
                            Err(e) => {
                                if warned.insert(key) {
                                    warn!(runtime = crate::stem::family_name(key.family), network = key.network.as_str(), "cannot start a stem cell: {e}; cold starts of such functions spawn a runtime (retrying every {}s)", STEM_BACKOFF.as_secs());
                                }
                                let now = Instant::now();
                                stems.refill_failed(key, now, now + STEM_BACKOFF, e.to_string());
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = wake => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
        *self.stem_task.lock().unwrap() = Some(task);
    }

    /// Shutdown begins (SIGTERM): no stem cell is started any more, and one starting is
    /// stopped. Idle ones still serve the cold starts of requests in flight.
    pub fn stop_refills(&self) {
        self.stems.close();
    }

    /// Shutdown, before the server's cgroups are removed: refuses every later instance
    /// start, waits for those in progress and for the stem cell refill loop to end, and
    /// stops every idle stem cell. Instances already started are their owners' to stop.
    pub async fn shutdown(&self) {
        let idle = self.stems.drain();
        self.launches.close().await;
        let task = self.stem_task.lock().unwrap().take();
        if let Some(mut task) = task {
            // It ends at once, or stops the stem cell it was starting first.
            if tokio::time::timeout(INIT_TIMEOUT, &mut task).await.is_err() {
                warn!("the stem cell refill loop did not end; aborting it");
                task.abort();
            }
        }
        for s in idle {
            s.inst.stop().await;
        }
    }

    /// Stem cell pools: sizes, hits and misses, memory (for `/v1/health`).
    pub fn stem_stats(&self) -> StemStats {
        self.stems.stats()
    }

    /// The stem cell pool a cold start of `spec` may take from, if any.
    fn stem_key(&self, spec: &InstanceSpec) -> Option<StemKey> {
        let family = spec.config.runtime.family();
        if !self.stems.enabled() || !matches!(family, RuntimeFamily::Node | RuntimeFamily::Python) {
            return None;
        }
        let startup = |k: &String| STARTUP_VARS.iter().any(|p| k.starts_with(p));
        if spec
            .config
            .env
            .keys()
            .chain(spec.config.secrets.keys())
            .any(startup)
        {
            return None;
        }
        Some(StemKey {
            family,
            // Without network namespaces (reported at start) the policy changes nothing.
            network: if self.netns {
                spec.config.network
            } else {
                NetworkPolicy::default()
            },
            tmp_mb: spec.config.ephemeral_storage_mb,
        })
    }

    /// Starts a stem cell for `key` and waits until its bootstrap waits to be specialised.
    async fn launch_stem(&self, key: StemKey) -> Result<Stem, RuntimeError> {
        let mut config = FunctionConfig::new(stem_runtime(key.family), "stem.cell");
        config.network = key.network;
        config.ephemeral_storage_mb = key.tmp_mb;
        config.memory_mb = STEM_MEMORY_MB;
        let spec = Arc::new(InstanceSpec {
            function: FunctionName::parse("nimbus-stem-cell").expect("valid name"),
            version: "$LATEST".into(),
            config,
            code_dir: PathBuf::from("/"),
            opt_dir: None,
        });
        let (tx, rx) = oneshot::channel();
        let inst = self.launch(spec, &[], Some(rx)).await?;
        let mut waiting = inst.env.state.stem_waiting.subscribe();
        let mut exit_rx = inst.env.exit_rx.clone();
        let closed = tokio::select! {
            _ = waiting.wait_for(|w| *w) => false,
            _ = self.stems.closing() => true,
            status = Env::wait_exit(&mut exit_rx) => {
                return Err(RuntimeError::Spawn(std::io::Error::other(format!("the stem cell exited: {status}"))));
            }
            _ = tokio::time::sleep(INIT_TIMEOUT) => {
                return Err(RuntimeError::Spawn(std::io::Error::other("the stem cell did not start within the init timeout")));
            }
        };
        if closed {
            inst.stop().await;
            return Err(RuntimeError::ShuttingDown);
        }
        Ok(Stem {
            inst,
            specialize: tx,
        })
    }

    /// Turns a stem cell into an instance of `spec`: its code on `/var/task`, its memory
    /// size on the cgroup, its log attribution and secret masking, then its environment
    /// to the waiting bootstrap.
    async fn specialize(
        &self,
        stem: Stem,
        spec: Arc<InstanceSpec>,
        secret_env: &[(String, String)],
    ) -> Result<ProcessInstance, RuntimeError> {
        let Stem {
            mut inst,
            specialize,
        } = stem;
        let t0 = Instant::now();
        let env = inst.env_mut();
        if let Some(sb) = &self.sandbox {
            let pid = env.pid.ok_or_else(|| {
                RuntimeError::Spawn(std::io::Error::other("the stem cell has no pid"))
            })?;
            let root = sb.task_root(&spec.code_dir)?;
            let opt = spec
                .opt_dir
                .as_deref()
                .map(|d| sb.opt_root(d))
                .transpose()?;
            tokio::task::spawn_blocking(move || {
                let roots: Vec<&sandbox::TaskRoot> = std::iter::once(&root).chain(&opt).collect();
                sandbox::bind_task_root(pid, &roots)
            })
            .await
            .map_err(|e| RuntimeError::Spawn(std::io::Error::other(e.to_string())))??;
        }
        let mounted = t0.elapsed();
        if let Some(cg) = &env.cgroup {
            cg.resize(u64::from(spec.config.memory_mb) << 20)?;
        }
        let lease = self.platform_lease(&spec, env._netns.as_ref()).await?;
        env.host_services = host_services::forward(
            spec.function.as_str(),
            &spec.config.host_services,
            env._netns.as_ref(),
        )
        .await?;
        env.logctx.specialize(
            spec.function.as_str(),
            instance_mask(secret_env, lease.as_ref()),
            spec.config.logging.clone(),
        );
        env.state
            .set_max_concurrency(spec.config.instance_concurrency as usize);
        let mut vars = self.environment(&spec, &env.api, secret_env, &env.id);
        with_lease(&mut vars, lease.as_ref());
        env.platform = lease;
        let vars: serde_json::Map<String, serde_json::Value> = vars
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let (task_root, _) = self.instance_dirs(&spec);
        let body = serde_json::json!({ "env": vars, "taskRoot": task_root });
        specialize
            .send(Bytes::from(body.to_string()))
            .map_err(|_| {
                RuntimeError::Spawn(std::io::Error::other("the stem cell stopped waiting"))
            })?;
        env.spec = spec;
        env.started = Instant::now();
        debug!(instance = %env.id, function = %env.spec.function, mount_us = mounted.as_micros() as u64, total_us = t0.elapsed().as_micros() as u64, "stem cell specialised");
        Ok(inst)
    }

    /// Gives instances of functions with an execution role temporary credentials and
    /// private AWS endpoints from `platform`. Without one, no instance gets credentials.
    pub fn with_platform(mut self, platform: Arc<dyn PlatformAccess>) -> Self {
        self.platform = Some(platform);
        self
    }

    /// The credentials and private endpoints of an instance of `spec` in namespace `ns`,
    /// when its function has a role that exists.
    async fn platform_lease(
        &self,
        spec: &InstanceSpec,
        ns: Option<&NetNs>,
    ) -> Result<Option<PlatformLease>, RuntimeError> {
        match &self.platform {
            Some(p) if !spec.config.role.is_empty() => {
                platform::lease(p, spec.function.as_str(), &spec.config.role, ns).await
            }
            _ => Ok(None),
        }
    }

    /// Resolves functions' secret references from `secrets`. Without one, a function that
    /// refers to a secret fails to start.
    pub fn with_secrets(mut self, secrets: Arc<dyn SecretSource>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// The function's secret variables with their values, read now (at instance start).
    fn resolve_secrets(&self, spec: &InstanceSpec) -> Result<Vec<(String, String)>, RuntimeError> {
        resolve_secrets(self.secrets.as_deref(), spec)
    }

    /// The instance's Runtime API listener and, where the host allows, the network
    /// namespace it lives in (with slirp4netns or pasta for `outbound`).
    async fn network(
        &self,
        spec: &InstanceSpec,
    ) -> Result<(tokio::net::TcpListener, Option<NetNs>, Option<Egress>), RuntimeError> {
        if !self.netns {
            // Degraded (reported at start): the host network, a random loopback port.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            return Ok((listener, None, None));
        }
        let egress = match spec.config.network {
            NetworkPolicy::None => None,
            NetworkPolicy::Outbound => match egress::probe() {
                Ok(tool) => Some(tool),
                Err(_) => {
                    // Degraded (warned at start, `egress` in the isolation report; strict
                    // refuses to start): egress without a namespace of its own, as on a
                    // host without network namespaces.
                    debug!(function = %spec.function, "no slirp4netns or pasta: an outbound instance on the host network");
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    return Ok((listener, None, None));
                }
            },
        };
        let (ns, listener) = NetNs::create().await.map_err(|e| {
            RuntimeError::Network(format!(
                "cannot create the instance's network namespace: {e}"
            ))
        })?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let egress = match egress {
            Some(tool) => Some(
                Egress::start(&tool, &ns)
                    .await
                    .map_err(|e| RuntimeError::Network(e.to_string()))?,
            ),
            None => None,
        };
        Ok((listener, Some(ns), egress))
    }

    pub fn memory_limits(&self) -> &MemoryLimits {
        &self.cfg.memory
    }

    /// The isolation instances get (probed at start).
    pub fn isolation(&self) -> &IsolationReport {
        &self.isolation
    }

    /// Where the instance sees its code and Nimbus's bootstraps.
    fn instance_dirs(&self, spec: &InstanceSpec) -> (PathBuf, PathBuf) {
        if self.sandbox.is_some() {
            (sandbox::TASK_ROOT.into(), sandbox::RUNTIME_DIR.into())
        } else {
            (spec.code_dir.clone(), self.cfg.runtimes_dir.clone())
        }
    }

    /// The program and arguments (paths as the instance sees them), and, sandboxed, the
    /// per-spawn pieces of the sandbox.
    fn command(
        &self,
        spec: &InstanceSpec,
        stem: bool,
    ) -> Result<(Command, Option<sandbox::Prepared>), RuntimeError> {
        let (task_root, runtime_dir) = self.instance_dirs(spec);
        let (program, args): (PathBuf, Vec<OsString>) = match spec.config.runtime.family() {
            RuntimeFamily::Node => (
                self.cfg.node.clone(),
                vec![runtime_dir.join("node/bootstrap.js").into()],
            ),
            RuntimeFamily::Python => (
                self.cfg.python.clone(),
                vec![runtime_dir.join("python/bootstrap.py").into()],
            ),
            RuntimeFamily::Java => {
                // Compiles the bootstrap on first use (blocking this worker for seconds, once).
                let classes = self.java.bootstrap_classes()?;
                let classes = match classes.strip_prefix(&self.cfg.runtimes_dir) {
                    Ok(rel) => runtime_dir.join(rel),
                    Err(_) => classes,
                };
                let args = crate::java::jvm_args(&classes, &spec.code_dir, spec.config.memory_mb)?;
                (self.java.java().to_path_buf(), args)
            }
            RuntimeFamily::Provided => {
                let bootstrap = spec.code_dir.join("bootstrap");
                let meta = std::fs::metadata(&bootstrap).map_err(|_| {
                    RuntimeError::InvalidEntrypoint(
                        "Couldn't find valid bootstrap(s): [/var/task/bootstrap]: add an executable file named bootstrap at the root of the package".into(),
                    )
                })?;
                if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                    return Err(RuntimeError::InvalidEntrypoint(
                        "bootstrap is not an executable file: chmod +x bootstrap before packaging"
                            .into(),
                    ));
                }
                (task_root.join("bootstrap"), vec![])
            }
            RuntimeFamily::WasiHttp | RuntimeFamily::WasmEvent => {
                return Err(RuntimeError::InvalidEntrypoint(format!(
                    "runtime {} runs WebAssembly components, not processes: this server was built without the wasm executor (cargo feature `wasm`)",
                    spec.config.runtime
                )))
            }
        };
        match &self.sandbox {
            None => {
                let mut cmd = Command::new(&program);
                cmd.args(&args);
                Ok((cmd, None))
            }
            Some(sb) => {
                let mounts = Mounts {
                    code_dir: (!stem).then_some(spec.code_dir.as_path()),
                    opt_dir: spec.opt_dir.as_deref().filter(|_| !stem),
                    runtimes_dir: &self.cfg.runtimes_dir,
                    tmp_bytes: u64::from(spec.config.ephemeral_storage_mb) << 20,
                };
                let (cmd, prepared) = sb.command(&mounts, OsStr::new(&program), &args)?;
                Ok((cmd, Some(prepared)))
            }
        }
    }

    /// `PATH` as instances get it.
    fn path_var(&self) -> String {
        if self.sandbox.is_some() {
            // The host's PATH names directories the sandbox does not have.
            let mut p = String::new();
            if let Some(bin) = self.cfg.python.parent() {
                p.push_str(&format!("{}:", bin.display()));
            }
            p.push_str("/usr/local/bin:/usr/bin:/bin:/var/task");
            p
        } else {
            self.path_env.clone()
        }
    }

    /// Where an instance of `spec` sees its layers: the sandbox's `/opt` (or its
    /// alternative), or, without a sandbox, the merged directory on the host. `None`
    /// without layers.
    fn opt_path(&self, spec: &InstanceSpec) -> Option<String> {
        let host = spec.opt_dir.as_ref()?;
        Some(match &self.sandbox {
            Some(sb) => sb.opt_dir().to_string(),
            None => host.display().to_string(),
        })
    }

    /// Lambda's layer paths for an instance of `spec` whose layers are at `opt`:
    /// `PATH` gains `OPT/bin`; `LD_LIBRARY_PATH` `OPT/lib`; Python's `PYTHONPATH`
    /// `OPT/python` and `OPT/python/lib/pythonX.Y/site-packages`; Node's `NODE_PATH`
    /// `OPT/nodejs/nodeNN/node_modules` and `OPT/nodejs/node_modules`.
    fn layer_environment(
        spec: &InstanceSpec,
        opt: &str,
        path: &str,
    ) -> Vec<(&'static str, String)> {
        let mut out = vec![
            ("PATH", format!("{path}:{opt}/bin")),
            ("LD_LIBRARY_PATH", format!("{opt}/lib")),
        ];
        let runtime = spec.config.runtime.as_str();
        match spec.config.runtime.family() {
            RuntimeFamily::Python => out.push((
                "PYTHONPATH",
                format!("{opt}/python:{opt}/python/lib/{runtime}/site-packages"),
            )),
            RuntimeFamily::Node => {
                let major = runtime
                    .strip_prefix("nodejs")
                    .and_then(|v| v.split('.').next())
                    .unwrap_or("20");
                out.push((
                    "NODE_PATH",
                    format!("{opt}/nodejs/node{major}/node_modules:{opt}/nodejs/node_modules"),
                ));
            }
            _ => {}
        }
        out
    }

    /// A stem cell's environment until it is specialised: only what every instance of
    /// its runtime shares (the function's own arrives with the specialisation). Its
    /// `LD_LIBRARY_PATH` names the layers' `lib` already: the dynamic loader reads it only
    /// at start, and a function's layers are mounted there when it is specialised.
    fn stem_environment(&self, api: &str, instance_id: &str) -> Vec<(String, String)> {
        let runtime_dir = if self.sandbox.is_some() {
            PathBuf::from(sandbox::RUNTIME_DIR)
        } else {
            self.cfg.runtimes_dir.clone()
        };
        let lib = self
            .sandbox
            .as_ref()
            .map(|sb| ("LD_LIBRARY_PATH", format!("{}/lib", sb.opt_dir())));
        lib.into_iter()
            .chain([
                ("PATH", self.path_var()),
                ("LANG", "C.UTF-8".into()),
                ("TZ", ":UTC".into()),
                ("PYTHONDONTWRITEBYTECODE", "1".into()),
                ("AWS_LAMBDA_RUNTIME_API", api.into()),
                ("LAMBDA_RUNTIME_DIR", runtime_dir.display().to_string()),
                ("_NIMBUS_STEM", "1".into()),
                ("_NIMBUS_INSTANCE_ID", instance_id.into()),
            ])
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    fn environment(
        &self,
        spec: &InstanceSpec,
        api: &str,
        secret_env: &[(String, String)],
        instance_id: &str,
    ) -> Vec<(String, String)> {
        let name = spec.function.as_str();
        let runtime = spec.config.runtime.as_str();
        let (task_root, runtime_dir) = self.instance_dirs(spec);
        let task_root = task_root.display().to_string();
        let path = self.path_var();
        let mut env: Vec<(String, String)> = spec
            .config
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .chain(secret_env.iter().cloned())
            .collect();
        let platform = [
            ("PATH", path),
            ("LANG", "C.UTF-8".into()),
            ("TZ", ":UTC".into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
            ("_HANDLER", spec.config.handler.clone()),
            ("AWS_EXECUTION_ENV", format!("AWS_Lambda_{runtime}")),
            ("AWS_LAMBDA_FUNCTION_NAME", name.into()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.config.memory_mb.to_string(),
            ),
            ("AWS_LAMBDA_FUNCTION_VERSION", spec.version.clone()),
            (
                "AWS_LAMBDA_FUNCTION_TIMEOUT",
                spec.config.timeout_s.to_string(),
            ),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                spec.config.logging.log_group(name),
            ),
            (
                "AWS_LAMBDA_LOG_FORMAT",
                spec.config.logging.format.as_lambda().into(),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                // As on Lambda: one stream per execution environment, named after it.
                format!("{}/[{}]{instance_id}", today(), spec.version),
            ),
            ("AWS_LAMBDA_RUNTIME_API", api.into()),
            ("AWS_REGION", arn::REGION.into()),
            ("AWS_DEFAULT_REGION", arn::REGION.into()),
            ("LAMBDA_TASK_ROOT", task_root),
            ("LAMBDA_RUNTIME_DIR", runtime_dir.display().to_string()),
            // In every instance's initial environment (stem cells included, whose
            // function environment arrives later): how a host process is traced to it.
            ("_NIMBUS_INSTANCE_ID", instance_id.into()),
        ];
        env.retain(|(k, _)| {
            !platform.iter().any(|(p, _)| p == k) && k != "AWS_LAMBDA_MAX_CONCURRENCY"
        });
        env.extend(platform.into_iter().map(|(k, v)| (k.to_string(), v)));
        if spec.config.instance_concurrency > 1 {
            // Lambda Managed Instances' variable: how many invocations the runtime may
            // hold at once (one `next` loop each).
            env.push((
                "AWS_LAMBDA_MAX_CONCURRENCY".into(),
                spec.config.instance_concurrency.to_string(),
            ));
        }
        if let Some(level) = spec.config.logging.application_level() {
            // Lambda's runtimes filter their own lines by it (JSON format only).
            env.retain(|(k, _)| k != "AWS_LAMBDA_LOG_LEVEL");
            env.push(("AWS_LAMBDA_LOG_LEVEL".into(), level.as_str().into()));
        }
        if let Some(opt) = self.opt_path(spec) {
            let path = self.path_var();
            for (k, v) in Self::layer_environment(spec, &opt, &path) {
                match env.iter_mut().find(|(e, _)| e == k) {
                    // PATH is the platform's; a variable the function sets itself wins.
                    Some(e) if k == "PATH" => e.1 = v,
                    Some(_) => {}
                    None => env.push((k.to_string(), v)),
                }
            }
        }
        env
    }
}

impl Executor for ProcessExecutor {
    type Instance = ProcessInstance;

    async fn start(&self, spec: Arc<InstanceSpec>) -> Result<ProcessInstance, RuntimeError> {
        if self.launches.is_closed() {
            return Err(RuntimeError::ShuttingDown);
        }
        if spec.config.instance_concurrency <= 1 {
            return self.start_process(spec).await;
        }
        loop {
            match self.shares.claim(&spec, self.cores) {
                Claim::Slot(slot) => return Ok(slot),
                Claim::Launch => {
                    // Ended by `launched` however the start ends: failed, done, or dropped
                    // with the request that asked (else the spec's waiters would wait for
                    // a start that never ends).
                    let mut claim = LaunchClaim {
                        shares: &self.shares,
                        spec: &spec,
                        open: true,
                    };
                    let mut inst = self.start_process(spec.clone()).await?;
                    claim.open = false;
                    self.shares.launched(&spec, Some(&mut inst));
                    return Ok(inst);
                }
                // Subscribed under the lock: a start that ended since is seen at once.
                Claim::Wait(mut launched) => {
                    let _ = launched.changed().await;
                }
            }
        }
    }

    async fn start_ahead(&self, spec: Arc<InstanceSpec>) -> Result<ProcessInstance, RuntimeError> {
        let secret_env = self.resolve_secrets(&spec)?;
        let mut inst = self.launch(spec.clone(), &secret_env, None).await?;
        if spec.config.instance_concurrency > 1 {
            self.shares.offer(&spec, &mut inst);
        }
        Ok(inst)
    }
}

impl ProcessExecutor {
    /// Starts a process for `spec`: a stem cell specialised for it when one is ready, else
    /// a new runtime.
    async fn start_process(
        &self,
        spec: Arc<InstanceSpec>,
    ) -> Result<ProcessInstance, RuntimeError> {
        let secret_env = self.resolve_secrets(&spec)?;
        if let Some(key) = self.stem_key(&spec) {
            let (stem, dead) = self.stems.take(key, Instant::now());
            for d in dead {
                tokio::spawn(d.inst.stop());
            }
            if let Some(stem) = stem {
                match self.specialize(stem, spec.clone(), &secret_env).await {
                    Ok(mut inst) => {
                        inst.from_stem = true;
                        // The replacement starts once this instance has answered its first
                        // invocation (or after STEM_REFILL_AFTER): started earlier, a new
                        // runtime's sandbox set-up and start competed for the cores with
                        // the cold start that took the stem cell.
                        let (init, stems) = (inst.first_answer(), self.stems.clone());
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(STEM_REFILL_AFTER, init).await;
                            stems.wake.notify_one();
                        });
                        return Ok(inst);
                    }
                    Err(e) => {
                        self.stems.wake.notify_one();
                        warn!(function = %spec.function, "a stem cell could not be specialised ({e}); starting a new runtime")
                    }
                }
            }
        }
        self.launch(spec, &secret_env, None).await
    }
}

/// The instance's mask: its secrets' values and its credentials' secret and token.
fn instance_mask(secret_env: &[(String, String)], lease: Option<&PlatformLease>) -> Vec<String> {
    let mut mask = secret_mask(secret_env);
    if let Some(l) = lease {
        mask.extend(l.mask.iter().cloned());
        mask.sort_by_key(|m| std::cmp::Reverse(m.len()));
    }
    mask
}

/// Sets the lease's variables (credentials, endpoints), over any the function set.
fn with_lease(env: &mut Vec<(String, String)>, lease: Option<&PlatformLease>) {
    if let Some(l) = lease {
        env.retain(|(k, _)| !l.env.iter().any(|(lk, _)| lk == k));
        env.extend(l.env.iter().cloned());
    }
}

/// What to mask in an instance's output: each secret value, and each line of a multi-line
/// value (output is captured line by line), longest first.
fn secret_mask(secret_env: &[(String, String)]) -> Vec<String> {
    let mut mask: Vec<String> = Vec::new();
    for (_, v) in secret_env {
        mask.push(v.clone());
        if v.contains('\n') {
            mask.extend(
                v.lines()
                    .map(|l| l.trim_end_matches('\r'))
                    .filter(|l| l.len() >= 4)
                    .map(str::to_string),
            );
        }
    }
    mask.retain(|m| !m.is_empty());
    mask.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mask.dedup();
    mask
}

/// The runtime a stem cell of `family` is started as (every version of a family runs the
/// same host interpreter).
fn stem_runtime(family: RuntimeFamily) -> Runtime {
    let id = match family {
        RuntimeFamily::Node => "nodejs20.x",
        _ => "python3.11",
    };
    Runtime::parse(id).expect("a known runtime")
}

impl ProcessExecutor {
    /// Starts a process for `spec` — or, with `stem`, a stem cell of `spec`'s runtime
    /// (no code, no function environment) whose bootstrap waits for `stem`'s answer.
    async fn launch(
        &self,
        spec: Arc<InstanceSpec>,
        secret_env: &[(String, String)],
        stem: Option<oneshot::Receiver<Bytes>>,
    ) -> Result<ProcessInstance, RuntimeError> {
        // Held until the instance exists: shutdown waits for it before removing cgroups.
        let _launching = self.launches.enter()?;
        // The kernel lets a process join a cgroup over its `pids.max` (only forks are
        // refused): with the server's budget used up, the runtime could not start anyway.
        if let Some((used, max)) = self.cfg.memory.server_tasks().filter(|(u, m)| u >= m) {
            return Err(RuntimeError::Spawn(std::io::Error::other(format!(
                "the server's process budget is used up ({used} of --max-pids {max} processes and threads in all instances); retry when instances finish"
            ))));
        }
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (mut cmd, prepared) = self.command(&spec, stem.is_some())?;
        if self.sandbox.is_none() {
            warn!(function = %spec.function, "starting an instance WITHOUT isolation: it runs as the server's user and sees the host");
        }
        let is_stem = stem.is_some();

        // The Runtime API listens before the runtime starts (curl's connect timeout is 1 s):
        // 127.0.0.1:9001 in the instance's own network namespace.
        let (listener, ns, egress) = self.network(&spec).await?;
        // A stem cell gets its function's credentials when it is specialised.
        let (lease, host_services) = if is_stem {
            (None, None)
        } else {
            (
                self.platform_lease(&spec, ns.as_ref()).await?,
                host_services::forward(
                    spec.function.as_str(),
                    &spec.config.host_services,
                    ns.as_ref(),
                )
                .await?,
            )
        };
        let mask = instance_mask(secret_env, lease.as_ref());
        let api = listener.local_addr()?.to_string();
        let ns_fd = ns.as_ref().map(NetNs::raw_fd);
        let (next_tx, next_rx) = mpsc::channel::<Pending>(1);
        let state = Arc::new(match stem {
            Some(rx) => RapiState::stem(next_rx, rx),
            None => RapiState::new(next_rx),
        });
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(rapi::serve(listener, state.clone(), stop_rx));

        let cgroup = match self
            .cfg
            .memory
            .create(&id, u64::from(spec.config.memory_mb) << 20)
        {
            Ok(cg) => cg,
            Err(e) => {
                warn!(
                    "cannot create cgroup for instance {id}: {e}; running without a memory limit"
                );
                None
            }
        };
        if self.sandbox.is_none() {
            // A stem cell moves to its code directory when it is specialised.
            cmd.current_dir(if is_stem {
                Path::new("/")
            } else {
                &spec.code_dir
            });
        }
        let env = if is_stem {
            self.stem_environment(&api, &id)
        } else {
            let mut env = self.environment(&spec, &api, secret_env, &id);
            with_lease(&mut env, lease.as_ref());
            env
        };
        cmd.env_clear()
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let procs: Vec<std::ffi::CString> = cgroup
            .as_ref()
            .map(|c| c.procs_paths().to_vec())
            .unwrap_or_default();
        let sandbox_fds = prepared.as_ref().map(|p| p.raw_fds()).unwrap_or_default();
        let plan = prepared
            .as_ref()
            .map(sandbox::Prepared::plan)
            .unwrap_or_default();
        let sandboxed = prepared.is_some();
        let nproc = self.sandbox.as_ref().is_some_and(|s| s.privileged());
        // SAFETY: the closure only makes async-signal-safe system calls (prctl, setns, open,
        // write, close, fcntl, setrlimit, unshare, mount and the mount API) on memory
        // prepared before fork.
        unsafe {
            cmd.pre_exec(move || {
                // Join the instance's network namespace (before anything else runs).
                if let Some(fd) = ns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0,
                    0,
                    0,
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for p in &procs {
                    let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    libc::close(fd);
                    if !ok {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if sandboxed {
                    // The code and the bootstraps as overlays, for bwrap to bind.
                    sandbox::mount_trees(&plan)?;
                    sandbox::clear_cloexec(&sandbox_fds)?;
                    sandbox::set_rlimits(nproc)?;
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let mut child: Child = match spawn_off_workers(cmd).await {
            Ok(c) => c,
            Err(e) => {
                let _ = stop_tx.send(());
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                return Err(
                    if e.kind() == std::io::ErrorKind::NotFound
                        || e.kind() == std::io::ErrorKind::PermissionDenied
                    {
                        RuntimeError::InvalidEntrypoint(format!(
                            "cannot run the {} runtime: {e}",
                            spec.config.runtime
                        ))
                    } else {
                        RuntimeError::Spawn(e)
                    },
                );
            }
        };
        // bwrap has its own copies of the descriptors it reads; the uid stays leased.
        let uid = prepared.map(|p| p.uid);
        let pid = child.id();
        debug!(instance = %id, pid, function = %spec.function, version = %spec.version, "instance started");

        let logctx = Arc::new(LogCtx::new(
            if is_stem { "" } else { spec.function.as_str() },
            spec.config.logging.clone(),
            self.logs.clone(),
            mask,
        ));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let out_task = tokio::spawn(pump(stdout, LogStreamKind::Stdout, logctx.clone()));
        let err_task = tokio::spawn(pump(stderr, LogStreamKind::Stderr, logctx.clone()));

        let (exit_tx, exit_rx) = watch::channel::<Option<ExitStatus>>(None);
        tokio::spawn(async move {
            let status = child.wait().await;
            // Let the pipes drain so the last lines are attributed before we report the exit.
            let _ = tokio::time::timeout(Duration::from_millis(200), async {
                let _ = out_task.await;
                let _ = err_task.await;
            })
            .await;
            let _ =
                exit_tx.send(Some(status.unwrap_or_else(|_| {
                    std::os::unix::process::ExitStatusExt::from_raw(0)
                })));
        });

        if !is_stem && spec.config.instance_concurrency > 1 {
            state.set_max_concurrency(spec.config.instance_concurrency as usize);
        }
        Ok(ProcessInstance::new(Env {
            id,
            pid,
            api,
            spec,
            next_tx: Some(next_tx),
            state,
            exit_rx,
            stop_tx: Some(stop_tx),
            cgroup,
            uid,
            logctx,
            started,
            init_claimed: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
            killed_for: Mutex::new(None),
            // Its first slot: the instance returned here.
            slots_made: AtomicUsize::new(1),
            slots: AtomicUsize::new(1),
            _netns: ns,
            egress: Mutex::new(egress),
            probe: std::sync::OnceLock::new(),
            platform: lease,
            host_services,
        }))
    }
}

/// Spawns `cmd` from a blocking thread: the fork (with any pre-exec hook) and the wait for
/// the exec take milliseconds, during which an async worker could serve nothing else (with
/// one worker, every request in flight — e.g. a cold start from a stem cell while its
/// replacement starts — waited for it).
pub(crate) async fn spawn_off_workers(mut cmd: Command) -> std::io::Result<Child> {
    tokio::task::spawn_blocking(move || cmd.spawn())
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// Reads one output stream of an instance to its end, a line (at most [`MAX_LINE`] bytes:
/// a longer one is split) at a time. The pipe is always drained, never left to fill: a
/// function never blocks on its own output, and what is over its budget is dropped here.
async fn pump<R: AsyncRead + Unpin>(r: R, stream: LogStreamKind, ctx: Arc<LogCtx>) {
    let mut reader = BufReader::with_capacity(64 * 1024, r);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut line = &buf[..n];
        while let [rest @ .., b'\n' | b'\r'] = line {
            line = rest;
        }
        ctx.output(stream, line);
    }
}

use tokio::io::AsyncReadExt;

/// An instance of a process function: a slot of a running process. Usually the process's
/// only one; with the function's `instance_concurrency` above 1, each slot is one of the
/// invocations the process runs at once, and the pool sees each slot as an instance.
pub struct ProcessInstance {
    env: Arc<Env>,
    /// The process's own id for its first slot, `ID+N` for the others.
    id: String,
    /// Specialised from a stem cell ([`Instance::was_stem_cell`]).
    from_stem: bool,
    /// Where the process is offered to further slots (functions with `instance_concurrency`
    /// above 1); `None` for a process of one slot.
    shares: Option<Arc<Shares>>,
    /// Whether this slot has left its process ([`ProcessInstance::detach`]).
    detached: bool,
}

/// A running child process: the execution environment of one instance, or of several
/// slots ([`ProcessInstance`]) that run invocations at once.
struct Env {
    id: String,
    pid: Option<u32>,
    /// `AWS_LAMBDA_RUNTIME_API` as the instance sees it.
    api: String,
    spec: Arc<InstanceSpec>,
    next_tx: Option<mpsc::Sender<Pending>>,
    state: Arc<RapiState>,
    exit_rx: watch::Receiver<Option<ExitStatus>>,
    stop_tx: Option<oneshot::Sender<()>>,
    cgroup: Option<Cgroup>,
    /// The sandbox uid, returned to the pool when the instance is gone.
    uid: Option<UidLease>,
    logctx: Arc<LogCtx>,
    started: Instant,
    /// Taken by the invocation (or the provisioned start, [`Instance::ready`]) that reports
    /// the initialisation.
    init_claimed: AtomicBool,
    healthy: AtomicBool,
    /// Why the process was killed under invocations of other slots (one timed out).
    killed_for: Mutex<Option<String>>,
    /// Slots handed out so far (names the next one).
    slots_made: AtomicUsize,
    /// Slots using the process now (changed under the [`Shares`] lock).
    slots: AtomicUsize,
    /// The instance's network namespace (kept open until the instance is gone).
    _netns: Option<NetNs>,
    /// Egress for `network = "outbound"`; killed with the instance.
    egress: Mutex<Option<Egress>>,
    /// Made at first use and kept: it holds the peak-memory file open, read by the REPORT
    /// line of every invocation.
    probe: std::sync::OnceLock<crate::MemoryProbe>,
    /// The role credentials and private endpoints: revoked and closed when the instance
    /// is dropped, whatever stopped it. Declared after the process fields so they outlive
    /// nothing of it.
    platform: Option<PlatformLease>,
    /// The host services forwarded into the instance's namespace (`host_services`).
    host_services: Option<HostForwards>,
}

/// The processes of functions with `instance_concurrency` above 1, by the spec they run,
/// and the starts of such processes in progress.
#[derive(Default)]
pub(crate) struct Shares {
    groups: Mutex<Vec<Group>>,
}

/// The processes of one spec.
struct Group {
    spec: Arc<InstanceSpec>,
    envs: Vec<Arc<Env>>,
    /// Processes of this spec starting now.
    launching: usize,
    /// Counts the starts that ended (a slot may then be free): waiters subscribe under the
    /// lock, so none misses one.
    launched: watch::Sender<u64>,
}

impl Group {
    fn runs(&self, spec: &InstanceSpec) -> bool {
        let s = &self.spec;
        s.function == spec.function
            && s.version == spec.version
            && s.code_dir == spec.code_dir
            && s.opt_dir == spec.opt_dir
            && s.config == spec.config
    }
}

/// What [`Shares::claim`] decided.
enum Claim {
    /// A slot of a running process.
    Slot(ProcessInstance),
    /// Start a process (counted as launching until [`Shares::launched`]).
    Launch,
    /// Wait for a start in progress, then ask again.
    Wait(watch::Receiver<u64>),
}

/// A start [`Shares::claim`] asked for, until it ends ([`Shares::launched`]).
struct LaunchClaim<'a> {
    shares: &'a Arc<Shares>,
    spec: &'a Arc<InstanceSpec>,
    open: bool,
}

impl Drop for LaunchClaim<'_> {
    fn drop(&mut self) {
        if self.open {
            self.shares.launched(self.spec, None);
        }
    }
}

impl Shares {
    /// A slot for `spec`: of a running process with room for one once the version has a
    /// process per core (until then a new process spreads the load over the cores), else a
    /// new process — unless one is starting, whose slots the caller waits for (a burst of
    /// requests would otherwise start a process each).
    fn claim(self: &Arc<Self>, spec: &Arc<InstanceSpec>, cores: usize) -> Claim {
        let max = spec.config.instance_concurrency as usize;
        let mut groups = self.groups.lock().unwrap();
        let g = Self::group(&mut groups, spec);
        g.envs.retain(|e| e.slots.load(Ordering::SeqCst) > 0);
        if g.envs.len() + g.launching < cores {
            g.launching += 1;
            return Claim::Launch;
        }
        let free = g
            .envs
            .iter()
            .filter(|e| e.is_healthy() && e.slots.load(Ordering::SeqCst) < max)
            .min_by_key(|e| e.slots.load(Ordering::SeqCst));
        if let Some(env) = free {
            let env = env.clone();
            env.slots.fetch_add(1, Ordering::SeqCst);
            let n = env.slots_made.fetch_add(1, Ordering::SeqCst);
            return Claim::Slot(ProcessInstance {
                id: format!("{}+{n}", env.id),
                env,
                from_stem: false,
                shares: Some(self.clone()),
                detached: false,
            });
        }
        if g.launching > 0 {
            return Claim::Wait(g.launched.subscribe());
        }
        g.launching += 1;
        Claim::Launch
    }

    /// `spec`'s group in `groups` (made when missing; groups with neither a process nor a
    /// start are dropped).
    fn group<'a>(groups: &'a mut Vec<Group>, spec: &Arc<InstanceSpec>) -> &'a mut Group {
        groups.retain(|g| !g.envs.is_empty() || g.launching > 0);
        let i = match groups.iter().position(|g| g.runs(spec)) {
            Some(i) => i,
            None => {
                groups.push(Group {
                    spec: spec.clone(),
                    envs: Vec::new(),
                    launching: 0,
                    launched: watch::Sender::new(0),
                });
                groups.len() - 1
            }
        };
        &mut groups[i]
    }

    /// A start [`Shares::claim`] asked for has ended: its process (if it started) takes
    /// further slots.
    fn launched(self: &Arc<Self>, spec: &Arc<InstanceSpec>, inst: Option<&mut ProcessInstance>) {
        let mut groups = self.groups.lock().unwrap();
        let g = Self::group(&mut groups, spec);
        g.launching = g.launching.saturating_sub(1);
        if let Some(inst) = inst {
            inst.shares = Some(self.clone());
            g.envs.push(inst.env.clone());
        }
        g.launched.send_modify(|n| *n += 1);
    }

    /// Offers a process started outside [`Shares::claim`] (provisioned) to further slots.
    fn offer(self: &Arc<Self>, spec: &Arc<InstanceSpec>, inst: &mut ProcessInstance) {
        let mut groups = self.groups.lock().unwrap();
        inst.shares = Some(self.clone());
        Self::group(&mut groups, spec).envs.push(inst.env.clone());
    }

    /// A slot leaves `env`; true when it was the last (the process is to stop).
    fn leave(&self, env: &Arc<Env>) -> bool {
        let mut groups = self.groups.lock().unwrap();
        let last = env.slots.fetch_sub(1, Ordering::SeqCst) == 1;
        if last {
            for g in groups.iter_mut() {
                g.envs.retain(|e| !Arc::ptr_eq(e, env));
            }
        }
        last
    }
}

enum Phase {
    Done(Outcome),
    Exited(ExitStatus),
    TimedOut,
}

impl ProcessInstance {
    /// The only slot of a process just started.
    fn new(env: Env) -> Self {
        ProcessInstance {
            id: env.id.clone(),
            env: Arc::new(env),
            from_stem: false,
            shares: None,
            detached: false,
        }
    }

    /// The process, while this is its only slot (a stem cell being specialised).
    fn env_mut(&mut self) -> &mut Env {
        Arc::get_mut(&mut self.env).expect("a process of one slot")
    }

    /// Resolves once the runtime has answered its first invocation, or has exited: when a
    /// specialised stem cell's replacement may start without slowing its cold start down.
    fn first_answer(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut answered = self.env.state.answered.subscribe();
        let mut exit = self.env.exit_rx.clone();
        async move {
            tokio::select! {
                _ = answered.wait_for(|a| *a) => {}
                _ = exit.wait_for(|s| s.is_some()) => {}
            }
        }
    }

    /// Leaves the process; true when this was its last slot (the process is to stop).
    fn detach(&mut self) -> bool {
        if std::mem::replace(&mut self.detached, true) {
            return false;
        }
        match &self.shares {
            Some(shares) => shares.leave(&self.env),
            None => true,
        }
    }
}

impl Env {
    /// Whether the instance's role credentials (if any) outlive another invocation: valid
    /// for the function's timeout plus [`CREDENTIALS_MARGIN`]. Otherwise the pool stops
    /// the instance instead of reusing it, and the next one gets fresh credentials (as
    /// Lambda recycles execution environments before their credentials expire).
    fn credentials_fresh(&self) -> bool {
        self.platform.as_ref().is_none_or(|l| {
            l.valid_for(
                Duration::from_secs(u64::from(self.spec.config.timeout_s)) + CREDENTIALS_MARGIN,
            )
        })
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
            && self.exit_rx.borrow().is_none()
            && self.credentials_fresh()
    }

    /// `platform.initStart` (JSON format only), stamped with the instance's start; in the
    /// log of the invocation that reports the initialisation, when one does.
    fn init_start_event(&self, provisioned: bool, invocation: Option<&str>) {
        let at = now_ms() - self.started.elapsed().as_millis() as i64;
        let event = PlatformEvent::InitStart {
            function: self.spec.function.as_str(),
            version: &self.spec.version,
            provisioned,
        };
        match invocation {
            Some(rid) => self.logctx.platform_in(rid, event, at),
            None => self.logctx.platform_at(event, at),
        }
    }

    fn kill(&self) {
        self.healthy.store(false, Ordering::SeqCst);
        if let Some(e) = self.egress.lock().unwrap().as_mut() {
            e.kill();
        }
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Processes that left the group (the sandbox starts a new session).
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
    }

    async fn wait_exit(rx: &mut watch::Receiver<Option<ExitStatus>>) -> ExitStatus {
        match rx.wait_for(|s| s.is_some()).await {
            Ok(s) => s.expect("checked"),
            Err(_) => std::os::unix::process::ExitStatusExt::from_raw(0),
        }
    }

    fn exit_outcome(&self, request_id: &str, status: ExitStatus) -> Outcome {
        if let Some(init) = self.state.init_error.lock().unwrap().clone() {
            return init;
        }
        if let Some(why) = self.killed_for.lock().unwrap().clone() {
            return Outcome::platform_error(
                "Runtime.ExitError",
                format!("RequestId: {request_id} Error: the instance was stopped: {why}"),
            );
        }
        use std::os::unix::process::ExitStatusExt;
        let how = match (status.code(), status.signal()) {
            // bwrap exits with 128 + the signal that killed the runtime.
            (Some(c), _) if self.uid.is_some() && (129..=192).contains(&c) => {
                if c == 137 {
                    "signal: killed".to_string()
                } else {
                    format!("signal: {}", c - 128)
                }
            }
            (Some(c), _) => format!("exit status {c}"),
            (None, Some(9)) => "signal: killed".to_string(),
            (None, Some(s)) => format!("signal: {s}"),
            _ => "unknown".to_string(),
        };
        if self.cgroup.as_ref().is_some_and(|c| c.oom_killed()) {
            return Outcome::platform_error(
                "Runtime.OutOfMemory",
                format!(
                    "RequestId: {request_id} Error: Runtime exited with error: {how} (memory limit of {} MB exceeded)",
                    self.spec.config.memory_mb
                ),
            );
        }
        Outcome::platform_error(
            "Runtime.ExitError",
            format!("RequestId: {request_id} Error: Runtime exited with error: {how}"),
        )
    }

    fn memory_probe(&self) -> crate::MemoryProbe {
        self.probe
            .get_or_init(|| {
                let cgroup = self.cgroup.as_ref().map(|c| c.probe_dir());
                crate::MemoryProbe::new(cgroup, self.pid)
            })
            .clone()
    }

    /// `Max Memory Used`: the cgroup's peak, else the main process's `VmHWM`.
    fn max_memory_mb(&self) -> u64 {
        let peak = self.memory_probe().peak_bytes();
        peak.map(|b| b.div_ceil(1 << 20)).unwrap_or(0)
    }

    async fn run(&self, inv: &Invocation, t0: Instant) -> (Phase, Option<Instant>) {
        let timeout = Duration::from_secs(u64::from(self.spec.config.timeout_s));
        let (picked_tx, picked_rx) = oneshot::channel();
        let (reply_tx, reply_rx) = oneshot::channel();
        let pending = Pending {
            inv: inv.clone(),
            timeout,
            picked: picked_tx,
            reply: reply_tx,
        };
        let Some(tx) = self.next_tx.as_ref() else {
            return (
                Phase::Exited(std::os::unix::process::ExitStatusExt::from_raw(0)),
                None,
            );
        };
        let mut exit_rx = self.exit_rx.clone();
        // Phase 1: the runtime takes the event (bounded by the init timeout until it has
        // asked for its first one). Slots of one process hand over one at a time: each
        // waits its turn for the channel, within the same bound.
        let pickup_bound = if self.state.first_next.lock().unwrap().is_some() {
            timeout
        } else {
            INIT_TIMEOUT + timeout
        };
        let pickup_deadline = t0 + pickup_bound;
        tokio::select! {
            sent = tx.send(pending) => if sent.is_err() {
                self.healthy.store(false, Ordering::SeqCst);
                return (
                    Phase::Done(Outcome::platform_error(
                        "Runtime.Unknown",
                        "instance is not accepting work",
                    )),
                    None,
                );
            },
            status = Self::wait_exit(&mut exit_rx) => return (Phase::Exited(status), None),
            _ = tokio::time::sleep_until(pickup_deadline.into()) => return (Phase::TimedOut, None),
        }
        let picked_at = tokio::select! {
            p = picked_rx => match p {
                Ok(at) => at,
                Err(_) => return (Phase::Exited(Self::wait_exit(&mut exit_rx).await), None),
            },
            status = Self::wait_exit(&mut exit_rx) => return (Phase::Exited(status), None),
            _ = tokio::time::sleep_until(pickup_deadline.into()) => return (Phase::TimedOut, None),
        };
        // Phase 2: the answer, within the function's timeout.
        let phase = tokio::select! {
            r = reply_rx => match r {
                Ok(o) => Phase::Done(o),
                Err(_) => Phase::Exited(Self::wait_exit(&mut exit_rx).await),
            },
            status = Self::wait_exit(&mut exit_rx) => Phase::Exited(status),
            _ = tokio::time::sleep_until((picked_at + timeout).into()) => Phase::TimedOut,
        };
        (phase, Some(picked_at))
    }

    fn initialised(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ready = self.state.ready.subscribe();
        let mut exit = self.exit_rx.clone();
        let deadline = self.started + INIT_TIMEOUT;
        async move {
            tokio::select! {
                _ = ready.wait_for(|r| *r) => {}
                _ = exit.wait_for(|s| s.is_some()) => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    async fn ready(&self) -> Result<(), String> {
        if self.init_claimed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let mut ready_rx = self.state.ready.subscribe();
        let mut exit_rx = self.exit_rx.clone();
        let deadline = self.started + INIT_TIMEOUT;
        tokio::select! {
            r = ready_rx.wait_for(|r| *r) => {
                if r.is_err() {
                    self.healthy.store(false, Ordering::SeqCst);
                    return Err("the instance's Runtime API is gone".into());
                }
            }
            status = Self::wait_exit(&mut exit_rx) => {
                self.healthy.store(false, Ordering::SeqCst);
                let body = match self.exit_outcome("init", status) {
                    Outcome::Error { body, .. } => String::from_utf8_lossy(&body).into_owned(),
                    other => format!("{other:?}"),
                };
                return Err(format!("the runtime exited during init: {body}"));
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                self.kill();
                return Err(format!(
                    "Runtime failed to start within {} seconds",
                    INIT_TIMEOUT.as_secs()
                ));
            }
        }
        if self.init_claimed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let init = self
            .state
            .first_next
            .lock()
            .unwrap()
            .unwrap_or_else(Instant::now)
            .saturating_duration_since(self.started);
        self.init_start_event(true, None);
        self.logctx.platform(PlatformEvent::InitReport {
            duration_ms: init.as_secs_f64() * 1000.0,
        });
        Ok(())
    }

    async fn invoke(&self, inv: Invocation) -> InvokeResult {
        let rid = inv.request_id.clone();
        // The first invocation of the process reports its initialisation.
        let first = !self.init_claimed.swap(true, Ordering::SeqCst);
        self.logctx.begin(&rid, inv.trace_id.as_deref());
        if first {
            self.init_start_event(false, Some(&rid));
        }
        self.logctx.platform(PlatformEvent::Start {
            request_id: &rid,
            version: &self.spec.version,
            trace: inv.trace_id.as_deref(),
        });
        let t0 = Instant::now();
        let (phase, picked_at) = self.run(&inv, t0).await;
        let init_duration = first.then(|| {
            let first_next = *self.state.first_next.lock().unwrap();
            first_next
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(self.started)
        });
        let end = Instant::now();
        let mut init_failed = false;
        let mut timed_out = false;
        let outcome = match phase {
            Phase::Done(o) => o,
            Phase::Exited(status) => {
                self.healthy.store(false, Ordering::SeqCst);
                // It posted `/init/error`, or exited before asking for its first event.
                init_failed = self.state.init_error.lock().unwrap().is_some()
                    || self.state.first_next.lock().unwrap().is_none();
                self.exit_outcome(&rid, status)
            }
            Phase::TimedOut => {
                if self.slots.load(Ordering::SeqCst) > 1 {
                    // The other slots' invocations end with the process: say why.
                    self.killed_for.lock().unwrap().get_or_insert_with(|| {
                        format!(
                            "invocation {rid} timed out after {} seconds, and the process runs several invocations at once (instance_concurrency)",
                            self.spec.config.timeout_s
                        )
                    });
                }
                self.kill();
                timed_out = true;
                if picked_at.is_none() && self.state.first_next.lock().unwrap().is_none() {
                    init_failed = true;
                    Outcome::platform_error(
                        "Runtime.InitTimeout",
                        format!(
                            "RequestId: {rid} Error: Runtime failed to start within {} seconds",
                            INIT_TIMEOUT.as_secs()
                        ),
                    )
                } else {
                    Outcome::platform_error(
                        crate::TIMED_OUT,
                        format!(
                            "RequestId: {rid} Error: Task timed out after {}.00 seconds",
                            self.spec.config.timeout_s
                        ),
                    )
                }
            }
        };
        // Give the log pumps a moment to attribute lines written just before the answer.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let duration = end.saturating_duration_since(picked_at.unwrap_or(t0));
        let log_tail = self.logctx.end_invocation(InvocationEnd {
            request_id: &rid,
            outcome: &outcome,
            timed_out,
            crashed: !self.is_healthy(),
            duration,
            memory_mb: self.spec.config.memory_mb,
            max_memory_mb: self.max_memory_mb(),
            init: init_duration,
            trace: inv.trace_id.as_deref(),
        });
        // An instance left near its process limit (zombies, children left running) is not
        // reused: the next invocation could not start a thread.
        if self.healthy.load(Ordering::SeqCst) {
            if let Some(why) = self.cgroup.as_ref().and_then(Cgroup::recycle_reason) {
                info!(instance = %self.id, function = %self.spec.function, "recycling instance: {why}");
                self.healthy.store(false, Ordering::SeqCst);
            }
        }
        InvokeResult {
            outcome,
            duration,
            init_duration,
            log_tail,
            started: picked_at.is_some(),
            init_failed,
        }
    }

    async fn stop(mut self) {
        self.next_tx = None;
        self.kill();
        let mut rx = self.exit_rx.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), Self::wait_exit(&mut rx)).await;
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
        }
        debug!(instance = %self.id, "instance stopped");
    }
}

impl Instance for ProcessInstance {
    fn id(&self) -> &str {
        &self.id
    }

    fn pid(&self) -> Option<u32> {
        self.env.pid
    }

    fn is_healthy(&self) -> bool {
        self.env.is_healthy()
    }

    fn was_stem_cell(&self) -> bool {
        self.from_stem
    }

    fn started_anew(&self) -> bool {
        self.id == self.env.id
    }

    fn initialised(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.env.initialised()
    }

    fn memory_probe(&self) -> Option<crate::MemoryProbe> {
        // A process of several slots is measured once, by its first slot.
        (self.id == self.env.id).then(|| self.env.memory_probe())
    }

    async fn ready(&mut self) -> Result<(), String> {
        self.env.ready().await
    }

    async fn invoke(&mut self, inv: Invocation) -> InvokeResult {
        self.env.invoke(inv).await
    }

    async fn stop(mut self) {
        if !self.detach() {
            return;
        }
        let env = self.env.clone();
        drop(self);
        match Arc::try_unwrap(env) {
            Ok(env) => env.stop().await,
            // Still referenced (nothing else keeps it): stopped when the last one goes.
            Err(env) => env.kill(),
        }
    }
}

impl Drop for ProcessInstance {
    fn drop(&mut self) {
        // Dropped without stop(): the process goes with its last slot ([`Env`]'s drop).
        self.detach();
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if self.cgroup.is_some() || self.stop_tx.is_some() {
            // Dropped without stop(): make sure nothing is left running.
            self.kill();
            if let Some(tx) = self.stop_tx.take() {
                let _ = tx.send(());
            }
            if let Some(cg) = self.cgroup.take() {
                std::thread::spawn(move || cg.remove());
            }
        }
    }
}

fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}/{:02}/{:02}", d.year(), u8::from(d.month()), d.day())
}

fn write_if_changed(path: &Path, contents: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    std::fs::create_dir_all(path.parent().expect("has parent"))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(tmp, path)
}

/// The interpreters the server runs functions with, resolved as [`ProcessExecutor::new`]
/// resolves them (for `nimbus doctor`).
#[derive(Debug, Clone)]
pub struct HostInterpreters {
    pub node: PathBuf,
    pub python: PathBuf,
    pub java: PathBuf,
    /// Compiles the Java bootstrap at the first Java cold start.
    pub javac: Option<PathBuf>,
}

impl HostInterpreters {
    /// `NIMBUS_NODE`, `NIMBUS_PYTHON`, `NIMBUS_JAVA`, else `node`, `python3`, `java`, looked
    /// up on `PATH`. A program that is not found stays a bare name.
    pub fn resolve() -> Self {
        let path_env =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let var = |name: &str, default: &str| {
            std::env::var_os(name).map_or_else(|| PathBuf::from(default), PathBuf::from)
        };
        let java = resolve(&var("NIMBUS_JAVA", "java"), &path_env);
        Self {
            node: resolve(&var("NIMBUS_NODE", "node"), &path_env),
            python: resolve_python(&var("NIMBUS_PYTHON", "python3"), &path_env).0,
            javac: crate::java::find_javac(&java, &path_env),
            java,
        }
    }
}

fn resolve(program: &Path, path_env: &str) -> PathBuf {
    if program.is_absolute() {
        return program.to_path_buf();
    }
    std::env::split_paths(path_env)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| program.to_path_buf())
}

/// Resolves `python3` to the real interpreter (skipping shims such as pyenv's, which
/// depend on the caller's environment and add start-up time), with its installation
/// prefixes (`sys.prefix`, `sys.base_prefix`: bound into sandboxes).
fn resolve_python(program: &Path, path_env: &str) -> (PathBuf, Vec<PathBuf>) {
    let p = resolve(program, path_env);
    let out = std::process::Command::new(&p)
        .args([
            "-c",
            "import sys; print(sys.executable); print(sys.prefix); print(sys.base_prefix)",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .unwrap_or_default();
    let mut lines = out.lines().map(|l| PathBuf::from(l.trim()));
    let exe = lines.next().filter(|p| p.is_file()).unwrap_or(p);
    let prefixes = lines.filter(|d| d.is_dir()).collect();
    (exe, prefixes)
}

#[cfg(test)]
mod launch_tests {
    use super::*;

    #[tokio::test]
    async fn closing_waits_for_starts_in_progress_and_refuses_later_ones() {
        let l = Arc::new(Launches::new());
        let guard = l.enter().unwrap();
        let closing = {
            let l = l.clone();
            tokio::spawn(async move { l.close().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !closing.is_finished(),
            "close waits for the start in progress"
        );
        assert!(l.is_closed());
        assert!(matches!(l.enter(), Err(RuntimeError::ShuttingDown)));
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close returns once no start is in progress")
            .unwrap();
        assert!(matches!(l.enter(), Err(RuntimeError::ShuttingDown)));
    }

    fn shared_spec() -> Arc<InstanceSpec> {
        let mut config = FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), "a.h");
        config.instance_concurrency = 4;
        Arc::new(InstanceSpec {
            function: FunctionName::parse("f").unwrap(),
            version: "$LATEST".into(),
            config,
            code_dir: "/code".into(),
            opt_dir: None,
        })
    }

    #[tokio::test]
    async fn a_burst_waits_for_the_start_in_progress_and_a_dropped_start_wakes_it() {
        let shares = Arc::new(Shares::default());
        let spec = shared_spec();
        // One core: the first request starts a process, the next ones wait for it.
        assert!(matches!(shares.claim(&spec, 1), Claim::Launch));
        let Claim::Wait(mut waiting) = shares.claim(&spec, 1) else {
            panic!("a second request while the first process starts should wait");
        };
        // Another spec (a new deploy) does not wait for this one's start.
        let mut other = (*spec).clone();
        other.config.memory_mb = 256;
        assert!(matches!(shares.claim(&Arc::new(other), 1), Claim::Launch));
        // The request that was starting it goes away mid-start: its claim ends with it, the
        // waiter wakes and may start one itself.
        drop(LaunchClaim {
            shares: &shares,
            spec: &spec,
            open: true,
        });
        tokio::time::timeout(Duration::from_secs(1), waiting.changed())
            .await
            .expect("the waiter is woken")
            .unwrap();
        assert!(matches!(shares.claim(&spec, 1), Claim::Launch));
        // A claim closed by a finished start leaves the count alone.
        drop(LaunchClaim {
            shares: &shares,
            spec: &spec,
            open: false,
        });
        assert!(matches!(shares.claim(&spec, 1), Claim::Wait(_)));
    }
}

#[cfg(test)]
mod mask_tests {
    use super::mask_secrets;

    #[test]
    fn masks_every_occurrence_longest_first() {
        let secrets = vec!["hunter22".to_string(), "hunter2".to_string()];
        assert_eq!(
            mask_secrets("pw=hunter22 again hunter2!", &secrets),
            "pw=**** again ****!"
        );
        assert_eq!(mask_secrets("nothing here", &secrets), "nothing here");
        assert_eq!(mask_secrets("x", &[String::new()]), "x");
    }
}

#[cfg(test)]
mod layer_env_tests {
    use super::*;

    fn spec(runtime: &str) -> InstanceSpec {
        InstanceSpec {
            function: FunctionName::parse("f").unwrap(),
            version: "$LATEST".into(),
            config: FunctionConfig::new(Runtime::parse(runtime).unwrap(), "app.handler"),
            code_dir: "/code".into(),
            opt_dir: Some("/data/code/opt/k".into()),
        }
    }

    fn env(runtime: &str) -> Vec<(&'static str, String)> {
        ProcessExecutor::layer_environment(&spec(runtime), "/opt", "/usr/bin:/bin")
    }

    #[test]
    fn lambdas_paths_per_runtime() {
        let py = env("python3.12");
        assert!(py.contains(&("PATH", "/usr/bin:/bin:/opt/bin".into())));
        assert!(py.contains(&("LD_LIBRARY_PATH", "/opt/lib".into())));
        assert!(py.contains(&(
            "PYTHONPATH",
            "/opt/python:/opt/python/lib/python3.12/site-packages".into()
        )));
        let node = env("nodejs22.x");
        assert!(node.contains(&(
            "NODE_PATH",
            "/opt/nodejs/node22/node_modules:/opt/nodejs/node_modules".into()
        )));
        assert!(!node.iter().any(|(k, _)| *k == "PYTHONPATH"));
        let custom = env("provided.al2023");
        assert_eq!(custom.len(), 2, "{custom:?}");
    }
}
