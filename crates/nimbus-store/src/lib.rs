//! Nimbus storage: the [`Store`] trait (function registry and logs) with its SQLite
//! backend, and content-addressed code packages on disk ([`CodeStore`]).
//!
//! Used by the gateway and the server. Everything acknowledged by a `Store` method is
//! durable: SQLite runs in WAL mode with `synchronous=FULL` for the registry.

mod code;
mod error;
mod logs;
mod sqlite;

pub use code::{zip_dir, CodeInfo, CodeStore, MAX_ENTRIES};
pub use error::StoreError;
pub use logs::{LogEntry, LogStream};
pub use sqlite::{SqliteStore, LOG_RETENTION_LINES};

use nimbus_core::{FunctionConfig, FunctionName, FunctionVersion};

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
    /// `StoreError::NotFound` when missing.
    fn get(&self, name: &FunctionName, qualifier: Option<&str>) -> Result<FunctionVersion>;
    /// `$LATEST` of every function, sorted by name.
    fn list(&self) -> Result<Vec<FunctionVersion>>;
    /// `$LATEST` first, then the numbered versions ascending.
    fn versions(&self, name: &FunctionName) -> Result<Vec<FunctionVersion>>;
    /// Deletes the function, all its versions and its logs. `StoreError::NotFound` when missing.
    fn delete(&self, name: &FunctionName) -> Result<()>;
    /// Appends log lines (batched by the caller). Assigns `seq`; entries older than the
    /// per-function retention bound are pruned.
    fn append_logs(&self, entries: &[LogEntry]) -> Result<()>;
    /// Log lines of `function` with `seq > after`, oldest first, at most `limit`.
    fn logs(&self, function: &FunctionName, after: i64, limit: usize) -> Result<Vec<LogEntry>>;
}
