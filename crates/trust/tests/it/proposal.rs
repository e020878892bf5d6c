//! Cross-organisation proposals: canonical hash, signed Accept / PhaseDone / Abort.

use prost::Message;
use sidecar_trust::proto::{
    Abort, Accept, OrganisationNodes, Parameter, Phase, PhaseDone, Proposal, ProposalMessage,
    proposal_message::Kind,
};
use sidecar_trust::{
    ProposalBook, ProposalError, RejectionReason, canonicalize_proposal, is_canonical,
    proposal_hash, sign_proposal_message, verify_proposal_message,
};

use crate::fixtures::*;

fn document() -> Proposal {
    let mut proposal = Proposal {
        network: "net1".into(),
        proposal_id: "dr-2026-11".into(),
        runbook: "dr-timestamp".into(),
        organisations: vec![
            OrganisationNodes {
                organisation: "org-b".into(),
                nodes: vec!["p2".into()],
            },
            OrganisationNodes {
                organisation: "org-a".into(),
                nodes: vec!["p1b".into(), "p1".into()],
            },
        ],
        parameters: vec![
            Parameter {
                key: "margin".into(),
                value: "15m".into(),
            },
            Parameter {
                key: "from".into(),
                value: "x".into(),
            },
        ],
        phases: vec![
            Phase {
                name: "disconnect".into(),
                duration_ms: 60_000,
            },
            Phase {
                name: "reconnect".into(),
                duration_ms: 60_000,
            },
        ],
        proposer: "org-a".into(),
        created_at_unix_ms: NOW,
    };
    canonicalize_proposal(&mut proposal);
    proposal
}

fn signed(identity: &sidecar_trust::SigningIdentity, kind: Kind) -> Vec<u8> {
    sign_proposal_message(identity, &ProposalMessage { kind: Some(kind) }).encode_to_vec()
}

fn verified(
    identity: &sidecar_trust::SigningIdentity,
    kind: Kind,
) -> sidecar_trust::VerifiedProposalMessage {
    verify_proposal_message(&signed(identity, kind), &keyring(), "net1", NOW).unwrap()
}

#[test]
fn canonical_form_is_order_independent_and_the_hash_covers_every_field() {
    let canonical = document();
    assert!(is_canonical(&canonical));
    let mut reordered = canonical.clone();
    reordered.organisations.reverse();
    reordered.parameters.reverse();
    assert!(!is_canonical(&reordered));
    canonicalize_proposal(&mut reordered);
    assert_eq!(proposal_hash(&reordered), proposal_hash(&canonical));

    type Change = Box<dyn Fn(&mut Proposal)>;
    let changes: Vec<Change> = vec![
        Box::new(|p| p.runbook = "network-dr".into()),
        Box::new(|p| p.organisations[0].nodes.push("p9".into())),
        Box::new(|p| p.parameters[0].value = "1m".into()),
        Box::new(|p| p.phases[0].duration_ms += 1),
        Box::new(|p| p.phases.swap(0, 1)),
    ];
    for change in changes {
        let mut changed = canonical.clone();
        change(&mut changed);
        assert_ne!(proposal_hash(&changed), proposal_hash(&canonical));
    }
}

#[test]
fn accept_and_phase_done_advance_the_book_in_order() {
    let proposal = document();
    let hash = proposal_hash(&proposal).to_vec();
    let opened = verified(&coordinator_a(), Kind::Proposal(proposal.clone()));
    let Kind::Proposal(received) = opened.message else {
        panic!("a document")
    };
    let mut book = ProposalBook::open(received).unwrap();
    assert_eq!(book.missing_accepts(), ["org-a", "org-b"]);

    let phase_done = |org: &str| {
        Kind::PhaseDone(PhaseDone {
            proposal_hash: hash.clone(),
            phase: "disconnect".into(),
            organisation: org.into(),
            results: vec![],
            at_unix_ms: NOW,
        })
    };
    // Phase reports before accepting are out of order.
    assert!(matches!(
        book.record(&verified(&coordinator_b(), phase_done("org-b"))),
        Err(ProposalError::OutOfOrder { .. })
    ));
    for (identity, org) in [(coordinator_a(), "org-a"), (coordinator_b(), "org-b")] {
        let accept = Kind::Accept(Accept {
            proposal_hash: hash.clone(),
            organisation: org.into(),
            at_unix_ms: NOW,
        });
        book.record(&verified(&identity, accept)).unwrap();
    }
    assert!(book.all_accepted());
    book.record(&verified(&coordinator_a(), phase_done("org-a")))
        .unwrap();
    assert!(!book.phase_done_by_all("disconnect"));
    book.record(&verified(&coordinator_b(), phase_done("org-b")))
        .unwrap();
    assert!(book.phase_done_by_all("disconnect"));
    assert!(!book.phase_done_by_all("reconnect"));

    book.record(&verified(
        &coordinator_b(),
        Kind::Abort(Abort {
            proposal_hash: hash.clone(),
            organisation: "org-b".into(),
            reason: "operator said stop".into(),
            at_unix_ms: NOW,
        }),
    ))
    .unwrap();
    assert_eq!(book.aborted(), Some(("org-b", "operator said stop")));
    assert!(!book.all_accepted());
}

#[test]
fn an_accept_of_another_hash_is_refused() {
    let mut book = ProposalBook::open(document()).unwrap();
    let accept = Kind::Accept(Accept {
        proposal_hash: vec![0; 32],
        organisation: "org-b".into(),
        at_unix_ms: NOW,
    });
    assert!(matches!(
        book.record(&verified(&coordinator_b(), accept)),
        Err(ProposalError::HashMismatch { .. })
    ));
}

#[test]
fn an_organisation_cannot_speak_for_another() {
    let accept = Kind::Accept(Accept {
        proposal_hash: proposal_hash(&document()).to_vec(),
        organisation: "org-a".into(),
        at_unix_ms: NOW,
    });
    let raw = signed(&coordinator_b(), accept);
    let rejection = verify_proposal_message(&raw, &keyring(), "net1", NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::WrongOrganisation);
}

#[test]
fn a_non_canonical_document_is_refused() {
    let mut proposal = document();
    proposal.organisations.reverse();
    let raw = signed(&coordinator_a(), Kind::Proposal(proposal.clone()));
    let rejection = verify_proposal_message(&raw, &keyring(), "net1", NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::Malformed);
    assert_eq!(
        ProposalBook::open(proposal),
        Err(ProposalError::NotCanonical)
    );
}
