//! `nimbus-bench --sources`: external event sources (issue 16) end to end. For each broker
//! (PostgreSQL CDC, NATS JetStream, RabbitMQ, Redis Streams, MQTT) and each batch size
//! (1, 10, 100), a mapping (`CreateEventSourceMapping`, `MaximumBatchingWindowInSeconds`
//! 0) feeds a no-op Node function whose handler's first statement takes the wall-clock
//! time; the bench publishes records and measures records/s end to end (first publish →
//! the handler entry that saw the last record) and publish → handler entry per record at
//! a paced rate. Beside it, in the same run, the **floor**: the same records published the
//! same way and consumed directly with the client crate the connector uses. See
//! `docs/performance.md`.

use crate::sources_brokers::{Env, FloorConsumer, Kind, Place, Publisher, SharedSeen};
use crate::stats::{median, Latency};
use crate::targets::Nimbus;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const FUNCTION: &str = "sources-noop";
/// The no-op function. The handler's first statement reads the wall clock; then it lists
/// the records' payloads (`TAG:INDEX`) on one log line: `BENCH <ms> <exact> <payload>…`.
/// `Date.now()` ticks in whole milliseconds and `performance.timeOrigin` is not the wall
/// clock in an instance forked from a stem cell, so `performance.now()` is pinned to the
/// wall clock once per instance, at the moment `Date.now()` ticks; each call checks it
/// against `Date.now()` and falls back to it (`exact` 0) if they disagree.
const HANDLER_JS: &str = r#"const { performance } = require('perf_hooks');
function calibrate() {
  const d0 = Date.now();
  let d = d0;
  while (d === d0) d = Date.now();
  return d - performance.now();
}
let offset = calibrate();
function payloads(ev) {
  if (ev.rmqMessagesByQueue) {
    return Object.values(ev.rmqMessagesByQueue).flat().map((m) => Buffer.from(m.data, 'base64').toString());
  }
  return (ev.Records || []).map((r) => {
    switch (r.eventSource) {
      case 'nimbus:postgres': return r.dynamodb.NewImage.m.S;
      case 'nimbus:redis': return r.fields.m;
      case 'nimbus:mqtt':
        return r.payloadEncoding === 'json' ? JSON.stringify(r.payload) : Buffer.from(r.payload, 'base64').toString();
      default: return Buffer.from(r.data, 'base64').toString();
    }
  });
}
exports.handler = async (event) => {
  let t = offset + performance.now();
  const d = Date.now();
  let exact = 1;
  if (t < d - 0.05 || t > d + 1.05) {
    t = d + 0.5;
    exact = 0;
  }
  console.log('BENCH ' + t.toFixed(3) + ' ' + exact + ' ' + payloads(event).join(' '));
  if (!exact) offset = calibrate();
  return null;
};
"#;
/// Most log lines asked for per page (the server's own maximum).
const LOG_PAGE: usize = 10_000;

/// What `--sources` is asked to do.
#[derive(Debug, Clone)]
pub struct Settings {
    pub kinds: Vec<Kind>,
    pub batches: Vec<u32>,
    /// Records published at once per throughput measurement.
    pub records: usize,
    /// Records published one at a time for the latency measurement, at `rate` per second.
    pub paced: usize,
    pub rate: f64,
    /// The function's concurrency limit.
    pub concurrency: u32,
}

/// Throughput and latency of one measurement.
#[derive(Debug, Clone, Copy)]
pub struct Figure {
    /// Records / (first publish → last record consumed or seen at handler entry).
    pub per_s: f64,
    /// Publish → consumed (floor) or handler entry (Nimbus), records published one at a
    /// time at the paced rate.
    pub lat: Latency,
    /// The same during the throughput burst (mostly queueing).
    pub burst: Latency,
    /// Records consumed more than once (at least once delivery).
    pub duplicates: usize,
}

impl Figure {
    fn median_of(figs: &[Figure]) -> Figure {
        let m = |f: fn(&Figure) -> f64| median(&figs.iter().map(f).collect::<Vec<_>>());
        Figure {
            per_s: m(|f| f.per_s),
            lat: Latency {
                p50: m(|f| f.lat.p50),
                p99: m(|f| f.lat.p99),
            },
            burst: Latency {
                p50: m(|f| f.burst.p50),
                p99: m(|f| f.burst.p99),
            },
            duplicates: figs.iter().map(|f| f.duplicates).sum(),
        }
    }

    fn to_json(self) -> Value {
        let r = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "records_per_s": r(self.per_s),
            "publish_to_start": {"p50_ms": r(self.lat.p50), "p99_ms": r(self.lat.p99)},
            "burst_publish_to_start": {"p50_ms": r(self.burst.p50), "p99_ms": r(self.burst.p99)},
            "duplicates": self.duplicates,
        })
    }
}

/// One broker's figures in one run (or their medians).
#[derive(Debug, Clone)]
pub struct KindRun {
    pub kind: Kind,
    pub floor: Figure,
    /// Per batch size.
    pub nimbus: Vec<(u32, Figure)>,
}

impl KindRun {
    /// The median of each figure over runs (each run holds the same kinds and batches).
    pub fn median_of(runs: &[Vec<KindRun>]) -> Vec<KindRun> {
        let Some(first) = runs.first() else {
            return Vec::new();
        };
        first
            .iter()
            .enumerate()
            .map(|(k, kr)| {
                let floor: Vec<Figure> = runs.iter().map(|r| r[k].floor).collect();
                let nimbus = kr
                    .nimbus
                    .iter()
                    .enumerate()
                    .map(|(b, (size, _))| {
                        let figs: Vec<Figure> = runs.iter().map(|r| r[k].nimbus[b].1).collect();
                        (*size, Figure::median_of(&figs))
                    })
                    .collect();
                KindRun {
                    kind: kr.kind,
                    floor: Figure::median_of(&floor),
                    nimbus,
                }
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "source": self.kind.name(),
            "floor": self.floor.to_json(),
            "nimbus": self.nimbus.iter().map(|(b, f)| {
                let mut v = f.to_json();
                v["batch_size"] = json!(b);
                v["records_per_s_of_floor"] = json!((f.per_s / self.floor.per_s * 1000.0).round() / 1000.0);
                v["p50_x_floor"] = json!((f.lat.p50 / self.floor.lat.p50 * 10.0).round() / 10.0);
                v
            }).collect::<Vec<_>>(),
        })
    }
}

/// The results table: per source, the floor and each batch size.
pub fn table(results: &[KindRun]) -> String {
    let mut out = format!(
        "{:<10}{:>6}{:>11}{:>10}{:>10}{:>10}{:>9}{:>12}{:>12}\n",
        "source",
        "batch",
        "records/s",
        "of floor",
        "p50 ms",
        "p99 ms",
        "p50 x",
        "burst p50",
        "burst p99"
    );
    let row = |out: &mut String, kind: &str, batch: &str, f: &Figure, floor: Option<&Figure>| {
        let (of, x) = match floor {
            Some(fl) => (
                format!("{:.3}", f.per_s / fl.per_s),
                format!("{:.0}", f.lat.p50 / fl.lat.p50),
            ),
            None => (String::new(), String::new()),
        };
        *out += &format!(
            "{kind:<10}{batch:>6}{:>11.0}{of:>10}{:>10}{:>10}{x:>9}{:>12}{:>12}\n",
            f.per_s,
            crate::stats::ms(f.lat.p50),
            crate::stats::ms(f.lat.p99),
            crate::stats::ms(f.burst.p50),
            crate::stats::ms(f.burst.p99)
        );
    };
    for k in results {
        row(&mut out, k.kind.name(), "floor", &k.floor, None);
        for (b, f) in &k.nimbus {
            row(&mut out, k.kind.name(), &b.to_string(), f, Some(&k.floor));
        }
    }
    let dups: usize = results
        .iter()
        .flat_map(|k| k.nimbus.iter().map(|(_, f)| f.duplicates))
        .sum();
    if dups > 0 {
        out += &format!("records delivered more than once (all runs): {dups}\n");
    }
    out
}

/// Deploys the function and runs `runs` rounds: per broker the floor, then each batch size.
pub async fn bench(
    nimbus: &Nimbus,
    env: &Env,
    s: &Settings,
    runs: u32,
) -> Result<Vec<Vec<KindRun>>> {
    nimbus
        .deploy_node(FUNCTION, HANDLER_JS, 10, s.concurrency)
        .await?;
    let mut logs = Logs {
        nimbus,
        cursor: 0,
        inexact: 0,
    };
    let mut out = Vec::new();
    for run in 1..=runs {
        let mut this = Vec::new();
        for &kind in &s.kinds {
            let t0 = Instant::now();
            let floor = floor_phase(env, kind, s)
                .await
                .with_context(|| format!("run {run}: {} floor", kind.name()))?;
            eprintln!(
                "run {run}/{runs} {:<8} floor {:>8.0} records/s, p50 {} / p99 {} ms [{:.0} s]",
                kind.name(),
                floor.per_s,
                crate::stats::ms(floor.lat.p50),
                crate::stats::ms(floor.lat.p99),
                t0.elapsed().as_secs_f64()
            );
            let mut figs = Vec::new();
            for &batch in &s.batches {
                let t0 = Instant::now();
                let f = nimbus_phase(nimbus, env, kind, batch, s, &mut logs)
                    .await
                    .with_context(|| format!("run {run}: {} batch size {batch}", kind.name()))?;
                eprintln!(
                    "run {run}/{runs} {:<8} batch {batch:>3} {:>8.0} records/s ({:.3} of floor), p50 {} / p99 {} ms, burst p50 {} ms [{:.0} s]",
                    kind.name(),
                    f.per_s,
                    f.per_s / floor.per_s,
                    crate::stats::ms(f.lat.p50),
                    crate::stats::ms(f.lat.p99),
                    crate::stats::ms(f.burst.p50),
                    t0.elapsed().as_secs_f64()
                );
                figs.push((batch, f));
            }
            this.push(KindRun {
                kind,
                floor,
                nimbus: figs,
            });
        }
        out.push(this);
    }
    if logs.inexact > 0 {
        eprintln!(
            "note: {} invocations timed with Date.now() (whole ms) after the calibrated clock disagreed",
            logs.inexact
        );
    }
    Ok(out)
}

/// Records published before the measured ones, so instances and connections are warm.
fn warm_records(batch: u32) -> usize {
    (4 * batch as usize).clamp(20, 400)
}

async fn floor_phase(env: &Env, kind: Kind, s: &Settings) -> Result<Figure> {
    let place = Place::create(kind, env).await?;
    let r = async {
        let seen = SharedSeen::default();
        let consumer = FloorConsumer::start(&place, env, seen.clone()).await?;
        let mut publisher = Publisher::connect(&place, env).await?;
        let r = drive(
            &mut publisher,
            &place.tag,
            &seen,
            Watch::Floor(&consumer),
            s,
            100,
        )
        .await;
        publisher.close().await;
        let stopped = consumer.stop().await;
        let f = r?;
        stopped?;
        Ok(f)
    }
    .await;
    place.remove().await;
    r
}

async fn nimbus_phase(
    nimbus: &Nimbus,
    env: &Env,
    kind: Kind,
    batch: u32,
    s: &Settings,
    logs: &mut Logs<'_>,
) -> Result<Figure> {
    let place = Place::create(kind, env).await?;
    let r = async {
        let mut body = place.mapping(env)?;
        body["FunctionName"] = json!(FUNCTION);
        body["BatchSize"] = json!(batch);
        body["MaximumBatchingWindowInSeconds"] = json!(0);
        body["StartingPosition"] = json!("TRIM_HORIZON");
        let (status, v) = nimbus
            .request_json(
                reqwest::Method::POST,
                "/2015-03-31/event-source-mappings",
                Some(&body),
            )
            .await?;
        if status != 202 {
            bail!("CreateEventSourceMapping answered {status}: {v}");
        }
        let uuid = v["UUID"].as_str().context("no UUID")?.to_string();
        let r = async {
            wait_connected(nimbus, &uuid).await?;
            let mut publisher = Publisher::connect(&place, env).await?;
            let seen = SharedSeen::default();
            let r = drive(
                &mut publisher,
                &place.tag,
                &seen,
                Watch::Nimbus(logs),
                s,
                warm_records(batch),
            )
            .await;
            publisher.close().await;
            r
        }
        .await;
        let deleted = delete_mapping(nimbus, &uuid).await;
        let f = r?;
        deleted?;
        Ok(f)
    }
    .await;
    place.remove().await;
    r
}

async fn wait_connected(nimbus: &Nimbus, uuid: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = nimbus.get_json(&format!("/v1/sources/{uuid}")).await?;
        if v["status"]["state"] == "connected" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the mapping did not connect within 30 s: {v}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deletes the mapping and waits until it is gone (its connector removed what it made on
/// the broker: the PostgreSQL slot and publication, the JetStream consumer).
async fn delete_mapping(nimbus: &Nimbus, uuid: &str) -> Result<()> {
    let path = format!("/2015-03-31/event-source-mappings/{uuid}");
    let (status, v) = nimbus
        .request_json(reqwest::Method::DELETE, &path, None)
        .await?;
    if !(200..300).contains(&status) {
        bail!("DeleteEventSourceMapping answered {status}: {v}");
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = nimbus
            .request_json(reqwest::Method::GET, &format!("/v1/sources/{uuid}"), None)
            .await?;
        if status == 404 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("mapping {uuid} still listed 20 s after its deletion");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Where the consumed records show up.
enum Watch<'a, 'b> {
    /// The floor consumer writes them into the shared map itself.
    Floor(&'a FloorConsumer),
    /// The function's log lines, read by the bench.
    Nimbus(&'a mut Logs<'b>),
}

impl Watch<'_, '_> {
    async fn refresh(&mut self, seen: &SharedSeen) -> Result<()> {
        match self {
            Watch::Floor(c) if c.finished() => bail!("the floor consumer stopped"),
            Watch::Floor(_) => Ok(()),
            Watch::Nimbus(logs) => logs.read(seen).await,
        }
    }

    fn nap(&self) -> Duration {
        match self {
            Watch::Floor(_) => Duration::from_millis(10),
            Watch::Nimbus(_) => Duration::from_millis(100),
        }
    }
}

/// Warm-up, then the paced latency measurement, then the throughput burst.
async fn drive(
    p: &mut Publisher,
    tag: &str,
    seen: &SharedSeen,
    mut watch: Watch<'_, '_>,
    s: &Settings,
    warm: usize,
) -> Result<Figure> {
    let keys = |part: char, n: usize| -> Vec<String> {
        (0..n).map(|i| format!("{tag}{part}:{i}")).collect()
    };
    let warm = keys('w', warm);
    p.burst(&warm).await.context("warm-up publish")?;
    wait_seen(&warm, seen, &mut watch, Duration::from_secs(60))
        .await
        .context("warm-up")?;

    let paced = keys('l', s.paced);
    let mut paced_at = Vec::with_capacity(paced.len());
    let start = tokio::time::Instant::now();
    for (i, key) in paced.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / s.rate)).await;
        paced_at.push(p.one(key).await.context("paced publish")?);
    }
    wait_seen(&paced, seen, &mut watch, Duration::from_secs(60))
        .await
        .context("paced records")?;
    let lat = latencies(&paced, &paced_at, seen);

    let burst = keys('t', s.records);
    // Follow the logs while publishing: the server keeps the newest 10,000 lines per
    // function, and a burst to batch size 1 writes four per record.
    let publishing = std::cell::Cell::new(true);
    let publish = async {
        let r = p.burst(&burst).await;
        publishing.set(false);
        r
    };
    let follow = async {
        while publishing.get() {
            tokio::time::sleep(watch.nap()).await;
            watch.refresh(seen).await?;
        }
        anyhow::Ok(())
    };
    let (burst_at, followed) = tokio::join!(publish, follow);
    let burst_at = burst_at.context("burst publish")?;
    followed?;
    let limit = Duration::from_secs(120) + Duration::from_millis(30 * s.records as u64);
    wait_seen(&burst, seen, &mut watch, limit)
        .await
        .context("burst records")?;
    let first = burst_at.iter().copied().fold(f64::INFINITY, f64::min);
    let last = {
        let s = seen.lock().unwrap();
        burst
            .iter()
            .filter_map(|k| s.at.get(k).copied())
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let duplicates = seen.lock().unwrap().duplicates;
    Ok(Figure {
        per_s: burst.len() as f64 / ((last - first).max(0.001) / 1e3),
        lat,
        burst: latencies(&burst, &burst_at, seen),
        duplicates,
    })
}

/// Publish → consumed of each key.
fn latencies(keys: &[String], published: &[f64], seen: &SharedSeen) -> Latency {
    let s = seen.lock().unwrap();
    let samples: Vec<Duration> = keys
        .iter()
        .zip(published)
        .filter_map(|(k, t)| s.at.get(k).map(|c| (c - t).max(0.0)))
        .map(|ms| Duration::from_secs_f64(ms / 1e3))
        .collect();
    Latency::of(&samples)
}

/// Waits until every key has been consumed.
async fn wait_seen(
    keys: &[String],
    seen: &SharedSeen,
    watch: &mut Watch<'_, '_>,
    limit: Duration,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        watch.refresh(seen).await?;
        let missing = {
            let s = seen.lock().unwrap();
            keys.iter().filter(|k| !s.at.contains_key(*k)).count()
        };
        if missing == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{missing} of {} records not consumed within {limit:?}",
                keys.len()
            );
        }
        tokio::time::sleep(watch.nap()).await;
    }
}

/// Follows the function's log for its `BENCH` lines.
struct Logs<'a> {
    nimbus: &'a Nimbus,
    /// Log lines up to this sequence number have been read.
    cursor: i64,
    /// Invocations timed with `Date.now()` instead of the calibrated clock.
    inexact: usize,
}

impl Logs<'_> {
    async fn read(&mut self, seen: &SharedSeen) -> Result<()> {
        loop {
            let page = self
                .nimbus
                .get_json(&format!(
                    "/v1/functions/{FUNCTION}/logs?after={}&limit={LOG_PAGE}",
                    self.cursor
                ))
                .await?;
            let lines = page["logs"].as_array().context("logs missing")?;
            let mut s = seen.lock().unwrap();
            for l in lines {
                let Some(rest) = l["line"].as_str().and_then(|x| x.split("BENCH ").nth(1)) else {
                    continue;
                };
                let mut words = rest.split_whitespace();
                let t: f64 = words
                    .next()
                    .and_then(|w| w.parse().ok())
                    .with_context(|| format!("bad BENCH line: {rest}"))?;
                if words.next() == Some("0") {
                    self.inexact += 1;
                }
                for w in words {
                    s.note(w.to_string(), t);
                }
            }
            drop(s);
            self.cursor = page["next"].as_i64().unwrap_or(self.cursor);
            if lines.len() < LOG_PAGE {
                return Ok(());
            }
        }
    }
}
