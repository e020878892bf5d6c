//! A node's TOML configuration.
//!
//! ```toml
//! id = "p1"
//! kind = "participant"
//! organisation = "org1"
//! database = "host=127.0.0.1 port=5432 user=postgres dbname=p1"
//!
//! [ports]
//! admin = 5002
//! ledger = 5001
//! grpc_health = 5061
//! http_health = 7000   # optional: absent means no HTTP health server, as in Splice images
//! control = 7001
//!
//! [[bootstrap_synchronizers]]  # registered on first start only; the database rules afterwards
//! alias = "global"
//! sequencer = "http://127.0.0.1:5008"
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// The kinds of node the sim can stand in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Participant,
    Sequencer,
    Mediator,
    /// A Postgres-backed app in front of a participant (a Splice validator or SV app).
    App,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Participant => "participant",
            Self::Sequencer => "sequencer",
            Self::Mediator => "mediator",
            Self::App => "app",
        }
    }

    /// Canton's three-letter member code, for nodes that are synchronizer members.
    pub fn member_code(self) -> Option<&'static str> {
        match self {
            Self::Participant => Some("PAR"),
            Self::Sequencer => Some("SEQ"),
            Self::Mediator => Some("MED"),
            Self::App => None,
        }
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ports a node binds on `listen_address`. Zero means "any free port" (the bound port is
/// printed in the ready line); the network launcher always assigns fixed ones so restarts keep them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// Admin API (all kinds except app).
    #[serde(default)]
    pub admin: u16,
    /// Ledger API (participants).
    #[serde(default)]
    pub ledger: u16,
    /// Public API (sequencers).
    #[serde(default)]
    pub public: u16,
    /// `grpc.health.v1` server.
    #[serde(default)]
    pub grpc_health: u16,
    /// HTTP `GET /health`; absent means the node runs no HTTP health server.
    #[serde(default)]
    pub http_health: Option<u16>,
    /// The sim's control endpoint (fault injection, action log).
    #[serde(default)]
    pub control: u16,
    /// Apps: the Splice admin HTTP API (`/api/sv/…`, `/api/validator/…`).
    #[serde(default)]
    pub http: u16,
}

/// A synchronizer a participant registers the first time it starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapSynchronizer {
    pub alias: String,
    /// Sequencer public API URL, e.g. `http://127.0.0.1:5008`.
    pub sequencer: String,
    #[serde(default)]
    pub manual_connect: bool,
}

/// Synchronizer-wide settings, held by the sequencer and learned by members at handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynchronizerSettings {
    /// Logical name; the id is `<name>::<fingerprint of the organisation>`.
    pub name: String,
    #[serde(default = "default_tolerance_ms")]
    pub ledger_time_record_time_tolerance_ms: u64,
    #[serde(default = "default_reconciliation_ms")]
    pub reconciliation_interval_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub confirmation_response_timeout_ms: u64,
    #[serde(default = "default_timeout_ms")]
    pub mediator_reaction_timeout_ms: u64,
    #[serde(default = "default_tolerance_ms")]
    pub preparation_time_record_time_tolerance_ms: u64,
}

fn default_tolerance_ms() -> u64 {
    60_000
}

fn default_timeout_ms() -> u64 {
    30_000
}

impl SynchronizerSettings {
    /// The dynamic parameters a new synchronizer starts with (serial 1 of its
    /// `SynchronizerParametersState`; later changes go through topology).
    pub fn parameters(&self) -> proto_canton::protocol::v30::DynamicSynchronizerParameters {
        let duration = |ms: u64| prost_types::Duration {
            seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
            nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
        };
        proto_canton::protocol::v30::DynamicSynchronizerParameters {
            confirmation_response_timeout: Some(duration(self.confirmation_response_timeout_ms)),
            mediator_reaction_timeout: Some(duration(self.mediator_reaction_timeout_ms)),
            assignment_exclusivity_timeout: Some(duration(60_000)),
            ledger_time_record_time_tolerance: Some(duration(
                self.ledger_time_record_time_tolerance_ms,
            )),
            reconciliation_interval: Some(duration(self.reconciliation_interval_ms)),
            mediator_deduplication_timeout: Some(duration(
                2 * self.ledger_time_record_time_tolerance_ms,
            )),
            max_request_size: 10 * 1024 * 1024,
            onboarding_restriction:
                proto_canton::protocol::v30::OnboardingRestriction::UnrestrictedOpen as i32,
            participant_synchronizer_limits: Some(
                proto_canton::protocol::v30::ParticipantSynchronizerLimits {
                    confirmation_requests_max_rate: 1_000_000,
                },
            ),
            sequencer_aggregate_submission_timeout: Some(duration(5 * 60_000)),
            traffic_control: None,
            acs_commitments_catchup: None,
            preparation_time_record_time_tolerance: Some(duration(
                self.preparation_time_record_time_tolerance_ms,
            )),
        }
    }
}

fn default_reconciliation_ms() -> u64 {
    5_000
}

/// A participant's synthetic workload (issue-7 traffic): contracts created and archived per second.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Transactions per second; 0 disables the workload.
    #[serde(default)]
    pub rate_per_second: f64,
    /// Parties hosted by this participant (names; ids get the participant's fingerprint).
    #[serde(default)]
    pub parties: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    #[serde(default)]
    pub kind: Option<NodeKind>,
    #[serde(default = "default_organisation")]
    pub organisation: String,
    /// libpq key-value string or `postgres://` URL of the node's own database.
    pub database: String,
    #[serde(default = "default_listen")]
    pub listen_address: String,
    #[serde(default)]
    pub ports: Ports,
    /// Version string reported by the status services (selects the client's release-line profile).
    #[serde(default = "default_version")]
    pub canton_version: String,
    #[serde(default = "default_protocol_version")]
    pub protocol_version: i32,
    /// Sequencers only.
    #[serde(default)]
    pub synchronizer: Option<SynchronizerSettings>,
    /// Participants only.
    #[serde(default)]
    pub bootstrap_synchronizers: Vec<BootstrapSynchronizer>,
    /// Mediators only: the sequencer they read from.
    #[serde(default)]
    pub sequencer: Option<String>,
    /// Apps only: the participant's ledger API the app reads from.
    #[serde(default)]
    pub participant: Option<String>,
    /// Apps only: the participant's admin API (identities, snapshots).
    #[serde(default)]
    pub participant_admin: Option<String>,
    /// Apps only: how often the app reads the participant's ledger end.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Participants only.
    #[serde(default)]
    pub workload: Workload,
    /// Participants only: the other participants' member ids (counter-participants of ACS
    /// commitments and of workload contracts).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Participants only: the replica name of an HA participant (instance id `<id>.<replica>`).
    /// Replicas share the node's identity and database; the one holding the database lock is
    /// active, the others wait passively.
    #[serde(default)]
    pub replica: Option<String>,
    /// Participants only: serve `ParticipantRepairService` (Canton's
    /// `features.enable-repair-commands`); without it the service is not bound.
    #[serde(default)]
    pub repair_commands_enabled: bool,
}

fn default_poll_ms() -> u64 {
    200
}

fn default_organisation() -> String {
    "org1".to_owned()
}

fn default_listen() -> String {
    "127.0.0.1".to_owned()
}

fn default_version() -> String {
    "3.4.11".to_owned()
}

fn default_protocol_version() -> i32 {
    34
}

impl NodeConfig {
    /// Reads and checks a config file; `kind` from the command line must agree with the file.
    pub fn load(path: &Path, kind: NodeKind) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("reading config {}", path.display()),
                e,
            )
        })?;
        let mut config: Self = toml::from_str(&text).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("parsing config {}", path.display()),
                e,
            )
        })?;
        match config.kind {
            Some(file_kind) if file_kind != kind => {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "config {} is for a {file_kind} but --kind {kind} was given; fix one of them",
                        path.display()
                    ),
                ));
            }
            _ => config.kind = Some(kind),
        }
        config.validate()?;
        Ok(config)
    }

    pub fn kind(&self) -> NodeKind {
        self.kind.unwrap_or(NodeKind::Participant)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| {
            Err(Error::new(
                ErrorKind::Config,
                format!("node {}: {what}", self.id),
            ))
        };
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return bad(format!("id {:?} must be 1 or more of [a-z0-9-]", self.id));
        }
        let kind = self.kind();
        if let Some(replica) = &self.replica {
            if kind != NodeKind::Participant {
                return bad(format!("replica is for participants, not a {kind}"));
            }
            if replica.is_empty()
                || !replica
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            {
                return bad(format!(
                    "replica {replica:?} must be 1 or more of [a-z0-9-]"
                ));
            }
        }
        if kind == NodeKind::Sequencer && self.synchronizer.is_none() {
            return bad("a sequencer needs a [synchronizer] table with its name".to_owned());
        }
        if kind != NodeKind::Sequencer && self.synchronizer.is_some() {
            return bad(format!("[synchronizer] is for sequencers, not a {kind}"));
        }
        if kind != NodeKind::Participant && !self.bootstrap_synchronizers.is_empty() {
            return bad(format!(
                "bootstrap_synchronizers is for participants, not a {kind}"
            ));
        }
        if kind == NodeKind::App && (self.participant.is_none() || self.participant_admin.is_none())
        {
            return bad(
                "an app needs `participant = \"http://host:ledger-port\"` and `participant_admin = \"http://host:admin-port\"`"
                    .to_owned(),
            );
        }
        if kind == NodeKind::App && self.poll_interval_ms == 0 {
            return bad("poll_interval_ms must be at least 1".to_owned());
        }
        if kind == NodeKind::Mediator && self.sequencer.is_none() {
            return bad("a mediator needs `sequencer = \"http://host:port\"`".to_owned());
        }
        for (index, bootstrap) in self.bootstrap_synchronizers.iter().enumerate() {
            if bootstrap.alias.is_empty() {
                return bad(format!(
                    "bootstrap_synchronizers[{index}] has an empty alias"
                ));
            }
        }
        if self.workload.rate_per_second < 0.0 || !self.workload.rate_per_second.is_finite() {
            return bad("workload.rate_per_second must be a finite number ≥ 0".to_owned());
        }
        Ok(())
    }

    /// The node's fingerprint: deterministic from organisation and id, in Canton's format
    /// (`1220` multihash prefix + 32 bytes of SHA-256 in hex).
    pub fn fingerprint(&self) -> String {
        fingerprint_of(&format!("{}/{}", self.organisation, self.id))
    }

    /// The process's own id: `<id>.<replica>` for an HA replica, else the node id.
    pub fn instance_id(&self) -> String {
        match &self.replica {
            Some(replica) => format!("{}.{replica}", self.id),
            None => self.id.clone(),
        }
    }

    /// Canton unique identifier `<id>::<fingerprint>`.
    pub fn uid(&self) -> String {
        format!("{}::{}", self.id, self.fingerprint())
    }

    /// Member id (`PAR::…`, `MED::…`, `SEQ::…`), or the bare uid for apps.
    pub fn member(&self) -> String {
        match self.kind().member_code() {
            Some(code) => format!("{code}::{}", self.uid()),
            None => self.uid(),
        }
    }
}

pub(crate) fn fingerprint_of(seed: &str) -> String {
    let digest = Sha256::digest(format!("canton-sim:{seed}").as_bytes());
    format!("1220{}", hex::encode(digest))
}
