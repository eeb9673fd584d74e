//! Cluster mode: a synchronous invocation that would cold-start or throttle on this node
//! runs on another node's idle warm instance of the same revision instead
//! (docs/cluster.md, "Forwarding to warm instances").
//!
//! The origin (this node, having authorised and resolved the call) asks
//! [`nimbus_cluster::Peers`] for the live node with the most idle instances of the revision
//! and posts the invocation to its `POST /v1/internal/invoke`: the payload as the body, the
//! rest (function, version, revision, request id, ARN, trace context, client context) in
//! `x-nimbus-invocation`, signed with the node key every node derives from the shared
//! master key. The target checks the signature, resolves the same version, refuses a
//! different revision (409), and runs the invocation in its own pool (never forwarding it
//! again); its answer carries the result, which the origin turns back into the pool's
//! result, so the caller gets exactly what a local run would have given. Any failure of
//! the forward (refused, unreachable, node killed, throttled there) runs the invocation
//! here instead: forwarding never fails the caller.

use crate::state::Pools;
use crate::{ApiError, Gateway, PrivateEndpoint};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nimbus_cluster::{NodeKey, Peers, Pick};
use nimbus_pool::{PoolError, PoolInvokeResult};
use nimbus_runtime::{InstanceSpec, Invocation, InvokeResult, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The internal endpoint another node's forwards reach.
pub const PATH: &str = "/v1/internal/invoke";
/// The forwarding node's id: the loop guard (a request carrying it is never forwarded
/// again) and part of what is signed.
const FROM: &str = "x-nimbus-forwarded-from";
const TIME: &str = "x-nimbus-node-time";
const SIGNATURE: &str = "x-nimbus-node-signature";
/// Base64 JSON of [`Meta`] (request) or [`Answer`] (response).
const META: &str = "x-nimbus-invocation";
const ANSWER: &str = "x-nimbus-result";
/// How long a forward may take to connect before the origin runs the call itself.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// What the origin knows of the cluster to forward with ([`Gateway::with_forwarding`]).
pub struct Forwarder {
    node: String,
    /// The node key in use, and the one before the last master key rotation (taken too,
    /// while the nodes follow the rotation one after the other).
    keys: std::sync::RwLock<(NodeKey, Option<NodeKey>)>,
    peers: Arc<Peers>,
    client: reqwest::Client,
}

impl Forwarder {
    pub fn new(node: String, key: NodeKey, peers: Arc<Peers>) -> Arc<Forwarder> {
        let client = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .unwrap_or_default();
        Arc::new(Forwarder {
            node,
            keys: std::sync::RwLock::new((key, None)),
            peers,
            client,
        })
    }

    /// Signs with `new` from now on; still takes the key in use until now.
    fn rotate(&self, new: NodeKey) {
        let mut keys = self.keys.write().unwrap();
        let old = std::mem::replace(&mut keys.0, new);
        keys.1 = Some(old);
    }

    fn key(&self) -> NodeKey {
        self.keys.read().unwrap().0.clone()
    }

    /// Whether `signature` is the current or the previous node key's.
    fn verify(&self, at: i64, from: &str, body: &[u8], signature: &str) -> bool {
        let (current, previous) = &*self.keys.read().unwrap();
        let now = now_ms();
        current.verify(at, from, body, signature, now)
            || previous
                .as_ref()
                .is_some_and(|k| k.verify(at, from, body, signature, now))
    }
}

impl Gateway {
    /// Forwards synchronous invocations to other nodes' warm instances (cluster mode) and
    /// serves their forwards with `fwd`'s key. Set once, before serving.
    pub fn with_forwarding(self: Arc<Self>, fwd: Arc<Forwarder>) -> Arc<Self> {
        let _ = self.forward.set(fwd);
        self
    }

    /// The master key was rotated (here or, followed, on another node): sign forwards with
    /// the node key derived from the new one, and still take the old one's.
    pub fn master_key_changed(&self, key: &nimbus_store::MasterKey) {
        if let Some(f) = self.forward.get() {
            f.rotate(NodeKey::derive(key.to_base64().as_bytes()));
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    function: String,
    version: String,
    revision: String,
    request_id: String,
    invoked_arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tracestate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    client_context: Option<String>,
}

/// The result, but its body (the response's body).
#[derive(Serialize, Deserialize)]
struct Answer {
    node: String,
    /// `success`, `streamed` or `error`.
    outcome: String,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    /// Base64.
    #[serde(default)]
    http_prelude: Option<String>,
    duration_us: u64,
    #[serde(default)]
    init_us: Option<u64>,
    /// The log's last 4 KB (all `X-Amz-Log-Result` shows).
    log_tail: String,
    started: bool,
    init_failed: bool,
    cold: bool,
    stem: bool,
    #[serde(default)]
    pid: Option<u32>,
    waited_us: u64,
    spawn_us: u64,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// What is signed: the metadata header's value, a newline, the payload.
fn signed(meta: &str, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(meta.len() + 1 + payload.len());
    v.extend_from_slice(meta.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(payload);
    v
}

/// Runs `inv` here: under a permit of the cluster's budget (cluster mode: the function's
/// reservation, else the account's unreserved pool), then in the pool.
pub(crate) async fn local(
    pools: &Pools,
    permits: Option<crate::permits::Admission>,
    spec: Arc<InstanceSpec>,
    revision: &str,
    inv: Invocation,
) -> Result<PoolInvokeResult, PoolError> {
    match permits {
        None => pools.invoke(spec, revision, inv).await,
        Some(a) => crate::permits::invoke(a, pools, spec, revision, inv).await,
    }
}

/// Runs a synchronous invocation: on another node's idle warm instance when this node
/// has none of the revision (it would cold-start) or would queue, and another node
/// reported one; else, or when that fails, here. A local throttle is retried on another
/// node with an idle instance before it reaches the caller.
pub(crate) async fn invoke(
    fwd: Option<Arc<Forwarder>>,
    pools: &Pools,
    permits: Option<crate::permits::Admission>,
    spec: Arc<InstanceSpec>,
    revision: &str,
    inv: Invocation,
) -> Result<PoolInvokeResult, PoolError> {
    let Some(fwd) = fwd.filter(|f| f.peers.any()) else {
        return local(pools, permits, spec, revision, inv).await;
    };
    let warmth = pools.warmth(spec.function.as_str(), &spec.version, revision);
    if warmth.idle == 0 || warmth.saturated {
        if let Some(pick) = fwd.peers.pick(revision) {
            let why = if warmth.idle == 0 {
                "cold start"
            } else {
                "queue"
            };
            if let Some(r) = fwd.send(&pick, &spec, revision, &inv, why).await {
                return Ok(r);
            }
        }
    }
    let res = local(pools, permits, spec.clone(), revision, inv.clone()).await;
    if let Err(PoolError::Throttled { .. } | PoolError::MemoryExhausted { .. }) = &res {
        if let Some(pick) = fwd.peers.pick(revision) {
            if let Some(r) = fwd.send(&pick, &spec, revision, &inv, "throttle").await {
                return Ok(r);
            }
        }
    }
    res
}

impl Forwarder {
    /// Has `pick` run `inv`; `None` (logged) when it did not answer with a result.
    async fn send(
        &self,
        pick: &Pick,
        spec: &InstanceSpec,
        revision: &str,
        inv: &Invocation,
        why: &str,
    ) -> Option<PoolInvokeResult> {
        let span = tracing::Span::current();
        span.record("forwarded_to", pick.node.as_str());
        let meta = Meta {
            function: spec.function.to_string(),
            version: spec.version.clone(),
            revision: revision.to_string(),
            request_id: inv.request_id.clone(),
            invoked_arn: inv.invoked_arn.clone(),
            trace_id: inv.trace_id.clone(),
            traceparent: inv.traceparent.clone(),
            tracestate: inv.tracestate.clone(),
            client_context: inv.client_context.clone(),
        };
        let meta = b64().encode(serde_json::to_vec(&meta).ok()?);
        let at = now_ms();
        let sig = self
            .key()
            .sign(at, &self.node, &signed(&meta, &inv.payload));
        // The function's timeout and a queue wait there, with room to spare.
        let limit = Duration::from_secs(u64::from(spec.config.timeout_s) + 15);
        let t0 = std::time::Instant::now();
        let sent = self
            .client
            .post(format!("{}{PATH}", pick.address.trim_end_matches('/')))
            .header(FROM, &self.node)
            .header(TIME, at.to_string())
            .header(SIGNATURE, sig)
            .header(META, meta)
            .header("content-type", "application/octet-stream")
            .body(inv.payload.clone())
            .timeout(limit)
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                pick.failed();
                span.record("forwarded_to", tracing::field::Empty);
                tracing::warn!(node = %pick.node, error = %e, "cannot forward the invocation: running it here");
                return None;
            }
        };
        let status = resp.status();
        let answer = resp
            .headers()
            .get(ANSWER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| b64().decode(v).ok())
            .and_then(|v| serde_json::from_slice::<Answer>(&v).ok());
        let body = resp.bytes().await;
        let (Some(answer), Ok(body), true) = (answer, body, status.is_success()) else {
            if status.is_server_error() || status == StatusCode::FORBIDDEN {
                pick.failed();
            }
            span.record("forwarded_to", tracing::field::Empty);
            tracing::info!(node = %pick.node, status = status.as_u16(), "the forward was not run there: running the invocation here");
            return None;
        };
        tracing::debug!(node = %pick.node, reason = why, cold = answer.cold, micros = t0.elapsed().as_micros() as u64, "invocation forwarded");
        Some(answer.into_result(body))
    }
}

impl Answer {
    fn from_result(node: &str, r: PoolInvokeResult) -> (Answer, Bytes) {
        let (outcome, error_type, content_type, http_prelude, body) = match r.result.outcome {
            Outcome::Success(b) => ("success", None, None, None, b),
            Outcome::Streamed {
                content_type,
                http_prelude,
                body,
            } => (
                "streamed",
                None,
                content_type,
                http_prelude.map(|p| b64().encode(p)),
                body,
            ),
            Outcome::Error { error_type, body } => ("error", Some(error_type), None, None, body),
        };
        let tail = &r.result.log_tail;
        let mut start = tail.len().saturating_sub(4096);
        while !tail.is_char_boundary(start) {
            start += 1;
        }
        let answer = Answer {
            node: node.to_string(),
            outcome: outcome.into(),
            error_type,
            content_type,
            http_prelude,
            duration_us: r.result.duration.as_micros() as u64,
            init_us: r.result.init_duration.map(|d| d.as_micros() as u64),
            log_tail: tail[start..].to_string(),
            started: r.result.started,
            init_failed: r.result.init_failed,
            cold: r.cold,
            stem: r.stem,
            pid: r.pid,
            waited_us: r.waited.as_micros() as u64,
            spawn_us: r.spawn.as_micros() as u64,
        };
        (answer, body)
    }

    fn into_result(self, body: Bytes) -> PoolInvokeResult {
        let outcome = match self.outcome.as_str() {
            "success" => Outcome::Success(body),
            "streamed" => Outcome::Streamed {
                content_type: self.content_type,
                http_prelude: self
                    .http_prelude
                    .and_then(|p| b64().decode(p).ok())
                    .map(Bytes::from),
                body,
            },
            _ => Outcome::Error {
                error_type: self.error_type.unwrap_or_else(|| "Unhandled".into()),
                body,
            },
        };
        let us = Duration::from_micros;
        PoolInvokeResult {
            result: InvokeResult {
                outcome,
                duration: us(self.duration_us),
                init_duration: self.init_us.map(us),
                log_tail: self.log_tail,
                started: self.started,
                init_failed: self.init_failed,
            },
            cold: self.cold,
            stem: self.stem,
            pid: self.pid,
            waited: us(self.waited_us),
            spawn: us(self.spawn_us),
        }
    }
}

fn refused(message: &str) -> Response {
    tracing::info!("refused an internal invocation: {message}");
    ApiError::AccessDenied(message.to_string()).into_response()
}

/// `POST /v1/internal/invoke`: runs another node's forward here, on exactly the revision it
/// names, and never forwards it again. Only nodes of this cluster (requests signed with the
/// node key) are served; anything else gets 403.
pub(crate) async fn internal_invoke(
    State(gw): State<Arc<Gateway>>,
    headers: HeaderMap,
    private: Option<axum::Extension<PrivateEndpoint>>,
    body: Body,
) -> Response {
    let Some(fwd) = gw.forward.get().cloned() else {
        return refused("this node is not in a cluster: it takes no forwarded invocations");
    };
    if private.is_some() {
        return refused("not served on an instance's private endpoint");
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let (Some(from), Some(at), Some(sig), Some(meta)) = (
        header(FROM),
        header(TIME).and_then(|t| t.parse::<i64>().ok()),
        header(SIGNATURE),
        header(META),
    ) else {
        return refused("a forwarded invocation needs the node credentials of this cluster");
    };
    let payload = match crate::invoke::read_payload(body).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    if !fwd.verify(at, from, &signed(meta, &payload), sig) {
        return refused("bad node credentials: the signature does not match this cluster's node key (every node needs the same master key) or is too old");
    }
    let Some(meta) = b64()
        .decode(meta)
        .ok()
        .and_then(|m| serde_json::from_slice::<Meta>(&m).ok())
    else {
        return ApiError::InvalidParameter(format!("{META} is not a forwarded invocation"))
            .into_response();
    };
    let span = tracing::info_span!("forwarded", from = %from, function = %meta.function, version = %meta.version, request_id = %meta.request_id);
    let run = async {
        let name = nimbus_core::FunctionName::parse(&meta.function)?;
        let resolved = gw.resolve(&name, Some(&meta.version)).await?;
        if resolved.version.revision_id != meta.revision {
            return Err(ApiError::Conflict(format!(
                "{} version {} is at another revision here: run it on the origin",
                meta.function, meta.version
            )));
        }
        if resolved.throttled {
            return Err(ApiError::Throttled {
                message: format!(
                    "Rate Exceeded: function {} has reserved concurrency 0",
                    meta.function
                ),
                reason: "ReservedFunctionConcurrentInvocationLimitExceeded",
            });
        }
        let permits = crate::permits::admission(&gw, &resolved);
        let inv = Invocation {
            request_id: meta.request_id.clone(),
            payload,
            invoked_arn: meta.invoked_arn.clone(),
            trace_id: meta.trace_id.clone(),
            traceparent: meta.traceparent.clone(),
            tracestate: meta.tracestate.clone(),
            client_context: meta.client_context.clone(),
            stream: None,
            http: None,
        };
        let (pools, spec, revision) = (
            gw.pools.clone(),
            resolved.spec.clone(),
            resolved.version.revision_id.clone(),
        );
        // In its own task, as every invocation: a caller gone does not cut it short.
        let res = tokio::spawn(async move { local(&pools, permits, spec, &revision, inv).await })
            .await
            .map_err(ApiError::internal)?;
        Ok(res?)
    };
    use tracing::Instrument;
    match run.instrument(span).await {
        Ok(r) => {
            let (answer, body) = Answer::from_result(&fwd.node, r);
            let mut resp = Response::new(Body::from(body));
            let encoded = serde_json::to_vec(&answer).map(|a| b64().encode(a));
            match encoded.ok().and_then(|a| HeaderValue::from_str(&a).ok()) {
                Some(v) => {
                    resp.headers_mut().insert(ANSWER, v);
                    resp
                }
                None => ApiError::Internal("cannot encode the result".into()).into_response(),
            }
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_signs_with_the_new_key_and_still_takes_the_old_one() {
        let (a, b, c) = (
            NodeKey::derive(b"key a"),
            NodeKey::derive(b"key b"),
            NodeKey::derive(b"key c"),
        );
        let f = Forwarder::new("n1".into(), a.clone(), Peers::new());
        let at = now_ms();
        let by = |k: &NodeKey| k.sign(at, "n2", b"body");
        assert!(f.verify(at, "n2", b"body", &by(&a)));
        assert!(!f.verify(at, "n2", b"body", &by(&b)));
        f.rotate(b.clone());
        assert_eq!(f.key().sign(at, "x", b""), b.sign(at, "x", b""));
        assert!(f.verify(at, "n2", b"body", &by(&b)), "the new key");
        assert!(
            f.verify(at, "n2", b"body", &by(&a)),
            "the previous key, for a while"
        );
        f.rotate(c);
        assert!(!f.verify(at, "n2", b"body", &by(&a)), "two rotations ago");
    }

    #[test]
    fn an_answer_round_trips_into_the_pool_result() {
        let r = PoolInvokeResult {
            result: InvokeResult {
                outcome: Outcome::Streamed {
                    content_type: Some("text/plain".into()),
                    http_prelude: Some(Bytes::from_static(b"{\"statusCode\":201}")),
                    body: Bytes::from_static(b"hi"),
                },
                duration: Duration::from_millis(7),
                init_duration: Some(Duration::from_millis(90)),
                log_tail: "é".repeat(3000),
                started: true,
                init_failed: false,
            },
            cold: true,
            stem: false,
            pid: Some(42),
            waited: Duration::from_millis(1),
            spawn: Duration::from_millis(2),
        };
        let (answer, body) = Answer::from_result("n1", r);
        assert!(answer.log_tail.len() <= 4096, "only the tail travels");
        let back = answer.into_result(body);
        match back.result.outcome.clone() {
            Outcome::Streamed {
                content_type,
                http_prelude,
                body,
            } => {
                assert_eq!(content_type.as_deref(), Some("text/plain"));
                assert_eq!(http_prelude.unwrap(), &b"{\"statusCode\":201}"[..]);
                assert_eq!(body, &b"hi"[..]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(back.result.init_duration, Some(Duration::from_millis(90)));
        assert_eq!((back.cold, back.pid), (true, Some(42)));
        let err = PoolInvokeResult {
            result: InvokeResult {
                outcome: Outcome::Error {
                    error_type: "Runtime.ExitError".into(),
                    body: Bytes::from_static(b"{}"),
                },
                ..back.result.clone()
            },
            ..back
        };
        let (answer, body) = Answer::from_result("n1", err);
        match answer.into_result(body).result.outcome {
            Outcome::Error { error_type, .. } => assert_eq!(error_type, "Runtime.ExitError"),
            other => panic!("{other:?}"),
        }
    }
}
