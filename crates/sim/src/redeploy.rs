//! A participant redeployed on a new, empty database with the same node configuration, while
//! its process (and so its ports) stays: what a network disaster recovery does to every
//! participant before its app imports the migration dump.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::connectivity::Connectivity;
use crate::db::Db;
use crate::error::{CallError, Error, ErrorKind};
use crate::member::Member;

/// The action log method of a reset (the first entry of the new database).
pub const RESET_METHOD: &str = "POST /control/reset-database";

/// Body of `POST /control/reset-database` (all optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetRequest {
    /// The migration id the participant is redeployed for, recorded in the new database.
    #[serde(default)]
    pub migration_id: Option<i64>,
}

/// Answer of a reset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResetDone {
    pub node: String,
    pub uid: String,
    pub migration_id: Option<i64>,
    /// Tables of the old database that were dropped.
    pub tables_dropped: usize,
    /// Synchronizer aliases registered again from the node configuration (not connected).
    pub registered: Vec<String>,
}

/// Why a reset did not happen.
#[derive(Debug)]
pub enum ResetRefused {
    /// Healthy connections to these aliases.
    Connected(Vec<String>),
    /// HA replicas share one database with their peers.
    Replica(String),
    Failed(String),
}

/// What a participant's reset works on.
pub struct Redeploy {
    pub config: NodeConfig,
    pub db: Arc<Db>,
    pub connectivity: Arc<Connectivity>,
    pub member: Arc<Member>,
}

impl Redeploy {
    /// Ends every synchronizer connection and reconnect loop (refusing while a connection is
    /// healthy), waits for the event processing to stop, drops every table and prepares the
    /// schema again, records the reset, registers the configured synchronizers as a first
    /// start does (without connecting) and puts the workload back to its configured rate.
    pub async fn reset(&self, migration_id: Option<i64>) -> Result<ResetDone, ResetRefused> {
        if let Some(replica) = &self.config.replica {
            return Err(ResetRefused::Replica(replica.clone()));
        }
        let started = std::time::Instant::now();
        let outcome = self
            .connectivity
            .while_offline(|| async {
                self.member.halt(Duration::from_secs(10)).await;
                let dropped = self.db.reset(&self.config).await?;
                self.record(migration_id, dropped).await?;
                let bootstrap = crate::services::bootstrap_configs(&self.config);
                let registered = bootstrap.iter().map(|c| c.alias.clone()).collect();
                self.connectivity
                    .bootstrap(bootstrap)
                    .await
                    .map_err(|e| Error::new(ErrorKind::Database, e.to_string()))?;
                self.member
                    .workload
                    .set(self.config.workload.rate_per_second);
                Ok::<_, Error>((dropped, registered))
            })
            .await;
        match outcome {
            Err(aliases) => Err(ResetRefused::Connected(aliases)),
            Ok(Err(e)) => Err(ResetRefused::Failed(e.to_string())),
            Ok(Ok((tables_dropped, registered))) => {
                tracing::info!(?migration_id, tables_dropped, elapsed = ?started.elapsed(), "database reset");
                Ok(ResetDone {
                    node: self.config.id.clone(),
                    uid: self.config.uid(),
                    migration_id,
                    tables_dropped,
                    registered,
                })
            }
        }
    }

    async fn record(&self, migration_id: Option<i64>, dropped: usize) -> Result<(), Error> {
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting to record the reset", e))?;
        tx.execute(
            "INSERT INTO sim_redeploy (migration_id) VALUES ($1)",
            &[&migration_id],
        )
        .await
        .map_err(|e| Error::db("recording the reset", e))?;
        crate::db::log_action(
            &tx,
            RESET_METHOD,
            &format!(
                "migration_id={} tables_dropped={dropped}",
                migration_id.map_or("none".to_owned(), |id| id.to_string())
            ),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing the reset record", e))
    }
}

/// The migration id recorded by the last reset of this database (`None`: never reset, or
/// reset without one).
pub async fn recorded_migration_id(db: &Db) -> Result<Option<i64>, CallError> {
    let mut guard = db.lock().await?;
    let row = guard
        .client()?
        .query_opt("SELECT migration_id FROM sim_redeploy", &[])
        .await
        .map_err(|e| Error::db("reading the redeploy record", e))?;
    Ok(row.and_then(|r| r.get(0)))
}
