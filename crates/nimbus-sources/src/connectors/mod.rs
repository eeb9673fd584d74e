//! One module per broker; [`open`] picks the connector of a mapping's kind.

use crate::error::Result;
use crate::model::Kind;
use crate::source::{Context, Source};
use crate::targets::{PublishContext, Publisher};
use std::sync::Arc;

pub mod mqtt;
pub mod nats;
pub mod postgres;
pub mod rabbitmq;
pub mod redis;

/// The publisher for a target of `ctx.target.kind` (not connected yet).
pub fn open_publisher(ctx: PublishContext) -> Result<Arc<dyn Publisher>> {
    Err(crate::SourceError::Config(format!(
        "publishing to {} is not built yet",
        ctx.target.kind
    )))
}

/// The connector for `ctx.spec.kind` (not connected yet: the runner calls
/// [`Source::connect`]).
pub fn open(ctx: Context) -> Result<Arc<dyn Source>> {
    Ok(match ctx.spec.kind {
        Kind::Postgres => Arc::new(postgres::PostgresSource::new(ctx)?),
        Kind::Nats => Arc::new(nats::JetStreamSource::new(ctx)?),
        Kind::NatsCore => Arc::new(nats::CoreNatsSource::new(ctx)?),
        Kind::Rabbitmq => Arc::new(rabbitmq::RabbitSource::new(ctx)?),
        Kind::Redis => Arc::new(redis::RedisSource::new(ctx)?),
        Kind::Mqtt => Arc::new(mqtt::MqttSource::new(ctx)?),
    })
}
