//! Running a `wasi:http/proxy` component for one request: the request as it came (a
//! function URL or route) or built from the invocation's event (the Invoke API, async
//! invocations, schedules…), and its response read whole (up to the 6 MB a buffered
//! answer may have).

use crate::store::Host;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use nimbus_runtime::{HttpRequest, Invocation};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::WasiHttpView;

/// The answer a buffered response may be, at most (Lambda's 6 MB).
const RESPONSE_MAX: usize = 6 * 1024 * 1024;

/// The component's response.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// What can go wrong besides a trap.
pub(crate) enum Failure {
    /// The guest trapped or the host failed (instantiation, a resource).
    Wasm(wasmtime::Error),
    /// The guest finished without setting a response, or set an error code.
    NoResponse(String),
    /// The body was larger than a buffered answer may be.
    TooLarge,
}

pub(crate) async fn run(
    pre: &ProxyPre<Host>,
    store: &mut Store<Host>,
    inv: &Invocation,
) -> Result<Answer, Failure> {
    let (https, req) = match &inv.http {
        Some(h) => (h.https, request_of(h)),
        None => (false, request_from_event(&inv.payload)),
    };
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let head_set = Arc::new(AtomicBool::new(false));
    let set = head_set.clone();
    let mut http = store.data_mut().http();
    let req = http
        .new_incoming_request(scheme, req)
        .map_err(Failure::Wasm)?;
    let out = http
        .new_response_outparam_from_callback(move |r| {
            set.store(true, Ordering::Release);
            let _ = tx.send(r);
        })
        .map_err(Failure::Wasm)?;
    let proxy = pre
        .instantiate_async(&mut *store)
        .await
        .map_err(Failure::Wasm)?;
    let call = proxy
        .wasi_http_incoming_handler()
        .call_handle(&mut *store, req, out);
    let read = async move {
        let resp = match rx.await {
            Ok(Ok(resp)) => resp,
            Ok(Err(code)) => {
                return Err(Failure::NoResponse(format!(
                    "the component answered with the error {code:?}"
                )))
            }
            Err(_) => {
                return Err(Failure::NoResponse(
                    "the component never set a response".into(),
                ))
            }
        };
        let (parts, body) = resp.into_parts();
        let body = match Limited::new(body, RESPONSE_MAX).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return Err(Failure::TooLarge)
            }
            Err(e) => {
                return Err(Failure::NoResponse(format!(
                    "the component's response body failed: {e}"
                )))
            }
        };
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    };
    tokio::pin!(call, read);
    let mut called = None;
    loop {
        tokio::select! {
            r = &mut call, if called.is_none() => {
                if let Err(e) = r {
                    return Err(Failure::Wasm(e));
                }
                called = Some(());
                if !head_set.load(Ordering::Acquire) {
                    return Err(Failure::NoResponse("the component never set a response".into()));
                }
            }
            answer = &mut read => {
                let answer = answer?;
                if called.is_none() {
                    // The guest may still be running past its response (as Spin allows).
                    call.await.map_err(Failure::Wasm)?;
                }
                return Ok(answer);
            }
        }
    }
}

fn request_of(h: &HttpRequest) -> http::Request<Full<Bytes>> {
    let scheme = if h.https { "https" } else { "http" };
    let uri = format!("{scheme}://{}{}", h.authority, h.path_and_query);
    let mut req = http::Request::new(Full::new(h.body.clone()));
    *req.method_mut() = h.method.clone();
    *req.uri_mut() = uri
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("http://localhost/"));
    *req.headers_mut() = h.headers.clone();
    req
}

/// The request an event stands for: an API Gateway v2 / function URL event as the HTTP
/// request it describes; any other event as `POST /` with the event as a JSON body.
fn request_from_event(payload: &Bytes) -> http::Request<Full<Bytes>> {
    let event: Option<Map<String, Value>> = serde_json::from_slice(payload).ok();
    let method = event
        .as_ref()
        .and_then(|e| {
            e.get("requestContext")?
                .get("http")?
                .get("method")?
                .as_str()
        })
        .and_then(|m| http::Method::from_bytes(m.as_bytes()).ok());
    let (Some(e), Some(method)) = (event, method) else {
        let mut req = http::Request::new(Full::new(payload.clone()));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = http::Uri::from_static("http://localhost/");
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return req;
    };
    let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("");
    let mut headers = http::HeaderMap::new();
    if let Some(Value::Object(h)) = e.get("headers") {
        for (k, v) in h {
            if let (Ok(name), Some(Ok(value))) = (
                http::HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(http::HeaderValue::from_str),
            ) {
                headers.append(name, value);
            }
        }
    }
    if let Some(Value::Array(c)) = e.get("cookies") {
        let joined: Vec<&str> = c.iter().filter_map(Value::as_str).collect();
        if let Ok(v) = http::HeaderValue::from_str(&joined.join("; ")) {
            if !joined.is_empty() {
                headers.insert(http::header::COOKIE, v);
            }
        }
    }
    let host = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            e.get("requestContext")?
                .get("domainName")?
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| "localhost".into());
    let path = match s("rawPath") {
        "" => "/",
        p => p,
    };
    let query = s("rawQueryString");
    let uri = if query.is_empty() {
        format!("http://{host}{path}")
    } else {
        format!("http://{host}{path}?{query}")
    };
    let body = match e.get("body").and_then(Value::as_str) {
        Some(b) if e.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) => {
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default()
                .into()
        }
        Some(b) => Bytes::copy_from_slice(b.as_bytes()),
        None => Bytes::new(),
    };
    let mut req = http::Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("http://localhost/"));
    *req.headers_mut() = headers;
    req
}

/// The prelude of an HTTP-integration answer (`{"statusCode","headers"}`, each header's
/// values in order) for a function URL or route.
pub(crate) fn prelude(a: &Answer) -> Bytes {
    let mut headers = Map::new();
    for name in a.headers.keys() {
        let values: Vec<Value> = a
            .headers
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        headers.insert(name.as_str().to_string(), Value::Array(values));
    }
    Bytes::from(json!({ "statusCode": a.status, "headers": headers }).to_string())
}

/// The answer as an API Gateway v2 response (what an event invocation returns).
pub(crate) fn v2_response(a: &Answer) -> Bytes {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in a.headers.keys() {
        let values: Vec<String> = a
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if name == http::header::SET_COOKIE {
            cookies.extend(values);
        } else {
            headers.insert(name.as_str().to_string(), Value::String(values.join(", ")));
        }
    }
    let (body, b64) = match std::str::from_utf8(&a.body) {
        Ok(s) => (s.to_string(), false),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(&a.body),
            true,
        ),
    };
    let mut out = json!({
        "statusCode": a.status,
        "headers": headers,
        "body": body,
        "isBase64Encoded": b64,
    });
    if !cookies.is_empty() {
        out["cookies"] = json!(cookies);
    }
    Bytes::from(out.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_event_becomes_its_request() {
        let ev = json!({
            "rawPath": "/items/7", "rawQueryString": "a=1",
            "headers": {"host": "h.example", "x-one": "1"},
            "cookies": ["a=b", "c=d"],
            "requestContext": {"http": {"method": "PUT"}},
            "body": "aGk=", "isBase64Encoded": true
        });
        let req = request_from_event(&Bytes::from(ev.to_string()));
        assert_eq!(req.method(), http::Method::PUT);
        assert_eq!(req.uri().to_string(), "http://h.example/items/7?a=1");
        assert_eq!(req.headers()["x-one"], "1");
        assert_eq!(req.headers()["cookie"], "a=b; c=d");
    }

    #[test]
    fn any_other_event_is_posted() {
        let req = request_from_event(&Bytes::from_static(b"{\"n\":1}"));
        assert_eq!(req.method(), http::Method::POST);
        assert_eq!(req.uri().path(), "/");
        assert_eq!(req.headers()["content-type"], "application/json");
    }

    #[test]
    fn responses_keep_every_header_value() {
        let mut headers = http::HeaderMap::new();
        headers.append("set-cookie", "a=1".parse().unwrap());
        headers.append("set-cookie", "b=2".parse().unwrap());
        headers.append("x-v", "1".parse().unwrap());
        let a = Answer {
            status: 201,
            headers,
            body: Bytes::from_static(b"ok"),
        };
        let p: Value = serde_json::from_slice(&prelude(&a)).unwrap();
        assert_eq!(p["headers"]["set-cookie"], json!(["a=1", "b=2"]));
        let v: Value = serde_json::from_slice(&v2_response(&a)).unwrap();
        assert_eq!(v["statusCode"], 201);
        assert_eq!(v["cookies"], json!(["a=1", "b=2"]));
        assert_eq!(v["body"], "ok");
        assert_eq!(v["headers"]["x-v"], "1");
    }
}
