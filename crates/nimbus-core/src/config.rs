use crate::authorizer::{JwtAuthorizer, RateLimit, RouteSettings, AUTHORIZERS_MAX};
use crate::{CoreError, FunctionName, RouteSpec, Runtime};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Service limits Nimbus enforces, with Lambda's values.
pub struct Limits;

impl Limits {
    pub const MEMORY_MIN_MB: u32 = 128;
    pub const MEMORY_MAX_MB: u32 = 10240;
    pub const MEMORY_DEFAULT_MB: u32 = 128;
    /// `/tmp` of an instance (Lambda's `EphemeralStorage`).
    pub const EPHEMERAL_MIN_MB: u32 = 512;
    pub const EPHEMERAL_MAX_MB: u32 = 10240;
    pub const EPHEMERAL_DEFAULT_MB: u32 = 512;
    pub const TIMEOUT_MIN_S: u32 = 1;
    pub const TIMEOUT_MAX_S: u32 = 900;
    pub const TIMEOUT_DEFAULT_S: u32 = 3;
    pub const CONCURRENCY_DEFAULT: u32 = 10;
    pub const CONCURRENCY_MAX: u32 = 1000;
    /// Lambda Managed Instances' `PerExecutionEnvironmentMaxConcurrency` maximum.
    pub const INSTANCE_CONCURRENCY_MAX: u32 = 1600;
    /// Largest code package accepted, zipped.
    pub const CODE_ZIPPED_MAX: u64 = 50 * 1024 * 1024;
    /// Largest code package accepted, unzipped.
    pub const CODE_UNZIPPED_MAX: u64 = 250 * 1024 * 1024;
    /// Largest synchronous invocation payload (request or response), as Lambda's 6 MB.
    pub const PAYLOAD_MAX: usize = 6 * 1024 * 1024;
    /// Largest total size of environment variables (keys + values).
    pub const ENV_MAX_BYTES: usize = 4096;
    pub const DESCRIPTION_MAX: usize = 256;
    /// Most layers a function may use (Lambda's 5).
    pub const LAYERS_MAX: usize = 5;
}

/// Environment variable names a function may not set because the platform owns them.
pub const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

/// The configuration of one function version: everything but its code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub runtime: Runtime,
    pub handler: String,
    #[serde(default = "default_memory")]
    pub memory_mb: u32,
    #[serde(default = "default_timeout")]
    pub timeout_s: u32,
    /// Size of the instance's private `/tmp` (Lambda's `EphemeralStorage.Size`).
    #[serde(default = "default_ephemeral")]
    pub ephemeral_storage_mb: u32,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Environment variables whose values come from the secrets store: variable name →
    /// secret name. Only the reference is stored and shown; the value is resolved when an
    /// instance starts and handed to that instance only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    /// Maximum number of concurrently running instances.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Invocations one instance runs at once (Lambda Managed Instances'
    /// `PerExecutionEnvironmentMaxConcurrency`; the runtime reads it from
    /// `AWS_LAMBDA_MAX_CONCURRENCY`). 1, the default, is Lambda's classic model: one event
    /// per instance at a time. More suits runtimes that serve several events at once (Node
    /// async handlers; see docs/api.md "Several invocations per instance").
    #[serde(
        default = "default_instance_concurrency",
        skip_serializing_if = "is_one"
    )]
    pub instance_concurrency: u32,
    /// Whether the function has a function URL (`/fn/NAME/…`).
    #[serde(default)]
    pub url: bool,
    /// HTTP routes served by this function on the main listener.
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    /// Lambda's execution role ARN: when it names a role of this server, each instance gets
    /// temporary credentials for it (docs/security.md, "Execution roles and instance credentials").
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub role: String,
    /// Function URL settings from Lambda's `CreateFunctionUrlConfig` (used when `url` is
    /// true; absent means auth type `NONE` and no CORS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_config: Option<UrlConfig>,
    /// Where to find an invocation's idempotency key in its event when the caller sends no
    /// `X-Nimbus-Idempotency-Key` header: a JSON path such as `$.order.id` or `$.items[0].id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key_path: Option<String>,
    /// What the function's instances may reach over the network (default `outbound`, as
    /// Lambda functions reach the internet by default).
    #[serde(default)]
    pub network: NetworkPolicy,
    /// Services on the host's loopback its instances may reach, each at the same address
    /// inside the instance's own namespace (`host_services = ["127.0.0.1:5432"]`): the
    /// database or broker next to Nimbus, as a Lambda function in a VPC reaches its RDS
    /// instance. The rest of the host's loopback stays unreachable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host_services: Vec<std::net::SocketAddrV4>,
    /// JWT authorizers its routes may name (`[authorizers.NAME]` in the manifest).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorizers: BTreeMap<String, JwtAuthorizer>,
    /// Authorizer, scopes and rate limit per route, keyed by route key (`GET /orders`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub route_settings: BTreeMap<String, RouteSettings>,
    /// Token-bucket rate limit of the function URL (all callers together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rate_limit: Option<RateLimit>,
    /// Response caching of the function URL (`url = { cache = {…} }` in the manifest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_cache: Option<crate::CacheSettings>,
    /// The alias each native deploy points at the version it publishes (SAM's
    /// `AutoPublishAlias`); the function URL and routes invoke it instead of `$LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Provisioned concurrency of `alias`, kept in line by each native deploy (the
    /// manifest's `provisioned_concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned_concurrency: Option<u32>,
    /// Lambda's `TracingConfig.Mode`: `Active` samples every invocation of the function
    /// (when traces are exported, docs/observability.md); `PassThrough` follows the
    /// incoming sampling decision.
    #[serde(default, skip_serializing_if = "TracingMode::is_default")]
    pub tracing_mode: TracingMode,
    /// Lambda's `DeadLetterConfig.TargetArn`: a built-in queue or event bus that receives
    /// an asynchronous event when it is discarded (retries exhausted or too old).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter_target: Option<String>,
    /// Lambda layers, in order (later layers win), each pinned to its content: a layer
    /// version deleted later keeps working for the function versions that use it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerRef>,
    /// Lambda's `LoggingConfig`: log format, levels and log group.
    #[serde(default, skip_serializing_if = "crate::LoggingConfig::is_default")]
    pub logging: crate::LoggingConfig,
}

/// One layer version a function uses, as stored with the function version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LayerRef {
    /// `arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION`.
    pub arn: String,
    /// Hex SHA-256 of the layer's zip (its content address in the code store). Empty in a
    /// deploy request: the server fills it in from the ARN.
    #[serde(default)]
    pub sha256: String,
    /// Size of the zip (Lambda's `CodeSize`).
    #[serde(default)]
    pub code_size: u64,
    /// Bytes of the extracted files (counted toward the 250 MB unzipped limit).
    #[serde(default)]
    pub unzipped_size: u64,
}

/// Lambda's `TracingConfig.Mode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TracingMode {
    #[default]
    PassThrough,
    Active,
}

impl TracingMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TracingMode::PassThrough => "PassThrough",
            TracingMode::Active => "Active",
        }
    }

    /// Parses Lambda's `Active` or `PassThrough` (exact case, as Lambda requires).
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "PassThrough" => Ok(TracingMode::PassThrough),
            "Active" => Ok(TracingMode::Active),
            other => Err(CoreError::InvalidTracingMode(other.to_string())),
        }
    }

    fn is_default(&self) -> bool {
        *self == TracingMode::PassThrough
    }
}

/// A function's network policy. Either way each instance has its own network namespace:
/// its loopback holds only its own Runtime API, and neither Nimbus's listeners nor other
/// services on the host's loopback are reachable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkPolicy {
    /// Loopback only: no egress at all.
    None,
    /// Egress to other hosts through a user-mode network stack (slirp4netns); the host's
    /// loopback stays unreachable.
    #[default]
    Outbound,
}

impl NetworkPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkPolicy::None => "none",
            NetworkPolicy::Outbound => "outbound",
        }
    }

    /// Parses `none` or `outbound`.
    pub fn parse(s: &str) -> Result<Self, CoreError> {
        match s {
            "none" => Ok(NetworkPolicy::None),
            "outbound" => Ok(NetworkPolicy::Outbound),
            other => Err(CoreError::InvalidManifest(format!(
                "network {other:?} is not a network policy: use \"none\" or \"outbound\""
            ))),
        }
    }
}

impl std::fmt::Display for NetworkPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Most host services a function may reach.
pub const HOST_SERVICES_MAX: usize = 16;

/// Parses a host service as the manifest and the CLI write it: `127.0.0.1:5432`,
/// `localhost:5432` (any `127.x.y.z` address).
pub fn parse_host_service(s: &str) -> Result<std::net::SocketAddrV4, CoreError> {
    let bad = |why: &str| {
        CoreError::InvalidManifest(format!(
            "host service {s:?} {why}: write the address of a service on the host's loopback, like \"127.0.0.1:5432\""
        ))
    };
    let s = s.trim();
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => format!("127.0.0.1:{port}"),
        None => s.to_string(),
    };
    let addr: std::net::SocketAddrV4 = addr.parse().map_err(|_| bad("is not IPv4-address:port"))?;
    validate_host_services(&[addr])?;
    Ok(addr)
}

/// Host services must be on the host's loopback (other addresses are reached through the
/// network policy), on a port the instance's own endpoints do not use, and few.
fn validate_host_services(services: &[std::net::SocketAddrV4]) -> Result<(), CoreError> {
    if services.len() > HOST_SERVICES_MAX {
        return Err(CoreError::InvalidManifest(format!(
            "host_services lists {} services, at most {HOST_SERVICES_MAX} are allowed",
            services.len()
        )));
    }
    for (i, a) in services.iter().enumerate() {
        if !a.ip().is_loopback() {
            return Err(CoreError::InvalidManifest(format!(
                "host service {a} is not on the host's loopback (127.0.0.0/8): other hosts are reached through network = \"outbound\""
            )));
        }
        if a.port() == 0 || (9001..=9003).contains(&a.port()) {
            return Err(CoreError::InvalidManifest(format!(
                "host service {a}: port {} is not allowed (0 is no port; 9001-9003 are the instance's Runtime API and AWS endpoints)",
                a.port()
            )));
        }
        if services[..i].iter().any(|b| b.port() == a.port()) {
            return Err(CoreError::InvalidManifest(format!(
                "host service port {} is listed twice: an instance has one loopback",
                a.port()
            )));
        }
    }
    Ok(())
}

/// Reads the value at a simple JSON path (`$`, `.field`, `[index]`) as an idempotency key:
/// strings as they are, other scalars as their JSON text; objects, arrays, null or a
/// missing path give `None`.
pub fn idempotency_key_at(event: &serde_json::Value, path: &str) -> Option<String> {
    let mut cur = event;
    for step in parse_json_path(path).ok()? {
        cur = match step {
            PathStep::Field(f) => cur.get(f.as_str())?,
            PathStep::Index(i) => cur.get(i)?,
        };
    }
    match cur {
        serde_json::Value::String(s) if !s.is_empty() => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

enum PathStep {
    Field(String),
    Index(usize),
}

fn parse_json_path(path: &str) -> Result<Vec<PathStep>, String> {
    let rest = path.strip_prefix('$').ok_or("a JSON path starts with $")?;
    let mut steps = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut field = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    field.push(n);
                    chars.next();
                }
                if field.is_empty() {
                    return Err("empty field name".into());
                }
                steps.push(PathStep::Field(field));
            }
            '[' => {
                let mut digits = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    digits.push(n);
                }
                steps.push(PathStep::Index(
                    digits
                        .parse()
                        .map_err(|_| format!("bad index [{digits}]"))?,
                ));
            }
            other => return Err(format!("unexpected {other:?}")),
        }
    }
    Ok(steps)
}

/// A function URL's auth type and CORS settings, as Lambda stores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlConfig {
    /// `NONE` or `AWS_IAM`.
    pub auth_type: String,
    /// Lambda's `Cors` object (`AllowOrigins`, `AllowMethods`, `AllowHeaders`,
    /// `ExposeHeaders`, `AllowCredentials`, `MaxAge`).
    #[serde(default)]
    pub cors: serde_json::Value,
    /// When the URL was created (ISO-8601).
    pub created: String,
    /// What the URL invokes (Lambda's `Qualifier`): an alias or `$LATEST`. Absent (URLs
    /// declared in manifests): the function's `alias`, else `$LATEST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qualifier: Option<String>,
    /// Lambda's `InvokeMode`: `BUFFERED` (absent) or `RESPONSE_STREAM` (the body goes to
    /// the client as the function writes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invoke_mode: Option<String>,
}

impl UrlConfig {
    /// `RESPONSE_STREAM`: the URL streams the function's response.
    pub const RESPONSE_STREAM: &'static str = "RESPONSE_STREAM";

    /// Lambda's `InvokeMode` of the URL (`BUFFERED` unless set).
    pub fn invoke_mode(&self) -> &str {
        self.invoke_mode.as_deref().unwrap_or("BUFFERED")
    }
}

impl FunctionConfig {
    /// The alias the function URL invokes (`None`: `$LATEST`).
    pub fn url_alias(&self) -> Option<&str> {
        match self
            .url_config
            .as_ref()
            .and_then(|u| u.qualifier.as_deref())
        {
            Some(crate::LATEST) => None,
            Some(a) => Some(a),
            None => self.alias.as_deref(),
        }
    }
}

fn default_memory() -> u32 {
    Limits::MEMORY_DEFAULT_MB
}
fn default_ephemeral() -> u32 {
    Limits::EPHEMERAL_DEFAULT_MB
}
fn default_timeout() -> u32 {
    Limits::TIMEOUT_DEFAULT_S
}
fn default_concurrency() -> u32 {
    Limits::CONCURRENCY_DEFAULT
}
fn default_instance_concurrency() -> u32 {
    1
}
fn is_one(n: &u32) -> bool {
    *n == 1
}

impl FunctionConfig {
    /// A configuration with Lambda's defaults for everything but runtime and handler.
    pub fn new(runtime: Runtime, handler: impl Into<String>) -> Self {
        Self {
            runtime,
            handler: handler.into(),
            memory_mb: default_memory(),
            timeout_s: default_timeout(),
            ephemeral_storage_mb: default_ephemeral(),
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            description: String::new(),
            concurrency: default_concurrency(),
            instance_concurrency: default_instance_concurrency(),
            url: false,
            routes: Vec::new(),
            role: String::new(),
            url_config: None,
            idempotency_key_path: None,
            network: NetworkPolicy::default(),
            host_services: Vec::new(),
            authorizers: BTreeMap::new(),
            route_settings: BTreeMap::new(),
            url_rate_limit: None,
            url_cache: None,
            alias: None,
            provisioned_concurrency: None,
            tracing_mode: TracingMode::PassThrough,
            dead_letter_target: None,
            layers: Vec::new(),
            logging: crate::LoggingConfig::default(),
        }
    }

    /// Checks every field against Lambda's rules and Nimbus's limits.
    pub fn validate(&self) -> Result<(), CoreError> {
        self.runtime.validate_handler(&self.handler)?;
        self.logging.validate()?;
        if !(Limits::MEMORY_MIN_MB..=Limits::MEMORY_MAX_MB).contains(&self.memory_mb) {
            return Err(CoreError::InvalidMemory(self.memory_mb));
        }
        if !(Limits::EPHEMERAL_MIN_MB..=Limits::EPHEMERAL_MAX_MB)
            .contains(&self.ephemeral_storage_mb)
        {
            return Err(CoreError::InvalidEphemeralStorage(
                self.ephemeral_storage_mb,
            ));
        }
        if !(Limits::TIMEOUT_MIN_S..=Limits::TIMEOUT_MAX_S).contains(&self.timeout_s) {
            return Err(CoreError::InvalidTimeout(self.timeout_s));
        }
        if !(1..=Limits::CONCURRENCY_MAX).contains(&self.concurrency) {
            return Err(CoreError::InvalidConcurrency(self.concurrency));
        }
        self.validate_instance_concurrency()?;
        if self.description.chars().count() > Limits::DESCRIPTION_MAX {
            return Err(CoreError::InvalidDescription(format!(
                "at most {} characters",
                Limits::DESCRIPTION_MAX
            )));
        }
        if let Some(p) = &self.idempotency_key_path {
            if p.len() > 256 {
                return Err(CoreError::InvalidManifest(
                    "idempotency_key path is longer than 256 characters".into(),
                ));
            }
            parse_json_path(p).map_err(|e| {
                CoreError::InvalidManifest(format!(
                    "idempotency_key {p:?} is not a JSON path like $.order.id: {e}"
                ))
            })?;
        }
        if let Some(t) = &self.dead_letter_target {
            crate::async_event::validate_dead_letter_target(t)?;
        }
        for r in &self.routes {
            r.check_new()?;
        }
        validate_host_services(&self.host_services)?;
        self.validate_route_settings()?;
        self.validate_alias()?;
        let mut total = 0;
        for (k, v) in &self.env {
            validate_env_key(k)?;
            total += k.len() + v.len();
        }
        for (k, secret) in &self.secrets {
            validate_env_key(k)?;
            if self.env.contains_key(k) {
                return Err(CoreError::InvalidEnv(
                    k.into(),
                    "set both as a plain variable and from a secret: keep one".into(),
                ));
            }
            validate_secret_name(secret).map_err(|e| CoreError::InvalidEnv(k.into(), e))?;
            total += k.len() + secret.len();
        }
        if total > Limits::ENV_MAX_BYTES {
            return Err(CoreError::InvalidEnv(
                "(all)".into(),
                format!(
                    "variables total {total} bytes, the limit is {} bytes",
                    Limits::ENV_MAX_BYTES
                ),
            ));
        }
        Ok(())
    }
}

impl FunctionConfig {
    /// 1 to Lambda's 1,600, and only where an instance is a process: a WebAssembly
    /// component gets a fresh instance per request anyway.
    fn validate_instance_concurrency(&self) -> Result<(), CoreError> {
        let n = self.instance_concurrency;
        if !(1..=Limits::INSTANCE_CONCURRENCY_MAX).contains(&n) {
            return Err(CoreError::InvalidInstanceConcurrency(format!(
                "instance_concurrency must be 1 to {}, not {n}",
                Limits::INSTANCE_CONCURRENCY_MAX
            )));
        }
        if n > 1 && self.runtime.family().is_wasm() {
            return Err(CoreError::InvalidInstanceConcurrency(format!(
                "instance_concurrency applies to process runtimes: runtime {} runs a fresh component instance per request, so leave it at 1",
                self.runtime
            )));
        }
        Ok(())
    }

    fn validate_alias(&self) -> Result<(), CoreError> {
        if let Some(a) = &self.alias {
            crate::control::validate_alias_name(a).map_err(|_| {
                CoreError::InvalidManifest(format!(
                    "alias {a:?}: use 1-128 letters, digits, '-' or '_', not only digits"
                ))
            })?;
        }
        match (self.provisioned_concurrency, &self.alias) {
            (None, _) => Ok(()),
            (Some(_), None) => Err(CoreError::InvalidManifest(
                "provisioned_concurrency needs an alias: provisioned instances belong to a published version, never to $LATEST".into(),
            )),
            (Some(n), Some(_)) if n == 0 || n > self.concurrency => {
                Err(CoreError::InvalidManifest(format!(
                    "provisioned_concurrency must be 1 to the function's concurrency ({}), not {n}",
                    self.concurrency
                )))
            }
            _ => Ok(()),
        }
    }

    fn validate_route_settings(&self) -> Result<(), CoreError> {
        if self.authorizers.len() > AUTHORIZERS_MAX {
            return Err(CoreError::InvalidManifest(format!(
                "at most {AUTHORIZERS_MAX} authorizers per function"
            )));
        }
        for (name, a) in &self.authorizers {
            a.validate(name)?;
        }
        for (key, s) in &self.route_settings {
            let ctx = |m: String| CoreError::InvalidManifest(format!("route {key:?}: {m}"));
            if !self.routes.iter().any(|r| r.key() == key) {
                return Err(ctx(
                    "settings for a route the function does not serve".into()
                ));
            }
            if let Some(a) = &s.authorizer {
                if !self.authorizers.contains_key(a) {
                    return Err(ctx(format!("authorizer {a:?} is not declared")));
                }
            } else if !s.scopes.is_empty() {
                return Err(ctx("scopes need an authorizer".into()));
            }
            if s.scopes.len() > 50 || s.scopes.iter().any(|x| x.is_empty() || x.len() > 256) {
                return Err(ctx("at most 50 scopes of 1-256 characters".into()));
            }
            if let Some(r) = &s.rate_limit {
                r.validate(key)?;
            }
            if let Some(c) = &s.cache {
                c.validate(&format!("route {key:?}"))?;
            }
        }
        if let Some(r) = &self.url_rate_limit {
            r.validate("url")?;
        }
        if let Some(c) = &self.url_cache {
            c.validate("url")?;
            let streams = self
                .url_config
                .as_ref()
                .is_some_and(|u| u.invoke_mode() == UrlConfig::RESPONSE_STREAM);
            if streams {
                return Err(CoreError::InvalidManifest(
                    "url: cache: a RESPONSE_STREAM URL's responses are not cached: use BUFFERED or drop cache".into(),
                ));
            }
        }
        if let Some(m) = self
            .url_config
            .as_ref()
            .and_then(|u| u.invoke_mode.as_deref())
        {
            if m != "BUFFERED" && m != UrlConfig::RESPONSE_STREAM {
                return Err(CoreError::InvalidManifest(format!(
                    "url invoke_mode {m:?}: use BUFFERED or RESPONSE_STREAM"
                )));
            }
        }
        Ok(())
    }
}

/// Longest secret name.
pub const SECRET_NAME_MAX: usize = 128;

/// A secret name: 1–128 characters of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
pub fn validate_secret_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= SECRET_NAME_MAX
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid secret name {name:?}: use 1-{SECRET_NAME_MAX} characters of A-Z, a-z, 0-9, \
             '_', '.' and '-', starting with a letter or digit"
        ))
    }
}

fn validate_env_key(k: &str) -> Result<(), CoreError> {
    let mut chars = k.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(CoreError::InvalidEnv(
            k.into(),
            "names start with a letter and contain only letters, digits and '_'".into(),
        ));
    }
    if RESERVED_ENV.contains(&k) {
        return Err(CoreError::InvalidEnv(
            k.into(),
            "this name is reserved by the platform".into(),
        ));
    }
    Ok(())
}

/// One stored function version (`$LATEST` or an immutable numbered version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionVersion {
    pub name: FunctionName,
    /// `$LATEST` or a decimal version number.
    pub version: String,
    pub config: FunctionConfig,
    /// Hex SHA-256 of the code package (zip) — the content address of the code.
    pub code_sha256: String,
    pub code_size: u64,
    /// ISO-8601 timestamp, Lambda's format `2021-06-16T10:49:22.524+0000`.
    pub last_modified: String,
    pub revision_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> FunctionConfig {
        FunctionConfig::new(Runtime::parse("python3.11").unwrap(), "app.handler")
    }

    #[test]
    fn host_services_are_loopback_addresses() {
        assert_eq!(
            parse_host_service("localhost:5432").unwrap().to_string(),
            "127.0.0.1:5432"
        );
        assert_eq!(
            parse_host_service("127.0.0.2:6379").unwrap().to_string(),
            "127.0.0.2:6379"
        );
        for bad in [
            "10.0.0.1:5432",
            "127.0.0.1:9001",
            "127.0.0.1",
            "db:5432",
            "127.0.0.1:0",
        ] {
            assert!(parse_host_service(bad).is_err(), "{bad}");
        }
        let mut c = cfg();
        c.host_services = vec![
            "127.0.0.1:5432".parse().unwrap(),
            "127.0.0.2:5432".parse().unwrap(),
        ];
        assert!(c.validate().is_err(), "one port twice");
        c.host_services.pop();
        c.validate().unwrap();
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["host_services"], serde_json::json!(["127.0.0.1:5432"]));
        let back: FunctionConfig = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn network_policy_defaults_to_outbound_and_round_trips() {
        // A config stored before the field existed reads as `outbound`.
        let old: FunctionConfig =
            serde_json::from_str(r#"{"runtime":"python3.11","handler":"app.handler"}"#).unwrap();
        assert_eq!(old.network, NetworkPolicy::Outbound);
        let mut c = cfg();
        c.network = NetworkPolicy::None;
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["network"], "none");
        assert_eq!(serde_json::from_value::<FunctionConfig>(v).unwrap(), c);
        let bad = serde_json::from_str::<FunctionConfig>(
            r#"{"runtime":"python3.11","handler":"app.handler","network":"host"}"#,
        );
        assert!(bad.is_err());
        assert_eq!(NetworkPolicy::parse("none").unwrap(), NetworkPolicy::None);
        assert!(NetworkPolicy::parse("bridge").is_err());
    }

    #[test]
    fn instance_concurrency_defaults_to_one_and_is_bounded() {
        // A config stored before the field existed runs one invocation per instance, and
        // one is not written out (a stored config reads back as it was written).
        let old: FunctionConfig =
            serde_json::from_str(r#"{"runtime":"python3.11","handler":"app.handler"}"#).unwrap();
        assert_eq!(old.instance_concurrency, 1);
        assert!(serde_json::to_value(&old).unwrap()["instance_concurrency"].is_null());
        let mut c = cfg();
        for ok in [1, 16, 1600] {
            c.instance_concurrency = ok;
            c.validate().unwrap();
        }
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["instance_concurrency"], 1600);
        assert_eq!(serde_json::from_value::<FunctionConfig>(v).unwrap(), c);
        for bad in [0, 1601] {
            c.instance_concurrency = bad;
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("instance_concurrency must be 1 to 1600"), "{e}");
        }
        let mut w = FunctionConfig::new(Runtime::parse("wasi-http").unwrap(), "app.wasm");
        w.instance_concurrency = 2;
        assert!(w
            .validate()
            .unwrap_err()
            .to_string()
            .contains("process runtimes"));
    }

    #[test]
    fn defaults_are_valid() {
        let c = cfg();
        assert_eq!((c.memory_mb, c.timeout_s, c.concurrency), (128, 3, 10));
        c.validate().unwrap();
    }

    #[test]
    fn ephemeral_storage_is_lambdas_range_and_defaults_to_512() {
        let mut c = cfg();
        assert_eq!(c.ephemeral_storage_mb, 512);
        c.ephemeral_storage_mb = 511;
        assert_eq!(c.validate(), Err(CoreError::InvalidEphemeralStorage(511)));
        c.ephemeral_storage_mb = 10241;
        assert!(c.validate().is_err());
        c.ephemeral_storage_mb = 10240;
        c.validate().unwrap();
        // Stored configs from before the field read as the default.
        let old: FunctionConfig =
            serde_json::from_str(r#"{"runtime":"nodejs20.x","handler":"index.handler"}"#).unwrap();
        assert_eq!(old.ephemeral_storage_mb, 512);
    }

    #[test]
    fn tracing_mode_parses_lambdas_values_and_defaults_to_pass_through() {
        assert_eq!(TracingMode::parse("Active"), Ok(TracingMode::Active));
        assert_eq!(
            TracingMode::parse("PassThrough"),
            Ok(TracingMode::PassThrough)
        );
        for bad in ["active", "", "Off"] {
            assert_eq!(
                TracingMode::parse(bad),
                Err(CoreError::InvalidTracingMode(bad.into()))
            );
        }
        let old: FunctionConfig =
            serde_json::from_str(r#"{"runtime":"nodejs20.x","handler":"index.handler"}"#).unwrap();
        assert_eq!(old.tracing_mode, TracingMode::PassThrough);
        let mut c = cfg();
        c.tracing_mode = TracingMode::Active;
        let back: FunctionConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back.tracing_mode, TracingMode::Active);
    }

    #[test]
    fn limits() {
        let mut c = cfg();
        c.memory_mb = 64;
        assert_eq!(c.validate(), Err(CoreError::InvalidMemory(64)));
        c.memory_mb = 10241;
        assert!(c.validate().is_err());
        c.memory_mb = 10240;
        c.timeout_s = 0;
        assert!(c.validate().is_err());
        c.timeout_s = 901;
        assert!(c.validate().is_err());
        c.timeout_s = 900;
        c.validate().unwrap();
    }

    #[test]
    fn idempotency_key_paths() {
        let ev = serde_json::json!({"order": {"id": "o-7", "n": 42}, "items": [{"id": "i1"}], "nothing": null});
        assert_eq!(
            idempotency_key_at(&ev, "$.order.id").as_deref(),
            Some("o-7")
        );
        assert_eq!(idempotency_key_at(&ev, "$.order.n").as_deref(), Some("42"));
        assert_eq!(
            idempotency_key_at(&ev, "$.items[0].id").as_deref(),
            Some("i1")
        );
        assert_eq!(
            idempotency_key_at(&ev, "$.order"),
            None,
            "objects are not keys"
        );
        assert_eq!(idempotency_key_at(&ev, "$.nothing"), None);
        assert_eq!(idempotency_key_at(&ev, "$.missing.x"), None);
        let mut c = cfg();
        c.idempotency_key_path = Some("$.order.id".into());
        c.validate().unwrap();
        c.idempotency_key_path = Some("order.id".into());
        assert!(c.validate().is_err());
        c.idempotency_key_path = Some("$.a[x]".into());
        assert!(c.validate().is_err());
    }

    #[test]
    fn secret_env_rules() {
        let mut c = cfg();
        c.secrets.insert("DB_PASSWORD".into(), "db-pass".into());
        c.validate().unwrap();
        c.env.insert("DB_PASSWORD".into(), "x".into());
        assert!(c.validate().is_err(), "a clash with env is refused");
        c.env.clear();
        c.secrets.insert("AWS_REGION".into(), "x".into());
        assert!(c.validate().is_err(), "reserved names are refused");
        c.secrets.remove("AWS_REGION");
        c.secrets.insert("OK".into(), "bad/name".into());
        assert!(c.validate().is_err(), "secret names are checked");
        c.secrets.remove("OK");
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["secrets"]["DB_PASSWORD"], "db-pass");
        let back: FunctionConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, c);
        let plain = serde_json::to_value(cfg()).unwrap();
        assert!(plain.get("secrets").is_none(), "no secrets, no field");
    }

    #[test]
    fn env_rules() {
        let mut c = cfg();
        c.env.insert("GOOD_1".into(), "x".into());
        c.validate().unwrap();
        c.env.insert("1BAD".into(), "x".into());
        assert!(c.validate().is_err());
        c.env.remove("1BAD");
        c.env.insert("AWS_REGION".into(), "x".into());
        assert!(c.validate().is_err());
        c.env.remove("AWS_REGION");
        c.env.insert("BIG".into(), "x".repeat(5000));
        assert!(c.validate().is_err());
    }
}
