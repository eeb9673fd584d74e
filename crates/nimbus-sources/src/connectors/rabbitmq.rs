//! The RabbitMQ connector (AMQP 0-9-1, `lapin` on tokio): one queue, consumed with manual
//! acknowledgements, records in Lambda's Amazon MQ for RabbitMQ shape.
//!
//! - The queue is `topics[0]` in the vhost of the URL path (`amqp://host:5672/%2f` = `/`)
//!   or option `vhost`. It must exist, unless option `exchange` is set: then the mapping
//!   declares a durable queue of that name and binds it to the exchange with option
//!   `routing_key` (default `#`); the exchange must exist.
//! - Flow: `basic.qos(prefetch = batch_size × concurrency, at most 65535)`, so the broker
//!   stops sending when the runner stops acknowledging.
//! - `ack` = `basic.ack`, `reject` = `basic.nack(requeue = false)` (the queue's
//!   `x-dead-letter-exchange` gets it), `touch` does nothing (RabbitMQ has no ack
//!   deadline by default; `consumer_timeout` is 30 min).
//! - `eventID`: the message's `messageId` when set and unique among the records in
//!   flight, else `<generation>-<delivery tag>`.

use crate::error::{Result, SourceError};
use crate::model::redact;
use crate::source::{now_ms, Context, Record, Source};
use async_trait::async_trait;
use base64::Engine;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::Confirmation;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Consumer, ErrorKind};
use serde_json::{json, Map, Value};
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, warn};

/// How long opening the connection (TCP + AMQP handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// `basic.qos` takes a 16-bit prefetch count.
const MAX_PREFETCH: usize = u16::MAX as usize;
/// AMQP reply codes (the AMQP 0-9-1 constants).
const ACCESS_REFUSED: u16 = 403;
const NOT_FOUND: u16 = 404;
const PRECONDITION_FAILED: u16 = 406;
const NOT_ALLOWED: u16 = 530;

/// A RabbitMQ queue as a source.
pub struct RabbitSource {
    ctx: Context,
    queue: String,
    /// Option `exchange`: declare the queue and bind it to this exchange.
    exchange: Option<String>,
    routing_key: String,
    /// Bumped by every `connect`: records carry it so that settling a record of a dead
    /// channel never sends its delivery tag on the new one.
    generation: AtomicU64,
    live: Mutex<Option<Arc<Live>>>,
}

/// One open connection with its consuming channel.
struct Live {
    generation: u64,
    connection: Connection,
    channel: Channel,
    /// Where records come from; a `poll` holds it for its whole duration.
    inbox: tokio::sync::Mutex<Inbox>,
    /// `messageId`s used as `eventID` by records in flight (to keep `eventID` unique).
    ids: Mutex<HashSet<String>>,
    endpoint: String,
}

struct Inbox {
    consumer: Consumer,
    /// Records taken from the consumer but not returned yet: a `poll` future dropped
    /// half-way (the runner stopped the mapping) leaves them here for the next one
    /// instead of losing their delivery tags.
    ready: VecDeque<Record>,
}

/// What a record needs to be settled.
#[derive(Debug)]
struct Handle {
    generation: u64,
    tag: u64,
    /// The `messageId` this record uses as its `eventID` (released when settled).
    message_id: Option<String>,
}

impl RabbitSource {
    pub fn new(ctx: Context) -> Result<Self> {
        let queue = ctx.spec.topics.first().cloned().ok_or_else(|| {
            SourceError::Config("a rabbitmq source needs a queue (topics[0])".into())
        })?;
        let exchange = ctx.spec.option("exchange").map(str::to_string);
        let routing_key = ctx.spec.option("routing_key").unwrap_or("#").to_string();
        Ok(Self {
            ctx,
            queue,
            exchange,
            routing_key,
            generation: AtomicU64::new(0),
            live: Mutex::new(None),
        })
    }

    fn current(&self) -> Option<Arc<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, live: Option<Arc<Live>>) -> Option<Arc<Live>> {
        std::mem::replace(
            &mut *self.live.lock().unwrap_or_else(|e| e.into_inner()),
            live,
        )
    }

    /// The AMQP URI of `endpoint` with the mapping's credentials and vhost.
    fn uri(&self, endpoint: &str) -> Result<AMQPUri> {
        amqp_uri(&self.ctx, endpoint)
    }

    /// Opens a connection to one endpoint and sets up the consumer.
    async fn open(&self, endpoint: &str, generation: u64) -> Result<Live> {
        let uri = self.uri(endpoint)?;
        let (user, vhost) = (uri.authority.userinfo.username, uri.vhost);
        let label = redact(endpoint);
        let name = format!("nimbus mapping {}", self.ctx.mapping);
        let connection = open_connection(&self.ctx, endpoint, name).await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_error(&e, &label, "opening a channel"))?;
        self.declare(&channel, &label, &vhost).await?;
        let prefetch = self
            .ctx
            .batch_size
            .max(1)
            .saturating_mul(self.ctx.concurrency.max(1))
            .min(MAX_PREFETCH) as u16;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| amqp_error(&e, &label, "basic.qos"))?;
        let consumer = channel
            .basic_consume(
                self.queue.as_str().into(),
                self.ctx.group().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| match reply_code(&e) {
                Some(ACCESS_REFUSED) => SourceError::Auth(format!(
                    "RabbitMQ user {user:?} may not read queue {:?} in vhost {vhost:?} ({label}): grant read permission",
                    self.queue
                )),
                _ => amqp_error(&e, &label, "basic.consume"),
            })?;
        debug!(queue = %self.queue, %vhost, prefetch, generation, "rabbitmq consumer started");
        Ok(Live {
            generation,
            connection,
            channel,
            inbox: tokio::sync::Mutex::new(Inbox {
                consumer,
                ready: VecDeque::new(),
            }),
            ids: Mutex::new(HashSet::new()),
            endpoint: label,
        })
    }

    /// Checks the queue exists, or (option `exchange`) declares it and binds it.
    async fn declare(&self, channel: &Channel, label: &str, vhost: &str) -> Result<()> {
        let queue = self.queue.as_str();
        let Some(exchange) = &self.exchange else {
            return channel
                .queue_declare(
                    queue.into(),
                    QueueDeclareOptions::default().passive(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ())
                .map_err(|e| match reply_code(&e) {
                    Some(NOT_FOUND) => SourceError::Missing(format!(
                        "RabbitMQ queue {queue:?} does not exist in vhost {vhost:?} ({label}): create it (rabbitmqadmin declare queue name={queue} durable=true) or set option exchange so the mapping declares and binds it"
                    )),
                    Some(ACCESS_REFUSED) => SourceError::Auth(format!(
                        "RabbitMQ refused access to queue {queue:?} in vhost {vhost:?} ({label}): check the user's permissions"
                    )),
                    _ => amqp_error(&e, label, "checking the queue"),
                });
        };
        // A passive declare of the exchange: fails with NOT_FOUND when it does not exist.
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| match reply_code(&e) {
                Some(NOT_FOUND) => SourceError::Missing(format!(
                    "RabbitMQ exchange {exchange:?} does not exist in vhost {vhost:?} ({label}): declare it (rabbitmqadmin declare exchange name={exchange} type=topic) or fix option exchange"
                )),
                _ => amqp_error(&e, label, "checking the exchange"),
            })?;
        channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| match reply_code(&e) {
                Some(PRECONDITION_FAILED) => SourceError::Config(format!(
                    "RabbitMQ queue {queue:?} in vhost {vhost:?} exists with other settings than a plain durable queue ({e}): unset option exchange to consume it as it is, or use another queue name"
                )),
                _ => amqp_error(&e, label, "declaring the queue"),
            })?;
        channel
            .queue_bind(
                queue.into(),
                exchange.as_str().into(),
                self.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| amqp_error(&e, label, "binding the queue"))?;
        debug!(queue, exchange = %exchange, routing_key = %self.routing_key, "rabbitmq queue bound");
        Ok(())
    }

    /// The live connection, or a `Broker` error the runner answers with `connect`.
    fn live(&self) -> Result<Arc<Live>> {
        self.current()
            .ok_or_else(|| SourceError::Broker("the rabbitmq source is not connected".into()))
    }

    /// The delivery tags of the records of connection `live` (others are from a dead
    /// channel: their messages were requeued when it closed). Releases their message ids.
    fn tags(&self, live: &Live, records: &[Record]) -> Vec<u64> {
        let mut ids = live.ids.lock().unwrap_or_else(|e| e.into_inner());
        records
            .iter()
            .filter_map(|r| {
                let h = r.handle::<Handle>()?;
                if h.generation != live.generation {
                    debug!(id = %r.id, "rabbitmq record of an older connection: not settled");
                    return None;
                }
                if let Some(m) = &h.message_id {
                    ids.remove(m);
                }
                Some(h.tag)
            })
            .collect()
    }
}

#[async_trait]
impl Source for RabbitSource {
    async fn connect(&self) -> Result<()> {
        if let Some(old) = self.replace(None) {
            // Closing returns the old channel's unacked messages to the queue.
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                old.connection.close(200, "reconnecting".into()),
            )
            .await;
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = None;
        for endpoint in &self.ctx.spec.endpoints {
            match self.open(endpoint, generation).await {
                Ok(live) => {
                    self.replace(Some(Arc::new(live)));
                    return Ok(());
                }
                Err(e @ SourceError::Unreachable { .. }) => {
                    warn!(error = %e, "rabbitmq endpoint unreachable");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| SourceError::Config("a rabbitmq source needs an endpoint".into())))
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let live = self.live()?;
        let mut inbox = live.inbox.lock().await;
        let deadline = Instant::now() + wait;
        while inbox.ready.len() < max {
            let until = if inbox.ready.is_empty() {
                deadline
            } else {
                // What already arrived, without waiting for more: the runner's batching
                // window decides how long a batch may gather (0: invoke at once).
                Instant::now()
            };
            // `timeout_at` polls the stream before the clock: buffered deliveries are
            // taken even when the deadline has passed.
            let delivery = match tokio::time::timeout_at(until, inbox.consumer.next()).await {
                Err(_) => break,
                Ok(None) => {
                    return Err(SourceError::Broker(format!(
                        "RabbitMQ cancelled the consumer of queue {:?} (was the queue deleted?)",
                        self.queue
                    )))
                }
                Ok(Some(Err(e))) => return Err(amqp_error(&e, &live.endpoint, "consuming")),
                Ok(Some(Ok(d))) => d,
            };
            let record = live.record(delivery, &self.queue);
            inbox.ready.push_back(record);
        }
        let n = max.min(inbox.ready.len());
        Ok(inbox.ready.drain(..n).collect())
    }

    async fn ack(&self, records: &[Record]) -> Result<()> {
        let Some(live) = self.current() else {
            return Ok(());
        };
        let tags = self.tags(&live, records);
        let acks = tags
            .iter()
            .map(|&tag| live.channel.basic_ack(tag, BasicAckOptions::default()));
        futures_util::future::try_join_all(acks)
            .await
            .map_err(|e| amqp_error(&e, &live.endpoint, "basic.ack"))?;
        Ok(())
    }

    async fn reject(&self, records: &[Record]) -> Result<()> {
        let Some(live) = self.current() else {
            return Ok(());
        };
        let tags = self.tags(&live, records);
        let nacks = tags.iter().map(|&tag| {
            live.channel.basic_nack(
                tag,
                BasicNackOptions {
                    multiple: false,
                    requeue: false,
                },
            )
        });
        futures_util::future::try_join_all(nacks)
            .await
            .map_err(|e| amqp_error(&e, &live.endpoint, "basic.nack"))?;
        Ok(())
    }

    fn event(&self, batch: &[Record]) -> Value {
        let vhost = self.vhost();
        let messages: Vec<Value> = batch.iter().map(|r| r.data.clone()).collect();
        let mut by_queue = Map::new();
        by_queue.insert(format!("{}::{}", self.queue, vhost), Value::Array(messages));
        json!({
            "eventSource": crate::model::Kind::Rabbitmq.event_source(),
            "eventSourceArn": format!(
                "arn:nimbus:rabbitmq:us-east-1:000000000000:broker/{}",
                self.ctx.spec.endpoints.first().and_then(|e| url_host(e)).unwrap_or_default()
            ),
            "rmqMessagesByQueue": by_queue,
        })
    }

    /// In exchange mode the mapping declared the queue: delete it (unless another
    /// consumer uses it), or the exchange keeps filling it forever.
    async fn remove(&self) -> Result<()> {
        if let Some(old) = self.replace(None) {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                old.connection.close(200, "mapping deleted".into()),
            )
            .await;
        }
        if self.exchange.is_none() {
            return Ok(());
        }
        let Some(endpoint) = self.ctx.spec.endpoints.first() else {
            return Ok(());
        };
        let uri = self.uri(endpoint)?;
        let label = redact(endpoint);
        let connection = Connection::connect_uri(uri, ConnectionProperties::default())
            .await
            .map_err(|e| amqp_error(&e, &label, "connecting"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_error(&e, &label, "opening a channel"))?;
        let deleted = channel
            .queue_delete(
                self.queue.as_str().into(),
                QueueDeleteOptions {
                    if_unused: true,
                    ..Default::default()
                },
            )
            .await;
        let _ = connection.close(200, "done".into()).await;
        match deleted {
            Ok(n) => debug!(queue = %self.queue, messages = n, "rabbitmq queue deleted"),
            Err(e) => warn!(queue = %self.queue, error = %e, "rabbitmq queue kept"),
        }
        Ok(())
    }

    /// The queue's ready messages (a passive declare on a short-lived channel: a failed
    /// one closes its channel, so never on the consuming one).
    async fn lag(&self) -> Option<u64> {
        let live = self.current()?;
        let channel = live.connection.create_channel().await.ok()?;
        let queue = channel
            .queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await
            .ok();
        let _ = channel.close(200, "lag".into()).await;
        Some(u64::from(queue?.message_count()))
    }
}

impl RabbitSource {
    /// The vhost the mapping consumes from (for the `QUEUE::VHOST` key of the event).
    fn vhost(&self) -> String {
        if let Some(v) = self.ctx.spec.option("vhost") {
            return v.to_string();
        }
        self.ctx
            .spec
            .endpoints
            .first()
            .and_then(|e| e.parse::<AMQPUri>().ok())
            .map(|u| u.vhost)
            .unwrap_or_else(|| "/".into())
    }
}

impl Live {
    /// A record of `delivery`.
    fn record(&self, delivery: lapin::message::Delivery, queue: &str) -> Record {
        let tag = delivery.delivery_tag;
        let props = &delivery.properties;
        let message_id = props.message_id().as_ref().map(|m| m.to_string());
        // The messageId is the eventID only when no record in flight uses it.
        let claimed = message_id.filter(|m| {
            !m.is_empty()
                && self
                    .ids
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(m.clone())
        });
        let id = claimed
            .clone()
            .unwrap_or_else(|| format!("{}-{tag}", self.generation));
        let data = message_json(&id, props, delivery.redelivered, &delivery.data);
        let produced_ms = props
            .timestamp()
            .map(|s| (s as i64).saturating_mul(1000))
            .unwrap_or_else(now_ms);
        debug!(queue, tag, id = %id, redelivered = delivery.redelivered, "rabbitmq delivery");
        let mut record = Record::new(
            id,
            data,
            produced_ms,
            Arc::new(Handle {
                generation: self.generation,
                tag,
                message_id: claimed,
            }),
        );
        record.trace = traceparent(props);
        record
    }
}

/// One message of `rmqMessagesByQueue`, with Lambda's field names (`null` where absent),
/// plus `eventID` and `eventSource`.
fn message_json(id: &str, p: &BasicProperties, redelivered: bool, body: &[u8]) -> Value {
    let s = |v: &Option<lapin::types::ShortString>| v.as_ref().map(|s| s.to_string());
    json!({
        "eventID": id,
        "eventSource": crate::model::Kind::Rabbitmq.event_source(),
        "basicProperties": {
            "contentType": s(p.content_type()),
            "contentEncoding": s(p.content_encoding()),
            "headers": p.headers().as_ref().map(table_json),
            "deliveryMode": p.delivery_mode(),
            "priority": p.priority(),
            "correlationId": s(p.correlation_id()),
            "replyTo": s(p.reply_to()),
            "expiration": s(p.expiration()),
            "messageId": s(p.message_id()),
            "timestamp": p.timestamp().map(lambda_timestamp),
            "type": s(p.kind()),
            "userId": s(p.user_id()),
            "appId": s(p.app_id()),
            "clusterId": s(p.cluster_id()),
            "bodySize": body.len(),
        },
        "redelivered": redelivered,
        "data": base64::engine::general_purpose::STANDARD.encode(body),
    })
}

/// Headers as Lambda shows them: strings as `{"bytes": [...]}` (the Java client's
/// `LongString`), numbers and booleans as they are, tables and arrays recursively.
fn table_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value_json(v)))
            .collect(),
    )
}

fn value_json(v: &AMQPValue) -> Value {
    let bytes = |b: &[u8]| json!({ "bytes": b });
    match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Float(f) => json!(f),
        AMQPValue::Double(f) => json!(f),
        AMQPValue::DecimalValue(d) => {
            json!(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => json!(s.as_str()),
        AMQPValue::LongString(s) => bytes(s.as_bytes()),
        AMQPValue::ByteArray(b) => bytes(b.as_slice()),
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_json).collect()),
        AMQPValue::Timestamp(t) => json!(t),
        AMQPValue::FieldTable(t) => table_json(t),
        AMQPValue::Void => Value::Null,
    }
}

/// A `traceparent` header (a string header).
fn traceparent(p: &BasicProperties) -> Option<String> {
    let v = p.headers().as_ref()?.inner().get("traceparent")?;
    let text = match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.to_string(),
        _ => return None,
    };
    Some(text).filter(|t| !t.is_empty() && t.len() <= 256)
}

/// AMQP timestamp (seconds) the way Lambda writes it: `Jan 1, 1970, 12:33:41 AM` (UTC).
fn lambda_timestamp(seconds: u64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(i64::try_from(seconds).ok()?).ok()?;
    t.format(time::macros::format_description!(
        "[month repr:short] [day padding:none], [year], [hour repr:12 padding:none]:[minute]:[second] [period]"
    ))
    .ok()
}

/// The host of an endpoint URL (no user, no port; IPv6 without brackets).
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    Some(host.to_string()).filter(|h| !h.is_empty())
}

/// The AMQP reply code of a broker error (403, 404, …).
fn reply_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

/// A failed connection: refused credentials, a vhost that is not there, or the network.
fn connect_error(e: &lapin::Error, label: &str, user: &str, vhost: &str) -> SourceError {
    match reply_code(e) {
        Some(ACCESS_REFUSED) => SourceError::Auth(format!(
            "RabbitMQ at {label} refused the credentials of user {user:?} (ACCESS_REFUSED): check the mapping's secret"
        )),
        Some(NOT_ALLOWED) => SourceError::Missing(format!(
            "RabbitMQ at {label} does not let user {user:?} into vhost {vhost:?} (NOT_ALLOWED): create the vhost or grant the user access (rabbitmqctl set_permissions -p VHOST USER '.*' '.*' '.*')"
        )),
        _ => amqp_error(e, label, "connecting"),
    }
}

/// Any other AMQP error: network trouble is `Unreachable`, the rest `Broker`.
fn amqp_error(e: &lapin::Error, label: &str, what: &str) -> SourceError {
    match e.kind() {
        ErrorKind::IOError(io) => SourceError::Unreachable {
            endpoint: label.to_string(),
            reason: io.to_string(),
        },
        ErrorKind::MissingHeartbeatError => SourceError::Unreachable {
            endpoint: label.to_string(),
            reason: "the broker stopped answering heartbeats".into(),
        },
        _ => SourceError::Broker(format!("RabbitMQ at {label}, {what}: {e}")),
    }
}

/// The AMQP URI of `endpoint` with the mapping's (or target's) credentials and vhost.
fn amqp_uri(ctx: &Context, endpoint: &str) -> Result<AMQPUri> {
    let mut uri: AMQPUri = endpoint.parse().map_err(|e| {
        SourceError::Config(format!(
            "invalid rabbitmq endpoint {}: {e} (e.g. amqp://127.0.0.1:5672/%2f)",
            redact(endpoint)
        ))
    })?;
    if uri.scheme == AMQPScheme::AMQPS {
        return Err(SourceError::Config(format!(
            "the rabbitmq endpoint {} uses amqps, but this build has no TLS for RabbitMQ: use amqp:// on a trusted network",
            redact(endpoint)
        )));
    }
    // amq-protocol-uri keeps only DNS names (an IP address becomes `localhost`).
    if let Some(host) = url_host(endpoint) {
        uri.authority.host = host;
    }
    if let Some(vhost) = ctx.spec.option("vhost") {
        uri.vhost = vhost.to_string();
    }
    if let Some(c) = &ctx.credentials {
        if let Some(u) = &c.username {
            uri.authority.userinfo.username = u.clone();
        }
        if let Some(p) = &c.password {
            uri.authority.userinfo.password = p.clone();
        }
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(CONNECT_TIMEOUT.as_millis() as u64);
    }
    Ok(uri)
}

/// Opens a connection to one endpoint (a refused login is `Auth`, a closed vhost
/// `Missing`, the network `Unreachable`).
async fn open_connection(ctx: &Context, endpoint: &str, name: String) -> Result<Connection> {
    let uri = amqp_uri(ctx, endpoint)?;
    let label = redact(endpoint);
    let user = uri.authority.userinfo.username.clone();
    let vhost = uri.vhost.clone();
    let props = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect_uri(uri, props)).await {
        Err(_) => Err(SourceError::Unreachable {
            endpoint: label,
            reason: format!("no AMQP handshake within {CONNECT_TIMEOUT:?}"),
        }),
        Ok(Err(e)) => Err(connect_error(&e, &label, &user, &vhost)),
        Ok(Ok(c)) => Ok(c),
    }
}

// ---------------------------------------------------------------------------------------
// Publisher (targets)
// ---------------------------------------------------------------------------------------

/// How long the broker may take to confirm one message.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Publishes to `options.exchange` (default `""`, which routes by queue name) with
/// `options.routing_key` on a channel in confirm mode: persistent, `mandatory` (an
/// unroutable message comes back and is an error), returning after the broker's ack.
pub struct RabbitPublisher {
    ctx: Context,
    exchange: String,
    routing_key: String,
    live: tokio::sync::Mutex<Option<(Connection, Channel, String)>>,
}

impl RabbitPublisher {
    pub fn new(ctx: Context) -> Result<Self> {
        let routing_key = ctx.spec.option("routing_key").unwrap_or("").to_string();
        if routing_key.is_empty() {
            return Err(SourceError::Config(
                "a rabbitmq target needs options.routing_key (the routing key, or the queue name with the default exchange)".into(),
            ));
        }
        Ok(Self {
            exchange: ctx.spec.option("exchange").unwrap_or("").to_string(),
            routing_key,
            ctx,
            live: tokio::sync::Mutex::new(None),
        })
    }

    /// Where messages go, for error messages.
    fn destination(&self) -> String {
        if self.exchange.is_empty() {
            format!(
                "the default exchange with routing key {:?}",
                self.routing_key
            )
        } else {
            format!(
                "exchange {:?} with routing key {:?}",
                self.exchange, self.routing_key
            )
        }
    }

    /// Checks the exchange exists (a passive declare, on a channel of its own: a 404
    /// closes the channel it happens on).
    async fn check_exchange(&self, connection: &Connection, label: &str) -> Result<()> {
        if self.exchange.is_empty() {
            return Ok(());
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(|e| amqp_error(&e, label, "opening a channel"))?;
        let options = ExchangeDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                lapin::ExchangeKind::Direct,
                options,
                FieldTable::default(),
            )
            .await
            .map_err(|e| self.publish_error(&e, label))?;
        let _ = channel.close(200, "checked".into()).await;
        Ok(())
    }

    /// A closed channel: the exchange is missing (404) or not ours to write (403).
    fn publish_error(&self, e: &lapin::Error, label: &str) -> SourceError {
        match reply_code(e) {
            Some(NOT_FOUND) => SourceError::Missing(format!(
                "RabbitMQ at {label}: the exchange {:?} does not exist: declare it or change the target's options.exchange",
                self.exchange
            )),
            Some(ACCESS_REFUSED) => SourceError::Auth(format!(
                "RabbitMQ at {label} refused publishing to {} (ACCESS_REFUSED): grant the user write access",
                self.destination()
            )),
            _ => amqp_error(e, label, "publishing"),
        }
    }
}

/// AMQP headers (long strings) for the message's headers.
fn amqp_headers(headers: &[(String, String)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(k.as_str().into(), AMQPValue::LongString(v.as_str().into()));
    }
    table
}

#[async_trait]
impl crate::targets::Publisher for RabbitPublisher {
    async fn connect(&self) -> Result<()> {
        let mut g = self.live.lock().await;
        if let Some((connection, _, _)) = g.take() {
            let _ = connection.close(200, "reconnecting".into()).await;
        }
        let mut last = None;
        for endpoint in &self.ctx.spec.endpoints {
            let label = redact(endpoint);
            let name = format!("nimbus {}", self.ctx.mapping);
            let connection = match open_connection(&self.ctx, endpoint, name).await {
                Ok(c) => c,
                Err(e) if e.is_transient() => {
                    warn!(endpoint = %label, error = %e, "RabbitMQ endpoint unreachable");
                    last = Some(e);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| amqp_error(&e, &label, "opening a channel"))?;
            self.check_exchange(&connection, &label).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| amqp_error(&e, &label, "confirm.select"))?;
            debug!(endpoint = %label, "RabbitMQ publisher connected");
            *g = Some((connection, channel, label));
            return Ok(());
        }
        Err(last.unwrap_or_else(|| SourceError::Config("no RabbitMQ endpoint".into())))
    }

    async fn publish(&self, payload: &[u8], headers: &[(String, String)]) -> Result<()> {
        let (channel, label) = match &*self.live.lock().await {
            Some((_, ch, label)) => (ch.clone(), label.clone()),
            None => {
                return Err(SourceError::Broker(
                    "the RabbitMQ publisher is not connected".into(),
                ))
            }
        };
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_timestamp(now_ms().max(0) as u64 / 1000);
        if !headers.is_empty() {
            props = props.with_headers(amqp_headers(headers));
        }
        let options = BasicPublishOptions {
            mandatory: true,
            ..Default::default()
        };
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                self.routing_key.as_str().into(),
                options,
                payload,
                props,
            )
            .await
            .map_err(|e| self.publish_error(&e, &label))?;
        let confirmation = match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Err(_) => {
                return Err(SourceError::Broker(format!(
                    "RabbitMQ at {label} did not confirm a message within {CONFIRM_TIMEOUT:?}"
                )))
            }
            Ok(r) => r.map_err(|e| self.publish_error(&e, &label))?,
        };
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(r)) | Confirmation::Nack(Some(r)) => {
                Err(SourceError::Missing(format!(
                    "RabbitMQ at {label} returned the message: {} {} ({} is bound to no queue: bind a queue or change the target)",
                    r.reply_code,
                    r.reply_text,
                    self.destination()
                )))
            }
            Confirmation::Nack(None) => Err(SourceError::Broker(format!(
                "RabbitMQ at {label} refused (nacked) a message for {}",
                self.destination()
            ))),
            Confirmation::NotRequested => Err(SourceError::Broker(
                "RabbitMQ channel is not in confirm mode".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_lambdas_shape() {
        let mut headers = FieldTable::default();
        headers.insert("header1".into(), AMQPValue::LongString("value1".into()));
        headers.insert("numberInHeader".into(), AMQPValue::LongInt(10));
        headers.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        );
        let p = BasicProperties::default()
            .with_content_type("text/plain".into())
            .with_headers(headers)
            .with_delivery_mode(1)
            .with_priority(34)
            .with_expiration("60000".into())
            .with_timestamp(2021)
            .with_user_id("guest".into());
        let m = message_json("1-7", &p, false, b"{\"a\":1}");
        let bp = &m["basicProperties"];
        assert_eq!(m["eventID"], "1-7");
        assert_eq!(m["eventSource"], "aws:rmq");
        assert_eq!(m["redelivered"], false);
        assert_eq!(m["data"], "eyJhIjoxfQ==");
        assert_eq!(bp["contentType"], "text/plain");
        assert_eq!(bp["contentEncoding"], Value::Null);
        assert_eq!(
            bp["headers"]["header1"]["bytes"],
            json!([118, 97, 108, 117, 101, 49])
        );
        assert_eq!(bp["headers"]["numberInHeader"], 10);
        assert_eq!(bp["deliveryMode"], 1);
        assert_eq!(bp["priority"], 34);
        assert_eq!(bp["messageId"], Value::Null);
        assert_eq!(bp["timestamp"], "Jan 1, 1970, 12:33:41 AM");
        assert_eq!(bp["type"], Value::Null);
        assert_eq!(bp["bodySize"], 7);
        assert_eq!(
            traceparent(&p).as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
        let bare = message_json("x", &BasicProperties::default(), true, b"");
        assert_eq!(bare["basicProperties"]["headers"], Value::Null);
        assert_eq!(bare["basicProperties"]["timestamp"], Value::Null);
        assert_eq!(bare["redelivered"], true);
    }

    #[test]
    fn hosts_come_from_the_url() {
        assert_eq!(
            url_host("amqp://127.0.0.1:5672/%2f").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            url_host("amqp://user@mq.example:5672").as_deref(),
            Some("mq.example")
        );
        assert_eq!(url_host("amqp://[::1]:5672/v").as_deref(), Some("::1"));
        assert_eq!(url_host("amqp://"), None);
        assert_eq!(
            lambda_timestamp(13 * 3600 + 5).as_deref(),
            Some("Jan 1, 1970, 1:00:05 PM")
        );
    }

    #[test]
    fn headers_become_long_strings() {
        let t = amqp_headers(&[("traceparent".into(), "00-a-b-01".into())]);
        match t.inner().get("traceparent") {
            Some(AMQPValue::LongString(v)) => assert_eq!(v.to_string(), "00-a-b-01"),
            other => panic!("{other:?}"),
        }
    }
}
