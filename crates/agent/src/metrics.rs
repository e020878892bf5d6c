//! The agent's instruments, passed to every task as a value (no global registry).
//!
//! Counters are atomics: each heartbeat and node state carries their values, and the same
//! atomics back observable OTel counters, so one increment feeds heartbeats, OTLP and
//! `/metrics` alike. Latencies and the node's condition are OTel instruments recorded directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sidecar_telemetry::{Gauge as OtelGauge, Histogram, KeyValue, Meter};
use sidecar_trust::RejectionReason;

use crate::health::NodeCondition;

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

/// Every counter the agent keeps, and its OTel instruments.
#[derive(Clone, Debug)]
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
    pub instruments: Instruments,
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

/// Instruments recorded directly (not backed by the heartbeat counters).
#[derive(Clone, Debug)]
pub struct Instruments {
    node: KeyValue,
    probe_duration: Histogram<f64>,
    command_duration: Histogram<f64>,
    backup_duration: Histogram<f64>,
    backup_size: OtelGauge<u64>,
    condition: OtelGauge<u64>,
}

/// Conditions in the order of the `canton_agent_node_condition` series.
const CONDITIONS: [NodeCondition; 4] = [
    NodeCondition::Starting,
    NodeCondition::Healthy,
    NodeCondition::Passive,
    NodeCondition::Unhealthy,
];

/// Buckets (seconds) for probes and short commands up to long backups.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0, 600.0,
];

impl Instruments {
    fn new(meter: &Meter, node: &str) -> Self {
        let histogram = |name: &'static str, description: &'static str| {
            meter
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build()
        };
        Self {
            node: KeyValue::new("node", node.to_owned()),
            probe_duration: histogram(
                "canton_agent_probe_duration",
                "How long one probe run took, by probe and outcome",
            ),
            command_duration: histogram(
                "canton_agent_command_duration",
                "How long one command's action took, by action and outcome",
            ),
            backup_duration: histogram(
                "canton_agent_backup_duration",
                "How long one backup of this node took, by outcome",
            ),
            backup_size: meter
                .u64_gauge("canton_agent_backup_size")
                .with_unit("By")
                .with_description("Bytes of this node's last completed backup")
                .build(),
            condition: meter
                .u64_gauge("canton_agent_node_condition")
                .with_description(
                    "1 for the node's current condition (starting, healthy, passive, unhealthy), 0 for the others",
                )
                .build(),
        }
    }

    pub fn probe_finished(&self, probe: &'static str, outcome: &'static str, took: Duration) {
        self.probe_duration.record(
            took.as_secs_f64(),
            &[
                self.node.clone(),
                KeyValue::new("probe", probe),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub fn command_finished(&self, action: &str, outcome: &'static str, took: Duration) {
        self.command_duration.record(
            took.as_secs_f64(),
            &[
                self.node.clone(),
                KeyValue::new("action", action.to_owned()),
                KeyValue::new("outcome", outcome),
            ],
        );
    }

    pub fn backup_finished(&self, outcome: &'static str, took: Duration, bytes: Option<u64>) {
        self.backup_duration.record(
            took.as_secs_f64(),
            &[self.node.clone(), KeyValue::new("outcome", outcome)],
        );
        if let Some(bytes) = bytes {
            self.backup_size
                .record(bytes, std::slice::from_ref(&self.node));
        }
    }

    pub fn condition(&self, current: NodeCondition) {
        for condition in CONDITIONS {
            self.condition.record(
                u64::from(condition == current),
                &[
                    self.node.clone(),
                    KeyValue::new("condition", condition.as_str()),
                ],
            );
        }
    }
}

impl Default for AgentMetrics {
    /// Counters only; the OTel instruments record nothing (tests, tools).
    fn default() -> Self {
        Self::new(&sidecar_telemetry::noop_meter(), "")
    }
}

impl AgentMetrics {
    /// The agent's counters and instruments, all built from `meter` and labelled with `node`.
    pub fn new(meter: &Meter, node: &str) -> Self {
        let metrics = Self {
            heartbeats_published: Counter::default(),
            heartbeats_skipped: Counter::default(),
            probe_runs: Counter::default(),
            probe_failures: Counter::default(),
            probe_timeouts: Counter::default(),
            state_writes: Counter::default(),
            state_write_failures: Counter::default(),
            reconnects: Counter::default(),
            commands_received: Counter::default(),
            commands_rejected: Counter::default(),
            rejections: RejectionCounters::default(),
            commands_done: Counter::default(),
            commands_failed: Counter::default(),
            commands_outcome_unknown: Counter::default(),
            commands_redelivered_running: Counter::default(),
            commands_resent: Counter::default(),
            commands_poisoned: Counter::default(),
            acks_published: Counter::default(),
            ack_publish_failures: Counter::default(),
            clock_skew_warnings: Counter::default(),
            confirmed_epoch: Gauge::default(),
            instruments: Instruments::new(meter, node),
        };
        metrics.observe_counters(meter, node);
        metrics
    }

    /// Registers the atomics as observable instruments; the SDK reads them at each collection.
    fn observe_counters(&self, meter: &Meter, node: &str) {
        let node = KeyValue::new("node", node.to_owned());
        for (name, counter) in self.counters() {
            let (counter, attributes) = (counter.clone(), [node.clone()]);
            meter
                .u64_observable_counter(format!("canton_agent_{name}"))
                .with_description(format!("The {name} counter this agent's heartbeats carry"))
                .with_callback(move |observer| observer.observe(counter.get(), &attributes))
                .build();
        }
        let rejections = self.rejections.clone();
        let rejection_node = node.clone();
        meter
            .u64_observable_counter("canton_agent_rejections")
            .with_description("Refused commands by reason")
            .with_callback(move |observer| {
                for (reason, count) in rejections.iter() {
                    observer.observe(
                        count,
                        &[rejection_node.clone(), KeyValue::new("reason", reason)],
                    );
                }
            })
            .build();
        let epoch = self.confirmed_epoch.clone();
        meter
            .u64_observable_gauge("canton_agent_confirmed_epoch")
            .with_description("The highest leadership epoch this agent confirmed")
            .with_callback(move |observer| {
                observer.observe(epoch.get(), std::slice::from_ref(&node))
            })
            .build();
    }

    /// Counts one refused command under its reason label.
    pub fn count_rejection(&self, label: &str) {
        self.commands_rejected.increment();
        if let Some(counter) = self.rejections.0.get(label) {
            counter.increment();
        }
    }

    fn counters(&self) -> [(&'static str, &Counter); 19] {
        [
            ("heartbeats_published", &self.heartbeats_published),
            ("heartbeats_skipped", &self.heartbeats_skipped),
            ("probe_runs", &self.probe_runs),
            ("probe_failures", &self.probe_failures),
            ("probe_timeouts", &self.probe_timeouts),
            ("state_writes", &self.state_writes),
            ("state_write_failures", &self.state_write_failures),
            ("reconnects", &self.reconnects),
            ("commands_received", &self.commands_received),
            ("commands_rejected", &self.commands_rejected),
            ("commands_done", &self.commands_done),
            ("commands_failed", &self.commands_failed),
            ("commands_outcome_unknown", &self.commands_outcome_unknown),
            (
                "commands_redelivered_running",
                &self.commands_redelivered_running,
            ),
            ("commands_resent", &self.commands_resent),
            ("commands_poisoned", &self.commands_poisoned),
            ("acks_published", &self.acks_published),
            ("ack_publish_failures", &self.ack_publish_failures),
            ("clock_skew_warnings", &self.clock_skew_warnings),
        ]
    }

    /// `(name, value)` of every counter, in a stable order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut values: Vec<(&'static str, u64)> = self
            .counters()
            .into_iter()
            .map(|(name, counter)| (name, counter.get()))
            .collect();
        values.push(("confirmed_epoch", self.confirmed_epoch.get()));
        values
    }
}
