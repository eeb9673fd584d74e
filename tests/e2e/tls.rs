//! HTTPS on the public listener: a CA and a server certificate made at test time,
//! `nimbus serve --tls-cert --tls-key`, then reqwest and the CLI over TLS, a plain-HTTP
//! client on the TLS port, and a missing key file.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A private CA and a certificate it signs for `localhost` and 127.0.0.1.
    fn new() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "nimbus test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        // A key that does not belong to the certificate.
        let other = KeyPair::generate().unwrap();
        std::fs::write(dir.path().join("other-key.pem"), other.serialize_pem()).unwrap();
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }
}

/// `nimbus serve` with TLS.
struct TlsServer {
    child: Child,
    port: u16,
    data: tempfile::TempDir,
    https: reqwest::blocking::Client,
}

impl TlsServer {
    fn start(pki: &Pki) -> TlsServer {
        Self::start_with(pki, &[])
    }

    /// With extra `serve` flags.
    fn start_with(pki: &Pki, extra: &[&str]) -> TlsServer {
        let data = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(data.path().join("server.log")).unwrap();
        let child = Command::new(nimbus_bin())
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .args(["--tls-cert", &pki.arg("cert.pem")])
            .args(["--tls-key", &pki.arg("key.pem")])
            .args(["--auth", "off"])
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let ca =
            reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
        let https = reqwest::blocking::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let mut s = TlsServer {
            child,
            port,
            data,
            https,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !s.healthy() {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("nimbus exited with {status}:\n{}", s.log());
            }
            assert!(Instant::now() < deadline, "not healthy:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.path().join("server.log")).unwrap_or_default()
    }

    fn healthy(&self) -> bool {
        self.https
            .get(format!("{}/v1/health", self.base()))
            .send()
            .map(|r| r.status().is_success())
            .unwrap_or(false)
    }

    fn cli(&self, pki: &Pki, args: &[&str]) -> std::process::Output {
        Command::new(nimbus_bin())
            .args(["--endpoint", &self.base(), "--ca-cert", &pki.arg("ca.pem")])
            .args(args)
            .env_remove("NIMBUS_ENDPOINT")
            .env_remove("NIMBUS_CA_CERT")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn https_invoke_cli_and_plain_http_on_the_tls_port() {
    let pki = Pki::new();
    let mut s = TlsServer::start(&pki);
    let log = s.log();
    assert!(
        log.contains(&format!("nimbus listening on https://127.0.0.1:{}", s.port)),
        "{log}"
    );

    // The CLI over HTTPS, trusting the private CA.
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[(
            "app.py",
            "def handler(e, c):\n    return {'secure': True, 'e': e}\n",
        )],
    );
    let out = cli_ok(&s.cli(
        &pki,
        &[
            "deploy",
            dir.path().to_str().unwrap(),
            "--name",
            "sec",
            "--runtime",
            "python3.12",
            "--handler",
            "app.handler",
        ],
    ))
    .unwrap();
    assert!(out.contains("sec"), "{out}");
    let out = cli_ok(&s.cli(&pki, &["invoke", "sec", "--data", r#"{"x":1}"#])).unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"secure": true, "e": {"x": 1}})
    );

    // Without the CA the CLI refuses the certificate, and says why.
    let r = Command::new(nimbus_bin())
        .args(["--endpoint", &s.base(), "ls"])
        .env_remove("NIMBUS_CA_CERT")
        .output()
        .unwrap();
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("TLS") && err.contains("--ca-cert"), "{err}");

    // reqwest trusting the CA: the Lambda Invoke API and the function URL, which is https.
    let r = s
        .https
        .post(format!("{}/2015-03-31/functions/sec/invocations", s.base()))
        .body(r#"{"y":2}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"secure": true, "e": {"y": 2}})
    );
    let f: Value = s
        .https
        .get(format!("{}/2015-03-31/functions/sec", s.base()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let location = f["Code"]["Location"].as_str().unwrap_or_default();
    assert!(location.starts_with("https://127.0.0.1:"), "{f}");

    // A function URL is printed and served as https.
    let mut cfg = python_cfg("app.handler");
    cfg["url"] = json!(true);
    let zip = zip_files(&[(
        "app.py",
        "def handler(e, c):\n    return {'statusCode': 200, 'body': 'hi over tls'}\n",
    )]);
    use base64::Engine;
    let reply: Value = s
        .https
        .put(format!("{}/v1/functions/web", s.base()))
        .json(&json!({
            "config": cfg,
            "code_zip": base64::engine::general_purpose::STANDARD.encode(zip),
        }))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let text = reply.to_string();
    let url = format!("https://127.0.0.1:{}/fn/web/", s.port);
    assert!(text.contains(&url), "{text}");
    assert!(!text.contains("http://127.0.0.1"), "{text}");
    let r = s.https.get(format!("{}/fn/web/", s.base())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), "hi over tls");

    // Plain HTTP on the TLS port fails, and the server keeps serving.
    let plain = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{}/v1/health", s.port))
        .send();
    assert!(
        r.as_ref().map(|r| !r.status().is_success()).unwrap_or(true),
        "{r:?}"
    );
    // Garbage instead of a ClientHello, then a half-open connection.
    {
        use std::io::Write;
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        let _ = raw.write_all(b"\x16\x03\x01\xff\xffnot a hello");
        let _idle = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        assert!(s.healthy(), "{}", s.log());
    }
    assert!(s.child.try_wait().unwrap().is_none(), "{}", s.log());
    assert!(s.healthy(), "{}", s.log());

    // SIGTERM lets an in-flight HTTPS request finish, then exits cleanly.
    let slow = zip_files(&[(
        "app.py",
        "import time\ndef handler(e, c):\n    time.sleep(1.5)\n    return 'done'\n",
    )]);
    let r = s
        .https
        .put(format!("{}/v1/functions/slow", s.base()))
        .json(&json!({
            "config": python_cfg("app.handler"),
            "code_zip": base64::engine::general_purpose::STANDARD.encode(slow),
        }))
        .send()
        .unwrap();
    assert!(r.status().is_success());
    let https = s.https.clone();
    let url = format!("{}/2015-03-31/functions/slow/invocations", s.base());
    let in_flight = std::thread::spawn(move || {
        let r = https.post(url).body("{}").send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(700));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}\n{}", s.log());
    assert_eq!(in_flight.join().unwrap(), (200, "\"done\"".to_string()));
}

fn serve_fails(args: &[&str]) -> String {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(nimbus_bin())
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(data.path())
        .args(args)
        .env_remove("NIMBUS_TLS_CERT")
        .env_remove("NIMBUS_TLS_KEY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "started with {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_tls_files_stop_the_start_with_a_clear_error() {
    let pki = Pki::new();
    let missing = pki.path("nope.pem");
    let err = serve_fails(&[
        "--tls-cert",
        &pki.arg("cert.pem"),
        "--tls-key",
        missing.to_str().unwrap(),
    ]);
    assert!(
        err.contains("cannot read TLS key file") && err.contains("nope.pem"),
        "{err}"
    );

    let err = serve_fails(&[
        "--tls-cert",
        &pki.arg("cert.pem"),
        "--tls-key",
        &pki.arg("other-key.pem"),
    ]);
    assert!(err.contains("does not fit certificate"), "{err}");

    // A key where the certificate should be.
    let err = serve_fails(&[
        "--tls-cert",
        &pki.arg("key.pem"),
        "--tls-key",
        &pki.arg("key.pem"),
    ]);
    assert!(err.contains("no PEM certificate"), "{err}");

    // One without the other.
    let err = serve_fails(&["--tls-cert", &pki.arg("cert.pem")]);
    assert!(err.contains("--tls-key"), "{err}");
}

#[test]
fn connections_still_in_their_handshake_make_room_at_the_cap() {
    use std::io::Read;
    let pki = Pki::new();
    let s = TlsServer::start_with(&pki, &["--max-connections", "2"]);
    // Clients that connect and never send a ClientHello fill the cap ...
    let mut oldest = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let _younger = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // ... and a new HTTPS client is served at once (not after the 10 s handshake
    // timeout): a connection in its handshake has not completed a request.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap();
    let fresh = reqwest::blocking::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let r = fresh.get(format!("{}/v1/health", s.base())).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "served after {:?}",
        t0.elapsed()
    );
    oldest
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    assert!(matches!(oldest.read(&mut buf), Ok(0) | Err(_)));
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the oldest was not closed"
    );
}
