//! The project manifest, `nimbus.toml`:
//!
//! ```toml
//! [functions.hello]
//! runtime = "nodejs20.x"
//! handler = "index.handler"
//! code = "."                # directory relative to the manifest (default ".")
//! memory = 128              # MB, 128-10240
//! timeout = 3               # seconds, 1-900
//! ephemeral_storage_mb = 512 # MB of private /tmp, 512-10240
//! concurrency = 10          # max concurrent invocations
//! instance_concurrency = 1  # invocations one instance runs at once (default 1)
//! url = true                # function URL at /fn/hello/
//! routes = ["GET /hello/{name}"]
//! env = { GREETING = "hi", DB_PASSWORD = { secret = "db-pass" } }
//! network = "outbound"      # or "none": loopback only (default "outbound")
//! host_services = ["127.0.0.1:5432"] # host loopback services it may reach (default none)
//! provisioned_concurrency = 2 # instances kept initialised (see below)
//! log_format = "json"       # Lambda's LoggingConfig: "text" (default) or "json"
//! log_level = "info"        # application level (json only): trace … fatal
//! system_log_level = "info" # platform records (json only): debug, info, warn
//! ```
//!
//! `alias = "live"` makes each deploy publish a version and point the alias at it (SAM's
//! `AutoPublishAlias`); the function's URL, routes, `queue` and `schedule` then invoke the
//! alias. `provisioned_concurrency = N` keeps N instances of the alias initialised (Lambda's
//! provisioned concurrency) and implies `alias = "live"` when no alias is named.
//!
//! An `env` value written `{ secret = "NAME" }` is taken from the secrets store
//! (`nimbus secret set NAME`) when an instance starts; only the reference is stored.
//!
//! Schedules and the event bus: `schedule = "rate(5 minutes)"` (EventBridge syntax; optional
//! `schedule_timezone = "Europe/Berlin"`) on a function creates the rule `schedule-NAME` on
//! the default bus targeting it; `[buses.NAME]` declares a bus and
//! `[rules.NAME]` a rule: `bus = "orders"` (default `"default"`), `pattern = { source =
//! ["shop"] }` or `schedule = "cron(0 12 * * ? *)"` (+ `timezone`), `targets = ["fn", …]`,
//! `enabled = true`. The server validates patterns and schedules when they are deployed.
//!
//! Built-in queues: `[queues.orders]` with `visibility_timeout = 30`, `dead_letter =
//! "orders-dlq"`, `max_receive_count = 5` (and `retention`, `max_message_size`); a FIFO
//! queue is `[queues."orders.fifo"]` with `fifo = true` (and `content_based_deduplication =
//! true`); a function
//! consumes one with `queue = { name = "orders", batch_size = 10, window = 0,
//! report_batch_item_failures = true }` (an event-source mapping).
//!
//! JWT authorizers and rate limits for routes and function URLs: a `routes` entry is a
//! route key or a table,
//!
//! ```toml
//! [authorizers.main]
//! issuer = "https://issuer.example.com/"
//! audience = ["orders-api"]
//! jwks_file = "jwks.json"   # read by the CLI; or jwks_url = "https://…/jwks.json"
//!
//! [functions.orders]
//! routes = ["GET /health",
//!           { route = "GET /orders", authorizer = "main", scopes = ["orders:read"],
//!             rate_limit = { rps = 10, burst = 20 } }]
//! url = { rate_limit = { rps = 5 } }   # url = true, with a rate limit
//! # url = { invoke_mode = "RESPONSE_STREAM" }   # the URL streams the response
//! ```
//!
//! Response caching (API Gateway's stage cache) on a route table or the URL table:
//! `cache = { ttl = "60s", key = ["query:id", "header:accept"] }` (`ttl` 1s-1h, default
//! 5m; `key` parts `query:NAME`, `header:NAME`, `identity`; see [`CacheSettings`]).
//!
//! A function's configuration carries the authorizers its routes name; routes name only
//! authorizers declared in the same manifest (not in including or included ones).
//!
//! Execution roles: `[roles.NAME]` with `policy = '''{ IAM JSON }'''` (optional
//! `description`, `max_session_duration`); a function names one with `role = "NAME"` (a
//! bare name becomes `arn:aws:iam::000000000000:role/NAME`; an ARN is kept as written), or
//! writes its own `policy = '''...'''`, which makes the role `fn-FUNCTION`. Instances of a
//! function whose role exists get temporary credentials for it (docs/security.md).
//!
//! A manifest may also pull in other projects, each a directory with its own
//! `nimbus.toml` (paths relative to this manifest): `include = ["api", "worker"]`.
//!
//! Lambda layers: `[layers.NAME]` with `path = "layers/deps"` (a directory relative to the
//! manifest, laid out as `/opt` will be: `python/`, `nodejs/node_modules/`, `bin/`, `lib/`),
//! optional `compatible_runtimes = ["python3.12"]` and `description`. A function names
//! its layers in order, by manifest name or layer version ARN: `layers = ["deps",
//! "arn:aws:lambda:us-east-1:000000000000:layer:tools:3"]` (at most 5; later layers win).
//! `nimbus deploy` and `nimbus up` publish a manifest layer whose content changed before
//! the functions that use it.
//!
//! Alarms: `[alarms.NAME]` with `function`, `metric`, `comparison`, `threshold` and
//! optional `period`, `evaluation_periods`, `datapoints_to_alarm`, `treat_missing_data`,
//! `description` (the body of `PUT /v1/alarms/NAME`, see [`crate::AlarmSpec`]);
//! `nimbus deploy` creates or replaces them after the functions.
//!
//! S3 triggers: `[[functions.NAME.s3]]` entries with `bucket`, `events` (default
//! `["s3:ObjectCreated:*"]`), optional `prefix`, `suffix` and `id` (see [`s3`]).
//!
//! External event sources: `[[functions.NAME.sources]]` entries with `type`,
//! `endpoint(s)`, `topic(s)` and Lambda's mapping settings (see [`sources`]).
//!
//! Workflows (Step Functions state machines): `[[workflows]]` entries with `name`,
//! `definition` (an ASL file relative to the manifest), optional `type`, `role` and
//! `definition_substitutions`, or `policy` instead of `role` (see [`workflows`]);
//! `nimbus deploy` creates or updates them after everything else.

use crate::authorizer::{CacheSettings, JwtAuthorizer, RateLimit, RouteSettings};
use crate::{CoreError, FunctionConfig, FunctionName, Limits, RouteSpec, Runtime};
use serde::Deserialize;
use std::collections::BTreeMap;

pub mod s3;
pub mod sources;
pub mod workflows;
pub use s3::{managed_id_prefix, ManifestS3Trigger};
pub use sources::{managed_tag, ManifestSource, ManifestTarget};
pub use workflows::ManifestWorkflow;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    functions: BTreeMap<String, RawFunction>,
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    queues: BTreeMap<String, RawQueue>,
    #[serde(default)]
    buses: BTreeMap<String, RawBus>,
    #[serde(default)]
    rules: BTreeMap<String, RawRule>,
    #[serde(default)]
    authorizers: BTreeMap<String, JwtAuthorizer>,
    #[serde(default)]
    layers: BTreeMap<String, RawLayer>,
    #[serde(default)]
    alarms: BTreeMap<String, crate::AlarmSpec>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    targets: BTreeMap<String, sources::RawTarget>,
    #[serde(default)]
    workflows: Vec<workflows::RawWorkflow>,
}

/// `[roles.NAME]`: an execution role and its identity policy (IAM JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    policy: String,
    description: Option<String>,
    /// `MaxSessionDuration`, 3600-43200 seconds.
    max_session_duration: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    path: String,
    #[serde(default)]
    compatible_runtimes: Vec<String>,
    description: Option<String>,
}

/// A `routes` entry: `"GET /x"`, or a table with the route's authorizer, scopes and
/// rate limit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRoute {
    Key(String),
    Table(RawRouteTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteTable {
    route: String,
    authorizer: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    rate_limit: Option<RateLimit>,
    cache: Option<CacheSettings>,
}

/// `url = true`, or `url = { rate_limit = { rps = 10, burst = 20 }, invoke_mode =
/// "RESPONSE_STREAM" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawUrl {
    Flag(bool),
    Table(RawUrlTable),
}

impl Default for RawUrl {
    fn default() -> Self {
        RawUrl::Flag(false)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUrlTable {
    rate_limit: Option<RateLimit>,
    /// Response caching of the URL.
    cache: Option<CacheSettings>,
    /// Lambda's `InvokeMode`: `BUFFERED` (default) or `RESPONSE_STREAM`.
    invoke_mode: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBus {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    bus: Option<String>,
    pattern: Option<serde_json::Value>,
    schedule: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    targets: Vec<String>,
    enabled: Option<bool>,
}

/// An event bus rule declared in a manifest (or implied by a function's `schedule`).
#[derive(Debug, Clone, PartialEq)]
pub struct ManifestRule {
    pub bus: String,
    pub name: String,
    pub pattern: Option<serde_json::Value>,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub targets: Vec<String>,
    pub enabled: bool,
}

impl ManifestRule {
    /// The body of `PUT /v1/buses/{bus}/rules/{name}`.
    pub fn api_body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({ "targets": self.targets, "enabled": self.enabled });
        if let Some(p) = &self.pattern {
            v["pattern"] = p.clone();
        }
        if let Some(s) = &self.schedule {
            v["schedule"] = s.clone().into();
        }
        if let Some(tz) = &self.timezone {
            v["timezone"] = tz.clone().into();
        }
        v
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    runtime: String,
    handler: Option<String>,
    code: Option<String>,
    memory: Option<u32>,
    timeout: Option<u32>,
    ephemeral_storage_mb: Option<u32>,
    concurrency: Option<u32>,
    /// Invocations one instance runs at once (`AWS_LAMBDA_MAX_CONCURRENCY`), default 1.
    instance_concurrency: Option<u32>,
    description: Option<String>,
    #[serde(default)]
    url: RawUrl,
    #[serde(default)]
    routes: Vec<RawRoute>,
    #[serde(default)]
    env: BTreeMap<String, RawEnvValue>,
    queue: Option<RawFunctionQueue>,
    schedule: Option<String>,
    schedule_timezone: Option<String>,
    /// JSON path of the event's idempotency key, e.g. `"$.order.id"`.
    idempotency_key: Option<String>,
    /// `"none"` or `"outbound"` (the default).
    network: Option<String>,
    /// Services on the host's loopback it may reach: `["127.0.0.1:5432"]`.
    #[serde(default)]
    host_services: Vec<String>,
    /// Alias each deploy points at the version it publishes (SAM's `AutoPublishAlias`).
    alias: Option<String>,
    /// Instances of `alias` kept initialised (implies `alias = "live"` when unset).
    provisioned_concurrency: Option<u32>,
    /// Lambda's `DeadLetterConfig.TargetArn`: a queue or event bus ARN.
    dead_letter: Option<String>,
    /// Layers in order: `[layers.NAME]` names of the manifest or layer version ARNs.
    #[serde(default)]
    layers: Vec<String>,
    /// Lambda's `LoggingConfig`: `"text"` (default) or `"json"`.
    log_format: Option<String>,
    /// `ApplicationLogLevel` (JSON only): trace, debug, info, warn, error, fatal.
    log_level: Option<String>,
    /// `SystemLogLevel` (JSON only): debug, info, warn.
    system_log_level: Option<String>,
    /// `LogGroup` (default `/aws/lambda/NAME`).
    log_group: Option<String>,
    /// The execution role: a `[roles.NAME]` name (or any role's name) or a role ARN.
    role: Option<String>,
    /// An inline identity policy (IAM JSON): the role `fn-NAME` is made with it.
    policy: Option<String>,
    /// `[[functions.NAME.s3]]`: bucket notifications that invoke it.
    #[serde(default)]
    s3: Vec<s3::RawS3Trigger>,
    /// `[[functions.NAME.sources]]`: external event sources that invoke it.
    #[serde(default)]
    sources: Vec<sources::RawSource>,
}

/// The alias `provisioned_concurrency` implies when the manifest names none.
pub const DEFAULT_ALIAS: &str = "live";

/// An `env` value: a string, or `{ secret = "NAME" }` to take it from the secrets store.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawEnvValue {
    Plain(String),
    Secret(RawSecretRef),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretRef {
    secret: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    visibility_timeout: Option<u32>,
    dead_letter: Option<String>,
    max_receive_count: Option<u32>,
    retention: Option<u32>,
    max_message_size: Option<u32>,
    #[serde(default)]
    fifo: bool,
    #[serde(default)]
    content_based_deduplication: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunctionQueue {
    name: String,
    batch_size: Option<u32>,
    window: Option<u32>,
    #[serde(default)]
    report_batch_item_failures: bool,
}

/// A built-in queue declared in a manifest (`[queues.NAME]`); unset settings keep the
/// server's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestQueue {
    pub name: String,
    pub visibility_timeout: Option<u32>,
    pub dead_letter: Option<String>,
    pub max_receive_count: Option<u32>,
    pub retention: Option<u32>,
    pub max_message_size: Option<u32>,
    /// A FIFO queue (its name ends in `.fifo`).
    pub fifo: bool,
    /// FIFO: messages sent without a deduplication id are deduplicated by their body.
    pub content_based_deduplication: bool,
}

impl ManifestQueue {
    /// The body of `PUT /v1/queues/{name}`.
    pub fn api_body(&self) -> serde_json::Value {
        let mut v = serde_json::json!({});
        let mut set = |k: &str, x: Option<serde_json::Value>| {
            if let Some(x) = x {
                v[k] = x;
            }
        };
        set(
            "visibility_timeout",
            self.visibility_timeout.map(Into::into),
        );
        set("dead_letter", self.dead_letter.clone().map(Into::into));
        set("max_receive_count", self.max_receive_count.map(Into::into));
        set("retention", self.retention.map(Into::into));
        set("max_message_size", self.max_message_size.map(Into::into));
        if self.fifo {
            set("fifo", Some(true.into()));
            set(
                "content_based_deduplication",
                Some(self.content_based_deduplication.into()),
            );
        }
        v
    }
}

/// A function consuming a queue (`queue = { name = … }` on the function): an
/// event-source mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestMapping {
    pub queue: String,
    pub function: String,
    pub batch_size: u32,
    pub window: u32,
    pub report_batch_item_failures: bool,
}

/// SQS's queue names: 1-80 letters, digits, `-` or `_`, a FIFO queue's ending in `.fifo`.
fn valid_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    !base.is_empty()
        && name.len() <= 80
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// One function declared in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFunction {
    pub name: FunctionName,
    /// Code directory, relative to the manifest's directory.
    pub code: String,
    pub config: FunctionConfig,
    /// Its layers in order, as written: manifest layer names or layer version ARNs (the
    /// CLI resolves names to the versions it publishes).
    pub layers: Vec<String>,
}

/// A layer declared with `[layers.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestLayer {
    pub name: String,
    /// Its directory, relative to the manifest's directory.
    pub path: String,
    pub compatible_runtimes: Vec<Runtime>,
    pub description: String,
}

/// An execution role to create, or whose manifest policy to replace (`[roles.NAME]`, or
/// the `fn-NAME` role of a function's inline `policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRole {
    pub name: String,
    /// The identity policy (IAM JSON), put as the role's inline policy [`ROLE_POLICY_NAME`].
    pub policy: String,
    pub description: Option<String>,
    pub max_session_s: Option<u32>,
}

/// The name of the inline policy a manifest role's `policy` is put as.
pub const ROLE_POLICY_NAME: &str = "nimbus-manifest";

/// The ARN of the role named `name` (a bare name in the manifest).
pub fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{}:role/{name}", crate::arn::ACCOUNT)
}

/// A policy document must at least be a JSON object (the server checks the rest).
fn check_policy_json(ctx: &str, doc: &str) -> Result<(), CoreError> {
    match serde_json::from_str::<serde_json::Value>(doc) {
        Ok(v) if v.is_object() => Ok(()),
        Ok(_) => Err(CoreError::InvalidManifest(format!(
            "{ctx}: policy is not a JSON object"
        ))),
        Err(e) => Err(CoreError::InvalidManifest(format!(
            "{ctx}: policy is not valid JSON: {e}"
        ))),
    }
}

/// A parsed manifest: its own functions and the project directories it includes.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    pub functions: Vec<ManifestFunction>,
    /// Directories (relative to the manifest) holding further `nimbus.toml` files.
    pub include: Vec<String>,
    /// Built-in queues to create or update.
    pub queues: Vec<ManifestQueue>,
    /// Queue → function mappings (from each function's `queue`).
    pub mappings: Vec<ManifestMapping>,
    /// Event buses to create (the default bus always exists).
    pub buses: Vec<String>,
    /// Rules to create or replace, including `schedule-NAME` for each scheduled function.
    pub rules: Vec<ManifestRule>,
    /// Layers to publish when their content changed.
    pub layers: Vec<ManifestLayer>,
    /// Alarms to create or replace, by name.
    pub alarms: Vec<(String, crate::AlarmSpec)>,
    /// Execution roles to create or update, before the functions.
    pub roles: Vec<ManifestRole>,
    /// The functions' S3 triggers (`[[functions.NAME.s3]]`), in function order.
    pub s3_triggers: Vec<ManifestS3Trigger>,
    /// The functions' external event sources (`[[functions.NAME.sources]]`).
    pub sources: Vec<ManifestSource>,
    /// External targets to create or replace (`[targets.NAME]`).
    pub targets: Vec<ManifestTarget>,
    /// State machines to create or update (`[[workflows]]`).
    pub workflows: Vec<ManifestWorkflow>,
}

/// Parses and validates a manifest that declares functions itself (no `include`).
pub fn parse(text: &str) -> Result<Vec<ManifestFunction>, CoreError> {
    let p = parse_project(text)?;
    if !p.include.is_empty() {
        return Err(CoreError::InvalidManifest(
            "include is not allowed here".into(),
        ));
    }
    Ok(p.functions)
}

/// Parses and validates a manifest's text, with its `include` list.
pub fn parse_project(text: &str) -> Result<Project, CoreError> {
    let raw: RawManifest =
        toml::from_str(text).map_err(|e| CoreError::InvalidManifest(e.to_string()))?;
    if raw.functions.is_empty()
        && raw.include.is_empty()
        && raw.layers.is_empty()
        && raw.workflows.is_empty()
    {
        return Err(CoreError::InvalidManifest(
            "no functions declared: add a [functions.NAME] table (or include = [\"dir\", …])"
                .into(),
        ));
    }
    for inc in &raw.include {
        let p = std::path::Path::new(inc);
        if inc.is_empty() || p.is_absolute() {
            return Err(CoreError::InvalidManifest(format!(
                "include {inc:?}: use a relative directory"
            )));
        }
    }
    let mut out = Vec::new();
    let mut queues = Vec::new();
    for (name, q) in raw.queues {
        let ctx = |m: String| CoreError::InvalidManifest(format!("queues.{name}: {m}"));
        if !valid_queue_name(&name) {
            return Err(ctx(
                "use 1-80 letters, digits, '-' or '_' (a FIFO queue's ending in .fifo)".into(),
            ));
        }
        if let Some(d) = q
            .dead_letter
            .as_deref()
            .filter(|d| !valid_queue_name(d) || *d == name)
        {
            return Err(ctx(format!(
                "dead_letter {d:?} is not another queue's name"
            )));
        }
        if q.max_receive_count.is_some() && q.dead_letter.is_none() {
            return Err(ctx("max_receive_count needs dead_letter".into()));
        }
        if q.max_receive_count
            .is_some_and(|n| !(1..=1000).contains(&n))
        {
            return Err(ctx("max_receive_count must be 1-1000".into()));
        }
        if q.visibility_timeout.is_some_and(|n| n > 43_200) {
            return Err(ctx("visibility_timeout must be 0-43200 seconds".into()));
        }
        if q.fifo != name.ends_with(".fifo") {
            return Err(ctx(
                "a FIFO queue (fifo = true) has a name ending in .fifo, and only it".into(),
            ));
        }
        if q.content_based_deduplication && !q.fifo {
            return Err(ctx("content_based_deduplication is for FIFO queues".into()));
        }
        queues.push(ManifestQueue {
            name,
            visibility_timeout: q.visibility_timeout,
            dead_letter: q.dead_letter,
            max_receive_count: q.max_receive_count,
            retention: q.retention,
            max_message_size: q.max_message_size,
            fifo: q.fifo,
            content_based_deduplication: q.content_based_deduplication,
        });
    }
    let mut roles = Vec::new();
    for (name, r) in &raw.roles {
        let ctx = format!("roles.{name}");
        if !crate::arn::is_iam_name(name, 64) {
            return Err(CoreError::InvalidManifest(format!(
                "{ctx}: a role name is 1-64 letters, digits or _+=,.@-"
            )));
        }
        check_policy_json(&ctx, &r.policy)?;
        if r.max_session_duration
            .is_some_and(|d| !(3600..=43200).contains(&d))
        {
            return Err(CoreError::InvalidManifest(format!(
                "{ctx}: max_session_duration must be 3600-43200 seconds"
            )));
        }
        roles.push(ManifestRole {
            name: name.clone(),
            policy: r.policy.clone(),
            description: r.description.clone(),
            max_session_s: r.max_session_duration,
        });
    }
    let mut mappings = Vec::new();
    let mut s3_triggers = Vec::new();
    let mut sources = Vec::new();
    let mut rules = Vec::new();
    for (name, r) in raw.rules {
        let ctx = |m: &str| CoreError::InvalidManifest(format!("rules.{name}: {m}"));
        if r.pattern.is_some() == r.schedule.is_some() {
            return Err(ctx("set exactly one of pattern and schedule"));
        }
        if r.targets.is_empty() {
            return Err(ctx("targets is empty: name the functions it feeds"));
        }
        rules.push(ManifestRule {
            bus: r.bus.unwrap_or_else(|| "default".into()),
            name,
            pattern: r.pattern,
            schedule: r.schedule,
            timezone: r.timezone,
            targets: r.targets,
            enabled: r.enabled.unwrap_or(true),
        });
    }
    for (name, a) in &raw.authorizers {
        a.validate(name)?;
    }
    let mut layers = Vec::new();
    for (name, l) in &raw.layers {
        let ctx = |m: String| CoreError::InvalidManifest(format!("layers.{name}: {m}"));
        crate::arn::validate_layer_name(name).map_err(|e| ctx(e.to_string()))?;
        if l.path.is_empty() || std::path::Path::new(&l.path).is_absolute() {
            return Err(ctx(format!("path {:?}: use a relative directory", l.path)));
        }
        let compatible_runtimes = l
            .compatible_runtimes
            .iter()
            .map(|r| Runtime::parse(r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ctx(e.to_string()))?;
        layers.push(ManifestLayer {
            name: name.clone(),
            path: l.path.clone(),
            compatible_runtimes,
            description: l.description.clone().unwrap_or_default(),
        });
    }
    for (name, f) in raw.functions {
        let alias = f
            .alias
            .clone()
            .or_else(|| f.provisioned_concurrency.map(|_| DEFAULT_ALIAS.to_string()));
        // The function's own event sources invoke its alias, as its URL and routes do.
        let target = match &alias {
            Some(a) => format!("{name}:{a}"),
            None => name.clone(),
        };
        if let Some(q) = &f.queue {
            let ctx = |m: &str| CoreError::InvalidManifest(format!("functions.{name}.queue: {m}"));
            if !valid_queue_name(&q.name) {
                return Err(ctx(
                    "name must be a queue name (1-80 letters, digits, '-' or '_')",
                ));
            }
            let batch_size = q.batch_size.unwrap_or(10);
            let window = q.window.unwrap_or(0);
            if !(1..=10_000).contains(&batch_size) {
                return Err(ctx("batch_size must be 1-10000"));
            }
            if window > 300 {
                return Err(ctx("window must be 0-300 seconds"));
            }
            if batch_size > 10 && window == 0 {
                return Err(ctx(
                    "a batch_size above 10 needs a window of at least 1 second",
                ));
            }
            mappings.push(ManifestMapping {
                queue: q.name.clone(),
                function: target.clone(),
                batch_size,
                window,
                report_batch_item_failures: q.report_batch_item_failures,
            });
        }
        if let Some(schedule) = &f.schedule {
            rules.push(ManifestRule {
                bus: "default".into(),
                name: format!("schedule-{name}"),
                pattern: None,
                schedule: Some(schedule.clone()),
                timezone: f.schedule_timezone.clone(),
                targets: vec![target.clone()],
                enabled: true,
            });
        } else if f.schedule_timezone.is_some() {
            return Err(CoreError::InvalidManifest(format!(
                "functions.{name}: schedule_timezone needs a schedule"
            )));
        }
        s3_triggers.extend(s3::parse_triggers(&name, alias.as_deref(), f.s3)?);
        sources.extend(sources::parse_sources(&name, alias.as_deref(), f.sources)?);
        let ctx = |e: CoreError| CoreError::InvalidManifest(format!("functions.{name}: {e}"));
        let fname = FunctionName::parse(&name).map_err(ctx)?;
        let runtime = Runtime::parse(&f.runtime).map_err(ctx)?;
        let handler = f.handler.unwrap_or_else(|| match runtime.family() {
            crate::RuntimeFamily::Provided => "bootstrap".into(),
            _ => String::new(),
        });
        let mut config = FunctionConfig::new(runtime, handler);
        config.memory_mb = f.memory.unwrap_or(Limits::MEMORY_DEFAULT_MB);
        config.timeout_s = f.timeout.unwrap_or(Limits::TIMEOUT_DEFAULT_S);
        config.ephemeral_storage_mb = f
            .ephemeral_storage_mb
            .unwrap_or(Limits::EPHEMERAL_DEFAULT_MB);
        config.concurrency = f.concurrency.unwrap_or(Limits::CONCURRENCY_DEFAULT);
        config.instance_concurrency = f.instance_concurrency.unwrap_or(1);
        config.description = f.description.unwrap_or_default();
        match f.url {
            RawUrl::Flag(b) => config.url = b,
            RawUrl::Table(t) => {
                config.url = true;
                config.url_rate_limit = t.rate_limit;
                config.url_cache = t.cache;
                if let Some(mode) = t.invoke_mode.filter(|m| m != "BUFFERED") {
                    config.url_config = Some(crate::UrlConfig {
                        auth_type: "NONE".into(),
                        cors: serde_json::json!({}),
                        created: String::new(),
                        qualifier: None,
                        invoke_mode: Some(mode),
                    });
                }
            }
        }
        for (k, v) in f.env {
            match v {
                RawEnvValue::Plain(v) => {
                    config.env.insert(k, v);
                }
                RawEnvValue::Secret(r) => {
                    config.secrets.insert(k, r.secret);
                }
            }
        }
        match (f.role, f.policy) {
            (Some(_), Some(_)) => {
                return Err(CoreError::InvalidManifest(format!(
                "functions.{name}: set role or policy, not both (policy makes the role fn-{name})"
            )))
            }
            (Some(r), None) if r.starts_with("arn:") => config.role = r,
            (Some(r), None) => {
                if !crate::arn::is_iam_name(&r, 64) {
                    return Err(CoreError::InvalidManifest(format!(
                        "functions.{name}: role {r:?} is neither a role name nor a role ARN"
                    )));
                }
                config.role = role_arn(&r);
            }
            (None, Some(policy)) => {
                let role = format!("fn-{name}");
                check_policy_json(&format!("functions.{name}"), &policy)?;
                if raw.roles.contains_key(&role) {
                    return Err(CoreError::InvalidManifest(format!(
                        "functions.{name}: policy makes the role {role}, which [roles.{role}] declares too"
                    )));
                }
                config.role = role_arn(&role);
                roles.push(ManifestRole {
                    name: role,
                    policy,
                    description: Some(format!("the inline policy of function {name}")),
                    max_session_s: None,
                });
            }
            (None, None) => {}
        }
        config.idempotency_key_path = f.idempotency_key;
        config.alias = alias;
        config.provisioned_concurrency = f.provisioned_concurrency;
        config.dead_letter_target = f.dead_letter.filter(|t| !t.is_empty());
        config.logging = crate::LoggingConfig {
            format: f
                .log_format
                .as_deref()
                .map(|s| crate::LogFormat::parse(s, true))
                .transpose()
                .map_err(ctx)?
                .unwrap_or_default(),
            application_level: f
                .log_level
                .as_deref()
                .map(|s| crate::LogLevel::parse_application(s, true))
                .transpose()
                .map_err(ctx)?,
            system_level: f
                .system_log_level
                .as_deref()
                .map(|s| crate::LogLevel::parse_system(s, true))
                .transpose()
                .map_err(ctx)?,
            log_group: f.log_group,
        };
        let in_function = |e: CoreError| match e {
            CoreError::InvalidManifest(m) => {
                CoreError::InvalidManifest(format!("functions.{name}: {m}"))
            }
            e => e,
        };
        if let Some(n) = &f.network {
            config.network = crate::NetworkPolicy::parse(n).map_err(in_function)?;
        }
        config.host_services = f
            .host_services
            .iter()
            .map(|s| crate::config::parse_host_service(s))
            .collect::<Result<_, _>>()
            .map_err(in_function)?;
        for r in f.routes {
            let (key, settings) = match r {
                RawRoute::Key(k) => (k, RouteSettings::default()),
                RawRoute::Table(t) => (
                    t.route,
                    RouteSettings {
                        authorizer: t.authorizer,
                        scopes: t.scopes,
                        rate_limit: t.rate_limit,
                        cache: t.cache,
                    },
                ),
            };
            let spec = RouteSpec::parse(&key).map_err(ctx)?;
            if let Some(a) = &settings.authorizer {
                let def = raw.authorizers.get(a).ok_or_else(|| {
                    CoreError::InvalidManifest(format!(
                        "functions.{name}: route {key:?} names authorizer {a:?}, \
                         which no [authorizers.{a}] table declares"
                    ))
                })?;
                config.authorizers.insert(a.clone(), def.clone());
            }
            if !settings.is_empty() {
                config
                    .route_settings
                    .insert(spec.key().to_string(), settings);
            }
            config.routes.push(spec);
        }
        config.validate().map_err(ctx)?;
        if f.layers.len() > Limits::LAYERS_MAX {
            return Err(CoreError::InvalidManifest(format!(
                "functions.{name}: layers names {} layers, at most {} are allowed",
                f.layers.len(),
                Limits::LAYERS_MAX
            )));
        }
        for l in &f.layers {
            let known = raw.layers.contains_key(l)
                || (l.starts_with("arn:") && crate::arn::parse_layer_version_arn(l).is_ok());
            if !known {
                return Err(CoreError::InvalidManifest(format!(
                    "functions.{name}: layer {l:?} is neither a [layers.{l}] table of this \
                     manifest nor a layer version ARN (arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)"
                )));
            }
        }
        out.push(ManifestFunction {
            name: fname,
            code: f.code.unwrap_or_else(|| ".".into()),
            config,
            layers: f.layers,
        });
    }
    let mut alarms = Vec::new();
    for (name, spec) in raw.alarms {
        crate::alarm::validate_alarm_name(&name)
            .and_then(|_| spec.validate())
            .map_err(|e| CoreError::InvalidManifest(format!("alarms.{name}: {e}")))?;
        alarms.push((name, spec));
    }
    let targets = sources::parse_targets(raw.targets)?;
    let workflows = workflows::parse_workflows(raw.workflows, &raw.roles, &mut roles)?;
    Ok(Project {
        functions: out,
        include: raw.include,
        queues,
        mappings,
        buses: raw.buses.into_keys().collect(),
        rules,
        layers,
        alarms,
        roles,
        s3_triggers,
        sources,
        targets,
        workflows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_inline_policies() {
        let p = parse_project(
            r#"
[roles.thumbs]
policy = '{"Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::b/in/*"}]}'
max_session_duration = 7200

[functions.a]
runtime = "python3.11"
handler = "app.handler"
role = "thumbs"

[functions.b]
runtime = "python3.11"
handler = "app.handler"
policy = '{"Statement":[{"Effect":"Allow","Action":"sqs:*","Resource":"*"}]}'

[functions.c]
runtime = "python3.11"
handler = "app.handler"
role = "arn:aws:iam::123456789012:role/elsewhere"
"#,
        )
        .unwrap();
        let role = |f: &str| {
            p.functions
                .iter()
                .find(|x| x.name.as_str() == f)
                .unwrap()
                .config
                .role
                .clone()
        };
        assert_eq!(role("a"), "arn:aws:iam::000000000000:role/thumbs");
        assert_eq!(role("b"), "arn:aws:iam::000000000000:role/fn-b");
        assert_eq!(role("c"), "arn:aws:iam::123456789012:role/elsewhere");
        let names: Vec<&str> = p.roles.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, vec!["thumbs", "fn-b"]);
        assert_eq!(p.roles[0].max_session_s, Some(7200));
        let f = "[functions.a]\nruntime = \"python3.11\"\nhandler = \"a.b\"\n";
        for bad in [
            format!("[roles.x]\npolicy = 'nope'\n{f}"),
            format!("{f}role = \"r\"\npolicy = '{{}}'\n"),
            format!("{f}role = \"a b\"\n"),
            format!("[roles.x]\npolicy = '{{}}'\nmax_session_duration = 60\n{f}"),
        ] {
            assert!(parse_project(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn logging_config() {
        let f = |extra: &str| {
            parse(&format!(
                "[functions.hello]\nruntime = \"nodejs20.x\"\nhandler = \"index.handler\"\n{extra}\n"
            ))
        };
        let c = &f("log_format = \"json\"\nlog_level = \"debug\"\nsystem_log_level = \"warn\"")
            .unwrap()[0]
            .config
            .logging;
        assert_eq!(c.format, crate::LogFormat::Json);
        assert_eq!(c.application_level, Some(crate::LogLevel::Debug));
        assert_eq!(c.system_level, Some(crate::LogLevel::Warn));
        assert!(f("").unwrap()[0].config.logging.is_default());
        let e = f("log_level = \"info\"").unwrap_err().to_string();
        assert!(
            e.contains("functions.hello") && e.contains("LogFormat"),
            "{e}"
        );
        let e = f("log_format = \"json\"\nsystem_log_level = \"error\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("systemLogLevel"), "{e}");
    }

    #[test]
    fn dead_letter_takes_a_queue_or_bus_arn() {
        let f = |target: &str| {
            parse(&format!(
                "[functions.hello]\nruntime = \"nodejs20.x\"\nhandler = \"index.handler\"\n\
                 dead_letter = \"{target}\"\n"
            ))
        };
        let q = "arn:aws:sqs:us-east-1:000000000000:failed";
        assert_eq!(
            f(q).unwrap()[0].config.dead_letter_target.as_deref(),
            Some(q)
        );
        let bus = "arn:aws:events:us-east-1:000000000000:event-bus/default";
        assert_eq!(
            f(bus).unwrap()[0].config.dead_letter_target.as_deref(),
            Some(bus)
        );
        assert_eq!(f("").unwrap()[0].config.dead_letter_target, None);
        let e = f("arn:aws:sns:us-east-1:000000000000:t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("functions.hello") && e.contains("SNS"), "{e}");
    }

    #[test]
    fn rejects_unknown_network_policy() {
        let e = parse(
            r#"
            [functions.hello]
            runtime = "nodejs20.x"
            handler = "index.handler"
            network = "host"
            "#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("functions.hello") && e.contains("\"none\" or \"outbound\""),
            "{e}"
        );
    }

    #[test]
    fn route_and_url_caches() {
        let m = parse(
            r#"
            [functions.items]
            runtime = "nodejs20.x"
            handler = "index.handler"
            url = { cache = { ttl = "2m", key = ["query:id"] } }
            routes = [{ route = "GET /items/{id}", cache = { ttl = 30, key = ["header:Accept", "identity"] } },
                      { route = "GET /other", cache = {} }]
            "#,
        )
        .unwrap();
        let c = &m[0].config;
        assert!(c.url);
        let url = c.url_cache.as_ref().unwrap();
        assert_eq!(
            (url.ttl, url.key.as_slice()),
            (120, &["query:id".to_string()][..])
        );
        let r = c.route_settings["GET /items/{id}"].cache.as_ref().unwrap();
        assert_eq!(r.ttl, 30);
        assert!(r.keys_identity());
        assert_eq!(r.key_headers().collect::<Vec<_>>(), ["Accept"]);
        // Defaults: API Gateway's 300 s, no key parts.
        let d = c.route_settings["GET /other"].cache.as_ref().unwrap();
        assert_eq!((d.ttl, d.key.len()), (300, 0));
        // The stored form round-trips, the TTL written as text.
        let json = serde_json::to_value(c).unwrap();
        assert_eq!(
            json["url_cache"],
            serde_json::json!({"ttl": "120s", "key": ["query:id"]})
        );
        let back: FunctionConfig = serde_json::from_value(json).unwrap();
        assert_eq!(&back, c);
        for (cache, want) in [
            ("{ ttl = \"0s\" }", "ttl must be 1s to 3600s"),
            ("{ ttl = \"2h\" }", "ttl must be 1s to 3600s"),
            // Serde's own errors inside a route table: TOML names the place.
            ("{ ttl = \"soon\" }", "line 4"),
            ("{ key = [\"cookie:x\"] }", "key part \"cookie:x\""),
            ("{ key = [\"header:a b\"] }", "key part"),
            ("{ key = [\"query:\"] }", "key part"),
            ("{ key = [\"query:id\", \"query:id\"] }", "named twice"),
            (
                "{ key = [\"header:Accept\", \"header:accept\"] }",
                "named twice",
            ),
            ("{ tll = \"1s\" }", "line 4"),
        ] {
            let text = format!(
                "[functions.a]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\nroutes = [{{ route = \"GET /x\", cache = {cache} }}]\n"
            );
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{cache}: {e}");
        }
        // The native API's deploy config says what is wrong with a TTL.
        let e = serde_json::from_value::<CacheSettings>(serde_json::json!({"ttl": "soon"}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid ttl \"soon\""), "{e}");
        let streamed = parse(
            "[functions.a]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\nurl = { invoke_mode = \"RESPONSE_STREAM\", cache = {} }\n",
        );
        assert!(streamed
            .unwrap_err()
            .to_string()
            .contains("RESPONSE_STREAM"));
    }

    #[test]
    fn route_tables_authorizers_and_rate_limits() {
        let m = parse(
            r#"
            [authorizers.main]
            issuer = "https://issuer.test/"
            audience = ["api"]
            jwks_file = "jwks.json"

            [functions.orders]
            runtime = "nodejs20.x"
            handler = "index.handler"
            url = { rate_limit = { rps = 5 }, invoke_mode = "RESPONSE_STREAM" }
            routes = ["GET /health", { route = "get /orders", authorizer = "main", scopes = ["orders:read"], rate_limit = { rps = 10, burst = 20 } }]
            "#,
        )
        .unwrap();
        let c = &m[0].config;
        assert_eq!(c.routes.len(), 2);
        assert!(c.url);
        assert_eq!(c.url_rate_limit.unwrap().bucket(), 5);
        let url = c.url_config.as_ref().unwrap();
        assert_eq!(url.invoke_mode(), crate::UrlConfig::RESPONSE_STREAM);
        assert_eq!(c.url_alias(), None);
        let s = &c.route_settings["GET /orders"];
        assert_eq!(s.authorizer.as_deref(), Some("main"));
        assert_eq!(s.scopes, ["orders:read"]);
        assert_eq!(s.rate_limit.unwrap().bucket(), 20);
        assert_eq!(
            c.authorizers["main"].jwks_file.as_deref(),
            Some("jwks.json")
        );
        assert!(!c.route_settings.contains_key("GET /health"));
        let unknown = parse(
            "[functions.a]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\nroutes = [{ route = \"GET /x\", authorizer = \"nope\" }]\n",
        );
        assert!(unknown.unwrap_err().to_string().contains("nope"));
        let no_keys = parse(
            "[authorizers.a]\nissuer = \"i\"\naudience = [\"x\"]\n[functions.a]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\n",
        );
        assert!(no_keys.is_err());
    }

    #[test]
    fn parses_full_manifest() {
        let m = parse(
            r#"
            [functions.hello]
            runtime = "nodejs20.x"
            handler = "index.handler"
            memory = 256
            timeout = 10
            ephemeral_storage_mb = 2048
            url = true
            routes = ["GET /hello/{name}"]
            env = { GREETING = "hi", DB_PASSWORD = { secret = "db-pass" } }

            [functions.worker]
            runtime = "provided.al2023"
            code = "worker"
            network = "none"
            host_services = ["localhost:5432", "127.0.0.1:6379"]
            "#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert!(m[0].config.host_services.is_empty());
        assert_eq!(
            m[1].config.host_services,
            [
                "127.0.0.1:5432".parse().unwrap(),
                "127.0.0.1:6379".parse().unwrap()
            ]
        );
        assert_eq!(m[0].config.network, crate::NetworkPolicy::Outbound);
        assert_eq!(m[1].config.network, crate::NetworkPolicy::None);
        assert_eq!(m[0].name.as_str(), "hello");
        assert_eq!(m[0].config.memory_mb, 256);
        assert_eq!(m[0].config.ephemeral_storage_mb, 2048);
        assert_eq!(m[1].config.ephemeral_storage_mb, 512);
        assert_eq!(m[0].config.routes[0].key(), "GET /hello/{name}");
        assert_eq!(m[0].config.env["GREETING"], "hi");
        assert_eq!(m[0].config.secrets["DB_PASSWORD"], "db-pass");
        assert!(!m[0].config.env.contains_key("DB_PASSWORD"));
        assert_eq!(m[1].code, "worker");
        assert_eq!(m[1].config.handler, "bootstrap");
    }

    #[test]
    fn errors_name_the_function() {
        let e = parse("[functions.x]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\nmemory = 1\n")
            .unwrap_err();
        assert!(e.to_string().contains("functions.x"), "{e}");
        assert!(parse("[functions.x]\nruntime = \"cobol\"\n").is_err());
        assert!(
            parse("[functions.x]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\nbogus = 1\n")
                .is_err()
        );
        assert!(parse("").is_err());
        let e = parse("[functions.x]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\nurl = { invoke_mode = \"FAST\" }\n")
            .unwrap_err();
        assert!(e.to_string().contains("invoke_mode"), "{e}");
        let e = parse("[functions.x]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\nhost_services = [\"10.0.0.5:5432\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("invalid manifest: functions.x: host service 10.0.0.5:5432 is not on the host's loopback"), "{e}");
    }

    #[test]
    fn schedules_buses_and_rules() {
        let p = parse_project(
            r#"
            [functions.tick]
            runtime = "nodejs20.x"
            handler = "i.h"
            schedule = "rate(5 minutes)"
            schedule_timezone = "Europe/Berlin"

            [buses.orders]

            [rules.big]
            bus = "orders"
            pattern = { source = ["shop"], detail = { total = [{ numeric = [">", 100] }] } }
            targets = ["tick"]
            "#,
        )
        .unwrap();
        assert_eq!(p.buses, ["orders"]);
        assert_eq!(p.rules.len(), 2);
        let big = &p.rules[0];
        assert_eq!((big.bus.as_str(), big.name.as_str()), ("orders", "big"));
        assert_eq!(
            big.api_body()["pattern"],
            serde_json::json!({"source": ["shop"], "detail": {"total": [{"numeric": [">", 100]}]}})
        );
        let tick = &p.rules[1];
        assert_eq!(tick.name, "schedule-tick");
        assert_eq!(
            tick.api_body(),
            serde_json::json!({"schedule": "rate(5 minutes)", "timezone": "Europe/Berlin",
                               "targets": ["tick"], "enabled": true})
        );
        let bad = "[functions.a]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\n[rules.r]\ntargets = [\"a\"]\n";
        assert!(parse_project(bad)
            .unwrap_err()
            .to_string()
            .contains("rules.r"));
    }

    #[test]
    fn queues_and_mappings() {
        let p = parse_project(
            r#"
            [queues.orders]
            visibility_timeout = 5
            dead_letter = "orders-dlq"
            max_receive_count = 3

            [queues.orders-dlq]

            [functions.worker]
            runtime = "nodejs20.x"
            handler = "index.handler"
            queue = { name = "orders", batch_size = 5, report_batch_item_failures = true }
            "#,
        )
        .unwrap();
        assert_eq!(p.queues.len(), 2);
        let orders = p.queues.iter().find(|q| q.name == "orders").unwrap();
        assert_eq!(
            orders.api_body(),
            serde_json::json!({"visibility_timeout": 5, "dead_letter": "orders-dlq", "max_receive_count": 3})
        );
        assert_eq!(
            p.mappings,
            vec![ManifestMapping {
                queue: "orders".into(),
                function: "worker".into(),
                batch_size: 5,
                window: 0,
                report_batch_item_failures: true,
            }]
        );
        let base = "[functions.w]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\n";
        assert!(parse_project(&format!("{base}queue = {{ name = \"q\", bogus = 1 }}\n")).is_err());
        assert!(parse_project(&format!(
            "{base}queue = {{ name = \"q\", batch_size = 0 }}\n"
        ))
        .is_err());
        assert!(parse_project(&format!("{base}[queues.q]\nmax_receive_count = 2\n")).is_err());
        assert!(parse_project(&format!("{base}[queues.q]\nbogus = 2\n")).is_err());
        // FIFO queues: the name and the flag go together.
        let p = parse_project(&format!(
            "{base}[queues.\"orders.fifo\"]\nfifo = true\ncontent_based_deduplication = true\n"
        ))
        .unwrap();
        assert_eq!(
            p.queues[0].api_body(),
            serde_json::json!({"fifo": true, "content_based_deduplication": true})
        );
        assert!(parse_project(&format!("{base}[queues.\"orders.fifo\"]\n")).is_err());
        assert!(parse_project(&format!("{base}[queues.orders]\nfifo = true\n")).is_err());
        assert!(parse_project(&format!(
            "{base}[queues.orders]\ncontent_based_deduplication = true\n"
        ))
        .is_err());
    }

    #[test]
    fn provisioned_concurrency_implies_an_alias_for_every_trigger() {
        let p = parse_project(
            r#"
            [functions.api]
            runtime = "nodejs20.x"
            handler = "i.h"
            url = true
            provisioned_concurrency = 2
            schedule = "rate(1 minute)"
            queue = { name = "jobs" }

            [functions.named]
            runtime = "nodejs20.x"
            handler = "i.h"
            alias = "prod"

            [functions.plain]
            runtime = "nodejs20.x"
            handler = "i.h"
            queue = { name = "jobs" }
            "#,
        )
        .unwrap();
        let api = &p.functions[0].config;
        assert_eq!(api.alias.as_deref(), Some(DEFAULT_ALIAS));
        assert_eq!(api.provisioned_concurrency, Some(2));
        let named = &p.functions[1].config;
        assert_eq!(
            (named.alias.as_deref(), named.provisioned_concurrency),
            (Some("prod"), None)
        );
        assert_eq!(p.functions[2].config.alias, None);
        let targets: Vec<&str> = p.mappings.iter().map(|m| m.function.as_str()).collect();
        assert_eq!(targets, ["api:live", "plain"]);
        assert_eq!(p.rules[0].targets, ["api:live"]);

        let base = "[functions.f]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\n";
        for (extra, want) in [
            (
                "provisioned_concurrency = 0\n",
                "provisioned_concurrency must be 1",
            ),
            ("provisioned_concurrency = 11\n", "concurrency (10)"),
            ("alias = \"12\"\n", "alias \"12\""),
            ("alias = \"a:b\"\n", "alias \"a:b\""),
        ] {
            let e = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(
                e.contains("functions.f") && e.contains(want),
                "{extra}: {e}"
            );
        }
        assert!(parse(&format!(
            "{base}concurrency = 20\nprovisioned_concurrency = 11\n"
        ))
        .is_ok());
    }

    #[test]
    fn layers() {
        let text = r#"
[layers.deps]
path = "layers/deps"
compatible_runtimes = ["python3.12"]
description = "shared code"

[functions.a]
runtime = "python3.12"
handler = "app.handler"
layers = ["deps", "arn:aws:lambda:us-east-1:000000000000:layer:tools:3"]
"#;
        let p = parse_project(text).unwrap();
        assert_eq!(p.layers.len(), 1);
        assert_eq!(p.layers[0].name, "deps");
        assert_eq!(p.layers[0].path, "layers/deps");
        assert_eq!(p.layers[0].compatible_runtimes[0].as_str(), "python3.12");
        assert_eq!(
            p.functions[0].layers,
            [
                "deps",
                "arn:aws:lambda:us-east-1:000000000000:layer:tools:3"
            ]
        );
        let unknown = text.replace("layers = [\"deps\"", "layers = [\"nope\"");
        let e = parse_project(&unknown).unwrap_err().to_string();
        assert!(e.contains("\"nope\""), "{e}");
        let six = text.replace(
            "layers = [\"deps\", ",
            "layers = [\"deps\", \"deps\", \"deps\", \"deps\", \"deps\", ",
        );
        assert!(parse_project(&six)
            .unwrap_err()
            .to_string()
            .contains("at most 5"));
        let bad = text.replace("path = \"layers/deps\"", "path = \"/abs\"");
        assert!(parse_project(&bad).is_err());
        let runtime = text.replace("[\"python3.12\"]\ndesc", "[\"cobol\"]\ndesc");
        assert!(parse_project(&runtime).is_err());
    }

    #[test]
    fn includes() {
        let p = parse_project("include = [\"a\", \"b/c\"]\n").unwrap();
        assert_eq!(p.include, vec!["a", "b/c"]);
        assert!(p.functions.is_empty());
        assert!(parse_project("include = [\"/abs\"]\n").is_err());
        assert!(parse("include = [\"a\"]\n").is_err());
    }

    #[test]
    fn alarms() {
        let text = "[functions.hello]\nruntime = \"python3.12\"\nhandler = \"app.handler\"\n\n\
                    [alarms.hello-errors]\nfunction = \"hello\"\nmetric = \"error_rate\"\n\
                    comparison = \">\"\nthreshold = 5\nperiod = 300\n";
        let p = parse_project(text).unwrap();
        assert_eq!(p.alarms.len(), 1);
        let (name, spec) = &p.alarms[0];
        assert_eq!(name, "hello-errors");
        assert_eq!((spec.period, spec.evaluation_periods), (300, 1));
        assert_eq!(spec.treat_missing_data, "missing");
        let e = parse_project(&text.replace("period = 300", "period = 90"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("alarms.hello-errors") && e.contains("period"),
            "{e}"
        );
        assert!(parse_project(&text.replace("threshold = 5", "treshold = 5")).is_err());
    }
}
