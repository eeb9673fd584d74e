//! `nimbus secret set|ls|rm|rotate`: `/v1/secrets`.

use crate::cli::{SecretArgs, SecretCommand};
use crate::client::Client;
use anyhow::{bail, Context, Result};
use nimbus_store::{validate_secret_name, MasterKey, MAX_SECRET_VALUE};
use reqwest::Method;
use serde_json::Value;
use std::io::{IsTerminal, Read};

pub async fn run(client: &Client, args: SecretArgs, json: bool) -> Result<()> {
    match args.command {
        SecretCommand::Set { name } => {
            validate_secret_name(&name)?;
            let value = read_value(&name)?;
            let req = client
                .request(Method::PUT, &["v1", "secrets", &name])
                .header("content-type", "application/octet-stream")
                .body(value);
            let reply = client.json(req).await?;
            if json {
                super::print_json(&reply)
            } else {
                let verb = if reply["created"].as_bool() == Some(true) {
                    "created"
                } else {
                    "updated"
                };
                super::print(format!("{verb} secret {name}\n"))
            }
        }
        SecretCommand::Ls => {
            let reply = client
                .json(client.request(Method::GET, &["v1", "secrets"]))
                .await?;
            if json {
                return super::print_json(&reply);
            }
            let mut out = String::new();
            for s in reply["secrets"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "{:<40} updated {}\n",
                    s["name"].as_str().unwrap_or(""),
                    s["updated"].as_str().unwrap_or("")
                ));
            }
            super::print(out)
        }
        SecretCommand::Rm { name } => {
            client
                .send(client.request(Method::DELETE, &["v1", "secrets", &name]))
                .await?;
            if json {
                super::print_json(&serde_json::json!({ "removed": name }))
            } else {
                super::print(format!("removed secret {name}\n"))
            }
        }
        SecretCommand::Rotate { new_key_file } => {
            let key = MasterKey::read_file(&new_key_file)?;
            let req = client
                .request(Method::POST, &["v1", "secrets", "rotate"])
                .json(&serde_json::json!({ "new_key": key.to_base64() }));
            let reply: Value = client.json(req).await?;
            if json {
                return super::print_json(&reply);
            }
            let mut out = format!(
                "re-encrypted {} secret(s) under master key {}\n",
                reply["rotated"],
                reply["key_id"].as_str().unwrap_or("")
            );
            match reply["key_file"].as_str() {
                Some(f) => out.push_str(&format!("the server's key file {f} now holds the new key\n")),
                None => out.push_str(
                    "the server's key came from NIMBUS_MASTER_KEY: set it to the new key before the next start\n",
                ),
            }
            super::print(out)
        }
    }
}

/// The value from standard input, one trailing newline removed. On a terminal, one line is
/// read with echo turned off (`stty -echo`).
fn read_value(name: &str) -> Result<Vec<u8>> {
    let stdin = std::io::stdin();
    let mut value = Vec::new();
    if stdin.is_terminal() {
        eprint!("value for secret {name} (not echoed): ");
        let echo_off = std::process::Command::new("stty")
            .arg("-echo")
            .status()
            .is_ok_and(|s| s.success());
        let mut line = String::new();
        let read = stdin.read_line(&mut line);
        if echo_off {
            let _ = std::process::Command::new("stty").arg("echo").status();
        }
        eprintln!();
        read.context("reading the secret value from the terminal")?;
        value = line.into_bytes();
    } else {
        stdin
            .lock()
            .take(MAX_SECRET_VALUE as u64 + 3)
            .read_to_end(&mut value)
            .context("reading the secret value from standard input")?;
    }
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    if value.len() > MAX_SECRET_VALUE {
        bail!("a secret value is at most {MAX_SECRET_VALUE} bytes");
    }
    Ok(value)
}
