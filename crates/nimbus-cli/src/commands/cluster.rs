//! `nimbus cluster status|drain`: `/v1/cluster`.

use crate::cli::{ClusterArgs, ClusterCommand};
use crate::client::Client;
use anyhow::Result;
use reqwest::Method;
use serde_json::Value;

/// `1.2s ago`, `3m ago`.
fn age(ms: i64) -> String {
    match ms {
        ..=999 => format!("{ms}ms ago"),
        1000..=59_999 => format!("{:.1}s ago", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m ago", ms / 60_000),
        _ => format!("{}h ago", ms / 3_600_000),
    }
}

pub async fn run(client: &Client, args: ClusterArgs, json: bool) -> Result<()> {
    match args.command {
        ClusterCommand::Status => {
            let reply = client
                .json(client.request(Method::GET, &["v1", "cluster"]))
                .await?;
            if json {
                return super::print_json(&reply);
            }
            let me = reply["node"].as_str().unwrap_or("");
            let rows: Vec<Vec<String>> = reply["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n: &Value| {
                    let id = n["id"].as_str().unwrap_or("").to_string();
                    vec![
                        if id == me { format!("{id} *") } else { id },
                        n["address"].as_str().unwrap_or("").into(),
                        n["version"].as_str().unwrap_or("").into(),
                        n["status"].as_str().unwrap_or("").into(),
                        n["in_flight"].as_i64().unwrap_or(0).to_string(),
                        n["instances"].as_i64().unwrap_or(0).to_string(),
                        age(n["heartbeat_age_ms"].as_i64().unwrap_or(0)),
                    ]
                })
                .collect();
            let mode = match reply["mode"].as_str() {
                Some("single") => "one node (SQLite); a cluster needs --database postgres://…\n",
                _ => "",
            };
            super::print(format!(
                "{mode}{}(* the node that answered)\n",
                crate::output::table(
                    &[
                        "NODE",
                        "ADDRESS",
                        "VERSION",
                        "STATUS",
                        "IN FLIGHT",
                        "INSTANCES",
                        "HEARTBEAT"
                    ],
                    &rows
                )
            ))
        }
        ClusterCommand::Drain { node } => {
            let reply = client
                .json(client.request(Method::POST, &["v1", "cluster", "nodes", &node, "drain"]))
                .await?;
            if json {
                return super::print_json(&reply);
            }
            super::print(format!(
                "node {node} is draining: it takes no new background work and hands back its \
                 claims; stop it when `nimbus cluster status` shows 0 in flight\n"
            ))
        }
    }
}
