//! The canton-agent sidecar beside one Canton node (or Postgres-backed app): probes the node,
//! publishes heartbeats and node state to NATS, and executes signed commands (see [`commands`]
//! and the action interface in [`actions`]).
//!
//! Structure: [`Agent::run`] spawns one task per [`Probe`], then, once NATS is reached, the
//! heartbeat ticker and the node-state writer; each task gets a [`Context`] (config, identity,
//! NATS link, probe board, counters, shutdown token) by value. Probes only write the
//! [`ProbeBoard`]; the bus tasks only read it, so no probe can block a heartbeat.

pub mod actions;
mod agent;
pub mod clock;
pub mod commands;
pub mod config;
mod connection;
mod context;
pub mod fuzzing;
pub mod health;
mod heartbeat;
pub mod metrics;
pub mod probe;
pub mod probes;
pub mod report;
mod state;
pub mod wire;

pub use agent::{Agent, AgentError};
pub use config::{AgentConfig, ConfigError, NodeKind, Schedule};
pub use connection::Link;
pub use context::Context;
pub use health::NodeCondition;
pub use metrics::{AgentMetrics, Counter, Gauge};
pub use probe::{Facts, Probe, ProbeBoard, ProbeOutcome, Reason, ReasonKind};
