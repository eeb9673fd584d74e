//! Named leases in `cluster_leases`: one node at a time holds a name (a source mapping's
//! loop, a target's outbox delivery; see `nimbus_sources::lease`) until its lease ends
//! without renewal. Times are the database's (`clock_timestamp()`); the holder's own
//! bound — stop before the lease could end, counting from when each renewal was sent —
//! is the caller's.

use crate::{NodeId, Result};
use nimbus_pg::{Migration, Pg};
use std::time::Duration;

/// The `cluster` component's migration adding the lease table.
pub(crate) const MIGRATION: Migration = Migration::additive(
    "CREATE TABLE cluster_leases (
        name       TEXT PRIMARY KEY,
        node       TEXT NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL
    )",
);

/// How long a lease lasts after its last renewal by default.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// This node's leases.
pub struct Leases {
    pg: Pg,
    node: NodeId,
    ttl: Duration,
}

impl Leases {
    pub fn new(pg: &Pg, node: NodeId, ttl: Duration) -> Leases {
        Leases {
            pg: pg.clone(),
            node,
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Takes `name` when it is free or its lease ended, renews it when this node holds
    /// it; true when this node holds it now. Blocking.
    pub fn hold(&self, name: &str) -> Result<bool> {
        let ttl_ms = self.ttl.as_millis() as i64;
        let me = self.node.as_str();
        Ok(self.pg.with(async |c| {
            let row = c
                .query_opt(
                    "INSERT INTO cluster_leases AS l (name, node, expires_at)
                     VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::bigint / 1000.0))
                     ON CONFLICT (name) DO UPDATE
                        SET node = excluded.node, expires_at = excluded.expires_at
                        WHERE l.node = excluded.node OR l.expires_at < clock_timestamp()
                     RETURNING node",
                    &[&name, &me, &ttl_ms],
                )
                .await?;
            Ok(row.is_some())
        })?)
    }

    /// Gives `name` back when this node holds it. Blocking.
    pub fn release(&self, name: &str) -> Result<()> {
        let me = self.node.as_str();
        self.pg.with(async |c| {
            c.execute(
                "DELETE FROM cluster_leases WHERE name = $1 AND node = $2",
                &[&name, &me],
            )
            .await?;
            Ok(())
        })?;
        Ok(())
    }

    /// The node holding `name` with an unexpired lease, if any. Blocking.
    pub fn holder(&self, name: &str) -> Result<Option<String>> {
        Ok(self.pg.with(async |c| {
            Ok(c.query_opt(
                "SELECT node FROM cluster_leases WHERE name = $1 AND expires_at > clock_timestamp()",
                &[&name],
            )
            .await?
            .map(|r| r.get(0)))
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_pg::testing::TestDb;

    #[test]
    fn one_holder_at_a_time_until_its_lease_ends_or_it_gives_it_back() {
        let db = TestDb::new("cluster_leases");
        db.pg.migrate("cluster", crate::migrations()).unwrap();
        let ttl = Duration::from_millis(600);
        let a = Leases::new(&db.pg, NodeId::parse("a").unwrap(), ttl);
        let b = Leases::new(&db.pg, NodeId::parse("b").unwrap(), ttl);
        assert!(a.hold("source:1").unwrap());
        assert!(!b.hold("source:1").unwrap(), "a holds it");
        assert!(b.hold("target:t").unwrap(), "another name is free");
        assert_eq!(b.holder("source:1").unwrap().as_deref(), Some("a"));
        // Renewed by a, it stays a's past the first TTL.
        std::thread::sleep(Duration::from_millis(400));
        assert!(a.hold("source:1").unwrap());
        std::thread::sleep(Duration::from_millis(400));
        assert!(!b.hold("source:1").unwrap());
        // Not renewed: after the TTL, b takes it, and a no longer holds it.
        std::thread::sleep(Duration::from_millis(700));
        assert_eq!(b.holder("source:1").unwrap(), None);
        assert!(b.hold("source:1").unwrap());
        assert!(!a.hold("source:1").unwrap());
        // Given back: at once another's; a release by a non-holder changes nothing.
        assert!(b.hold("target:t").unwrap());
        a.release("target:t").unwrap();
        assert_eq!(a.holder("target:t").unwrap().as_deref(), Some("b"));
        b.release("target:t").unwrap();
        assert!(a.hold("target:t").unwrap());
    }
}
