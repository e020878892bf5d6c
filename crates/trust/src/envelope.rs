use ed25519_dalek::Signature;
use prost::Message;
use proto_sidecar::SignedEnvelope;
use sha2::{Digest, Sha256};

use crate::{KeyPurpose, KeyRing, Rejection, RejectionReason, SigningIdentity, TrustedKey};

/// SHA-256 of a message body.
pub type BodyHash = [u8; 32];

/// The largest envelope accepted, checked before any decoding. Commands are a few hundred
/// bytes; the bound keeps a hostile publisher from making an agent allocate.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;

/// The largest signed network configuration accepted. It lists every key of the network (about
/// 90 bytes per agent), so 64 KiB would stop at some 700 agents; 4 MiB holds over 40,000. It is
/// read from a local file the operator placed, not from the bus.
pub const MAX_NETWORK_CONFIG_BYTES: usize = 4 * 1024 * 1024;

/// The message family a signature is for. Each has its own prefix, so a signature made for one
/// family never verifies as another (an ack body can never pass as a command).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Domain {
    Command,
    Ack,
    Proposal,
    Approval,
    NetworkConfig,
}

impl Domain {
    pub fn prefix(self) -> &'static [u8] {
        match self {
            Self::Command => b"canton-sidecar/v1/command\0",
            Self::Ack => b"canton-sidecar/v1/ack\0",
            Self::Proposal => b"canton-sidecar/v1/proposal\0",
            Self::Approval => b"canton-sidecar/v1/approval\0",
            Self::NetworkConfig => b"canton-sidecar/v1/network-config\0",
        }
    }
}

/// The bytes a signature covers: the domain prefix followed by the exact body.
pub fn signing_input(domain: Domain, body: &[u8]) -> Vec<u8> {
    let prefix = domain.prefix();
    let mut input = Vec::with_capacity(prefix.len() + body.len());
    input.extend_from_slice(prefix);
    input.extend_from_slice(body);
    input
}

pub fn body_hash(body: &[u8]) -> BodyHash {
    Sha256::digest(body).into()
}

/// Signs already-encoded body bytes for `domain`.
pub fn sign_envelope(identity: &SigningIdentity, domain: Domain, body: Vec<u8>) -> SignedEnvelope {
    let signature = identity.sign_raw(&signing_input(domain, &body));
    SignedEnvelope {
        body,
        key_id: identity.key_id().to_owned(),
        signature: signature.to_bytes().to_vec(),
    }
}

/// Decodes the outer envelope of raw bytes from the bus, refusing oversized input first.
pub fn decode_envelope(raw: &[u8]) -> Result<SignedEnvelope, Rejection> {
    decode_envelope_up_to(raw, MAX_ENVELOPE_BYTES)
}

/// [`decode_envelope`] with another size limit.
pub fn decode_envelope_up_to(raw: &[u8], limit: usize) -> Result<SignedEnvelope, Rejection> {
    if raw.len() > limit {
        return Err(Rejection::new(
            RejectionReason::Oversized,
            format!(
                "envelope of {} bytes exceeds the {limit}-byte limit",
                raw.len()
            ),
        ));
    }
    SignedEnvelope::decode(raw).map_err(|error| {
        Rejection::new(
            RejectionReason::Malformed,
            format!("not a signed envelope: {error}"),
        )
    })
}

/// Verifies `envelope` as signed by a key of `purpose` from `keys`, valid at `now`. Returns the
/// key; the body has not been decoded yet and may now be.
pub fn verify_envelope<'k>(
    envelope: &SignedEnvelope,
    domain: Domain,
    keys: &'k KeyRing,
    purpose: KeyPurpose,
    now_unix_ms: i64,
) -> Result<&'k TrustedKey, Rejection> {
    let key = keys.get(&envelope.key_id).ok_or_else(|| {
        Rejection::new(
            RejectionReason::UnknownKey,
            format!(
                "key id {:?} is not in the network configuration; publish the key or check the signer's configuration",
                envelope.key_id
            ),
        )
    })?;
    if key.purpose != purpose {
        return Err(Rejection::new(
            RejectionReason::UnknownKey,
            format!(
                "key {} is a {} key, not a {} key",
                key.key_id,
                key.purpose.as_str(),
                purpose.as_str()
            ),
        ));
    }
    let signature_bytes: [u8; 64] = envelope.signature.as_slice().try_into().map_err(|_| {
        Rejection::new(
            RejectionReason::BadSignature,
            format!(
                "signature by key {} is {} bytes, not 64",
                key.key_id,
                envelope.signature.len()
            ),
        )
    })?;
    let signature = Signature::from_bytes(&signature_bytes);
    key.public
        .verify_strict(&signing_input(domain, &envelope.body), &signature)
        .map_err(|_| {
            Rejection::new(
                RejectionReason::BadSignature,
                format!(
                    "signature does not verify with key {} over the body; the message was altered or signed by another key",
                    key.key_id
                ),
            )
        })?;
    match key.window_contains(now_unix_ms) {
        Ok(()) => Ok(key),
        Err(true) => Err(Rejection::new(
            RejectionReason::NotYetValid,
            format!(
                "key {} is not valid before {} (now {now_unix_ms}); check the clocks or the rotation schedule",
                key.key_id,
                key.not_before_unix_ms.unwrap_or_default()
            ),
        )),
        Err(false) => Err(Rejection::new(
            RejectionReason::Expired,
            format!(
                "key {} expired at {} (now {now_unix_ms}); sign with the rotated key",
                key.key_id,
                key.not_after_unix_ms.unwrap_or_default()
            ),
        )),
    }
}
