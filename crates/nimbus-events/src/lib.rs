//! Nimbus events: everything that invokes functions without a waiting caller. This crate
//! grows the async invocation engine (durable queue, retries with backoff, maximum event
//! age, dead-letter queues and destinations, idempotency), schedules, the event bus and
//! event-source mappings. The pure parts come first: EventBridge event patterns
//! ([`pattern`]) and schedule expressions ([`schedule`]).
//!
//! May depend on `nimbus-core` and `nimbus-store`; used by the gateway and the server.

pub mod bus;
pub mod drain;
pub mod engine;
pub mod external;
pub mod heartbeat;
pub mod mapping;
pub mod pattern;
pub mod schedule;
pub mod scheduler;
