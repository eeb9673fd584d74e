//! User routes served by workflows: a state machine tagged `nimbus:route` =
//! `"POST /orders"` (several routes separated by `,`; what the manifest's workflow `route`
//! sets) gets the route's requests as API Gateway v2.0 HTTP events. An EXPRESS machine
//! runs synchronously and answers: an output with `statusCode` is a proxy response
//! (`statusCode`, `headers`, `body`, `isBase64Encoded`), any other output is the JSON body
//! of a 200; a failed execution is a 502 naming its error. A STANDARD machine is started
//! and answered at once with 202 and the execution's ARN. Function routes win over
//! workflow routes for the same key.

use crate::urls::{http_event_of, HttpEvent};
use crate::{ApiError, Gateway};
use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_core::RouteSpec;
use nimbus_flows::store::{ExecutionStatus, MachineType};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The tag naming a machine's routes.
pub const ROUTE_TAG: &str = "nimbus:route";
/// How long a route waits for an EXPRESS execution (API Gateway's own limit is 30 s).
const SYNC_WAIT: Duration = Duration::from_secs(30);

/// The route table of workflows: (route, machine ARN, type), most specific first.
pub(crate) type Table = Vec<(RouteSpec, String, MachineType)>;

impl Gateway {
    /// Rebuilds the workflow route table from the machines' `nimbus:route` tags; call after
    /// a machine is created, updated, tagged or deleted.
    pub fn workflows_changed(&self) {
        let Some(wf) = self.workflows.get() else {
            return;
        };
        let mut table: Table = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = match wf.store().list_machines(100, token.as_deref()) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "workflow routes: cannot list state machines");
                    return;
                }
            };
            for m in page.items {
                let Some(routes) = m.tags.get(ROUTE_TAG) else {
                    continue;
                };
                for key in routes.split(',').map(str::trim).filter(|k| !k.is_empty()) {
                    match RouteSpec::parse(key) {
                        Ok(r) => table.push((r, m.arn.clone(), m.machine_type)),
                        Err(e) => tracing::warn!(machine = %m.name, "ignored route {key:?}: {e}"),
                    }
                }
            }
            match page.next_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        table.sort_by_key(|(r, _, _)| std::cmp::Reverse(r.specificity()));
        self.workflow_routes.store(Arc::new(table));
    }

    pub(crate) fn match_workflow_route(
        &self,
        method: &str,
        path: &str,
    ) -> Option<(RouteSpec, String, MachineType, BTreeMap<String, String>)> {
        self.workflow_routes.load().iter().find_map(|(r, arn, t)| {
            r.matches(method, path)
                .map(|p| (r.clone(), arn.clone(), *t, p))
        })
    }
}

/// Serves a request on a workflow's route.
pub(crate) async fn serve(
    gw: Arc<Gateway>,
    route: RouteSpec,
    machine: String,
    machine_type: MachineType,
    params: BTreeMap<String, String>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let wf = gw
        .workflows
        .get()
        .cloned()
        .ok_or_else(|| ApiError::ServiceUnavailable("workflows are not enabled".into()))?;
    let raw_path = req.uri().path().to_string();
    let HttpEvent {
        event,
        trace,
        request_id,
    } = http_event_of(req, &raw_path, route.key(), Some(&params), "nimbus").await?;
    let req = nimbus_workflows::StartRequest {
        target: machine,
        name: Some(request_id),
        input: Some(event.to_string()),
        trace_header: trace.map(|t| t.stored_xray()),
    };
    let span = tracing::info_span!("workflow_route", route = route.key());
    run(wf, machine_type, req).instrument(span).await
}

async fn run(
    wf: nimbus_workflows::Workflows,
    machine_type: MachineType,
    req: nimbus_workflows::StartRequest,
) -> Result<Response, ApiError> {
    if machine_type == MachineType::Standard {
        let started = wf.start(req).await.map_err(workflow_error)?;
        let body = json!({
            "executionArn": started.execution.arn,
            "startDate": started.execution.start_date as f64 / 1000.0,
        });
        return Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response());
    }
    let e = wf
        .start_sync(req, SYNC_WAIT)
        .await
        .map_err(workflow_error)?;
    match e.status {
        ExecutionStatus::Succeeded => {
            let out: Value = e
                .output
                .as_deref()
                .and_then(|o| serde_json::from_str(o).ok())
                .unwrap_or(Value::Null);
            Ok(proxy_response(out))
        }
        ExecutionStatus::Running => Ok((
            StatusCode::GATEWAY_TIMEOUT,
            axum::Json(
                json!({"message": "The workflow did not finish in time", "executionArn": e.arn}),
            ),
        )
            .into_response()),
        _ => Ok((
            StatusCode::BAD_GATEWAY,
            axum::Json(json!({
                "message": "The workflow failed",
                "error": e.error.unwrap_or_default(),
                "executionArn": e.arn,
            })),
        )
            .into_response()),
    }
}

fn workflow_error(e: nimbus_workflows::WorkflowError) -> ApiError {
    ApiError::Internal(format!("cannot start the workflow: {e}"))
}

/// API Gateway's reading of an output: `{statusCode, headers, body, isBase64Encoded}`, or
/// any other value as a JSON 200.
fn proxy_response(out: Value) -> Response {
    let Some(status) = out.get("statusCode").and_then(Value::as_u64) else {
        return (StatusCode::OK, axum::Json(out)).into_response();
    };
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match &out["body"] {
        Value::String(s) if out["isBase64Encoded"] == json!(true) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_default()
        }
        Value::String(s) => s.clone().into_bytes(),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    };
    let mut resp = (status, Body::from(body)).into_response();
    if let Some(h) = out["headers"].as_object() {
        for (k, v) in h {
            if let (Ok(name), Some(Ok(value))) = (
                HeaderName::from_bytes(k.as_bytes()),
                v.as_str().map(HeaderValue::from_str),
            ) {
                resp.headers_mut().insert(name, value);
            }
        }
    }
    resp
}
