use prost::Message;
use sidecar_trust::proto::{Ack, AckStatus};
use sidecar_trust::{AckExpectation, KeyPurpose, RejectionReason, body_hash, sign_ack, verify_ack};

use crate::fixtures::*;

fn done_ack() -> Ack {
    Ack {
        network: "net1".into(),
        command_id: "r1/participants/p1".into(),
        node: "p1".into(),
        run: "r1".into(),
        attempt: 1,
        status: AckStatus::Done.into(),
        result: b"manifest".to_vec(),
        ..Default::default()
    }
}

fn expect(run: &str) -> AckExpectation<'_> {
    AckExpectation {
        network: "net1",
        run,
        node: Some("p1"),
    }
}

#[test]
fn a_signed_ack_verifies_and_carries_the_result_hash() {
    let raw = sign_ack(&agent_p1(), done_ack()).encode_to_vec();
    let verified = verify_ack(&raw, &keyring(), &expect("r1"), NOW).unwrap();
    assert_eq!(verified.ack.status(), AckStatus::Done);
    assert_eq!(verified.ack.result_hash, body_hash(b"manifest").to_vec());
    assert_eq!(verified.key_id, "org-a/agent-p1");
}

#[test]
fn an_ack_replayed_into_another_run_is_refused() {
    let raw = sign_ack(&agent_p1(), done_ack()).encode_to_vec();
    let rejection = verify_ack(&raw, &keyring(), &expect("r2"), NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::WrongRun);
}

#[test]
fn an_agent_cannot_ack_for_another_node() {
    let mut ack = done_ack();
    ack.node = "p2".into();
    ack.command_id = "r1/participants/p2".into();
    let raw = sign_ack(&agent_p1(), ack).encode_to_vec();
    let expectation = AckExpectation {
        network: "net1",
        run: "r1",
        node: None,
    };
    let rejection = verify_ack(&raw, &keyring(), &expectation, NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::WrongNode);
}

#[test]
fn a_coordinator_key_cannot_sign_acks() {
    let raw = sign_ack(&coordinator_a(), done_ack()).encode_to_vec();
    let rejection = verify_ack(&raw, &keyring(), &expect("r1"), NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::UnknownKey);
}

#[test]
fn a_changed_status_breaks_the_signature() {
    let mut envelope = sign_ack(&agent_p1(), done_ack());
    let mut ack = Ack::decode(envelope.body.as_slice()).unwrap();
    ack.status = AckStatus::Failed.into();
    envelope.body = ack.encode_to_vec();
    let rejection =
        verify_ack(&envelope.encode_to_vec(), &keyring(), &expect("r1"), NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::BadSignature);
}

#[test]
fn a_result_that_does_not_match_its_signed_hash_is_malformed() {
    let mut ack = done_ack();
    ack.result_hash = vec![0; 32];
    // Sign the inconsistent body directly, bypassing sign_ack's hashing.
    let raw = sign(&agent_p1(), sidecar_trust::Domain::Ack, ack.encode_to_vec());
    let rejection = verify_ack(&raw, &keyring(), &expect("r1"), NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::Malformed);
}

#[test]
fn an_ack_of_the_wrong_network_is_refused() {
    let mut ack = done_ack();
    ack.network = "net2".into();
    let raw = sign_ack(&agent_p1(), ack).encode_to_vec();
    let rejection = verify_ack(&raw, &keyring(), &expect("r1"), NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::WrongNetwork);
}

#[test]
fn a_replica_acks_a_command_to_its_logical_node_but_not_to_another() {
    let replica = identity("org-a/agent-p1a", KeyPurpose::Agent, "org-a", 9).with_node("p1.a");
    let mut keys = keyring();
    keys.insert(replica.trusted_key(None, None)).unwrap();
    let mut ack = done_ack();
    ack.node = "p1.a".into();
    let expectation = AckExpectation {
        network: "net1",
        run: "r1",
        node: None,
    };
    let raw = sign_ack(&replica, ack.clone()).encode_to_vec();
    assert!(verify_ack(&raw, &keys, &expectation, NOW).is_ok());
    ack.command_id = "r1/participants/p2".into();
    let raw = sign_ack(&replica, ack).encode_to_vec();
    let rejection = verify_ack(&raw, &keys, &expectation, NOW).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::Malformed);
}
