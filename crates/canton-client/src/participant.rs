//! Participant calls: synchronizer connectivity, HA, pruning schedule, party replication.

use std::time::{Duration, SystemTime};

use futures::stream::{BoxStream, Stream, StreamExt};
use proto_canton::admin::participant::v30 as participant;
use proto_canton::admin::pruning::v30 as pruning;
use proto_canton::admin::sequencer::v30 as sequencer;
use proto_canton::line_3_5::admin::participant::v30 as participant_3_5;

use participant::synchronizer_connectivity_service_client::SynchronizerConnectivityServiceClient;

use crate::client::{Api, CantonClient, status_error};
use crate::config::NodeKind;
use crate::error::{Error, ErrorKind, Result};
use crate::profile::Profile;
use crate::types::{
    ConnectedSynchronizer, ContractImportMode, OnboardingFlag, PartyAcsExport, PartyAcsImport,
    PruningSchedule, RegisteredSynchronizer, SequencerValidation, SynchronizerChange,
    SynchronizerConnection,
};

impl CantonClient {
    /// Checks node kind and release line before a participant admin call.
    async fn participant_call(&self, call: &str) -> Result<Profile> {
        self.require_kind(NodeKind::Participant, call)?;
        self.profile().await
    }

    fn connectivity(
        &self,
    ) -> Result<(
        SynchronizerConnectivityServiceClient<tonic::transport::Channel>,
        &crate::client::Connection,
    )> {
        let connection = self.connection(Api::Admin, "SynchronizerConnectivityService")?;
        Ok((
            SynchronizerConnectivityServiceClient::new(connection.channel.clone()),
            connection,
        ))
    }

    pub async fn list_connected_synchronizers(&self) -> Result<Vec<ConnectedSynchronizer>> {
        let call = "ListConnectedSynchronizers";
        self.participant_call(call).await?;
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::ListConnectedSynchronizersRequest {},
        );
        let response = self
            .call(call, client.list_connected_synchronizers(request))
            .await?;
        Ok(response
            .connected_synchronizers
            .into_iter()
            .map(|result| ConnectedSynchronizer {
                alias: result.synchronizer_alias,
                synchronizer_id: result.synchronizer_id,
                physical_synchronizer_id: result.physical_synchronizer_id,
                healthy: result.healthy,
            })
            .collect())
    }

    pub async fn list_registered_synchronizers(&self) -> Result<Vec<RegisteredSynchronizer>> {
        Ok(self
            .registered_configs()
            .await?
            .into_iter()
            .map(|result| {
                let config = result.config.unwrap_or_default();
                RegisteredSynchronizer {
                    sequencer_urls: config
                        .sequencer_connections
                        .iter()
                        .flat_map(|connections| &connections.sequencer_connections)
                        .filter_map(|connection| {
                            let Some(sequencer::sequencer_connection::Type::Grpc(grpc)) =
                                &connection.r#type
                            else {
                                return None;
                            };
                            Some(grpc.connections.clone())
                        })
                        .flatten()
                        .collect(),
                    alias: config.synchronizer_alias,
                    connected: result.connected,
                    manual_connect: config.manual_connect,
                    priority: config.priority,
                    physical_synchronizer_id: result.physical_synchronizer_id,
                }
            })
            .collect())
    }

    async fn registered_configs(
        &self,
    ) -> Result<Vec<participant::list_registered_synchronizers_response::Result>> {
        let call = "ListRegisteredSynchronizers";
        self.participant_call(call).await?;
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::ListRegisteredSynchronizersRequest {},
        );
        Ok(self
            .call(call, client.list_registered_synchronizers(request))
            .await?
            .results)
    }

    /// Registers and connects a synchronizer. Returns false when the synchronizer is offline.
    pub async fn connect_synchronizer(
        &self,
        connection_spec: &SynchronizerConnection,
        validation: SequencerValidation,
    ) -> Result<bool> {
        let call = "ConnectSynchronizer";
        self.participant_call(call).await?;
        if connection_spec.sequencer_urls.is_empty()
            || connection_spec.sequencer_trust_threshold == 0
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{call} on {}: synchronizer {:?} needs at least one sequencer URL and a trust threshold of at least 1; nothing was sent",
                    self.node_name(),
                    connection_spec.alias
                ),
            ));
        }
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::ConnectSynchronizerRequest {
                config: Some(wire_config(connection_spec)),
                sequencer_connection_validation: wire_validation(validation),
            },
        );
        Ok(self
            .call(call, client.connect_synchronizer(request))
            .await?
            .connected_successfully)
    }

    /// Reconnects one registered synchronizer. Returns false when it is offline.
    pub async fn reconnect_synchronizer(&self, alias: &str, retry: bool) -> Result<bool> {
        let call = "ReconnectSynchronizer";
        self.participant_call(call).await?;
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::ReconnectSynchronizerRequest {
                synchronizer_alias: alias.to_owned(),
                retry,
            },
        );
        Ok(self
            .call(call, client.reconnect_synchronizer(request))
            .await?
            .connected_successfully)
    }

    /// Reconnects every synchronizer not marked `manual_connect`.
    pub async fn reconnect_all_synchronizers(&self, ignore_failures: bool) -> Result<()> {
        let call = "ReconnectSynchronizers";
        self.participant_call(call).await?;
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::ReconnectSynchronizersRequest { ignore_failures },
        );
        self.call(call, client.reconnect_synchronizers(request))
            .await?;
        Ok(())
    }

    /// Disconnects one synchronizer; disconnecting a disconnected one succeeds.
    pub async fn disconnect_synchronizer(&self, alias: &str) -> Result<()> {
        let call = "DisconnectSynchronizer";
        self.participant_call(call).await?;
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::DisconnectSynchronizerRequest {
                synchronizer_alias: alias.to_owned(),
            },
        );
        self.call(call, client.disconnect_synchronizer(request))
            .await?;
        Ok(())
    }

    pub async fn disconnect_all_synchronizers(&self) -> Result<()> {
        let call = "DisconnectAllSynchronizers";
        self.participant_call(call).await?;
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::DisconnectAllSynchronizersRequest {},
        );
        self.call(call, client.disconnect_all_synchronizers(request))
            .await?;
        Ok(())
    }

    /// Changes a registered synchronizer's stored configuration. `ModifySynchronizer` replaces
    /// the whole configuration, so this reads it first, changes only the given fields and sends
    /// it back (as the console does).
    pub async fn modify_synchronizer(
        &self,
        alias: &str,
        change: &SynchronizerChange,
        validation: SequencerValidation,
    ) -> Result<()> {
        let call = "ModifySynchronizer";
        let registered = self.registered_configs().await?;
        let mut matching: Vec<_> = registered
            .into_iter()
            .filter(|result| {
                result
                    .config
                    .as_ref()
                    .is_some_and(|config| config.synchronizer_alias == alias)
            })
            .collect();
        if matching.len() > 1 {
            // Several physical synchronizers under one alias: the connected one is meant.
            matching.retain(|result| result.connected);
        }
        let entry = match matching.len() {
            1 => matching.remove(0),
            0 => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "{call} on {}: no registered synchronizer has alias {alias:?}; nothing was changed",
                        self.node_name()
                    ),
                ));
            }
            _ => {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!(
                        "{call} on {}: alias {alias:?} names several registered synchronizers and none alone is connected; nothing was changed",
                        self.node_name()
                    ),
                ));
            }
        };
        let mut config = entry.config.unwrap_or_default();
        if let Some(manual_connect) = change.manual_connect {
            config.manual_connect = manual_connect;
        }
        if let Some(priority) = change.priority {
            config.priority = priority;
        }
        let (mut client, connection) = self.connectivity()?;
        let request = self.request(
            connection,
            participant::ModifySynchronizerRequest {
                physical_synchronizer_id: entry.physical_synchronizer_id,
                new_config: Some(config),
                sequencer_connection_validation: wire_validation(validation),
            },
        );
        self.call(call, client.modify_synchronizer(request)).await?;
        Ok(())
    }

    /// Makes this HA replica passive, so the other replica takes over. The gRPC path depends on
    /// the release line (3.4 `EnterpriseParticipantReplicationService`, 3.5
    /// `ParticipantReplicationService`).
    pub async fn set_passive(&self) -> Result<()> {
        let call = "SetPassive";
        let profile = self.participant_call(call).await?;
        let connection = self.connection(Api::Admin, call)?;
        let channel = connection.channel.clone();
        match profile {
            Profile::Line3_4 => {
                use participant::enterprise_participant_replication_service_client::EnterpriseParticipantReplicationServiceClient as Client;
                let request = self.request(connection, participant::SetPassiveRequest {});
                self.call(call, Client::new(channel).set_passive(request))
                    .await?;
            }
            Profile::Line3_5 => {
                use participant_3_5::participant_replication_service_client::ParticipantReplicationServiceClient as Client;
                let request = self.request(connection, participant_3_5::SetPassiveRequest {});
                self.call(call, Client::new(channel).set_passive(request))
                    .await?;
            }
        }
        Ok(())
    }

    /// The scheduled-pruning configuration; None when no schedule is set.
    pub async fn participant_pruning_schedule(&self) -> Result<Option<PruningSchedule>> {
        let call = "GetParticipantSchedule";
        self.participant_call(call).await?;
        let (mut client, connection) = self.pruning()?;
        let request = self.request(connection, pruning::GetParticipantScheduleRequest {});
        let response = self
            .call(call, client.get_participant_schedule(request))
            .await?;
        let Some(participant_schedule) = response.schedule else {
            return Ok(None);
        };
        let schedule = participant_schedule
            .schedule
            .ok_or_else(|| self.protocol_error(call, "participant schedule without a schedule"))?;
        Ok(Some(PruningSchedule {
            cron: schedule.cron,
            max_duration: self.duration(call, schedule.max_duration)?,
            retention: self.duration(call, schedule.retention)?,
            prune_internally_only: participant_schedule.prune_internally_only,
        }))
    }

    /// Sets (replaces) the scheduled-pruning configuration.
    pub async fn set_participant_pruning_schedule(&self, schedule: &PruningSchedule) -> Result<()> {
        let call = "SetParticipantSchedule";
        self.participant_call(call).await?;
        let (mut client, connection) = self.pruning()?;
        let request = self.request(
            connection,
            pruning::SetParticipantScheduleRequest {
                schedule: Some(pruning::ParticipantPruningSchedule {
                    schedule: Some(pruning::PruningSchedule {
                        cron: schedule.cron.clone(),
                        max_duration: Some(self.wire_duration(call, schedule.max_duration)?),
                        retention: Some(self.wire_duration(call, schedule.retention)?),
                    }),
                    prune_internally_only: schedule.prune_internally_only,
                }),
            },
        );
        self.call(call, client.set_participant_schedule(request))
            .await?;
        Ok(())
    }

    /// Removes the pruning schedule; clearing an absent schedule succeeds.
    pub async fn clear_pruning_schedule(&self) -> Result<()> {
        let call = "ClearSchedule";
        self.participant_call(call).await?;
        let (mut client, connection) = self.pruning()?;
        let request = self.request(connection, pruning::ClearScheduleRequest {});
        self.call(call, client.clear_schedule(request)).await?;
        Ok(())
    }

    fn pruning(
        &self,
    ) -> Result<(
        participant::pruning_service_client::PruningServiceClient<tonic::transport::Channel>,
        &crate::client::Connection,
    )> {
        let connection = self.connection(Api::Admin, "PruningService")?;
        Ok((
            participant::pruning_service_client::PruningServiceClient::new(
                connection.channel.clone(),
            ),
            connection,
        ))
    }

    /// The ledger offset of the last event at or before `timestamp`; None before the first one.
    pub async fn offset_by_time(&self, timestamp: SystemTime) -> Result<Option<i64>> {
        let call = "LookupOffsetByTime";
        self.participant_call(call).await?;
        let connection = self.connection(Api::Admin, call)?;
        let mut client = participant::participant_inspection_service_client::ParticipantInspectionServiceClient::new(
            connection.channel.clone(),
        );
        let request = self.request(
            connection,
            participant::LookupOffsetByTimeRequest {
                timestamp: Some(timestamp.into()),
            },
        );
        Ok(self
            .call(call, client.lookup_offset_by_time(request))
            .await?
            .offset)
    }

    /// A clean ledger offset for a synchronizer timestamp (for ACS exports). `force` is for
    /// disaster recovery only. OUT_OF_RANGE means "not yet": retry later.
    pub async fn highest_offset_by_timestamp(
        &self,
        synchronizer_id: &str,
        timestamp: SystemTime,
        force: bool,
    ) -> Result<i64> {
        let call = "GetHighestOffsetByTimestamp";
        self.participant_call(call).await?;
        let (mut client, connection) = self.party_management()?;
        let request = self.request(
            connection,
            participant::GetHighestOffsetByTimestampRequest {
                synchronizer_id: synchronizer_id.to_owned(),
                timestamp: Some(timestamp.into()),
                force,
            },
        );
        Ok(self
            .call(call, client.get_highest_offset_by_timestamp(request))
            .await?
            .ledger_offset)
    }

    /// Streams a party's ACS from the source participant as opaque gzip chunks (§12 of the
    /// notes). The timeout covers the whole export.
    pub async fn export_party_acs(
        &self,
        export: &PartyAcsExport,
    ) -> Result<BoxStream<'static, Result<Vec<u8>>>> {
        let call = "ExportPartyAcs";
        self.participant_call(call).await?;
        let (mut client, connection) = self.party_management()?;
        let wait_for_activation_timeout = match export.wait_for_activation_timeout {
            Some(wait) => Some(self.wire_duration(call, wait)?),
            None => None,
        };
        let request = self.request(
            connection,
            participant::ExportPartyAcsRequest {
                party_id: export.party_id.clone(),
                synchronizer_id: export.synchronizer_id.clone(),
                target_participant_uid: export.target_participant_uid.clone(),
                begin_offset_exclusive: export.begin_offset_exclusive,
                wait_for_activation_timeout,
            },
        );
        let stream = self.call(call, client.export_party_acs(request)).await?;
        let node = self.node_name().to_owned();
        Ok(stream
            .map(move |item| match item {
                Ok(response) => Ok(response.chunk),
                Err(status) => Err(status_error(&node, call, status)),
            })
            .boxed())
    }

    /// Streams a party's ACS into the target participant. The request shape depends on the
    /// release line: 3.5 renumbered the fields and requires the synchronizer id. The first
    /// message carries the settings, the following ones the chunks. Not idempotent: never retry
    /// it automatically.
    pub async fn import_party_acs(
        &self,
        import: &PartyAcsImport,
        chunks: impl Stream<Item = Vec<u8>> + Send + 'static,
    ) -> Result<()> {
        let call = "ImportPartyAcs";
        let profile = self.participant_call(call).await?;
        let connection = self.connection(Api::Admin, call)?;
        let channel = connection.channel.clone();
        let mode = match import.mode {
            ContractImportMode::Accept => participant::ContractImportMode::Accept,
            ContractImportMode::Validation => participant::ContractImportMode::Validation,
        } as i32;
        match profile {
            Profile::Line3_4 => {
                let settings = participant::ImportPartyAcsRequest {
                    acs_snapshot: Vec::new(),
                    workflow_id_prefix: import.workflow_id_prefix.clone(),
                    contract_import_mode: mode,
                    representative_package_id_override: None,
                };
                let messages =
                    futures::stream::once(async move { settings }).chain(chunks.map(|chunk| {
                        participant::ImportPartyAcsRequest {
                            acs_snapshot: chunk,
                            ..Default::default()
                        }
                    }));
                let mut client =
                    participant::party_management_service_client::PartyManagementServiceClient::new(
                        channel,
                    );
                let request = self.request(connection, messages);
                self.call(call, client.import_party_acs(request)).await?;
            }
            Profile::Line3_5 => {
                let settings = participant_3_5::ImportPartyAcsRequest {
                    acs_snapshot: Vec::new(),
                    synchronizer_id: Some(import.synchronizer_id.clone()),
                    workflow_id_prefix: Some(import.workflow_id_prefix.clone()),
                    contract_import_mode: Some(mode),
                    representative_package_id_override: None,
                    party_id: import.party_id.clone(),
                };
                let messages =
                    futures::stream::once(async move { settings }).chain(chunks.map(|chunk| {
                        participant_3_5::ImportPartyAcsRequest {
                            acs_snapshot: chunk,
                            ..Default::default()
                        }
                    }));
                let mut client = participant_3_5::party_management_service_client::PartyManagementServiceClient::new(channel);
                let request = self.request(connection, messages);
                self.call(call, client.import_party_acs(request)).await?;
            }
        }
        Ok(())
    }

    /// Clears (or asks the node to schedule clearing) a party's onboarding flag after an
    /// offline replication. Idempotent; poll until [`OnboardingFlag::Cleared`].
    pub async fn clear_party_onboarding_flag(
        &self,
        party_id: &str,
        synchronizer_id: &str,
        begin_offset_exclusive: i64,
        wait_for_activation_timeout: Option<Duration>,
    ) -> Result<OnboardingFlag> {
        let call = "ClearPartyOnboardingFlag";
        self.participant_call(call).await?;
        let (mut client, connection) = self.party_management()?;
        let wait_for_activation_timeout = match wait_for_activation_timeout {
            Some(wait) => Some(self.wire_duration(call, wait)?),
            None => None,
        };
        let request = self.request(
            connection,
            participant::ClearPartyOnboardingFlagRequest {
                party_id: party_id.to_owned(),
                synchronizer_id: synchronizer_id.to_owned(),
                begin_offset_exclusive,
                wait_for_activation_timeout,
            },
        );
        let response = self
            .call(call, client.clear_party_onboarding_flag(request))
            .await?;
        match (response.onboarded, response.earliest_retry_timestamp) {
            (true, None) => Ok(OnboardingFlag::Cleared),
            (false, Some(retry)) => Ok(OnboardingFlag::Set {
                retry_after: SystemTime::try_from(retry).map_err(|error| {
                    self.protocol_error(call, format!("unusable retry timestamp ({error})"))
                })?,
            }),
            (onboarded, retry) => Err(self.protocol_error(
                call,
                format!("onboarded = {onboarded} with retry timestamp {retry:?} is not a documented answer"),
            )),
        }
    }

    fn party_management(
        &self,
    ) -> Result<(
        participant::party_management_service_client::PartyManagementServiceClient<
            tonic::transport::Channel,
        >,
        &crate::client::Connection,
    )> {
        let connection = self.connection(Api::Admin, "PartyManagementService")?;
        Ok((
            participant::party_management_service_client::PartyManagementServiceClient::new(
                connection.channel.clone(),
            ),
            connection,
        ))
    }

    /// Repair `MigrateSynchronizer`: every contract of `source_alias` is assigned to the target
    /// synchronizer, which is registered with `target`, and the source is decommissioned. The
    /// participant must be disconnected from both. `force` skips the check that the source is
    /// still reachable and consistent; on a live source it risks a ledger fork.
    pub async fn migrate_synchronizer(
        &self,
        source_alias: &str,
        target: &SynchronizerConnection,
        force: bool,
    ) -> Result<()> {
        let call = "MigrateSynchronizer";
        self.participant_call(call).await?;
        if target.sequencer_urls.is_empty() || target.sequencer_trust_threshold == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{call} on {}: target synchronizer {:?} needs at least one sequencer URL and a trust threshold of at least 1; nothing was sent",
                    self.node_name(),
                    target.alias
                ),
            ));
        }
        let (mut client, connection) = self.repair()?;
        let request = self.request(
            connection,
            participant::MigrateSynchronizerRequest {
                source_synchronizer_alias: source_alias.to_owned(),
                target_synchronizer_connection_config: Some(wire_config(target)),
                force,
            },
        );
        self.call(call, client.migrate_synchronizer(request))
            .await?;
        Ok(())
    }

    /// Marks sequencer counters `from..=to` on a physical synchronizer as ignored (repair; the
    /// participant must be disconnected). Not idempotent in effect: record what was ignored.
    pub async fn ignore_events(
        &self,
        physical_synchronizer_id: &str,
        from_inclusive: i64,
        to_inclusive: i64,
        force: bool,
    ) -> Result<()> {
        let call = "IgnoreEvents";
        self.participant_call(call).await?;
        self.check_counter_range(call, from_inclusive, to_inclusive)?;
        let (mut client, connection) = self.repair()?;
        let request = self.request(
            connection,
            participant::IgnoreEventsRequest {
                physical_synchronizer_id: physical_synchronizer_id.to_owned(),
                from_inclusive,
                to_inclusive,
                force,
            },
        );
        self.call(call, client.ignore_events(request)).await?;
        Ok(())
    }

    /// Undoes [`CantonClient::ignore_events`]; a no-op for counters that are not ignored.
    pub async fn unignore_events(
        &self,
        physical_synchronizer_id: &str,
        from_inclusive: i64,
        to_inclusive: i64,
        force: bool,
    ) -> Result<()> {
        let call = "UnignoreEvents";
        self.participant_call(call).await?;
        self.check_counter_range(call, from_inclusive, to_inclusive)?;
        let (mut client, connection) = self.repair()?;
        let request = self.request(
            connection,
            participant::UnignoreEventsRequest {
                physical_synchronizer_id: physical_synchronizer_id.to_owned(),
                from_inclusive,
                to_inclusive,
                force,
            },
        );
        self.call(call, client.unignore_events(request)).await?;
        Ok(())
    }

    fn check_counter_range(
        &self,
        call: &str,
        from_inclusive: i64,
        to_inclusive: i64,
    ) -> Result<()> {
        if from_inclusive < 0 || to_inclusive < from_inclusive {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{call} on {}: sequencer counters {from_inclusive}..={to_inclusive} are not a range; nothing was sent",
                    self.node_name()
                ),
            ));
        }
        Ok(())
    }

    fn repair(
        &self,
    ) -> Result<(
        participant::participant_repair_service_client::ParticipantRepairServiceClient<
            tonic::transport::Channel,
        >,
        &crate::client::Connection,
    )> {
        let connection = self.connection(Api::Admin, "ParticipantRepairService")?;
        Ok((
            participant::participant_repair_service_client::ParticipantRepairServiceClient::new(
                connection.channel.clone(),
            ),
            connection,
        ))
    }

    pub(crate) fn duration(
        &self,
        call: &str,
        duration: Option<prost_types::Duration>,
    ) -> Result<Duration> {
        let duration = duration.unwrap_or_default();
        Duration::try_from(duration)
            .map_err(|error| self.protocol_error(call, format!("unusable duration ({error})")))
    }

    pub(crate) fn wire_duration(
        &self,
        call: &str,
        duration: Duration,
    ) -> Result<prost_types::Duration> {
        prost_types::Duration::try_from(duration).map_err(|_| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{call} on {}: duration {duration:?} is too long to send",
                    self.node_name()
                ),
            )
        })
    }
}

fn wire_validation(validation: SequencerValidation) -> i32 {
    (match validation {
        SequencerValidation::Disabled => sequencer::SequencerConnectionValidation::Disabled,
        SequencerValidation::Active => sequencer::SequencerConnectionValidation::Active,
        SequencerValidation::All => sequencer::SequencerConnectionValidation::All,
        SequencerValidation::ThresholdActive => {
            sequencer::SequencerConnectionValidation::ThresholdActive
        }
    }) as i32
}

fn wire_config(spec: &SynchronizerConnection) -> participant::SynchronizerConnectionConfig {
    let connections = spec
        .sequencer_urls
        .iter()
        .enumerate()
        .map(|(index, url)| sequencer::SequencerConnection {
            r#type: Some(sequencer::sequencer_connection::Type::Grpc(
                sequencer::sequencer_connection::Grpc {
                    connections: vec![url.clone()],
                    transport_security: url.starts_with("https://"),
                    custom_trust_certificates: None,
                },
            )),
            alias: format!("sequencer{index}"),
            sequencer_id: None,
        })
        .collect();
    participant::SynchronizerConnectionConfig {
        synchronizer_alias: spec.alias.clone(),
        sequencer_connections: Some(sequencer::SequencerConnections {
            sequencer_connections: connections,
            sequencer_trust_threshold: spec.sequencer_trust_threshold,
            sequencer_liveness_margin: 0,
            ..Default::default()
        }),
        manual_connect: spec.manual_connect,
        physical_synchronizer_id: spec.physical_synchronizer_id.clone().unwrap_or_default(),
        priority: spec.priority,
        ..Default::default()
    }
}
