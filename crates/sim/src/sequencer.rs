//! The sequencer node: its member registry and the sim's public sequencer API.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::db::Db;
use crate::error::{CallError, CantonError, Error};
use crate::faults::Faults;
use crate::wire::sequencer::sim_sequencer_service_server::SimSequencerService;
use prost::Message;

use crate::topology;
use crate::wire::sequencer::{
    HandshakeRequest, HandshakeResponse, SendRequest, SendResponse, SequencedEvent,
    SubmitTopologyRequest, SubmitTopologyResponse, SubscribeRequest, TopologyRecord,
};

/// Identity and parameters of the synchronizer this sequencer serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynchronizerIdentity {
    pub synchronizer_id: String,
    pub physical_synchronizer_id: String,
    pub protocol_version: i32,
    pub ledger_time_record_time_tolerance_micros: i64,
    pub reconciliation_interval_micros: i64,
}

pub struct Sequencer {
    pub db: Arc<Db>,
    pub identity: SynchronizerIdentity,
    /// Members with an open subscription, with how many they hold.
    subscribers: tokio::sync::Mutex<std::collections::HashMap<String, usize>>,
    faults: Arc<Faults>,
    /// Wakes subscriptions when new events are stored.
    sequenced: tokio::sync::Notify,
    /// Ends open subscriptions at shutdown, so the server can drain.
    shutdown: tokio_util::sync::CancellationToken,
}

/// Refusal ids of subscriptions.
pub const FORK_HAPPENED: &str = "FORK_HAPPENED";
pub const EVENTS_PRUNED: &str = "SEQUENCER_EVENTS_PRUNED";

/// One member's view of where it stands with this sequencer.
struct MemberPosition {
    max_counter: i64,
    pruned_up_to_counter: i64,
    timestamp_of_last: Option<i64>,
}

/// Microseconds since the Unix epoch, Canton's sequencer time unit.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub const DISABLED_MEMBER: &str = "SEQUENCER_MEMBER_DISABLED";

impl Sequencer {
    pub fn new(
        db: Arc<Db>,
        identity: SynchronizerIdentity,
        faults: Arc<Faults>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            db,
            identity,
            subscribers: tokio::sync::Mutex::new(std::collections::HashMap::new()),
            faults,
            sequenced: tokio::sync::Notify::new(),
            shutdown,
        }
    }

    /// Orders one submission: a timestamp above every earlier one, and for each recipient
    /// (disabled members excepted) the next counter.
    pub async fn sequence(&self, request: &SendRequest) -> Result<i64, CallError> {
        self.admit(&request.sender).await?;
        self.check_processing()?;
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a submission", e))?;
        let ts = next_timestamp(&tx).await?;
        store_event(&tx, ts, request).await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a submission", e))?;
        drop(guard);
        self.sequenced.notify_waiters();
        Ok(ts)
    }

    fn check_processing(&self) -> Result<(), CallError> {
        if self.faults.processing_stopped() {
            return Err(CantonError::new(
                tonic::Code::Unavailable,
                "SEQUENCER_OVERLOADED",
                "the sequencer is not processing submissions; retry later",
            )
            .into());
        }
        Ok(())
    }

    /// Decides a topology change on the synchronizer's store and, when it changed anything,
    /// sequences it to every enabled member, in one transaction.
    pub async fn submit_topology(
        &self,
        request: &SubmitTopologyRequest,
    ) -> Result<TopologyRecord, CallError> {
        self.check_processing()?;
        let mapping =
            proto_canton::protocol::v30::TopologyMapping::decode(request.mapping.as_slice())
                .map_err(|e| {
                    CantonError::new(
                        tonic::Code::InvalidArgument,
                        "INVALID_ARGUMENT",
                        format!("the topology mapping does not decode: {e}"),
                    )
                })?;
        let store = self.identity.synchronizer_id.clone();
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a topology change", e))?;
        let ts = next_timestamp(&tx).await?;
        let record = topology::decide(
            &tx,
            &store,
            topology::namespace_of(&store),
            topology::Change {
                operation: request.operation,
                serial: request.serial,
                mapping,
                signed_by: request.signed_by.clone(),
                must_fully_authorize: request.must_fully_authorize,
                force_flags: request.force_flags.clone(),
            },
            ts,
        )
        .await?;
        let history =
            topology::changed_since(&tx, &store, &record.mapping_code, &record.mapping_key).await?;
        let payload = serde_json::to_vec(&crate::member::Payload::Topology {
            records: history
                .iter()
                .map(|r| hex::encode(r.encode_to_vec()))
                .collect(),
        })
        .map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Io,
                format!("encoding a topology event: {e}"),
            )
        })?;
        let recipients: Vec<String> = tx
            .query(
                "SELECT member FROM sequencer_member WHERE enabled ORDER BY member",
                &[],
            )
            .await
            .map_err(|e| Error::db("listing members", e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        store_event(
            &tx,
            ts,
            &SendRequest {
                sender: request.sender.clone(),
                recipients,
                payload,
                message_id: uuid::Uuid::now_v7().to_string(),
            },
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a topology change", e))?;
        drop(guard);
        self.sequenced.notify_waiters();
        Ok(record)
    }

    /// Seeds the synchronizer's store on first start (parameters, the sequencer itself) and
    /// returns the parameters now in force, which the database decides from then on.
    pub async fn prepare_topology(
        &self,
        seed: &proto_canton::protocol::v30::DynamicSynchronizerParameters,
        sequencer_uid: &str,
    ) -> Result<proto_canton::protocol::v30::DynamicSynchronizerParameters, CallError> {
        use proto_canton::protocol::v30 as protocol;
        let store = self.identity.synchronizer_id.clone();
        let owner = topology::namespace_of(&store).to_owned();
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting the topology seed", e))?;
        let now = now_micros();
        let seeds = [
            protocol::topology_mapping::Mapping::SynchronizerParametersState(
                protocol::SynchronizerParametersState {
                    synchronizer_id: store.clone(),
                    synchronizer_parameters: Some(*seed),
                },
            ),
            protocol::topology_mapping::Mapping::SequencerSynchronizerState(
                protocol::SequencerSynchronizerState {
                    synchronizer_id: store.clone(),
                    threshold: 1,
                    active: vec![format!("SEQ::{sequencer_uid}")],
                    observers: Vec::new(),
                },
            ),
            protocol::topology_mapping::Mapping::MediatorSynchronizerState(
                protocol::MediatorSynchronizerState {
                    synchronizer_id: store.clone(),
                    group: 0,
                    threshold: 1,
                    active: Vec::new(),
                    observers: Vec::new(),
                },
            ),
        ];
        for mapping in seeds {
            topology::seed(
                &tx,
                &store,
                &protocol::TopologyMapping {
                    mapping: Some(mapping),
                },
                &owner,
                now,
            )
            .await?;
        }
        let current = topology::current_parameters(&tx, &store)
            .await?
            .unwrap_or(*seed);
        tx.commit()
            .await
            .map_err(|e| Error::db("committing the topology seed", e))?;
        Ok(current)
    }

    async fn position(&self, member: &str, counter: i64) -> Result<MemberPosition, CallError> {
        let mut guard = self.db.lock().await?;
        let row = guard
            .client()?
            .query_one(
                "SELECT coalesce((SELECT max(counter) FROM sequencer_delivery WHERE member = $1), -1),
                        coalesce((SELECT pruned_up_to_counter FROM sequencer_member WHERE member = $1), -1),
                        (SELECT ts_micros FROM sequencer_delivery WHERE member = $1 AND counter = $2)",
                &[&member, &counter],
            )
            .await
            .map_err(|e| Error::db("reading a member's position", e))?;
        Ok(MemberPosition {
            max_counter: row.get(0),
            pruned_up_to_counter: row.get(1),
            timestamp_of_last: row.get(2),
        })
    }

    /// Checks a subscription request against what this sequencer holds: a member ahead of it
    /// (or disagreeing about its last event) saw a different history, a fork; a member behind
    /// the pruning point cannot catch up.
    async fn check_subscription(&self, request: &SubscribeRequest) -> Result<(), CallError> {
        let position = self.position(&request.member, request.last_counter).await?;
        let known = position.max_counter.max(position.pruned_up_to_counter);
        if request.last_counter > known {
            return Err(CantonError::new(
                tonic::Code::FailedPrecondition,
                FORK_HAPPENED,
                format!(
                    "ForkHappened: member {} processed up to counter {} (timestamp {}) but the sequencer only knows counters up to {known}; the sequencer lost events the member has seen (restored from an older backup?)",
                    request.member, request.last_counter, request.last_timestamp_micros
                ),
            )
            .into());
        }
        if let Some(ts) = position.timestamp_of_last
            && request.last_counter >= 0
            && ts != request.last_timestamp_micros
        {
            return Err(CantonError::new(
                tonic::Code::FailedPrecondition,
                FORK_HAPPENED,
                format!(
                    "ForkHappened: member {} has counter {} at timestamp {} but the sequencer has it at {ts}",
                    request.member, request.last_counter, request.last_timestamp_micros
                ),
            )
            .into());
        }
        if request.last_counter < position.pruned_up_to_counter {
            return Err(CantonError::new(
                tonic::Code::FailedPrecondition,
                EVENTS_PRUNED,
                format!(
                    "member {} needs events from counter {} but the sequencer pruned up to counter {}; restore the member from a newer backup",
                    request.member,
                    request.last_counter + 1,
                    position.pruned_up_to_counter
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Events of `member` after `after_counter`, oldest first.
    async fn events_after(
        &self,
        member: &str,
        after_counter: i64,
    ) -> Result<Vec<SequencedEvent>, CallError> {
        let mut guard = self.db.lock().await?;
        let rows = guard
            .client()?
            .query(
                "SELECT d.counter, d.ts_micros, e.sender, e.payload, e.message_id
                 FROM sequencer_delivery d JOIN sequencer_event e ON e.ts_micros = d.ts_micros
                 WHERE d.member = $1 AND d.counter > $2 ORDER BY d.counter LIMIT 500",
                &[&member, &after_counter],
            )
            .await
            .map_err(|e| Error::db("reading events", e))?;
        Ok(rows
            .iter()
            .map(|row| SequencedEvent {
                counter: row.get(0),
                timestamp_micros: row.get(1),
                sender: row.get(2),
                payload: row.get(3),
                message_id: row.get(4),
            })
            .collect())
    }

    /// Deletes events sequenced before `before_micros`, remembering per member up to which
    /// counter its events are gone.
    pub async fn prune(&self, before_micros: i64) -> Result<u64, CallError> {
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a sequencer prune", e))?;
        tx.execute(
            "UPDATE sequencer_member m SET pruned_up_to_counter = greatest(m.pruned_up_to_counter, p.max_counter)
             FROM (SELECT member, max(counter) AS max_counter FROM sequencer_delivery
                   WHERE ts_micros < $1 GROUP BY member) p
             WHERE m.member = p.member",
            &[&before_micros],
        )
        .await
        .map_err(|e| Error::db("recording pruned counters", e))?;
        tx.execute(
            "DELETE FROM sequencer_delivery WHERE ts_micros < $1",
            &[&before_micros],
        )
        .await
        .map_err(|e| Error::db("pruning deliveries", e))?;
        let removed = tx
            .execute(
                "DELETE FROM sequencer_event WHERE ts_micros < $1",
                &[&before_micros],
            )
            .await
            .map_err(|e| Error::db("pruning events", e))?;
        tx.execute(
            "UPDATE participant_pruning SET pruned_before_micros = greatest(pruned_before_micros, $1)",
            &[&before_micros],
        )
        .await
        .map_err(|e| Error::db("recording the pruning point", e))?;
        crate::db::log_action(
            &tx,
            "/com.digitalasset.canton.sequencer.admin.v30.SequencerPruningAdministrationService/Prune",
            &format!("before_micros={before_micros} events={removed}"),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a sequencer prune", e))?;
        Ok(removed)
    }

    /// Members currently subscribed, sorted.
    pub async fn connected_members(&self) -> Vec<String> {
        let mut members: Vec<String> = self.subscribers.lock().await.keys().cloned().collect();
        members.sort();
        members
    }

    /// The lower bound of what the sequencer can serve (µs), as `PruningStatus` reports it:
    /// the pruning point once pruned, else the node's creation (it holds every event since).
    pub async fn earliest_event_timestamp(&self) -> Result<i64, CallError> {
        let mut guard = self.db.lock().await?;
        let row = guard
            .client()?
            .query_one(
                "SELECT greatest((SELECT (extract(epoch FROM created_at) * 1000000)::bigint FROM sim_node),
                                 (SELECT pruned_before_micros FROM participant_pruning))",
                &[],
            )
            .await
            .map_err(|e| Error::db("reading the earliest event", e))?;
        Ok(row.get(0))
    }

    /// Disables `member` for good; false when it is not registered. Disabling twice is fine.
    pub async fn disable_member(&self, member: &str, method: &str) -> Result<bool, CallError> {
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting DisableMember", e))?;
        let updated = tx
            .execute(
                "UPDATE sequencer_member SET enabled = false WHERE member = $1",
                &[&member],
            )
            .await
            .map_err(|e| Error::db("disabling a member", e))?;
        if updated == 0 {
            return Ok(false);
        }
        crate::db::log_action(&tx, method, &format!("member={member}"), "OK").await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing DisableMember", e))?;
        Ok(true)
    }

    /// Registers `member` on first contact; refuses disabled members.
    pub async fn admit(&self, member: &str) -> Result<(), CallError> {
        if member.is_empty() {
            return Err(CantonError::new(
                tonic::Code::InvalidArgument,
                "INVALID_ARGUMENT",
                "member is empty",
            )
            .into());
        }
        let (registered, enabled) = {
            let mut guard = self.db.lock().await?;
            let client = guard.client()?;
            let registered = client
                .execute(
                    "INSERT INTO sequencer_member (member, registered_at_micros) VALUES ($1, $2)
                     ON CONFLICT (member) DO NOTHING",
                    &[&member, &now_micros()],
                )
                .await
                .map_err(|e| Error::db("registering a member", e))?;
            let enabled: bool = client
                .query_one(
                    "SELECT enabled FROM sequencer_member WHERE member = $1",
                    &[&member],
                )
                .await
                .map_err(|e| Error::db("reading a member", e))?
                .get(0);
            (registered == 1, enabled)
        };
        if registered && let Err(e) = self.onboard(member).await {
            tracing::warn!(%member, error = %e, "cannot add a new member to the topology");
        }
        if !enabled {
            return Err(CantonError::new(
                tonic::Code::PermissionDenied,
                DISABLED_MEMBER,
                format!("member {member} is disabled on this sequencer"),
            )
            .into());
        }
        Ok(())
    }
}

impl Sequencer {
    /// Topology of a member's first registration: a mediator joins mediator group 0, a
    /// participant gets its trust certificate and submission permission.
    async fn onboard(&self, member: &str) -> Result<(), CallError> {
        use proto_canton::protocol::v30 as protocol;
        use proto_canton::protocol::v30::topology_mapping::Mapping;
        let store = self.identity.synchronizer_id.clone();
        let owner = topology::namespace_of(&store).to_owned();
        let Some((code, uid)) = member.split_once("::") else {
            return Ok(());
        };
        let mappings = match code {
            "MED" => {
                let current = {
                    let mut guard = self.db.lock().await?;
                    topology::current(
                        guard.client()?,
                        &store,
                        "mediator_synchronizer_state",
                        &format!("{store}/0"),
                    )
                    .await?
                };
                let mut state = match current.as_ref().map(topology::mapping_of).transpose()? {
                    Some(protocol::TopologyMapping {
                        mapping: Some(Mapping::MediatorSynchronizerState(state)),
                    }) => state,
                    _ => protocol::MediatorSynchronizerState {
                        synchronizer_id: store.clone(),
                        group: 0,
                        threshold: 1,
                        active: Vec::new(),
                        observers: Vec::new(),
                    },
                };
                if state.active.iter().any(|m| m == member) {
                    return Ok(());
                }
                state.active.push(member.to_owned());
                vec![Mapping::MediatorSynchronizerState(state)]
            }
            "PAR" => vec![
                Mapping::SynchronizerTrustCertificate(protocol::SynchronizerTrustCertificate {
                    participant_uid: uid.to_owned(),
                    synchronizer_id: store.clone(),
                    feature_flags: Vec::new(),
                }),
                Mapping::ParticipantPermission(protocol::ParticipantSynchronizerPermission {
                    synchronizer_id: store.clone(),
                    participant_uid: uid.to_owned(),
                    permission: protocol::enums::ParticipantPermission::Submission as i32,
                    limits: None,
                    login_after: None,
                }),
            ],
            _ => Vec::new(),
        };
        for mapping in mappings {
            self.submit_topology(&SubmitTopologyRequest {
                sender: member.to_owned(),
                operation: topology::ADD_REPLACE,
                serial: 0,
                mapping: protocol::TopologyMapping {
                    mapping: Some(mapping),
                }
                .encode_to_vec(),
                signed_by: vec![owner.clone(), topology::namespace_of(uid).to_owned()],
                must_fully_authorize: true,
                force_flags: Vec::new(),
            })
            .await?;
        }
        Ok(())
    }

    /// Feeds one subscription until the member goes away.
    async fn serve_subscription(
        &self,
        request: SubscribeRequest,
        sender: tokio::sync::mpsc::Sender<Result<SequencedEvent, Status>>,
    ) {
        let mut cursor = request.last_counter;
        loop {
            let woken = self.sequenced.notified();
            tokio::select! {
                () = self.faults.wait_processing() => {}
                () = self.shutdown.cancelled() => return,
            }
            match self.events_after(&request.member, cursor).await {
                Ok(events) if !events.is_empty() => {
                    for event in events {
                        cursor = event.counter;
                        if sender.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = sender.send(Err(e.into())).await;
                    return;
                }
            }
            tokio::select! {
                () = woken => {}
                () = sender.closed() => return,
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
            }
        }
    }
}

/// A timestamp above every stored event's.
async fn next_timestamp(tx: &tokio_postgres::Transaction<'_>) -> Result<i64, CallError> {
    let last: i64 = tx
        .query_one(
            "SELECT coalesce(max(ts_micros), 0) FROM sequencer_event",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the last timestamp", e))?
        .get(0);
    Ok(now_micros().max(last + 1))
}

/// Stores an event at `ts` and the next counter of each recipient (disabled members excepted).
async fn store_event(
    tx: &tokio_postgres::Transaction<'_>,
    ts: i64,
    request: &SendRequest,
) -> Result<(), CallError> {
    tx.execute(
        "INSERT INTO sequencer_event (ts_micros, sender, payload, message_id) VALUES ($1, $2, $3, $4)",
        &[&ts, &request.sender, &request.payload, &request.message_id],
    )
    .await
    .map_err(|e| Error::db("storing an event", e))?;
    let mut recipients: Vec<&String> = request.recipients.iter().collect();
    recipients.sort();
    recipients.dedup();
    for member in recipients {
        tx.execute(
            "INSERT INTO sequencer_delivery (member, counter, ts_micros)
             SELECT $1, greatest(
                 coalesce((SELECT max(counter) FROM sequencer_delivery WHERE member = $1), -1),
                 coalesce((SELECT pruned_up_to_counter FROM sequencer_member WHERE member = $1), -1)) + 1, $2
             WHERE NOT EXISTS (SELECT 1 FROM sequencer_member WHERE member = $1 AND NOT enabled)",
            &[member, &ts],
        )
        .await
        .map_err(|e| Error::db("storing a delivery", e))?;
    }
    Ok(())
}

#[tonic::async_trait]
impl SimSequencerService for Arc<Sequencer> {
    async fn handshake(
        &self,
        request: Request<HandshakeRequest>,
    ) -> Result<Response<HandshakeResponse>, Status> {
        let request = request.into_inner();
        if request.protocol_version != self.identity.protocol_version {
            return Err(CantonError::new(
                tonic::Code::FailedPrecondition,
                "HANDSHAKE_PROTOCOL_VERSION_NOT_SUPPORTED",
                format!(
                    "member {} speaks protocol version {}, the synchronizer {}",
                    request.member, request.protocol_version, self.identity.protocol_version
                ),
            )
            .into());
        }
        self.admit(&request.member).await?;
        let store = &self.identity.synchronizer_id;
        let (parameters, topology) = {
            let mut guard = self.db.lock().await.map_err(CallError::from)?;
            let client = guard.client().map_err(CallError::from)?;
            (
                topology::current_parameters(client, store).await?,
                topology::snapshot(client, store).await?,
            )
        };
        let micros = |d: Option<&prost_types::Duration>| {
            d.map_or(0, |d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
        };
        Ok(Response::new(HandshakeResponse {
            synchronizer_id: self.identity.synchronizer_id.clone(),
            physical_synchronizer_id: self.identity.physical_synchronizer_id.clone(),
            protocol_version: self.identity.protocol_version,
            ledger_time_record_time_tolerance_micros: parameters.as_ref().map_or(
                self.identity.ledger_time_record_time_tolerance_micros,
                |p| micros(p.ledger_time_record_time_tolerance.as_ref()),
            ),
            reconciliation_interval_micros: parameters
                .as_ref()
                .map_or(self.identity.reconciliation_interval_micros, |p| {
                    micros(p.reconciliation_interval.as_ref())
                }),
            topology,
        }))
    }

    async fn submit_topology(
        &self,
        request: Request<SubmitTopologyRequest>,
    ) -> Result<Response<SubmitTopologyResponse>, Status> {
        let request = request.into_inner();
        self.admit(&request.sender).await?;
        let record = Sequencer::submit_topology(self, &request).await?;
        Ok(Response::new(SubmitTopologyResponse {
            record: Some(record),
        }))
    }

    async fn send(&self, request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        let timestamp_micros = self.sequence(&request.into_inner()).await?;
        Ok(Response::new(SendResponse { timestamp_micros }))
    }

    type SubscribeStream = futures::stream::BoxStream<'static, Result<SequencedEvent, Status>>;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let request = request.into_inner();
        self.admit(&request.member).await?;
        self.check_subscription(&request).await?;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let sequencer = Arc::clone(self);
        tokio::spawn(async move {
            let member = request.member.clone();
            *sequencer
                .subscribers
                .lock()
                .await
                .entry(member.clone())
                .or_default() += 1;
            sequencer.serve_subscription(request, sender).await;
            let mut subscribers = sequencer.subscribers.lock().await;
            if let Some(count) = subscribers.get_mut(&member) {
                *count -= 1;
                if *count == 0 {
                    subscribers.remove(&member);
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
