//! Shared gateway state: the registry, code store, pools, a cache of resolved function
//! versions and the user route table.

use crate::ApiError;
use nimbus_core::{FunctionName, FunctionVersion, RouteSpec, LATEST};
use nimbus_pool::PoolManager;
use nimbus_runtime::{InstanceSpec, ProcessExecutor};
use nimbus_store::{CodeStore, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

pub type Pools = PoolManager<ProcessExecutor>;

/// Gateway settings.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Base URL clients reach this server at (for function URLs), e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Reported by `/v1/health`.
    pub memory_limits: String,
}

/// A function version resolved for invocation.
pub(crate) struct Resolved {
    pub version: FunctionVersion,
    pub spec: Arc<InstanceSpec>,
}

pub struct Gateway {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) code: Arc<CodeStore>,
    pub(crate) pools: Arc<Pools>,
    pub(crate) cfg: GatewayConfig,
    cache: RwLock<HashMap<(String, String), Arc<Resolved>>>,
    routes: RwLock<Vec<(RouteSpec, FunctionName)>>,
}

impl Gateway {
    pub fn new(
        store: Arc<dyn Store>,
        code: Arc<CodeStore>,
        pools: Arc<Pools>,
        cfg: GatewayConfig,
    ) -> Result<Arc<Self>, ApiError> {
        let gw = Arc::new(Self {
            store,
            code,
            pools,
            cfg,
            cache: Default::default(),
            routes: Default::default(),
        });
        gw.rebuild_routes()?;
        Ok(gw)
    }

    /// Resolves `name` at `qualifier` (cached until the function changes).
    pub(crate) async fn resolve(
        &self,
        name: &FunctionName,
        qualifier: Option<&str>,
    ) -> Result<Arc<Resolved>, ApiError> {
        let q = qualifier.unwrap_or(LATEST).to_string();
        let key = (name.to_string(), q.clone());
        if let Some(r) = self.cache.read().unwrap().get(&key) {
            return Ok(r.clone());
        }
        let version = self.store.get(name, Some(&q))?;
        let code = self.code.clone();
        let sha = version.code_sha256.clone();
        let code_dir = tokio::task::spawn_blocking(move || code.dir(&sha)).await??;
        let spec = Arc::new(InstanceSpec {
            function: name.clone(),
            version: version.version.clone(),
            config: version.config.clone(),
            code_dir,
        });
        let r = Arc::new(Resolved { version, spec });
        self.cache.write().unwrap().insert(key, r.clone());
        Ok(r)
    }

    /// Forgets cached versions of `name` after it changed.
    pub(crate) fn invalidate(&self, name: &FunctionName) {
        self.cache
            .write()
            .unwrap()
            .retain(|(n, _), _| n != name.as_str());
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
        *self.routes.write().unwrap() = table;
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
            .read()
            .unwrap()
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
            .read()
            .unwrap()
            .iter()
            .find(|(r, f)| f != name && routes.iter().any(|mine| mine.key() == r.key()))
            .map(|(r, f)| (r.key().to_string(), f.clone()))
    }

    pub(crate) fn function_url(&self, name: &FunctionName) -> String {
        format!("{}/fn/{}/", self.cfg.public_url.trim_end_matches('/'), name)
    }
}
