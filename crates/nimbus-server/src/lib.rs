//! Wiring of one Nimbus server: configuration → [`Server::bind`] (data dir, registry,
//! executor, pools, gateway, listener) → [`Server::run`] until a shutdown signal, then a
//! bounded drain of in-flight requests and a stop of every instance.
//!
//! Used by the `nimbus` binary (`serve` and `up`).

use anyhow::Context;
use nimbus_events::bus::EventBus;
use nimbus_events::engine::{AsyncEngine, EngineConfig};
use nimbus_events::mapping::{MappingConfig, MappingRunner};
use nimbus_events::scheduler::{MissedSchedules, Scheduler, SchedulerConfig, SystemClock};
use nimbus_gateway::{Gateway, GatewayConfig, GatewayInvoker, Pools};
use nimbus_pool::{PoolConfig, PoolManager};
pub use nimbus_runtime::StemConfig;
use nimbus_runtime::{
    HostExecutor, Isolation, LogCapture, LogReceiver, LogRecord, LogSink, LogStreamKind,
    MemoryLimits, ProcessExecutor, ProcessExecutorConfig,
};
use nimbus_store::BacklogLimit;
use nimbus_store::{CodeStore, LogEntry, LogLimits, LogStream, Store};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

mod cluster;
mod conn;
mod drain;
mod gauges;
mod health;
mod keys;
pub mod migrate;
mod notifications;
mod platform;
mod s3;
mod secrets;
mod slots;
mod stores;

pub use conn::ConnLimits;
pub use drain::Drain;
pub use health::HealthConfig;
pub use nimbus_gateway::AbuseLimits;
pub use nimbus_pool::ScaleRate;

#[cfg(feature = "tls")]
mod tls;

/// PEM files for HTTPS on the public listener (`--tls-cert/--tls-key`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Whether this build can serve HTTPS (the `tls` cargo feature).
pub const TLS_SUPPORTED: bool = cfg!(feature = "tls");

/// What the S3 buckets may hold in all ([`Config::s3_quota`]).
pub use nimbus_objects::Quota as S3Quota;

/// Server configuration (flags and environment are parsed by the binary).
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Serve `GET /metrics` without authentication on this address too (`--metrics-listen`).
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the S3-compatible object store on this address (`--s3-listen`).
    pub s3_listen: Option<SocketAddr>,
    /// What all buckets together may hold (`--s3-max-bytes`, `--s3-max-objects`).
    pub s3_quota: nimbus_objects::Quota,
    /// Functions with their own metric series; the rest share `function="_other"`.
    pub metrics_max_functions: usize,
    /// Record metrics and the per-minute history (`--metrics on`, the default). Off, the
    /// invocation path records nothing and `/metrics` and the history API say so.
    pub metrics: bool,
    /// Export trace spans over OTLP/HTTP to this base URL (`--otlp-endpoint`); without it,
    /// the standard `OTEL_EXPORTER_OTLP_*` variables decide, and tracing is off unless
    /// one names an endpoint.
    pub otlp_endpoint: Option<String>,
    /// Keep the stores in this PostgreSQL database instead of SQLite files in the data
    /// directory (`--database postgres://…`; docs/cluster.md).
    pub database: Option<String>,
    /// The cluster's NATS server (`--nats`), for change notices between nodes.
    pub nats: Option<String>,
    /// This node's id (`--node-id`); default: kept in `DATA_DIR/node-id`.
    pub node_id: Option<String>,
    pub data_dir: PathBuf,
    /// The secrets master key file (default `DATA_DIR/master.key`); `NIMBUS_MASTER_KEY`
    /// takes precedence.
    pub master_key_file: Option<PathBuf>,
    /// Idle instances stop after this long (scale to zero).
    pub idle_timeout: Duration,
    /// How long a request waits for a slot when its function is at its concurrency limit.
    pub queue_timeout: Duration,
    /// Invocations running at once across all functions; reservations are carved out of it.
    pub account_concurrency: u32,
    /// Requests that may wait per function, and in all, before throttling at once.
    pub queue_depth: usize,
    pub account_queue_depth: usize,
    /// How fast each function may start new instances.
    pub scale_rate: ScaleRate,
    /// Bytes of instance memory (each instance counted at its configured memory size) held
    /// at once; idle instances are stopped least recently used first to stay within it.
    /// `None`: unlimited. Default: 75% of the host's memory or of the server's cgroup
    /// limit, whichever is lower.
    pub instance_memory_budget: Option<u64>,
    /// Below this `MemAvailable` (bytes), idle instances are stopped before a start and by
    /// the reaper; 0: off. Default: 5% of the host's memory, at most 256 MiB.
    pub memory_floor: u64,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_grace: Duration,
    /// Asynchronous invocation: retries, circuit breaker, test-only time scale.
    pub events: EngineConfig,
    /// Schedule rules: firings missed while the server was down run once, or are skipped.
    pub missed_schedules: MissedSchedules,
    /// Serve HTTPS with these files instead of plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Connection limits: open connections, header read (and keep-alive idle) timeout.
    pub conn: ConnLimits,
    /// Request limits: header and body sizes, rate limits, uploads, body deadline.
    pub abuse: AbuseLimits,
    /// Bounds on stored asynchronous events (`--max-async-events`, `--max-async-bytes`).
    pub async_backlog: BacklogLimit,
    /// Bounds on queue messages (`--max-queue-messages`, `--max-queue-bytes`).
    pub queue_backlog: BacklogLimit,
    /// Bounds on captured output and the log store (`--max-log-bytes…`).
    pub logs: LogConfig,
    /// How instances are sandboxed (`--isolation`).
    pub isolation: Isolation,
    /// Prewarmed runtimes for cold starts (`--stem-cells`).
    pub stem_cells: StemConfig,
    /// Instances that may initialise at once (`--max-initializing`).
    pub max_initializing: usize,
    /// The instance gate for short CPU-bound invocations on a saturated host
    /// (`--instance-gate`; [`nimbus_pool::PoolConfig::instance_gate`]).
    pub instance_gate: bool,
    /// Processes and threads all instances together may have (`--max-pids`): the
    /// `pids.max` of the server's cgroup subtree. Default: half the host's
    /// ([`nimbus_runtime::default_max_pids`]).
    pub max_pids: u64,
    /// Require SigV4-signed requests from access keys on every API (`--auth on`, the
    /// default). Off is for local development and refused on a non-loopback listener.
    pub auth: bool,
    /// Thresholds of the health checks (`--min-free-disk-mb`, `--low-free-disk-mb`).
    pub health: HealthConfig,
    /// Bytes the response cache of function URLs and routes holds at most
    /// (`--cache-max-bytes`; 0: nothing is cached).
    pub cache_max_bytes: usize,
}

/// The default bound of each durable queue: 100,000 items per function or queue, 1 GiB
/// of payloads in all.
pub const DEFAULT_BACKLOG: BacklogLimit = BacklogLimit {
    per_owner: 100_000,
    total_bytes: 1 << 30,
};

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            metrics_listen: None,
            s3_listen: None,
            s3_quota: nimbus_objects::Quota::default(),
            otlp_endpoint: None,
            metrics_max_functions: nimbus_metrics::MetricsConfig::default().max_functions,
            metrics: true,
            data_dir: PathBuf::from(".nimbus"),
            database: None,
            nats: None,
            node_id: None,
            master_key_file: None,
            idle_timeout: Duration::from_secs(300),
            queue_timeout: Duration::from_secs(10),
            account_concurrency: PoolConfig::default().account_concurrency,
            queue_depth: PoolConfig::default().queue_depth,
            account_queue_depth: PoolConfig::default().account_queue_depth,
            scale_rate: ScaleRate::default(),
            instance_memory_budget: nimbus_runtime::default_instance_budget(),
            memory_floor: nimbus_runtime::default_memory_floor(),
            shutdown_grace: Duration::from_secs(30),
            events: EngineConfig::default(),
            missed_schedules: MissedSchedules::default(),
            tls: None,
            conn: ConnLimits::default(),
            abuse: AbuseLimits::default(),
            async_backlog: DEFAULT_BACKLOG,
            queue_backlog: DEFAULT_BACKLOG,
            logs: LogConfig::default(),
            isolation: Isolation::default(),
            stem_cells: StemConfig::default(),
            max_initializing: nimbus_pool::default_max_initializing(),
            instance_gate: false,
            max_pids: nimbus_runtime::default_max_pids(),
            auth: true,
            health: HealthConfig::default(),
            cache_max_bytes: 64 << 20,
        }
    }
}

/// Bounds on function output: what one invocation may log, what the server holds in
/// memory on its way to the store, and what the store keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub capture: LogCapture,
    /// Per-function bounds, and the total; `total_bytes` of `None`: the default, 1 GiB or a
    /// tenth of the data dir's file system, whichever is smaller.
    pub lines_per_function: usize,
    pub bytes_per_function: u64,
    pub total_bytes: Option<u64>,
}

impl Default for LogConfig {
    fn default() -> Self {
        let store = LogLimits::default();
        Self {
            capture: LogCapture::default(),
            lines_per_function: store.lines_per_function,
            bytes_per_function: store.bytes_per_function,
            total_bytes: None,
        }
    }
}

impl LogConfig {
    /// The store's limits for a data dir on a file system of `fs_bytes` (when known).
    pub fn store_limits(&self, fs_bytes: Option<u64>) -> LogLimits {
        let default_total = LogLimits::default().total_bytes;
        let total = self.total_bytes.unwrap_or_else(|| {
            fs_bytes.map_or(default_total, |fs| default_total.min(fs / 10).max(16 << 20))
        });
        LogLimits {
            lines_per_function: self.lines_per_function.max(1),
            bytes_per_function: self.bytes_per_function.max(1),
            total_bytes: total.max(1 << 20),
        }
    }
}

/// The size of the file system holding `path`.
fn file_system_bytes(path: &Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    Some(st.blocks() as u64 * st.fragment_size() as u64)
}

/// The admin key a first start with auth on created, shown once.
#[derive(Clone)]
pub struct BootstrapKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `DATA_DIR/credentials` (mode 0600), which the local CLI reads.
    pub file: PathBuf,
}

impl std::fmt::Debug for BootstrapKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BootstrapKey({}, {})",
            self.access_key_id,
            self.file.display()
        )
    }
}

/// A server bound to its listener, ready to run.
pub struct Server {
    config: Config,
    listener: TcpListener,
    addr: SocketAddr,
    /// The metrics listener (`--metrics-listen`) and its address.
    metrics_listener: Option<(tokio::net::TcpListener, SocketAddr)>,
    /// The S3 listener (`--s3-listen`).
    s3: Option<s3::S3Listener>,
    metrics: Arc<nimbus_metrics::Metrics>,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
    gateway: Arc<Gateway>,
    pools: Arc<Pools>,
    events: Arc<AsyncEngine>,
    mappings: Arc<MappingRunner>,
    /// External event sources (PostgreSQL, NATS, RabbitMQ, Redis, MQTT).
    sources: Arc<nimbus_sources::SourceRunner>,
    /// Delivers the outbox of external targets.
    targets: Arc<nimbus_sources::targets::TargetRunner>,
    scheduler: Arc<Scheduler>,
    /// The event bus (bucket notifications are delivered through it).
    bus: Arc<EventBus>,
    /// The workflow executor (Step Functions).
    workflows: nimbus_workflows::Workflows,
    memory: MemoryLimits,
    log_task: tokio::task::JoinHandle<()>,
    log_maintenance: tokio::task::JoinHandle<()>,
    /// Runs the health checks once [`Server::run`] starts.
    health: health::Checker,
    auth: Arc<nimbus_gateway::Auth>,
    bootstrap: Option<BootstrapKey>,
    /// This node in its cluster.
    node: Arc<cluster::Node>,
}

impl Server {
    /// Opens the data dir and the registry, prepares the executor and binds the listener.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        // Certificates first: a bad file is reported before anything is opened or bound.
        #[cfg(feature = "tls")]
        let tls = match &config.tls {
            Some(f) => Some(tls::server_config(&f.cert, &f.key)?),
            None => None,
        };
        #[cfg(not(feature = "tls"))]
        if config.tls.is_some() {
            anyhow::bail!("--tls-cert/--tls-key: this nimbus was built without the `tls` feature");
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let data_dir = config
            .data_dir
            .canonicalize()
            .context("cannot resolve data dir")?;
        let node_id = nimbus_cluster::NodeId::resolve(&data_dir, config.node_id.as_deref())?;
        let log_limits = config.logs.store_limits(file_system_bytes(&data_dir));
        let backend = stores::Backend::open(config.database.as_deref())?;
        let store = backend.registry(&data_dir, log_limits)?;
        info!(stores = %backend.describe(&data_dir), "stores opened");
        let code: Arc<CodeStore> = Arc::new(backend.code(&data_dir)?);
        if !config.auth && !config.listen.ip().is_loopback() {
            anyhow::bail!(
                "--auth off is for local development only: refusing to serve {} (not a loopback address) \
                 without authentication; use --auth on, or --listen 127.0.0.1:PORT",
                config.listen
            );
        }
        let (secret_store, key_file, node_key) =
            secrets::open(&data_dir, config.master_key_file.as_deref(), &backend)?;
        let (auth, bootstrap) = keys::open(&data_dir, secret_store.clone(), config.auth)?;

        let (sink, rx) = LogSink::new(config.logs.capture);
        let memory = MemoryLimits::detect(Some(config.max_pids));
        match &memory {
            MemoryLimits::Unavailable { reason } => warn!("memory limits: none ({reason})"),
            m => info!("memory limits: {}", m.describe()),
        }
        match memory.pids_budget() {
            Some(max) => info!(
                max_pids = max,
                per_instance = nimbus_runtime::PIDS_MAX,
                "process budget: all instances together, and each instance"
            ),
            None if !memory.has_pids() => warn!(
                "no pids cgroup controller: the process budget (--max-pids {}) and each instance's pids.max are NOT enforced; only RLIMIT_NPROC bounds an instance's processes, and functions together can use up the host's PIDs",
                config.max_pids
            ),
            // The reason was logged where setting it failed.
            None => {}
        }
        let exec = ProcessExecutor::new(
            ProcessExecutorConfig {
                runtimes_dir: data_dir.join("runtimes"),
                node: std::env::var_os("NIMBUS_NODE")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "node".into()),
                python: std::env::var_os("NIMBUS_PYTHON")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "python3".into()),
                java: std::env::var_os("NIMBUS_JAVA")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| "java".into()),
                memory: memory.clone(),
                isolation: config.isolation,
                stem_cells: config.stem_cells.clone(),
            },
            sink,
        )
        .context("cannot prepare the process executor")?;
        let isolation = serde_json::to_value(exec.isolation()).unwrap_or_default();
        let mut private_limits = config.conn.clone();
        private_limits.max_header_bytes = config.abuse.max_header_bytes;
        private_limits.max_headers = config.abuse.max_headers;
        let link = platform::Link::new(auth.clone(), private_limits);
        let exec = Arc::new(
            exec.with_secrets(Arc::new(secrets::Source(secret_store.clone())))
                .with_platform(link.clone()),
        );
        exec.spawn_stem_cells();
        let components = component_executor(&data_dir, exec.log_sink().clone(), &secret_store)?;
        let pools = PoolManager::new(
            Arc::new(HostExecutor::new(exec, components)),
            PoolConfig {
                idle_timeout: config.idle_timeout,
                queue_timeout: config.queue_timeout,
                queue_depth: config.queue_depth,
                account_queue_depth: config.account_queue_depth,
                account_concurrency: config.account_concurrency,
                scale_rate: config.scale_rate,
                max_initializing: config.max_initializing,
                instance_gate: config.instance_gate,
                memory: nimbus_pool::MemoryPolicy {
                    budget: config.instance_memory_budget,
                    floor: config.memory_floor,
                    ..Default::default()
                },
            },
        );
        info!(
            budget_mb = config.instance_memory_budget.map(|b| b >> 20),
            floor_mb = config.memory_floor >> 20,
            "instance memory budget (none: unlimited) and MemAvailable floor"
        );
        let listener = conn::bind(config.listen).with_context(|| {
            format!(
                "cannot listen on {} (is another server running? use --listen)",
                config.listen
            )
        })?;
        let addr = listener.local_addr()?;
        if !config.auth {
            warn!("authentication is OFF (--auth off): anyone who can reach {addr} can deploy, invoke and read everything; for local development only");
        }
        let queue = backend.events(&data_dir, config.async_backlog, &node_id)?;
        let events = AsyncEngine::new(queue, config.events.clone());
        if !config.metrics && config.metrics_listen.is_some() {
            anyhow::bail!("--metrics-listen needs metrics on (it is set with --metrics off)");
        }
        let metrics = nimbus_metrics::Metrics::new(nimbus_metrics::MetricsConfig {
            max_functions: config.metrics_max_functions,
            enabled: config.metrics,
        });
        if !config.metrics {
            info!("metrics are off (--metrics off): nothing is recorded, /metrics answers 404");
        }
        events.set_metrics(metrics.clone());
        let tracer = match nimbus_trace::TraceConfig::from_env(config.otlp_endpoint.as_deref())? {
            Some(cfg) => {
                let m = metrics.clone();
                nimbus_trace::Tracer::start(&cfg, Arc::new(move |n| m.trace_spans_dropped(n)))?
            }
            None => nimbus_trace::Tracer::off(),
        };
        events.set_tracer(tracer.clone());
        let metrics_listener = match config.metrics_listen {
            Some(a) => {
                let l = tokio::net::TcpListener::bind(a)
                    .await
                    .with_context(|| format!("cannot listen on {a} (--metrics-listen)"))?;
                let bound = l.local_addr()?;
                if !bound.ip().is_loopback() {
                    warn!("metrics are served WITHOUT authentication on {bound}, a non-loopback address (--metrics-listen)");
                }
                info!(%bound, "metrics listener: GET /metrics");
                Some((l, bound))
            }
            None => None,
        };
        let gateway = Gateway::new(
            store.clone(),
            code,
            pools.clone(),
            events.clone(),
            GatewayConfig {
                public_url: format!("{}://{addr}", scheme(&config)),
                memory_limits: memory.describe().to_string(),
                isolation: isolation.clone(),
                metrics: metrics.clone(),
                tracer: tracer.clone(),
            },
        )
        .map_err(|e| anyhow::anyhow!("cannot load routes: {e}"))?;
        let queues = backend.queues(&data_dir, config.queue_backlog)?;
        let s3 = match config.s3_listen {
            Some(a) => Some(s3::bind(
                a,
                &data_dir,
                config.s3_quota,
                config.auth.then(|| auth.clone()),
                notifications::Targets {
                    registry: store.clone(),
                    queues: queues.clone(),
                },
                &backend,
            )?),
            None => None,
        };
        if let Some(s) = &s3 {
            link.set_objects(s.objects().clone());
        }
        let gateway = match &s3 {
            Some(l) => gateway.with_objects(l.objects().clone()),
            None => gateway,
        };
        if config.metrics {
            gauges::register(&metrics, &pools, &events, queues.clone(), data_dir.clone());
        }
        let mappings = MappingRunner::new(queues, MappingConfig::default());
        mappings.set_tracer(tracer.clone());
        mappings.set_metrics(metrics.clone());
        let gateway = gateway.with_queues(mappings.clone());
        events.set_queues(mappings.clone());
        let bus = EventBus::new(backend.bus(&data_dir, unix_ms())?, events.clone());
        bus.set_queues(mappings.clone());
        let gateway = gateway.with_bus(bus.clone());
        let gateway = gateway.with_history(nimbus_gateway::History::new(
            backend.history(&data_dir)?,
            history_minute_ms(),
        ));
        let gateway = gateway.with_limits(config.abuse.clone());
        let gateway = gateway.with_response_cache(config.cache_max_bytes);
        let gateway = gateway.with_auth(auth.clone());
        // External event sources: their credentials come from the secrets store; a batch
        // whose retries are exhausted goes to its on-failure destination through the bus.
        let source_store = backend.sources(&data_dir)?;
        let source_secrets = secret_store.clone();
        let sources = nimbus_sources::SourceRunner::new(
            source_store.clone(),
            Arc::new(move |name: &str| source_secrets.get(name).map_err(|e| e.to_string())),
            nimbus_sources::RunnerConfig::default(),
        );
        sources.set_tracer(tracer.clone());
        sources.set_metrics(metrics.clone());
        sources.set_failure_sink(bus.clone());
        let gateway = gateway.with_sources(sources.clone());
        // Publishing back: destinations and bus targets on the brokers, through an outbox.
        let target_secrets = secret_store.clone();
        let targets = nimbus_sources::targets::TargetRunner::new(
            source_store,
            Arc::new(move |name: &str| target_secrets.get(name).map_err(|e| e.to_string())),
        );
        targets.set_metrics(metrics.clone());
        events.set_external(targets.clone());
        let gateway = gateway.with_targets(targets.clone());
        let gateway = gateway.with_secrets(nimbus_gateway::Secrets {
            store: secret_store.clone(),
            key_file: key_file.clone(),
        });
        let scheduler = Scheduler::new(
            bus.clone(),
            SchedulerConfig {
                missed: config.missed_schedules,
                time_scale: config.events.time_scale,
            },
            Arc::new(SystemClock),
        );
        // Workflows: state machines and executions in flows.db, Tasks through the gateway.
        let workflows = nimbus_workflows::Workflows::new(
            backend.flows(&data_dir)?,
            Arc::new(nimbus_gateway::GatewayTasks(gateway.clone())),
            nimbus_workflows::Config {
                time_scale: config.events.time_scale,
                ..Default::default()
            },
        );
        let gateway = gateway.with_workflows(workflows.clone());
        events.set_workflows(Arc::new(nimbus_gateway::FlowStarter(workflows.clone())));
        let monitor = nimbus_gateway::HealthMonitor::new(config.health.interval);
        let gateway = gateway.with_health(monitor.clone());
        // Instances' private AWS endpoints serve the same router as the public listener (set
        // before anything below can start an instance: provisioned concurrency).
        link.set_main(nimbus_gateway::router(gateway.clone()));
        // This node in its cluster (alone on SQLite): membership, coherent caches.
        let node = cluster::Node::start(
            &backend,
            &data_dir,
            node_id,
            format!("{}://{addr}", scheme(&config)),
            config.nats.as_deref(),
            &gateway,
            pools.clone(),
            events.queue().clone(),
            node_key,
        )
        .await?;
        let gateway = gateway.with_cluster(node.clone());
        if let Some(changes) = &node.changes {
            secrets::follow_rotations(changes, secret_store, key_file, gateway.clone());
        }
        // One node at a time runs each source mapping and delivers each target's outbox.
        if let Some(leases) = &node.leases {
            sources.set_leases(leases.clone());
            targets.set_leases(leases.clone());
        }
        let health = health::Checker {
            cfg: config.health,
            data_dir: data_dir.clone(),
            isolation,
            pools: pools.clone(),
            events: events.clone(),
            scheduler: scheduler.clone(),
            mappings: mappings.clone(),
            monitor,
            node: node.clone(),
        };
        // Code packages nothing refers to any more (deletes before a crash, a deploy killed
        // before its commit) are removed in the background.
        {
            let gw = gateway.clone();
            tokio::spawn(async move { gw.collect_code_at_start().await });
        }
        // Provisioned concurrency comes back after a restart (started in the background).
        {
            let gw = gateway.clone();
            tokio::spawn(async move {
                if let Err(e) = gw.start_provisioning().await {
                    tracing::error!(error = %e, "cannot restore provisioned concurrency");
                }
            });
        }
        let log_task = tokio::spawn(store_logs(rx, store.clone()));
        let log_maintenance = tokio::spawn(maintain_logs(store));
        Ok(Server {
            config,
            listener,
            addr,
            metrics_listener,
            s3,
            metrics,
            #[cfg(feature = "tls")]
            tls,
            gateway,
            pools,
            events,
            mappings,
            sources,
            targets,
            scheduler,
            bus,
            workflows,
            memory,
            log_task,
            log_maintenance,
            health,
            auth,
            bootstrap,
            node,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's address (`--metrics-listen`), if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().map(|(_, a)| *a)
    }

    /// The S3 listener's address (`--s3-listen`), if there is one.
    pub fn s3_addr(&self) -> Option<SocketAddr> {
        self.s3.as_ref().map(|s| s.addr())
    }

    /// The metrics registry every surface records into.
    pub fn metrics(&self) -> &Arc<nimbus_metrics::Metrics> {
        &self.metrics
    }

    /// The admin key this start created (first start with auth on and no keys), to be
    /// shown to the operator once; it is also in `DATA_DIR/credentials`.
    pub fn bootstrap_key(&self) -> Option<&BootstrapKey> {
        self.bootstrap.as_ref()
    }

    /// Whether API requests must be signed.
    pub fn auth_enabled(&self) -> bool {
        self.config.auth
    }

    /// Credentials for a client inside this process (`nimbus up`): an admin key held in
    /// memory only, gone when the server stops. `None` with auth off.
    pub fn local_credentials(&self) -> Option<(String, String)> {
        self.config.auth.then(|| {
            self.auth
                .ephemeral_key("nimbus-up", &nimbus_auth::Policy::admin())
        })
    }

    /// The public base URL: `https://ADDR` with TLS, else `http://ADDR`.
    pub fn public_url(&self) -> String {
        format!("{}://{}", scheme(&self.config), self.addr)
    }

    /// Drains this node's background work on demand (`nimbus cluster drain`): see
    /// [`Drain::drain`]. The node keeps serving HTTP.
    pub fn drain_handle(&self) -> Drain {
        Drain {
            events: self.events.clone(),
            mappings: self.mappings.clone(),
            sources: self.sources.clone(),
            targets: self.targets.clone(),
            scheduler: self.scheduler.clone(),
            workflows: self.workflows.clone(),
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish and drains the background work (both bounded by the shutdown grace), stops
    /// every instance and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let reaper = self.pools.spawn_reaper();
        let background = self.drain_handle();
        let delivery = self
            .events
            .spawn(Arc::new(GatewayInvoker(self.gateway.clone())));
        let schedules = self.scheduler.spawn();
        let pollers = self
            .mappings
            .spawn(Arc::new(GatewayInvoker(self.gateway.clone())));
        let source_runner = self
            .sources
            .spawn(Arc::new(GatewayInvoker(self.gateway.clone())));
        let target_runner = self.targets.spawn();
        let flows = {
            let wf = self.workflows.clone();
            tokio::spawn(async move { wf.run(std::future::pending()).await })
        };
        let health = tokio::spawn(self.health.run());
        let history = tokio::spawn(self.gateway.clone().run_history());
        let alarms = tokio::spawn(self.gateway.clone().run_alarms());
        let mut cluster_tasks = self.node.spawn(&self.gateway);
        // `nimbus cluster drain NODE` (asked through any node) drains this one's
        // background work; it keeps serving HTTP until it is stopped.
        {
            let (asked, background) = (self.node.drain.clone(), background.clone());
            let grace = self.config.shutdown_grace;
            cluster_tasks.push(tokio::spawn(async move {
                asked.notified().await;
                background.drain(grace).await;
            }));
        }
        let router = cluster::announce_changes(
            nimbus_gateway::router(self.gateway.clone()),
            self.node.changes.clone(),
        );
        // Scrapes are tiny and stateless: the metrics listener just stops with the server.
        let metrics_task = self.metrics_listener.map(|(l, _)| {
            let router = nimbus_gateway::metrics_router(self.metrics.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(l, router).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            })
        });
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        // The S3 listener stops accepting with the public one.
        let (s3_stop_tx, mut s3_stop_rx) = tokio::sync::watch::channel(false);
        let s3_tasks = self.s3.map(|s| {
            let mut limits = self.config.conn.clone();
            limits.max_header_bytes = self.config.abuse.max_header_bytes;
            limits.max_headers = self.config.abuse.max_headers;
            s.spawn(limits, self.bus.clone(), self.metrics.clone(), async move {
                let _ = s3_stop_rx.wait_for(|stop| *stop).await;
            })
        });
        let pools = self.pools.clone();
        let gateway = self.gateway.clone();
        // The background runners drain while in-flight requests finish, within the same
        // grace: no new claims, claims not started given back, work in progress finishes.
        let grace = self.config.shutdown_grace;
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<bool>();
        let shutdown = async move {
            shutdown.await;
            info!("shutting down: no new connections, waiting for in-flight requests");
            tokio::spawn(async move {
                let _ = drained_tx.send(background.drain(grace).await);
            });
            gateway.end_log_tails();
            // Background starts stop at once (requests in flight may still cold-start).
            pools.stop_provisioning();
            pools.executor().process().stop_refills();
            let _ = s3_stop_tx.send(true);
            let _ = stopping_tx.send(());
        };
        let listener = self.listener;
        #[cfg(feature = "tls")]
        let tls = self.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        #[cfg(not(feature = "tls"))]
        let tls = None;
        let mut conn = self.config.conn.clone();
        conn.max_header_bytes = self.config.abuse.max_header_bytes;
        conn.max_headers = self.config.abuse.max_headers;
        let serve = tokio::spawn(conn::serve(listener, tls, router, conn, shutdown));
        // Once shutdown starts, in-flight requests get the grace period, no more.
        let bounded = async {
            let _ = stopping_rx.await;
            tokio::time::sleep(grace).await;
        };
        let mut serve = serve;
        tokio::select! {
            r = &mut serve => r.context("server task failed")?.context("server failed")?,
            _ = bounded => {
                warn!("in-flight requests did not finish within {grace:?}; stopping anyway");
                serve.abort();
            }
        }
        if let Some((serve_s3, background)) = s3_tasks {
            background.abort();
            // In-flight S3 requests had the same grace as the public listener's.
            if tokio::time::timeout(grace, serve_s3).await.is_err() {
                warn!("in-flight S3 requests did not finish within {grace:?}");
            }
        }
        reaper.abort();
        health.abort();
        alarms.abort();
        if let Some(t) = metrics_task {
            t.abort();
        }
        // The drain had the same grace (it started with the shutdown).
        let drained = matches!(tokio::time::timeout(grace, drained_rx).await, Ok(Ok(true)));
        if !drained {
            // Async deliveries still running are cut short by the instances' stop below:
            // their events are given back afterwards instead of counted as failures.
            self.events.cut_short();
        }
        // Events still pending stay in the queue for the next start (or another node).
        self.scheduler.stop();
        schedules.abort();
        self.events.stop();
        delivery.abort();
        self.mappings.stop();
        pollers.abort();
        self.sources.stop();
        source_runner.abort();
        self.targets.stop();
        target_runner.abort();
        // Workflow steps still running hand their claims back (re-run at the next start).
        self.workflows.shutdown();
        flows.abort();
        // No instance may start once the cgroups go: the pool refuses cold starts and
        // stops its instances, then the executor refuses every start and waits for those
        // in progress, and stops the stem cells.
        self.pools.stop_provisioning();
        self.pools.executor().process().stop_refills();
        self.pools.shutdown().await;
        self.pools.executor().process().shutdown().await;
        if !drained {
            // Claimable at once by another node, or by the next start.
            self.events.give_back_held().await;
        }
        let memory = self.memory.clone();
        let _ = tokio::task::spawn_blocking(move || memory.remove_root()).await;
        // The minute in progress reaches the history store.
        history.abort();
        self.gateway.flush_history().await;
        // Let the last log lines reach the store, and the last spans their collector.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.events.tracer().flush(Duration::from_secs(2)).await;
        self.log_task.abort();
        self.log_maintenance.abort();
        for t in cluster_tasks {
            t.abort();
        }
        let node = self.node.clone();
        let _ = tokio::task::spawn_blocking(move || node.leave()).await;
        info!("stopped");
        Ok(())
    }
}

fn scheme(config: &Config) -> &'static str {
    if config.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

/// Test hook: `NIMBUS_TEST_MINUTE_MS=N` in the server's environment makes the history's
/// "minute" (and so alarm periods and the retention) N ms long. Never a user setting.
pub const TEST_MINUTE_ENV: &str = "NIMBUS_TEST_MINUTE_MS";

fn history_minute_ms() -> i64 {
    std::env::var(TEST_MINUTE_ENV)
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|v| *v >= 100)
        .unwrap_or(60_000)
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Under load, log lines are committed at most once per this interval (each commit is a
/// SQLite transaction with its WAL write: committing every few lines cost about a third of
/// the server's CPU on the warm path). A line arriving after a quiet period is committed
/// at once, so a lone invocation's lines are readable after at most this long.
const LOG_COMMIT_INTERVAL: Duration = Duration::from_millis(25);
/// Most lines per commit.
const LOG_BATCH_MAX: usize = 4096;
/// Most bytes per commit (a larger batch is committed in parts): one transaction's WAL
/// growth, which the log store's bound must leave room for.
const LOG_COMMIT_BYTES: usize = 4 << 20;
/// How often the log store is asked to give freed space back to the file system.
const LOG_MAINTENANCE_INTERVAL: Duration = Duration::from_secs(2);

/// Moves captured log lines into the store in batches.
async fn store_logs(mut rx: LogReceiver, store: Arc<dyn Store>) {
    let mut batch = Vec::with_capacity(512);
    let mut last_commit: Option<tokio::time::Instant> = None;
    while rx.recv_many(&mut batch, LOG_BATCH_MAX).await > 0 {
        // Lines keep coming: gather them until the interval since the last commit is over.
        if let Some(due) = last_commit.map(|t| t + LOG_COMMIT_INTERVAL) {
            if batch.len() < LOG_BATCH_MAX && tokio::time::Instant::now() < due {
                tokio::time::sleep_until(due).await;
                while batch.len() < LOG_BATCH_MAX {
                    match rx.try_recv() {
                        Some(r) => batch.push(r),
                        None => break,
                    }
                }
            }
        }
        while !batch.is_empty() {
            let mut bytes = 0;
            let n = batch
                .iter()
                .take_while(|r| {
                    bytes += r.cost();
                    bytes <= LOG_COMMIT_BYTES
                })
                .count()
                .max(1);
            let cost: usize = batch[..n].iter().map(LogRecord::cost).sum();
            let entries: Vec<LogEntry> = batch.drain(..n).map(entry).collect();
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.append_logs(&entries)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!("cannot store log lines: {e}"),
                Err(e) => warn!("log writer failed: {e}"),
            }
            rx.release(cost);
        }
        last_commit = Some(tokio::time::Instant::now());
    }
}

fn entry(r: LogRecord) -> LogEntry {
    LogEntry {
        seq: 0,
        function: r.function,
        ts_ms: r.ts_ms,
        request_id: r.request_id,
        stream: match r.stream {
            LogStreamKind::Stdout => LogStream::Stdout,
            LogStreamKind::Stderr => LogStream::Stderr,
            LogStreamKind::Platform => LogStream::Platform,
        },
        line: r.line,
        level: r.level,
        trace_id: r.trace_id,
    }
}

/// Gives the space of deleted and pruned log lines back to the file system, off the
/// request path.
async fn maintain_logs(store: Arc<dyn Store>) {
    let mut tick = tokio::time::interval(LOG_MAINTENANCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.maintain_logs()).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => debug!(bytes = n, "log store compacted"),
            Ok(Err(e)) => warn!("cannot compact the log store: {e}"),
            Err(e) => warn!("log store maintenance failed: {e}"),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How the server writes its own log lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields.message` and the
    /// event's other fields, `span`/`spans`), for Vector, Loki, Fluent Bit and friends.
    Json,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
}

/// The wasm executor (cargo feature `wasm`): WebAssembly component functions run
/// in-process; compiled components are kept in `<data>/wasm-cache`.
#[cfg(feature = "wasm")]
fn component_executor(
    data_dir: &std::path::Path,
    sink: nimbus_runtime::LogSink,
    secrets: &Arc<nimbus_store::SecretStore>,
) -> anyhow::Result<Option<Arc<dyn nimbus_runtime::ComponentExecutor>>> {
    let exec = nimbus_wasm::WasmExecutor::new(
        nimbus_wasm::WasmConfig::new(data_dir.join("wasm-cache")),
        sink,
        Some(Arc::new(secrets::Source(secrets.clone()))),
    )
    .context("cannot prepare the wasm executor")?;
    Ok(Some(Arc::new(exec)))
}

/// Built without the `wasm` feature: component functions fail to start, saying why.
#[cfg(not(feature = "wasm"))]
fn component_executor(
    _data_dir: &std::path::Path,
    _sink: nimbus_runtime::LogSink,
    _secrets: &Arc<nimbus_store::SecretStore>,
) -> anyhow::Result<Option<Arc<dyn nimbus_runtime::ComponentExecutor>>> {
    tracing::warn!("built without the wasm executor: functions of the runtimes wasi-http and wasm-event cannot run (cargo feature `wasm`)");
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(i: usize) -> LogRecord {
        LogRecord {
            function: "f".into(),
            request_id: Some(format!("rid-{i}")),
            stream: LogStreamKind::Stdout,
            ts_ms: i as i64,
            line: format!("line {i}"),
            level: None,
            trace_id: None,
        }
    }

    /// Waits (polling) until the store holds `n` lines of `f`; returns them.
    async fn stored(store: &Arc<dyn Store>, n: usize) -> Vec<LogEntry> {
        let name = nimbus_core::FunctionName::parse("f").unwrap();
        let poll = async {
            loop {
                let lines = store.logs(&name, 0, 100_000).unwrap();
                if lines.len() >= n {
                    return lines;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), poll)
            .await
            .unwrap_or_else(|_| panic!("{n} log lines were never stored"))
    }

    #[tokio::test]
    async fn log_writer_stores_every_line_of_a_burst_and_after_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(nimbus_store::SqliteStore::open(dir.path()).unwrap());
        let (sink, rx) = LogSink::new(LogCapture::default());
        let writer = tokio::spawn(store_logs(rx, store.clone()));
        // More than one batch at once: several commits, nothing lost or reordered.
        let burst = LOG_BATCH_MAX + 10;
        for i in 0..burst {
            sink.send(record(i));
        }
        stored(&store, burst).await;
        // A lone line after the burst is stored too (it waits for the commit interval).
        sink.send(record(burst));
        let lines = stored(&store, burst + 1).await;
        assert_eq!(lines.len(), burst + 1);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(l.line, format!("line {i}"));
            assert_eq!(l.request_id.as_deref(), Some(format!("rid-{i}").as_str()));
        }
        assert_eq!(sink.dropped(), 0);
        // The writer ends once every sink is gone.
        drop(sink);
        writer.await.unwrap();
    }
}
