//! `nimbus`: the command-line tool of Nimbus. Thin: parse the command line, run the command,
//! turn errors into `error: …` (plus a hint) on stderr and exit status 1.

mod build;
mod cli;
mod client;
mod commands;
mod concurrency_args;
mod credentials;
mod errors;
mod limit_args;
mod output;

use clap::Parser;
use std::process::ExitCode;
use std::time::Duration;

/// mimalloc instead of glibc's malloc: on the warm invoke path the server allocates and
/// frees per request (headers, bodies, log records); glibc's malloc/free took ~15 % of the
/// server's CPU at 32 clients (perf, docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(server) = cli.command.server() {
        builder.worker_threads(server.worker_threads());
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(commands::run(cli));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if errors::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if let Some(failed) = e.downcast_ref::<errors::FunctionFailed>() {
                eprintln!("{failed}");
            } else {
                eprintln!("error: {e:#}");
            }
            if let Some(hint) = errors::hint(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
