//! One simulated node: binds its ports, migrates its database, serves its APIs and runs until
//! the shutdown token fires.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::config::{NodeConfig, NodeKind};
use crate::connectivity::Connectivity;
use crate::control::{self, ControlState, NodeInfo};
use crate::db::Db;
use crate::error::{Error, ErrorKind, Result};
use crate::faults::{Faults, grpc_fault_layer, http_fault_layer};
use crate::health::{self, Health};
use crate::pruning::Pruning;
use crate::sequencer::{Sequencer, SynchronizerIdentity};
use crate::wire::sequencer::sim_sequencer_service_server::SimSequencerServiceServer;

/// The line a node prints on stdout once every port is bound and its database is migrated,
/// followed by [`ReadyLine`] as JSON.
pub const READY_MARKER: &str = "canton-sim ready ";

/// Ports the node actually bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundPorts {
    pub admin: Option<u16>,
    pub ledger: Option<u16>,
    pub public: Option<u16>,
    pub grpc_health: u16,
    pub http_health: Option<u16>,
    pub control: u16,
    #[serde(default)]
    pub http: Option<u16>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadyLine {
    pub node: String,
    pub kind: NodeKind,
    pub pid: u32,
    pub ports: BoundPorts,
}

/// Everything the services of one node share.
pub struct NodeContext {
    pub config: NodeConfig,
    pub db: Arc<Db>,
    pub faults: Arc<Faults>,
    pub health: Arc<Health>,
    /// HA state: a passive replica refuses writes and reports not ready.
    pub active: Arc<AtomicBool>,
    pub started: Instant,
    pub ports: BoundPorts,
    pub shutdown: CancellationToken,
    pub pruning: Pruning,
    pub connectivity: Option<Arc<Connectivity>>,
    pub sequencer: Option<Arc<Sequencer>>,
    pub member: Option<Arc<crate::member::Member>>,
    /// The synchronizer this node belongs to, once known (sequencer: its own; mediator: from
    /// its handshake).
    pub synchronizer: Arc<tokio::sync::RwLock<Option<crate::sequencer_client::Handshake>>>,
    /// HA replicas only.
    pub replication: Option<Arc<crate::ha::Replication>>,
}

impl NodeContext {
    /// Ports as Canton's status service reports them (`ports` map of `Status`).
    pub fn status_ports(&self) -> std::collections::HashMap<String, i32> {
        let mut ports = std::collections::HashMap::new();
        let mut put = |name: &str, port: Option<u16>| {
            if let Some(port) = port {
                ports.insert(name.to_owned(), i32::from(port));
            }
        };
        put("admin", self.ports.admin);
        put("ledger", self.ports.ledger);
        put("public", self.ports.public);
        ports
    }
}

async fn bind(address: &str, port: u16, what: &str) -> Result<TcpListener> {
    TcpListener::bind((address, port)).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Io,
            format!("binding the {what} port {address}:{port}; pick a free port in the config"),
            e,
        )
    })
}

fn port_of(listener: &TcpListener) -> u16 {
    listener.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// Serves gRPC `routes` on `listener`, with the node's fault rules in front of every call.
fn spawn_grpc(
    what: &'static str,
    listener: TcpListener,
    routes: Routes,
    faults: Arc<Faults>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let router = routes
        .prepare()
        .into_axum_router()
        .layer(axum::middleware::from_fn_with_state(
            faults,
            grpc_fault_layer,
        ));
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let served = tonic::transport::Server::builder()
            .add_routes(Routes::from(router))
            .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(server = what, error = %e, "gRPC server failed");
        }
    })
}

fn spawn_http(
    what: &'static str,
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(server = what, error = %e, "HTTP server failed");
        }
    })
}

fn health_routes(reporter: &HealthReporter) -> Routes {
    Routes::new(HealthServer::new(HealthService::from_health_reporter(
        reporter.clone(),
    )))
}

/// Runs the node until `shutdown` fires.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> Result<()> {
    config.validate()?;
    let kind = config.kind();
    let address = config.listen_address.clone();
    let db = Arc::new(Db::connect(&config.database, Duration::from_secs(30)).await?);
    db.prepare(&config).await?;

    let admin = match kind {
        NodeKind::App => None,
        _ => Some(bind(&address, config.ports.admin, "admin API").await?),
    };
    let ledger = match kind {
        NodeKind::Participant => Some(bind(&address, config.ports.ledger, "ledger API").await?),
        _ => None,
    };
    let public = match kind {
        NodeKind::Sequencer => Some(bind(&address, config.ports.public, "public API").await?),
        _ => None,
    };
    let grpc_health = bind(&address, config.ports.grpc_health, "gRPC health").await?;
    let http_health = match config.ports.http_health {
        Some(port) => Some(bind(&address, port, "HTTP health").await?),
        None => None,
    };
    let control_listener = bind(&address, config.ports.control, "control").await?;
    let app_http = match kind {
        NodeKind::App => Some(bind(&address, config.ports.http, "Splice HTTP API").await?),
        _ => None,
    };
    let ports = BoundPorts {
        admin: admin.as_ref().map(port_of),
        ledger: ledger.as_ref().map(port_of),
        public: public.as_ref().map(port_of),
        grpc_health: port_of(&grpc_health),
        http_health: http_health.as_ref().map(port_of),
        control: port_of(&control_listener),
        http: app_http.as_ref().map(port_of),
    };

    let faults = Faults::new();
    let health = Health::new();
    // A replica is passive until it holds the database lock.
    let active = Arc::new(AtomicBool::new(config.replica.is_none()));
    let sequencer = match (&config.synchronizer, kind) {
        (Some(settings), NodeKind::Sequencer) => {
            let synchronizer_id = format!(
                "{}::{}",
                settings.name,
                crate::config::fingerprint_of(&format!(
                    "{}/{}",
                    config.organisation, settings.name
                ))
            );
            let micros = |ms: u64| i64::try_from(ms).unwrap_or(i64::MAX / 1000) * 1000;
            let sequencer = Arc::new(Sequencer::new(
                Arc::clone(&db),
                SynchronizerIdentity {
                    physical_synchronizer_id: format!(
                        "{synchronizer_id}::{}-0",
                        config.protocol_version
                    ),
                    synchronizer_id,
                    protocol_version: config.protocol_version,
                    ledger_time_record_time_tolerance_micros: micros(
                        settings.ledger_time_record_time_tolerance_ms,
                    ),
                    reconciliation_interval_micros: micros(settings.reconciliation_interval_ms),
                },
                Arc::clone(&faults),
                shutdown.clone(),
            ));
            sequencer
                .prepare_topology(&settings.parameters(), &config.uid())
                .await
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Database,
                        format!("seeding the synchronizer's topology: {e}"),
                    )
                })?;
            Some(sequencer)
        }
        _ => None,
    };
    let member = matches!(kind, NodeKind::Participant | NodeKind::Mediator).then(|| {
        crate::member::Member::new(
            Arc::clone(&db),
            Arc::clone(&faults),
            config.member(),
            kind == NodeKind::Participant,
            config.peers.clone(),
            config.workload.rate_per_second,
        )
    });
    let connectivity = match (&member, kind) {
        (Some(member), NodeKind::Participant) => Some(Connectivity::new(
            Arc::clone(&db),
            Arc::clone(&faults),
            config.member(),
            config.protocol_version,
            Arc::new(crate::member::MemberDriver(Arc::clone(member))),
            shutdown.clone(),
        )),
        _ => None,
    };
    let pruning_service = match kind {
        NodeKind::Sequencer => crate::pruning::SEQUENCER_SERVICE,
        NodeKind::Mediator => crate::pruning::MEDIATOR_SERVICE,
        _ => crate::pruning::PARTICIPANT_SERVICE,
    };
    let replication = match (&config.replica, &connectivity) {
        (Some(replica), Some(connectivity)) => Some(crate::ha::Replication::new(
            config.database.clone(),
            replica.clone(),
            Arc::clone(&db),
            Arc::clone(&active),
            Arc::new(ReplicaRole {
                connectivity: Arc::clone(connectivity),
                bootstrap: crate::services::bootstrap_configs(&config),
            }),
        )),
        _ => None,
    };
    let context = Arc::new(NodeContext {
        config: config.clone(),
        db: Arc::clone(&db),
        faults: Arc::clone(&faults),
        health: Arc::clone(&health),
        active: Arc::clone(&active),
        started: Instant::now(),
        ports: ports.clone(),
        shutdown: shutdown.clone(),
        pruning: Pruning::new(Arc::clone(&db), pruning_service),
        connectivity: connectivity.clone(),
        sequencer: sequencer.clone(),
        member: member.clone(),
        synchronizer: Arc::new(tokio::sync::RwLock::new(sequencer.as_ref().map(|s| {
            crate::sequencer_client::Handshake {
                synchronizer_id: s.identity.synchronizer_id.clone(),
                physical_synchronizer_id: s.identity.physical_synchronizer_id.clone(),
                protocol_version: s.identity.protocol_version,
                ledger_time_record_time_tolerance_micros: s
                    .identity
                    .ledger_time_record_time_tolerance_micros,
                reconciliation_interval_micros: s.identity.reconciliation_interval_micros,
                topology: Vec::new(),
            }
        }))),
        replication: replication.clone(),
    });
    if let Some(member) = &member {
        member.spawn_background(shutdown.clone());
        if let (NodeKind::Mediator, Some(url)) = (kind, config.sequencer.clone()) {
            member.spawn_standalone(
                url,
                config.protocol_version,
                shutdown.clone(),
                Arc::clone(&context.synchronizer),
            );
        }
    }

    let (reporter, _) = tonic_health::server::health_reporter();
    health.spawn_checker(
        kind.as_str(),
        Arc::clone(&db),
        Arc::clone(&faults),
        Arc::clone(&active),
        reporter.clone(),
        shutdown.clone(),
    );

    let mut servers = Vec::new();
    let apis = crate::services::routes(&context);
    if let (Some(listener), Some(routes)) = (admin, apis.admin) {
        servers.push(spawn_grpc(
            "admin",
            listener,
            routes,
            Arc::clone(&faults),
            shutdown.clone(),
        ));
    }
    if let (Some(listener), Some(routes)) = (ledger, apis.ledger) {
        servers.push(spawn_grpc(
            "ledger",
            listener,
            routes,
            Arc::clone(&faults),
            shutdown.clone(),
        ));
    }
    if let (Some(listener), Some(sequencer)) = (public, &sequencer) {
        let routes = health_routes(&reporter)
            .add_service(SimSequencerServiceServer::new(Arc::clone(sequencer)));
        servers.push(spawn_grpc(
            "public",
            listener,
            routes,
            Arc::clone(&faults),
            shutdown.clone(),
        ));
    }
    servers.push(spawn_grpc(
        "grpc-health",
        grpc_health,
        health_routes(&reporter),
        Arc::clone(&faults),
        shutdown.clone(),
    ));
    if let Some(listener) = http_health {
        let router = axum::Router::new()
            .route("/health", axum::routing::get(health::http_health))
            .with_state(Arc::clone(&health))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&faults),
                http_fault_layer,
            ));
        servers.push(spawn_http(
            "http-health",
            listener,
            router,
            shutdown.clone(),
        ));
    }
    let mut app_api = None;
    if let (Some(listener), Some(ledger), Some(participant_admin)) = (
        app_http,
        config.participant.clone(),
        config.participant_admin.clone(),
    ) {
        crate::app::spawn_follower(
            Arc::clone(&db),
            ledger.clone(),
            Duration::from_millis(config.poll_interval_ms),
            shutdown.clone(),
        );
        let api = crate::app::AppApi {
            db: Arc::clone(&db),
            participant_admin,
            participant_ledger: ledger,
            faults: Arc::clone(&faults),
        };
        app_api = Some(api.clone());
        servers.push(spawn_http(
            "app-http",
            listener,
            crate::app::router(api),
            shutdown.clone(),
        ));
    }
    let control_router = control::router(ControlState {
        info: NodeInfo {
            node_id: config.id.clone(),
            replica: config.replica.clone(),
            role: String::new(),
            kind: kind.as_str().to_owned(),
            uid: config.uid(),
            member: config.member(),
            pid: std::process::id(),
            ready: false,
            processing_stopped: false,
        },
        active: Arc::clone(&active),
        faults: Arc::clone(&faults),
        db: Arc::clone(&db),
        health: Arc::clone(&health),
        workload: member.as_ref().map(|m| Arc::clone(&m.workload)),
        sequencer: sequencer.clone(),
        redeploy: match (&member, &connectivity) {
            (Some(member), Some(connectivity)) => Some(Arc::new(crate::redeploy::Redeploy {
                config: config.clone(),
                db: Arc::clone(&db),
                connectivity: Arc::clone(connectivity),
                member: Arc::clone(member),
            })),
            _ => None,
        },
        app: app_api,
    });
    servers.push(spawn_http(
        "control",
        control_listener,
        control_router,
        shutdown.clone(),
    ));

    if let Some(replication) = &replication {
        replication.spawn(shutdown.clone());
    } else if let Some(connectivity) = &connectivity {
        let bootstrap = crate::services::bootstrap_configs(&config);
        connectivity.bootstrap(bootstrap).await.map_err(|e| {
            Error::new(
                ErrorKind::Config,
                format!("registering bootstrap synchronizers: {e}"),
            )
        })?;
        connectivity.auto_connect_at_start().await?;
    }

    let ready = ReadyLine {
        node: config.instance_id(),
        kind,
        pid: std::process::id(),
        ports,
    };
    let line = serde_json::to_string(&ready)
        .map_err(|e| Error::with_source(ErrorKind::Io, "encoding the ready line", e))?;
    println!("{READY_MARKER}{line}");
    tracing::info!(node = %config.id, %kind, uid = %config.uid(), "node ready");

    shutdown.cancelled().await;
    tracing::info!("shutting down");
    // Calls held by a hang fault never finish; do not let them block the exit.
    let drain = futures::future::join_all(servers);
    if tokio::time::timeout(Duration::from_secs(3), drain)
        .await
        .is_err()
    {
        tracing::warn!("servers did not drain within 3 s; exiting anyway");
    }
    Ok(())
}

/// A replica's work when it turns active (register the bootstrap configs, reconnect as at a
/// start) or passive (drop its connections).
struct ReplicaRole {
    connectivity: Arc<Connectivity>,
    bootstrap: Vec<crate::connectivity::ConnectionConfig>,
}

impl crate::ha::RoleChange for ReplicaRole {
    fn activated(&self) -> futures::future::BoxFuture<'static, ()> {
        let connectivity = Arc::clone(&self.connectivity);
        let bootstrap = self.bootstrap.clone();
        Box::pin(async move {
            if let Err(e) = connectivity.bootstrap(bootstrap).await {
                tracing::warn!(error = %e, "registering bootstrap synchronizers");
            }
            if let Err(e) = connectivity.auto_connect_at_start().await {
                tracing::warn!(error = %e, "reconnecting as the new active replica");
            }
        })
    }

    fn deactivated(&self) -> futures::future::BoxFuture<'static, ()> {
        let connectivity = Arc::clone(&self.connectivity);
        Box::pin(async move { connectivity.drop_all().await })
    }
}

/// `http://<address>` of a socket address, as gRPC clients want it.
pub fn url_of(addr: SocketAddr) -> String {
    format!("http://{addr}")
}
