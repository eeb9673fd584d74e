//! `Expect: 100-continue` answered without a `100 Continue` (no body, or an error before
//! the body was read): the answer closes the connection (botocore keeps an early final
//! status on its kept-alive connection and misreads the next response on it; see
//! `src/expect.rs`), and only that answer.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use nimbus_objects::{Objects, ObjectsConfig};
use std::net::SocketAddr;

async fn put(
    router: &mut axum::Router,
    key: &str,
    body: Vec<u8>,
    expect: bool,
) -> axum::http::Response<Body> {
    let mut b = Request::builder()
        .method(Method::PUT)
        .uri(format!("/bucket/{key}"))
        .header("host", "127.0.0.1:9000")
        .header("content-length", body.len());
    if expect {
        b = b.header("expect", "100-continue");
    }
    let mut req = b.body(Body::from(body)).unwrap();
    let peer: SocketAddr = "192.0.2.9:50000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    tower_service::Service::call(router, req).await.unwrap()
}

#[tokio::test]
async fn only_expect_requests_whose_body_was_not_read_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::open_sqlite(dir.path(), ObjectsConfig::default()).unwrap();
    objects.create_bucket("bucket").await.unwrap();
    let mut router = nimbus_s3::router(objects, None);
    let connection = |r: &axum::http::Response<Body>| {
        r.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let empty = put(&mut router, "empty", vec![], true).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(connection(&empty).as_deref(), Some("close"));
    let with_body = put(&mut router, "full", b"bytes".to_vec(), true).await;
    assert_eq!(with_body.status(), StatusCode::OK);
    assert_eq!(connection(&with_body), None);
    let no_expect = put(&mut router, "plain", vec![], false).await;
    assert_eq!(no_expect.status(), StatusCode::OK);
    assert_eq!(connection(&no_expect), None);
    // Refused before the body is read: no `100 Continue` was sent, so the early answer
    // closes the connection; without `Expect` the connection is hyper's to manage.
    let long = "k".repeat(1025);
    let refused = put(&mut router, &long, b"x".to_vec(), true).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(connection(&refused).as_deref(), Some("close"));
    let refused = put(&mut router, &long, b"x".to_vec(), false).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(connection(&refused), None);
}
