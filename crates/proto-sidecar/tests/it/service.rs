//! The coordinator API's gRPC paths are part of the contract with `canton-ops`.

use proto_sidecar::coordinator_service_server::CoordinatorServiceServer;
use tonic::server::NamedService;

#[test]
fn coordinator_service_name_is_stable() {
    type Server = CoordinatorServiceServer<Unimplemented>;
    assert_eq!(
        <Server as NamedService>::NAME,
        proto_sidecar::COORDINATOR_SERVICE
    );
    assert_eq!(
        proto_sidecar::COORDINATOR_SERVICE,
        "canton_sidecar.v1.CoordinatorService"
    );
}

#[test]
fn coordinator_method_paths_match_the_golden_table() {
    let source = include_str!("../../proto/canton_sidecar/v1/coordinator.proto");
    let methods: Vec<&str> = source
        .lines()
        .filter_map(|line| line.trim().strip_prefix("rpc "))
        .filter_map(|rest| rest.split('(').next())
        .collect();
    let golden = [
        "StartRun",
        "Plan",
        "GetRun",
        "ListRuns",
        "WatchRun",
        "Approve",
        "Cancel",
        "Resume",
        "ListNodes",
        "GetDrTimestamp",
        "ProposeDrTimestamp",
        "ListProposals",
        "AnswerProposal",
        "ProposeJointRun",
    ];
    assert_eq!(methods, golden);
    let paths: Vec<String> = methods
        .iter()
        .map(|m| format!("/{}/{m}", proto_sidecar::COORDINATOR_SERVICE))
        .collect();
    assert_eq!(paths[0], "/canton_sidecar.v1.CoordinatorService/StartRun");
}

/// Never called; only names the server type.
struct Unimplemented;

#[tonic::async_trait]
impl proto_sidecar::coordinator_service_server::CoordinatorService for Unimplemented {
    async fn start_run(
        &self,
        _: tonic::Request<proto_sidecar::StartRunRequest>,
    ) -> Result<tonic::Response<proto_sidecar::StartRunResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn plan(
        &self,
        _: tonic::Request<proto_sidecar::PlanRequest>,
    ) -> Result<tonic::Response<proto_sidecar::PlanResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_run(
        &self,
        _: tonic::Request<proto_sidecar::GetRunRequest>,
    ) -> Result<tonic::Response<proto_sidecar::GetRunResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn list_runs(
        &self,
        _: tonic::Request<proto_sidecar::ListRunsRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ListRunsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    type WatchRunStream = std::pin::Pin<
        Box<
            dyn tonic::codegen::tokio_stream::Stream<
                    Item = Result<proto_sidecar::RunEvent, tonic::Status>,
                > + Send,
        >,
    >;
    async fn watch_run(
        &self,
        _: tonic::Request<proto_sidecar::WatchRunRequest>,
    ) -> Result<tonic::Response<Self::WatchRunStream>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn approve(
        &self,
        _: tonic::Request<proto_sidecar::ApproveRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ApproveResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn cancel(
        &self,
        _: tonic::Request<proto_sidecar::CancelRequest>,
    ) -> Result<tonic::Response<proto_sidecar::CancelResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn resume(
        &self,
        _: tonic::Request<proto_sidecar::ResumeRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ResumeResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn list_nodes(
        &self,
        _: tonic::Request<proto_sidecar::ListNodesRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ListNodesResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn get_dr_timestamp(
        &self,
        _: tonic::Request<proto_sidecar::GetDrTimestampRequest>,
    ) -> Result<tonic::Response<proto_sidecar::GetDrTimestampResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn propose_dr_timestamp(
        &self,
        _: tonic::Request<proto_sidecar::ProposeDrTimestampRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ProposalView>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn list_proposals(
        &self,
        _: tonic::Request<proto_sidecar::ListProposalsRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ListProposalsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn answer_proposal(
        &self,
        _: tonic::Request<proto_sidecar::AnswerProposalRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ProposalView>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
    async fn propose_joint_run(
        &self,
        _: tonic::Request<proto_sidecar::ProposeJointRunRequest>,
    ) -> Result<tonic::Response<proto_sidecar::ProposalView>, tonic::Status> {
        Err(tonic::Status::unimplemented("test"))
    }
}
