//! Conversions between the engine's values and the signed wire messages.

use proto_sidecar as pb;
use sidecar_core::{AckStatus, ActionKind, ActionSpec, Outgoing};

use super::record::RevokeStamp;

/// An action the wire cannot carry (a parameter that does not parse, or an action the driver
/// does not map yet).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("action {action}: {detail}")]
pub struct WireError {
    pub action: &'static str,
    pub detail: String,
}

fn flag(spec: &ActionSpec, key: &str) -> Result<bool, WireError> {
    match spec.params.get(key).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(WireError {
            action: spec.kind.name(),
            detail: format!("parameter {key} must be true or false, not {other:?}"),
        }),
    }
}

fn text(spec: &ActionSpec, key: &str) -> String {
    spec.params.get(key).cloned().unwrap_or_default()
}

/// `from_inclusive` and `to_inclusive`: sequencer counters.
fn counters(spec: &ActionSpec) -> Result<(i64, i64), WireError> {
    let counter = |key: &str| {
        text(spec, key).parse::<i64>().map_err(|_| WireError {
            action: spec.kind.name(),
            detail: format!("parameter {key} must be a sequencer counter (an integer)"),
        })
    };
    Ok((counter("from_inclusive")?, counter("to_inclusive")?))
}

/// `migration_id`: the new synchronizer's migration id.
fn migration_id(spec: &ActionSpec) -> Result<i64, WireError> {
    text(spec, "migration_id")
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| WireError {
            action: spec.kind.name(),
            detail: "parameter migration_id must be a migration id (an integer ≥ 1)".to_owned(),
        })
}

/// The wire action for an engine action.
pub fn action(spec: &ActionSpec) -> Result<pb::Action, WireError> {
    use pb::action::Kind;
    let alias = text(spec, "synchronizer_alias");
    let kind = match spec.kind {
        ActionKind::Disconnect => Kind::Disconnect(pb::Disconnect {
            synchronizer_alias: alias,
        }),
        ActionKind::Reconnect => Kind::Reconnect(pb::Reconnect {
            synchronizer_alias: alias,
        }),
        ActionKind::SetManualConnect => Kind::SetManualConnect(pb::SetManualConnect {
            synchronizer_alias: alias,
            manual_connect: flag(spec, "manual_connect")?,
        }),
        ActionKind::Backup => Kind::Backup(pb::Backup {
            backup_set: text(spec, "backup_set"),
            target: text(spec, "target"),
            include_identities: flag(spec, "include_identities")?,
            include_volume: flag(spec, "include_volume")?,
        }),
        ActionKind::Verify => Kind::Verify(pb::Verify {
            backup_set: text(spec, "backup_set"),
        }),
        ActionKind::DeleteBackup => Kind::DeleteBackup(pb::DeleteBackup {
            backup_set: text(spec, "backup_set"),
            target: text(spec, "target"),
        }),
        ActionKind::Restore => Kind::Restore(pb::Restore {
            backup_set: text(spec, "backup_set"),
            source: text(spec, "source"),
            overwrite: flag(spec, "overwrite")?,
        }),
        ActionKind::Stop => Kind::Stop(pb::Stop {
            grace_seconds: text(spec, "grace_seconds").parse().unwrap_or(0),
        }),
        ActionKind::Start => Kind::Start(pb::Start {}),
        ActionKind::SetPassive => Kind::SetPassive(pb::SetPassive {}),
        ActionKind::Probe => Kind::Probe(pb::Probe {
            names: text(spec, "names")
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect(),
            member: text(spec, "member"),
        }),
        ActionKind::IgnoreEvents => {
            let (from_inclusive, to_inclusive) = counters(spec)?;
            Kind::IgnoreEvents(pb::IgnoreEvents {
                synchronizer_id: text(spec, "synchronizer_id"),
                from_inclusive,
                to_inclusive,
                force: flag(spec, "force")?,
            })
        }
        ActionKind::UnignoreEvents => {
            let (from_inclusive, to_inclusive) = counters(spec)?;
            Kind::UnignoreEvents(pb::UnignoreEvents {
                synchronizer_id: text(spec, "synchronizer_id"),
                from_inclusive,
                to_inclusive,
                force: flag(spec, "force")?,
            })
        }
        ActionKind::MigrateSynchronizer => Kind::MigrateSynchronizer(pb::MigrateSynchronizer {
            source_synchronizer_alias: text(spec, "source_synchronizer_alias"),
            target_synchronizer_alias: text(spec, "target_synchronizer_alias"),
            force: flag(spec, "force")?,
            target_sequencer_urls: text(spec, "target_sequencer_urls")
                .split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect(),
        }),
        ActionKind::MigrationDump => Kind::MigrationDump(pb::MigrationDump {
            timestamp: text(spec, "timestamp"),
            migration_id: migration_id(spec)?,
            force: flag(spec, "force")?,
        }),
        ActionKind::Redeploy => Kind::Redeploy(pb::Redeploy {
            migration_id: migration_id(spec)?,
        }),
        ActionKind::Rehydrate => {
            let backup_set = text(spec, "backup_set");
            if backup_set.is_empty() {
                return Err(WireError {
                    action: spec.kind.name(),
                    detail: "parameter backup_set (the recovery point taken before) is required"
                        .to_owned(),
                });
            }
            Kind::Rehydrate(pb::Rehydrate { backup_set })
        }
        other => {
            return Err(WireError {
                action: other.name(),
                detail: "the driver does not send this action yet".to_owned(),
            });
        }
    };
    Ok(pb::Action { kind: Some(kind) })
}

/// What every command of one run shares.
pub struct CommandContext<'a> {
    pub network: &'a str,
    pub organisation: &'a str,
    pub claim: Option<pb::Claim>,
    /// The runbook's name, carried so the agent's spans and metrics can name it.
    pub runbook: &'a str,
}

/// The command body of an outbox entry. Deterministic: the same entry always encodes to the
/// same bytes, so a resend after a crash is a redelivery to the agent's journal.
pub fn command(ctx: &CommandContext<'_>, outgoing: &Outgoing) -> Result<pb::Command, WireError> {
    Ok(pb::Command {
        network: ctx.network.to_owned(),
        organisation: ctx.organisation.to_owned(),
        node: outgoing.node.id.clone(),
        run: outgoing.run.clone(),
        step: outgoing.step.clone(),
        command_id: outgoing.command_id.clone(),
        attempt: outgoing.attempt,
        epoch: outgoing.epoch,
        claim: ctx.claim.clone(),
        issued_at_unix_ms: outgoing.issued_at,
        expires_at_unix_ms: outgoing.expires_at,
        traceparent: String::new(),
        action: Some(action(&outgoing.action)?),
        approval: None,
        replica: String::new(),
        runbook: ctx.runbook.to_owned(),
    })
}

/// The step id of a revoke command: `<revoked step>~revoke-<up_to_attempt>`, so its command
/// id `<run>/<step>~revoke-<n>/<node>` has the shape `check_command` requires and each
/// revoke of a command has its own id.
pub fn revoke_step(revoked_step: &str, up_to_attempt: u32) -> String {
    format!("{revoked_step}~revoke-{up_to_attempt}")
}

/// Splits `<run>/<step>/<node>` (run and node never contain `/`).
pub fn split_command_id(command_id: &str) -> Option<(&str, &str, &str)> {
    let (run, rest) = command_id.split_once('/')?;
    let (step, node) = rest.rsplit_once('/')?;
    Some((run, step, node))
}

/// The revoke command closing attempts up to `stamp.up_to_attempt` of `revoked`.
pub fn revoke_command(
    ctx: &CommandContext<'_>,
    revoked: &str,
    epoch: u64,
    stamp: &RevokeStamp,
) -> Option<pb::Command> {
    let (run, step, node) = split_command_id(revoked)?;
    let step = revoke_step(step, stamp.up_to_attempt);
    Some(pb::Command {
        network: ctx.network.to_owned(),
        organisation: ctx.organisation.to_owned(),
        node: node.to_owned(),
        run: run.to_owned(),
        command_id: sidecar_core::command_id(run, &step, node),
        step,
        attempt: 1,
        epoch,
        claim: ctx.claim.clone(),
        issued_at_unix_ms: stamp.issued_at,
        expires_at_unix_ms: stamp.expires_at,
        traceparent: String::new(),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::Revoke(pb::Revoke {
                command_id: revoked.to_owned(),
                up_to_attempt: stamp.up_to_attempt,
            })),
        }),
        approval: None,
        replica: String::new(),
        runbook: ctx.runbook.to_owned(),
    })
}

/// The fence run of a tenure: one per organisation and epoch.
pub fn fence_run(organisation: &str, epoch: u64) -> String {
    format!("fence-{organisation}-e{epoch}")
}

pub const FENCE_STEP: &str = "fence";

pub fn fence_command(
    network: &str,
    organisation: &str,
    node: &str,
    epoch: u64,
    issued_at: i64,
    expires_at: i64,
) -> pb::Command {
    let run = fence_run(organisation, epoch);
    pb::Command {
        network: network.to_owned(),
        organisation: organisation.to_owned(),
        node: node.to_owned(),
        command_id: sidecar_core::command_id(&run, FENCE_STEP, node),
        run,
        step: FENCE_STEP.to_owned(),
        attempt: 1,
        epoch,
        claim: None,
        issued_at_unix_ms: issued_at,
        expires_at_unix_ms: expires_at,
        traceparent: String::new(),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::Fence(pb::Fence { epoch })),
        }),
        approval: None,
        replica: String::new(),
        runbook: String::new(),
    }
}

/// What the driver does with a verified ack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AckMeaning {
    /// Feed this to the engine.
    Event(AckStatus),
    /// An agent confirmed an epoch above ours: we are deposed.
    Deposed { seen_epoch: u64 },
    /// Nothing to record: a refusal of a body an earlier tenure sent, or of a duplicate body
    /// whose real outcome arrives with the first body's acks.
    Ignore,
}

/// Classifies an ack for a run owned at `our_epoch`. A stale-epoch refusal deposes us only
/// when the agent's confirmed epoch (`Ack.epoch`) is above ours; otherwise it refused a body
/// sent under an earlier tenure, which this tenure has re-sent under its own epoch.
pub fn ack_meaning(ack: &pb::Ack, our_epoch: u64) -> AckMeaning {
    use pb::{AckStatus as S, RejectReason as R};
    let status = S::try_from(ack.status).unwrap_or(S::Unspecified);
    match status {
        S::Accepted => AckMeaning::Event(AckStatus::Accepted),
        S::Progress => {
            let progress = ack.progress.clone().unwrap_or_default();
            AckMeaning::Event(AckStatus::Progress {
                done: progress.done,
                total: progress.total,
            })
        }
        S::Done => AckMeaning::Event(AckStatus::Done {
            result_hash: ack.result_hash.clone(),
        }),
        S::Failed => AckMeaning::Event(AckStatus::Failed {
            reason: ack.detail.clone(),
        }),
        S::OutcomeUnknown => AckMeaning::Event(AckStatus::OutcomeUnknown),
        S::Rejected => match R::try_from(ack.reject_reason).unwrap_or(R::Unspecified) {
            R::StaleEpoch if ack.epoch > our_epoch => AckMeaning::Deposed {
                seen_epoch: ack.epoch,
            },
            R::StaleEpoch | R::ReplayWithDifferentBody => AckMeaning::Ignore,
            reason => AckMeaning::Event(AckStatus::Rejected {
                reason: format!("{}: {}", reason.as_str_name(), ack.detail),
                stale_epoch: false,
            }),
        },
        S::Unspecified => AckMeaning::Ignore,
    }
}

/// The `Nats-Msg-Id` of a command: `<command_id>/<attempt>`, plus `/r<n>` for a deliberate
/// resend, so the server's duplicate window drops only true duplicates.
pub fn message_id(command_id: &str, attempt: u32, resend: Option<u64>) -> String {
    match resend {
        Some(n) => format!("{command_id}/{attempt}/r{n}"),
        None => format!("{command_id}/{attempt}"),
    }
}
