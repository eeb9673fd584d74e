//! The PostgreSQL [`super::FlowStore`] (cluster mode, issue 18): the same semantics as the
//! SQLite store over a shared [`nimbus_pg::Pg`] pool, several nodes claiming steps at once
//! (`FOR UPDATE SKIP LOCKED` with leases). Tables are named `flows_…`.
