//! The SQS API on the main listener, over the built-in queues: both protocols (JSON with
//! `X-Amz-Target: AmazonSQS.*` at `POST /`; the query protocol's signed form at `POST /`
//! or at a queue URL's path `/ACCOUNT/NAME`) decoded by `nimbus-sqs`, run on the
//! [`QueueStore`], answered in the request's protocol. The same queues as `/v1/queues` and
//! event-source mappings; authorised as `sqs:<Op>` on the queue's ARN (`auth.rs`).

use crate::auth::Check;
use crate::queues::{now_ms, runner};
use crate::{ApiError, Gateway};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use nimbus_core::arn::{ACCOUNT, REGION};
use nimbus_sqs::attributes::{self, MessageAttribute};
use nimbus_sqs::digest;
use nimbus_sqs::{invalid, Protocol, Request as SqsRequest, SqsError};
use nimbus_store::{
    is_fifo_name, is_receipt_handle, valid_fifo_token, validate_queue_name, DedupScope, Message,
    NewMessage, QueueInfo, QueueSettings, QueueStore, RedrivePolicy, StoreError, ThroughputLimit,
    MAX_BATCH, MAX_MESSAGE_BYTES,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Largest SQS request body read (a 1 MiB batch, escaped, with room to spare; the abuse
/// limits bound it first).
const BODY_MAX: usize = 6 * 1024 * 1024;

/// Whether a request is for the SQS API, in which protocol: JSON when `X-Amz-Target` names
/// an `AmazonSQS.` operation; query when a form is signed for service `sqs` and posted to
/// `/` or a queue URL's path.
pub(crate) fn protocol_of(method: &Method, path: &str, headers: &HeaderMap) -> Option<Protocol> {
    if method != Method::POST {
        return None;
    }
    let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok());
    if target.is_some_and(|t| t.starts_with(nimbus_sqs::TARGET_PREFIX)) {
        return (path == "/").then_some(Protocol::Json);
    }
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
    let signed_for_sqs = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split_once("Credential=")?.1.split([',', ' ']).next())
        .is_some_and(|cred| cred.split('/').nth(3) == Some("sqs"));
    (form && signed_for_sqs && (path == "/" || queue_path(path).is_some()))
        .then_some(Protocol::Query)
}

/// The queue name of a queue URL's path `/ACCOUNT/NAME`.
fn queue_path(path: &str) -> Option<&str> {
    let mut segs = path.trim_start_matches('/').split('/');
    match (segs.next(), segs.next(), segs.next()) {
        (Some(acct), Some(name), None) if !acct.is_empty() && !name.is_empty() => Some(name),
        _ => None,
    }
}

/// What an SQS request needs authorised: `sqs:<Op>` on the queue's ARN (`*` for
/// ListQueues). A body that does not decode needs any valid key; the handler refuses it.
pub(crate) fn checks(parts: &axum::http::request::Parts, body: &[u8]) -> Vec<Check> {
    let Some(protocol) = protocol_of(&parts.method, parts.uri.path(), &parts.headers) else {
        return Vec::new();
    };
    let body = with_path_queue(protocol, parts.uri.path(), body);
    match nimbus_sqs::decode(protocol, target(&parts.headers).as_deref(), &body) {
        Ok(r) => vec![Check {
            action: format!("sqs:{}", r.op()),
            resource: r
                .queue_name()
                .map_or_else(|| "*".to_string(), |q| queue_arn(&q)),
        }],
        Err(_) => Vec::new(),
    }
}

fn target(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(nimbus_sqs::TARGET_PREFIX))
        .map(str::to_string)
}

/// A query request posted to a queue URL's path names its queue there: `QueueUrl` is added
/// when the form has none.
fn with_path_queue(protocol: Protocol, path: &str, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    if let (Protocol::Query, Some(name)) = (protocol, queue_path(path)) {
        if !form_urlencoded::parse(&body).any(|(k, _)| k == "QueueUrl") {
            let extra: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("QueueUrl", name)
                .finish();
            if !body.is_empty() {
                body.push(b'&');
            }
            body.extend_from_slice(extra.as_bytes());
        }
    }
    body
}

fn queue_arn(name: &str) -> String {
    format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")
}

/// The fallback for paths no route has: the query protocol at a queue URL's path, else a
/// user route.
pub(crate) async fn or_user_route(
    State(gw): State<Arc<Gateway>>,
    req: Request,
) -> Result<Response, ApiError> {
    if protocol_of(req.method(), req.uri().path(), req.headers()).is_some() {
        return handle(gw, req).await;
    }
    crate::urls::user_route(State(gw), req).await
}

/// An authentication or authorisation refusal as SQS words it.
pub(crate) fn auth_error(e: ApiError) -> SqsError {
    let message = e.to_string();
    let code = match e {
        ApiError::AccessDenied(_) => return SqsError::AccessDenied(message),
        ApiError::MissingAuthenticationToken(_) => "MissingAuthenticationToken",
        ApiError::IncompleteSignature(_) => "IncompleteSignature",
        ApiError::InvalidSignature(_) => "SignatureDoesNotMatch",
        ApiError::UnrecognizedClient(_) => "InvalidClientTokenId",
        ApiError::Sqs { error, .. } => return error,
        ApiError::Internal(detail) => {
            tracing::error!("sqs: internal error: {detail}");
            return SqsError::Internal;
        }
        _ => return SqsError::InvalidParameterValue(message),
    };
    SqsError::NotAuthenticated { code, message }
}

/// Per request: where its queue URLs point, and what it carries.
struct Ctx {
    /// `http(s)://HOST/ACCOUNT`, from the request's `Host` (so clients with an endpoint
    /// URL get URLs they can use).
    base: String,
    /// The request's trace context (X-Ray form), for messages sent without
    /// `AWSTraceHeader`.
    trace: Option<String>,
    /// The signing key's id (the `SenderId` of what it sends), else the account.
    sender: String,
}

impl Ctx {
    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

/// Serves one SQS request (the caller checked [`protocol_of`]).
pub(crate) async fn handle(gw: Arc<Gateway>, req: Request) -> Result<Response, ApiError> {
    let path = req.uri().path().to_string();
    let Some(protocol) = protocol_of(req.method(), &path, req.headers()) else {
        return Err(ApiError::InvalidParameter("not an SQS request".into()));
    };
    let sqs_err = |error| ApiError::Sqs { error, protocol };
    let headers = req.headers().clone();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ']))
        .unwrap_or("localhost")
        .to_string();
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    let ctx = Ctx {
        base: format!("{scheme}://{host}/{ACCOUNT}"),
        trace: crate::trace::incoming(&headers).map(|cx| cx.stored_xray()),
        sender: req
            .extensions()
            .get::<crate::Caller>()
            .map_or_else(|| ACCOUNT.to_string(), |c| c.0.id.clone()),
    };
    let body = axum::body::to_bytes(req.into_body(), BODY_MAX)
        .await
        .map_err(|e| {
            sqs_err(SqsError::InvalidParameterValue(format!(
                "request body: {e}"
            )))
        })?;
    let body = with_path_queue(protocol, &path, &body);
    let request =
        nimbus_sqs::decode(protocol, target(&headers).as_deref(), &body).map_err(sqs_err)?;
    let op = request.op().to_string();
    let span = tracing::info_span!(
        "sqs",
        op = %op,
        queue = request.queue_name().unwrap_or_default(),
        protocol = ?protocol
    );
    let out = execute(&gw, &ctx, request)
        .instrument(span.clone())
        .await
        .map_err(|e| {
            span.in_scope(|| tracing::debug!(code = e.code(), "sqs error: {e}"));
            sqs_err(e)
        })?;
    let request_id = uuid::Uuid::new_v4().to_string();
    let r = nimbus_sqs::render_ok(protocol, &op, &out, &request_id);
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
        [("content-type", r.content_type)],
        Body::from(r.body),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    Ok(resp)
}

/// A store error as SQS's.
fn store_err(e: StoreError) -> SqsError {
    if e.is_not_found() {
        SqsError::QueueDoesNotExist
    } else if e.is_invalid_input() {
        SqsError::InvalidParameterValue(e.to_string())
    } else if e.is_full() {
        SqsError::OverLimit(e.to_string())
    } else {
        tracing::error!("sqs: store error: {e}");
        SqsError::Internal
    }
}

/// Runs store work off the async threads.
async fn run<T: Send + 'static>(
    gw: &Gateway,
    f: impl FnOnce(&dyn QueueStore) -> Result<T, SqsError> + Send + 'static,
) -> Result<T, SqsError> {
    let store = runner(gw)
        .map_err(|_| {
            SqsError::UnsupportedOperation("queues are not enabled on this server".into())
        })?
        .store()
        .clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| {
            tracing::error!("sqs: task failed: {e}");
            SqsError::Internal
        })?
}

fn sent(gw: &Gateway) {
    if let Ok(r) = runner(gw) {
        r.messages_sent();
    }
}

/// The queue named by a request (`QueueUrl`'s last segment, or a bare name).
fn name_of(url: &str) -> Result<String, SqsError> {
    let name = nimbus_sqs::queue_name_of(url);
    if name.is_empty() {
        return Err(SqsError::QueueDoesNotExist);
    }
    Ok(name.to_string())
}

fn range(param: &str, v: i64, lo: i64, hi: i64) -> Result<u32, SqsError> {
    if (lo..=hi).contains(&v) {
        Ok(v as u32)
    } else {
        Err(invalid(
            param,
            v,
            &format!("Must be between {lo} and {hi}, if provided."),
        ))
    }
}

/// An SQS operation called by a workflow's Task (`arn:aws:states:::sqs:OP`): `params`
/// are the operation's JSON-protocol request (`MessageBody` may be any JSON: it is sent
/// as its text), `sender` the state machine's role.
pub(crate) async fn integration(
    gw: &Arc<Gateway>,
    op: &str,
    params: Value,
    sender: &str,
) -> Result<Value, SqsError> {
    let mut params = params;
    if let Some(body) = params.get_mut("MessageBody") {
        if !body.is_string() {
            *body = Value::String(body.to_string());
        }
    }
    let body =
        serde_json::to_vec(&params).map_err(|e| SqsError::InvalidParameterValue(e.to_string()))?;
    let request = nimbus_sqs::decode(nimbus_sqs::Protocol::Json, Some(op), &body)?;
    let ctx = Ctx {
        base: format!("{}/{ACCOUNT}", gw.cfg.public_url),
        trace: None,
        sender: sender.to_string(),
    };
    execute(gw, &ctx, request).await
}

/// The queue ARN an SQS request's `QueueUrl` names (for authorising integrations).
pub(crate) fn queue_arn_of(url: &str) -> Option<String> {
    name_of(url).ok().map(|n| queue_arn(&n))
}

async fn execute(gw: &Arc<Gateway>, ctx: &Ctx, req: SqsRequest) -> Result<Value, SqsError> {
    match req {
        SqsRequest::CreateQueue(r) => create_queue(gw, ctx, r).await,
        SqsRequest::GetQueueUrl(r) => {
            let name = r.queue_name.clone();
            run(gw, move |s| s.get_queue(&name).map_err(store_err)).await?;
            Ok(json!({ "QueueUrl": ctx.url(&r.queue_name) }))
        }
        SqsRequest::ListQueues(r) => {
            let prefix = r.queue_name_prefix.unwrap_or_default();
            let queues = run(gw, |s| s.list_queues().map_err(store_err)).await?;
            let names = queues
                .into_iter()
                .map(|q| q.name)
                .filter(|n| n.starts_with(&prefix));
            paginate(ctx, names, r.next_token, r.max_results, "QueueUrls")
        }
        SqsRequest::GetQueueAttributes(r) => {
            let name = name_of(&r.queue_url)?;
            get_attributes(gw, name, r.attribute_names).await
        }
        SqsRequest::SetQueueAttributes(r) => {
            let name = name_of(&r.queue_url)?;
            run(gw, move |s| {
                let q = s.get_queue(&name).map_err(store_err)?;
                let mut settings = q.settings.clone();
                apply_attributes(s, &name, &mut settings, &r.attributes, false)?;
                s.put_queue(&name, &settings, now_ms()).map_err(store_err)?;
                Ok(())
            })
            .await?;
            Ok(json!({}))
        }
        SqsRequest::SendMessage(r) => {
            let name = name_of(&r.queue_url)?;
            let q = queue(gw, &name).await?;
            let (msg, mut out) = check_send(ctx, &q, r.entry)?;
            let got = run(gw, move |s| {
                s.send(&name, &[msg], now_ms()).map_err(store_err)
            })
            .await?;
            sent(gw);
            if let Some(m) = got.first() {
                out.insert("MessageId".into(), json!(m.id));
                if let Some(n) = &m.sequence_number {
                    out.insert("SequenceNumber".into(), json!(n));
                }
            }
            Ok(Value::Object(out))
        }
        SqsRequest::SendMessageBatch(r) => send_batch(gw, ctx, r).await,
        SqsRequest::ReceiveMessage(r) => receive(gw, r).await,
        SqsRequest::DeleteMessage(r) => {
            let name = name_of(&r.queue_url)?;
            run(gw, move |s| delete_one(s, &name, &r.receipt_handle)).await?;
            Ok(json!({}))
        }
        SqsRequest::DeleteMessageBatch(r) => {
            let name = name_of(&r.queue_url)?;
            check_batch_ids(r.entries.iter().map(|e| e.id.as_deref()))?;
            run(gw, move |s| {
                s.get_queue(&name).map_err(store_err)?;
                Ok(batch_result(r.entries.iter().map(|e| {
                    let id = e.id.clone().unwrap_or_default();
                    let res = e
                        .receipt_handle
                        .as_deref()
                        .ok_or_else(|| SqsError::missing("ReceiptHandle"))
                        .and_then(|h| delete_one(s, &name, h));
                    (id, res.map(|()| Map::new()))
                })))
            })
            .await
        }
        SqsRequest::ChangeMessageVisibility(r) => {
            let name = name_of(&r.queue_url)?;
            let timeout = range("VisibilityTimeout", r.visibility_timeout, 0, 43_200)?;
            run(gw, move |s| {
                change_one(s, &name, &r.receipt_handle, timeout)
            })
            .await?;
            Ok(json!({}))
        }
        SqsRequest::ChangeMessageVisibilityBatch(r) => {
            let name = name_of(&r.queue_url)?;
            check_batch_ids(r.entries.iter().map(|e| e.id.as_deref()))?;
            run(gw, move |s| {
                s.get_queue(&name).map_err(store_err)?;
                Ok(batch_result(r.entries.iter().map(|e| {
                    let id = e.id.clone().unwrap_or_default();
                    let res = (|| {
                        let h = e
                            .receipt_handle
                            .as_deref()
                            .ok_or_else(|| SqsError::missing("ReceiptHandle"))?;
                        let t = e
                            .visibility_timeout
                            .ok_or_else(|| SqsError::missing("VisibilityTimeout"))?;
                        change_one(s, &name, h, range("VisibilityTimeout", t, 0, 43_200)?)
                    })();
                    (id, res.map(|()| Map::new()))
                })))
            })
            .await
        }
        SqsRequest::PurgeQueue(r) => {
            let name = name_of(&r.queue_url)?;
            let n = run(gw, move |s| s.purge(&name).map_err(store_err)).await?;
            tracing::info!(purged = n, "queue purged");
            Ok(json!({}))
        }
        SqsRequest::DeleteQueue(r) => {
            let name = name_of(&r.queue_url)?;
            run(gw, move |s| s.delete_queue(&name).map_err(store_err)).await?;
            tracing::info!("queue deleted");
            Ok(json!({}))
        }
        SqsRequest::TagQueue(r) => {
            let name = name_of(&r.queue_url)?;
            run(gw, move |s| {
                let q = s.get_queue(&name).map_err(store_err)?;
                let mut settings = q.settings;
                settings.tags.extend(r.tags);
                check_tags(&settings.tags)?;
                s.put_queue(&name, &settings, q.modified_ms)
                    .map_err(store_err)?;
                Ok(())
            })
            .await?;
            Ok(json!({}))
        }
        SqsRequest::UntagQueue(r) => {
            let name = name_of(&r.queue_url)?;
            run(gw, move |s| {
                let q = s.get_queue(&name).map_err(store_err)?;
                let mut settings = q.settings;
                for k in &r.tag_keys {
                    settings.tags.remove(k);
                }
                s.put_queue(&name, &settings, q.modified_ms)
                    .map_err(store_err)?;
                Ok(())
            })
            .await?;
            Ok(json!({}))
        }
        SqsRequest::ListQueueTags(r) => {
            let name = name_of(&r.queue_url)?;
            let q = queue(gw, &name).await?;
            Ok(if q.settings.tags.is_empty() {
                json!({})
            } else {
                json!({ "Tags": q.settings.tags })
            })
        }
        SqsRequest::StartMessageMoveTask(r) => move_messages(gw, r).await,
        SqsRequest::ListMessageMoveTasks(r) => list_move_tasks(gw, r).await,
        SqsRequest::CancelMessageMoveTask(r) => cancel_move_task(gw, r),
        SqsRequest::ListDeadLetterSourceQueues(r) => {
            let name = name_of(&r.queue_url)?;
            let queues = run(gw, move |s| {
                s.get_queue(&name).map_err(store_err)?;
                let all = s.list_queues().map_err(store_err)?;
                Ok(all
                    .into_iter()
                    .filter(|q| {
                        q.settings
                            .redrive
                            .as_ref()
                            .is_some_and(|p| p.dead_letter_queue == name)
                    })
                    .map(|q| q.name)
                    .collect::<Vec<_>>())
            })
            .await?;
            let mut out = paginate(
                ctx,
                queues.into_iter(),
                r.next_token,
                r.max_results,
                "queueUrls",
            )?;
            // Required in the output even when empty.
            if out.get("queueUrls").is_none() {
                out["queueUrls"] = json!([]);
            }
            Ok(out)
        }
        SqsRequest::Unsupported(op) => Err(SqsError::UnsupportedOperation(format!(
            "{op} is not supported by Nimbus (see docs/sqs.md)"
        ))),
    }
}

async fn queue(gw: &Gateway, name: &str) -> Result<QueueInfo, SqsError> {
    let name = name.to_string();
    run(gw, move |s| s.get_queue(&name).map_err(store_err)).await
}

/// Names (sorted) as queue URLs under `key`, `max_results` at a time from after
/// `next_token` (the last name returned before, base64); `NextToken` only with
/// `MaxResults`, as SQS.
fn paginate(
    ctx: &Ctx,
    names: impl Iterator<Item = String>,
    next_token: Option<String>,
    max_results: Option<i64>,
    key: &str,
) -> Result<Value, SqsError> {
    let max = match max_results {
        Some(n) => Some(range("MaxResults", n, 1, 1000)? as usize),
        None => None,
    };
    let after = match next_token.filter(|t| !t.is_empty()) {
        Some(t) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| invalid("NextToken", &t, "Invalid or expired next token."))?,
        ),
        None => None,
    };
    let mut rest = names
        .filter(|n| after.as_ref().is_none_or(|a| n > a))
        .peekable();
    let page: Vec<String> = rest.by_ref().take(max.unwrap_or(1000)).collect();
    let mut out = Map::new();
    if !page.is_empty() {
        out.insert(
            key.into(),
            json!(page.iter().map(|n| ctx.url(n)).collect::<Vec<_>>()),
        );
    }
    if let (Some(_), Some(_), Some(last)) = (max, rest.peek(), page.last()) {
        out.insert(
            "NextToken".into(),
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())),
        );
    }
    Ok(Value::Object(out))
}

fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), SqsError> {
    if tags.len() > 50 {
        return Err(SqsError::InvalidParameterValue(
            "Too many tags: a queue has at most 50.".into(),
        ));
    }
    if let Some((k, _)) = tags
        .iter()
        .find(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 256)
    {
        return Err(invalid(
            "Tags",
            k,
            "tag keys are 1-128 characters, values at most 256",
        ));
    }
    Ok(())
}

async fn create_queue(
    gw: &Gateway,
    ctx: &Ctx,
    r: nimbus_sqs::CreateQueue,
) -> Result<Value, SqsError> {
    let name = r.queue_name.clone();
    let fifo = r
        .attributes
        .get("FifoQueue")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if fifo && (!is_fifo_name(&name) || validate_queue_name(&name).is_err()) {
        return Err(SqsError::InvalidParameterValue(
            "The name of a FIFO queue can only include alphanumeric characters, hyphens, or underscores, must end with .fifo suffix and be 1 to 80 in length.".into(),
        ));
    }
    if !fifo && (is_fifo_name(&name) || validate_queue_name(&name).is_err()) {
        return Err(invalid(
            "QueueName",
            &name,
            "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 in length",
        ));
    }
    check_tags(&r.tags)?;
    run(gw, move |s| {
        let mut settings = QueueSettings::default();
        apply_attributes(s, &name, &mut settings, &r.attributes, true)?;
        match s.get_queue(&name) {
            Ok(existing) => {
                // The same name again: the same queue if the attributes given have the
                // values it has (the others are not compared, nor are tags).
                let mut mine = existing.settings.clone();
                apply_attributes(s, &name, &mut mine, &r.attributes, true)?;
                if mine != existing.settings {
                    return Err(SqsError::QueueNameExists(
                        "A queue already exists with the same name and a different value for attributes.".into(),
                    ));
                }
                Ok(())
            }
            Err(e) if e.is_not_found() => {
                settings.tags = r.tags;
                s.put_queue(&name, &settings, now_ms()).map_err(store_err)?;
                tracing::info!(queue = %name, "queue created");
                Ok(())
            }
            Err(e) => Err(store_err(e)),
        }
    })
    .await?;
    Ok(json!({ "QueueUrl": ctx.url(&r.queue_name) }))
}

/// Attributes SQS has that Nimbus does not keep.
const NOT_SUPPORTED: &[&str] = &["Policy", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"];
const FIFO_ONLY: &[&str] = &[
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];

/// Applies CreateQueue's or SetQueueAttributes' `Attributes` to `settings` (for queue
/// `name`), checking each as SQS does.
fn apply_attributes(
    s: &dyn QueueStore,
    name: &str,
    settings: &mut QueueSettings,
    attrs: &BTreeMap<String, String>,
    creating: bool,
) -> Result<(), SqsError> {
    let bad_value =
        |k: &str| SqsError::InvalidAttributeValue(format!("Invalid value for the parameter {k}."));
    let int = |k: &str, v: &str, lo: u32, hi: u32| -> Result<u32, SqsError> {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| bad_value(k))
    };
    let boolean = |k: &str, v: &str| -> Result<bool, SqsError> {
        match v.to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(bad_value(k)),
        }
    };
    // FifoQueue first: what the other attributes may be depends on it.
    if let Some(v) = attrs.get("FifoQueue").filter(|_| creating) {
        settings.fifo = boolean("FifoQueue", v)?;
    }
    for (k, v) in attrs {
        match k.as_str() {
            "VisibilityTimeout" => settings.visibility_timeout_s = int(k, v, 0, 43_200)?,
            "MaximumMessageSize" => settings.max_message_size = int(k, v, 1024, MAX_MESSAGE_BYTES)?,
            "MessageRetentionPeriod" => settings.retention_s = int(k, v, 60, 1_209_600)?,
            "DelaySeconds" => settings.delay_s = int(k, v, 0, 900)?,
            "ReceiveMessageWaitTimeSeconds" => settings.receive_wait_s = int(k, v, 0, 20)?,
            "RedrivePolicy" => settings.redrive = redrive_policy(s, name, settings.fifo, v)?,
            "RedriveAllowPolicy" => settings.redrive_allow = redrive_allow(v)?,
            "FifoQueue" if creating => {}
            "ContentBasedDeduplication" if settings.fifo => {
                settings.content_based_dedup = boolean(k, v)?
            }
            "DeduplicationScope" if settings.fifo => {
                settings.dedup_scope = DedupScope::parse(v).ok_or_else(|| bad_value(k))?
            }
            "FifoThroughputLimit" if settings.fifo => {
                settings.throughput_limit = ThroughputLimit::parse(v).ok_or_else(|| bad_value(k))?
            }
            "SqsManagedSseEnabled" => {
                if !v.eq_ignore_ascii_case("false") {
                    return Err(SqsError::InvalidAttributeValue(
                        "server-side encryption (SqsManagedSseEnabled true) is not supported: queues are stored in the server's data dir".into(),
                    ));
                }
            }
            other if FIFO_ONLY.contains(&other) => {
                // As SQS: a standard queue does not have them.
                return Err(SqsError::InvalidAttributeName(format!(
                    "Unknown Attribute {other}."
                )));
            }
            other if NOT_SUPPORTED.contains(&other) => {
                return Err(SqsError::InvalidAttributeName(format!(
                    "{other} is not supported by Nimbus (see docs/sqs.md)."
                )))
            }
            other => {
                return Err(SqsError::InvalidAttributeName(format!(
                    "Unknown Attribute {other}."
                )))
            }
        }
    }
    if settings.throughput_limit == ThroughputLimit::PerMessageGroupId
        && settings.dedup_scope != DedupScope::MessageGroup
    {
        return Err(SqsError::InvalidAttributeValue(
            "Invalid value for the parameter FifoThroughputLimit: perMessageGroupId needs DeduplicationScope messageGroup.".into(),
        ));
    }
    Ok(())
}

/// `RedrivePolicy`: `{"deadLetterTargetArn":ARN,"maxReceiveCount":N}` (empty: none). The
/// dead-letter queue must exist, not be the queue itself, and allow it as a source.
fn redrive_policy(
    s: &dyn QueueStore,
    name: &str,
    fifo: bool,
    v: &str,
) -> Result<Option<RedrivePolicy>, SqsError> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| invalid("RedrivePolicy", v, why);
    let p: Value =
        serde_json::from_str(v).map_err(|_| bad("Redrive policy is not a valid JSON map."))?;
    let arn = p["deadLetterTargetArn"].as_str().ok_or_else(|| {
        bad("Redrive policy does not contain mandatory attribute: deadLetterTargetArn.")
    })?;
    let max = match &p["maxReceiveCount"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=1000).contains(n))
    .ok_or_else(|| bad("Invalid value for maxReceiveCount: 1 to 1000."))?;
    let dlq = nimbus_sqs::queue_of_arn(arn)
        .ok_or_else(|| bad("Invalid value for deadLetterTargetArn."))?;
    if dlq == name {
        return Err(bad("A queue cannot be its own dead-letter queue."));
    }
    let target = s.get_queue(dlq).map_err(|e| {
        if e.is_not_found() {
            bad("Dead letter target does not exist.")
        } else {
            store_err(e)
        }
    })?;
    if target.settings.fifo != fifo {
        return Err(bad(
            "Dead-letter target must be of the same type (FIFO or standard) as the source.",
        ));
    }
    if let Some(allow) = target.settings.redrive_allow.as_deref() {
        let allow: Value = serde_json::from_str(allow).unwrap_or(Value::Null);
        let me = queue_arn(name);
        let permitted = match allow["redrivePermission"].as_str() {
            Some("denyAll") => false,
            Some("byQueue") => allow["sourceQueueArns"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(me.as_str()))),
            _ => true,
        };
        if !permitted {
            return Err(bad(
                "The dead-letter queue's RedriveAllowPolicy does not allow this queue as a source.",
            ));
        }
    }
    Ok(Some(RedrivePolicy {
        dead_letter_queue: dlq.to_string(),
        max_receive_count: max as u32,
    }))
}

/// `RedriveAllowPolicy`: `{"redrivePermission":"allowAll"|"denyAll"|"byQueue",
/// "sourceQueueArns":[…]}` (`byQueue` only, 1-10); empty: none.
fn redrive_allow(v: &str) -> Result<Option<String>, SqsError> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| invalid("RedriveAllowPolicy", v, why);
    let p: Value = serde_json::from_str(v)
        .map_err(|_| bad("Redrive allow policy is not a valid JSON map."))?;
    let sources = p.get("sourceQueueArns");
    match p["redrivePermission"].as_str() {
        Some("allowAll" | "denyAll") if sources.is_none() => {}
        Some("byQueue") => {
            let ok = sources.and_then(Value::as_array).is_some_and(|a| {
                (1..=10).contains(&a.len())
                    && a.iter()
                        .all(|x| x.as_str().and_then(nimbus_sqs::queue_of_arn).is_some())
            });
            if !ok {
                return Err(bad("byQueue needs sourceQueueArns: 1 to 10 queue ARNs."));
            }
        }
        Some("allowAll" | "denyAll") => {
            return Err(bad(
                "sourceQueueArns is only for redrivePermission byQueue.",
            ))
        }
        _ => {
            return Err(bad(
                "redrivePermission must be allowAll, denyAll or byQueue.",
            ))
        }
    }
    Ok(Some(p.to_string()))
}

const QUEUE_ATTRIBUTES: &[&str] = &[
    "QueueArn",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "VisibilityTimeout",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
];
/// SQS attributes a queue here never has (asked for, they are left out as unset).
const NEVER_SET: &[&str] = &["Policy", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds"];

async fn get_attributes(gw: &Gateway, name: String, names: Vec<String>) -> Result<Value, SqsError> {
    if let Some(bad) = names.iter().find(|n| {
        *n != "All" && !QUEUE_ATTRIBUTES.contains(&n.as_str()) && !NEVER_SET.contains(&n.as_str())
    }) {
        return Err(SqsError::InvalidAttributeName(format!(
            "Unknown Attribute {bad}."
        )));
    }
    let (q, stats) = run(gw, move |s| {
        let q = s.get_queue(&name).map_err(store_err)?;
        let stats = s.stats(&name, now_ms()).map_err(store_err)?;
        Ok((q, stats))
    })
    .await?;
    let all = names.iter().any(|n| n == "All");
    let st = &q.settings;
    let mut out = BTreeMap::new();
    for &a in QUEUE_ATTRIBUTES {
        if !all && !names.iter().any(|n| n == a) {
            continue;
        }
        let v = match a {
            "QueueArn" => queue_arn(&q.name),
            "ApproximateNumberOfMessages" => stats.visible.to_string(),
            "ApproximateNumberOfMessagesNotVisible" => stats.in_flight.to_string(),
            "ApproximateNumberOfMessagesDelayed" => stats.delayed.to_string(),
            "CreatedTimestamp" => (q.created_ms / 1000).to_string(),
            "LastModifiedTimestamp" => (q.modified_ms / 1000).to_string(),
            "VisibilityTimeout" => st.visibility_timeout_s.to_string(),
            "MaximumMessageSize" => st.max_message_size.to_string(),
            "MessageRetentionPeriod" => st.retention_s.to_string(),
            "DelaySeconds" => st.delay_s.to_string(),
            "ReceiveMessageWaitTimeSeconds" => st.receive_wait_s.to_string(),
            "RedrivePolicy" => match &st.redrive {
                Some(r) => json!({
                    "deadLetterTargetArn": queue_arn(&r.dead_letter_queue),
                    "maxReceiveCount": r.max_receive_count,
                })
                .to_string(),
                None => continue,
            },
            "RedriveAllowPolicy" => match &st.redrive_allow {
                Some(p) => p.clone(),
                None => continue,
            },
            "SqsManagedSseEnabled" => "false".into(),
            // A standard queue has none of these (as SQS, they are left out).
            _ if !st.fifo => continue,
            "FifoQueue" => "true".into(),
            "ContentBasedDeduplication" => st.content_based_dedup.to_string(),
            "DeduplicationScope" => st.dedup_scope.as_str().into(),
            "FifoThroughputLimit" => st.throughput_limit.as_str().into(),
            _ => continue,
        };
        out.insert(a.to_string(), v);
    }
    Ok(if out.is_empty() {
        json!({})
    } else {
        json!({ "Attributes": out })
    })
}

/// Checks one message to send; returns it for the store and the reply's MD5 fields.
fn check_send(
    ctx: &Ctx,
    q: &QueueInfo,
    e: nimbus_sqs::SendEntry,
) -> Result<(NewMessage, Map<String, Value>), SqsError> {
    let body = e
        .message_body
        .filter(|b| !b.is_empty())
        .ok_or_else(|| SqsError::missing("MessageBody"))?;
    attributes::check_body(&body)?;
    let not_for_this_type = "The request include parameter that is not valid for this queue type.";
    let (group_id, dedup_id) = if q.settings.fifo {
        let group = e
            .message_group_id
            .ok_or_else(|| SqsError::missing("MessageGroupId"))?;
        if !valid_fifo_token(&group) {
            return Err(invalid(
                "MessageGroupId",
                &group,
                "MessageGroupId can only include alphanumeric and punctuation characters. 1 to 128 in length.",
            ));
        }
        if let Some(d) = e.message_deduplication_id.as_deref() {
            if !valid_fifo_token(d) {
                return Err(invalid(
                    "MessageDeduplicationId",
                    d,
                    "MessageDeduplicationId can only include alphanumeric and punctuation characters. 1 to 128 in length.",
                ));
            }
        } else if !q.settings.content_based_dedup {
            return Err(SqsError::InvalidParameterValue(
                "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId provided explicitly".into(),
            ));
        }
        if let Some(d) = e.delay_seconds {
            return Err(invalid("DelaySeconds", d, not_for_this_type));
        }
        (Some(group), e.message_deduplication_id)
    } else {
        if let Some(g) = e.message_group_id {
            return Err(invalid("MessageGroupId", g, not_for_this_type));
        }
        if let Some(d) = e.message_deduplication_id {
            return Err(invalid("MessageDeduplicationId", d, not_for_this_type));
        }
        (None, None)
    };
    let delay = match e.delay_seconds {
        Some(d) => range("DelaySeconds", d, 0, 900)?,
        None => q.settings.delay_s,
    };
    let attrs = attributes::check_message_attributes(e.message_attributes)?;
    let system = attributes::check_system_attributes(e.message_system_attributes)?;
    let size = body.len() + attributes::size(&attrs);
    let max = q.settings.max_message_size as usize;
    if size > max {
        return Err(SqsError::InvalidParameterValue(format!(
            "One or more parameters are invalid. Reason: Message must be shorter than {max} bytes."
        )));
    }
    let mut out = Map::new();
    out.insert("MD5OfMessageBody".into(), json!(digest::md5_of_body(&body)));
    if let Some(md5) = digest::md5_of_attributes(&attrs) {
        out.insert("MD5OfMessageAttributes".into(), json!(md5));
    }
    if let Some(md5) = digest::md5_of_attributes(&system) {
        out.insert("MD5OfMessageSystemAttributes".into(), json!(md5));
    }
    let trace = match system.get("AWSTraceHeader").map(|a| &a.value) {
        Some(attributes::AttrValue::String(s)) => Some(s.clone()),
        _ => ctx.trace.clone(),
    };
    Ok((
        NewMessage {
            body,
            attributes: attributes::to_event_shape(&attrs),
            delay_s: delay,
            trace,
            sender: Some(ctx.sender.clone()),
            group_id,
            dedup_id,
        },
        out,
    ))
}

/// SQS's batch rules: 1-10 entries, ids of 1-80 `[A-Za-z0-9_-]`, distinct.
fn check_batch_ids<'a>(
    ids: impl ExactSizeIterator<Item = Option<&'a str>>,
) -> Result<(), SqsError> {
    let n = ids.len();
    if n == 0 {
        return Err(SqsError::EmptyBatchRequest);
    }
    if n > MAX_BATCH {
        return Err(SqsError::TooManyEntriesInBatchRequest(n));
    }
    let mut seen = HashSet::new();
    for id in ids {
        let id = id.ok_or_else(|| SqsError::missing("Id"))?;
        if id.is_empty()
            || id.len() > 80
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(SqsError::InvalidBatchEntryId(
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long.".into(),
            ));
        }
        if !seen.insert(id) {
            return Err(SqsError::BatchEntryIdsNotDistinct(id.to_string()));
        }
    }
    Ok(())
}

fn failed(id: &str, e: &SqsError) -> Value {
    json!({ "Id": id, "SenderFault": e.sender_fault(), "Code": e.code(), "Message": e.to_string() })
}

/// One batch entry's outcome: its reply fields, or why it failed.
type EntryResult = Result<Map<String, Value>, SqsError>;

/// `{"Successful":[{Id,…}],"Failed":[…]}` from each entry's outcome.
fn batch_result(items: impl Iterator<Item = (String, EntryResult)>) -> Value {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (id, r) in items {
        match r {
            Ok(mut m) => {
                m.insert("Id".into(), json!(id));
                ok.push(Value::Object(m));
            }
            Err(e) => bad.push(failed(&id, &e)),
        }
    }
    json!({ "Successful": ok, "Failed": bad })
}

async fn send_batch(
    gw: &Gateway,
    ctx: &Ctx,
    r: nimbus_sqs::SendMessageBatch,
) -> Result<Value, SqsError> {
    let name = name_of(&r.queue_url)?;
    check_batch_ids(r.entries.iter().map(|e| e.id.as_deref()))?;
    let total: usize = r
        .entries
        .iter()
        .map(|e| {
            e.message_body.as_ref().map_or(0, String::len)
                + e.message_attributes
                    .iter()
                    .map(|(k, a)| {
                        k.len()
                            + a.data_type.as_ref().map_or(0, String::len)
                            + a.string_value.as_ref().map_or(0, String::len)
                            + a.binary_value.as_ref().map_or(0, |b| b.len() * 3 / 4)
                    })
                    .sum::<usize>()
        })
        .sum();
    if total > MAX_MESSAGE_BYTES as usize {
        return Err(SqsError::BatchRequestTooLong(format!(
            "Batch requests cannot be longer than {MAX_MESSAGE_BYTES} bytes. You have sent {total} bytes."
        )));
    }
    let q = queue(gw, &name).await?;
    let mut results: Vec<(String, EntryResult)> = Vec::new();
    let mut to_send = Vec::new();
    for e in r.entries {
        let id = e.id.clone().unwrap_or_default();
        match check_send(ctx, &q, e) {
            Ok((m, out)) => {
                to_send.push(m);
                results.push((id, Ok(out)));
            }
            Err(err) => results.push((id, Err(err))),
        }
    }
    if !to_send.is_empty() {
        let stored = run(gw, move |s| {
            s.send(&name, &to_send, now_ms()).map_err(store_err)
        })
        .await?;
        sent(gw);
        let mut ids = stored.into_iter();
        for (_, r) in results.iter_mut() {
            if let Ok(out) = r {
                if let Some(m) = ids.next() {
                    out.insert("MessageId".into(), json!(m.id));
                    if let Some(n) = m.sequence_number {
                        out.insert("SequenceNumber".into(), json!(n));
                    }
                }
            }
        }
    }
    Ok(batch_result(results.into_iter()))
}

/// Deletes by receipt handle. A handle of the right form whose message is gone or was
/// received again since is accepted (as SQS); anything else is `ReceiptHandleIsInvalid`.
fn delete_one(s: &dyn QueueStore, name: &str, receipt: &str) -> Result<(), SqsError> {
    if !is_receipt_handle(receipt) {
        return Err(SqsError::ReceiptHandleIsInvalid(format!(
            "The input receipt handle \"{receipt}\" is not a valid receipt handle."
        )));
    }
    match s.delete_message(name, receipt) {
        Ok(()) => Ok(()),
        Err(e) if e.is_invalid_input() => Ok(()),
        Err(e) => Err(store_err(e)),
    }
}

fn change_one(s: &dyn QueueStore, name: &str, receipt: &str, timeout: u32) -> Result<(), SqsError> {
    if !is_receipt_handle(receipt) {
        return Err(SqsError::ReceiptHandleIsInvalid(format!(
            "The input receipt handle \"{receipt}\" is not a valid receipt handle."
        )));
    }
    match s.change_visibility(name, receipt, timeout, now_ms()) {
        Ok(()) => Ok(()),
        Err(e) if e.is_invalid_input() => Err(SqsError::MessageNotInflight(format!(
            "Value {receipt} for parameter ReceiptHandle is invalid. Reason: Message does not exist or is not available for visibility timeout change."
        ))),
        Err(e) => Err(store_err(e)),
    }
}

const SYSTEM_ATTRIBUTES: &[&str] = &[
    "SenderId",
    "SentTimestamp",
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "AWSTraceHeader",
    "SequenceNumber",
    "MessageDeduplicationId",
    "MessageGroupId",
];

async fn receive(gw: &Gateway, r: nimbus_sqs::ReceiveMessage) -> Result<Value, SqsError> {
    let name = name_of(&r.queue_url)?;
    let max = range(
        "MaxNumberOfMessages",
        r.max_number_of_messages.unwrap_or(1),
        1,
        10,
    )? as usize;
    let vis = match r.visibility_timeout {
        Some(v) => Some(range("VisibilityTimeout", v, 0, 43_200)?),
        None => None,
    };
    let wait = match r.wait_time_seconds {
        Some(w) => range("WaitTimeSeconds", w, 0, 20)?,
        None => queue(gw, &name).await?.settings.receive_wait_s,
    };
    if let Some(a) = r.receive_request_attempt_id.as_deref() {
        if !valid_fifo_token(a) {
            return Err(invalid(
                "ReceiveRequestAttemptId",
                a,
                "ReceiveRequestAttemptId can only include alphanumeric and punctuation characters. 1 to 128 in length.",
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(u64::from(wait));
    let got: Vec<Message> = loop {
        let (n, attempt) = (name.clone(), r.receive_request_attempt_id.clone());
        let got = run(gw, move |s| {
            s.receive_attempt(&n, max, vis, attempt.as_deref(), now_ms())
                .map_err(store_err)
        })
        .await?;
        let left = deadline.saturating_duration_since(Instant::now());
        if !got.is_empty() || left.is_zero() {
            break got;
        }
        // Woken by any send; delayed messages and visibility timeouts that end are
        // caught within half a second. The wait is a notification, never a blocked thread.
        match runner(gw) {
            Ok(runner) => {
                runner
                    .wait_for_sends(left.min(Duration::from_millis(500)))
                    .await
            }
            Err(_) => tokio::time::sleep(left.min(Duration::from_millis(500))).await,
        }
    };
    let mut system: Vec<String> = r.attribute_names;
    system.extend(r.message_system_attribute_names);
    let all_system = system.iter().any(|n| n == "All");
    let messages: Vec<Value> = got
        .iter()
        .map(|m| {
            let mut sys = Map::new();
            for &a in SYSTEM_ATTRIBUTES {
                if !all_system && !system.iter().any(|n| n == a) {
                    continue;
                }
                let v = match a {
                    "SenderId" => Some(m.sender.clone().unwrap_or_else(|| ACCOUNT.to_string())),
                    "SentTimestamp" => Some(m.sent_ms.to_string()),
                    "ApproximateReceiveCount" => Some(m.receive_count.to_string()),
                    "ApproximateFirstReceiveTimestamp" => m.first_receive_ms.map(|t| t.to_string()),
                    "AWSTraceHeader" => m
                        .trace
                        .as_deref()
                        .map(|t| nimbus_trace::stored_header(t).to_string()),
                    "SequenceNumber" => m.sequence_number.clone(),
                    "MessageDeduplicationId" => m.dedup_id.clone(),
                    "MessageGroupId" => m.group_id.clone(),
                    _ => None,
                };
                if let Some(v) = v {
                    sys.insert(a.to_string(), json!(v));
                }
            }
            let stored = attributes::from_event_shape(&m.attributes);
            let chosen: BTreeMap<String, MessageAttribute> =
                attributes::select(&stored, &r.message_attribute_names);
            let mut v = json!({
                "MessageId": m.id,
                "ReceiptHandle": m.receipt,
                "MD5OfBody": m.md5,
                "Body": m.body,
            });
            if !sys.is_empty() {
                v["Attributes"] = Value::Object(sys);
            }
            if let Some(md5) = digest::md5_of_attributes(&chosen) {
                v["MD5OfMessageAttributes"] = json!(md5);
                v["MessageAttributes"] = attributes::to_wire(&chosen);
            }
            v
        })
        .collect();
    Ok(if messages.is_empty() {
        json!({})
    } else {
        json!({ "Messages": messages })
    })
}

/// StartMessageMoveTask: the dead-letter queue's messages back to their source (the one
/// queue whose redrive policy names it) or to `DestinationArn`; all at once, or
/// `MaxNumberOfMessagesPerSecond` a second in the background.
async fn move_messages(
    gw: &Arc<Gateway>,
    r: nimbus_sqs::StartMessageMoveTask,
) -> Result<Value, SqsError> {
    let not_found = |p: &str| {
        SqsError::ResourceNotFound(format!(
            "The resource that you specified for the {p} parameter doesn't exist."
        ))
    };
    let source = nimbus_sqs::queue_of_arn(&r.source_arn)
        .ok_or_else(|| invalid("SourceArn", &r.source_arn, "it must be an SQS queue ARN."))?
        .to_string();
    let dest = match &r.destination_arn {
        Some(a) => Some(
            nimbus_sqs::queue_of_arn(a)
                .ok_or_else(|| invalid("DestinationArn", a, "it must be an SQS queue ARN."))?
                .to_string(),
        ),
        None => None,
    };
    let rate = match r.max_number_of_messages_per_second {
        Some(n) => Some(u64::from(range("MaxNumberOfMessagesPerSecond", n, 1, 500)?)),
        None => None,
    };
    if gw.move_tasks.running(&r.source_arn) {
        return Err(SqsError::InvalidParameterValue(
            "A message move task is already running on this source queue: cancel it or wait for it to finish.".into(),
        ));
    }
    let (src, d) = (source.clone(), dest.clone());
    let moved = run(gw, move |s| {
        s.get_queue(&src).map_err(|e| {
            if e.is_not_found() {
                not_found("SourceArn")
            } else {
                store_err(e)
            }
        })?;
        if let Some(d) = &d {
            s.get_queue(d).map_err(|e| {
                if e.is_not_found() {
                    not_found("DestinationArn")
                } else {
                    store_err(e)
                }
            })?;
        }
        let is_dlq = s.list_queues().map_err(store_err)?.iter().any(|q| {
            q.settings
                .redrive
                .as_ref()
                .is_some_and(|p| p.dead_letter_queue == src)
        });
        if !is_dlq {
            return Err(SqsError::InvalidParameterValue(
                "Source queue must be configured as a Dead Letter Queue.".into(),
            ));
        }
        s.redrive(&src, d.as_deref(), rate, now_ms())
            .map_err(store_err)
    })
    .await?;
    sent(gw);
    tracing::info!(destination = %moved.destination, moved = moved.moved, left = moved.left, "message move task started");
    let task = Arc::new(MoveTask {
        id: uuid::Uuid::new_v4().to_string(),
        source_arn: r.source_arn.clone(),
        destination_arn: r.destination_arn.clone(),
        rate,
        started_ms: now_ms(),
        to_move: moved.moved + moved.left,
        moved: AtomicU64::new(moved.moved),
        state: Mutex::new((TaskStatus::Completed, None)),
        cancel: AtomicBool::new(false),
    });
    if let Some(rate) = rate.filter(|&n| moved.moved == n && moved.left > 0) {
        task.set(TaskStatus::Running, None);
        tokio::spawn(move_paced(
            gw.clone(),
            task.clone(),
            source.clone(),
            moved.destination.clone(),
            rate,
        ));
    }
    gw.move_tasks.add(task.clone());
    Ok(json!({ "TaskHandle": nimbus_sqs::task_handle(&task.id, &r.source_arn) }))
}

/// The rest of a paced move: `rate` messages each second until none that can move is left,
/// the task is cancelled, or the store fails.
async fn move_paced(
    gw: Arc<Gateway>,
    task: Arc<MoveTask>,
    source: String,
    destination: String,
    rate: u64,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        if task.cancel.load(Ordering::SeqCst) {
            task.set(TaskStatus::Cancelled, None);
            return;
        }
        let (q, d) = (source.clone(), destination.clone());
        match run(&gw, move |s| {
            s.redrive(&q, Some(&d), Some(rate), now_ms())
                .map_err(store_err)
        })
        .await
        {
            Ok(r) => {
                sent(&gw);
                task.moved.fetch_add(r.moved, Ordering::SeqCst);
                if r.moved < rate {
                    task.set(TaskStatus::Completed, None);
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(source = %source, destination = %destination, "message move task failed: {e}");
                task.set(TaskStatus::Failed, Some(e.to_string()));
                return;
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TaskStatus {
    Running,
    Cancelling,
    Cancelled,
    Completed,
    Failed,
}

impl TaskStatus {
    fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Running => "RUNNING",
            TaskStatus::Cancelling => "CANCELLING",
            TaskStatus::Cancelled => "CANCELLED",
            TaskStatus::Completed => "COMPLETED",
            TaskStatus::Failed => "FAILED",
        }
    }
}

/// One StartMessageMoveTask.
struct MoveTask {
    id: String,
    source_arn: String,
    destination_arn: Option<String>,
    rate: Option<u64>,
    started_ms: i64,
    /// Messages in the source when it started (moved at once plus left).
    to_move: u64,
    moved: AtomicU64,
    state: Mutex<(TaskStatus, Option<String>)>,
    cancel: AtomicBool,
}

impl MoveTask {
    fn set(&self, status: TaskStatus, failure: Option<String>) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = (status, failure);
    }

    fn state(&self) -> (TaskStatus, Option<String>) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn view(&self) -> Value {
        let (status, failure) = self.state();
        let mut v = json!({
            "Status": status.as_str(),
            "SourceArn": self.source_arn,
            "ApproximateNumberOfMessagesMoved": self.moved.load(Ordering::SeqCst),
            "ApproximateNumberOfMessagesToMove": self.to_move,
            "StartedTimestamp": self.started_ms,
        });
        if status == TaskStatus::Running {
            v["TaskHandle"] = json!(nimbus_sqs::task_handle(&self.id, &self.source_arn));
        }
        if let Some(d) = &self.destination_arn {
            v["DestinationArn"] = json!(d);
        }
        if let Some(r) = self.rate {
            v["MaxNumberOfMessagesPerSecond"] = json!(r);
        }
        if let Some(f) = failure {
            v["FailureReason"] = json!(f);
        }
        v
    }
}

/// The message move tasks started since the server started (the last
/// [`MoveTasks::KEEP`] per source queue), for ListMessageMoveTasks and
/// CancelMessageMoveTask.
#[derive(Default)]
pub(crate) struct MoveTasks {
    tasks: Mutex<HashMap<String, Vec<Arc<MoveTask>>>>,
}

impl MoveTasks {
    /// Tasks kept per source queue (ListMessageMoveTasks returns at most 10).
    const KEEP: usize = 10;

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Arc<MoveTask>>>> {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, task: Arc<MoveTask>) {
        let mut tasks = self.lock();
        let list = tasks.entry(task.source_arn.clone()).or_default();
        list.push(task);
        if list.len() > Self::KEEP {
            list.remove(0);
        }
    }

    fn running(&self, source_arn: &str) -> bool {
        self.lock().get(source_arn).is_some_and(|l| {
            l.iter()
                .any(|t| matches!(t.state().0, TaskStatus::Running | TaskStatus::Cancelling))
        })
    }

    /// The most recent first.
    fn list(&self, source_arn: &str, max: usize) -> Vec<Value> {
        self.lock()
            .get(source_arn)
            .map(|l| l.iter().rev().take(max).map(|t| t.view()).collect())
            .unwrap_or_default()
    }

    fn find(&self, source_arn: &str, id: &str) -> Option<Arc<MoveTask>> {
        self.lock()
            .get(source_arn)?
            .iter()
            .find(|t| t.id == id)
            .cloned()
    }
}

/// ListMessageMoveTasks: the source's most recent tasks (`MaxResults` 1-10, default 1).
async fn list_move_tasks(
    gw: &Gateway,
    r: nimbus_sqs::ListMessageMoveTasks,
) -> Result<Value, SqsError> {
    let max = range("MaxResults", r.max_results.unwrap_or(1), 1, 10)? as usize;
    let source = nimbus_sqs::queue_of_arn(&r.source_arn)
        .ok_or_else(|| invalid("SourceArn", &r.source_arn, "it must be an SQS queue ARN."))?;
    queue(gw, source).await.map_err(|e| match e {
        SqsError::QueueDoesNotExist => SqsError::ResourceNotFound(
            "The resource that you specified for the SourceArn parameter doesn't exist.".into(),
        ),
        other => other,
    })?;
    Ok(json!({ "Results": gw.move_tasks.list(&r.source_arn, max) }))
}

/// CancelMessageMoveTask: stops a running paced task before its next batch.
fn cancel_move_task(gw: &Gateway, r: nimbus_sqs::CancelMessageMoveTask) -> Result<Value, SqsError> {
    let not_found =
        || SqsError::ResourceNotFound("The specified message move task does not exist.".into());
    let (id, source_arn) = nimbus_sqs::parse_task_handle(&r.task_handle).ok_or_else(not_found)?;
    let task = gw.move_tasks.find(&source_arn, &id).ok_or_else(not_found)?;
    let mut state = task.state.lock().unwrap_or_else(|e| e.into_inner());
    if state.0 != TaskStatus::Running {
        return Err(SqsError::InvalidParameterValue(format!(
            "Only a running message move task can be cancelled; this one is {}.",
            state.0.as_str()
        )));
    }
    state.0 = TaskStatus::Cancelling;
    task.cancel.store(true, Ordering::SeqCst);
    Ok(json!({ "ApproximateNumberOfMessagesMoved": task.moved.load(Ordering::SeqCst) }))
}
