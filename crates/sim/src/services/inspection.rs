//! `ParticipantInspectionService`: ACS commitment lookups and offsets by time.

use proto_canton::admin::participant::v30 as admin;
use proto_canton::admin::participant::v30::participant_inspection_service_server::ParticipantInspectionService;
use tonic::{Request, Response, Status};

use super::common::{Context, timestamp_micros, timestamp_of_micros};
use crate::error::{CallError, Error};

pub struct InspectionApi {
    pub context: Context,
}

/// One stored commitment row.
struct Row {
    counter_participant: String,
    start: i64,
    end: i64,
    own: Option<Vec<u8>>,
    received: Option<Vec<u8>>,
}

fn uid_of(member: &str) -> String {
    member
        .split_once("::")
        .map_or(member, |(_, uid)| uid)
        .to_owned()
}

impl InspectionApi {
    async fn rows(&self) -> Result<Vec<Row>, CallError> {
        let mut guard = self.context.db.lock().await?;
        let rows = guard
            .client()?
            .query(
                "SELECT counter_participant, period_start_micros, period_end_micros, own, received
                 FROM acs_commitment ORDER BY period_end_micros, counter_participant",
                &[],
            )
            .await
            .map_err(|e| Error::db("reading commitments", e))?;
        Ok(rows
            .iter()
            .map(|r| Row {
                counter_participant: r.get(0),
                start: r.get(1),
                end: r.get(2),
                own: r.get(3),
                received: r.get(4),
            })
            .collect())
    }

    async fn synchronizer_id(&self) -> String {
        let Some(connectivity) = &self.context.connectivity else {
            return String::new();
        };
        connectivity
            .list_connected()
            .await
            .first()
            .map(|c| c.synchronizer_id.clone())
            .unwrap_or_default()
    }

    /// Rows passing the request's counter-participant and time filters.
    fn filter(
        rows: Vec<Row>,
        counter_participants: &[String],
        ranges: &[admin::SynchronizerTimeRange],
    ) -> Result<Vec<Row>, CallError> {
        let latest = rows.iter().map(|r| r.end).max().unwrap_or(0);
        let mut bounds = Vec::new();
        for range in ranges {
            match &range.interval {
                None => bounds.push((latest - 1, latest)),
                Some(interval) => bounds.push((
                    timestamp_micros(interval.from_exclusive.as_ref(), "from_exclusive")?,
                    timestamp_micros(interval.to_inclusive.as_ref(), "to_inclusive")?,
                )),
            }
        }
        Ok(rows
            .into_iter()
            .filter(|r| {
                counter_participants.is_empty()
                    || counter_participants.iter().any(|c| {
                        *c == uid_of(&r.counter_participant) || *c == r.counter_participant
                    })
            })
            .filter(|r| {
                bounds.is_empty()
                    || bounds
                        .iter()
                        .any(|(from, to)| r.end > *from && r.end <= *to)
            })
            .collect())
    }
}

fn interval(row: &Row) -> admin::Interval {
    admin::Interval {
        start_tick_exclusive: Some(timestamp_of_micros(row.start)),
        end_tick_inclusive: Some(timestamp_of_micros(row.end)),
    }
}

#[tonic::async_trait]
impl ParticipantInspectionService for InspectionApi {
    async fn lookup_offset_by_time(
        &self,
        request: Request<admin::LookupOffsetByTimeRequest>,
    ) -> Result<Response<admin::LookupOffsetByTimeResponse>, Status> {
        let at = timestamp_micros(request.into_inner().timestamp.as_ref(), "timestamp")
            .map_err(CallError::from)?;
        let mut guard = self.context.db.lock().await.map_err(CallError::from)?;
        let row = guard
            .client()
            .map_err(CallError::from)?
            .query_one(
                "SELECT max(ledger_offset) FROM participant_offset WHERE record_time_micros <= $1",
                &[&at],
            )
            .await
            .map_err(|e| CallError::from(Error::db("looking up an offset", e)))?;
        Ok(Response::new(admin::LookupOffsetByTimeResponse {
            offset: row.get(0),
        }))
    }

    async fn lookup_sent_acs_commitments(
        &self,
        request: Request<admin::LookupSentAcsCommitmentsRequest>,
    ) -> Result<Response<admin::LookupSentAcsCommitmentsResponse>, Status> {
        use admin::SentCommitmentState as State;
        let request = request.into_inner();
        let rows = Self::filter(
            self.rows().await?,
            &request.counter_participant_ids,
            &request.time_ranges,
        )?;
        let sent = rows
            .into_iter()
            .filter(|r| r.own.is_some())
            .map(|r| {
                let state = match (&r.own, &r.received) {
                    (Some(own), Some(received)) if own == received => State::Match,
                    (Some(_), Some(_)) => State::Mismatch,
                    _ => State::NotCompared,
                };
                (r, state)
            })
            .filter(|(_, state)| {
                request.commitment_state.is_empty()
                    || request.commitment_state.contains(&(*state as i32))
            })
            .map(|(r, state)| admin::SentAcsCommitment {
                interval: Some(interval(&r)),
                dest_counter_participant_uid: uid_of(&r.counter_participant),
                own_commitment: if request.verbose { r.own.clone() } else { None },
                received_commitment: if request.verbose {
                    r.received.clone()
                } else {
                    None
                },
                state: state as i32,
            })
            .collect();
        Ok(Response::new(admin::LookupSentAcsCommitmentsResponse {
            sent: vec![admin::SentAcsCommitmentPerSynchronizer {
                synchronizer_id: self.synchronizer_id().await,
                sent,
            }],
        }))
    }

    async fn lookup_received_acs_commitments(
        &self,
        request: Request<admin::LookupReceivedAcsCommitmentsRequest>,
    ) -> Result<Response<admin::LookupReceivedAcsCommitmentsResponse>, Status> {
        use admin::ReceivedCommitmentState as State;
        let request = request.into_inner();
        let rows = Self::filter(
            self.rows().await?,
            &request.counter_participant_ids,
            &request.time_ranges,
        )?;
        let received = rows
            .into_iter()
            .map(|r| {
                let state = match (&r.own, &r.received) {
                    (Some(own), Some(received)) if own == received => State::Match,
                    (Some(_), Some(_)) => State::Mismatch,
                    (None, Some(_)) => State::Buffered,
                    _ => State::Outstanding,
                };
                (r, state)
            })
            .filter(|(_, state)| {
                request.commitment_state.is_empty()
                    || request.commitment_state.contains(&(*state as i32))
            })
            .map(|(r, state)| admin::ReceivedAcsCommitment {
                interval: Some(interval(&r)),
                origin_counter_participant_uid: uid_of(&r.counter_participant),
                received_commitment: if request.verbose {
                    r.received.clone()
                } else {
                    None
                },
                own_commitment: if request.verbose { r.own.clone() } else { None },
                state: state as i32,
            })
            .collect();
        Ok(Response::new(admin::LookupReceivedAcsCommitmentsResponse {
            received: vec![admin::ReceivedAcsCommitmentPerSynchronizer {
                synchronizer_id: self.synchronizer_id().await,
                received,
            }],
        }))
    }

    async fn get_intervals_behind_for_counter_participants(
        &self,
        _request: Request<admin::GetIntervalsBehindForCounterParticipantsRequest>,
    ) -> Result<Response<admin::GetIntervalsBehindForCounterParticipantsResponse>, Status> {
        Err(Status::unimplemented(
            "canton-sim does not track slow counter-participants",
        ))
    }

    async fn count_in_flight(
        &self,
        _request: Request<admin::CountInFlightRequest>,
    ) -> Result<Response<admin::CountInFlightResponse>, Status> {
        Ok(Response::new(admin::CountInFlightResponse {
            pending_submissions: 0,
            pending_transactions: 0,
        }))
    }
}
