//! Task resources: what a Task state's `Resource` names, and the [`TaskRunner`] the
//! server implements to reach functions and services.
//!
//! - a function by ARN (`arn:aws:lambda:…:function:NAME[:QUALIFIER]`) or by name: the
//!   payload is the effective input, the result the function's response;
//! - `arn:aws:states:::lambda:invoke` (`.waitForTaskToken`): `Parameters` carry
//!   `FunctionName` and `Payload`, the result is Step Functions' envelope
//!   (`ExecutedVersion`, `Payload`, `SdkHttpMetadata`, `SdkResponseMetadata`, `StatusCode`);
//! - `arn:aws:states:::SERVICE:ACTION` (`.sync`, `.waitForTaskToken`): a service
//!   integration the runner may support (SQS `sendMessage`, EventBridge `putEvents`, …).
//!
//! Source: <https://docs.aws.amazon.com/step-functions/latest/dg/connect-lambda.html>,
//! <https://docs.aws.amazon.com/step-functions/latest/dg/connect-to-resource.html>.

use std::future::Future;
use std::pin::Pin;

use serde_json::{json, Value};

/// A boxed future, as the runner's methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a call to a function or a service ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskOutcome {
    /// The response (JSON text for functions; a JSON value for services).
    Succeeded { output: Value, version: String },
    /// The state's error and cause (a function's error type and its error document).
    Failed { error: String, cause: String },
}

/// One call of a Task.
#[derive(Debug, Clone)]
pub struct FunctionCall<'a> {
    /// Name, partial ARN (`NAME:QUALIFIER`) or full ARN.
    pub function: &'a str,
    /// A qualifier given separately (the ARN's or `Qualifier`'s).
    pub qualifier: Option<&'a str>,
    /// The payload JSON text.
    pub payload: String,
    /// The invocation's request id.
    pub request_id: &'a str,
    /// The execution's trace header, when it has one.
    pub trace: Option<&'a str>,
    /// The state machine's role, which the call acts as.
    pub role_arn: &'a str,
}

/// Reaches what Task states name (implemented by the server over its pools and services).
pub trait TaskRunner: Send + Sync + 'static {
    /// Invokes a function synchronously.
    fn invoke<'a>(&'a self, call: FunctionCall<'a>) -> BoxFuture<'a, TaskOutcome>;

    /// Calls a service integration (`service`, `action` as in
    /// `arn:aws:states:::service:action`) with the state's parameters. The default
    /// supports none.
    fn call_service<'a>(
        &'a self,
        service: &'a str,
        action: &'a str,
        _parameters: Value,
        _role_arn: &'a str,
    ) -> BoxFuture<'a, TaskOutcome> {
        Box::pin(async move {
            TaskOutcome::Failed {
                error: "States.Runtime".into(),
                cause: format!(
                    "The resource 'arn:aws:states:::{service}:{action}' is not supported by Nimbus"
                ),
            }
        })
    }
}

/// How a Task waits for its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Request-response: the call's answer is the result.
    Response,
    /// `.sync`: the call starts a job and the task waits for its end.
    Sync,
    /// `.waitForTaskToken`: the task waits for `SendTaskSuccess`/`Failure`.
    Token,
}

/// What a Task's `Resource` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A function by ARN or name (its qualifier, if any, inside `function`).
    Function { function: String },
    /// `arn:aws:states:::lambda:invoke`.
    LambdaInvoke { pattern: Pattern },
    /// `arn:aws:states:::states:startExecution`.
    StartExecution { pattern: Pattern },
    /// Another `arn:aws:states:::SERVICE:ACTION`.
    Service {
        service: String,
        action: String,
        pattern: Pattern,
    },
}

impl Resource {
    pub fn parse(text: &str) -> Resource {
        if let Some(rest) = text.strip_prefix("arn:aws:states:::") {
            let (base, pattern) = if let Some(b) = rest.strip_suffix(".waitForTaskToken") {
                (b, Pattern::Token)
            } else if let Some(b) = rest
                .strip_suffix(".sync:2")
                .or_else(|| rest.strip_suffix(".sync"))
            {
                (b, Pattern::Sync)
            } else {
                (rest, Pattern::Response)
            };
            let (service, action) = base.split_once(':').unwrap_or((base, ""));
            return match (service, action) {
                ("lambda", "invoke") => Resource::LambdaInvoke { pattern },
                ("states", "startExecution") => Resource::StartExecution { pattern },
                _ => Resource::Service {
                    service: service.into(),
                    action: action.into(),
                    pattern,
                },
            };
        }
        Resource::Function {
            function: text.to_string(),
        }
    }

    pub fn pattern(&self) -> Pattern {
        match self {
            Resource::Function { .. } => Pattern::Response,
            Resource::LambdaInvoke { pattern }
            | Resource::StartExecution { pattern }
            | Resource::Service { pattern, .. } => *pattern,
        }
    }

    /// `resourceType` of the Task history events (`lambda`, `sqs`, …).
    pub fn resource_type(&self) -> &str {
        match self {
            Resource::Function { .. } | Resource::LambdaInvoke { .. } => "lambda",
            Resource::StartExecution { .. } => "states",
            Resource::Service { service, .. } => service,
        }
    }

    /// `resource` of the Task history events (`invoke`, `sendMessage.waitForTaskToken`, …).
    pub fn resource_name(&self, text: &str) -> String {
        match self {
            Resource::Function { .. } => text.to_string(),
            _ => text
                .strip_prefix("arn:aws:states:::")
                .and_then(|r| r.split_once(':'))
                .map_or(text, |(_, a)| a)
                .to_string(),
        }
    }
}

/// Lambda's `Invoke` response as the `lambda:invoke` integration returns it.
pub fn invoke_envelope(payload: Value, version: &str, request_id: &str) -> Value {
    json!({
        "ExecutedVersion": version,
        "Payload": payload,
        "SdkHttpMetadata": {
            "AllHttpHeaders": {
                "X-Amz-Executed-Version": [version],
                "x-amzn-RequestId": [request_id],
                "Content-Type": ["application/json"],
            },
            "HttpHeaders": {
                "X-Amz-Executed-Version": version,
                "x-amzn-RequestId": request_id,
                "Content-Type": "application/json",
            },
            "HttpStatusCode": 200,
        },
        "SdkResponseMetadata": { "RequestId": request_id },
        "StatusCode": 200,
    })
}

/// A function's response text as a JSON value (a body that is not JSON becomes a string).
pub fn response_value(body: &str) -> Value {
    if body.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_classified() {
        assert_eq!(
            Resource::parse("arn:aws:lambda:us-east-1:000000000000:function:f:live"),
            Resource::Function {
                function: "arn:aws:lambda:us-east-1:000000000000:function:f:live".into()
            }
        );
        let r = Resource::parse("arn:aws:states:::lambda:invoke.waitForTaskToken");
        assert_eq!(
            r,
            Resource::LambdaInvoke {
                pattern: Pattern::Token
            }
        );
        assert_eq!(
            r.resource_name("arn:aws:states:::lambda:invoke.waitForTaskToken"),
            "invoke.waitForTaskToken"
        );
        assert_eq!(
            Resource::parse("arn:aws:states:::states:startExecution.sync:2"),
            Resource::StartExecution {
                pattern: Pattern::Sync
            }
        );
        let s = Resource::parse("arn:aws:states:::sqs:sendMessage");
        assert_eq!(s.resource_type(), "sqs");
        assert_eq!(s.pattern(), Pattern::Response);
        assert_eq!(response_value("not json"), Value::String("not json".into()));
        assert_eq!(response_value("{\"a\":1}"), json!({"a":1}));
    }
}
