//! The soak (extras tier): 50 agents (48 participants, a sequencer, a mediator) on one
//! nats-server with the deploy settings, backups one after another for `CS_SOAK_SECONDS`
//! (default 420), and during each a seeded random fault (`CS_SOAK_SEED` replays a sequence):
//! an agent SIGKILLed and restarted on its journal, an agent frozen (SIGSTOP) for 2 s, the
//! coordinator SIGKILLed and restarted, or nats-server SIGKILLed and restarted.
//!
//! After every run: it succeeded; every command the coordinator recorded as done is journalled
//! done by its agent; PostgreSQL's connection log shows each node dumped once (a node whose
//! agent was killed mid-run may show the interrupted dump and its redo, never a third). At the
//! end every agent is alive in the registry and the stack stops cleanly.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use e2e::stack::Stack;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::{
    ORGANISATION, assert_backup_complete, backup_args, final_run, ops_json, ops_json_owned,
    seed_from_env, splitmix64, stack_options, wait_for, with_agents_and_coordinator,
};

const PARTICIPANTS: usize = 48;

/// `canton-ops` exits 3 when the coordinator cannot answer now; the same request may be asked
/// again.
const EXIT_UNAVAILABLE: i32 = 3;

/// How long one backup may take to finish after its fault, restarts included.
const RUN_DEADLINE: Duration = Duration::from_secs(240);

fn topology() -> String {
    let mut toml = String::from(
        "name = \"soak\"\nsynchronizer = \"global\"\n\n\
         [[node]]\nid = \"sequencer1\"\nkind = \"sequencer\"\norganisation = \"operator\"\n\n\
         [[node]]\nid = \"mediator1\"\nkind = \"mediator\"\norganisation = \"operator\"\n",
    );
    for index in 1..=PARTICIPANTS {
        // A few participants carry a workload, so dumps cover a database that changes.
        let workload = if index <= 4 {
            "workload = { rate_per_second = 2.0 }\n"
        } else {
            ""
        };
        let _ = write!(
            toml,
            "\n[[node]]\nid = \"participant{index:02}\"\nkind = \"participant\"\norganisation = \"operator\"\n{workload}"
        );
    }
    toml
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    AgentKilled,
    AgentFrozen,
    CoordinatorKilled,
    NatsKilled,
}

impl Fault {
    fn pick(random: u64) -> Self {
        match random % 4 {
            0 => Self::AgentKilled,
            1 => Self::AgentFrozen,
            2 => Self::CoordinatorKilled,
            _ => Self::NatsKilled,
        }
    }
}

/// A deterministic sequence from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = splitmix64(self.0);
        self.0
    }
}

/// Applies `fault` to the running stack and undoes it (restart, thaw); returns what it hit
/// and the agent it crashed, if any.
async fn inject(
    stack: &mut Stack,
    fault: Fault,
    nodes: &[String],
    rng: &mut Rng,
) -> (String, Option<String>) {
    let node = nodes[(rng.next() % nodes.len() as u64) as usize].clone();
    match fault {
        Fault::AgentKilled => {
            let took = stack
                .restart_agent(&node, Duration::from_secs(60))
                .expect("restarting the killed agent");
            (
                format!("{node}'s agent killed, back in {took:?}"),
                Some(node),
            )
        }
        Fault::AgentFrozen => {
            let agent = &stack.agents[&node];
            agent.process.pause().expect("freezing the agent");
            // The fault's length, not a wait for anything.
            tokio::time::sleep(Duration::from_secs(2)).await;
            agent.process.resume().expect("thawing the agent");
            (format!("{node}'s agent frozen for 2 s"), None)
        }
        Fault::CoordinatorKilled => {
            stack.coordinators[ORGANISATION]
                .process
                .signal(Signal::SIGKILL)
                .expect("killing the coordinator");
            let took = stack
                .start_coordinator(ORGANISATION, Duration::from_secs(90))
                .await
                .expect("restarting the coordinator");
            (
                format!("coordinator killed, leading again in {took:?}"),
                None,
            )
        }
        Fault::NatsKilled => {
            let server = stack.nats.server_mut(0).expect("the server");
            server.kill();
            let restarted = Instant::now();
            server.restart().expect("restarting nats-server");
            (
                format!("nats-server killed, restarted in {:?}", restarted.elapsed()),
                None,
            )
        }
    }
}

/// Waits for the backup into `set` (asking again while the coordinator cannot answer or is
/// between processes) and returns its final summary.
fn finished(stack: &Stack, set: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, values) = ops_json_owned(stack, &backup_args(set, set, true));
        if status.success() {
            return final_run(&values).clone();
        }
        assert!(
            status.code() == Some(EXIT_UNAVAILABLE) && started.elapsed() < RUN_DEADLINE,
            "backup {set} after {:?}: {status}: {values:#?}{}",
            started.elapsed(),
            stack.log_tails(40)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extras_soak_fifty_agents_through_runbooks_and_random_faults() {
    let seed = seed_from_env("CS_SOAK_SEED");
    let seconds: u64 = std::env::var("CS_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(420);
    eprintln!("CS_SOAK_SEED={seed} CS_SOAK_SECONDS={seconds}");
    let topology = topology();
    let started = Instant::now();
    let stack = Stack::start_deployed(&stack_options(&topology), 1)
        .await
        .expect("starting the soak network");
    let mut stack = with_agents_and_coordinator(stack, "").await;
    eprintln!(
        "50 agents and the coordinator up in {:?}",
        started.elapsed()
    );
    let nodes = stack.node_ids().expect("node ids");
    assert_eq!(nodes.len(), PARTICIPANTS + 2);
    let node_refs: Vec<&str> = nodes.iter().map(String::as_str).collect();

    let mut rng = Rng(seed);
    let mut faults: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut run_times = Vec::new();
    let soak = Instant::now();
    let mut round = 0;
    while soak.elapsed() < Duration::from_secs(seconds) {
        round += 1;
        let set = format!("soak-{round}");
        let began = Instant::now();
        let (status, values) = ops_json_owned(&stack, &backup_args(&set, &set, false));
        assert!(status.success(), "starting {set}: {values:#?}");
        let fault = Fault::pick(rng.next());
        // The fault point, somewhere in the first 3 s of the run: not a wait for anything.
        tokio::time::sleep(Duration::from_millis(rng.next() % 3_000)).await;
        let (what, crashed) = inject(&mut stack, fault, &nodes, &mut rng).await;
        let run = finished(&stack, &set);
        let crashed: Vec<&str> = crashed.iter().map(String::as_str).collect();
        assert_backup_complete(&stack, &run, &node_refs, &crashed);
        *faults.entry(fault).or_default() += 1;
        run_times.push(began.elapsed());
        eprintln!(
            "round {round} at {:?}: {what}; backup {set} complete in {:?}",
            soak.elapsed(),
            began.elapsed()
        );
    }
    run_times.sort();
    eprintln!(
        "soak: {round} backups in {:?}, faults {faults:?}; per backup min {:?}, median {:?}, max {:?}",
        soak.elapsed(),
        run_times.first(),
        run_times.get(run_times.len() / 2),
        run_times.last()
    );
    assert!(round >= 4, "only {round} rounds in {seconds} s");

    // Every agent came back: the registry calls each of them alive.
    wait_for("all 50 agents alive", Duration::from_secs(60), || {
        let (status, values) = ops_json(&stack, &["nodes"]);
        status.success() && values.iter().filter(|v| v["health"] == "alive").count() == nodes.len()
    });
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
