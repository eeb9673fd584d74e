//! `--only observability` (issue 14): what metrics and trace export cost the warm path.
//! One run starts three servers: `--metrics off`, metrics on (the default), and metrics on
//! with every invocation's spans exported over OTLP/HTTP (`--otlp-endpoint`) to a receiver
//! this bench runs itself ([`Receiver`]: it decodes each export and counts its spans, so a
//! comparison where nothing was exported is refused). Each run measures the warm and
//! throughput scenarios of the main suite (`client::sequential`, `client::throughput`) on
//! the three in turn, the order rotating from run to run, and the throughput in five
//! interleaved slices per variant, so the machine's noise falls on all three alike. Figures are medians over runs; differences and ratios are medians of
//! each run's paired differences and ratios (measured minutes apart, not hours).

use crate::client::{self, Load};
use crate::lang::Lang;
use crate::stats::{median, percentile_ms};
use crate::targets::{Floor, Nimbus};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// The bars: warm p50 of metrics on within this of off (µs) …
pub const WARM_BAR_US: f64 = 10.0;
/// … their throughputs within this fraction of each other …
pub const TPUT_BAR: f64 = 0.03;
/// … and metrics on with OTLP export within this fraction of off.
pub const OTLP_BAR: f64 = 0.05;

/// The three servers compared, in the order of [`Servers::all`].
pub const VARIANTS: [&str; 3] = ["metrics off", "metrics on", "on + OTLP export"];

/// Unmeasured sequential requests before each warm measurement.
const WARMUP_REQUESTS: usize = 200;

/// Turns each variant's throughput measurement is cut into (see [`one_run`]).
const SLICES: u32 = 5;

/// What the OTLP receiver got.
#[derive(Debug, Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
    pub spans: AtomicU64,
    /// Bodies that were not an `ExportTraceServiceRequest`.
    pub undecodable: AtomicU64,
}

/// A local OTLP/HTTP receiver: `POST /v1/traces` answered 200 after decoding the protobuf
/// body and counting its spans. It runs on its own thread and runtime, as a collector on
/// the same machine would, not on the load generator's.
pub struct Receiver {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
}

impl Receiver {
    pub fn start() -> Result<Receiver> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || rt.block_on(accept(listener, c)))?;
        Ok(Receiver { addr, counts })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn to_json(&self) -> Value {
        let c = &self.counts;
        json!({
            "requests": c.requests.load(Relaxed), "bytes": c.bytes.load(Relaxed),
            "spans": c.spans.load(Relaxed), "undecodable": c.undecodable.load(Relaxed),
        })
    }
}

async fn accept(listener: std::net::TcpListener, counts: Arc<Counts>) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let counts = counts.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| export(req, counts.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One OTLP export request.
async fn export(
    req: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let answer = |status: StatusCode| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-protobuf"),
        );
        r
    };
    if req.method() != Method::POST || req.uri().path() != "/v1/traces" {
        return Ok(answer(StatusCode::NOT_FOUND));
    }
    let body = req.into_body().collect().await?.to_bytes();
    counts.requests.fetch_add(1, Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Relaxed);
    match ExportTraceServiceRequest::decode(body.as_ref()) {
        Ok(r) => {
            let spans: usize = r
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            counts.spans.fetch_add(spans as u64, Relaxed);
        }
        Err(_) => {
            counts.undecodable.fetch_add(1, Relaxed);
        }
    }
    Ok(answer(StatusCode::OK))
}

/// The three servers under test (their data dirs under `dir`), all with `--stem-cells
/// off`: the warm path does not use them, and three idle pools would only add noise.
pub struct Servers {
    pub off: Nimbus,
    pub on: Nimbus,
    pub otlp: Nimbus,
}

impl Servers {
    pub async fn start(bin: &Path, dir: &Path, receiver: &Receiver) -> Result<Servers> {
        let endpoint = receiver.endpoint();
        let extra: [&[&str]; 3] = [
            &["--metrics", "off"],
            &[],
            &["--otlp-endpoint", endpoint.as_str()],
        ];
        let mut started = Vec::new();
        for (name, extra) in ["off", "on", "otlp"].into_iter().zip(extra) {
            let flags = [&["--stem-cells", "off"][..], extra].concat();
            let n = Nimbus::start(bin, &dir.join(name), &flags)
                .await
                .with_context(|| format!("starting the {name} server"))?;
            started.push(n);
        }
        let [off, on, otlp]: [Nimbus; 3] = started
            .try_into()
            .map_err(|_| anyhow::anyhow!("three servers expected"))?;
        Ok(Servers { off, on, otlp })
    }

    pub fn all(&self) -> [&Nimbus; 3] {
        [&self.off, &self.on, &self.otlp]
    }

    pub fn logs(&self) -> String {
        let mut s = String::new();
        for (name, n) in VARIANTS.iter().zip(self.all()) {
            s += &format!("--- the {name} server ---\n{}\n", n.log());
        }
        s
    }

    pub async fn stop(self) -> Result<()> {
        self.off.stop().await?;
        self.on.stop().await?;
        self.otlp.stop().await
    }
}

/// The settings of the scenario.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub runs: u32,
    pub warm_requests: usize,
    pub load: Load,
    /// The function's concurrency limit.
    pub concurrency: u32,
}

/// One run of one language: per variant (in [`VARIANTS`] order) the warm p50 (µs), the
/// throughput (requests/s) and the server's own CPU per request (µs); the floor's warm p50.
#[derive(Debug, Clone, Default)]
pub struct Run {
    pub warm_us: [f64; 3],
    pub floor_us: f64,
    pub rps: [f64; 3],
    pub server_cpu_us: [f64; 3],
    /// This bench's own CPU per request (µs): the load generator, and with OTLP export the
    /// receiver decoding the spans, on the same cores as the server.
    pub bench_cpu_us: [f64; 3],
    /// Cores used by other processes during each throughput measurement (noise).
    pub other_cores: [f64; 3],
}

/// One language's runs.
pub struct ObsFigs {
    pub lang: Lang,
    pub runs: Vec<Run>,
}

impl ObsFigs {
    fn med(&self, f: impl Fn(&Run) -> f64) -> f64 {
        median(&self.runs.iter().map(f).collect::<Vec<_>>())
    }

    /// Median over runs of variant `v`'s warm p50 minus the metrics-off one (µs).
    pub fn warm_diff_us(&self, v: usize) -> f64 {
        self.med(|r| r.warm_us[v] - r.warm_us[0])
    }

    /// Median over runs of variant `v`'s throughput over the metrics-off one.
    pub fn rps_ratio(&self, v: usize) -> f64 {
        self.med(|r| r.rps[v] / r.rps[0])
    }

    /// The three bars: warm on − off, throughput on vs off, throughput OTLP vs off.
    pub fn bars(&self) -> [bool; 3] {
        [
            self.warm_diff_us(1) <= WARM_BAR_US,
            (self.rps_ratio(1) - 1.0).abs() <= TPUT_BAR,
            self.rps_ratio(2) >= 1.0 - OTLP_BAR,
        ]
    }

    pub fn to_json(&self) -> Value {
        let variants: Vec<Value> = VARIANTS
            .iter()
            .enumerate()
            .map(|(v, name)| {
                json!({
                    "variant": name,
                    "warm_p50_us": self.med(|r| r.warm_us[v]),
                    "warm_added_us": self.med(|r| r.warm_us[v] - r.floor_us),
                    "warm_minus_off_us": self.warm_diff_us(v),
                    "rps": self.med(|r| r.rps[v]),
                    "rps_ratio_to_off": self.rps_ratio(v),
                    "server_cpu_us_per_request": self.med(|r| r.server_cpu_us[v]),
                    "bench_cpu_us_per_request": self.med(|r| r.bench_cpu_us[v]),
                })
            })
            .collect();
        let runs: Vec<Value> = self
            .runs
            .iter()
            .map(|r| {
                json!({
                    "warm_p50_us": r.warm_us, "floor_warm_p50_us": r.floor_us, "rps": r.rps,
                    "server_cpu_us_per_request": r.server_cpu_us,
                    "bench_cpu_us_per_request": r.bench_cpu_us, "other_cores": r.other_cores,
                })
            })
            .collect();
        let [warm, tput, otlp] = self.bars();
        json!({
            "lang": self.lang.name(),
            "floor_warm_p50_us": self.med(|r| r.floor_us),
            "variants": variants,
            "bars": { "warm_on_minus_off_le_10us": warm, "throughput_on_vs_off_within_3pct": tput,
                      "throughput_otlp_vs_off_within_5pct": otlp },
            "runs": runs,
        })
    }

    /// The table of one language, its bars marked MET / NOT MET.
    pub fn text(&self, warm_requests: usize) -> String {
        let mut s = format!(
            "{}: warm p50 of {warm_requests} sequential requests (floor {:.0} µs); throughput; median of {} runs\n",
            self.lang.name(),
            self.med(|r| r.floor_us),
            self.runs.len()
        );
        s += &format!(
            "  {:<18} {:>10} {:>10} {:>12} {:>10} {:>10} {:>12} {:>12}\n",
            "server",
            "warm p50",
            "added",
            "vs off",
            "rps",
            "vs off",
            "server CPU/req",
            "bench CPU/req"
        );
        for (v, name) in VARIANTS.iter().enumerate() {
            s += &format!(
                "  {:<18} {:>7.0} µs {:>7.0} µs {:>+9.1} µs {:>10.0} {:>10.3} {:>9.0} µs {:>10.0} µs\n",
                name,
                self.med(|r| r.warm_us[v]),
                self.med(|r| r.warm_us[v] - r.floor_us),
                self.warm_diff_us(v),
                self.med(|r| r.rps[v]),
                self.rps_ratio(v),
                self.med(|r| r.server_cpu_us[v]),
                self.med(|r| r.bench_cpu_us[v]),
            );
        }
        let mark = |ok: bool| if ok { "MET" } else { "NOT MET" };
        let [warm, tput, otlp] = self.bars();
        s += &format!(
            "  warm on − off {:+.1} µs (≤ {WARM_BAR_US} µs): {}; throughput on/off {:.3} (±{:.0} %): {}; on+OTLP/off {:.3} (≥ −{:.0} %): {}\n",
            self.warm_diff_us(1),
            mark(warm),
            self.rps_ratio(1),
            TPUT_BAR * 100.0,
            mark(tput),
            self.rps_ratio(2),
            OTLP_BAR * 100.0,
            mark(otlp),
        );
        s
    }
}

/// A language's floor server and the URL of its function (deployed on every server).
struct Setup {
    lang: Lang,
    floor: Floor,
    url: String,
}

async fn setup(servers: &Servers, lang: Lang, s: &Settings, tmp: &Path) -> Result<Setup> {
    let dir = tmp.join(format!("obs-{}", lang.name()));
    std::fs::create_dir_all(&dir)?;
    lang.write_files(&dir)?;
    let interpreter = lang.interpreter()?;
    let floor = Floor::start(lang, &interpreter, &dir).await?;
    let name = format!("obs-{}", lang.name());
    let zip = lang.code_zip()?;
    // `Active`: every invocation is sampled (exported by the server that has an endpoint).
    let mut config = crate::targets::hello_config(lang, s.concurrency);
    config["tracing_mode"] = json!("Active");
    for n in servers.all() {
        n.deploy_config(&name, config.clone(), &zip).await?;
    }
    Ok(Setup {
        lang,
        floor,
        url: format!("/fn/{name}/"),
    })
}

fn p50_us(samples: &[std::time::Duration]) -> f64 {
    percentile_ms(samples, 50.0) * 1000.0
}

/// One run of one language: warm on the three servers (and the floor), then throughput on
/// the three, starting with variant `first`.
async fn one_run(servers: &Servers, x: &Setup, s: &Settings, first: usize) -> Result<Run> {
    let all = servers.all();
    let order: Vec<usize> = (0..3).map(|i| (first + i) % 3).collect();
    let mut r = Run::default();
    let n = s.warm_requests;
    for &v in &order {
        r.warm_us[v] = p50_us(&client::sequential(all[v].addr, &x.url, WARMUP_REQUESTS, n).await?);
    }
    r.floor_us = p50_us(&client::sequential(x.floor.addr, "/", WARMUP_REQUESTS, n).await?);
    // Throughput in interleaved slices: the machine's noise comes and goes within seconds,
    // so each variant is measured in SLICES short turns taken in rotation, not in one
    // stretch, and all three see the same stretches of noise.
    let slice = client::Load {
        duration: s.load.duration / SLICES,
        warmup: s.load.warmup / SLICES,
        ..s.load
    };
    let mut requests = [0u64; 3];
    let mut server_cpu = [std::time::Duration::ZERO; 3];
    let mut bench_cpu = [std::time::Duration::ZERO; 3];
    let mut other = [std::time::Duration::ZERO; 3];
    for k in 0..SLICES as usize {
        for i in 0..3 {
            let v = order[(i + k) % 3];
            let t = client::throughput(all[v].addr, &x.url, slice, all[v].pid()).await?;
            requests[v] += t.requests;
            server_cpu[v] += t.cpu.target;
            bench_cpu[v] += t.cpu.client;
            other[v] += t.cpu.other;
        }
    }
    for v in 0..3 {
        r.rps[v] = requests[v] as f64 / s.load.duration.as_secs_f64();
        r.server_cpu_us[v] = server_cpu[v].as_secs_f64() * 1e6 / requests[v].max(1) as f64;
        r.bench_cpu_us[v] = bench_cpu[v].as_secs_f64() * 1e6 / requests[v].max(1) as f64;
        r.other_cores[v] = other[v].as_secs_f64() / s.load.duration.as_secs_f64();
    }
    Ok(r)
}

/// Runs the scenario for each language.
pub async fn bench(
    servers: &Servers,
    langs: &[Lang],
    s: Settings,
    tmp: &Path,
) -> Result<Vec<ObsFigs>> {
    let mut setups = Vec::new();
    for &lang in langs {
        setups.push(setup(servers, lang, &s, tmp).await?);
    }
    let mut out: Vec<ObsFigs> = langs
        .iter()
        .map(|&lang| ObsFigs {
            lang,
            runs: Vec::new(),
        })
        .collect();
    for run in 0..s.runs {
        for (x, figs) in setups.iter().zip(out.iter_mut()) {
            let t0 = Instant::now();
            let r = one_run(servers, x, &s, run as usize % 3)
                .await
                .with_context(|| format!("run {} of {}", run + 1, x.lang.name()))?;
            eprintln!(
                "run {}/{} {:<6} warm p50 off/on/otlp {:.0}/{:.0}/{:.0} µs (floor {:.0}); rps {:.0}/{:.0}/{:.0} [{:.0} s]",
                run + 1,
                s.runs,
                x.lang.name(),
                r.warm_us[0],
                r.warm_us[1],
                r.warm_us[2],
                r.floor_us,
                r.rps[0],
                r.rps[1],
                r.rps[2],
                t0.elapsed().as_secs_f64()
            );
            figs.runs.push(r);
        }
    }
    Ok(out)
}

/// `nimbus_trace_spans_dropped_total` of a server's `/metrics` (0 when absent).
pub async fn spans_dropped(server: &Nimbus) -> Result<f64> {
    let text = server.get_text("/metrics").await?;
    Ok(text
        .lines()
        .find(|l| l.starts_with("nimbus_trace_spans_dropped_total "))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0))
}

/// The receiver's counts and the spans the exporting server dropped, as JSON; an error
/// when no span arrived (the OTLP column would then measure nothing).
pub fn export_report(receiver: &Receiver, dropped: f64) -> Result<Value> {
    let mut v = receiver.to_json();
    v["server_spans_dropped"] = json!(dropped);
    if v["spans"].as_u64().unwrap_or(0) == 0 {
        bail!("the OTLP receiver got no spans ({v}): the on + OTLP column measured no export");
    }
    Ok(v)
}

/// One line about what was exported.
pub fn export_line(v: &Value) -> String {
    format!(
        "OTLP receiver: {} spans in {} export requests ({:.1} MB; {} undecodable); the server dropped {} spans\n",
        v["spans"],
        v["requests"],
        v["bytes"].as_f64().unwrap_or(0.0) / 1e6,
        v["undecodable"],
        v["server_spans_dropped"]
    )
}
