//! `nimbus rm`: `DELETE /v1/functions/{name}`.

use crate::cli::RmArgs;
use crate::client::Client;
use anyhow::Result;
use nimbus_core::FunctionName;

pub async fn run(client: &Client, args: RmArgs, json: bool) -> Result<()> {
    let name = FunctionName::parse(&args.name)?;
    client.delete_function(name.as_str()).await?;
    if json {
        super::print_json(&serde_json::json!({ "removed": name.as_str() }))
    } else {
        super::print(format!("removed {name}\n"))
    }
}
