//! Response streaming through function URLs in `RESPONSE_STREAM` mode: the client gets the
//! bytes as the function writes them (HTTP/1.1 chunked), for Node's
//! `awslambda.streamifyResponse` and Nimbus's Python generator handlers; a failure
//! mid-stream cuts the body; a buffered URL still answers whole.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::Read;
use std::time::{Duration, Instant};

/// Writes "first", waits a second, writes "last" (in an HTTP response with status 201 and
/// a header, through `HttpResponseStream.from`); `?fail` throws after the first write.
const NODE_STREAMER: &str = r#"
exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201,
    headers: { 'content-type': 'text/plain', 'x-streamed': 'node' },
  });
  stream.write('first;');
  await new Promise((r) => setTimeout(r, 1000));
  if (event.rawQueryString === 'fail') throw new Error('broke mid-stream');
  stream.write('last');
  stream.end();
});
"#;

/// The same as a Python generator (Nimbus's extension): a dict first is the HTTP prelude.
const PYTHON_STREAMER: &str = r#"
import time

def handler(event, context):
    yield {"statusCode": 201, "headers": {"content-type": "text/plain", "x-streamed": "python"}}
    yield "first;"
    time.sleep(1)
    if event.get("rawQueryString") == "fail":
        raise RuntimeError("broke mid-stream")
    yield b"last"
"#;

/// One response read as it arrives: the status, headers, each piece's bytes and arrival
/// time, and how the body ended.
struct Arrivals {
    status: u16,
    headers: reqwest::header::HeaderMap,
    pieces: Vec<(Instant, Vec<u8>)>,
    error: Option<String>,
}

impl Arrivals {
    fn body(&self) -> String {
        let all: Vec<u8> = self.pieces.iter().flat_map(|(_, b)| b.clone()).collect();
        String::from_utf8_lossy(&all).into_owned()
    }

    /// When the body's text first contained `needle`.
    fn arrival_of(&self, needle: &str) -> Instant {
        let mut seen = Vec::new();
        for (at, b) in &self.pieces {
            seen.extend_from_slice(b);
            if String::from_utf8_lossy(&seen).contains(needle) {
                return *at;
            }
        }
        panic!("{needle:?} never arrived in {:?}", self.body())
    }
}

fn read_arrivals(s: &Server, path: &str) -> Arrivals {
    let mut r = s.http.get(s.url(path)).send().unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let mut pieces = Vec::new();
    let mut buf = [0u8; 4096];
    let error = loop {
        match r.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => pieces.push((Instant::now(), buf[..n].to_vec())),
            Err(e) => break Some(e.to_string()),
        }
    };
    Arrivals {
        status,
        headers,
        pieces,
        error,
    }
}

fn create_url(s: &Server, name: &str, mode: &str) -> Value {
    let r = s
        .http
        .post(s.url(&format!("/2021-10-31/functions/{name}/url")))
        .json(&json!({"AuthType": "NONE", "InvokeMode": mode}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    r.json().unwrap()
}

/// The first chunk arrives while the function still sleeps: ≥ 500 ms before the last.
fn check_streams(s: &Server, name: &str, runtime: &str) {
    let a = read_arrivals(s, &format!("/fn/{name}/"));
    assert_eq!(a.status, 201, "{}\n{}", a.body(), s.log());
    assert_eq!(a.headers["x-streamed"], runtime);
    assert_eq!(a.headers["content-type"], "text/plain");
    assert_eq!(a.headers["transfer-encoding"], "chunked");
    assert!(a.error.is_none(), "{:?}", a.error);
    assert_eq!(a.body(), "first;last");
    let gap = a.arrival_of("last") - a.arrival_of("first;");
    assert!(
        gap >= Duration::from_millis(500),
        "{runtime}: the first chunk came only {gap:?} before the last"
    );

    // A failure mid-stream: the first chunk arrived, then the connection ends without
    // the final chunk.
    let a = read_arrivals(s, &format!("/fn/{name}/?fail"));
    assert_eq!(a.status, 201);
    assert_eq!(a.body(), "first;");
    assert!(a.error.is_some(), "{runtime}: the cut body ended cleanly");
    assert!(
        eventually(Duration::from_secs(5), || s
            .log()
            .contains("streamed response failed mid-stream")),
        "{}",
        s.log()
    );
}

#[test]
fn url_in_response_stream_mode_streams_node_and_python() {
    let s = Server::start(&[]);
    s.deploy(
        "node-streamer",
        node_cfg("index.handler"),
        &[("index.js", NODE_STREAMER)],
    );
    s.deploy(
        "py-streamer",
        python_cfg("app.handler"),
        &[("app.py", PYTHON_STREAMER)],
    );
    for name in ["node-streamer", "py-streamer"] {
        let cfg = create_url(&s, name, "RESPONSE_STREAM");
        assert_eq!(cfg["InvokeMode"], "RESPONSE_STREAM");
    }
    check_streams(&s, "node-streamer", "node");
    check_streams(&s, "py-streamer", "python");

    // The mode is read back, and can be switched to BUFFERED: the same body, whole.
    let (status, cfg) = s.get_json("/2021-10-31/functions/py-streamer/url");
    assert_eq!(status, 200);
    assert_eq!(cfg["InvokeMode"], "RESPONSE_STREAM");
    let (status, cfg) = s.put_json(
        "/2021-10-31/functions/py-streamer/url",
        &json!({"InvokeMode": "BUFFERED"}),
    );
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(cfg["InvokeMode"], "BUFFERED");
    let a = read_arrivals(&s, "/fn/py-streamer/");
    assert_eq!(a.status, 201);
    assert_eq!(a.body(), "first;last");
    assert!(a.headers.get("content-length").is_some(), "{:?}", a.headers);

    // An unknown mode is refused in Lambda's shape.
    let r = s
        .http
        .put(s.url("/2021-10-31/functions/py-streamer/url"))
        .json(&json!({"InvokeMode": "FAST"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let e: Value = r.json().unwrap();
    assert_eq!(e["type"], "InvalidParameterValueException");
}

#[test]
fn streaming_url_with_a_buffered_function_answers_whole() {
    let s = Server::start(&[]);
    s.deploy(
        "plain",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async () => ({ statusCode: 202, headers: {'x-plain': 'yes'}, body: 'whole' });",
        )],
    );
    create_url(&s, "plain", "RESPONSE_STREAM");
    let a = read_arrivals(&s, "/fn/plain/");
    assert_eq!(a.status, 202);
    assert_eq!(a.headers["x-plain"], "yes");
    assert_eq!(a.body(), "whole");
}

#[test]
fn manifest_url_in_response_stream_mode_streams() {
    let dir = tempfile::tempdir().unwrap();
    write_files(
        dir.path(),
        &[
            ("app.py", PYTHON_STREAMER),
            (
                "nimbus.toml",
                r#"
[functions.manifest-streamer]
runtime = "python3.11"
handler = "app.handler"
url = { invoke_mode = "RESPONSE_STREAM" }
"#,
            ),
        ],
    );
    let s = Server::start(&[]);
    cli_ok(&s.cli(&["deploy", dir.path().to_str().unwrap()])).unwrap();
    let (status, cfg) = s.get_json("/2021-10-31/functions/manifest-streamer/url");
    assert_eq!(status, 200, "{cfg}");
    assert_eq!(cfg["InvokeMode"], "RESPONSE_STREAM");
    check_streams(&s, "manifest-streamer", "python");
}
