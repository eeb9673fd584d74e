//! The PostgreSQL backends of this crate's stores (cluster mode, issue 18): each implements
//! the same trait as its SQLite counterpart, with the same semantics, over a shared
//! [`nimbus_pg::Pg`] pool; several Nimbus nodes may use one database at once. Tables are
//! named after their component (`registry_…`, `events_…`, …), migrations are versioned per
//! component ([`nimbus_pg::Pg::migrate`]).

/// Event buses, rules and schedules ([`crate::BusStore`]).
pub mod bus;
/// Asynchronous invocations ([`crate::EventQueue`]).
pub mod events;
/// Per-minute invocation history ([`crate::HistoryStore`]).
pub mod history;
/// SQS-compatible queues ([`crate::QueueStore`]).
pub mod queues;
/// The function registry, layers and logs ([`crate::Store`], [`crate::LayerStore`]).
pub mod registry;
/// Execution roles ([`crate::RoleStore`]).
pub mod roles;
