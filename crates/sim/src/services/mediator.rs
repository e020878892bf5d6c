//! Mediator admin APIs: status, pruning and pruning schedules.

use std::sync::Arc;

use proto_canton::admin::mediator::v30 as status;
use proto_canton::admin::mediator::v30::mediator_status_service_server::{
    MediatorStatusService, MediatorStatusServiceServer,
};
use proto_canton::admin::pruning::v30 as pruning;
use proto_canton::mediator::admin::v30 as admin;
use proto_canton::mediator::admin::v30::mediator_administration_service_server::{
    MediatorAdministrationService, MediatorAdministrationServiceServer,
};
use tonic::service::Routes;
use tonic::{Code, Request, Response, Status};

use super::Apis;
use super::common::{
    Context, api_info, common_status, logged, timestamp_micros, timestamp_of_micros,
};
use super::schedule;
use crate::error::{CallError, CantonError, Error};
use crate::sequencer::now_micros;

pub fn routes(context: &Context) -> Apis {
    let api = MediatorApi {
        context: Arc::clone(context),
    };
    Apis {
        admin: Some(
            Routes::new(MediatorStatusServiceServer::new(api.clone()))
                .add_service(MediatorAdministrationServiceServer::new(api))
                .add_service(super::topology::read_service(context))
                .add_service(api_info("admin-api")),
        ),
        ledger: None,
    }
}

#[derive(Clone)]
struct MediatorApi {
    context: Context,
}

#[tonic::async_trait]
impl MediatorStatusService for MediatorApi {
    async fn mediator_status(
        &self,
        _request: Request<status::MediatorStatusRequest>,
    ) -> Result<Response<status::MediatorStatusResponse>, Status> {
        use status::mediator_status_response::{Kind, MediatorStatusResponseStatus};
        let synchronizer = self.context.synchronizer.read().await.clone();
        Ok(Response::new(status::MediatorStatusResponse {
            kind: Some(Kind::Status(MediatorStatusResponseStatus {
                common_status: Some(common_status(&self.context)),
                physical_synchronizer_id: synchronizer
                    .as_ref()
                    .map(|h| h.physical_synchronizer_id.clone())
                    .unwrap_or_default(),
                protocol_version: self.context.config.protocol_version,
            })),
        }))
    }
}

#[tonic::async_trait]
impl MediatorAdministrationService for MediatorApi {
    async fn prune(
        &self,
        request: Request<admin::mediator_pruning::PruneRequest>,
    ) -> Result<Response<admin::mediator_pruning::PruneResponse>, Status> {
        let request = request.into_inner();
        let method =
            "/com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/Prune";
        let detail = format!("{:?}", request.timestamp);
        logged(&self.context, method, detail, async {
            let before = timestamp_micros(request.timestamp.as_ref(), "timestamp")?;
            if before > now_micros() {
                return Err(CantonError::new(
                    Code::InvalidArgument,
                    "INVALID_ARGUMENT",
                    "cannot prune at a timestamp in the future",
                )
                .into());
            }
            let mut guard = self.context.db.lock().await?;
            let tx = guard
                .client()?
                .transaction()
                .await
                .map_err(|e| Error::db("starting a prune", e))?;
            tx.execute(
                "UPDATE participant_pruning SET pruned_before_micros = GREATEST(pruned_before_micros, $1)",
                &[&before],
            )
            .await
            .map_err(|e| Error::db("recording the pruning point", e))?;
            crate::db::log_action(&tx, method, &format!("before_micros={before}"), "OK").await?;
            tx.commit().await.map_err(|e| Error::db("committing a prune", e))?;
            Ok(admin::mediator_pruning::PruneResponse {})
        })
        .await
    }

    async fn set_schedule(
        &self,
        request: Request<pruning::SetScheduleRequest>,
    ) -> Result<Response<pruning::SetScheduleResponse>, Status> {
        schedule::set_schedule(&self.context, request.into_inner()).await
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

    async fn find_pruning_timestamp(
        &self,
        request: Request<pruning::FindPruningTimestampRequest>,
    ) -> Result<Response<pruning::FindPruningTimestampResponse>, Status> {
        let index = request.into_inner().index;
        if index < 1 {
            return Err(CallError::from(CantonError::new(
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
                format!("index must be at least 1, got {index}"),
            ))
            .into());
        }
        let mut guard = self.context.db.lock().await.map_err(CallError::from)?;
        let row = guard
            .client()
            .map_err(CallError::from)?
            .query_one("SELECT pruned_before_micros FROM participant_pruning", &[])
            .await
            .map_err(|e| CallError::from(Error::db("reading the pruning point", e)))?;
        let pruned_before: i64 = row.get(0);
        Ok(Response::new(pruning::FindPruningTimestampResponse {
            timestamp: Some(timestamp_of_micros(pruned_before.max(1))),
        }))
    }
}
