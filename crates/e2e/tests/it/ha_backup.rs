//! A `backup` over a network whose participant runs as two HA replicas on one database: the
//! participant is dumped once per run, by the active replica, and a failover between runs
//! moves the next dump to the replica that took over. PostgreSQL's connection log (a dump
//! connects with `application_name` = its command id) shows the single dump, the manifest
//! names the logical node and the replica that took it.
use std::time::{Duration, Instant};

use e2e::stack::Stack;
use futures::StreamExt;
use prost::Message;
use proto_sidecar as pb;

use crate::support::{dump_connections, final_run, manifests, ops_json, running_stack};

const TOPOLOGY: &str = r#"
name = "ha"
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
replicas = ["a", "b"]

[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
workload = { rate_per_second = 5.0 }
"#;

const HA_NODE: &str = "participant1";
const REPLICAS: [&str; 2] = ["participant1.a", "participant1.b"];

/// Waits until the agents' heartbeats (which the coordinator routes by) show one healthy
/// active replica, other than `not` (a killed one whose agent has not noticed yet), and no
/// other replica claiming the role.
async fn wait_for_active(stack: &Stack, deadline: Duration, not: Option<&str>) -> String {
    let started = Instant::now();
    let mut subscription = stack
        .network
        .client
        .subscribe(stack.names().heartbeats())
        .await
        .expect("subscribing to heartbeats");
    let mut roles = std::collections::BTreeMap::new();
    loop {
        let left = deadline.saturating_sub(started.elapsed());
        let message = tokio::time::timeout(left, subscription.next())
            .await
            .unwrap_or_else(|_| panic!("no single active replica within {deadline:?}: {roles:?}"))
            .expect("heartbeat subscription ended");
        let heartbeat = pb::Heartbeat::decode(message.payload.as_ref()).expect("a heartbeat");
        if heartbeat.node != HA_NODE {
            continue;
        }
        let id = format!("{}.{}", heartbeat.node, heartbeat.replica);
        let active = heartbeat.role() == pb::Role::Active
            && heartbeat.condition() == pb::NodeCondition::Healthy;
        roles.insert(id, active);
        let actives: Vec<&String> = roles
            .iter()
            .filter(|(_, a)| **a)
            .map(|(id, _)| id)
            .collect();
        if roles.len() == REPLICAS.len() && actives.len() == 1 && Some(actives[0].as_str()) != not {
            eprintln!(
                "{} is the active replica after {:?}",
                actives[0],
                started.elapsed()
            );
            return actives[0].clone();
        }
    }
}

/// The tails of the coordinator's and the HA agents' logs, for a failure's report.
fn print_logs(stack: &Stack) {
    let dir = stack.work_dir();
    let mut logs = vec![dir.join("coordinator-operator").join("coordinator-1.log")];
    logs.extend(
        REPLICAS
            .iter()
            .map(|replica| dir.join("agents").join(replica).join("agent.log")),
    );
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        eprintln!("--- {}", log.display());
        for line in tail.into_iter().rev() {
            eprintln!("{line}");
        }
    }
}

/// One backup run into `set`; checks that it succeeded, that the HA participant was dumped
/// exactly once, by `expected_replica`, and that the set is consistent. Returns the run id.
fn backup_once(stack: &Stack, set: &str, expected_replica: &str) -> String {
    let started = Instant::now();
    let (status, values) = ops_json(
        stack,
        &[
            "run",
            "backup",
            "--request-id",
            set,
            "--param",
            &format!("backup_set={set}"),
            "--param",
            "timeout=60s",
            "--wait",
        ],
    );
    eprintln!("backup into {set} took {:?}", started.elapsed());
    if !status.success() {
        print_logs(stack);
    }
    assert!(status.success(), "backup into {set} failed: {values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();

    let written = manifests(stack, set);
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        ["mediator1", "participant1", "participant2", "sequencer1"],
        "one manifest per logical node, none per replica"
    );
    let manifest = &written[HA_NODE];
    assert_eq!(manifest["node"], HA_NODE, "{manifest:#}");
    assert_eq!(manifest["replica"], expected_replica, "{manifest:#}");
    assert_eq!(
        manifest["command_id"],
        format!("{run_id}/members/{HA_NODE}"),
        "{manifest:#}"
    );
    assert!(
        written["participant2"].get("replica").is_none(),
        "a standalone node's manifest names no replica"
    );

    let connections = dump_connections(stack, &run_id);
    eprintln!("dump connections of {run_id}: {connections:?}");
    for node in ["mediator1", HA_NODE, "participant2", "sequencer1"] {
        let seen = connections.get(node).map_or(0, Vec::len);
        assert_eq!(seen, 1, "{node} dumped {seen} times: {connections:?}");
    }
    for replica in REPLICAS {
        assert!(
            !connections.contains_key(replica),
            "a command id names the logical node, never a replica: {connections:?}"
        );
    }

    let (status, plan) = ops_json(
        stack,
        &["plan", "restore", "--param", &format!("backup_set={set}")],
    );
    assert!(status.success(), "{plan:#?}");
    assert!(
        plan.iter().any(|v| v["warning"]
            .as_str()
            .is_some_and(|w| w.contains(&format!("backup set {set} is consistent")))),
        "the coordinator verifies the set: {plan:#?}"
    );
    run_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ha_participant_is_backed_up_once_by_its_active_replica_also_after_a_failover() {
    let started = Instant::now();
    let stack = running_stack(TOPOLOGY).await;
    let first = wait_for_active(&stack, Duration::from_secs(60), None).await;
    backup_once(&stack, "ha-1", &first);

    // The active replica dies; the other takes the database lock and becomes active.
    let failover = Instant::now();
    stack
        .with_sims(|sims| sims.node_mut(&first).expect("the active replica").kill())
        .expect("sim network");
    let second = wait_for_active(&stack, Duration::from_secs(60), Some(&first)).await;
    assert_ne!(second, first, "the surviving replica took over");
    eprintln!("failover seen after {:?}", failover.elapsed());
    backup_once(&stack, "ha-2", &second);
    assert_eq!(
        manifests(&stack, "ha-1").len(),
        4,
        "without [retention] the first set stays whole"
    );

    // The killed replica comes back as the passive one; the stack stops cleanly.
    let restarted = tokio::task::block_in_place(|| {
        stack.with_sims(|sims| sims.node_mut(&first).expect("the killed replica").start())
    })
    .expect("sim network")
    .expect("restarting the killed replica");
    eprintln!("{first} restarted in {restarted:?}");
    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "{unclean:?}");
    eprintln!("test took {:?}", started.elapsed());
}
