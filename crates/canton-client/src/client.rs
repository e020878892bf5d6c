//! The client core: channels, credentials, per-call timeouts, error mapping and the profile.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::{ClientConfig, EndpointConfig, NodeKind};
use crate::error::{Error, ErrorKind, Result};
use crate::profile::Profile;

/// A typed client for one Canton node: admin API, optional ledger API and health server.
///
/// Cloning is cheap and shares the connections and the profile. Every admin call except
/// [`CantonClient::status`] and [`CantonClient::api_info`] first makes sure the node's release
/// line is known (read once from the status service and cached), and refuses to send to a line
/// without a profile.
#[derive(Clone)]
pub struct CantonClient {
    pub(crate) shared: Arc<Shared>,
    pub(crate) timeout: Duration,
}

pub(crate) struct Shared {
    pub(crate) config: ClientConfig,
    pub(crate) admin: Connection,
    pub(crate) ledger: Option<Connection>,
    pub(crate) health: Option<Connection>,
    profile: Mutex<Option<Profile>>,
}

#[derive(Clone)]
pub(crate) struct Connection {
    pub(crate) channel: Channel,
    authorization: Option<MetadataValue<Ascii>>,
}

/// Which of the node's endpoints a call goes to.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Api {
    Admin,
    Ledger,
    Health,
}

impl CantonClient {
    /// Builds the client without connecting: connections open on first use, so a node that is
    /// down does not stop an agent from starting. Must run inside a Tokio runtime.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let node = config.node_name.clone();
        let admin = connection(&node, "admin", &config.admin, config.connect_timeout)?;
        let ledger = match &config.ledger {
            Some(endpoint) => Some(connection(
                &node,
                "ledger",
                endpoint,
                config.connect_timeout,
            )?),
            None => None,
        };
        let health = match &config.health {
            Some(endpoint) => Some(connection(
                &node,
                "health",
                endpoint,
                config.connect_timeout,
            )?),
            None => None,
        };
        let timeout = config.call_timeout;
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                admin,
                ledger,
                health,
                profile: Mutex::new(None),
            }),
            timeout,
        })
    }

    /// The same client with another per-call timeout (e.g. long for an ACS import).
    pub fn with_timeout(&self, timeout: Duration) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            timeout,
        }
    }

    pub fn node_name(&self) -> &str {
        &self.shared.config.node_name
    }

    pub fn node_kind(&self) -> NodeKind {
        self.shared.config.node_kind
    }

    /// The node's release-line profile: cached, else read from the status service.
    pub async fn profile(&self) -> Result<Profile> {
        if let Some(profile) = *self.profile_slot() {
            return Ok(profile);
        }
        let status = self.status().await?;
        let version = status.version.ok_or_else(|| {
            Error::new(
                ErrorKind::NotInitialized,
                format!(
                    "{} {} reports no Canton version (a 3.4 node names it only once initialised); \
                     initialise the node before sending it commands",
                    self.node_kind(),
                    self.node_name()
                ),
            )
        })?;
        let profile = Profile::for_version(&version).map_err(|error| {
            Error::new(
                error.kind(),
                format!(
                    "{} {}: {}",
                    self.node_kind(),
                    self.node_name(),
                    error.context()
                ),
            )
        })?;
        tracing::info!(node = self.node_name(), %version, %profile, "selected Canton release-line profile");
        *self.profile_slot() = Some(profile);
        Ok(profile)
    }

    /// Forgets the cached profile, so the next call reads the version again (after the node
    /// was upgraded or replaced).
    pub fn forget_profile(&self) {
        *self.profile_slot() = None;
    }

    fn profile_slot(&self) -> std::sync::MutexGuard<'_, Option<Profile>> {
        // The slot holds a plain value, so a panic elsewhere cannot leave it half-written.
        self.shared
            .profile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn connection(&self, api: Api, call: &str) -> Result<&Connection> {
        let connection = match api {
            Api::Admin => Some(&self.shared.admin),
            Api::Ledger => self.shared.ledger.as_ref(),
            Api::Health => self.shared.health.as_ref(),
        };
        connection.ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "{call} on {}: no {api:?} endpoint configured for this node",
                    self.node_name()
                ),
            )
        })
    }

    /// Refuses a call that does not exist on this kind of node, before sending anything.
    pub(crate) fn require_kind(&self, kind: NodeKind, call: &str) -> Result<()> {
        if self.node_kind() == kind {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::WrongNodeType,
            format!(
                "{call} exists only on a {kind}, but {} is a {}",
                self.node_name(),
                self.node_kind()
            ),
        ))
    }

    /// A request carrying the deadline and the endpoint's bearer token.
    pub(crate) fn request<T>(&self, connection: &Connection, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        if let Some(authorization) = &connection.authorization {
            request
                .metadata_mut()
                .insert("authorization", authorization.clone());
        }
        request
    }

    /// Runs one call under the client-side deadline (the server may ignore `grpc-timeout`) and
    /// maps its status to an error kind.
    pub(crate) async fn call<T>(
        &self,
        call: &str,
        future: impl Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(self.timeout, future).await {
            Err(_elapsed) => Err(Error::new(
                ErrorKind::DeadlineExceeded,
                format!(
                    "{call} on {} took longer than {:?}; the node may still apply it",
                    self.node_name(),
                    self.timeout
                ),
            )),
            Ok(Err(status)) => {
                if status.code() == tonic::Code::Unimplemented {
                    // Possibly upgraded to another line since the profile was read.
                    self.forget_profile();
                }
                if status.code() == tonic::Code::Cancelled && started.elapsed() >= self.timeout {
                    // tonic cancels a call whose `grpc-timeout` passed before our own timer fires.
                    return Err(Error::with_source(
                        ErrorKind::DeadlineExceeded,
                        format!(
                            "{call} on {} took longer than {:?}; the node may still apply it",
                            self.node_name(),
                            self.timeout
                        ),
                        status,
                    ));
                }
                Err(self.status_error(call, status))
            }
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    pub(crate) fn status_error(&self, call: &str, status: tonic::Status) -> Error {
        status_error(self.node_name(), call, status)
    }

    /// Answers the contract rules out (a missing oneof, an impossible combination).
    pub(crate) fn protocol_error(&self, call: &str, what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Protocol,
            format!("{call} on {}: {what}", self.node_name()),
        )
    }
}

pub(crate) fn status_error(node: &str, call: &str, status: tonic::Status) -> Error {
    let kind = ErrorKind::from_code(status.code());
    let message = if status.message().is_empty() {
        format!("{call} on {node}: gRPC {:?}", status.code())
    } else {
        format!(
            "{call} on {node}: gRPC {:?}: {}",
            status.code(),
            status.message()
        )
    };
    Error::with_source(kind, message, status)
}

fn connection(
    node: &str,
    api: &str,
    config: &EndpointConfig,
    connect_timeout: Duration,
) -> Result<Connection> {
    let config_error = |what: String| {
        Error::new(
            ErrorKind::Config,
            format!("node {node}, {api} endpoint {}: {what}", config.url),
        )
    };
    let mut endpoint = Endpoint::from_shared(config.url.clone())
        .map_err(|error| config_error(format!("not a usable URL ({error})")))?
        .connect_timeout(connect_timeout);
    if let Some(tls) = &config.tls {
        let mut tls_config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        match (&tls.client_cert_pem, &tls.client_key_pem) {
            (Some(cert), Some(key)) => {
                tls_config = tls_config.identity(Identity::from_pem(cert, key));
            }
            (None, None) => {}
            _ => {
                return Err(config_error(
                    "mutual TLS needs both the client certificate and its key".into(),
                ));
            }
        }
        if let Some(domain_name) = &tls.domain_name {
            tls_config = tls_config.domain_name(domain_name.clone());
        }
        endpoint = endpoint
            .tls_config(tls_config)
            .map_err(|error| config_error(format!("TLS configuration rejected ({error})")))?;
    }
    let authorization =
        match &config.bearer_token {
            Some(token) => Some(MetadataValue::try_from(format!("Bearer {token}")).map_err(
                |_| config_error("the bearer token has characters not allowed in a header".into()),
            )?),
            None => None,
        };
    Ok(Connection {
        channel: endpoint.connect_lazy(),
        authorization,
    })
}
