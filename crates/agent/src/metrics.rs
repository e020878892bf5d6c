//! Counters of one agent, passed to every task as a value (no global registry). They travel in
//! each heartbeat; a `/metrics` exporter can read the same handles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use sidecar_trust::RejectionReason;

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

/// A value that is set, not counted; clones share it.
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
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
    /// Deliveries seen by the command path (redeliveries included).
    pub commands_received: Counter,
    /// Refused commands, all reasons; per reason in `rejections`.
    pub commands_rejected: Counter,
    pub rejections: RejectionCounters,
    pub commands_done: Counter,
    pub commands_failed: Counter,
    pub commands_outcome_unknown: Counter,
    /// Redeliveries of a command whose action was still running (answered with Progress).
    pub commands_redelivered_running: Counter,
    /// Redeliveries of a finished command (the recorded outcome was sent again).
    pub commands_resent: Counter,
    /// Commands the server stopped redelivering after `max_deliver` (advisories seen).
    pub commands_poisoned: Counter,
    pub acks_published: Counter,
    pub ack_publish_failures: Counter,
    /// First deliveries stamped by the server later than this agent's clock plus the skew bound.
    pub clock_skew_warnings: Counter,
    /// The highest leadership epoch confirmed (read at start-up or raised by a fence).
    pub confirmed_epoch: Gauge,
}

/// Rejections by reason: every `RejectionReason`, plus `lost_journal` and `not_supported`.
#[derive(Clone, Debug)]
pub struct RejectionCounters(Arc<BTreeMap<&'static str, Counter>>);

/// Reasons the command path adds to the trust check's.
pub const AGENT_REJECTION_REASONS: [&str; 2] = ["lost_journal", "not_supported"];

impl Default for RejectionCounters {
    fn default() -> Self {
        let labels = RejectionReason::ALL
            .iter()
            .map(|reason| reason.as_str())
            .chain(AGENT_REJECTION_REASONS);
        Self(Arc::new(
            labels.map(|label| (label, Counter::default())).collect(),
        ))
    }
}

impl RejectionCounters {
    /// The count of one reason (0 for a label that is not a reason).
    pub fn get(&self, label: &str) -> u64 {
        self.0.get(label).map_or(0, Counter::get)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.0
            .iter()
            .map(|(label, counter)| (*label, counter.get()))
    }
}

impl AgentMetrics {
    /// Counts one refused command under its reason label.
    pub fn count_rejection(&self, label: &str) {
        self.commands_rejected.increment();
        if let Some(counter) = self.rejections.0.get(label) {
            counter.increment();
        }
    }

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
            ("commands_done", self.commands_done.get()),
            ("commands_failed", self.commands_failed.get()),
            (
                "commands_outcome_unknown",
                self.commands_outcome_unknown.get(),
            ),
            (
                "commands_redelivered_running",
                self.commands_redelivered_running.get(),
            ),
            ("commands_resent", self.commands_resent.get()),
            ("commands_poisoned", self.commands_poisoned.get()),
            ("acks_published", self.acks_published.get()),
            ("ack_publish_failures", self.ack_publish_failures.get()),
            ("clock_skew_warnings", self.clock_skew_warnings.get()),
            ("confirmed_epoch", self.confirmed_epoch.get()),
        ]
    }
}
