//! Clusters of `nimbus serve` processes for the multi-node tests: node `i` listens on
//! `127.0.0.i` (a loopback address of its own), all nodes share one PostgreSQL schema
//! (`--database`, a [`TestDb`]), the local NATS (`--nats`) and one master key.

use crate::{free_port_on, nimbus_bin, send_signed, zip_files, Credentials};
use base64::Engine;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

pub use nimbus_pg::testing::TestDb;

/// The NATS server of the cluster tests.
pub const NATS: &str = "nats://127.0.0.1:4222";

/// One node.
pub struct Node {
    pub id: String,
    /// `127.0.0.N`.
    pub ip: String,
    pub port: u16,
    pub child: Option<Child>,
    pub data_dir: tempfile::TempDir,
    /// The network namespace it runs in (`ip netns exec`), `None`: the host's.
    pub netns: Option<String>,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log_path: PathBuf,
    pub http: reqwest::blocking::Client,
}

/// Nodes on one database.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub db: TestDb,
    /// `NIMBUS_MASTER_KEY` of every node.
    pub master_key: String,
    /// The nodes' `--database` (the [`TestDb`]'s schema unless the test gave another).
    pub database: String,
    /// The nodes' `--nats`.
    pub nats: String,
}

impl Cluster {
    /// `n` nodes `n1…nN` with `extra` serve flags (`--auth off` unless they set `--auth`).
    pub fn start(n: usize, extra: &[&str]) -> Cluster {
        Self::start_with_env(n, extra, &[])
    }

    pub fn start_with_env(n: usize, extra: &[&str], env: &[(&str, &str)]) -> Cluster {
        Self::start_on(n, extra, env, None, None)
    }

    /// As [`Cluster::start_with_env`], on `database` instead of a fresh [`TestDb`] schema
    /// and through `nats` instead of [`NATS`] (e.g. a private server, a proxy).
    pub fn start_on(
        n: usize,
        extra: &[&str],
        env: &[(&str, &str)],
        database: Option<&str>,
        nats: Option<&str>,
    ) -> Cluster {
        crate::brokers::require("NATS", "127.0.0.1:4222", "the machine's NATS service");
        let db = TestDb::new("cluster");
        let master_key = base64::engine::general_purpose::STANDARD.encode(rand_bytes());
        let mut cluster = Cluster {
            nodes: Vec::new(),
            database: database.map_or_else(|| db.url.clone(), str::to_string),
            nats: nats.unwrap_or(NATS).to_string(),
            db,
            master_key,
        };
        for i in 1..=n {
            let node = cluster.node_for(i, extra, env);
            cluster.nodes.push(node);
        }
        // Spawned together (they start in parallel), then waited for.
        for node in &mut cluster.nodes {
            node.spawn();
        }
        for node in &mut cluster.nodes {
            node.wait_healthy();
        }
        cluster
    }

    /// A node `i` (address `127.0.0.i`) of this cluster with id `id` and `extra` flags,
    /// not started ([`Node::start`]).
    pub fn spare_node(&self, i: usize, id: &str, extra: &[&str]) -> Node {
        let mut node = self.node_for(i, extra, &[]);
        let at = node.args.iter().position(|a| a == "--node-id").unwrap();
        node.args[at + 1] = id.to_string();
        node.id = id.to_string();
        node
    }

    fn node_for(&self, i: usize, extra: &[&str], env: &[(&str, &str)]) -> Node {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !args
            .iter()
            .any(|a| a == "--auth" || a.starts_with("--auth="))
        {
            args.extend(["--auth".into(), "off".into()]);
        }
        args.extend([
            "--database".into(),
            self.database.clone(),
            "--nats".into(),
            self.nats.clone(),
            "--node-id".into(),
            format!("n{i}"),
        ]);
        let mut envs: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        envs.push(("NIMBUS_MASTER_KEY".into(), self.master_key.clone()));
        let data_dir = tempfile::tempdir().unwrap();
        let log_path = data_dir.path().join("server.log");
        let ip = format!("127.0.0.{i}");
        Node {
            id: format!("n{i}"),
            port: free_port_on(&ip),
            ip,
            child: None,
            data_dir,
            netns: None,
            args,
            env: envs,
            log_path,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// Node `i` (1-based).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i - 1]
    }

    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i - 1]
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("===== {} =====\n{}", n.id, n.log()))
            .collect()
    }
}

fn rand_bytes() -> [u8; 32] {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .expect("read /dev/urandom");
    b
}

impl Node {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(nimbus_bin());
                c
            }
            None => Command::new(nimbus_bin()),
        };
        let child = cmd
            .arg("serve")
            .args(["--listen", &format!("{}:{}", self.ip, self.port)])
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .args(&self.args)
            .env("RUST_LOG", "info,nimbus_cluster::changes=debug")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn nimbus");
        self.child = Some(child);
    }

    fn wait_healthy(&mut self) {
        let (url, log, who) = (
            self.url("/v1/health"),
            self.log_path.clone(),
            format!("node {}", self.id),
        );
        crate::wait_healthy(
            &self.http,
            &url,
            self.child.as_mut().unwrap(),
            &who,
            || std::fs::read_to_string(&log).unwrap_or_default(),
            Duration::from_secs(30),
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn base(&self) -> String {
        format!("http://{}:{}", self.ip, self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// Uses `url` as its `--database` from its next start (e.g. through a proxy a test
    /// can cut).
    pub fn set_database(&mut self, url: &str) {
        self.set_flag("--database", url);
    }

    /// Gives `flag` (one the node has, e.g. `--nats`) `value` from its next start.
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        let i = self
            .args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("the node has no {flag}"));
        self.args[i + 1] = value.to_string();
    }

    /// Sets (`Some`) or removes (`None`) an environment variable from its next start.
    pub fn set_env(&mut self, key: &str, value: Option<&str>) {
        self.env.retain(|(k, _)| k != key);
        if let Some(v) = value {
            self.env.push((key.to_string(), v.to_string()));
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts `nimbus serve` without waiting for it.
    pub fn start(&mut self) {
        self.spawn();
    }

    /// Waits up to `limit` for the process to exit on its own; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t = std::time::Instant::now();
        while t.elapsed() < limit {
            if let Some(st) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// `kill -9` the node.
    pub fn kill9(&mut self) {
        crate::kill9(&mut self.child);
    }

    /// Starts it again (same id, address and data dir) and waits until it is healthy.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
        self.wait_healthy();
    }

    /// SIGTERM, then waits for the exit (at most 60 s).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let who = format!("node {}", self.id);
        crate::terminate(
            self.child.take().expect("running"),
            &who,
            Duration::from_secs(60),
        )
    }

    /// Deploys `files` as function `name` through the native API; the reply.
    pub fn deploy(&self, name: &str, config: Value, files: &[(&str, &str)]) -> Value {
        let body = json!({
            "config": config,
            "code_zip": base64::engine::general_purpose::STANDARD.encode(zip_files(files)),
        });
        let r = self
            .http
            .put(self.url(&format!("/v1/functions/{name}")))
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().unwrap_or(Value::Null);
        assert!(
            status < 300,
            "deploy {name} on {}: {status} {v}\n{}",
            self.id,
            self.log()
        );
        v
    }

    /// A request signed by `creds` (SigV4, service `lambda`): status and JSON reply.
    pub fn signed(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        creds: &Credentials,
    ) -> (u16, Value) {
        let host = format!("{}:{}", self.ip, self.port);
        let r = send_signed(
            &self.http,
            &host,
            method,
            path,
            body,
            &[],
            creds,
            "lambda",
            None,
        );
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// The bootstrap admin key this node wrote, if it was the one that made it.
    pub fn bootstrap_credentials(&self) -> Option<Credentials> {
        let text = std::fs::read_to_string(self.data_dir.path().join("data/credentials")).ok()?;
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|l| l.trim().strip_prefix('='))
                .map(|v| v.trim().to_string())
        };
        Some(Credentials {
            id: field("aws_access_key_id")?,
            secret: field("aws_secret_access_key")?,
        })
    }

    /// A synchronous invocation through the Lambda API: status and body.
    pub fn invoke(&self, name: &str, payload: &str) -> (u16, String) {
        let r = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .body(payload.to_string())
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap_or_default())
    }

    /// A request with a JSON body (or none); status and JSON reply.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method.parse().unwrap(), self.url(path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}
