//! `nimbus-bench`: the benchmark suite of issue 6. For Node.js and Python: cold start
//! (hello function and a 1 MB-dependency function, with and without stem cells), warm
//! latency, throughput, a burst of first requests, scale-out time and instances per GB,
//! each beside its floor measured in the same run (a bare HTTP server in the same language,
//! a plain fork+exec of the interpreter); then 1,000 deployed functions. Starts its own
//! `nimbus serve` (two when the server has stem cells: one with `--stem-cells off`) on free
//! loopback ports and stops them at the end. See `docs/performance.md`. With `--async`,
//! measures asynchronous invocation of a no-op function instead (see [`async_bench`]);
//! with `--sources`, the external event sources against their brokers (see
//! [`sources_bench`]); with `--cluster`, one node on SQLite against 1, 2 and 3 nodes on
//! PostgreSQL and NATS (see [`cluster_bench`]).

mod async_bench;
mod client;
mod cluster_bench;
mod cpu;
mod flows_bench;
mod lang;
mod layers;
mod mem;
mod observability;
mod report;
mod scenarios;
mod sources_bench;
mod sources_brokers;
mod speed;
mod stats;
mod storage_bench;
mod targets;

use anyhow::{bail, Context, Result};
use clap::Parser;
use lang::Lang;
use serde_json::{json, Value};
use stats::{Figs, Latency};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use targets::{Floor, Nimbus};

#[derive(Debug, Parser)]
#[command(about = "Benchmark Nimbus against the floor (bare servers, bare interpreters)")]
struct Args {
    /// Repeat the per-run scenarios (cold, warm, throughput, burst, scaleout) this many
    /// times and report the median of each figure [default: 5, 1 with --quick].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    runs: Option<u32>,
    /// The `nimbus` binary (default: target/release/nimbus, or the one next to this program).
    #[arg(long, value_name = "PATH")]
    nimbus: Option<PathBuf>,
    /// Run only these scenarios and/or languages (comma-separated; default: all).
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        value_name = "SCENARIO|LANG,..."
    )]
    only: Vec<Only>,
    /// Small settings for development (1 run, few samples, short loads, 100 functions);
    /// explicit flags still win.
    #[arg(long)]
    quick: bool,
    /// Print the results (every run and the medians) as JSON instead of tables.
    #[arg(long)]
    json: bool,
    /// Cold starts sampled per variant, language and run [default: 20; quick 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    cold_samples: Option<u32>,
    /// Sequential requests measured for warm latency, after 200 unmeasured [default: 2000; quick 300].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    warm_requests: Option<u32>,
    /// Concurrent clients (one keep-alive connection each) for throughput.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1000))]
    clients: u32,
    /// The warm function's concurrency limit (how far its pool may scale out; default: --clients).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    concurrency: Option<u32>,
    /// Seconds of measured load for throughput [default: 5; quick 1].
    #[arg(long, value_parser = positive)]
    duration: Option<f64>,
    /// Seconds of unmeasured load before each throughput measurement [default: 1; quick 0.3].
    #[arg(long, value_parser = positive)]
    warmup: Option<f64>,
    /// Burst: concurrent first requests to a cold function [default: 200; quick 50].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    burst_calls: Option<u32>,
    /// Burst: the function's concurrency limit [default: 50; quick 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    burst_concurrency: Option<u32>,
    /// Scale-out: instances to reach (and concurrent callers) [default: 16; quick 4].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    scaleout: Option<u32>,
    /// Density: idle instances started and measured [default: 20; quick 4].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    density: Option<u32>,
    /// Many: functions deployed [default: 1000; quick 100].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    functions: Option<u32>,
    /// Many: functions invoked for the first time, picked at random [default: 20; quick 5].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    first_invokes: Option<u32>,
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
    /// Measure the object store and the queues instead (issue 15): S3 PUT/GET of 4 KiB and
    /// 16 MiB objects beside a bare write+fsync / read floor, SQS send/receive/delete,
    /// upload → function start (see `storage_bench.rs`).
    #[arg(long)]
    storage: bool,
    /// With --storage: concurrent clients (and floor threads).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    storage_clients: u32,
    /// With --storage: 4 KiB objects put and got per run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    small_objects: u32,
    /// With --storage: 16 MiB objects put and got per run.
    #[arg(long, default_value_t = 48, value_parser = clap::value_parser!(u32).range(1..))]
    large_objects: u32,
    /// With --storage: messages sent, received and deleted per run (and sent to a FIFO queue).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// With --storage: uploads timed to their function's start per run.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    uploads: u32,
    /// Measure workflows instead (issue 17): state transitions per second, StartSync-
    /// Execution of three Tasks against three direct invocations, Map fan-out against
    /// direct invocations (see `flows_bench.rs`).
    #[arg(long)]
    flows: bool,
    /// With --flows: executions of the Pass chain started at once.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    flow_executions: u32,
    /// With --flows: Map items per run.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    map_items: u32,
    /// Measure the external event sources instead (issue 16): per broker and batch size,
    /// records/s end to end and publish -> handler entry of a no-op function, beside the
    /// broker's own publish -> consume floor (see `sources_bench.rs`).
    #[arg(long)]
    sources: bool,
    /// With --sources (implies it): only these brokers.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SOURCE,...")]
    sources_only: Vec<sources_brokers::Kind>,
    /// With --sources: the mappings' batch sizes.
    #[arg(long, value_delimiter = ',', default_values_t = [1u32, 10, 100],
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    source_batches: Vec<u32>,
    /// With --sources: records published at once per throughput measurement.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    source_records: u32,
    /// With --sources: records published one at a time per latency measurement.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    source_paced: u32,
    /// With --sources: the latency measurement's publishing rate (records/s).
    #[arg(long, default_value_t = 100.0, value_parser = positive)]
    source_rate: f64,
    /// Measure cluster mode instead (issue 18): the hello function on one node on SQLite
    /// and on 1..=--cluster-nodes nodes sharing the local PostgreSQL and NATS: sync
    /// throughput and latency, async delivery, CPU per invocation of each component (see
    /// `cluster_bench.rs`). Uses --runs [3], --clients, --duration, --warmup, --events,
    /// --submitters and --concurrency [2: instances per node].
    #[arg(long)]
    cluster: bool,
    /// With --cluster: the largest cluster measured.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=9))]
    cluster_nodes: u32,
    /// Measure issue 19's figures instead: the wasi-http hello component, the Node and
    /// Python hello process functions and a cache hit against a bare hyper server and
    /// workerd (from npm), warm and at --clients; the wasm cold start, per-request time and
    /// idle memory; the Node stem-cell cold start (see `speed.rs`). Uses --runs [3],
    /// --warm-requests, --clients, --concurrency, --duration, --warmup, --cold-samples.
    #[arg(long)]
    speed: bool,
    /// With --speed: wasm cold starts of a component never compiled before.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    compile_samples: u32,
    /// With --speed: idle wasm functions deployed for the memory figure.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    idle_functions: u32,
    /// Serve the bare hyper floor of --speed on ADDR, and nothing else (--speed starts the
    /// bench itself so).
    #[arg(long, value_name = "ADDR")]
    hyper_floor: Option<std::net::SocketAddr>,
    /// Give up (and stop everything) after this many minutes.
    #[arg(long, default_value_t = 30.0, value_parser = positive)]
    time_limit: f64,
}

/// What `--only` selects: scenarios, languages, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    Cold,
    Warm,
    Throughput,
    Burst,
    Scaleout,
    Density,
    Many,
    /// Cold start with a 20 MB dependency layer against without (stem cells on); only
    /// when asked for (`--only layers`), reported on its own.
    Layers,
    /// Warm latency and throughput with metrics off, on, and on with OTLP trace export
    /// (three servers in one run); only when asked for (`--only observability`), reported
    /// on its own.
    Observability,
    Node,
    Python,
}

const SCENARIOS: [Only; 7] = [
    Only::Cold,
    Only::Warm,
    Only::Throughput,
    Only::Burst,
    Only::Scaleout,
    Only::Density,
    Only::Many,
];

/// The settings of a run, `--quick` and defaults resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    runs: u32,
    cold_samples: u32,
    warm_requests: u32,
    clients: u32,
    concurrency: u32,
    duration: f64,
    warmup: f64,
    burst_calls: u32,
    burst_concurrency: u32,
    scaleout: u32,
    density: u32,
    functions: u32,
    first_invokes: u32,
    scenarios: Vec<Only>,
    langs: Vec<Lang>,
}

impl Settings {
    fn of(a: &Args) -> Settings {
        let pick = |v: Option<u32>, normal: u32, quick: u32| {
            v.unwrap_or(if a.quick { quick } else { normal })
        };
        let pickf = |v: Option<f64>, normal: f64, quick: f64| {
            v.unwrap_or(if a.quick { quick } else { normal })
        };
        let scenarios: Vec<Only> = SCENARIOS
            .into_iter()
            .filter(|s| !a.only.iter().any(|o| SCENARIOS.contains(o)) || a.only.contains(s))
            .collect();
        let langs = Lang::ALL
            .into_iter()
            .filter(|l| {
                let o = match l {
                    Lang::Node => Only::Node,
                    Lang::Python => Only::Python,
                };
                !a.only
                    .iter()
                    .any(|x| matches!(x, Only::Node | Only::Python))
                    || a.only.contains(&o)
            })
            .collect();
        Settings {
            runs: pick(a.runs, 5, 1),
            cold_samples: pick(a.cold_samples, 20, 5),
            warm_requests: pick(a.warm_requests, 2000, 300),
            clients: a.clients,
            concurrency: a.concurrency.unwrap_or(a.clients),
            duration: pickf(a.duration, 5.0, 1.0),
            warmup: pickf(a.warmup, 1.0, 0.3),
            burst_calls: pick(a.burst_calls, 200, 50),
            burst_concurrency: pick(a.burst_concurrency, 50, 10),
            scaleout: pick(a.scaleout, 16, 4),
            density: pick(a.density, 20, 4),
            functions: pick(a.functions, 1000, 100),
            first_invokes: pick(a.first_invokes, 20, 5),
            scenarios,
            langs,
        }
    }

    /// The throughput scenario's load.
    fn load(&self) -> client::Load {
        client::Load {
            clients: self.clients as usize,
            warmup: Duration::from_secs_f64(self.warmup),
            min_warmup_requests: 3,
            duration: Duration::from_secs_f64(self.duration),
        }
    }

    fn has(&self, s: Only) -> bool {
        self.scenarios.contains(&s)
    }

    fn to_json(&self) -> Value {
        json!({
            "runs": self.runs, "cold_samples": self.cold_samples,
            "warm_requests": self.warm_requests, "clients": self.clients,
            "concurrency": self.concurrency, "duration_s": self.duration, "warmup_s": self.warmup,
            "burst_calls": self.burst_calls, "burst_concurrency": self.burst_concurrency,
            "scaleout": self.scaleout, "density": self.density, "functions": self.functions,
            "first_invokes": self.first_invokes,
            "scenarios": self.scenarios.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>(),
        })
    }
}

const WARMUP_REQUESTS: usize = 200;

/// The servers under test: `main` has the server's default settings (stem cells on when
/// it has them) and serves every scenario; `no_stem` runs with `--stem-cells off` for the
/// cold-start "without stem cells" columns (when the server has no stem cells, `main` is
/// that server and `no_stem` is `None`).
struct Servers {
    main: Nimbus,
    no_stem: Option<Nimbus>,
    /// `Err(why)` when the server has no stem cells.
    stem: std::result::Result<(), String>,
}

impl Servers {
    fn without_stem(&self) -> &Nimbus {
        self.no_stem.as_ref().unwrap_or(&self.main)
    }

    async fn stop(self) -> Result<()> {
        if let Some(n) = self.no_stem {
            n.stop().await?;
        }
        self.main.stop().await
    }

    fn logs(&self) -> String {
        let mut s = self.main.log();
        if let Some(n) = &self.no_stem {
            s += "\n--- the --stem-cells off server ---\n";
            s += &n.log();
        }
        s
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(addr) = args.hyper_floor {
        return speed::serve_hyper_floor(addr);
    }
    let bin = nimbus_bin(args.nimbus.as_deref())?;
    let dir = tempfile::Builder::new().prefix("nimbus-bench").tempdir()?;
    let limit = Duration::from_secs_f64(args.time_limit * 60.0);
    if args.storage {
        let (s3_addr, flags) = storage_bench::serve_flags()?;
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let nimbus = Nimbus::start(&bin, &dir.path().join("server"), &flags).await?;
        return storage_main(&args, nimbus, &s3_addr, dir.path(), limit).await;
    }
    if args.sources || !args.sources_only.is_empty() {
        return sources_main(&args, &bin, dir.path(), limit).await;
    }
    if args.cluster {
        return cluster_main(&args, &bin, dir.path(), limit).await;
    }
    if args.flows {
        return flows_main(&args, &bin, dir.path(), limit).await;
    }
    if args.speed {
        return speed_main(&args, &bin, dir.path(), limit).await;
    }
    if args.async_mode {
        let nimbus = Nimbus::start(&bin, &dir.path().join("server"), &[]).await?;
        return async_main(&args, nimbus, dir.path(), limit).await;
    }
    let s = Settings::of(&args);
    if args.only.contains(&Only::Layers) {
        return layers_main(&args, &s, &bin, dir.path(), limit).await;
    }
    if args.only.contains(&Only::Observability) {
        return observability_main(&args, &s, &bin, dir.path(), limit).await;
    }
    if s.langs.is_empty() || s.scenarios.is_empty() {
        bail!("--only selects nothing");
    }
    let mut stem = targets::stem_cell_support(&bin);
    let main = Nimbus::start(&bin, &dir.path().join("server"), &[]).await?;
    if stem.is_ok() {
        stem = main.stem_enabled().await?;
    }
    let no_stem = match &stem {
        Ok(()) => Some(
            Nimbus::start(
                &bin,
                &dir.path().join("server-no-stem"),
                &["--stem-cells", "off"],
            )
            .await?,
        ),
        Err(_) => None,
    };
    let servers = Servers {
        main,
        no_stem,
        stem,
    };
    if let Err(why) = &servers.stem {
        eprintln!("stem cells: n/a ({why}); cold starts are measured without them only");
    }
    let t0 = Instant::now();
    let outcome = tokio::time::timeout(limit, bench(&s, &servers, dir.path())).await;
    let server_log = servers.logs();
    let stem = servers.stem.clone();
    servers.stop().await?;
    let (results, many) = outcome_of(outcome, &server_log, args.time_limit)?;
    eprintln!("done in {:.0} s", t0.elapsed().as_secs_f64());
    let machine = machine()?;
    let rep = report::Report {
        settings: &s,
        stem: &stem,
        langs: &results,
        many: many.as_ref(),
    };
    if args.json {
        let langs: serde_json::Map<String, Value> = results
            .iter()
            .map(|r| {
                let v = json!({
                    "interpreter": r.interpreter, "version": r.version,
                    "median": r.median().to_json(),
                    "runs": r.runs.iter().map(Figs::to_json).collect::<Vec<_>>(),
                });
                (r.lang.name().to_string(), v)
            })
            .collect();
        let out = json!({
            "machine": machine,
            "settings": s.to_json(),
            "stem_cells": match &stem { Ok(()) => json!({ "supported": true }), Err(why) => json!({ "supported": false, "why": why }) },
            "languages": langs,
            "many": many.as_ref().map(Figs::to_json),
            "targets": rep.targets().iter().map(|t| t.to_json()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}; median of {} runs", machine_line(&machine), s.runs);
        print!("{}", rep.text());
    }
    Ok(())
}

/// `--only layers`: cold starts with and without a 20 MB dependency layer (see `layers.rs`).
async fn layers_main(
    args: &Args,
    s: &Settings,
    bin: &Path,
    dir: &Path,
    limit: Duration,
) -> Result<()> {
    let nimbus = Nimbus::start(bin, &dir.join("server"), &[]).await?;
    if let Err(why) = nimbus.stem_enabled().await? {
        eprintln!("stem cells: n/a ({why}); both columns are cold starts without them");
    }
    let outcome = tokio::time::timeout(
        limit,
        layers::bench(&nimbus, &s.langs, s.runs, s.cold_samples),
    )
    .await;
    let server_log = nimbus.log();
    nimbus.stop().await?;
    let figs = outcome_of(outcome, &server_log, args.time_limit)?;
    let machine = machine()?;
    if args.json {
        let out = json!({
            "machine": machine,
            "settings": { "runs": s.runs, "cold_samples": s.cold_samples, "layer_bytes": layers::LAYER_BYTES },
            "layers": figs.iter().map(layers::LayerFigs::to_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}; median of {} runs of {} cold starts each",
            machine_line(&machine),
            s.runs,
            s.cold_samples
        );
        for f in &figs {
            print!("{}", f.line());
        }
    }
    Ok(())
}

/// `--only observability`: metrics off / on / on with OTLP export (see `observability.rs`).
async fn observability_main(
    args: &Args,
    s: &Settings,
    bin: &Path,
    dir: &Path,
    limit: Duration,
) -> Result<()> {
    let settings = observability::Settings {
        runs: s.runs,
        warm_requests: s.warm_requests as usize,
        load: s.load(),
        // One instance per core: 32 per server would measure instances fighting over the
        // cores, not the server's path.
        concurrency: args.concurrency.unwrap_or(2),
    };
    let receiver = observability::Receiver::start()?;
    let servers = observability::Servers::start(bin, dir, &receiver).await?;
    let t0 = Instant::now();
    let outcome = tokio::time::timeout(
        limit,
        observability::bench(&servers, &s.langs, settings, dir),
    )
    .await;
    let dropped = observability::spans_dropped(&servers.otlp).await;
    let server_log = servers.logs();
    servers.stop().await?;
    let figs = outcome_of(outcome, &server_log, args.time_limit)?;
    let export = observability::export_report(&receiver, dropped?)?;
    eprintln!("done in {:.0} s", t0.elapsed().as_secs_f64());
    let machine = machine()?;
    if args.json {
        let out = json!({
            "machine": machine,
            "settings": {
                "runs": s.runs, "warm_requests": s.warm_requests, "clients": s.clients,
                "duration_s": s.duration, "warmup_s": s.warmup,
                "concurrency": settings.concurrency,
            },
            "observability": figs.iter().map(observability::ObsFigs::to_json).collect::<Vec<_>>(),
            "otlp": export,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}; median of {} runs; {} clients × {} s, function concurrency {}",
            machine_line(&machine),
            s.runs,
            s.clients,
            s.duration,
            settings.concurrency
        );
        for f in &figs {
            print!("{}", f.text(settings.warm_requests));
        }
        print!("{}", observability::export_line(&export));
    }
    Ok(())
}

/// A benchmark's result once its servers are stopped: its figures, its error (after the
/// tail of the server log), or the time limit it ran past.
fn outcome_of<T>(
    outcome: Result<Result<T>, tokio::time::error::Elapsed>,
    server_log: &str,
    time_limit_min: f64,
) -> Result<T> {
    match outcome {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => {
            eprintln!("nimbus server log (tail):\n{}", tail(server_log, 40));
            Err(e)
        }
        Err(_) => bail!("the benchmark took longer than --time-limit {time_limit_min} minutes"),
    }
}

/// `--async`: the asynchronous-invocation benchmark.
async fn async_main(args: &Args, nimbus: Nimbus, dir: &Path, limit: Duration) -> Result<()> {
    let settings = async_bench::Settings {
        events: args.events as usize,
        submitters: args.submitters as usize,
        concurrency: args.async_concurrency,
        idle_samples: args.idle_samples as usize,
    };
    let runs = args.runs.unwrap_or(5);
    let node = Lang::Node.interpreter()?;
    let version = Lang::Node.version(&node)?;
    let outcome =
        tokio::time::timeout(limit, async_bench::bench(&nimbus, dir, settings, runs)).await;
    let server_log = nimbus.log();
    nimbus.stop().await?;
    let runs_out = outcome_of(outcome, &server_log, args.time_limit)?;
    let machine = machine()?;
    let median = async_bench::AsyncRun::median_of(&runs_out);
    if args.json {
        let out = json!({
            "machine": machine,
            "settings": {
                "runs": runs, "events": args.events, "submitters": args.submitters,
                "concurrency": args.async_concurrency, "idle_samples": args.idle_samples,
                "node": version,
            },
            "median": median.to_json(),
            "runs": runs_out.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}; median of {} runs", machine_line(&machine), runs);
        println!(
            "{} events from {} clients to a no-op function (node {version}, concurrency {})",
            args.events, args.submitters, args.async_concurrency
        );
        println!();
        print!("{}", median.table("async no-op"));
    }
    Ok(())
}

/// `--speed`: issue 19's figures (see `speed.rs`).
async fn speed_main(args: &Args, bin: &Path, dir: &Path, limit: Duration) -> Result<()> {
    let s = Settings::of(args);
    let settings = speed::Settings {
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }),
        warm_requests: s.warm_requests as usize,
        load: s.load(),
        concurrency: s.concurrency,
        cold_samples: s.cold_samples,
        compile_samples: if args.quick { 2 } else { args.compile_samples },
        idle_functions: if args.quick { 10 } else { args.idle_functions },
    };
    let load_before = loadavg();
    let t0 = Instant::now();
    let figs = match tokio::time::timeout(limit, speed::bench(bin, dir, &settings)).await {
        Ok(r) => r?,
        Err(_) => bail!(
            "the benchmark took longer than --time-limit {} minutes",
            args.time_limit
        ),
    };
    let load_after = loadavg();
    let machine = machine()?;
    if args.json {
        let mut out = speed::to_json(&figs);
        out["machine"] = machine;
        out["load_average"] = json!({"before": load_before, "after": load_after});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}",
            run_line(&machine, settings.runs, t0, &load_before, &load_after)
        );
        print!("{}", speed::text(&figs, &settings));
    }
    Ok(())
}

/// `--sources`: external event sources against their brokers' floors (see `sources_bench.rs`).
async fn sources_main(args: &Args, bin: &Path, dir: &Path, limit: Duration) -> Result<()> {
    let kinds: Vec<sources_brokers::Kind> = if args.sources_only.is_empty() {
        sources_brokers::Kind::ALL.to_vec()
    } else {
        sources_brokers::Kind::ALL
            .into_iter()
            .filter(|k| args.sources_only.contains(k))
            .collect()
    };
    let settings = sources_bench::Settings {
        kinds,
        batches: args.source_batches.clone(),
        records: args.source_records as usize,
        paced: args.source_paced as usize,
        rate: args.source_rate,
        concurrency: 16,
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 });
    let load_before = loadavg();
    let env = sources_brokers::Env::prepare(&settings.kinds, dir)?;
    let nimbus = Nimbus::start(bin, &dir.join("server"), &[]).await?;
    let node = Lang::Node.interpreter()?;
    let version = Lang::Node.version(&node)?;
    let t0 = Instant::now();
    let outcome =
        tokio::time::timeout(limit, sources_bench::bench(&nimbus, &env, &settings, runs)).await;
    let server_log = nimbus.log();
    nimbus.stop().await?;
    drop(env);
    let runs_out = outcome_of(outcome, &server_log, args.time_limit)?;
    let load_after = loadavg();
    let machine = machine()?;
    let median = sources_bench::KindRun::median_of(&runs_out);
    if args.json {
        let out = json!({
            "machine": machine,
            "load_average": {"before": load_before, "after": load_after},
            "settings": {
                "runs": runs, "batch_sizes": settings.batches, "records": settings.records,
                "paced": settings.paced, "rate": settings.rate, "node": version,
            },
            "median": median.iter().map(|k| k.to_json()).collect::<Vec<_>>(),
            "runs": runs_out.iter().map(|r| r.iter().map(|k| k.to_json()).collect::<Vec<_>>()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}",
            run_line(&machine, runs, t0, &load_before, &load_after)
        );
        println!(
            "{} records per burst, {} paced at {}/s; no-op function: node {version}",
            settings.records, settings.paced, settings.rate
        );
        println!();
        print!("{}", sources_bench::table(&median));
    }
    Ok(())
}

/// `--flows`: workflows against their floors (see `flows_bench.rs`).
async fn flows_main(args: &Args, bin: &Path, dir: &Path, limit: Duration) -> Result<()> {
    let settings = flows_bench::Settings {
        executions: args.flow_executions as usize,
        chain: 100,
        sync_samples: if args.quick { 50 } else { 200 },
        map_items: args.map_items as usize,
        map_concurrency: 20,
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 3 });
    let load_before = loadavg();
    let nimbus = Nimbus::start(bin, &dir.join("server"), &[]).await?;
    let t0 = Instant::now();
    let outcome =
        tokio::time::timeout(limit, flows_bench::bench(&nimbus, dir, &settings, runs)).await;
    let server_log = nimbus.log();
    nimbus.stop().await?;
    let runs_out = outcome_of(outcome, &server_log, args.time_limit)?;
    let load_after = loadavg();
    let machine = machine()?;
    let median = flows_bench::FlowRun::median_of(&runs_out);
    if args.json {
        let out = json!({
            "machine": machine,
            "load_average": {"before": load_before, "after": load_after},
            "settings": {
                "runs": runs, "executions": settings.executions, "chain": settings.chain,
                "sync_samples": settings.sync_samples, "map_items": settings.map_items,
                "map_concurrency": settings.map_concurrency,
            },
            "median": median.to_json(),
            "runs": runs_out.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}",
            run_line(&machine, runs, t0, &load_before, &load_after)
        );
        println!();
        print!("{}", median.table(&settings));
    }
    Ok(())
}

/// `--cluster`: one node on SQLite against 1..=N nodes on PostgreSQL + NATS (see
/// `cluster_bench.rs`).
async fn cluster_main(args: &Args, bin: &Path, dir: &Path, limit: Duration) -> Result<()> {
    cluster_bench::check_services()?;
    let pick = |normal: f64, quick: f64| if args.quick { quick } else { normal };
    let mut configs = vec![cluster_bench::Config::Sqlite];
    configs.extend((1..=args.cluster_nodes as usize).map(cluster_bench::Config::Pg));
    let settings = cluster_bench::Settings {
        configs,
        runs: args.runs.unwrap_or(if args.quick { 1 } else { 3 }),
        clients: args.clients as usize,
        warmup: Duration::from_secs_f64(args.warmup.unwrap_or(pick(1.0, 0.3))),
        duration: Duration::from_secs_f64(args.duration.unwrap_or(pick(5.0, 1.0))),
        latency_duration: Duration::from_secs_f64(pick(3.0, 1.0)),
        events: args.events as usize,
        submitters: args.submitters as usize,
        concurrency: args.concurrency.unwrap_or(2),
    };
    let node = Lang::Node.interpreter()?;
    let version = Lang::Node.version(&node)?;
    let load_before = loadavg();
    let t0 = Instant::now();
    let results = tokio::time::timeout(limit, cluster_bench::bench(bin, dir, &settings))
        .await
        .map_err(|_| {
            anyhow::anyhow!(
                "the benchmark took longer than --time-limit {} minutes",
                args.time_limit
            )
        })??;
    let load_after = loadavg();
    let machine = machine()?;
    if args.json {
        let out = json!({
            "machine": machine,
            "load_average": {"before": load_before, "after": load_after},
            "settings": settings.to_json(),
            "node": version,
            "configs": cluster_bench::to_json(&results),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "{}",
            run_line(&machine, settings.runs, t0, &load_before, &load_after)
        );
        println!(
            "hello function (node {version}), concurrency {} per node; {} clients x {} s; {} events from {} submitters",
            settings.concurrency,
            settings.clients,
            settings.duration.as_secs_f64(),
            settings.events,
            settings.submitters
        );
        println!();
        print!("{}", cluster_bench::table(&results, &settings));
    }
    Ok(())
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `--storage`: S3 objects, SQS messages and upload → function start (see `storage_bench.rs`).
async fn storage_main(
    args: &Args,
    nimbus: Nimbus,
    s3_addr: &str,
    dir: &Path,
    limit: Duration,
) -> Result<()> {
    let settings = storage_bench::Settings {
        clients: args.storage_clients as usize,
        small_objects: args.small_objects as usize,
        large_objects: args.large_objects as usize,
        messages: args.messages as usize,
        uploads: args.uploads as usize,
    };
    let runs = args.runs.unwrap_or(if args.quick { 1 } else { 5 });
    let node = Lang::Node.interpreter()?;
    let version = Lang::Node.version(&node)?;
    let outcome = tokio::time::timeout(
        limit,
        storage_bench::bench(&nimbus, s3_addr, dir, settings, runs),
    )
    .await;
    let server_log = nimbus.log();
    nimbus.stop().await?;
    let runs_out = outcome_of(outcome, &server_log, args.time_limit)?;
    let machine = machine()?;
    let median = storage_bench::StorageRun::median_of(&runs_out);
    if args.json {
        let out = json!({
            "machine": machine,
            "settings": {
                "runs": runs, "clients": settings.clients, "small_objects": settings.small_objects,
                "large_objects": settings.large_objects, "messages": settings.messages,
                "uploads": settings.uploads, "node": version,
            },
            "median": median.to_json(),
            "runs": runs_out.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{}; median of {} runs", machine_line(&machine), runs);
        println!(
            "{} clients; {} x 4 KiB and {} x 16 MiB objects, {} messages, {} uploads per run (node {version})",
            settings.clients, settings.small_objects, settings.large_objects, settings.messages, settings.uploads
        );
        println!();
        print!("{}", median.table());
    }
    Ok(())
}

/// The figures of one language.
pub struct LangResult {
    pub lang: Lang,
    pub interpreter: String,
    pub version: String,
    /// One per run.
    pub runs: Vec<Figs>,
    /// Measured once (density).
    pub once: Figs,
}

impl LangResult {
    /// The median of each per-run figure, with the once-measured ones.
    pub fn median(&self) -> Figs {
        let mut m = Figs::median_of(&self.runs);
        m.extend(&self.once);
        m
    }
}

/// One language's setup: its files, interpreter, floor server and deployed function.
struct Setup {
    lang: Lang,
    dir: PathBuf,
    interpreter: PathBuf,
    zip: Vec<u8>,
    dep_zip: Vec<u8>,
    floor: Floor,
    /// The function used for warm latency and throughput (stays deployed and warm).
    warm_fn: String,
}

async fn bench(
    s: &Settings,
    servers: &Servers,
    tmp: &Path,
) -> Result<(Vec<LangResult>, Option<Figs>)> {
    let nimbus = &servers.main;
    let mut setups = Vec::new();
    let mut results = Vec::new();
    for &lang in &s.langs {
        let dir = tmp.join(lang.name());
        std::fs::create_dir_all(&dir)?;
        lang.write_files(&dir)?;
        let interpreter = lang.interpreter()?;
        let version = lang.version(&interpreter)?;
        let floor = Floor::start(lang, &interpreter, &dir).await?;
        let warm_fn = format!("bench-{}", lang.name());
        let zip = lang.code_zip()?;
        nimbus.deploy(&warm_fn, lang, &zip, s.concurrency).await?;
        eprintln!("{}: {} ({version})", lang.name(), interpreter.display());
        results.push(LangResult {
            lang,
            interpreter: interpreter.display().to_string(),
            version,
            runs: Vec::new(),
            once: Figs::default(),
        });
        setups.push(Setup {
            lang,
            dir,
            interpreter,
            zip,
            dep_zip: lang.dep_zip()?,
            floor,
            warm_fn,
        });
    }
    let load = s.load();
    if s.has(Only::Density) {
        for (setup, result) in setups.iter().zip(results.iter_mut()) {
            let t0 = Instant::now();
            let name = format!("density-{}", setup.lang.name());
            // First, on a fresh server, so its own memory growth is not hidden in what
            // earlier scenarios left allocated; on the one without stem cells (when there
            // are two): its descendants are then the instances only, not also a stem pool
            // that may grow meanwhile.
            scenarios::density(
                servers.without_stem(),
                setup.lang,
                &setup.interpreter,
                &setup.dir,
                &name,
                s.density as usize,
                &mut result.once,
            )
            .await
            .with_context(|| format!("density of {}", setup.lang.name()))?;
            let f = &result.once;
            eprintln!(
                "density {:<6} {} instances: {:.1} MB PSS each (floor {:.1} MB), nimbus +{:.2} MB each [{:.0} s]",
                setup.lang.name(),
                f.get("density.instances").unwrap_or(0.0),
                f.get("density.pss_mb").unwrap_or(0.0),
                f.get("density.floor_pss_mb").unwrap_or(0.0),
                f.get("density.server_rss_mb").unwrap_or(0.0),
                t0.elapsed().as_secs_f64()
            );
        }
    }
    let per_run = [
        Only::Cold,
        Only::Warm,
        Only::Throughput,
        Only::Burst,
        Only::Scaleout,
    ];
    if per_run.iter().any(|o| s.has(*o)) {
        for run in 1..=s.runs {
            for (setup, result) in setups.iter().zip(results.iter_mut()) {
                let t0 = Instant::now();
                let figs = one_run(s, setup, servers, run, load)
                    .await
                    .with_context(|| format!("run {run} of {}", setup.lang.name()))?;
                eprintln!(
                    "run {run}/{} {:<6} {} [{:.0} s]",
                    s.runs,
                    setup.lang.name(),
                    report::progress_line(&figs),
                    t0.elapsed().as_secs_f64()
                );
                result.runs.push(figs);
            }
        }
    }
    let many = if s.has(Only::Many) {
        let t0 = Instant::now();
        eprintln!("many: deploying {} functions", s.functions);
        let mut figs = Figs::default();
        scenarios::many(
            nimbus,
            scenarios::Many {
                count: s.functions as usize,
                invoke: s.first_invokes as usize,
                langs: &s.langs,
                warm: setups.iter().map(|x| (x.lang, x.warm_fn.clone())).collect(),
                warm_requests: s.warm_requests as usize,
                stem: servers.stem.is_ok(),
            },
            &mut figs,
        )
        .await
        .context("many functions")?;
        eprintln!(
            "many: list {:.1} ms ({} pages) [{:.0} s]",
            figs.get("many.list.p50").unwrap_or(0.0),
            figs.get("many.list_pages").unwrap_or(0.0),
            t0.elapsed().as_secs_f64()
        );
        Some(figs)
    } else {
        None
    };
    Ok((results, many))
}

/// Cold-start samples: a new function per sample (so no instance of it exists), deleted
/// after its one request so instances do not pile up. With `stem`, each sample first waits
/// until the server has an idle stem cell for the runtime (or 1 s if it does not say), and
/// counts whether the server's stem-cell `hits` grew during the request (a stem cell served it).
async fn cold_samples(
    server: &Nimbus,
    lang: Lang,
    zip: &[u8],
    tag: &str,
    n: u32,
    stem: bool,
    figs: &mut Figs,
) -> Result<()> {
    let mut samples = Vec::new();
    let mut with_idle_stem = 0;
    let (mut stem_used, mut hits_reported) = (0, false);
    for _ in 0..n {
        // Unique across runs: a name is never reused.
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("cold-{}-{}-{seq}", tag.replace('.', "-"), lang.name());
        server.deploy(&name, lang, zip, 1).await?;
        tokio::time::sleep(scenarios::SETTLE).await;
        let mut hits = None;
        if stem {
            if server.wait_for_stem(lang.runtime()).await? {
                with_idle_stem += 1;
            }
            hits = server.stem_count(lang.runtime(), "hits").await?;
        }
        samples.push(client::one_shot(server.addr, &format!("/fn/{name}/")).await?);
        if let Some(before) = hits {
            if let Some(after) = server.stem_count(lang.runtime(), "hits").await? {
                hits_reported = true;
                if after > before {
                    stem_used += 1;
                }
            }
        }
        server.delete(&name).await?;
    }
    figs.put_lat(&format!("cold.{tag}"), Latency::of(&samples));
    if stem {
        figs.put(&format!("cold.{tag}.idle_stem_seen"), with_idle_stem as f64);
        if hits_reported {
            figs.put(&format!("cold.{tag}.stem_hits"), stem_used as f64);
        }
    }
    Ok(())
}

async fn one_run(
    s: &Settings,
    x: &Setup,
    servers: &Servers,
    run: u32,
    load: client::Load,
) -> Result<Figs> {
    let nimbus = &servers.main;
    let mut f = Figs::default();
    let lang = x.lang;
    if s.has(Only::Cold) {
        let off = servers.without_stem();
        let n = s.cold_samples;
        cold_samples(off, lang, &x.zip, "hello.off", n, false, &mut f).await?;
        cold_samples(off, lang, &x.dep_zip, "dep.off", n, false, &mut f).await?;
        if servers.stem.is_ok() {
            cold_samples(nimbus, lang, &x.zip, "hello.stem", n, true, &mut f).await?;
            cold_samples(nimbus, lang, &x.dep_zip, "dep.stem", n, true, &mut f).await?;
        }
        let dep_dir = lang.dep_dir(&x.dir);
        let (mut exec, mut load_h, mut load_d) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            exec.push(targets::exec_noop(lang, &x.interpreter, &x.dir)?);
            load_h.push(targets::load_and_exit(lang, &x.interpreter, &x.dir)?);
            load_d.push(targets::load_and_exit(lang, &x.interpreter, &dep_dir)?);
        }
        f.put_lat("floor.exec", Latency::of(&exec));
        f.put_lat("floor.load", Latency::of(&load_h));
        f.put_lat("floor.load_dep", Latency::of(&load_d));
    }
    let url = format!("/fn/{}/", x.warm_fn);
    if s.has(Only::Warm) {
        let n = s.warm_requests as usize;
        let warm = client::sequential(nimbus.addr, &url, WARMUP_REQUESTS, n).await?;
        let floor = client::sequential(x.floor.addr, "/", WARMUP_REQUESTS, n).await?;
        f.put_lat("warm", Latency::of(&warm));
        f.put_lat("warm.floor", Latency::of(&floor));
    }
    if s.has(Only::Throughput) {
        let t = client::throughput(nimbus.addr, &url, load, nimbus.pid()).await?;
        let tf = client::throughput(x.floor.addr, "/", load, x.floor.pid()).await?;
        f.put("tput.rps", t.rps);
        f.put("tput.floor_rps", tf.rps);
        stats::put_cpu(&mut f, "tput.cpu", &t, load.duration);
        stats::put_cpu(&mut f, "tput.floor_cpu", &tf, load.duration);
    }
    if s.has(Only::Burst) {
        let name = format!("burst-{}-{run}", lang.name());
        scenarios::burst(
            nimbus,
            x.floor.addr,
            lang,
            &name,
            s.burst_calls as usize,
            s.burst_concurrency,
            &mut f,
        )
        .await
        .context("burst")?;
    }
    if s.has(Only::Scaleout) {
        let name = format!("scaleout-{}-{run}", lang.name());
        scenarios::scaleout(
            nimbus,
            lang,
            &x.interpreter,
            &x.dir,
            &name,
            s.scaleout as usize,
            &mut f,
        )
        .await
        .context("scale-out")?;
    }
    Ok(f)
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

/// `N cores, CPU, kernel K`: the machine the numbers come from, in one line.
fn machine_line(machine: &Value) -> String {
    format!(
        "{} cores, {}, kernel {}",
        machine["nproc"],
        machine["cpu"].as_str().unwrap_or("?"),
        machine["kernel"].as_str().unwrap_or("?")
    )
}

/// A finite number of seconds (or minutes) above zero.
/// The first line of a report: the machine, the runs, how long, the load around it.
fn run_line(machine: &Value, runs: u32, t0: Instant, before: &str, after: &str) -> String {
    format!(
        "{}; median of {runs} runs; {:.0} s; load average {before} before, {after} after",
        machine_line(machine),
        t0.elapsed().as_secs_f64()
    )
}

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
