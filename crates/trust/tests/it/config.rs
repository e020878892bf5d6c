//! The signed network configuration and key rotation with overlapping windows.

use prost::Message;
use sidecar_trust::proto::{NetworkConfig, Organisation};
use sidecar_trust::{
    ConfigError, KeyPurpose, KeyRing, RejectionReason, check_command, sign_network_config,
    verify_network_config,
};

use crate::fixtures::*;

const DAY: i64 = 86_400_000;

fn root() -> sidecar_trust::SigningIdentity {
    identity("net1/config-root", KeyPurpose::Config, "org-a", 42)
}

fn roots() -> KeyRing {
    [root().trusted_key(None, None)].into_iter().collect()
}

fn rotated_coordinator() -> sidecar_trust::SigningIdentity {
    identity("org-a/coord-2", KeyPurpose::Coordinator, "org-a", 11)
}

/// coord-1 valid until NOW, coord-2 from NOW - 1 day: one day of overlap.
fn config(serial: u64) -> NetworkConfig {
    NetworkConfig {
        network: "net1".into(),
        serial,
        organisations: vec![
            Organisation {
                id: "org-a".into(),
                display_name: "A".into(),
                nodes: vec!["p1".into()],
            },
            Organisation {
                id: "org-b".into(),
                display_name: "B".into(),
                nodes: vec!["p2".into()],
            },
        ],
        keys: vec![
            coordinator_a()
                .trusted_key(Some(NOW - 30 * DAY), Some(NOW))
                .to_proto(),
            rotated_coordinator()
                .trusted_key(Some(NOW - DAY), None)
                .to_proto(),
            coordinator_b().trusted_key(None, None).to_proto(),
            operator_a().trusted_key(None, None).to_proto(),
            agent_p1().trusted_key(None, None).to_proto(),
        ],
        issued_at_unix_ms: NOW - 2 * DAY,
    }
}

fn verified(serial: u64) -> sidecar_trust::VerifiedNetworkConfig {
    let raw = sign_network_config(&root(), &config(serial)).encode_to_vec();
    verify_network_config(&raw, &roots(), "net1", None, NOW).unwrap()
}

#[test]
fn a_signed_configuration_lists_organisations_and_their_keys() {
    let config = verified(3);
    assert_eq!(config.serial, 3);
    assert_eq!(config.organisations.len(), 2);
    let coordinators: Vec<&str> = config
        .keys_of("org-a", KeyPurpose::Coordinator)
        .map(|k| k.key_id.as_str())
        .collect();
    assert_eq!(coordinators, ["org-a/coord-1", "org-a/coord-2"]);
    assert_eq!(config.signed_by, "net1/config-root");
}

#[test]
fn a_configuration_signed_by_an_unpinned_key_is_refused() {
    let raw = sign_network_config(&coordinator_a(), &config(1)).encode_to_vec();
    let error = verify_network_config(&raw, &roots(), "net1", None, NOW).unwrap_err();
    assert!(matches!(error, ConfigError::Rejected(r) if r.reason == RejectionReason::UnknownKey));
}

#[test]
fn a_rollback_to_a_lower_serial_is_refused() {
    let raw = sign_network_config(&root(), &config(4)).encode_to_vec();
    let error = verify_network_config(&raw, &roots(), "net1", Some(5), NOW).unwrap_err();
    assert_eq!(error, ConfigError::StaleSerial { held: 5, got: 4 });
    assert!(verify_network_config(&raw, &roots(), "net1", Some(4), NOW).is_ok());
}

#[test]
fn a_configuration_for_another_network_or_with_a_stray_key_is_refused() {
    let raw = sign_network_config(&root(), &config(1)).encode_to_vec();
    assert!(matches!(
        verify_network_config(&raw, &roots(), "net2", None, NOW),
        Err(ConfigError::WrongNetwork { .. })
    ));
    let mut stray = config(1);
    stray.keys[0].organisation = "org-z".into();
    let raw = sign_network_config(&root(), &stray).encode_to_vec();
    assert!(matches!(
        verify_network_config(&raw, &roots(), "net1", None, NOW),
        Err(ConfigError::UnknownOrganisation { .. })
    ));
    let mut short = config(1);
    short.keys[0].ed25519.truncate(31);
    let raw = sign_network_config(&root(), &short).encode_to_vec();
    assert!(matches!(
        verify_network_config(&raw, &roots(), "net1", None, NOW),
        Err(ConfigError::Key(sidecar_trust::KeyError::BadLength {
            len: 31,
            ..
        }))
    ));
}

#[test]
fn rotation_overlap_accepts_both_keys_then_only_the_new_one() {
    let config = verified(1);
    let mut agent = Agent::new();
    agent.keys = config.keys.clone();
    let mut command = command(backup());
    command.issued_at_unix_ms = NOW - 3 * DAY;
    command.expires_at_unix_ms = NOW + DAY;
    let old = signed_command(&command);
    let new = sidecar_trust::sign_command(&rotated_coordinator(), &command).encode_to_vec();

    agent.now = NOW - DAY / 2;
    assert!(
        check_command(&old, &agent.context()).is_ok(),
        "old key inside its window"
    );
    assert!(
        check_command(&new, &agent.context()).is_ok(),
        "new key inside the overlap"
    );

    agent.now = NOW + 1;
    let rejection = check_command(&old, &agent.context()).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::Expired);
    assert!(
        rejection.detail.contains("org-a/coord-1"),
        "{}",
        rejection.detail
    );
    assert!(check_command(&new, &agent.context()).is_ok());

    agent.now = NOW - 2 * DAY;
    let rejection = check_command(&new, &agent.context()).unwrap_err();
    assert_eq!(rejection.reason, RejectionReason::NotYetValid);
}

/// A network of 1,000 agents needs a configuration above the 64 KiB bus envelope limit; it
/// verifies, and only a configuration above its own 4 MiB limit is refused as oversized.
#[test]
fn a_configuration_of_a_thousand_agents_verifies_and_only_an_oversized_one_is_refused() {
    let mut large = config(5);
    for n in 0..1_000u64 {
        let node = format!("participant{n}");
        large.organisations[0].nodes.push(node.clone());
        let mut seed = [7u8; 32];
        seed[..8].copy_from_slice(&n.to_le_bytes());
        let agent = sidecar_trust::SigningIdentity::from_seed(
            format!("org-a/{node}-agent"),
            KeyPurpose::Agent,
            "org-a",
            seed,
        );
        let mut key = agent.trusted_key(None, None).to_proto();
        key.node = node;
        large.keys.push(key);
    }
    let raw = sign_network_config(&root(), &large).encode_to_vec();
    assert!(
        raw.len() > sidecar_trust::MAX_ENVELOPE_BYTES,
        "{} bytes",
        raw.len()
    );
    let verified = verify_network_config(&raw, &roots(), "net1", None, NOW).unwrap();
    assert_eq!(verified.organisations["org-a"].nodes.len(), 1_001);

    let oversized = vec![0u8; sidecar_trust::MAX_NETWORK_CONFIG_BYTES + 1];
    match verify_network_config(&oversized, &roots(), "net1", None, NOW) {
        Err(ConfigError::Rejected(rejection)) => {
            assert_eq!(rejection.reason, RejectionReason::Oversized, "{rejection}");
        }
        other => panic!("expected an oversized rejection, got {other:?}"),
    }
}
