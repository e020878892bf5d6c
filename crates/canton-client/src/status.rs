//! Calls that work without a profile: node status, API info, gRPC health, ledger end.

use std::collections::BTreeMap;

use proto_canton::connection::v30::{
    GetApiInfoRequest, api_info_service_client::ApiInfoServiceClient,
};
use proto_canton::grpc_health::v1::{
    HealthCheckRequest, health_check_response, health_client::HealthClient,
};
use proto_canton::ledger::v2::{GetLedgerEndRequest, state_service_client::StateServiceClient};
// The 3.5 status messages are the 3.4 ones plus `NotInitialized.version`, so they read both.
use proto_canton::line_3_5::admin::health::v30 as health;
use proto_canton::line_3_5::admin::mediator::v30 as mediator;
use proto_canton::line_3_5::admin::participant::v30 as participant;
use proto_canton::line_3_5::admin::sequencer::v30 as sequencer;

use crate::client::{Api, CantonClient};
use crate::config::NodeKind;
use crate::error::Result;
use crate::types::{
    ComponentHealth, ComponentState, NodeStatus, ServingStatus, SynchronizerHealth, WaitingFor,
};

impl CantonClient {
    /// The node's status from its kind's status service. Works on every release line and before
    /// initialisation; it is also how the profile is chosen.
    pub async fn status(&self) -> Result<NodeStatus> {
        let connection = self.connection(Api::Admin, "status")?;
        let channel = connection.channel.clone();
        match self.node_kind() {
            NodeKind::Participant => {
                let call = "ParticipantStatus";
                let mut client =
                    participant::participant_status_service_client::ParticipantStatusServiceClient::new(channel);
                let request = self.request(connection, participant::ParticipantStatusRequest {});
                let response = self.call(call, client.participant_status(request)).await?;
                use participant::participant_status_response::Kind;
                match response.kind {
                    Some(Kind::Status(status)) => {
                        let mut node = running(NodeKind::Participant, status.common_status);
                        node.active = status.active;
                        node.connected_synchronizers = status
                            .connected_synchronizers
                            .into_iter()
                            .map(|synchronizer| SynchronizerHealth {
                                healthy: match synchronizer.health() {
                                    participant::connected_synchronizer::Health::Healthy => {
                                        Some(true)
                                    }
                                    participant::connected_synchronizer::Health::Unhealthy => {
                                        Some(false)
                                    }
                                    participant::connected_synchronizer::Health::Unspecified => {
                                        None
                                    }
                                },
                                physical_synchronizer_id: synchronizer.physical_synchronizer_id,
                            })
                            .collect();
                        Ok(node)
                    }
                    Some(Kind::NotInitialized(waiting)) => {
                        Ok(not_initialized(NodeKind::Participant, waiting))
                    }
                    None => Err(self.protocol_error(call, "status response without a kind")),
                }
            }
            NodeKind::Sequencer => {
                let call = "SequencerStatus";
                let mut client =
                    sequencer::sequencer_status_service_client::SequencerStatusServiceClient::new(
                        channel,
                    );
                let request = self.request(connection, sequencer::SequencerStatusRequest {});
                let response = self.call(call, client.sequencer_status(request)).await?;
                use sequencer::sequencer_status_response::Kind;
                match response.kind {
                    Some(Kind::Status(status)) => {
                        let mut node = running(NodeKind::Sequencer, status.common_status);
                        node.physical_synchronizer_id = Some(status.physical_synchronizer_id);
                        node.protocol_version = Some(status.protocol_version);
                        Ok(node)
                    }
                    Some(Kind::NotInitialized(waiting)) => {
                        Ok(not_initialized(NodeKind::Sequencer, waiting))
                    }
                    None => Err(self.protocol_error(call, "status response without a kind")),
                }
            }
            NodeKind::Mediator => {
                let call = "MediatorStatus";
                let mut client =
                    mediator::mediator_status_service_client::MediatorStatusServiceClient::new(
                        channel,
                    );
                let request = self.request(connection, mediator::MediatorStatusRequest {});
                let response = self.call(call, client.mediator_status(request)).await?;
                use mediator::mediator_status_response::Kind;
                match response.kind {
                    Some(Kind::Status(status)) => {
                        let mut node = running(NodeKind::Mediator, status.common_status);
                        node.physical_synchronizer_id = Some(status.physical_synchronizer_id);
                        node.protocol_version = Some(status.protocol_version);
                        Ok(node)
                    }
                    Some(Kind::NotInitialized(waiting)) => {
                        Ok(not_initialized(NodeKind::Mediator, waiting))
                    }
                    None => Err(self.protocol_error(call, "status response without a kind")),
                }
            }
        }
    }

    /// The API's self-reported name (`admin-api`, `ledger-api`, `sequencer-public-api`): a cheap
    /// check that the configured port is the right one.
    pub async fn api_info(&self) -> Result<String> {
        let connection = self.connection(Api::Admin, "GetApiInfo")?;
        let mut client = ApiInfoServiceClient::new(connection.channel.clone());
        let request = self.request(connection, GetApiInfoRequest {});
        Ok(self
            .call("GetApiInfo", client.get_api_info(request))
            .await?
            .name)
    }

    /// `grpc.health.v1.Health/Check` on the health endpoint; `service` is `""` (aggregate),
    /// the node kind (readiness) or `liveness`.
    pub async fn health_check(&self, service: &str) -> Result<ServingStatus> {
        let connection = self.connection(Api::Health, "Health/Check")?;
        let mut client = HealthClient::new(connection.channel.clone());
        let request = self.request(
            connection,
            HealthCheckRequest {
                service: service.to_owned(),
            },
        );
        let response = self.call("Health/Check", client.check(request)).await?;
        use health_check_response::ServingStatus as Wire;
        Ok(match response.status() {
            Wire::Unknown => ServingStatus::Unknown,
            Wire::Serving => ServingStatus::Serving,
            Wire::NotServing => ServingStatus::NotServing,
            Wire::ServiceUnknown => ServingStatus::ServiceUnknown,
        })
    }

    /// The participant's ledger end (absolute offset; 0 for an empty ledger), from the ledger API.
    pub async fn ledger_end(&self) -> Result<i64> {
        let connection = self.connection(Api::Ledger, "GetLedgerEnd")?;
        let mut client = StateServiceClient::new(connection.channel.clone());
        let request = self.request(connection, GetLedgerEndRequest {});
        Ok(self
            .call("GetLedgerEnd", client.get_ledger_end(request))
            .await?
            .offset)
    }
}

fn running(kind: NodeKind, common: Option<health::Status>) -> NodeStatus {
    let common = common.unwrap_or_default();
    NodeStatus {
        kind,
        initialized: true,
        active: common.active,
        version: non_empty(common.version),
        uid: non_empty(common.uid),
        uptime: common.uptime.and_then(|uptime| uptime.try_into().ok()),
        ports: common.ports.into_iter().collect::<BTreeMap<_, _>>(),
        components: common.components.into_iter().map(component).collect(),
        connected_synchronizers: Vec::new(),
        physical_synchronizer_id: None,
        protocol_version: None,
        waiting_for: None,
    }
}

fn not_initialized(kind: NodeKind, waiting: health::NotInitialized) -> NodeStatus {
    use health::not_initialized::WaitingForExternalInput as Wire;
    let waiting_for = match waiting.waiting_for_external_input() {
        Wire::Unspecified => WaitingFor::Unspecified,
        Wire::Id => WaitingFor::Id,
        Wire::NodeTopology => WaitingFor::NodeTopology,
        Wire::Initialization => WaitingFor::Initialization,
    };
    NodeStatus {
        kind,
        initialized: false,
        active: waiting.active,
        version: non_empty(waiting.version),
        uid: None,
        uptime: None,
        ports: BTreeMap::new(),
        components: Vec::new(),
        connected_synchronizers: Vec::new(),
        physical_synchronizer_id: None,
        protocol_version: None,
        waiting_for: Some(waiting_for),
    }
}

fn component(component: health::ComponentStatus) -> ComponentHealth {
    use health::component_status::Status;
    let (state, data) = match component.status {
        Some(Status::Ok(data)) => (ComponentState::Ok, Some(data)),
        Some(Status::Degraded(data)) => (ComponentState::Degraded, Some(data)),
        Some(Status::Failed(data)) => (ComponentState::Failed, Some(data)),
        Some(Status::Fatal(data)) => (ComponentState::Fatal, Some(data)),
        None => (ComponentState::Unknown, None),
    };
    ComponentHealth {
        name: component.name,
        state,
        description: data.and_then(|data| data.description),
    }
}

fn non_empty(value: String) -> Option<String> {
    if value.is_empty() { None } else { Some(value) }
}
