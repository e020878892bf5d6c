//! Rehydration of a participant from a never-pruned synchronizer (DESIGN §6 repairs,
//! `rehydrate-participant`): `rehydrate` runs the operator's `[rehydrate] hook`, which replaces
//! the participant's database with a new, empty one while keeping its identity (Canton's
//! procedure: identity and DARs from the backup just taken, truncate, manual start,
//! re-initialise). The participant then replays every event of its synchronizers when the
//! runbook reconnects it.
//!
//! Guarded (DESIGN §3) and destructive:
//! - before anything changes, the action refuses unless the backup set the command names holds
//!   a verified dump of this node (the recovery point), the participant is disconnected and
//!   has a synchronizer registered to replay from; it then records what it saw (uid, the
//!   sequencer time it had processed = the stop point, ledger end, registered aliases) in
//!   `started.json`, so an attempt interrupted after the hook still knows the old stop point;
//! - after the hook exited 0 it waits until the admin API answers, requires the same uid, a
//!   database that no longer holds the old events and a registered synchronizer, records the
//!   stop point as the dedup floor in the new database (so the `dedup_safe` part keeps the apps
//!   away until the participant has replayed past it plus the ledger-time-record-time
//!   tolerance), and only then writes `rehydrated.json`, whose presence makes any later attempt
//!   of the command a no-op: the database is never replaced twice for one command.
//!
//! Markers live in `[rehydrate] state_dir/<command id, encoded>/`, written durably. A failure
//! before the hook ran changed nothing (`Failed`: the runbook rolls back). Once the hook has run
//! the participant may be half replaced, so every failure is `OutcomeUnknown`: an operator
//! decides (retry runs the hook again, which must therefore be safe to re-run while the node is
//! disconnected).
//!
//! The `sequencer_history` probe part (sequencers) answers whether a sequencer still holds
//! every event of a member since its registration: its pruning lower bound is not after the
//! member's `registered_at` (both from `PruningStatus`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canton_client::{CantonClient, ErrorKind};
use futures::future::BoxFuture;
use proto_sidecar::action::Kind;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::dedup::DedupGuard;
use super::migration::write_durably;
use super::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, Command, Idempotency,
    Progress,
};
use crate::config::{AgentConfig, BackupSettings, RehydrateConfig};

const STARTED_FILE: &str = "started.json";
const DONE_FILE: &str = "rehydrated.json";
/// Pause between two status reads while the participant comes back after the hook.
const READY_POLL: Duration = Duration::from_millis(500);

/// The `rehydrate` handler of a participant's agent. It is registered on every participant so
/// that one without `[rehydrate]` (or `[backup]`) refuses with what to configure.
pub fn rehydrate_handler(
    config: &AgentConfig,
    client: CantonClient,
    dedup: Option<Arc<DedupGuard>>,
) -> Arc<dyn ActionHandler> {
    Arc::new(RehydrateAction {
        shared: Arc::new(Shared {
            node: config.node.logical().to_owned(),
            client,
            dedup,
            backup: config.backup.clone(),
            config: config.rehydrate.clone(),
        }),
    })
}

struct Shared {
    node: String,
    client: CantonClient,
    dedup: Option<Arc<DedupGuard>>,
    backup: Option<BackupSettings>,
    config: Option<RehydrateConfig>,
}

/// What the action saw before the hook ran (`started.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Before {
    node: String,
    command_id: String,
    backup_set: String,
    uid: String,
    /// The sequencer time the participant had processed (µs); none for a node that never
    /// processed an event.
    stop_point_micros: Option<i64>,
    ledger_end: Option<i64>,
    registered: Vec<String>,
    recorded_at_unix_ms: i64,
}

/// The parts of the configuration the action needs, or the refusal saying what is missing.
struct Ready<'a> {
    config: &'a RehydrateConfig,
    backup: &'a BackupSettings,
    dedup: &'a DedupGuard,
}

impl Shared {
    fn ready(&self) -> Result<Ready<'_>, ActionError> {
        let node = &self.node;
        let config = self.config.as_ref().ok_or_else(|| {
            ActionError::Failed(format!(
                "{node}: no rehydrate hook is configured on this agent; add [rehydrate] hook = \
                 [...] (the command that replaces the participant's database keeping its \
                 identity; placeholders {{node}}, {{command_id}}, {{backup_set}}, \
                 {{backup_dir}}) and restart the agent; nothing was changed"
            ))
        })?;
        let (Some(backup), Some(dedup)) = (self.backup.as_ref(), self.dedup.as_deref()) else {
            return Err(ActionError::Failed(format!(
                "{node}: rehydrate needs [backup] with the node's database (the stop point is \
                 read from it and the recovery point verified); nothing was changed"
            )));
        };
        Ok(Ready {
            config,
            backup,
            dedup,
        })
    }

    fn dir(&self, config: &RehydrateConfig, command_id: &str) -> PathBuf {
        config
            .state_dir
            .join(sidecar_backup::encode_command_id(command_id))
    }

    fn recorded(&self, command_id: &str) -> Option<Vec<u8>> {
        let config = self.config.as_ref()?;
        std::fs::read(self.dir(config, command_id).join(DONE_FILE)).ok()
    }

    /// A failure before anything changed: the runbook may roll back.
    fn untouched(&self, what: &str, error: impl std::fmt::Display) -> ActionError {
        ActionError::Unavailable(format!(
            "{}: {what}: {error}; nothing was changed",
            self.node
        ))
    }

    /// The participant's synchronizer connections; the hook may run only without any.
    async fn disconnected(&self, earlier_attempt: bool) -> Result<(), ActionError> {
        let node = &self.node;
        let connected = self
            .client
            .list_connected_synchronizers()
            .await
            .map_err(|e| self.untouched("listing its connected synchronizers", e))?;
        if connected.is_empty() {
            return Ok(());
        }
        let aliases = connected
            .iter()
            .map(|c| c.alias.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Err(if earlier_attempt {
            // An earlier attempt may have replaced the database already: no rollback.
            ActionError::OutcomeUnknown(format!(
                "{node}: connected to {aliases} although an earlier attempt of this command \
                 started the rehydration; disconnect it and retry the step, or decide after \
                 checking the node; the hook did not run again"
            ))
        } else {
            ActionError::Failed(format!(
                "{node}: still connected to {aliases}; the runbook disconnects it before the \
                 rehydration; nothing was changed"
            ))
        })
    }

    /// The state the participant is in before the hook: read now, or as an earlier attempt
    /// of the same command recorded it (`true`).
    async fn before(
        &self,
        ready: &Ready<'_>,
        command: &Command,
        backup_set: &str,
    ) -> Result<(Before, bool), ActionError> {
        let node = &self.node;
        let file = self
            .dir(ready.config, &command.command_id)
            .join(STARTED_FILE);
        if let Ok(bytes) = std::fs::read(&file) {
            let before = serde_json::from_slice(&bytes).map_err(|e| {
                ActionError::OutcomeUnknown(format!(
                    "{node}: {} does not parse ({e}); an earlier attempt may have run the \
                     hook: check the node before deciding",
                    file.display()
                ))
            })?;
            return Ok((before, true));
        }
        let status = self
            .client
            .status()
            .await
            .map_err(|e| self.untouched("reading its status", e))?;
        let uid = status.uid.filter(|uid| !uid.is_empty()).ok_or_else(|| {
            ActionError::Failed(format!(
                "{node}: the participant reports no uid (not initialised?); a rehydration keeps \
                 an existing identity; nothing was changed"
            ))
        })?;
        self.disconnected(false).await?;
        let registered: Vec<String> = self
            .client
            .list_registered_synchronizers()
            .await
            .map_err(|e| self.untouched("listing its registered synchronizers", e))?
            .into_iter()
            .map(|r| r.alias)
            .collect();
        if registered.is_empty() {
            return Err(ActionError::Failed(format!(
                "{node}: no synchronizer is registered, so there is nothing to replay its \
                 ledger from; nothing was changed"
            )));
        }
        let point = ready
            .dedup
            .point()
            .await
            .map_err(|e| self.untouched("reading the sequencer time it processed", e))?;
        let before = Before {
            node: node.clone(),
            command_id: command.command_id.clone(),
            backup_set: backup_set.to_owned(),
            uid,
            stop_point_micros: point.sequencer_ts_micros,
            ledger_end: point.ledger_offset,
            registered,
            recorded_at_unix_ms: crate::commands::unix_ms_now(),
        };
        let bytes = serde_json::to_vec_pretty(&before).unwrap_or_default();
        let written = tokio::task::spawn_blocking({
            let file = file.clone();
            move || write_durably(&file, &bytes)
        })
        .await
        .map_err(|e| ActionError::Failed(e.to_string()))?;
        written.map_err(|e| {
            ActionError::Failed(format!(
                "{node}: writing {}: {e}; nothing was changed",
                file.display()
            ))
        })?;
        Ok((before, false))
    }

    /// After the hook: the admin API answers with an initialised status (its uid), or the
    /// wait ends in an operator decision.
    async fn uid_after(
        &self,
        ready: &Ready<'_>,
        context: &ActionContext,
    ) -> Result<String, ActionError> {
        self.client.forget_profile();
        let deadline = tokio::time::Instant::now() + ready.config.ready_timeout;
        loop {
            let last = match self.client.status().await {
                Ok(status) if status.initialized => {
                    if let Some(uid) = status.uid.filter(|uid| !uid.is_empty()) {
                        return Ok(uid);
                    }
                    "initialised without a uid".to_owned()
                }
                Ok(_) => "not initialised yet".to_owned(),
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(ActionError::OutcomeUnknown(format!(
                    "{}: the rehydrate hook finished but the participant did not answer its \
                     status within {:?} ({last}); check the node, then retry the step or mark \
                     it done",
                    self.node, ready.config.ready_timeout
                )));
            }
            tokio::select! {
                () = context.cancellation().cancelled() => return Err(ActionError::Interrupted),
                () = tokio::time::sleep(READY_POLL) => {}
            }
        }
    }

    /// Runs the rehydration; once an earlier attempt of the command recorded its start, no
    /// failure may roll the run back (the database may be gone): they become decisions.
    async fn run(
        &self,
        command: &Command,
        context: &ActionContext,
    ) -> Result<ActionOutput, ActionError> {
        let earlier_attempt = self.config.as_ref().is_some_and(|config| {
            self.dir(config, &command.command_id)
                .join(STARTED_FILE)
                .exists()
        });
        self.attempt(command, context)
            .await
            .map_err(|error| match error {
                ActionError::Failed(detail) | ActionError::Unavailable(detail)
                    if earlier_attempt =>
                {
                    ActionError::OutcomeUnknown(format!(
                        "{detail}; an earlier attempt of this command started the \
                         rehydration, so the run is not rolled back: check the node, then \
                         retry the step, mark it done or abort"
                    ))
                }
                other => other,
            })
    }

    async fn attempt(
        &self,
        command: &Command,
        context: &ActionContext,
    ) -> Result<ActionOutput, ActionError> {
        let node = self.node.clone();
        let backup_set = match command.action.as_ref().and_then(|a| a.kind.as_ref()) {
            Some(Kind::Rehydrate(r)) if !r.backup_set.is_empty() => r.backup_set.clone(),
            _ => {
                return Err(ActionError::Failed(format!(
                    "command {} names no backup_set (the recovery point)",
                    command.command_id
                )));
            }
        };
        let ready = self.ready()?;
        if let Some(result) = self.recorded(&command.command_id) {
            return Ok(ActionOutput {
                detail: format!("{node}: rehydrated already by {}", command.command_id),
                result,
            });
        }
        let backups = super::backup::backups_at(ready.backup, ready.backup.root.clone())?;
        let manifest = backups
            .already_done(&backup_set, &node)
            .await
            .map_err(super::backup::classify)?
            .ok_or_else(|| {
                ActionError::Failed(format!(
                    "{node}: backup set {backup_set} under {} holds no verified dump of this node; \
                     the recovery point must exist before the database is replaced; nothing was \
                     changed",
                    ready.backup.root.display()
                ))
            })?;
        let (before, earlier_attempt) = self.before(&ready, command, &backup_set).await?;
        if earlier_attempt {
            self.disconnected(true).await?;
        }

        // From here on the database may be replaced: failures are an operator's decision.
        let backup_dir = ready.backup.root.join(&backup_set).display().to_string();
        let hook = ready
            .config
            .hook
            .render(
                format!("the rehydrate hook of {node}"),
                &[
                    ("node", node.as_str()),
                    ("command_id", command.command_id.as_str()),
                    ("backup_set", backup_set.as_str()),
                    ("backup_dir", backup_dir.as_str()),
                ],
            )
            .env("CS_NODE", node.as_str())
            .env("CS_COMMAND_ID", command.command_id.as_str())
            .env("CS_BACKUP_SET", backup_set.as_str())
            .env("CS_BACKUP_DIR", backup_dir.as_str())
            .env("CS_PARTICIPANT_UID", before.uid.as_str());
        context.progress(Progress {
            done: 0,
            total: 1,
            unit: "hooks".to_owned(),
            message: format!("running {}", hook.display()),
        });
        let observer = super::backup::Journalled { context };
        let ran = tokio::time::timeout(
            ready.config.timeout,
            sidecar_backup::run_child(&hook, &observer, context.cancellation()),
        )
        .await
        .map_err(|_| {
            ActionError::OutcomeUnknown(format!(
                "{node}: the rehydrate hook did not finish within {:?} and was killed; the \
                 database may be half replaced: check the node, then retry the step (the hook \
                 runs again) or restore backup set {backup_set}",
                ready.config.timeout
            ))
        })?
        .map_err(super::backup::classify)?
        .success(&hook)
        .map_err(|e| {
            ActionError::OutcomeUnknown(format!(
                "{node}: {e}; the database may be half replaced: check the node, then retry the \
                 step (the hook runs again) or restore backup set {backup_set}"
            ))
        })?;

        let uid = self.uid_after(&ready, context).await?;
        if uid != before.uid {
            return Err(ActionError::OutcomeUnknown(format!(
                "{node}: after the rehydrate hook the participant is {uid}, before it was {}; \
                 its parties would change: do not reconnect it; restore its identity (backup set \
                 {backup_set}), then retry the step or abort the run",
                before.uid
            )));
        }
        let now = ready.dedup.point().await.map_err(|e| {
            ActionError::OutcomeUnknown(format!(
                "{node}: after the rehydrate hook its database does not answer ({e}); check the \
                 node, then retry the step or mark it done"
            ))
        })?;
        if let (Some(stop), Some(processed)) = (before.stop_point_micros, now.sequencer_ts_micros)
            && processed >= stop
        {
            return Err(ActionError::OutcomeUnknown(format!(
                "{node}: the rehydrate hook exited 0 but the database still holds events up to \
                 sequencer time {processed} µs (the stop point was {stop} µs): it was not \
                 replaced; fix the hook, then retry the step, or abort the run"
            )));
        }
        let registered: Vec<String> = self
            .client
            .list_registered_synchronizers()
            .await
            .map_err(|e| {
                ActionError::OutcomeUnknown(format!(
                    "{node}: listing its synchronizers after the rehydrate hook: {e}; check the \
                     node, then retry the step or mark it done"
                ))
            })?
            .into_iter()
            .map(|r| r.alias)
            .collect();
        if registered.is_empty() {
            return Err(ActionError::OutcomeUnknown(format!(
                "{node}: after the rehydrate hook no synchronizer is registered (before: {}); \
                 register them again without connecting (the hook should), then mark the step \
                 done so the reconnect replays from them",
                before.registered.join(", ")
            )));
        }
        if let Some(stop) = before.stop_point_micros {
            ready
                .dedup
                .record_floor(&command.command_id, stop)
                .await
                .map_err(|e| {
                    ActionError::OutcomeUnknown(format!(
                        "{e}; without it the apps would not wait for the replay: retry the step"
                    ))
                })?;
        }
        let result = json!({
            "node": node,
            "uid": uid,
            "backup_set": backup_set,
            "backup_sha256": manifest.sha256,
            "stop_point_micros": before.stop_point_micros,
            "ledger_end_before": before.ledger_end,
            "registered": registered,
            "hook_output": ran.stdout.lines().last().unwrap_or_default(),
            "rehydrated_by": command.command_id,
        })
        .to_string()
        .into_bytes();
        let marker = self.dir(ready.config, &command.command_id).join(DONE_FILE);
        let written = tokio::task::spawn_blocking({
            let (marker, result) = (marker.clone(), result.clone());
            move || write_durably(&marker, &result)
        })
        .await
        .map_err(|e| ActionError::OutcomeUnknown(e.to_string()))?;
        written.map_err(|e| {
            ActionError::OutcomeUnknown(format!(
                "{node}: the participant is rehydrated but {} could not be written ({e}); mark \
                 the step done (a retry would replace the database again)",
                marker.display()
            ))
        })?;
        Ok(ActionOutput {
            detail: format!(
                "{node}: database replaced, identity {uid} kept; it replays from {} once \
                 reconnected (stop point {} µs)",
                registered.join(", "),
                before
                    .stop_point_micros
                    .map_or_else(|| "none".to_owned(), |t| t.to_string())
            ),
            result,
        })
    }
}

/// `rehydrate` on one participant.
struct RehydrateAction {
    shared: Arc<Shared>,
}

impl ActionHandler for RehydrateAction {
    fn kind(&self) -> ActionName {
        ActionName::Rehydrate
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Guarded
    }

    fn already_done(
        &self,
        command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        let recorded = self.shared.recorded(&command.command_id);
        Box::pin(async move {
            Ok(recorded.map(|result| ActionOutput {
                detail: "rehydrated already".to_owned(),
                result,
            }))
        })
    }

    fn run(
        &self,
        command: Command,
        context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let shared = Arc::clone(&self.shared);
        Box::pin(async move { shared.run(&command, &context).await })
    }
}

/// The `sequencer_history` answer of a sequencer about `member`: `Ok` with the numbers when
/// it still holds every event since the member registered, `Failed` saying why not.
pub(super) async fn sequencer_history(
    node: &str,
    client: &CantonClient,
    member: &str,
) -> Result<Value, ActionError> {
    if member.is_empty() {
        return Err(ActionError::Failed(format!(
            "{node}: sequencer_history needs the member it is about (PAR::<uid>)"
        )));
    }
    let status = client.sequencer_pruning_status().await.map_err(|e| {
        let text = format!("{node}: reading the pruning status: {e}");
        match e.kind() {
            ErrorKind::Unavailable | ErrorKind::DeadlineExceeded => ActionError::Unavailable(text),
            _ => ActionError::Failed(text),
        }
    })?;
    history_verdict(node, member, &status)
}

/// Judges a sequencer's `PruningStatus` for `member` (pure, see [`sequencer_history`]).
fn history_verdict(
    node: &str,
    member: &str,
    status: &canton_client::types::SequencerPruningStatus,
) -> Result<Value, ActionError> {
    let lower_bound = status.earliest_event_micros;
    let Some(entry) = status.members.iter().find(|m| m.member == member) else {
        return Err(ActionError::Failed(format!(
            "{node} does not serve {member}: it is not that participant's synchronizer (name \
             the participant's sequencers with --node); nothing was changed"
        )));
    };
    let numbers = json!({
        "member": member,
        "registered_at_micros": entry.registered_at_micros,
        "lower_bound_micros": lower_bound,
        "enabled": entry.enabled,
        "complete": entry.enabled && lower_bound <= entry.registered_at_micros,
    });
    if !entry.enabled {
        return Err(ActionError::Failed(format!(
            "{node}: {member} is disabled on this sequencer; it cannot reconnect to replay its \
             history; nothing was changed"
        )));
    }
    if lower_bound > entry.registered_at_micros {
        return Err(ActionError::Failed(format!(
            "{node}: the sequencer was pruned: it holds events only from {} ({lower_bound} µs), \
             but {member} registered at {} ({} µs), so part of its history is gone and a \
             rehydration could not rebuild its ledger; nothing was changed: restore the \
             participant from a backup instead",
            rfc3339(lower_bound),
            rfc3339(entry.registered_at_micros),
            entry.registered_at_micros
        )));
    }
    Ok(numbers)
}

fn rfc3339(micros: i64) -> String {
    u64::try_from(micros).map_or_else(
        |_| format!("{micros} µs"),
        |m| {
            humantime::format_rfc3339_micros(std::time::UNIX_EPOCH + Duration::from_micros(m))
                .to_string()
        },
    )
}

#[cfg(test)]
mod tests {
    use canton_client::types::{SequencerMember, SequencerPruningStatus};

    use super::*;

    fn status(lower_bound: i64, registered_at: i64, enabled: bool) -> SequencerPruningStatus {
        SequencerPruningStatus {
            now_micros: 9_000,
            earliest_event_micros: lower_bound,
            members: vec![SequencerMember {
                member: "PAR::p1::1220ab".to_owned(),
                registered_at_micros: registered_at,
                last_acknowledged_micros: None,
                enabled,
            }],
        }
    }

    #[test]
    fn a_history_is_complete_only_when_nothing_before_the_registration_was_pruned() {
        let member = "PAR::p1::1220ab";
        let complete = history_verdict("s1", member, &status(1_000, 1_000, true)).unwrap();
        assert_eq!(complete["complete"], true);
        assert_eq!(complete["registered_at_micros"], 1_000);
        assert!(history_verdict("s1", member, &status(500, 1_000, true)).is_ok());
        let failed = |status: SequencerPruningStatus, member: &str| -> String {
            match history_verdict("s1", member, &status) {
                Err(ActionError::Failed(detail)) => detail,
                other => panic!("expected a failure, got {other:?}"),
            }
        };
        let pruned = failed(status(2_000, 1_000, true), member);
        assert!(
            pruned.contains("pruned") && pruned.contains("restore the participant"),
            "{pruned}"
        );
        assert!(failed(status(500, 1_000, false), member).contains("disabled"));
        let stranger = failed(status(500, 1_000, true), "PAR::p9::1220ff");
        assert!(stranger.contains("does not serve"), "{stranger}");
    }
}
