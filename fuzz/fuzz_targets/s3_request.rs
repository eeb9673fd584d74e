//! Arbitrary bytes as an S3 request through the real S3 router (`nimbus_s3::router` over an
//! object store in a temporary directory, authentication off): the first byte picks the
//! request's shape, the rest up to the first newline is a header value, a path or a host,
//! and what follows is the body. Covers what Nimbus parses itself or through `s3s`: the XML
//! of notification, lifecycle, CORS and tagging configurations, DeleteObjects and
//! CompleteMultipartUpload; `Range`, conditional and `x-amz-copy-source-range` headers;
//! checksum headers; key and bucket names; the virtual-host parser; CORS preflights.
//! Nothing may panic, and every answer must be a well-formed HTTP status.
#![no_main]

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use nimbus_objects::{Objects, ObjectsConfig};
use std::net::SocketAddr;
use std::sync::OnceLock;
use tower_service::Service;

struct World {
    rt: tokio::runtime::Runtime,
    router: axum::Router,
    upload_id: String,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let objects = Objects::open_sqlite(dir.path(), ObjectsConfig::default()).expect("store");
        let upload_id = rt.block_on(async {
            for b in ["fuzz-bucket", "fuzz-other"] {
                objects.create_bucket(b).await.expect("bucket");
            }
            let body = futures_util::stream::iter([Ok::<_, std::io::Error>(
                bytes::Bytes::from_static(b"0123456789abcdef"),
            )]);
            objects
                .put_object("fuzz-bucket", "obj", body, Default::default())
                .await
                .expect("object");
            objects
                .create_upload("fuzz-bucket", "mpu", Default::default())
                .await
                .expect("upload")
                .upload_id
        });
        World {
            rt,
            router: nimbus_s3::router(objects, None),
            upload_id,
            _dir: dir,
        }
    })
}

/// One request shape: method, path and query, and the header the fuzzed line goes into
/// (`None`: the line is the path and query itself).
const SHAPES: &[(&str, &str, Option<&str>)] = &[
    ("PUT", "/fuzz-bucket?notification", Some("x-amz-skip-destination-validation")),
    ("PUT", "/fuzz-bucket?lifecycle", Some("content-type")),
    ("PUT", "/fuzz-bucket?cors", Some("content-type")),
    ("PUT", "/fuzz-bucket?tagging", Some("content-type")),
    ("POST", "/fuzz-other?delete", Some("content-md5")),
    ("POST", "/fuzz-bucket/mpu?uploadId=UPLOAD", Some("if-none-match")),
    ("GET", "/fuzz-bucket/obj", Some("range")),
    ("GET", "/fuzz-bucket/obj", Some("if-match")),
    ("GET", "/fuzz-bucket/obj", Some("if-modified-since")),
    ("GET", "/fuzz-bucket/obj?partNumber=1", Some("x-amz-checksum-mode")),
    ("HEAD", "/fuzz-bucket/obj", Some("if-none-match")),
    ("PUT", "/fuzz-bucket/put", Some("x-amz-checksum-crc32")),
    ("PUT", "/fuzz-bucket/put", Some("x-amz-tagging")),
    ("PUT", "/fuzz-bucket/put", Some("x-amz-sdk-checksum-algorithm")),
    ("PUT", "/fuzz-bucket/copy", Some("x-amz-copy-source")),
    ("PUT", "/fuzz-bucket/mpu?partNumber=1&uploadId=UPLOAD", Some("x-amz-copy-source-range")),
    ("GET", "/", Some("host")),
    ("OPTIONS", "/fuzz-bucket/obj", Some("origin")),
    ("GET", "", None),
    ("PUT", "", None),
    ("DELETE", "", None),
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let (line, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let world = world();
    let (method, path, header) = SHAPES[usize::from(first) % SHAPES.len()];
    let path = path.replace("UPLOAD", &world.upload_id);
    let uri = match header {
        Some(_) => path,
        None => match std::str::from_utf8(line) {
            Ok(p) if p.starts_with('/') => p.to_string(),
            _ => return,
        },
    };
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri.as_str())
        .header("content-length", body.len());
    if header != Some("host") {
        b = b.header("host", "127.0.0.1:9000");
    }
    if method == "OPTIONS" {
        b = b.header("access-control-request-method", "PUT");
    }
    if let Some(name) = header {
        b = b.header(name, line);
    }
    let Ok(mut req) = b.body(Body::from(body.to_vec())) else {
        return; // not a valid URI or header value: hyper would refuse it first
    };
    let peer: SocketAddr = "192.0.2.9:50000".parse().expect("address");
    req.extensions_mut().insert(ConnectInfo(peer));
    let mut router = world.router.clone();
    world.rt.block_on(async move {
        let resp = router.call(req).await.expect("infallible");
        assert!(resp.status().as_u16() >= 200);
        let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
    });
});
