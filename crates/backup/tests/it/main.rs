//! sidecar-backup against real PostgreSQL, real child processes and canton-sim.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod children;
mod corpus;
mod crash;
mod dump;
mod lifecycle;
mod sim;
mod snapshot;
mod support;
