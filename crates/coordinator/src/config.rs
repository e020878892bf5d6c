//! The coordinator's TOML configuration, validated key by key: an error names the key, what
//! it holds and what is expected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sidecar_bus::{AuthSetting, NatsAuth, NatsCredentials, NetworkId, valid_token};

use crate::leadership::LeaseTiming;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{key}: {detail}")]
    Invalid { key: &'static str, detail: String },
}

fn invalid(key: &'static str, detail: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        detail: detail.into(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    network: String,
    organisation: String,
    /// This coordinator's name in the lease (a per-process suffix is added).
    name: Option<String>,
    nats: RawNats,
    signing: RawSigning,
    network_config: RawNetworkConfig,
    api: RawApi,
    #[serde(default)]
    leader: RawLeader,
    #[serde(default)]
    driver: RawDriver,
    #[serde(default)]
    retention: RawRetention,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNats {
    url: String,
    /// JetStream replicas of the streams and buckets this coordinator creates: 3 on a NATS
    /// cluster, so that run state and leases survive a server and a minority cannot write.
    replicas: Option<usize>,
    /// User nkey seed file (`canton-ops gen nats-config` writes one per coordinator).
    nkey_seed_file: Option<PathBuf>,
    /// A `.creds` file (user JWT + seed), for servers in operator mode.
    credentials: Option<PathBuf>,
    /// CA of the servers' certificates; TLS is required when set.
    tls_ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSigning {
    seed_file: PathBuf,
    key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetworkConfig {
    /// The signed `NetworkConfig` envelope.
    file: PathBuf,
    /// Hex of the pinned config public key.
    config_public_key: String,
    config_key_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    listen: String,
    /// Files holding the bearer tokens (one line each).
    operator_token_file: PathBuf,
    read_only_token_file: Option<PathBuf>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeader {
    lease_ttl: Option<String>,
    epsilon: Option<String>,
    /// Allow leases below 15 s (tests and demos only).
    #[serde(default)]
    short_lease_for_tests: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDriver {
    clock_skew: Option<String>,
    fence_timeout: Option<String>,
    tick: Option<String>,
}

/// `[retention]`: absent, nothing is ever deleted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    /// Keep the newest this many complete, verified backup sets.
    keep_sets: Option<i64>,
    /// Keep every complete, verified set younger than this.
    keep_for: Option<String>,
}

fn retention(raw: &RawRetention) -> Result<crate::retention::Retention, ConfigError> {
    let keep_sets = match raw.keep_sets {
        None => None,
        Some(count) if count >= 1 => Some(usize::try_from(count).unwrap_or(usize::MAX)),
        Some(count) => {
            return Err(invalid(
                "retention.keep_sets",
                format!(
                    "{count} must be at least 1 (leave [retention] out to keep every backup set)"
                ),
            ));
        }
    };
    let keep_for = match &raw.keep_for {
        None => None,
        Some(text) => {
            let age = humantime::parse_duration(text).map_err(|e| {
                invalid(
                    "retention.keep_for",
                    format!("{text:?} is not a duration like 30days ({e})"),
                )
            })?;
            if age.is_zero() {
                return Err(invalid(
                    "retention.keep_for",
                    "must be above zero (leave [retention] out to keep every backup set)",
                ));
            }
            Some(age)
        }
    };
    Ok(crate::retention::Retention {
        keep_sets,
        keep_for,
    })
}

/// A validated configuration. Secrets are read from their files.
#[derive(Clone, Debug)]
pub struct Config {
    pub network: NetworkId,
    pub organisation: String,
    pub name: String,
    pub nats_url: String,
    pub nats_replicas: usize,
    /// How the coordinator logs in to NATS and which CA it trusts.
    pub nats_auth: NatsAuth,
    pub signing_seed: [u8; 32],
    pub signing_key_id: String,
    pub network_config: Vec<u8>,
    pub config_public_key: [u8; 32],
    pub config_key_id: String,
    pub api_listen: SocketAddr,
    pub tokens: BTreeMap<String, crate::api::Role>,
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    pub lease: LeaseTiming,
    pub clock_skew: Duration,
    pub fence_timeout: Duration,
    pub tick: Duration,
    /// Opt-in deletion of old backup sets; the default deletes nothing.
    pub retention: crate::retention::Retention,
}

fn duration(
    key: &'static str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| invalid(key, format!("{text:?} is not a duration like 15s ({e})"))),
    }
}

/// The largest file a key may name: the signed network configuration is the biggest (up to
/// `MAX_NETWORK_CONFIG_BYTES`); anything larger is a wrong path (`/dev/zero`, a dump), refused
/// before it is read whole into memory.
pub const MAX_REFERENCED_FILE_BYTES: u64 = sidecar_trust::MAX_NETWORK_CONFIG_BYTES as u64;

fn read(key: &'static str, path: &Path, base: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read;
    let path = resolve(path, base);
    let cannot = |e: std::io::Error| invalid(key, format!("cannot read {}: {e}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(&path)
        .and_then(|file| {
            file.take(MAX_REFERENCED_FILE_BYTES + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_REFERENCED_FILE_BYTES {
        return Err(invalid(
            key,
            format!(
                "{} holds more than {MAX_REFERENCED_FILE_BYTES} bytes; name the file this key expects",
                path.display()
            ),
        ));
    }
    Ok(bytes)
}

fn token(key: &'static str, path: &Path, base: &Path) -> Result<String, ConfigError> {
    let text = String::from_utf8(read(key, path, base)?)
        .map_err(|_| invalid(key, "the token file is not UTF-8"))?;
    let token = text.trim().to_owned();
    if token.len() < 16 {
        return Err(invalid(key, "the token must be at least 16 characters"));
    }
    Ok(token)
}

/// Reads a 32-byte key from a file holding 64 hex digits (or the 32 raw bytes).
pub fn read_key32(key: &'static str, bytes: &[u8]) -> Result<[u8; 32], ConfigError> {
    if let Ok(raw) = <[u8; 32]>::try_from(bytes) {
        return Ok(raw);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| invalid(key, "expected 64 hex digits"))?;
    let decoded = hex::decode(text.trim())
        .map_err(|e| invalid(key, format!("expected 64 hex digits ({e})")))?;
    <[u8; 32]>::try_from(decoded.as_slice())
        .map_err(|_| invalid(key, "expected 32 bytes (64 hex digits)"))
}

fn resolve(path: &Path, base: &Path) -> PathBuf {
    if path.is_relative() {
        base.join(path)
    } else {
        path.to_owned()
    }
}

/// `[nats]` credentials and CA, their files checked now so that a bad one names its key.
fn nats_auth(raw: &RawNats, base: &Path) -> Result<NatsAuth, ConfigError> {
    let credentials = match (&raw.nkey_seed_file, &raw.credentials) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "nats.nkey_seed_file",
                "set one of nats.nkey_seed_file and nats.credentials, not both",
            ));
        }
        (Some(seed), None) => Some(NatsCredentials::NkeySeedFile(resolve(seed, base))),
        (None, Some(creds)) => Some(NatsCredentials::CredsFile(resolve(creds, base))),
        (None, None) => None,
    };
    let auth = NatsAuth {
        credentials,
        tls_ca_file: raw.tls_ca_file.as_deref().map(|path| resolve(path, base)),
    };
    auth.check().map_err(|error| {
        let key = match error.setting {
            AuthSetting::NkeySeedFile => "nats.nkey_seed_file",
            AuthSetting::CredsFile => "nats.credentials",
            AuthSetting::TlsCaFile => "nats.tls_ca_file",
        };
        invalid(key, error.to_string())
    })?;
    Ok(auth)
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML `text` said to come from `path`; files the keys name are read
    /// relative to `path`'s directory.
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::validate(raw, base)
    }

    fn validate(raw: RawConfig, base: &Path) -> Result<Self, ConfigError> {
        let network = NetworkId::new(raw.network.clone())
            .map_err(|e| invalid("network", format!("{:?}: {e}", raw.network)))?;
        if !valid_token(&raw.organisation) {
            return Err(invalid(
                "organisation",
                format!("{:?} must be 1-128 of [A-Za-z0-9_-]", raw.organisation),
            ));
        }
        let name = raw.name.unwrap_or_else(|| "coordinator".to_owned());
        if name.len() > 64 || !valid_token(&name) {
            return Err(invalid(
                "name",
                format!("{name:?} must be 1-64 of [A-Za-z0-9_-]"),
            ));
        }
        let nats_replicas = raw.nats.replicas.unwrap_or(1);
        if !(1..=5).contains(&nats_replicas) {
            return Err(invalid(
                "nats.replicas",
                format!(
                    "{nats_replicas} is not a JetStream replica count (1 to 5; 3 on a cluster)"
                ),
            ));
        }
        if let Err(error) = sidecar_bus::server_addrs(&raw.nats.url) {
            return Err(invalid(
                "nats.url",
                format!("{error}; expected nats://host:port, several separated by commas"),
            ));
        }
        let nats_auth = nats_auth(&raw.nats, base)?;
        let signing_seed = read_key32(
            "signing.seed_file",
            &read("signing.seed_file", &raw.signing.seed_file, base)?,
        )?;
        if raw.signing.key_id.is_empty() {
            return Err(invalid("signing.key_id", "must not be empty"));
        }
        let network_config = read("network_config.file", &raw.network_config.file, base)?;
        let config_public_key = read_key32(
            "network_config.config_public_key",
            raw.network_config.config_public_key.as_bytes(),
        )?;
        let api_listen: SocketAddr = raw.api.listen.parse().map_err(|e| {
            invalid(
                "api.listen",
                format!("{:?} is not host:port ({e})", raw.api.listen),
            )
        })?;
        let mut tokens = BTreeMap::new();
        tokens.insert(
            token(
                "api.operator_token_file",
                &raw.api.operator_token_file,
                base,
            )?,
            crate::api::Role::Operator,
        );
        if let Some(path) = &raw.api.read_only_token_file {
            let read_only = token("api.read_only_token_file", path, base)?;
            if tokens.contains_key(&read_only) {
                return Err(invalid(
                    "api.read_only_token_file",
                    "the read-only token equals the operator token",
                ));
            }
            tokens.insert(read_only, crate::api::Role::ReadOnly);
        }
        let tls = match (&raw.api.tls_cert_file, &raw.api.tls_key_file) {
            (Some(cert), Some(key)) => Some((
                read("api.tls_cert_file", cert, base)?,
                read("api.tls_key_file", key, base)?,
            )),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "api.tls_cert_file",
                    "set both api.tls_cert_file and api.tls_key_file, or neither",
                ));
            }
        };
        let ttl = duration(
            "leader.lease_ttl",
            raw.leader.lease_ttl.as_ref(),
            Duration::from_secs(15),
        )?;
        let epsilon = duration(
            "leader.epsilon",
            raw.leader.epsilon.as_ref(),
            LeaseTiming::DEFAULT_EPSILON,
        )?;
        let lease = if raw.leader.short_lease_for_tests {
            LeaseTiming::short_for_tests(ttl, epsilon)
        } else {
            LeaseTiming::new(ttl, epsilon)
        }
        .map_err(|e| invalid("leader.lease_ttl", e.to_string()))?;
        let retention = retention(&raw.retention)?;
        Ok(Self {
            network,
            organisation: raw.organisation,
            name,
            nats_url: raw.nats.url,
            nats_replicas,
            nats_auth,
            signing_seed,
            signing_key_id: raw.signing.key_id,
            network_config,
            config_public_key,
            config_key_id: raw.network_config.config_key_id,
            api_listen,
            tokens,
            tls,
            lease,
            clock_skew: duration(
                "driver.clock_skew",
                raw.driver.clock_skew.as_ref(),
                Duration::from_secs(2),
            )?,
            fence_timeout: duration(
                "driver.fence_timeout",
                raw.driver.fence_timeout.as_ref(),
                Duration::from_secs(10),
            )?,
            tick: duration(
                "driver.tick",
                raw.driver.tick.as_ref(),
                Duration::from_millis(200),
            )?,
            retention,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_off_by_default_and_bad_values_name_their_key() {
        let off = retention(&RawRetention::default()).unwrap();
        assert!(!off.enabled());
        let on = retention(&RawRetention {
            keep_sets: Some(3),
            keep_for: Some("30days".to_owned()),
        })
        .unwrap();
        assert_eq!(on.keep_sets, Some(3));
        assert_eq!(on.keep_for, Some(Duration::from_secs(30 * 86_400)));
        let zero = retention(&RawRetention {
            keep_sets: Some(0),
            keep_for: None,
        })
        .unwrap_err();
        assert!(
            zero.to_string().starts_with("retention.keep_sets:"),
            "{zero}"
        );
        let garbled = retention(&RawRetention {
            keep_sets: None,
            keep_for: Some("a month".to_owned()),
        })
        .unwrap_err();
        assert!(
            garbled.to_string().starts_with("retention.keep_for:"),
            "{garbled}"
        );
    }

    #[test]
    fn a_key_naming_an_endless_file_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("signing.seed"), hex::encode([9u8; 32])).unwrap();
        let text = r#"
            network = "net1"
            organisation = "org-a"
            [nats]
            url = "nats://127.0.0.1:4222"
            [signing]
            seed_file = "signing.seed"
            key_id = "org-a/coord"
            [network_config]
            file = "/dev/zero"
            config_public_key = "00"
            config_key_id = "net1/root"
            [api]
            listen = "127.0.0.1:0"
            operator_token_file = "operator.token"
        "#;
        let error = Config::from_toml(text, &dir.path().join("coordinator.toml")).unwrap_err();
        assert!(error.to_string().contains("more than"), "{error}");
        assert_eq!(key_of(error), "network_config.file");
    }

    fn raw(seed: Option<&str>, creds: Option<&str>, ca: Option<&str>) -> RawNats {
        RawNats {
            url: "tls://127.0.0.1:4222".to_owned(),
            replicas: None,
            nkey_seed_file: seed.map(PathBuf::from),
            credentials: creds.map(PathBuf::from),
            tls_ca_file: ca.map(PathBuf::from),
        }
    }

    fn key_of(error: ConfigError) -> &'static str {
        match error {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("not a key error: {other}"),
        }
    }

    #[test]
    fn nats_credentials_are_read_relative_to_the_config_and_errors_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        std::fs::write(dir.path().join("coordinator.nk"), format!("{seed}\n")).unwrap();
        let auth = nats_auth(&raw(Some("coordinator.nk"), None, None), dir.path()).unwrap();
        assert_eq!(
            auth.credentials,
            Some(NatsCredentials::NkeySeedFile(
                dir.path().join("coordinator.nk")
            ))
        );
        assert!(!format!("{auth:?}").contains(&seed));

        let account = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::write(dir.path().join("account.nk"), account).unwrap();
        let wrong = nats_auth(&raw(Some("account.nk"), None, None), dir.path()).unwrap_err();
        assert!(wrong.to_string().contains("user seed"), "{wrong}");
        assert_eq!(key_of(wrong), "nats.nkey_seed_file");
        assert_eq!(
            key_of(
                nats_auth(
                    &raw(Some("coordinator.nk"), Some("c.creds"), None),
                    dir.path()
                )
                .unwrap_err()
            ),
            "nats.nkey_seed_file"
        );
        assert_eq!(
            key_of(nats_auth(&raw(None, Some("absent.creds"), None), dir.path()).unwrap_err()),
            "nats.credentials"
        );
        assert_eq!(
            key_of(nats_auth(&raw(None, None, Some("absent.pem")), dir.path()).unwrap_err()),
            "nats.tls_ca_file"
        );
    }
}
