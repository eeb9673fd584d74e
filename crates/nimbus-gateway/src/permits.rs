//! Reserved concurrency across the nodes of a cluster. In cluster mode an invocation of a
//! function with reserved concurrency R runs under a permit its node leases from the
//! budget of R the nodes share ([`nimbus_cluster::PermitGate`], docs/cluster.md), then in
//! the pool as on one node (which still holds the node to R). A request that gets no permit
//! within the pool's queue timeout is throttled as the pool throttles a full reservation.
//! On SQLite there is no gate: the invocation path reads an empty `OnceLock` and goes on.

use crate::state::Pools;
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
}

/// Runs `inv` in the pool under a permit of the cluster's budget of `limit` for its
/// function; throttled (`ReservedFunctionConcurrentInvocationLimitExceeded`, as the pool
/// answers) when no permit comes within the queue timeout or the wait queue is full.
pub(crate) async fn invoke(
    gate: &Arc<PermitGate>,
    limit: u32,
    pools: &Pools,
    spec: Arc<InstanceSpec>,
    revision: &str,
    inv: Invocation,
) -> Result<PoolInvokeResult, PoolError> {
    let until = Instant::now() + pools.config().queue_timeout;
    let function = spec.function.as_str();
    match gate.enter(function, limit, until).await {
        Ok(permit) => {
            let res = pools.invoke(spec.clone(), revision, inv).await;
            drop(permit);
            res
        }
        Err(nimbus_cluster::NoPermit) => Err(PoolError::Throttled {
            function: function.to_string(),
            limit,
            reason: ThrottleReason::Reserved,
        }),
    }
}
