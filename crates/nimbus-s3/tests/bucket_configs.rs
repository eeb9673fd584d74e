//! Bucket CORS and lifecycle configurations through the S3 router in process: their XML
//! both ways, S3's errors for malformed bodies, and CORS preflights (unsigned, even with
//! authentication on) and headers on actual requests.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use nimbus_objects::{Objects, ObjectsConfig};
use std::net::SocketAddr;
use std::sync::Arc;

const CORS: &str = r#"<CORSConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
 <CORSRule><ID>web</ID>
  <AllowedOrigin>https://app.example.com</AllowedOrigin>
  <AllowedMethod>PUT</AllowedMethod><AllowedMethod>GET</AllowedMethod>
  <AllowedHeader>Content-Type</AllowedHeader>
  <ExposeHeader>ETag</ExposeHeader>
  <MaxAgeSeconds>300</MaxAgeSeconds>
 </CORSRule>
</CORSConfiguration>"#;

const LIFECYCLE: &str = r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
 <Rule><ID>tmp</ID><Filter><Prefix>tmp/</Prefix></Filter><Status>Enabled</Status>
  <Expiration><Days>3</Days></Expiration>
  <AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload>
 </Rule>
 <Rule><ID>old</ID><Prefix>old/</Prefix><Status>Disabled</Status>
  <Expiration><Date>2030-01-01T00:00:00.000Z</Date></Expiration>
 </Rule>
</LifecycleConfiguration>"#;

async fn call(
    router: &mut axum::Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (Response<Body>, String) {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-length", body.len());
    if !headers.iter().any(|(k, _)| *k == "host") {
        b = b.header("host", "127.0.0.1:9000");
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut req = b.body(Body::from(body.to_string())).unwrap();
    let peer: SocketAddr = "192.0.2.9:50000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = tower_service::Service::call(router, req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (Response::from_parts(parts, Body::empty()), text)
}

fn header<'a>(resp: &'a Response<Body>, name: &str) -> Option<&'a str> {
    resp.headers().get(name).map(|v| v.to_str().unwrap())
}

fn setup() -> (tempfile::TempDir, Objects) {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::open_sqlite(dir.path(), ObjectsConfig::default()).unwrap();
    (dir, objects)
}

#[tokio::test]
async fn cors_xml_round_trip_preflight_and_actual_requests() {
    let (_dir, objects) = setup();
    let mut router = nimbus_s3::router(objects, None);
    call(&mut router, Method::PUT, "/web", &[], "").await;
    let (resp, xml) = call(&mut router, Method::GET, "/web?cors", &[], "").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(
        xml.contains("<Code>NoSuchCORSConfiguration</Code>"),
        "{xml}"
    );
    let (resp, text) = call(&mut router, Method::PUT, "/web?cors", &[], CORS).await;
    assert_eq!(resp.status(), StatusCode::OK, "{text}");
    let (_, xml) = call(&mut router, Method::GET, "/web?cors", &[], "").await;
    for part in [
        "<CORSRule>",
        "<ID>web</ID>",
        "<AllowedOrigin>https://app.example.com</AllowedOrigin>",
        "<AllowedMethod>PUT</AllowedMethod>",
        "<AllowedHeader>Content-Type</AllowedHeader>",
        "<ExposeHeader>ETag</ExposeHeader>",
        "<MaxAgeSeconds>300</MaxAgeSeconds>",
    ] {
        assert!(xml.contains(part), "{part} missing from {xml}");
    }
    let (resp, xml) = call(
        &mut router,
        Method::PUT,
        "/web?cors",
        &[],
        "<CORSConfiguration>",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{xml}");
    assert!(xml.contains("<Code>MalformedXML</Code>"), "{xml}");

    let pre = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "Content-Type"),
    ];
    let (resp, _) = call(&mut router, Method::OPTIONS, "/web/a.txt", &pre, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&resp, "access-control-allow-methods"),
        Some("PUT, GET")
    );
    assert_eq!(
        header(&resp, "access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(header(&resp, "access-control-max-age"), Some("300"));
    assert_eq!(header(&resp, "access-control-expose-headers"), Some("ETag"));
    assert!(resp.headers().contains_key("x-amz-request-id"));
    // Virtual-hosted style names the bucket in the host.
    let mut req = pre.to_vec();
    req.push(("host", "web.localhost:9000"));
    let (resp, _) = call(&mut router, Method::OPTIONS, "/a.txt", &req, "").await;
    assert_eq!(resp.status(), StatusCode::OK);

    let denied = [
        ("origin", "https://evil.test"),
        ("access-control-request-method", "PUT"),
    ];
    let (resp, xml) = call(&mut router, Method::OPTIONS, "/web/a.txt", &denied, "").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(xml.contains("<Code>AccessForbidden</Code>"), "{xml}");
    let (resp, xml) = call(&mut router, Method::OPTIONS, "/web/a.txt", &[], "").await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{xml}");

    let (resp, _) = call(
        &mut router,
        Method::PUT,
        "/web/a.txt",
        &[("origin", "https://app.example.com")],
        "hello",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        header(&resp, "access-control-allow-origin"),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&resp, "access-control-allow-credentials"),
        Some("true")
    );
    // DELETE is not allowed by the rule: no CORS headers.
    let (resp, _) = call(
        &mut router,
        Method::DELETE,
        "/web/a.txt",
        &[("origin", "https://app.example.com")],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert!(header(&resp, "access-control-allow-origin").is_none());

    let (resp, _) = call(&mut router, Method::DELETE, "/web?cors", &[], "").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (resp, xml) = call(&mut router, Method::OPTIONS, "/web/a.txt", &pre, "").await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(xml.contains("CORS is not enabled for this bucket"), "{xml}");
}

struct NoKeys;

impl nimbus_s3::KeyLookup for NoKeys {
    fn lookup(&self, _: &str) -> Option<(String, nimbus_auth::Policy)> {
        None
    }
}

#[tokio::test]
async fn preflights_need_no_signature_with_auth_on() {
    let (_dir, objects) = setup();
    objects.create_bucket("web").await.unwrap();
    objects
        .set_cors_config(
            "web",
            nimbus_objects::CorsConfig {
                rules: vec![nimbus_objects::CorsRule {
                    allowed_origins: vec!["*".into()],
                    allowed_methods: vec!["GET".into()],
                    ..Default::default()
                }],
            },
        )
        .await
        .unwrap();
    let mut router = nimbus_s3::router(objects, Some(Arc::new(NoKeys)));
    let pre = [
        ("origin", "https://any.example"),
        ("access-control-request-method", "GET"),
    ];
    let (resp, _) = call(&mut router, Method::OPTIONS, "/web/k", &pre, "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
    assert!(header(&resp, "access-control-allow-credentials").is_none());
    // The actual request still needs a signature, and its error carries the CORS headers.
    let (resp, xml) = call(
        &mut router,
        Method::GET,
        "/web/k",
        &[("origin", "https://any.example")],
        "",
    )
    .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{xml}");
    assert!(xml.contains("<Code>AccessDenied</Code>"), "{xml}");
    assert_eq!(header(&resp, "access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn lifecycle_xml_round_trip_and_refusals() {
    let (_dir, objects) = setup();
    let mut router = nimbus_s3::router(objects, None);
    call(&mut router, Method::PUT, "/lcb", &[], "").await;
    let (resp, xml) = call(&mut router, Method::GET, "/lcb?lifecycle", &[], "").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(
        xml.contains("<Code>NoSuchLifecycleConfiguration</Code>"),
        "{xml}"
    );
    let (resp, text) = call(&mut router, Method::PUT, "/lcb?lifecycle", &[], LIFECYCLE).await;
    assert_eq!(resp.status(), StatusCode::OK, "{text}");
    let (_, xml) = call(&mut router, Method::GET, "/lcb?lifecycle", &[], "").await;
    for part in [
        "<ID>tmp</ID>",
        "<Filter><Prefix>tmp/</Prefix></Filter>",
        "<Status>Enabled</Status>",
        "<Days>3</Days>",
        "<DaysAfterInitiation>1</DaysAfterInitiation>",
        "<ID>old</ID>",
        "<Prefix>old/</Prefix>",
        "<Status>Disabled</Status>",
        "<Date>2030-01-01T00:00:00",
    ] {
        assert!(xml.contains(part), "{part} missing from {xml}");
    }
    let transition = r#"<LifecycleConfiguration><Rule><ID>t</ID><Filter></Filter>
        <Status>Enabled</Status><Transition><Days>30</Days><StorageClass>GLACIER</StorageClass>
        </Transition></Rule></LifecycleConfiguration>"#;
    let (resp, xml) = call(&mut router, Method::PUT, "/lcb?lifecycle", &[], transition).await;
    assert_eq!(resp.status(), StatusCode::NOT_IMPLEMENTED, "{xml}");
    assert!(xml.contains("<Code>NotImplemented</Code>"), "{xml}");
    let not_midnight = r#"<LifecycleConfiguration><Rule><ID>t</ID><Filter></Filter>
        <Status>Enabled</Status><Expiration><Date>2030-01-01T12:00:00Z</Date></Expiration>
        </Rule></LifecycleConfiguration>"#;
    let (resp, xml) = call(
        &mut router,
        Method::PUT,
        "/lcb?lifecycle",
        &[],
        not_midnight,
    )
    .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{xml}");
    assert!(xml.contains("<Code>InvalidArgument</Code>"), "{xml}");
    let (resp, _) = call(&mut router, Method::DELETE, "/lcb?lifecycle", &[], "").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (resp, _) = call(&mut router, Method::GET, "/lcb?lifecycle", &[], "").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}
