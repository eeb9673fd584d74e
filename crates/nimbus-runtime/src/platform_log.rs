//! The platform's own log lines of an instance, in the function's log format: Lambda's
//! text lines (`START RequestId: …`, `REPORT …`) or, with `LogFormat: JSON`, its
//! `platform.*` records (`{"time","type","record"}`, as the Telemetry API and CloudWatch
//! show them), each with the system log level it is filtered at. Also the level of a
//! line the function wrote, for the log store and for application-level filtering.

use nimbus_core::{LogFormat, LogLevel};
use serde_json::{json, Value};

/// One platform event of an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum PlatformEvent<'a> {
    /// The runtime started initialising (JSON only: text mode has no line for it).
    InitStart {
        function: &'a str,
        version: &'a str,
        provisioned: bool,
    },
    /// The runtime finished initialising ahead of any invocation (provisioned).
    InitReport { duration_ms: f64 },
    Start {
        request_id: &'a str,
        version: &'a str,
        trace: Option<&'a str>,
    },
    /// The invocation's answer came back (`END` in text).
    RuntimeDone {
        request_id: &'a str,
        status: &'a str,
        duration_ms: f64,
    },
    Report {
        request_id: &'a str,
        /// `success`, `error` or `timeout`.
        status: &'a str,
        /// The invocation's error type, if it failed.
        error_type: Option<&'a str>,
        /// The instance died with it (the text line then says `Status: error`).
        crashed: bool,
        duration_ms: f64,
        memory_mb: u32,
        max_memory_mb: u64,
        init_ms: Option<f64>,
        trace: Option<&'a str>,
    },
    /// Output over the invocation's log budget was dropped.
    LogsDropped {
        text: &'a str,
        lines: u64,
        bytes: u64,
    },
}

impl<'a> PlatformEvent<'a> {
    /// The invocation the event is about, when it is about one.
    pub(crate) fn request_id(&self) -> Option<&'a str> {
        match self {
            PlatformEvent::Start { request_id, .. }
            | PlatformEvent::RuntimeDone { request_id, .. }
            | PlatformEvent::Report { request_id, .. } => Some(request_id),
            _ => None,
        }
    }

    /// The system log level Lambda files the event under (DEBUG, INFO or WARN).
    pub(crate) fn level(&self) -> LogLevel {
        match self {
            PlatformEvent::RuntimeDone { .. } => LogLevel::Debug,
            PlatformEvent::LogsDropped { .. } => LogLevel::Warn,
            _ => LogLevel::Info,
        }
    }

    /// The line in `format`, stamped `now_ms`; `None` when the format has no line for it.
    pub(crate) fn render(&self, format: LogFormat, now_ms: i64) -> Option<String> {
        match format {
            LogFormat::Text => self.text(),
            LogFormat::Json => Some(self.json(now_ms).to_string()),
        }
    }

    fn text(&self) -> Option<String> {
        Some(match *self {
            PlatformEvent::InitStart { .. } => return None,
            PlatformEvent::InitReport { duration_ms } => format!(
                "INIT_REPORT Init Duration: {duration_ms:.2} ms\tPhase: init\tStatus: success"
            ),
            PlatformEvent::Start {
                request_id,
                version,
                ..
            } => format!("START RequestId: {request_id} Version: {version}"),
            PlatformEvent::RuntimeDone { request_id, .. } => format!("END RequestId: {request_id}"),
            PlatformEvent::Report {
                request_id,
                error_type,
                crashed,
                duration_ms,
                memory_mb,
                max_memory_mb,
                init_ms,
                ..
            } => {
                let mut s = format!(
                    "REPORT RequestId: {request_id}\tDuration: {duration_ms:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {max_memory_mb} MB",
                    billed(duration_ms)
                );
                if let Some(init) = init_ms {
                    s.push_str(&format!("\tInit Duration: {init:.2} ms"));
                }
                if let (true, Some(t)) = (crashed, error_type) {
                    s.push_str(&format!("\tStatus: error\tError Type: {t}"));
                }
                s
            }
            PlatformEvent::LogsDropped { text, .. } => text.to_string(),
        })
    }

    fn json(&self, now_ms: i64) -> Value {
        let (kind, record) = match *self {
            PlatformEvent::InitStart {
                function,
                version,
                provisioned,
            } => (
                "platform.initStart",
                json!({
                    "initializationType": init_type(provisioned),
                    "phase": "init",
                    "functionName": function,
                    "functionVersion": version,
                }),
            ),
            PlatformEvent::InitReport { duration_ms } => (
                "platform.initReport",
                json!({
                    "initializationType": init_type(true),
                    "phase": "init",
                    "status": "success",
                    "metrics": {"durationMs": round2(duration_ms)},
                }),
            ),
            PlatformEvent::Start {
                request_id,
                version,
                trace,
            } => {
                let mut r = json!({"requestId": request_id, "version": version});
                add_tracing(&mut r, trace);
                ("platform.start", r)
            }
            PlatformEvent::RuntimeDone {
                request_id,
                status,
                duration_ms,
            } => (
                "platform.runtimeDone",
                json!({
                    "requestId": request_id,
                    "status": status,
                    "metrics": {"durationMs": round2(duration_ms)},
                }),
            ),
            PlatformEvent::Report {
                request_id,
                status,
                error_type,
                duration_ms,
                memory_mb,
                max_memory_mb,
                init_ms,
                trace,
                ..
            } => {
                let mut metrics = json!({
                    "durationMs": round2(duration_ms),
                    "billedDurationMs": billed(duration_ms),
                    "memorySizeMB": memory_mb,
                    "maxMemoryUsedMB": max_memory_mb,
                });
                if let Some(init) = init_ms {
                    metrics["initDurationMs"] = json!(round2(init));
                }
                let mut r = json!({"requestId": request_id, "status": status, "metrics": metrics});
                if let Some(t) = error_type {
                    r["errorType"] = json!(t);
                }
                add_tracing(&mut r, trace);
                ("platform.report", r)
            }
            PlatformEvent::LogsDropped { text, lines, bytes } => (
                "platform.logsDropped",
                json!({"reason": text, "droppedRecords": lines, "droppedBytes": bytes}),
            ),
        };
        json!({"time": iso_ms(now_ms), "type": kind, "record": record})
    }
}

fn init_type(provisioned: bool) -> &'static str {
    if provisioned {
        "provisioned-concurrency"
    } else {
        "on-demand"
    }
}

fn billed(duration_ms: f64) -> u64 {
    duration_ms.ceil().max(1.0) as u64
}

fn round2(ms: f64) -> f64 {
    (ms * 100.0).round() / 100.0
}

/// Lambda's `tracing` member: the X-Ray header the invocation carries.
fn add_tracing(record: &mut Value, trace: Option<&str>) {
    if let Some(t) = trace {
        let mut tracing = json!({"type": "X-Amzn-Trace-Id", "value": t});
        if let Some(parent) = header_part(t, "Parent") {
            tracing["spanId"] = json!(parent);
        }
        record["tracing"] = tracing;
    }
}

fn header_part<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    header.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        (k == key).then_some(v)
    })
}

/// The trace id of an X-Ray header (`Root=1-…;Parent=…;Sampled=…` → `1-…`); a bare id as
/// it is.
pub(crate) fn trace_root(header: &str) -> Option<String> {
    let root = match header_part(header, "Root") {
        Some(r) => r,
        None if !header.contains('=') => header.trim(),
        None => return None,
    };
    (!root.is_empty() && root.len() <= 128).then(|| root.to_string())
}

/// `2026-01-01T00:00:00.000Z`.
pub(crate) fn iso_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// The level of a line a function wrote: a JSON object's `level` or `log_level` (any case, Python's
/// WARNING/CRITICAL included), Node's text format (`TIME\tREQUEST_ID\tLEVEL\tmessage`) or
/// Python's (`[LEVEL]\tTIME…`, `[ERROR] Type: …`); `None` for other lines.
pub(crate) fn line_level(raw: &[u8]) -> Option<LogLevel> {
    match raw.first()? {
        b'{' => {
            // Python's runtime writes its error lines with `log_level`.
            #[derive(serde::Deserialize)]
            struct Leveled {
                #[serde(alias = "log_level")]
                level: Option<String>,
            }
            let v: Leveled = serde_json::from_slice(raw).ok()?;
            LogLevel::parse_loose(v.level.as_deref()?)
        }
        b'[' => {
            let end = raw.iter().take(10).position(|&b| b == b']')?;
            if !matches!(raw.get(end + 1), Some(b'\t' | b' ')) {
                return None;
            }
            LogLevel::parse_loose(std::str::from_utf8(&raw[1..end]).ok()?)
        }
        b'0'..=b'9' => {
            let mut fields = raw.splitn(4, |&b| b == b'\t');
            let time = fields.next()?;
            if time.len() != 24 || time.last() != Some(&b'Z') {
                return None;
            }
            fields.next()?;
            let level = fields.next()?;
            fields.next()?;
            LogLevel::parse_loose(std::str::from_utf8(level).ok()?)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_of_function_lines() {
        let cases: [(&str, Option<LogLevel>); 10] = [
            (
                r#"{"timestamp":"x","level":"DEBUG","message":"m"}"#,
                Some(LogLevel::Debug),
            ),
            (r#"{"level":"warning"}"#, Some(LogLevel::Warn)),
            (
                r#"{"log_level":"ERROR","errorType":"E"}"#,
                Some(LogLevel::Error),
            ),
            (r#"{"msg":"no level"}"#, None),
            (
                "2026-12-04T10:00:00.000Z\t8f3c\tERROR\tboom",
                Some(LogLevel::Error),
            ),
            (
                "[INFO]\t2026-12-04T10:00:00.000Z\t8f3c\thello",
                Some(LogLevel::Info),
            ),
            ("[ERROR] ValueError: bad", Some(LogLevel::Error)),
            ("[1, 2, 3]", None),
            ("plain text", None),
            ("2026 was a year\tof\tINFO\tlines", None),
        ];
        for (line, want) in cases {
            assert_eq!(line_level(line.as_bytes()), want, "{line}");
        }
    }

    #[test]
    fn trace_roots() {
        assert_eq!(
            trace_root(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            )
            .as_deref(),
            Some("1-5759e988-bd862e3fe1be46a994272793")
        );
        assert_eq!(trace_root("Parent=1;Sampled=0"), None);
        assert_eq!(trace_root("abc").as_deref(), Some("abc"));
    }

    #[test]
    fn json_records_have_lambdas_shape() {
        let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
        let report = PlatformEvent::Report {
            request_id: "r1",
            status: "success",
            error_type: None,
            crashed: false,
            duration_ms: 52.556,
            memory_mb: 128,
            max_memory_mb: 40,
            init_ms: Some(3.149),
            trace: Some(trace),
        };
        let v: Value =
            serde_json::from_str(&report.render(LogFormat::Json, 1_767_225_600_123).unwrap())
                .unwrap();
        assert_eq!(
            v,
            json!({"time": "2026-01-01T00:00:00.123Z", "type": "platform.report",
                   "record": {"requestId": "r1", "status": "success",
                              "metrics": {"durationMs": 52.56, "billedDurationMs": 53,
                                          "memorySizeMB": 128, "maxMemoryUsedMB": 40,
                                          "initDurationMs": 3.15},
                              "tracing": {"type": "X-Amzn-Trace-Id", "value": trace,
                                          "spanId": "53995c3f42cd8ad8"}}})
        );
        assert_eq!(
            report.render(LogFormat::Text, 0).unwrap(),
            "REPORT RequestId: r1\tDuration: 52.56 ms\tBilled Duration: 53 ms\tMemory Size: 128 MB\tMax Memory Used: 40 MB\tInit Duration: 3.15 ms"
        );
        let start = PlatformEvent::Start {
            request_id: "r1",
            version: "$LATEST",
            trace: None,
        };
        let v: Value = serde_json::from_str(&start.render(LogFormat::Json, 0).unwrap()).unwrap();
        assert_eq!(v["type"], "platform.start");
        assert_eq!(
            v["record"],
            json!({"requestId": "r1", "version": "$LATEST"})
        );
        assert_eq!(
            PlatformEvent::InitStart {
                function: "f",
                version: "$LATEST",
                provisioned: false
            }
            .render(LogFormat::Text, 0),
            None
        );
        assert_eq!(
            PlatformEvent::RuntimeDone {
                request_id: "r",
                status: "success",
                duration_ms: 1.0
            }
            .level(),
            LogLevel::Debug
        );
    }
}
