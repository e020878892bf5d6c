//! Opt-in deletion of old backup sets. Historical backups matter to SVs, so without a
//! `[retention]` setting nothing is ever deleted.
//!
//! After a backup run succeeds the coordinator judges every set of its organisation: a set is
//! *verified* when every backup run that wrote into it finished and succeeded (each ran the
//! `verify` step over every manifest) and the set satisfies the ordering rule. Only verified
//! sets count toward the kept ones and only verified sets are ever deleted: a set in progress,
//! failed or out of order stays whatever its age. A set goes when neither rule keeps it —
//! beyond the newest `keep_sets` and older than `keep_for` (each rule alone when only one is
//! set).
//!
//! Deletion is a run of its own (`prune-backups`, one per set, its id derived from the set so a
//! second pass finds it): a `delete_backup` command to every node with a manifest in the set,
//! executed by the agent that owns the files (journalled and idempotent like any command). A
//! set with such a run is deleted as far as retention is concerned, whatever the run's
//! outcome: a failed deletion is for an operator to look at, not to retry blindly.

use std::collections::BTreeMap;
use std::time::Duration;

use sidecar_bus::Bucket;
use sidecar_core::{ActionKind, ActionSpec, Millis, NodeRef, RunStatus, Runbook};

use crate::backup_sets::{self, SetReadError};
use crate::driver::ports::{Clock, RunStore, SystemClock};
use crate::driver::record::{RunRecord, run_key};
use crate::driver::{DriverError, StartRequest};
use crate::nats::NatsStore;
use crate::service::Shared;

/// The runbook that deletes one backup set.
pub const PRUNE_RUNBOOK: &str = "prune-backups";

/// `[retention]` of the coordinator configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the newest this many verified sets.
    pub keep_sets: Option<usize>,
    /// Keep every verified set younger than this.
    pub keep_for: Option<Duration>,
}

impl Retention {
    /// Without a rule nothing is deleted.
    pub fn enabled(&self) -> bool {
        self.keep_sets.is_some() || self.keep_for.is_some()
    }
}

/// What retention knows of one backup set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetState {
    pub backup_set: String,
    /// Every backup run into it succeeded and the set satisfies the ordering rule.
    pub verified: bool,
    /// When the last backup run into it finished (or was last updated, while running).
    pub finished_at: Millis,
    /// A deletion run exists for it.
    pub deleted: bool,
}

/// The sets `policy` deletes at `now`: verified, not deleted yet, kept by neither rule.
pub fn to_delete<'a>(policy: &Retention, sets: &'a [SetState], now: Millis) -> Vec<&'a SetState> {
    if !policy.enabled() {
        return Vec::new();
    }
    let mut verified: Vec<&SetState> = sets
        .iter()
        .filter(|set| set.verified && !set.deleted)
        .collect();
    // Newest first; the name breaks ties so the choice is the same on every pass.
    verified.sort_by(|a, b| (b.finished_at, &b.backup_set).cmp(&(a.finished_at, &a.backup_set)));
    verified
        .into_iter()
        .enumerate()
        .filter(|(rank, set)| {
            let kept_by_count = policy.keep_sets.is_some_and(|keep| *rank < keep);
            let kept_by_age = policy.keep_for.is_some_and(|age| {
                let age_ms = Millis::try_from(age.as_millis()).unwrap_or(Millis::MAX);
                now.saturating_sub(set.finished_at) < age_ms
            });
            !kept_by_count && !kept_by_age
        })
        .map(|(_, set)| set)
        .collect()
}

/// Why a retention pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("reading run records: {0}")]
    Store(String),
    #[error("reading backup set {backup_set}: {source}")]
    Set {
        backup_set: String,
        source: SetReadError,
    },
    #[error("starting the deletion of backup set {backup_set}: {source}")]
    Start {
        backup_set: String,
        source: DriverError,
    },
}

/// The run id of the deletion of `backup_set`.
pub fn prune_run_id(organisation: &str, backup_set: &str) -> String {
    crate::catalogue::run_id(PRUNE_RUNBOOK, organisation, &prune_request_id(backup_set))
}

fn prune_request_id(backup_set: &str) -> String {
    format!("retention/{backup_set}")
}

/// The runbook deleting `backup_set` from `nodes`; one step per backup `target` it was
/// written under.
fn prune_runbook(backup_set: &str, targets: &[String], nodes: &[NodeRef]) -> Runbook {
    let mut runbook = Runbook::new(PRUNE_RUNBOOK);
    for (index, target) in targets.iter().enumerate() {
        let step = if index == 0 {
            "delete".to_owned()
        } else {
            format!("delete-{}", index + 1)
        };
        runbook = runbook
            .action_spec(
                &step,
                ActionSpec::new(ActionKind::DeleteBackup)
                    .param("backup_set", backup_set)
                    .param("target", target),
                nodes,
            )
            .timeout_ms(300_000)
            .retry(3, 2_000)
            .done();
    }
    runbook
}

/// One set as the runs bucket describes it.
struct Found {
    runs: Vec<RunRecord>,
    deleted: bool,
}

/// Why the set in `found` is not verified (`None` when it is), for the log; `Err` when the runs bucket
/// cannot be read, so the pass stops instead of judging on missing data.
async fn unverified_because(
    runs_bucket: &sidecar_bus::Kv,
    backup_set: &str,
    found: &Found,
) -> Result<Option<String>, String> {
    if let Some(run) = found
        .runs
        .iter()
        .find(|run| run.state.status != RunStatus::Succeeded)
    {
        return Ok(Some(format!(
            "backup run {} is {:?}",
            run.run_id(),
            run.state.status
        )));
    }
    match backup_sets::latest_points(runs_bucket, backup_set, &found.runs).await {
        Ok(points) => Ok(sidecar_core::backup_set::check_backup_set(&points)
            .err()
            .map(|violations| {
                let named: Vec<String> = violations.iter().map(ToString::to_string).collect();
                named.join("; ")
            })),
        Err(SetReadError::Unavailable(detail)) => Err(detail),
        Err(other) => Ok(Some(other.to_string())),
    }
}

/// Judges every backup set of the organisation and starts the deletion of those the policy
/// lets go. Returns the sets whose deletion started.
pub async fn apply(shared: &Shared) -> Result<Vec<String>, RetentionError> {
    let policy = shared.config.retention;
    if !policy.enabled() {
        return Ok(Vec::new());
    }
    let store = NatsStore::new(&shared.network);
    let mut sets: BTreeMap<String, Found> = BTreeMap::new();
    let keys = store
        .run_keys()
        .await
        .map_err(|e| RetentionError::Store(e.to_string()))?;
    let mut prunes = Vec::new();
    for key in keys {
        let Ok(Some(stored)) = store.load(&run_key(&key)).await else {
            continue;
        };
        let Ok(record) = RunRecord::decode(&stored.value) else {
            continue;
        };
        if record.organisation != shared.organisation {
            continue;
        }
        if record.state.runbook.name == PRUNE_RUNBOOK {
            if let Some(set) = record.parameters.get("backup_set") {
                prunes.push(set.clone());
            }
        } else if backup_sets::is_backup_of(&record, &shared.organisation) {
            sets.entry(backup_sets::set_of(&record))
                .or_insert_with(|| Found {
                    runs: Vec::new(),
                    deleted: false,
                })
                .runs
                .push(record);
        }
    }
    for set in prunes {
        if let Some(found) = sets.get_mut(&set) {
            found.deleted = true;
        }
    }

    let runs_bucket = shared.network.kv(Bucket::Runs);
    let mut states = Vec::new();
    for (backup_set, found) in &mut sets {
        found
            .runs
            .sort_by_key(|run| (run.created_at, run.run_id().to_owned()));
        // A deleted set is neither counted nor deleted again.
        let verified = !found.deleted
            && match unverified_because(runs_bucket, backup_set, found).await {
                Ok(None) => true,
                Ok(Some(reason)) => {
                    tracing::info!(%backup_set, %reason, "retention: set is not verified; it stays");
                    false
                }
                Err(detail) => {
                    return Err(RetentionError::Set {
                        backup_set: backup_set.clone(),
                        source: SetReadError::Unavailable(detail),
                    });
                }
            };
        states.push(SetState {
            backup_set: backup_set.clone(),
            verified,
            finished_at: found
                .runs
                .iter()
                .map(|run| run.finished_at.unwrap_or(run.updated_at))
                .max()
                .unwrap_or(0),
            deleted: found.deleted,
        });
    }

    let now = SystemClock.now_ms();
    let mut started = Vec::new();
    for set in to_delete(&policy, &states, now) {
        let Some(found) = sets.get(&set.backup_set) else {
            continue;
        };
        let points = backup_sets::latest_points(runs_bucket, &set.backup_set, &found.runs)
            .await
            .map_err(|source| RetentionError::Set {
                backup_set: set.backup_set.clone(),
                source,
            })?;
        let nodes: Vec<NodeRef> = points
            .iter()
            .map(|point| NodeRef::new(&point.node, point.kind))
            .collect();
        let mut targets: Vec<String> = found
            .runs
            .iter()
            .map(|run| run.parameters.get("target").cloned().unwrap_or_default())
            .collect();
        targets.sort();
        targets.dedup();
        let run_id = prune_run_id(&shared.organisation, &set.backup_set);
        let request = StartRequest {
            run_id: run_id.clone(),
            request_id: prune_request_id(&set.backup_set),
            runbook: prune_runbook(&set.backup_set, &targets, &nodes),
            parameters: BTreeMap::from([("backup_set".to_owned(), set.backup_set.clone())]),
            nodes: nodes.iter().map(|node| node.id.clone()).collect(),
            // Deleting an old set's files touches no node: it must not wait for, or block,
            // the runs that hold claims.
            claims_nodes: false,
        };
        shared
            .driver
            .lock()
            .await
            .start(request)
            .await
            .map_err(|source| RetentionError::Start {
                backup_set: set.backup_set.clone(),
                source,
            })?;
        tracing::info!(backup_set = %set.backup_set, run = %run_id, "retention: deleting backup set");
        shared
            .audit(
                "retention",
                serde_json::json!({
                    "organisation": shared.organisation,
                    "backup_set": set.backup_set,
                    "run": run_id,
                    "keep_sets": policy.keep_sets,
                    "keep_for_ms": policy.keep_for.map(|age| age.as_millis()),
                }),
            )
            .await;
        started.push(set.backup_set.clone());
    }
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    fn set(name: &str, finished_at: Millis, verified: bool) -> SetState {
        SetState {
            backup_set: name.to_owned(),
            verified,
            finished_at,
            deleted: false,
        }
    }

    fn names(sets: Vec<&SetState>) -> Vec<&str> {
        sets.into_iter().map(|s| s.backup_set.as_str()).collect()
    }

    fn history() -> Vec<SetState> {
        vec![
            set("d1", DAY, true),
            set("d2", 2 * DAY, true),
            set("d3-failed", 3 * DAY, false),
            set("d4", 4 * DAY, true),
            set("d5", 5 * DAY, true),
            set("d6-running", 6 * DAY, false),
        ]
    }

    #[test]
    fn the_default_deletes_nothing() {
        assert!(to_delete(&Retention::default(), &history(), 100 * DAY).is_empty());
    }

    #[test]
    fn beyond_the_newest_n_verified_sets_go_and_unverified_ones_stay() {
        let policy = Retention {
            keep_sets: Some(2),
            keep_for: None,
        };
        assert_eq!(names(to_delete(&policy, &history(), 7 * DAY)), ["d2", "d1"]);
        // Unverified sets neither count toward the kept ones nor go.
        let policy = Retention {
            keep_sets: Some(4),
            keep_for: None,
        };
        assert!(to_delete(&policy, &history(), 7 * DAY).is_empty());
    }

    #[test]
    fn with_both_rules_a_set_goes_only_when_neither_keeps_it() {
        let policy = Retention {
            keep_sets: Some(1),
            keep_for: Some(Duration::from_millis(
                u64::try_from(3 * DAY).unwrap_or(u64::MAX),
            )),
        };
        // At day 7 only d5 is younger than 3 days (d4 is exactly 3 days old) and it is the
        // newest as well; at day 6 d4 is young enough to stay.
        assert_eq!(
            names(to_delete(&policy, &history(), 7 * DAY)),
            ["d4", "d2", "d1"]
        );
        assert_eq!(names(to_delete(&policy, &history(), 6 * DAY)), ["d2", "d1"]);
        let age_only = Retention {
            keep_sets: None,
            ..policy
        };
        assert_eq!(
            names(to_delete(&age_only, &history(), 9 * DAY)),
            ["d5", "d4", "d2", "d1"]
        );
    }

    #[test]
    fn deleted_sets_are_not_counted_or_deleted_again() {
        let mut sets = history();
        sets[0].deleted = true;
        let policy = Retention {
            keep_sets: Some(2),
            keep_for: None,
        };
        assert_eq!(names(to_delete(&policy, &sets, 7 * DAY)), ["d2"]);
        sets[1].deleted = true;
        assert!(to_delete(&policy, &sets, 7 * DAY).is_empty());
    }
}
