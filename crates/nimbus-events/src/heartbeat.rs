//! Liveness of the background loops (the async dispatcher, the scheduler, the queue
//! pollers' supervisor): each loop calls [`Heartbeat::beat`] once per iteration, and the
//! health checks read [`Heartbeat::age`]. A loop that has not beaten for
//! [`Heartbeat::stuck_after`] is stuck.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// The time of a loop's last iteration (an atomic timestamp; beating costs one store).
#[derive(Debug)]
pub struct Heartbeat {
    last_ms: AtomicI64,
    /// The longest a healthy loop waits between two iterations.
    period: Duration,
}

impl Heartbeat {
    /// A heartbeat that beat just now, for a loop that iterates at least every `period`.
    pub fn new(period: Duration) -> Self {
        Self {
            last_ms: AtomicI64::new(crate::engine::now_ms()),
            period,
        }
    }

    pub fn beat(&self) {
        self.last_ms
            .store(crate::engine::now_ms(), Ordering::Relaxed);
    }

    /// How long ago the loop last iterated.
    pub fn age(&self) -> Duration {
        let ms = crate::engine::now_ms() - self.last_ms.load(Ordering::Relaxed);
        Duration::from_millis(ms.max(0) as u64)
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Silence longer than this is a stuck loop: five periods, at least 10 s (one slow
    /// store call under load is not a stuck loop).
    pub fn stuck_after(&self) -> Duration {
        (self.period * 5).max(Duration::from_secs(10))
    }

    pub fn is_stuck(&self) -> bool {
        self.age() > self.stuck_after()
    }
}

/// Test hook: `NIMBUS_TEST_STALL_DISPATCHER=1` in the server's environment makes the async
/// dispatcher stop iterating after its first pass (so health checks can be seen reporting
/// a stuck loop). Never set in production; read once when the dispatcher starts.
pub const STALL_DISPATCHER_ENV: &str = "NIMBUS_TEST_STALL_DISPATCHER";

pub(crate) fn stall_dispatcher_requested() -> bool {
    std::env::var(STALL_DISPATCHER_ENV).is_ok_and(|v| v == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_heartbeat_is_alive_and_goes_stale() {
        let h = Heartbeat::new(Duration::from_secs(1));
        assert!(!h.is_stuck());
        assert!(h.age() < Duration::from_secs(1));
        assert_eq!(h.stuck_after(), Duration::from_secs(10));
        h.last_ms
            .store(crate::engine::now_ms() - 11_000, Ordering::Relaxed);
        assert!(h.is_stuck());
        h.beat();
        assert!(!h.is_stuck());
        assert_eq!(
            Heartbeat::new(Duration::from_secs(10)).stuck_after(),
            Duration::from_secs(50)
        );
    }
}
