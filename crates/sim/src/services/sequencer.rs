//! Sequencer admin APIs: status, pruning status and member disabling.

use std::sync::Arc;

use proto_canton::admin::sequencer::v30 as status;
use proto_canton::admin::sequencer::v30::sequencer_status_service_server::{
    SequencerStatusService, SequencerStatusServiceServer,
};
use proto_canton::sequencer::admin::v30 as admin;
use proto_canton::sequencer::admin::v30::sequencer_administration_service_server::{
    SequencerAdministrationService, SequencerAdministrationServiceServer,
};
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};

use super::Apis;
use super::common::{Context, api_info, common_status, logged};
use crate::error::{CantonError, Error};
use crate::sequencer::{Sequencer, now_micros};

const ADMINISTRATION: &str =
    "/com.digitalasset.canton.sequencer.admin.v30.SequencerAdministrationService/";

pub fn routes(context: &Context) -> Apis {
    let Some(sequencer) = context.sequencer.clone() else {
        return Apis::default();
    };
    let api = SequencerApi {
        context: Arc::clone(context),
        sequencer,
    };
    Apis {
        admin: Some(
            Routes::new(SequencerStatusServiceServer::new(api.clone()))
                .add_service(SequencerAdministrationServiceServer::new(api))
                .add_service(super::topology::read_service(context))
                .add_service(api_info("admin-api")),
        ),
        ledger: None,
    }
}

#[derive(Clone)]
struct SequencerApi {
    context: Context,
    sequencer: Arc<Sequencer>,
}

#[tonic::async_trait]
impl SequencerStatusService for SequencerApi {
    async fn sequencer_status(
        &self,
        _request: Request<status::SequencerStatusRequest>,
    ) -> Result<Response<status::SequencerStatusResponse>, Status> {
        use status::sequencer_status_response::{
            ConnectedMediator, ConnectedParticipant, Kind, SequencerStatusResponseStatus,
        };
        let common = common_status(&self.context);
        let connected = self.sequencer.connected_members().await;
        let uid_of = |member: &str| member.split_once("::").map(|(_, uid)| uid.to_owned());
        Ok(Response::new(status::SequencerStatusResponse {
            kind: Some(Kind::Status(SequencerStatusResponseStatus {
                connected_participants: connected
                    .iter()
                    .filter(|m| m.starts_with("PAR::"))
                    .filter_map(|m| uid_of(m))
                    .map(|uid| ConnectedParticipant { uid })
                    .collect(),
                connected_mediators: connected
                    .iter()
                    .filter(|m| m.starts_with("MED::"))
                    .filter_map(|m| uid_of(m))
                    .map(|uid| ConnectedMediator { uid })
                    .collect(),
                sequencer: Some(status::SequencerHealthStatus {
                    active: common.active,
                    details: None,
                }),
                physical_synchronizer_id: self.sequencer.identity.physical_synchronizer_id.clone(),
                admin: Some(status::SequencerAdminStatus {
                    accepts_admin_changes: true,
                }),
                protocol_version: self.sequencer.identity.protocol_version,
                common_status: Some(common),
            })),
        }))
    }
}

#[tonic::async_trait]
impl SequencerAdministrationService for SequencerApi {
    async fn pruning_status(
        &self,
        _request: Request<admin::PruningStatusRequest>,
    ) -> Result<Response<admin::PruningStatusResponse>, Status> {
        let earliest = self.sequencer.earliest_event_timestamp().await?;
        let mut guard = self
            .context
            .db
            .lock()
            .await
            .map_err(crate::error::CallError::from)?;
        let rows = guard
            .client()
            .map_err(crate::error::CallError::from)?
            .query(
                "SELECT member, registered_at_micros, last_acknowledged_micros, enabled
                 FROM sequencer_member ORDER BY member",
                &[],
            )
            .await
            .map_err(|e| crate::error::CallError::from(Error::db("listing members", e)))?;
        Ok(Response::new(admin::PruningStatusResponse {
            pruning_status: Some(admin::SequencerPruningStatus {
                now: now_micros(),
                earliest_event_timestamp: earliest,
                members: rows
                    .iter()
                    .map(|row| admin::SequencerMemberStatus {
                        member: row.get(0),
                        registered_at: row.get(1),
                        last_acknowledged: row.get(2),
                        enabled: row.get(3),
                    })
                    .collect(),
            }),
        }))
    }

    async fn disable_member(
        &self,
        request: Request<admin::DisableMemberRequest>,
    ) -> Result<Response<admin::DisableMemberResponse>, Status> {
        let member = request.into_inner().member;
        let method = format!("{ADMINISTRATION}DisableMember");
        logged(&self.context, &method, format!("member={member}"), async {
            if !self.sequencer.disable_member(&member, &method).await? {
                return Err(CantonError::new(
                    Code::NotFound,
                    "SEQUENCER_UNKNOWN_MEMBER",
                    format!("member {member} is not registered on this sequencer"),
                )
                .into());
            }
            Ok(admin::DisableMemberResponse {})
        })
        .await
    }
}
