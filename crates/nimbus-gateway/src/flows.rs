//! What workflow Task states reach: functions (through the same pools as every other
//! invocation, counted as trigger `workflow`) and the service integrations Nimbus has
//! (SQS `sendMessage`, EventBridge `putEvents`). Each call acts as the state machine's
//! role: with authentication on, the role must exist here and allow the action on the
//! resource (else the Task fails with `States.Permissions`); with it off, as everything
//! else on this server, it is allowed.

use crate::async_invoke::GatewayInvoker;
use crate::Gateway;
use nimbus_core::arn;
use nimbus_events::engine::{Attempt, Invoker};
use nimbus_metrics::Trigger;
use nimbus_workflows::tasks::response_value;
use nimbus_workflows::{BoxFuture, FunctionCall, TaskOutcome, TaskRunner};
use serde_json::{json, Value};
use std::sync::Arc;

/// The server's [`TaskRunner`].
pub struct GatewayTasks(pub Arc<Gateway>);

fn failed(error: impl Into<String>, cause: impl Into<String>) -> TaskOutcome {
    TaskOutcome::Failed {
        error: error.into(),
        cause: cause.into(),
    }
}

impl GatewayTasks {
    /// `None` when allowed, else the failure to report.
    fn permit(&self, role_arn: &str, action: &str, resource: &str) -> Option<TaskOutcome> {
        if !crate::auth::enabled(&self.0) {
            return None;
        }
        let auth = self.0.auth.get()?;
        match auth.role_allows(role_arn, action, resource) {
            Ok(true) => None,
            Ok(false) => Some(failed(
                "States.Permissions",
                format!("The state machine's role {role_arn} is not allowed to perform {action} on {resource}"),
            )),
            Err(e) => Some(failed("States.Runtime", format!("role check: {e}"))),
        }
    }
}

impl TaskRunner for GatewayTasks {
    fn invoke<'a>(&'a self, call: FunctionCall<'a>) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            let (name, q) = match arn::parse_function_ref(call.function) {
                Ok(r) => r,
                Err(e) => {
                    return failed(
                        "Lambda.ResourceNotFoundException",
                        format!("Invalid function '{}': {e}", call.function),
                    )
                }
            };
            let qualifier = call.qualifier.map(str::to_string).or(q);
            let target = arn::function_arn(name.as_str(), qualifier.as_deref());
            if let Some(denied) = self.permit(call.role_arn, "lambda:InvokeFunction", &target) {
                return denied;
            }
            let attempt = GatewayInvoker(self.0.clone())
                .invoke_traced(
                    Trigger::Workflow,
                    name.as_str(),
                    qualifier.as_deref().unwrap_or(nimbus_core::LATEST),
                    call.request_id,
                    call.payload,
                    call.trace,
                )
                .await;
            match attempt {
                Attempt::Success { body, version } => TaskOutcome::Succeeded {
                    output: response_value(&body),
                    version,
                },
                Attempt::FunctionError {
                    body, error_type, ..
                } => failed(
                    if error_type.is_empty() {
                        "Lambda.Unknown".to_string()
                    } else {
                        error_type
                    },
                    body,
                ),
                Attempt::Throttled(m) => failed("Lambda.TooManyRequestsException", m),
                Attempt::Missing(m) => failed("Lambda.ResourceNotFoundException", m),
            }
        })
    }

    fn call_service<'a>(
        &'a self,
        service: &'a str,
        action: &'a str,
        parameters: Value,
        role_arn: &'a str,
    ) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            match (service, action) {
                ("sqs", "sendMessage") => {
                    let queue = parameters["QueueUrl"]
                        .as_str()
                        .and_then(crate::sqs::queue_arn_of)
                        .unwrap_or_default();
                    if let Some(denied) = self.permit(role_arn, "sqs:SendMessage", &queue) {
                        return denied;
                    }
                    match crate::sqs::integration(&self.0, "SendMessage", parameters, role_arn)
                        .await
                    {
                        Ok(out) => TaskOutcome::Succeeded {
                            output: out,
                            version: String::new(),
                        },
                        Err(e) => failed(format!("SQS.{}", e.code()), e.to_string()),
                    }
                }
                ("events", "putEvents") => self.put_events(parameters, role_arn).await,
                ("s3", "putObject") | ("aws-sdk", "s3:putObject") => {
                    self.put_object(parameters, role_arn).await
                }
                ("s3", "getObject") | ("aws-sdk", "s3:getObject") => {
                    self.get_object(parameters, role_arn).await
                }
                _ => failed(
                    "States.Runtime",
                    format!("The resource 'arn:aws:states:::{service}:{action}' is not supported by Nimbus"),
                ),
            }
        })
    }
}

/// The most an object read into a state's data may hold (the payload limit).
const MAX_OBJECT_READ: usize = 262_144;

fn s3_failed(e: nimbus_objects::ObjectError) -> TaskOutcome {
    use nimbus_objects::ObjectError as E;
    let code = match &e {
        E::NoSuchBucket(_) => "S3.NoSuchBucketException",
        E::NoSuchKey(_) => "S3.NoSuchKeyException",
        _ => "S3.S3Exception",
    };
    failed(code, e.to_string())
}

impl GatewayTasks {
    fn bucket_and_key(parameters: &Value) -> Result<(String, String), TaskOutcome> {
        match (parameters["Bucket"].as_str(), parameters["Key"].as_str()) {
            (Some(b), Some(k)) if !b.is_empty() && !k.is_empty() => Ok((b.into(), k.into())),
            _ => Err(failed(
                "States.Runtime",
                "the S3 integration needs 'Bucket' and 'Key' parameters",
            )),
        }
    }

    /// `s3:putObject`: `Body` (text, or JSON written as its text) to `Bucket`/`Key`.
    async fn put_object(&self, parameters: Value, role_arn: &str) -> TaskOutcome {
        let Some(objects) = self.0.objects.get() else {
            return failed("States.Runtime", crate::buckets::S3_OFF);
        };
        let (bucket, key) = match Self::bucket_and_key(&parameters) {
            Ok(bk) => bk,
            Err(f) => return f,
        };
        let resource = format!("arn:aws:s3:::{bucket}/{key}");
        if let Some(denied) = self.permit(role_arn, "s3:PutObject", &resource) {
            return denied;
        }
        let body = match &parameters["Body"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        let mut opts = nimbus_objects::PutOptions::default();
        opts.requester.principal = role_arn.to_string();
        if let Some(ct) = parameters["ContentType"].as_str() {
            opts.attrs.headers.content_type = Some(ct.to_string());
        }
        let bytes = bytes::Bytes::from(body);
        let stream =
            futures_util::stream::once(async move { Ok::<_, std::convert::Infallible>(bytes) });
        match objects.put_object(&bucket, &key, stream, opts).await {
            Ok(meta) => TaskOutcome::Succeeded {
                output: json!({ "ETag": format!("\"{}\"", meta.etag) }),
                version: String::new(),
            },
            Err(e) => s3_failed(e),
        }
    }

    /// `s3:getObject`: the object's text as `Body` (at most 256 KiB), with its metadata.
    async fn get_object(&self, parameters: Value, role_arn: &str) -> TaskOutcome {
        use futures_util::StreamExt;
        let Some(objects) = self.0.objects.get() else {
            return failed("States.Runtime", crate::buckets::S3_OFF);
        };
        let (bucket, key) = match Self::bucket_and_key(&parameters) {
            Ok(bk) => bk,
            Err(f) => return f,
        };
        let resource = format!("arn:aws:s3:::{bucket}/{key}");
        if let Some(denied) = self.permit(role_arn, "s3:GetObject", &resource) {
            return denied;
        }
        let read = match objects
            .get_object(&bucket, &key, None, Default::default())
            .await
        {
            Ok(r) => r,
            Err(e) => return s3_failed(e),
        };
        if read.meta.size as usize > MAX_OBJECT_READ {
            return failed(
                "States.DataLimitExceeded",
                format!("s3://{bucket}/{key} is {} bytes; a state's data holds at most {MAX_OBJECT_READ}", read.meta.size),
            );
        }
        let mut body = Vec::with_capacity(read.meta.size as usize);
        let mut stream = read.body;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(c) => body.extend_from_slice(&c),
                Err(e) => return failed("S3.S3Exception", e.to_string()),
            }
        }
        TaskOutcome::Succeeded {
            output: json!({
                "Body": String::from_utf8_lossy(&body),
                "ContentLength": read.meta.size,
                "ContentType": read.meta.attrs.headers.content_type,
                "ETag": format!("\"{}\"", read.meta.etag),
                "LastModified": nimbus_workflows::context::iso_millis(read.meta.last_modified_ms),
            }),
            version: String::new(),
        }
    }

    async fn put_events(&self, parameters: Value, role_arn: &str) -> TaskOutcome {
        let Some(bus) = self.0.bus.get() else {
            return failed("States.Runtime", "the event bus is not enabled");
        };
        let mut entries: Vec<nimbus_events::bus::PutEventsEntry> = Vec::new();
        for e in parameters["Entries"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let mut e = e;
            // Step Functions accepts `Detail` as JSON and sends its text.
            if let Some(d) = e.get_mut("Detail") {
                if !d.is_string() {
                    *d = Value::String(d.to_string());
                }
            }
            match serde_json::from_value(e) {
                Ok(entry) => entries.push(entry),
                Err(err) => return failed("EventBridge.ValidationException", err.to_string()),
            }
        }
        for e in &entries {
            let bus_name = e
                .event_bus_name
                .as_deref()
                .map(|n| n.rsplit_once(":event-bus/").map_or(n, |(_, b)| b))
                .unwrap_or(nimbus_store::DEFAULT_BUS);
            let resource = format!(
                "arn:aws:events:{}:{}:event-bus/{bus_name}",
                arn::REGION,
                arn::ACCOUNT
            );
            if let Some(denied) = self.permit(role_arn, "events:PutEvents", &resource) {
                return denied;
            }
        }
        match bus
            .put_events(nimbus_store::DEFAULT_BUS, entries, None)
            .await
        {
            Ok(out) => {
                let out = serde_json::to_value(out).unwrap_or_else(|_| json!({}));
                if out["FailedEntryCount"].as_u64().unwrap_or(0) > 0 {
                    return failed("EventBridge.FailedEntry", out.to_string());
                }
                TaskOutcome::Succeeded {
                    output: out,
                    version: String::new(),
                }
            }
            Err(e) => failed("EventBridge.ValidationException", e.to_string()),
        }
    }
}

/// Starts executions for bus rules, schedules and destinations that target a state
/// machine.
pub struct FlowStarter(pub nimbus_workflows::Workflows);

impl nimbus_events::external::WorkflowStarter for FlowStarter {
    fn start<'a>(
        &'a self,
        machine_arn: &'a str,
        name: String,
        input: String,
        trace: Option<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String, String>> + Send + 'a>>
    {
        Box::pin(async move {
            let req = nimbus_workflows::StartRequest {
                target: machine_arn.to_string(),
                name: Some(name.clone()),
                input: Some(input),
                trace_header: trace,
            };
            match self.0.start(req).await {
                Ok(started) => Ok(started.execution.arn),
                // A redelivered event whose execution already ran: nothing new to start.
                Err(nimbus_workflows::WorkflowError::Store(
                    nimbus_flows::store::StoreError::ExecutionAlreadyExists(arn),
                )) => Ok(arn),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
