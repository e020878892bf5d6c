//! `TopologyManagerWriteService.Authorize` (propose a change, or sign an open proposal by its
//! hash) and `VaultService` key generation, on every node kind. Changes go to the synchronizer's
//! store in the sequencer's database, which decides them.

use std::sync::Arc;

use prost::Message;
use proto_canton::crypto::admin::v30 as vault;
use proto_canton::crypto::admin::v30::vault_service_server::{VaultService, VaultServiceServer};
use proto_canton::crypto::v30 as crypto;
use proto_canton::protocol::v30 as protocol;
use proto_canton::topology::admin::v30 as topo;
use proto_canton::topology::admin::v30::topology_manager_write_service_server::{
    TopologyManagerWriteService, TopologyManagerWriteServiceServer,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, Response, Status};

use super::common::{Context, logged};
use super::topology::store_of;
use crate::error::{CallError, CantonError, Error};
use crate::topology::{self, ids};
use crate::wire::sequencer::{SubmitTopologyRequest, TopologyRecord};

const WRITE: &str = "/com.digitalasset.canton.topology.admin.v30.TopologyManagerWriteService/";
const VAULT: &str = "/com.digitalasset.canton.crypto.admin.v30.VaultService/";

/// `com.digitalasset.canton.protocol.v30.TopologyTransaction` (not compiled by `proto-canton`):
/// the bytes inside a `SignedTopologyTransaction`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopologyTransaction {
    #[prost(int32, tag = "1")]
    pub operation: i32,
    #[prost(uint32, tag = "2")]
    pub serial: u32,
    #[prost(message, optional, tag = "3")]
    pub mapping: Option<protocol::TopologyMapping>,
}

#[derive(Clone)]
pub struct WriteApi {
    context: Context,
}

pub fn add_services(context: &Context, routes: tonic::service::Routes) -> tonic::service::Routes {
    let api = WriteApi {
        context: Arc::clone(context),
    };
    routes
        .add_service(TopologyManagerWriteServiceServer::new(api.clone()))
        .add_service(VaultServiceServer::new(api))
}

fn signed(record: &TopologyRecord) -> Result<protocol::SignedTopologyTransaction, CallError> {
    let mapping = topology::mapping_of(record)?;
    Ok(protocol::SignedTopologyTransaction {
        transaction: TopologyTransaction {
            operation: record.operation,
            serial: record.serial,
            mapping: Some(mapping),
        }
        .encode_to_vec(),
        signatures: record
            .signed_by
            .iter()
            .map(|fingerprint| crypto::Signature {
                format: crypto::SignatureFormat::Symbolic as i32,
                signature: record.transaction_hash.clone(),
                signed_by: fingerprint.clone(),
                signing_algorithm_spec: crypto::SigningAlgorithmSpec::Ed25519 as i32,
                signature_delegation: None,
            })
            .collect(),
        proposal: record.proposal,
        multi_transaction_signatures: Vec::new(),
    })
}

impl WriteApi {
    /// The namespaces this node can sign for: its own, and the synchronizer owner's on the
    /// sequencer (which holds the owner key in the sim).
    fn own_namespaces(&self) -> Vec<String> {
        let mut own = vec![self.context.config.fingerprint()];
        if let Some(sequencer) = &self.context.sequencer {
            own.push(topology::namespace_of(&sequencer.identity.synchronizer_id).to_owned());
        }
        own
    }

    async fn submit(&self, request: SubmitTopologyRequest) -> Result<TopologyRecord, CallError> {
        if let Some(sequencer) = &self.context.sequencer {
            let mut request = request;
            request.sender = self.context.config.member();
            return sequencer.submit_topology(&request).await;
        }
        let member = self.context.member.as_ref().ok_or_else(|| {
            CallError::from(CantonError::new(
                Code::FailedPrecondition,
                "SYNC_SERVICE_SYNCHRONIZER_DISCONNECTED",
                "this node has no synchronizer connection",
            ))
        })?;
        member.submit_topology(request).await
    }

    /// The proposal with `hash` (hex) in this node's copy of `store`.
    async fn proposal(&self, store: Option<&str>, hash: &str) -> Result<TopologyRecord, CallError> {
        let bytes = hex::decode(hash).map_err(|_| {
            CantonError::new(
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
                format!("transaction_hash {hash:?} is not hex"),
            )
        })?;
        let mut guard = self.context.db.lock().await?;
        let rows = guard
            .client()?
            .query(
                "SELECT store, mapping_code, mapping_key, serial, operation, mapping, proposal,
                        sequenced_micros, valid_from_micros, valid_until_micros, transaction_hash, signed_by
                 FROM topology_transaction WHERE transaction_hash = $1 AND proposal
                   AND valid_until_micros IS NULL AND ($2::text IS NULL OR store = $2 OR $2 LIKE store || '::%')",
                &[&bytes, &store],
            )
            .await
            .map_err(|e| Error::db("reading a proposal", e))?;
        let row = rows.first().ok_or_else(|| {
            CallError::from(CantonError::new(
                Code::NotFound,
                ids::TRANSACTION_NOT_FOUND,
                format!("no open proposal with hash {hash}"),
            ))
        })?;
        Ok(TopologyRecord {
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
        })
    }

    async fn authorize(
        &self,
        request: topo::AuthorizeRequest,
    ) -> Result<topo::AuthorizeResponse, CallError> {
        let (store, authorized_only) = store_of(request.store.as_ref());
        if authorized_only || store.is_none() {
            return Err(CantonError::new(
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
                "give store = synchronizer(<id>); canton-sim keeps topology only in synchronizer stores",
            )
            .into());
        }
        let own = self.own_namespaces();
        let signed_by = if request.signed_by.is_empty() {
            own.clone()
        } else {
            request.signed_by.clone()
        };
        if let Some(foreign) = signed_by.iter().find(|fp| !own.contains(fp)) {
            return Err(CantonError::new(
                Code::NotFound,
                ids::NO_PROPOSAL,
                format!("this node holds no signing key with fingerprint {foreign}"),
            )
            .into());
        }
        let force_flags: Vec<i32> = request.force_changes.clone();
        let submission = match request.r#type {
            Some(topo::authorize_request::Type::Proposal(proposal)) => {
                let mapping = proposal
                    .mapping
                    .ok_or_else(|| super::common::missing("proposal.mapping"))?;
                SubmitTopologyRequest {
                    sender: String::new(),
                    operation: proposal.change,
                    serial: proposal.serial,
                    mapping: mapping.encode_to_vec(),
                    signed_by,
                    must_fully_authorize: request.must_fully_authorize,
                    force_flags,
                }
            }
            Some(topo::authorize_request::Type::TransactionHash(hash)) => {
                let open = self.proposal(store.as_deref(), &hash).await?;
                SubmitTopologyRequest {
                    sender: String::new(),
                    operation: open.operation,
                    serial: open.serial,
                    mapping: open.mapping,
                    signed_by,
                    must_fully_authorize: request.must_fully_authorize,
                    force_flags,
                }
            }
            None => return Err(super::common::missing("proposal or transaction_hash").into()),
        };
        let record = self.submit(submission).await?;
        Ok(topo::AuthorizeResponse {
            transaction: Some(signed(&record)?),
        })
    }
}

#[tonic::async_trait]
impl TopologyManagerWriteService for WriteApi {
    async fn authorize(
        &self,
        request: Request<topo::AuthorizeRequest>,
    ) -> Result<Response<topo::AuthorizeResponse>, Status> {
        let request = request.into_inner();
        let method = format!("{WRITE}Authorize");
        let detail = match &request.r#type {
            Some(topo::authorize_request::Type::Proposal(p)) => format!(
                "proposal serial={} mapping={:?}",
                p.serial,
                p.mapping
                    .as_ref()
                    .and_then(|m| topology::code_and_key(m).ok())
            ),
            Some(topo::authorize_request::Type::TransactionHash(h)) => format!("hash={h}"),
            None => String::new(),
        };
        logged(&self.context, &method, detail.clone(), async {
            let response = WriteApi::authorize(self, request).await?;
            let proposal = response.transaction.as_ref().is_some_and(|t| t.proposal);
            self.context
                .db
                .log_plain(&method, &format!("{detail} proposal={proposal}"), "OK")
                .await?;
            Ok(response)
        })
        .await
    }
}

/// A generated key as the vault stores it.
struct StoredKey {
    fingerprint: String,
    name: String,
    purpose: i32,
    public_key: Vec<u8>,
    key_spec: i32,
    usage: Vec<i32>,
}

impl StoredKey {
    fn public(&self) -> crypto::PublicKey {
        use crypto::public_key::Key;
        crypto::PublicKey {
            key: Some(if self.purpose == crypto::KeyPurpose::Signing as i32 {
                Key::SigningPublicKey(self.signing())
            } else {
                Key::EncryptionPublicKey(crypto::EncryptionPublicKey {
                    format: crypto::CryptoKeyFormat::Raw as i32,
                    public_key: self.public_key.clone(),
                    scheme: 0,
                    key_spec: self.key_spec,
                })
            }),
        }
    }

    fn signing(&self) -> crypto::SigningPublicKey {
        crypto::SigningPublicKey {
            format: crypto::CryptoKeyFormat::Raw as i32,
            public_key: self.public_key.clone(),
            scheme: 0,
            usage: self.usage.clone(),
            key_spec: self.key_spec,
        }
    }
}

/// Canton's fingerprint of a public key: `1220` + SHA-256 in hex.
fn fingerprint_of_key(public_key: &[u8]) -> String {
    format!("1220{}", hex::encode(Sha256::digest(public_key)))
}

impl WriteApi {
    /// Generates a key pair (the sim's keys are random bytes, not usable for cryptography) and
    /// stores it with the action log entry in one transaction.
    async fn generate(
        &self,
        method: &str,
        name: &str,
        purpose: crypto::KeyPurpose,
        key_spec: i32,
        usage: Vec<i32>,
    ) -> Result<StoredKey, CallError> {
        let mut public_key = Sha256::digest(uuid::Uuid::now_v7().as_bytes()).to_vec();
        public_key.extend_from_slice(&Sha256::digest(uuid::Uuid::now_v7().as_bytes()));
        let private_key = Sha256::digest(&public_key).to_vec();
        let key = StoredKey {
            fingerprint: fingerprint_of_key(&public_key),
            name: name.to_owned(),
            purpose: purpose as i32,
            public_key,
            key_spec,
            usage,
        };
        let mut guard = self.context.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting a key generation", e))?;
        tx.execute(
            "INSERT INTO vault_key (fingerprint, name, purpose, public_key, private_key, key_spec, usage)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &key.fingerprint,
                &key.name,
                &key.purpose,
                &key.public_key,
                &private_key,
                &key.key_spec,
                &key.usage,
            ],
        )
        .await
        .map_err(|e| Error::db("storing a key", e))?;
        crate::db::log_action(
            &tx,
            method,
            &format!("fingerprint={} name={name}", key.fingerprint),
            "OK",
        )
        .await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing a key generation", e))?;
        Ok(key)
    }

    async fn keys(&self) -> Result<Vec<StoredKey>, CallError> {
        let mut guard = self.context.db.lock().await?;
        let rows = guard
            .client()?
            .query(
                "SELECT fingerprint, name, purpose, public_key, key_spec, usage FROM vault_key ORDER BY created_at, fingerprint",
                &[],
            )
            .await
            .map_err(|e| Error::db("listing keys", e))?;
        Ok(rows
            .iter()
            .map(|row| StoredKey {
                fingerprint: row.get(0),
                name: row.get(1),
                purpose: row.get(2),
                public_key: row.get(3),
                key_spec: row.get(4),
                usage: row.get(5),
            })
            .collect())
    }
}

#[tonic::async_trait]
impl VaultService for WriteApi {
    async fn list_my_keys(
        &self,
        request: Request<vault::ListMyKeysRequest>,
    ) -> Result<Response<vault::ListMyKeysResponse>, Status> {
        let filters = request.into_inner().filters.unwrap_or_default();
        let keys = self.keys().await?;
        Ok(Response::new(vault::ListMyKeysResponse {
            private_keys_metadata: keys
                .iter()
                .filter(|k| {
                    k.fingerprint.contains(&filters.fingerprint)
                        && k.name.contains(&filters.name)
                        && (filters.purpose.is_empty() || filters.purpose.contains(&k.purpose))
                })
                .map(|k| vault::PrivateKeyMetadata {
                    public_key_with_name: Some(
                        vault::private_key_metadata::PublicKeyWithName::V30(
                            crypto::PublicKeyWithName {
                                public_key: Some(k.public()),
                                name: k.name.clone(),
                            },
                        ),
                    ),
                    wrapper_key_id: None,
                    kms_key_id: None,
                })
                .collect(),
        }))
    }

    async fn generate_signing_key(
        &self,
        request: Request<vault::GenerateSigningKeyRequest>,
    ) -> Result<Response<vault::GenerateSigningKeyResponse>, Status> {
        let request = request.into_inner();
        let method = format!("{VAULT}GenerateSigningKey");
        logged(
            &self.context,
            &method,
            format!("name={}", request.name),
            async {
                if request.usage_v30.is_empty() {
                    return Err(CantonError::new(
                        Code::InvalidArgument,
                        "INVALID_ARGUMENT",
                        "usage_v30 is empty; name at least one signing key usage",
                    )
                    .into());
                }
                let spec = if request.key_spec == 0 {
                    crypto::SigningKeySpec::EcCurve25519 as i32
                } else {
                    request.key_spec
                };
                let key = self
                    .generate(
                        &method,
                        &request.name,
                        crypto::KeyPurpose::Signing,
                        spec,
                        request.usage_v30.clone(),
                    )
                    .await?;
                Ok(vault::GenerateSigningKeyResponse {
                    public_key: Some(vault::generate_signing_key_response::PublicKey::V30(
                        key.signing(),
                    )),
                })
            },
        )
        .await
    }

    async fn generate_encryption_key(
        &self,
        request: Request<vault::GenerateEncryptionKeyRequest>,
    ) -> Result<Response<vault::GenerateEncryptionKeyResponse>, Status> {
        let request = request.into_inner();
        let method = format!("{VAULT}GenerateEncryptionKey");
        logged(
            &self.context,
            &method,
            format!("name={}", request.name),
            async {
                let spec = if request.key_spec == 0 {
                    crypto::EncryptionKeySpec::EcP256 as i32
                } else {
                    request.key_spec
                };
                let key = self
                    .generate(
                        &method,
                        &request.name,
                        crypto::KeyPurpose::Encryption,
                        spec,
                        Vec::new(),
                    )
                    .await?;
                let Some(crypto::public_key::Key::EncryptionPublicKey(public_key)) =
                    key.public().key
                else {
                    return Err(CallError::from(Error::new(
                        crate::error::ErrorKind::Io,
                        "generated key is not an encryption key",
                    )));
                };
                Ok(vault::GenerateEncryptionKeyResponse {
                    public_key: Some(public_key),
                })
            },
        )
        .await
    }

    async fn export_key_pair(
        &self,
        request: Request<vault::ExportKeyPairRequest>,
    ) -> Result<Response<vault::ExportKeyPairResponse>, Status> {
        let fingerprint = request.into_inner().fingerprint;
        let mut guard = self.context.db.lock().await.map_err(CallError::from)?;
        let row = guard
            .client()
            .map_err(CallError::from)?
            .query_opt(
                "SELECT public_key, private_key FROM vault_key WHERE fingerprint = $1",
                &[&fingerprint],
            )
            .await
            .map_err(|e| CallError::from(Error::db("reading a key", e)))?;
        let Some(row) = row else {
            return Err(CallError::from(CantonError::new(
                Code::NotFound,
                "VAULT_KEY_NOT_FOUND",
                format!("no key with fingerprint {fingerprint}"),
            ))
            .into());
        };
        let mut key_pair: Vec<u8> = row.get(0);
        key_pair.extend_from_slice(&row.get::<_, Vec<u8>>(1));
        Ok(Response::new(vault::ExportKeyPairResponse { key_pair }))
    }
}
