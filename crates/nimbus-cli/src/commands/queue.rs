//! `nimbus queue …`: built-in queues (`/v1/queues/…`) and queue → function mappings
//! (Lambda's event-source mapping API); also how a manifest's `[queues.*]` and functions'
//! `queue = {…}` are applied on deploy.

use crate::cli::{QueueArgs, QueueCommand};
use crate::client::Client;
use anyhow::{bail, Context, Result};
use nimbus_core::manifest::{self, ManifestMapping, ManifestQueue};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::Path;

const MAPPINGS: [&str; 2] = ["2015-03-31", "event-source-mappings"];

fn queue_arn(q: &str) -> String {
    format!("arn:aws:sqs:us-east-1:000000000000:{q}")
}

pub async fn run(client: &Client, args: QueueArgs, json_out: bool) -> Result<()> {
    match args.command {
        QueueCommand::Ls => {
            let v = client
                .json(client.request(Method::GET, &["v1", "queues"]))
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            let queues = v["queues"].as_array().cloned().unwrap_or_default();
            if queues.is_empty() {
                return super::print("no queues\n");
            }
            let mut out = format!(
                "{:<32}  {:>8}  {:>9}  {:>7}  DEAD-LETTER\n",
                "QUEUE", "VISIBLE", "IN-FLIGHT", "DELAYED"
            );
            for q in &queues {
                out.push_str(&format!(
                    "{:<32}  {:>8}  {:>9}  {:>7}  {}\n",
                    q["name"].as_str().unwrap_or("?"),
                    q["stats"]["visible"],
                    q["stats"]["in_flight"],
                    q["stats"]["delayed"],
                    match (q["dead_letter"].as_str(), q["max_receive_count"].as_u64()) {
                        (Some(d), Some(n)) => format!("{d} after {n} receives"),
                        _ => "-".into(),
                    }
                ));
            }
            super::print(out)
        }
        QueueCommand::Create {
            name,
            visibility_timeout,
            dead_letter,
            max_receive_count,
            retention,
            fifo,
            content_based_deduplication,
        } => {
            let q = ManifestQueue {
                name: name.clone(),
                visibility_timeout,
                dead_letter,
                max_receive_count,
                retention,
                max_message_size: None,
                fifo,
                content_based_deduplication,
            };
            let v = put_queue(client, &q).await?;
            show(
                &v,
                json_out,
                format!("queue {name} ready ({})\n", v["arn"].as_str().unwrap_or("")),
            )
        }
        QueueCommand::Send {
            name,
            bodies,
            attributes,
            delay,
            group_id,
            deduplication_id,
        } => {
            let attrs: serde_json::Map<String, Value> = attributes
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect();
            let entries: Vec<Value> = bodies
                .iter()
                .map(|b| {
                    let mut e = json!({"body": b, "attributes": attrs});
                    if delay > 0 {
                        e["delay_seconds"] = delay.into();
                    }
                    if let Some(g) = &group_id {
                        e["group_id"] = g.as_str().into();
                    }
                    if let Some(d) = &deduplication_id {
                        e["deduplication_id"] = d.as_str().into();
                    }
                    e
                })
                .collect();
            let mut ids = Vec::new();
            let mut replies = Vec::new();
            for chunk in entries.chunks(10) {
                let v = client
                    .json(
                        client
                            .request(Method::POST, &["v1", "queues", &name, "messages"])
                            .json(&json!({ "entries": chunk })),
                    )
                    .await?;
                for m in v["messages"].as_array().into_iter().flatten() {
                    ids.push(m["id"].as_str().unwrap_or("?").to_string());
                }
                replies.extend(v["messages"].as_array().cloned().unwrap_or_default());
            }
            show(
                &json!({ "messages": replies }),
                json_out,
                ids.iter().map(|i| format!("{i}\n")).collect(),
            )
        }
        QueueCommand::Receive {
            name,
            max,
            visibility_timeout,
            wait,
        } => {
            let mut body = json!({ "max": max });
            if let Some(t) = visibility_timeout {
                body["visibility_timeout"] = t.into();
            }
            if let Some(w) = wait {
                body["wait_seconds"] = w.into();
            }
            let v = client
                .json(
                    client
                        .request(Method::POST, &["v1", "queues", &name, "receive"])
                        .json(&body),
                )
                .await?;
            if json_out {
                return super::print_json(&v);
            }
            let msgs = v["messages"].as_array().cloned().unwrap_or_default();
            if msgs.is_empty() {
                return super::print("no messages\n");
            }
            let mut out = String::new();
            for m in &msgs {
                out.push_str(&format!(
                    "{}  receive #{}  receipt {}\n  {}\n",
                    m["id"].as_str().unwrap_or("?"),
                    m["receive_count"],
                    m["receipt"].as_str().unwrap_or("?"),
                    m["body"].as_str().unwrap_or("")
                ));
            }
            super::print(out)
        }
        QueueCommand::Delete { name, receipt } => match receipt {
            Some(r) => {
                client
                    .send(client.request(Method::DELETE, &["v1", "queues", &name, "messages", &r]))
                    .await?;
                show(
                    &json!({"deleted": r}),
                    json_out,
                    format!("deleted message from {name}\n"),
                )
            }
            None => {
                client
                    .send(client.request(Method::DELETE, &["v1", "queues", &name]))
                    .await?;
                show(
                    &json!({"removed": name}),
                    json_out,
                    format!("removed queue {name} and its messages\n"),
                )
            }
        },
        QueueCommand::Purge { name } => {
            let v = client
                .json(client.request(Method::POST, &["v1", "queues", &name, "purge"]))
                .await?;
            show(
                &v,
                json_out,
                format!("purged {} messages from {name}\n", v["purged"]),
            )
        }
        QueueCommand::Redrive {
            name,
            to,
            max_per_second,
        } => {
            let body = json!({ "destination": to, "max_per_second": max_per_second });
            let v = client
                .json(
                    client
                        .request(Method::POST, &["v1", "queues", &name, "redrive"])
                        .json(&body),
                )
                .await?;
            let pace = match v["max_per_second"].as_u64() {
                Some(n) => format!(", the rest at {n} a second"),
                None => String::new(),
            };
            show(
                &v,
                json_out,
                format!(
                    "moved {} messages from {name} to {}{pace}; {} left in {name}\n",
                    v["moved"],
                    v["destination"].as_str().unwrap_or("?"),
                    v["left"]
                ),
            )
        }
        QueueCommand::Stats { name } => {
            let v = client
                .json(client.request(Method::GET, &["v1", "queues", &name]))
                .await?;
            let s = &v["stats"];
            show(
                &v,
                json_out,
                format!(
                    "{name}: {} visible, {} in flight, {} delayed (visibility timeout {} s)\n",
                    s["visible"], s["in_flight"], s["delayed"], v["visibility_timeout"]
                ),
            )
        }
        QueueCommand::Map {
            queue,
            function,
            batch_size,
            window,
            report_batch_item_failures,
            filters,
        } => {
            let m = ManifestMapping {
                queue,
                function,
                batch_size,
                window,
                report_batch_item_failures,
            };
            let (v, created) = put_mapping(client, &m, &filters).await?;
            show(
                &v,
                json_out,
                format!(
                    "{} mapping {}: queue {} → function {} (batch {}, window {} s{})\n",
                    if created { "created" } else { "updated" },
                    v["UUID"].as_str().unwrap_or("?"),
                    m.queue,
                    m.function,
                    m.batch_size,
                    m.window,
                    if m.report_batch_item_failures {
                        ", ReportBatchItemFailures"
                    } else {
                        ""
                    }
                ),
            )
        }
        QueueCommand::Unmap { uuid } => {
            let mut path: Vec<&str> = MAPPINGS.to_vec();
            path.push(&uuid);
            client.send(client.request(Method::DELETE, &path)).await?;
            show(
                &json!({"removed": uuid}),
                json_out,
                format!("removed mapping {uuid}\n"),
            )
        }
        QueueCommand::Mappings => {
            let v = client.json(client.request(Method::GET, &MAPPINGS)).await?;
            if json_out {
                return super::print_json(&v);
            }
            let ms = v["EventSourceMappings"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if ms.is_empty() {
                return super::print("no mappings\n");
            }
            let mut out = String::new();
            for m in &ms {
                out.push_str(&format!(
                    "{}  {} → {}  batch {}  {}\n",
                    m["UUID"].as_str().unwrap_or("?"),
                    m["EventSourceArn"]
                        .as_str()
                        .and_then(|a| a.rsplit(':').next())
                        .unwrap_or("?"),
                    m["FunctionArn"]
                        .as_str()
                        .and_then(|a| a.split(":function:").nth(1))
                        .unwrap_or("?"),
                    m["BatchSize"],
                    m["State"].as_str().unwrap_or("?"),
                ));
            }
            super::print(out)
        }
    }
}

fn show(v: &Value, json_out: bool, text: String) -> Result<()> {
    if json_out {
        super::print_json(v)
    } else {
        super::print(text)
    }
}

async fn put_queue(client: &Client, q: &ManifestQueue) -> Result<Value> {
    client
        .json(
            client
                .request(Method::PUT, &["v1", "queues", &q.name])
                .json(&q.api_body()),
        )
        .await
        .with_context(|| format!("cannot create queue {}", q.name))
}

/// Creates the mapping, or updates the one from the same queue to the same function.
/// Returns the reply and whether it was created.
async fn put_mapping(
    client: &Client,
    m: &ManifestMapping,
    filters: &[String],
) -> Result<(Value, bool)> {
    let arn = queue_arn(&m.queue);
    let existing = client
        .json(
            client
                .request(Method::GET, &MAPPINGS)
                .query(&[("EventSourceArn", &arn)]),
        )
        .await?;
    let body = json!({
        "FunctionName": m.function,
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.window,
        "FunctionResponseTypes": if m.report_batch_item_failures { vec!["ReportBatchItemFailures"] } else { vec![] },
        "Enabled": true,
    });
    let mut body = body;
    if !filters.is_empty() {
        let f: Vec<Value> = filters.iter().map(|p| json!({ "Pattern": p })).collect();
        body["FilterCriteria"] = json!({ "Filters": f });
    }
    if let Some(uuid) = same_function_mapping(&existing, &m.function) {
        let mut path: Vec<&str> = MAPPINGS.to_vec();
        path.push(uuid);
        let v = client
            .json(client.request(Method::PUT, &path).json(&body))
            .await?;
        return Ok((v, false));
    }
    body["EventSourceArn"] = arn.into();
    let v = client
        .json(client.request(Method::POST, &MAPPINGS).json(&body))
        .await
        .with_context(|| format!("cannot map queue {} to {}", m.queue, m.function))?;
    Ok((v, true))
}

/// The UUID of the mapping (among `list`, ListEventSourceMappings of one queue) that
/// invokes `function` (`name` or `name:qualifier`), or else one that invokes another
/// qualifier of the same function: a manifest that gains or drops an `alias` moves its
/// mapping rather than adding a second consumer.
fn same_function_mapping<'a>(list: &'a Value, function: &str) -> Option<&'a str> {
    let mappings = list["EventSourceMappings"].as_array()?;
    let target = |m: &Value| {
        m["FunctionArn"]
            .as_str()
            .and_then(|a| a.split_once(":function:"))
            .map(|(_, f)| f.to_string())
    };
    let bare = |f: &str| f.split(':').next().unwrap_or_default().to_string();
    let exact = mappings
        .iter()
        .find(|m| target(m).as_deref() == Some(function));
    exact
        .or_else(|| {
            mappings
                .iter()
                .find(|m| target(m).is_some_and(|t| bare(&t) == bare(function)))
        })
        .and_then(|m| m["UUID"].as_str())
}

/// The queues and mappings of `dir/nimbus.toml` and its includes.
pub fn manifest_queue_config(dir: &Path) -> Result<(Vec<ManifestQueue>, Vec<ManifestMapping>)> {
    fn walk(
        dir: &Path,
        depth: usize,
        queues: &mut Vec<ManifestQueue>,
        mappings: &mut Vec<ManifestMapping>,
    ) -> Result<()> {
        if depth > 8 {
            bail!("includes nest deeper than 8 levels at {}", dir.display());
        }
        let path = dir.join(super::deploy::MANIFEST);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let p = manifest::parse_project(&text)
            .with_context(|| format!("{} is not valid", path.display()))?;
        queues.extend(p.queues);
        mappings.extend(p.mappings);
        for inc in p.include {
            walk(&dir.join(inc), depth + 1, queues, mappings)?;
        }
        Ok(())
    }
    let (mut queues, mut mappings) = (Vec::new(), Vec::new());
    walk(dir, 0, &mut queues, &mut mappings)?;
    Ok((queues, mappings))
}

/// Creates or updates the queues, then the mappings (after the functions they feed are
/// deployed); returns one line per queue and mapping.
pub async fn apply_queue_config(
    client: &Client,
    queues: &[ManifestQueue],
    mappings: &[ManifestMapping],
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for q in queues {
        put_queue(client, q).await?;
        lines.push(format!("queue {}", q.name));
    }
    for m in mappings {
        let (v, _) = put_mapping(client, m, &[]).await?;
        lines.push(format!(
            "queue {} → function {} (mapping {})",
            m.queue,
            m.function,
            v["UUID"].as_str().unwrap_or("?")
        ));
    }
    Ok(lines)
}

/// For `nimbus up`: applies the manifest's queues and mappings, reporting failures
/// without stopping.
pub async fn apply_manifest_queues(client: &Client, dir: &Path) {
    let applied = match manifest_queue_config(dir) {
        Ok((queues, mappings)) if queues.is_empty() && mappings.is_empty() => Ok(Vec::new()),
        Ok((queues, mappings)) => apply_queue_config(client, &queues, &mappings).await,
        Err(e) => Err(e),
    };
    match applied {
        Ok(lines) => {
            for l in lines {
                let _ = super::print(format!("{l}\n"));
            }
        }
        Err(e) => eprintln!("error: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_follows_its_function_across_qualifiers() {
        let arn = |f: &str| format!("arn:aws:lambda:us-east-1:000000000000:function:{f}");
        let list = json!({"EventSourceMappings": [
            {"UUID": "other", "FunctionArn": arn("worker2")},
            {"UUID": "bare", "FunctionArn": arn("worker")},
            {"UUID": "live", "FunctionArn": arn("worker:live")},
        ]});
        assert_eq!(same_function_mapping(&list, "worker:live"), Some("live"));
        assert_eq!(same_function_mapping(&list, "worker"), Some("bare"));
        assert_eq!(same_function_mapping(&list, "worker:prod"), Some("bare"));
        assert_eq!(same_function_mapping(&list, "work"), None);
        assert_eq!(same_function_mapping(&json!({}), "worker"), None);
    }
}
