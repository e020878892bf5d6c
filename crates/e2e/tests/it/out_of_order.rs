//! A backup set whose sequencer dump is older than its members' dumps (the order the barrier
//! forbids), written by the product's own agents in two runs, and then restored by hand in the
//! sim: the participants really fork (Canton's ForkHappened on reconnect). This is why the
//! coordinator checks the recorded intervals before any restore.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::stack::Stack;

use crate::support::{
    DEMO_TOPOLOGY, bound, final_run, manifests, ops_json, ops_output, running_stack, set_dir,
};

const SET: &str = "out-of-order";
const MEMBERS: [&str; 4] = ["mediator1", "participant1", "participant2", "participant3"];
const PARTICIPANTS: [&str; 3] = ["participant1", "participant2", "participant3"];

fn database(stack: &Stack, node: &str) -> String {
    stack
        .with_sims(|sims| sims.node(node).map(|n| n.database_name().to_owned()))
        .expect("sims")
        .expect("node exists")
}

fn cursor(stack: &Stack, node: &str) -> i64 {
    let db = database(stack, node);
    stack
        .postgres
        .psql(
            &db,
            "SELECT coalesce(max(last_ts_micros), 0) FROM member_cursor",
        )
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

fn backup(stack: &Stack, nodes: &str) {
    let (status, values) = ops_json(
        stack,
        &[
            "run",
            "backup",
            "--node",
            nodes,
            "--param",
            &format!("backup_set={SET}"),
            "--wait",
        ],
    );
    assert!(status.success(), "backup of {nodes} failed: {values:#?}");
    assert_eq!(final_run(&values)["status"], "succeeded");
}

/// Replaces the stopped node's database with its dump from the set.
fn restore_by_hand(stack: &Stack, node: &str, dump: &Path) {
    let db = database(stack, node);
    stack
        .postgres
        .psql("postgres", &format!("DROP DATABASE \"{db}\" WITH (FORCE)"))
        .expect("dropping the database");
    stack
        .postgres
        .create_database(&db)
        .expect("creating the database");
    let status = Command::new(testkit::pg_bin("pg_restore").expect("pg_restore"))
        .args(["--no-owner", "-d"])
        .arg(stack.postgres.url(&db))
        .arg(dump)
        .status()
        .expect("running pg_restore");
    assert!(status.success(), "pg_restore of {node}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_with_the_sequencer_dumped_first_is_refused_and_forks_when_forced_in_the_sim() {
    let stack = running_stack(DEMO_TOPOLOGY).await;
    backup(&stack, "sequencer1");
    let sequencer_after = bound(
        &manifests(&stack, SET)["sequencer1"],
        "sequencer_time_micros",
        "after",
    );
    // The members move past the sequencer's dump before theirs are taken.
    let waited = Instant::now();
    testkit::wait_until(
        "members past the sequencer dump",
        Duration::from_secs(30),
        || {
            PARTICIPANTS
                .iter()
                .all(|p| cursor(&stack, p) > sequencer_after + 500_000)
        },
    )
    .expect("workload moves on");
    eprintln!(
        "members moved past the sequencer dump in {:?}",
        waited.elapsed()
    );
    backup(
        &stack,
        &["app1"]
            .iter()
            .chain(&MEMBERS)
            .copied()
            .collect::<Vec<_>>()
            .join(","),
    );

    let manifests = manifests(&stack, SET);
    let latest_member = MEMBERS
        .iter()
        .map(|m| bound(&manifests[*m], "sequencer_time_micros", "after"))
        .max()
        .expect("members");
    let sequencer_before = bound(&manifests["sequencer1"], "sequencer_time_micros", "before");
    eprintln!("sequencer from {sequencer_before} µs, members up to {latest_member} µs");
    assert!(sequencer_before < latest_member, "the set is out of order");
    // The coordinator checks the set as it lies on disk, both runs' dumps together, and
    // refuses to restore it, naming the nodes dumped after the sequencer.
    let output = ops_output(
        &stack,
        &["plan", "restore", "--param", &format!("backup_set={SET}")],
    );
    let refusal = String::from_utf8_lossy(&output.stderr);
    eprintln!("coordinator on the set: {refusal}");
    assert!(
        !output.status.success(),
        "restore of an out-of-order set planned"
    );
    assert!(
        refusal.contains("must not be restored") && refusal.contains("participant1"),
        "the refusal names the set's problem: {refusal}"
    );

    // Forced: every node stopped, every database replaced by its dump from the set.
    let dir = set_dir(&stack, SET);
    let forced = Instant::now();
    stack
        .with_sims(|sims| {
            for node in sims.nodes_mut() {
                node.stop().expect("stopping a node");
            }
        })
        .expect("sims");
    for node in ["sequencer1"].iter().chain(&MEMBERS) {
        restore_by_hand(&stack, node, &dir.join(format!("{node}.dump")));
    }
    stack
        .with_sims(|sims| {
            for node in ["sequencer1"].iter().chain(&MEMBERS) {
                sims.node_mut(node)
                    .expect("node")
                    .start()
                    .expect("starting a node");
            }
        })
        .expect("sims");
    eprintln!("forced restore took {:?}", forced.elapsed());

    let (status, values) = ops_json(
        &stack,
        &["run", "disconnect", "--param", "deadline=20s", "--wait"],
    );
    eprintln!("disconnect after the forced restore: {status}");
    let _ = values;
    let (status, values) = ops_json(
        &stack,
        &["run", "reconnect", "--param", "deadline=20s", "--wait"],
    );
    assert!(
        !status.success(),
        "a forked participant cannot reconnect: {values:#?}"
    );
    let run = final_run(&values);
    let details: Vec<String> = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["nodes"].as_array().into_iter().flatten())
        .map(|n| {
            format!(
                "{}: {}",
                n["node"].as_str().unwrap_or_default(),
                n["detail"].as_str().unwrap_or_default()
            )
        })
        .collect();
    eprintln!("reconnect results: {details:#?}");
    assert!(
        details
            .iter()
            .any(|d| d.contains("ForkHappened") || d.contains("FORK_HAPPENED")),
        "a participant reports the fork: {details:#?}"
    );
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
