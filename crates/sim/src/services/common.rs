//! Pieces every node kind's services share: the common `Status`, `ApiInfoService`, duration
//! conversions and refusal logging.

use std::sync::Arc;

use proto_canton::admin::health::v30::{ComponentStatus, Status, component_status};
use proto_canton::connection::v30::api_info_service_server::{
    ApiInfoService, ApiInfoServiceServer,
};
use proto_canton::connection::v30::{GetApiInfoRequest, GetApiInfoResponse};
use tonic::{Request, Response};

use crate::error::{CallError, CantonError};
use crate::health::Readiness;
use crate::node::NodeContext;

/// Canton's common `Status` of a node.
pub fn common_status(context: &NodeContext) -> Status {
    let storage = match context.health.readiness() {
        Readiness::NotServing(reason) if reason.starts_with("storage") => {
            component_status::Status::Failed(component_status::StatusData {
                description: Some(reason),
            })
        }
        _ => component_status::Status::Ok(component_status::StatusData { description: None }),
    };
    let uptime = context.started.elapsed();
    Status {
        uid: context.config.uid(),
        uptime: Some(prost_types::Duration {
            seconds: i64::try_from(uptime.as_secs()).unwrap_or(i64::MAX),
            nanos: i32::try_from(uptime.subsec_nanos()).unwrap_or(0),
        }),
        ports: context.status_ports(),
        active: context.active.load(std::sync::atomic::Ordering::SeqCst),
        topology_queues: Some(Default::default()),
        components: vec![ComponentStatus {
            name: "storage".to_owned(),
            status: Some(storage),
        }],
        version: context.config.canton_version.clone(),
    }
}

/// A protobuf duration in milliseconds; `field` names it in the refusal when it is missing.
pub fn millis(duration: Option<&prost_types::Duration>, field: &str) -> Result<i64, CantonError> {
    let duration = duration.ok_or_else(|| missing(field))?;
    Ok(duration
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(duration.nanos / 1_000_000)))
}

pub fn duration_of_millis(ms: i64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: ms / 1000,
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

pub fn timestamp_micros(
    ts: Option<&prost_types::Timestamp>,
    field: &str,
) -> Result<i64, CantonError> {
    let ts = ts.ok_or_else(|| missing(field))?;
    Ok(ts
        .seconds
        .saturating_mul(1_000_000)
        .saturating_add(i64::from(ts.nanos / 1000)))
}

pub fn timestamp_of_micros(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// Canton's refusal of a request whose required field is absent.
pub fn missing(field: &str) -> CantonError {
    CantonError::new(
        tonic::Code::InvalidArgument,
        "INVALID_ARGUMENT",
        format!("The submitted request is missing a mandatory field: {field}"),
    )
}

/// Refuses mutating calls on a passive replica, as Canton does.
pub fn require_active(context: &NodeContext) -> Result<(), CantonError> {
    if context.active.load(std::sync::atomic::Ordering::SeqCst) {
        return Ok(());
    }
    Err(CantonError::new(
        tonic::Code::Unavailable,
        "NODE_IS_PASSIVE_REPLICA",
        format!(
            "node {} is a passive replica; send the call to the active one",
            context.config.id
        ),
    ))
}

/// Runs a mutating call; a refusal is written to the action log with its error id before it
/// goes back to the caller.
pub async fn logged<T>(
    context: &NodeContext,
    method: &str,
    detail: String,
    call: impl std::future::Future<Output = Result<T, CallError>>,
) -> Result<Response<T>, tonic::Status> {
    let outcome = match require_active(context) {
        Ok(()) => call.await,
        Err(e) => Err(e.into()),
    };
    match outcome {
        Ok(value) => Ok(Response::new(value)),
        Err(error) => {
            let id = match &error {
                CallError::Canton(e) => e.id.to_owned(),
                CallError::Sim(_) => "INTERNAL".to_owned(),
            };
            if let Err(e) = context.db.log_plain(method, &detail, &id).await {
                tracing::warn!(error = %e, "cannot log a refused call");
            }
            Err(error.into())
        }
    }
}

/// `ApiInfoService.GetApiInfo`: `admin-api` on admin ports, `ledger-api` on the ledger API.
pub struct ApiInfo(pub &'static str);

#[tonic::async_trait]
impl ApiInfoService for ApiInfo {
    async fn get_api_info(
        &self,
        _request: Request<GetApiInfoRequest>,
    ) -> Result<Response<GetApiInfoResponse>, tonic::Status> {
        Ok(Response::new(GetApiInfoResponse {
            name: self.0.to_owned(),
        }))
    }
}

pub fn api_info(name: &'static str) -> ApiInfoServiceServer<ApiInfo> {
    ApiInfoServiceServer::new(ApiInfo(name))
}

pub type Context = Arc<NodeContext>;
