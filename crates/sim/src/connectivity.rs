//! A participant's synchronizer connections with Canton's semantics: registered configs live
//! in the database (so they survive restarts and restores), live connections only in memory (a
//! restarted node reconnects every config whose `manual_connect` is false, and no other).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::db::{Db, log_action};
use crate::error::{CallError, CantonError, Error};
use crate::faults::Faults;
use crate::sequencer_client::{Handshake, SequencerLink, handshake};

/// Canton's error ids used here (with the gRPC code Canton's error category maps them to).
pub mod ids {
    pub const UNKNOWN_SYNCHRONIZER: &str = "SYNC_SERVICE_UNKNOWN_SYNCHRONIZER";
    pub const ALREADY_ADDED: &str = "SYNC_SERVICE_ALREADY_ADDED";
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT";
    pub const FAILED_TO_CONNECT: &str = "SYNC_SERVICE_FAILED_SYNCHRONIZER_CONNECTION";
    pub const ID_MISMATCH: &str = "SYNC_SERVICE_SYNCHRONIZER_ID_MISMATCH";
    pub const ID_NOT_KNOWN: &str = "SYNC_SERVICE_SYNCHRONIZER_ID_NOT_KNOWN";
}

/// `SequencerConnectionValidation` as Canton reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    Disabled,
    Active,
    All,
    ThresholdActive,
}

impl Validation {
    /// From the wire enum; UNSPECIFIED is refused, as Canton's proto parsing does.
    pub fn from_wire(value: i32) -> Result<Self, CantonError> {
        match value {
            1 => Ok(Self::Disabled),
            2 => Ok(Self::Active),
            3 => Ok(Self::All),
            4 => Ok(Self::ThresholdActive),
            _ => Err(CantonError::new(
                Code::InvalidArgument,
                ids::INVALID_ARGUMENT,
                format!(
                    "sequencer_connection_validation {value} is not set or unknown; use DISABLED, ACTIVE, ALL or THRESHOLD_ACTIVE"
                ),
            )),
        }
    }
}

/// `RegisterSynchronizerRequest.SynchronizerConnection`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterMode {
    /// Only store the config.
    None,
    /// Handshake with the sequencer (learning the synchronizer id), no connection.
    Handshake,
}

impl RegisterMode {
    pub fn from_wire(value: i32) -> Result<Self, CantonError> {
        match value {
            1 => Ok(Self::None),
            2 => Ok(Self::Handshake),
            _ => Err(CantonError::new(
                Code::InvalidArgument,
                ids::INVALID_ARGUMENT,
                format!(
                    "synchronizer_connection {value} is not set or unknown; use NONE or HANDSHAKE"
                ),
            )),
        }
    }
}

/// The parts of a `SynchronizerConnectionConfig` the sim acts on, plus the whole message as
/// received, which is what is stored and served back (ModifySynchronizer replaces it wholesale).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    pub alias: String,
    pub sequencer_urls: Vec<String>,
    pub manual_connect: bool,
    pub priority: i32,
    /// Optional pin of the physical synchronizer id.
    pub physical_synchronizer_id: Option<String>,
    pub encoded: Vec<u8>,
}

impl ConnectionConfig {
    fn check(&self) -> Result<(), CantonError> {
        let invalid = |cause: String| {
            Err(CantonError::new(
                Code::InvalidArgument,
                ids::INVALID_ARGUMENT,
                cause,
            ))
        };
        if self.alias.is_empty() {
            return invalid("synchronizer_alias is empty".to_owned());
        }
        if self.alias.len() > 300 {
            return invalid(format!(
                "synchronizer_alias {:?} is longer than 300 characters",
                self.alias
            ));
        }
        if self.sequencer_urls.is_empty() {
            return invalid(format!(
                "config for {:?} has no sequencer connection; give at least one gRPC URL",
                self.alias
            ));
        }
        Ok(())
    }
}

/// A registered synchronizer as listed by ListRegisteredSynchronizers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    pub config: ConnectionConfig,
    pub synchronizer_id: Option<String>,
    pub physical_synchronizer_id: Option<String>,
    pub connected: bool,
}

/// A live connection as listed by ListConnectedSynchronizers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connected {
    pub alias: String,
    pub synchronizer_id: String,
    pub physical_synchronizer_id: String,
    pub healthy: bool,
}

struct Connection {
    handshake: Handshake,
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
}

/// Starts the event processing of a new connection (the sequencer subscription); returns a
/// flag the task keeps up to date with the connection's health.
pub trait ConnectionDriver: Send + Sync + 'static {
    fn start(
        &self,
        alias: &str,
        link: SequencerLink,
        handshake: Handshake,
        stop: CancellationToken,
    ) -> futures::future::BoxFuture<'static, Result<Arc<AtomicBool>, CallError>>;
}

/// Keeps a connection healthy as long as processing is not stopped; used until a node has
/// real event processing to drive.
pub struct IdleDriver;

impl ConnectionDriver for IdleDriver {
    fn start(
        &self,
        _alias: &str,
        _link: SequencerLink,
        _handshake: Handshake,
        _stop: CancellationToken,
    ) -> futures::future::BoxFuture<'static, Result<Arc<AtomicBool>, CallError>> {
        Box::pin(async { Ok(Arc::new(AtomicBool::new(true))) })
    }
}

pub struct Connectivity {
    db: Arc<Db>,
    faults: Arc<Faults>,
    member: String,
    protocol_version: i32,
    driver: Arc<dyn ConnectionDriver>,
    connected: Mutex<HashMap<String, Connection>>,
    /// Connects run one at a time: two racing connects of one alias (the start-up retry loop
    /// and a ReconnectSynchronizers) would each start an event processor for it.
    connecting: Mutex<()>,
    /// Background reconnect loops (startup auto-connect, `retry = true`), by alias.
    retrying: Mutex<HashMap<String, CancellationToken>>,
    shutdown: CancellationToken,
}

const CONNECTIVITY: &str =
    "/com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/";

fn method(name: &str) -> String {
    format!("{CONNECTIVITY}{name}")
}

fn unknown_alias(alias: &str) -> CantonError {
    CantonError::new(
        Code::NotFound,
        ids::UNKNOWN_SYNCHRONIZER,
        format!("The synchronizer with alias {alias:?} is unknown."),
    )
}

impl Connectivity {
    pub fn new(
        db: Arc<Db>,
        faults: Arc<Faults>,
        member: String,
        protocol_version: i32,
        driver: Arc<dyn ConnectionDriver>,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            db,
            faults,
            member,
            protocol_version,
            driver,
            connected: Mutex::new(HashMap::new()),
            connecting: Mutex::new(()),
            retrying: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    pub async fn register(
        &self,
        config: ConnectionConfig,
        mode: RegisterMode,
        validation: Validation,
    ) -> Result<(), CallError> {
        config.check()?;
        self.validate_connections(&config, validation).await?;
        let learned = match mode {
            RegisterMode::None => None,
            RegisterMode::Handshake => Some(self.handshake_any(&config).await?.0),
        };
        self.insert(&config, learned.as_ref(), "RegisterSynchronizer")
            .await
    }

    /// ConnectSynchronizer: registers a new config, then connects. An alias that is already
    /// registered is refused, connected or not (use ReconnectSynchronizer for those).
    pub async fn connect(
        &self,
        config: ConnectionConfig,
        validation: Validation,
    ) -> Result<bool, CallError> {
        config.check()?;
        self.validate_connections(&config, validation).await?;
        self.insert(&config, None, "ConnectSynchronizer").await?;
        Ok(self.try_connect(&config.alias).await?.is_some())
    }

    pub async fn reconnect(self: &Arc<Self>, alias: &str, retry: bool) -> Result<bool, CallError> {
        let registered = self
            .load(alias)
            .await?
            .ok_or_else(|| unknown_alias(alias))?;
        let connected = self.try_connect(&registered.config.alias).await?.is_some();
        self.log_ok(
            "ReconnectSynchronizer",
            &format!("alias={alias} retry={retry} connected={connected}"),
        )
        .await?;
        if !connected && retry {
            self.spawn_retry(alias.to_owned()).await;
        }
        Ok(connected)
    }

    /// ReconnectSynchronizers: every config whose manual_connect is false.
    pub async fn reconnect_all(self: &Arc<Self>, ignore_failures: bool) -> Result<(), CallError> {
        let mut failed = Vec::new();
        for registered in self.list_configs().await? {
            if registered.config.manual_connect {
                continue;
            }
            if self.try_connect(&registered.config.alias).await?.is_none() {
                failed.push(registered.config.alias.clone());
            }
        }
        self.log_ok(
            "ReconnectSynchronizers",
            &format!("ignore_failures={ignore_failures} failed={failed:?}"),
        )
        .await?;
        if !failed.is_empty() && !ignore_failures {
            return Err(CantonError::new(
                Code::Unavailable,
                ids::FAILED_TO_CONNECT,
                format!("could not connect to {failed:?}; their sequencers are unreachable"),
            )
            .into());
        }
        Ok(())
    }

    pub async fn disconnect(&self, alias: &str) -> Result<(), CallError> {
        if self.load(alias).await?.is_none() {
            return Err(unknown_alias(alias).into());
        }
        self.stop_retry(alias).await;
        let was_connected = self.drop_connection(alias).await;
        self.log_ok(
            "DisconnectSynchronizer",
            &format!("alias={alias} was_connected={was_connected}"),
        )
        .await?;
        Ok(())
    }

    pub async fn disconnect_all(&self) -> Result<(), CallError> {
        let aliases: Vec<String> = {
            let mut retrying = self.retrying.lock().await;
            for (_, token) in retrying.drain() {
                token.cancel();
            }
            self.connected.lock().await.keys().cloned().collect()
        };
        for alias in &aliases {
            self.drop_connection(alias).await;
        }
        self.log_ok(
            "DisconnectAllSynchronizers",
            &format!("disconnected={aliases:?}"),
        )
        .await?;
        Ok(())
    }

    /// Ends every live connection and reconnect loop without a trace in the action log (a
    /// replica turning passive; the registrations stay).
    pub async fn drop_all(&self) {
        let aliases: Vec<String> = {
            let mut retrying = self.retrying.lock().await;
            for (_, token) in retrying.drain() {
                token.cancel();
            }
            self.connected.lock().await.keys().cloned().collect()
        };
        for alias in &aliases {
            self.drop_connection(alias).await;
        }
    }

    /// Runs `work` (a database reset) with the participant off every synchronizer: no connect
    /// can start meanwhile, and every reconnect loop and live connection is ended first. A
    /// connection that is healthy (its sequencer answers and its events are processed) is not
    /// ended: the aliases of those come back as the error instead, and nothing changes. A
    /// connection whose sequencer is gone (or refuses it) is not healthy and is ended.
    pub async fn while_offline<T, Fut>(&self, work: impl FnOnce() -> Fut) -> Result<T, Vec<String>>
    where
        Fut: std::future::Future<Output = T>,
    {
        let _no_connects = self.connecting.lock().await;
        let mut healthy: Vec<String> = self
            .connected
            .lock()
            .await
            .iter()
            .filter(|(_, c)| c.healthy.load(Ordering::SeqCst))
            .map(|(alias, _)| alias.clone())
            .collect();
        if !healthy.is_empty() {
            healthy.sort();
            return Err(healthy);
        }
        self.drop_all().await;
        Ok(work().await)
    }

    /// ModifySynchronizer: replaces the stored config of `new_config.alias` wholesale.
    pub async fn modify(
        &self,
        physical_synchronizer_id: Option<String>,
        new_config: ConnectionConfig,
        validation: Validation,
    ) -> Result<(), CallError> {
        new_config.check()?;
        let alias = new_config.alias.clone();
        let current = self
            .load(&alias)
            .await?
            .ok_or_else(|| unknown_alias(&alias))?;
        if let Some(wanted) = physical_synchronizer_id.filter(|id| !id.is_empty())
            && current.physical_synchronizer_id.as_deref() != Some(wanted.as_str())
        {
            return Err(CantonError::new(
                Code::NotFound,
                ids::UNKNOWN_SYNCHRONIZER,
                format!(
                    "No connection config for alias {alias:?} and physical synchronizer {wanted:?}."
                ),
            )
            .into());
        }
        if let (Some(pin), Some(known)) = (
            new_config.physical_synchronizer_id.as_deref(),
            current.physical_synchronizer_id.as_deref(),
        ) && pin != known
        {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                ids::ID_MISMATCH,
                format!("alias {alias:?} is bound to {known}; the new config pins {pin}"),
            )
            .into());
        }
        self.validate_connections(&new_config, validation).await?;
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting ModifySynchronizer", e))?;
        tx.execute(
            "UPDATE participant_synchronizer SET config = $2, manual_connect = $3, priority = $4,
                 sequencer_urls = $5, pinned_physical_id = $6, modified_at = now()
             WHERE alias = $1",
            &[
                &alias,
                &new_config.encoded,
                &new_config.manual_connect,
                &new_config.priority,
                &new_config.sequencer_urls,
                &new_config.physical_synchronizer_id,
            ],
        )
        .await
        .map_err(|e| Error::db("storing the modified config", e))?;
        log_action(
            &tx,
            &method("ModifySynchronizer"),
            &format!(
                "alias={alias} manual_connect={} priority={} sequencers={:?}",
                new_config.manual_connect, new_config.priority, new_config.sequencer_urls
            ),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing ModifySynchronizer", e))?;
        Ok(())
    }

    /// Repair MigrateSynchronizer: the contracts move to the target synchronizer (the sim's
    /// contracts carry no assignment), the target config is registered with the ids learned by
    /// a handshake and the source is decommissioned (its registration removed), in one
    /// transaction with the action log entry.
    pub async fn migrate(
        &self,
        source_alias: &str,
        target: ConnectionConfig,
        method: &str,
    ) -> Result<(), CallError> {
        target.check()?;
        let source = self
            .load(source_alias)
            .await?
            .ok_or_else(|| unknown_alias(source_alias))?;
        if self.load(&target.alias).await?.is_some() {
            return Err(CantonError::new(
                Code::AlreadyExists,
                ids::ALREADY_ADDED,
                format!(
                    "The synchronizer with alias {:?} is already registered.",
                    target.alias
                ),
            )
            .into());
        }
        let (learned, _) = self.handshake_any(&target).await?;
        if source.synchronizer_id.as_deref() == Some(learned.synchronizer_id.as_str()) {
            return Err(CantonError::new(
                Code::InvalidArgument,
                ids::INVALID_ARGUMENT,
                format!(
                    "source {source_alias:?} and target {:?} are the same synchronizer {}; migrate to another synchronizer",
                    target.alias, learned.synchronizer_id
                ),
            )
            .into());
        }
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting MigrateSynchronizer", e))?;
        tx.execute(
            "DELETE FROM participant_synchronizer WHERE alias = $1",
            &[&source_alias],
        )
        .await
        .map_err(|e| Error::db("decommissioning the source synchronizer", e))?;
        tx.execute(
            "INSERT INTO participant_synchronizer
                (alias, config, manual_connect, priority, sequencer_urls, pinned_physical_id,
                 synchronizer_id, physical_synchronizer_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &target.alias,
                &target.encoded,
                &target.manual_connect,
                &target.priority,
                &target.sequencer_urls,
                &target.physical_synchronizer_id,
                &learned.synchronizer_id,
                &learned.physical_synchronizer_id,
            ],
        )
        .await
        .map_err(|e| Error::db("registering the target synchronizer", e))?;
        log_action(
            &tx,
            method,
            &format!(
                "source={source_alias} target={} synchronizer={}",
                target.alias, learned.physical_synchronizer_id
            ),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing MigrateSynchronizer", e))?;
        Ok(())
    }

    pub async fn logout(&self, alias: &str) -> Result<(), CallError> {
        if self.load(alias).await?.is_none() {
            return Err(unknown_alias(alias).into());
        }
        self.log_ok("Logout", &format!("alias={alias}")).await?;
        Ok(())
    }

    pub async fn list_registered(&self) -> Result<Vec<Registered>, CallError> {
        let mut all = self.list_configs().await?;
        let connected = self.connected.lock().await;
        for registered in &mut all {
            registered.connected = connected.contains_key(&registered.config.alias);
        }
        Ok(all)
    }

    pub async fn list_connected(&self) -> Vec<Connected> {
        let stopped = self.faults.processing_stopped();
        let connected = self.connected.lock().await;
        let mut list: Vec<Connected> = connected
            .iter()
            .map(|(alias, c)| Connected {
                alias: alias.clone(),
                synchronizer_id: c.handshake.synchronizer_id.clone(),
                physical_synchronizer_id: c.handshake.physical_synchronizer_id.clone(),
                healthy: !stopped && c.healthy.load(Ordering::SeqCst),
            })
            .collect();
        list.sort_by(|a, b| a.alias.cmp(&b.alias));
        list
    }

    /// GetSynchronizerId: known once the participant has handshaken with the synchronizer.
    pub async fn synchronizer_id(&self, alias: &str) -> Result<(String, String), CallError> {
        let registered = self
            .load(alias)
            .await?
            .ok_or_else(|| unknown_alias(alias))?;
        match (registered.synchronizer_id, registered.physical_synchronizer_id) {
            (Some(id), Some(physical)) => Ok((id, physical)),
            _ => Err(CantonError::new(
                Code::NotFound,
                ids::ID_NOT_KNOWN,
                format!("The synchronizer id of alias {alias:?} is not known yet; connect or register with a handshake first."),
            )
            .into()),
        }
    }

    /// At start: reconnect every config whose manual_connect is false, retrying in the
    /// background while the sequencer is unreachable, as Canton does at startup.
    pub async fn auto_connect_at_start(self: &Arc<Self>) -> Result<(), Error> {
        let configs = self.list_configs().await.map_err(|e| match e {
            CallError::Sim(e) => e,
            CallError::Canton(e) => Error::new(crate::error::ErrorKind::Database, e.to_string()),
        })?;
        for registered in configs {
            if registered.config.manual_connect {
                tracing::info!(alias = %registered.config.alias, "manual_connect is set: not reconnecting at start");
                continue;
            }
            self.spawn_retry(registered.config.alias.clone()).await;
        }
        Ok(())
    }

    /// Registers the bootstrap configs that are not registered yet.
    pub async fn bootstrap(&self, configs: Vec<ConnectionConfig>) -> Result<(), CallError> {
        for config in configs {
            if self.load(&config.alias).await?.is_none() {
                self.insert(&config, None, "bootstrap").await?;
            }
        }
        Ok(())
    }

    /// The live connections' links (for the node's event processing).
    pub async fn connected_aliases(&self) -> Vec<String> {
        self.connected.lock().await.keys().cloned().collect()
    }

    // === internals ===

    async fn spawn_retry(self: &Arc<Self>, alias: String) {
        let token = self.shutdown.child_token();
        {
            let mut retrying = self.retrying.lock().await;
            if let Some(previous) = retrying.insert(alias.clone(), token.clone()) {
                previous.cancel();
            }
        }
        let connectivity = Arc::clone(self);
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                if token.is_cancelled() {
                    return;
                }
                match connectivity.try_connect_unless(&alias, &token).await {
                    Ok(Some(_)) => {
                        tracing::info!(%alias, "connected");
                        connectivity.retrying.lock().await.remove(&alias);
                        return;
                    }
                    Ok(None) => {}
                    Err(e) => tracing::warn!(%alias, error = %e, "reconnect attempt failed"),
                }
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }

    async fn stop_retry(&self, alias: &str) {
        if let Some(token) = self.retrying.lock().await.remove(alias) {
            token.cancel();
        }
    }

    async fn drop_connection(&self, alias: &str) -> bool {
        match self.connected.lock().await.remove(alias) {
            Some(connection) => {
                connection.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Connects `alias` unless connected; `None` when no sequencer answered.
    async fn try_connect(&self, alias: &str) -> Result<Option<Handshake>, CallError> {
        self.try_connect_unless(alias, &CancellationToken::new())
            .await
    }

    /// [`Self::try_connect`] for a reconnect loop: `None` when the loop was cancelled while it
    /// waited for its turn (a database reset cancels the loops, then takes the turn itself).
    async fn try_connect_unless(
        &self,
        alias: &str,
        cancelled: &CancellationToken,
    ) -> Result<Option<Handshake>, CallError> {
        let _one_at_a_time = self.connecting.lock().await;
        if cancelled.is_cancelled() {
            return Ok(None);
        }
        if let Some(existing) = self.connected.lock().await.get(alias) {
            return Ok(Some(existing.handshake.clone()));
        }
        let registered = self
            .load(alias)
            .await?
            .ok_or_else(|| unknown_alias(alias))?;
        let (handshake, link) = match self.handshake_any(&registered.config).await {
            Ok(found) => found,
            Err(CallError::Canton(e)) if e.code == Code::Unavailable => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(known) = &registered.physical_synchronizer_id
            && known != &handshake.physical_synchronizer_id
        {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                ids::ID_MISMATCH,
                format!(
                    "alias {alias:?} is bound to {known} but its sequencer now serves {}",
                    handshake.physical_synchronizer_id
                ),
            )
            .into());
        }
        self.remember_ids(alias, &handshake).await?;
        let stop = self.shutdown.child_token();
        let healthy = self
            .driver
            .start(alias, link, handshake.clone(), stop.clone())
            .await?;
        let mut connected = self.connected.lock().await;
        if let Some(existing) = connected.get(alias) {
            // Raced with another connect of the same alias: keep the first.
            stop.cancel();
            return Ok(Some(existing.handshake.clone()));
        }
        connected.insert(
            alias.to_owned(),
            Connection {
                handshake: handshake.clone(),
                healthy,
                stop,
            },
        );
        Ok(Some(handshake))
    }

    async fn handshake_any(
        &self,
        config: &ConnectionConfig,
    ) -> Result<(Handshake, SequencerLink), CallError> {
        let mut last = String::new();
        for url in &config.sequencer_urls {
            match handshake(url, &self.member, self.protocol_version).await {
                Ok(found) => {
                    if let Some(pin) = &config.physical_synchronizer_id
                        && pin != &found.0.physical_synchronizer_id
                    {
                        return Err(CantonError::new(
                            Code::FailedPrecondition,
                            ids::ID_MISMATCH,
                            format!(
                                "config of {:?} pins {pin} but sequencer {url} serves {}",
                                config.alias, found.0.physical_synchronizer_id
                            ),
                        )
                        .into());
                    }
                    return Ok(found);
                }
                Err(e) if e.code() == Code::PermissionDenied => {
                    return Err(CantonError::new(
                        Code::FailedPrecondition,
                        "SEQUENCER_MEMBER_DISABLED",
                        format!(
                            "sequencer {url} refuses member {}: {}",
                            self.member,
                            e.message()
                        ),
                    )
                    .into());
                }
                Err(e) => last = format!("{url}: {}", e.message()),
            }
        }
        Err(CantonError::new(
            Code::Unavailable,
            ids::FAILED_TO_CONNECT,
            format!("no sequencer of {:?} answered ({last})", config.alias),
        )
        .into())
    }

    async fn validate_connections(
        &self,
        config: &ConnectionConfig,
        validation: Validation,
    ) -> Result<(), CallError> {
        if validation == Validation::Disabled {
            return Ok(());
        }
        let mut reachable = 0;
        let mut unreachable = Vec::new();
        for url in &config.sequencer_urls {
            match handshake(url, &self.member, self.protocol_version).await {
                Ok(_) => reachable += 1,
                Err(e) => unreachable.push(format!("{url} ({})", e.message())),
            }
        }
        let ok = match validation {
            Validation::All => unreachable.is_empty(),
            _ => reachable > 0,
        };
        if ok {
            return Ok(());
        }
        Err(CantonError::new(
            Code::Unavailable,
            ids::FAILED_TO_CONNECT,
            format!(
                "sequencer connection validation {validation:?} failed for {:?}: unreachable {unreachable:?}",
                config.alias
            ),
        )
        .into())
    }

    async fn insert(
        &self,
        config: &ConnectionConfig,
        learned: Option<&Handshake>,
        call: &str,
    ) -> Result<(), CallError> {
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a registration", e))?;
        let inserted = tx
            .execute(
                "INSERT INTO participant_synchronizer
                    (alias, config, manual_connect, priority, sequencer_urls, pinned_physical_id,
                     synchronizer_id, physical_synchronizer_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                 ON CONFLICT (alias) DO NOTHING",
                &[
                    &config.alias,
                    &config.encoded,
                    &config.manual_connect,
                    &config.priority,
                    &config.sequencer_urls,
                    &config.physical_synchronizer_id,
                    &learned.map(|h| h.synchronizer_id.clone()),
                    &learned.map(|h| h.physical_synchronizer_id.clone()),
                ],
            )
            .await
            .map_err(|e| Error::db("storing a synchronizer config", e))?;
        if inserted == 0 {
            return Err(CantonError::new(
                Code::AlreadyExists,
                ids::ALREADY_ADDED,
                format!(
                    "The synchronizer with alias {:?} is already registered.",
                    config.alias
                ),
            )
            .into());
        }
        log_action(
            &tx,
            &method(call),
            &format!(
                "alias={} manual_connect={} sequencers={:?}",
                config.alias, config.manual_connect, config.sequencer_urls
            ),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a registration", e))?;
        Ok(())
    }

    async fn remember_ids(&self, alias: &str, handshake: &Handshake) -> Result<(), CallError> {
        let mut guard = self.db.lock().await?;
        guard
            .client()?
            .execute(
                "UPDATE participant_synchronizer SET synchronizer_id = $2, physical_synchronizer_id = $3
                 WHERE alias = $1 AND physical_synchronizer_id IS DISTINCT FROM $3",
                &[&alias, &handshake.synchronizer_id, &handshake.physical_synchronizer_id],
            )
            .await
            .map_err(|e| Error::db("storing the learned synchronizer id", e))?;
        Ok(())
    }

    async fn log_ok(&self, name: &str, detail: &str) -> Result<(), CallError> {
        self.db.log_plain(&method(name), detail, "OK").await?;
        Ok(())
    }

    async fn load(&self, alias: &str) -> Result<Option<Registered>, CallError> {
        let mut guard = self.db.lock().await?;
        let row = guard
            .client()?
            .query_opt(
                "SELECT alias, config, manual_connect, priority, sequencer_urls, pinned_physical_id,
                        synchronizer_id, physical_synchronizer_id
                 FROM participant_synchronizer WHERE alias = $1",
                &[&alias],
            )
            .await
            .map_err(|e| Error::db("reading a synchronizer config", e))?;
        Ok(row.as_ref().map(registered_from_row))
    }

    async fn list_configs(&self) -> Result<Vec<Registered>, CallError> {
        let mut guard = self.db.lock().await?;
        let rows = guard
            .client()?
            .query(
                "SELECT alias, config, manual_connect, priority, sequencer_urls, pinned_physical_id,
                        synchronizer_id, physical_synchronizer_id
                 FROM participant_synchronizer ORDER BY priority DESC, alias",
                &[],
            )
            .await
            .map_err(|e| Error::db("listing synchronizer configs", e))?;
        Ok(rows.iter().map(registered_from_row).collect())
    }
}

fn registered_from_row(row: &tokio_postgres::Row) -> Registered {
    Registered {
        config: ConnectionConfig {
            alias: row.get(0),
            encoded: row.get(1),
            manual_connect: row.get(2),
            priority: row.get(3),
            sequencer_urls: row.get(4),
            physical_synchronizer_id: row.get(5),
        },
        synchronizer_id: row.get(6),
        physical_synchronizer_id: row.get(7),
        connected: false,
    }
}
