//! Coherence of the nodes' caches. Every node caches what it reads on each request
//! (resolved function versions, aliases, routes, access keys, notification configurations,
//! mappings); a change made through any node must reach every other node's caches within
//! a second.
//!
//! What guarantees it is PostgreSQL: a statement trigger on each table behind a cache
//! ([`WATCHED`]) bumps the scope's row in `cluster_changes` in the writer's own transaction,
//! so a committed change always moves a generation. Each node reads the generations every
//! [`POLL`] and calls the scope's listeners when one moved. NATS makes it faster: a node
//! that served a change publishes a notice and the others read the generations at once.
//! A node that cannot read the generations for longer than [`BLIND`] calls every listener
//! (its caches are dropped and requests read the stores, failing while the database is
//! unreachable), so a stale entry is never served for long after a change.

use crate::Result;
use nimbus_pg::Pg;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// How often the generations are read.
pub const POLL: Duration = Duration::from_millis(200);
/// Longer than this without reading them, a node drops every cache.
pub const BLIND: Duration = Duration::from_millis(600);
/// The NATS subject of change notices.
pub const SUBJECT: &str = "nimbus.cluster.changed";

/// The tables behind each cache scope, and for tables that also hold fast-moving
/// bookkeeping, the columns whose updates count (`None`: any write).
pub const WATCHED: &[(&str, &str, Option<&str>)] = &[
    ("registry", "registry_functions", None),
    ("registry", "registry_versions", None),
    ("registry", "registry_aliases", None),
    ("registry", "registry_provisioned", None),
    ("registry", "events_invoke_configs", None),
    ("keys", "secrets_access_keys", None),
    ("secrets", "secrets_master", None),
    ("bus", "bus_buses", None),
    (
        "bus",
        "bus_rules",
        Some("bus, name, pattern, schedule, timezone, enabled, targets"),
    ),
    ("queues", "queues_queues", None),
    ("queues", "queues_mappings", None),
    ("sources", "sources_mappings", None),
    ("sources", "sources_targets", None),
    ("objects", "objects_buckets", None),
    ("objects", "objects_notification_configs", None),
    ("objects", "objects_bucket_configs", None),
    ("flows", "flows_machines", None),
    ("flows", "flows_versions", None),
    ("flows", "flows_aliases", None),
];

/// The trigger's name (a new name when what it watches changes).
const TRIGGER: &str = "cluster_changed_v1";

/// Installs the triggers of [`WATCHED`] that are missing (tables that do not exist, of
/// stores this node does not open, are left for a node that does). Blocking.
pub fn install_triggers(pg: &Pg) -> Result<usize> {
    pg.migrate("cluster", crate::migrations())?;
    Ok(pg.transaction(async |tx| {
        tx.batch_execute("SET LOCAL lock_timeout = '30s'").await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&0x636c_7573_7472_i64])
            .await?;
        let rows = tx
            .query(
                "SELECT c.relname::text, EXISTS (SELECT 1 FROM pg_trigger t
                                           WHERE t.tgrelid = c.oid AND t.tgname = $1)
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')",
                &[&TRIGGER],
            )
            .await?;
        let tables: HashMap<String, bool> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut made = 0;
        for (scope, table, columns) in WATCHED {
            if tables.get(*table) != Some(&false) {
                continue;
            }
            let update = match columns {
                Some(c) => format!("UPDATE OF {c}"),
                None => "UPDATE".into(),
            };
            tx.batch_execute(&format!(
                "CREATE TRIGGER {TRIGGER} AFTER INSERT OR DELETE OR TRUNCATE OR {update}
                 ON {table} FOR EACH STATEMENT EXECUTE FUNCTION cluster_bump('{scope}')"
            ))
            .await?;
            made += 1;
        }
        Ok(made)
    })?)
}

/// Reads the generations (blocking).
fn generations(pg: &Pg) -> Result<HashMap<String, i64>> {
    Ok(pg.with(async |c| {
        let rows = c
            .query("SELECT scope, generation FROM cluster_changes", &[])
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    })?)
}

type Listener = Arc<dyn Fn() + Send + Sync>;

/// Calls listeners when another node changed what they cache.
pub struct Changes {
    pg: Pg,
    listeners: Mutex<Vec<(String, Listener)>>,
    wake: Notify,
    nats: Option<async_nats::Client>,
    /// A notice is about to be published (notices within [`COALESCE`] become one).
    pending: Arc<AtomicBool>,
    /// When the generations were last read (at first: when this was made, as the node
    /// joined through the database).
    last_read: Mutex<Option<Instant>>,
}

/// What [`Changes::health`] reports: how fresh this node's view of the database is and
/// whether change notices flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangesHealth {
    /// Since the generations were last read (`None`: never read yet).
    pub since_read: Option<Duration>,
    /// NATS connected (`None`: the node runs without `--nats`).
    pub nats_connected: Option<bool>,
}

/// Notices announced within this long of each other are published as one.
const COALESCE: Duration = Duration::from_millis(5);

impl std::fmt::Debug for Changes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changes").finish_non_exhaustive()
    }
}

impl Changes {
    pub fn new(pg: Pg, nats: Option<async_nats::Client>) -> Arc<Changes> {
        Arc::new(Changes {
            pg,
            listeners: Mutex::new(Vec::new()),
            wake: Notify::new(),
            nats,
            pending: Arc::default(),
            // Made as the node joins, which the database has just answered.
            last_read: Mutex::new(Some(Instant::now())),
        })
    }

    /// How fresh this node's caches are kept: the last read of the generations (the
    /// database answering) and NATS's connection.
    pub fn health(&self) -> ChangesHealth {
        ChangesHealth {
            since_read: self
                .last_read
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map(|t| t.elapsed()),
            nats_connected: self
                .nats
                .as_ref()
                .map(|n| n.connection_state() == async_nats::connection::State::Connected),
        }
    }

    /// Calls `f` (on a blocking thread) each time `scope` changes, and when this node may
    /// have missed changes.
    pub fn on(&self, scope: &str, f: impl Fn() + Send + Sync + 'static) {
        self.listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((scope.to_string(), Arc::new(f)));
    }

    /// Tells the other nodes to read the generations now (after this node served a
    /// change). Without NATS they read them within [`POLL`] anyway.
    pub fn announce(&self) {
        if let Some(n) = &self.nats {
            if self.pending.swap(true, Ordering::AcqRel) {
                return;
            }
            let (n, pending) = (n.clone(), self.pending.clone());
            tokio::spawn(async move {
                tokio::time::sleep(COALESCE).await;
                pending.store(false, Ordering::Release);
                if let Err(e) = n.publish(SUBJECT, bytes::Bytes::new()).await {
                    tracing::debug!(error = %e, "cannot publish a change notice");
                }
            });
        }
    }

    fn call(&self, scopes: &dyn Fn(&str) -> bool) {
        let listeners: Vec<Listener> = self
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(s, _)| scopes(s))
            .map(|(_, f)| f.clone())
            .collect();
        for f in listeners {
            f();
        }
    }

    /// Polls the generations (and listens for notices) until the task is aborted.
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        if let Some(n) = &self.nats {
            let (me, n) = (self.clone(), n.clone());
            tokio::spawn(async move {
                match n.subscribe(SUBJECT).await {
                    Ok(mut sub) => {
                        use futures_util::StreamExt;
                        while sub.next().await.is_some() {
                            me.wake.notify_one();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot subscribe to change notices"),
                }
            });
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut known: Option<HashMap<String, i64>> = None;
            let mut last_read = Instant::now();
            let mut blind = false;
            let mut first = true;
            loop {
                // The first read at once: it is the baseline later reads compare with.
                if !std::mem::take(&mut first) {
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = me.wake.notified() => {}
                    }
                }
                let pg = me.pg.clone();
                let read = tokio::task::spawn_blocking(move || generations(&pg)).await;
                let m = me.clone();
                match read {
                    Ok(Ok(now)) => {
                        let was_blind = std::mem::take(&mut blind);
                        let old = known.replace(now.clone());
                        last_read = Instant::now();
                        *me.last_read.lock().unwrap_or_else(|e| e.into_inner()) = Some(last_read);
                        let _ = tokio::task::spawn_blocking(move || {
                            // Blind, or the baseline: what the caches loaded before it
                            // may predate a change, so every listener reloads once.
                            if was_blind || old.is_none() {
                                m.call(&|_| true);
                            } else if let Some(old) = old {
                                let moved: Vec<&String> =
                                    now.keys().filter(|s| now.get(*s) != old.get(*s)).collect();
                                if !moved.is_empty() {
                                    tracing::debug!(?moved, "change generations moved");
                                    m.call(&|s| now.get(s) != old.get(s));
                                }
                            }
                        })
                        .await;
                    }
                    _ if !blind && last_read.elapsed() > BLIND => {
                        blind = true;
                        tracing::warn!("cannot read the cluster's change generations: caches dropped until the database answers");
                        let _ = tokio::task::spawn_blocking(move || m.call(&|_| true)).await;
                    }
                    _ => {}
                }
            }
        })
    }
}
