//! Support for the end-to-end tests: start the real `nimbus` binary on a free port with
//! its own data dir, deploy functions through its API, invoke them, kill it.

use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::{json, Value};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod brokers;
pub mod browser;
pub mod cluster;
pub mod components;
pub mod netns;
pub mod pg_instance;
pub mod proxy;
pub mod python;

/// The PostgreSQL server the tests use (`NIMBUS_TEST_PG`, default
/// `postgres://postgres@127.0.0.1:5432/test`).
pub use nimbus_pg::testing::url as test_pg_url;

/// The `nimbus` binary built next to this test executable (`target/<profile>/nimbus`).
pub fn nimbus_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NIMBUS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test exe path");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("nimbus");
    assert!(
        bin.exists(),
        "{} not found: build it first with `cargo build -p nimbus-cli`",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    free_port_on("127.0.0.1")
}

/// A port free on `ip` now. Ask on the address the server will listen on:
/// a port free on 127.0.0.1 may be taken on 127.0.0.3 by another test's node.
pub fn free_port_on(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `nimbus serve`.
pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub data_dir: tempfile::TempDir,
    pub args: Vec<String>,
    /// Extra environment variables for the server process.
    pub env: Vec<(String, String)>,
    pub http: reqwest::blocking::Client,
    log_path: PathBuf,
    /// The bootstrap admin key of a server started with [`Server::start_with_auth`].
    pub credentials: Option<Credentials>,
    /// With `NIMBUS_TEST_BACKEND=postgres`, the server's own schema in the local
    /// PostgreSQL (`--database`), kept across restarts and dropped with the server.
    pub database: Option<nimbus_pg::testing::TestDb>,
}

/// The store backend the servers of the tests use: `NIMBUS_TEST_BACKEND=postgres` runs
/// every `nimbus serve` of the suite on PostgreSQL (a fresh schema each), anything else
/// (or unset) on SQLite in its data directory.
pub fn test_backend_is_postgres() -> bool {
    match std::env::var("NIMBUS_TEST_BACKEND").as_deref() {
        Ok("postgres") => true,
        Ok("") | Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("NIMBUS_TEST_BACKEND={other:?}: expected sqlite or postgres"),
    }
}

/// Sends `method path_and_query` to `http://host` signed with SigV4 (`service`, region
/// us-east-1) by `creds` at time `at` (now when `None`).
#[allow(clippy::too_many_arguments)]
pub fn send_signed(
    http: &reqwest::blocking::Client,
    host: &str,
    method: &str,
    path_and_query: &str,
    body: &[u8],
    headers: &[(&str, &str)],
    creds: &Credentials,
    service: &str,
    at: Option<time::OffsetDateTime>,
) -> reqwest::blocking::Response {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("host".into(), host.to_string()));
    let hash = nimbus_auth::sigv4::payload_hash(body);
    let req = nimbus_auth::sigv4::Request {
        method,
        path,
        query,
        headers: &all,
        payload_sha256: &hash,
    };
    let added = nimbus_auth::sigv4::sign(
        &req,
        &creds.id,
        &creds.secret,
        "us-east-1",
        service,
        at.unwrap_or_else(time::OffsetDateTime::now_utc),
    );
    let mut rb = http
        .request(
            method.parse().unwrap(),
            format!("http://{host}{path_and_query}"),
        )
        .body(body.to_vec());
    for (k, v) in all.iter().filter(|(k, _)| k != "host") {
        rb = rb.header(k.as_str(), v.as_str());
    }
    for (k, v) in added {
        rb = rb.header(k, v);
    }
    rb.send().unwrap()
}

/// Waits until `health_url` answers 200 (at most `limit`); panics with the log when the
/// process (`who` in messages) exits first or never gets there.
pub fn wait_healthy(
    http: &reqwest::blocking::Client,
    health_url: &str,
    child: &mut Child,
    who: &str,
    log: impl Fn() -> String,
    limit: Duration,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(r) = http.get(health_url).send() {
            if r.status().is_success() {
                return;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{who} exited with {status} during start:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{who} did not become healthy:\n{}", log());
}

/// `kill -9` the process in `child`, if any, and reaps it.
pub fn kill9(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}

/// Sends SIGTERM to `child` (`who` in messages) and waits at most `limit` for its exit.
pub fn terminate(mut c: Child, who: &str, limit: Duration) -> std::process::ExitStatus {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{who} did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An access key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub id: String,
    pub secret: String,
}

impl Server {
    /// Starts a server with extra `serve` flags (e.g. `["--idle-timeout", "1"]`), with
    /// `--auth off` unless the flags say otherwise (most tests exercise an open API).
    pub fn start(extra: &[&str]) -> Server {
        Self::start_with_env(extra, &[])
    }

    /// Starts a server with extra `serve` flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !args
            .iter()
            .any(|a| a == "--auth" || a.starts_with("--auth="))
        {
            args.extend(["--auth".to_string(), "off".to_string()]);
        }
        let data_dir = tempfile::tempdir().unwrap();
        let log_path = data_dir.path().join("server.log");
        let mut s = Server {
            child: None,
            port: free_port(),
            data_dir,
            args,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            log_path,
            credentials: None,
            database: test_backend_is_postgres().then(|| {
                brokers::require("NATS", "127.0.0.1:4222", "the machine's NATS service");
                nimbus_pg::testing::TestDb::new("e2e")
            }),
        };
        s.spawn();
        s
    }

    /// Starts a server whose instances are NOT sandboxed (`--isolation none`), for tests
    /// whose functions report through host files the test reads (a sandboxed instance sees
    /// neither the host's /tmp nor any other host path: tests/e2e/escape.rs checks that).
    pub fn start_unsandboxed(extra: &[&str]) -> Server {
        let mut args = vec!["--isolation", "none"];
        args.extend_from_slice(extra);
        Server::start(&args)
    }

    /// Starts a server with `--auth on` and reads the bootstrap admin key it wrote to
    /// `DATA_DIR/credentials`.
    pub fn start_with_auth(extra: &[&str]) -> Server {
        let mut args = vec!["--auth", "on"];
        args.extend_from_slice(extra);
        let mut s = Server::start(&args);
        let text = std::fs::read_to_string(s.data_path().join("credentials"))
            .unwrap_or_else(|e| panic!("no credentials file ({e}):\n{}", s.log()));
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k))
                .and_then(|l| l.trim().strip_prefix('='))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {k} in credentials:\n{text}"))
        };
        s.credentials = Some(Credentials {
            id: field("aws_access_key_id"),
            secret: field("aws_secret_access_key"),
        });
        s
    }

    /// The `serve` flags that put another server on this one's stores: `--database URL`
    /// and the local NATS (`--nats`, as a cluster node has) on PostgreSQL
    /// (`NIMBUS_TEST_BACKEND=postgres`), nothing on SQLite (the stores are in the data dir).
    pub fn database_args(&self) -> Vec<String> {
        self.database
            .iter()
            .flat_map(|db| {
                [
                    "--database".to_string(),
                    db.url.clone(),
                    "--nats".to_string(),
                    crate::cluster::NATS.to_string(),
                ]
            })
            .collect()
    }

    /// On PostgreSQL, the tables of the server's schema with a row holding `needle`, as
    /// text or in a `bytea` column (hex); empty on SQLite.
    pub fn database_tables_containing(&self, needle: &str) -> Vec<String> {
        let Some(db) = &self.database else {
            return Vec::new();
        };
        let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
        let needle = needle.to_string();
        db.pg
            .with(async |c| {
                let tables: Vec<String> = c
                    .query(
                        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1",
                        &[],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect();
                let mut hits = Vec::new();
                for t in tables {
                    let sql = format!(
                        "SELECT count(*) FROM \"{t}\" x WHERE strpos(x::text, $1) > 0 OR strpos(x::text, $2) > 0"
                    );
                    let n: i64 = c.query_one(&sql, &[&needle, &hex]).await?.get(0);
                    if n > 0 {
                        hits.push(format!("{t} ({n} rows)"));
                    }
                }
                Ok(hits)
            })
            .expect("search the server's PostgreSQL schema")
    }

    /// The server's data dir.
    pub fn data_path(&self) -> PathBuf {
        self.data_dir.path().join("data")
    }

    /// The bootstrap admin key (servers started with [`Server::start_with_auth`]).
    pub fn admin(&self) -> Credentials {
        self.credentials.clone().expect("started with auth")
    }

    /// Sends a request signed with SigV4 (`service`, region us-east-1) by `creds` at time
    /// `at` (now when `None`).
    #[allow(clippy::too_many_arguments)]
    pub fn signed_at(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        headers: &[(&str, &str)],
        creds: &Credentials,
        service: &str,
        at: Option<time::OffsetDateTime>,
    ) -> reqwest::blocking::Response {
        send_signed(
            &self.http,
            &format!("127.0.0.1:{}", self.port),
            method,
            path_and_query,
            body,
            headers,
            creds,
            service,
            at,
        )
    }

    /// [`Server::signed_at`] now, service `lambda`.
    pub fn signed(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
        creds: &Credentials,
    ) -> reqwest::blocking::Response {
        self.signed_at(method, path_and_query, body, &[], creds, "lambda", None)
    }

    /// Creates an access key named `name` with `policy` (signed by the admin key); returns
    /// its credentials.
    pub fn create_key(&self, name: &str, policy: Value) -> Credentials {
        let body = serde_json::json!({"name": name, "policy": policy}).to_string();
        let r = self.signed("POST", "/v1/keys", body.as_bytes(), &self.admin());
        assert_eq!(r.status().as_u16(), 201, "creating key {name}");
        let v: Value = r.json().unwrap();
        Credentials {
            id: v["AccessKeyId"].as_str().unwrap().to_string(),
            secret: v["SecretAccessKey"].as_str().unwrap().to_string(),
        }
    }

    /// Deploys through the native API with a signed request; returns status and reply.
    pub fn deploy_signed(
        &self,
        name: &str,
        config: Value,
        files: &[(&str, &str)],
        creds: &Credentials,
    ) -> (u16, Value) {
        let body = json!({ "config": config, "code_zip": base64::engine::general_purpose::STANDARD.encode(zip_files(files)) });
        let r = self.signed_at(
            "PUT",
            &format!("/v1/functions/{name}"),
            body.to_string().as_bytes(),
            &[("content-type", "application/json")],
            creds,
            "lambda",
            None,
        );
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap();
        let child = Command::new(nimbus_bin())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.data_dir.path().join("data"))
            .args(self.database_args())
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn nimbus");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let (url, log) = (self.url("/v1/health"), self.log_path.clone());
        wait_healthy(
            &self.http,
            &url,
            self.child.as_mut().unwrap(),
            "nimbus",
            || std::fs::read_to_string(&log).unwrap_or_default(),
            Duration::from_secs(20),
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base())
    }

    /// The server process's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server runs").id()
    }

    /// `kill -9` the server.
    pub fn kill9(&mut self) {
        kill9(&mut self.child);
    }

    /// Starts the server again on the same port and data dir.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        terminate(
            self.child.take().expect("running"),
            "server",
            Duration::from_secs(40),
        )
    }

    /// Runs the CLI against this server (with the bootstrap admin key when the server has
    /// auth on).
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(nimbus_bin());
        cmd.args(args)
            .env("NIMBUS_ENDPOINT", self.base())
            .stdin(Stdio::null());
        if let Some(c) = &self.credentials {
            cmd.env("NIMBUS_ACCESS_KEY_ID", &c.id)
                .env("NIMBUS_SECRET_ACCESS_KEY", &c.secret);
        }
        cmd.output().expect("run nimbus cli")
    }

    /// Deploys `files` as function `name` through the native API; returns the reply.
    pub fn deploy(&self, name: &str, config: Value, files: &[(&str, &str)]) -> Value {
        let (status, body) = self.deploy_zip(name, config, &zip_files(files));
        assert!(
            status < 300,
            "deploy {name} failed: {status} {body}\n{}",
            self.log()
        );
        body
    }

    /// Deploys raw zip bytes; returns status and JSON reply (success or error).
    pub fn deploy_zip(&self, name: &str, config: Value, zip: &[u8]) -> (u16, Value) {
        let body = json!({ "config": config, "code_zip": base64::engine::general_purpose::STANDARD.encode(zip) });
        let r = self
            .http
            .put(self.url(&format!("/v1/functions/{name}")))
            .json(&body)
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// Lambda's CreateFunction of a Python function (`app.py` holding `code`, handler
    /// `app.handler`) with the fields of `extra` added; status and JSON reply.
    pub fn create_python_function(&self, name: &str, code: &str, extra: Value) -> (u16, Value) {
        let zip = zip_files(&[("app.py", code)]);
        let mut body = json!({
            "FunctionName": name,
            "Runtime": "python3.11",
            "Role": "arn:aws:iam::000000000000:role/r",
            "Handler": "app.handler",
            "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
        });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        let r = self
            .http
            .post(self.url("/2015-03-31/functions"))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }

    /// Invokes through the Lambda API; returns the response.
    pub fn invoke(&self, name: &str, payload: &str) -> Invoked {
        self.invoke_with(name, payload.as_bytes().to_vec(), &[])
    }

    pub fn invoke_with(&self, name: &str, payload: Vec<u8>, headers: &[(&str, &str)]) -> Invoked {
        let mut req = self
            .http
            .post(self.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .body(payload);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let t0 = Instant::now();
        let r = req.send().unwrap();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().unwrap();
        Invoked {
            status,
            headers,
            body,
            elapsed: t0.elapsed(),
        }
    }

    /// Checks an `examples/hello-*` function through its function URL (`?name=ada`) and its
    /// route (`ROUTE_PREFIX/bob`): each greets in `language` ("Hello, ada from Go!").
    pub fn check_hello_example(&self, function: &str, route_prefix: &str, language: &str) {
        let resp = self
            .http
            .get(self.url(&format!("/fn/{function}/?name=ada")))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/json"
        );
        let b: Value = resp.json().unwrap();
        assert_eq!(b["message"], format!("Hello, ada from {language}!"));
        assert_eq!(b["method"], "GET");
        let path = format!("{route_prefix}/bob");
        let b: Value = self
            .http
            .get(self.url(&path))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(b["message"], format!("Hello, bob from {language}!"));
        assert_eq!(b["path"], path.as_str());
    }

    pub fn healthy(&self) -> bool {
        self.http
            .get(self.url("/v1/health"))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    /// PUT `body` as JSON; the status and the JSON answer.
    pub fn put_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self.http.put(self.url(path)).json(body).send().unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    /// A Step Functions call (`POST /`, `X-Amz-Target: AWSStepFunctions.OP`): the status
    /// and the JSON answer.
    pub fn sfn(&self, op: &str, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(self.url("/"))
            .header("x-amz-target", format!("AWSStepFunctions.{op}"))
            .header("content-type", "application/x-amz-json-1.0")
            .body(body.to_string())
            .send()
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().unwrap_or(Value::Null))
    }

    pub fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self.http.get(self.url(path)).send().unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A Lambda Invoke response.
#[derive(Debug)]
pub struct Invoked {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    pub elapsed: Duration,
}

impl Invoked {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    pub fn function_error(&self) -> bool {
        self.headers.contains_key("x-amz-function-error")
    }
    /// Asserts a successful invocation and returns its JSON result.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.body);
        assert!(!self.function_error(), "function error: {}", self.body);
        self.json()
    }
}

/// A zip of `(path, contents)` entries; paths ending in `bootstrap` are executable.
pub fn zip_files(files: &[(&str, &str)]) -> Vec<u8> {
    zip_entries(files.iter().map(|(p, c)| (*p, c.as_bytes())))
}

/// [`zip_files`] for any contents (compiled extensions, vendored packages).
pub fn zip_entries<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (path, contents) in files {
            let mode = if path.ends_with("bootstrap") {
                0o755
            } else {
                0o644
            };
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(mode);
            w.start_file(path, opts).unwrap();
            w.write_all(contents).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

/// Writes `files` under `dir` (bootstraps executable).
pub fn write_files(dir: &Path, files: &[(&str, &str)]) {
    for (path, contents) in files {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, contents).unwrap();
        if path.ends_with("bootstrap") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// The server's stem cell pool of `runtime` (`node`, `python`) for the default network
/// policy, from `/v1/health`.
pub fn stem_pool(s: &Server, runtime: &str) -> Value {
    let (status, h) = s.get_json("/v1/health");
    assert_eq!(status, 200, "{h}");
    h["stem_cells"]["pools"]
        .as_array()
        .unwrap_or_else(|| panic!("no stem cell pools in /v1/health: {h}"))
        .iter()
        .find(|p| p["runtime"] == runtime && p["network"] == "outbound")
        .cloned()
        .unwrap_or_else(|| panic!("no {runtime} stem cell pool: {h}"))
}

/// Waits until the server holds an idle stem cell of `runtime`, so that the next cold
/// start of such a function is specialised from one.
pub fn wait_for_stem_cells(s: &Server, runtime: &str) {
    assert!(
        eventually(Duration::from_secs(30), || stem_pool(s, runtime)["idle"]
            .as_u64()
            .unwrap_or(0)
            >= 1),
        "no idle {runtime} stem cell: {}\n{}",
        stem_pool(s, runtime),
        s.log()
    );
}

/// The live host processes of `function`'s instances (whose environment names it), with
/// each one's log stream name (its instance's identity).
pub fn instance_processes(function: &str) -> Vec<(u64, String)> {
    let fn_var = format!("AWS_LAMBDA_FUNCTION_NAME={function}");
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        if !pid_alive(pid) {
            continue;
        }
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&fn_var) {
            continue;
        }
        if let Some(stream) = vars
            .iter()
            .find_map(|v| v.strip_prefix("AWS_LAMBDA_LOG_STREAM_NAME="))
        {
            out.push((pid, stream.to_string()));
        }
    }
    out
}

/// Whether a process with this pid is alive (and not a zombie).
pub fn pid_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s.split_whitespace().nth(2).is_none_or(|st| st != "Z"),
        Err(_) => false,
    }
}

/// Whether an instance is running: a host process whose environment holds the instance's
/// id, the end of its log stream name (`AWS_LAMBDA_LOG_STREAM_NAME`, unique per instance
/// as on Lambda).
/// Sandboxed instances live in their own PID and network namespaces, so neither their pid
/// nor their Runtime API address (127.0.0.1:9001 in every instance) tells them apart;
/// functions report the stream name (see [`INSTANCE_ID_NODE`], [`INSTANCE_ID_PY`]).
pub fn instance_alive(id: &str) -> bool {
    // The stream name ends in `]INSTANCE-ID`; every instance's process starts with
    // `_NIMBUS_INSTANCE_ID` in its environment (a stem cell learns its function's
    // environment, stream name included, only after it started: /proc does not show that).
    let iid = id.rsplit(']').next().unwrap_or(id);
    let needle = format!("_NIMBUS_INSTANCE_ID={iid}\0");
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .any(|e| {
            let pid: u64 = e.file_name().to_string_lossy().parse().unwrap_or(0);
            pid_alive(pid)
                && std::fs::read(e.path().join("environ"))
                    .map(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
                    .unwrap_or(false)
        })
}

/// A Node expression: this instance's identity (its log stream name), unique among
/// instances.
pub const INSTANCE_ID_NODE: &str = "process.env.AWS_LAMBDA_LOG_STREAM_NAME";
/// The same in Python (needs `import os`).
pub const INSTANCE_ID_PY: &str = "os.environ['AWS_LAMBDA_LOG_STREAM_NAME']";

pub fn node_cfg(handler: &str) -> Value {
    json!({ "runtime": "nodejs20.x", "handler": handler })
}

pub fn python_cfg(handler: &str) -> Value {
    json!({ "runtime": "python3.11", "handler": handler })
}

/// Fails unless `out` succeeded; returns stdout.
pub fn cli_ok(out: &Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "cli failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout.clone()).context("stdout not utf-8")
}

/// The repository root (for examples/ and runtimes/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// SHA-256 of `bytes` (Lambda reports its base64 as `CodeSha256`).
pub fn sha256_bytes(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

/// Hex SHA-256 of `bytes`: the content address the code store files a package under.
pub fn sha256_hex(bytes: &[u8]) -> String {
    sha256_bytes(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `cmd` (stdout and stderr captured) for at most `timeout`, killing it if it has not
/// exited by then: whether it exited by itself, its status, and its stdout then stderr.
pub fn run_bounded(
    cmd: &mut Command,
    timeout: Duration,
) -> (bool, std::process::ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let exited = eventually(timeout, || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (exited, out.status, text)
}

/// Where `tool` is on the normal `PATH`.
pub fn which(tool: &str) -> PathBuf {
    let path = std::env::var_os("PATH").expect("PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{tool} is not on PATH"))
}

/// Fills `dir` with symlinks to the interpreters, the build tools and `setpriv` only: a
/// `PATH` without the optional sandbox tools (`bwrap`, `slirp4netns`, `pasta`).
pub fn path_without_sandbox_tools(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    // The real Python, not a shim that needs the rest of PATH.
    let py = Command::new(which("python3"))
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let python = PathBuf::from(String::from_utf8(py.stdout).unwrap().trim());
    let mut tools = vec![("python3".to_string(), python)];
    for t in ["node", "java", "javac", "go", "setpriv"] {
        tools.push((t.to_string(), which(t)));
    }
    for (name, target) in tools {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    for hidden in ["bwrap", "slirp4netns", "pasta"] {
        assert!(!dir.join(hidden).exists());
    }
}

/// Builds `package` of the workspace (the target dir and profile of the tests) and returns
/// the executable of its binary `target`. Cargo's own lock orders concurrent builds.
pub fn cargo_build(package: &str, target: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let t0 = Instant::now();
    let out = Command::new(cargo)
        .current_dir(repo_root())
        .args([
            "build",
            "-p",
            package,
            "--message-format=json-render-diagnostics",
        ])
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo build -p {package} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("built {package} in {:.1?}", t0.elapsed());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == target)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no {target} executable"))
}

/// The host's first IPv4 address outside 127.0.0.0/8 (from /proc/net/fib_trie: a local
/// `/32 host LOCAL` entry follows its address line).
pub fn host_address() -> Ipv4Addr {
    let trie = std::fs::read_to_string("/proc/net/fib_trie").unwrap();
    let lines: Vec<&str> = trie.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[1].contains("/32 host LOCAL"))
        .filter_map(|w| w[0].trim().trim_start_matches("|--").trim().parse().ok())
        .find(|ip: &Ipv4Addr| !ip.is_loopback())
        .expect("this host has no IPv4 address outside 127.0.0.0/8 to test egress with")
}

/// A process's resident memory (VmRSS), in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}
