//! Abuse limits enforced in front of every handler ([`guard`]): header size and count,
//! body size per surface, a body read deadline, the server-wide per-caller rate limit and
//! the concurrent-upload limit. Per-route and per-URL rate limits ([`check_route`]) use
//! the same token buckets. Buckets are bounded in memory: idle (full) buckets are evicted
//! and the table never holds more than [`BUCKETS_MAX`] keys.

use crate::{ApiError, Gateway};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nimbus_core::{Limits, RateLimit};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Most token buckets kept at once (callers, routes and URLs together).
pub const BUCKETS_MAX: usize = 100_000;

/// The gateway's abuse limits (`nimbus serve` flags; see `docs/security.md`).
#[derive(Debug, Clone)]
pub struct AbuseLimits {
    /// Per-caller token bucket for every request; `None`: no per-caller limit.
    pub rate_limit: Option<RateLimit>,
    /// Largest request head: request line + headers, in bytes.
    pub max_header_bytes: usize,
    /// Most request headers.
    pub max_headers: usize,
    /// Largest body of control API requests (everything but deploys and invocations).
    pub max_body: usize,
    /// Largest deploy body (`PUT /v1/functions/NAME`, CreateFunction, UpdateFunctionCode,
    /// PublishLayerVersion).
    pub max_deploy_body: usize,
    /// Deploy requests in flight at once.
    pub max_uploads: usize,
    /// How long a deploy waits for an upload slot before it gets 429.
    pub upload_wait: Duration,
    /// How long a client may take to send a whole request body.
    pub body_timeout: Duration,
}

impl Default for AbuseLimits {
    fn default() -> Self {
        Self {
            rate_limit: None,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_body: Limits::PAYLOAD_MAX,
            max_deploy_body: 70 * 1024 * 1024,
            max_uploads: 4,
            upload_wait: Duration::from_secs(2),
            body_timeout: Duration::from_secs(300),
        }
    }
}

/// Limits plus their state (buckets, upload slots).
pub(crate) struct Limiter {
    pub(crate) cfg: AbuseLimits,
    buckets: Buckets,
    uploads: Arc<Semaphore>,
}

impl Limiter {
    pub(crate) fn new(cfg: AbuseLimits) -> Self {
        Self {
            uploads: Arc::new(Semaphore::new(cfg.max_uploads.max(1))),
            buckets: Buckets::new(BUCKETS_MAX),
            cfg,
        }
    }
}

/// Who is calling, for per-caller limits: the access key a request is signed with, when
/// that key exists (each key has its own bucket, wherever it calls from), else the source
/// IP. The signature is checked later (`auth::enforce`); a forged request naming a real key
/// id spends that key's tokens, as with any rate limit keyed on a public identifier.
pub(crate) fn caller_key(gw: &Gateway, req: &Request) -> String {
    if let Some(id) = crate::auth::claimed_key_id(gw, req.headers()) {
        return format!("key:{id}");
    }
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    format!("ip:{ip}")
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Surface {
    /// Lambda's API (`/2015-03-31/…` and friends) and the native `/v1` API.
    Api,
    /// Lambda Invoke.
    Invoke,
    /// Deploys: native PUT, CreateFunction, UpdateFunctionCode, PublishLayerVersion.
    Deploy,
    /// Function URLs and user routes (API Gateway's error shapes).
    Http,
}

fn surface(method: &axum::http::Method, path: &str) -> Surface {
    use axum::http::Method;
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let versioned = parts
        .first()
        .is_some_and(|p| p.len() == 10 && p.starts_with("20") && p.as_bytes()[4] == b'-');
    if versioned {
        return match (method, parts.as_slice()) {
            (&Method::POST, [_, "functions", _, "invocations"]) => Surface::Invoke,
            (&Method::POST, [_, "functions"])
            | (&Method::PUT, [_, "functions", _, "code"])
            | (&Method::POST, [_, "layers", _, "versions"]) => Surface::Deploy,
            _ => Surface::Api,
        };
    }
    match (method, parts.as_slice()) {
        (&Method::PUT, ["v1", "functions", _]) => Surface::Deploy,
        (_, ["v1", ..]) => Surface::Api,
        // The root serves the EventBridge-style JSON API (x-amz-target) besides routes.
        (&Method::POST, [""]) => Surface::Api,
        _ => Surface::Http,
    }
}

/// A JSON error in the API's usual shape, for statuses `ApiError` has no variant for.
fn json_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "type": error_type, "message": message, "Type": "User", "Message": message,
    });
    let mut resp = (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(error_type) {
        resp.headers_mut().insert("x-amzn-errortype", v);
    }
    resp
}

/// 429 with `Retry-After`: Lambda-shaped on the APIs, API Gateway's on URLs and routes.
fn too_many(surface: Surface, reason: &'static str, retry_after: u64) -> Response {
    let mut resp = if surface == Surface::Http {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("content-type", "application/json")],
            serde_json::json!({"message": "Too Many Requests"}).to_string(),
        )
            .into_response()
    } else {
        // Lambda's TooManyRequestsException also names the wait in its body.
        let resp = ApiError::Throttled {
            message: "Rate exceeded".into(),
            reason,
        }
        .into_response();
        let (parts, _) = resp.into_parts();
        let mut body = serde_json::json!({
            "type": "TooManyRequestsException", "message": "Rate exceeded",
            "Type": "User", "Message": "Rate exceeded", "Reason": reason,
        });
        body["retryAfterSeconds"] = retry_after.max(1).to_string().into();
        Response::from_parts(parts, Body::from(body.to_string()))
    };
    resp.headers_mut()
        .insert("retry-after", HeaderValue::from(retry_after.max(1)));
    resp
}

/// Per-route or per-URL rate limit (all callers of the route share its bucket): the 429
/// to answer when the bucket is empty.
pub(crate) fn check_route(gw: &Gateway, key: &str, limit: &RateLimit) -> Option<Response> {
    gw.limiter()
        .buckets
        .take(key, limit, Instant::now())
        .err()
        .map(|secs| too_many(Surface::Http, "RouteRateLimitExceeded", secs))
}

/// The middleware enforcing [`AbuseLimits`] before any handler runs.
pub(crate) async fn guard(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let limiter = gw.limiter();
    let cfg = &limiter.cfg;
    let surface = surface(req.method(), req.uri().path());
    // Header count and size (hyper's own, larger limits are the backstop).
    let count = req.headers().len();
    let bytes: usize = req.uri().to_string().len()
        + req.method().as_str().len()
        + req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if count > cfg.max_headers || bytes > cfg.max_header_bytes {
        return json_error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "RequestHeaderFieldsTooLargeException",
            &format!(
                "request headers too large: at most {} headers and {} bytes",
                cfg.max_headers, cfg.max_header_bytes
            ),
        );
    }
    if let Some(limit) = &cfg.rate_limit {
        if let Err(secs) = limiter
            .buckets
            .take(&caller_key(&gw, &req), limit, Instant::now())
        {
            tracing::debug!("caller rate limit exceeded");
            return too_many(surface, "CallerRateLimitExceeded", secs);
        }
    }
    let max_body = match surface {
        Surface::Deploy => cfg.max_deploy_body,
        Surface::Invoke | Surface::Http => Limits::PAYLOAD_MAX,
        Surface::Api => cfg.max_body,
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|n| *n > max_body as u64) {
        // Clients write the whole body before reading the answer: read (and drop) a
        // bounded amount so a modestly oversized request gets its 413 rather than a
        // broken pipe; anything larger just has its connection closed after the answer.
        let drained = n <= DRAIN_MAX && drain(req.into_body(), cfg.body_timeout).await;
        let mut resp = ApiError::TooLarge(format!(
            "request body too large: at most {max_body} bytes here"
        ))
        .into_response();
        if !drained {
            resp.headers_mut()
                .insert("connection", HeaderValue::from_static("close"));
        }
        return resp;
    }
    let _upload = if surface == Surface::Deploy {
        let sem = limiter.uploads.clone();
        match tokio::time::timeout(cfg.upload_wait, sem.acquire_owned()).await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                return too_many(Surface::Api, "ConcurrentUploadLimitExceeded", 1);
            }
        }
    } else {
        None
    };
    let timed_out = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = Body::new(http_body_util::Limited::new(
        Deadline {
            inner: body,
            sleep: Box::pin(tokio::time::sleep(cfg.body_timeout)),
            fired: timed_out.clone(),
        },
        max_body,
    ));
    let resp = next.run(Request::from_parts(parts, body)).await;
    if timed_out.load(Ordering::Relaxed) {
        let mut resp = json_error(
            StatusCode::REQUEST_TIMEOUT,
            "RequestTimeoutException",
            "the request body was not received in time",
        );
        resp.headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        return resp;
    }
    // Body-limit rejections from axum's extractors are plain text: make them JSON.
    if resp.status() == StatusCode::PAYLOAD_TOO_LARGE && !is_json(&resp) {
        return ApiError::TooLarge(format!(
            "request body too large: at most {max_body} bytes here"
        ))
        .into_response();
    }
    resp
}

/// Most bytes of an oversized body read (and dropped) before answering 413.
const DRAIN_MAX: u64 = 16 * 1024 * 1024;

/// Reads `body` to its end within `timeout`, keeping nothing; whether it ended.
async fn drain(body: Body, timeout: Duration) -> bool {
    use http_body_util::BodyExt;
    let mut body = http_body_util::Limited::new(body, DRAIN_MAX as usize);
    let read = async {
        while let Some(frame) = body.frame().await {
            if frame.is_err() {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(false)
}

fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// A request body that fails once its deadline passes.
struct Deadline {
    inner: Body,
    sleep: Pin<Box<tokio::time::Sleep>>,
    fired: Arc<AtomicBool>,
}

impl http_body::Body for Deadline {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(x) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(x);
        }
        if self.sleep.as_mut().poll(cx).is_ready() {
            self.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new("request body timeout"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Token buckets by key, bounded in number.
pub(crate) struct Buckets {
    map: Mutex<HashMap<String, Bucket>>,
    max: usize,
}

impl Buckets {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max,
        }
    }

    /// Takes one token from `key`'s bucket; `Err(seconds)` until the next token when empty.
    pub(crate) fn take(&self, key: &str, limit: &RateLimit, now: Instant) -> Result<(), u64> {
        let rate = f64::from(limit.rps.max(1));
        let cap = f64::from(limit.bucket().max(1));
        let mut map = self.map.lock().unwrap();
        if !map.contains_key(key) && map.len() >= self.max {
            // Full: drop buckets that have refilled (their callers went idle), else the
            // least recently used one.
            let refill_all = Duration::from_secs_f64(cap / rate);
            map.retain(|_, b| now.saturating_duration_since(b.last) < refill_all);
            if map.len() >= self.max {
                if let Some(k) = map
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&k);
                }
            }
        }
        let b = map.entry(key.to_string()).or_insert(Bucket {
            tokens: cap,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_refills_and_reports_retry_after() {
        let b = Buckets::new(10);
        let l = RateLimit { rps: 1, burst: 2 };
        let t0 = Instant::now();
        assert!(b.take("a", &l, t0).is_ok());
        assert!(b.take("a", &l, t0).is_ok());
        assert_eq!(b.take("a", &l, t0), Err(1));
        assert!(b.take("b", &l, t0).is_ok(), "buckets are per key");
        assert!(b.take("a", &l, t0 + Duration::from_millis(1100)).is_ok());
        let slow = RateLimit { rps: 1, burst: 1 };
        assert!(b.take("c", &slow, t0).is_ok());
        assert_eq!(b.take("c", &slow, t0 + Duration::from_millis(100)), Err(1));
    }

    #[test]
    fn buckets_stay_bounded() {
        let b = Buckets::new(3);
        let l = RateLimit { rps: 100, burst: 1 };
        let t0 = Instant::now();
        for i in 0..50 {
            let _ = b.take(&format!("k{i}"), &l, t0 + Duration::from_millis(i));
            assert!(b.len() <= 3);
        }
    }

    #[test]
    fn surfaces() {
        use axum::http::Method;
        assert_eq!(
            surface(&Method::POST, "/2015-03-31/functions/f/invocations"),
            Surface::Invoke
        );
        assert_eq!(
            surface(&Method::POST, "/2015-03-31/functions"),
            Surface::Deploy
        );
        assert_eq!(
            surface(&Method::PUT, "/2015-03-31/functions/f/code"),
            Surface::Deploy
        );
        assert_eq!(surface(&Method::PUT, "/v1/functions/f"), Surface::Deploy);
        assert_eq!(
            surface(&Method::POST, "/2018-10-31/layers/deps/versions"),
            Surface::Deploy
        );
        assert_eq!(surface(&Method::GET, "/v1/functions/f"), Surface::Api);
        assert_eq!(surface(&Method::GET, "/fn/f/x"), Surface::Http);
        assert_eq!(surface(&Method::GET, "/orders"), Surface::Http);
        assert_eq!(surface(&Method::POST, "/"), Surface::Api);
    }
}
