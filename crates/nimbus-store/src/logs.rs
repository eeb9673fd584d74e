use nimbus_core::FunctionName;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Which stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The function's standard output.
    Stdout,
    /// The function's standard error.
    Stderr,
    /// Lines Nimbus writes about the function (start, end, crashes, timeouts).
    Platform,
}

impl LogStream {
    pub fn as_str(&self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Platform => "platform",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogStream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdout" => Ok(LogStream::Stdout),
            "stderr" => Ok(LogStream::Stderr),
            "platform" => Ok(LogStream::Platform),
            _ => Err(format!(
                "unknown log stream {s:?}: use stdout, stderr or platform"
            )),
        }
    }
}

/// One log line of one function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Assigned by the store on append (strictly increasing, never reused); ignored on input.
    pub seq: i64,
    pub function: String,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub request_id: Option<String>,
    pub stream: LogStream,
    pub line: String,
}

impl LogEntry {
    /// A line stamped with the current time, ready for [`crate::Store::append_logs`].
    pub fn now(
        function: &FunctionName,
        request_id: Option<&str>,
        stream: LogStream,
        line: impl Into<String>,
    ) -> Self {
        let ts_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        Self {
            seq: 0,
            function: function.to_string(),
            ts_ms,
            request_id: request_id.map(str::to_string),
            stream,
            line: line.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_serializes_lowercase() {
        for (s, text) in [
            (LogStream::Stdout, "stdout"),
            (LogStream::Stderr, "stderr"),
            (LogStream::Platform, "platform"),
        ] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{text}\""));
            assert_eq!(text.parse::<LogStream>().unwrap(), s);
            assert_eq!(s.to_string(), text);
        }
        assert!("STDOUT".parse::<LogStream>().is_err());
    }

    #[test]
    fn entry_json_round_trip() {
        let name = FunctionName::parse("hello").unwrap();
        let e = LogEntry::now(&name, Some("req-1"), LogStream::Stderr, "boom");
        assert!(e.ts_ms > 1_600_000_000_000, "{}", e.ts_ms);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["stream"], "stderr");
        assert_eq!(v["request_id"], "req-1");
        assert_eq!(v["function"], "hello");
        let back: LogEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
