//! The coordinator killed during a `backup` over real agents and restarted: the run resumes to
//! a consistent set, and PostgreSQL's own connection log shows every node dumped exactly once
//! (a dump connects with `application_name` = its command id, so a second attempt of any dump
//! would be a second connection under that name).
//!
//! Kill points: each driver failpoint (the binary exits at once, without cleanup), and a
//! seeded random one: failpoint and skip count drawn from `SEED=<n>` (printed; replays it).
use std::time::{Duration, Instant};

use e2e::stack::Stack;

use crate::support::{
    DEMO_NODES, DEMO_TOPOLOGY, ORGANISATION, backup_args, dump_connections, final_run, manifests,
    ops_json, ops_json_owned, running_stack, seed_from_env, splitmix64,
};

const REQUEST_ID: &str = "killed-backup";
const NODES: [&str; 6] = DEMO_NODES;

fn start_backup_args(set: &str, wait: bool) -> Vec<String> {
    backup_args(REQUEST_ID, set, wait)
}

async fn restart_coordinator(stack: &mut Stack) {
    let took = stack
        .start_coordinator(ORGANISATION, Duration::from_secs(60))
        .await
        .expect("restarting the coordinator");
    eprintln!("restarted coordinator leads after {took:?}");
}

/// Finishes the interrupted run from a fresh coordinator and checks the set and the dumps.
async fn resume_and_check(mut stack: Stack, set: &str) {
    restart_coordinator(&mut stack).await;
    let resumed = Instant::now();
    let (status, values) = ops_json_owned(&stack, &start_backup_args(set, true));
    eprintln!("resumed run finished after {:?}", resumed.elapsed());
    if let Some(found) = values.first().filter(|v| v["existing"] == true) {
        eprintln!(
            "the restart found the run {} at step {}",
            found["run"]["status"], found["run"]["current_step"]
        );
    }
    assert!(status.success(), "resumed backup failed: {values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert!(
        run["owner_epoch"].as_u64() >= Some(2),
        "finished by the restarted coordinator's tenure: {run:#}"
    );
    let run_id = run["run_id"].as_str().expect("run id").to_owned();

    let written: Vec<String> = manifests(&stack, set).into_keys().collect();
    assert_eq!(written, NODES, "one manifest per node");
    let (status, plan) = ops_json(
        &stack,
        &["plan", "restore", "--param", &format!("backup_set={set}")],
    );
    assert!(status.success(), "{plan:#?}");
    assert!(
        plan.iter().any(|v| v["warning"]
            .as_str()
            .is_some_and(|w| w.contains(&format!("backup set {set} is consistent")))),
        "{plan:#?}"
    );

    let connections = dump_connections(&stack, &run_id);
    eprintln!("dump connections: {connections:?}");
    for node in NODES {
        let seen = connections.get(node).map_or(0, Vec::len);
        assert_eq!(
            seen, 1,
            "node {node} dumped {seen} times per the PostgreSQL log: {connections:?}"
        );
    }
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

/// The first coordinator runs with `failpoints`; the backup started on it stops there.
async fn killed_at_failpoint(failpoints: &str, set: &str) {
    let mut stack = running_stack(DEMO_TOPOLOGY).await;
    stack
        .start_coordinator_with_env(
            ORGANISATION,
            Duration::from_secs(60),
            &[("FAILPOINTS", failpoints)],
        )
        .await
        .expect("starting the coordinator with failpoints");
    // The process may die inside StartRun; the restart's StartRun finds or creates the run.
    let (status, _) = ops_json_owned(&stack, &start_backup_args(set, false));
    eprintln!("StartRun on the doomed coordinator: {status}");
    let waited = Instant::now();
    let coordinator = stack
        .coordinators
        .get_mut(ORGANISATION)
        .expect("the coordinator");
    tokio::task::block_in_place(|| {
        coordinator
            .process
            .wait_for_log(Duration::from_secs(30), |log| {
                log.contains("failpoint fired").then_some(())
            })
    })
    .expect("the failpoint fired");
    testkit::wait_until(
        "the coordinator exited at the failpoint",
        Duration::from_secs(30),
        || !coordinator.process.is_running(),
    )
    .expect("exited");
    eprintln!(
        "failpoint {failpoints} stopped the coordinator after {:?}",
        waited.elapsed()
    );
    resume_and_check(stack, set).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_cas_before_publishing_resumes_with_each_node_dumped_once() {
    killed_at_failpoint("driver-after-cas=return", "after-cas").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_publish_resumes_with_each_node_dumped_once() {
    killed_at_failpoint("driver-after-publish=return", "after-publish").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_a_later_cas_mid_run_resumes_with_each_node_dumped_once() {
    killed_at_failpoint("driver-after-cas=3*off->return", "mid-run-cas").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_a_seeded_random_point_resumes_with_each_node_dumped_once() {
    // The point is a failpoint and a skip count, not a delay: a delay can outlast a fast run,
    // and then nothing is left to resume. A backup of the demo network writes its record more
    // than four times and publishes in four transitions, so every choice stops it mid-run.
    let seed = seed_from_env("SEED");
    let mixed = splitmix64(seed);
    let point = ["driver-after-cas", "driver-after-publish"][(mixed % 2) as usize];
    let spec = format!("{point}={}*off->return", (mixed >> 8) % 4);
    eprintln!("SEED={seed}: {spec}");
    killed_at_failpoint(&spec, "random-kill").await;
}
