//! A participant's active contract set at an offset, and the ACS snapshot byte format of
//! `ExportAcs`/`ExportPartyAcs`/`ImportPartyAcs` (§12 of the notes): a gzip stream of
//! varint-length-delimited `UntypedVersionedMessage { data = ActiveContract, version = 30 }`.

use std::io::{Read, Write};

use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::Code;

use crate::error::{CallError, CantonError, Error};

/// `com.digitalasset.canton.version.v1.UntypedVersionedMessage` (`oneof wrapper { data = 1 }`,
/// `version = 2`), which `proto-canton` does not compile.
#[derive(Clone, PartialEq, prost::Message)]
pub struct UntypedVersionedMessage {
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(int32, tag = "2")]
    pub version: i32,
}

/// The protocol version of the snapshot entries Canton 3.4 writes.
pub const SNAPSHOT_VERSION: i32 = 30;

/// One contract of a snapshot. Canton puts a Ledger API `ActiveContract` into
/// `admin.participant.v30.ActiveContract.active_contract`; the sim puts this JSON there (the
/// sidecar treats the bytes as opaque).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    pub contract_id: String,
    pub stakeholders: Vec<String>,
    pub created_by: String,
    pub created_ts_micros: i64,
    pub synchronizer_id: String,
}

fn snapshot_error(cause: String) -> CallError {
    CantonError::new(Code::InvalidArgument, "INVALID_ACS_SNAPSHOT", cause).into()
}

/// Encodes contracts as Canton's snapshot stream (gzip of delimited versioned entries).
pub fn encode(contracts: &[Contract]) -> Result<Vec<u8>, CallError> {
    let mut plain = Vec::new();
    for contract in contracts {
        let inner = serde_json::to_vec(contract).map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Io,
                format!("encoding a contract: {e}"),
            )
        })?;
        let wrapper = proto_canton::admin::participant::v30::ActiveContract {
            active_contract: inner,
        };
        UntypedVersionedMessage {
            data: wrapper.encode_to_vec(),
            version: SNAPSHOT_VERSION,
        }
        .encode_length_delimited(&mut plain)
        .map_err(|e| {
            Error::new(
                crate::error::ErrorKind::Io,
                format!("framing a contract: {e}"),
            )
        })?;
    }
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&plain)
        .and_then(|()| gzip.finish())
        .map_err(|e| {
            CallError::from(Error::with_source(
                crate::error::ErrorKind::Io,
                "compressing a snapshot",
                e,
            ))
        })
}

/// Decodes a snapshot; anything that is not gzip of versioned entries is refused.
pub fn decode(bytes: &[u8]) -> Result<Vec<Contract>, CallError> {
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut plain)
        .map_err(|e| snapshot_error(format!("the ACS snapshot is not a gzip stream: {e}")))?;
    let mut rest = plain.as_slice();
    let mut contracts = Vec::new();
    while !rest.is_empty() {
        let entry = UntypedVersionedMessage::decode_length_delimited(&mut rest).map_err(|e| {
            snapshot_error(format!(
                "entry {} is not a versioned message: {e}",
                contracts.len()
            ))
        })?;
        if entry.version != SNAPSHOT_VERSION {
            return Err(snapshot_error(format!(
                "entry {} has version {}, expected {SNAPSHOT_VERSION}",
                contracts.len(),
                entry.version
            )));
        }
        let wrapper =
            proto_canton::admin::participant::v30::ActiveContract::decode(entry.data.as_slice())
                .map_err(|e| {
                    snapshot_error(format!(
                        "entry {} is not an ActiveContract: {e}",
                        contracts.len()
                    ))
                })?;
        let contract: Contract = serde_json::from_slice(&wrapper.active_contract).map_err(|e| {
            snapshot_error(format!(
                "entry {} holds no contract canton-sim wrote: {e}",
                contracts.len()
            ))
        })?;
        contracts.push(contract);
    }
    Ok(contracts)
}

/// The ACS at `offset` (contracts created at or before it and not archived by then), of the
/// given parties (any stakeholder; empty = all), sorted by contract id.
pub async fn at_offset(
    client: &impl tokio_postgres::GenericClient,
    offset: i64,
    parties: &[String],
    synchronizer_id: &str,
) -> Result<Vec<Contract>, CallError> {
    let rows = client
        .query(
            "SELECT contract_id, stakeholders, created_by, created_ts_micros FROM (
                 SELECT contract_id, stakeholders, created_by, created_ts_micros, created_offset
                 FROM participant_contract
                 UNION ALL
                 SELECT contract_id, stakeholders, created_by, created_ts_micros, created_offset
                 FROM participant_archived_contract WHERE archived_offset > $1) c
             WHERE created_offset <= $1 AND (cardinality($2::text[]) = 0 OR stakeholders && $2)
             ORDER BY contract_id",
            &[&offset, &parties],
        )
        .await
        .map_err(|e| Error::db("reading the ACS at an offset", e))?;
    Ok(rows
        .iter()
        .map(|row| Contract {
            contract_id: row.get(0),
            stakeholders: row.get(1),
            created_by: row.get(2),
            created_ts_micros: row.get(3),
            synchronizer_id: synchronizer_id.to_owned(),
        })
        .collect())
}

/// Splits bytes into chunks of at most `size` (chunks need not align with contracts).
pub fn chunks(bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
    bytes.chunks(size.max(1)).map(<[u8]>::to_vec).collect()
}
