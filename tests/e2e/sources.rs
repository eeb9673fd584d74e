//! External event sources through the real binary against the machine's real brokers
//! (PostgreSQL, NATS JetStream, RabbitMQ, Redis Streams, Mosquitto): for each, records
//! arrive with the documented shape, in batches, filtered; a partial batch failure
//! redelivers only the failed record; exhausted retries end in the on-failure destination;
//! `MaximumConcurrency` holds; and a `kill -9` of Nimbus in the middle of 2,000 records
//! loses none of them.

use nimbus_tests::brokers::{self, json_lines, unique, Nats, Pg, Rabbit, Redis};
use nimbus_tests::*;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

/// Appends one JSON line per record to $RECORD_FILE (its id, its body as text, the batch,
/// the batch's start and end, the record itself); reports every record whose body holds
/// `poison` as failed; sleeps $SLEEP_MS first (concurrency tests).
const WORKER: &str = r#"
const fs = require('fs');
function records(ev) {
  if (ev.rmqMessagesByQueue) return Object.values(ev.rmqMessagesByQueue).flat();
  return ev.Records || [];
}
function text(r) {
  switch (r.eventSource) {
    case 'nimbus:redis': return r.fields.body;
    case 'nimbus:mqtt':
      return r.payloadEncoding === 'json' ? JSON.stringify(r.payload) : Buffer.from(r.payload, 'base64').toString();
    case 'nimbus:postgres': return (r.dynamodb.NewImage || r.dynamodb.OldImage).body.S;
    default: return Buffer.from(r.data, 'base64').toString();
  }
}
exports.handler = async (event, context) => {
  const start = Date.now();
  if (process.env.SLEEP_MS) await new Promise((r) => setTimeout(r, +process.env.SLEEP_MS));
  const rs = records(event);
  const failures = [];
  const lines = rs.map((r) => {
    const body = text(r);
    if (body.includes('poison')) failures.push({ itemIdentifier: r.eventID });
    return JSON.stringify({ id: r.eventID, body, batch: context.awsRequestId, size: rs.length,
                            start, end: Date.now(), record: r, event: rs.length === 1 ? event : undefined });
  });
  fs.appendFileSync(process.env.RECORD_FILE, lines.join('\n') + '\n');
  return { batchItemFailures: failures };
};
"#;

type Publish = Box<dyn Fn(&[String])>;
type Check = Box<dyn Fn(&Value)>;
type Settled = Box<dyn Fn(&str) -> bool>;

/// One broker as the tests drive it.
struct Case {
    /// `SelfManagedEventSource.Endpoints` key and URL.
    endpoints_key: &'static str,
    endpoint: String,
    /// `Topics` (or `Queues` for RabbitMQ).
    topics: Vec<String>,
    /// Extra `SourceAccessConfigurations`.
    access: Vec<Value>,
    /// The durable name (`ConsumerGroupId`) when the case must clean it up itself.
    group: Option<String>,
    /// A filter pattern that passes bodies `{"kind": "keep", …}` only.
    filter: Value,
    /// Publishes these bodies (JSON texts), in order.
    publish: Publish,
    /// Checks the shape of one delivered record (the worker's line).
    shape: Check,
    /// Whether the broker holds nothing unacknowledged for the mapping any more.
    settled: Settled,
    /// Removes what the test made on the broker.
    cleanup: Box<dyn Fn()>,
}

impl Drop for Case {
    fn drop(&mut self) {
        (self.cleanup)();
    }
}

fn nats_case() -> Case {
    let nats = Nats::connect();
    let stream = unique("NIMBUS_T");
    let subject = format!("{}.events", stream.to_lowercase());
    nats.create_stream(&stream, &[&format!("{}.>", stream.to_lowercase())]);
    let (s1, s2, subj) = (stream.clone(), stream.clone(), subject.clone());
    let nats = std::rc::Rc::new(nats);
    let (n1, n2, n3) = (nats.clone(), nats.clone(), nats);
    Case {
        endpoints_key: "NATS_SERVERS",
        endpoint: format!("nats://{}", brokers::NATS),
        topics: vec![subject],
        access: vec![json!({"Type": "OPTION", "URI": format!("stream={stream}")})],
        group: None,
        filter: json!({"data": {"kind": ["keep"]}}),
        publish: Box::new(move |bodies| {
            let p: Vec<Vec<u8>> = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
            n1.publish(&subj, &p)
        }),
        shape: Box::new(move |l| {
            let r = &l["record"];
            assert_eq!(r["eventSource"], "nimbus:nats", "{r}");
            assert_eq!(r["stream"], s1.as_str(), "{r}");
            assert!(r["subject"].as_str().unwrap().ends_with(".events"), "{r}");
            assert!(r["sequence"].as_u64().unwrap() >= 1, "{r}");
            assert_eq!(r["eventID"], r["sequence"].to_string(), "{r}");
            assert!(r["deliveredCount"].as_u64().unwrap() >= 1, "{r}");
            assert!(r["timestamp"].as_str().unwrap().contains('T'), "{r}");
        }),
        settled: Box::new(move |group| n2.consumer_pending(&s2, group) == (0, 0)),
        cleanup: Box::new(move || n3.delete_stream(&stream)),
    }
}

fn redis_case() -> Case {
    let stream = unique("nimbus-t-");
    let redis = std::rc::Rc::new(std::cell::RefCell::new(Redis::connect()));
    let (r1, r2, r3) = (redis.clone(), redis.clone(), redis);
    let (st1, st2, st3) = (stream.clone(), stream.clone(), stream.clone());
    // The stream must exist before the mapping (a missing stream is an error).
    r1.borrow_mut()
        .xadd(&stream, &[("body", b"{\"kind\":\"seed\"}")]);
    Case {
        endpoints_key: "REDIS_SERVERS",
        endpoint: format!("redis://{}/0", brokers::REDIS),
        topics: vec![stream.clone()],
        access: vec![],
        group: None,
        filter: json!({"fields": {"kind": ["keep"]}}),
        publish: Box::new(move |bodies| {
            let mut r = r1.borrow_mut();
            for b in bodies {
                let kind = serde_json::from_str::<Value>(b).unwrap()["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                r.xadd(&st1, &[("body", b.as_bytes()), ("kind", kind.as_bytes())]);
            }
        }),
        shape: Box::new(move |l| {
            let r = &l["record"];
            assert_eq!(r["eventSource"], "nimbus:redis", "{r}");
            assert_eq!(r["stream"], st2.as_str(), "{r}");
            assert!(r["id"].as_str().unwrap().contains('-'), "{r}");
            assert_eq!(r["eventID"], r["id"], "{r}");
            assert!(r["timestamp"].as_i64().unwrap() > 1_600_000_000_000, "{r}");
        }),
        settled: Box::new(move |group| r2.borrow_mut().pending(&st3, group) == 0),
        cleanup: Box::new(move || {
            r3.borrow_mut().cmd(&["DEL", &stream]);
        }),
    }
}

fn rabbit_case() -> Case {
    let queue = unique("nimbus-t-");
    let rabbit = std::rc::Rc::new(Rabbit::connect());
    rabbit.declare_queue(&queue, &[]);
    let (b1, b2, b3) = (rabbit.clone(), rabbit.clone(), rabbit);
    let (q1, q2, q3) = (queue.clone(), queue.clone(), queue.clone());
    Case {
        endpoints_key: "RABBITMQ_BROKERS",
        endpoint: format!("amqp://{}/%2f", brokers::RABBITMQ),
        topics: vec![queue.clone()],
        access: vec![json!({"Type": "BASIC_AUTH", "URI": "rabbit-guest"})],
        group: None,
        filter: json!({"data": {"kind": ["keep"]}}),
        publish: Box::new(move |bodies| {
            let p: Vec<Vec<u8>> = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
            b1.publish(&q1, &p)
        }),
        shape: Box::new(move |l| {
            let r = &l["record"];
            assert!(r["basicProperties"].is_object(), "{r}");
            assert_eq!(r["basicProperties"]["deliveryMode"], 2, "{r}");
            assert!(r["redelivered"].is_boolean(), "{r}");
            assert!(r["data"].is_string(), "{r}");
            if let Some(ev) = l.get("event").filter(|e| e.is_object()) {
                assert_eq!(ev["eventSource"], "aws:rmq", "{ev}");
                let key = format!("{q2}::/");
                assert!(ev["rmqMessagesByQueue"][&key].is_array(), "{ev}");
            }
        }),
        settled: Box::new(move |_| b2.queue_len(&q3) == 0),
        cleanup: Box::new(move || b3.delete_queue(&queue)),
    }
}

fn mqtt_case() -> Case {
    let root = unique("nimbus-t-");
    let topic = format!("{root}/sensors/a");
    let t1 = topic.clone();
    Case {
        endpoints_key: "MQTT_BROKERS",
        endpoint: format!("mqtt://{}", brokers::MQTT),
        topics: vec![format!("{root}/sensors/+")],
        access: vec![],
        group: None,
        filter: json!({"payload": {"kind": ["keep"]}}),
        publish: Box::new(move |bodies| {
            let p: Vec<Vec<u8>> = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
            brokers::mqtt_publish(&t1, &p)
        }),
        shape: Box::new(move |l| {
            let r = &l["record"];
            assert_eq!(r["eventSource"], "nimbus:mqtt", "{r}");
            assert_eq!(r["topic"], topic.as_str(), "{r}");
            assert_eq!(r["qos"], 1, "{r}");
            assert_eq!(r["retain"], false, "{r}");
            assert_eq!(r["payloadEncoding"], "json", "{r}");
            assert!(r["payload"].is_object(), "{r}");
        }),
        // MQTT has no broker-side view of a client's unacknowledged messages.
        settled: Box::new(|_| true),
        cleanup: Box::new(|| {}),
    }
}

fn postgres_case() -> Case {
    brokers::ensure_logical_postgres();
    let pg = std::rc::Rc::new(Pg::connect());
    let table = unique("nimbus_t_");
    pg.exec(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY, body text NOT NULL, kind text)"
    ));
    let (p1, p2, p3) = (pg.clone(), pg.clone(), pg);
    let (t1, t2, t3) = (table.clone(), table.clone(), table.clone());
    Case {
        endpoints_key: "POSTGRES_SERVERS",
        endpoint: format!("postgres://postgres@{}/test", brokers::POSTGRES),
        topics: vec![table.clone()],
        access: vec![],
        // The slot and publication are named after the table, so the case drops them even
        // when a test ends without deleting its mapping (a left slot holds WAL forever).
        group: Some(table),
        filter: json!({"dynamodb": {"NewImage": {"kind": {"S": ["keep"]}}}}),
        publish: Box::new(move |bodies| {
            let mut sql = String::from("BEGIN;");
            for b in bodies {
                let kind = serde_json::from_str::<Value>(b).unwrap()["kind"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                sql.push_str(&format!(
                    "INSERT INTO {t1} (body, kind) VALUES ('{}', '{}');",
                    b.replace('\'', "''"),
                    kind
                ));
            }
            sql.push_str("COMMIT;");
            p1.exec(&sql)
        }),
        shape: Box::new(move |l| {
            let r = &l["record"];
            assert_eq!(r["eventSource"], "nimbus:postgres", "{r}");
            assert_eq!(r["eventName"], "INSERT", "{r}");
            assert_eq!(r["table"], format!("public.{t2}"), "{r}");
            assert!(r["dynamodb"]["Keys"]["id"]["N"].is_string(), "{r}");
            assert!(r["dynamodb"]["NewImage"]["body"]["S"].is_string(), "{r}");
            assert!(r["dynamodb"]["SequenceNumber"].is_string(), "{r}");
            assert_eq!(r["eventID"], r["dynamodb"]["SequenceNumber"], "{r}");
        }),
        settled: Box::new(move |slot| {
            // The slot confirmed everything written so far.
            p2.column(&format!(
                "SELECT confirmed_flush_lsn >= pg_current_wal_insert_lsn() - 1024*1024 FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ))
            .first()
            .map(|v| v == "t")
            .unwrap_or(true)
        }),
        cleanup: Box::new(move || {
            // The server is gone by now; its backend may take a moment to release the slot.
            for _ in 0..50 {
                let active = p3.column(&format!(
                    "SELECT active FROM pg_replication_slots WHERE slot_name = '{t3}'"
                ));
                match active.first().map(String::as_str) {
                    None => break,
                    Some("f") => {
                        p3.exec(&format!("SELECT pg_drop_replication_slot('{t3}')"));
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(100)),
                }
            }
            p3.exec(&format!(
                "DROP PUBLICATION IF EXISTS {t3}; DROP TABLE IF EXISTS {t3}"
            ));
        }),
    }
}

fn worker(s: &Server, record: &Path, sleep_ms: u64) {
    let mut cfg = node_cfg("index.handler");
    cfg["env"] = json!({
        "RECORD_FILE": record.to_str().unwrap(),
        "SLEEP_MS": sleep_ms.to_string(),
    });
    cfg["timeout"] = json!(30);
    s.deploy("worker", cfg, &[("index.js", WORKER)]);
}

/// Creates a mapping through Lambda's API; its UUID.
fn create_mapping(s: &Server, case: &Case, settings: Value) -> String {
    let mut body = json!({
        "FunctionName": "worker",
        "SelfManagedEventSource": {"Endpoints": {case.endpoints_key: [case.endpoint]}},
        "SourceAccessConfigurations": case.access,
        "StartingPosition": "TRIM_HORIZON",
    });
    if let Some(g) = &case.group {
        body["SelfManagedKafkaEventSourceConfig"] = json!({ "ConsumerGroupId": g });
    }
    if case.endpoints_key == "RABBITMQ_BROKERS" {
        body["Queues"] = json!(case.topics);
    } else {
        body["Topics"] = json!(case.topics);
    }
    for (k, v) in settings.as_object().unwrap() {
        body[k] = v.clone();
    }
    let r = s
        .http
        .post(s.url("/2015-03-31/event-source-mappings"))
        .json(&body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    assert_eq!(status, 202, "{v}");
    v["UUID"].as_str().unwrap().to_string()
}

/// The mapping's native view (with its state).
fn source(s: &Server, uuid: &str) -> Value {
    s.get_json(&format!("/v1/sources/{uuid}")).1
}

/// Waits until the mapping is connected (fails with its last error otherwise).
fn wait_connected(s: &Server, uuid: &str) {
    let ok = eventually(Duration::from_secs(30), || {
        source(s, uuid)["status"]["state"] == "connected"
    });
    assert!(ok, "mapping never connected: {}", source(s, uuid));
}

fn server_with_secret() -> Server {
    let s = Server::start_unsandboxed(&[]);
    let (status, v) = s.put_json(
        "/v1/secrets/rabbit-guest",
        &json!({"value": "{\"username\":\"guest\",\"password\":\"guest\"}"}),
    );
    assert!(status < 300, "{v}");
    s
}

/// Records, batching, filters, a partial failure, the on-failure destination, the shape.
fn delivers_as_lambda_does(case: Case, ordered: bool) {
    let s = server_with_secret();
    let record = s.data_dir.path().join("records.jsonl");
    worker(&s, &record, 0);
    s.put_json("/v1/queues/source-dlq", &json!({}));
    let uuid = create_mapping(
        &s,
        &case,
        json!({
            "BatchSize": 10,
            "MaximumBatchingWindowInSeconds": 1,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "FilterCriteria": {"Filters": [{"Pattern": case.filter.to_string()}]},
            "MaximumRetryAttempts": 1,
            "DestinationConfig": {"OnFailure": {"Destination": "arn:aws:sqs:us-east-1:000000000000:source-dlq"}},
        }),
    );
    wait_connected(&s, &uuid);
    let mut bodies: Vec<String> = (0..24)
        .map(|i| json!({"n": i, "kind": if i % 4 == 3 { "skip" } else { "keep" }}).to_string())
        .collect();
    bodies.insert(
        5,
        json!({"n": 100, "kind": "keep", "note": "poison"}).to_string(),
    );
    (case.publish)(&bodies);
    let keep: HashSet<String> = bodies
        .iter()
        .filter(|b| b.contains("\"keep\"") && !b.contains("poison"))
        .cloned()
        .collect();
    let dlq_has_one = || s.get_json("/v1/queues/source-dlq").1["stats"]["visible"] == 1;
    let ok = eventually(Duration::from_secs(60), || {
        let got = delivered(&record);
        keep.iter().all(|k| got.contains(&normalize(k))) && dlq_has_one()
    });
    let lines = json_lines(&record);
    assert!(
        ok,
        "not every record arrived or the poison record never reached the destination: {} lines, mapping {}",
        lines.len(),
        source(&s, &uuid)
    );
    // Filtered records were never delivered; batches hold at most BatchSize records.
    assert!(
        lines
            .iter()
            .all(|l| !l["body"].as_str().unwrap().contains("skip")),
        "a filtered record was delivered"
    );
    assert!(lines.iter().all(|l| l["size"].as_u64().unwrap() <= 10));
    for l in &lines {
        (case.shape)(l);
    }
    // The poison record: its first attempt and one retry; the good records once each
    // (at least once: a record of a failed ordered batch suffix may come twice).
    let poison: Vec<&Value> = lines
        .iter()
        .filter(|l| l["body"].as_str().unwrap().contains("poison"))
        .collect();
    assert_eq!(poison.len(), 2, "{poison:?}");
    if !ordered {
        let mut seen = BTreeMap::new();
        for l in &lines {
            *seen
                .entry(l["id"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert_eq!(
            twice.len(),
            1,
            "only the failed record is redelivered: {twice:?}"
        );
    }
    // The destination holds Lambda's invocation record with the failed record.
    let r = s
        .http
        .post(s.url("/v1/queues/source-dlq/receive"))
        .json(&json!({"max": 1}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let got: Value = r.json().unwrap();
    let body: Value = serde_json::from_str(got["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["requestContext"]["condition"], "RetryAttemptsExhausted",
        "{body}"
    );
    assert_eq!(
        body["requestContext"]["approximateInvokeCount"], 2,
        "{body}"
    );
    assert_eq!(body["SourceBatchInfo"]["batchSize"], 1, "{body}");
    assert_eq!(
        body["SourceBatchInfo"]["firstRecordId"], poison[0]["id"],
        "the failed record, and only it, went to the destination: {body}"
    );
    assert!(body["payload"].is_object(), "{body}");
    // Everything is acknowledged on the broker.
    let group = source(&s, &uuid)["source"]["group"]
        .as_str()
        .expect("the durable name in effect")
        .to_string();
    assert!(
        eventually(Duration::from_secs(20), || (case.settled)(&group)),
        "the broker still holds unacknowledged records"
    );
    let st = source(&s, &uuid);
    assert_eq!(st["status"]["state"], "connected", "{st}");
    assert!(
        st["status"]["records"].as_u64().unwrap() >= keep.len() as u64,
        "{st}"
    );
    assert_eq!(st["status"]["dead_lettered"], 1, "{st}");
    // The Lambda API describes it as a self-managed source.
    let (_, got) = s.get_json(&format!("/2015-03-31/event-source-mappings/{uuid}"));
    assert_eq!(
        got["SelfManagedEventSource"]["Endpoints"][case.endpoints_key][0],
        case.endpoint.as_str()
    );
    assert_eq!(got["LastProcessingResult"], "OK", "{got}");
    // Deleting it removes it (and, for PostgreSQL, its slot).
    let r = s
        .http
        .delete(s.url(&format!("/2015-03-31/event-source-mappings/{uuid}")))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    assert_eq!(s.get_json(&format!("/v1/sources/{uuid}")).0, 404);
}

/// The bodies the worker wrote to `record`, normalised.
fn delivered(record: &Path) -> HashSet<String> {
    json_lines(record)
        .iter()
        .filter_map(|l| l["body"].as_str().map(normalize))
        .collect()
}

/// Waits up to 2 minutes until every one of `bodies` was delivered: whether they all
/// were, what was wanted and what came.
fn all_delivered(bodies: &[String], record: &Path) -> (bool, HashSet<String>, HashSet<String>) {
    let want: HashSet<String> = bodies.iter().map(|b| normalize(b)).collect();
    let ok = eventually(Duration::from_secs(120), || {
        want.is_subset(&delivered(record))
    });
    (ok, want, delivered(record))
}

/// The same JSON text whatever its key order or spacing.
fn normalize(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_string())
}

/// At most `MaximumConcurrency` batches run at once, and that many do.
fn concurrency_holds(case: Case) {
    let s = server_with_secret();
    let record = s.data_dir.path().join("records.jsonl");
    worker(&s, &record, 400);
    let uuid = create_mapping(
        &s,
        &case,
        json!({"BatchSize": 1, "ScalingConfig": {"MaximumConcurrency": 2}}),
    );
    wait_connected(&s, &uuid);
    let bodies: Vec<String> = (0..12)
        .map(|i| json!({"n": i, "kind": "keep"}).to_string())
        .collect();
    (case.publish)(&bodies);
    let ok = eventually(Duration::from_secs(60), || json_lines(&record).len() >= 12);
    assert!(ok, "records missing: {}", source(&s, &uuid));
    let spans: Vec<(i64, i64)> = json_lines(&record)
        .iter()
        .map(|l| (l["start"].as_i64().unwrap(), l["end"].as_i64().unwrap()))
        .collect();
    let most = spans
        .iter()
        .map(|(t, _)| spans.iter().filter(|(a, b)| a <= t && t < b).count())
        .max()
        .unwrap();
    assert_eq!(most, 2, "batches in flight at once: {spans:?}");
}

/// A `kill -9` of Nimbus while 2,000 records flow: after the restart every record was
/// delivered (at least once).
fn survives_kill9(case: Case) {
    let mut s = server_with_secret();
    let record = s.data_dir.path().join("records.jsonl");
    // Slow enough (200 ms a batch of 20) that the kill lands mid-stream.
    worker(&s, &record, 200);
    let uuid = create_mapping(
        &s,
        &case,
        json!({"BatchSize": 20, "MaximumBatchingWindowInSeconds": 1}),
    );
    wait_connected(&s, &uuid);
    let bodies: Vec<String> = (0..2000)
        .map(|i| json!({"n": i, "kind": "keep"}).to_string())
        .collect();
    (case.publish)(&bodies);
    let ok = eventually(Duration::from_secs(60), || json_lines(&record).len() >= 200);
    assert!(ok, "nothing flowed: {}", source(&s, &uuid));
    s.kill9();
    let before = json_lines(&record).len();
    assert!(
        before < 2000,
        "everything was delivered before the kill: nothing tested"
    );
    s.restart();
    let (ok, want, got) = all_delivered(&bodies, &record);
    assert!(
        ok,
        "{} of 2000 records lost after kill -9 ({before} lines before it); mapping {}",
        want.difference(&got).count(),
        source(&s, &uuid)
    );
}

#[test]
fn sources_nats_delivers_as_lambda_does() {
    delivers_as_lambda_does(nats_case(), false);
}

#[test]
fn sources_redis_delivers_as_lambda_does() {
    delivers_as_lambda_does(redis_case(), false);
}

#[test]
fn sources_rabbitmq_delivers_as_lambda_does() {
    delivers_as_lambda_does(rabbit_case(), false);
}

#[test]
fn sources_mqtt_delivers_as_lambda_does() {
    delivers_as_lambda_does(mqtt_case(), false);
}

#[test]
fn sources_postgres_delivers_as_lambda_does() {
    delivers_as_lambda_does(postgres_case(), true);
}

#[test]
fn sources_nats_concurrency_holds() {
    concurrency_holds(nats_case());
}

#[test]
fn sources_redis_concurrency_holds() {
    concurrency_holds(redis_case());
}

#[test]
fn sources_rabbitmq_concurrency_holds() {
    concurrency_holds(rabbit_case());
}

#[test]
fn sources_mqtt_concurrency_holds() {
    concurrency_holds(mqtt_case());
}

#[test]
fn sources_nats_survives_kill9() {
    survives_kill9(nats_case());
}

#[test]
fn sources_redis_survives_kill9() {
    survives_kill9(redis_case());
}

#[test]
fn sources_rabbitmq_survives_kill9() {
    survives_kill9(rabbit_case());
}

/// MQTT brokers bound what they queue for a session (Mosquitto: 1,000 messages by
/// default, beyond which it drops QoS 1 messages for that client, as its log says), so a
/// burst of 2,000 needs a broker configured for it (docs/sources.md): a private Mosquitto
/// with `max_queued_messages 0` (no bound).
#[test]
fn sources_mqtt_survives_kill9() {
    let broker = brokers::Mosquitto::start("max_queued_messages 0");
    let mut case = mqtt_case();
    let port = broker.port;
    case.endpoint = format!("mqtt://127.0.0.1:{port}");
    let topic = case.topics[0].replace('+', "a");
    case.publish = Box::new(move |bodies| {
        let p: Vec<Vec<u8>> = bodies.iter().map(|b| b.as_bytes().to_vec()).collect();
        brokers::mqtt_publish_to(port, &topic, &p)
    });
    survives_kill9(case);
}

#[test]
fn sources_postgres_survives_kill9() {
    survives_kill9(postgres_case());
}

/// `case` with its endpoint replaced by a cuttable proxy in front of the broker.
fn through_proxy(mut case: Case, broker: &str) -> (Case, nimbus_tests::proxy::Proxy) {
    let proxy = nimbus_tests::proxy::Proxy::start(broker);
    case.endpoint = case.endpoint.replacen(broker, &proxy.addr, 1);
    (case, proxy)
}

/// A network cut between Nimbus and the broker (every connection shut down, new ones
/// refused for 3 s) while records flow: the mapping reports it, reconnects, and every
/// record published before, during and after the cut is delivered.
fn survives_a_network_cut(case: Case, broker: &str) {
    let (case, proxy) = through_proxy(case, broker);
    let s = server_with_secret();
    let record = s.data_dir.path().join("records.jsonl");
    worker(&s, &record, 0);
    let uuid = create_mapping(
        &s,
        &case,
        json!({"BatchSize": 20, "MaximumBatchingWindowInSeconds": 1}),
    );
    wait_connected(&s, &uuid);
    let bodies: Vec<String> = (0..600)
        .map(|i| json!({"n": i, "kind": "keep"}).to_string())
        .collect();
    (case.publish)(&bodies[..300]);
    assert!(
        eventually(Duration::from_secs(60), || json_lines(&record).len() >= 50),
        "nothing flowed: {}",
        source(&s, &uuid)
    );
    proxy.cut();
    (case.publish)(&bodies[300..]);
    let failing = eventually(Duration::from_secs(20), || {
        source(&s, &uuid)["status"]["state"] == "failing"
    });
    assert!(failing, "the cut was not noticed: {}", source(&s, &uuid));
    assert!(s.healthy(), "the server is unhealthy during a broker cut");
    std::thread::sleep(Duration::from_secs(3));
    proxy.restore();
    let (ok, _, _) = all_delivered(&bodies, &record);
    assert!(ok, "records lost across the cut: {}", source(&s, &uuid));
    wait_connected(&s, &uuid);
}

#[test]
fn sources_nats_survives_a_network_cut() {
    survives_a_network_cut(nats_case(), brokers::NATS);
}

#[test]
fn sources_redis_survives_a_network_cut() {
    survives_a_network_cut(redis_case(), brokers::REDIS);
}

#[test]
fn sources_rabbitmq_survives_a_network_cut() {
    survives_a_network_cut(rabbit_case(), brokers::RABBITMQ);
}

#[test]
fn sources_mqtt_survives_a_network_cut() {
    survives_a_network_cut(mqtt_case(), brokers::MQTT);
}

#[test]
fn sources_postgres_survives_a_network_cut() {
    survives_a_network_cut(postgres_case(), brokers::POSTGRES);
}

/// A restart of PostgreSQL itself (a private server: the shared one is never restarted)
/// in the middle of 2,000 changes loses none.
#[test]
fn sources_postgres_survives_a_server_restart() {
    let pg = nimbus_tests::pg_instance::PgInstance::start("logical");
    let db = Pg::connect_to(&pg.url());
    db.exec("CREATE TABLE items (id serial PRIMARY KEY, body text NOT NULL)");
    let s = Server::start_unsandboxed(&[]);
    let record = s.data_dir.path().join("records.jsonl");
    worker(&s, &record, 100);
    let case_endpoint = pg.url();
    let r = s
        .http
        .post(s.url("/v1/sources"))
        .json(&json!({
            "function": "worker", "type": "postgres", "endpoints": [case_endpoint],
            "topics": ["items"], "batch_size": 20, "batching_window_s": 1,
        }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let uuid = r.json::<Value>().unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    wait_connected(&s, &uuid);
    for chunk in 0..4 {
        let values: Vec<String> = (0..500)
            .map(|i| format!("('{{\"n\":{}}}')", chunk * 500 + i))
            .collect();
        db.exec(&format!(
            "INSERT INTO items (body) VALUES {}",
            values.join(",")
        ));
    }
    drop(db);
    assert!(
        eventually(Duration::from_secs(60), || json_lines(&record).len() >= 100),
        "nothing flowed: {}",
        source(&s, &uuid)
    );
    assert!(
        json_lines(&record).len() < 2000,
        "everything was delivered before the restart: nothing tested"
    );
    pg.restart();
    let ok = eventually(Duration::from_secs(120), || {
        let got: HashSet<i64> = json_lines(&record)
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l["body"].as_str()?).ok()?["n"].as_i64())
            .collect();
        got.len() == 2000
    });
    assert!(
        ok,
        "changes lost across a PostgreSQL restart: {}",
        source(&s, &uuid)
    );
    // The slot is dropped with the mapping.
    let r = s
        .http
        .delete(s.url(&format!("/v1/sources/{uuid}")))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let db = Pg::connect_to(&pg.url());
    assert!(db
        .column("SELECT slot_name FROM pg_replication_slots")
        .is_empty());
}

/// Bad settings and broken brokers: each mapping says what is wrong in its state, the
/// server stays healthy and a good mapping beside them keeps delivering.
#[test]
fn sources_bad_input_is_reported_and_isolated() {
    // The missing-table mapping must fail on the table, not on the server's settings.
    brokers::ensure_logical_postgres();
    let replica = nimbus_tests::pg_instance::PgInstance::start("replica");
    let good = redis_case();
    let s = server_with_secret();
    let record = s.data_dir.path().join("records.jsonl");
    worker(&s, &record, 0);
    s.put_json(
        "/v1/secrets/wrong-guest",
        &json!({"value": "{\"username\":\"guest\",\"password\":\"not-it\"}"}),
    );
    let create = |body: Value| -> (u16, Value) {
        let r = s
            .http
            .post(s.url("/v1/sources"))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    let base = |kind: &str, endpoint: &str, topic: &str| json!({"function": "worker", "type": kind, "endpoints": [endpoint], "topics": [topic]});
    // Refused at once: a password in a URL, an unknown kind, a missing secret or function.
    let (st, v) = create(base(
        "rabbitmq",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
        "q",
    ));
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("secret"), "{v}");
    assert!(!v.to_string().contains("guest:guest"), "{v}");
    let (st, v) = create(base("kafka", "kafka://h:9092", "t"));
    assert_eq!(st, 400, "{v}");
    let mut with_secret = base("nats", "nats://127.0.0.1:4222", "x.y");
    with_secret["secret"] = json!("no-such-secret");
    let (st, v) = create(with_secret);
    assert_eq!(st, 400, "{v}");
    let mut no_fn = base("nats", "nats://127.0.0.1:4222", "x.y");
    no_fn["function"] = json!("missing");
    assert_eq!(create(no_fn).0, 404);
    // Accepted, then failing with a clear reason.
    let unreachable_port = free_port();
    let failing = [
        (
            base(
                "redis",
                &format!("redis://127.0.0.1:{unreachable_port}/0"),
                "s",
            ),
            "cannot reach",
        ),
        (
            {
                let mut b = base("rabbitmq", "amqp://127.0.0.1:5672/%2f", "q");
                b["secret"] = json!("wrong-guest");
                b
            },
            "refused",
        ),
        (
            base("redis", "redis://127.0.0.1:6379/0", &unique("missing-")),
            "does not exist",
        ),
        (
            base(
                "postgres",
                "postgres://postgres@127.0.0.1:5432/test",
                &unique("no_table_"),
            ),
            "does not exist",
        ),
        (base("postgres", &replica.url(), "items"), "wal_level"),
        (
            base(
                "nats",
                "nats://127.0.0.1:4222",
                &format!("{}.none", unique("nostream")),
            ),
            "stream",
        ),
        (
            base(
                "rabbitmq",
                "amqp://127.0.0.1:5672/%2f",
                &unique("missing-q-"),
            ),
            "does not exist",
        ),
    ];
    let mut uuids = Vec::new();
    for (mut body, _) in failing.clone() {
        if body["type"] == "rabbitmq" && body.get("secret").is_none() {
            body["secret"] = json!("rabbit-guest");
        }
        let (st, v) = create(body);
        assert_eq!(st, 201, "{v}");
        uuids.push(v["uuid"].as_str().unwrap().to_string());
    }
    let good_uuid = create_mapping(&s, &good, json!({"BatchSize": 5}));
    for (uuid, (_, want)) in uuids.iter().zip(failing.iter()) {
        let ok = eventually(Duration::from_secs(30), || {
            let st = &source(&s, uuid)["status"];
            st["state"] == "failing"
                && st["last_error"]
                    .as_str()
                    .is_some_and(|e| e.to_lowercase().contains(want))
        });
        assert!(
            ok,
            "expected a failing state with {want:?}: {}",
            source(&s, uuid)
        );
    }
    // The good mapping delivers meanwhile; the server is healthy.
    wait_connected(&s, &good_uuid);
    let bodies: Vec<String> = (0..10)
        .map(|i| json!({"n": i, "kind": "keep"}).to_string())
        .collect();
    (good.publish)(&bodies);
    assert!(
        eventually(Duration::from_secs(30), || json_lines(&record).len() >= 10),
        "the good mapping stalled: {}",
        source(&s, &good_uuid)
    );
    assert!(s.healthy());
    // The CLI shows the states and the reasons.
    let out = s.cli(&["sources"]);
    let text = cli_ok(&out).unwrap();
    assert!(
        text.contains("failing") && text.contains("connected"),
        "{text}"
    );
    assert!(text.contains("wal_level"), "{text}");
}

/// Non-UTF-8 payloads arrive base64-encoded; a record over the 6 MB invoke limit goes to
/// the on-failure destination with the reason, and the mapping goes on.
#[test]
fn sources_binary_and_huge_payloads() {
    let rabbit = Rabbit::connect();
    let queue = unique("nimbus-t-big-");
    rabbit.declare_queue(&queue, &[]);
    let s = server_with_secret();
    let record = s.data_dir.path().join("records.jsonl");
    worker(&s, &record, 0);
    s.put_json("/v1/queues/big-dlq", &json!({}));
    let r = s
        .http
        .post(s.url("/v1/sources"))
        .json(&json!({
            "function": "worker", "type": "rabbitmq", "endpoints": ["amqp://127.0.0.1:5672/%2f"],
            "topics": [queue], "secret": "rabbit-guest", "batch_size": 10,
            "on_failure": "arn:aws:sqs:us-east-1:000000000000:big-dlq",
        }))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let uuid = r.json::<Value>().unwrap()["uuid"]
        .as_str()
        .unwrap()
        .to_string();
    wait_connected(&s, &uuid);
    let huge = vec![b'x'; 7 * 1024 * 1024];
    rabbit.publish(
        &queue,
        &[vec![0xff, 0xfe, 0x00, 0x80], huge, b"after".to_vec()],
    );
    let ok = eventually(Duration::from_secs(60), || {
        let lines = json_lines(&record);
        lines.iter().any(|l| l["body"] == "after")
            && s.get_json("/v1/queues/big-dlq").1["stats"]["visible"] == 1
    });
    assert!(ok, "{}", source(&s, &uuid));
    let lines = json_lines(&record);
    let bin = lines
        .iter()
        .find(|l| l["record"]["data"] == "//4AgA==")
        .expect("the binary record arrived base64-encoded");
    assert_eq!(bin["size"], 1);
    let r = s
        .http
        .post(s.url("/v1/queues/big-dlq/receive"))
        .json(&json!({"max": 1}))
        .send()
        .unwrap();
    let got: Value = r.json().unwrap();
    let body: Value = serde_json::from_str(got["messages"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        body["requestContext"]["condition"], "PayloadTooLarge",
        "{body}"
    );
    assert_eq!(body["SourceBatchInfo"]["payloadOmitted"], true, "{body}");
    let st = source(&s, &uuid);
    assert!(
        st["status"]["last_error"]
            .as_str()
            .unwrap()
            .contains("6 MB"),
        "{st}"
    );
    assert_eq!(rabbit.queue_len(&queue), 0);
    rabbit.delete_queue(&queue);
}

/// Publishing back: an async invocation's success destination is a JetStream subject and a
/// bus rule's target a Redis stream; both get their message (at least once, through the
/// outbox), and a target's broker being unreachable only delays delivery.
#[test]
fn targets_receive_destinations_and_rule_targets() {
    let nats = Nats::connect();
    let stream = unique("NIMBUS_OUT");
    let subject = format!("{}.results", stream.to_lowercase());
    nats.create_stream(&stream, &[&subject]);
    let mut redis = Redis::connect();
    let out_stream = unique("nimbus-out-");
    let proxy = nimbus_tests::proxy::Proxy::start(brokers::REDIS);
    proxy.cut();
    let s = Server::start_unsandboxed(&[]);
    s.deploy(
        "echo",
        node_cfg("index.handler"),
        &[(
            "index.js",
            "exports.handler = async (e) => ({ echoed: e });",
        )],
    );
    let (st, v) = s.put_json(
        "/v1/targets/results",
        &json!({"type": "nats", "endpoints": [format!("nats://{}", brokers::NATS)], "options": {"subject": subject}}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["arn"],
        "arn:nimbus:targets:us-east-1:000000000000:target/results"
    );
    let (st, v) = s.put_json(
        "/v1/targets/audit",
        &json!({"type": "redis", "endpoints": [format!("redis://{}/0", proxy.addr)], "options": {"stream": out_stream}}),
    );
    assert_eq!(st, 200, "{v}");
    // A bad target is refused with the reason.
    let (st, v) = s.put_json(
        "/v1/targets/bad",
        &json!({"type": "rabbitmq", "endpoints": ["amqp://127.0.0.1:5672/%2f"]}),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("routing_key"), "{v}");
    // The async destination.
    let r = s
        .http
        .put(s.url("/2019-09-25/functions/echo/event-invoke-config"))
        .json(&json!({"DestinationConfig": {"OnSuccess": {"Destination": "arn:nimbus:targets:us-east-1:000000000000:target/results"}}}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().unwrap());
    let r = s
        .http
        .post(s.url("/2015-03-31/functions/echo/invocations"))
        .header("X-Amz-Invocation-Type", "Event")
        .body(r#"{"order": 7}"#)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // The bus rule, while the Redis target is cut off.
    let (st, v) = s.put_json(
        "/v1/buses/default/rules/audit",
        &json!({"pattern": {"source": ["shop"]}, "targets": ["arn:nimbus:targets:us-east-1:000000000000:target/audit"]}),
    );
    assert_eq!(st, 200, "{v}");
    let r = s
        .http
        .post(s.url("/v1/buses/default/events"))
        .json(&json!({"Entries": [{"Source": "shop", "DetailType": "sold", "Detail": "{\"sku\":\"a1\"}"}]}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(
        eventually(Duration::from_secs(30), || nats.stream_messages(&stream)
            == 1),
        "the destination record never reached the subject: {}",
        s.get_json("/v1/targets/results").1
    );
    let msg: Value = serde_json::from_slice(&nats.stream_message(&stream, 1)).unwrap();
    assert_eq!(msg["requestContext"]["condition"], "Success", "{msg}");
    assert_eq!(msg["responsePayload"]["echoed"]["order"], 7, "{msg}");
    // The Redis target fails meanwhile, keeps the message, and delivers it once reachable.
    assert!(eventually(Duration::from_secs(20), || {
        s.get_json("/v1/targets/audit").1["status"]["state"] == "failing"
    }));
    assert_eq!(s.get_json("/v1/targets/audit").1["waiting"], 1);
    let metrics = s
        .http
        .get(s.url("/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("nimbus_target_deliveries_total{target=\"audit\",outcome=\"failed\"}"),
        "{metrics}"
    );
    proxy.restore();
    let delivered = eventually(Duration::from_secs(90), || redis.xlen(&out_stream) == 1);
    assert!(delivered, "{}", s.get_json("/v1/targets/audit").1);
    let cli = cli_ok(&s.cli(&["targets"])).unwrap();
    assert!(cli.contains("audit") && cli.contains("results"), "{cli}");
    redis.cmd(&["DEL", &out_stream]);
    nats.delete_stream(&stream);
}
