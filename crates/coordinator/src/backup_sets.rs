//! Backup sets as the coordinator knows them: the manifests its agents returned for one backup
//! run, checked against the ordering rule (`sidecar_core::backup_set`) and recorded as the
//! set's manifest of manifests under `set.<backup set>` in the runs bucket. A restore starts
//! only from a recorded set that satisfies the rule.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sidecar_core::backup_set::{SetVerdict, SnapshotPoint, Violation, check_backup_set};
use sidecar_core::{NodeKind, RunStatus};

use crate::driver::record::{RunRecord, result_key};

/// The steps of the backup runbook whose results are manifests.
pub const DUMP_STEPS: [&str; 3] = ["apps", "members", "sequencers"];

/// The key of a set's record in the runs bucket.
pub fn set_key(backup_set: &str) -> String {
    format!("set.{backup_set}")
}

/// The manifest of manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRecord {
    pub backup_set: String,
    /// The backup runs that wrote into it, oldest first, comma-separated.
    pub run: String,
    pub organisation: String,
    pub points: Vec<SnapshotPoint>,
    /// Present when the set satisfies the rule.
    pub verdict: Option<SetVerdict>,
    pub violations: Vec<Violation>,
    pub recorded_at_unix_ms: i64,
}

impl SetRecord {
    /// One line for operators: where the set lies, or why it must not be restored.
    pub fn summary(&self) -> String {
        match &self.verdict {
            Some(verdict) => match verdict.sequencers_from {
                Some(from) => format!(
                    "backup set {} is consistent: {} nodes; members up to sequencer time {} µs, \
                     sequencers from {from} µs (margin {} µs)",
                    self.backup_set,
                    verdict.nodes,
                    verdict.members_up_to,
                    from - verdict.members_up_to
                ),
                None => format!(
                    "backup set {} is consistent: {} nodes, no sequencer",
                    self.backup_set, verdict.nodes
                ),
            },
            None => format!(
                "backup set {} must not be restored: {}",
                self.backup_set,
                self.violations
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// The fields of an agent's backup manifest the rule needs (the manifest has more; unknown
/// fields are ignored so newer agents stay readable).
#[derive(Deserialize)]
struct ManifestView {
    node: String,
    kind: String,
    #[serde(default)]
    participant: Option<String>,
    backup_set: String,
    #[serde(default)]
    sequencer_time_micros: Option<IntervalView>,
    #[serde(default)]
    ledger_offset: Option<IntervalView>,
}

#[derive(Deserialize)]
struct IntervalView {
    before: i64,
    after: i64,
}

#[derive(Debug, thiserror::Error)]
#[error("the manifest {node} returned for set {backup_set} is unusable: {detail}")]
pub struct ManifestError {
    pub node: String,
    pub backup_set: String,
    pub detail: String,
}

/// Reads one node's manifest (the ack result of its backup command).
pub fn point_of(
    node: &str,
    backup_set: &str,
    manifest: &[u8],
) -> Result<SnapshotPoint, ManifestError> {
    let error = |detail: String| ManifestError {
        node: node.to_owned(),
        backup_set: backup_set.to_owned(),
        detail,
    };
    let view: ManifestView =
        serde_json::from_slice(manifest).map_err(|e| error(format!("not a manifest ({e})")))?;
    if view.node != node || view.backup_set != backup_set {
        return Err(error(format!(
            "it names node {} of set {}",
            view.node, view.backup_set
        )));
    }
    let kind = match view.kind.as_str() {
        "participant" => NodeKind::Participant,
        "sequencer" => NodeKind::Sequencer,
        "mediator" => NodeKind::Mediator,
        "app" => NodeKind::App,
        other => return Err(error(format!("unknown node kind {other:?}"))),
    };
    let (sequencer_time_before, sequencer_time_after) = view
        .sequencer_time_micros
        .as_ref()
        .map_or((0, 0), |i| (i.before, i.after));
    let (ledger_offset_before, ledger_offset_after) =
        view.ledger_offset.map_or((0, 0), |i| (i.before, i.after));
    if kind != NodeKind::App && view.sequencer_time_micros.is_none() {
        return Err(error(
            "it has no snapshot interval in sequencer time; the set cannot be checked".into(),
        ));
    }
    Ok(SnapshotPoint {
        node: view.node,
        kind,
        participant: view.participant,
        sequencer_time_before,
        sequencer_time_after,
        ledger_offset_before,
        ledger_offset_after,
    })
}

/// The backup set a backup run wrote: its `backup_set` parameter, else its run id.
pub fn set_of(run: &RunRecord) -> String {
    run.parameters
        .get("backup_set")
        .cloned()
        .unwrap_or_else(|| run.run_id().to_owned())
}

/// Whether `run` is one of `organisation`'s backup runs.
pub fn is_backup_of(run: &RunRecord, organisation: &str) -> bool {
    run.state.runbook.name == "backup" && run.organisation == organisation
}

/// Why the manifests of a set could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SetReadError {
    #[error("reading the runs bucket: {0}")]
    Unavailable(String),
    #[error("backup run {run} of set {backup_set} is {status:?}, not succeeded")]
    NotSucceeded {
        run: String,
        backup_set: String,
        status: RunStatus,
    },
    #[error("backup run {run} has no manifest from {node}; take the backup again")]
    MissingManifest { run: String, node: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Each node's latest snapshot point in `backup_set`, from the manifests the backup `runs`
/// (oldest first) returned: a set completed by a later run is judged as the whole it is on
/// disk. Every run must have succeeded.
pub async fn latest_points(
    runs_bucket: &sidecar_bus::Kv,
    backup_set: &str,
    runs: &[RunRecord],
) -> Result<Vec<SnapshotPoint>, SetReadError> {
    let mut latest: BTreeMap<String, SnapshotPoint> = BTreeMap::new();
    for run in runs {
        if run.state.status != RunStatus::Succeeded {
            return Err(SetReadError::NotSucceeded {
                run: run.run_id().to_owned(),
                backup_set: backup_set.to_owned(),
                status: run.state.status,
            });
        }
        for step in DUMP_STEPS {
            let Some(state) = run.state.steps.iter().find(|s| s.id == step) else {
                continue;
            };
            for node in state.nodes.keys() {
                let result = runs_bucket
                    .get(&result_key(run.run_id(), step, node))
                    .await
                    .map_err(|e| SetReadError::Unavailable(e.to_string()))?
                    .ok_or_else(|| SetReadError::MissingManifest {
                        run: run.run_id().to_owned(),
                        node: node.clone(),
                    })?;
                latest.insert(node.clone(), point_of(node, backup_set, &result.value)?);
            }
        }
    }
    Ok(latest.into_values().collect())
}

/// Checks the set and builds its record.
pub fn assess(
    backup_set: &str,
    run: &str,
    organisation: &str,
    points: Vec<SnapshotPoint>,
    now_unix_ms: i64,
) -> SetRecord {
    let (verdict, violations) = match check_backup_set(&points) {
        Ok(verdict) => (Some(verdict), Vec::new()),
        Err(violations) => (None, violations),
    };
    SetRecord {
        backup_set: backup_set.to_owned(),
        run: run.to_owned(),
        organisation: organisation.to_owned(),
        points,
        verdict,
        violations,
        recorded_at_unix_ms: now_unix_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(node: &str, kind: &str, before: i64, after: i64) -> Vec<u8> {
        serde_json::json!({
            "format": 1, "node": node, "kind": kind, "organisation": "operator",
            "backup_set": "bs1", "command_id": format!("r/members/{node}"),
            "sequencer_time_micros": {"before": before, "after": after},
            "ledger_offset": {"before": 3, "after": 4}, "sha256": "00",
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn manifests_become_points_and_an_out_of_order_set_is_named() {
        let p1 = point_of("p1", "bs1", &manifest("p1", "participant", 10, 20)).unwrap();
        assert_eq!(
            (p1.sequencer_time_before, p1.sequencer_time_after),
            (10, 20)
        );
        assert_eq!((p1.ledger_offset_before, p1.ledger_offset_after), (3, 4));
        let s1 = point_of("s1", "bs1", &manifest("s1", "sequencer", 15, 30)).unwrap();
        let record = assess("bs1", "backup-1", "operator", vec![p1, s1], 0);
        assert!(record.verdict.is_none());
        let summary = record.summary();
        assert!(
            summary.contains("must not be restored") && summary.contains("p1"),
            "{summary}"
        );
    }

    #[test]
    fn a_manifest_of_another_node_or_set_is_refused() {
        let bytes = manifest("p2", "participant", 1, 2);
        assert!(point_of("p1", "bs1", &bytes).is_err());
        assert!(point_of("p2", "bs2", &bytes).is_err());
        assert!(point_of("p2", "bs1", b"not json").is_err());
    }

    #[test]
    fn a_consistent_set_reports_its_margin() {
        let points = vec![
            point_of("p1", "bs1", &manifest("p1", "participant", 10, 20)).unwrap(),
            point_of("s1", "bs1", &manifest("s1", "sequencer", 25, 30)).unwrap(),
        ];
        let record = assess("bs1", "backup-1", "operator", points, 0);
        assert!(
            record.summary().contains("margin 5 µs"),
            "{}",
            record.summary()
        );
    }
}
