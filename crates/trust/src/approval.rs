use prost::Message;
use proto_sidecar::{Command, OperatorApproval, SignedEnvelope};

use crate::{
    Domain, KeyPurpose, KeyRing, Rejection, RejectionReason, SigningIdentity, verify_envelope,
};

/// Signs an operator's approval with an operator key.
pub fn sign_approval(operator: &SigningIdentity, approval: &OperatorApproval) -> SignedEnvelope {
    crate::sign_envelope(operator, Domain::Approval, approval.encode_to_vec())
}

/// Verifies the approval a command carries: signed by an operator key of the command's
/// organisation, for this network, run and step, naming the command's node (or its logical
/// node), and within its validity (± `max_clock_skew_ms`). Every failure is `MissingApproval`
/// with the cause in the detail, because for the agent an invalid approval is no approval.
pub fn verify_approval(
    command: &Command,
    keys: &KeyRing,
    now_unix_ms: i64,
    max_clock_skew_ms: i64,
) -> Result<OperatorApproval, Rejection> {
    let missing = |detail: String| Rejection::new(RejectionReason::MissingApproval, detail);
    let envelope = command.approval.as_ref().ok_or_else(|| {
        missing(format!(
            "step {} on node {} needs a signed operator approval; approve it with `canton-ops approve`",
            command.step, command.node
        ))
    })?;
    let key = verify_envelope(
        envelope,
        Domain::Approval,
        keys,
        KeyPurpose::Operator,
        now_unix_ms,
    )
    .map_err(|rejection| missing(format!("approval not valid: {rejection}")))?;
    if key.organisation != command.organisation {
        return Err(missing(format!(
            "approval key {} belongs to organisation {}, not {}",
            key.key_id, key.organisation, command.organisation
        )));
    }
    let approval = OperatorApproval::decode(envelope.body.as_slice())
        .map_err(|error| missing(format!("approval body does not decode: {error}")))?;
    if approval.network != command.network
        || approval.organisation != command.organisation
        || approval.run != command.run
        || approval.step != command.step
    {
        return Err(missing(format!(
            "approval is for {}/{} run {} step {}, not {}/{} run {} step {}",
            approval.network,
            approval.organisation,
            approval.run,
            approval.step,
            command.network,
            command.organisation,
            command.run,
            command.step
        )));
    }
    let logical_node = command.node.split('.').next().unwrap_or(&command.node);
    if !approval
        .nodes
        .iter()
        .any(|node| node == &command.node || node == logical_node)
    {
        return Err(missing(format!(
            "approval for step {} does not name node {}; approve again naming every affected node",
            command.step, command.node
        )));
    }
    if approval.approved_at_unix_ms > now_unix_ms.saturating_add(max_clock_skew_ms) {
        return Err(missing(format!(
            "approval is dated {} ms in the future",
            approval.approved_at_unix_ms - now_unix_ms
        )));
    }
    if approval.expires_at_unix_ms != 0
        && now_unix_ms
            > approval
                .expires_at_unix_ms
                .saturating_add(max_clock_skew_ms)
    {
        return Err(missing(format!(
            "approval for step {} expired at {}; approve again",
            command.step, approval.expires_at_unix_ms
        )));
    }
    Ok(approval)
}
