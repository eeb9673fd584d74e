//! A function on the official `lambda_runtime` crate, packaged as the `bootstrap` of a
//! `provided.al2023` function by `tests/e2e/ric.rs`.
//!
//! Events: `{"fail": "message"}` fails with a `Diagnostic` (errorType `EchoError`);
//! `{"stream": ["a", "b"], "status": 201}` streams the strings as chunks in the
//! HTTP-integration format (`{"stream_error": true}` adds a mid-stream error), and so
//! does a function URL request for `/stream` (status 201);
//! anything else is echoed with the invocation's context.

use lambda_runtime::streaming::{channel, Body};
use lambda_runtime::{service_fn, Diagnostic, FunctionResponse, LambdaEvent, MetadataPrelude};
use serde_json::{json, Value};
use std::time::Duration;

type Reply = FunctionResponse<Value, Body>;

async fn handler(event: LambdaEvent<Value>) -> Result<Reply, Diagnostic> {
    let (payload, ctx) = event.into_parts();
    if let Some(msg) = payload.get("fail").and_then(Value::as_str) {
        return Err(Diagnostic {
            error_type: "EchoError".into(),
            error_message: msg.into(),
        });
    }
    // Through a function URL the event is an HTTP v2.0 event: `/stream` streams too.
    let from_url = payload.get("rawPath").and_then(Value::as_str) == Some("/stream");
    let chunks = match payload.get("stream").and_then(Value::as_array) {
        Some(list) => Some(
            list.iter()
                .map(|c| c.as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>(),
        ),
        None if from_url => Some(vec!["hello ".into(), "from ".into(), "rust".into()]),
        None => None,
    };
    if let Some(chunks) = chunks {
        let fail = payload.get("stream_error").is_some();
        let mut prelude = MetadataPrelude {
            status_code: http::StatusCode::from_u16(
                payload
                    .get("status")
                    .and_then(Value::as_u64)
                    .unwrap_or(if from_url { 201 } else { 200 }) as u16,
            )
            .unwrap_or(http::StatusCode::OK),
            cookies: vec!["flavour=rust; Path=/".into()],
            ..Default::default()
        };
        prelude
            .headers
            .insert("content-type", "text/plain".parse().unwrap());
        prelude
            .headers
            .insert("x-rust-fn", "streamed".parse().unwrap());
        let (mut tx, rx) = channel();
        tokio::spawn(async move {
            for c in chunks {
                if tx.send_data(c.into()).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if fail {
                tx.send_error(lambda_runtime_api_client::Error::new("stream broke"));
            }
        });
        return Ok(FunctionResponse::StreamingResponse(
            lambda_runtime::StreamResponse {
                metadata_prelude: prelude,
                stream: rx,
            },
        ));
    }
    Ok(FunctionResponse::BufferedResponse(json!({
        "echo": payload,
        // The instance's identity: its log stream name (in a sandbox every instance has
        // the same pid and Runtime API address in its own namespaces).
        "pid": std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").ok(),
        "request_id": ctx.request_id,
        "arn": ctx.invoked_function_arn,
        "deadline_ms": ctx.deadline,
        "trace_id": ctx.xray_trace_id,
        "env_trace_id": std::env::var("_X_AMZN_TRACE_ID").ok(),
        "client_context": ctx.client_context,
        "function_name": ctx.env_config.function_name,
        "memory": ctx.env_config.memory,
    })))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handler)).await
}
