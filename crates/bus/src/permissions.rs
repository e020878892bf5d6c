//! What each NATS user of a network may publish and subscribe to. The server refuses
//! everything else, so a stolen agent credential can act only as that one agent.
//!
//! The lists name the exact subjects the processes use: the agent's own heartbeat, node-state
//! key, acks and durable command consumer (its JetStream API requests spelled out, so it
//! cannot bind, read or create another node's consumer), the three keys it reads (its own
//! node-state key, its organisation's epoch, its node's claim), and its own reply inbox. The coordinator gets the
//! network's streams and buckets, its organisation's leader keys and ack consumer, and its
//! own inbox — no heartbeat, ack or node-state subject, which only agents write.

use crate::names::{Bucket, Names, NodeId};

/// JetStream API prefix of the account (no domain).
const JS_API: &str = "$JS.API";

/// Allowed subjects of one user; the server denies every other subject.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Names {
    /// The permissions of the agent of `node`, which obeys `organisation`'s coordinator.
    /// `organisation` must be a [`crate::valid_token`].
    pub fn agent_permissions(&self, node: &NodeId, organisation: &str) -> Permissions {
        let commands = self.command_stream();
        let consumer = self.agent_consumer(node);
        let direct_get = |bucket: Bucket, key: &str| {
            format!(
                "{JS_API}.DIRECT.GET.{}.{}",
                self.bucket_stream(bucket),
                self.bucket_key_subject(bucket, key)
            )
        };
        let mut publish = vec![
            self.heartbeat(node),
            self.acks_of(node),
            self.bucket_key_subject(Bucket::Nodes, node.as_str()),
            // Read back to compare its clock with the server's stamp.
            direct_get(Bucket::Nodes, node.as_str()),
            direct_get(Bucket::Leader, &self.epoch_key(organisation)),
            direct_get(Bucket::Claims, &self.claim_key(node.logical())),
            // The filter in the create subject must equal the one in the request, so this
            // consumer can only ever deliver this node's commands.
            format!(
                "{JS_API}.CONSUMER.CREATE.{commands}.{consumer}.{}",
                self.command(node)
            ),
            format!("{JS_API}.CONSUMER.INFO.{commands}.{consumer}"),
            format!("{JS_API}.CONSUMER.MSG.NEXT.{commands}.{consumer}"),
            format!("$JS.ACK.{commands}.{consumer}.>"),
        ];
        // Opening a bucket reads its stream's configuration.
        publish.extend(
            [Bucket::Nodes, Bucket::Leader, Bucket::Claims]
                .map(|bucket| format!("{JS_API}.STREAM.INFO.{}", self.bucket_stream(bucket))),
        );
        Permissions {
            publish,
            subscribe: vec![
                format!("{}.>", self.agent_inbox(node)),
                self.max_deliveries_advisory(node),
            ],
        }
    }

    /// The permissions of `organisation`'s coordinators (active and standby share them).
    pub fn coordinator_permissions(&self, organisation: &str) -> Permissions {
        let acks = self.ack_stream();
        let consumer = self.coordinator_consumer(organisation);
        let mut publish = vec![
            // Account limits, which bucket creation reads.
            format!("{JS_API}.INFO"),
            self.commands(),
            self.run_events("*"),
            self.audits(),
            // Its own organisation's proposals and answers only.
            self.proposals(organisation),
            self.bucket_key_subject(Bucket::Runs, ">"),
            self.bucket_key_subject(Bucket::Claims, ">"),
            format!("{JS_API}.CONSUMER.CREATE.{acks}.{consumer}.{}", self.acks()),
            format!("{JS_API}.CONSUMER.INFO.{acks}.{consumer}"),
            format!("{JS_API}.CONSUMER.MSG.NEXT.{acks}.{consumer}"),
            format!("$JS.ACK.{acks}.{consumer}.>"),
        ];
        publish.extend(
            [
                self.lease_key(organisation),
                self.epoch_key(organisation),
                self.quorum_probe_key(organisation),
            ]
            .map(|key| self.bucket_key_subject(Bucket::Leader, &key)),
        );
        let streams = [
            self.command_stream(),
            acks.clone(),
            self.audit_stream(),
            self.proposal_stream(),
        ]
        .into_iter()
        .chain(Bucket::ALL.map(|bucket| self.bucket_stream(bucket)));
        for stream in streams {
            publish.extend(
                ["CREATE", "UPDATE", "INFO"].map(|verb| format!("{JS_API}.STREAM.{verb}.{stream}")),
            );
        }
        // Reads by key; listings (ephemeral consumers) and watches (ordered consumers, whose
        // flow control the client answers and which it deletes when it recreates them). The
        // proposal stream is read the same way, every organisation's answers included.
        let readable = Bucket::ALL
            .map(|bucket| self.bucket_stream(bucket))
            .into_iter()
            .chain([self.proposal_stream()]);
        for stream in readable {
            publish.extend([
                format!("{JS_API}.DIRECT.GET.{stream}.>"),
                format!("{JS_API}.CONSUMER.CREATE.{stream}"),
                format!("{JS_API}.CONSUMER.CREATE.{stream}.>"),
                format!("{JS_API}.CONSUMER.DELETE.{stream}.>"),
                format!("$JS.FC.{stream}.>"),
            ]);
        }
        Permissions {
            publish,
            subscribe: vec![
                format!("{}.>", self.coordinator_inbox(organisation)),
                self.heartbeats(),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::NetworkId;

    #[test]
    fn an_agent_may_publish_only_under_its_own_node() {
        let names = Names::new(NetworkId::new("dev").unwrap());
        let node = NodeId::new("p1.a").unwrap();
        let permissions = names.agent_permissions(&node, "org-a");
        for subject in [
            "cs.dev.hb.p1.a",
            "cs.dev.ack.p1_a.>",
            "$KV.cs_dev_nodes.p1.a",
            "$JS.API.DIRECT.GET.KV_cs_dev_nodes.$KV.cs_dev_nodes.p1.a",
            "$JS.API.DIRECT.GET.KV_cs_dev_leader.$KV.cs_dev_leader.epoch.org-a",
            "$JS.API.DIRECT.GET.KV_cs_dev_claims.$KV.cs_dev_claims.p1",
            "$JS.API.CONSUMER.CREATE.CS_DEV_CMD.agent_p1_a.cs.dev.cmd.p1.a",
            "$JS.API.CONSUMER.MSG.NEXT.CS_DEV_CMD.agent_p1_a",
            "$JS.ACK.CS_DEV_CMD.agent_p1_a.>",
        ] {
            assert!(
                permissions.publish.iter().any(|s| s == subject),
                "{subject} in {:?}",
                permissions.publish
            );
        }
        // No subject with a wildcard outside the node's own ack and consumer-ack subjects.
        for subject in &permissions.publish {
            if subject.contains('*') || subject.contains('>') {
                assert!(
                    subject.starts_with("cs.dev.ack.p1_a.")
                        || subject.starts_with("$JS.ACK.CS_DEV_CMD.agent_p1_a."),
                    "{subject}"
                );
            }
        }
        assert_eq!(
            permissions.subscribe,
            [
                "_INBOX.cs.dev.agent.p1_a.>",
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.CS_DEV_CMD.agent_p1_a"
            ]
        );
    }

    #[test]
    fn a_coordinator_writes_no_agent_subject() {
        let names = Names::new(NetworkId::new("dev").unwrap());
        let permissions = names.coordinator_permissions("org-a");
        for subject in &permissions.publish {
            assert!(
                !subject.starts_with("cs.dev.hb.")
                    && !subject.starts_with("cs.dev.ack.")
                    && !subject.starts_with("$KV.cs_dev_nodes."),
                "{subject}"
            );
        }
        assert!(
            permissions
                .publish
                .contains(&"$KV.cs_dev_leader.lease.org-a".to_owned())
        );
        assert!(
            !permissions
                .publish
                .iter()
                .any(|s| s.starts_with("$KV.cs_dev_leader.") && s.ends_with('>'))
        );
    }
}
