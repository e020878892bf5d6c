//! Pieces for the command-path tests: a signed network configuration with coordinator and
//! agent keys, a signer for commands (there is no coordinator in these tests), an ack
//! collector that verifies every ack, a participant on canton-sim, and the sim's action log.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use canton_agent::actions::ActionHandler;
use canton_agent::commands::{CommandPath, TrustMaterial};
use canton_agent::config::{AgentConfig, CantonConfig, CommandsConfig, TrustConfig};
use canton_agent::{Agent, AgentError, AgentMetrics};
use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use futures::StreamExt;
use prost::Message;
use proto_sidecar as pb;
use sidecar_bus::{Network, NodeId};
use sidecar_trust::{
    AckExpectation, KeyPurpose, KeyRing, SigningIdentity, VerifiedAck, sign_network_config,
};
use testkit::{Postgres, binary_path};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const NODE: &str = "participant1";
pub const ORG: &str = "org-a";
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Shows the agent's own logs in the test output.
pub fn show_logs() {
    static GUARD: std::sync::OnceLock<sidecar_telemetry::Guard> = std::sync::OnceLock::new();
    GUARD.get_or_init(|| sidecar_telemetry::init(sidecar_telemetry::LogFormat::Text));
}

/// Commands delivered to the agent and not yet acked or terminated.
pub async fn ack_pending(net: &Network) -> usize {
    let node = NodeId::new(NODE).unwrap();
    let stream = net
        .jetstream
        .get_stream(net.names.command_stream())
        .await
        .unwrap();
    stream
        .consumer_info(net.names.agent_consumer(&node))
        .await
        .unwrap()
        .num_ack_pending
}

/// The keys of a two-organisation network and the files an agent reads.
pub struct Trust {
    pub network: String,
    pub config_signer: SigningIdentity,
    pub coordinator: SigningIdentity,
    /// Org B's coordinator: valid signatures, wrong organisation for this agent.
    pub other_coordinator: SigningIdentity,
    pub operator: SigningIdentity,
    pub agent: SigningIdentity,
}

impl Trust {
    pub fn new(network: &str) -> Self {
        Self {
            network: network.to_owned(),
            config_signer: SigningIdentity::from_seed(
                "net/config",
                KeyPurpose::Config,
                ORG,
                [9; 32],
            ),
            coordinator: SigningIdentity::from_seed(
                "org-a/coord",
                KeyPurpose::Coordinator,
                ORG,
                [1; 32],
            ),
            other_coordinator: SigningIdentity::from_seed(
                "org-b/coord",
                KeyPurpose::Coordinator,
                "org-b",
                [2; 32],
            ),
            operator: SigningIdentity::from_seed("org-a/ops", KeyPurpose::Operator, ORG, [3; 32]),
            agent: SigningIdentity::from_seed("org-a/agent-p1", KeyPurpose::Agent, ORG, [4; 32])
                .with_node(NODE),
        }
    }

    pub fn keys(&self) -> KeyRing {
        [
            &self.coordinator,
            &self.other_coordinator,
            &self.operator,
            &self.agent,
        ]
        .into_iter()
        .map(|identity| identity.trusted_key(None, None))
        .collect()
    }

    fn network_config(&self) -> Vec<u8> {
        let config = pb::NetworkConfig {
            network: self.network.clone(),
            serial: 1,
            organisations: vec![
                pb::Organisation {
                    id: ORG.into(),
                    display_name: "A".into(),
                    nodes: vec![NODE.into()],
                },
                pb::Organisation {
                    id: "org-b".into(),
                    display_name: "B".into(),
                    nodes: vec![],
                },
            ],
            keys: self.keys().iter().map(|key| key.to_proto()).collect(),
            issued_at_unix_ms: now_ms(),
        };
        sign_network_config(&self.config_signer, &config).encode_to_vec()
    }

    /// Writes the network configuration and the ack key seed into `dir`.
    pub fn write(&self, dir: &Path) -> TrustConfig {
        let network_config = dir.join("network.cfg");
        let ack_key_seed = dir.join("ack.seed");
        std::fs::write(&network_config, self.network_config()).unwrap();
        std::fs::write(&ack_key_seed, self.agent.seed()).unwrap();
        TrustConfig {
            network_config,
            config_key: self.config_signer.trusted_key(None, None).public.to_bytes(),
            ack_key_seed,
            ack_key_id: self.agent.key_id().to_owned(),
            organisation: ORG.to_owned(),
            max_clock_skew: Duration::from_secs(2),
        }
    }

    /// A command of org A for the node at `epoch`, issued now, valid for ten minutes.
    pub fn command(
        &self,
        run: &str,
        step: &str,
        kind: pb::action::Kind,
        epoch: u64,
    ) -> pb::Command {
        pb::Command {
            network: self.network.clone(),
            organisation: ORG.into(),
            node: NODE.into(),
            run: run.into(),
            step: step.into(),
            command_id: format!("{run}/{step}/{NODE}"),
            attempt: 1,
            epoch,
            claim: None,
            issued_at_unix_ms: now_ms() - 100,
            expires_at_unix_ms: now_ms() + 600_000,
            traceparent: String::new(),
            action: Some(pb::Action { kind: Some(kind) }),
            approval: None,
            replica: String::new(),
            runbook: String::new(),
        }
    }

    pub fn sign(&self, command: &pb::Command) -> Vec<u8> {
        sidecar_trust::sign_command(&self.coordinator, command).encode_to_vec()
    }
}

pub fn disconnect_all() -> pb::action::Kind {
    pb::action::Kind::Disconnect(pb::Disconnect::default())
}

pub fn reconnect_all() -> pb::action::Kind {
    pb::action::Kind::Reconnect(pb::Reconnect::default())
}

pub fn commands_config(journal_dir: &Path, ack_wait: Duration) -> CommandsConfig {
    CommandsConfig {
        journal_dir: journal_dir.to_owned(),
        ack_wait,
        max_deliver: 20,
        max_ack_pending: 64,
    }
}

/// Publishes raw envelope bytes on the node's command subject and waits for the stream.
pub async fn publish(net: &Network, raw: Vec<u8>) {
    let subject = net.names.command(&NodeId::new(NODE).unwrap());
    net.jetstream
        .publish(subject, raw.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// A verified ack and its `Nats-Msg-Id`.
#[derive(Clone, Debug)]
pub struct SeenAck {
    pub ack: pb::Ack,
    pub message_id: String,
}

/// Every ack of the node, each verified against the agent's key.
#[derive(Clone, Default)]
pub struct Acks(Arc<Mutex<Vec<SeenAck>>>);

impl Acks {
    pub async fn collect(net: &Network, trust: &Trust) -> Self {
        let subject = net.names.acks_of(&NodeId::new(NODE).unwrap());
        let mut subscription = net.client.subscribe(subject).await.unwrap();
        net.client.flush().await.unwrap();
        let keys = trust.keys();
        let network = trust.network.clone();
        let acks = Self::default();
        let sink = acks.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Ok(envelope) = pb::SignedEnvelope::decode(message.payload.as_ref()) else {
                    eprintln!("ack collector: not an envelope");
                    continue;
                };
                let Ok(unverified) = pb::Ack::decode(envelope.body.as_slice()) else {
                    eprintln!("ack collector: not an ack");
                    continue;
                };
                let verified = sidecar_trust::verify_ack(
                    &message.payload,
                    &keys,
                    &AckExpectation {
                        network: &network,
                        run: &unverified.run,
                        node: Some(NODE),
                    },
                    now_ms(),
                );
                let VerifiedAck { ack, .. } = match verified {
                    Ok(verified) => verified,
                    Err(rejection) => {
                        // Counted as missing by the test waiting for it.
                        eprintln!("ack collector: unverifiable ack {unverified:?}: {rejection}");
                        continue;
                    }
                };
                let message_id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                sink.0.lock().unwrap().push(SeenAck { ack, message_id });
            }
        });
        acks
    }

    pub fn all(&self) -> Vec<SeenAck> {
        self.0.lock().unwrap().clone()
    }

    pub fn of(&self, command_id: &str) -> Vec<SeenAck> {
        self.all()
            .into_iter()
            .filter(|seen| seen.ack.command_id == command_id)
            .collect()
    }

    /// Waits for an ack of `command_id` with `status` and returns it.
    pub async fn wait(&self, command_id: &str, status: pb::AckStatus) -> SeenAck {
        let start = std::time::Instant::now();
        loop {
            if let Some(seen) = self
                .of(command_id)
                .into_iter()
                .find(|s| s.ack.status() == status)
            {
                eprintln!("{command_id} acked {status:?} after {:?}", start.elapsed());
                return seen;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{command_id}: no {status:?} ack within {DEADLINE:?}; acks of it: {:?}",
                self.of(command_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const TOPOLOGY: &str = r#"
[[node]]
id = "sequencer1"
kind = "sequencer"
[[node]]
id = "mediator1"
kind = "mediator"
[[node]]
id = "participant1"
kind = "participant"
"#;

/// A small sim network whose participant is connected to its synchronizer.
pub async fn start_sim(postgres: &Postgres) -> SimNetwork {
    // Nodes pick free ports before binding them; a test running alongside can take one in
    // between, so a failed start is tried again with fresh ports.
    let mut attempt = 0;
    let sims = loop {
        attempt += 1;
        let started = SimNetwork::start(
            &NetworkSpec::from_toml(&format!(
                "name = \"{}\"\n{TOPOLOGY}",
                testkit::unique_id("agentcmd")
            ))
            .unwrap(),
            LaunchOptions {
                postgres: PostgresTarget::of(postgres),
                binary: &binary_path("canton-sim").unwrap(),
                work_dir: None,
            },
        );
        match started {
            Ok(sims) => break sims,
            Err(error) if attempt < 3 => eprintln!("sim network start {attempt} failed: {error}"),
            Err(error) => panic!("sim network did not start: {error}"),
        }
    };
    let client = participant_client(&sims);
    crate::support::wait_for("participant connected", DEADLINE, || async {
        client
            .list_connected_synchronizers()
            .await
            .is_ok_and(|list| !list.is_empty())
    })
    .await;
    sims
}

pub fn canton_config(sims: &SimNetwork) -> CantonConfig {
    let endpoints = sims.node(NODE).unwrap().endpoints();
    CantonConfig {
        admin_url: format!("http://{}", endpoints.admin.unwrap()),
        grpc_health_url: None,
        grpc_health_service: String::new(),
        http_health_url: None,
        ledger_api_url: None,
    }
}

/// A client of the participant, for the test's own reads and repairs.
pub fn participant_client(sims: &SimNetwork) -> canton_client::CantonClient {
    let endpoints = sims.node(NODE).unwrap().endpoints();
    canton_client::CantonClient::new(canton_client::ClientConfig::new(
        NODE,
        canton_client::NodeKind::Participant,
        format!("http://{}", endpoints.admin.unwrap()),
    ))
    .unwrap()
}

/// The participant's own action log (every mutating admin call it executed or refused).
pub struct ActionLog<'a> {
    sims: &'a SimNetwork,
    after: i64,
}

impl<'a> ActionLog<'a> {
    /// Counts only calls logged from now on.
    pub async fn from_now(sims: &'a SimNetwork) -> ActionLog<'a> {
        let actions = sims.node(NODE).unwrap().control().actions(0).await.unwrap();
        let after = actions.iter().map(|a| a.seq).max().unwrap_or(0);
        Self { sims, after }
    }

    /// Method names (the part after the last `/`) of the calls since the mark, in order.
    pub async fn calls(&self) -> Vec<String> {
        let actions = self
            .sims
            .node(NODE)
            .unwrap()
            .control()
            .actions(self.after)
            .await
            .unwrap();
        actions
            .into_iter()
            .map(|a| a.method.rsplit('/').next().unwrap_or_default().to_owned())
            .collect()
    }

    pub async fn count(&self, method: &str) -> usize {
        self.calls().await.iter().filter(|m| *m == method).count()
    }
}

/// An agent with the command path, running in this process.
pub struct RunningAgent {
    pub metrics: AgentMetrics,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    /// Starts the agent of `config` with `[trust]` from `trust_config`, the standard handlers
    /// and `extra` handlers.
    pub fn start(
        config: AgentConfig,
        trust_config: &TrustConfig,
        settings: CommandsConfig,
        extra: Vec<Arc<dyn ActionHandler>>,
    ) -> Self {
        let trust =
            TrustMaterial::load(trust_config, &config.network, &config.node, now_ms()).unwrap();
        let metrics = AgentMetrics::default();
        let agent = Agent::new(config.clone(), Vec::new(), metrics.clone());
        let mut registry = canton_agent::actions::standard_registry(
            &config,
            agent.board(),
            agent.identity().clone(),
        )
        .unwrap();
        for handler in extra {
            registry.register(handler).unwrap();
        }
        let agent = agent.with_commands(CommandPath {
            trust,
            settings,
            registry,
        });
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(agent.run(shutdown.clone()));
        Self {
            metrics,
            shutdown,
            handle,
        }
    }

    pub fn rejected(&self, reason: &str) -> u64 {
        self.metrics.rejections.get(reason)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}
