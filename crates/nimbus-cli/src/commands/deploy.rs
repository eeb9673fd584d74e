//! `nimbus deploy`: package code, validate config locally, `PUT /v1/functions/{name}`.
//! Also the deploy path `nimbus up` uses.

use crate::build::CacheUse;
use crate::cli::DeployArgs;
use crate::client::Client;
use crate::errors::Hinted;
use crate::output::{deployed_line, human_size, DeployReply};
use anyhow::{bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use nimbus_core::manifest::{self, ManifestFunction};
use nimbus_core::{FunctionConfig, FunctionName, Limits, RouteSpec, Runtime, RuntimeFamily};
use serde_json::Value;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "nimbus.toml";

/// Bodies above this size get a progress bar (when stderr is a terminal).
const PROGRESS_THRESHOLD: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// Where a function's code comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeSource {
    Dir(PathBuf),
    Zip(PathBuf),
}

/// One function to deploy: validated name and config plus its code.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: FunctionName,
    pub config: FunctionConfig,
    pub code: CodeSource,
}

pub async fn run(client: &Client, args: DeployArgs, json: bool) -> Result<()> {
    let targets = if args.name.is_some() {
        vec![single_target(&args)?]
    } else if !args.path.exists() {
        bail!("{} does not exist", args.path.display());
    } else if args.path.is_file() {
        return Err(Hinted::error(
            format!("{} is a file, not a project directory", args.path.display()),
            "to deploy a .zip as one function add --name NAME --runtime RUNTIME --handler HANDLER",
        ));
    } else {
        manifest_targets(&args.path)?
    };
    let mut targets = targets;
    if args.name.is_none() {
        // Roles before the functions whose instances assume them.
        let roles = super::role::manifest_roles(&args.path)?;
        for line in super::role::apply_roles(client, &roles).await? {
            if !json {
                super::print(format!("{line}\n"))?;
            }
        }
    }
    if args.name.is_none() {
        // Layers first: the functions' deploys name the versions published here.
        let layers = manifest_layers(&args.path)?;
        for line in
            super::layer::publish_manifest_layers(client, &args.path, &layers, &mut targets).await?
        {
            if !json {
                super::print(format!("{line}\n"))?;
            }
        }
    }
    let queue_config = if args.name.is_none() {
        Some(super::queue::manifest_queue_config(&args.path)?)
    } else {
        None
    };
    let bus_config = if args.name.is_none() {
        Some(manifest_bus_config(&args.path)?)
    } else {
        None
    };
    let alarms = if args.name.is_none() {
        manifest_alarms(&args.path)?
    } else {
        Vec::new()
    };
    let s3_triggers = if args.name.is_none() {
        Some(manifest_s3_triggers(&args.path)?)
    } else {
        None
    };
    let sources = if args.name.is_none() {
        Some(manifest_sources(&args.path)?)
    } else {
        None
    };
    // Read (and checked) now, applied last: their definitions name the functions.
    let workflows = if args.name.is_none() {
        super::flows::manifest_workflows(&args.path)?
    } else {
        Vec::new()
    };
    let options = DeployOptions {
        no_build: args.no_build,
    };
    // Every function is built before any is uploaded: a failed build deploys nothing.
    let mut packages = Vec::new();
    for t in &targets {
        packages.push(build_package(t, options).await?);
    }
    let mut replies = Vec::new();
    for (t, package) in targets.iter().zip(packages) {
        let reply = upload(client, t, package).await?;
        if json {
            replies.push(reply);
        } else {
            super::print(format!("{}\n", deployed_line(&parse_reply(&reply)?)))?;
        }
    }
    if let Some((buses, rules)) = &bus_config {
        for line in apply_bus_config(client, buses, rules).await? {
            if !json {
                super::print(format!("{line}\n"))?;
            }
        }
    }
    if let Some((queues, mappings)) = &queue_config {
        for line in super::queue::apply_queue_config(client, queues, mappings).await? {
            if !json {
                super::print(format!("{line}\n"))?;
            }
        }
    }
    if let Some((functions, triggers)) = &s3_triggers {
        for line in super::s3_triggers::apply(client, functions, triggers).await? {
            if !json {
                super::print(format!("{line}\n"))?;
            }
        }
    }
    if let Some((functions, sources, targets)) = &sources {
        for line in super::sources::apply_targets(client, targets).await? {
            if !json {
                super::print(format!("{line}\n"))?;
            }
        }
        for line in super::sources::apply(client, functions, sources).await? {
            if !json {
                super::print(format!("{line}\n"))?;
            }
        }
    }
    for line in apply_alarms(client, &alarms).await? {
        if !json {
            super::print(format!("{line}\n"))?;
        }
    }
    for line in super::flows::apply(client, &workflows).await? {
        if !json {
            super::print(format!("{line}\n"))?;
        }
    }
    if json {
        // one function: its reply; a manifest: the list of replies
        let out = if args.name.is_some() {
            replies.remove(0)
        } else {
            Value::Array(replies)
        };
        super::print_json(&out)?;
    }
    Ok(())
}

pub fn parse_reply(v: &Value) -> Result<DeployReply> {
    serde_json::from_value(v.clone())
        .context("the server sent a deploy reply in an unexpected shape")
}

/// Reads and validates `dir/nimbus.toml` and the manifests it includes; code directories
/// of included functions are made relative to `dir`.
pub fn load_manifest(dir: &Path) -> Result<Vec<ManifestFunction>> {
    let mut out = Vec::new();
    load_manifest_into(dir, Path::new(""), 0, &mut out)?;
    let mut seen = std::collections::HashSet::new();
    for f in &out {
        if !seen.insert(f.name.clone()) {
            bail!(
                "function {} is declared twice in {} and its includes",
                f.name,
                dir.display()
            );
        }
    }
    Ok(out)
}

fn load_manifest_into(
    root: &Path,
    rel: &Path,
    depth: usize,
    out: &mut Vec<ManifestFunction>,
) -> Result<()> {
    if depth > 8 {
        bail!(
            "includes nest deeper than 8 levels at {}: is there a cycle?",
            root.join(rel).display()
        );
    }
    let dir = if rel.as_os_str().is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let project = read_manifest(&dir)?;
    for mut f in project.functions {
        f.code = rel.join(&f.code).to_string_lossy().into_owned();
        read_jwks_files(&dir, &mut f.config)?;
        out.push(f);
    }
    for inc in project.include {
        load_manifest_into(root, &rel.join(inc), depth + 1, out)?;
    }
    Ok(())
}

/// Replaces each authorizer's `jwks_file` (relative to the manifest) by the keys it holds:
/// the server never reads client files.
fn read_jwks_files(dir: &Path, config: &mut FunctionConfig) -> Result<()> {
    for (name, a) in config.authorizers.iter_mut() {
        if let Some(file) = a.jwks_file.take() {
            let path = dir.join(&file);
            let text = std::fs::read_to_string(&path).with_context(|| {
                format!(
                    "authorizer {name}: cannot read jwks_file {}",
                    path.display()
                )
            })?;
            let doc: Value = serde_json::from_str(&text)
                .with_context(|| format!("authorizer {name}: {} is not JSON", path.display()))?;
            if !doc.get("keys").is_some_and(Value::is_array) {
                bail!(
                    "authorizer {name}: {} is not a JWKS (an object with a \"keys\" array)",
                    path.display()
                );
            }
            a.jwks = Some(doc);
        }
    }
    Ok(())
}

pub(crate) fn read_manifest(dir: &Path) -> Result<manifest::Project> {
    let path = dir.join(MANIFEST);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Hinted::error(
                format!("no {MANIFEST} in {} — create one, see examples/", dir.display()),
                "or deploy a single function: nimbus deploy PATH --name NAME --runtime RUNTIME --handler HANDLER",
            ));
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    manifest::parse_project(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// `dir/nimbus.toml` and every manifest it includes, depth first.
pub(crate) fn manifest_projects(dir: &Path) -> Result<Vec<manifest::Project>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<manifest::Project>) -> Result<()> {
        if depth > 8 {
            bail!("includes nest deeper than 8 levels at {}", dir.display());
        }
        let p = read_manifest(dir)?;
        let include = p.include.clone();
        out.push(p);
        for inc in include {
            walk(&dir.join(inc), depth + 1, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out)?;
    Ok(out)
}

/// The buses and rules (function schedules included) of `dir/nimbus.toml` and its includes.
pub fn manifest_bus_config(dir: &Path) -> Result<(Vec<String>, Vec<manifest::ManifestRule>)> {
    let (mut buses, mut rules) = (Vec::new(), Vec::new());
    for p in manifest_projects(dir)? {
        buses.extend(p.buses);
        rules.extend(p.rules);
    }
    Ok((buses, rules))
}

/// The functions of `dir/nimbus.toml` and its includes, and their `[[functions.NAME.s3]]`
/// triggers.
pub fn manifest_s3_triggers(dir: &Path) -> Result<(Vec<String>, Vec<manifest::ManifestS3Trigger>)> {
    let (mut functions, mut triggers) = (Vec::new(), Vec::new());
    for p in manifest_projects(dir)? {
        functions.extend(p.functions.iter().map(|f| f.name.to_string()));
        triggers.extend(p.s3_triggers);
    }
    Ok((functions, triggers))
}

/// The functions of `dir/nimbus.toml` and its includes, their
/// `[[functions.NAME.sources]]` and the `[targets.NAME]`.
pub fn manifest_sources(dir: &Path) -> Result<ManifestSources> {
    let (mut functions, mut sources, mut targets) = (Vec::new(), Vec::new(), Vec::new());
    for p in manifest_projects(dir)? {
        functions.extend(p.functions.iter().map(|f| f.name.to_string()));
        sources.extend(p.sources);
        targets.extend(p.targets);
    }
    Ok((functions, sources, targets))
}

/// A manifest's functions, their `[[functions.NAME.sources]]` and its `[targets.NAME]`.
pub type ManifestSources = (
    Vec<String>,
    Vec<manifest::ManifestSource>,
    Vec<manifest::ManifestTarget>,
);

/// The `[alarms.NAME]` of `dir/nimbus.toml` and its includes.
pub fn manifest_alarms(dir: &Path) -> Result<Vec<(String, nimbus_core::AlarmSpec)>> {
    Ok(manifest_projects(dir)?
        .into_iter()
        .flat_map(|p| p.alarms)
        .collect())
}

/// Creates or replaces the alarms (after the functions they watch are deployed); returns
/// one line per alarm.
pub async fn apply_alarms(
    client: &Client,
    alarms: &[(String, nimbus_core::AlarmSpec)],
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for (name, spec) in alarms {
        client
            .send(
                client
                    .request(reqwest::Method::PUT, &["v1", "alarms", name])
                    .json(spec),
            )
            .await
            .with_context(|| format!("cannot save alarm {name}"))?;
        lines.push(format!(
            "alarm {name}: {} {} {} on {}",
            spec.metric, spec.comparison, spec.threshold, spec.function
        ));
    }
    Ok(lines)
}

/// Creates the buses, then creates or replaces the rules (after the functions they feed
/// are deployed); returns one line per rule.
pub async fn apply_bus_config(
    client: &Client,
    buses: &[String],
    rules: &[manifest::ManifestRule],
) -> Result<Vec<String>> {
    use reqwest::Method;
    for b in buses {
        client
            .send(client.request(Method::PUT, &["v1", "buses", b]))
            .await
            .with_context(|| format!("cannot create event bus {b}"))?;
    }
    let mut lines = Vec::new();
    for r in rules {
        client
            .send(
                client
                    .request(Method::PUT, &["v1", "buses", &r.bus, "rules", &r.name])
                    .json(&r.api_body()),
            )
            .await
            .with_context(|| format!("cannot save rule {} on bus {}", r.name, r.bus))?;
        let what = r.schedule.clone().unwrap_or_else(|| "event pattern".into());
        lines.push(format!(
            "rule {} on bus {} ({what}) → {}",
            r.name,
            r.bus,
            r.targets.join(", ")
        ));
    }
    Ok(lines)
}

/// The deploy targets of a manifest, code directories resolved against `dir`.
pub fn manifest_targets(dir: &Path) -> Result<Vec<Target>> {
    Ok(load_manifest(dir)?
        .into_iter()
        .map(|f| manifest_target(dir, f))
        .collect())
}

pub fn manifest_target(dir: &Path, f: ManifestFunction) -> Target {
    let mut config = f.config;
    // Manifest layer names until `layer::publish_manifest_layers` makes them ARNs.
    config.layers = super::layer::unresolved(&f.layers);
    Target {
        code: CodeSource::Dir(dir.join(&f.code)),
        name: f.name,
        config,
    }
}

/// The `[layers.NAME]` of `dir/nimbus.toml` and its includes, paths relative to `dir`.
pub fn manifest_layers(dir: &Path) -> Result<Vec<manifest::ManifestLayer>> {
    fn walk(
        root: &Path,
        rel: &Path,
        depth: usize,
        out: &mut Vec<manifest::ManifestLayer>,
    ) -> Result<()> {
        if depth > 8 {
            bail!(
                "includes nest deeper than 8 levels at {}",
                root.join(rel).display()
            );
        }
        let project = read_manifest(&root.join(rel))?;
        for mut l in project.layers {
            if out.iter().any(|o| o.name == l.name) {
                bail!(
                    "layer {} is declared twice in {} and its includes",
                    l.name,
                    root.display()
                );
            }
            l.path = rel.join(&l.path).to_string_lossy().into_owned();
            out.push(l);
        }
        for inc in project.include {
            walk(root, &rel.join(inc), depth + 1, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, Path::new(""), 0, &mut out)?;
    Ok(out)
}

/// `nimbus deploy PATH --name … --runtime …`: builds and validates the config from flags.
pub fn single_target(args: &DeployArgs) -> Result<Target> {
    let raw_name = args.name.as_deref().context("--name is required")?;
    let name = FunctionName::parse(raw_name)?;
    let runtime_text = args
        .runtime
        .as_deref()
        .context("--runtime is required with --name")?;
    let runtime = Runtime::parse(runtime_text)?;
    let handler = match (&args.handler, runtime.family()) {
        (Some(h), _) => h.clone(),
        (None, RuntimeFamily::Provided) => "bootstrap".into(),
        (None, _) => {
            bail!("--handler is required for {runtime}, for example --handler index.handler")
        }
    };
    let mut config = FunctionConfig::new(runtime, handler);
    if let Some(m) = args.memory {
        config.memory_mb = m;
    }
    if let Some(t) = args.timeout {
        config.timeout_s = t;
    }
    if let Some(e) = args.ephemeral_storage {
        config.ephemeral_storage_mb = e;
    }
    if let Some(c) = args.concurrency {
        config.concurrency = c;
    }
    if let Some(d) = &args.description {
        config.description = d.clone();
    }
    config.url = args.url;
    config.host_services = args.host_services.clone();
    if let Some(n) = args.network {
        config.network = n;
    }
    config.env = args.env.iter().cloned().collect();
    config.secrets = args.secret_env.iter().cloned().collect();
    config.routes = args
        .routes
        .iter()
        .map(|r| RouteSpec::parse(r))
        .collect::<Result<_, _>>()?;
    config
        .validate()
        .with_context(|| format!("invalid configuration for {name}"))?;
    Ok(Target {
        name,
        config,
        code: code_source(&args.path)?,
    })
}

/// A directory or a `.zip` file.
pub fn code_source(path: &Path) -> Result<CodeSource> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.is_dir() {
        Ok(CodeSource::Dir(path.to_path_buf()))
    } else if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("zip"))
    {
        Ok(CodeSource::Zip(path.to_path_buf()))
    } else {
        bail!("{} is neither a directory nor a .zip file", path.display())
    }
}

/// How `nimbus deploy` and `nimbus up` treat code directories.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeployOptions {
    /// `--no-build`: package the directory as it is (no Go/Java build, no dependencies).
    pub no_build: bool,
}

/// A function's code, packaged and ready to upload.
pub struct Package {
    pub zip: Vec<u8>,
    /// How the build used the dependency cache (reported as `build.cache`).
    pub cache: CacheUse,
}

/// Builds the zip of a code source: a directory is built first (see `crate::build`)
/// unless `options.no_build`.
pub async fn package(
    code: &CodeSource,
    config: &FunctionConfig,
    options: DeployOptions,
) -> Result<Package> {
    let (zip, cache) = match code {
        CodeSource::Dir(dir) => {
            if !dir.is_dir() {
                bail!("code directory {} does not exist", dir.display());
            }
            let built = if options.no_build {
                crate::build::Built::as_is(dir)
            } else {
                crate::build::prepare(dir, config).await?
            };
            let d = built.prepared.dir().to_path_buf();
            let zip = tokio::task::spawn_blocking(move || nimbus_store::zip_dir(&d))
                .await
                .context("packaging task failed")?
                .with_context(|| format!("cannot package {}", dir.display()))?;
            (zip, built.cache)
        }
        CodeSource::Zip(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .with_context(|| format!("cannot read {}", path.display()))?;
            zip::ZipArchive::new(std::io::Cursor::new(&bytes))
                .with_context(|| format!("{} is not a valid zip file", path.display()))?;
            (bytes, CacheUse::None)
        }
    };
    if zip.len() as u64 > Limits::CODE_ZIPPED_MAX {
        bail!(
            "the code package is {}, more than the {} limit for zipped code",
            human_size(zip.len() as u64),
            human_size(Limits::CODE_ZIPPED_MAX)
        );
    }
    Ok(Package { zip, cache })
}

/// The `PUT /v1/functions/{name}` body: `{"config": …, "code_zip": "<base64>"}`.
pub fn request_body(config: &FunctionConfig, zip: &[u8]) -> Result<Vec<u8>> {
    let body = serde_json::json!({
        "config": config,
        "code_zip": base64::engine::general_purpose::STANDARD.encode(zip),
    });
    Ok(serde_json::to_vec(&body)?)
}

/// Builds, packages and uploads one function; returns the server's JSON reply with
/// `build.cache` added.
pub async fn deploy(client: &Client, t: &Target, options: DeployOptions) -> Result<Value> {
    let package = build_package(t, options).await?;
    upload(client, t, package).await
}

/// Builds and packages one function (nothing is sent).
pub async fn build_package(t: &Target, options: DeployOptions) -> Result<Package> {
    package(&t.code, &t.config, options)
        .await
        .with_context(|| format!("nothing was deployed for {}", t.name))
}

/// Uploads a packaged function; returns the server's JSON reply with `build.cache` added.
pub async fn upload(client: &Client, t: &Target, package: Package) -> Result<Value> {
    let Package { zip, cache } = package;
    let body = request_body(&t.config, &zip)?;
    drop(zip);
    let len = body.len();
    let sha256 = nimbus_auth::sigv4::payload_hash(&body);
    let progress = (len > PROGRESS_THRESHOLD && std::io::stderr().is_terminal())
        .then(|| progress_bar(&t.name, len));
    let req_body = match &progress {
        Some(bar) => chunked_body(Bytes::from(body), bar.clone()),
        None => reqwest::Body::from(body),
    };
    let reply = client
        .put_function(t.name.as_str(), req_body, len as u64, &sha256)
        .await;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    let mut reply = reply?;
    if let Value::Object(map) = &mut reply {
        map.insert("build".into(), serde_json::json!({ "cache": cache }));
    }
    Ok(reply)
}

fn progress_bar(name: &FunctionName, len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "uploading {msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_message(name.to_string());
    bar
}

/// Streams `body` in chunks, advancing `bar` as reqwest consumes them.
fn chunked_body(body: Bytes, bar: ProgressBar) -> reqwest::Body {
    let len = body.len();
    let chunks = (0..len)
        .step_by(CHUNK)
        .map(move |i| body.slice(i..(i + CHUNK).min(len)));
    let stream = futures_util::stream::iter(chunks).map(move |chunk| {
        bar.inc(chunk.len() as u64);
        Ok::<_, std::io::Error>(chunk)
    });
    reqwest::Body::wrap_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn test_config() -> FunctionConfig {
        FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), "index.handler")
    }

    fn deploy_args(args: &[&str]) -> DeployArgs {
        let cli = Cli::try_parse_from(
            std::iter::once("nimbus")
                .chain(std::iter::once("deploy"))
                .chain(args.iter().copied()),
        )
        .unwrap();
        match cli.command {
            Command::Deploy(d) => d,
            _ => unreachable!(),
        }
    }

    #[test]
    fn single_target_from_flags() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_str().unwrap();
        let t = single_target(&deploy_args(&[
            p,
            "--name",
            "hello",
            "--runtime",
            "python3.12",
            "--handler",
            "app.handler",
            "--memory",
            "256",
            "--env",
            "A=1",
            "--url",
            "--route",
            "GET /hi",
        ]))
        .unwrap();
        assert_eq!(t.name.as_str(), "hello");
        assert_eq!(t.config.memory_mb, 256);
        assert_eq!(t.config.env["A"], "1");
        assert!(t.config.url);
        assert_eq!(t.config.routes[0].key(), "GET /hi");
        assert_eq!(t.code, CodeSource::Dir(dir.path().to_path_buf()));
        // provided runtimes default the handler
        let t = single_target(&deploy_args(&[
            p,
            "--name",
            "b",
            "--runtime",
            "provided.al2023",
        ]))
        .unwrap();
        assert_eq!(t.config.handler, "bootstrap");
    }

    #[test]
    fn single_target_validates_locally() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().to_str().unwrap();
        let err = |args: &[&str]| format!("{:#}", single_target(&deploy_args(args)).unwrap_err());
        assert!(
            err(&[p, "--name", "x", "--runtime", "nodejs20.x"]).contains("--handler is required")
        );
        assert!(
            err(&[p, "--name", "x", "--runtime", "cobol", "--handler", "a.b"])
                .contains("unsupported runtime")
        );
        assert!(err(&[
            p,
            "--name",
            "bad name",
            "--runtime",
            "nodejs20.x",
            "--handler",
            "a.b"
        ])
        .contains("invalid function name"));
        let e = err(&[
            p,
            "--name",
            "x",
            "--runtime",
            "nodejs20.x",
            "--handler",
            "a.b",
            "--memory",
            "64",
        ]);
        assert!(
            e.contains("invalid configuration for x") && e.contains("128-10240"),
            "{e}"
        );
        assert!(err(&[
            p,
            "--name",
            "x",
            "--runtime",
            "nodejs20.x",
            "--handler",
            "a.b",
            "--env",
            "AWS_REGION=x"
        ])
        .contains("reserved"));
    }

    #[test]
    fn code_sources() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("code.ZIP");
        std::fs::write(&zip, b"PK").unwrap();
        let txt = dir.path().join("code.txt");
        std::fs::write(&txt, b"x").unwrap();
        assert_eq!(code_source(&zip).unwrap(), CodeSource::Zip(zip.clone()));
        assert!(code_source(&txt)
            .unwrap_err()
            .to_string()
            .contains("neither a directory nor a .zip"));
        assert!(code_source(&dir.path().join("missing")).is_err());
    }

    #[tokio::test]
    async fn bad_zip_files_are_rejected_locally() {
        let dir = tempfile::tempdir().unwrap();
        let zip = dir.path().join("code.zip");
        std::fs::write(&zip, b"not a zip").unwrap();
        let e = package(
            &CodeSource::Zip(zip),
            &test_config(),
            DeployOptions::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(e.to_string().contains("not a valid zip"), "{e}");
        let e = package(
            &CodeSource::Dir(dir.path().join("nope")),
            &test_config(),
            DeployOptions::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn manifest_loading() {
        let dir = tempfile::tempdir().unwrap();
        let e = load_manifest(dir.path()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "no nimbus.toml in {} — create one, see examples/",
                dir.path().display()
            )
        );
        std::fs::write(
            dir.path().join(MANIFEST),
            "[functions.a]\nruntime = \"nodejs20.x\"\nhandler = \"i.h\"\ncode = \"src\"\n",
        )
        .unwrap();
        let t = manifest_targets(dir.path()).unwrap();
        assert_eq!(t[0].code, CodeSource::Dir(dir.path().join("src")));
        std::fs::write(
            dir.path().join(MANIFEST),
            "[functions.a]\nruntime = \"cobol\"\n",
        )
        .unwrap();
        let e = format!("{:#}", load_manifest(dir.path()).unwrap_err());
        assert!(
            e.contains("nimbus.toml is not valid") && e.contains("functions.a"),
            "{e}"
        );
    }

    #[test]
    fn body_shape() {
        let config = FunctionConfig::new(Runtime::parse("nodejs20.x").unwrap(), "index.handler");
        let body: Value =
            serde_json::from_slice(&request_body(&config, b"zipbytes").unwrap()).unwrap();
        assert_eq!(body["code_zip"], "emlwYnl0ZXM=");
        assert_eq!(body["config"]["runtime"], "nodejs20.x");
        assert_eq!(body["config"]["memory_mb"], 128);
        assert_eq!(body["config"]["routes"], serde_json::json!([]));
    }
}
