//! `nimbus-bench --storage`: the object store and the queues (issue 15). Against one
//! `nimbus serve --s3-listen …`, with `clients` concurrent keep-alive clients:
//!
//! - S3 `PutObject` and `GetObject` of 4 KiB and 16 MiB objects (p50 per request, objects/s
//!   and MiB/s), beside the floor measured in the same run: this program writing the same
//!   bytes to a temporary file on the same filesystem, `fsync`, `rename`, `fsync` of the
//!   directory (what the store does for an object's bytes), and reading them back, from the
//!   same number of threads;
//! - SQS (JSON protocol) `SendMessage`, `ReceiveMessage` (up to 10) and `DeleteMessage`
//!   throughput in messages/s, plus `SendMessage` to a FIFO queue (16 message groups);
//! - upload → function start: a bucket notification to a Node function that logs
//!   `Date.now()` as its handler's first statement; the latency is that timestamp minus
//!   the wall-clock time at which this program received the `PutObject` response, both in
//!   whole milliseconds of the same host's clock (so each sample is ±1 ms). Uploads are one
//!   at a time into a warm function.
//!
//! The server runs with `--auth off`, so requests are unsigned (the benchmark measures
//! the serving path, not SigV4). Every object body is distinct (the store is content
//! addressed: identical bytes would be written once). See `docs/performance.md`.

use crate::stats::{median, Latency};
use crate::targets::{free_addr, Nimbus};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const SMALL: usize = 4 * 1024;
pub const LARGE: usize = 16 * 1024 * 1024;
const BUCKET: &str = "bench";
const EVENTS_BUCKET: &str = "bench-events";
const FUNCTION: &str = "s3-start";
/// Logs `Date.now()` (wall clock, whole milliseconds) before anything else, with the
/// object's key. (`performance.timeOrigin + performance.now()` would have microseconds but
/// is not the wall clock in an instance started from a stem cell: it drifted by seconds.)
const START_JS: &str = "exports.handler = async (event) => {\n  const t = Date.now();\n  \
    console.log(`BENCH_START ${t} ${event.Records[0].s3.object.key}`);\n  return null;\n};\n";

/// What the storage measurement is asked to do.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub clients: usize,
    /// 4 KiB objects put (then got) per run.
    pub small_objects: usize,
    /// 16 MiB objects put (then got) per run.
    pub large_objects: usize,
    /// Messages sent (then received and deleted) per run.
    pub messages: usize,
    /// Uploads timed to their function's start per run.
    pub uploads: usize,
}

/// Throughput and latency of one operation under load.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    /// Objects (or messages) per second.
    pub per_s: f64,
    /// Latency of one request (one file for the floor).
    pub lat: Latency,
}

impl Op {
    fn median_of(ops: &[Op]) -> Op {
        Op {
            per_s: median(&ops.iter().map(|o| o.per_s).collect::<Vec<_>>()),
            lat: Latency {
                p50: median(&ops.iter().map(|o| o.lat.p50).collect::<Vec<_>>()),
                p99: median(&ops.iter().map(|o| o.lat.p99).collect::<Vec<_>>()),
            },
        }
    }

    fn to_json(self, size: Option<usize>) -> Value {
        let r = |x: f64, d: i32| {
            let f = 10f64.powi(d);
            (x * f).round() / f
        };
        let mut v = json!({
            "per_s": r(self.per_s, 1), "p50_ms": r(self.lat.p50, 3), "p99_ms": r(self.lat.p99, 3),
        });
        if let Some(size) = size {
            v["mib_per_s"] = r(self.per_s * size as f64 / (1024.0 * 1024.0), 1).into();
        }
        v
    }
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct StorageRun {
    /// `(size, put, get, floor write, floor read)` per object size.
    pub objects: Vec<(usize, Op, Op, Op, Op)>,
    pub send: Op,
    pub receive: Op,
    pub delete: Op,
    pub fifo_send: Op,
    /// `PutObject` response → the function's first statement.
    pub upload_to_start: Latency,
}

impl StorageRun {
    pub fn median_of(runs: &[StorageRun]) -> StorageRun {
        let op =
            |f: &dyn Fn(&StorageRun) -> Op| Op::median_of(&runs.iter().map(f).collect::<Vec<_>>());
        let objects = (0..runs[0].objects.len())
            .map(|i| {
                (
                    runs[0].objects[i].0,
                    op(&|r| r.objects[i].1),
                    op(&|r| r.objects[i].2),
                    op(&|r| r.objects[i].3),
                    op(&|r| r.objects[i].4),
                )
            })
            .collect();
        StorageRun {
            objects,
            send: op(&|r| r.send),
            receive: op(&|r| r.receive),
            delete: op(&|r| r.delete),
            fifo_send: op(&|r| r.fifo_send),
            upload_to_start: Latency {
                p50: median(
                    &runs
                        .iter()
                        .map(|r| r.upload_to_start.p50)
                        .collect::<Vec<_>>(),
                ),
                p99: median(
                    &runs
                        .iter()
                        .map(|r| r.upload_to_start.p99)
                        .collect::<Vec<_>>(),
                ),
            },
        }
    }

    pub fn to_json(&self) -> Value {
        let objects: Vec<Value> = self
            .objects
            .iter()
            .map(|(size, put, get, fw, fr)| {
                json!({
                    "size_bytes": size,
                    "put": put.to_json(Some(*size)), "get": get.to_json(Some(*size)),
                    "floor_write": fw.to_json(Some(*size)), "floor_read": fr.to_json(Some(*size)),
                    "put_vs_floor": ratio(put.per_s, fw.per_s),
                    "get_vs_floor": ratio(get.per_s, fr.per_s),
                })
            })
            .collect();
        json!({
            "s3": objects,
            "sqs": {
                "send": self.send.to_json(None), "receive": self.receive.to_json(None),
                "delete": self.delete.to_json(None), "fifo_send": self.fifo_send.to_json(None),
            },
            "upload_to_function_start": {
                "p50_ms": self.upload_to_start.p50, "p99_ms": self.upload_to_start.p99,
            },
        })
    }

    /// The tables of the median run.
    pub fn table(&self) -> String {
        let mut out = format!(
            "{:<26}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "S3", "objects/s", "MiB/s", "p50 ms", "p99 ms", "of floor"
        );
        for (size, put, get, fw, fr) in &self.objects {
            let label = if *size >= 1024 * 1024 {
                format!("{} MiB", size / (1024 * 1024))
            } else {
                format!("{} KiB", size / 1024)
            };
            let mut row = |what: &str, o: &Op, floor: Option<&Op>| {
                out += &format!(
                    "{:<26}{:>10.1}{:>10.1}{:>10.3}{:>10.3}{:>10}\n",
                    format!("{what} {label}"),
                    o.per_s,
                    o.per_s * *size as f64 / (1024.0 * 1024.0),
                    o.lat.p50,
                    o.lat.p99,
                    floor.map_or(String::new(), |f| format!("{:.2}", o.per_s / f.per_s)),
                );
            };
            row("PUT", put, Some(fw));
            row("floor write+fsync", fw, None);
            row("GET", get, Some(fr));
            row("floor read", fr, None);
        }
        out += &format!(
            "\n{:<26}{:>10}{:>10}{:>10}\n",
            "SQS (JSON protocol)", "msgs/s", "p50 ms", "p99 ms"
        );
        for (what, o) in [
            ("SendMessage", &self.send),
            ("ReceiveMessage (max 10)", &self.receive),
            ("DeleteMessage", &self.delete),
            ("SendMessage, FIFO", &self.fifo_send),
        ] {
            out += &format!(
                "{what:<26}{:>10.0}{:>10.2}{:>10.2}\n",
                o.per_s, o.lat.p50, o.lat.p99
            );
        }
        out += &format!(
            "\nupload -> function start: p50 {:.0} ms, p99 {:.0} ms (whole ms)\n",
            self.upload_to_start.p50, self.upload_to_start.p99
        );
        out
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    ((a / b) * 1000.0).round() / 1000.0
}

/// The extra `serve` flags: an S3 listener on a free port.
pub fn serve_flags() -> Result<(String, Vec<String>)> {
    let addr = free_addr()?.to_string();
    Ok((addr.clone(), vec!["--s3-listen".into(), addr]))
}

/// Runs `runs` measurements against `nimbus` (whose S3 listener is `s3_addr`), with the
/// floor's files under `tmp` (the same filesystem as the server's data dir).
pub async fn bench(
    nimbus: &Nimbus,
    s3_addr: &str,
    tmp: &Path,
    s: Settings,
    runs: u32,
) -> Result<Vec<StorageRun>> {
    let b = Bench {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .pool_max_idle_per_host(s.clients * 2)
            .build()?,
        s3: format!("http://{s3_addr}"),
        api: format!("http://{}", nimbus.addr),
        floor_dir: tmp.join("floor"),
        s,
    };
    std::fs::create_dir_all(b.floor_dir.join("tmp"))?;
    b.s3_ok(reqwest::Method::PUT, &format!("/{BUCKET}"), Bytes::new())
        .await?;
    b.s3_ok(
        reqwest::Method::PUT,
        &format!("/{EVENTS_BUCKET}"),
        Bytes::new(),
    )
    .await?;
    let config = json!({
        "runtime": "nodejs20.x", "handler": "index.handler", "memory_mb": 128, "timeout_s": 3,
    });
    nimbus
        .deploy_config(FUNCTION, config, &zip_of("index.js", START_JS)?)
        .await?;
    let notification = format!(
        "<NotificationConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
         <CloudFunctionConfiguration><Id>start</Id>\
         <CloudFunction>arn:aws:lambda:us-east-1:000000000000:function:{FUNCTION}</CloudFunction>\
         <Event>s3:ObjectCreated:*</Event></CloudFunctionConfiguration>\
         </NotificationConfiguration>"
    );
    b.s3_ok(
        reqwest::Method::PUT,
        &format!("/{EVENTS_BUCKET}?notification"),
        Bytes::from(notification),
    )
    .await?;
    let queue = b.create_queue("bench", false).await?;
    let fifo = b.create_queue("bench.fifo", true).await?;
    let mut out = Vec::new();
    let mut log_cursor = 0i64;
    for run in 1..=runs {
        let t0 = Instant::now();
        let mut objects = Vec::new();
        for (size, count) in [(SMALL, s.small_objects), (LARGE, s.large_objects)] {
            objects.push(b.objects(run, size, count).await?);
        }
        let (send, receive, delete) = b.queue_ops(&queue, run).await?;
        let fifo_send = b.fifo_send(&fifo, run).await?;
        b.purge(&fifo).await?;
        let upload_to_start = b
            .upload_to_start(nimbus, run, &mut log_cursor)
            .await
            .context("upload -> function start")?;
        let r = StorageRun {
            objects,
            send,
            receive,
            delete,
            fifo_send,
            upload_to_start,
        };
        let o = &r.objects;
        eprintln!(
            "run {run}/{runs} storage: PUT 4K {:.0}/s (floor {:.0}), GET 4K {:.0}/s (floor {:.0}), \
             PUT 16M {:.1}/s (floor {:.1}), GET 16M {:.1}/s (floor {:.1}); SQS send {:.0}, \
             receive {:.0}, delete {:.0}, FIFO send {:.0} msgs/s; upload to start p50 {:.1} ms [{:.0} s]",
            o[0].1.per_s, o[0].3.per_s, o[0].2.per_s, o[0].4.per_s,
            o[1].1.per_s, o[1].3.per_s, o[1].2.per_s, o[1].4.per_s,
            r.send.per_s, r.receive.per_s, r.delete.per_s, r.fifo_send.per_s,
            r.upload_to_start.p50, t0.elapsed().as_secs_f64(),
        );
        out.push(r);
    }
    Ok(out)
}

struct Bench {
    http: reqwest::Client,
    s3: String,
    api: String,
    floor_dir: PathBuf,
    s: Settings,
}

/// A body of `size` bytes unique to `(run, size, i)`.
fn body(run: u32, size: usize, i: usize) -> Bytes {
    let mut v = vec![0u8; size];
    let tag = format!("{run}/{size}/{i}/");
    for (k, b) in v.iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(31) ^ (i as u8);
    }
    v[..tag.len()].copy_from_slice(tag.as_bytes());
    Bytes::from(v)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs jobs `0, 1, …` (at most `max_jobs`) from `clients` concurrent tasks until `total`
/// items are handled; each job returns how many items it handled (a receive may get
/// several messages, or none). Returns items/s over the whole and the latency of each job.
async fn load<F, Fut>(clients: usize, total: usize, max_jobs: usize, job: F) -> Result<Op>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<usize>> + Send + 'static,
{
    let job = Arc::new(job);
    let (next, done) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let lats = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (job, next, done, lats) = (job.clone(), next.clone(), done.clone(), lats.clone());
        tasks.push(tokio::spawn(async move {
            let mut empty = 0;
            while done.load(Ordering::Relaxed) < total {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= max_jobs {
                    break;
                }
                let t = Instant::now();
                let n = job(i).await?;
                lats.lock().expect("latencies").push(t.elapsed());
                done.fetch_add(n, Ordering::Relaxed);
                empty = if n == 0 { empty + 1 } else { 0 };
                if empty > 50 {
                    bail!("50 jobs in a row handled nothing");
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let wall = t0.elapsed().as_secs_f64();
    let lats = lats.lock().expect("latencies");
    Ok(Op {
        per_s: done.load(Ordering::Relaxed) as f64 / wall,
        lat: Latency::of(&lats),
    })
}

/// Runs `total` blocking jobs from `threads` threads (the floor: no async runtime, no HTTP).
fn load_threads<F>(threads: usize, total: usize, job: F) -> Result<Op>
where
    F: Fn(usize) -> Result<()> + Send + Sync,
{
    let next = AtomicUsize::new(0);
    let lats = Mutex::new(Vec::with_capacity(total));
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let t = Instant::now();
                    job(i)?;
                    lats.lock().expect("latencies").push(t.elapsed());
                })
            })
            .collect();
        for h in handles {
            h.join().expect("floor thread panicked")?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let wall = t0.elapsed().as_secs_f64();
    let lats = lats.lock().expect("latencies");
    Ok(Op {
        per_s: total as f64 / wall,
        lat: Latency::of(&lats),
    })
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Bench {
    async fn s3_ok(&self, method: reqwest::Method, path: &str, body: Bytes) -> Result<Bytes> {
        let r = self
            .http
            .request(method.clone(), format!("{}{path}", self.s3))
            .body(body)
            .send()
            .await?;
        let status = r.status();
        let bytes = r.bytes().await?;
        if !status.is_success() {
            bail!(
                "S3 {method} {path}: {status}: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(bytes)
    }

    async fn sqs(&self, action: &str, body: Value) -> Result<Value> {
        sqs_call(&self.http, &self.api, action, body).await
    }

    async fn create_queue(&self, name: &str, fifo: bool) -> Result<String> {
        let mut attrs = json!({ "VisibilityTimeout": "600" });
        if fifo {
            attrs["FifoQueue"] = "true".into();
            attrs["ContentBasedDeduplication"] = "true".into();
        }
        let r = self
            .sqs(
                "CreateQueue",
                json!({ "QueueName": name, "Attributes": attrs }),
            )
            .await?;
        Ok(r["QueueUrl"]
            .as_str()
            .context("QueueUrl missing")?
            .to_string())
    }

    async fn purge(&self, url: &str) -> Result<()> {
        self.sqs("PurgeQueue", json!({ "QueueUrl": url })).await?;
        Ok(())
    }

    /// PUT then GET `count` objects of `size` through S3, then the floor's write and read
    /// of the same bytes; then deletes both (unmeasured).
    async fn objects(
        &self,
        run: u32,
        size: usize,
        count: usize,
    ) -> Result<(usize, Op, Op, Op, Op)> {
        let clients = self.s.clients;
        let key = move |i: usize| format!("/{BUCKET}/r{run}/s{size}/o{i}");
        let (http, s3) = (self.http.clone(), self.s3.clone());
        let put = load(clients, count, count, move |i| {
            let (http, url) = (http.clone(), format!("{s3}{}", key(i)));
            async move {
                let r = http.put(url).body(body(run, size, i)).send().await?;
                let status = r.status();
                if !status.is_success() {
                    bail!("PUT: {status}: {}", r.text().await.unwrap_or_default());
                }
                Ok(1)
            }
        })
        .await?;
        let (http, s3) = (self.http.clone(), self.s3.clone());
        let get = load(clients, count, count, move |i| {
            let (http, url) = (http.clone(), format!("{s3}{}", key(i)));
            async move {
                let r = http.get(url).send().await?;
                let status = r.status();
                let got = r.bytes().await?;
                if !status.is_success() || got.len() != size {
                    bail!("GET: {status}, {} of {size} bytes", got.len());
                }
                Ok(1)
            }
        })
        .await?;
        let dir = self.floor_dir.clone();
        let (floor_write, floor_read) = tokio::task::spawn_blocking(move || {
            let path = |i: usize| dir.join(format!("r{run}-s{size}-o{i}"));
            let write = load_threads(clients, count, |i| {
                let staged = dir.join("tmp").join(format!("r{run}-s{size}-o{i}"));
                let mut f = std::fs::File::create(&staged)?;
                f.write_all(&body(run, size, i))?;
                f.sync_all()?;
                std::fs::rename(&staged, path(i))?;
                sync_dir(&dir)?;
                Ok(())
            })?;
            let read = load_threads(clients, count, |i| {
                let mut buf = Vec::with_capacity(size);
                std::fs::File::open(path(i))?.read_to_end(&mut buf)?;
                if buf.len() != size {
                    bail!("floor read {} of {size} bytes", buf.len());
                }
                Ok(())
            })?;
            for i in 0..count {
                std::fs::remove_file(path(i))?;
            }
            Ok::<_, anyhow::Error>((write, read))
        })
        .await??;
        for i in 0..count {
            self.s3_ok(reqwest::Method::DELETE, &key(i), Bytes::new())
                .await?;
        }
        Ok((size, put, get, floor_write, floor_read))
    }

    /// SendMessage × messages, then ReceiveMessage (10 at a time) until all are in hand,
    /// then DeleteMessage of each.
    async fn queue_ops(&self, url: &str, run: u32) -> Result<(Op, Op, Op)> {
        let (clients, total) = (self.s.clients, self.s.messages);
        let (http, api, u) = (self.http.clone(), self.api.clone(), url.to_string());
        let send = load(clients, total, total, move |i| {
            let (http, api, u) = (http.clone(), api.clone(), u.clone());
            async move {
                let body =
                    json!({ "QueueUrl": u, "MessageBody": format!("run {run} message {i}") });
                sqs_call(&http, &api, "SendMessage", body).await?;
                Ok(1)
            }
        })
        .await?;
        let receipts = Arc::new(Mutex::new(Vec::with_capacity(total)));
        let (http, api, u, rs) = (
            self.http.clone(),
            self.api.clone(),
            url.to_string(),
            receipts.clone(),
        );
        let receive = load(clients, total, usize::MAX, move |_| {
            let (http, api, u, rs) = (http.clone(), api.clone(), u.clone(), rs.clone());
            async move {
                let body = json!({ "QueueUrl": u, "MaxNumberOfMessages": 10 });
                let r = sqs_call(&http, &api, "ReceiveMessage", body).await?;
                let got: Vec<String> = r["Messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m["ReceiptHandle"].as_str().map(str::to_string))
                    .collect();
                let n = got.len();
                rs.lock().expect("receipts").extend(got);
                Ok(n)
            }
        })
        .await?;
        let receipts = Arc::new(std::mem::take(&mut *receipts.lock().expect("receipts")));
        if receipts.len() != total {
            bail!("received {} of {total} messages", receipts.len());
        }
        let (http, api, u) = (self.http.clone(), self.api.clone(), url.to_string());
        let delete = load(clients, total, total, move |i| {
            let (http, api, u, rs) = (http.clone(), api.clone(), u.clone(), receipts.clone());
            async move {
                let body = json!({ "QueueUrl": u, "ReceiptHandle": rs[i] });
                sqs_call(&http, &api, "DeleteMessage", body).await?;
                Ok(1)
            }
        })
        .await?;
        Ok((send, receive, delete))
    }

    /// SendMessage × messages to a FIFO queue (content-based deduplication), over 16
    /// message groups.
    async fn fifo_send(&self, url: &str, run: u32) -> Result<Op> {
        let (clients, total) = (self.s.clients, self.s.messages);
        let (http, api, u) = (self.http.clone(), self.api.clone(), url.to_string());
        load(clients, total, total, move |i| {
            let (http, api, u) = (http.clone(), api.clone(), u.clone());
            async move {
                let body = json!({
                    "QueueUrl": u, "MessageBody": format!("run {run} message {i}"),
                    "MessageGroupId": format!("g{}", i % 16),
                });
                sqs_call(&http, &api, "SendMessage", body).await?;
                Ok(1)
            }
        })
        .await
    }

    /// One upload at a time to the notifying bucket; each waits for the function's
    /// `BENCH_START` line for its key. The first upload of the first run (which starts the
    /// function's instance) is not counted.
    async fn upload_to_start(
        &self,
        nimbus: &Nimbus,
        run: u32,
        cursor: &mut i64,
    ) -> Result<Latency> {
        let mut samples = Vec::new();
        let warmup = usize::from(run == 1);
        for i in 0..self.s.uploads + warmup {
            let key = format!("r{run}/u{i}");
            self.s3_ok(
                reqwest::Method::PUT,
                &format!("/{EVENTS_BUCKET}/{key}"),
                body(run, SMALL, i),
            )
            .await?;
            let acked = now_ms();
            let started = wait_for_start(nimbus, &key, cursor).await?;
            if i >= warmup {
                samples.push(Duration::from_millis(
                    started.saturating_sub(acked).max(0) as u64
                ));
            }
        }
        Ok(Latency::of(&samples))
    }
}

/// Follows the function's logs until its `BENCH_START <ms> <key>` line: the `<ms>`.
async fn wait_for_start(nimbus: &Nimbus, key: &str, cursor: &mut i64) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = nimbus
            .get_json(&format!(
                "/v1/functions/{FUNCTION}/logs?after={cursor}&limit=1000"
            ))
            .await?;
        let logs = page["logs"].as_array().context("logs missing")?;
        let mut found = None;
        for l in logs {
            let line = l["line"].as_str().unwrap_or("");
            if let Some(rest) = line.split("BENCH_START ").nth(1) {
                let mut parts = rest.split_whitespace();
                let (t, k) = (parts.next(), parts.next());
                if k == Some(key) {
                    found = t.and_then(|t| t.parse::<i64>().ok());
                }
            }
        }
        *cursor = page["next"].as_i64().unwrap_or(*cursor);
        if let Some(t) = found {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("no BENCH_START line for {key} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One SQS JSON-protocol call; its answer.
async fn sqs_call(http: &reqwest::Client, api: &str, action: &str, body: Value) -> Result<Value> {
    let r = http
        .post(format!("{api}/"))
        .header("X-Amz-Target", format!("AmazonSQS.{action}"))
        .header("Content-Type", "application/x-amz-json-1.0")
        .body(body.to_string())
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    if !status.is_success() {
        bail!("SQS {action}: {status}: {text}");
    }
    Ok(if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)?
    })
}

fn zip_of(name: &str, code: &str) -> Result<Vec<u8>> {
    let mut buf = std::io::Cursor::new(Vec::new());
    let mut w = zip::ZipWriter::new(&mut buf);
    let opts = zip::write::SimpleFileOptions::default().unix_permissions(0o644);
    w.start_file(name, opts)?;
    w.write_all(code.as_bytes())?;
    w.finish()?;
    Ok(buf.into_inner())
}
