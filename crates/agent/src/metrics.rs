//! Counters of one agent, passed to every task as a value (no global registry). They travel in
//! each heartbeat; a `/metrics` exporter can read the same handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// One monotonically increasing counter; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn increment(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter the agent keeps.
#[derive(Clone, Debug, Default)]
pub struct AgentMetrics {
    pub heartbeats_published: Counter,
    /// Ticks on which no heartbeat was sent because NATS was disconnected.
    pub heartbeats_skipped: Counter,
    pub probe_runs: Counter,
    pub probe_failures: Counter,
    pub probe_timeouts: Counter,
    pub state_writes: Counter,
    pub state_write_failures: Counter,
    /// Connections established after the first one.
    pub reconnects: Counter,
    /// Commands seen by the command path (issue 10 counts here).
    pub commands_received: Counter,
    pub commands_rejected: Counter,
}

impl AgentMetrics {
    /// `(name, value)` of every counter, in a stable order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("heartbeats_published", self.heartbeats_published.get()),
            ("heartbeats_skipped", self.heartbeats_skipped.get()),
            ("probe_runs", self.probe_runs.get()),
            ("probe_failures", self.probe_failures.get()),
            ("probe_timeouts", self.probe_timeouts.get()),
            ("state_writes", self.state_writes.get()),
            ("state_write_failures", self.state_write_failures.get()),
            ("reconnects", self.reconnects.get()),
            ("commands_received", self.commands_received.get()),
            ("commands_rejected", self.commands_rejected.get()),
        ]
    }
}
