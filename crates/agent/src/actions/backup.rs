//! Backup, restore, verify, stop and start through `sidecar-backup` (DESIGN §3).
//!
//! - `backup` (guarded): `pg_dump` (or the configured snapshot command) of the node's database
//!   into `<[backup] root>[/<target>]/<set>/<node>.dump`; the result is the manifest JSON, and
//!   `already_done` is "manifest present and its checksum matches".
//! - `restore` (guarded): refused unless nothing but the agent's own probe is connected to the
//!   node's database and, with `[lifecycle]`, the status hook says stopped; the checksum is
//!   checked first. The result names the restoring command; `already_done` reads the
//!   `restored_by` marker in the database. Replacing the database is what a restore is: the
//!   runbook's approval step authorises it, so `overwrite` changes nothing here.
//! - `verify` (read-only): this node's manifest in the set, checked against its file.
//! - `delete_backup` (natural): removes this node's files of a set, manifest first; a set
//!   already gone is done. Only the coordinator's opt-in retention sends it.
//! - `stop` / `start` (natural): the `[lifecycle]` hooks, confirmed by the status hook.
//!
//! Files are named after the logical node, so HA replicas share one backup per set.

use std::path::{Component, Path};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use proto_sidecar::action::Kind;
use serde_json::json;
use sidecar_backup as backup;

use super::dedup::DedupGuard;
use super::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, Command, Idempotency,
    Progress,
};
use crate::config::{AgentConfig, BackupMethod, BackupSettings, NodeKind};

/// Application name of the agent's own database connections (its probe): a restore
/// terminates them instead of refusing.
pub const AGENT_APPLICATION_NAME: &str = "canton-agent";

/// The backup and lifecycle handlers `config` asks for: `backup`, `restore` and `verify` with a
/// `[backup]` section, `stop` and `start` with a `[lifecycle]` one.
pub fn backup_handlers(
    config: &AgentConfig,
    dedup: Option<Arc<DedupGuard>>,
) -> Result<Vec<Arc<dyn ActionHandler>>, backup::Error> {
    let node = config.node.logical().to_owned();
    // Each HA replica is a process of its own: its hooks stop and start that replica
    // (`{node}` = `<node>.<replica>`), while backup files are named after the logical node.
    let lifecycle = config
        .lifecycle
        .clone()
        .map(|hooks| backup::Lifecycle::new(hooks, config.node.to_string()))
        .transpose()?;
    let mut handlers: Vec<Arc<dyn ActionHandler>> = Vec::new();
    if let Some(lifecycle) = &lifecycle {
        for kind in [ActionName::Stop, ActionName::Start] {
            handlers.push(Arc::new(LifecycleAction {
                kind,
                lifecycle: lifecycle.clone(),
            }));
        }
    }
    let Some(settings) = config.backup.clone() else {
        return Ok(handlers);
    };
    let database = backup::Database::new(settings.database_url.expose())?;
    let kind = backup_kind(config.kind);
    let point = backup::SqlPointSource::for_kind(
        database.clone(),
        kind,
        settings.snapshot_point_query.as_deref(),
    )?;
    let shared = Arc::new(Shared {
        node: backup::NodeRef {
            id: node,
            kind,
            // Each command names it (checked against the agent's by the command path).
            organisation: String::new(),
            participant: settings.participant.clone(),
            replica: config.node.replica().map(|_| config.node.to_string()),
        },
        settings,
        database,
        point,
        lifecycle,
        dedup,
    });
    for kind in [
        ActionName::Backup,
        ActionName::Restore,
        ActionName::Verify,
        ActionName::DeleteBackup,
    ] {
        handlers.push(Arc::new(BackupAction {
            kind,
            shared: shared.clone(),
        }));
    }
    Ok(handlers)
}

fn backup_kind(kind: NodeKind) -> backup::NodeKind {
    match kind {
        NodeKind::Participant => backup::NodeKind::Participant,
        NodeKind::Sequencer => backup::NodeKind::Sequencer,
        NodeKind::Mediator => backup::NodeKind::Mediator,
        NodeKind::App => backup::NodeKind::App,
    }
}

/// The backups under `root` with the rest of `[backup]`'s settings.
pub(super) fn backups_at(
    settings: &BackupSettings,
    root: std::path::PathBuf,
) -> Result<backup::Backups, ActionError> {
    let mut config = backup::BackupConfig::new(root);
    config.pg_bin_dir = settings.pg_bin_dir.clone();
    config.upload = settings.upload.clone();
    config.progress_interval = settings.progress_interval;
    config.maintenance_database = settings.maintenance_database.clone();
    backup::Backups::new(config).map_err(classify)
}

/// Maps the library's error kinds onto what the command path acks.
pub(super) fn classify(error: backup::Error) -> ActionError {
    use backup::ErrorKind as K;
    match error.kind() {
        K::Cancelled => ActionError::Interrupted,
        K::Database => ActionError::Unavailable(format!(
            "{error}; retry when the node's database is reachable"
        )),
        // The hook ran; the node may still get there.
        K::Timeout => ActionError::OutcomeUnknown(error.to_string()),
        _ => ActionError::Failed(error.to_string()),
    }
}

/// Passes child groups to the journal and dump sizes to progress acks.
pub(super) struct Journalled<'a> {
    pub(super) context: &'a ActionContext,
}

impl backup::Observer for Journalled<'_> {
    fn child_started<'a>(
        &'a self,
        child: &'a backup::ChildInfo,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let pgid = i32::try_from(child.group.pgid)
                .map_err(|_| format!("process group {} out of range", child.group.pgid))?;
            self.context
                .record_child(pgid)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn progress(&self, progress: backup::Progress) {
        self.context.progress(Progress {
            done: progress.bytes,
            total: 0,
            unit: "bytes".to_owned(),
            message: progress.phase.as_str().to_owned(),
        });
    }
}

struct Shared {
    node: backup::NodeRef,
    settings: BackupSettings,
    database: backup::Database,
    point: backup::SqlPointSource,
    lifecycle: Option<backup::Lifecycle>,
    /// Participants: where the restore records the point apps must wait past.
    dedup: Option<Arc<DedupGuard>>,
}

/// `backup`, `restore` or `verify` of the node.
pub struct BackupAction {
    kind: ActionName,
    shared: Arc<Shared>,
}

/// What a command asks of the backup actions.
struct Request {
    set: String,
    /// Subdirectory of the root (`target` of a backup, `source` of a restore); empty = the root.
    place: String,
}

fn request(node: &str, command: &Command) -> Result<Request, ActionError> {
    let kind = command.action.as_ref().and_then(|a| a.kind.clone());
    let (set, place) = match kind {
        Some(Kind::Backup(b)) => (b.backup_set, b.target),
        Some(Kind::Restore(r)) => (r.backup_set, r.source),
        Some(Kind::Verify(v)) => (v.backup_set, String::new()),
        Some(Kind::DeleteBackup(d)) => (d.backup_set, d.target),
        other => {
            return Err(ActionError::Failed(format!(
                "{node}: a backup action got {other:?}"
            )));
        }
    };
    if set.is_empty() {
        return Err(ActionError::Failed(format!(
            "{node}: the command names no backup_set"
        )));
    }
    Ok(Request { set, place })
}

impl Shared {
    /// The backups under the root, or under `place` below it.
    fn backups(&self, place: &str) -> Result<backup::Backups, ActionError> {
        let root = if place.is_empty() {
            self.settings.root.clone()
        } else {
            let relative = Path::new(place);
            if !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
            {
                return Err(ActionError::Failed(format!(
                    "{}: backup place {place:?} must be a relative path below [backup] root without `..`",
                    self.node.id
                )));
            }
            self.settings.root.join(relative)
        };
        backups_at(&self.settings, root)
    }

    /// The node as `command`'s organisation knows it.
    fn node_of(&self, command: &Command) -> backup::NodeRef {
        backup::NodeRef {
            organisation: command.organisation.clone(),
            ..self.node.clone()
        }
    }

    /// Nothing of the node may run: no connection but ours, and the status hook says stopped.
    fn stopped_check(&self) -> backup::AllStopped {
        let mut checks: Vec<Box<dyn backup::StoppedCheck>> = vec![Box::new(
            backup::NoConnections::to_database(&self.database, &self.settings.maintenance_database)
                .ignoring_applications(vec![AGENT_APPLICATION_NAME.to_owned()]),
        )];
        if let Some(lifecycle) = &self.lifecycle {
            checks.push(Box::new(lifecycle.clone()));
        }
        backup::AllStopped(checks)
    }

    fn restored(&self, set: &str, command_id: &str) -> ActionOutput {
        let result = json!({
            "node": self.node.id,
            "backup_set": set,
            "restored_by": command_id,
        });
        ActionOutput {
            result: serde_json::to_vec(&result).unwrap_or_default(),
            detail: format!("{}: restored from backup set {set}", self.node.id),
        }
    }

    async fn already_done(
        &self,
        kind: ActionName,
        command: &Command,
    ) -> Result<Option<ActionOutput>, ActionError> {
        let request = request(&self.node.id, command)?;
        let backups = self.backups(&request.place)?;
        match kind {
            ActionName::Backup => Ok(backups
                .already_done(&request.set, &self.node.id)
                .await
                .map_err(classify)?
                .map(|manifest| manifest_output(&manifest))),
            ActionName::Restore => {
                let done = backups
                    .restore_already_done(&self.database, &command.command_id)
                    .await
                    .map_err(classify)?;
                Ok(done.then(|| self.restored(&request.set, &command.command_id)))
            }
            _ => Ok(None),
        }
    }

    async fn run(
        &self,
        kind: ActionName,
        command: &Command,
        context: &ActionContext,
    ) -> Result<ActionOutput, ActionError> {
        let request = request(&self.node.id, command)?;
        let backups = self.backups(&request.place)?;
        let observer = Journalled { context };
        let cancel = context.cancellation();
        match kind {
            ActionName::Backup => {
                let node = self.node_of(command);
                let job = backup::BackupJob {
                    set: &request.set,
                    node: &node,
                    command_id: &command.command_id,
                    database: &self.database,
                    point: &self.point,
                };
                let manifest = match &self.settings.method {
                    BackupMethod::PgDump => backups.backup(&job, &observer, cancel).await,
                    BackupMethod::Snapshot(spec) => {
                        backups
                            .snapshot(&job, spec, &self.stopped_check(), &observer, cancel)
                            .await
                    }
                }
                .map_err(classify)?;
                Ok(manifest_output(&manifest))
            }
            ActionName::Restore => {
                let own = [AGENT_APPLICATION_NAME.to_owned()];
                let job = backup::RestoreJob {
                    set: &request.set,
                    node: &self.node,
                    command_id: &command.command_id,
                    database: &self.database,
                    own_applications: &own,
                };
                // The last point the participant reached, read before its database goes.
                let stop_point = match &self.dedup {
                    Some(dedup) => dedup.processed_sequencer_time().await,
                    None => None,
                };
                backups
                    .restore(&job, &self.stopped_check(), &observer, cancel)
                    .await
                    .map_err(classify)?;
                if let Some(dedup) = &self.dedup {
                    // A lost database leaves the backup's own upper bound as the best floor.
                    let backup_point = backups
                        .already_done(&request.set, &self.node.id)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|manifest| manifest.sequencer_time_micros)
                        .map(|interval| interval.after);
                    if let Some(floor) = stop_point.max(backup_point) {
                        dedup.record_floor(&command.command_id, floor).await?;
                    }
                }
                Ok(self.restored(&request.set, &command.command_id))
            }
            ActionName::Verify => {
                let manifests = backups
                    .verify(&request.set, std::slice::from_ref(&self.node.id))
                    .await
                    .map_err(classify)?;
                let result = json!({ "backup_set": request.set, "manifests": manifests });
                Ok(ActionOutput {
                    result: serde_json::to_vec(&result).unwrap_or_default(),
                    detail: format!(
                        "{}: the manifest of backup set {} matches its file",
                        self.node.id, request.set
                    ),
                })
            }
            ActionName::DeleteBackup => {
                let removed = backups
                    .delete(&request.set, &self.node.id)
                    .await
                    .map_err(classify)?;
                let files: Vec<String> = removed
                    .iter()
                    .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
                    .collect();
                let result = json!({
                    "node": self.node.id,
                    "backup_set": request.set,
                    "deleted": files,
                });
                Ok(ActionOutput {
                    result: serde_json::to_vec(&result).unwrap_or_default(),
                    detail: format!(
                        "{}: backup set {} deleted ({} files)",
                        self.node.id,
                        request.set,
                        files.len()
                    ),
                })
            }
            other => Err(ActionError::Failed(format!(
                "{}: {other} is not a backup action",
                self.node.id
            ))),
        }
    }
}

fn manifest_output(manifest: &backup::Manifest) -> ActionOutput {
    ActionOutput {
        result: manifest.to_json(),
        detail: format!(
            "{}: backup set {} written ({} bytes, sha256 {})",
            manifest.node, manifest.backup_set, manifest.size_bytes, manifest.sha256
        ),
    }
}

impl ActionHandler for BackupAction {
    fn kind(&self) -> ActionName {
        self.kind
    }

    fn idempotency(&self) -> Idempotency {
        match self.kind {
            ActionName::Backup | ActionName::Restore => Idempotency::Guarded,
            _ => Idempotency::Natural,
        }
    }

    fn read_only(&self) -> bool {
        self.kind == ActionName::Verify
    }

    fn already_done(
        &self,
        command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        let shared = self.shared.clone();
        let kind = self.kind;
        let command = command.clone();
        Box::pin(async move { shared.already_done(kind, &command).await })
    }

    fn run(
        &self,
        command: Command,
        context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let shared = self.shared.clone();
        let kind = self.kind;
        Box::pin(async move { shared.run(kind, &command, &context).await })
    }
}

/// `stop` or `start` through the `[lifecycle]` hooks.
pub struct LifecycleAction {
    kind: ActionName,
    lifecycle: backup::Lifecycle,
}

impl LifecycleAction {
    async fn apply(
        lifecycle: backup::Lifecycle,
        kind: ActionName,
        command: Command,
        context: ActionContext,
    ) -> Result<ActionOutput, ActionError> {
        let observer = Journalled { context: &context };
        let cancel = context.cancellation();
        let grace = match command.action.as_ref().and_then(|a| a.kind.as_ref()) {
            Some(Kind::Stop(stop)) => Duration::from_secs(u64::from(stop.grace_seconds)),
            _ => Duration::ZERO,
        };
        let transition = match kind {
            ActionName::Stop => {
                lifecycle
                    .stop(&command.command_id, grace, &observer, cancel)
                    .await
            }
            _ => {
                lifecycle
                    .start(&command.command_id, &observer, cancel)
                    .await
            }
        }
        .map_err(classify)?;
        let state = if kind == ActionName::Stop {
            "stopped"
        } else {
            "running"
        };
        let (ran_hook, took_ms) = match transition {
            backup::Transition::AlreadyThere => (false, 0),
            backup::Transition::Done { took } => {
                (true, u64::try_from(took.as_millis()).unwrap_or(u64::MAX))
            }
        };
        let result = json!({
            "node": lifecycle.node(),
            "state": state,
            "ran_hook": ran_hook,
            "confirmed_after_ms": took_ms,
        });
        Ok(ActionOutput {
            result: serde_json::to_vec(&result).unwrap_or_default(),
            detail: format!("{}: {state}", lifecycle.node()),
        })
    }
}

impl ActionHandler for LifecycleAction {
    fn kind(&self) -> ActionName {
        self.kind
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Natural
    }

    fn already_done(
        &self,
        _command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        // Stop and start ask the status hook first and run nothing when the node is there.
        Box::pin(async { Ok(None) })
    }

    fn run(
        &self,
        command: Command,
        context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        Box::pin(Self::apply(
            self.lifecycle.clone(),
            self.kind,
            command,
            context,
        ))
    }
}
