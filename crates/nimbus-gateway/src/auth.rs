//! Authentication and authorization of every API request: SigV4 ([`nimbus_auth::sigv4`])
//! against the access keys (cached in memory, stored sealed in `secrets.db`), then the
//! key's policy — or, for invocations, the function's resource policy (`AddPermission`) —
//! for the action and resource the route means ([`classify`], the one table of them).
//!
//! Public: `/v1/health`, `/v1/ready`, function URLs (their `AuthType AWS_IAM` is checked in `urls.rs`
//! through [`check_function_url`]) and user routes. Everything else — the Lambda API, the
//! native `/v1` API, queues, buses, keys and EventBridge's, SQS's and IAM's `POST /` — needs
//! a signed request when auth is on. Instances' temporary credentials (`sessions.rs`) also
//! need their session token. On an instance's private endpoint ([`PrivateEndpoint`])
//! everything needs a signature by that instance's credentials, whatever `--auth` says.

use crate::{ApiError, Gateway};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{request::Parts, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nimbus_auth::policy::resource_policy_allows;
use nimbus_auth::sigv4::{self, Authorization};
use nimbus_auth::{AuthError, Decision, Policy};
use nimbus_core::arn::{self, ACCOUNT, REGION};
use nimbus_core::SnapshotMap;
use nimbus_store::{AccessKey, SecretStore, StoreError};
use std::sync::Arc;

/// An access key as the server holds it in memory.
#[derive(Clone)]
pub struct Key {
    pub id: String,
    pub name: String,
    pub user_arn: String,
    pub policy: Policy,
    pub created_ms: i64,
    pub(crate) secret: String,
    /// Set for an instance's temporary role credentials (`sessions.rs`).
    pub(crate) session: Option<crate::sessions::Session>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({} {})", self.id, self.name)
    }
}

impl Key {
    fn from_stored(k: AccessKey) -> Result<Self, StoreError> {
        let policy = Policy::parse(&k.policy)
            .map_err(|e| StoreError::Corrupt(format!("access key {}: stored policy: {e}", k.id)))?;
        Ok(Self {
            user_arn: nimbus_auth::user_arn(&k.name),
            id: k.id,
            name: k.name,
            policy,
            created_ms: k.created_ms,
            secret: k.secret,
            session: None,
        })
    }
}

/// The access keys and whether requests must be signed.
pub struct Auth {
    enabled: bool,
    pub(crate) store: Arc<SecretStore>,
    /// Read by every signed request without a lock.
    pub(crate) keys: SnapshotMap<String, Arc<Key>>,
    /// Held while a role's policies change and while credentials for a role are minted,
    /// so live credentials always carry the role's current policies (`sessions.rs`).
    pub(crate) roles_lock: std::sync::Mutex<()>,
    /// Keys held in memory only ([`Auth::ephemeral_key`]): kept when the stored keys are
    /// read again. Also the lock of key changes: held by [`Auth::reload`] from its read
    /// of the store to its update of the map, and by every change from its store write to
    /// its map write, so a reload can neither drop a key created while it read nor bring
    /// back one deleted while it read.
    ephemeral: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Auth {
    /// Loads every key from `store` into memory. With `enabled` false, API requests are not
    /// checked (function URLs with `AuthType AWS_IAM` still are).
    pub fn open(store: Arc<SecretStore>, enabled: bool) -> Result<Arc<Self>, StoreError> {
        let keys = SnapshotMap::new();
        for k in store.access_keys()? {
            let key = Key::from_stored(k)?;
            keys.insert(key.id.clone(), Arc::new(key));
        }
        Ok(Arc::new(Self {
            enabled,
            store,
            keys,
            roles_lock: std::sync::Mutex::new(()),
            ephemeral: Default::default(),
        }))
    }

    /// Reads the stored keys again (another node of a cluster created, rotated or deleted
    /// some): new and changed keys are taken, deleted ones dropped; keys held in memory
    /// only and instances' credentials stay.
    pub fn reload(&self) -> Result<(), StoreError> {
        let ephemeral = self.changes();
        let mut stored = std::collections::HashMap::new();
        for k in self.store.access_keys()? {
            let key = Key::from_stored(k)?;
            stored.insert(key.id.clone(), Arc::new(key));
        }
        self.keys.update(|m| {
            m.retain(|id, k| {
                k.session.is_some() || ephemeral.contains(id) || stored.contains_key(id)
            });
            for (id, k) in stored {
                m.insert(id, k);
            }
        });
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// How many keys exist.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Creates a key named `name` with `policy`; the returned record holds the secret, to be
    /// shown once.
    pub fn create_key(&self, name: &str, policy: &Policy) -> Result<AccessKey, StoreError> {
        let (id, secret) = nimbus_auth::keys::generate();
        let _changes = self.changes();
        let stored = self
            .store
            .create_access_key(&id, name, &policy.to_json(), &secret)?;
        let key = Key::from_stored(stored.clone())?;
        self.keys.insert(id, Arc::new(key));
        Ok(stored)
    }

    /// A key held in memory only (never stored, gone at restart), for a client inside the
    /// server's own process. Returns `(id, secret)`.
    pub fn ephemeral_key(&self, name: &str, policy: &Policy) -> (String, String) {
        let (id, secret) = nimbus_auth::keys::generate();
        let key = Key {
            id: id.clone(),
            name: name.to_string(),
            user_arn: nimbus_auth::user_arn(name),
            policy: policy.clone(),
            created_ms: time::OffsetDateTime::now_utc().unix_timestamp() * 1000,
            secret: secret.clone(),
            session: None,
        };
        let mut ephemeral = self.changes();
        ephemeral.insert(id.clone());
        self.keys.insert(id.clone(), Arc::new(key));
        (id, secret)
    }

    /// Every key, sorted by name (not instances' temporary credentials).
    pub fn list(&self) -> Vec<Arc<Key>> {
        let mut v: Vec<Arc<Key>> = self
            .keys
            .snapshot()
            .values()
            .filter(|k| k.session.is_none())
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Deletes a key. Refuses to delete the last admin key while auth is on (nobody could
    /// manage keys afterwards).
    pub fn delete_key(&self, id: &str) -> Result<(), ApiError> {
        let _changes = self.changes();
        let keys = self.list();
        let Some(key) = keys.iter().find(|k| k.id == id) else {
            return Err(ApiError::NotFound(format!("access key not found: {id}")));
        };
        if self.enabled
            && key.policy.is_admin()
            && keys.iter().filter(|k| k.policy.is_admin()).count() == 1
        {
            return Err(ApiError::Conflict(format!(
                "{id} is the last key with nimbus:Admin: create another admin key first"
            )));
        }
        match self.store.delete_access_key(id) {
            // An ephemeral key lives in the cache only.
            Err(e) if e.is_not_found() => {}
            other => other?,
        }
        self.keys.remove(id);
        Ok(())
    }

    /// The lock of key changes (the set of ephemeral keys).
    fn changes(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.ephemeral.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn key(&self, id: &str) -> Option<Arc<Key>> {
        self.keys.get(id)
    }

    /// The secret and policy of key `id`, for a surface that verifies signatures itself
    /// (the S3 listener: `s3s` checks SigV4 and presigned URLs).
    pub fn signing_key(&self, id: &str) -> Option<(String, Policy)> {
        self.key(id).map(|k| (k.secret.clone(), k.policy.clone()))
    }
}

/// The key a request was signed with; in the request's extensions after [`enforce`].
#[derive(Debug, Clone)]
pub struct Caller(pub Arc<Key>);

/// One permission a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub action: String,
    pub resource: String,
}

pub(crate) fn check(action: &str, resource: impl Into<String>) -> Check {
    Check {
        action: action.to_string(),
        resource: resource.into(),
    }
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// No signature: health, function URLs, user routes.
    Public,
    /// A signed request with these permissions (none: any valid key, for paths that will
    /// answer 404 anyway).
    Api(Vec<Check>),
    /// `CreateFunction`: the resource is the body's `FunctionName`.
    CreateFunction,
    /// Native deploy: `lambda:CreateFunction` for a new function, else
    /// `lambda:UpdateFunctionCode` and `lambda:UpdateFunctionConfiguration`.
    Deploy(String),
    /// The SQS API: `sqs:<Op>` on the queue's ARN, read from the body (`sqs::checks`).
    Sqs,
    /// The IAM API: `iam:<Op>` on the role's ARN, read from the body (`iam::checks`).
    Iam,
    /// EventBridge's JSON API: `events:<Op>` on the buses or the rule the body names
    /// (`bus::checks`).
    Events,
    /// The Step Functions API: `states:<Op>` on the machine, version, alias or execution
    /// the body names (`states::checks`).
    States,
}

/// Set (by the server) on every request that arrived at an instance's private AWS
/// endpoint: authentication is enforced whatever `--auth` says, and only the instance's
/// own temporary credentials are accepted.
#[derive(Debug, Clone)]
pub struct PrivateEndpoint {
    /// The access key id of the instance's credentials.
    pub access_key_id: String,
}

fn decode(seg: &str) -> String {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(v) = u8::from_str_radix(hex, 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|p| p.split_once('=').or(Some((p, ""))))
        .find(|(k, _)| decode(k) == name)
        .map(|(_, v)| decode(&v.replace('+', " ")))
        .filter(|v| !v.is_empty())
}

/// The ARN of the function named in a path segment (a name, `name:qualifier` or an ARN),
/// qualified by the segment's qualifier or else `qualifier`.
/// The id of the existing access key a request's `Authorization` header names (not yet
/// verified): per-key rate limits use it.
pub(crate) fn claimed_key_id(gw: &Gateway, headers: &HeaderMap) -> Option<String> {
    let auth = gw.auth.get()?;
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let rest = value.strip_prefix("AWS4-HMAC-SHA256")?;
    let cred = rest.split_once("Credential=")?.1;
    let id = cred.split('/').next()?.trim();
    auth.key(id).map(|k| k.id.clone())
}

pub(crate) fn function_resource(seg: &str, qualifier: Option<&str>) -> String {
    match arn::parse_function_ref(seg) {
        Ok((name, q)) => arn::function_arn(name.as_str(), q.as_deref().or(qualifier)),
        Err(_) => arn::function_arn(seg, qualifier),
    }
}

fn queue_arn(q: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{q}")
}

fn bus_arn(b: &str) -> String {
    format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{b}")
}

/// The table: which action on which resource each API route means.
/// The ARN a layer API request acts on: the layer, or one of its versions.
fn layer_arn(name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}:{v}"),
        None => format!("arn:aws:lambda:{REGION}:{ACCOUNT}:layer:{name}"),
    }
}

pub(crate) fn classify(method: &Method, path: &str, query: &str, headers: &HeaderMap) -> Target {
    let segs: Vec<String> = path.split('/').skip(1).map(decode).collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.as_str();
    let q = query_param(query, "Qualifier");
    let f = |seg: &str| function_resource(seg, q.as_deref());
    let lambda = |a: &str| format!("lambda:{a}");
    let one = |a: String, r: String| Target::Api(vec![check(&a, r)]);
    match (m, s.as_slice()) {
        ("GET", ["v1", "health"]) | ("GET", ["v1", "ready"]) => Target::Public,
        // Signed with the cluster's node key, checked by the handler (`forward.rs`).
        ("POST", ["v1", "internal", "invoke"]) => Target::Public,
        ("GET", ["metrics"]) => one("nimbus:GetMetrics".into(), "*".into()),
        (_, ["fn", ..]) => Target::Public,
        _ if crate::sqs::protocol_of(method, path, headers).is_some() => Target::Sqs,
        _ if crate::iam::is_iam(method, path, headers) => Target::Iam,
        _ if crate::states::op_of(method, path, headers).is_some() => Target::States,
        ("POST", [""]) if events_op(headers).is_some() => Target::Events,
        // The Lambda API.
        ("POST", ["2015-03-31", "functions", name, "invocations"]) => {
            one(lambda("InvokeFunction"), f(name))
        }
        // InvokeWithResponseStream is authorised as lambda:InvokeFunction, as on AWS.
        ("POST", ["2021-11-15", "functions", name, "response-streaming-invocations"]) => {
            one(lambda("InvokeFunction"), f(name))
        }
        ("GET", ["2015-03-31", "functions"] | ["2015-03-31", "functions", ""]) => {
            one(lambda("ListFunctions"), "*".into())
        }
        ("POST", ["2015-03-31", "functions"] | ["2015-03-31", "functions", ""]) => {
            Target::CreateFunction
        }
        (_, ["2015-03-31", "functions", name]) => match m {
            "GET" => one(lambda("GetFunction"), f(name)),
            "DELETE" => one(lambda("DeleteFunction"), f(name)),
            _ => Target::Api(vec![]),
        },
        (_, ["2015-03-31", "functions", name, "configuration"]) => match m {
            "GET" => one(lambda("GetFunctionConfiguration"), f(name)),
            _ => one(lambda("UpdateFunctionConfiguration"), f(name)),
        },
        (_, ["2015-03-31", "functions", name, "code"]) => {
            one(lambda("UpdateFunctionCode"), f(name))
        }
        (_, ["2015-03-31", "functions", name, "versions"]) => match m {
            "GET" => one(lambda("ListVersionsByFunction"), f(name)),
            _ => one(lambda("PublishVersion"), f(name)),
        },
        (_, ["2015-03-31", "functions", name, "aliases"]) => match m {
            "GET" => one(lambda("ListAliases"), f(name)),
            _ => one(lambda("CreateAlias"), f(name)),
        },
        (_, ["2015-03-31", "functions", name, "aliases", alias]) => {
            let a = match m {
                "GET" => "GetAlias",
                "DELETE" => "DeleteAlias",
                _ => "UpdateAlias",
            };
            one(lambda(a), function_resource(name, Some(alias)))
        }
        (_, ["2015-03-31", "functions", name, "policy"]) => match m {
            "GET" => one(lambda("GetPolicy"), f(name)),
            _ => one(lambda("AddPermission"), f(name)),
        },
        (_, ["2015-03-31", "functions", name, "policy", _sid]) => {
            one(lambda("RemovePermission"), f(name))
        }
        (_, [_, "functions", name, "concurrency"]) => match m {
            "GET" => one(lambda("GetFunctionConcurrency"), f(name)),
            "DELETE" => one(lambda("DeleteFunctionConcurrency"), f(name)),
            _ => one(lambda("PutFunctionConcurrency"), f(name)),
        },
        (_, ["2019-09-30", "functions", name, "provisioned-concurrency"]) => {
            let a = match m {
                "GET" if query_param(query, "List").is_some() => {
                    "ListProvisionedConcurrencyConfigs"
                }
                "GET" => "GetProvisionedConcurrencyConfig",
                "DELETE" => "DeleteProvisionedConcurrencyConfig",
                _ => "PutProvisionedConcurrencyConfig",
            };
            one(lambda(a), f(name))
        }
        (_, ["2019-09-25", "functions", name, "event-invoke-config"]) => {
            let a = match m {
                "GET" => "GetFunctionEventInvokeConfig",
                "PUT" => "PutFunctionEventInvokeConfig",
                "DELETE" => "DeleteFunctionEventInvokeConfig",
                _ => "UpdateFunctionEventInvokeConfig",
            };
            one(lambda(a), f(name))
        }
        (_, ["2019-09-25", "functions", name, "event-invoke-config", "list"]) => {
            one(lambda("ListFunctionEventInvokeConfigs"), f(name))
        }
        (
            _,
            ["2015-03-31", "event-source-mappings"] | ["2015-03-31", "event-source-mappings", ""],
        ) => match m {
            "GET" => one(lambda("ListEventSourceMappings"), "*".into()),
            _ => one(lambda("CreateEventSourceMapping"), "*".into()),
        },
        (_, ["2015-03-31", "event-source-mappings", uuid]) => {
            let a = match m {
                "GET" => "GetEventSourceMapping",
                "DELETE" => "DeleteEventSourceMapping",
                _ => "UpdateEventSourceMapping",
            };
            one(
                lambda(a),
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:{uuid}"),
            )
        }
        // Layers (resource: the layer version's ARN, the layer's for its version list).
        ("GET", ["2018-10-31", "layers"] | ["2018-10-31", "layers", ""]) => {
            match query_param(query, "find").as_deref() {
                Some("LayerVersion") => one(
                    lambda("GetLayerVersion"),
                    query_param(query, "Arn").unwrap_or_default(),
                ),
                _ => one(lambda("ListLayers"), "*".into()),
            }
        }
        (_, ["2018-10-31", "layers", name, "versions"]) => match m {
            "GET" => one(lambda("ListLayerVersions"), layer_arn(name, None)),
            _ => one(lambda("PublishLayerVersion"), layer_arn(name, None)),
        },
        (_, ["2018-10-31", "layers", name, "versions", v]) => match m {
            "DELETE" => one(lambda("DeleteLayerVersion"), layer_arn(name, Some(v))),
            _ => one(lambda("GetLayerVersion"), layer_arn(name, Some(v))),
        },
        (_, ["2018-10-31", "layers", name, "versions", v, "policy"]) => match m {
            "GET" => one(lambda("GetLayerVersionPolicy"), layer_arn(name, Some(v))),
            _ => one(
                lambda("AddLayerVersionPermission"),
                layer_arn(name, Some(v)),
            ),
        },
        (_, ["2018-10-31", "layers", name, "versions", v, "policy", _sid]) => one(
            lambda("RemoveLayerVersionPermission"),
            layer_arn(name, Some(v)),
        ),
        (_, ["2016-08-19", "account-settings", ..]) => {
            one(lambda("GetAccountSettings"), "*".into())
        }
        (_, ["2017-03-31", "tags", resource]) => {
            let a = match m {
                "GET" => "ListTags",
                "DELETE" => "UntagResource",
                _ => "TagResource",
            };
            one(lambda(a), resource.to_string())
        }
        (_, ["2021-10-31", "functions", name, "url"]) => {
            let a = match m {
                "GET" => "GetFunctionUrlConfig",
                "PUT" => "UpdateFunctionUrlConfig",
                "DELETE" => "DeleteFunctionUrlConfig",
                _ => "CreateFunctionUrlConfig",
            };
            one(lambda(a), f(name))
        }
        // The native API.
        ("GET", ["v1", "functions"]) => one(lambda("ListFunctions"), "*".into()),
        (_, ["v1", "functions", name]) => match m {
            "GET" => one(lambda("GetFunction"), f(name)),
            "PUT" => Target::Deploy(name.to_string()),
            "DELETE" => one(lambda("DeleteFunction"), f(name)),
            _ => Target::Api(vec![]),
        },
        (_, ["v1", "functions", name, "versions"]) => {
            one(lambda("ListVersionsByFunction"), f(name))
        }
        (_, ["v1", "functions", name, "code"]) => one(lambda("GetFunction"), f(name)),
        // Flushing a function's response cache (`http_cache.rs`).
        (_, ["v1", "functions", name, "cache"]) => one(INVALIDATE_CACHE.into(), f(name)),
        (_, ["v1", "layers", name, "versions", v, "content"]) => {
            one(lambda("GetLayerVersion"), layer_arn(name, Some(v)))
        }
        (_, ["v1", "functions", name, "logs"]) => one("nimbus:GetLogs".into(), f(name)),
        // Every function's logs: `nimbus:GetLogs` is checked per function by the handler
        // (`logs::all_logs`), which reads only the functions the key may read.
        ("GET", ["v1", "logs"]) => Target::Api(vec![]),
        (_, ["v1", "functions", name, "events"]) => one("nimbus:ListEvents".into(), f(name)),
        (_, ["v1", "functions", name, "events", _, "redrive"]) => {
            one("nimbus:RedriveEvent".into(), f(name))
        }
        (_, ["v1", "functions", name, "metrics"]) => {
            one("nimbus:GetFunctionMetrics".into(), f(name))
        }
        (_, ["v1", "metrics", "summary"]) => one("nimbus:GetFunctionMetrics".into(), "*".into()),
        (_, ["v1", "alarms"]) => one("nimbus:ListAlarms".into(), "*".into()),
        (_, ["v1", "alarms", alarm]) => one(
            match m {
                "GET" => "nimbus:GetAlarm",
                "DELETE" => "nimbus:DeleteAlarm",
                _ => "nimbus:PutAlarm",
            }
            .into(),
            crate::alarms::alarm_arn(alarm),
        ),
        (_, ["v1", "secrets"]) => one("nimbus:ListSecrets".into(), "*".into()),
        (_, ["v1", "secrets", "rotate"]) => one("nimbus:RotateMasterKey".into(), "*".into()),
        (_, ["v1", "secrets", name]) => one(
            if m == "DELETE" {
                "nimbus:DeleteSecret"
            } else {
                "nimbus:PutSecret"
            }
            .into(),
            format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}"),
        ),
        (_, ["v1", "keys", ..]) => one(nimbus_auth::policy::ADMIN.into(), "*".into()),
        ("GET", ["v1", "cluster"]) => one("nimbus:GetCluster".into(), "*".into()),
        (_, ["v1", "cluster", "nodes", node, "drain"]) => one(
            "nimbus:DrainNode".into(),
            format!("arn:aws:nimbus:{REGION}:{ACCOUNT}:node/{node}"),
        ),
        // Any valid key may ask what it may do (`whoami.rs`).
        ("GET", ["v1", "whoami"]) => Target::Api(vec![]),
        // External event sources: Lambda's event-source mapping actions.
        (_, ["v1", "sources"]) => match m {
            "GET" => one(lambda("ListEventSourceMappings"), "*".into()),
            _ => one(lambda("CreateEventSourceMapping"), "*".into()),
        },
        (_, ["v1", "sources", uuid]) => {
            let a = match m {
                "GET" => "GetEventSourceMapping",
                "DELETE" => "DeleteEventSourceMapping",
                _ => "UpdateEventSourceMapping",
            };
            one(
                lambda(a),
                format!("arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:{uuid}"),
            )
        }
        (_, ["v1", "targets"]) => one("nimbus:ListTargets".into(), "*".into()),
        (_, ["v1", "targets", name]) => one(
            match m {
                "GET" => "nimbus:GetTarget",
                "DELETE" => "nimbus:DeleteTarget",
                _ => "nimbus:PutTarget",
            }
            .into(),
            nimbus_core::arn::target_arn(name),
        ),
        (_, ["v1", "queues"]) => one("nimbus:ListQueues".into(), "*".into()),
        (_, ["v1", "queues", qn, rest @ ..]) => {
            let a = match (m, rest) {
                ("GET", []) => "GetQueue",
                ("PUT", []) => "PutQueue",
                ("DELETE", []) => "DeleteQueue",
                (_, ["messages"]) => "SendMessage",
                (_, ["messages", _]) => "DeleteMessage",
                (_, ["messages", _, "visibility"]) => "ChangeMessageVisibility",
                (_, ["receive"]) => "ReceiveMessage",
                (_, ["purge"]) => "PurgeQueue",
                (_, ["redrive"]) => "RedriveQueue",
                _ => return Target::Api(vec![]),
            };
            one(format!("nimbus:{a}"), queue_arn(qn))
        }
        // Buckets (`buckets.rs`): S3's actions on the bucket's ARN.
        (_, ["v1", "buckets"]) => one("s3:ListAllMyBuckets".into(), "*".into()),
        (_, ["v1", "buckets", b, rest @ ..]) => {
            let a = match (m, rest) {
                ("PUT", []) => "CreateBucket",
                ("GET", ["notifications"]) => "GetBucketNotification",
                ("PUT", ["notifications", "functions", _]) => "PutBucketNotification",
                _ => return Target::Api(vec![]),
            };
            one(format!("s3:{a}"), format!("arn:aws:s3:::{b}"))
        }
        (_, ["v1", "buses"]) => one("nimbus:ListBuses".into(), "*".into()),
        (_, ["v1", "buses", bus, rest @ ..]) => {
            let (a, r) = match (m, rest) {
                ("GET", []) => ("GetBus", bus_arn(bus)),
                ("PUT", []) => ("PutBus", bus_arn(bus)),
                ("DELETE", []) => ("DeleteBus", bus_arn(bus)),
                (_, ["events"]) => ("PutEvents", bus_arn(bus)),
                (_, ["rules"]) => ("ListRules", bus_arn(bus)),
                (_, ["rules", rule]) => (
                    match m {
                        "GET" => "GetRule",
                        "DELETE" => "DeleteRule",
                        _ => "PutRule",
                    },
                    format!("arn:aws:events:{REGION}:{ACCOUNT}:rule/{bus}/{rule}"),
                ),
                _ => return Target::Api(vec![]),
            };
            one(format!("nimbus:{a}"), r)
        }
        (_, ["v1", ..]) => Target::Api(vec![]),
        (_, [first, ..]) if is_lambda_prefix(first) => Target::Api(vec![]),
        // Defence in depth: `//v1/…` and the like match no API route, but are not public.
        _ if s
            .iter()
            .find(|seg| !seg.is_empty() && **seg != ".")
            .is_some_and(|seg| *seg == "v1" || is_lambda_prefix(seg)) =>
        {
            Target::Api(vec![])
        }
        _ => Target::Public,
    }
}

/// The EventBridge operation of `POST /` (`X-Amz-Target: AWSEvents.OP`).
fn events_op(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix("AWSEvents."))
}

fn is_lambda_prefix(seg: &str) -> bool {
    matches!(
        seg,
        "2015-03-31"
            | "2016-08-19"
            | "2017-03-31"
            | "2017-10-31"
            | "2019-09-25"
            | "2019-09-30"
            | "2021-10-31"
    )
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let text = e.to_string();
        match e {
            AuthError::Missing => ApiError::MissingAuthenticationToken(text),
            AuthError::Incomplete(_) => ApiError::IncompleteSignature(text),
            AuthError::SignatureMismatch | AuthError::Expired(_) => {
                ApiError::InvalidSignature(text)
            }
            AuthError::UnknownKey => ApiError::UnrecognizedClient(text),
            AuthError::Denied { .. } => ApiError::AccessDenied(text),
            AuthError::InvalidPolicy(_) => ApiError::InvalidParameter(text),
        }
    }
}

/// Parses the `Authorization` header and finds its key (before any body is read).
fn identify(auth: &Auth, headers: &HeaderMap) -> Result<(Authorization, Arc<Key>), ApiError> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Incomplete("the Authorization header is not ASCII text".into()))?;
    let parsed = sigv4::parse_authorization(value)?;
    let key = auth
        .key(&parsed.access_key_id)
        .ok_or(AuthError::UnknownKey)?;
    Ok((parsed, key))
}

/// Temporary credentials need their session token (`X-Amz-Security-Token`).
fn check_session(auth: &Auth, key: &Key, headers: &HeaderMap) -> Result<(), ApiError> {
    if key.session.is_none() {
        return Ok(());
    }
    let token = headers
        .get("x-amz-security-token")
        .and_then(|v| v.to_str().ok());
    auth.check_token(&key.id, token).map_err(|e| {
        ApiError::UnrecognizedClient(
            match e {
                crate::TokenError::Expired => {
                    "The security token included in the request is expired"
                }
                _ => "The security token included in the request is invalid.",
            }
            .into(),
        )
    })
}

/// Checks the signature of a request whose body is `body`.
fn verify(parts: &Parts, parsed: &Authorization, key: &Key, body: &[u8]) -> Result<(), ApiError> {
    let hash = sigv4::payload_hash(body);
    if let Some(claimed) = parts.headers.get("x-amz-content-sha256") {
        if claimed.as_bytes() != hash.as_bytes() {
            return Err(ApiError::InvalidSignature(
                "The provided 'x-amz-content-sha256' header does not match what was computed."
                    .into(),
            ));
        }
    }
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let req = sigv4::Request {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        payload_sha256: &hash,
    };
    sigv4::verify(&req, parsed, &key.secret, time::OffsetDateTime::now_utc())?;
    Ok(())
}

fn denied(key: &Key, c: &Check, explicit: bool) -> ApiError {
    let why = if explicit {
        "with an explicit deny in an identity-based policy".to_string()
    } else {
        format!(
            "because no identity-based policy allows the {} action",
            c.action
        )
    };
    ApiError::AccessDenied(format!(
        "{} {why}",
        AuthError::Denied {
            user: key.user_arn.clone(),
            action: c.action.clone(),
            resource: c.resource.clone(),
        }
    ))
}

/// Whether `key` may do `c`: its policy, or for invocations the function's resource policy.
pub(crate) fn authorize(
    gw: &Gateway,
    key: &Key,
    c: &Check,
    url_auth: Option<&str>,
) -> Result<(), ApiError> {
    match key.policy.evaluate(&c.action, &c.resource) {
        Decision::Allow => Ok(()),
        Decision::ExplicitDeny => Err(denied(key, c, true)),
        Decision::ImplicitDeny => {
            let invoke = matches!(
                c.action.as_str(),
                "lambda:InvokeFunction" | "lambda:InvokeFunctionUrl"
            );
            if invoke {
                if let Ok((name, _)) = arn::parse_function_ref(&c.resource) {
                    if let Ok(meta) = gw.store.meta(&name) {
                        if resource_policy_allows(
                            &meta.policy,
                            &key.user_arn,
                            &c.action,
                            &c.resource,
                            url_auth,
                        ) {
                            return Ok(());
                        }
                    }
                }
            }
            Err(denied(key, c, false))
        }
    }
}

/// Whether API authentication is on.
pub(crate) fn enabled(gw: &Gateway) -> bool {
    gw.auth.get().is_some_and(|a| a.enabled)
}

/// Whether `caller` may do `action` on `resource` (for handlers that check per item).
pub(crate) fn allows(gw: &Gateway, caller: &Caller, action: &str, resource: &str) -> bool {
    authorize(gw, &caller.0, &check(action, resource), None).is_ok()
}

/// Reads the whole body (to hash it). Its size and read deadline are already bounded:
/// `limits::guard`, the outer middleware, wraps every body in the surface's limit.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(|e| ApiError::TooLarge(format!("request body: {e}")))
}

/// The middleware: with auth on, every non-public request must be signed by a known key
/// whose policy allows what the route means.
pub(crate) async fn enforce(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let sqs = crate::sqs::protocol_of(req.method(), req.uri().path(), req.headers());
    let iam = crate::iam::is_iam(req.method(), req.uri().path(), req.headers());
    let states = crate::states::op_of(req.method(), req.uri().path(), req.headers()).is_some();
    match enforce_request(&gw, req).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            // The reason, never a secret or a signature: the key id is public.
            match &e {
                ApiError::MissingAuthenticationToken(_) => {
                    tracing::debug!("refused: unsigned request")
                }
                other => tracing::info!(error = other.error_type(), "refused: {other}"),
            }
            match sqs {
                // SQS clients get SQS's error shape.
                Some(protocol) => ApiError::Sqs {
                    error: crate::sqs::auth_error(e),
                    protocol,
                }
                .into_response(),
                // IAM clients get IAM's.
                None if iam => ApiError::Iam(crate::iam::auth_error(e)).into_response(),
                // Step Functions clients get its JSON 1.0 shape.
                None if states => crate::states::auth_error(e),
                None => e.into_response(),
            }
        }
    }
}

async fn enforce_request(gw: &Gateway, req: Request) -> Result<Request, ApiError> {
    let private = req.extensions().get::<PrivateEndpoint>().cloned();
    let Some(auth) = gw.auth.get().filter(|a| a.enabled || private.is_some()) else {
        return Ok(req);
    };
    let mut target = classify(
        req.method(),
        req.uri().path(),
        req.uri().query().unwrap_or(""),
        req.headers(),
    );
    if target == Target::Public {
        if private.is_none() {
            return Ok(req);
        }
        // Nothing is public on an instance's private endpoint.
        target = Target::Api(vec![]);
    }
    let (parsed, key) = identify(auth, req.headers())?;
    if let Some(p) = &private {
        if key.id != p.access_key_id {
            return Err(ApiError::UnrecognizedClient(
                "The security token included in the request is invalid: this endpoint accepts only the instance's own credentials.".into(),
            ));
        }
    }
    check_session(auth, &key, req.headers())?;
    let (mut parts, body) = req.into_parts();
    let body = read_body(body).await?;
    verify(&parts, &parsed, &key, &body)?;
    let checks = match target {
        Target::Public => Vec::new(),
        Target::Api(checks) => checks,
        Target::Sqs => crate::sqs::checks(&parts, &body),
        Target::Iam => crate::iam::checks(gw, &body),
        Target::Events => crate::bus::checks(events_op(&parts.headers).unwrap_or_default(), &body),
        Target::States => crate::states::checks(
            crate::states::op_of(&parts.method, parts.uri.path(), &parts.headers)
                .unwrap_or_default(),
            &body,
        ),
        Target::CreateFunction => {
            let name = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("FunctionName")?.as_str().map(str::to_string))
                .unwrap_or_default();
            vec![check(
                "lambda:CreateFunction",
                function_resource(&name, None),
            )]
        }
        Target::Deploy(name) => {
            let resource = function_resource(&name, None);
            let exists = nimbus_core::FunctionName::parse(&name)
                .ok()
                .is_some_and(|n| gw.store.get(&n, None).is_ok());
            if exists {
                vec![
                    check("lambda:UpdateFunctionCode", resource.clone()),
                    check("lambda:UpdateFunctionConfiguration", resource),
                ]
            } else {
                vec![check("lambda:CreateFunction", resource)]
            }
        }
    };
    for c in &checks {
        authorize(gw, &key, c, None)?;
    }
    tracing::debug!(access_key = %key.id, user = %key.name, "authorized");
    parts.extensions.insert(Caller(key));
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// For a function URL with `AuthType AWS_IAM`: the request must be signed (service
/// `lambda`) by a known key allowed `lambda:InvokeFunctionUrl` on the function, by its policy
/// or the function's resource policy. Checked whether or not auth is on for the API.
pub(crate) async fn check_function_url(
    gw: &Gateway,
    name: &nimbus_core::FunctionName,
    req: Request,
) -> Result<Request, ApiError> {
    let auth = gw.auth.get().ok_or_else(|| {
        ApiError::AccessDenied(format!(
            "function {name}'s URL uses AuthType AWS_IAM, but this server has no access keys"
        ))
    })?;
    let (parsed, key) = identify(auth, req.headers())?;
    check_session(auth, &key, req.headers())?;
    if parsed.service != "lambda" {
        return Err(ApiError::InvalidSignature(format!(
            "Credential should be scoped to correct service: 'lambda', not '{}'.",
            parsed.service
        )));
    }
    let (mut parts, body) = req.into_parts();
    let body = read_body(body).await?;
    verify(&parts, &parsed, &key, &body)?;
    let c = check(
        "lambda:InvokeFunctionUrl",
        arn::function_arn(name.as_str(), None),
    );
    authorize(gw, &key, &c, Some("AWS_IAM"))?;
    parts.extensions.insert(Caller(key));
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// The action that lets a caller flush a function's response cache and bypass it with
/// `Cache-Control: max-age=0` (API Gateway's `execute-api:InvalidateCache`).
pub(crate) const INVALIDATE_CACHE: &str = "nimbus:InvalidateCache";

/// The key a request to a cached URL or route is signed with (SigV4, any service) when that
/// key is allowed [`INVALIDATE_CACHE`] on function `name`: only such a request's
/// `Cache-Control: max-age=0` bypasses the cache. A request already verified (an
/// `AWS_IAM` URL's [`Caller`]) is not verified again. Anything else — no or a bad
/// signature, a key without the permission — is no error: the header is ignored. Checked
/// whether or not auth is on for the API, as `AWS_IAM` URLs are.
pub(crate) async fn may_invalidate(
    gw: &Gateway,
    name: &nimbus_core::FunctionName,
    req: Request,
) -> (Request, Option<Arc<Key>>) {
    let resource = arn::function_arn(name.as_str(), None);
    let allowed = |key: &Key| key.policy.evaluate(INVALIDATE_CACHE, &resource) == Decision::Allow;
    if let Some(Caller(key)) = req.extensions().get::<Caller>() {
        let key = allowed(key).then(|| key.clone());
        return (req, key);
    }
    let Some(auth) = gw.auth.get() else {
        return (req, None);
    };
    let Ok((parsed, key)) = identify(auth, req.headers()) else {
        return (req, None);
    };
    if check_session(auth, &key, req.headers()).is_err() || !allowed(&key) {
        return (req, None);
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(_) => return (Request::from_parts(parts, Body::empty()), None),
    };
    let ok = verify(&parts, &parsed, &key, &body).is_ok();
    let req = Request::from_parts(parts, Body::from(body));
    if ok {
        tracing::debug!(access_key = %key.id, function = %name, "may invalidate the cache");
        (req, Some(key))
    } else {
        (req, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(m: &str, path: &str, query: &str) -> Target {
        classify(&m.parse().unwrap(), path, query, &HeaderMap::new())
    }

    fn api(action: &str, resource: &str) -> Target {
        Target::Api(vec![check(action, resource)])
    }

    const ORDERS: &str = "arn:aws:lambda:us-east-1:000000000000:function:orders-api";

    #[test]
    fn the_layer_routes() {
        let layer = "arn:aws:lambda:us-east-1:000000000000:layer:deps";
        let v2 = format!("{layer}:2");
        for (m, path, query, action, resource) in [
            ("GET", "/2018-10-31/layers", "", "ListLayers", "*"),
            (
                "GET",
                "/2018-10-31/layers",
                "find=LayerVersion&Arn=arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Alayer%3Adeps%3A2",
                "GetLayerVersion",
                v2.as_str(),
            ),
            ("POST", "/2018-10-31/layers/deps/versions", "", "PublishLayerVersion", layer),
            ("GET", "/2018-10-31/layers/deps/versions", "", "ListLayerVersions", layer),
            ("GET", "/2018-10-31/layers/deps/versions/2", "", "GetLayerVersion", &v2),
            ("DELETE", "/2018-10-31/layers/deps/versions/2", "", "DeleteLayerVersion", &v2),
            (
                "POST",
                "/2018-10-31/layers/deps/versions/2/policy",
                "",
                "AddLayerVersionPermission",
                &v2,
            ),
            (
                "GET",
                "/2018-10-31/layers/deps/versions/2/policy",
                "",
                "GetLayerVersionPolicy",
                &v2,
            ),
            (
                "DELETE",
                "/2018-10-31/layers/deps/versions/2/policy/s1",
                "",
                "RemoveLayerVersionPermission",
                &v2,
            ),
            ("GET", "/v1/layers/deps/versions/2/content", "", "GetLayerVersion", &v2),
        ] {
            assert_eq!(
                t(m, path, query),
                api(&format!("lambda:{action}"), resource),
                "{m} {path}?{query}"
            );
        }
    }

    #[test]
    fn the_route_table() {
        assert_eq!(t("GET", "/v1/health", ""), Target::Public);
        assert_eq!(t("GET", "/v1/ready", ""), Target::Public);
        // Checked by its handler against the cluster's node key (forward.rs).
        assert_eq!(t("POST", "/v1/internal/invoke", ""), Target::Public);
        assert_ne!(t("GET", "/v1/internal/invoke", ""), Target::Public);
        assert_eq!(t("POST", "/fn/orders-api/x", ""), Target::Public);
        assert_eq!(t("GET", "/hello/world", ""), Target::Public);
        // The console's static files are public; what its pages show is signed API.
        assert_eq!(t("GET", "/ui/app.js", ""), Target::Public);
        assert_eq!(t("GET", "/v1/whoami", ""), Target::Api(vec![]));
        assert_eq!(t("GET", "/metrics", ""), api("nimbus:GetMetrics", "*"));
        assert_eq!(t("GET", "/v1/buckets", ""), api("s3:ListAllMyBuckets", "*"));
        assert_eq!(
            t("PUT", "/v1/buckets/uploads", ""),
            api("s3:CreateBucket", "arn:aws:s3:::uploads")
        );
        assert_eq!(
            t("GET", "/v1/buckets/uploads/notifications", ""),
            api("s3:GetBucketNotification", "arn:aws:s3:::uploads")
        );
        assert_eq!(
            t(
                "PUT",
                "/v1/buckets/uploads/notifications/functions/thumbs",
                ""
            ),
            api("s3:PutBucketNotification", "arn:aws:s3:::uploads")
        );
        assert_eq!(
            t("POST", "/2015-03-31/functions/orders-api/invocations", ""),
            api("lambda:InvokeFunction", ORDERS)
        );
        assert_eq!(
            t(
                "POST",
                "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aorders-api/invocations",
                "Qualifier=prod"
            ),
            api("lambda:InvokeFunction", &format!("{ORDERS}:prod"))
        );
        assert_eq!(
            t(
                "POST",
                "/2015-03-31/functions/orders-api%3A3/invocations",
                ""
            ),
            api("lambda:InvokeFunction", &format!("{ORDERS}:3"))
        );
        assert_eq!(
            t(
                "POST",
                "/2021-11-15/functions/orders-api/response-streaming-invocations",
                "Qualifier=prod"
            ),
            api("lambda:InvokeFunction", &format!("{ORDERS}:prod"))
        );
        assert_eq!(
            t("POST", "/2015-03-31/functions", ""),
            Target::CreateFunction
        );
        assert_eq!(
            t("GET", "/2015-03-31/functions/", ""),
            api("lambda:ListFunctions", "*")
        );
        assert_eq!(
            t("PUT", "/2015-03-31/functions/orders-api/code", ""),
            api("lambda:UpdateFunctionCode", ORDERS)
        );
        assert_eq!(
            t(
                "DELETE",
                "/2015-03-31/functions/orders-api/aliases/live",
                ""
            ),
            api("lambda:DeleteAlias", &format!("{ORDERS}:live"))
        );
        assert_eq!(
            t("POST", "/2015-03-31/functions/orders-api/policy", ""),
            api("lambda:AddPermission", ORDERS)
        );
        assert_eq!(
            t("GET", "/2019-09-30/functions/orders-api/concurrency", ""),
            api("lambda:GetFunctionConcurrency", ORDERS)
        );
        assert_eq!(
            t("PUT", "/2017-10-31/functions/orders-api/concurrency", ""),
            api("lambda:PutFunctionConcurrency", ORDERS)
        );
        assert_eq!(
            t(
                "PUT",
                "/2019-09-30/functions/orders-api/provisioned-concurrency",
                "Qualifier=live"
            ),
            api(
                "lambda:PutProvisionedConcurrencyConfig",
                &format!("{ORDERS}:live")
            )
        );
        assert_eq!(
            t(
                "GET",
                "/2019-09-30/functions/orders-api/provisioned-concurrency",
                "List=ALL"
            ),
            api("lambda:ListProvisionedConcurrencyConfigs", ORDERS)
        );
        assert_eq!(
            t(
                "DELETE",
                "/2019-09-30/functions/orders-api/provisioned-concurrency",
                "Qualifier=1"
            ),
            api(
                "lambda:DeleteProvisionedConcurrencyConfig",
                &format!("{ORDERS}:1")
            )
        );
        assert_eq!(
            t("GET", "/2021-10-31/functions/orders-api/url", ""),
            api("lambda:GetFunctionUrlConfig", ORDERS)
        );
        assert_eq!(
            t("GET", "/v1/functions", ""),
            api("lambda:ListFunctions", "*")
        );
        assert_eq!(
            t("PUT", "/v1/functions/orders-api", ""),
            Target::Deploy("orders-api".into())
        );
        assert_eq!(
            t("POST", "/v1/queues/jobs/receive", ""),
            api(
                "nimbus:ReceiveMessage",
                "arn:aws:sqs:us-east-1:000000000000:jobs"
            )
        );
        assert_eq!(
            t("POST", "/v1/queues/jobs-dlq/redrive", ""),
            api(
                "nimbus:RedriveQueue",
                "arn:aws:sqs:us-east-1:000000000000:jobs-dlq"
            )
        );
        assert_eq!(t("POST", "/v1/keys", ""), api("nimbus:Admin", "*"));
        assert_eq!(
            t("POST", "/v1/functions/orders-api/events/e1/redrive", ""),
            api("nimbus:RedriveEvent", ORDERS)
        );
        assert_eq!(
            t("GET", "/v1/functions/orders-api/metrics", "since=1h"),
            api("nimbus:GetFunctionMetrics", ORDERS)
        );
        assert_eq!(
            t("GET", "/v1/metrics/summary", ""),
            api("nimbus:GetFunctionMetrics", "*")
        );
        assert_eq!(t("GET", "/v1/alarms", ""), api("nimbus:ListAlarms", "*"));
        assert_eq!(
            t("PUT", "/v1/alarms/errs", ""),
            api(
                "nimbus:PutAlarm",
                "arn:aws:cloudwatch:us-east-1:000000000000:alarm:errs"
            )
        );
        assert_eq!(t("GET", "/v1/nope", ""), Target::Api(vec![]));
        assert_eq!(t("GET", "/2015-03-31/nope", ""), Target::Api(vec![]));
        assert_eq!(t("GET", "//v1/keys", ""), Target::Api(vec![]));
        // Never a panic on odd bytes after '%'.
        assert_eq!(decode("a%é%4"), "a%é%4");
        assert_eq!(decode("%41%zz"), "A%zz");
        assert_eq!(
            query_param("Qualifier=%E9&x", "Qualifier").as_deref(),
            Some("\u{fffd}")
        );
        assert_eq!(t("GET", "///2015-03-31/functions", ""), Target::Api(vec![]));
        assert_eq!(t("GET", "/./v1/keys", ""), Target::Api(vec![]));
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", "AWSEvents.PutEvents".parse().unwrap());
        assert_eq!(classify(&Method::POST, "/", "", &h), Target::Events);
        assert_eq!(t("POST", "/", ""), Target::Public);
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            "AWSStepFunctions.StartExecution".parse().unwrap(),
        );
        assert_eq!(classify(&Method::POST, "/", "", &h), Target::States);
        assert_eq!(classify(&Method::POST, "/x", "", &h), Target::Public);
    }

    #[test]
    fn sqs_requests_are_authorised_by_operation_and_queue() {
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", "AmazonSQS.SendMessage".parse().unwrap());
        assert_eq!(classify(&Method::POST, "/", "", &h), Target::Sqs);
        let (parts, _) = axum::http::Request::builder()
            .method("POST")
            .uri("/")
            .header("x-amz-target", "AmazonSQS.SendMessage")
            .body(())
            .unwrap()
            .into_parts();
        let body = br#"{"QueueUrl":"http://h/000000000000/jobs","MessageBody":"x"}"#;
        assert_eq!(
            crate::sqs::checks(&parts, body),
            vec![check(
                "sqs:SendMessage",
                "arn:aws:sqs:us-east-1:000000000000:jobs"
            )]
        );
        // Undecodable: any valid key; the handler refuses the body.
        assert_eq!(crate::sqs::checks(&parts, b"{"), vec![]);
        // The query protocol: a form signed for sqs, at / or a queue URL's path.
        let auth = "AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=00";
        let (parts, _) = axum::http::Request::builder()
            .method("POST")
            .uri("/000000000000/jobs")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", auth)
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            classify(&parts.method, parts.uri.path(), "", &parts.headers),
            Target::Sqs
        );
        assert_eq!(
            crate::sqs::checks(&parts, b"Action=ReceiveMessage&Version=2012-11-05"),
            vec![check(
                "sqs:ReceiveMessage",
                "arn:aws:sqs:us-east-1:000000000000:jobs"
            )]
        );
        let (parts, _) = axum::http::Request::builder()
            .method("POST")
            .uri("/")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("authorization", auth)
            .body(())
            .unwrap()
            .into_parts();
        assert_eq!(
            crate::sqs::checks(&parts, b"Action=ListQueues"),
            vec![check("sqs:ListQueues", "*")]
        );
        // A form signed for another service, or a deeper path, is a user route.
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().unwrap(),
        );
        h.insert(
            "authorization",
            auth.replace("/sqs/", "/lambda/").parse().unwrap(),
        );
        assert_eq!(classify(&Method::POST, "/a/b", "", &h), Target::Public);
        h.insert("authorization", auth.parse().unwrap());
        assert_eq!(classify(&Method::POST, "/a/b/c", "", &h), Target::Public);
    }

    /// A reload (another node changed a key) running while this node creates and deletes
    /// keys never hides a key from the moment it is created, nor brings back a deleted one.
    #[test]
    fn reloads_never_hide_a_new_key_nor_revive_a_deleted_one() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(SecretStore::open(dir.path(), nimbus_store::MasterKey::generate()).unwrap());
        let auth = Auth::open(store, true).unwrap();
        let admin = Policy::admin();
        auth.create_key("admin", &admin).unwrap();
        /// Stops the reloading thread however the checks end (a failed assertion too,
        /// else the scope would wait for it for ever).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    auth.reload().unwrap();
                }
            });
            let _stop = Stop(&stop);
            for i in 0..1000 {
                let k = auth.create_key(&format!("k{i}"), &admin).unwrap();
                assert!(
                    auth.key(&k.id).is_some(),
                    "key {i} hidden right after its creation"
                );
                auth.delete_key(&k.id).unwrap();
                assert!(
                    auth.key(&k.id).is_none(),
                    "key {i} back right after its deletion"
                );
            }
        });
    }
}
