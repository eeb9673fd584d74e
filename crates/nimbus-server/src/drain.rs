//! Graceful drain of a node's background work (docs/cluster.md, "Drain"): the async
//! dispatcher, the queue pollers, the scheduler, the source and target runners and the
//! workflow executor stop claiming, give back what they claimed but had not started, and
//! finish what they had. HTTP is not affected: a drained node keeps serving requests.
//! [`crate::Server::run`] drains on shutdown; [`crate::Server::drain_handle`] gives the
//! same drain to an API handler (`nimbus cluster drain NODE`).

use nimbus_events::engine::AsyncEngine;
use nimbus_events::mapping::MappingRunner;
use nimbus_events::scheduler::Scheduler;
use nimbus_sources::targets::TargetRunner;
use nimbus_sources::SourceRunner;
use nimbus_workflows::Workflows;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

/// A node's background runners, to drain them (cheap to clone).
#[derive(Clone)]
pub struct Drain {
    pub(crate) events: Arc<AsyncEngine>,
    pub(crate) mappings: Arc<MappingRunner>,
    pub(crate) sources: Arc<SourceRunner>,
    pub(crate) targets: Arc<TargetRunner>,
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) workflows: Workflows,
}

impl Drain {
    /// Drains every background runner at once: from now on the node takes no new
    /// background work. Resolves when the work they had in progress has finished, or when
    /// `grace` has passed; true when everything finished in time. Work still running
    /// after `grace` goes on (and is given back by a shutdown, or by its lease's end).
    /// Calling it again waits again.
    pub async fn drain(&self, grace: Duration) -> bool {
        info!("draining: no new background work; waiting for the work in progress");
        let all = async {
            tokio::join!(
                self.events.drain(),
                self.mappings.drain(),
                self.sources.drain(),
                self.targets.drain(),
                self.scheduler.drain(),
                self.workflows.drain(),
            );
        };
        match tokio::time::timeout(grace, all).await {
            Ok(()) => {
                info!("drained: background work finished");
                true
            }
            Err(_) => {
                warn!("background work still running after {grace:?} of drain");
                false
            }
        }
    }
}
