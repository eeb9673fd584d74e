//! Every HTTP surface of Nimbus on one router: the Lambda Invoke API and function URL
//! config (`/2015-03-31/…`, `/2021-10-31/…`), layers (`/2018-10-31/layers/…`), the SQS and
//! EventBridge JSON APIs and IAM's query API at `POST /` (by `X-Amz-Target`, or the signing service), the native API (`/v1/…`), function URLs
//! (`/fn/NAME/…`) and user routes declared in manifests. Every API request passes one
//! authentication and authorization middleware (`auth.rs`: SigV4, the route → action table,
//! policies). Errors map to HTTP in one place ([`ApiError`]).
//!
//! Depends on the store (registry), the pool (instances) and the runtime types; built by
//! `nimbus-server`.

mod alarms;
mod async_invoke;
mod auth;
mod buckets;
mod bus;
mod cluster;
mod code_gc;
mod dead_letter;
mod error;
mod flows;
mod forward;
mod health;
mod history;
mod http_cache;
pub mod http_event;
mod iam;
mod invoke;
mod jwt;
mod keys;
mod lambda_api;
mod lambda_fields;
mod layers;
mod limits;
mod logs;
mod metrics;
mod native;
mod permits;
mod provisioned;
mod queues;
mod secrets;
mod sessions;
mod sources;
mod sqs;
mod state;
mod states;
mod streaming;
mod targets;
mod trace;
mod urls;
mod whoami;
mod workflow_routes;

pub use alarms::{ALARM_DETAIL_TYPE, ALARM_SOURCE};
pub use async_invoke::GatewayInvoker;
pub use auth::{Auth, Caller, Key, PrivateEndpoint};
pub use cluster::ClusterControl;
pub use error::ApiError;
pub use flows::{FlowStarter, GatewayTasks};
pub use forward::Forwarder;
pub use health::{HealthCheck, HealthMonitor, HealthReport, HealthStatus};
pub use history::History;
pub use limits::{AbuseLimits, BUCKETS_MAX};
pub use metrics::metrics_router;
pub use secrets::Secrets;
pub use sessions::{assumed_role_arn, role_name_of, SessionCredentials, TokenError};
pub use state::{Gateway, GatewayConfig, Pools};
pub use workflow_routes::ROUTE_TAG;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use tower_http::compression::predicate::{
    DefaultPredicate, NotForContentType, Predicate, SizeAbove,
};

/// Decodes an IAM query-protocol body and renders its answer's XML without a store: the
/// entry point of the fuzz target `fuzz/fuzz_targets/iam_decode.rs`.
#[doc(hidden)]
pub fn iam_render_for_fuzzing(body: &[u8]) -> String {
    iam::render_without_store(body)
}

/// Builds the router serving every surface.
/// gzip for the native API's answers (the console's lists, logs, `/metrics`) when the client
/// accepts it and the answer is 1 KiB or more; never for code packages (already deflated) or
/// live tails (`text/event-stream`, which must reach the client as written).
fn compression() -> tower_http::compression::CompressionLayer<impl Predicate> {
    tower_http::compression::CompressionLayer::new().compress_when(
        DefaultPredicate::new()
            .and(SizeAbove::new(1024))
            .and(NotForContentType::const_new("application/zip")),
    )
}

pub fn router(gw: Arc<Gateway>) -> Router {
    use lambda_api as l;
    let lambda = Router::new()
        .route(
            "/2015-03-31/functions/{name}/invocations",
            post(invoke::lambda_invoke),
        )
        .route(
            "/2021-11-15/functions/{name}/response-streaming-invocations",
            post(streaming::invoke_with_response_stream),
        )
        .route(
            "/2015-03-31/functions",
            get(l::list_functions).post(l::create_function),
        )
        .route(
            "/2015-03-31/functions/",
            get(l::list_functions).post(l::create_function),
        )
        .route(
            "/2015-03-31/functions/{name}",
            get(l::get_function).delete(l::delete_function),
        )
        .route(
            "/2015-03-31/functions/{name}/configuration",
            get(l::get_configuration).put(l::update_configuration),
        )
        .route(
            "/2015-03-31/functions/{name}/code",
            axum::routing::put(l::update_code),
        )
        .route(
            "/2015-03-31/functions/{name}/versions",
            get(l::list_versions).post(l::publish_version),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases",
            get(l::list_aliases).post(l::create_alias),
        )
        .route(
            "/2015-03-31/functions/{name}/aliases/{alias}",
            get(l::get_alias)
                .put(l::update_alias)
                .delete(l::delete_alias),
        )
        .route(
            "/2015-03-31/functions/{name}/policy",
            get(l::get_policy).post(l::add_permission),
        )
        .route(
            "/2015-03-31/functions/{name}/policy/{sid}",
            axum::routing::delete(l::remove_permission),
        )
        .route(
            "/2017-10-31/functions/{name}/concurrency",
            axum::routing::put(l::put_concurrency).delete(l::delete_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/concurrency",
            get(l::get_concurrency),
        )
        .route(
            "/2019-09-30/functions/{name}/provisioned-concurrency",
            get(provisioned::get_config)
                .put(provisioned::put_config)
                .delete(provisioned::delete_config),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config",
            get(async_invoke::get_config)
                .put(async_invoke::put_config)
                .post(async_invoke::update_config)
                .delete(async_invoke::delete_config),
        )
        .route(
            "/2019-09-25/functions/{name}/event-invoke-config/list",
            get(async_invoke::list_configs),
        )
        .route(
            "/2015-03-31/event-source-mappings",
            get(queues::list_mappings).post(queues::create_mapping),
        )
        .route(
            "/2015-03-31/event-source-mappings/",
            get(queues::list_mappings).post(queues::create_mapping),
        )
        .route(
            "/2015-03-31/event-source-mappings/{uuid}",
            get(queues::get_mapping)
                .put(queues::update_mapping)
                .delete(queues::delete_mapping),
        )
        .route("/2018-10-31/layers", get(layers::list_or_find))
        .route("/2018-10-31/layers/", get(layers::list_or_find))
        .route(
            "/2018-10-31/layers/{layer}/versions",
            get(layers::list_versions).post(layers::publish),
        )
        .route(
            "/2018-10-31/layers/{layer}/versions/{version}",
            get(layers::get_version).delete(layers::delete_version),
        )
        .route(
            "/2018-10-31/layers/{layer}/versions/{version}/policy",
            get(layers::get_policy).post(layers::add_permission),
        )
        .route(
            "/2018-10-31/layers/{layer}/versions/{version}/policy/{sid}",
            axum::routing::delete(layers::remove_permission),
        )
        .route("/2016-08-19/account-settings", get(l::account_settings))
        .route("/2016-08-19/account-settings/", get(l::account_settings))
        .route(
            "/2017-03-31/tags/{arn}",
            get(l::list_tags)
                .post(l::tag_resource_handler)
                .delete(l::untag_resource),
        )
        .route(
            "/2021-10-31/functions/{name}/url",
            get(urls::get_url_config)
                .post(urls::create_url_config)
                .put(urls::update_url_config)
                .delete(urls::delete_url_config),
        );
    let native = Router::new()
        .route("/v1/health", get(health::health))
        .route("/v1/cluster", get(cluster::status))
        .route("/v1/cluster/nodes/{id}/drain", post(cluster::drain))
        .route(forward::PATH, post(forward::internal_invoke))
        .route("/v1/ready", get(health::ready))
        .route("/metrics", get(metrics::scrape))
        .route("/v1/functions", get(native::list))
        .route(
            "/v1/functions/{name}",
            get(native::get_function)
                .put(native::deploy)
                .delete(native::delete),
        )
        .route("/v1/functions/{name}/versions", get(native::versions))
        .route("/v1/functions/{name}/logs", get(logs::function_logs))
        .route("/v1/logs", get(logs::all_logs))
        .route("/v1/functions/{name}/code", get(native::code))
        .route(
            "/v1/functions/{name}/cache",
            axum::routing::delete(http_cache::flush),
        )
        .route(
            "/v1/functions/{name}/metrics",
            get(history::function_metrics),
        )
        .route("/v1/metrics/summary", get(history::summary))
        .route("/v1/alarms", get(alarms::list))
        .route(
            "/v1/alarms/{name}",
            get(alarms::get).put(alarms::put).delete(alarms::delete),
        )
        .route(
            "/v1/layers/{layer}/versions/{version}/content",
            get(layers::content),
        )
        .route("/v1/whoami", get(whoami::whoami))
        .route("/v1/keys", get(keys::list_keys).post(keys::create_key))
        .route("/v1/keys/{id}", axum::routing::delete(keys::delete_key))
        .route("/v1/secrets", get(secrets::list_secrets))
        .route("/v1/secrets/rotate", post(secrets::rotate))
        .route(
            "/v1/secrets/{name}",
            axum::routing::put(secrets::put_secret).delete(secrets::delete_secret),
        )
        .route(
            "/v1/sources",
            get(sources::native_list).post(sources::native_create),
        )
        .route(
            "/v1/sources/{uuid}",
            get(sources::native_get)
                .put(sources::native_put)
                .patch(sources::native_patch)
                .delete(sources::native_delete),
        )
        .route("/v1/targets", get(targets::list))
        .route(
            "/v1/targets/{name}",
            get(targets::get).put(targets::put).delete(targets::delete),
        )
        .route("/v1/queues", get(queues::list_queues))
        .route(
            "/v1/queues/{q}",
            get(queues::get_queue)
                .put(queues::put_queue)
                .delete(queues::delete_queue),
        )
        .route("/v1/queues/{q}/messages", post(queues::send))
        .route(
            "/v1/queues/{q}/messages/{receipt}",
            axum::routing::delete(queues::delete_message),
        )
        .route(
            "/v1/queues/{q}/messages/{receipt}/visibility",
            post(queues::change_visibility),
        )
        .route("/v1/queues/{q}/receive", post(queues::receive))
        .route("/v1/queues/{q}/purge", post(queues::purge))
        .route("/v1/queues/{q}/redrive", post(queues::redrive))
        .route(
            "/v1/functions/{name}/events",
            get(async_invoke::list_events),
        )
        .route(
            "/v1/functions/{name}/events/{id}/redrive",
            post(async_invoke::redrive_event),
        )
        .route("/v1/buckets", get(buckets::list_buckets))
        .route(
            "/v1/buckets/{bucket}",
            axum::routing::put(buckets::put_bucket),
        )
        .route(
            "/v1/buckets/{bucket}/notifications",
            get(buckets::get_notifications),
        )
        .route(
            "/v1/buckets/{bucket}/notifications/functions/{function}",
            axum::routing::put(buckets::put_function_notifications),
        )
        .route("/v1/buses", get(bus::list_buses))
        .route(
            "/v1/buses/{bus}",
            get(bus::get_bus).put(bus::put_bus).delete(bus::delete_bus),
        )
        .route("/v1/buses/{bus}/events", post(bus::put_events))
        .route("/v1/buses/{bus}/rules", get(bus::list_rules))
        .route(
            "/v1/buses/{bus}/rules/{rule}",
            get(bus::get_rule)
                .put(bus::put_rule)
                .delete(bus::delete_rule),
        )
        .layer(compression());
    let urls = Router::new()
        .route("/", axum::routing::any(bus::aws_json))
        .route("/fn/{name}", axum::routing::any(urls::function_url_root))
        .route("/fn/{name}/", axum::routing::any(urls::function_url_root))
        .route("/fn/{name}/{*path}", axum::routing::any(urls::function_url));
    let app = lambda
        .merge(native)
        .merge(urls)
        .merge(nimbus_console::router())
        .fallback(sqs::or_user_route)
        .method_not_allowed_fallback(|| async {
            ApiError::InvalidParameter("method not allowed on this path".into())
        })
        .layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            auth::enforce,
        ))
        // Body sizes are limited per surface by `limits::guard` (deploys: 70 MB by default),
        // which wraps every body before authentication reads it.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            limits::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            trace::entry,
        ));
    // With metrics off (`serve --metrics off`) requests are not even timed.
    let app = if gw.cfg.metrics.is_enabled() {
        app.layer(axum::middleware::from_fn_with_state(
            gw.clone(),
            metrics::record,
        ))
    } else {
        app
    };
    app.layer(axum::middleware::from_fn(trace_request))
        .with_state(gw)
}

/// One `tracing` span per request, with its outcome at debug level; every response carries
/// an `x-amzn-RequestId` (AWS SDKs read it from successes and errors alike).
async fn trace_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;
    let span = tracing::info_span!("http", method = %req.method(), path = %req.uri().path());
    let t0 = std::time::Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    if !resp.headers().contains_key("x-amzn-requestid") {
        if let Ok(v) = axum::http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            resp.headers_mut().insert("x-amzn-requestid", v);
        }
    }
    span.in_scope(|| {
        tracing::debug!(
            status = resp.status().as_u16(),
            micros = t0.elapsed().as_micros() as u64,
            "request done"
        )
    });
    resp
}
