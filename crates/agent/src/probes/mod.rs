//! The real probes, built from the configuration.

mod canton;
mod database;
mod http_health;

use std::sync::Arc;

pub use canton::{GrpcHealthProbe, ProgressOf, ProgressProbe, StatusProbe, SynchronizersProbe};
pub use database::DatabaseProbe;
pub use http_health::HttpHealthProbe;

use canton_client::{CantonClient, ClientConfig, EndpointConfig};

use crate::config::{AgentConfig, NodeKind};
use crate::probe::Probe;

/// The client of the node's Canton APIs; `None` for apps (no admin API).
pub fn canton_client(config: &AgentConfig) -> Result<Option<CantonClient>, canton_client::Error> {
    let Some(canton) = &config.canton else {
        return Ok(None);
    };
    let kind = match config.kind {
        NodeKind::Participant => canton_client::NodeKind::Participant,
        NodeKind::Sequencer => canton_client::NodeKind::Sequencer,
        NodeKind::Mediator => canton_client::NodeKind::Mediator,
        NodeKind::App => return Ok(None),
    };
    let mut client_config = ClientConfig::new(config.node.as_str(), kind, canton.admin_url.clone());
    client_config.health = canton.grpc_health_url.clone().map(EndpointConfig::new);
    client_config.ledger = canton.ledger_api_url.clone().map(EndpointConfig::new);
    CantonClient::new(client_config).map(Some)
}

/// Every probe the configuration asks for. Canton probes need an admin API; the gRPC health,
/// HTTP health and ledger-end probes need their endpoint. Without an HTTP health endpoint the
/// node's health comes from gRPC health and the status `active` flag alone.
///
/// Builds the Canton client without connecting; fails only on an unusable endpoint.
pub fn from_config(config: &AgentConfig) -> Result<Vec<Arc<dyn Probe>>, canton_client::Error> {
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    let schedules = &config.probes;
    if let Some(canton) = &config.canton {
        if let Some(url) = &canton.http_health_url {
            probes.push(Arc::new(HttpHealthProbe::new(
                url.clone(),
                schedules.http_health,
            )));
        }
        if let Some(client) = canton_client(config)? {
            let kind = client.node_kind();
            probes.push(Arc::new(StatusProbe::new(&client, schedules.status)));
            if canton.grpc_health_url.is_some() {
                probes.push(Arc::new(GrpcHealthProbe::new(
                    &client,
                    schedules.grpc_health,
                    canton.grpc_health_service.clone(),
                )));
            }
            match kind {
                canton_client::NodeKind::Participant => {
                    probes.push(Arc::new(SynchronizersProbe::new(
                        &client,
                        schedules.synchronizers,
                    )));
                    if canton.ledger_api_url.is_some() {
                        probes.push(Arc::new(ProgressProbe::new(
                            &client,
                            schedules.progress,
                            ProgressOf::LedgerEnd,
                        )));
                    }
                }
                canton_client::NodeKind::Sequencer => probes.push(Arc::new(ProgressProbe::new(
                    &client,
                    schedules.progress,
                    ProgressOf::SequencerTime,
                ))),
                canton_client::NodeKind::Mediator => {}
            }
        }
    }
    if let Some(url) = &config.database_url {
        probes.push(Arc::new(DatabaseProbe::new(
            url.expose().to_owned(),
            schedules.database,
        )));
    }
    Ok(probes)
}
/// Classifies an I/O-ish error text: connection failures mean "unreachable", the rest "error".
pub(crate) fn is_connection_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | AddrNotAvailable
                    | HostUnreachable
                    | NetworkUnreachable
                    | BrokenPipe
                    | UnexpectedEof
            );
        }
        current = error.source();
    }
    false
}
