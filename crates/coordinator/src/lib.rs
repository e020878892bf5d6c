//! The canton-coordinator: leadership with fencing, the durable runbook driver, node registry
//! and the coordinator API.

pub mod acks;
pub mod api;
pub mod backup_sets;
pub mod catalogue;
pub mod config;
pub mod dr;
pub mod driver;
pub mod fuzzing;
pub mod leadership;
pub mod metrics;
pub mod nats;
pub mod proposals;
pub mod registry;
pub mod retention;
pub mod service;
