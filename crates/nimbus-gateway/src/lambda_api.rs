//! Lambda's control-plane API (rest-json) for unmodified boto3 and the AWS CLI:
//! functions, versions, aliases, reserved concurrency, account settings, tags and
//! resource policies. Shapes follow `../shared/lambda-reference.md` section 3.

use crate::lambda_fields::{self, Op, HOST_ARCHITECTURE};
use crate::{native, ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use nimbus_core::{
    arn, Alias, FunctionConfig, FunctionName, FunctionVersion, Limits, Runtime, TracingMode, LATEST,
};
use nimbus_store::{CodeInfo, PinnedCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Reservations may not push unreserved concurrency below this (Lambda's 100 of its
/// default 1000; a tenth of a smaller `--account-concurrency`).
fn unreserved_floor(account: u32) -> u32 {
    (account / 10).min(100)
}
/// Lambda's page size cap for list operations.
const PAGE_MAX: usize = 50;

pub(crate) type Query = BTreeMap<String, Vec<String>>;

pub(crate) fn parse_query(raw: Option<String>) -> Result<Query, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::InvalidParameter(format!("invalid query string: {e}")))?;
    let mut q = Query::new();
    for (k, v) in pairs {
        q.entry(k).or_default().push(v);
    }
    Ok(q)
}

pub(crate) fn first<'a>(q: &'a Query, key: &str) -> Option<&'a str> {
    q.get(key).and_then(|v| v.first()).map(String::as_str)
}

pub(crate) fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| ApiError::InvalidParameter(format!("invalid request body: {e}")))
}

/// `{FunctionName}` path values: a name, `name:qualifier` or an ARN, plus an optional
/// `Qualifier` query parameter that must agree.
pub(crate) fn function_ref(
    path: &str,
    q: &Query,
) -> Result<(FunctionName, Option<String>), ApiError> {
    let (name, embedded) = arn::parse_function_ref(path)?;
    let query = first(q, "Qualifier")
        .map(arn::validate_qualifier)
        .transpose()?;
    match (embedded, query) {
        (Some(a), Some(b)) if a != b => Err(ApiError::InvalidParameter(format!(
            "the qualifier in the function name ({a}) and the Qualifier parameter ({b}) differ"
        ))),
        (a, b) => Ok((name, a.or(b))),
    }
}

/// A hex SHA-256 as Lambda's base64 `CodeSha256`.
pub(crate) fn hex_to_b64(hex_sha: &str) -> String {
    hex::decode(hex_sha)
        .map(|raw| base64::engine::general_purpose::STANDARD.encode(raw))
        .unwrap_or_default()
}

/// Lambda's `FunctionConfiguration` for one stored version.
pub(crate) fn configuration(v: &FunctionVersion) -> Value {
    let name = v.name.as_str();
    let qualifier = (v.version != LATEST).then_some(v.version.as_str());
    let mut out = json!({
        "FunctionName": name,
        "FunctionArn": arn::function_arn(name, qualifier),
        "Runtime": v.config.runtime.as_str(),
        "Role": v.config.role,
        "Handler": v.config.handler,
        "CodeSize": v.code_size,
        "Description": v.config.description,
        "Timeout": v.config.timeout_s,
        "MemorySize": v.config.memory_mb,
        "LastModified": v.last_modified,
        "CodeSha256": hex_to_b64(&v.code_sha256),
        "Version": v.version,
        "TracingConfig": {"Mode": v.config.tracing_mode.as_str()},
        "RevisionId": v.revision_id,
        "State": "Active",
        "LastUpdateStatus": "Successful",
        "PackageType": "Zip",
        "Architectures": [HOST_ARCHITECTURE],
        "EphemeralStorage": {"Size": v.config.ephemeral_storage_mb},
        "LoggingConfig": v.config.logging.to_lambda(name),
        "SnapStart": {"ApplyOn": "None", "OptimizationStatus": "Off"},
    });
    if !v.config.env.is_empty() {
        out["Environment"] = json!({ "Variables": v.config.env });
    }
    if let Some(t) = &v.config.dead_letter_target {
        out["DeadLetterConfig"] = json!({ "TargetArn": t });
    }
    if !v.config.layers.is_empty() {
        out["Layers"] = crate::layers::config_layers(&v.config);
    }
    if v.config.instance_concurrency > 1 {
        // Lambda Managed Instances' shape; Nimbus keeps no capacity provider (it runs
        // functions on its own hosts), only the concurrency per execution environment.
        out["CapacityProviderConfig"] = json!({
            "LambdaManagedInstancesCapacityProviderConfig": {
                "PerExecutionEnvironmentMaxConcurrency": v.config.instance_concurrency,
            }
        });
    }
    out
}

fn alias_json(function: &str, a: &Alias) -> Value {
    let mut out = json!({
        "AliasArn": arn::function_arn(function, Some(&a.name)),
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if !a.routing.is_empty() {
        out["RoutingConfig"] = json!({ "AdditionalVersionWeights": a.routing });
    }
    out
}

/// Checks Lambda's Role pattern: `arn:aws:iam::123456789012:role/name`.
fn validate_role(role: &str) -> Result<(), ApiError> {
    let ok = role.len() <= 2048
        && role
            .strip_prefix("arn:")
            .and_then(|r| r.split_once(":iam::"))
            .is_some_and(|(partition, rest)| {
                partition.starts_with("aws")
                    && rest.split_once(":role/").is_some_and(|(acct, path)| {
                        acct.len() == 12
                            && acct.bytes().all(|b| b.is_ascii_digit())
                            && !path.is_empty()
                            && path
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"+=,.@-_/".contains(&b))
                    })
            });
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidParameter(format!(
            "1 validation error detected: Value '{role}' at 'role' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{{12}}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"
        )))
    }
}

fn decode_zip(b64: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|e| ApiError::InvalidParameter(format!("Code.ZipFile is not valid base64: {e}")))
}

/// Stores a package, pinned until the registry row naming it is committed: move the pin
/// into the blocking call that commits, so it is held even if the request goes away.
async fn store_zip(gw: &Arc<Gateway>, zip: Vec<u8>) -> Result<PinnedCode, ApiError> {
    let code = gw.code.clone();
    Ok(tokio::task::spawn_blocking(move || code.put(&zip)).await??)
}

/// Runs a blocking store call off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> nimbus_store::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(tokio::task::spawn_blocking(f).await??)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CodeInput {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct EnvironmentInput {
    variables: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct EphemeralStorageInput {
    size: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct TracingConfigInput {
    mode: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct LoggingConfigInput {
    log_format: Option<String>,
    application_log_level: Option<String>,
    system_log_level: Option<String>,
    log_group: Option<String>,
}

impl LoggingConfigInput {
    /// Merges the request into the stored `LoggingConfig` (absent fields keep their
    /// values; a switch to Text drops stored levels, which Text cannot have). Validated
    /// with the rest of the configuration.
    fn apply(&self, cfg: &mut nimbus_core::LoggingConfig) -> Result<(), ApiError> {
        use nimbus_core::{LogFormat, LogLevel};
        let blank = |v: &Option<String>| v.as_deref().filter(|s| !s.is_empty()).map(str::to_string);
        if let Some(f) = blank(&self.log_format) {
            cfg.format = LogFormat::parse(&f, false)?;
            if cfg.format == LogFormat::Text
                && blank(&self.application_log_level).is_none()
                && blank(&self.system_log_level).is_none()
            {
                cfg.application_level = None;
                cfg.system_level = None;
            }
        }
        if let Some(l) = blank(&self.application_log_level) {
            cfg.application_level = Some(LogLevel::parse_application(&l, false)?);
        }
        if let Some(l) = blank(&self.system_log_level) {
            cfg.system_level = Some(LogLevel::parse_system(&l, false)?);
        }
        if let Some(g) = blank(&self.log_group) {
            cfg.log_group = Some(g);
        }
        Ok(())
    }
}

/// Lambda Managed Instances' `CapacityProviderConfig`: its
/// `PerExecutionEnvironmentMaxConcurrency` is the function's `instance_concurrency`; the
/// capacity provider's ARN is accepted and not kept.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CapacityProviderConfigInput {
    lambda_managed_instances_capacity_provider_config: Option<ManagedInstancesInput>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ManagedInstancesInput {
    per_execution_environment_max_concurrency: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct DeadLetterConfigInput {
    target_arn: Option<String>,
}

/// The fields of CreateFunction and UpdateFunctionConfiguration that Nimbus applies; the
/// body is first checked against `lambda_fields::FIELDS`, which refuses the rest by name.
#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct ConfigInput {
    function_name: Option<String>,
    runtime: Option<String>,
    role: Option<String>,
    handler: Option<String>,
    description: Option<String>,
    timeout: Option<i64>,
    memory_size: Option<i64>,
    ephemeral_storage: Option<EphemeralStorageInput>,
    environment: Option<EnvironmentInput>,
    publish: Option<bool>,
    code: Option<CodeInput>,
    tags: Option<BTreeMap<String, String>>,
    tracing_config: Option<TracingConfigInput>,
    dead_letter_config: Option<DeadLetterConfigInput>,
    logging_config: Option<LoggingConfigInput>,
    capacity_provider_config: Option<CapacityProviderConfigInput>,
    layers: Option<Vec<String>>,
    revision_id: Option<String>,
}

/// Applies `Layers` (when the request names them) to `cfg`, else checks the layers it has
/// against a changed runtime; then the combined size of code and layers. Returns the pins
/// holding the layers' packages until the caller has committed the function.
async fn apply_layers(
    gw: &Arc<Gateway>,
    cfg: &mut FunctionConfig,
    input: &ConfigInput,
    code_sha256: &str,
) -> Result<Vec<nimbus_store::CodePin>, ApiError> {
    let arns: Vec<String> = match &input.layers {
        Some(arns) => arns.clone(),
        None if input.runtime.is_some() && !cfg.layers.is_empty() => {
            // A new runtime must suit the layers still published (a deleted one cannot be
            // checked, and stays as it is).
            let mut kept = Vec::new();
            for l in &cfg.layers {
                let (name, version) = arn::parse_layer_version_arn(&l.arn)?;
                match gw.store.layers().get_layer_version(&name, version) {
                    Ok(_) => kept.push(l.arn.clone()),
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            crate::layers::resolve(gw, &kept, &cfg.runtime).await?;
            return Ok(Vec::new());
        }
        None => return Ok(Vec::new()),
    };
    let (refs, pins) = crate::layers::resolve(gw, &arns, &cfg.runtime).await?;
    cfg.layers = refs;
    crate::layers::check_size(gw, cfg, code_sha256).await?;
    Ok(pins)
}

/// Parses a CreateFunction or UpdateFunctionConfiguration body: a JSON object whose every
/// field `lambda_fields::check` accepts for `op` (`function` is the function's name, which
/// the default log group contains).
fn config_body(
    op: Op,
    body: &[u8],
    function: impl FnOnce(&ConfigInput) -> Result<String, ApiError>,
) -> Result<ConfigInput, ApiError> {
    let map: Map<String, Value> = parse_body(body)?;
    let input: ConfigInput = serde_json::from_value(Value::Object(map.clone()))
        .map_err(|e| ApiError::InvalidParameter(format!("invalid request body: {e}")))?;
    lambda_fields::check(op, &map, &function(&input)?)?;
    Ok(input)
}

fn range(field: &str, v: i64, lo: u32, hi: u32) -> Result<u32, ApiError> {
    if v < i64::from(lo) || v > i64::from(hi) {
        return Err(ApiError::InvalidParameter(format!(
            "1 validation error detected: Value '{v}' at '{field}' failed to satisfy constraint: \
             Member must have value {} {lo} and {hi}",
            if v < i64::from(lo) {
                "greater than or equal to"
            } else {
                "between"
            }
        )));
    }
    Ok(v as u32)
}

/// Applies the configuration fields of a request to `cfg`.
fn apply_config(cfg: &mut FunctionConfig, input: &ConfigInput) -> Result<(), ApiError> {
    if let Some(r) = &input.runtime {
        cfg.runtime = Runtime::parse(r)?;
    }
    if let Some(h) = &input.handler {
        cfg.handler = h.clone();
    }
    if let Some(r) = &input.role {
        validate_role(r)?;
        cfg.role = r.clone();
    }
    if let Some(d) = &input.description {
        cfg.description = d.clone();
    }
    if let Some(t) = input.timeout {
        cfg.timeout_s = range("timeout", t, Limits::TIMEOUT_MIN_S, Limits::TIMEOUT_MAX_S)?;
    }
    if let Some(m) = input.memory_size {
        cfg.memory_mb = range(
            "memorySize",
            m,
            Limits::MEMORY_MIN_MB,
            Limits::MEMORY_MAX_MB,
        )?;
    }
    if let Some(size) = input.ephemeral_storage.as_ref().and_then(|e| e.size) {
        cfg.ephemeral_storage_mb = range(
            "ephemeralStorage.size",
            size,
            Limits::EPHEMERAL_MIN_MB,
            Limits::EPHEMERAL_MAX_MB,
        )?;
    }
    if let Some(env) = &input.environment {
        cfg.env = env.variables.clone().unwrap_or_default();
    }
    if let Some(mode) = input
        .tracing_config
        .as_ref()
        .and_then(|t| t.mode.as_deref())
    {
        cfg.tracing_mode = TracingMode::parse(mode)?;
    }
    if let Some(d) = &input.dead_letter_config {
        // An empty TargetArn (as Terraform and SAM send) removes it, as on Lambda.
        cfg.dead_letter_target = d.target_arn.clone().filter(|t| !t.is_empty());
    }
    if let Some(l) = &input.logging_config {
        l.apply(&mut cfg.logging)?;
    }
    if let Some(n) = input
        .capacity_provider_config
        .as_ref()
        .and_then(|c| c.lambda_managed_instances_capacity_provider_config.as_ref())
        .and_then(|m| m.per_execution_environment_max_concurrency)
    {
        cfg.instance_concurrency = range(
            "capacityProviderConfig.lambdaManagedInstancesCapacityProviderConfig.perExecutionEnvironmentMaxConcurrency",
            n,
            1,
            Limits::INSTANCE_CONCURRENCY_MAX,
        )?;
    }
    cfg.validate()?;
    Ok(())
}

fn code_zip(code: Option<&CodeInput>) -> Result<Option<Vec<u8>>, ApiError> {
    let Some(code) = code else { return Ok(None) };
    if code.s3_bucket.is_some() || code.image_uri.is_some() {
        return Err(ApiError::InvalidParameter(
            "only Code.ZipFile is supported: Nimbus has no S3 or container registry; upload the zip inline".into(),
        ));
    }
    code.zip_file.as_deref().map(decode_zip).transpose()
}

/// `POST /2015-03-31/functions` (CreateFunction)
pub(crate) async fn create_function(
    State(gw): State<Arc<Gateway>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input = config_body(Op::CreateFunction, &body, |input| {
        // The name for the default log group; a missing or bad name is reported below.
        Ok(input
            .function_name
            .as_deref()
            .and_then(|n| arn::parse_function_ref(n).ok())
            .map(|(n, _)| n.as_str().to_string())
            .unwrap_or_default())
    })?;
    let raw_name = input
        .function_name
        .as_deref()
        .ok_or_else(|| ApiError::InvalidParameter("FunctionName is required".into()))?;
    let (name, q) = arn::parse_function_ref(raw_name)?;
    if q.is_some() {
        return Err(ApiError::InvalidParameter(
            "FunctionName must not carry a qualifier".into(),
        ));
    }
    let runtime = input.runtime.as_deref().ok_or_else(|| {
        ApiError::InvalidParameter("Runtime is required for a Zip package".into())
    })?;
    let handler = input.handler.as_deref().ok_or_else(|| {
        ApiError::InvalidParameter("Handler is required for a Zip package".into())
    })?;
    let role = input
        .role
        .as_deref()
        .ok_or_else(|| ApiError::InvalidParameter("Role is required".into()))?;
    validate_role(role)?;
    let mut config = FunctionConfig::new(Runtime::parse(runtime)?, handler);
    apply_config(&mut config, &input)?;
    crate::dead_letter::check_target(&gw, &config).await?;
    let tags = input.tags.clone().unwrap_or_default();
    validate_tags(&tags)?;
    let zip = code_zip(input.code.as_ref())?
        .ok_or_else(|| ApiError::InvalidParameter("Code.ZipFile is required".into()))?;
    let code = store_zip(&gw, zip).await?;
    let layer_pins = match apply_layers(&gw, &mut config, &input, &code.info.sha256).await {
        Ok(p) => p,
        Err(e) => {
            drop(code);
            gw.collect_code_soon();
            return Err(e);
        }
    };
    let publish = input.publish.unwrap_or(false);
    let (store, n) = (gw.store.clone(), name.clone());
    let created = blocking(move || {
        let created = store.create(&n, &config, &code.info, &tags, publish);
        drop(code.pin);
        drop(layer_pins);
        created
    })
    .await;
    if created.is_err() {
        // The package just stored may be referenced by nothing.
        gw.collect_code_soon();
    }
    let (latest, published) = created?;
    gw.changed(&name)?;
    let shown = published.unwrap_or(latest);
    Ok((StatusCode::CREATED, Json(configuration(&shown))).into_response())
}

pub(crate) fn paginate<T>(
    items: Vec<T>,
    q: &Query,
    key: impl Fn(&T) -> String,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let max = max_items(q)?;
    let start = match marker(q)? {
        Some(after) => items
            .iter()
            .position(|i| key(i) > after)
            .unwrap_or(items.len()),
        None => 0,
    };
    let total = items.len();
    let page: Vec<T> = items.into_iter().skip(start).take(max).collect();
    let next = (start + page.len() < total)
        .then(|| {
            page.last()
                .map(|l| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key(l)))
        })
        .flatten();
    Ok((page, next))
}

/// `MaxItems` (1–10000, at most a page); a page when absent.
fn max_items(q: &Query) -> Result<usize, ApiError> {
    Ok(match first(q, "MaxItems") {
        Some(m) => m
            .parse::<usize>()
            .ok()
            .filter(|m| (1..=10_000).contains(m))
            .ok_or_else(|| {
                ApiError::InvalidParameter(format!(
                    "MaxItems {m:?} must be an integer from 1 to 10000"
                ))
            })?
            .min(PAGE_MAX),
        None => PAGE_MAX,
    })
}

/// The decoded `Marker`: the sort key of the last item of the previous page.
fn marker(q: &Query) -> Result<Option<String>, ApiError> {
    let Some(m) = first(q, "Marker") else {
        return Ok(None);
    };
    let invalid = || ApiError::InvalidParameter("invalid Marker".into());
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(m)
        .map_err(|_| invalid())?;
    String::from_utf8(bytes).map(Some).map_err(|_| invalid())
}

/// Sort key making `$LATEST` first and numbered versions ascending.
fn version_key(v: &FunctionVersion) -> String {
    let n = if v.version == LATEST {
        0
    } else {
        v.version.parse::<u64>().unwrap_or(0)
    };
    format!("{}\u{0}{n:020}", v.name)
}

/// `GET /2015-03-31/functions` (ListFunctions)
pub(crate) async fn list_functions(
    State(gw): State<Arc<Gateway>>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    let store = gw.store.clone();
    let all = first(&q, "FunctionVersion") == Some("ALL");
    if let Some(v) = first(&q, "FunctionVersion") {
        if v != "ALL" {
            return Err(ApiError::InvalidParameter(
                "FunctionVersion must be ALL".into(),
            ));
        }
    }
    // `$LATEST` only (the usual case): one page straight from the registry (the names
    // after the Marker's, one more than the page to know whether another follows).
    let after = marker(&q)?.map(|m| m.split('\u{0}').next().unwrap_or_default().to_string());
    let page_size = max_items(&q)?;
    let items = blocking(move || {
        if !all {
            return store.list_after(after.as_deref(), page_size + 1);
        }
        let latest = store.list()?;
        let mut out = Vec::new();
        for f in latest {
            out.extend(store.versions(&f.name)?);
        }
        Ok(out)
    })
    .await?;
    let (page, next) = paginate(items, &q, version_key)?;
    let mut out = json!({ "Functions": page.iter().map(configuration).collect::<Vec<_>>() });
    if let Some(n) = next {
        out["NextMarker"] = n.into();
    }
    Ok(Json(out))
}

/// Resolves `name[:qualifier]` to a stored version (aliases to their primary version).
async fn stored_version(
    gw: &Arc<Gateway>,
    name: &FunctionName,
    q: Option<&str>,
) -> Result<FunctionVersion, ApiError> {
    let version = match q {
        Some(q) if q != LATEST && !q.bytes().all(|b| b.is_ascii_digit()) => {
            gw.store.get_alias(name, q)?.function_version
        }
        Some(q) => q.to_string(),
        None => LATEST.to_string(),
    };
    Ok(gw.store.get(name, Some(&version))?)
}

/// `GET /2015-03-31/functions/{name}` (GetFunction)
pub(crate) async fn get_function(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    let (name, qualifier) = function_ref(&function, &q)?;
    let v = stored_version(&gw, &name, qualifier.as_deref()).await?;
    let meta = gw.store.meta(&name)?;
    let mut config = configuration(&v);
    if let Some(alias) = qualifier
        .as_deref()
        .filter(|q| *q != LATEST && !q.bytes().all(|b| b.is_ascii_digit()))
    {
        config["FunctionArn"] = arn::function_arn(name.as_str(), Some(alias)).into();
    }
    let location = format!(
        "{}/v1/functions/{}/code?qualifier={}",
        gw.cfg.public_url.trim_end_matches('/'),
        name,
        v.version.replace('$', "%24")
    );
    let mut out = json!({
        "Configuration": config,
        "Code": { "RepositoryType": "S3", "Location": location },
        "Tags": meta.tags,
    });
    if let Some(r) = meta.reserved_concurrency {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": r });
    }
    Ok(Json(out))
}

/// `GET /2015-03-31/functions/{name}/configuration` (GetFunctionConfiguration)
pub(crate) async fn get_configuration(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    let (name, qualifier) = function_ref(&function, &q)?;
    let v = stored_version(&gw, &name, qualifier.as_deref()).await?;
    Ok(Json(configuration(&v)))
}

fn unqualified(function: &str, q: &Query) -> Result<FunctionName, ApiError> {
    let (name, qualifier) = function_ref(function, q)?;
    if qualifier.is_some_and(|q| q != LATEST) {
        return Err(ApiError::InvalidParameter(
            "this operation applies to the unqualified function ($LATEST) only".into(),
        ));
    }
    Ok(name)
}

/// `PUT /2015-03-31/functions/{name}/configuration` (UpdateFunctionConfiguration)
pub(crate) async fn update_configuration(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let input = config_body(Op::UpdateFunctionConfiguration, &body, |_| {
        Ok(name.as_str().to_string())
    })?;
    let current = gw.store.get(&name, None)?;
    let mut config = current.config;
    apply_config(&mut config, &input)?;
    crate::dead_letter::check_target(&gw, &config).await?;
    let layer_pins = apply_layers(&gw, &mut config, &input, &current.code_sha256).await?;
    if let Some((route, other)) = gw.route_conflict(&name, &config.routes) {
        return Err(ApiError::Conflict(format!(
            "route {route} is already served by function {other}"
        )));
    }
    let (store, n, rev) = (gw.store.clone(), name.clone(), input.revision_id.clone());
    let v = blocking(move || {
        let v = store.update_latest(&n, Some(&config), None, rev.as_deref());
        drop(layer_pins);
        v
    })
    .await?;
    if input.layers.is_some() {
        // Layers the previous configuration named may be referenced no more.
        gw.collect_code_soon();
    }
    gw.changed(&name)?;
    Ok(Json(configuration(&v)))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct CodeUpdateInput {
    zip_file: Option<String>,
    s3_bucket: Option<String>,
    image_uri: Option<String>,
    publish: Option<bool>,
    dry_run: Option<bool>,
    revision_id: Option<String>,
    architectures: Option<Vec<String>>,
}

/// `PUT /2015-03-31/functions/{name}/code` (UpdateFunctionCode)
pub(crate) async fn update_code(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let input: CodeUpdateInput = parse_body(&body)?;
    drop(body);
    if input
        .architectures
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x != HOST_ARCHITECTURE))
    {
        return Err(ApiError::InvalidParameter(format!(
            "Architectures must be [\"{HOST_ARCHITECTURE}\"], the host's architecture"
        )));
    }
    let code_in = CodeInput {
        zip_file: input.zip_file,
        s3_bucket: input.s3_bucket,
        image_uri: input.image_uri,
    };
    let zip = code_zip(Some(&code_in))?
        .ok_or_else(|| ApiError::InvalidParameter("ZipFile is required".into()))?;
    let current = gw.store.get(&name, None)?;
    if input.dry_run.unwrap_or(false) {
        if let Some(r) = &input.revision_id {
            if *r != current.revision_id {
                return Err(ApiError::PreconditionFailed("The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id".into()));
            }
        }
        let info = CodeInfo::of(&zip);
        let mut shown = current;
        shown.code_sha256 = info.sha256;
        shown.code_size = info.size;
        return Ok(Json(configuration(&shown)));
    }
    let code = store_zip(&gw, zip).await?;
    if let Err(e) = crate::layers::check_size(&gw, &current.config, &code.info.sha256).await {
        drop(code);
        gw.collect_code_soon();
        return Err(e);
    }
    let (store, n, rev) = (gw.store.clone(), name.clone(), input.revision_id.clone());
    let publish = input.publish.unwrap_or(false);
    let shown = blocking(move || {
        let latest = store.update_latest(&n, None, Some(&code.info), rev.as_deref());
        drop(code.pin);
        let latest = latest?;
        if publish {
            store.publish(&n, None, None, None)
        } else {
            Ok(latest)
        }
    })
    .await;
    // The replaced code (or, after a failure, the new package) may be referenced no more.
    gw.collect_code_soon();
    let shown = shown?;
    gw.changed(&name)?;
    Ok(Json(configuration(&shown)))
}

/// `DELETE /2015-03-31/functions/{name}` (DeleteFunction, also one version with `Qualifier`)
pub(crate) async fn delete_function(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = parse_query(raw)?;
    let (name, qualifier) = function_ref(&function, &q)?;
    match qualifier.as_deref() {
        None => native::delete_function(&gw, &name).await?,
        Some(LATEST) => return Err(ApiError::InvalidParameter(
            "$LATEST version cannot be deleted without deleting the function: omit the Qualifier"
                .into(),
        )),
        Some(v) if v.bytes().all(|b| b.is_ascii_digit()) => {
            let (store, n, v) = (gw.store.clone(), name.clone(), v.to_string());
            let version = v.clone();
            blocking(move || store.delete_version(&n, &v)).await?;
            gw.cfg.metrics.remove_qualifier(name.as_str(), &version);
            gw.changed(&name)?;
            gw.collect_code_soon();
            crate::provisioned::reconcile(&gw, &name).await?;
        }
        Some(alias) => {
            return Err(ApiError::InvalidParameter(format!(
                "{alias} is an alias: delete it with DeleteAlias, or give a version number"
            )))
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PublishInput {
    code_sha256: Option<String>,
    description: Option<String>,
    revision_id: Option<String>,
}

/// `POST /2015-03-31/functions/{name}/versions` (PublishVersion)
pub(crate) async fn publish_version(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let input: PublishInput = parse_body(&body)?;
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > Limits::DESCRIPTION_MAX)
    {
        return Err(ApiError::InvalidParameter(format!(
            "Description must be at most {} characters",
            Limits::DESCRIPTION_MAX
        )));
    }
    // Lambda's CodeSha256 is base64; the store's content address is hex.
    let expected_sha = match input.code_sha256.as_deref() {
        Some(b64) => Some(hex::encode(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    ApiError::InvalidParameter(
                        "CodeSha256 must be the base64 SHA-256 of the code".into(),
                    )
                })?,
        )),
        None => None,
    };
    // Lambda answers a stale CodeSha256 with InvalidParameterValueException (a stale
    // RevisionId is the 412).
    if let Some(sha) = &expected_sha {
        let current = gw.store.get(&name, None)?.code_sha256;
        if !sha.eq_ignore_ascii_case(&current) {
            return Err(ApiError::InvalidParameter(format!(
                "CodeSHA256 ({}) is different from current CodeSHA256 in $LATEST ({}). Please try again with the current CodeSHA256.",
                input.code_sha256.as_deref().unwrap_or_default(),
                hex_to_b64(&current)
            )));
        }
    }
    let (store, n) = (gw.store.clone(), name.clone());
    let v = blocking(move || {
        store.publish(
            &n,
            input.description.as_deref(),
            expected_sha.as_deref(),
            input.revision_id.as_deref(),
        )
    })
    .await?;
    gw.changed(&name)?;
    Ok((StatusCode::CREATED, Json(configuration(&v))).into_response())
}

/// `GET /2015-03-31/functions/{name}/versions` (ListVersionsByFunction)
pub(crate) async fn list_versions(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    let name = unqualified(&function, &Query::new())?;
    let versions = gw.store.versions(&name)?;
    let (page, next) = paginate(versions, &q, version_key)?;
    let mut out = json!({ "Versions": page.iter().map(configuration).collect::<Vec<_>>() });
    if let Some(n) = next {
        out["NextMarker"] = n.into();
    }
    Ok(Json(out))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct RoutingInput {
    additional_version_weights: Option<BTreeMap<String, f64>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct AliasInput {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingInput>,
    revision_id: Option<String>,
}

fn check_alias_fields(input: &AliasInput) -> Result<Option<BTreeMap<String, f64>>, ApiError> {
    if input
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > Limits::DESCRIPTION_MAX)
    {
        return Err(ApiError::InvalidParameter(format!(
            "Description must be at most {} characters",
            Limits::DESCRIPTION_MAX
        )));
    }
    if let Some(v) = &input.function_version {
        if v != LATEST && (v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit())) {
            return Err(ApiError::InvalidParameter(format!(
                "FunctionVersion {v:?} must be $LATEST or a version number"
            )));
        }
    }
    Ok(input
        .routing_config
        .as_ref()
        .map(|r| r.additional_version_weights.clone().unwrap_or_default()))
}

/// `POST /2015-03-31/functions/{name}/aliases` (CreateAlias)
pub(crate) async fn create_alias(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let input: AliasInput = parse_body(&body)?;
    let alias_name = input
        .name
        .clone()
        .ok_or_else(|| ApiError::InvalidParameter("Name is required".into()))?;
    nimbus_core::control::validate_alias_name(&alias_name)?;
    let routing = check_alias_fields(&input)?.unwrap_or_default();
    let version = input
        .function_version
        .clone()
        .ok_or_else(|| ApiError::InvalidParameter("FunctionVersion is required".into()))?;
    let alias = Alias {
        name: alias_name,
        function_version: version,
        description: input.description.unwrap_or_default(),
        routing,
        revision_id: String::new(),
    };
    let (store, n) = (gw.store.clone(), name.clone());
    let created = blocking(move || store.create_alias(&n, &alias)).await?;
    gw.changed(&name)?;
    Ok((
        StatusCode::CREATED,
        Json(alias_json(name.as_str(), &created)),
    )
        .into_response())
}

/// `GET /2015-03-31/functions/{name}/aliases/{alias}` (GetAlias)
pub(crate) async fn get_alias(
    State(gw): State<Arc<Gateway>>,
    Path((function, alias)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let a = gw.store.get_alias(&name, &alias)?;
    Ok(Json(alias_json(name.as_str(), &a)))
}

/// `PUT /2015-03-31/functions/{name}/aliases/{alias}` (UpdateAlias)
pub(crate) async fn update_alias(
    State(gw): State<Arc<Gateway>>,
    Path((function, alias)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let input: AliasInput = parse_body(&body)?;
    let routing = check_alias_fields(&input)?;
    let (store, n) = (gw.store.clone(), name.clone());
    let a = blocking(move || {
        store.update_alias(
            &n,
            &alias,
            input.function_version.as_deref(),
            input.description.as_deref(),
            routing.as_ref(),
            input.revision_id.as_deref(),
        )
    })
    .await?;
    gw.changed(&name)?;
    crate::provisioned::reconcile(&gw, &name).await?;
    Ok(Json(alias_json(name.as_str(), &a)))
}

/// `DELETE /2015-03-31/functions/{name}/aliases/{alias}` (DeleteAlias)
pub(crate) async fn delete_alias(
    State(gw): State<Arc<Gateway>>,
    Path((function, alias)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let (store, n, a) = (gw.store.clone(), name.clone(), alias.clone());
    blocking(move || store.delete_alias(&n, &a)).await?;
    gw.cfg.metrics.remove_qualifier(name.as_str(), &alias);
    gw.changed(&name)?;
    crate::provisioned::reconcile(&gw, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /2015-03-31/functions/{name}/aliases` (ListAliases)
pub(crate) async fn list_aliases(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    let name = unqualified(&function, &Query::new())?;
    let aliases = gw.store.list_aliases(&name, first(&q, "FunctionVersion"))?;
    let (page, next) = paginate(aliases, &q, |a| a.name.clone())?;
    let mut out =
        json!({ "Aliases": page.iter().map(|a| alias_json(name.as_str(), a)).collect::<Vec<_>>() });
    if let Some(n) = next {
        out["NextMarker"] = n.into();
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ConcurrencyInput {
    reserved_concurrent_executions: Option<i64>,
}

/// Sum of the reservations of every function but `except`.
fn reserved_elsewhere(gw: &Gateway, except: Option<&FunctionName>) -> Result<u32, ApiError> {
    let mut sum = 0;
    for f in gw.store.list()? {
        if Some(&f.name) == except {
            continue;
        }
        sum += gw.store.meta(&f.name)?.reserved_concurrency.unwrap_or(0);
    }
    Ok(sum)
}

/// `PUT /2017-10-31/functions/{name}/concurrency` (PutFunctionConcurrency)
pub(crate) async fn put_concurrency(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let input: ConcurrencyInput = parse_body(&body)?;
    let n = input.reserved_concurrent_executions.ok_or_else(|| {
        ApiError::InvalidParameter("ReservedConcurrentExecutions is required".into())
    })?;
    let account = gw.account_concurrency();
    let n = range("reservedConcurrentExecutions", n, 0, account)?;
    gw.store.get(&name, None)?;
    let others = reserved_elsewhere(&gw, Some(&name))?;
    let floor = unreserved_floor(account);
    if others + n > account - floor {
        return Err(ApiError::InvalidParameter(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{floor}]."
        )));
    }
    let (store, nm) = (gw.store.clone(), name.clone());
    blocking(move || store.set_reserved_concurrency(&nm, Some(n))).await?;
    gw.changed(&name)?;
    Ok(Json(json!({ "ReservedConcurrentExecutions": n })))
}

/// `GET /2019-09-30/functions/{name}/concurrency` (GetFunctionConcurrency)
pub(crate) async fn get_concurrency(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let meta = gw.store.meta(&name)?;
    Ok(Json(match meta.reserved_concurrency {
        Some(n) => json!({ "ReservedConcurrentExecutions": n }),
        None => json!({}),
    }))
}

/// `DELETE /2017-10-31/functions/{name}/concurrency` (DeleteFunctionConcurrency)
pub(crate) async fn delete_concurrency(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = unqualified(&function, &Query::new())?;
    let (store, nm) = (gw.store.clone(), name.clone());
    blocking(move || store.set_reserved_concurrency(&nm, None)).await?;
    gw.changed(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /2016-08-19/account-settings` (GetAccountSettings)
pub(crate) async fn account_settings(
    State(gw): State<Arc<Gateway>>,
) -> Result<Json<Value>, ApiError> {
    let functions = gw.store.list()?;
    let mut total: u64 = 0;
    for f in &functions {
        total += gw
            .store
            .versions(&f.name)?
            .iter()
            .map(|v| v.code_size)
            .sum::<u64>();
    }
    let reserved = reserved_elsewhere(&gw, None)?;
    let account = gw.account_concurrency();
    Ok(Json(json!({
        "AccountLimit": {
            "TotalCodeSize": 80u64 * 1024 * 1024 * 1024,
            "CodeSizeUnzipped": Limits::CODE_UNZIPPED_MAX,
            "CodeSizeZipped": Limits::CODE_ZIPPED_MAX,
            "ConcurrentExecutions": account,
            "UnreservedConcurrentExecutions": account.saturating_sub(reserved),
        },
        "AccountUsage": { "TotalCodeSize": total, "FunctionCount": functions.len() },
    })))
}

/// The function a tag API resource ARN names (`arn:aws:lambda:…:function:NAME`).
fn tag_resource(resource: &str) -> Result<FunctionName, ApiError> {
    if !resource.starts_with("arn:") {
        return Err(ApiError::InvalidParameter(format!(
            "{resource} is not a function ARN"
        )));
    }
    let (name, q) = arn::parse_function_ref(resource)?;
    if q.is_some() {
        return Err(ApiError::InvalidParameter(
            "tags apply to unqualified function ARNs".into(),
        ));
    }
    Ok(name)
}

fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for (k, v) in tags {
        if k.is_empty()
            || k.chars().count() > 128
            || v.chars().count() > 256
            || k.starts_with("aws:")
        {
            return Err(ApiError::InvalidParameter(format!(
                "invalid tag {k:?}: keys have 1-128 characters and may not start with aws:, values at most 256"
            )));
        }
    }
    if tags.len() > 50 {
        return Err(ApiError::InvalidParameter(
            "at most 50 tags per function".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagInput {
    tags: BTreeMap<String, String>,
}

/// `POST /2017-03-31/tags/{ARN}` (TagResource)
pub(crate) async fn tag_resource_handler(
    State(gw): State<Arc<Gateway>>,
    Path(resource): Path<String>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let name = tag_resource(&resource)?;
    let input: TagInput = parse_body(&body)?;
    let mut merged = gw.store.meta(&name)?.tags;
    merged.extend(input.tags.clone());
    validate_tags(&merged)?;
    let store = gw.store.clone();
    blocking(move || store.tag(&name, &input.tags)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /2017-03-31/tags/{ARN}?tagKeys=…` (UntagResource)
pub(crate) async fn untag_resource(
    State(gw): State<Arc<Gateway>>,
    Path(resource): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let name = tag_resource(&resource)?;
    let q = parse_query(raw)?;
    let keys = q.get("tagKeys").cloned().unwrap_or_default();
    let store = gw.store.clone();
    blocking(move || store.untag(&name, &keys)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /2017-03-31/tags/{ARN}` (ListTags)
pub(crate) async fn list_tags(
    State(gw): State<Arc<Gateway>>,
    Path(resource): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = tag_resource(&resource)?;
    Ok(Json(json!({ "Tags": gw.store.meta(&name)?.tags })))
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct PermissionInput {
    statement_id: Option<String>,
    action: Option<String>,
    principal: Option<String>,
    source_arn: Option<String>,
    source_account: Option<String>,
    principal_org_i_d: Option<String>,
    function_url_auth_type: Option<String>,
    revision_id: Option<String>,
}

/// `POST /2015-03-31/functions/{name}/policy` (AddPermission)
pub(crate) async fn add_permission(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = parse_query(raw)?;
    let (name, qualifier) = function_ref(&function, &q)?;
    let input: PermissionInput = parse_body(&body)?;
    let sid = input.statement_id.clone().filter(|s| {
        !s.is_empty()
            && s.len() <= 100
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    let sid = sid.ok_or_else(|| {
        ApiError::InvalidParameter(
            "StatementId is required: 1-100 letters, digits, '-' or '_'".into(),
        )
    })?;
    let action = input
        .action
        .clone()
        .ok_or_else(|| ApiError::InvalidParameter("Action is required".into()))?;
    if !(action.starts_with("lambda:") || action == "*") {
        return Err(ApiError::InvalidParameter(format!(
            "Action {action:?} must be lambda:ACTION, e.g. lambda:InvokeFunction"
        )));
    }
    let principal = input
        .principal
        .clone()
        .ok_or_else(|| ApiError::InvalidParameter("Principal is required".into()))?;
    let principal_json = if principal.contains(".amazonaws.com") || principal.ends_with(".internal")
    {
        json!({ "Service": principal })
    } else {
        json!({ "AWS": principal })
    };
    let mut condition = Map::new();
    if let Some(a) = &input.source_arn {
        condition.insert("ArnLike".into(), json!({ "AWS:SourceArn": a }));
    }
    let mut equals = Map::new();
    if let Some(a) = &input.source_account {
        equals.insert("AWS:SourceAccount".into(), a.clone().into());
    }
    if let Some(o) = &input.principal_org_i_d {
        equals.insert("aws:PrincipalOrgID".into(), o.clone().into());
    }
    if let Some(t) = &input.function_url_auth_type {
        if t != "NONE" && t != "AWS_IAM" {
            return Err(ApiError::InvalidParameter(
                "FunctionUrlAuthType must be NONE or AWS_IAM".into(),
            ));
        }
        equals.insert("lambda:FunctionUrlAuthType".into(), t.clone().into());
    }
    if !equals.is_empty() {
        condition.insert("StringEquals".into(), Value::Object(equals));
    }
    let mut statement = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal_json,
        "Action": action,
        "Resource": arn::function_arn(name.as_str(), qualifier.as_deref()),
    });
    if !condition.is_empty() {
        statement["Condition"] = Value::Object(condition);
    }
    gw.store.get(&name, None)?;
    let (store, n, st, rev) = (
        gw.store.clone(),
        name.clone(),
        statement.clone(),
        input.revision_id.clone(),
    );
    blocking(move || store.add_permission(&n, &sid, st, rev.as_deref())).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Statement": statement.to_string() })),
    )
        .into_response())
}

/// `GET /2015-03-31/functions/{name}/policy` (GetPolicy)
pub(crate) async fn get_policy(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    let (name, _qualifier) = function_ref(&function, &q)?;
    let meta = gw.store.meta(&name)?;
    policy_reply(
        &meta.policy,
        &meta.policy_revision_id,
        "The resource you requested does not exist.",
    )
}

/// GetPolicy's and GetLayerVersionPolicy's reply: the statements as a policy document
/// (a string, as Lambda returns it) and its revision; `NotFound(missing)` without any.
pub(crate) fn policy_reply(
    statements: &[Value],
    revision_id: &str,
    missing: &str,
) -> Result<Json<Value>, ApiError> {
    if statements.is_empty() {
        return Err(ApiError::NotFound(missing.into()));
    }
    let policy = json!({ "Version": "2012-10-17", "Id": "default", "Statement": statements });
    Ok(Json(
        json!({ "Policy": policy.to_string(), "RevisionId": revision_id }),
    ))
}

/// `DELETE /2015-03-31/functions/{name}/policy/{sid}` (RemovePermission)
pub(crate) async fn remove_permission(
    State(gw): State<Arc<Gateway>>,
    Path((function, sid)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = parse_query(raw)?;
    let (name, _qualifier) = function_ref(&function, &q)?;
    let rev = first(&q, "RevisionId").map(str::to_string);
    let store = gw.store.clone();
    blocking(move || store.remove_permission(&name, &sid, rev.as_deref())).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert!(validate_role("arn:aws:iam::123456789012:role/lambda-role").is_ok());
        assert!(validate_role("arn:aws:iam::123456789012:role/path/to/x").is_ok());
        assert!(validate_role("arn:aws:iam::12345:role/x").is_err());
        assert!(validate_role("role").is_err());
        assert!(validate_role("arn:aws:iam::123456789012:user/x").is_err());
    }

    #[test]
    fn pagination_round_trip() {
        let items: Vec<String> = (0..120).map(|i| format!("f{i:03}")).collect();
        let q = |marker: Option<&str>, max: Option<&str>| {
            let mut q = Query::new();
            if let Some(m) = marker {
                q.insert("Marker".into(), vec![m.into()]);
            }
            if let Some(m) = max {
                q.insert("MaxItems".into(), vec![m.into()]);
            }
            q
        };
        let (p1, next) = paginate(items.clone(), &q(None, None), |s| s.clone()).unwrap();
        assert_eq!(p1.len(), 50);
        let (p2, next) = paginate(items.clone(), &q(next.as_deref(), Some("60")), |s| {
            s.clone()
        })
        .unwrap();
        assert_eq!(p2.first().unwrap(), "f050");
        assert_eq!(p2.len(), 50, "MaxItems is capped at 50");
        let (p3, next) = paginate(items.clone(), &q(next.as_deref(), None), |s| s.clone()).unwrap();
        assert_eq!(p3.len(), 20);
        assert!(next.is_none());
        assert!(paginate(items, &q(Some("!!"), None), |s| s.clone()).is_err());
    }

    #[test]
    fn query_keeps_repeated_keys() {
        let q = parse_query(Some("tagKeys=a&tagKeys=b%20c&Qualifier=%24LATEST".into())).unwrap();
        assert_eq!(q["tagKeys"], vec!["a", "b c"]);
        assert_eq!(first(&q, "Qualifier"), Some("$LATEST"));
    }
}
