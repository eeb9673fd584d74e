//! Alarms: a threshold rule on one metric of one function, evaluated like a CloudWatch
//! metric alarm (`period`, `evaluation_periods`, `datapoints_to_alarm`,
//! `treat_missing_data`), with the states OK, ALARM and INSUFFICIENT_DATA. The definition
//! and the pure evaluation live here; the gateway reads the datapoints and runs the loop.

use crate::error::CoreError;
use crate::name::FunctionName;
use serde::{Deserialize, Serialize};

/// The metrics an alarm can watch.
pub const METRICS: [&str; 11] = [
    "invocations",
    "errors",
    "error_rate",
    "throttles",
    "timeouts",
    "duration_p50",
    "duration_p90",
    "duration_p99",
    "cold_starts",
    "max_concurrency",
    // The function's async events in the dead-letter backlog now (status `dead`).
    "dead_letters",
];

/// An alarm's definition (the API's and the manifest's `[alarms.NAME]` body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmSpec {
    /// The function watched (unqualified name).
    pub function: String,
    /// One of [`METRICS`].
    pub metric: String,
    /// `>`, `>=`, `<` or `<=`.
    pub comparison: String,
    pub threshold: f64,
    /// Seconds per datapoint, a multiple of 60 (default 60).
    #[serde(default = "default_period")]
    pub period: u32,
    /// Datapoints looked at (default 1).
    #[serde(default = "one")]
    pub evaluation_periods: u32,
    /// Breaching datapoints among them that put the alarm in ALARM (default
    /// `evaluation_periods`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datapoints_to_alarm: Option<u32>,
    /// `missing` (default), `notBreaching`, `breaching` or `ignore`.
    #[serde(default = "default_missing")]
    pub treat_missing_data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn default_period() -> u32 {
    60
}
fn one() -> u32 {
    1
}
fn default_missing() -> String {
    "missing".into()
}

/// The most datapoints an alarm may look at (a day of minutes).
pub const MAX_EVALUATED_SECONDS: u64 = 86_400;

impl AlarmSpec {
    /// Checks every field; returns the reason of the first bad one.
    pub fn validate(&self) -> Result<(), CoreError> {
        let bad = |m: String| Err(CoreError::InvalidAlarm(m));
        FunctionName::parse(&self.function)
            .map_err(|e| CoreError::InvalidAlarm(format!("function: {e}")))?;
        if !METRICS.contains(&self.metric.as_str()) {
            return bad(format!(
                "metric {:?} is not one of {}",
                self.metric,
                METRICS.join(", ")
            ));
        }
        if !matches!(self.comparison.as_str(), ">" | ">=" | "<" | "<=") {
            return bad(format!(
                "comparison {:?} is not one of >, >=, <, <=",
                self.comparison
            ));
        }
        if !self.threshold.is_finite() {
            return bad("threshold must be a finite number".into());
        }
        if self.period == 0 || !self.period.is_multiple_of(60) {
            return bad(format!(
                "period {} is not a positive multiple of 60 seconds",
                self.period
            ));
        }
        if self.evaluation_periods == 0
            || u64::from(self.period) * u64::from(self.evaluation_periods) > MAX_EVALUATED_SECONDS
        {
            return bad(format!(
                "evaluation_periods {} must be at least 1 and period × evaluation_periods at most {MAX_EVALUATED_SECONDS} s",
                self.evaluation_periods
            ));
        }
        let m = self.datapoints();
        if m == 0 || m > self.evaluation_periods {
            return bad(format!(
                "datapoints_to_alarm {m} must be between 1 and evaluation_periods ({})",
                self.evaluation_periods
            ));
        }
        if !matches!(
            self.treat_missing_data.as_str(),
            "missing" | "notBreaching" | "breaching" | "ignore"
        ) {
            return bad(format!(
                "treat_missing_data {:?} is not one of missing, notBreaching, breaching, ignore",
                self.treat_missing_data
            ));
        }
        if self.description.as_ref().is_some_and(|d| d.len() > 1024) {
            return bad("description is longer than 1024 bytes".into());
        }
        Ok(())
    }

    /// `datapoints_to_alarm`, defaulting to `evaluation_periods`.
    pub fn datapoints(&self) -> u32 {
        self.datapoints_to_alarm.unwrap_or(self.evaluation_periods)
    }

    fn breaches(&self, v: f64) -> bool {
        match self.comparison.as_str() {
            ">" => v > self.threshold,
            ">=" => v >= self.threshold,
            "<" => v < self.threshold,
            _ => v <= self.threshold,
        }
    }

    /// The state the datapoints (oldest first, `None` where missing) put the alarm in, and
    /// why; `current` is kept when `treat_missing_data = ignore` and every one is missing.
    pub fn evaluate(&self, points: &[Option<f64>], current: AlarmState) -> (AlarmState, String) {
        let n = points.len();
        let m = self.datapoints() as usize;
        let present: Vec<f64> = points.iter().flatten().copied().collect();
        let missing = n - present.len();
        let mut breaching = present.iter().filter(|v| self.breaches(**v)).count();
        match self.treat_missing_data.as_str() {
            "breaching" => breaching += missing,
            "notBreaching" => {}
            _ if present.is_empty() => {
                return if self.treat_missing_data == "ignore" {
                    (
                        current,
                        format!("no datapoints in the last {n}: state kept"),
                    )
                } else {
                    (
                        AlarmState::InsufficientData,
                        format!("no datapoints in the last {n} periods"),
                    )
                };
            }
            _ => {}
        }
        let shown: Vec<String> = points
            .iter()
            .map(|p| p.map_or("missing".to_string(), |v| format!("{v}")))
            .collect();
        let state = if breaching >= m {
            AlarmState::Alarm
        } else {
            AlarmState::Ok
        };
        let reason = format!(
            "Threshold Crossed: {breaching} out of the last {n} datapoints [{}] {} the threshold ({} {} {}), {m} needed",
            shown.join(", "),
            if breaching >= m { "were breaching" } else { "were not enough breaching" },
            self.metric,
            self.comparison,
            self.threshold,
        );
        (state, reason)
    }
}

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlarmState::Ok => "OK",
            AlarmState::Alarm => "ALARM",
            AlarmState::InsufficientData => "INSUFFICIENT_DATA",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "OK" => AlarmState::Ok,
            "ALARM" => AlarmState::Alarm,
            "INSUFFICIENT_DATA" => AlarmState::InsufficientData,
            _ => return None,
        })
    }
}

/// Alarm names: 1-255 letters, digits, `.`, `-`, `_`.
pub fn validate_alarm_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty()
        || name.len() > 255
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    {
        return Err(CoreError::InvalidAlarm(format!(
            "name {name:?}: use 1-255 letters, digits, '.', '-' or '_'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlarmState::*;

    fn spec(n: u32, m: u32, missing: &str) -> AlarmSpec {
        AlarmSpec {
            function: "hello".into(),
            metric: "errors".into(),
            comparison: ">".into(),
            threshold: 0.0,
            period: 60,
            evaluation_periods: n,
            datapoints_to_alarm: Some(m),
            treat_missing_data: missing.into(),
            description: None,
        }
    }

    #[test]
    fn m_out_of_n_with_missing_data() {
        let s = spec(3, 2, "missing");
        assert_eq!(s.evaluate(&[Some(1.0), None, Some(2.0)], Ok).0, Alarm);
        assert_eq!(s.evaluate(&[Some(1.0), None, Some(0.0)], Alarm).0, Ok);
        assert_eq!(s.evaluate(&[None, None, None], Ok).0, InsufficientData);
        let s = spec(3, 2, "breaching");
        assert_eq!(s.evaluate(&[None, None, Some(0.0)], Ok).0, Alarm);
        let s = spec(3, 2, "notBreaching");
        assert_eq!(s.evaluate(&[None, None, None], Alarm).0, Ok);
        let s = spec(3, 2, "ignore");
        assert_eq!(s.evaluate(&[None, None, None], Alarm).0, Alarm);
        assert_eq!(s.evaluate(&[None, Some(0.0), None], Alarm).0, Ok);
    }

    #[test]
    fn validation_names_the_bad_field() {
        assert!(spec(1, 1, "missing").validate().is_ok());
        let mut s = spec(1, 1, "missing");
        s.period = 90;
        assert!(s.validate().unwrap_err().to_string().contains("period"));
        let mut s = spec(2, 3, "missing");
        assert!(s.validate().unwrap_err().to_string().contains("datapoints"));
        s = spec(1, 1, "sometimes");
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("treat_missing"));
        s = spec(1, 1, "missing");
        s.metric = "cpu".into();
        assert!(s.validate().unwrap_err().to_string().contains("metric"));
        assert!(validate_alarm_name("high-errors.v1").is_ok());
        assert!(validate_alarm_name("a b").is_err());
    }
}
