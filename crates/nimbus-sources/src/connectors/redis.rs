//! The Redis Streams connector (kind `redis`): the consumer group [`Context::group`] on
//! each stream of the mapping, at least once.
//!
//! - `connect` checks every stream exists (option `create = "true"`: made with
//!   `MKSTREAM`), creates the group where missing (`$` for `LATEST`, `0` for
//!   `TRIM_HORIZON`) and starts by re-reading the consumer's own pending entries: the
//!   consumer name (option `consumer`, default `nimbus`) is stable across restarts, so what a
//!   killed Nimbus had read and not acknowledged is delivered again.
//! - `poll`: the own pending entries first (after each connect), then every
//!   `claim_after_s / 2` seconds `XAUTOCLAIM` of entries idle longer than option
//!   `claim_after_s` (default 60) from any consumer (a dead one, or a read of ours whose poll
//!   was cancelled), then new entries (`>`) with `BLOCK wait`.
//! - `ack` is `XACK`; `reject` is `XACK` too, after copying the entry's fields to option
//!   `dead_letter_stream` (`XADD`) when it is set; `touch` is `XCLAIM … JUSTID` to ourselves,
//!   which resets the idle time so `XAUTOCLAIM` leaves the entry alone.
//!
//! Record id: the entry id, or `STREAM/ID` when the mapping reads several streams.
//! Credentials: the secret's username/password (`AUTH`); the URL's db number is honoured.
//! The blocking read uses its own connection, so settling never waits behind it. A poll
//! dropped during its blocking read (cancellation) makes the next poll re-read the pending
//! list, where the entries that read took are.

use crate::error::{Result, SourceError};
use crate::model::{redact, Kind, StartingPosition};
use crate::source::{Context, Record, Source};
use async_trait::async_trait;
use base64::Engine;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, Value};
use serde_json::{json, Map, Value as Json};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// How long connecting may take before the endpoint counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Answer timeout of the non-blocking commands.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Added to a poll's `wait` before a blocking read without an answer is an error.
const READ_GRACE: Duration = Duration::from_secs(5);

/// Field name and value of a stream entry, as stored.
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A Redis Streams consumer group (see the module doc).
pub struct RedisSource {
    ctx: Context,
    consumer: String,
    claim_after: Duration,
    create: bool,
    dead_letter: Option<String>,
    conn: Mutex<Option<Arc<RedisConn>>>,
    generations: AtomicU64,
}

/// One connection (two sockets) and where reading stands on it.
struct RedisConn {
    generation: u64,
    /// Settling, claiming, `XINFO`.
    cmd: MultiplexedConnection,
    /// The blocking `XREADGROUP` only.
    read: MultiplexedConnection,
    state: tokio::sync::Mutex<ReadState>,
    /// `(stream, id)` handed to the runner and not settled yet: `XAUTOCLAIM` must not hand
    /// them out a second time while a function still works on them.
    in_flight: Mutex<HashSet<(String, String)>>,
    /// A blocking read was abandoned (its poll was dropped): entries the server handed it
    /// sit in our pending list unseen, so the next poll re-reads the pending list.
    read_cut: AtomicBool,
}

/// Sets [`RedisConn::read_cut`] when dropped before [`CutGuard::done`].
struct CutGuard<'a> {
    flag: &'a AtomicBool,
    armed: bool,
}

impl CutGuard<'_> {
    fn done(mut self) {
        self.armed = false;
    }
}

impl Drop for CutGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.flag.store(true, Ordering::Relaxed);
        }
    }
}

struct ReadState {
    /// Per stream: where re-reading our own pending entries stands (`None`: done).
    pending: Vec<Option<String>>,
    /// Per stream: the `XAUTOCLAIM` cursor (`0-0`: a pass is complete).
    claim_cursor: Vec<String>,
    next_claim: Instant,
    /// The server lacks `XAUTOCLAIM` (Redis before 6.2): only own pending entries are
    /// re-read.
    no_autoclaim: bool,
}

/// What settling a Redis record needs.
struct RedisHandle {
    generation: u64,
    stream: String,
    id: String,
    fields: Fields,
}

/// One entry of a reply; `fields` is `None` when the entry was deleted while pending.
#[derive(Debug, PartialEq)]
struct Entry {
    id: String,
    fields: Option<Fields>,
}

// ---------------------------------------------------------------------------------------
// Pure parts: reply parsing and record shape
// ---------------------------------------------------------------------------------------

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b.clone()),
        Value::SimpleString(s) => Some(s.as_bytes().to_vec()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        Value::VerbatimString { text, .. } => Some(text.as_bytes().to_vec()),
        _ => None,
    }
}

fn string_of(v: &Value) -> Option<String> {
    bytes_of(v).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `[id, [k, v, …] | nil]` entries.
fn parse_entries(v: &Value) -> Vec<Entry> {
    let items = match v {
        Value::Array(a) | Value::Set(a) => a,
        _ => return Vec::new(),
    };
    items
        .iter()
        .filter_map(|e| {
            let Value::Array(pair) = e else { return None };
            let id = string_of(pair.first()?)?;
            let fields = match pair.get(1) {
                Some(Value::Array(kv)) => Some(
                    kv.chunks(2)
                        .filter_map(|c| Some((bytes_of(c.first()?)?, bytes_of(c.get(1)?)?)))
                        .collect(),
                ),
                Some(Value::Map(kv)) => Some(
                    kv.iter()
                        .filter_map(|(k, v)| Some((bytes_of(k)?, bytes_of(v)?)))
                        .collect(),
                ),
                _ => None,
            };
            Some(Entry { id, fields })
        })
        .collect()
}

/// An `XREADGROUP` reply: `[[stream, entries], …]` (RESP2) or a map (RESP3); nil when
/// nothing came.
fn parse_read_reply(v: &Value) -> Vec<(String, Vec<Entry>)> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| {
                let Value::Array(pair) = s else { return None };
                Some((string_of(pair.first()?)?, parse_entries(pair.get(1)?)))
            })
            .collect(),
        Value::Map(streams) => streams
            .iter()
            .filter_map(|(k, v)| Some((string_of(k)?, parse_entries(v))))
            .collect(),
        _ => Vec::new(),
    }
}

/// An `XAUTOCLAIM` reply: `[next-cursor, entries, (deleted ids)]`.
fn parse_autoclaim_reply(v: &Value) -> Option<(String, Vec<Entry>)> {
    let Value::Array(parts) = v else { return None };
    Some((string_of(parts.first()?)?, parse_entries(parts.get(1)?)))
}

/// Milliseconds of an entry id (`1733372791123-0`).
fn id_ms(id: &str) -> i64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// The record's `data`: UTF-8 values in `fields`, the others base64 in `binaryFields`
/// (present only when there are some).
fn record_data(event_id: &str, stream: &str, id: &str, fields: &Fields) -> Json {
    let mut text = Map::new();
    let mut binary = Map::new();
    for (k, v) in fields {
        let key = String::from_utf8_lossy(k).into_owned();
        match std::str::from_utf8(v) {
            Ok(s) => {
                text.insert(key, Json::String(s.to_string()));
            }
            Err(_) => {
                let b = base64::engine::general_purpose::STANDARD.encode(v);
                binary.insert(key, Json::String(b));
            }
        }
    }
    let mut data = json!({
        "eventID": event_id,
        "eventSource": Kind::Redis.event_source(),
        "eventSourceARN": format!("arn:nimbus:redis:us-east-1:000000000000:stream/{stream}"),
        "stream": stream,
        "id": id,
        "fields": text,
        "timestamp": id_ms(id),
    });
    if !binary.is_empty() {
        data["binaryFields"] = Json::Object(binary);
    }
    data
}

/// A `traceparent` field, if the entry has one.
fn trace_of(fields: &Fields) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(b"traceparent"))
        .and_then(|(_, v)| String::from_utf8(v.clone()).ok())
}

// ---------------------------------------------------------------------------------------
// The source
// ---------------------------------------------------------------------------------------

impl RedisSource {
    /// Reads the options (`consumer`, `claim_after_s`, `create`, `dead_letter_stream`).
    pub fn new(ctx: Context) -> Result<Self> {
        let consumer = ctx.spec.option("consumer").unwrap_or("nimbus").to_string();
        if consumer.is_empty() || consumer.len() > 200 {
            return Err(SourceError::Config(format!(
                "invalid option consumer {consumer:?}"
            )));
        }
        let claim_after = match ctx.spec.option("claim_after_s") {
            None => Duration::from_secs(60),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(s) if (1..=86_400).contains(&s) => Duration::from_secs(s),
                _ => {
                    return Err(SourceError::Config(format!(
                        "option claim_after_s must be 1-86400 seconds, not {v:?}"
                    )))
                }
            },
        };
        let create = match ctx.spec.option("create") {
            None | Some("false") => false,
            Some("true") => true,
            Some(v) => {
                return Err(SourceError::Config(format!(
                    "option create must be \"true\" or \"false\", not {v:?}"
                )))
            }
        };
        let dead_letter = ctx
            .spec
            .option("dead_letter_stream")
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Ok(Self {
            ctx,
            consumer,
            claim_after,
            create,
            dead_letter,
            conn: Mutex::new(None),
            generations: AtomicU64::new(0),
        })
    }

    fn current(&self) -> Option<Arc<RedisConn>> {
        self.conn.lock().ok().and_then(|g| g.clone())
    }

    fn current_or_err(&self) -> Result<Arc<RedisConn>> {
        self.current()
            .ok_or_else(|| SourceError::Broker("the Redis source is not connected".into()))
    }

    fn endpoint(&self) -> String {
        endpoints_label(&self.ctx)
    }

    fn streams(&self) -> &[String] {
        &self.ctx.spec.topics
    }

    /// What a Redis error means for the runner (never quoting credentials).
    fn error(&self, what: &str, e: RedisError) -> SourceError {
        redis_error(&self.ctx, what, e)
    }

    /// The first endpoint that answers, as a client with the mapping's credentials.
    async fn open(&self) -> Result<(MultiplexedConnection, MultiplexedConnection)> {
        let mut last = None;
        for url in &self.ctx.spec.endpoints {
            let client = client_for(&self.ctx, url)?;
            let cmd_cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(Some(RESPONSE_TIMEOUT));
            let read_cfg = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(CONNECT_TIMEOUT))
                .set_response_timeout(None);
            let opened = async {
                let cmd = client
                    .get_multiplexed_async_connection_with_config(&cmd_cfg)
                    .await?;
                let read = client
                    .get_multiplexed_async_connection_with_config(&read_cfg)
                    .await?;
                Ok::<_, RedisError>((cmd, read))
            }
            .await;
            match opened {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let err = self.error("connecting", e);
                    if !err.is_transient() {
                        return Err(err);
                    }
                    warn!(endpoint = %redact(url), error = %err, "Redis endpoint unreachable");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| SourceError::Config("no Redis endpoint".into())))
    }

    /// Checks the stream exists (or creates it) and creates the group where missing.
    async fn ensure_group(&self, conn: &mut MultiplexedConnection, stream: &str) -> Result<()> {
        let group = self.ctx.group();
        let kind: String = redis::cmd("TYPE")
            .arg(stream)
            .query_async(conn)
            .await
            .map_err(|e| self.error("TYPE", e))?;
        match kind.as_str() {
            "stream" => {}
            "none" if self.create => {}
            "none" => {
                return Err(SourceError::Missing(format!(
                    "the Redis stream {stream} does not exist on {}: create it (XGROUP CREATE \
                     {stream} {group} $ MKSTREAM, or a first XADD) or set the option \
                     create = \"true\"",
                    self.endpoint()
                )))
            }
            other => {
                return Err(SourceError::Config(format!(
                    "the Redis key {stream} holds a {other}, not a stream"
                )))
            }
        }
        let start = match self.ctx.spec.starting_position {
            StartingPosition::Latest => "$",
            StartingPosition::TrimHorizon => "0",
        };
        let mut c = redis::cmd("XGROUP");
        c.arg("CREATE").arg(stream).arg(&group).arg(start);
        if self.create {
            c.arg("MKSTREAM");
        }
        match c.query_async::<Value>(conn).await {
            Ok(_) => {
                info!(stream, group = %group, start, "created the Redis consumer group");
                Ok(())
            }
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(self.error("XGROUP CREATE", e)),
        }
    }

    /// Turns entries of `stream` into records, acknowledging deleted ones, skipping those
    /// already in flight when `skip_in_flight`.
    async fn records(
        &self,
        conn: &RedisConn,
        stream: &str,
        entries: Vec<Entry>,
        skip_in_flight: bool,
        out: &mut Vec<Record>,
    ) -> Result<()> {
        let mut gone = Vec::new();
        for e in entries {
            let Some(fields) = e.fields else {
                gone.push(e.id);
                continue;
            };
            let key = (stream.to_string(), e.id.clone());
            {
                let mut inf = conn.in_flight.lock().map_err(|_| poisoned())?;
                if skip_in_flight && inf.contains(&key) {
                    continue;
                }
                inf.insert(key);
            }
            let event_id = if self.streams().len() > 1 {
                format!("{stream}/{}", e.id)
            } else {
                e.id.clone()
            };
            let data = record_data(&event_id, stream, &e.id, &fields);
            let trace = trace_of(&fields);
            debug!(stream, id = %e.id, "Redis record");
            let produced = id_ms(&e.id);
            let handle = Arc::new(RedisHandle {
                generation: conn.generation,
                stream: stream.to_string(),
                id: e.id,
                fields,
            });
            let mut r = Record::new(event_id, data, produced, handle);
            r.trace = trace;
            out.push(r);
        }
        if !gone.is_empty() {
            warn!(
                stream,
                count = gone.len(),
                "pending entries deleted from the stream: acknowledged"
            );
            self.xack(&mut conn.cmd.clone(), stream, &gone).await?;
        }
        Ok(())
    }

    async fn xack(
        &self,
        conn: &mut MultiplexedConnection,
        stream: &str,
        ids: &[String],
    ) -> Result<()> {
        redis::cmd("XACK")
            .arg(stream)
            .arg(self.ctx.group())
            .arg(ids)
            .query_async::<Value>(conn)
            .await
            .map_err(|e| self.error("XACK", e))?;
        Ok(())
    }

    /// Our own pending entries (after a connect), continuing where the last call stopped.
    async fn read_pending(
        &self,
        conn: &RedisConn,
        st: &mut ReadState,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<()> {
        let open: Vec<(usize, String)> = st
            .pending
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.clone().map(|c| (i, c)))
            .collect();
        if open.is_empty() {
            return Ok(());
        }
        let mut c = redis::cmd("XREADGROUP");
        c.arg("GROUP")
            .arg(self.ctx.group())
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max)
            .arg("STREAMS");
        for (i, _) in &open {
            c.arg(&self.streams()[*i]);
        }
        for (_, cursor) in &open {
            c.arg(cursor);
        }
        let reply: Value = c
            .query_async(&mut conn.cmd.clone())
            .await
            .map_err(|e| self.error("XREADGROUP (pending)", e))?;
        let mut by_stream: BTreeMap<String, Vec<Entry>> =
            parse_read_reply(&reply).into_iter().collect();
        for (i, _) in open {
            let stream = self.streams()[i].clone();
            let entries = by_stream.remove(&stream).unwrap_or_default();
            match entries.last() {
                None => st.pending[i] = None,
                Some(last) => st.pending[i] = Some(last.id.clone()),
            }
            if !entries.is_empty() {
                info!(stream = %stream, count = entries.len(), "re-reading pending entries");
            }
            self.records(conn, &stream, entries, true, out).await?;
        }
        Ok(())
    }

    /// `XAUTOCLAIM` of entries idle longer than `claim_after`, when due.
    async fn claim(
        &self,
        conn: &RedisConn,
        st: &mut ReadState,
        max: usize,
        out: &mut Vec<Record>,
    ) -> Result<()> {
        let busy = st.claim_cursor.iter().any(|c| c != "0-0");
        if st.no_autoclaim || (!busy && Instant::now() < st.next_claim) {
            return Ok(());
        }
        let idle_ms = self.claim_after.as_millis() as u64;
        for i in 0..self.streams().len() {
            let room = max.saturating_sub(out.len());
            if room == 0 {
                break;
            }
            let stream = self.streams()[i].clone();
            let reply: Value = match redis::cmd("XAUTOCLAIM")
                .arg(&stream)
                .arg(self.ctx.group())
                .arg(&self.consumer)
                .arg(idle_ms)
                .arg(&st.claim_cursor[i])
                .arg("COUNT")
                .arg(room)
                .query_async(&mut conn.cmd.clone())
                .await
            {
                Ok(v) => v,
                Err(e)
                    if e.to_string()
                        .to_ascii_lowercase()
                        .contains("unknown command") =>
                {
                    warn!("the Redis server lacks XAUTOCLAIM (Redis 6.2+): entries of dead consumers with other names are not taken over");
                    st.no_autoclaim = true;
                    return Ok(());
                }
                Err(e) => return Err(self.error("XAUTOCLAIM", e)),
            };
            let Some((next, entries)) = parse_autoclaim_reply(&reply) else {
                continue;
            };
            if !entries.is_empty() {
                info!(stream = %stream, count = entries.len(), "claimed idle entries");
            }
            st.claim_cursor[i] = next;
            self.records(conn, &stream, entries, true, out).await?;
        }
        if st.claim_cursor.iter().all(|c| c == "0-0") {
            st.next_claim = Instant::now() + self.claim_after / 2;
        }
        Ok(())
    }

    /// New entries, blocking up to `wait`.
    async fn read_new(
        &self,
        conn: &RedisConn,
        max: usize,
        wait: Duration,
        out: &mut Vec<Record>,
    ) -> Result<()> {
        let mut c = redis::cmd("XREADGROUP");
        c.arg("GROUP")
            .arg(self.ctx.group())
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(max);
        let ms = wait.as_millis() as u64;
        if ms > 0 {
            c.arg("BLOCK").arg(ms);
        }
        c.arg("STREAMS").arg(self.streams());
        for _ in self.streams() {
            c.arg(">");
        }
        let guard = CutGuard {
            flag: &conn.read_cut,
            armed: true,
        };
        let answer =
            tokio::time::timeout(wait + READ_GRACE, c.query_async(&mut conn.read.clone())).await;
        guard.done();
        let reply: Value = match answer {
            Ok(r) => r.map_err(|e| self.error("XREADGROUP", e))?,
            Err(_) => {
                return Err(SourceError::Unreachable {
                    endpoint: self.endpoint(),
                    reason: "no answer to a blocking read".into(),
                })
            }
        };
        for (stream, entries) in parse_read_reply(&reply) {
            self.records(conn, &stream, entries, false, out).await?;
        }
        Ok(())
    }

    /// The records of the current connection, by stream; the others are logged and left.
    fn mine<'a>(
        &self,
        conn: &RedisConn,
        records: &'a [Record],
    ) -> BTreeMap<String, Vec<&'a RedisHandle>> {
        let mut by_stream: BTreeMap<String, Vec<&RedisHandle>> = BTreeMap::new();
        for r in records {
            match r.handle::<RedisHandle>() {
                Some(h) if h.generation == conn.generation => {
                    by_stream.entry(h.stream.clone()).or_default().push(h)
                }
                _ => debug!(id = %r.id, "a record of an older connection: not settled"),
            }
        }
        by_stream
    }

    async fn settle(&self, records: &[Record]) -> Result<()> {
        let Some(conn) = self.current() else {
            return Ok(());
        };
        for (stream, hs) in self.mine(&conn, records) {
            let ids: Vec<String> = hs.iter().map(|h| h.id.clone()).collect();
            self.xack(&mut conn.cmd.clone(), &stream, &ids).await?;
            if let Ok(mut inf) = conn.in_flight.lock() {
                for id in ids {
                    inf.remove(&(stream.clone(), id));
                }
            }
        }
        Ok(())
    }
}

fn poisoned() -> SourceError {
    SourceError::Broker("internal lock poisoned".into())
}

#[async_trait]
impl Source for RedisSource {
    async fn connect(&self) -> Result<()> {
        if let Ok(mut g) = self.conn.lock() {
            *g = None;
        }
        let (mut cmd, read) = self.open().await?;
        for stream in self.streams() {
            self.ensure_group(&mut cmd, stream).await?;
        }
        let n = self.streams().len();
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let conn = RedisConn {
            generation,
            cmd,
            read,
            state: tokio::sync::Mutex::new(ReadState {
                pending: vec![Some("0".to_string()); n],
                claim_cursor: vec!["0-0".to_string(); n],
                next_claim: Instant::now(),
                no_autoclaim: false,
            }),
            in_flight: Mutex::new(HashSet::new()),
            read_cut: AtomicBool::new(false),
        };
        info!(streams = %self.streams().join(","), group = %self.ctx.group(), consumer = %self.consumer, "connected to Redis");
        if let Ok(mut g) = self.conn.lock() {
            *g = Some(Arc::new(conn));
        }
        Ok(())
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let conn = self.current_or_err()?;
        let mut out = Vec::new();
        if max == 0 {
            return Ok(out);
        }
        let mut st = conn.state.lock().await;
        if conn.read_cut.swap(false, Ordering::Relaxed) {
            debug!("a blocking read was abandoned: re-reading the pending list");
            st.pending = vec![Some("0".to_string()); self.streams().len()];
        }
        self.read_pending(&conn, &mut st, max, &mut out).await?;
        if !out.is_empty() {
            return Ok(out);
        }
        self.claim(&conn, &mut st, max, &mut out).await?;
        if !out.is_empty() {
            return Ok(out);
        }
        self.read_new(&conn, max, wait, &mut out).await?;
        Ok(out)
    }

    async fn ack(&self, records: &[Record]) -> Result<()> {
        self.settle(records).await
    }

    /// Copies the entries to `dead_letter_stream` (when set), then acknowledges them.
    async fn reject(&self, records: &[Record]) -> Result<()> {
        let Some(conn) = self.current() else {
            return Ok(());
        };
        if let Some(dl) = &self.dead_letter {
            for hs in self.mine(&conn, records).values() {
                for h in hs {
                    if h.fields.is_empty() {
                        continue;
                    }
                    let mut c = redis::cmd("XADD");
                    c.arg(dl).arg("*");
                    for (k, v) in &h.fields {
                        c.arg(k).arg(v);
                    }
                    c.query_async::<Value>(&mut conn.cmd.clone())
                        .await
                        .map_err(|e| self.error("XADD to the dead-letter stream", e))?;
                    warn!(stream = %h.stream, id = %h.id, dead_letter = %dl, "entry dead-lettered");
                }
            }
        }
        self.settle(records).await
    }

    /// `XCLAIM … JUSTID` to ourselves: resets the idle time.
    async fn touch(&self, records: &[Record]) -> Result<()> {
        let Some(conn) = self.current() else {
            return Ok(());
        };
        for (stream, hs) in self.mine(&conn, records) {
            let ids: Vec<&str> = hs.iter().map(|h| h.id.as_str()).collect();
            redis::cmd("XCLAIM")
                .arg(&stream)
                .arg(self.ctx.group())
                .arg(&self.consumer)
                .arg(0)
                .arg(&ids)
                .arg("JUSTID")
                .query_async::<Value>(&mut conn.cmd.clone())
                .await
                .map_err(|e| self.error("XCLAIM", e))?;
        }
        Ok(())
    }

    /// Destroys the group when its name was derived from the mapping (a group the user
    /// named may be shared, so it stays): its pending list would use memory forever.
    async fn remove(&self) -> Result<()> {
        let group = self.ctx.group();
        if self.ctx.spec.group.is_some() {
            info!(group = %group, "mapping removed: keeping the named Redis consumer group");
            return Ok(());
        }
        let (mut cmd, _read) = self.open().await?;
        for stream in self.streams() {
            match redis::cmd("XGROUP")
                .arg("DESTROY")
                .arg(stream)
                .arg(&group)
                .query_async::<Value>(&mut cmd)
                .await
            {
                Ok(_) => {
                    info!(stream = %stream, group = %group, "destroyed the Redis consumer group")
                }
                Err(e) => {
                    warn!(stream = %stream, group = %group, error = %e, "cannot destroy the Redis consumer group")
                }
            }
        }
        if let Ok(mut g) = self.conn.lock() {
            *g = None;
        }
        Ok(())
    }

    /// The sum of `XINFO GROUPS … lag` over the streams (Redis 7+; `None` when unknown).
    async fn lag(&self) -> Option<u64> {
        let conn = self.current()?;
        let group = self.ctx.group();
        let mut total = 0u64;
        for stream in self.streams() {
            let reply: Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(stream)
                .query_async(&mut conn.cmd.clone())
                .await
                .ok()?;
            total += group_lag(&reply, &group)?;
        }
        Some(total)
    }
}

/// The `lag` of `group` in an `XINFO GROUPS` reply.
fn group_lag(reply: &Value, group: &str) -> Option<u64> {
    let Value::Array(groups) = reply else {
        return None;
    };
    for g in groups {
        let pairs: Vec<(String, &Value)> = match g {
            Value::Array(kv) => kv
                .chunks(2)
                .filter_map(|c| Some((string_of(c.first()?)?, c.get(1)?)))
                .collect(),
            Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| Some((string_of(k)?, v)))
                .collect(),
            _ => continue,
        };
        let name = pairs
            .iter()
            .find(|(k, _)| k == "name")
            .and_then(|(_, v)| string_of(v));
        if name.as_deref() == Some(group) {
            return match pairs.iter().find(|(k, _)| k == "lag").map(|(_, v)| *v) {
                Some(Value::Int(n)) => u64::try_from(*n).ok(),
                _ => None,
            };
        }
    }
    None
}

/// The endpoints for messages (no passwords: see [`redact`]).
fn endpoints_label(ctx: &Context) -> String {
    ctx.spec
        .endpoints
        .iter()
        .map(|e| redact(e))
        .collect::<Vec<_>>()
        .join(",")
}

/// What a Redis error means for the runner (never quoting credentials).
fn redis_error(ctx: &Context, what: &str, e: RedisError) -> SourceError {
    let code = e.code().unwrap_or("");
    if e.kind() == ErrorKind::AuthenticationFailed || matches!(code, "WRONGPASS" | "NOAUTH") {
        let user = ctx
            .credentials
            .as_ref()
            .and_then(|c| c.username.as_deref())
            .map(|u| format!(" of user {u}"))
            .unwrap_or_default();
        return SourceError::Auth(format!(
            "Redis at {} refused the credentials{user} ({code}): check the mapping's secret",
            endpoints_label(ctx)
        ));
    }
    if code == "NOPERM" {
        return SourceError::Auth(format!("the Redis user lacks a permission for {what}: {e}"));
    }
    if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() || e.is_connection_dropped() {
        return SourceError::Unreachable {
            endpoint: endpoints_label(ctx),
            reason: e.to_string(),
        };
    }
    SourceError::Broker(format!("Redis {what}: {e}"))
}

/// A client for `url` with the mapping's (or target's) credentials; the URL's db number
/// is honoured.
fn client_for(ctx: &Context, url: &str) -> Result<redis::Client> {
    let info = redis::IntoConnectionInfo::into_connection_info(url)
        .map_err(|e| SourceError::Config(format!("invalid Redis endpoint {}: {e}", redact(url))))?;
    let mut settings = info.redis_settings().clone();
    if let Some(c) = &ctx.credentials {
        if let Some(u) = &c.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &c.password {
            settings = settings.set_password(p);
        }
    }
    let info = info.set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| redis_error(ctx, "connecting", e))
}

// ---------------------------------------------------------------------------------------
// Publisher (targets)
// ---------------------------------------------------------------------------------------

/// `XADD options.stream [MAXLEN ~ options.maxlen] * body <payload> [header value …]`:
/// the reply (the entry id) means Redis has it.
pub struct RedisPublisher {
    ctx: Context,
    stream: String,
    maxlen: Option<u64>,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
}

impl RedisPublisher {
    pub fn new(ctx: Context) -> Result<Self> {
        let stream = match ctx.spec.option("stream").map(str::trim) {
            Some(s) if !s.is_empty() => s.to_string(),
            _ => {
                return Err(SourceError::Config(
                    "a redis target needs options.stream (the stream to XADD to)".into(),
                ))
            }
        };
        let maxlen = match ctx.spec.option("maxlen") {
            None => None,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(SourceError::Config(format!(
                        "options.maxlen must be a positive number of entries, not {v:?}"
                    )))
                }
            },
        };
        Ok(Self {
            ctx,
            stream,
            maxlen,
            conn: tokio::sync::Mutex::new(None),
        })
    }
}

/// The `XADD` command for one message; headers named `body` are left out (the payload's
/// field).
fn xadd_command(
    stream: &str,
    maxlen: Option<u64>,
    payload: &[u8],
    headers: &[(String, String)],
) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(stream);
    if let Some(n) = maxlen {
        cmd.arg("MAXLEN").arg("~").arg(n);
    }
    cmd.arg("*").arg("body").arg(payload);
    for (k, v) in headers {
        if k != "body" {
            cmd.arg(k).arg(v);
        }
    }
    cmd
}

#[async_trait]
impl crate::targets::Publisher for RedisPublisher {
    async fn connect(&self) -> Result<()> {
        let mut g = self.conn.lock().await;
        *g = None;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut last = None;
        for url in &self.ctx.spec.endpoints {
            let client = client_for(&self.ctx, url)?;
            match client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
            {
                Ok(c) => {
                    debug!(stream = %self.stream, "Redis publisher connected");
                    *g = Some(c);
                    return Ok(());
                }
                Err(e) => {
                    let err = redis_error(&self.ctx, "connecting", e);
                    if !err.is_transient() {
                        return Err(err);
                    }
                    warn!(endpoint = %redact(url), error = %err, "Redis endpoint unreachable");
                    last = Some(err);
                }
            }
        }
        Err(last.unwrap_or_else(|| SourceError::Config("no Redis endpoint".into())))
    }

    async fn publish(&self, payload: &[u8], headers: &[(String, String)]) -> Result<()> {
        let mut conn = match &*self.conn.lock().await {
            Some(c) => c.clone(),
            None => {
                return Err(SourceError::Broker(
                    "the Redis publisher is not connected".into(),
                ))
            }
        };
        let id: String = xadd_command(&self.stream, self.maxlen, payload, headers)
            .query_async(&mut conn)
            .await
            .map_err(|e| redis_error(&self.ctx, &format!("XADD to {}", self.stream), e))?;
        debug!(stream = %self.stream, %id, "published to Redis");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn read_replies_parse_with_deleted_entries() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"orders"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk(b"1733372791123-0"),
                    Value::Array(vec![bulk(b"k"), bulk(b"v")]),
                ]),
                Value::Array(vec![bulk(b"1733372791124-0"), Value::Nil]),
            ]),
        ])]);
        let got = parse_read_reply(&reply);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "orders");
        assert_eq!(
            got[0].1,
            vec![
                Entry {
                    id: "1733372791123-0".into(),
                    fields: Some(vec![(b"k".to_vec(), b"v".to_vec())])
                },
                Entry {
                    id: "1733372791124-0".into(),
                    fields: None
                }
            ]
        );
        assert!(parse_read_reply(&Value::Nil).is_empty());
        let claim = Value::Array(vec![
            bulk(b"0-0"),
            Value::Array(vec![]),
            Value::Array(vec![]),
        ]);
        assert_eq!(parse_autoclaim_reply(&claim), Some(("0-0".into(), vec![])));
    }

    #[test]
    fn records_split_text_and_binary_fields() {
        let fields: Fields = vec![
            (b"name".to_vec(), b"ada".to_vec()),
            (b"blob".to_vec(), vec![0xff, 0x00]),
            (b"traceparent".to_vec(), b"00-abc-def-01".to_vec()),
        ];
        let d = record_data("s/1733372791123-0", "s", "1733372791123-0", &fields);
        assert_eq!(d["eventID"], "s/1733372791123-0");
        assert_eq!(d["eventSource"], "nimbus:redis");
        assert_eq!(
            d["eventSourceARN"],
            "arn:nimbus:redis:us-east-1:000000000000:stream/s"
        );
        assert_eq!(d["fields"]["name"], "ada");
        assert!(d["fields"].get("blob").is_none());
        assert_eq!(d["binaryFields"]["blob"], "/wA=");
        assert_eq!(d["timestamp"], 1_733_372_791_123i64);
        assert_eq!(trace_of(&fields).as_deref(), Some("00-abc-def-01"));
        let d = record_data("1-0", "s", "1-0", &vec![(b"a".to_vec(), b"b".to_vec())]);
        assert!(d.get("binaryFields").is_none());
    }

    #[test]
    fn group_lag_is_read_from_xinfo() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                bulk(b"name"),
                bulk(b"other"),
                bulk(b"lag"),
                Value::Int(9),
            ]),
            Value::Array(vec![bulk(b"name"), bulk(b"g"), bulk(b"lag"), Value::Int(3)]),
        ]);
        assert_eq!(group_lag(&reply, "g"), Some(3));
        assert_eq!(group_lag(&reply, "none"), None);
    }

    use super::super::target_ctx;

    #[test]
    fn xadd_commands_carry_maxlen_body_and_headers() {
        let h = vec![
            ("traceparent".to_string(), "00-a-b-01".to_string()),
            ("body".to_string(), "clash".to_string()),
        ];
        let packed =
            String::from_utf8_lossy(&xadd_command("s", Some(10), b"hi", &h).get_packed_command())
                .into_owned();
        let args: Vec<&str> = packed
            .split("\r\n")
            .filter(|l| !l.is_empty() && !l.starts_with('$') && (*l == "*" || !l.starts_with('*')))
            .collect();
        assert_eq!(
            args,
            [
                "XADD",
                "s",
                "MAXLEN",
                "~",
                "10",
                "*",
                "body",
                "hi",
                "traceparent",
                "00-a-b-01"
            ]
        );
        let packed =
            String::from_utf8_lossy(&xadd_command("s", None, b"hi", &[]).get_packed_command())
                .into_owned();
        assert!(!packed.contains("MAXLEN"));
    }

    #[test]
    fn redis_targets_need_a_stream_and_a_sane_maxlen() {
        use crate::model::Kind;
        assert!(RedisPublisher::new(target_ctx(Kind::Redis, &[])).is_err());
        let e = RedisPublisher::new(target_ctx(Kind::Redis, &[("stream", "s"), ("maxlen", "0")]));
        assert!(e.err().is_some_and(|e| e.to_string().contains("maxlen")));
        let p = RedisPublisher::new(target_ctx(Kind::Redis, &[("stream", "s"), ("maxlen", "5")]))
            .unwrap();
        assert_eq!((p.stream.as_str(), p.maxlen), ("s", Some(5)));
    }
}
