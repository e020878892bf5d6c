//! Readiness as Canton reports it: the `grpc.health.v1` server (services `""`, the node kind's
//! readiness service and `liveness`) and the optional HTTP `GET /health` (200 serving, 503 not
//! serving, 500 otherwise).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::db::Db;
use crate::faults::Faults;

/// The node's readiness, derived from its storage, HA state and processing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Not determined yet (the first check has not run).
    Unknown,
    Serving,
    NotServing(String),
}

pub struct Health {
    readiness: watch::Sender<Readiness>,
}

impl Health {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            readiness: watch::Sender::new(Readiness::Unknown),
        })
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.borrow().clone()
    }

    /// Re-evaluates readiness every `period` and publishes it to the gRPC health reporter.
    pub fn spawn_checker(
        self: &Arc<Self>,
        service: &'static str,
        db: Arc<Db>,
        faults: Arc<Faults>,
        active: Arc<AtomicBool>,
        reporter: HealthReporter,
        shutdown: CancellationToken,
    ) {
        let health = Arc::clone(self);
        tokio::spawn(async move {
            reporter
                .set_service_status("liveness", ServingStatus::Serving)
                .await;
            loop {
                let readiness = if !db.ping().await {
                    Readiness::NotServing("storage: database not reachable".to_owned())
                } else if !active.load(Ordering::SeqCst) {
                    Readiness::NotServing("storage: instance is passive".to_owned())
                } else if faults.processing_stopped() {
                    Readiness::NotServing("processing stopped".to_owned())
                } else {
                    Readiness::Serving
                };
                let status = match readiness {
                    Readiness::Serving => ServingStatus::Serving,
                    _ => ServingStatus::NotServing,
                };
                reporter.set_service_status(service, status).await;
                reporter.set_service_status("", status).await;
                health.readiness.send_if_modified(|current| {
                    if *current == readiness {
                        return false;
                    }
                    tracing::info!(?readiness, "readiness changed");
                    *current = readiness;
                    true
                });
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
    }
}

/// `GET /health` as Canton's HTTP health server answers it.
pub async fn http_health(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    match health.readiness() {
        Readiness::Serving => (StatusCode::OK, "storage: ok\n".to_owned()),
        Readiness::NotServing(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        Readiness::Unknown => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "readiness not determined yet\n".to_owned(),
        ),
    }
}
