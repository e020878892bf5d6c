//! Signing and checking of envelopes and acks, key ids, organisations, the signed network
//! configuration, agent policy and cross-organisation proposals.
//!
//! Pure: no I/O and no clock reads. Every function that depends on time takes `now` (Unix
//! milliseconds) as an argument, so the agent can check with the time it measured and tests can
//! check with any time.
//!
//! The rule everything here keeps: **a signature is verified over a domain prefix and the exact
//! body bytes before those bytes are decoded**, and every refusal carries a
//! [`RejectionReason`].

mod ack;
mod action;
mod approval;
mod check;
mod config;
mod envelope;
#[doc(hidden)]
pub mod fuzzing;
mod keys;
mod policy;
mod proposal;
mod rejection;

pub use ack::{AckExpectation, VerifiedAck, sign_ack, verify_ack};
pub use action::ActionName;
pub use approval::{sign_approval, verify_approval};
pub use check::{
    CheckContext, CheckedCommand, CommandJournal, RevokedCommands, check_command, revoked_up_to,
    sign_command,
};
pub use config::{ConfigError, VerifiedNetworkConfig, sign_network_config, verify_network_config};
pub use envelope::{
    BodyHash, Domain, MAX_ENVELOPE_BYTES, MAX_NETWORK_CONFIG_BYTES, body_hash, decode_envelope,
    decode_envelope_up_to, sign_envelope, signing_input, verify_envelope,
};
pub use keys::{KeyError, KeyPurpose, KeyRing, SigningIdentity, TrustedKey, parse_seed};
pub use policy::{AgentPolicy, PolicyError, PolicyRule};
pub use proposal::{
    ProposalBook, ProposalError, VerifiedProposalMessage, canonicalize_proposal, is_canonical,
    proposal_hash, sign_proposal_message, verify_proposal_message,
};
pub use rejection::{Rejection, RejectionReason};

/// Re-exported so callers build bodies with the same generated types.
pub use proto_sidecar as proto;
