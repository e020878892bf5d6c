//! The network on NATS as deployed: three servers in one JetStream cluster with
//! `sync_interval: always`, every stream and bucket replicated on all three, agents and the
//! coordinator given every server's URL. Servers are SIGKILLed (a crash: no flush, no goodbye)
//! in the middle of backups, one Raft leader at a time, and restarted; a coordinator left on a
//! server without its peers must not act until the quorum is back. Also a single server
//! SIGKILLed mid-run.
//!
//! Leaders and settings come from each server's monitoring endpoints (`/jsz`, `/varz`).
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use e2e::prometheus_text;
use e2e::stack::Stack;
use nix::sys::signal::Signal;
use serde_json::Value;
use sidecar_bus::Bucket;
use testkit::NatsServer;

use crate::support::{
    self, DEMO_NODES, DEMO_TOPOLOGY, assert_backup_complete_once, final_run, journal_records,
    method_name, node_calls, ops_json, stack_options, wait_for, with_agents_and_coordinator,
};
use crate::verdicts::VerdictWatch;

const SERVERS: usize = 3;

const NODES: [&str; 6] = DEMO_NODES;

/// A Raft group of the cluster whose leader a round kills.
#[derive(Clone, Copy, Debug)]
enum Group {
    CommandStream,
    LeaseBucket,
    RunBucket,
    Meta,
}

impl Group {
    /// The stream whose leader this is (KV buckets are streams `KV_<bucket>`); none for the
    /// meta group, which orders stream creation and placement.
    fn stream(self, stack: &Stack) -> Option<String> {
        let names = stack.names();
        match self {
            Self::CommandStream => Some(names.command_stream()),
            Self::LeaseBucket => Some(names.bucket_stream(Bucket::Leader)),
            Self::RunBucket => Some(names.bucket_stream(Bucket::Runs)),
            Self::Meta => None,
        }
    }
}

/// A server's `/<path>` monitoring answer as JSON; `None` while it is down or not answering.
fn monitoring(server: &NatsServer, path: &str) -> Option<Value> {
    let url = format!("{}/{path}", server.monitor_url()?);
    let (status, body) = prometheus_text::scrape(&url).ok()?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

fn jsz(server: &NatsServer) -> Option<Value> {
    monitoring(server, "jsz?accounts=true&streams=true")
}

/// Every stream a server hosts: (name, the `cluster` part of its detail).
fn hosted_streams(jsz: &Value) -> Vec<(String, Value)> {
    jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
        .filter_map(|stream| {
            Some((
                stream["name"].as_str()?.to_owned(),
                stream["cluster"].clone(),
            ))
        })
        .collect()
}

/// The member index of `group`'s leader as the live members report it, if they agree on one.
fn leader_of(stack: &Stack, group: Group) -> Option<usize> {
    let stream = group.stream(stack);
    let servers = stack.nats.servers();
    let named: Vec<String> = servers
        .iter()
        .filter_map(jsz)
        .filter_map(|jsz| {
            let leader = match &stream {
                None => jsz["meta_cluster"]["leader"].as_str().map(str::to_owned),
                Some(stream) => hosted_streams(&jsz)
                    .into_iter()
                    .find(|(name, _)| name == stream)
                    .and_then(|(_, cluster)| cluster["leader"].as_str().map(str::to_owned)),
            };
            leader.filter(|name| !name.is_empty())
        })
        .collect();
    let first = named.first()?;
    if named.iter().any(|name| name != first) {
        return None;
    }
    servers.iter().position(|s| s.server_name() == first)
}

/// Every member answers and names the same meta leader, and every stream is hosted by every
/// member with one leader whose followers are all current (only a leader knows whether its
/// followers caught up): the cluster is whole again after a restart.
fn cluster_whole(stack: &Stack) -> bool {
    let servers = stack.nats.servers();
    let answers: Option<Vec<Value>> = servers.iter().map(jsz).collect();
    let Some(answers) = answers else {
        return false;
    };
    let meta = answers[0]["meta_cluster"]["leader"]
        .as_str()
        .unwrap_or_default();
    let same_meta = answers
        .iter()
        .all(|jsz| jsz["meta_cluster"]["leader"].as_str() == Some(meta));
    let hosted: Vec<BTreeMap<String, Value>> = answers
        .iter()
        .map(|jsz| hosted_streams(jsz).into_iter().collect())
        .collect();
    let streams_whole = !hosted[0].is_empty()
        && hosted[0].keys().all(|stream| {
            let leader = hosted[0][stream]["leader"].as_str().unwrap_or_default();
            let led_alike = hosted.iter().all(|streams| {
                streams.get(stream).and_then(|c| c["leader"].as_str()) == Some(leader)
            });
            let followers_current = servers
                .iter()
                .position(|server| server.server_name() == leader)
                .and_then(|index| hosted[index].get(stream))
                .is_some_and(|cluster| {
                    cluster["replicas"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .all(|replica| replica["current"] == true)
                });
            !leader.is_empty() && led_alike && followers_current
        });
    !meta.is_empty() && same_meta && streams_whole
}

/// Each server runs with the deploy settings, read back from its `/varz`.
fn assert_deploy_settings(stack: &Stack) {
    for server in stack.nats.servers() {
        let varz = monitoring(server, "varz")
            .unwrap_or_else(|| panic!("{} answers /varz", server.server_name()));
        let jetstream = &varz["jetstream"]["config"];
        eprintln!(
            "{}: version {}, jetstream config {jetstream}",
            server.server_name(),
            varz["version"]
        );
        assert_eq!(
            jetstream["sync_always"],
            true,
            "{} must fsync every write (sync_interval: always): {jetstream}",
            server.server_name()
        );
    }
}

/// A backup into `set`, with `set` as its request id too (a repeat finds the run).
fn backup_args(set: &str, wait: bool) -> Vec<String> {
    support::backup_args(set, set, wait)
}

fn ops(stack: &Stack, args: &[String]) -> (std::process::ExitStatus, Vec<Value>) {
    support::ops_json_owned(stack, args)
}

/// `canton-ops` exits 3 when the coordinator cannot answer now (a read the cluster cannot
/// serve while it elects a leader): the same request may be asked again.
const EXIT_UNAVAILABLE: i32 = 3;

/// Waits for the backup into `set` to finish (asking again while the coordinator answers
/// that it cannot read now) and returns its final summary.
fn finished_backup(stack: &Stack, set: &str) -> Value {
    let started = Instant::now();
    loop {
        let (status, values) = ops(stack, &backup_args(set, true));
        if status.code() == Some(EXIT_UNAVAILABLE) && started.elapsed() < Duration::from_secs(60) {
            eprintln!(
                "{set}: unavailable after {:?}; asking again",
                started.elapsed()
            );
            continue;
        }
        assert!(status.success(), "{values:#?}");
        eprintln!(
            "{set}: finished {:?} after the first ask",
            started.elapsed()
        );
        return final_run(&values).clone();
    }
}

/// Starts a backup, SIGKILLs the server that leads `group` while it runs, waits for the run
/// (the same request id finds it) on the two survivors, then restarts the server and waits for
/// the cluster to be whole.
async fn kill_leader_during_a_backup(stack: &mut Stack, group: Group) {
    let set = format!("killed-{group:?}").to_lowercase();
    let leader = {
        let mut found = None;
        wait_for(
            &format!("the {group:?} leader"),
            Duration::from_secs(30),
            || {
                found = leader_of(stack, group);
                found.is_some()
            },
        );
        found.expect("a leader")
    };
    let (status, values) = ops(stack, &backup_args(&set, false));
    assert!(status.success(), "{values:#?}");
    let server = stack.nats.server_mut(leader).expect("the leader's server");
    eprintln!("{group:?}: SIGKILL of {} mid-backup", server.server_name());
    server.kill();
    let run = finished_backup(stack, &set);
    assert_backup_complete_once(stack, &run, &NODES);
    if let Some(successor) = leader_of(stack, group) {
        assert_ne!(successor, leader, "{group:?} has a new leader");
    }
    let restarted = Instant::now();
    stack
        .nats
        .server_mut(leader)
        .expect("the killed server")
        .restart()
        .expect("restarting the killed server");
    eprintln!("restarted in {:?}", restarted.elapsed());
    wait_for(
        "the cluster whole again (every stream led, followers current)",
        Duration::from_secs(60),
        || cluster_whole(stack),
    );
}

async fn cluster_stack() -> Stack {
    let started = Instant::now();
    let mut stack = Stack::start_deployed(&stack_options(DEMO_TOPOLOGY), SERVERS)
        .await
        .expect("starting the stack on a cluster");
    eprintln!("stack on {SERVERS} servers up in {:?}", started.elapsed());
    stack.serve_metrics = true;
    stack
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_complete_once_when_the_leaders_of_commands_lease_runs_and_meta_are_killed() {
    let stack = cluster_stack().await;
    assert_deploy_settings(&stack);
    let mut stack = with_agents_and_coordinator(stack, "").await;
    wait_for("the cluster whole", Duration::from_secs(60), || {
        cluster_whole(&stack)
    });
    for group in [
        Group::CommandStream,
        Group::LeaseBucket,
        Group::RunBucket,
        Group::Meta,
    ] {
        kill_leader_during_a_backup(&mut stack, group).await;
    }
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

/// Commands and journal starts each participant has seen so far.
async fn participant_activity(stack: &Stack) -> BTreeMap<String, (usize, usize)> {
    let mut activity = BTreeMap::new();
    for node in ["participant1", "participant2", "participant3"] {
        let calls = node_calls(stack, node)
            .await
            .iter()
            .filter(|(method, _)| method_name(method).starts_with("Disconnect"))
            .count();
        let starts = journal_records(stack, node)
            .iter()
            .filter(|record| record["record"] == "started")
            .count();
        activity.insert(node.to_owned(), (calls, starts));
    }
    activity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_left_with_a_minority_neither_acts_nor_calls_nodes_down() {
    const FROZEN: &str = "participant1";
    let mut stack = cluster_stack().await;
    let own = stack.nats.servers()[0].url().to_owned();
    stack.coordinator_nats_url = Some(own);
    let stack = with_agents_and_coordinator(stack, "").await;
    let mut stack = stack;
    let watch = VerdictWatch::of_coordinator(&stack);
    watch.wait_for(
        "leader with a trusted detector, every node alive",
        Duration::from_secs(60),
        |r| r.leader && r.detector_healthy && r.alive.len() == NODES.len(),
    );
    let before = participant_activity(&stack).await;

    // The coordinator's server loses both peers; the agents reconnect to it (the only one
    // left), except the frozen one, which stays silent as a node beyond a partition would.
    for peer in 1..SERVERS {
        stack.nats.server_mut(peer).expect("peer").kill();
    }
    stack.agents[FROZEN]
        .process
        .signal(Signal::SIGSTOP)
        .expect("freezing an agent");
    let cut = Instant::now();
    let lost = watch.wait_for(
        "the lease lost without a quorum",
        Duration::from_secs(30),
        |r| !r.leader,
    );
    eprintln!("no leader {lost:?} after the quorum went");
    let (status, values) = ops_json(
        &stack,
        &[
            "run",
            "disconnect",
            "--request-id",
            "in-minority",
            "--param",
            "deadline=5s",
            "--node",
            "participant2,participant3",
        ],
    );
    eprintln!("StartRun in the minority: {status} {values:?}");
    assert!(
        !status.success(),
        "a run started without a quorum: {values:#?}"
    );
    // Three failure timeouts of silence from the frozen node: a verdict would show by now.
    let watched = Duration::from_secs(15);
    wait_for(
        "three failure timeouts in the minority",
        watched * 2,
        || cut.elapsed() >= watched,
    );
    let minority = watch.since(cut);
    assert!(!minority.is_empty(), "the coordinator answered no scrape");
    let downs = watch.downs_since(cut, &[]);
    assert!(downs.is_empty(), "Down verdicts from a minority: {downs:?}");
    let leading: Vec<Duration> = minority
        .iter()
        .filter(|r| r.leader && r.at > cut + lost)
        .map(|r| r.at - cut)
        .collect();
    assert!(
        leading.is_empty(),
        "leader again without a quorum at {leading:?}"
    );
    assert_eq!(
        participant_activity(&stack).await,
        before,
        "no command reached a participant from the minority"
    );

    let returned = Instant::now();
    for peer in 1..SERVERS {
        stack
            .nats
            .server_mut(peer)
            .expect("peer")
            .restart()
            .expect("restarting a peer");
    }
    watch.wait_for(
        "leader again with the quorum back",
        Duration::from_secs(60),
        |r| r.leader,
    );
    // With the quorum back the silence is real: the frozen node is now Down.
    watch.wait_for(
        "the frozen node Down once verdicts are trusted",
        Duration::from_secs(60),
        |r| r.down.iter().any(|n| n == FROZEN),
    );
    let wrongly = watch.downs_since(returned, &[FROZEN]);
    assert!(wrongly.is_empty(), "live nodes called Down: {wrongly:?}");
    stack.agents[FROZEN]
        .process
        .signal(Signal::SIGCONT)
        .expect("thawing the agent");
    watch.wait_for("every node alive", Duration::from_secs(60), |r| {
        r.alive.len() == NODES.len()
    });
    let run = finished_backup(&stack, "after-minority");
    assert_backup_complete_once(&stack, &run, &NODES);
    drop(watch);
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_completes_once_when_its_single_server_is_killed_mid_run() {
    let stack = Stack::start_deployed(&stack_options(DEMO_TOPOLOGY), 1)
        .await
        .expect("starting the stack");
    assert_deploy_settings(&stack);
    let mut stack = with_agents_and_coordinator(stack, "").await;
    let (status, values) = ops(&stack, &backup_args("single-killed", false));
    assert!(status.success(), "{values:#?}");
    let server = stack.nats.server_mut(0).expect("the server");
    server.kill();
    let restarted = Instant::now();
    server.restart().expect("restarting the server");
    eprintln!("SIGKILLed and restarted in {:?}", restarted.elapsed());
    let run = finished_backup(&stack, "single-killed");
    assert_backup_complete_once(&stack, &run, &NODES);
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
