//! Shared gateway state: the registry, code store, pools, a cache of resolved function
//! versions and the user route table.

use crate::ApiError;
use arc_swap::ArcSwap;
use nimbus_core::SnapshotMap;
use nimbus_core::{Alias, FunctionName, FunctionVersion, RouteSpec, LATEST};
use nimbus_events::engine::AsyncEngine;
use nimbus_pool::PoolManager;
use nimbus_runtime::{HostExecutor, InstanceSpec};
use nimbus_store::{CodeStore, Store};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub type Pools = PoolManager<HostExecutor>;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Base URL clients reach this server at (for function URLs), e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Reported by `/v1/health`.
    pub memory_limits: String,
    /// The sandbox (`{mode, level, layers: [{name, ok, detail}]}`), reported by `/v1/health`.
    pub isolation: serde_json::Value,
    /// The metrics registry every surface records into (served at `GET /metrics`).
    pub metrics: Arc<nimbus_metrics::Metrics>,
    /// Where trace spans go ([`nimbus_trace::Tracer::off`]: nowhere).
    pub tracer: nimbus_trace::Tracer,
}

/// A function version resolved for invocation.
pub(crate) struct Resolved {
    pub version: FunctionVersion,
    /// The instance spec; its concurrency is the reserved concurrency when one is set.
    pub spec: Arc<InstanceSpec>,
    /// Reserved concurrency 0: every invocation is throttled.
    pub throttled: bool,
    /// The function's reserved concurrency when it has one above 0 (held across the
    /// cluster's nodes in cluster mode: `permits.rs`).
    pub reserved: Option<u32>,
    /// The function's metric series under the qualifier it was called by, reached without
    /// a shared lock.
    pub metrics: Arc<nimbus_metrics::FunctionMetrics>,
}

/// A cached resolution: function, version, and the alias it was called by (an alias has
/// series of its own, so the same version has one entry per alias pointing at it).
type ResolvedKey = (String, String, Option<String>);

pub struct Gateway {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) code: Arc<CodeStore>,
    pub(crate) pools: Arc<Pools>,
    pub(crate) cfg: GatewayConfig,
    pub(crate) events: Arc<AsyncEngine>,
    /// The event bus, when the server enabled it ([`Gateway::with_bus`]).
    pub(crate) bus: std::sync::OnceLock<Arc<nimbus_events::bus::EventBus>>,
    /// Built-in queues and their pollers, when the server enabled them ([`Gateway::with_queues`]).
    pub(crate) queues: std::sync::OnceLock<Arc<nimbus_events::mapping::MappingRunner>>,
    /// External event sources and their runner, when the server enabled them
    /// ([`Gateway::with_sources`]).
    pub(crate) sources: std::sync::OnceLock<Arc<nimbus_sources::SourceRunner>>,
    /// External targets and their outbox delivery ([`Gateway::with_targets`]).
    pub(crate) targets: std::sync::OnceLock<Arc<nimbus_sources::targets::TargetRunner>>,
    /// The secrets store, when the server enabled it ([`Gateway::with_secrets`]).
    pub(crate) secrets: std::sync::OnceLock<crate::Secrets>,
    /// Access keys and whether API requests must be signed ([`Gateway::with_auth`]).
    pub(crate) auth: std::sync::OnceLock<Arc<crate::Auth>>,
    /// Resolved versions (by function, version and alias) and aliases (by function and
    /// alias): read by every invocation without a lock, dropped when the function changes.
    cache: SnapshotMap<ResolvedKey, Arc<Resolved>>,
    aliases: SnapshotMap<(String, String), Arc<Alias>>,
    /// Bumped by every invalidation: a resolution that read the registry before a change
    /// is not cached after it.
    generation: AtomicU64,
    routes: ArcSwap<Vec<(RouteSpec, FunctionName)>>,
    /// Abuse limits and their buckets ([`Gateway::with_limits`]; defaults otherwise).
    limiter: std::sync::OnceLock<crate::limits::Limiter>,
    /// JWKS fetched from authorizers' `jwks_url`.
    pub(crate) jwks: crate::jwt::JwksCache,
    /// Requests to the code garbage collector (`code_gc.rs`), started on first use.
    pub(crate) code_gc: std::sync::OnceLock<tokio::sync::mpsc::Sender<()>>,
    /// The last health report ([`Gateway::with_health`]), read by `/v1/health` and `/v1/ready`.
    pub(crate) health: std::sync::OnceLock<Arc<crate::HealthMonitor>>,
    /// Set when the server shuts down: live log tails (`logs.rs`) end their streams.
    pub(crate) tails_end: tokio::sync::watch::Sender<bool>,
    /// The per-minute history and alarms ([`Gateway::with_history`]).
    pub(crate) history: std::sync::OnceLock<Arc<crate::History>>,
    /// SQS message move tasks (StartMessageMoveTask), in memory.
    pub(crate) move_tasks: crate::sqs::MoveTasks,
    /// The object store, when the S3 listener is on ([`Gateway::with_objects`]).
    pub(crate) objects: std::sync::OnceLock<nimbus_objects::Objects>,
    /// The workflow executor behind the Step Functions API ([`Gateway::with_workflows`]).
    pub(crate) workflows: std::sync::OnceLock<nimbus_workflows::Workflows>,
    /// Routes served by workflows (`workflow_routes.rs`).
    pub(crate) workflow_routes: ArcSwap<crate::workflow_routes::Table>,
    /// The cluster API's answers ([`Gateway::with_cluster`]).
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn crate::cluster::ClusterControl>>,
    /// Reserved concurrency leased from the cluster's shared budget, in cluster mode only
    /// ([`Gateway::with_permits`]).
    pub(crate) permits: std::sync::OnceLock<Arc<nimbus_cluster::PermitGate>>,
    /// Forwarding of synchronous invocations to other nodes' warm instances, in cluster
    /// mode only ([`Gateway::with_forwarding`]).
    pub(crate) forward: std::sync::OnceLock<Arc<crate::forward::Forwarder>>,
    /// Responses of cached function URLs and routes (`http_cache.rs`,
    /// [`Gateway::with_response_cache`]): a function's entries go when it changes.
    pub(crate) response_cache: std::sync::OnceLock<Arc<nimbus_cache::ResponseCache>>,
}

impl Gateway {
    /// Ends the live log tails (`follow=true` streams never end by themselves): called
    /// when the server starts shutting down, so they do not hold it for the whole grace.
    pub fn end_log_tails(&self) {
        self.tails_end.send_replace(true);
    }

    pub fn new(
        store: Arc<dyn Store>,
        code: Arc<CodeStore>,
        pools: Arc<Pools>,
        events: Arc<AsyncEngine>,
        cfg: GatewayConfig,
    ) -> Result<Arc<Self>, ApiError> {
        let gw = Arc::new(Self {
            store,
            code,
            pools,
            cfg,
            events,
            bus: Default::default(),
            queues: Default::default(),
            sources: Default::default(),
            targets: Default::default(),
            secrets: Default::default(),
            auth: Default::default(),
            cache: Default::default(),
            aliases: Default::default(),
            generation: AtomicU64::new(0),
            routes: Default::default(),
            limiter: Default::default(),
            jwks: Default::default(),
            code_gc: Default::default(),
            health: Default::default(),
            tails_end: tokio::sync::watch::Sender::new(false),
            history: Default::default(),
            move_tasks: Default::default(),
            objects: Default::default(),
            workflows: Default::default(),
            workflow_routes: Default::default(),
            cluster: Default::default(),
            permits: Default::default(),
            forward: Default::default(),
            response_cache: Default::default(),
        });
        gw.rebuild_routes()?;
        for f in gw.store.list()? {
            gw.sync_reservation(&f.name)?;
        }
        Ok(gw)
    }

    /// Tells the pool the function's reserved concurrency (none once it is deleted).
    pub(crate) fn sync_reservation(&self, name: &FunctionName) -> Result<(), ApiError> {
        let reserved = match self.store.meta(name) {
            Ok(meta) => meta.reserved_concurrency,
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e.into()),
        };
        self.pools.set_reservation(name.as_str(), reserved);
        Ok(())
    }

    /// Serves the event bus API (`/v1/buses/…`) from `bus`; set once, right after
    /// [`Gateway::new`].
    pub fn with_bus(self: Arc<Self>, bus: Arc<nimbus_events::bus::EventBus>) -> Arc<Self> {
        let _ = self.bus.set(bus);
        self
    }

    /// Serves the native bucket API (`/v1/buckets/…`) from `objects` (the store the S3
    /// listener serves); set once, when `--s3-listen` is on.
    pub fn with_objects(self: Arc<Self>, objects: nimbus_objects::Objects) -> Arc<Self> {
        let _ = self.objects.set(objects);
        self
    }

    /// Serves the Step Functions API (`X-Amz-Target: AWSStepFunctions.*`) from
    /// `workflows`; set once, before serving.
    pub fn with_workflows(self: Arc<Self>, workflows: nimbus_workflows::Workflows) -> Arc<Self> {
        let _ = self.workflows.set(workflows);
        self.workflows_changed();
        self
    }

    /// Keeps the per-minute history and alarms in `history` (`/v1/…/metrics`,
    /// `/v1/alarms`; run [`Gateway::run_history`] and [`Gateway::run_alarms`]). Set once.
    pub fn with_history(self: Arc<Self>, history: Arc<crate::History>) -> Arc<Self> {
        let _ = self.history.set(history);
        self
    }

    /// Enforces `limits` (header and body sizes, rate limits, uploads, body deadline).
    /// Set once, before serving.
    pub fn with_limits(self: Arc<Self>, limits: crate::AbuseLimits) -> Arc<Self> {
        let _ = self.limiter.set(crate::limits::Limiter::new(limits));
        self
    }

    pub(crate) fn limiter(&self) -> &crate::limits::Limiter {
        self.limiter
            .get_or_init(|| crate::limits::Limiter::new(Default::default()))
    }

    /// Serves the secrets API (`/v1/secrets`) from `secrets`. Set once, before serving.
    pub fn with_secrets(self: Arc<Self>, secrets: crate::Secrets) -> Arc<Self> {
        let _ = self.secrets.set(secrets);
        self
    }

    /// Checks API requests against `auth`'s access keys (when it is enabled) and serves the
    /// keys API (`/v1/keys`). Set once, before serving.
    pub fn with_auth(self: Arc<Self>, auth: Arc<crate::Auth>) -> Arc<Self> {
        let _ = self.auth.set(auth);
        self
    }

    /// Answers `/v1/health` and `/v1/ready` from `monitor`'s last report. Set once,
    /// before serving.
    pub fn with_health(self: Arc<Self>, monitor: Arc<crate::HealthMonitor>) -> Arc<Self> {
        let _ = self.health.set(monitor);
        self
    }

    /// Enables the built-in queues and event-source mappings (`/v1/queues`,
    /// `/2015-03-31/event-source-mappings`). Set once, before serving.
    pub fn with_queues(
        self: Arc<Self>,
        runner: Arc<nimbus_events::mapping::MappingRunner>,
    ) -> Arc<Self> {
        let _ = self.queues.set(runner);
        self
    }

    /// Enables the external event sources (`/v1/sources`, and self-managed sources in
    /// `/2015-03-31/event-source-mappings`). Set once, before serving.
    pub fn with_sources(self: Arc<Self>, runner: Arc<nimbus_sources::SourceRunner>) -> Arc<Self> {
        let _ = self.sources.set(runner);
        self
    }

    /// Enables external targets (`/v1/targets`). Set once, before serving.
    pub fn with_targets(
        self: Arc<Self>,
        runner: Arc<nimbus_sources::targets::TargetRunner>,
    ) -> Arc<Self> {
        let _ = self.targets.set(runner);
        self
    }

    /// Resolves `name` at `qualifier` — `$LATEST`, a version, or an alias (whose weighted
    /// routing picks the version for this call) — to a runnable version. Versions and
    /// aliases are cached until the function changes. Its invocations are counted under
    /// the qualifier as called (the alias, not the version it picked).
    pub(crate) async fn resolve(
        &self,
        name: &FunctionName,
        qualifier: Option<&str>,
    ) -> Result<Arc<Resolved>, ApiError> {
        let (version, alias) = match qualifier {
            Some(q) if q != LATEST && !q.bytes().all(|b| b.is_ascii_digit()) => (
                pick_version(self.alias(name, q)?.as_ref(), random_unit()),
                Some(q.to_string()),
            ),
            Some(q) => (q.to_string(), None),
            None => (LATEST.to_string(), None),
        };
        let key = (name.to_string(), version.clone(), alias);
        if let Some(r) = self.cache.get(&key) {
            return Ok(r);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let stored = self.store.get(name, Some(&version))?;
        let reserved = self.store.meta(name)?.reserved_concurrency;
        let code = self.code.clone();
        let sha = stored.code_sha256.clone();
        let layers: Vec<String> = stored
            .config
            .layers
            .iter()
            .map(|l| l.sha256.clone())
            .collect();
        // The layers merged into one tree (built once per ordered list of layers).
        let (code_dir, opt_dir) = tokio::task::spawn_blocking(move || {
            let opt = (!layers.is_empty())
                .then(|| code.opt_dir(&layers))
                .transpose()?;
            Ok::<_, nimbus_store::StoreError>((code.dir(&sha)?, opt))
        })
        .await??;
        let mut config = stored.config.clone();
        if let Some(r) = reserved.filter(|r| *r > 0) {
            config.concurrency = r;
        }
        let spec = Arc::new(InstanceSpec {
            function: name.clone(),
            version: stored.version.clone(),
            config,
            code_dir,
            opt_dir,
        });
        let r = Arc::new(Resolved {
            version: stored,
            spec,
            throttled: reserved == Some(0),
            reserved: reserved.filter(|r| *r > 0),
            metrics: self
                .cfg
                .metrics
                .function(name.as_str(), key.2.as_deref().unwrap_or(&version)),
        });
        self.remember(&self.cache, generation, key, r.clone());
        Ok(r)
    }

    fn alias(&self, name: &FunctionName, alias: &str) -> Result<Arc<Alias>, ApiError> {
        let key = (name.to_string(), alias.to_string());
        if let Some(a) = self.aliases.get(&key) {
            return Ok(a);
        }
        let generation = self.generation.load(Ordering::SeqCst);
        let a = Arc::new(self.store.get_alias(name, alias)?);
        self.remember(&self.aliases, generation, key, a.clone());
        Ok(a)
    }

    /// Caches `value`, read from the registry when the generation was `read_at`, unless the
    /// function changed since (checked under the map's writer lock, which `invalidate`'s
    /// removal also takes).
    fn remember<K: Eq + std::hash::Hash + Clone, V: Clone>(
        &self,
        cache: &SnapshotMap<K, V>,
        read_at: u64,
        key: K,
        value: V,
    ) {
        cache.update(|m| {
            if self.generation.load(Ordering::SeqCst) == read_at {
                m.insert(key, value);
            }
        });
    }

    /// Forgets cached versions and aliases of `name` after it changed.
    pub(crate) fn invalidate(&self, name: &FunctionName) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.retain(|(n, _, _), _| n != name.as_str());
        self.aliases.retain(|(n, _), _| n != name.as_str());
        if let Some(c) = self.response_cache.get() {
            c.invalidate_function(name.as_str());
        }
    }

    /// Forgets every cached version and alias (another node changed the registry).
    pub(crate) fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.cache.retain(|_, _| false);
        self.aliases.retain(|_, _| false);
        if let Some(c) = self.response_cache.get() {
            c.clear();
        }
    }

    /// After any write to `name`: drop caches and rebuild the route table.
    pub(crate) fn changed(&self, name: &FunctionName) -> Result<(), ApiError> {
        self.invalidate(name);
        self.sync_reservation(name)?;
        self.rebuild_routes()
    }

    /// Rebuilds the user route table from the registry.
    pub(crate) fn rebuild_routes(&self) -> Result<(), ApiError> {
        let mut table: Vec<(RouteSpec, FunctionName)> = Vec::new();
        for f in self.store.list()? {
            for r in &f.config.routes {
                table.push((r.clone(), f.name.clone()));
            }
        }
        table.sort_by_key(|(r, _)| std::cmp::Reverse(r.specificity()));
        self.routes.store(Arc::new(table));
        Ok(())
    }

    /// The function and route serving `method path`, with its path parameters.
    pub(crate) fn match_route(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(
        RouteSpec,
        FunctionName,
        std::collections::BTreeMap<String, String>,
    )> {
        self.routes
            .load()
            .iter()
            .find_map(|(r, f)| r.matches(method, path).map(|p| (r.clone(), f.clone(), p)))
    }

    /// Another function that already serves one of `routes`, if any.
    pub(crate) fn route_conflict(
        &self,
        name: &FunctionName,
        routes: &[RouteSpec],
    ) -> Option<(String, FunctionName)> {
        self.routes
            .load()
            .iter()
            .find(|(r, f)| f != name && routes.iter().any(|mine| mine.key() == r.key()))
            .map(|(r, f)| (r.key().to_string(), f.clone()))
    }

    pub(crate) fn function_url(&self, name: &FunctionName) -> String {
        format!("{}/fn/{}/", self.cfg.public_url.trim_end_matches('/'), name)
    }
}

/// The version an alias sends this call to: each additional version gets its weight's
/// share of calls (`r` uniform in 0..1), the alias's own version the rest.
pub(crate) fn pick_version(alias: &Alias, r: f64) -> String {
    let mut acc = 0.0;
    for (version, weight) in &alias.routing {
        acc += weight;
        if r < acc {
            return version.clone();
        }
    }
    alias.function_version.clone()
}

/// A uniform random number in 0..1 (from the OS generator behind uuid v4; its low 56
/// bits are all random — the version and variant bits sit higher).
fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() & ((1u128 << 53) - 1)) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_alias_routing() {
        let mut alias = Alias {
            name: "live".into(),
            function_version: "1".into(),
            description: String::new(),
            routing: Default::default(),
            revision_id: String::new(),
        };
        assert_eq!(pick_version(&alias, 0.0), "1");
        alias.routing.insert("2".into(), 0.25);
        assert_eq!(pick_version(&alias, 0.1), "2");
        assert_eq!(pick_version(&alias, 0.3), "1");
        let n = (0..10_000)
            .filter(|_| pick_version(&alias, random_unit()) == "2")
            .count();
        assert!((2000..3000).contains(&n), "{n} of 10000 went to version 2");
        assert!((0..1000)
            .map(|_| random_unit())
            .all(|r| (0.0..1.0).contains(&r)));
    }
}
