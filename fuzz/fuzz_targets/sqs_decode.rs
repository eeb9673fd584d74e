//! Arbitrary bytes as an SQS request in either protocol (the first byte picks JSON or query
//! and, for JSON, the operation): decoding never panics, and whatever decodes renders a
//! reply and every error renders in both shapes without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nimbus_sqs::{decode, render_ok, Protocol};

const OPS: [&str; 8] = [
    "SendMessage",
    "SendMessageBatch",
    "ReceiveMessage",
    "CreateQueue",
    "SetQueueAttributes",
    "DeleteMessageBatch",
    "StartMessageMoveTask",
    "NoSuchOp",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let (protocol, target) = if first & 1 == 0 {
        (Protocol::Json, Some(OPS[usize::from(first >> 1) % OPS.len()]))
    } else {
        (Protocol::Query, None)
    };
    match decode(protocol, target, body) {
        Ok(req) => {
            let _ = req.queue_name();
            let _ = render_ok(protocol, req.op(), &serde_json::json!({"Body": "x"}), "rid");
        }
        Err(e) => {
            let _ = e.render(Protocol::Json, "rid");
            let _ = e.render(Protocol::Query, "rid");
        }
    }
});
