//! Disaster-recovery timestamps as the coordinator knows them: the commitment evidence one
//! `dr-timestamp` run collected (the `commitments` probe part of every listed SV participant),
//! judged by `sidecar_core::dr_timestamp` and recorded once under `dr.<run>` in the runs
//! bucket, so everyone who asks later sees the same proposal.
//!
//! The evidence lists our organisation's participants; other organisations accept the
//! result by signature through `crate::proposals`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sidecar_core::dr_timestamp::{CommitmentReport, Missing, Proposal, Quorum, propose};
use sidecar_core::{NodeStatus, RunState};

use crate::catalogue::CatalogueError;

/// The step whose results are the evidence.
pub const EVIDENCE_STEP: &str = "evidence";
/// The agent's probe part that answers it.
pub const PROBE_PART: &str = "commitments";
const DEFAULT_MARGIN: Duration = Duration::from_secs(15 * 60);

/// The key of a run's recorded proposal in the runs bucket.
pub fn record_key(run: &str) -> String {
    format!("dr.{run}")
}

/// How the evidence is judged, from the run's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub quorum: Quorum,
    pub margin_micros: i64,
}

impl Settings {
    /// `quorum` (default 2/3 of the listed participants) and `margin` (default 15m).
    pub fn from_parameters(params: &BTreeMap<String, String>) -> Result<Self, CatalogueError> {
        let bad = |key: &str, detail: String| CatalogueError::BadParameter {
            key: key.to_owned(),
            detail,
        };
        let quorum = match params.get("quorum") {
            None => Quorum::default(),
            Some(text) => Quorum::parse(text).map_err(|detail| bad("quorum", detail))?,
        };
        let margin = match params.get("margin") {
            None => DEFAULT_MARGIN,
            Some(text) => humantime::parse_duration(text).map_err(|error| {
                bad(
                    "margin",
                    format!("{text:?} is not a duration like 15m or 2s ({error})"),
                )
            })?,
        };
        let margin_micros = i64::try_from(margin.as_micros())
            .map_err(|_| bad("margin", "duration too long".to_owned()))?;
        Ok(Self {
            quorum,
            margin_micros,
        })
    }
}

/// The recorded outcome: a proposal, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrRecord {
    pub run: String,
    pub organisation: String,
    pub proposal: Option<Proposal>,
    pub error: Option<String>,
    pub recorded_at_unix_ms: i64,
}

/// The report inside one participant's probe answer.
fn report_of(node: &str, result: &[u8]) -> Result<CommitmentReport, String> {
    #[derive(Deserialize)]
    struct Answer {
        commitments: Evidence,
    }
    #[derive(Deserialize)]
    struct Evidence {
        report: CommitmentReport,
    }
    let answer: Answer = serde_json::from_slice(result)
        .map_err(|e| format!("its answer carries no commitment report ({e})"))?;
    if answer.commitments.report.node != node {
        return Err(format!(
            "its answer is the report of {}",
            answer.commitments.report.node
        ));
    }
    Ok(answer.commitments.report)
}

/// Judges a finished run's evidence. `results` holds the Done answers by node.
pub fn assess(
    state: &RunState,
    params: &BTreeMap<String, String>,
    results: &BTreeMap<String, Vec<u8>>,
    organisation: &str,
    now_unix_ms: i64,
) -> DrRecord {
    let outcome = judge(state, params, results);
    let (proposal, error) = match outcome {
        Ok(proposal) => (Some(proposal), None),
        Err(error) => (None, Some(error)),
    };
    DrRecord {
        run: state.run_id.clone(),
        organisation: organisation.to_owned(),
        proposal,
        error,
        recorded_at_unix_ms: now_unix_ms,
    }
}

fn judge(
    state: &RunState,
    params: &BTreeMap<String, String>,
    results: &BTreeMap<String, Vec<u8>>,
) -> Result<Proposal, String> {
    let settings = Settings::from_parameters(params).map_err(|e| e.to_string())?;
    let step = state
        .steps
        .iter()
        .find(|s| s.id == EVIDENCE_STEP)
        .ok_or_else(|| format!("run {} has no {EVIDENCE_STEP} step", state.run_id))?;
    let listed: Vec<String> = state
        .runbook
        .steps
        .iter()
        .filter(|def| def.id == EVIDENCE_STEP)
        .flat_map(|def| def.nodes().iter().map(|n| n.id.clone()))
        .collect();
    let mut reports = Vec::new();
    let mut missing = Vec::new();
    for node in &listed {
        let status = step.nodes.get(node).map(|run| &run.status);
        let reason = match status {
            Some(NodeStatus::Done { .. }) => match results.get(node) {
                Some(result) => match report_of(node, result) {
                    Ok(report) => {
                        reports.push(report);
                        continue;
                    }
                    Err(reason) => reason,
                },
                None => "its answer was not stored".to_owned(),
            },
            Some(NodeStatus::TimedOut) => {
                "no answer within the deadline: agent down or unreachable".to_owned()
            }
            Some(NodeStatus::Failed { reason } | NodeStatus::Rejected { reason }) => reason.clone(),
            Some(other) => format!("ended {other:?}"),
            None => "never asked".to_owned(),
        };
        missing.push(Missing {
            node: node.clone(),
            reason,
        });
    }
    propose(
        &listed,
        &reports,
        &missing,
        settings.quorum,
        settings.margin_micros,
    )
    .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecar_core::{Event, NodeKind, NodeRef, Runbook, on_event, start_run};

    fn answer(node: &str, uid: &str, peers: &[(&str, &[i64])]) -> Vec<u8> {
        serde_json::json!({
            "node": node,
            "commitments": {"synchronizer_id": "global::1", "report": {
                "node": node, "participant_uid": uid,
                "counter_participants": peers.iter().map(|(peer, ends)| serde_json::json!({
                    "uid": peer, "matched": ends,
                })).collect::<Vec<_>>(),
            }},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_silent_participant_counts_against_the_quorum_and_is_named() {
        let listed = [
            NodeRef::new("p1", NodeKind::Participant),
            NodeRef::new("p2", NodeKind::Participant),
            NodeRef::new("p3", NodeKind::Participant),
        ];
        let runbook = Runbook::new("dr-timestamp")
            .check(EVIDENCE_STEP, PROBE_PART, &listed)
            .retry(1, 0)
            .best_effort()
            .done();
        let (mut state, _) = on_event(&start_run("dr-1", runbook, 1, 0), Event::Started, 0);
        let done = |state: &RunState, node: &str| {
            on_event(
                state,
                Event::Ack {
                    command_id: format!("dr-1/{EVIDENCE_STEP}/{node}"),
                    attempt: 1,
                    status: sidecar_core::AckStatus::Done {
                        result_hash: vec![1],
                    },
                },
                1,
            )
            .0
        };
        state = done(&state, "p1");
        state = done(&state, "p2");
        let results: BTreeMap<String, Vec<u8>> = [
            ("p1".to_owned(), answer("p1", "u1", &[("u2", &[10, 20])])),
            ("p2".to_owned(), answer("p2", "u2", &[("u1", &[10, 20])])),
        ]
        .into();
        let params: BTreeMap<String, String> = [("margin".to_owned(), "5us".to_owned())].into();
        let record = assess(&state, &params, &results, "operator", 0);
        let proposal = record.proposal.expect("2 of 3 agree");
        assert_eq!(proposal.timestamp_micros, 15);
        assert_eq!(proposal.missing[0].node, "p3");

        let strict: BTreeMap<String, String> = [("quorum".to_owned(), "3".to_owned())].into();
        let error = assess(&state, &strict, &results, "operator", 0)
            .error
            .expect("3 needed");
        assert!(error.contains("2 of 3") && error.contains("p3"), "{error}");
    }
}
