//! Function URLs and manifest routes: API Gateway v2.0 events in, HTTP responses out.

use nimbus_tests::*;
use serde_json::{json, Value};

const ECHO: &str = r#"exports.handler = async (event) => {
  if (event.rawPath === '/binary') {
    const bytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    return { statusCode: 200, headers: { 'content-type': 'application/octet-stream' }, body: bytes.toString('base64'), isBase64Encoded: true };
  }
  if (event.rawPath === '/plain') return 'just a string';
  return { statusCode: 201, headers: { 'content-type': 'application/json', 'x-custom': 'yes' }, cookies: ['a=1; Path=/', 'b=2'], body: JSON.stringify(event) };
};"#;

fn url_fn(s: &Server) {
    let mut cfg = node_cfg("index.handler");
    cfg["url"] = json!(true);
    cfg["routes"] = json!(["GET /hello/{name}", "ANY /api/{proxy+}"]);
    let reply = s.deploy("web", cfg, &[("index.js", ECHO)]);
    assert_eq!(
        reply["function"]["function_url"],
        format!("{}/fn/web/", s.base())
    );
}

#[test]
fn function_url_request_becomes_a_v2_event() {
    let s = Server::start(&[]);
    url_fn(&s);
    let r = s
        .http
        .post(s.url("/fn/web/my/path?a=1&a=2&b=x%20y"))
        .header("content-type", "application/json")
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("cookie", "c1=v1; c2=v2")
        .body(r#"{"hello":"world"}"#)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(r.headers()["x-custom"], "yes");
    let cookies: Vec<_> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(cookies, vec!["a=1; Path=/", "b=2"]);
    let ev: Value = r.json().unwrap();
    assert_eq!(ev["version"], "2.0");
    assert_eq!(ev["routeKey"], "$default");
    assert_eq!(ev["rawPath"], "/my/path");
    assert_eq!(ev["rawQueryString"], "a=1&a=2&b=x%20y");
    assert_eq!(ev["queryStringParameters"], json!({"a": "1,2", "b": "x y"}));
    assert_eq!(ev["headers"]["x-multi"], "one,two");
    assert!(ev["headers"].get("cookie").is_none());
    assert_eq!(ev["cookies"], json!(["c1=v1", "c2=v2"]));
    assert_eq!(ev["requestContext"]["http"]["method"], "POST");
    assert_eq!(ev["requestContext"]["http"]["path"], "/my/path");
    assert_eq!(ev["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(ev["body"], r#"{"hello":"world"}"#);
    assert_eq!(ev["isBase64Encoded"], false);
    assert!(
        ev.get("httpMethod").is_none(),
        "v2 events never carry httpMethod"
    );
}

#[test]
fn binary_bodies_both_ways() {
    let s = Server::start(&[]);
    url_fn(&s);
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let r = s
        .http
        .put(s.url("/fn/web/upload"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .unwrap();
    let ev: Value = r.json().unwrap();
    assert_eq!(ev["isBase64Encoded"], true);
    use base64::Engine;
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(ev["body"].as_str().unwrap())
            .unwrap(),
        bytes
    );
    let r = s.http.get(s.url("/fn/web/binary")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().unwrap().to_vec(), (0..=255u8).collect::<Vec<_>>());
    // A plain return value becomes a 200 JSON body.
    let r = s.http.get(s.url("/fn/web/plain")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().unwrap(), r#""just a string""#);
}

#[test]
fn manifest_routes_match_with_path_parameters() {
    let s = Server::start(&[]);
    url_fn(&s);
    let ev: Value = s
        .http
        .get(s.url("/hello/ada?x=1"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ev["routeKey"], "GET /hello/{name}");
    assert_eq!(ev["pathParameters"], json!({"name": "ada"}));
    assert_eq!(ev["rawPath"], "/hello/ada");
    let ev: Value = s
        .http
        .delete(s.url("/api/a/b/c"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(ev["routeKey"], "ANY /api/{proxy+}");
    assert_eq!(ev["pathParameters"], json!({"proxy": "a/b/c"}));
    let r = s.http.get(s.url("/nothing/here")).send().unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.headers()["x-amzn-errortype"], "ResourceNotFoundException");
    // A second function may not take a route that is already served.
    let mut cfg = node_cfg("index.handler");
    cfg["routes"] = json!(["GET /hello/{name}"]);
    let (status, body) = s.deploy_zip("thief", cfg, &zip_files(&[("index.js", ECHO)]));
    assert_eq!(status, 409, "{body}");
}

#[test]
fn function_url_config_api_and_failures() {
    let s = Server::start(&[]);
    s.deploy("nourl", node_cfg("index.handler"), &[("index.js", "exports.handler = async (e) => { if (e.rawPath === '/fail') throw new Error('x'); return {statusCode: 200, body: 'ok'}; };")]);
    assert_eq!(
        s.http
            .get(s.url("/fn/nourl/"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    let r = s
        .http
        .post(s.url("/2021-10-31/functions/nourl/url"))
        .json(&json!({"AuthType": "NONE"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let cfg: Value = r.json().unwrap();
    assert_eq!(cfg["FunctionUrl"], format!("{}/fn/nourl/", s.base()));
    assert_eq!(
        s.http
            .get(s.url("/fn/nourl/"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "ok"
    );
    // A failing function answers 502 with a JSON error, not the stack trace.
    let r = s.http.get(s.url("/fn/nourl/fail")).send().unwrap();
    assert_eq!(r.status().as_u16(), 502);
    let e: Value = r.json().unwrap();
    assert_eq!(e["type"], "FunctionError");
    assert_eq!(
        s.http
            .delete(s.url("/2021-10-31/functions/nourl/url"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        s.http
            .get(s.url("/fn/nourl/"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
}
