//! The Canton admin and ledger API services each node kind serves, over `proto-canton`.

mod common;
mod inspection;
mod mediator;
mod participant;
mod party;
mod schedule;
mod sequencer;
mod topology;
mod topology_write;

use std::sync::Arc;

use prost::Message;
use proto_canton::admin::participant::v30::SynchronizerConnectionConfig;
use proto_canton::admin::sequencer::v30::{
    SequencerConnection, SequencerConnections, sequencer_connection,
};
use tonic::service::Routes;

use crate::config::{NodeConfig, NodeKind};
use crate::connectivity::ConnectionConfig;
use crate::node::NodeContext;

pub use participant::config_from_wire;

/// The gRPC routes of one node, per port.
#[derive(Default)]
pub struct Apis {
    pub admin: Option<Routes>,
    pub ledger: Option<Routes>,
}

pub fn routes(context: &Arc<NodeContext>) -> Apis {
    let mut apis = match context.config.kind() {
        NodeKind::Participant => participant::routes(context),
        NodeKind::Sequencer => sequencer::routes(context),
        NodeKind::Mediator => mediator::routes(context),
        NodeKind::App => Apis::default(),
    };
    // Every node with an admin API proposes topology and holds keys.
    apis.admin = apis
        .admin
        .map(|routes| topology_write::add_services(context, routes));
    apis
}

/// The configs a participant registers on its first start, as a console `connect` would
/// send them.
pub fn bootstrap_configs(config: &NodeConfig) -> Vec<ConnectionConfig> {
    config
        .bootstrap_synchronizers
        .iter()
        .map(|b| {
            let wire = SynchronizerConnectionConfig {
                synchronizer_alias: b.alias.clone(),
                sequencer_connections: Some(SequencerConnections {
                    sequencer_connections: vec![SequencerConnection {
                        r#type: Some(sequencer_connection::Type::Grpc(
                            sequencer_connection::Grpc {
                                connections: vec![b.sequencer.clone()],
                                transport_security: false,
                                custom_trust_certificates: None,
                            },
                        )),
                        alias: "sequencer1".to_owned(),
                        sequencer_id: None,
                    }],
                    sequencer_trust_threshold: 1,
                    sequencer_liveness_margin: 0,
                    submission_request_amplification: None,
                    sequencer_connection_pool_delays: None,
                }),
                manual_connect: b.manual_connect,
                priority: 0,
                ..Default::default()
            };
            ConnectionConfig {
                alias: b.alias.clone(),
                sequencer_urls: vec![b.sequencer.clone()],
                manual_connect: b.manual_connect,
                priority: 0,
                physical_synchronizer_id: None,
                encoded: wire.encode_to_vec(),
            }
        })
        .collect()
}
