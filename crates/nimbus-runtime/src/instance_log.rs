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

/// Per-instance log attribution and the tails of the invocations in progress.
pub struct LogCtx {
    /// Empty while the instance is a stem cell (its output then goes to the server's log).
    function: Mutex<String>,
    /// Which invocation a line belongs to, and what each may still log.
    attribution: Mutex<Attribution>,
    /// The function's log format and levels.
    logging: Mutex<nimbus_core::LoggingConfig>,
    sink: LogSink,
    /// Secret values this instance was given: replaced by `****` in every captured line
    /// before it is kept in the tail or stored.
    mask: Mutex<Vec<String>>,
}

/// The invocations in progress (one at a time unless the function's
/// `instance_concurrency` is more) and the output outside them.
struct Attribution {
    /// In the order they began.
    active: Vec<Active>,
    /// The invocation that began last, with its trace id: lines written while none is in
    /// progress (after its answer, before the next) are attributed to it.
    last: Option<(String, Option<String>)>,
    /// What the initialisation, the time between invocations, and lines naming none of
    /// several invocations in progress may still log.
    idle: OutputBudget,
    /// The budget each invocation starts with.
    limit: u64,
    /// Names the next invocation that begins ([`Active::serial`]).
    next_serial: u64,
}

/// One invocation in progress.
struct Active {
    /// Which one it is while its index in [`Attribution::active`] moves (an invocation
    /// before it ends).
    serial: u64,
    request_id: String,
    /// Its X-Ray `Root`.
    trace_id: Option<String>,
    tail: VecDeque<String>,
    budget: OutputBudget,
}

impl Attribution {
    /// Where a line the function wrote goes: the one invocation in progress, else (several
    /// at once) the one whose request id the line names — every runtime's log format
    /// prints it — else none of them.
    fn owner(&self, raw: &[u8]) -> Option<usize> {
        match self.active.len() {
            0 => None,
            1 => Some(0),
            _ => self.active.iter().position(|a| {
                let id = a.request_id.as_bytes();
                !id.is_empty() && raw.windows(id.len()).any(|w| w == id)
            }),
        }
    }

    fn index_of(&self, request_id: &str) -> Option<usize> {
        self.active.iter().position(|a| a.request_id == request_id)
    }

    fn index_of_serial(&self, serial: u64) -> Option<usize> {
        self.active.iter().position(|a| a.serial == serial)
    }
}

/// Whose line a line is, for [`LogCtx::emit`].
#[derive(Clone, Copy)]
enum Owner<'a> {
    /// The invocation in progress with this [`Active::serial`].
    Active(u64),
    /// This request id (a platform line about an invocation).
    Request(&'a str),
    /// Nobody in particular: the last invocation that began.
    Idle,
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
        let limit = sink.per_invocation_bytes();
        LogCtx {
            function: Mutex::new(function.to_string()),
            attribution: Mutex::new(Attribution {
                active: Vec::new(),
                last: None,
                idle: OutputBudget::new(limit),
                limit,
                next_serial: 0,
            }),
            logging: Mutex::new(logging),
            sink,
            mask: Mutex::new(mask),
        }
    }

    fn attribution(&self) -> std::sync::MutexGuard<'_, Attribution> {
        self.attribution.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An invocation starts: lines are attributed to `request_id` from now on (with
    /// several in progress, those that name it), within a budget of its own, and its tail
    /// starts empty. When it is the only one, what came before it closes first (its marker
    /// line, if output was dropped). `trace_header` is the invocation's X-Ray header.
    pub fn begin(&self, request_id: &str, trace_header: Option<&str>) {
        let marker = {
            let mut a = self.attribution();
            if a.active.is_empty() {
                a.idle.take_marker()
            } else {
                None
            }
        };
        if let Some(m) = marker {
            self.dropped_marker(m, Owner::Idle);
        }
        let trace_id = trace_header.and_then(trace_root);
        let mut a = self.attribution();
        let limit = a.limit;
        let serial = a.next_serial;
        a.next_serial += 1;
        a.last = Some((request_id.to_string(), trace_id.clone()));
        a.active.push(Active {
            serial,
            request_id: request_id.to_string(),
            trace_id,
            tail: VecDeque::new(),
            budget: OutputBudget::new(limit),
        });
    }

    /// The invocation is over: closes its output budget (the marker line of what was
    /// dropped), writes its `END` and `REPORT` lines, and gives back its log, a line each
    /// (`X-Amz-Log-Type: Tail`).
    pub fn end_invocation(&self, end: InvocationEnd<'_>) -> String {
        let marker = {
            let mut a = self.attribution();
            a.index_of(end.request_id)
                .and_then(|i| a.active[i].budget.take_marker())
        };
        if let Some(m) = marker {
            self.dropped_marker(m, Owner::Request(end.request_id));
        }
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
        let mut a = self.attribution();
        match a.index_of(end.request_id) {
            Some(i) => a
                .active
                .remove(i)
                .tail
                .iter()
                .map(|l| format!("{l}\n"))
                .collect(),
            None => String::new(),
        }
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

    /// A line the function wrote (without its newline): kept while its invocation's
    /// budget lasts, else only counted. Not even decoded when it is dropped, so a flood
    /// costs the server a read and a count per line. In the JSON format a line below the
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
        let owner = {
            let mut a = self.attribution();
            let owner = a.owner(raw);
            let budget = match owner {
                Some(i) => &mut a.active[i].budget,
                None => &mut a.idle,
            };
            if !budget.admit(raw.len()) {
                return;
            }
            owner.map_or(Owner::Idle, |i| Owner::Active(a.active[i].serial))
        };
        let line = String::from_utf8_lossy(raw).into_owned();
        if !self.emit(stream, line, level, owner) {
            let mut a = self.attribution();
            // The invocation may have ended meanwhile: then the idle budget counts it.
            let index = match owner {
                Owner::Active(serial) => a.index_of_serial(serial),
                _ => None,
            };
            let budget = match index {
                Some(i) => &mut a.active[i].budget,
                None => &mut a.idle,
            };
            budget.dropped(raw.len());
        }
    }

    /// Writes a platform event in the function's format, unless the system log level
    /// filters it out.
    pub fn platform(&self, event: PlatformEvent<'_>) {
        self.platform_at(event, now_ms());
    }

    /// [`LogCtx::platform`] for an event that happened at `at_ms`.
    pub fn platform_at(&self, event: PlatformEvent<'_>, at_ms: i64) {
        let owner = event.request_id().map_or(Owner::Idle, Owner::Request);
        self.platform_as(event, at_ms, owner);
    }

    /// [`LogCtx::platform_at`] for an event that belongs to the invocation `request_id`
    /// (its log and tail) though it does not name it (`platform.initStart`).
    pub fn platform_in(&self, request_id: &str, event: PlatformEvent<'_>, at_ms: i64) {
        self.platform_as(event, at_ms, Owner::Request(request_id));
    }

    fn platform_as(&self, event: PlatformEvent<'_>, at_ms: i64, owner: Owner<'_>) {
        let (format, min) = {
            let l = self.logging.lock().unwrap();
            (l.format, l.system_level())
        };
        let level = event.level();
        if min.is_some_and(|min| level < min) {
            return;
        }
        if let Some(line) = event.render(format, at_ms) {
            self.emit(LogStreamKind::Platform, line, Some(level), owner);
        }
    }

    /// The marker line saying what a budget dropped.
    fn dropped_marker(&self, m: crate::logs::Dropped, owner: Owner<'_>) {
        let event = PlatformEvent::LogsDropped {
            text: &m.text,
            lines: m.lines,
            bytes: m.bytes,
        };
        self.platform_as(event, now_ms(), owner);
    }

    /// Sends a line to the store, attributed to `owner` (kept in its tail when it is an
    /// invocation in progress); false when the sink dropped it.
    fn emit(
        &self,
        stream: LogStreamKind,
        line: String,
        level: Option<nimbus_core::LogLevel>,
        owner: Owner<'_>,
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
        let (request_id, trace_id) = {
            let mut a = self.attribution();
            let index = match owner {
                Owner::Active(serial) => a.index_of_serial(serial),
                Owner::Request(id) => a.index_of(id),
                Owner::Idle => None,
            };
            match index {
                Some(i) => {
                    let active = &mut a.active[i];
                    active.tail.push_back(line.clone());
                    let mut total: usize = active.tail.iter().map(|l| l.len() + 1).sum();
                    while total > TAIL_BYTES && active.tail.len() > 1 {
                        total -= active.tail.pop_front().map(|l| l.len() + 1).unwrap_or(0);
                    }
                    (Some(active.request_id.clone()), active.trace_id.clone())
                }
                None => match owner {
                    // An invocation that already ended (its trace id is gone with it).
                    Owner::Request(id) => (Some(id.to_string()), None),
                    _ => a.last.clone().map_or((None, None), |(r, t)| (Some(r), t)),
                },
            }
        };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogCapture, LogReceiver};

    fn ctx(per_invocation_bytes: u64) -> (LogCtx, LogReceiver) {
        let (sink, rx) = LogSink::new(LogCapture {
            per_invocation_bytes,
            ..LogCapture::default()
        });
        let ctx = LogCtx::new("f", Default::default(), sink, Vec::new());
        (ctx, rx)
    }

    fn drain(rx: &mut LogReceiver) -> Vec<(Option<String>, String)> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|r| (r.request_id, r.line))
            .collect()
    }

    /// Whose the first line containing `text` is.
    fn owner(lines: &[(Option<String>, String)], text: &str) -> Option<String> {
        lines
            .iter()
            .find(|(_, l)| l.contains(text))
            .unwrap_or_else(|| panic!("{text}: {lines:?}"))
            .0
            .clone()
    }

    fn end<'a>(request_id: &'a str, outcome: &'a Outcome) -> InvocationEnd<'a> {
        InvocationEnd {
            request_id,
            outcome,
            timed_out: false,
            crashed: false,
            duration: Duration::from_millis(3),
            memory_mb: 128,
            max_memory_mb: 40,
            init: None,
            trace: None,
        }
    }

    #[test]
    fn one_invocation_at_a_time_owns_every_line() {
        let (log, mut rx) = ctx(1 << 20);
        log.output(LogStreamKind::Stdout, b"during init");
        log.begin("r1", None);
        log.output(LogStreamKind::Stdout, b"plain print, no id");
        let ok = Outcome::Success(Default::default());
        let tail = log.end_invocation(end("r1", &ok));
        log.output(LogStreamKind::Stdout, b"after the answer");
        let lines = drain(&mut rx);
        let owner = |text: &str| owner(&lines, text);
        assert_eq!(owner("during init"), None);
        assert_eq!(owner("plain print"), Some("r1".into()));
        assert_eq!(owner("REPORT RequestId: r1"), Some("r1".into()));
        // Background output after the answer goes to the invocation that ran last.
        assert_eq!(owner("after the answer"), Some("r1".into()));
        assert!(tail.starts_with("plain print, no id\n"), "{tail}");
        assert!(tail.contains("REPORT RequestId: r1"), "{tail}");
    }

    #[test]
    fn several_at_once_are_told_apart_by_the_request_id_in_each_line() {
        let (log, mut rx) = ctx(64);
        log.begin("aaaa-1", None);
        log.begin("bbbb-2", None);
        log.output(
            LogStreamKind::Stdout,
            b"2026-12-07T00:00:00.000Z\tbbbb-2\tINFO\tfor b",
        );
        log.output(
            LogStreamKind::Stdout,
            b"{\"requestId\":\"aaaa-1\",\"message\":\"for a\"}",
        );
        log.output(LogStreamKind::Stdout, b"names nobody");
        // b's budget (64 bytes) runs out; a's does not.
        log.output(
            LogStreamKind::Stdout,
            &[b'x'; 80]
                .iter()
                .chain(b" bbbb-2")
                .copied()
                .collect::<Vec<_>>(),
        );
        let ok = Outcome::Success(Default::default());
        let tail_b = log.end_invocation(end("bbbb-2", &ok));
        let tail_a = log.end_invocation(end("aaaa-1", &ok));
        let lines = drain(&mut rx);
        let owner = |text: &str| owner(&lines, text);
        assert_eq!(owner("for b"), Some("bbbb-2".into()));
        assert_eq!(owner("for a"), Some("aaaa-1".into()));
        // A line naming neither goes to the one that began last, kept in no tail.
        assert_eq!(owner("names nobody"), Some("bbbb-2".into()));
        assert!(!tail_a.contains("nobody") && !tail_b.contains("nobody"));
        assert_eq!(owner("log output truncated"), Some("bbbb-2".into()));
        assert!(
            !lines.iter().any(|(_, l)| l.starts_with("xxxx")),
            "{lines:?}"
        );
        assert!(
            tail_b.contains("for b") && !tail_b.contains("for a"),
            "{tail_b}"
        );
        assert!(
            tail_a.contains("for a") && !tail_a.contains("for b"),
            "{tail_a}"
        );
        assert!(tail_a.contains("REPORT RequestId: aaaa-1") && !tail_a.contains("bbbb-2"));
    }
}
