//! The member side of a synchronizer (participants and mediators): subscribe from the last
//! processed counter recorded in the node's own database, apply events in order, and for
//! participants run the synthetic workload, keep the ledger and exchange ACS commitments.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::connectivity::ConnectionDriver;
use crate::db::Db;
use crate::error::{CallError, CantonError, Error};
use crate::faults::Faults;
use crate::sequencer_client::{Handshake, SequencerLink};
use crate::wire::sequencer::{SendRequest, SequencedEvent, SubscribeRequest, TopologyRecord};
use prost::Message;

/// What members send each other through the sequencer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Payload {
    /// A time proof: advances the member's view of sequencer time.
    Tick,
    Create {
        contract_id: String,
        /// Participant member ids hosting a stakeholder.
        stakeholders: Vec<String>,
    },
    Archive {
        contract_id: String,
        stakeholders: Vec<String>,
    },
    Commitment {
        period_start_micros: i64,
        period_end_micros: i64,
        commitment: String,
    },
    /// Topology transactions the sequencer decided (hex of encoded `TopologyRecord`s).
    Topology { records: Vec<String> },
}

/// Workload rate in transactions per second, changeable at run time.
#[derive(Default)]
pub struct WorkloadRate(AtomicU64);

impl WorkloadRate {
    pub fn set(&self, rate: f64) {
        self.0.store(rate.max(0.0).to_bits(), Ordering::SeqCst);
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::SeqCst))
    }
}

pub struct Member {
    db: Arc<Db>,
    faults: Arc<Faults>,
    member: String,
    is_participant: bool,
    /// Other participants, the counter-participants of commitments and workload contracts.
    peers: Vec<String>,
    /// The connection that ticks and the workload go through, with its serial: a connection
    /// that ends clears the link only while it is still its own, never a newer one's.
    link: Mutex<Option<(SequencerLink, Handshake, u64)>>,
    connections: AtomicU64,
    /// The event processors of the connections, so a database reset can wait until none is
    /// left writing.
    processors: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub workload: Arc<WorkloadRate>,
}

struct Outgoing {
    recipients: Vec<String>,
    payload: Payload,
}

fn canton_error_of(status: &tonic::Status) -> CallError {
    let message = status.message();
    for id in [
        crate::sequencer::FORK_HAPPENED,
        crate::sequencer::EVENTS_PRUNED,
    ] {
        if message.starts_with(id) {
            let cause = message
                .split_once("): ")
                .map_or(message, |(_, cause)| cause)
                .to_owned();
            return CantonError::new(Code::FailedPrecondition, id, cause).into();
        }
    }
    CantonError::new(
        Code::Unavailable,
        "SYNC_SERVICE_FAILED_SYNCHRONIZER_CONNECTION",
        format!("subscription failed: {message}"),
    )
    .into()
}

/// A refusal the sequencer sent back, with its Canton id and code kept.
fn canton_error_from_status(status: &tonic::Status) -> CallError {
    let message = status.message();
    let known = crate::topology::ids::ALL.iter().chain(&[
        "INVALID_ARGUMENT",
        crate::sequencer::DISABLED_MEMBER,
        "SEQUENCER_OVERLOADED",
    ]);
    for id in known {
        if let Some(rest) = message.strip_prefix(id)
            && let Some((_, cause)) = rest.split_once("): ")
        {
            return CantonError::new(status.code(), id, cause).into();
        }
    }
    CantonError::new(
        Code::Unavailable,
        "SYNC_SERVICE_FAILED_SYNCHRONIZER_CONNECTION",
        format!("the sequencer refused: {message}"),
    )
    .into()
}

impl Member {
    pub fn new(
        db: Arc<Db>,
        faults: Arc<Faults>,
        member: String,
        is_participant: bool,
        peers: Vec<String>,
        rate: f64,
    ) -> Arc<Self> {
        let workload = Arc::new(WorkloadRate::default());
        workload.set(rate);
        Arc::new(Self {
            db,
            faults,
            member,
            is_participant,
            peers,
            link: Mutex::new(None),
            connections: AtomicU64::new(0),
            processors: std::sync::Mutex::new(Vec::new()),
            workload,
        })
    }

    async fn cursor(&self, physical: &str) -> Result<(i64, i64), CallError> {
        let mut guard = self.db.lock().await?;
        let row = guard
            .client()?
            .query_opt(
                "SELECT last_counter, last_ts_micros FROM member_cursor WHERE physical_synchronizer_id = $1",
                &[&physical],
            )
            .await
            .map_err(|e| Error::db("reading the member cursor", e))?;
        Ok(row.map_or((-1, 0), |row| (row.get(0), row.get(1))))
    }

    async fn subscribe(
        &self,
        link: &SequencerLink,
        handshake: &Handshake,
    ) -> Result<tonic::Streaming<SequencedEvent>, CallError> {
        let (last_counter, last_timestamp_micros) =
            self.cursor(&handshake.physical_synchronizer_id).await?;
        let mut client = link.client.clone();
        client
            .subscribe(SubscribeRequest {
                member: self.member.clone(),
                last_counter,
                last_timestamp_micros,
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| canton_error_of(&status))
    }

    /// Subscribes (failing with ForkHappened or a pruning error at once), then processes the
    /// stream in the background, resubscribing when it breaks, until `stop`.
    pub async fn connect(
        self: &Arc<Self>,
        link: SequencerLink,
        handshake: Handshake,
        stop: CancellationToken,
    ) -> Result<Arc<AtomicBool>, CallError> {
        let stream = self.subscribe(&link, &handshake).await?;
        self.store_topology(&handshake.topology).await?;
        let serial = self.connections.fetch_add(1, Ordering::SeqCst);
        *self.link.lock().await = Some((link.clone(), handshake.clone(), serial));
        let healthy = Arc::new(AtomicBool::new(true));
        let member = Arc::clone(self);
        let flag = Arc::clone(&healthy);
        let processor = tokio::spawn(async move {
            member
                .process(link, handshake, stream, flag, stop.clone())
                .await;
            let mut current = member.link.lock().await;
            if stop.is_cancelled() && current.as_ref().is_some_and(|(_, _, own)| *own == serial) {
                *current = None;
            }
        });
        if let Ok(mut processors) = self.processors.lock() {
            processors.retain(|p| !p.is_finished());
            processors.push(processor);
        }
        Ok(healthy)
    }

    /// Waits until the event processors of stopped connections have ended (each finishes the
    /// event it is applying first), then forgets the link. Connections must have been stopped
    /// before; a processor still running after `patience` is aborted.
    pub async fn halt(&self, patience: Duration) {
        let processors: Vec<tokio::task::JoinHandle<()>> = self
            .processors
            .lock()
            .map(|mut p| p.drain(..).collect())
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + patience;
        for mut processor in processors {
            if tokio::time::timeout_at(deadline, &mut processor)
                .await
                .is_err()
            {
                tracing::warn!("an event processor did not stop in time; aborting it");
                processor.abort();
                let _ = processor.await;
            }
        }
        *self.link.lock().await = None;
    }

    /// Keeps the synchronizer's topology as the sequencer sent it in the node's own database.
    async fn store_topology(&self, records: &[TopologyRecord]) -> Result<(), CallError> {
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a topology update", e))?;
        for record in records {
            crate::topology::upsert(&tx, record).await?;
        }
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a topology update", e))?;
        Ok(())
    }

    async fn process(
        &self,
        link: SequencerLink,
        handshake: Handshake,
        mut stream: tonic::Streaming<SequencedEvent>,
        healthy: Arc<AtomicBool>,
        stop: CancellationToken,
    ) {
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return,
                next = stream.message() => next,
            };
            match next {
                Ok(Some(event)) => {
                    self.faults.wait_processing().await;
                    match self.apply(&handshake, &event).await {
                        Ok(outgoing) => {
                            healthy.store(true, Ordering::SeqCst);
                            for message in outgoing {
                                self.send(&link, message.recipients, &message.payload).await;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, counter = event.counter, "cannot apply an event; resubscribing");
                            healthy.store(false, Ordering::SeqCst);
                            stream =
                                match self.resubscribe(&link, &handshake, &healthy, &stop).await {
                                    Some(stream) => stream,
                                    None => return,
                                };
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    healthy.store(false, Ordering::SeqCst);
                    stream = match self.resubscribe(&link, &handshake, &healthy, &stop).await {
                        Some(stream) => stream,
                        None => return,
                    };
                }
            }
        }
    }

    async fn resubscribe(
        &self,
        link: &SequencerLink,
        handshake: &Handshake,
        healthy: &AtomicBool,
        stop: &CancellationToken,
    ) -> Option<tonic::Streaming<SequencedEvent>> {
        loop {
            tokio::select! {
                () = stop.cancelled() => return None,
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
            match self.subscribe(link, handshake).await {
                Ok(stream) => {
                    healthy.store(true, Ordering::SeqCst);
                    return Some(stream);
                }
                Err(CallError::Canton(e)) if e.code == Code::FailedPrecondition => {
                    tracing::error!(error = %e, "subscription refused");
                }
                Err(e) => tracing::debug!(error = %e, "sequencer not reachable, retrying"),
            }
        }
    }

    async fn send(&self, link: &SequencerLink, recipients: Vec<String>, payload: &Payload) {
        let Ok(bytes) = serde_json::to_vec(payload) else {
            return;
        };
        let mut client = link.client.clone();
        let request = SendRequest {
            sender: self.member.clone(),
            recipients,
            payload: bytes,
            message_id: uuid::Uuid::now_v7().to_string(),
        };
        if let Err(e) = client.send(request).await {
            tracing::debug!(error = %e, "submission failed");
        }
    }

    /// Sends through the current connection, if there is one.
    async fn send_current(&self, recipients: Vec<String>, payload: &Payload) -> bool {
        let link = self.link.lock().await.as_ref().map(|(l, _, _)| l.clone());
        match link {
            Some(link) => {
                self.send(&link, recipients, payload).await;
                true
            }
            None => false,
        }
    }

    /// Applies one event in one transaction with the cursor; returns what to send afterwards.
    async fn apply(
        &self,
        handshake: &Handshake,
        event: &SequencedEvent,
    ) -> Result<Vec<Outgoing>, CallError> {
        let physical = &handshake.physical_synchronizer_id;
        let mut outgoing = Vec::new();
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting to apply an event", e))?;
        let cursor = tx
            .query_opt(
                "SELECT last_counter, last_ts_micros FROM member_cursor WHERE physical_synchronizer_id = $1 FOR UPDATE",
                &[physical],
            )
            .await
            .map_err(|e| Error::db("reading the member cursor", e))?;
        let (last_counter, last_ts) = cursor.map_or((-1_i64, 0_i64), |r| (r.get(0), r.get(1)));
        if event.counter <= last_counter {
            return Ok(outgoing);
        }
        let ignored = tx
            .query_opt(
                "SELECT 1 FROM participant_ignored_event WHERE physical_synchronizer_id = $1 AND counter = $2",
                &[physical, &event.counter],
            )
            .await
            .map_err(|e| Error::db("reading ignored events", e))?
            .is_some();
        // An ignored event (repair) only moves the cursor past it.
        let payload: Option<Payload> = if ignored {
            None
        } else {
            serde_json::from_slice(&event.payload).ok()
        };
        if let Some(Payload::Topology { records }) = &payload {
            for encoded in records {
                let record = hex::decode(encoded)
                    .ok()
                    .and_then(|bytes| TopologyRecord::decode(bytes.as_slice()).ok());
                if let Some(record) = record {
                    crate::topology::upsert(&tx, &record).await?;
                }
            }
        }
        if self.is_participant && !ignored {
            let interval = handshake.reconciliation_interval_micros.max(1);
            let period_end = ((event.timestamp_micros - 1) / interval) * interval;
            if last_ts > 0 && period_end > (last_ts / interval) * interval {
                for peer in &self.peers {
                    let rows = tx
                        .query(
                            "SELECT contract_id FROM participant_contract
                             WHERE $1 = ANY(stakeholders) AND $2 = ANY(stakeholders) ORDER BY contract_id",
                            &[&self.member, peer],
                        )
                        .await
                        .map_err(|e| Error::db("reading the shared ACS", e))?;
                    let mut hash = Sha256::new();
                    for row in &rows {
                        let id: String = row.get(0);
                        hash.update(id.as_bytes());
                        hash.update(b"\n");
                    }
                    let own = hash.finalize().to_vec();
                    tx.execute(
                        "INSERT INTO acs_commitment (counter_participant, period_start_micros, period_end_micros, own)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (counter_participant, period_end_micros) DO UPDATE SET own = $4",
                        &[peer, &(period_end - interval), &period_end, &own],
                    )
                    .await
                    .map_err(|e| Error::db("storing a commitment", e))?;
                    outgoing.push(Outgoing {
                        recipients: vec![peer.clone()],
                        payload: Payload::Commitment {
                            period_start_micros: period_end - interval,
                            period_end_micros: period_end,
                            commitment: hex::encode(own),
                        },
                    });
                }
            }
            match payload {
                Some(Payload::Create {
                    contract_id,
                    stakeholders,
                }) if stakeholders.contains(&self.member) => {
                    let offset = next_offset(&tx, event.timestamp_micros).await?;
                    tx.execute(
                        "INSERT INTO participant_contract (contract_id, stakeholders, created_by, created_ts_micros, created_offset)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (contract_id) DO NOTHING",
                        &[&contract_id, &stakeholders, &event.sender, &event.timestamp_micros, &offset],
                    )
                    .await
                    .map_err(|e| Error::db("storing a contract", e))?;
                }
                Some(Payload::Archive {
                    contract_id,
                    stakeholders,
                }) if stakeholders.contains(&self.member) => {
                    let offset = next_offset(&tx, event.timestamp_micros).await?;
                    // Archived contracts are kept aside, so the ACS at an earlier offset can be
                    // exported.
                    tx.execute(
                        "WITH gone AS (DELETE FROM participant_contract WHERE contract_id = $1 RETURNING *)
                         INSERT INTO participant_archived_contract
                             (contract_id, stakeholders, created_by, created_ts_micros, created_offset, archived_offset)
                         SELECT contract_id, stakeholders, created_by, created_ts_micros, created_offset, $2 FROM gone
                         ON CONFLICT (contract_id) DO NOTHING",
                        &[&contract_id, &offset],
                    )
                    .await
                    .map_err(|e| Error::db("archiving a contract", e))?;
                }
                Some(Payload::Commitment {
                    period_start_micros,
                    period_end_micros,
                    commitment,
                }) => {
                    let received = hex::decode(&commitment).unwrap_or_default();
                    tx.execute(
                        "INSERT INTO acs_commitment (counter_participant, period_start_micros, period_end_micros, received)
                         VALUES ($1, $2, $3, $4)
                         ON CONFLICT (counter_participant, period_end_micros) DO UPDATE SET received = $4",
                        &[&event.sender, &period_start_micros, &period_end_micros, &received],
                    )
                    .await
                    .map_err(|e| Error::db("storing a received commitment", e))?;
                }
                _ => {}
            }
        }
        tx.execute(
            "INSERT INTO member_cursor (physical_synchronizer_id, last_counter, last_ts_micros) VALUES ($1, $2, $3)
             ON CONFLICT (physical_synchronizer_id) DO UPDATE SET last_counter = $2, last_ts_micros = $3",
            &[physical, &event.counter, &event.timestamp_micros],
        )
        .await
        .map_err(|e| Error::db("advancing the member cursor", e))?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing an event", e))?;
        Ok(outgoing)
    }

    /// Time proofs (so periods close without traffic) and, for participants, the workload.
    pub fn spawn_background(self: &Arc<Self>, shutdown: CancellationToken) {
        let member = Arc::clone(self);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                if !member.faults.processing_stopped() {
                    member
                        .send_current(vec![member.member.clone()], &Payload::Tick)
                        .await;
                }
            }
        });
        if !self.is_participant {
            return;
        }
        let member = Arc::clone(self);
        tokio::spawn(async move {
            let mut round: usize = 0;
            loop {
                let rate = member.workload.get();
                let pause = if rate > 0.0 {
                    Duration::from_secs_f64(1.0 / rate)
                } else {
                    Duration::from_millis(200)
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                if rate <= 0.0 || member.faults.processing_stopped() {
                    continue;
                }
                round += 1;
                if let Err(e) = member.workload_step(round).await {
                    tracing::debug!(error = %e, "workload step failed");
                }
            }
        });
    }

    /// Creates a contract shared with the next peer, or archives the oldest own one once ten
    /// are active.
    async fn workload_step(&self, round: usize) -> Result<(), CallError> {
        let oldest = {
            let mut guard = self.db.lock().await?;
            let client = guard.client()?;
            let count: i64 = client
                .query_one(
                    "SELECT count(*) FROM participant_contract WHERE created_by = $1",
                    &[&self.member],
                )
                .await
                .map_err(|e| Error::db("counting own contracts", e))?
                .get(0);
            if count >= 10 {
                client
                    .query_opt(
                        "SELECT contract_id, stakeholders FROM participant_contract WHERE created_by = $1
                         ORDER BY created_offset LIMIT 1",
                        &[&self.member],
                    )
                    .await
                    .map_err(|e| Error::db("picking a contract to archive", e))?
                    .map(|row| (row.get::<_, String>(0), row.get::<_, Vec<String>>(1)))
            } else {
                None
            }
        };
        let (recipients, payload) = match oldest {
            Some((contract_id, stakeholders)) => (
                stakeholders.clone(),
                Payload::Archive {
                    contract_id,
                    stakeholders,
                },
            ),
            None => {
                let mut stakeholders = vec![self.member.clone()];
                if !self.peers.is_empty() {
                    stakeholders.push(self.peers[round % self.peers.len()].clone());
                }
                // Parties this participant hosts take turns as an extra stakeholder, so party
                // exports have contracts to carry.
                let parties = self.hosted_parties().await?;
                if !parties.is_empty() {
                    stakeholders.push(parties[round % parties.len()].clone());
                }
                (
                    stakeholders.clone(),
                    Payload::Create {
                        contract_id: format!("00{}", uuid::Uuid::now_v7().simple()),
                        stakeholders,
                    },
                )
            }
        };
        self.send_current(recipients, &payload).await;
        Ok(())
    }

    /// Parties whose current party-to-participant mapping has this participant as a hosting
    /// participant (onboarded), sorted.
    pub async fn hosted_parties(&self) -> Result<Vec<String>, CallError> {
        use proto_canton::protocol::v30::topology_mapping::Mapping;
        let uid = self.member.strip_prefix("PAR::").unwrap_or(&self.member);
        let records = {
            let mut guard = self.db.lock().await?;
            crate::topology::query(
                guard.client()?,
                &crate::topology::Query {
                    mapping_code: "party_to_participant",
                    ..Default::default()
                },
            )
            .await?
        };
        let mut parties = Vec::new();
        for record in &records {
            if let Some(Mapping::PartyToParticipant(mapping)) =
                crate::topology::mapping_of(record)?.mapping
                && record.operation == crate::topology::ADD_REPLACE
                && mapping
                    .participants
                    .iter()
                    .any(|p| p.participant_uid == uid && p.onboarding.is_none())
            {
                parties.push(mapping.party);
            }
        }
        parties.sort();
        Ok(parties)
    }

    /// Whether the node has a live sequencer connection.
    pub async fn is_connected(&self) -> bool {
        self.link.lock().await.is_some()
    }

    /// The synchronizer time this member has processed up to (µs), 0 before any event.
    pub async fn synchronizer_time(&self) -> Result<i64, CallError> {
        let mut guard = self.db.lock().await?;
        let row = guard
            .client()?
            .query_one(
                "SELECT coalesce(max(last_ts_micros), 0) FROM member_cursor",
                &[],
            )
            .await
            .map_err(|e| Error::db("reading the synchronizer time", e))?;
        Ok(row.get(0))
    }

    /// Sends a topology change to the sequencer and waits until this node has applied the
    /// outcome (so a read right after the call sees it).
    pub async fn submit_topology(
        &self,
        mut request: crate::wire::sequencer::SubmitTopologyRequest,
    ) -> Result<TopologyRecord, CallError> {
        let link = self.link.lock().await.as_ref().map(|(l, _, _)| l.clone());
        let Some(link) = link else {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                "SYNC_SERVICE_SYNCHRONIZER_DISCONNECTED",
                "the node is not connected to the synchronizer; connect it before changing its topology",
            )
            .into());
        };
        request.sender = self.member.clone();
        let mut client = link.client.clone();
        let record = client
            .submit_topology(request)
            .await
            .map_err(|status| canton_error_from_status(&status))?
            .into_inner()
            .record
            .ok_or_else(|| {
                CallError::from(Error::new(
                    crate::error::ErrorKind::Io,
                    "the sequencer answered a topology change without its record",
                ))
            })?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let applied = {
                let mut guard = self.db.lock().await?;
                guard
                    .client()?
                    .query_opt(
                        "SELECT 1 FROM topology_transaction WHERE store = $1 AND transaction_hash = $2 AND proposal = $3",
                        &[&record.store, &record.transaction_hash, &record.proposal],
                    )
                    .await
                    .map_err(|e| Error::db("reading the topology store", e))?
                    .is_some()
            };
            if applied || tokio::time::Instant::now() >= deadline {
                return Ok(record);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A mediator's connection: handshake and subscribe, retrying while the sequencer is
    /// unreachable or refuses, until shutdown.
    pub fn spawn_standalone(
        self: &Arc<Self>,
        url: String,
        protocol_version: i32,
        shutdown: CancellationToken,
        learned: Arc<tokio::sync::RwLock<Option<Handshake>>>,
    ) {
        let member = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if let Ok((handshake, link)) =
                    crate::sequencer_client::handshake(&url, &member.member, protocol_version).await
                {
                    *learned.write().await = Some(handshake.clone());
                    let stop = shutdown.child_token();
                    match member.connect(link, handshake, stop).await {
                        Ok(_) => return,
                        Err(e) => tracing::warn!(error = %e, "subscription refused"),
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        });
    }
}

async fn next_offset(
    tx: &tokio_postgres::Transaction<'_>,
    record_time: i64,
) -> Result<i64, CallError> {
    let offset: i64 = tx
        .query_one(
            "UPDATE participant_ledger SET ledger_end = ledger_end + 1 RETURNING ledger_end",
            &[],
        )
        .await
        .map_err(|e| Error::db("advancing the ledger end", e))?
        .get(0);
    tx.execute(
        "INSERT INTO participant_offset (ledger_offset, record_time_micros) VALUES ($1, $2)",
        &[&offset, &record_time],
    )
    .await
    .map_err(|e| Error::db("recording an offset", e))?;
    Ok(offset)
}

/// Connects participants' synchronizer connections to their event processing.
pub struct MemberDriver(pub Arc<Member>);

impl ConnectionDriver for MemberDriver {
    fn start(
        &self,
        _alias: &str,
        link: SequencerLink,
        handshake: Handshake,
        stop: CancellationToken,
    ) -> futures::future::BoxFuture<'static, Result<Arc<AtomicBool>, CallError>> {
        let member = Arc::clone(&self.0);
        Box::pin(async move { member.connect(link, handshake, stop).await })
    }
}
