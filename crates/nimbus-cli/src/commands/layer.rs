//! `nimbus layer publish|ls` (Lambda's layer API, `/2018-10-31/layers`) and the manifest's
//! layers: [`publish_manifest_layers`] publishes each `[layers.NAME]` whose content changed
//! and points the functions that name it at the version's ARN.

use super::deploy::Target;
use crate::cli::{LayerArgs, LayerCommand};
use crate::client::Client;
use anyhow::{bail, Context, Result};
use base64::Engine;
use nimbus_core::manifest::ManifestLayer;
use nimbus_core::{arn, LayerRef, Runtime};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

const API: &str = "2018-10-31";

pub async fn run(client: &Client, args: LayerArgs, json_out: bool) -> Result<()> {
    match args.command {
        LayerCommand::Publish {
            name,
            dir,
            runtimes,
            description,
        } => {
            arn::validate_layer_name(&name)?;
            let runtimes = runtimes
                .iter()
                .map(|r| Runtime::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let zip = package(&dir, &runtimes).await?;
            let reply = publish(client, &name, &zip, &runtimes, description.as_deref()).await?;
            if json_out {
                super::print_json(&reply)
            } else {
                super::print(format!(
                    "published {} ({} bytes)\n",
                    reply["LayerVersionArn"].as_str().unwrap_or_default(),
                    reply["Content"]["CodeSize"]
                ))
            }
        }
        LayerCommand::Ls => {
            let reply = client
                .json(client.request(Method::GET, &[API, "layers"]))
                .await?;
            if json_out {
                return super::print_json(&reply);
            }
            let mut out = String::new();
            for l in reply["Layers"].as_array().into_iter().flatten() {
                let v = &l["LatestMatchingVersion"];
                let runtimes: Vec<&str> = v["CompatibleRuntimes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                out.push_str(&format!(
                    "{:<30} {:>4}  {:<28} {}\n",
                    l["LayerName"].as_str().unwrap_or_default(),
                    v["Version"],
                    v["CreatedDate"].as_str().unwrap_or_default(),
                    if runtimes.is_empty() {
                        "any runtime".to_string()
                    } else {
                        runtimes.join(",")
                    }
                ));
            }
            if out.is_empty() {
                out.push_str("no layers\n");
            }
            super::print(out)
        }
    }
}

async fn package(dir: &Path, runtimes: &[Runtime]) -> Result<Vec<u8>> {
    crate::build::layer::prepare_layer(dir, runtimes).await
}

async fn publish(
    client: &Client,
    name: &str,
    zip: &[u8],
    runtimes: &[Runtime],
    description: Option<&str>,
) -> Result<Value> {
    let mut body = json!({
        "Content": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
        "CompatibleRuntimes": runtimes.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
    });
    if let Some(d) = description {
        body["Description"] = d.into();
    }
    client
        .json(
            client
                .request(Method::POST, &[API, "layers", name, "versions"])
                .json(&body),
        )
        .await
        .with_context(|| format!("cannot publish layer {name}"))
}

/// The newest version of `name` when its content and compatible runtimes are `zip` and
/// `runtimes` (so publishing again would change nothing).
async fn unchanged_version(
    client: &Client,
    name: &str,
    zip: &[u8],
    runtimes: &[Runtime],
) -> Result<Option<String>> {
    let list = client
        .json(
            client
                .request(Method::GET, &[API, "layers", name, "versions"])
                .query(&[("MaxItems", "1")]),
        )
        .await?;
    let Some(newest) = list["LayerVersions"].as_array().and_then(|v| v.first()) else {
        return Ok(None);
    };
    let version = newest["Version"].to_string();
    let full = client
        .json(client.request(Method::GET, &[API, "layers", name, "versions", &version]))
        .await?;
    let sha = nimbus_store::CodeInfo::of(zip).sha256_b64;
    let same_runtimes = full["CompatibleRuntimes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        == Some(runtimes.iter().map(|r| r.as_str()).collect());
    Ok(
        (full["Content"]["CodeSha256"].as_str() == Some(sha.as_str()) && same_runtimes).then(
            || {
                full["LayerVersionArn"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            },
        ),
    )
}

/// Publishes the manifest's layers (directories relative to `dir`) whose content changed,
/// then gives each target the version ARNs of the layers it names (a manifest name is
/// replaced by the ARN of that layer's version; ARNs stay). Returns one line per layer.
pub async fn publish_manifest_layers(
    client: &Client,
    dir: &Path,
    layers: &[ManifestLayer],
    targets: &mut [Target],
) -> Result<Vec<String>> {
    let mut arns: BTreeMap<String, String> = BTreeMap::new();
    let mut lines = Vec::new();
    for l in layers {
        let zip = package(&dir.join(&l.path), &l.compatible_runtimes).await?;
        let arn = match unchanged_version(client, &l.name, &zip, &l.compatible_runtimes).await? {
            Some(arn) => {
                lines.push(format!("layer {} unchanged ({arn})", l.name));
                arn
            }
            None => {
                let description = (!l.description.is_empty()).then_some(l.description.as_str());
                let reply =
                    publish(client, &l.name, &zip, &l.compatible_runtimes, description).await?;
                let arn = reply["LayerVersionArn"]
                    .as_str()
                    .context("the server's PublishLayerVersion reply has no LayerVersionArn")?
                    .to_string();
                lines.push(format!("published layer {arn}"));
                arn
            }
        };
        arns.insert(l.name.clone(), arn);
    }
    for t in targets.iter_mut() {
        for r in &mut t.config.layers {
            if r.arn.starts_with("arn:") {
                continue;
            }
            match arns.get(&r.arn) {
                Some(a) => r.arn = a.clone(),
                None => bail!(
                    "function {} names layer {:?}, which no [layers.{}] table declares",
                    t.name,
                    r.arn,
                    r.arn
                ),
            }
        }
    }
    Ok(lines)
}

/// A function's layers as the manifest names them, before [`publish_manifest_layers`]
/// resolves the names: only `arn` is set.
pub fn unresolved(names: &[String]) -> Vec<LayerRef> {
    names
        .iter()
        .map(|n| LayerRef {
            arn: n.clone(),
            sha256: String::new(),
            code_size: 0,
            unzipped_size: 0,
        })
        .collect()
}
