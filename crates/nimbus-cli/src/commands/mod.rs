//! One module per subcommand; [`run`] dispatches.

mod alarm;
mod bus;
mod cluster;
mod deploy;
mod doctor;
mod events;
mod flows;
mod invoke;
mod keys;
mod layer;
mod logs;
mod ls;
mod migrate;
mod provisioned;
mod queue;
mod rm;
mod role;
mod s3_triggers;
mod secret;
mod serve;
mod sources;
mod stats;
mod top;
mod up;

use crate::cli::{Cli, Command};
use crate::client::Client;
use anyhow::Result;

pub async fn run(cli: Cli) -> Result<()> {
    let client = || -> Result<Client> {
        Ok(Client::with_ca(&cli.endpoint, cli.ca_cert.as_deref())?
            .with_credentials(crate::credentials::load()?))
    };
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Doctor(args) => {
            let server = Client::with_ca(&cli.endpoint, cli.ca_cert.as_deref())?;
            doctor::run(args, cli.json, &server).await
        }
        Command::Up(args) => up::run(args).await,
        Command::Deploy(args) => deploy::run(&client()?, args, cli.json).await,
        Command::Invoke(args) => invoke::run(&client()?, args).await,
        Command::Ls => ls::run(&client()?, cli.json).await,
        Command::Rm(args) => rm::run(&client()?, args, cli.json).await,
        Command::Logs(args) => logs::run(&client()?, args, cli.json).await,
        Command::Events(args) => events::run(&client()?, args, cli.json).await,
        Command::Queue(args) => queue::run(&client()?, args, cli.json).await,
        Command::Sources(args) => sources::run(&client()?, args, cli.json).await,
        Command::Targets(args) => sources::run_targets(&client()?, args, cli.json).await,
        Command::Bus(args) => bus::run(&client()?, args, cli.json).await,
        Command::Secret(args) => secret::run(&client()?, args, cli.json).await,
        Command::Keys(args) => keys::run(&client()?, args, cli.json).await,
        Command::Cluster(args) => cluster::run(&client()?, args, cli.json).await,
        Command::Provisioned(args) => provisioned::run(&client()?, args, cli.json).await,
        Command::Layer(args) => layer::run(&client()?, args, cli.json).await,
        Command::Stats(args) => stats::run(&client()?, args, cli.json).await,
        Command::Top(args) => top::run(&client()?, args, cli.json).await,
        Command::Alarm(args) => alarm::run(&client()?, args, cli.json).await,
        Command::Flows(args) => flows::run(&client()?, args, cli.json).await,
        Command::Migrate(args) => migrate::run(args, cli.json).await,
    }
}

/// Writes `text` to stdout, reporting a closed pipe as an error instead of panicking.
pub(crate) fn print(text: impl AsRef<[u8]>) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_ref())?;
    out.flush()?;
    Ok(())
}

/// Prints a JSON value, pretty, with a trailing newline.
pub(crate) fn print_json(v: &serde_json::Value) -> Result<()> {
    print(format!("{}\n", serde_json::to_string_pretty(v)?))
}
