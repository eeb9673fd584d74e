//! `GET /metrics`: the Prometheus/OpenMetrics exposition of [`nimbus_metrics::Metrics`],
//! on the main listener (authorised as `nimbus:GetMetrics`) and on the optional
//! unauthenticated metrics listener ([`metrics_router`]); and the API's own request
//! metrics, recorded once per request by the router's outer middleware.

use crate::{ApiError, Gateway};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use nimbus_metrics::Metrics;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// Encodes the registry off the async workers: scrape-time gauges read the stores.
async fn exposition(metrics: Arc<Metrics>) -> Result<Response, ApiError> {
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, nimbus_metrics::CONTENT_TYPE)], text).into_response())
}

/// `Ok` when this server records metrics; else the error every metrics endpoint answers
/// (`serve --metrics off`).
pub(crate) fn require_on(metrics: &Metrics) -> Result<(), ApiError> {
    if metrics.is_enabled() {
        return Ok(());
    }
    Err(ApiError::NotFound(
        "metrics are off on this server (nimbus serve --metrics off): no metrics or \
         per-minute history are recorded"
            .into(),
    ))
}

/// `GET /metrics` on the main listener.
pub(crate) async fn scrape(State(gw): State<Arc<Gateway>>) -> Result<Response, ApiError> {
    require_on(&gw.cfg.metrics)?;
    exposition(gw.cfg.metrics.clone()).await
}

/// The router of the metrics listener (`--metrics-listen`): `GET /metrics` only, no
/// authentication.
pub fn metrics_router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(m): State<Arc<Metrics>>| exposition(m)),
        )
        .fallback(|| async { ApiError::NotFound("only GET /metrics is served here".into()) })
        .with_state(metrics)
}

/// A bounded name of the operation a request reached: its method and route template with
/// `:param` for a path parameter (`GET /v1/functions/:name`; braces in a label value trip
/// some parsers), `route` for user routes and unmatched paths.
pub(crate) fn operation(method: &Method, matched: Option<&MatchedPath>) -> Arc<str> {
    const METHODS: [&str; 8] = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "OTHER",
    ];
    let m = match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::PUT => 2,
        Method::DELETE => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    };
    // Route templates are few and fixed: each name is made once, then shared.
    type Names = HashMap<Box<str>, [Option<Arc<str>>; 8]>;
    static NAMES: OnceLock<RwLock<Names>> = OnceLock::new();
    let names = NAMES.get_or_init(Default::default);
    // "" stands for no matched route (a real template is never empty).
    let path = matched.map_or("", |p| p.as_str());
    if let Some(Some(name)) = names
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(path)
        .map(|n| &n[m])
    {
        return name.clone();
    }
    let name: Arc<str> = match matched {
        Some(p) => {
            let template = p
                .as_str()
                .replace("{*", ":")
                .replace('{', ":")
                .replace('}', "");
            format!("{} {template}", METHODS[m]).into()
        }
        None => format!("{} route", METHODS[m]).into(),
    };
    names
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(path.into())
        .or_default()[m] = Some(name.clone());
    name
}

/// Counts each request by operation and status, with its latency.
pub(crate) async fn record(State(gw): State<Arc<Gateway>>, req: Request, next: Next) -> Response {
    let op = operation(req.method(), req.extensions().get::<MatchedPath>());
    let t0 = std::time::Instant::now();
    let resp = next.run(req).await;
    gw.cfg
        .metrics
        .api_request(&op, resp.status().as_u16(), t0.elapsed());
    resp
}
