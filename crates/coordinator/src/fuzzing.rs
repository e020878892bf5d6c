//! Harnesses shared by the fuzz targets in `fuzz/` and the corpus replay tests, so nightly
//! fuzzing and the stable tests run the same code: the ack intake (`ack_verify`) and the
//! configuration parser (`config_parse`).

use std::path::Path;

use prost::Message;
use proto_sidecar::{Ack, AckStatus};
use sidecar_bus::{Names, NetworkId, NodeId};
use sidecar_trust::{
    AckExpectation, Domain, KeyPurpose, KeyRing, SigningIdentity, body_hash, sign_envelope,
    verify_ack,
};

use crate::acks::{AckOnBus, AckRefused, read_ack};
use crate::config::{Config, ConfigError};

const NOW: i64 = 1_800_000_000_000;
const NETWORK: &str = "net1";

struct AckFixture {
    names: Names,
    /// Agent keys of a standalone node and of an HA replica.
    agents: [SigningIdentity; 2],
    /// A coordinator key: right organisation, wrong purpose for acks.
    coordinator: SigningIdentity,
    keys: KeyRing,
}

fn ack_fixture() -> AckFixture {
    let agents = [
        SigningIdentity::from_seed("org-a/agent-p1", KeyPurpose::Agent, "org-a", [3; 32])
            .with_node("p1"),
        SigningIdentity::from_seed("org-a/agent-p2.a", KeyPurpose::Agent, "org-a", [5; 32])
            .with_node("p2.a"),
    ];
    let coordinator =
        SigningIdentity::from_seed("org-a/coord", KeyPurpose::Coordinator, "org-a", [1; 32]);
    let keys = agents
        .iter()
        .chain([&coordinator])
        .map(|identity| identity.trusted_key(None, None))
        .collect();
    let network = NetworkId::new(NETWORK).expect("net1 is a network id");
    AckFixture {
        names: Names::new(network),
        agents,
        coordinator,
        keys,
    }
}

/// Input layout: first byte = mode, then the subject up to the first `\n`, then the payload.
/// Even mode: the payload is the envelope as it arrives from the bus. Odd mode: the payload is
/// an `Ack` body the harness signs with each fixture key, so the checks behind the signature
/// are reached. Panics only if an accepted ack breaks what the coordinator relies on.
pub fn check_ack_message(data: &[u8]) {
    let f = ack_fixture();
    for (subject, payload) in messages(&f, data) {
        check_accepted(&f, &subject, &payload);
    }
}

/// What the coordinator's intake makes of each message an input stands for (one in even mode,
/// one per fixture signer in odd mode), with the harness's keys and clock.
pub fn read_input(data: &[u8]) -> Vec<Result<AckOnBus, AckRefused>> {
    let f = ack_fixture();
    messages(&f, data)
        .into_iter()
        .map(|(subject, payload)| read_ack(&f.names, &subject, &payload, &f.keys, NOW))
        .collect()
}

fn messages(f: &AckFixture, data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let Some((&mode, rest)) = data.split_first() else {
        return Vec::new();
    };
    let (subject, payload) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let subject = String::from_utf8_lossy(subject).into_owned();
    if mode % 2 == 0 {
        return vec![(subject, payload.to_vec())];
    }
    f.agents
        .iter()
        .chain([&f.coordinator])
        .map(|identity| {
            let envelope = sign_envelope(identity, Domain::Ack, payload.to_vec());
            (subject.clone(), envelope.encode_to_vec())
        })
        .collect()
}

fn check_accepted(f: &AckFixture, subject: &str, payload: &[u8]) {
    let (run, ack) = match read_ack(&f.names, subject, payload, &f.keys, NOW) {
        Ok(AckOnBus { run, ack }) => (run, ack),
        Err(refused) => {
            assert!(!refused.to_string().is_empty());
            return;
        }
    };
    // The subject is exactly the one the agent publishes for this node and run.
    let node = NodeId::new(ack.node.clone())
        .unwrap_or_else(|_| panic!("accepted an ack of node {:?}, not a node id", ack.node));
    assert_eq!(
        subject,
        f.names.ack(&node, &run),
        "subject and ack disagree"
    );
    assert_eq!(ack.run, run);
    assert_eq!(ack.network, NETWORK);
    assert!(ack.command_id.starts_with(&format!("{run}/")));
    assert!(
        ack.command_id.ends_with(&format!("/{}", node.as_str()))
            || ack.command_id.ends_with(&format!("/{}", node.logical())),
        "command id {:?} of another node than {node}",
        ack.command_id
    );
    assert!(ack.result.is_empty() || ack.result_hash == body_hash(&ack.result));
    // Bound to the node's own key: checking again with the node named gives the same ack.
    let again = verify_ack(
        payload,
        &f.keys,
        &AckExpectation {
            network: NETWORK,
            run: &run,
            node: Some(&ack.node),
        },
        NOW,
    )
    .unwrap_or_else(|rejection| panic!("accepted, then refused naming the node: {rejection}"));
    let signer = f.keys.get(&again.key_id).map(|key| key.node.clone());
    assert_eq!(
        signer,
        Some(Some(ack.node.clone())),
        "signed by another node"
    );
    assert_eq!(again.ack, ack);
    assert_eq!(Ack::decode(ack.encode_to_vec().as_slice()).ok(), Some(ack));
}

/// Seed inputs for `fuzz/corpus/ack_verify`.
pub fn ack_seed_inputs() -> Vec<(String, Vec<u8>)> {
    let f = ack_fixture();
    let ack = |node: &str, command_id: &str| Ack {
        network: NETWORK.into(),
        command_id: command_id.into(),
        node: node.into(),
        run: "r1".into(),
        attempt: 1,
        status: AckStatus::Done.into(),
        result: b"{}".to_vec(),
        result_hash: body_hash(b"{}").to_vec(),
        ..Default::default()
    };
    let standalone = ack("p1", "r1/backup/p1");
    let replica = ack("p2.a", "r1/backup/p2");
    let input = |mode: u8, subject: &str, payload: Vec<u8>| {
        let mut bytes = vec![mode];
        bytes.extend_from_slice(subject.as_bytes());
        bytes.push(b'\n');
        bytes.extend(payload);
        bytes
    };
    let signed = |identity: &SigningIdentity, ack: &Ack| {
        sign_envelope(identity, Domain::Ack, ack.encode_to_vec()).encode_to_vec()
    };
    vec![
        (
            "standalone".into(),
            input(0, "cs.net1.ack.p1.r1", signed(&f.agents[0], &standalone)),
        ),
        (
            "replica".into(),
            input(0, "cs.net1.ack.p2_a.r1", signed(&f.agents[1], &replica)),
        ),
        (
            "other-nodes-subject".into(),
            input(0, "cs.net1.ack.p2_a.r1", signed(&f.agents[0], &standalone)),
        ),
        (
            "coordinator-signed".into(),
            input(0, "cs.net1.ack.p1.r1", signed(&f.coordinator, &standalone)),
        ),
        (
            "body-standalone".into(),
            input(1, "cs.net1.ack.p1.r1", standalone.encode_to_vec()),
        ),
        (
            "body-replica".into(),
            input(1, "cs.net1.ack.p2_a.r1", replica.encode_to_vec()),
        ),
        (
            "body-fence".into(),
            input(
                1,
                "cs.net1.ack.p1.fence-org-a-e4",
                Ack {
                    run: "fence-org-a-e4".into(),
                    command_id: "fence-org-a-e4/fence/p1".into(),
                    ..standalone.clone()
                }
                .encode_to_vec(),
            ),
        ),
        ("no-subject".into(), input(0, "", Vec::new())),
    ]
}

/// Every key the configuration parser may name in an `Invalid` error.
const CONFIG_KEYS: &[&str] = &[
    "network",
    "organisation",
    "name",
    "nats.url",
    "nats.replicas",
    "nats.nkey_seed_file",
    "nats.credentials",
    "nats.tls_ca_file",
    "signing.seed_file",
    "signing.key_id",
    "network_config.file",
    "network_config.config_public_key",
    "api.listen",
    "api.operator_token_file",
    "api.read_only_token_file",
    "api.tls_cert_file",
    "api.tls_key_file",
    "leader.lease_ttl",
    "leader.epsilon",
    "driver.clock_skew",
    "driver.fence_timeout",
    "driver.tick",
    "retention.keep_sets",
    "retention.keep_for",
];

/// Parses `data` (as UTF-8, lossily) as the coordinator's configuration, with the files it
/// names resolved in `fixtures` (`fuzz/fixtures/config`). Panics if an error does not name a
/// known key or the file, or an accepted configuration breaks a documented bound.
pub fn check_config_text(data: &[u8], fixtures: &Path) {
    let text = String::from_utf8_lossy(data);
    let path = fixtures.join("coordinator.toml");
    match Config::from_toml(&text, &path) {
        Ok(config) => {
            assert!((1..=5).contains(&config.nats_replicas));
            assert!(!config.tokens.is_empty());
            assert!(sidecar_bus::valid_token(&config.organisation));
            assert!(config.network_config.len() as u64 <= crate::config::MAX_REFERENCED_FILE_BYTES);
        }
        Err(ConfigError::Invalid { key, detail }) => {
            assert!(
                CONFIG_KEYS.contains(&key),
                "error names no known key: {key}"
            );
            assert!(!detail.is_empty(), "{key}: error without detail");
        }
        Err(error @ ConfigError::Parse { .. }) => {
            assert!(
                error.to_string().starts_with(&path.display().to_string()),
                "{error}"
            );
        }
        Err(ConfigError::Read { .. }) => panic!("from_toml reads no configuration file"),
    }
}

/// Coordinator seed inputs for `fuzz/corpus/config_parse` (the agent adds its own); the files
/// they name are in `fuzz/fixtures/config`.
pub fn config_seed_inputs() -> Vec<(String, Vec<u8>)> {
    let full = r#"network = "net1"
organisation = "org-a"
name = "coordinator-1"

[nats]
url = "nats://127.0.0.1:4222"
replicas = 3

[signing]
seed_file = "signing.seed"
key_id = "org-a/coord"

[network_config]
file = "network-config.bin"
config_public_key = "0000000000000000000000000000000000000000000000000000000000000000"
config_key_id = "net1/root"

[api]
listen = "127.0.0.1:7000"
operator_token_file = "operator.token"
read_only_token_file = "read-only.token"

[leader]
lease_ttl = "15s"
epsilon = "500ms"

[driver]
clock_skew = "2s"
fence_timeout = "10s"
tick = "200ms"

[retention]
keep_sets = 7
keep_for = "30days"
"#;
    let same_tokens = full.replace("read-only.token", "operator.token");
    let short_lease = full.replace("lease_ttl = \"15s\"", "lease_ttl = \"1s\"");
    vec![
        ("coordinator-full".into(), full.as_bytes().to_vec()),
        ("coordinator-same-tokens".into(), same_tokens.into_bytes()),
        ("coordinator-short-lease".into(), short_lease.into_bytes()),
    ]
}
