//! The agent loads the signed network configuration of a large network: 1,000 agent keys make
//! it larger than the 64 KiB bus envelope limit, which must not apply to this local file.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canton_agent::commands::TrustMaterial;
use canton_agent::config::TrustConfig;
use prost::Message as _;
use proto_sidecar as pb;
use sidecar_bus::{NetworkId, NodeId};
use sidecar_trust::{KeyPurpose, SigningIdentity, sign_network_config};

fn identity(key_id: &str, purpose: KeyPurpose, organisation: &str, n: u64) -> SigningIdentity {
    let mut seed = [3u8; 32];
    seed[..8].copy_from_slice(&n.to_le_bytes());
    SigningIdentity::from_seed(key_id, purpose, organisation, seed)
}

#[test]
fn a_network_configuration_of_a_thousand_agents_loads() {
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let config_key = identity("config-1", KeyPurpose::Config, "network", 0);
    let agents: Vec<SigningIdentity> = (0..1_000u64)
        .map(|n| identity(&format!("p{n}-agent"), KeyPurpose::Agent, "org", n + 1))
        .collect();
    let mut keys = vec![
        identity("org-coordinator", KeyPurpose::Coordinator, "org", 5_000)
            .trusted_key(None, None)
            .to_proto(),
    ];
    for (n, agent) in agents.iter().enumerate() {
        let mut key = agent.trusted_key(None, None).to_proto();
        key.node = format!("p{n}");
        keys.push(key);
    }
    let config = pb::NetworkConfig {
        network: "large".into(),
        serial: 1,
        organisations: vec![pb::Organisation {
            id: "org".into(),
            display_name: "Org".into(),
            nodes: (0..1_000).map(|n| format!("p{n}")).collect(),
        }],
        keys,
        issued_at_unix_ms: now,
    };
    let raw = sign_network_config(&config_key, &config).encode_to_vec();
    assert!(
        raw.len() > sidecar_trust::MAX_ENVELOPE_BYTES,
        "{} bytes",
        raw.len()
    );

    let dir = tempfile::tempdir().unwrap();
    let network_config = dir.path().join("network.cfg");
    std::fs::write(&network_config, &raw).unwrap();
    let seed_file = dir.path().join("p999.seed");
    std::fs::write(&seed_file, hex::encode(agents[999].seed())).unwrap();
    let trust = TrustConfig {
        network_config,
        config_key: config_key.trusted_key(None, None).public.to_bytes(),
        ack_key_seed: seed_file,
        ack_key_id: "p999-agent".into(),
        organisation: "org".into(),
        max_clock_skew: Duration::from_secs(2),
    };
    let material = TrustMaterial::load(
        &trust,
        &NetworkId::new("large").unwrap(),
        &NodeId::new("p999").unwrap(),
        now,
    )
    .unwrap_or_else(|error| panic!("a {}-byte configuration: {error}", raw.len()));
    assert_eq!(material.network.organisations["org"].nodes.len(), 1_000);
    assert_eq!(material.ack_key.key_id(), "p999-agent");
}
