//! The load generator, shared by every target so Nimbus and its floor are measured by the
//! same code: a bare hyper HTTP/1.1 client with one keep-alive connection per client.

use crate::cpu::{Snapshot, Usage};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

/// Longest a single request may take before the benchmark gives up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What every hello handler puts in its answer.
const EXPECTED: &[u8] = b"Hello, world from";

/// One keep-alive HTTP/1.1 connection.
pub struct Conn {
    tx: SendRequest<Empty<Bytes>>,
    host: String,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn {
            tx,
            host: addr.to_string(),
        })
    }

    /// `GET path`; fails unless the answer is a 200 with the hello JSON.
    pub async fn get(&mut self, path: &str) -> Result<()> {
        let (status, body) = tokio::time::timeout(REQUEST_TIMEOUT, self.send(path))
            .await
            .with_context(|| format!("GET {path} took more than {REQUEST_TIMEOUT:?}"))??;
        if status != StatusCode::OK || !contains(&body, EXPECTED) {
            bail!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// `GET path` with the request timeout: the status and body, whatever they are.
    pub async fn request(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send(path))
            .await
            .with_context(|| format!("GET {path} took more than {REQUEST_TIMEOUT:?}"))?
    }

    /// `GET path` to an identity function (`Lang::ident_file`): the instance that served
    /// it; fails unless the answer is a 200 with the hello JSON.
    pub async fn get_instance(&mut self, path: &str) -> Result<String> {
        let (status, body) = self.request(path).await?;
        if status != StatusCode::OK || !contains(&body, EXPECTED) {
            bail!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        instance_of(&body).with_context(|| {
            format!(
                "GET {path}: no instance in {}",
                String::from_utf8_lossy(&body)
            )
        })
    }

    async fn send(&mut self, path: &str) -> Result<(StatusCode, Bytes)> {
        self.tx.ready().await?;
        let req = Request::get(path)
            .header(hyper::header::HOST, &self.host)
            .body(Empty::new())?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// The `instance` field of an identity function's JSON answer.
pub fn instance_of(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v["instance"].as_str()?.to_string())
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// One request on a new connection (connect included): a cold-start sample.
pub async fn one_shot(addr: SocketAddr, path: &str) -> Result<Duration> {
    let t0 = Instant::now();
    let mut conn = Conn::open(addr).await?;
    conn.get(path).await?;
    Ok(t0.elapsed())
}

/// Latencies of `n` sequential requests on one connection, after `warmup` unmeasured ones.
pub async fn sequential(
    addr: SocketAddr,
    path: &str,
    warmup: usize,
    n: usize,
) -> Result<Vec<Duration>> {
    let mut conn = Conn::open(addr).await?;
    for _ in 0..warmup {
        conn.get(path).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        conn.get(path).await?;
        samples.push(t0.elapsed());
    }
    Ok(samples)
}

/// Load settings for [`throughput`].
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub clients: usize,
    /// Unmeasured warm-up (every client also completes at least `min_warmup_requests`).
    pub warmup: Duration,
    pub min_warmup_requests: usize,
    pub duration: Duration,
}

/// The outcome of a throughput measurement.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    pub rps: f64,
    pub requests: u64,
    /// CPU used while measuring, by the server `pid`, its children, this client and others.
    pub cpu: Usage,
}

/// Requests per second completed by `load.clients` closed-loop clients (one connection
/// each) during `load.duration`, after a warm-up that all clients finish before any
/// measures; with the CPU time the server process `pid` and its children used meanwhile.
pub async fn throughput(addr: SocketAddr, path: &str, load: Load, pid: u32) -> Result<Throughput> {
    let barrier = Arc::new(Barrier::new(load.clients));
    let start = Arc::new(Mutex::new(None));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..load.clients {
        let barrier = barrier.clone();
        let start = start.clone();
        let path = path.to_string();
        tasks.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let warm_until = Instant::now() + load.warmup;
            let mut warm = 0;
            while warm < load.min_warmup_requests || Instant::now() < warm_until {
                conn.get(&path).await?;
                warm += 1;
            }
            if barrier.wait().await.is_leader() {
                *start.lock().unwrap() = Some(Snapshot::take(pid));
            }
            let end = Instant::now() + load.duration;
            let mut done = 0u64;
            loop {
                conn.get(&path).await?;
                if Instant::now() > end {
                    break;
                }
                done += 1;
            }
            anyhow::Ok(done)
        });
    }
    let mut requests = 0;
    while let Some(r) = tasks.join_next().await {
        requests += r.context("client task panicked")??;
    }
    let end = Snapshot::take(pid);
    let start = start
        .lock()
        .unwrap()
        .take()
        .context("no client reached the measurement")?;
    Ok(Throughput {
        rps: requests as f64 / load.duration.as_secs_f64(),
        requests,
        cpu: start.until(&end),
    })
}
