//! Bad input gets a clear JSON error with the right status and loses nothing.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::io::Write;

fn assert_error(status: u16, body: &Value, want_status: u16, want_type: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["type"], want_type, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(body["Message"], body["message"]);
}

fn zip_slip() -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    {
        let mut w = zip::ZipWriter::new(&mut buf);
        w.start_file("index.js", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"exports.handler = async () => 1;").unwrap();
        w.start_file("../../evil.js", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"pwned").unwrap();
        w.finish().unwrap();
    }
    buf.into_inner()
}

#[test]
fn bad_deploys_are_rejected_and_nothing_is_lost() {
    let s = Server::start(&[]);
    s.deploy(
        "good",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async () => 'still here';")],
    );
    let code = zip_files(&[("index.js", "exports.handler = async () => 1;")]);

    let (st, b) = s.deploy_zip("bad%20name", node_cfg("index.handler"), &code);
    assert_error(st, &b, 400, "InvalidParameterValueException");
    let (st, b) = s.deploy_zip(&"x".repeat(65), node_cfg("index.handler"), &code);
    assert_error(st, &b, 400, "InvalidParameterValueException");
    let (st, b) = s.deploy_zip("rt", json!({"runtime": "cobol7", "handler": "a.b"}), &code);
    assert_error(st, &b, 400, "InvalidParameterValueException");
    assert!(b["message"].as_str().unwrap().contains("cobol7"), "{b}");
    let (st, b) = s.deploy_zip(
        "mem",
        json!({"runtime": "nodejs20.x", "handler": "a.b", "memory_mb": 64}),
        &code,
    );
    assert_error(st, &b, 400, "InvalidParameterValueException");
    let (st, b) = s.deploy_zip(
        "broken",
        node_cfg("index.handler"),
        b"PK\x03\x04 definitely not a zip",
    );
    assert_error(st, &b, 400, "InvalidParameterValueException");
    let (st, b) = s.deploy_zip("slip", node_cfg("index.handler"), &zip_slip());
    assert_error(st, &b, 400, "InvalidParameterValueException");
    assert!(
        !s.data_dir.path().join("evil.js").exists()
            && !s.data_dir.path().join("data/evil.js").exists()
    );
    // Not JSON at all.
    let r = s
        .http
        .put(s.url("/v1/functions/junk"))
        .body("{{{{")
        .send()
        .unwrap();
    let st = r.status().as_u16();
    assert_error(
        st,
        &r.json().unwrap(),
        400,
        "InvalidParameterValueException",
    );

    // None of the failed deploys created a function; the good one still works.
    let (_, list) = s.get_json("/v1/functions");
    assert_eq!(list["functions"].as_array().unwrap().len(), 1);
    assert_eq!(s.invoke("good", "{}").ok(), json!("still here"));
    assert!(s.healthy());
}

#[test]
fn bad_invocations_get_lambda_errors() {
    let s = Server::start(&[]);
    s.deploy(
        "echo",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async (e) => e;")],
    );

    let r = s.invoke("missing", "{}");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("ResourceNotFoundException")
    );
    assert!(r.header("x-amzn-requestid").is_some());
    assert_error(r.status, &r.json(), 404, "ResourceNotFoundException");

    let r = s.invoke("echo", "this is not json");
    assert_error(r.status, &r.json(), 400, "InvalidRequestContentException");

    let big = format!("\"{}\"", "x".repeat(6 * 1024 * 1024 + 10));
    let r = s.invoke("echo", &big);
    assert_error(r.status, &r.json(), 413, "RequestTooLargeException");

    let r = s.invoke("echo:nosuchversion", "{}");
    assert_eq!(r.status, 404, "{}", r.body);
    let r = s.invoke("bad name", "{}");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = s.invoke_with(
        "echo",
        b"{}".to_vec(),
        &[("X-Amz-Invocation-Type", "Sometimes")],
    );
    assert_error(r.status, &r.json(), 400, "InvalidParameterValueException");
    let r = s.invoke_with(
        "echo",
        b"{}".to_vec(),
        &[("X-Amz-Invocation-Type", "DryRun")],
    );
    assert_eq!(r.status, 204);

    // Full ARNs, partial ARNs and percent-encoded names resolve to the same function.
    assert_eq!(
        s.invoke(
            "arn:aws:lambda:us-east-1:000000000000:function:echo",
            r#"{"a":1}"#
        )
        .ok(),
        json!({"a": 1})
    );
    assert_eq!(
        s.invoke("000000000000:function:echo:%24LATEST", r#"{"a":2}"#)
            .ok(),
        json!({"a": 2})
    );
    // The function's own 6 MB response limit.
    s.deploy(
        "huge",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async () => 'y'.repeat(7 * 1024 * 1024);",
        )],
    );
    let r = s.invoke("huge", "{}");
    assert!(r.function_error(), "{}", &r.body[..r.body.len().min(200)]);
    assert_eq!(r.json()["errorType"], "Function.ResponseSizeTooLarge");
    assert_eq!(s.invoke("echo", r#"{"ok":true}"#).ok(), json!({"ok": true}));
    assert!(s.healthy());
}

/// Bad input to the S3 listener (`tests/python/test_s3_bad_input.py`): malformed XML bodies,
/// a wrong Content-MD5, truncated uploads, 5 GiB declared with a short body, NUL and
/// too-long keys — S3's error each time, and the objects already stored, the blob store's
/// `tmp/` and the server untouched.
#[test]
fn s3_bad_input_suite() {
    let stdout = python::pytest(&["tests/python/test_s3_bad_input.py"]);
    println!("{stdout}");
}
