//! Abuse limits through the real binary: header and body limits, per-caller and per-route
//! rate limits, concurrent uploads, slow clients and idle connections.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const HELLO: &str = "exports.handler = async () => ({ statusCode: 200, body: 'ok' });";

fn connect(s: &Server) -> TcpStream {
    let c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c
}

/// Reads until the server closes the connection (or a read error); returns what came.
fn read_to_close(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one whole response (its head, then a `content-length` body) from a kept-alive
/// connection; returns it as text.
fn read_response(c: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&out));
        out.extend_from_slice(&buf[..n]);
        let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if out.len() >= end + 4 + len {
            return String::from_utf8_lossy(&out).into_owned();
        }
    }
}

#[test]
fn caller_rate_limit_gives_429_with_retry_after() {
    let s = Server::start(&["--rate-limit", "1:3"]);
    std::thread::sleep(Duration::from_secs(3)); // the health checks' tokens come back
    let mut statuses = Vec::new();
    let mut throttled = None;
    for _ in 0..8 {
        let r = s
            .http
            .post(s.url("/2015-03-31/functions/nope/invocations"))
            .body("{}")
            .send()
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 && throttled.is_none() {
            let retry = r.headers()["retry-after"].to_str().unwrap().to_string();
            throttled = Some((retry, r.json::<Value>().unwrap()));
        }
    }
    assert_eq!(&statuses[..3], &[404, 404, 404], "{statuses:?}");
    // One token per second comes back, so a slow machine may see a 404 among the 429s.
    assert!(
        statuses[3..].iter().all(|s| *s == 429 || *s == 404),
        "{statuses:?}"
    );
    assert!(
        statuses[3..].iter().filter(|s| **s == 429).count() >= 3,
        "{statuses:?}"
    );
    let (retry, body) = throttled.unwrap();
    assert!(retry.parse::<u64>().unwrap() >= 1);
    assert_eq!(body["Type"], "User");
    assert_eq!(body["type"], "TooManyRequestsException");
    assert_eq!(body["Reason"], "CallerRateLimitExceeded");
    assert_eq!(body["retryAfterSeconds"], retry);
    // User routes and URLs answer as API Gateway does.
    let r = s.http.get(s.url("/some/route")).send().unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"message": "Too Many Requests"})
    );
    // The bucket refills.
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(s.get_json("/v1/health").0, 200);
}

#[test]
fn route_and_url_rate_limits() {
    let s = Server::start(&[]);
    let mut cfg = node_cfg("index.handler");
    cfg["routes"] = json!(["GET /limited", "GET /free"]);
    cfg["route_settings"] = json!({"GET /limited": {"rate_limit": {"rps": 1, "burst": 2}}});
    cfg["url"] = json!(true);
    cfg["url_rate_limit"] = json!({"rps": 1, "burst": 1});
    s.deploy("rl", cfg, &[("index.js", HELLO)]);
    let get = |p: &str| s.http.get(s.url(p)).send().unwrap();
    assert_eq!(get("/free").status(), 200, "warm the instance");
    assert_eq!(get("/limited").status(), 200);
    assert_eq!(get("/limited").status(), 200);
    // The bucket gains a token per second: on a slow machine one more call may pass.
    let r = (0..4)
        .map(|_| get("/limited"))
        .find(|r| r.status() != 200)
        .expect("the route's bucket never ran out");
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(
        r.json::<Value>().unwrap(),
        json!({"message": "Too Many Requests"})
    );
    for _ in 0..5 {
        assert_eq!(get("/free").status(), 200, "other routes are not limited");
    }
    assert_eq!(get("/fn/rl/").status(), 200);
    assert!(
        (0..4).any(|_| get("/fn/rl/").status() == 429),
        "the URL's bucket never ran out"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get("/limited").status(), 200, "the bucket refills");
    // Validation: settings for a route the function does not serve.
    let mut bad = node_cfg("index.handler");
    bad["route_settings"] = json!({"GET /nope": {"rate_limit": {"rps": 1}}});
    let (st, body) = s.deploy_zip("bad", bad, &zip_files(&[("index.js", HELLO)]));
    assert_eq!(st, 400, "{body}");
}

#[test]
fn header_and_body_limits_answer_json() {
    let s = Server::start(&[
        "--max-headers",
        "20",
        "--max-header-bytes",
        "4096",
        "--max-body",
        "1000",
    ]);
    let mut req = s.http.get(s.url("/v1/health"));
    for i in 0..30 {
        req = req.header(format!("x-h{i}"), "v");
    }
    let r = req.send().unwrap();
    assert_eq!(r.status(), 431);
    let body: Value = r.json().unwrap();
    assert_eq!(
        body["type"], "RequestHeaderFieldsTooLargeException",
        "{body}"
    );
    let r = s
        .http
        .get(s.url("/v1/health"))
        .header("x-big", "a".repeat(6000))
        .send()
        .unwrap();
    assert_eq!(r.status(), 431);
    // A head far beyond hyper's buffer is refused too (without a JSON body).
    let mut c = connect(&s);
    let _ = c.write_all(
        format!(
            "GET /v1/health HTTP/1.1\r\nhost: x\r\nx-huge: {}\r\n\r\n",
            "a".repeat(200_000)
        )
        .as_bytes(),
    );
    let out = read_to_close(&mut c);
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");

    // Control API bodies: --max-body, declared or chunked.
    let r = s
        .http
        .put(s.url("/v1/queues/q"))
        .body("x".repeat(2000))
        .send()
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.json::<Value>().unwrap()["type"],
        "RequestTooLargeException"
    );
    let mut c = connect(&s);
    let chunk = "y".repeat(1500);
    c.write_all(
        format!(
            "PUT /v1/queues/q HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let out = read_to_close(&mut c);
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("RequestTooLargeException"), "{out}");
    // Invocations keep Lambda's 6 MB, not --max-body.
    s.deploy("small", node_cfg("index.handler"), &[("index.js", HELLO)]);
    let payload = format!("{{\"pad\":\"{}\"}}", "z".repeat(5000));
    assert_eq!(s.invoke("small", &payload).status, 200);
    let big = vec![b'a'; 6 * 1024 * 1024 + 10];
    let r = s.invoke_with("small", big, &[]);
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(r.json()["type"], "RequestTooLargeException");
}

#[test]
fn concurrent_uploads_are_limited() {
    let s = Server::start(&["--max-uploads", "1"]);
    // One upload in flight: headers and part of the body, the rest never comes.
    let mut slow = connect(&s);
    slow.write_all(b"PUT /v1/functions/slow HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{\"config\":")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (status, body) = s.deploy_zip(
        "other",
        node_cfg("index.handler"),
        &zip_files(&[("index.js", HELLO)]),
    );
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["Reason"], "ConcurrentUploadLimitExceeded");
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "waits briefly first"
    );
    drop(slow);
    // The slot comes back once the stalled upload is gone.
    assert!(eventually(Duration::from_secs(10), || {
        s.deploy_zip(
            "other",
            node_cfg("index.handler"),
            &zip_files(&[("index.js", HELLO)]),
        )
        .0 < 300
    }));
}

#[test]
fn slow_clients_are_cut_off_while_others_are_served() {
    let s = Server::start(&["--header-timeout", "2", "--body-timeout", "2"]);
    // Slowloris: one header byte per second.
    let dribbler = std::thread::spawn({
        let port = s.port;
        move || {
            let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
            let t0 = Instant::now();
            for b in
                b"GET /v1/health HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n"
                    .iter()
            {
                if c.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_secs(1));
                if t0.elapsed() > Duration::from_secs(15) {
                    break;
                }
            }
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 256];
            let closed = matches!(c.read(&mut buf), Ok(0) | Err(_));
            (t0.elapsed(), closed)
        }
    });
    // Meanwhile normal requests are served.
    for _ in 0..5 {
        assert_eq!(s.get_json("/v1/health").0, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (elapsed, closed) = dribbler.join().unwrap();
    assert!(closed, "the slow client was not disconnected");
    assert!(
        // Dribbling the whole head would take 45 s; the timeout is 2 s.
        elapsed < Duration::from_secs(10),
        "cut off after {elapsed:?}"
    );

    // An idle keep-alive connection is closed after the timeout.
    let mut c = connect(&s);
    c.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut c).starts_with("HTTP/1.1 200"));
    let t0 = Instant::now();
    let rest = read_to_close(&mut c);
    assert!(rest.is_empty(), "{rest}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "idle for {:?}",
        t0.elapsed()
    );

    // A body that does not arrive in time: 408 JSON.
    let mut c = connect(&s);
    c.write_all(b"PUT /v1/queues/q HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{").unwrap();
    let out = read_to_close(&mut c);
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("RequestTimeoutException"), "{out}");
    assert_eq!(s.get_json("/v1/health").0, 200);
}

#[test]
fn open_connections_are_bounded() {
    let s = Server::start(&[
        "--max-connections",
        "3",
        "--header-timeout",
        "3",
        "--body-timeout",
        "3",
    ]);
    // Let the start-up health checks' keep-alive connection go idle and close.
    std::thread::sleep(Duration::from_millis(3500));
    // An idle keep-alive connection and two clients that send nothing hold the cap.
    let mut idle = connect(&s);
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut idle).starts_with("HTTP/1.1 200"));
    let mut a = connect(&s);
    std::thread::sleep(Duration::from_millis(100));
    let mut b = connect(&s);
    std::thread::sleep(Duration::from_millis(200));
    // A new client is served at once: the oldest silent client is closed to make room
    // (one that has not completed a request goes before an idle one).
    let t0 = Instant::now();
    let client = reqwest::blocking::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let r = client.get(s.url("/v1/health")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "served after {:?}",
        t0.elapsed()
    );
    assert_eq!(read_to_close(&mut a), "", "the oldest silent client");
    let mut buf = [0u8; 64];
    for c in [&mut b, &mut idle] {
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let open = c.read(&mut buf).map_err(|e| e.kind());
        assert!(
            matches!(
                open,
                Err(std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
            ),
            "closed too: {open:?}"
        );
    }

    // Three clients with a request in flight (a body that never arrives) take the places
    // of the silent and the idle one; they are never closed to make room: a fourth client
    // waits until one of them ends (408 after --body-timeout).
    let mut busy: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = connect(&s);
            c.write_all(b"PUT /v1/queues/q HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{")
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            c
        })
        .collect();
    for c in [&mut b, &mut idle] {
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(read_to_close(c), "");
    }
    let t0 = Instant::now();
    let waiting = std::thread::spawn({
        let url = s.url("/v1/health");
        move || {
            let r = client.get(url).send().unwrap();
            (r.status().as_u16(), t0.elapsed())
        }
    });
    for c in &mut busy {
        let out = read_to_close(c);
        assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    }
    let (status, waited) = waiting.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        waited >= Duration::from_millis(1500),
        "served after {waited:?} while every connection was busy"
    );
}

fn assert_backlog_full(r: reqwest::blocking::Response, flag: &str) {
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().unwrap();
    assert_eq!(body["type"], "TooManyRequestsException", "{body}");
    assert_eq!(body["Reason"], "BacklogLimitExceeded", "{body}");
    assert!(body["message"].as_str().unwrap().contains(flag), "{body}");
}

#[test]
fn async_events_and_queue_messages_are_bounded() {
    let s = Server::start(&["--max-async-events", "3", "--max-queue-messages", "2"]);
    for f in ["held", "other"] {
        s.deploy(f, node_cfg("index.handler"), &[("index.js", HELLO)]);
    }
    // Reserved concurrency 0: events of `held` stay queued (throttled, retried each second).
    let (status, body) = s.put_json(
        "/2017-10-31/functions/held/concurrency",
        &json!({"ReservedConcurrentExecutions": 0}),
    );
    assert_eq!(status, 200, "{body}");
    let event = |name: &str| {
        s.http
            .post(s.url(&format!("/2015-03-31/functions/{name}/invocations")))
            .header("X-Amz-Invocation-Type", "Event")
            .body("{}")
            .send()
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(event("held").status().as_u16(), 202);
    }
    assert_backlog_full(event("held"), "--max-async-events");
    // The bound is per function.
    assert_eq!(event("other").status().as_u16(), 202);
    // A bus rule to the full function reports the entry as throttled.
    let (status, body) = s.put_json(
        "/v1/buses/default/rules/to-held",
        &json!({"pattern": {"source": ["t"]}, "targets": ["held"]}),
    );
    assert_eq!(status, 200, "{body}");
    let out: Value = s
        .http
        .post(s.url("/v1/buses/default/events"))
        .json(&json!({"Entries": [{"Source": "t", "DetailType": "x", "Detail": "{}"}]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(out["FailedEntryCount"], 1, "{out}");
    assert_eq!(
        out["Entries"][0]["ErrorCode"], "ThrottlingException",
        "{out}"
    );
    // Once the function may run again its events drain and new ones are accepted.
    let r = s
        .http
        .delete(s.url("/2017-10-31/functions/held/concurrency"))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert!(eventually(Duration::from_secs(30), || {
        event("held").status().as_u16() == 202
    }));

    // Queues: two messages at most.
    let (status, body) = s.put_json("/v1/queues/jobs", &json!({}));
    assert_eq!(status, 200, "{body}");
    let send = |n: usize| {
        let entries: Vec<Value> = (0..n).map(|i| json!({"body": format!("m{i}")})).collect();
        s.http
            .post(s.url("/v1/queues/jobs/messages"))
            .json(&json!({ "entries": entries }))
            .send()
            .unwrap()
    };
    assert_eq!(send(2).status().as_u16(), 200);
    assert_backlog_full(send(1), "--max-queue-messages");
    // Receiving and deleting makes room; nothing stored was lost.
    let got: Value = s
        .http
        .post(s.url("/v1/queues/jobs/receive"))
        .json(&json!({"max": 10}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let got = got["messages"].as_array().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let receipt = got[0]["receipt"].as_str().unwrap();
    let r = s
        .http
        .delete(s.url(&format!("/v1/queues/jobs/messages/{receipt}")))
        .send()
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().unwrap());
    assert_eq!(send(1).status().as_u16(), 200);
    assert!(s.healthy());
}
