//! Node registry and failure detection from heartbeats.
//!
//! [`Detector`] is the pure verdict logic; [`Registry`] feeds it heartbeat arrivals (on the
//! monotonic clock), its own tick lateness, the NATS connection state, dropped-message events
//! and a quorum probe. Verdicts are advisory: step outcomes come only from acks and timeouts.
//!
//! The quorum probe writes one KV key every heartbeat interval. A JetStream write commits only
//! with a majority of the stream's peers, so a coordinator whose server sits in a partitioned
//! minority sees its probe fail and holds verdicts back: the nodes it stopped hearing may be
//! alive on the other side. (A read, even JetStream's account info, can still be answered by a
//! minority's stale meta leader until it steps down.)

mod detector;

pub use detector::{
    Detector, DetectorConfig, DetectorConfigError, Health, LogicalNodeView, NodeView, Trouble,
};

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_nats::connection::State;
use futures::StreamExt;
use prost::Message;
use proto_sidecar::Heartbeat;
use sidecar_bus::{Names, NodeId};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Config(#[from] DetectorConfigError),
    #[error("subscribing to heartbeats on {subject} failed: {source}")]
    Subscribe {
        subject: String,
        source: async_nats::SubscribeError,
    },
}

/// Where the registry proves that JetStream accepts its writes.
pub struct QuorumProbe {
    pub store: async_nats::jetstream::kv::Store,
    pub key: String,
}

/// Live registry of one network's nodes.
pub struct Registry {
    detector: Arc<Mutex<Detector>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Writes the probe key every `interval`, each write allowed `interval` to commit; a write that
/// fails or does not commit in time suspends verdicts.
async fn probe_quorum(
    probe: QuorumProbe,
    interval: std::time::Duration,
    detector: Arc<Mutex<Detector>>,
) {
    let mut written = 0u64;
    loop {
        let started = Instant::now();
        written += 1;
        let write = probe.store.put(&probe.key, written.to_string().into());
        match tokio::time::timeout(interval, write).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                lock(&detector).on_trouble(Trouble::NoQuorum, Instant::now());
                tracing::warn!(%error, key = %probe.key, "quorum probe write failed; verdicts suspended");
            }
            Err(_) => {
                lock(&detector).on_trouble(Trouble::NoQuorum, Instant::now());
                tracing::warn!(timeout = ?interval, key = %probe.key, "quorum probe write did not commit in time; verdicts suspended");
            }
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

fn lock(detector: &Mutex<Detector>) -> MutexGuard<'_, Detector> {
    // Whole-value updates only; a poisoned lock still holds a consistent detector.
    detector.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Subscribes to every heartbeat of the network. `client_events` are the events of the
    /// client's connection (from `ConnectOptions::event_callback`), used to notice dropped
    /// messages; without them only disconnects (polled) and late ticks suspend verdicts.
    pub async fn start(
        client: async_nats::Client,
        names: &Names,
        config: DetectorConfig,
        client_events: Option<mpsc::UnboundedReceiver<async_nats::Event>>,
        quorum_probe: Option<QuorumProbe>,
    ) -> Result<Self, RegistryError> {
        config.validate()?;
        let subject = names.heartbeats();
        let mut heartbeats =
            client
                .subscribe(subject.clone())
                .await
                .map_err(|source| RegistryError::Subscribe {
                    subject: subject.clone(),
                    source,
                })?;
        let detector = Arc::new(Mutex::new(Detector::new(config, Instant::now())));
        let mut tasks = Vec::new();

        let names = names.clone();
        let fed = detector.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(message) = heartbeats.next().await {
                let arrived = Instant::now();
                match decode(&names, &message) {
                    Some((node, heartbeat)) => lock(&fed).on_heartbeat(node, heartbeat, arrived),
                    None => {
                        tracing::warn!(subject = %message.subject, "ignoring an undecodable or misaddressed heartbeat");
                    }
                }
            }
        }));

        let ticked = detector.clone();
        let tick = config.heartbeat_interval / 4;
        tasks.push(tokio::spawn(async move {
            let mut scheduled = Instant::now() + tick;
            loop {
                tokio::time::sleep_until(scheduled).await;
                let now = Instant::now();
                let mut detector = lock(&ticked);
                if detector.on_tick(scheduled, now).is_some() {
                    tracing::warn!(late = ?now - scheduled, "registry tick ran late; verdicts suspended");
                }
                match client.connection_state() {
                    State::Connected => detector.on_connected(now),
                    State::Disconnected | State::Pending => detector.on_disconnected(),
                }
                scheduled = now + tick;
            }
        }));

        if let Some(probe) = quorum_probe {
            tasks.push(tokio::spawn(probe_quorum(
                probe,
                config.heartbeat_interval,
                detector.clone(),
            )));
        }

        if let Some(mut events) = client_events {
            let troubled = detector.clone();
            tasks.push(tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    let now = Instant::now();
                    match event {
                        async_nats::Event::SlowConsumer(_) => {
                            lock(&troubled).on_trouble(Trouble::DroppedMessages, now);
                        }
                        async_nats::Event::Disconnected => lock(&troubled).on_disconnected(),
                        async_nats::Event::Connected => lock(&troubled).on_connected(now),
                        _ => {}
                    }
                }
            }));
        }
        Ok(Self { detector, tasks })
    }

    /// Expects heartbeats from `node` (known from its stored state) even if it never sends one.
    pub fn expect(&self, node: NodeId) {
        lock(&self.detector).expect(node, Instant::now());
    }

    pub fn health(&self, node: &NodeId) -> Option<Health> {
        lock(&self.detector).health(node, Instant::now())
    }

    pub fn suspended(&self) -> bool {
        lock(&self.detector).suspended(Instant::now())
    }

    /// Every node grouped under its logical node.
    pub fn view(&self) -> Vec<LogicalNodeView> {
        lock(&self.detector).view(Instant::now())
    }
}

/// Detector verdicts in the order of the `canton_coordinator_node_health` series.
const HEALTHS: [(Health, &str); 4] = [
    (Health::Unknown, "unknown"),
    (Health::Alive, "alive"),
    (Health::Suspect, "suspect"),
    (Health::Down, "down"),
];

/// Lower-case label of a prost enum name (`NODE_CONDITION_HEALTHY` → `healthy`).
fn enum_label(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

impl Registry {
    /// Registers the registry's view as observable instruments, read at each collection: the
    /// verdict per node, heartbeat age, the condition and role each agent reports, and the
    /// detector's own health.
    pub fn observe(&self, meter: &sidecar_telemetry::Meter) {
        use sidecar_telemetry::KeyValue;
        let detector = self.detector.clone();
        meter
            .u64_observable_gauge("canton_coordinator_node_health")
            .with_description(
                "1 for the detector's current verdict on a node (unknown, alive, suspect, down), 0 for the others",
            )
            .with_callback(move |observer| {
                for logical in lock(&detector).view(Instant::now()) {
                    for replica in logical.replicas {
                        for (health, label) in HEALTHS {
                            observer.observe(
                                u64::from(replica.health == health),
                                &[
                                    KeyValue::new("node", replica.node.to_string()),
                                    KeyValue::new("health", label),
                                ],
                            );
                        }
                    }
                }
            })
            .build();
        let detector = self.detector.clone();
        meter
            .f64_observable_gauge("canton_coordinator_heartbeat_age")
            .with_unit("s")
            .with_description("Time since the latest heartbeat of a node arrived")
            .with_callback(move |observer| {
                for logical in lock(&detector).view(Instant::now()) {
                    for replica in logical.replicas {
                        if let Some(age) = replica.heartbeat_age {
                            observer.observe(
                                age.as_secs_f64(),
                                &[KeyValue::new("node", replica.node.to_string())],
                            );
                        }
                    }
                }
            })
            .build();
        let detector = self.detector.clone();
        meter
            .u64_observable_gauge("canton_coordinator_node_reported")
            .with_description(
                "1 per node with the condition and HA role its latest heartbeat reports",
            )
            .with_callback(move |observer| {
                for logical in lock(&detector).view(Instant::now()) {
                    for replica in logical.replicas {
                        let Some(last) = &replica.last else {
                            continue;
                        };
                        observer.observe(
                            1,
                            &[
                                KeyValue::new("node", replica.node.to_string()),
                                KeyValue::new("organisation", last.organisation.clone()),
                                KeyValue::new(
                                    "kind",
                                    enum_label(last.kind().as_str_name(), "NODE_KIND_"),
                                ),
                                KeyValue::new(
                                    "condition",
                                    enum_label(last.condition().as_str_name(), "NODE_CONDITION_"),
                                ),
                                KeyValue::new(
                                    "role",
                                    enum_label(last.role().as_str_name(), "ROLE_"),
                                ),
                            ],
                        );
                    }
                }
            })
            .build();
        let detector = self.detector.clone();
        meter
            .u64_observable_gauge("canton_coordinator_detector_healthy")
            .with_description(
                "1 while the failure detector trusts its own view (connected, ticking on time, no dropped heartbeats)",
            )
            .with_callback(move |observer| {
                observer.observe(u64::from(!lock(&detector).suspended(Instant::now())), &[]);
            })
            .build();
    }
}

/// Routes commands to the active replica of an HA node, as the registry sees it now.
#[derive(Clone)]
pub struct ReplicaRouter {
    detector: Arc<Mutex<Detector>>,
}

impl crate::driver::ports::Router for ReplicaRouter {
    fn replica_for(&self, node: &str) -> Option<String> {
        lock(&self.detector)
            .group(Instant::now(), node)
            .and_then(|group| group.command_replica())
            .map(|replica| replica.to_string())
    }
}

impl Registry {
    /// The router the driver asks where commands to HA nodes go.
    pub fn router(&self) -> ReplicaRouter {
        ReplicaRouter {
            detector: self.detector.clone(),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The sender and heartbeat of a message, if it decodes and names the node of its subject.
fn decode(names: &Names, message: &async_nats::Message) -> Option<(NodeId, Heartbeat)> {
    let heartbeat = Heartbeat::decode(message.payload.clone()).ok()?;
    let id = if heartbeat.replica.is_empty() {
        heartbeat.node.clone()
    } else {
        format!("{}.{}", heartbeat.node, heartbeat.replica)
    };
    let node = NodeId::new(id).ok()?;
    (message.subject.as_str() == names.heartbeat(&node)).then_some((node, heartbeat))
}
