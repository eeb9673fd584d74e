//! `Expect: 100-continue` answered without a `100 Continue`.
//!
//! botocore sends `Expect: 100-continue` on every PutObject and UploadPart, empty bodies
//! included. hyper sends the `100 Continue` only when the operation first reads the body:
//! never when the framing says there is no content (as Go's `net/http`, which RFC 9110
//! §10.1.1 allows), and never when the answer comes before the body is read (an early
//! error such as `KeyTooLongError`). Either way the final response is the early answer.
//! botocore reads that early final status line itself and keeps a response class bound to
//! it on the *connection*; it forgets it only when the connection closes or the next
//! request has no `Expect` header. The next `Expect` request on the same kept-alive
//! connection then gets its real `100 Continue`, sends its body and parses the final
//! response against the stale status: the `HTTP/1.1 200 OK` line is read as a header
//! (`MissingHeaderBodySeparatorDefect`), the headers are lost (`KeyError: 'ETag'` in the
//! transfer manager after empty PUTs), the stale status is returned (a bare
//! `400 Bad Request` for a PUT that succeeded on the server), or the read waits for a
//! timeout (boto/botocore#3755).
//!
//! So the response of an `Expect` request whose body was never read carries
//! `Connection: close`: hyper closes the connection after it, and botocore, seeing the
//! header, drops the connection and with it the stale status. Requests whose body is read
//! get their `100 Continue` and keep their connection.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// Adds `Connection: close` to the response of a request that expects `100 Continue` but
/// whose body was never read, so none was sent (see the module documentation).
pub(crate) async fn close_after_unanswered_expect(req: Request, next: Next) -> Response {
    if !expects_continue(req.headers()) {
        return next.run(req).await;
    }
    let read = Arc::new(AtomicBool::new(false));
    let req = req.map(|body| {
        Body::new(Watched {
            inner: body,
            read: read.clone(),
        })
    });
    let mut response = next.run(req).await;
    if !read.load(Ordering::Acquire) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Whether the request has `Expect: 100-continue`.
fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::EXPECT)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// A request body that notes its first read: the moment hyper sends `100 Continue`. A body
/// the framing says is empty is never read from the client, so it counts as unread.
struct Watched {
    inner: Body,
    read: Arc<AtomicBool>,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if !self.inner.is_end_stream() {
            self.read.store(true, Ordering::Release);
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
    fn expect_100_continue_in_any_case() {
        assert!(expects_continue(&headers(&[("expect", "100-continue")])));
        assert!(expects_continue(&headers(&[("expect", "100-Continue")])));
        assert!(!expects_continue(&headers(&[("content-length", "0")])));
        assert!(!expects_continue(&headers(&[("expect", "something-else")])));
    }
}
