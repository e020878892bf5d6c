//! One test per rejection reason of `check_command`, plus the accepting paths.

use prost::Message;
use sidecar_trust::proto::{Action, Command, Fence, Revoke, action::Kind};
use sidecar_trust::{
    Domain, KeyPurpose, MAX_ENVELOPE_BYTES, RejectionReason, body_hash, check_command,
    sign_approval,
};

use crate::fixtures::*;

fn rejected(agent: &Agent, raw: &[u8]) -> RejectionReason {
    let rejection = check_command(raw, &agent.context()).unwrap_err();
    // Every rejection explains itself.
    assert!(!rejection.detail.is_empty());
    rejection.reason
}

fn with(change: impl FnOnce(&mut Command)) -> Vec<u8> {
    let mut command = command(backup());
    change(&mut command);
    signed_command(&command)
}

#[test]
fn a_valid_command_passes_and_reports_its_body_hash() {
    let agent = Agent::new();
    let command = command(backup());
    let raw = signed_command(&command);

    let checked = check_command(&raw, &agent.context()).unwrap();

    assert_eq!(checked.command, command);
    assert_eq!(checked.action, sidecar_trust::ActionName::Backup);
    assert_eq!(checked.body_hash, body_hash(&command.encode_to_vec()));
    assert_eq!(checked.key_id, "org-a/coord-1");
    assert!(!checked.redelivery);
}

#[test]
fn the_library_signer_and_an_independent_signer_agree() {
    let command = command(backup());
    let ours = sidecar_trust::sign_command(&coordinator_a(), &command).encode_to_vec();
    assert_eq!(
        ours,
        signed_command(&command),
        "ed25519 signatures are deterministic"
    );
}

#[test]
fn bad_signature() {
    let agent = Agent::new();
    let mut envelope =
        sidecar_trust::proto::SignedEnvelope::decode(signed_command(&command(backup())).as_slice())
            .unwrap();
    envelope.signature[0] ^= 1;
    assert_eq!(
        rejected(&agent, &envelope.encode_to_vec()),
        RejectionReason::BadSignature
    );
}

#[test]
fn a_body_changed_after_signing_is_a_bad_signature() {
    let agent = Agent::new();
    let mut envelope =
        sidecar_trust::proto::SignedEnvelope::decode(signed_command(&command(backup())).as_slice())
            .unwrap();
    let mut altered = Command::decode(envelope.body.as_slice()).unwrap();
    altered.node = "p2".into();
    envelope.body = altered.encode_to_vec();
    assert_eq!(
        rejected(&agent, &envelope.encode_to_vec()),
        RejectionReason::BadSignature
    );
}

#[test]
fn a_signature_from_another_domain_does_not_verify() {
    let agent = Agent::new();
    let raw = sign(
        &coordinator_a(),
        Domain::Ack,
        command(backup()).encode_to_vec(),
    );
    assert_eq!(rejected(&agent, &raw), RejectionReason::BadSignature);
}

#[test]
fn unknown_key() {
    let agent = Agent::new();
    let stranger = identity("org-x/coord", KeyPurpose::Coordinator, "org-a", 99);
    let raw = sign(
        &stranger,
        Domain::Command,
        command(backup()).encode_to_vec(),
    );
    assert_eq!(rejected(&agent, &raw), RejectionReason::UnknownKey);
}

#[test]
fn an_agent_key_cannot_sign_commands() {
    let agent = Agent::new();
    let raw = sign(
        &agent_p1(),
        Domain::Command,
        command(backup()).encode_to_vec(),
    );
    assert_eq!(rejected(&agent, &raw), RejectionReason::UnknownKey);
}

#[test]
fn wrong_network() {
    let agent = Agent::new();
    assert_eq!(
        rejected(&agent, &with(|c| c.network = "net2".into())),
        RejectionReason::WrongNetwork
    );
}

#[test]
fn wrong_node() {
    let agent = Agent::new();
    let raw = with(|c| {
        c.node = "p2".into();
        c.command_id = "r1/participants/p2".into();
    });
    assert_eq!(rejected(&agent, &raw), RejectionReason::WrongNode);
}

#[test]
fn the_agents_own_replica_id_is_accepted_and_another_replica_is_not() {
    let agent = Agent::new();
    let own = with(|c| {
        c.node = "p1.a".into();
        c.command_id = "r1/participants/p1.a".into();
    });
    assert!(check_command(&own, &agent.context()).is_ok());
    let other = with(|c| {
        c.node = "p1.b".into();
        c.command_id = "r1/participants/p1.b".into();
    });
    assert_eq!(rejected(&agent, &other), RejectionReason::WrongNode);
}

#[test]
fn a_command_to_the_logical_ha_node_runs_only_on_the_replica_it_names() {
    let agent = Agent::new();
    let routed_here = signed_command(&command(backup()));
    assert!(check_command(&routed_here, &agent.context()).is_ok());
    let routed_elsewhere = with(|c| c.replica = "b".into());
    let rejection = check_command(&routed_elsewhere, &agent.context()).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::WrongNode);
    assert!(
        rejection.detail.contains("routed to replica \"b\""),
        "{}",
        rejection.detail
    );
    let unrouted = with(|c| c.replica.clear());
    assert_eq!(rejected(&agent, &unrouted), RejectionReason::WrongNode);
}

#[test]
fn a_standalone_agent_refuses_a_command_naming_a_replica() {
    let agent = Agent::new();
    let mut standalone = agent.context();
    standalone.replica = None;
    let unrouted = with(|c| c.replica.clear());
    assert!(check_command(&unrouted, &standalone).is_ok());
    let routed = signed_command(&command(backup()));
    let rejection = check_command(&routed, &standalone).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::WrongNode);
}

#[test]
fn wrong_organisation_when_another_organisations_coordinator_signs() {
    let agent = Agent::new();
    let mut command = command(backup());
    command.organisation = "org-b".into();
    let raw = sign(&coordinator_b(), Domain::Command, command.encode_to_vec());
    assert_eq!(rejected(&agent, &raw), RejectionReason::WrongOrganisation);
}

#[test]
fn wrong_organisation_when_the_body_claims_another_organisation() {
    let agent = Agent::new();
    let raw = sign(
        &coordinator_b(),
        Domain::Command,
        command(backup()).encode_to_vec(),
    );
    assert_eq!(rejected(&agent, &raw), RejectionReason::WrongOrganisation);
}

#[test]
fn expired_past_the_skew_bound_but_not_within_it() {
    let mut agent = Agent::new();
    let raw = signed_command(&command(backup()));
    agent.now = NOW + 60_000 + SKEW;
    assert!(check_command(&raw, &agent.context()).is_ok());
    agent.now = NOW + 60_000 + SKEW + 1;
    assert_eq!(rejected(&agent, &raw), RejectionReason::Expired);
}

#[test]
fn not_yet_valid_beyond_the_skew_bound() {
    let agent = Agent::new();
    let raw = with(|c| {
        c.issued_at_unix_ms = NOW + SKEW + 1;
        c.expires_at_unix_ms = NOW + 90_000;
    });
    assert_eq!(rejected(&agent, &raw), RejectionReason::NotYetValid);
    let within = with(|c| c.issued_at_unix_ms = NOW + SKEW);
    assert!(check_command(&within, &agent.context()).is_ok());
}

#[test]
fn stale_epoch() {
    let agent = Agent::new();
    let raw = with(|c| {
        c.epoch = EPOCH - 1;
        c.claim = None;
    });
    assert_eq!(rejected(&agent, &raw), RejectionReason::StaleEpoch);
}

#[test]
fn future_epoch_without_a_fence() {
    let agent = Agent::new();
    assert_eq!(
        rejected(&agent, &with(|c| c.epoch = EPOCH + 1)),
        RejectionReason::FutureEpoch
    );
}

#[test]
fn a_fence_raises_the_epoch_but_must_name_its_own() {
    let agent = Agent::new();
    let mut fence = command(Kind::Fence(Fence { epoch: EPOCH + 1 }));
    fence.epoch = EPOCH + 1;
    fence.claim = None;
    fence.step = "fence".into();
    fence.run = "fence-8".into();
    fence.command_id = "fence-8/fence/p1".into();
    let checked = check_command(&signed_command(&fence), &agent.context()).unwrap();
    assert_eq!(checked.fence_epoch, Some(EPOCH + 1));

    fence.action = Some(Action {
        kind: Some(Kind::Fence(Fence { epoch: EPOCH + 5 })),
    });
    assert_eq!(
        rejected(&agent, &signed_command(&fence)),
        RejectionReason::Malformed
    );
}

#[test]
fn invalid_claim_of_another_run() {
    let agent = Agent::new();
    let raw = with(|c| c.claim.as_mut().unwrap().run = "r0".into());
    assert_eq!(rejected(&agent, &raw), RejectionReason::InvalidClaim);
}

#[test]
fn replay_with_a_different_body_and_redelivery_with_the_same() {
    let mut agent = Agent::new();
    let first = command(backup());
    agent.journal.insert(
        (first.command_id.clone(), first.attempt),
        body_hash(&first.encode_to_vec()),
    );

    let same = check_command(&signed_command(&first), &agent.context()).unwrap();
    assert!(same.redelivery);

    let mut different = first.clone();
    different.traceparent = "00-changed".into();
    assert_eq!(
        rejected(&agent, &signed_command(&different)),
        RejectionReason::ReplayWithDifferentBody
    );
}

#[test]
fn a_retry_under_the_same_id_is_a_new_attempt_not_a_replay() {
    let mut agent = Agent::new();
    let first = command(backup());
    agent.journal.insert(
        (first.command_id.clone(), first.attempt),
        body_hash(&first.encode_to_vec()),
    );
    let mut retry = first.clone();
    retry.attempt = 2;
    retry.issued_at_unix_ms += 500;

    let checked = check_command(&signed_command(&retry), &agent.context()).unwrap();
    assert!(!checked.redelivery);
}

#[test]
fn revoked() {
    let mut agent = Agent::new();
    agent.revoked.insert("r1/participants/p1".into(), 1);
    assert_eq!(rejected(&agent, &with(|_| {})), RejectionReason::Revoked);
}

#[test]
fn a_revoke_of_attempt_1_lets_attempt_2_pass_and_keeps_attempt_1_out() {
    let mut agent = Agent::new();
    let first = command(backup());
    let first_raw = signed_command(&first);
    assert!(
        !check_command(&first_raw, &agent.context())
            .unwrap()
            .redelivery
    );
    agent.journal.insert(
        (first.command_id.clone(), 1),
        body_hash(&first.encode_to_vec()),
    );
    let revoke = Revoke {
        command_id: first.command_id.clone(),
        up_to_attempt: 1,
    };
    agent.revoked.insert(
        revoke.command_id.clone(),
        sidecar_trust::revoked_up_to(&revoke),
    );

    let retry = with(|c| {
        c.attempt = 2;
        c.issued_at_unix_ms += 500;
    });
    let checked = check_command(&retry, &agent.context()).unwrap();
    assert_eq!(checked.command.attempt, 2);
    assert!(!checked.redelivery);

    let rejection = check_command(&first_raw, &agent.context()).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::Revoked);
    assert!(
        rejection.detail.contains("attempt 1"),
        "{}",
        rejection.detail
    );
}

#[test]
fn a_revoke_without_an_attempt_closes_every_attempt() {
    let mut agent = Agent::new();
    let revoke = Revoke {
        command_id: "r1/participants/p1".into(),
        up_to_attempt: 0,
    };
    agent.revoked.insert(
        revoke.command_id.clone(),
        sidecar_trust::revoked_up_to(&revoke),
    );
    for attempt in [1, 2, 40] {
        assert_eq!(
            rejected(&agent, &with(|c| c.attempt = attempt)),
            RejectionReason::Revoked
        );
    }
}

#[test]
fn a_revoke_command_passes() {
    let agent = Agent::new();
    let revoke = command(Kind::Revoke(Revoke {
        command_id: "r1/participants/p1".into(),
        up_to_attempt: 1,
    }));
    assert!(check_command(&signed_command(&revoke), &agent.context()).is_ok());
}

#[test]
fn not_allowed_by_policy() {
    let mut agent = Agent::new();
    agent.policy.rules[0].actions = vec!["disconnect".into()];
    assert_eq!(
        rejected(&agent, &with(|_| {})),
        RejectionReason::NotAllowedByPolicy
    );
    let allowed = signed_command(&command(disconnect()));
    assert!(check_command(&allowed, &agent.context()).is_ok());
}

#[test]
fn missing_approval_for_a_destructive_action() {
    let agent = Agent::new();
    let restore = command(restore());
    let rejection = check_command(&signed_command(&restore), &agent.context()).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::MissingApproval);
    assert_eq!(rejection.command_id.as_deref(), Some("r1/participants/p1"));
    assert!(
        rejection.detail.contains("participants"),
        "{}",
        rejection.detail
    );
}

#[test]
fn a_signed_approval_naming_the_node_lets_a_destructive_action_pass() {
    let agent = Agent::new();
    let mut restore = command(restore());
    restore.approval = Some(sign_approval(&operator_a(), &approval_for(&restore)));
    let checked = check_command(&signed_command(&restore), &agent.context()).unwrap();
    assert_eq!(checked.approval.unwrap().operator, "alice");
}

#[test]
fn approvals_that_do_not_fit_count_as_missing() {
    let agent = Agent::new();
    let base = command(restore());
    type Change = Box<dyn Fn(&mut sidecar_trust::proto::OperatorApproval)>;
    let variants: Vec<(&str, Change)> = vec![
        ("other node", Box::new(|a| a.nodes = vec!["p9".into()])),
        ("other step", Box::new(|a| a.step = "sequencers".into())),
        ("other run", Box::new(|a| a.run = "r0".into())),
        (
            "expired",
            Box::new(|a| a.expires_at_unix_ms = NOW - SKEW - 1),
        ),
        (
            "future",
            Box::new(|a| a.approved_at_unix_ms = NOW + SKEW + 1),
        ),
    ];
    for (name, change) in variants {
        let mut approval = approval_for(&base);
        change(&mut approval);
        let mut restore = base.clone();
        restore.approval = Some(sign_approval(&operator_a(), &approval));
        assert_eq!(
            rejected(&agent, &signed_command(&restore)),
            RejectionReason::MissingApproval,
            "{name}"
        );
    }
    // Signed by a coordinator key instead of an operator key.
    let mut restore = base.clone();
    restore.approval = Some(sign_approval(&coordinator_a(), &approval_for(&base)));
    assert_eq!(
        rejected(&agent, &signed_command(&restore)),
        RejectionReason::MissingApproval
    );
}

#[test]
fn malformed_envelope_body_and_action() {
    let agent = Agent::new();
    assert_eq!(
        rejected(&agent, &[0xff, 0xff, 0xff]),
        RejectionReason::Malformed
    );
    let garbage_body = sign(&coordinator_a(), Domain::Command, vec![0x0a, 0xff]);
    assert_eq!(rejected(&agent, &garbage_body), RejectionReason::Malformed);
    let no_action = with(|c| c.action = None);
    assert_eq!(rejected(&agent, &no_action), RejectionReason::Malformed);
    let wrong_id = with(|c| c.command_id = "r1/other/p1".into());
    assert_eq!(rejected(&agent, &wrong_id), RejectionReason::Malformed);
    let backwards = with(|c| c.expires_at_unix_ms = c.issued_at_unix_ms);
    assert_eq!(rejected(&agent, &backwards), RejectionReason::Malformed);
}

#[test]
fn oversized_is_refused_before_decoding() {
    let agent = Agent::new();
    let raw = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    assert_eq!(rejected(&agent, &raw), RejectionReason::Oversized);
}

#[test]
fn every_command_reason_maps_to_a_distinct_wire_value() {
    let mut seen = std::collections::BTreeSet::new();
    for reason in RejectionReason::ALL {
        let wire = reason.to_proto();
        assert_ne!(wire, sidecar_trust::proto::RejectReason::Unspecified);
        assert!(seen.insert(wire as i32), "{reason} shares a wire value");
    }
}
