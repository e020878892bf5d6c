//! The durable run record: the engine's [`RunState`] plus what the driver must remember to
//! perform effects again byte for byte (claims, revoke times, resend counters).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sidecar_core::{Millis, RunState};

/// When a revoke was first issued, so a resend after a crash signs the same body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeStamp {
    pub up_to_attempt: u32,
    pub issued_at: Millis,
    pub expires_at: Millis,
    /// The epoch the revoke is signed under (raised when a new tenure adopts the run).
    pub epoch: u64,
    /// Set by a deliberate resend under a new epoch: `n` in the message id suffix `/r<n>`.
    pub resend: Option<u64>,
}

/// The `traceparent`s a run's commands were first signed with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceRecord {
    /// The run span's (empty without a tracer).
    #[serde(default)]
    pub run: String,
    /// The step span's, by command id; a command keeps its first one for every attempt.
    #[serde(default)]
    pub commands: BTreeMap<String, String>,
}

/// The last progress an agent reported for a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressMark {
    pub done: u64,
    pub total: u64,
}

/// One run as stored under its key in `cs_<net>_runs`. Every write is a CAS on the key's
/// revision; `state.owner_epoch` names the leader tenure allowed to write it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    pub state: RunState,
    pub organisation: String,
    pub request_id: String,
    pub parameters: BTreeMap<String, String>,
    /// The logical nodes the run touches.
    pub nodes: Vec<String>,
    /// Claim key revisions by node, while the run holds its claims.
    pub claims: BTreeMap<String, u64>,
    /// The epoch the claims were taken at (carried in every command's `Claim`).
    pub claim_epoch: u64,
    /// Revoke times by revoked command id.
    pub revokes: BTreeMap<String, RevokeStamp>,
    /// Deliberate resends by command id: `n` makes the message id `<id>/<attempt>/r<n>`.
    pub resends: BTreeMap<String, u64>,
    pub progress: BTreeMap<String, ProgressMark>,
    /// Detail an agent gave with its final answer, by command id.
    pub answers: BTreeMap<String, String>,
    /// Signed operator approvals (encoded envelopes) by the step whose commands carry them.
    #[serde(default)]
    pub approvals: BTreeMap<String, Vec<u8>>,
    /// W3C trace context, so a resend signs the same body and a successor continues the trace.
    #[serde(default)]
    pub trace: TraceRecord,
    /// The replica each attempt of a command to an HA node was routed to: command id →
    /// attempt → replica id (`<node>.<replica>`). Written before the attempt is published.
    #[serde(default)]
    pub routes: BTreeMap<String, BTreeMap<u32, String>>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
}

impl RunRecord {
    pub fn run_id(&self) -> &str {
        &self.state.run_id
    }

    pub fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The replica attempt `attempt` of `command_id` was routed to, if its node has replicas.
    pub fn route(&self, command_id: &str, attempt: u32) -> Option<&str> {
        self.routes
            .get(command_id)
            .and_then(|attempts| attempts.get(&attempt))
            .map(String::as_str)
    }

    /// Every replica that received an attempt up to `up_to_attempt` of `command_id`, once each:
    /// where a revoke of those attempts must go.
    pub fn routed_replicas(&self, command_id: &str, up_to_attempt: u32) -> Vec<&str> {
        let mut replicas: Vec<&str> = self
            .routes
            .get(command_id)
            .into_iter()
            .flat_map(|attempts| attempts.range(..=up_to_attempt).map(|(_, r)| r.as_str()))
            .collect();
        replicas.sort_unstable();
        replicas.dedup();
        replicas
    }

    /// The next deadline among the state's timers.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.state.timers.values().copied().min()
    }
}

/// The key of a run record.
pub fn run_key(run: &str) -> String {
    run.to_owned()
}

/// The key of one node's result for one step of a run (KV keys cannot hold `~`).
pub fn result_key(run: &str, step: &str, node: &str) -> String {
    format!("{run}.result.{}.{node}", step.replace('~', "-"))
}

/// The claim record stored under a node's key in `cs_<net>_claims`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    pub run: String,
    pub epoch: u64,
    pub organisation: String,
}
