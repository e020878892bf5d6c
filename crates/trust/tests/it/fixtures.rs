//! A small network: organisations `org-a` and `org-b`, coordinator, operator and agent keys.

use std::collections::BTreeMap;

use prost::Message;
use sidecar_trust::proto::{
    Action, Backup, Claim, Command, Disconnect, OperatorApproval, Restore, action::Kind,
};
use sidecar_trust::{
    AgentPolicy, BodyHash, CheckContext, Domain, KeyPurpose, KeyRing, SigningIdentity,
};

pub const NOW: i64 = 1_800_000_000_000;
pub const SKEW: i64 = 2_000;
pub const EPOCH: u64 = 7;

pub fn identity(
    key_id: &str,
    purpose: KeyPurpose,
    organisation: &str,
    seed: u8,
) -> SigningIdentity {
    SigningIdentity::from_seed(key_id, purpose, organisation, [seed; 32])
}

pub fn coordinator_a() -> SigningIdentity {
    identity("org-a/coord-1", KeyPurpose::Coordinator, "org-a", 1)
}
pub fn coordinator_b() -> SigningIdentity {
    identity("org-b/coord-1", KeyPurpose::Coordinator, "org-b", 2)
}
pub fn operator_a() -> SigningIdentity {
    identity("org-a/ops-1", KeyPurpose::Operator, "org-a", 3)
}
pub fn agent_p1() -> SigningIdentity {
    identity("org-a/agent-p1", KeyPurpose::Agent, "org-a", 4).with_node("p1")
}

pub fn keyring() -> KeyRing {
    let mut keys = KeyRing::new();
    for identity in [coordinator_a(), coordinator_b(), operator_a(), agent_p1()] {
        keys.insert(identity.trusted_key(None, None)).unwrap();
    }
    keys
}

pub fn command(action: Kind) -> Command {
    Command {
        network: "net1".into(),
        organisation: "org-a".into(),
        node: "p1".into(),
        run: "r1".into(),
        step: "participants".into(),
        command_id: "r1/participants/p1".into(),
        attempt: 1,
        epoch: EPOCH,
        claim: Some(Claim {
            run: "r1".into(),
            epoch: EPOCH,
            revision: 3,
        }),
        issued_at_unix_ms: NOW - 1_000,
        expires_at_unix_ms: NOW + 60_000,
        traceparent: String::new(),
        action: Some(Action { kind: Some(action) }),
        approval: None,
        replica: "a".into(),
        runbook: String::new(),
    }
}

pub fn backup() -> Kind {
    Kind::Backup(Backup {
        backup_set: "bs1".into(),
        ..Default::default()
    })
}

pub fn disconnect() -> Kind {
    Kind::Disconnect(Disconnect::default())
}

pub fn restore() -> Kind {
    Kind::Restore(Restore {
        backup_set: "bs1".into(),
        ..Default::default()
    })
}

pub fn approval_for(command: &Command) -> OperatorApproval {
    OperatorApproval {
        network: command.network.clone(),
        organisation: command.organisation.clone(),
        run: command.run.clone(),
        step: command.step.clone(),
        nodes: vec![command.node.clone()],
        operator: "alice".into(),
        approved_at_unix_ms: NOW - 5_000,
        expires_at_unix_ms: NOW + 600_000,
        comment: String::new(),
    }
}

pub fn sign(identity: &SigningIdentity, domain: Domain, body: Vec<u8>) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let key = ed25519_dalek::SigningKey::from_bytes(&identity.seed());
    let signature = key.sign(&sidecar_trust::signing_input(domain, &body));
    sidecar_trust::proto::SignedEnvelope {
        body,
        key_id: identity.key_id().to_owned(),
        signature: signature.to_bytes().to_vec(),
    }
    .encode_to_vec()
}

pub fn signed_command(command: &Command) -> Vec<u8> {
    sign(&coordinator_a(), Domain::Command, command.encode_to_vec())
}

/// The agent side of p1 in org-a at the confirmed epoch.
pub struct Agent {
    pub keys: KeyRing,
    pub policy: AgentPolicy,
    pub journal: BTreeMap<(String, u32), BodyHash>,
    /// Command id → highest revoked attempt.
    pub revoked: BTreeMap<String, u32>,
    pub confirmed_epoch: u64,
    pub now: i64,
}

impl Agent {
    pub fn new() -> Self {
        Self {
            keys: keyring(),
            policy: AgentPolicy::own_organisation("org-a"),
            journal: BTreeMap::new(),
            revoked: BTreeMap::new(),
            confirmed_epoch: EPOCH,
            now: NOW,
        }
    }

    pub fn context(&self) -> CheckContext<'_> {
        CheckContext {
            network: "net1",
            organisation: "org-a",
            node: "p1",
            replica: Some("a"),
            confirmed_epoch: self.confirmed_epoch,
            now_unix_ms: self.now,
            max_clock_skew_ms: SKEW,
            keys: &self.keys,
            policy: &self.policy,
            journal: &self.journal,
            revoked: &self.revoked,
        }
    }
}
