//! The sequencer node: its member registry and the sim's public sequencer API.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::db::Db;
use crate::error::{CallError, CantonError, Error};
use crate::wire::sequencer::sim_sequencer_service_server::SimSequencerService;
use crate::wire::sequencer::{
    HandshakeRequest, HandshakeResponse, SendRequest, SendResponse, SequencedEvent,
    SubscribeRequest,
};

/// Identity and parameters of the synchronizer this sequencer serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynchronizerIdentity {
    pub synchronizer_id: String,
    pub physical_synchronizer_id: String,
    pub protocol_version: i32,
    pub ledger_time_record_time_tolerance_micros: i64,
    pub reconciliation_interval_micros: i64,
}

pub struct Sequencer {
    pub db: Arc<Db>,
    pub identity: SynchronizerIdentity,
    /// Members with an open subscription, with how many they hold.
    subscribers: tokio::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// Microseconds since the Unix epoch, Canton's sequencer time unit.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub const DISABLED_MEMBER: &str = "SEQUENCER_MEMBER_DISABLED";

impl Sequencer {
    pub fn new(db: Arc<Db>, identity: SynchronizerIdentity) -> Self {
        Self {
            db,
            identity,
            subscribers: tokio::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Members currently subscribed, sorted.
    pub async fn connected_members(&self) -> Vec<String> {
        let mut members: Vec<String> = self.subscribers.lock().await.keys().cloned().collect();
        members.sort();
        members
    }

    /// The timestamp of the oldest event still held (µs): the node's creation before any event.
    pub async fn earliest_event_timestamp(&self) -> Result<i64, CallError> {
        let mut guard = self.db.lock().await?;
        let row = guard
            .client()?
            .query_one(
                "SELECT (extract(epoch FROM created_at) * 1000000)::bigint FROM sim_node",
                &[],
            )
            .await
            .map_err(|e| Error::db("reading the earliest event", e))?;
        Ok(row.get(0))
    }

    /// Disables `member` for good; false when it is not registered. Disabling twice is fine.
    pub async fn disable_member(&self, member: &str, method: &str) -> Result<bool, CallError> {
        let mut guard = self.db.lock().await?;
        let tx = guard
            .client()?
            .transaction()
            .await
            .map_err(|e| Error::db("starting DisableMember", e))?;
        let updated = tx
            .execute(
                "UPDATE sequencer_member SET enabled = false WHERE member = $1",
                &[&member],
            )
            .await
            .map_err(|e| Error::db("disabling a member", e))?;
        if updated == 0 {
            return Ok(false);
        }
        crate::db::log_action(&tx, method, &format!("member={member}"), "OK").await?;
        tx.commit()
            .await
            .map_err(|e| Error::db("committing DisableMember", e))?;
        Ok(true)
    }

    /// Registers `member` on first contact; refuses disabled members.
    pub async fn admit(&self, member: &str) -> Result<(), CallError> {
        if member.is_empty() {
            return Err(CantonError::new(
                tonic::Code::InvalidArgument,
                "INVALID_ARGUMENT",
                "member is empty",
            )
            .into());
        }
        let mut guard = self.db.lock().await?;
        let client = guard.client()?;
        client
            .execute(
                "INSERT INTO sequencer_member (member, registered_at_micros) VALUES ($1, $2)
                 ON CONFLICT (member) DO NOTHING",
                &[&member, &now_micros()],
            )
            .await
            .map_err(|e| Error::db("registering a member", e))?;
        let enabled: bool = client
            .query_one(
                "SELECT enabled FROM sequencer_member WHERE member = $1",
                &[&member],
            )
            .await
            .map_err(|e| Error::db("reading a member", e))?
            .get(0);
        if !enabled {
            return Err(CantonError::new(
                tonic::Code::PermissionDenied,
                DISABLED_MEMBER,
                format!("member {member} is disabled on this sequencer"),
            )
            .into());
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl SimSequencerService for Arc<Sequencer> {
    async fn handshake(
        &self,
        request: Request<HandshakeRequest>,
    ) -> Result<Response<HandshakeResponse>, Status> {
        let request = request.into_inner();
        if request.protocol_version != self.identity.protocol_version {
            return Err(CantonError::new(
                tonic::Code::FailedPrecondition,
                "HANDSHAKE_PROTOCOL_VERSION_NOT_SUPPORTED",
                format!(
                    "member {} speaks protocol version {}, the synchronizer {}",
                    request.member, request.protocol_version, self.identity.protocol_version
                ),
            )
            .into());
        }
        self.admit(&request.member).await?;
        Ok(Response::new(HandshakeResponse {
            synchronizer_id: self.identity.synchronizer_id.clone(),
            physical_synchronizer_id: self.identity.physical_synchronizer_id.clone(),
            protocol_version: self.identity.protocol_version,
            ledger_time_record_time_tolerance_micros: self
                .identity
                .ledger_time_record_time_tolerance_micros,
            reconciliation_interval_micros: self.identity.reconciliation_interval_micros,
        }))
    }

    async fn send(&self, _request: Request<SendRequest>) -> Result<Response<SendResponse>, Status> {
        Err(Status::unimplemented("sequencing is not implemented yet"))
    }

    type SubscribeStream = futures::stream::BoxStream<'static, Result<SequencedEvent, Status>>;

    async fn subscribe(
        &self,
        _request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("sequencing is not implemented yet"))
    }
}
