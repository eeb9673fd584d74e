//! The PostgreSQL [`super::FlowStore`] (cluster mode, issue 18): the same semantics as the
//! SQLite store over a shared [`nimbus_pg::Pg`] pool, several nodes claiming steps at once
//! (`FOR UPDATE SKIP LOCKED` with leases). Tables are named `flows_…`.
//!
//! SQLite serialises every write with `BEGIN IMMEDIATE`; here the rows carry the locks:
//! - every write that changes an execution (start's re-use of a name aside, which goes by
//!   the unique ARN) first locks its `flows_executions` row, so its history ids stay dense,
//!   its fan-outs count each child once and stop, complete, redrive and token resolution
//!   of one execution take turns; the lock order is execution, then step, then machine;
//! - a claim locks the due steps it takes with `FOR UPDATE SKIP LOCKED` and sets their
//!   lease (`available_at`) and claim id in the same statement; completing re-locks the
//!   step and checks that the claim id is still the caller's;
//! - a fan-out report also locks its `flows_joins` row, so the parent continuation is
//!   enqueued by exactly one child;
//! - machine-level writes (update, delete, publish, tags, aliases) lock the machine row;
//!   a start holds it `FOR SHARE` so a delete waits for it.
//!
//! A transaction that PostgreSQL aborts as a deadlock or serialisation failure is retried
//! a few times before the error is returned.

mod executions;
mod history;
mod joins;
mod machines;
mod schema;
mod steps;

use super::error::{StoreError, StoreResult};
use super::model::*;
use super::FlowStore;
use nimbus_pg::{Pg, PgError, Row};
use std::collections::BTreeMap;

pub(super) use super::sqlite::{decode_token, json_text, paginate, parse_json};

/// The PostgreSQL backend.
pub struct PgFlowStore {
    pg: Pg,
}

impl std::fmt::Debug for PgFlowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFlowStore").field("pg", &self.pg).finish()
    }
}

impl From<PgError> for StoreError {
    /// [`StoreError::Backend`] with the server's message (`db error: ERROR: …`), which
    /// the error's own text leaves to its source.
    fn from(e: PgError) -> Self {
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let more = s.to_string();
            if !text.contains(&more) {
                text = format!("{text}: {more}");
            }
            source = s.source();
        }
        StoreError::Backend(text)
    }
}

/// A transaction whose statements fail with [`StoreError`] (see [`nimbus_pg::Pg::retrying`]).
pub(super) type Tx<'a> = nimbus_pg::Tx<'a, StoreError>;

/// How a transaction starts.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Read committed, durable commit.
    Write,
    /// A write whose commit does not wait for the WAL flush (claims and renewals: a claim
    /// lost to a crash of the server means its step runs again, which steps may anyway).
    Lazy,
    /// One consistent snapshot, read only.
    Read,
    /// One statement, read only: consistent by itself, no snapshot to set up.
    ReadOne,
}

impl PgFlowStore {
    /// Opens the store on `pg`, creating or migrating the `flows_…` tables.
    pub fn open(pg: &Pg) -> StoreResult<Self> {
        pg.migrate(schema::COMPONENT, schema::MIGRATIONS)?;
        Ok(Self { pg: pg.clone() })
    }

    fn run<T>(&self, mode: Mode, f: impl AsyncFn(&Tx<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let setup = match mode {
            Mode::Read => Some("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
            Mode::Lazy => Some("SET LOCAL synchronous_commit = off"),
            Mode::Write | Mode::ReadOne => None,
        };
        self.pg.retrying(setup, f)
    }

    fn write<T>(&self, f: impl AsyncFn(&Tx<'_>) -> StoreResult<T>) -> StoreResult<T> {
        self.run(Mode::Write, f)
    }

    fn write_lazily<T>(&self, f: impl AsyncFn(&Tx<'_>) -> StoreResult<T>) -> StoreResult<T> {
        self.run(Mode::Lazy, f)
    }

    fn read<T>(&self, f: impl AsyncFn(&Tx<'_>) -> StoreResult<T>) -> StoreResult<T> {
        self.run(Mode::Read, f)
    }

    /// [`Self::read`] for `f` of a single statement.
    fn read_one<T>(&self, f: impl AsyncFn(&Tx<'_>) -> StoreResult<T>) -> StoreResult<T> {
        self.run(Mode::ReadOne, f)
    }
}

/// A non-negative count column as `u32`.
pub(super) fn u32_of(r: &Row, idx: usize) -> u32 {
    let v: i64 = r.get(idx);
    v.clamp(0, u32::MAX as i64) as u32
}

impl FlowStore for PgFlowStore {
    fn create_machine(&self, m: &NewMachine, now: Millis) -> StoreResult<CreatedMachine> {
        self.write(async |tx| machines::create(tx, m, now).await)
    }

    fn describe_machine(&self, arn: &str) -> StoreResult<Machine> {
        self.read_one(async |tx| machines::get(tx, arn).await)
    }

    fn update_machine(&self, arn: &str, u: &MachineUpdate, now: Millis) -> StoreResult<Machine> {
        self.write(async |tx| machines::update(tx, arn, u, now).await)
    }

    fn delete_machine(&self, arn: &str) -> StoreResult<()> {
        self.write(async |tx| machines::delete(tx, arn).await)
    }

    fn list_machines(&self, max: usize, token: Option<&str>) -> StoreResult<Page<Machine>> {
        self.read(async |tx| machines::list(tx, max, token).await)
    }

    fn revision(&self, revision_id: &str) -> StoreResult<Revision> {
        self.read_one(async |tx| machines::revision(tx, revision_id).await)
    }

    fn tag_machine(&self, arn: &str, tags: &BTreeMap<String, String>) -> StoreResult<()> {
        self.write(async |tx| machines::retag(tx, arn, |t| t.extend(tags.clone())).await)
    }

    fn untag_machine(&self, arn: &str, keys: &[String]) -> StoreResult<()> {
        self.write(async |tx| {
            machines::retag(tx, arn, |t| {
                for k in keys {
                    t.remove(k);
                }
            })
            .await
        })
    }

    fn publish_version(
        &self,
        machine_arn: &str,
        description: &str,
        expected_revision: Option<&str>,
        now: Millis,
    ) -> StoreResult<Version> {
        self.write(async |tx| {
            machines::publish(tx, machine_arn, description, expected_revision, now).await
        })
    }

    fn describe_version(&self, version_arn: &str) -> StoreResult<Version> {
        self.read(async |tx| machines::version(tx, version_arn).await)
    }

    fn list_versions(
        &self,
        machine_arn: &str,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<Version>> {
        self.read(async |tx| machines::list_versions(tx, machine_arn, max, token).await)
    }

    fn delete_version(&self, version_arn: &str) -> StoreResult<()> {
        self.write(async |tx| machines::delete_version(tx, version_arn).await)
    }

    fn create_alias(
        &self,
        machine_arn: &str,
        name: &str,
        description: &str,
        routing: &[Route],
        now: Millis,
    ) -> StoreResult<Alias> {
        self.write(async |tx| {
            machines::create_alias(tx, machine_arn, name, description, routing, now).await
        })
    }

    fn describe_alias(&self, alias_arn: &str) -> StoreResult<Alias> {
        self.read_one(async |tx| machines::alias(tx, alias_arn).await)
    }

    fn update_alias(
        &self,
        alias_arn: &str,
        description: Option<&str>,
        routing: Option<&[Route]>,
        now: Millis,
    ) -> StoreResult<Alias> {
        self.write(async |tx| {
            machines::update_alias(tx, alias_arn, description, routing, now).await
        })
    }

    fn delete_alias(&self, alias_arn: &str) -> StoreResult<()> {
        self.write(async |tx| machines::delete_alias(tx, alias_arn).await)
    }

    fn list_aliases(&self, machine_arn: &str) -> StoreResult<Vec<Alias>> {
        self.read(async |tx| machines::list_aliases(tx, machine_arn).await)
    }

    fn start_execution(
        &self,
        e: &NewExecution,
        events: &[NewEvent],
        steps: &[NewStep],
        now: Millis,
    ) -> StoreResult<Started> {
        self.write(async |tx| executions::start(tx, e, events, steps, now).await)
    }

    fn describe_execution(&self, arn: &str) -> StoreResult<Execution> {
        self.read_one(async |tx| executions::get(tx, arn).await)
    }

    fn list_executions(
        &self,
        machine_arn: &str,
        status: Option<ExecutionStatus>,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<Execution>> {
        self.read(async |tx| executions::list(tx, machine_arn, status, max, token).await)
    }

    fn stop_execution(
        &self,
        arn: &str,
        error: Option<&str>,
        cause: Option<&str>,
        events: &[NewEvent],
        now: Millis,
    ) -> StoreResult<Execution> {
        self.write(async |tx| executions::stop(tx, arn, error, cause, events, now).await)
    }

    fn redrive_execution(
        &self,
        arn: &str,
        events: &[NewEvent],
        steps: &[NewStep],
        now: Millis,
    ) -> StoreResult<Execution> {
        self.write(async |tx| executions::redrive(tx, arn, events, steps, now).await)
    }

    fn append_events(
        &self,
        execution_arn: &str,
        events: &[NewEvent],
        now: Millis,
    ) -> StoreResult<Completion> {
        self.write(async |tx| {
            let (id, status) = executions::lock(tx, execution_arn).await?;
            if !status.is_open() {
                return Err(StoreError::ExecutionNotRunning(execution_arn.into()));
            }
            Ok(if history::append(tx, id, events, now).await? {
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
        self.read(async |tx| history::read(tx, execution_arn, reverse, max, token).await)
    }

    fn claim_due(&self, now: Millis, limit: usize, lease_ms: i64) -> StoreResult<Vec<Step>> {
        self.write_lazily(async |tx| steps::claim(tx, now, limit, lease_ms, None).await)
    }

    fn claim_execution_step(
        &self,
        execution_arn: &str,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Option<Step>> {
        self.write_lazily(async |tx| {
            let (id, _) = executions::id_status(tx, execution_arn).await?;
            Ok(steps::claim(tx, now, 1, lease_ms, Some(id)).await?.pop())
        })
    }

    fn renew_claim(&self, step: &Step, now: Millis, lease_ms: i64) -> StoreResult<bool> {
        self.write_lazily(async |tx| steps::renew(tx, step, now, lease_ms).await)
    }

    fn complete(&self, step: &Step, t: &Transition, now: Millis) -> StoreResult<Completion> {
        self.write(async |tx| steps::complete(tx, step, t, now).await)
    }

    fn next_due(&self) -> StoreResult<Option<Millis>> {
        self.read_one(async |tx| steps::next_due(tx).await)
    }

    fn join_results(&self, execution_arn: &str, key: &str) -> StoreResult<JoinResults> {
        self.read(async |tx| {
            let (id, _) = executions::id_status(tx, execution_arn).await?;
            joins::results(tx, id, key).await
        })
    }

    fn create_task_token(&self, step: &Step, now: Millis) -> StoreResult<String> {
        self.write(async |tx| steps::create_token(tx, step, now).await)
    }

    fn resolve_task_token(
        &self,
        token: &str,
        resolution: &TokenResolution,
        now: Millis,
    ) -> StoreResult<TokenAnswer> {
        self.write(async |tx| steps::resolve_token(tx, token, resolution, now).await)
    }

    fn heartbeat_task_token(&self, token: &str, now: Millis) -> StoreResult<TokenAnswer> {
        self.write(async |tx| steps::heartbeat_token(tx, token, now).await)
    }

    fn task_token(&self, token: &str) -> StoreResult<TaskToken> {
        self.read_one(async |tx| steps::token(tx, token).await)
    }

    fn purge_finished(&self, before: Millis) -> StoreResult<usize> {
        self.write(async |tx| executions::purge(tx, before).await)
    }
}
