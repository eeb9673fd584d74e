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
}

/// Where instances send their log lines. Bounded: when the consumer falls behind, lines
/// are dropped and counted rather than growing memory without bound.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<LogRecord>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl LogSink {
    pub fn new(capacity: usize) -> (Self, mpsc::Receiver<LogRecord>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Self {
                tx,
                dropped: Default::default(),
            },
            rx,
        )
    }

    pub fn send(&self, rec: LogRecord) {
        if self.tx.try_send(rec).is_err() {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Lines dropped because the consumer was too slow.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }
}

pub(crate) fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}
