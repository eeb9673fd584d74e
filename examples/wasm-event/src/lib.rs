//! A `wasm-event` function: logs each event it gets (a schedule's, an async invocation's or
//! the Invoke API's) and answers with a summary of it.

use nimbus_guest::{Context, Error};
use serde_json::{json, Value};

nimbus_guest::handler!(handle);

fn handle(event: Value, ctx: &Context) -> Result<Value, Error> {
    // EventBridge events (schedules, bus rules) name their source and detail type.
    let source = event["source"].as_str().unwrap_or("direct");
    let kind = event["detail-type"].as_str().unwrap_or("invoke");
    // One stdout line = one log line of the invocation.
    println!("wasm-event: {kind} from {source}: {event}");
    if event.get("fail").is_some() {
        return Err(Error::new(
            "Refused",
            format!("asked to fail: {}", event["fail"]),
        ));
    }
    let n: u64 = match &event["n"] {
        Value::String(s) => s.parse()?, // "12" works too; "x" fails as a ParseIntError
        v => v.as_u64().unwrap_or(0),
    };
    Ok(json!({
        "source": source,
        "kind": kind,
        "n_squared": n * n,
        "request_id": ctx.request_id,
        "function": ctx.function_name,
        "remaining_ms": ctx.remaining_time().as_millis() as u64,
    }))
}
