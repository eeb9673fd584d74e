//! PostgreSQL backend: see the module list in `postgres/mod.rs`.
