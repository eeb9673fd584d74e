//! The official runtime interface clients, unchanged, as `provided.al2023` functions:
//! PyPI `awslambdaric` and the Rust `lambda_runtime` crate (`tests/lambda-rust-fn`, built
//! here); response streaming from the Node bootstrap (`awslambda.streamifyResponse`,
//! `awslambda.HttpResponseStream.from`) through the Invoke API and function URLs; and the
//! Runtime API contract checked over raw HTTP by a bootstrap of its own (chunked bodies
//! with trailers, refusals and their shapes, the 6 MB limit).

use base64::Engine;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::Write;

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A zip of `(path, bytes, mode)` entries.
fn zip_bytes(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        for (path, contents, mode) in files {
            let opts = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
            w.start_file(*path, opts).unwrap();
            w.write_all(contents).unwrap();
        }
        w.finish().unwrap();
    }
    buf.into_inner()
}

fn provided_cfg() -> Value {
    json!({ "runtime": "provided.al2023", "handler": "app.handler" })
}

/// A POST through the Lambda Invoke API with raw bytes back.
fn invoke_raw(s: &Server, name: &str, payload: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = s
        .http
        .post(s.url(&format!("/2015-03-31/functions/{name}/invocations")))
        .body(payload.to_string())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.bytes().unwrap().to_vec())
}

// ------------------------------------------------------------- Python RIC --

const PY_APP: &str = r#"import os

def handler(event, context):
    if event.get("fail"):
        raise ValueError(event["fail"])
    cc = context.client_context
    return {
        "echo": event,
        "pid": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"],  # the instance (sandboxed pids all look alike)
        "request_id": context.aws_request_id,
        "arn": context.invoked_function_arn,
        "left": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
        "custom": cc.custom if cc else None,
        "env": cc.env if cc else None,
        "trace": os.environ.get("_X_AMZN_TRACE_ID"),
    }
"#;

/// Deploys `app` under a bootstrap that runs PyPI's awslambdaric, vendored into the
/// package as a custom runtime does (`pip install --target`, tests/support/python.rs).
fn deploy_ric(s: &Server, name: &str, handler: &str) {
    let vendored = python::files_under(&python::awslambdaric());
    let bootstrap = format!("#!/bin/sh\nexec python3 -m awslambdaric {handler}\n");
    let mut files: Vec<(&str, &[u8])> = vec![
        ("bootstrap", bootstrap.as_bytes()),
        ("app.py", PY_APP.as_bytes()),
    ];
    files.extend(vendored.iter().map(|(p, c)| (p.as_str(), c.as_slice())));
    let (status, body) = s.deploy_zip(name, provided_cfg(), &zip_entries(files));
    assert!(status < 300, "deploy {name}: {status} {body}\n{}", s.log());
}

#[test]
fn ric_python_awslambdaric_runs_warm() {
    let s = Server::start(&[]);
    deploy_ric(&s, "pyric", "app.handler");
    let mut pid = None;
    for i in 0..4 {
        let r = s.invoke("pyric", &format!(r#"{{"n":{i},"s":"é"}}"#));
        let v = r.ok();
        // Content-Type: application/json on next makes the RIC hand over a dict.
        assert_eq!(v["echo"], json!({"n": i, "s": "é"}));
        assert_eq!(v["request_id"], r.header("x-amzn-requestid").unwrap());
        assert_eq!(v["function_name"], "pyric");
        assert!(
            v["arn"].as_str().unwrap().ends_with(":function:pyric"),
            "{v}"
        );
        let left = v["left"].as_i64().unwrap();
        assert!(left > 0 && left <= 3000, "remaining time {left}");
        let p = v["pid"].as_str().unwrap().to_string();
        assert_eq!(
            *pid.get_or_insert(p.clone()),
            p,
            "a warm call ran in a new process"
        );
    }

    // A handler exception: Lambda's error shape, and the process stays warm.
    let r = s.invoke("pyric", r#"{"fail":"bad input"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    let e = r.json();
    assert_eq!(e["errorType"], "ValueError");
    assert_eq!(e["errorMessage"], "bad input");
    assert!(e["stackTrace"].is_array(), "{e}");
    assert_eq!(e["requestId"], r.header("x-amzn-requestid").unwrap());

    // Client context (base64 JSON in, plain JSON to the runtime) and the trace id.
    let ctx = r#"{"custom":{"k":"v"},"env":{"platform":"test"}}"#;
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let r = s.invoke_with(
        "pyric",
        b"{}".to_vec(),
        &[
            ("x-amz-client-context", &b64(ctx)),
            ("x-amzn-trace-id", trace),
        ],
    );
    let v = r.ok();
    assert_eq!(v["custom"], json!({"k": "v"}));
    assert_eq!(v["env"], json!({"platform": "test"}));
    assert_child_trace(&v["trace"], trace);
    assert_eq!(
        v["pid"].as_str().map(str::to_string),
        pid,
        "the error or context call restarted the process"
    );

    // An init failure goes through /init/error with its type.
    deploy_ric(&s, "pyric-nohandler", "app.missing");
    let r = s.invoke("pyric-nohandler", "{}");
    assert!(r.function_error(), "{}", r.body);
    assert_eq!(
        r.json()["errorType"],
        "Runtime.HandlerNotFound",
        "{}",
        r.body
    );
}

// --------------------------------------------------------- Rust lambda_runtime --

#[test]
fn ric_rust_lambda_runtime_runs_warm() {
    let exe = cargo_build("lambda-rust-fn", "lambda-rust-fn");
    let binary = std::fs::read(&exe).unwrap();
    let s = Server::start(&[]);
    let mut cfg = provided_cfg();
    cfg["url"] = json!(true);
    let (status, body) = s.deploy_zip("rustfn", cfg, &zip_bytes(&[("bootstrap", &binary, 0o755)]));
    assert!(status < 300, "deploy: {status} {body}");

    let ctx = r#"{"custom":{"k":"v"},"environment":{"e":"1"}}"#;
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let mut pid = None;
    for i in 0..4 {
        let r = s.invoke_with(
            "rustfn",
            format!(r#"{{"i":{i}}}"#).into_bytes(),
            &[
                ("x-amz-client-context", &b64(ctx)),
                ("x-amzn-trace-id", trace),
            ],
        );
        let v = r.ok();
        assert_eq!(v["echo"], json!({"i": i}));
        assert_eq!(v["request_id"], r.header("x-amzn-requestid").unwrap());
        assert!(
            v["arn"].as_str().unwrap().ends_with(":function:rustfn"),
            "{v}"
        );
        assert_eq!(v["function_name"], "rustfn");
        assert_eq!(v["memory"], 128);
        assert_child_trace(&v["trace_id"], trace);
        assert_eq!(v["client_context"]["custom"], json!({"k": "v"}));
        assert_eq!(v["client_context"]["environment"], json!({"e": "1"}));
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let deadline = v["deadline_ms"].as_u64().unwrap();
        assert!(
            deadline > now_ms && deadline <= now_ms + 3_500,
            "deadline {deadline}"
        );
        let p = v["pid"].as_str().unwrap().to_string();
        assert_eq!(
            *pid.get_or_insert(p.clone()),
            p,
            "a warm call ran in a new process"
        );
    }

    // The error path: Rust posts `Lambda-Runtime-Function-Error-Type: unhandled` and its
    // Diagnostic; the caller gets the body verbatim.
    let r = s.invoke("rustfn", r#"{"fail":"no good"}"#);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        r.json(),
        json!({"errorType": "EchoError", "errorMessage": "no good"})
    );

    // A streamed response in the HTTP-integration format: the Invoke API returns the body.
    let (status, headers, body) = invoke_raw(&s, "rustfn", r#"{"stream":["one ","two ","three"]}"#);
    assert_eq!(status, 200);
    assert!(!headers.contains_key("x-amz-function-error"));
    assert_eq!(String::from_utf8_lossy(&body), "one two three");

    // The same through a function URL: status, headers and cookies from the prelude.
    let r = s.http.get(s.url("/fn/rustfn/stream")).send().unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert_eq!(r.headers()["x-rust-fn"], "streamed");
    assert_eq!(r.headers()["set-cookie"], "flavour=rust; Path=/");
    assert_eq!(r.text().unwrap(), "hello from rust");

    // A mid-stream error (Rust writes the error "trailers" into the body) is a function error.
    let r = s.invoke("rustfn", r#"{"stream":["partial"],"stream_error":true}"#);
    assert_eq!(
        r.header("x-amz-function-error"),
        Some("Unhandled"),
        "{}",
        r.body
    );
    let e = r.json();
    assert_eq!(e["errorType"], "Runtime.StreamError");
    assert!(
        e["errorMessage"].as_str().unwrap().contains("stream broke"),
        "{e}"
    );

    let v = s.invoke("rustfn", r#"{"after":"all that"}"#).ok();
    assert_eq!(
        v["pid"].as_str().map(str::to_string),
        pid,
        "the instance did not stay warm"
    );
}

// ------------------------------------------------------- Node response streaming --

const NODE_STREAM: &str = r#"const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  const q = event.queryStringParameters || {};
  const n = Number(event.n || q.n || 5);
  responseStream.setContentType('text/plain; charset=utf-8');
  for (let i = 0; i < n; i++) {
    responseStream.write(`chunk-${i};`);
    await sleep(40);
  }
  if (event.fail || q.fail) {
    throw new TypeError(event.fail || q.fail);
  }
  responseStream.write(Buffer.from([0, 1, 2, 255]));
  responseStream.write(`pid=${process.env.AWS_LAMBDA_LOG_STREAM_NAME}`);
  responseStream.end();
});
"#;

const NODE_HTTP_STREAM: &str = r#"const { pipeline } = require('stream/promises');
const { Readable } = require('stream');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  responseStream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201,
    headers: { 'content-type': 'text/csv', 'x-streamed': 'yes' },
    cookies: ['session=abc; Path=/', 'theme=dark'],
  });
  async function* rows() {
    yield 'id,name\n';
    for (let i = 0; i < 4; i++) {
      await sleep(30);
      yield `${i},row-${i}\n`;
    }
  }
  await pipeline(Readable.from(rows()), responseStream);
});
"#;

fn node_stream_expected(n: usize) -> Vec<u8> {
    let mut want = Vec::new();
    for i in 0..n {
        want.extend_from_slice(format!("chunk-{i};").as_bytes());
    }
    want.extend_from_slice(&[0, 1, 2, 255]);
    want
}

#[test]
fn ric_node_streaming_response_arrives_intact() {
    let s = Server::start(&[]);
    let mut cfg = node_cfg("index.handler");
    cfg["url"] = json!(true);
    s.deploy("nstream", cfg.clone(), &[("index.js", NODE_STREAM)]);
    s.deploy("nhttp", cfg, &[("index.js", NODE_HTTP_STREAM)]);

    // Invoke API, repeatedly and warm: the bytes come back exactly as written.
    let mut pid = None;
    for n in [5usize, 1, 8] {
        let (status, headers, body) = invoke_raw(&s, "nstream", &format!(r#"{{"n":{n}}}"#));
        assert_eq!(status, 200);
        assert!(
            !headers.contains_key("x-amz-function-error"),
            "{}",
            String::from_utf8_lossy(&body)
        );
        let want = node_stream_expected(n);
        assert_eq!(
            &body[..want.len()],
            &want[..],
            "{}",
            String::from_utf8_lossy(&body)
        );
        let p = String::from_utf8_lossy(&body[want.len()..]).into_owned();
        assert_eq!(
            pid.get_or_insert(p.clone()),
            &p,
            "a warm call ran in a new process"
        );
    }

    // Through a function URL: a stream without a prelude keeps the content type the
    // handler set (a buffered response would be application/json).
    let r = s.http.get(s.url("/fn/nstream/?n=3")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    let body = r.bytes().unwrap();
    let want = node_stream_expected(3);
    assert_eq!(&body[..want.len()], &want[..]);

    // A failure after some chunks: the error trailers make it a function error.
    let r = s.invoke("nstream", r#"{"n":2,"fail":"broke mid-stream"}"#);
    assert_eq!(
        r.header("x-amz-function-error"),
        Some("Unhandled"),
        "{}",
        r.body
    );
    let e = r.json();
    assert_eq!(e["errorType"], "TypeError");
    assert_eq!(e["errorMessage"], "broke mid-stream");
    let r = s.http.get(s.url("/fn/nstream/?n=2&fail=x")).send().unwrap();
    assert_eq!(r.status().as_u16(), 502);
    // And the instance keeps serving.
    let (_, _, body) = invoke_raw(&s, "nstream", r#"{"n":2}"#);
    assert_eq!(
        String::from_utf8_lossy(&body[body.len() - pid.as_ref().unwrap().len()..]),
        *pid.as_ref().unwrap()
    );

    // HttpResponseStream.from: status, headers and cookies apply on a function URL.
    let rows = "id,name\n0,row-0\n1,row-1\n2,row-2\n3,row-3\n";
    for _ in 0..2 {
        let r = s.http.get(s.url("/fn/nhttp/export")).send().unwrap();
        assert_eq!(r.status().as_u16(), 201);
        assert_eq!(r.headers()["content-type"], "text/csv");
        assert_eq!(r.headers()["x-streamed"], "yes");
        let cookies: Vec<_> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(cookies, ["session=abc; Path=/", "theme=dark"]);
        assert_eq!(r.text().unwrap(), rows);
    }
    // On the Invoke API the prelude is gone: just the body.
    let (status, _, body) = invoke_raw(&s, "nhttp", "{}");
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8_lossy(&body), rows);

    // As with the Node RIC, the invocation ends when the stream ends, even after the
    // handler resolved; objects are written as JSON.
    s.deploy(
        "nlate",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = awslambda.streamifyResponse(async (event, stream) => {\n  setTimeout(() => { stream.write({ late: true }); setTimeout(() => stream.end(' end'), 30); }, 30);\n});\n",
        )],
    );
    let (_, headers, body) = invoke_raw(&s, "nlate", "{}");
    assert!(!headers.contains_key("x-amz-function-error"));
    assert_eq!(String::from_utf8_lossy(&body), r#"{"late":true} end"#);
}

// ------------------------------------------------------------ raw Runtime API --

/// A bootstrap that speaks raw HTTP/1.1 to the Runtime API. Each invocation's event names
/// a case; what the Runtime API answered to the previous invocation's final post is
/// reported in the next response (`previous`).
const RAW_BOOTSTRAP: &str = r#"#!/usr/bin/env python3
import base64, json, os, socket

HOST, PORT = os.environ["AWS_LAMBDA_RUNTIME_API"].rsplit(":", 1)
API = "/2018-06-01/runtime"

def call(method, path, headers=(), body=b"", chunks=None, trailers=None):
    s = socket.create_connection((HOST, int(PORT)))
    head = [f"{method} {path} HTTP/1.1", "Host: rapi", "Connection: close"]
    head += [f"{k}: {v}" for k, v in headers]
    if chunks is not None:
        head.append("Transfer-Encoding: chunked")
    elif method == "POST":
        head.append(f"Content-Length: {len(body)}")
    s.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    if chunks is not None:
        for c in chunks:
            s.sendall(b"%x\r\n" % len(c) + c + b"\r\n")
        tail = "".join(f"{k}: {v}\r\n" for k, v in (trailers or []))
        s.sendall(b"0\r\n" + tail.encode() + b"\r\n")
    elif body:
        s.sendall(body)
    data = b""
    while True:
        c = s.recv(65536)
        if not c:
            break
        data += c
    s.close()
    head, _, payload = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    hdrs = {}
    for l in lines[1:]:
        k, v = l.split(":", 1)
        hdrs[k.strip().lower()] = v.strip()
    return {"status": int(lines[0].split()[1]), "headers": hdrs, "body": payload.decode("utf-8", "replace")}

TRAILER = [("Trailer", "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body")]
previous = None
while True:
    nxt = call("GET", API + "/invocation/next")
    rid = nxt["headers"]["lambda-runtime-aws-request-id"]
    event = json.loads(nxt["body"])
    case = event.get("case")
    base = f"{API}/invocation/{rid}"
    report = {"case": case, "next": nxt, "previous": previous, "pid": os.environ["AWS_LAMBDA_LOG_STREAM_NAME"]}
    if case == "refusals":
        report["wrong_id"] = call("POST", f"{API}/invocation/not-{rid}/response", body=b"{}")
        report["next_again"] = call("GET", API + "/invocation/next")
        body = json.dumps(report).encode()
        # Go's success path: chunked, error trailers declared and left empty.
        previous = call("POST", base + "/response", TRAILER, chunks=[body[:10], body[10:]], trailers=[("Lambda-Runtime-Function-Error-Type", "")])
        previous["repost"] = call("POST", base + "/response", body=b"{}")
        previous["init_error"] = call("POST", API + "/init/error", body=b"{}")
    elif case == "go-trailer-error":
        err = base64.b64encode(json.dumps({"errorType": "Boom", "errorMessage": "reader failed"}).encode()).decode()
        previous = call("POST", base + "/response", TRAILER, chunks=[b"partial"], trailers=[("Lambda-Runtime-Function-Error-Type", "Function.ReaderError"), ("Lambda-Runtime-Function-Error-Body", err)])
    elif case == "stream-error":
        err = base64.b64encode(json.dumps({"errorType": "Error", "errorMessage": "gave up"}).encode()).decode()
        previous = call("POST", base + "/response", TRAILER + [("Lambda-Runtime-Function-Response-Mode", "streaming")], chunks=[b"a", b"b"], trailers=[("Lambda-Runtime-Function-Error-Type", "bogus"), ("Lambda-Runtime-Function-Error-Body", err)])
    elif case == "bad-mode":
        previous = call("POST", base + "/response", [("Lambda-Runtime-Function-Response-Mode", "buffered")], body=b"{}")
    elif case == "too-large":
        previous = call("POST", base + "/response", body=b"x" * (7 * 1024 * 1024))
    elif case == "too-large-chunked":
        piece = b"x" * (1024 * 1024)
        previous = call("POST", base + "/response", chunks=[piece] * 7)
    elif case == "error-type":
        previous = call("POST", base + "/error", [("Lambda-Runtime-Function-Error-Type", event["header"])], body=json.dumps({"errorType": "FromBody", "errorMessage": "typed"}).encode())
    elif case == "error-no-header":
        previous = call("POST", base + "/error", body=json.dumps({"errorType": "GoError", "errorMessage": "no header"}).encode())
    else:
        previous = call("POST", base + "/response", body=json.dumps(report).encode())
"#;

#[test]
fn ric_runtime_api_contract_over_raw_http() {
    let s = Server::start(&[]);
    s.deploy(
        "raw",
        json!({"runtime": "provided.al2023", "handler": "x"}),
        &[("bootstrap", RAW_BOOTSTRAP)],
    );
    let ctx = r#"{"custom":{"a":"b"}}"#;
    let r = s.invoke_with(
        "raw",
        br#"{"case":"refusals"}"#.to_vec(),
        &[
            ("x-amz-client-context", &b64(ctx)),
            ("x-amzn-trace-id", RAW_TRACE),
        ],
    );
    let v = r.ok();
    let pid = v["pid"].clone();
    let next = &v["next"];
    assert_eq!(next["status"], 200);
    let h = &next["headers"];
    assert_eq!(h["content-type"], "application/json");
    assert_eq!(
        h["lambda-runtime-aws-request-id"],
        r.header("x-amzn-requestid").unwrap()
    );
    assert!(
        h["lambda-runtime-deadline-ms"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok(),
        "{h}"
    );
    assert!(h["lambda-runtime-invoked-function-arn"]
        .as_str()
        .unwrap()
        .ends_with(":function:raw"));
    assert_eq!(h["lambda-runtime-client-context"], ctx);
    assert_child_trace(&h["lambda-runtime-trace-id"], RAW_TRACE);
    assert_eq!(v["wrong_id"]["status"], 400);
    assert_eq!(
        serde_json::from_str::<Value>(v["wrong_id"]["body"].as_str().unwrap()).unwrap(),
        json!({"errorMessage": "Invalid request ID", "errorType": "InvalidRequestID"})
    );
    assert_eq!(v["next_again"]["status"], 403, "{}", v["next_again"]);

    let report = s.invoke("raw", "{}").ok();
    let prev = &report["previous"];
    assert_eq!(
        prev["status"], 202,
        "chunked response with trailers: {prev}"
    );
    assert_eq!(prev["body"], r#"{"status":"OK"}"#);
    assert_eq!(prev["headers"]["content-type"], "application/json");
    assert_eq!(prev["repost"]["status"], 403, "{prev}");
    assert!(prev["repost"]["body"]
        .as_str()
        .unwrap()
        .contains("InvalidStateTransition"));
    assert_eq!(prev["init_error"]["status"], 403, "{prev}");

    // Go-style: an error in the trailers of a chunked, non-streaming response.
    let r = s.invoke("raw", r#"{"case":"go-trailer-error"}"#);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        r.json(),
        json!({"errorType": "Boom", "errorMessage": "reader failed"})
    );
    assert_eq!(s.invoke("raw", "{}").ok()["previous"]["status"], 202);

    // Streaming mode with an error trailer whose type is not Lambda-shaped.
    let r = s.invoke("raw", r#"{"case":"stream-error"}"#);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(
        r.json(),
        json!({"errorType": "Error", "errorMessage": "gave up"})
    );

    // Any response mode but `streaming`: 400, and the invocation fails.
    let r = s.invoke("raw", r#"{"case":"bad-mode"}"#);
    assert!(r.function_error(), "{}", r.body);
    assert_eq!(r.json()["errorType"], "Runtime.InvalidResponseModeHeader");
    let prev = s.invoke("raw", "{}").ok()["previous"].clone();
    assert_eq!(prev["status"], 400);
    assert_eq!(
        serde_json::from_str::<Value>(prev["body"].as_str().unwrap()).unwrap(),
        json!({"errorMessage": "Invalid function response mode", "errorType": "InvalidFunctionResponseMode"})
    );

    // More than 6 MB, declared or chunked: 413 to the runtime, Lambda's error to the caller.
    for case in ["too-large", "too-large-chunked"] {
        let r = s.invoke("raw", &format!(r#"{{"case":"{case}"}}"#));
        assert!(r.function_error(), "{case}: {}", r.body);
        assert_eq!(
            r.json()["errorType"],
            "Function.ResponseSizeTooLarge",
            "{case}"
        );
        let prev = s.invoke("raw", "{}").ok()["previous"].clone();
        assert_eq!(prev["status"], 413, "{case}: {prev}");
        assert_eq!(
            serde_json::from_str::<Value>(prev["body"].as_str().unwrap()).unwrap(),
            json!({"errorMessage": "Exceeded maximum allowed payload size (6291556 bytes).", "errorType": "RequestEntityTooLarge"}),
            "{case}"
        );
    }

    // /error: the body goes to the caller verbatim; a 202 to the runtime.
    for header in ["Function.MyError", "unhandled"] {
        let r = s.invoke(
            "raw",
            &format!(r#"{{"case":"error-type","header":"{header}"}}"#),
        );
        assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
        assert_eq!(
            r.json(),
            json!({"errorType": "FromBody", "errorMessage": "typed"})
        );
    }
    let r = s.invoke("raw", r#"{"case":"error-no-header"}"#);
    assert_eq!(r.json()["errorType"], "GoError");
    let prev = s.invoke("raw", "{}").ok()["previous"].clone();
    assert_eq!(prev["status"], 202);
    assert_eq!(prev["body"], r#"{"status":"OK"}"#);

    // All of it in one warm process.
    assert_eq!(prev_pid(&s), pid);
}

fn prev_pid(s: &Server) -> Value {
    s.invoke("raw", "{}").ok()["pid"].clone()
}

/// The trace header the raw-HTTP runtime is invoked with.
const RAW_TRACE: &str =
    "Root=1-6b12fcd5-9f5b207063ffb5ecca756dc3;Parent=53995c3f42cd8ad8;Sampled=0";

/// A function's trace header (`_X_AMZN_TRACE_ID`, `Lambda-Runtime-Trace-Id`) is the
/// caller's trace (root and sampling decision) with the invocation's own span as parent.
fn assert_child_trace(seen: &Value, sent: &str) {
    let seen = seen
        .as_str()
        .unwrap_or_else(|| panic!("no trace header: {seen}"));
    let field = |h: &str, k: &str| {
        h.split(';')
            .find_map(|f| f.strip_prefix(k))
            .map(str::to_string)
    };
    assert_eq!(field(seen, "Root="), field(sent, "Root="), "{seen}");
    assert_eq!(field(seen, "Sampled="), field(sent, "Sampled="), "{seen}");
    let parent = field(seen, "Parent=").unwrap_or_default();
    assert_eq!(parent.len(), 16, "{seen}");
    assert_ne!(Some(parent), field(sent, "Parent="), "{seen}");
}
