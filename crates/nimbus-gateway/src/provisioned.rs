//! Lambda's provisioned concurrency API (`/2019-09-30/functions/{name}/provisioned-concurrency`)
//! and the reconciliation of stored configs with the pool: each config names a published
//! version or an alias; the pool keeps, per version, the sum of the configs resolving to it
//! ([`nimbus_pool::PoolManager::set_provisioned`]). Reconciled after every change of a
//! config, an alias or a version, and at server start ([`Gateway::start_provisioning`]).
//!
//! In cluster mode each node keeps its share of every version's instances
//! ([`crate::ClusterControl::provisioned_share`]; the node reconciles again when the serving
//! nodes or the configs change, [`Gateway::reconcile_provisioned`]), and the API reports the
//! counts summed over the live nodes ([`crate::ClusterControl::provisioned_totals`]).

use crate::lambda_api::{blocking, first, function_ref, paginate, parse_body, parse_query, Query};
use crate::{ApiError, Gateway};
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nimbus_cluster::ProvisionedTotal;
use nimbus_core::{arn, Alias, FunctionConfig, FunctionName, LATEST};
use nimbus_pool::{ProvisionedState, ProvisionedStatus};
use nimbus_store::ProvisionedConfig;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tracing::{info, warn};

use nimbus_core::is_version;

/// The version a config's qualifier stands for now (`None`: the alias or version is gone).
fn target_version(gw: &Gateway, c: &ProvisionedConfig) -> Option<String> {
    if is_version(&c.qualifier) {
        return Some(c.qualifier.clone());
    }
    gw.store
        .get_alias(&c.function, &c.qualifier)
        .ok()
        .map(|a| a.function_version)
}

/// Brings the pool's provisioned instances of `name` in line with its stored configs.
pub(crate) async fn reconcile(gw: &Arc<Gateway>, name: &FunctionName) -> Result<(), ApiError> {
    let configs = {
        let (store, n) = (gw.store.clone(), name.clone());
        match blocking(move || store.list_provisioned(Some(&n))).await {
            Ok(c) => c,
            Err(ApiError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        }
    };
    let mut want: BTreeMap<String, u32> = BTreeMap::new();
    for c in &configs {
        if let Some(v) = target_version(gw, c) {
            *want.entry(v).or_default() += c.requested;
        }
    }
    for (f, v) in gw.pools.provisioned_versions() {
        if f == name.as_str() && !want.contains_key(&v) {
            gw.pools.remove_provisioned(&f, &v);
        }
    }
    for (version, count) in want {
        // In cluster mode, this node's share of them.
        let count = gw
            .cluster
            .get()
            .map_or(count, |c| c.provisioned_share(count));
        if count == 0 {
            gw.pools.remove_provisioned(name.as_str(), &version);
            continue;
        }
        match gw.resolve(name, Some(&version)).await {
            Ok(r) => gw
                .pools
                .set_provisioned(r.spec.clone(), &r.version.revision_id, count),
            Err(e) => warn!(function = %name, version, error = %e, "cannot provision"),
        }
    }
    Ok(())
}

/// A native deploy's `alias` and `provisioned_concurrency` (the manifest's keys), applied
/// once `version` is published: the alias is created or moved to it (weights cleared, as
/// SAM's `AutoPublishAlias` does), its provisioned config set, or removed when the previous
/// deploy had one the new configuration no longer names. A deploy without these keys leaves
/// configs made through the API alone.
pub(crate) async fn apply_deploy_alias(
    gw: &Arc<Gateway>,
    name: &FunctionName,
    previous: Option<&FunctionConfig>,
    config: &FunctionConfig,
    version: &str,
) -> Result<(), ApiError> {
    let old = previous.and_then(|p| Some((p.alias.clone()?, p.provisioned_concurrency?)));
    let new = config.alias.clone().zip(config.provisioned_concurrency);
    if config.alias.is_none() && old.is_none() {
        return Ok(());
    }
    let (store, n, alias, v) = (
        gw.store.clone(),
        name.clone(),
        config.alias.clone(),
        version.to_string(),
    );
    blocking(move || {
        if let Some(a) = &alias {
            match store.get_alias(&n, a) {
                Ok(cur) if cur.function_version == v && cur.routing.is_empty() => {}
                Ok(_) => {
                    store.update_alias(&n, a, Some(&v), None, Some(&BTreeMap::new()), None)?;
                }
                Err(e) if e.is_not_found() => {
                    store.create_alias(
                        &n,
                        &Alias {
                            name: a.clone(),
                            function_version: v.clone(),
                            description: "moved to each deployed version".into(),
                            routing: BTreeMap::new(),
                            revision_id: String::new(),
                        },
                    )?;
                }
                Err(e) => return Err(e),
            }
        }
        if let Some((a, _)) = &old {
            if new.as_ref().map(|(b, _)| b) != Some(a) {
                store.delete_provisioned(&n, a)?;
            }
        }
        if let Some((a, count)) = &new {
            let unchanged = store
                .list_provisioned(Some(&n))?
                .iter()
                .any(|c| &c.qualifier == a && c.requested == *count);
            if !unchanged {
                store.put_provisioned(&n, a, *count)?;
            }
        }
        Ok(())
    })
    .await?;
    gw.changed(name)?;
    reconcile(gw, name).await
}

impl Gateway {
    /// Provisions every stored config (at server start).
    pub async fn start_provisioning(self: &Arc<Self>) -> Result<(), ApiError> {
        let store = self.store.clone();
        let configs = blocking(move || store.list_provisioned(None)).await?;
        let mut names: Vec<FunctionName> = configs.into_iter().map(|c| c.function).collect();
        names.dedup();
        for n in names {
            info!(function = %n, "provisioning concurrency");
            reconcile(self, &n).await?;
        }
        Ok(())
    }

    /// Reconciles every function with a stored config or provisioned instances here (in
    /// cluster mode: when the serving nodes or the configs changed).
    pub async fn reconcile_provisioned(self: &Arc<Self>) -> Result<(), ApiError> {
        let store = self.store.clone();
        let configs = blocking(move || store.list_provisioned(None)).await?;
        let mut names: Vec<String> = configs
            .into_iter()
            .map(|c| c.function.to_string())
            .chain(
                self.pools
                    .provisioned_versions()
                    .into_iter()
                    .map(|(f, _)| f),
            )
            .collect();
        names.sort();
        names.dedup();
        for n in names {
            let Ok(name) = FunctionName::parse(&n) else {
                continue;
            };
            reconcile(self, &name).await?;
        }
        Ok(())
    }
}

/// `function`'s provisioned versions summed over the cluster's nodes (`None` on one node,
/// or when the database does not answer: this node's pool then).
async fn cluster_totals(
    gw: &Arc<Gateway>,
    function: &FunctionName,
) -> Option<HashMap<String, ProvisionedTotal>> {
    let c = gw.cluster.get()?.clone();
    let f = function.to_string();
    match tokio::task::spawn_blocking(move || c.provisioned_totals(&f)).await {
        Ok(None) => None,
        Ok(Some(Ok(t))) => Some(t),
        Ok(Some(Err(e))) => {
            warn!(function = %function, error = %e, "cannot read the cluster's provisioned instances: answering with this node's");
            None
        }
        Err(_) => None,
    }
}

/// Lambda's `ProvisionedConcurrencyConfig` (with `FunctionArn` in list entries). `totals`:
/// the cluster's counts (cluster mode), else this node's pool.
fn config_json(
    gw: &Gateway,
    c: &ProvisionedConfig,
    with_arn: bool,
    totals: Option<&HashMap<String, ProvisionedTotal>>,
) -> Value {
    let version = target_version(gw, c);
    let status = match totals {
        Some(t) => version.and_then(|v| t.get(&v)).map(|t| ProvisionedStatus {
            requested: t.target,
            allocated: t.allocated,
            available: t.available,
            state: if t.allocated >= c.requested {
                ProvisionedState::Ready
            } else if t.failed.is_some() {
                ProvisionedState::Failed
            } else {
                ProvisionedState::InProgress
            },
            reason: t.failed.clone(),
        }),
        None => version.and_then(|v| gw.pools.provisioned_status(c.function.as_str(), &v)),
    };
    let (allocated, available, state, reason) = match status {
        Some(s) => {
            let state = if s.state == ProvisionedState::Ready || s.allocated >= c.requested {
                ProvisionedState::Ready
            } else {
                s.state
            };
            (
                s.allocated.min(c.requested),
                s.available.min(c.requested),
                state,
                s.reason,
            )
        }
        None => (0, 0, ProvisionedState::InProgress, None),
    };
    let mut out = json!({
        "RequestedProvisionedConcurrentExecutions": c.requested,
        "AvailableProvisionedConcurrentExecutions": available,
        "AllocatedProvisionedConcurrentExecutions": allocated,
        "Status": state.as_str(),
        "LastModified": c.last_modified,
    });
    if let (ProvisionedState::Failed, Some(r)) = (state, reason) {
        out["StatusReason"] = r.into();
    }
    if with_arn {
        out["FunctionArn"] = arn::function_arn(c.function.as_str(), Some(&c.qualifier)).into();
    }
    out
}

/// The function and the qualifier of a put/get/delete (required, not `$LATEST`).
fn target(function: &str, q: &Query) -> Result<(FunctionName, String), ApiError> {
    let (name, qualifier) = function_ref(function, q)?;
    match qualifier {
        None => Err(ApiError::InvalidParameter(
            "Qualifier is required: a published version or an alias".into(),
        )),
        Some(q) if q == LATEST => Err(ApiError::InvalidParameter(
            "Provisioned Concurrency Configs cannot be applied to unpublished function versions ($LATEST)".into(),
        )),
        Some(q) => Ok((name, q)),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutInput {
    provisioned_concurrent_executions: Option<Value>,
}

/// `PUT …/provisioned-concurrency?Qualifier=Q` (PutProvisionedConcurrencyConfig): 202.
pub(crate) async fn put_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<Response, ApiError> {
    let q = parse_query(raw)?;
    let (name, qualifier) = target(&function, &q)?;
    let input: PutInput = parse_body(&body)?;
    let n = input
        .provisioned_concurrent_executions
        .ok_or_else(|| {
            ApiError::InvalidParameter("ProvisionedConcurrentExecutions is required".into())
        })?
        .as_u64()
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ApiError::InvalidParameter(
                "ProvisionedConcurrentExecutions must be an integer of at least 1".into(),
            )
        })?;
    // The function, then the version or alias, must exist.
    gw.store.get(&name, None)?;
    let version = if is_version(&qualifier) {
        gw.store.get(&name, Some(&qualifier))?.version
    } else {
        let alias = gw.store.get_alias(&name, &qualifier)?;
        if !alias.routing.is_empty() {
            return Err(ApiError::InvalidParameter(format!(
                "Alias with weights can not be used with Provisioned Concurrency: {qualifier} routes to more than one version"
            )));
        }
        alias.function_version
    };
    let resolved = gw.resolve(&name, Some(&version)).await?;
    let limit = resolved.spec.config.concurrency;
    if n > u64::from(limit) {
        return Err(ApiError::InvalidParameter(format!(
            "ProvisionedConcurrentExecutions ({n}) exceeds the function's concurrency limit ({limit})"
        )));
    }
    let (store, nm, ql) = (gw.store.clone(), name.clone(), qualifier.clone());
    let config = blocking(move || store.put_provisioned(&nm, &ql, n as u32)).await?;
    reconcile(&gw, &name).await?;
    info!(function = %name, qualifier = %config.qualifier, n, "provisioned concurrency set");
    let totals = cluster_totals(&gw, &name).await;
    let body = config_json(&gw, &config, false, totals.as_ref());
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET …/provisioned-concurrency?Qualifier=Q` (GetProvisionedConcurrencyConfig), or with
/// `List=ALL` ListProvisionedConcurrencyConfigs.
pub(crate) async fn get_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(raw)?;
    if first(&q, "List").is_some() {
        return list_configs(&gw, &function, &q).await;
    }
    let (name, qualifier) = target(&function, &q)?;
    gw.store.get(&name, None)?;
    let qualifier = if is_version(&qualifier) {
        qualifier
            .parse::<u64>()
            .map(|v| v.to_string())
            .unwrap_or(qualifier)
    } else {
        qualifier
    };
    let (store, nm) = (gw.store.clone(), name.clone());
    let configs = blocking(move || store.list_provisioned(Some(&nm))).await?;
    let c = configs
        .iter()
        .find(|c| c.qualifier == qualifier)
        .ok_or_else(|| {
            ApiError::ProvisionedConfigNotFound(format!(
                "No Provisioned Concurrency Config found for this function: {name}:{qualifier}"
            ))
        })?;
    let totals = cluster_totals(&gw, &name).await;
    Ok(Json(config_json(&gw, c, false, totals.as_ref())))
}

async fn list_configs(
    gw: &Arc<Gateway>,
    function: &str,
    q: &Query,
) -> Result<Json<Value>, ApiError> {
    if first(q, "List") != Some("ALL") {
        return Err(ApiError::InvalidParameter("List must be ALL".into()));
    }
    let (name, _) = function_ref(function, &Query::new())?;
    gw.store.get(&name, None)?;
    let (store, nm) = (gw.store.clone(), name.clone());
    let configs = blocking(move || store.list_provisioned(Some(&nm))).await?;
    let (page, next) = paginate(configs, q, |c| c.qualifier.clone())?;
    let totals = cluster_totals(gw, &name).await;
    let list: Vec<Value> = page
        .iter()
        .map(|c| config_json(gw, c, true, totals.as_ref()))
        .collect();
    let mut out = json!({ "ProvisionedConcurrencyConfigs": list });
    if let Some(n) = next {
        out["NextMarker"] = n.into();
    }
    Ok(Json(out))
}

/// `DELETE …/provisioned-concurrency?Qualifier=Q` (DeleteProvisionedConcurrencyConfig): 204.
pub(crate) async fn delete_config(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<StatusCode, ApiError> {
    let q = parse_query(raw)?;
    let (name, qualifier) = target(&function, &q)?;
    gw.store.get(&name, None)?;
    let (store, nm, ql) = (gw.store.clone(), name.clone(), qualifier.clone());
    let existed = blocking(move || store.delete_provisioned(&nm, &ql)).await?;
    if !existed {
        return Err(ApiError::ProvisionedConfigNotFound(format!(
            "No Provisioned Concurrency Config found for this function: {name}:{qualifier}"
        )));
    }
    reconcile(&gw, &name).await?;
    info!(function = %name, qualifier, "provisioned concurrency removed");
    Ok(StatusCode::NO_CONTENT)
}
