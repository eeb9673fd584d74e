//! Where the stores live: SQLite files in the data directory (the default), or one
//! PostgreSQL database (`--database postgres://…`, cluster mode; docs/cluster.md). The rest
//! of the server sees only the stores' traits.
//!
//! With PostgreSQL the registry, logs, layers, async events, queues, buses and schedules,
//! history, source mappings and targets, workflows, secrets, access keys, roles and object
//! metadata are in the database, and so are code packages and object bytes
//! (content-addressed, `nimbus_blobs::PgBlobs`), of which each node keeps a cache under
//! its data directory; the master key file (unless given otherwise) and the instances'
//! runtime files stay under the data directory.

use anyhow::Context;
use nimbus_blobs::{PgBlobs, SharedBlobs};
use nimbus_flows::store::FlowStore;
use nimbus_pg::{Pg, PgConfig};
use nimbus_sources::targets::TargetStore;
use nimbus_sources::SourceStore;
use nimbus_store::{
    BacklogLimit, BusStore, CodeStore, EventQueue, HistoryStore, LogLimits, QueueStore, Store,
};
use std::path::Path;
use std::sync::Arc;

/// The backend every store is opened on.
pub(crate) enum Backend {
    Sqlite,
    Postgres(Pg),
}

/// A store that is both a source-mapping store and a targets store (one database).
pub(crate) trait SourcesStore: SourceStore + TargetStore {}
impl<T: SourceStore + TargetStore> SourcesStore for T {}

impl Backend {
    /// SQLite without `database`; else connects (and checks the server answers).
    pub(crate) fn open(database: Option<&str>) -> anyhow::Result<Backend> {
        let Some(url) = database else {
            return Ok(Backend::Sqlite);
        };
        let pg = Pg::connect(&PgConfig::new(url)).context(
            "cannot use the --database: check the URL (postgres://USER@HOST:PORT/DATABASE) \
             and that PostgreSQL is running",
        )?;
        tracing::info!(database = %pg.target(), "stores in PostgreSQL");
        Ok(Backend::Postgres(pg))
    }

    pub(crate) fn describe(&self, data_dir: &Path) -> String {
        match self {
            Backend::Sqlite => format!("SQLite in {}", data_dir.display()),
            Backend::Postgres(pg) => format!("PostgreSQL at {}", pg.target()),
        }
    }

    pub(crate) fn registry(
        &self,
        data_dir: &Path,
        limits: LogLimits,
    ) -> anyhow::Result<Arc<dyn Store>> {
        Ok(match self {
            Backend::Sqlite => Arc::new(
                nimbus_store::SqliteStore::open(data_dir)
                    .and_then(|s| s.with_log_limits(limits))
                    .with_context(|| format!("cannot open registry in {}", data_dir.display()))?,
            ),
            Backend::Postgres(pg) => Arc::new(
                nimbus_store::PgStore::open(pg)
                    .and_then(|s| s.with_log_limits(limits))
                    .context("cannot open the registry in PostgreSQL")?,
            ),
        })
    }

    /// The blob store the nodes share (code packages and object bytes); none on SQLite.
    fn shared_blobs(&self) -> anyhow::Result<Option<Arc<dyn SharedBlobs>>> {
        Ok(match self {
            Backend::Sqlite => None,
            Backend::Postgres(pg) => Some(Arc::new(
                PgBlobs::open(pg).context("cannot open the shared blob store in PostgreSQL")?,
            )),
        })
    }

    /// The code packages in `DATA_DIR/code`: the only copy on SQLite, a cache of the shared
    /// blob store on PostgreSQL.
    pub(crate) fn code(&self, data_dir: &Path) -> anyhow::Result<CodeStore> {
        let code = CodeStore::open(&data_dir.join("code")).context("cannot open code store")?;
        Ok(match self.shared_blobs()? {
            Some(shared) => code.with_shared(shared),
            None => code,
        })
    }

    /// The async event queue; on PostgreSQL its claims name `node`.
    pub(crate) fn events(
        &self,
        data_dir: &Path,
        limit: BacklogLimit,
        node: &nimbus_cluster::NodeId,
    ) -> anyhow::Result<Arc<dyn EventQueue>> {
        Ok(match self {
            Backend::Sqlite => Arc::new(
                nimbus_store::SqliteEventQueue::open(data_dir)
                    .context("cannot open the async event queue")?
                    .with_limit(limit),
            ),
            Backend::Postgres(pg) => Arc::new(
                nimbus_store::postgres::events::PgEventQueue::open(pg)
                    .context("cannot open the async event queue in PostgreSQL")?
                    .with_limit(limit)
                    .with_node(node.as_str()),
            ),
        })
    }

    pub(crate) fn queues(
        &self,
        data_dir: &Path,
        limit: BacklogLimit,
    ) -> anyhow::Result<Arc<dyn QueueStore>> {
        Ok(match self {
            Backend::Sqlite => Arc::new(
                nimbus_store::SqliteQueueStore::open(data_dir)
                    .context("cannot open the queues")?
                    .with_limit(limit),
            ),
            Backend::Postgres(pg) => Arc::new(
                nimbus_store::postgres::queues::PgQueueStore::open(pg)
                    .context("cannot open the queues in PostgreSQL")?
                    .with_limit(limit),
            ),
        })
    }

    pub(crate) fn bus(&self, data_dir: &Path, now_ms: i64) -> anyhow::Result<Arc<dyn BusStore>> {
        Ok(match self {
            Backend::Sqlite => Arc::new(
                nimbus_store::SqliteBusStore::open(data_dir, now_ms)
                    .context("cannot open the event bus store")?,
            ),
            Backend::Postgres(pg) => Arc::new(
                nimbus_store::postgres::bus::PgBusStore::open(pg, now_ms)
                    .context("cannot open the event bus store in PostgreSQL")?,
            ),
        })
    }

    pub(crate) fn history(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn HistoryStore>> {
        Ok(match self {
            Backend::Sqlite => Arc::new(
                nimbus_store::SqliteHistoryStore::open(data_dir)
                    .context("cannot open the history store")?,
            ),
            Backend::Postgres(pg) => Arc::new(
                nimbus_store::postgres::history::PgHistoryStore::open(pg)
                    .context("cannot open the history store in PostgreSQL")?,
            ),
        })
    }

    pub(crate) fn sources(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn SourcesStore>> {
        Ok(match self {
            Backend::Sqlite => Arc::new(
                nimbus_sources::SqliteSourceStore::open(data_dir)
                    .context("cannot open the event source store")?,
            ),
            Backend::Postgres(pg) => Arc::new(
                nimbus_sources::postgres::PgSourceStore::open(pg)
                    .context("cannot open the event source store in PostgreSQL")?,
            ),
        })
    }

    /// The object store: metadata on the backend, bytes in `DATA_DIR/objects` (on
    /// PostgreSQL a cache of the shared blob store).
    pub(crate) fn objects(
        &self,
        data_dir: &Path,
        cfg: nimbus_objects::ObjectsConfig,
    ) -> anyhow::Result<nimbus_objects::Objects> {
        match self {
            Backend::Sqlite => nimbus_objects::Objects::open_sqlite(data_dir, cfg)
                .context("cannot open the object store"),
            Backend::Postgres(pg) => {
                let meta = nimbus_objects::store::postgres::PgMetaStore::open(pg)
                    .context("cannot open the object metadata in PostgreSQL")?
                    .with_quota(cfg.quota);
                let mut blobs = nimbus_objects::BlobStore::open(&data_dir.join("objects"))
                    .context("cannot open the object store's blobs")?;
                if let Some(shared) = self.shared_blobs()? {
                    blobs = blobs.with_shared(shared);
                }
                nimbus_objects::Objects::new(Arc::new(meta), blobs, cfg)
                    .context("cannot open the object store")
            }
        }
    }

    pub(crate) fn flows(&self, data_dir: &Path) -> anyhow::Result<Arc<dyn FlowStore>> {
        Ok(match self {
            Backend::Sqlite => Arc::new(
                nimbus_flows::store::sqlite::SqliteFlowStore::open(data_dir)
                    .context("cannot open the workflow store")?,
            ),
            Backend::Postgres(pg) => Arc::new(
                nimbus_flows::store::postgres::PgFlowStore::open(pg)
                    .context("cannot open the workflow store in PostgreSQL")?,
            ),
        })
    }
}
