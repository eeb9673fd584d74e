//! Response streaming: `InvokeWithResponseStream` (an `application/vnd.amazon.eventstream`
//! of `PayloadChunk` events and a final `InvokeComplete`) and the body of function URLs in
//! `RESPONSE_STREAM` mode (HTTP/1.1 chunked), both fed as the runtime writes.
//!
//! The runtime side ([`nimbus_runtime::Invocation::stream`]) passes a streamed response on
//! part by part; a function that answers buffered is sent in one piece.

use crate::invoke::{self, InvokeRequest};
use crate::state::Resolved;
use crate::{ApiError, Gateway};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;
use http_body::Frame;
use nimbus_core::arn;
use nimbus_pool::PoolInvokeResult;
use nimbus_runtime::{Invocation, Outcome, StreamPart};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::mpsc;
use tracing::{debug, warn};

/// How many parts may wait between the runtime and the client.
const PARTS_BUFFERED: usize = 16;
/// The largest payload of one `PayloadChunk` event (botocore reads up to 24 MiB).
const EVENT_PAYLOAD_MAX: usize = 1024 * 1024;
/// The content type of an `InvokeWithResponseStream` answer.
pub(crate) const EVENT_STREAM: &str = "application/vnd.amazon.eventstream";

/// An invocation whose caller reads a stream, once it has started.
pub(crate) enum Started {
    /// The function answered before streaming anything: a buffered answer, an error, or a
    /// refusal (throttled, …) that never reached the function.
    Done(String, PoolInvokeResult),
    /// The function is streaming.
    Streaming(Streaming),
}

pub(crate) struct Streaming {
    pub request_id: String,
    pub content_type: Option<String>,
    pub http_prelude: Option<Bytes>,
    /// The body's chunks; closed when the invocation is over.
    pub parts: mpsc::Receiver<StreamPart>,
    /// The invocation's result: `Outcome::Streamed` or an error (mid-stream).
    pub finished: invoke::Running,
}

/// Runs `inv` with a stream sink and waits until the function starts streaming or
/// answers. Errors before the function ran (throttled, …) come back as `Err`.
pub(crate) async fn start(
    gw: &Arc<Gateway>,
    resolved: &Arc<Resolved>,
    trigger: nimbus_metrics::Trigger,
    mut inv: Invocation,
) -> Result<Started, ApiError> {
    let (tx, mut rx) = mpsc::channel(PARTS_BUFFERED);
    inv.stream = Some(tx);
    let request_id = inv.request_id.clone();
    let mut finished = invoke::spawn(gw, resolved, trigger, inv)?;
    // Biased: the parts are sent before the result, so a finished invocation that
    // streamed always shows its head first.
    let first = tokio::select! {
        biased;
        part = rx.recv() => part,
        r = &mut finished => {
            let (rid, res) = r??;
            return Ok(Started::Done(rid, res));
        }
    };
    match first {
        Some(StreamPart::Head {
            content_type,
            http_prelude,
        }) => Ok(Started::Streaming(Streaming {
            request_id,
            content_type,
            http_prelude,
            parts: rx,
            finished,
        })),
        Some(StreamPart::Chunk(_)) => Err(ApiError::Internal(
            "a streamed response began without its head".into(),
        )),
        None => {
            let (rid, res) = finished.await??;
            Ok(Started::Done(rid, res))
        }
    }
}

/// A response body fed through a channel (an error ends the connection without the
/// final chunk, so the client sees the body cut).
struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx)
    }
}

pub(crate) fn channel_body() -> (mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>, Body) {
    let (tx, rx) = mpsc::channel(PARTS_BUFFERED);
    (tx, Body::new(ChannelBody(rx)))
}

// ------------------------------------------------------------------ event stream --

/// One event stream message (big-endian): total length, headers length, prelude CRC32,
/// headers (`u8` name length, name, type 7 = string, `u16` value length, value), payload,
/// CRC32 of everything before it.
pub(crate) fn event_message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let mut head = Vec::new();
    for (name, value) in headers {
        head.push(name.len() as u8);
        head.extend_from_slice(name.as_bytes());
        head.push(7);
        head.extend_from_slice(&(value.len() as u16).to_be_bytes());
        head.extend_from_slice(value.as_bytes());
    }
    let total = 12 + head.len() + payload.len() + 4;
    let mut msg = Vec::with_capacity(total);
    msg.extend_from_slice(&(total as u32).to_be_bytes());
    msg.extend_from_slice(&(head.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&msg);
    msg.extend_from_slice(&prelude_crc.to_be_bytes());
    msg.extend_from_slice(&head);
    msg.extend_from_slice(payload);
    let crc = crc32fast::hash(&msg);
    msg.extend_from_slice(&crc.to_be_bytes());
    Bytes::from(msg)
}

/// `PayloadChunk` events carrying `data` (split so that no event is too large).
fn payload_chunks(data: &[u8]) -> impl Iterator<Item = Bytes> + '_ {
    data.chunks(EVENT_PAYLOAD_MAX).map(|c| {
        event_message(
            &[
                (":event-type", "PayloadChunk"),
                (":content-type", "application/octet-stream"),
                (":message-type", "event"),
            ],
            c,
        )
    })
}

/// The final `InvokeComplete` event: the error (if the invocation failed) and the log
/// tail (with `X-Amz-Log-Type: Tail`). `ErrorCode` is the error JSON's `errorType` (as
/// the function reported it, e.g. `ValueError`), else the recorded error type;
/// `ErrorDetails` its `errorMessage`, else the error body.
fn invoke_complete(res: &PoolInvokeResult, tail: bool) -> Bytes {
    let mut body = serde_json::Map::new();
    if let Outcome::Error {
        error_type,
        body: err,
    } = &res.result.outcome
    {
        let json = serde_json::from_slice::<serde_json::Value>(err).ok();
        let field = |k: &str| {
            json.as_ref()
                .and_then(|v| v.get(k)?.as_str().map(str::to_string))
                .filter(|s| !s.is_empty())
        };
        let code = field("errorType").unwrap_or_else(|| error_type.clone());
        let details =
            field("errorMessage").unwrap_or_else(|| String::from_utf8_lossy(err).into_owned());
        body.insert("ErrorCode".into(), code.into());
        body.insert("ErrorDetails".into(), details.into());
    }
    if tail {
        body.insert(
            "LogResult".into(),
            invoke::log_result(&res.result.log_tail).into(),
        );
    }
    let payload = serde_json::Value::Object(body).to_string();
    event_message(
        &[
            (":event-type", "InvokeComplete"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    )
}

/// `POST /2021-11-15/functions/{FunctionName}/response-streaming-invocations`
/// (`InvokeWithResponseStream`).
pub(crate) async fn invoke_with_response_stream(
    State(gw): State<Arc<Gateway>>,
    Path(function): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let InvokeRequest {
        name,
        qualifier,
        invocation_type,
        tail,
        client_context,
        payload,
    } = invoke::parse_invoke(
        &function,
        &query,
        &headers,
        body,
        &["RequestResponse", "DryRun"],
    )
    .await?;
    let resolved = gw.resolve(&name, qualifier.as_deref()).await?;
    let executed_version = resolved.version.version.clone();
    if invocation_type == "DryRun" {
        return Ok(invoke::dry_run(executed_version));
    }
    let trace = crate::trace::incoming(&headers);
    let inv = invoke::invocation(
        uuid::Uuid::new_v4().to_string(),
        payload,
        arn::function_arn(name.as_str(), qualifier.as_deref()),
        trace,
        client_context,
    );
    let (request_id, body) = match start(&gw, &resolved, nimbus_metrics::Trigger::Api, inv).await? {
        Started::Done(request_id, res) => {
            let mut out = Vec::new();
            match &res.result.outcome {
                Outcome::Success(b) | Outcome::Streamed { body: b, .. } => {
                    payload_chunks(b).for_each(|m| out.extend_from_slice(&m))
                }
                Outcome::Error { .. } => {}
            }
            out.extend_from_slice(&invoke_complete(&res, tail));
            (request_id, Body::from(out))
        }
        Started::Streaming(s) => {
            let request_id = s.request_id.clone();
            let (tx, body) = channel_body();
            tokio::spawn(forward_events(s, tx, tail));
            (request_id, body)
        }
    };
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert("content-type", HeaderValue::from_static(EVENT_STREAM));
    insert(h, "x-amzn-requestid", &request_id);
    insert(h, "x-amz-executed-version", &executed_version);
    Ok(resp)
}

fn insert(h: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// Passes the chunks on as `PayloadChunk` events, then `InvokeComplete`.
async fn forward_events(
    mut s: Streaming,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
    tail: bool,
) {
    while let Some(part) = s.parts.recv().await {
        let StreamPart::Chunk(data) = part else {
            continue;
        };
        for m in payload_chunks(&data) {
            if tx.send(Ok(Frame::data(m))).await.is_err() {
                debug!(request_id = %s.request_id, "the stream's reader went away");
                return;
            }
        }
    }
    let last = match s.finished.await {
        Ok(Ok((_, res))) => invoke_complete(&res, tail),
        Ok(Err(e)) => {
            warn!(request_id = %s.request_id, "streamed invocation failed: {e}");
            event_message(
                &[
                    (":event-type", "InvokeComplete"),
                    (":content-type", "application/json"),
                    (":message-type", "event"),
                ],
                serde_json::json!({"ErrorCode": e.error_type(), "ErrorDetails": e.to_string()})
                    .to_string()
                    .as_bytes(),
            )
        }
        Err(e) => {
            warn!(request_id = %s.request_id, "streamed invocation task failed: {e}");
            let _ = tx
                .send(Err(std::io::Error::other("invocation failed")))
                .await;
            return;
        }
    };
    let _ = tx.send(Ok(Frame::data(last))).await;
}

// ------------------------------------------------------------------ function URLs --

/// The HTTP response of a function URL in `RESPONSE_STREAM` mode whose function streams:
/// status and headers from the HTTP-integration prelude (or the content type), then the
/// chunks as they come. A failure mid-stream ends the connection without the final chunk
/// (the client sees a cut body) and is logged.
pub(crate) fn url_response(name: &str, s: Streaming) -> Result<Response, ApiError> {
    let mapped = crate::http_event::from_streamed_response(
        s.content_type.as_deref(),
        s.http_prelude.as_deref(),
        Bytes::new(),
    )
    .map_err(|e| {
        ApiError::FunctionFailed(format!("function {name} returned an invalid response: {e}"))
    })?;
    let (tx, body) = channel_body();
    tokio::spawn(forward_body(name.to_string(), s, tx));
    let mut resp = Response::new(body);
    *resp.status_mut() = mapped.status;
    *resp.headers_mut() = mapped.headers;
    Ok(resp)
}

async fn forward_body(
    name: String,
    mut s: Streaming,
    tx: mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
) {
    while let Some(part) = s.parts.recv().await {
        let StreamPart::Chunk(data) = part else {
            continue;
        };
        if tx.send(Ok(Frame::data(data))).await.is_err() {
            debug!(function = %name, request_id = %s.request_id, "the stream's reader went away");
            return;
        }
    }
    let failure = match s.finished.await {
        Ok(Ok((_, res))) => match res.result.outcome {
            Outcome::Error { error_type, .. } => Some(error_type),
            _ => None,
        },
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    if let Some(why) = failure {
        warn!(function = %name, request_id = %s.request_id, "streamed response failed mid-stream: {why}");
        let _ = tx
            .send(Err(std::io::Error::other(format!(
                "function {name} failed mid-stream ({why})"
            ))))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_messages_match_botocores_example() {
        // aws-reference-wave2.md: "hello" as a PayloadChunk, checked with botocore's
        // EventStreamBuffer.
        let m = payload_chunks(b"hello").next().unwrap();
        assert_eq!(m.len(), 111);
        assert_eq!(
            &m[..12],
            &hex::decode("0000006f0000005af5fe871f").unwrap()[..]
        );
        assert_eq!(&m[m.len() - 4..], &hex::decode("29e71260").unwrap()[..]);
        assert_eq!(&m[m.len() - 9..m.len() - 4], b"hello");
    }

    #[test]
    fn large_payloads_are_split() {
        let data = vec![7u8; EVENT_PAYLOAD_MAX * 2 + 1];
        let sizes: Vec<usize> = payload_chunks(&data).map(|m| m.len()).collect();
        assert_eq!(sizes.len(), 3);
        assert_eq!(sizes[2], 111 - 5 + 1);
    }
}
