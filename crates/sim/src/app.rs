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
            // A migration resets the processed offset; an end read before it must not undo that.
            let migration_id = match state(&db).await {
                Ok(app) => app.migration_id,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the app state");
                    continue;
                }
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
                             polled_at_micros = $2
                         WHERE migration_id = $3",
                        &[&end, &crate::sequencer::now_micros(), &migration_id],
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
    /// The participant's ledger API.
    pub participant_ledger: String,
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

    /// The participant's uid, from its status service.
    async fn participant_uid(&self, channel: &Channel) -> std::result::Result<String, Refusal> {
        let status = admin::participant_status_service_client::ParticipantStatusServiceClient::new(
            channel.clone(),
        )
        .participant_status(admin::ParticipantStatusRequest {})
        .await
        .map_err(unavailable)?
        .into_inner();
        match status.kind {
            Some(admin::participant_status_response::Kind::Status(status)) => {
                Ok(status.common_status.map(|c| c.uid).unwrap_or_default())
            }
            _ => Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the participant is not initialized",
            )),
        }
    }

    /// The participant's ledger end (Ledger API `GetLedgerEnd`).
    async fn participant_ledger_end(&self) -> std::result::Result<i64, Refusal> {
        let channel = Channel::from_shared(self.participant_ledger.clone())
            .map_err(unavailable)?
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(unavailable)?;
        proto_canton::ledger::v2::state_service_client::StateServiceClient::new(channel)
            .get_ledger_end(proto_canton::ledger::v2::GetLedgerEndRequest {})
            .await
            .map(|reply| reply.into_inner().offset)
            .map_err(unavailable)
    }

    /// The participant's `NodeIdentitiesDump`: its uid, exported keys and (empty) authorized store.
    async fn participant_dump(&self) -> std::result::Result<Value, Refusal> {
        let channel = self.channel().await?;
        let uid = self.participant_uid(&channel).await?;
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
        } else {
            // Nothing on the ledger at that time: an empty snapshot, still a gzip stream.
            acs = crate::acs::encode(&[]).map_err(unavailable)?;
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

/// The action log method of a migration import.
pub const MIGRATE_METHOD: &str = "POST /control/migrate";

/// Body of `POST /control/migrate`: the migration dump (inline, or a file the app reads) and
/// the migration id the app moves to (default: the dump's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrateRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump_path: Option<std::path::PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_id: Option<i64>,
    /// Only check the dump and that it belongs to this app's participant; change nothing.
    #[serde(default)]
    pub check_only: bool,
}

/// Answer of `POST /control/migrate`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrated {
    pub migration_id: i64,
    /// The app was at this migration already; nothing was imported.
    pub already: bool,
    /// Only checked (`check_only`); nothing was imported.
    #[serde(default)]
    pub check_only: bool,
    /// The participant uid of the dump.
    #[serde(default)]
    pub participant: Option<String>,
    /// Contracts of the dump's ACS snapshot imported into the participant.
    pub contracts_imported: usize,
    #[serde(default)]
    pub acs_timestamp: Option<String>,
    /// The app's processed offset afterwards.
    pub processed_offset: i64,
}

/// A refused migration: HTTP status, an id for the action log, and the cause.
struct MigrationRefused {
    status: StatusCode,
    id: &'static str,
    cause: String,
}

impl MigrationRefused {
    fn new(status: StatusCode, id: &'static str, cause: impl Into<String>) -> Self {
        Self {
            status,
            id,
            cause: cause.into(),
        }
    }

    fn bad_dump(cause: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MIGRATION_DUMP_INVALID", cause)
    }

    fn from_refusal((status, Json(body)): Refusal) -> Self {
        let cause = body["error"].as_str().unwrap_or_default().to_owned();
        Self::new(status, "PARTICIPANT_UNAVAILABLE", cause)
    }
}

/// What the app needs of a dump.
struct ParsedDump {
    participant: String,
    acs: Vec<u8>,
    contracts: usize,
    acs_timestamp: Option<String>,
}

/// The migration dump in `value`: the value itself, or the `data_snapshot` of a validator's
/// whole data-snapshot answer, which wraps the dump.
pub fn migration_dump_of(value: &Value) -> &Value {
    if value.get("identities").is_none() && value["data_snapshot"].get("identities").is_some() {
        &value["data_snapshot"]
    } else {
        value
    }
}

/// The participant uid a migration dump belongs to (`identities.participant.id`).
pub fn dump_participant_id(value: &Value) -> Option<&str> {
    migration_dump_of(value)["identities"]["participant"]["id"]
        .as_str()
        .filter(|id| !id.is_empty())
}

fn parse_dump(dump: &Value) -> std::result::Result<ParsedDump, MigrationRefused> {
    let participant = dump_participant_id(dump)
        .ok_or_else(|| {
            MigrationRefused::bad_dump(
                "the dump has no identities.participant.id; an SV dump is the identities dump merged with the data snapshot, a validator dump the data_snapshot object of its data-snapshot answer",
            )
        })?
        .to_owned();
    let snapshot = &migration_dump_of(dump)["data_snapshot"];
    let encoded = snapshot["acs_snapshot"].as_str().ok_or_else(|| {
        MigrationRefused::bad_dump("the dump has no data_snapshot.acs_snapshot (base64 string)")
    })?;
    let acs = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|e| {
            MigrationRefused::bad_dump(format!("data_snapshot.acs_snapshot is not base64: {e}"))
        })?;
    let contracts = if acs.is_empty() {
        0
    } else {
        crate::acs::decode(&acs)
            .map_err(|e| {
                MigrationRefused::bad_dump(format!(
                    "data_snapshot.acs_snapshot is not an ACS snapshot: {e}"
                ))
            })?
            .len()
    };
    Ok(ParsedDump {
        participant,
        acs,
        contracts,
        acs_timestamp: snapshot["acs_timestamp"].as_str().map(str::to_owned),
    })
}

impl AppApi {
    /// What a Splice app started with migration enabled does with the migration dump: checks
    /// the dump is of its participant, imports the dump's ACS into the (new, empty, offline)
    /// participant with the repair service's `ImportAcs`, moves to `migration_id` and restarts
    /// its processing at the participant's ledger end. Already at `migration_id`: nothing is
    /// done. The outcome goes to the action log.
    pub async fn migrate(&self, request: MigrateRequest) -> std::result::Result<Migrated, Refusal> {
        let check_only = request.check_only;
        let mut detail = String::new();
        let outcome = self.migrate_logged(request, &mut detail).await;
        if !check_only || outcome.is_err() {
            let (status, text) = match &outcome {
                Ok(done) if done.already => ("OK", format!("{detail} already")),
                Ok(_) => ("OK", detail),
                Err(refused) => (refused.id, format!("{detail} refused: {}", refused.cause)),
            };
            let text = text.trim().to_owned();
            if let Err(e) = self.db.log_plain(MIGRATE_METHOD, &text, status).await {
                tracing::warn!(error = %e, "cannot log a migration");
            }
        }
        outcome.map_err(|refused| {
            (
                refused.status,
                Json(json!({ "error": refused.cause, "code": refused.id })),
            )
        })
    }

    async fn migrate_logged(
        &self,
        request: MigrateRequest,
        detail: &mut String,
    ) -> std::result::Result<Migrated, MigrationRefused> {
        let dump = match (request.dump, &request.dump_path) {
            (Some(dump), None) => dump,
            (None, Some(path)) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    MigrationRefused::bad_dump(format!(
                        "reading the dump file {}: {e}",
                        path.display()
                    ))
                })?;
                serde_json::from_str(&text).map_err(|e| {
                    MigrationRefused::bad_dump(format!(
                        "the dump file {} is not JSON: {e}",
                        path.display()
                    ))
                })?
            }
            _ => {
                return Err(MigrationRefused::bad_dump(
                    "give the dump as \"dump\" (JSON) or \"dump_path\" (a file the app reads), one of them",
                ));
            }
        };
        let migration_id = request
            .migration_id
            .or_else(|| migration_dump_of(&dump)["migration_id"].as_i64())
            .ok_or_else(|| {
                MigrationRefused::bad_dump(
                    "no migration id: give \"migration_id\" or a dump with one",
                )
            })?;
        *detail = format!("migration_id={migration_id}");
        let app = state(&self.db).await.map_err(|e| {
            MigrationRefused::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!("reading the app state: {e}"),
            )
        })?;
        if app.migration_id == migration_id {
            return Ok(Migrated {
                migration_id,
                already: true,
                check_only: request.check_only,
                participant: None,
                contracts_imported: 0,
                acs_timestamp: None,
                processed_offset: app.processed_offset,
            });
        }
        if app.migration_id > migration_id {
            return Err(MigrationRefused::new(
                StatusCode::CONFLICT,
                "MIGRATION_ID_OUTDATED",
                format!(
                    "the app is at migration {}, after {migration_id}; this dump is for an older migration",
                    app.migration_id
                ),
            ));
        }
        let parsed = parse_dump(&dump)?;
        detail.push_str(&format!(
            " participant={} contracts={} acs_timestamp={}",
            parsed.participant,
            parsed.contracts,
            parsed.acs_timestamp.as_deref().unwrap_or("none")
        ));
        let channel = self
            .channel()
            .await
            .map_err(MigrationRefused::from_refusal)?;
        let uid = self
            .participant_uid(&channel)
            .await
            .map_err(MigrationRefused::from_refusal)?;
        if uid != parsed.participant {
            return Err(MigrationRefused::new(
                StatusCode::CONFLICT,
                "MIGRATION_IDENTITY_MISMATCH",
                format!(
                    "the dump is of participant {}, but this app's participant is {uid}; import the dump taken from {uid}'s app",
                    parsed.participant
                ),
            ));
        }
        let answer = |contracts_imported, processed_offset| Migrated {
            migration_id,
            already: false,
            check_only: request.check_only,
            participant: Some(uid.clone()),
            contracts_imported,
            acs_timestamp: parsed.acs_timestamp.clone(),
            processed_offset,
        };
        if request.check_only {
            return Ok(answer(0, app.processed_offset));
        }
        let ledger_end = self
            .participant_ledger_end()
            .await
            .map_err(MigrationRefused::from_refusal)?;
        if ledger_end != 0 {
            return Err(MigrationRefused::new(
                StatusCode::CONFLICT,
                "MIGRATION_PARTICIPANT_NOT_EMPTY",
                format!(
                    "participant {uid} has a ledger (ledger end {ledger_end}); a migration imports into a participant on a new, empty database: reset it first (POST /control/reset-database on the participant)"
                ),
            ));
        }
        if parsed.contracts > 0 {
            self.import_acs(channel, &uid, &parsed.acs, migration_id)
                .await?;
        }
        let offset = self
            .participant_ledger_end()
            .await
            .map_err(MigrationRefused::from_refusal)?;
        detail.push_str(&format!(" offset={offset}"));
        let stored = async {
            let mut guard = self.db.lock().await?;
            guard
                .client()?
                .execute(
                    "UPDATE app_state SET migration_id = $1, processed_offset = $2,
                         participant_ledger_end = $2, polled_at_micros = $3",
                    &[&migration_id, &offset, &crate::sequencer::now_micros()],
                )
                .await
                .map_err(|e| Error::db("moving the app to the new migration", e))
        }
        .await;
        stored.map_err(|e| {
            MigrationRefused::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                format!(
                    "the ACS is imported, but the app could not record migration {migration_id}: {e}; reset the participant and migrate again"
                ),
            )
        })?;
        tracing::info!(migration_id, participant = %uid, contracts = parsed.contracts, offset, "migrated");
        Ok(answer(parsed.contracts, offset))
    }

    async fn import_acs(
        &self,
        channel: Channel,
        uid: &str,
        acs: &[u8],
        migration_id: i64,
    ) -> std::result::Result<(), MigrationRefused> {
        let mut messages: Vec<admin::ImportAcsRequest> = crate::acs::chunks(acs, 64 * 1024)
            .into_iter()
            .map(|chunk| admin::ImportAcsRequest {
                acs_snapshot: chunk,
                ..Default::default()
            })
            .collect();
        if let Some(first) = messages.first_mut() {
            first.contract_import_mode = admin::ContractImportMode::Accept as i32;
            first.workflow_id_prefix = format!("migration-{migration_id}");
        }
        admin::participant_repair_service_client::ParticipantRepairServiceClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .import_acs(futures::stream::iter(messages))
            .await
            .map(|_| ())
            .map_err(|status| {
                if status.code() == tonic::Code::FailedPrecondition {
                    MigrationRefused::new(
                        StatusCode::CONFLICT,
                        "MIGRATION_IMPORT_REFUSED",
                        format!(
                            "participant {uid} refused ImportAcs: {}; the import needs it disconnected from every synchronizer",
                            status.message()
                        ),
                    )
                } else {
                    MigrationRefused::new(
                        StatusCode::BAD_GATEWAY,
                        "MIGRATION_IMPORT_FAILED",
                        format!("participant {uid} failed ImportAcs: {}", status.message()),
                    )
                }
            })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn dump_with(contracts: &[crate::acs::Contract]) -> Value {
        let acs = crate::acs::encode(contracts).unwrap();
        json!({
            "migration_id": 3,
            "created_at": "2026-01-01T00:00:00Z",
            "identities": { "participant": { "id": "participant1::1220ab", "keys": [] } },
            "data_snapshot": {
                "acs_snapshot": base64::engine::general_purpose::STANDARD.encode(acs),
                "acs_timestamp": "2026-01-01T00:00:00Z",
                "dars": [],
                "genesis_state": null,
            },
        })
    }

    fn contract(id: &str) -> crate::acs::Contract {
        crate::acs::Contract {
            contract_id: id.to_owned(),
            stakeholders: vec!["PAR::participant1::1220ab".to_owned()],
            created_by: "PAR::participant1::1220ab".to_owned(),
            created_ts_micros: 7,
            synchronizer_id: "global::1220cd".to_owned(),
        }
    }

    #[test]
    fn a_dump_names_its_participant_and_counts_its_contracts() {
        let dump = dump_with(&[contract("00a"), contract("00b")]);
        let parsed = parse_dump(&dump).map_err(|r| r.cause).unwrap();
        assert_eq!(parsed.participant, "participant1::1220ab");
        assert_eq!(parsed.contracts, 2);
        assert_eq!(
            parsed.acs_timestamp.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        // A validator's whole data-snapshot answer wraps the dump.
        let wrapped = json!({ "data_snapshot": dump.clone(), "migration_id": 3 });
        assert_eq!(dump_participant_id(&wrapped), Some("participant1::1220ab"));
        assert_eq!(
            parse_dump(&wrapped).map_err(|r| r.cause).unwrap().contracts,
            2
        );
        assert_eq!(
            parse_dump(&dump_with(&[]))
                .map_err(|r| r.cause)
                .unwrap()
                .contracts,
            0
        );
    }

    #[test]
    fn a_dump_without_identity_or_snapshot_is_refused() {
        let mut dump = dump_with(&[contract("00a")]);
        dump["identities"]["participant"]["id"] = json!("");
        let refused = parse_dump(&dump).err().unwrap();
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
        assert!(refused.cause.contains("identities.participant.id"));
        let mut dump = dump_with(&[contract("00a")]);
        dump["data_snapshot"]["acs_snapshot"] = json!("bm90IGd6aXA=");
        let refused = parse_dump(&dump).err().unwrap();
        assert!(
            refused.cause.contains("not an ACS snapshot"),
            "{}",
            refused.cause
        );
    }
}
