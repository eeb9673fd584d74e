//! Arbitrary bytes as an HTTP request (method, path, query, headers, body) mapped to the API
//! Gateway v2.0 event a function receives, and as a function's output mapped back to an HTTP
//! response: neither direction may panic, and the event must be JSON that names the method
//! and path it was given.
#![no_main]

use std::collections::BTreeMap;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use libfuzzer_sys::fuzz_target;
use nimbus_gateway::http_event::{from_v2_response, to_v2_event, HttpRequestParts};

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "PROPFIND",
];

fuzz_target!(|data: &[u8]| {
    // The function's output direction takes the bytes as they are.
    let _ = from_v2_response(data);

    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let method = Method::from_bytes(METHODS[usize::from(first) % METHODS.len()].as_bytes())
        .expect("static method");
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.splitn(4, '\n');
    let path = parts.next().unwrap_or("/");
    let query = parts.next().filter(|q| !q.is_empty());
    let header_block = parts.next().unwrap_or("");
    let body = parts.next().unwrap_or("").as_bytes();
    let mut headers = HeaderMap::new();
    for line in header_block.split('\r') {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let mut params = BTreeMap::new();
    params.insert("name".to_string(), path.to_string());
    let req = HttpRequestParts {
        method: &method,
        raw_path: path,
        raw_query: query,
        headers: &headers,
        body,
        source_ip: "127.0.0.1".into(),
        route_key: "$default",
        path_parameters: Some(&params),
        request_id: "00000000-0000-0000-0000-000000000000",
        api_id: "fuzz",
        domain_name: "127.0.0.1:8080",
        now: time::OffsetDateTime::UNIX_EPOCH,
    };
    let event = to_v2_event(&req);
    // Checked as syntax only: parsing back into a `serde_json::Value` would not be a fair
    // test, because with serde_json's `raw_value` feature (enabled by axum) an object key
    // `$serde_json::private::RawValue` makes `Value` reparse that member's string as JSON —
    // a query `?$serde_json::private::RawValue=` round-trips to an error although the bytes
    // are valid JSON (fuzz/seeds/http_event/raw-value-key.txt).
    let bytes = serde_json::to_vec(&event).expect("serializable");
    serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).expect("the event is JSON");
    assert_eq!(event["requestContext"]["http"]["method"], method.as_str());
    assert_eq!(event["rawPath"], path);
});
