//! Pruning schedule calls shared by the participant's `PruningService`, the sequencer's and
//! the mediator's administration services.

use proto_canton::admin::pruning::v30 as wire;
use tonic::{Response, Status};

use super::common::{Context, duration_of_millis, logged, millis, missing};
use crate::error::CallError;
use crate::pruning::{Schedule, ScheduleField};

fn schedule_from_wire(
    schedule: Option<&wire::PruningSchedule>,
    prune_internally_only: bool,
) -> Result<Schedule, CallError> {
    let schedule = schedule.ok_or_else(|| missing("schedule"))?;
    Ok(Schedule {
        cron: schedule.cron.clone(),
        max_duration_ms: millis(schedule.max_duration.as_ref(), "max_duration")?,
        retention_ms: millis(schedule.retention.as_ref(), "retention")?,
        prune_internally_only,
    })
}

fn schedule_to_wire(schedule: &Schedule) -> wire::PruningSchedule {
    wire::PruningSchedule {
        cron: schedule.cron.clone(),
        max_duration: Some(duration_of_millis(schedule.max_duration_ms)),
        retention: Some(duration_of_millis(schedule.retention_ms)),
    }
}

fn method(context: &Context, call: &str) -> String {
    format!("{}{call}", context.pruning.service())
}

pub async fn set_schedule(
    context: &Context,
    request: wire::SetScheduleRequest,
) -> Result<Response<wire::SetScheduleResponse>, Status> {
    let detail = format!("{:?}", request.schedule);
    logged(context, &method(context, "SetSchedule"), detail, async {
        let schedule = schedule_from_wire(request.schedule.as_ref(), false)?;
        context.pruning.set("SetSchedule", schedule).await?;
        Ok(wire::SetScheduleResponse {})
    })
    .await
}

pub async fn set_participant_schedule(
    context: &Context,
    request: wire::SetParticipantScheduleRequest,
) -> Result<Response<wire::SetParticipantScheduleResponse>, Status> {
    let detail = format!("{:?}", request.schedule);
    logged(
        context,
        &method(context, "SetParticipantSchedule"),
        detail,
        async {
            let outer = request
                .schedule
                .as_ref()
                .ok_or_else(|| missing("schedule"))?;
            let schedule =
                schedule_from_wire(outer.schedule.as_ref(), outer.prune_internally_only)?;
            context
                .pruning
                .set("SetParticipantSchedule", schedule)
                .await?;
            Ok(wire::SetParticipantScheduleResponse {})
        },
    )
    .await
}

pub async fn get_schedule(
    context: &Context,
) -> Result<Response<wire::GetScheduleResponse>, Status> {
    let schedule = context.pruning.get().await?;
    Ok(Response::new(wire::GetScheduleResponse {
        schedule: schedule.as_ref().map(schedule_to_wire),
    }))
}

pub async fn get_participant_schedule(
    context: &Context,
) -> Result<Response<wire::GetParticipantScheduleResponse>, Status> {
    let schedule = context.pruning.get().await?;
    Ok(Response::new(wire::GetParticipantScheduleResponse {
        schedule: schedule.as_ref().map(|s| wire::ParticipantPruningSchedule {
            schedule: Some(schedule_to_wire(s)),
            prune_internally_only: s.prune_internally_only,
        }),
    }))
}

pub async fn clear_schedule(
    context: &Context,
) -> Result<Response<wire::ClearScheduleResponse>, Status> {
    logged(
        context,
        &method(context, "ClearSchedule"),
        String::new(),
        async {
            context.pruning.clear().await?;
            Ok(wire::ClearScheduleResponse {})
        },
    )
    .await
}

pub async fn set_cron(
    context: &Context,
    request: wire::SetCronRequest,
) -> Result<Response<wire::SetCronResponse>, Status> {
    logged(
        context,
        &method(context, "SetCron"),
        format!("cron={:?}", request.cron),
        async {
            context
                .pruning
                .update(ScheduleField::Cron(request.cron.clone()))
                .await?;
            Ok(wire::SetCronResponse {})
        },
    )
    .await
}

pub async fn set_max_duration(
    context: &Context,
    request: wire::SetMaxDurationRequest,
) -> Result<Response<wire::SetMaxDurationResponse>, Status> {
    let detail = format!("{:?}", request.max_duration);
    logged(context, &method(context, "SetMaxDuration"), detail, async {
        let ms = millis(request.max_duration.as_ref(), "max_duration")?;
        context
            .pruning
            .update(ScheduleField::MaxDurationMs(ms))
            .await?;
        Ok(wire::SetMaxDurationResponse {})
    })
    .await
}

pub async fn set_retention(
    context: &Context,
    request: wire::SetRetentionRequest,
) -> Result<Response<wire::SetRetentionResponse>, Status> {
    let detail = format!("{:?}", request.retention);
    logged(context, &method(context, "SetRetention"), detail, async {
        let ms = millis(request.retention.as_ref(), "retention")?;
        context
            .pruning
            .update(ScheduleField::RetentionMs(ms))
            .await?;
        Ok(wire::SetRetentionResponse {})
    })
    .await
}
