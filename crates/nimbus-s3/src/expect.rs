//! `Expect: 100-continue` on a request without a body.
//!
//! botocore sends `Expect: 100-continue` on every PutObject and UploadPart, empty bodies
//! included. hyper (as Go's `net/http`, which RFC 9110 §10.1.1 allows) sends no
//! `100 Continue` when the framing says there is no content and answers the final response
//! at once. botocore reads that early final status line itself and keeps a response class
//! bound to it on the *connection*; it forgets it only when the connection closes or the
//! next request has no `Expect` header. The next `Expect` request on the same kept-alive
//! connection — an UploadPart of boto3's transfer manager after a run of empty PUTs — then
//! gets its real `100 Continue`, sends its body and parses the final response against the
//! stale status: the `HTTP/1.1 200 OK` line is read as a header
//! (`MissingHeaderBodySeparatorDefect`), the headers are lost (`KeyError: 'ETag'`) or the
//! read waits for a timeout (boto/botocore#3755).
//!
//! So such a response carries `Connection: close`: hyper closes the connection after it,
//! and botocore's connection, closed, forgets the stale status. Only requests that both
//! expect a `100 Continue` and have no body pay for a new connection; requests with a body
//! get the `100 Continue` from hyper when the operation reads the body, and an error
//! answered before the body was read already closes the connection (hyper cannot know
//! whether the client will send the body).

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Adds `Connection: close` to the response of a request that expects `100 Continue` but
/// has no body (see the module documentation).
pub(crate) async fn close_after_bodiless_expect(req: Request, next: Next) -> Response {
    let close = expects_continue_without_body(req.headers());
    let mut response = next.run(req).await;
    if close {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request has `Expect: 100-continue` and framing that says there is no body
/// (`Content-Length: 0`, or neither a length nor `Transfer-Encoding`).
fn expects_continue_without_body(headers: &HeaderMap) -> bool {
    let expects = headers
        .get_all(header::EXPECT)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if !expects || headers.contains_key(header::TRANSFER_ENCODING) {
        return false;
    }
    match headers.get(header::CONTENT_LENGTH) {
        None => true,
        Some(v) => v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) == Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn only_bodiless_requests_that_expect_continue() {
        assert!(expects_continue_without_body(&headers(&[
            ("expect", "100-continue"),
            ("content-length", "0"),
        ])));
        assert!(expects_continue_without_body(&headers(&[(
            "expect",
            "100-Continue"
        )])));
        assert!(!expects_continue_without_body(&headers(&[
            ("expect", "100-continue"),
            ("content-length", "5"),
        ])));
        assert!(!expects_continue_without_body(&headers(&[
            ("expect", "100-continue"),
            ("transfer-encoding", "chunked"),
        ])));
        assert!(!expects_continue_without_body(&headers(&[(
            "content-length",
            "0"
        )])));
    }
}
