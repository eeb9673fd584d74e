//! [`FlowStore`] on SQLite (`flows.db`): WAL, `synchronous=FULL` (a committed transition
//! survives power loss; claims and lease renewals commit without waiting for the disk), a
//! busy timeout, and `user_version` migrations. One connection behind a mutex; every write
//! is one `BEGIN IMMEDIATE` transaction.

mod executions;
mod history;
mod joins;
mod machines;
mod schema;
mod steps;

use super::error::{StoreError, StoreResult};
use super::model::*;
use super::FlowStore;
use base64::Engine as _;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The SQLite backend.
pub struct SqliteFlowStore {
    conn: Mutex<Connection>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl SqliteFlowStore {
    /// Opens (creating and migrating) `data_dir/flows.db`.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Backend(format!("{}: {e}", data_dir.display())))?;
        Self::open_file(&data_dir.join("flows.db"))
    }

    /// Opens (creating and migrating) the database file at `path`.
    pub fn open_file(path: &Path) -> StoreResult<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt(format!(
                "{} cannot use WAL mode (journal mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        schema::migrate(&mut conn, path)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in a write transaction, committing when it returns `Ok`.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// [`Self::write`] without waiting for the disk (`synchronous=NORMAL` for this commit:
    /// it survives a crash of the process, and the next durable commit's fsync carries it).
    /// For claims only: a claim lost to a power cut means its step runs again, which steps
    /// may anyway (at least once).
    fn write_lazily<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut conn = self.conn();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        conn.pragma_update(None, "synchronous", "FULL")?;
        out
    }

    /// Runs `f` in a read transaction (one consistent snapshot).
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        f(&tx)
    }
}

/// An opaque pagination token for a key.
pub(super) fn encode_token(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

pub(super) fn decode_token(token: &str) -> StoreResult<String> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| StoreError::InvalidToken(token.into()))
}

pub(super) fn json_text(v: &serde_json::Value) -> String {
    serde_json::to_string(v).expect("a JSON value serialises")
}

pub(super) fn parse_json(s: &str) -> StoreResult<serde_json::Value> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("bad JSON column: {e}")))
}

/// Keeps `max` items of `rows` (fetched with one extra) and the token of the next page.
pub(super) fn paginate<T>(mut rows: Vec<T>, max: usize, key: impl Fn(&T) -> String) -> Page<T> {
    let next_token = if rows.len() > max {
        rows.truncate(max);
        rows.last().map(|r| encode_token(&key(r)))
    } else {
        None
    };
    Page {
        items: rows,
        next_token,
    }
}

impl FlowStore for SqliteFlowStore {
    fn create_machine(&self, m: &NewMachine, now: Millis) -> StoreResult<CreatedMachine> {
        self.write(|tx| machines::create(tx, m, now))
    }

    fn describe_machine(&self, arn: &str) -> StoreResult<Machine> {
        self.read(|tx| machines::get(tx, arn))
    }

    fn update_machine(&self, arn: &str, u: &MachineUpdate, now: Millis) -> StoreResult<Machine> {
        self.write(|tx| machines::update(tx, arn, u, now))
    }

    fn delete_machine(&self, arn: &str) -> StoreResult<()> {
        self.write(|tx| machines::delete(tx, arn))
    }

    fn list_machines(&self, max: usize, token: Option<&str>) -> StoreResult<Page<Machine>> {
        self.read(|tx| machines::list(tx, max, token))
    }

    fn revision(&self, revision_id: &str) -> StoreResult<Revision> {
        self.read(|tx| machines::revision(tx, revision_id))
    }

    fn tag_machine(&self, arn: &str, tags: &BTreeMap<String, String>) -> StoreResult<()> {
        self.write(|tx| machines::retag(tx, arn, |t| t.extend(tags.clone())))
    }

    fn untag_machine(&self, arn: &str, keys: &[String]) -> StoreResult<()> {
        self.write(|tx| {
            machines::retag(tx, arn, |t| {
                for k in keys {
                    t.remove(k);
                }
            })
        })
    }

    fn publish_version(
        &self,
        machine_arn: &str,
        description: &str,
        expected_revision: Option<&str>,
        now: Millis,
    ) -> StoreResult<Version> {
        self.write(|tx| machines::publish(tx, machine_arn, description, expected_revision, now))
    }

    fn describe_version(&self, version_arn: &str) -> StoreResult<Version> {
        self.read(|tx| machines::version(tx, version_arn))
    }

    fn list_versions(
        &self,
        machine_arn: &str,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<Version>> {
        self.read(|tx| machines::list_versions(tx, machine_arn, max, token))
    }

    fn delete_version(&self, version_arn: &str) -> StoreResult<()> {
        self.write(|tx| machines::delete_version(tx, version_arn))
    }

    fn create_alias(
        &self,
        machine_arn: &str,
        name: &str,
        description: &str,
        routing: &[Route],
        now: Millis,
    ) -> StoreResult<Alias> {
        self.write(|tx| machines::create_alias(tx, machine_arn, name, description, routing, now))
    }

    fn describe_alias(&self, alias_arn: &str) -> StoreResult<Alias> {
        self.read(|tx| machines::alias(tx, alias_arn))
    }

    fn update_alias(
        &self,
        alias_arn: &str,
        description: Option<&str>,
        routing: Option<&[Route]>,
        now: Millis,
    ) -> StoreResult<Alias> {
        self.write(|tx| machines::update_alias(tx, alias_arn, description, routing, now))
    }

    fn delete_alias(&self, alias_arn: &str) -> StoreResult<()> {
        self.write(|tx| machines::delete_alias(tx, alias_arn))
    }

    fn list_aliases(&self, machine_arn: &str) -> StoreResult<Vec<Alias>> {
        self.read(|tx| machines::list_aliases(tx, machine_arn))
    }

    fn start_execution(
        &self,
        e: &NewExecution,
        events: &[NewEvent],
        steps: &[NewStep],
        now: Millis,
    ) -> StoreResult<Started> {
        self.write(|tx| executions::start(tx, e, events, steps, now))
    }

    fn describe_execution(&self, arn: &str) -> StoreResult<Execution> {
        self.read(|tx| executions::get(tx, arn))
    }

    fn list_executions(
        &self,
        machine_arn: &str,
        status: Option<ExecutionStatus>,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<Execution>> {
        self.read(|tx| executions::list(tx, machine_arn, status, max, token))
    }

    fn stop_execution(
        &self,
        arn: &str,
        error: Option<&str>,
        cause: Option<&str>,
        events: &[NewEvent],
        now: Millis,
    ) -> StoreResult<Execution> {
        self.write(|tx| executions::stop(tx, arn, error, cause, events, now))
    }

    fn redrive_execution(
        &self,
        arn: &str,
        events: &[NewEvent],
        steps: &[NewStep],
        now: Millis,
    ) -> StoreResult<Execution> {
        self.write(|tx| executions::redrive(tx, arn, events, steps, now))
    }

    fn append_events(
        &self,
        execution_arn: &str,
        events: &[NewEvent],
        now: Millis,
    ) -> StoreResult<Completion> {
        self.write(|tx| {
            let (id, status) = executions::id_status(tx, execution_arn)?;
            if !status.is_open() {
                return Err(StoreError::ExecutionNotRunning(execution_arn.into()));
            }
            Ok(if history::append(tx, id, events, now)? {
                Completion::Committed
            } else {
                Completion::HistoryLimit
            })
        })
    }

    fn history(
        &self,
        execution_arn: &str,
        reverse: bool,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<HistoryEvent>> {
        self.read(|tx| history::read(tx, execution_arn, reverse, max, token))
    }

    fn claim_due(&self, now: Millis, limit: usize, lease_ms: i64) -> StoreResult<Vec<Step>> {
        self.write_lazily(|tx| steps::claim(tx, now, limit, lease_ms, None))
    }

    fn claim_execution_step(
        &self,
        execution_arn: &str,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Option<Step>> {
        self.write_lazily(|tx| {
            let (id, _) = executions::id_status(tx, execution_arn)?;
            Ok(steps::claim(tx, now, 1, lease_ms, Some(id))?.pop())
        })
    }

    fn renew_claim(&self, step: &Step, now: Millis, lease_ms: i64) -> StoreResult<bool> {
        self.write_lazily(|tx| steps::renew(tx, step, now, lease_ms))
    }

    fn complete(&self, step: &Step, t: &Transition, now: Millis) -> StoreResult<Completion> {
        self.write(|tx| steps::complete(tx, step, t, now))
    }

    fn next_due(&self) -> StoreResult<Option<Millis>> {
        self.read(steps::next_due)
    }

    fn join_results(&self, execution_arn: &str, key: &str) -> StoreResult<JoinResults> {
        self.read(|tx| {
            let (id, _) = executions::id_status(tx, execution_arn)?;
            joins::results(tx, id, key)
        })
    }

    fn create_task_token(&self, step: &Step, now: Millis) -> StoreResult<String> {
        self.write(|tx| steps::create_token(tx, step, now))
    }

    fn resolve_task_token(
        &self,
        token: &str,
        resolution: &TokenResolution,
        now: Millis,
    ) -> StoreResult<TokenAnswer> {
        self.write(|tx| steps::resolve_token(tx, token, resolution, now))
    }

    fn heartbeat_task_token(&self, token: &str, now: Millis) -> StoreResult<TokenAnswer> {
        self.write(|tx| steps::heartbeat_token(tx, token, now))
    }

    fn task_token(&self, token: &str) -> StoreResult<TaskToken> {
        self.read(|tx| steps::token(tx, token))
    }

    fn purge_finished(&self, before: Millis) -> StoreResult<usize> {
        self.write(|tx| executions::purge(tx, before))
    }
}
