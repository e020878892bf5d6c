//! Reading one agent ack off the bus: the subject it arrived on, its signature and body, and
//! whether the signing node is the one the subject names. Pure, so the ack consumer and the
//! `ack_verify` fuzz target run the same checks.

use proto_sidecar::Ack;
use sidecar_bus::Names;
use sidecar_trust::{AckExpectation, KeyRing, Rejection};

/// Why an ack read from the bus is dropped.
#[derive(Debug, thiserror::Error)]
pub enum AckRefused {
    #[error("subject {subject:?} is not an ack subject of this network")]
    Subject { subject: String },
    #[error("ack refused: {0}")]
    Rejected(Rejection),
    #[error("ack of node {node} published under subject {subject:?} of another node")]
    OtherNodesSubject { subject: String, node: String },
}

/// An ack that passed every check, with the run its subject names.
#[derive(Debug)]
pub struct AckOnBus {
    pub run: String,
    pub ack: Ack,
}

/// Checks an ack message as the coordinator's consumer receives it: the subject must be
/// `Names::ack(node, run)`, the envelope must verify for that run (`sidecar_trust::verify_ack`)
/// and be signed by the node the subject names (HA replicas flattened as `Names` does).
pub fn read_ack(
    names: &Names,
    subject: &str,
    payload: &[u8],
    keys: &KeyRing,
    now_unix_ms: i64,
) -> Result<AckOnBus, AckRefused> {
    let all_acks = names.acks();
    let (node_token, run) = all_acks
        .strip_suffix('>')
        .and_then(|prefix| subject.strip_prefix(prefix))
        .and_then(|rest| rest.split_once('.'))
        .ok_or_else(|| AckRefused::Subject {
            subject: subject.to_owned(),
        })?;
    let expect = AckExpectation {
        network: names.network().as_str(),
        run,
        node: None,
    };
    let verified = sidecar_trust::verify_ack(payload, keys, &expect, now_unix_ms)
        .map_err(AckRefused::Rejected)?;
    if verified.ack.node.replace('.', "_") != node_token {
        return Err(AckRefused::OtherNodesSubject {
            subject: subject.to_owned(),
            node: verified.ack.node,
        });
    }
    Ok(AckOnBus {
        run: run.to_owned(),
        ack: verified.ack,
    })
}
