//! `Expect: 100-continue` without a body: the answer closes the connection (botocore keeps
//! an early final status on its kept-alive connection and misreads the next response on
//! it; see `src/expect.rs`), and only that answer.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use nimbus_objects::{Objects, ObjectsConfig};
use std::net::SocketAddr;

async fn put(
    router: &mut axum::Router,
    key: &str,
    body: &'static [u8],
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
async fn only_bodiless_requests_that_expect_continue_close_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::open_sqlite(dir.path(), ObjectsConfig::default()).unwrap();
    objects.create_bucket("bucket").await.unwrap();
    let mut router = nimbus_s3::router(objects, None);
    let connection = |r: &axum::http::Response<Body>| {
        r.headers()
            .get("connection")
            .map(|v| v.to_str().unwrap().to_string())
    };
    let empty = put(&mut router, "empty", b"", true).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert_eq!(connection(&empty).as_deref(), Some("close"));
    let with_body = put(&mut router, "full", b"bytes", true).await;
    assert_eq!(with_body.status(), StatusCode::OK);
    assert_eq!(connection(&with_body), None);
    let no_expect = put(&mut router, "plain", b"", false).await;
    assert_eq!(no_expect.status(), StatusCode::OK);
    assert_eq!(connection(&no_expect), None);
}
