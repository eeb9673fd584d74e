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
