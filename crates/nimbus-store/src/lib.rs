//! Nimbus storage: the [`Store`] trait (function registry and logs) with its SQLite
//! backend, and content-addressed code packages on disk ([`CodeStore`]).
//!
//! Used by the gateway and the server. Everything acknowledged by a `Store` method is
//! durable: SQLite runs in WAL mode with `synchronous=FULL` for the registry.

mod backlog;
mod bus;
mod code;
mod db;
mod error;
mod events;
mod fifo;
mod history;
mod layers;
mod logs;
pub mod postgres;
mod queues;
mod roles;
mod secrets;
mod sqlite;

pub use backlog::{BacklogLimit, BacklogUsage};
pub use bus::{Bus, BusStore, Rule, RuleTarget, SqliteBusStore, DEFAULT_BUS};
pub use code::{
    opt_key, zip_dir, CodeInfo, CodePin, CodeStore, CollectReport, LiveCode, PinnedCode,
    MAX_ENTRIES,
};
pub use db::{Db, WriteTx};
pub use error::StoreError;
pub use events::{Enqueued, EventQueue, EventUpdate, SqliteEventQueue, StoredResult};
pub use fifo::{sequence_number, valid_fifo_token, DEDUP_INTERVAL_MS};
pub use history::{
    Alarm, HistoryLimits, HistoryStore, MinuteRow, SqliteHistoryStore, HISTORY_RETENTION_MS,
};
pub use layers::{LayerPolicy, LayerStore, LayerVersion, NewLayerVersion};
pub use logs::{LogEntry, LogPage, LogQuery, LogStream};
pub use postgres::registry::PgStore;
pub use queues::{
    is_fifo_name, is_receipt_handle, md5, validate_queue_name, DedupScope, EventSourceMapping,
    Message, NewMessage, QueueDepth, QueueInfo, QueueSettings, QueueStats, QueueStore,
    RedrivePolicy, Redriven, SqliteQueueStore, ThroughputLimit, MAX_BATCH, MAX_MESSAGE_BYTES,
};
pub use roles::{Role, RoleStore, RoleUpdate};
pub use secrets::{
    validate_secret_name, write_private_file, AccessKey, MasterKey, SecretInfo, SecretStore,
    HANDOVER, MAX_SECRET_NAME, MAX_SECRET_VALUE,
};
pub use sqlite::{open_db, LogLimits, LogUsage, SqliteStore, LOG_RETENTION_LINES};

use nimbus_core::{Alias, FunctionConfig, FunctionMeta, FunctionName, FunctionVersion};
use std::collections::{BTreeMap, HashSet};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Outcome of [`Store::deploy`].
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The new `$LATEST`.
    pub latest: FunctionVersion,
    /// The immutable version number this deploy published (or the newest existing one when
    /// code and config did not change).
    pub version: String,
    /// True when the function did not exist before.
    pub created: bool,
}

/// The function registry and log store. Implementations must be safe to call from many
/// threads; methods are blocking and fast (callers on async runtimes may call them directly
/// for small operations).
pub trait Store: Send + Sync + 'static {
    /// The layers of this registry (Lambda's `PublishLayerVersion` and friends).
    fn layers(&self) -> &dyn LayerStore;
    /// Creates or updates `$LATEST` of `name` with `config` and the code `code`
    /// (already stored in the [`CodeStore`]), then publishes an immutable numbered version
    /// (1, 2, …) unless the newest numbered version already has the same code and config.
    fn deploy(
        &self,
        name: &FunctionName,
        config: &FunctionConfig,
        code: &CodeInfo,
    ) -> Result<Deployed>;
    /// `$LATEST` when `qualifier` is `None` or `"$LATEST"`, else the numbered version.
    /// `StoreError::NotFound` when missing. Aliases are not resolved here: resolve them with
    /// [`Store::get_alias`] first.
    fn get(&self, name: &FunctionName, qualifier: Option<&str>) -> Result<FunctionVersion>;
    /// `$LATEST` of every function, sorted by name.
    fn list(&self) -> Result<Vec<FunctionVersion>>;
    /// One page of [`Store::list`]: at most `limit` functions whose names sort after
    /// `after` (from the first when `None`).
    fn list_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionVersion>>;
    /// `$LATEST` first, then the numbered versions ascending.
    fn versions(&self, name: &FunctionName) -> Result<Vec<FunctionVersion>>;
    /// Deletes the function, all its versions and its logs. `StoreError::NotFound` when missing.
    fn delete(&self, name: &FunctionName) -> Result<()>;
    /// Every code package (hex SHA-256) the registry refers to: the `$LATEST` and every
    /// numbered version of every function (aliases point at versions, so their code is among
    /// these), every layer version, the layers every function version uses (even deleted
    /// layer versions) and the merged `/opt` tree of each ([`opt_key`]). What the code
    /// store's garbage collection keeps.
    fn code_references(&self) -> Result<HashSet<String>>;
    /// Appends log lines (batched by the caller). Assigns `seq`; the oldest lines of a
    /// function over its bounds (lines, bytes) are pruned, and while the store is over its
    /// total bound, the oldest lines of the functions holding the most ([`LogLimits`]).
    fn append_logs(&self, entries: &[LogEntry]) -> Result<()>;
    /// Log lines of `function` with `seq > after`, oldest first, at most `limit`.
    fn logs(&self, function: &FunctionName, after: i64, limit: usize) -> Result<Vec<LogEntry>>;
    /// Log lines matching `q` of the functions named (every function for `None`), oldest
    /// first, and the cursor past every line looked at.
    fn query_logs(&self, functions: Option<&[String]>, q: &LogQuery) -> Result<LogPage>;
    /// How much the log store holds, and its bound.
    fn log_usage(&self) -> LogUsage;
    /// Gives the space of deleted and pruned lines back to the file system when enough of
    /// it is free (blocking; call it off the request path). Returns the bytes given back.
    fn maintain_logs(&self) -> Result<u64>;

    // ---- Lambda control plane (CreateFunction, UpdateFunction*, PublishVersion, …) ----

    /// Creates `$LATEST` (Lambda's CreateFunction): `StoreError::Conflict` when the function
    /// exists. With `publish`, also publishes version 1 and returns it as the second value.
    fn create(
        &self,
        name: &FunctionName,
        config: &FunctionConfig,
        code: &CodeInfo,
        tags: &BTreeMap<String, String>,
        publish: bool,
    ) -> Result<(FunctionVersion, Option<FunctionVersion>)>;
    /// Replaces the configuration and/or the code of `$LATEST` without publishing
    /// (UpdateFunctionConfiguration / UpdateFunctionCode). A new revision id and
    /// last-modified time every time; with neither `config` nor `code` nothing changes and
    /// the current `$LATEST` is returned (the revision is still checked). `expected_revision`
    /// that differs from `$LATEST`'s → `StoreError::PreconditionFailed`.
    fn update_latest(
        &self,
        name: &FunctionName,
        config: Option<&FunctionConfig>,
        code: Option<&CodeInfo>,
        expected_revision: Option<&str>,
    ) -> Result<FunctionVersion>;
    /// Publishes `$LATEST` as the next numbered version, unless the newest version already
    /// has identical code and config (then returns that one, as Lambda does).
    /// `description` overrides the version's description (it labels the version: a different
    /// description alone does not publish). `$LATEST` is not modified. Version numbers are
    /// never reused, even after [`Store::delete_version`]. `expected_code_sha256` (hex) or
    /// `expected_revision` not matching `$LATEST` → `StoreError::PreconditionFailed`.
    fn publish(
        &self,
        name: &FunctionName,
        description: Option<&str>,
        expected_code_sha256: Option<&str>,
        expected_revision: Option<&str>,
    ) -> Result<FunctionVersion>;
    /// Deletes one numbered version. `StoreError::Conflict` when an alias points at it
    /// (as its version or in its routing); `NotFound` when missing; `InvalidInput` for
    /// `$LATEST` or a qualifier that is not a version number.
    fn delete_version(&self, name: &FunctionName, version: &str) -> Result<()>;
    /// Reserved concurrency, tags and policy of a function. `NotFound` when missing.
    fn meta(&self, name: &FunctionName) -> Result<FunctionMeta>;
    fn set_reserved_concurrency(&self, name: &FunctionName, value: Option<u32>) -> Result<()>;
    /// Merges `tags` into the function's tags.
    fn tag(&self, name: &FunctionName, tags: &BTreeMap<String, String>) -> Result<()>;
    fn untag(&self, name: &FunctionName, keys: &[String]) -> Result<()>;
    /// Adds a policy statement whose `Sid` is `statement_id` (`Conflict` if the id exists;
    /// `PreconditionFailed` if `expected_revision` differs from the policy revision). Returns
    /// the new meta.
    fn add_permission(
        &self,
        name: &FunctionName,
        statement_id: &str,
        statement: serde_json::Value,
        expected_revision: Option<&str>,
    ) -> Result<FunctionMeta>;
    /// Removes a policy statement (`NotFound` if missing).
    fn remove_permission(
        &self,
        name: &FunctionName,
        statement_id: &str,
        expected_revision: Option<&str>,
    ) -> Result<()>;
    /// Creates an alias (`Conflict` if it exists; `NotFound` if the function or a version it
    /// names is missing; `InvalidInput` for a bad name, target or routing). The store assigns
    /// `revision_id` and stores version numbers in canonical form (`"01"` → `"1"`).
    fn create_alias(&self, function: &FunctionName, alias: &Alias) -> Result<Alias>;
    /// Updates the given fields of an alias (`PreconditionFailed` on revision mismatch); the
    /// resulting target and routing are checked as in [`Store::create_alias`].
    fn update_alias(
        &self,
        function: &FunctionName,
        alias: &str,
        function_version: Option<&str>,
        description: Option<&str>,
        routing: Option<&BTreeMap<String, f64>>,
        expected_revision: Option<&str>,
    ) -> Result<Alias>;
    fn get_alias(&self, function: &FunctionName, alias: &str) -> Result<Alias>;
    /// Aliases sorted by name; with `version`, only those pointing at it (as their version or
    /// in their routing).
    fn list_aliases(&self, function: &FunctionName, version: Option<&str>) -> Result<Vec<Alias>>;
    fn delete_alias(&self, function: &FunctionName, alias: &str) -> Result<()>;

    /// Sets the provisioned concurrency of `function` at `qualifier` (a version or an
    /// alias; the caller checks it exists). `NotFound` without the function.
    fn put_provisioned(
        &self,
        function: &FunctionName,
        qualifier: &str,
        requested: u32,
    ) -> Result<ProvisionedConfig>;
    /// Provisioned concurrency configs of `function` (all functions with `None`), sorted.
    fn list_provisioned(&self, function: Option<&FunctionName>) -> Result<Vec<ProvisionedConfig>>;
    /// Removes a config; false when there was none. Deleting the alias, version or function
    /// removes its configs too.
    fn delete_provisioned(&self, function: &FunctionName, qualifier: &str) -> Result<bool>;
}

/// A provisioned concurrency config (`PutProvisionedConcurrencyConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedConfig {
    pub function: FunctionName,
    /// A version number (canonical) or an alias name.
    pub qualifier: String,
    pub requested: u32,
    /// Lambda's `LastModified` format.
    pub last_modified: String,
}
