//! The Lambda Runtime API served to one instance (`AWS_LAMBDA_RUNTIME_API`).
//!
//! Follows the runtime interface emulator (`rapi/handler/*`, `rendering/*`) closely enough
//! that the official clients (aws-lambda-cpp under the Python and Node RICs, the Rust
//! `lambda_runtime` crate, aws-lambda-go) run unchanged:
//!
//! * `GET next` answers exactly 200 with `Content-Type: application/json` and the
//!   `Lambda-Runtime-*` headers; every accepted POST answers exactly 202 `{"status":"OK"}`.
//! * Request bodies may be chunked and may end in trailers (Go always declares them;
//!   streaming runtimes report a mid-stream failure in `Lambda-Runtime-Function-Error-Type`
//!   and `Lambda-Runtime-Function-Error-Body`, base64).
//! * `Lambda-Runtime-Function-Response-Mode: streaming` responses are passed on chunk by
//!   chunk to the invocation's sink when the caller reads a stream
//!   ([`Invocation::stream`], up to [`STREAM_RESPONSE_MAX`]); otherwise they are read to
//!   the end (up to the same 6 MB limit). Either way they end in [`Outcome::Streamed`]; a
//!   body in the HTTP-integration format
//!   (`application/vnd.awslambda.http-integration-response`: JSON prelude, 8 NUL bytes,
//!   body) is split into its prelude and body.
//! * Refusals use Lambda's shapes: 400 `InvalidRequestID`, 400
//!   `InvalidFunctionResponseMode`, 400 `TruncatedHTTPRequest`, 403
//!   `InvalidStateTransition`, 413 `RequestEntityTooLarge`, all as
//!   `{"errorMessage","errorType"}`.

use crate::{Invocation, Outcome, ResponseSink, StreamPart, STREAM_RESPONSE_MAX};
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

/// Lambda's payload cap on the Runtime API (`MaxPayloadSize`, 6 MiB + 100 bytes).
pub(crate) const MAX_RESPONSE: usize = 6 * 1024 * 1024 + 100;
/// Room for request headers and trailers: the clients send an X-Ray error cause of up
/// to 1 MiB in `Lambda-Runtime-Function-XRay-Error-Cause`, and a streamed error body
/// (base64) arrives as a trailer.
const MAX_HEADER_BYTES: usize = 2 * 1024 * 1024;

const RESPONSE_MODE: &str = "lambda-runtime-function-response-mode";
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
const ERROR_BODY: &str = "lambda-runtime-function-error-body";
/// The content type of a response in the HTTP-integration format.
pub(crate) const HTTP_INTEGRATION: &str = "application/vnd.awslambda.http-integration-response";
/// What separates the JSON prelude from the body in the HTTP-integration format.
const PRELUDE_DELIMITER: [u8; 8] = [0; 8];

/// An invocation waiting for the runtime to pick it up.
pub(crate) struct Pending {
    pub inv: Invocation,
    pub timeout: Duration,
    /// Told when the runtime takes the invocation (the deadline starts then).
    pub picked: oneshot::Sender<Instant>,
    pub reply: oneshot::Sender<Outcome>,
}

struct Current {
    reply: oneshot::Sender<Outcome>,
    /// Where a streamed response goes as it arrives (the caller reads a stream).
    sink: Option<ResponseSink>,
}

/// State shared between an instance and its Runtime API listener.
pub(crate) struct RapiState {
    pub next_rx: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    /// The invocations the runtime has taken and not answered, by request id.
    current: Mutex<HashMap<String, Current>>,
    /// How many it may hold at once: the function's `instance_concurrency`
    /// (`AWS_LAMBDA_MAX_CONCURRENCY`); set when a stem cell is specialised.
    max: AtomicUsize,
    /// The error the runtime posted to `/init/error`, if any.
    pub init_error: Mutex<Option<Outcome>>,
    /// When the runtime first asked for work (end of init).
    pub first_next: Mutex<Option<Instant>>,
    /// Becomes true once the runtime has answered an invocation (init is over for good).
    pub answered: tokio::sync::watch::Sender<bool>,
    /// Becomes true at the first `next` ([`crate::Instance::ready`] waits for it).
    pub ready: tokio::sync::watch::Sender<bool>,
    /// A stem cell's specialisation: the bootstrap waits on [`STEM_PATH`] for the
    /// function it becomes (taken by that request; `None` for ordinary instances).
    stem: Mutex<Option<oneshot::Receiver<Bytes>>>,
    /// Becomes true when a stem cell's bootstrap is waiting on [`STEM_PATH`].
    pub stem_waiting: tokio::sync::watch::Sender<bool>,
}

impl RapiState {
    pub fn new(next_rx: mpsc::Receiver<Pending>) -> Self {
        Self {
            next_rx: tokio::sync::Mutex::new(next_rx),
            current: Mutex::new(HashMap::new()),
            max: AtomicUsize::new(1),
            init_error: Mutex::new(None),
            first_next: Mutex::new(None),
            answered: tokio::sync::watch::Sender::new(false),
            ready: tokio::sync::watch::Sender::new(false),
            stem: Mutex::new(None),
            stem_waiting: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The state of a stem cell: its bootstrap receives what `specialize` is sent.
    pub fn stem(next_rx: mpsc::Receiver<Pending>, specialize: oneshot::Receiver<Bytes>) -> Self {
        let st = Self::new(next_rx);
        *st.stem.lock().unwrap() = Some(specialize);
        st
    }

    /// Lets the runtime hold up to `n` invocations at once (at least one).
    pub fn set_max_concurrency(&self, n: usize) {
        self.max.store(n.max(1), Ordering::SeqCst);
    }
}

/// Where a stem cell's bootstrap waits for the function it becomes (Nimbus's own
/// extension of the Runtime API; the answer is `{"env": {…}, "taskRoot": "…"}`).
pub(crate) const STEM_PATH: &str = "/2018-06-01/runtime/nimbus/stem/specialize";

pub(crate) fn router(state: Arc<RapiState>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .route(STEM_PATH, get(specialize))
        .with_state(state)
}

/// Serves the Runtime API on `listener` until `stop` fires (or is dropped); open
/// connections are closed then too.
///
/// Plain hyper rather than `axum::serve`, for the limits: headers (and trailers) up to
/// [`MAX_HEADER_BYTES`], and `TCP_NODELAY` so small answers are not delayed.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<RapiState>,
    mut stop: oneshot::Receiver<()>,
) {
    let service = hyper_util::service::TowerToHyperService::new(router(state));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_HEADER_BYTES + 64 * 1024)
        .max_header_size(MAX_HEADER_BYTES);
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    debug!("runtime api accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while conns.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let conn = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        conns.spawn(async move {
            if let Err(e) = conn.await {
                debug!("runtime api connection ended: {e}");
            }
        });
    }
    // Dropping the set aborts the connections still open.
}

fn rapi_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        r#"{"status":"OK"}"#,
    )
        .into_response()
}

fn too_large() -> Response {
    rapi_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "RequestEntityTooLarge",
        &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."),
    )
}

fn truncated() -> Response {
    rapi_error(
        StatusCode::BAD_REQUEST,
        "TruncatedHTTPRequest",
        "HTTP request detected as truncated",
    )
}

fn state_transition(message: &str) -> Response {
    rapi_error(
        StatusCode::FORBIDDEN,
        "InvalidStateTransition",
        &format!("State transition is not allowed: {message}"),
    )
}

/// A stem cell's bootstrap parks here until the server specialises it; only once.
async fn specialize(State(st): State<Arc<RapiState>>) -> Response {
    let Some(rx) = st.stem.lock().unwrap().take() else {
        return state_transition("this instance is not a stem cell waiting to be specialised");
    };
    st.stem_waiting.send_replace(true);
    match rx.await {
        Ok(body) => (
            StatusCode::OK,
            [("content-type", "application/json")],
            Body::from(body),
        )
            .into_response(),
        // The stem cell is being stopped: park until the process is killed.
        Err(_) => std::future::pending::<Response>().await,
    }
}

async fn next(State(st): State<Arc<RapiState>>) -> Response {
    st.first_next
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
    st.ready.send_if_modified(|r| !std::mem::replace(r, true));
    let max = st.max.load(Ordering::SeqCst);
    if st.current.lock().unwrap().len() >= max {
        // The runtime asks for more work without answering the invocations it holds.
        return state_transition(&if max == 1 {
            "the invocation in progress has not been answered".to_string()
        } else {
            format!("{max} invocations are in progress, the most this instance runs at once (AWS_LAMBDA_MAX_CONCURRENCY)")
        });
    }
    let pending = {
        let mut rx = st.next_rx.lock().await;
        match rx.recv().await {
            Some(p) => p,
            // The instance is shutting down: park until the process is killed.
            None => return std::future::pending::<Response>().await,
        }
    };
    let Pending {
        inv,
        timeout,
        picked,
        reply,
    } = pending;
    let now = Instant::now();
    let deadline_ms = crate::logs::now_ms() + timeout.as_millis() as i64;
    st.current.lock().unwrap().insert(
        inv.request_id.clone(),
        Current {
            reply,
            sink: inv.stream,
        },
    );
    let _ = picked.send(now);

    // As the emulator renders them (`renderInvokeHeaders`): empty values are left out.
    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
        if value.is_empty() {
            return;
        }
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", &inv.request_id);
    put("lambda-runtime-deadline-ms", &deadline_ms.to_string());
    put("lambda-runtime-invoked-function-arn", &inv.invoked_arn);
    if let Some(t) = &inv.trace_id {
        put("lambda-runtime-trace-id", t);
    }
    if let Some(t) = &inv.traceparent {
        put(TRACEPARENT_HEADER, t);
    }
    if let Some(t) = &inv.tracestate {
        put(TRACESTATE_HEADER, t);
    }
    if let Some(c) = &inv.client_context {
        put("lambda-runtime-client-context", c);
    }
    // Exactly this value: Python's RIC unmarshals the event only for `application/json`.
    put("content-type", "application/json");
    (StatusCode::OK, headers, Body::from(inv.payload)).into_response()
}

/// A buffered `/response` or `/error` post carrying this header (any value) is answered,
/// once accepted, as `GET /invocation/next` would be: with the next invocation, when
/// there is one. Nimbus's own bootstraps send it, sparing an exchange per invocation
/// (the `202` and the separate `next` request); a refused post is answered with its
/// refusal as usual, and the runtime asks for the next invocation itself.
pub(crate) const NEXT_HEADER: &str = "nimbus-runtime-next";

/// The answer to an accepted post about an invocation: `202`, or the next invocation
/// when the runtime asked for it ([`NEXT_HEADER`]).
async fn accepted_or_next(st: Arc<RapiState>, headers: &HeaderMap) -> Response {
    if headers.contains_key(NEXT_HEADER) {
        next(State(st)).await
    } else {
        accepted()
    }
}

/// The `/invocation/next` response header carrying the invocation's W3C `traceparent`
/// (a Nimbus extension; custom runtimes may set `TRACEPARENT` from it).
pub const TRACEPARENT_HEADER: &str = "nimbus-runtime-traceparent";

/// The `/invocation/next` response header carrying the W3C `tracestate` that came with
/// the invocation's context, when there is one (custom runtimes may set `TRACESTATE`).
pub const TRACESTATE_HEADER: &str = "nimbus-runtime-tracestate";

/// Why a post about an invocation was refused.
enum Refusal {
    /// The id is not an invocation in progress.
    InvalidRequestId,
    /// No invocation is in progress.
    NoInvocation,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::InvalidRequestId => rapi_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                "Invalid request ID",
            ),
            Refusal::NoInvocation => state_transition("no invocation in progress"),
        }
    }
}

/// Takes the invocation in progress `id` names.
fn take_current(st: &RapiState, id: &str) -> Result<Current, Refusal> {
    let mut cur = st.current.lock().unwrap();
    match cur.remove(id) {
        Some(c) => {
            st.answered.send_replace(true);
            Ok(c)
        }
        None if cur.is_empty() => Err(Refusal::NoInvocation),
        None => Err(Refusal::InvalidRequestId),
    }
}

/// A request body read to its end.
struct ReadBody {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

enum ReadError {
    /// More than the limit (declared by `Content-Length` or sent).
    TooLarge,
    /// The connection broke before the end of the body.
    Truncated,
}

/// How much of an oversized body is still read (and dropped) before the 413, so that the
/// runtime reads the answer instead of a connection reset.
const DRAIN_MAX: usize = 16 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Reads and drops what is left of a body (at most [`DRAIN_MAX`] bytes for
/// [`DRAIN_TIME`]), so that the runtime reads the answer instead of a connection reset.
async fn drain(mut body: Body) {
    let until = tokio::time::Instant::now() + DRAIN_TIME;
    let mut len = 0usize;
    while let Ok(Some(Ok(frame))) = tokio::time::timeout_at(until, body.frame()).await {
        len += frame.data_ref().map_or(0, |d| d.len());
        if len > DRAIN_MAX {
            break;
        }
    }
}

/// Reads a body (fixed-length or chunked) and its trailers, never buffering more than
/// `limit` bytes.
async fn read_body(
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<ReadBody, ReadError> {
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > (limit + DRAIN_MAX) as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    let mut trailers: Option<HeaderMap> = None;
    let mut drain_until = None;
    loop {
        let frame = match drain_until {
            None => body.frame().await,
            Some(until) => match tokio::time::timeout_at(until, body.frame()).await {
                Ok(f) => f,
                Err(_) => return Err(ReadError::TooLarge),
            },
        };
        let Some(frame) = frame else { break };
        let frame = match frame {
            Ok(f) => f,
            Err(_) if drain_until.is_some() => return Err(ReadError::TooLarge),
            Err(_) => return Err(ReadError::Truncated),
        };
        match frame.into_data() {
            Ok(data) => {
                len += data.len();
                if len > limit + DRAIN_MAX {
                    return Err(ReadError::TooLarge);
                }
                if len > limit {
                    chunks.clear();
                    drain_until.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_TIME);
                } else {
                    chunks.push(data);
                }
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
            }
        }
    }
    if len > limit || declared.is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge);
    }
    let data = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap(),
        _ => {
            let mut buf = Vec::with_capacity(len);
            for c in &chunks {
                buf.extend_from_slice(c);
            }
            Bytes::from(buf)
        }
    };
    Ok(ReadBody { data, trailers })
}

/// The error type Lambda records for a `Lambda-Runtime-Function-Error-Type` value
/// (`fatalerror.GetValidRuntimeOrFunctionErrorType`): kept when it contains
/// `(Runtime|Function)\.[A-Z][a-zA-Z]+` (the emulator's unanchored match), otherwise
/// `Function.Unknown` for `Function.…` values and `Runtime.Unknown` for the rest.
pub(crate) fn valid_error_type(value: &str) -> String {
    let matches_at = |i: usize| {
        let rest = &value[i..];
        let Some(after) = rest
            .strip_prefix("Runtime.")
            .or_else(|| rest.strip_prefix("Function."))
        else {
            return false;
        };
        let mut chars = after.chars();
        chars.next().is_some_and(|c| c.is_ascii_uppercase())
            && chars.next().is_some_and(|c| c.is_ascii_alphabetic())
    };
    if value.char_indices().any(|(i, _)| matches_at(i)) {
        value.to_string()
    } else if value.starts_with("Function.") {
        "Function.Unknown".to_string()
    } else {
        "Runtime.Unknown".to_string()
    }
}

/// The error type of a posted error: from the header when there is one, else the body's
/// `errorType` (Go sends no header), else `fallback`.
fn error_type(headers: &HeaderMap, body: &[u8], fallback: &str) -> String {
    if let Some(t) = headers.get(ERROR_TYPE) {
        return valid_error_type(t.to_str().unwrap_or_default().trim());
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errorType")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

/// A function error reported after (or instead of) a response body: the trailers
/// `Lambda-Runtime-Function-Error-Type` and `Lambda-Runtime-Function-Error-Body` (base64
/// of the error JSON). The caller receives the decoded body; a body that is not JSON is
/// wrapped as `{"errorType","errorMessage"}`.
fn reported_error(error_type: &str, body_b64: Option<&[u8]>) -> Outcome {
    let error_type = valid_error_type(error_type.trim());
    let decoded = body_b64.and_then(|b| {
        base64::engine::general_purpose::STANDARD
            .decode(trim_ascii(b))
            .ok()
    });
    match decoded {
        Some(body) if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok() => {
            Outcome::Error {
                error_type,
                body: Bytes::from(body),
            }
        }
        Some(body) => {
            let message = String::from_utf8_lossy(&body).into_owned();
            Outcome::platform_error(&error_type, message)
        }
        None => Outcome::platform_error(
            &error_type,
            "The function failed while streaming its response",
        ),
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &b[start..end]
}

/// The error trailers, when the runtime sent a non-empty error type in them.
fn trailer_error(trailers: Option<&HeaderMap>) -> Option<Outcome> {
    let t = trailers?;
    let error_type = t.get(ERROR_TYPE)?.to_str().ok()?.trim();
    if error_type.is_empty() {
        return None;
    }
    Some(reported_error(
        error_type,
        t.get(ERROR_BODY).map(HeaderValue::as_bytes),
    ))
}

/// The Rust client (`lambda_runtime`, `ToStreamErrorTrailer`) writes a mid-stream error
/// as two header lines at the end of the body instead of as trailers:
/// `Lambda-Runtime-Function-Error-Type: T\r\nLambda-Runtime-Function-Error-Body: B\r\n`.
fn error_lines_in_body(body: &[u8]) -> Option<Outcome> {
    const TYPE: &[u8] = b"Lambda-Runtime-Function-Error-Type: ";
    const BODY: &[u8] = b"\r\nLambda-Runtime-Function-Error-Body: ";
    let tail = body.strip_suffix(b"\r\n")?;
    let start = tail.windows(TYPE.len()).rposition(|w| w == TYPE)?;
    let rest = &tail[start + TYPE.len()..];
    let split = rest.windows(BODY.len()).position(|w| w == BODY)?;
    let error_type = std::str::from_utf8(&rest[..split]).ok()?;
    let b64 = &rest[split + BODY.len()..];
    if error_type.contains(['\r', '\n']) || b64.contains(&b'\n') {
        return None;
    }
    Some(reported_error(error_type, Some(b64)))
}

/// Splits a body in the HTTP-integration format into its JSON prelude and the body after
/// the 8 NUL bytes (JSON text cannot contain a NUL byte, so the first run is the
/// delimiter). `None` when there is no delimiter.
pub(crate) fn split_prelude(body: &Bytes) -> Option<(Bytes, Bytes)> {
    let at = body
        .windows(PRELUDE_DELIMITER.len())
        .position(|w| w == PRELUDE_DELIMITER)?;
    Some((body.slice(..at), body.slice(at + PRELUDE_DELIMITER.len()..)))
}

/// What a `/response` post (read in full, without error trailers) means.
fn response_outcome(headers: &HeaderMap, streaming: bool, body: Bytes) -> Outcome {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    let http_integration = content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(HTTP_INTEGRATION))
    });
    if !streaming && !http_integration {
        return Outcome::Success(body);
    }
    if streaming {
        if let Some(err) = error_lines_in_body(&body) {
            return err;
        }
    }
    let (http_prelude, body) = match http_integration.then(|| split_prelude(&body)).flatten() {
        Some((prelude, rest)) => (Some(prelude), rest),
        None => (None, body),
    };
    Outcome::Streamed {
        content_type,
        http_prelude,
        body,
    }
}

async fn response(
    State(st): State<Arc<RapiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The emulator's order: state (403), response mode (400), request id (400).
    let streaming = match headers.get(RESPONSE_MODE) {
        None => false,
        Some(mode) if mode.as_bytes() == b"streaming" => true,
        Some(mode) => {
            let mode = String::from_utf8_lossy(mode.as_bytes()).into_owned();
            return match take_current(&st, &id) {
                Err(Refusal::NoInvocation) => Refusal::NoInvocation.into_response(),
                other => {
                    // The invocation fails (`Runtime.InvalidResponseModeHeader`).
                    if let Ok(cur) = other {
                        let _ = cur.reply.send(Outcome::platform_error(
                            "Runtime.InvalidResponseModeHeader",
                            format!("Invalid Lambda-Runtime-Function-Response-Mode {mode:?}: the only accepted value is streaming"),
                        ));
                    }
                    rapi_error(
                        StatusCode::BAD_REQUEST,
                        "InvalidFunctionResponseMode",
                        "Invalid function response mode",
                    )
                }
            };
        }
    };
    let Current { reply, sink, .. } = match take_current(&st, &id) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    if let (true, Some(sink)) = (streaming, sink) {
        let (outcome, answer) = stream_response(&headers, body, &sink).await;
        let _ = reply.send(outcome);
        return answer;
    }
    // Read at most the limit: a hostile runtime cannot make us buffer more.
    let read = match read_body(&headers, body, MAX_RESPONSE).await {
        Ok(r) => r,
        Err(ReadError::TooLarge) => {
            let _ = reply.send(Outcome::platform_error(
                "Function.ResponseSizeTooLarge",
                format!("Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."),
            ));
            return too_large();
        }
        Err(ReadError::Truncated) => {
            let _ = reply.send(Outcome::platform_error(
                "Runtime.TruncatedResponse",
                "The runtime's response ended before its end (the connection broke)",
            ));
            return truncated();
        }
    };
    let outcome = trailer_error(read.trailers.as_ref())
        .unwrap_or_else(|| response_outcome(&headers, streaming, read.data));
    let _ = reply.send(outcome);
    accepted_or_next(st, &headers).await
}

/// Where a streamed body is in [`stream_response`].
struct StreamState<'a> {
    sink: &'a ResponseSink,
    /// The reader went away: the rest is read and dropped.
    gone: bool,
    /// Bytes passed on so far.
    sent: usize,
}

impl StreamState<'_> {
    async fn send(&mut self, part: StreamPart) {
        if !self.gone && self.sink.send(part).await.is_err() {
            self.gone = true;
        }
    }

    async fn chunk(&mut self, data: Bytes) {
        if data.is_empty() {
            return;
        }
        self.sent += data.len();
        self.send(StreamPart::Chunk(data)).await;
    }
}

/// How much of an HTTP-integration body is searched for the prelude's end.
const PRELUDE_MAX: usize = 64 * 1024;

/// Passes a streamed `/response` body on to `sink` as it arrives: a [`StreamPart::Head`]
/// (after the HTTP-integration prelude, when there is one), then the chunks. Returns the
/// invocation's outcome and the answer to the runtime.
async fn stream_response(
    headers: &HeaderMap,
    mut body: Body,
    sink: &ResponseSink,
) -> (Outcome, Response) {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    let http_integration = content_type.as_deref().is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(HTTP_INTEGRATION))
    });
    let mut out = StreamState {
        sink,
        gone: false,
        sent: 0,
    };
    // Until the head is sent: the start of an HTTP-integration body (its prelude).
    let mut start: Option<Vec<u8>> = if http_integration {
        Some(Vec::new())
    } else {
        out.send(StreamPart::Head {
            content_type: content_type.clone(),
            http_prelude: None,
        })
        .await;
        None
    };
    // A chunk that may be the error lines Rust's client appends (held back until the next).
    let mut held: Option<Bytes> = None;
    let mut trailers: Option<HeaderMap> = None;
    loop {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = match frame {
            Ok(f) => f,
            Err(_) => {
                let outcome = Outcome::platform_error(
                    "Runtime.TruncatedResponse",
                    "The runtime's response ended before its end (the connection broke)",
                );
                return (outcome, truncated());
            }
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.get_or_insert_with(HeaderMap::new).extend(t);
                }
                continue;
            }
        };
        if let Some(buf) = start.as_mut() {
            buf.extend_from_slice(&data);
            let whole = Bytes::from(std::mem::take(buf));
            match split_prelude(&whole) {
                Some((prelude, rest)) => {
                    start = None;
                    out.send(StreamPart::Head {
                        content_type: content_type.clone(),
                        http_prelude: Some(prelude),
                    })
                    .await;
                    out.chunk(rest).await;
                }
                None if whole.len() > PRELUDE_MAX => {
                    // No prelude after all: the body as it is.
                    start = None;
                    out.send(StreamPart::Head {
                        content_type: content_type.clone(),
                        http_prelude: None,
                    })
                    .await;
                    out.chunk(whole).await;
                }
                None => *buf = whole.to_vec(),
            }
            continue;
        }
        if let Some(h) = held.take() {
            out.chunk(h).await;
        }
        let room = STREAM_RESPONSE_MAX.saturating_sub(out.sent);
        if data.len() <= room && data.starts_with(b"Lambda-Runtime-Function-Error-Type: ") {
            held = Some(data);
        } else if data.len() <= room {
            out.chunk(data).await;
        } else {
            // Cut at the limit, as Lambda does: the reader's stream ends in the error.
            out.chunk(data.slice(..room)).await;
            drain(body).await;
            let outcome = Outcome::platform_error(
                "Function.ResponseSizeTooLarge",
                format!("Response payload size exceeded maximum allowed payload size ({STREAM_RESPONSE_MAX} bytes)."),
            );
            let answer = rapi_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("Exceeded maximum allowed payload size ({STREAM_RESPONSE_MAX} bytes)."),
            );
            return (outcome, answer);
        }
    }
    if let Some(buf) = start.take() {
        // The body ended inside what should have been the prelude.
        let whole = Bytes::from(buf);
        let (http_prelude, rest) = match split_prelude(&whole) {
            Some((p, rest)) => (Some(p), rest),
            None => (None, whole),
        };
        out.send(StreamPart::Head {
            content_type: content_type.clone(),
            http_prelude,
        })
        .await;
        held = Some(rest);
    }
    if let Some(err) = trailer_error(trailers.as_ref()) {
        if let Some(h) = held {
            out.chunk(h).await;
        }
        return (err, accepted());
    }
    if let Some(h) = held {
        if let Some(err) = error_lines_in_body(&h) {
            return (err, accepted());
        }
        out.chunk(h).await;
    }
    let outcome = Outcome::Streamed {
        content_type,
        http_prelude: None,
        body: Bytes::new(),
    };
    (outcome, accepted())
}

async fn error(
    State(st): State<Arc<RapiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let reply = match take_current(&st, &id) {
        Ok(r) => r.reply,
        Err(refusal) => return refusal.into_response(),
    };
    let body = match read_body(&headers, body, MAX_RESPONSE).await {
        Ok(r) => r.data,
        Err(e) => {
            let _ = reply.send(Outcome::platform_error(
                "Function.ResponseSizeTooLarge",
                format!("Error payload size exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."),
            ));
            return match e {
                ReadError::TooLarge => too_large(),
                ReadError::Truncated => truncated(),
            };
        }
    };
    let error_type = error_type(&headers, &body, "Function.Unknown");
    let _ = reply.send(Outcome::Error { error_type, body });
    accepted_or_next(st, &headers).await
}

async fn init_error(State(st): State<Arc<RapiState>>, headers: HeaderMap, body: Body) -> Response {
    // Init is over once the runtime has answered an invocation, and it fails only once.
    if *st.answered.borrow() || st.init_error.lock().unwrap().is_some() {
        return state_transition("init is over");
    }
    let body = match read_body(&headers, body, MAX_RESPONSE).await {
        Ok(r) => r.data,
        Err(ReadError::TooLarge) => return too_large(),
        Err(ReadError::Truncated) => return truncated(),
    };
    let error_type = error_type(&headers, &body, "Runtime.Unknown");
    let outcome = Outcome::Error { error_type, body };
    // Invocations already in progress fail with the init error at once.
    for (_, cur) in st.current.lock().unwrap().drain() {
        let _ = cur.reply.send(outcome.clone());
    }
    *st.init_error.lock().unwrap() = Some(outcome);
    accepted()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn error_types_are_validated_like_the_emulator() {
        assert_eq!(
            valid_error_type("Runtime.ImportModuleError"),
            "Runtime.ImportModuleError"
        );
        assert_eq!(valid_error_type("Function.MyError"), "Function.MyError");
        // Unanchored, as Go's regexp.MatchString.
        assert_eq!(valid_error_type("X-Runtime.Exit"), "X-Runtime.Exit");
        assert_eq!(valid_error_type("unhandled"), "Runtime.Unknown");
        assert_eq!(valid_error_type("Runtime.E"), "Runtime.Unknown");
        assert_eq!(valid_error_type("Runtime.lower"), "Runtime.Unknown");
        assert_eq!(valid_error_type("Function.x"), "Function.Unknown");
        assert_eq!(valid_error_type(""), "Runtime.Unknown");
    }

    #[test]
    fn prelude_is_split_at_the_first_eight_nuls() {
        let body = Bytes::from_static(b"{\"statusCode\":201}\0\0\0\0\0\0\0\0a\0\0\0\0\0\0\0\0b");
        let (p, b) = split_prelude(&body).unwrap();
        assert_eq!(&p[..], b"{\"statusCode\":201}");
        assert_eq!(&b[..], b"a\0\0\0\0\0\0\0\0b");
        assert!(split_prelude(&Bytes::from_static(b"{}\0\0\0")).is_none());
    }

    #[test]
    fn rust_error_lines_at_the_end_of_a_stream_are_an_error() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("stream broke");
        let body = format!("chunk1chunk2Lambda-Runtime-Function-Error-Type: Runtime.StreamError\r\nLambda-Runtime-Function-Error-Body: {b64}\r\n");
        match error_lines_in_body(body.as_bytes()) {
            Some(Outcome::Error { error_type, body }) => {
                assert_eq!(error_type, "Runtime.StreamError");
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["errorMessage"], "stream broke");
                assert_eq!(v["errorType"], "Runtime.StreamError");
            }
            other => panic!("{other:?}"),
        }
        assert!(error_lines_in_body(b"just data\r\n").is_none());
    }

    #[test]
    fn missing_header_takes_the_body_error_type() {
        let h = HeaderMap::new();
        assert_eq!(
            error_type(&h, br#"{"errorType":"ValueError"}"#, "Function.Unknown"),
            "ValueError"
        );
        assert_eq!(
            error_type(&h, b"nope", "Function.Unknown"),
            "Function.Unknown"
        );
        let mut h = HeaderMap::new();
        h.insert(ERROR_TYPE, HeaderValue::from_static("unhandled"));
        assert_eq!(
            error_type(&h, br#"{"errorType":"ValueError"}"#, "Function.Unknown"),
            "Runtime.Unknown"
        );
    }

    /// A Runtime API on loopback, one invocation at a time: its address, where to queue
    /// invocations, and what stops it.
    async fn start() -> (String, mpsc::Sender<Pending>, oneshot::Sender<()>) {
        start_with(1).await
    }

    /// [`start`] for a runtime that may hold `max` invocations at once.
    async fn start_with(max: usize) -> (String, mpsc::Sender<Pending>, oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = mpsc::channel(1);
        let (stop_tx, stop_rx) = oneshot::channel();
        let state = Arc::new(RapiState::new(rx));
        state.set_max_concurrency(max);
        tokio::spawn(serve(listener, state, stop_rx));
        (addr, tx, stop_tx)
    }

    /// Queues `inv` for the Runtime API (3 s timeout); the receiver gets its outcome.
    fn enqueue(tx: &mpsc::Sender<Pending>, inv: Invocation) -> oneshot::Receiver<Outcome> {
        let (picked, _) = oneshot::channel();
        let (reply, reply_rx) = oneshot::channel();
        tx.try_send(Pending {
            inv,
            timeout: Duration::from_secs(3),
            picked,
            reply,
        })
        .ok()
        .unwrap();
        reply_rx
    }

    fn invocation(tx: &mpsc::Sender<Pending>, id: &str) -> oneshot::Receiver<Outcome> {
        enqueue(
            tx,
            Invocation {
                request_id: id.into(),
                payload: Bytes::from_static(b"{\"x\":1}"),
                invoked_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
                trace_id: Some("Root=1-5e1b4151-5ac6c58f5b5dbd6a6b5e6a5c;Sampled=0".into()),
                traceparent: Some("00-5e1b41515ac6c58f5b5dbd6a6b5e6a5c-53995c3f42cd8ad8-00".into()),
                tracestate: Some("congo=t61rcWkgMzE".into()),
                client_context: Some(r#"{"custom":{"k":"v"}}"#.into()),
                stream: None,
                http: None,
            },
        )
    }

    /// An invocation whose caller reads a stream: its outcome and the parts the sink gets.
    fn streamed_invocation(
        tx: &mpsc::Sender<Pending>,
        id: &str,
    ) -> (oneshot::Receiver<Outcome>, mpsc::Receiver<StreamPart>) {
        let (sink, parts) = mpsc::channel(4);
        let reply_rx = enqueue(
            tx,
            Invocation {
                request_id: id.into(),
                payload: Bytes::from_static(b"{}"),
                invoked_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
                trace_id: None,
                traceparent: None,
                tracestate: None,
                client_context: None,
                stream: Some(sink),
                http: None,
            },
        );
        (reply_rx, parts)
    }

    /// A streamed `/response` reaches the sink part by part: the head (with the prelude
    /// split off), the chunks while the body is still open, and the outcome at the end.
    #[tokio::test]
    async fn streamed_response_goes_to_the_sink_as_it_arrives() {
        let (addr, tx, _stop) = start().await;
        let (reply_rx, mut parts) = streamed_invocation(&tx, "s-1");
        raw(&addr, b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!("POST /2018-06-01/runtime/invocation/s-1/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Type: {HTTP_INTEGRATION}\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        // The prelude and the first bytes of the body in one chunk.
        s.write_all(b"1a\r\n{\"statusCode\":7}\0\0\0\0\0\0\0\0ab\r\n")
            .await
            .unwrap();
        assert_eq!(
            parts.recv().await.unwrap(),
            StreamPart::Head {
                content_type: Some(HTTP_INTEGRATION.into()),
                http_prelude: Some(Bytes::from_static(b"{\"statusCode\":7}")),
            }
        );
        assert_eq!(
            parts.recv().await.unwrap(),
            StreamPart::Chunk(Bytes::from_static(b"ab"))
        );
        // The next chunk arrives before the body ends.
        s.write_all(b"3\r\ncde\r\n").await.unwrap();
        assert_eq!(
            parts.recv().await.unwrap(),
            StreamPart::Chunk(Bytes::from_static(b"cde"))
        );
        // A failure in the trailers ends the invocation in an error.
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(r#"{"errorType":"Boom","errorMessage":"late"}"#);
        s.write_all(format!("0\r\nLambda-Runtime-Function-Error-Type: Function.Boom\r\nLambda-Runtime-Function-Error-Body: {b64}\r\n\r\n").as_bytes()).await.unwrap();
        let mut ans = Vec::new();
        s.read_to_end(&mut ans).await.unwrap();
        assert_eq!(status_of(&String::from_utf8_lossy(&ans)), 202);
        match reply_rx.await.unwrap() {
            Outcome::Error { error_type, .. } => assert_eq!(error_type, "Function.Boom"),
            other => panic!("{other:?}"),
        }
        assert!(parts.recv().await.is_none());
    }

    /// Past the 20 MiB soft limit the stream is cut and the invocation fails.
    #[tokio::test]
    async fn streamed_response_past_the_limit_is_cut() {
        let (addr, tx, _stop) = start().await;
        let (reply_rx, mut parts) = streamed_invocation(&tx, "big");
        raw(&addr, b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let reader = tokio::spawn(async move {
            let mut n = 0usize;
            while let Some(p) = parts.recv().await {
                if let StreamPart::Chunk(c) = p {
                    n += c.len();
                }
            }
            n
        });
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tokio::spawn(async move {
            let _ = s.write_all(b"POST /2018-06-01/runtime/invocation/big/response HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nLambda-Runtime-Function-Response-Mode: streaming\r\n\r\n").await;
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..24 {
                let mut c = b"100000\r\n".to_vec();
                c.extend_from_slice(&chunk);
                c.extend_from_slice(b"\r\n");
                if s.write_all(&c).await.is_err() {
                    return;
                }
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
            let mut ans = Vec::new();
            let _ = s.read_to_end(&mut ans).await;
        });
        match reply_rx.await.unwrap() {
            Outcome::Error { error_type, .. } => {
                assert_eq!(error_type, "Function.ResponseSizeTooLarge")
            }
            other => panic!("{other:?}"),
        }
        let passed_on = reader.await.unwrap();
        assert_eq!(passed_on, STREAM_RESPONSE_MAX);
    }

    /// Sends raw bytes on a new connection; returns the whole answer (connection closed).
    async fn raw(addr: &str, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status_of(answer: &str) -> u16 {
        answer[9..12].parse().unwrap()
    }

    #[tokio::test]
    async fn several_invocations_at_once_up_to_the_instance_concurrency() {
        let (addr, tx, _stop) = start_with(2).await;
        let next = b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let a = invocation(&tx, "rid-a");
        assert_eq!(status_of(&raw(&addr, next).await), 200);
        let b = invocation(&tx, "rid-b");
        assert_eq!(status_of(&raw(&addr, next).await), 200);
        // A third `next` while two are held: refused, naming the limit.
        let third = raw(&addr, next).await;
        assert_eq!(status_of(&third), 403, "{third}");
        assert!(third.contains("AWS_LAMBDA_MAX_CONCURRENCY"), "{third}");
        // Answered in either order, each to its own caller.
        let post = |id: &str, body: &str| {
            format!(
                "POST /2018-06-01/runtime/invocation/{id}/response HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
        };
        assert_eq!(
            status_of(&raw(&addr, post("rid-b", "\"B\"").as_bytes()).await),
            202
        );
        assert_eq!(
            b.await.unwrap(),
            Outcome::Success(Bytes::from_static(b"\"B\""))
        );
        // Not in progress (any more): refused.
        let again = raw(&addr, post("rid-b", "1").as_bytes()).await;
        assert_eq!(status_of(&again), 400, "{again}");
        assert_eq!(
            status_of(&raw(&addr, post("rid-a", "\"A\"").as_bytes()).await),
            202
        );
        assert_eq!(
            a.await.unwrap(),
            Outcome::Success(Bytes::from_static(b"\"A\""))
        );
        let none = raw(&addr, post("rid-a", "1").as_bytes()).await;
        assert_eq!(status_of(&none), 403, "{none}");
    }

    /// A post with `Nimbus-Runtime-Next` is answered with the next invocation (its result
    /// delivered first); a refused one with its refusal, as without the header.
    #[tokio::test]
    async fn a_post_can_ask_for_the_next_invocation_in_the_same_exchange() {
        let (addr, tx, _stop) = start().await;
        let first = invocation(&tx, "rid-1");
        let next = raw(&addr, b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert_eq!(status_of(&next), 200, "{next}");

        // The answer waits for the next invocation: queued only after the result came.
        let post = tokio::spawn({
            let addr = addr.clone();
            async move {
                raw(&addr, b"POST /2018-06-01/runtime/invocation/rid-1/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nNimbus-Runtime-Next: 1\r\nContent-Length: 7\r\n\r\n{\"a\":1}").await
            }
        });
        match first.await.unwrap() {
            Outcome::Success(body) => assert_eq!(&body[..], br#"{"a":1}"#),
            other => panic!("{other:?}"),
        }
        assert!(!post.is_finished());
        let second = invocation(&tx, "rid-2");
        let ans = post.await.unwrap();
        assert_eq!(status_of(&ans), 200, "{ans}");
        assert!(
            ans.to_ascii_lowercase()
                .contains("lambda-runtime-aws-request-id: rid-2\r\n"),
            "{ans}"
        );
        assert!(ans.ends_with("{\"x\":1}"), "{ans}");

        // An error post may ask too.
        let third = invocation(&tx, "rid-3");
        let ans = raw(&addr, b"POST /2018-06-01/runtime/invocation/rid-2/error HTTP/1.1\r\nHost: x\r\nConnection: close\r\nNimbus-Runtime-Next: 1\r\nContent-Length: 2\r\n\r\n{}").await;
        assert!(matches!(second.await.unwrap(), Outcome::Error { .. }));
        assert_eq!(status_of(&ans), 200, "{ans}");
        assert!(
            ans.to_ascii_lowercase()
                .contains("lambda-runtime-aws-request-id: rid-3\r\n"),
            "{ans}"
        );

        // Refused (not the invocation in progress): the refusal, and rid-3 is still open.
        let ans = raw(&addr, b"POST /2018-06-01/runtime/invocation/nope/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nNimbus-Runtime-Next: 1\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(status_of(&ans), 400, "{ans}");
        // Without the header: 202 as before.
        let ans = raw(&addr, b"POST /2018-06-01/runtime/invocation/rid-3/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(status_of(&ans), 202, "{ans}");
        assert!(matches!(third.await.unwrap(), Outcome::Success(_)));
    }

    #[tokio::test]
    async fn next_chunked_trailers_and_refusals() {
        let (addr, tx, _stop) = start().await;
        let reply = invocation(&tx, "rid-1");
        let next = raw(
            &addr,
            b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert_eq!(status_of(&next), 200, "{next}");
        let lower = next.to_ascii_lowercase();
        for h in [
            "content-type: application/json\r\n",
            "lambda-runtime-aws-request-id: rid-1\r\n",
            "lambda-runtime-deadline-ms: ",
            "lambda-runtime-invoked-function-arn: arn:aws:lambda:",
            "lambda-runtime-trace-id: root=1-",
            "nimbus-runtime-traceparent: 00-5e1b41515ac6c58f5b5dbd6a6b5e6a5c-53995c3f42cd8ad8-00\r\n",
            "nimbus-runtime-tracestate: congo=t61rcwkgmze\r\n",
            "lambda-runtime-client-context: {\"custom\":{\"k\":\"v\"}}\r\n",
        ] {
            assert!(lower.contains(h), "missing {h:?} in {next}");
        }
        assert!(next.ends_with("{\"x\":1}"), "{next}");

        // Another runtime's id: 400 InvalidRequestID; bad mode: 400 and the invocation fails.
        let other = raw(&addr, b"POST /2018-06-01/runtime/invocation/nope/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(status_of(&other), 400, "{other}");
        assert!(
            other.contains(r#""errorType":"InvalidRequestID""#),
            "{other}"
        );

        // Go-style: chunked, trailers declared, a trailer error after the data.
        let b64 = base64::engine::general_purpose::STANDARD
            .encode(r#"{"errorType":"Oops","errorMessage":"mid-stream"}"#);
        let req = format!("POST /2018-06-01/runtime/invocation/rid-1/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nLambda-Runtime-Function-Response-Mode: streaming\r\nTrailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n5\r\nhello\r\n0\r\nLambda-Runtime-Function-Error-Type: Function.Oops\r\nLambda-Runtime-Function-Error-Body: {b64}\r\n\r\n");
        let ans = raw(&addr, req.as_bytes()).await;
        assert_eq!(status_of(&ans), 202, "{ans}");
        assert!(ans.ends_with(r#"{"status":"OK"}"#), "{ans}");
        match reply.await.unwrap() {
            Outcome::Error { error_type, body } => {
                assert_eq!(error_type, "Function.Oops");
                assert_eq!(
                    &body[..],
                    br#"{"errorType":"Oops","errorMessage":"mid-stream"}"#
                );
            }
            other => panic!("{other:?}"),
        }

        // Nothing in progress now: 403.
        let late = raw(&addr, b"POST /2018-06-01/runtime/invocation/rid-1/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(status_of(&late), 403, "{late}");
        assert!(
            late.contains(r#""errorType":"InvalidStateTransition""#),
            "{late}"
        );

        // Chunked with empty trailers and a prelude: a streamed HTTP response.
        let reply = invocation(&tx, "rid-2");
        raw(&addr, b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let prelude = b"{\"statusCode\":201}\0\0\0\0\0\0\0\0";
        let mut req = format!("POST /2018-06-01/runtime/invocation/rid-2/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\nContent-Type: {HTTP_INTEGRATION}\r\nLambda-Runtime-Function-Response-Mode: streaming\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n\r\n{:x}\r\n", prelude.len()).into_bytes();
        req.extend_from_slice(prelude);
        req.extend_from_slice(
            b"\r\n3\r\nabc\r\n3\r\ndef\r\n0\r\nLambda-Runtime-Function-Error-Type: \r\n\r\n",
        );
        let ans = raw(&addr, &req).await;
        assert_eq!(status_of(&ans), 202, "{ans}");
        match reply.await.unwrap() {
            Outcome::Streamed {
                content_type,
                http_prelude,
                body,
            } => {
                assert_eq!(content_type.as_deref(), Some(HTTP_INTEGRATION));
                assert_eq!(&http_prelude.unwrap()[..], b"{\"statusCode\":201}");
                assert_eq!(&body[..], b"abcdef");
            }
            other => panic!("{other:?}"),
        }

        // Too large by Content-Length: 413 in Lambda's shape, and the invocation fails.
        let reply = invocation(&tx, "rid-3");
        raw(&addr, b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let ans = raw(&addr, format!("POST /2018-06-01/runtime/invocation/rid-3/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", MAX_RESPONSE + DRAIN_MAX + 1).as_bytes()).await;
        assert_eq!(status_of(&ans), 413, "{ans}");
        assert!(ans.contains(r#"{"errorMessage":"Exceeded maximum allowed payload size (6291556 bytes).","errorType":"RequestEntityTooLarge"}"#), "{ans}");
        match reply.await.unwrap() {
            Outcome::Error { error_type, .. } => {
                assert_eq!(error_type, "Function.ResponseSizeTooLarge")
            }
            other => panic!("{other:?}"),
        }

        // An invalid response mode fails the invocation with a 400.
        let reply = invocation(&tx, "rid-4");
        raw(&addr, b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let ans = raw(&addr, b"POST /2018-06-01/runtime/invocation/rid-4/response HTTP/1.1\r\nHost: x\r\nConnection: close\r\nLambda-Runtime-Function-Response-Mode: buffered\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(status_of(&ans), 400, "{ans}");
        assert!(
            ans.contains(r#""errorType":"InvalidFunctionResponseMode""#),
            "{ans}"
        );
        match reply.await.unwrap() {
            Outcome::Error { error_type, .. } => {
                assert_eq!(error_type, "Runtime.InvalidResponseModeHeader")
            }
            other => panic!("{other:?}"),
        }

        // init/error once an invocation was answered: 403.
        let ans = raw(&addr, b"POST /2018-06-01/runtime/init/error HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}").await;
        assert_eq!(status_of(&ans), 403, "{ans}");
    }
}
