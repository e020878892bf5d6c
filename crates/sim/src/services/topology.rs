//! `TopologyManagerReadService` on every node kind, answered from the node's own copy of the
//! synchronizer's topology store.

use proto_canton::protocol::v30::topology_mapping::Mapping;
use proto_canton::topology::admin::v30 as topo;
use proto_canton::topology::admin::v30::topology_manager_read_service_server::{
    TopologyManagerReadService, TopologyManagerReadServiceServer,
};
use tonic::{Request, Response, Status};

use super::common::{Context, timestamp_micros, timestamp_of_micros};
use crate::error::CallError;
use crate::topology::{self, Query, TimeQuery};
use crate::wire::sequencer::TopologyRecord;

#[derive(Clone)]
pub struct TopologyReadApi {
    pub context: Context,
}

pub fn read_service(context: &Context) -> TopologyManagerReadServiceServer<TopologyReadApi> {
    TopologyManagerReadServiceServer::new(TopologyReadApi {
        context: std::sync::Arc::clone(context),
    })
}

/// The store a query names: `Some(id)` for a synchronizer store, `None` for every store.
pub fn store_of(store: Option<&topo::StoreId>) -> (Option<String>, bool) {
    match store.and_then(|s| s.store.as_ref()) {
        Some(topo::store_id::Store::Synchronizer(synchronizer)) => (
            synchronizer.kind.as_ref().map(|kind| match kind {
                topo::synchronizer::Kind::Id(id) | topo::synchronizer::Kind::PhysicalId(id) => {
                    id.clone()
                }
            }),
            false,
        ),
        Some(topo::store_id::Store::Authorized(_)) | Some(topo::store_id::Store::Temporary(_)) => {
            (None, true)
        }
        None => (None, false),
    }
}

fn query_of(base: Option<&topo::BaseQuery>, code: &'static str) -> Result<Query, CallError> {
    let base = base.cloned().unwrap_or_default();
    let (store, authorized_only) = store_of(base.store.as_ref());
    let time = match &base.time_query {
        None | Some(topo::base_query::TimeQuery::HeadState(())) => TimeQuery::HeadState,
        Some(topo::base_query::TimeQuery::Snapshot(at)) => {
            TimeQuery::Snapshot(timestamp_micros(Some(at), "snapshot")?)
        }
        Some(topo::base_query::TimeQuery::Range(range)) => TimeQuery::Range(
            range
                .from
                .as_ref()
                .map(|t| timestamp_micros(Some(t), "from"))
                .transpose()?,
            range
                .until
                .as_ref()
                .map(|t| timestamp_micros(Some(t), "until"))
                .transpose()?,
        ),
    };
    Ok(Query {
        store,
        authorized_only,
        mapping_code: code,
        proposals: base.proposals,
        time,
        operation: base.operation,
    })
}

fn context_of(record: &TopologyRecord) -> topo::BaseResult {
    topo::BaseResult {
        store: Some(topo::StoreId {
            store: Some(topo::store_id::Store::Synchronizer(topo::Synchronizer {
                kind: Some(topo::synchronizer::Kind::Id(record.store.clone())),
            })),
        }),
        sequenced: Some(timestamp_of_micros(record.sequenced_micros)),
        valid_from: Some(timestamp_of_micros(record.valid_from_micros)),
        valid_until: record.valid_until_micros.map(timestamp_of_micros),
        operation: record.operation,
        transaction_hash: record.transaction_hash.clone(),
        serial: i32::try_from(record.serial).unwrap_or(i32::MAX),
        signed_by_fingerprints: record.signed_by.clone(),
    }
}

impl TopologyReadApi {
    /// The records of one mapping kind matching the base query, with their decoded mapping.
    async fn list<T>(
        &self,
        base: Option<&topo::BaseQuery>,
        code: &'static str,
        pick: impl Fn(Mapping) -> Option<T>,
    ) -> Result<Vec<(topo::BaseResult, T)>, CallError> {
        let query = query_of(base, code)?;
        let records = {
            let mut guard = self.context.db.lock().await?;
            topology::query(guard.client()?, &query).await?
        };
        let mut out = Vec::with_capacity(records.len());
        for record in &records {
            if let Some(item) = topology::mapping_of(record)?.mapping.and_then(&pick) {
                out.push((context_of(record), item));
            }
        }
        Ok(out)
    }
}

fn prefixed(value: &str, filter: &str) -> bool {
    filter.is_empty() || value.starts_with(filter)
}

/// A mapping's synchronizer matches a filter given as logical or physical id (or a prefix).
fn synchronizer_matches(id: &str, filter: &str) -> bool {
    filter.is_empty() || id.starts_with(filter) || filter.starts_with(&format!("{id}::"))
}

#[tonic::async_trait]
impl TopologyManagerReadService for TopologyReadApi {
    async fn list_synchronizer_parameters_state(
        &self,
        request: Request<topo::ListSynchronizerParametersStateRequest>,
    ) -> Result<Response<topo::ListSynchronizerParametersStateResponse>, Status> {
        let request = request.into_inner();
        let filter = request.filter_synchronizer_id;
        let results = self
            .list(
                request.base_query.as_ref(),
                "synchronizer_parameters_state",
                |m| match m {
                    Mapping::SynchronizerParametersState(state)
                        if synchronizer_matches(&state.synchronizer_id, &filter) =>
                    {
                        state.synchronizer_parameters
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(Response::new(
            topo::ListSynchronizerParametersStateResponse {
                results: results
                    .into_iter()
                    .map(|(context, item)| {
                        topo::list_synchronizer_parameters_state_response::Result {
                            context: Some(context),
                            item: Some(item),
                        }
                    })
                    .collect(),
            },
        ))
    }

    async fn list_party_to_participant(
        &self,
        request: Request<topo::ListPartyToParticipantRequest>,
    ) -> Result<Response<topo::ListPartyToParticipantResponse>, Status> {
        let request = request.into_inner();
        let (party, participant) = (request.filter_party, request.filter_participant);
        let results = self
            .list(
                request.base_query.as_ref(),
                "party_to_participant",
                |m| match m {
                    Mapping::PartyToParticipant(item)
                        if prefixed(&item.party, &party)
                            && (participant.is_empty()
                                || item
                                    .participants
                                    .iter()
                                    .any(|p| prefixed(&p.participant_uid, &participant))) =>
                    {
                        Some(item)
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(Response::new(topo::ListPartyToParticipantResponse {
            results: results
                .into_iter()
                .map(
                    |(context, item)| topo::list_party_to_participant_response::Result {
                        context: Some(context),
                        item: Some(item),
                    },
                )
                .collect(),
        }))
    }

    async fn list_owner_to_key_mapping(
        &self,
        request: Request<topo::ListOwnerToKeyMappingRequest>,
    ) -> Result<Response<topo::ListOwnerToKeyMappingResponse>, Status> {
        let request = request.into_inner();
        let (owner_type, owner_uid) = (request.filter_key_owner_type, request.filter_key_owner_uid);
        let results = self
            .list(
                request.base_query.as_ref(),
                "owner_to_key_mapping",
                |m| match m {
                    Mapping::OwnerToKeyMapping(item) => {
                        let (code, uid) = item.member.split_once("::").unwrap_or(("", ""));
                        (prefixed(code, &owner_type) && prefixed(uid, &owner_uid)).then_some(item)
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(Response::new(topo::ListOwnerToKeyMappingResponse {
            results: results
                .into_iter()
                .map(
                    |(context, item)| topo::list_owner_to_key_mapping_response::Result {
                        context: Some(context),
                        item: Some(item),
                    },
                )
                .collect(),
        }))
    }

    async fn list_synchronizer_trust_certificate(
        &self,
        request: Request<topo::ListSynchronizerTrustCertificateRequest>,
    ) -> Result<Response<topo::ListSynchronizerTrustCertificateResponse>, Status> {
        let request = request.into_inner();
        let uid = request.filter_uid;
        let results = self
            .list(
                request.base_query.as_ref(),
                "synchronizer_trust_certificate",
                |m| match m {
                    Mapping::SynchronizerTrustCertificate(item)
                        if prefixed(&item.participant_uid, &uid) =>
                    {
                        Some(item)
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(Response::new(
            topo::ListSynchronizerTrustCertificateResponse {
                results: results
                    .into_iter()
                    .map(|(context, item)| {
                        topo::list_synchronizer_trust_certificate_response::Result {
                            context: Some(context),
                            item: Some(item),
                        }
                    })
                    .collect(),
            },
        ))
    }

    async fn list_participant_synchronizer_permission(
        &self,
        request: Request<topo::ListParticipantSynchronizerPermissionRequest>,
    ) -> Result<Response<topo::ListParticipantSynchronizerPermissionResponse>, Status> {
        let request = request.into_inner();
        let uid = request.filter_uid;
        let results = self
            .list(
                request.base_query.as_ref(),
                "participant_permission",
                |m| match m {
                    Mapping::ParticipantPermission(item)
                        if prefixed(&item.participant_uid, &uid) =>
                    {
                        Some(item)
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(Response::new(
            topo::ListParticipantSynchronizerPermissionResponse {
                results: results
                    .into_iter()
                    .map(|(context, item)| {
                        topo::list_participant_synchronizer_permission_response::Result {
                            context: Some(context),
                            item: Some(item),
                        }
                    })
                    .collect(),
            },
        ))
    }

    async fn list_mediator_synchronizer_state(
        &self,
        request: Request<topo::ListMediatorSynchronizerStateRequest>,
    ) -> Result<Response<topo::ListMediatorSynchronizerStateResponse>, Status> {
        let request = request.into_inner();
        let filter = request.filter_synchronizer_id;
        let results = self
            .list(
                request.base_query.as_ref(),
                "mediator_synchronizer_state",
                |m| match m {
                    Mapping::MediatorSynchronizerState(item)
                        if synchronizer_matches(&item.synchronizer_id, &filter) =>
                    {
                        Some(item)
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(Response::new(topo::ListMediatorSynchronizerStateResponse {
            results: results
                .into_iter()
                .map(
                    |(context, item)| topo::list_mediator_synchronizer_state_response::Result {
                        context: Some(context),
                        item: Some(item),
                    },
                )
                .collect(),
        }))
    }

    async fn list_sequencer_synchronizer_state(
        &self,
        request: Request<topo::ListSequencerSynchronizerStateRequest>,
    ) -> Result<Response<topo::ListSequencerSynchronizerStateResponse>, Status> {
        let request = request.into_inner();
        let filter = request.filter_synchronizer_id;
        let results = self
            .list(
                request.base_query.as_ref(),
                "sequencer_synchronizer_state",
                |m| match m {
                    Mapping::SequencerSynchronizerState(item)
                        if synchronizer_matches(&item.synchronizer_id, &filter) =>
                    {
                        Some(item)
                    }
                    _ => None,
                },
            )
            .await?;
        Ok(Response::new(
            topo::ListSequencerSynchronizerStateResponse {
                results: results
                    .into_iter()
                    .map(|(context, item)| {
                        topo::list_sequencer_synchronizer_state_response::Result {
                            context: Some(context),
                            item: Some(item),
                        }
                    })
                    .collect(),
            },
        ))
    }

    async fn list_available_stores(
        &self,
        _request: Request<topo::ListAvailableStoresRequest>,
    ) -> Result<Response<topo::ListAvailableStoresResponse>, Status> {
        let stores: Vec<String> = {
            let mut guard = self.context.db.lock().await.map_err(CallError::from)?;
            guard
                .client()
                .map_err(CallError::from)?
                .query(
                    "SELECT DISTINCT store FROM topology_transaction ORDER BY store",
                    &[],
                )
                .await
                .map_err(|e| CallError::from(crate::error::Error::db("listing stores", e)))?
                .iter()
                .map(|row| row.get(0))
                .collect()
        };
        let mut store_ids = vec![topo::StoreId {
            store: Some(topo::store_id::Store::Authorized(
                topo::store_id::Authorized {},
            )),
        }];
        store_ids.extend(stores.into_iter().map(|id| topo::StoreId {
            store: Some(topo::store_id::Store::Synchronizer(topo::Synchronizer {
                kind: Some(topo::synchronizer::Kind::Id(id)),
            })),
        }));
        Ok(Response::new(topo::ListAvailableStoresResponse {
            store_ids,
        }))
    }
}
