//! The wasm executor (crates/nimbus-wasm): a `wasi:http/proxy` component (the fixture
//! tests/fixtures/wasm-probe, built here for wasm32-wasip2) behind its function URL, the
//! Invoke API and an async invoke; stopped at its timeout by epoch interruption, refused
//! memory past the function's size, trapping, reaching only the hosts its network policy
//! allows; its output in the function's log; broken bytes refused with a clear error;
//! and 10,000 requests without the server's memory growing.

use nimbus_tests::components::build_component;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The probe component's bytes, built once per test process.
fn probe() -> &'static [u8] {
    static PROBE: OnceLock<Vec<u8>> = OnceLock::new();
    PROBE.get_or_init(|| build_component("wasm-probe"))
}

fn deploy_probe(s: &Server, name: &str, extra: Value) {
    let mut cfg = json!({ "runtime": "wasi-http", "handler": "app.wasm", "url": true });
    for (k, v) in extra.as_object().unwrap() {
        cfg[k] = v.clone();
    }
    let zip = zip_entries([("app.wasm", probe())]);
    let (status, body) = s.deploy_zip(name, cfg, &zip);
    assert!(status < 300, "deploy {name}: {status} {body}");
}

fn get(s: &Server, path: &str) -> (u16, String) {
    let r = s.http.get(s.url(path)).send().unwrap();
    let status = r.status().as_u16();
    (status, r.text().unwrap())
}

/// The error type of a failed Invoke.
fn error_type(inv: &Invoked) -> String {
    assert!(
        inv.function_error(),
        "expected a function error: {}",
        inv.body
    );
    inv.json()["errorType"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn http_event(path: &str) -> String {
    json!({
        "version": "2.0", "rawPath": path, "rawQueryString": "",
        "headers": {"host": "example.test"},
        "requestContext": {"http": {"method": "GET", "path": path}},
        "isBase64Encoded": false
    })
    .to_string()
}

#[test]
fn wasm_http_component_serves_url_invoke_and_async() {
    let s = Server::start(&[]);
    deploy_probe(&s, "probe", json!({}));
    // The function URL: the request as it came, path and query as the function sees them.
    let r = s.http.get(s.url("/fn/probe/hello?x=1")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-probe"], "1");
    assert_eq!(r.text().unwrap(), "hello from probe: GET /hello?x=1");
    let r = s
        .http
        .post(s.url("/fn/probe/echo"))
        .body(vec![7u8; 100_000])
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap().as_ref(), &[7u8; 100_000][..]);
    let (status, body) = get(&s, "/fn/probe/status?code=418");
    assert_eq!((status, body.as_str()), (418, "status 418"));

    // The Invoke API: an event is POSTed to `/`; the answer is an API Gateway v2 response.
    let out = s.invoke("probe", r#"{"n":1}"#).ok();
    assert_eq!(out["statusCode"], 200);
    assert_eq!(out["body"], "hello from probe: POST /");
    assert_eq!(out["headers"]["x-probe"], "1");
    // An HTTP event stands for the request it describes.
    let out = s.invoke("probe", &http_event("/from-event")).ok();
    assert_eq!(out["body"], "hello from probe: GET /from-event");
    // A 5xx answer fails the invocation (so async retries and DLQs apply).
    let failed = s.invoke("probe", &http_event("/status?code=503"));
    assert_eq!(error_type(&failed), "Function.HttpError");

    // An async invocation runs (its REPORT line is in the function's log).
    let r = s.invoke_with(
        "probe",
        b"{}".to_vec(),
        &[("X-Amz-Invocation-Type", "Event")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let rid = r.header("x-amzn-requestid").unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(20), || {
            let (_, logs) = s.get_json("/v1/functions/probe/logs?limit=1000");
            logs.to_string()
                .contains(&format!("REPORT RequestId: {rid}"))
        }),
        "the async invocation {rid} never ran: {}",
        s.log()
    );
}

#[test]
fn a_wasm_component_is_stopped_at_its_timeout_and_others_go_on() {
    let s = Server::start(&[]);
    deploy_probe(&s, "spin", json!({ "timeout": 2 }));
    let t0 = Instant::now();
    let inv = s.invoke("spin", &http_event("/loop"));
    let took = t0.elapsed();
    assert_eq!(error_type(&inv), "Sandbox.Timedout", "{}", inv.body);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "stopped after {took:?}"
    );
    // A URL request into the loop ends too, as a clean 5xx JSON error.
    let (status, body) = get(&s, "/fn/spin/loop");
    assert!(status >= 500, "{status} {body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert!(
        err["type"].is_string() || err["message"].is_string(),
        "{body}"
    );
    // The same function, and the server, still serve.
    assert_eq!(get(&s, "/fn/spin/").0, 200);
    assert!(s.healthy());
}

#[test]
fn a_wasm_component_cannot_grow_past_its_memory_size() {
    let s = Server::start(&[]);
    deploy_probe(&s, "grow", json!({ "memory": 128 }));
    let out = s.invoke("grow", &http_event("/grow?mb=48")).ok();
    assert_eq!(out["body"], "grew 48 MB");
    let inv = s.invoke("grow", &http_event("/grow?mb=400"));
    assert_eq!(error_type(&inv), "Runtime.OutOfMemory", "{}", inv.body);
    assert!(inv.json()["errorMessage"]
        .as_str()
        .unwrap()
        .contains("128 MB"));
    // Nothing of the failed request is left: the next one grows as far as the first.
    let out = s.invoke("grow", &http_event("/grow?mb=48")).ok();
    assert_eq!(out["body"], "grew 48 MB");
    let (_, logs) = s.get_json("/v1/functions/grow/logs?limit=1000");
    assert!(logs.to_string().contains("Max Memory Used"), "{logs}");
}

#[test]
fn a_trapping_component_fails_cleanly_and_logs_why() {
    let s = Server::start(&[]);
    deploy_probe(&s, "trap", json!({}));
    let inv = s.invoke_with(
        "trap",
        http_event("/trap").into_bytes(),
        &[("X-Amz-Log-Type", "Tail")],
    );
    assert_eq!(error_type(&inv), "Runtime.WasmTrap", "{}", inv.body);
    let tail = inv.header("x-amz-log-result").expect("a log tail");
    let tail = String::from_utf8(base64_decode(tail)).unwrap();
    assert!(tail.contains("unreachable"), "{tail}");
    // The component never set a response: a clear error, not a hang.
    let inv = s.invoke("trap", &http_event("/noresponse"));
    assert_eq!(error_type(&inv), "Runtime.NoResponse", "{}", inv.body);
    assert_eq!(get(&s, "/fn/trap/").0, 200);
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn a_wasm_components_output_is_in_its_log_with_the_request_id() {
    let s = Server::start(&[]);
    deploy_probe(&s, "talk", json!({}));
    let r = s.http.get(s.url("/fn/talk/log")).send().unwrap();
    assert_eq!(r.status(), 200);
    let mut found = Value::Null;
    assert!(eventually(Duration::from_secs(10), || {
        let (_, logs) = s.get_json("/v1/functions/talk/logs?limit=1000");
        found = logs;
        let text = found.to_string();
        text.contains("probe stdout line")
            && text.contains("probe stderr line")
            && text.contains("unfinished line")
    }));
    let events = found["logs"].as_array().cloned().unwrap_or_default();
    let line = events
        .iter()
        .find(|e| e.to_string().contains("probe stdout line"))
        .unwrap_or_else(|| panic!("{found}"));
    let rid = line["request_id"].as_str().unwrap_or_default();
    assert!(!rid.is_empty(), "no request id on {line}");
    assert!(found
        .to_string()
        .contains(&format!("START RequestId: {rid}")));
}

/// A one-shot HTTP server answering 200 `hello` to every request; counts them.
fn http_service(ip: Ipv4Addr) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            );
        }
    });
    (port, count)
}

#[test]
fn wasm_outgoing_requests_obey_the_network_policy() {
    let s = Server::start(&[]);
    let host = host_address();
    let (remote, remote_hits) = http_service(host);
    let (local, local_hits) = http_service(Ipv4Addr::LOCALHOST);
    let (service, service_hits) = http_service(Ipv4Addr::LOCALHOST);
    deploy_probe(
        &s,
        "out",
        json!({ "host_services": [format!("127.0.0.1:{service}")] }),
    );
    deploy_probe(&s, "closed", json!({ "network": "none" }));
    // The probe answers 200 `status N` or 502 `refused: ERROR-CODE`.
    let fetch = |f: &str, url: String| get(&s, &format!("/fn/{f}/fetch?url={url}")).1;
    // `outbound`: other hosts yes; this host's loopback no, unless a named host service.
    assert_eq!(
        fetch("out", format!("http://{host}:{remote}/")),
        "status 200"
    );
    let refused = fetch("out", format!("http://127.0.0.1:{local}/"));
    assert!(
        refused.contains("refused") && refused.contains("Prohibited"),
        "{refused}"
    );
    let refused = fetch("out", format!("http://localhost:{local}/"));
    assert!(refused.contains("Prohibited"), "{refused}");
    let nimbus = fetch("out", s.base());
    assert!(
        nimbus.contains("Prohibited"),
        "Nimbus's own API reached: {nimbus}"
    );
    assert_eq!(
        fetch("out", format!("http://127.0.0.1:{service}/")),
        "status 200"
    );
    // `none`: nothing at all.
    let denied = fetch("closed", format!("http://{host}:{remote}/"));
    assert!(denied.contains("HttpRequestDenied"), "{denied}");
    assert_eq!(remote_hits.load(Ordering::SeqCst), 1);
    assert_eq!(local_hits.load(Ordering::SeqCst), 0);
    assert_eq!(service_hits.load(Ordering::SeqCst), 1);
}

#[test]
fn broken_components_are_refused_with_a_clear_error() {
    let s = Server::start(&[]);
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "junk",
            b"this is not wasm",
            "not a valid WebAssembly component",
        ),
        // A core module (the magic and version 1), not a component.
        (
            "core",
            b"\0asm\x01\0\0\0",
            "not a valid WebAssembly component",
        ),
        (
            "trunc",
            &probe()[..probe().len() / 2],
            "not a valid WebAssembly component",
        ),
    ];
    for (name, bytes, says) in cases {
        let zip = zip_entries([("app.wasm", bytes)]);
        let cfg = json!({ "runtime": "wasi-http", "handler": "app.wasm", "url": true });
        let (status, body) = s.deploy_zip(name, cfg, &zip);
        assert!(status < 300, "{status} {body}");
        let inv = s.invoke(name, "{}");
        assert_eq!(
            error_type(&inv),
            "Runtime.InvalidEntrypoint",
            "{}",
            inv.body
        );
        assert!(inv.body.contains(says), "{name}: {}", inv.body);
    }
    // The handler names a file the package lacks.
    let zip = zip_entries([("other.wasm", probe())]);
    let cfg = json!({ "runtime": "wasi-http", "handler": "app.wasm" });
    assert!(s.deploy_zip("missing", cfg, &zip).0 < 300);
    let inv = s.invoke("missing", "{}");
    assert!(inv.body.contains("not in the package"), "{}", inv.body);
    // A wasi:http component deployed as the event world: told which world it needs.
    let zip = zip_entries([("app.wasm", probe())]);
    let cfg = json!({ "runtime": "wasm-event", "handler": "app.wasm" });
    assert!(s.deploy_zip("world", cfg, &zip).0 < 300);
    let inv = s.invoke("world", "{}");
    assert!(
        inv.body.contains("nimbus:function/event-handler"),
        "{}",
        inv.body
    );
    // A handler that is not a .wasm file is refused at deploy.
    let cfg = json!({ "runtime": "wasi-http", "handler": "app.py" });
    let (status, body) = s.deploy_zip("badhandler", cfg, &zip);
    assert_eq!(status, 400, "{body}");
    // The server is up, and a good component beside them serves.
    deploy_probe(&s, "good", json!({}));
    assert_eq!(get(&s, "/fn/good/").0, 200);
}

#[test]
fn ten_thousand_wasm_requests_leave_the_servers_memory_flat() {
    let s = Server::start(&[]);
    deploy_probe(&s, "steady", json!({}));
    let run = |n: usize| {
        for i in 0..n {
            let r = s
                .http
                .post(s.url(&format!("/fn/steady/echo?i={i}")))
                .body(vec![b'x'; 1024])
                .send()
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().unwrap().len(), 1024);
        }
    };
    // RSS once the log lines the requests wrote are in the store: the capture queue holds
    // lines waiting for it (up to 32 MiB), longer with the stores in PostgreSQL.
    let settled_rss = || {
        assert!(
            eventually(Duration::from_secs(30), || {
                let (_, h) = s.get_json("/v1/health");
                h["logs"]["pending_bytes"] == 0
            }),
            "the log lines never reached the store"
        );
        rss_kib(s.pid())
    };
    // Warm up: pools, caches and allocator arenas reach their working size.
    run(2_000);
    let before = settled_rss();
    let t0 = Instant::now();
    run(10_000);
    let after = settled_rss();
    eprintln!(
        "10,000 requests in {:.1?}; RSS {before} KiB -> {after} KiB",
        t0.elapsed()
    );
    // On PostgreSQL the RSS creeps without the live heap growing (2026-12-07): 10 MB over
    // 110,000 requests on a quiet machine with mimalloc, 5.6 MB over 130,000 with glibc's
    // malloc (its per-thread arenas growing), against 0.7 MB over 200,000 on SQLite; and
    // 4.7 MB over these 10,000 once in CI's PostgreSQL pass (three tests at once). heaptrack
    // over 37,000 requests found no allocation site that grows with the requests (5 MB live
    // at the end, the compiled component and the pools included). Keeping the 1 KiB body of
    // each request (10 MB, against some 9 MB allowed) still fails on both.
    let allowed = if test_backend_is_postgres() { 10 } else { 5 };
    assert!(
        (after as f64) <= before as f64 * (1.0 + allowed as f64 / 100.0),
        "RSS grew more than {allowed} %: {before} KiB -> {after} KiB"
    );
}
