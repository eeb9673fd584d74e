//! The workflow engine's durable store: state machines and their revisions, versions and
//! aliases; executions; history events; the durable step queue the executor drives; task
//! tokens; retention.
//!
//! [`FlowStore`] speaks domain operations only: [`sqlite::SqliteFlowStore`] implements it
//! for one node, [`postgres::PgFlowStore`] for several nodes sharing one database. It is
//! synchronous: async callers use `spawn_blocking`.
//!
//! **Outbox.** Every state transition commits its history events, the execution's next
//! steps and the execution's new status in one transaction
//! ([`FlowStore::complete`]); starting an execution records `ExecutionStarted` and
//! enqueues the first step together. A `kill -9` therefore loses nothing: a step claimed
//! but not completed becomes claimable again when its lease expires, so steps run at
//! least once.

pub mod error;
pub mod model;
pub mod postgres;
pub mod sqlite;

pub use error::{StoreError, StoreResult};
pub use model::*;

use std::collections::BTreeMap;

/// The durable store of the workflow engine.
pub trait FlowStore: Send + Sync + 'static {
    // ---- state machines ----

    /// Creates a state machine (revision 1). An identical request for an existing name
    /// (same definition, type and role) returns the existing machine; another one fails
    /// with [`StoreError::MachineAlreadyExists`].
    fn create_machine(&self, m: &NewMachine, now: Millis) -> StoreResult<CreatedMachine>;
    fn describe_machine(&self, arn: &str) -> StoreResult<Machine>;
    /// Makes a new revision from the current one and the given fields.
    fn update_machine(&self, arn: &str, u: &MachineUpdate, now: Millis) -> StoreResult<Machine>;
    /// Marks the machine `DELETING`: it takes no new executions, running ones go on.
    /// Removed for good (with versions and aliases) once no execution is open.
    fn delete_machine(&self, arn: &str) -> StoreResult<()>;
    /// Machines by name; `max` per page.
    fn list_machines(&self, max: usize, token: Option<&str>) -> StoreResult<Page<Machine>>;
    /// A revision by id (an execution's definition).
    fn revision(&self, revision_id: &str) -> StoreResult<Revision>;
    fn tag_machine(&self, arn: &str, tags: &BTreeMap<String, String>) -> StoreResult<()>;
    fn untag_machine(&self, arn: &str, keys: &[String]) -> StoreResult<()>;

    // ---- versions and aliases ----

    /// Publishes the current revision as the next version number. When the current
    /// revision is already the latest version, that version is returned. `expected_revision`
    /// guards against a concurrent update ([`StoreError::Conflict`]).
    fn publish_version(
        &self,
        machine_arn: &str,
        description: &str,
        expected_revision: Option<&str>,
        now: Millis,
    ) -> StoreResult<Version>;
    fn describe_version(&self, version_arn: &str) -> StoreResult<Version>;
    /// Versions newest first.
    fn list_versions(
        &self,
        machine_arn: &str,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<Version>>;
    /// Deletes a version no alias routes to.
    fn delete_version(&self, version_arn: &str) -> StoreResult<()>;
    fn create_alias(
        &self,
        machine_arn: &str,
        name: &str,
        description: &str,
        routing: &[Route],
        now: Millis,
    ) -> StoreResult<Alias>;
    fn describe_alias(&self, alias_arn: &str) -> StoreResult<Alias>;
    fn update_alias(
        &self,
        alias_arn: &str,
        description: Option<&str>,
        routing: Option<&[Route]>,
        now: Millis,
    ) -> StoreResult<Alias>;
    fn delete_alias(&self, alias_arn: &str) -> StoreResult<()>;
    /// Aliases by name.
    fn list_aliases(&self, machine_arn: &str) -> StoreResult<Vec<Alias>>;

    // ---- executions ----

    /// Starts an execution: records it RUNNING with `events` (from `ExecutionStarted`) and
    /// enqueues `steps`, atomically. Name idempotency as `StartExecution`: an open
    /// execution of that name with an identical input is returned (`created: false`); a
    /// different input, or a finished execution of that name stopped less than 90 days
    /// ago, fails with [`StoreError::ExecutionAlreadyExists`].
    fn start_execution(
        &self,
        e: &NewExecution,
        events: &[NewEvent],
        steps: &[NewStep],
        now: Millis,
    ) -> StoreResult<Started>;
    fn describe_execution(&self, arn: &str) -> StoreResult<Execution>;
    /// A machine's executions, newest first, optionally of one status.
    fn list_executions(
        &self,
        machine_arn: &str,
        status: Option<ExecutionStatus>,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<Execution>>;
    /// Aborts an open execution: status ABORTED with `error`/`cause`, `events` appended
    /// (`ExecutionAborted`, the aborted states), its steps dropped and its tokens closed.
    fn stop_execution(
        &self,
        arn: &str,
        error: Option<&str>,
        cause: Option<&str>,
        events: &[NewEvent],
        now: Millis,
    ) -> StoreResult<Execution>;
    /// Redrives a FAILED, ABORTED or TIMED_OUT execution: RUNNING again, redrive count
    /// up, `events` (`ExecutionRedriven`) appended, and the redrive step its failure
    /// recorded ([`ExecutionUpdate::redrive`]) enqueued — `steps` when it recorded none.
    fn redrive_execution(
        &self,
        arn: &str,
        events: &[NewEvent],
        steps: &[NewStep],
        now: Millis,
    ) -> StoreResult<Execution>;

    // ---- history ----

    /// Appends events outside a step (e.g. from the API); see [`FlowStore::complete`] for
    /// the history bound.
    fn append_events(
        &self,
        execution_arn: &str,
        events: &[NewEvent],
        now: Millis,
    ) -> StoreResult<Completion>;
    /// A page of the history, oldest first or (`reverse`) newest first.
    fn history(
        &self,
        execution_arn: &str,
        reverse: bool,
        max: usize,
        token: Option<&str>,
    ) -> StoreResult<Page<HistoryEvent>>;

    // ---- the step queue ----

    /// Claims up to `limit` steps due at `now` (oldest first) for `lease_ms`.
    fn claim_due(&self, now: Millis, limit: usize, lease_ms: i64) -> StoreResult<Vec<Step>>;
    /// Claims the earliest due step of one execution (a synchronous start runs its first
    /// step in the caller).
    fn claim_execution_step(
        &self,
        execution_arn: &str,
        now: Millis,
        lease_ms: i64,
    ) -> StoreResult<Option<Step>>;
    /// Extends a held claim; false when it was lost.
    fn renew_claim(&self, step: &Step, now: Millis, lease_ms: i64) -> StoreResult<bool>;
    /// Completes a claimed step with its transition, atomically and only while the claim
    /// is held (a claim past its lease still holds until another worker claims the step).
    /// Beyond the history bound the execution fails instead ([`Completion::HistoryLimit`]).
    fn complete(&self, step: &Step, t: &Transition, now: Millis) -> StoreResult<Completion>;
    /// When the earliest step becomes claimable (due, or its lease expires); `None` when
    /// the queue is empty.
    fn next_due(&self) -> StoreResult<Option<Millis>>;
    /// What the children of an open or closed fan-out ended with (read by its parent's
    /// continuation, which then drops it with [`Transition::drop_joins`]).
    fn join_results(&self, execution_arn: &str, key: &str) -> StoreResult<JoinResults>;

    // ---- task tokens ----

    /// The task token of a claimed step (bound to its execution, scope, state and
    /// attempt). Idempotent: a re-run of the step gets the same open token back.
    fn create_task_token(&self, step: &Step, now: Millis) -> StoreResult<String>;
    /// `SendTaskSuccess` / `SendTaskFailure`: records the resolution and enqueues a step
    /// for the token's state carrying it ([`Step::resolution`]).
    fn resolve_task_token(
        &self,
        token: &str,
        resolution: &TokenResolution,
        now: Millis,
    ) -> StoreResult<TokenAnswer>;
    /// `SendTaskHeartbeat`.
    fn heartbeat_task_token(&self, token: &str, now: Millis) -> StoreResult<TokenAnswer>;
    fn task_token(&self, token: &str) -> StoreResult<TaskToken>;

    // ---- retention ----

    /// Deletes executions finished before `before` with their history, and machines left
    /// `DELETING` with no open execution; returns the number of executions deleted.
    fn purge_finished(&self, before: Millis) -> StoreResult<usize>;
}

/// An execution's ARN: the machine's with `execution` for `stateMachine`, then the name
/// (`arn:aws:states:us-east-1:123:execution:Machine:run-1`).
pub fn execution_arn(machine_arn: &str, name: &str) -> String {
    let base = machine_arn.replacen(":stateMachine:", ":execution:", 1);
    format!("{base}:{name}")
}

/// The scope of child `index` of fan-out `key` ([`NewJoin`]).
pub fn child_scope(key: &str, index: u32) -> String {
    format!("{key}/{index}")
}

/// A fresh task token: 256 random bits, URL-safe, after a letter — a token starting with
/// `-` (one in 64 of bare base64url) would read as an option to the AWS CLI
/// (`aws stepfunctions send-task-success --task-token -x…` fails).
pub fn new_task_token() -> String {
    use base64::Engine as _;
    let bytes: [u8; 32] = rand::random();
    format!(
        "T{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod token_tests {
    #[test]
    fn task_tokens_never_start_like_an_option() {
        for _ in 0..2000 {
            let t = super::new_task_token();
            assert!(t.starts_with('T') && t.len() == 44, "{t}");
        }
    }
}
