//! What every agent task receives: configuration, identity, the NATS link, the probe board,
//! counters and the shutdown token, all as values. A new task (the command path) takes the same.

use std::sync::Arc;

use async_nats::jetstream;
use sidecar_bus::Names;
use tokio_util::sync::CancellationToken;

use crate::clock::WallClock;
use crate::config::AgentConfig;
use crate::connection::Link;
use crate::metrics::AgentMetrics;
use crate::probe::ProbeBoard;
use crate::report::Identity;

#[derive(Clone)]
pub struct Context {
    pub config: Arc<AgentConfig>,
    pub identity: Identity,
    pub names: Names,
    pub link: Link,
    pub jetstream: jetstream::Context,
    pub board: ProbeBoard,
    pub metrics: AgentMetrics,
    /// The command path's wall clock (the system clock outside tests).
    pub clock: Arc<dyn WallClock>,
    /// Cancelled when the agent stops; every task returns soon after.
    pub shutdown: CancellationToken,
}

impl Context {
    /// The counters as published in heartbeats and node state.
    pub fn counters(&self) -> Vec<(String, u64)> {
        self.metrics
            .snapshot()
            .into_iter()
            .map(|(name, value)| (name.to_owned(), value))
            .collect()
    }
}
