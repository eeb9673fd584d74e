use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStreamKind {
    Stdout,
    Stderr,
    /// `START`/`END`/`REPORT` lines written by Nimbus.
    Platform,
}

/// One captured log line.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub function: String,
    pub request_id: Option<String>,
    pub stream: LogStreamKind,
    pub ts_ms: i64,
    pub line: String,
    /// The line's level: a platform line's own, a function line's when it names one
    /// (a JSON `level`, or the runtimes' text formats).
    pub level: Option<nimbus_core::LogLevel>,
    /// The trace id (X-Ray `Root`) of the invocation the line belongs to.
    pub trace_id: Option<String>,
}

impl LogRecord {
    /// Bytes this record holds in memory, as the sink's budget counts them.
    pub fn cost(&self) -> usize {
        self.line.len()
            + self.function.len()
            + self.request_id.as_ref().map_or(0, String::len)
            + self.trace_id.as_ref().map_or(0, String::len)
            + 64
    }
}

/// Bounds of log capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCapture {
    /// Records waiting for the store, at most.
    pub max_records: usize,
    /// Bytes of records waiting for the store (taken from the sink until the store has
    /// written them), at most: what the server's memory holds of captured output.
    pub max_bytes: usize,
    /// Output one invocation (or one instance's initialisation) may log; the rest is
    /// dropped and counted in one marker line.
    pub per_invocation_bytes: u64,
}

impl Default for LogCapture {
    fn default() -> Self {
        Self {
            max_records: 65_536,
            max_bytes: 32 << 20,
            per_invocation_bytes: 4 << 20,
        }
    }
}

/// Where instances send their log lines. Bounded in records and in bytes: when the
/// consumer falls behind, lines are dropped and counted rather than growing memory.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogRecord>,
    dropped: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    max_bytes: usize,
    per_invocation_bytes: u64,
}

/// The store's end of a [`LogSink`]: receives records; [`LogReceiver::release`] gives their
/// bytes back to the sink's budget once they are stored.
pub struct LogReceiver {
    rx: mpsc::Receiver<LogRecord>,
    in_flight: Arc<AtomicUsize>,
}

impl LogSink {
    pub fn new(capture: LogCapture) -> (Self, LogReceiver) {
        let (tx, rx) = mpsc::channel(capture.max_records.max(1));
        let in_flight = Arc::new(AtomicUsize::new(0));
        (
            Self {
                tx,
                dropped: Default::default(),
                in_flight: in_flight.clone(),
                max_bytes: capture.max_bytes.max(1),
                per_invocation_bytes: capture.per_invocation_bytes,
            },
            LogReceiver { rx, in_flight },
        )
    }

    /// Queues `rec` for the store; false (and counted) when the queue is full in records or
    /// bytes.
    pub fn send(&self, rec: LogRecord) -> bool {
        let cost = rec.cost();
        let before = self.in_flight.fetch_add(cost, Ordering::AcqRel);
        if before + cost > self.max_bytes || self.tx.try_send(rec).is_err() {
            self.in_flight.fetch_sub(cost, Ordering::AcqRel);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Lines dropped because the consumer was too slow.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of records queued or being stored.
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn per_invocation_bytes(&self) -> u64 {
        self.per_invocation_bytes
    }
}

impl LogReceiver {
    /// Receives up to `limit` records into `buf`; 0 when every sink is gone.
    pub async fn recv_many(&mut self, buf: &mut Vec<LogRecord>, limit: usize) -> usize {
        self.rx.recv_many(buf, limit).await
    }

    /// Receives what is queued now, without waiting.
    pub fn try_recv(&mut self) -> Option<LogRecord> {
        self.rx.try_recv().ok()
    }

    /// Gives the bytes of stored (or discarded) records, the sum of their
    /// [`LogRecord::cost`], back to the sink.
    pub fn release(&self, bytes: usize) {
        self.in_flight.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// The output one invocation may log: lines are admitted until `limit` bytes, then dropped
/// and counted, and [`OutputBudget::marker`] says how much went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OutputBudget {
    limit: u64,
    used: u64,
    dropped_bytes: u64,
    dropped_lines: u64,
}

impl OutputBudget {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            used: 0,
            dropped_bytes: 0,
            dropped_lines: 0,
        }
    }

    /// Whether a line of `len` bytes may be kept.
    pub(crate) fn admit(&mut self, len: usize) -> bool {
        let len = len as u64 + 1;
        if self.dropped_lines == 0 && self.used + len <= self.limit {
            self.used += len;
            true
        } else {
            self.dropped(len as usize - 1);
            false
        }
    }

    /// Counts a line of `len` bytes that was not kept (over the budget, or the sink full).
    pub(crate) fn dropped(&mut self, len: usize) {
        self.dropped_bytes += len as u64 + 1;
        self.dropped_lines += 1;
    }

    /// What was dropped (none when nothing was), with the line that says so, and a fresh
    /// budget.
    pub(crate) fn take_marker(&mut self) -> Option<Dropped> {
        let marker = (self.dropped_lines > 0).then(|| Dropped {
            lines: self.dropped_lines,
            bytes: self.dropped_bytes,
            text: format!(
                "[nimbus] log output truncated: {} ({} {}) dropped after {} of this invocation's {} log limit",
                human_bytes(self.dropped_bytes),
                self.dropped_lines,
                if self.dropped_lines == 1 { "line" } else { "lines" },
                human_bytes(self.used),
                human_bytes(self.limit),
            ),
        });
        *self = Self::new(self.limit);
        marker
    }
}

/// Output an invocation's budget dropped ([`OutputBudget::take_marker`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dropped {
    /// The marker line (text format).
    pub text: String,
    pub lines: u64,
    pub bytes: u64,
}

/// `1536` → `1.5 KiB`; exact bytes below 1 KiB.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(line: &str) -> LogRecord {
        LogRecord {
            function: "f".into(),
            request_id: None,
            stream: LogStreamKind::Stdout,
            ts_ms: 0,
            line: line.into(),
            level: None,
            trace_id: None,
        }
    }

    #[test]
    fn the_budget_keeps_lines_up_to_its_limit_then_counts_the_rest() {
        let mut b = OutputBudget::new(100);
        assert!(b.admit(49)); // 50 with its newline
        assert!(b.admit(49));
        assert!(!b.admit(0));
        // Once dropping, later small lines are dropped too: the log shows a clean cut.
        assert!(!b.admit(10));
        b.dropped(5);
        let m = b.take_marker().unwrap();
        assert_eq!((m.lines, m.bytes), (3, 18));
        assert_eq!(
            m.text,
            "[nimbus] log output truncated: 18 bytes (3 lines) dropped after 100 bytes of this invocation's 100 bytes log limit"
        );
        // A fresh budget afterwards, with no marker.
        assert!(b.admit(99));
        assert_eq!(b.take_marker(), None);
    }

    #[test]
    fn marker_sizes_are_readable() {
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 30), "1.0 GiB");
        let mut b = OutputBudget::new(4 << 20);
        b.admit(4 << 20);
        for _ in 0..4096 {
            b.dropped(256 * 1024);
        }
        let m = b.take_marker().unwrap().text;
        assert!(m.contains("1.0 GiB (4097 lines) dropped"), "{m}");
        assert!(m.ends_with("of this invocation's 4.0 MiB log limit"), "{m}");
    }

    #[tokio::test]
    async fn the_sink_is_bounded_in_bytes_until_the_store_releases_them() {
        let (sink, mut rx) = LogSink::new(LogCapture {
            max_records: 1000,
            max_bytes: 1000,
            per_invocation_bytes: 1 << 20,
        });
        let line = "x".repeat(200);
        let sent = (0..10).filter(|_| sink.send(rec(&line))).count();
        // 200 + 1 + 64 bytes each: three fit in 1000.
        assert_eq!(sent, 3);
        assert_eq!(sink.dropped(), 7);
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 100).await, 3);
        // Received but not yet stored: still counted.
        assert!(!sink.send(rec(&line)));
        rx.release(buf.iter().map(LogRecord::cost).sum());
        assert_eq!(sink.in_flight_bytes(), 0);
        assert!(sink.send(rec(&line)));
    }
}
