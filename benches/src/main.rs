//! `nimbus-bench`: Nimbus's Node.js and Python hello functions against the floor — a bare
//! HTTP server in the same language calling the same handler — for cold start, warm
//! latency and throughput, measured by one client implementation. Starts its own
//! `nimbus serve` on a free loopback port and stops it at the end. See
//! `docs/performance.md`. With `--async`, measures asynchronous invocation of a no-op
//! function instead (see [`async_bench`]).

mod async_bench;
mod client;
mod cpu;
mod lang;
mod stats;
mod targets;

use anyhow::{bail, Context, Result};
use clap::Parser;
use lang::Lang;
use serde_json::{json, Value};
use stats::{CpuPerRequest, Figures, Latency, Pair};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use targets::{Floor, Nimbus};

#[derive(Debug, Parser)]
#[command(about = "Benchmark Nimbus's hello functions against bare HTTP servers")]
struct Args {
    /// Repeat the whole measurement this many times and report the median of each figure.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// The `nimbus` binary (default: target/release/nimbus, or the one next to this program).
    #[arg(long, value_name = "PATH")]
    nimbus: Option<PathBuf>,
    /// Benchmark one language only.
    #[arg(long, value_enum)]
    only: Option<Lang>,
    /// Print the results (every run and the medians) as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Cold starts sampled per language and run.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    cold_samples: u32,
    /// Sequential requests measured for warm latency (after 200 unmeasured).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    warm_requests: u32,
    /// Concurrent clients (one keep-alive connection each) for throughput.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    clients: u32,
    /// The function's concurrency limit (how far its pool may scale out; default: --clients).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: Option<u32>,
    /// Seconds of measured load for throughput (after the warm-up).
    #[arg(long, default_value_t = 5.0, value_parser = positive)]
    duration: f64,
    /// Seconds of unmeasured load before each throughput measurement.
    #[arg(long, default_value_t = 1.0, value_parser = positive)]
    warmup: f64,
    /// Measure asynchronous invocation (`InvocationType: Event`) of a no-op Node function
    /// instead: submit throughput, end-to-end events/s, submit-to-START delay.
    #[arg(long = "async")]
    async_mode: bool,
    /// With --async: events submitted per run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=9000))]
    events: u32,
    /// With --async: concurrent submitting clients (one keep-alive connection each).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    submitters: u32,
    /// With --async: the no-op function's concurrency limit.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    async_concurrency: u32,
    /// With --async: lone events submitted into an idle queue per run (their delay to START).
    #[arg(long, default_value_t = 20)]
    idle_samples: u32,
    /// Give up (and stop everything) after this many minutes.
    #[arg(long, default_value_t = 20.0, value_parser = positive)]
    time_limit: f64,
}

/// Pause after deploying a cold-start function (and deleting the previous one), so the
/// previous instance's teardown does not overlap the measured start.
const COLD_SETTLE: Duration = Duration::from_millis(250);
const WARMUP_REQUESTS: usize = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    let bin = nimbus_bin(args.nimbus.as_deref())?;
    let langs: Vec<Lang> = match args.only {
        Some(l) => vec![l],
        None => Lang::ALL.to_vec(),
    };
    let dir = tempfile::Builder::new().prefix("nimbus-bench").tempdir()?;
    let nimbus = Nimbus::start(&bin, dir.path()).await?;
    let limit = Duration::from_secs_f64(args.time_limit * 60.0);
    if args.async_mode {
        return async_main(&args, nimbus, dir.path(), limit).await;
    }
    let outcome = tokio::time::timeout(limit, bench(&args, &langs, &nimbus, dir.path())).await;
    let server_log = nimbus.log();
    nimbus.stop().await?;
    let results = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("nimbus server log (tail):\n{}", tail(&server_log, 40));
            return Err(e);
        }
        Err(_) => bail!(
            "the benchmark took longer than --time-limit {} minutes",
            args.time_limit
        ),
    };
    let machine = machine()?;
    if args.json {
        let langs: serde_json::Map<String, Value> = results
            .iter()
            .map(|r| {
                let runs: Vec<Value> = r.runs.iter().map(|p| p.to_json()).collect();
                let v = json!({
                    "interpreter": r.interpreter, "version": r.version,
                    "median": Pair::median_of(&r.runs).to_json(), "runs": runs,
                });
                (r.lang.name().to_string(), v)
            })
            .collect();
        let out = json!({
            "machine": machine,
            "settings": {
                "runs": args.runs, "cold_samples": args.cold_samples,
                "warm_requests": args.warm_requests, "clients": args.clients,
                "concurrency": args.concurrency.unwrap_or(args.clients),
                "duration_s": args.duration, "warmup_s": args.warmup,
            },
            "languages": langs,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} cores, {}, kernel {}; median of {} runs",
            machine["nproc"],
            machine["cpu"].as_str().unwrap_or("?"),
            machine["kernel"].as_str().unwrap_or("?"),
            args.runs
        );
        for r in &results {
            println!();
            let title = format!("{} {}", r.lang.name(), r.version);
            print!("{}", Pair::median_of(&r.runs).table(&title));
        }
    }
    Ok(())
}

/// `--async`: the asynchronous-invocation benchmark.
async fn async_main(args: &Args, nimbus: Nimbus, dir: &Path, limit: Duration) -> Result<()> {
    let settings = async_bench::Settings {
        events: args.events as usize,
        submitters: args.submitters as usize,
        concurrency: args.async_concurrency,
        idle_samples: args.idle_samples as usize,
    };
    let node = Lang::Node.interpreter()?;
    let version = Lang::Node.version(&node)?;
    let outcome =
        tokio::time::timeout(limit, async_bench::bench(&nimbus, dir, settings, args.runs)).await;
    let server_log = nimbus.log();
    nimbus.stop().await?;
    let runs = match outcome {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            eprintln!("nimbus server log (tail):\n{}", tail(&server_log, 40));
            return Err(e);
        }
        Err(_) => bail!(
            "the benchmark took longer than --time-limit {} minutes",
            args.time_limit
        ),
    };
    let machine = machine()?;
    let median = async_bench::AsyncRun::median_of(&runs);
    if args.json {
        let out = json!({
            "machine": machine,
            "settings": {
                "runs": args.runs, "events": args.events, "submitters": args.submitters,
                "concurrency": args.async_concurrency, "idle_samples": args.idle_samples,
                "node": version,
            },
            "median": median.to_json(),
            "runs": runs.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{} cores, {}, kernel {}; median of {} runs",
            machine["nproc"],
            machine["cpu"].as_str().unwrap_or("?"),
            machine["kernel"].as_str().unwrap_or("?"),
            args.runs
        );
        println!(
            "{} events from {} clients to a no-op function (node {version}, concurrency {})",
            args.events, args.submitters, args.async_concurrency
        );
        println!();
        print!("{}", median.table("async no-op"));
    }
    Ok(())
}

/// The runs of one language.
struct LangResult {
    lang: Lang,
    interpreter: String,
    version: String,
    runs: Vec<Pair>,
}

/// One language's setup: its files, interpreter, floor server and deployed function.
struct Setup {
    lang: Lang,
    dir: PathBuf,
    interpreter: PathBuf,
    zip: Vec<u8>,
    floor: Floor,
    /// The function used for warm latency and throughput (stays deployed and warm).
    warm_fn: String,
}

async fn bench(
    args: &Args,
    langs: &[Lang],
    nimbus: &Nimbus,
    tmp: &Path,
) -> Result<Vec<LangResult>> {
    let mut setups = Vec::new();
    let mut results = Vec::new();
    for &lang in langs {
        let dir = tmp.join(lang.name());
        std::fs::create_dir_all(&dir)?;
        lang.write_files(&dir)?;
        let interpreter = lang.interpreter()?;
        let version = lang.version(&interpreter)?;
        let zip = lang.code_zip()?;
        let floor = Floor::start(lang, &interpreter, &dir).await?;
        let warm_fn = format!("bench-{}", lang.name());
        nimbus
            .deploy(
                &warm_fn,
                lang,
                &zip,
                args.concurrency.unwrap_or(args.clients),
            )
            .await?;
        eprintln!("{}: {} ({version})", lang.name(), interpreter.display());
        results.push(LangResult {
            lang,
            interpreter: interpreter.display().to_string(),
            version,
            runs: Vec::new(),
        });
        setups.push(Setup {
            lang,
            dir,
            interpreter,
            zip,
            floor,
            warm_fn,
        });
    }
    let load = client::Load {
        clients: args.clients as usize,
        warmup: Duration::from_secs_f64(args.warmup),
        min_warmup_requests: 3,
        duration: Duration::from_secs_f64(args.duration),
    };
    for run in 1..=args.runs {
        for (setup, result) in setups.iter().zip(results.iter_mut()) {
            let t0 = Instant::now();
            let pair = one_run(args, setup, nimbus, run, load)
                .await
                .with_context(|| format!("run {run} of {}", setup.lang.name()))?;
            eprintln!(
                "run {run}/{} {:<6} cold {:.1}/{:.1} ms, warm {:.3}/{:.3} ms, {:.0}/{:.0} rps (nimbus/floor; other load {:.1}/{:.1} cores) [{:.0} s]",
                args.runs,
                setup.lang.name(),
                pair.nimbus.cold.p50,
                pair.floor.cold.p50,
                pair.nimbus.warm.p50,
                pair.floor.warm.p50,
                pair.nimbus.rps,
                pair.floor.rps,
                pair.nimbus.cpu.other_cores,
                pair.floor.cpu.other_cores,
                t0.elapsed().as_secs_f64()
            );
            result.runs.push(pair);
        }
    }
    Ok(results)
}

async fn one_run(
    args: &Args,
    s: &Setup,
    nimbus: &Nimbus,
    run: u32,
    load: client::Load,
) -> Result<Pair> {
    // Cold start: a new function per sample, so no instance of it exists; deleted after
    // its one request so instances do not pile up.
    let mut cold = Vec::new();
    for i in 0..args.cold_samples {
        let name = format!("cold-{}-{run}-{i}", s.lang.name());
        nimbus.deploy(&name, s.lang, &s.zip, 1).await?;
        tokio::time::sleep(COLD_SETTLE).await;
        cold.push(client::one_shot(nimbus.addr, &format!("/fn/{name}/")).await?);
        nimbus.delete(&name).await?;
    }
    let mut cold_floor = Vec::new();
    for _ in 0..args.cold_samples {
        cold_floor.push(targets::load_and_exit(s.lang, &s.interpreter, &s.dir)?);
    }

    let url = format!("/fn/{}/", s.warm_fn);
    let n = args.warm_requests as usize;
    let warm = client::sequential(nimbus.addr, &url, WARMUP_REQUESTS, n).await?;
    let warm_floor = client::sequential(s.floor.addr, "/", WARMUP_REQUESTS, n).await?;

    let tput = client::throughput(nimbus.addr, &url, load, nimbus.pid()).await?;
    let tput_floor = client::throughput(s.floor.addr, "/", load, s.floor.pid()).await?;

    Ok(Pair {
        nimbus: Figures {
            cold: Latency::of(&cold),
            warm: Latency::of(&warm),
            rps: tput.rps,
            cpu: CpuPerRequest::of(&tput, load.duration),
        },
        floor: Figures {
            cold: Latency::of(&cold_floor),
            warm: Latency::of(&warm_floor),
            rps: tput_floor.rps,
            cpu: CpuPerRequest::of(&tput_floor, load.duration),
        },
    })
}

/// `--nimbus`, else `target/release/nimbus` under the current directory, else the
/// `nimbus` next to this executable (both are the same under `cargo run --release`).
fn nimbus_bin(arg: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = arg {
        if !p.is_file() {
            bail!("{} not found", p.display());
        }
        return Ok(p.to_path_buf());
    }
    let default = PathBuf::from("target/release/nimbus");
    if default.is_file() {
        return Ok(default);
    }
    let exe = std::env::current_exe()?;
    let sibling = exe.with_file_name("nimbus");
    if sibling.is_file() {
        return Ok(sibling);
    }
    bail!("nimbus binary not found: build it with `cargo build --release -p nimbus-cli` or pass --nimbus PATH")
}

/// The machine the numbers come from.
fn machine() -> Result<Value> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    Ok(json!({
        "nproc": std::thread::available_parallelism()?.get(),
        "cpu": cpu,
        "kernel": kernel.trim(),
    }))
}

/// A finite number of seconds (or minutes) above zero.
fn positive(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x < 1e6 => Ok(x),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
