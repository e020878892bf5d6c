use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use proto_sidecar::{
    NodeOutcome, Proposal, ProposalMessage, SignedEnvelope, proposal_message::Kind,
};
use sha2::{Digest, Sha256};

use crate::{
    BodyHash, Domain, KeyPurpose, KeyRing, Rejection, RejectionReason, SigningIdentity,
    decode_envelope, verify_envelope,
};

/// Puts a proposal in canonical form: organisations sorted by id, each organisation's nodes
/// sorted and deduplicated, parameters sorted by key. Phases keep their order (it is the
/// execution order).
pub fn canonicalize_proposal(proposal: &mut Proposal) {
    for organisation in &mut proposal.organisations {
        organisation.nodes.sort();
        organisation.nodes.dedup();
    }
    proposal
        .organisations
        .sort_by(|a, b| a.organisation.cmp(&b.organisation));
    proposal.parameters.sort_by(|a, b| a.key.cmp(&b.key));
}

/// Canonical, and free of duplicate organisations, parameter keys and phase names.
pub fn is_canonical(proposal: &Proposal) -> bool {
    let strictly_sorted = |items: Vec<&str>| items.windows(2).all(|pair| pair[0] < pair[1]);
    let phase_names: BTreeSet<&str> = proposal.phases.iter().map(|p| p.name.as_str()).collect();
    strictly_sorted(
        proposal
            .organisations
            .iter()
            .map(|o| o.organisation.as_str())
            .collect(),
    ) && proposal
        .organisations
        .iter()
        .all(|o| strictly_sorted(o.nodes.iter().map(String::as_str).collect()))
        && strictly_sorted(proposal.parameters.iter().map(|p| p.key.as_str()).collect())
        && phase_names.len() == proposal.phases.len()
}

/// The hash every organisation signs in `Accept`, `PhaseDone` and `Abort`: SHA-256 over the
/// proposal domain prefix and the canonical encoding. It covers the runbook, each
/// organisation's nodes, the parameters, the phases and their durations.
///
/// A reader that drops fields it does not know computes another hash and so cannot accept a
/// proposal it did not fully read: agreement fails closed.
pub fn proposal_hash(proposal: &Proposal) -> BodyHash {
    let mut hasher = Sha256::new();
    hasher.update(Domain::Proposal.prefix());
    hasher.update(b"document\0");
    hasher.update(proposal.encode_to_vec());
    hasher.finalize().into()
}

/// Signs a proposal message with the organisation's coordinator key.
pub fn sign_proposal_message(
    coordinator: &SigningIdentity,
    message: &ProposalMessage,
) -> SignedEnvelope {
    crate::sign_envelope(coordinator, Domain::Proposal, message.encode_to_vec())
}

/// A proposal message whose signature and organisation were verified.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedProposalMessage {
    /// The organisation whose coordinator key signed it (and which the message names).
    pub organisation: String,
    pub key_id: String,
    pub message: Kind,
}

/// Verifies a proposal message from another organisation: a coordinator key, the signer's
/// organisation equal to the one the message speaks for, the right network for documents, and
/// documents in canonical form.
pub fn verify_proposal_message(
    raw_envelope: &[u8],
    keys: &KeyRing,
    network: &str,
    now_unix_ms: i64,
) -> Result<VerifiedProposalMessage, Rejection> {
    let envelope = decode_envelope(raw_envelope)?;
    let key = verify_envelope(
        &envelope,
        Domain::Proposal,
        keys,
        KeyPurpose::Coordinator,
        now_unix_ms,
    )?;
    let malformed = |detail: String| Rejection::new(RejectionReason::Malformed, detail);
    let message = ProposalMessage::decode(envelope.body.as_slice())
        .map_err(|error| {
            malformed(format!(
                "proposal message from {} does not decode: {error}",
                key.key_id
            ))
        })?
        .kind
        .ok_or_else(|| {
            malformed(format!(
                "proposal message from {} has no kind this build knows",
                key.key_id
            ))
        })?;
    let claimed_organisation = match &message {
        Kind::Proposal(proposal) => {
            if proposal.network != network {
                return Err(Rejection::new(
                    RejectionReason::WrongNetwork,
                    format!(
                        "proposal {} is for network {:?}",
                        proposal.proposal_id, proposal.network
                    ),
                ));
            }
            if !is_canonical(proposal) {
                return Err(malformed(format!(
                    "proposal {} is not in canonical form (sorted, no duplicates)",
                    proposal.proposal_id
                )));
            }
            &proposal.proposer
        }
        Kind::Accept(accept) => &accept.organisation,
        Kind::PhaseDone(done) => &done.organisation,
        Kind::Abort(abort) => &abort.organisation,
    };
    if claimed_organisation != &key.organisation {
        return Err(Rejection::new(
            RejectionReason::WrongOrganisation,
            format!(
                "message speaks for organisation {claimed_organisation:?} but key {} belongs to {:?}",
                key.key_id, key.organisation
            ),
        ));
    }
    Ok(VerifiedProposalMessage {
        organisation: key.organisation.clone(),
        key_id: key.key_id.clone(),
        message,
    })
}

/// Why a verified message does not fit the proposal it was applied to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposalError {
    #[error("proposal is not in canonical form; canonicalize it before sharing")]
    NotCanonical,
    #[error("message from {organisation} names another proposal hash")]
    HashMismatch { organisation: String },
    #[error("organisation {organisation} is not a party to proposal {proposal_id}")]
    NotAParty {
        organisation: String,
        proposal_id: String,
    },
    #[error("phase {phase:?} is not a phase of proposal {proposal_id}")]
    UnknownPhase { phase: String, proposal_id: String },
    #[error(
        "organisation {organisation} reported phase {phase:?} before accepting or before finishing the previous phase"
    )]
    OutOfOrder { organisation: String, phase: String },
    #[error("a proposal document cannot be applied to a book; open a new book")]
    UnexpectedDocument,
}

/// One organisation's view of a proposal: who accepted, who finished which phase, who aborted.
/// Coordinators advance their own nodes only on what this book shows.
#[derive(Clone, Debug, PartialEq)]
pub struct ProposalBook {
    proposal: Proposal,
    hash: BodyHash,
    accepted: BTreeSet<String>,
    phases_done: BTreeMap<(usize, String), Vec<NodeOutcome>>,
    aborted: Option<(String, String)>,
}

impl ProposalBook {
    pub fn open(proposal: Proposal) -> Result<Self, ProposalError> {
        if !is_canonical(&proposal) {
            return Err(ProposalError::NotCanonical);
        }
        Ok(Self {
            hash: proposal_hash(&proposal),
            proposal,
            accepted: BTreeSet::new(),
            phases_done: BTreeMap::new(),
            aborted: None,
        })
    }

    pub fn proposal(&self) -> &Proposal {
        &self.proposal
    }

    pub fn hash(&self) -> BodyHash {
        self.hash
    }

    fn parties(&self) -> impl Iterator<Item = &str> {
        self.proposal
            .organisations
            .iter()
            .map(|o| o.organisation.as_str())
    }

    fn require_party(&self, organisation: &str) -> Result<(), ProposalError> {
        if self.parties().any(|party| party == organisation) {
            Ok(())
        } else {
            Err(ProposalError::NotAParty {
                organisation: organisation.to_owned(),
                proposal_id: self.proposal.proposal_id.clone(),
            })
        }
    }

    fn require_hash(&self, hash: &[u8], organisation: &str) -> Result<(), ProposalError> {
        if hash == self.hash {
            Ok(())
        } else {
            Err(ProposalError::HashMismatch {
                organisation: organisation.to_owned(),
            })
        }
    }

    /// Records a verified message. Idempotent: recording the same message twice changes
    /// nothing.
    pub fn record(&mut self, verified: &VerifiedProposalMessage) -> Result<(), ProposalError> {
        let organisation = verified.organisation.as_str();
        match &verified.message {
            Kind::Proposal(_) => Err(ProposalError::UnexpectedDocument),
            Kind::Accept(accept) => {
                self.require_hash(&accept.proposal_hash, organisation)?;
                self.require_party(organisation)?;
                self.accepted.insert(organisation.to_owned());
                Ok(())
            }
            Kind::PhaseDone(done) => {
                self.require_hash(&done.proposal_hash, organisation)?;
                self.require_party(organisation)?;
                let index = self
                    .proposal
                    .phases
                    .iter()
                    .position(|phase| phase.name == done.phase)
                    .ok_or_else(|| ProposalError::UnknownPhase {
                        phase: done.phase.clone(),
                        proposal_id: self.proposal.proposal_id.clone(),
                    })?;
                let previous_done = index == 0
                    || self
                        .phases_done
                        .contains_key(&(index - 1, organisation.to_owned()));
                if !self.accepted.contains(organisation) || !previous_done {
                    return Err(ProposalError::OutOfOrder {
                        organisation: organisation.to_owned(),
                        phase: done.phase.clone(),
                    });
                }
                self.phases_done
                    .entry((index, organisation.to_owned()))
                    .or_insert_with(|| done.results.clone());
                Ok(())
            }
            Kind::Abort(abort) => {
                self.require_hash(&abort.proposal_hash, organisation)?;
                self.require_party(organisation)?;
                self.aborted
                    .get_or_insert_with(|| (organisation.to_owned(), abort.reason.clone()));
                Ok(())
            }
        }
    }

    /// Organisations that have not accepted yet.
    pub fn missing_accepts(&self) -> Vec<String> {
        self.parties()
            .filter(|party| !self.accepted.contains(*party))
            .map(str::to_owned)
            .collect()
    }

    pub fn all_accepted(&self) -> bool {
        self.aborted.is_none() && self.missing_accepts().is_empty()
    }

    /// Whether every organisation reported `phase` done.
    pub fn phase_done_by_all(&self, phase: &str) -> bool {
        let Some(index) = self.proposal.phases.iter().position(|p| p.name == phase) else {
            return false;
        };
        self.aborted.is_none()
            && self
                .parties()
                .all(|party| self.phases_done.contains_key(&(index, party.to_owned())))
    }

    /// The results an organisation reported for a phase.
    pub fn phase_results(&self, phase: &str, organisation: &str) -> Option<&[NodeOutcome]> {
        let index = self.proposal.phases.iter().position(|p| p.name == phase)?;
        self.phases_done
            .get(&(index, organisation.to_owned()))
            .map(Vec::as_slice)
    }

    /// The first abort received: (organisation, reason).
    pub fn aborted(&self) -> Option<(&str, &str)> {
        self.aborted
            .as_ref()
            .map(|(organisation, reason)| (organisation.as_str(), reason.as_str()))
    }
}
