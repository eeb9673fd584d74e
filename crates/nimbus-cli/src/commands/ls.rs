//! `nimbus ls`: `GET /v1/functions` as a table.

use crate::client::Client;
use crate::output::{functions_table, FunctionView};
use anyhow::{Context, Result};

pub async fn run(client: &Client, json: bool) -> Result<()> {
    let reply = client.list_functions().await?;
    if json {
        return super::print_json(&reply);
    }
    let functions: Vec<FunctionView> =
        serde_json::from_value(reply.get("functions").cloned().unwrap_or_default())
            .context("the server sent a function list in an unexpected shape")?;
    if functions.is_empty() {
        eprintln!("no functions deployed yet — deploy one with `nimbus deploy`");
        return Ok(());
    }
    super::print(functions_table(&functions))
}
