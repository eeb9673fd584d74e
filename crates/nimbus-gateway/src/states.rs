//! The Step Functions API: AWS's JSON 1.0 protocol at `POST /` with
//! `X-Amz-Target: AWSStepFunctions.<Op>`, what boto3's `stepfunctions` client and
//! `aws stepfunctions … --endpoint-url` send, served by the workflow executor
//! ([`nimbus_workflows::Workflows`]).
//!
//! Errors are HTTP 400 `{"__type": "com.amazonaws.swf.service.v2.model#<Code>",
//! "message": …}` (500 for internal failures); every executor and store error maps onto
//! its AWS code in [`code_of`]. Timestamps are epoch seconds. ARNs are
//! `arn:aws:states:us-east-1:<account>:stateMachine:<name>[:<version>|:<alias>]` and
//! `…:execution:<machine>:<name>`.
//!
//! Source: the `stepfunctions/2016-11-23` service model and the API reference
//! (<https://docs.aws.amazon.com/step-functions/latest/apireference/>).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_flows::store::{
    Alias, Execution, ExecutionStatus, FlowStore, HistoryEvent, Machine, MachineType,
    MachineUpdate, Millis, NewMachine, Route, StoreError, TokenAnswer, Version,
};
use nimbus_flows::validate::{Diagnostic, Severity};
use nimbus_workflows::{split_machine_arn, StartRequest, WorkflowError, Workflows};
use serde_json::{json, Map, Value};
use tracing::Instrument;

use crate::state::Gateway;

/// The `X-Amz-Target` prefix of the Step Functions API.
const TARGET_PREFIX: &str = "AWSStepFunctions.";
/// The error namespace botocore strips (it reads the code after `#`).
const ERROR_NAMESPACE: &str = "com.amazonaws.swf.service.v2.model";
const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
const REGION: &str = "us-east-1";
/// Largest request read: a definition is at most 1 MiB, JSON-escaped in the body.
const MAX_BODY: usize = 4 * 1024 * 1024;
/// How long `StartSyncExecution` waits (an EXPRESS execution lasts at most 5 minutes).
const SYNC_MAX_WAIT: Duration = Duration::from_secs(300);

/// The Step Functions operation of a request (`POST /`, `X-Amz-Target: AWSStepFunctions.OP`).
pub(crate) fn op_of<'a>(method: &Method, path: &str, headers: &'a HeaderMap) -> Option<&'a str> {
    if method != Method::POST || path != "/" {
        return None;
    }
    headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.strip_prefix(TARGET_PREFIX))
}

/// A Step Functions error: its AWS code, message and HTTP status.
#[derive(Debug)]
pub(crate) struct SfnError {
    code: &'static str,
    message: String,
    status: StatusCode,
}

impl SfnError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        SfnError {
            code,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        SfnError {
            code: "InternalServerError",
            message: message.into(),
            status: StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn missing(field: &str) -> Self {
        SfnError::new(
            "MissingRequiredParameter",
            format!("Missing required parameter: '{field}'"),
        )
    }

    fn validation(message: impl Into<String>) -> Self {
        SfnError::new("ValidationException", message)
    }

    fn invalid_arn(arn: &str) -> Self {
        SfnError::new("InvalidArn", format!("Invalid Arn: '{arn}'"))
    }
}

impl IntoResponse for SfnError {
    fn into_response(self) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        let message = if self.status.is_server_error() {
            tracing::error!(
                request_id,
                "step functions internal error: {}",
                self.message
            );
            format!("internal error (request id {request_id}); the server log has the details")
        } else {
            self.message
        };
        let body =
            json!({"__type": format!("{ERROR_NAMESPACE}#{}", self.code), "message": message});
        let mut resp = (
            self.status,
            [("content-type", CONTENT_TYPE)],
            body.to_string(),
        )
            .into_response();
        resp.headers_mut()
            .insert("x-amzn-errortype", HeaderValue::from_static(self.code));
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-amzn-requestid", v);
        }
        resp
    }
}

/// The one mapping from executor and store errors onto Step Functions error codes.
fn code_of(e: WorkflowError) -> SfnError {
    let msg = e.to_string();
    let code = match e {
        WorkflowError::Store(s) => match s {
            StoreError::MachineDoesNotExist(_) | StoreError::VersionDoesNotExist(_) => {
                "StateMachineDoesNotExist"
            }
            StoreError::MachineAlreadyExists(_) => "StateMachineAlreadyExists",
            StoreError::MachineDeleting(_) => "StateMachineDeleting",
            StoreError::AliasDoesNotExist(_) => "ResourceNotFound",
            StoreError::AliasAlreadyExists(_) | StoreError::Conflict(_) => "ConflictException",
            StoreError::InvalidRouting(_) => "ValidationException",
            StoreError::ExecutionDoesNotExist(_) => "ExecutionDoesNotExist",
            StoreError::ExecutionAlreadyExists(_) => "ExecutionAlreadyExists",
            StoreError::ExecutionNotRunning(_) => "ValidationException",
            StoreError::ExecutionNotRedrivable(_) => "ExecutionNotRedrivable",
            // An unknown task token, and a pagination token this server did not issue.
            StoreError::TaskDoesNotExist | StoreError::InvalidToken(_) => "InvalidToken",
            StoreError::Corrupt(_) | StoreError::Backend(_) => {
                return SfnError::internal(msg);
            }
        },
        WorkflowError::InvalidArn(_) => "InvalidArn",
        WorkflowError::InvalidName(_) => "InvalidName",
        WorkflowError::InvalidExecutionInput(_) => "InvalidExecutionInput",
        WorkflowError::InvalidOutput(_) => "InvalidOutput",
        WorkflowError::InvalidDefinition(_) => "InvalidDefinition",
        WorkflowError::Validation(_) => "ValidationException",
        WorkflowError::TypeNotSupported(_) => "StateMachineTypeNotSupported",
        WorkflowError::Internal(_) => return SfnError::internal(msg),
    };
    SfnError::new(code, msg)
}

impl From<WorkflowError> for SfnError {
    fn from(e: WorkflowError) -> Self {
        code_of(e)
    }
}

impl From<StoreError> for SfnError {
    fn from(e: StoreError) -> Self {
        code_of(WorkflowError::Store(e))
    }
}

/// An access refusal of the auth middleware in Step Functions' error shape.
pub(crate) fn auth_error(e: crate::error::ApiError) -> Response {
    let status = e.status();
    let code = e.error_type();
    SfnError {
        code,
        message: e.to_string(),
        status,
    }
    .into_response()
}

type Result<T> = std::result::Result<T, SfnError>;

/// Serves one Step Functions request.
pub(crate) async fn handle(gw: Arc<Gateway>, req: axum::extract::Request) -> Response {
    let op = op_of(req.method(), req.uri().path(), req.headers())
        .unwrap_or_default()
        .to_string();
    let span = tracing::info_span!("states", op = %op);
    async move {
        let reply = async {
            let body = axum::body::to_bytes(req.into_body(), MAX_BODY)
                .await
                .map_err(|e| SfnError::validation(format!("request body: {e}")))?;
            let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
                json!({})
            } else {
                serde_json::from_slice(&body).map_err(|e| {
                    SfnError::new("SerializationException", format!("invalid JSON body: {e}"))
                })?
            };
            if !input.is_object() {
                return Err(SfnError::new(
                    "SerializationException",
                    "the request body must be a JSON object",
                ));
            }
            let wf = gw.workflows.get().ok_or_else(|| SfnError {
                code: "ServiceUnavailable",
                message: "workflows are not enabled on this server".into(),
                status: StatusCode::SERVICE_UNAVAILABLE,
            })?;
            let out = dispatch(wf, &op, &Req(&input)).await;
            // Machines' `nimbus:route` tags make routes: refresh them after any change.
            if out.is_ok()
                && matches!(
                    op.as_str(),
                    "CreateStateMachine"
                        | "UpdateStateMachine"
                        | "DeleteStateMachine"
                        | "TagResource"
                        | "UntagResource"
                )
            {
                let g = gw.clone();
                let _ = tokio::task::spawn_blocking(move || g.workflows_changed()).await;
            }
            out
        }
        .await;
        match reply {
            Ok(v) => {
                tracing::debug!("step functions request served");
                ([("content-type", CONTENT_TYPE)], v.to_string()).into_response()
            }
            Err(e) => {
                tracing::info!(
                    code = e.code,
                    "step functions request refused: {}",
                    e.message
                );
                e.into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// Typed access to a request's fields.
struct Req<'a>(&'a Value);

impl Req<'_> {
    fn opt_str(&self, k: &str) -> Result<Option<String>> {
        match &self.0[k] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(SfnError::new(
                "SerializationException",
                format!("'{k}' must be a string"),
            )),
        }
    }

    fn str(&self, k: &str) -> Result<String> {
        self.opt_str(k)?
            .filter(|s| !s.is_empty())
            .ok_or_else(|| SfnError::missing(k))
    }

    fn bool(&self, k: &str) -> Result<Option<bool>> {
        match &self.0[k] {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            _ => Err(SfnError::new(
                "SerializationException",
                format!("'{k}' must be a boolean"),
            )),
        }
    }

    /// `maxResults`: 0 or absent is `default`; at most `max`.
    fn max_results(&self, default: usize, max: usize) -> Result<usize> {
        match &self.0["maxResults"] {
            Value::Null => Ok(default),
            v => match v.as_u64() {
                Some(0) => Ok(default),
                Some(n) if n as usize <= max => Ok(n as usize),
                _ => Err(SfnError::validation(format!(
                    "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to {max}"
                ))),
            },
        }
    }

    fn next_token(&self) -> Result<Option<String>> {
        Ok(self.opt_str("nextToken")?.filter(|t| !t.is_empty()))
    }
}

/// Epoch seconds (AWS JSON timestamps).
fn ts(ms: Millis) -> Value {
    json!(ms as f64 / 1000.0)
}

fn account() -> &'static str {
    crate::http_event::ACCOUNT_ID
}

fn machine_arn_of(name: &str) -> String {
    format!("arn:aws:states:{REGION}:{}:stateMachine:{name}", account())
}

/// Names of machines, executions and aliases: 1–80 characters, no whitespace, wildcards,
/// brackets, control characters or the other characters AWS refuses.
fn valid_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=80).contains(&n)
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "<>{}[]?*\"#%\\^|~`$&,;:/".contains(c))
}

/// A state machine ARN (optionally qualified): (unqualified ARN, qualifier).
fn machine_arn(arn: &str) -> Result<(String, Option<String>)> {
    split_machine_arn(arn).ok_or_else(|| SfnError::invalid_arn(arn))
}

fn unqualified_machine_arn(arn: &str) -> Result<String> {
    match machine_arn(arn)? {
        (m, None) => Ok(m),
        _ => Err(SfnError::invalid_arn(arn)),
    }
}

fn is_version(q: &str) -> bool {
    !q.is_empty() && q.chars().all(|c| c.is_ascii_digit())
}

/// Checks an execution ARN: `arn:aws:states:<region>:<account>:execution:<machine>:<name>`
/// (or `express:…:<uuid>`).
fn execution_arn(arn: &str) -> Result<String> {
    let p: Vec<&str> = arn.split(':').collect();
    let ok = p.len() >= 8
        && p.len() <= 9
        && p[0] == "arn"
        && p[2] == "states"
        && matches!(p[5], "execution" | "express")
        && p[6..].iter().all(|s| !s.is_empty());
    if ok {
        Ok(arn.to_string())
    } else {
        Err(SfnError::invalid_arn(arn))
    }
}

async fn blocking<T: Send + 'static>(
    wf: &Workflows,
    f: impl FnOnce(&dyn FlowStore) -> std::result::Result<T, StoreError> + Send + 'static,
) -> Result<T> {
    let store = wf.store().clone();
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| SfnError::internal(format!("store task: {e}")))?
        .map_err(SfnError::from)
}

/// `InvalidDefinition` when the definition has errors, naming each as AWS does.
fn check_definition(definition: &str) -> Result<()> {
    let errors: Vec<String> = nimbus_flows::validate::validate(definition)
        .into_iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SfnError::new(
            "InvalidDefinition",
            format!("Invalid State Machine Definition: '{}'", errors.join(", ")),
        ))
    }
}

fn logging_default(v: &Value) -> Value {
    if v.as_object().is_some_and(|o| !o.is_empty()) {
        v.clone()
    } else {
        json!({"level": "OFF", "includeExecutionData": false})
    }
}

fn tracing_default(v: &Value) -> Value {
    if v.as_object().is_some_and(|o| !o.is_empty()) {
        v.clone()
    } else {
        json!({"enabled": false})
    }
}

fn object_field(r: &Req, k: &str) -> Result<Option<Value>> {
    match &r.0[k] {
        Value::Null => Ok(None),
        v @ Value::Object(_) => Ok(Some(v.clone())),
        _ => Err(SfnError::new(
            "SerializationException",
            format!("'{k}' must be an object"),
        )),
    }
}

/// `tags: [{key, value}]`.
fn tags_of(v: &Value) -> Result<BTreeMap<String, String>> {
    let mut tags = BTreeMap::new();
    let Some(list) = v.as_array() else {
        return if v.is_null() {
            Ok(tags)
        } else {
            Err(SfnError::new(
                "SerializationException",
                "'tags' must be a list",
            ))
        };
    };
    if list.len() > 50 {
        return Err(SfnError::new(
            "TooManyTags",
            "a resource can have at most 50 tags",
        ));
    }
    for t in list {
        let key = t["key"]
            .as_str()
            .filter(|k| !k.is_empty() && k.chars().count() <= 128)
            .ok_or_else(|| SfnError::validation("every tag needs a key of 1 to 128 characters"))?;
        let value = t["value"].as_str().unwrap_or_default();
        if value.chars().count() > 256 {
            return Err(SfnError::validation(
                "a tag value has at most 256 characters",
            ));
        }
        tags.insert(key.to_string(), value.to_string());
    }
    Ok(tags)
}

fn tags_view(tags: &BTreeMap<String, String>) -> Value {
    json!(tags
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect::<Vec<_>>())
}

/// A List operation's answer: `items` under `key`, and `nextToken` when there is more.
fn paged(key: &str, items: Vec<Value>, next_token: Option<String>) -> Value {
    let mut out = json!({ key: items });
    if let Some(t) = next_token {
        out["nextToken"] = json!(t);
    }
    out
}

fn machine_view(m: &Machine) -> Value {
    revision_view(m, &m.arn, &m.revision, m.created, &m.description)
}

fn version_view(m: &Machine, ver: &Version) -> Value {
    revision_view(m, &ver.arn, &ver.revision, ver.created, &ver.description)
}

/// DescribeStateMachine's answer for a machine or one of its versions (`arn`, `r`).
fn revision_view(
    m: &Machine,
    arn: &str,
    r: &nimbus_flows::store::Revision,
    created: i64,
    description: &str,
) -> Value {
    let mut v = json!({
        "stateMachineArn": arn,
        "name": m.name,
        "status": m.status.as_str(),
        "definition": r.definition,
        "roleArn": r.role_arn,
        "type": m.machine_type.as_str(),
        "creationDate": ts(created),
        "loggingConfiguration": logging_default(&r.logging),
        "tracingConfiguration": tracing_default(&r.tracing),
        "revisionId": r.revision_id,
    });
    if !description.is_empty() {
        v["description"] = json!(description);
    }
    v
}

fn alias_view(a: &Alias) -> Value {
    let mut v = json!({
        "stateMachineAliasArn": a.arn,
        "name": a.name,
        "routingConfiguration": routes_view(&a.routing),
        "creationDate": ts(a.created),
        "updateDate": ts(a.updated),
    });
    if !a.description.is_empty() {
        v["description"] = json!(a.description);
    }
    v
}

fn routes_view(routes: &[Route]) -> Value {
    json!(routes
        .iter()
        .map(|r| json!({"stateMachineVersionArn": r.version_arn, "weight": r.weight}))
        .collect::<Vec<_>>())
}

fn routes_of(v: &Value) -> Result<Vec<Route>> {
    let list = v
        .as_array()
        .filter(|l| !l.is_empty() && l.len() <= 2)
        .ok_or_else(|| {
            SfnError::validation("routingConfiguration must list one or two versions")
        })?;
    list.iter()
        .map(|r| {
            let version_arn = r["stateMachineVersionArn"]
                .as_str()
                .ok_or_else(|| SfnError::missing("stateMachineVersionArn"))?;
            match machine_arn(version_arn)? {
                (_, Some(q)) if is_version(&q) => {}
                _ => return Err(SfnError::invalid_arn(version_arn)),
            }
            let weight = r["weight"]
                .as_u64()
                .filter(|w| *w <= 100)
                .ok_or_else(|| SfnError::validation("weight must be 0 to 100"))?;
            Ok(Route {
                version_arn: version_arn.to_string(),
                weight: weight as u32,
            })
        })
        .collect()
}

fn redrivable(e: &Execution) -> bool {
    matches!(
        e.status,
        ExecutionStatus::Failed | ExecutionStatus::Aborted | ExecutionStatus::TimedOut
    )
}

fn execution_view(e: &Execution) -> Value {
    let mut v = json!({
        "executionArn": e.arn,
        "stateMachineArn": e.machine_arn,
        "name": e.name,
        "status": e.status.as_str(),
        "startDate": ts(e.start_date),
        "input": e.input,
        "inputDetails": {"included": true},
        "redriveCount": e.redrive_count,
        "redriveStatus": if redrivable(e) { "REDRIVABLE" } else { "NOT_REDRIVABLE" },
    });
    if !redrivable(e) {
        v["redriveStatusReason"] = json!(if e.status == ExecutionStatus::Succeeded {
            "Execution is SUCCEEDED and cannot be redriven"
        } else {
            "Execution is RUNNING and cannot be redriven"
        });
    }
    if let Some(d) = e.stop_date {
        v["stopDate"] = ts(d);
    }
    if let Some(o) = &e.output {
        v["output"] = json!(o);
        v["outputDetails"] = json!({"included": true});
    }
    if let Some(x) = &e.error {
        v["error"] = json!(x);
    }
    if let Some(c) = &e.cause {
        v["cause"] = json!(c);
    }
    if let Some(t) = &e.trace_header {
        v["traceHeader"] = json!(t);
    }
    if let Some(a) = &e.version_arn {
        v["stateMachineVersionArn"] = json!(a);
    }
    if let Some(a) = &e.alias_arn {
        v["stateMachineAliasArn"] = json!(a);
    }
    if let Some(d) = e.redrive_date {
        v["redriveDate"] = ts(d);
    }
    v
}

fn execution_item(e: &Execution) -> Value {
    let mut v = json!({
        "executionArn": e.arn,
        "stateMachineArn": e.machine_arn,
        "name": e.name,
        "status": e.status.as_str(),
        "startDate": ts(e.start_date),
        "redriveCount": e.redrive_count,
    });
    if let Some(d) = e.stop_date {
        v["stopDate"] = ts(d);
    }
    if let Some(a) = &e.version_arn {
        v["stateMachineVersionArn"] = json!(a);
    }
    if let Some(a) = &e.alias_arn {
        v["stateMachineAliasArn"] = json!(a);
    }
    v
}

/// The key of an event's details: `stateEnteredEventDetails` for every `…StateEntered`,
/// `stateExitedEventDetails` for every `…StateExited`, else the lowerCamel type with
/// `EventDetails` (`taskScheduledEventDetails`, `mapIterationStartedEventDetails`, …).
pub(crate) fn details_key(event_type: &str) -> String {
    if event_type.ends_with("StateEntered") {
        return "stateEnteredEventDetails".into();
    }
    if event_type.ends_with("StateExited") {
        return "stateExitedEventDetails".into();
    }
    let mut chars = event_type.chars();
    match chars.next() {
        Some(c) => format!("{}{}EventDetails", c.to_ascii_lowercase(), chars.as_str()),
        None => "EventDetails".into(),
    }
}

/// A history event as `GetExecutionHistory` returns it.
pub(crate) fn event_view(e: &HistoryEvent, include_data: bool) -> Value {
    let mut v = json!({
        "timestamp": ts(e.timestamp),
        "type": e.event_type,
        "id": e.id,
        "previousEventId": e.previous_event_id,
    });
    if let Some(d) = e.details.as_object().filter(|d| !d.is_empty()) {
        let mut d: Map<String, Value> = d.clone();
        if !include_data {
            d.remove("input");
            d.remove("output");
        }
        v[details_key(&e.event_type)] = Value::Object(d);
    }
    v
}

fn diagnostic_view(d: &Diagnostic) -> Value {
    json!({
        "severity": match d.severity { Severity::Error => "ERROR", Severity::Warning => "WARNING" },
        "code": d.code,
        "message": d.message,
        "location": if d.location.is_empty() { "/" } else { &d.location },
    })
}

/// Offset paging over an in-memory list (aliases).
fn page_offset(token: Option<&str>) -> Result<usize> {
    match token {
        None => Ok(0),
        Some(t) => t
            .parse()
            .map_err(|_| SfnError::new("InvalidToken", format!("Invalid Token: '{t}'"))),
    }
}

async fn describe_machine(wf: &Workflows, arn: &str) -> Result<Machine> {
    let a = arn.to_string();
    blocking(wf, move |st| st.describe_machine(&a)).await
}

async fn describe_execution(wf: &Workflows, arn: &str) -> Result<Execution> {
    let a = execution_arn(arn)?;
    blocking(wf, move |st| st.describe_execution(&a)).await
}

async fn publish(wf: &Workflows, arn: &str, description: String) -> Result<Version> {
    let a = arn.to_string();
    let now = nimbus_workflows::now_millis();
    blocking(wf, move |st| {
        st.publish_version(&a, &description, None, now)
    })
    .await
}

fn check_description(d: &Option<String>) -> Result<()> {
    if d.as_ref().is_some_and(|d| d.chars().count() > 256) {
        return Err(SfnError::validation(
            "a description has at most 256 characters",
        ));
    }
    Ok(())
}

async fn dispatch(wf: &Workflows, op: &str, r: &Req<'_>) -> Result<Value> {
    let now = nimbus_workflows::now_millis;
    match op {
        // ---- state machines ----
        "CreateStateMachine" => {
            let name = r.str("name")?;
            if !valid_name(&name) {
                return Err(SfnError::new(
                    "InvalidName",
                    format!("Invalid Name: '{name}'"),
                ));
            }
            let definition = r.str("definition")?;
            let role_arn = r.str("roleArn")?;
            let machine_type = match r.opt_str("type")? {
                None => MachineType::Standard,
                Some(t) => MachineType::parse(&t).ok_or_else(|| {
                    SfnError::validation(format!(
                        "1 validation error detected: Value '{t}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [STANDARD, EXPRESS]"
                    ))
                })?,
            };
            check_definition(&definition)?;
            let version_description = r.opt_str("versionDescription")?;
            check_description(&version_description)?;
            let publish_it = r.bool("publish")?.unwrap_or(false);
            if version_description.is_some() && !publish_it {
                return Err(SfnError::validation(
                    "versionDescription requires publish to be true",
                ));
            }
            let new = NewMachine {
                arn: machine_arn_of(&name),
                name,
                definition,
                machine_type,
                role_arn,
                logging: object_field(r, "loggingConfiguration")?.unwrap_or(json!({})),
                tracing: object_field(r, "tracingConfiguration")?.unwrap_or(json!({})),
                tags: tags_of(&r.0["tags"])?,
                description: String::new(),
            };
            let t = now();
            let created = blocking(wf, move |st| st.create_machine(&new, t)).await?;
            let m = created.machine;
            let mut out = json!({"stateMachineArn": m.arn, "creationDate": ts(m.created)});
            if publish_it {
                let v = publish(wf, &m.arn, version_description.unwrap_or_default()).await?;
                out["stateMachineVersionArn"] = json!(v.arn);
            }
            Ok(out)
        }
        "DescribeStateMachine" => {
            let arn = r.str("stateMachineArn")?;
            match machine_arn(&arn)? {
                (m, None) => Ok(machine_view(&describe_machine(wf, &m).await?)),
                (m, Some(q)) if is_version(&q) => {
                    let machine = describe_machine(wf, &m).await?;
                    let a = arn.clone();
                    let ver = blocking(wf, move |st| st.describe_version(&a)).await?;
                    Ok(version_view(&machine, &ver))
                }
                _ => Err(SfnError::invalid_arn(&arn)),
            }
        }
        "UpdateStateMachine" => {
            let arn = unqualified_machine_arn(&r.str("stateMachineArn")?)?;
            let definition = r.opt_str("definition")?;
            let role_arn = r.opt_str("roleArn")?;
            let logging = object_field(r, "loggingConfiguration")?;
            let tracing = object_field(r, "tracingConfiguration")?;
            let publish_it = r.bool("publish")?.unwrap_or(false);
            let version_description = r.opt_str("versionDescription")?;
            check_description(&version_description)?;
            if definition.is_none() && role_arn.is_none() && logging.is_none() && tracing.is_none()
            {
                return Err(SfnError::missing(
                    "definition, roleArn, loggingConfiguration or tracingConfiguration",
                ));
            }
            if let Some(d) = &definition {
                check_definition(d)?;
            }
            let u = MachineUpdate {
                definition,
                role_arn,
                logging,
                tracing,
                description: None,
            };
            let a = arn.clone();
            let t = now();
            let m = blocking(wf, move |st| st.update_machine(&a, &u, t)).await?;
            let mut out =
                json!({"updateDate": ts(m.updated), "revisionId": m.revision.revision_id});
            if publish_it {
                let v = publish(wf, &arn, version_description.unwrap_or_default()).await?;
                out["stateMachineVersionArn"] = json!(v.arn);
            }
            Ok(out)
        }
        "DeleteStateMachine" => {
            let arn = unqualified_machine_arn(&r.str("stateMachineArn")?)?;
            blocking(wf, move |st| st.delete_machine(&arn)).await?;
            Ok(json!({}))
        }
        "ListStateMachines" => {
            let max = r.max_results(100, 1000)?;
            let token = r.next_token()?;
            let page = blocking(wf, move |st| st.list_machines(max, token.as_deref())).await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|m| {
                    json!({"stateMachineArn": m.arn, "name": m.name,
                           "type": m.machine_type.as_str(), "creationDate": ts(m.created)})
                })
                .collect();
            Ok(paged("stateMachines", items, page.next_token))
        }

        // ---- versions ----
        "PublishStateMachineVersion" => {
            let arn = unqualified_machine_arn(&r.str("stateMachineArn")?)?;
            let description = r.opt_str("description")?;
            check_description(&description)?;
            let expected = r.opt_str("revisionId")?;
            let t = now();
            let v = blocking(wf, move |st| {
                st.publish_version(
                    &arn,
                    &description.unwrap_or_default(),
                    expected.as_deref(),
                    t,
                )
            })
            .await?;
            Ok(json!({"stateMachineVersionArn": v.arn, "creationDate": ts(v.created)}))
        }
        "ListStateMachineVersions" => {
            let arn = unqualified_machine_arn(&r.str("stateMachineArn")?)?;
            let max = r.max_results(100, 1000)?;
            let token = r.next_token()?;
            let page =
                blocking(wf, move |st| st.list_versions(&arn, max, token.as_deref())).await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .map(|v| json!({"stateMachineVersionArn": v.arn, "creationDate": ts(v.created)}))
                .collect();
            Ok(paged("stateMachineVersions", items, page.next_token))
        }
        "DeleteStateMachineVersion" => {
            let arn = r.str("stateMachineVersionArn")?;
            match machine_arn(&arn)? {
                (_, Some(q)) if is_version(&q) => {}
                _ => return Err(SfnError::invalid_arn(&arn)),
            }
            blocking(wf, move |st| st.delete_version(&arn)).await?;
            Ok(json!({}))
        }

        // ---- aliases ----
        "CreateStateMachineAlias" => {
            let name = r.str("name")?;
            if !valid_name(&name) || is_version(&name) {
                return Err(SfnError::new(
                    "InvalidName",
                    format!("Invalid Name: '{name}'"),
                ));
            }
            let description = r.opt_str("description")?;
            check_description(&description)?;
            let routing = match &r.0["routingConfiguration"] {
                Value::Null => return Err(SfnError::missing("routingConfiguration")),
                v => routes_of(v)?,
            };
            let (machine, _) = machine_arn(&routing[0].version_arn)?;
            let t = now();
            let a = blocking(wf, move |st| {
                st.create_alias(
                    &machine,
                    &name,
                    &description.unwrap_or_default(),
                    &routing,
                    t,
                )
            })
            .await?;
            Ok(json!({"stateMachineAliasArn": a.arn, "creationDate": ts(a.created)}))
        }
        "DescribeStateMachineAlias" => {
            let arn = alias_arn(&r.str("stateMachineAliasArn")?)?;
            let a = blocking(wf, move |st| st.describe_alias(&arn)).await?;
            Ok(alias_view(&a))
        }
        "UpdateStateMachineAlias" => {
            let arn = alias_arn(&r.str("stateMachineAliasArn")?)?;
            let description = r.opt_str("description")?;
            check_description(&description)?;
            let routing = match &r.0["routingConfiguration"] {
                Value::Null => None,
                v => Some(routes_of(v)?),
            };
            if description.is_none() && routing.is_none() {
                return Err(SfnError::missing("description or routingConfiguration"));
            }
            let t = now();
            let a = blocking(wf, move |st| {
                st.update_alias(&arn, description.as_deref(), routing.as_deref(), t)
            })
            .await?;
            Ok(json!({"updateDate": ts(a.updated)}))
        }
        "DeleteStateMachineAlias" => {
            let arn = alias_arn(&r.str("stateMachineAliasArn")?)?;
            blocking(wf, move |st| st.delete_alias(&arn)).await?;
            Ok(json!({}))
        }
        "ListStateMachineAliases" => {
            let arn = unqualified_machine_arn(&r.str("stateMachineArn")?)?;
            let max = r.max_results(100, 100)?;
            let from = page_offset(r.next_token()?.as_deref())?;
            let a = arn.clone();
            // An unknown machine is StateMachineDoesNotExist, not an empty list.
            describe_machine(wf, &a).await?;
            let all = blocking(wf, move |st| st.list_aliases(&arn)).await?;
            let items: Vec<Value> = all
                .iter()
                .skip(from)
                .take(max)
                .map(|a| json!({"stateMachineAliasArn": a.arn, "creationDate": ts(a.created)}))
                .collect();
            let mut out = json!({"stateMachineAliases": items});
            if from + max < all.len() {
                out["nextToken"] = json!((from + max).to_string());
            }
            Ok(out)
        }

        // ---- executions ----
        "StartExecution" => {
            let target = r.str("stateMachineArn")?;
            machine_arn(&target)?;
            let started = wf
                .start(StartRequest {
                    target,
                    name: r.opt_str("name")?,
                    input: r.opt_str("input")?,
                    trace_header: r.opt_str("traceHeader")?,
                })
                .await?;
            let e = started.execution;
            Ok(json!({"executionArn": e.arn, "startDate": ts(e.start_date)}))
        }
        "StartSyncExecution" => {
            let target = r.str("stateMachineArn")?;
            let (m, _) = machine_arn(&target)?;
            let machine = describe_machine(wf, &m).await?;
            if machine.machine_type != MachineType::Express {
                return Err(code_of(WorkflowError::TypeNotSupported(
                    "This operation is not supported by this type of state machine".into(),
                )));
            }
            let e = wf
                .start_sync(
                    StartRequest {
                        target,
                        name: r.opt_str("name")?,
                        input: r.opt_str("input")?,
                        trace_header: r.opt_str("traceHeader")?,
                    },
                    SYNC_MAX_WAIT,
                )
                .await?;
            let mut v = execution_view(&e);
            for k in ["redriveCount", "redriveStatus", "redriveStatusReason"] {
                if let Some(o) = v.as_object_mut() {
                    o.remove(k);
                }
            }
            let stop = e.stop_date.unwrap_or_else(now);
            v["stopDate"] = ts(stop);
            v["billingDetails"] = json!({
                "billedMemoryUsedInMB": 64,
                "billedDurationInMilliseconds": ((stop - e.start_date).max(0) + 99) / 100 * 100,
            });
            Ok(v)
        }
        "DescribeExecution" => {
            let e = describe_execution(wf, &r.str("executionArn")?).await?;
            Ok(execution_view(&e))
        }
        "StopExecution" => {
            let arn = execution_arn(&r.str("executionArn")?)?;
            let error = r.opt_str("error")?;
            let cause = r.opt_str("cause")?;
            if error.as_ref().is_some_and(|e| e.chars().count() > 256) {
                return Err(SfnError::validation("error has at most 256 characters"));
            }
            if cause.as_ref().is_some_and(|c| c.chars().count() > 32_768) {
                return Err(SfnError::validation("cause has at most 32768 characters"));
            }
            let e = wf.stop(&arn, error, cause).await?;
            Ok(json!({"stopDate": ts(e.stop_date.unwrap_or_else(now))}))
        }
        "ListExecutions" => {
            if r.opt_str("mapRunArn")?.is_some() {
                return Err(SfnError::new(
                    "ResourceNotFound",
                    "Nimbus has no distributed Map runs to list",
                ));
            }
            let target = r.str("stateMachineArn")?;
            let (arn, qualifier) = machine_arn(&target)?;
            let status = match r.opt_str("statusFilter")? {
                None => None,
                Some(s) => Some(ExecutionStatus::parse(&s).ok_or_else(|| {
                    SfnError::validation(format!(
                        "1 validation error detected: Value '{s}' at 'statusFilter' failed to satisfy constraint: Member must satisfy enum value set: [RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED, PENDING_REDRIVE]"
                    ))
                })?),
            };
            let redrive_filter = r.opt_str("redriveFilter")?;
            let max = r.max_results(100, 1000)?;
            let token = r.next_token()?;
            describe_machine(wf, &arn).await?;
            let page = blocking(wf, move |st| {
                st.list_executions(&arn, status, max, token.as_deref())
            })
            .await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .filter(|e| match &qualifier {
                    None => true,
                    Some(_) => {
                        e.version_arn.as_deref() == Some(target.as_str())
                            || e.alias_arn.as_deref() == Some(target.as_str())
                    }
                })
                .filter(|e| match redrive_filter.as_deref() {
                    Some("REDRIVEN") => e.redrive_count > 0,
                    Some("NOT_REDRIVEN") => e.redrive_count == 0,
                    _ => true,
                })
                .map(execution_item)
                .collect();
            Ok(paged("executions", items, page.next_token))
        }
        "GetExecutionHistory" => {
            let arn = execution_arn(&r.str("executionArn")?)?;
            let max = r.max_results(100, 1000)?;
            let reverse = r.bool("reverseOrder")?.unwrap_or(false);
            let include = r.bool("includeExecutionData")?.unwrap_or(true);
            let token = r.next_token()?;
            let page = blocking(wf, move |st| {
                st.describe_execution(&arn)?;
                st.history(&arn, reverse, max, token.as_deref())
            })
            .await?;
            let events: Vec<Value> = page.items.iter().map(|e| event_view(e, include)).collect();
            Ok(paged("events", events, page.next_token))
        }
        "DescribeStateMachineForExecution" => {
            let e = describe_execution(wf, &r.str("executionArn")?).await?;
            let rid = e.revision_id.clone();
            let rev = blocking(wf, move |st| st.revision(&rid)).await?;
            let name = e
                .machine_arn
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_string();
            let mut v = json!({
                "stateMachineArn": e.machine_arn,
                "name": name,
                "definition": rev.definition,
                "roleArn": rev.role_arn,
                "updateDate": ts(rev.created),
                "loggingConfiguration": logging_default(&rev.logging),
                "tracingConfiguration": tracing_default(&rev.tracing),
                "revisionId": rev.revision_id,
            });
            if let Some(a) = &e.version_arn {
                v["stateMachineVersionArn"] = json!(a);
            }
            if let Some(a) = &e.alias_arn {
                v["stateMachineAliasArn"] = json!(a);
            }
            Ok(v)
        }
        "RedriveExecution" => {
            let arn = execution_arn(&r.str("executionArn")?)?;
            let e = wf.redrive(&arn).await?;
            Ok(json!({"redriveDate": ts(e.redrive_date.unwrap_or_else(now))}))
        }

        // ---- validation ----
        "ValidateStateMachineDefinition" => {
            let definition = r.str("definition")?;
            if let Some(t) = r.opt_str("type")? {
                if MachineType::parse(&t).is_none() {
                    return Err(SfnError::validation(format!(
                        "1 validation error detected: Value '{t}' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [STANDARD, EXPRESS]"
                    )));
                }
            }
            let warnings = match r.opt_str("severity")?.as_deref() {
                None | Some("ERROR") => false,
                Some("WARNING") => true,
                Some(s) => {
                    return Err(SfnError::validation(format!(
                        "1 validation error detected: Value '{s}' at 'severity' failed to satisfy constraint: Member must satisfy enum value set: [ERROR, WARNING]"
                    )))
                }
            };
            let max = r.max_results(100, 100)?;
            let all = nimbus_flows::validate::validate(&definition);
            let failed = all.iter().any(|d| d.severity == Severity::Error);
            let shown: Vec<&Diagnostic> = all
                .iter()
                .filter(|d| warnings || d.severity == Severity::Error)
                .collect();
            let truncated = shown.len() > max;
            Ok(json!({
                "result": if failed { "FAIL" } else { "OK" },
                "diagnostics": shown.iter().take(max).map(|d| diagnostic_view(d)).collect::<Vec<_>>(),
                "truncated": truncated,
            }))
        }

        // ---- task tokens ----
        "SendTaskSuccess" => {
            let token = task_token(r)?;
            let output = r
                .opt_str("output")?
                .ok_or_else(|| SfnError::missing("output"))?;
            token_answer(wf.task_success(&token, output).await?)
        }
        "SendTaskFailure" => {
            let token = task_token(r)?;
            let error = r.opt_str("error")?;
            let cause = r.opt_str("cause")?;
            if error.as_ref().is_some_and(|e| e.chars().count() > 256) {
                return Err(SfnError::validation("error has at most 256 characters"));
            }
            if cause.as_ref().is_some_and(|c| c.chars().count() > 32_768) {
                return Err(SfnError::validation("cause has at most 32768 characters"));
            }
            token_answer(wf.task_failure(&token, error, cause).await?)
        }
        "SendTaskHeartbeat" => {
            let token = task_token(r)?;
            token_answer(wf.task_heartbeat(&token).await?)
        }

        // ---- tags ----
        "TagResource" => {
            let arn = tag_target(&r.str("resourceArn")?)?;
            let tags = match &r.0["tags"] {
                Value::Null => return Err(SfnError::missing("tags")),
                v => tags_of(v)?,
            };
            let machine = describe_machine(wf, &arn).await?;
            let mut merged = machine.tags.clone();
            merged.extend(tags.clone());
            if merged.len() > 50 {
                return Err(SfnError::new(
                    "TooManyTags",
                    "a resource can have at most 50 tags",
                ));
            }
            blocking(wf, move |st| st.tag_machine(&arn, &tags)).await?;
            Ok(json!({}))
        }
        "UntagResource" => {
            let arn = tag_target(&r.str("resourceArn")?)?;
            let keys: Vec<String> = match &r.0["tagKeys"] {
                Value::Null => return Err(SfnError::missing("tagKeys")),
                Value::Array(l) => l
                    .iter()
                    .map(|k| {
                        k.as_str().map(str::to_string).ok_or_else(|| {
                            SfnError::new("SerializationException", "tagKeys must be strings")
                        })
                    })
                    .collect::<Result<_>>()?,
                _ => {
                    return Err(SfnError::new(
                        "SerializationException",
                        "'tagKeys' must be a list",
                    ))
                }
            };
            describe_machine(wf, &arn).await?;
            blocking(wf, move |st| st.untag_machine(&arn, &keys)).await?;
            Ok(json!({}))
        }
        "ListTagsForResource" => {
            let arn = tag_target(&r.str("resourceArn")?)?;
            let m = describe_machine(wf, &arn).await?;
            Ok(json!({"tags": tags_view(&m.tags)}))
        }

        other => Err(SfnError::new(
            "UnknownOperationException",
            format!("Unknown operation: AWSStepFunctions.{other}"),
        )),
    }
}

/// A state machine alias ARN: `<machine arn>:<alias name>` (not a number).
fn alias_arn(arn: &str) -> Result<String> {
    match machine_arn(arn)? {
        (_, Some(q)) if !is_version(&q) => Ok(arn.to_string()),
        _ => Err(SfnError::invalid_arn(arn)),
    }
}

/// Tags live on state machines: an execution or activity ARN names nothing taggable here.
fn tag_target(arn: &str) -> Result<String> {
    match split_machine_arn(arn) {
        Some((m, None)) => Ok(m),
        Some(_) => Err(SfnError::invalid_arn(arn)),
        None if arn.starts_with("arn:aws:states:") => Err(SfnError::new(
            "ResourceNotFound",
            format!("Resource not found: '{arn}'"),
        )),
        None => Err(SfnError::invalid_arn(arn)),
    }
}

fn task_token(r: &Req) -> Result<String> {
    let t = r.str("taskToken")?;
    if t.len() > 2048 {
        return Err(SfnError::validation(
            "1 validation error detected: Value at 'taskToken' failed to satisfy constraint: Member must have length less than or equal to 2048",
        ));
    }
    Ok(t)
}

/// `Closed` is AWS's `TaskTimedOut`: the task is over (timed out, resolved otherwise, or
/// its execution ended).
fn token_answer(a: TokenAnswer) -> Result<Value> {
    match a {
        TokenAnswer::Accepted | TokenAnswer::Duplicate => Ok(json!({})),
        TokenAnswer::Closed => Err(SfnError::new(
            "TaskTimedOut",
            "Task Timed Out: the task of this token is no longer open",
        )),
    }
}

/// What a Step Functions request needs authorised: `states:<Op>` on the resource it acts
/// on (state machine, version, alias, execution); `*` for the list, validation and task
/// token operations. A body that is not JSON needs any valid key; the handler refuses it.
pub(crate) fn checks(op: &str, body: &[u8]) -> Vec<crate::auth::Check> {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let s = |k: &str| req[k].as_str().unwrap_or_default().to_string();
    let resource = match op {
        "CreateStateMachine" => machine_arn_of(&s("name")),
        "DescribeStateMachine"
        | "UpdateStateMachine"
        | "DeleteStateMachine"
        | "PublishStateMachineVersion"
        | "ListStateMachineVersions"
        | "ListStateMachineAliases"
        | "ListExecutions"
        | "StartExecution"
        | "StartSyncExecution" => s("stateMachineArn"),
        "DeleteStateMachineVersion" => s("stateMachineVersionArn"),
        "CreateStateMachineAlias" => {
            let machine = req["routingConfiguration"][0]["stateMachineVersionArn"]
                .as_str()
                .and_then(split_machine_arn)
                .map(|(m, _)| m)
                .unwrap_or_default();
            format!("{machine}:{}", s("name"))
        }
        "DescribeStateMachineAlias" | "UpdateStateMachineAlias" | "DeleteStateMachineAlias" => {
            s("stateMachineAliasArn")
        }
        "DescribeExecution"
        | "StopExecution"
        | "GetExecutionHistory"
        | "DescribeStateMachineForExecution"
        | "RedriveExecution" => s("executionArn"),
        "TagResource" | "UntagResource" | "ListTagsForResource" => s("resourceArn"),
        _ => "*".to_string(),
    };
    let resource = if resource.is_empty() {
        "*".to_string()
    } else {
        resource
    };
    vec![crate::auth::check(&format!("states:{op}"), resource)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_keys_follow_aws_naming() {
        assert_eq!(details_key("PassStateEntered"), "stateEnteredEventDetails");
        assert_eq!(details_key("MapStateExited"), "stateExitedEventDetails");
        assert_eq!(
            details_key("ExecutionStarted"),
            "executionStartedEventDetails"
        );
        assert_eq!(details_key("TaskScheduled"), "taskScheduledEventDetails");
        assert_eq!(
            details_key("LambdaFunctionSucceeded"),
            "lambdaFunctionSucceededEventDetails"
        );
        assert_eq!(
            details_key("MapIterationStarted"),
            "mapIterationStartedEventDetails"
        );
    }

    #[test]
    fn event_view_strips_data_and_omits_empty_details() {
        let e = HistoryEvent {
            id: 2,
            previous_event_id: 1,
            timestamp: 1_500,
            event_type: "PassStateEntered".into(),
            details: json!({"name": "P", "input": "{}", "inputDetails": {"truncated": false}}),
        };
        let v = event_view(&e, false);
        assert_eq!(v["timestamp"], json!(1.5));
        assert_eq!(v["stateEnteredEventDetails"]["name"], "P");
        assert!(v["stateEnteredEventDetails"].get("input").is_none());
        assert_eq!(
            event_view(&e, true)["stateEnteredEventDetails"]["input"],
            "{}"
        );
        let empty = HistoryEvent {
            event_type: "LambdaFunctionStarted".into(),
            details: json!({}),
            ..e
        };
        let v = event_view(&empty, true);
        assert!(v.get("lambdaFunctionStartedEventDetails").is_none());
        assert_eq!(v.as_object().unwrap().len(), 4);
    }

    #[test]
    fn arns_are_checked() {
        assert!(execution_arn("arn:aws:states:us-east-1:0:execution:M:e").is_ok());
        assert!(execution_arn("arn:aws:states:us-east-1:0:express:M:e:u").is_ok());
        assert!(execution_arn("arn:aws:states:us-east-1:0:stateMachine:M").is_err());
        assert!(execution_arn("nope").is_err());
        assert!(alias_arn("arn:aws:states:us-east-1:0:stateMachine:M:prod").is_ok());
        assert!(alias_arn("arn:aws:states:us-east-1:0:stateMachine:M:3").is_err());
        assert_eq!(
            unqualified_machine_arn("bad").unwrap_err().code,
            "InvalidArn"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("orders-1"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a*"));
        assert!(!valid_name(&"x".repeat(81)));
    }

    #[test]
    fn errors_map_to_aws_codes() {
        let c = |e: StoreError| code_of(WorkflowError::Store(e)).code;
        assert_eq!(
            c(StoreError::MachineDoesNotExist("x".into())),
            "StateMachineDoesNotExist"
        );
        assert_eq!(
            c(StoreError::ExecutionAlreadyExists("x".into())),
            "ExecutionAlreadyExists"
        );
        assert_eq!(c(StoreError::TaskDoesNotExist), "InvalidToken");
        assert_eq!(c(StoreError::Backend("x".into())), "InternalServerError");
        assert_eq!(
            code_of(WorkflowError::TypeNotSupported("x".into())).code,
            "StateMachineTypeNotSupported"
        );
        assert_eq!(
            code_of(WorkflowError::Internal("x".into())).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn invalid_definitions_name_the_state() {
        let e = check_definition(r#"{"StartAt":"A","States":{"A":{"Type":"Bogus","End":true}}}"#)
            .unwrap_err();
        assert_eq!(e.code, "InvalidDefinition");
        assert!(e.message.contains("/States/A"), "{}", e.message);
        assert!(
            check_definition(r#"{"StartAt":"A","States":{"A":{"Type":"Pass","End":true}}}"#)
                .is_ok()
        );
    }

    #[test]
    fn checks_name_the_resource() {
        let c = checks(
            "StartExecution",
            br#"{"stateMachineArn":"arn:aws:states:us-east-1:0:stateMachine:M"}"#,
        );
        assert_eq!(c[0].action, "states:StartExecution");
        assert_eq!(c[0].resource, "arn:aws:states:us-east-1:0:stateMachine:M");
        assert_eq!(checks("ListStateMachines", b"{}")[0].resource, "*");
        assert_eq!(
            checks("CreateStateMachine", br#"{"name":"N"}"#)[0].resource,
            machine_arn_of("N")
        );
        assert!(checks("StartExecution", b"{").is_empty());
    }
}
