//! Sequencer administration.

use proto_canton::sequencer::admin::v30 as admin;

use admin::sequencer_administration_service_client::SequencerAdministrationServiceClient;

use crate::client::{Api, CantonClient};
use crate::config::NodeKind;
use crate::error::{Error, ErrorKind, Result};
use crate::types::{SequencerMember, SequencerPruningStatus};

const MEMBER_PREFIXES: [&str; 3] = ["PAR::", "MED::", "SEQ::"];

impl CantonClient {
    /// The sequencer's time (`now_micros`, its latest sequenced timestamp) and its members'
    /// acknowledgements.
    pub async fn sequencer_pruning_status(&self) -> Result<SequencerPruningStatus> {
        let call = "PruningStatus";
        self.require_kind(NodeKind::Sequencer, call)?;
        self.profile().await?;
        let connection = self.connection(Api::Admin, call)?;
        let mut client = SequencerAdministrationServiceClient::new(connection.channel.clone());
        let request = self.request(connection, admin::PruningStatusRequest {});
        let status = self
            .call(call, client.pruning_status(request))
            .await?
            .pruning_status
            .ok_or_else(|| self.protocol_error(call, "response without a pruning status"))?;
        Ok(SequencerPruningStatus {
            now_micros: status.now,
            earliest_event_micros: status.earliest_event_timestamp,
            members: status
                .members
                .into_iter()
                .map(|member| SequencerMember {
                    member: member.member,
                    registered_at_micros: member.registered_at,
                    last_acknowledged_micros: member.last_acknowledged,
                    enabled: member.enabled,
                })
                .collect(),
        })
    }

    /// Disables a member (`PAR::…`, `MED::…`, `SEQ::…`) on this sequencer. Irreversible.
    pub async fn disable_member(&self, member: &str) -> Result<()> {
        let call = "DisableMember";
        self.require_kind(NodeKind::Sequencer, call)?;
        if !MEMBER_PREFIXES
            .iter()
            .any(|prefix| member.starts_with(prefix))
        {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{call} on {}: {member:?} is not a member id (PAR::…, MED::… or SEQ::…); nothing was sent",
                    self.node_name()
                ),
            ));
        }
        self.profile().await?;
        let connection = self.connection(Api::Admin, call)?;
        let mut client = SequencerAdministrationServiceClient::new(connection.channel.clone());
        let request = self.request(
            connection,
            admin::DisableMemberRequest {
                member: member.to_owned(),
            },
        );
        self.call(call, client.disable_member(request)).await?;
        Ok(())
    }
}
