//! Retry and Catch decisions as pure functions.
//!
//! The first retrier whose `ErrorEquals` matches decides alone: it retries while its own
//! attempt count is below `MaxAttempts`, after `IntervalSeconds × BackoffRate^attempts`
//! seconds capped by `MaxDelaySeconds`, scaled by a random fraction under
//! `JitterStrategy: FULL`. When retries are spent (or nothing matches), the first catcher
//! whose `ErrorEquals` matches handles the error.
//!
//! Source: <https://docs.aws.amazon.com/step-functions/latest/dg/concepts-error-handling.html>.

use std::time::Duration;

use crate::definition::{Catcher, JitterStrategy, Retrier};
use crate::errors::error_matches;

/// What to do after a state failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RetryDecision {
    /// Run the state again after `delay`; count the attempt against retrier `retrier`.
    Retry {
        /// Index of the retrier that matched.
        retrier: usize,
        /// How long to wait first.
        delay: Duration,
    },
    /// No (more) retries: look for a catcher.
    GiveUp,
}

/// The index of the first retrier matching `error`.
pub fn matching_retrier(retriers: &[Retrier], error: &str) -> Option<usize> {
    retriers
        .iter()
        .position(|r| r.error_equals.iter().any(|p| error_matches(p, error)))
}

/// Decides whether to retry `error` given the attempts already made per retrier
/// (`attempts[i]` for retrier `i`, missing entries meaning 0) and a random `jitter` in
/// `[0, 1)` used only by `JitterStrategy: FULL`.
pub fn decide(retriers: &[Retrier], error: &str, attempts: &[u64], jitter: f64) -> RetryDecision {
    let Some(i) = matching_retrier(retriers, error) else {
        return RetryDecision::GiveUp;
    };
    let r = &retriers[i];
    let done = attempts.get(i).copied().unwrap_or(0);
    if done >= r.max_attempts {
        return RetryDecision::GiveUp;
    }
    RetryDecision::Retry {
        retrier: i,
        delay: delay(r, done, jitter),
    }
}

/// The delay before retry number `attempt + 1` of a retrier.
pub fn delay(r: &Retrier, attempt: u64, jitter: f64) -> Duration {
    let exp = i32::try_from(attempt).unwrap_or(i32::MAX);
    let mut secs = r.interval_seconds as f64 * r.backoff_rate.powi(exp);
    if let Some(max) = r.max_delay_seconds {
        secs = secs.min(max as f64);
    }
    if r.jitter_strategy == JitterStrategy::Full {
        secs *= jitter.clamp(0.0, 1.0);
    }
    // Far beyond any execution's lifetime (one year); keeps `from_secs_f64` in range.
    Duration::from_secs_f64(secs.clamp(0.0, 1.0e9))
}

/// The first catcher matching `error`, with its index.
pub fn select_catcher<'c>(catchers: &'c [Catcher], error: &str) -> Option<(usize, &'c Catcher)> {
    catchers
        .iter()
        .enumerate()
        .find(|(_, c)| c.error_equals.iter().any(|p| error_matches(p, error)))
}
