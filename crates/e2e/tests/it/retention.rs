//! Opt-in retention over real agents: with `[retention] keep_sets = 2` the coordinator deletes
//! the oldest complete, verified set once a third one verifies, through the agents that own
//! the files; a set taken out of order (unverified) stays on disk and does not count.
use std::time::{Duration, Instant};

use e2e::stack::Stack;

use crate::support::{final_run, manifests, ops_json, running_stack_with, set_dir};

const TOPOLOGY: &str = r#"
name = "retention"
synchronizer = "global"

[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "operator"

[[node]]
id = "mediator1"
kind = "mediator"
organisation = "operator"

[[node]]
id = "participant1"
kind = "participant"
organisation = "operator"
workload = { rate_per_second = 5.0 }
"#;

const RETENTION: &str = "[retention]\nkeep_sets = 2\n";

fn backup(stack: &Stack, request_id: &str, set: &str, nodes: &[&str]) {
    let started = Instant::now();
    let set_param = format!("backup_set={set}");
    let mut args = vec![
        "run",
        "backup",
        "--request-id",
        request_id,
        "--param",
        &set_param,
        "--wait",
    ];
    for node in nodes {
        args.extend(["--node", node]);
    }
    let (status, values) = ops_json(stack, &args);
    assert!(status.success(), "backup {request_id} failed: {values:#?}");
    assert_eq!(final_run(&values)["status"], "succeeded");
    eprintln!(
        "backup {request_id} into {set} took {:?}",
        started.elapsed()
    );
}

/// The organisation's runs of `runbook` as `canton-ops runs` lists them.
fn runs_of(stack: &Stack, runbook: &str) -> Vec<serde_json::Value> {
    let (status, runs) = ops_json(stack, &["runs"]);
    assert!(status.success(), "{runs:#?}");
    runs.into_iter()
        .filter(|run| run["runbook"] == runbook)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_deletes_the_oldest_verified_set_and_keeps_unverified_ones() {
    let started = Instant::now();
    let stack = running_stack_with(TOPOLOGY, RETENTION).await;

    // Out of order: the sequencer before the members, so the set breaks the rule.
    backup(&stack, "bad-sequencer", "out-of-order", &["sequencer1"]);
    backup(
        &stack,
        "bad-members",
        "out-of-order",
        &["participant1", "mediator1"],
    );
    for set in ["set-1", "set-2"] {
        backup(&stack, set, set, &[]);
    }
    assert!(
        runs_of(&stack, "prune-backups").is_empty(),
        "two verified sets are within keep_sets = 2"
    );
    backup(&stack, "set-3", "set-3", &[]);

    let deadline = Duration::from_secs(60);
    let waited = Instant::now();
    let prune = loop {
        let prunes = runs_of(&stack, "prune-backups");
        if let Some(run) = prunes.iter().find(|run| run["status"] == "succeeded") {
            break run.clone();
        }
        assert!(
            waited.elapsed() < deadline,
            "no finished deletion within {deadline:?}: {prunes:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "retention deleted a set {:?} after the third backup",
        waited.elapsed()
    );
    assert_eq!(
        runs_of(&stack, "prune-backups").len(),
        1,
        "exactly one set goes"
    );
    let mut deleted_nodes: Vec<&str> = prune["steps"][0]["nodes"]
        .as_array()
        .expect("nodes of the delete step")
        .iter()
        .filter_map(|node| node["node"].as_str())
        .collect();
    deleted_nodes.sort_unstable();
    assert_eq!(deleted_nodes, ["mediator1", "participant1", "sequencer1"]);

    assert!(
        !set_dir(&stack, "set-1").exists(),
        "the oldest verified set's files are gone"
    );
    for kept in ["set-2", "set-3"] {
        assert_eq!(manifests(&stack, kept).len(), 3, "{kept} is kept whole");
    }
    assert_eq!(
        manifests(&stack, "out-of-order").len(),
        3,
        "an unverified set is never deleted"
    );

    let (status, plan) = ops_json(&stack, &["plan", "restore", "--param", "backup_set=set-1"]);
    assert!(
        !status.success(),
        "a deleted set cannot be restored: {plan:#?}"
    );
    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}
