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

/// The publisher for a target of `ctx.target.kind` (not connected yet: the target runner
/// calls [`Publisher::connect`]).
///
/// The publishers reuse their broker's connect and error-mapping helpers, which take a
/// source [`Context`]: the target is given as one (mapping `target-NAME`, the target's
/// endpoints, credentials and options; no topics, no checkpoints in use).
pub fn open_publisher(ctx: PublishContext) -> Result<Arc<dyn Publisher>> {
    ctx.target.validate()?;
    let t = ctx.target;
    let source = Context {
        mapping: format!("target-{}", t.name),
        spec: crate::model::SourceSpec {
            kind: t.kind,
            endpoints: t.endpoints,
            topics: Vec::new(),
            group: Some(format!("nimbus-target-{}", t.name)),
            secret: t.secret,
            options: t.options,
            starting_position: Default::default(),
        },
        credentials: ctx.credentials,
        checkpoints: Arc::new(crate::store::MemoryCheckpoints::default()),
        batch_size: 1,
        concurrency: 1,
    };
    Ok(match t.kind {
        Kind::Nats => Arc::new(nats::JetStreamPublisher::new(source)?),
        Kind::NatsCore => Arc::new(nats::CoreNatsPublisher::new(source)?),
        Kind::Rabbitmq => Arc::new(rabbitmq::RabbitPublisher::new(source)?),
        Kind::Redis => Arc::new(redis::RedisPublisher::new(source)?),
        Kind::Mqtt => Arc::new(mqtt::MqttPublisher::new(source)?),
        Kind::Postgres => {
            return Err(crate::SourceError::Config(
                "postgres is a source only: publish to a database from a function".into(),
            ))
        }
    })
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

/// Tries `endpoints` in order and returns what `open` made of the first reachable one: an
/// unreachable endpoint is logged and the next one tried; any other error (credentials, a
/// missing object) ends the search, as the next endpoint would say the same.
pub(crate) async fn first_reachable<'a, T, F, Fut>(
    kind: &str,
    endpoints: &'a [String],
    mut open: F,
) -> Result<T>
where
    F: FnMut(&'a str) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut last = None;
    for endpoint in endpoints {
        match open(endpoint).await {
            Ok(t) => return Ok(t),
            Err(e @ crate::SourceError::Unreachable { .. }) => {
                tracing::warn!(endpoint = %crate::model::redact(endpoint), error = %e, "{kind} endpoint unreachable");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| crate::SourceError::Config(format!("no {kind} endpoint"))))
}

/// A target's options as the source context its publisher is built from (unit tests).
#[cfg(test)]
pub(crate) fn target_ctx(kind: crate::model::Kind, opts: &[(&str, &str)]) -> Context {
    Context {
        mapping: "target-t".into(),
        spec: crate::model::SourceSpec {
            kind,
            endpoints: vec!["x://127.0.0.1".into()],
            topics: Vec::new(),
            group: Some("nimbus-target-t".into()),
            secret: None,
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            starting_position: Default::default(),
        },
        credentials: None,
        checkpoints: Arc::new(crate::store::MemoryCheckpoints::default()),
        batch_size: 1,
        concurrency: 1,
    }
}
