//! Bucket notifications through the S3 router in process (auth off): the configuration's
//! XML both ways, and a PUT's record quoting the response's request id, the requester and
//! the client's address.

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use nimbus_objects::{Objects, ObjectsConfig, Target};
use std::net::SocketAddr;

const CONFIG: &str = r#"<NotificationConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
 <CloudFunctionConfiguration><Id>thumbs</Id>
  <CloudFunction>arn:aws:lambda:us-east-1:000000000000:function:thumbs</CloudFunction>
  <Event>s3:ObjectCreated:*</Event>
  <Filter><S3Key><FilterRule><Name>prefix</Name><Value>in/</Value></FilterRule></S3Key></Filter>
 </CloudFunctionConfiguration>
 <QueueConfiguration><Id>gone</Id><Queue>arn:aws:sqs:us-east-1:000000000000:gone</Queue>
  <Event>s3:ObjectRemoved:*</Event></QueueConfiguration>
 <EventBridgeConfiguration/>
</NotificationConfiguration>"#;

async fn call(
    router: &mut axum::Router,
    method: Method,
    uri: &str,
    body: &str,
) -> (Response<Body>, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "127.0.0.1:9000")
        .header("content-length", body.len())
        .body(Body::from(body.to_string()))
        .unwrap();
    let peer: SocketAddr = "192.0.2.9:50000".parse().unwrap();
    req.extensions_mut().insert(ConnectInfo(peer));
    let resp = tower_service::Service::call(router, req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (Response::from_parts(parts, Body::empty()), text)
}

fn request_id(resp: &Response<Body>) -> String {
    let id = resp.headers()["x-amz-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 16);
    assert!(resp.headers().contains_key("x-amz-id-2"));
    id
}

#[tokio::test]
async fn configuration_xml_round_trip_and_records_quote_the_request() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::open_sqlite(dir.path(), ObjectsConfig::default()).unwrap();
    let mut router = nimbus_s3::router(objects.clone(), None);

    let (resp, _) = call(&mut router, Method::PUT, "/photos", "").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let (resp, text) = call(&mut router, Method::PUT, "/photos?notification", CONFIG).await;
    assert_eq!(resp.status(), StatusCode::OK, "{text}");
    let put_config_id = request_id(&resp);

    let (resp, xml) = call(&mut router, Method::GET, "/photos?notification", "").await;
    assert_eq!(resp.status(), StatusCode::OK, "{xml}");
    for part in [
        "<CloudFunctionConfiguration>",
        "<Id>thumbs</Id>",
        "<CloudFunction>arn:aws:lambda:us-east-1:000000000000:function:thumbs</CloudFunction>",
        "<Event>s3:ObjectCreated:*</Event>",
        "<Name>Prefix</Name><Value>in/</Value>",
        "<Queue>arn:aws:sqs:us-east-1:000000000000:gone</Queue>",
        "<EventBridgeConfiguration",
    ] {
        assert!(xml.contains(part), "{part} missing from {xml}");
    }

    // The queue's test event quotes the PUT ?notification request.
    let rows = objects.notifications_pending(0, 10).await.unwrap();
    assert_eq!(rows.len(), 1);
    let test: serde_json::Value = serde_json::from_str(&rows[0].payload).unwrap();
    assert_eq!(test["Event"], "s3:TestEvent");
    assert_eq!(test["RequestId"], put_config_id.as_str());
    objects.notifications_done(&[rows[0].seq]).await.unwrap();

    let (resp, text) = call(&mut router, Method::PUT, "/photos/in/a%20b.jpg", "hello").await;
    assert_eq!(resp.status(), StatusCode::OK, "{text}");
    let put_id = request_id(&resp);
    let rows = objects.notifications_pending(0, 10).await.unwrap();
    assert_eq!(rows.len(), 2, "the function and the bus");
    assert!(matches!(&rows[0].target, Target::Function { name, .. } if name == "thumbs"));
    let r: serde_json::Value = serde_json::from_str(&rows[0].payload).unwrap();
    let r = &r["Records"][0];
    assert_eq!(r["eventName"], "ObjectCreated:Put");
    assert_eq!(r["responseElements"]["x-amz-request-id"], put_id.as_str());
    assert_eq!(
        r["responseElements"]["x-amz-id-2"],
        resp.headers()["x-amz-id-2"].to_str().unwrap()
    );
    assert_eq!(r["userIdentity"]["principalId"], "anonymous");
    assert_eq!(r["requestParameters"]["sourceIPAddress"], "192.0.2.9");
    assert_eq!(r["s3"]["object"]["key"], "in/a+b.jpg");
    assert_eq!(r["s3"]["object"]["size"], 5);
    assert_eq!(rows[1].target, Target::EventBridge);
}

#[tokio::test]
async fn topics_and_invalid_configurations_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let objects = Objects::open_sqlite(dir.path(), ObjectsConfig::default()).unwrap();
    let mut router = nimbus_s3::router(objects.clone(), None);
    call(&mut router, Method::PUT, "/photos", "").await;
    let topic = r#"<NotificationConfiguration><TopicConfiguration>
        <Topic>arn:aws:sns:us-east-1:000000000000:t</Topic><Event>s3:ObjectCreated:*</Event>
        </TopicConfiguration></NotificationConfiguration>"#;
    let (resp, text) = call(&mut router, Method::PUT, "/photos?notification", topic).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(text.contains("<Code>InvalidArgument</Code>"), "{text}");
    assert!(text.contains("Nimbus has no SNS"), "{text}");
    let bad_event = CONFIG.replace("s3:ObjectCreated:*", "s3:ObjectCreated:Bogus");
    let (resp, text) = call(&mut router, Method::PUT, "/photos?notification", &bad_event).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        text.contains("The event is not supported for notifications"),
        "{text}"
    );
    let (resp, _) = call(&mut router, Method::GET, "/nope?notification", "").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert!(objects
        .notifications_pending(0, 10)
        .await
        .unwrap()
        .is_empty());
}
