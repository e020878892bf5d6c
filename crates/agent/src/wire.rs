//! Heartbeats and node state as `proto-sidecar` messages: the only place that knows the wire
//! types, so the rest of the agent keeps its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prost::Message;
use proto_sidecar as pb;

use crate::config::NodeKind;
use crate::health::NodeCondition;
use crate::probe::{Facts, Reason};
use crate::report::{HaRole, Heartbeat, Identity, NodeState, ProbeStatus, ProbeSummary};

/// Encodes a heartbeat for `cs.<net>.hb.<node>`.
pub fn encode_heartbeat(heartbeat: &Heartbeat) -> Bytes {
    let id = &heartbeat.identity;
    let message = pb::Heartbeat {
        node: id.node.logical().to_owned(),
        replica: id.node.replica().unwrap_or_default().to_owned(),
        kind: kind(id.kind).into(),
        organisation: id.organisation.clone(),
        seq: heartbeat.seq,
        role: role(heartbeat.ha_role).into(),
        versions: Some(versions(id, &heartbeat.facts)),
        probes: probes(&heartbeat.probes),
        counters: Some(counters(&heartbeat.counters)),
        network: id.network.as_str().to_owned(),
        boot_id: id.boot_id.clone(),
        sent_at_unix_ms: unix_ms(heartbeat.sent_at),
        interval_ms: millis(heartbeat.interval),
        confirmed_epoch: counter(&heartbeat.counters, "confirmed_epoch"),
        condition: condition(heartbeat.condition).into(),
        reasons: reasons(&heartbeat.reasons),
        progress: Some(progress(&heartbeat.facts)),
    };
    Bytes::from(message.encode_to_vec())
}

/// Encodes the node state for its key in the nodes bucket.
pub fn encode_node_state(state: &NodeState) -> Bytes {
    let id = &state.identity;
    let message = pb::NodeState {
        node: id.node.logical().to_owned(),
        replica: id.node.replica().unwrap_or_default().to_owned(),
        kind: kind(id.kind).into(),
        organisation: id.organisation.clone(),
        role: role(state.ha_role).into(),
        versions: Some(versions(id, &state.facts)),
        probes: probes(&state.probes),
        network: id.network.as_str().to_owned(),
        boot_id: id.boot_id.clone(),
        updated_at_unix_ms: unix_ms(state.updated_at),
        uid: state.facts.uid.clone().unwrap_or_default(),
        synchronizers: state
            .facts
            .synchronizers
            .iter()
            .flatten()
            .map(|s| pb::SynchronizerConnection {
                alias: s.alias.clone(),
                synchronizer_id: s.id.clone(),
                connected: true,
                manual_connect: false,
                healthy: s.healthy,
            })
            .collect(),
        last_snapshot: None,
        confirmed_epoch: counter(&state.counters, "confirmed_epoch"),
        participant: id.participant.clone().unwrap_or_default(),
        counters: Some(counters(&state.counters)),
        ack_key_id: id.ack_key_id.clone(),
        condition: condition(state.condition).into(),
        reasons: reasons(&state.reasons),
        progress: Some(progress(&state.facts)),
        stopping: state.stopping,
        app_role: id.app_role.clone().unwrap_or_default(),
    };
    Bytes::from(message.encode_to_vec())
}

/// Decodes a heartbeat (for readers of the bus: the coordinator, tests, tools).
pub fn decode_heartbeat(bytes: &[u8]) -> Result<pb::Heartbeat, prost::DecodeError> {
    pb::Heartbeat::decode(bytes)
}

/// Decodes a node state entry.
pub fn decode_node_state(bytes: &[u8]) -> Result<pb::NodeState, prost::DecodeError> {
    pb::NodeState::decode(bytes)
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

fn kind(kind: NodeKind) -> pb::NodeKind {
    match kind {
        NodeKind::Participant => pb::NodeKind::Participant,
        NodeKind::Sequencer => pb::NodeKind::Sequencer,
        NodeKind::Mediator => pb::NodeKind::Mediator,
        NodeKind::App => pb::NodeKind::App,
    }
}

fn role(role: HaRole) -> pb::Role {
    match role {
        HaRole::Unknown => pb::Role::Unspecified,
        HaRole::Active => pb::Role::Active,
        HaRole::Passive => pb::Role::Passive,
        HaRole::Standalone => pb::Role::Standalone,
    }
}

fn condition(condition: NodeCondition) -> pb::NodeCondition {
    match condition {
        NodeCondition::Starting => pb::NodeCondition::Starting,
        NodeCondition::Healthy => pb::NodeCondition::Healthy,
        NodeCondition::Passive => pb::NodeCondition::Passive,
        NodeCondition::Unhealthy => pb::NodeCondition::Unhealthy,
    }
}

fn versions(id: &Identity, facts: &Facts) -> pb::Versions {
    pb::Versions {
        agent: id.agent_version.clone(),
        canton: facts.version.clone().unwrap_or_default(),
        release_line: facts.release_line.clone().unwrap_or_default(),
        protocol_versions: Vec::new(),
    }
}

fn probes(summaries: &[ProbeSummary]) -> Vec<pb::ProbeResult> {
    summaries
        .iter()
        .map(|p| {
            let status = match p.status {
                ProbeStatus::Pending => pb::ProbeStatus::Unspecified,
                ProbeStatus::Ok => pb::ProbeStatus::Ok,
                ProbeStatus::Failing => pb::ProbeStatus::Failing,
                ProbeStatus::Timeout => pb::ProbeStatus::Timeout,
            };
            pb::ProbeResult {
                name: p.name.clone(),
                status: status.into(),
                reason: p.reason.clone(),
                age_ms: p.age.map_or(0, millis),
                latency_ms: p.took.map_or(0, millis),
            }
        })
        .collect()
}

fn reasons(reasons: &[Reason]) -> Vec<pb::HealthReason> {
    reasons
        .iter()
        .map(|r| pb::HealthReason {
            probe: r.probe.clone(),
            kind: r.kind.as_str().to_owned(),
            detail: r.detail.clone(),
        })
        .collect()
}

fn progress(facts: &Facts) -> pb::NodeProgress {
    pb::NodeProgress {
        ledger_end: facts.ledger_end.unwrap_or_default(),
        sequencer_counter: facts.sequencer_counter.unwrap_or_default(),
        sequencer_timestamp_micros: facts.sequencer_timestamp_micros.unwrap_or_default(),
        uptime_ms: facts.uptime.map_or(0, millis),
        database_reachable: facts.database_reachable.unwrap_or(false),
    }
}

/// One named value of the agent's metrics snapshot (0 when absent).
fn counter(counters: &[(String, u64)], name: &str) -> u64 {
    counters
        .iter()
        .find(|(n, _)| n == name)
        .map_or(0, |(_, v)| *v)
}

fn counters(counters: &[(String, u64)]) -> pb::Counters {
    let get = |name: &str| counter(counters, name);
    pb::Counters {
        commands_received: get("commands_received"),
        commands_rejected: get("commands_rejected"),
        commands_done: get("commands_done"),
        commands_failed: get("commands_failed"),
        commands_outcome_unknown: get("commands_outcome_unknown"),
        probe_failures: get("probe_failures"),
        heartbeats_sent: get("heartbeats_published"),
    }
}
