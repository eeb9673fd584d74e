//! Built-in queues and their event-source mappings (`DATA_DIR/queues.db`, WAL,
//! `synchronous=FULL`: a message acknowledged to its sender survives `kill -9`).
//!
//! SQS semantics: a received message is hidden for the visibility timeout and gets a new
//! receipt handle each time; deleting needs the current handle. A queue with a redrive
//! policy moves a message to its dead-letter queue, atomically, instead of delivering it a
//! `maxReceiveCount + 1`-th time.

use crate::backlog::{Backlog, BacklogLimit};
use crate::db::Db;
use crate::sqlite::open_db;
use crate::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE queues (
    name                 TEXT PRIMARY KEY NOT NULL,
    visibility_timeout_s INTEGER NOT NULL,
    max_message_size     INTEGER NOT NULL,
    retention_s          INTEGER NOT NULL,
    dead_letter_queue    TEXT,
    max_receive_count    INTEGER,
    created_ms           INTEGER NOT NULL
) STRICT;
CREATE TABLE messages (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    queue            TEXT NOT NULL,
    body             TEXT NOT NULL,
    attributes       TEXT NOT NULL,
    md5              TEXT NOT NULL,
    sent_ms          INTEGER NOT NULL,
    receive_count    INTEGER NOT NULL,
    first_receive_ms INTEGER,
    visible_at_ms    INTEGER NOT NULL,
    receipt          TEXT
) STRICT;
CREATE INDEX messages_visible ON messages(queue, visible_at_ms);
CREATE UNIQUE INDEX messages_receipt ON messages(receipt) WHERE receipt IS NOT NULL;
CREATE TABLE mappings (
    uuid              TEXT PRIMARY KEY NOT NULL,
    queue             TEXT NOT NULL,
    function          TEXT NOT NULL,
    batch_size        INTEGER NOT NULL,
    window_s          INTEGER NOT NULL,
    enabled           INTEGER NOT NULL,
    report_failures   INTEGER NOT NULL,
    last_modified_s   INTEGER NOT NULL
) STRICT;
",
    "
ALTER TABLE mappings ADD COLUMN filters TEXT NOT NULL DEFAULT '[]';
",
    "
CREATE INDEX messages_sent ON messages(queue, sent_ms);
",
    // Messages per queue, for the backlog limit (see crate::backlog).
    "
CREATE TABLE backlog (
    owner TEXT PRIMARY KEY NOT NULL,
    items INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) STRICT;
INSERT INTO backlog (owner, items, bytes)
    SELECT queue, COUNT(*), SUM(length(CAST(body AS BLOB))) FROM messages GROUP BY queue;
CREATE TRIGGER backlog_add AFTER INSERT ON messages
BEGIN
    INSERT INTO backlog (owner, items, bytes) VALUES (NEW.queue, 1, length(CAST(NEW.body AS BLOB)))
        ON CONFLICT(owner) DO UPDATE SET items = items + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER backlog_move AFTER UPDATE OF queue ON messages WHEN OLD.queue <> NEW.queue
BEGIN
    UPDATE backlog SET items = items - 1, bytes = bytes - length(CAST(OLD.body AS BLOB))
        WHERE owner = OLD.queue;
    INSERT INTO backlog (owner, items, bytes) VALUES (NEW.queue, 1, length(CAST(NEW.body AS BLOB)))
        ON CONFLICT(owner) DO UPDATE SET items = items + 1, bytes = bytes + excluded.bytes;
END;
CREATE TRIGGER backlog_remove AFTER DELETE ON messages
BEGIN
    UPDATE backlog SET items = items - 1, bytes = bytes - length(CAST(OLD.body AS BLOB))
        WHERE owner = OLD.queue;
END;
",
    // Each message's trace context (SQS's `AWSTraceHeader` system attribute).
    "ALTER TABLE messages ADD COLUMN trace TEXT;",
    // The rest of SQS's queue attributes (the SQS API), and when settings last changed.
    "
ALTER TABLE queues ADD COLUMN delay_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN receive_wait_s INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN redrive_allow TEXT;
ALTER TABLE queues ADD COLUMN tags TEXT NOT NULL DEFAULT '{}';
ALTER TABLE queues ADD COLUMN modified_ms INTEGER NOT NULL DEFAULT 0;
UPDATE queues SET modified_ms = created_ms;
ALTER TABLE messages ADD COLUMN sender TEXT;
",
    // FIFO queues (see crate::fifo): their settings, each message's group and
    // deduplication id, the head of each message group (kept by triggers, so a receive
    // looks at groups, not at every message), the deduplication ids of the last 5 minutes
    // and the ReceiveRequestAttemptIds of the last 5 minutes.
    "
ALTER TABLE queues ADD COLUMN fifo INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN content_dedup INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN dedup_scope TEXT NOT NULL DEFAULT 'queue';
ALTER TABLE queues ADD COLUMN throughput_limit TEXT NOT NULL DEFAULT 'perQueue';
ALTER TABLE messages ADD COLUMN group_id TEXT;
ALTER TABLE messages ADD COLUMN dedup_id TEXT;
CREATE INDEX messages_group ON messages(queue, group_id, seq) WHERE group_id IS NOT NULL;
CREATE INDEX messages_group_busy ON messages(queue, group_id, visible_at_ms)
    WHERE group_id IS NOT NULL AND receipt IS NOT NULL;
CREATE TABLE fifo_groups (
    queue    TEXT NOT NULL,
    group_id TEXT NOT NULL,
    head_seq INTEGER NOT NULL,
    PRIMARY KEY (queue, group_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX fifo_groups_order ON fifo_groups(queue, head_seq);
CREATE TRIGGER fifo_group_add AFTER INSERT ON messages WHEN NEW.group_id IS NOT NULL
BEGIN
    INSERT INTO fifo_groups (queue, group_id, head_seq) VALUES (NEW.queue, NEW.group_id, NEW.seq)
        ON CONFLICT(queue, group_id) DO UPDATE SET head_seq = MIN(head_seq, excluded.head_seq);
END;
CREATE TRIGGER fifo_group_remove AFTER DELETE ON messages WHEN OLD.group_id IS NOT NULL
BEGIN
    DELETE FROM fifo_groups WHERE queue = OLD.queue AND group_id = OLD.group_id
        AND NOT EXISTS (SELECT 1 FROM messages WHERE queue = OLD.queue AND group_id = OLD.group_id);
    UPDATE fifo_groups SET head_seq =
            (SELECT MIN(seq) FROM messages WHERE queue = OLD.queue AND group_id = OLD.group_id)
        WHERE queue = OLD.queue AND group_id = OLD.group_id AND head_seq = OLD.seq;
END;
CREATE TRIGGER fifo_group_move AFTER UPDATE OF queue ON messages
    WHEN OLD.group_id IS NOT NULL AND OLD.queue <> NEW.queue
BEGIN
    DELETE FROM fifo_groups WHERE queue = OLD.queue AND group_id = OLD.group_id
        AND NOT EXISTS (SELECT 1 FROM messages WHERE queue = OLD.queue AND group_id = OLD.group_id);
    UPDATE fifo_groups SET head_seq =
            (SELECT MIN(seq) FROM messages WHERE queue = OLD.queue AND group_id = OLD.group_id)
        WHERE queue = OLD.queue AND group_id = OLD.group_id AND head_seq = OLD.seq;
    INSERT INTO fifo_groups (queue, group_id, head_seq) VALUES (NEW.queue, NEW.group_id, NEW.seq)
        ON CONFLICT(queue, group_id) DO UPDATE SET head_seq = MIN(head_seq, excluded.head_seq);
END;
CREATE TABLE fifo_dedup (
    queue      TEXT NOT NULL,
    scope      TEXT NOT NULL,
    dedup_id   TEXT NOT NULL,
    message_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (queue, scope, dedup_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX fifo_dedup_expiry ON fifo_dedup(queue, expires_ms);
CREATE TABLE receive_attempts (
    queue      TEXT NOT NULL,
    attempt_id TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    messages   TEXT NOT NULL,
    PRIMARY KEY (queue, attempt_id)
) STRICT, WITHOUT ROWID;
",
];

/// Largest batch of `send` and `receive`, as SQS.
pub const MAX_BATCH: usize = 10;

/// Largest message, and largest batch of messages, in bytes: SQS's 1 MiB (since 2025).
pub const MAX_MESSAGE_BYTES: u32 = 1024 * 1024;

/// Whether `receipt` has the form of the receipt handles [`QueueStore::receive`] gives
/// (`MESSAGE-UUID.32-HEX`), stale or not.
pub fn is_receipt_handle(receipt: &str) -> bool {
    let Some((id, tail)) = receipt.split_once('.') else {
        return false;
    };
    uuid::Uuid::parse_str(id).is_ok()
        && tail.len() == 32
        && tail.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where a queue sends messages received too often.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    pub dead_letter_queue: String,
    pub max_receive_count: u32,
}

/// A queue's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueSettings {
    pub visibility_timeout_s: u32,
    pub max_message_size: u32,
    pub retention_s: u32,
    pub redrive: Option<RedrivePolicy>,
    /// Delay of messages sent without one (SQS's `DelaySeconds`, 0-900).
    pub delay_s: u32,
    /// Long-polling wait of receives that give none (`ReceiveMessageWaitTimeSeconds`, 0-20).
    pub receive_wait_s: u32,
    /// SQS's `RedriveAllowPolicy` JSON text: which queues may use this one as their
    /// dead-letter queue (`None`: all).
    pub redrive_allow: Option<String>,
    /// SQS queue tags.
    pub tags: std::collections::BTreeMap<String, String>,
    /// A FIFO queue (SQS's `FifoQueue`; its name ends in `.fifo`); fixed at creation.
    pub fifo: bool,
    /// FIFO: a message sent without a deduplication id gets the SHA-256 of its body
    /// (`ContentBasedDeduplication`).
    pub content_based_dedup: bool,
    /// FIFO: `DeduplicationScope`.
    pub dedup_scope: DedupScope,
    /// FIFO: `FifoThroughputLimit` (kept and reported; Nimbus does not throttle).
    pub throughput_limit: ThroughputLimit,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            visibility_timeout_s: 30,
            max_message_size: MAX_MESSAGE_BYTES,
            retention_s: 4 * 24 * 3600,
            redrive: None,
            delay_s: 0,
            receive_wait_s: 0,
            redrive_allow: None,
            tags: Default::default(),
            fifo: false,
            content_based_dedup: false,
            dedup_scope: DedupScope::Queue,
            throughput_limit: ThroughputLimit::PerQueue,
        }
    }
}

impl QueueSettings {
    /// SQS's bounds.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(StoreError::InvalidInput(m));
        if self.visibility_timeout_s > 12 * 3600 {
            return bad("visibility_timeout must be 0-43200 seconds".into());
        }
        if !(1024..=MAX_MESSAGE_BYTES).contains(&self.max_message_size) {
            return bad(format!(
                "max_message_size must be 1024-{MAX_MESSAGE_BYTES} bytes"
            ));
        }
        if self.delay_s > 900 {
            return bad("delay must be 0-900 seconds".into());
        }
        if self.receive_wait_s > 20 {
            return bad("receive wait must be 0-20 seconds".into());
        }
        if self.tags.len() > 50 {
            return bad("a queue has at most 50 tags".into());
        }
        if !(60..=14 * 24 * 3600).contains(&self.retention_s) {
            return bad("retention must be 60-1209600 seconds".into());
        }
        if let Some(r) = &self.redrive {
            validate_queue_name(&r.dead_letter_queue)?;
            if !(1..=1000).contains(&r.max_receive_count) {
                return bad("max_receive_count must be 1-1000".into());
            }
        }
        if !self.fifo
            && (self.content_based_dedup
                || self.dedup_scope != DedupScope::Queue
                || self.throughput_limit != ThroughputLimit::PerQueue)
        {
            return bad(
                "content-based deduplication, deduplication scope and throughput limit are for FIFO queues"
                    .into(),
            );
        }
        if self.throughput_limit == ThroughputLimit::PerMessageGroupId
            && self.dedup_scope != DedupScope::MessageGroup
        {
            return bad(
                "a throughput limit per message group needs deduplication scope messageGroup"
                    .into(),
            );
        }
        Ok(())
    }
}

/// A FIFO queue's `DeduplicationScope`: whether a deduplication id is unique in the queue
/// or in its message group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DedupScope {
    #[default]
    Queue,
    MessageGroup,
}

impl DedupScope {
    /// SQS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DedupScope::Queue => "queue",
            DedupScope::MessageGroup => "messageGroup",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "queue" => Some(DedupScope::Queue),
            "messageGroup" => Some(DedupScope::MessageGroup),
            _ => None,
        }
    }
}

/// A FIFO queue's `FifoThroughputLimit`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ThroughputLimit {
    #[default]
    PerQueue,
    PerMessageGroupId,
}

impl ThroughputLimit {
    /// SQS's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ThroughputLimit::PerQueue => "perQueue",
            ThroughputLimit::PerMessageGroupId => "perMessageGroupId",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "perQueue" => Some(ThroughputLimit::PerQueue),
            "perMessageGroupId" => Some(ThroughputLimit::PerMessageGroupId),
            _ => None,
        }
    }
}

/// Queue names: 1-80 characters, letters, digits, `-` and `_`, a FIFO queue's with the
/// suffix `.fifo` (as SQS).
pub fn validate_queue_name(name: &str) -> Result<()> {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    if base.is_empty()
        || name.len() > 80
        || !base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StoreError::InvalidInput(format!(
            "invalid queue name {name:?}: use 1-80 letters, digits, '-' or '_' (and '.fifo' at the end of a FIFO queue's)"
        )));
    }
    Ok(())
}

/// Whether `name` is a FIFO queue's (ends in `.fifo`).
pub fn is_fifo_name(name: &str) -> bool {
    name.ends_with(".fifo")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueInfo {
    pub name: String,
    pub settings: QueueSettings,
    pub created_ms: i64,
    /// When its settings last changed (its creation at first).
    pub modified_ms: i64,
}

/// A message to send.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    pub body: String,
    /// SQS message attributes, already in the event shape (`{"k":{"stringValue":…}}`).
    pub attributes: serde_json::Value,
    pub delay_s: u32,
    /// The trace context sent with it, X-Ray form (SQS's `AWSTraceHeader`).
    pub trace: Option<String>,
    /// Who sent it (SQS's `SenderId`: the access key id); `None`: the account.
    pub sender: Option<String>,
    /// FIFO: its message group (required on a FIFO queue, refused on others).
    pub group_id: Option<String>,
    /// FIFO: its deduplication id (else the SHA-256 of the body with content-based
    /// deduplication).
    pub dedup_id: Option<String>,
}

/// A stored message. `receipt` is set on received messages.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    pub id: String,
    pub queue: String,
    pub body: String,
    pub attributes: serde_json::Value,
    pub md5: String,
    pub sent_ms: i64,
    pub receive_count: u32,
    pub first_receive_ms: Option<i64>,
    pub visible_at_ms: i64,
    pub receipt: Option<String>,
    /// The trace context it was sent with, X-Ray form (`AWSTraceHeader`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Who sent it (SQS's `SenderId`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    /// FIFO: its message group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// FIFO: its deduplication id (given, or the body's SHA-256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dedup_id: Option<String>,
    /// FIFO: SQS's `SequenceNumber` (a 128-bit decimal, increasing in the queue).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence_number: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    /// Ready to be received.
    pub visible: u64,
    /// Received and not yet deleted, still hidden.
    pub in_flight: u64,
    /// Sent with a delay that has not passed.
    pub delayed: u64,
}

/// One queue's depth, as [`QueueStore::all_stats`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDepth {
    pub queue: String,
    pub stats: QueueStats,
    /// When its oldest message was sent (SQS's `ApproximateAgeOfOldestMessage`).
    pub oldest_sent_ms: Option<i64>,
}

/// A mapping from a queue to a function (Lambda's event-source mapping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventSourceMapping {
    pub uuid: String,
    pub queue: String,
    pub function: String,
    pub batch_size: u32,
    pub window_s: u32,
    pub enabled: bool,
    pub report_batch_item_failures: bool,
    /// Epoch seconds.
    pub last_modified_s: i64,
    /// Lambda `FilterCriteria` patterns (EventBridge pattern JSON texts); a message matching
    /// none is deleted without invoking. Empty: every message goes to the function.
    pub filters: Vec<String>,
}

impl EventSourceMapping {
    pub fn validate(&self) -> Result<()> {
        validate_queue_name(&self.queue)?;
        if !(1..=10_000).contains(&self.batch_size) {
            return Err(StoreError::InvalidInput("BatchSize must be 1-10000".into()));
        }
        if self.window_s > 300 {
            return Err(StoreError::InvalidInput(
                "MaximumBatchingWindowInSeconds must be 0-300".into(),
            ));
        }
        if self.batch_size > 10 && self.window_s == 0 {
            return Err(StoreError::InvalidInput(
                "a BatchSize above 10 needs MaximumBatchingWindowInSeconds of at least 1".into(),
            ));
        }
        Ok(())
    }

    /// `Enabled` or `Disabled`, as Lambda reports `State`.
    pub fn state(&self) -> &'static str {
        if self.enabled {
            "Enabled"
        } else {
            "Disabled"
        }
    }
}

/// Durable queues and event-source mappings.
pub trait QueueStore: Send + Sync + 'static {
    /// Creates a queue, or updates the settings of an existing one.
    fn put_queue(&self, name: &str, settings: &QueueSettings, now_ms: i64) -> Result<QueueInfo>;
    fn get_queue(&self, name: &str) -> Result<QueueInfo>;
    fn list_queues(&self) -> Result<Vec<QueueInfo>>;
    /// Deletes the queue and its messages (`NotFound` when missing).
    fn delete_queue(&self, name: &str) -> Result<()>;
    /// Deletes every message; returns how many.
    fn purge(&self, name: &str) -> Result<u64>;
    /// Stores up to [`MAX_BATCH`] messages atomically; returns them with their ids.
    fn send(&self, name: &str, messages: &[NewMessage], now_ms: i64) -> Result<Vec<Message>>;
    /// Receives up to `max` (1-10, or up to 10000 for pollers) visible messages, oldest
    /// first, hiding each for `visibility_timeout_s` (the queue's when `None`) under a new
    /// receipt handle. Messages past the redrive limit move to the dead-letter queue instead.
    ///
    /// On a FIFO queue, messages come in order per message group; a group with a message
    /// in flight gives none, and one receive returns as many of a group's messages (in
    /// order) as it can before going on to the next group.
    fn receive(
        &self,
        name: &str,
        max: usize,
        visibility_timeout_s: Option<u32>,
        now_ms: i64,
    ) -> Result<Vec<Message>> {
        self.receive_attempt(name, max, visibility_timeout_s, None, now_ms)
    }
    /// [`receive`](Self::receive) with SQS's `ReceiveRequestAttemptId` (FIFO queues only;
    /// ignored on others): the same id within 5 minutes of the first receive returns the
    /// same messages under the same receipt handles, their visibility timeout started
    /// again, as long as none of them was deleted or had its visibility changed since;
    /// otherwise it receives anew.
    fn receive_attempt(
        &self,
        name: &str,
        max: usize,
        visibility_timeout_s: Option<u32>,
        attempt: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<Message>>;
    /// Deletes by current receipt handle; a stale or unknown handle is `InvalidInput`.
    fn delete_message(&self, name: &str, receipt: &str) -> Result<()>;
    /// Makes a received message visible again after `timeout_s` (stale handle: `InvalidInput`).
    fn change_visibility(
        &self,
        name: &str,
        receipt: &str,
        timeout_s: u32,
        now_ms: i64,
    ) -> Result<()>;
    /// Gives received messages back as if they had not been received (a throttled
    /// delivery): visible at `visible_at_ms`, receive count decremented. Stale handles are
    /// skipped.
    fn release(&self, name: &str, receipts: &[String], visible_at_ms: i64) -> Result<()>;
    /// Moves up to `max` (all when `None`) of dead-letter queue `dlq`'s messages, oldest
    /// first, to `destination` — by default the one queue whose redrive policy names `dlq`
    /// (several or none: `InvalidInput`) — in one transaction (SQS's
    /// `StartMessageMoveTask`). A moved message keeps its id, body, attributes, send time and
    /// trace context, is visible at once and starts over with no receive. Messages in flight
    /// (received, still hidden) stay.
    fn redrive(
        &self,
        dlq: &str,
        destination: Option<&str>,
        max: Option<u64>,
        now_ms: i64,
    ) -> Result<Redriven>;
    fn stats(&self, name: &str, now_ms: i64) -> Result<QueueStats>;
    /// Every queue's [`QueueStats`] and the send time of its oldest message (for the
    /// metrics: one pass over the messages).
    fn all_stats(&self, now_ms: i64) -> Result<Vec<QueueDepth>>;

    fn create_mapping(&self, m: &EventSourceMapping) -> Result<()>;
    fn get_mapping(&self, uuid: &str) -> Result<EventSourceMapping>;
    /// Replaces a mapping (`NotFound` when missing).
    fn update_mapping(&self, m: &EventSourceMapping) -> Result<()>;
    fn delete_mapping(&self, uuid: &str) -> Result<EventSourceMapping>;
    /// All mappings, oldest first.
    fn list_mappings(&self) -> Result<Vec<EventSourceMapping>>;
    /// How full the queues are against their backlog limit (the queue holding the most
    /// messages, the bytes of all).
    fn backlog(&self) -> Result<crate::BacklogUsage>;
}

/// What [`QueueStore::redrive`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redriven {
    /// The queue the messages moved to.
    pub destination: String,
    pub moved: u64,
    /// Messages still in the dead-letter queue (beyond `max`, or in flight).
    pub left: u64,
}

/// [`QueueStore::redrive`] without `destination`: the one queue whose redrive policy names
/// `dlq`.
fn redrive_source(tx: &Connection, dlq: &str) -> Result<String> {
    let mut st =
        tx.prepare_cached("SELECT name FROM queues WHERE dead_letter_queue = ?1 ORDER BY name")?;
    let sources: Vec<String> = st
        .query_map([dlq], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    match sources.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(StoreError::InvalidInput(format!(
            "no queue names {dlq} as its dead-letter queue: give a destination"
        ))),
        many => Err(StoreError::InvalidInput(format!(
            "queues {} name {dlq} as their dead-letter queue: give a destination",
            many.join(", ")
        ))),
    }
}

/// [`QueueStore`] on SQLite.
pub struct SqliteQueueStore {
    db: Mutex<Db>,
    limit: BacklogLimit,
}

impl SqliteQueueStore {
    /// Opens (or creates) `DATA_DIR/queues.db`, with no backlog limit.
    pub fn open(data_dir: &Path) -> Result<Self> {
        Ok(Self {
            db: Mutex::new(open_db(&data_dir.join("queues.db"), "FULL", MIGRATIONS)?),
            limit: BacklogLimit::UNLIMITED,
        })
    }

    /// Bounds the messages per queue and their bytes across queues: [`QueueStore::send`]
    /// beyond them is [`StoreError::Full`]. Moves to a dead-letter queue are never
    /// refused (a message is not lost to make room).
    pub fn with_limit(mut self, limit: BacklogLimit) -> Self {
        self.limit = limit;
        self
    }

    fn db(&self) -> MutexGuard<'_, Db> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub(crate) fn not_found(name: &str) -> StoreError {
    StoreError::NotFound(format!("queue not found: {name}"))
}

pub(crate) fn stale(receipt: &str) -> StoreError {
    StoreError::InvalidInput(format!(
        "receipt handle {receipt:?} is invalid or stale: the message was deleted or received again since"
    ))
}

const QUEUE_COLUMNS: &str =
    "name, visibility_timeout_s, max_message_size, retention_s, dead_letter_queue, max_receive_count, created_ms,
     delay_s, receive_wait_s, redrive_allow, tags, modified_ms, fifo, content_dedup, dedup_scope, throughput_limit";

fn decode_queue(r: &Row<'_>) -> rusqlite::Result<QueueInfo> {
    let dlq: Option<String> = r.get(4)?;
    let max: Option<i64> = r.get(5)?;
    Ok(QueueInfo {
        name: r.get(0)?,
        settings: QueueSettings {
            visibility_timeout_s: r.get::<_, i64>(1)? as u32,
            max_message_size: r.get::<_, i64>(2)? as u32,
            retention_s: r.get::<_, i64>(3)? as u32,
            redrive: dlq.zip(max).map(|(d, m)| RedrivePolicy {
                dead_letter_queue: d,
                max_receive_count: m as u32,
            }),
            delay_s: r.get::<_, i64>(7)? as u32,
            receive_wait_s: r.get::<_, i64>(8)? as u32,
            redrive_allow: r.get(9)?,
            tags: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default(),
            fifo: r.get::<_, i64>(12)? != 0,
            content_based_dedup: r.get::<_, i64>(13)? != 0,
            dedup_scope: DedupScope::parse(&r.get::<_, String>(14)?).unwrap_or_default(),
            throughput_limit: ThroughputLimit::parse(&r.get::<_, String>(15)?).unwrap_or_default(),
        },
        created_ms: r.get(6)?,
        modified_ms: r.get(11)?,
    })
}

const MESSAGE_COLUMNS: &str =
    "id, queue, body, attributes, md5, sent_ms, receive_count, first_receive_ms, visible_at_ms, receipt, trace, sender,
     group_id, dedup_id";

/// [`MESSAGE_COLUMNS`] and the row's `seq` (a FIFO message's sequence number), as
/// [`decode_message`] reads them.
pub(crate) const MESSAGE_SELECT: &str =
    "id, queue, body, attributes, md5, sent_ms, receive_count, first_receive_ms, visible_at_ms, receipt, trace, sender,
     group_id, dedup_id, seq";

pub(crate) fn decode_message(r: &Row<'_>) -> rusqlite::Result<Message> {
    let attrs: String = r.get(3)?;
    let group_id: Option<String> = r.get(12)?;
    Ok(Message {
        id: r.get(0)?,
        queue: r.get(1)?,
        body: r.get(2)?,
        attributes: serde_json::from_str(&attrs).unwrap_or(serde_json::Value::Null),
        md5: r.get(4)?,
        sent_ms: r.get(5)?,
        receive_count: r.get::<_, i64>(6)? as u32,
        first_receive_ms: r.get(7)?,
        visible_at_ms: r.get(8)?,
        receipt: r.get(9)?,
        trace: r.get(10)?,
        sender: r.get(11)?,
        sequence_number: match &group_id {
            Some(_) => Some(crate::fifo::sequence_number(r.get(14)?)),
            None => None,
        },
        group_id,
        dedup_id: r.get(13)?,
    })
}

const MAPPING_COLUMNS: &str =
    "uuid, queue, function, batch_size, window_s, enabled, report_failures, last_modified_s, filters";

fn decode_mapping(r: &Row<'_>) -> rusqlite::Result<EventSourceMapping> {
    Ok(EventSourceMapping {
        uuid: r.get(0)?,
        queue: r.get(1)?,
        function: r.get(2)?,
        batch_size: r.get::<_, i64>(3)? as u32,
        window_s: r.get::<_, i64>(4)? as u32,
        enabled: r.get::<_, i64>(5)? != 0,
        report_batch_item_failures: r.get::<_, i64>(6)? != 0,
        last_modified_s: r.get(7)?,
        filters: serde_json::from_str(&r.get::<_, String>(8)?).unwrap_or_default(),
    })
}

pub(crate) fn queue_in(tx: &Connection, name: &str) -> Result<QueueInfo> {
    tx.query_row(
        &format!("SELECT {QUEUE_COLUMNS} FROM queues WHERE name = ?1"),
        [name],
        decode_queue,
    )
    .optional()?
    .ok_or_else(|| not_found(name))
}

/// The message `m` becomes when stored in queue `name` (a new id; FIFO fields from `key`).
pub(crate) fn message_of(
    name: &str,
    m: &NewMessage,
    now_ms: i64,
    key: &crate::fifo::DedupKey,
) -> Message {
    Message {
        id: uuid::Uuid::new_v4().to_string(),
        queue: name.to_string(),
        body: m.body.clone(),
        attributes: if m.attributes.is_null() {
            serde_json::json!({})
        } else {
            m.attributes.clone()
        },
        md5: hex::encode(md5(m.body.as_bytes())),
        sent_ms: now_ms,
        receive_count: 0,
        first_receive_ms: None,
        visible_at_ms: now_ms + i64::from(m.delay_s) * 1000,
        receipt: None,
        trace: m.trace.clone(),
        sender: m.sender.clone(),
        group_id: key.group_id.clone(),
        dedup_id: key.dedup_id.clone(),
        sequence_number: None,
    }
}

/// Retention: messages older than the queue keeps them are gone.
fn expire(tx: &Connection, q: &QueueInfo, now_ms: i64) -> Result<()> {
    tx.execute(
        "DELETE FROM messages WHERE queue = ?1 AND sent_ms < ?2",
        params![q.name, now_ms - i64::from(q.settings.retention_s) * 1000],
    )?;
    Ok(())
}

/// A standard queue's receive: the oldest visible messages first.
fn receive_standard(
    tx: &Connection,
    name: &str,
    max: usize,
    visibility: i64,
    redrive: Option<&RedrivePolicy>,
    now_ms: i64,
) -> Result<Vec<Message>> {
    let mut out = Vec::new();
    loop {
        let candidates: Vec<Message> = {
            let mut st = tx.prepare_cached(&format!(
                "SELECT {MESSAGE_SELECT} FROM messages WHERE queue = ?1 AND visible_at_ms <= ?2
                 ORDER BY seq LIMIT ?3"
            ))?;
            let rows = st.query_map(
                params![name, now_ms, (max - out.len()) as i64],
                decode_message,
            )?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if candidates.is_empty() {
            break;
        }
        let mut moved = false;
        for m in candidates {
            if let Some(r) = redrive.filter(|r| m.receive_count >= r.max_receive_count) {
                dead_letter(tx, name, r, &m, now_ms)?;
                moved = true;
                continue;
            }
            out.push(deliver(tx, m, visibility, now_ms)?);
        }
        if !moved || out.len() >= max {
            break;
        }
    }
    Ok(out)
}

/// Received `maxReceiveCount` times already: `m` moves to the dead-letter queue.
pub(crate) fn dead_letter(
    tx: &Connection,
    name: &str,
    r: &RedrivePolicy,
    m: &Message,
    now_ms: i64,
) -> Result<()> {
    tx.execute(
        "UPDATE messages SET queue = ?2, receive_count = 0, first_receive_ms = NULL,
             visible_at_ms = ?3, receipt = NULL
         WHERE id = ?1",
        params![m.id, r.dead_letter_queue, now_ms],
    )?;
    tracing::info!(
        queue = name,
        dlq = %r.dead_letter_queue,
        message = %m.id,
        receives = m.receive_count,
        "message moved to the dead-letter queue"
    );
    Ok(())
}

/// Hands `m` out: hidden for `visibility` seconds under a new receipt handle.
pub(crate) fn deliver(
    tx: &Connection,
    mut m: Message,
    visibility: i64,
    now_ms: i64,
) -> Result<Message> {
    m.receive_count += 1;
    m.first_receive_ms.get_or_insert(now_ms);
    m.visible_at_ms = now_ms + visibility * 1000;
    let receipt = format!("{}.{}", m.id, uuid::Uuid::new_v4().simple());
    tx.execute(
        "UPDATE messages SET receive_count = ?2, first_receive_ms = ?3, visible_at_ms = ?4, receipt = ?5
         WHERE id = ?1",
        params![m.id, m.receive_count, m.first_receive_ms, m.visible_at_ms, receipt],
    )?;
    m.receipt = Some(receipt);
    Ok(m)
}

impl QueueStore for SqliteQueueStore {
    fn backlog(&self) -> Result<crate::BacklogUsage> {
        crate::backlog::usage(&self.db(), self.limit)
    }

    fn put_queue(&self, name: &str, settings: &QueueSettings, now_ms: i64) -> Result<QueueInfo> {
        validate_queue_name(name)?;
        settings.validate()?;
        if settings
            .redrive
            .as_ref()
            .is_some_and(|r| r.dead_letter_queue == name)
        {
            return Err(StoreError::InvalidInput(
                "a queue cannot be its own dead-letter queue".into(),
            ));
        }
        let (dlq, max) = match &settings.redrive {
            Some(r) => (
                Some(r.dead_letter_queue.clone()),
                Some(i64::from(r.max_receive_count)),
            ),
            None => (None, None),
        };
        if is_fifo_name(name) != settings.fifo {
            return Err(StoreError::InvalidInput(if settings.fifo {
                format!("a FIFO queue's name ends in .fifo: {name} does not")
            } else {
                format!("{name} ends in .fifo: only a FIFO queue's name does")
            }));
        }
        let mut db = self.db();
        let tx = db.write_tx()?;
        match queue_in(&tx, name) {
            Ok(q) if q.settings.fifo != settings.fifo => {
                return Err(StoreError::InvalidInput(
                    "a queue's type (FIFO or standard) cannot change after it is created".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        if let Some(r) = &settings.redrive {
            match queue_in(&tx, &r.dead_letter_queue) {
                Ok(d) if d.settings.fifo != settings.fifo => {
                    return Err(StoreError::InvalidInput(if settings.fifo {
                        "the dead-letter queue of a FIFO queue must be a FIFO queue".into()
                    } else {
                        "the dead-letter queue of a standard queue must be a standard queue".into()
                    }))
                }
                _ => {}
            }
        }
        let tags = serde_json::to_string(&settings.tags).unwrap_or_else(|_| "{}".into());
        tx.execute(
            "INSERT INTO queues (name, visibility_timeout_s, max_message_size, retention_s, dead_letter_queue, max_receive_count, created_ms,
                 delay_s, receive_wait_s, redrive_allow, tags, modified_ms, fifo, content_dedup, dedup_scope, throughput_limit)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?7, ?12, ?13, ?14, ?15)
             ON CONFLICT(name) DO UPDATE SET visibility_timeout_s = ?2, max_message_size = ?3,
                 retention_s = ?4, dead_letter_queue = ?5, max_receive_count = ?6, delay_s = ?8,
                 receive_wait_s = ?9, redrive_allow = ?10, tags = ?11, modified_ms = ?7,
                 content_dedup = ?13, dedup_scope = ?14, throughput_limit = ?15",
            params![
                name,
                settings.visibility_timeout_s,
                settings.max_message_size,
                settings.retention_s,
                dlq,
                max,
                now_ms,
                settings.delay_s,
                settings.receive_wait_s,
                settings.redrive_allow,
                tags,
                settings.fifo as i64,
                settings.content_based_dedup as i64,
                settings.dedup_scope.as_str(),
                settings.throughput_limit.as_str()
            ],
        )?;
        let q = queue_in(&tx, name)?;
        tx.commit()?;
        Ok(q)
    }

    fn get_queue(&self, name: &str) -> Result<QueueInfo> {
        queue_in(&self.db(), name)
    }

    fn list_queues(&self) -> Result<Vec<QueueInfo>> {
        let db = self.db();
        let mut st = db.prepare(&format!("SELECT {QUEUE_COLUMNS} FROM queues ORDER BY name"))?;
        let rows = st.query_map([], decode_queue)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn delete_queue(&self, name: &str) -> Result<()> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        if tx.execute("DELETE FROM queues WHERE name = ?1", [name])? == 0 {
            return Err(not_found(name));
        }
        tx.execute("DELETE FROM messages WHERE queue = ?1", [name])?;
        tx.execute("DELETE FROM backlog WHERE owner = ?1", [name])?;
        tx.execute("DELETE FROM fifo_dedup WHERE queue = ?1", [name])?;
        tx.execute("DELETE FROM receive_attempts WHERE queue = ?1", [name])?;
        tx.commit()?;
        Ok(())
    }

    fn purge(&self, name: &str) -> Result<u64> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        queue_in(&tx, name)?;
        let n = tx.execute("DELETE FROM messages WHERE queue = ?1", [name])?;
        tx.commit()?;
        Ok(n as u64)
    }

    fn send(&self, name: &str, messages: &[NewMessage], now_ms: i64) -> Result<Vec<Message>> {
        if messages.is_empty() || messages.len() > MAX_BATCH {
            return Err(StoreError::InvalidInput(format!(
                "send 1-{MAX_BATCH} messages at a time"
            )));
        }
        let mut db = self.db();
        let tx = db.write_tx()?;
        let q = queue_in(&tx, name)?;
        let total: usize = messages.iter().map(|m| m.body.len()).sum();
        if let Some(big) = messages
            .iter()
            .find(|m| m.body.len() > q.settings.max_message_size as usize)
        {
            return Err(StoreError::InvalidInput(format!(
                "a message of {} bytes exceeds the queue's maximum message size of {} bytes",
                big.body.len(),
                q.settings.max_message_size
            )));
        }
        if total > MAX_MESSAGE_BYTES as usize {
            return Err(StoreError::InvalidInput(format!(
                "messages of {total} bytes exceed the batch limit of {MAX_MESSAGE_BYTES} bytes"
            )));
        }
        expire(&tx, &q, now_ms)?;
        self.limit.admit(
            &tx,
            name,
            messages.len() as u64,
            total as u64,
            Backlog::QueueMessages,
        )?;
        if q.settings.fifo {
            crate::fifo::forget_expired(&tx, name, now_ms)?;
        }
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            let fifo = crate::fifo::check_new(&q, m)?;
            if fifo.is_some() && m.delay_s != 0 && m.delay_s != q.settings.delay_s {
                return Err(StoreError::InvalidInput(
                    "a FIFO queue's messages have no delay of their own: set the queue's delay"
                        .into(),
                ));
            }
            if let Some(key) = &fifo {
                if let Some(original) = crate::fifo::duplicate_of(&tx, name, key, now_ms)? {
                    // Sent again within the deduplication interval: accepted, not stored.
                    out.push(Message {
                        id: original.0,
                        sequence_number: Some(crate::fifo::sequence_number(original.1)),
                        ..message_of(name, m, now_ms, key)
                    });
                    continue;
                }
            }
            if m.body.is_empty() {
                return Err(StoreError::InvalidInput(
                    "a message body must not be empty".into(),
                ));
            }
            if m.delay_s > 900 {
                return Err(StoreError::InvalidInput(
                    "delay must be 0-900 seconds".into(),
                ));
            }
            let mut msg = match &fifo {
                Some(key) => message_of(name, m, now_ms, key),
                None if m.group_id.is_some() || m.dedup_id.is_some() => {
                    return Err(StoreError::InvalidInput(
                        "message group and deduplication ids are for FIFO queues".into(),
                    ))
                }
                None => message_of(name, m, now_ms, &Default::default()),
            };
            tx.execute(
                &format!("INSERT INTO messages ({MESSAGE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, ?7, NULL, ?8, ?9, ?10, ?11)"),
                params![
                    msg.id,
                    msg.queue,
                    msg.body,
                    msg.attributes.to_string(),
                    msg.md5,
                    msg.sent_ms,
                    msg.visible_at_ms,
                    msg.trace,
                    msg.sender,
                    msg.group_id,
                    msg.dedup_id
                ],
            )?;
            if let Some(key) = &fifo {
                let seq = tx.last_insert_rowid();
                crate::fifo::remember_dedup(&tx, name, key, &msg.id, seq, now_ms)?;
                msg.sequence_number = Some(crate::fifo::sequence_number(seq));
            }
            out.push(msg);
        }
        tx.commit()?;
        Ok(out)
    }

    fn receive_attempt(
        &self,
        name: &str,
        max: usize,
        visibility_timeout_s: Option<u32>,
        attempt: Option<&str>,
        now_ms: i64,
    ) -> Result<Vec<Message>> {
        let max = max.clamp(1, 10_000);
        let mut db = self.db();
        let tx = db.write_tx()?;
        let q = queue_in(&tx, name)?;
        expire(&tx, &q, now_ms)?;
        let redrive = match &q.settings.redrive {
            Some(r) if queue_in(&tx, &r.dead_letter_queue).is_ok() => Some(r.clone()),
            Some(r) => {
                // Not a warning: pollers receive every few hundred milliseconds.
                tracing::debug!(
                    queue = name,
                    dlq = %r.dead_letter_queue,
                    "dead-letter queue does not exist: messages are not redriven"
                );
                None
            }
            None => None,
        };
        let visibility = i64::from(visibility_timeout_s.unwrap_or(q.settings.visibility_timeout_s));
        let attempt = attempt.filter(|_| q.settings.fifo);
        if let Some(a) = attempt {
            if let Some(again) = crate::fifo::replay(&tx, name, a, visibility, now_ms)? {
                tx.commit()?;
                return Ok(again);
            }
        }
        let out = if q.settings.fifo {
            crate::fifo::receive(&tx, name, max, visibility, redrive.as_ref(), now_ms)?
        } else {
            receive_standard(&tx, name, max, visibility, redrive.as_ref(), now_ms)?
        };
        if let Some(a) = attempt {
            crate::fifo::remember_attempt(&tx, name, a, &out, now_ms)?;
        }
        tx.commit()?;
        Ok(out)
    }

    fn delete_message(&self, name: &str, receipt: &str) -> Result<()> {
        let db = self.db();
        if db.execute(
            "DELETE FROM messages WHERE queue = ?1 AND receipt = ?2",
            params![name, receipt],
        )? == 0
        {
            queue_in(&db, name)?;
            return Err(stale(receipt));
        }
        Ok(())
    }

    fn change_visibility(
        &self,
        name: &str,
        receipt: &str,
        timeout_s: u32,
        now_ms: i64,
    ) -> Result<()> {
        if timeout_s > 12 * 3600 {
            return Err(StoreError::InvalidInput(
                "visibility timeout must be 0-43200 seconds".into(),
            ));
        }
        let db = self.db();
        if db.execute(
            "UPDATE messages SET visible_at_ms = ?3 WHERE queue = ?1 AND receipt = ?2",
            params![name, receipt, now_ms + i64::from(timeout_s) * 1000],
        )? == 0
        {
            queue_in(&db, name)?;
            return Err(stale(receipt));
        }
        Ok(())
    }

    fn release(&self, name: &str, receipts: &[String], visible_at_ms: i64) -> Result<()> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        for r in receipts {
            tx.execute(
                "UPDATE messages SET visible_at_ms = ?3, receipt = NULL,
                     receive_count = MAX(receive_count - 1, 0),
                     first_receive_ms = CASE WHEN receive_count <= 1 THEN NULL ELSE first_receive_ms END
                 WHERE queue = ?1 AND receipt = ?2",
                params![name, r, visible_at_ms],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn redrive(
        &self,
        dlq: &str,
        destination: Option<&str>,
        max: Option<u64>,
        now_ms: i64,
    ) -> Result<Redriven> {
        let mut db = self.db();
        let tx = db.write_tx()?;
        let q = queue_in(&tx, dlq)?;
        let destination = match destination {
            Some(d) => queue_in(&tx, d)?.name,
            None => redrive_source(&tx, dlq)?,
        };
        if destination == dlq {
            return Err(StoreError::InvalidInput(
                "a dead-letter queue cannot be redriven to itself".into(),
            ));
        }
        if queue_in(&tx, &destination)?.settings.fifo != q.settings.fifo {
            return Err(StoreError::InvalidInput(
                "messages move between queues of one type: FIFO to FIFO, standard to standard"
                    .into(),
            ));
        }
        expire(&tx, &q, now_ms)?;
        // Not in flight: never received, or its visibility timeout is over.
        const MOVABLE: &str = "queue = ?1 AND (receipt IS NULL OR visible_at_ms <= ?2)";
        let limit = max.map_or(-1, |m| i64::try_from(m).unwrap_or(i64::MAX));
        let moved = tx.execute(
            &format!(
                "UPDATE messages SET queue = ?3, receive_count = 0, first_receive_ms = NULL,
                     visible_at_ms = ?2, receipt = NULL
                 WHERE seq IN (SELECT seq FROM messages WHERE {MOVABLE} ORDER BY seq LIMIT ?4)"
            ),
            params![dlq, now_ms, destination, limit],
        )?;
        let left: i64 = tx.query_row(
            "SELECT COUNT(*) FROM messages WHERE queue = ?1",
            [dlq],
            |r| r.get(0),
        )?;
        tx.commit()?;
        tracing::info!(dlq, destination = %destination, moved, left, "dead-letter queue redriven");
        Ok(Redriven {
            destination,
            moved: moved as u64,
            left: left.max(0) as u64,
        })
    }

    fn stats(&self, name: &str, now_ms: i64) -> Result<QueueStats> {
        let db = self.db();
        queue_in(&db, name)?;
        let (visible, in_flight, delayed) = db.query_row(
            "SELECT
                 COALESCE(SUM(visible_at_ms <= ?2), 0),
                 COALESCE(SUM(visible_at_ms > ?2 AND receipt IS NOT NULL), 0),
                 COALESCE(SUM(visible_at_ms > ?2 AND receipt IS NULL), 0)
             FROM messages WHERE queue = ?1",
            params![name, now_ms],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )?;
        Ok(QueueStats {
            visible: visible as u64,
            in_flight: in_flight as u64,
            delayed: delayed as u64,
        })
    }

    fn all_stats(&self, now_ms: i64) -> Result<Vec<QueueDepth>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT q.name,
                 COALESCE(SUM(m.visible_at_ms <= ?1), 0),
                 COALESCE(SUM(m.visible_at_ms > ?1 AND m.receipt IS NOT NULL), 0),
                 COALESCE(SUM(m.visible_at_ms > ?1 AND m.receipt IS NULL), 0),
                 MIN(m.sent_ms)
             FROM queues q LEFT JOIN messages m ON m.queue = q.name
             GROUP BY q.name ORDER BY q.name",
        )?;
        let rows = stmt.query_map([now_ms], |r| {
            Ok(QueueDepth {
                queue: r.get(0)?,
                stats: QueueStats {
                    visible: r.get::<_, i64>(1)?.max(0) as u64,
                    in_flight: r.get::<_, i64>(2)?.max(0) as u64,
                    delayed: r.get::<_, i64>(3)?.max(0) as u64,
                },
                oldest_sent_ms: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    fn create_mapping(&self, m: &EventSourceMapping) -> Result<()> {
        m.validate()?;
        let db = self.db();
        db.execute(
            &format!(
                "INSERT INTO mappings ({MAPPING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
            ),
            params![
                m.uuid,
                m.queue,
                m.function,
                m.batch_size,
                m.window_s,
                m.enabled as i64,
                m.report_batch_item_failures as i64,
                m.last_modified_s,
                serde_json::to_string(&m.filters).unwrap_or_else(|_| "[]".into())
            ],
        )?;
        Ok(())
    }

    fn get_mapping(&self, uuid: &str) -> Result<EventSourceMapping> {
        self.db()
            .query_row(
                &format!("SELECT {MAPPING_COLUMNS} FROM mappings WHERE uuid = ?1"),
                [uuid],
                decode_mapping,
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("event source mapping not found: {uuid}")))
    }

    fn update_mapping(&self, m: &EventSourceMapping) -> Result<()> {
        m.validate()?;
        let n = self.db().execute(
            "UPDATE mappings SET queue = ?2, function = ?3, batch_size = ?4, window_s = ?5,
                 enabled = ?6, report_failures = ?7, last_modified_s = ?8, filters = ?9 WHERE uuid = ?1",
            params![
                m.uuid,
                m.queue,
                m.function,
                m.batch_size,
                m.window_s,
                m.enabled as i64,
                m.report_batch_item_failures as i64,
                m.last_modified_s,
                serde_json::to_string(&m.filters).unwrap_or_else(|_| "[]".into())
            ],
        )?;
        if n == 0 {
            return Err(StoreError::NotFound(format!(
                "event source mapping not found: {}",
                m.uuid
            )));
        }
        Ok(())
    }

    fn delete_mapping(&self, uuid: &str) -> Result<EventSourceMapping> {
        let m = self.get_mapping(uuid)?;
        self.db()
            .execute("DELETE FROM mappings WHERE uuid = ?1", [uuid])?;
        Ok(m)
    }

    fn list_mappings(&self) -> Result<Vec<EventSourceMapping>> {
        let db = self.db();
        let mut st = db.prepare(&format!(
            "SELECT {MAPPING_COLUMNS} FROM mappings ORDER BY rowid"
        ))?;
        let rows = st.query_map([], decode_mapping)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// MD5 (RFC 1321), for SQS's `md5OfBody`. Not used for anything security-related.
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: Vec<u32> = (0..64)
        .map(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32)
        .collect();
    let (mut a0, mut b0, mut c0, mut d0) = (
        0x6745_2301u32,
        0xefcd_ab89u32,
        0x98ba_dcfeu32,
        0x1032_5476u32,
    );
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for chunk in msg.chunks(64) {
        let m: Vec<u32> = chunk
            .chunks(4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
            .collect();
        let (mut a, mut b, mut c, mut d) = (a0, b0, c0, d0);
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        a0 = a0.wrapping_add(a);
        b0 = b0.wrapping_add(b);
        c0 = c0.wrapping_add(c);
        d0 = d0.wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, v) in [a0, b0, c0, d0].iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::backlog::testing::{backend_tests, Backend};

    fn a_message_keeps_its_trace_context(b: &Backend) {
        let s = b.queues();
        s.put_queue("q", &QueueSettings::default(), 0).unwrap();
        let xray = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let traced = NewMessage {
            trace: Some(xray.into()),
            ..msg("t")
        };
        s.send("q", &[traced, msg("plain")], 0).unwrap();
        let got = s.receive("q", 10, Some(30), 0).unwrap();
        let trace_of = |b: &str| got.iter().find(|m| m.body == b).unwrap().trace.clone();
        assert_eq!(trace_of("t").as_deref(), Some(xray));
        assert_eq!(trace_of("plain"), None);
    }

    fn msg(body: &str) -> NewMessage {
        NewMessage {
            body: body.into(),
            ..Default::default()
        }
    }

    #[test]
    fn sqs_settings_round_trip_and_old_data_dirs_gain_them() {
        let dir = tempfile::tempdir().unwrap();
        {
            // A data dir from before the SQS attributes (migrations 1-5).
            let db = open_db(&dir.path().join("queues.db"), "FULL", &MIGRATIONS[..5]).unwrap();
            db.execute(
                "INSERT INTO queues (name, visibility_timeout_s, max_message_size, retention_s, created_ms)
                 VALUES ('old', 30, 262144, 345600, 7)",
                [],
            )
            .unwrap();
        }
        let s = SqliteQueueStore::open(dir.path()).unwrap();
        let old = s.get_queue("old").unwrap();
        assert_eq!((old.created_ms, old.modified_ms), (7, 7));
        assert_eq!(old.settings.max_message_size, 262_144);
        assert_eq!(old.settings.delay_s, 0);
        assert!(old.settings.tags.is_empty());
        let settings = QueueSettings {
            delay_s: 5,
            receive_wait_s: 20,
            redrive_allow: Some(r#"{"redrivePermission":"denyAll"}"#.into()),
            tags: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        };
        s.put_queue("old", &settings, 100).unwrap();
        let q = s.get_queue("old").unwrap();
        assert_eq!(q.settings, settings);
        assert_eq!((q.created_ms, q.modified_ms), (7, 100));
        assert_eq!(q.settings.max_message_size, MAX_MESSAGE_BYTES);
        let bad = QueueSettings {
            receive_wait_s: 21,
            ..Default::default()
        };
        assert!(s.put_queue("q", &bad, 0).is_err());
        assert!(is_receipt_handle(&format!(
            "{}.{}",
            uuid::Uuid::new_v4(),
            uuid::Uuid::new_v4().simple()
        )));
        assert!(!is_receipt_handle("garbage"));
        assert!(!is_receipt_handle("x.y"));
    }

    fn sqs_settings_round_trip(b: &Backend) {
        let s = b.queues();
        let settings = QueueSettings {
            delay_s: 5,
            receive_wait_s: 20,
            redrive_allow: Some(r#"{"redrivePermission":"denyAll"}"#.into()),
            tags: [("team".to_string(), "a".to_string())].into(),
            ..Default::default()
        };
        let created = s.put_queue("q", &QueueSettings::default(), 7).unwrap();
        assert_eq!((created.created_ms, created.modified_ms), (7, 7));
        s.put_queue("q", &settings, 100).unwrap();
        let q = s.get_queue("q").unwrap();
        assert_eq!(q.settings, settings);
        assert_eq!((q.created_ms, q.modified_ms), (7, 100));
        assert_eq!(s.list_queues().unwrap(), vec![q.clone()]);
        // Survives a restart.
        drop(s);
        assert_eq!(b.queues().get_queue("q").unwrap(), q);
        let bad = QueueSettings {
            receive_wait_s: 21,
            ..Default::default()
        };
        assert!(b.queues().put_queue("q", &bad, 0).is_err());
    }

    #[test]
    fn md5_vectors() {
        assert_eq!(hex::encode(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex::encode(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex::encode(md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    fn send_receive_delete_with_visibility(b: &Backend) {
        let s = b.queues();
        let settings = QueueSettings {
            visibility_timeout_s: 1,
            ..Default::default()
        };
        s.put_queue("q", &settings, 0).unwrap();
        let sent = s.send("q", &[msg("a"), msg("b")], 1000).unwrap();
        assert_eq!(sent[0].md5, hex::encode(md5(b"a")));
        assert_eq!(
            s.stats("q", 1000).unwrap(),
            QueueStats {
                visible: 2,
                in_flight: 0,
                delayed: 0
            }
        );
        let got = s.receive("q", 1, None, 1000).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].body, "a");
        assert_eq!(got[0].receive_count, 1);
        assert_eq!(got[0].first_receive_ms, Some(1000));
        assert_eq!(s.stats("q", 1000).unwrap().in_flight, 1);
        s.put_queue("empty", &settings, 0).unwrap();
        assert_eq!(
            s.all_stats(1000).unwrap(),
            vec![
                QueueDepth {
                    queue: "empty".into(),
                    stats: QueueStats::default(),
                    oldest_sent_ms: None,
                },
                QueueDepth {
                    queue: "q".into(),
                    stats: QueueStats {
                        visible: 1,
                        in_flight: 1,
                        delayed: 0
                    },
                    oldest_sent_ms: Some(1000),
                },
            ]
        );
        // Hidden until the timeout passes, then received again with a new handle.
        let next = s.receive("q", 10, None, 1500).unwrap();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].body, "b");
        let again = s.receive("q", 10, None, 2100).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, got[0].id);
        assert_eq!(again[0].receive_count, 2);
        assert_eq!(again[0].first_receive_ms, Some(1000));
        assert_ne!(again[0].receipt, got[0].receipt);
        // The old handle is stale.
        let e = s
            .delete_message("q", got[0].receipt.as_deref().unwrap())
            .unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
        s.delete_message("q", again[0].receipt.as_deref().unwrap())
            .unwrap();
        s.delete_message("q", next[0].receipt.as_deref().unwrap())
            .unwrap();
        assert_eq!(
            s.stats("q", 5000).unwrap(),
            QueueStats {
                visible: 0,
                in_flight: 0,
                delayed: 0
            }
        );
        assert!(s.send("q", &vec![msg("x"); 11], 0).is_err());
        assert!(s.send("nope", &[msg("x")], 0).unwrap_err().is_not_found());
    }

    fn redrive_after_max_receive_count(b: &Backend) {
        let s = b.queues();
        s.put_queue("dlq", &QueueSettings::default(), 0).unwrap();
        let settings = QueueSettings {
            visibility_timeout_s: 0,
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "dlq".into(),
                max_receive_count: 2,
            }),
            ..Default::default()
        };
        s.put_queue("q", &settings, 0).unwrap();
        s.send("q", &[msg("poison"), msg("fine")], 0).unwrap();
        assert_eq!(s.receive("q", 1, None, 10).unwrap()[0].body, "poison");
        assert_eq!(s.receive("q", 1, None, 20).unwrap()[0].body, "poison");
        // Third receive: poison moves to the DLQ, and "fine" is delivered instead.
        let got = s.receive("q", 1, None, 30).unwrap();
        assert_eq!(got[0].body, "fine");
        let dead = s.receive("dlq", 10, None, 40).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].body, "poison");
        assert_eq!(dead[0].receive_count, 1);
    }

    fn redrive_moves_dead_letters_back_to_their_source(b: &Backend) {
        let s = b.queues();
        s.put_queue("dlq", &QueueSettings::default(), 0).unwrap();
        let settings = QueueSettings {
            visibility_timeout_s: 0,
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "dlq".into(),
                max_receive_count: 1,
            }),
            ..Default::default()
        };
        s.put_queue("q", &settings, 0).unwrap();
        let mut traced = msg("poison 1");
        traced.trace = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into());
        s.send("q", &[traced, msg("poison 2"), msg("poison 3")], 0)
            .unwrap();
        assert_eq!(s.receive("q", 10, None, 10).unwrap().len(), 3);
        // The second receive moves all three to the DLQ; one of them is then received there
        // and stays hidden (in flight).
        assert!(s.receive("q", 10, None, 20).unwrap().is_empty());
        let held = s.receive("dlq", 1, Some(60), 30).unwrap();
        assert_eq!(held[0].body, "poison 1");
        let no_source = s.redrive("q", None, None, 40).unwrap_err();
        assert!(
            no_source.to_string().contains("give a destination"),
            "{no_source}"
        );
        assert!(s.redrive("dlq", Some("dlq"), None, 40).is_err());
        assert!(s
            .redrive("dlq", Some("nope"), None, 40)
            .unwrap_err()
            .is_not_found());
        let r = s.redrive("dlq", None, Some(1), 40).unwrap();
        assert_eq!((r.destination.as_str(), r.moved, r.left), ("q", 1, 2));
        let r = s.redrive("dlq", None, None, 50).unwrap();
        assert_eq!((r.moved, r.left), (1, 1), "the message in flight stays");
        let back = s.receive("q", 10, None, 60).unwrap();
        let bodies: Vec<&str> = back.iter().map(|m| m.body.as_str()).collect();
        assert_eq!(bodies, ["poison 2", "poison 3"]);
        assert!(back.iter().all(|m| m.receive_count == 1 && m.sent_ms == 0));
        for m in &back {
            s.delete_message("q", m.receipt.as_deref().unwrap())
                .unwrap();
        }
        // Once its visibility timeout is over, the held message moves too, trace and all.
        let r = s.redrive("dlq", None, None, 30 + 61_000).unwrap();
        assert_eq!((r.moved, r.left), (1, 0));
        let m = &s.receive("q", 10, None, 30 + 62_000).unwrap()[0];
        assert_eq!(m.id, held[0].id);
        assert_eq!(
            m.trace.as_deref(),
            Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1")
        );
        // Several queues naming the DLQ: the destination must be given.
        s.put_queue("q2", &settings, 0).unwrap();
        let e = s.redrive("dlq", None, None, 70).unwrap_err().to_string();
        assert!(e.contains("q, q2"), "{e}");
        assert_eq!(s.redrive("dlq", Some("q2"), None, 70).unwrap().moved, 0);
    }

    fn sends_beyond_the_backlog_limit_are_refused_until_messages_go(b: &Backend) {
        let limit = BacklogLimit {
            per_owner: 3,
            total_bytes: 10,
        };
        let s = b.queues_with(limit);
        let settings = QueueSettings {
            visibility_timeout_s: 0,
            retention_s: 60,
            redrive: Some(RedrivePolicy {
                dead_letter_queue: "dlq".into(),
                max_receive_count: 1,
            }),
            ..Default::default()
        };
        s.put_queue("dlq", &QueueSettings::default(), 0).unwrap();
        s.put_queue("q", &settings, 0).unwrap();
        s.put_queue("other", &QueueSettings::default(), 0).unwrap();
        s.send("q", &[msg("a"), msg("b")], 0).unwrap();
        let e = s.send("q", &[msg("c"), msg("d")], 0).unwrap_err();
        assert!(e.is_full(), "{e}");
        assert!(e.to_string().contains("--max-queue-messages"), "{e}");
        s.send("q", &[msg("c")], 0).unwrap();
        assert!(s.send("q", &[msg("d")], 0).unwrap_err().is_full());
        // The bound is per queue.
        s.send("other", &[msg("x")], 0).unwrap();
        // Deleting a message makes room.
        let got = s.receive("q", 1, None, 10).unwrap();
        s.delete_message("q", got[0].receipt.as_deref().unwrap())
            .unwrap();
        s.send("q", &[msg("d")], 10).unwrap();
        // Moves to the dead-letter queue are never refused, even beyond its bound.
        for m in s.receive("q", 10, None, 20).unwrap() {
            assert_ne!(m.body, "a");
        }
        assert_eq!(s.receive("q", 10, None, 30).unwrap().len(), 0);
        assert_eq!(s.stats("dlq", 30).unwrap().visible, 3);
        assert!(s.send("dlq", &[msg("e")], 30).unwrap_err().is_full());
        // Bytes count across queues: 3 in dlq + 1 in other (+ "yyyyyyy" = 11 > 10).
        let e = s.send("other", &[msg("yyyyyyy")], 30).unwrap_err();
        assert!(e.to_string().contains("--max-queue-bytes"), "{e}");
        s.send("other", &[msg("yyyyyy")], 30).unwrap();
        // Purging, deleting a queue and retention all make room; counts survive a reopen.
        s.purge("dlq").unwrap();
        s.send("dlq", &[msg("e")], 30).unwrap();
        drop(s);
        let s = b.queues_with(limit);
        // 7 bytes in "other" + "e" in dlq: 3 more bytes pass 10.
        assert!(s.send("other", &[msg("zzz")], 30).unwrap_err().is_full());
        s.delete_queue("other").unwrap();
        s.put_queue("other", &QueueSettings::default(), 40).unwrap();
        s.send("other", &[msg("z")], 40).unwrap();
        s.send("q", &[msg("1"), msg("2"), msg("3")], 50).unwrap();
        assert!(s.send("q", &[msg("4")], 50).unwrap_err().is_full());
        s.send("q", &[msg("4")], 61_000).unwrap();
    }

    fn release_does_not_count_and_delay_and_purge(b: &Backend) {
        let s = b.queues();
        s.put_queue("q", &QueueSettings::default(), 0).unwrap();
        s.send(
            "q",
            &[
                msg("a"),
                NewMessage {
                    body: "later".into(),
                    delay_s: 5,
                    ..Default::default()
                },
            ],
            0,
        )
        .unwrap();
        assert_eq!(s.stats("q", 0).unwrap().delayed, 1);
        let got = s.receive("q", 10, None, 0).unwrap();
        assert_eq!(got.len(), 1);
        s.release("q", &[got[0].receipt.clone().unwrap()], 100)
            .unwrap();
        let again = s.receive("q", 10, None, 100).unwrap();
        assert_eq!(again[0].receive_count, 1);
        assert_eq!(s.purge("q").unwrap(), 2);
        s.delete_queue("q").unwrap();
        assert!(s.get_queue("q").unwrap_err().is_not_found());
    }

    fn mappings_and_durability(b: &Backend) {
        let m = EventSourceMapping {
            uuid: "u1".into(),
            queue: "q".into(),
            function: "f".into(),
            batch_size: 10,
            window_s: 0,
            enabled: true,
            report_batch_item_failures: true,
            last_modified_s: 1,
            filters: vec![r#"{"body":{"k":["v"]}}"#.into()],
        };
        {
            let s = b.queues();
            s.put_queue("q", &QueueSettings::default(), 0).unwrap();
            s.send("q", &[msg("kept")], 0).unwrap();
            s.create_mapping(&m).unwrap();
            let bad = EventSourceMapping {
                batch_size: 0,
                ..m.clone()
            };
            assert!(s.create_mapping(&bad).is_err());
        }
        let s = b.queues();
        assert_eq!(s.list_mappings().unwrap(), vec![m.clone()]);
        assert_eq!(s.receive("q", 10, None, 1).unwrap()[0].body, "kept");
        let upd = EventSourceMapping {
            enabled: false,
            ..m.clone()
        };
        s.update_mapping(&upd).unwrap();
        assert!(!s.get_mapping("u1").unwrap().enabled);
        s.delete_mapping("u1").unwrap();
        assert!(s.get_mapping("u1").unwrap_err().is_not_found());
    }

    backend_tests!(
        sqs_settings_round_trip,
        a_message_keeps_its_trace_context,
        send_receive_delete_with_visibility,
        redrive_after_max_receive_count,
        redrive_moves_dead_letters_back_to_their_source,
        sends_beyond_the_backlog_limit_are_refused_until_messages_go,
        release_does_not_count_and_delay_and_purge,
        mappings_and_durability,
    );

    /// Cluster mode: several nodes (pools) on one database.
    mod cluster {
        use crate::postgres::queues::PgQueueStore;
        use crate::{NewMessage, QueueSettings, QueueStore};
        use nimbus_pg::testing::TestDb;
        use nimbus_pg::{Pg, PgConfig};
        use std::collections::{HashMap, HashSet};
        use std::sync::{Arc, Barrier, Mutex};

        fn node(db: &TestDb) -> Arc<PgQueueStore> {
            let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
            Arc::new(PgQueueStore::open(&pg).unwrap())
        }

        fn fifo() -> QueueSettings {
            QueueSettings {
                fifo: true,
                content_based_dedup: true,
                ..Default::default()
            }
        }

        #[test]
        fn nodes_receiving_at_once_never_get_the_same_message_and_lose_none() {
            let db = TestDb::new("queues_nodes");
            let nodes = [node(&db), node(&db)];
            nodes[0]
                .put_queue("q", &QueueSettings::default(), 0)
                .unwrap();
            for i in 0..30 {
                let batch: Vec<NewMessage> = (0..10)
                    .map(|j| NewMessage {
                        body: format!("m{i}-{j}"),
                        ..Default::default()
                    })
                    .collect();
                nodes[i % 2].send("q", &batch, 0).unwrap();
            }
            let threads: Vec<_> = (0..6)
                .map(|t| {
                    let s = nodes[t % 2].clone();
                    std::thread::spawn(move || {
                        let mut got = Vec::new();
                        loop {
                            let batch = s.receive("q", 7, Some(600), 1000).unwrap();
                            if batch.is_empty() {
                                break;
                            }
                            for m in batch {
                                s.delete_message("q", m.receipt.as_deref().unwrap())
                                    .unwrap();
                                got.push(m.id);
                            }
                        }
                        got
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in threads {
                all.extend(t.join().unwrap());
            }
            let unique: HashSet<&String> = all.iter().collect();
            assert_eq!(unique.len(), all.len(), "a message was received twice");
            assert_eq!(all.len(), 300, "messages were lost");
            assert_eq!(nodes[1].stats("q", 1000).unwrap(), Default::default());
        }

        #[test]
        fn fifo_groups_have_one_batch_in_flight_across_nodes_and_keep_their_order() {
            let db = TestDb::new("queues_fifo_nodes");
            let nodes = [node(&db), node(&db)];
            nodes[0].put_queue("q.fifo", &fifo(), 0).unwrap();
            for g in 0..8 {
                for part in 0..2 {
                    let batch: Vec<NewMessage> = (0..10)
                        .map(|i| NewMessage {
                            body: format!("g{g}-{}", part * 10 + i),
                            group_id: Some(format!("g{g}")),
                            ..Default::default()
                        })
                        .collect();
                    nodes[(g + part) % 2].send("q.fifo", &batch, 0).unwrap();
                }
            }
            // The last sequence number handed out per group: a batch must start after it.
            let last: Arc<Mutex<HashMap<String, u128>>> = Default::default();
            let threads: Vec<_> = (0..6)
                .map(|t| {
                    let (s, last) = (nodes[t % 2].clone(), last.clone());
                    std::thread::spawn(move || {
                        let mut got = Vec::new();
                        let mut idle = 0;
                        while idle < 3 {
                            let batch = s.receive("q.fifo", 3, Some(600), 1000).unwrap();
                            if batch.is_empty() {
                                idle += 1;
                                std::thread::sleep(std::time::Duration::from_millis(20));
                                continue;
                            }
                            idle = 0;
                            {
                                let mut last = last.lock().unwrap();
                                for m in &batch {
                                    let g = m.group_id.clone().unwrap();
                                    let seq: u128 =
                                        m.sequence_number.as_deref().unwrap().parse().unwrap();
                                    let prev = last.insert(g.clone(), seq);
                                    assert!(
                                        prev.is_none_or(|p| p < seq),
                                        "group {g}: {seq} after {prev:?}"
                                    );
                                }
                            }
                            for m in batch {
                                s.delete_message("q.fifo", m.receipt.as_deref().unwrap())
                                    .unwrap();
                                got.push(m.body);
                            }
                        }
                        got
                    })
                })
                .collect();
            let mut all = Vec::new();
            for t in threads {
                all.extend(t.join().unwrap());
            }
            let unique: HashSet<&String> = all.iter().collect();
            assert_eq!(unique.len(), all.len(), "a message was received twice");
            assert_eq!(all.len(), 160, "messages were lost");
        }

        #[test]
        fn one_deduplication_id_sent_by_many_nodes_at_once_is_one_message() {
            let db = TestDb::new("queues_dedup_nodes");
            let nodes = [node(&db), node(&db)];
            nodes[0].put_queue("q.fifo", &fifo(), 0).unwrap();
            for round in 0..5 {
                let barrier = Arc::new(Barrier::new(6));
                let threads: Vec<_> = (0..6)
                    .map(|t| {
                        let (s, barrier) = (nodes[t % 2].clone(), barrier.clone());
                        std::thread::spawn(move || {
                            barrier.wait();
                            let m = NewMessage {
                                body: format!("body {round}"),
                                group_id: Some(format!("g{t}")),
                                ..Default::default()
                            };
                            s.send("q.fifo", &[m], 10).unwrap().remove(0)
                        })
                    })
                    .collect();
                let sent: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
                assert!(sent.iter().all(|m| m.id == sent[0].id), "{sent:?}");
                assert!(sent
                    .iter()
                    .all(|m| m.sequence_number == sent[0].sequence_number));
            }
            assert_eq!(nodes[1].stats("q.fifo", 10).unwrap().visible, 5);
        }

        #[test]
        fn a_dead_nodes_messages_come_back_when_their_visibility_ends() {
            let db = TestDb::new("queues_dead_node");
            let (a, b) = (node(&db), node(&db));
            a.put_queue("q", &QueueSettings::default(), 0).unwrap();
            a.put_queue("q.fifo", &fifo(), 0).unwrap();
            a.send(
                "q",
                &[NewMessage {
                    body: "m".into(),
                    ..Default::default()
                }],
                0,
            )
            .unwrap();
            let fm = NewMessage {
                body: "f".into(),
                group_id: Some("g".into()),
                ..Default::default()
            };
            a.send("q.fifo", &[fm], 0).unwrap();
            let held = a.receive("q", 10, Some(5), 100).unwrap();
            let held_fifo = a.receive("q.fifo", 10, Some(5), 100).unwrap();
            assert_eq!((held.len(), held_fifo.len()), (1, 1));
            drop(a);
            // Hidden while the dead node's visibility timeout runs…
            assert!(b.receive("q", 10, None, 5_000).unwrap().is_empty());
            assert!(b.receive("q.fifo", 10, None, 5_000).unwrap().is_empty());
            // …then back, under a new handle.
            let again = b.receive("q", 10, None, 5_100).unwrap();
            assert_eq!(again[0].id, held[0].id);
            assert_eq!(again[0].receive_count, 2);
            let again = b.receive("q.fifo", 10, None, 5_100).unwrap();
            assert_eq!(again[0].id, held_fifo[0].id);
            assert!(b
                .delete_message("q", held[0].receipt.as_deref().unwrap())
                .unwrap_err()
                .is_invalid_input());
        }

        #[test]
        fn the_backlog_bound_of_a_queue_holds_across_nodes() {
            let db = TestDb::new("queues_backlog_nodes");
            let limit = crate::BacklogLimit {
                per_owner: 10,
                total_bytes: u64::MAX - 1,
            };
            let pgs = [
                Pg::connect(&PgConfig::new(&db.url)).unwrap(),
                Pg::connect(&PgConfig::new(&db.url)).unwrap(),
            ];
            let nodes: Vec<Arc<PgQueueStore>> = pgs
                .iter()
                .map(|pg| Arc::new(PgQueueStore::open(pg).unwrap().with_limit(limit)))
                .collect();
            nodes[0]
                .put_queue("q", &QueueSettings::default(), 0)
                .unwrap();
            let barrier = Arc::new(Barrier::new(6));
            let threads: Vec<_> = (0..6)
                .map(|t| {
                    let (s, barrier) = (nodes[t % 2].clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        let mut stored = 0;
                        for i in 0..5 {
                            let m = NewMessage {
                                body: format!("{t}-{i}"),
                                ..Default::default()
                            };
                            match s.send("q", &[m], 0) {
                                Ok(_) => stored += 1,
                                Err(e) => assert!(e.is_full(), "{e}"),
                            }
                        }
                        stored
                    })
                })
                .collect();
            let stored: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            assert_eq!(stored, 10);
            assert_eq!(nodes[1].stats("q", 0).unwrap().visible, 10);
            assert_eq!(
                nodes[0].backlog().unwrap().largest_owner,
                Some(("q".into(), 10))
            );
        }

        #[test]
        fn empty_fifo_groups_leave_no_rows_behind() {
            let db = TestDb::new("queues_groups");
            let s = node(&db);
            s.put_queue("q.fifo", &fifo(), 0).unwrap();
            let m = |g: &str, body: &str| NewMessage {
                body: body.into(),
                group_id: Some(g.into()),
                ..Default::default()
            };
            s.send("q.fifo", &[m("a", "1"), m("b", "2"), m("c", "3")], 0)
                .unwrap();
            // A duplicate in a new group takes no group row.
            s.send("q.fifo", &[m("d", "1")], 0).unwrap();
            let groups = || -> i64 {
                db.pg
                    .with(async |c| {
                        Ok(c.query_one("SELECT COUNT(*) FROM queues_fifo_groups", &[])
                            .await?
                            .get(0))
                    })
                    .unwrap()
            };
            assert_eq!(groups(), 3);
            let got = s.receive("q.fifo", 10, None, 0).unwrap();
            for r in &got[..2] {
                s.delete_message("q.fifo", r.receipt.as_deref().unwrap())
                    .unwrap();
            }
            assert_eq!(groups(), 1);
            s.purge("q.fifo").unwrap();
            assert_eq!(groups(), 0);
        }

        #[test]
        fn one_receive_attempt_retried_on_another_node_at_once_gets_the_same_messages() {
            let db = TestDb::new("queues_attempt_nodes");
            let nodes = [node(&db), node(&db)];
            nodes[0].put_queue("q.fifo", &fifo(), 0).unwrap();
            for g in 0..6 {
                let m = NewMessage {
                    body: format!("m{g}"),
                    group_id: Some(format!("g{g}")),
                    ..Default::default()
                };
                nodes[0].send("q.fifo", &[m], 0).unwrap();
            }
            for round in 0..3 {
                let barrier = Arc::new(Barrier::new(4));
                let threads: Vec<_> = (0..4)
                    .map(|t| {
                        let (s, barrier) = (nodes[t % 2].clone(), barrier.clone());
                        std::thread::spawn(move || {
                            barrier.wait();
                            let attempt = format!("a{round}");
                            let got = s
                                .receive_attempt("q.fifo", 2, Some(600), Some(&attempt), 10)
                                .unwrap();
                            got.into_iter()
                                .map(|m| m.receipt.unwrap())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                let got: Vec<Vec<String>> =
                    threads.into_iter().map(|t| t.join().unwrap()).collect();
                assert_eq!(got[0].len(), 2, "{got:?}");
                assert!(got.iter().all(|g| g == &got[0]), "{got:?}");
            }
        }
    }
}
