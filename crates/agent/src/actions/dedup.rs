//! When apps may submit again after a participant was restored (DESIGN §6).
//!
//! A restore takes a participant back to its backup; the command deduplication state of what
//! it processed after that is gone. A Ledger API app that resubmits a command it sent before
//! the stop could have it executed twice — until the synchronizer's record time has passed the
//! participant's stop point by the ledger-time-record-time tolerance: from then on such a
//! command falls outside the tolerance and is rejected. So:
//! - the restore records the stop point (the last sequencer time the participant had
//!   processed before its database was replaced, or the backup's own point when that database
//!   was lost) in the restored database, table `sidecar_restore.dedup_floor`;
//! - the `dedup_safe` probe part answers once the participant has processed sequencer time
//!   beyond floor + tolerance, the tolerance read from the synchronizer's parameters.
//!
//! Everything is in sequencer time; no wall clock of any host takes part.

use std::sync::Arc;

use serde_json::{Value, json};
use sidecar_backup as backup;
use sidecar_backup::SnapshotPointSource;

use super::ActionError;

const FLOOR_SCHEMA: &str = "CREATE SCHEMA IF NOT EXISTS sidecar_restore; \
     CREATE TABLE IF NOT EXISTS sidecar_restore.dedup_floor ( \
         restored_by text PRIMARY KEY, \
         stop_point_micros bigint NOT NULL, \
         recorded_at timestamptz NOT NULL DEFAULT now())";

/// The guard of a participant whose agent has `[backup]` (it needs the node's database).
pub fn guard_for(
    config: &crate::AgentConfig,
    client: Option<canton_client::CantonClient>,
) -> Result<Option<Arc<DedupGuard>>, backup::Error> {
    let Some(settings) = &config.backup else {
        return Ok(None);
    };
    if config.kind != crate::config::NodeKind::Participant {
        return Ok(None);
    }
    let database = backup::Database::new(settings.database_url.expose())?;
    let point = backup::SqlPointSource::for_kind(
        database.clone(),
        backup::NodeKind::Participant,
        settings.snapshot_point_query.as_deref(),
    )?;
    Ok(Some(Arc::new(DedupGuard::new(
        config.node.logical(),
        database,
        Arc::new(point),
        client,
    ))))
}

/// The dedup guard of one participant.
pub struct DedupGuard {
    node: String,
    database: backup::Database,
    point: Arc<backup::SqlPointSource>,
    client: Option<canton_client::CantonClient>,
}

impl DedupGuard {
    pub fn new(
        node: &str,
        database: backup::Database,
        point: Arc<backup::SqlPointSource>,
        client: Option<canton_client::CantonClient>,
    ) -> Self {
        Self {
            node: node.to_owned(),
            database,
            point,
            client,
        }
    }

    /// The sequencer time the participant had processed, if its database answers.
    pub async fn processed_sequencer_time(&self) -> Option<i64> {
        self.point.read().await.ok()?.sequencer_ts_micros
    }

    /// Where the participant stands in its database (sequencer time and ledger end).
    pub async fn point(&self) -> Result<backup::SnapshotPoint, backup::Error> {
        self.point.read().await
    }

    /// Records `floor` in the restored database for `restored_by`, the restoring command.
    pub async fn record_floor(&self, restored_by: &str, floor: i64) -> Result<(), ActionError> {
        let client = self.database.connect().await.map_err(|e| {
            ActionError::Failed(format!(
                "{}: recording the dedup floor after the restore: {e}",
                self.node
            ))
        })?;
        let failed = |e: tokio_postgres::Error| {
            ActionError::Failed(format!(
                "{}: recording the dedup floor after the restore: {e}",
                self.node
            ))
        };
        client.batch_execute(FLOOR_SCHEMA).await.map_err(failed)?;
        client
            .execute(
                "INSERT INTO sidecar_restore.dedup_floor (restored_by, stop_point_micros) \
                 VALUES ($1, $2) ON CONFLICT (restored_by) DO NOTHING",
                &[&restored_by, &floor],
            )
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// The `dedup_safe` answer: `Ok` with the numbers when safe (or nothing was restored),
    /// `Failed` naming how far there is still to go (the runbook retries the check).
    pub async fn assess(&self) -> Result<Value, ActionError> {
        let unavailable =
            |what: &str, e: String| ActionError::Unavailable(format!("{}: {what}: {e}", self.node));
        let client = self
            .database
            .connect()
            .await
            .map_err(|e| unavailable("reading the dedup floor", e.to_string()))?;
        let floor: Option<i64> = match client
            .query_one(
                "SELECT max(stop_point_micros) FROM sidecar_restore.dedup_floor",
                &[],
            )
            .await
        {
            Ok(row) => row.get(0),
            // No table: this database was never restored by us, so nothing was forgotten.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => None,
            Err(e) => return Err(unavailable("reading the dedup floor", e.to_string())),
        };
        let Some(floor) = floor else {
            return Ok(json!({"safe": true, "restored": false}));
        };
        let tolerance = self.tolerance_micros().await?;
        let processed = self.processed_sequencer_time().await.ok_or_else(|| {
            unavailable(
                "reading the processed sequencer time",
                "no answer".to_owned(),
            )
        })?;
        let safe_after = floor.saturating_add(tolerance);
        let numbers = json!({
            "safe": processed > safe_after,
            "restored": true,
            "stop_point_micros": floor,
            "tolerance_micros": tolerance,
            "processed_micros": processed,
        });
        if processed > safe_after {
            Ok(numbers)
        } else {
            Err(ActionError::Failed(format!(
                "{}: not yet safe for apps: processed sequencer time {processed} µs, needs more \
                 than stop point {floor} µs + ledger-time-record-time tolerance {tolerance} µs \
                 ({} µs to go)",
                self.node,
                safe_after - processed + 1
            )))
        }
    }

    /// The largest ledger-time-record-time tolerance of the connected synchronizers.
    async fn tolerance_micros(&self) -> Result<i64, ActionError> {
        let unavailable = |e: canton_client::Error| {
            ActionError::Unavailable(format!(
                "{}: reading the ledger-time-record-time tolerance: {e}",
                self.node
            ))
        };
        let client = self.client.as_ref().ok_or_else(|| {
            ActionError::Failed(format!(
                "{}: dedup_safe needs the [canton] admin API to read synchronizer parameters",
                self.node
            ))
        })?;
        let connected = client
            .list_connected_synchronizers()
            .await
            .map_err(unavailable)?;
        if connected.is_empty() {
            return Err(ActionError::Failed(format!(
                "{}: not connected to any synchronizer yet; reconnect it first",
                self.node
            )));
        }
        let mut tolerance = 0i64;
        for synchronizer in connected {
            for period in client
                .synchronizer_parameters(&synchronizer.synchronizer_id)
                .await
                .map_err(unavailable)?
            {
                let micros = i64::try_from(period.ledger_time_record_time_tolerance.as_micros())
                    .unwrap_or(i64::MAX);
                tolerance = tolerance.max(micros);
            }
        }
        Ok(tolerance)
    }
}
