use prost::Message;
use proto_sidecar::{Ack, SignedEnvelope};

use crate::{
    BodyHash, Domain, KeyPurpose, KeyRing, Rejection, RejectionReason, SigningIdentity, body_hash,
    decode_envelope, verify_envelope,
};

/// Signs an ack with the agent's own key. Fills `result_hash` from `result`, so the signature
/// covers the command id, node, run, status and the result's hash together.
pub fn sign_ack(agent: &SigningIdentity, mut ack: Ack) -> SignedEnvelope {
    if !ack.result.is_empty() {
        ack.result_hash = body_hash(&ack.result).to_vec();
    }
    crate::sign_envelope(agent, Domain::Ack, ack.encode_to_vec())
}

/// What the coordinator expects of an ack it reads for one of its runs.
pub struct AckExpectation<'a> {
    pub network: &'a str,
    pub run: &'a str,
    /// The node the ack subject names, when known; the ack must be for that node.
    pub node: Option<&'a str>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedAck {
    pub ack: Ack,
    pub key_id: String,
    pub body_hash: BodyHash,
}

/// Verifies an ack: signed by the agent key bound to the acking node, for this network and
/// run (an ack replayed from another run fails here), with a command id of this run and node,
/// and a result matching its hash.
pub fn verify_ack(
    raw_envelope: &[u8],
    keys: &KeyRing,
    expect: &AckExpectation<'_>,
    now_unix_ms: i64,
) -> Result<VerifiedAck, Rejection> {
    let envelope = decode_envelope(raw_envelope)?;
    let key = verify_envelope(&envelope, Domain::Ack, keys, KeyPurpose::Agent, now_unix_ms)?;
    let ack = Ack::decode(envelope.body.as_slice()).map_err(|error| {
        Rejection::new(
            RejectionReason::Malformed,
            format!("ack signed by {} does not decode: {error}", key.key_id),
        )
    })?;
    let id = ack.command_id.clone();
    let reject = |reason, detail: String| Rejection::new(reason, detail).for_command(&id);
    if key.node.as_deref() != Some(ack.node.as_str()) {
        return Err(reject(
            RejectionReason::WrongNode,
            format!(
                "ack for node {} is signed by key {} of node {}",
                ack.node,
                key.key_id,
                key.node.as_deref().unwrap_or("(none)")
            ),
        ));
    }
    if let Some(node) = expect.node
        && node != ack.node
    {
        return Err(reject(
            RejectionReason::WrongNode,
            format!(
                "ack for node {} arrived on the subject of node {node}",
                ack.node
            ),
        ));
    }
    if ack.network != expect.network {
        return Err(reject(
            RejectionReason::WrongNetwork,
            format!(
                "ack is for network {:?}, expected {:?}",
                ack.network, expect.network
            ),
        ));
    }
    let run_prefix = format!("{}/", expect.run);
    let node_suffix = format!("/{}", ack.node);
    if ack.run != expect.run || !ack.command_id.starts_with(&run_prefix) {
        return Err(reject(
            RejectionReason::WrongRun,
            format!(
                "ack belongs to run {:?}, expected run {:?}",
                ack.run, expect.run
            ),
        ));
    }
    // An HA replica (`p1.a`) acks the commands routed to it, whose ids name the logical node.
    let logical_suffix = ack
        .node
        .split_once('.')
        .map(|(logical, _)| format!("/{logical}"));
    if !ack.command_id.ends_with(&node_suffix)
        && !logical_suffix.is_some_and(|suffix| ack.command_id.ends_with(&suffix))
    {
        return Err(reject(
            RejectionReason::Malformed,
            format!("ack command id does not end with its node {:?}", ack.node),
        ));
    }
    if !ack.result.is_empty() && ack.result_hash != body_hash(&ack.result) {
        return Err(reject(
            RejectionReason::Malformed,
            "ack result does not match its signed hash".to_owned(),
        ));
    }
    Ok(VerifiedAck {
        body_hash: body_hash(&envelope.body),
        key_id: key.key_id.clone(),
        ack,
    })
}
