//! Who made a request, for the object store's event notifications: every response carries
//! S3's `x-amz-request-id` and `x-amz-id-2`, and the same ids, the signing key and the
//! client's address reach the engine as a [`Requester`].

use axum::extract::{ConnectInfo, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use nimbus_objects::{notify::ANONYMOUS, Requester};
use s3s::S3Request;
use std::net::SocketAddr;

/// One request's ids, as S3 forms them: 16 upper-case hex digits, and an opaque base64
/// extended id.
#[derive(Debug, Clone)]
pub(crate) struct RequestIds {
    request_id: String,
    host_id: String,
}

impl RequestIds {
    fn new() -> Self {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let request_id = hex_upper(&a.as_bytes()[..8]);
        let mut extended = Vec::with_capacity(32);
        extended.extend_from_slice(a.as_bytes());
        extended.extend_from_slice(b.as_bytes());
        Self {
            request_id,
            host_id: base64::engine::general_purpose::STANDARD.encode(extended),
        }
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Gives the request its ids (in its extensions, for the operations) and the response its
/// `x-amz-request-id` and `x-amz-id-2` headers.
pub(crate) async fn with_request_ids(mut req: Request, next: Next) -> Response {
    let ids = RequestIds::new();
    req.extensions_mut().insert(ids.clone());
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-amz-request-id", &ids.request_id),
        ("x-amz-id-2", &ids.host_id),
    ] {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    }
    response
}

/// The requester of an S3 operation: its ids, the access key that signed it (`anonymous`
/// when unsigned) and the peer's address (empty when the listener did not record one).
pub(crate) fn requester_of<T>(req: &S3Request<T>) -> Requester {
    let ids = req.extensions.get::<RequestIds>();
    Requester {
        request_id: ids.map(|i| i.request_id.clone()).unwrap_or_default(),
        host_id: ids.map(|i| i.host_id.clone()).unwrap_or_default(),
        principal: req
            .credentials
            .as_ref()
            .map_or(ANONYMOUS, |c| c.access_key.as_str())
            .to_string(),
        source_ip: req
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_look_like_s3s() {
        let ids = RequestIds::new();
        assert_eq!(ids.request_id.len(), 16);
        assert!(ids
            .request_id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)));
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&ids.host_id)
            .unwrap();
        assert_eq!(decoded.len(), 32);
        assert_ne!(RequestIds::new().request_id, ids.request_id);
    }
}
