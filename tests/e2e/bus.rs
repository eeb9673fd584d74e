//! The event bus through the real binary: PutEvents routed by event patterns to exactly the
//! matching functions with EventBridge's envelope, and schedule rules firing on time, never
//! twice across `kill -9`, with a missed firing run once on start. Schedules run under the
//! test-only `--time-scale` (rate periods divided by it).

use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Appends each event it gets, as one JSON line, to the file in $OUT.
pub(crate) const RECORDER: &str = "const fs = require('fs'); exports.handler = async (e) => { fs.appendFileSync(process.env.OUT, JSON.stringify(e) + '\\n'); return 'ok'; };";

pub(crate) fn recorder(s: &Server, name: &str, out: &std::path::Path) {
    let mut cfg = node_cfg("index.handler");
    cfg["env"] = json!({"OUT": out.to_str().unwrap()});
    s.deploy(name, cfg, &[("index.js", RECORDER)]);
}

pub(crate) fn received(out: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn put(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = s.http.put(s.url(path)).json(&body).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn put_events(s: &Server, bus: &str, entries: Value) -> Value {
    let r = s
        .http
        .post(s.url(&format!("/v1/buses/{bus}/events")))
        .json(&json!({ "Entries": entries }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().unwrap()
}

#[test]
fn bus_routes_put_events_to_exactly_the_matching_functions() {
    let dir = tempfile::tempdir().unwrap();
    let out = |n: &str| dir.path().join(format!("{n}.jsonl"));
    let s = Server::start_unsandboxed(&[]);
    for f in ["big", "eu", "mail", "never"] {
        recorder(&s, f, &out(f));
    }
    let (status, _) = put(&s, "/v1/buses/shop", json!({}));
    assert_eq!(status, 200);
    // Several operators: exact, prefix, numeric range, exists, anything-but, arrays match
    // any, suffix.
    let rules = [
        (
            "big-orders",
            json!({"source": ["shop"], "detail-type": [{"prefix": "Order"}],
                   "detail": {"total": [{"numeric": [">", 100, "<=", 1000]}], "coupon": [{"exists": false}]}}),
            "big",
        ),
        (
            "eu-vip",
            json!({"detail": {"country": [{"anything-but": ["US", "CA"]}], "tags": ["vip"]}}),
            "eu",
        ),
        (
            "example-mail",
            json!({"detail": {"email": [{"suffix": "@example.com"}]}}),
            "mail",
        ),
    ];
    for (name, pattern, target) in &rules {
        let (status, body) = put(
            &s,
            &format!("/v1/buses/shop/rules/{name}"),
            json!({"pattern": pattern, "targets": [target]}),
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["state"], "ENABLED");
    }
    let (status, body) = put(
        &s,
        "/v1/buses/shop/rules/off",
        json!({"pattern": {"source": ["shop"]}, "targets": ["never"], "enabled": false}),
    );
    assert_eq!(status, 200, "{body}");
    // A bad pattern is a 400 with the parser's message.
    let (status, body) = put(
        &s,
        "/v1/buses/shop/rules/bad",
        json!({"pattern": {"detail": {"n": [{"numeric": [">"]}]}}, "targets": ["big"]}),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid event pattern"),
        "{body}"
    );

    let entry = |detail: Value, dt: &str| json!({"Source": "shop", "DetailType": dt, "Detail": detail.to_string(), "Resources": ["r1"]});
    let reply = put_events(
        &s,
        "shop",
        json!([
            // big + eu
            entry(json!({"total": 150, "country": "DE", "tags": ["new", "vip"], "email": "a@x.org"}), "Order Placed"),
            // mail only (total too small, country excluded)
            entry(json!({"total": 50, "country": "US", "tags": ["vip"], "email": "b@example.com"}), "Order Placed"),
            // nothing: coupon exists, wrong detail-type prefix
            entry(json!({"total": 150, "coupon": "X", "country": "US"}), "Refund"),
            // malformed
            {"Source": "shop", "DetailType": "Order Placed", "Detail": "not json"},
        ]),
    );
    assert_eq!(reply["FailedEntryCount"], 1, "{reply}");
    assert_eq!(reply["Entries"][3]["ErrorCode"], "MalformedDetail");
    let id = |i: usize| reply["Entries"][i]["EventId"].as_str().unwrap().to_string();
    let ids_of = |f: &str| -> Vec<String> {
        received(&out(f))
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(30), || ids_of("big").len() == 1
            && ids_of("eu").len() == 1
            && ids_of("mail").len() == 1),
        "{}",
        s.log()
    );
    // Nothing more arrives.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(ids_of("big"), [id(0)]);
    assert_eq!(ids_of("eu"), [id(0)]);
    assert_eq!(ids_of("mail"), [id(1)]);
    assert!(ids_of("never").is_empty());
    // The EventBridge envelope.
    let ev = &received(&out("big"))[0];
    assert_eq!(ev["version"], "0");
    assert_eq!(ev["source"], "shop");
    assert_eq!(ev["detail-type"], "Order Placed");
    assert_eq!(ev["account"], "000000000000");
    assert_eq!(ev["region"], "us-east-1");
    assert_eq!(ev["resources"], json!(["r1"]));
    assert_eq!(ev["detail"]["total"], 150);
    assert!(ev["time"].as_str().unwrap().ends_with('Z'), "{ev}");
    // Listing rules; the CLI sends events too.
    let (_, rules) = s.get_json("/v1/buses/shop/rules");
    assert_eq!(rules["rules"].as_array().unwrap().len(), 4);
    let cli = cli_ok(&s.cli(&[
        "bus",
        "put-events",
        "--bus",
        "shop",
        "--source",
        "shop",
        "--detail-type",
        "Order Placed",
        "--detail",
        r#"{"total": 999}"#,
    ]))
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || ids_of("big").len() == 2),
        "{cli}"
    );
    let listed = cli_ok(&s.cli(&["bus", "rules", "shop"])).unwrap();
    assert!(
        listed.contains("big-orders") && listed.contains("DISABLED"),
        "{listed}"
    );
}

/// Firing time → the event ids delivered for it.
pub(crate) fn firings(out: &std::path::Path) -> BTreeMap<String, Vec<String>> {
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in received(out) {
        assert_eq!(e["detail-type"], "Scheduled Event");
        assert_eq!(e["source"], "aws.events");
        assert_eq!(e["detail"], json!({}));
        m.entry(e["time"].as_str().unwrap().to_string())
            .or_default()
            .push(e["id"].as_str().unwrap().to_string());
    }
    m
}

/// Every firing was delivered under one id (a redelivery after a crash repeats the same id;
/// a double firing would carry a new one), and no two firings share an id.
pub(crate) fn assert_fired_once(f: &BTreeMap<String, Vec<String>>) {
    let mut all = HashSet::new();
    for (time, ids) in f {
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), 1, "firing {time} fired twice: {ids:?}");
        assert!(all.insert(ids[0].clone()), "two firings share an id: {f:?}");
    }
}

/// The firing instants of a rate anchored at `created_ms` with period `period_ms`, in
/// `(from_ms, to_ms]`, as whole Unix seconds (the envelope's `time` resolution).
pub(crate) fn grid(created_ms: i64, period_ms: i64, from_ms: i64, to_ms: i64) -> Vec<i64> {
    (1..)
        .map(|k| created_ms + k * period_ms)
        .skip_while(|t| *t <= from_ms)
        .take_while(|t| *t <= to_ms)
        .map(|t| t.div_euclid(1000))
        .collect()
}

/// Delivered firing instants, as whole Unix seconds.
pub(crate) fn fired_secs(f: &BTreeMap<String, Vec<String>>) -> Vec<i64> {
    f.keys().map(|t| parse_time(t)).collect()
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn bus_schedule_fires_on_time_and_never_twice_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tick.jsonl");
    // rate(1 minute) fires every second at time scale 60.
    let mut s = Server::start_unsandboxed(&["--time-scale", "60"]);
    recorder(&s, "tick", &out);
    // Warm the function so cold start does not blur the timing.
    s.invoke("tick", r#"{"warm":1}"#).ok();
    std::fs::write(&out, "").unwrap();
    let (status, body) = put(
        &s,
        "/v1/buses/default/rules/every-minute",
        json!({"schedule": "rate(1 minute)", "targets": ["tick"]}),
    );
    assert_eq!(status, 200, "{body}");
    let created = body["created_ms"].as_i64().unwrap();
    std::thread::sleep(Duration::from_millis(5500));
    // On time: every firing instant of the first 5.5 s, each exactly on the 1 s grid (the
    // envelope's time is the firing instant, whatever the delivery latency).
    let expected = grid(created, 1000, created, created + 5500);
    assert!(expected.len() >= 5, "{expected:?}");
    assert!(
        eventually(Duration::from_secs(10), || {
            let got = fired_secs(&firings(&out));
            expected.iter().all(|t| got.contains(t))
        }),
        "expected firings at {expected:?}, got {:?}",
        firings(&out)
    );
    assert_fired_once(&firings(&out));
    // kill -9 and restart at once, twice; delivery goes on with no firing twice.
    s.restart();
    std::thread::sleep(Duration::from_millis(1500));
    s.restart();
    std::thread::sleep(Duration::from_millis(3000));
    let now = unix_ms();
    let f = firings(&out);
    assert_fired_once(&f);
    let on_grid = grid(created, 1000, created, now + 1000);
    let got = fired_secs(&f);
    assert!(
        got.iter().all(|t| on_grid.contains(t)),
        "every firing on the grid: {got:?} vs {on_grid:?}"
    );
    // Down for well under a second each time: at most a firing or two per restart were
    // missed (and one of those runs on start).
    assert!(
        got.len() + 4 >= on_grid.len() - 1,
        "{} of {} firings delivered: {got:?}",
        got.len(),
        on_grid.len()
    );
    let (_, rule) = s.get_json("/v1/buses/default/rules/every-minute");
    assert!(rule["last_fired_ms"].as_i64().unwrap() > created, "{rule}");
}

#[test]
fn bus_schedule_missed_while_down_runs_once_on_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tick.jsonl");
    // rate(5 minutes) fires every 5 s at time scale 60.
    let mut s = Server::start_unsandboxed(&["--time-scale", "60"]);
    recorder(&s, "tick", &out);
    let (status, body) = put(
        &s,
        "/v1/buses/default/rules/five",
        json!({"schedule": "rate(5 minutes)", "targets": ["tick"]}),
    );
    assert_eq!(status, 200, "{body}");
    let created = body["created_ms"].as_i64().unwrap();
    assert!(
        eventually(Duration::from_secs(15), || firings(&out).len() == 1),
        "{}",
        s.log()
    );
    s.kill9();
    let killed = unix_ms();
    // Down long enough to miss two or three firings.
    std::thread::sleep(Duration::from_secs(13));
    let restarting = unix_ms();
    s.restart();
    let healthy = unix_ms();
    // Wait for the first regular firing after the restart.
    let after = grid(created, 5000, healthy, healthy + 5000)[0];
    assert!(
        eventually(Duration::from_secs(15), || fired_secs(&firings(&out))
            .contains(&after)),
        "{:?}",
        firings(&out)
    );
    let f = firings(&out);
    assert_fired_once(&f);
    let missed = grid(created, 5000, killed, restarting);
    assert!(missed.len() >= 2, "{missed:?}");
    // Since the kill: the catch-up firing, then every regular one — a contiguous run of the
    // grid whose first firing is the latest one missed before the server started.
    let window = grid(created, 5000, killed, after * 1000 + 999);
    let since: Vec<i64> = fired_secs(&f)
        .into_iter()
        .filter(|t| window.contains(t))
        .collect();
    assert!(
        window.ends_with(&since),
        "delivered {since:?} is not a suffix of the firings {window:?}"
    );
    let first = since[0];
    assert!(
        first * 1000 <= healthy && first * 1000 + 5000 > restarting,
        "the catch-up firing {first} is the latest one missed (killed {killed}, restarting {restarting}, healthy {healthy}): {since:?}"
    );
    assert!(
        since.len() < window.len(),
        "not every missed firing ran: {since:?}"
    );
}

/// `2015-10-08T16:53:06Z` → Unix seconds.
pub(crate) fn parse_time(t: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19)
}

#[test]
fn bus_time_parser() {
    assert_eq!(parse_time("2015-10-08T16:53:06Z"), 1_444_323_186);
    assert_eq!(parse_time("1970-01-01T00:00:00Z"), 0);
}

#[test]
fn bus_manifest_declares_schedules_buses_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got.jsonl");
    write_files(
        dir.path(),
        &[
            ("index.js", RECORDER),
            (
                "nimbus.toml",
                &format!(
                    r#"
[functions.tick]
runtime = "nodejs20.x"
handler = "index.handler"
schedule = "rate(1 minute)"
env = {{ OUT = "{out}" }}

[functions.orders]
runtime = "nodejs20.x"
handler = "index.handler"
schedule = "cron(0 12 * * ? *)"
schedule_timezone = "Europe/Berlin"
env = {{ OUT = "{out}" }}

[buses.shop]

[rules.big]
bus = "shop"
pattern = {{ source = ["shop"], detail = {{ total = [{{ numeric = [">", 100] }}] }} }}
targets = ["orders"]
"#,
                    out = out.display()
                ),
            ),
        ],
    );
    let s = Server::start_unsandboxed(&["--time-scale", "60"]);
    let text = cli_ok(&s.cli(&["deploy", dir.path().to_str().unwrap()])).unwrap();
    assert!(text.contains("schedule-tick"), "{text}");
    let (status, tick) = s.get_json("/v1/buses/default/rules/schedule-tick");
    assert_eq!(status, 200, "{tick}");
    assert_eq!(tick["schedule"], "rate(1 minute)");
    assert!(tick["targets"][0]["arn"]
        .as_str()
        .unwrap()
        .ends_with(":function:tick"));
    let (_, orders) = s.get_json("/v1/buses/default/rules/schedule-orders");
    assert_eq!(orders["timezone"], "Europe/Berlin");
    let (status, big) = s.get_json("/v1/buses/shop/rules/big");
    assert_eq!(status, 200, "{big}");
    assert_eq!(big["pattern"]["detail"]["total"][0]["numeric"][1], 100);
    // The scheduled function runs (every second at time scale 60), and the rule routes.
    put_events(
        &s,
        "shop",
        json!([{"Source": "shop", "DetailType": "x", "Detail": "{\"total\": 101}"}]),
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let got = received(&out);
            got.iter().any(|e| e["source"] == "aws.events")
                && got.iter().any(|e| e["source"] == "shop")
        }),
        "{:?}",
        received(&out)
    );
    // Deploying again keeps the rules (replaced in place).
    cli_ok(&s.cli(&["deploy", dir.path().to_str().unwrap()])).unwrap();
    let (_, rules) = s.get_json("/v1/buses/default/rules");
    assert_eq!(rules["rules"].as_array().unwrap().len(), 2, "{rules}");
}

#[test]
fn bus_api_errors_and_cli_rules() {
    let s = Server::start(&[]);
    s.deploy(
        "f",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async () => 1;")],
    );
    let status = |r: reqwest::blocking::Response| r.status().as_u16();
    // The default bus exists and cannot be deleted; a bus with rules cannot either.
    let (code, buses) = s.get_json("/v1/buses");
    assert_eq!(
        (code, buses["buses"][0]["name"].as_str()),
        (200, Some("default"))
    );
    assert_eq!(
        status(s.http.delete(s.url("/v1/buses/default")).send().unwrap()),
        400
    );
    assert_eq!(s.get_json("/v1/buses/nope").0, 404);
    let (code, body) = put(
        &s,
        "/v1/buses/nope/rules/r",
        json!({"pattern": {"source": ["a"]}, "targets": ["f"]}),
    );
    assert_eq!(code, 404, "{body}");
    for (body, needle) in [
        (
            json!({"schedule": "rate(0 minutes)", "targets": ["f"]}),
            "rate",
        ),
        (
            json!({"schedule": "cron(0 12 * * ? *)", "timezone": "Mars/Olympus", "targets": ["f"]}),
            "time zone",
        ),
        (
            json!({"pattern": {"a": [1]}, "schedule": "rate(1 minute)", "targets": ["f"]}),
            "exactly one",
        ),
        (json!({"pattern": "nope", "targets": ["f"]}), "json object"),
        (
            json!({"pattern": {"a": [1]}, "targets": ["bad name!"]}),
            "target",
        ),
    ] {
        let (code, reply) = put(&s, "/v1/buses/default/rules/r", body.clone());
        assert_eq!(code, 400, "{body} → {reply}");
        assert!(
            reply["message"].as_str().unwrap().contains(needle),
            "{body} → {reply}"
        );
    }
    // The CLI writes and lists rules; a deleted rule is gone.
    cli_ok(&s.cli(&["bus", "create", "ops"])).unwrap();
    cli_ok(&s.cli(&[
        "bus",
        "rule",
        "ops",
        "nightly",
        "--schedule",
        "cron(0 3 * * ? *)",
        "--timezone",
        "Europe/Berlin",
        "--target",
        "f",
    ]))
    .unwrap();
    cli_ok(&s.cli(&[
        "bus",
        "rule",
        "ops",
        "errors",
        "--pattern",
        r#"{"detail-type": [{"prefix": "Error"}]}"#,
        "--target",
        "f",
        "--disabled",
    ]))
    .unwrap();
    let listed = cli_ok(&s.cli(&["bus", "rules", "ops"])).unwrap();
    assert!(
        listed.contains("nightly")
            && listed.contains("cron(0 3 * * ? *) Europe/Berlin")
            && listed.contains("errors")
            && listed.contains("DISABLED"),
        "{listed}"
    );
    let bad = s.cli(&[
        "bus",
        "rule",
        "ops",
        "x",
        "--pattern",
        r#"{"a": 1}"#,
        "--target",
        "f",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("invalid event pattern"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert_eq!(
        status(s.http.delete(s.url("/v1/buses/ops")).send().unwrap()),
        409
    );
    cli_ok(&s.cli(&["bus", "rm-rule", "ops", "nightly"])).unwrap();
    cli_ok(&s.cli(&["bus", "rm-rule", "ops", "errors"])).unwrap();
    assert_eq!(s.get_json("/v1/buses/ops/rules/nightly").0, 404);
    cli_ok(&s.cli(&["bus", "rm", "ops"])).unwrap();
    assert!(!cli_ok(&s.cli(&["bus", "ls"])).unwrap().contains("ops"));
}

#[test]
fn bus_rules_feed_queues_and_other_buses() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("audit.jsonl");
    let s = Server::start_unsandboxed(&[]);
    recorder(&s, "auditor", &out);
    let (code, body) = put(&s, "/v1/queues/inbox", json!({}));
    assert!(code < 300, "{body}");
    assert_eq!(put(&s, "/v1/buses/audit", json!({})).0, 200);
    let (code, body) = put(
        &s,
        "/v1/buses/default/rules/orders",
        json!({"pattern": {"source": ["shop"]}, "targets": [
            "arn:aws:sqs:us-east-1:000000000000:inbox",
            "arn:aws:events:us-east-1:000000000000:event-bus/audit",
        ]}),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = put(
        &s,
        "/v1/buses/audit/rules/all",
        json!({"pattern": {"detail": {"n": [{"exists": true}]}}, "targets": ["auditor"]}),
    );
    assert_eq!(code, 200, "{body}");
    let reply = put_events(
        &s,
        "default",
        json!([{"Source": "shop", "DetailType": "Order", "Detail": "{\"n\": 7}"}]),
    );
    let id = reply["Entries"][0]["EventId"].as_str().unwrap().to_string();
    // The queue holds the event as a message body.
    let r: Value = s
        .http
        .post(s.url("/v1/queues/inbox/receive"))
        .json(&json!({"max": 10}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let msgs = r["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{r}");
    let ev: Value = serde_json::from_str(msgs[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (ev["id"].as_str(), ev["detail"]["n"].as_i64()),
        (Some(id.as_str()), Some(7))
    );
    // The audit bus routed the same event to its function.
    assert!(
        eventually(Duration::from_secs(20), || received(&out)
            .iter()
            .any(|e| e["id"] == id.as_str())),
        "{}",
        s.log()
    );
}

#[test]
fn bus_aws_cli_put_events() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got.jsonl");
    let s = Server::start_unsandboxed(&[]);
    recorder(&s, "sink", &out);
    let (code, body) = put(
        &s,
        "/v1/buses/default/rules/from-cli",
        json!({"pattern": {"source": ["cli.test"]}, "targets": ["sink"]}),
    );
    assert_eq!(code, 200, "{body}");
    let aws = |args: &[&str]| {
        python::aws_cli(&s.base())
            .args(args)
            .output()
            .expect("run the AWS CLI")
    };
    let o = aws(&[
        "events",
        "put-events",
        "--entries",
        r#"[{"Source":"cli.test","DetailType":"Ping","Detail":"{\"n\":1}","Time":"2030-01-02T03:04:05Z"},{"Source":"cli.test","DetailType":"Ping","Detail":"nope"}]"#,
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let reply: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(reply["FailedEntryCount"], 1, "{reply}");
    assert_eq!(reply["Entries"][1]["ErrorCode"], "MalformedDetail");
    let id = reply["Entries"][0]["EventId"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(20), || !received(&out).is_empty()),
        "{}",
        s.log()
    );
    let ev = &received(&out)[0];
    assert_eq!(ev["id"], id.as_str());
    assert_eq!(ev["time"], "2030-01-02T03:04:05Z");
    assert_eq!(ev["detail"], json!({"n": 1}));
    // An operation Nimbus does not serve is a clear error, and `/` still serves user routes.
    let o = aws(&["events", "list-archives"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not supported"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        s.http.get(s.url("/")).send().unwrap().status().as_u16(),
        404
    );
    let mut cfg = node_cfg("index.handler");
    cfg["routes"] = json!(["POST /"]);
    s.deploy(
        "root",
        cfg,
        &[(
            "index.js",
            "exports.handler = async (e) => ({ statusCode: 200, body: 'root ' + e.routeKey });",
        )],
    );
    let r = s.http.post(s.url("/")).body("x").send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().unwrap(), "root POST /");
}

#[test]
fn bus_receives_async_invocation_destinations() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.jsonl");
    let s = Server::start_unsandboxed(&[]);
    recorder(&s, "results", &out);
    s.deploy(
        "fails",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async () => { throw new Error('boom'); };",
        )],
    );
    s.deploy(
        "works",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async (e) => ({ ok: e.n });")],
    );
    let bus = "arn:aws:events:us-east-1:000000000000:event-bus/default";
    for (f, cfg) in [
        (
            "fails",
            json!({"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": bus}}}),
        ),
        (
            "works",
            json!({"DestinationConfig": {"OnSuccess": {"Destination": bus}}}),
        ),
    ] {
        let r = s
            .http
            .put(s.url(&format!("/2019-09-25/functions/{f}/event-invoke-config")))
            .json(&cfg)
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    }
    let (code, body) = put(
        &s,
        "/v1/buses/default/rules/results",
        json!({"pattern": {"source": ["lambda"], "detail-type": [{"prefix": "Lambda Function Invocation Result"}]},
               "targets": ["results"]}),
    );
    assert_eq!(code, 200, "{body}");
    for (f, payload) in [("fails", r#"{"n":1}"#), ("works", r#"{"n":2}"#)] {
        let r = s.invoke_with(
            f,
            payload.as_bytes().to_vec(),
            &[("X-Amz-Invocation-Type", "Event")],
        );
        assert_eq!(r.status, 202);
    }
    assert!(
        eventually(Duration::from_secs(30), || received(&out).len() == 2),
        "{:?}\n{}",
        received(&out),
        s.log()
    );
    let got = received(&out);
    let by_type = |t: &str| {
        got.iter()
            .find(|e| e["detail-type"] == t)
            .unwrap_or_else(|| panic!("no {t}: {got:?}"))
            .clone()
    };
    let failure = by_type("Lambda Function Invocation Result - Failure");
    assert_eq!(failure["source"], "lambda");
    assert_eq!(
        failure["resources"],
        json!([
            bus,
            "arn:aws:lambda:us-east-1:000000000000:function:fails:$LATEST"
        ])
    );
    assert_eq!(
        failure["detail"]["requestContext"]["condition"],
        "RetriesExhausted"
    );
    assert_eq!(failure["detail"]["requestPayload"], json!({"n": 1}));
    let success = by_type("Lambda Function Invocation Result - Success");
    assert_eq!(success["detail"]["responsePayload"], json!({"ok": 2}));
    // A bus destination with a bad ARN is refused.
    let r = s
        .http
        .put(s.url("/2019-09-25/functions/works/event-invoke-config"))
        .json(&json!({"DestinationConfig": {"OnSuccess": {"Destination": "arn:aws:events:us-east-1:000000000000:event-bus/"}}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
}

#[test]
fn bus_aws_cli_manages_buses_rules_and_targets() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("got.jsonl");
    let s = Server::start_unsandboxed(&[]);
    recorder(&s, "sink", &out);
    let aws = |args: &[&str]| -> Value {
        let o = python::aws_cli(&s.base())
            .arg("events")
            .args(args)
            .output()
            .expect("the AWS CLI (`aws`) must be installed: .ci/run installs it with pip");
        assert!(
            o.status.success(),
            "aws events {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    };
    let r = aws(&["create-event-bus", "--name", "orders"]);
    assert_eq!(
        r["EventBusArn"],
        "arn:aws:events:us-east-1:000000000000:event-bus/orders"
    );
    let r = aws(&[
        "put-rule",
        "--name",
        "big",
        "--event-bus-name",
        "orders",
        "--event-pattern",
        r#"{"source":["shop"],"detail":{"total":[{"numeric":[">=",100]}]}}"#,
    ]);
    assert_eq!(
        r["RuleArn"],
        "arn:aws:events:us-east-1:000000000000:rule/orders/big"
    );
    let r = aws(&[
        "put-targets",
        "--rule",
        "big",
        "--event-bus-name",
        "orders",
        "--targets",
        "Id=t1,Arn=arn:aws:lambda:us-east-1:000000000000:function:sink",
    ]);
    assert_eq!(r["FailedEntryCount"], 0);
    let r = aws(&[
        "list-targets-by-rule",
        "--rule",
        "big",
        "--event-bus-name",
        "orders",
    ]);
    assert_eq!(r["Targets"][0]["Id"], "t1", "{r}");
    let r = aws(&["list-rules", "--event-bus-name", "orders"]);
    assert_eq!(r["Rules"][0]["Name"], "big", "{r}");
    assert_eq!(r["Rules"][0]["State"], "ENABLED");
    let r = aws(&[
        "describe-rule",
        "--name",
        "big",
        "--event-bus-name",
        "orders",
    ]);
    let pattern: Value = serde_json::from_str(r["EventPattern"].as_str().unwrap()).unwrap();
    assert_eq!(pattern["source"], json!(["shop"]));
    // Rules made with the AWS API are the native API's rules.
    let (code, rule) = s.get_json("/v1/buses/orders/rules/big");
    assert_eq!(code, 200);
    assert_eq!(rule["targets"][0]["id"], "t1", "{rule}");
    // An event on the bus reaches the target.
    let r = aws(&[
        "put-events",
        "--entries",
        r#"[{"Source":"shop","DetailType":"Order","Detail":"{\"total\":150}","EventBusName":"orders"},{"Source":"shop","DetailType":"Order","Detail":"{\"total\":5}","EventBusName":"orders"}]"#,
    ]);
    assert_eq!(r["FailedEntryCount"], 0, "{r}");
    let id = r["Entries"][0]["EventId"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(20), || !received(&out).is_empty()),
        "{}",
        s.log()
    );
    std::thread::sleep(Duration::from_millis(300));
    let got = received(&out);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["id"], id.as_str());
    // Targets, rule and bus are removed the AWS way.
    aws(&[
        "remove-targets",
        "--rule",
        "big",
        "--event-bus-name",
        "orders",
        "--ids",
        "t1",
    ]);
    let r = aws(&[
        "list-targets-by-rule",
        "--rule",
        "big",
        "--event-bus-name",
        "orders",
    ]);
    assert_eq!(r["Targets"], json!([]), "{r}");
    aws(&["delete-rule", "--name", "big", "--event-bus-name", "orders"]);
    aws(&["delete-event-bus", "--name", "orders"]);
    let r = aws(&["list-event-buses"]);
    assert_eq!(r["EventBuses"].as_array().unwrap().len(), 1, "{r}");
}

/// Each rule remembers its last matches (event id, time, source, detail-type) with the
/// hand-off to each target: queued (with the message id) or failed (with why), also for an
/// event forwarded from another bus; in memory only, so a restart forgets them.
#[test]
fn bus_rules_show_their_recent_matches() {
    let mut s = Server::start(&[]);
    for q in ["inbox", "audited"] {
        assert_eq!(put(&s, &format!("/v1/queues/{q}"), json!({})).0, 200);
    }
    assert_eq!(put(&s, "/v1/buses/audit", json!({})).0, 200);
    let rules = [
        (
            "default/a-orders",
            json!({"source": ["shop"]}),
            json!([
                "arn:aws:sqs:us-east-1:000000000000:inbox",
                "arn:aws:events:us-east-1:000000000000:event-bus/audit"
            ]),
        ),
        (
            "default/z-broken",
            json!({"source": ["shop"]}),
            json!(["arn:aws:sqs:us-east-1:000000000000:gone"]),
        ),
        (
            "audit/all",
            json!({"detail-type": ["Order"]}),
            json!(["arn:aws:sqs:us-east-1:000000000000:audited"]),
        ),
    ];
    for (path, pattern, targets) in rules {
        let (code, body) = put(
            &s,
            &format!("/v1/buses/{}", path.replace('/', "/rules/")),
            json!({"pattern": pattern, "targets": targets}),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["recent_matches"], json!([]), "{body}");
    }
    let reply = put_events(
        &s,
        "default",
        json!([
            {"Source": "crm", "DetailType": "Lead", "Detail": "{}"},
            {"Source": "shop", "DetailType": "Order", "Detail": "{\"n\": 7}"},
        ]),
    );
    // The second entry reached the inbox, then failed at the missing queue.
    assert_eq!(
        reply["Entries"][1]["ErrorCode"], "InternalFailure",
        "{reply}"
    );
    let rule = |s: &Server, path: &str| {
        s.get_json(&format!("/v1/buses/{}", path.replace('/', "/rules/")))
            .1
    };
    let orders = rule(&s, "default/a-orders");
    let m = &orders["recent_matches"][0];
    assert_eq!(
        orders["recent_matches"].as_array().unwrap().len(),
        1,
        "{orders}"
    );
    assert_eq!(
        (m["source"].as_str(), m["detail_type"].as_str()),
        (Some("shop"), Some("Order"))
    );
    assert!(m["time_ms"].as_i64().unwrap() > 1_700_000_000_000, "{m}");
    let id = m["event_id"].as_str().unwrap().to_string();
    let inbox: Value = s
        .http
        .post(s.url("/v1/queues/inbox/receive"))
        .json(&json!({"max": 10}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let body: Value = serde_json::from_str(inbox["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["id"], id.as_str());
    assert_eq!(
        m["targets"],
        json!([
            {"arn": "arn:aws:sqs:us-east-1:000000000000:inbox", "result": "queued", "id": inbox["messages"][0]["id"]},
            {"arn": "arn:aws:events:us-east-1:000000000000:event-bus/audit", "result": "queued", "id": id},
        ])
    );
    let broken = &rule(&s, "default/z-broken")["recent_matches"][0];
    assert_eq!(broken["event_id"], id.as_str());
    assert_eq!(broken["targets"][0]["result"], "failed", "{broken}");
    assert!(
        broken["targets"][0]["error"]
            .as_str()
            .unwrap()
            .contains("gone"),
        "{broken}"
    );
    let audited = &rule(&s, "audit/all")["recent_matches"][0];
    assert_eq!(audited["event_id"], id.as_str(), "the forwarded event");
    assert_eq!(audited["targets"][0]["result"], "queued");
    // The list of rules shows them too; a restart forgets them.
    let list = s.get_json("/v1/buses/default/rules").1;
    assert_eq!(
        list["rules"][0]["recent_matches"][0]["event_id"],
        id.as_str()
    );
    s.restart();
    assert_eq!(rule(&s, "default/a-orders")["recent_matches"], json!([]));
}
