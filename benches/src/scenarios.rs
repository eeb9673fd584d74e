//! The scale scenarios of issue 6: a burst of first requests to a cold function,
//! scale-out time, instances per GB, and a thousand deployed functions. Each records its
//! figures into a [`Figs`] under a prefix, beside the floor measured in the same run.

use crate::client::{self, Conn};
use crate::lang::Lang;
use crate::mem::{self, Mem};
use crate::stats::{Figs, Latency};
use crate::targets::{self, Nimbus};
use anyhow::{bail, Context, Result};
use hyper::StatusCode;
use std::cell::Cell;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

/// Pause after deploying a function before its first request, so the previous function's
/// teardown does not overlap the measurement.
pub const SETTLE: Duration = Duration::from_millis(250);

/// The throttle reasons Nimbus documents for invocations (docs/api.md, "Concurrency and
/// throttling"): a 429 with one of these is expected under a burst, anything else is an error.
pub const DOCUMENTED_THROTTLES: [&str; 3] = [
    "ConcurrentInvocationLimitExceeded",
    "FunctionInvocationRateLimitExceeded",
    "ReservedFunctionConcurrentInvocationLimitExceeded",
];

/// Instances of `name` the pool holds (idle + busy), from `GET /v1/functions/NAME`.
async fn pool_instances(nimbus: &Nimbus, name: &str) -> Result<u64> {
    let v = nimbus.get_json(&format!("/v1/functions/{name}")).await?;
    let p = &v["pool"];
    Ok(p["idle"].as_u64().unwrap_or(0) + p["busy"].as_u64().unwrap_or(0))
}

/// What one request of [`all_at_once`] got: an answer, or a failure (no answer within the
/// client's 30 s, connection reset, …).
type Outcome = std::result::Result<(StatusCode, bytes::Bytes), String>;

/// `n` connections opened first, then one `GET path` on each at once; returns what each
/// got and the time from the release of the requests until the last one ended.
async fn all_at_once(addr: SocketAddr, path: &str, n: usize) -> Result<(Vec<Outcome>, Duration)> {
    let barrier = Arc::new(Barrier::new(n));
    let start = Arc::new(Mutex::new(None));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (barrier, start, path) = (barrier.clone(), start.clone(), path.to_string());
        tasks.spawn(async move {
            let conn = Conn::open(addr).await;
            if barrier.wait().await.is_leader() {
                *start.lock().unwrap() = Some(Instant::now());
            }
            let r = match conn {
                Ok(mut c) => c.request(&path).await,
                Err(e) => Err(e),
            };
            (r.map_err(|e| format!("{e:#}")), Instant::now())
        });
    }
    let mut out = Vec::with_capacity(n);
    let mut last = None;
    while let Some(r) = tasks.join_next().await {
        let (outcome, at) = r.context("client task panicked")?;
        last = Some(last.map_or(at, |l: Instant| l.max(at)));
        out.push(outcome);
    }
    let t0 = start
        .lock()
        .unwrap()
        .take()
        .context("no request was sent")?;
    Ok((out, last.context("no answer")? - t0))
}

/// Waits (at most 30 s) until the server has no more descendants than `procs`: the
/// instances of a deleted function have stopped, so they do not disturb what comes next.
async fn wait_for_teardown(nimbus: &Nimbus, procs: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::cpu::descendants(nimbus.pid()).len() > procs && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A burst of `calls` concurrent first requests (one new connection each) to a freshly
/// deployed identity function with concurrency `limit`, while `GET /v1/functions/NAME` is
/// polled for the pool's instance count. Floor: the same burst against the bare server.
pub async fn burst(
    nimbus: &Nimbus,
    floor: SocketAddr,
    lang: Lang,
    name: &str,
    calls: usize,
    limit: u32,
    figs: &mut Figs,
) -> Result<()> {
    let procs_before = crate::cpu::descendants(nimbus.pid()).len();
    nimbus.deploy(name, lang, &lang.ident_zip()?, limit).await?;
    tokio::time::sleep(SETTLE).await;
    let done = Rc::new(Cell::new(false));
    let peak = Rc::new(Cell::new(0u64));
    let poll = {
        let (done, peak) = (done.clone(), peak.clone());
        async move {
            while !done.get() {
                peak.set(peak.get().max(pool_instances(nimbus, name).await?));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            anyhow::Ok(())
        }
    };
    let run = async {
        let r = all_at_once(nimbus.addr, &format!("/fn/{name}/"), calls).await;
        done.set(true);
        r
    };
    let (answers, polled) = tokio::join!(run, poll);
    let (answers, elapsed) = answers?;
    polled?;
    peak.set(peak.get().max(pool_instances(nimbus, name).await?));
    let (mut ok, mut throttled, mut other, mut undocumented) = (0u64, 0u64, 0u64, 0u64);
    let mut failed = 0u64;
    let mut instances = HashSet::new();
    let mut sample_error = None;
    for outcome in &answers {
        let (status, body) = match outcome {
            Ok((status, body)) => (status, body),
            Err(e) => {
                failed += 1;
                sample_error.get_or_insert_with(|| format!("no answer: {e}"));
                continue;
            }
        };
        match *status {
            StatusCode::OK => {
                ok += 1;
                if let Some(i) = client::instance_of(body) {
                    instances.insert(i);
                }
            }
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                let reason = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v["Reason"].as_str().map(str::to_string));
                if !reason.is_some_and(|r| DOCUMENTED_THROTTLES.contains(&r.as_str())) {
                    undocumented += 1;
                    sample_error
                        .get_or_insert_with(|| format!("429 {}", String::from_utf8_lossy(body)));
                }
            }
            s => {
                other += 1;
                sample_error
                    .get_or_insert_with(|| format!("{s} {}", String::from_utf8_lossy(body)));
            }
        }
    }
    if let Some(e) = sample_error {
        eprintln!("burst {name}: an unexpected answer: {e}");
    }
    nimbus.delete(name).await?;
    wait_for_teardown(nimbus, procs_before).await;
    let (floor_answers, floor_elapsed) = all_at_once(floor, "/", calls).await?;
    let floor_ok = floor_answers
        .iter()
        .filter(|o| matches!(o, Ok((s, _)) if *s == StatusCode::OK))
        .count();
    let p = "burst";
    figs.put(&format!("{p}.ok"), ok as f64);
    figs.put(&format!("{p}.throttled"), throttled as f64);
    figs.put(&format!("{p}.other"), other as f64);
    figs.put(&format!("{p}.no_answer"), failed as f64);
    figs.put(
        &format!("{p}.errors"),
        (other + undocumented + failed) as f64,
    );
    figs.put(&format!("{p}.all_answered_ms"), ms(elapsed));
    figs.put(&format!("{p}.peak_pool"), peak.get() as f64);
    figs.put(&format!("{p}.distinct_instances"), instances.len() as f64);
    figs.put(&format!("{p}.limit"), limit as f64);
    figs.put(&format!("{p}.floor_all_answered_ms"), ms(floor_elapsed));
    figs.put(&format!("{p}.floor_ok"), floor_ok as f64);
    Ok(())
}

/// Time until `n` distinct instances have served: `n` callers, each on its own
/// connection, call a function that sleeps 300 ms in a loop until the answers name `n`
/// distinct instances (or 60 s pass). Floor: `n` interpreters spawned at once, each
/// sleeping 300 ms, until all exited.
#[allow(clippy::too_many_arguments)]
pub async fn scaleout(
    nimbus: &Nimbus,
    lang: Lang,
    interpreter: &Path,
    dir: &Path,
    name: &str,
    n: usize,
    figs: &mut Figs,
) -> Result<()> {
    const SLEEP_MS: u64 = 300;
    let procs_before = crate::cpu::descendants(nimbus.pid()).len();
    nimbus
        .deploy(name, lang, &lang.ident_zip()?, n as u32)
        .await?;
    tokio::time::sleep(SETTLE).await;
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let reached: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let deadline = Duration::from_secs(60);
    let barrier = Arc::new(Barrier::new(n));
    let t0 = Arc::new(Mutex::new(None));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (seen, reached, barrier, t0) =
            (seen.clone(), reached.clone(), barrier.clone(), t0.clone());
        let path = format!("/fn/{name}/?sleep={SLEEP_MS}");
        let addr = nimbus.addr;
        tasks.spawn(async move {
            let mut conn = Conn::open(addr).await?;
            if barrier.wait().await.is_leader() {
                *t0.lock().unwrap() = Some(Instant::now());
            }
            let start = Instant::now();
            while reached.lock().unwrap().is_none() && start.elapsed() < deadline {
                let instance = conn.get_instance(&path).await?;
                let mut s = seen.lock().unwrap();
                s.insert(instance);
                if s.len() >= n {
                    reached.lock().unwrap().get_or_insert_with(Instant::now);
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("caller panicked")??;
    }
    let distinct = seen.lock().unwrap().len();
    let t0 = t0.lock().unwrap().take().context("no caller started")?;
    let Some(at) = *reached.lock().unwrap() else {
        nimbus.delete(name).await?;
        bail!("{name}: only {distinct} of {n} instances served within {deadline:?}");
    };
    nimbus.delete(name).await?;
    wait_for_teardown(nimbus, procs_before).await;
    let (floor, _) = targets::spawn_many(lang, interpreter, dir, n, Some(SLEEP_MS)).await?;
    figs.put("scaleout.ms", ms(at - t0));
    figs.put("scaleout.n", n as f64);
    figs.put("scaleout.floor_ms", ms(floor));
    Ok(())
}

/// Instances per GB: `k` concurrent calls (sleeping 1.5 s, so each needs its own
/// instance) to an identity function leave `k` idle instances; their memory is the growth
/// of the summed RSS and PSS of the server's descendants, and Nimbus's own cost the growth
/// of the server's RSS. Floor: `k` bare idle interpreters.
pub async fn density(
    nimbus: &Nimbus,
    lang: Lang,
    interpreter: &Path,
    dir: &Path,
    name: &str,
    k: usize,
    figs: &mut Figs,
) -> Result<()> {
    nimbus
        .deploy(name, lang, &lang.ident_zip()?, k as u32)
        .await?;
    tokio::time::sleep(SETTLE).await;
    let before = mem::of_descendants(nimbus.pid());
    let server_before = nimbus.own_mem();
    let (answers, _) = all_at_once(nimbus.addr, &format!("/fn/{name}/?sleep=1500"), k).await?;
    let mut instances = HashSet::new();
    for outcome in &answers {
        let (status, body) = outcome
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        if *status != StatusCode::OK {
            bail!(
                "{name} answered {status}: {}",
                String::from_utf8_lossy(body)
            );
        }
        instances.insert(client::instance_of(body).context("no instance in the answer")?);
    }
    // Let the instances settle into idle (their last response and log lines written).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = mem::of_descendants(nimbus.pid());
    let server_after = nimbus.own_mem();
    let pool = pool_instances(nimbus, name).await?;
    nimbus.delete(name).await?;
    wait_for_teardown(nimbus, before.procs as usize).await;
    let n = instances.len().max(1) as f64;
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / n / 1024.0;
    let (_, idle) = targets::spawn_many(lang, interpreter, dir, k, None).await?;
    // Let the interpreters finish starting (the ready line comes before idling).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let floor = idle
        .iter()
        .filter_map(|c| c.id())
        .map(mem::of_pid)
        .fold(Mem::default(), |a, b| a + b);
    drop(idle);
    let p = "density";
    figs.put(&format!("{p}.k"), k as f64);
    figs.put(&format!("{p}.instances"), instances.len() as f64);
    figs.put(&format!("{p}.pool_instances"), pool as f64);
    figs.put(
        &format!("{p}.procs_per_instance"),
        after.procs.saturating_sub(before.procs) as f64 / n,
    );
    figs.put(&format!("{p}.pss_mb"), per(before.pss_kb, after.pss_kb));
    figs.put(&format!("{p}.rss_mb"), per(before.rss_kb, after.rss_kb));
    // Signed: the server's RSS may also shrink meanwhile (memory freed and returned).
    figs.put(
        &format!("{p}.server_rss_mb"),
        (server_after.rss_kb as f64 - server_before.rss_kb as f64) / n / 1024.0,
    );
    let fk = floor.procs.max(1) as f64 * 1024.0;
    figs.put(&format!("{p}.floor_pss_mb"), floor.pss_kb as f64 / fk);
    figs.put(&format!("{p}.floor_rss_mb"), floor.rss_kb as f64 / fk);
    Ok(())
}

/// Settings of [`many`].
pub struct Many<'a> {
    pub count: usize,
    pub invoke: usize,
    pub langs: &'a [Lang],
    /// The warm function of each language (measured again with `count` deployed).
    pub warm: Vec<(Lang, String)>,
    pub warm_requests: usize,
    /// Whether the server keeps stem cells (each first invoke then waits for one).
    pub stem: bool,
}

/// A thousand deployed functions: deploys `count` hello functions (languages alternating)
/// from 4 clients, times listing them all (ListFunctions, every page; and the native
/// `GET /v1/functions`), invokes `invoke` of them chosen at random (fixed seed) for the
/// first time (cold), then measures the warm path again and round-robin over the invoked
/// ones. Leaves the functions deployed.
pub async fn many(nimbus: &Nimbus, m: Many<'_>, figs: &mut Figs) -> Result<()> {
    let zips: Vec<(Lang, Vec<u8>)> = m
        .langs
        .iter()
        .map(|&l| Ok((l, l.code_zip()?)))
        .collect::<Result<_>>()?;
    let name = |i: usize| format!("many-{i:05}");
    let t0 = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let zips = Arc::new(zips);
    let count = m.count;
    // Deploys run through 4 connections: the server admits 4 uploads at once.
    let nimbus_ref = nimbus;
    let worker = |_w: usize| {
        let next = next.clone();
        let zips = zips.clone();
        async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= count {
                    return anyhow::Ok(());
                }
                let (lang, zip) = &zips[i % zips.len()];
                nimbus_ref.deploy(&name(i), *lang, zip, 1).await?;
                let done = i + 1;
                if done.is_multiple_of(100) || done == count {
                    eprintln!(
                        "  deployed {done}/{count} functions [{:.1} s]",
                        t0.elapsed().as_secs_f64()
                    );
                }
            }
        }
    };
    let (a, b, c, d) = tokio::join!(worker(0), worker(1), worker(2), worker(3));
    a?;
    b?;
    c?;
    d?;
    let deploy_s = t0.elapsed().as_secs_f64();

    // ListFunctions, every page (the server's pages hold at most 50), 5 times.
    let mut lambda = Vec::new();
    let mut pages = 0;
    let mut listed = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let mut marker: Option<String> = None;
        let (mut n, mut p) = (0, 0);
        loop {
            let path = match &marker {
                Some(mk) => format!("/2015-03-31/functions/?Marker={mk}"),
                None => "/2015-03-31/functions/".to_string(),
            };
            let v = nimbus.get_json(&path).await?;
            n += v["Functions"].as_array().map_or(0, |a| a.len());
            p += 1;
            match v["NextMarker"].as_str() {
                Some(mk) => marker = Some(mk.to_string()),
                None => break,
            }
        }
        lambda.push(t.elapsed());
        (pages, listed) = (p, n);
    }
    if listed < count {
        bail!("ListFunctions listed {listed} functions, {count} were deployed");
    }
    let mut native = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let v = nimbus.get_json("/v1/functions").await?;
        native.push(t.elapsed());
        let n = v["functions"].as_array().map_or(0, |a| a.len());
        if n < count {
            bail!("GET /v1/functions listed {n} functions, {count} were deployed");
        }
    }

    // First invokes of `invoke` functions picked at random (a fixed-seed LCG: the same
    // picks every run).
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut picks = Vec::new();
    while picks.len() < m.invoke.min(count) {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let i = (seed >> 33) as usize % count;
        if !picks.contains(&i) {
            picks.push(i);
        }
    }
    let mut first: Vec<(Lang, Duration)> = Vec::new();
    for &i in &picks {
        let lang = zips[i % zips.len()].0;
        if m.stem {
            nimbus.wait_for_stem(lang.runtime()).await?;
        }
        first.push((
            lang,
            client::one_shot(nimbus.addr, &format!("/fn/{}/", name(i))).await?,
        ));
    }
    for &lang in m.langs {
        let s: Vec<Duration> = first.iter().filter(|f| f.0 == lang).map(|f| f.1).collect();
        if !s.is_empty() {
            figs.put_lat(
                &format!("many.first_invoke.{}", lang.name()),
                Latency::of(&s),
            );
        }
    }
    for (lang, warm_fn) in &m.warm {
        let s = client::sequential(
            nimbus.addr,
            &format!("/fn/{warm_fn}/"),
            200,
            m.warm_requests,
        )
        .await?;
        figs.put_lat(&format!("many.warm.{}", lang.name()), Latency::of(&s));
    }
    // Round-robin over the invoked (now warm) functions, one connection.
    let paths: Vec<String> = picks.iter().map(|&i| format!("/fn/{}/", name(i))).collect();
    let mut conn = Conn::open(nimbus.addr).await?;
    for p in &paths {
        conn.get(p).await?;
    }
    let mut rr = Vec::with_capacity(m.warm_requests);
    for j in 0..m.warm_requests {
        let t = Instant::now();
        conn.get(&paths[j % paths.len()]).await?;
        rr.push(t.elapsed());
    }
    figs.put("many.count", count as f64);
    figs.put("many.deploy_s", deploy_s);
    figs.put("many.list_pages", pages as f64);
    figs.put_lat("many.list", Latency::of(&lambda));
    figs.put_lat("many.native_list", Latency::of(&native));
    figs.put_lat("many.round_robin", Latency::of(&rr));
    figs.put("many.invoked", picks.len() as f64);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
