//! Lambda layers in the registry: the [`LayerStore`] trait and its types. A layer version
//! is immutable once published (only its policy changes); its number is never reused,
//! even after it is deleted. The zip lives in the [`crate::CodeStore`] like function code;
//! the functions that use a layer version pin its content in their own configuration
//! ([`nimbus_core::LayerRef`]), so deleting the version leaves them working.

use crate::{CodeInfo, Result};

/// One published layer version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerVersion {
    pub name: String,
    pub version: u64,
    pub description: String,
    pub license_info: String,
    /// Runtime identifiers (`python3.12`, …); empty: any runtime.
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    /// Hex SHA-256 of the zip (its content address).
    pub code_sha256: String,
    /// Size of the zip.
    pub code_size: u64,
    /// Bytes of the extracted files.
    pub unzipped_size: u64,
    /// Lambda's `CreatedDate` (`2018-11-27T15:10:45.123+0000`).
    pub created_date: String,
}

/// What [`LayerStore::publish_layer_version`] stores.
#[derive(Debug, Clone)]
pub struct NewLayerVersion {
    pub description: String,
    pub license_info: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    /// The zip, already stored in the code store (and pinned by the caller).
    pub code: CodeInfo,
    pub unzipped_size: u64,
}

/// A layer version's resource policy: its statements and the revision id that changes with
/// every add or remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerPolicy {
    pub statements: Vec<serde_json::Value>,
    pub revision_id: String,
}

/// Layers and their versions. Implementations are safe to call from many threads;
/// methods are blocking and fast. Names are validated by the caller
/// ([`nimbus_core::arn::validate_layer_name`]).
pub trait LayerStore: Send + Sync + 'static {
    /// Publishes the next version of `name` (1 for a new layer; one past the highest
    /// number ever published otherwise).
    fn publish_layer_version(&self, name: &str, new: &NewLayerVersion) -> Result<LayerVersion>;
    /// `StoreError::NotFound` when the version does not exist (or was deleted).
    fn get_layer_version(&self, name: &str, version: u64) -> Result<LayerVersion>;
    /// Every version of `name` (of every layer with `None`), by name, newest first.
    fn list_layer_versions(&self, name: Option<&str>) -> Result<Vec<LayerVersion>>;
    /// Deletes a version; false when there was none (Lambda answers 204 either way).
    fn delete_layer_version(&self, name: &str, version: u64) -> Result<bool>;
    /// Adds a statement whose `Sid` is `statement_id` (`Conflict` if the id exists;
    /// `PreconditionFailed` when `expected_revision` is stale; `NotFound` without the
    /// version). Returns the statement as stored and the new revision id.
    fn add_layer_permission(
        &self,
        name: &str,
        version: u64,
        statement_id: &str,
        statement: serde_json::Value,
        expected_revision: Option<&str>,
    ) -> Result<(serde_json::Value, String)>;
    /// The version's policy (no statements: an empty list).
    fn layer_policy(&self, name: &str, version: u64) -> Result<LayerPolicy>;
    /// Removes a statement (`NotFound` if missing).
    fn remove_layer_permission(
        &self,
        name: &str,
        version: u64,
        statement_id: &str,
        expected_revision: Option<&str>,
    ) -> Result<()>;
}
