//! `--kind app`: a Ledger API client standing for a Splice validator or SV app. It follows its
//! participant's ledger end at a fixed rate and records the offset it processed in its own
//! database (so after a restore "app newer than participant" is visible), and serves Splice's
//! admin HTTP endpoints for identity and data dumps with their documented status codes.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine;
use proto_canton::admin::participant::v30 as admin;
use proto_canton::crypto::admin::v30 as vault;
use proto_canton::topology::admin::v30 as topo;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::db::Db;
use crate::error::{Error, ErrorKind, Result};

/// What the app has processed, as its database holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppState {
    pub processed_offset: i64,
    /// The participant's ledger end at the last poll.
    pub participant_ledger_end: i64,
    /// The participant is behind what the app processed (restored from an older backup).
    pub ahead_of_participant: bool,
    pub migration_id: i64,
}

pub async fn state(db: &Db) -> Result<AppState> {
    let mut guard = db.lock().await?;
    let row = guard
        .client()?
        .query_one(
            "SELECT processed_offset, participant_ledger_end, migration_id FROM app_state",
            &[],
        )
        .await
        .map_err(|e| Error::db("reading the app state", e))?;
    let (processed, participant): (i64, i64) = (row.get(0), row.get(1));
    Ok(AppState {
        processed_offset: processed,
        participant_ledger_end: participant,
        ahead_of_participant: processed > participant,
        migration_id: row.get(2),
    })
}

/// Follows the participant's ledger end every `period`: the processed offset only moves
/// forward, so a participant restored behind the app shows as `ahead_of_participant`.
pub fn spawn_follower(
    db: Arc<Db>,
    ledger_url: String,
    period: Duration,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        let mut client = None;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(period) => {}
            }
            if client.is_none() {
                client = Channel::from_shared(ledger_url.clone())
                    .ok()
                    .map(|endpoint| {
                        endpoint
                            .connect_timeout(Duration::from_secs(1))
                            .connect_lazy()
                    })
                    .map(proto_canton::ledger::v2::state_service_client::StateServiceClient::new);
            }
            let Some(ledger) = client.as_mut() else {
                continue;
            };
            let mut request = tonic::Request::new(proto_canton::ledger::v2::GetLedgerEndRequest {});
            request.set_timeout(Duration::from_secs(2));
            let end = match ledger.get_ledger_end(request).await {
                Ok(reply) => reply.into_inner().offset,
                Err(e) => {
                    tracing::debug!(error = %e, "participant ledger API not reachable");
                    continue;
                }
            };
            let updated = async {
                let mut guard = db.lock().await?;
                guard
                    .client()?
                    .execute(
                        "UPDATE app_state SET participant_ledger_end = $1,
                             processed_offset = greatest(processed_offset, $1),
                             polled_at_micros = $2",
                        &[&end, &crate::sequencer::now_micros()],
                    )
                    .await
                    .map_err(|e| Error::db("recording the processed offset", e))
            }
            .await;
            if let Err(e) = updated {
                tracing::warn!(error = %e, "cannot record the processed offset");
            }
        }
    });
}

#[derive(Clone)]
pub struct AppApi {
    pub db: Arc<Db>,
    /// The participant's admin API.
    pub participant_admin: String,
    pub faults: Arc<crate::faults::Faults>,
}

/// An HTTP refusal: Splice answers with a status code and a JSON `error` text.
type Refusal = (StatusCode, Json<Value>);

fn refuse(status: StatusCode, cause: impl Into<String>) -> Refusal {
    (status, Json(json!({ "error": cause.into() })))
}

fn unavailable(e: impl std::fmt::Display) -> Refusal {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the participant's admin API is not reachable: {e}"),
    )
}

#[derive(Debug, Deserialize)]
pub struct SnapshotQuery {
    timestamp: Option<String>,
    #[serde(default)]
    party_id: Option<String>,
    #[serde(default)]
    migration_id: Option<i64>,
    #[serde(default)]
    force: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct MigrationDumpRequest {
    migration_id: i64,
}

pub fn router(api: AppApi) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/validator/v0/admin/participant/identities",
            get(participant_identities),
        )
        .route(
            "/api/sv/v0/admin/domain/identities-dump",
            get(identities_dump),
        )
        .route("/api/sv/v0/admin/domain/data-snapshot", get(data_snapshot))
        .route(
            "/api/validator/v0/admin/domain/data-snapshot",
            get(validator_data_snapshot),
        )
        .route(
            "/api/sv/v0/admin/domain/migration-dump",
            get(migration_dump).post(trigger_migration_dump),
        )
        .with_state(api.clone())
        .layer(axum::middleware::from_fn_with_state(
            api.faults,
            crate::faults::http_fault_layer,
        ))
}

fn rfc3339(micros: i64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_micros(u64::try_from(micros).unwrap_or(0));
    humantime::format_rfc3339_micros(time).to_string()
}

impl AppApi {
    async fn channel(&self) -> std::result::Result<Channel, Refusal> {
        Channel::from_shared(self.participant_admin.clone())
            .map_err(unavailable)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(unavailable)
    }

    /// The participant's `NodeIdentitiesDump`: its uid, exported keys and (empty) authorized store.
    async fn participant_dump(&self) -> std::result::Result<Value, Refusal> {
        let channel = self.channel().await?;
        let status = admin::participant_status_service_client::ParticipantStatusServiceClient::new(
            channel.clone(),
        )
        .participant_status(admin::ParticipantStatusRequest {})
        .await
        .map_err(unavailable)?
        .into_inner();
        let uid = match status.kind {
            Some(admin::participant_status_response::Kind::Status(status)) => {
                status.common_status.map(|c| c.uid).unwrap_or_default()
            }
            _ => {
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the participant is not initialized",
                ));
            }
        };
        let mut vault = vault::vault_service_client::VaultServiceClient::new(channel);
        let listed = vault
            .list_my_keys(vault::ListMyKeysRequest { filters: None })
            .await
            .map_err(unavailable)?
            .into_inner();
        let mut keys = Vec::new();
        for metadata in listed.private_keys_metadata {
            let Some(vault::private_key_metadata::PublicKeyWithName::V30(named)) =
                metadata.public_key_with_name
            else {
                continue;
            };
            let fingerprint = match named.public_key.and_then(|k| k.key) {
                Some(proto_canton::crypto::v30::public_key::Key::SigningPublicKey(k)) => {
                    fingerprint(&k.public_key, &named.name, &uid)
                }
                Some(proto_canton::crypto::v30::public_key::Key::EncryptionPublicKey(k)) => {
                    fingerprint(&k.public_key, &named.name, &uid)
                }
                None => continue,
            };
            let pair = vault
                .export_key_pair(vault::ExportKeyPairRequest {
                    fingerprint,
                    protocol_version: 34,
                    password: String::new(),
                })
                .await
                .map_err(unavailable)?
                .into_inner()
                .key_pair;
            keys.push(json!({
                "keyPair": base64::engine::general_purpose::STANDARD.encode(pair),
                "name": named.name,
            }));
        }
        Ok(json!({
            "id": uid,
            "keys": keys,
            "authorizedStoreSnapshot": "",
            "version": env!("CARGO_PKG_VERSION"),
        }))
    }

    /// The synchronizer and its sequencer and mediator as the participant's topology has them.
    async fn synchronizer_identities(&self) -> std::result::Result<Value, Refusal> {
        let channel = self.channel().await?;
        let registered = admin::synchronizer_connectivity_service_client::SynchronizerConnectivityServiceClient::new(channel.clone())
            .list_registered_synchronizers(admin::ListRegisteredSynchronizersRequest {})
            .await
            .map_err(unavailable)?
            .into_inner()
            .results;
        let Some(first) = registered.first() else {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the participant has no synchronizer",
            ));
        };
        let alias = first
            .config
            .as_ref()
            .map(|c| c.synchronizer_alias.clone())
            .unwrap_or_default();
        let physical = first.physical_synchronizer_id.clone().unwrap_or_default();
        let synchronizer_id = physical
            .rsplit_once("::")
            .map_or(physical.clone(), |(id, _)| id.to_owned());
        let mut read =
            topo::topology_manager_read_service_client::TopologyManagerReadServiceClient::new(
                channel,
            );
        let base = || {
            Some(topo::BaseQuery {
                time_query: Some(topo::base_query::TimeQuery::HeadState(())),
                ..Default::default()
            })
        };
        let sequencers: Vec<String> = read
            .list_sequencer_synchronizer_state(topo::ListSequencerSynchronizerStateRequest {
                base_query: base(),
                filter_synchronizer_id: synchronizer_id.clone(),
            })
            .await
            .map_err(unavailable)?
            .into_inner()
            .results
            .into_iter()
            .flat_map(|r| r.item.map(|i| i.active).unwrap_or_default())
            .collect();
        let mediators: Vec<String> = read
            .list_mediator_synchronizer_state(topo::ListMediatorSynchronizerStateRequest {
                base_query: base(),
                filter_synchronizer_id: synchronizer_id.clone(),
            })
            .await
            .map_err(unavailable)?
            .into_inner()
            .results
            .into_iter()
            .flat_map(|r| r.item.map(|i| i.active).unwrap_or_default())
            .collect();
        let node = |member: Option<&String>| {
            json!({
                "id": member.map(|m| m.split_once("::").map_or(m.as_str(), |(_, uid)| uid)).unwrap_or_default(),
                "keys": [],
                "authorizedStoreSnapshot": "",
            })
        };
        Ok(json!({
            "domain_alias": alias,
            "domain_id": synchronizer_id,
            "sequencer": node(sequencers.first()),
            "mediator": node(mediators.first()),
        }))
    }

    /// The data snapshot at `query.timestamp`: 400 when the participant is pruned past it,
    /// 429 when the participant (or this app) has not caught up to it, unless `force`.
    async fn snapshot(&self, query: &SnapshotQuery) -> std::result::Result<Value, Refusal> {
        let Some(text) = &query.timestamp else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the timestamp query parameter is required (ISO-8601, UTC)",
            ));
        };
        let at = humantime::parse_rfc3339_weak(text).map_err(|e| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("timestamp {text:?} is not ISO-8601: {e}"),
            )
        })?;
        let force = query.force.unwrap_or(false);
        let channel = self.channel().await?;
        let mut party = admin::party_management_service_client::PartyManagementServiceClient::new(
            channel.clone(),
        );
        let offset = match party
            .get_highest_offset_by_timestamp(admin::GetHighestOffsetByTimestampRequest {
                synchronizer_id: String::new(),
                timestamp: Some(at.into()),
                force,
            })
            .await
        {
            Ok(reply) => reply.into_inner().ledger_offset,
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "the participant is pruned beyond {text}: {}",
                        status.message()
                    ),
                ));
            }
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                return Err(refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "the participant has not caught up to {text} yet; retry later: {}",
                        status.message()
                    ),
                ));
            }
            Err(status) => return Err(unavailable(status.message())),
        };
        let app = state(&self.db).await.map_err(unavailable)?;
        if !force && app.processed_offset < offset {
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the app has processed up to offset {}, not yet {offset}; retry later",
                    app.processed_offset
                ),
            ));
        }
        let parties: Vec<String> = query.party_id.iter().cloned().collect();
        let mut stream = if offset == 0 {
            None
        } else {
            Some(
                admin::participant_repair_service_client::ParticipantRepairServiceClient::new(
                    channel,
                )
                .export_acs(admin::ExportAcsRequest {
                    party_ids: parties,
                    synchronizer_id: String::new(),
                    ledger_offset: offset,
                    contract_synchronizer_renames: Default::default(),
                    excluded_stakeholder_ids: Vec::new(),
                })
                .await
                .map_err(unavailable)?
                .into_inner(),
            )
        };
        let mut acs = Vec::new();
        if let Some(stream) = stream.as_mut() {
            while let Some(chunk) = stream.message().await.map_err(unavailable)? {
                acs.extend(chunk.chunk);
            }
        }
        let at_micros = at
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Ok(json!({
            "created_at": rfc3339(crate::sequencer::now_micros()),
            "migration_id": query.migration_id.unwrap_or(app.migration_id),
            "data_snapshot": {
                "genesis_state": null,
                "acs_snapshot": base64::engine::general_purpose::STANDARD.encode(acs),
                "acs_timestamp": rfc3339(at_micros),
                "dars": [],
            },
        }))
    }

    async fn full_dump(&self, migration_id: i64) -> std::result::Result<Value, Refusal> {
        let now = rfc3339(crate::sequencer::now_micros());
        let snapshot = self
            .snapshot(&SnapshotQuery {
                timestamp: Some(now.clone()),
                party_id: None,
                migration_id: Some(migration_id),
                force: Some(true),
            })
            .await?;
        let mut identities = self.synchronizer_identities().await?;
        identities["participant"] = self.participant_dump().await?;
        Ok(json!({
            "migration_id": migration_id,
            "identities": identities,
            "data_snapshot": snapshot["data_snapshot"],
            "created_at": now,
        }))
    }
}

/// Recovers the fingerprint of a listed key (the vault names the node's namespace key after
/// the node; other keys carry their own fingerprint).
fn fingerprint(public_key: &[u8], name: &str, uid: &str) -> String {
    if name.ends_with("-namespace") {
        return uid
            .rsplit_once("::")
            .map_or(String::new(), |(_, fp)| fp.to_owned());
    }
    use sha2::Digest;
    format!("1220{}", hex::encode(sha2::Sha256::digest(public_key)))
}

async fn participant_identities(
    State(api): State<AppApi>,
) -> std::result::Result<Json<Value>, Refusal> {
    api.participant_dump().await.map(Json)
}

async fn identities_dump(State(api): State<AppApi>) -> std::result::Result<Json<Value>, Refusal> {
    let mut identities = api.synchronizer_identities().await?;
    identities["participant"] = api.participant_dump().await?;
    Ok(Json(json!({ "identities": identities })))
}

async fn data_snapshot(
    State(api): State<AppApi>,
    Query(query): Query<SnapshotQuery>,
) -> std::result::Result<Json<Value>, Refusal> {
    api.snapshot(&query).await.map(Json)
}

async fn validator_data_snapshot(
    State(api): State<AppApi>,
    Query(query): Query<SnapshotQuery>,
) -> std::result::Result<Json<Value>, Refusal> {
    let snapshot = api.snapshot(&query).await?;
    let mut dump = json!({
        "identities": { "participant": api.participant_dump().await? },
        "created_at": snapshot["created_at"],
        "migration_id": snapshot["migration_id"],
    });
    dump["data_snapshot"] = snapshot["data_snapshot"].clone();
    Ok(Json(
        json!({ "data_snapshot": dump, "migration_id": snapshot["migration_id"] }),
    ))
}

async fn migration_dump(State(api): State<AppApi>) -> std::result::Result<Json<Value>, Refusal> {
    let app = state(&api.db).await.map_err(unavailable)?;
    api.full_dump(app.migration_id).await.map(Json)
}

/// Takes a migration dump and keeps it in the app's database (with the action log entry).
async fn trigger_migration_dump(
    State(api): State<AppApi>,
    Json(body): Json<MigrationDumpRequest>,
) -> std::result::Result<Json<Value>, Refusal> {
    let dump = api.full_dump(body.migration_id).await?;
    let stored = async {
        let mut guard = api.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a migration dump", e))?;
        tx.execute(
            "INSERT INTO app_migration_dump (migration_id, created_at_micros, dump) VALUES ($1, $2, $3)
             ON CONFLICT (migration_id) DO UPDATE SET created_at_micros = $2, dump = $3",
            &[&body.migration_id, &crate::sequencer::now_micros(), &dump.to_string()],
        )
        .await
        .map_err(|e| Error::db("storing a migration dump", e))?;
        crate::db::log_action(
            &tx,
            "POST /api/sv/v0/admin/domain/migration-dump",
            &format!("migration_id={}", body.migration_id),
            "OK",
        )
        .await
        .map_err(|e| Error::new(ErrorKind::Database, e.to_string()))?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a migration dump", e))
    }
    .await;
    stored.map_err(unavailable)?;
    Ok(Json(json!({ "migration_id": body.migration_id })))
}
