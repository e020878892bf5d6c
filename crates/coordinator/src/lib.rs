//! The canton-coordinator: leadership with fencing, the durable runbook driver, node registry
//! and the coordinator API.

pub mod leadership;
pub mod registry;
