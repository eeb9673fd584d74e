//! Built-in queues and event-source mappings through the real binary: partial batch
//! failures redeliver only the failed messages, a message that always fails lands in the
//! dead-letter queue after maxReceiveCount receives, the SQS event shape field by field,
//! a failed batch is redelivered whole, and messages and mappings survive `kill -9`.

use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Appends `messageId body ApproximateReceiveCount` per record to $RECORD_FILE, logs the
/// first event it sees, and reports as failed every record whose body starts with `poison`
/// (always) or `flaky` (on its first receive only).
const WORKER: &str = r#"
const fs = require('fs');
let logged = false;
exports.handler = async (event) => {
  if (!logged && event.Records.length) { console.log('EVENT ' + JSON.stringify(event)); logged = true; }
  const failures = [];
  for (const r of event.Records) {
    fs.appendFileSync(process.env.RECORD_FILE,
      `${r.messageId} ${r.body} ${r.attributes.ApproximateReceiveCount}\n`);
    if (r.body.startsWith('poison') ||
        (r.body.startsWith('flaky') && r.attributes.ApproximateReceiveCount === '1')) {
      failures.push({ itemIdentifier: r.messageId });
    }
  }
  return { batchItemFailures: failures };
};
"#;

/// Throws on a record's first receive (the whole batch fails), succeeds on the second.
const THROWS_FIRST: &str = r#"
const fs = require('fs');
exports.handler = async (event) => {
  for (const r of event.Records) {
    fs.appendFileSync(process.env.RECORD_FILE, `${r.messageId} ${r.body} ${r.attributes.ApproximateReceiveCount}\n`);
  }
  if (event.Records.some((r) => r.attributes.ApproximateReceiveCount === '1')) {
    throw new Error('first try fails');
  }
  return 'done';
};
"#;

fn put_queue(s: &Server, name: &str, settings: Value) -> Value {
    let r = s
        .http
        .put(s.url(&format!("/v1/queues/{name}")))
        .json(&settings)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().unwrap()
}

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = s.http.post(s.url(path)).json(&body).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn stats(s: &Server, q: &str) -> Value {
    s.get_json(&format!("/v1/queues/{q}")).1["stats"].clone()
}

fn create_mapping(s: &Server, body: Value) -> Value {
    let (status, v) = post(s, "/2015-03-31/event-source-mappings", body);
    assert_eq!(status, 202, "{v}");
    v
}

fn queue_arn(q: &str) -> String {
    format!("arn:aws:sqs:us-east-1:000000000000:{q}")
}

/// Deliveries per message id, with the receive counts seen.
fn deliveries(path: &std::path::Path) -> HashMap<String, Vec<(String, u32)>> {
    let mut out: HashMap<String, Vec<(String, u32)>> = HashMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        out.entry(parts[0].to_string())
            .or_default()
            .push((parts[1].to_string(), parts[2].parse().unwrap()));
    }
    out
}

fn worker_cfg(record: &std::path::Path) -> Value {
    let mut c = node_cfg("index.handler");
    c["env"] = json!({ "RECORD_FILE": record.to_str().unwrap() });
    c
}

#[test]
fn queues_partial_batch_failures_redeliver_only_failed_and_poison_is_dead_lettered() {
    let s = Server::start_unsandboxed(&[]);
    let record = s.data_dir.path().join("deliveries.txt");
    s.deploy("worker", worker_cfg(&record), &[("index.js", WORKER)]);
    put_queue(&s, "orders-dlq", json!({}));
    let q = put_queue(
        &s,
        "orders",
        json!({"visibility_timeout": 1, "dead_letter": "orders-dlq", "max_receive_count": 3}),
    );
    assert_eq!(q["arn"], queue_arn("orders"));
    let (status, sent) = post(
        &s,
        "/v1/queues/orders/messages",
        json!({"entries": [
            {"body": "hello", "attributes": {"kind": "greeting", "n": {"stringValue": "7", "dataType": "Number"}}},
            {"body": "ok-2"},
            {"body": "flaky-3"},
            {"body": "poison-4"},
            {"body": "ok-5"},
        ]}),
    );
    assert_eq!(status, 200, "{sent}");
    let ids: Vec<String> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5);
    assert_eq!(
        sent["messages"][0]["md5"],
        "5d41402abc4b2a76b9719d911017c592"
    );

    // Warm the function first: a cold start longer than the 1 s visibility timeout would
    // let a message be received again while its first delivery still runs.
    s.invoke("worker", r#"{"Records":[]}"#).ok();
    let m = create_mapping(
        &s,
        json!({
            "FunctionName": "worker",
            "EventSourceArn": queue_arn("orders"),
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        }),
    );
    assert_eq!(
        m["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert!(m["LastModified"].is_number(), "{m}");

    // The poison message is dead-lettered; everything else is done.
    let settled = eventually(Duration::from_secs(30), || {
        let (o, d) = (stats(&s, "orders"), stats(&s, "orders-dlq"));
        o["visible"] == 0 && o["in_flight"] == 0 && d["visible"] == 1
    });
    assert!(
        settled,
        "orders {} dlq {} deliveries {:?}\n{}",
        stats(&s, "orders"),
        stats(&s, "orders-dlq"),
        deliveries(&record),
        s.log()
    );
    let got = deliveries(&record);
    let counts = |i: usize| got.get(&ids[i]).map(Vec::len).unwrap_or(0);
    // Successes ran once; the flaky one twice; the poison maxReceiveCount (3) times.
    assert_eq!(counts(0), 1, "{got:?}");
    assert_eq!(counts(1), 1, "{got:?}");
    assert_eq!(counts(4), 1, "{got:?}");
    assert_eq!(counts(2), 2, "{got:?}");
    assert_eq!(counts(3), 3, "{got:?}");
    let poison_receives: Vec<u32> = got[&ids[3]].iter().map(|(_, n)| *n).collect();
    assert_eq!(poison_receives, vec![1, 2, 3]);
    // The dead-lettered message keeps its id and body.
    let (_, dead) = post(&s, "/v1/queues/orders-dlq/receive", json!({"max": 10}));
    assert_eq!(dead["messages"][0]["id"], ids[3].as_str(), "{dead}");
    assert_eq!(dead["messages"][0]["body"], "poison-4");

    // The SQS event, field by field.
    let logs = s.get_json("/v1/functions/worker/logs?limit=10000").1["logs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let line = logs
        .iter()
        .filter_map(|l| l["line"].as_str())
        .find(|l| l.contains("EVENT "))
        .expect("event logged")
        .to_string();
    let event: Value = serde_json::from_str(&line[line.find("EVENT ").unwrap() + 6..]).unwrap();
    let records = event["Records"].as_array().unwrap();
    assert_eq!(records.len(), 5, "the first batch holds all five: {event}");
    let r = &records[0];
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    let mut keys_sorted = keys.clone();
    keys_sorted.sort();
    assert_eq!(
        keys_sorted,
        vec![
            "attributes",
            "awsRegion",
            "body",
            "eventSource",
            "eventSourceARN",
            "md5OfBody",
            "messageAttributes",
            "messageId",
            "receiptHandle"
        ]
    );
    assert_eq!(r["messageId"], ids[0].as_str());
    assert!(!r["receiptHandle"].as_str().unwrap().is_empty());
    assert_eq!(r["body"], "hello");
    assert_eq!(r["md5OfBody"], "5d41402abc4b2a76b9719d911017c592");
    assert_eq!(r["eventSource"], "aws:sqs");
    assert_eq!(r["eventSourceARN"], queue_arn("orders"));
    assert_eq!(r["awsRegion"], "us-east-1");
    let a = &r["attributes"];
    assert_eq!(a["ApproximateReceiveCount"], "1");
    assert_eq!(a["SenderId"], "000000000000");
    for k in ["SentTimestamp", "ApproximateFirstReceiveTimestamp"] {
        let v = a[k]
            .as_str()
            .unwrap_or_else(|| panic!("{k} is a string: {a}"));
        assert!(v.parse::<i64>().unwrap() > 1_600_000_000_000, "{k} {v}");
    }
    assert_eq!(
        r["messageAttributes"]["kind"],
        json!({"stringValue": "greeting", "stringListValues": [], "binaryListValues": [], "dataType": "String"})
    );
    assert_eq!(r["messageAttributes"]["n"]["dataType"], "Number");
    assert_eq!(r["messageAttributes"]["n"]["stringValue"], "7");
    assert_eq!(records[1]["messageAttributes"], json!({}));
}

#[test]
fn queues_function_error_redelivers_the_whole_batch() {
    let s = Server::start_unsandboxed(&[]);
    let record = s.data_dir.path().join("deliveries.txt");
    s.deploy(
        "thrower",
        worker_cfg(&record),
        &[("index.js", THROWS_FIRST)],
    );
    put_queue(&s, "jobs", json!({"visibility_timeout": 1}));
    let (_, sent) = post(
        &s,
        "/v1/queues/jobs/messages",
        json!({"entries": [{"body": "a"}, {"body": "b"}]}),
    );
    s.invoke("thrower", r#"{"Records":[]}"#).ok();
    create_mapping(
        &s,
        json!({"FunctionName": "thrower", "EventSourceArn": queue_arn("jobs"), "BatchSize": 10}),
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let st = stats(&s, "jobs");
            st["visible"] == 0 && st["in_flight"] == 0
        }),
        "{} {:?}",
        stats(&s, "jobs"),
        deliveries(&record)
    );
    let got = deliveries(&record);
    for m in sent["messages"].as_array().unwrap() {
        let seen: Vec<u32> = got[m["id"].as_str().unwrap()]
            .iter()
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(seen, vec![1, 2], "{got:?}");
    }
}

#[test]
fn queues_messages_and_mappings_survive_kill9() {
    let mut s = Server::start(&[]);
    put_queue(&s, "durable", json!({"visibility_timeout": 1}));
    let mut sent = Vec::new();
    for i in 0..3 {
        let entries: Vec<Value> = (0..10)
            .map(|j| json!({"body": format!("m-{i}-{j}")}))
            .collect();
        let (status, v) = post(
            &s,
            "/v1/queues/durable/messages",
            json!({"entries": entries}),
        );
        assert_eq!(status, 200, "{v}");
        sent.extend(
            v["messages"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_string()),
        );
    }
    // One message is in flight when the server dies.
    let (_, inflight) = post(&s, "/v1/queues/durable/receive", json!({"max": 1}));
    assert_eq!(inflight["messages"].as_array().unwrap().len(), 1);
    s.deploy(
        "noop",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async () => 'ok';")],
    );
    let m = create_mapping(
        &s,
        json!({"FunctionName": "noop", "EventSourceArn": queue_arn("durable"), "Enabled": false}),
    );
    let uuid = m["UUID"].as_str().unwrap().to_string();
    s.restart(); // kill -9, start again on the same data dir
    let (status, got) = s.get_json(&format!("/2015-03-31/event-source-mappings/{uuid}"));
    assert_eq!(status, 200);
    assert_eq!(got["State"], "Disabled");
    assert_eq!(
        stats(&s, "durable")["visible"].as_u64().unwrap()
            + stats(&s, "durable")["in_flight"].as_u64().unwrap(),
        30
    );
    let mut received = std::collections::HashSet::new();
    assert!(eventually(Duration::from_secs(10), || {
        let (_, v) = post(
            &s,
            "/v1/queues/durable/receive",
            json!({"max": 10, "visibility_timeout": 2}),
        );
        for m in v["messages"].as_array().unwrap() {
            received.insert(m["id"].as_str().unwrap().to_string());
        }
        received.len() == 30
    }));
    for id in &sent {
        assert!(received.contains(id), "{id} lost");
    }
    // Enabling the mapping drains the queue through the function.
    let r = s
        .http
        .put(s.url(&format!("/2015-03-31/event-source-mappings/{uuid}")))
        .json(&json!({"Enabled": true}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert!(
        eventually(Duration::from_secs(90), || {
            let st = stats(&s, "durable");
            st["visible"] == 0 && st["in_flight"] == 0
        }),
        "{}\n{}",
        stats(&s, "durable"),
        s.log()
    );
}

#[test]
fn queues_cli_and_manifest() {
    let s = Server::start_unsandboxed(&[]);
    let run = |args: &[&str]| cli_ok(&s.cli(args)).unwrap();
    let out = run(&["queue", "create", "work", "--visibility-timeout", "1"]);
    assert!(
        out.contains("arn:aws:sqs:us-east-1:000000000000:work"),
        "{out}"
    );
    let ids = run(&["queue", "send", "work", "one", "two", "--attr", "k=v"]);
    assert_eq!(ids.lines().count(), 2, "{ids}");
    let st = run(&["queue", "stats", "work"]);
    assert!(st.contains("2 visible"), "{st}");
    let got: Value =
        serde_json::from_str(&run(&["--json", "queue", "receive", "work", "-n", "1"])).unwrap();
    let m = &got["messages"][0];
    assert_eq!(m["body"], "one");
    assert_eq!(m["attributes"]["k"]["stringValue"], "v");
    run(&["queue", "delete", "work", m["receipt"].as_str().unwrap()]);
    // A stale receipt is refused.
    assert!(!s
        .cli(&["queue", "delete", "work", m["receipt"].as_str().unwrap()])
        .status
        .success());
    let ls = run(&["queue", "ls"]);
    assert!(ls.contains("work"), "{ls}");
    assert!(run(&["queue", "purge", "work"]).contains("purged 1"));
    run(&["queue", "delete", "work"]);
    assert!(!run(&["queue", "ls"]).contains("work"));

    // A manifest declares queues and a function consuming one.
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("deliveries.txt");
    write_files(
        dir.path(),
        &[
            (
                "nimbus.toml",
                r#"
[queues.orders]
visibility_timeout = 1
dead_letter = "orders-dlq"
max_receive_count = 2

[queues.orders-dlq]

[functions.consumer]
runtime = "nodejs20.x"
handler = "index.handler"
env = { RECORD_FILE = "@PATH@" }
queue = { name = "orders", batch_size = 5, report_batch_item_failures = true }
"#,
            ),
            ("index.js", WORKER),
        ],
    );
    let toml = std::fs::read_to_string(dir.path().join("nimbus.toml"))
        .unwrap()
        .replace("@PATH@", record.to_str().unwrap());
    std::fs::write(dir.path().join("nimbus.toml"), toml).unwrap();
    let out = run(&["deploy", dir.path().to_str().unwrap()]);
    assert!(out.contains("queue orders → function consumer"), "{out}");
    // Deploying again updates the mapping instead of failing on a duplicate.
    run(&["deploy", dir.path().to_str().unwrap()]);
    let mappings = run(&["queue", "mappings"]);
    assert_eq!(mappings.lines().count(), 1, "{mappings}");
    run(&["queue", "send", "orders", "fine", "poison-x"]);
    assert!(
        eventually(Duration::from_secs(30), || {
            stats(&s, "orders-dlq")["visible"] == 1
                && stats(&s, "orders")["visible"] == 0
                && stats(&s, "orders")["in_flight"] == 0
        }),
        "{} {:?}",
        stats(&s, "orders"),
        deliveries(&record)
    );
}

#[test]
fn queues_filter_criteria_drop_unmatched_messages() {
    let s = Server::start_unsandboxed(&[]);
    let record = s.data_dir.path().join("deliveries.txt");
    s.deploy("picky", worker_cfg(&record), &[("index.js", WORKER)]);
    put_queue(&s, "mixed", json!({"visibility_timeout": 1}));
    let out = cli_ok(&s.cli(&[
        "queue",
        "map",
        "mixed",
        "picky",
        "--filter",
        r#"{"body":{"type":["order"]}}"#,
    ]))
    .unwrap();
    assert!(out.contains("created mapping"), "{out}");
    let (_, sent) = post(
        &s,
        "/v1/queues/mixed/messages",
        json!({"entries": [
            {"body": "{\"type\":\"order\",\"n\":1}"},
            {"body": "{\"type\":\"refund\"}"},
            {"body": "plain text"},
        ]}),
    );
    assert!(
        eventually(Duration::from_secs(20), || {
            let st = stats(&s, "mixed");
            st["visible"] == 0 && st["in_flight"] == 0
        }),
        "{} {:?}",
        stats(&s, "mixed"),
        deliveries(&record)
    );
    let got = deliveries(&record);
    assert_eq!(got.len(), 1, "only the order reaches the function: {got:?}");
    assert!(got.contains_key(sent["messages"][0]["id"].as_str().unwrap()));
    let (_, list) = s.get_json("/2015-03-31/event-source-mappings?FunctionName=picky");
    assert_eq!(
        list["EventSourceMappings"][0]["FilterCriteria"],
        json!({"Filters": [{"Pattern": "{\"body\":{\"type\":[\"order\"]}}"}]})
    );
}

#[test]
fn queues_long_polling_returns_as_soon_as_a_message_is_sent() {
    let s = Server::start(&[]);
    put_queue(&s, "lp", json!({}));
    let t0 = std::time::Instant::now();
    let (status, v) = post(&s, "/v1/queues/lp/receive", json!({"wait_seconds": 1}));
    assert_eq!(status, 200);
    assert_eq!(v["messages"], json!([]));
    assert!(
        t0.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t0.elapsed()
    );
    let url = s.url("/v1/queues/lp/messages");
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(700));
        reqwest::blocking::Client::new()
            .post(url)
            .json(&json!({"body": "late"}))
            .send()
            .unwrap()
            .status()
            .as_u16()
    });
    let t0 = std::time::Instant::now();
    let (_, v) = post(&s, "/v1/queues/lp/receive", json!({"wait_seconds": 15}));
    let waited = t0.elapsed();
    assert_eq!(sender.join().unwrap(), 200);
    assert_eq!(v["messages"][0]["body"], "late", "{v}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let (status, _) = post(&s, "/v1/queues/lp/receive", json!({"wait_seconds": 21}));
    assert_eq!(status, 400);
    // Malformed sends are refused with what is wrong.
    let eleven: Vec<Value> = (0..11).map(|i| json!({"body": i.to_string()})).collect();
    for bad in [
        json!({"body": "x", "bogus": 1}),
        json!({"entries": [{"body": "x"}], "body": "y"}),
        json!({}),
        json!({"body": ""}),
        json!({"entries": eleven}),
        json!("just a string"),
    ] {
        let (status, v) = post(&s, "/v1/queues/lp/messages", bad.clone());
        assert_eq!(status, 400, "{bad} → {v}");
        assert_eq!(v["type"], "InvalidParameterValueException", "{v}");
    }
    let (status, _) = post(&s, "/v1/queues/missing/messages", json!({"body": "x"}));
    assert_eq!(status, 404);
}

#[test]
fn queues_mapping_delivers_every_message_across_kill9_mid_delivery() {
    let mut s = Server::start_unsandboxed(&[]);
    let record = s.data_dir.path().join("deliveries.txt");
    // The worker takes 200 ms per batch, so the kill lands mid-delivery.
    let slow = WORKER.replace(
        "exports.handler = async (event) => {",
        "exports.handler = async (event) => {\n  await new Promise((r) => setTimeout(r, 200));",
    );
    assert_ne!(slow, WORKER);
    s.deploy("bulk-worker", worker_cfg(&record), &[("index.js", &slow)]);
    put_queue(&s, "bulk", json!({"visibility_timeout": 2}));
    let mut ids = std::collections::HashSet::new();
    for i in 0..30 {
        let entries: Vec<Value> = (0..10)
            .map(|j| json!({"body": format!("m-{i}-{j}")}))
            .collect();
        let (status, v) = post(&s, "/v1/queues/bulk/messages", json!({"entries": entries}));
        assert_eq!(status, 200, "{v}");
        for m in v["messages"].as_array().unwrap() {
            ids.insert(m["id"].as_str().unwrap().to_string());
        }
    }
    create_mapping(
        &s,
        json!({"FunctionName": "bulk-worker", "EventSourceArn": queue_arn("bulk"), "BatchSize": 10}),
    );
    assert!(eventually(Duration::from_secs(30), || deliveries(&record)
        .len()
        >= 30));
    let before = deliveries(&record).len();
    s.restart(); // kill -9 mid-delivery, then start on the same data dir
    assert!(before < ids.len(), "the kill came after every delivery");
    assert!(
        eventually(Duration::from_secs(60), || {
            let st = stats(&s, "bulk");
            st["visible"] == 0 && st["in_flight"] == 0
        }),
        "{} delivered {} of {}\n{}",
        stats(&s, "bulk"),
        deliveries(&record).len(),
        ids.len(),
        s.log()
    );
    let got = deliveries(&record);
    let missing: Vec<&String> = ids.iter().filter(|id| !got.contains_key(*id)).collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
}

#[test]
fn queues_as_async_invocation_destinations() {
    let s = Server::start(&[]);
    s.deploy(
        "dest-fails",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async () => { throw new Error('nope'); };",
        )],
    );
    s.deploy(
        "dest-ok",
        node_cfg("index.handler"),
        &[("index.js", "exports.handler = async (e) => ({ got: e });")],
    );
    put_queue(&s, "failures", json!({}));
    put_queue(&s, "successes", json!({}));
    for (f, cfg) in [
        (
            "dest-fails",
            json!({"MaximumRetryAttempts": 0, "DestinationConfig": {"OnFailure": {"Destination": queue_arn("failures")}}}),
        ),
        (
            "dest-ok",
            json!({"DestinationConfig": {"OnSuccess": {"Destination": queue_arn("successes")}}}),
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
    for f in ["dest-fails", "dest-ok"] {
        let r = s.invoke_with(
            f,
            br#"{"order":7}"#.to_vec(),
            &[("X-Amz-Invocation-Type", "Event")],
        );
        assert_eq!(r.status, 202);
    }
    let take = |q: &str| -> Value {
        let (_, v) = post(
            &s,
            &format!("/v1/queues/{q}/receive"),
            json!({"wait_seconds": 20}),
        );
        let body = v["messages"][0]["body"]
            .as_str()
            .unwrap_or_else(|| panic!("{q}: {v}"));
        serde_json::from_str(body).unwrap()
    };
    let failed = take("failures");
    assert_eq!(failed["version"], "1.0");
    assert_eq!(failed["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(failed["requestPayload"], json!({"order": 7}));
    assert_eq!(failed["responseContext"]["functionError"], "Unhandled");
    let ok = take("successes");
    assert_eq!(ok["requestContext"]["condition"], "Success");
    assert_eq!(ok["responsePayload"], json!({"got": {"order": 7}}));
}

/// A message received maxReceiveCount times lands in the dead-letter queue; a redrive moves
/// it back to its source queue (same id, body and attributes, no receive yet), where it is
/// received again. With two source queues the destination must be given (the CLI's
/// `--to`); `max_per_second` paces the move.
#[test]
fn queues_redrive_moves_dead_letters_back_to_their_source() {
    let s = Server::start(&[]);
    let run = |args: &[&str]| cli_ok(&s.cli(args)).unwrap();
    put_queue(&s, "jobs-dlq", json!({}));
    put_queue(
        &s,
        "jobs",
        json!({"visibility_timeout": 0, "dead_letter": "jobs-dlq", "max_receive_count": 2}),
    );
    let (_, sent) = post(
        &s,
        "/v1/queues/jobs/messages",
        json!({"body": "poison", "attributes": {"kind": "bad"}}),
    );
    let id = sent["id"].as_str().unwrap().to_string();
    for n in 1..=2 {
        let (_, got) = post(&s, "/v1/queues/jobs/receive", json!({"max": 10}));
        assert_eq!(got["messages"][0]["id"], id.as_str(), "{got}");
        assert_eq!(got["messages"][0]["receive_count"], n);
    }
    // The third receive moves it to the dead-letter queue instead of delivering it.
    let (_, got) = post(&s, "/v1/queues/jobs/receive", json!({"max": 10}));
    assert_eq!(got["messages"], json!([]));
    assert_eq!(stats(&s, "jobs-dlq")["visible"], 1);

    let (status, r) = post(&s, "/v1/queues/jobs-dlq/redrive", json!({}));
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        r,
        json!({"source": "jobs-dlq", "destination": "jobs", "moved": 1, "left": 0})
    );
    assert_eq!(stats(&s, "jobs-dlq")["visible"], 0);
    let (_, got) = post(&s, "/v1/queues/jobs/receive", json!({"max": 10}));
    let m = &got["messages"][0];
    assert_eq!(m["id"], id.as_str(), "{got}");
    assert_eq!(m["body"], "poison");
    assert_eq!(m["attributes"]["kind"]["stringValue"], "bad");
    assert_eq!(m["receive_count"], 1, "the count starts over");

    // Errors: a queue no queue uses as its DLQ, unknown queues, unknown fields.
    let (status, e) = post(&s, "/v1/queues/jobs/redrive", json!({}));
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["type"], "InvalidParameterValueException", "{e}");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("give a destination"));
    assert_eq!(post(&s, "/v1/queues/nope/redrive", json!({})).0, 404);
    let to_nowhere = json!({"destination": "nope"});
    assert_eq!(post(&s, "/v1/queues/jobs-dlq/redrive", to_nowhere).0, 404);
    assert_eq!(
        post(&s, "/v1/queues/jobs-dlq/redrive", json!({"to": "jobs"})).0,
        400
    );

    // Two queues use the DLQ: the destination must be named.
    put_queue(&s, "jobs-2", json!({"dead_letter": "jobs-dlq"}));
    run(&["queue", "send", "jobs-dlq", "one"]);
    let (status, e) = post(&s, "/v1/queues/jobs-dlq/redrive", json!({}));
    assert_eq!(status, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("jobs, jobs-2"),
        "{e}"
    );
    let out = run(&["queues", "redrive", "jobs-dlq", "--to", "jobs-2"]);
    assert!(
        out.contains("moved 1 messages from jobs-dlq to jobs-2"),
        "{out}"
    );
    assert_eq!(stats(&s, "jobs-2")["visible"], 1);

    // Paced: one now, the rest one a second in the background.
    run(&["queue", "send", "jobs-dlq", "a", "b", "c"]);
    let (status, r) = post(
        &s,
        "/v1/queues/jobs-dlq/redrive",
        json!({"destination": "jobs-2", "max_per_second": 1}),
    );
    assert_eq!(status, 202, "{r}");
    assert_eq!(
        (r["moved"].as_u64(), r["left"].as_u64()),
        (Some(1), Some(2))
    );
    assert!(eventually(Duration::from_secs(10), || {
        stats(&s, "jobs-dlq")["visible"] == 0 && stats(&s, "jobs-2")["visible"] == 4
    }));
}

/// A FIFO consumer: records `group body receiveCount sequenceNumber dedupId` per record,
/// marks each group of its batch busy (an exclusive file) while it runs — a group already
/// busy is an overlap — and reports `flaky…` records as failed on their first receive.
const FIFO_WORKER: &str = r#"
const fs = require('fs');
const path = require('path');
exports.handler = async (event) => {
  const dir = process.env.RECORD_DIR;
  const groups = [...new Set(event.Records.map((r) => r.attributes.MessageGroupId))];
  const held = [];
  for (const g of groups) {
    try { fs.closeSync(fs.openSync(path.join(dir, 'busy-' + g), 'wx')); held.push(g); }
    catch (e) { fs.appendFileSync(path.join(dir, 'overlap.txt'), g + '\n'); }
  }
  const failures = [];
  for (const r of event.Records) {
    const a = r.attributes;
    fs.appendFileSync(path.join(dir, 'deliveries.txt'),
      `${a.MessageGroupId} ${r.body} ${a.ApproximateReceiveCount} ${a.SequenceNumber} ${a.MessageDeduplicationId}\n`);
    if (r.body.startsWith('flaky') && a.ApproximateReceiveCount === '1') {
      failures.push({ itemIdentifier: r.messageId });
    }
  }
  await new Promise((res) => setTimeout(res, 150));
  for (const g of held) fs.unlinkSync(path.join(dir, 'busy-' + g));
  return { batchItemFailures: failures };
};
"#;

#[test]
fn queues_fifo_mapping_keeps_group_order_through_partial_batch_failures() {
    let s = Server::start_unsandboxed(&[]);
    let run = |args: &[&str]| cli_ok(&s.cli(args)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records");
    std::fs::create_dir_all(&records).unwrap();
    // A manifest declares the FIFO queue and its consumer.
    write_files(
        dir.path(),
        &[
            (
                "nimbus.toml",
                r#"
[queues."orders.fifo"]
fifo = true
content_based_deduplication = true
visibility_timeout = 3

[functions.fifo-consumer]
runtime = "nodejs20.x"
handler = "index.handler"
env = { RECORD_DIR = "@PATH@" }
"#,
            ),
            ("index.js", FIFO_WORKER),
        ],
    );
    let toml = std::fs::read_to_string(dir.path().join("nimbus.toml"))
        .unwrap()
        .replace("@PATH@", records.to_str().unwrap());
    std::fs::write(dir.path().join("nimbus.toml"), toml).unwrap();
    run(&["deploy", dir.path().to_str().unwrap()]);
    let q = s.get_json("/v1/queues/orders.fifo").1;
    assert_eq!(q["fifo"], true, "{q}");
    assert_eq!(q["content_based_deduplication"], true, "{q}");

    // Sent through the CLI, a group at a time; the same body again is a duplicate.
    let sent: Vec<(&str, Vec<&str>)> = vec![
        ("g1", vec!["g1-1", "flaky-g1-2", "g1-3", "g1-4"]),
        ("g2", vec!["g2-1", "g2-2", "g2-3"]),
        ("g3", vec!["g3-1", "flaky-g3-2", "g3-3"]),
        ("g4", vec!["g4-1", "g4-2", "g4-3", "g4-4", "g4-5"]),
    ];
    let mut first_ids = Vec::new();
    for (group, bodies) in &sent {
        let mut args = vec!["queue", "send", "orders.fifo", "--group-id", group];
        args.extend(bodies.iter().copied());
        let ids = run(&args);
        assert_eq!(ids.lines().count(), bodies.len(), "{ids}");
        first_ids.push(ids.lines().next().unwrap().to_string());
    }
    let again = run(&["queue", "send", "orders.fifo", "--group-id", "g1", "g1-1"]);
    assert_eq!(
        again.trim(),
        first_ids[0],
        "a duplicate answers the original id"
    );
    let total: usize = sent.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(
        stats(&s, "orders.fifo")["visible"],
        total,
        "the duplicate is not stored"
    );

    s.invoke("fifo-consumer", r#"{"Records":[]}"#).ok();
    create_mapping(
        &s,
        json!({
            "FunctionName": "fifo-consumer",
            "EventSourceArn": queue_arn("orders.fifo"),
            "BatchSize": 3,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        }),
    );
    let lines = || {
        std::fs::read_to_string(records.join("deliveries.txt"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split(' ').map(str::to_string).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(60), || {
            let st = stats(&s, "orders.fifo");
            st["visible"] == 0 && st["in_flight"] == 0
        }),
        "{} {:?}\n{}",
        stats(&s, "orders.fifo"),
        lines(),
        s.log()
    );
    let overlap = std::fs::read_to_string(records.join("overlap.txt")).unwrap_or_default();
    assert!(
        overlap.is_empty(),
        "groups in two batches at once: {overlap}"
    );
    let got = lines();
    for (group, bodies) in &sent {
        let mine: Vec<&Vec<String>> = got.iter().filter(|l| l[0] == *group).collect();
        // Every delivery carries FIFO attributes; sequence numbers grow within a batch.
        for l in &mine {
            assert!(l[3].parse::<u128>().is_ok(), "SequenceNumber {l:?}");
            assert_eq!(l[4].len(), 64, "content-based MessageDeduplicationId {l:?}");
        }
        // The last delivery of each message comes in send order: nothing after a failed
        // message was taken as done before it was.
        let mut last: Vec<&str> = Vec::new();
        for l in &mine {
            last.retain(|b| *b != l[1]);
            last.push(&l[1]);
        }
        assert_eq!(&last, bodies, "group {group}: {mine:?}");
        // A failed message and its group mates after it in the batch came again; the
        // ones before it did not.
        let times = |b: &str| mine.iter().filter(|l| l[1] == b).count();
        if let Some(flaky) = bodies.iter().position(|b| b.starts_with("flaky")) {
            assert_eq!(times(bodies[flaky - 1]), 1, "{mine:?}");
            assert_eq!(times(bodies[flaky]), 2, "{mine:?}");
            assert_eq!(
                times(bodies[flaky + 1]),
                2,
                "kept after the failure: {mine:?}"
            );
        } else {
            assert!(bodies.iter().all(|b| times(b) == 1), "{mine:?}");
        }
    }
}
