//! `nimbus sources …`: external event sources mapped to functions (`/v1/sources`), and
//! how a manifest's `[[functions.NAME.sources]]` are applied on deploy.

use crate::cli::{SourcesArgs, SourcesCommand, TargetsArgs, TargetsCommand};
use crate::client::Client;
use anyhow::{bail, Context, Result};
use nimbus_core::manifest::{managed_tag, ManifestSource, ManifestTarget};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeMap;

pub async fn run(client: &Client, args: SourcesArgs, json_out: bool) -> Result<()> {
    match args.command.unwrap_or(SourcesCommand::Ls) {
        SourcesCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, &["v1", "sources"]))
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            super::print(table(
                v["sources"].as_array().map(Vec::as_slice).unwrap_or(&[]),
            ))
        }
        SourcesCommand::Show { uuid } => {
            let v = client
                .json(client.request(Method::GET, &["v1", "sources", &uuid]))
                .await?;
            super::print_json(&v)
        }
        SourcesCommand::Create {
            function,
            kind,
            endpoints,
            topics,
            secret,
            group,
            options,
            batch_size,
            batching_window,
            starting_position,
            filters,
            report_batch_item_failures,
            maximum_retry_attempts,
            on_failure,
            bisect,
            maximum_concurrency,
        } => {
            let opts = key_values(&options)?;
            let mut body = json!({
                "function": function,
                "type": kind,
                "endpoints": endpoints,
                "topics": topics,
                "options": opts,
                "filters": filters,
                "report_batch_item_failures": report_batch_item_failures,
                "bisect_batch_on_function_error": bisect,
            });
            for (k, v) in [
                ("secret", secret.map(Value::from)),
                ("group", group.map(Value::from)),
                ("batch_size", batch_size.map(Value::from)),
                ("batching_window_s", batching_window.map(Value::from)),
                ("starting_position", starting_position.map(Value::from)),
                (
                    "maximum_retry_attempts",
                    maximum_retry_attempts.map(Value::from),
                ),
                ("on_failure", on_failure.map(Value::from)),
                ("maximum_concurrency", maximum_concurrency.map(Value::from)),
            ] {
                if let Some(v) = v {
                    body[k] = v;
                }
            }
            let v = client
                .json(client.request(Method::POST, &["v1", "sources"]).json(&body))
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            super::print(format!(
                "source {} → {} created ({}); `nimbus sources` shows its state\n",
                describe(&v),
                v["function"].as_str().unwrap_or("?"),
                v["uuid"].as_str().unwrap_or("?"),
            ))
        }
        SourcesCommand::Rm { uuid } => {
            client
                .send(client.request(Method::DELETE, &["v1", "sources", &uuid]))
                .await?;
            super::print(format!("source mapping {uuid} deleted\n"))
        }
        SourcesCommand::Enable { uuid } => set_enabled(client, &uuid, true).await,
        SourcesCommand::Disable { uuid } => set_enabled(client, &uuid, false).await,
    }
}

/// `KEY=VALUE` options.
fn key_values(options: &[String]) -> Result<BTreeMap<String, String>> {
    let mut opts = BTreeMap::new();
    for o in options {
        let Some((k, v)) = o.split_once('=') else {
            bail!("--option {o:?}: write KEY=VALUE");
        };
        opts.insert(k.to_string(), v.to_string());
    }
    Ok(opts)
}

/// `nimbus targets …`
pub async fn run_targets(client: &Client, args: TargetsArgs, json_out: bool) -> Result<()> {
    match args.command.unwrap_or(TargetsCommand::Ls) {
        TargetsCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, &["v1", "targets"]))
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            let targets = v["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                return super::print("no targets (declare one with `nimbus targets put` or [targets.NAME] in nimbus.toml)\n");
            }
            let mut out = format!(
                "{:<24}  {:<9}  {:<10}  {:>9}  {:>8}  LAST ERROR\n",
                "TARGET", "TYPE", "STATE", "DELIVERED", "WAITING"
            );
            for t in &targets {
                out.push_str(&format!(
                    "{:<24}  {:<9}  {:<10}  {:>9}  {:>8}  {}\n",
                    t["name"].as_str().unwrap_or("?"),
                    t["type"].as_str().unwrap_or("?"),
                    t["status"]["state"].as_str().unwrap_or("?"),
                    t["status"]["delivered"].as_u64().unwrap_or(0),
                    t["waiting"].as_u64().unwrap_or(0),
                    t["status"]["last_error"].as_str().unwrap_or("-"),
                ));
            }
            super::print(out)
        }
        TargetsCommand::Put {
            name,
            kind,
            endpoints,
            secret,
            options,
        } => {
            let mut body = json!({
                "type": kind,
                "endpoints": endpoints,
                "options": key_values(&options)?,
            });
            if let Some(s) = secret {
                body["secret"] = s.into();
            }
            let v = client
                .json(
                    client
                        .request(Method::PUT, &["v1", "targets", &name])
                        .json(&body),
                )
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            super::print(format!(
                "target {name} ready: destinations and rules address it as {}\n",
                v["arn"].as_str().unwrap_or("?")
            ))
        }
        TargetsCommand::Rm { name } => {
            let v = client
                .json(client.request(Method::DELETE, &["v1", "targets", &name]))
                .await?;
            super::print(format!(
                "target {name} deleted ({} undelivered messages dropped)\n",
                v["undelivered_dropped"].as_u64().unwrap_or(0)
            ))
        }
    }
}

/// Creates or replaces the manifest's `[targets.NAME]`.
pub async fn apply_targets(client: &Client, targets: &[ManifestTarget]) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for t in targets {
        client
            .json(
                client
                    .request(Method::PUT, &["v1", "targets", &t.name])
                    .json(&t.body),
            )
            .await
            .with_context(|| format!("cannot apply target {}", t.name))?;
        lines.push(format!("target {} ready", t.name));
    }
    Ok(lines)
}

async fn set_enabled(client: &Client, uuid: &str, enabled: bool) -> Result<()> {
    client
        .send(
            client
                .request(Method::PATCH, &["v1", "sources", uuid])
                .json(&json!({ "enabled": enabled })),
        )
        .await?;
    super::print(format!(
        "source mapping {uuid} {}\n",
        if enabled { "enabled" } else { "disabled" }
    ))
}

/// `nats orders.> @ nats://127.0.0.1:4222`
fn describe(m: &Value) -> String {
    let list = |k: &str| -> String {
        m["source"][k]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    format!(
        "{} {} @ {}",
        m["source"]["kind"].as_str().unwrap_or("?"),
        list("topics"),
        list("endpoints")
    )
}

/// The table of `nimbus sources`.
fn table(sources: &[Value]) -> String {
    if sources.is_empty() {
        return "no source mappings (create one with `nimbus sources create` or [[functions.NAME.sources]] in nimbus.toml)\n".into();
    }
    let mut out = format!(
        "{:<8}  {:<40}  {:<20}  {:<10}  {:>8}  {:>6}  LAST ERROR\n",
        "ID", "SOURCE", "FUNCTION", "STATE", "RECORDS", "LAG"
    );
    for s in sources {
        let st = &s["status"];
        out.push_str(&format!(
            "{:<8}  {:<40}  {:<20}  {:<10}  {:>8}  {:>6}  {}\n",
            s["uuid"]
                .as_str()
                .unwrap_or("?")
                .chars()
                .take(8)
                .collect::<String>(),
            truncate(&describe(s), 40),
            s["function"].as_str().unwrap_or("?"),
            st["state"].as_str().unwrap_or("?"),
            st["records"].as_u64().unwrap_or(0),
            st["lag"]
                .as_u64()
                .map(|n| n.to_string())
                .unwrap_or_else(|| "-".into()),
            st["last_error"].as_str().unwrap_or("-"),
        ));
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// Applies `sources` for the manifest's `functions`: creates the missing mappings,
/// replaces changed ones, and deletes a manifest function's tagged mappings that are no
/// longer declared. Returns one line per change.
pub async fn apply(
    client: &Client,
    functions: &[String],
    sources: &[ManifestSource],
) -> Result<Vec<String>> {
    let listed = client
        .json(client.request(Method::GET, &["v1", "sources"]))
        .await;
    let listed = match listed {
        Ok(v) => v,
        Err(_) if sources.is_empty() => return Ok(Vec::new()),
        Err(e) => return Err(e.context("cannot apply the manifest's sources")),
    };
    let existing: BTreeMap<String, Value> = listed["sources"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| Some((m["tag"].as_str()?.to_string(), m.clone())))
                .collect()
        })
        .unwrap_or_default();
    let mut lines = Vec::new();
    let wanted: BTreeMap<String, &ManifestSource> = sources
        .iter()
        .map(|s| (managed_tag(&s.function, &s.id), s))
        .collect();
    for f in functions {
        let prefix = managed_tag(f, "");
        for (tag, m) in &existing {
            if tag.starts_with(&prefix) && !wanted.contains_key(tag) {
                let uuid = m["uuid"].as_str().unwrap_or_default();
                client
                    .send(client.request(Method::DELETE, &["v1", "sources", uuid]))
                    .await
                    .with_context(|| format!("cannot delete source mapping {uuid}"))?;
                lines.push(format!("source {} → {f} removed", describe(m)));
            }
        }
    }
    for (tag, s) in &wanted {
        let reply = match existing.get(tag) {
            Some(m) => {
                let uuid = m["uuid"].as_str().unwrap_or_default();
                client
                    .json(
                        client
                            .request(Method::PUT, &["v1", "sources", uuid])
                            .json(&s.body),
                    )
                    .await
            }
            None => {
                client
                    .json(
                        client
                            .request(Method::POST, &["v1", "sources"])
                            .json(&s.body),
                    )
                    .await
            }
        }
        .with_context(|| format!("cannot apply source {} of function {}", s.id, s.function))?;
        lines.push(format!(
            "source {} → {}",
            describe(&reply),
            reply["function"].as_str().unwrap_or(&s.function)
        ));
    }
    Ok(lines)
}
