//! Topology reads and ACS commitment lookups the runbooks decide on.

use std::time::SystemTime;

use proto_canton::admin::participant::v30 as participant;
use proto_canton::topology::admin::v30 as topology;

use crate::client::{Api, CantonClient};
use crate::config::NodeKind;
use crate::error::Result;
use crate::types::{CommitmentState, ReceivedCommitment, SynchronizerParameters};

impl CantonClient {
    /// The synchronizer's dynamic parameters as this node's topology state holds them now
    /// (every validity period still known, newest last as the node returns them).
    pub async fn synchronizer_parameters(
        &self,
        synchronizer_id: &str,
    ) -> Result<Vec<SynchronizerParameters>> {
        let call = "ListSynchronizerParametersState";
        self.profile().await?;
        let connection = self.connection(Api::Admin, call)?;
        let mut client =
            topology::topology_manager_read_service_client::TopologyManagerReadServiceClient::new(
                connection.channel.clone(),
            );
        let request = self.request(
            connection,
            topology::ListSynchronizerParametersStateRequest {
                base_query: Some(topology::BaseQuery {
                    store: Some(topology::StoreId {
                        store: Some(topology::store_id::Store::Synchronizer(
                            topology::Synchronizer {
                                kind: Some(topology::synchronizer::Kind::Id(
                                    synchronizer_id.to_owned(),
                                )),
                            },
                        )),
                    }),
                    time_query: Some(topology::base_query::TimeQuery::HeadState(())),
                    ..Default::default()
                }),
                filter_synchronizer_id: synchronizer_id.to_owned(),
            },
        );
        let response = self
            .call(call, client.list_synchronizer_parameters_state(request))
            .await?;
        let mut periods = Vec::with_capacity(response.results.len());
        for result in response.results {
            let context = result.context.unwrap_or_default();
            let item = result
                .item
                .ok_or_else(|| self.protocol_error(call, "result without parameters"))?;
            periods.push(SynchronizerParameters {
                valid_from: time(context.valid_from),
                valid_until: time(context.valid_until),
                serial: context.serial,
                ledger_time_record_time_tolerance: self
                    .duration(call, item.ledger_time_record_time_tolerance)?,
                preparation_time_record_time_tolerance: self
                    .duration(call, item.preparation_time_record_time_tolerance)?,
                confirmation_response_timeout: self
                    .duration(call, item.confirmation_response_timeout)?,
                mediator_reaction_timeout: self.duration(call, item.mediator_reaction_timeout)?,
                reconciliation_interval: self.duration(call, item.reconciliation_interval)?,
            });
        }
        Ok(periods)
    }

    /// Commitments received on a synchronizer in `(from_exclusive, to_inclusive]` (both None:
    /// the latest period the node knows), filtered by state (empty: all). The disaster-recovery
    /// timestamp is derived from the matched periods.
    pub async fn received_commitments(
        &self,
        synchronizer_id: &str,
        interval: Option<(SystemTime, SystemTime)>,
        states: &[CommitmentState],
    ) -> Result<Vec<ReceivedCommitment>> {
        let call = "LookupReceivedAcsCommitments";
        self.require_kind(NodeKind::Participant, call)?;
        self.profile().await?;
        let connection = self.connection(Api::Admin, call)?;
        let mut client = participant::participant_inspection_service_client::ParticipantInspectionServiceClient::new(
            connection.channel.clone(),
        );
        use participant::ReceivedCommitmentState as Wire;
        let commitment_state = states
            .iter()
            .map(|state| {
                (match state {
                    CommitmentState::Match => Wire::Match,
                    CommitmentState::Mismatch => Wire::Mismatch,
                    CommitmentState::Buffered => Wire::Buffered,
                    CommitmentState::Outstanding => Wire::Outstanding,
                    CommitmentState::Unspecified => Wire::Unspecified,
                }) as i32
            })
            .collect();
        let request = self.request(
            connection,
            participant::LookupReceivedAcsCommitmentsRequest {
                time_ranges: vec![participant::SynchronizerTimeRange {
                    synchronizer_id: synchronizer_id.to_owned(),
                    interval: interval.map(|(from, to)| participant::TimeRange {
                        from_exclusive: Some(from.into()),
                        to_inclusive: Some(to.into()),
                    }),
                }],
                counter_participant_ids: Vec::new(),
                commitment_state,
                verbose: false,
            },
        );
        let response = self
            .call(call, client.lookup_received_acs_commitments(request))
            .await?;
        let mut commitments = Vec::new();
        for per_synchronizer in response.received {
            for received in per_synchronizer.received {
                let interval = received.interval.unwrap_or_default();
                commitments.push(ReceivedCommitment {
                    synchronizer_id: per_synchronizer.synchronizer_id.clone(),
                    state: match received.state() {
                        Wire::Match => CommitmentState::Match,
                        Wire::Mismatch => CommitmentState::Mismatch,
                        Wire::Buffered => CommitmentState::Buffered,
                        Wire::Outstanding => CommitmentState::Outstanding,
                        Wire::Unspecified => CommitmentState::Unspecified,
                    },
                    counter_participant_uid: received.origin_counter_participant_uid,
                    period_start_exclusive: time(interval.start_tick_exclusive),
                    period_end_inclusive: time(interval.end_tick_inclusive),
                });
            }
        }
        Ok(commitments)
    }
}

fn time(timestamp: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    timestamp.and_then(|timestamp| SystemTime::try_from(timestamp).ok())
}
