//! Participant APIs: synchronizer connectivity, status and pruning on the admin port; ledger
//! end and pruning on the ledger API port.

use std::sync::Arc;

use prost::Message;
use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::participant_status_service_server::{
    ParticipantStatusService, ParticipantStatusServiceServer,
};
use proto_canton::admin::participant::v30::pruning_service_server::{
    PruningService, PruningServiceServer,
};
use proto_canton::admin::participant::v30::synchronizer_connectivity_service_server::{
    SynchronizerConnectivityService, SynchronizerConnectivityServiceServer,
};
use proto_canton::admin::pruning::v30 as pruning;
use proto_canton::admin::sequencer::v30::sequencer_connection;
use proto_canton::ledger::v2 as ledger;
use proto_canton::ledger::v2::admin::participant_pruning_service_server::{
    ParticipantPruningService, ParticipantPruningServiceServer,
};
use proto_canton::ledger::v2::state_service_server::{StateService, StateServiceServer};
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};

use super::Apis;
use super::common::{Context, api_info, common_status, logged, missing, timestamp_micros};
use super::schedule;
use crate::connectivity::{ConnectionConfig, Connectivity, RegisterMode, Validation};
use crate::error::{CallError, CantonError, Error};

const CONNECTIVITY: &str =
    "/com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/";
const ADMIN_PRUNING: &str = "/com.digitalasset.canton.admin.participant.v30.PruningService/";
const LEDGER_PRUNING: &str = "/com.daml.ledger.api.v2.admin.ParticipantPruningService/";

pub fn routes(context: &Context) -> Apis {
    let Some(connectivity) = context.connectivity.clone() else {
        return Apis::default();
    };
    let api = ParticipantApi {
        context: Arc::clone(context),
        connectivity,
    };
    Apis {
        admin: Some(super::party::add_services(
            context,
            Routes::new(SynchronizerConnectivityServiceServer::new(api.clone()))
                .add_service(ParticipantStatusServiceServer::new(api.clone()))
                .add_service(
                    admin::enterprise_participant_replication_service_server::EnterpriseParticipantReplicationServiceServer::new(
                        api.clone(),
                    ),
                )
                .add_service(PruningServiceServer::new(api.clone()))
                .add_service(
                    admin::participant_inspection_service_server::ParticipantInspectionServiceServer::new(
                        super::inspection::InspectionApi {
                            context: Arc::clone(context),
                        },
                    ),
                )
                .add_service(super::topology::read_service(context))
                .add_service(api_info("admin-api")),
        )),
        ledger: Some(
            Routes::new(StateServiceServer::new(api.clone()))
                .add_service(ParticipantPruningServiceServer::new(api))
                .add_service(api_info("ledger-api")),
        ),
    }
}

#[derive(Clone)]
struct ParticipantApi {
    context: Context,
    connectivity: Arc<Connectivity>,
}

/// The parts of a wire config the sim acts on, keeping the whole message.
pub fn config_from_wire(
    config: Option<admin::SynchronizerConnectionConfig>,
    field: &str,
) -> Result<ConnectionConfig, CantonError> {
    let config = config.ok_or_else(|| missing(field))?;
    let sequencer_urls = config
        .sequencer_connections
        .iter()
        .flat_map(|c| &c.sequencer_connections)
        .filter_map(|c| {
            c.r#type
                .as_ref()
                .map(|sequencer_connection::Type::Grpc(grpc)| grpc.connections.clone())
        })
        .flatten()
        .collect();
    Ok(ConnectionConfig {
        alias: config.synchronizer_alias.clone(),
        sequencer_urls,
        manual_connect: config.manual_connect,
        priority: config.priority,
        physical_synchronizer_id: Some(config.physical_synchronizer_id.clone())
            .filter(|id| !id.is_empty()),
        encoded: config.encode_to_vec(),
    })
}

fn config_to_wire(config: &ConnectionConfig) -> admin::SynchronizerConnectionConfig {
    // The stored bytes are the config exactly as the last register/modify sent it.
    admin::SynchronizerConnectionConfig::decode(config.encoded.as_slice()).unwrap_or_else(|_| {
        admin::SynchronizerConnectionConfig {
            synchronizer_alias: config.alias.clone(),
            manual_connect: config.manual_connect,
            priority: config.priority,
            ..Default::default()
        }
    })
}

fn m(service: &str, call: &str) -> String {
    format!("{service}{call}")
}

#[tonic::async_trait]
impl SynchronizerConnectivityService for ParticipantApi {
    async fn connect_synchronizer(
        &self,
        request: Request<admin::ConnectSynchronizerRequest>,
    ) -> Result<Response<admin::ConnectSynchronizerResponse>, Status> {
        let request = request.into_inner();
        let detail = format!(
            "alias={:?}",
            request
                .config
                .as_ref()
                .map(|c| c.synchronizer_alias.clone())
        );
        logged(
            &self.context,
            &m(CONNECTIVITY, "ConnectSynchronizer"),
            detail,
            async {
                let validation = Validation::from_wire(request.sequencer_connection_validation)?;
                let config = config_from_wire(request.config, "config")?;
                let connected = self.connectivity.connect(config, validation).await?;
                Ok(admin::ConnectSynchronizerResponse {
                    connected_successfully: connected,
                })
            },
        )
        .await
    }

    async fn register_synchronizer(
        &self,
        request: Request<admin::RegisterSynchronizerRequest>,
    ) -> Result<Response<admin::RegisterSynchronizerResponse>, Status> {
        let request = request.into_inner();
        let detail = format!(
            "alias={:?}",
            request
                .config
                .as_ref()
                .map(|c| c.synchronizer_alias.clone())
        );
        logged(
            &self.context,
            &m(CONNECTIVITY, "RegisterSynchronizer"),
            detail,
            async {
                let validation = Validation::from_wire(request.sequencer_connection_validation)?;
                let mode = RegisterMode::from_wire(request.synchronizer_connection)?;
                let config = config_from_wire(request.config, "config")?;
                self.connectivity.register(config, mode, validation).await?;
                Ok(admin::RegisterSynchronizerResponse {})
            },
        )
        .await
    }

    async fn reconnect_synchronizers(
        &self,
        request: Request<admin::ReconnectSynchronizersRequest>,
    ) -> Result<Response<admin::ReconnectSynchronizersResponse>, Status> {
        let request = request.into_inner();
        let detail = format!("ignore_failures={}", request.ignore_failures);
        logged(
            &self.context,
            &m(CONNECTIVITY, "ReconnectSynchronizers"),
            detail,
            async {
                self.connectivity
                    .reconnect_all(request.ignore_failures)
                    .await?;
                Ok(admin::ReconnectSynchronizersResponse {})
            },
        )
        .await
    }

    async fn reconnect_synchronizer(
        &self,
        request: Request<admin::ReconnectSynchronizerRequest>,
    ) -> Result<Response<admin::ReconnectSynchronizerResponse>, Status> {
        let request = request.into_inner();
        let detail = format!(
            "alias={} retry={}",
            request.synchronizer_alias, request.retry
        );
        logged(
            &self.context,
            &m(CONNECTIVITY, "ReconnectSynchronizer"),
            detail,
            async {
                let connected = self
                    .connectivity
                    .reconnect(&request.synchronizer_alias, request.retry)
                    .await?;
                Ok(admin::ReconnectSynchronizerResponse {
                    connected_successfully: connected,
                })
            },
        )
        .await
    }

    async fn modify_synchronizer(
        &self,
        request: Request<admin::ModifySynchronizerRequest>,
    ) -> Result<Response<admin::ModifySynchronizerResponse>, Status> {
        let request = request.into_inner();
        let detail = format!(
            "alias={:?}",
            request
                .new_config
                .as_ref()
                .map(|c| c.synchronizer_alias.clone())
        );
        logged(
            &self.context,
            &m(CONNECTIVITY, "ModifySynchronizer"),
            detail,
            async {
                let validation = Validation::from_wire(request.sequencer_connection_validation)?;
                let config = config_from_wire(request.new_config, "new_config")?;
                self.connectivity
                    .modify(request.physical_synchronizer_id, config, validation)
                    .await?;
                Ok(admin::ModifySynchronizerResponse {})
            },
        )
        .await
    }

    async fn disconnect_synchronizer(
        &self,
        request: Request<admin::DisconnectSynchronizerRequest>,
    ) -> Result<Response<admin::DisconnectSynchronizerResponse>, Status> {
        let alias = request.into_inner().synchronizer_alias;
        logged(
            &self.context,
            &m(CONNECTIVITY, "DisconnectSynchronizer"),
            format!("alias={alias}"),
            async {
                self.connectivity.disconnect(&alias).await?;
                Ok(admin::DisconnectSynchronizerResponse {})
            },
        )
        .await
    }

    async fn disconnect_all_synchronizers(
        &self,
        _request: Request<admin::DisconnectAllSynchronizersRequest>,
    ) -> Result<Response<admin::DisconnectAllSynchronizersResponse>, Status> {
        logged(
            &self.context,
            &m(CONNECTIVITY, "DisconnectAllSynchronizers"),
            String::new(),
            async {
                self.connectivity.disconnect_all().await?;
                Ok(admin::DisconnectAllSynchronizersResponse {})
            },
        )
        .await
    }

    async fn logout(
        &self,
        request: Request<admin::LogoutRequest>,
    ) -> Result<Response<admin::LogoutResponse>, Status> {
        let alias = request.into_inner().synchronizer_alias;
        logged(
            &self.context,
            &m(CONNECTIVITY, "Logout"),
            format!("alias={alias}"),
            async {
                self.connectivity.logout(&alias).await?;
                Ok(admin::LogoutResponse {})
            },
        )
        .await
    }

    async fn list_connected_synchronizers(
        &self,
        _request: Request<admin::ListConnectedSynchronizersRequest>,
    ) -> Result<Response<admin::ListConnectedSynchronizersResponse>, Status> {
        let connected = self.connectivity.list_connected().await;
        Ok(Response::new(admin::ListConnectedSynchronizersResponse {
            connected_synchronizers: connected
                .into_iter()
                .map(|c| admin::list_connected_synchronizers_response::Result {
                    synchronizer_alias: c.alias,
                    synchronizer_id: c.synchronizer_id,
                    physical_synchronizer_id: c.physical_synchronizer_id,
                    healthy: c.healthy,
                })
                .collect(),
        }))
    }

    async fn list_registered_synchronizers(
        &self,
        _request: Request<admin::ListRegisteredSynchronizersRequest>,
    ) -> Result<Response<admin::ListRegisteredSynchronizersResponse>, Status> {
        let registered = self.connectivity.list_registered().await?;
        Ok(Response::new(admin::ListRegisteredSynchronizersResponse {
            results: registered
                .into_iter()
                .map(|r| admin::list_registered_synchronizers_response::Result {
                    config: Some(config_to_wire(&r.config)),
                    connected: r.connected,
                    physical_synchronizer_id: r.physical_synchronizer_id,
                })
                .collect(),
        }))
    }

    async fn get_synchronizer_id(
        &self,
        request: Request<admin::GetSynchronizerIdRequest>,
    ) -> Result<Response<admin::GetSynchronizerIdResponse>, Status> {
        let alias = request.into_inner().synchronizer_alias;
        let (synchronizer_id, physical_synchronizer_id) =
            self.connectivity.synchronizer_id(&alias).await?;
        Ok(Response::new(admin::GetSynchronizerIdResponse {
            synchronizer_id,
            physical_synchronizer_id,
        }))
    }
}

#[tonic::async_trait]
impl admin::enterprise_participant_replication_service_server::EnterpriseParticipantReplicationService
    for ParticipantApi
{
    async fn set_passive(
        &self,
        _request: Request<admin::SetPassiveRequest>,
    ) -> Result<Response<admin::SetPassiveResponse>, Status> {
        let method =
            "/com.digitalasset.canton.admin.participant.v30.EnterpriseParticipantReplicationService/SetPassive";
        logged(&self.context, method, String::new(), async {
            let Some(replication) = &self.context.replication else {
                return Err(CantonError::new(
                    Code::FailedPrecondition,
                    crate::ha::NO_PASSIVE_REPLICA,
                    format!(
                        "participant {} has no replicas; it stays active",
                        self.context.config.id
                    ),
                )
                .into());
            };
            let successor = replication.set_passive().await?;
            self.context
                .db
                .log_plain(method, &format!("successor={successor}"), "OK")
                .await?;
            Ok(admin::SetPassiveResponse {})
        })
        .await
    }
}

#[tonic::async_trait]
impl ParticipantStatusService for ParticipantApi {
    async fn participant_status(
        &self,
        _request: Request<admin::ParticipantStatusRequest>,
    ) -> Result<Response<admin::ParticipantStatusResponse>, Status> {
        use admin::connected_synchronizer::Health;
        let connected = self.connectivity.list_connected().await;
        let common = common_status(&self.context);
        Ok(Response::new(admin::ParticipantStatusResponse {
            kind: Some(admin::participant_status_response::Kind::Status(
                admin::participant_status_response::ParticipantStatusResponseStatus {
                    active: common.active,
                    common_status: Some(common),
                    connected_synchronizers: connected
                        .into_iter()
                        .map(|c| admin::ConnectedSynchronizer {
                            physical_synchronizer_id: c.physical_synchronizer_id,
                            health: if c.healthy {
                                Health::Healthy as i32
                            } else {
                                Health::Unhealthy as i32
                            },
                        })
                        .collect(),
                    supported_protocol_versions: vec![self.context.config.protocol_version],
                },
            )),
        }))
    }
}

impl ParticipantApi {
    async fn ledger_end(&self) -> Result<i64, CallError> {
        let mut guard = self.context.db.lock().await?;
        let row = guard
            .client()?
            .query_one("SELECT ledger_end FROM participant_ledger", &[])
            .await
            .map_err(|e| Error::db("reading the ledger end", e))?;
        Ok(row.get(0))
    }

    /// Prunes up to `offset` (inclusive): everything when `internally_only` is false, only
    /// Canton-internal stores otherwise.
    async fn prune(
        &self,
        method: &str,
        offset: i64,
        internally_only: bool,
    ) -> Result<(), CallError> {
        if offset <= 0 {
            return Err(CantonError::new(
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
                format!("prune_up_to must be a positive offset, got {offset}"),
            )
            .into());
        }
        let ledger_end = self.ledger_end().await?;
        if offset > ledger_end {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                "OFFSET_OUT_OF_RANGE",
                format!("prune_up_to {offset} is after the ledger end {ledger_end}; pick an offset at or before it"),
            )
            .into());
        }
        let mut guard = self.context.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a prune", e))?;
        let sql = if internally_only {
            "UPDATE participant_pruning SET internally_pruned_up_to_inclusive = GREATEST(internally_pruned_up_to_inclusive, $1)"
        } else {
            "UPDATE participant_pruning SET pruned_up_to_inclusive = GREATEST(pruned_up_to_inclusive, $1),
                 internally_pruned_up_to_inclusive = GREATEST(internally_pruned_up_to_inclusive, $1)"
        };
        tx.execute(sql, &[&offset])
            .await
            .map_err(|e| Error::db("recording the pruned offset", e))?;
        crate::db::log_action(&tx, method, &format!("prune_up_to={offset}"), "OK").await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a prune", e))?;
        Ok(())
    }
}

#[tonic::async_trait]
impl PruningService for ParticipantApi {
    async fn prune(
        &self,
        request: Request<admin::PruneRequest>,
    ) -> Result<Response<admin::PruneResponse>, Status> {
        let offset = request.into_inner().prune_up_to;
        let method = m(ADMIN_PRUNING, "Prune");
        logged(
            &self.context,
            &method,
            format!("prune_up_to={offset}"),
            async {
                ParticipantApi::prune(self, &method, offset, true).await?;
                Ok(admin::PruneResponse {})
            },
        )
        .await
    }

    async fn get_safe_pruning_offset(
        &self,
        request: Request<admin::GetSafePruningOffsetRequest>,
    ) -> Result<Response<admin::GetSafePruningOffsetResponse>, Status> {
        use admin::get_safe_pruning_offset_response::{NoSafePruningOffset, Response as Safe};
        let request = request.into_inner();
        timestamp_micros(request.before_or_at.as_ref(), "before_or_at").map_err(CallError::from)?;
        let safe = self.ledger_end().await?.min(request.ledger_end);
        Ok(Response::new(admin::GetSafePruningOffsetResponse {
            response: Some(if safe > 0 {
                Safe::SafePruningOffset(safe)
            } else {
                Safe::NoSafePruningOffset(NoSafePruningOffset {})
            }),
        }))
    }

    async fn set_schedule(
        &self,
        request: Request<pruning::SetScheduleRequest>,
    ) -> Result<Response<pruning::SetScheduleResponse>, Status> {
        schedule::set_schedule(&self.context, request.into_inner()).await
    }

    async fn set_participant_schedule(
        &self,
        request: Request<pruning::SetParticipantScheduleRequest>,
    ) -> Result<Response<pruning::SetParticipantScheduleResponse>, Status> {
        schedule::set_participant_schedule(&self.context, request.into_inner()).await
    }

    async fn set_cron(
        &self,
        request: Request<pruning::SetCronRequest>,
    ) -> Result<Response<pruning::SetCronResponse>, Status> {
        schedule::set_cron(&self.context, request.into_inner()).await
    }

    async fn set_max_duration(
        &self,
        request: Request<pruning::SetMaxDurationRequest>,
    ) -> Result<Response<pruning::SetMaxDurationResponse>, Status> {
        schedule::set_max_duration(&self.context, request.into_inner()).await
    }

    async fn set_retention(
        &self,
        request: Request<pruning::SetRetentionRequest>,
    ) -> Result<Response<pruning::SetRetentionResponse>, Status> {
        schedule::set_retention(&self.context, request.into_inner()).await
    }

    async fn clear_schedule(
        &self,
        _request: Request<pruning::ClearScheduleRequest>,
    ) -> Result<Response<pruning::ClearScheduleResponse>, Status> {
        schedule::clear_schedule(&self.context).await
    }

    async fn get_schedule(
        &self,
        _request: Request<pruning::GetScheduleRequest>,
    ) -> Result<Response<pruning::GetScheduleResponse>, Status> {
        schedule::get_schedule(&self.context).await
    }

    async fn get_participant_schedule(
        &self,
        _request: Request<pruning::GetParticipantScheduleRequest>,
    ) -> Result<Response<pruning::GetParticipantScheduleResponse>, Status> {
        schedule::get_participant_schedule(&self.context).await
    }

    async fn set_no_wait_commitments_from(
        &self,
        _request: Request<pruning::SetNoWaitCommitmentsFromRequest>,
    ) -> Result<Response<pruning::SetNoWaitCommitmentsFromResponse>, Status> {
        Err(Status::unimplemented(
            "canton-sim does not simulate no-wait commitment settings",
        ))
    }

    async fn reset_no_wait_commitments_from(
        &self,
        _request: Request<pruning::ResetNoWaitCommitmentsFromRequest>,
    ) -> Result<Response<pruning::ResetNoWaitCommitmentsFromResponse>, Status> {
        Err(Status::unimplemented(
            "canton-sim does not simulate no-wait commitment settings",
        ))
    }

    async fn get_no_wait_commitments_from(
        &self,
        _request: Request<pruning::GetNoWaitCommitmentsFromRequest>,
    ) -> Result<Response<pruning::GetNoWaitCommitmentsFromResponse>, Status> {
        Err(Status::unimplemented(
            "canton-sim does not simulate no-wait commitment settings",
        ))
    }
}

#[tonic::async_trait]
impl StateService for ParticipantApi {
    async fn get_ledger_end(
        &self,
        _request: Request<ledger::GetLedgerEndRequest>,
    ) -> Result<Response<ledger::GetLedgerEndResponse>, Status> {
        Ok(Response::new(ledger::GetLedgerEndResponse {
            offset: self.ledger_end().await?,
        }))
    }
}

#[tonic::async_trait]
impl ParticipantPruningService for ParticipantApi {
    async fn prune(
        &self,
        request: Request<ledger::admin::PruneRequest>,
    ) -> Result<Response<ledger::admin::PruneResponse>, Status> {
        let offset = request.into_inner().prune_up_to;
        let method = m(LEDGER_PRUNING, "Prune");
        logged(
            &self.context,
            &method,
            format!("prune_up_to={offset}"),
            async {
                ParticipantApi::prune(self, &method, offset, false).await?;
                Ok(ledger::admin::PruneResponse {})
            },
        )
        .await
    }
}
