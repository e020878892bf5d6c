//! End-to-end tests: real nats-server, PostgreSQL, canton-sim processes and product binaries.
mod lifecycle;
mod restore;
