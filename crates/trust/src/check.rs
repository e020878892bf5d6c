use std::collections::{BTreeMap, HashMap};

use prost::Message;
use proto_sidecar::{Command, OperatorApproval, SignedEnvelope, action::Kind};

use crate::{
    ActionName, AgentPolicy, BodyHash, Domain, KeyPurpose, KeyRing, Rejection, RejectionReason,
    SigningIdentity, body_hash, decode_envelope, verify_approval, verify_envelope,
};

/// The agent's journal as the check needs it: the body hash recorded for one attempt of a
/// command. Keyed by attempt because a retry keeps the command id, raises the attempt and
/// carries a new body (its own attempt, issue and expiry times).
pub trait CommandJournal {
    fn recorded_body_hash(&self, command_id: &str, attempt: u32) -> Option<BodyHash>;
}

/// Attempts closed by a `Revoke`: attempt `a` of `command_id` is revoked iff a revoke with
/// `up_to_attempt >= a` was recorded, so the retry that follows a revoke passes while a late
/// delivery of a revoked attempt does not.
pub trait RevokedCommands {
    fn is_revoked(&self, command_id: &str, attempt: u32) -> bool;
}

/// The `up_to_attempt` a `Revoke` closes. A revoke from a writer that predates the field
/// carries 0 and meant "this command id", so it closes every attempt.
pub fn revoked_up_to(revoke: &proto_sidecar::Revoke) -> u32 {
    if revoke.up_to_attempt == 0 {
        u32::MAX
    } else {
        revoke.up_to_attempt
    }
}

impl CommandJournal for HashMap<(String, u32), BodyHash> {
    fn recorded_body_hash(&self, command_id: &str, attempt: u32) -> Option<BodyHash> {
        self.get(&(command_id.to_owned(), attempt)).copied()
    }
}

impl CommandJournal for BTreeMap<(String, u32), BodyHash> {
    fn recorded_body_hash(&self, command_id: &str, attempt: u32) -> Option<BodyHash> {
        self.get(&(command_id.to_owned(), attempt)).copied()
    }
}

/// Command id → highest revoked attempt.
impl RevokedCommands for HashMap<String, u32> {
    fn is_revoked(&self, command_id: &str, attempt: u32) -> bool {
        self.get(command_id).is_some_and(|up_to| attempt <= *up_to)
    }
}

/// Command id → highest revoked attempt.
impl RevokedCommands for BTreeMap<String, u32> {
    fn is_revoked(&self, command_id: &str, attempt: u32) -> bool {
        self.get(command_id).is_some_and(|up_to| attempt <= *up_to)
    }
}

/// Signs a command with the organisation's coordinator key.
pub fn sign_command(coordinator: &SigningIdentity, command: &Command) -> SignedEnvelope {
    crate::sign_envelope(coordinator, Domain::Command, command.encode_to_vec())
}

/// What the agent knows when a command arrives.
pub struct CheckContext<'a> {
    pub network: &'a str,
    pub organisation: &'a str,
    /// The logical node id.
    pub node: &'a str,
    /// The replica id when this agent serves one replica of an HA node.
    pub replica: Option<&'a str>,
    /// The highest leadership epoch confirmed by a `Fence` (or read at start-up).
    pub confirmed_epoch: u64,
    /// The agent's notion of now, corrected by its measured offset to the bus.
    pub now_unix_ms: i64,
    /// Bound on clock disagreement between coordinator and agent.
    pub max_clock_skew_ms: i64,
    /// Coordinator and operator keys from the verified network configuration.
    pub keys: &'a KeyRing,
    pub policy: &'a AgentPolicy,
    pub journal: &'a dyn CommandJournal,
    pub revoked: &'a dyn RevokedCommands,
}

/// A command that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedCommand {
    pub command: Command,
    pub action: ActionName,
    pub body_hash: BodyHash,
    pub key_id: String,
    /// The journal already holds this command id with this body: a redelivery. The agent
    /// answers from the journal instead of executing again.
    pub redelivery: bool,
    /// For a `Fence`: the epoch the agent now confirms.
    pub fence_epoch: Option<u64>,
    /// The verified approval, when the policy required one.
    pub approval: Option<OperatorApproval>,
}

/// Runs every check on raw envelope bytes, in the order of the design: size, signature over
/// the exact body bytes (before decoding), network, node, organisation, policy and approval,
/// validity in time, epoch, claim, journal, revocation. Pure: the caller supplies time,
/// journal and revocations.
pub fn check_command(
    raw_envelope: &[u8],
    ctx: &CheckContext<'_>,
) -> Result<CheckedCommand, Rejection> {
    let envelope = decode_envelope(raw_envelope)?;
    let key = verify_envelope(
        &envelope,
        Domain::Command,
        ctx.keys,
        KeyPurpose::Coordinator,
        ctx.now_unix_ms,
    )?;
    let command = Command::decode(envelope.body.as_slice()).map_err(|error| {
        Rejection::new(
            RejectionReason::Malformed,
            format!(
                "command body signed by {} does not decode: {error}",
                key.key_id
            ),
        )
    })?;
    let id = command.command_id.clone();
    let reject =
        |reason: RejectionReason, detail: String| Rejection::new(reason, detail).for_command(&id);

    let expected_id = format!("{}/{}/{}", command.run, command.step, command.node);
    if command.run.is_empty() || command.step.is_empty() || command.command_id != expected_id {
        return Err(reject(
            RejectionReason::Malformed,
            format!("command id must be `<run>/<step>/<node>` = {expected_id:?}"),
        ));
    }
    if command.network != ctx.network {
        return Err(reject(
            RejectionReason::WrongNetwork,
            format!(
                "command is for network {:?}, this agent serves {:?}",
                command.network, ctx.network
            ),
        ));
    }
    let replica_id = ctx.replica.map(|replica| format!("{}.{replica}", ctx.node));
    if command.node != ctx.node && Some(&command.node) != replica_id.as_ref() {
        return Err(reject(
            RejectionReason::WrongNode,
            format!(
                "command is for node {:?}, this agent serves {:?}",
                command.node,
                replica_id.as_deref().unwrap_or(ctx.node)
            ),
        ));
    }
    check_replica(&command, ctx).map_err(|detail| reject(RejectionReason::WrongNode, detail))?;
    if key.organisation != command.organisation || command.organisation != ctx.organisation {
        return Err(reject(
            RejectionReason::WrongOrganisation,
            format!(
                "command claims organisation {:?} and is signed by key {} of {:?}; this agent obeys only {:?}",
                command.organisation, key.key_id, key.organisation, ctx.organisation
            ),
        ));
    }
    let action = ActionName::of(command.action.as_ref()).ok_or_else(|| {
        reject(
            RejectionReason::Malformed,
            "command has no action this agent knows; upgrade the agent or check the coordinator version".to_owned(),
        )
    })?;
    if !ctx
        .policy
        .allows(&command.organisation, action, &command.node)
    {
        return Err(reject(
            RejectionReason::NotAllowedByPolicy,
            format!(
                "local policy does not let organisation {} run {action} on node {}; add a policy rule if intended",
                command.organisation, command.node
            ),
        ));
    }
    let approval = if ctx.policy.needs_approval(action) {
        Some(
            verify_approval(&command, ctx.keys, ctx.now_unix_ms, ctx.max_clock_skew_ms)
                .map_err(|rejection| rejection.for_command(&id))?,
        )
    } else {
        None
    };
    if command.expires_at_unix_ms <= command.issued_at_unix_ms {
        return Err(reject(
            RejectionReason::Malformed,
            format!(
                "expires_at {} is not after issued_at {}",
                command.expires_at_unix_ms, command.issued_at_unix_ms
            ),
        ));
    }
    if ctx.now_unix_ms
        > command
            .expires_at_unix_ms
            .saturating_add(ctx.max_clock_skew_ms)
    {
        return Err(reject(
            RejectionReason::Expired,
            format!(
                "command expired at {} (now {}, skew bound {} ms)",
                command.expires_at_unix_ms, ctx.now_unix_ms, ctx.max_clock_skew_ms
            ),
        ));
    }
    if command.issued_at_unix_ms > ctx.now_unix_ms.saturating_add(ctx.max_clock_skew_ms) {
        return Err(reject(
            RejectionReason::NotYetValid,
            format!(
                "command issued at {}, {} ms ahead of this agent's clock (bound {} ms); check clock sync",
                command.issued_at_unix_ms,
                command.issued_at_unix_ms - ctx.now_unix_ms,
                ctx.max_clock_skew_ms
            ),
        ));
    }
    let fence_epoch = match command.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(Kind::Fence(fence)) => Some(fence.epoch),
        _ => None,
    };
    check_epoch(&command, fence_epoch, ctx.confirmed_epoch)
        .map_err(|(reason, detail)| reject(reason, detail))?;
    check_claim(&command).map_err(|detail| reject(RejectionReason::InvalidClaim, detail))?;

    let hash = body_hash(&envelope.body);
    let redelivery = match ctx.journal.recorded_body_hash(&id, command.attempt) {
        Some(recorded) if recorded != hash => {
            return Err(reject(
                RejectionReason::ReplayWithDifferentBody,
                format!(
                    "the journal holds attempt {} of this command id with a different body; a command id and attempt are never reused",
                    command.attempt
                ),
            ));
        }
        Some(_) => true,
        None => false,
    };
    if ctx.revoked.is_revoked(&id, command.attempt) {
        return Err(reject(
            RejectionReason::Revoked,
            format!(
                "the coordinator revoked attempt {} of this command before a retry or compensation",
                command.attempt
            ),
        ));
    }
    Ok(CheckedCommand {
        command,
        action,
        body_hash: hash,
        key_id: key.key_id.clone(),
        redelivery,
        fence_epoch,
        approval,
    })
}

/// A command to a logical HA node runs on the one replica its body names: the coordinator
/// signs each attempt for exactly one replica, so no other replica can execute it, whatever
/// subject it arrived on. A standalone agent refuses a body naming a replica.
fn check_replica(command: &Command, ctx: &CheckContext<'_>) -> Result<(), String> {
    let addressed_to_logical = command.node == ctx.node;
    match ctx.replica {
        Some(own) if addressed_to_logical && command.replica != own => {
            Err(if command.replica.is_empty() {
                format!(
                    "command for HA node {:?} names no replica; this agent is replica {own:?} and runs only commands routed to it",
                    command.node
                )
            } else {
                format!(
                    "command for HA node {:?} is routed to replica {:?}; this agent is replica {own:?}",
                    command.node, command.replica
                )
            })
        }
        Some(own)
            if !addressed_to_logical && !command.replica.is_empty() && command.replica != own =>
        {
            Err(format!(
                "command for {:?} names replica {:?}",
                command.node, command.replica
            ))
        }
        None if !command.replica.is_empty() => Err(format!(
            "command names replica {:?} of node {:?}; this agent serves the standalone node",
            command.replica, command.node
        )),
        _ => Ok(()),
    }
}

fn check_epoch(
    command: &Command,
    fence_epoch: Option<u64>,
    confirmed_epoch: u64,
) -> Result<(), (RejectionReason, String)> {
    if command.epoch < confirmed_epoch {
        return Err((
            RejectionReason::StaleEpoch,
            format!(
                "epoch {} is below the confirmed epoch {confirmed_epoch}; the sender was deposed",
                command.epoch
            ),
        ));
    }
    match fence_epoch {
        // A fence is how the epoch rises: it must name its own epoch.
        Some(fence) if fence != command.epoch => Err((
            RejectionReason::Malformed,
            format!(
                "fence names epoch {fence} inside a command of epoch {}",
                command.epoch
            ),
        )),
        Some(_) => Ok(()),
        None if command.epoch > confirmed_epoch => Err((
            RejectionReason::FutureEpoch,
            format!(
                "epoch {} is above the confirmed epoch {confirmed_epoch}; a new leader must fence first",
                command.epoch
            ),
        )),
        None => Ok(()),
    }
}

/// A claim, when present, must be the command's own run at an epoch not above the command's.
fn check_claim(command: &Command) -> Result<(), String> {
    let Some(claim) = &command.claim else {
        return Ok(());
    };
    if claim.run != command.run {
        return Err(format!(
            "node {} is claimed by run {:?}, the command belongs to run {:?}",
            command.node, claim.run, command.run
        ));
    }
    if claim.epoch > command.epoch {
        return Err(format!(
            "claim epoch {} is above the command epoch {}",
            claim.epoch, command.epoch
        ));
    }
    Ok(())
}
