//! The Lambda Runtime API served to one instance (`AWS_LAMBDA_RUNTIME_API`).

use crate::{Invocation, Outcome};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Lambda's payload cap on the Runtime API (`MaxPayloadSize`, 6 MiB + 100 bytes).
pub(crate) const MAX_RESPONSE: usize = 6 * 1024 * 1024 + 100;

/// An invocation waiting for the runtime to pick it up.
pub(crate) struct Pending {
    pub inv: Invocation,
    pub timeout: Duration,
    /// Told when the runtime takes the invocation (the deadline starts then).
    pub picked: oneshot::Sender<Instant>,
    pub reply: oneshot::Sender<Outcome>,
}

struct Current {
    request_id: String,
    reply: oneshot::Sender<Outcome>,
}

/// State shared between an instance and its Runtime API listener.
pub(crate) struct RapiState {
    pub next_rx: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    current: Mutex<Option<Current>>,
    /// The error the runtime posted to `/init/error`, if any.
    pub init_error: Mutex<Option<Outcome>>,
    /// When the runtime first asked for work (end of init).
    pub first_next: Mutex<Option<Instant>>,
}

impl RapiState {
    pub fn new(next_rx: mpsc::Receiver<Pending>) -> Self {
        Self {
            next_rx: tokio::sync::Mutex::new(next_rx),
            current: Mutex::new(None),
            init_error: Mutex::new(None),
            first_next: Mutex::new(None),
        }
    }
}

pub(crate) fn router(state: Arc<RapiState>) -> Router {
    Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response).layer(DefaultBodyLimit::disable()),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .layer(DefaultBodyLimit::max(MAX_RESPONSE + 1024))
        .with_state(state)
}

fn rapi_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message });
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

async fn next(State(st): State<Arc<RapiState>>) -> Response {
    st.first_next
        .lock()
        .unwrap()
        .get_or_insert_with(Instant::now);
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
    *st.current.lock().unwrap() = Some(Current {
        request_id: inv.request_id.clone(),
        reply,
    });
    let _ = picked.send(now);

    let mut headers = HeaderMap::new();
    let mut put = |name: &'static str, value: &str| {
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
    if let Some(c) = &inv.client_context {
        put("lambda-runtime-client-context", c);
    }
    put("content-type", "application/json");
    (StatusCode::OK, headers, Body::from(inv.payload)).into_response()
}

/// Why a post about an invocation was refused.
enum Refusal {
    /// The id is not the invocation in progress.
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
            Refusal::NoInvocation => rapi_error(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                "State transition is not allowed: no invocation in progress",
            ),
        }
    }
}

/// Takes the current invocation if `id` names it.
fn take_current(st: &RapiState, id: &str) -> Result<oneshot::Sender<Outcome>, Refusal> {
    let mut cur = st.current.lock().unwrap();
    match cur.as_ref() {
        Some(c) if c.request_id == id => Ok(cur.take().unwrap().reply),
        Some(_) => Err(Refusal::InvalidRequestId),
        None => Err(Refusal::NoInvocation),
    }
}

async fn response(
    State(st): State<Arc<RapiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Some(mode) = headers.get("lambda-runtime-function-response-mode") {
        if mode.as_bytes() != b"streaming" {
            return rapi_error(
                StatusCode::BAD_REQUEST,
                "InvalidFunctionResponseMode",
                "Invalid function response mode",
            );
        }
    }
    let reply = match take_current(&st, &id) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    // Read at most the limit: a hostile runtime cannot make us buffer more.
    let Ok(body) = axum::body::to_bytes(body, MAX_RESPONSE).await else {
        let _ = reply.send(Outcome::platform_error(
            "Function.ResponseSizeTooLarge",
            format!("Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."),
        ));
        return rapi_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            &format!("Exceeded maximum allowed payload size ({MAX_RESPONSE} bytes)."),
        );
    };
    let _ = reply.send(Outcome::Success(body));
    accepted()
}

/// Error type from the header when it has Lambda's shape, else from the body.
fn error_type(headers: &HeaderMap, body: &[u8], fallback: &str) -> String {
    if let Some(t) = headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
    {
        if t.starts_with("Runtime.") || t.starts_with("Function.") {
            return t.to_string();
        }
    }
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("errorType")
                .and_then(|t| t.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| fallback.to_string())
}

async fn error(
    State(st): State<Arc<RapiState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = match take_current(&st, &id) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    let error_type = error_type(&headers, &body, "Function.Unknown");
    let _ = reply.send(Outcome::Error { error_type, body });
    accepted()
}

async fn init_error(State(st): State<Arc<RapiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let error_type = error_type(&headers, &body, "Runtime.Unknown");
    let outcome = Outcome::Error { error_type, body };
    // If an invocation is already in progress, it fails with the init error at once.
    if let Some(cur) = st.current.lock().unwrap().take() {
        let _ = cur.reply.send(outcome.clone());
    }
    *st.init_error.lock().unwrap() = Some(outcome);
    accepted()
}
