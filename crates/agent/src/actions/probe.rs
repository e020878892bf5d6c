//! `probe`: the node's current probe board as the result, read-only. Names select parts:
//! `snapshot_point` (sequencer time, counter, ledger end), `connected_synchronizers`,
//! `probes` (each probe's latest status); empty = all. `dedup_safe` (participants with
//! `[backup]`, asked only by name) answers whether apps may submit again after a restore, and
//! fails with how far there is to go until they may (see `dedup`). `commitments`
//! (participants, asked only by name) adds the ACS commitment evidence of a disaster-recovery
//! timestamp (see `commitments`). `sequencer_history` (sequencers, asked only by name, with
//! the command's `member`) answers whether the sequencer still holds every event of that
//! member since it registered, and fails saying what was pruned when not (see `rehydrate`).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use proto_sidecar::action::Kind;
use serde_json::{Value, json};

use super::commitments::{COMMITMENTS, CommitmentEvidence};
use super::dedup::DedupGuard;
use super::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, Command, Idempotency,
};
use crate::probe::{ProbeBoard, ProbeOutcome};
use crate::report::Identity;

const PARTS: [&str; 3] = ["snapshot_point", "connected_synchronizers", "probes"];
const DEDUP_SAFE: &str = "dedup_safe";
const SEQUENCER_HISTORY: &str = "sequencer_history";

pub struct ProbeAction {
    board: ProbeBoard,
    identity: Identity,
    dedup: Option<Arc<DedupGuard>>,
    commitments: Option<Arc<CommitmentEvidence>>,
    sequencer: Option<canton_client::CantonClient>,
}

impl ProbeAction {
    pub fn new(board: ProbeBoard, identity: Identity, dedup: Option<Arc<DedupGuard>>) -> Self {
        Self {
            board,
            identity,
            dedup,
            commitments: None,
            sequencer: None,
        }
    }

    /// Answers the `sequencer_history` part (sequencers).
    pub fn with_sequencer_history(mut self, client: canton_client::CantonClient) -> Self {
        self.sequencer = Some(client);
        self
    }

    /// Answers the `commitments` part (participants).
    pub fn with_commitments(mut self, evidence: CommitmentEvidence) -> Self {
        self.commitments = Some(Arc::new(evidence));
        self
    }

    fn answer(&self, names: &[String]) -> Result<ActionOutput, ActionError> {
        if let Some(unknown) = names.iter().find(|n| {
            !PARTS.contains(&n.as_str())
                && ![DEDUP_SAFE, COMMITMENTS, SEQUENCER_HISTORY].contains(&n.as_str())
        }) {
            return Err(ActionError::Failed(format!(
                "{}: unknown probe part {unknown:?}; known: {}",
                self.identity.node,
                PARTS.join(", ")
            )));
        }
        let wanted = |part: &str| names.is_empty() || names.iter().any(|n| n == part);
        let observation = crate::report::observe(&self.identity, &self.board.snapshot());
        let facts = &observation.assessment.facts;
        let mut result = BTreeMap::new();
        result.insert("node", json!(self.identity.node.as_str()));
        result.insert(
            "condition",
            json!(observation.assessment.condition.to_string()),
        );
        if wanted("snapshot_point") {
            result.insert(
                "snapshot_point",
                json!({
                    "sequencer_timestamp_micros": facts.sequencer_timestamp_micros,
                    "sequencer_counter": facts.sequencer_counter,
                    "ledger_end": facts.ledger_end,
                }),
            );
        }
        if wanted("connected_synchronizers") {
            let synchronizers: Vec<Value> = facts
                .synchronizers
                .iter()
                .flatten()
                .map(|s| json!({"alias": s.alias, "id": s.id, "healthy": s.healthy}))
                .collect();
            result.insert("connected_synchronizers", Value::Array(synchronizers));
        }
        if wanted("probes") {
            let board = self.board.snapshot();
            let probes: Vec<Value> = board
                .iter()
                .map(|(name, record)| {
                    let status = match record.as_ref().map(|r| &r.outcome) {
                        None => "pending",
                        Some(ProbeOutcome::Healthy(_)) => "ok",
                        Some(_) => "failing",
                    };
                    let reason = record
                        .as_ref()
                        .and_then(|r| r.outcome.reason(name))
                        .map(|r| r.to_string());
                    json!({"name": name, "status": status, "reason": reason})
                })
                .collect();
            result.insert("probes", Value::Array(probes));
        }
        Ok(ActionOutput {
            result: serde_json::to_vec(&result).unwrap_or_default(),
            detail: format!("{}: probe board read", self.identity.node),
        })
    }
}

impl ActionHandler for ProbeAction {
    fn kind(&self) -> ActionName {
        ActionName::Probe
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Natural
    }

    fn read_only(&self) -> bool {
        true
    }

    fn run(
        &self,
        command: Command,
        _context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let (names, member) = match command.action.and_then(|a| a.kind) {
            Some(Kind::Probe(probe)) => (probe.names, probe.member),
            _ => (Vec::new(), String::new()),
        };
        let board = self.answer(&names);
        let node = self.identity.node.to_string();
        if names.iter().any(|n| n == SEQUENCER_HISTORY) {
            let client = self.sequencer.clone();
            return Box::pin(async move {
                let mut board = board?;
                let client = client.ok_or_else(|| {
                    ActionError::Failed(format!(
                        "{node}: sequencer_history is answered only by a sequencer's agent with \
                         [canton] (it reads the sequencer's pruning status)"
                    ))
                })?;
                let history = super::rehydrate::sequencer_history(&node, &client, &member).await?;
                let mut result: serde_json::Map<String, Value> =
                    serde_json::from_slice(&board.result).unwrap_or_default();
                result.insert(SEQUENCER_HISTORY.to_owned(), history);
                board.result = serde_json::to_vec(&result).unwrap_or_default();
                board.detail = format!("{node}: holds every event of {member} since it registered");
                Ok(board)
            });
        }
        if names.iter().any(|n| n == COMMITMENTS) {
            let evidence = self.commitments.clone();
            let uid = self
                .board
                .snapshot()
                .values()
                .flatten()
                .find_map(|record| record.outcome.facts().and_then(|f| f.uid.clone()));
            return Box::pin(async move {
                let mut board = board?;
                let evidence = evidence.ok_or_else(|| {
                    ActionError::Failed(format!(
                        "{node}: commitments are answered only by a participant's agent with \
                         [canton] (it reads the participant's commitment lookups)"
                    ))
                })?;
                let report = evidence.report(uid, std::time::SystemTime::now()).await?;
                let mut result: serde_json::Map<String, Value> =
                    serde_json::from_slice(&board.result).unwrap_or_default();
                result.insert(COMMITMENTS.to_owned(), report);
                board.result = serde_json::to_vec(&result).unwrap_or_default();
                board.detail = format!("{node}: ACS commitment evidence read");
                Ok(board)
            });
        }
        if !names.iter().any(|n| n == DEDUP_SAFE) {
            return Box::pin(async move { board });
        }
        let dedup = self.dedup.clone();
        Box::pin(async move {
            let mut board = board?;
            let guard = dedup.ok_or_else(|| {
                ActionError::Failed(format!(
                    "{node}: dedup_safe is answered only by a participant's agent with [backup] \
                     (it reads the node's database)"
                ))
            })?;
            let verdict = guard.assess().await?;
            let mut result: serde_json::Map<String, Value> =
                serde_json::from_slice(&board.result).unwrap_or_default();
            result.insert(DEDUP_SAFE.to_owned(), verdict.clone());
            board.result = serde_json::to_vec(&result).unwrap_or_default();
            board.detail = match (
                verdict.get("processed_micros").and_then(Value::as_i64),
                verdict.get("stop_point_micros").and_then(Value::as_i64),
                verdict.get("tolerance_micros").and_then(Value::as_i64),
            ) {
                (Some(processed), Some(floor), Some(tolerance)) => format!(
                    "{node}: safe for apps: processed sequencer time is {} ms past the stop \
                     point + tolerance ({} ms)",
                    (processed - floor - tolerance) / 1000,
                    tolerance / 1000
                ),
                _ => format!("{node}: safe for apps: nothing was restored"),
            };
            Ok(board)
        })
    }
}
