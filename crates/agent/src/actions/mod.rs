//! The action interface: what the command path runs once a command passed every check and is
//! journalled Started. One [`ActionHandler`] per [`ActionName`], registered in an
//! [`ActionRegistry`]; an action without a handler is refused as not supported.
//!
//! A handler never sees NATS, the journal or acks. It gets the decoded [`Command`] and an
//! [`ActionContext`] (ids, a rate-limited progress reporter, a hook that journals a child
//! process group before the child does work, a cancellation token) and returns an
//! [`ActionOutput`] or a classified [`ActionError`]. The command path journals the outcome,
//! signs the ack and acks the message.
//!
//! Idempotency (declared by the handler, DESIGN §3) decides what happens to an attempt found
//! Started after a crash: `Natural` and `Guarded` handlers are asked [`ActionHandler::already_done`]
//! first and run again only when it says no; `Unguardable` ones are never run again (the
//! outcome becomes `OutcomeUnknown` for an operator to decide).

mod backup;
mod commitments;
mod connectivity;
mod dedup;
mod migration;
mod probe;
mod rehydrate;
mod repair;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

pub use backup::{AGENT_APPLICATION_NAME, BackupAction, LifecycleAction, backup_handlers};
pub use connectivity::ConnectivityAction;
pub use probe::ProbeAction;
pub use proto_sidecar::Command;
pub use repair::RepairAction;
pub use sidecar_core::Idempotency;
pub use sidecar_trust::ActionName;

/// What a successful action reports: `result` travels in the Done ack (its SHA-256 is
/// signed), e.g. a JSON manifest; `detail` is a line for operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActionOutput {
    pub result: Vec<u8>,
    pub detail: String,
}

/// Why an action did not succeed. Details name the node, what happened and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The action ran (or was refused by the node) and did not take effect as asked.
    #[error("{0}")]
    Failed(String),
    /// Something the action needs (the node, its database) is unreachable; nothing changed and
    /// the same command may succeed later.
    #[error("{0}")]
    Unavailable(String),
    /// The action may or may not have taken effect (e.g. a call timed out after it was sent).
    #[error("{0}")]
    OutcomeUnknown(String),
    /// The action stopped because the agent is stopping (the cancellation token fired). The
    /// attempt stays Started in the journal and is resolved after the restart.
    #[error("interrupted by the agent stopping")]
    Interrupted,
}

/// Progress of a long action, as sent in signed Progress acks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub unit: String,
    pub message: String,
}

/// What the command path offers a running action; implemented by the command path, faked in
/// handler tests.
pub trait ActionHooks: Send + Sync {
    /// Reports progress; the command path rate-limits what it publishes and also tells the
    /// server the command is still being worked on (so it is not redelivered meanwhile).
    fn progress(&self, progress: Progress);

    /// Journals a child process group (fsynced) before it may do any work, so a restart after
    /// a crash kills it instead of letting it run on unsupervised.
    fn record_child(&self, pgid: i32) -> BoxFuture<'static, Result<(), ActionError>>;
}

/// Everything a running action gets besides the command.
#[derive(Clone)]
pub struct ActionContext {
    pub command_id: String,
    pub attempt: u32,
    hooks: Arc<dyn ActionHooks>,
    cancel: CancellationToken,
}

impl ActionContext {
    pub fn new(
        command_id: impl Into<String>,
        attempt: u32,
        hooks: Arc<dyn ActionHooks>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            command_id: command_id.into(),
            attempt,
            hooks,
            cancel,
        }
    }

    pub fn progress(&self, progress: Progress) {
        self.hooks.progress(progress);
    }

    /// Call right after spawning a child in its own process group and before letting it work
    /// (e.g. spawn it stopped, or have it wait on a pipe): the group is journalled first.
    pub async fn record_child(&self, pgid: i32) -> Result<(), ActionError> {
        self.hooks.record_child(pgid).await
    }

    /// Fires when the agent stops; return [`ActionError::Interrupted`] soon after.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.cancel
    }
}

/// One action the agent can execute.
pub trait ActionHandler: Send + Sync {
    fn kind(&self) -> ActionName;

    fn idempotency(&self) -> Idempotency;

    /// Read-only actions (probe) may run alongside others; every other action on the node
    /// runs one at a time.
    fn read_only(&self) -> bool {
        false
    }

    /// `Some(output)` when the effect is already in place (asked before re-running an attempt
    /// interrupted by a crash). Guarded actions must answer; natural ones answer when cheap,
    /// which spares the node a repeated call. The default says "not known to be done".
    fn already_done(
        &self,
        command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        let _ = command;
        Box::pin(async { Ok(None) })
    }

    fn run(
        &self,
        command: Command,
        context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>>;
}

/// A handler registered for an action that already has one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("action {0} has two handlers; register one per action")]
pub struct DuplicateHandler(pub ActionName);

/// Handlers by action.
#[derive(Clone, Default)]
pub struct ActionRegistry {
    handlers: BTreeMap<ActionName, Arc<dyn ActionHandler>>,
}

impl ActionRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, handler: Arc<dyn ActionHandler>) -> Result<(), DuplicateHandler> {
        let kind = handler.kind();
        if self.handlers.contains_key(&kind) {
            return Err(DuplicateHandler(kind));
        }
        self.handlers.insert(kind, handler);
        Ok(())
    }

    pub fn get(&self, action: ActionName) -> Option<Arc<dyn ActionHandler>> {
        self.handlers.get(&action).cloned()
    }

    pub fn actions(&self) -> impl Iterator<Item = ActionName> + '_ {
        self.handlers.keys().copied()
    }
}

/// Why the standard handlers could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("building the Canton client from the [canton] section: {0}")]
    Canton(#[from] canton_client::Error),
    #[error("building the backup and lifecycle actions from [backup]/[lifecycle]: {0}")]
    Backup(#[from] sidecar_backup::Error),
}

/// The handlers this build has for the configured node: `probe` everywhere, connectivity,
/// event repairs (ignore/unignore) and `rehydrate` (which refuses without `[rehydrate]`) on
/// participants, backup/restore/verify with `[backup]`,
/// stop/start with `[lifecycle]`, the migration dump and redeploy of network DR with
/// `[splice]`. Other crates add theirs with [`ActionRegistry::register`].
pub fn standard_registry(
    config: &crate::AgentConfig,
    board: crate::ProbeBoard,
    identity: crate::report::Identity,
) -> Result<ActionRegistry, RegistryError> {
    let mut registry = ActionRegistry::new();
    let client = crate::probes::canton_client(config)?;
    let dedup = dedup::guard_for(config, client.clone())?;
    let mut probe = ProbeAction::new(board, identity, dedup.clone());
    if let Some(client) = &client
        && client.node_kind() == canton_client::NodeKind::Participant
    {
        probe = probe.with_commitments(commitments::CommitmentEvidence::new(
            config.node.logical(),
            client.clone(),
        ));
    }
    if let Some(client) = &client
        && client.node_kind() == canton_client::NodeKind::Sequencer
    {
        probe = probe.with_sequencer_history(client.clone());
    }
    let mut handlers: Vec<Arc<dyn ActionHandler>> = vec![Arc::new(probe)];
    if let Some(client) = client
        && client.node_kind() == canton_client::NodeKind::Participant
    {
        for action in ConnectivityAction::all(&client) {
            handlers.push(Arc::new(action));
        }
        handlers.extend(RepairAction::handlers(&client));
        handlers.push(rehydrate::rehydrate_handler(
            config,
            client.clone(),
            dedup.clone(),
        ));
    }
    handlers.extend(backup_handlers(config, dedup)?);
    if let Some(splice) = &config.splice {
        handlers.extend(migration::migration_handlers(config.node.as_str(), splice));
    }
    for handler in handlers {
        // Each built-in handler names a distinct action.
        let _ = registry.register(handler);
    }
    Ok(registry)
}
