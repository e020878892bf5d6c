use std::collections::BTreeMap;

use prost::Message;
use proto_sidecar::{NetworkConfig, Organisation, SignedEnvelope};

use crate::{
    Domain, KeyError, KeyPurpose, KeyRing, MAX_NETWORK_CONFIG_BYTES, Rejection, SigningIdentity,
    TrustedKey, decode_envelope_up_to, verify_envelope,
};

/// A network configuration that cannot be trusted or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("network configuration not trusted: {0}")]
    Rejected(#[from] Rejection),
    #[error("network configuration is for network {got:?}, expected {expected:?}")]
    WrongNetwork { expected: String, got: String },
    #[error(
        "network configuration serial {got} is below the serial {held} already held; refusing a rollback"
    )]
    StaleSerial { held: u64, got: u64 },
    #[error("network configuration: {0}")]
    Key(#[from] KeyError),
    #[error(
        "network configuration: key {key_id} names organisation {organisation:?}, which the configuration does not list"
    )]
    UnknownOrganisation {
        key_id: String,
        organisation: String,
    },
    #[error("network configuration lists organisation {0:?} twice")]
    DuplicateOrganisation(String),
}

/// A verified configuration: who is in the network and which keys speak for them.
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedNetworkConfig {
    pub network: String,
    pub serial: u64,
    pub organisations: BTreeMap<String, Organisation>,
    /// Every coordinator, agent and operator key of the configuration.
    pub keys: KeyRing,
    /// Who signed it.
    pub signed_by: String,
}

impl VerifiedNetworkConfig {
    /// Keys of `purpose` for `organisation` (several during a rotation overlap).
    pub fn keys_of<'a>(
        &'a self,
        organisation: &'a str,
        purpose: KeyPurpose,
    ) -> impl Iterator<Item = &'a TrustedKey> + 'a {
        self.keys
            .iter()
            .filter(move |key| key.organisation == organisation && key.purpose == purpose)
    }
}

/// Signs a configuration with a config key.
pub fn sign_network_config(
    config_signer: &SigningIdentity,
    config: &NetworkConfig,
) -> SignedEnvelope {
    crate::sign_envelope(config_signer, Domain::NetworkConfig, config.encode_to_vec())
}

/// Verifies a signed configuration against locally pinned config keys (`roots`), refusing a
/// serial below the one already held (rollback).
pub fn verify_network_config(
    raw_envelope: &[u8],
    roots: &KeyRing,
    network: &str,
    held_serial: Option<u64>,
    now_unix_ms: i64,
) -> Result<VerifiedNetworkConfig, ConfigError> {
    let envelope = decode_envelope_up_to(raw_envelope, MAX_NETWORK_CONFIG_BYTES)?;
    let signer = verify_envelope(
        &envelope,
        Domain::NetworkConfig,
        roots,
        KeyPurpose::Config,
        now_unix_ms,
    )?;
    let config = NetworkConfig::decode(envelope.body.as_slice()).map_err(|error| {
        Rejection::new(
            crate::RejectionReason::Malformed,
            format!("network configuration body does not decode: {error}"),
        )
    })?;
    if config.network != network {
        return Err(ConfigError::WrongNetwork {
            expected: network.to_owned(),
            got: config.network,
        });
    }
    if let Some(held) = held_serial
        && config.serial < held
    {
        return Err(ConfigError::StaleSerial {
            held,
            got: config.serial,
        });
    }
    let mut organisations = BTreeMap::new();
    for organisation in &config.organisations {
        if organisations
            .insert(organisation.id.clone(), organisation.clone())
            .is_some()
        {
            return Err(ConfigError::DuplicateOrganisation(organisation.id.clone()));
        }
    }
    let mut keys = KeyRing::new();
    for key in &config.keys {
        let trusted = TrustedKey::from_proto(key)?;
        if !organisations.contains_key(&trusted.organisation) {
            return Err(ConfigError::UnknownOrganisation {
                key_id: trusted.key_id,
                organisation: trusted.organisation,
            });
        }
        keys.insert(trusted)?;
    }
    Ok(VerifiedNetworkConfig {
        network: config.network,
        serial: config.serial,
        organisations,
        keys,
        signed_by: signer.key_id.clone(),
    })
}
