//! Response caching of function URLs and user routes (API Gateway's stage cache) over
//! `nimbus-cache`, and `DELETE /v1/functions/{name}/cache`.
//!
//! [`serve`] wraps the invocation of a URL or route whose settings have a `cache`, after
//! the route's rate limit and authorizer (or the URL's `AWS_IAM` check) passed: a GET or
//! HEAD whose key has a fresh entry is answered from it (`x-nimbus-cache: hit`, `Age`)
//! without resolving an alias, building an event or reaching the pool; anything else runs
//! the function (`x-nimbus-cache: miss`) and stores what HTTP allows
//! ([`nimbus_cache::decide`]). Requests with credentials (an `Authorization` header, a JWT
//! route, an `AWS_IAM` URL) use the cache only when the key has `identity`. A request that
//! asks for a fresh answer (`Cache-Control: max-age=0`/`no-cache`) bypasses it only when
//! signed by a key allowed `nimbus:InvalidateCache` on the function
//! ([`crate::auth::may_invalidate`]); its answer replaces the entry. A function's entries
//! go whenever it changes (`Gateway::invalidate`: deploys, configuration, aliases).

use crate::auth::Caller;
use crate::{ApiError, Gateway};
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::header::{AGE, AUTHORIZATION};
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use axum::Json;
use http_body::Body as _;
use nimbus_cache::{CachedResponse, Decision, Hit, Identity, KeyInput, Lookup, ResponseCache};
use nimbus_core::{CacheSettings, FunctionName};
use nimbus_metrics::{CacheResult, FunctionMetrics, GaugeFamily};
use serde_json::{json, Value};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The response header saying whether the cache answered.
pub(crate) const HEADER: &str = "x-nimbus-cache";
/// The scope of a function URL's entries in keys (routes use their route key).
pub(crate) const URL_SCOPE: &str = "$url";

impl Gateway {
    /// Caches responses of URLs and routes with cache settings in at most `max_bytes` (0:
    /// nothing is cached, and no `x-nimbus-cache` header is sent), and reports its size
    /// at each scrape. Set once, before serving; without it the cache holds 64 MiB.
    pub fn with_response_cache(self: Arc<Self>, max_bytes: usize) -> Arc<Self> {
        let cache = Arc::new(ResponseCache::new(max_bytes));
        if self.response_cache.set(cache.clone()).is_ok() && self.cfg.metrics.is_enabled() {
            self.cfg.metrics.add_scrape_source(move || {
                let u = cache.usage();
                let mut bytes = GaugeFamily::new(
                    "nimbus_cache_bytes",
                    "Bytes the response cache holds (keys, headers, bodies and overhead)",
                );
                bytes.add(vec![], u.bytes as f64);
                let mut max = GaugeFamily::new(
                    "nimbus_cache_max_bytes",
                    "The response cache's bound (--cache-max-bytes)",
                );
                max.add(vec![], u.max_bytes as f64);
                let mut entries =
                    GaugeFamily::new("nimbus_cache_entries", "Responses the cache holds");
                entries.add(vec![], u.entries as f64);
                vec![bytes, max, entries]
            });
        }
        self
    }

    pub(crate) fn response_cache(&self) -> &Arc<ResponseCache> {
        self.response_cache
            .get_or_init(|| Arc::new(ResponseCache::new(nimbus_cache::DEFAULT_MAX_BYTES)))
    }
}

/// A cached URL or route about to serve a request.
pub(crate) struct Target<'a> {
    pub function: &'a FunctionName,
    /// [`URL_SCOPE`] or the route key.
    pub scope: &'a str,
    pub settings: &'a CacheSettings,
    /// The function's series (hits and misses).
    pub metrics: &'a FunctionMetrics,
    /// What the URL or route verified of the caller.
    pub auth: RouteAuth,
}

/// What a URL or route verified of its caller before the cache.
pub(crate) enum RouteAuth {
    /// Nothing (a URL with `AuthType NONE`, a route without an authorizer).
    Open,
    /// A JWT authorizer passed; its principal (issuer and subject: [`jwt_principal`]),
    /// when the key needs it and the token has one.
    Jwt(Option<String>),
    /// An `AWS_IAM` URL: the request carries its verified [`Caller`].
    Iam,
}

/// The principal of a JWT authorizer's context (`{"jwt": {"claims": …}}`): issuer and
/// subject.
pub(crate) fn jwt_principal(context: &Value) -> Option<String> {
    let claims = context.get("jwt")?.get("claims")?;
    let iss = claims.get("iss")?.as_str()?;
    let sub = claims.get("sub")?.as_str()?;
    Some(format!("jwt\0{iss}\0{sub}"))
}

/// Serves `req` through the cache of `t`; `run` invokes the function.
pub(crate) async fn serve<F, Fut>(
    gw: &Gateway,
    t: Target<'_>,
    req: Request,
    run: F,
) -> Result<Response, ApiError>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Response, ApiError>>,
{
    let cache = gw.response_cache();
    if !cache.enabled() || !matches!(*req.method(), Method::GET | Method::HEAD) {
        return run(req).await;
    }
    let mut req = req;
    let mut invalidator = None;
    if nimbus_cache::wants_fresh(req.headers()) {
        let (r, key) = crate::auth::may_invalidate(gw, t.function, req).await;
        req = r;
        invalidator = key;
    }
    let bypass = invalidator.is_some();
    // The signature of an allowed invalidation is not the caller's identity on a URL or
    // route that takes no credentials: its answer refreshes the shared entry.
    let open = matches!(t.auth, RouteAuth::Open);
    let has_credentials = !open || (req.headers().contains_key(AUTHORIZATION) && !bypass);
    if has_credentials && !t.settings.keys_identity() {
        t.metrics.cache(CacheResult::Miss);
        return Ok(marked(run(req).await?, "miss"));
    }
    let iam_principal;
    let identity = match (&t.auth, req.extensions().get::<Caller>()) {
        _ if !has_credentials => Identity::Anonymous,
        (RouteAuth::Iam, Some(Caller(key))) => {
            iam_principal = format!("iam\0{}", key.id);
            Identity::Principal(&iam_principal)
        }
        (RouteAuth::Jwt(Some(p)), _) => Identity::Principal(p),
        _ => match req.headers().get(AUTHORIZATION) {
            Some(v) => Identity::Credential(v.as_bytes()),
            None => Identity::Anonymous,
        },
    };
    let key = nimbus_cache::build_key(
        &KeyInput {
            function: t.function.as_str(),
            scope: t.scope,
            method: req.method().as_str(),
            path: req.uri().path(),
            query: req.uri().query(),
            headers: req.headers(),
            identity,
        },
        t.settings.key.iter().map(String::as_str),
    )
    .map_err(ApiError::internal)?;
    let ticket = if bypass {
        cache.ticket(t.function.as_str())
    } else {
        match cache.lookup(t.function.as_str(), &key, Instant::now()) {
            Lookup::Hit(h) => {
                t.metrics.cache(CacheResult::Hit);
                return Ok(hit(h));
            }
            Lookup::Miss(ticket) => ticket,
        }
    };
    let resp = run(req).await?;
    t.metrics.cache(if bypass {
        CacheResult::Bypass
    } else {
        CacheResult::Miss
    });
    let decision = nimbus_cache::decide(
        resp.status().as_u16(),
        resp.headers(),
        Duration::from_secs(t.settings.ttl.into()),
        |h| t.settings.key_headers().any(|k| k.eq_ignore_ascii_case(h)),
    );
    let ttl = match decision {
        Decision::Store(ttl) => ttl,
        Decision::Skip(why) => {
            tracing::debug!(function = %t.function, why, "response not cached");
            return Ok(marked(resp, "miss"));
        }
    };
    // Only a body whose size is known (the function's whole answer) is read: a stream
    // goes on to the client as it comes.
    let size = resp.body().size_hint().exact();
    let Some(size) = size.filter(|n| *n <= cache.max_entry_bytes() as u64) else {
        return Ok(marked(resp, "miss"));
    };
    let (parts, body) = resp.into_parts();
    let body = axum::body::to_bytes(body, size as usize)
        .await
        .map_err(ApiError::internal)?;
    let stored = CachedResponse {
        status: parts.status,
        headers: parts.headers.clone(),
        body: body.clone(),
    };
    let inserted = cache.insert(
        t.function.as_str(),
        key,
        stored,
        ttl,
        ticket,
        Instant::now(),
    );
    for f in &inserted.evicted {
        gw.cfg.metrics.cache_evictions(f, 1);
    }
    Ok(marked(
        Response::from_parts(parts, Body::from(body)),
        "miss",
    ))
}

fn marked(mut resp: Response, how: &'static str) -> Response {
    resp.headers_mut()
        .insert(HEADER, HeaderValue::from_static(how));
    resp
}

/// The response of a hit: the stored one, with its age.
fn hit(h: Hit) -> Response {
    let r = &h.response;
    let mut resp = Response::new(Body::from(r.body.clone()));
    *resp.status_mut() = r.status;
    *resp.headers_mut() = r.headers.clone();
    resp.headers_mut().insert(AGE, h.age.as_secs().into());
    marked(resp, "hit")
}

/// `DELETE /v1/functions/{name}/cache` (`nimbus:InvalidateCache`): drops the function's
/// cached responses on this node. `{"function": NAME, "flushed": N}`.
pub(crate) async fn flush(
    State(gw): State<Arc<Gateway>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let name = FunctionName::parse(&name)?;
    gw.store.get(&name, None)?;
    let n = gw.response_cache().invalidate_function(name.as_str());
    tracing::info!(function = %name, entries = n, "response cache flushed");
    Ok(Json(json!({ "function": name.as_str(), "flushed": n })))
}
