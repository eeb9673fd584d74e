//! Honest health: `GET /v1/health` (liveness) and `GET /v1/ready` (readiness) answer from
//! the last [`HealthReport`] a background task in the server published
//! ([`HealthMonitor::publish`]); neither runs a check on the request path.
//!
//! Readiness answers 503 when any check is `failing`. Liveness answers 503 only when the
//! process is wedged: a background loop is stuck (a check marked `liveness`) or the checks
//! themselves stopped running.

use crate::state::Gateway;
use arc_swap::ArcSwapOption;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// A check's verdict; the worst of a report's checks is the report's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Failing,
}

/// One check of a report.
#[derive(Debug, Clone, Serialize)]
pub struct HealthCheck {
    /// `disk`, `stores`, `isolation`, `executor`, `stem_cells`, `dispatcher`, `scheduler`,
    /// `pollers`, `async_backlog`, `queue_backlog`, `checks`.
    pub name: &'static str,
    pub status: HealthStatus,
    /// What was found; for a status other than ok, the reason.
    pub detail: String,
    /// The measured figures (bytes free, milliseconds since a loop last ran, …).
    pub value: Value,
    /// A failure of this check means the process is wedged (liveness answers 503).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub liveness: bool,
}

impl HealthCheck {
    pub fn new(name: &'static str, status: HealthStatus, detail: String, value: Value) -> Self {
        Self {
            name,
            status,
            detail,
            value,
            liveness: false,
        }
    }

    /// Marks a check whose failure means the process is wedged.
    pub fn liveness(mut self) -> Self {
        self.liveness = true;
        self
    }
}

/// The result of one pass of every check.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub checks: Vec<HealthCheck>,
    /// When the pass finished (Unix ms).
    pub checked_ms: i64,
}

/// The last report, shared by the server's checker (writer) and the endpoints (readers).
pub struct HealthMonitor {
    last: ArcSwapOption<HealthReport>,
    /// How often the checker runs; a report older than a few of these is stale.
    interval: Duration,
}

impl HealthMonitor {
    pub fn new(interval: Duration) -> Arc<Self> {
        Arc::new(Self {
            last: ArcSwapOption::empty(),
            interval,
        })
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    pub fn publish(&self, report: HealthReport) {
        self.last.store(Some(Arc::new(report)));
    }

    /// Age beyond which the report itself is stale (the checker is stuck).
    fn stale_after(&self) -> Duration {
        (self.interval * 5).max(Duration::from_secs(15))
    }

    /// The checks of the last report, plus a `checks` check on the report's own age.
    fn current(&self, now_ms: i64) -> Vec<HealthCheck> {
        let Some(r) = self.last.load_full() else {
            return vec![HealthCheck::new(
                "checks",
                HealthStatus::Failing,
                "starting: the health checks have not run yet".into(),
                json!({ "age_ms": null }),
            )];
        };
        let age = (now_ms - r.checked_ms).max(0) as u64;
        let stale = age > self.stale_after().as_millis() as u64;
        let mut checks = r.checks.clone();
        checks.push(
            HealthCheck::new(
                "checks",
                if stale {
                    HealthStatus::Failing
                } else {
                    HealthStatus::Ok
                },
                if stale {
                    format!(
                        "stuck: the health checks last ran {:.1} s ago (every {:.1} s expected)",
                        age as f64 / 1000.0,
                        self.interval.as_secs_f64()
                    )
                } else {
                    format!("checked {:.1} s ago", age as f64 / 1000.0)
                },
                json!({ "age_ms": age, "interval_ms": self.interval.as_millis() as u64 }),
            )
            .liveness(),
        );
        checks
    }
}

fn worst(checks: &[HealthCheck]) -> HealthStatus {
    checks
        .iter()
        .map(|c| c.status)
        .max()
        .unwrap_or(HealthStatus::Ok)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The checks now, or none when the server runs without a monitor (embedded uses).
fn checks_of(gw: &Gateway) -> Option<Vec<HealthCheck>> {
    gw.health.get().map(|m| m.current(now_ms()))
}

/// `GET /v1/ready`: 200 when every check is ok or degraded, 503 when one is failing.
#[tracing::instrument(name = "ready", skip_all)]
pub(crate) async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    let checks = checks_of(&gw).unwrap_or_default();
    let status = worst(&checks);
    let code = if status == HealthStatus::Failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let reasons: Vec<String> = checks
        .iter()
        .filter(|c| c.status != HealthStatus::Ok)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    (
        code,
        Json(json!({ "status": status, "reasons": reasons, "checks": checks })),
    )
        .into_response()
}

/// `GET /v1/health`: the server's figures, the isolation report and the checks; 503 only
/// when the process is wedged (a liveness check failing).
#[tracing::instrument(name = "health", skip_all)]
pub(crate) async fn health(State(gw): State<Arc<Gateway>>) -> Response {
    let checks = checks_of(&gw).unwrap_or_default();
    let wedged = checks
        .iter()
        .any(|c| c.liveness && c.status == HealthStatus::Failing);
    let mut body = crate::native::figures(&gw);
    body["status"] = json!(worst(&checks));
    body["live"] = json!(!wedged);
    body["checks"] = json!(checks);
    let code = if wedged {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(status: HealthStatus) -> HealthCheck {
        HealthCheck::new("disk", status, String::new(), Value::Null)
    }

    #[test]
    fn the_worst_check_decides_and_a_stale_report_fails() {
        let m = HealthMonitor::new(Duration::from_secs(2));
        let first = m.current(1000);
        assert_eq!(worst(&first), HealthStatus::Failing, "{first:?}");
        m.publish(HealthReport {
            checks: vec![check(HealthStatus::Ok), check(HealthStatus::Degraded)],
            checked_ms: 1000,
        });
        let now = m.current(2000);
        assert_eq!(worst(&now), HealthStatus::Degraded);
        let own = now.last().unwrap();
        assert_eq!(
            (own.name, own.status, own.liveness),
            ("checks", HealthStatus::Ok, true)
        );
        // Nothing published for longer than 5 intervals (at least 15 s): stuck.
        let later = m.current(1000 + 16_000);
        assert_eq!(worst(&later), HealthStatus::Failing);
        assert!(
            later.last().unwrap().detail.starts_with("stuck"),
            "{later:?}"
        );
        assert_eq!(
            serde_json::to_value(check(HealthStatus::Degraded)).unwrap(),
            json!({"name": "disk", "status": "degraded", "detail": "", "value": null})
        );
    }
}
