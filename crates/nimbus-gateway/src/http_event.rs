//! Mapping between HTTP requests/responses and the API Gateway HTTP API v2.0
//! (function URL) payload format.
//!
//! Everything here is pure: no I/O, no clocks, no randomness. The caller supplies the
//! request id, the current time and the source address in [`HttpRequestParts`].
//!
//! * [`to_v2_event`] turns an incoming HTTP request into the v2.0 event JSON that is
//!   handed to the function.
//! * [`from_v2_response`] turns the function's raw output bytes into the HTTP response
//!   to send back (status, headers, body), following Lambda function URL rules.

use std::collections::BTreeMap;

use axum::http::{self, header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Map, Value};

/// Account id reported in `requestContext.accountId`.
pub const ACCOUNT_ID: &str = "000000000000";

/// Everything needed to build a v2.0 event for one HTTP request.
#[derive(Debug, Clone)]
pub struct HttpRequestParts<'a> {
    pub method: &'a http::Method,
    /// Path as the function should see it, e.g. `/my/path` (already stripped of the
    /// `/fn/NAME` prefix by the caller).
    pub raw_path: &'a str,
    /// Query string without the leading `?`.
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: String,
    /// `$default` for function URLs, or e.g. `GET /hello/{name}` for routes.
    pub route_key: &'a str,
    /// Route parameters; `pathParameters` is emitted only when this is `Some` and non-empty.
    pub path_parameters: Option<&'a BTreeMap<String, String>>,
    pub request_id: &'a str,
    /// For function URLs: the function name; for routes: `nimbus`.
    pub api_id: &'a str,
    /// The Host header value, or the listener address (e.g. `127.0.0.1:8080`).
    pub domain_name: &'a str,
    pub now: time::OffsetDateTime,
}

/// The HTTP response derived from a function's output.
#[derive(Debug, Clone)]
pub struct HttpResponseParts {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a function's v2.0 response could not be turned into an HTTP response.
/// The caller answers 502 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("invalid statusCode in function response: {0} (expected an integer in 100..=599)")]
    InvalidStatusCode(String),
    #[error("invalid headers in function response: {0}")]
    InvalidHeaders(String),
    #[error("invalid cookies in function response: {0}")]
    InvalidCookies(String),
    #[error("invalid body in function response: {0}")]
    InvalidBody(String),
    #[error("function response has isBase64Encoded=true but body is not valid base64: {0}")]
    InvalidBase64(String),
}

/// `12/Mar/2020:19:03:58 +0000`
const REQUEST_TIME_FORMAT: &[time::format_description::FormatItem<'static>] = time::macros::format_description!(
    "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
);

/// Builds the API Gateway HTTP API v2.0 event for a request.
///
/// Never emits a top-level `httpMethod` (Rust's `lambda_http` would then treat the
/// event as v1); the method is in `requestContext.http.method`.
pub fn to_v2_event(req: &HttpRequestParts) -> Value {
    let mut headers = Map::new();
    let mut cookies: Vec<Value> = Vec::new();
    for name in req.headers.keys() {
        if name == header::COOKIE {
            for value in req.headers.get_all(name) {
                let value = String::from_utf8_lossy(value.as_bytes());
                cookies.extend(
                    value
                        .split(';')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(|c| Value::String(c.to_owned())),
                );
            }
            continue;
        }
        // `HeaderName` is always lowercase already.
        let joined = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(",");
        headers.insert(name.as_str().to_owned(), Value::String(joined));
    }

    let user_agent = headers
        .get(header::USER_AGENT.as_str())
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();

    let raw_query = req.raw_query.unwrap_or("");
    let now_utc = req.now.to_offset(time::UtcOffset::UTC);
    let time_text = now_utc
        .format(REQUEST_TIME_FORMAT)
        .unwrap_or_else(|_| String::from("01/Jan/1970:00:00:00 +0000"));
    let time_epoch_ms = i64::try_from(now_utc.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let domain_prefix = req.domain_name.split('.').next().unwrap_or(req.domain_name);

    let mut event = Map::new();
    event.insert("version".into(), "2.0".into());
    event.insert("routeKey".into(), req.route_key.into());
    event.insert("rawPath".into(), req.raw_path.into());
    event.insert("rawQueryString".into(), raw_query.into());
    if !cookies.is_empty() {
        event.insert("cookies".into(), Value::Array(cookies));
    }
    event.insert("headers".into(), Value::Object(headers));
    if !raw_query.is_empty() {
        let params = parse_query(raw_query);
        if !params.is_empty() {
            event.insert("queryStringParameters".into(), Value::Object(params));
        }
    }
    if let Some(params) = req.path_parameters {
        if !params.is_empty() {
            let params = params
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            event.insert("pathParameters".into(), Value::Object(params));
        }
    }
    event.insert(
        "requestContext".into(),
        serde_json::json!({
            "accountId": ACCOUNT_ID,
            "apiId": req.api_id,
            "domainName": req.domain_name,
            "domainPrefix": domain_prefix,
            "http": {
                "method": req.method.as_str(),
                "path": req.raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": req.source_ip,
                "userAgent": user_agent,
            },
            "requestId": req.request_id,
            "routeKey": req.route_key,
            "stage": "$default",
            "time": time_text,
            "timeEpoch": time_epoch_ms,
        }),
    );

    let is_base64 = if req.body.is_empty() {
        false
    } else {
        match body_as_text(req.headers, req.body) {
            Some(text) => {
                event.insert("body".into(), Value::String(text.to_owned()));
                false
            }
            None => {
                event.insert("body".into(), Value::String(BASE64.encode(req.body)));
                true
            }
        }
    };
    event.insert("isBase64Encoded".into(), Value::Bool(is_base64));
    Value::Object(event)
}

/// Returns the body as text when it is valid UTF-8 and the content type is textual
/// (or absent); `None` means it must be base64-encoded.
fn body_as_text<'b>(headers: &HeaderMap, body: &'b [u8]) -> Option<&'b str> {
    let text = std::str::from_utf8(body).ok()?;
    match headers.get(header::CONTENT_TYPE) {
        None => Some(text),
        Some(ct) => {
            let ct = ct.to_str().ok()?;
            is_textual_content_type(ct).then_some(text)
        }
    }
}

/// Whether a `Content-Type` value denotes text that can be passed without base64.
fn is_textual_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    if subtype.is_empty() {
        return false;
    }
    match kind {
        "text" => true,
        "application" => {
            matches!(
                subtype,
                "json" | "xml" | "javascript" | "x-www-form-urlencoded"
            ) || subtype.ends_with("+json")
                || subtype.ends_with("+xml")
        }
        _ => false,
    }
}

/// Parses a raw query string into v2 `queryStringParameters`: names and values are
/// percent-decoded with `+` as space, repeated names are comma-joined in order.
fn parse_query(raw: &str) -> Map<String, Value> {
    let mut params: Map<String, Value> = Map::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name);
        let value = form_decode(value);
        match params.get_mut(&name) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                params.insert(name, Value::String(value));
            }
        }
    }
    params
}

/// `application/x-www-form-urlencoded` decoding of one component. Malformed `%`
/// escapes are kept literally; invalid UTF-8 is replaced lossily.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' if i + 2 < bytes.len() => match (hex_val(bytes[i + 1]), hex_val(bytes[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Maps a function's raw output to an HTTP response, following Lambda function URL
/// rules:
///
/// * A JSON object with a `statusCode` key is a structured response: `statusCode`
///   (integer 100..=599), `headers` (object; string, number and bool values),
///   `cookies` (array of strings, one `set-cookie` each), `body` (string, base64-decoded
///   when `isBase64Encoded` is true). `multiValueHeaders` is ignored. Without a
///   content-type header, `content-type: application/json` is added.
/// * Anything else (other JSON values, or bytes that are not JSON at all) is passed
///   through unchanged as a 200 with `content-type: application/json`.
pub fn from_v2_response(output: &[u8]) -> Result<HttpResponseParts, MappingError> {
    let obj = match serde_json::from_slice::<Value>(output) {
        Ok(Value::Object(obj)) if obj.contains_key("statusCode") => obj,
        _ => return Ok(passthrough(output)),
    };

    let status = parse_status(&obj["statusCode"])?;

    let mut headers = HeaderMap::new();
    match obj.get("headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (name, value) in map {
                let text = match value {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    Value::Null => continue,
                    other => {
                        return Err(MappingError::InvalidHeaders(format!(
                            "value of header {name:?} must be a string, number or bool, got {}",
                            json_type(other)
                        )))
                    }
                };
                let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    MappingError::InvalidHeaders(format!("invalid header name {name:?}"))
                })?;
                let header_value = HeaderValue::from_str(&text).map_err(|_| {
                    MappingError::InvalidHeaders(format!("invalid value for header {name:?}"))
                })?;
                headers.append(header_name, header_value);
            }
        }
        Some(other) => {
            return Err(MappingError::InvalidHeaders(format!(
                "expected an object, got {}",
                json_type(other)
            )))
        }
    }

    match obj.get("cookies") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                let Value::String(cookie) = item else {
                    return Err(MappingError::InvalidCookies(format!(
                        "each cookie must be a string, got {}",
                        json_type(item)
                    )));
                };
                let value = HeaderValue::from_str(cookie).map_err(|_| {
                    MappingError::InvalidCookies(format!("invalid cookie value {cookie:?}"))
                })?;
                headers.append(header::SET_COOKIE, value);
            }
        }
        Some(other) => {
            return Err(MappingError::InvalidCookies(format!(
                "expected an array of strings, got {}",
                json_type(other)
            )))
        }
    }

    let is_base64 = match obj.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(MappingError::InvalidBody(format!(
                "isBase64Encoded must be a boolean, got {}",
                json_type(other)
            )))
        }
    };

    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if is_base64 => Bytes::from(
            BASE64
                .decode(s.as_bytes())
                .map_err(|e| MappingError::InvalidBase64(e.to_string()))?,
        ),
        Some(Value::String(s)) => Bytes::from(s.clone().into_bytes()),
        Some(other) => {
            return Err(MappingError::InvalidBody(format!(
                "body must be a string, got {}",
                json_type(other)
            )))
        }
    };

    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }

    Ok(HttpResponseParts {
        status,
        headers,
        body,
    })
}

fn passthrough(output: &[u8]) -> HttpResponseParts {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    HttpResponseParts {
        status: StatusCode::OK,
        headers,
        body: Bytes::copy_from_slice(output),
    }
}

fn parse_status(value: &Value) -> Result<StatusCode, MappingError> {
    let code = value
        .as_u64()
        .filter(|c| (100..=599).contains(c))
        .and_then(|c| u16::try_from(c).ok())
        .ok_or_else(|| MappingError::InvalidStatusCode(value.to_string()))?;
    StatusCode::from_u16(code).map_err(|_| MappingError::InvalidStatusCode(value.to_string()))
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Turns a streamed function response into the HTTP response to send back.
///
/// `prelude` is the JSON that came before the 8 NUL bytes of the HTTP-integration format
/// (`{"statusCode","headers","cookies"}`, as written by Node's
/// `awslambda.HttpResponseStream.from` and Rust's `lambda_runtime`): a missing
/// `statusCode` means 200, header values may be strings, numbers, booleans or arrays of
/// them (one header line each), each cookie becomes a `Set-Cookie`. Without a prelude
/// the body is sent as is with the content type the runtime declared. The content type
/// defaults to `application/octet-stream`.
pub fn from_streamed_response(
    content_type: Option<&str>,
    prelude: Option<&[u8]>,
    body: Bytes,
) -> Result<HttpResponseParts, MappingError> {
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    if let Some(prelude) = prelude {
        let obj = match serde_json::from_slice::<Value>(prelude) {
            Ok(Value::Object(obj)) => obj,
            Ok(other) => {
                return Err(MappingError::InvalidHeaders(format!(
                    "the streamed response prelude must be a JSON object, got {}",
                    json_type(&other)
                )))
            }
            Err(e) => {
                return Err(MappingError::InvalidHeaders(format!(
                    "the streamed response prelude is not JSON: {e}"
                )))
            }
        };
        if let Some(code) = obj.get("statusCode").filter(|v| !v.is_null()) {
            status = parse_status(code)?;
        }
        if let Some(map) = obj.get("headers").filter(|v| !v.is_null()) {
            let Value::Object(map) = map else {
                return Err(MappingError::InvalidHeaders(format!(
                    "expected an object, got {}",
                    json_type(map)
                )));
            };
            for (name, value) in map {
                let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    MappingError::InvalidHeaders(format!("invalid header name {name:?}"))
                })?;
                let values = match value {
                    Value::Array(items) => items.iter().collect(),
                    one => vec![one],
                };
                for v in values {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        Value::Null => continue,
                        other => {
                            return Err(MappingError::InvalidHeaders(format!(
                                "value of header {name:?} must be a string, number or bool, got {}",
                                json_type(other)
                            )))
                        }
                    };
                    let header_value = HeaderValue::from_str(&text).map_err(|_| {
                        MappingError::InvalidHeaders(format!("invalid value for header {name:?}"))
                    })?;
                    headers.append(header_name.clone(), header_value);
                }
            }
        }
        match obj.get("cookies") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let Value::String(cookie) = item else {
                        return Err(MappingError::InvalidCookies(format!(
                            "each cookie must be a string, got {}",
                            json_type(item)
                        )));
                    };
                    let value = HeaderValue::from_str(cookie).map_err(|_| {
                        MappingError::InvalidCookies(format!("invalid cookie value {cookie:?}"))
                    })?;
                    headers.append(header::SET_COOKIE, value);
                }
            }
            Some(other) => {
                return Err(MappingError::InvalidCookies(format!(
                    "expected an array of strings, got {}",
                    json_type(other)
                )))
            }
        }
    } else if let Some(ct) = content_type.and_then(|ct| HeaderValue::from_str(ct).ok()) {
        headers.insert(header::CONTENT_TYPE, ct);
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    Ok(HttpResponseParts {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hmap(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// 2020-03-12T19:03:58.390Z
    fn fixed_now() -> time::OffsetDateTime {
        time::macros::datetime!(2020-03-12 19:03:58.390 UTC)
    }

    fn event(
        method: &http::Method,
        query: Option<&str>,
        headers: &HeaderMap,
        body: &[u8],
        path_params: Option<&BTreeMap<String, String>>,
    ) -> Value {
        to_v2_event(&HttpRequestParts {
            method,
            raw_path: "/my/path",
            raw_query: query,
            headers,
            body,
            source_ip: "1.2.3.4".to_owned(),
            route_key: "$default",
            path_parameters: path_params,
            request_id: "req-123",
            api_id: "hello",
            domain_name: "hello.lambda-url.local",
            now: fixed_now(),
        })
    }

    fn simple(headers: &HeaderMap, body: &[u8]) -> Value {
        event(&http::Method::POST, None, headers, body, None)
    }

    // ---------- request -> event ----------

    #[test]
    fn repeated_headers_are_comma_joined_and_lowercase() {
        let h = hmap(&[
            ("X-Multi", "a"),
            ("x-multi", "b"),
            ("X-Multi", "c"),
            ("Host", "example.com"),
        ]);
        let ev = simple(&h, b"");
        assert_eq!(ev["headers"]["x-multi"], "a,b,c");
        assert_eq!(ev["headers"]["host"], "example.com");
        assert!(ev["headers"].get("X-Multi").is_none());
    }

    #[test]
    fn cookies_are_extracted_and_removed_from_headers() {
        let h = hmap(&[
            ("Cookie", "c1=v1; c2=v2"),
            ("cookie", "c3=v3"),
            ("x-other", "1"),
        ]);
        let ev = simple(&h, b"");
        assert_eq!(ev["cookies"], json!(["c1=v1", "c2=v2", "c3=v3"]));
        assert!(ev["headers"].get("cookie").is_none());
        assert_eq!(ev["headers"]["x-other"], "1");
    }

    #[test]
    fn cookies_omitted_when_none() {
        let ev = simple(&hmap(&[("x-a", "1")]), b"");
        assert!(ev.get("cookies").is_none());
    }

    #[test]
    fn query_is_decoded_and_comma_joined_and_raw_preserved() {
        let raw = "a=1&a=2&b=hello+world&c=%41%2Cz&d&e=&%6Bey=x%2By&a=3&bad=%zz%4";
        let ev = event(&http::Method::GET, Some(raw), &HeaderMap::new(), b"", None);
        assert_eq!(ev["rawQueryString"], raw);
        assert_eq!(
            ev["queryStringParameters"],
            json!({
                "a": "1,2,3",
                "b": "hello world",
                "c": "A,z",
                "d": "",
                "e": "",
                "key": "x+y",
                "bad": "%zz%4",
            })
        );
    }

    #[test]
    fn no_query_means_empty_raw_and_no_parameters() {
        let ev = simple(&HeaderMap::new(), b"");
        assert_eq!(ev["rawQueryString"], "");
        assert!(ev.get("queryStringParameters").is_none());
        let ev = event(&http::Method::GET, Some(""), &HeaderMap::new(), b"", None);
        assert_eq!(ev["rawQueryString"], "");
        assert!(ev.get("queryStringParameters").is_none());
    }

    #[test]
    fn query_utf8_percent_decoding() {
        let ev = event(
            &http::Method::GET,
            Some("name=J%C3%BCrgen"),
            &HeaderMap::new(),
            b"",
            None,
        );
        assert_eq!(ev["queryStringParameters"]["name"], "Jürgen");
    }

    #[test]
    fn binary_body_is_base64_and_round_trips() {
        let body: Vec<u8> = (0..=255u8).collect();
        let h = hmap(&[("content-type", "application/octet-stream")]);
        let ev = simple(&h, &body);
        assert_eq!(ev["isBase64Encoded"], true);
        let decoded = BASE64.decode(ev["body"].as_str().unwrap()).unwrap();
        assert_eq!(decoded, body);
    }

    #[test]
    fn utf8_body_with_binary_content_type_is_base64() {
        let h = hmap(&[("content-type", "image/png")]);
        let ev = simple(&h, b"plain ascii");
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], BASE64.encode(b"plain ascii"));
    }

    #[test]
    fn invalid_utf8_with_text_content_type_is_base64() {
        let h = hmap(&[("content-type", "text/plain")]);
        let ev = simple(&h, &[0xff, 0xfe, b'a']);
        assert_eq!(ev["isBase64Encoded"], true);
        assert_eq!(ev["body"], BASE64.encode([0xff, 0xfe, b'a']));
    }

    #[test]
    fn json_body_is_text() {
        let h = hmap(&[("content-type", "application/json; charset=utf-8")]);
        let ev = simple(&h, br#"{"k":"v"}"#);
        assert_eq!(ev["isBase64Encoded"], false);
        assert_eq!(ev["body"], r#"{"k":"v"}"#);
    }

    #[test]
    fn textual_content_types() {
        for ct in [
            "text/plain",
            "TEXT/HTML; charset=utf-8",
            "application/json",
            "application/vnd.api+json",
            "application/xml",
            "application/atom+xml",
            "application/javascript",
            "application/x-www-form-urlencoded",
        ] {
            assert!(is_textual_content_type(ct), "{ct} should be textual");
        }
        for ct in [
            "application/octet-stream",
            "image/png",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "garbage",
            "",
        ] {
            assert!(!is_textual_content_type(ct), "{ct} should be binary");
        }
    }

    #[test]
    fn no_content_type_utf8_body_is_text() {
        let ev = simple(&HeaderMap::new(), "héllo".as_bytes());
        assert_eq!(ev["isBase64Encoded"], false);
        assert_eq!(ev["body"], "héllo");
    }

    #[test]
    fn empty_body_is_omitted() {
        let ev = simple(&hmap(&[("content-type", "application/json")]), b"");
        assert!(ev.get("body").is_none());
        assert_eq!(ev["isBase64Encoded"], false);
    }

    #[test]
    fn no_top_level_http_method_and_static_fields() {
        let ev = simple(&HeaderMap::new(), b"x");
        assert!(ev.get("httpMethod").is_none());
        assert!(ev.get("stageVariables").is_none());
        assert!(ev.get("pathParameters").is_none());
        assert_eq!(ev["version"], "2.0");
        assert_eq!(ev["routeKey"], "$default");
        assert_eq!(ev["rawPath"], "/my/path");
    }

    #[test]
    fn request_context_fields() {
        let h = hmap(&[("user-agent", "curl/8")]);
        let ev = event(&http::Method::PUT, Some("a=1"), &h, b"", None);
        assert_eq!(
            ev["requestContext"],
            json!({
                "accountId": "000000000000",
                "apiId": "hello",
                "domainName": "hello.lambda-url.local",
                "domainPrefix": "hello",
                "http": {
                    "method": "PUT",
                    "path": "/my/path",
                    "protocol": "HTTP/1.1",
                    "sourceIp": "1.2.3.4",
                    "userAgent": "curl/8",
                },
                "requestId": "req-123",
                "routeKey": "$default",
                "stage": "$default",
                "time": "12/Mar/2020:19:03:58 +0000",
                "timeEpoch": 1_584_039_838_390_i64,
            })
        );
    }

    #[test]
    fn request_context_defaults_and_non_utc_time() {
        let now = time::macros::datetime!(2021-01-02 03:04:05.006 +02:00);
        let ev = to_v2_event(&HttpRequestParts {
            method: &http::Method::GET,
            raw_path: "/",
            raw_query: None,
            headers: &HeaderMap::new(),
            body: b"",
            source_ip: "127.0.0.1".to_owned(),
            route_key: "GET /",
            path_parameters: None,
            request_id: "r",
            api_id: "nimbus",
            domain_name: "127.0.0.1:8080",
            now,
        });
        let ctx = &ev["requestContext"];
        assert_eq!(ctx["http"]["userAgent"], "");
        assert_eq!(ctx["domainPrefix"], "127");
        assert_eq!(ctx["time"], "02/Jan/2021:01:04:05 +0000");
        assert_eq!(ctx["timeEpoch"], 1_609_549_445_006_i64);
        assert_eq!(ctx["routeKey"], "GET /");
        assert_eq!(ev["routeKey"], "GET /");
    }

    #[test]
    fn path_parameters_only_when_given() {
        let mut p = BTreeMap::new();
        p.insert("name".to_owned(), "bob".to_owned());
        let ev = event(&http::Method::GET, None, &HeaderMap::new(), b"", Some(&p));
        assert_eq!(ev["pathParameters"], json!({"name": "bob"}));
    }

    // ---------- output -> response ----------

    fn header_values(r: &HttpResponseParts, name: &str) -> Vec<String> {
        r.headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn structured_response_with_cookies_gives_multiple_set_cookie() {
        let out =
            br#"{"statusCode":201,"headers":{"Content-Type":"text/plain","X-Num":5,"X-Bool":true},
            "body":"created","isBase64Encoded":false,
            "cookies":["a=b; Max-Age=60","c=d"],"multiValueHeaders":{}}"#;
        let r = from_v2_response(out).unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(
            header_values(&r, "set-cookie"),
            vec!["a=b; Max-Age=60", "c=d"]
        );
        assert_eq!(header_values(&r, "content-type"), vec!["text/plain"]);
        assert_eq!(header_values(&r, "x-num"), vec!["5"]);
        assert_eq!(header_values(&r, "x-bool"), vec!["true"]);
        assert_eq!(&r.body[..], b"created");
    }

    #[test]
    fn base64_response_body_is_decoded_exactly() {
        let bytes: Vec<u8> = (0..=255u8).rev().collect();
        let out = json!({
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": BASE64.encode(&bytes),
            "isBase64Encoded": true,
        });
        let r = from_v2_response(out.to_string().as_bytes()).unwrap();
        assert_eq!(&r.body[..], &bytes[..]);
        assert_eq!(
            header_values(&r, "content-type"),
            vec!["application/octet-stream"]
        );
    }

    #[test]
    fn invalid_base64_is_an_error() {
        let out = br#"{"statusCode":200,"body":"not base64!!","isBase64Encoded":true}"#;
        assert!(matches!(
            from_v2_response(out),
            Err(MappingError::InvalidBase64(_))
        ));
    }

    #[test]
    fn structured_response_defaults() {
        let r = from_v2_response(br#"{"statusCode":404}"#).unwrap();
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(header_values(&r, "content-type"), vec!["application/json"]);
        assert!(r.body.is_empty());
        assert!(r.headers.get("set-cookie").is_none());
    }

    #[test]
    fn plain_string_output_passes_through() {
        let r = from_v2_response(br#""Hello""#).unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(header_values(&r, "content-type"), vec!["application/json"]);
        assert_eq!(&r.body[..], br#""Hello""#);
    }

    #[test]
    fn object_without_status_code_passes_through() {
        for out in [&br#"{"a":1, "body":"x"}"#[..], b"[1]", b"null", b" 42 "] {
            let r = from_v2_response(out).unwrap();
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(header_values(&r, "content-type"), vec!["application/json"]);
            assert_eq!(&r.body[..], out);
        }
    }

    #[test]
    fn non_json_output_passes_through() {
        for out in [&b"not json {"[..], b"", &[0xff, 0x00, 0x10]] {
            let r = from_v2_response(out).unwrap();
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(header_values(&r, "content-type"), vec!["application/json"]);
            assert_eq!(&r.body[..], out);
        }
    }

    #[test]
    fn invalid_status_code_is_an_error() {
        for out in [
            &br#"{"statusCode":99}"#[..],
            br#"{"statusCode":600}"#,
            br#"{"statusCode":-1}"#,
            br#"{"statusCode":"abc"}"#,
            br#"{"statusCode":200.5}"#,
            br#"{"statusCode":null}"#,
            br#"{"statusCode":70000}"#,
        ] {
            let err = from_v2_response(out).unwrap_err();
            assert!(
                matches!(err, MappingError::InvalidStatusCode(_)),
                "{}",
                String::from_utf8_lossy(out)
            );
            assert!(err.to_string().contains("statusCode"));
        }
    }

    #[test]
    fn boundary_status_codes_accepted() {
        assert_eq!(
            from_v2_response(br#"{"statusCode":100}"#).unwrap().status,
            StatusCode::CONTINUE
        );
        assert_eq!(
            from_v2_response(br#"{"statusCode":599}"#)
                .unwrap()
                .status
                .as_u16(),
            599
        );
    }

    #[test]
    fn malformed_structured_fields_are_errors() {
        fn kind(e: &MappingError) -> &'static str {
            match e {
                MappingError::InvalidStatusCode(_) => "status",
                MappingError::InvalidHeaders(_) => "headers",
                MappingError::InvalidCookies(_) => "cookies",
                MappingError::InvalidBody(_) => "body",
                MappingError::InvalidBase64(_) => "base64",
            }
        }
        let cases: [(&[u8], &str); 6] = [
            (br#"{"statusCode":200,"headers":[1]}"#, "headers"),
            (br#"{"statusCode":200,"headers":{"x":{"a":1}}}"#, "headers"),
            (
                br#"{"statusCode":200,"headers":{"bad name":"v"}}"#,
                "headers",
            ),
            (br#"{"statusCode":200,"cookies":"a=b"}"#, "cookies"),
            (br#"{"statusCode":200,"body":{"a":1}}"#, "body"),
            (
                br#"{"statusCode":200,"body":"x","isBase64Encoded":"yes"}"#,
                "body",
            ),
        ];
        for (out, expected) in cases {
            let err = from_v2_response(out).unwrap_err();
            assert_eq!(
                kind(&err),
                expected,
                "{}: {err}",
                String::from_utf8_lossy(out)
            );
        }
    }

    #[test]
    fn streamed_response_with_prelude() {
        let prelude = br#"{"statusCode":201,"headers":{"content-type":"text/plain","x-multi":["a","b"],"x-n":5},"cookies":["a=1; Path=/","b=2"]}"#;
        let r = from_streamed_response(
            Some("application/vnd.awslambda.http-integration-response"),
            Some(prelude),
            Bytes::from_static(b"\x00raw body"),
        )
        .unwrap();
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers["content-type"], "text/plain");
        let multi: Vec<_> = r.headers.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["a", "b"]);
        assert_eq!(r.headers["x-n"], "5");
        let cookies: Vec<_> = r.headers.get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1; Path=/", "b=2"]);
        assert_eq!(&r.body[..], b"\x00raw body");
    }

    #[test]
    fn streamed_response_defaults() {
        let r = from_streamed_response(None, Some(b"{}"), Bytes::from_static(b"x")).unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["content-type"], "application/octet-stream");
        let r =
            from_streamed_response(Some("text/html"), None, Bytes::from_static(b"<p>")).unwrap();
        assert_eq!(r.headers["content-type"], "text/html");
        assert_eq!(&r.body[..], b"<p>");
        assert!(from_streamed_response(None, Some(b"not json"), Bytes::new()).is_err());
        assert!(
            from_streamed_response(None, Some(br#"{"statusCode":"x"}"#), Bytes::new()).is_err()
        );
    }
}
