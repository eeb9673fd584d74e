//! `nimbus-bench --cluster` (issue 18): the same hello function served by one node on
//! SQLite (the baseline), and by 1, 2 and 3 `nimbus serve` nodes on one PostgreSQL schema
//! and NATS (each cluster on a fresh schema of the local PostgreSQL, dropped after it).
//! Every run starts each configuration in turn, measures it and stops it, so the
//! configurations share the machine's conditions of that minute.
//!
//! Measured per configuration: synchronous throughput and latency (closed-loop clients on
//! the function URL, each sending its requests round-robin over the nodes), the latency of
//! one client alone, and asynchronous delivery (`InvocationType: Event` submissions
//! round-robin over the nodes, timed until the database counts every event succeeded).
//! During the throughput and the asynchronous measurement, the CPU time (utime + stime from
//! `/proc`) of each component is divided by the invocations: every node's `nimbus`
//! process, its function instances (its descendants), the PostgreSQL backends of the
//! cluster's connections (found by the `application_name` the nodes connect with), all
//! `postgres` processes (the walwriter and checkpointer too, but also other users of the
//! server), `nats-server`, and this client. The nodes share this machine's cores, so the
//! aggregate throughput cannot grow with the nodes here; the CPU per invocation is what
//! projects to nodes on machines of their own. See `docs/performance.md`.

use crate::async_bench::Submitter;
use crate::client::Conn;
use crate::cpu;
use crate::lang::Lang;
use crate::stats::{Figs, Latency};
use crate::targets::Nimbus;
use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// The local PostgreSQL database the clusters make their schemas in.
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const NATS_URL: &str = "nats://127.0.0.1:4222";
const FUNCTION: &str = "cluster-hello";
/// How often the database's event counts are read once every event is submitted.
const COUNT_POLL: Duration = Duration::from_millis(50);

/// One configuration under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// One node on SQLite (no `--database`, no `--nats`).
    Sqlite,
    /// This many nodes on one PostgreSQL schema and NATS.
    Pg(usize),
}

impl Config {
    pub fn nodes(self) -> usize {
        match self {
            Config::Sqlite => 1,
            Config::Pg(n) => n,
        }
    }

    /// Short name, for JSON keys and progress lines.
    pub fn key(self) -> String {
        match self {
            Config::Sqlite => "sqlite".into(),
            Config::Pg(n) => format!("pg{n}"),
        }
    }

    /// Column title.
    pub fn title(self) -> String {
        match self {
            Config::Sqlite => "1 node SQLite".into(),
            Config::Pg(1) => "1 node PG".into(),
            Config::Pg(n) => format!("{n} nodes PG"),
        }
    }
}

/// What the cluster measurement is asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub configs: Vec<Config>,
    pub runs: u32,
    /// Closed-loop clients of the throughput measurement.
    pub clients: usize,
    pub warmup: Duration,
    pub duration: Duration,
    /// Length of the one-client latency measurement.
    pub latency_duration: Duration,
    /// Events submitted per asynchronous measurement.
    pub events: usize,
    pub submitters: usize,
    /// The function's concurrency limit (instances per node).
    pub concurrency: u32,
}

impl Settings {
    pub fn to_json(&self) -> Value {
        json!({
            "configs": self.configs.iter().map(|c| c.key()).collect::<Vec<_>>(),
            "runs": self.runs, "clients": self.clients, "warmup_s": self.warmup.as_secs_f64(),
            "duration_s": self.duration.as_secs_f64(),
            "latency_duration_s": self.latency_duration.as_secs_f64(),
            "events": self.events, "submitters": self.submitters,
            "concurrency_per_node": self.concurrency,
        })
    }
}

/// The figures of each configuration, one [`Figs`] per run.
pub struct ConfigResult {
    pub config: Config,
    pub runs: Vec<Figs>,
}

/// Runs every configuration `s.runs` times (configurations interleaved within each run).
pub async fn bench(bin: &Path, tmp: &Path, s: &Settings) -> Result<Vec<ConfigResult>> {
    let zip = Lang::Node.code_zip()?;
    let mut results: Vec<ConfigResult> = s
        .configs
        .iter()
        .map(|&config| ConfigResult {
            config,
            runs: Vec::new(),
        })
        .collect();
    for run in 1..=s.runs {
        for r in results.iter_mut() {
            let t0 = Instant::now();
            let dir = tmp.join(format!("{}-run{run}", r.config.key()));
            let mut attempt = 1;
            let figs = loop {
                match one(bin, &dir, r.config, &zip, s).await {
                    Ok(f) => break f,
                    // The local PostgreSQL is shared (max_connections): a run that fails
                    // is started again on a fresh cluster, once, and the retry reported.
                    Err(e) if attempt < ATTEMPTS => {
                        eprintln!(
                            "run {run}/{} {}: attempt {attempt} failed, starting again: {:#}",
                            s.runs,
                            r.config.title(),
                            e.root_cause()
                        );
                        attempt += 1;
                        let _ = std::fs::remove_dir_all(&dir);
                    }
                    Err(e) => return Err(e.context(format!("run {run} of {}", r.config.title()))),
                }
            };
            eprintln!(
                "run {run}/{} {:<14} {} [{:.0} s]",
                s.runs,
                r.config.title(),
                progress_line(&figs),
                t0.elapsed().as_secs_f64()
            );
            r.runs.push(figs);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    Ok(results)
}

/// Attempts per run and configuration.
const ATTEMPTS: u32 = 2;

/// Starts `config`'s nodes, measures them, stops them.
async fn one(bin: &Path, dir: &Path, config: Config, zip: &[u8], s: &Settings) -> Result<Figs> {
    let cluster = Cluster::start(bin, dir, config).await?;
    let outcome = measure(&cluster, zip, s).await;
    let logs = if outcome.is_err() {
        cluster.logs()
    } else {
        String::new()
    };
    cluster.stop().await?;
    outcome.with_context(|| format!("node logs (tail):\n{}", crate::tail(&logs, 40)))
}

/// The nodes of one configuration, and the schema they share.
struct Cluster {
    nodes: Vec<Nimbus>,
    schema: Option<Schema>,
}

/// A schema of the local PostgreSQL made for one cluster.
struct Schema {
    admin: tokio_postgres::Client,
    name: String,
}

impl Schema {
    async fn create() -> Result<Schema> {
        let admin = pg_connect(PG_URL).await?;
        let mut b = [0u8; 8];
        random(&mut b)?;
        let name = format!(
            "bench_cluster_{:016x}",
            u64::from_le_bytes(b) & 0x0fff_ffff_ffff_ffff
        );
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .context("create the cluster's schema")?;
        Ok(Schema { admin, name })
    }

    /// The nodes' `--database`: the schema first on the search path, and the schema's name
    /// as `application_name`, so its backends can be found in `pg_stat_activity`.
    fn url(&self) -> String {
        format!(
            "{PG_URL}?options=-csearch_path%3D{0}&application_name={0}",
            self.name
        )
    }

    /// The process ids of the backends serving the nodes' connections.
    async fn backends(&self) -> Result<Vec<u32>> {
        let rows = self
            .admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
                &[&self.name],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, i32>(0) as u32).collect())
    }

    async fn drop_it(self) -> Result<()> {
        self.admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .await
            .context("drop the cluster's schema")
    }
}

async fn pg_connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("cannot connect to PostgreSQL at {url}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn random(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)?;
    Ok(())
}

impl Cluster {
    /// Starts the nodes of `config` (node `i` with id `nI`, one shared master key) and
    /// waits until each is healthy.
    async fn start(bin: &Path, dir: &Path, config: Config) -> Result<Cluster> {
        let Config::Pg(n) = config else {
            let node = Nimbus::start(bin, &dir.join("n1"), &[]).await?;
            return Ok(Cluster {
                nodes: vec![node],
                schema: None,
            });
        };
        let schema = Schema::create().await?;
        let mut key = [0u8; 32];
        random(&mut key)?;
        let key = base64::engine::general_purpose::STANDARD.encode(key);
        let url = schema.url();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            schema: Some(schema),
        };
        for i in 1..=n {
            let id = format!("n{i}");
            let flags = ["--database", &url, "--nats", NATS_URL, "--node-id", &id];
            let started = Nimbus::start_with_env(
                bin,
                &dir.join(&id),
                &flags,
                &[("NIMBUS_MASTER_KEY", key.as_str())],
            )
            .await;
            match started {
                Ok(node) => cluster.nodes.push(node),
                Err(e) => {
                    cluster.stop().await?;
                    return Err(e.context(format!("start node {id}")));
                }
            }
        }
        Ok(cluster)
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("===== n{} =====\n{}", i + 1, n.log()))
            .collect()
    }

    /// Stops every node (SIGTERM, all at once), then drops the schema.
    async fn stop(self) -> Result<()> {
        let mut stops = tokio::task::JoinSet::new();
        for n in self.nodes {
            stops.spawn(n.stop());
        }
        let mut first_err = None;
        while let Some(r) = stops.join_next().await {
            if let Err(e) = r.context("stop task panicked").and_then(|r| r) {
                first_err.get_or_insert(e);
            }
        }
        if let Some(schema) = self.schema {
            schema.drop_it().await?;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// A CPU snapshot of every component.
    async fn snapshot(&self) -> Result<CpuSnap> {
        let backends = match &self.schema {
            Some(s) => s.backends().await?,
            None => Vec::new(),
        };
        Ok(CpuSnap {
            nodes: self
                .nodes
                .iter()
                .map(|n| {
                    let pid = n.pid();
                    let inst = cpu::descendants(pid)
                        .into_iter()
                        .map(cpu::process_ticks)
                        .sum();
                    (cpu::process_ticks(pid), inst)
                })
                .collect(),
            backends: backends
                .into_iter()
                .map(|p| (p, cpu::process_ticks(p)))
                .collect(),
            postgres: cpu::ticks_of_command("postgres"),
            nats: cpu::ticks_of_command("nats-server"),
            client: cpu::process_ticks(std::process::id()),
            busy: cpu::machine_busy_ticks(),
            at: Instant::now(),
        })
    }
}

/// CPU ticks of each component at one moment.
struct CpuSnap {
    /// Per node: its `nimbus` process, and its descendants (function instances).
    nodes: Vec<(u64, u64)>,
    /// The cluster's PostgreSQL backends by pid.
    backends: HashMap<u32, u64>,
    /// Every `postgres` process.
    postgres: u64,
    nats: u64,
    client: u64,
    busy: u64,
    at: Instant,
}

impl CpuSnap {
    /// Records the CPU used since `self` per invocation (`n` of them) under `prefix`:
    /// `nimbus_us`, `instances_us` (sums over the nodes), `pg_us` (the cluster's backends),
    /// `pg_all_us` (every postgres process), `nats_us`, `client_us`; `other_cores` (every
    /// other process on the machine, in cores), and per node `nodeI_cores` (its `nimbus`
    /// process and instances, in cores).
    fn put_until(&self, later: &CpuSnap, n: u64, prefix: &str, f: &mut Figs) {
        let secs = |t: u64| t as f64 / cpu::USER_HZ;
        let per = |t: u64| secs(t) * 1e6 / n.max(1) as f64;
        let wall = later.at.duration_since(self.at).as_secs_f64().max(1e-3);
        let (mut nimbus, mut inst) = (0, 0);
        for (i, (a, b)) in self.nodes.iter().zip(&later.nodes).enumerate() {
            let (dn, di) = (b.0.saturating_sub(a.0), b.1.saturating_sub(a.1));
            nimbus += dn;
            inst += di;
            f.put(
                &format!("{prefix}.node{}_cores", i + 1),
                secs(dn + di) / wall,
            );
        }
        // A backend born during the window counts from zero; one that ended in it is lost.
        let pg: u64 = later
            .backends
            .iter()
            .map(|(p, t)| t.saturating_sub(self.backends.get(p).copied().unwrap_or(0)))
            .sum();
        let postgres = later.postgres.saturating_sub(self.postgres);
        let nats = later.nats.saturating_sub(self.nats);
        let client = later.client.saturating_sub(self.client);
        let ours = nimbus + inst + postgres + nats + client;
        let other = later.busy.saturating_sub(self.busy).saturating_sub(ours);
        f.put(&format!("{prefix}.nimbus_us"), per(nimbus));
        f.put(&format!("{prefix}.instances_us"), per(inst));
        f.put(&format!("{prefix}.pg_us"), per(pg));
        f.put(&format!("{prefix}.pg_all_us"), per(postgres));
        f.put(&format!("{prefix}.nats_us"), per(nats));
        f.put(&format!("{prefix}.client_us"), per(client));
        f.put(&format!("{prefix}.other_cores"), secs(other) / wall);
        f.put(
            &format!("{prefix}.pg_backends"),
            later.backends.len() as f64,
        );
    }
}

/// One run of one configuration: deploy, sync throughput, one-client latency, async.
async fn measure(c: &Cluster, zip: &[u8], s: &Settings) -> Result<Figs> {
    let mut f = Figs::default();
    let first = &c.nodes[0];
    first
        .deploy(FUNCTION, Lang::Node, zip, s.concurrency)
        .await
        .context("deploy")?;
    // Every node must serve the function URL (its route caches updated) before the load.
    let path = format!("/fn/{FUNCTION}/");
    for (i, n) in c.nodes.iter().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut conn = Conn::open(n.addr).await?;
        loop {
            let (status, body) = conn.request(&path).await?;
            if status.is_success() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "node n{} answers {path} with {status} 10 s after the deploy: {}",
                    i + 1,
                    String::from_utf8_lossy(&body)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let addrs = c.addrs();

    // Synchronous throughput, CPU per invocation.
    let (done, elapsed, lat, cpu0) =
        sync_load(&addrs, &path, s.clients, s.warmup, s.duration, || {
            c.snapshot()
        })
        .await?;
    let cpu1 = c.snapshot().await?;
    f.put("sync.rps", done as f64 / elapsed.as_secs_f64());
    f.put_lat("sync.lat", lat);
    cpu0.put_until(&cpu1, done, "sync.cpu", &mut f);

    // One client alone.
    let (done1, elapsed1, lat1, ()) = sync_load(
        &addrs,
        &path,
        1,
        Duration::from_millis(200),
        s.latency_duration,
        || async { anyhow::Ok(()) },
    )
    .await?;
    f.put("one.rps", done1 as f64 / elapsed1.as_secs_f64());
    f.put_lat("one.lat", lat1);

    // Asynchronous: a warm-up burst, then the measured one.
    let invoke = format!("/2015-03-31/functions/{FUNCTION}/invocations");
    let warm = (s.submitters * 4).max(4 * s.concurrency as usize * c.nodes.len());
    async_burst(c, &invoke, warm, s.submitters)
        .await
        .context("async warm-up")?;
    let b = async_burst(c, &invoke, s.events, s.submitters).await?;
    let n = s.events as f64;
    f.put("async.events_per_s", n / b.delivered.as_secs_f64());
    f.put("async.acks_per_s", n / b.submitted.as_secs_f64());
    f.put_lat("async.ack", Latency::of(&b.acks));
    b.cpu0
        .put_until(&b.cpu1, s.events as u64, "async.cpu", &mut f);
    Ok(f)
}

/// `clients` closed-loop clients, each with one keep-alive connection to every node and
/// sending its requests round-robin over them (client `c`'s `k`-th request to node
/// `(c + k) mod nodes`). After `warmup` (at least one request per node and client),
/// `at_start` runs once every client is warm, then each client sends requests until
/// `duration` has passed. Returns the requests sent after the start (the last of each
/// client included), the time from the start until the last answer, their latency, and
/// what `at_start` returned.
async fn sync_load<F, Fut, T>(
    addrs: &[SocketAddr],
    path: &str,
    clients: usize,
    warmup: Duration,
    duration: Duration,
    at_start: F,
) -> Result<(u64, Duration, Latency, T)>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let warm = Arc::new(Barrier::new(clients + 1));
    let go = Arc::new(Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let (warm, go) = (warm.clone(), go.clone());
        let (addrs, path) = (addrs.to_vec(), path.to_string());
        tasks.spawn(async move {
            let mut conns = Vec::with_capacity(addrs.len());
            for a in &addrs {
                conns.push(Conn::open(*a).await?);
            }
            let n = conns.len();
            let mut k = c;
            let warm_until = Instant::now() + warmup;
            let mut sent = 0;
            while sent < n || Instant::now() < warm_until {
                conns[k % n].get(&path).await?;
                k += 1;
                sent += 1;
            }
            warm.wait().await;
            go.wait().await;
            let end = Instant::now() + duration;
            let mut samples = Vec::new();
            loop {
                let t0 = Instant::now();
                conns[k % n].get(&path).await?;
                k += 1;
                samples.push(t0.elapsed());
                if Instant::now() > end {
                    break;
                }
            }
            anyhow::Ok(samples)
        });
    }
    // A client failing during the warm-up would leave the barriers waiting for ever.
    tokio::select! {
        _ = warm.wait() => {}
        Some(r) = tasks.join_next() => {
            r.context("client task panicked")??;
            bail!("a client ended during the warm-up");
        }
    }
    let started = at_start().await?;
    go.wait().await;
    let t0 = Instant::now();
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.context("client task panicked")??);
    }
    let elapsed = t0.elapsed();
    if all.is_empty() {
        bail!("no request completed during the measurement");
    }
    Ok((all.len() as u64, elapsed, Latency::of(&all), started))
}

/// One asynchronous burst, followed until every event succeeded.
struct Burst {
    acks: Vec<Duration>,
    /// First submission to the last 202.
    submitted: Duration,
    /// First submission to the database counting every event succeeded.
    delivered: Duration,
    cpu0: CpuSnap,
    cpu1: CpuSnap,
}

/// The function's event counts per status, as the database has them.
async fn counts(node: &Nimbus) -> Result<HashMap<String, u64>> {
    let v = node
        .get_json(&format!("/v1/functions/{FUNCTION}/events?limit=1"))
        .await?;
    let c = v["counts"].as_object().context("counts missing")?;
    Ok(c.iter()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect())
}

/// Submits `n` events from `k` submitters (submitter `j` on node `j mod nodes`), then reads
/// the counts every [`COUNT_POLL`] until `n` more have succeeded and none is pending or
/// running. Fails if any event ends dead or expired.
async fn async_burst(c: &Cluster, path: &str, n: usize, k: usize) -> Result<Burst> {
    let node = &c.nodes[0];
    let before = counts(node).await?;
    let get = |m: &HashMap<String, u64>, s: &str| m.get(s).copied().unwrap_or(0);
    let addrs = c.addrs();
    let k = k.min(n).max(1);
    let mut subs = Vec::with_capacity(k);
    for j in 0..k {
        subs.push(Submitter::open(addrs[j % addrs.len()]).await?);
    }
    let cpu0 = c.snapshot().await?;
    let t0 = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for mut sub in subs {
        let (next, path) = (next.clone(), path.to_string());
        tasks.spawn(async move {
            let mut acks = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < n {
                let t = Instant::now();
                sub.submit(&path).await?;
                acks.push(t.elapsed());
            }
            anyhow::Ok(acks)
        });
    }
    let mut acks = Vec::with_capacity(n);
    while let Some(r) = tasks.join_next().await {
        acks.extend(r.context("submitter panicked")??);
    }
    let submitted = t0.elapsed();
    let deadline = Instant::now() + Duration::from_secs(60) + Duration::from_millis(n as u64 * 20);
    let delivered = loop {
        let now = counts(node).await?;
        let failed = ["dead", "expired"]
            .iter()
            .map(|s| get(&now, s).saturating_sub(get(&before, s)))
            .sum::<u64>();
        if failed > 0 {
            bail!("{failed} events ended dead or expired: {now:?}");
        }
        let ok = get(&now, "succeeded").saturating_sub(get(&before, "succeeded"));
        let busy = get(&now, "pending") + get(&now, "running");
        if ok >= n as u64 && busy == 0 {
            break t0.elapsed();
        }
        if Instant::now() > deadline {
            bail!("{ok} of {n} events succeeded in time: {now:?}");
        }
        tokio::time::sleep(COUNT_POLL).await;
    };
    let cpu1 = c.snapshot().await?;
    Ok(Burst {
        acks,
        submitted,
        delivered,
        cpu0,
        cpu1,
    })
}

fn progress_line(f: &Figs) -> String {
    let g = |k: &str| f.get(k).unwrap_or(f64::NAN);
    format!(
        "sync {:.0} req/s p50 {:.1} ms (1 client {:.2} ms); async {:.0} ev/s; CPU/inv nimbus {:.0} + inst {:.0} + pg {:.0} us; other {:.1} cores",
        g("sync.rps"),
        g("sync.lat.p50"),
        g("one.lat.p50"),
        g("async.events_per_s"),
        g("sync.cpu.nimbus_us"),
        g("sync.cpu.instances_us"),
        g("sync.cpu.pg_us"),
        g("sync.cpu.other_cores"),
    )
}

/// The figures' medians per configuration, as JSON (with every run).
pub fn to_json(results: &[ConfigResult]) -> Value {
    Value::Array(
        results
            .iter()
            .map(|r| {
                json!({
                    "config": r.config.key(), "nodes": r.config.nodes(),
                    "median": Figs::median_of(&r.runs).to_json(),
                    "runs": r.runs.iter().map(Figs::to_json).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

/// The table of medians: one column per configuration, with the ratio to the first
/// (the SQLite baseline) where it is measured in the same run.
pub fn table(results: &[ConfigResult], s: &Settings) -> String {
    let medians: Vec<Figs> = results.iter().map(|r| Figs::median_of(&r.runs)).collect();
    let base = results.iter().position(|r| r.config == Config::Sqlite);
    const W: usize = 18;
    let mut out = format!("{:<34}", "");
    for r in results {
        out += &format!("{:>W$}", r.config.title());
    }
    out += "\n";
    let cell = |i: usize, key: &str, digits: usize, ratio: bool| -> String {
        let Some(v) = medians[i].get(key) else {
            return "-".into();
        };
        let mut c = format!("{v:.digits$}");
        if let (true, Some((b, bi))) =
            (ratio, base.and_then(|bi| Some((medians[bi].get(key)?, bi))))
        {
            if b > 0.0 && i != bi {
                c += &format!(" ({:.2}x)", v / b);
            }
        }
        c
    };
    let row = |out: &mut String, label: &str, key: &str, digits: usize, ratio: bool| {
        *out += &format!("{label:<34}");
        for i in 0..medians.len() {
            *out += &format!("{:>W$}", cell(i, key, digits, ratio));
        }
        *out += "\n";
    };
    let clients = format!("sync, {} clients (req/s)", s.clients);
    row(&mut out, &clients, "sync.rps", 0, true);
    row(&mut out, "  p50 (ms)", "sync.lat.p50", 2, true);
    row(&mut out, "  p99 (ms)", "sync.lat.p99", 2, true);
    row(&mut out, "sync, 1 client: p50 (ms)", "one.lat.p50", 2, true);
    row(&mut out, "  p99 (ms)", "one.lat.p99", 2, true);
    let events = format!("async, {} events (events/s)", s.events);
    row(&mut out, &events, "async.events_per_s", 0, true);
    row(&mut out, "  submit (202s/s)", "async.acks_per_s", 0, true);
    row(&mut out, "  submit p50 (ms)", "async.ack.p50", 2, true);
    row(&mut out, "  submit p99 (ms)", "async.ack.p99", 2, true);
    for (title, p) in [
        ("CPU per sync invocation (us)", "sync.cpu"),
        ("CPU per async event (us)", "async.cpu"),
    ] {
        out += &format!("{title}\n");
        for (label, k) in [
            ("  nimbus (all nodes)", "nimbus_us"),
            ("  function instances", "instances_us"),
            ("  PostgreSQL, the nodes' backends", "pg_us"),
            ("  PostgreSQL, all processes", "pg_all_us"),
            ("  NATS", "nats_us"),
            ("  benchmark client", "client_us"),
        ] {
            row(&mut out, label, &format!("{p}.{k}"), 0, false);
        }
        row(
            &mut out,
            "  other processes (cores)",
            &format!("{p}.other_cores"),
            2,
            false,
        );
    }
    out
}

/// Fails unless PostgreSQL and NATS answer on their local ports.
pub fn check_services() -> Result<()> {
    for (what, addr) in [("PostgreSQL", "127.0.0.1:5432"), ("NATS", "127.0.0.1:4222")] {
        std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(2))
            .with_context(|| format!("--cluster needs {what} at {addr}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names() {
        assert_eq!(Config::Sqlite.key(), "sqlite");
        assert_eq!(Config::Pg(3).key(), "pg3");
        assert_eq!(Config::Pg(1).title(), "1 node PG");
        assert_eq!(Config::Pg(2).nodes(), 2);
    }

    #[test]
    fn table_has_ratios_to_the_baseline() {
        let fig = |rps: f64| {
            let mut f = Figs::default();
            f.put("sync.rps", rps);
            f
        };
        let results = vec![
            ConfigResult {
                config: Config::Sqlite,
                runs: vec![fig(100.0), fig(300.0), fig(200.0)],
            },
            ConfigResult {
                config: Config::Pg(1),
                runs: vec![fig(50.0)],
            },
        ];
        let s = Settings {
            configs: vec![Config::Sqlite, Config::Pg(1)],
            runs: 3,
            clients: 32,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(1),
            latency_duration: Duration::from_secs(1),
            events: 10,
            submitters: 2,
            concurrency: 2,
        };
        let t = table(&results, &s);
        let line = t.lines().find(|l| l.starts_with("sync, 32")).unwrap();
        assert!(line.contains("200"), "{line}");
        assert!(line.contains("50 (0.25x)"), "{line}");
        assert!(!line.contains("200 (1.00x)"), "{line}");
    }
}
