//! HA participant replicas on one database, as Canton runs them: the active replica holds a
//! Postgres advisory lock on a connection of its own, passive replicas try to take it; a killed
//! active loses its connection and with it the lock. `SetPassive` hands over only when a passive
//! replica is there to take the lock; otherwise the active stays active.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::db::Db;
use crate::error::{CallError, CantonError, Error};
use crate::sequencer::now_micros;

/// The advisory lock key of the active replica.
const ACTIVE_LOCK: i64 = 0x6361_6e74_6f6e_6861;
const PERIOD: Duration = Duration::from_millis(200);
/// A passive replica counts as present when it reported within this window.
const PRESENT_MICROS: i64 = 1_000_000;
const HANDOVER: Duration = Duration::from_secs(5);

pub const NO_PASSIVE_REPLICA: &str = "NO_PASSIVE_REPLICA_TO_TAKE_OVER";

/// What the node does when its role changes.
pub trait RoleChange: Send + Sync + 'static {
    fn activated(&self) -> BoxFuture<'static, ()>;
    fn deactivated(&self) -> BoxFuture<'static, ()>;
}

pub struct Replication {
    conninfo: String,
    replica: String,
    db: Arc<Db>,
    active: Arc<AtomicBool>,
    /// The connection holding the lock while active.
    lock: Mutex<Option<Client>>,
    /// After handing over, the replica does not take the lock back before this time (µs).
    hold_off_until: std::sync::atomic::AtomicI64,
    role_change: Arc<dyn RoleChange>,
}

impl Replication {
    pub fn new(
        conninfo: String,
        replica: String,
        db: Arc<Db>,
        active: Arc<AtomicBool>,
        role_change: Arc<dyn RoleChange>,
    ) -> Arc<Self> {
        Arc::new(Self {
            conninfo,
            replica,
            db,
            active,
            lock: Mutex::new(None),
            hold_off_until: std::sync::atomic::AtomicI64::new(0),
            role_change,
        })
    }

    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    async fn try_acquire(&self) -> Result<bool, Error> {
        let mut lock = self.lock.lock().await;
        if lock.as_ref().is_none_or(Client::is_closed) {
            let (client, connection) = tokio_postgres::connect(&self.conninfo, NoTls)
                .await
                .map_err(|e| Error::db("opening the replica lock connection", e))?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::warn!(error = %e, "replica lock connection ended");
                }
            });
            *lock = Some(client);
        }
        let Some(client) = lock.as_ref() else {
            return Ok(false);
        };
        let acquired: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ACTIVE_LOCK])
            .await
            .map_err(|e| Error::db("trying the replica lock", e))?
            .get(0);
        Ok(acquired)
    }

    /// Closing the connection releases the session lock.
    async fn release(&self) {
        *self.lock.lock().await = None;
    }

    async fn lock_lost(&self) -> bool {
        self.lock
            .lock()
            .await
            .as_ref()
            .is_none_or(Client::is_closed)
    }

    async fn report(&self) -> Result<(), Error> {
        let role = if self.is_active() {
            "active"
        } else {
            "passive"
        };
        let mut guard = self.db.lock().await?;
        guard
            .client()?
            .execute(
                "INSERT INTO ha_replica (replica, role, heartbeat_micros) VALUES ($1, $2, $3)
                 ON CONFLICT (replica) DO UPDATE SET role = $2, heartbeat_micros = $3",
                &[&self.replica, &role, &now_micros()],
            )
            .await
            .map_err(|e| Error::db("reporting the replica role", e))?;
        Ok(())
    }

    async fn become_active(&self) {
        self.active.store(true, Ordering::SeqCst);
        tracing::info!(replica = %self.replica, "replica is active");
        if let Err(e) = self.report().await {
            tracing::warn!(error = %e, "cannot report the replica role");
        }
        self.role_change.activated().await;
    }

    async fn become_passive(&self) {
        self.active.store(false, Ordering::SeqCst);
        tracing::info!(replica = %self.replica, "replica is passive");
        self.role_change.deactivated().await;
        if let Err(e) = self.report().await {
            tracing::warn!(error = %e, "cannot report the replica role");
        }
    }

    /// Reports the role and, while passive, tries to take the lock, every 200 ms.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) {
        let replication = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                if replication.is_active() {
                    if replication.lock_lost().await {
                        tracing::warn!("lost the replica lock connection");
                        replication.become_passive().await;
                    }
                } else if now_micros() >= replication.hold_off_until.load(Ordering::SeqCst) {
                    match replication.try_acquire().await {
                        Ok(true) => replication.become_active().await,
                        Ok(false) => {}
                        Err(e) => tracing::debug!(error = %e, "cannot try the replica lock"),
                    }
                }
                if let Err(e) = replication.report().await {
                    tracing::debug!(error = %e, "cannot report the replica role");
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(PERIOD) => {}
                }
            }
        });
    }

    /// Another replica that reported itself recently.
    async fn present_replicas(&self, role: &str, since: i64) -> Result<Vec<String>, Error> {
        let mut guard = self.db.lock().await?;
        let rows = guard
            .client()?
            .query(
                "SELECT replica FROM ha_replica WHERE replica <> $1 AND role = $2 AND heartbeat_micros >= $3 ORDER BY replica",
                &[&self.replica, &role, &since],
            )
            .await
            .map_err(|e| Error::db("listing replicas", e))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// SetPassive: hands the lock over to a passive replica; returns the replica that took
    /// over. Without one (or when none takes the lock in time) this replica stays active.
    pub async fn set_passive(&self) -> Result<String, CallError> {
        if !self.is_active() {
            return Ok(self.replica.clone());
        }
        let waiting = self
            .present_replicas("passive", now_micros() - PRESENT_MICROS)
            .await?;
        if waiting.is_empty() {
            return Err(CantonError::new(
                Code::FailedPrecondition,
                NO_PASSIVE_REPLICA,
                format!(
                    "replica {} stays active: no passive replica is running to take over",
                    self.replica
                ),
            )
            .into());
        }
        let handed_over_at = now_micros();
        self.hold_off_until.store(
            handed_over_at + i64::try_from(HANDOVER.as_micros()).unwrap_or(i64::MAX) * 2,
            Ordering::SeqCst,
        );
        self.become_passive().await;
        self.release().await;
        let deadline = tokio::time::Instant::now() + HANDOVER;
        loop {
            let taken = self.present_replicas("active", handed_over_at).await?;
            if let Some(successor) = taken.into_iter().next() {
                // The successor holds the lock now; trying it again is harmless, and this
                // replica must be ready to take over when the successor dies.
                self.hold_off_until.store(0, Ordering::SeqCst);
                return Ok(successor);
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Nobody took the lock: take it back, as Canton keeps the active replica.
        self.hold_off_until.store(0, Ordering::SeqCst);
        if self.try_acquire().await.unwrap_or(false) {
            self.become_active().await;
        }
        Err(CantonError::new(
            Code::FailedPrecondition,
            NO_PASSIVE_REPLICA,
            format!(
                "no passive replica took over within {HANDOVER:?}; replica {} {}",
                self.replica,
                if self.is_active() {
                    "stays active"
                } else {
                    "is passive"
                }
            ),
        )
        .into())
    }
}
