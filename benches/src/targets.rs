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
    /// never idle out during the benchmark.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Nimbus> {
        let addr = free_addr()?;
        let log_path = dir.join("nimbus.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(bin)
            .arg("serve")
            .args(["--listen", &addr.to_string(), "--idle-timeout", "86400"])
            // The benchmark measures the serving path, not request signing.
            .args(["--auth", "off"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env_remove("RUST_LOG")
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
        let config = json!({
            "runtime": lang.runtime(), "handler": lang.handler(), "memory_mb": 128,
            "timeout_s": 3, "env": { "GREETING": "Hello" }, "concurrency": concurrency, "url": true,
        });
        self.deploy_config(name, config, code_zip).await
    }

    /// Deploys `code_zip` as `name` with the function configuration `config`.
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

    /// `GET path` on the native API, as JSON; fails on a non-2xx status.
    pub async fn get_json(&self, path: &str) -> Result<Value> {
        let r = self.http.get(self.url(path)).send().await?;
        let status = r.status();
        if !status.is_success() {
            bail!(
                "GET {path} failed: {status} {}",
                r.text().await.unwrap_or_default()
            );
        }
        Ok(r.json().await?)
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

/// A bare HTTP server in `lang` answering the hello handler (the warm and throughput floor).
pub struct Floor {
    child: Child,
    pub addr: SocketAddr,
}

impl Floor {
    /// Starts the floor server of `lang` from `dir` (see [`Lang::write_files`]).
    pub async fn start(lang: Lang, interpreter: &Path, dir: &Path) -> Result<Floor> {
        let addr = free_addr()?;
        let stderr = std::fs::File::create(dir.join("floor.log"))?;
        let mut child = Command::new(interpreter)
            .arg(lang.floor_server().0)
            .args([addr.port().to_string().as_str(), lang.handler()])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", interpreter.display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if crate::client::one_shot(addr, "/").await.is_ok() {
                return Ok(Floor { child, addr });
            }
            if let Some(status) = child.try_wait()? {
                let log = std::fs::read_to_string(dir.join("floor.log")).unwrap_or_default();
                bail!("{} floor server exited with {status}:\n{log}", lang.name());
            }
            if Instant::now() > deadline {
                bail!("{} floor server did not answer in 20 s", lang.name());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Floor {
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }
}

/// Wall time of spawning the interpreter that loads the handler, prints and exits (the
/// cold-start floor). Runs with the same kind of minimal environment Nimbus gives functions.
pub fn load_and_exit(lang: Lang, interpreter: &Path, dir: &Path) -> Result<Duration> {
    let path = std::env::var("PATH").unwrap_or_default();
    let t0 = Instant::now();
    let out = std::process::Command::new(interpreter)
        .args(lang.load_and_exit_args())
        .current_dir(dir)
        .env_clear()
        .envs([
            ("PATH", path.as_str()),
            ("LANG", "C.UTF-8"),
            ("PYTHONDONTWRITEBYTECODE", "1"),
        ])
        .stdin(Stdio::null())
        .output()?;
    let elapsed = t0.elapsed();
    if !out.status.success() || out.stdout != b"ready\n" {
        bail!(
            "{} load-and-exit failed ({}): {}",
            lang.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(elapsed)
}
