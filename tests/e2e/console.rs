//! The web console (`/ui/`, crates/nimbus-console): its embedded assets and headers,
//! `GET /v1/whoami`, and the pages driven in real headless Chromium by
//! `tests/browser/console.mjs` (playwright-core, installed into target/test-browser on first
//! use): sign in, overview, a function, invoke from the form, a read-only key without write
//! buttons and with 403 on writes, the other pages, sign out.
//!
//! `NIMBUS_CONSOLE_SHOTS=DIR` saves screenshots of the pages visited (docs/console/*.png).

use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const ECHO: &str = "exports.handler = async (e) => { console.log('console test got ' + JSON.stringify(e)); return e; };";
/// Fails its first call only (the instance stays warm between the two).
const FAILS_ONCE: &str = "let n = 0; exports.handler = async (e) => { if (n++ === 0) throw new Error('first call fails'); return 'ok'; };";

/// The policy `nimbus keys create --read-only`-style keys get in these tests: reads only.
fn read_only() -> Value {
    json!({"Statement": [{"Effect": "Allow",
        "Action": ["lambda:Get*", "lambda:List*", "nimbus:Get*", "nimbus:List*"], "Resource": "*"}]})
}

fn whoami(s: &Server, creds: &Credentials, query: &str) -> Value {
    let r = s.signed("GET", &format!("/v1/whoami{query}"), b"", creds);
    assert_eq!(r.status().as_u16(), 200);
    r.json().unwrap()
}

/// A server with auth on, the `echo` function and a read-only key.
fn setup() -> (Server, Credentials) {
    let s = Server::start_with_auth(&[]);
    let (status, body) = s.deploy_signed(
        "echo",
        node_cfg("index.handler"),
        &[("index.js", ECHO)],
        &s.admin(),
    );
    assert!(status < 300, "{body}");
    let ro = s.create_key("viewer", read_only());
    (s, ro)
}

/// Runs the browser script's `steps`; returns the JSON line of each step.
fn browse(s: &Server, ro: &Credentials, steps: &str, extra: &[(&str, String)]) -> Vec<Value> {
    let admin = s.admin();
    let mut env = vec![
        ("NIMBUS_URL", s.base()),
        ("ADMIN_ID", admin.id.clone()),
        ("ADMIN_SECRET", admin.secret.clone()),
        ("RO_ID", ro.id.clone()),
        ("RO_SECRET", ro.secret.clone()),
        ("FUNCTION", "echo".to_string()),
        ("STEPS", steps.to_string()),
    ];
    if let Some(dir) = std::env::var_os("NIMBUS_CONSOLE_SHOTS") {
        std::fs::create_dir_all(&dir).unwrap();
        env.push(("SHOTS", dir.to_string_lossy().into_owned()));
    }
    env.extend(extra.iter().cloned());
    let out = browser::run_script("console.mjs", &env);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "console.mjs failed:\n{stdout}\n{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
    eprintln!("{stdout}");
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn console_assets_are_embedded_with_a_strict_policy() {
    let (s, _) = setup();
    let r = s.http.get(s.url("/ui/")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200, "the console needs no signature");
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    for d in [
        "default-src 'self'",
        "script-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(d), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    let html = r.text().unwrap();
    assert!(html.contains("<script type=\"module\" src=\"app.js\">"));
    assert!(
        !html.contains("<style") && !html.contains("style="),
        "no inline style"
    );
    let again = s
        .http
        .get(s.url("/ui/"))
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);
    let js = s.http.get(s.url("/ui/sigv4.js")).send().unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let licence = s
        .http
        .get(s.url("/ui/vendor/uPlot.LICENSE"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(licence.contains("MIT License"), "{licence}");
    assert_eq!(
        s.http
            .get(s.url("/ui/missing.js"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    // `/ui` is Nimbus's: a function may not declare a route under it.
    let mut cfg = node_cfg("index.handler");
    cfg["routes"] = json!(["GET /ui/mine"]);
    let (status, body) = s.deploy_signed("squat", cfg, &[("index.js", ECHO)], &s.admin());
    assert_eq!(status, 400, "{body}");
}

#[test]
fn whoami_tells_each_key_what_it_may_do() {
    let (s, ro) = setup();
    let unsigned = s.http.get(s.url("/v1/whoami")).send().unwrap();
    assert_eq!(unsigned.status().as_u16(), 403);
    let admin = whoami(&s, &s.admin(), "");
    assert_eq!(admin["key_id"], s.admin().id);
    assert_eq!(admin["admin"], true);
    assert_eq!(admin["auth"], true);
    assert_eq!(admin["actions"]["lambda:InvokeFunction"], true);
    assert_eq!(admin["actions"]["nimbus:Admin"], true);
    let text = admin.to_string();
    assert!(!text.contains(&s.admin().secret), "no secret in {text}");
    let me = whoami(&s, &ro, "");
    assert_eq!(me["name"], "viewer");
    assert_eq!(me["admin"], false);
    assert_eq!(me["actions"]["lambda:ListFunctions"], true);
    assert_eq!(me["actions"]["nimbus:GetLogs"], true);
    assert_eq!(me["actions"]["lambda:InvokeFunction"], false);
    assert_eq!(me["actions"]["nimbus:PurgeQueue"], false);
    assert_eq!(me["actions"]["nimbus:Admin"], false);
    // A key allowed to invoke one function only: true for it, false for every function.
    let one = s.create_key(
        "echo-invoker",
        json!({"Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction",
            "Resource": "arn:aws:lambda:us-east-1:000000000000:function:echo"}]}),
    );
    assert_eq!(
        whoami(&s, &one, "?function=echo")["actions"]["lambda:InvokeFunction"],
        true
    );
    assert_eq!(
        whoami(&s, &one, "")["actions"]["lambda:InvokeFunction"],
        false
    );
    let bad = s.signed("GET", "/v1/whoami?function=no%20such", b"", &one);
    assert_eq!(bad.status().as_u16(), 400);
}

#[test]
fn console_in_chromium_signs_in_invokes_and_hides_writes_from_a_read_only_key() {
    let (s, ro) = setup();
    let admin = s.admin();
    // Something on every page: a queue with a message, a schedule and a rule targeting
    // `echo` (its triggers), an async event.
    let r = s.signed("PUT", "/v1/queues/orders", b"{}", &admin);
    assert_eq!(r.status().as_u16(), 200);
    let r = s.signed(
        "POST",
        "/v1/queues/orders/messages",
        br#"{"body":"order 1"}"#,
        &admin,
    );
    assert_eq!(r.status().as_u16(), 200);
    let rule = json!({"schedule": "rate(1 hour)", "targets": ["echo"]}).to_string();
    let r = s.signed(
        "PUT",
        "/v1/buses/default/rules/nightly",
        rule.as_bytes(),
        &admin,
    );
    assert_eq!(r.status().as_u16(), 200);
    let r = s.signed_at(
        "POST",
        "/2015-03-31/functions/echo/invocations",
        b"{\"async\":true}",
        &[("x-amz-invocation-type", "Event")],
        &admin,
        "lambda",
        None,
    );
    assert_eq!(r.status().as_u16(), 202);
    let steps = browse(
        &s,
        &ro,
        "signin,overview,functions,function,invoke,readonly,pages,signout",
        &[
            ("QUEUE", "orders".to_string()),
            ("RULE", "nightly".to_string()),
        ],
    );
    let invoke = steps.iter().find(|v| v["step"] == "invoke").unwrap();
    assert_eq!(invoke["response"], json!({"who": "console"}));
    let ro_write = steps.iter().find(|v| v["step"] == "readonly").unwrap();
    assert_eq!(ro_write["write"]["status"], 403);
}

/// Needs `GET /v1/metrics/summary` and `/v1/functions/{name}/metrics` (helper "history").
#[test]
fn console_charts_show_the_last_hour() {
    let (s, ro) = setup();
    for i in 0..3 {
        let r = s.signed(
            "POST",
            "/2015-03-31/functions/echo/invocations",
            format!("{{\"n\":{i}}}").as_bytes(),
            &s.admin(),
        );
        assert_eq!(r.status().as_u16(), 200);
    }
    browse(&s, &ro, "signin,charts", &[]);
}

/// Needs `GET /v1/functions/{name}/logs?follow=true` (helper "logs").
#[test]
fn console_live_tail_shows_a_call_within_a_second() {
    let (s, ro) = setup();
    browse(&s, &ro, "signin,livetail", &[]);
}

/// Needs `POST /v1/functions/{name}/events/{id}/redrive` (the lead).
#[test]
fn console_redrives_a_dead_event() {
    let (s, ro) = setup();
    let admin = s.admin();
    let (status, body) = s.deploy_signed(
        "doomed",
        node_cfg("index.handler"),
        &[("index.js", FAILS_ONCE)],
        &admin,
    );
    assert!(status < 300, "{body}");
    let cfg = json!({"MaximumRetryAttempts": 0}).to_string();
    let r = s.signed(
        "PUT",
        "/2019-09-25/functions/doomed/event-invoke-config",
        cfg.as_bytes(),
        &admin,
    );
    assert_eq!(r.status().as_u16(), 200);
    let r = s.signed_at(
        "POST",
        "/2015-03-31/functions/doomed/invocations",
        b"{}",
        &[("x-amz-invocation-type", "Event")],
        &admin,
        "lambda",
        None,
    );
    assert_eq!(r.status().as_u16(), 202);
    let dead = || {
        let r = s.signed(
            "GET",
            "/v1/functions/doomed/events?status=dead",
            b"",
            &admin,
        );
        r.json::<Value>().unwrap()["events"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(eventually(Duration::from_secs(20), || dead() == 1));
    browse(
        &s,
        &ro,
        "signin,redrive",
        &[("DEAD_FUNCTION", "doomed".to_string())],
    );
    // Redriven: attempted again (on the warm instance, which now succeeds).
    let succeeded = || {
        let r = s.signed(
            "GET",
            "/v1/functions/doomed/events?status=succeeded",
            b"",
            &admin,
        );
        r.json::<Value>().unwrap()["events"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert!(eventually(Duration::from_secs(20), || succeeded() == 1));
    assert_eq!(dead(), 0);
}

/// The functions list with 1,000 functions: rendered virtually (a few dozen rows in the
/// DOM). Reports the time to the list's first paint (the issue's target: < 300 ms on
/// loopback); no timed assertion.
#[test]
fn console_lists_a_thousand_functions() {
    let (s, ro) = setup();
    let zip = zip_files(&[("index.js", ECHO)]);
    let code = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &zip);
    for i in 0..999 {
        let body = json!({"config": node_cfg("index.handler"), "code_zip": code}).to_string();
        let r = s.signed_at(
            "PUT",
            &format!("/v1/functions/fn-{i:04}"),
            body.as_bytes(),
            &[("content-type", "application/json")],
            &s.admin(),
            "lambda",
            None,
        );
        assert!(r.status().is_success(), "{}", r.text().unwrap());
    }
    let steps = browse(
        &s,
        &ro,
        "signin,firstpaint",
        &[("EXPECT_FUNCTIONS", "1000".to_string())],
    );
    let fp = steps.iter().find(|v| v["step"] == "firstpaint").unwrap();
    eprintln!(
        "console first paint with 1,000 functions: list painted at {} ms (median of 5), first contentful paint {} ms",
        fp["median_list_painted_ms"], fp["median_fcp_ms"]
    );
}
