//! Participant party management (`PartyManagementService`: offline party replication) and the
//! repair service (`ParticipantRepairService`; its changes only with repair commands enabled).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::participant_repair_service_server::{
    ParticipantRepairService, ParticipantRepairServiceServer,
};
use proto_canton::admin::participant::v30::party_management_service_server::{
    PartyManagementService, PartyManagementServiceServer,
};
use proto_canton::protocol::v30 as protocol;
use proto_canton::protocol::v30::topology_mapping::Mapping;
use tonic::{Code, Request, Response, Status, Streaming};

use super::common::{Context, logged, missing, timestamp_micros, timestamp_of_micros};
use crate::acs;
use crate::connectivity::Connectivity;
use crate::error::{CallError, CantonError, Error};
use crate::member::Member;
use crate::topology;

const PARTY: &str = "/com.digitalasset.canton.admin.participant.v30.PartyManagementService/";
const REPAIR: &str = "/com.digitalasset.canton.admin.participant.v30.ParticipantRepairService/";

/// Canton's refusal ids of these services (status code in the constructor).
pub mod ids {
    pub const MUST_BE_OFFLINE: &str = "SYNC_SERVICE_SYNCHRONIZERS_MUST_BE_OFFLINE";
    pub const INVALID_ARGUMENT: &str = "INVALID_ARGUMENT_PARTY_MANAGEMENT_ERROR";
    pub const INVALID_STATE: &str = "INVALID_STATE_PARTY_MANAGEMENT_ERROR";
    pub const INVALID_TIMESTAMP: &str = "INVALID_TIMESTAMP_PARTY_MANAGEMENT_ERROR";
    pub const PRUNED: &str = "PARTICIPANT_PRUNED_DATA_ACCESSED";
    pub const OFFSET_OUT_OF_RANGE: &str = "OFFSET_OUT_OF_RANGE";
    pub const IGNORE_EVENTS: &str = "REPAIR_IGNORE_EVENTS_ERROR";
    /// Canton gates repair commands in its console; the sim refuses them on the wire.
    pub const REPAIR_DISABLED: &str = "REPAIR_COMMANDS_DISABLED";
}

const CHUNK: usize = 64 * 1024;

#[derive(Clone)]
pub struct PartyApi {
    context: Context,
    connectivity: Arc<Connectivity>,
    member: Arc<Member>,
}

/// The party management service and, when enabled, the repair service of a participant.
pub fn add_services(context: &Context, routes: tonic::service::Routes) -> tonic::service::Routes {
    let (Some(connectivity), Some(member)) = (context.connectivity.clone(), context.member.clone())
    else {
        return routes;
    };
    let api = PartyApi {
        context: Arc::clone(context),
        connectivity,
        member,
    };
    routes
        .add_service(PartyManagementServiceServer::new(api.clone()))
        .add_service(ParticipantRepairServiceServer::new(api))
}

fn invalid(cause: String) -> CallError {
    CantonError::new(Code::InvalidArgument, ids::INVALID_ARGUMENT, cause).into()
}

fn micros_of(duration: Option<&prost_types::Duration>) -> i64 {
    duration.map_or(0, |d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000)
}

impl PartyApi {
    /// Repair changes need `repair_commands_enabled` (Canton's `enable-repair-commands`).
    fn require_repair(&self, call: &str) -> Result<(), CallError> {
        if self.context.config.repair_commands_enabled {
            return Ok(());
        }
        Err(CantonError::new(
            Code::FailedPrecondition,
            ids::REPAIR_DISABLED,
            format!("{call} is a repair command and repair commands are not enabled on {}; set repair_commands_enabled", self.context.config.id),
        )
        .into())
    }

    fn uid(&self) -> String {
        self.context.config.uid()
    }

    /// Canton's repair and import operations need the participant off every synchronizer.
    async fn require_disconnected(&self, what: &str) -> Result<(), CallError> {
        let connected = self.connectivity.list_connected().await;
        if connected.is_empty() {
            return Ok(());
        }
        let aliases: Vec<String> = connected.into_iter().map(|c| c.alias).collect();
        Err(CantonError::new(
            Code::FailedPrecondition,
            ids::MUST_BE_OFFLINE,
            format!("{what} needs the participant disconnected, but it is connected to {aliases:?}; disconnect first"),
        )
        .into())
    }

    /// The logical synchronizer id (from a logical or physical id, or the single registered one
    /// when `given` is empty).
    async fn synchronizer(&self, given: &str) -> Result<String, CallError> {
        let registered = self.connectivity.list_registered().await?;
        for entry in &registered {
            if let (Some(id), Some(physical)) =
                (&entry.synchronizer_id, &entry.physical_synchronizer_id)
                && (given.is_empty() || given == id || given == physical)
            {
                return Ok(id.clone());
            }
        }
        Err(CantonError::new(
            Code::NotFound,
            crate::connectivity::ids::UNKNOWN_SYNCHRONIZER,
            format!("synchronizer {given:?} is not known to this participant"),
        )
        .into())
    }

    async fn ledger_end(&self) -> Result<i64, CallError> {
        let mut guard = self.context.db.lock().await?;
        let row = guard
            .client()?
            .query_one("SELECT ledger_end FROM participant_ledger", &[])
            .await
            .map_err(|e| Error::db("reading the ledger end", e))?;
        Ok(row.get(0))
    }

    /// The record time up to which the participant is pruned (0 when never pruned).
    async fn pruned_record_time(&self) -> Result<(i64, i64), CallError> {
        let mut guard = self.context.db.lock().await?;
        let row = guard
            .client()?
            .query_one(
                "SELECT p.pruned_up_to_inclusive,
                        coalesce((SELECT record_time_micros FROM participant_offset WHERE ledger_offset = p.pruned_up_to_inclusive), 0)
                 FROM participant_pruning p",
                &[],
            )
            .await
            .map_err(|e| Error::db("reading the pruning point", e))?;
        Ok((row.get(0), row.get(1)))
    }

    async fn offset_at(&self, at: i64) -> Result<i64, CallError> {
        let mut guard = self.context.db.lock().await?;
        let row = guard
            .client()?
            .query_one(
                "SELECT coalesce(max(ledger_offset), 0) FROM participant_offset WHERE record_time_micros <= $1",
                &[&at],
            )
            .await
            .map_err(|e| Error::db("looking up an offset", e))?;
        Ok(row.get(0))
    }

    async fn record_time_of(&self, offset: i64) -> Result<i64, CallError> {
        let mut guard = self.context.db.lock().await?;
        let row = guard
            .client()?
            .query_one(
                "SELECT coalesce((SELECT record_time_micros FROM participant_offset WHERE ledger_offset = $1), 0)",
                &[&offset],
            )
            .await
            .map_err(|e| Error::db("reading an offset's record time", e))?;
        Ok(row.get(0))
    }

    /// The highest offset whose record time is at or before `at` (GetHighestOffsetByTimestamp).
    pub async fn highest_offset(&self, at: i64, force: bool) -> Result<i64, CallError> {
        let (pruned_offset, pruned_time) = self.pruned_record_time().await?;
        if pruned_offset > 0 && at < pruned_time {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                ids::PRUNED,
                format!("the participant is pruned up to offset {pruned_offset} (record time {pruned_time} µs), after the requested time {at} µs"),
            )
            .into());
        }
        let seen = self.member.synchronizer_time().await?;
        if at > seen {
            if force {
                return self.ledger_end().await;
            }
            return Err(CantonError::new(
                Code::OutOfRange,
                ids::INVALID_TIMESTAMP,
                format!("the participant has processed the synchronizer up to {seen} µs, not yet up to {at} µs; retry later"),
            )
            .into());
        }
        self.offset_at(at).await
    }

    /// ExportAcs: the ACS of `parties` at `offset`, as snapshot bytes.
    pub async fn export_at(
        &self,
        offset: i64,
        parties: &[String],
        synchronizer_id: &str,
    ) -> Result<Vec<u8>, CallError> {
        let ledger_end = self.ledger_end().await?;
        if offset <= 0 || offset > ledger_end {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                ids::OFFSET_OUT_OF_RANGE,
                format!("ledger_offset {offset} is not in 1..={ledger_end}; pick an offset up to the ledger end"),
            )
            .into());
        }
        let (pruned_offset, _) = self.pruned_record_time().await?;
        if offset <= pruned_offset {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                ids::PRUNED,
                format!("offset {offset} is pruned (pruned up to {pruned_offset})"),
            )
            .into());
        }
        let contracts = {
            let mut guard = self.context.db.lock().await?;
            acs::at_offset(guard.client()?, offset, parties, synchronizer_id).await?
        };
        acs::encode(&contracts)
    }

    /// The current party-to-participant mapping of `party` in this node's store.
    async fn party_mapping(
        &self,
        store: &str,
        party: &str,
    ) -> Result<
        Option<(
            crate::wire::sequencer::TopologyRecord,
            protocol::PartyToParticipant,
        )>,
        CallError,
    > {
        let record = {
            let mut guard = self.context.db.lock().await?;
            topology::current(guard.client()?, store, "party_to_participant", party).await?
        };
        let Some(record) = record else {
            return Ok(None);
        };
        match topology::mapping_of(&record)?.mapping {
            Some(Mapping::PartyToParticipant(mapping))
                if record.operation == topology::ADD_REPLACE =>
            {
                Ok(Some((record, mapping)))
            }
            _ => Ok(None),
        }
    }

    /// The party's activation on `target`: the first fully authorized mapping after
    /// `begin_offset_exclusive` that hosts the party on the target (valid-from time).
    async fn activation(
        &self,
        store: &str,
        party: &str,
        target: &str,
        begin_offset_exclusive: i64,
    ) -> Result<Option<i64>, CallError> {
        let after = if begin_offset_exclusive > 0 {
            self.record_time_of(begin_offset_exclusive).await?
        } else {
            0
        };
        let history = {
            let mut guard = self.context.db.lock().await?;
            topology::changed_since(guard.client()?, store, "party_to_participant", party).await?
        };
        for record in history
            .iter()
            .filter(|r| !r.proposal && r.valid_from_micros > after)
        {
            if let Some(Mapping::PartyToParticipant(mapping)) =
                topology::mapping_of(record)?.mapping
                && mapping
                    .participants
                    .iter()
                    .any(|p| p.participant_uid == target)
            {
                return Ok(Some(record.valid_from_micros));
            }
        }
        Ok(None)
    }

    /// Waits (polling the node's own store) up to `timeout` for `probe` to find something.
    async fn wait_for<T, F, Fut>(
        &self,
        timeout: Duration,
        mut probe: F,
    ) -> Result<Option<T>, CallError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, CallError>>,
    {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(found) = probe().await? {
                return Ok(Some(found));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Imports snapshot contracts (one new offset for the whole import) and logs it, in one
    /// transaction. Contracts already active are left as they are.
    async fn import(
        &self,
        method: &str,
        bytes: &[u8],
        mode: i32,
        workflow_id_prefix: &str,
    ) -> Result<usize, CallError> {
        let mode = admin::ContractImportMode::try_from(mode)
            .ok()
            .filter(|m| *m != admin::ContractImportMode::Unspecified)
            .ok_or_else(|| {
                CallError::from(CantonError::new(
                    Code::InvalidArgument,
                    "INVALID_ARGUMENT",
                    format!("contract_import_mode {mode} is not set or unknown; use ACCEPT, VALIDATION or RECOMPUTATION"),
                ))
            })?;
        let contracts = acs::decode(bytes)?;
        if mode == admin::ContractImportMode::Validation {
            let known: Vec<String> = self
                .connectivity
                .list_registered()
                .await?
                .into_iter()
                .filter_map(|r| r.synchronizer_id)
                .collect();
            for contract in &contracts {
                let well_formed = contract.contract_id.len() == 34
                    && contract.contract_id.starts_with("00")
                    && contract.contract_id[2..]
                        .chars()
                        .all(|c| c.is_ascii_hexdigit());
                if !well_formed || !known.contains(&contract.synchronizer_id) {
                    return Err(CantonError::new(
                        Code::InvalidArgument,
                        "IMPORT_ACS_ERROR",
                        format!(
                            "contract {} does not validate (id format, or synchronizer {} not registered here); nothing was imported",
                            contract.contract_id, contract.synchronizer_id
                        ),
                    )
                    .into());
                }
            }
        }
        let record_time = self.member.synchronizer_time().await?;
        let mut guard = self.context.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting an ACS import", e))?;
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
        let mut imported = 0;
        for contract in &contracts {
            imported += tx
                .execute(
                    "INSERT INTO participant_contract (contract_id, stakeholders, created_by, created_ts_micros, created_offset)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (contract_id) DO NOTHING",
                    &[
                        &contract.contract_id,
                        &contract.stakeholders,
                        &contract.created_by,
                        &contract.created_ts_micros,
                        &offset,
                    ],
                )
                .await
                .map_err(|e| Error::db("importing a contract", e))?;
        }
        crate::db::log_action(
            &tx,
            method,
            &format!(
                "contracts={} imported={imported} mode={mode:?} workflow_id_prefix={workflow_id_prefix} offset={offset}",
                contracts.len()
            ),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing an ACS import", e))?;
        Ok(usize::try_from(imported).unwrap_or(0))
    }
}

/// Reads a client stream whose first message carries the settings and the rest the chunks.
async fn collect<T: Send + 'static>(
    mut stream: Streaming<T>,
    chunk: impl Fn(&T) -> &[u8],
) -> Result<(Option<T>, Vec<u8>), Status> {
    let mut first = None;
    let mut bytes = Vec::new();
    while let Some(message) = stream.next().await {
        let message = message?;
        bytes.extend_from_slice(chunk(&message));
        if first.is_none() {
            first = Some(message);
        }
    }
    Ok((first, bytes))
}

type ChunkStream<T> =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

fn stream_chunks<T: Send + 'static>(bytes: &[u8], wrap: fn(Vec<u8>) -> T) -> ChunkStream<T> {
    Box::pin(futures::stream::iter(
        acs::chunks(bytes, CHUNK)
            .into_iter()
            .map(move |c| Ok(wrap(c))),
    ))
}

#[tonic::async_trait]
impl PartyManagementService for PartyApi {
    async fn export_party_acs(
        &self,
        request: Request<admin::ExportPartyAcsRequest>,
    ) -> Result<Response<ChunkStream<admin::ExportPartyAcsResponse>>, Status> {
        let request = request.into_inner();
        let bytes: Result<Vec<u8>, CallError> = async {
            if request.party_id.is_empty() || request.target_participant_uid.is_empty() {
                return Err(invalid("party_id and target_participant_uid are required".to_owned()));
            }
            let store = self.synchronizer(&request.synchronizer_id).await?;
            let wait = request
                .wait_for_activation_timeout
                .as_ref()
                .map_or(Duration::from_secs(120), |d| {
                    Duration::from_micros(u64::try_from(micros_of(Some(d))).unwrap_or(0))
                });
            let activated = self
                .wait_for(wait, || {
                    self.activation(
                        &store,
                        &request.party_id,
                        &request.target_participant_uid,
                        request.begin_offset_exclusive,
                    )
                })
                .await?
                .ok_or_else(|| {
                    CallError::from(CantonError::new(
                        Code::FailedPrecondition,
                        ids::INVALID_STATE,
                        format!(
                            "party {} is not activated on {} after offset {}; authorize the party-to-participant change on both sides first",
                            request.party_id, request.target_participant_uid, request.begin_offset_exclusive
                        ),
                    ))
                })?;
            let offset = self.offset_at(activated).await?;
            self.export_at(offset.max(1), std::slice::from_ref(&request.party_id), &store)
                .await
        }
        .await;
        let bytes = bytes?;
        Ok(Response::new(stream_chunks(&bytes, |chunk| {
            admin::ExportPartyAcsResponse { chunk }
        })))
    }

    async fn import_party_acs(
        &self,
        request: Request<Streaming<admin::ImportPartyAcsRequest>>,
    ) -> Result<Response<admin::ImportPartyAcsResponse>, Status> {
        let (first, bytes) = collect(request.into_inner(), |m| m.acs_snapshot.as_slice()).await?;
        let first = first.unwrap_or_default();
        let method = format!("{PARTY}ImportPartyAcs");
        logged(
            &self.context,
            &method,
            format!("bytes={} mode={}", bytes.len(), first.contract_import_mode),
            async {
                self.require_disconnected("ImportPartyAcs").await?;
                self.import(
                    &method,
                    &bytes,
                    first.contract_import_mode,
                    &first.workflow_id_prefix,
                )
                .await?;
                Ok(admin::ImportPartyAcsResponse {})
            },
        )
        .await
    }

    async fn get_highest_offset_by_timestamp(
        &self,
        request: Request<admin::GetHighestOffsetByTimestampRequest>,
    ) -> Result<Response<admin::GetHighestOffsetByTimestampResponse>, Status> {
        let request = request.into_inner();
        let at =
            timestamp_micros(request.timestamp.as_ref(), "timestamp").map_err(CallError::from)?;
        self.synchronizer(&request.synchronizer_id).await?;
        let ledger_offset = self.highest_offset(at, request.force).await?;
        Ok(Response::new(admin::GetHighestOffsetByTimestampResponse {
            ledger_offset,
        }))
    }

    async fn clear_party_onboarding_flag(
        &self,
        request: Request<admin::ClearPartyOnboardingFlagRequest>,
    ) -> Result<Response<admin::ClearPartyOnboardingFlagResponse>, Status> {
        let request = request.into_inner();
        let method = format!("{PARTY}ClearPartyOnboardingFlag");
        logged(
            &self.context,
            &method,
            format!("party={}", request.party_id),
            async {
                if request.party_id.is_empty() {
                    return Err(invalid("party_id is required".to_owned()));
                }
                let store = self.synchronizer(&request.synchronizer_id).await?;
                let uid = self.uid();
                let Some((record, mapping)) = self.party_mapping(&store, &request.party_id).await?
                else {
                    return Err(CantonError::new(
                        Code::FailedPrecondition,
                        ids::INVALID_STATE,
                        format!(
                            "party {} has no party-to-participant mapping on {store}",
                            request.party_id
                        ),
                    )
                    .into());
                };
                let Some(hosting) = mapping
                    .participants
                    .iter()
                    .find(|p| p.participant_uid == uid)
                else {
                    return Err(CantonError::new(
                        Code::FailedPrecondition,
                        ids::INVALID_STATE,
                        format!("party {} is not hosted on {uid}", request.party_id),
                    )
                    .into());
                };
                if hosting.onboarding.is_none() {
                    return Ok(admin::ClearPartyOnboardingFlagResponse {
                        onboarded: true,
                        earliest_retry_timestamp: None,
                    });
                }
                let parameters = {
                    let mut guard = self.context.db.lock().await?;
                    topology::current_parameters(guard.client()?, &store).await?
                }
                .unwrap_or_default();
                // Safe once every request in flight at the onboarding has timed out.
                let decision_timeout = micros_of(parameters.confirmation_response_timeout.as_ref())
                    + micros_of(parameters.mediator_reaction_timeout.as_ref());
                let safe_at = record.valid_from_micros + decision_timeout;
                if self.member.synchronizer_time().await? < safe_at {
                    return Ok(admin::ClearPartyOnboardingFlagResponse {
                        onboarded: false,
                        earliest_retry_timestamp: Some(timestamp_of_micros(safe_at)),
                    });
                }
                let mut cleared = mapping.clone();
                for participant in &mut cleared.participants {
                    if participant.participant_uid == uid {
                        participant.onboarding = None;
                    }
                }
                self.member
                    .submit_topology(crate::wire::sequencer::SubmitTopologyRequest {
                        sender: String::new(),
                        operation: topology::ADD_REPLACE,
                        serial: record.serial + 1,
                        mapping: protocol::TopologyMapping {
                            mapping: Some(Mapping::PartyToParticipant(cleared)),
                        }
                        .encode_to_vec(),
                        signed_by: vec![self.context.config.fingerprint()],
                        must_fully_authorize: true,
                        force_flags: Vec::new(),
                    })
                    .await?;
                self.context
                    .db
                    .log_plain(
                        &method,
                        &format!("party={} cleared", request.party_id),
                        "OK",
                    )
                    .await?;
                Ok(admin::ClearPartyOnboardingFlagResponse {
                    onboarded: true,
                    earliest_retry_timestamp: None,
                })
            },
        )
        .await
    }
}

#[tonic::async_trait]
impl ParticipantRepairService for PartyApi {
    async fn export_acs(
        &self,
        request: Request<admin::ExportAcsRequest>,
    ) -> Result<Response<ChunkStream<admin::ExportAcsResponse>>, Status> {
        let request = request.into_inner();
        let store = self.synchronizer(&request.synchronizer_id).await?;
        let bytes = self
            .export_at(request.ledger_offset, &request.party_ids, &store)
            .await?;
        Ok(Response::new(stream_chunks(&bytes, |chunk| {
            admin::ExportAcsResponse { chunk }
        })))
    }

    async fn import_acs(
        &self,
        request: Request<Streaming<admin::ImportAcsRequest>>,
    ) -> Result<Response<admin::ImportAcsResponse>, Status> {
        let (first, bytes) = collect(request.into_inner(), |m| m.acs_snapshot.as_slice()).await?;
        let first = first.unwrap_or_default();
        let method = format!("{REPAIR}ImportAcs");
        logged(
            &self.context,
            &method,
            format!("bytes={}", bytes.len()),
            async {
                self.require_disconnected("ImportAcs").await?;
                self.import(
                    &method,
                    &bytes,
                    first.contract_import_mode,
                    &first.workflow_id_prefix,
                )
                .await?;
                Ok(admin::ImportAcsResponse {
                    contract_id_mappings: Default::default(),
                })
            },
        )
        .await
    }

    async fn migrate_synchronizer(
        &self,
        request: Request<admin::MigrateSynchronizerRequest>,
    ) -> Result<Response<admin::MigrateSynchronizerResponse>, Status> {
        let request = request.into_inner();
        let method = format!("{REPAIR}MigrateSynchronizer");
        let detail = format!(
            "source={} target={:?} force={}",
            request.source_synchronizer_alias,
            request
                .target_synchronizer_connection_config
                .as_ref()
                .map(|c| c.synchronizer_alias.clone()),
            request.force
        );
        logged(&self.context, &method, detail, async {
            let target = super::config_from_wire(
                request.target_synchronizer_connection_config,
                "target_synchronizer_connection_config",
            )?;
            self.require_repair("MigrateSynchronizer")?;
            self.require_disconnected("MigrateSynchronizer").await?;
            self.connectivity
                .migrate(&request.source_synchronizer_alias, target, &method)
                .await?;
            Ok(admin::MigrateSynchronizerResponse {})
        })
        .await
    }

    async fn ignore_events(
        &self,
        request: Request<admin::IgnoreEventsRequest>,
    ) -> Result<Response<admin::IgnoreEventsResponse>, Status> {
        let request = request.into_inner();
        self.ignore_range(IgnoreRange {
            physical: &request.physical_synchronizer_id,
            from: request.from_inclusive,
            to: request.to_inclusive,
            force: request.force,
            ignore: true,
        })
        .await
        .map(|_| Response::new(admin::IgnoreEventsResponse {}))
    }

    async fn unignore_events(
        &self,
        request: Request<admin::UnignoreEventsRequest>,
    ) -> Result<Response<admin::UnignoreEventsResponse>, Status> {
        let request = request.into_inner();
        self.ignore_range(IgnoreRange {
            physical: &request.physical_synchronizer_id,
            from: request.from_inclusive,
            to: request.to_inclusive,
            force: request.force,
            ignore: false,
        })
        .await
        .map(|_| Response::new(admin::UnignoreEventsResponse {}))
    }
}

/// What `IgnoreEvents` and `UnignoreEvents` ask: the same range, marked or unmarked.
struct IgnoreRange<'a> {
    physical: &'a str,
    from: i64,
    to: i64,
    force: bool,
    ignore: bool,
}

impl IgnoreRange<'_> {
    fn call(&self) -> &'static str {
        if self.ignore {
            "IgnoreEvents"
        } else {
            "UnignoreEvents"
        }
    }
}

impl PartyApi {
    /// One logged repair call over a range of sequencer counters.
    async fn ignore_range(&self, range: IgnoreRange<'_>) -> Result<Response<()>, Status> {
        let method = format!("{REPAIR}{}", range.call());
        let detail = format!(
            "synchronizer={} from={} to={} force={}",
            range.physical, range.from, range.to, range.force
        );
        logged(&self.context, &method, detail.clone(), async {
            self.change_ignored(
                &method,
                &detail,
                range.physical,
                range.from,
                range.to,
                range.force,
                range.ignore,
            )
            .await
        })
        .await
    }
}

impl PartyApi {
    /// Marks (or unmarks) sequencer counters as ignored; only events not processed yet, unless
    /// forced.
    #[allow(clippy::too_many_arguments)]
    async fn change_ignored(
        &self,
        method: &str,
        detail: &str,
        physical: &str,
        from: i64,
        to: i64,
        force: bool,
        ignore: bool,
    ) -> Result<(), CallError> {
        self.require_repair(if ignore {
            "IgnoreEvents"
        } else {
            "UnignoreEvents"
        })?;
        if physical.is_empty() {
            return Err(missing("physical_synchronizer_id").into());
        }
        if from < 0 || to < from {
            return Err(CantonError::new(
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
                format!("counters {from}..={to} are not a range"),
            )
            .into());
        }
        self.require_disconnected(if ignore {
            "IgnoreEvents"
        } else {
            "UnignoreEvents"
        })
        .await?;
        let mut guard = self.context.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting IgnoreEvents", e))?;
        let processed: i64 = tx
            .query_one(
                "SELECT coalesce((SELECT last_counter FROM member_cursor WHERE physical_synchronizer_id = $1), -1)",
                &[&physical],
            )
            .await
            .map_err(|e| Error::db("reading the member cursor", e))?
            .get(0);
        if from <= processed && !force {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                ids::IGNORE_EVENTS,
                format!("counters from {from} include processed events (up to {processed}); pass force to change them anyway"),
            )
            .into());
        }
        if ignore {
            tx.execute(
                "INSERT INTO participant_ignored_event (physical_synchronizer_id, counter)
                 SELECT $1, generate_series($2::bigint, $3::bigint) ON CONFLICT DO NOTHING",
                &[&physical, &from, &to],
            )
            .await
            .map_err(|e| Error::db("recording ignored events", e))?;
        } else {
            tx.execute(
                "DELETE FROM participant_ignored_event WHERE physical_synchronizer_id = $1 AND counter BETWEEN $2 AND $3",
                &[&physical, &from, &to],
            )
            .await
            .map_err(|e| Error::db("removing ignored events", e))?;
        }
        crate::db::log_action(&tx, method, detail, "OK").await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing IgnoreEvents", e))?;
        Ok(())
    }
}
