//! One organisation of `n` participants as the benchmarks set it up: deterministic keys, the
//! signed network configuration, the coordinator's configuration with the deploy defaults,
//! and real agents (command path, file journal, signed acks) run as tasks of one process.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use canton_agent::actions::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, ActionRegistry, Command,
    Idempotency,
};
use canton_agent::commands::{CommandPath, TrustMaterial};
use canton_agent::config::{
    AgentConfig, CommandsConfig, NatsConfig, NodeKind, ProbeSchedules, Schedule, TrustConfig,
};
use canton_agent::{Agent, AgentMetrics};
use canton_coordinator::api::Role;
use canton_coordinator::config::Config;
use canton_coordinator::leadership::LeaseTiming;
use futures::future::BoxFuture;
use prost::Message as _;
use proto_sidecar as pb;
use sidecar_bus::{Names, NatsAuth, NetworkId, NodeId};
use sidecar_trust::{KeyPurpose, SigningIdentity, sign_network_config};
use tokio_util::sync::CancellationToken;

pub const ORG: &str = "org-bench";

/// The connection a failure detector needs (with its events), as the coordinator of [`ORG`]
/// opens it.
pub async fn registry_connection(
    url: &str,
    names: &Names,
) -> anyhow::Result<(
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<async_nats::Event>,
)> {
    Ok(sidecar_bus::connect_with_events(
        url,
        "bench-registry",
        &NatsAuth::default(),
        &names.coordinator_inbox(ORG),
    )
    .await?)
}
pub const OPERATOR_TOKEN: &str = "bench-operator-token-0123456789";

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub fn node_id(index: usize) -> String {
    format!("p{index}")
}

pub fn config_key() -> SigningIdentity {
    SigningIdentity::from_seed("net/config", KeyPurpose::Config, "network", [9; 32])
}

pub fn coordinator_key() -> SigningIdentity {
    SigningIdentity::from_seed("bench/coord", KeyPurpose::Coordinator, ORG, [1; 32])
}

/// The ack key of agent `index`: a seed no other index shares.
pub fn agent_key(index: usize) -> SigningIdentity {
    let mut seed = [0xA5; 32];
    seed[..8].copy_from_slice(&(index as u64).to_le_bytes());
    SigningIdentity::from_seed(
        format!("bench/agent-{}", node_id(index)),
        KeyPurpose::Agent,
        ORG,
        seed,
    )
    .with_node(node_id(index))
}

/// The network configuration listing `agents` participants, signed by the config key.
pub fn signed_network_config(network: &str, agents: usize) -> Vec<u8> {
    let mut keys = vec![coordinator_key().trusted_key(None, None).to_proto()];
    keys.extend((0..agents).map(|i| agent_key(i).trusted_key(None, None).to_proto()));
    let config = pb::NetworkConfig {
        network: network.to_owned(),
        serial: 1,
        organisations: vec![
            pb::Organisation {
                id: ORG.into(),
                display_name: "Bench".into(),
                nodes: (0..agents).map(node_id).collect(),
            },
            pb::Organisation {
                id: "network".into(),
                display_name: "config".into(),
                nodes: vec![],
            },
        ],
        keys,
        issued_at_unix_ms: now_ms(),
    };
    sign_network_config(&config_key(), &config).encode_to_vec()
}

/// The coordinator as deployed (15 s lease, 200 ms tick, 10 s fence timeout, 2 s skew).
pub fn coordinator_config(
    network: &NetworkId,
    nats_url: &str,
    replicas: usize,
    agents: usize,
) -> anyhow::Result<Config> {
    let mut tokens = BTreeMap::new();
    tokens.insert(OPERATOR_TOKEN.to_owned(), Role::Operator);
    Ok(Config {
        network: network.clone(),
        organisation: ORG.into(),
        name: "bench-coordinator".into(),
        nats_url: nats_url.into(),
        nats_replicas: replicas,
        nats_auth: NatsAuth::default(),
        signing_seed: coordinator_key().seed(),
        signing_key_id: coordinator_key().key_id().to_owned(),
        network_config: signed_network_config(network.as_str(), agents),
        config_public_key: config_key().trusted_key(None, None).public.to_bytes(),
        config_key_id: config_key().key_id().to_owned(),
        api_listen: "127.0.0.1:0".parse()?,
        retention: Default::default(),
        tokens,
        tls: None,
        lease: LeaseTiming::new(Duration::from_secs(15), LeaseTiming::DEFAULT_EPSILON)
            .map_err(|e| anyhow::anyhow!("lease timing: {e}"))?,
        clock_skew: Duration::from_secs(2),
        fence_timeout: Duration::from_secs(10),
        tick: Duration::from_millis(200),
    })
}

/// A disconnect that changes nothing: the benchmark measures the command path around the
/// action (check, journal, signed ack), not a Canton node.
struct NoopDisconnect;

impl ActionHandler for NoopDisconnect {
    fn kind(&self) -> ActionName {
        ActionName::Disconnect
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Natural
    }

    fn run(
        &self,
        _command: Command,
        _context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        Box::pin(async {
            Ok(ActionOutput {
                result: b"{}".to_vec(),
                detail: String::new(),
            })
        })
    }
}

fn schedule(period: Duration) -> Schedule {
    Schedule {
        period,
        timeout: period,
    }
}

/// A real agent for participant `index` with its journal under `dir/<node>/`, trusting the
/// network configuration at `network_config`. No probes: there is no Canton node behind it.
pub fn agent(
    network: &NetworkId,
    nats_url: &str,
    network_config: &Path,
    dir: &Path,
    index: usize,
    heartbeat_interval: Duration,
) -> anyhow::Result<Agent> {
    let node = node_id(index);
    let own = dir.join(&node);
    std::fs::create_dir_all(&own).with_context(|| format!("creating {}", own.display()))?;
    let key = agent_key(index);
    let seed_path = own.join("ack.seed");
    std::fs::write(&seed_path, key.seed())?;
    let trust = TrustConfig {
        network_config: network_config.to_owned(),
        config_key: config_key().trusted_key(None, None).public.to_bytes(),
        ack_key_seed: seed_path,
        ack_key_id: key.key_id().to_owned(),
        organisation: ORG.to_owned(),
        max_clock_skew: Duration::from_secs(2),
    };
    let every = schedule(Duration::from_secs(5));
    let config = AgentConfig {
        network: network.clone(),
        node: NodeId::new(node.clone())?,
        kind: NodeKind::Participant,
        nats: NatsConfig {
            url: nats_url.to_owned(),
            auth: NatsAuth::default(),
            ping_interval: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_reconnect_delay: Duration::from_secs(2),
        },
        heartbeat_interval,
        state_refresh: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(2),
        canton: None,
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
    let material = TrustMaterial::load(&trust, &config.network, &config.node, now_ms())
        .map_err(|e| anyhow::anyhow!("{node}: {e}"))?;
    let mut registry = ActionRegistry::new();
    registry
        .register(Arc::new(NoopDisconnect))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(
        Agent::new(config, Vec::new(), AgentMetrics::default()).with_commands(CommandPath {
            trust: material,
            settings: CommandsConfig {
                journal_dir: own.join("journal"),
                ack_wait: Duration::from_secs(30),
                max_deliver: 20,
                max_ack_pending: 64,
            },
            registry,
        }),
    )
}

/// Starts `agents` agents as tasks, spread over the comma-separated `nats_urls` (agent `i`
/// connects to server `i mod count`); all stop with `shutdown`.
pub fn spawn_agents(
    network: &NetworkId,
    nats_urls: &str,
    network_config: &Path,
    dir: &Path,
    agents: usize,
    heartbeat_interval: Duration,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let urls: Vec<&str> = nats_urls.split(',').collect();
    let mut tasks = Vec::with_capacity(agents);
    for index in 0..agents {
        let url = urls[index % urls.len()];
        let agent = agent(network, url, network_config, dir, index, heartbeat_interval)?;
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(error) = agent.run(stop).await {
                eprintln!("agent {} stopped: {error}", node_id(index));
            }
        }));
    }
    Ok(tasks)
}
