//! This node in its cluster: its id, its membership row and heartbeats, the change
//! generations that keep its caches coherent with the other nodes', and the cluster API's
//! answers (`GET /v1/cluster`), the permits that hold reserved concurrency and the account
//! limit across the nodes, and its share of the provisioned instances. On SQLite the node
//! is alone: it has an id and answers for itself, with nothing in the database.

use crate::stores::Backend;
use anyhow::Context;
use nimbus_cluster::{
    AccountLimit, Changes, ClusterProvisioned, Load, Membership, MembershipConfig, NodeId,
    PermitConfig, PermitGate, Permits, ProvisionedPart, ProvisionedTotal,
};
use nimbus_gateway::{ClusterControl, Forwarder, Gateway, Pools};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Where a node keeps the incarnation it last registered (`DATA_DIR/node-incarnation`).
const INCARNATION_FILE: &str = "node-incarnation";

/// The scopes whose caches live in the gateway (see `nimbus_cluster::WATCHED`).
const SCOPES: &[&str] = &["registry", "keys", "queues", "sources", "objects", "flows"];

/// This node's part in the cluster.
pub(crate) struct Node {
    pub id: NodeId,
    pub address: String,
    /// In the database (cluster mode); `None` on SQLite.
    pub membership: Option<Arc<Membership>>,
    pub changes: Option<Arc<Changes>>,
    /// Reserved concurrency leased from the cluster's budget (cluster mode).
    pub permits: Option<Arc<PermitGate>>,
    /// Which node runs each source mapping and target (cluster mode).
    pub leases: Option<Arc<SourceLeases>>,
    /// The account limit the nodes agree on (cluster mode).
    account: Option<Arc<AccountLimit>>,
    /// This node's provisioned instances as the others see them (cluster mode).
    provisioned: Option<ClusterProvisioned>,
    /// This node's rank among the serving nodes and their number (cluster mode; `None`:
    /// not serving, e.g. draining, so it keeps no provisioned instance).
    place: Mutex<Option<(usize, usize)>>,
    /// Signalled when the configs may have changed through another node.
    reprovision: Arc<Notify>,
    /// Set when this node is asked to drain (`nimbus cluster drain`).
    pub drain: Arc<Notify>,
    pools: Arc<Pools>,
    /// The async event queue, whose claims by dead nodes this node takes back.
    events: Arc<dyn nimbus_store::EventQueue>,
}

/// See [`reachable`].
const UNREACHABLE: &str = "other nodes cannot forward invocations to this node's address (forwarding needs plain HTTP on a specific address): it publishes no idle instances";

/// The node's load; with `idle`, its idle instances per revision too (what other nodes
/// forward synchronous calls by).
fn load(pools: &Pools, idle: bool) -> Load {
    let s = pools.instance_states();
    Load {
        in_flight: s.busy as i64,
        instances: (s.initializing + s.idle + s.busy) as i64,
        idle: if idle {
            pools.idle_by_revision()
        } else {
            Default::default()
        },
    }
}

/// Whether other nodes can forward invocations to `address`: plain HTTP (their client
/// speaks no TLS) on an address that names this host (not 0.0.0.0 or [::]).
fn reachable(address: &str) -> bool {
    let Some(host) = address.strip_prefix("http://") else {
        return false;
    };
    match host.parse::<std::net::SocketAddr>() {
        Ok(a) => !a.ip().is_unspecified(),
        Err(_) => true,
    }
}

impl Node {
    /// Joins the cluster (cluster mode) and wires change notices to `gateway`'s caches.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        backend: &Backend,
        data_dir: &std::path::Path,
        id: NodeId,
        address: String,
        nats: Option<&str>,
        gateway: &Arc<Gateway>,
        pools: Arc<Pools>,
        events: Arc<dyn nimbus_store::EventQueue>,
        node_key: nimbus_cluster::NodeKey,
    ) -> anyhow::Result<Arc<Node>> {
        let reprovision = Arc::new(Notify::new());
        let (account_own, account_depth) = (
            pools.config().account_concurrency,
            pools.config().account_queue_depth,
        );
        let (membership, changes, permits, leases, account, provisioned, place) = match backend {
            Backend::Sqlite => (None, None, None, None, None, None, None),
            Backend::Postgres(pg) => {
                let (pg2, id2, addr) = (pg.clone(), id.clone(), address.clone());
                // The incarnation this data dir last registered: a restart after a crash
                // takes its row over at once instead of watching it for a TTL.
                let kept = data_dir.join(INCARNATION_FILE);
                let (membership, permits, account, provisioned, place) =
                    tokio::task::spawn_blocking(move || {
                        nimbus_cluster::install_triggers(&pg2)?;
                        let previous = std::fs::read_to_string(&kept).ok();
                        let m = Membership::join(
                            &pg2,
                            id2.clone(),
                            &addr,
                            env!("CARGO_PKG_VERSION"),
                            MembershipConfig::default(),
                            previous.as_deref().map(str::trim),
                        )?;
                        nimbus_store::write_private_file(&kept, m.incarnation().as_bytes())
                            .map_err(|e| {
                                nimbus_cluster::ClusterError::Io(format!(
                                    "cannot write {}: {e}",
                                    kept.display()
                                ))
                            })?;
                        // Leases a previous run of this node left are no one's now.
                        let p = Permits::new(&pg2, id2.clone(), PermitConfig::default())?;
                        p.release_all()?;
                        let ttl = m.config().ttl;
                        let account = AccountLimit::publish(&pg2, id2.clone(), account_own, ttl)?;
                        // What a previous run published is gone with its instances.
                        let prov = ClusterProvisioned::new(&pg2, id2.clone(), ttl)?;
                        prov.clear()?;
                        let place = nimbus_cluster::placement(&m.nodes()?, id2.as_str());
                        Ok::<_, nimbus_cluster::ClusterError>((m, p, account, prov, place))
                    })
                    .await?
                    .context("cannot join the cluster")?;
                let permits = PermitGate::new(permits, pools.config().queue_depth);
                permits.set_account_limit(account.get(), account_depth);
                let _ = gateway.clone().with_permits(permits.clone());
                // Synchronous calls that would cold-start here go to other nodes' warm
                // instances (docs/cluster.md).
                let _ = gateway.clone().with_forwarding(Forwarder::new(
                    id.to_string(),
                    node_key,
                    membership.peers().clone(),
                ));
                if !reachable(&address) {
                    tracing::warn!(%address, "{UNREACHABLE}");
                }
                let nats = match nats {
                    Some(url) => Some(connect_nats(url).await?),
                    None => None,
                };
                let changes = Changes::new(pg.clone(), nats);
                for scope in SCOPES {
                    let gw = gateway.clone();
                    changes.on(scope, move || gw.cluster_changed(scope));
                }
                let leases = Arc::new(SourceLeases(nimbus_cluster::Leases::new(
                    pg,
                    id.clone(),
                    nimbus_cluster::LEASE_TTL,
                )));
                // Provisioned configs changed through any node: this node's share again
                // (after the registry caches above were dropped).
                let r = reprovision.clone();
                changes.on("registry", move || r.notify_one());
                (
                    Some(membership),
                    Some(changes),
                    Some(permits),
                    Some(leases),
                    Some(account),
                    Some(provisioned),
                    place,
                )
            }
        };
        let node = Arc::new(Node {
            id,
            address,
            membership,
            changes,
            permits,
            leases,
            account,
            provisioned,
            place: Mutex::new(place),
            reprovision,
            drain: Arc::new(Notify::new()),
            pools,
            events,
        });
        Ok(node)
    }

    /// Heartbeats, change polling, the drain watch, the account limit and the provisioned
    /// shares, until the tasks are aborted.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        gateway: &Arc<Gateway>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        if self.membership.is_some() {
            tasks.push(tokio::spawn(self.clone().share(Arc::downgrade(gateway))));
        }
        if let Some(m) = &self.membership {
            let pools = self.pools.clone();
            let publish = reachable(&self.address);
            tasks.push(m.spawn(move || load(&pools, publish)));
            // Work claimed by nodes that stopped writing heartbeats comes back at once
            // instead of when its leases end (async events are leased for 16 minutes).
            let (m2, events) = (m.clone(), self.events.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(m2.config().heartbeat).await;
                    let (m, q) = (m2.clone(), events.clone());
                    let r = tokio::task::spawn_blocking(move || {
                        let dead = m.dead_nodes()?;
                        Ok::<_, anyhow::Error>(q.release_claims_of(&dead, crate::unix_ms())?)
                    })
                    .await;
                    if let Ok(Ok(n)) = r {
                        if n > 0 {
                            tracing::info!(events = n, "took back the async events of dead nodes");
                        }
                    }
                }
            }));
            // A drain asked through any node reaches this one through its row.
            let (m, drain) = (m.clone(), self.drain.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(m.config().heartbeat).await;
                    let m2 = m.clone();
                    if let Ok(Ok(true)) = tokio::task::spawn_blocking(move || m2.draining()).await {
                        tracing::info!("asked to drain: taking no new background work");
                        drain.notify_one();
                        return;
                    }
                }
            }));
        }
        if let Some(c) = &self.changes {
            tasks.push(c.spawn());
        }
        if let Some(p) = &self.permits {
            tasks.push(p.spawn());
        }
        tasks
    }

    /// Every heartbeat: reads the serving nodes and the account limit; sets this node's
    /// share of the provisioned instances again when its place among the serving nodes
    /// moved or the configs changed; publishes its provisioned instances when they changed
    /// (checked every 250 ms).
    async fn share(self: Arc<Self>, gateway: std::sync::Weak<Gateway>) {
        let (Some(m), Some(prov)) = (self.membership.clone(), self.provisioned.clone()) else {
            return;
        };
        let every = m.config().heartbeat;
        let mut read_at = tokio::time::Instant::now();
        let mut published: Option<HashMap<(String, String), ProvisionedPart>> = None;
        loop {
            let mut again = tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => false,
                _ = self.reprovision.notified() => true,
            };
            if read_at.elapsed() >= every {
                read_at = tokio::time::Instant::now();
                let (m, account) = (m.clone(), self.account.clone());
                let read = tokio::task::spawn_blocking(move || {
                    let nodes = m.nodes()?;
                    if let Some(a) = &account {
                        a.refresh()?;
                    }
                    Ok::<_, nimbus_cluster::ClusterError>(nodes)
                })
                .await;
                if let (Some(gate), Some(a)) = (&self.permits, &self.account) {
                    gate.set_account_limit(a.get(), self.pools.config().account_queue_depth);
                }
                if let Ok(Ok(nodes)) = read {
                    let now = nimbus_cluster::placement(&nodes, self.id.as_str());
                    let was = std::mem::replace(&mut *self.place.lock().unwrap(), now);
                    if was != now {
                        tracing::info!(rank = ?now.map(|p| p.0), serving = ?now.map(|p| p.1),
                            "the serving nodes changed: taking this node's share of the provisioned instances");
                        again = true;
                    }
                }
            }
            let Some(gw) = gateway.upgrade() else { return };
            if again {
                if let Err(e) = gw.reconcile_provisioned().await {
                    tracing::warn!(error = %e, "cannot set this node's share of the provisioned instances");
                }
            }
            drop(gw);
            let parts = provisioned_parts(&self.pools);
            if published.as_ref() != Some(&parts) {
                let (p, out) = (prov.clone(), parts.clone());
                if let Ok(Ok(())) = tokio::task::spawn_blocking(move || p.publish(&out)).await {
                    published = Some(parts);
                }
            }
        }
    }

    /// Gives back its concurrency permits and marks this node as gone (clean stop).
    /// Blocking.
    pub(crate) fn leave(&self) {
        if let Some(p) = &self.provisioned {
            let _ = p.clear();
        }
        if let Some(a) = &self.account {
            let _ = a.leave();
        }
        if let Some(p) = &self.permits {
            if let Err(e) = p.release_all() {
                tracing::warn!(error = %e, "cannot give back this node's concurrency permits: they expire after their TTL");
            }
        }
        if let Some(m) = &self.membership {
            if let Err(e) = m.leave() {
                tracing::warn!(error = %e, "cannot mark this node as gone in the cluster");
            }
        }
    }
}

/// The cluster's leases as the source and target runners use them.
pub(crate) struct SourceLeases(nimbus_cluster::Leases);

impl nimbus_sources::Leases for SourceLeases {
    fn hold(&self, key: &str) -> Result<bool, String> {
        self.0.hold(key).map_err(|e| e.to_string())
    }

    fn release(&self, key: &str) -> Result<(), String> {
        self.0.release(key).map_err(|e| e.to_string())
    }

    fn ttl(&self) -> std::time::Duration {
        self.0.ttl()
    }
}

/// This node's provisioned instances by function and version.
fn provisioned_parts(pools: &Pools) -> HashMap<(String, String), ProvisionedPart> {
    pools
        .provisioned_versions()
        .into_iter()
        .filter_map(|(f, v)| {
            let s = pools.provisioned_status(&f, &v)?;
            Some((
                (f, v),
                ProvisionedPart {
                    target: s.requested,
                    allocated: s.allocated,
                    available: s.available,
                    failed: s.reason,
                },
            ))
        })
        .collect()
}

/// Connects to NATS; when it does not answer yet, keeps trying in the background (the
/// nodes then see changes by polling alone) rather than refusing to start.
async fn connect_nats(url: &str) -> anyhow::Result<async_nats::Client> {
    let url_shown = url.split('@').next_back().unwrap_or(url).to_string();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .event_callback(move |ev| {
            let url = url_shown.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => tracing::info!(nats = %url, "NATS connected"),
                    async_nats::Event::Disconnected => tracing::warn!(nats = %url, "NATS disconnected: change notices wait for it; caches still follow the database's generations"),
                    _ => {}
                }
            }
        })
        .connect(url)
        .await
        .with_context(|| "cannot use --nats: check the URL (nats://HOST:PORT)".to_string())?;
    Ok(client)
}

impl ClusterControl for Node {
    fn status(&self) -> Result<Value, String> {
        match &self.membership {
            Some(m) => {
                let nodes = m.nodes().map_err(|e| e.to_string())?;
                Ok(json!({ "mode": "cluster", "node": self.id.as_str(), "nodes": nodes }))
            }
            None => {
                let l = load(&self.pools, false);
                Ok(json!({
                    "mode": "single",
                    "node": self.id.as_str(),
                    "nodes": [{
                        "id": self.id.as_str(),
                        "address": self.address,
                        "version": env!("CARGO_PKG_VERSION"),
                        "status": "alive",
                        "in_flight": l.in_flight,
                        "instances": l.instances,
                        "heartbeat_age_ms": 0,
                    }],
                }))
            }
        }
    }

    fn provisioned_share(&self, n: u32) -> u32 {
        if self.membership.is_none() {
            return n;
        }
        match *self.place.lock().unwrap() {
            Some((rank, serving)) => nimbus_cluster::share(n, rank, serving),
            None => 0,
        }
    }

    fn provisioned_totals(
        &self,
        function: &str,
    ) -> Option<Result<HashMap<String, ProvisionedTotal>, String>> {
        let p = self.provisioned.as_ref()?;
        Some(p.totals(function).map_err(|e| e.to_string()))
    }

    fn drain(&self, id: &str) -> Result<bool, String> {
        match &self.membership {
            Some(m) => m.set_draining(id, true).map_err(|e| e.to_string()),
            None if id == self.id.as_str() => {
                self.drain.notify_one();
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Whether a request may change what nodes cache: API writes, not invocations, function
/// URLs, user routes or queue and bus traffic.
fn may_change(method: &axum::http::Method, uri: &axum::http::Uri, target: Option<&str>) -> bool {
    use axum::http::Method;
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let path = uri.path();
    if path == "/" {
        // JSON protocol APIs: the data-plane operations change no cache.
        let op = target.and_then(|t| t.rsplit('.').next()).unwrap_or("");
        const DATA: &[&str] = &[
            "SendMessage",
            "SendMessageBatch",
            "ReceiveMessage",
            "DeleteMessage",
            "DeleteMessageBatch",
            "ChangeMessageVisibility",
            "ChangeMessageVisibilityBatch",
            "PutEvents",
            "StartExecution",
            "StartSyncExecution",
            "StopExecution",
            "SendTaskSuccess",
            "SendTaskFailure",
            "SendTaskHeartbeat",
        ];
        return !DATA.contains(&op);
    }
    (path.starts_with("/v1/") && !path.ends_with("/invoke") && !path.contains("/messages"))
        || (path.starts_with("/20") && !path.ends_with("/invocations"))
}

/// Announces, after each successful request that may have changed what nodes cache, that
/// the other nodes should read the change generations now.
pub(crate) fn announce_changes(
    router: axum::Router,
    changes: Option<Arc<Changes>>,
) -> axum::Router {
    let Some(changes) = changes else {
        return router;
    };
    router.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let changes = changes.clone();
            async move {
                let target = req
                    .headers()
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok());
                let change = may_change(req.method(), req.uri(), target);
                let resp = next.run(req).await;
                if change && resp.status().is_success() {
                    changes.announce();
                }
                resp
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::may_change;
    use axum::http::{Method, Uri};

    #[test]
    fn forwardable_addresses() {
        use super::reachable;
        assert!(reachable("http://127.0.0.2:8080"));
        assert!(reachable("http://10.0.0.1:8080"));
        assert!(
            !reachable("http://0.0.0.0:8080"),
            "not an address of this host"
        );
        assert!(!reachable("http://[::]:8080"));
        assert!(!reachable("https://10.0.0.1:8443"), "no TLS client");
    }

    #[test]
    fn only_api_writes_announce() {
        let c = |m: Method, p: &str, t: Option<&str>| may_change(&m, &p.parse::<Uri>().unwrap(), t);
        assert!(c(Method::POST, "/v1/functions", None));
        assert!(c(
            Method::PUT,
            "/2015-03-31/functions/f/configuration",
            None
        ));
        assert!(c(
            Method::POST,
            "/",
            Some("AWSStepFunctions.CreateStateMachine")
        ));
        assert!(c(Method::POST, "/", None));
        assert!(!c(Method::GET, "/v1/functions", None));
        assert!(!c(
            Method::POST,
            "/2015-03-31/functions/f/invocations",
            None
        ));
        assert!(!c(Method::POST, "/v1/functions/f/invoke", None));
        assert!(!c(Method::POST, "/fn/f/", None));
        assert!(!c(Method::POST, "/orders", None));
        assert!(!c(Method::POST, "/", Some("AmazonSQS.SendMessage")));
        assert!(!c(Method::POST, "/", Some("AWSEvents.PutEvents")));
    }
}
