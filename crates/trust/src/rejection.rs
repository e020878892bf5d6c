use proto_sidecar::RejectReason;

/// Why a signed message was refused. One enum for every check in this crate, so agents count
/// rejections by reason and acks carry it on the wire (`RejectReason`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RejectionReason {
    BadSignature,
    UnknownKey,
    WrongNetwork,
    WrongNode,
    WrongOrganisation,
    /// Past `expires_at` (plus the clock-skew bound), or signed by a key past its window.
    Expired,
    /// Issued in the future by more than the clock-skew bound, or signed by a key whose
    /// window has not started.
    NotYetValid,
    StaleEpoch,
    FutureEpoch,
    ReplayWithDifferentBody,
    Revoked,
    NotAllowedByPolicy,
    MissingApproval,
    Malformed,
    Oversized,
    InvalidClaim,
    /// An ack or proposal message that belongs to another run or proposal.
    WrongRun,
}

impl RejectionReason {
    /// Every reason, for metrics and exhaustive tests.
    pub const ALL: [RejectionReason; 17] = [
        Self::BadSignature,
        Self::UnknownKey,
        Self::WrongNetwork,
        Self::WrongNode,
        Self::WrongOrganisation,
        Self::Expired,
        Self::NotYetValid,
        Self::StaleEpoch,
        Self::FutureEpoch,
        Self::ReplayWithDifferentBody,
        Self::Revoked,
        Self::NotAllowedByPolicy,
        Self::MissingApproval,
        Self::Malformed,
        Self::Oversized,
        Self::InvalidClaim,
        Self::WrongRun,
    ];

    /// A stable snake_case name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::WrongNetwork => "wrong_network",
            Self::WrongNode => "wrong_node",
            Self::WrongOrganisation => "wrong_organisation",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::StaleEpoch => "stale_epoch",
            Self::FutureEpoch => "future_epoch",
            Self::ReplayWithDifferentBody => "replay_with_different_body",
            Self::Revoked => "revoked",
            Self::NotAllowedByPolicy => "not_allowed_by_policy",
            Self::MissingApproval => "missing_approval",
            Self::Malformed => "malformed",
            Self::Oversized => "oversized",
            Self::InvalidClaim => "invalid_claim",
            Self::WrongRun => "wrong_run",
        }
    }

    /// The wire value carried in a `Rejected` ack.
    pub fn to_proto(self) -> RejectReason {
        match self {
            Self::BadSignature => RejectReason::BadSignature,
            Self::UnknownKey => RejectReason::UnknownKey,
            Self::WrongNetwork => RejectReason::WrongNetwork,
            Self::WrongNode => RejectReason::WrongNode,
            Self::WrongOrganisation => RejectReason::WrongOrganisation,
            Self::Expired => RejectReason::Expired,
            Self::NotYetValid => RejectReason::NotYetValid,
            Self::StaleEpoch => RejectReason::StaleEpoch,
            Self::FutureEpoch => RejectReason::FutureEpoch,
            Self::ReplayWithDifferentBody => RejectReason::ReplayWithDifferentBody,
            Self::Revoked => RejectReason::Revoked,
            Self::NotAllowedByPolicy => RejectReason::NotAllowedByPolicy,
            Self::MissingApproval => RejectReason::MissingApproval,
            Self::Malformed => RejectReason::Malformed,
            Self::Oversized => RejectReason::Oversized,
            Self::InvalidClaim => RejectReason::InvalidClaim,
            Self::WrongRun => RejectReason::WrongRun,
        }
    }
}

impl std::fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused message: the reason, a detail naming the key/node/command and what to do, and
/// the command id when the body could be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}rejected ({reason}): {detail}", command_prefix(.command_id))]
pub struct Rejection {
    pub reason: RejectionReason,
    pub detail: String,
    pub command_id: Option<String>,
}

fn command_prefix(command_id: &Option<String>) -> String {
    match command_id {
        Some(id) => format!("command {id} "),
        None => String::new(),
    }
}

impl Rejection {
    pub fn new(reason: RejectionReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            command_id: None,
        }
    }

    pub(crate) fn for_command(mut self, command_id: &str) -> Self {
        if !command_id.is_empty() {
            self.command_id = Some(command_id.to_owned());
        }
        self
    }
}
