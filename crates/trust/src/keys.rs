use std::collections::BTreeMap;

use ed25519_dalek::{SigningKey, VerifyingKey};
use proto_sidecar::PublicKey;

/// What a key may sign. A signature by a key of the wrong purpose is refused even when it is
/// cryptographically valid (an agent key cannot sign commands).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KeyPurpose {
    /// Signs commands and proposal messages for its organisation.
    Coordinator,
    /// Signs one agent's acks.
    Agent,
    /// Signs operator approvals.
    Operator,
    /// Signs the network configuration.
    Config,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Coordinator => "coordinator",
            Self::Agent => "agent",
            Self::Operator => "operator",
            Self::Config => "config",
        }
    }

    fn from_proto(purpose: proto_sidecar::KeyPurpose) -> Option<Self> {
        match purpose {
            proto_sidecar::KeyPurpose::Coordinator => Some(Self::Coordinator),
            proto_sidecar::KeyPurpose::Agent => Some(Self::Agent),
            proto_sidecar::KeyPurpose::Operator => Some(Self::Operator),
            proto_sidecar::KeyPurpose::Config => Some(Self::Config),
            proto_sidecar::KeyPurpose::Unspecified => None,
        }
    }

    fn to_proto(self) -> proto_sidecar::KeyPurpose {
        match self {
            Self::Coordinator => proto_sidecar::KeyPurpose::Coordinator,
            Self::Agent => proto_sidecar::KeyPurpose::Agent,
            Self::Operator => proto_sidecar::KeyPurpose::Operator,
            Self::Config => proto_sidecar::KeyPurpose::Config,
        }
    }
}

/// A key that cannot be used, naming it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key {key_id}: public key must be 32 bytes of ed25519, got {len}")]
    BadLength { key_id: String, len: usize },
    #[error("key {key_id}: not a valid ed25519 point; re-export the public key")]
    BadPoint { key_id: String },
    #[error("key {key_id}: purpose is unspecified; set coordinator, agent, operator or config")]
    NoPurpose { key_id: String },
    #[error("key {key_id}: an empty key id or organisation; give every key both")]
    Unnamed { key_id: String },
    #[error("key {key_id}: an agent key must name its node")]
    AgentWithoutNode { key_id: String },
    #[error("key {key_id}: listed twice; key ids are unique within a network")]
    Duplicate { key_id: String },
    #[error("key {key_id}: not_after ({not_after}) is before not_before ({not_before})")]
    EmptyWindow {
        key_id: String,
        not_before: i64,
        not_after: i64,
    },
}

/// A public key the verifier trusts for one purpose, within a validity window.
///
/// Rotation: publish the new key with a window starting before the old key's `not_after`;
/// during the overlap both verify, so no message in flight is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey {
    pub key_id: String,
    pub purpose: KeyPurpose,
    pub organisation: String,
    /// For agent keys: the node (or `<node>.<replica>`) whose acks the key signs.
    pub node: Option<String>,
    pub public: VerifyingKey,
    pub not_before_unix_ms: Option<i64>,
    pub not_after_unix_ms: Option<i64>,
}

impl TrustedKey {
    /// Whether `now` lies in the key's window: `Err(true)` when the window has not started,
    /// `Err(false)` when it has ended.
    pub fn window_contains(&self, now_unix_ms: i64) -> Result<(), bool> {
        if let Some(not_before) = self.not_before_unix_ms
            && now_unix_ms < not_before
        {
            return Err(true);
        }
        if let Some(not_after) = self.not_after_unix_ms
            && now_unix_ms > not_after
        {
            return Err(false);
        }
        Ok(())
    }

    pub fn from_proto(key: &PublicKey) -> Result<Self, KeyError> {
        let key_id = key.key_id.clone();
        if key.key_id.is_empty() || key.organisation.is_empty() {
            return Err(KeyError::Unnamed { key_id });
        }
        let purpose = KeyPurpose::from_proto(key.purpose()).ok_or_else(|| KeyError::NoPurpose {
            key_id: key_id.clone(),
        })?;
        let bytes: [u8; 32] =
            key.ed25519
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::BadLength {
                    key_id: key_id.clone(),
                    len: key.ed25519.len(),
                })?;
        let public = VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::BadPoint {
            key_id: key_id.clone(),
        })?;
        let node = (!key.node.is_empty()).then(|| key.node.clone());
        if purpose == KeyPurpose::Agent && node.is_none() {
            return Err(KeyError::AgentWithoutNode { key_id });
        }
        let not_before = (key.not_before_unix_ms != 0).then_some(key.not_before_unix_ms);
        let not_after = (key.not_after_unix_ms != 0).then_some(key.not_after_unix_ms);
        if let (Some(not_before), Some(not_after)) = (not_before, not_after)
            && not_after < not_before
        {
            return Err(KeyError::EmptyWindow {
                key_id,
                not_before,
                not_after,
            });
        }
        Ok(Self {
            key_id,
            purpose,
            organisation: key.organisation.clone(),
            node,
            public,
            not_before_unix_ms: not_before,
            not_after_unix_ms: not_after,
        })
    }

    pub fn to_proto(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id.clone(),
            purpose: self.purpose.to_proto().into(),
            organisation: self.organisation.clone(),
            ed25519: self.public.to_bytes().to_vec(),
            not_before_unix_ms: self.not_before_unix_ms.unwrap_or(0),
            not_after_unix_ms: self.not_after_unix_ms.unwrap_or(0),
            node: self.node.clone().unwrap_or_default(),
        }
    }

    /// Hex of the public key bytes, for logs and operator output.
    pub fn fingerprint(&self) -> String {
        hex::encode(self.public.to_bytes())
    }
}

/// Trusted public keys by id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRing {
    keys: BTreeMap<String, TrustedKey>,
}

impl KeyRing {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, key: TrustedKey) -> Result<(), KeyError> {
        if self.keys.contains_key(&key.key_id) {
            return Err(KeyError::Duplicate {
                key_id: key.key_id.clone(),
            });
        }
        self.keys.insert(key.key_id.clone(), key);
        Ok(())
    }

    pub fn get(&self, key_id: &str) -> Option<&TrustedKey> {
        self.keys.get(key_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.values()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl FromIterator<TrustedKey> for KeyRing {
    /// Later duplicates of a key id are ignored; use [`KeyRing::insert`] to detect them.
    fn from_iter<I: IntoIterator<Item = TrustedKey>>(iter: I) -> Self {
        let mut ring = KeyRing::new();
        for key in iter {
            ring.keys.entry(key.key_id.clone()).or_insert(key);
        }
        ring
    }
}

/// A private signing key with its id, purpose and organisation.
#[derive(Clone)]
pub struct SigningIdentity {
    key_id: String,
    purpose: KeyPurpose,
    organisation: String,
    node: Option<String>,
    signing: SigningKey,
}

impl std::fmt::Debug for SigningIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningIdentity")
            .field("key_id", &self.key_id)
            .field("purpose", &self.purpose)
            .field("organisation", &self.organisation)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl SigningIdentity {
    /// From a stored 32-byte ed25519 seed.
    pub fn from_seed(
        key_id: impl Into<String>,
        purpose: KeyPurpose,
        organisation: impl Into<String>,
        seed: [u8; 32],
    ) -> Self {
        Self {
            key_id: key_id.into(),
            purpose,
            organisation: organisation.into(),
            node: None,
            signing: SigningKey::from_bytes(&seed),
        }
    }

    /// A fresh key from the caller's cryptographic random source.
    pub fn generate(
        key_id: impl Into<String>,
        purpose: KeyPurpose,
        organisation: impl Into<String>,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Self {
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        Self::from_seed(key_id, purpose, organisation, seed)
    }

    /// Binds an agent key to the node whose acks it signs.
    pub fn with_node(mut self, node: impl Into<String>) -> Self {
        self.node = Some(node.into());
        self
    }

    /// The seed to store (in a file only its owner can read).
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    pub fn organisation(&self) -> &str {
        &self.organisation
    }

    pub fn purpose(&self) -> KeyPurpose {
        self.purpose
    }

    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The public half, trusted within `[not_before, not_after]` (None = unbounded).
    pub fn trusted_key(
        &self,
        not_before_unix_ms: Option<i64>,
        not_after_unix_ms: Option<i64>,
    ) -> TrustedKey {
        TrustedKey {
            key_id: self.key_id.clone(),
            purpose: self.purpose,
            organisation: self.organisation.clone(),
            node: self.node.clone(),
            public: self.signing.verifying_key(),
            not_before_unix_ms,
            not_after_unix_ms,
        }
    }

    pub(crate) fn sign_raw(&self, message: &[u8]) -> ed25519_dalek::Signature {
        use ed25519_dalek::Signer;
        self.signing.sign(message)
    }
}

/// A stored ed25519 seed: 32 raw bytes, or 64 hex digits (what `canton-ops keys gen` writes),
/// surrounding whitespace ignored. `None` for anything else.
pub fn parse_seed(stored: &[u8]) -> Option<[u8; 32]> {
    if let Ok(raw) = <[u8; 32]>::try_from(stored) {
        return Some(raw);
    }
    let text = std::str::from_utf8(stored).ok()?;
    let bytes = hex::decode(text.trim()).ok()?;
    <[u8; 32]>::try_from(bytes.as_slice()).ok()
}

#[cfg(test)]
mod seed_tests {
    use super::parse_seed;

    #[test]
    fn seeds_are_read_raw_or_as_hex() {
        let raw = [7u8; 32];
        assert_eq!(parse_seed(&raw), Some(raw));
        let text = format!("{}\n", hex::encode(raw));
        assert_eq!(parse_seed(text.as_bytes()), Some(raw));
        assert_eq!(parse_seed(b"abc"), None);
        assert_eq!(parse_seed(&[1u8; 31]), None);
        assert_eq!(parse_seed(hex::encode([1u8; 33]).as_bytes()), None);
    }
}
