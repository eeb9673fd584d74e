//! Reserved concurrency across the nodes of a cluster. In cluster mode an invocation of a
//! function with reserved concurrency R runs under a permit its node leases from the
//! budget of R the nodes share ([`nimbus_cluster::PermitGate`], docs/cluster.md), then in
//! the pool as on one node (which still holds the node to R). A request that gets no permit
//! within the pool's queue timeout is throttled as the pool throttles a full reservation.
//! On SQLite there is no gate: the invocation path reads an empty `OnceLock` and goes on.
//!
//! The account limit holds across the nodes the same way: an invocation of a function
//! without a reservation runs under a permit of the account key
//! ([`nimbus_cluster::ACCOUNT_KEY`]) whose budget is the cluster's account limit less the
//! reservations (the unreserved pool, as on one node), throttled as the pool throttles a
//! full unreserved pool (`ConcurrentInvocationLimitExceeded`).

use crate::state::{Pools, Resolved};
use crate::Gateway;
use nimbus_cluster::PermitGate;
use nimbus_pool::{PoolError, PoolInvokeResult, ThrottleReason};
use nimbus_runtime::{InstanceSpec, Invocation};
use std::sync::Arc;
use tokio::time::Instant;

impl Gateway {
    /// Holds reserved concurrency across the cluster with `gate` (cluster mode). Set once,
    /// before serving.
    pub fn with_permits(self: Arc<Self>, gate: Arc<PermitGate>) -> Arc<Self> {
        let _ = self.permits.set(gate);
        self
    }

    /// The account concurrency limit: the cluster's (the smallest `--account-concurrency`
    /// of the live nodes) in cluster mode, else this node's.
    pub(crate) fn account_concurrency(&self) -> u32 {
        self.permits
            .get()
            .and_then(|g| g.account_limit())
            .unwrap_or(self.pools.config().account_concurrency)
    }
}

/// The permit an invocation needs in cluster mode: of its function's reservation, or of
/// the account's unreserved pool.
pub(crate) struct Admission {
    gate: Arc<PermitGate>,
    /// The function's reservation (its own key), else the unreserved pool.
    reserved: bool,
    limit: u32,
}

/// What `resolved`'s invocations must hold before the pool (`None`: nothing, as on one
/// node; a few atomic reads).
pub(crate) fn admission(gw: &Gateway, resolved: &Resolved) -> Option<Admission> {
    let gate = gw.permits.get()?;
    let (reserved, limit) = match resolved.reserved {
        Some(r) => (true, r),
        None => {
            let account = gate.account_limit()?;
            (
                false,
                account.saturating_sub(gw.pools.account_stats().reserved),
            )
        }
    };
    Some(Admission {
        gate: gate.clone(),
        reserved,
        limit,
    })
}

/// Runs `inv` in the pool under a permit of the cluster's budget; throttled as the pool
/// answers (`ReservedFunctionConcurrentInvocationLimitExceeded` for a reservation,
/// `ConcurrentInvocationLimitExceeded` for the unreserved pool) when no permit comes
/// within the queue timeout or the wait queue is full.
pub(crate) async fn invoke(
    a: Admission,
    pools: &Pools,
    spec: Arc<InstanceSpec>,
    revision: &str,
    inv: Invocation,
) -> Result<PoolInvokeResult, PoolError> {
    let until = Instant::now() + pools.config().queue_timeout;
    let function = spec.function.as_str();
    let (key, reason) = match a.reserved {
        true => (function, ThrottleReason::Reserved),
        false => (nimbus_cluster::ACCOUNT_KEY, ThrottleReason::Concurrency),
    };
    match a.gate.enter(key, a.limit, until).await {
        Ok(permit) => {
            let res = pools.invoke(spec.clone(), revision, inv).await;
            drop(permit);
            res
        }
        Err(nimbus_cluster::NoPermit) => Err(PoolError::Throttled {
            function: function.to_string(),
            limit: a.limit,
            reason,
        }),
    }
}
