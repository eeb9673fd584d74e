//! `nimbus-bench --async`: asynchronous invocation end to end. A no-op Node function gets a
//! burst of `InvocationType: Event` submissions from a few keep-alive clients; the
//! benchmark measures how fast they are acknowledged (each 202 means the event is durable),
//! how fast they are delivered, and the delay from each event's submission (its
//! `created_ms`) to its start (the `ts_ms` of its platform `START RequestId:` log line). Both
//! timestamps come from the server's clock. See `docs/performance.md`.

use crate::cpu::{Snapshot, Usage};
use crate::stats::{median, Latency};
use crate::targets::Nimbus;
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// The function under test: does nothing, returns null.
const NOOP_JS: &str = "exports.handler = async () => null;\n";
const FUNCTION: &str = "async-noop";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most log lines asked for per page (the server's own maximum).
const LOG_PAGE: usize = 10_000;
/// fsyncs timed per run by [`fsync_probe`].
const FSYNC_SAMPLES: usize = 50;

/// What the async measurement is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub events: usize,
    pub submitters: usize,
    pub concurrency: u32,
    /// Single events submitted one at a time into an idle queue, per run.
    pub idle_samples: usize,
}

/// The figures of one run.
#[derive(Debug, Clone, Copy)]
pub struct AsyncRun {
    /// 202s per second over the submission burst.
    pub acks_per_s: f64,
    /// Client-side latency of one submission (request sent to 202 received).
    pub ack: Latency,
    /// Events / (first submission to the last event's START).
    pub e2e_per_s: f64,
    /// `created_ms` → START during the burst.
    pub delay: Latency,
    /// `created_ms` → START of a lone event submitted into an idle queue.
    pub idle_delay: Latency,
    /// `write` + `fdatasync` of 4 KB appended to a file next to the data dir.
    pub fsync: Latency,
    /// Seconds from the last 202 to the last START (how far delivery trails submission).
    pub trail_s: f64,
    /// CPU per event from the first submission until every event finished, in µs.
    pub server_us: f64,
    pub instances_us: f64,
    pub client_us: f64,
    /// Cores the server, its instances and this client used meanwhile.
    pub our_cores: f64,
    /// Cores other processes used meanwhile.
    pub other_cores: f64,
}

impl AsyncRun {
    pub fn median_of(runs: &[AsyncRun]) -> AsyncRun {
        let m = |f: fn(&AsyncRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        let lat = |f: fn(&AsyncRun) -> Latency| Latency {
            p50: median(&runs.iter().map(|r| f(r).p50).collect::<Vec<_>>()),
            p99: median(&runs.iter().map(|r| f(r).p99).collect::<Vec<_>>()),
        };
        AsyncRun {
            acks_per_s: m(|r| r.acks_per_s),
            ack: lat(|r| r.ack),
            e2e_per_s: m(|r| r.e2e_per_s),
            delay: lat(|r| r.delay),
            idle_delay: lat(|r| r.idle_delay),
            fsync: lat(|r| r.fsync),
            trail_s: m(|r| r.trail_s),
            server_us: m(|r| r.server_us),
            instances_us: m(|r| r.instances_us),
            client_us: m(|r| r.client_us),
            our_cores: m(|r| r.our_cores),
            other_cores: m(|r| r.other_cores),
        }
    }

    pub fn to_json(self) -> Value {
        let r = |x: f64, d: i32| {
            let f = 10f64.powi(d);
            (x * f).round() / f
        };
        let lat = |l: Latency| json!({ "p50_ms": r(l.p50, 3), "p99_ms": r(l.p99, 3) });
        json!({
            "submit_acks_per_s": r(self.acks_per_s, 1),
            "ack_latency": lat(self.ack),
            "end_to_end_events_per_s": r(self.e2e_per_s, 1),
            "submit_to_start": lat(self.delay),
            "idle_submit_to_start": lat(self.idle_delay),
            "fsync_4k": lat(self.fsync),
            "last_ack_to_last_start_s": r(self.trail_s, 3),
            "cpu_per_event": {
                "server_us": r(self.server_us, 1), "instances_us": r(self.instances_us, 1),
                "client_us": r(self.client_us, 1), "our_cores": r(self.our_cores, 2), "other_cores": r(self.other_cores, 2),
            },
        })
    }

    /// The table of the median run.
    pub fn table(&self, title: &str) -> String {
        let mut out = format!("{title:<30}{:>9}{:>9}{:>9}\n", "value", "p50", "p99");
        let mut value = |label: &str, v: f64| {
            out += &format!("{label:<30}{v:>9.0}{:>9}{:>9}\n", "", "");
        };
        value("submit (acks/s)", self.acks_per_s);
        value("end to end (events/s)", self.e2e_per_s);
        let mut lat = |label: &str, l: Latency| {
            out += &format!(
                "{label:<30}{:>9}{:>9}{:>9}\n",
                "",
                crate::stats::ms(l.p50),
                crate::stats::ms(l.p99)
            );
        };
        lat("ack latency (ms)", self.ack);
        lat("submit to START, burst (ms)", self.delay);
        lat("submit to START, idle (ms)", self.idle_delay);
        lat("fsync 4 KB append (ms)", self.fsync);
        out += &format!(
            "last 202 to last START: {:.2} s; CPU per event (us): nimbus {:.0} gateway + {:.0} instances, \
             client {:.0} ({:.1} cores); other load {:.1} cores\n",
            self.trail_s,
            self.server_us,
            self.instances_us,
            self.client_us,
            self.our_cores,
            self.other_cores
        );
        out
    }
}

/// Deploys the no-op function and runs `runs` measurements.
pub async fn bench(nimbus: &Nimbus, tmp: &Path, s: Settings, runs: u32) -> Result<Vec<AsyncRun>> {
    nimbus
        .deploy_node(FUNCTION, NOOP_JS, 3, s.concurrency)
        .await?;
    let mut b = Bench {
        nimbus,
        path: format!("/2015-03-31/functions/{FUNCTION}/invocations"),
        cursor: 0,
    };
    let mut out = Vec::new();
    for run in 1..=runs {
        let t0 = Instant::now();
        // Warm-up: enough events for the pool to start all its instances.
        let warm = (4 * s.concurrency as usize).max(s.submitters);
        b.burst(warm, s.submitters, Duration::from_millis(100))
            .await
            .context("warm-up")?;
        let fsync = fsync_probe(tmp)?;
        let mut idle = Vec::new();
        for _ in 0..s.idle_samples {
            let r = b.burst(1, 1, Duration::from_millis(2)).await?;
            idle.extend(r.delays);
        }
        let r = b
            .burst(s.events, s.submitters, Duration::from_millis(100))
            .await
            .with_context(|| format!("run {run}"))?;
        let n = s.events as f64;
        let wall = r.cpu_wall.as_secs_f64();
        let per = |d: Duration| d.as_secs_f64() * 1e6 / n;
        let one = AsyncRun {
            acks_per_s: n / r.submit_elapsed.as_secs_f64(),
            ack: Latency::of(&r.acks),
            e2e_per_s: n / ((r.last_start_ms - r.first_submit_ms).max(1) as f64 / 1e3),
            delay: Latency::of(&r.delays),
            idle_delay: if idle.is_empty() {
                Latency { p50: 0.0, p99: 0.0 }
            } else {
                Latency::of(&idle)
            },
            fsync,
            trail_s: (r.last_start_ms - r.last_ack_ms) as f64 / 1e3,
            server_us: per(r.cpu.target),
            instances_us: per(r.cpu.children),
            client_us: per(r.cpu.client),
            our_cores: (r.cpu.target + r.cpu.children + r.cpu.client).as_secs_f64() / wall,
            other_cores: r.cpu.other.as_secs_f64() / wall,
        };
        eprintln!(
            "run {run}/{runs} async: {:.0} acks/s, {:.0} events/s end to end, submit to START p50 {:.1} / p99 {:.1} ms (idle {:.1} ms), ack p50 {:.2} ms, fsync p50 {:.2} ms, other load {:.1} cores [{:.0} s]",
            one.acks_per_s,
            one.e2e_per_s,
            one.delay.p50,
            one.delay.p99,
            one.idle_delay.p50,
            one.ack.p50,
            one.fsync.p50,
            one.other_cores,
            t0.elapsed().as_secs_f64()
        );
        out.push(one);
    }
    Ok(out)
}

struct Bench<'a> {
    nimbus: &'a Nimbus,
    path: String,
    /// Log lines up to this sequence number have been read.
    cursor: i64,
}

/// One burst of submissions, followed until every event has finished.
struct Burst {
    acks: Vec<Duration>,
    /// First request sent to last 202 received.
    submit_elapsed: Duration,
    first_submit_ms: i64,
    last_ack_ms: i64,
    last_start_ms: i64,
    /// `created_ms` → START of each event.
    delays: Vec<Duration>,
    cpu: Usage,
    cpu_wall: Duration,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Bench<'_> {
    /// Submits `n` events from `k` clients as fast as they are acknowledged, then follows
    /// the logs (every `poll`) until each event's START line is in, waits until none is
    /// pending or running, and checks that all succeeded.
    async fn burst(&mut self, n: usize, k: usize, poll: Duration) -> Result<Burst> {
        let pid = self.nimbus.pid();
        let addr = self.nimbus.addr;
        let k = k.min(n).max(1);
        let barrier = Arc::new(Barrier::new(k));
        let next = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Mutex::new(None));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..k {
            let (barrier, next, start) = (barrier.clone(), next.clone(), start.clone());
            let path = self.path.clone();
            tasks.spawn(async move {
                let mut conn = Submitter::open(addr).await?;
                if barrier.wait().await.is_leader() {
                    *start.lock().unwrap() = Some((Snapshot::take(pid), Instant::now(), wall_ms()));
                }
                let mut done = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let t0 = Instant::now();
                    let id = conn.submit(&path).await?;
                    done.push((id, t0.elapsed(), Instant::now(), wall_ms()));
                }
                anyhow::Ok(done)
            });
        }
        // Follow the logs while submitting: the server keeps only the newest 10,000 lines
        // per function, and a long burst writes more (START, END and REPORT per event).
        let mut starts: HashMap<String, i64> = HashMap::with_capacity(n);
        let submitting = std::cell::Cell::new(true);
        let submit = async {
            let mut submitted = Vec::with_capacity(n);
            while let Some(r) = tasks.join_next().await {
                submitted.extend(r.context("submitter panicked")??);
            }
            submitting.set(false);
            anyhow::Ok(submitted)
        };
        let follow = async {
            while submitting.get() {
                tokio::time::sleep(poll.max(Duration::from_millis(100))).await;
                self.read_starts(&mut starts).await?;
            }
            anyhow::Ok(())
        };
        let (submitted, followed) = tokio::join!(submit, follow);
        let submitted = submitted?;
        followed?;
        let (snap0, t_start, first_submit_ms) = start
            .lock()
            .unwrap()
            .take()
            .context("no submitter started")?;
        let last_ack = submitted.iter().map(|s| s.2).max().unwrap_or(t_start);
        let last_ack_ms = submitted
            .iter()
            .map(|s| s.3)
            .max()
            .unwrap_or(first_submit_ms);
        let acks: Vec<Duration> = submitted.iter().map(|s| s.1).collect();
        let ids: HashSet<String> = submitted.into_iter().map(|s| s.0).collect();
        if ids.len() != n {
            bail!(
                "{n} submissions returned {} distinct request ids",
                ids.len()
            );
        }

        // Keep following until every event has started.
        let deadline =
            Instant::now() + Duration::from_secs(120) + Duration::from_millis(n as u64 * 20);
        loop {
            self.read_starts(&mut starts).await?;
            let started = ids.iter().filter(|id| starts.contains_key(*id)).count();
            if started == n {
                break;
            }
            if Instant::now() > deadline {
                let counts = self.counts().await.unwrap_or(Value::Null);
                bail!(
                    "only {started} of {n} events have a START log line (counts {counts}; \
                     the server keeps the newest 10,000 log lines per function)"
                );
            }
            tokio::time::sleep(poll).await;
        }
        // Then until none is pending or running.
        loop {
            let c = self.counts().await?;
            let busy = ["pending", "running"]
                .iter()
                .map(|s| c[*s].as_u64().unwrap_or(0))
                .sum::<u64>();
            if busy == 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("events still in flight: {c}");
            }
            tokio::time::sleep(poll).await;
        }
        let snap1 = Snapshot::take(pid);
        let cpu_wall = t_start.elapsed();

        let list = self
            .nimbus
            .get_json(&format!(
                "/v1/functions/{FUNCTION}/events?limit={}",
                (n + 100).min(10_000)
            ))
            .await?;
        let mut delays = Vec::with_capacity(n);
        let mut seen = 0;
        for ev in list["events"].as_array().context("events missing")? {
            let Some(id) = ev["id"].as_str() else {
                continue;
            };
            let Some(&start_ms) = starts.get(id) else {
                continue;
            };
            seen += 1;
            if ev["status"] != "succeeded" {
                bail!("event {id} ended {}: {}", ev["status"], ev["last_error"]);
            }
            let created = ev["created_ms"].as_i64().context("created_ms missing")?;
            delays.push(Duration::from_millis((start_ms - created).max(0) as u64));
        }
        if seen != n {
            bail!("the events list shows {seen} of the {n} events submitted");
        }
        Ok(Burst {
            acks,
            submit_elapsed: last_ack - t_start,
            first_submit_ms,
            last_ack_ms,
            last_start_ms: ids
                .iter()
                .filter_map(|id| starts.get(id).copied())
                .max()
                .unwrap_or(first_submit_ms),
            delays,
            cpu: snap0.until(&snap1),
            cpu_wall,
        })
    }

    /// Reads every new log line, keeping the first START time of each request id.
    async fn read_starts(&mut self, starts: &mut HashMap<String, i64>) -> Result<()> {
        loop {
            let page = self
                .nimbus
                .get_json(&format!(
                    "/v1/functions/{FUNCTION}/logs?after={}&limit={LOG_PAGE}",
                    self.cursor
                ))
                .await?;
            let logs = page["logs"].as_array().context("logs missing")?;
            for l in logs {
                let line = l["line"].as_str().unwrap_or("");
                if let (true, Some(rid)) = (
                    line.starts_with("START RequestId:"),
                    l["request_id"].as_str(),
                ) {
                    let ts = l["ts_ms"].as_i64().context("ts_ms missing")?;
                    starts.entry(rid.to_string()).or_insert(ts);
                }
            }
            self.cursor = page["next"].as_i64().unwrap_or(self.cursor);
            if logs.len() < LOG_PAGE {
                return Ok(());
            }
        }
    }

    async fn counts(&self) -> Result<Value> {
        let v = self
            .nimbus
            .get_json(&format!("/v1/functions/{FUNCTION}/events?limit=1"))
            .await?;
        Ok(v["counts"].clone())
    }
}

/// One keep-alive connection submitting `InvocationType: Event` invocations.
pub struct Submitter {
    tx: SendRequest<Full<Bytes>>,
    host: String,
}

impl Submitter {
    pub async fn open(addr: SocketAddr) -> Result<Submitter> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Submitter {
            tx,
            host: addr.to_string(),
        })
    }

    /// Submits `{}`; returns the request id of the 202.
    pub async fn submit(&mut self, path: &str) -> Result<String> {
        let send = async {
            self.tx.ready().await?;
            let req = Request::post(path)
                .header(hyper::header::HOST, &self.host)
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .header("x-amz-invocation-type", "Event")
                .body(Full::new(Bytes::from_static(b"{}")))?;
            let resp = self.tx.send_request(req).await?;
            let status = resp.status();
            let id = resp
                .headers()
                .get("x-amzn-requestid")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, id, body))
        };
        let (status, id, body) = tokio::time::timeout(REQUEST_TIMEOUT, send)
            .await
            .with_context(|| format!("POST {path} took more than {REQUEST_TIMEOUT:?}"))??;
        if status != StatusCode::ACCEPTED {
            bail!(
                "POST {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        id.context("202 without x-amzn-requestid")
    }
}

/// Times `write` + `fdatasync` of 4 KB appended to a file in `dir` (the file system of the
/// data dir): what each durable SQLite commit (WAL, `synchronous=FULL`) pays at least once.
pub fn fsync_probe(dir: &Path) -> Result<Latency> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let block = [0u8; 4096];
    let mut samples = Vec::with_capacity(FSYNC_SAMPLES);
    for _ in 0..FSYNC_SAMPLES {
        let t0 = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        samples.push(t0.elapsed());
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(Latency::of(&samples))
}
