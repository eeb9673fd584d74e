//! The project manifest, `nimbus.toml`:
//!
//! ```toml
//! [functions.hello]
//! runtime = "nodejs20.x"
//! handler = "index.handler"
//! code = "."                # directory relative to the manifest (default ".")
//! memory = 128              # MB, 128-10240
//! timeout = 3               # seconds, 1-900
//! concurrency = 10          # max concurrent instances
//! url = true                # function URL at /fn/hello/
//! routes = ["GET /hello/{name}"]
//! env = { GREETING = "hi" }
//! ```
//!
//! A manifest may also pull in other projects, each a directory with its own
//! `nimbus.toml` (paths relative to this manifest): `include = ["api", "worker"]`.

use crate::{CoreError, FunctionConfig, FunctionName, Limits, RouteSpec, Runtime};
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    functions: BTreeMap<String, RawFunction>,
    #[serde(default)]
    include: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFunction {
    runtime: String,
    handler: Option<String>,
    code: Option<String>,
    memory: Option<u32>,
    timeout: Option<u32>,
    concurrency: Option<u32>,
    description: Option<String>,
    #[serde(default)]
    url: bool,
    #[serde(default)]
    routes: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

/// One function declared in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFunction {
    pub name: FunctionName,
    /// Code directory, relative to the manifest's directory.
    pub code: String,
    pub config: FunctionConfig,
}

/// A parsed manifest: its own functions and the project directories it includes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub functions: Vec<ManifestFunction>,
    /// Directories (relative to the manifest) holding further `nimbus.toml` files.
    pub include: Vec<String>,
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
    if raw.functions.is_empty() && raw.include.is_empty() {
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
    for (name, f) in raw.functions {
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
        config.concurrency = f.concurrency.unwrap_or(Limits::CONCURRENCY_DEFAULT);
        config.description = f.description.unwrap_or_default();
        config.url = f.url;
        config.env = f.env;
        config.routes = f
            .routes
            .iter()
            .map(|r| RouteSpec::parse(r))
            .collect::<Result<_, _>>()
            .map_err(ctx)?;
        config.validate().map_err(ctx)?;
        out.push(ManifestFunction {
            name: fname,
            code: f.code.unwrap_or_else(|| ".".into()),
            config,
        });
    }
    Ok(Project {
        functions: out,
        include: raw.include,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_manifest() {
        let m = parse(
            r#"
            [functions.hello]
            runtime = "nodejs20.x"
            handler = "index.handler"
            memory = 256
            timeout = 10
            url = true
            routes = ["GET /hello/{name}"]
            env = { GREETING = "hi" }

            [functions.worker]
            runtime = "provided.al2023"
            code = "worker"
            "#,
        )
        .unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name.as_str(), "hello");
        assert_eq!(m[0].config.memory_mb, 256);
        assert_eq!(m[0].config.routes[0].key(), "GET /hello/{name}");
        assert_eq!(m[0].config.env["GREETING"], "hi");
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
    }

    #[test]
    fn includes() {
        let p = parse_project("include = [\"a\", \"b/c\"]\n").unwrap();
        assert_eq!(p.include, vec!["a", "b/c"]);
        assert!(p.functions.is_empty());
        assert!(parse_project("include = [\"/abs\"]\n").is_err());
        assert!(parse("include = [\"a\"]\n").is_err());
    }
}
