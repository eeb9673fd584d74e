//! Cluster mode (`nimbus serve --database postgres://… --nats nats://…`, docs/cluster.md):
//! what a node needs to know about the others.
//!
//! - [`NodeId`]: the node's stable identity (`--node-id` or `DATA_DIR/node-id`).

//! - [`Membership`]: heartbeats in `cluster_nodes`, the list of nodes, drain marks.
//! - [`Changes`]: change generations bumped by triggers, polled by every node, with NATS
//!   notices to read them at once.
//! - [`Leases`]: named leases, one node at a time per name (source mappings, targets).
//! - [`PermitGate`] and [`Permits`]: reserved concurrency leased from a budget shared by
//!   the nodes, so a function's limit holds across the cluster.
//! - [`Peers`] and [`NodeKey`]: the other nodes' idle warm instances (published with the
//!   heartbeats) and the key nodes sign forwarded invocations with.
//! - [`AccountLimit`]: the account concurrency limit the nodes agree on (the smallest
//!   `--account-concurrency` of the live nodes), held with permits of [`ACCOUNT_KEY`].
//! - [`ClusterProvisioned`], [`share`], [`placement`]: provisioned concurrency spread over
//!   the nodes, and its status summed over them.

mod changes;
mod forward;
mod leases;
mod limits;
mod members;
mod node;
mod permits;
mod provisioned;

pub use changes::{install_triggers, Changes, ChangesHealth, BLIND, POLL, SUBJECT, WATCHED};
pub use forward::{IdleCounts, NodeKey, PeerIdle, Peers, Pick, FAILED_PEER_PAUSE, SIGNATURE_SKEW};
pub use leases::{Leases, LEASE_TTL};
pub use limits::{AccountLimit, ACCOUNT_KEY};
pub use members::{Load, Membership, MembershipConfig, NodeInfo};
pub use node::{NodeId, NODE_ID_FILE};
pub use permits::{Grant, NoPermit, PermitConfig, PermitGate, PermitLease, Permits};
pub use provisioned::{placement, share, ClusterProvisioned, ProvisionedPart, ProvisionedTotal};

/// The `cluster` component's migrations.
pub(crate) fn migrations() -> &'static [nimbus_pg::Migration] {
    members::MIGRATIONS
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid node id {0:?}: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadNodeId(String),
    #[error("{0}")]
    Io(String),
    #[error("another live node has the id {id} (at {address}): give each node its own --node-id, or stop the other one")]
    DuplicateNode { id: String, address: String },
    #[error("another process took over node id {0}: this one stopped writing heartbeats")]
    Superseded(String),
    #[error(transparent)]
    Pg(#[from] nimbus_pg::PgError),
}

pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
