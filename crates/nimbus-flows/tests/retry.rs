//! Retry and Catch decisions; semantics from
//! https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html

use std::time::Duration;

use nimbus_flows::definition::Retrier;
use nimbus_flows::errors::error_matches;
use nimbus_flows::retry::{decide, select_catcher, RetryDecision};
use serde_json::json;

fn retriers(v: serde_json::Value) -> Vec<Retrier> {
    serde_json::from_value(v).unwrap()
}

#[test]
fn states_all_and_task_failed_matching() {
    assert!(error_matches("States.ALL", "CustomError"));
    assert!(error_matches("States.ALL", "States.Timeout"));
    // States.ALL does not catch the terminal errors.
    assert!(!error_matches("States.ALL", "States.Runtime"));
    assert!(!error_matches("States.ALL", "States.DataLimitExceeded"));
    // States.TaskFailed matches any error except States.Timeout.
    assert!(error_matches(
        "States.TaskFailed",
        "Lambda.ServiceException"
    ));
    assert!(!error_matches("States.TaskFailed", "States.Timeout"));
    assert!(error_matches("CustomError", "CustomError"));
    assert!(!error_matches("CustomError", "OtherError"));
}

#[test]
fn backoff_schedule() {
    // "IntervalSeconds": 3, "MaxAttempts": 2, "BackoffRate": 1.5 (the guide's example):
    // retries after 3 s and 4.5 s, then gives up.
    let r = retriers(
        json!([{ "ErrorEquals": ["States.Timeout"], "IntervalSeconds": 3, "MaxAttempts": 2, "BackoffRate": 1.5 }]),
    );
    assert_eq!(
        decide(&r, "States.Timeout", &[0], 0.5),
        RetryDecision::Retry {
            retrier: 0,
            delay: Duration::from_secs(3)
        }
    );
    assert_eq!(
        decide(&r, "States.Timeout", &[1], 0.5),
        RetryDecision::Retry {
            retrier: 0,
            delay: Duration::from_millis(4500)
        }
    );
    assert_eq!(
        decide(&r, "States.Timeout", &[2], 0.5),
        RetryDecision::GiveUp
    );
    assert_eq!(decide(&r, "Other", &[0], 0.5), RetryDecision::GiveUp);
}

#[test]
fn defaults_max_delay_and_jitter() {
    // Defaults: IntervalSeconds 1, MaxAttempts 3, BackoffRate 2.0.
    let r = retriers(json!([{ "ErrorEquals": ["States.ALL"] }]));
    let delays: Vec<RetryDecision> = (0..4).map(|n| decide(&r, "E", &[n], 0.0)).collect();
    assert_eq!(
        delays,
        vec![
            RetryDecision::Retry {
                retrier: 0,
                delay: Duration::from_secs(1)
            },
            RetryDecision::Retry {
                retrier: 0,
                delay: Duration::from_secs(2)
            },
            RetryDecision::Retry {
                retrier: 0,
                delay: Duration::from_secs(4)
            },
            RetryDecision::GiveUp
        ]
    );
    // MaxDelaySeconds caps the exponential growth; FULL jitter scales by the random fraction.
    let r = retriers(
        json!([{ "ErrorEquals": ["E"], "IntervalSeconds": 5, "MaxAttempts": 10, "BackoffRate": 2.0, "MaxDelaySeconds": 20, "JitterStrategy": "FULL" }]),
    );
    assert_eq!(
        decide(&r, "E", &[5], 0.5),
        RetryDecision::Retry {
            retrier: 0,
            delay: Duration::from_secs(10)
        }
    );
    assert_eq!(
        decide(&r, "E", &[5], 0.0),
        RetryDecision::Retry {
            retrier: 0,
            delay: Duration::ZERO
        }
    );
    // MaxAttempts 0 never retries.
    let r = retriers(
        json!([{ "ErrorEquals": ["E"], "MaxAttempts": 0 }, { "ErrorEquals": ["States.ALL"] }]),
    );
    assert_eq!(decide(&r, "E", &[0, 0], 0.5), RetryDecision::GiveUp);
}

#[test]
fn first_matching_retrier_counts_separately() {
    // The guide's example: ErrorA/ErrorB share one retrier's attempts, ErrorC has its own.
    let r = retriers(json!([
        { "ErrorEquals": ["ErrorA", "ErrorB"], "IntervalSeconds": 1, "BackoffRate": 2.0, "MaxAttempts": 2 },
        { "ErrorEquals": ["ErrorC"], "IntervalSeconds": 5 }
    ]));
    assert_eq!(decide(&r, "ErrorB", &[2, 0], 0.5), RetryDecision::GiveUp);
    assert_eq!(
        decide(&r, "ErrorC", &[2, 0], 0.5),
        RetryDecision::Retry {
            retrier: 1,
            delay: Duration::from_secs(5)
        }
    );
}

#[test]
fn catch_selection() {
    let catchers: Vec<nimbus_flows::definition::Catcher> = serde_json::from_value(json!([
        { "ErrorEquals": ["java.lang.Exception"], "ResultPath": "$.error-info", "Next": "RecoveryState" },
        { "ErrorEquals": ["States.ALL"], "Next": "EndState" }
    ]))
    .unwrap();
    assert_eq!(
        select_catcher(&catchers, "java.lang.Exception").map(|c| c.0),
        Some(0)
    );
    assert_eq!(
        select_catcher(&catchers, "Other").map(|c| c.1.next.as_str()),
        Some("EndState")
    );
    assert!(select_catcher(&catchers, "States.Runtime").is_none());
}
