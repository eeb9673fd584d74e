//! Every HTTP surface of Nimbus on one router: the Lambda Invoke API and function URL
//! config (`/2015-03-31/…`, `/2021-10-31/…`), the native API (`/v1/…`), function URLs
//! (`/fn/NAME/…`) and user routes declared in manifests. Errors map to HTTP in one place
//! ([`ApiError`]).
//!
//! Depends on the store (registry), the pool (instances) and the runtime types; built by
//! `nimbus-server`.

mod error;
pub mod http_event;
mod invoke;
mod native;
mod state;
mod urls;

pub use error::ApiError;
pub use state::{Gateway, GatewayConfig, Pools};

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// Largest native deploy request: a 50 MB zip, base64-encoded, plus configuration.
const DEPLOY_BODY_MAX: usize = 70 * 1024 * 1024;

/// Builds the router serving every surface.
pub fn router(gw: Arc<Gateway>) -> Router {
    let lambda = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::lambda_invoke),
        )
        .route(
            "/2021-10-31/functions/{name}/url",
            get(urls::get_url_config)
                .post(urls::create_url_config)
                .put(urls::update_url_config)
                .delete(urls::delete_url_config),
        );
    let native = Router::new()
        .route("/v1/health", get(native::health))
        .route("/v1/functions", get(native::list))
        .route(
            "/v1/functions/{name}",
            get(native::get_function)
                .put(native::deploy)
                .delete(native::delete),
        )
        .route("/v1/functions/{name}/versions", get(native::versions))
        .route("/v1/functions/{name}/logs", get(native::logs));
    let urls = Router::new()
        .route("/fn/{name}", axum::routing::any(urls::function_url_root))
        .route("/fn/{name}/", axum::routing::any(urls::function_url_root))
        .route("/fn/{name}/{*path}", axum::routing::any(urls::function_url));
    lambda
        .merge(native)
        .merge(urls)
        .fallback(urls::user_route)
        .method_not_allowed_fallback(|| async {
            ApiError::InvalidParameter("method not allowed on this path".into())
        })
        .layer(DefaultBodyLimit::max(DEPLOY_BODY_MAX))
        .layer(axum::middleware::from_fn(trace_request))
        .with_state(gw)
}

/// One `tracing` span per request, with its outcome at debug level.
async fn trace_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    let t0 = std::time::Instant::now();
    let resp = next.run(req).instrument(span.clone()).await;
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = t0.elapsed().as_micros() as u64,
            "request done"
        )
    });
    resp
}
