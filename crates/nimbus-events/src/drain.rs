//! Graceful drain of the background runners (the async dispatcher, the queue pollers, the
//! scheduler, and in other crates the source and target runners and the workflow
//! executor): a drained runner claims no new work, gives back what it claimed but has
//! not started (claimable again at once, instead of at lease expiry), and its `drain`
//! future resolves once the work it had started has finished. The caller bounds the wait
//! (the server's shutdown grace); work still running after it is cut short and comes
//! back like a dead node's (at its lease's end, or given back by the runner where it
//! can say what it holds).
//!
//! [`InFlight`] is the small counter the runners share to know when their started work
//! has finished.

use tokio::sync::watch;

/// Counts units of work in flight (deliveries, batches, ticks); [`InFlight::idle`]
/// resolves when none is.
#[derive(Debug)]
pub struct InFlight {
    count: watch::Sender<usize>,
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new()
    }
}

impl InFlight {
    pub fn new() -> Self {
        Self {
            count: watch::Sender::new(0),
        }
    }

    /// One more unit in flight, until the guard drops.
    pub fn enter(self: &std::sync::Arc<Self>) -> InFlightGuard {
        self.count.send_modify(|n| *n += 1);
        InFlightGuard(self.clone())
    }

    /// Units in flight now.
    pub fn get(&self) -> usize {
        *self.count.borrow()
    }

    /// Resolves once nothing is in flight.
    pub async fn idle(&self) {
        let mut rx = self.count.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Marks one unit of work in flight (see [`InFlight::enter`]).
#[derive(Debug)]
pub struct InFlightGuard(std::sync::Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_guard() {
        let f = Arc::new(InFlight::new());
        f.idle().await; // nothing in flight
        let (a, b) = (f.enter(), f.enter());
        assert_eq!(f.get(), 2);
        let waiter = {
            let f = f.clone();
            tokio::spawn(async move { f.idle().await })
        };
        drop(a);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "one still in flight");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
    }
}
