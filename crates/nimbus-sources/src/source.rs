//! The connector model: what every broker connector implements ([`Source`]) and what it
//! hands the runner ([`Record`]).
//!
//! The runner (see [`crate::runner`]) owns the semantics that are the same for every
//! broker — batching, filters, partial batch failures, retries, bisection, the on-failure
//! destination, concurrency, back-pressure, reconnecting — and calls a connector only to
//! connect, to poll records and to settle them. A connector never invokes a function.

use crate::error::Result;
use crate::model::{Credentials, SourceSpec};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// One record of a source.
#[derive(Clone)]
pub struct Record {
    /// Unique among the records in flight of the mapping: the `itemIdentifier` a function
    /// reports in `batchItemFailures` (documented per connector: the JetStream stream
    /// sequence, the Redis entry id, the PostgreSQL LSN, …).
    pub id: String,
    /// The record as the function receives it inside the event.
    pub data: Value,
    /// When the broker received or the database committed it (ms since the epoch), for
    /// the iterator age and `MaximumRecordAgeInSeconds`.
    pub produced_ms: i64,
    /// Bytes the record adds to the event (its JSON length), for the 6 MB invoke limit.
    pub size: usize,
    /// A W3C `traceparent` the message carried (a `traceparent` header or property).
    pub trace: Option<String>,
    /// What the connector needs to settle it (a delivery tag, an ack subject, an entry id,
    /// an LSN); only the connector that made it looks inside.
    pub handle: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("id", &self.id)
            .field("produced_ms", &self.produced_ms)
            .field("size", &self.size)
            .finish()
    }
}

impl Record {
    /// A record whose size is the JSON length of `data`.
    pub fn new(
        id: String,
        data: Value,
        produced_ms: i64,
        handle: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        let size = data.to_string().len();
        Self {
            id,
            data,
            produced_ms,
            size,
            trace: None,
            handle,
        }
    }

    /// The connector's handle, if it is a `T`.
    pub fn handle<T: 'static>(&self) -> Option<&T> {
        self.handle.downcast_ref::<T>()
    }
}

/// A connection to one broker for one mapping. Methods take `&self`: the runner polls
/// from one task while batches are settled from others (at most
/// `MaximumConcurrency` at once; one at a time for ordered sources, see
/// [`Kind::ordered`](crate::Kind::ordered)).
#[async_trait]
pub trait Source: Send + Sync + 'static {
    /// Connects, or reconnects after an error (dropping the previous connection), checks
    /// what the mapping names (streams, queues, tables, credentials, server settings) and
    /// sets up the durable state it declares (consumer, group, binding, slot). Errors say
    /// what to fix.
    async fn connect(&self) -> Result<()>;

    /// Up to `max` records, waiting at most `wait` for the first one; empty when none
    /// came. An error drops the connection: the runner reconnects with back-off.
    async fn poll(&self, max: usize, wait: Duration) -> Result<Vec<Record>>;

    /// These records are done (processed, filtered out, or handed to the on-failure
    /// destination): they are not delivered again. For an ordered source the runner acks
    /// in order, each call continuing where the previous one stopped.
    async fn ack(&self, records: &[Record]) -> Result<()>;

    /// Retries are exhausted and the mapping has no on-failure destination: hand the
    /// records to the broker's own dead-lettering where it has one (RabbitMQ's
    /// dead-letter exchange, JetStream's `term`). The default acknowledges them.
    async fn reject(&self, records: &[Record]) -> Result<()> {
        self.ack(records).await
    }

    /// The records are still being worked on (long retries): extend the broker's
    /// acknowledgement deadline where it has one. The default does nothing.
    async fn touch(&self, _records: &[Record]) -> Result<()> {
        Ok(())
    }

    /// The invocation event of a batch. The default is `{"Records": [data, …]}`.
    fn event(&self, batch: &[Record]) -> Value {
        json!({ "Records": batch.iter().map(|r| r.data.clone()).collect::<Vec<_>>() })
    }

    /// The mapping was deleted: remove the durable state the connector created on the
    /// broker where keeping it would cost the broker (a PostgreSQL replication slot holds
    /// WAL back forever). Called once, connected or not; the default does nothing.
    async fn remove(&self) -> Result<()> {
        Ok(())
    }

    /// Records the broker holds for this mapping that were not delivered yet, when it
    /// can say (for the lag metric and `nimbus sources`).
    async fn lag(&self) -> Option<u64> {
        None
    }
}

/// Durable key/value state of one mapping that a connector keeps on the Nimbus side (the
/// PostgreSQL connector's position inside a transaction split over several batches).
pub trait Checkpoints: Send + Sync + 'static {
    fn get(&self, key: &str) -> Result<Option<String>>;
    /// Written durably before it returns.
    fn put(&self, key: &str, value: &str) -> Result<()>;
    fn delete(&self, key: &str) -> Result<()>;
}

/// What a connector is opened with.
#[derive(Clone)]
pub struct Context {
    /// The mapping's id.
    pub mapping: String,
    pub spec: SourceSpec,
    /// From the mapping's secret, when it names one.
    pub credentials: Option<Credentials>,
    pub checkpoints: Arc<dyn Checkpoints>,
    /// The mapping's `BatchSize` and batches in flight at once: a connector sizes its
    /// prefetch (RabbitMQ's QoS, JetStream's `max_ack_pending`, MQTT's receive maximum)
    /// to `batch_size × concurrency`, so a throttled function stops the flow.
    pub batch_size: usize,
    pub concurrency: usize,
}

impl Context {
    /// The durable name on the broker (see [`SourceSpec::group`]).
    pub fn group(&self) -> String {
        self.spec.group_or_default(&self.mapping)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
