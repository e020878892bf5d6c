//! Topology stores. The sequencer's database holds the synchronizer's store and decides every
//! change (serials, proposal merging, authorization); members keep a copy in their own database,
//! filled at handshake and by the topology events the sequencer sends. Reads are served from the
//! node's own copy, so a restored node answers with the topology its backup holds.

use prost::Message;
use proto_canton::protocol::v30 as protocol;
use proto_canton::protocol::v30::topology_mapping::Mapping;
use sha2::{Digest, Sha256};
use tonic::Code;

use crate::error::{CallError, CantonError, Error};
use crate::wire::sequencer::TopologyRecord;

/// `Enums.TopologyChangeOp`.
pub const ADD_REPLACE: i32 = 1;
pub const REMOVE: i32 = 2;

/// Canton's topology refusal ids (with the status code of their error category).
pub mod ids {
    pub const SERIAL_MISMATCH: &str = "TOPOLOGY_SERIAL_MISMATCH";
    pub const UNAUTHORIZED: &str = "TOPOLOGY_UNAUTHORIZED_TRANSACTION";
    pub const NO_PROPOSAL: &str = "TOPOLOGY_NO_APPROPRIATE_SIGNING_KEY_IN_STORE";
    pub const TOLERANCE_INCREASE: &str = "TOPOLOGY_LEDGER_TIME_RECORD_TIME_TOLERANCE_INCREASE";
    pub const INVALID_MAPPING: &str = "TOPOLOGY_INVALID_TOPOLOGY_MAPPING";
    pub const TRANSACTION_NOT_FOUND: &str = "TOPOLOGY_TRANSACTION_NOT_FOUND";
    pub const ALL: [&str; 6] = [
        SERIAL_MISMATCH,
        UNAUTHORIZED,
        NO_PROPOSAL,
        TOLERANCE_INCREASE,
        INVALID_MAPPING,
        TRANSACTION_NOT_FOUND,
    ];
}

/// `ForceFlag.FORCE_FLAG_LEDGER_TIME_RECORD_TIME_TOLERANCE_INCREASE`.
pub const FORCE_TOLERANCE_INCREASE: i32 = 2;

/// The oneof case name and what the mapping is about, which together identify the mapping
/// whose serials count up.
pub fn code_and_key(
    mapping: &protocol::TopologyMapping,
) -> Result<(&'static str, String), CantonError> {
    let invalid = |what: &str| {
        CantonError::new(
            Code::InvalidArgument,
            ids::INVALID_MAPPING,
            format!("the topology mapping {what}"),
        )
    };
    let Some(mapping) = &mapping.mapping else {
        return Err(invalid("is empty"));
    };
    Ok(match mapping {
        Mapping::PartyToParticipant(m) => ("party_to_participant", m.party.clone()),
        Mapping::OwnerToKeyMapping(m) => ("owner_to_key_mapping", m.member.clone()),
        Mapping::ParticipantPermission(m) => (
            "participant_permission",
            format!("{}/{}", m.synchronizer_id, m.participant_uid),
        ),
        Mapping::VettedPackages(m) => ("vetted_packages", m.participant_uid.clone()),
        Mapping::SynchronizerParametersState(m) => {
            ("synchronizer_parameters_state", m.synchronizer_id.clone())
        }
        Mapping::MediatorSynchronizerState(m) => (
            "mediator_synchronizer_state",
            format!("{}/{}", m.synchronizer_id, m.group),
        ),
        Mapping::SequencerSynchronizerState(m) => {
            ("sequencer_synchronizer_state", m.synchronizer_id.clone())
        }
        Mapping::SynchronizerTrustCertificate(m) => (
            "synchronizer_trust_certificate",
            format!("{}/{}", m.synchronizer_id, m.participant_uid),
        ),
        _ => {
            return Err(CantonError::new(
                Code::InvalidArgument,
                ids::INVALID_MAPPING,
                "canton-sim does not model this kind of topology mapping",
            ));
        }
    })
}

/// The namespace (fingerprint) of a uid, party or member id: the part after the last `::`.
pub fn namespace_of(id: &str) -> &str {
    id.rsplit_once("::").map_or(id, |(_, fp)| fp)
}

/// Canton's transaction hash covers operation, serial and mapping, not the signatures, so two
/// proposals of the same change share it.
pub fn transaction_hash(operation: i32, serial: u32, mapping: &[u8]) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(b"canton-sim/topology-transaction\0");
    hash.update(operation.to_be_bytes());
    hash.update(serial.to_be_bytes());
    hash.update(mapping);
    let mut out = vec![0x12, 0x20];
    out.extend_from_slice(&hash.finalize());
    out
}

/// A record's mapping, decoded.
pub fn mapping_of(record: &TopologyRecord) -> Result<protocol::TopologyMapping, CallError> {
    protocol::TopologyMapping::decode(record.mapping.as_slice()).map_err(|e| {
        CallError::from(Error::new(
            crate::error::ErrorKind::Database,
            format!("stored topology mapping does not decode: {e}"),
        ))
    })
}

const COLUMNS: &str = "store, mapping_code, mapping_key, serial, operation, mapping, proposal,
    sequenced_micros, valid_from_micros, valid_until_micros, transaction_hash, signed_by";

fn record_of(row: &tokio_postgres::Row) -> TopologyRecord {
    TopologyRecord {
        store: row.get(0),
        mapping_code: row.get(1),
        mapping_key: row.get(2),
        serial: u32::try_from(row.get::<_, i32>(3)).unwrap_or(0),
        operation: row.get(4),
        mapping: row.get(5),
        proposal: row.get(6),
        sequenced_micros: row.get(7),
        valid_from_micros: row.get(8),
        valid_until_micros: row.get(9),
        transaction_hash: row.get(10),
        signed_by: row.get(11),
    }
}

/// Stores `record` (a member's copy): a new transaction is inserted, a known one (same store and
/// hash) takes the new signatures, proposal state and validity.
pub async fn upsert(
    client: &impl tokio_postgres::GenericClient,
    record: &TopologyRecord,
) -> Result<(), CallError> {
    let serial = i32::try_from(record.serial).unwrap_or(i32::MAX);
    client
        .execute(
            &format!(
                "INSERT INTO topology_transaction ({COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (store, transaction_hash, proposal) DO UPDATE SET
                    signed_by = EXCLUDED.signed_by, valid_from_micros = EXCLUDED.valid_from_micros,
                    valid_until_micros = EXCLUDED.valid_until_micros"
            ),
            &[
                &record.store,
                &record.mapping_code,
                &record.mapping_key,
                &serial,
                &record.operation,
                &record.mapping,
                &record.proposal,
                &record.sequenced_micros,
                &record.valid_from_micros,
                &record.valid_until_micros,
                &record.transaction_hash,
                &record.signed_by,
            ],
        )
        .await
        .map_err(|e| Error::db("storing a topology transaction", e))?;
    if !record.proposal {
        // The proposal this transaction completes is gone once it is effective.
        client
            .execute(
                "DELETE FROM topology_transaction WHERE store = $1 AND transaction_hash = $2 AND proposal",
                &[&record.store, &record.transaction_hash],
            )
            .await
            .map_err(|e| Error::db("removing a completed proposal", e))?;
    }
    Ok(())
}

/// Which records a read asks for.
#[derive(Clone, Debug, Default)]
pub struct Query {
    /// Synchronizer id (logical or physical); `None` = every store.
    pub store: Option<String>,
    /// Only the authorized store was asked for (the sim keeps nothing there).
    pub authorized_only: bool,
    pub mapping_code: &'static str,
    pub proposals: bool,
    pub time: TimeQuery,
    /// Operation filter (0 = any).
    pub operation: i32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimeQuery {
    /// What is valid now (the default).
    #[default]
    HeadState,
    /// What was valid at this time (µs).
    Snapshot(i64),
    /// Everything whose validity overlaps `[from, until]`.
    Range(Option<i64>, Option<i64>),
}

/// Records of one mapping kind matching `query`, oldest first.
pub async fn query(
    client: &impl tokio_postgres::GenericClient,
    query: &Query,
) -> Result<Vec<TopologyRecord>, CallError> {
    if query.authorized_only {
        return Ok(Vec::new());
    }
    let (from, until, snapshot) = match query.time {
        TimeQuery::HeadState => (None, None, None),
        TimeQuery::Snapshot(at) => (None, None, Some(at)),
        TimeQuery::Range(from, until) => (from, until, None),
    };
    let head = matches!(query.time, TimeQuery::HeadState);
    let store_prefix = query.store.clone();
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM topology_transaction
                 WHERE mapping_code = $1 AND proposal = $2
                   AND ($3::text IS NULL OR $3 = store OR $3 LIKE store || '::%')
                   AND (NOT $4 OR valid_until_micros IS NULL)
                   AND ($5::bigint IS NULL OR (valid_from_micros <= $5 AND (valid_until_micros IS NULL OR valid_until_micros > $5)))
                   AND ($6::bigint IS NULL OR valid_until_micros IS NULL OR valid_until_micros > $6)
                   AND ($7::bigint IS NULL OR valid_from_micros <= $7)
                   AND ($8 = 0 OR operation = $8)
                 ORDER BY valid_from_micros, serial, id"
            ),
            &[
                &query.mapping_code,
                &query.proposals,
                &store_prefix,
                &head,
                &snapshot,
                &from,
                &until,
                &query.operation,
            ],
        )
        .await
        .map_err(|e| Error::db("reading topology transactions", e))?;
    Ok(rows.iter().map(record_of).collect())
}

/// The whole store of a synchronizer (what a member receives at handshake).
pub async fn snapshot(
    client: &impl tokio_postgres::GenericClient,
    store: &str,
) -> Result<Vec<TopologyRecord>, CallError> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM topology_transaction WHERE store = $1 ORDER BY id"),
            &[&store],
        )
        .await
        .map_err(|e| Error::db("reading the topology store", e))?;
    Ok(rows.iter().map(record_of).collect())
}

/// The current (fully authorized, still valid) mapping of `code`/`key` in `store`.
pub async fn current(
    client: &impl tokio_postgres::GenericClient,
    store: &str,
    code: &str,
    key: &str,
) -> Result<Option<TopologyRecord>, CallError> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM topology_transaction
                 WHERE store = $1 AND mapping_code = $2 AND mapping_key = $3 AND NOT proposal
                 ORDER BY serial DESC LIMIT 1"
            ),
            &[&store, &code, &key],
        )
        .await
        .map_err(|e| Error::db("reading the current topology mapping", e))?;
    Ok(row.as_ref().map(record_of))
}

/// A change asked for on the synchronizer's store.
#[derive(Clone, Debug)]
pub struct Change {
    pub operation: i32,
    /// 0: the next serial.
    pub serial: u32,
    pub mapping: protocol::TopologyMapping,
    pub signed_by: Vec<String>,
    pub must_fully_authorize: bool,
    pub force_flags: Vec<i32>,
}

/// Who must sign a change of `mapping` (namespaces), given the mapping it replaces.
fn required_signers(
    mapping: &protocol::TopologyMapping,
    previous: Option<&protocol::TopologyMapping>,
    synchronizer_namespace: &str,
) -> Vec<String> {
    let mut required = Vec::new();
    match &mapping.mapping {
        Some(Mapping::PartyToParticipant(new)) => {
            let old = match previous.and_then(|m| m.mapping.as_ref()) {
                Some(Mapping::PartyToParticipant(old)) => Some(old),
                _ => None,
            };
            let added: Vec<&str> = new
                .participants
                .iter()
                .filter(|p| {
                    old.is_none_or(|old| {
                        !old.participants
                            .iter()
                            .any(|o| o.participant_uid == p.participant_uid)
                    })
                })
                .map(|p| p.participant_uid.as_str())
                .collect();
            // A hosting participant may clear its own onboarding flag alone; anything else
            // needs the party's namespace.
            let only_flags_cleared = old.is_some_and(|old| {
                old.threshold == new.threshold
                    && old.participants.len() == new.participants.len()
                    && old
                        .participants
                        .iter()
                        .zip(&new.participants)
                        .all(|(o, n)| {
                            o.participant_uid == n.participant_uid
                                && o.permission == n.permission
                                && (o.onboarding == n.onboarding
                                    || (o.onboarding.is_some() && n.onboarding.is_none()))
                        })
            });
            if only_flags_cleared {
                if let Some(old) = old {
                    for (o, n) in old.participants.iter().zip(&new.participants) {
                        if o.onboarding.is_some() && n.onboarding.is_none() {
                            required.push(namespace_of(&n.participant_uid).to_owned());
                        }
                    }
                }
            } else {
                required.push(namespace_of(&new.party).to_owned());
            }
            required.extend(added.iter().map(|uid| namespace_of(uid).to_owned()));
        }
        Some(Mapping::OwnerToKeyMapping(m)) => required.push(namespace_of(&m.member).to_owned()),
        Some(Mapping::VettedPackages(m)) => {
            required.push(namespace_of(&m.participant_uid).to_owned());
        }
        Some(Mapping::SynchronizerTrustCertificate(m)) => {
            required.push(namespace_of(&m.participant_uid).to_owned());
        }
        _ => required.push(synchronizer_namespace.to_owned()),
    }
    required.sort();
    required.dedup();
    required
}

fn tolerance_micros(mapping: &protocol::TopologyMapping) -> Option<i64> {
    match &mapping.mapping {
        Some(Mapping::SynchronizerParametersState(state)) => state
            .synchronizer_parameters
            .as_ref()
            .and_then(|p| p.ledger_time_record_time_tolerance.as_ref())
            .map(|d| d.seconds * 1_000_000 + i64::from(d.nanos) / 1000),
        _ => None,
    }
}

/// Decides a change on the synchronizer's store (inside the caller's transaction): checks the
/// serial, merges the signatures into an identical proposal (a different proposal for the same
/// serial stays separate), and makes it effective at `now` once every required namespace signed.
pub async fn decide(
    tx: &tokio_postgres::Transaction<'_>,
    store: &str,
    synchronizer_namespace: &str,
    change: Change,
    now: i64,
) -> Result<TopologyRecord, CallError> {
    let (code, key) = code_and_key(&change.mapping)?;
    if change.operation != ADD_REPLACE && change.operation != REMOVE {
        return Err(CantonError::new(
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            format!(
                "topology change operation {} is not ADD_REPLACE or REMOVE",
                change.operation
            ),
        )
        .into());
    }
    let current = current(tx, store, code, &key).await?;
    let expected = current.as_ref().map_or(1, |c| c.serial + 1);
    let serial = if change.serial == 0 {
        expected
    } else {
        change.serial
    };
    if serial != expected {
        return Err(CantonError::new(
            Code::FailedPrecondition,
            ids::SERIAL_MISMATCH,
            format!(
                "The given serial {serial} does not match the expected serial {expected} of {code} {key}; read the current serial and propose the next one"
            ),
        )
        .into());
    }
    let previous = match &current {
        Some(record) => Some(mapping_of(record)?),
        None => None,
    };
    let encoded = change.mapping.encode_to_vec();
    let hash = transaction_hash(change.operation, serial, &encoded);
    let existing = tx
        .query_opt(
            "SELECT signed_by FROM topology_transaction WHERE store = $1 AND transaction_hash = $2 AND proposal",
            &[&store, &hash],
        )
        .await
        .map_err(|e| Error::db("reading a proposal", e))?;
    let mut signed_by: Vec<String> = existing.map(|row| row.get(0)).unwrap_or_default();
    signed_by.extend(change.signed_by.iter().cloned());
    signed_by.sort();
    signed_by.dedup();
    let required = required_signers(&change.mapping, previous.as_ref(), synchronizer_namespace);
    let missing: Vec<&String> = required.iter().filter(|r| !signed_by.contains(r)).collect();
    let authorized = missing.is_empty();
    if !authorized && change.must_fully_authorize {
        return Err(CantonError::new(
            Code::PermissionDenied,
            ids::UNAUTHORIZED,
            format!(
                "{code} {key} serial {serial} is not fully authorized: missing signatures of {missing:?}; propose it without must_fully_authorize and have them authorize it"
            ),
        )
        .into());
    }
    if let (Some(new), Some(old)) = (
        tolerance_micros(&change.mapping),
        previous.as_ref().and_then(tolerance_micros),
    ) && new > old
        && !change.force_flags.contains(&FORCE_TOLERANCE_INCREASE)
    {
        return Err(CantonError::new(
            Code::FailedPrecondition,
            ids::TOLERANCE_INCREASE,
            format!(
                "increasing the ledger time record time tolerance from {old} µs to {new} µs can be dangerous; pass FORCE_FLAG_LEDGER_TIME_RECORD_TIME_TOLERANCE_INCREASE to do it"
            ),
        )
        .into());
    }
    let record = TopologyRecord {
        store: store.to_owned(),
        mapping_code: code.to_owned(),
        mapping_key: key,
        serial,
        operation: change.operation,
        mapping: encoded,
        proposal: !authorized,
        sequenced_micros: now,
        valid_from_micros: now,
        valid_until_micros: None,
        transaction_hash: hash,
        signed_by,
    };
    if authorized {
        // The change ends the previous period and every open proposal of the mapping.
        tx.execute(
            "UPDATE topology_transaction SET valid_until_micros = $4
             WHERE store = $1 AND mapping_code = $2 AND mapping_key = $3 AND valid_until_micros IS NULL",
            &[&store, &code, &record.mapping_key, &now],
        )
        .await
        .map_err(|e| Error::db("ending the previous topology period", e))?;
    }
    upsert(tx, &record).await?;
    Ok(record)
}

/// The records a `decide` changed (the new record plus every one it closed), for members.
pub async fn changed_since(
    client: &impl tokio_postgres::GenericClient,
    store: &str,
    code: &str,
    key: &str,
) -> Result<Vec<TopologyRecord>, CallError> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM topology_transaction
                 WHERE store = $1 AND mapping_code = $2 AND mapping_key = $3 ORDER BY id"
            ),
            &[&store, &code, &key],
        )
        .await
        .map_err(|e| Error::db("reading a topology mapping's history", e))?;
    Ok(rows.iter().map(record_of).collect())
}

/// Adds `mapping` as a fully authorized serial-1 transaction unless the store already has the
/// mapping (first start of a sequencer; afterwards the database rules).
pub async fn seed(
    client: &impl tokio_postgres::GenericClient,
    store: &str,
    mapping: &protocol::TopologyMapping,
    signed_by: &str,
    now: i64,
) -> Result<bool, CallError> {
    let (code, key) = code_and_key(mapping)?;
    if current(client, store, code, &key).await?.is_some() {
        return Ok(false);
    }
    let encoded = mapping.encode_to_vec();
    upsert(
        client,
        &TopologyRecord {
            store: store.to_owned(),
            mapping_code: code.to_owned(),
            mapping_key: key,
            serial: 1,
            operation: ADD_REPLACE,
            transaction_hash: transaction_hash(ADD_REPLACE, 1, &encoded),
            mapping: encoded,
            proposal: false,
            sequenced_micros: now,
            valid_from_micros: now,
            valid_until_micros: None,
            signed_by: vec![signed_by.to_owned()],
        },
    )
    .await?;
    Ok(true)
}

/// The synchronizer's current dynamic parameters from a store.
pub async fn current_parameters(
    client: &impl tokio_postgres::GenericClient,
    store: &str,
) -> Result<Option<protocol::DynamicSynchronizerParameters>, CallError> {
    let Some(record) = current(client, store, "synchronizer_parameters_state", store).await? else {
        return Ok(None);
    };
    Ok(match mapping_of(&record)?.mapping {
        Some(Mapping::SynchronizerParametersState(state)) => state.synchronizer_parameters,
        _ => None,
    })
}
