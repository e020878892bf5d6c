//! Old reader, new writer: a newer coordinator adds fields and actions; an agent built from
//! today's schema must still decode the known fields of what it receives.

use prost::Message;
use proto_sidecar::{Action, Backup, Claim, Command, SignedEnvelope, action};

/// Today's `Command` as a newer writer would send it: every current field plus a field and an
/// action variant this reader has never seen.
#[derive(Clone, PartialEq, prost::Message)]
struct CommandFromTheFuture {
    #[prost(string, tag = "1")]
    network: String,
    #[prost(string, tag = "2")]
    organisation: String,
    #[prost(string, tag = "3")]
    node: String,
    #[prost(string, tag = "4")]
    run: String,
    #[prost(string, tag = "5")]
    step: String,
    #[prost(string, tag = "6")]
    command_id: String,
    #[prost(uint32, tag = "7")]
    attempt: u32,
    #[prost(uint64, tag = "8")]
    epoch: u64,
    #[prost(message, optional, tag = "9")]
    claim: Option<ClaimFromTheFuture>,
    #[prost(int64, tag = "10")]
    issued_at_unix_ms: i64,
    #[prost(int64, tag = "11")]
    expires_at_unix_ms: i64,
    #[prost(string, tag = "12")]
    traceparent: String,
    #[prost(message, optional, tag = "13")]
    action: Option<ActionFromTheFuture>,
    #[prost(string, tag = "40")]
    priority_class: String,
    #[prost(uint64, repeated, tag = "41")]
    future_numbers: Vec<u64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ClaimFromTheFuture {
    #[prost(string, tag = "1")]
    run: String,
    #[prost(uint64, tag = "2")]
    epoch: u64,
    #[prost(uint64, tag = "3")]
    revision: u64,
    #[prost(bytes = "vec", tag = "9")]
    fencing_token: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ActionFromTheFuture {
    #[prost(oneof = "FutureKind", tags = "5, 77")]
    kind: Option<FutureKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum FutureKind {
    #[prost(message, tag = "5")]
    Backup(BackupFromTheFuture),
    #[prost(message, tag = "77")]
    Rebalance(RebalanceFromTheFuture),
}

#[derive(Clone, PartialEq, prost::Message)]
struct BackupFromTheFuture {
    #[prost(string, tag = "1")]
    backup_set: String,
    #[prost(string, tag = "2")]
    target: String,
    #[prost(bool, tag = "3")]
    include_identities: bool,
    #[prost(bool, tag = "4")]
    include_volume: bool,
    #[prost(string, tag = "12")]
    compression: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RebalanceFromTheFuture {
    #[prost(uint32, tag = "1")]
    shards: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct EnvelopeFromTheFuture {
    #[prost(bytes = "vec", tag = "1")]
    body: Vec<u8>,
    #[prost(string, tag = "2")]
    key_id: String,
    #[prost(bytes = "vec", tag = "3")]
    signature: Vec<u8>,
    #[prost(string, tag = "4")]
    algorithm: String,
    #[prost(bytes = "vec", repeated, tag = "5")]
    extra_signatures: Vec<Vec<u8>>,
}

fn future_command(action: FutureKind) -> CommandFromTheFuture {
    CommandFromTheFuture {
        network: "net1".into(),
        organisation: "org-a".into(),
        node: "p1".into(),
        run: "r-7".into(),
        step: "participants".into(),
        command_id: "r-7/participants/p1".into(),
        attempt: 3,
        epoch: 12,
        claim: Some(ClaimFromTheFuture {
            run: "r-7".into(),
            epoch: 12,
            revision: 44,
            fencing_token: vec![9, 9],
        }),
        issued_at_unix_ms: 1_700_000_000_000,
        expires_at_unix_ms: 1_700_000_060_000,
        traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        action: Some(ActionFromTheFuture { kind: Some(action) }),
        priority_class: "urgent".into(),
        future_numbers: vec![1, 2, 3],
    }
}

fn assert_known_fields(decoded: &Command) {
    assert_eq!(decoded.network, "net1");
    assert_eq!(decoded.organisation, "org-a");
    assert_eq!(decoded.node, "p1");
    assert_eq!(decoded.run, "r-7");
    assert_eq!(decoded.step, "participants");
    assert_eq!(decoded.command_id, "r-7/participants/p1");
    assert_eq!(decoded.attempt, 3);
    assert_eq!(decoded.epoch, 12);
    assert_eq!(
        decoded.claim,
        Some(Claim {
            run: "r-7".into(),
            epoch: 12,
            revision: 44
        })
    );
    assert_eq!(decoded.issued_at_unix_ms, 1_700_000_000_000);
    assert_eq!(decoded.expires_at_unix_ms, 1_700_000_060_000);
    assert!(decoded.traceparent.starts_with("00-0af7"));
}

#[test]
fn old_reader_keeps_known_fields_of_a_newer_command() {
    let newer = future_command(FutureKind::Backup(BackupFromTheFuture {
        backup_set: "bs-1".into(),
        target: "nightly".into(),
        include_identities: true,
        include_volume: false,
        compression: "zstd".into(),
    }));
    let bytes = newer.encode_to_vec();

    let decoded = Command::decode(bytes.as_slice()).unwrap();

    assert_known_fields(&decoded);
    assert_eq!(
        decoded.action,
        Some(Action {
            kind: Some(action::Kind::Backup(Backup {
                backup_set: "bs-1".into(),
                target: "nightly".into(),
                include_identities: true,
                include_volume: false,
            }))
        })
    );
}

#[test]
fn old_reader_sees_an_unknown_action_as_unset_and_keeps_the_rest() {
    let newer = future_command(FutureKind::Rebalance(RebalanceFromTheFuture { shards: 4 }));
    let bytes = newer.encode_to_vec();

    let decoded = Command::decode(bytes.as_slice()).unwrap();

    assert_known_fields(&decoded);
    // The reader must see that it does not know the action, so it can reject by name.
    assert_eq!(decoded.action, Some(Action { kind: None }));
}

#[test]
fn old_reader_decodes_a_newer_envelope_and_keeps_the_exact_body_bytes() {
    let body =
        future_command(FutureKind::Rebalance(RebalanceFromTheFuture { shards: 1 })).encode_to_vec();
    let newer = EnvelopeFromTheFuture {
        body: body.clone(),
        key_id: "org-a/coord-2026".into(),
        signature: vec![7; 64],
        algorithm: "ed25519".into(),
        extra_signatures: vec![vec![1; 64]],
    };

    let decoded = SignedEnvelope::decode(newer.encode_to_vec().as_slice()).unwrap();

    assert_eq!(decoded.body, body, "signatures cover these exact bytes");
    assert_eq!(decoded.key_id, "org-a/coord-2026");
    assert_eq!(decoded.signature, vec![7; 64]);
}

#[test]
fn new_reader_accepts_an_older_writer_that_lacks_recent_fields() {
    // An older writer knew only the first eight command fields.
    let older = CommandFromTheFuture {
        claim: None,
        issued_at_unix_ms: 0,
        expires_at_unix_ms: 0,
        traceparent: String::new(),
        action: None,
        priority_class: String::new(),
        future_numbers: Vec::new(),
        ..future_command(FutureKind::Rebalance(RebalanceFromTheFuture { shards: 1 }))
    };

    let decoded = Command::decode(older.encode_to_vec().as_slice()).unwrap();

    assert_eq!(decoded.command_id, "r-7/participants/p1");
    assert_eq!(decoded.claim, None);
    assert_eq!(decoded.action, None);
    assert!(decoded.approval.is_none());
}

#[test]
fn unknown_enum_values_from_a_newer_writer_are_kept_as_raw_numbers() {
    use proto_sidecar::{Ack, AckStatus};
    #[derive(Clone, PartialEq, prost::Message)]
    struct AckFromTheFuture {
        #[prost(string, tag = "2")]
        command_id: String,
        #[prost(int32, tag = "6")]
        status: i32,
    }
    let bytes = AckFromTheFuture {
        command_id: "r/s/n".into(),
        status: 42,
    }
    .encode_to_vec();

    let decoded = Ack::decode(bytes.as_slice()).unwrap();

    assert_eq!(decoded.command_id, "r/s/n");
    assert_eq!(decoded.status, 42);
    assert!(AckStatus::try_from(decoded.status).is_err());
    assert_eq!(decoded.status(), AckStatus::Unspecified);
}
