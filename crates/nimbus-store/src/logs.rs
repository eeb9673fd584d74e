use nimbus_core::{FunctionName, LogLevel};
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
    /// The line's level when known: platform lines, and function lines that name one (JSON
    /// `level`, the runtimes' text formats). Serialized as `TRACE` … `FATAL`.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "level_serde")]
    pub level: Option<LogLevel>,
    /// The trace id (X-Ray `Root`) of the invocation the line belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

/// `level` as Lambda writes it (`INFO`), read in any case.
mod level_serde {
    use nimbus_core::LogLevel;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(l: &Option<LogLevel>, s: S) -> Result<S::Ok, S::Error> {
        match l {
            Some(l) => s.serialize_str(l.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LogLevel>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        Ok(s.as_deref().and_then(LogLevel::parse_loose))
    }
}

/// What a log read selects (every filter optional).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Lines with `seq > after`.
    pub after: i64,
    /// Lines at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Lines before this time (ms since the epoch).
    pub until_ms: Option<i64>,
    /// Lines at this level or above; a line without a level counts as INFO (as Lambda
    /// counts lines without one when it filters).
    pub min_level: Option<LogLevel>,
    pub request_id: Option<String>,
    /// Lines containing this text (case-sensitive).
    pub grep: Option<String>,
    /// At most this many lines.
    pub limit: usize,
}

/// One page of a log read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPage {
    pub entries: Vec<LogEntry>,
    /// The cursor for the next read (`after`): past every line looked at, matching or not.
    pub next: i64,
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
            level: None,
            trace_id: None,
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
        assert!(
            v.get("level").is_none() && v.get("trace_id").is_none(),
            "{v}"
        );
        let back: LogEntry = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let mut e = e;
        e.level = Some(LogLevel::Warn);
        e.trace_id = Some("1-5759e988-bd862e3fe1be46a994272793".into());
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["level"], "WARN");
        assert_eq!(v["trace_id"], "1-5759e988-bd862e3fe1be46a994272793");
        assert_eq!(serde_json::from_value::<LogEntry>(v).unwrap(), e);
    }
}
