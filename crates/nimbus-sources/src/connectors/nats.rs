//! The NATS connectors.
//!
//! - [`JetStreamSource`] (kind `nats`): a durable pull consumer named [`Context::group`]
//!   on a JetStream stream, with explicit acks: at least once. The stream is the option
//!   `stream`, or else the stream that holds the first subject; the consumer's filter is
//!   the mapping's subjects; with option `create_stream = true` a missing `stream` is
//!   created holding those subjects. `ack_wait` is 30 s (option `ack_wait_s`) and
//!   `max_ack_pending` is `batch_size × concurrency` (+ a small margin), so a throttled
//!   function stops the flow on the server. Record id: the stream sequence. `reject` is
//!   JetStream's `term` (never redelivered), `touch` is `in progress` (restarts
//!   `ack_wait`).
//! - [`CoreNatsSource`] (kind `nats-core`): plain subscriptions (queue group: option
//!   `queue_group`). **At most once**: core NATS keeps nothing, so messages published while
//!   Nimbus is down, while the mapping reconnects, or whose function fails are lost; `ack`
//!   is a no-op. When the runner does not keep up, the oldest buffered messages are
//!   dropped (counted and logged). Record id: a counter of the source.
//!
//! JetStream polls are pull requests with `no_wait` + `expires = wait`: the server answers
//! at once with what it has (up to `max`), or waits up to `wait` for a first message. All
//! requests of a connection are answered on one inbox subscription, so a poll the runner
//! drops loses nothing: what the server sent for it is handed out by the next poll (the
//! server holds at most `max_ack_pending` unacknowledged messages, which bounds it).
//!
//! Records of an older connection (before a reconnect) are never settled on the new one:
//! every handle carries the connection generation. For JetStream such a record is simply
//! redelivered after `ack_wait`.

use crate::error::{Result, SourceError};
use crate::model::{redact, Kind};
use crate::source::{now_ms, Context, Record, Source};
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::stream::Stream as JsStream;
use async_nats::jetstream::{self, consumer::Consumer, ErrorCode};
use async_nats::{
    Client, ConnectErrorKind, ConnectOptions, HeaderMap, ServerAddr, StatusCode, Subject,
    Subscriber,
};
use async_trait::async_trait;
use base64::Engine;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Unacknowledged records allowed beyond `batch_size × concurrency` (a batch being
/// settled while the next one is fetched).
const PREFETCH_MARGIN: usize = 16;
/// How long connecting may take before the endpoint counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a poll that has records waits for the next one.
const LINGER: Duration = Duration::from_millis(50);
/// Added to a poll's `wait` before a fetch that got no answer counts as a broker error.
const FETCH_GRACE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Shared: connecting, errors, record parts
// ---------------------------------------------------------------------------------------

/// The endpoints as the client wants them; a bad URL is a configuration error.
fn server_addrs(ctx: &Context) -> Result<Vec<ServerAddr>> {
    ctx.spec
        .endpoints
        .iter()
        .map(|e| {
            e.parse::<ServerAddr>().map_err(|err| {
                SourceError::Config(format!("invalid NATS endpoint {}: {err}", redact(e)))
            })
        })
        .collect()
}

/// The endpoints for messages (passwords never appear: URLs with one are refused by
/// validation, and [`redact`] hides any that slipped through).
fn endpoints_label(ctx: &Context) -> String {
    ctx.spec
        .endpoints
        .iter()
        .map(|e| redact(e))
        .collect::<Vec<_>>()
        .join(",")
}

/// Connects with the mapping's credentials: user + password, or a token when the secret
/// holds only a password.
async fn connect_client(ctx: &Context) -> Result<Client> {
    let addrs = server_addrs(ctx)?;
    let mut opts = match &ctx.credentials {
        Some(c) => match (&c.username, &c.password) {
            (Some(u), Some(p)) => ConnectOptions::with_user_and_password(u.clone(), p.clone()),
            (None, Some(p)) => ConnectOptions::with_token(p.clone()),
            (Some(u), None) => ConnectOptions::with_user_and_password(u.clone(), String::new()),
            (None, None) => ConnectOptions::new(),
        },
        None => ConnectOptions::new(),
    };
    opts = opts
        .connection_timeout(CONNECT_TIMEOUT)
        .name(format!("nimbus-source-{}", ctx.mapping));
    let endpoint = endpoints_label(ctx);
    opts.connect(addrs).await.map_err(|e| match e.kind() {
        ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
            SourceError::Auth(format!(
                "NATS at {endpoint} refused the credentials{}: check the mapping's secret",
                ctx.credentials
                    .as_ref()
                    .and_then(|c| c.username.as_deref())
                    .map(|u| format!(" of user {u}"))
                    .unwrap_or_default()
            ))
        }
        ConnectErrorKind::ServerParse => {
            SourceError::Config(format!("invalid NATS endpoint {endpoint}: {e}"))
        }
        ConnectErrorKind::Tls => SourceError::Config(format!("TLS with NATS at {endpoint}: {e}")),
        _ => SourceError::Unreachable {
            endpoint: endpoint.clone(),
            reason: e.to_string(),
        },
    })
}

/// Waits until the server has what was published, for at most [`CONNECT_TIMEOUT`] (the
/// client buffers while it reconnects on its own; the runner should reconnect instead).
async fn flush(client: &Client, what: &str) -> Result<()> {
    match tokio::time::timeout(CONNECT_TIMEOUT, client.flush()).await {
        Ok(r) => r.map_err(|e| broker(what, e)),
        Err(_) => Err(broker(what, "no answer from the server (connection lost?)")),
    }
}

fn broker(what: &str, e: impl std::fmt::Display) -> SourceError {
    SourceError::Broker(format!("NATS {what}: {e}"))
}

/// Base64 (standard alphabet) of a payload.
fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `{"Name": ["v1", "v2"]}` and the `traceparent` header's first value, if any.
fn headers_json(headers: Option<&HeaderMap>) -> (Value, Option<String>) {
    let mut out = Map::new();
    let mut trace = None;
    if let Some(h) = headers {
        for (name, values) in h.iter() {
            let name: &str = name.as_ref();
            let vals: Vec<Value> = values
                .iter()
                .map(|v| Value::String(v.as_str().to_string()))
                .collect();
            if trace.is_none() && name.eq_ignore_ascii_case("traceparent") {
                trace = values.first().map(|v| v.as_str().to_string());
            }
            out.insert(name.to_string(), Value::Array(vals));
        }
    }
    (Value::Object(out), trace)
}

/// RFC 3339 in UTC with milliseconds (`2026-12-05T04:26:31.123Z`).
pub(crate) fn rfc3339_ms(ms: i64) -> String {
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&fmt).ok())
        .unwrap_or_default()
}

/// A connection generation counter shared by both sources.
#[derive(Default)]
struct Generations(AtomicU64);

impl Generations {
    fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

// ---------------------------------------------------------------------------------------
// JetStream
// ---------------------------------------------------------------------------------------

/// A durable JetStream pull consumer (at least once).
pub struct JetStreamSource {
    ctx: Context,
    ack_wait: Duration,
    /// Option `create_stream`: create the stream when it does not exist.
    create_stream: bool,
    conn: Mutex<Option<Arc<JsConn>>>,
    generations: Generations,
}

/// One connection and the consumer bound on it.
struct JsConn {
    generation: u64,
    client: Client,
    js: jetstream::Context,
    consumer: Consumer<pull::Config>,
    stream: String,
    consumer_name: String,
    /// The one inbox subscription (`PREFIX.*`) every pull request of this connection is
    /// answered on: messages a dropped poll had asked for wait here for the next poll
    /// instead of being lost until `ack_wait` (cancellation safety).
    inbox: tokio::sync::Mutex<Subscriber>,
    inbox_prefix: String,
    requests: AtomicU64,
}

/// What a JetStream record needs to be settled: its ack subject, valid on the connection
/// of `generation` only (by the contract with the runner).
struct JsHandle {
    generation: u64,
    reply: Subject,
}

/// Parts of one JetStream message needed for its record (pure, for unit tests).
struct JsParts<'a> {
    stream: &'a str,
    consumer: &'a str,
    subject: &'a str,
    payload: &'a [u8],
    headers: Option<&'a HeaderMap>,
    sequence: u64,
    delivered: i64,
    published_ms: i64,
}

/// The record's `data` and `trace` of a JetStream message.
fn js_record_data(p: &JsParts<'_>) -> (Value, Option<String>) {
    let (headers, trace) = headers_json(p.headers);
    let data = json!({
        "eventID": p.sequence.to_string(),
        "eventSource": Kind::Nats.event_source(),
        "eventSourceARN": format!("arn:nimbus:nats:us-east-1:000000000000:stream/{}", p.stream),
        "subject": p.subject,
        "data": b64(p.payload),
        "headers": headers,
        "stream": p.stream,
        "consumer": p.consumer,
        "sequence": p.sequence,
        "deliveredCount": p.delivered,
        "timestamp": rfc3339_ms(p.published_ms),
    });
    (data, trace)
}

impl JetStreamSource {
    /// Reads the options (`stream`, `create_stream`, `ack_wait_s`); connects only in
    /// [`Source::connect`].
    pub fn new(ctx: Context) -> Result<Self> {
        let ack_wait = match ctx.spec.option("ack_wait_s") {
            None => Duration::from_secs(30),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(s) if (1..=86_400).contains(&s) => Duration::from_secs(s),
                _ => {
                    return Err(SourceError::Config(format!(
                        "option ack_wait_s must be 1-86400 seconds, not {v:?}"
                    )))
                }
            },
        };
        let create_stream =
            match ctx.spec.option("create_stream") {
                None | Some("false") => false,
                Some("true") if ctx.spec.option("stream").is_some() => true,
                Some("true") => return Err(SourceError::Config(
                    "option create_stream needs option stream (the name of the stream to create)"
                        .into(),
                )),
                Some(v) => {
                    return Err(SourceError::Config(format!(
                        "option create_stream must be true or false, not {v:?}"
                    )))
                }
            };
        Ok(Self {
            ctx,
            ack_wait,
            create_stream,
            conn: Mutex::new(None),
            generations: Generations::default(),
        })
    }

    fn current(&self) -> Option<Arc<JsConn>> {
        self.conn.lock().ok().and_then(|g| g.clone())
    }

    fn current_or_err(&self) -> Result<Arc<JsConn>> {
        self.current()
            .ok_or_else(|| SourceError::Broker("the NATS source is not connected".into()))
    }

    fn max_ack_pending(&self) -> i64 {
        (self.ctx.batch_size.max(1) * self.ctx.concurrency.max(1) + PREFETCH_MARGIN) as i64
    }

    /// The stream: option `stream`, or the one holding the first subject.
    async fn find_stream(&self, js: &jetstream::Context) -> Result<JsStream> {
        let subjects = self.ctx.spec.topics.join(",");
        let first = self.ctx.spec.topics.first().cloned().unwrap_or_default();
        let name = match self.ctx.spec.option("stream") {
            Some(s) => s.to_string(),
            None => js.stream_by_subject(first.clone()).await.map_err(|e| {
                use async_nats::jetstream::context::GetStreamByNameErrorKind as K;
                match e.kind() {
                    K::NotFound => SourceError::Missing(format!(
                        "no JetStream stream holds the subject {first}: create one \
                         (nats stream add NAME --subjects '{subjects}') or name it in the \
                         option stream"
                    )),
                    K::InvalidSubject => {
                        SourceError::Config(format!("invalid NATS subject {first:?}"))
                    }
                    _ => self.request_error(e),
                }
            })?,
        };
        if self.create_stream {
            return self.create_stream(js, &name).await;
        }
        js.get_stream(&name).await.map_err(|e| {
            use async_nats::jetstream::context::GetStreamErrorKind as K;
            match e.kind() {
                K::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                    SourceError::Missing(format!(
                        "the JetStream stream {name} does not exist: create it \
                         (nats stream add {name} --subjects '{subjects}')"
                    ))
                }
                K::InvalidStreamName | K::EmptyName => {
                    SourceError::Config(format!("invalid JetStream stream name {name:?}"))
                }
                _ => self.request_error(e),
            }
        })
    }

    /// Option `create_stream`: the stream `name` as it is, or else created holding the
    /// mapping's subjects (file storage, the server's default limits).
    async fn create_stream(&self, js: &jetstream::Context, name: &str) -> Result<JsStream> {
        let config = jetstream::stream::Config {
            name: name.to_string(),
            subjects: self.ctx.spec.topics.clone(),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        };
        js.get_or_create_stream(config).await.map_err(|e| {
            use async_nats::jetstream::context::CreateStreamErrorKind as K;
            match e.kind() {
                K::InvalidStreamName | K::EmptyStreamName => {
                    SourceError::Config(format!("invalid JetStream stream name {name:?}"))
                }
                K::JetStream(_) => SourceError::Config(format!(
                    "cannot create the JetStream stream {name} for {}: {e}",
                    self.ctx.spec.topics.join(", ")
                )),
                _ => self.request_error(e),
            }
        })
    }

    /// A failed JetStream API request: no responders means JetStream is off.
    fn request_error(&self, e: impl std::fmt::Display) -> SourceError {
        let text = e.to_string();
        if text.contains("no responders") {
            SourceError::Missing(format!(
                "JetStream is not enabled on the NATS server at {} (start nats-server with -js)",
                endpoints_label(&self.ctx)
            ))
        } else {
            broker("JetStream request", text)
        }
    }

    /// The consumer config this mapping wants.
    fn desired_config(&self) -> pull::Config {
        let topics = &self.ctx.spec.topics;
        let (filter_subject, filter_subjects) = if topics.len() == 1 {
            (topics[0].clone(), Vec::new())
        } else {
            (String::new(), topics.clone())
        };
        pull::Config {
            durable_name: Some(self.ctx.group()),
            description: Some(format!("nimbus source mapping {}", self.ctx.mapping)),
            deliver_policy: match self.ctx.spec.starting_position {
                crate::model::StartingPosition::TrimHorizon => DeliverPolicy::All,
                crate::model::StartingPosition::Latest => DeliverPolicy::New,
            },
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_ack_pending: self.max_ack_pending(),
            filter_subject,
            filter_subjects,
            ..Default::default()
        }
    }

    /// Gets the durable consumer, creating it, or updating it when its filter, `ack_wait`
    /// or `max_ack_pending` differ (recreating it when the server refuses the update).
    async fn ensure_consumer(&self, stream: &JsStream) -> Result<Consumer<pull::Config>> {
        let name = self.ctx.group();
        let want = self.desired_config();
        let info = match stream.consumer_info(&name).await {
            Ok(info) => info,
            Err(e) => {
                use async_nats::jetstream::context::ConsumerInfoErrorKind as K;
                return match e.kind() {
                    K::NotFound => {
                        info!(consumer = %name, "creating the JetStream consumer");
                        stream
                            .create_consumer(want)
                            .await
                            .map_err(|e| self.consumer_error(&name, e))
                    }
                    K::InvalidName => Err(SourceError::Config(format!(
                        "invalid JetStream consumer name {name:?}"
                    ))),
                    _ => Err(broker("getting the consumer", e)),
                };
            }
        };
        if info.config.deliver_subject.is_some() {
            return Err(SourceError::Config(format!(
                "the JetStream consumer {name} is a push consumer: name another group"
            )));
        }
        let have = &info.config;
        let same_filter = sorted_filters(&have.filter_subject, &have.filter_subjects)
            == sorted_filters(&want.filter_subject, &want.filter_subjects);
        if same_filter
            && have.ack_wait == want.ack_wait
            && have.max_ack_pending == want.max_ack_pending
            && have.ack_policy == AckPolicy::Explicit
        {
            return stream
                .get_consumer::<pull::Config>(&name)
                .await
                .map_err(|e| broker("getting the consumer", e));
        }
        // Where it starts is fixed at creation: keep the existing consumer's.
        let mut update = want.clone();
        update.deliver_policy = have.deliver_policy;
        info!(consumer = %name, "updating the JetStream consumer (filter, ack wait or max ack pending changed)");
        match stream.update_consumer(update).await {
            Ok(c) => Ok(c),
            Err(e) => {
                warn!(consumer = %name, error = %e, "cannot update the JetStream consumer: recreating it (its position is lost)");
                stream
                    .delete_consumer(&name)
                    .await
                    .map_err(|e| broker("deleting the consumer", e))?;
                stream
                    .create_consumer(want)
                    .await
                    .map_err(|e| self.consumer_error(&name, e))
            }
        }
    }

    /// The server applied the filter: nats-server before 2.10 ignores `filter_subjects`
    /// and would deliver the whole stream, so several subjects are refused there.
    async fn check_filter(
        &self,
        stream: &JsStream,
        consumer: &Consumer<pull::Config>,
    ) -> Result<()> {
        let want = self.desired_config();
        let have = &consumer.cached_info().config;
        if sorted_filters(&have.filter_subject, &have.filter_subjects)
            == sorted_filters(&want.filter_subject, &want.filter_subjects)
        {
            return Ok(());
        }
        let name = self.ctx.group();
        if let Err(e) = stream.delete_consumer(&name).await {
            warn!(consumer = %name, error = %e, "cannot delete the unfiltered JetStream consumer");
        }
        Err(SourceError::Config(format!(
            "the NATS server did not apply the filter subjects {} to the JetStream consumer \
             {name}: several subjects need nats-server 2.10 or later; use one subject with a \
             wildcard, or upgrade the server",
            self.ctx.spec.topics.join(",")
        )))
    }

    fn consumer_error(&self, name: &str, e: impl std::fmt::Display) -> SourceError {
        let text = e.to_string();
        if self.ctx.spec.topics.len() > 1 && text.contains("filter") {
            return SourceError::Config(format!(
                "cannot create the JetStream consumer {name} for several subjects \
                 (needs nats-server 2.10 or later): {text}"
            ));
        }
        SourceError::Config(format!(
            "cannot create the JetStream consumer {name} on subjects {}: {text}",
            self.ctx.spec.topics.join(",")
        ))
    }

    fn record(&self, conn: &JsConn, msg: async_nats::Message) -> Option<Record> {
        let msg = jetstream::Message {
            message: msg,
            context: conn.js.clone(),
        };
        let info = match msg.info() {
            Ok(i) => i,
            Err(e) => {
                warn!(error = %e, subject = %msg.subject, "a JetStream message without a valid ack subject: skipped");
                return None;
            }
        };
        let reply = msg.reply.clone()?;
        let published_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
        let parts = JsParts {
            stream: info.stream,
            consumer: info.consumer,
            subject: msg.subject.as_str(),
            payload: &msg.payload,
            headers: msg.headers.as_ref(),
            sequence: info.stream_sequence,
            delivered: info.delivered,
            published_ms,
        };
        let (data, trace) = js_record_data(&parts);
        debug!(stream = %conn.stream, sequence = info.stream_sequence, delivered = info.delivered, "JetStream record");
        let handle = Arc::new(JsHandle {
            generation: conn.generation,
            reply,
        });
        let mut r = Record::new(info.stream_sequence.to_string(), data, published_ms, handle);
        r.trace = trace;
        Some(r)
    }

    /// Sends `kind` for the records of the current connection; others are ignored.
    async fn settle(&self, records: &[Record], kind: AckKind) -> Result<()> {
        let Some(conn) = self.current() else {
            debug!(
                count = records.len(),
                "not connected: settling nothing (redelivered after ack_wait)"
            );
            return Ok(());
        };
        let mut sent = 0usize;
        for r in records {
            match r.handle::<JsHandle>() {
                Some(h) if h.generation == conn.generation => {
                    conn.client
                        .publish(h.reply.clone(), kind.into())
                        .await
                        .map_err(|e| broker("acknowledging", e))?;
                    sent += 1;
                }
                _ => debug!(id = %r.id, "a record of an older connection: not settled"),
            }
        }
        if sent > 0 {
            flush(&conn.client, "acknowledging").await?;
        }
        Ok(())
    }
}

/// A JetStream pull request: up to `max` messages; `no_wait` with `expires` makes the
/// server answer as soon as it has some (what is there, up to `max`) or, with none, after
/// `expires`; without `expires` it answers at once.
fn pull_request(max: usize, wait: Duration) -> Vec<u8> {
    let mut req = json!({ "batch": max, "no_wait": true });
    if wait >= Duration::from_millis(1) {
        req["expires"] = json!(wait.as_nanos() as u64);
    }
    req.to_string().into_bytes()
}

fn sorted_filters(one: &str, many: &[String]) -> Vec<String> {
    let mut v: Vec<String> = many.to_vec();
    if !one.is_empty() {
        v.push(one.to_string());
    }
    v.sort();
    v.dedup();
    v
}

#[async_trait]
impl Source for JetStreamSource {
    async fn connect(&self) -> Result<()> {
        if let Ok(mut g) = self.conn.lock() {
            *g = None;
        }
        let client = connect_client(&self.ctx).await?;
        let js = jetstream::new(client.clone());
        let stream = self.find_stream(&js).await?;
        let consumer = self.ensure_consumer(&stream).await?;
        self.check_filter(&stream, &consumer).await?;
        let inbox_prefix = client.new_inbox();
        let inbox = client
            .subscribe(format!("{inbox_prefix}.*"))
            .await
            .map_err(|e| broker("subscribing to the inbox", e))?;
        let conn = JsConn {
            generation: self.generations.next(),
            js,
            client,
            stream: stream.cached_info().config.name.clone(),
            consumer_name: self.ctx.group(),
            consumer,
            inbox: tokio::sync::Mutex::new(inbox),
            inbox_prefix,
            requests: AtomicU64::new(0),
        };
        info!(stream = %conn.stream, consumer = %conn.consumer_name, "connected to JetStream");
        if let Ok(mut g) = self.conn.lock() {
            *g = Some(Arc::new(conn));
        }
        Ok(())
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let conn = self.current_or_err()?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut inbox = conn.inbox.lock().await;
        let reply = format!(
            "{}.{}",
            conn.inbox_prefix,
            conn.requests.fetch_add(1, Ordering::Relaxed) + 1
        );
        conn.client
            .publish_with_reply(
                format!(
                    "$JS.API.CONSUMER.MSG.NEXT.{}.{}",
                    conn.stream, conn.consumer_name
                ),
                reply.clone(),
                pull_request(max, wait).into(),
            )
            .await
            .map_err(|e| broker("fetching", e))?;
        let mut out = Vec::new();
        let wait_end = tokio::time::Instant::now() + wait;
        let deadline = wait_end + FETCH_GRACE;
        // The server answered this request without records (nothing now, or "Requests
        // Pending" while an earlier request still waits, e.g. at `max_ack_pending`).
        let mut answered = false;
        while out.len() < max {
            // Once records came, only as long as more keep coming (the server ends the
            // request right after what it has; messages of a dropped poll's request come
            // without an end of this one). Answered early without any: until `wait` is
            // spent, for what earlier requests still bring (and so a throttled mapping
            // does not poll in a tight loop).
            let until = if !out.is_empty() {
                deadline.min(tokio::time::Instant::now() + LINGER)
            } else if answered {
                wait_end
            } else {
                deadline
            };
            let msg = match tokio::time::timeout_at(until, inbox.next()).await {
                Ok(Some(m)) => m,
                Ok(None) => return Err(broker("fetching", "the inbox subscription ended")),
                Err(_) if out.is_empty() && !answered => {
                    return Err(broker(
                        "fetching",
                        "no answer from the server (connection lost?)",
                    ))
                }
                Err(_) => break,
            };
            match msg.status {
                None | Some(StatusCode::OK) => {
                    if let Some(r) = self.record(&conn, msg) {
                        out.push(r);
                    }
                }
                // The end of an earlier request (a dropped poll's): not ours.
                Some(_) if msg.subject.as_str() != reply => {
                    debug!(subject = %msg.subject, "status of an earlier pull request")
                }
                Some(StatusCode::IDLE_HEARTBEAT) => {}
                // No messages (now, or before `expires`), or requests pending: this
                // request is over.
                Some(StatusCode::NOT_FOUND) | Some(StatusCode::TIMEOUT) => {
                    if !out.is_empty() {
                        break;
                    }
                    debug!(description = ?msg.description, "pull request answered without messages");
                    answered = true;
                }
                Some(status) => {
                    let what = format!(
                        "pull request ended with {status} {}",
                        msg.description.as_deref().unwrap_or("")
                    );
                    if out.is_empty() {
                        return Err(broker("fetching", what));
                    }
                    warn!(reason = %what, "a JetStream fetch ended early");
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn ack(&self, records: &[Record]) -> Result<()> {
        self.settle(records, AckKind::Ack).await
    }

    /// JetStream's `term`: never redelivered (the server emits a terminated advisory).
    async fn reject(&self, records: &[Record]) -> Result<()> {
        self.settle(records, AckKind::Term).await
    }

    /// JetStream's `in progress`: restarts the record's `ack_wait`.
    async fn touch(&self, records: &[Record]) -> Result<()> {
        self.settle(records, AckKind::Progress).await
    }

    /// Deletes the durable consumer when its name was derived from the mapping (a group
    /// the user named may be shared, so it stays).
    async fn remove(&self) -> Result<()> {
        let name = self.ctx.group();
        if self.ctx.spec.group.is_some() {
            info!(consumer = %name, "mapping removed: keeping the named JetStream consumer");
            return Ok(());
        }
        if self.current().is_none() {
            match self.connect().await {
                Ok(()) => {}
                // No stream: no consumer left to delete.
                Err(SourceError::Missing(m)) => {
                    info!(consumer = %name, reason = %m, "mapping removed: nothing to delete");
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        let conn = self.current_or_err()?;
        let js = jetstream::new(conn.client.clone());
        match js.delete_consumer_from_stream(&name, &conn.stream).await {
            Ok(_) => {
                info!(consumer = %name, stream = %conn.stream, "deleted the JetStream consumer")
            }
            Err(e) => warn!(consumer = %name, error = %e, "cannot delete the JetStream consumer"),
        }
        if let Ok(mut g) = self.conn.lock() {
            *g = None;
        }
        Ok(())
    }

    async fn lag(&self) -> Option<u64> {
        let conn = self.current()?;
        let mut consumer = conn.consumer.clone();
        consumer.info().await.ok().map(|i| i.num_pending)
    }
}

// ---------------------------------------------------------------------------------------
// Core NATS
// ---------------------------------------------------------------------------------------

/// Core NATS subscriptions (at most once; see the module doc).
pub struct CoreNatsSource {
    ctx: Context,
    conn: Mutex<Option<Arc<CoreConn>>>,
    generations: Generations,
    /// Record ids: unique for the life of the source (not reset by reconnects).
    counter: Arc<AtomicU64>,
}

/// One connection, its subscription tasks and their bounded buffer.
struct CoreConn {
    _client: Client,
    buffer: Arc<Buffer>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for CoreConn {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Messages received and not polled yet; the oldest are dropped beyond `cap`.
struct Buffer {
    queue: Mutex<VecDeque<Record>>,
    cap: usize,
    notify: Notify,
    dropped: AtomicU64,
    closed: AtomicBool,
}

impl Buffer {
    fn new(cap: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::with_capacity(cap.min(1024))),
            cap: cap.max(1),
            notify: Notify::new(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    /// Adds a record, dropping the oldest when full (warned at 1, 2, 4, 8, … drops).
    fn push(&self, r: Record) {
        let mut dropped_now = false;
        if let Ok(mut q) = self.queue.lock() {
            if q.len() >= self.cap {
                q.pop_front();
                dropped_now = true;
            }
            q.push_back(r);
        }
        if dropped_now {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    dropped = n,
                    "core NATS: the function does not keep up, oldest messages dropped"
                );
            }
        }
        self.notify.notify_one();
    }

    fn take(&self, max: usize) -> Vec<Record> {
        match self.queue.lock() {
            Ok(mut q) => {
                let n = q.len().min(max);
                q.drain(..n).collect()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// The record's `data` and `trace` of a core NATS message.
fn core_record_data(
    id: u64,
    topic: &str,
    subject: &str,
    payload: &[u8],
    headers: Option<&HeaderMap>,
    received_ms: i64,
) -> (Value, Option<String>) {
    let (headers, trace) = headers_json(headers);
    let data = json!({
        "eventID": id.to_string(),
        "eventSource": Kind::NatsCore.event_source(),
        "eventSourceARN": format!("arn:nimbus:nats:us-east-1:000000000000:subject/{topic}"),
        "subject": subject,
        "data": b64(payload),
        "headers": headers,
        "timestamp": rfc3339_ms(received_ms),
    });
    (data, trace)
}

impl CoreNatsSource {
    pub fn new(ctx: Context) -> Result<Self> {
        Ok(Self {
            ctx,
            conn: Mutex::new(None),
            generations: Generations::default(),
            counter: Arc::new(AtomicU64::new(0)),
        })
    }

    fn current(&self) -> Option<Arc<CoreConn>> {
        self.conn.lock().ok().and_then(|g| g.clone())
    }

    fn capacity(&self) -> usize {
        self.ctx.batch_size.max(1) * self.ctx.concurrency.max(1) + PREFETCH_MARGIN
    }
}

/// Moves the messages of one subscription into the buffer until it ends.
fn forward(
    mut sub: async_nats::Subscriber,
    topic: String,
    buffer: Arc<Buffer>,
    counter: Arc<AtomicU64>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let id = counter.fetch_add(1, Ordering::Relaxed) + 1;
            let received = now_ms();
            let (data, trace) = core_record_data(
                id,
                &topic,
                msg.subject.as_str(),
                &msg.payload,
                msg.headers.as_ref(),
                received,
            );
            let mut r = Record::new(id.to_string(), data, received, Arc::new(()));
            r.trace = trace;
            debug!(subject = %msg.subject, id, "core NATS record");
            buffer.push(r);
        }
        warn!(subject = %topic, "core NATS subscription ended");
        buffer.closed.store(true, Ordering::Relaxed);
        buffer.notify.notify_one();
    })
}

#[async_trait]
impl Source for CoreNatsSource {
    async fn connect(&self) -> Result<()> {
        if let Ok(mut g) = self.conn.lock() {
            *g = None;
        }
        let client = connect_client(&self.ctx).await?;
        let buffer = Arc::new(Buffer::new(self.capacity()));
        let group = self.ctx.spec.option("queue_group").map(str::to_string);
        let mut tasks = Vec::new();
        for topic in &self.ctx.spec.topics {
            let sub = match &group {
                Some(g) => client.queue_subscribe(topic.clone(), g.clone()).await,
                None => client.subscribe(topic.clone()).await,
            }
            .map_err(|e| SourceError::Config(format!("cannot subscribe to {topic:?}: {e}")))?;
            tasks.push(forward(
                sub,
                topic.clone(),
                buffer.clone(),
                self.counter.clone(),
            ));
        }
        // The server has the subscriptions once the flush returns.
        flush(&client, "subscribing").await?;
        let generation = self.generations.next();
        info!(generation, subjects = %self.ctx.spec.topics.join(","), "subscribed to core NATS");
        if let Ok(mut g) = self.conn.lock() {
            *g = Some(Arc::new(CoreConn {
                _client: client,
                buffer,
                tasks,
            }));
        }
        Ok(())
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let conn = self
            .current()
            .ok_or_else(|| SourceError::Broker("the core NATS source is not connected".into()))?;
        let deadline = Instant::now() + wait;
        loop {
            let notified = conn.buffer.notify.notified();
            let got = conn.buffer.take(max);
            if !got.is_empty() {
                return Ok(got);
            }
            if conn.buffer.closed.load(Ordering::Relaxed) {
                return Err(broker("subscription", "closed by the server"));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || max == 0 {
                return Ok(Vec::new());
            }
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    /// At most once: nothing to acknowledge.
    async fn ack(&self, _records: &[Record]) -> Result<()> {
        Ok(())
    }

    /// Messages received and not handed to the runner yet.
    async fn lag(&self) -> Option<u64> {
        let conn = self.current()?;
        let n = conn.buffer.queue.lock().ok()?.len();
        Some(n as u64)
    }
}

// ---------------------------------------------------------------------------------------
// Publishers (targets)
// ---------------------------------------------------------------------------------------

/// How long a JetStream publish may wait for its PubAck.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// The target's `options.subject` (validated by [`crate::targets::Target::validate`]).
fn publish_subject(ctx: &Context) -> Result<String> {
    match ctx.spec.option("subject").map(str::trim) {
        Some(s) if !s.is_empty() => Ok(s.to_string()),
        _ => Err(SourceError::Config(
            "a NATS target needs options.subject (the subject to publish to)".into(),
        )),
    }
}

/// The message's headers as NATS headers.
fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        map.insert(k.as_str(), v.as_str());
    }
    map
}

/// Publishes to a JetStream subject (kind `nats`) and returns after the stream's PubAck:
/// a subject no stream holds is an error, not a message lost.
pub struct JetStreamPublisher {
    ctx: Context,
    subject: String,
    conn: tokio::sync::Mutex<Option<(Client, jetstream::Context)>>,
}

impl JetStreamPublisher {
    pub fn new(ctx: Context) -> Result<Self> {
        Ok(Self {
            subject: publish_subject(&ctx)?,
            ctx,
            conn: tokio::sync::Mutex::new(None),
        })
    }

    /// The stream that holds the subject (checked at connect, so a wrong target says so
    /// before any message waits on it).
    async fn check_stream(&self, js: &jetstream::Context) -> Result<String> {
        use async_nats::jetstream::context::GetStreamByNameErrorKind as K;
        js.stream_by_subject(self.subject.clone())
            .await
            .map_err(|e| match e.kind() {
                K::NotFound => self.no_stream(),
                K::InvalidSubject => {
                    SourceError::Config(format!("invalid NATS subject {:?}", self.subject))
                }
                _ if e.to_string().contains("no responders") => SourceError::Missing(format!(
                    "JetStream is not enabled on the NATS server at {} (start nats-server \
                     with -js), or use kind nats-core",
                    endpoints_label(&self.ctx)
                )),
                _ => broker("JetStream request", e),
            })
    }

    fn no_stream(&self) -> SourceError {
        SourceError::Missing(format!(
            "no JetStream stream holds the subject {}: create one (nats stream add NAME \
             --subjects '{}') or change the target's subject",
            self.subject, self.subject
        ))
    }

    /// What a failed publish means: no stream holds the subject is `Missing`.
    fn publish_error(&self, e: jetstream::context::PublishError) -> SourceError {
        use jetstream::context::PublishErrorKind as K;
        match e.kind() {
            K::StreamNotFound => self.no_stream(),
            K::TimedOut => broker("publish", "no PubAck in time (is JetStream enabled?)"),
            K::BrokenPipe => SourceError::Unreachable {
                endpoint: endpoints_label(&self.ctx),
                reason: e.to_string(),
            },
            _ => broker(&format!("publish to {}", self.subject), e),
        }
    }
}

#[async_trait]
impl crate::targets::Publisher for JetStreamPublisher {
    async fn connect(&self) -> Result<()> {
        let mut g = self.conn.lock().await;
        *g = None;
        let client = connect_client(&self.ctx).await?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(PUBLISH_TIMEOUT);
        let stream = self.check_stream(&js).await?;
        info!(subject = %self.subject, %stream, "JetStream publisher connected");
        *g = Some((client, js));
        Ok(())
    }

    async fn publish(&self, payload: &[u8], headers: &[(String, String)]) -> Result<()> {
        let js = match &*self.conn.lock().await {
            Some((_, js)) => js.clone(),
            None => return Err(broker("publish", "the publisher is not connected")),
        };
        let ack = js
            .publish_with_headers(
                self.subject.clone(),
                header_map(headers),
                payload.to_vec().into(),
            )
            .await
            .map_err(|e| self.publish_error(e))?;
        let ack = ack.await.map_err(|e| self.publish_error(e))?;
        debug!(stream = %ack.stream, seq = ack.sequence, "published to JetStream");
        Ok(())
    }
}

/// Publishes to a core NATS subject (kind `nats-core`), returning after a flush: the
/// server has the message, whether or not anyone subscribes.
pub struct CoreNatsPublisher {
    ctx: Context,
    subject: String,
    conn: tokio::sync::Mutex<Option<Client>>,
}

impl CoreNatsPublisher {
    pub fn new(ctx: Context) -> Result<Self> {
        Ok(Self {
            subject: publish_subject(&ctx)?,
            ctx,
            conn: tokio::sync::Mutex::new(None),
        })
    }
}

#[async_trait]
impl crate::targets::Publisher for CoreNatsPublisher {
    async fn connect(&self) -> Result<()> {
        let mut g = self.conn.lock().await;
        *g = None;
        let client = connect_client(&self.ctx).await?;
        info!(subject = %self.subject, "NATS publisher connected");
        *g = Some(client);
        Ok(())
    }

    async fn publish(&self, payload: &[u8], headers: &[(String, String)]) -> Result<()> {
        let client = match &*self.conn.lock().await {
            Some(c) => c.clone(),
            None => return Err(broker("publish", "the publisher is not connected")),
        };
        client
            .publish_with_headers(
                self.subject.clone(),
                header_map(headers),
                payload.to_vec().into(),
            )
            .await
            .map_err(|e| broker(&format!("publish to {}", self.subject), e))?;
        flush(&client, "flush after publish").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetstream_records_have_the_documented_shape() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        );
        h.append("X-Multi", "a");
        h.append("X-Multi", "b");
        let p = JsParts {
            stream: "ORDERS",
            consumer: "nimbus_abc",
            subject: "orders.new",
            payload: b"\x00\xffhi",
            headers: Some(&h),
            sequence: 42,
            delivered: 2,
            published_ms: 1_764_909_991_123,
        };
        let (d, trace) = js_record_data(&p);
        assert_eq!(d["eventID"], "42");
        assert_eq!(d["eventSource"], "nimbus:nats");
        assert_eq!(
            d["eventSourceARN"],
            "arn:nimbus:nats:us-east-1:000000000000:stream/ORDERS"
        );
        assert_eq!(d["data"], b64(b"\x00\xffhi"));
        assert_eq!(d["sequence"], 42);
        assert_eq!(d["deliveredCount"], 2);
        assert_eq!(d["headers"]["X-Multi"], json!(["a", "b"]));
        assert_eq!(d["timestamp"], "2025-12-05T04:46:31.123Z");
        assert_eq!(
            trace.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }

    #[test]
    fn core_records_have_no_stream_fields() {
        let (d, trace) = core_record_data(7, "a.>", "a.b", b"x", None, 0);
        assert_eq!(d["eventID"], "7");
        assert_eq!(d["subject"], "a.b");
        assert!(d.get("stream").is_none() && d.get("sequence").is_none());
        assert_eq!(d["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(trace, None);
    }

    #[test]
    fn the_core_buffer_drops_the_oldest() {
        let b = Buffer::new(2);
        for i in 0..5 {
            b.push(Record::new(i.to_string(), json!({}), 0, Arc::new(())));
        }
        let got: Vec<String> = b.take(10).into_iter().map(|r| r.id).collect();
        assert_eq!(got, ["3", "4"]);
        assert_eq!(b.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn pull_requests_wait_only_with_a_wait() {
        let r: Value =
            serde_json::from_slice(&pull_request(5, Duration::from_millis(250))).unwrap();
        assert_eq!(
            r,
            json!({"batch": 5, "no_wait": true, "expires": 250_000_000u64})
        );
        let r: Value = serde_json::from_slice(&pull_request(5, Duration::ZERO)).unwrap();
        assert_eq!(r, json!({"batch": 5, "no_wait": true}));
    }

    #[test]
    fn filters_compare_as_sets() {
        assert_eq!(
            sorted_filters("", &["b".into(), "a".into()]),
            sorted_filters("a", &["b".into()])
        );
    }

    #[test]
    fn headers_become_nats_headers() {
        let h = header_map(&[("traceparent".into(), "00-a-b-01".into())]);
        assert_eq!(h.get("traceparent").map(|v| v.as_str()), Some("00-a-b-01"));
    }
}
