//! Membership: each node keeps a row in `cluster_nodes` with its address, version, load
//! and a heartbeat written every [`MembershipConfig::heartbeat`]. A node whose heartbeat is
//! older than the TTL is dead. Times come from PostgreSQL's clock (`clock_timestamp()`),
//! so the nodes' clocks need not agree.
//!
//! A node id belongs to one live process at a time: [`Membership::join`] finds the id's row
//! (a restart of the same node, or another process given the same id) and, when its
//! heartbeat is fresh, waits one TTL watching it; if the heartbeat moves, another process
//! is alive with the id and the join is refused. A row taken over by a newer process makes
//! the older one's heartbeats fail ([`ClusterError::Superseded`]).

use crate::forward::{IdleCounts, PeerIdle, Peers};
use crate::{ClusterError, NodeId, Result};
use nimbus_pg::{Migration, Pg};
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration::additive(
        "CREATE TABLE cluster_nodes (
        id           TEXT PRIMARY KEY,
        incarnation  TEXT NOT NULL,
        address      TEXT NOT NULL,
        version      TEXT NOT NULL,
        started_at   TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        draining     BOOLEAN NOT NULL DEFAULT false,
        left_at      TIMESTAMPTZ,
        in_flight    BIGINT NOT NULL DEFAULT 0,
        instances    BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE cluster_changes (
        scope      TEXT PRIMARY KEY,
        generation BIGINT NOT NULL
    );
    CREATE FUNCTION cluster_bump() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO cluster_changes (scope, generation) VALUES (TG_ARGV[0], 1)
        ON CONFLICT (scope) DO UPDATE SET generation = cluster_changes.generation + 1;
        RETURN NULL;
    END $$;",
    ),
    // Reserved concurrency leased across nodes (permits.rs).
    crate::permits::MIGRATION,
    // Named leases: source mappings and targets, one node at a time (leases.rs).
    crate::leases::MIGRATION,
    // Idle warm instances per function revision (JSON object), for forwarding (forward.rs).
    Migration::additive("ALTER TABLE cluster_nodes ADD COLUMN idle TEXT"),
    // Account limits and provisioned shares across nodes (limits.rs, provisioned.rs).
    crate::limits::MIGRATION,
];

/// Heartbeat period and time to live.
#[derive(Debug, Clone, Copy)]
pub struct MembershipConfig {
    /// How often the heartbeat is written (default 1 s).
    pub heartbeat: Duration,
    /// A node whose last heartbeat is older than this is dead (default 5 s).
    pub ttl: Duration,
    /// Rows of nodes dead for longer than this are removed (default 1 hour).
    pub forget_after: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            heartbeat: Duration::from_secs(1),
            ttl: Duration::from_secs(5),
            forget_after: Duration::from_secs(3600),
        }
    }
}

/// A node as the cluster sees it (`GET /v1/cluster`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeInfo {
    pub id: String,
    /// Base URL of its API.
    pub address: String,
    pub version: String,
    /// `alive`, `draining`, `dead` (no heartbeat within the TTL) or `left` (stopped cleanly).
    pub status: String,
    /// Invocations in flight at the last heartbeat.
    pub in_flight: i64,
    /// Function instances running at the last heartbeat.
    pub instances: i64,
    /// Milliseconds since its last heartbeat (by the database's clock).
    pub heartbeat_age_ms: i64,
    /// Unix milliseconds.
    pub started_ms: i64,
    pub last_heartbeat_ms: i64,
}

/// What a heartbeat reports.
#[derive(Debug, Clone, Default)]
pub struct Load {
    pub in_flight: i64,
    pub instances: i64,
    /// Idle warm instances per function revision (written only when it changed).
    pub idle: IdleCounts,
}

/// This node's membership.
pub struct Membership {
    pg: Pg,
    id: NodeId,
    incarnation: String,
    cfg: MembershipConfig,
    /// Set when another process took the id over.
    superseded: AtomicBool,
    /// The idle counts the row holds (as written), to write them only when they change.
    idle_written: std::sync::Mutex<Option<String>>,
    /// The other live nodes' idle instances, read with each heartbeat.
    peers: Arc<Peers>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership").field("id", &self.id).finish()
    }
}

fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

impl Membership {
    /// Registers this node (blocking: call from a blocking thread or at start).
    /// `previous` is the incarnation this node's data directory last registered
    /// ([`Membership::incarnation`]): a fresh row of that incarnation is this node's own
    /// previous run, killed before it could leave, and is taken over at once.
    pub fn join(
        pg: &Pg,
        id: NodeId,
        address: &str,
        version: &str,
        cfg: MembershipConfig,
        previous: Option<&str>,
    ) -> Result<Arc<Membership>> {
        pg.migrate("cluster", crate::migrations())?;
        let incarnation = format!("{:016x}", rand::random::<u64>());
        let ttl = interval(cfg.ttl);
        // A fresh heartbeat under this id: watch it for one TTL.
        let seen: Option<(String, String, i64)> = pg.with(async |c| {
            let row = c
                .query_opt(
                    "SELECT incarnation, address,
                            (extract(epoch FROM heartbeat_at) * 1000)::bigint
                     FROM cluster_nodes
                     WHERE id = $1 AND left_at IS NULL
                       AND heartbeat_at > clock_timestamp() - $2::text::interval",
                    &[&id.as_str(), &ttl],
                )
                .await?;
            Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
        })?;
        if let Some((old_incarnation, _, _)) = &seen {
            if previous == Some(old_incarnation.as_str()) {
                tracing::info!(node = %id, "this node's previous run stopped without leaving the cluster: taking its place");
            }
        }
        let seen = seen.filter(|(old, _, _)| previous != Some(old.as_str()));
        if let Some((old_incarnation, old_address, beat)) = seen {
            tracing::warn!(node = %id, address = %old_address,
                "a node with this id sent a heartbeat less than a TTL ago: waiting one TTL to see whether it is still alive (a restart after a crash looks like this)");
            std::thread::sleep(cfg.ttl + cfg.heartbeat);
            let now: Option<(String, i64)> = pg.with(async |c| {
                let row = c
                    .query_opt(
                        "SELECT incarnation, (extract(epoch FROM heartbeat_at) * 1000)::bigint
                         FROM cluster_nodes WHERE id = $1 AND left_at IS NULL",
                        &[&id.as_str()],
                    )
                    .await?;
                Ok(row.map(|r| (r.get(0), r.get(1))))
            })?;
            if now
                .as_ref()
                .is_some_and(|(inc, b)| *inc != old_incarnation || *b > beat)
            {
                return Err(ClusterError::DuplicateNode {
                    id: id.to_string(),
                    address: old_address,
                });
            }
        }
        pg.with(async |c| {
            c.execute(
                "INSERT INTO cluster_nodes
                     (id, incarnation, address, version, started_at, heartbeat_at)
                 VALUES ($1, $2, $3, $4, clock_timestamp(), clock_timestamp())
                 ON CONFLICT (id) DO UPDATE SET
                     incarnation = EXCLUDED.incarnation, address = EXCLUDED.address,
                     version = EXCLUDED.version, started_at = EXCLUDED.started_at,
                     heartbeat_at = EXCLUDED.heartbeat_at, draining = false, left_at = NULL,
                     in_flight = 0, instances = 0, idle = NULL",
                &[&id.as_str(), &incarnation, &address, &version],
            )
            .await?;
            Ok(())
        })?;
        tracing::info!(node = %id, %address, "joined the cluster");
        Ok(Arc::new(Membership {
            pg: pg.clone(),
            id,
            incarnation,
            cfg,
            superseded: AtomicBool::new(false),
            idle_written: std::sync::Mutex::new(None),
            peers: Peers::new(),
        }))
    }

    pub fn id(&self) -> &NodeId {
        &self.id
    }

    /// This run's incarnation: keep it with the node's data, and give it to the next
    /// [`Membership::join`] as `previous`.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    pub fn config(&self) -> MembershipConfig {
        self.cfg
    }

    /// Whether another process took this node's id over (its heartbeats then fail).
    pub fn superseded(&self) -> bool {
        self.superseded.load(Ordering::Relaxed)
    }

    /// The other live, not draining nodes' idle instances as of the last heartbeat.
    pub fn peers(&self) -> &Arc<Peers> {
        &self.peers
    }

    /// Writes a heartbeat with `load` (blocking), forgets nodes dead for long, and reads
    /// the other live nodes' idle instances into [`Membership::peers`].
    pub fn beat(&self, load: Load) -> Result<()> {
        let forget = interval(self.cfg.forget_after);
        let ttl = interval(self.cfg.ttl);
        let idle = crate::forward::encode(&load.idle);
        // NULL keeps the column as it is: most heartbeats write no idle counts.
        let changed = {
            let w = self.idle_written.lock().unwrap();
            (w.as_deref() != Some(idle.as_str())).then(|| idle.clone())
        };
        let read = self.pg.with(async |c| {
            let n = c
                .execute(
                    "UPDATE cluster_nodes SET heartbeat_at = clock_timestamp(),
                         in_flight = $3, instances = $4, idle = COALESCE($5, idle)
                     WHERE id = $1 AND incarnation = $2",
                    &[
                        &self.id.as_str(),
                        &self.incarnation,
                        &load.in_flight,
                        &load.instances,
                        &changed,
                    ],
                )
                .await?;
            c.execute(
                "DELETE FROM cluster_nodes
                 WHERE heartbeat_at < clock_timestamp() - $1::text::interval",
                &[&forget],
            )
            .await?;
            let rows = c
                .query(
                    "SELECT id, address, idle FROM cluster_nodes
                     WHERE id <> $1 AND left_at IS NULL AND NOT draining
                       AND heartbeat_at > clock_timestamp() - $2::text::interval
                       AND idle IS NOT NULL AND idle <> '{}'
                     ORDER BY id",
                    &[&self.id.as_str(), &ttl],
                )
                .await?;
            let peers: Vec<PeerIdle> = rows
                .iter()
                .map(|r| PeerIdle {
                    id: r.get(0),
                    address: r.get(1),
                    idle: crate::forward::decode(r.get(2)),
                })
                .collect();
            Ok((n, peers))
        });
        // A view that cannot be read again is forgotten: it would only grow older.
        let (n, peers) = read.inspect_err(|_| self.peers.replace(Vec::new()))?;
        if n == 0 {
            self.superseded.store(true, Ordering::Relaxed);
            self.peers.replace(Vec::new());
            return Err(ClusterError::Superseded(self.id.to_string()));
        }
        if changed.is_some() {
            *self.idle_written.lock().unwrap() = Some(idle);
        }
        self.peers.replace(peers);
        Ok(())
    }

    /// Marks `id` as draining (or not). False when there is no such node.
    pub fn set_draining(&self, id: &str, draining: bool) -> Result<bool> {
        let n = self.pg.with(async |c| {
            Ok(c.execute(
                "UPDATE cluster_nodes SET draining = $2 WHERE id = $1 AND left_at IS NULL",
                &[&id, &draining],
            )
            .await?)
        })?;
        Ok(n > 0)
    }

    /// Whether this node was asked to drain (by any node's `cluster drain`).
    pub fn draining(&self) -> Result<bool> {
        Ok(self.pg.with(async |c| {
            let row = c
                .query_opt(
                    "SELECT draining FROM cluster_nodes WHERE id = $1 AND incarnation = $2",
                    &[&self.id.as_str(), &self.incarnation],
                )
                .await?;
            Ok(row.is_some_and(|r| r.get(0)))
        })?)
    }

    /// Every known node, this one included, by id.
    pub fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let ttl = interval(self.cfg.ttl);
        Ok(self.pg.with(async |c| {
            let rows = c
                .query(
                    "SELECT id, address, version, draining, left_at IS NOT NULL,
                            heartbeat_at > clock_timestamp() - $1::text::interval,
                            in_flight, instances,
                            (extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::bigint,
                            (extract(epoch FROM started_at) * 1000)::bigint,
                            (extract(epoch FROM heartbeat_at) * 1000)::bigint
                     FROM cluster_nodes ORDER BY id",
                    &[&ttl],
                )
                .await?;
            Ok(rows
                .into_iter()
                .map(|r| {
                    let (draining, left, fresh): (bool, bool, bool) =
                        (r.get(3), r.get(4), r.get(5));
                    let status = if left {
                        "left"
                    } else if !fresh {
                        "dead"
                    } else if draining {
                        "draining"
                    } else {
                        "alive"
                    };
                    NodeInfo {
                        id: r.get(0),
                        address: r.get(1),
                        version: r.get(2),
                        status: status.into(),
                        in_flight: r.get(6),
                        instances: r.get(7),
                        heartbeat_age_ms: r.get(8),
                        started_ms: r.get(9),
                        last_heartbeat_ms: r.get(10),
                    }
                })
                .collect())
        })?)
    }

    /// The ids of the nodes that stopped writing heartbeats (crashed, cut off, or
    /// stopped): their claims may be taken back by the live nodes.
    pub fn dead_nodes(&self) -> Result<Vec<String>> {
        let ttl = interval(self.cfg.ttl);
        Ok(self.pg.with(async |c| {
            let rows = c
                .query(
                    "SELECT id FROM cluster_nodes
                     WHERE left_at IS NOT NULL
                        OR heartbeat_at <= clock_timestamp() - $1::text::interval
                     ORDER BY id",
                    &[&ttl],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })?)
    }

    /// Marks this node as gone (a clean stop): it is listed as `left`, not `dead`.
    pub fn leave(&self) -> Result<()> {
        Ok(self.pg.with(async |c| {
            c.execute(
                "UPDATE cluster_nodes SET left_at = clock_timestamp()
                 WHERE id = $1 AND incarnation = $2",
                &[&self.id.as_str(), &self.incarnation],
            )
            .await?;
            Ok(())
        })?)
    }

    /// Writes heartbeats until the task is aborted; `load` is read before each one.
    pub fn spawn(
        self: &Arc<Self>,
        load: impl Fn() -> Load + Send + Sync + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        let load = Arc::new(load);
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(me.cfg.heartbeat).await;
                let (m, l) = (me.clone(), load.clone());
                let r = tokio::task::spawn_blocking(move || m.beat(l()))
                    .await
                    .unwrap_or_else(|e| Err(ClusterError::Io(e.to_string())));
                match r {
                    Ok(()) if failing => {
                        failing = false;
                        tracing::info!("cluster heartbeats written again");
                    }
                    Ok(()) => {}
                    Err(e @ ClusterError::Superseded(_)) => {
                        tracing::error!(error = %e, "heartbeats stopped");
                        return;
                    }
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot write the cluster heartbeat; other nodes will see this node as dead after the TTL");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}
