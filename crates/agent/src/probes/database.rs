//! Database reachability: a `SELECT 1` over a kept connection, reconnecting when it broke.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::config::Schedule;
use crate::probe::{Facts, Probe, ProbeOutcome, ReasonKind};
use crate::probes::is_connection_failure;

/// Checks that the node's database answers.
pub struct DatabaseProbe {
    conninfo: String,
    schedule: Schedule,
    // One connection kept across runs: a new one per run would cost the database a backend
    // start every period.
    client: Arc<Mutex<Option<Client>>>,
}

impl DatabaseProbe {
    pub fn new(conninfo: String, schedule: Schedule) -> Self {
        Self {
            conninfo,
            schedule,
            client: Arc::new(Mutex::new(None)),
        }
    }
}

impl Probe for DatabaseProbe {
    fn name(&self) -> &'static str {
        "database"
    }

    fn schedule(&self) -> Schedule {
        self.schedule
    }

    fn check(&self) -> BoxFuture<'static, ProbeOutcome> {
        let conninfo = self.conninfo.clone();
        let slot = Arc::clone(&self.client);
        Box::pin(async move {
            let mut slot = slot.lock().await;
            if slot.as_ref().is_none_or(Client::is_closed) {
                let mut config = match conninfo.parse::<tokio_postgres::Config>() {
                    Ok(config) => config,
                    Err(error) => return failure(&error),
                };
                // Named, so a restore can tell the agent's own connection from the node's.
                if config.get_application_name().is_none() {
                    config.application_name(crate::actions::AGENT_APPLICATION_NAME);
                }
                match config.connect(NoTls).await {
                    Ok((client, connection)) => {
                        tokio::spawn(async move {
                            if let Err(error) = connection.await {
                                tracing::debug!(%error, "database probe connection ended");
                            }
                        });
                        *slot = Some(client);
                    }
                    Err(error) => return failure(&error),
                }
            }
            let Some(client) = slot.as_ref() else {
                return ProbeOutcome::failed(ReasonKind::Unreachable, "no connection");
            };
            match client.simple_query("SELECT 1").await {
                Ok(_) => ProbeOutcome::Healthy(Facts {
                    database_reachable: Some(true),
                    ..Facts::default()
                }),
                Err(error) => {
                    *slot = None;
                    failure(&error)
                }
            }
        })
    }
}

fn failure(error: &tokio_postgres::Error) -> ProbeOutcome {
    let kind = if error.is_closed() || is_connection_failure(error) {
        ReasonKind::Unreachable
    } else {
        ReasonKind::Error
    };
    let detail = match error.as_db_error() {
        Some(db) => format!("database: {} ({})", db.message(), db.code().code()),
        None => format!("database: {error}"),
    };
    ProbeOutcome::failed(kind, detail)
}
