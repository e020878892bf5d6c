//! Shared pieces: a network on a private server, a heartbeat collector, a probe whose answers
//! the test controls (a fake of our own `Probe` trait, never of NATS), and condition waits.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use canton_agent::config::{AgentConfig, NatsConfig, NodeKind, ProbeSchedules, Schedule};
use canton_agent::{Facts, Probe, ProbeOutcome, ReasonKind};
use futures::StreamExt;
use futures::future::BoxFuture;
use proto_sidecar as pb;
use sidecar_bus::{BusSettings, Names, Network, NetworkId, NodeId};

/// A network with its streams and buckets on `url` (as the coordinator's setup makes them).
pub async fn network(url: &str) -> Network {
    let client = sidecar_bus::connect(url, "agent-test").await.unwrap();
    let names = Names::new(NetworkId::new(testkit::unique_id("a")).unwrap());
    Network::ensure(client, names, &BusSettings::default())
        .await
        .unwrap()
}

pub fn schedule(period_ms: u64) -> Schedule {
    Schedule {
        period: Duration::from_millis(period_ms),
        timeout: Duration::from_millis(period_ms),
    }
}

pub fn config(url: &str, net: &Network, node: &str) -> AgentConfig {
    let every = schedule(300);
    AgentConfig {
        network: net.names.network().clone(),
        node: NodeId::new(node).unwrap(),
        kind: NodeKind::Participant,
        nats: NatsConfig {
            url: url.to_owned(),
            auth: Default::default(),
            ping_interval: Duration::from_millis(500),
            connect_timeout: Duration::from_secs(2),
            max_reconnect_delay: Duration::from_millis(500),
        },
        heartbeat_interval: Duration::from_millis(200),
        state_refresh: Duration::from_secs(30),
        shutdown_grace: Duration::from_secs(3),
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
    }
}

/// What the scripted probe answers next.
#[derive(Clone, Debug)]
pub enum Script {
    Healthy,
    Error,
    Hang,
    Panic,
}

/// A probe whose behaviour the test switches at will.
pub struct ScriptedProbe {
    pub script: Arc<Mutex<Script>>,
    pub schedule: Schedule,
}

impl Probe for ScriptedProbe {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn schedule(&self) -> Schedule {
        self.schedule
    }

    fn check(&self) -> BoxFuture<'static, ProbeOutcome> {
        let script = self.script.lock().unwrap().clone();
        Box::pin(async move {
            match script {
                Script::Healthy => ProbeOutcome::Healthy(Facts {
                    version: Some("3.4.9".to_owned()),
                    ledger_end: Some(7),
                    ..Facts::default()
                }),
                Script::Error => ProbeOutcome::failed(ReasonKind::Error, "scripted error"),
                Script::Hang => std::future::pending().await,
                Script::Panic => panic!("scripted probe panic"),
            }
        })
    }
}

/// Every heartbeat received, with its arrival time.
#[derive(Clone, Default)]
pub struct Heartbeats(Arc<Mutex<Vec<(Instant, pb::Heartbeat)>>>);

impl Heartbeats {
    /// Subscribes on `net` to the heartbeats of `node` and collects them in the background.
    pub async fn collect(net: &Network, node: &str) -> Self {
        let subject = net.names.heartbeat(&NodeId::new(node).unwrap());
        let mut subscription = net.client.subscribe(subject).await.unwrap();
        net.client.flush().await.unwrap();
        let collected = Self::default();
        let sink = collected.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let heartbeat = canton_agent::wire::decode_heartbeat(&message.payload).unwrap();
                sink.0.lock().unwrap().push((Instant::now(), heartbeat));
            }
        });
        collected
    }

    pub fn all(&self) -> Vec<(Instant, pb::Heartbeat)> {
        self.0.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<pb::Heartbeat> {
        self.0.lock().unwrap().last().map(|(_, h)| h.clone())
    }

    pub fn since(&self, start: Instant) -> Vec<(Instant, pb::Heartbeat)> {
        self.all()
            .into_iter()
            .filter(|(at, _)| *at >= start)
            .collect()
    }
}

/// Polls `condition` every 20 ms until it holds; panics after `deadline`. Returns the time taken.
pub async fn wait_for<F, Fut>(what: &str, deadline: Duration, mut condition: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if condition().await {
            let took = start.elapsed();
            eprintln!("{what}: reached after {took:?}");
            return took;
        }
        assert!(
            start.elapsed() < deadline,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The node's state in the nodes bucket, if any.
pub async fn node_state(net: &Network, node: &str) -> Option<pb::NodeState> {
    let entry = net
        .kv(sidecar_bus::Bucket::Nodes)
        .get(node)
        .await
        .ok()
        .flatten()?;
    Some(canton_agent::wire::decode_node_state(&entry.value).unwrap())
}

/// Largest gap between consecutive arrivals.
pub fn largest_gap(heartbeats: &[(Instant, pb::Heartbeat)]) -> Duration {
    heartbeats
        .windows(2)
        .map(|pair| pair[1].0.duration_since(pair[0].0))
        .max()
        .unwrap_or_default()
}
