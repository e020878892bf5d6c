//! The runbook definition DSL: a runbook reads as a list of steps.
//!
//! ```
//! use sidecar_core::{ActionKind, NodeKind, NodeRef, Runbook};
//! let members = vec![NodeRef::new("p1", NodeKind::Participant)];
//! let sequencers = vec![NodeRef::new("s1", NodeKind::Sequencer)];
//! let runbook = Runbook::new("backup")
//!     .action("members", ActionKind::Backup, &members).timeout_ms(600_000).done()
//!     .barrier("members-done")
//!     .action("sequencers", ActionKind::Backup, &sequencers).done();
//! assert_eq!(runbook.steps.len(), 3);
//! ```

use serde::{Deserialize, Serialize};

use crate::{ActionKind, ActionSpec, Idempotency, Millis, NodeRef, RetryPolicy, StepDef, StepKind};

const DEFAULT_TIMEOUT_MS: Millis = 300_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runbook {
    pub name: String,
    pub steps: Vec<StepDef>,
}

impl Runbook {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            steps: Vec::new(),
        }
    }

    fn push(self, id: &str, kind: StepKind) -> StepBuilder {
        StepBuilder {
            runbook: self,
            step: StepDef {
                id: id.to_owned(),
                kind,
                timeout_ms: DEFAULT_TIMEOUT_MS,
                retry: RetryPolicy::default(),
                fix_forward: false,
                best_effort: false,
            },
        }
    }

    /// One action on every node of `nodes`, in parallel.
    pub fn action(self, id: &str, action: ActionKind, nodes: &[NodeRef]) -> StepBuilder {
        self.action_spec(id, ActionSpec::new(action), nodes)
    }

    pub fn action_spec(self, id: &str, action: ActionSpec, nodes: &[NodeRef]) -> StepBuilder {
        self.push(
            id,
            StepKind::Action {
                action,
                nodes: nodes.to_vec(),
                compensation: None,
            },
        )
    }

    pub fn check(self, id: &str, probe: &str, nodes: &[NodeRef]) -> StepBuilder {
        self.push(
            id,
            StepKind::Check {
                probe: ActionSpec::new(ActionKind::Probe).param("names", probe),
                nodes: nodes.to_vec(),
            },
        )
    }

    /// A check with a probe of its own parameters (e.g. the member a part is about).
    pub fn check_spec(self, id: &str, probe: ActionSpec, nodes: &[NodeRef]) -> StepBuilder {
        self.push(
            id,
            StepKind::Check {
                probe,
                nodes: nodes.to_vec(),
            },
        )
    }

    pub fn barrier(self, id: &str) -> Self {
        self.push(id, StepKind::Barrier).done()
    }

    pub fn approval(self, id: &str, prompt: &str, nodes: &[NodeRef]) -> Self {
        self.push(
            id,
            StepKind::Approval {
                nodes: nodes.to_vec(),
                prompt: prompt.to_owned(),
            },
        )
        .done()
    }

    pub fn step_index(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.id == id)
    }
}

/// Options of the step being defined; `done()` returns to the runbook.
pub struct StepBuilder {
    runbook: Runbook,
    step: StepDef,
}

impl StepBuilder {
    pub fn timeout_ms(mut self, timeout_ms: Millis) -> Self {
        self.step.timeout_ms = timeout_ms;
        self
    }

    pub fn retry(mut self, max_attempts: u32, backoff_ms: Millis) -> Self {
        self.step.retry = RetryPolicy {
            max_attempts,
            backoff_ms,
        };
        self
    }

    pub fn fix_forward(mut self) -> Self {
        self.step.fix_forward = true;
        self
    }

    /// See [`StepDef::best_effort`].
    pub fn best_effort(mut self) -> Self {
        self.step.best_effort = true;
        self
    }

    pub fn compensate_with(mut self, compensation: ActionKind) -> Self {
        if let StepKind::Action {
            compensation: slot, ..
        } = &mut self.step.kind
        {
            *slot = Some(ActionSpec::new(compensation));
        }
        self
    }

    pub fn done(mut self) -> Runbook {
        self.runbook.steps.push(self.step);
        self.runbook
    }
}

/// One step as a dry run shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedStep {
    pub step: String,
    pub kind: &'static str,
    pub action: Option<&'static str>,
    pub nodes: Vec<String>,
    pub timeout_ms: Millis,
    pub max_attempts: u32,
    pub idempotency: Option<Idempotency>,
    pub fix_forward: bool,
    pub needs_approval: bool,
    pub compensated_by: Option<&'static str>,
}

impl std::fmt::Display for PlannedStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<24} {:<9}", self.step, self.kind)?;
        if let Some(action) = self.action {
            write!(f, " {action}")?;
        }
        if !self.nodes.is_empty() {
            write!(f, " on {}", self.nodes.join(", "))?;
        }
        if self.max_attempts > 1 {
            write!(f, " (up to {} attempts)", self.max_attempts)?;
        }
        if let Some(undo) = self.compensated_by {
            write!(f, " [undo: {undo}]")?;
        }
        if self.fix_forward {
            write!(f, " [fix forward]")?;
        }
        if self.idempotency == Some(Idempotency::Unguardable) {
            write!(f, " [never retried automatically]")?;
        }
        Ok(())
    }
}

/// Renders the steps with their nodes, without running anything.
pub fn plan(runbook: &Runbook) -> Vec<PlannedStep> {
    runbook
        .steps
        .iter()
        .map(|step| {
            let (kind, needs_approval) = match step.kind {
                StepKind::Action { .. } => ("action", false),
                StepKind::Barrier => ("barrier", false),
                StepKind::Check { .. } => ("check", false),
                StepKind::Approval { .. } => ("approval", true),
            };
            let action = step.sent_action().map(|a| a.kind);
            PlannedStep {
                step: step.id.clone(),
                kind,
                action: action.map(ActionKind::name),
                nodes: step.nodes().iter().map(|n| n.id.clone()).collect(),
                timeout_ms: step.timeout_ms,
                max_attempts: effective_attempts(step),
                idempotency: action.map(ActionKind::idempotency),
                fix_forward: step.fix_forward,
                needs_approval,
                compensated_by: step.compensation().map(|c| c.kind.name()),
            }
        })
        .collect()
}

/// Unguardable actions get exactly one automatic attempt.
pub(crate) fn effective_attempts(step: &StepDef) -> u32 {
    match step.sent_action() {
        Some(action) if action.kind.idempotency() == Idempotency::Unguardable => 1,
        Some(_) => step.retry.max_attempts.max(1),
        None => 0,
    }
}

/// The runbooks of DESIGN §6 that need only the step types here.
pub mod runbooks {
    use std::collections::BTreeMap;

    use super::*;
    use crate::NodeKind;

    /// Backup: apps (done before their participants start) → participants ∥ mediators →
    /// barrier → sequencers → verify. Sequencer backups start only after every member's
    /// backup is done, so every sequencer snapshot lies after every member snapshot.
    pub fn backup(backup_set: &str, nodes: &[NodeRef]) -> Runbook {
        let of = |kinds: &[NodeKind]| -> Vec<NodeRef> {
            nodes
                .iter()
                .filter(|n| kinds.contains(&n.kind))
                .cloned()
                .collect()
        };
        let backup = ActionSpec::new(ActionKind::Backup).param("backup_set", backup_set);
        let verify = ActionSpec::new(ActionKind::Verify).param("backup_set", backup_set);
        Runbook::new("backup")
            .action_spec("apps", backup.clone(), &of(&[NodeKind::App]))
            .timeout_ms(900_000)
            .done()
            .action_spec(
                "members",
                backup.clone(),
                &of(&[NodeKind::Participant, NodeKind::Mediator]),
            )
            .timeout_ms(1_800_000)
            .done()
            .barrier("members-done")
            .action_spec("sequencers", backup, &of(&[NodeKind::Sequencer]))
            .timeout_ms(1_800_000)
            .done()
            .action_spec("verify", verify, nodes)
            .done()
    }

    /// Restore of a whole backup set (DESIGN §6): approval naming every node (a sequencer
    /// restore forces every member back to the set) → stop apps, members, sequencers →
    /// restore every node → start sequencers, then members → reconnect participants → wait
    /// until each participant has seen synchronizer time past its stop point plus the
    /// ledger-time-record-time tolerance (command deduplication is only safe then) → start
    /// apps. Restores are fix-forward: once databases are replaced there is nothing to undo.
    pub fn restore(backup_set: &str, nodes: &[NodeRef]) -> Runbook {
        restore_replicated(backup_set, nodes, &BTreeMap::new())
    }

    /// [`restore`] for nodes with HA replicas (`replicas`: logical id → replica ids): every
    /// replica is stopped and started (each runs its own process), while the restore itself,
    /// the reconnect and the dedup check run once per logical node — the replicas share one
    /// database, and the restore refuses while any replica is still connected to it.
    pub fn restore_replicated(
        backup_set: &str,
        nodes: &[NodeRef],
        replicas: &BTreeMap<String, Vec<String>>,
    ) -> Runbook {
        let of = |kinds: &[NodeKind]| -> Vec<NodeRef> {
            nodes
                .iter()
                .filter(|n| kinds.contains(&n.kind))
                .cloned()
                .collect()
        };
        let every_replica = |logical: Vec<NodeRef>| -> Vec<NodeRef> {
            logical
                .into_iter()
                .flat_map(|node| match replicas.get(&node.id) {
                    Some(ids) if !ids.is_empty() => ids
                        .iter()
                        .map(|id| NodeRef::new(id, node.kind))
                        .collect::<Vec<_>>(),
                    _ => vec![node],
                })
                .collect()
        };
        let apps = of(&[NodeKind::App]);
        let members = of(&[NodeKind::Participant, NodeKind::Mediator]);
        let participants = of(&[NodeKind::Participant]);
        let sequencers = of(&[NodeKind::Sequencer]);
        let member_processes = every_replica(members.clone());
        let forced_back: Vec<&str> = participants.iter().map(|n| n.id.as_str()).collect();
        let prompt = if sequencers.is_empty() {
            format!("restore backup set {backup_set} onto {} nodes", nodes.len())
        } else {
            format!(
                "restore backup set {backup_set} including the sequencer: participants {} go \
                 back to the set and lose what they processed after it",
                forced_back.join(", ")
            )
        };
        let restore = ActionSpec::new(ActionKind::Restore).param("backup_set", backup_set);
        Runbook::new("restore")
            .approval("approve", &prompt, nodes)
            .action("stop-apps", ActionKind::Stop, &apps)
            .timeout_ms(120_000)
            .done()
            .action("stop-members", ActionKind::Stop, &member_processes)
            .timeout_ms(120_000)
            .done()
            .action("stop-sequencers", ActionKind::Stop, &sequencers)
            .timeout_ms(120_000)
            .done()
            .barrier("all-stopped")
            .action_spec("restore", restore, nodes)
            .timeout_ms(3_600_000)
            .fix_forward()
            .done()
            .action("start-sequencers", ActionKind::Start, &sequencers)
            .timeout_ms(300_000)
            .fix_forward()
            .done()
            .action("start-members", ActionKind::Start, &member_processes)
            .timeout_ms(300_000)
            .fix_forward()
            .done()
            .action("reconnect", ActionKind::Reconnect, &participants)
            .timeout_ms(120_000)
            .fix_forward()
            .done()
            .check("dedup-safe", "dedup_safe", &participants)
            .retry(120, 1_000)
            .timeout_ms(900_000)
            .fix_forward()
            .done()
            .action("start-apps", ActionKind::Start, &apps)
            .timeout_ms(300_000)
            .fix_forward()
            .done()
    }

    /// Synchronized disconnect of every node from a synchronizer, reconnecting on failure.
    pub fn disconnect(synchronizer_alias: &str, nodes: &[NodeRef]) -> Runbook {
        Runbook::new("disconnect")
            .action_spec(
                "disconnect",
                ActionSpec::new(ActionKind::Disconnect)
                    .param("synchronizer_alias", synchronizer_alias),
                nodes,
            )
            .timeout_ms(60_000)
            .compensate_with(ActionKind::Reconnect)
            .done()
            .check("verify-disconnected", "connected_synchronizers", nodes)
            .done()
    }
}
