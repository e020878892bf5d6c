//! The command path (DESIGN §3):
//!
//! ```text
//! durable pull consumer ─► check (trust) ─► journal Started ─► action ─► journal Done
//!                                                                   └─► signed ack (PubAck) ─► double-ack
//! ```
//! Start-up, before the first command is accepted: open the journal (journal-loss detection
//! against the consumer's delivery history), verify the network configuration against the
//! pinned key, read the confirmed epoch from the leader bucket, kill leftover child process
//! groups of interrupted commands. See [`dispatch`] for what happens to each delivery.

mod acks;
mod children;
mod dispatch;
pub mod journal;
pub mod state;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{self, PullConsumer};
use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use prost::Message as _;
use sidecar_bus::{Bucket, NetworkId, NodeId};
use sidecar_trust::{
    AgentPolicy, KeyPurpose, KeyRing, SigningIdentity, TrustedKey, VerifiedNetworkConfig,
};

pub use acks::{AckBody, AckTarget};
pub use children::{Reaped, kernel_boot_id, process_start, reap, reap_leftovers};
pub use journal::{FileJournal, Journal, JournalError, MemoryJournal, Record};
pub use state::{CommandLog, EntryState, JournalState};

use crate::actions::ActionRegistry;
use crate::config::{CommandsConfig, TrustConfig};
use crate::context::Context;

pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Trust material that cannot be used; names the file or key and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("`{key}` = {}: cannot read: {source}", path.display())]
    Unreadable {
        key: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("`trust.ack_key_seed` = {}: {len} bytes, expected an ed25519 seed: 32 raw bytes or 64 hex digits", path.display())]
    SeedLength {
        path: std::path::PathBuf,
        len: usize,
    },
    #[error("`trust.config_key`: not an ed25519 public key; copy the network's config key again")]
    ConfigKey,
    #[error("`trust.network_config` = {}: {source}", path.display())]
    NetworkConfig {
        path: std::path::PathBuf,
        source: sidecar_trust::ConfigError,
    },
    #[error(
        "`trust.ack_key_id` = {key_id:?}: {problem}; publish this agent's ack key (node {node}) in the network configuration"
    )]
    AckKey {
        key_id: String,
        node: String,
        problem: &'static str,
    },
}

/// The verified network configuration and this agent's keys.
#[derive(Clone, Debug)]
pub struct TrustMaterial {
    pub network: VerifiedNetworkConfig,
    pub ack_key: SigningIdentity,
    pub organisation: String,
    pub policy: AgentPolicy,
    pub max_clock_skew_ms: i64,
}

fn read(key: &'static str, path: &Path) -> Result<Vec<u8>, TrustError> {
    std::fs::read(path).map_err(|source| TrustError::Unreadable {
        key,
        path: path.to_owned(),
        source,
    })
}

impl TrustMaterial {
    /// Reads and verifies everything `[trust]` names. The network configuration must be
    /// signed by the pinned config key and list this agent's ack key for its node.
    pub fn load(
        config: &TrustConfig,
        network: &NetworkId,
        node: &NodeId,
        now_unix_ms: i64,
    ) -> Result<Self, TrustError> {
        let raw = read("trust.network_config", &config.network_config)?;
        let config_error = |source| TrustError::NetworkConfig {
            path: config.network_config.clone(),
            source,
        };
        // The pin is the public key; the envelope names its id, which only labels it.
        let envelope =
            sidecar_trust::decode_envelope_up_to(&raw, sidecar_trust::MAX_NETWORK_CONFIG_BYTES)
                .map_err(|rejection| config_error(rejection.into()))?;
        let pinned = TrustedKey::from_proto(&proto_sidecar::PublicKey {
            key_id: envelope.key_id.clone(),
            purpose: proto_sidecar::KeyPurpose::Config.into(),
            organisation: config.organisation.clone(),
            ed25519: config.config_key.to_vec(),
            ..Default::default()
        })
        .map_err(|_| TrustError::ConfigKey)?;
        let roots: KeyRing = [pinned].into_iter().collect();
        let verified =
            sidecar_trust::verify_network_config(&raw, &roots, network.as_str(), None, now_unix_ms)
                .map_err(config_error)?;

        let seed = read("trust.ack_key_seed", &config.ack_key_seed)?;
        let seed = sidecar_trust::parse_seed(&seed).ok_or_else(|| TrustError::SeedLength {
            path: config.ack_key_seed.clone(),
            len: seed.len(),
        })?;
        let ack_key = SigningIdentity::from_seed(
            config.ack_key_id.clone(),
            KeyPurpose::Agent,
            config.organisation.clone(),
            seed,
        )
        .with_node(node.as_str());
        let ack_error = |problem| TrustError::AckKey {
            key_id: config.ack_key_id.clone(),
            node: node.to_string(),
            problem,
        };
        let listed = verified
            .keys
            .get(&config.ack_key_id)
            .ok_or_else(|| ack_error("not in the network configuration"))?;
        if listed.purpose != KeyPurpose::Agent || listed.node.as_deref() != Some(node.as_str()) {
            return Err(ack_error("listed, but not as the agent key of this node"));
        }
        if listed.public != ack_key.trusted_key(None, None).public {
            return Err(ack_error(
                "listed with another public key than the seed file's",
            ));
        }
        Ok(Self {
            network: verified,
            ack_key,
            organisation: config.organisation.clone(),
            policy: AgentPolicy::own_organisation(&config.organisation),
            max_clock_skew_ms: i64::try_from(config.max_clock_skew.as_millis()).unwrap_or(i64::MAX),
        })
    }
}

/// What the command task needs besides the agent [`Context`].
pub struct CommandPath {
    pub trust: TrustMaterial,
    pub settings: CommandsConfig,
    pub registry: ActionRegistry,
}

/// Why the command path stopped before shutdown.
#[derive(Debug, thiserror::Error)]
pub enum CommandPathError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "network configuration serial {got} is below serial {held} recorded in the journal; refusing a rollback (install the newer configuration)"
    )]
    ConfigRollback { held: u64, got: u64 },
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Waits `pause` unless the agent stops first; false = stopping.
async fn pause(context: &Context, pause: Option<Duration>) -> bool {
    tokio::select! {
        () = context.shutdown.cancelled() => false,
        () = tokio::time::sleep(pause.unwrap_or(Duration::from_secs(5))) => true,
    }
}

/// Runs the command path until shutdown. Returns early only on an error that makes commands
/// unsafe to accept (the agent then stops and exits non-zero).
pub async fn run_commands(context: Context, path: CommandPath) -> Result<(), CommandPathError> {
    let boot_started = context.clock.now_unix_ms();
    let dir = path.settings.journal_dir.clone();
    // Opening replays and may compact (fsyncs): off the runtime like every journal write.
    let opened = tokio::task::spawn_blocking(move || {
        let opened = FileJournal::open(&dir)?;
        let was_empty = opened.created;
        let log = CommandLog::new(Box::new(opened.journal), &opened.records, boot_started)?;
        Ok::<_, JournalError>((log, was_empty))
    })
    .await
    .map_err(|e| JournalError::Io {
        path: path.settings.journal_dir.clone(),
        action: "opening (the reader thread failed)",
        source: std::io::Error::other(e.to_string()),
    })?;
    let (log, journal_was_empty) = opened?;
    log.append(Record::Boot {
        boot_id: context.identity.boot_id.clone(),
        started_at_unix_ms: boot_started,
    })
    .await?;

    let serial = path.trust.network.serial;
    if let Some(held) = log.read(JournalState::config_serial)
        && serial < held
    {
        return Err(CommandPathError::ConfigRollback { held, got: serial });
    }
    if log.read(JournalState::config_serial) != Some(serial) {
        log.append(Record::ConfigSerial { serial }).await?;
    }
    let killed = log.read(reap_leftovers);
    if killed > 0 {
        tracing::warn!(
            killed,
            "killed leftover child process groups of interrupted commands"
        );
    }

    let Some(kv_epoch) = read_epoch(&context, &path.trust.organisation).await else {
        return Ok(());
    };
    if kv_epoch > log.read(JournalState::highest_epoch) {
        log.append(Record::Epoch { epoch: kv_epoch }).await?;
    }
    context
        .metrics
        .confirmed_epoch
        .set(log.read(JournalState::highest_epoch));
    let Some(mut consumer) = bind_consumer(&context, &path.settings).await else {
        return Ok(());
    };
    if journal_was_empty {
        detect_journal_loss(&context, &mut consumer, &log, boot_started).await?;
    }
    tracing::info!(
        confirmed_epoch = log.read(JournalState::highest_epoch),
        serial,
        actions = ?path.registry.actions().collect::<Vec<_>>(),
        "command path ready"
    );
    let dispatcher = dispatch::Dispatcher::new(context.clone(), log, path);
    let advisories = tokio::spawn(watch_poison_commands(context.clone()));
    consume(&context, consumer, &dispatcher).await;
    advisories.abort();
    dispatcher.stop().await;
    Ok(())
}

/// The epoch of the organisation's leader, from `epoch.<org>` in the leader bucket (0 when no
/// coordinator was ever elected). Waits for the bucket; `None` = stopping.
async fn read_epoch(context: &Context, organisation: &str) -> Option<u64> {
    let bucket = context.names.bucket(Bucket::Leader);
    let key = context.names.epoch_key(organisation);
    let mut pauses = backoff();
    loop {
        match fetch_epoch(context, organisation).await {
            Ok(epoch) => return Some(epoch),
            Err(EpochReadError::Undecodable(error)) => {
                tracing::error!(%bucket, %key, %error, "leader epoch record does not decode; not accepting commands until it does")
            }
            Err(EpochReadError::Unreachable(error)) => {
                tracing::warn!(%bucket, %key, %error, "cannot read the leader epoch yet; create the network's buckets with the network setup")
            }
        }
        if !pause(context, pauses.next()).await {
            return None;
        }
    }
}

pub(crate) enum EpochReadError {
    Unreachable(String),
    Undecodable(String),
}

/// One read of the leader epoch (0 when no coordinator was ever elected).
pub(crate) async fn fetch_epoch(
    context: &Context,
    organisation: &str,
) -> Result<u64, EpochReadError> {
    let bucket = context.names.bucket(Bucket::Leader);
    let key = context.names.epoch_key(organisation);
    let store = context
        .jetstream
        .get_key_value(&bucket)
        .await
        .map_err(|e| EpochReadError::Unreachable(e.to_string()))?;
    match store.get(&key).await {
        Ok(None) => Ok(0),
        Ok(Some(value)) => serde_json::from_slice::<EpochValue>(&value)
            .map(|record| record.epoch)
            .map_err(|e| EpochReadError::Undecodable(e.to_string())),
        Err(e) => Err(EpochReadError::Unreachable(e.to_string())),
    }
}

#[derive(serde::Deserialize)]
struct EpochValue {
    epoch: u64,
}

/// Creates (or updates to these settings) this agent's durable consumer; the stream itself
/// belongs to the network setup. `None` = stopping.
async fn bind_consumer(context: &Context, settings: &CommandsConfig) -> Option<PullConsumer> {
    let node = &context.identity.node;
    let config = consumer::pull::Config {
        durable_name: Some(context.names.agent_consumer(node)),
        filter_subject: context.names.command(node),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        max_deliver: settings.max_deliver,
        max_ack_pending: settings.max_ack_pending,
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    let stream = context.names.command_stream();
    let mut pauses = backoff();
    loop {
        match context
            .jetstream
            .create_consumer_on_stream(config.clone(), &stream)
            .await
        {
            Ok(consumer) => return Some(consumer),
            Err(error) => {
                tracing::warn!(%stream, %error, "cannot bind the command consumer yet; the stream is created by the network setup");
            }
        }
        if !pause(context, pauses.next()).await {
            return None;
        }
    }
}

/// A journal found empty while the consumer has delivered before means it was lost: every
/// command issued before this boot is refused for good (journalled, so later boots keep it).
async fn detect_journal_loss(
    context: &Context,
    consumer: &mut PullConsumer,
    log: &CommandLog,
    boot_started: i64,
) -> Result<(), JournalError> {
    let info = match consumer.info().await {
        Ok(info) => info.clone(),
        Err(error) => {
            tracing::warn!(%error, "cannot read the consumer's delivery history; assuming a first start");
            return Ok(());
        }
    };
    let delivered_before =
        info.delivered.stream_sequence > 0 || info.num_redelivered > 0 || info.num_ack_pending > 0;
    if delivered_before {
        tracing::error!(
            node = %context.identity.node,
            delivered_stream_sequence = info.delivered.stream_sequence,
            redelivered = info.num_redelivered,
            ack_pending = info.num_ack_pending,
            "JOURNAL LOST: the journal is empty but this agent's consumer delivered commands before; refusing every command issued before this start (restore the journal volume if it can be found)"
        );
        log.append(Record::JournalLost {
            before_unix_ms: boot_started,
        })
        .await?;
    }
    Ok(())
}

/// Pulls commands until shutdown, re-binding after a broken pull.
async fn consume(context: &Context, mut consumer: PullConsumer, dispatcher: &dispatch::Dispatcher) {
    let mut pauses = backoff();
    loop {
        let messages = tokio::select! {
            () = context.shutdown.cancelled() => return,
            messages = consumer.messages() => messages,
        };
        match messages {
            Ok(mut messages) => loop {
                let next = tokio::select! {
                    () = context.shutdown.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        pauses = backoff();
                        dispatcher.dispatch(message).await;
                    }
                    Some(Err(error)) => {
                        tracing::warn!(%error, "command pull interrupted");
                        if matches!(
                            error.kind(),
                            consumer::pull::MessagesErrorKind::ConsumerDeleted
                        ) {
                            break;
                        }
                    }
                    None => break,
                }
            },
            Err(error) => tracing::warn!(%error, "cannot pull commands; retrying"),
        }
        if !pause(context, pauses.next()).await {
            return;
        }
        if let Some(rebound) = bind_consumer(context, &dispatcher.settings()).await {
            consumer = rebound;
        }
    }
}

#[derive(serde::Deserialize)]
struct MaxDeliveriesAdvisory {
    #[serde(default)]
    stream_seq: u64,
    #[serde(default)]
    deliveries: u64,
}

/// Logs and counts commands the server gave up redelivering (poison commands).
async fn watch_poison_commands(context: Context) {
    let subject = context
        .names
        .max_deliveries_advisory(&context.identity.node);
    let mut subscription = match context.link.client.subscribe(subject.clone()).await {
        Ok(subscription) => subscription,
        Err(error) => {
            tracing::warn!(%subject, %error, "cannot watch for poison commands");
            return;
        }
    };
    while let Some(message) = subscription.next().await {
        context.metrics.commands_poisoned.increment();
        let advisory: Option<MaxDeliveriesAdvisory> = serde_json::from_slice(&message.payload).ok();
        tracing::error!(
            stream_sequence = advisory.as_ref().map(|a| a.stream_seq),
            deliveries = advisory.as_ref().map(|a| a.deliveries),
            "a command reached max_deliver without an ack; the server no longer delivers it"
        );
    }
}

/// Decodes the command of an envelope whose signature `check_command` already verified.
fn verified_command(raw: &[u8]) -> Option<proto_sidecar::Command> {
    let envelope = sidecar_trust::decode_envelope(raw).ok()?;
    proto_sidecar::Command::decode(envelope.body.as_slice()).ok()
}

/// Names of the crash points (`fail` crate): with `FAILPOINTS="<name>=return"` the agent
/// kills itself with SIGKILL there, for the tests of every crash window.
pub mod crash_points {
    pub const BEFORE_STARTED: &str = "command-before-started";
    pub const AFTER_STARTED: &str = "command-after-started";
    pub const AFTER_ACTION: &str = "command-after-action";
    pub const AFTER_DONE: &str = "command-after-done";

    pub(crate) fn here(name: &str) {
        if fail::eval(name, |_| ()).is_some() {
            tracing::warn!(point = name, "crash point reached: SIGKILL");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
}
