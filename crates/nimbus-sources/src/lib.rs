//! External event sources: PostgreSQL change data capture, NATS (JetStream and core),
//! RabbitMQ, Redis Streams and MQTT feed functions with Lambda's event-source-mapping
//! semantics.
//!
//! - [`model`]: what a mapping is ([`SourceMapping`], [`SourceSpec`]), validated.
//! - [`source`]: the connector model: the [`Source`] trait and the [`Record`]s it yields.
//! - [`connectors`]: one module per broker.
//! - [`runner`]: one task per enabled mapping drives its connector: batching, filters,
//!   partial batch failures, retries, bisection, the on-failure destination,
//!   `MaximumConcurrency`, back-pressure, reconnecting with back-off, state.
//! - [`store`]: mappings and checkpoints (SQLite, `sources.db`); [`postgres`]: the same
//!   and the targets' outbox in PostgreSQL (cluster mode).
//! - [`lease`]: in a cluster, one node at a time runs a mapping or a target's delivery.
//! - [`targets`]: publishing back: named targets on the brokers, an outbox, a publisher
//!   per broker.

pub mod connectors;
pub mod error;
pub mod lease;
pub mod model;
pub mod postgres;
pub mod runner;
pub mod source;
pub mod store;
pub mod targets;

pub use error::{Result, SourceError};
pub use lease::{LeaseGate, Leases};
pub use model::{Credentials, Kind, OnFailure, SourceMapping, SourceSpec, StartingPosition};
pub use runner::{FailureSink, MappingStatus, RunnerConfig, SecretReader, SourceRunner};
pub use source::{Checkpoints, Context, Record, Source};
pub use store::{MemoryCheckpoints, SourceStore, SqliteSourceStore};
