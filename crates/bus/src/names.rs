use std::fmt;

use crate::error::{Error, NameErrorKind};

/// A network id: 1-32 of `[a-z0-9-]`, starting with a letter or digit. It becomes a subject
/// token, part of stream names (upper-cased) and part of bucket names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(String);

impl NetworkId {
    pub fn new(id: impl Into<String>) -> Result<Self, Error<NameErrorKind>> {
        let id = id.into();
        if is_lower_token(&id, 32) {
            Ok(Self(id))
        } else {
            Err(Error::new(
                NameErrorKind::InvalidNetworkId,
                format!("network id {id:?}"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node id, `<node>` or `<node>.<replica>` for an HA replica; each part 1-63 of `[a-z0-9-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(String);

impl NodeId {
    pub fn new(id: impl Into<String>) -> Result<Self, Error<NameErrorKind>> {
        let id = id.into();
        let mut parts = id.split('.');
        let valid = match (parts.next(), parts.next(), parts.next()) {
            (Some(node), None, None) => is_lower_token(node, 63),
            (Some(node), Some(replica), None) => {
                is_lower_token(node, 63) && is_lower_token(replica, 63)
            }
            _ => false,
        };
        if valid {
            Ok(Self(id))
        } else {
            Err(Error::new(
                NameErrorKind::InvalidNodeId,
                format!("node id {id:?}"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The logical node: HA replicas `p1.a` and `p1.b` are both node `p1`.
    pub fn logical(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }

    /// The replica name, if this id names one.
    pub fn replica(&self) -> Option<&str> {
        self.0.split_once('.').map(|(_, replica)| replica)
    }

    /// The id as one token without dots (for consumer names): `p1.a` → `p1_a`. Node ids never
    /// contain `_`, so this cannot collide.
    pub(crate) fn flat(&self) -> String {
        self.0.replace('.', "_")
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// KV buckets of a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Last full state per node/replica.
    Nodes,
    /// Run records and per-node results; CAS only.
    Runs,
    /// Leadership: `lease` (TTL), `epoch` (no TTL) and coordinators' quorum `probe` writes.
    Leader,
    /// Node claims of mutating runs.
    Claims,
}

impl Bucket {
    pub const ALL: [Bucket; 4] = [Bucket::Nodes, Bucket::Runs, Bucket::Leader, Bucket::Claims];

    fn suffix(self) -> &'static str {
        match self {
            Bucket::Nodes => "nodes",
            Bucket::Runs => "runs",
            Bucket::Leader => "leader",
            Bucket::Claims => "claims",
        }
    }
}

/// Every NATS name of one network (DESIGN §2). The only place names are spelled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    net: NetworkId,
}

impl Names {
    pub fn new(net: NetworkId) -> Self {
        Self { net }
    }

    pub fn network(&self) -> &NetworkId {
        &self.net
    }

    fn upper(&self) -> String {
        self.net.as_str().to_ascii_uppercase()
    }

    /// `cs.<net>.hb.<node>[.<replica>]`: heartbeats, core NATS.
    pub fn heartbeat(&self, node: &NodeId) -> String {
        format!("cs.{}.hb.{node}", self.net)
    }

    /// All heartbeats of the network, replicas included.
    pub fn heartbeats(&self) -> String {
        format!("cs.{}.hb.>", self.net)
    }

    /// `cs.<net>.cmd.<node>[.<replica>]`: commands to one agent.
    pub fn command(&self, node: &NodeId) -> String {
        format!("cs.{}.cmd.{node}", self.net)
    }

    /// Commands addressed to every agent of the network (fences).
    pub fn commands(&self) -> String {
        format!("cs.{}.cmd.>", self.net)
    }

    pub fn command_stream(&self) -> String {
        format!("CS_{}_CMD", self.upper())
    }

    /// The durable consumer of one agent on the command stream.
    pub fn agent_consumer(&self, node: &NodeId) -> String {
        format!("agent_{}", node.flat())
    }

    /// The server's advisory when a command to `node` reached the consumer's `max_deliver`
    /// without an ack (a poison command).
    pub fn max_deliveries_advisory(&self, node: &NodeId) -> String {
        format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            self.command_stream(),
            self.agent_consumer(node)
        )
    }

    /// Key of an organisation's leadership lease (per-message TTL) in the leader bucket.
    /// `organisation` must be a [`valid_token`].
    pub fn lease_key(&self, organisation: &str) -> String {
        format!("lease.{organisation}")
    }

    /// Key of an organisation's leadership epoch in the leader bucket (no TTL, advanced by CAS
    /// on takeover). Its value is JSON with at least `{"epoch": <u64>}`.
    pub fn epoch_key(&self, organisation: &str) -> String {
        format!("epoch.{organisation}")
    }

    /// Key in the leader bucket that an organisation's coordinators write to prove that a
    /// JetStream quorum accepts their writes. `organisation` must be a [`valid_token`].
    pub fn quorum_probe_key(&self, organisation: &str) -> String {
        format!("probe.{organisation}")
    }

    /// Key of a node's claim in the claims bucket: the node id as the run names it. Its value
    /// is JSON with at least `{"run": <run id>, "organisation": <org>}`.
    pub fn claim_key(&self, node: &str) -> String {
        node.to_owned()
    }

    /// `cs.<net>.ack.<node>.<run>`: acks and results. `run` must be a [`valid_token`].
    pub fn ack(&self, node: &NodeId, run: &str) -> String {
        format!("cs.{}.ack.{}.{run}", self.net, node.flat())
    }

    /// All acks of one agent; agents may publish only here.
    pub fn acks_of(&self, node: &NodeId) -> String {
        format!("cs.{}.ack.{}.>", self.net, node.flat())
    }

    pub fn acks(&self) -> String {
        format!("cs.{}.ack.>", self.net)
    }

    /// The durable consumer through which an organisation's leader reads acks. `org` must be
    /// a [`valid_token`].
    pub fn coordinator_consumer(&self, org: &str) -> String {
        format!("coordinator_{org}")
    }

    pub fn ack_stream(&self) -> String {
        format!("CS_{}_ACK", self.upper())
    }

    /// `cs.<net>.audit.<kind>`: state-changing API calls.
    pub fn audit(&self, kind: &str) -> String {
        format!("cs.{}.audit.{kind}", self.net)
    }

    pub fn audits(&self) -> String {
        format!("cs.{}.audit.>", self.net)
    }

    pub fn audit_stream(&self) -> String {
        format!("CS_{}_AUDIT", self.upper())
    }

    /// `cs.<net>.evt.<run>`: progress events of a run (the KV record is the truth).
    pub fn run_events(&self, run: &str) -> String {
        format!("cs.{}.evt.{run}", self.net)
    }

    /// `cs.<net>.prop.<org>`: proposal documents and organisations' signed answers.
    pub fn proposals(&self, org: &str) -> String {
        format!("cs.{}.prop.{org}", self.net)
    }

    pub fn all_proposals(&self) -> String {
        format!("cs.{}.prop.>", self.net)
    }

    /// Proposal documents and answers of every organisation, kept like audit records.
    pub fn proposal_stream(&self) -> String {
        format!("CS_{}_PROP", self.upper())
    }

    /// The JetStream stream that holds a KV bucket.
    pub fn bucket_stream(&self, bucket: Bucket) -> String {
        format!("KV_{}", self.bucket(bucket))
    }

    /// The subject under which a bucket stores `key` (what a write publishes to).
    pub fn bucket_key_subject(&self, bucket: Bucket, key: &str) -> String {
        format!("$KV.{}.{key}", self.bucket(bucket))
    }

    /// Prefix of the reply subjects of one agent's requests (JetStream API answers, publish
    /// acks). Each client has its own, so a user may subscribe to its own replies only.
    pub fn agent_inbox(&self, node: &NodeId) -> String {
        format!("_INBOX.cs.{}.agent.{}", self.net, node.flat())
    }

    /// Prefix of the reply subjects of an organisation's coordinators. `organisation` must be
    /// a [`valid_token`].
    pub fn coordinator_inbox(&self, organisation: &str) -> String {
        format!("_INBOX.cs.{}.coordinator.{organisation}", self.net)
    }

    pub fn bucket(&self, bucket: Bucket) -> String {
        format!(
            "cs_{}_{}",
            self.net.as_str().replace('-', "_"),
            bucket.suffix()
        )
    }
}

/// Whether `token` can be used as a subject token or KV key part: 1-128 of `[A-Za-z0-9_-]`.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn is_lower_token(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_derive_from_the_network_id() {
        let names = Names::new(NetworkId::new("dev-1").unwrap());
        let replica = NodeId::new("p1.a").unwrap();
        assert_eq!(names.heartbeat(&replica), "cs.dev-1.hb.p1.a");
        assert_eq!(names.command(&replica), "cs.dev-1.cmd.p1.a");
        assert_eq!(names.command_stream(), "CS_DEV-1_CMD");
        assert_eq!(names.agent_consumer(&replica), "agent_p1_a");
        assert_eq!(names.ack(&replica, "run-7"), "cs.dev-1.ack.p1_a.run-7");
        assert_eq!(names.bucket(Bucket::Runs), "cs_dev_1_runs");
        assert_eq!(
            names.max_deliveries_advisory(&replica),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.CS_DEV-1_CMD.agent_p1_a"
        );
        assert_eq!(names.epoch_key("org-a"), "epoch.org-a");
        assert_eq!(names.lease_key("org-a"), "lease.org-a");
        assert_eq!(replica.logical(), "p1");
        assert_eq!(replica.replica(), Some("a"));
    }

    #[test]
    fn invalid_ids_are_refused() {
        for bad in ["", "Dev", "a.b", "a*", "a>", "-a", "a b", &"x".repeat(33)] {
            assert!(NetworkId::new(bad).is_err(), "{bad:?}");
        }
        for bad in ["", "p1.", ".a", "p1.a.b", "P1", "p_1", "p1*"] {
            assert!(NodeId::new(bad).is_err(), "{bad:?}");
        }
        assert!(valid_token("0190-abc_D"));
        assert!(!valid_token("a.b"));
    }
}
