//! Targets outside Nimbus: a NATS subject, a RabbitMQ exchange, a Redis stream or an MQTT
//! topic, declared by name (`/v1/targets/NAME`) and addressed by
//! `arn:nimbus:targets:REGION:ACCOUNT:target/NAME` as an async invocation's destination or
//! a bus rule's target. The engine and the bus only hand the message to
//! [`ExternalTargets`] (implemented by `nimbus-sources`), which stores it durably in an
//! outbox before returning and delivers it at least once with retries.

/// Where messages for external targets go (set by the server).
pub trait ExternalTargets: Send + Sync + 'static {
    /// Stores `body` for the target `name` durably; `trace` is the W3C `traceparent` the
    /// message should carry. An error names an unknown target or a store failure.
    fn enqueue(&self, name: &str, body: &str, trace: Option<&str>) -> Result<(), String>;

    /// Whether a target of that name is declared.
    fn exists(&self, name: &str) -> bool;
}

/// Starts workflow executions for bus rule targets, schedules and async invocation
/// destinations that name a state machine (`arn:aws:states:…:stateMachine:NAME`;
/// implemented by the server over the workflow executor).
pub trait WorkflowStarter: Send + Sync + 'static {
    /// Starts an execution named `name` (the same name and input again is the same
    /// execution: a redelivered event starts nothing new) and returns its ARN; an error
    /// says why it could not start.
    fn start<'a>(
        &'a self,
        machine_arn: &'a str,
        name: String,
        input: String,
        trace: Option<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>;
}

pub use nimbus_core::arn::is_state_machine_arn;

/// An execution name for `key` (an event's id, a schedule firing): at most 80 characters
/// of what StartExecution accepts, the same for the same key and target.
pub fn execution_name(key: &str, target: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    target.hash(&mut h);
    let clean: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(60)
        .collect();
    format!("{clean}-{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_are_stable_valid_and_per_target() {
        let a = execution_name(
            "rule:nightly:1700000000000",
            "arn:aws:states:us-east-1:0:stateMachine:a",
        );
        assert_eq!(
            a,
            execution_name(
                "rule:nightly:1700000000000",
                "arn:aws:states:us-east-1:0:stateMachine:a"
            )
        );
        assert_ne!(
            a,
            execution_name(
                "rule:nightly:1700000000000",
                "arn:aws:states:us-east-1:0:stateMachine:b"
            )
        );
        assert!(
            a.len() <= 80
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert!(is_state_machine_arn(
            "arn:aws:states:us-east-1:000000000000:stateMachine:m:live"
        ));
        assert!(!is_state_machine_arn(
            "arn:aws:states:us-east-1:000000000000:execution:m:e"
        ));
    }
}
