//! Asynchronous invocations: the durable event record, its lifecycle, and the per-function
//! retry and destination settings (Lambda's `PutFunctionEventInvokeConfig`).

use serde::{Deserialize, Serialize};

/// Where an asynchronous event is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventStatus {
    /// Waiting for its first attempt, or for a retry after `next_attempt_ms`.
    Pending,
    /// Claimed by a worker (until its lease runs out).
    Running,
    Succeeded,
    /// Exhausted its retries: in the dead-letter queue.
    Dead,
    /// Older than the maximum event age before it could run: in the dead-letter queue.
    Expired,
}

impl EventStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            EventStatus::Pending => "pending",
            EventStatus::Running => "running",
            EventStatus::Succeeded => "succeeded",
            EventStatus::Dead => "dead",
            EventStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => EventStatus::Pending,
            "running" => EventStatus::Running,
            "succeeded" => EventStatus::Succeeded,
            "dead" => EventStatus::Dead,
            "expired" => EventStatus::Expired,
            _ => return None,
        })
    }

    /// Whether the event will not be attempted again.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            EventStatus::Succeeded | EventStatus::Dead | EventStatus::Expired
        )
    }
}

/// One asynchronous invocation, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AsyncEvent {
    /// The request id returned to the caller (202).
    pub id: String,
    pub function: String,
    /// `$LATEST`, a version or an alias, as the caller named it.
    pub qualifier: String,
    pub payload: String,
    pub status: EventStatus,
    /// Attempts made so far (throttled attempts do not count).
    pub attempts: u32,
    pub created_ms: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    /// The result of the successful attempt.
    pub result: Option<String>,
    pub idempotency_key: Option<String>,
    /// The trace context the event carries (a W3C `traceparent`): every attempt's invoke
    /// span is its child, so the event's whole life is one trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Where the event came from (`async`, `bus`, `schedule`, …: the metrics' `trigger`
    /// label); `None` for events stored before it was recorded (`async`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
}

/// Lambda's `DestinationConfig` target: today another function (`arn:…:function:NAME`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    /// Lambda's `Destination` ARN.
    pub destination: String,
}

/// Retry and destination settings for asynchronous invocation of one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    /// 0–2 retries after the first attempt (Lambda's default 2).
    pub maximum_retry_attempts: u32,
    /// 60–21600 seconds (Lambda's default 21600, six hours).
    pub maximum_event_age_s: u32,
    pub on_success: Option<Destination>,
    pub on_failure: Option<Destination>,
    /// When the config was last written (Unix seconds), for `LastModified`.
    #[serde(default)]
    pub last_modified: String,
}

impl Default for EventInvokeConfig {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: 2,
            maximum_event_age_s: 21_600,
            on_success: None,
            on_failure: None,
            last_modified: String::new(),
        }
    }
}

impl EventInvokeConfig {
    pub fn validate(&self) -> Result<(), crate::CoreError> {
        let bad = |m: String| Err(crate::CoreError::InvalidManifest(m));
        if self.maximum_retry_attempts > 2 {
            return bad(format!(
                "MaximumRetryAttempts {} must be 0-2",
                self.maximum_retry_attempts
            ));
        }
        if !(60..=21_600).contains(&self.maximum_event_age_s) {
            return bad(format!(
                "MaximumEventAgeInSeconds {} must be 60-21600",
                self.maximum_event_age_s
            ));
        }
        for d in [&self.on_success, &self.on_failure].into_iter().flatten() {
            if is_fifo_queue_arn(&d.destination) {
                return bad(format!(
                    "destination {:?} is a FIFO queue: Lambda sends invocation records to \
                     standard queues only",
                    d.destination
                ));
            }
            if is_queue_arn(&d.destination)
                || is_bus_arn(&d.destination)
                || crate::arn::target_from_arn(&d.destination).is_some()
                || crate::arn::is_state_machine_arn(&d.destination)
            {
                continue;
            }
            crate::arn::parse_function_ref(&d.destination).map_err(|_| {
                crate::CoreError::InvalidManifest(format!(
                    "destination {:?} must be a function ARN, a built-in queue's \
                     (arn:aws:sqs:us-east-1:000000000000:NAME), an event bus's \
                     (arn:aws:events:us-east-1:000000000000:event-bus/NAME), a state \
                     machine's (arn:aws:states:us-east-1:000000000000:stateMachine:NAME) or an \
                     external target's (arn:nimbus:targets:us-east-1:000000000000:target/NAME)",
                    d.destination
                ))
            })?;
        }
        Ok(())
    }
}

/// Checks a `DeadLetterConfig.TargetArn`: a built-in queue's or an event bus's ARN (Lambda
/// takes SQS queues and SNS topics; Nimbus has queues and buses, no SNS).
pub fn validate_dead_letter_target(target: &str) -> Result<(), crate::CoreError> {
    if is_queue_arn(target) || is_bus_arn(target) {
        return Ok(());
    }
    let why = if is_fifo_queue_arn(target) {
        "is a FIFO queue, which Lambda does not take as a dead-letter queue (standard queues only)"
    } else if target.starts_with("arn:aws:sns:") {
        "is an SNS topic, which Nimbus does not have"
    } else {
        "is not a queue or event bus ARN"
    };
    Err(crate::CoreError::InvalidManifest(format!(
        "DeadLetterConfig.TargetArn {target:?} {why}: use a built-in queue's \
         (arn:aws:sqs:us-east-1:000000000000:NAME) or an event bus's \
         (arn:aws:events:us-east-1:000000000000:event-bus/NAME)"
    )))
}

/// `arn:aws:events:REGION:ACCOUNT:event-bus/NAME` with a valid bus name.
fn is_bus_arn(s: &str) -> bool {
    s.strip_prefix("arn:aws:events:")
        .and_then(|rest| rest.split_once(":event-bus/"))
        .is_some_and(|(_, b)| {
            !b.is_empty()
                && b.len() <= 64
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
        })
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME.fifo` with a valid queue name before `.fifo`: a FIFO
/// queue, which Lambda refuses as a destination and as a dead-letter queue.
fn is_fifo_queue_arn(s: &str) -> bool {
    s.strip_suffix(".fifo").is_some_and(is_queue_arn)
}

/// `arn:aws:sqs:REGION:ACCOUNT:NAME` with a valid queue name.
fn is_queue_arn(s: &str) -> bool {
    s.strip_prefix("arn:aws:sqs:")
        .and_then(|rest| rest.splitn(3, ':').nth(2))
        .is_some_and(|q| {
            !q.is_empty()
                && q.len() <= 80
                && q.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_limits() {
        assert!(EventInvokeConfig::default().validate().is_ok());
        let c = EventInvokeConfig {
            maximum_retry_attempts: 3,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = EventInvokeConfig {
            maximum_event_age_s: 59,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let c = EventInvokeConfig {
            on_failure: Some(Destination {
                destination: "arn:aws:lambda:us-east-1:000000000000:function:dlq".into(),
            }),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        let c = EventInvokeConfig {
            on_failure: Some(Destination {
                destination: "arn:aws:sqs:us-east-1:000000000000:q".into(),
            }),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        let c = EventInvokeConfig {
            on_failure: Some(Destination {
                destination: "arn:aws:sqs:us-east-1:000000000000:".into(),
            }),
            ..Default::default()
        };
        assert!(c.validate().is_err());
        let fifo = "arn:aws:sqs:us-east-1:000000000000:q.fifo";
        let c = EventInvokeConfig {
            on_success: Some(Destination {
                destination: fifo.into(),
            }),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("FIFO queue"), "{e}");
        let e = validate_dead_letter_target(fifo).unwrap_err().to_string();
        assert!(e.contains("FIFO queue"), "{e}");
        assert!(validate_dead_letter_target("arn:aws:sqs:us-east-1:000000000000:q").is_ok());
        let c = EventInvokeConfig {
            on_success: Some(Destination {
                destination: "arn:aws:events:us-east-1:000000000000:event-bus/default".into(),
            }),
            ..Default::default()
        };
        assert!(c.validate().is_ok());
        let c = EventInvokeConfig {
            on_success: Some(Destination {
                destination: "arn:aws:events:us-east-1:000000000000:event-bus/".into(),
            }),
            ..Default::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            EventStatus::Pending,
            EventStatus::Running,
            EventStatus::Succeeded,
            EventStatus::Dead,
            EventStatus::Expired,
        ] {
            assert_eq!(EventStatus::parse(s.as_str()), Some(s));
        }
        assert!(EventStatus::Dead.is_final() && !EventStatus::Pending.is_final());
    }
}
