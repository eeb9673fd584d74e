//! `GET /v1/cluster` (the nodes and their load) and `POST /v1/cluster/nodes/{id}/drain`.
//! The server answers both through [`ClusterControl`]: from the membership table in
//! cluster mode, or for its one node otherwise.

use crate::{ApiError, Gateway};
use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// What the server knows of the cluster.
pub trait ClusterControl: Send + Sync {
    /// `{"mode": "cluster"|"single", "node": ID, "nodes": [{id, address, version, status,
    /// in_flight, instances, heartbeat_age_ms, started_ms, last_heartbeat_ms}]}`. Blocking.
    fn status(&self) -> Result<Value, String>;
    /// Asks node `id` to drain (it stops taking background work and new cold starts of
    /// queued work, finishes what it holds and gives back its claims). `Ok(false)`: no
    /// such node. Blocking.
    fn drain(&self, id: &str) -> Result<bool, String>;
    /// How many of a version's `n` provisioned instances this node keeps: all of them on
    /// one node, its share of the serving nodes in cluster mode (`nimbus_cluster::share`).
    fn provisioned_share(&self, n: u32) -> u32 {
        n
    }
    /// `function`'s provisioned versions summed over the cluster's live nodes; `None` on
    /// one node (the pool's own status is the answer). Blocking.
    fn provisioned_totals(
        &self,
        _function: &str,
    ) -> Option<Result<HashMap<String, nimbus_cluster::ProvisionedTotal>, String>> {
        None
    }
}

impl Gateway {
    /// Serves the cluster API from `control`; set once, right after [`Gateway::new`].
    pub fn with_cluster(self: Arc<Self>, control: Arc<dyn ClusterControl>) -> Arc<Self> {
        let _ = self.cluster.set(control);
        self
    }

    /// Another node of the cluster changed what `scope` caches (see `nimbus-cluster`):
    /// drops this node's copies, so the next request reads the stores.
    pub fn cluster_changed(&self, scope: &str) {
        match scope {
            "registry" => {
                self.invalidate_all();
                if let Err(e) = self.rebuild_routes() {
                    tracing::warn!(error = %e, "cannot rebuild the routes after a change on another node");
                }
                match self.store.list() {
                    Ok(fs) => {
                        for f in fs {
                            let _ = self.sync_reservation(&f.name);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read reservations after a change on another node")
                    }
                }
            }
            "keys" => {
                if let Some(auth) = self.auth.get() {
                    if let Err(e) = auth.reload() {
                        tracing::warn!(error = %e, "cannot read the access keys after a change on another node");
                    }
                }
            }
            "queues" => {
                if let Some(q) = self.queues.get() {
                    q.mappings_changed();
                }
            }
            "sources" => {
                if let Some(s) = self.sources.get() {
                    s.mappings_changed();
                }
            }
            "objects" => {
                if let Some(o) = self.objects.get() {
                    o.forget_cached_configs();
                }
            }
            "flows" => self.workflows_changed(),
            _ => {}
        }
    }
}

fn control(gw: &Gateway) -> Result<Arc<dyn ClusterControl>, ApiError> {
    gw.cluster
        .get()
        .cloned()
        .ok_or_else(|| ApiError::NotFound("this server has no cluster API".into()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::ServiceUnavailable)
}

/// `GET /v1/cluster`.
pub(crate) async fn status(State(gw): State<Arc<Gateway>>) -> Result<Json<Value>, ApiError> {
    let c = control(&gw)?;
    Ok(Json(blocking(move || c.status()).await?))
}

/// `POST /v1/cluster/nodes/{id}/drain`.
pub(crate) async fn drain(
    State(gw): State<Arc<Gateway>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let c = control(&gw)?;
    let node = id.clone();
    if blocking(move || c.drain(&node)).await? {
        Ok(Json(serde_json::json!({ "node": id, "draining": true })))
    } else {
        Err(ApiError::NotFound(format!(
            "no live node {id}: `nimbus cluster status` lists the nodes"
        )))
    }
}
