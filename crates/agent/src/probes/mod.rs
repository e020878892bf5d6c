//! The real probes, built from the configuration.

mod database;
mod http_health;

use std::sync::Arc;

pub use database::DatabaseProbe;
pub use http_health::HttpHealthProbe;

use crate::config::AgentConfig;
use crate::probe::Probe;

/// Every probe the configuration asks for: those whose endpoint is configured.
pub fn from_config(config: &AgentConfig) -> Vec<Arc<dyn Probe>> {
    let mut probes: Vec<Arc<dyn Probe>> = Vec::new();
    if let Some(canton) = &config.canton
        && let Some(url) = &canton.http_health_url
    {
        probes.push(Arc::new(HttpHealthProbe::new(
            url.clone(),
            config.probes.http_health,
        )));
    }
    if let Some(url) = &config.database_url {
        probes.push(Arc::new(DatabaseProbe::new(
            url.clone(),
            config.probes.database,
        )));
    }
    probes
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
