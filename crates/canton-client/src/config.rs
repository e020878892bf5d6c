use std::time::Duration;

/// Which kind of Canton node the admin endpoint belongs to; decides the status service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeKind {
    Participant,
    Sequencer,
    Mediator,
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeKind::Participant => "participant",
            NodeKind::Sequencer => "sequencer",
            NodeKind::Mediator => "mediator",
        })
    }
}

/// How to reach one Canton node.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// A name for the node in errors and logs (e.g. the sidecar's node id).
    pub node_name: String,
    pub node_kind: NodeKind,
    /// Admin API, e.g. `http://127.0.0.1:10002` or `https://participant:10002`.
    pub admin: EndpointConfig,
    /// Ledger API (participants only), for the ledger end.
    pub ledger: Option<EndpointConfig>,
    /// The dedicated gRPC health server (`grpc.health.v1`).
    pub health: Option<EndpointConfig>,
    /// Default per-call timeout; [`crate::CantonClient::with_timeout`] changes it per call site.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
}

impl ClientConfig {
    pub fn new(
        node_name: impl Into<String>,
        node_kind: NodeKind,
        admin_url: impl Into<String>,
    ) -> Self {
        Self {
            node_name: node_name.into(),
            node_kind,
            admin: EndpointConfig::new(admin_url),
            ledger: None,
            health: None,
            call_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// One gRPC endpoint with its transport security and credentials.
#[derive(Clone)]
pub struct EndpointConfig {
    pub url: String,
    pub tls: Option<TlsConfig>,
    /// Sent as `authorization: Bearer <token>` on every call (JWT for the ledger API, or an
    /// admin API with auth services).
    pub bearer_token: Option<String>,
}

impl std::fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token stays out of logs.
        f.debug_struct("EndpointConfig")
            .field("url", &self.url)
            .field("tls", &self.tls)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl EndpointConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            tls: None,
            bearer_token: None,
        }
    }
}

/// TLS material in PEM. The server certificate must chain to `ca_pem`; system roots are never
/// used, so a misconfigured CA fails loudly instead of trusting any public certificate.
#[derive(Clone)]
pub struct TlsConfig {
    pub ca_pem: Vec<u8>,
    /// Client certificate and key for mutual TLS (Canton's default for the admin API).
    pub client_cert_pem: Option<Vec<u8>>,
    pub client_key_pem: Option<Vec<u8>>,
    /// Overrides the name checked against the server certificate.
    pub domain_name: Option<String>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs.
        f.debug_struct("TlsConfig")
            .field("client_cert", &self.client_cert_pem.is_some())
            .field("domain_name", &self.domain_name)
            .finish_non_exhaustive()
    }
}
