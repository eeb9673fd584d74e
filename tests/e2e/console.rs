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
    let dead = dead_letter(&s, "orders");
    let event_id = matched_event(&s);
    let alarm = json!({"function": "echo", "metric": "errors", "comparison": ">", "threshold": 0});
    let r = s.signed(
        "PUT",
        "/v1/alarms/echo-errors",
        alarm.to_string().as_bytes(),
        &admin,
    );
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let steps = browse(
        &s,
        &ro,
        "signin,overview,functions,function,invoke,pages,queueredrive,busmatches,alarms,readonly,signout",
        &[
            ("QUEUE", "orders".to_string()),
            ("RULE", "nightly".to_string()),
            ("DLQ", "orders-dlq".to_string()),
            ("SOURCE", "orders".to_string()),
            ("MATCH_RULE", "orders-placed".to_string()),
            ("EVENT_ID", event_id),
            ("ALARM", "echo-errors".to_string()),
        ],
    );
    let invoke = steps.iter().find(|v| v["step"] == "invoke").unwrap();
    assert_eq!(invoke["response"], json!({"who": "console"}));
    let ro_write = steps.iter().find(|v| v["step"] == "readonly").unwrap();
    assert_eq!(ro_write["write"]["status"], 403);
    let redriven = steps.iter().find(|v| v["step"] == "queueredrive").unwrap();
    assert!(
        redriven["said"]
            .as_str()
            .unwrap()
            .starts_with("2 message(s) moved"),
        "{redriven}"
    );
    // The console's redrive put the dead letters back in their source queue.
    let r = s.signed(
        "POST",
        "/v1/queues/orders/receive",
        br#"{"max":10}"#,
        &admin,
    );
    let got: Value = r.json().unwrap();
    let ids: Vec<&str> = got["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&dead.as_str()), "{got}");
}

/// Gives `queue` the dead-letter queue `QUEUE-dlq` (after one receive) and puts a message
/// there, received once through `queue`; returns its id.
fn dead_letter(s: &Server, queue: &str) -> String {
    let admin = s.admin();
    let ok = |r: reqwest::blocking::Response| {
        assert!(r.status().is_success(), "{}", r.status());
        r.json::<Value>().unwrap_or(Value::Null)
    };
    ok(s.signed("PUT", &format!("/v1/queues/{queue}-dlq"), b"{}", &admin));
    let settings = json!({"dead_letter": format!("{queue}-dlq"), "max_receive_count": 1, "visibility_timeout": 0});
    ok(s.signed(
        "PUT",
        &format!("/v1/queues/{queue}"),
        settings.to_string().as_bytes(),
        &admin,
    ));
    let sent = ok(s.signed(
        "POST",
        &format!("/v1/queues/{queue}/messages"),
        br#"{"body":"poison"}"#,
        &admin,
    ));
    // Every message is received once; the next receive moves them to the DLQ.
    for _ in 0..2 {
        ok(s.signed(
            "POST",
            &format!("/v1/queues/{queue}/receive"),
            br#"{"max":10}"#,
            &admin,
        ));
    }
    let dlq = ok(s.signed("GET", &format!("/v1/queues/{queue}-dlq"), b"", &admin));
    assert_eq!(dlq["stats"]["visible"], 2, "{dlq}");
    sent["id"].as_str().unwrap().to_string()
}

/// A rule `orders-placed` on `source: shop` targeting `echo`, and an event it matched;
/// returns the event's id.
fn matched_event(s: &Server) -> String {
    let admin = s.admin();
    let rule = json!({"pattern": {"source": ["shop"]}, "targets": ["echo"]}).to_string();
    let r = s.signed(
        "PUT",
        "/v1/buses/default/rules/orders-placed",
        rule.as_bytes(),
        &admin,
    );
    assert_eq!(r.status().as_u16(), 200);
    let events = json!({"Entries": [{"Source": "shop", "DetailType": "Order Placed", "Detail": "{\"n\":1}"}]});
    let r = s.signed(
        "POST",
        "/v1/buses/default/events",
        events.to_string().as_bytes(),
        &admin,
    );
    let v: Value = r.json().unwrap();
    v["Entries"][0]["EventId"]
        .as_str()
        .expect("an event id")
        .to_string()
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
        "console first paint with 1,000 functions: list painted at {} ms (median of 5), first contentful paint {} ms; \
         GET /v1/functions {} ms for {} bytes of JSON, with the console's ?fields= {} ms for {} bytes (medians of 5)",
        fp["median_list_painted_ms"],
        fp["median_fcp_ms"],
        fp["median_list_request_full_ms"],
        fp["full_bytes"],
        fp["median_list_request_fields_ms"],
        fp["fields_bytes"]
    );
    // What the console asks: only the fields it shows, the same functions.
    let slim = s.signed("GET", "/v1/functions?fields=name,config.runtime", b"", &ro);
    let slim: Value = slim.json().unwrap();
    let fns = slim["functions"].as_array().unwrap();
    assert_eq!(fns.len(), 1000);
    assert_eq!(
        fns[0],
        json!({"name": "echo", "config": {"runtime": "nodejs20.x"}})
    );
    let bad = s.signed("GET", "/v1/functions?fields=name,a.b", b"", &ro);
    assert_eq!(bad.status().as_u16(), 400);

    // A client that accepts gzip (the browser) gets the list compressed; others as it is.
    let plain = s.signed("GET", "/v1/functions", b"", &ro);
    assert!(plain.headers().get("content-encoding").is_none());
    let plain = plain.bytes().unwrap();
    let gz = s.signed_at(
        "GET",
        "/v1/functions",
        b"",
        &[("accept-encoding", "gzip")],
        &ro,
        "lambda",
        None,
    );
    assert_eq!(gz.status().as_u16(), 200);
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let packed = gz.bytes().unwrap();
    let mut unpacked = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(&packed[..]),
        &mut unpacked,
    )
    .unwrap();
    let (a, b): (Value, Value) = (
        serde_json::from_slice(&plain).unwrap(),
        serde_json::from_slice(&unpacked).unwrap(),
    );
    assert_eq!(a, b);
    eprintln!(
        "GET /v1/functions: {} bytes, {} gzip-compressed",
        plain.len(),
        packed.len()
    );
    assert!(packed.len() * 4 < plain.len());
}
