//! Lambda's `LoggingConfig`: the format of a function's logs (`Text` or `JSON`), the
//! levels its application and system logs are filtered at (JSON only), and its log group.
//! Stored with each version; the executor passes the format and the application level to
//! the runtime (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`) and writes the platform
//! lines in the chosen format.

use crate::CoreError;
use serde::{Deserialize, Serialize};

/// `LoggingConfig.LogFormat`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Lambda's default: `START RequestId: …` platform lines, runtimes' tab-separated lines.
    #[default]
    Text,
    /// One JSON object per line: `platform.*` records and the runtimes' JSON lines.
    Json,
}

impl LogFormat {
    /// Lambda's spelling (`Text`, `JSON`).
    pub fn as_lambda(self) -> &'static str {
        match self {
            LogFormat::Text => "Text",
            LogFormat::Json => "JSON",
        }
    }

    /// Lambda's exact `Text` or `JSON`; with `any_case` (the manifest) also `text`, `json`.
    pub fn parse(s: &str, any_case: bool) -> Result<Self, CoreError> {
        match s {
            "Text" => Ok(LogFormat::Text),
            "JSON" => Ok(LogFormat::Json),
            _ if any_case && s.eq_ignore_ascii_case("text") => Ok(LogFormat::Text),
            _ if any_case && s.eq_ignore_ascii_case("json") => Ok(LogFormat::Json),
            _ => Err(CoreError::InvalidLogging(enum_error(
                s,
                "logFormat",
                "[JSON, Text]",
            ))),
        }
    }
}

/// A log level, most detailed first (Lambda's `ApplicationLogLevel` values; the system
/// levels are DEBUG, INFO and WARN of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace = 1,
    Debug = 2,
    Info = 3,
    Warn = 4,
    Error = 5,
    Fatal = 6,
}

impl LogLevel {
    pub const ALL: [LogLevel; 6] = [
        LogLevel::Trace,
        LogLevel::Debug,
        LogLevel::Info,
        LogLevel::Warn,
        LogLevel::Error,
        LogLevel::Fatal,
    ];

    /// `TRACE` … `FATAL`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warn => "WARN",
            LogLevel::Error => "ERROR",
            LogLevel::Fatal => "FATAL",
        }
    }

    /// 1 (TRACE) … 6 (FATAL): how the log store keeps it.
    pub fn rank(self) -> i64 {
        self as i64
    }

    pub fn from_rank(rank: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.rank() == rank)
    }

    /// A level as runtimes and log libraries write it, in any case, with Python's
    /// `WARNING` and `CRITICAL` for WARN and FATAL.
    pub fn parse_loose(s: &str) -> Option<Self> {
        let up = s.trim().to_ascii_uppercase();
        Some(match up.as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARN" | "WARNING" => LogLevel::Warn,
            "ERROR" => LogLevel::Error,
            "FATAL" | "CRITICAL" => LogLevel::Fatal,
            _ => return None,
        })
    }

    fn parse_exact(s: &str, any_case: bool, system: bool) -> Result<Self, CoreError> {
        let level = if any_case {
            Self::parse_loose(s)
        } else {
            Self::ALL.into_iter().find(|l| l.as_str() == s)
        };
        let allowed: &[LogLevel] = if system {
            &[LogLevel::Debug, LogLevel::Info, LogLevel::Warn]
        } else {
            &Self::ALL
        };
        match level {
            Some(l) if allowed.contains(&l) => Ok(l),
            _ => Err(CoreError::InvalidLogging(if system {
                enum_error(s, "systemLogLevel", "[DEBUG, INFO, WARN]")
            } else {
                enum_error(
                    s,
                    "applicationLogLevel",
                    "[TRACE, DEBUG, INFO, WARN, ERROR, FATAL]",
                )
            })),
        }
    }

    /// An `ApplicationLogLevel` (Lambda's exact upper case unless `any_case`).
    pub fn parse_application(s: &str, any_case: bool) -> Result<Self, CoreError> {
        Self::parse_exact(s, any_case, false)
    }

    /// A `SystemLogLevel`: DEBUG, INFO or WARN.
    pub fn parse_system(s: &str, any_case: bool) -> Result<Self, CoreError> {
        Self::parse_exact(s, any_case, true)
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn enum_error(value: &str, field: &str, set: &str) -> String {
    format!(
        "1 validation error detected: Value '{value}' at 'loggingConfig.{field}' failed to \
         satisfy constraint: Member must satisfy enum value set: {set}"
    )
}

/// Lambda's message for a level with the Text format.
pub const LEVEL_NEEDS_JSON: &str = "LogLevel is not supported when LogFormat is set to \"Text\". \
     Remove LogLevel from your request or change the LogFormat to \"Json\" and try again.";

/// A function version's `LoggingConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub format: LogFormat,
    /// `ApplicationLogLevel` (JSON only; INFO when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application_level: Option<LogLevel>,
    /// `SystemLogLevel` (JSON only; INFO when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_level: Option<LogLevel>,
    /// `LogGroup`; `/aws/lambda/NAME` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_group: Option<String>,
}

impl LoggingConfig {
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The application level lines are filtered at: `None` in the Text format (nothing is
    /// filtered), else the configured level or INFO.
    pub fn application_level(&self) -> Option<LogLevel> {
        (self.format == LogFormat::Json).then(|| self.application_level.unwrap_or(LogLevel::Info))
    }

    /// The system (platform) level, as [`LoggingConfig::application_level`].
    pub fn system_level(&self) -> Option<LogLevel> {
        (self.format == LogFormat::Json).then(|| self.system_level.unwrap_or(LogLevel::Info))
    }

    /// The log group (`AWS_LAMBDA_LOG_GROUP_NAME`).
    pub fn log_group(&self, function: &str) -> String {
        self.log_group
            .clone()
            .unwrap_or_else(|| format!("/aws/lambda/{function}"))
    }

    /// Lambda's rules: levels only with JSON, system levels DEBUG/INFO/WARN, a log group of
    /// 1-512 characters `[.-_/#A-Za-z0-9]`.
    pub fn validate(&self) -> Result<(), CoreError> {
        if self.format == LogFormat::Text
            && (self.application_level.is_some() || self.system_level.is_some())
        {
            return Err(CoreError::InvalidLogging(LEVEL_NEEDS_JSON.into()));
        }
        if let Some(l) = self.system_level {
            LogLevel::parse_system(l.as_str(), false)?;
        }
        if let Some(g) = &self.log_group {
            let ok = (1..=512).contains(&g.len())
                && g.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-/#".contains(&b));
            if !ok {
                return Err(CoreError::InvalidLogging(format!(
                    "1 validation error detected: Value '{g}' at 'loggingConfig.logGroup' \
                     failed to satisfy constraint: Member must satisfy regular expression \
                     pattern: [\\.\\-_/#A-Za-z0-9]+ (1-512 characters)"
                )));
            }
        }
        Ok(())
    }

    /// Lambda's `LoggingConfig` object as GetFunctionConfiguration returns it: the levels
    /// (defaults filled in) only in the JSON format.
    pub fn to_lambda(&self, function: &str) -> serde_json::Value {
        let mut out = serde_json::json!({
            "LogFormat": self.format.as_lambda(),
            "LogGroup": self.log_group(function),
        });
        if let (Some(app), Some(sys)) = (self.application_level(), self.system_level()) {
            out["ApplicationLogLevel"] = app.as_str().into();
            out["SystemLogLevel"] = sys.as_str().into();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_need_json() {
        let mut c = LoggingConfig {
            application_level: Some(LogLevel::Debug),
            ..Default::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("LogLevel is not supported when LogFormat"),
            "{e}"
        );
        c.format = LogFormat::Json;
        c.validate().unwrap();
        assert_eq!(c.application_level(), Some(LogLevel::Debug));
        assert_eq!(c.system_level(), Some(LogLevel::Info));
        c.system_level = Some(LogLevel::Error);
        assert!(c.validate().is_err());
    }

    #[test]
    fn lambda_shape() {
        let text = LoggingConfig::default();
        assert_eq!(
            text.to_lambda("f"),
            serde_json::json!({"LogFormat": "Text", "LogGroup": "/aws/lambda/f"})
        );
        let json = LoggingConfig {
            format: LogFormat::Json,
            log_group: Some("/custom/g".into()),
            ..Default::default()
        };
        assert_eq!(
            json.to_lambda("f"),
            serde_json::json!({"LogFormat": "JSON", "LogGroup": "/custom/g",
                               "ApplicationLogLevel": "INFO", "SystemLogLevel": "INFO"})
        );
        let bad = LoggingConfig {
            log_group: Some("no spaces".into()),
            ..Default::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn parsing() {
        assert_eq!(LogFormat::parse("JSON", false).unwrap(), LogFormat::Json);
        assert!(LogFormat::parse("json", false).is_err());
        assert_eq!(LogFormat::parse("json", true).unwrap(), LogFormat::Json);
        let e = LogFormat::parse("XML", false).unwrap_err().to_string();
        assert!(e.contains("enum value set: [JSON, Text]"), "{e}");
        assert_eq!(
            LogLevel::parse_application("WARN", false).unwrap(),
            LogLevel::Warn
        );
        assert!(LogLevel::parse_application("warn", false).is_err());
        assert!(LogLevel::parse_system("TRACE", false).is_err());
        assert_eq!(LogLevel::parse_loose("warning"), Some(LogLevel::Warn));
        assert_eq!(LogLevel::parse_loose("CRITICAL"), Some(LogLevel::Fatal));
        for l in LogLevel::ALL {
            assert_eq!(LogLevel::from_rank(l.rank()), Some(l));
        }
        let v: LoggingConfig = serde_json::from_value(
            serde_json::json!({"format": "json", "application_level": "debug"}),
        )
        .unwrap();
        assert_eq!(v.application_level, Some(LogLevel::Debug));
    }
}
