//! The member side of the sim's sequencer protocol.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use crate::wire::sequencer::{
    HandshakeRequest, sim_sequencer_service_client::SimSequencerServiceClient,
};

/// What a member learns from the sequencer at handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    pub synchronizer_id: String,
    pub physical_synchronizer_id: String,
    pub protocol_version: i32,
    pub ledger_time_record_time_tolerance_micros: i64,
    pub reconciliation_interval_micros: i64,
    /// The synchronizer's topology store as the sequencer holds it.
    pub topology: Vec<crate::wire::sequencer::TopologyRecord>,
}

/// An open channel to one sequencer.
#[derive(Clone, Debug)]
pub struct SequencerLink {
    pub url: String,
    pub client: SimSequencerServiceClient<Channel>,
}

/// Connects to `url` and handshakes as `member`.
pub async fn handshake(
    url: &str,
    member: &str,
    protocol_version: i32,
) -> Result<(Handshake, SequencerLink), tonic::Status> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| tonic::Status::invalid_argument(format!("sequencer URL {url:?}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("cannot reach sequencer {url}: {e}")))?;
    let mut client = SimSequencerServiceClient::new(channel);
    let mut request = tonic::Request::new(HandshakeRequest {
        member: member.to_owned(),
        protocol_version,
    });
    request.set_timeout(Duration::from_secs(3));
    let reply = client.handshake(request).await?.into_inner();
    Ok((
        Handshake {
            synchronizer_id: reply.synchronizer_id,
            physical_synchronizer_id: reply.physical_synchronizer_id,
            protocol_version: reply.protocol_version,
            ledger_time_record_time_tolerance_micros: reply
                .ledger_time_record_time_tolerance_micros,
            reconciliation_interval_micros: reply.reconciliation_interval_micros,
            topology: reply.topology,
        },
        SequencerLink {
            url: url.to_owned(),
            client,
        },
    ))
}
