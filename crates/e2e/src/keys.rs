//! Key material of one network, as an operator would provision it: a config key that signs the
//! network configuration, a coordinator and an operator key per organisation, an ack key per
//! agent. Seeds are written in hex (as `canton-ops keys gen` does), readable only by their owner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use prost::Message;
use proto_sidecar::{NetworkConfig, Organisation};
use rand_core::OsRng;
use sidecar_trust::{KeyPurpose, SigningIdentity, sign_network_config};

/// One node as the network configuration lists it.
#[derive(Clone, Debug)]
pub struct NodeEntry {
    pub id: String,
    pub organisation: String,
}

/// Every key of a network and the files they were written to.
pub struct NetworkKeys {
    pub network: String,
    pub config_signer: SigningIdentity,
    pub coordinators: BTreeMap<String, SigningIdentity>,
    pub operators: BTreeMap<String, SigningIdentity>,
    pub agents: BTreeMap<String, SigningIdentity>,
    /// The signed `NetworkConfig` envelope.
    pub network_config_path: PathBuf,
    dir: PathBuf,
}

impl NetworkKeys {
    /// Generates keys for `nodes` and writes them and the signed configuration under `dir`.
    pub fn provision(network: &str, nodes: &[NodeEntry], dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let config_signer =
            SigningIdentity::generate("config-1", KeyPurpose::Config, "network", &mut OsRng);
        let mut organisations: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for node in nodes {
            organisations
                .entry(node.organisation.clone())
                .or_default()
                .push(node.id.clone());
        }
        let per_org = |purpose: KeyPurpose, label: &str| {
            organisations
                .keys()
                .map(|org| {
                    let key_id = format!("{org}-{label}-1");
                    (
                        org.clone(),
                        SigningIdentity::generate(key_id, purpose, org.as_str(), &mut OsRng),
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        let coordinators = per_org(KeyPurpose::Coordinator, "coordinator");
        let operators = per_org(KeyPurpose::Operator, "operator");
        let agents = nodes
            .iter()
            .map(|node| {
                let identity = SigningIdentity::generate(
                    format!("{}-agent-1", node.id),
                    KeyPurpose::Agent,
                    node.organisation.as_str(),
                    &mut OsRng,
                )
                .with_node(node.id.as_str());
                (node.id.clone(), identity)
            })
            .collect::<BTreeMap<_, _>>();

        let keys = coordinators
            .values()
            .chain(operators.values())
            .chain(agents.values())
            .map(|identity| identity.trusted_key(None, None).to_proto())
            .collect();
        let config = NetworkConfig {
            network: network.to_owned(),
            serial: 1,
            organisations: organisations
                .iter()
                .map(|(id, nodes)| Organisation {
                    id: id.clone(),
                    display_name: id.clone(),
                    nodes: nodes.clone(),
                })
                .collect(),
            keys,
            issued_at_unix_ms: crate::now_unix_ms(),
        };
        let network_config_path = dir.join("network-config.bin");
        write_private(
            &network_config_path,
            &sign_network_config(&config_signer, &config).encode_to_vec(),
        )?;
        let provisioned = Self {
            network: network.to_owned(),
            config_signer,
            coordinators,
            operators,
            agents,
            network_config_path,
            dir: dir.to_owned(),
        };
        for identity in provisioned.all() {
            // Hex, as `canton-ops keys gen` writes seeds.
            let seed = format!("{}\n", hex::encode(identity.seed()));
            write_private(&provisioned.seed_path(identity.key_id()), seed.as_bytes())?;
        }
        Ok(provisioned)
    }

    fn all(&self) -> impl Iterator<Item = &SigningIdentity> {
        self.coordinators
            .values()
            .chain(self.operators.values())
            .chain(self.agents.values())
    }

    /// Where the seed of `key_id` is stored.
    pub fn seed_path(&self, key_id: &str) -> PathBuf {
        self.dir.join(format!("{key_id}.seed"))
    }

    /// The config key's public half in hex, as agents and coordinators pin it.
    pub fn config_key_hex(&self) -> String {
        let key = self.config_signer.trusted_key(None, None).to_proto();
        hex::encode(key.ed25519)
    }

    pub fn agent(&self, node: &str) -> anyhow::Result<&SigningIdentity> {
        self.agents
            .get(node)
            .with_context(|| format!("no agent key was provisioned for node {node}"))
    }

    pub fn coordinator(&self, organisation: &str) -> anyhow::Result<&SigningIdentity> {
        self.coordinators.get(organisation).with_context(|| {
            format!("no coordinator key was provisioned for organisation {organisation}")
        })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use sidecar_trust::{KeyRing, verify_network_config};

    use super::*;

    #[test]
    fn provisioned_configuration_verifies_against_the_pinned_config_key() {
        let dir = tempfile::tempdir().expect("temp dir");
        let nodes = [
            NodeEntry {
                id: "participant1".into(),
                organisation: "alpha".into(),
            },
            NodeEntry {
                id: "sequencer1".into(),
                organisation: "operator".into(),
            },
        ];
        let keys = NetworkKeys::provision("demo", &nodes, dir.path()).expect("provision");
        let raw = std::fs::read(&keys.network_config_path).expect("config file");
        let roots = KeyRing::from_iter([keys.config_signer.trusted_key(None, None)]);
        let verified = verify_network_config(&raw, &roots, "demo", None, crate::now_unix_ms())
            .expect("verify");
        assert_eq!(
            verified.organisations.keys().collect::<Vec<_>>(),
            ["alpha", "operator"]
        );
        let agent = verified
            .keys
            .get("participant1-agent-1")
            .expect("agent key listed");
        assert_eq!(agent.node.as_deref(), Some("participant1"));
        assert_eq!(agent.organisation, "alpha");
        let seed = std::fs::read(keys.seed_path("alpha-coordinator-1")).expect("seed file");
        assert_eq!(
            sidecar_trust::parse_seed(&seed),
            Some(keys.coordinator("alpha").expect("key").seed())
        );
        // Another network's agents must not accept it.
        assert!(verify_network_config(&raw, &roots, "other", None, 0).is_err());
    }
}
