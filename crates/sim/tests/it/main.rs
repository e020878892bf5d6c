//! canton-sim against real PostgreSQL and real node processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod app;
mod backup;
mod cli;
mod connectivity;
mod corpus;
mod faults;
mod ha;
mod health;
mod migration;
mod network;
mod party;
mod rehydrate;
mod support;
mod topology;
