//! Pruning schedules (participant, sequencer, mediator) with Canton's validation.

use std::sync::Arc;

use tonic::Code;

use crate::db::{Db, log_action};
use crate::error::{CallError, CantonError, Error};

pub const NO_SCHEDULE: &str = "NO_PRUNING_SCHEDULE";
const INVALID: &str = "INVALID_ARGUMENT";

/// A pruning schedule as stored; durations in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub cron: String,
    pub max_duration_ms: i64,
    pub retention_ms: i64,
    /// Participants only.
    pub prune_internally_only: bool,
}

/// The schedule store of one node; `service` is the gRPC service path prefix used in the
/// action log (`/pkg.Service/`).
pub struct Pruning {
    db: Arc<Db>,
    service: &'static str,
}

pub const PARTICIPANT_SERVICE: &str =
    "/com.digitalasset.canton.admin.participant.v30.PruningService/";
pub const SEQUENCER_SERVICE: &str =
    "/com.digitalasset.canton.sequencer.admin.v30.SequencerPruningAdministrationService/";
pub const MEDIATOR_SERVICE: &str =
    "/com.digitalasset.canton.mediator.admin.v30.MediatorAdministrationService/";

fn invalid(cause: String) -> CallError {
    CantonError::new(Code::InvalidArgument, INVALID, cause).into()
}

/// Canton schedules use Quartz cron expressions: 6 or 7 fields, seconds first.
pub fn check_cron(cron: &str) -> Result<(), CallError> {
    let fields: Vec<&str> = cron.split_whitespace().collect();
    if !(6..=7).contains(&fields.len()) {
        return Err(invalid(format!(
            "cron {cron:?} has {} fields; Canton expects a Quartz expression with 6 or 7 (seconds first), e.g. \"0 0 2 * * ?\"",
            fields.len()
        )));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "*?,/-#".contains(c);
    if let Some(bad) = fields.iter().find(|f| !f.chars().all(allowed)) {
        return Err(invalid(format!(
            "cron {cron:?}: field {bad:?} is not a cron field"
        )));
    }
    Ok(())
}

fn check_max_duration(ms: i64) -> Result<(), CallError> {
    if ms <= 0 {
        return Err(invalid(format!(
            "max_duration must be positive, got {ms} ms"
        )));
    }
    Ok(())
}

fn check_retention(ms: i64) -> Result<(), CallError> {
    if ms < 0 {
        return Err(invalid(format!(
            "retention must not be negative, got {ms} ms"
        )));
    }
    Ok(())
}

impl Pruning {
    pub fn new(db: Arc<Db>, service: &'static str) -> Self {
        Self { db, service }
    }

    /// The gRPC service path prefix (`/pkg.Service/`) of the calls that change the schedule.
    pub fn service(&self) -> &'static str {
        self.service
    }

    pub async fn set(&self, call: &str, schedule: Schedule) -> Result<(), CallError> {
        check_cron(&schedule.cron)?;
        check_max_duration(schedule.max_duration_ms)?;
        check_retention(schedule.retention_ms)?;
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a schedule change", e))?;
        tx.execute(
            "INSERT INTO pruning_schedule (cron, max_duration_ms, retention_ms, prune_internally_only)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (singleton) DO UPDATE SET cron = $1, max_duration_ms = $2, retention_ms = $3,
                 prune_internally_only = $4",
            &[
                &schedule.cron,
                &schedule.max_duration_ms,
                &schedule.retention_ms,
                &schedule.prune_internally_only,
            ],
        )
        .await
        .map_err(|e| Error::db("storing the pruning schedule", e))?;
        log_action(
            &tx,
            &format!("{}{call}", self.service),
            &format!(
                "cron={:?} max_duration_ms={} retention_ms={} prune_internally_only={}",
                schedule.cron,
                schedule.max_duration_ms,
                schedule.retention_ms,
                schedule.prune_internally_only
            ),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing the pruning schedule", e))?;
        Ok(())
    }

    pub async fn get(&self) -> Result<Option<Schedule>, CallError> {
        let mut guard = self.db.lock().await?;
        let row = guard
            .client()?
            .query_opt(
                "SELECT cron, max_duration_ms, retention_ms, prune_internally_only FROM pruning_schedule",
                &[],
            )
            .await
            .map_err(|e| Error::db("reading the pruning schedule", e))?;
        Ok(row.map(|row| Schedule {
            cron: row.get(0),
            max_duration_ms: row.get(1),
            retention_ms: row.get(2),
            prune_internally_only: row.get(3),
        }))
    }

    pub async fn clear(&self) -> Result<(), CallError> {
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting ClearSchedule", e))?;
        let removed = tx
            .execute("DELETE FROM pruning_schedule", &[])
            .await
            .map_err(|e| Error::db("clearing the pruning schedule", e))?;
        log_action(
            &tx,
            &format!("{}ClearSchedule", self.service),
            &format!("removed={removed}"),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing ClearSchedule", e))?;
        Ok(())
    }

    /// SetCron / SetMaxDuration / SetRetention: change one field of an existing schedule.
    pub async fn update(&self, field: ScheduleField) -> Result<(), CallError> {
        let (call, column, text, value): (&str, &str, Option<String>, Option<i64>) = match &field {
            ScheduleField::Cron(cron) => {
                check_cron(cron)?;
                ("SetCron", "cron", Some(cron.clone()), None)
            }
            ScheduleField::MaxDurationMs(ms) => {
                check_max_duration(*ms)?;
                ("SetMaxDuration", "max_duration_ms", None, Some(*ms))
            }
            ScheduleField::RetentionMs(ms) => {
                check_retention(*ms)?;
                ("SetRetention", "retention_ms", None, Some(*ms))
            }
        };
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a schedule update", e))?;
        let updated = match (&text, value) {
            (Some(text), _) => {
                tx.execute(
                    &format!("UPDATE pruning_schedule SET {column} = $1"),
                    &[text],
                )
                .await
            }
            (None, Some(value)) => {
                tx.execute(
                    &format!("UPDATE pruning_schedule SET {column} = $1"),
                    &[&value],
                )
                .await
            }
            (None, None) => Ok(0),
        }
        .map_err(|e| Error::db("updating the pruning schedule", e))?;
        if updated == 0 {
            return Err(CantonError::new(
                Code::InvalidArgument,
                NO_SCHEDULE,
                format!("{call}: no pruning schedule is set; set a whole schedule first"),
            )
            .into());
        }
        log_action(
            &tx,
            &format!("{}{call}", self.service),
            &format!("{field:?}"),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a schedule update", e))?;
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScheduleField {
    Cron(String),
    MaxDurationMs(i64),
    RetentionMs(i64),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartz_cron_needs_six_or_seven_fields() {
        assert!(check_cron("0 0 2 * * ?").is_ok());
        assert!(check_cron("0 0/5 * * * ? 2030").is_ok());
        assert!(check_cron("0 2 * * *").is_err());
        assert!(check_cron("0 0 2 * * ? ;drop").is_err());
    }
}
