//! PostgreSQL change data capture: logical decoding with the `pgoutput` plugin, read
//! through the SQL interface on an ordinary connection.
//!
//! Design (at least once by construction):
//! - `connect` checks `wal_level = logical` and the tables, creates (or updates) a
//!   publication named after the slot (`FOR TABLE` the mapping's tables, `publish` from the
//!   option `operations`) and the logical replication slot ([`Context::group`]).
//! - `poll` *peeks* (`pg_logical_slot_peek_binary_changes`): reading never consumes. The
//!   peek's rows are streamed and decoded (`pgoutput`) into DynamoDB Streams-shaped
//!   records (`record`), kept in a buffer handed out `max` at a time, so a transaction is
//!   peeked once, not once per batch. One peek keeps at most `max_buffered_changes`
//!   changes: a larger transaction is handed out in parts, each read by peeking again and
//!   skipping the changes taken before (memory stays bounded; each part re-reads the
//!   transaction). Idle, it peeks again once the WAL's flush position moved past the last
//!   peek's (checked every `WAL_CHECK`, slowing to `IDLE_NAP` while the moves are other
//!   tables' traffic).
//! - `ack` moves the slot (`pg_replication_slot_advance`) past a transaction only once
//!   all its changes are acknowledged; inside a transaction it stores the position
//!   `<commit_lsn>:<index>` as the durable checkpoint `position` (the commit LSN is
//!   known from the transaction's Begin, its end LSN only at its end), and after a
//!   restart the replayed transaction's changes up to that index are skipped. So a crash
//!   of Nimbus or a restart of PostgreSQL replays at most the unacknowledged changes.
//!
//! Records are shaped like DynamoDB Streams records (`eventName` `INSERT`, `MODIFY`,
//! `REMOVE`; `dynamodb.Keys`, `NewImage`, `OldImage` as AttributeValues), plus `table`
//! and `transaction` (`xid`, `commitLsn`). Record ids (`eventID`, `SequenceNumber`): the
//! commit's end LSN as 16 hex digits, `-`, the change's 1-based index in its transaction
//! as 8 digits: they sort in commit order.
//!
//! Images: `Keys` are the primary key (the replica identity's columns when there is
//! none). With REPLICA IDENTITY FULL, `OldImage` is the whole old row and
//! `StreamViewType` is `NEW_AND_OLD_IMAGES`; with DEFAULT (or USING INDEX) PostgreSQL only
//! logs the old key, so `OldImage` holds the key columns on `REMOVE` and on a `MODIFY`
//! that changed the key, and is absent otherwise (`NEW_IMAGE`). Unchanged TOASTed values
//! are not logged and are left out of `NewImage`. TRUNCATE is not delivered.
//!
//! Options: `operations`, a comma list of `insert`, `update`, `delete` (default all
//! three): what the publication publishes. A table without a primary key or replica
//! identity is refused unless only inserts are captured (publishing its updates would
//! make PostgreSQL refuse them). `max_buffered_changes` (default 20,000, at least the
//! mapping's `BatchSize × concurrency`): changes held in memory at once.
//!
//! Limits: a transaction larger than `max_buffered_changes` is read once per part (a
//! 1,000,000-change transaction: 50 reads of it by default). A slot only exists from the first
//! `connect` on: changes committed before it are not delivered (`StartingPosition`
//! `LATEST` and `TRIM_HORIZON` are the same here). If the publication is dropped by
//! hand while the slot lives, PostgreSQL 15 cannot decode the changes made before it was
//! recreated ("publication does not exist"): drop the slot too (delete the mapping).

mod pgoutput;
mod record;

use crate::error::{Result, SourceError};
use crate::model::{redact, Kind};
use crate::source::{Context, Record, Source};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use record::Assembler;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};
use tracing::{debug, warn};

/// The durable checkpoint key: the last acknowledged change inside a transaction.
const POSITION: &str = "position";
/// How long a poll sleeps between two empty peeks when it cannot tell whether the WAL
/// moved (and at most, whatever it can tell).
const IDLE_NAP: Duration = Duration::from_millis(150);
/// While idle, how often a poll reads the WAL's flush position (a cheap query, no
/// decoding): a peek runs as soon as it moved past the position of the last peek, so a
/// change waits about this long instead of up to [`IDLE_NAP`].
const WAL_CHECK: Duration = Duration::from_millis(10);
/// How often an idle slot is moved to the end of the WAL, so it does not hold back the
/// WAL of other tables' traffic (and later peeks do not decode it again and again).
const IDLE_ADVANCE_EVERY: Duration = Duration::from_secs(1);
/// Records beyond `batch_size × concurrency` that may be handed out unacknowledged.
const PREFETCH_SLACK: usize = 16;
/// The longest pause between two peeks while records are in flight and nothing new came.
const MAX_PEEK_BACKOFF: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Changes one peek keeps in memory at most by default: a larger transaction is handed
/// out in parts, each part read by decoding the transaction again from its start.
const DEFAULT_BUFFERED_CHANGES: usize = 20_000;
const OPERATIONS: [&str; 3] = ["insert", "update", "delete"];

const PEEK: &str = "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, $2, \
     'proto_version', '1', 'publication_names', $3)";
/// Moves the slot forward only: advancing to an LSN behind `confirmed_flush_lsn` is an
/// error in PostgreSQL, and a repeated or late advance must be harmless.
const ADVANCE: &str = "SELECT pg_replication_slot_advance(slot_name, $2::text::pg_lsn) \
     FROM pg_replication_slots WHERE slot_name = $1 AND confirmed_flush_lsn < $2::text::pg_lsn";

/// A change's place in the stream: its transaction's commit LSN (known from the
/// transaction's Begin, so a large transaction can be resumed part way while it is read)
/// and its 1-based index in the transaction (0 for a transaction without deliverable
/// changes). Commit LSNs order transactions as their end LSNs do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    commit_lsn: u64,
    index: u32,
}

impl Pos {
    fn checkpoint(self) -> String {
        format!("{}:{}", pgoutput::format_lsn(self.commit_lsn), self.index)
    }

    fn parse(s: &str) -> Option<Pos> {
        let (lsn, index) = s.rsplit_once(':')?;
        Some(Pos {
            commit_lsn: pgoutput::parse_lsn(lsn)?,
            index: index.parse().ok()?,
        })
    }

    fn budget(self) -> (u64, u32) {
        (self.commit_lsn, self.index)
    }
}

/// What a record carries to be settled: the connection generation it came from (records
/// of an older connection are ignored) and its place.
#[derive(Debug)]
struct Handle {
    gen: u64,
    pos: Pos,
    /// Where the slot advances once the transaction is done.
    end_lsn: u64,
    /// The last change of its transaction: acknowledging it completes the transaction.
    last: bool,
}

/// Peeked, not handed out yet.
enum Item {
    Record(Record),
    /// A transaction without deliverable changes (only a TRUNCATE, or all of it acked
    /// before a restart): settled as soon as everything before it is.
    Marker {
        commit_lsn: u64,
        end_lsn: u64,
    },
}

impl Item {
    /// A marker's place in the flight: settled, the last of its transaction.
    fn marker_flight(commit_lsn: u64, end_lsn: u64) -> Flight {
        Flight {
            pos: Pos {
                commit_lsn,
                index: 0,
            },
            end_lsn,
            last: true,
            acked: true,
        }
    }
}

/// Handed out, in stream order.
struct Flight {
    pos: Pos,
    end_lsn: u64,
    last: bool,
    acked: bool,
}

/// One open connection; dropping it closes the socket.
struct Conn {
    client: Client,
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A table the mapping names, as found in the catalog.
struct TableInfo {
    schema: String,
    name: String,
    primary_key: Vec<String>,
}

#[derive(Default)]
struct State {
    /// Bumped by every `connect`: handles of older generations are ignored.
    gen: u64,
    conn: Option<Arc<Conn>>,
    assembler: Assembler,
    /// The primary key of each table (`schema.table`).
    primary_keys: Arc<HashMap<String, Vec<String>>>,
    buffer: VecDeque<Item>,
    inflight: VecDeque<Flight>,
    /// Peeked transactions the slot has not moved past: (end LSN, peek rows), to size the
    /// next peek (it returns these again before anything new).
    pending: VecDeque<(u64, usize)>,
    /// Changes up to here were taken from a peek, or acknowledged before the last
    /// (re)connect: `index` is `u32::MAX` when the whole transaction was taken.
    upto: Option<Pos>,
    last_idle_advance: Option<Instant>,
    /// Empty peeks in a row while records are in flight, and when the next peek may run:
    /// each peek decodes again from the oldest unacknowledged transaction, so while a
    /// batch is retried for long the peeks slow down (up to [`MAX_PEEK_BACKOFF`]).
    empty_peeks: u32,
    next_peek: Option<Instant>,
    /// The WAL flush position read before the last peek: every commit up to it was
    /// decoded by that peek.
    peeked_flush: Option<u64>,
    /// Empty peeks in a row: the WAL moved for other tables (or databases). Each doubles
    /// the interval of the idle WAL checks (up to [`IDLE_NAP`]), so a busy cluster does
    /// not make an idle mapping decode its traffic every [`WAL_CHECK`].
    empty_in_a_row: u32,
}

/// What settling an acknowledged prefix does on the server and in the checkpoints.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    advance: Option<u64>,
    checkpoint: Option<CheckpointOp>,
}

#[derive(Debug, PartialEq, Eq)]
enum CheckpointOp {
    Put(Pos),
    Delete,
}

impl State {
    /// Drops the connection and everything peeked: the next peek starts again from the
    /// slot's confirmed position.
    fn reset(&mut self) {
        *self = State {
            gen: self.gen + 1,
            ..State::default()
        };
    }

    /// After a peek that found nothing new: slows the next ones while records are in
    /// flight (each re-decodes them), resets otherwise.
    fn peeked_nothing(&mut self) {
        self.empty_in_a_row = self.empty_in_a_row.saturating_add(1);
        if self.inflight.is_empty() {
            self.empty_peeks = 0;
            self.next_peek = None;
        } else {
            self.empty_peeks = self.empty_peeks.saturating_add(1);
            let pause = IDLE_NAP
                .saturating_mul(1 << self.empty_peeks.min(6))
                .min(MAX_PEEK_BACKOFF);
            self.next_peek = Some(Instant::now() + pause);
        }
    }

    fn pending_rows(&self) -> usize {
        self.pending.iter().map(|(_, n)| n).sum()
    }

    /// Up to `n` records from the buffer (markers pass straight to `inflight`, acked).
    fn take(&mut self, n: usize) -> Vec<Record> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.buffer.pop_front() {
                Some(Item::Record(r)) => {
                    if let Some(h) = r.handle::<Handle>() {
                        self.inflight.push_back(Flight {
                            pos: h.pos,
                            end_lsn: h.end_lsn,
                            last: h.last,
                            acked: false,
                        });
                    }
                    out.push(r);
                }
                Some(Item::Marker {
                    commit_lsn,
                    end_lsn,
                }) => self
                    .inflight
                    .push_back(Item::marker_flight(commit_lsn, end_lsn)),
                None => break,
            }
        }
        // Markers right after the taken records join the flight too, so they settle with
        // the records' acknowledgement instead of waiting for the next peek.
        while let Some(&Item::Marker {
            commit_lsn,
            end_lsn,
        }) = self.buffer.front()
        {
            self.buffer.pop_front();
            self.inflight
                .push_back(Item::marker_flight(commit_lsn, end_lsn));
        }
        out
    }

    /// Marks the records of this generation acknowledged; whether any was.
    fn mark_acked(&mut self, records: &[Record]) -> bool {
        let mut any = false;
        for r in records {
            let Some(h) = r.handle::<Handle>() else {
                continue;
            };
            if h.gen != self.gen {
                debug!(id = %r.id, "postgres source: ack of an older connection ignored");
                continue;
            }
            if let Ok(i) = self.inflight.binary_search_by(|f| f.pos.cmp(&h.pos)) {
                self.inflight[i].acked = true;
                any = true;
            }
        }
        if any {
            // The slot moves: the next peek is cheaper and may find more.
            self.empty_peeks = 0;
            self.next_peek = None;
        }
        any
    }

    /// Pops the acknowledged prefix of the flight and says how to make it durable.
    fn settle_prefix(&mut self) -> Plan {
        let mut plan = Plan::default();
        let mut last_popped = None;
        while self.inflight.front().is_some_and(|f| f.acked) {
            let Some(f) = self.inflight.pop_front() else {
                break;
            };
            if f.last {
                plan.advance = Some(f.end_lsn);
            }
            last_popped = Some(f);
        }
        if let Some(f) = last_popped {
            plan.checkpoint = Some(if f.last {
                CheckpointOp::Delete
            } else {
                CheckpointOp::Put(f.pos)
            });
        }
        if let Some(lsn) = plan.advance {
            while self.pending.front().is_some_and(|(end, _)| *end <= lsn) {
                self.pending.pop_front();
            }
        }
        plan
    }
}

/// The PostgreSQL change data capture connector.
pub struct PostgresSource {
    ctx: Context,
    /// The replication slot and the publication: [`Context::group`].
    slot: String,
    /// The publication's `publish` list.
    operations: Vec<&'static str>,
    tables: Vec<(String, String)>,
    /// Records handed out and not acknowledged at most.
    limit: usize,
    /// Changes one peek keeps at most (a larger transaction is read in parts).
    cap: usize,
    state: Mutex<State>,
    /// Serialises settling (slot advances and checkpoint writes happen in stream order).
    settle: tokio::sync::Mutex<()>,
    /// Wakes a poll waiting for acknowledgements (back-pressure).
    acked: Notify,
}

impl PostgresSource {
    pub fn new(ctx: Context) -> Result<Self> {
        let slot = ctx.group();
        check_slot_name(&slot)?;
        let operations = parse_operations(ctx.spec.option("operations"))?;
        let mut tables = Vec::new();
        for t in &ctx.spec.topics {
            let t = parse_table(t)?;
            // A publication refuses a table listed twice.
            if !tables.contains(&t) {
                tables.push(t);
            }
        }
        let limit = ctx.batch_size.max(1) * ctx.concurrency.max(1) + PREFETCH_SLACK;
        let cap = parse_buffer(ctx.spec.option("max_buffered_changes"))?.max(limit);
        Ok(Self {
            ctx,
            slot,
            operations,
            tables,
            limit,
            cap,
            state: Mutex::new(State::default()),
            settle: tokio::sync::Mutex::new(()),
            acked: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn application_name(&self) -> String {
        format!("nimbus-source:{}", self.slot)
    }

    /// Opens a connection to the first endpoint that answers.
    async fn dial(&self) -> Result<Conn> {
        let mut last = None;
        for endpoint in &self.ctx.spec.endpoints {
            match self.dial_one(endpoint).await {
                Ok(c) => return Ok(c),
                Err(e) if e.is_transient() => {
                    warn!(endpoint = %redact(endpoint), error = %e, "postgres source: endpoint failed");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last
            .unwrap_or_else(|| SourceError::Config("a postgres source needs an endpoint".into())))
    }

    async fn dial_one(&self, endpoint: &str) -> Result<Conn> {
        let label = redact(endpoint);
        let mut config: tokio_postgres::Config =
            endpoint.parse().map_err(|e: tokio_postgres::Error| {
                SourceError::Config(format!(
                    "invalid postgres endpoint {label}: {}",
                    with_causes(&e)
                ))
            })?;
        if let Some(c) = &self.ctx.credentials {
            if let Some(u) = &c.username {
                config.user(u);
            }
            if let Some(p) = &c.password {
                config.password(p.as_bytes());
            }
        }
        if config.get_user().is_none() {
            config.user("postgres");
        }
        config
            .application_name(self.application_name())
            .connect_timeout(CONNECT_TIMEOUT);
        // A silent network cut must fail a query rather than hang the poll for hours
        // (the defaults: keepalives after 2 hours idle, no send timeout). A URL that
        // sets its own keepalives keeps them.
        if !endpoint.contains("keepalives") && !endpoint.contains("tcp_user_timeout") {
            config
                .keepalives(true)
                .keepalives_idle(Duration::from_secs(30))
                .keepalives_interval(Duration::from_secs(10))
                .keepalives_retries(3)
                .tcp_user_timeout(Duration::from_secs(60));
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| pg_error(e, &label, "connecting"))?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(error = %e, "postgres source: connection ended");
            }
        });
        let conn = Conn {
            client,
            endpoint: label,
            task,
        };
        // The text form of values depends on these session settings: fix them.
        conn.client
            .batch_execute(
                "SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'; SET extra_float_digits = 3; \
                 SET bytea_output = 'hex'; SET IntervalStyle = 'postgres'",
            )
            .await
            .map_err(|e| conn.err(e, "setting up the session"))?;
        Ok(conn)
    }

    /// Checks the server and the tables, sets up the publication and the slot.
    async fn prepare(&self, conn: &Conn) -> Result<Vec<TableInfo>> {
        let row = conn
            .client
            .query_one(
                "SELECT current_setting('wal_level'), current_database()::text",
                &[],
            )
            .await
            .map_err(|e| conn.err(e, "reading wal_level"))?;
        let (level, db): (String, String) = (row.get(0), row.get(1));
        if level != "logical" {
            return Err(SourceError::Missing(wal_level_message(
                &conn.endpoint,
                &level,
            )));
        }
        let mut infos = Vec::new();
        for (schema, name) in &self.tables {
            infos.push(self.check_table(conn, &db, schema, name).await?);
        }
        self.ensure_publication(conn, &infos).await?;
        self.ensure_slot(conn, &db).await?;
        Ok(infos)
    }

    async fn check_table(
        &self,
        conn: &Conn,
        db: &str,
        schema: &str,
        name: &str,
    ) -> Result<TableInfo> {
        let row = conn
            .client
            .query_opt(
                "SELECT c.relkind::text, c.relreplident::text, coalesce((\
                   SELECT array_agg(a.attname::text ORDER BY array_position(i.indkey::int2[], a.attnum)) \
                   FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                   WHERE i.indrelid = c.oid AND i.indisprimary), '{}') \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
                &[&schema, &name],
            )
            .await
            .map_err(|e| conn.err(e, "looking up the tables"))?;
        let q = format!("{schema}.{name}");
        let Some(row) = row else {
            return Err(SourceError::Missing(format!(
                "table {q} does not exist in database {db} at {}: create it, or fix the mapping's \
                 tables (schema.table, or table for public.table, spelled as in the catalog)",
                conn.endpoint
            )));
        };
        let (kind, ident, primary_key): (String, String, Vec<String>) =
            (row.get(0), row.get(1), row.get(2));
        if kind != "r" && kind != "p" {
            return Err(SourceError::Config(format!(
                "{q} in database {db} is not a table (relkind {kind}): only tables have changes to capture"
            )));
        }
        let changes_rows = self.operations.iter().any(|o| *o != "insert");
        if changes_rows && (ident == "n" || (ident == "d" && primary_key.is_empty())) {
            return Err(SourceError::Missing(no_identity_message(&q)));
        }
        Ok(TableInfo {
            schema: schema.to_string(),
            name: name.to_string(),
            primary_key,
        })
    }

    async fn ensure_publication(&self, conn: &Conn, tables: &[TableInfo]) -> Result<()> {
        let name = ident(&self.slot);
        let list = tables
            .iter()
            .map(|t| format!("{}.{}", ident(&t.schema), ident(&t.name)))
            .collect::<Vec<_>>()
            .join(", ");
        // Changes of a partitioned table come as the table the mapping names, not as
        // its partitions.
        let with = format!(
            "publish = '{}', publish_via_partition_root = true",
            self.operations.join(", ")
        );
        let existing = conn
            .client
            .query_opt(
                "SELECT pubinsert, pubupdate, pubdelete, pubviaroot FROM pg_publication WHERE pubname = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| conn.err(e, "looking up the publication"))?;
        let Some(row) = existing else {
            let sql = format!("CREATE PUBLICATION {name} FOR TABLE {list} WITH ({with})");
            return match conn.client.batch_execute(&sql).await {
                Ok(()) => Ok(()),
                // Created meanwhile by another connect of this mapping.
                Err(e) if db_code(&e) == Some("42710") => Ok(()),
                Err(e) => Err(conn.err(e, "creating the publication")),
            };
        };
        let flags: Vec<&str> = OPERATIONS
            .iter()
            .zip([row.get::<_, bool>(0), row.get(1), row.get(2)])
            .filter(|(_, on)| *on)
            .map(|(o, _)| *o)
            .collect();
        if flags != self.operations || !row.get::<_, bool>(3) {
            let sql = format!("ALTER PUBLICATION {name} SET ({with})");
            conn.client
                .batch_execute(&sql)
                .await
                .map_err(|e| conn.err(e, "changing the publication"))?;
        }
        let rows = conn
            .client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| conn.err(e, "reading the publication"))?;
        let mut have: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut want: Vec<(String, String)> = tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        have.sort();
        want.sort();
        want.dedup();
        if have != want {
            let sql = format!("ALTER PUBLICATION {name} SET TABLE {list}");
            conn.client
                .batch_execute(&sql)
                .await
                .map_err(|e| conn.err(e, "changing the publication's tables"))?;
        }
        Ok(())
    }

    async fn ensure_slot(&self, conn: &Conn, db: &str) -> Result<()> {
        let row = conn
            .client
            .query_opt(
                "SELECT s.plugin::text, s.database::text, s.active_pid, a.application_name \
                 FROM pg_replication_slots s LEFT JOIN pg_stat_activity a ON a.pid = s.active_pid \
                 WHERE s.slot_name = $1",
                &[&self.slot],
            )
            .await
            .map_err(|e| conn.err(e, "looking up the replication slot"))?;
        let Some(row) = row else {
            debug!(slot = %self.slot, "postgres source: creating the replication slot");
            return match conn
                .client
                .query(
                    "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&self.slot],
                )
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if db_code(&e) == Some("42710") => Ok(()),
                Err(e) => Err(conn.err(e, "creating the replication slot")),
            };
        };
        let plugin: Option<String> = row.get(0);
        let slot_db: Option<String> = row.get(1);
        if plugin.as_deref() != Some("pgoutput") || slot_db.as_deref() != Some(db) {
            return Err(SourceError::Config(format!(
                "a replication slot named {} already exists at {} (plugin {}, database {}): \
                 give the mapping another group, or drop the slot with SELECT pg_drop_replication_slot('{}')",
                self.slot,
                conn.endpoint,
                plugin.as_deref().unwrap_or("none: a physical slot"),
                slot_db.as_deref().unwrap_or("none"),
                self.slot
            )));
        }
        let pid: Option<i32> = row.get(2);
        let app: Option<String> = row.get(3);
        if let (Some(pid), Some(app)) = (pid, app) {
            if app == self.application_name() {
                // A previous connection of this mapping still holds the slot (a peek that
                // outlived its client): end it, or every peek fails with "slot is active".
                warn!(slot = %self.slot, pid, "postgres source: ending a previous connection holding the slot");
                // Waits (up to 5 s) for the backend to exit and release the slot.
                conn.client
                    .query("SELECT pg_terminate_backend($1, 5000)", &[&pid])
                    .await
                    .map_err(|e| conn.err(e, "ending a previous connection"))?;
            }
        }
        Ok(())
    }

    fn read_checkpoint(&self) -> Result<Option<Pos>> {
        let Some(s) = self.ctx.checkpoints.get(POSITION)? else {
            return Ok(None);
        };
        let pos = Pos::parse(&s);
        if pos.is_none() {
            warn!(checkpoint = %s, "postgres source: unreadable position checkpoint ignored");
        }
        Ok(pos)
    }

    /// Peeks once (or a few times when the peek was cut by its row limit before anything
    /// new): whether records were buffered.
    async fn peek(&self, conn: &Arc<Conn>, gen: u64, max: usize) -> Result<bool> {
        let pending = self.state().pending_rows();
        // A row per change plus Begin, Relation and Commit rows: room for a full batch
        // even when every change is its own transaction.
        let mut margin = 4 * self.limit.max(max) + 64;
        loop {
            let flush = Self::flush_lsn(conn).await?;
            {
                let mut st = self.state();
                if st.gen != gen {
                    return Ok(false);
                }
                st.peeked_flush = pgoutput::parse_lsn(&flush);
            }
            let upto_rows = (pending + margin).min(i32::MAX as usize);
            // Decoding and shaping happen outside the state lock (acks go on meanwhile):
            // the assembler is taken out and put back; poll is its only user.
            let mut absorber = {
                let mut st = self.state();
                if st.gen != gen {
                    return Ok(false);
                }
                Absorber::new(
                    View {
                        gen,
                        primary_keys: st.primary_keys.clone(),
                    },
                    std::mem::take(&mut st.assembler),
                    record::Budget {
                        upto: st.upto.map(Pos::budget),
                        room: self.cap,
                    },
                )
            };
            let read = self.read_peek(conn, upto_rows, &mut absorber).await;
            let (p, rows) = {
                let mut st = self.state();
                if st.gen != gen {
                    return Ok(false);
                }
                let (assembler, p, upto) = absorber.finish();
                st.assembler = assembler;
                let rows = read?;
                st.buffer.extend(p.items);
                st.pending.extend(p.pending);
                st.upto = upto.map(|(commit_lsn, index)| Pos { commit_lsn, index });
                (
                    Peeked {
                        items: Vec::new(),
                        pending: Vec::new(),
                        ..p
                    },
                    rows,
                )
            };
            if p.txns > 0 {
                if p.records == 0 {
                    // Only markers: they settle once nothing is in flight before them.
                    let _ = self.state().take(0);
                    self.settle_acked().await?;
                }
                return Ok(p.records > 0);
            }
            let limited = rows >= upto_rows;
            if limited && margin < (1 << 24) {
                margin *= 4;
                continue;
            }
            if !limited && !p.stopped {
                self.idle_advance(conn, gen, &flush).await?;
            }
            return Ok(false);
        }
    }

    /// The WAL's flush position (`pg_current_wal_flush_lsn`), as text.
    async fn flush_lsn(conn: &Conn) -> Result<String> {
        Ok(conn
            .client
            .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
            .await
            .map_err(|e| conn.err(e, "reading the WAL position"))?
            .get(0))
    }

    /// Idle (nothing buffered, nothing to retry): waits until `until`, an
    /// acknowledgement, or the WAL's flush position moving past the last peek's, checked
    /// every [`WAL_CHECK`].
    async fn idle_wait(&self, conn: &Conn, gen: u64, until: Instant) -> Result<()> {
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            let (seen, every) = {
                let st = self.state();
                if st.gen != gen {
                    return Ok(());
                }
                let every = WAL_CHECK
                    .saturating_mul(1 << st.empty_in_a_row.min(4))
                    .min(IDLE_NAP);
                (st.peeked_flush, every)
            };
            if tokio::time::timeout((until - now).min(every), self.acked.notified())
                .await
                .is_ok()
            {
                return Ok(());
            }
            let flush = pgoutput::parse_lsn(&Self::flush_lsn(conn).await?);
            if seen.is_none() || flush > seen {
                return Ok(());
            }
        }
    }

    /// Streams one peek's rows into `absorber` (never holding them all): the rows read.
    async fn read_peek(
        &self,
        conn: &Conn,
        upto_rows: usize,
        absorber: &mut Absorber,
    ) -> Result<usize> {
        let limit = upto_rows as i32;
        let params: [&(dyn ToSql + Sync); 3] = [&self.slot, &limit, &self.slot];
        let stream = conn
            .client
            .query_raw(PEEK, params.iter().map(|p| *p as &dyn ToSql))
            .await
            .map_err(|e| conn.err(e, "reading changes"))?;
        let mut stream = std::pin::pin!(stream);
        let mut rows = 0;
        while let Some(row) = stream
            .try_next()
            .await
            .map_err(|e| conn.err(e, "reading changes"))?
        {
            rows += 1;
            let data: &[u8] = row.try_get(0).map_err(|e| conn.err(e, "reading changes"))?;
            if !absorber.row(data)? {
                // The budget ran out inside a transaction: the rest is read next time
                // (dropping the stream discards the rows still coming).
                break;
            }
        }
        Ok(rows)
    }

    /// Nothing is peeked or in flight and the last peek read to the end of the WAL: moves
    /// the slot to the flush position read before that peek, so other tables' traffic
    /// does not pile up behind it. Safe: the peek decoded every commit that starts before
    /// that position, and none of them had changes for this slot.
    async fn idle_advance(&self, conn: &Conn, gen: u64, flush: &str) -> Result<()> {
        let _g = self.settle.lock().await;
        {
            let mut st = self.state();
            let idle = st.gen == gen && st.buffer.is_empty() && st.inflight.is_empty();
            let due = st
                .last_idle_advance
                .is_none_or(|t| t.elapsed() >= IDLE_ADVANCE_EVERY);
            if !idle || !due {
                return Ok(());
            }
            st.last_idle_advance = Some(Instant::now());
            st.pending.clear();
        }
        debug!(slot = %self.slot, lsn = %flush, "postgres source: idle slot advanced");
        conn.client
            .query(ADVANCE, &[&self.slot, &flush])
            .await
            .map_err(|e| conn.err(e, "advancing the idle slot"))?;
        Ok(())
    }

    /// Settles the acknowledged prefix of the flight: slot first, then the checkpoint.
    async fn settle_acked(&self) -> Result<()> {
        let _g = self.settle.lock().await;
        let (plan, conn) = {
            let mut st = self.state();
            (st.settle_prefix(), st.conn.clone())
        };
        if plan == Plan::default() {
            return Ok(());
        }
        if let Some(lsn) = plan.advance {
            let conn = conn.ok_or_else(not_connected)?;
            let lsn = pgoutput::format_lsn(lsn);
            debug!(slot = %self.slot, %lsn, "postgres source: slot advanced");
            conn.client
                .query(ADVANCE, &[&self.slot, &lsn])
                .await
                .map_err(|e| conn.err(e, "advancing the slot"))?;
        }
        match plan.checkpoint {
            Some(CheckpointOp::Put(pos)) => {
                self.ctx.checkpoints.put(POSITION, &pos.checkpoint())?
            }
            Some(CheckpointOp::Delete) => self.ctx.checkpoints.delete(POSITION)?,
            None => {}
        }
        Ok(())
    }
}

/// What decoding a peek needs to know of the state.
struct View {
    gen: u64,
    primary_keys: Arc<HashMap<String, Vec<String>>>,
}

/// What a peek added.
#[derive(Default)]
struct Peeked {
    items: Vec<Item>,
    /// (end LSN, peek rows) of each new transaction.
    pending: Vec<(u64, usize)>,
    txns: usize,
    records: usize,
    /// The budget ran out inside a transaction: the peek stopped there.
    stopped: bool,
}

/// Turns a peek's rows into records as they arrive, skipping what was taken or
/// acknowledged before and keeping at most the budget's room.
struct Absorber {
    view: View,
    assembler: Assembler,
    budget: record::Budget,
    p: Peeked,
    rows_in_txn: usize,
}

impl Absorber {
    fn new(view: View, assembler: Assembler, budget: record::Budget) -> Self {
        Self {
            view,
            assembler,
            budget,
            p: Peeked::default(),
            rows_in_txn: 0,
        }
    }

    /// Feeds one row; false when the peek should stop here.
    fn row(&mut self, data: &[u8]) -> Result<bool> {
        self.rows_in_txn += 1;
        if matches!(data.first(), Some(b'I' | b'U' | b'D'))
            && self.assembler.skip_change(&self.budget)
        {
            return Ok(true);
        }
        let msg = pgoutput::decode(data).map_err(decode_error)?;
        let Some(txn) = self
            .assembler
            .push(msg, &mut self.budget)
            .map_err(decode_error)?
        else {
            return Ok(true);
        };
        let rows = std::mem::take(&mut self.rows_in_txn);
        Ok(self.take(txn, rows))
    }

    /// Adds a committed transaction's kept changes; false when it was not complete.
    fn take(&mut self, txn: record::Txn, rows: usize) -> bool {
        if txn.taken {
            return true;
        }
        let continuing = self.budget.upto.is_some_and(|(c, _)| c == txn.commit_lsn);
        let last_kept = txn.changes.last().map(|(i, _)| *i);
        for (index, change) in &txn.changes {
            let pos = Pos {
                commit_lsn: txn.commit_lsn,
                index: *index,
            };
            let table = change.rel.qualified_name();
            let data = record::change_record(
                &txn,
                *index,
                change,
                self.view.primary_keys.get(&table).map(Vec::as_slice),
                Kind::Postgres.event_source(),
            );
            let id = record::change_id(txn.end_lsn, *index);
            debug!(%id, %table, op = change.op.event_name(), "postgres source: change");
            let handle = Handle {
                gen: self.view.gen,
                pos,
                end_lsn: txn.end_lsn,
                last: txn.complete && *index == txn.total,
            };
            self.p.items.push(Item::Record(Record::new(
                id,
                data,
                txn.commit_ms(),
                Arc::new(handle),
            )));
            self.p.records += 1;
        }
        let marker = txn.changes.is_empty() && txn.complete;
        if marker {
            self.p.items.push(Item::Marker {
                commit_lsn: txn.commit_lsn,
                end_lsn: txn.end_lsn,
            });
        }
        if last_kept.is_some() || marker {
            if !continuing {
                self.p.pending.push((txn.end_lsn, rows));
            }
            self.p.txns += 1;
            let index = match (txn.complete, last_kept) {
                (false, Some(i)) => i,
                _ => u32::MAX,
            };
            self.budget.upto = Some((txn.commit_lsn, index));
        }
        if !txn.complete {
            self.p.stopped = true;
        }
        txn.complete
    }

    /// The assembler to keep, what was added, and how far the stream was taken.
    fn finish(self) -> (Assembler, Peeked, Option<(u64, u32)>) {
        (self.assembler, self.p, self.budget.upto)
    }
}

#[async_trait]
impl Source for PostgresSource {
    async fn connect(&self) -> Result<()> {
        self.state().reset();
        let conn = self.dial().await?;
        let tables = self.prepare(&conn).await?;
        let acked = self.read_checkpoint()?;
        let mut st = self.state();
        st.conn = Some(Arc::new(conn));
        st.upto = acked;
        st.primary_keys = Arc::new(
            tables
                .into_iter()
                .map(|t| (format!("{}.{}", t.schema, t.name), t.primary_key))
                .collect(),
        );
        debug!(slot = %self.slot, gen = st.gen, "postgres source: connected");
        Ok(())
    }

    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Record>> {
        let deadline = Instant::now() + wait;
        let max = max.max(1);
        loop {
            let (conn, gen, room, next_peek) = {
                let mut st = self.state();
                let conn = st.conn.clone().ok_or_else(not_connected)?;
                let room = self.limit.saturating_sub(st.inflight.len());
                if room > 0 && st.buffer.iter().any(|i| matches!(i, Item::Record(_))) {
                    let out = st.take(max.min(room));
                    drop(st);
                    if !out.is_empty() {
                        return Ok(out);
                    }
                    continue;
                }
                (conn, st.gen, room, st.next_peek)
            };
            let may_peek = next_peek.is_none_or(|t| Instant::now() >= t);
            if room > 0 && may_peek {
                if self.peek(&conn, gen, max).await? {
                    self.state().empty_in_a_row = 0;
                    continue;
                }
                let mut st = self.state();
                if st.gen == gen {
                    st.peeked_nothing();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            // Back-pressure (no room): wait for acknowledgements instead of reading on.
            let next_peek = self.state().next_peek;
            let pause = match next_peek {
                _ if room == 0 => wait,
                Some(t) => t.saturating_duration_since(now).max(IDLE_NAP),
                None => {
                    // Idle: peek again once the WAL moved (or after IDLE_NAP at most).
                    self.idle_wait(&conn, gen, now + (deadline - now).min(IDLE_NAP))
                        .await?;
                    continue;
                }
            };
            let _ = tokio::time::timeout((deadline - now).min(pause), self.acked.notified()).await;
        }
    }

    async fn ack(&self, records: &[Record]) -> Result<()> {
        if !self.state().mark_acked(records) {
            return Ok(());
        }
        let r = self.settle_acked().await;
        self.acked.notify_one();
        r
    }

    /// The slot holds the mapping's WAL: dropping it is what matters; the publication and
    /// the checkpoint go too. Publication failures are logged; a slot that cannot be
    /// dropped is an error (it would hold WAL forever).
    async fn remove(&self) -> Result<()> {
        self.state().reset();
        let conn = self.dial().await?;
        let mut dropped = Ok(());
        for attempt in 0..20 {
            let r = conn
                .client
                .query(
                    "SELECT pg_terminate_backend(active_pid, 5000) FROM pg_replication_slots s \
                     JOIN pg_stat_activity a ON a.pid = s.active_pid \
                     WHERE s.slot_name = $1 AND a.application_name = $2",
                    &[&self.slot, &self.application_name()],
                )
                .await;
            if let Err(e) = r {
                warn!(error = %e, "postgres source: could not end connections holding the slot");
            }
            dropped = conn
                .client
                .query(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1",
                    &[&self.slot],
                )
                .await
                .map(|_| ())
                .map_err(|e| conn.err(e, "dropping the replication slot"));
            // 55006: the slot is still active (a connection ending).
            match &dropped {
                Err(SourceError::Broker(m)) if m.contains("is active") && attempt < 19 => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                _ => break,
            }
        }
        if let Err(e) = &dropped {
            warn!(slot = %self.slot, error = %e, "postgres source: replication slot not dropped");
        }
        let sql = format!("DROP PUBLICATION IF EXISTS {}", ident(&self.slot));
        if let Err(e) = conn.client.batch_execute(&sql).await {
            warn!(publication = %self.slot, error = %e, "postgres source: publication not dropped");
        }
        if let Err(e) = self.ctx.checkpoints.delete(POSITION) {
            warn!(error = %e, "postgres source: checkpoint not deleted");
        }
        dropped
    }

    /// Bytes of WAL between the server's current position and the slot's confirmed one.
    async fn lag(&self) -> Option<u64> {
        let conn = self.state().conn.clone()?;
        let row = conn
            .client
            .query_opt(
                "SELECT (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&self.slot],
            )
            .await
            .ok()??;
        row.get::<_, Option<i64>>(0).map(|n| n.max(0) as u64)
    }
}

impl Conn {
    fn err(&self, e: tokio_postgres::Error, what: &str) -> SourceError {
        pg_error(e, &self.endpoint, what)
    }
}

fn not_connected() -> SourceError {
    SourceError::Broker("the postgres source is not connected".into())
}

fn decode_error(e: pgoutput::DecodeError) -> SourceError {
    SourceError::Broker(format!("undecodable change stream: {e}"))
}

fn db_code(e: &tokio_postgres::Error) -> Option<&str> {
    e.as_db_error().map(|d| d.code().code())
}

/// A client error as what to fix. `endpoint` is already redacted.
fn pg_error(e: tokio_postgres::Error, endpoint: &str, what: &str) -> SourceError {
    if let Some(db) = e.as_db_error() {
        let msg = db.message();
        let code = db.code().code();
        return match code {
            "28P01" | "28000" => SourceError::Auth(format!(
                "PostgreSQL at {endpoint} refused the credentials: {msg} (set the user and password in the mapping's secret)"
            )),
            "42501" => SourceError::Auth(format!(
                "PostgreSQL at {endpoint}: {msg} while {what} (the role needs the REPLICATION attribute \
                 and must own the tables to publish them)"
            )),
            "3D000" => SourceError::Missing(format!(
                "PostgreSQL at {endpoint}: {msg} (the endpoint URL names the database: postgres://host:port/DATABASE)"
            )),
            "53400" => SourceError::Missing(format!(
                "PostgreSQL at {endpoint}: {msg} while {what} (raise max_replication_slots and \
                 max_wal_senders in postgresql.conf and restart, or drop unused slots)"
            )),
            "55000" | "42P01" | "42704" => SourceError::Missing(format!(
                "PostgreSQL at {endpoint}: {msg} while {what}"
            )),
            c if c.starts_with("08") || c.starts_with("57P") => SourceError::Unreachable {
                endpoint: endpoint.to_string(),
                reason: format!("{msg} while {what}"),
            },
            _ => SourceError::Broker(format!("PostgreSQL at {endpoint}: {msg} while {what}")),
        };
    }
    let text = with_causes(&e);
    if text.contains("password missing") {
        return SourceError::Auth(format!(
            "PostgreSQL at {endpoint} asks for a password: set it in the mapping's secret"
        ));
    }
    if text.contains("TLS") {
        return SourceError::Config(format!(
            "PostgreSQL at {endpoint}: {text} (the postgres source connects without TLS: \
             use sslmode=disable or prefer, on a trusted network)"
        ));
    }
    if text.starts_with("authentication error") {
        return SourceError::Auth(format!("PostgreSQL at {endpoint}: {text}"));
    }
    if text.starts_with("invalid configuration") || text.starts_with("invalid connection string") {
        return SourceError::Config(format!("postgres endpoint {endpoint}: {text}"));
    }
    SourceError::Unreachable {
        endpoint: endpoint.to_string(),
        reason: format!("{text} (while {what})"),
    }
}

/// The error and its causes (tokio-postgres shows only its own kind, e.g. "error
/// connecting to server", and keeps "Connection refused" in the source).
fn with_causes(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Why the server cannot do change data capture, and how to fix it.
pub fn wal_level_message(endpoint: &str, level: &str) -> String {
    format!(
        "PostgreSQL at {endpoint} has wal_level = {level}: change data capture needs logical \
         decoding. Run ALTER SYSTEM SET wal_level = logical; and restart the server (the \
         setting needs a restart), and keep max_replication_slots and max_wal_senders above \
         the number of slots in use (one per postgres mapping)"
    )
}

fn no_identity_message(table: &str) -> String {
    format!(
        "table {table} has no replica identity (no primary key): once published, PostgreSQL \
         would refuse its UPDATEs and DELETEs. Add a primary key, or run ALTER TABLE {table} \
         REPLICA IDENTITY FULL, or set the mapping's option operations=insert"
    )
}

/// `schema.table` or `table` (= `public.table`), as spelled in the catalog.
fn parse_table(topic: &str) -> Result<(String, String)> {
    let t = topic.trim();
    let (schema, name) = t.split_once('.').unwrap_or(("public", t));
    if schema.is_empty() || name.is_empty() || name.contains('.') {
        return Err(SourceError::Config(format!(
            "invalid table {topic:?}: name it schema.table, or table for public.table"
        )));
    }
    Ok((schema.to_string(), name.to_string()))
}

/// The option `operations`: a comma list of insert, update, delete (default all three),
/// in the publication's canonical order.
fn parse_operations(option: Option<&str>) -> Result<Vec<&'static str>> {
    let Some(s) = option else {
        return Ok(OPERATIONS.to_vec());
    };
    let asked: Vec<String> = s
        .split(',')
        .map(|o| o.trim().to_ascii_lowercase())
        .filter(|o| !o.is_empty())
        .collect();
    if let Some(bad) = asked.iter().find(|o| !OPERATIONS.contains(&o.as_str())) {
        return Err(SourceError::Config(format!(
            "invalid postgres option operations: {bad:?} (a comma list of insert, update, delete)"
        )));
    }
    let ops: Vec<&'static str> = OPERATIONS
        .into_iter()
        .filter(|o| asked.iter().any(|a| a == o))
        .collect();
    if ops.is_empty() {
        return Err(SourceError::Config(
            "the postgres option operations names no operation (a comma list of insert, update, delete)".into(),
        ));
    }
    Ok(ops)
}

/// The option `max_buffered_changes` (default [`DEFAULT_BUFFERED_CHANGES`]).
fn parse_buffer(option: Option<&str>) -> Result<usize> {
    let Some(s) = option else {
        return Ok(DEFAULT_BUFFERED_CHANGES);
    };
    s.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            SourceError::Config(format!(
                "invalid postgres option max_buffered_changes: {s:?} (a number of changes, at least 1)"
            ))
        })
}

/// Replication slot names allow lower-case letters, digits and `_` only.
fn check_slot_name(slot: &str) -> Result<()> {
    let ok = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(SourceError::Config(format!(
            "invalid group {slot:?} for a postgres source: it names the replication slot, which \
             allows 1-63 lower-case letters, digits and '_'"
        )))
    }
}

/// A quoted SQL identifier.
fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_level_message_says_what_to_fix() {
        let m = wal_level_message("postgres://127.0.0.1:5432/app", "replica");
        for part in [
            "127.0.0.1:5432",
            "wal_level = replica",
            "ALTER SYSTEM SET wal_level = logical",
            "restart",
            "max_replication_slots",
            "max_wal_senders",
        ] {
            assert!(m.contains(part), "{part:?} missing from {m}");
        }
    }

    #[test]
    fn options_tables_and_slot_names() {
        assert_eq!(parse_operations(None).unwrap(), OPERATIONS.to_vec());
        assert_eq!(
            parse_operations(Some("Delete, insert")).unwrap(),
            vec!["insert", "delete"]
        );
        assert!(parse_operations(Some("insert,upsert")).is_err());
        assert!(parse_operations(Some(" , ")).is_err());
        assert_eq!(
            parse_table("orders").unwrap(),
            ("public".into(), "orders".into())
        );
        assert_eq!(
            parse_table("sales.Orders").unwrap(),
            ("sales".into(), "Orders".into())
        );
        assert!(parse_table("a.b.c").is_err() && parse_table(".x").is_err());
        assert!(check_slot_name("nimbus_0f3c2a1baaaa").is_ok());
        assert!(check_slot_name("Has-Dash").is_err());
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        let p = Pos {
            commit_lsn: 0x1_0000_00FF,
            index: 12,
        };
        assert_eq!(p.checkpoint(), "1/FF:12");
        assert_eq!(Pos::parse("1/FF:12"), Some(p));
        assert_eq!(Pos::parse("junk"), None);
    }

    #[test]
    fn absorbing_skips_what_was_taken_and_stops_when_the_budget_runs_out() {
        use pgoutput::fixtures::{begin, commit, insert, relation};
        let rel = relation(5, "public", "t", b'd', &[(true, "id", 23)]);
        let mut truncate = vec![b'T'];
        truncate.extend(1u32.to_be_bytes());
        truncate.push(0);
        truncate.extend(5u32.to_be_bytes());
        let rows = vec![
            begin(9, 0, 1),
            rel.clone(),
            insert(5, &[Some("1")]),
            insert(5, &[Some("2")]),
            commit(9, 10, 0),
            begin(19, 0, 2),
            rel,
            truncate,
            commit(19, 20, 0),
            begin(29, 0, 3),
            insert(5, &[Some("3")]),
            insert(5, &[Some("4")]),
            insert(5, &[Some("5")]),
            commit(29, 30, 0),
        ];
        let feed = |upto, room| {
            let view = View {
                gen: 7,
                primary_keys: Arc::default(),
            };
            let budget = record::Budget { upto, room };
            let mut a = Absorber::new(view, Assembler::default(), budget);
            let mut read = 0;
            for r in &rows {
                read += 1;
                if !a.row(r).unwrap() {
                    break;
                }
            }
            let (_, p, upto) = a.finish();
            (p, upto, read)
        };
        // Transaction 9 was taken: 19 (only a TRUNCATE) is a marker, 29 comes whole.
        let (p, upto, read) = feed(Some((9, u32::MAX)), 100);
        assert_eq!(
            (p.txns, p.records, p.stopped, read),
            (2, 3, false, rows.len())
        );
        assert_eq!(upto, Some((29, u32::MAX)));
        assert_eq!(p.pending, vec![(20, 4), (30, 5)]);
        assert!(matches!(
            p.items[0],
            Item::Marker {
                commit_lsn: 19,
                end_lsn: 20
            }
        ));
        let Item::Record(r) = &p.items[3] else {
            panic!("a record")
        };
        assert_eq!(r.id, "000000000000001E-00000003");
        let h = r.handle::<Handle>().unwrap();
        assert_eq!((h.gen, h.last, h.end_lsn), (7, true, 30));
        assert_eq!(
            r.data["dynamodb"]["Keys"],
            serde_json::json!({"id": {"N": "5"}})
        );
        // Resumed after change 1 of 29 with room for one: change 2 only, not the last.
        let (p, upto, read) = feed(Some((29, 1)), 1);
        assert_eq!(
            (p.txns, p.records, p.stopped, read),
            (1, 1, true, rows.len())
        );
        assert_eq!(upto, Some((29, 2)));
        assert!(p.pending.is_empty(), "29 was pending already");
        let Item::Record(r) = &p.items[0] else {
            panic!("a record")
        };
        assert_eq!(r.id, "000000000000001E-00000002");
        assert!(!r.handle::<Handle>().unwrap().last);
        // Room for one from the start: the peek stops after the first transaction.
        let (p, upto, read) = feed(None, 1);
        assert_eq!((p.records, p.stopped, read), (1, true, 5));
        assert_eq!(upto, Some((9, 1)));
        let mut a = Absorber::new(
            View {
                gen: 1,
                primary_keys: Arc::default(),
            },
            Assembler::default(),
            record::Budget {
                upto: None,
                room: 1,
            },
        );
        assert!(a.row(b"I\0").is_err());
    }

    fn record(gen: u64, commit_lsn: u64, index: u32, last: bool) -> Record {
        Record::new(
            record::change_id(commit_lsn + 1, index),
            serde_json::json!({}),
            0,
            Arc::new(Handle {
                gen,
                pos: Pos { commit_lsn, index },
                end_lsn: commit_lsn + 1,
                last,
            }),
        )
    }

    #[test]
    fn settling_advances_whole_transactions_and_checkpoints_the_middle() {
        let mut st = State {
            gen: 1,
            ..State::default()
        };
        let recs = [
            record(1, 10, 1, false),
            record(1, 10, 2, true),
            record(1, 20, 1, false),
            record(1, 20, 2, true),
        ];
        st.buffer.extend(recs.iter().cloned().map(Item::Record));
        st.buffer.insert(
            2,
            Item::Marker {
                commit_lsn: 15,
                end_lsn: 16,
            },
        );
        st.pending.extend([(11, 4), (16, 2), (21, 4)]);
        let got = st.take(10);
        assert_eq!(got.len(), 4);
        assert_eq!(st.inflight.len(), 5);
        // Empty peeks while records are in flight slow down; an ack resets them.
        st.peeked_nothing();
        st.peeked_nothing();
        assert_eq!(st.empty_peeks, 2);
        assert!(st
            .next_peek
            .is_some_and(|t| t > Instant::now() + IDLE_NAP * 3));
        // Out of order: nothing settles until the prefix is acknowledged.
        assert!(st.mark_acked(&recs[1..2]));
        assert_eq!((st.empty_peeks, st.next_peek), (0, None));
        assert_eq!(st.settle_prefix(), Plan::default());
        // The whole first transaction, the marker and half the second.
        assert!(st.mark_acked(&recs[0..1]));
        assert!(st.mark_acked(&recs[2..3]));
        assert_eq!(
            st.settle_prefix(),
            Plan {
                advance: Some(16),
                checkpoint: Some(CheckpointOp::Put(Pos {
                    commit_lsn: 20,
                    index: 1
                }))
            }
        );
        assert_eq!(st.pending.len(), 1);
        // An older generation's ack is ignored.
        assert!(!st.mark_acked(&[record(0, 20, 2, true)]));
        assert!(st.mark_acked(&recs[3..4]));
        assert_eq!(
            st.settle_prefix(),
            Plan {
                advance: Some(21),
                checkpoint: Some(CheckpointOp::Delete)
            }
        );
        assert!(st.inflight.is_empty() && st.pending.is_empty());
        st.reset();
        assert_eq!(st.gen, 2);
    }
}
