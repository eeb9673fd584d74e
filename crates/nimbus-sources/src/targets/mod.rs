//! Publishing back: named external targets (a NATS subject, a RabbitMQ exchange and
//! routing key, a Redis stream, an MQTT topic) that async-invocation destinations and
//! bus rules address as `arn:nimbus:targets:REGION:ACCOUNT:target/NAME`.
//!
//! A message for a target is first written to the outbox in `sources.db` (durably, before
//! the engine's or the bus's hand-off returns), then [`TargetRunner`] delivers each
//! target's messages in order through the target's [`Publisher`], deleting a message only
//! once the broker confirmed it (JetStream's ack, RabbitMQ's publisher confirm, Redis's
//! `XADD` reply, MQTT's `PUBACK`): at least once. A failed publish is retried with
//! exponential back-off (0.5 s doubling to 60 s, ±20 % jitter) on a fresh connection; a
//! message still undelivered after [`MAX_AGE`] is dropped and counted.

mod runner;
pub mod store;

pub use runner::TargetRunner;
pub use store::{OutboxMessage, TargetStore};

use crate::error::{Result, SourceError};
use crate::model::{validate_endpoint, Credentials, Kind};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// How long an undeliverable message is retried before it is dropped.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A named target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Kind,
    /// Broker URLs without passwords (as for sources).
    pub endpoints: Vec<String>,
    /// A Nimbus secret with the credentials (as for sources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Where on the broker: `subject` (NATS), `exchange` + `routing_key` (RabbitMQ; the
    /// default exchange `""` routes by queue name), `stream` (Redis; optional `maxlen`),
    /// `topic` + `qos` (MQTT).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// Epoch seconds.
    #[serde(default)]
    pub last_modified_s: i64,
}

impl Target {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(SourceError::Config(m));
        if !nimbus_core::arn::is_target_name(&self.name) {
            return bad(format!(
                "invalid target name {:?}: 1-64 letters, digits, '-' or '_'",
                self.name
            ));
        }
        if self.endpoints.is_empty() {
            return bad(format!("a {} target needs an endpoint", self.kind));
        }
        for e in &self.endpoints {
            validate_endpoint(self.kind, e)?;
        }
        let need = |key: &str, what: &str| -> Result<()> {
            match self.options.get(key) {
                Some(v) if !v.trim().is_empty() => Ok(()),
                _ => Err(SourceError::Config(format!(
                    "a {} target needs options.{key} ({what})",
                    self.kind
                ))),
            }
        };
        match self.kind {
            Kind::Nats | Kind::NatsCore => need("subject", "the subject to publish to")?,
            Kind::Rabbitmq => need(
                "routing_key",
                "the routing key, or the queue name with the default exchange",
            )?,
            Kind::Redis => need("stream", "the stream to XADD to")?,
            Kind::Mqtt => {
                need("topic", "the topic to publish to")?;
                if let Some(q) = self.options.get("qos") {
                    if q != "0" && q != "1" {
                        return bad(format!("options.qos {q:?}: 0 or 1"));
                    }
                }
            }
            Kind::Postgres => {
                return bad(
                    "postgres is a source only: publish to a database from a function".into(),
                )
            }
        }
        if let Some(s) = &self.secret {
            if s.is_empty() || s.len() > 256 {
                return bad(format!("invalid secret name {s:?}"));
            }
        }
        Ok(())
    }

    /// `arn:nimbus:targets:REGION:ACCOUNT:target/NAME`
    pub fn arn(&self) -> String {
        nimbus_core::arn::target_arn(&self.name)
    }
}

/// What a publisher is opened with.
#[derive(Clone)]
pub struct PublishContext {
    pub target: Target,
    pub credentials: Option<Credentials>,
}

/// A connection to one target's broker.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Connects, or reconnects after an error (dropping the previous connection).
    async fn connect(&self) -> Result<()>;

    /// Publishes one message and returns once the broker has it (JetStream's ack,
    /// RabbitMQ's publisher confirm, the `XADD` reply, MQTT's `PUBACK`; core NATS: after a
    /// flush). `headers` go where the broker has headers (NATS headers, AMQP headers, Redis
    /// fields, MQTT 5 user properties).
    async fn publish(&self, payload: &[u8], headers: &[(String, String)]) -> Result<()>;
}

/// The publisher for `ctx.target.kind`.
pub fn open_publisher(ctx: PublishContext) -> Result<std::sync::Arc<dyn Publisher>> {
    crate::connectors::open_publisher(ctx)
}

#[cfg(test)]
mod tests;
