//! Probes: each one asks the node one question on its own period and within its own timeout.
//!
//! A probe's run happens in its own task, so a probe that hangs is cut off at its timeout and one
//! that panics is reported as such; neither can stop the heartbeat ticker or the agent. Every
//! result lands on the [`ProbeBoard`], which the heartbeat and node-state tasks read.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::Schedule;
use crate::metrics::AgentMetrics;

/// One question asked of the node.
pub trait Probe: Send + Sync + 'static {
    /// Stable name, used in heartbeats and reasons (`status`, `grpc_health`, …).
    fn name(&self) -> &'static str;

    fn schedule(&self) -> Schedule;

    /// One run. The future owns what it needs, so it can run in a task of its own.
    fn check(&self) -> BoxFuture<'static, ProbeOutcome>;
}

/// A synchronizer the node is connected to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Synchronizer {
    pub alias: String,
    pub id: String,
    pub healthy: bool,
}

/// What probes learned about the node. Each probe fills what it knows; [`Facts::merge`] combines
/// the latest answers of all probes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// Canton version reported by the node.
    pub version: Option<String>,
    /// The release-line profile that version selects (`3.4`, `3.5`).
    pub release_line: Option<String>,
    /// The node's unique identifier.
    pub uid: Option<String>,
    /// Whether this replica is the active one (HA pairs have one active replica).
    pub active: Option<bool>,
    pub uptime: Option<Duration>,
    pub synchronizers: Option<Vec<Synchronizer>>,
    /// Participant ledger end (absolute offset).
    pub ledger_end: Option<i64>,
    /// Last sequencer counter processed by the node.
    pub sequencer_counter: Option<i64>,
    /// Sequencer time of that event (a sequencer's latest), microseconds since the epoch.
    pub sequencer_timestamp_micros: Option<i64>,
    /// Whether the node's health endpoints report it serving.
    pub serving: Option<bool>,
    pub database_reachable: Option<bool>,
}

impl Facts {
    /// Fills every field `self` lacks from `other`.
    pub fn merge(&mut self, other: &Facts) {
        fn fill<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        fill(&mut self.version, &other.version);
        fill(&mut self.release_line, &other.release_line);
        fill(&mut self.uid, &other.uid);
        fill(&mut self.active, &other.active);
        fill(&mut self.uptime, &other.uptime);
        fill(&mut self.synchronizers, &other.synchronizers);
        fill(&mut self.ledger_end, &other.ledger_end);
        fill(&mut self.sequencer_counter, &other.sequencer_counter);
        fill(
            &mut self.sequencer_timestamp_micros,
            &other.sequencer_timestamp_micros,
        );
        fill(&mut self.serving, &other.serving);
        fill(&mut self.database_reachable, &other.database_reachable);
    }
}

/// Why a probe is not happy, by kind; callers (and tests) branch on the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReasonKind {
    /// No answer within the probe's timeout (a hung node).
    Timeout,
    /// No connection (the node or its database is down).
    Unreachable,
    /// The node answered with an error.
    Error,
    /// The node answered and reports itself not serving or unhealthy.
    NotServing,
    /// A synchronizer connection is missing or unhealthy.
    Synchronizer,
    /// The probe itself failed (a bug), caught so that the agent keeps running.
    ProbePanicked,
}

impl ReasonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::Timeout => "timeout",
            ReasonKind::Unreachable => "unreachable",
            ReasonKind::Error => "error",
            ReasonKind::NotServing => "not_serving",
            ReasonKind::Synchronizer => "synchronizer",
            ReasonKind::ProbePanicked => "probe_panicked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            ReasonKind::Timeout,
            ReasonKind::Unreachable,
            ReasonKind::Error,
            ReasonKind::NotServing,
            ReasonKind::Synchronizer,
            ReasonKind::ProbePanicked,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == text)
    }
}

/// Why the node is unhealthy, as one probe saw it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Reason {
    pub probe: String,
    pub kind: ReasonKind,
    pub detail: String,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.probe, self.kind.as_str(), self.detail)
    }
}

/// The result of one probe run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The node answered and is fine as far as this probe can tell.
    Healthy(Facts),
    /// The node answered but is not healthy; the facts are still worth keeping.
    Unhealthy {
        facts: Facts,
        kind: ReasonKind,
        detail: String,
    },
    /// No usable answer.
    Failed { kind: ReasonKind, detail: String },
}

impl ProbeOutcome {
    pub fn failed(kind: ReasonKind, detail: impl Into<String>) -> Self {
        ProbeOutcome::Failed {
            kind,
            detail: detail.into(),
        }
    }

    pub fn facts(&self) -> Option<&Facts> {
        match self {
            ProbeOutcome::Healthy(facts) | ProbeOutcome::Unhealthy { facts, .. } => Some(facts),
            ProbeOutcome::Failed { .. } => None,
        }
    }

    /// The reason this outcome is not healthy, attributed to `probe`.
    pub fn reason(&self, probe: &str) -> Option<Reason> {
        match self {
            ProbeOutcome::Healthy(_) => None,
            ProbeOutcome::Unhealthy { kind, detail, .. }
            | ProbeOutcome::Failed { kind, detail } => Some(Reason {
                probe: probe.to_owned(),
                kind: *kind,
                detail: detail.clone(),
            }),
        }
    }
}

/// The latest run of one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeRecord {
    pub outcome: ProbeOutcome,
    /// Monotonic time the run ended, for ages.
    pub finished_at: Instant,
    pub finished_wall: SystemTime,
    pub took: Duration,
    pub period: Duration,
    /// Failed or unhealthy runs in a row.
    pub consecutive_failures: u32,
}

/// Latest record of every probe; `None` until its first run ends.
pub type Board = BTreeMap<&'static str, Option<ProbeRecord>>;

/// Shared, always-readable results of all probes. Readers never wait for a probe.
#[derive(Clone)]
pub struct ProbeBoard {
    sender: Arc<watch::Sender<Board>>,
}

impl ProbeBoard {
    pub fn new(probes: &[Arc<dyn Probe>]) -> Self {
        let board = probes.iter().map(|p| (p.name(), None)).collect();
        Self {
            sender: Arc::new(watch::Sender::new(board)),
        }
    }

    pub fn snapshot(&self) -> Board {
        self.sender.borrow().clone()
    }

    /// A receiver that wakes on every probe result.
    pub fn subscribe(&self) -> watch::Receiver<Board> {
        self.sender.subscribe()
    }

    fn record(
        &self,
        name: &'static str,
        outcome: ProbeOutcome,
        started: Instant,
        period: Duration,
    ) {
        let finished_at = Instant::now();
        self.sender.send_modify(|board| {
            let previous_failures = board
                .get(name)
                .and_then(Option::as_ref)
                .map_or(0, |r| r.consecutive_failures);
            let consecutive_failures = match outcome {
                ProbeOutcome::Healthy(_) => 0,
                _ => previous_failures.saturating_add(1),
            };
            board.insert(
                name,
                Some(ProbeRecord {
                    outcome,
                    finished_at,
                    finished_wall: SystemTime::now(),
                    took: finished_at.duration_since(started),
                    period,
                    consecutive_failures,
                }),
            );
        });
    }
}

/// Runs `probe` on its schedule until `shutdown`, recording every result on `board`.
pub async fn run_probe(
    probe: Arc<dyn Probe>,
    board: ProbeBoard,
    metrics: AgentMetrics,
    shutdown: CancellationToken,
) {
    let name = probe.name();
    let schedule = probe.schedule();
    let mut ticker = tokio::time::interval(schedule.period);
    // A slow run delays the next one instead of causing a burst of catch-up runs.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let started = Instant::now();
        let mut run = tokio::spawn(probe.check());
        let outcome = tokio::select! {
            () = shutdown.cancelled() => {
                run.abort();
                return;
            }
            result = tokio::time::timeout(schedule.timeout, &mut run) => match result {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(join_error)) => {
                    tracing::error!(probe = name, error = %join_error, "probe run failed");
                    ProbeOutcome::failed(ReasonKind::ProbePanicked, join_error.to_string())
                }
                Err(_) => {
                    run.abort();
                    metrics.probe_timeouts.increment();
                    ProbeOutcome::failed(
                        ReasonKind::Timeout,
                        format!("no answer within {}", humantime::format_duration(schedule.timeout)),
                    )
                }
            },
        };
        metrics.probe_runs.increment();
        if !matches!(outcome, ProbeOutcome::Healthy(_)) {
            metrics.probe_failures.increment();
        }
        let label = match &outcome {
            ProbeOutcome::Healthy(_) => "healthy",
            ProbeOutcome::Unhealthy { .. } => "unhealthy",
            ProbeOutcome::Failed { kind, .. } if *kind == ReasonKind::Timeout => "timeout",
            ProbeOutcome::Failed { .. } => "failed",
        };
        metrics
            .instruments
            .probe_finished(name, label, started.elapsed());
        board.record(name, outcome, started, schedule.period);
    }
}
