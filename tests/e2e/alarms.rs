//! Alarms through the real binary: an alarm on a function's errors goes to ALARM after a
//! failed invocation, its state change lands on the default bus as a `Nimbus Alarm State
//! Change` event (CloudWatch's shape) that a rule on `source: nimbus.alarms` delivers to a
//! recording function, and the alarm returns to OK (with a second event) once a minute
//! passes without errors. Plus the API's validation, `nimbus alarm put|ls|rm`, and
//! `[alarms.NAME]` in a manifest applied by `nimbus deploy` (a bad one deploys nothing). The
//! server runs under the test hook `NIMBUS_TEST_MINUTE_MS` (a 2 s "minute").

use crate::bus::{received, recorder};
use crate::history::MINUTE_MS;
use nimbus_tests::*;
use serde_json::{json, Value};
use std::time::Duration;

const FLAKY: &str = "def handler(event, context):\n    if event.get('fail'):\n        raise ValueError('boom')\n    return 'ok'\n";

fn state(s: &Server, name: &str) -> String {
    let (status, v) = s.get_json(&format!("/v1/alarms/{name}"));
    assert_eq!(status, 200, "{v}");
    v["state"].as_str().unwrap().to_string()
}

#[test]
fn an_alarm_fires_on_errors_notifies_through_the_bus_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alarms.jsonl");
    let s = Server::start_with_env(
        &["--isolation", "none"],
        &[("NIMBUS_TEST_MINUTE_MS", MINUTE_MS)],
    );
    s.deploy("flaky", python_cfg("app.handler"), &[("app.py", FLAKY)]);
    recorder(&s, "notify", &out);
    let (status, v) = s.put_json(
        "/v1/buses/default/rules/alarm-changes",
        &json!({"pattern": {"source": ["nimbus.alarms"], "detail-type": ["Nimbus Alarm State Change"]}, "targets": ["notify"]}),
    );
    assert_eq!(status, 200, "{v}");

    // Bad definitions are 400s naming the field.
    for (body, field) in [
        (
            json!({"function": "flaky", "metric": "cpu", "comparison": ">", "threshold": 0}),
            "metric",
        ),
        (
            json!({"function": "flaky", "metric": "errors", "comparison": "!=", "threshold": 0}),
            "comparison",
        ),
        (
            json!({"function": "flaky", "metric": "errors", "comparison": ">", "threshold": 0, "period": 90}),
            "period",
        ),
        (
            json!({"function": "flaky", "metric": "errors", "comparison": ">", "threshold": 0, "evaluation_periods": 2, "datapoints_to_alarm": 3}),
            "datapoints_to_alarm",
        ),
        (
            json!({"function": "flaky", "metric": "errors", "comparison": ">", "threshold": 0, "treat_missing_data": "maybe"}),
            "treat_missing_data",
        ),
        (
            json!({"function": "flaky", "metric": "errors"}),
            "comparison",
        ),
    ] {
        let (status, v) = s.put_json("/v1/alarms/bad", &body);
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["type"], "InvalidParameterValueException");
        assert!(v["message"].as_str().unwrap().contains(field), "{v}");
    }
    let (status, _) = s.put_json(
        "/v1/alarms/bad%20name",
        &json!({"function": "flaky", "metric": "errors", "comparison": ">", "threshold": 0}),
    );
    assert_eq!(status, 400);
    assert_eq!(s.get_json("/v1/alarms/bad").0, 404);

    // The alarm: any error in a minute; a minute without invocations is not breaching.
    let out_cli = cli_ok(&s.cli(&[
        "alarm",
        "put",
        "flaky-errors",
        "--function",
        "flaky",
        "--metric",
        "errors",
        "--comparison",
        ">",
        "--threshold",
        "0",
        "--treat-missing-data",
        "notBreaching",
        "--description",
        "flaky fails",
    ]))
    .unwrap();
    assert!(
        out_cli.contains("alarm flaky-errors: errors > 0 on flaky"),
        "{out_cli}"
    );
    assert!(
        eventually(Duration::from_secs(20), || state(&s, "flaky-errors")
            == "OK"),
        "{}",
        s.log()
    );
    s.invoke("flaky", "{}").ok();
    assert!(s.invoke("flaky", r#"{"fail": true}"#).function_error());
    assert!(
        eventually(Duration::from_secs(20), || state(&s, "flaky-errors")
            == "ALARM"),
        "{}",
        s.log()
    );
    let (_, listed) = s.get_json("/v1/alarms");
    assert_eq!(listed["alarms"][0]["name"], "flaky-errors", "{listed}");
    assert_eq!(listed["alarms"][0]["state"], "ALARM", "{listed}");
    assert!(listed["alarms"][0]["state_reason"]
        .as_str()
        .unwrap()
        .contains("Threshold Crossed"));
    let ls = cli_ok(&s.cli(&["alarm", "ls"])).unwrap();
    assert!(
        ls.lines()
            .any(|l| l.starts_with("flaky-errors") && l.contains("ALARM")),
        "{ls}"
    );

    // Back to OK once a minute passes without errors.
    assert!(
        eventually(Duration::from_secs(20), || state(&s, "flaky-errors")
            == "OK"),
        "{}",
        s.log()
    );
    // Every change reached the recorder through the bus: INSUFFICIENT_DATA → OK → ALARM → OK.
    let mut events: Vec<Value> = Vec::new();
    let all = eventually(Duration::from_secs(30), || {
        events = received(&out);
        events.len() >= 3
    });
    assert!(all, "{events:?}\n{}", s.log());
    // Delivered asynchronously: put them in the order of their changes.
    events.sort_by_key(|e| {
        e["detail"]["state"]["timestamp"]
            .as_str()
            .unwrap()
            .to_string()
    });
    let changes: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["detail"]["previousState"]["value"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                e["detail"]["state"]["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        changes,
        [
            ("INSUFFICIENT_DATA".to_string(), "OK".to_string()),
            ("OK".into(), "ALARM".into()),
            ("ALARM".into(), "OK".into()),
        ],
        "{events:#?}"
    );
    let e = &events[1];
    assert_eq!(e["source"], "nimbus.alarms");
    assert_eq!(e["detail-type"], "Nimbus Alarm State Change");
    assert_eq!(
        e["resources"],
        json!(["arn:aws:cloudwatch:us-east-1:000000000000:alarm:flaky-errors"])
    );
    let d = &e["detail"];
    assert_eq!(d["alarmName"], "flaky-errors");
    assert!(d["state"]["reason"]
        .as_str()
        .unwrap()
        .contains("Threshold Crossed"));
    assert!(d["state"]["timestamp"].as_str().unwrap().ends_with("+0000"));
    let reason_data: Value =
        serde_json::from_str(d["state"]["reasonData"].as_str().unwrap()).unwrap();
    assert_eq!(
        reason_data["recentDatapoints"],
        json!([1.0]),
        "{reason_data}"
    );
    let c = &d["configuration"];
    assert_eq!(c["description"], "flaky fails");
    assert_eq!(c["metrics"][0]["metricStat"]["metric"]["name"], "errors");
    assert_eq!(
        c["metrics"][0]["metricStat"]["metric"]["dimensions"]["FunctionName"],
        "flaky"
    );
    assert_eq!(c["metrics"][0]["metricStat"]["period"], 60);
    assert_eq!(c["treatMissingData"], "notBreaching");

    // Removed through the CLI.
    cli_ok(&s.cli(&["alarm", "rm", "flaky-errors"])).unwrap();
    assert_eq!(s.get_json("/v1/alarms/flaky-errors").0, 404);
    assert!(!s.cli(&["alarm", "rm", "flaky-errors"]).status.success());
    assert_eq!(cli_ok(&s.cli(&["alarm", "ls"])).unwrap(), "no alarms\n");
}

#[test]
fn a_manifest_declares_alarms_and_a_bad_one_deploys_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = r#"
[functions.watched]
runtime = "python3.11"
handler = "app.handler"

[alarms.watched-slow]
function = "watched"
metric = "duration_p99"
comparison = ">="
threshold = 1000
period = 300
evaluation_periods = 3
datapoints_to_alarm = 2
treat_missing_data = "ignore"
description = "p99 over a second"
"#;
    write_files(dir.path(), &[("app.py", FLAKY), ("nimbus.toml", manifest)]);
    let s = Server::start(&[]);
    let text = cli_ok(&s.cli(&["deploy", dir.path().to_str().unwrap()])).unwrap();
    assert!(
        text.contains("alarm watched-slow: duration_p99 >= 1000 on watched"),
        "{text}"
    );
    let (status, a) = s.get_json("/v1/alarms/watched-slow");
    assert_eq!(status, 200, "{a}");
    assert_eq!(
        (
            &a["period"],
            &a["evaluation_periods"],
            &a["datapoints_to_alarm"]
        ),
        (&json!(300), &json!(3), &json!(2)),
        "{a}"
    );
    assert_eq!(a["treat_missing_data"], "ignore");
    assert_eq!(a["description"], "p99 over a second");
    // A bad alarm is refused before anything is deployed.
    let bad = manifest.replace("period = 300", "period = 90");
    write_files(
        dir.path(),
        &[("nimbus.toml", &bad.replace("watched", "other"))],
    );
    let out = s.cli(&["deploy", dir.path().to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("alarms.other-slow: invalid alarm: period 90"),
        "{out:?}"
    );
    assert_eq!(s.get_json("/v1/functions/other").0, 404);
}
