//! The account concurrency limit across the nodes of a cluster.
//!
//! On one node `--account-concurrency` A bounds the invocations running at once: functions
//! with a reservation R run under their own R, the others share the unreserved pool
//! A − ΣR. In cluster mode the reservations hold across the nodes already (their permits,
//! [`crate::PermitGate`]); the unreserved pool does too when invocations of unreserved
//! functions run under permits of the account key [`ACCOUNT_KEY`], leased from the same
//! budget table with the limit A − ΣR.
//!
//! **Which A.** Each node records its own flag in `cluster_limits`; the cluster's limit is
//! the **smallest** flag of the live nodes (a node that stops writing heartbeats, or left,
//! no longer counts). So a node started with the default never loosens a cluster set lower,
//! and raising the limit takes restarting every node with the higher flag. Each node reads
//! the limit every second ([`AccountLimit::refresh`]); until it has read it once it uses its
//! own flag, never more than it.

use crate::{NodeId, Result};
use nimbus_pg::{Migration, Pg};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The permit key of the account's unreserved pool (not a valid function name, so it never
/// meets a function's key).
pub const ACCOUNT_KEY: &str = "*account";

/// The `cluster` component's migration adding the nodes' account limits and their
/// provisioned instances (`provisioned.rs`).
pub(crate) const MIGRATION: Migration = Migration::additive(
    "CREATE TABLE cluster_limits (
        node                TEXT PRIMARY KEY,
        account_concurrency INTEGER NOT NULL
    );
    CREATE TABLE cluster_provisioned (
        function  TEXT NOT NULL,
        version   TEXT NOT NULL,
        node      TEXT NOT NULL,
        target    INTEGER NOT NULL,
        allocated INTEGER NOT NULL,
        available INTEGER NOT NULL,
        failed    TEXT,
        PRIMARY KEY (function, version, node)
    );
    CREATE INDEX cluster_provisioned_node ON cluster_provisioned (node);",
);

pub(crate) fn interval(d: Duration) -> String {
    format!("{} milliseconds", d.as_millis())
}

/// This node's account limit and the cluster's.
pub struct AccountLimit {
    pg: Pg,
    node: NodeId,
    own: u32,
    /// Nodes whose heartbeat is older than this do not count (the membership TTL).
    ttl: Duration,
    cluster: AtomicU32,
}

impl std::fmt::Debug for AccountLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountLimit")
            .field("node", &self.node)
            .field("own", &self.own)
            .field("cluster", &self.get())
            .finish()
    }
}

impl AccountLimit {
    /// Records `own` (this node's `--account-concurrency`) and reads the cluster's limit
    /// (blocking). `ttl`: the membership's heartbeat TTL.
    pub fn publish(pg: &Pg, node: NodeId, own: u32, ttl: Duration) -> Result<Arc<AccountLimit>> {
        pg.migrate("cluster", crate::migrations())?;
        let own_i = own.min(i32::MAX as u32) as i32;
        pg.with(async |c| {
            c.execute(
                "INSERT INTO cluster_limits (node, account_concurrency) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET account_concurrency = EXCLUDED.account_concurrency",
                &[&node.as_str(), &own_i],
            )
            .await?;
            Ok(())
        })?;
        let me = Arc::new(AccountLimit {
            pg: pg.clone(),
            node,
            own,
            ttl,
            cluster: AtomicU32::new(own),
        });
        me.refresh()?;
        Ok(me)
    }

    /// This node's own flag.
    pub fn own(&self) -> u32 {
        self.own
    }

    /// The cluster's limit as last read (never above this node's own flag).
    pub fn get(&self) -> u32 {
        self.cluster.load(Ordering::Relaxed)
    }

    /// Reads the smallest limit of the live nodes (blocking); returns it.
    pub fn refresh(&self) -> Result<u32> {
        let ttl = interval(self.ttl);
        let least: Option<i32> = self.pg.with(async |c| {
            let row = c
                .query_one(
                    "SELECT min(l.account_concurrency) FROM cluster_limits l
                     JOIN cluster_nodes n ON n.id = l.node
                     WHERE n.left_at IS NULL
                       AND n.heartbeat_at > clock_timestamp() - $1::text::interval",
                    &[&ttl],
                )
                .await?;
            Ok(row.get(0))
        })?;
        let limit = least.map_or(self.own, |l| (l.max(0) as u32).min(self.own));
        let was = self.cluster.swap(limit, Ordering::Relaxed);
        if was != limit {
            tracing::info!(
                limit,
                own = self.own,
                "the cluster's account concurrency limit (the smallest --account-concurrency of the live nodes)"
            );
        }
        Ok(limit)
    }

    /// Removes this node's row (a clean stop; blocking).
    pub fn leave(&self) -> Result<()> {
        Ok(self.pg.with(async |c| {
            c.execute(
                "DELETE FROM cluster_limits WHERE node = $1",
                &[&self.node.as_str()],
            )
            .await?;
            Ok(())
        })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Membership, MembershipConfig};
    use nimbus_pg::testing::TestDb;
    use nimbus_pg::PgConfig;

    fn cfg() -> MembershipConfig {
        MembershipConfig {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_millis(800),
            ..MembershipConfig::default()
        }
    }

    fn join(db: &TestDb, id: &str, own: u32) -> (Arc<Membership>, Arc<AccountLimit>) {
        let pg = Pg::connect(&PgConfig::new(&db.url)).unwrap();
        let id = NodeId::parse(id).unwrap();
        let m = Membership::join(&pg, id.clone(), "http://x", "0", cfg(), None).unwrap();
        let a = AccountLimit::publish(&pg, id, own, cfg().ttl).unwrap();
        (m, a)
    }

    #[test]
    fn the_cluster_limit_is_the_smallest_flag_of_the_live_nodes() {
        let db = TestDb::new("limits");
        let (m1, a1) = join(&db, "n1", 10);
        assert_eq!(a1.get(), 10);
        let (m2, a2) = join(&db, "n2", 4);
        assert_eq!(a2.get(), 4);
        assert_eq!(
            a1.refresh().unwrap(),
            4,
            "a lower flag lowers everyone's limit"
        );
        let (m3, a3) = join(&db, "n3", 1000);
        assert_eq!(a3.get(), 4, "a higher flag does not raise it");
        // n2 dies (no heartbeat within the TTL): its flag no longer counts.
        std::thread::sleep(Duration::from_millis(500));
        m1.beat(Default::default()).unwrap();
        m3.beat(Default::default()).unwrap();
        std::thread::sleep(Duration::from_millis(500));
        m1.beat(Default::default()).unwrap();
        m3.beat(Default::default()).unwrap();
        assert_eq!(a1.refresh().unwrap(), 10);
        assert_eq!(a3.refresh().unwrap(), 10);
        // A node never uses more than its own flag; one that left does not count.
        m2.beat(Default::default()).unwrap();
        assert_eq!(a3.refresh().unwrap(), 4);
        m2.leave().unwrap();
        a2.leave().unwrap();
        assert_eq!(a3.refresh().unwrap(), 10);
        assert_eq!(a1.refresh().unwrap(), 10);
        drop((m1, m3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn account_permits_wait_in_the_account_queue() {
        use crate::{NoPermit, PermitConfig, PermitGate, Permits};
        use tokio::time::Instant;
        let db = tokio::task::spawn_blocking(|| TestDb::new("limits"))
            .await
            .unwrap();
        let url = db.url.clone();
        let gate = tokio::task::spawn_blocking(move || {
            let pg = Pg::connect(&PgConfig::new(&url)).unwrap();
            let p = Permits::new(&pg, NodeId::parse("n1").unwrap(), PermitConfig::default());
            PermitGate::new(p.unwrap(), 100)
        })
        .await
        .unwrap();
        assert_eq!(gate.account_limit(), None, "not held until set");
        gate.set_account_limit(1, 1);
        assert_eq!(gate.account_limit(), Some(1));
        let later = || Instant::now() + Duration::from_secs(5);
        let held = gate.enter(ACCOUNT_KEY, 1, later()).await.unwrap();
        // One request may wait for the account's permit; the next is refused at once.
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.enter(ACCOUNT_KEY, 1, later()).await });
        tokio::time::sleep(Duration::from_millis(200)).await;
        let t0 = Instant::now();
        assert_eq!(
            gate.enter(ACCOUNT_KEY, 1, later()).await.unwrap_err(),
            NoPermit
        );
        assert!(t0.elapsed() < Duration::from_secs(4), "it waited");
        // A function's own key keeps the function queue depth.
        let f = gate.enter("f", 1, later()).await.unwrap();
        drop(held);
        let second = waiter.await.unwrap().expect("the waiter got the permit");
        drop((second, f));
        let g = gate.clone();
        tokio::task::spawn_blocking(move || g.release_all())
            .await
            .unwrap()
            .unwrap();
        drop(db);
    }
}
