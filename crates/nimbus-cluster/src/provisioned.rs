//! Provisioned concurrency spread over the nodes of a cluster.
//!
//! **Who keeps what.** The serving nodes — alive and not draining — ranked by id; the node
//! at rank i of k keeps `n / k` of a version's n provisioned instances, plus one when
//! `i < n % k` ([`share`]). A node reads the membership every heartbeat and, when its rank
//! or the number of serving nodes moves (a node joins, dies, drains or leaves), sets every
//! provisioned version to its new share; so do config changes made through any node (the
//! registry's change generation).
//!
//! **Status across nodes.** Each node publishes, per provisioned version, its share and how
//! many of its instances are initialised and idle (`cluster_provisioned`, written when they
//! change); the Lambda API answers with the sums over the live nodes
//! ([`ClusterProvisioned::totals`]), so every node reports the same counts.

use crate::limits::interval;
use crate::{NodeId, NodeInfo, Result};
use nimbus_pg::Pg;
use std::collections::HashMap;
use std::time::Duration;

/// The instances of `n` kept by the node at `rank` (from 0) of `nodes` serving nodes.
pub fn share(n: u32, rank: usize, nodes: usize) -> u32 {
    if nodes == 0 {
        return n;
    }
    let k = nodes as u32;
    n / k + u32::from((rank as u32) < n % k)
}

/// Where `me` stands among the serving nodes (alive, not draining, ranked by id):
/// `Some((rank, k))`, or `None` when `me` is not serving (a draining node keeps no
/// provisioned instance).
pub fn placement(nodes: &[NodeInfo], me: &str) -> Option<(usize, usize)> {
    let mut serving: Vec<&str> = nodes
        .iter()
        .filter(|n| n.status == "alive")
        .map(|n| n.id.as_str())
        .collect();
    serving.sort_unstable();
    let rank = serving.iter().position(|id| *id == me)?;
    Some((rank, serving.len()))
}

/// One node's part of a provisioned version, as it publishes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvisionedPart {
    /// The instances this node keeps (its share).
    pub target: u32,
    /// Initialised instances (idle or busy).
    pub allocated: u32,
    /// Initialised instances not running an invocation.
    pub available: u32,
    /// Why starting an instance failed, when it did.
    pub failed: Option<String>,
}

/// A provisioned version summed over the live nodes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvisionedTotal {
    pub target: u32,
    pub allocated: u32,
    pub available: u32,
    /// A node's reason, when one failed to start an instance.
    pub failed: Option<String>,
    /// Live nodes that published a part.
    pub nodes: u32,
}

/// The nodes' published provisioned instances in `cluster_provisioned`.
#[derive(Clone)]
pub struct ClusterProvisioned {
    pg: Pg,
    node: NodeId,
    /// Nodes whose heartbeat is older than this do not count (the membership TTL).
    ttl: Duration,
}

impl std::fmt::Debug for ClusterProvisioned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterProvisioned")
            .field("node", &self.node)
            .finish()
    }
}

fn int(n: u32) -> i32 {
    n.min(i32::MAX as u32) as i32
}

impl ClusterProvisioned {
    /// This node's side (applies the `cluster` migrations if needed). `ttl`: the
    /// membership's heartbeat TTL.
    pub fn new(pg: &Pg, node: NodeId, ttl: Duration) -> Result<ClusterProvisioned> {
        pg.migrate("cluster", crate::migrations())?;
        Ok(ClusterProvisioned {
            pg: pg.clone(),
            node,
            ttl,
        })
    }

    /// Replaces this node's published parts with `parts` (by function and version), in
    /// one transaction (blocking).
    pub fn publish(&self, parts: &HashMap<(String, String), ProvisionedPart>) -> Result<()> {
        let node = self.node.as_str();
        Ok(self.pg.transaction(async |tx| {
            tx.execute("DELETE FROM cluster_provisioned WHERE node = $1", &[&node])
                .await?;
            for ((function, version), p) in parts {
                tx.execute(
                    "INSERT INTO cluster_provisioned
                         (function, version, node, target, allocated, available, failed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        function,
                        version,
                        &node,
                        &int(p.target),
                        &int(p.allocated),
                        &int(p.available),
                        &p.failed,
                    ],
                )
                .await?;
            }
            Ok(())
        })?)
    }

    /// The versions of `function` with provisioned instances, summed over the live nodes
    /// (blocking).
    pub fn totals(&self, function: &str) -> Result<HashMap<String, ProvisionedTotal>> {
        let ttl = interval(self.ttl);
        Ok(self.pg.with(async |c| {
            let rows = c
                .query(
                    "SELECT p.version, sum(p.target)::bigint, sum(p.allocated)::bigint,
                            sum(p.available)::bigint, min(p.failed), count(*)::bigint
                     FROM cluster_provisioned p
                     JOIN cluster_nodes n ON n.id = p.node
                     WHERE p.function = $1 AND n.left_at IS NULL
                       AND n.heartbeat_at > clock_timestamp() - $2::text::interval
                     GROUP BY p.version",
                    &[&function, &ttl],
                )
                .await?;
            let n = |v: i64| v.clamp(0, u32::MAX as i64) as u32;
            Ok(rows
                .iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        ProvisionedTotal {
                            target: n(r.get(1)),
                            allocated: n(r.get(2)),
                            available: n(r.get(3)),
                            failed: r.get(4),
                            nodes: n(r.get(5)),
                        },
                    )
                })
                .collect())
        })?)
    }

    /// Removes this node's parts (a clean stop, or a start after a crash; blocking).
    pub fn clear(&self) -> Result<()> {
        self.publish(&HashMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Membership, MembershipConfig};
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::PgConfig;
    use std::sync::Arc;

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for n in 0..20u32 {
            for k in 1..6usize {
                let parts: Vec<u32> = (0..k).map(|i| share(n, i, k)).collect();
                assert_eq!(parts.iter().sum::<u32>(), n, "{n} over {k}: {parts:?}");
                let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
                assert!(hi - lo <= 1, "{n} over {k}: {parts:?}");
            }
        }
        assert_eq!([share(6, 0, 3), share(6, 1, 3), share(6, 2, 3)], [2, 2, 2]);
        assert_eq!([share(6, 0, 2), share(6, 1, 2)], [3, 3]);
        assert_eq!([share(5, 0, 3), share(5, 1, 3), share(5, 2, 3)], [2, 2, 1]);
        assert_eq!([share(1, 0, 3), share(1, 1, 3)], [1, 0]);
    }

    fn info(id: &str, status: &str) -> NodeInfo {
        NodeInfo {
            id: id.into(),
            address: String::new(),
            version: String::new(),
            status: status.into(),
            in_flight: 0,
            instances: 0,
            heartbeat_age_ms: 0,
            started_ms: 0,
            last_heartbeat_ms: 0,
        }
    }

    #[test]
    fn only_serving_nodes_are_ranked() {
        let nodes = [
            info("n3", "alive"),
            info("n1", "alive"),
            info("n2", "dead"),
            info("n4", "draining"),
            info("n5", "left"),
        ];
        assert_eq!(placement(&nodes, "n1"), Some((0, 2)));
        assert_eq!(placement(&nodes, "n3"), Some((1, 2)));
        assert_eq!(placement(&nodes, "n2"), None);
        assert_eq!(placement(&nodes, "n4"), None);
    }

    #[test]
    fn totals_count_the_live_nodes_only() {
        let db = TestDb::new("provisioned");
        let cfg = MembershipConfig {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_millis(800),
            ..MembershipConfig::default()
        };
        let nodes: Vec<(Arc<Membership>, ClusterProvisioned)> = ["n1", "n2", "n3"]
            .iter()
            .map(|id| {
                let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
                let id = NodeId::parse(id).unwrap();
                let m = Membership::join(&pg, id.clone(), "http://x", "0", cfg, None).unwrap();
                (m, ClusterProvisioned::new(&pg, id, cfg.ttl).unwrap())
            })
            .collect();
        let part = |t, a, v| ProvisionedPart {
            target: t,
            allocated: a,
            available: v,
            failed: None,
        };
        for (i, (_, p)) in nodes.iter().enumerate() {
            let mut parts = HashMap::new();
            parts.insert(
                ("f".to_string(), "1".to_string()),
                part(2, 2, 2 - i as u32 % 2),
            );
            parts.insert(("g".to_string(), "3".to_string()), part(1, 0, 0));
            p.publish(&parts).unwrap();
        }
        let t = nodes[0].1.totals("f").unwrap();
        assert_eq!(
            t["1"],
            ProvisionedTotal {
                target: 6,
                allocated: 6,
                available: 5,
                failed: None,
                nodes: 3
            }
        );
        assert_eq!(nodes[1].1.totals("g").unwrap()["3"].target, 3);
        assert!(nodes[2].1.totals("h").unwrap().is_empty());

        // n3 stops writing heartbeats: its part no longer counts.
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(250));
            nodes[0].0.beat(Default::default()).unwrap();
            nodes[1].0.beat(Default::default()).unwrap();
        }
        let t = nodes[0].1.totals("f").unwrap();
        assert_eq!((t["1"].target, t["1"].allocated, t["1"].nodes), (4, 4, 2));

        // A failure on one node shows; a node's parts are replaced as a whole.
        let mut parts = HashMap::new();
        parts.insert(
            ("f".to_string(), "1".to_string()),
            ProvisionedPart {
                failed: Some("init failed".into()),
                ..part(3, 0, 0)
            },
        );
        nodes[1].1.publish(&parts).unwrap();
        let t = nodes[0].1.totals("f").unwrap();
        assert_eq!((t["1"].target, t["1"].allocated), (5, 2));
        assert_eq!(t["1"].failed.as_deref(), Some("init failed"));
        assert_eq!(nodes[0].1.totals("g").unwrap()["3"].target, 1);
        nodes[1].1.clear().unwrap();
        assert_eq!(nodes[0].1.totals("f").unwrap()["1"].nodes, 1);
    }
}
