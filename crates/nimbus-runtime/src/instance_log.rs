//! An instance's log: attributes what its function writes to the function and the current
//! request id, keeps each invocation within its output budget, masks the secrets the
//! instance was given, writes the platform's own lines (`START` … `REPORT`) in the
//! function's log format, and keeps the tail `X-Amz-Log-Type: Tail` returns. Shared by
//! the process executor and the wasm executor (`nimbus-wasm`).

use crate::logs::{now_ms, LogRecord, LogSink, LogStreamKind, OutputBudget};
use crate::mask_secrets;
pub use crate::platform_log::PlatformEvent;
use crate::platform_log::{line_level, trace_root};
use crate::Outcome;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;
use tracing::debug;

/// The tail of an invocation's log kept for `X-Amz-Log-Type: Tail`, in bytes.
const TAIL_BYTES: usize = 4096;

/// Per-instance log attribution and the tail of the current invocation.
pub struct LogCtx {
    /// Empty while the instance is a stem cell (its output then goes to the server's log).
    function: Mutex<String>,
    request_id: Mutex<Option<String>>,
    /// The current invocation's trace id (X-Ray `Root`).
    trace_id: Mutex<Option<String>>,
    /// The function's log format and levels.
    logging: Mutex<nimbus_core::LoggingConfig>,
    tail: Mutex<VecDeque<String>>,
    /// What the current invocation (or the initialisation) may still log.
    budget: Mutex<OutputBudget>,
    sink: LogSink,
    /// Secret values this instance was given: replaced by `****` in every captured line
    /// before it is kept in the tail or stored.
    mask: Mutex<Vec<String>>,
}

/// How an invocation ended, for its `END` and `REPORT` lines ([`LogCtx::end_invocation`]).
pub struct InvocationEnd<'a> {
    pub request_id: &'a str,
    pub outcome: &'a Outcome,
    pub timed_out: bool,
    /// The instance died with it.
    pub crashed: bool,
    pub duration: Duration,
    pub memory_mb: u32,
    pub max_memory_mb: u64,
    /// Set on the instance's first invocation (`Init Duration`).
    pub init: Option<Duration>,
    /// The invocation's X-Ray trace header.
    pub trace: Option<&'a str>,
}

impl LogCtx {
    /// The log of an instance of `function` (empty for a stem cell, whose output goes to
    /// the server's log until [`LogCtx::specialize`]).
    pub fn new(
        function: &str,
        logging: nimbus_core::LoggingConfig,
        sink: LogSink,
        mask: Vec<String>,
    ) -> Self {
        let budget = OutputBudget::new(sink.per_invocation_bytes());
        LogCtx {
            function: Mutex::new(function.to_string()),
            request_id: Mutex::new(None),
            trace_id: Mutex::new(None),
            logging: Mutex::new(logging),
            tail: Mutex::new(VecDeque::new()),
            budget: Mutex::new(budget),
            sink,
            mask: Mutex::new(mask),
        }
    }

    /// An invocation starts: what came before it closes (its marker line, if output was
    /// dropped), lines are attributed to `request_id` from now on and the tail is empty.
    /// `trace_header` is the invocation's X-Ray header.
    pub fn begin(&self, request_id: &str, trace_header: Option<&str>) {
        self.close_budget();
        *self.request_id.lock().unwrap() = Some(request_id.to_string());
        *self.trace_id.lock().unwrap() = trace_header.and_then(trace_root);
        self.tail.lock().unwrap().clear();
    }

    /// The invocation is over: closes its output budget (the marker line of what was
    /// dropped) and writes its `END` and `REPORT` lines.
    pub fn end_invocation(&self, end: InvocationEnd<'_>) {
        self.close_budget();
        let error_type = match end.outcome {
            Outcome::Error { error_type, .. } => Some(error_type.as_str()),
            _ => None,
        };
        let status = match (end.timed_out, error_type) {
            (true, _) => "timeout",
            (false, Some(_)) => "error",
            (false, None) => "success",
        };
        let ms = end.duration.as_secs_f64() * 1000.0;
        self.platform(PlatformEvent::RuntimeDone {
            request_id: end.request_id,
            status,
            duration_ms: ms,
        });
        self.platform(PlatformEvent::Report {
            request_id: end.request_id,
            status,
            error_type,
            crashed: end.crashed,
            duration_ms: ms,
            memory_mb: end.memory_mb,
            max_memory_mb: end.max_memory_mb,
            init_ms: end.init.map(|d| d.as_secs_f64() * 1000.0),
            trace: end.trace,
        });
    }

    /// The current invocation's log so far, a line each (`X-Amz-Log-Type: Tail`).
    pub fn tail(&self) -> String {
        self.tail
            .lock()
            .unwrap()
            .iter()
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// A stem cell becomes an instance of `function`: set before its bootstrap learns
    /// the function's environment, so nothing it prints is attributed or kept unmasked.
    pub(crate) fn specialize(
        &self,
        function: &str,
        mask: Vec<String>,
        logging: nimbus_core::LoggingConfig,
    ) {
        *self.mask.lock().unwrap() = mask;
        *self.logging.lock().unwrap() = logging;
        *self.function.lock().unwrap() = function.to_string();
    }

    /// A line the function wrote (without its newline): kept while the invocation's budget
    /// lasts, else only counted. Not even decoded when it is dropped, so a flood costs the
    /// server a read and a count per line. In the JSON format a line below the
    /// application log level is dropped first (a line without a level counts as INFO, as
    /// on Lambda).
    pub fn output(&self, stream: LogStreamKind, raw: &[u8]) {
        let min = self.logging.lock().unwrap().application_level();
        let level = line_level(raw);
        if let Some(min) = min {
            if level.unwrap_or(nimbus_core::LogLevel::Info) < min {
                return;
            }
        }
        if !self.budget.lock().unwrap().admit(raw.len()) {
            return;
        }
        let line = String::from_utf8_lossy(raw).into_owned();
        if !self.emit(stream, line, level) {
            self.budget.lock().unwrap().dropped(raw.len());
        }
    }

    /// Writes a platform event in the function's format, unless the system log level
    /// filters it out.
    pub fn platform(&self, event: PlatformEvent<'_>) {
        self.platform_at(event, now_ms());
    }

    /// [`LogCtx::platform`] for an event that happened at `at_ms`.
    pub fn platform_at(&self, event: PlatformEvent<'_>, at_ms: i64) {
        let (format, min) = {
            let l = self.logging.lock().unwrap();
            (l.format, l.system_level())
        };
        let level = event.level();
        if min.is_some_and(|min| level < min) {
            return;
        }
        if let Some(line) = event.render(format, at_ms) {
            self.emit(LogStreamKind::Platform, line, Some(level));
        }
    }

    /// Ends the current budget: the marker line saying what was dropped, if anything was.
    pub fn close_budget(&self) {
        let marker = self.budget.lock().unwrap().take_marker();
        if let Some(m) = marker {
            self.platform(PlatformEvent::LogsDropped {
                text: &m.text,
                lines: m.lines,
                bytes: m.bytes,
            });
        }
    }

    /// Sends a line to the store; false when the sink dropped it.
    fn emit(
        &self,
        stream: LogStreamKind,
        line: String,
        level: Option<nimbus_core::LogLevel>,
    ) -> bool {
        let function = self.function.lock().unwrap().clone();
        if function.is_empty() {
            debug!(stream = ?stream, "stem cell output: {line}");
            return true;
        }
        let line = {
            let mask = self.mask.lock().unwrap();
            if mask.is_empty() {
                line
            } else {
                mask_secrets(&line, &mask)
            }
        };
        let request_id = self.request_id.lock().unwrap().clone();
        let trace_id = self.trace_id.lock().unwrap().clone();
        {
            let mut tail = self.tail.lock().unwrap();
            tail.push_back(line.clone());
            let mut total: usize = tail.iter().map(|l| l.len() + 1).sum();
            while total > TAIL_BYTES && tail.len() > 1 {
                total -= tail.pop_front().map(|l| l.len() + 1).unwrap_or(0);
            }
        }
        self.sink.send(LogRecord {
            function,
            request_id,
            stream,
            ts_ms: now_ms(),
            line,
            level,
            trace_id,
        })
    }
}
