//! The coordinator with a real canton-agent (command path, journal, signed acks) beside a
//! canton-sim participant: synchronized disconnect and reconnect through the API, witnessed by
//! the participant's own connection list and action log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use canton_agent::clock::{SystemClock, WallClock};
use canton_agent::config::{
    AgentConfig, CantonConfig, CommandsConfig, NatsConfig, NodeKind, ProbeSchedules, Schedule,
    TrustConfig,
};
use canton_agent::{Agent, AgentMetrics};
use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use proto_sidecar as pb;
use sidecar_bus::NodeId;
use testkit::{NatsServer, Postgres, binary_path};
use tokio_util::sync::CancellationToken;

use crate::support::{
    OPERATOR_TOKEN, TestNode, agent_key, client, config, config_key, finished, now_ms,
    wait_driving, wait_for_run,
};

pub const PARTICIPANT: &str = "participant1";

pub fn topology() -> String {
    format!(
        "name = \"{}\"\n[[node]]\nid = \"sequencer1\"\nkind = \"sequencer\"\n[[node]]\nid = \"mediator1\"\nkind = \"mediator\"\n[[node]]\nid = \"{PARTICIPANT}\"\nkind = \"participant\"\n",
        testkit::unique_id("coordsim")
    )
}

pub fn participant(sims: &SimNetwork) -> canton_client::CantonClient {
    let endpoints = sims.node(PARTICIPANT).unwrap().endpoints();
    canton_client::CantonClient::new(canton_client::ClientConfig::new(
        PARTICIPANT,
        canton_client::NodeKind::Participant,
        format!("http://{}", endpoints.admin.unwrap()),
    ))
    .unwrap()
}

async fn connected(client: &canton_client::CantonClient) -> Option<usize> {
    client
        .list_connected_synchronizers()
        .await
        .ok()
        .map(|l| l.len())
}

pub async fn wait_connected(
    client: &canton_client::CantonClient,
    what: &str,
    want: impl Fn(usize) -> bool,
) {
    let started = Instant::now();
    loop {
        if connected(client).await.is_some_and(&want) {
            eprintln!("{what} after {:?}", started.elapsed());
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what}: not within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn schedule(ms: u64) -> Schedule {
    Schedule {
        period: Duration::from_millis(ms),
        timeout: Duration::from_millis(ms),
    }
}

/// A sim network with one participant (and its synchronizer).
pub fn start_sims(postgres: &Postgres) -> SimNetwork {
    // Sim nodes bind ports picked beforehand; a parallel test may take one first, so the
    // network is started again (with fresh ports) when a node loses that race.
    let sim_binary = binary_path("canton-sim").unwrap();
    let mut attempts = 0;
    loop {
        attempts += 1;
        match SimNetwork::start(
            &NetworkSpec::from_toml(&topology()).unwrap(),
            LaunchOptions {
                postgres: PostgresTarget::of(postgres),
                binary: &sim_binary,
                work_dir: None,
            },
        ) {
            Ok(sims) => break sims,
            Err(error) if attempts < 3 => eprintln!("sim network start failed, again: {error}"),
            Err(error) => panic!("sim network did not start: {error}"),
        }
    }
}

/// The participant's disconnect and reconnect calls after action `after` of its own log (method
/// names without their service).
pub async fn connectivity_calls(sims: &SimNetwork, after: i64) -> Vec<String> {
    let actions = sims
        .node(PARTICIPANT)
        .unwrap()
        .control()
        .actions(after)
        .await
        .unwrap();
    actions
        .iter()
        .map(|a| a.method.rsplit('/').next().unwrap_or_default().to_owned())
        .filter(|m| m.contains("isconnect") || m.contains("econnect"))
        .collect()
}

/// The sequence number of the participant's latest logged action, to count from.
pub async fn last_action(sims: &SimNetwork) -> i64 {
    let actions = sims
        .node(PARTICIPANT)
        .unwrap()
        .control()
        .actions(0)
        .await
        .unwrap();
    actions.iter().map(|a| a.seq).max().unwrap_or(0)
}

/// Waits until the agent's node state makes the participant part of the inventory.
pub async fn wait_for_node_state(network: &sidecar_bus::Network) {
    let started = Instant::now();
    while network
        .kv(sidecar_bus::Bucket::Nodes)
        .get(PARTICIPANT)
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no node state from the agent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("node state of {PARTICIPANT} after {:?}", started.elapsed());
}

/// The agent's task and its shutdown token.
pub type AgentTask = (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), canton_agent::AgentError>>,
);

/// A real agent (command path, journal in `dir`, signed acks) beside the sim participant,
/// trusting `network_config`. Starting it again on the same `dir` is a restart.
pub fn start_agent(
    names: &sidecar_bus::Names,
    nats_url: &str,
    sims: &SimNetwork,
    network_config: &[u8],
    dir: &std::path::Path,
    metrics: AgentMetrics,
) -> AgentTask {
    start_agent_with_clock(
        names,
        nats_url,
        sims,
        network_config,
        dir,
        metrics,
        &AgentClock::system(),
    )
}

/// The wall clock an in-process agent checks commands with, and its `trust.max_clock_skew`.
pub struct AgentClock {
    pub clock: Arc<dyn WallClock>,
    pub max_clock_skew: Duration,
}

impl AgentClock {
    /// The system clock and the default bound (2 s).
    pub fn system() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            max_clock_skew: Duration::from_secs(2),
        }
    }
}

/// [`start_agent`] on the given clock, as a host whose clock is off.
pub fn start_agent_with_clock(
    names: &sidecar_bus::Names,
    nats_url: &str,
    sims: &SimNetwork,
    network_config: &[u8],
    dir: &std::path::Path,
    metrics: AgentMetrics,
    clock: &AgentClock,
) -> AgentTask {
    // The same signed network configuration as the coordinator, and the agent's own ack key.
    let ack = agent_key(PARTICIPANT, 20);
    std::fs::write(dir.join("network.cfg"), network_config).unwrap();
    std::fs::write(dir.join("ack.seed"), ack.seed()).unwrap();
    let trust = TrustConfig {
        network_config: dir.join("network.cfg"),
        config_key: config_key().trusted_key(None, None).public.to_bytes(),
        ack_key_seed: dir.join("ack.seed"),
        ack_key_id: ack.key_id().to_owned(),
        organisation: crate::support::ORG.to_owned(),
        max_clock_skew: clock.max_clock_skew,
    };
    let every = schedule(300);
    let agent_config = AgentConfig {
        network: names.network().clone(),
        node: NodeId::new(PARTICIPANT).unwrap(),
        kind: NodeKind::Participant,
        nats: NatsConfig {
            url: nats_url.to_owned(),
            auth: Default::default(),
            ping_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            max_reconnect_delay: Duration::from_millis(500),
        },
        heartbeat_interval: Duration::from_millis(200),
        state_refresh: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(3),
        canton: Some(CantonConfig {
            admin_url: format!(
                "http://{}",
                sims.node(PARTICIPANT).unwrap().endpoints().admin.unwrap()
            ),
            grpc_health_url: None,
            grpc_health_service: String::new(),
            http_health_url: None,
            ledger_api_url: None,
        }),
        database_url: None,
        participant: None,
        commands: None,
        backup: None,
        lifecycle: None,
        splice: None,
        rehydrate: None,
        probes: ProbeSchedules {
            status: every,
            grpc_health: every,
            http_health: every,
            synchronizers: every,
            progress: every,
            database: every,
        },
    };
    let material = canton_agent::commands::TrustMaterial::load(
        &trust,
        &agent_config.network,
        &agent_config.node,
        now_ms(),
    )
    .unwrap();
    let agent = Agent::new(agent_config.clone(), Vec::new(), metrics);
    let registry = canton_agent::actions::standard_registry(
        &agent_config,
        agent.board(),
        agent.identity().clone(),
    )
    .unwrap();
    let agent = agent
        .with_commands(canton_agent::commands::CommandPath {
            trust: material,
            settings: CommandsConfig {
                journal_dir: dir.join("journal"),
                ack_wait: Duration::from_secs(30),
                max_deliver: 20,
                max_ack_pending: 64,
            },
            registry,
        })
        .with_clock(Arc::clone(&clock.clock));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(agent.run(shutdown.clone()));
    (shutdown, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_synchronized_disconnect_and_reconnect_through_a_real_agent_on_canton_sim() {
    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = start_sims(&postgres);
    let canton = participant(&sims);
    wait_connected(&canton, "participant connected", |n| n > 0).await;

    let names = crate::fresh_names();
    let network = crate::network(nats.url(), names.clone()).await;
    let nodes = vec![TestNode {
        id: PARTICIPANT,
        kind: pb::NodeKind::Participant,
        participant: "",
    }];
    let coordinator_config = config(&names, nats.url(), &nodes);

    let dir = tempfile::tempdir().unwrap();
    let (shutdown, agent_task) = start_agent(
        &names,
        nats.url(),
        &sims,
        &coordinator_config.network_config,
        dir.path(),
        AgentMetrics::default(),
    );

    wait_for_node_state(&network).await;
    let coordinator = canton_coordinator::service::Coordinator::start(coordinator_config)
        .await
        .unwrap();
    let epoch = wait_driving(&coordinator).await;
    let fences = coordinator
        .shared
        .fences
        .lock()
        .unwrap()
        .get(&epoch)
        .cloned();
    assert!(
        fences.is_some_and(|acked| acked.contains(PARTICIPANT)),
        "the agent confirmed the fence"
    );
    let mut ops = client(coordinator.api_addr, OPERATOR_TOKEN).await;

    for (runbook, want_connected) in [("disconnect", false), ("reconnect", true)] {
        let run_id = ops
            .start_run(pb::StartRunRequest {
                runbook: runbook.into(),
                nodes: vec![],
                parameters: vec![pb::Parameter {
                    key: "deadline".into(),
                    value: "30s".into(),
                }],
                request_id: format!("real-{runbook}"),
            })
            .await
            .unwrap()
            .into_inner()
            .run
            .unwrap()
            .run_id;
        let run = wait_for_run(
            &mut ops,
            &run_id,
            &format!("{runbook} through the agent"),
            finished,
        )
        .await;
        assert_eq!(run.status(), pb::RunStatus::Succeeded, "{run:#?}");
        let node = &run.steps[0].nodes[0];
        assert_eq!(node.node, PARTICIPANT);
        assert_eq!(node.attempt, 1);
        wait_connected(&canton, &format!("participant after {runbook}"), |n| {
            (n > 0) == want_connected
        })
        .await;
    }
    // The participant's own log: one disconnect and one reconnect call, nothing repeated.
    let methods = connectivity_calls(&sims, 0).await;
    eprintln!("participant calls: {methods:?}");
    assert_eq!(
        methods
            .iter()
            .filter(|m| m.starts_with("Disconnect"))
            .count(),
        1,
        "{methods:?}"
    );
    assert_eq!(
        methods
            .iter()
            .filter(|m| m.starts_with("Reconnect"))
            .count(),
        1,
        "{methods:?}"
    );

    shutdown.cancel();
    agent_task.await.unwrap().unwrap();
}
