//! What the agent publishes: heartbeats (every interval) and the node state (KV, on change and
//! periodically), built from the probe board. Converted to bus messages only in [`crate::wire`].

use std::time::{Duration, SystemTime};

use sidecar_bus::{NetworkId, NodeId};
use tokio::time::Instant;

use crate::config::NodeKind;
use crate::health::{Assessment, NodeCondition, assess};
use crate::probe::{Board, Facts, ProbeOutcome, Reason, ReasonKind};

/// Who the agent is; the same in every message of one boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub network: NetworkId,
    pub node: NodeId,
    pub kind: NodeKind,
    /// The organisation whose coordinator the agent obeys; empty without a command path.
    pub organisation: String,
    /// For an app: the participant it reads from.
    pub participant: Option<String>,
    /// For a Splice app: `sv` or `validator`.
    pub app_role: Option<String>,
    /// The key that signs this agent's acks; empty without a command path.
    pub ack_key_id: String,
    /// Fresh per process start, so a restart is visible even when sequence numbers repeat.
    pub boot_id: String,
    pub agent_version: String,
}

/// Whether this replica is the active one of an HA pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HaRole {
    Unknown,
    Active,
    Passive,
    /// A node without an HA peer.
    Standalone,
}

/// How one probe stands, as published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeStatus {
    /// No run has finished yet.
    Pending,
    Ok,
    /// The node answered but is not healthy.
    Failing,
    /// No answer within the timeout.
    Timeout,
}

/// The latest result of one probe, with its age at the time of publishing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeSummary {
    pub name: String,
    pub status: ProbeStatus,
    /// Empty when ok.
    pub reason: String,
    pub age: Option<Duration>,
    pub took: Option<Duration>,
}

/// Published every heartbeat interval on `cs.<net>.hb.<node>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub identity: Identity,
    /// Increases by one per published heartbeat within one boot; a gap means a lost message.
    pub seq: u64,
    pub sent_at: SystemTime,
    pub interval: Duration,
    pub condition: NodeCondition,
    pub ha_role: HaRole,
    pub reasons: Vec<Reason>,
    pub probes: Vec<ProbeSummary>,
    pub facts: Facts,
    pub counters: Vec<(String, u64)>,
}

/// The last full state of the node, kept in the nodes bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeState {
    pub identity: Identity,
    pub updated_at: SystemTime,
    pub condition: NodeCondition,
    pub ha_role: HaRole,
    pub reasons: Vec<Reason>,
    pub probes: Vec<ProbeSummary>,
    pub facts: Facts,
    pub counters: Vec<(String, u64)>,
    /// Set in the last write of a clean stop.
    pub stopping: bool,
}

impl NodeState {
    /// Whether `other` differs in a part whose change triggers a write; volatile values (ages,
    /// ledger end, uptime, counters) ride along with the periodic refresh and the heartbeats.
    pub fn differs_significantly(&self, other: &NodeState) -> bool {
        let significant = |s: &NodeState| {
            (
                s.condition,
                s.ha_role,
                s.reasons.clone(),
                s.facts.version.clone(),
                s.facts.uid.clone(),
                s.facts.active,
                s.facts.synchronizers.clone(),
                s.facts.database_reachable,
                s.stopping,
            )
        };
        significant(self) != significant(other)
    }
}

fn ha_role(node: &NodeId, facts: &Facts) -> HaRole {
    match (node.replica(), facts.active) {
        (None, _) => HaRole::Standalone,
        (Some(_), Some(true)) => HaRole::Active,
        (Some(_), Some(false)) => HaRole::Passive,
        (Some(_), None) => HaRole::Unknown,
    }
}

fn summaries(board: &Board, now: Instant) -> Vec<ProbeSummary> {
    board
        .iter()
        .map(|(name, record)| match record {
            None => ProbeSummary {
                name: (*name).to_owned(),
                status: ProbeStatus::Pending,
                reason: String::new(),
                age: None,
                took: None,
            },
            Some(record) => {
                let status = match &record.outcome {
                    ProbeOutcome::Healthy(_) => ProbeStatus::Ok,
                    ProbeOutcome::Failed {
                        kind: ReasonKind::Timeout,
                        ..
                    } => ProbeStatus::Timeout,
                    _ => ProbeStatus::Failing,
                };
                ProbeSummary {
                    name: (*name).to_owned(),
                    status,
                    reason: record
                        .outcome
                        .reason(name)
                        .map(|r| format!("{}: {}", r.kind.as_str(), r.detail))
                        .unwrap_or_default(),
                    age: Some(now.saturating_duration_since(record.finished_at)),
                    took: Some(record.took),
                }
            }
        })
        .collect()
}

/// Everything a heartbeat or node state says about the node, taken from one board snapshot.
pub struct Observation {
    pub assessment: Assessment,
    pub ha_role: HaRole,
    pub probes: Vec<ProbeSummary>,
}

pub fn observe(identity: &Identity, board: &Board) -> Observation {
    let assessment = assess(board);
    Observation {
        ha_role: ha_role(&identity.node, &assessment.facts),
        probes: summaries(board, Instant::now()),
        assessment,
    }
}

impl Observation {
    pub fn heartbeat(
        self,
        identity: &Identity,
        seq: u64,
        interval: Duration,
        counters: Vec<(String, u64)>,
    ) -> Heartbeat {
        Heartbeat {
            identity: identity.clone(),
            seq,
            sent_at: SystemTime::now(),
            interval,
            condition: self.assessment.condition,
            ha_role: self.ha_role,
            reasons: self.assessment.reasons,
            probes: self.probes,
            facts: self.assessment.facts,
            counters,
        }
    }

    pub fn node_state(
        self,
        identity: &Identity,
        counters: Vec<(String, u64)>,
        stopping: bool,
    ) -> NodeState {
        NodeState {
            identity: identity.clone(),
            updated_at: SystemTime::now(),
            condition: self.assessment.condition,
            ha_role: self.ha_role,
            reasons: self.assessment.reasons,
            probes: self.probes,
            facts: self.assessment.facts,
            counters,
            stopping,
        }
    }
}
