//! `nimbus provisioned set|get|ls|rm`: Lambda's provisioned concurrency API
//! (`/2019-09-30/functions/{name}/provisioned-concurrency`).

use crate::cli::{ProvisionedArgs, ProvisionedCommand};
use crate::client::Client;
use anyhow::Result;
use nimbus_core::FunctionName;
use reqwest::Method;
use serde_json::{json, Value};

const API: &str = "2019-09-30";
const PATH: &str = "provisioned-concurrency";

fn line(label: &str, c: &Value) -> String {
    let mut out = format!(
        "{label:<40} {:<12} {}/{} initialised",
        c["Status"].as_str().unwrap_or(""),
        c["AllocatedProvisionedConcurrentExecutions"],
        c["RequestedProvisionedConcurrentExecutions"],
    );
    if let Some(r) = c["StatusReason"].as_str() {
        out.push_str(&format!(" ({r})"));
    }
    out.push('\n');
    out
}

pub async fn run(client: &Client, args: ProvisionedArgs, json_out: bool) -> Result<()> {
    match args.command {
        ProvisionedCommand::Set {
            name,
            qualifier,
            count,
        } => {
            let name = FunctionName::parse(&name)?;
            let mut req = client.request(Method::PUT, &[API, "functions", name.as_str(), PATH]);
            req = req
                .query(&[("Qualifier", qualifier.as_str())])
                .json(&json!({ "ProvisionedConcurrentExecutions": count }));
            let reply = client.json(req).await?;
            if json_out {
                super::print_json(&reply)
            } else {
                super::print(line(&format!("{name}:{qualifier}"), &reply))
            }
        }
        ProvisionedCommand::Get { name, qualifier } => {
            let name = FunctionName::parse(&name)?;
            let req = client
                .request(Method::GET, &[API, "functions", name.as_str(), PATH])
                .query(&[("Qualifier", qualifier.as_str())]);
            let reply = client.json(req).await?;
            if json_out {
                super::print_json(&reply)
            } else {
                super::print(line(&format!("{name}:{qualifier}"), &reply))
            }
        }
        ProvisionedCommand::Ls { name } => {
            let name = FunctionName::parse(&name)?;
            let req = client
                .request(Method::GET, &[API, "functions", name.as_str(), PATH])
                .query(&[("List", "ALL")]);
            let reply = client.json(req).await?;
            if json_out {
                return super::print_json(&reply);
            }
            let mut out = String::new();
            for c in reply["ProvisionedConcurrencyConfigs"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let arn = c["FunctionArn"].as_str().unwrap_or("");
                let label = arn.rsplit_once(":function:").map_or(arn, |(_, l)| l);
                out.push_str(&line(label, c));
            }
            super::print(out)
        }
        ProvisionedCommand::Rm { name, qualifier } => {
            let name = FunctionName::parse(&name)?;
            let req = client
                .request(Method::DELETE, &[API, "functions", name.as_str(), PATH])
                .query(&[("Qualifier", qualifier.as_str())]);
            client.send(req).await?;
            if json_out {
                super::print_json(&json!({ "removed": format!("{name}:{qualifier}") }))
            } else {
                super::print(format!(
                    "removed provisioned concurrency of {name}:{qualifier}\n"
                ))
            }
        }
    }
}
