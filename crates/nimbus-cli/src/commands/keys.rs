//! `nimbus keys create|ls|rm`: `/v1/keys` (needs an admin key).

use crate::cli::{KeysArgs, KeysCommand};
use crate::client::Client;
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

/// `admin`, inline JSON, or a file holding JSON.
fn policy_arg(arg: &str) -> Result<Value> {
    if arg == "admin" {
        return Ok(Value::String("admin".into()));
    }
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).with_context(|| {
            format!("cannot read the policy file {arg} (or pass JSON, or admin)")
        })?
    };
    let v: Value =
        serde_json::from_str(&text).with_context(|| format!("the policy {arg} is not JSON"))?;
    nimbus_auth::Policy::parse(&v.to_string())?;
    Ok(v)
}

pub async fn run(client: &Client, args: KeysArgs, json: bool) -> Result<()> {
    match args.command {
        KeysCommand::Create { name, policy } => {
            let body = json!({ "name": name, "policy": policy_arg(&policy)? });
            let req = client
                .request(Method::POST, &["v1", "keys"])
                .header("content-type", "application/json")
                .body(body.to_string());
            let reply = client.json(req).await?;
            if json {
                return super::print_json(&reply);
            }
            super::print(format!(
                "created access key {id} ({name}, {arn})\n\
                 NIMBUS_ACCESS_KEY_ID={id}\n\
                 NIMBUS_SECRET_ACCESS_KEY={secret}\n\
                 the secret is shown only now: store it (boto3 and the AWS CLI read it as \
                 AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)\n",
                id = reply["AccessKeyId"].as_str().unwrap_or(""),
                name = reply["name"].as_str().unwrap_or(""),
                arn = reply["user_arn"].as_str().unwrap_or(""),
                secret = reply["SecretAccessKey"].as_str().unwrap_or(""),
            ))
        }
        KeysCommand::Ls => {
            let reply = client
                .json(client.request(Method::GET, &["v1", "keys"]))
                .await?;
            if json {
                return super::print_json(&reply);
            }
            let mut out = String::new();
            for k in reply["keys"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<22} {:<24} created {}  {}\n",
                    k["AccessKeyId"].as_str().unwrap_or(""),
                    k["name"].as_str().unwrap_or(""),
                    k["created"].as_str().unwrap_or(""),
                    k["policy"]
                ));
            }
            super::print(out)
        }
        KeysCommand::Rm { id } => {
            client
                .send(client.request(Method::DELETE, &["v1", "keys", &id]))
                .await?;
            if json {
                super::print_json(&json!({ "removed": id }))
            } else {
                super::print(format!("removed access key {id}\n"))
            }
        }
    }
}
