//! Nimbus domain types and validation: function names, runtimes, limits,
//! function configuration, ARNs, HTTP route specs and the `nimbus.toml`
//! manifest, and [`SnapshotMap`] (the lock-free-read map of the invoke path). No I/O
//! lives here; every other crate may depend on this one.

pub mod alarm;
pub mod arn;
pub mod async_event;
pub mod authorizer;
pub mod config;
pub mod control;
pub mod error;
pub mod logging;
pub mod manifest;
pub mod name;
pub mod route;
pub mod runtime;
pub mod s3;
pub mod snapshot;

pub use alarm::{AlarmSpec, AlarmState};
pub use async_event::{AsyncEvent, Destination, EventInvokeConfig, EventStatus};
pub use authorizer::{CacheSettings, JwtAuthorizer, RateLimit, RouteSettings};
pub use config::{
    validate_secret_name, FunctionConfig, FunctionVersion, LayerRef, Limits, NetworkPolicy,
    TracingMode, UrlConfig, SECRET_NAME_MAX,
};
pub use control::{Alias, FunctionMeta};
pub use error::CoreError;
pub use logging::{LogFormat, LogLevel, LoggingConfig};
pub use name::FunctionName;
pub use route::RouteSpec;
pub use runtime::{Runtime, RuntimeFamily};
pub use snapshot::SnapshotMap;

/// The qualifier naming the mutable head of a function.
pub const LATEST: &str = "$LATEST";

/// A qualifier that is a version number (not an alias, not `$LATEST`).
pub fn is_version(q: &str) -> bool {
    !q.is_empty() && q.bytes().all(|b| b.is_ascii_digit())
}
