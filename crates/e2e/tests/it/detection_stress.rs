//! Failure detection under stress, with the real coordinator's detector watching real agents
//! (500 ms heartbeats, Down after 5 s of silence): each stress in turn — both cores saturated
//! by busy loops for 10 s, a real backup runbook, nats-server frozen for 1.5 s, the coordinator
//! frozen for 2 s — and no live node may be read Down; then an agent is SIGKILLed and must go
//! Down. How fast (the p99 against the timeout) is measured by `bench failure-detection
//! --stress`, not here.
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::stack::Stack;
use nix::sys::signal::Signal;
use testkit::ChildProcess;

use crate::support::{
    DEMO_NODES, DEMO_TOPOLOGY, ORGANISATION, final_run, ops_json, stack_options, wait_for,
    with_agents_and_coordinator,
};
use crate::verdicts::VerdictWatch;

const NODES: usize = DEMO_NODES.len();
const KILLED: &str = "participant3";

/// One CPU-bound process per core for `how_long` (`timeout` ends them: bounded and
/// self-stopping even if the test dies).
fn saturate_cpu(stack: &Stack, how_long: Duration) -> Vec<ChildProcess> {
    let cores = std::thread::available_parallelism().map_or(2, usize::from);
    (0..cores)
        .map(|index| {
            let mut command = Command::new("timeout");
            command
                .arg(format!("{}s", how_long.as_secs()))
                .args(["sha256sum", "/dev/zero"]);
            ChildProcess::spawn(
                "busy loop",
                command,
                &stack.work_dir().join(format!("busy-{index}.log")),
                Signal::SIGKILL,
            )
            .expect("starting a busy loop")
        })
        .collect()
}

/// Freezes a process for `how_long` (the fault itself), then lets it run again.
fn freeze(process: &ChildProcess, how_long: Duration) {
    process.signal(Signal::SIGSTOP).expect("SIGSTOP");
    std::thread::sleep(how_long);
    process.signal(Signal::SIGCONT).expect("SIGCONT");
}

/// Fails naming every live node read Down since `since`.
fn assert_no_downs(watch: &VerdictWatch, since: Instant, stress: &str) {
    let downs = watch.downs_since(since, &[]);
    assert!(
        downs.is_empty(),
        "{stress}: live nodes read Down: {downs:?}"
    );
    let readings = watch.since(since).len();
    eprintln!("{stress}: 0 Down verdicts in {readings} readings");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_live_node_is_called_down_through_cpu_saturation_a_backup_and_frozen_servers() {
    let mut stack = Stack::start(&stack_options(DEMO_TOPOLOGY))
        .await
        .expect("starting the stack");
    stack.serve_metrics = true;
    let mut stack = with_agents_and_coordinator(stack, "").await;
    let watch = VerdictWatch::of_coordinator(&stack);
    watch.wait_for(
        "a trusted detector with every node alive",
        Duration::from_secs(60),
        |r| r.detector_healthy && r.alive.len() == NODES,
    );

    let since = Instant::now();
    let mut busy = saturate_cpu(&stack, Duration::from_secs(10));
    wait_for("the busy loops ended", Duration::from_secs(60), || {
        busy.iter_mut().all(|process| !process.is_running())
    });
    assert_no_downs(&watch, since, "both cores saturated for 10 s");

    let since = Instant::now();
    let (status, values) = ops_json(
        &stack,
        &["run", "backup", "--param", "backup_set=stress", "--wait"],
    );
    assert!(status.success(), "{values:#?}");
    assert_eq!(final_run(&values)["status"], "succeeded");
    assert_no_downs(&watch, since, "a backup");

    let since = Instant::now();
    let nats = stack.nats.server_mut(0).expect("the server");
    nats.pause().expect("freezing nats-server");
    std::thread::sleep(Duration::from_millis(1500));
    nats.resume().expect("thawing nats-server");
    watch.wait_for(
        "every node alive after nats-server thawed",
        Duration::from_secs(60),
        |r| r.alive.len() == NODES,
    );
    assert_no_downs(&watch, since, "nats-server frozen for 1.5 s");

    let since = Instant::now();
    freeze(
        &stack.coordinators[ORGANISATION].process,
        Duration::from_secs(2),
    );
    watch.wait_for(
        "a trusted detector after the coordinator thawed",
        Duration::from_secs(60),
        |r| r.detector_healthy && r.alive.len() == NODES,
    );
    assert_no_downs(&watch, since, "coordinator frozen for 2 s");

    let killed = Instant::now();
    stack.agents[KILLED]
        .process
        .signal(Signal::SIGKILL)
        .expect("killing an agent");
    let took = watch.wait_for("the killed agent Down", Duration::from_secs(60), |r| {
        r.down.iter().any(|node| node == KILLED)
    });
    eprintln!("SIGKILL -> Down seen after {took:?}");
    let others = watch.downs_since(killed, &[KILLED]);
    assert!(others.is_empty(), "other nodes read Down: {others:?}");
    drop(watch);
    // A process that already exited (the killed agent) counts as stopped.
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
