//! A coordinator on a real nats-server with a test responder standing in for the agents: it
//! checks every command with `trust::check_command` (epoch, journal, expiry), honours revokes
//! per attempt, and answers with signed acks.

use std::collections::{BTreeMap, HashMap};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer;
use bytes::Bytes;
use canton_coordinator::api::Role;
use canton_coordinator::config::Config;
use canton_coordinator::leadership::LeaseTiming;
use canton_coordinator::service::Coordinator;
use futures::StreamExt;
use prost::Message;
use proto_sidecar::coordinator_service_client::CoordinatorServiceClient;
use proto_sidecar::{self as pb, action::Kind};
use sidecar_bus::{Bucket, Names, Network, NodeId};
use sidecar_trust::{
    AgentPolicy, BodyHash, CheckContext, KeyPurpose, SigningIdentity, sign_ack, sign_network_config,
};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const ORG: &str = "org-a";
pub const OPERATOR_TOKEN: &str = "operator-token-0123456789";
pub const READ_TOKEN: &str = "reader-token-0123456789ab";

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn coordinator_key() -> SigningIdentity {
    SigningIdentity::from_seed("org-a/coord", KeyPurpose::Coordinator, ORG, [1; 32])
}

pub fn config_key() -> SigningIdentity {
    SigningIdentity::from_seed("net/config", KeyPurpose::Config, "network", [9; 32])
}

pub fn agent_key(node: &str, seed: u8) -> SigningIdentity {
    SigningIdentity::from_seed(
        format!("org-a/agent-{node}"),
        KeyPurpose::Agent,
        ORG,
        [seed; 32],
    )
    .with_node(node)
}

/// A test node: id, kind and (for apps) participant.
#[derive(Clone)]
pub struct TestNode {
    pub id: &'static str,
    pub kind: pb::NodeKind,
    pub participant: &'static str,
}

pub fn demo_nodes() -> Vec<TestNode> {
    let node = |id, kind, participant| TestNode {
        id,
        kind,
        participant,
    };
    vec![
        node("app1", pb::NodeKind::App, "p1"),
        node("p1", pb::NodeKind::Participant, ""),
        node("p2", pb::NodeKind::Participant, ""),
        node("m1", pb::NodeKind::Mediator, ""),
        node("s1", pb::NodeKind::Sequencer, ""),
    ]
}

pub fn signed_network_config(network: &str, nodes: &[TestNode]) -> Vec<u8> {
    let mut keys = vec![coordinator_key().trusted_key(None, None).to_proto()];
    for (index, node) in nodes.iter().enumerate() {
        keys.push(
            agent_key(node.id, 20 + index as u8)
                .trusted_key(None, None)
                .to_proto(),
        );
    }
    let config = pb::NetworkConfig {
        network: network.to_owned(),
        serial: 1,
        organisations: vec![
            pb::Organisation {
                id: ORG.into(),
                display_name: "Org A".into(),
                nodes: nodes.iter().map(|n| n.id.to_owned()).collect(),
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

pub fn config(names: &Names, url: &str, nodes: &[TestNode]) -> Config {
    let mut tokens = BTreeMap::new();
    tokens.insert(OPERATOR_TOKEN.to_owned(), Role::Operator);
    tokens.insert(READ_TOKEN.to_owned(), Role::ReadOnly);
    Config {
        network: names.network().clone(),
        organisation: ORG.into(),
        name: "coord".into(),
        nats_url: url.into(),
        nats_replicas: 1,
        nats_auth: Default::default(),
        signing_seed: coordinator_key().seed(),
        signing_key_id: coordinator_key().key_id().to_owned(),
        network_config: signed_network_config(names.network().as_str(), nodes),
        config_public_key: config_key().trusted_key(None, None).public.to_bytes(),
        config_key_id: config_key().key_id().to_owned(),
        api_listen: "127.0.0.1:0".parse().unwrap(),
        tokens,
        tls: None,
        lease: LeaseTiming::short_for_tests(Duration::from_secs(3), Duration::from_millis(300))
            .unwrap(),
        clock_skew: Duration::from_millis(500),
        fence_timeout: Duration::from_secs(3),
        tick: Duration::from_millis(50),
        retention: Default::default(),
    }
}

/// Writes the node states the agents would write.
pub async fn write_inventory(network: &Network, nodes: &[TestNode]) {
    let store = network.kv(Bucket::Nodes).store();
    for node in nodes {
        let state = pb::NodeState {
            node: node.id.into(),
            kind: node.kind.into(),
            organisation: ORG.into(),
            participant: node.participant.into(),
            network: network.names.network().to_string(),
            role: pb::Role::Standalone.into(),
            ..Default::default()
        };
        store
            .put(node.id, Bytes::from(state.encode_to_vec()))
            .await
            .unwrap();
    }
}

/// How a responder node behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behaviour {
    Answer,
    /// Never answers run commands (fences are still confirmed).
    Silent,
    /// Answers run commands with Failed.
    Fail,
    /// Answers run commands with OutcomeUnknown (as after a crash mid-action).
    Unknown,
}

/// One execution the responder performed.
#[derive(Clone, Debug)]
pub struct Executed {
    pub node: String,
    pub command_id: String,
    pub attempt: u32,
    pub epoch: u64,
    pub at: i64,
}

#[derive(Default)]
struct NodeMemory {
    confirmed_epoch: u64,
    journal: BTreeMap<(String, u32), BodyHash>,
    revoked_up_to: BTreeMap<String, u32>,
}

/// Agents stand-in: one task per node on its own durable consumer.
pub struct Responder {
    pub executed: Arc<Mutex<Vec<Executed>>>,
    pub behaviour: Arc<Mutex<HashMap<String, Behaviour>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Responder {
    pub async fn start(network: &Network, nodes: &[TestNode]) -> Self {
        let executed = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Mutex::new(HashMap::new()));
        let mut tasks = Vec::new();
        let keys = sidecar_trust::KeyRing::from_iter([coordinator_key().trusted_key(None, None)]);
        for (index, node) in nodes.iter().enumerate() {
            let names = network.names.clone();
            let js = network.jetstream.clone();
            let id = NodeId::new(node.id).unwrap();
            let stream = js.get_stream(names.command_stream()).await.unwrap();
            let consumer: consumer::PullConsumer = stream
                .get_or_create_consumer(
                    &names.agent_consumer(&id),
                    consumer::pull::Config {
                        durable_name: Some(names.agent_consumer(&id)),
                        filter_subject: names.command(&id),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let signer = agent_key(node.id, 20 + index as u8);
            let executed = executed.clone();
            let behaviour = behaviour.clone();
            let keys = keys.clone();
            let node_id = node.id.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut memory = NodeMemory::default();
                let mut messages = consumer.messages().await.unwrap();
                while let Some(Ok(message)) = messages.next().await {
                    let mode = behaviour
                        .lock()
                        .unwrap()
                        .get(&node_id)
                        .copied()
                        .unwrap_or(Behaviour::Answer);
                    let answer = handle(
                        &names,
                        &node_id,
                        &keys,
                        &mut memory,
                        &message.payload,
                        mode,
                        &executed,
                    );
                    if let Some(ack) = answer {
                        let subject = names.ack(&NodeId::new(node_id.clone()).unwrap(), &ack.run);
                        let envelope = sign_ack(&signer, ack);
                        js.publish(subject, Bytes::from(envelope.encode_to_vec()))
                            .await
                            .unwrap()
                            .await
                            .unwrap();
                    }
                    let _ = message.ack().await;
                }
            }));
        }
        Self {
            executed,
            behaviour,
            tasks,
        }
    }

    pub fn set(&self, node: &str, behaviour: Behaviour) {
        self.behaviour
            .lock()
            .unwrap()
            .insert(node.to_owned(), behaviour);
    }

    pub fn executed(&self) -> Vec<Executed> {
        self.executed.lock().unwrap().clone()
    }
}

fn handle(
    names: &Names,
    node: &str,
    keys: &sidecar_trust::KeyRing,
    memory: &mut NodeMemory,
    raw: &[u8],
    mode: Behaviour,
    executed: &Mutex<Vec<Executed>>,
) -> Option<pb::Ack> {
    let policy = AgentPolicy::own_organisation(ORG);
    let ctx = CheckContext {
        network: names.network().as_str(),
        organisation: ORG,
        node,
        replica: None,
        confirmed_epoch: memory.confirmed_epoch,
        now_unix_ms: now_ms(),
        max_clock_skew_ms: 2_000,
        keys,
        policy: &policy,
        journal: &memory.journal,
        revoked: &memory.revoked_up_to,
    };
    let decoded = sidecar_trust::decode_envelope(raw)
        .ok()
        .and_then(|e| pb::Command::decode(e.body.as_slice()).ok())?;
    let mut ack = pb::Ack {
        network: names.network().to_string(),
        command_id: decoded.command_id.clone(),
        node: node.to_owned(),
        run: decoded.run.clone(),
        attempt: decoded.attempt,
        sent_at_unix_ms: now_ms(),
        ..Default::default()
    };
    let checked = match sidecar_trust::check_command(raw, &ctx) {
        Ok(checked) => checked,
        Err(rejection) => {
            ack.status = pb::AckStatus::Rejected.into();
            ack.reject_reason = rejection.reason.to_proto().into();
            ack.detail = rejection.to_string();
            ack.epoch = memory.confirmed_epoch;
            return Some(ack);
        }
    };
    ack.epoch = memory.confirmed_epoch.max(checked.command.epoch);
    if checked.redelivery {
        ack.status = pb::AckStatus::Done.into();
        return Some(ack);
    }
    memory.journal.insert(
        (decoded.command_id.clone(), decoded.attempt),
        checked.body_hash,
    );
    match decoded.action.as_ref().and_then(|a| a.kind.as_ref()) {
        Some(Kind::Fence(fence)) => {
            memory.confirmed_epoch = memory.confirmed_epoch.max(fence.epoch);
            ack.epoch = memory.confirmed_epoch;
            ack.status = pb::AckStatus::Done.into();
            return Some(ack);
        }
        Some(Kind::Revoke(revoke)) => {
            let up_to = memory
                .revoked_up_to
                .entry(revoke.command_id.clone())
                .or_default();
            *up_to = (*up_to).max(revoke.up_to_attempt);
            ack.status = pb::AckStatus::Done.into();
            return Some(ack);
        }
        _ => {}
    }
    executed.lock().unwrap().push(Executed {
        node: node.to_owned(),
        command_id: decoded.command_id.clone(),
        attempt: decoded.attempt,
        epoch: decoded.epoch,
        at: now_ms(),
    });
    match mode {
        Behaviour::Silent => None,
        Behaviour::Unknown => {
            ack.status = pb::AckStatus::OutcomeUnknown.into();
            ack.detail = format!("{node} cannot tell whether it applied");
            Some(ack)
        }
        Behaviour::Fail => {
            ack.status = pb::AckStatus::Failed.into();
            ack.detail = format!("{node} refuses in this test");
            Some(ack)
        }
        Behaviour::Answer => {
            ack.status = pb::AckStatus::Done.into();
            if let Some(Kind::Backup(backup)) =
                decoded.action.as_ref().and_then(|a| a.kind.as_ref())
            {
                ack.result = serde_json::to_vec(&serde_json::json!({
                    "node": node, "backup_set": backup.backup_set, "at": now_ms()
                }))
                .unwrap();
            }
            Some(ack)
        }
    }
}

type Auth = Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send>;
pub type Client = CoordinatorServiceClient<InterceptedService<Channel, Auth>>;

pub async fn client(addr: std::net::SocketAddr, token: &'static str) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let auth: Auth = Box::new(move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        Ok(request)
    });
    CoordinatorServiceClient::with_interceptor(channel, auth)
}

/// A coordinator with its network, inventory and responder.
pub struct Harness {
    pub names: Names,
    pub network: Network,
    pub nodes: Vec<TestNode>,
    pub url: String,
    pub responder: Responder,
}

impl Harness {
    pub async fn new(url: &str, nodes: Vec<TestNode>) -> Self {
        let names = crate::fresh_names();
        let network = crate::network(url, names.clone()).await;
        write_inventory(&network, &nodes).await;
        let responder = Responder::start(&network, &nodes).await;
        Self {
            names,
            network,
            nodes,
            url: url.to_owned(),
            responder,
        }
    }

    pub fn config(&self) -> Config {
        config(&self.names, &self.url, &self.nodes)
    }

    /// A coordinator that leads and has taken over (fenced every agent).
    pub async fn coordinator(&self) -> Coordinator {
        let coordinator = Coordinator::start(self.config()).await.unwrap();
        wait_driving(&coordinator).await;
        coordinator
    }
}

pub async fn wait_driving(coordinator: &Coordinator) -> u64 {
    let started = std::time::Instant::now();
    loop {
        if let Some(epoch) = coordinator.driving().await {
            eprintln!("driving at epoch {epoch} after {:?}", started.elapsed());
            return epoch;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no tenure within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls GetRun until `done` holds (deadline 30 s); returns the summary.
pub async fn wait_for_run(
    client: &mut Client,
    run_id: &str,
    what: &str,
    done: impl Fn(&pb::RunSummary) -> bool,
) -> pb::RunSummary {
    let started = std::time::Instant::now();
    loop {
        if let Ok(response) = client
            .get_run(pb::GetRunRequest {
                run_id: run_id.to_owned(),
            })
            .await
        {
            let run = response.into_inner().run.unwrap();
            if done(&run) {
                eprintln!("{what} after {:?}", started.elapsed());
                return run;
            }
            if started.elapsed() > Duration::from_secs(30) {
                panic!("{what}: not reached in 30 s; last {run:#?}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn finished(run: &pb::RunSummary) -> bool {
    matches!(
        run.status(),
        pb::RunStatus::Succeeded
            | pb::RunStatus::Failed
            | pb::RunStatus::Cancelled
            | pb::RunStatus::Compensated
    )
}
