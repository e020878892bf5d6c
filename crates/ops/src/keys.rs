//! `canton-ops keys`: ed25519 seeds and public keys as hex files, and the signed network
//! configuration built from a TOML listing organisations and keys.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use prost::Message;
use proto_sidecar as pb;
use serde::Deserialize;
use serde_json::json;
use sidecar_trust::{KeyPurpose, SigningIdentity, TrustedKey, sign_network_config};

use crate::OpsError;
use crate::render::Out;

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generates an ed25519 key: `<name>.seed` (hex, mode 0600) and `<name>.pub` (hex).
    Gen {
        /// File name stem.
        #[arg(long)]
        name: String,
        #[arg(long, default_value = ".")]
        out_dir: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Signs a network configuration described in TOML (see `keys network-config --help`).
    ///
    /// The TOML holds `network`, `serial`, `config_key_id`, `config_seed_file`,
    /// `[[organisations]]` (id, display_name, nodes) and `[[keys]]` (key_id, purpose =
    /// coordinator|agent|operator, organisation, public_key_file or public_key (hex), node for
    /// agent keys, optional not_before_unix_ms / not_after_unix_ms). Paths are relative to the
    /// TOML file.
    NetworkConfig {
        #[arg(long)]
        input: PathBuf,
        /// Where the signed envelope (binary) is written.
        #[arg(long)]
        out: PathBuf,
    },
}

/// The network description `keys network-config` signs (and `gen nats-config` reads).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NetworkToml {
    pub(crate) network: String,
    serial: u64,
    config_key_id: String,
    config_seed_file: PathBuf,
    #[serde(default)]
    pub(crate) organisations: Vec<OrganisationToml>,
    #[serde(default)]
    pub(crate) keys: Vec<KeyToml>,
}

impl NetworkToml {
    pub(crate) fn read(path: &Path) -> Result<Self, OpsError> {
        let text = read_text("--input", path)?;
        toml::from_str(&text).map_err(|e| OpsError::Usage(format!("{}: {e}", path.display())))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OrganisationToml {
    pub(crate) id: String,
    #[serde(default)]
    display_name: String,
    #[serde(default)]
    pub(crate) nodes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyToml {
    key_id: String,
    pub(crate) purpose: String,
    pub(crate) organisation: String,
    public_key_file: Option<PathBuf>,
    public_key: Option<String>,
    #[serde(default)]
    pub(crate) node: String,
    #[serde(default)]
    not_before_unix_ms: i64,
    #[serde(default)]
    not_after_unix_ms: i64,
}

fn hex32(what: &str, text: &str) -> Result<[u8; 32], OpsError> {
    let bytes = hex::decode(text.trim())
        .map_err(|e| OpsError::Usage(format!("{what}: expected 64 hex digits ({e})")))?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| OpsError::Usage(format!("{what}: expected 32 bytes (64 hex digits)")))
}

fn read_text(what: &str, path: &Path) -> Result<String, OpsError> {
    std::fs::read_to_string(path)
        .map_err(|e| OpsError::Usage(format!("{what} {}: {e}", path.display())))
}

pub(crate) fn write_file(
    path: &Path,
    bytes: &[u8],
    private: bool,
    force: bool,
) -> Result<(), OpsError> {
    if path.exists() && !force {
        return Err(OpsError::Refused(format!(
            "{} exists; pass --force to replace it",
            path.display()
        )));
    }
    std::fs::write(path, bytes)
        .map_err(|e| OpsError::Internal(format!("writing {}: {e}", path.display())))?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| OpsError::Internal(format!("chmod {}: {e}", path.display())))?;
    }
    Ok(())
}

pub fn run(command: &KeysCommand, out: &Out) -> Result<u8, OpsError> {
    match command {
        KeysCommand::Gen {
            name,
            out_dir,
            force,
        } => {
            let identity = SigningIdentity::generate(
                name.clone(),
                KeyPurpose::Operator,
                "unused",
                &mut rand_core::OsRng,
            );
            let public = hex::encode(identity.trusted_key(None, None).public.to_bytes());
            let seed_path = out_dir.join(format!("{name}.seed"));
            let pub_path = out_dir.join(format!("{name}.pub"));
            write_file(
                &seed_path,
                format!("{}\n", hex::encode(identity.seed())).as_bytes(),
                true,
                *force,
            )?;
            write_file(&pub_path, format!("{public}\n").as_bytes(), false, *force)?;
            if out.json() {
                out.value(&json!({"seed_file": seed_path, "public_key_file": pub_path, "public_key": public}));
            } else {
                println!(
                    "wrote {} and {} (public key {public})",
                    seed_path.display(),
                    pub_path.display()
                );
            }
        }
        KeysCommand::NetworkConfig { input, out: target } => {
            let spec = NetworkToml::read(input)?;
            let base = input.parent().unwrap_or(Path::new("."));
            let seed = hex32(
                "config_seed_file",
                &read_text("config_seed_file", &base.join(&spec.config_seed_file))?,
            )?;
            let signer = SigningIdentity::from_seed(
                spec.config_key_id.clone(),
                KeyPurpose::Config,
                "network",
                seed,
            );
            let mut keys = Vec::new();
            for key in &spec.keys {
                let public = match (&key.public_key, &key.public_key_file) {
                    (Some(hex), None) => hex32(&format!("key {} public_key", key.key_id), hex)?,
                    (None, Some(path)) => hex32(
                        &format!("key {} public_key_file", key.key_id),
                        &read_text("public_key_file", &base.join(path))?,
                    )?,
                    _ => {
                        return Err(OpsError::Usage(format!(
                            "key {}: set exactly one of public_key and public_key_file",
                            key.key_id
                        )));
                    }
                };
                let purpose = match key.purpose.as_str() {
                    "coordinator" => pb::KeyPurpose::Coordinator,
                    "agent" => pb::KeyPurpose::Agent,
                    "operator" => pb::KeyPurpose::Operator,
                    other => {
                        return Err(OpsError::Usage(format!(
                            "key {}: purpose {other:?} must be coordinator, agent or operator",
                            key.key_id
                        )));
                    }
                };
                let proto = pb::PublicKey {
                    key_id: key.key_id.clone(),
                    purpose: purpose.into(),
                    organisation: key.organisation.clone(),
                    ed25519: public.to_vec(),
                    not_before_unix_ms: key.not_before_unix_ms,
                    not_after_unix_ms: key.not_after_unix_ms,
                    node: key.node.clone(),
                };
                // Refuse here what every verifier would refuse later.
                TrustedKey::from_proto(&proto)
                    .map_err(|e| OpsError::Usage(format!("key {}: {e}", key.key_id)))?;
                if !spec.organisations.iter().any(|o| o.id == key.organisation) {
                    return Err(OpsError::Usage(format!(
                        "key {} names organisation {:?}, which [[organisations]] does not list",
                        key.key_id, key.organisation
                    )));
                }
                keys.push(proto);
            }
            let config = pb::NetworkConfig {
                network: spec.network.clone(),
                serial: spec.serial,
                organisations: spec
                    .organisations
                    .iter()
                    .map(|o| pb::Organisation {
                        id: o.id.clone(),
                        display_name: o.display_name.clone(),
                        nodes: o.nodes.clone(),
                    })
                    .collect(),
                keys,
                issued_at_unix_ms: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0),
            };
            let envelope = sign_network_config(&signer, &config);
            write_file(target, &envelope.encode_to_vec(), false, true)?;
            let public = hex::encode(signer.trusted_key(None, None).public.to_bytes());
            if out.json() {
                out.value(&json!({"network_config": target, "serial": spec.serial, "config_key_id": spec.config_key_id, "config_public_key": public}));
            } else {
                println!(
                    "wrote {} (network {}, serial {}, {} keys); pin config key {} = {public}",
                    target.display(),
                    spec.network,
                    spec.serial,
                    config.keys.len(),
                    spec.config_key_id
                );
            }
        }
    }
    Ok(crate::exit::OK)
}
