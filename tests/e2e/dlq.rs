//! Lambda's `DeadLetterConfig` through the Lambda API and the native deploy: an
//! asynchronous event that exhausts its retries reaches the version's dead-letter queue
//! unmodified, with the attributes `RequestID`, `ErrorCode` and `ErrorMessage`, or an event
//! bus as a `Lambda Function Dead Letter` event; bad targets are refused by name.

use nimbus_tests::*;
use serde_json::{json, Value};

const FAILS: &str =
    "def handler(event, context):\n    raise ValueError('boom: ' + str(event.get('order')))\n";

fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:us-east-1:000000000000:{name}")
}

fn put(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = s.http.put(s.url(path)).json(&body).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = s.http.post(s.url(path)).json(&body).send().unwrap();
    (r.status().as_u16(), r.json().unwrap_or(Value::Null))
}

/// CreateFunction of a Python function that always fails, with `extra` fields.
fn create(s: &Server, name: &str, extra: Value) -> (u16, Value) {
    s.create_python_function(name, FAILS, extra)
}

/// No retries, so the first failure discards the event.
fn no_retries(s: &Server, name: &str) {
    let (code, v) = put(
        s,
        &format!("/2019-09-25/functions/{name}/event-invoke-config"),
        json!({"MaximumRetryAttempts": 0}),
    );
    assert_eq!(code, 200, "{v}");
}

/// One message of `queue`, waiting up to 20 s.
fn receive(s: &Server, queue: &str) -> Value {
    let (code, v) = post(
        s,
        &format!("/v1/queues/{queue}/receive"),
        json!({"wait_seconds": 20}),
    );
    assert_eq!(code, 200, "{v}");
    v["messages"][0].clone()
}

#[test]
fn a_discarded_event_reaches_the_dead_letter_queue_with_lambdas_attributes() {
    let s = Server::start(&[]);
    assert_eq!(put(&s, "/v1/queues/dead", json!({})).0, 200);

    // Targets that do not exist, or are not queues or buses, are refused by name.
    for (target, says) in [
        (queue_arn("nope"), "no such queue"),
        (
            "arn:aws:sns:us-east-1:000000000000:topic".to_string(),
            "SNS",
        ),
        ("dead".to_string(), "not a queue or event bus ARN"),
    ] {
        let (code, v) = create(
            &s,
            "dlq-bad",
            json!({"DeadLetterConfig": {"TargetArn": target}}),
        );
        assert_eq!(code, 400, "{v}");
        assert_eq!(v["Type"], "User", "{v}");
        let msg = v["message"].as_str().or(v["Message"].as_str()).unwrap();
        assert!(
            msg.contains("DeadLetterConfig") && msg.contains(says),
            "{target}: {v}"
        );
    }

    let (code, v) = create(
        &s,
        "dlq-fails",
        json!({"DeadLetterConfig": {"TargetArn": queue_arn("dead")}}),
    );
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["DeadLetterConfig"]["TargetArn"], queue_arn("dead"));
    let (_, cfg) = s.get_json("/2015-03-31/functions/dlq-fails/configuration");
    assert_eq!(cfg["DeadLetterConfig"]["TargetArn"], queue_arn("dead"));
    no_retries(&s, "dlq-fails");

    let payload = r#"{"order": 9, "note": "kept as sent"}"#;
    let r = s.invoke_with(
        "dlq-fails",
        payload.as_bytes().to_vec(),
        &[("X-Amz-Invocation-Type", "Event")],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let request_id = r.header("x-amzn-requestid").unwrap().to_string();
    let m = receive(&s, "dead");
    assert_eq!(
        m["body"],
        payload,
        "the event, unmodified: {m}\n{}",
        s.log()
    );
    let attrs = &m["attributes"];
    assert_eq!(attrs["RequestID"]["stringValue"], request_id, "{m}");
    assert_eq!(attrs["RequestID"]["dataType"], "String", "{m}");
    assert_eq!(attrs["ErrorCode"]["stringValue"], "200", "{m}");
    assert_eq!(attrs["ErrorCode"]["dataType"], "Number", "{m}");
    let error = attrs["ErrorMessage"]["stringValue"].as_str().unwrap();
    assert!(error.contains("boom: 9"), "{m}");

    // An empty TargetArn (as Terraform sends) removes it: the next failure goes nowhere.
    let (code, v) = put(
        &s,
        "/2015-03-31/functions/dlq-fails/configuration",
        json!({"DeadLetterConfig": {"TargetArn": ""}}),
    );
    assert_eq!(code, 200, "{v}");
    assert!(v.get("DeadLetterConfig").is_none(), "{v}");
    assert!(s.healthy(), "{}", s.log());
}

#[test]
fn an_event_bus_as_dead_letter_target_and_the_native_deploy_keeps_it() {
    let s = Server::start(&[]);
    assert_eq!(put(&s, "/v1/queues/bus-dead", json!({})).0, 200);
    let (code, v) = put(
        &s,
        "/v1/buses/default/rules/dead-letters",
        json!({"pattern": {"source": ["lambda"], "detail-type": ["Lambda Function Dead Letter"]},
               "targets": [queue_arn("bus-dead")]}),
    );
    assert_eq!(code, 200, "{v}");
    let bus = "arn:aws:events:us-east-1:000000000000:event-bus/default";
    // Through the native deploy (`dead_letter` in nimbus.toml becomes this field).
    let mut cfg = python_cfg("app.handler");
    cfg["dead_letter_target"] = json!(bus);
    s.deploy("dlq-bus", cfg.clone(), &[("app.py", FAILS)]);
    let (_, got) = s.get_json("/2015-03-31/functions/dlq-bus/configuration");
    assert_eq!(got["DeadLetterConfig"]["TargetArn"], bus, "{got}");
    no_retries(&s, "dlq-bus");
    let r = s.invoke_with(
        "dlq-bus",
        br#"{"order": 3}"#.to_vec(),
        &[("X-Amz-Invocation-Type", "Event")],
    );
    assert_eq!(r.status, 202);
    let request_id = r.header("x-amzn-requestid").unwrap().to_string();
    let m = receive(&s, "bus-dead");
    let event: Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        event["detail-type"], "Lambda Function Dead Letter",
        "{event}"
    );
    assert_eq!(event["source"], "lambda");
    assert_eq!(event["detail"]["RequestID"], request_id, "{event}");
    assert_eq!(event["detail"]["ErrorCode"], 200, "{event}");
    assert_eq!(event["detail"]["requestPayload"], json!({"order": 3}));
    assert!(event["detail"]["ErrorMessage"]
        .as_str()
        .unwrap()
        .contains("boom: 3"));

    // A bus that does not exist is refused by the native deploy too.
    cfg["dead_letter_target"] = json!("arn:aws:events:us-east-1:000000000000:event-bus/none");
    let (code, v) = s.deploy_zip("dlq-bus", cfg, &zip_files(&[("app.py", FAILS)]));
    assert_eq!(code, 400, "{v}");
    assert!(v.to_string().contains("no such event bus"), "{v}");
    assert!(s.healthy(), "{}", s.log());
}
