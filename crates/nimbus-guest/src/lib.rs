//! Nimbus functions in Rust as WebAssembly components of Nimbus's event world
//! (`nimbus:function/event-handler`, the WIT package in the repository's
//! `wit/nimbus-function`), deployed with the runtime `wasm-event`.
//!
//! A handler is a function and one macro:
//!
//! ```ignore
//! use nimbus_guest::{Context, Error};
//! use serde_json::{json, Value};
//!
//! nimbus_guest::handler!(handle);
//!
//! fn handle(event: Value, ctx: &Context) -> Result<Value, Error> {
//!     println!("event {event} in {}", ctx.request_id); // stdout goes to the function's log
//!     Ok(json!({ "ok": true }))
//! }
//! ```
//!
//! The event is deserialized from JSON into the handler's argument type (any
//! `serde::de::DeserializeOwned`, e.g. `serde_json::Value` or your own struct; an empty
//! payload reads as JSON `null`) and the result is serialized to JSON. For other payloads,
//! `handler!(raw handle)` takes `fn(&[u8], &Context) -> Result<Vec<u8>, Error>`.
//!
//! An `Err` reaches the caller as Lambda's `errorType` / `errorMessage`; `?` converts any
//! `std::error::Error` (the error type is its type name, e.g. `ParseIntError`). A panic
//! traps the instance: the host reports it as the invocation's failure.
//!
//! The crate is built for `wasm32-wasip2` by the function that uses it:
//! `cargo build --release --target wasm32-wasip2` (what `nimbus deploy` runs) with
//! `crate-type = ["cdylib"]` in the function's `Cargo.toml`.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

extern crate self as nimbus_guest;

/// The bindings wit-bindgen generates for the event world (used by [`handler!`]).
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/nimbus-function",
        world: "nimbus:function/event-handler",
        pub_export_macro: true,
        export_macro_name: "__export_event_handler",
        default_bindings_module: "::nimbus_guest::bindings",
        runtime_path: "::nimbus_guest::__private::wit_bindgen::rt",
    });
}

use bindings::exports::nimbus::function::handler as wit;
use bindings::nimbus::function::types as wit_types;

/// What the host tells a handler about its invocation (Lambda's context object).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The invocation's request id (`awsRequestId`).
    pub request_id: String,
    pub function_name: String,
    /// `$LATEST` or a version number.
    pub function_version: String,
    /// The ARN the caller used (with its qualifier, if any).
    pub invoked_function_arn: String,
    pub memory_limit_mb: u32,
    /// When the invocation times out, in milliseconds since the Unix epoch.
    pub deadline_ms: u64,
    /// The X-Ray trace header (`Root=…;Parent=…;Sampled=…`), if traced.
    pub trace_id: Option<String>,
    /// The W3C `traceparent` of the invocation, if traced.
    pub traceparent: Option<String>,
    /// The caller's client context (JSON), if any.
    pub client_context: Option<String>,
}

impl Context {
    /// The time left before the invocation times out (zero once it has passed).
    pub fn remaining_time(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Duration::from_millis(self.deadline_ms.saturating_sub(now))
    }
}

impl From<wit_types::Context> for Context {
    fn from(c: wit_types::Context) -> Self {
        Context {
            request_id: c.request_id,
            function_name: c.function_name,
            function_version: c.function_version,
            invoked_function_arn: c.invoked_function_arn,
            memory_limit_mb: c.memory_limit_mb,
            deadline_ms: c.deadline_ms,
            trace_id: c.trace_id,
            traceparent: c.traceparent,
            client_context: c.client_context,
        }
    }
}

/// A failure the handler reports: the caller sees `errorType` and `errorMessage`.
///
/// `?` converts any `std::error::Error` into one named after its type; [`Error::new`]
/// names it yourself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub error_type: String,
    pub message: String,
}

impl Error {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Error {
            error_type: error_type.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::new(short_type_name::<E>(), e.to_string())
    }
}

/// `core::num::error::ParseIntError` → `ParseIntError`, `a::B<c::D>` → `B`.
fn short_type_name<T: ?Sized>() -> &'static str {
    let full = std::any::type_name::<T>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

impl From<Error> for wit_types::Error {
    fn from(e: Error) -> Self {
        wit_types::Error {
            error_type: e.error_type,
            message: e.message,
        }
    }
}

/// What [`handler!`] expands to; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use super::{wit, wit_types, Context, Error};
    use serde::{de::DeserializeOwned, Serialize};

    pub type WitContext = wit_types::Context;
    pub type WitError = wit_types::Error;
    pub use wit::Guest;

    /// A JSON handler: the event deserialized into `E`, the result serialized.
    pub fn run_json<E, R>(
        f: impl FnOnce(E, &Context) -> Result<R, Error>,
        event: Vec<u8>,
        ctx: WitContext,
    ) -> Result<Vec<u8>, WitError>
    where
        E: DeserializeOwned,
        R: Serialize,
    {
        let ctx = Context::from(ctx);
        let payload: &[u8] = if event.iter().all(u8::is_ascii_whitespace) {
            b"null"
        } else {
            &event
        };
        let event: E = serde_json::from_slice(payload).map_err(|e| {
            WitError::from(Error::new(
                "InvalidEvent",
                format!("the event does not deserialize: {e}"),
            ))
        })?;
        let out = f(event, &ctx).map_err(WitError::from)?;
        serde_json::to_vec(&out).map_err(|e| {
            WitError::from(Error::new(
                "InvalidResponse",
                format!("the result does not serialize: {e}"),
            ))
        })
    }

    /// A bytes handler.
    pub fn run_raw(
        f: impl FnOnce(&[u8], &Context) -> Result<Vec<u8>, Error>,
        event: Vec<u8>,
        ctx: WitContext,
    ) -> Result<Vec<u8>, WitError> {
        f(&event, &Context::from(ctx)).map_err(WitError::from)
    }
}

/// Exports a function as the component's `handler.handle`.
///
/// - `handler!(handle)`: `fn handle(event: E, ctx: &Context) -> Result<R, Error>` with `E:
///   DeserializeOwned`, `R: Serialize` (JSON in and out).
/// - `handler!(raw handle)`: `fn handle(event: &[u8], ctx: &Context) -> Result<Vec<u8>, Error>`.
///
/// Use it once per component, at the crate root or in a module.
#[macro_export]
macro_rules! handler {
    (raw $f:path) => {
        $crate::handler!(@export run_raw $f);
    };
    (@export $run:ident $f:path) => {
        struct __NimbusHandler;
        impl $crate::__private::Guest for __NimbusHandler {
            fn handle(
                event: ::std::vec::Vec<u8>,
                context: $crate::__private::WitContext,
            ) -> ::std::result::Result<::std::vec::Vec<u8>, $crate::__private::WitError> {
                $crate::__private::$run($f, event, context)
            }
        }
        $crate::bindings::__export_event_handler!(__NimbusHandler with_types_in $crate::bindings);
    };
    ($f:path) => {
        $crate::handler!(@export run_json $f);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_are_short_type_names() {
        let e: Error = "x".parse::<u32>().unwrap_err().into();
        assert_eq!(e.error_type, "ParseIntError");
        let e: Error = serde_json::from_str::<u32>("\"a\"").unwrap_err().into();
        assert_eq!(e.error_type, "Error");
        assert_eq!(short_type_name::<Vec<String>>(), "Vec");
    }

    fn ctx() -> WitContextForTests {
        wit_types::Context {
            request_id: "r-1".into(),
            function_name: "f".into(),
            function_version: "$LATEST".into(),
            invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            memory_limit_mb: 128,
            deadline_ms: u64::MAX,
            trace_id: None,
            traceparent: None,
            client_context: None,
        }
    }
    type WitContextForTests = wit_types::Context;

    #[test]
    fn json_handlers() {
        let echo = |v: serde_json::Value, c: &Context| -> Result<serde_json::Value, Error> {
            Ok(serde_json::json!({"event": v, "id": c.request_id}))
        };
        let out = __private::run_json(echo, br#"{"a":1}"#.to_vec(), ctx()).unwrap();
        assert_eq!(out, br#"{"event":{"a":1},"id":"r-1"}"#);
        let out = __private::run_json(echo, Vec::new(), ctx()).unwrap();
        assert_eq!(out, br#"{"event":null,"id":"r-1"}"#);
        let e = __private::run_json(echo, b"{".to_vec(), ctx()).unwrap_err();
        assert_eq!(e.error_type, "InvalidEvent");
        let fail = |_: u32, _: &Context| -> Result<(), Error> { Err(Error::new("Boom", "no")) };
        let e = __private::run_json(fail, b"1".to_vec(), ctx()).unwrap_err();
        assert_eq!((e.error_type.as_str(), e.message.as_str()), ("Boom", "no"));
        assert!(Context::from(ctx()).remaining_time() > Duration::from_secs(1));
    }
}
