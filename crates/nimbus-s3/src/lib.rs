//! S3 over Nimbus's object store: [`router`] serves the S3 REST protocol (parsed, signed and
//! answered by the `s3s` crate) with every operation translated to a `nimbus-objects` call
//! ([`ops`]). Authentication is SigV4 (headers, presigned URLs, aws-chunked bodies) against
//! Nimbus's access keys ([`KeyLookup`]); authorisation evaluates the key's policy with
//! `s3:*` actions on `arn:aws:s3:::BUCKET[/KEY]` resources ([`access`]). Every response
//! carries `x-amz-request-id` and `x-amz-id-2`; writes hand them, the signing key and the
//! client's address to the engine for its event notifications. Bucket CORS is applied by a
//! layer around `s3s` ([`cors`]): preflights are answered there, unsigned. A bodiless request
//! that expects `100 Continue` is answered with `Connection: close` ([`expect`]).
//!
//! Used by `nimbus-server` for `--s3-listen`; depends on no other Nimbus surface.

mod access;
mod checksums;
mod convert;
mod cors;
mod errors;
mod expect;
mod host;
mod lifecycle;
mod notify;
mod ops;
mod requester;
mod session;

pub use access::{action_of, KeyLookup, TokenCheck};

use axum::extract::Request;
use nimbus_objects::Objects;
use std::sync::Arc;

/// The S3 service over `objects`. With `keys`, every request must be signed by one of them
/// and is checked against its policy; without (`--auth off`), requests are anonymous and
/// any signature on them is ignored.
pub fn router(objects: Objects, keys: Option<Arc<dyn KeyLookup>>) -> axum::Router {
    let mut builder = s3s::service::S3ServiceBuilder::new(ops::NimbusS3::new(objects.clone()));
    builder.set_host(host::Localhost);
    if let Some(keys) = &keys {
        builder.set_auth(access::Auth(keys.clone()));
        builder.set_access(access::Access(keys.clone()));
    }
    let service =
        axum::error_handling::HandleError::new(builder.build(), |e: s3s::HttpError| async move {
            tracing::error!(error = ?e, "S3 request failed");
            errors::internal_error_response()
        });
    let router = axum::Router::new()
        .fallback_service(service)
        .layer(axum::middleware::from_fn_with_state(objects, cors::layer))
        .layer(axum::middleware::from_fn(requester::with_request_ids))
        .layer(axum::middleware::from_fn(
            expect::close_after_unanswered_expect,
        ));
    if let Some(keys) = keys {
        router.layer(axum::middleware::from_fn_with_state(keys, session::check))
    } else {
        router.layer(axum::middleware::map_request(unsigned))
    }
}

/// With auth off, signatures are meaningless (any key, any secret): drop them so the
/// request is served as an anonymous one.
async fn unsigned(mut req: Request) -> Request {
    req.headers_mut().remove(axum::http::header::AUTHORIZATION);
    if let Some(q) = req.uri().query() {
        let kept: Vec<&str> = q
            .split('&')
            .filter(|p| !access::is_signature_param(p.split('=').next().unwrap_or("")))
            .collect();
        if kept.len() != q.split('&').count() {
            let path = req.uri().path();
            let pq = if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            };
            let mut parts = req.uri().clone().into_parts();
            if let Ok(pq) = pq.parse() {
                parts.path_and_query = Some(pq);
                if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                    *req.uri_mut() = uri;
                }
            }
        }
    }
    req
}
