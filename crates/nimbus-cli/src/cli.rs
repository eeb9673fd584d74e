//! Command-line syntax: every subcommand, flag and value parser of `nimbus`.

use clap::{Args, Parser, Subcommand};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:8080";

/// Nimbus: a self-hosted serverless platform.
#[derive(Debug, Parser)]
#[command(name = "nimbus", version, about, propagate_version = true)]
pub struct Cli {
    /// URL of the nimbus server to talk to.
    #[arg(long, global = true, env = "NIMBUS_ENDPOINT", default_value = DEFAULT_ENDPOINT, value_name = "URL")]
    pub endpoint: String,
    /// PEM file of a CA (or certificate) to trust for an https:// endpoint, besides the public roots.
    #[arg(long, global = true, env = "NIMBUS_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the nimbus server.
    Serve(ServerArgs),
    /// Check this host the way `serve` will use it: sandbox layers, cgroups, interpreters,
    /// data dir, listen port; prints what is missing and the command that fixes it.
    Doctor(DoctorArgs),
    /// Run a local server for the project in DIR, deploy its functions and redeploy on change;
    /// the S3 API is served too (on `--s3-listen`, else a free loopback port).
    Up(UpArgs),
    /// Deploy the functions of DIR/nimbus.toml, or one function from a directory or .zip.
    Deploy(DeployArgs),
    /// Invoke a function and print its response.
    Invoke(InvokeArgs),
    /// List deployed functions.
    Ls,
    /// Remove a function and all its versions.
    Rm(RmArgs),
    /// Show a function's logs.
    Logs(LogsArgs),
    /// Show a function's asynchronous events: pending, retrying, succeeded, dead-lettered.
    Events(EventsArgs),
    /// Built-in queues: create, send, receive, delete, purge, redrive, stats; map a queue to a
    /// function.
    #[command(visible_alias = "queues")]
    Queue(QueueArgs),
    /// External event sources: PostgreSQL changes, NATS, RabbitMQ, Redis Streams and MQTT
    /// mapped to functions; their state (connected, lagging, failing and why).
    #[command(visible_alias = "source")]
    Sources(SourcesArgs),
    /// External targets: NATS subjects, RabbitMQ exchanges, Redis streams and MQTT topics
    /// that destinations and bus rules publish to.
    #[command(visible_alias = "target")]
    Targets(TargetsArgs),
    /// Event buses: send events (PutEvents), list and write rules (patterns and schedules).
    Bus(BusArgs),
    /// Secrets, encrypted at rest: set (value from stdin), list, remove, rotate the master key.
    Secret(SecretArgs),
    /// Access keys (SigV4) and their policies: create (secret shown once), list, remove.
    Keys(KeysArgs),
    /// The nodes of the cluster (docs/cluster.md): status, drain one.
    Cluster(ClusterArgs),
    /// Provisioned concurrency: keep N initialised instances of a version or alias.
    Provisioned(ProvisionedArgs),
    /// Lambda layers: publish a directory as a new layer version, list layers.
    Layer(LayerArgs),
    /// A function's per-minute history: totals and a sparkline per series.
    Stats(StatsArgs),
    /// A live view of the functions sorted by load, refreshed each second (`q` quits); one
    /// snapshot when stdout is not a terminal.
    Top(TopArgs),
    /// Alarms on a function's metrics: put (create or replace), list with states, remove.
    Alarm(AlarmArgs),
    /// Workflows (Step Functions state machines): list machines and executions, start an
    /// execution (and wait for it), describe it, show its history as a tree, stop it.
    #[command(visible_alias = "flow")]
    Flows(FlowsArgs),
    /// Move a single node's data into a cluster: copies the data dir of a STOPPED server
    /// (functions, versions, events, queues, secrets, objects, workflows, …, code and
    /// object bytes) into an empty PostgreSQL database (docs/cluster.md).
    Migrate(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data dir of the single node; its server must be stopped.
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// The cluster's database, holding no Nimbus data yet:
    /// postgres://USER[:PASSWORD]@HOST:PORT/DATABASE.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The master key file the node used [default: FROM/master.key]. NIMBUS_MASTER_KEY
    /// (the key itself) takes precedence, as for `serve`.
    #[arg(long, env = "NIMBUS_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct FlowsArgs {
    #[command(subcommand)]
    pub command: FlowsCommand,
}

/// Executions are named by ARN, as MACHINE/EXECUTION, or by a name only one machine uses.
#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// List the state machines, or (with NAME) the executions of machine NAME.
    Ls {
        name: Option<String>,
        /// Only executions in this status: RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED.
        #[arg(long, value_name = "STATUS", requires = "name")]
        status: Option<String>,
    },
    /// Start an execution of state machine NAME and print its ARN.
    Start {
        #[arg(value_name = "NAME")]
        machine: String,
        /// The execution's input: JSON text, or @FILE (default `{}`).
        #[arg(long, value_name = "JSON|@FILE")]
        input: Option<String>,
        /// The execution's name (default: a new UUID).
        #[arg(long = "name", value_name = "EXEC")]
        exec_name: Option<String>,
        /// Wait for the execution to end and print its output (exit status 1 if it failed).
        #[arg(long)]
        wait: bool,
    },
    /// Show an execution: status, times, input, output or error.
    Describe {
        #[arg(value_name = "EXECUTION")]
        execution: String,
    },
    /// An execution's history: one line per event, Parallel branches and Map iterations
    /// indented.
    History {
        #[arg(value_name = "EXECUTION")]
        execution: String,
    },
    /// Stop a running execution (it ends ABORTED).
    Stop {
        #[arg(value_name = "EXECUTION")]
        execution: String,
        /// The error recorded.
        #[arg(long)]
        error: Option<String>,
        /// The cause recorded.
        #[arg(long)]
        cause: Option<String>,
    },
    /// Remove state machine NAME (a later `nimbus deploy` creates it again).
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    pub name: String,
    /// The window: a duration (15m, 1h, 24h, 14d) or an RFC 3339 time.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Seconds per point, a multiple of 60 (default: 60, or larger to keep 60 points).
    #[arg(long, value_name = "SECONDS")]
    pub period: Option<u32>,
}

#[derive(Debug, Args)]
pub struct TopArgs {
    /// The window the totals cover.
    #[arg(long, default_value = "5m")]
    pub since: String,
}

#[derive(Debug, Args)]
pub struct AlarmArgs {
    #[command(subcommand)]
    pub command: AlarmCommand,
}

#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// Create or replace alarm NAME on a metric of one function.
    Put {
        name: String,
        /// The function watched.
        #[arg(long = "function", value_name = "NAME")]
        function: String,
        /// invocations, errors, error_rate, throttles, timeouts, duration_p50, duration_p90,
        /// duration_p99, cold_starts, max_concurrency or dead_letters.
        #[arg(long)]
        metric: String,
        /// `>`, `>=`, `<` or `<=`.
        #[arg(long)]
        comparison: String,
        #[arg(long, allow_negative_numbers = true)]
        threshold: f64,
        /// Seconds per datapoint, a multiple of 60.
        #[arg(long, default_value_t = 60)]
        period: u32,
        /// Datapoints evaluated.
        #[arg(long, default_value_t = 1)]
        evaluation_periods: u32,
        /// Breaching datapoints that put the alarm in ALARM (default: all evaluated).
        #[arg(long)]
        datapoints_to_alarm: Option<u32>,
        /// missing, notBreaching, breaching or ignore.
        #[arg(long, default_value = "missing")]
        treat_missing_data: String,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the alarms with their states.
    Ls,
    /// Remove alarm NAME.
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct LayerArgs {
    #[command(subcommand)]
    pub command: LayerCommand,
}

#[derive(Debug, Subcommand)]
pub enum LayerCommand {
    /// Publish DIR (laid out as /opt: python/, nodejs/node_modules/, bin/, lib/) as the next
    /// version of layer NAME; prints its version ARN.
    Publish {
        name: String,
        dir: std::path::PathBuf,
        /// A runtime the layer is compatible with (repeat for several; none: any runtime).
        #[arg(long = "runtime", value_name = "RUNTIME")]
        runtimes: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List layers with their newest version.
    Ls,
}

#[derive(Debug, Args)]
pub struct ProvisionedArgs {
    #[command(subcommand)]
    pub command: ProvisionedCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProvisionedCommand {
    /// Keep COUNT instances of NAME at QUALIFIER (a published version or an alias) started
    /// and initialised ahead of calls.
    Set {
        name: String,
        qualifier: String,
        count: u32,
    },
    /// Show the config and its state (IN_PROGRESS, READY, FAILED).
    Get { name: String, qualifier: String },
    /// List the configs of a function.
    Ls { name: String },
    /// Remove a config; its instances are stopped.
    Rm { name: String, qualifier: String },
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// The nodes: id, address, version, status, invocations in flight, instances, last
    /// heartbeat.
    Status,
    /// Ask a node to drain: it takes no new background work (events, queues, sources,
    /// workflow steps, schedules), finishes what it holds and hands back its claims; it
    /// keeps serving requests until it is stopped.
    Drain {
        /// The node's id (`nimbus cluster status` lists them).
        node: String,
    },
}

#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an access key; prints its id and secret once.
    Create {
        /// A name for the key (its user ARN is arn:aws:iam::000000000000:user/NAME).
        #[arg(long)]
        name: String,
        /// The key's policy: `admin`, a JSON policy document, or a file holding one.
        #[arg(long, value_name = "FILE|JSON|admin")]
        policy: String,
    },
    /// List access keys: ids, names, policies; never secrets.
    Ls,
    /// Remove an access key.
    Rm { id: String },
}

#[derive(Debug, Args)]
pub struct SecretArgs {
    #[command(subcommand)]
    pub command: SecretCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create or replace a secret; the value is read from standard input (never from the
    /// command line), one trailing newline removed. On a terminal the input is not echoed.
    Set { name: String },
    /// List secrets: names and times, never values.
    Ls,
    /// Remove a secret.
    Rm { name: String },
    /// Re-encrypt every secret under a new master key read from FILE (base64 of 32 bytes,
    /// e.g. `head -c32 /dev/urandom | base64 > F; chmod 600 F`). The server then uses it and
    /// replaces its key file; with NIMBUS_MASTER_KEY, set it to the new key before restarting.
    Rotate {
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormatArg {
    Text,
    Json,
}

impl From<LogFormatArg> for nimbus_server::LogFormat {
    fn from(f: LogFormatArg) -> Self {
        match f {
            LogFormatArg::Text => nimbus_server::LogFormat::Text,
            LogFormatArg::Json => nimbus_server::LogFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// Address to listen on.
    #[arg(long, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// Serve Prometheus metrics (`GET /metrics`, unauthenticated) on this address: `PORT`
    /// or `:PORT` is loopback; a non-loopback address must be written as an IP (e.g.
    /// `0.0.0.0:9464`; a host name that resolves beyond loopback is refused) and is logged
    /// as a warning. Off unless set (docs/observability.md).
    #[arg(long, env = "NIMBUS_METRICS_LISTEN", value_name = "ADDR", value_parser = parse_metrics_listen)]
    pub metrics_listen: Option<SocketAddr>,
    /// Keep the stores in this PostgreSQL database (`postgres://USER[:PASSWORD]@HOST:PORT/DB`)
    /// instead of SQLite files in the data directory: the registry, logs, async events,
    /// queues, buses and schedules, history, event sources, workflows, secrets, access keys,
    /// roles and object metadata. Several nodes on one database form a cluster
    /// (docs/cluster.md).
    #[arg(
        long,
        env = "NIMBUS_DATABASE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub database: Option<String>,
    /// NATS server of the cluster (`nats://HOST:4222`): nodes announce changes there so
    /// the others drop their caches at once (without it, within 200 ms). Needs --database.
    #[arg(
        long,
        env = "NIMBUS_NATS",
        value_name = "URL",
        hide_env_values = true,
        requires = "database"
    )]
    pub nats: Option<String>,
    /// This node's id in the cluster (1-64 of A-Z a-z 0-9 . _ -); default: the one kept
    /// in DATA_DIR/node-id, made on the first start.
    #[arg(long, env = "NIMBUS_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// Serve the S3-compatible object store on this address (`PORT` or `:PORT` is
    /// loopback), path-style and virtual-hosted-style (`BUCKET.localhost:PORT`), signed
    /// with the same access keys as the API. Objects live in `DATA_DIR/objects`. Off unless
    /// set (docs/s3.md).
    #[arg(long, env = "NIMBUS_S3_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub s3_listen: Option<SocketAddr>,
    /// The most bytes all S3 buckets together may hold; a write past it is refused with
    /// 403 `QuotaExceeded`. Unlimited unless set. Per bucket: the bucket's
    /// `nimbus:quota-bytes` tag (docs/s3.md, "Quotas").
    #[arg(long, env = "NIMBUS_S3_MAX_BYTES", value_name = "BYTES")]
    pub s3_max_bytes: Option<u64>,
    /// The most objects all S3 buckets together may hold (as `--s3-max-bytes`; per bucket:
    /// the `nimbus:quota-objects` tag).
    #[arg(long, env = "NIMBUS_S3_MAX_OBJECTS", value_name = "COUNT")]
    pub s3_max_objects: Option<u64>,
    /// Record metrics and the per-minute history (`on`), or nothing at all (`off`: the
    /// invocation path skips every counter; `/metrics` and the history API answer 404).
    #[arg(long, env = "NIMBUS_METRICS", default_value = "on", value_name = "on|off", value_parser = ["on", "off"])]
    pub metrics: String,
    /// Export trace spans over OTLP/HTTP (protobuf) to this collector, e.g.
    /// `http://127.0.0.1:4318` (spans go to `/v1/traces`). Without it the standard
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` decide; off
    /// unless one is set (docs/observability.md).
    #[arg(long, env = "NIMBUS_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// The server's own log lines on stderr: `text`, or `json` (one object per line, for
    /// Vector, Loki, Fluent Bit). Functions' logs are unaffected (`nimbus logs`).
    #[arg(long, env = "NIMBUS_LOG_FORMAT", value_enum, default_value_t = LogFormatArg::Text)]
    pub log_format: LogFormatArg,
    /// Where functions, code and logs are stored [default: ./.nimbus, or DIR/.nimbus for `up`].
    #[arg(long, env = "NIMBUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The secrets master key file (base64 of 32 bytes, mode 0600; created on first start)
    /// [default: DATA_DIR/master.key]. NIMBUS_MASTER_KEY (the key itself) takes precedence.
    #[arg(long, env = "NIMBUS_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Stop instances idle for this long (seconds, or 90s, 5m, 1h).
    #[arg(long, env = "NIMBUS_IDLE_TIMEOUT", default_value = "300", value_name = "SECS", value_parser = parse_secs)]
    pub idle_timeout: Duration,
    /// How long a request may wait for a free instance (milliseconds, or 500ms, 10s).
    #[arg(long, env = "NIMBUS_QUEUE_TIMEOUT_MS", default_value = "10000", value_name = "MS", value_parser = parse_millis)]
    pub queue_timeout_ms: Duration,
    /// How long shutdown waits for in-flight requests (seconds, or 30s, 1m).
    #[arg(long, env = "NIMBUS_SHUTDOWN_GRACE", default_value = "30", value_name = "SECS", value_parser = parse_secs)]
    pub shutdown_grace: Duration,
    /// First retry delay of a failed async event; each retry doubles it (milliseconds).
    #[arg(long, env = "NIMBUS_RETRY_BASE_MS", default_value = "60000", value_name = "MS", value_parser = parse_millis)]
    pub retry_base_ms: Duration,
    /// Consecutive async delivery failures that pause a function's delivery (circuit breaker).
    #[arg(
        long,
        env = "NIMBUS_CIRCUIT_THRESHOLD",
        default_value = "10",
        value_name = "N"
    )]
    pub circuit_threshold: u32,
    /// How long an open circuit pauses delivery before probing (milliseconds).
    #[arg(long, env = "NIMBUS_CIRCUIT_COOLDOWN_MS", default_value = "30000", value_name = "MS", value_parser = parse_millis)]
    pub circuit_cooldown_ms: Duration,
    /// TEST ONLY: run event ages, backoffs, cool-downs and schedule rates this many times faster.
    #[arg(
        long,
        env = "NIMBUS_TIME_SCALE",
        default_value = "1",
        value_name = "N",
        hide = true
    )]
    pub time_scale: u32,
    /// At start, schedule firings missed while the server was down: run-once (the latest
    /// missed firing of each rule) or skip.
    #[arg(long, env = "NIMBUS_MISSED_SCHEDULES", default_value = "run-once", value_name = "POLICY", value_parser = ["run-once", "skip"])]
    pub missed_schedules: String,
    /// Instance sandboxing: auto (every layer the host allows, missing ones reported),
    /// strict (refuse to start unless all are available) or none (NOT isolated).
    #[arg(long, env = "NIMBUS_ISOLATION", default_value = "auto", value_name = "MODE", value_parser = ["auto", "strict", "none"])]
    pub isolation: String,
    /// Require SigV4-signed requests from access keys (`on`), or serve every API to anyone
    /// who can connect (`off`: local development only, refused on a non-loopback --listen).
    #[arg(long, env = "NIMBUS_AUTH", default_value = "on", value_name = "on|off", value_parser = ["on", "off"])]
    pub auth: String,
    /// Serve HTTPS: PEM certificate chain (leaf first). Needs --tls-key.
    #[arg(
        long,
        env = "NIMBUS_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Serve HTTPS: PEM private key of the certificate. Needs --tls-cert.
    #[arg(
        long,
        env = "NIMBUS_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Threads that serve the APIs, the gateway and the instances' Runtime APIs [default:
    /// half the cores, at least 1: the other cores run the functions]. On 2 cores one
    /// thread serves a warm request with a third less CPU than two, which keep waking
    /// each other (docs/performance.md, "Server threads").
    #[arg(long, env = "NIMBUS_WORKER_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub worker_threads: Option<u16>,
    /// Health: below this much free space on the data dir's disk (MiB), `/v1/ready` is
    /// failing (503).
    #[arg(
        long,
        env = "NIMBUS_MIN_FREE_DISK_MB",
        default_value = "100",
        value_name = "MIB"
    )]
    pub min_free_disk_mb: u64,
    /// Health: below this much free space (MiB), or a tenth of the disk when that is
    /// less, `/v1/ready` is degraded.
    #[arg(
        long,
        env = "NIMBUS_LOW_FREE_DISK_MB",
        default_value = "1024",
        value_name = "MIB"
    )]
    pub low_free_disk_mb: u64,
    /// Bytes of responses the response cache of function URLs and routes (their `cache`
    /// settings) holds at most, keys and headers counted; the least recently used
    /// entries go first. 0 turns response caching off.
    #[arg(
        long,
        env = "NIMBUS_CACHE_MAX_BYTES",
        default_value = "67108864",
        value_name = "BYTES"
    )]
    pub cache_max_bytes: usize,
    #[command(flatten)]
    pub limits: crate::limit_args::LimitArgs,
    #[command(flatten)]
    pub concurrency: crate::concurrency_args::ConcurrencyArgs,
}

impl ServerArgs {
    /// `--worker-threads`, or half the host's cores (at least 1).
    pub fn worker_threads(&self) -> usize {
        self.worker_threads.map_or_else(
            || {
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get() / 2)
                    .max(1)
            },
            usize::from,
        )
    }
}

impl Command {
    /// The server settings of `serve` and `up`.
    pub fn server(&self) -> Option<&ServerArgs> {
        match self {
            Command::Serve(s) => Some(s),
            Command::Up(u) => Some(&u.server),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The address `serve` would listen on (checked: can it be bound).
    #[arg(long, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// The data dir `serve` would use [default: ./.nimbus].
    #[arg(long, env = "NIMBUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The isolation mode to check for: auto, strict (every layer needed) or none.
    #[arg(long, env = "NIMBUS_ISOLATION", default_value = "auto", value_name = "MODE", value_parser = ["auto", "strict", "none"])]
    pub isolation: String,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Project directory containing nimbus.toml.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Package code directories as they are: no Go/Java/WebAssembly build, no dependency install.
    #[arg(long)]
    pub no_build: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// A project directory with nimbus.toml, or (with --name) a code directory or .zip file.
    #[arg(default_value = ".", value_name = "PATH")]
    pub path: PathBuf,
    /// Function name; deploys PATH as this one function instead of reading nimbus.toml.
    #[arg(long, requires = "runtime")]
    pub name: Option<String>,
    /// Runtime identifier, e.g. nodejs20.x, python3.12, provided.al2023.
    #[arg(long, requires = "name")]
    pub runtime: Option<String>,
    /// Handler, e.g. index.handler (defaults to "bootstrap" for provided runtimes).
    #[arg(long, requires = "name")]
    pub handler: Option<String>,
    /// Memory size in MB (128-10240).
    #[arg(long, requires = "name", value_name = "MB")]
    pub memory: Option<u32>,
    /// Timeout in seconds (1-900).
    #[arg(long, requires = "name", value_name = "S")]
    pub timeout: Option<u32>,
    /// Size of the function's private /tmp in MB (512-10240).
    #[arg(long, requires = "name", value_name = "MB")]
    pub ephemeral_storage: Option<u32>,
    /// Environment variable, repeatable.
    #[arg(long = "env", requires = "name", value_name = "K=V", value_parser = parse_env_pair)]
    pub env: Vec<(String, String)>,
    /// Environment variable taken from a secret (`DB_PASSWORD=db-pass`), repeatable.
    #[arg(long = "secret-env", requires = "name", value_name = "VAR=SECRET", value_parser = parse_env_pair)]
    pub secret_env: Vec<(String, String)>,
    /// Maximum concurrent instances (1-1000).
    #[arg(long, requires = "name", value_name = "N")]
    pub concurrency: Option<u32>,
    /// Free-text description.
    #[arg(long, requires = "name", value_name = "D")]
    pub description: Option<String>,
    /// Give the function a URL at /fn/NAME/.
    #[arg(long, requires = "name")]
    pub url: bool,
    /// HTTP route served by the function, e.g. "GET /hello/{name}"; repeatable.
    #[arg(long = "route", requires = "name", value_name = "ROUTE")]
    pub routes: Vec<String>,
    /// Network policy: outbound (default; egress to other hosts) or none (loopback only).
    #[arg(long, requires = "name", value_name = "POLICY", value_parser = parse_network)]
    pub network: Option<nimbus_core::NetworkPolicy>,
    /// A service on the host's loopback the function may reach at the same address, e.g.
    /// 127.0.0.1:5432; repeatable.
    #[arg(long = "host-service", requires = "name", value_name = "ADDR", value_parser = parse_host_service)]
    pub host_services: Vec<std::net::SocketAddrV4>,
    /// Package code directories as they are: no Go/Java/WebAssembly build, no dependency install.
    #[arg(long)]
    pub no_build: bool,
}

#[derive(Debug, Args)]
pub struct InvokeArgs {
    pub name: String,
    /// Event JSON, or @FILE to read it from a file (@- for stdin) [default: {}].
    #[arg(long, value_name = "JSON|@FILE")]
    pub data: Option<String>,
    /// Version number or alias to invoke.
    #[arg(long, value_name = "Q")]
    pub qualifier: Option<String>,
    /// Print the tail of the invocation's log to stderr.
    #[arg(long, conflicts_with = "is_async")]
    pub log: bool,
    /// Queue the event and return at once (InvocationType Event); see `nimbus events NAME`.
    #[arg(long = "async")]
    pub is_async: bool,
    /// With --async: a repeated key within 24 h is not queued again.
    #[arg(long, requires = "is_async", value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    pub name: String,
    /// Only events in this state: pending, running, succeeded, dead, expired.
    #[arg(long, value_name = "STATUS")]
    pub status: Option<String>,
    /// At most this many events (newest first).
    #[arg(long, short = 'n', default_value = "20", value_name = "N")]
    pub limit: usize,
    /// Send the dead or expired event with this request id again (attempted at once, with
    /// no attempts made and a fresh age) instead of listing.
    #[arg(long, value_name = "REQUEST_ID", conflicts_with = "status")]
    pub redrive: Option<String>,
}

#[derive(Debug, Args)]
pub struct BusArgs {
    #[command(subcommand)]
    pub command: BusCommand,
}

#[derive(Debug, Subcommand)]
pub enum BusCommand {
    /// List event buses.
    Ls,
    /// Create an event bus (no-op if it exists).
    Create { bus: String },
    /// Delete an event bus without rules.
    Rm { bus: String },
    /// Send one event to a bus (EventBridge PutEvents) and print its event id.
    PutEvents {
        #[arg(long, default_value = "default")]
        bus: String,
        #[arg(long)]
        source: String,
        #[arg(long)]
        detail_type: String,
        /// The event's detail, a JSON object.
        #[arg(long, value_name = "JSON", default_value = "{}")]
        detail: String,
        #[arg(long = "resource", value_name = "ARN")]
        resources: Vec<String>,
    },
    /// List the rules of a bus.
    Rules {
        #[arg(default_value = "default")]
        bus: String,
    },
    /// Create or replace a rule: an event pattern or a schedule, routed to functions.
    Rule {
        bus: String,
        name: String,
        /// An EventBridge event pattern (JSON).
        #[arg(
            long,
            value_name = "JSON",
            conflicts_with = "schedule",
            required_unless_present = "schedule"
        )]
        pattern: Option<String>,
        /// rate(5 minutes), cron(0 12 * * ? *) or at(2030-01-01T00:00:00).
        #[arg(long, value_name = "EXPR")]
        schedule: Option<String>,
        /// IANA time zone of a cron or at schedule (default UTC).
        #[arg(long, value_name = "TZ", requires = "schedule")]
        timezone: Option<String>,
        /// A function name or ARN, a queue ARN (arn:aws:sqs:…) or a bus ARN (repeatable).
        #[arg(long = "target", value_name = "FUNCTION")]
        targets: Vec<String>,
        /// Store the rule disabled.
        #[arg(long)]
        disabled: bool,
    },
    /// Delete a rule.
    RmRule { bus: String, name: String },
}

#[derive(Debug, Args)]
pub struct TargetsArgs {
    #[command(subcommand)]
    pub command: Option<TargetsCommand>,
}

#[derive(Debug, Subcommand)]
pub enum TargetsCommand {
    /// List targets with their delivery state (the default).
    Ls,
    /// Create or replace a target.
    Put {
        name: String,
        /// nats, nats-core, rabbitmq, redis or mqtt.
        #[arg(long = "type")]
        kind: String,
        /// Broker URL without a password (repeatable).
        #[arg(long = "broker", required = true)]
        endpoints: Vec<String>,
        /// A secret holding {"username": …, "password": …}.
        #[arg(long)]
        secret: Option<String>,
        /// Where to publish, KEY=VALUE (repeatable): subject=…, exchange=… routing_key=…,
        /// stream=…, topic=… qos=….
        #[arg(long = "option")]
        options: Vec<String>,
    },
    /// Delete a target and its undelivered messages.
    Rm { name: String },
}

#[derive(Debug, Args)]
pub struct SourcesArgs {
    #[command(subcommand)]
    pub command: Option<SourcesCommand>,
}

// Parsed once per run: the size of the create variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum SourcesCommand {
    /// List source mappings with their state (the default).
    Ls,
    /// One mapping's settings and state.
    Show { uuid: String },
    /// Map an external source to a function.
    Create {
        /// The function (NAME or NAME:ALIAS).
        #[arg(long)]
        function: String,
        /// postgres, nats, nats-core, rabbitmq, redis or mqtt.
        #[arg(long = "type")]
        kind: String,
        /// Broker URL without a password (repeatable), e.g. nats://127.0.0.1:4222.
        #[arg(long = "broker", required = true)]
        endpoints: Vec<String>,
        /// What to consume (repeatable): subjects, the queue, streams, topic filters, tables.
        #[arg(long = "topic", required = true)]
        topics: Vec<String>,
        /// A secret holding {"username": …, "password": …} (nimbus secret set NAME).
        #[arg(long)]
        secret: Option<String>,
        /// The durable name on the broker (consumer, group, client id, slot).
        #[arg(long)]
        group: Option<String>,
        /// A kind-specific setting KEY=VALUE (repeatable), see docs/sources.md.
        #[arg(long = "option")]
        options: Vec<String>,
        #[arg(long)]
        batch_size: Option<u32>,
        /// Seconds to wait to fill a batch (MaximumBatchingWindowInSeconds).
        #[arg(long)]
        batching_window: Option<u32>,
        /// LATEST (default) or TRIM_HORIZON.
        #[arg(long)]
        starting_position: Option<String>,
        /// An EventBridge pattern a record must match (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
        /// The function reports batchItemFailures.
        #[arg(long)]
        report_batch_item_failures: bool,
        /// -1 (until the record expires, the default) or 0-10000.
        #[arg(long, allow_hyphen_values = true)]
        maximum_retry_attempts: Option<i32>,
        /// Where records go when retries are exhausted: a function, queue or bus ARN.
        #[arg(long)]
        on_failure: Option<String>,
        /// Split a failing batch in halves.
        #[arg(long)]
        bisect: bool,
        /// Batches in flight at once (1-1000).
        #[arg(long)]
        maximum_concurrency: Option<u32>,
    },
    /// Delete a mapping (a PostgreSQL mapping's replication slot is dropped).
    Rm { uuid: String },
    /// Start consuming again.
    Enable { uuid: String },
    /// Stop consuming (the broker keeps what arrives).
    Disable { uuid: String },
}

#[derive(Debug, Args)]
pub struct QueueArgs {
    #[command(subcommand)]
    pub command: QueueCommand,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List queues with their message counts.
    Ls,
    /// Create a queue, or update its settings.
    Create {
        name: String,
        /// How long a received message stays hidden (seconds, default 30).
        #[arg(long, value_name = "S")]
        visibility_timeout: Option<u32>,
        /// Queue that receives messages received more than --max-receive-count times.
        #[arg(long, value_name = "QUEUE")]
        dead_letter: Option<String>,
        /// Receives before a message moves to the dead-letter queue (default 10).
        #[arg(long, value_name = "N", requires = "dead_letter")]
        max_receive_count: Option<u32>,
        /// How long messages are kept (seconds, default 4 days).
        #[arg(long, value_name = "S")]
        retention: Option<u32>,
        /// A FIFO queue (its name ends in .fifo): order and exactly-once per message group.
        #[arg(long)]
        fifo: bool,
        /// FIFO: deduplicate messages sent without an id by their body (SHA-256).
        #[arg(long, requires = "fifo")]
        content_based_deduplication: bool,
    },
    /// Send messages (one per BODY; batches of 10) and print their ids.
    Send {
        name: String,
        #[arg(required = true)]
        bodies: Vec<String>,
        /// A String message attribute, repeatable.
        #[arg(long = "attr", value_name = "K=V", value_parser = parse_env_pair)]
        attributes: Vec<(String, String)>,
        /// Deliver after this many seconds (0-900).
        #[arg(long, value_name = "S", default_value = "0")]
        delay: u32,
        /// FIFO queues: the message group of every message sent.
        #[arg(long, value_name = "GROUP")]
        group_id: Option<String>,
        /// FIFO queues: the deduplication id (else the queue's content-based deduplication).
        #[arg(long, value_name = "ID")]
        deduplication_id: Option<String>,
    },
    /// Receive up to N messages, hiding them for the visibility timeout.
    Receive {
        name: String,
        #[arg(long, short = 'n', default_value = "1", value_name = "N")]
        max: u32,
        #[arg(long, value_name = "S")]
        visibility_timeout: Option<u32>,
        /// Long polling: wait up to S seconds (0-20) for a message.
        #[arg(long, value_name = "S")]
        wait: Option<u32>,
    },
    /// Delete a received message by its receipt handle, or (without RECEIPT) the queue.
    Delete {
        name: String,
        receipt: Option<String>,
    },
    /// Delete every message of a queue.
    Purge { name: String },
    /// Move a dead-letter queue's messages back to the queue whose redrive policy names it
    /// (or to --to QUEUE); they start over with no receive.
    Redrive {
        /// The dead-letter queue.
        name: String,
        /// The destination queue (needed when several queues use this dead-letter queue).
        #[arg(long, value_name = "QUEUE")]
        to: Option<String>,
        /// Move at most N messages a second (the rest follow in the background).
        #[arg(long, value_name = "N")]
        max_per_second: Option<u32>,
    },
    /// Visible, in-flight and delayed message counts.
    Stats { name: String },
    /// Feed a queue's messages to a function in batches (an event-source mapping).
    Map {
        queue: String,
        function: String,
        #[arg(long, default_value = "10", value_name = "N")]
        batch_size: u32,
        /// Wait up to this many seconds to fill a batch.
        #[arg(long, default_value = "0", value_name = "S")]
        window: u32,
        /// The function reports failed messages ({"batchItemFailures": [...]}).
        #[arg(long)]
        report_batch_item_failures: bool,
        /// Only messages matching this event pattern reach the function (Lambda's
        /// FilterCriteria, e.g. '{"body":{"type":["order"]}}'); others are deleted. Repeatable.
        #[arg(long = "filter", value_name = "PATTERN")]
        filters: Vec<String>,
    },
    /// List queue → function mappings.
    Mappings,
    /// Remove a mapping.
    Unmap { uuid: String },
}

#[derive(Debug, Args)]
pub struct RmArgs {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The function (omit with --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub name: Option<String>,
    /// Every function whose logs the key may read, interleaved in time order.
    #[arg(long)]
    pub all: bool,
    /// Keep printing new lines (a live tail over server-sent events) until Ctrl-C.
    #[arg(long, short)]
    pub follow: bool,
    /// Show only the last N lines.
    #[arg(long, short = 'n', value_name = "N")]
    pub limit: Option<usize>,
    /// Lines from this time on: RFC 3339 (2026-12-04T10:00:00Z) or a duration ago (15m, 2h, 7d).
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Lines before this time (RFC 3339 or a duration ago).
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Lines at this level or above: trace, debug, info, warn, error, fatal (a line without
    /// a level counts as info).
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<String>,
    /// Lines of one invocation.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// Lines containing TEXT (case-sensitive).
    #[arg(long, value_name = "TEXT")]
    pub grep: Option<String>,
}

pub fn parse_network(s: &str) -> Result<nimbus_core::NetworkPolicy, String> {
    nimbus_core::NetworkPolicy::parse(s)
        .map_err(|_| format!("expected none or outbound, got {s:?}"))
}

pub fn parse_host_service(s: &str) -> Result<std::net::SocketAddrV4, String> {
    nimbus_core::config::parse_host_service(s).map_err(|e| match e {
        nimbus_core::CoreError::InvalidManifest(m) => m,
        e => e.to_string(),
    })
}

/// `K=V` → `(K, V)`; the value may contain `=`.
pub fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A listen address: `HOST:PORT`, `:PORT` (loopback) or a bare port.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    let port = s.strip_prefix(':').unwrap_or(s);
    if let Ok(p) = port.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], p)));
    }
    s.to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("expected HOST:PORT such as 127.0.0.1:8080, got {s:?}"))
}

/// `--metrics-listen`: as [`parse_listen`], but an unauthenticated listener goes beyond
/// loopback only when the address is written out as an IP, never through a host name.
pub fn parse_metrics_listen(s: &str) -> Result<SocketAddr, String> {
    let a = parse_listen(s)?;
    let literal = s.parse::<SocketAddr>().is_ok();
    if !a.ip().is_loopback() && !literal {
        return Err(format!(
            "{s:?} resolves to {}, beyond loopback: metrics are served without authentication, \
             so write the IP address itself (e.g. {}) to mean it",
            a.ip(),
            a
        ));
    }
    Ok(a)
}

/// A duration where a bare number is seconds; `500ms`, `30s`, `5m`, `1h` also work.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    parse_duration(s, 1000)
}

/// A duration where a bare number is milliseconds; `500ms`, `10s`, `1m` also work.
pub fn parse_millis(s: &str) -> Result<Duration, String> {
    parse_duration(s, 1)
}

fn parse_duration(s: &str, bare_unit_ms: u64) -> Result<Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit_ms = match unit.trim() {
        "" => bare_unit_ms as f64,
        "ms" => 1.0,
        "s" | "sec" | "secs" => 1000.0,
        "m" | "min" | "mins" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return Err(format!("unknown unit in {s:?}: use ms, s, m or h")),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("expected a duration such as 30, 30s, 500ms or 5m, got {s:?}"))?;
    Ok(Duration::from_millis((n * unit_ms).round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("nimbus").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn endpoint_before_or_after_subcommand() {
        let a = parse(&["--endpoint", "http://h:1", "ls"]);
        assert_eq!(a.endpoint, "http://h:1");
        let b = parse(&["ls", "--endpoint", "http://h:2", "--json"]);
        assert_eq!(b.endpoint, "http://h:2");
        assert!(b.json);
        let c = parse(&["--json", "rm", "x"]);
        assert!(c.json);
        assert!(matches!(c.command, Command::Rm(RmArgs { ref name }) if name == "x"));
    }

    #[test]
    fn endpoint_default() {
        if std::env::var_os("NIMBUS_ENDPOINT").is_none() {
            assert_eq!(parse(&["ls"]).endpoint, DEFAULT_ENDPOINT);
        }
    }

    #[test]
    fn deploy_flags() {
        let cli = parse(&[
            "deploy",
            "./code",
            "--name",
            "hello",
            "--runtime",
            "nodejs20.x",
            "--handler",
            "index.handler",
            "--memory",
            "256",
            "--env",
            "A=1",
            "--env",
            "B=x=y",
            "--url",
            "--timeout",
            "5",
        ]);
        let Command::Deploy(d) = cli.command else {
            panic!("not deploy")
        };
        assert_eq!(d.path, PathBuf::from("./code"));
        assert_eq!(d.name.as_deref(), Some("hello"));
        assert_eq!(d.memory, Some(256));
        assert_eq!(d.timeout, Some(5));
        assert!(d.url);
        assert_eq!(
            d.env,
            vec![("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
    }

    #[test]
    fn deploy_manifest_mode_and_flag_dependencies() {
        let Command::Deploy(d) = parse(&["deploy"]).command else {
            panic!()
        };
        assert_eq!(d.path, PathBuf::from("."));
        assert!(d.name.is_none());
        // config flags make no sense without --name, and --name needs --runtime
        assert!(Cli::try_parse_from(["nimbus", "deploy", ".", "--memory", "256"]).is_err());
        assert!(Cli::try_parse_from(["nimbus", "deploy", ".", "--name", "x"]).is_err());
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env_pair("K=V").unwrap(), ("K".into(), "V".into()));
        assert_eq!(parse_env_pair("K=").unwrap(), ("K".into(), "".into()));
        assert_eq!(parse_env_pair("K=a=b").unwrap(), ("K".into(), "a=b".into()));
        assert!(parse_env_pair("K").is_err());
        assert!(parse_env_pair("=V").is_err());
        assert!(Cli::try_parse_from([
            "nimbus",
            "deploy",
            "--name",
            "x",
            "--runtime",
            "go",
            "--env",
            "NOPE"
        ])
        .is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_secs("300").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_secs("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_secs("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_secs("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_secs("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_secs("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_millis("10000").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_millis("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_secs("soon").is_err());
        assert!(parse_secs("5d").is_err());
        assert!(parse_secs("").is_err());
    }

    #[test]
    fn listen_addrs() {
        assert_eq!(
            parse_listen("0.0.0.0:9000").unwrap(),
            "0.0.0.0:9000".parse().unwrap()
        );
        assert_eq!(
            parse_listen(":9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert_eq!(
            parse_listen("9000").unwrap(),
            "127.0.0.1:9000".parse().unwrap()
        );
        assert!(parse_listen("nope").is_err());
        assert_eq!(
            parse_metrics_listen("9464").unwrap(),
            SocketAddr::from(([127, 0, 0, 1], 9464))
        );
        assert!(parse_metrics_listen("localhost:9464")
            .unwrap()
            .ip()
            .is_loopback());
        assert_eq!(
            parse_metrics_listen("0.0.0.0:9464").unwrap(),
            SocketAddr::from(([0, 0, 0, 0], 9464))
        );
    }

    #[test]
    fn serve_and_up_flags() {
        let Command::Serve(s) = parse(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--idle-timeout",
            "60",
            "--queue-timeout-ms",
            "500",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(s.listen.port(), 0);
        assert_eq!(s.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.queue_timeout_ms, Duration::from_millis(500));
        let Command::Up(u) = parse(&[
            "up",
            "proj",
            "--shutdown-grace",
            "2",
            "--endpoint",
            "http://x",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(u.dir, PathBuf::from("proj"));
        assert!(u.server.tls_cert.is_none());
        assert_eq!(u.server.shutdown_grace, Duration::from_secs(2));
    }

    #[test]
    fn server_threads_default_to_half_the_cores() {
        let cli = parse(&["up", "proj", "--worker-threads", "3"]);
        assert_eq!(cli.command.server().unwrap().worker_threads(), 3);
        let cli = parse(&["serve"]);
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(
            cli.command.server().unwrap().worker_threads(),
            (cores / 2).max(1)
        );
        assert!(parse(&["ls"]).command.server().is_none());
        assert!(Cli::try_parse_from(["nimbus", "serve", "--worker-threads", "0"]).is_err());
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let Command::Serve(s) =
            parse(&["serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).command
        else {
            panic!()
        };
        assert_eq!(s.tls_cert, Some(PathBuf::from("c.pem")));
        assert_eq!(s.tls_key, Some(PathBuf::from("k.pem")));
        assert!(Cli::try_parse_from(["nimbus", "serve", "--tls-cert", "c.pem"]).is_err());
        assert!(Cli::try_parse_from(["nimbus", "serve", "--tls-key", "k.pem"]).is_err());
        let a = parse(&["ls", "--ca-cert", "ca.pem"]);
        assert_eq!(a.ca_cert, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn invoke_and_logs_flags() {
        let Command::Invoke(i) = parse(&[
            "invoke",
            "f",
            "--data",
            "@e.json",
            "--qualifier",
            "2",
            "--log",
        ])
        .command
        else {
            panic!()
        };
        assert_eq!(
            (
                i.name.as_str(),
                i.data.as_deref(),
                i.qualifier.as_deref(),
                i.log
            ),
            ("f", Some("@e.json"), Some("2"), true)
        );
        let Command::Logs(l) = parse(&["logs", "f", "--follow", "--limit", "5"]).command else {
            panic!()
        };
        assert!(l.follow);
        assert_eq!(l.limit, Some(5));
        let Command::Logs(l) = parse(&[
            "logs",
            "--all",
            "--since",
            "15m",
            "--level",
            "warn",
            "--request-id",
            "r",
            "--grep",
            "x",
        ])
        .command
        else {
            panic!()
        };
        assert!(l.all && l.name.is_none());
        assert_eq!(
            (
                l.since.as_deref(),
                l.level.as_deref(),
                l.request_id.as_deref(),
                l.grep.as_deref()
            ),
            (Some("15m"), Some("warn"), Some("r"), Some("x"))
        );
        assert!(Cli::try_parse_from(["nimbus", "logs"]).is_err());
        assert!(Cli::try_parse_from(["nimbus", "logs", "f", "--all"]).is_err());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
