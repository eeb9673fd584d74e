//! The processes under test: a `nimbus serve` with a throwaway data dir, and the floor
//! servers. Both are killed when dropped, so an error anywhere leaves nothing running.

use crate::lang::Lang;
use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// A free loopback port (bound then released: another process could take it meanwhile,
/// which would make the start fail loudly, not measure the wrong thing).
pub fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running `nimbus serve`.
pub struct Nimbus {
    child: Child,
    pub addr: SocketAddr,
    http: reqwest::Client,
    log_path: PathBuf,
}

impl Nimbus {
    /// Starts `bin serve` on a free loopback port with its data dir under `dir`; instances
    /// never idle out during the benchmark. `extra`: further `serve` flags.
    pub async fn start(bin: &Path, dir: &Path, extra: &[&str]) -> Result<Nimbus> {
        Self::start_with_env(bin, dir, extra, &[]).await
    }

    /// [`Nimbus::start`] with further environment variables.
    pub async fn start_with_env(
        bin: &Path,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Nimbus> {
        std::fs::create_dir_all(dir)?;
        let addr = free_addr()?;
        let log_path = dir.join("nimbus.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--idle-timeout", "86400"])
            // The benchmark measures the serving path, not request signing.
            .args(["--auth", "off"])
            // Instances are counted at their configured 128 MB against the memory budget
            // (75% of the host by default): the 1,000-function scenario keeps more warm.
            .args(["--instance-memory-budget", "off"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut n = Nimbus {
            child,
            addr,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()?,
            log_path,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = n.http.get(n.url("/v1/health")).send().await {
                if r.status().is_success() {
                    return Ok(n);
                }
            }
            if let Some(status) = n.child.try_wait()? {
                bail!("nimbus exited with {status} during start:\n{}", n.log());
            }
            if Instant::now() > deadline {
                bail!("nimbus did not become healthy in 30 s:\n{}", n.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// A count for `runtime`'s stem cells as `GET /v1/health` reports them under
    /// `stem_cells` (`{enabled, reason, min, max, …, pools: [{runtime, idle, hits, …}]}`):
    /// the sum of every number under `key` in the parts that name the runtime (or its
    /// language: `node`, `python`), else in all of it. `None` when the server reports no
    /// `stem_cells`, or no `key` in it.
    pub async fn stem_count(&self, runtime: &str, key: &str) -> Result<Option<u64>> {
        let health = self.get_json("/v1/health").await?;
        let Some(stem) = health.get("stem_cells") else {
            return Ok(None);
        };
        Ok(stem_count(stem, runtime, key))
    }

    /// Idle stem cells for `runtime` (see [`Nimbus::stem_count`]).
    pub async fn stem_idle(&self, runtime: &str) -> Result<Option<u64>> {
        self.stem_count(runtime, "idle").await
    }

    /// `Err(reason)` when the server reports its stem cells disabled
    /// (`stem_cells.enabled: false`, e.g. a host where it cannot sandbox).
    pub async fn stem_enabled(&self) -> Result<std::result::Result<(), String>> {
        let health = self.get_json("/v1/health").await?;
        Ok(match health.get("stem_cells") {
            Some(s) if s["enabled"] == Value::Bool(false) => Err(format!(
                "the server reports stem cells disabled: {}",
                s["reason"].as_str().unwrap_or("no reason given")
            )),
            _ => Ok(()),
        })
    }

    /// Before a cold-start sample on a server with stem cells: waits until a stem cell of
    /// `runtime` is idle (at most 5 s), or 1 s when the server does not report stem cells.
    /// Returns whether an idle stem cell was seen.
    pub async fn wait_for_stem(&self, runtime: &str) -> Result<bool> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.stem_idle(runtime).await? {
                None => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    return Ok(false);
                }
                Some(n) if n > 0 => return Ok(true),
                Some(_) if Instant::now() > deadline => return Ok(false),
                Some(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Resident memory of the `nimbus` process itself.
    pub fn own_mem(&self) -> crate::mem::Mem {
        crate::mem::of_pid(self.pid())
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Deploys the hello function of `lang` as `name` with a function URL.
    pub async fn deploy(
        &self,
        name: &str,
        lang: Lang,
        code_zip: &[u8],
        concurrency: u32,
    ) -> Result<()> {
        self.deploy_config(name, hello_config(lang, concurrency), code_zip)
            .await
    }

    /// Deploys `code_zip` as `name` with the function configuration `config`.
    /// Deploys a Node.js 20 function `name` of 128 MB whose `index.js` is `index_js`
    /// (handler `index.handler`).
    pub async fn deploy_node(
        &self,
        name: &str,
        index_js: &str,
        timeout_s: u32,
        concurrency: u32,
    ) -> Result<()> {
        let config = json!({
            "runtime": "nodejs20.x", "handler": "index.handler", "memory_mb": 128,
            "timeout_s": timeout_s, "concurrency": concurrency,
        });
        let zip = crate::lang::zip_files(&[("index.js".into(), index_js.into())])?;
        self.deploy_config(name, config, &zip).await
    }

    pub async fn deploy_config(&self, name: &str, config: Value, code_zip: &[u8]) -> Result<()> {
        let body = json!({
            "config": config,
            "code_zip": base64::engine::general_purpose::STANDARD.encode(code_zip),
        });
        let r = self
            .http
            .put(self.url(&format!("/v1/functions/{name}")))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            let body: Value = r.json().await.unwrap_or(Value::Null);
            bail!("deploy {name} failed: {status} {body}");
        }
        Ok(())
    }

    /// Publishes `zip` as the next version of layer `name` (PublishLayerVersion).
    pub async fn publish_layer(&self, name: &str, runtime: &str, zip: &[u8]) -> Result<Value> {
        let body = json!({
            "Content": { "ZipFile": base64::engine::general_purpose::STANDARD.encode(zip) },
            "CompatibleRuntimes": [runtime],
        });
        let r = self
            .http
            .post(self.url(&format!("/2018-10-31/layers/{name}/versions")))
            .json(&body)
            .send()
            .await?;
        let status = r.status();
        if !status.is_success() {
            bail!(
                "publishing layer {name} failed: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        Ok(r.json().await?)
    }

    /// `GET path` on the native API, as JSON; fails on a non-2xx status.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let text = self.get_text(path).await?;
        serde_json::from_str(&text).with_context(|| format!("GET {path}: not JSON: {text}"))
    }

    /// `method path` with an optional JSON body: the status and the answer as JSON (`Null`
    /// when it is empty or not JSON), whatever the status.
    pub async fn request_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }

    /// A Step Functions call (`X-Amz-Target: AWSStepFunctions.OP`); fails on a non-200.
    pub async fn sfn(&self, op: &str, body: &Value) -> Result<Value> {
        let r = self
            .http
            .post(self.url("/"))
            .header("x-amz-target", format!("AWSStepFunctions.{op}"))
            .header("content-type", "application/x-amz-json-1.0")
            .body(body.to_string())
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status != reqwest::StatusCode::OK {
            bail!("{op} failed: {status} {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("{op}: not JSON: {text}"))
    }

    /// Invokes `name` synchronously with `payload` (Lambda's Invoke API); fails on a
    /// non-200 or a function error.
    pub async fn invoke(&self, name: &str, payload: &str) -> Result<()> {
        let r = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .body(payload.to_string())
            .send()
            .await?;
        let status = r.status();
        let failed = r.headers().contains_key("x-amz-function-error");
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() || failed {
            bail!("invoke {name} failed: {status} {text}");
        }
        Ok(())
    }

    /// `GET path`, its body as text; fails on a non-2xx status.
    pub async fn get_text(&self, path: &str) -> Result<String> {
        let r = self.http.get(self.url(path)).send().await?;
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if !status.is_success() {
            bail!("GET {path} failed: {status} {text}");
        }
        Ok(text)
    }

    /// Deletes `name`, which stops its instances.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let r = self
            .http
            .delete(self.url(&format!("/v1/functions/{name}")))
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("delete {name} failed: {}", r.status());
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL if it has not exited within 20 s.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(pid) = self.child.id() {
            let pid = nix::unistd::Pid::from_raw(pid as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(20), self.child.wait())
                .await
                .is_ok()
            {
                return Ok(());
            }
            eprintln!("nimbus did not exit 20 s after SIGTERM; killing it");
        }
        self.child.kill().await?;
        Ok(())
    }
}

/// A server the bench compares Nimbus with: the bare HTTP server in a function's language
/// answering the hello handler (the warm and throughput floor), or one of `--speed`'s
/// (the hyper floor, workerd).
pub struct Floor {
    child: Child,
    pub addr: SocketAddr,
}

impl Floor {
    /// Starts the floor server of `lang` from `dir` (see [`Lang::write_files`]).
    pub async fn start(lang: Lang, interpreter: &Path, dir: &Path) -> Result<Floor> {
        Floor::start_workers(lang, interpreter, dir, 1).await
    }

    /// [`Floor::start`] with `workers` processes sharing the port (`FLOOR_WORKERS`).
    pub async fn start_workers(
        lang: Lang,
        interpreter: &Path,
        dir: &Path,
        workers: usize,
    ) -> Result<Floor> {
        let addr = free_addr()?;
        let mut cmd = Command::new(interpreter);
        cmd.arg(lang.floor_server().0)
            .args([addr.port().to_string().as_str(), lang.handler()])
            .env("FLOOR_WORKERS", workers.to_string())
            .current_dir(dir);
        let name = format!("{} floor server ({workers} processes)", lang.name());
        Floor::spawn(
            cmd,
            addr,
            &name,
            &dir.join("floor.log"),
            Duration::from_secs(20),
        )
        .await
    }

    /// Starts `cmd` (which must listen on `addr`; its stderr goes to `log`, its stdout —
    /// the hello handler's log lines — nowhere) and waits until `GET /` answers the hello,
    /// at most `wait`.
    pub async fn spawn(
        mut cmd: Command,
        addr: SocketAddr,
        name: &str,
        log: &Path,
        wait: Duration,
    ) -> Result<Floor> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let deadline = Instant::now() + wait;
        loop {
            if crate::client::one_shot(addr, "/").await.is_ok() {
                return Ok(Floor { child, addr });
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                bail!("{name} exited with {status}:\n{log}");
            }
            if Instant::now() > deadline {
                bail!("{name} did not answer GET / in {wait:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// The configuration the benchmarks deploy the hello function of `lang` with: 128 MB,
/// 3 s, `GREETING`, a function URL.
pub fn hello_config(lang: Lang, concurrency: u32) -> Value {
    json!({
        "runtime": lang.runtime(), "handler": lang.handler(), "memory_mb": 128,
        "timeout_s": 3, "env": { "GREETING": "Hello" }, "concurrency": concurrency, "url": true,
    })
}

/// See [`Nimbus::stem_count`].
fn stem_count(stem: &Value, runtime: &str, key: &str) -> Option<u64> {
    let lang = if runtime.starts_with("node") {
        "node"
    } else {
        "python"
    };
    let mut parts = Vec::new();
    runtime_parts(stem, runtime, lang, &mut parts);
    if parts.is_empty() {
        return sum_key(stem, key);
    }
    parts
        .into_iter()
        .map(|p| sum_key(p, key))
        .fold(None, add_opt)
}

/// The parts of a `stem_cells` report about `runtime`: values under an object key naming
/// it (or its language), and objects whose `runtime` field does.
fn runtime_parts<'a>(v: &'a Value, runtime: &str, lang: &str, out: &mut Vec<&'a Value>) {
    let names = |s: &str| s == runtime || s.starts_with(lang);
    match v {
        Value::Object(m) => {
            if m.get("runtime").and_then(Value::as_str).is_some_and(names) {
                out.push(v);
                return;
            }
            for (k, x) in m {
                if names(k.as_str()) {
                    out.push(x);
                } else {
                    runtime_parts(x, runtime, lang, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| runtime_parts(x, runtime, lang, out)),
        _ => {}
    }
}

fn add_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
    }
}

/// Sum of every number under `key` in `v`; `None` when there is no such key.
fn sum_key(v: &Value, key: &str) -> Option<u64> {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v.as_u64() {
                Some(n) if k == key => Some(n),
                _ => sum_key(v, key),
            })
            .fold(None, add_opt),
        Value::Array(a) => a.iter().map(|x| sum_key(x, key)).fold(None, add_opt),
        _ => None,
    }
}

/// Does `bin serve` take `--stem-cells` (prewarmed runtimes)? `Err` explains why not.
pub fn stem_cell_support(bin: &Path) -> std::result::Result<(), String> {
    match std::process::Command::new(bin)
        .args(["serve", "--help"])
        .output()
    {
        Ok(out) if String::from_utf8_lossy(&out.stdout).contains("--stem-cells") => Ok(()),
        Ok(_) => Err("this nimbus has no --stem-cells flag".into()),
        Err(e) => Err(format!("cannot run {} serve --help: {e}", bin.display())),
    }
}

/// Wall time of spawning the interpreter that loads the handler, prints and exits (the
/// "interpreter loading the handler" floor).
pub fn load_and_exit(lang: Lang, interpreter: &Path, dir: &Path) -> Result<Duration> {
    spawn_and_exit(lang, interpreter, &lang.load_and_exit_args(), dir, true)
}

/// Wall time of a plain fork+exec of the interpreter doing nothing (`node -e 0`,
/// `python3 -c pass`) until it exits: the cold-start floor.
pub fn exec_noop(lang: Lang, interpreter: &Path, dir: &Path) -> Result<Duration> {
    spawn_and_exit(lang, interpreter, &lang.noop_args(), dir, false)
}

/// The same minimal environment Nimbus gives functions.
fn minimal_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    let path = std::env::var("PATH").unwrap_or_default();
    cmd.env_clear().envs([
        ("PATH", path.as_str()),
        ("LANG", "C.UTF-8"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ])
}

/// Wall time from spawn to exit of `interpreter args` in `dir`, with the minimal
/// environment Nimbus gives functions; checks it printed `ready` if `ready`.
fn spawn_and_exit(
    lang: Lang,
    interpreter: &Path,
    args: &[&str],
    dir: &Path,
    ready: bool,
) -> Result<Duration> {
    let mut cmd = std::process::Command::new(interpreter);
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    minimal_env(&mut cmd);
    let t0 = Instant::now();
    let out = cmd.output()?;
    let elapsed = t0.elapsed();
    if !out.status.success() || (ready && out.stdout != b"ready\n") {
        bail!(
            "{} {args:?} failed ({}): {}",
            lang.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}

/// `n` interpreters started at once, each printing `ready` and then sleeping `sleep_ms`
/// (`None`: until killed). With `Some`, returns the wall time until all have exited (the
/// scale-out floor) and no processes; with `None`, returns once all are ready, with the
/// running children (the density floor; killed when dropped).
pub async fn spawn_many(
    lang: Lang,
    interpreter: &Path,
    dir: &Path,
    n: usize,
    sleep_ms: Option<u64>,
) -> Result<(Duration, Vec<Child>)> {
    use tokio::io::AsyncBufReadExt;
    let args = lang.sleep_args(sleep_ms);
    let t0 = Instant::now();
    let mut children = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = std::process::Command::new(interpreter);
        cmd.args(&args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        minimal_env(&mut cmd);
        let mut cmd = Command::from(cmd);
        cmd.kill_on_drop(true);
        children.push(cmd.spawn()?);
    }
    for c in &mut children {
        let out = c.stdout.take().context("no stdout")?;
        let mut line = String::new();
        tokio::io::BufReader::new(out).read_line(&mut line).await?;
        if line.trim() != "ready" {
            bail!("{} {args:?} did not print ready", lang.name());
        }
    }
    if sleep_ms.is_none() {
        return Ok((t0.elapsed(), children));
    }
    for c in &mut children {
        let status = c.wait().await?;
        if !status.success() {
            bail!("{} {args:?} failed: {status}", lang.name());
        }
    }
    Ok((t0.elapsed(), Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_stem_cells_of_a_runtime() {
        // The shape the stem-cell branch reports.
        let v = json!({
            "enabled": true, "min": 1, "max": 8, "ttl_s": 600, "memory_bytes": 1, "memory_budget_bytes": 2,
            "pools": [
                { "runtime": "node", "network": "outbound", "ephemeral_storage_mb": 512, "idle": 2, "hits": 5, "misses": 1 },
                { "runtime": "node", "network": "none", "ephemeral_storage_mb": 512, "idle": 1, "hits": 0, "misses": 0 },
                { "runtime": "python", "network": "outbound", "ephemeral_storage_mb": 512, "idle": 0, "hits": 7, "misses": 2 },
            ],
        });
        assert_eq!(stem_count(&v, "nodejs20.x", "idle"), Some(3));
        assert_eq!(stem_count(&v, "nodejs20.x", "hits"), Some(5));
        assert_eq!(stem_count(&v, "python3.11", "idle"), Some(0));
        assert_eq!(stem_count(&v, "python3.11", "hits"), Some(7));
        // Keyed by runtime instead.
        let v = json!({ "nodejs20.x": { "idle": 2, "busy": 1 }, "python3.11": { "idle": 4 } });
        assert_eq!(stem_count(&v, "nodejs20.x", "idle"), Some(2));
        assert_eq!(stem_count(&v, "python3.11", "idle"), Some(4));
        // No runtime named: everything; no such key: None.
        assert_eq!(
            stem_count(
                &json!({ "idle": 1, "x": { "idle": 4 } }),
                "python3.11",
                "idle"
            ),
            Some(5)
        );
        assert_eq!(
            stem_count(&json!({ "min": 1, "max": 4 }), "nodejs20.x", "idle"),
            None
        );
    }
}
