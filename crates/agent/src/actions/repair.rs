//! A participant's repair calls: `migrate_synchronizer` (every contract of a lost synchronizer
//! assigned to a new one), and the calls that skip sequenced events, `ignore_events` and its
//! rollback `unignore_events`, over a range of sequencer counters (not offsets) on one physical
//! synchronizer. The participant must be disconnected from it and have repair commands
//! enabled; both calls are sent with `force = false` unless the command says otherwise, so
//! counters the participant has already processed are refused by the node.
//!
//! Unguardable (DESIGN §3): no read tells whether an interrupted attempt took effect, so an
//! attempt found Started after a crash is never sent again and goes to an operator.
//!
//! The result is `{"synchronizer_id","from_inclusive","to_inclusive","ignored"}` as JSON, or
//! for a migration `{"source","target","target_sequencer_urls","force"}`.

use canton_client::types::SynchronizerConnection;
use canton_client::{CantonClient, ErrorKind};
use futures::future::BoxFuture;
use proto_sidecar::action::Kind;
use serde::Serialize;

use super::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, Command, Idempotency,
};

/// `ignore_events` or `unignore_events` on one participant.
pub struct RepairAction {
    kind: ActionName,
    client: CantonClient,
}

impl RepairAction {
    /// The repairs a participant supports, `migrate_synchronizer` included.
    pub fn handlers(client: &CantonClient) -> Vec<std::sync::Arc<dyn ActionHandler>> {
        let mut handlers: Vec<std::sync::Arc<dyn ActionHandler>> = Self::all(client)
            .into_iter()
            .map(|action| std::sync::Arc::new(action) as std::sync::Arc<dyn ActionHandler>)
            .collect();
        handlers.push(std::sync::Arc::new(MigrateSynchronizerAction {
            client: client.clone(),
        }));
        handlers
    }

    /// The event repairs a participant supports.
    fn all(client: &CantonClient) -> Vec<RepairAction> {
        [ActionName::IgnoreEvents, ActionName::UnignoreEvents]
            .into_iter()
            .map(|kind| RepairAction {
                kind,
                client: client.clone(),
            })
            .collect()
    }
}

#[derive(Serialize)]
struct Outcome<'a> {
    synchronizer_id: &'a str,
    from_inclusive: i64,
    to_inclusive: i64,
    ignored: bool,
}

/// The range a command asks for and whether it ignores or unignores it.
struct Range {
    synchronizer_id: String,
    from: i64,
    to: i64,
    force: bool,
    ignore: bool,
}

fn range_of(command: &Command) -> Option<Range> {
    match command.action.as_ref()?.kind.as_ref()? {
        Kind::IgnoreEvents(r) => Some(Range {
            synchronizer_id: r.synchronizer_id.clone(),
            from: r.from_inclusive,
            to: r.to_inclusive,
            force: r.force,
            ignore: true,
        }),
        Kind::UnignoreEvents(r) => Some(Range {
            synchronizer_id: r.synchronizer_id.clone(),
            from: r.from_inclusive,
            to: r.to_inclusive,
            force: r.force,
            ignore: false,
        }),
        _ => None,
    }
}

/// Node answers with what to do next; a refusal by the node changed nothing.
fn classify(node: &str, error: canton_client::Error) -> ActionError {
    let text = error.to_string();
    match error.kind() {
        ErrorKind::Unavailable => ActionError::Unavailable(format!(
            "{text}; nothing was changed; retry when {node} is reachable"
        )),
        ErrorKind::DeadlineExceeded => ActionError::OutcomeUnknown(format!(
            "{text}; {node} may have applied it: read its ignored events before deciding"
        )),
        _ if text.contains("REPAIR_COMMANDS_DISABLED") || text.contains("repair commands") => {
            ActionError::Failed(format!(
                "{text}; enable repair commands on {node} (canton.features.enable-repair-commands \
                 = true), restart it and run again"
            ))
        }
        _ => ActionError::Failed(text),
    }
}

impl ActionHandler for RepairAction {
    fn kind(&self) -> ActionName {
        self.kind
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Unguardable
    }

    fn run(
        &self,
        command: Command,
        _context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let node = client.node_name().to_owned();
            let range = range_of(&command).ok_or_else(|| {
                ActionError::Failed(format!(
                    "command {} carries no event range",
                    command.command_id
                ))
            })?;
            let call = if range.ignore {
                client
                    .ignore_events(&range.synchronizer_id, range.from, range.to, range.force)
                    .await
            } else {
                client
                    .unignore_events(&range.synchronizer_id, range.from, range.to, range.force)
                    .await
            };
            call.map_err(|error| classify(&node, error))?;
            let outcome = Outcome {
                synchronizer_id: &range.synchronizer_id,
                from_inclusive: range.from,
                to_inclusive: range.to,
                ignored: range.ignore,
            };
            Ok(ActionOutput {
                // Strings and numbers always serialise.
                result: serde_json::to_vec(&outcome).unwrap_or_default(),
                detail: format!(
                    "{node}: sequencer counters {}..={} of {} {}",
                    range.from,
                    range.to,
                    range.synchronizer_id,
                    if range.ignore {
                        "ignored"
                    } else {
                        "no longer ignored"
                    }
                ),
            })
        })
    }
}

/// `migrate_synchronizer`: the participant's contracts move from a lost synchronizer to a new
/// one (DESIGN §6 `repair-lost-synchronizer`). The participant must be disconnected from both.
pub struct MigrateSynchronizerAction {
    client: CantonClient,
}

#[derive(Serialize)]
struct Migrated<'a> {
    source: &'a str,
    target: &'a str,
    target_sequencer_urls: &'a [String],
    force: bool,
}

impl ActionHandler for MigrateSynchronizerAction {
    fn kind(&self) -> ActionName {
        ActionName::MigrateSynchronizer
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Unguardable
    }

    fn run(
        &self,
        command: Command,
        _context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let client = self.client.clone();
        Box::pin(async move {
            let node = client.node_name().to_owned();
            let Some(Kind::MigrateSynchronizer(migrate)) =
                command.action.as_ref().and_then(|a| a.kind.as_ref())
            else {
                return Err(ActionError::Failed(format!(
                    "command {} carries no migration",
                    command.command_id
                )));
            };
            let target = SynchronizerConnection {
                alias: migrate.target_synchronizer_alias.clone(),
                sequencer_urls: migrate.target_sequencer_urls.clone(),
                manual_connect: false,
                priority: 0,
                physical_synchronizer_id: None,
                sequencer_trust_threshold: 1,
            };
            client
                .migrate_synchronizer(&migrate.source_synchronizer_alias, &target, migrate.force)
                .await
                .map_err(|error| classify(&node, error))?;
            let outcome = Migrated {
                source: &migrate.source_synchronizer_alias,
                target: &migrate.target_synchronizer_alias,
                target_sequencer_urls: &migrate.target_sequencer_urls,
                force: migrate.force,
            };
            Ok(ActionOutput {
                result: serde_json::to_vec(&outcome).unwrap_or_default(),
                detail: format!(
                    "{node}: contracts of {} moved to {}{}",
                    migrate.source_synchronizer_alias,
                    migrate.target_synchronizer_alias,
                    if migrate.force { " (forced)" } else { "" }
                ),
            })
        })
    }
}
