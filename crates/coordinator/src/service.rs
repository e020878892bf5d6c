//! Wiring of one coordinator process: election, registry, driver loop, ack consumer, API.
//!
//! ```text
//! Election ──roles──► leader loop: fence → take_over → tick every `tick` ──┐
//! ack consumer (durable, only while leader) ──batches──► Driver (one mutex) ◄┴── API calls
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{AckKind, consumer};
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use proto_sidecar::NodeState;
use sidecar_bus::{Bucket, BusSettings, Names, Network};
use sidecar_trust::{KeyPurpose, KeyRing, SigningIdentity, TrustedKey};
use tokio_util::sync::CancellationToken;

use crate::acks::AckOnBus;
use crate::catalogue::Inventory;
use crate::config::Config;
use crate::driver::ports::{Clock, SystemClock};
use crate::driver::{AgentAnswer, Driver, DriverConfig, DriverErrorKind, Input, wire};
use crate::leadership::{Election, ElectionConfig, Role};
use crate::metrics::CoordinatorMetrics;
use crate::nats::{ElectionLease, NatsPublisher, NatsStore, publish_durable};
use crate::registry::{DetectorConfig, QuorumProbe, Registry};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("nats: {0}")]
    Bus(String),
    #[error("signed network configuration: {0}")]
    NetworkConfig(String),
    #[error("signing key {key_id}: {detail}")]
    SigningKey { key_id: String, detail: String },
    #[error("leadership: {0}")]
    Election(String),
    #[error("registry: {0}")]
    Registry(String),
    #[error("api: {0}")]
    Api(String),
    /// A failpoint stopped the driver: the process must die without cleanup.
    #[error("stopped by failpoint: {0}")]
    Crashed(String),
}

/// What the API and the loops share.
pub struct Shared {
    pub network: Network,
    pub organisation: String,
    pub driver: tokio::sync::Mutex<Driver>,
    pub election: Arc<Election>,
    pub registry: Registry,
    /// Agent and operator keys from the verified network configuration.
    pub keys: KeyRing,
    /// Nodes the network configuration lists for our organisation.
    pub configured_nodes: Vec<String>,
    /// Every organisation of the network configuration with its nodes (the parties of a
    /// cross-organisation proposal).
    pub organisations: BTreeMap<String, Vec<String>>,
    /// Our coordinator key, which signs proposal documents and answers.
    pub proposal_signer: SigningIdentity,
    /// Fence acks by epoch.
    pub fences: Mutex<BTreeMap<u64, BTreeSet<String>>>,
    pub config: Config,
    /// Cancelled when a failpoint fired; everything stops as if the process died.
    pub crashed: CancellationToken,
}

/// The nodes bucket could not be read now; asking again later may succeed.
#[derive(Debug, thiserror::Error)]
#[error(
    "node states in bucket {bucket} cannot be read now ({detail}); the NATS cluster may be electing a leader or lack a quorum: try again"
)]
pub struct NodeStatesUnreadable {
    pub bucket: String,
    pub detail: String,
}

impl Shared {
    pub fn names(&self) -> &Names {
        &self.network.names
    }

    /// Node states of every node in the nodes bucket. A read that fails (the bucket's stream
    /// electing a leader, no quorum) is an error, never an empty network: an empty answer
    /// would plan a run over no node, or pass a check that other organisations' members are
    /// absent.
    pub async fn node_states(&self) -> Result<Vec<NodeState>, NodeStatesUnreadable> {
        let store = self.network.kv(Bucket::Nodes).store().clone();
        let unreadable = |error: &dyn std::fmt::Display| NodeStatesUnreadable {
            bucket: self.names().bucket(Bucket::Nodes),
            detail: error.to_string(),
        };
        let mut keys = store.keys().await.map_err(|e| unreadable(&e))?;
        let mut states = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| unreadable(&e))?;
            let value = store.get(&key).await.map_err(|e| unreadable(&e))?;
            // A key deleted since it was listed, or a value a newer agent wrote, names no node.
            if let Some(state) = value.and_then(|value| NodeState::decode(value).ok()) {
                states.push(state);
            }
        }
        Ok(states)
    }

    pub async fn inventory(&self) -> Result<Inventory, NodeStatesUnreadable> {
        let states = self.node_states().await?;
        Ok(Inventory::from_states(
            &self.organisation,
            &self.configured_nodes,
            &states,
        ))
    }

    /// Appends a state-changing call to the audit stream.
    pub async fn audit(&self, kind: &str, record: serde_json::Value) {
        let payload = Bytes::from(record.to_string());
        let id = uuid::Uuid::now_v7().to_string();
        if let Err(error) = publish_durable(
            &self.network.jetstream,
            self.names().audit(kind),
            &id,
            payload,
            Duration::from_secs(5),
        )
        .await
        {
            tracing::error!(kind, %error, "audit record not written");
        }
    }

    pub(crate) fn crash(&self, detail: &str) {
        tracing::error!(detail, "failpoint fired: stopping everything");
        self.crashed.cancel();
    }
}

/// A running coordinator.
pub struct Coordinator {
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub api_addr: std::net::SocketAddr,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn verify_network_config(
    config: &Config,
) -> Result<sidecar_trust::VerifiedNetworkConfig, ServiceError> {
    let pinned = sidecar_trust::proto::PublicKey {
        key_id: config.config_key_id.clone(),
        purpose: sidecar_trust::proto::KeyPurpose::Config.into(),
        // The pinned root belongs to no organisation; the name only satisfies the key form.
        organisation: "network".to_owned(),
        ed25519: config.config_public_key.to_vec(),
        ..Default::default()
    };
    let root = TrustedKey::from_proto(&pinned).map_err(|e| {
        ServiceError::NetworkConfig(format!("network_config.config_public_key: {e}"))
    })?;
    let roots: KeyRing = std::iter::once(root).collect();
    sidecar_trust::verify_network_config(
        &config.network_config,
        &roots,
        config.network.as_str(),
        None,
        SystemClock.now_ms(),
    )
    .map_err(|e| ServiceError::NetworkConfig(e.to_string()))
}

impl Coordinator {
    /// Connects, sets up the network's streams and buckets and starts every task; records
    /// nothing on metrics.
    pub async fn start(config: Config) -> Result<Self, ServiceError> {
        Self::start_observed(config, sidecar_telemetry::noop_meter()).await
    }

    /// [`Coordinator::start`] with every instrument built from `meter`.
    pub async fn start_observed(
        config: Config,
        meter: sidecar_telemetry::Meter,
    ) -> Result<Self, ServiceError> {
        let verified = verify_network_config(&config)?;
        let signer = SigningIdentity::from_seed(
            config.signing_key_id.clone(),
            KeyPurpose::Coordinator,
            config.organisation.clone(),
            config.signing_seed,
        );
        let published =
            verified
                .keys
                .get(&config.signing_key_id)
                .ok_or_else(|| ServiceError::SigningKey {
                    key_id: config.signing_key_id.clone(),
                    detail: "is not in the signed network configuration; add it and re-sign".into(),
                })?;
        if published.public != signer.trusted_key(None, None).public
            || published.purpose != KeyPurpose::Coordinator
            || published.organisation != config.organisation
        {
            return Err(ServiceError::SigningKey {
                key_id: config.signing_key_id.clone(),
                detail: format!(
                    "the seed file does not match the coordinator key of {} in the network configuration",
                    config.organisation
                ),
            });
        }
        let organisations = verified
            .organisations
            .iter()
            .map(|(id, organisation)| (id.clone(), organisation.nodes.clone()))
            .collect();
        let configured_nodes = verified
            .organisations
            .get(&config.organisation)
            .map(|org| org.nodes.clone())
            .unwrap_or_default();

        let (client, client_events) = sidecar_bus::connect_with_events(
            &config.nats_url,
            "canton-coordinator",
            &config.nats_auth,
            &Names::new(config.network.clone()).coordinator_inbox(&config.organisation),
        )
        .await
        .map_err(|e| ServiceError::Bus(e.to_string()))?;
        let network = Network::ensure(
            client.clone(),
            Names::new(config.network.clone()),
            &BusSettings {
                replicas: config.nats_replicas,
                ..BusSettings::default()
            },
        )
        .await
        .map_err(|e| ServiceError::Bus(e.to_string()))?;
        let election = Arc::new(
            Election::start(
                &network,
                ElectionConfig {
                    organisation: config.organisation.clone(),
                    holder: config.name.clone(),
                    timing: config.lease,
                },
            )
            .map_err(|e| ServiceError::Election(e.to_string()))?,
        );
        let quorum_probe = QuorumProbe {
            store: network.kv(Bucket::Leader).store().clone(),
            key: network.names.quorum_probe_key(&config.organisation),
        };
        let registry = Registry::start(
            client.clone(),
            &network.names,
            DetectorConfig::default(),
            Some(client_events),
            Some(quorum_probe),
        )
        .await
        .map_err(|e| ServiceError::Registry(e.to_string()))?;
        registry.observe(&meter);
        observe_connection(&meter, &client, &election);
        // Nodes the configuration lists are expected even if they never send a heartbeat.
        for node in &configured_nodes {
            if let Ok(node) = sidecar_bus::NodeId::new(node.clone()) {
                registry.expect(node);
            }
        }
        let mut driver_config = DriverConfig::new(config.network.as_str(), &config.organisation);
        driver_config.skew_ms = i64::try_from(config.clock_skew.as_millis()).unwrap_or(i64::MAX);
        let driver = Driver::new(
            driver_config,
            signer.clone(),
            Arc::new(NatsStore::new(&network)),
            Arc::new(NatsPublisher::new(&network, Duration::from_secs(5))),
            Arc::new(SystemClock),
            Arc::new(ElectionLease(election.clone())),
        )
        .with_metrics(CoordinatorMetrics::new(&meter, &config.organisation))
        .with_router(Arc::new(registry.router()));
        let shared = Arc::new(Shared {
            network,
            organisation: config.organisation.clone(),
            driver: tokio::sync::Mutex::new(driver),
            election,
            registry,
            keys: verified.keys,
            configured_nodes,
            organisations,
            proposal_signer: signer,
            fences: Mutex::new(BTreeMap::new()),
            config: config.clone(),
            crashed: CancellationToken::new(),
        });
        let listener = tokio::net::TcpListener::bind(config.api_addr())
            .await
            .map_err(|e| ServiceError::Api(format!("binding {}: {e}", config.api_listen)))?;
        let api_addr = listener
            .local_addr()
            .map_err(|e| ServiceError::Api(e.to_string()))?;
        let consumer = ack_consumer(&shared).await?;
        let tasks = vec![
            tokio::spawn(leader_loop(shared.clone())),
            tokio::spawn(ack_loop(shared.clone(), consumer)),
            tokio::spawn(proposal_loop(shared.clone())),
            tokio::spawn(crate::api::serve(shared.clone(), listener)),
        ];
        tracing::info!(%api_addr, organisation = %config.organisation, "coordinator started");
        Ok(Self {
            shared,
            tasks,
            api_addr,
        })
    }

    /// The epoch this coordinator drives runs under (fenced and taken over), if any.
    pub async fn driving(&self) -> Option<u64> {
        self.shared.driver.lock().await.tenure()
    }

    /// Waits until a failpoint stops the coordinator.
    pub async fn crashed(&self) {
        self.shared.crashed.cancelled().await;
    }
}

impl Config {
    fn api_addr(&self) -> std::net::SocketAddr {
        self.api_listen
    }
}

/// NATS reconnects (connections after the first) and whether this coordinator leads.
fn observe_connection(
    meter: &sidecar_telemetry::Meter,
    client: &async_nats::Client,
    election: &Arc<Election>,
) {
    let statistics = client.statistics();
    meter
        .u64_observable_counter("canton_coordinator_nats_reconnects")
        .with_description("NATS connections established after the first one")
        .with_callback(move |observer| {
            let connects = statistics
                .connects
                .load(std::sync::atomic::Ordering::Relaxed);
            observer.observe(connects.saturating_sub(1), &[]);
        })
        .build();
    let election = election.clone();
    meter
        .u64_observable_gauge("canton_coordinator_leader")
        .with_description("1 while this coordinator holds its organisation's lease")
        .with_callback(move |observer| {
            observer.observe(u64::from(election.epoch_now().is_some()), &[]);
        })
        .build();
}

async fn ack_consumer(shared: &Shared) -> Result<consumer::PullConsumer, ServiceError> {
    let names = shared.names();
    let stream = shared
        .network
        .jetstream
        .get_stream(names.ack_stream())
        .await
        .map_err(|e| ServiceError::Bus(format!("ack stream: {e}")))?;
    let durable = names.coordinator_consumer(&shared.organisation);
    stream
        .get_or_create_consumer(
            &durable,
            consumer::pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: names.acks(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(10),
                deliver_policy: consumer::DeliverPolicy::All,
                max_ack_pending: 10_000,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ServiceError::Bus(format!("ack consumer {durable}: {e}")))
}

/// Leadership → fence → take over → tick, until the tenure ends; then again.
async fn leader_loop(shared: Arc<Shared>) {
    let mut roles = shared.election.roles();
    loop {
        let epoch = loop {
            if let Role::Leader { epoch } = *roles.borrow_and_update() {
                break epoch;
            }
            tokio::select! {
                changed = roles.changed() => if changed.is_err() { return },
                () = shared.crashed.cancelled() => return,
            }
        };
        tracing::info!(epoch, "leader: fencing agents");
        fence(&shared, epoch).await;
        if !take_over(&shared, &mut roles, epoch).await {
            return;
        }
        let mut tick = tokio::time::interval(shared.config.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = roles.changed() => if changed.is_err() { return },
                () = shared.crashed.cancelled() => return,
            }
            if *roles.borrow() != (Role::Leader { epoch })
                || shared.election.epoch_now() != Some(epoch)
            {
                tracing::warn!(epoch, "tenure ended; driver stopped");
                shared.driver.lock().await.stop();
                break;
            }
            let (ticked, finished) = {
                let mut driver = shared.driver.lock().await;
                let ticked = driver.tick().await;
                (ticked, driver.take_finished())
            };
            if let Err(error) = ticked
                && handle_driver_error(&shared, &error)
            {
                return;
            }
            if finished.iter().any(|run| {
                run.runbook == "backup" && run.status == sidecar_core::RunStatus::Succeeded
            }) {
                apply_retention(&shared).await;
            }
        }
    }
}

/// Takes over at `epoch`, again every tick while the run store cannot be read or written (a
/// NATS cluster electing a leader): a tenure whose take-over failed would hold none of the
/// unfinished runs, and they would stall until the next election. Returns false when the
/// process must stop.
async fn take_over(
    shared: &Shared,
    roles: &mut tokio::sync::watch::Receiver<Role>,
    epoch: u64,
) -> bool {
    let mut attempt = 1u32;
    loop {
        let taken = shared.driver.lock().await.take_over(epoch).await;
        let error = match taken {
            Ok(runs) => {
                tracing::info!(epoch, runs = runs.len(), attempt, "leader: runs claimed");
                shared
                    .audit(
                        "takeover",
                        serde_json::json!({"epoch": epoch, "organisation": shared.organisation, "runs": runs}),
                    )
                    .await;
                // A backup that finished under the previous tenure may not have had its pass.
                apply_retention(shared).await;
                return true;
            }
            Err(error) => error,
        };
        let transient = matches!(
            error.kind,
            DriverErrorKind::Store | DriverErrorKind::Publish | DriverErrorKind::Conflict
        );
        if !transient {
            return !handle_driver_error(shared, &error);
        }
        tracing::warn!(epoch, attempt, %error, "leader: take-over failed; trying again");
        shared.driver.lock().await.stop();
        tokio::select! {
            () = tokio::time::sleep(shared.config.tick) => {}
            changed = roles.changed() => if changed.is_err() { return false },
            () = shared.crashed.cancelled() => return false,
        }
        if *roles.borrow() != (Role::Leader { epoch }) {
            // The tick loop sees the tenure has ended and waits for the next one.
            return true;
        }
        attempt += 1;
    }
}

/// While leading, advances the joint runs every organisation agreed to (our phase runs once,
/// then is reported); a failed pass is logged and made again on the next tick.
async fn proposal_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = shared.crashed.cancelled() => return,
        }
        if shared.driver.lock().await.tenure().is_none() {
            continue;
        }
        if let Err(error) = crate::proposals::follow(&shared).await {
            tracing::warn!(%error, "joint runs: pass failed; retried on the next tick");
        }
    }
}

/// Opt-in retention after a backup succeeded; a failed pass is logged and made again after
/// the next backup (or takeover).
async fn apply_retention(shared: &Shared) {
    if !shared.config.retention.enabled() {
        return;
    }
    match crate::retention::apply(shared).await {
        Ok(sets) if sets.is_empty() => tracing::info!("retention: no backup set to delete"),
        Ok(sets) => tracing::info!(?sets, "retention: deleting backup sets"),
        Err(error) => tracing::warn!(%error, "retention pass failed"),
    }
}

/// Logs a driver error; stops the tenure when deposed. Returns true when the process must
/// stop (a failpoint fired).
fn handle_driver_error(shared: &Shared, error: &crate::driver::DriverError) -> bool {
    match error.kind {
        DriverErrorKind::Crashed => {
            shared.crash(&error.detail);
            true
        }
        DriverErrorKind::Deposed | DriverErrorKind::NotLeader => {
            tracing::warn!(%error, "not driving: {}", error.kind);
            if let Ok(mut driver) = shared.driver.try_lock() {
                driver.stop();
            }
            false
        }
        _ => {
            tracing::warn!(%error, "driver step failed; retried on the next tick");
            false
        }
    }
}

/// Sends the fence of `epoch` to every node of the organisation and waits for their acks
/// until the fence timeout; non-answerers are reported (their command streams hold the
/// fence ahead of anything this tenure sends them).
async fn fence(shared: &Shared, epoch: u64) {
    let mut targets: BTreeSet<String> = shared.configured_nodes.iter().cloned().collect();
    // Without the states the configured nodes are still fenced; a node only its state names
    // is fenced by the next tenure's fence.
    let states = shared.node_states().await.unwrap_or_else(|error| {
        tracing::warn!(%error, "fencing the configured nodes only");
        Vec::new()
    });
    for state in states {
        if crate::catalogue::is_ours(&shared.organisation, &shared.configured_nodes, &state) {
            targets.insert(crate::catalogue::state_node_id(&state));
        }
    }
    let targets: Vec<String> = targets.into_iter().collect();
    let sent = shared
        .driver
        .lock()
        .await
        .send_fences(epoch, &targets)
        .await;
    if let Err(error) = sent {
        tracing::warn!(%error, "fence not sent to every node");
    }
    let deadline = tokio::time::Instant::now() + shared.config.fence_timeout;
    let missing = loop {
        let missing: Vec<String> = {
            let fences = shared.fences.lock().unwrap_or_else(PoisonError::into_inner);
            let acked = fences.get(&epoch);
            targets
                .iter()
                .filter(|node| !acked.is_some_and(|set| set.contains(node.as_str())))
                .cloned()
                .collect()
        };
        if missing.is_empty() || tokio::time::Instant::now() >= deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    if missing.is_empty() {
        tracing::info!(
            epoch,
            nodes = targets.len(),
            "every agent confirmed the fence"
        );
    } else {
        tracing::warn!(epoch, missing = ?missing, "agents did not confirm the fence in time");
    }
    shared
        .audit(
            "fence",
            serde_json::json!({"epoch": epoch, "nodes": targets, "unconfirmed": missing}),
        )
        .await;
}

/// Reads acks from the organisation's durable consumer while we lead, verifies them, folds
/// each run's batch in one CAS, and acks the messages only after that write.
async fn ack_loop(shared: Arc<Shared>, consumer: consumer::PullConsumer) {
    let names = shared.names().clone();
    loop {
        if shared.crashed.is_cancelled() {
            return;
        }
        if shared.election.epoch_now().is_none() {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                () = shared.crashed.cancelled() => return,
            }
        }
        let batch = consumer
            .fetch()
            .max_messages(64)
            .expires(Duration::from_millis(500))
            .messages()
            .await;
        let mut messages = match batch {
            Ok(messages) => messages,
            Err(error) => {
                tracing::warn!(%error, "fetching acks failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut by_run: BTreeMap<
            String,
            Vec<(async_nats::jetstream::Message, proto_sidecar::Ack)>,
        > = BTreeMap::new();
        let mut junk = Vec::new();
        while let Some(Ok(message)) = messages.next().await {
            match crate::acks::read_ack(
                &names,
                message.subject.as_str(),
                &message.payload,
                &shared.keys,
                SystemClock.now_ms(),
            ) {
                Ok(AckOnBus { run, ack }) => by_run.entry(run).or_default().push((message, ack)),
                Err(refused) => {
                    tracing::warn!(subject = %message.subject, %refused, "ack dropped");
                    junk.push(message);
                }
            }
        }
        for message in junk {
            let _ = message.ack_with(AckKind::Term).await;
        }
        for (run, acks) in by_run {
            if run.starts_with("fence-") {
                record_fence_acks(&shared, &acks);
                for (message, _) in acks {
                    let _ = message.ack().await;
                }
                continue;
            }
            let inputs = acks
                .iter()
                .map(|(_, ack)| Input::Ack(Box::new(AgentAnswer { ack: ack.clone() })))
                .collect();
            let applied = {
                let mut driver = shared.driver.lock().await;
                if driver.tenure().is_none() {
                    Err(None)
                } else {
                    driver.apply(&run, inputs).await.map_err(Some)
                }
            };
            match applied {
                Ok(_) => {
                    for (message, _) in acks {
                        let _ = message.ack().await;
                    }
                }
                Err(Some(error)) if error.kind == DriverErrorKind::UnknownRun => {
                    // Another organisation's run, or one that no longer exists.
                    for (message, _) in acks {
                        let _ = message.ack().await;
                    }
                }
                Err(error) => {
                    if let Some(error) = &error
                        && handle_driver_error(&shared, error)
                    {
                        return;
                    }
                    // Not recorded: delivered again later (after we lead again, or to the
                    // next leader).
                    for (message, _) in acks {
                        let _ = message
                            .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                            .await;
                    }
                }
            }
        }
    }
}

fn record_fence_acks(
    shared: &Shared,
    acks: &[(async_nats::jetstream::Message, proto_sidecar::Ack)],
) {
    let mut fences = shared.fences.lock().unwrap_or_else(PoisonError::into_inner);
    for (_, ack) in acks {
        if ack.status() != proto_sidecar::AckStatus::Done {
            continue;
        }
        let Some(epoch) = ack
            .run
            .rsplit_once("-e")
            .and_then(|(org_part, epoch)| {
                (org_part == format!("fence-{}", shared.organisation)).then_some(epoch)
            })
            .and_then(|epoch| epoch.parse::<u64>().ok())
        else {
            continue;
        };
        if ack.run == wire::fence_run(&shared.organisation, epoch) {
            fences.entry(epoch).or_default().insert(ack.node.clone());
        }
    }
}
