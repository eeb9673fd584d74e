//! Nimbus executors. An executor starts *instances* of a function version; an instance
//! runs one invocation at a time. The process executor ([`ProcessExecutor`]) runs each
//! instance as a child process speaking the AWS Lambda Runtime API to a listener of its
//! own on loopback, with its memory limited by a cgroup where the host allows.
//!
//! Used by `nimbus-pool` (through the [`Executor`] and [`Instance`] traits) and wired up
//! by `nimbus-server`.

mod cgroup;
mod egress;
mod error;
mod host;
mod host_services;
mod instance_log;
mod java;
mod logs;
mod memory;
pub mod netns;
mod platform;
mod platform_log;
mod process;
mod rapi;
mod sandbox;
mod stem;

pub use cgroup::{default_max_pids, MemoryLimits, PIDS_MAX};
pub use error::RuntimeError;
pub use host::{BoxFuture, ComponentExecutor, ComponentInstance, HostExecutor, HostInstance};
pub use instance_log::{InvocationEnd, LogCtx, PlatformEvent};
pub use logs::{LogCapture, LogReceiver, LogRecord, LogSink, LogStreamKind};
pub use memory::{
    default_instance_budget, default_memory_floor, host_available_memory, own_cgroup_limit,
    HostMemory, MemoryProbe,
};
pub use platform::{AwsEndpoint, InstanceCredentials, PlatformAccess, AWS_API_ADDR, S3_API_ADDR};
pub use process::{
    mask_secrets, resolve_secrets, HostInterpreters, ProcessExecutor, ProcessExecutorConfig,
    ProcessInstance, SecretSource,
};
pub use rapi::{TRACEPARENT_HEADER, TRACESTATE_HEADER};
pub use sandbox::{probe as probe_sandbox, Isolation, IsolationReport, Layer};
pub use stem::{StemConfig, StemPoolStats, StemStats};

use bytes::Bytes;
use nimbus_core::{FunctionConfig, FunctionName};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything an executor needs to start an instance of one function version.
#[derive(Debug, Clone)]
pub struct InstanceSpec {
    pub function: FunctionName,
    /// `$LATEST` or a version number.
    pub version: String,
    pub config: FunctionConfig,
    /// The unpacked code package (`LAMBDA_TASK_ROOT`).
    pub code_dir: PathBuf,
    /// The function's layers merged in order (what it sees at `/opt`); `None` without layers.
    pub opt_dir: Option<PathBuf>,
}

/// One invocation handed to an instance.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub request_id: String,
    pub payload: Bytes,
    /// The ARN the caller used (`Lambda-Runtime-Invoked-Function-Arn`).
    pub invoked_arn: String,
    /// The X-Ray trace header (`Lambda-Runtime-Trace-Id`, `_X_AMZN_TRACE_ID`).
    pub trace_id: Option<String>,
    /// The same context as a W3C `traceparent` (`Nimbus-Runtime-Traceparent`, which the
    /// bundled bootstraps put in `TRACEPARENT`).
    pub traceparent: Option<String>,
    /// The W3C `tracestate` that came with the context, passed on untouched
    /// (`Nimbus-Runtime-Tracestate`, which the bundled bootstraps put in `TRACESTATE`).
    pub tracestate: Option<String>,
    /// Plain JSON client context (already base64-decoded).
    pub client_context: Option<String>,
    /// Set when the caller reads the answer as a stream (`InvokeWithResponseStream`, a
    /// function URL in `RESPONSE_STREAM` mode): a runtime that streams its response
    /// (`Lambda-Runtime-Function-Response-Mode: streaming`) has it passed on here as it
    /// writes, a [`StreamPart::Head`] first, and the invocation ends in
    /// [`Outcome::Streamed`] with an empty `body` (or an error, for a failure mid-stream).
    /// A buffered answer still comes back whole in the [`InvokeResult`].
    pub stream: Option<ResponseSink>,
    /// For a `wasi-http` component behind a function URL or route: the HTTP request as it
    /// came, handed to the component as it is (no Lambda event); the answer comes back as
    /// [`Outcome::Streamed`] with an `http_prelude`. `None` for every other invocation
    /// (the `payload` is the event).
    pub http: Option<Arc<HttpRequest>>,
}

/// An HTTP request for a `wasi-http` component (see [`Invocation::http`]).
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: hyper::Method,
    /// `https` when the client reached Nimbus over TLS.
    pub https: bool,
    /// The `Host` the client addressed.
    pub authority: String,
    /// The path as the function sees it (still percent-encoded; a function URL's `/fn/NAME`
    /// prefix removed) and the query.
    pub path_and_query: String,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// Where a streamed response goes, part by part (see [`Invocation::stream`]). Bounded:
/// a slow reader slows the runtime down. Dropping the receiver does not stop the function
/// (it runs to its end, as on Lambda); what it writes then is dropped.
pub type ResponseSink = tokio::sync::mpsc::Sender<StreamPart>;

/// One part of a streamed response.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamPart {
    /// Sent once, before any chunk: what the body is. As in [`Outcome::Streamed`].
    Head {
        content_type: Option<String>,
        http_prelude: Option<Bytes>,
    },
    /// Body bytes, as the runtime sent them.
    Chunk(Bytes),
}

/// Lambda's (soft) limit on a streamed response: past it the stream is cut and the
/// invocation fails with `Function.ResponseSizeTooLarge`.
pub const STREAM_RESPONSE_MAX: usize = 20 * 1024 * 1024;

/// What the function produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The runtime posted a response.
    Success(Bytes),
    /// The runtime streamed its response (`Lambda-Runtime-Function-Response-Mode:
    /// streaming`), or posted one in the HTTP-integration format. Unless the caller asked
    /// for a stream ([`Invocation::stream`]), Nimbus reads it whole (the same 6 MB limit)
    /// before answering the caller; when it did, `body` is empty here (the bytes went to
    /// the sink).
    Streamed {
        /// The `Content-Type` the runtime declared (Node's default for streams is
        /// `application/octet-stream`).
        content_type: Option<String>,
        /// With `Content-Type: application/vnd.awslambda.http-integration-response`: the
        /// JSON prelude (`{"statusCode","headers","cookies"}`) that came before the 8 NUL
        /// bytes. Function URLs and routes build their HTTP response from it; the Invoke
        /// API returns only `body`.
        http_prelude: Option<Bytes>,
        body: Bytes,
    },
    /// The function or the platform failed the invocation; `body` is the error JSON the
    /// caller receives (with `X-Amz-Function-Error`).
    Error { error_type: String, body: Bytes },
}

impl Outcome {
    /// A platform-generated error (`{"errorType","errorMessage"}`).
    pub fn platform_error(error_type: &str, message: impl Into<String>) -> Self {
        let body = serde_json::json!({ "errorType": error_type, "errorMessage": message.into() });
        Outcome::Error {
            error_type: error_type.to_string(),
            body: Bytes::from(body.to_string()),
        }
    }
}

/// The `errorType` of an invocation that ran out of its timeout (as on Lambda).
pub const TIMED_OUT: &str = "Sandbox.Timedout";

/// The result of [`Instance::invoke`].
#[derive(Debug, Clone)]
pub struct InvokeResult {
    pub outcome: Outcome,
    /// Time from hand-over to the runtime until its answer.
    pub duration: Duration,
    /// Set on the first invocation of an instance: process start until its first `next`.
    pub init_duration: Option<Duration>,
    /// The invocation's log (`START` … `REPORT`), for `X-Amz-Log-Type: Tail`.
    pub log_tail: String,
    /// Whether the runtime took the event. False when the instance died before asking for
    /// work: the function never saw the event, so running it elsewhere is safe.
    pub started: bool,
    /// The runtime failed to initialise (it posted `/init/error`, exited or timed out
    /// before its first `next`, or could not be started): Lambda's `Runtime.Init*` phase.
    pub init_failed: bool,
}

/// Starts instances. The pool is generic over this so its policy can be tested with a fake.
pub trait Executor: Send + Sync + 'static {
    type Instance: Instance;
    fn start(
        &self,
        spec: Arc<InstanceSpec>,
    ) -> impl Future<Output = Result<Self::Instance, RuntimeError>> + Send;
    /// Starts an instance ahead of any request (provisioned concurrency). Nobody waits for
    /// it, so it should not use what makes request-path cold starts fast (the process
    /// executor leaves its stem cells to those). The default is [`Executor::start`].
    fn start_ahead(
        &self,
        spec: Arc<InstanceSpec>,
    ) -> impl Future<Output = Result<Self::Instance, RuntimeError>> + Send {
        self.start(spec)
    }
}

/// A running instance: one invocation at a time.
pub trait Instance: Send + 'static {
    fn id(&self) -> &str;
    fn pid(&self) -> Option<u32>;
    /// Runs one invocation to completion. Never hangs past the function's timeout (plus
    /// the init bound on a cold start); crashes and timeouts come back as `Outcome::Error`.
    fn invoke(&mut self, inv: Invocation) -> impl Future<Output = InvokeResult> + Send;
    /// Waits until the runtime has finished initialising (its first `next`), bounded by
    /// the init timeout; afterwards the first invocation reports no `Init Duration` (the
    /// init happened ahead of it, as for Lambda's provisioned concurrency). `Err` carries
    /// why the instance could not start (it is unhealthy then). The default is ready at once.
    fn ready(&mut self) -> impl Future<Output = Result<(), String>> + Send {
        std::future::ready(Ok(()))
    }
    /// Resolves once the instance's runtime has initialised (its first `next`), exited,
    /// or had its init timeout: how long it occupies one of the host's initialisation
    /// slots (the pool bounds how many instances initialise at once). Nothing to wait
    /// for by default.
    fn initialised(&self) -> impl Future<Output = ()> + Send + 'static {
        std::future::ready(())
    }
    /// False once the instance has crashed, timed out or been killed.
    fn is_healthy(&self) -> bool;
    /// False for a new slot of a process that was already running (a function with
    /// `instance_concurrency` above 1): starting it initialised nothing, so its first
    /// invocation is no cold start.
    fn started_anew(&self) -> bool {
        true
    }
    /// True when the instance was a prewarmed stem cell specialised for its function.
    fn was_stem_cell(&self) -> bool {
        false
    }
    /// A handle reading the instance's memory use (its cgroup's counters where there is
    /// one), usable while the instance is busy. `None`: the executor cannot measure.
    fn memory_probe(&self) -> Option<MemoryProbe> {
        None
    }
    /// Memory the instance uses now, in bytes (see [`MemoryProbe::current_bytes`]).
    fn memory_bytes(&self) -> Option<u64> {
        self.memory_probe()?.current_bytes()
    }
    /// Stops the instance and releases its resources.
    fn stop(self) -> impl Future<Output = ()> + Send;
}
