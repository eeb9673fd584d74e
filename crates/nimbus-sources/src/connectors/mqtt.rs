//! The MQTT connector (`rumqttc`, MQTT 3.1.1 and 5): topic filters with a persistent
//! session, QoS 1 acknowledged only when the runner acks.
//!
//! - Options: `version` = `3` | `5` (default 5), `qos` = `0` | `1` (default 1).
//! - The client id is the mapping's group, with a persistent session (clean session /
//!   clean start off; v5 session expiry 7 days), so QoS 1 messages published while Nimbus
//!   was down are delivered when it reconnects. `remove()` ends the session.
//! - Manual acks: the PUBACK goes out only when the runner acks (reject = ack: MQTT has no
//!   dead-lettering). Unacked messages come again after a reconnect.
//! - Flow: the event loop runs in a background task feeding a bounded channel. v5 asks
//!   the broker for a Receive Maximum of `batch_size × concurrency` unacked messages; v3
//!   has no such field: the broker's own limit applies (mosquitto's
//!   `max_inflight_messages`, default 20, so a v3 batch holds at most 20 QoS 1 messages
//!   while they are unacked). QoS 0 messages are bounded by the channel (the event loop
//!   stops reading the socket when it is full).
//! - `eventID` = `<generation>-<packet id>-<counter>`.

use crate::error::{Result, SourceError};
use crate::model::redact;
use crate::source::{now_ms, Context, Record, Source};
use async_trait::async_trait;
use base64::Engine;
use rumqttc::v5;
use rumqttc::v5::mqttbytes::v5 as p5;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tracing::{debug, warn};

/// How long the TCP connect, CONNECT/CONNACK and SUBSCRIBE/SUBACK may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Keep-alive: the broker drops a silent client after 1.5 × this.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// v5 session expiry: how long the broker keeps the session (and queues QoS 1
/// messages) while Nimbus is away.
const SESSION_EXPIRY_S: u32 = 7 * 24 * 3600;
/// Largest message accepted (Lambda's invoke payload limit is 6 MB).
const MAX_PACKET: usize = 6 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    V3,
    V5,
}

/// MQTT topic filters as a source.
pub struct MqttSource {
    ctx: Context,
    version: Version,
    qos: u8,
    generation: AtomicU64,
    /// Makes `eventID`s unique even when the broker reuses a packet id.
    counter: AtomicU64,
    live: Mutex<Option<Arc<Live>>>,
}

/// One connection: the client (for acks) and the task that runs its event loop.
struct Live {
    generation: u64,
    client: Client,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    inbox: tokio::sync::Mutex<Inbox>,
}

impl Drop for Live {
    /// The event loop dies with the connection (the socket closes: unacked QoS 1
    /// messages stay in the broker's session).
    fn drop(&mut self) {
        if let Some(t) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            t.abort();
        }
    }
}

impl Live {
    /// Closes the connection after the PUBACKs already queued (acks are only handed to
    /// the event loop; aborting it would lose them and the broker would send those
    /// messages again): DISCONNECT goes after them, and the event loop runs until the
    /// broker closes the socket (at most 2 s).
    async fn shutdown(&self) {
        let _ = match &self.client {
            Client::V3(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
        // No more records: the event loop drops what still comes (unacked, so the
        // broker keeps it in the session).
        if let Ok(mut inbox) =
            tokio::time::timeout(Duration::from_millis(100), self.inbox.lock()).await
        {
            inbox.rx.close();
            if let Some(c) = &inbox.credit {
                c.close();
            }
        }
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(mut t) = task {
            if tokio::time::timeout(Duration::from_secs(2), &mut t)
                .await
                .is_err()
            {
                t.abort();
            }
        }
    }
}

struct Inbox {
    rx: mpsc::UnboundedReceiver<Result<Msg>>,
    /// QoS 0: the pump's permits, given back as messages are taken.
    credit: Option<Arc<Semaphore>>,
    /// Records taken from the channel but not returned yet (a dropped `poll` future
    /// leaves them here for the next one).
    ready: VecDeque<Record>,
}

/// A received PUBLISH, the same for both protocol versions.
#[derive(Debug)]
struct Msg {
    topic: String,
    qos: u8,
    retain: bool,
    pkid: u16,
    payload: Vec<u8>,
    trace: Option<String>,
    received_ms: i64,
}

/// What a record needs to be acknowledged.
#[derive(Debug)]
struct Handle {
    generation: u64,
    pkid: u16,
    qos: u8,
}

enum Client {
    V3(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

impl Client {
    /// Sends the PUBACK of a QoS 1 message.
    async fn ack(&self, pkid: u16) -> std::result::Result<(), String> {
        match self {
            Client::V3(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, Vec::new());
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let mut p = p5::Publish::new("", v5::mqttbytes::QoS::AtLeastOnce, Vec::new(), None);
                p.pkid = pkid;
                c.ack(&p).await.map_err(|e| e.to_string())
            }
        }
    }
}

/// The event loop of either version.
enum EventLoop {
    V3(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// What the event loop yields that the connector cares about.
enum Ev {
    ConnAck,
    /// Per filter: `None` granted, `Some((reason, is_auth))` refused.
    SubAck(Vec<Option<(String, bool)>>),
    Publish(Msg),
    Other,
}

impl EventLoop {
    async fn next(&mut self, endpoint: &str) -> Result<Ev> {
        match self {
            EventLoop::V3(l) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode};
                match l.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Ev::ConnAck),
                    Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Ev::SubAck(
                        s.return_codes
                            .iter()
                            .map(|c| match c {
                                SubscribeReasonCode::Success(_) => None,
                                SubscribeReasonCode::Failure => {
                                    Some(("refused (not authorized?)".to_string(), true))
                                }
                            })
                            .collect(),
                    )),
                    Ok(Event::Incoming(Packet::Publish(p))) => Ok(Ev::Publish(Msg {
                        topic: p.topic,
                        qos: p.qos as u8,
                        retain: p.retain,
                        pkid: p.pkid,
                        payload: p.payload.to_vec(),
                        trace: None,
                        received_ms: now_ms(),
                    })),
                    Ok(_) => Ok(Ev::Other),
                    Err(e) => Err(v3_error(e, endpoint)),
                }
            }
            EventLoop::V5(l) => {
                use p5::{Packet, SubscribeReasonCode as R};
                use v5::Event;
                match l.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Ev::ConnAck),
                    Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Ev::SubAck(
                        s.return_codes
                            .iter()
                            .map(|c| match c {
                                R::Success(_) => None,
                                R::NotAuthorized => Some(("not authorized".into(), true)),
                                other => Some((format!("{other:?}"), false)),
                            })
                            .collect(),
                    )),
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let trace = p.properties.as_ref().and_then(|props| {
                            props
                                .user_properties
                                .iter()
                                .find(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
                                .map(|(_, v)| v.clone())
                        });
                        Ok(Ev::Publish(Msg {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            qos: p.qos as u8,
                            retain: p.retain,
                            pkid: p.pkid,
                            payload: p.payload.to_vec(),
                            trace,
                            received_ms: now_ms(),
                        }))
                    }
                    Ok(_) => Ok(Ev::Other),
                    Err(e) => Err(v5_error(e, endpoint)),
                }
            }
        }
    }
}

impl MqttSource {
    pub fn new(ctx: Context) -> Result<Self> {
        let version = version_option(&ctx)?;
        let qos = qos_option(&ctx)?;
        Ok(Self {
            ctx,
            version,
            qos,
            generation: AtomicU64::new(0),
            counter: AtomicU64::new(0),
            live: Mutex::new(None),
        })
    }

    fn replace(&self, live: Option<Arc<Live>>) -> Option<Arc<Live>> {
        std::mem::replace(
            &mut *self.live.lock().unwrap_or_else(|e| e.into_inner()),
            live,
        )
    }

    fn current(&self) -> Option<Arc<Live>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Unacked messages the runner may hold: the v5 Receive Maximum.
    fn bound(&self) -> usize {
        self.ctx
            .batch_size
            .max(1)
            .saturating_mul(self.ctx.concurrency.max(1))
            .min(u16::MAX as usize)
    }

    /// A client and its event loop for `endpoint`; `clean` starts a new session (and
    /// ends the old one).
    fn client(&self, endpoint: &str, clean: bool) -> Result<(Client, EventLoop)> {
        let (host, port) = host_port(endpoint)?;
        let id = self.ctx.group();
        let (user, password) = credentials(&self.ctx, endpoint);
        let cap = self.bound() + 64;
        Ok(match self.version {
            Version::V3 => {
                let mut o = rumqttc::MqttOptions::new(id, host, port);
                o.set_clean_session(clean)
                    .set_manual_acks(true)
                    .set_keep_alive(KEEP_ALIVE)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET)
                    .set_request_channel_capacity(cap);
                if let Some(u) = user {
                    o.set_credentials(u, password.unwrap_or_default());
                }
                let (c, l) = rumqttc::AsyncClient::new(o, cap);
                (Client::V3(c), EventLoop::V3(Box::new(l)))
            }
            Version::V5 => {
                let mut o = v5::MqttOptions::new(id, host, port);
                o.set_clean_start(clean)
                    .set_session_expiry_interval(Some(if clean { 0 } else { SESSION_EXPIRY_S }))
                    .set_receive_maximum(Some(self.bound() as u16))
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_manual_acks(true)
                    .set_keep_alive(KEEP_ALIVE)
                    .set_request_channel_capacity(cap);
                if let Some(u) = user {
                    o.set_credentials(u, password.unwrap_or_default());
                }
                let (c, l) = v5::AsyncClient::new(o, cap);
                (Client::V5(c), EventLoop::V5(Box::new(l)))
            }
        })
    }

    /// Connects to one endpoint, subscribes, and starts the event-loop task.
    async fn open(&self, endpoint: &str, generation: u64) -> Result<Live> {
        let label = redact(endpoint);
        let (client, mut eventloop) = self.client(endpoint, false)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let timed_out = || SourceError::Unreachable {
            endpoint: label.clone(),
            reason: format!("no CONNACK/SUBACK within {CONNECT_TIMEOUT:?}"),
        };
        loop {
            match tokio::time::timeout_at(deadline, eventloop.next(&label)).await {
                Err(_) => return Err(timed_out()),
                Ok(r) => {
                    if let Ev::ConnAck = r? {
                        break;
                    }
                }
            }
        }
        self.subscribe(&client)
            .await
            .map_err(|e| SourceError::Broker(format!("MQTT at {label}: subscribing: {e}")))?;
        // A resumed session delivers its queued messages right after the CONNACK,
        // before the SUBACK: keep them.
        let mut early = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, eventloop.next(&label)).await {
                Err(_) => return Err(timed_out()),
                Ok(r) => match r? {
                    Ev::Publish(m) => early.push(m),
                    Ev::SubAck(codes) => {
                        self.check_suback(&codes, &label)?;
                        break;
                    }
                    _ => {}
                },
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        // QoS 1: the broker bounds what is unacked (the runner's acks must never wait for
        // a pump that waits for the runner). QoS 0 has no acks: the pump waits for credit.
        let credit = (self.qos == 0).then(|| Arc::new(Semaphore::new(self.bound() + 16)));
        let task = tokio::spawn(pump(eventloop, tx, credit.clone(), label));
        let mut ready = VecDeque::new();
        for m in early {
            ready.push_back(self.record(m, generation));
        }
        debug!(
            filters = ?self.ctx.spec.topics,
            version = ?self.version,
            generation,
            "mqtt subscribed"
        );
        Ok(Live {
            generation,
            client,
            task: Mutex::new(Some(task)),
            inbox: tokio::sync::Mutex::new(Inbox { rx, credit, ready }),
        })
    }

    async fn subscribe(&self, client: &Client) -> std::result::Result<(), String> {
        let topics = &self.ctx.spec.topics;
        match client {
            Client::V3(c) => {
                let qos = rumqttc::qos(self.qos).unwrap_or(rumqttc::QoS::AtLeastOnce);
                c.subscribe_many(
                    topics
                        .iter()
                        .map(|t| rumqttc::SubscribeFilter::new(t.clone(), qos)),
                )
                .await
                .map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let qos = v5::mqttbytes::qos(self.qos).unwrap_or(v5::mqttbytes::QoS::AtLeastOnce);
                c.subscribe_many(topics.iter().map(|t| p5::Filter::new(t.clone(), qos)))
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn check_suback(&self, codes: &[Option<(String, bool)>], label: &str) -> Result<()> {
        for (filter, code) in self.ctx.spec.topics.iter().zip(codes) {
            if let Some((reason, auth)) = code {
                let msg = format!(
                    "MQTT at {label} refused the subscription to {filter:?}: {reason} (check the topic filter and the user's ACL)"
                );
                return Err(if *auth {
                    SourceError::Auth(msg)
                } else {
                    SourceError::Config(msg)
                });
            }
        }
        Ok(())
    }

    fn record(&self, m: Msg, generation: u64) -> Record {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{generation}-{}-{n}", m.pkid);
        let filter = self
            .ctx
            .spec
            .topics
            .iter()
            .find(|f| topic_matches(f, &m.topic))
            .or(self.ctx.spec.topics.first())
            .map(String::as_str)
            .unwrap_or("");
        debug!(topic = %m.topic, pkid = m.pkid, id = %id, "mqtt message");
        let data = record_json(&id, filter, &m);
        let mut r = Record::new(
            id,
            data,
            m.received_ms,
            Arc::new(Handle {
                generation,
                pkid: m.pkid,
                qos: m.qos,
            }),
        );
        r.trace = m.trace;
        r
    }

    fn live(&self) -> Result<Arc<Live>> {
        self.current()
            .ok_or_else(|| SourceError::Broker("the mqtt source is not connected".into()))
    }
}

/// Runs the event loop: forwards messages to the inbox and ends with the first error.
/// It never waits for the inbox with QoS 1 (the event loop also sends the runner's
/// PUBACKs; the broker's in-flight limit bounds the messages); with QoS 0 it waits for
/// credit, so a stalled runner stops it reading the socket. Once the receiver is closed
/// ([`Live::shutdown`]) it keeps running to send the queued PUBACKs and the DISCONNECT,
/// dropping messages (unacked: the broker keeps them).
async fn pump(
    mut eventloop: EventLoop,
    tx: mpsc::UnboundedSender<Result<Msg>>,
    credit: Option<Arc<Semaphore>>,
    label: String,
) {
    loop {
        match eventloop.next(&label).await {
            Ok(Ev::Publish(m)) => {
                if let Some(c) = &credit {
                    match c.acquire().await {
                        Ok(p) => p.forget(),
                        Err(_) => return,
                    }
                }
                // A closed inbox: the message is dropped unacked.
                let _ = tx.send(Ok(m));
            }
            Ok(_) => {}
            Err(e) => {
                if !tx.is_closed() {
                    warn!(error = %e, "mqtt connection lost");
                    let _ = tx.send(Err(e));
                }
                return;
            }
        }
    }
}

#[async_trait]
impl Source for MqttSource {
    async fn connect(&self) -> Result<()> {
        if let Some(old) = self.replace(None) {
            old.shutdown().await;
        }
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let live = super::first_reachable("mqtt", &self.ctx.spec.endpoints, |e| {
            self.open(e, generation)
        })
        .await?;
        self.replace(Some(Arc::new(live)));
        Ok(())
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
            let msg = match tokio::time::timeout_at(until, inbox.rx.recv()).await {
                Err(_) => break,
                Ok(None) => {
                    return Err(SourceError::Broker(
                        "the mqtt event loop stopped".to_string(),
                    ))
                }
                Ok(Some(m)) => m?,
            };
            if let Some(c) = &inbox.credit {
                c.add_permits(1);
            }
            let record = self.record(msg, live.generation);
            inbox.ready.push_back(record);
        }
        let n = max.min(inbox.ready.len());
        Ok(inbox.ready.drain(..n).collect())
    }

    async fn ack(&self, records: &[Record]) -> Result<()> {
        let Some(live) = self.current() else {
            return Ok(());
        };
        for r in records {
            let Some(h) = r.handle::<Handle>() else {
                continue;
            };
            if h.generation != live.generation {
                debug!(id = %r.id, "mqtt record of an older connection: not acked");
                continue;
            }
            if h.qos == 0 {
                continue;
            }
            live.client
                .ack(h.pkid)
                .await
                .map_err(|e| SourceError::Broker(format!("MQTT PUBACK: {e}")))?;
        }
        Ok(())
    }

    /// The mapping is gone: end the persistent session, or the broker keeps queueing
    /// QoS 1 messages for it (until the v5 session expiry; forever for v3).
    async fn remove(&self) -> Result<()> {
        if let Some(old) = self.replace(None) {
            old.shutdown().await;
        }
        let Some(endpoint) = self.ctx.spec.endpoints.first() else {
            return Ok(());
        };
        let label = redact(endpoint);
        let (client, mut eventloop) = self.client(endpoint, true)?;
        let ended = tokio::time::timeout(CONNECT_TIMEOUT, async {
            loop {
                if let Ev::ConnAck = eventloop.next(&label).await? {
                    break;
                }
            }
            let _ = match &client {
                Client::V3(c) => c.disconnect().await.map_err(|e| e.to_string()),
                Client::V5(c) => c.disconnect().await.map_err(|e| e.to_string()),
            };
            // Drive the loop until the DISCONNECT is out (it then reports an error).
            while eventloop.next(&label).await.is_ok() {}
            Ok::<(), SourceError>(())
        })
        .await;
        match ended {
            Ok(Ok(())) => debug!(client = %self.ctx.group(), "mqtt session ended"),
            Ok(Err(e)) => warn!(error = %e, "mqtt session not ended"),
            Err(_) => warn!("mqtt session not ended: timed out"),
        }
        Ok(())
    }
}

/// The record of one message (an AWS IoT rule's message, with Nimbus's fields).
fn record_json(id: &str, filter: &str, m: &Msg) -> Value {
    let (payload, encoding) = decode_payload(&m.payload);
    json!({
        "eventID": id,
        "eventSource": crate::model::Kind::Mqtt.event_source(),
        "eventSourceARN": format!("arn:nimbus:mqtt:us-east-1:000000000000:topic/{filter}"),
        "topic": m.topic,
        "qos": m.qos,
        "retain": m.retain,
        "payload": payload,
        "payloadEncoding": encoding,
        "timestamp": m.received_ms,
    })
}

/// The payload as JSON when it is UTF-8 JSON, else its base64.
fn decode_payload(payload: &[u8]) -> (Value, &'static str) {
    match std::str::from_utf8(payload)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
    {
        Some(v) => (v, "json"),
        None => (
            Value::String(base64::engine::general_purpose::STANDARD.encode(payload)),
            "base64",
        ),
    }
}

/// Whether `topic` matches the MQTT filter (`+` one level, `#` the rest; `$` topics only
/// match filters that name them).
fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Host and port of `mqtt://host:port` (`tcp://` too; 1883 by default).
fn host_port(endpoint: &str) -> Result<(String, u16)> {
    let bad = |why: &str| {
        SourceError::Config(format!(
            "invalid mqtt endpoint {}: {why} (e.g. mqtt://127.0.0.1:1883)",
            redact(endpoint)
        ))
    };
    let (scheme, rest) = endpoint.split_once("://").ok_or_else(|| bad("no scheme"))?;
    if scheme == "mqtts" {
        return Err(bad(
            "mqtts needs TLS, which this build has no MQTT support for: use mqtt:// on a trusted network",
        ));
    }
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port) = if let Some(v6) = host_port.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        (h, tail.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("invalid port"))?,
        None => 1883,
    };
    Ok((host.to_string(), port))
}

/// Username and password: the secret's, else the URL's user with the secret's password.
fn credentials(ctx: &Context, endpoint: &str) -> (Option<String>, Option<String>) {
    let url_user = endpoint
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?']).next())
        .and_then(|a| a.rsplit_once('@'))
        .map(|(u, _)| u.to_string())
        .filter(|u| !u.is_empty());
    let c = ctx.credentials.clone().unwrap_or_default();
    let user = c.username.or(url_user);
    match (user, c.password) {
        (Some(u), p) => (Some(u), p),
        // MQTT 3.1.1 has no password without a user name.
        (None, Some(p)) => (Some(String::new()), Some(p)),
        (None, None) => (None, None),
    }
}

fn unreachable(endpoint: &str, reason: impl std::fmt::Display) -> SourceError {
    SourceError::Unreachable {
        endpoint: endpoint.to_string(),
        reason: reason.to_string(),
    }
}

/// A refused CONNECT: credentials are `Auth`, a refused client id is `Config`.
fn refused(endpoint: &str, code: &str) -> SourceError {
    let msg = format!("MQTT at {endpoint} refused the connection ({code})");
    match code {
        "BadUserNamePassword" | "NotAuthorized" | "Banned" | "BadAuthenticationMethod" => {
            SourceError::Auth(format!("{msg}: check the mapping's secret and the broker's ACL"))
        }
        "BadClientId" | "ClientIdentifierNotValid" => SourceError::Config(format!(
            "{msg}: the broker does not accept the client id; set the mapping's group to a shorter name"
        )),
        _ => SourceError::Broker(msg),
    }
}

fn v3_error(e: rumqttc::ConnectionError, endpoint: &str) -> SourceError {
    use rumqttc::ConnectionError as E;
    match e {
        E::Io(io) => unreachable(endpoint, io),
        E::NetworkTimeout | E::FlushTimeout => unreachable(endpoint, "timed out"),
        E::ConnectionRefused(code) => refused(endpoint, &format!("{code:?}")),
        other => SourceError::Broker(format!("MQTT at {endpoint}: {other}")),
    }
}

fn v5_error(e: v5::ConnectionError, endpoint: &str) -> SourceError {
    use v5::ConnectionError as E;
    match e {
        E::Io(io) => unreachable(endpoint, io),
        E::Timeout(_) => unreachable(endpoint, "timed out"),
        E::ConnectionRefused(code) => refused(endpoint, &format!("{code:?}")),
        other => SourceError::Broker(format!("MQTT at {endpoint}: {other}")),
    }
}

/// Option `version`: `3` | `5` (default 5).
fn version_option(ctx: &Context) -> Result<Version> {
    match ctx.spec.option("version").unwrap_or("5") {
        "5" => Ok(Version::V5),
        "3" | "3.1.1" | "4" => Ok(Version::V3),
        other => Err(SourceError::Config(format!(
            "invalid mqtt option version {other:?}: 3 or 5"
        ))),
    }
}

/// Option `qos`: `0` | `1` (default 1).
fn qos_option(ctx: &Context) -> Result<u8> {
    match ctx.spec.option("qos").unwrap_or("1") {
        "0" => Ok(0),
        "1" => Ok(1),
        other => Err(SourceError::Config(format!(
            "invalid mqtt option qos {other:?}: 0 or 1"
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Publisher (targets)
// ---------------------------------------------------------------------------------------

/// How long a PUBACK (QoS 1) or the write of a QoS 0 message may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What the publisher's event loop reports: a PUBLISH went out with this packet id (0 for
/// QoS 0), the broker acknowledged one (`Err`: a v5 PUBACK with a failure reason), or the
/// connection died.
#[derive(Debug)]
enum PubEv {
    Sent(u16),
    Acked(u16, std::result::Result<(), String>),
    Lost(SourceError),
}

/// One publishing connection: the client and the task that drives its event loop.
struct PubLive {
    client: Client,
    events: mpsc::UnboundedReceiver<PubEv>,
    task: tokio::task::JoinHandle<()>,
    label: String,
    /// A publish is waiting for its PUBACK; still set at the next publish means that one
    /// was cancelled, and its late events could pass for the next message's.
    busy: bool,
}

impl Drop for PubLive {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes to `options.topic` with QoS `options.qos` (default 1) over MQTT
/// `options.version` (default 5; v5 carries the headers as user properties). QoS 1
/// returns after the PUBACK of that very packet, QoS 0 once the packet is written. The
/// event loop runs in its own task and only forwards small events on an unbounded
/// channel, so it never waits for `publish` (acks flow through the same loop). One
/// message at a time: the runner publishes a target's messages in order.
pub struct MqttPublisher {
    ctx: Context,
    topic: String,
    version: Version,
    qos: u8,
    live: tokio::sync::Mutex<Option<PubLive>>,
}

impl MqttPublisher {
    pub fn new(ctx: Context) -> Result<Self> {
        let topic = match ctx.spec.option("topic").map(str::trim) {
            Some(t) if !t.is_empty() && !t.contains(['+', '#']) => t.to_string(),
            Some(t) if !t.is_empty() => {
                return Err(SourceError::Config(format!(
                    "options.topic {t:?}: a topic to publish to has no wildcards (+, #)"
                )))
            }
            _ => {
                return Err(SourceError::Config(
                    "an mqtt target needs options.topic (the topic to publish to)".into(),
                ))
            }
        };
        Ok(Self {
            version: version_option(&ctx)?,
            qos: qos_option(&ctx)?,
            topic,
            ctx,
            live: tokio::sync::Mutex::new(None),
        })
    }

    /// A client with a clean session (a publisher has nothing to resume) and a client id
    /// unique to this connection (two Nimbus instances must not kick each other off).
    fn client(&self, endpoint: &str) -> Result<(Client, EventLoop)> {
        let (host, port) = host_port(endpoint)?;
        let id = format!("{}-{:08x}", self.ctx.group(), rand::random::<u32>());
        let (user, password) = credentials(&self.ctx, endpoint);
        Ok(match self.version {
            Version::V3 => {
                let mut o = rumqttc::MqttOptions::new(id, host, port);
                o.set_clean_session(true)
                    .set_keep_alive(KEEP_ALIVE)
                    .set_max_packet_size(MAX_PACKET, MAX_PACKET);
                if let Some(u) = user {
                    o.set_credentials(u, password.unwrap_or_default());
                }
                let (c, l) = rumqttc::AsyncClient::new(o, 16);
                (Client::V3(c), EventLoop::V3(Box::new(l)))
            }
            Version::V5 => {
                let mut o = v5::MqttOptions::new(id, host, port);
                o.set_clean_start(true)
                    .set_max_packet_size(Some(MAX_PACKET as u32))
                    .set_keep_alive(KEEP_ALIVE);
                if let Some(u) = user {
                    o.set_credentials(u, password.unwrap_or_default());
                }
                let (c, l) = v5::AsyncClient::new(o, 16);
                (Client::V5(c), EventLoop::V5(Box::new(l)))
            }
        })
    }

    /// Connects to one endpoint (CONNACK within [`CONNECT_TIMEOUT`]) and starts its
    /// event-loop task.
    async fn open(&self, endpoint: &str) -> Result<PubLive> {
        let label = redact(endpoint);
        let (client, mut eventloop) = self.client(endpoint)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, pub_event(&mut eventloop, &label)).await {
                Err(_) => {
                    return Err(unreachable(
                        &label,
                        format!("no CONNACK within {CONNECT_TIMEOUT:?}"),
                    ))
                }
                Ok(Err(e)) => return Err(e),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(_))) => {}
            }
        }
        let (tx, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(pub_pump(eventloop, tx, label.clone()));
        Ok(PubLive {
            client,
            events,
            task,
            label,
            busy: false,
        })
    }

    /// Hands the PUBLISH to the client (v5: headers as user properties).
    async fn send(
        &self,
        client: &Client,
        payload: &[u8],
        headers: &[(String, String)],
    ) -> Result<()> {
        let r = match client {
            Client::V3(c) => {
                let qos = rumqttc::qos(self.qos).unwrap_or(rumqttc::QoS::AtLeastOnce);
                c.publish(self.topic.clone(), qos, false, payload.to_vec())
                    .await
                    .map_err(|e| e.to_string())
            }
            Client::V5(c) => {
                let qos = v5::mqttbytes::qos(self.qos).unwrap_or(v5::mqttbytes::QoS::AtLeastOnce);
                let props = p5::PublishProperties {
                    user_properties: headers.to_vec(),
                    ..Default::default()
                };
                c.publish_with_properties(self.topic.clone(), qos, false, payload.to_vec(), props)
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        r.map_err(|e| SourceError::Broker(format!("MQTT publish to {}: {e}", self.topic)))
    }
}

/// One event of the publisher's event loop: `None` is the CONNACK.
async fn pub_event(l: &mut EventLoop, label: &str) -> Result<Option<Option<PubEv>>> {
    match l {
        EventLoop::V3(l) => {
            use rumqttc::{Event, Outgoing, Packet};
            match l.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(None),
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    Ok(Some(Some(PubEv::Acked(a.pkid, Ok(())))))
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => Ok(Some(Some(PubEv::Sent(pkid)))),
                Ok(_) => Ok(Some(None)),
                Err(e) => Err(v3_error(e, label)),
            }
        }
        EventLoop::V5(l) => {
            use p5::{Packet, PubAckReason as R};
            use v5::Event;
            match l.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(None),
                Ok(Event::Incoming(Packet::PubAck(a))) => {
                    let outcome = match a.reason {
                        R::Success | R::NoMatchingSubscribers => Ok(()),
                        other => Err(format!(
                            "{other:?}{}",
                            a.properties
                                .and_then(|p| p.reason_string)
                                .map(|s| format!(": {s}"))
                                .unwrap_or_default()
                        )),
                    };
                    Ok(Some(Some(PubEv::Acked(a.pkid, outcome))))
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Publish(pkid))) => {
                    Ok(Some(Some(PubEv::Sent(pkid))))
                }
                Ok(_) => Ok(Some(None)),
                Err(e) => Err(v5_error(e, label)),
            }
        }
    }
}

/// Drives a publisher's event loop until the connection dies, forwarding what `publish`
/// waits for; never waits for anyone (the channel is unbounded, and holds at most a few
/// events per message since messages go one at a time).
async fn pub_pump(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<PubEv>, label: String) {
    loop {
        match pub_event(&mut eventloop, &label).await {
            Ok(Some(Some(ev))) => {
                if tx.send(ev).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                warn!(error = %e, "mqtt publisher connection lost");
                let _ = tx.send(PubEv::Lost(e));
                return;
            }
        }
    }
}

#[async_trait]
impl crate::targets::Publisher for MqttPublisher {
    async fn connect(&self) -> Result<()> {
        let mut g = self.live.lock().await;
        if let Some(old) = g.take() {
            let _ = match &old.client {
                Client::V3(c) => c.try_disconnect().map_err(|e| e.to_string()),
                Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
            };
        }
        let live =
            super::first_reachable("mqtt", &self.ctx.spec.endpoints, |e| self.open(e)).await?;
        debug!(topic = %self.topic, version = ?self.version, "mqtt publisher connected");
        *g = Some(live);
        Ok(())
    }

    async fn publish(&self, payload: &[u8], headers: &[(String, String)]) -> Result<()> {
        let mut g = self.live.lock().await;
        let live = g
            .as_mut()
            .ok_or_else(|| SourceError::Broker("the MQTT publisher is not connected".into()))?;
        if live.busy {
            *g = None;
            return Err(SourceError::Broker(
                "an interrupted MQTT publish left its PUBACK in doubt: reconnecting".into(),
            ));
        }
        // Events of an earlier publish that gave up (its connection is dropped below on
        // any error, so these are at most late PUBACKs).
        while let Ok(ev) = live.events.try_recv() {
            if let PubEv::Lost(e) = ev {
                *g = None;
                return Err(e);
            }
        }
        live.busy = true;
        let result = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            self.send(&live.client, payload, headers).await?;
            let mut sent = None;
            loop {
                match live.events.recv().await {
                    None => return Err(unreachable(&live.label, "the event loop stopped")),
                    Some(PubEv::Lost(e)) => return Err(e),
                    Some(PubEv::Sent(pkid)) if sent.is_none() => {
                        if self.qos == 0 {
                            return Ok(());
                        }
                        sent = Some(pkid);
                    }
                    Some(PubEv::Acked(pkid, outcome)) if sent == Some(pkid) => {
                        return outcome.map_err(|reason| {
                            SourceError::Broker(format!(
                                "MQTT at {} refused the message for {}: {reason}",
                                live.label, self.topic
                            ))
                        });
                    }
                    Some(_) => {}
                }
            }
        })
        .await;
        let result = result.unwrap_or_else(|_| {
            Err(SourceError::Broker(format!(
                "MQTT at {}: no PUBACK within {PUBLISH_TIMEOUT:?}",
                live.label
            )))
        });
        live.busy = false;
        if result.is_err() {
            // A later PUBACK must not be taken for the next message's.
            *g = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: &[u8]) -> Msg {
        Msg {
            topic: "sensors/a/temp".into(),
            qos: 1,
            retain: false,
            pkid: 7,
            payload: payload.to_vec(),
            trace: None,
            received_ms: 1_700_000_000_123,
        }
    }

    #[test]
    fn records_carry_json_or_base64_payloads() {
        let r = record_json("1-7-0", "sensors/+/temp", &msg(br#"{"t":21.5}"#));
        assert_eq!(r["eventID"], "1-7-0");
        assert_eq!(r["eventSource"], "nimbus:mqtt");
        assert_eq!(
            r["eventSourceARN"],
            "arn:nimbus:mqtt:us-east-1:000000000000:topic/sensors/+/temp"
        );
        assert_eq!(r["topic"], "sensors/a/temp");
        assert_eq!(r["qos"], 1);
        assert_eq!(r["retain"], false);
        assert_eq!(r["payload"]["t"], 21.5);
        assert_eq!(r["payloadEncoding"], "json");
        assert_eq!(r["timestamp"], 1_700_000_000_123i64);
        let r = record_json("x", "f", &msg(&[0xff, 0x00, 0x01]));
        assert_eq!(r["payload"], "/wAB");
        assert_eq!(r["payloadEncoding"], "base64");
        // Plain text is not JSON: base64 too.
        assert_eq!(decode_payload(b"hello").1, "base64");
        assert_eq!(decode_payload(b"").1, "base64");
        assert_eq!(decode_payload(b"42").0, json!(42));
    }

    #[test]
    fn filters_match_like_the_broker() {
        assert!(topic_matches("a/+/c", "a/b/c"));
        assert!(!topic_matches("a/+/c", "a/b/d"));
        assert!(!topic_matches("a/+", "a/b/c"));
        assert!(topic_matches("a/#", "a/b/c"));
        assert!(topic_matches("a/#", "a"));
        assert!(topic_matches("#", "x/y"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(topic_matches("+/+", "/x"));
    }

    #[test]
    fn endpoints_and_refusals() {
        assert_eq!(
            host_port("mqtt://127.0.0.1:1883").unwrap(),
            ("127.0.0.1".into(), 1883)
        );
        assert_eq!(host_port("tcp://broker").unwrap(), ("broker".into(), 1883));
        assert_eq!(
            host_port("mqtt://u@[::1]:1884/").unwrap(),
            ("::1".into(), 1884)
        );
        assert!(host_port("mqtts://h:8883").is_err());
        assert!(host_port("mqtt://h:x").is_err());
        assert!(matches!(
            refused("e", "BadUserNamePassword"),
            SourceError::Auth(_)
        ));
        assert!(matches!(
            refused("e", "NotAuthorized"),
            SourceError::Auth(_)
        ));
        assert!(matches!(
            refused("e", "BadClientId"),
            SourceError::Config(_)
        ));
        assert!(matches!(refused("e", "ServerBusy"), SourceError::Broker(_)));
    }

    use super::super::target_ctx;

    #[test]
    fn mqtt_targets_check_topic_version_and_qos() {
        use crate::model::Kind;
        let new = |o: &[(&str, &str)]| MqttPublisher::new(target_ctx(Kind::Mqtt, o));
        assert!(new(&[]).is_err());
        assert!(new(&[("topic", "a/#")])
            .err()
            .is_some_and(|e| e.to_string().contains("wildcards")));
        assert!(new(&[("topic", "a"), ("qos", "2")]).is_err());
        assert!(new(&[("topic", "a"), ("version", "4.5")]).is_err());
        let p = new(&[("topic", "a/b")]).unwrap();
        assert_eq!(
            (p.version, p.qos),
            (Version::V5, 1),
            "v5 and QoS 1 by default"
        );
        let p = new(&[("topic", "a/b"), ("version", "3"), ("qos", "0")]).unwrap();
        assert_eq!((p.version, p.qos), (Version::V3, 0));
    }
}
