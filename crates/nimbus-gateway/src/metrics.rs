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
use std::sync::Arc;

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
pub(crate) fn operation(method: &Method, matched: Option<&MatchedPath>) -> String {
    let m = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    };
    match matched {
        Some(p) => {
            let template = p
                .as_str()
                .replace("{*", ":")
                .replace('{', ":")
                .replace('}', "");
            format!("{m} {template}")
        }
        None => format!("{m} route"),
    }
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
