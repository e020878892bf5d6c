//! Plain Rust types the client returns and takes; Canton's wire types stay inside this crate.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::config::NodeKind;

/// A node's status as its status service reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub kind: NodeKind,
    /// False while the node waits for its identity or topology; most fields are then empty.
    pub initialized: bool,
    /// The active replica of an HA pair (always true without HA).
    pub active: bool,
    /// The Canton version, e.g. `3.4.11`. 3.4 nodes report none until initialised.
    pub version: Option<String>,
    pub uid: Option<String>,
    pub uptime: Option<Duration>,
    pub ports: BTreeMap<String, i32>,
    pub components: Vec<ComponentHealth>,
    /// Participant: the synchronizers it is connected to.
    pub connected_synchronizers: Vec<SynchronizerHealth>,
    /// Sequencer and mediator: the synchronizer they serve.
    pub physical_synchronizer_id: Option<String>,
    /// Sequencer and mediator: the synchronizer's protocol version.
    pub protocol_version: Option<i32>,
    /// What an uninitialised node waits for.
    pub waiting_for: Option<WaitingFor>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitingFor {
    Unspecified,
    Id,
    NodeTopology,
    Initialization,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentHealth {
    pub name: String,
    pub state: ComponentState,
    pub description: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ComponentState {
    Ok,
    Degraded,
    Failed,
    Fatal,
    /// The node sent no state for the component.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynchronizerHealth {
    pub physical_synchronizer_id: String,
    /// None when the node did not say.
    pub healthy: Option<bool>,
}

/// One entry of `ListConnectedSynchronizers`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectedSynchronizer {
    pub alias: String,
    pub synchronizer_id: String,
    pub physical_synchronizer_id: String,
    pub healthy: bool,
}

/// One entry of `ListRegisteredSynchronizers`, reduced to what operations decide on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredSynchronizer {
    pub alias: String,
    pub connected: bool,
    /// False: the participant reconnects on start-up and on reconnect-all.
    pub manual_connect: bool,
    pub priority: i32,
    pub physical_synchronizer_id: Option<String>,
    pub sequencer_urls: Vec<String>,
}

/// How the participant checks sequencer connections before accepting a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SequencerValidation {
    Disabled,
    Active,
    /// The console's default for modify and connect.
    #[default]
    All,
    ThresholdActive,
}

/// A new synchronizer connection with one gRPC sequencer connection per URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynchronizerConnection {
    pub alias: String,
    /// `http://host:port` or `https://host:port` of each sequencer's public API.
    pub sequencer_urls: Vec<String>,
    pub manual_connect: bool,
    pub priority: i32,
    /// Pin to one physical synchronizer; None accepts what the sequencers serve.
    pub physical_synchronizer_id: Option<String>,
    /// How many sequencers must agree; at least 1.
    pub sequencer_trust_threshold: u32,
}

/// The fields `modify_synchronizer` may change; None keeps the stored value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SynchronizerChange {
    pub manual_connect: Option<bool>,
    pub priority: Option<i32>,
}

/// A participant's pruning schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PruningSchedule {
    /// Cron expression, in GMT.
    pub cron: String,
    pub max_duration: Duration,
    pub retention: Duration,
    /// True prunes only Canton-internal stores, not the ledger API index.
    pub prune_internally_only: bool,
}

/// What to export for an offline party replication (runs on the source participant).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyAcsExport {
    pub party_id: String,
    pub synchronizer_id: String,
    pub target_participant_uid: String,
    pub begin_offset_exclusive: i64,
    /// None uses the node's default.
    pub wait_for_activation_timeout: Option<Duration>,
}

/// How the target participant imports a party's ACS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyAcsImport {
    /// Sent on 3.5 (required there); 3.4 has no such field and takes it from the snapshot.
    pub synchronizer_id: String,
    /// Sent on 3.5 (lets the node schedule the flag clearance itself); absent on 3.4.
    pub party_id: Option<String>,
    pub workflow_id_prefix: String,
    pub mode: ContractImportMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ContractImportMode {
    /// No validation.
    Accept,
    /// Validates contracts including contract-id authentication; the recommended mode.
    #[default]
    Validation,
}

/// The onboarding flag of a party on this participant (`ClearPartyOnboardingFlag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnboardingFlag {
    /// The flag is clear: the party is fully onboarded.
    Cleared,
    /// Still set; the node has scheduled the clearance. Ask again after `retry_after`.
    Set { retry_after: SystemTime },
}

/// The sequencer's pruning view of its members; timestamps in microseconds since the epoch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencerPruningStatus {
    /// The sequencer's current time: its latest sequenced timestamp.
    pub now_micros: i64,
    pub earliest_event_micros: i64,
    pub members: Vec<SequencerMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequencerMember {
    /// `PAR::…`, `MED::…` or `SEQ::…`.
    pub member: String,
    pub registered_at_micros: i64,
    pub last_acknowledged_micros: Option<i64>,
    pub enabled: bool,
}

/// `grpc.health.v1` serving status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServingStatus {
    Unknown,
    Serving,
    NotServing,
    ServiceUnknown,
}

/// One validity period of a synchronizer's dynamic parameters (the fields runbooks read).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynchronizerParameters {
    pub valid_from: Option<SystemTime>,
    /// None while in force.
    pub valid_until: Option<SystemTime>,
    pub serial: i32,
    /// How far a ledger time may differ from its record time; bounds when apps may restart
    /// after a restore.
    pub ledger_time_record_time_tolerance: Duration,
    pub preparation_time_record_time_tolerance: Duration,
    pub confirmation_response_timeout: Duration,
    pub mediator_reaction_timeout: Duration,
    pub reconciliation_interval: Duration,
}

/// A commitment received from a counter-participant, compared with our own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedCommitment {
    pub synchronizer_id: String,
    pub counter_participant_uid: String,
    pub period_start_exclusive: Option<SystemTime>,
    pub period_end_inclusive: Option<SystemTime>,
    pub state: CommitmentState,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitmentState {
    Match,
    Mismatch,
    /// Received, not compared yet.
    Buffered,
    /// Not received yet.
    Outstanding,
    Unspecified,
}
