use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Unix time in milliseconds, always passed in by the caller.
pub type Millis = i64;

/// How safe it is to run an action again (DESIGN §3), declared per action in code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Idempotency {
    /// Running twice is the same as once (disconnect, set schedule).
    Natural,
    /// The agent probes whether it already happened (backup manifest, restore marker).
    Guarded,
    /// Neither: after an unknown outcome only an operator may decide; never retried
    /// automatically.
    Unguardable,
}

/// The actions a step may run on agents. Names match the wire `Action` oneof.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Disconnect,
    Reconnect,
    Connect,
    SetManualConnect,
    Backup,
    Restore,
    Stop,
    Start,
    SetPassive,
    Probe,
    ExportPartyAcs,
    ImportPartyAcs,
    MigrateSynchronizer,
    IgnoreEvents,
    UnignoreEvents,
    DisableMember,
    SetPruningSchedule,
    Verify,
    DeleteBackup,
    MigrationDump,
    Redeploy,
    Rehydrate,
}

impl ActionKind {
    pub fn idempotency(self) -> Idempotency {
        match self {
            Self::Disconnect
            | Self::Reconnect
            | Self::Connect
            | Self::SetManualConnect
            | Self::Stop
            | Self::Start
            | Self::SetPassive
            | Self::Probe
            | Self::SetPruningSchedule
            | Self::Verify
            | Self::DeleteBackup
            | Self::ExportPartyAcs => Idempotency::Natural,
            Self::Backup
            | Self::Restore
            | Self::MigrationDump
            | Self::Redeploy
            | Self::Rehydrate => Idempotency::Guarded,
            Self::ImportPartyAcs
            | Self::MigrateSynchronizer
            | Self::IgnoreEvents
            | Self::UnignoreEvents
            | Self::DisableMember => Idempotency::Unguardable,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Disconnect => "disconnect",
            Self::Reconnect => "reconnect",
            Self::Connect => "connect",
            Self::SetManualConnect => "set_manual_connect",
            Self::Backup => "backup",
            Self::Restore => "restore",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::SetPassive => "set_passive",
            Self::Probe => "probe",
            Self::ExportPartyAcs => "export_party_acs",
            Self::ImportPartyAcs => "import_party_acs",
            Self::MigrateSynchronizer => "migrate_synchronizer",
            Self::IgnoreEvents => "ignore_events",
            Self::UnignoreEvents => "unignore_events",
            Self::DisableMember => "disable_member",
            Self::SetPruningSchedule => "set_pruning_schedule",
            Self::Verify => "verify",
            Self::DeleteBackup => "delete_backup",
            Self::MigrationDump => "migration_dump",
            Self::Redeploy => "redeploy",
            Self::Rehydrate => "rehydrate",
        }
    }
}

/// An action with its parameters (the driver maps them onto the wire action's fields).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActionSpec {
    pub kind: ActionKind,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

impl ActionSpec {
    pub fn new(kind: ActionKind) -> Self {
        Self {
            kind,
            params: BTreeMap::new(),
        }
    }

    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.params.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// The kind of Canton node behind a logical node id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Participant,
    Sequencer,
    Mediator,
    App,
}

/// A logical node (HA replicas count once; the driver routes to the active replica).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeRef {
    pub id: String,
    pub kind: NodeKind,
}

impl NodeRef {
    pub fn new(id: &str, kind: NodeKind) -> Self {
        Self {
            id: id.to_owned(),
            kind,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in total, including the first. Ignored (treated as 1) for unguardable actions.
    pub max_attempts: u32,
    /// Wait after a failed attempt before the next.
    pub backoff_ms: Millis,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_ms: 2_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepKind {
    /// One action on every node of the set, in parallel.
    Action {
        action: ActionSpec,
        nodes: Vec<NodeRef>,
        /// What undoes it, sent to the nodes where it was done when a later step fails.
        compensation: Option<ActionSpec>,
    },
    /// Every earlier step is done on every node before anything after it starts.
    Barrier,
    /// Re-reads state from the agents (a probe) within the step; fails if any agent fails.
    Check {
        probe: ActionSpec,
        nodes: Vec<NodeRef>,
    },
    /// Waits for an operator approval that names every node in `nodes`.
    Approval { nodes: Vec<NodeRef>, prompt: String },
}

/// One step of a runbook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepDef {
    pub id: String,
    pub kind: StepKind,
    pub timeout_ms: Millis,
    pub retry: RetryPolicy,
    /// Once done, a later failure does not roll back past this step: the run stops for an
    /// operator decision instead.
    pub fix_forward: bool,
    /// Ends once every node has a final outcome, whatever it is: a node that failed or did not
    /// answer is recorded, not a failure of the run (evidence gathering, where the caller
    /// judges the answers, e.g. against a quorum).
    #[serde(default)]
    pub best_effort: bool,
}

impl StepDef {
    pub fn nodes(&self) -> &[NodeRef] {
        match &self.kind {
            StepKind::Action { nodes, .. }
            | StepKind::Check { nodes, .. }
            | StepKind::Approval { nodes, .. } => nodes,
            StepKind::Barrier => &[],
        }
    }

    /// The action sent to agents, if this step sends one.
    pub fn sent_action(&self) -> Option<&ActionSpec> {
        match &self.kind {
            StepKind::Action { action, .. } => Some(action),
            StepKind::Check { probe, .. } => Some(probe),
            _ => None,
        }
    }

    pub fn compensation(&self) -> Option<&ActionSpec> {
        match &self.kind {
            StepKind::Action { compensation, .. } => compensation.as_ref(),
            _ => None,
        }
    }
}

/// The dedup key of a command: `<run>/<step>/<node>`. Compensations use the step id
/// `<step>~undo`. Retries keep the id and raise the attempt.
pub fn command_id(run: &str, step: &str, node: &str) -> String {
    format!("{run}/{step}/{node}")
}

pub fn compensation_step_id(step: &str) -> String {
    format!("{step}~undo")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Pending,
    Running,
    AwaitingApproval,
    AwaitingDecision,
    /// A step failed or the run was cancelled; in-flight commands are settling before
    /// compensation starts.
    Settling,
    Compensating,
    Succeeded,
    Failed,
    Cancelled,
    Compensated,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::Cancelled | Self::Compensated
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Running,
    AwaitingApproval,
    Done,
    Failed,
    Compensated,
}

/// Where one node of a step stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum NodeStatus {
    /// Sent; no answer yet.
    Sent,
    /// The agent accepted it and is working.
    Accepted,
    Done {
        result_hash: Vec<u8>,
    },
    Failed {
        reason: String,
    },
    Rejected {
        reason: String,
    },
    /// The agent cannot tell whether it applied; an operator decides.
    OutcomeUnknown,
    /// Past `expires_at` + skew without a final answer.
    TimedOut,
    /// A retry is due at `at` (after its backoff).
    RetryAt {
        at: Millis,
    },
    /// Waiting for an operator decision.
    AwaitingDecision,
    /// The operator gave up on this node.
    Abandoned,
}

impl NodeStatus {
    /// A final outcome: the command will not change the node any more (or is past its expiry
    /// plus skew, which the agent's check enforces).
    pub fn is_settled(&self) -> bool {
        !matches!(self, Self::Sent | Self::Accepted)
    }
}

/// The command currently owned by one node of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRun {
    pub node: NodeRef,
    pub command_id: String,
    pub attempt: u32,
    pub status: NodeStatus,
    pub issued_at: Millis,
    pub expires_at: Millis,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepState {
    pub id: String,
    pub status: StepStatus,
    /// By logical node id.
    pub nodes: BTreeMap<String, NodeRun>,
    /// Compensation commands of this step, by node id.
    pub compensations: BTreeMap<String, NodeRun>,
    pub started_at: Option<Millis>,
    pub finished_at: Option<Millis>,
}

/// A command the driver must have delivered: the outbox. Resent verbatim (same id, attempt,
/// times) by [`crate::resume`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outgoing {
    pub command_id: String,
    pub run: String,
    /// The step id (`<step>~undo` for compensations).
    pub step: String,
    pub node: NodeRef,
    pub attempt: u32,
    pub action: ActionSpec,
    pub epoch: u64,
    pub issued_at: Millis,
    pub expires_at: Millis,
    pub compensation: bool,
}

/// A published revoke: attempts up to `up_to_attempt` of a command must not run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub node: NodeRef,
    pub up_to_attempt: u32,
}

/// Why a timer exists.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
pub enum TimerId {
    /// `expires_at` + skew of a command passed.
    Expiry { command_id: String, attempt: u32 },
    /// A retry's backoff ended.
    Retry { command_id: String },
}

/// The operator's answer to an unknown outcome or a failed unguardable step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The node was checked: the action took effect.
    MarkDone,
    /// The node was checked: it did not; send again (a new attempt, after a revoke).
    Retry,
    /// Give up and compensate.
    Abort,
}

/// What an agent answered (verified by `trust` before it becomes an event).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AckStatus {
    Accepted,
    Progress { done: u64, total: u64 },
    Done { result_hash: Vec<u8> },
    Failed { reason: String },
    Rejected { reason: String, stale_epoch: bool },
    OutcomeUnknown,
}

/// Everything that can happen to a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started,
    Ack {
        command_id: String,
        attempt: u32,
        status: AckStatus,
    },
    Timeout {
        timer: TimerId,
    },
    Approval {
        step: String,
        nodes: Vec<String>,
    },
    Cancel {
        reason: String,
    },
    Decision {
        step: String,
        node: String,
        decision: Decision,
    },
    /// Advisory only: verdicts never decide a step's outcome.
    NodeStateChanged {
        node: String,
        summary: String,
    },
}

/// Progress the driver publishes (run events on the bus, WatchRun).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RunEvent {
    StepStarted {
        step: String,
    },
    NodeProgress {
        step: String,
        node: String,
        done: u64,
        total: u64,
    },
    NodeFinished {
        step: String,
        node: String,
        status: NodeStatus,
    },
    StepFinished {
        step: String,
        status: StepStatus,
    },
    Message {
        text: String,
    },
}

/// What the driver must do, after persisting the state that produced it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    Send(Outgoing),
    /// Publish a signed `Revoke` for attempts up to `up_to_attempt` of `command_id`.
    Revoke {
        command_id: String,
        node: NodeRef,
        up_to_attempt: u32,
    },
    SetTimer {
        timer: TimerId,
        at: Millis,
    },
    Emit(RunEvent),
    AwaitApproval {
        step: String,
        nodes: Vec<String>,
        prompt: String,
    },
    AwaitDecision {
        step: String,
        node: String,
        detail: String,
    },
    /// An agent refused a command for a stale epoch: this coordinator was deposed and must
    /// stop driving the run.
    Deposed {
        command_id: String,
    },
    Finish {
        status: RunStatus,
    },
}

/// The durable state of one run. Small enough to persist on every transition (node results
/// are a few fields per node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunState {
    pub run_id: String,
    pub runbook: Runbook,
    pub owner_epoch: u64,
    /// The bound on coordinator/agent clock disagreement.
    pub skew_ms: Millis,
    pub status: RunStatus,
    /// Index of the current step.
    pub current: usize,
    pub steps: Vec<StepState>,
    /// Outstanding commands by command id.
    pub outbox: BTreeMap<String, Outgoing>,
    /// Deadlines, absolute. Stored as a list of pairs because JSON keys must be strings.
    #[serde(with = "timer_pairs")]
    pub timers: BTreeMap<TimerId, Millis>,
    /// Revocations by command id; re-published by `resume`.
    pub revoked: BTreeMap<String, Revocation>,
    /// Set when the run is failing or cancelled: the final status it will end in.
    pub ending: Option<RunStatus>,
    /// Steps still to compensate, last first.
    pub compensate: Vec<usize>,
    pub detail: String,
    pub transitions: u64,
}

use crate::Runbook;

mod timer_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Millis, TimerId};

    #[derive(Serialize, Deserialize)]
    struct Entry {
        #[serde(flatten)]
        timer: TimerId,
        at: Millis,
    }

    pub fn serialize<S: Serializer>(
        timers: &BTreeMap<TimerId, Millis>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let entries: Vec<Entry> = timers
            .iter()
            .map(|(timer, at)| Entry {
                timer: timer.clone(),
                at: *at,
            })
            .collect();
        entries.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<TimerId, Millis>, D::Error> {
        let entries = Vec::<Entry>::deserialize(deserializer)?;
        Ok(entries
            .into_iter()
            .map(|entry| (entry.timer, entry.at))
            .collect())
    }
}
