//! A participant admin API served in-process by tonic with the generated servers: status with a
//! chosen version, both replication services (recording which one was called), party ACS import
//! for the chosen line, and a connectivity service whose answers depend on the alias.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use canton_client::{CantonClient, ClientConfig, NodeKind};
use proto_canton::admin::health::v30::{NotInitialized, Status as CommonStatus};
use proto_canton::admin::participant::v30 as participant;
use proto_canton::line_3_5::admin::participant::v30 as participant_3_5;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct FakeNode {
    /// The version the status service reports; None answers "not initialised" as 3.4 does.
    pub version: Option<String>,
    /// Calls received, e.g. `3.4 SetPassive`.
    pub calls: Arc<Mutex<Vec<String>>>,
    /// When set, the connectivity service demands `authorization: Bearer <token>`.
    pub required_token: Option<String>,
}

impl FakeNode {
    pub fn new(version: Option<&str>) -> Self {
        Self {
            version: version.map(str::to_owned),
            calls: Arc::default(),
            required_token: None,
        }
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Serves on a fresh 127.0.0.1 port until the returned guard is dropped.
    pub async fn serve(&self) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let required_token = self.required_token.clone();
        let auth = move |request: Request<()>| -> Result<Request<()>, Status> {
            let Some(token) = &required_token else {
                return Ok(request);
            };
            let presented = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok());
            if presented == Some(format!("Bearer {token}").as_str()) {
                Ok(request)
            } else {
                Err(Status::unauthenticated("missing or wrong bearer token"))
            }
        };
        let mut router = tonic::transport::Server::builder()
            .add_service(
                participant::participant_status_service_server::ParticipantStatusServiceServer::new(
                    self.clone(),
                ),
            )
            .add_service(
                participant::enterprise_participant_replication_service_server::EnterpriseParticipantReplicationServiceServer::new(
                    self.clone(),
                ),
            )
            .add_service(
                participant_3_5::participant_replication_service_server::ParticipantReplicationServiceServer::new(
                    self.clone(),
                ),
            )
            .add_service(
                participant::synchronizer_connectivity_service_server::SynchronizerConnectivityServiceServer::with_interceptor(
                    self.clone(),
                    auth,
                ),
            );
        router = router
            .add_service(
                proto_canton::topology::admin::v30::topology_manager_read_service_server::TopologyManagerReadServiceServer::new(
                    self.clone(),
                ),
            )
            .add_service(
                participant::participant_inspection_service_server::ParticipantInspectionServiceServer::new(
                    self.clone(),
                ),
            );
        router = if self
            .version
            .as_deref()
            .is_some_and(|v| v.starts_with("3.5"))
        {
            router.add_service(
                participant_3_5::party_management_service_server::PartyManagementServiceServer::new(
                    self.clone(),
                ),
            )
        } else {
            router.add_service(
                participant::party_management_service_server::PartyManagementServiceServer::new(
                    self.clone(),
                ),
            )
        };
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Served {
            address,
            _stop: stop,
        }
    }
}

pub struct Served {
    pub address: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Served {
    pub fn client(&self) -> CantonClient {
        CantonClient::new(self.config()).unwrap()
    }

    pub fn config(&self) -> ClientConfig {
        ClientConfig::new(
            "p1",
            NodeKind::Participant,
            format!("http://{}", self.address),
        )
    }
}

#[tonic::async_trait]
impl participant::participant_status_service_server::ParticipantStatusService for FakeNode {
    async fn participant_status(
        &self,
        _request: Request<participant::ParticipantStatusRequest>,
    ) -> Result<Response<participant::ParticipantStatusResponse>, Status> {
        use participant::participant_status_response::{Kind, ParticipantStatusResponseStatus};
        self.record("ParticipantStatus".into());
        let kind = match &self.version {
            Some(version) => Kind::Status(ParticipantStatusResponseStatus {
                common_status: Some(CommonStatus {
                    uid: "p1::1220".into(),
                    version: version.clone(),
                    active: true,
                    ..Default::default()
                }),
                connected_synchronizers: vec![participant::ConnectedSynchronizer {
                    physical_synchronizer_id: "global::1220::34-0".into(),
                    health: participant::connected_synchronizer::Health::Healthy as i32,
                }],
                active: true,
                supported_protocol_versions: vec![34],
            }),
            None => Kind::NotInitialized(NotInitialized {
                active: true,
                waiting_for_external_input: 1,
            }),
        };
        Ok(Response::new(participant::ParticipantStatusResponse {
            kind: Some(kind),
        }))
    }
}

#[tonic::async_trait]
impl participant::enterprise_participant_replication_service_server::EnterpriseParticipantReplicationService
    for FakeNode
{
    async fn set_passive(
        &self,
        _request: Request<participant::SetPassiveRequest>,
    ) -> Result<Response<participant::SetPassiveResponse>, Status> {
        self.record("EnterpriseParticipantReplicationService/SetPassive".into());
        Ok(Response::new(participant::SetPassiveResponse {}))
    }
}

#[tonic::async_trait]
impl participant_3_5::participant_replication_service_server::ParticipantReplicationService
    for FakeNode
{
    async fn set_passive(
        &self,
        _request: Request<participant_3_5::SetPassiveRequest>,
    ) -> Result<Response<participant_3_5::SetPassiveResponse>, Status> {
        self.record("ParticipantReplicationService/SetPassive".into());
        Ok(Response::new(participant_3_5::SetPassiveResponse {}))
    }
}

#[tonic::async_trait]
impl participant::party_management_service_server::PartyManagementService for FakeNode {
    async fn import_party_acs(
        &self,
        request: Request<tonic::Streaming<participant::ImportPartyAcsRequest>>,
    ) -> Result<Response<participant::ImportPartyAcsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.next().await {
            messages.push(message?);
        }
        let first = messages.first().cloned().unwrap_or_default();
        let bytes: Vec<u8> = messages
            .iter()
            .flat_map(|m| m.acs_snapshot.clone())
            .collect();
        self.record(format!(
            "3.4 ImportPartyAcs prefix={} mode={} bytes={bytes:?}",
            first.workflow_id_prefix, first.contract_import_mode
        ));
        Ok(Response::new(participant::ImportPartyAcsResponse {}))
    }
}

#[tonic::async_trait]
impl participant_3_5::party_management_service_server::PartyManagementService for FakeNode {
    async fn import_party_acs(
        &self,
        request: Request<tonic::Streaming<participant_3_5::ImportPartyAcsRequest>>,
    ) -> Result<Response<participant_3_5::ImportPartyAcsResponse>, Status> {
        let mut stream = request.into_inner();
        let mut messages = Vec::new();
        while let Some(message) = stream.next().await {
            messages.push(message?);
        }
        let first = messages.first().cloned().unwrap_or_default();
        let bytes: Vec<u8> = messages
            .iter()
            .flat_map(|m| m.acs_snapshot.clone())
            .collect();
        self.record(format!(
            "3.5 ImportPartyAcs synchronizer={:?} prefix={:?} mode={:?} party={:?} bytes={bytes:?}",
            first.synchronizer_id,
            first.workflow_id_prefix,
            first.contract_import_mode,
            first.party_id
        ));
        Ok(Response::new(participant_3_5::ImportPartyAcsResponse {}))
    }
}

#[tonic::async_trait]
impl participant::synchronizer_connectivity_service_server::SynchronizerConnectivityService
    for FakeNode
{
    async fn disconnect_synchronizer(
        &self,
        request: Request<participant::DisconnectSynchronizerRequest>,
    ) -> Result<Response<participant::DisconnectSynchronizerResponse>, Status> {
        let alias = request.into_inner().synchronizer_alias;
        self.record(format!("DisconnectSynchronizer {alias}"));
        match alias.as_str() {
            "missing" => Err(Status::not_found("unknown synchronizer alias")),
            "busy" => Err(Status::failed_precondition("repair in progress")),
            "bad" => Err(Status::invalid_argument("alias is not valid")),
            "down" => Err(Status::unavailable("sequencer not reachable")),
            "slow" => std::future::pending().await,
            _ => Ok(Response::new(
                participant::DisconnectSynchronizerResponse {},
            )),
        }
    }

    async fn list_registered_synchronizers(
        &self,
        _request: Request<participant::ListRegisteredSynchronizersRequest>,
    ) -> Result<Response<participant::ListRegisteredSynchronizersResponse>, Status> {
        let config = participant::SynchronizerConnectionConfig {
            synchronizer_alias: "global".into(),
            manual_connect: false,
            priority: 7,
            initialize_from_trusted_synchronizer: true,
            ..Default::default()
        };
        Ok(Response::new(
            participant::ListRegisteredSynchronizersResponse {
                results: vec![
                    participant::list_registered_synchronizers_response::Result {
                        config: Some(config),
                        connected: true,
                        physical_synchronizer_id: Some("global::1220::34-0".into()),
                    },
                ],
            },
        ))
    }

    async fn modify_synchronizer(
        &self,
        request: Request<participant::ModifySynchronizerRequest>,
    ) -> Result<Response<participant::ModifySynchronizerResponse>, Status> {
        let request = request.into_inner();
        let config = request.new_config.unwrap_or_default();
        self.record(format!(
            "ModifySynchronizer id={:?} alias={} manual={} priority={} trusted={} validation={}",
            request.physical_synchronizer_id,
            config.synchronizer_alias,
            config.manual_connect,
            config.priority,
            config.initialize_from_trusted_synchronizer,
            request.sequencer_connection_validation
        ));
        Ok(Response::new(participant::ModifySynchronizerResponse {}))
    }
}

#[tonic::async_trait]
impl proto_canton::topology::admin::v30::topology_manager_read_service_server::TopologyManagerReadService
    for FakeNode
{
    async fn list_synchronizer_parameters_state(
        &self,
        request: Request<proto_canton::topology::admin::v30::ListSynchronizerParametersStateRequest>,
    ) -> Result<Response<proto_canton::topology::admin::v30::ListSynchronizerParametersStateResponse>, Status>
    {
        use proto_canton::topology::admin::v30 as topology;
        let request = request.into_inner();
        let query = request.base_query.unwrap_or_default();
        let store = match query.store.and_then(|store| store.store) {
            Some(topology::store_id::Store::Synchronizer(synchronizer)) => format!("{:?}", synchronizer.kind),
            other => format!("{other:?}"),
        };
        self.record(format!(
            "ListSynchronizerParametersState store={store} head={} filter={}",
            matches!(query.time_query, Some(topology::base_query::TimeQuery::HeadState(()))),
            request.filter_synchronizer_id
        ));
        let seconds = |seconds| Some(prost_types::Duration { seconds, nanos: 0 });
        Ok(Response::new(topology::ListSynchronizerParametersStateResponse {
            results: vec![topology::list_synchronizer_parameters_state_response::Result {
                context: Some(topology::BaseResult {
                    serial: 2,
                    valid_from: Some(prost_types::Timestamp { seconds: 100, nanos: 0 }),
                    ..Default::default()
                }),
                item: Some(proto_canton::protocol::v30::DynamicSynchronizerParameters {
                    ledger_time_record_time_tolerance: seconds(60),
                    mediator_reaction_timeout: seconds(30),
                    ..Default::default()
                }),
            }],
        }))
    }
}

#[tonic::async_trait]
impl participant::participant_inspection_service_server::ParticipantInspectionService for FakeNode {
    async fn lookup_received_acs_commitments(
        &self,
        request: Request<participant::LookupReceivedAcsCommitmentsRequest>,
    ) -> Result<Response<participant::LookupReceivedAcsCommitmentsResponse>, Status> {
        let request = request.into_inner();
        self.record(format!(
            "LookupReceivedAcsCommitments synchronizer={} states={:?}",
            request.time_ranges[0].synchronizer_id, request.commitment_state
        ));
        let tick = |seconds| Some(prost_types::Timestamp { seconds, nanos: 0 });
        Ok(Response::new(
            participant::LookupReceivedAcsCommitmentsResponse {
                received: vec![participant::ReceivedAcsCommitmentPerSynchronizer {
                    synchronizer_id: "global::1220".into(),
                    received: vec![participant::ReceivedAcsCommitment {
                        interval: Some(participant::Interval {
                            start_tick_exclusive: tick(60),
                            end_tick_inclusive: tick(120),
                        }),
                        origin_counter_participant_uid: "p2::1220".into(),
                        received_commitment: None,
                        own_commitment: None,
                        state: participant::ReceivedCommitmentState::Match as i32,
                    }],
                }],
            },
        ))
    }
}
