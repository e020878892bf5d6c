//! The envelope decode-and-verify harness shared by the fuzz target (`fuzz/`) and the corpus
//! replay test, so both exercise the same code on stable and nightly.
//!
//! Input layout: the first byte picks the mode. Even: the rest is a raw envelope as it would
//! arrive from the bus (exercises size, decoding and signature checks). Odd: the rest is a body
//! that the harness signs with a fixture key of the right purpose, so the fuzzer also reaches
//! every check behind the signature.

use prost::Message;
use proto_sidecar::{
    Ack, AckStatus, Action, Backup, Claim, Command, NetworkConfig, Organisation, ProposalMessage,
    Restore, action::Kind, proposal_message,
};

use crate::{
    AckExpectation, AgentPolicy, BodyHash, CheckContext, Domain, KeyPurpose, KeyRing,
    SigningIdentity, body_hash, check_command, sign_approval, sign_envelope, verify_ack,
    verify_envelope, verify_network_config, verify_proposal_message,
};

const NOW: i64 = 1_800_000_000_000;

struct Fixture {
    coordinator: SigningIdentity,
    operator: SigningIdentity,
    agent: SigningIdentity,
    root: SigningIdentity,
    keys: KeyRing,
    roots: KeyRing,
    policy: AgentPolicy,
    journal: std::collections::BTreeMap<(String, u32), BodyHash>,
    revoked: std::collections::BTreeMap<String, u32>,
}

fn fixture() -> Fixture {
    let coordinator =
        SigningIdentity::from_seed("org-a/coord", KeyPurpose::Coordinator, "org-a", [1; 32]);
    let operator = SigningIdentity::from_seed("org-a/ops", KeyPurpose::Operator, "org-a", [2; 32]);
    let agent = SigningIdentity::from_seed("org-a/agent-p1", KeyPurpose::Agent, "org-a", [3; 32])
        .with_node("p1");
    let root = SigningIdentity::from_seed("net1/root", KeyPurpose::Config, "org-a", [4; 32]);
    let keys = [&coordinator, &operator, &agent]
        .into_iter()
        .map(|identity| identity.trusted_key(None, None))
        .collect();
    let roots = [root.trusted_key(None, None)].into_iter().collect();
    let mut journal = std::collections::BTreeMap::new();
    journal.insert(("r1/s/p1".to_owned(), 1), [7; 32]);
    let mut revoked = std::collections::BTreeMap::new();
    revoked.insert("r1/revoked/p1".to_owned(), 2);
    Fixture {
        coordinator,
        operator,
        agent,
        root,
        keys,
        roots,
        policy: AgentPolicy::own_organisation("org-a"),
        journal,
        revoked,
    }
}

/// Runs every verifier on `data`; panics only if an invariant breaks (an accepted message whose
/// signature does not verify, or a body hash that is not the hash of the body).
pub fn check_envelope_bytes(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let f = fixture();
    if mode % 2 == 0 {
        run_verifiers(&f, rest);
    } else {
        for (identity, domain) in [
            (&f.coordinator, Domain::Command),
            (&f.agent, Domain::Ack),
            (&f.coordinator, Domain::Proposal),
            (&f.root, Domain::NetworkConfig),
        ] {
            let envelope = sign_envelope(identity, domain, rest.to_vec());
            run_verifiers(&f, &envelope.encode_to_vec());
        }
    }
}

fn run_verifiers(f: &Fixture, raw: &[u8]) {
    let context = CheckContext {
        network: "net1",
        organisation: "org-a",
        node: "p1",
        replica: Some("a"),
        confirmed_epoch: 3,
        now_unix_ms: NOW,
        max_clock_skew_ms: 2_000,
        keys: &f.keys,
        policy: &f.policy,
        journal: &f.journal,
        revoked: &f.revoked,
    };
    if let Ok(checked) = check_command(raw, &context) {
        let envelope = crate::decode_envelope(raw).unwrap_or_default();
        assert!(
            verify_envelope(
                &envelope,
                Domain::Command,
                &f.keys,
                KeyPurpose::Coordinator,
                NOW
            )
            .is_ok(),
            "an accepted command must carry a valid signature"
        );
        assert_eq!(checked.body_hash, body_hash(&envelope.body));
        assert_eq!(checked.command.network, "net1");
        assert!(
            f.revoked
                .get(&checked.command.command_id)
                .is_none_or(|up_to| checked.command.attempt > *up_to)
        );
    }
    let expectation = AckExpectation {
        network: "net1",
        run: "r1",
        node: None,
    };
    if let Ok(verified) = verify_ack(raw, &f.keys, &expectation, NOW) {
        assert_eq!(verified.ack.run, "r1");
        assert_eq!(verified.ack.node, "p1");
    }
    let _ = verify_proposal_message(raw, &f.keys, "net1", NOW);
    let _ = verify_network_config(raw, &f.roots, "net1", Some(1), NOW);
}

/// Seed inputs for the corpus: valid messages of every family, in both modes.
pub fn seed_inputs() -> Vec<(String, Vec<u8>)> {
    let f = fixture();
    let command = Command {
        network: "net1".into(),
        organisation: "org-a".into(),
        node: "p1".into(),
        run: "r1".into(),
        step: "s".into(),
        command_id: "r1/s/p1".into(),
        attempt: 1,
        epoch: 3,
        claim: Some(Claim {
            run: "r1".into(),
            epoch: 3,
            revision: 1,
        }),
        issued_at_unix_ms: NOW - 1_000,
        expires_at_unix_ms: NOW + 60_000,
        traceparent: String::new(),
        action: Some(Action {
            kind: Some(Kind::Backup(Backup {
                backup_set: "bs".into(),
                ..Default::default()
            })),
        }),
        approval: None,
        replica: String::new(),
        runbook: String::new(),
    };
    let mut restore = Command {
        step: "restore".into(),
        command_id: "r1/restore/p1".into(),
        action: Some(Action {
            kind: Some(Kind::Restore(Restore::default())),
        }),
        ..command.clone()
    };
    let approval = proto_sidecar::OperatorApproval {
        network: "net1".into(),
        organisation: "org-a".into(),
        run: "r1".into(),
        step: "restore".into(),
        nodes: vec!["p1".into()],
        operator: "alice".into(),
        approved_at_unix_ms: NOW - 1,
        expires_at_unix_ms: NOW + 1_000,
        comment: String::new(),
    };
    restore.approval = Some(sign_approval(&f.operator, &approval));
    let ack = Ack {
        network: "net1".into(),
        command_id: "r1/s/p1".into(),
        node: "p1".into(),
        run: "r1".into(),
        status: AckStatus::Done.into(),
        result: b"ok".to_vec(),
        result_hash: body_hash(b"ok").to_vec(),
        ..Default::default()
    };
    let proposal = ProposalMessage {
        kind: Some(proposal_message::Kind::Accept(proto_sidecar::Accept {
            proposal_hash: vec![1; 32],
            organisation: "org-a".into(),
            at_unix_ms: NOW,
        })),
    };
    let config = NetworkConfig {
        network: "net1".into(),
        serial: 2,
        organisations: vec![Organisation {
            id: "org-a".into(),
            ..Default::default()
        }],
        keys: vec![f.coordinator.trusted_key(None, None).to_proto()],
        issued_at_unix_ms: NOW,
    };
    let signed = |identity: &SigningIdentity, domain: Domain, body: Vec<u8>| {
        let mut input = vec![0u8];
        input.extend(sign_envelope(identity, domain, body).encode_to_vec());
        input
    };
    let body_mode = |body: Vec<u8>| {
        let mut input = vec![1u8];
        input.extend(body);
        input
    };
    vec![
        (
            "command".into(),
            signed(&f.coordinator, Domain::Command, command.encode_to_vec()),
        ),
        (
            "restore-approved".into(),
            signed(&f.coordinator, Domain::Command, restore.encode_to_vec()),
        ),
        (
            "ack".into(),
            signed(&f.agent, Domain::Ack, ack.encode_to_vec()),
        ),
        (
            "proposal-accept".into(),
            signed(&f.coordinator, Domain::Proposal, proposal.encode_to_vec()),
        ),
        (
            "network-config".into(),
            signed(&f.root, Domain::NetworkConfig, config.encode_to_vec()),
        ),
        ("body-command".into(), body_mode(command.encode_to_vec())),
        ("body-restore".into(), body_mode(restore.encode_to_vec())),
        ("body-ack".into(), body_mode(ack.encode_to_vec())),
        ("body-config".into(), body_mode(config.encode_to_vec())),
        ("empty-envelope".into(), vec![0]),
    ]
}
